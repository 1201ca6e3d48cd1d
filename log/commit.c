/* commit.c — group commit: every writer of a process queues a job, one leader runs the
 * queued jobs in one LMDB write transaction and pays for one flush on behalf of all.
 *
 * Durability in sync mode. The environment runs with MDB_NOMETASYNC: a commit flushes
 * its data pages, then writes (without flushing) the meta page that makes them current.
 * That meta page becomes durable with the next flush of the file. So a committed batch is
 * released once the next batch's commit has flushed (under load: one flush per commit),
 * or, when no more work is queued, after an explicit mdb_env_sync(). A commit that
 * changed nothing flushes nothing, so it never counts as the next flush.
 *
 * Leadership. The first waiting writer to find work and no leader leads: it commits
 * batches until its own job is released, then hands over to a waiting writer, so no
 * writer's call lasts longer than the couple of commits its own job needs. The batch
 * awaiting its flush (pending) belongs to the handle, not to the leader that committed
 * it: the next leader's commit releases it.
 *
 * With the write-ahead file (wal.c) none of the above two-flush dance is needed: one
 * flush of that file makes a commit durable. The leader commits one batch that needs it,
 * hands the leadership on and pays the flush itself; the next leader commits the writers
 * queued meanwhile while that flush runs and starts its own flush at once (flushes of the
 * file run side by side, from any thread or process). Whichever flush ends first releases
 * every batch its records covered.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <unistd.h>

#include "log/log_private.h"

/* Longest wait for writers to gather before a commit. */
#define LOG_GATHER_MAX_NS 500000
/* Async mode: turns of the CPU the leader gives writers to queue before it commits. With
 * 8 blocking threads on 2 cores a commit carried 1.7 writes without them, 7 with 8 turns
 * (appends/s 1.25x, p99 6x lower). */
#define LOG_ASYNC_YIELDS 8

/* A committed batch waiting to be released. */
struct batch {
  struct log_job *jobs;
  struct log_touched *touched;
  struct batch *next;
  uint64_t seq; /* with the write-ahead file: durable once its records up to here are */
};

void log_touch(log_wtx *w, const char *topic, uint64_t head) {
  for (struct log_touched *t = w->touched; t; t = t->next) {
    if (!strcmp(t->topic, topic)) {
      if (head > t->head) t->head = head;
      return;
    }
  }
  struct log_touched *t = calloc(1, sizeof *t);
  if (!t) return; /* only costs a notification */
  snprintf(t->topic, sizeof t->topic, "%s", topic);
  t->head = head;
  t->next = w->touched;
  w->touched = t;
}

static void touched_free(struct log_touched *t) {
  while (t) {
    struct log_touched *n = t->next;
    free(t);
    t = n;
  }
}

/* Drops entries added after `mark` (the job that added them was rolled back). */
void log_touch_rollback(log_wtx *w, struct log_touched *mark) {
  while (w->touched && w->touched != mark) {
    struct log_touched *n = w->touched->next;
    free(w->touched);
    w->touched = n;
  }
}

static int begin_txn(struct log *log, MDB_txn **txn) {
  for (;;) {
    int rc = mdb_txn_begin(log->env, NULL, 0, txn);
    if (rc == MDB_MAP_RESIZED) {
      log_map_adopt(log);
      continue;
    }
    return rc;
  }
}

static void set_job_error(struct log_job *j, int rc) {
  j->rc = rc;
  snprintf(j->msg, sizeof j->msg, "%s", log_errmsg(NULL));
}

static __thread int tls_in_job;

int log_in_write_job(void) { return tls_in_job; }

static int run_job(struct log_job *j, log_wtx *w) {
  tls_in_job = 1;
  w->defer = 0;
  int rc = j->fn(w, j->arg);
  tls_in_job = 0;
  j->deferred = j->may_defer && w->defer && rc >= 0;
  return rc;
}

/* Runs the jobs of one batch and commits. Sets each job's rc. Returns 0 or the commit's
 * error; *wrote tells whether the commit wrote (and so flushed) anything.
 *
 * A job that fails must leave no trace in the commit, so each job of a batch of several
 * could run in a nested transaction of its own. LMDB's nested transactions are dear:
 * each allocates 3 MB of page lists and copies every page it changes that its parent had
 * changed already (the topic's leaf and branch pages, the main database's page), which
 * cost eight async writers 12-18 % of their appends/s. So a batch first runs
 * flat, all jobs in the one transaction; if a job fails, that transaction is dropped and
 * the batch runs again with a nested transaction per job (as for a full map, the jobs
 * run again from the start), and so do the next LOG_NESTED_AFTER_FAIL batches. */
