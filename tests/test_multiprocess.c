/* test_multiprocess.c — several processes appending to and reading one log directory at
 * once, each through its own handle. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"

#define NPROC 4
#define PER_PROC 500

typedef tu_fx fx;
#define OK(log, call) TU_OK(log, call)

/* Shared with the children, summed over them: flushes of other processes that made their
 * writes durable, single appends committed through a commit shared between processes,
 * and other processes' appends their commits carried. */
static struct counts { uint64_t flushes_shared, appends_shared, appends_carried; } * shared;

static int setup(void **state) {
  fx *f = tu_fx_new("multiprocess");
  engram *log = tu_open(f->logdir, NULL);
  tu_topic(log, "memory", NULL);
  engram_close(log); /* children open their own handles; the parent holds none while forking */
  *state = f;
  return 0;
}

struct child {
  const char *logdir;
  int id;
  int count;   /* events (writers) or expected total (reader) */
  int batch;   /* events per append call; 1 = engram_append */
  int writers; /* reader: how many writers produce "p<w>-<k>" payloads */
  int async;   /* writers: open with async durability */
};

static int child_fail(engram *log, const char *what, int rc) {
  fprintf(stderr, "child %d: %s: %s: %s\n", (int)getpid(), what, engram_errname(rc),
          log ? engram_errmsg(log) : "");
  engram_close(log);
  return 1;
}

/* Appends c->count events "p<id>-<k>", checking its own offsets only ever increase. */
static int writer(void *arg) {
  struct child *c = arg;
  engram *log = NULL;
  engram_options o = {.durability = c->async ? ENGRAM_DURABILITY_ASYNC : ENGRAM_DURABILITY_SYNC};
  int rc = engram_open(c->logdir, &o, &log);
  if (rc) return child_fail(NULL, "open", rc);
  uint64_t last = 0;
  char bufs[16][32];
  engram_event evs[16];
  uint64_t offs[16];
  for (int k = 0; k < c->count; k += c->batch) {
    for (int j = 0; j < c->batch; j++) {
      int n = snprintf(bufs[j], sizeof bufs[j], "p%d-%d", c->id, k + j);
      evs[j] = (engram_event){.type = "memory.saved", .payload = bufs[j], .payload_len = (size_t)n};
    }
    rc = c->batch == 1 ? engram_append(log, "memory", evs, offs, NULL)
                       : engram_append_batch(log, "memory", evs, (size_t)c->batch, offs, NULL);
    if (rc) return child_fail(log, "append", rc);
    for (int j = 0; j < c->batch; j++) {
      if (offs[j] <= last || (j && offs[j] != offs[j - 1] + 1)) {
        fprintf(stderr, "child %d: offset %llu after %llu\n", c->id, (unsigned long long)offs[j],
                (unsigned long long)last);
        engram_close(log);
        return 2;
      }
      last = offs[j];
    }
  }
  engram_commit_stats st;
  if (engram_commit_stats_get(log, &st) == 0) {
    __atomic_add_fetch(&shared->flushes_shared, st.flushes_shared, __ATOMIC_RELAXED);
    __atomic_add_fetch(&shared->appends_shared, st.appends_shared, __ATOMIC_RELAXED);
    __atomic_add_fetch(&shared->appends_carried, st.appends_carried, __ATOMIC_RELAXED);
  }
  engram_close(log);
  return 0;
}

/* Follows the topic until it has seen c->count events, checking that what it sees never
 * has a gap and that each writer's events appear in the order it wrote them. */
static int reader(void *arg) {
  struct child *c = arg;
  engram *log = NULL;
  int rc = engram_open(c->logdir, NULL, &log);
  if (rc) return child_fail(NULL, "open", rc);
  int next_seq[NPROC] = {0};
  uint64_t next = 1;
  int64_t deadline = tu_mono_ms() + 120000;
  while (next <= (uint64_t)c->count) {
    if (tu_mono_ms() > deadline) {
      fprintf(stderr, "reader: saw only %llu events\n", (unsigned long long)(next - 1));
      engram_close(log);
      return 3;
    }
    engram_batch *b = NULL;
    rc = engram_read_range(log, "memory", next, 100, &b);
    if (rc) return child_fail(log, "read_range", rc);
    for (size_t k = 0; k < b->count; k++) {
      const engram_event *e = &b->events[k];
      char p[32];
      int w, s;
      size_t n = e->payload_len < 31 ? e->payload_len : 31;
      memcpy(p, e->payload, n);
      p[n] = 0;
      if (e->offset != next || sscanf(p, "p%d-%d", &w, &s) != 2 || w < 0 || w >= c->writers ||
          s != next_seq[w]) {
        fprintf(stderr, "reader: offset %llu (wanted %llu) payload '%s'\n",
                (unsigned long long)e->offset, (unsigned long long)next, p);
        engram_batch_free(b);
        engram_close(log);
        return 4;
      }
      next_seq[w]++;
      next++;
    }
    size_t got = b->count;
    engram_batch_free(b);
    if (got == 0) tu_sleep_ms(1);
  }
  engram_close(log);
  return 0;
}