#define LOG_NESTED_AFTER_FAIL 16
static int run_batch(struct log *log, struct log_job *jobs, int *wrote,
                     struct log_touched **touched) {
  int n = 0;
  for (struct log_job *j = jobs; j; j = j->next) n++;
  *wrote = 0;
  *touched = NULL;
  int flat = n == 1 || log->nested_batches == 0;
  if (!flat) log->nested_batches--;
  for (;;) {
    MDB_txn *txn;
    int rc = begin_txn(log, &txn);
    if (rc) return log_error(log, log_err_mdb(rc), "commit: begin: %s", log_mdb_text(rc));
    log_wtx w = {.log = log, .txn = txn, .now_ns = log_now_ns(log), .touched = NULL};
    int grow = 0, ok = 0, redo = 0;
    for (struct log_job *j = jobs; j && !grow && !redo; j = j->next) {
      log_error_clear(log);
      if (flat) {
        w.txn = txn;
        j->rc = run_job(j, &w);
        if (n > 1 && j->rc < 0 && j->rc != LOG_EMAPFULL && j->rc != LOG_ENEWDBI) {
          redo = 1; /* the others may not keep what it half did */
          break;
        }
      } else {
        MDB_txn *child;
        struct log_touched *mark = w.touched;
        rc = mdb_txn_begin(log->env, txn, 0, &child);
        if (rc) {
          grow = rc == MDB_MAP_FULL;
          set_job_error(j, log_error(log, log_err_mdb(rc), "commit: %s", log_mdb_text(rc)));
          continue;
        }
        w.txn = child;
        j->rc = run_job(j, &w);
        if (j->rc >= 0) {
          rc = mdb_txn_commit(child);
          if (rc) {
            j->rc = rc == MDB_MAP_FULL ? LOG_EMAPFULL : log_err_mdb(rc);
            log_touch_rollback(&w, mark);
          }
        } else {
          mdb_txn_abort(child);
          log_touch_rollback(&w, mark);
        }
      }
      if (j->rc == LOG_EMAPFULL)
        grow = 1;
      else if (j->rc == LOG_ENEWDBI)
        grow = 2;
      else if (j->rc < 0)
        set_job_error(j, j->rc);
      else
        ok++;
    }
    if (redo) {
      mdb_txn_abort(txn);
      touched_free(w.touched);
      flat = 0;
      log->nested_batches = LOG_NESTED_AFTER_FAIL;
      continue;
    }
    if (grow) {
      mdb_txn_abort(txn);
      touched_free(w.touched);
      if (grow == 2) continue; /* a new transaction sees the new handle */
      rc = log_map_grow(log);
      if (rc) return log_error(log, ENGRAM_ENOSPC, "commit: cannot grow the map");
      continue;
    }
    if (ok == 0) {
      mdb_txn_abort(txn);
      touched_free(w.touched);
      return 0;
    }
    size_t id = mdb_txn_id(txn);
    int64_t t0 = clock_monotonic_ns();
    rc = mdb_txn_commit(txn);
    log->commit_ns = clock_monotonic_ns() - t0; /* the leader's: counted under mu */
    if (rc == MDB_MAP_FULL) {
      touched_free(w.touched);
      if (log_map_grow(log)) return log_error(log, ENGRAM_ENOSPC, "commit: cannot grow the map");
      continue;
    }
    if (rc) {
      touched_free(w.touched);
      int code = log_err_mdb(rc);
      /* LMDB reports a short write as EIO: on a full disk that is what a write that
       * ran out of space looks like. */
      if (code == ENGRAM_EIO && log_disk_nearly_full(log)) code = ENGRAM_ENOSPC;
      return log_error(log, code, "commit: %s",
                       code == ENGRAM_ENOSPC
                           ? "disk full: nothing of it was stored; free space on the log's "
                             "file system and retry"
                           : log_mdb_text(rc));
    }
    /* LMDB skips a commit that changed nothing: the last id stays below ours. Another
     * process may have committed since ours released the write lock, so a later id
     * counts as written too (at worst a needless flush; never an unflushed commit
     * acknowledged). */
    MDB_envinfo info;
    mdb_env_info(log->env, &info);
    *wrote = info.me_last_txnid >= id;
    *touched = w.touched;
    return 0;
  }
}

/* Counts a commit that wrote (and, unless async, flushed). Called with mu held. */
static void count_commit(struct log *log, const struct log_job *jobs) {
  uint64_t n = 0;
  for (const struct log_job *j = jobs; j; j = j->next) n++;
  int bucket = 0;
  while (bucket < 7 && n > (1ull << bucket)) bucket++;
  log->st_commits++;
  log->st_jobs += n;
  log->st_batch_hist[bucket]++;
  if (log->opts.durability != ENGRAM_DURABILITY_ASYNC && !log->wal) log->st_flushes++;
  log_hist_add(&log->st_commit, log->commit_ns);
}

#define JOB_ASLEEP 3 /* the job's word while its writer sleeps on it (1 = lead, 2 = done) */
/* Async mode: turns of the CPU a writer gives the leader before it sleeps on its job. A
 * commit without a flush is short, so the release mostly comes meanwhile: no sleep, and
 * no wake-up to make. Eight threads: 1.6-1.7x the appends/s and half the CPU per append
 * with 2 to 8 turns (pairs, append8). */
#define LOG_ASYNC_WAIT_YIELDS 4

/* A writer sleeps on its job's futex word, not on a condition variable: the thread that
 * releases the job counts it and wakes its writer, which then returns without taking mu
 * again (with a condition variable it would wake only to wait for mu, which the releaser
 * still holds). */
static void futex_wait_while(int *word, int val) {
  log_futex(word, FUTEX_WAIT_PRIVATE, (uint32_t)val, NULL);
}

/* Sets the word and wakes its writer if it sleeps (JOB_ASLEEP: a writer in async mode
 * first yields the CPU a few times, and one that sees the word set needs no wake-up). The
 * job may be gone as soon as its writer sees the new value, so the sleeping mark is in
 * the word itself, and the wake names only the address (a sleeper on a later job at the
 * same address wakes, finds its word unchanged and sleeps again). */
static void futex_set_wake(int *word, int val) {
  if (__atomic_exchange_n(word, val, __ATOMIC_ACQ_REL) == JOB_ASLEEP)
    log_futex(word, FUTEX_WAKE_PRIVATE, 1, NULL);
}

/* Writers released while mu is held are woken once it is let go: a writer woken under mu
 * would come straight back for it (its next append) and sleep on it again, a second
 * wake-up for one append. The words to set are kept per thread until wake_released(),
 * called after every unlock of mu by a leader or a flusher of a batch and before any
 * wait of theirs. The job stays valid until its word is set (its writer sleeps until
 * then). */
#define LOG_WAKE_MAX 256
static __thread int *tls_wake[LOG_WAKE_MAX];
static __thread int tls_n_wake;

static void wake_released(void) {
  for (int i = 0; i < tls_n_wake; i++) futex_set_wake(tls_wake[i], 2);
  tls_n_wake = 0;
}

static void wake_later(int *word) {
  if (tls_n_wake == LOG_WAKE_MAX) wake_released();
  tls_wake[tls_n_wake++] = word;
}

/* A finished job leaves the handle's counts: by its writer, or by the releaser that wakes
 * it. Called with mu held. */
static void job_finished(struct log *log, const struct log_job *j) {
  log->active--;
  log_hist_add(&log->st_write, clock_monotonic_ns() - j->enq_ns);
}

/* Counts the commits a job waited through: from queueing to its release or, for the
 * leader's own job, to the moment the leader hands over. Called with mu held. */
static void note_wait(struct log *log, const struct log_job *j) {
  if (log->st_commits - j->enq_commits > log->st_max_wait)
    log->st_max_wait = log->st_commits - j->enq_commits;
}

/* Releases a batch: publishes its appends, then marks its jobs done. Called with mu held. */
static void release(struct log *log, struct batch *b, int rc, const char *msg) {
  if (b->touched) {
    log->append_seq++;
    pthread_cond_broadcast(&log->append_cv);
    if (log->commit_hook) {
      pthread_mutex_unlock(&log->mu);
      wake_released();
      for (struct log_touched *t = b->touched; t; t = t->next)
        log->commit_hook(log->commit_hook_ctx, t->topic, t->head);
      pthread_mutex_lock(&log->mu);
    }
    touched_free(b->touched);
  }
  struct log_job *j = b->jobs;
  while (j) {
    struct log_job *next = j->next;
    if (j != log->leader_job) note_wait(log, j);
    if (rc < 0 && j->rc >= 0) {
      j->rc = rc;
      snprintf(j->msg, sizeof j->msg, "%s", msg);
    }
    j->done = 1;
    if (j->waiting) {
      j->waiting = 0;
      job_finished(log, j);
      wake_later(&j->wake);
    }
    j = next;
  }
  b->jobs = NULL;
  b->touched = NULL;
}

/* Releases the batch whose meta page a flush just made durable. Called with mu held. */
static void release_pending(struct log *log, int rc, const char *msg) {
  if (!log->pending_jobs) return;
  struct batch b = {log->pending_jobs, log->pending_touched, NULL, 0};
  log->pending_jobs = NULL;
  log->pending_touched = NULL;
  release(log, &b, rc, msg);
}