/* Every "p<w>-<k>" for w < writers, k < per appears exactly once, at dense offsets. */
static void expect_all(const char *logdir, int writers, int per) {
  engram *log = tu_open(logdir, NULL);
  engram_topic_info i;
  assert_int_equal(engram_topic_info_get(log, "memory", &i), 0);
  assert_int_equal(i.count, (uint64_t)writers * per);
  assert_int_equal(i.head_offset, (uint64_t)writers * per);
  char *seen = calloc((size_t)writers * per, 1);
  uint64_t next = 1;
  for (;;) {
    engram_batch *b = NULL;
    assert_int_equal(engram_read_range(log, "memory", next, 500, &b), 0);
    size_t n = b->count;
    for (size_t k = 0; k < n; k++) {
      const engram_event *e = &b->events[k];
      assert_int_equal(e->offset, next);
      char p[32];
      size_t len = e->payload_len < 31 ? e->payload_len : 31;
      memcpy(p, e->payload, len);
      p[len] = 0;
      int w, s;
      assert_int_equal(sscanf(p, "p%d-%d", &w, &s), 2);
      assert_true(w >= 0 && w < writers && s >= 0 && s < per);
      assert_int_equal(seen[w * per + s], 0);
      seen[w * per + s] = 1;
      next++;
    }
    engram_batch_free(b);
    if (n == 0) break;
  }
  assert_int_equal(next, (uint64_t)writers * per + 1);
  engram_verify_report rep;
  assert_int_equal(engram_verify(log, &rep), 0);
  assert_int_equal(rep.damaged, 0);
  free(seen);
  engram_close(log);
}

static void four_writers(fx *f, int async) {
  memset(shared, 0, sizeof *shared);
  struct child c[NPROC];
  pid_t pid[NPROC];
  int64_t t0 = tu_mono_ms();
  for (int i = 0; i < NPROC; i++) {
    c[i] =
        (struct child){.logdir = f->logdir, .id = i, .count = PER_PROC, .batch = 1, .async = async};
    pid[i] = tu_spawn(writer, &c[i]);
  }
  for (int i = 0; i < NPROC; i++) assert_int_equal(tu_wait(pid[i], 120000), 0);
  print_message(
      "%d %s appends from %d processes in %lld ms: %llu through shared commits, %llu of "
      "them carried by another process's commit; %llu made durable by another process's "
      "flush\n",
      NPROC * PER_PROC, async ? "async" : "synced", NPROC, (long long)(tu_mono_ms() - t0),
      (unsigned long long)shared->appends_shared, (unsigned long long)shared->appends_carried,
      (unsigned long long)shared->flushes_shared);
  expect_all(f->logdir, NPROC, PER_PROC);
}

static void four_processes_appending_at_once_lose_nothing_and_share_dense_offsets(void **state) {
  four_writers(*state, 0);
  /* Single appends go through shared commits once another process has the log open (all
   * but those of a process that starts before the others open it); many rode on another
   * process's. */
  assert_true(shared->appends_shared > (uint64_t)NPROC * PER_PROC / 2);
  assert_true(shared->appends_carried > 0);
}

/* The same in async mode, where a writer first yields the CPU a few times for its result
 * instead of sleeping on its slot, and the combiner wakes only writers that sleep. */
static void four_async_processes_lose_nothing_and_share_dense_offsets(void **state) {
  four_writers(*state, 1);
  assert_true(shared->appends_shared > (uint64_t)NPROC * PER_PROC / 2);
  assert_true(shared->appends_carried > 0);
}

static void processes_that_do_not_share_commits_share_flushes(void **state) {
  setenv("ENGRAM_NO_SHARE", "1", 1);
  four_writers(*state, 0);
  unsetenv("ENGRAM_NO_SHARE");
  assert_int_equal(shared->appends_shared, 0);
  /* One flush at a time between processes: the others' records ride along. */
  assert_true(shared->flushes_shared > 0);
}

static int64_t append_n(engram *log, int from, int n);

/* Appends "from-b" as the combiner of a shared commit, which waits for a second ready
 * slot and dies (ENGRAM_TEST_SHARE_DIE = c->batch ? "committed" : "taken"). */
static int dying_combiner(void *arg) {
  struct child *c = arg;
  setenv("ENGRAM_TEST_SHARE_DIE", c->batch ? "committed" : "taken", 1);
  setenv("ENGRAM_TEST_SHARE_READY", "2", 1);
  engram *log = NULL;
  int rc = engram_open(c->logdir, NULL, &log);
  if (rc) return child_fail(NULL, "open", rc);
  engram_event e = {.type = "memory.saved", .payload = "from-b", .payload_len = 6};
  rc = engram_append(log, "memory", &e, NULL, NULL);
  return child_fail(log, "append returned from a combiner that should have died", rc);
}

static int count_payload(engram *log, const char *p, uint64_t *at) {
  engram_batch *b;
  OK(log, engram_read_range(log, "memory", 1, 1000, &b));
  int n = 0;
  for (size_t i = 0; i < b->count; i++)
    if (b->events[i].payload_len == strlen(p) && !memcmp(b->events[i].payload, p, strlen(p))) {
      n++;
      if (at) *at = b->events[i].offset;
    }
  engram_batch_free(b);
  return n;
}

/* Another process's combiner took this process's append and died: before its commit (the
 * append is offered again and committed once) or after it (the receipt in the log says
 * so: the append is not committed twice). Either way the append returns its offset. */
static void combiner_killed(fx *f, int committed) {
  engram *log = tu_open(f->logdir, NULL); /* registered first: the child's append shares */
  struct child c = {.logdir = f->logdir, .batch = committed};
  pid_t b = tu_spawn(dying_combiner, &c);
  tu_sleep_ms(300); /* the child combines, waiting for a second slot */
  engram_event e = {.type = "memory.saved", .payload = "from-a", .payload_len = 6};
  uint64_t off = 0;
  int64_t t0 = tu_mono_ms();
  OK(log, engram_append(log, "memory", &e, &off, NULL));
  int64_t took = tu_mono_ms() - t0;
  assert_int_not_equal(tu_wait(b, 10000), 0); /* killed */
  print_message("append carried by a combiner killed %s its commit: returned after %lld ms\n",
                committed ? "after" : "before", (long long)took);
  engram_commit_stats st;
  OK(log, engram_commit_stats_get(log, &st));
  assert_int_equal(st.appends_shared, 1);
  uint64_t at = 0;
  assert_int_equal(count_payload(log, "from-a", &at), 1);
  assert_int_equal(at, off);
  assert_int_equal(count_payload(log, "from-b", NULL), committed);
  /* The role was taken back: appends go on, with a new process too. */
  struct child w = {.logdir = f->logdir, .id = 7, .count = 20, .batch = 1};
  pid_t p = tu_spawn(writer, &w);
  append_n(log, 0, 20);
  assert_int_equal(tu_wait(p, 30000), 0);
  engram_verify_report rep;
  OK(log, engram_verify(log, &rep));
  assert_int_equal(rep.damaged, 0);
  engram_close(log);
}

static void a_combiner_killed_before_its_commit_loses_no_append_of_another_process(void **state) {
  combiner_killed(*state, 0);
}

static void a_combiner_killed_after_its_commit_doubles_no_append_of_another_process(void **state) {
  combiner_killed(*state, 1);
}

/* Checks, in a process whose appends go through shared commits, that refusals, their
 * messages and idempotency duplicates are what an append of its own would give. */
static int shared_checker(void *arg) {
  struct child *c = arg;
  engram *log = NULL;
  int rc = engram_open(c->logdir, NULL, &log);
  if (rc) return child_fail(NULL, "open", rc);
  engram_event e = {.type = "memory.saved", .payload = "x", .payload_len = 1};
  rc = engram_append(log, "nosuch", &e, NULL, NULL);
  if (rc != ENGRAM_ENOTFOUND || !strstr(engram_errmsg(log), "nosuch"))
    return child_fail(log, "append to a missing topic", rc);
  engram_event bad = {.type = "memory..saved", .payload = "x", .payload_len = 1};
  rc = engram_append(log, "memory", &bad, NULL, NULL);
  if (rc != ENGRAM_EINVAL || !strstr(engram_errmsg(log), "memory..saved"))
    return child_fail(log, "append of a bad type", rc);
  engram_event idem = {
      .type = "memory.saved", .payload = "i", .payload_len = 1, .idempotency_key = "req-1"};
  uint64_t o1 = 0, o2 = 0;
  int d1 = -1, d2 = -1;
  if ((rc = engram_append(log, "memory", &idem, &o1, &d1)) ||
      (rc = engram_append(log, "memory", &idem, &o2, &d2)))
    return child_fail(log, "append with an idempotency key", rc);
  if (d1 != 0 || d2 != 1 || o1 != o2 || o1 == 0) return child_fail(log, "duplicate", -1);
  engram_commit_stats st;
  if ((rc = engram_commit_stats_get(log, &st)) || st.appends_shared != 2)
    return child_fail(log, "appends_shared", rc ? rc : -1);
  engram_close(log);
  return 0;
}