static int sync_env(struct log *log) {
  if (log->wal) return log_wal_sync(log);
  int64_t t0 = clock_monotonic_ns();
  int rc = mdb_env_sync(log->env, 1);
  log->last_flush_ns = clock_monotonic_ns() - t0;
  pthread_mutex_lock(&log->mu);
  log->st_flushes++;
  log_hist_add(&log->st_flush, log->last_flush_ns);
  pthread_mutex_unlock(&log->mu);
  return rc ? log_error(log, log_err_mdb(rc), "commit: flush: %s", strerror(rc)) : 0;
}

/* Takes the next batch off the queue: one solo job, or every queued ordinary job. */
static struct log_job *take(struct log *log) {
  struct log_job *head = log->q_head;
  size_t n = 1;
  if (head->solo) {
    log->q_head = head->next;
    head->next = NULL;
  } else {
    struct log_job *last = head;
    while (last->next && !last->next->solo) {
      last = last->next;
      n++;
    }
    log->q_head = last->next;
    last->next = NULL;
  }
  if (!log->q_head) log->q_tail = NULL;
  log->q_len -= n;
  return head;
}

/* Writers that wait for their commit come back a moment after it is released. When
 * fewer writers have a job queued or committed than recently did, wait up to one flush's
 * time for the missing ones to queue, so they share the next commit (whose flush also
 * makes the pending batch durable) instead of paying flushes of their own. Writers that
 * do not come back within that time have stopped: they are no longer expected. The
 * leader's own job is queued or pending, so it is counted: the leader never waits for
 * itself. In async mode, with no flush to share, it only yields the CPU a few times.
 * Called with mu held. */
static void gather(struct log *log) {
  if (log->active >= log->writers_hint) return;
  if (log->opts.durability == ENGRAM_DURABILITY_ASYNC) {
    /* No flush to wait for: let the writers that are runnable queue first (each a turn of
     * the CPU), for up to LOG_ASYNC_YIELDS turns, so that one commit carries them. */
    for (int i = 0; i < LOG_ASYNC_YIELDS && log->active < log->writers_hint && !log->closing; i++) {
      pthread_mutex_unlock(&log->mu);
      wake_released(); /* they may queue now, into this commit */
      sched_yield();
      pthread_mutex_lock(&log->mu);
    }
    if (log->active < log->writers_hint) log->writers_hint = log->active;
    return;
  }
  if (log->opts.durability != ENGRAM_DURABILITY_SYNC) return;
  int64_t wait = log->last_flush_ns,
          max = log->gather_max_ns ? log->gather_max_ns : LOG_GATHER_MAX_NS;
  if (wait > max) wait = max;
  if (wait <= 0) return;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  int64_t t = ts.tv_nsec + wait;
  ts.tv_sec += t / 1000000000;
  ts.tv_nsec = t % 1000000000;
  log->gathering = 1;
  wake_released(); /* those it waits for may be among them */
  while (log->active < log->writers_hint && !log->closing) {
    if (pthread_cond_timedwait(&log->gather_cv, &log->mu, &ts) == ETIMEDOUT) {
      log->writers_hint = log->active;
      break;
    }
  }
  log->gathering = 0;
}

/* The leader's loop: commits batches until its own job is released, then hands over.
 * A batch committed in sync mode stays pending until a later flush covers its meta page:
 * the next leader's commit, or an explicit flush when no more work comes. With the
 * write-ahead file, a batch that needs a flush ends the leadership instead: it is put in
 * *to_flush for the caller to flush and release. Entered and left with mu held. */
static void lead(struct log *log, struct log_job *self, struct batch *to_flush) {
  int sync_mode = log->opts.durability == ENGRAM_DURABILITY_SYNC;
  while (!self->done) {
    /* One batch flushing and the next waiting for its flush are enough: later writers
     * gather meanwhile into one commit, instead of many small ones queued for flushes. */
    if (log->wal && log->flushing >= 2) wake_released();
    while (log->wal && log->flushing >= 2 && !log->closing) pthread_cond_wait(&log->cv, &log->mu);
    gather(log);
    if (!log->q_head) {
      if (!log->pending_jobs) break;
      pthread_mutex_unlock(&log->mu);
      wake_released();
      int rc = sync_env(log);
      char msg[256];
      snprintf(msg, sizeof msg, "%s", log_errmsg(NULL));
      pthread_mutex_lock(&log->mu);
      release_pending(log, rc, msg);
      continue;
    }
    struct log_job *jobs = take(log);
    int pending = log->pending_jobs != NULL; /* only the leader changes it */
    pthread_mutex_unlock(&log->mu);
    wake_released();
    int wrote = 0;
    struct log_touched *touched = NULL;
    /* A solo job may open or drop named databases: no other transaction of this process
     * may open handles until it ends. */
    if (jobs->solo) log_dbi_lock(log);
    int rc = run_batch(log, jobs, &wrote, &touched);
    if (jobs->solo) {
      if (rc == 0 && wrote) log_topic_handles_reclaim(log); /* after a drop, say */
      log_dbi_unlock(log);
    }
    int strict = 0;
    for (struct log_job *j = jobs; j; j = j->next) strict |= !j->relaxed && !j->deferred;
    if (log->wal) {
      /* One flush of the write-ahead file makes the commit durable, meta page and all.
       * The flush is paid outside the leadership (see log_job_wait): the next batch
       * commits while this one's flush runs. */
      int flush = rc == 0 && wrote && log->opts.durability != ENGRAM_DURABILITY_ASYNC && strict;
      if (rc == 0 && wrote && !flush) log_wal_kick(log);
      char msg[256];
      snprintf(msg, sizeof msg, "%s", log_errmsg(NULL));
      pthread_mutex_lock(&log->mu);
      log->last_commit_ns = clock_monotonic_ns();
      if (wrote) count_commit(log, jobs);
      struct batch b = {jobs, touched, NULL, 0};
      if (flush) {
        b.seq = log_wal_seq(log); /* at least this commit's record */
        *to_flush = b;
        return;
      }
      if (wrote && (rc || !strict || log->opts.durability == ENGRAM_DURABILITY_ASYNC))
        log->dirty = 1;
      release(log, &b, rc, msg);
      continue;
    }
    char msg[256];
    snprintf(msg, sizeof msg, "%s", log_errmsg(NULL));
    int prc = 0;
    char pmsg[256] = "";
    if (sync_mode && pending && !(rc == 0 && wrote)) {
      /* This commit flushed nothing, so the pending batch needs a flush of its own. */
      prc = sync_env(log);
      snprintf(pmsg, sizeof pmsg, "%s", log_errmsg(NULL));
    }
    pthread_mutex_lock(&log->mu);
    log->last_commit_ns = clock_monotonic_ns();
    if (rc == 0 && wrote) count_commit(log, jobs);
    release_pending(log, prc, pmsg);
    struct batch b = {jobs, touched, NULL, 0};
    if (rc == 0 && wrote && sync_mode && strict) {
      log->pending_jobs = jobs;
      log->pending_touched = touched;
    } else {
      if (rc == 0 && wrote) log->dirty = 1;
      release(log, &b, rc, msg);
    }
  }
}

int log_job_enqueue(struct log *log, struct log_job *job) {
  if (log->env_flags & MDB_RDONLY)
    return log_error(log, ENGRAM_ENOTSUP,
                     "write: the log %s is open read-only: open it read-write (as a user who "
                     "may write it, on a writable file system) to change it",
                     log->path);
  if (log_foreign(log))
    return log_error(log, ENGRAM_EINVAL,
                     "write: handle used in a child after fork; open a new one");
  pthread_mutex_lock(&log->mu);
  if (log->closing) {
    pthread_mutex_unlock(&log->mu);
    return log_error(log, ENGRAM_ECLOSED, "write: log is closing");
  }
  job->next = NULL;
  job->done = 0;
  job->waiting = 0;
  job->wake = 0;
  job->enq_commits = log->st_commits;
  job->enq_ns = clock_monotonic_ns();
  if (log->q_tail)
    log->q_tail->next = job;
  else
    log->q_head = job;
  log->q_tail = job;
  log->q_len++;
  if (++log->active > log->writers_hint) log->writers_hint = log->active;
  /* The gathering leader waits for active to reach writers_hint: woken for each writer
   * that queues, it woke and slept again up to seven times a commit. */
  if (log->gathering && log->active >= log->writers_hint) pthread_cond_signal(&log->gather_cv);
  pthread_mutex_unlock(&log->mu);
  return 0;
}

/* Flushes the batch a leader just committed, after handing the leadership on: a waiting
 * writer leads the next commit meanwhile. Then releases every batch this flush (or a
 * later one) covered, whichever thread flushes it: flushes may end in any order. Entered
 * and left with mu held. */