static void refusals_and_duplicates_through_a_shared_commit_are_as_alone(void **state) {
  fx *f = *state;
  engram *log = tu_open(f->logdir, NULL); /* registered: the child's appends share */
  struct child c = {.logdir = f->logdir};
  assert_int_equal(tu_fork_child(shared_checker, &c, 30000), 0);
  assert_int_equal(count_payload(log, "i", NULL), 1);
  assert_int_equal(count_payload(log, "x", NULL), 0);
  engram_close(log);
}

/* Four threads of a process whose appends go through one shared commit (the combiner
 * waits for four ready slots), one of them to a missing topic: the three others are
 * stored, the fourth fails alone with its own message. */
struct slot_writer {
  engram *log;
  int id, rc;
  uint64_t off;
  char msg[256];
};

static void *slot_writer_main(void *arg) {
  struct slot_writer *w = arg;
  char p[16];
  int n = snprintf(p, sizeof p, "g-%d", w->id);
  engram_event e = {.type = "memory.saved", .payload = p, .payload_len = (size_t)n};
  w->rc = engram_append(w->log, w->id == 0 ? "nosuch" : "memory", &e, &w->off, NULL);
  snprintf(w->msg, sizeof w->msg, "%s", w->rc ? engram_errmsg(w->log) : "");
  return NULL;
}

static int one_combine_with_a_refusal(void *arg) {
  struct child *c = arg;
  setenv("ENGRAM_TEST_SHARE_READY", "4", 1);
  engram *log = NULL;
  int rc = engram_open(c->logdir, NULL, &log);
  if (rc) return child_fail(NULL, "open", rc);
  struct slot_writer w[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    w[i] = (struct slot_writer){.log = log, .id = i};
    if (pthread_create(&th[i], NULL, slot_writer_main, &w[i])) return child_fail(log, "thread", -1);
  }
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  if (w[0].rc != ENGRAM_ENOTFOUND || !strstr(w[0].msg, "nosuch"))
    return child_fail(log, "append to a missing topic in a shared commit", w[0].rc);
  for (int i = 1; i < 4; i++)
    if (w[i].rc || !w[i].off) return child_fail(log, "append beside a refused one", w[i].rc);
  engram_commit_stats st;
  if ((rc = engram_commit_stats_get(log, &st)) || st.appends_shared != 3)
    return child_fail(log, "three appends stored through shared commits", rc ? rc : -1);
  engram_close(log);
  return 0;
}

static void a_refused_append_in_a_shared_commit_fails_alone(void **state) {
  fx *f = *state;
  engram *log = tu_open(f->logdir, NULL); /* registered: the child's appends share */
  struct child c = {.logdir = f->logdir};
  assert_int_equal(tu_fork_child(one_combine_with_a_refusal, &c, 30000), 0);
  for (int i = 1; i < 4; i++) {
    char p[16];
    snprintf(p, sizeof p, "g-%d", i);
    assert_int_equal(count_payload(log, p, NULL), 1);
  }
  assert_int_equal(count_payload(log, "g-0", NULL), 0);
  engram_close(log);
}

/* Holds the turn to flush between processes, stalled in its flush (until killed). */
static int stalled_flusher(void *arg) {
  struct child *c = arg;
  setenv("ENGRAM_TEST_WAL_FLUSH_STALL_MS", "30000", 1);
  engram *log = NULL;
  int rc = engram_open(c->logdir, NULL, &log);
  if (rc) return child_fail(NULL, "open", rc);
  engram_event e = {.type = "memory.saved", .payload = "stalled", .payload_len = 7};
  rc = engram_append(log, "memory", &e, NULL, NULL);
  return child_fail(log, "append returned during its stall", rc);
}