static void flush_batch(struct log *log, struct batch *b) {
  log->flushing++;
  b->next = log->inflight;
  /* On the caller's stack: it leaves the list below, before this call returns. */
  // cppcheck-suppress autoVariables
  log->inflight = b;
  pthread_mutex_unlock(&log->mu);
  wake_released();
  int rc = log_wal_sync(log);
  char msg[256];
  snprintf(msg, sizeof msg, "%s", log_errmsg(NULL));
  uint64_t synced = rc == 0 ? log_wal_synced(log) : 0;
  pthread_mutex_lock(&log->mu);
  /* A batch off the list is no longer its flusher's (which may return at once), so a copy
   * is released; the scan starts over after each, as release() lets go of mu meanwhile. */
  for (;;) {
    struct batch **pb = &log->inflight, *x;
    for (; *pb; pb = &(*pb)->next)
      if (*pb == b || (rc == 0 && (*pb)->seq <= synced)) break;
    if (!(x = *pb)) break;
    *pb = x->next;
    struct batch c = *x;
    release(log, &c, x == b ? rc : 0, msg);
    log->flushing--; /* after: release() lets go of mu while it publishes */
  }
  pthread_cond_broadcast(&log->cv);
}

/* Wakes a writer to lead when work is left and the leader has gone: the first queued job
 * whose writer sleeps (or, without the write-ahead file, one awaiting the flush of its
 * commit). A writer that has queued but not yet come to wait leads by itself when it
 * does. Called with mu held. */
static void wake_leader(struct log *log) {
  struct log_job *j = log->q_head;
  while (j && !j->waiting) j = j->next;
  if (!j)
    for (j = log->pending_jobs; j && !j->waiting;) j = j->next;
  if (j) {
    j->waiting = 0;
    futex_set_wake(&j->wake, 1);
  }
}