static int64_t append_n(engram *log, int from, int n) {
  int64_t t0 = tu_mono_ms();
  char b[32];
  for (int k = from; k < from + n; k++) {
    int len = snprintf(b, sizeof b, "q-%d", k);
    engram_event e = {.type = "memory.saved", .payload = b, .payload_len = (size_t)len};
    OK(log, engram_append(log, "memory", &e, NULL, NULL));
  }
  return tu_mono_ms() - t0;
}

/* A process stopped or killed while the others wait for its flush: they wait a bounded
 * time while it lives, take the turn back once it is dead, and lose nothing. */
static void a_process_killed_during_its_flush_stalls_no_other(void **state) {
  fx *f = *state;
  struct child c = {.logdir = f->logdir};
  pid_t a = tu_spawn(stalled_flusher, &c);
  tu_sleep_ms(500); /* its append is in its flush, holding the turn */
  engram *log = tu_open(f->logdir, NULL);
  int64_t alive = append_n(log, 0, 10);
  assert_int_equal(kill(a, SIGKILL), 0);
  assert_int_not_equal(tu_wait(a, 10000), 0);
  int64_t dead = append_n(log, 10, 100);
  print_message("10 appends beside the stalled flush: %lld ms; 100 after its kill: %lld ms\n",
                (long long)alive, (long long)dead);
  assert_true(alive < 5000); /* each waited a bounded time, not for the stalled flush */
  assert_true(dead < 3000);  /* the dead owner's turn was taken back: no waiting at all */
  engram_batch *b;
  OK(log, engram_read_range(log, "memory", 1, 1000, &b));
  int seen = 0;
  for (size_t i = 0; i < b->count; i++)
    seen += b->events[i].payload_len > 2 && !memcmp(b->events[i].payload, "q-", 2);
  assert_int_equal(seen, 110);
  engram_batch_free(b);
  engram_verify_report rep;
  assert_int_equal(engram_verify(log, &rep), 0);
  assert_int_equal(rep.damaged, 0);
  engram_close(log);
}

/* Whether pid is a zombie: dead, not yet reaped by its parent. */
static int is_zombie(pid_t pid) {
  char path[64], buf[256];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *fp = fopen(path, "re");
  if (!fp) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, fp);
  fclose(fp);
  buf[n] = '\0';
  const char *p = strrchr(buf, ')');
  return p && p[1] == ' ' && p[2] == 'Z';
}

/* The same, with the killed process left unreaped by its parent for a while (a busy
 * supervisor): a zombie still answers kill(pid, 0), but it flushes nothing more, so its
 * turn is taken back as a dead process's is. */
static void a_killed_flusher_not_yet_reaped_stalls_no_other(void **state) {
  fx *f = *state;
  struct child c = {.logdir = f->logdir};
  pid_t a = tu_spawn(stalled_flusher, &c);
  tu_sleep_ms(500); /* its append is in its flush, holding the turn */
  engram *log = tu_open(f->logdir, NULL);
  assert_int_equal(kill(a, SIGKILL), 0);
  for (int i = 0; i < 500 && !is_zombie(a); i++) tu_sleep_ms(10);
  assert_true(is_zombie(a));
  int64_t zombie = append_n(log, 0, 100);
  assert_true(is_zombie(a)); /* still unreaped through all of them */
  print_message("100 appends beside the unreaped flusher: %lld ms\n", (long long)zombie);
  /* Waiting out the turn would take 100 x 50 ms; taken back, no waiting at all. */
  assert_true(zombie < 3000);
  assert_int_not_equal(tu_wait(a, 10000), 0);
  engram_batch *b;
  OK(log, engram_read_range(log, "memory", 1, 1000, &b));
  int seen = 0;
  for (size_t i = 0; i < b->count; i++)
    seen += b->events[i].payload_len > 2 && !memcmp(b->events[i].payload, "q-", 2);
  assert_int_equal(seen, 100);
  engram_batch_free(b);
  engram_close(log);
}

/* Opens the log for writing and stays (until killed). */
static int idle_writer(void *arg) {
  struct child *c = arg;
  engram *log = NULL;
  int rc = engram_open(c->logdir, NULL, &log);
  if (rc) return child_fail(NULL, "open", rc);
  for (;;) pause();
}

/* A process killed with the log open leaves its entry in DIR/commit.shm: the appends of
 * the one left alone go back to committing on their own, not through a shared commit
 * with nobody (after a bounded number that find the entry before it is cleared). */