int log_job_wait(struct log *log, struct log_job *job) {
  pthread_mutex_lock(&log->mu);
  while (!job->done) {
    /* Lead while there is work (queued, or committed and waiting for its flush) and
     * nobody leads; the leader hands over as soon as its own job is released. */
    if (!log->leader && (log->q_head || log->pending_jobs)) {
      struct batch b = {NULL, NULL, NULL, 0};
      log->leader = 1;
      log->leader_job = job;
      lead(log, job, &b);
      note_wait(log, job);
      log->leader_job = NULL;
      log->leader = 0;
      pthread_cond_broadcast(&log->cv); /* close() waits for the leader to leave */
      if (log->q_head || log->pending_jobs) wake_leader(log);
      if (b.jobs) flush_batch(log, &b);
    } else {
      job->waiting = 1;
      job->wake = 0;
      pthread_mutex_unlock(&log->mu);
      wake_released(); /* those this thread released while it led, before it sleeps */
      int v;
      for (int spins = 0;;) {
        v = __atomic_load_n(&job->wake, __ATOMIC_ACQUIRE);
        if (v == 1 || v == 2) break;
        if (v == 0 && spins < LOG_ASYNC_WAIT_YIELDS &&
            log->opts.durability == ENGRAM_DURABILITY_ASYNC) {
          spins++;
          sched_yield();
          continue;
        }
        int zero = 0;
        if (v == 0 && !__atomic_compare_exchange_n(&job->wake, &zero, JOB_ASLEEP, 0,
                                                   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
          continue;
        futex_wait_while(&job->wake, JOB_ASLEEP);
      }
      if (v == 2) goto released; /* counted by the releaser */
      pthread_mutex_lock(&log->mu);
    }
  }
  job_finished(log, job);
  pthread_mutex_unlock(&log->mu);
  wake_released();
released:
  if (job->rc < 0) {
    /* The leader handles the private codes (LOG_EMAPFULL, LOG_ENEWDBI); should one ever
     * get here, the caller still gets a public code and a message. */
    int code = err_public(job->rc);
    if (code != job->rc)
      log_error(log, code, "write: internal code %d: %s", job->rc,
                job->msg[0] ? job->msg : "no message");
    else
      log_error(log, code, "%s", job->msg);
    job->rc = code;
  }
  return job->rc;
}

int log_commit_stats(struct log *log, engram_commit_stats *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&log->mu);
  out->commits = log->st_commits;
  out->jobs = log->st_jobs;
  out->flushes = log->st_flushes;
  out->flushes_shared = log->st_flushes_shared;
  out->appends_shared = log->st_appends_shared;
  out->appends_carried = log->st_appends_carried;
  out->max_wait = log->st_max_wait;
  memcpy(out->batch_hist, log->st_batch_hist, sizeof out->batch_hist);
  out->write_latency = log->st_write;
  out->commit_duration = log->st_commit;
  out->flush_duration = log->st_flush;
  out->checkpoints = log_wal_checkpoints(log);
  out->write_ahead = log->wal != NULL;
  pthread_mutex_unlock(&log->mu);
  return 0;
}

/* Automatic dictionary training runs on a thread of its own: reading 4,096 samples and
 * ZDICT take about 20 ms each, and
 * the append that crossed dict_train_after (or any other write) must not wait for it.
 * The thread starts on the first request and ends at close; a topic whose training was
 * cut short by close keeps no dictionary, as when training fails. */
static void *trainer_main(void *arg) {
  struct log *log = arg;
  pthread_mutex_lock(&log->mu);
  for (;;) {
    while (!log->train && !log->closing) pthread_cond_wait(&log->train_cv, &log->mu);
    if (log->closing) break;
    struct log_touched *t = log->train;
    log->train = t->next;
    pthread_mutex_unlock(&log->mu);
    log_dict_train(log, t->topic, NULL);
    free(t);
    pthread_mutex_lock(&log->mu);
  }
  pthread_mutex_unlock(&log->mu);
  return NULL;
}

void log_train_request(struct log *log, const char *topic) {
  pthread_mutex_lock(&log->mu);
  struct log_touched *t;
  for (t = log->train; t; t = t->next)
    if (!strcmp(t->topic, topic)) break;
  if (!t && (t = calloc(1, sizeof *t))) {
    snprintf(t->topic, sizeof t->topic, "%s", topic);
    t->next = log->train;
    log->train = t;
  }
  if (!log->trainer_running && !log->closing) {
    /* Made here, not at open: most handles never train. */
    pthread_cond_init(&log->train_cv, NULL);
    if (pthread_create(&log->trainer, NULL, trainer_main, log) == 0)
      log->trainer_running = 1;
    else
      pthread_cond_destroy(&log->train_cv);
  }
  if (log->trainer_running) pthread_cond_signal(&log->train_cv);
  pthread_mutex_unlock(&log->mu);
}

static int write_job(struct log *log, log_job_fn fn, void *arg, int solo) {
  struct log_job job = {.fn = fn, .arg = arg, .solo = solo};
  int rc = log_job_enqueue(log, &job);
  return rc ? rc : log_job_wait(log, &job);
}

int log_write(struct log *log, log_job_fn fn, void *arg) { return write_job(log, fn, arg, 0); }

int log_write_solo(struct log *log, log_job_fn fn, void *arg) { return write_job(log, fn, arg, 1); }

int log_write_deferrable(struct log *log, log_job_fn fn, void *arg, int *deferred, uint64_t *mark) {
  /* Only where a flush of the write-ahead file is what makes a commit durable. */
  int can = log->wal && (log->opts.durability == ENGRAM_DURABILITY_SYNC ||
                         log->opts.durability == ENGRAM_DURABILITY_NOMETASYNC);
  struct log_job job = {.fn = fn, .arg = arg, .may_defer = can};
  *deferred = 0;
  *mark = 0;
  int rc = log_job_enqueue(log, &job);
  if (!rc) rc = log_job_wait(log, &job);
  if (rc >= 0 && job.deferred) {
    *deferred = 1;
    *mark = log_wal_seq(log); /* at least this commit's record */
  }
  return rc;
}

int log_flushed(struct log *log, uint64_t mark) { return !log->wal || log_wal_synced(log) >= mark; }

int log_flush_upto(struct log *log, uint64_t mark) {
  return log_flushed(log, mark) ? 0 : log_wal_sync(log);
}

int log_write_relaxed(struct log *log, log_job_fn fn, void *arg) {
  struct log_job job = {.fn = fn, .arg = arg, .relaxed = 1};
  int rc = log_job_enqueue(log, &job);
  return rc ? rc : log_job_wait(log, &job);
}

/* Checkpoints of the write-ahead file (LOG_WAL_CHECKPOINT), on a thread of their own: a
 * checkpoint waits for data.mdb's flush, which takes long when many pages are dirty, and
 * meanwhile the flusher must go on flushing the file, moving the pin (wal.c,
 * WAL_PIN_EVERY) and writing zeros ahead of the tail. */
static void *checkpointer_main(void *arg) {
  struct log *log = arg;
  pthread_mutex_lock(&log->mu);
  while (!log->closing) {
    if (!(log->wal_work & LOG_WAL_CHECKPOINT)) {
      pthread_cond_wait(&log->flush_cv, &log->mu);
      continue;
    }
    log->wal_work &= ~LOG_WAL_CHECKPOINT;
    pthread_mutex_unlock(&log->mu);
    log_wal_work(log, LOG_WAL_CHECKPOINT);
    pthread_mutex_lock(&log->mu);
  }
  pthread_mutex_unlock(&log->mu);
  return NULL;
}

/* Started on the first checkpoint, not at open: most handles (a command, a short-lived
 * process) never checkpoint before their close does, and a thread starting while a test
 * forks can leave a lock (ASan's allocator's) held in the child. */
void log_checkpointer_start_locked(struct log *log) {
  if (log->checkpointer_running || log->closing || !log->flusher_running) return;
  if (pthread_create(&log->checkpointer, NULL, checkpointer_main, log) == 0)
    log->checkpointer_running = 1;
}

/* Nometasync and async modes: forces commits to disk every flush interval. */
static void *flusher_main(void *arg) {
  struct log *log = arg;
  pthread_mutex_lock(&log->mu);
  while (!log->closing) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = ts.tv_nsec + clock_ms_to_ns(log->opts.flush_interval_ms);
    ts.tv_sec += ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    /* Work asked for while this thread was busy is done at once: its signal came when
     * nobody waited. */
    int timed_out = 0, mine = log->checkpointer_running ? ~LOG_WAL_CHECKPOINT : ~0;
    if (!(log->wal_work & mine))
      timed_out = pthread_cond_timedwait(&log->flush_cv, &log->mu, &ts) == ETIMEDOUT;
    /* A handle that wrote nothing since still moves its pin once an interval (flushing
     * what other processes committed, if they have not yet): LMDB reuses no page freed
     * after the oldest pin of any handle (wal.c). */
    if (timed_out && log->wal && !log->dirty) log->wal_work |= LOG_WAL_PIN;
    if (log->wal_work & mine) {
      int work = log->wal_work & mine;
      log->wal_work &= ~mine;
      pthread_mutex_unlock(&log->mu);
      log_wal_work(log, work);
      pthread_mutex_lock(&log->mu);
    }
    if (log->dirty) {
      log->dirty = 0;
      pthread_mutex_unlock(&log->mu);
      if (log->wal) {
        log_wal_sync(log); /* counts itself */
        pthread_mutex_lock(&log->mu);
        continue;
      }
      int64_t t0 = clock_monotonic_ns();
      mdb_env_sync(log->env, 1);
      pthread_mutex_lock(&log->mu);
      log_hist_add(&log->st_flush, clock_monotonic_ns() - t0);
    }
  }
  pthread_mutex_unlock(&log->mu);
  return NULL;
}

int log_commit_start(struct log *log) {
  /* With the write-ahead file the flusher also flushes data.mdb when the file is half
   * full (in every mode); without it, sync mode needs no flusher. */
  if (log->opts.durability == ENGRAM_DURABILITY_SYNC && !log->wal) return 0;
  if (pthread_create(&log->flusher, NULL, flusher_main, log) != 0) return ENGRAM_ENOMEM;
  log->flusher_running = 1;
  return 0;
}

void log_commit_stop(struct log *log) {
  pthread_mutex_lock(&log->mu);
  log->closing = 1;
  pthread_cond_broadcast(&log->flush_cv);
  pthread_cond_broadcast(&log->gather_cv);
  while (log->leader || log->q_head || log->pending_jobs || log->flushing)
    pthread_cond_wait(&log->cv, &log->mu);
  int trainer = log->trainer_running;
  log->trainer_running = 0;
  if (trainer) pthread_cond_signal(&log->train_cv);
  pthread_mutex_unlock(&log->mu);
  /* The trainer may still be storing a dictionary: its job was queued before closing
   * (and ran above) or is refused. */
  if (trainer) {
    pthread_join(log->trainer, NULL);
    pthread_cond_destroy(&log->train_cv);
  }
  if (log->flusher_running) pthread_join(log->flusher, NULL);
  log->flusher_running = 0;
  if (log->checkpointer_running) pthread_join(log->checkpointer, NULL);
  log->checkpointer_running = 0;
}

void log_wait_append(struct log *log, const char *topic, int64_t deadline_mono_ns) {
  if (log->wait_hook) {
    log->wait_hook(log->wait_hook_ctx, log, topic, deadline_mono_ns);
    return;
  }
  /* Appends from this process signal append_cv; appends from other processes are found
   * by the caller's next look, so never sleep longer than a short poll interval. */
  int64_t now = clock_monotonic_ns();
  int64_t until = now + 2000000;
  if (until > deadline_mono_ns) until = deadline_mono_ns;
  if (until <= now) return;
  struct timespec ts = {until / 1000000000, until % 1000000000};
  pthread_mutex_lock(&log->mu);
  uint64_t seq = log->append_seq;
  while (log->append_seq == seq && !log->closing) {
    if (pthread_cond_timedwait(&log->append_cv, &log->mu, &ts) == ETIMEDOUT) break;
  }
  pthread_mutex_unlock(&log->mu);
}