static void a_process_left_alone_stops_sharing_with_a_killed_one(void **state) {
  fx *f = *state;
  struct child c = {.logdir = f->logdir};
  pid_t a = tu_spawn(idle_writer, &c);
  tu_sleep_ms(500); /* it has the log open */
  engram *log = tu_open(f->logdir, NULL);
  append_n(log, 0, 10);
  engram_commit_stats st;
  OK(log, engram_commit_stats_get(log, &st));
  assert_int_equal(st.appends_shared, 10); /* beside a live process: shared */
  assert_int_equal(kill(a, SIGKILL), 0);
  assert_int_not_equal(tu_wait(a, 10000), 0);
  append_n(log, 10, 1000);
  OK(log, engram_commit_stats_get(log, &st));
  print_message("appends through a shared commit after the kill: %llu of 1000\n",
                (unsigned long long)(st.appends_shared - 10));
  assert_true(st.appends_shared - 10 <= 100);
  engram_close(log);
}

static void batches_from_different_processes_never_interleave(void **state) {
  fx *f = *state;
  struct child c[3];
  pid_t pid[3];
  for (int i = 0; i < 3; i++) {
    c[i] = (struct child){.logdir = f->logdir, .id = i, .count = 400, .batch = 10};
    pid[i] = tu_spawn(writer, &c[i]);
  }
  for (int i = 0; i < 3; i++) assert_int_equal(tu_wait(pid[i], 120000), 0);
  expect_all(f->logdir, 3, 400);
  /* Each batch of ten sits at ten consecutive offsets, in order. */
  engram *log = tu_open(f->logdir, NULL);
  for (uint64_t off = 1; off <= 1200; off += 10) {
    engram_batch *b = NULL;
    assert_int_equal(engram_read_range(log, "memory", off, 10, &b), 0);
    assert_int_equal(b->count, 10);
    int w0 = -1, s0 = -1;
    for (int k = 0; k < 10; k++) {
      char p[32];
      memcpy(p, b->events[k].payload, b->events[k].payload_len);
      p[b->events[k].payload_len] = 0;
      int w, s;
      assert_int_equal(sscanf(p, "p%d-%d", &w, &s), 2);
      if (k == 0) {
        w0 = w;
        s0 = s;
        assert_int_equal(s0 % 10, 0);
      } else {
        assert_int_equal(w, w0);
        assert_int_equal(s, s0 + k);
      }
    }
    engram_batch_free(b);
  }
  engram_close(log);
}

static void a_reader_process_sees_appends_from_other_processes_in_order_without_gaps(void **state) {
  fx *f = *state;
  struct child r = {.logdir = f->logdir, .count = 2 * PER_PROC, .writers = 2};
  pid_t rp = tu_spawn(reader, &r);
  struct child c[2];
  pid_t pid[2];
  for (int i = 0; i < 2; i++) {
    c[i] = (struct child){.logdir = f->logdir, .id = i, .count = PER_PROC, .batch = i ? 5 : 1};
    pid[i] = tu_spawn(writer, &c[i]);
  }
  for (int i = 0; i < 2; i++) assert_int_equal(tu_wait(pid[i], 120000), 0);
  assert_int_equal(tu_wait(rp, 130000), 0);
  expect_all(f->logdir, 2, PER_PROC);
}

/* A process that holds a handle open while others create topics and append: it opens
 * the log, tells the test (ready), waits for its go, then looks at the topic "memory"
 * (head 1) and appends to "fresh", made meanwhile by another process (offset 1). It runs
 * as a child so that the test process forks with no handle and no handle's threads: under
 * ASan a fork beside a handle's threads could leave a thread waiting for an allocator
 * lock for good. */
struct holder {
  const char *logdir;
  int ready[2], go[2];
};

static int holder_main(void *arg) {
  struct holder *h = arg;
  engram *log = NULL;
  int rc = engram_open(h->logdir, NULL, &log);
  if (rc) return child_fail(NULL, "open", rc);
  char ch = 'r';
  if (write(h->ready[1], &ch, 1) != 1 || read(h->go[0], &ch, 1) != 1) return 3;
  engram_topic_info i;
  if ((rc = engram_topic_info_get(log, "memory", &i))) return child_fail(log, "info memory", rc);
  if (i.head_offset != 1) return 4;
  engram_event ev = {.type = "a.b", .payload = "x", .payload_len = 1};
  uint64_t off = 0;
  if ((rc = engram_append(log, "fresh", &ev, &off, NULL)))
    return child_fail(log, "append fresh", rc);
  engram_close(log);
  return off == 1 ? 0 : 5;
}

static int create_fresh(void *arg) {
  engram *l = NULL;
  int rc = engram_open(arg, NULL, &l);
  if (rc == 0) rc = engram_topic_create(l, "fresh", NULL);
  engram_close(l);
  return rc ? 1 : 0;
}

static void topics_created_by_another_process_are_usable_at_once(void **state) {
  fx *f = *state;
  struct holder h = {.logdir = f->logdir};
  assert_int_equal(pipe(h.ready), 0);
  assert_int_equal(pipe(h.go), 0);
  pid_t hp = tu_spawn(holder_main, &h);
  char ch;
  assert_int_equal(read(h.ready[0], &ch, 1), 1); /* its handle is open */
  /* While it holds its handle, one process appends to "memory", another makes "fresh". */
  struct child c = {.logdir = f->logdir, .id = 0, .count = 1, .batch = 1};
  assert_int_equal(tu_fork_child(writer, &c, 60000), 0);
  assert_int_equal(tu_fork_child(create_fresh, (void *)f->logdir, 60000), 0);
  ch = 'g';
  assert_int_equal(write(h.go[1], &ch, 1), 1);
  assert_int_equal(tu_wait(hp, 60000), 0);
  for (int i = 0; i < 2; i++) {
    close(h.ready[i]);
    close(h.go[i]);
  }
  engram *log = tu_open(f->logdir, NULL);
  engram_topic_info i;
  assert_int_equal(engram_topic_info_get(log, "fresh", &i), 0);
  assert_int_equal(i.head_offset, 1);
  engram_close(log);
}

/* A handle opened before a fork belongs to the parent: in the child its writes are refused
 * (ENGRAM_EINVAL, naming the fork) and the log keeps only the parent's appends; the parent's
 * handle goes on working after the fork. */
static void a_handle_used_in_a_forked_child_is_refused_and_the_parent_goes_on(void **state) {
  fx *f = *state;
  engram *log = tu_open(f->logdir, NULL);
  engram_event ev = {.type = "a.b", .payload = "x", .payload_len = 1};
  uint64_t off;
  assert_int_equal(engram_append(log, "fork", &ev, &off, NULL), ENGRAM_ENOTFOUND);
  assert_int_equal(engram_topic_create(log, "fork", NULL), 0);
  assert_int_equal(engram_append(log, "fork", &ev, &off, NULL), 0);
  for (int round = 0; round < 2; round++) { /* the second fork: a child of a renewed parent */
    pid_t p = fork();
    if (p == 0) {
      int rc = engram_append(log, "fork", &ev, &off, NULL);
      int named = rc == ENGRAM_EINVAL && strstr(engram_errmsg(log), "fork") != NULL;
      _exit(named ? 0 : 1);
    }
    assert_int_equal(tu_wait(p, 60000), 0);
    assert_int_equal(engram_append(log, "fork", &ev, &off, NULL), 0);
    assert_int_equal(off, (uint64_t)round + 2);
  }
  engram_topic_info i;
  assert_int_equal(engram_topic_info_get(log, "fork", &i), 0);
  assert_int_equal(i.head_offset, 3);
  engram_close(log);
}

/* What `engram --data L append mp memory.saved --create` does: open (creating the log),
 * look the topic up, create it when missing (another process may win), look again,
 * append. */
static int create_and_append(void *arg) {
  const char *logdir = arg;
  engram *log = NULL;
  int rc = engram_open(logdir, NULL, &log);
  if (rc) return child_fail(NULL, "open", rc);
  engram_topic_info i;
  rc = engram_topic_info_get(log, "mp", &i);
  if (rc == ENGRAM_ENOTFOUND) {
    rc = engram_topic_create(log, "mp", NULL);
    if (rc && rc != ENGRAM_EEXIST) return child_fail(log, "create", rc);
    rc = engram_topic_info_get(log, "mp", &i);
  }
  if (rc) return child_fail(log, "info", rc);
  engram_event ev = {.type = "memory.saved", .payload = "{}", .payload_len = 2};
  rc = engram_append(log, "mp", &ev, NULL, NULL);
  if (rc) return child_fail(log, "append", rc);
  engram_close(log);
  return 0;
}

static void four_processes_creating_a_topic_and_appending_on_a_fresh_log_all_succeed(void **state) {
  fx *f = *state;
  for (int round = 0; round < 20; round++) {
    char name[32];
    snprintf(name, sizeof name, "fresh%d", round);
    char *logdir = tu_join(f->dir, name);
    pid_t pid[NPROC];
    for (int i = 0; i < NPROC; i++) pid[i] = tu_spawn(create_and_append, logdir);
    for (int i = 0; i < NPROC; i++) assert_int_equal(tu_wait(pid[i], 60000), 0);
    engram *log = tu_open(logdir, NULL);
    engram_topic_info i;
    assert_int_equal(engram_topic_info_get(log, "mp", &i), 0);
    assert_int_equal(i.count, NPROC);
    assert_int_equal(i.head_offset, NPROC);
    engram_close(log);
    free(logdir);
  }
}

/* Grows the map: appends `count` incompressible 4 KiB events to "memory" in batches of
 * 16, with a 1 MiB initial map, so that the file (and every process's map) grows by
 * doubling all along. */
static int map_grower(void *arg) {
  struct child *c = arg;
  engram *log = NULL;
  engram_options o = {.map_size = 1u << 20, .durability = ENGRAM_DURABILITY_ASYNC};
  int rc = engram_open(c->logdir, &o, &log);
  if (rc) return child_fail(NULL, "open", rc);
  static unsigned char buf[16 * 4096];
  engram_event evs[16];
  uint64_t offs[16];
  for (int i = 0; i < c->count; i += 16) {
    for (int k = 0; k < 16; k++) {
      tu_fill_random(buf + k * 4096, 4096, (uint64_t)(i + k + 1));
      evs[k] =
          (engram_event){.type = "memory.saved", .payload = buf + k * 4096, .payload_len = 4096};
    }
    if ((rc = engram_append_batch(log, "memory", evs, 16, offs, NULL)))
      return child_fail(log, "append", rc);
  }
  engram_close(log);
  return 0;
}

/* Opens while another process grows the map: every open works. An open read the log in
 * transactions begun without looking whether the map had grown meanwhile, and failed
 * with ENGRAM_EBUSY "MDB_MAP_RESIZED" when it had (three Python processes appending
 * large events to one log met it at their second open). */
static void opens_while_another_process_grows_the_map_all_succeed(void **state) {
  fx *f = *state;
  struct child c = {.logdir = f->logdir, .count = 12288}; /* 48 MiB */
  pid_t p = tu_spawn(map_grower, &c);
  engram_options o = {.map_size = 1u << 20};
  int opens = 0, failed = 0, st = -1;
  char first[512] = "";
  for (;;) {
    engram *log = NULL;
    int rc = engram_open(f->logdir, &o, &log);
    opens++;
    if (rc) {
      if (!failed++)
        snprintf(first, sizeof first, "%s: %s", engram_errname(rc), engram_errmsg(NULL));
    } else {
      engram_topic_info ti;
      if ((rc = engram_topic_info_get(log, "memory", &ti)) && !failed++)
        snprintf(first, sizeof first, "info: %s: %s", engram_errname(rc), engram_errmsg(log));
      engram_close(log);
    }
    if (waitpid(p, &st, WNOHANG) == p) break;
  }
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  if (failed) fail_msg("%d of %d opens failed, the first: %s", failed, opens, first);
  assert_true(opens > 5);
}

int main(void) {
  shared = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) return 1;
  tu_test_filter();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, tu_fx_teardown)
  const struct CMUnitTest tests[] = {
      T(four_processes_appending_at_once_lose_nothing_and_share_dense_offsets),
      T(four_async_processes_lose_nothing_and_share_dense_offsets),
      T(processes_that_do_not_share_commits_share_flushes),
      T(a_combiner_killed_before_its_commit_loses_no_append_of_another_process),
      T(a_combiner_killed_after_its_commit_doubles_no_append_of_another_process),
      T(refusals_and_duplicates_through_a_shared_commit_are_as_alone),
      T(a_refused_append_in_a_shared_commit_fails_alone),
      T(a_process_killed_during_its_flush_stalls_no_other),
      T(a_killed_flusher_not_yet_reaped_stalls_no_other),
      T(a_process_left_alone_stops_sharing_with_a_killed_one),
      T(batches_from_different_processes_never_interleave),
      T(a_reader_process_sees_appends_from_other_processes_in_order_without_gaps),
      T(topics_created_by_another_process_are_usable_at_once),
      T(a_handle_used_in_a_forked_child_is_refused_and_the_parent_goes_on),
      T(four_processes_creating_a_topic_and_appending_on_a_fresh_log_all_succeed),
      T(opens_while_another_process_grows_the_map_all_succeed),
  };
  return cmocka_run_group_tests_name("multiprocess", tests, NULL, NULL);
}
