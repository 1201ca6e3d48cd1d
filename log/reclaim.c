/* reclaim.c — giving free pages back to the file system: the open lock every handle holds,
 * the compacting copy with progress, and the swap of the copy over data.mdb. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "log/log_private.h"

/* Sizes from LMDB's environment and one read transaction: the free pages are the sum of
 * the lengths of the page lists in LMDB's free-list database (dbi 0, readable in a read
 * transaction), which also counts pages that snapshots still open may be seeing. */
int log_space(struct log *log, engram_space *out) {
  memset(out, 0, sizeof *out);
  MDB_envinfo ei;
  MDB_stat st;
  uint64_t free_pages, parked;
  int rc = log_park_count(log, &free_pages, &parked);
  if (rc) return log_error(log, rc, "space: cannot read LMDB's free-page list");
  free_pages += parked; /* free pages held aside (park.c) */
  mdb_env_info(log->env, &ei);
  mdb_env_stat(log->env, &st);
  uint64_t pages = (uint64_t)ei.me_last_pgno + 1;
  if (free_pages > pages) free_pages = pages;
  out->used_bytes = (pages - free_pages) * st.ms_psize;
  out->free_bytes = free_pages * st.ms_psize;
  out->map_bytes = ei.me_mapsize;
  char path[PATH_MAX];
  struct stat fs;
  snprintf(path, sizeof path, "%s/data.mdb", log->path);
  if (stat(path, &fs) != 0)
    return log_error(log, ENGRAM_EIO, "space: %s: %s", path, strerror(errno));
  out->file_bytes = (uint64_t)fs.st_size;
  return 0;
}

/* The pids of processes holding a flock on the file `fd` refers to, from /proc/locks,
 * as text ("1234, 5678"); "" when none can be seen (another PID namespace, no /proc). */
static void lock_holders(int fd, char *out, size_t cap) {
  out[0] = '\0';
  struct stat st;
  FILE *f = fstat(fd, &st) == 0 ? fopen("/proc/locks", "re") : NULL;
  if (!f) return;
  char line[256];
  size_t used = 0;
  int shown = 0;
  long self = (long)getpid();
  while (fgets(line, sizeof line, f) && shown < 8) {
    char kind[16];
    long pid;
    unsigned maj, min;
    unsigned long ino;
    if (strstr(line, "->")) continue; /* a waiter, not a holder */
    if (sscanf(line, "%*d: %15s %*s %*s %ld %x:%x:%lu", kind, &pid, &maj, &min, &ino) != 5)
      continue;
    if (strcmp(kind, "FLOCK") || ino != (unsigned long)st.st_ino || maj != major(st.st_dev) ||
        min != minor(st.st_dev))
      continue;
    int w = snprintf(out + used, cap - used, "%s%ld%s", shown ? ", " : "", pid,
                     pid == self ? " (this process)" : "");
    if (w < 0 || (size_t)w >= cap - used) break;
    used += (size_t)w;
    shown++;
  }
  fclose(f);
}

static int lock_open_file(const char *dir, char *f, size_t cap) {
  snprintf(f, cap, "%s/" LOG_OPEN_LOCK, dir);
  int fd = open(f, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) fd = open(f, O_RDONLY | O_CLOEXEC); /* flock needs no write access */
  /* Missing and not creatable: a read-only file system, or a directory this user may
   * not write. The handle goes unseen by a reclaim, which needs to create this file
   * and to rename in the directory: only a user who may write the directory can run
   * one (such a handle is read-only in practice: see docs/operations.md). */
  return fd;
}

/* The shared lock could not be had: closes fd and says why. A reclaim writes its pid
 * into the file; an open recovering the log holds the lock for a moment and writes
 * nothing, so `wait` waits for it (up to 30 s) instead. */
static int lock_shared(const char *dir, const char *f, int *fd, int wait) {
  int64_t deadline = clock_monotonic_ns() + 30 * 1000000000ll;
  for (;;) {
    if (flock(*fd, LOCK_SH | LOCK_NB) == 0) return 0;
    int e = errno;
    char pid[32] = "";
    ssize_t n = pread(*fd, pid, sizeof pid - 1, 0);
    pid[n > 0 ? n : 0] = '\0';
    pid[strcspn(pid, "\n")] = '\0';
    if (e == EWOULDBLOCK && wait && !*pid && clock_monotonic_ns() < deadline) {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
      continue;
    }
    close(*fd);
    *fd = -1;
    if (e != EWOULDBLOCK)
      return log_error(NULL, err_from_errno(e), "open %s: cannot lock %s: %s", dir, f, strerror(e));
    if (!*pid)
      return log_error(NULL, ENGRAM_EBUSY,
                       "open %s: another process held %s for over 30 s while recovering the "
                       "log: retry, or see which process holds it (lslocks)",
                       dir, f);
    return log_error(NULL, ENGRAM_EBUSY,
                     "open %s: `engram compact --reclaim` (pid %s) is rewriting the data file: "
                     "retry when it ends",
                     dir, pid);
  }
}

int log_open_lock(const char *dir, int *fd) {
  char f[4100];
  *fd = lock_open_file(dir, f, sizeof f);
  return *fd < 0 ? 0 : lock_shared(dir, f, fd, 1);
}

int log_open_lock_ex(const char *dir, int *fd, int *exclusive) {
  char f[4100];
  *exclusive = 0;
  *fd = lock_open_file(dir, f, sizeof f);
  if (*fd < 0) return 0;
  if (flock(*fd, LOCK_EX | LOCK_NB) == 0) {
    *exclusive = 1;
    return 0;
  }
  return lock_shared(dir, f, fd, 1);
}

int log_open_lock_share(const char *dir, int fd) {
  char f[4100];
  snprintf(f, sizeof f, "%s/" LOG_OPEN_LOCK, dir);
  /* Linux drops the exclusive lock before taking the shared one: a reclaim may come in
   * between, and the open then fails as it would have a moment later. */
  return lock_shared(dir, f, &fd, 0);
}

/* ---------------------------------------------------------------------------------
 * The compacting copy, with progress.
 * ------------------------------------------------------------------------------ */
struct copy {
  MDB_env *env;
  int fd;
  int rc;
  volatile int done; /* set by the copying thread when it returns (under mu) */
  pthread_mutex_t mu;
  pthread_cond_t cv;
};

static void *copy_main(void *arg) {
  struct copy *c = arg;
  int rc = mdb_env_copyfd2(c->env, c->fd, MDB_CP_COMPACT);
  pthread_mutex_lock(&c->mu);
  c->rc = rc;
  c->done = 1;
  pthread_cond_signal(&c->cv);
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

/* Bytes a compacted copy writes: the pages in use (all but the free ones). */
static uint64_t used_bytes(struct log *log) {
  MDB_envinfo info;
  MDB_stat ms;
  mdb_env_info(log->env, &info);
  mdb_env_stat(log->env, &ms);
  uint64_t pages = info.me_last_pgno + 1, free_pages = 0, parked = 0;
  if (log_park_count(log, &free_pages, &parked)) log_error_clear(log);
  free_pages += parked;
  return (free_pages < pages ? pages - free_pages : pages) * ms.ms_psize;
}

int log_copy_compact(struct log *log, int fd, const char *phase) {
  /* Parked pages (park.c) would be copied as data: give them back to the free list
   * first (a copy that still meets some, parked again meanwhile, is larger, not wrong). */
  if (log_park_release_all(log) < 0) log_error_clear(log);
  if (!log->progress) {
    pthread_rwlock_rdlock(&log->map_lock);
    int rc = mdb_env_copyfd2(log->env, fd, MDB_CP_COMPACT);
    pthread_rwlock_unlock(&log->map_lock);
    return rc;
  }
  uint64_t total = used_bytes(log), shown = 0;
  log_progress(log, phase, 0, total);
  struct copy c = {.env = log->env, .fd = fd};
  pthread_mutex_init(&c.mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c.cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_t t;
  pthread_rwlock_rdlock(&log->map_lock);
  int rc = pthread_create(&t, NULL, copy_main, &c);
  if (rc) {
    rc = mdb_env_copyfd2(log->env, fd, MDB_CP_COMPACT);
  } else {
    pthread_mutex_lock(&c.mu);
    while (!c.done) {
      struct timespec until;
      clock_gettime(CLOCK_MONOTONIC, &until);
      until.tv_nsec += 100000000;
      if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
      }
      pthread_cond_timedwait(&c.cv, &c.mu, &until);
      if (c.done) break;
      pthread_mutex_unlock(&c.mu);
      struct stat st;
      if (fstat(fd, &st) == 0 && (uint64_t)st.st_size > shown) {
        shown = (uint64_t)st.st_size;
        if (shown > total) total = shown; /* written meanwhile */
        log_progress(log, phase, shown, total);
      }
      pthread_mutex_lock(&c.mu);
    }
    pthread_mutex_unlock(&c.mu);
    pthread_join(t, NULL);
    rc = c.rc;
  }
  pthread_rwlock_unlock(&log->map_lock);
  pthread_cond_destroy(&c.cv);
  pthread_mutex_destroy(&c.mu);
  if (rc == 0) {
    struct stat st;
    if (fstat(fd, &st) == 0 && (uint64_t)st.st_size > shown) shown = (uint64_t)st.st_size;
    if (shown > total) total = shown;
    log_progress(log, phase, total, total); /* the estimate counted pages LMDB skipped */
  }
  return rc;
}

/* ---------------------------------------------------------------------------------
 * The reclaim.
 * ------------------------------------------------------------------------------ */
/* Steps a test may end the process after (ENGRAM_TEST_RECLAIM_EXIT=N, tests/test_reclaim.c):
 * 1 copy begun, 2 copy written, 3 copy flushed, 4 lock.mdb removed, 5 renamed,
 * 6 directory flushed. ENGRAM_TEST_RECLAIM_NO_FSYNC leaves the copy unflushed: the
 * power-cut test's control (tests/powercut/run.sh) must then see a loss. */
static void test_exit_at(int step) {
  const char *s = getenv("ENGRAM_TEST_RECLAIM_EXIT");
  if (s && atoi(s) == step) _exit(77);
}

/* Reports the swap's steps to the caller's callback. */
static void swap_step(const engram_reclaim_options *o, uint64_t step) {
  if (o->progress) o->progress(o->progress_ctx, "swapping", step, 4);
}

int log_reclaim(const char *path, const engram_reclaim_options *opts,
                engram_reclaim_report *report) {
  engram_reclaim_options o = opts ? *opts : (engram_reclaim_options){0};
  if (report) memset(report, 0, sizeof *report);
  if (!path || !*path || strlen(path) > 3800)
    return log_error(NULL, ENGRAM_EINVAL, "reclaim: invalid path");
  char dir[3900];
  size_t n = strlen(path);
  while (n > 1 && path[n - 1] == '/') n--;
  memcpy(dir, path, n);
  dir[n] = '\0';
  char data[4100], copy[4100], lockmdb[4100], lockf[4100];
  snprintf(data, sizeof data, "%s/data.mdb", dir);
  snprintf(copy, sizeof copy, "%s/" LOG_RECLAIM_COPY, dir);
  snprintf(lockmdb, sizeof lockmdb, "%s/lock.mdb", dir);
  snprintf(lockf, sizeof lockf, "%s/" LOG_OPEN_LOCK, dir);
  struct stat before;
  if (stat(data, &before) < 0) {
    int e = errno;
    if (e == ENOENT) return log_error(NULL, ENGRAM_ENOTFOUND, "reclaim %s: no log there", dir);
    return log_error(NULL, err_from_errno(e), "reclaim %s: %s: %s", dir, data, strerror(e));
  }

  /* 0. An engram log of this format, checked before anything is written: a directory
   * that holds something else is left as it is. */
  engram_options eo = {.flags = ENGRAM_OPEN_RDONLY | ENGRAM_OPEN_NOCREATE,
                       .maintenance_ms = ENGRAM_MAINTENANCE_OFF};
  char walf[4200];
  snprintf(walf, sizeof walf, "%s/" LOG_WAL_FILE, dir);
  if (access(walf, F_OK) == 0) eo.flags &= ~ENGRAM_OPEN_RDONLY; /* replays what a crash left */
  struct log *log;
  int rc = log_open(dir, &eo, &log);
  if (rc) {
    char msg[600];
    snprintf(msg, sizeof msg, "%s", log_errmsg(NULL));
    return log_error(NULL, rc, "reclaim: %s", msg);
  }
  log_close(log);

  /* 1. The log to ourselves: every handle holds this lock shared. */
  int lfd = open(lockf, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lfd < 0) {
    int e = errno;
    return log_error(NULL,
                     e == EROFS || e == EACCES || e == EPERM ? ENGRAM_EDENIED : err_from_errno(e),
                     "reclaim %s: cannot open %s: %s (reclaim rewrites the directory: run it "
                     "as the log's owner on a writable file system)",
                     dir, lockf, strerror(e));
  }
  if (flock(lfd, LOCK_EX | LOCK_NB) < 0) {
    int e = errno;
    char pids[200];
    lock_holders(lfd, pids, sizeof pids);
    close(lfd);
    if (e != EWOULDBLOCK)
      return log_error(NULL, err_from_errno(e), "reclaim %s: cannot lock %s: %s", dir, lockf,
                       strerror(e));
    return log_error(NULL, ENGRAM_EBUSY,
                     "reclaim %s: the log is open in %s%s: close every process using it (stop "
                     "`engram serve` and the workers) and retry; nothing was changed",
                     dir, *pids ? "pid " : "another process", pids);
  }
  /* A process that opened the environment without open.lock (an engram build from before
   * it, a read-only handle that could not create the file, another LMDB program) still
   * holds LMDB's own shared fcntl lock on byte 0 of lock.mdb: F_GETLK names one. */
  int lk = open(lockmdb, O_RDONLY | O_CLOEXEC);
  if (lk >= 0) {
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    int got = fcntl(lk, F_GETLK, &fl);
    close(lk); /* this process holds no fcntl lock on it: closing drops none */
    if (got == 0 && fl.l_type != F_UNLCK) {
      close(lfd);
      return log_error(NULL, ENGRAM_EBUSY,
                       "reclaim %s: the log is open in pid %ld (it holds LMDB's lock on %s): "
                       "close every process using it (stop `engram serve` and the workers) "
                       "and retry; nothing was changed",
                       dir, (long)fl.l_pid, lockmdb);
    }
  }

  /* Who holds it, for an open that comes meanwhile (log_open_lock names us). */
  char me[32];
  int mlen = snprintf(me, sizeof me, "%ld\n", (long)getpid());
  if (ftruncate(lfd, 0) == 0 && pwrite(lfd, me, (size_t)mlen, 0) < 0) {
    /* only the message of a refused open loses the pid */
  }

  if (stat(data, &before) < 0) { /* now that no writer can grow it */
    int e = errno;
    rc = log_error(NULL, err_from_errno(e), "reclaim %s: %s: %s", dir, data, strerror(e));
    goto out;
  }

  /* A process that opened the log since is gone again (the lock is ours): replay what it
   * may have left in the write-ahead file. */
  if ((rc = log_wal_recover(dir, 0))) goto out;

  /* 2. The compacted copy, made through a handle of our own (read-only: no threads, and
   * the format is checked as at any open). */
  unlink(copy); /* left by a reclaim that died */
  rc = log_open_unlocked(dir, &eo, &log);
  if (rc) {
    char msg[600];
    snprintf(msg, sizeof msg, "%s", log_errmsg(NULL));
    rc = log_error(NULL, rc, "reclaim: %s", msg);
    goto out;
  }
  log->progress = o.progress;
  log->progress_ctx = o.progress_ctx;
  int cfd = open(copy, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, before.st_mode & 0777);
  if (cfd < 0) {
    int e = errno;
    log_close(log);
    rc = log_error(NULL, err_from_errno(e), "reclaim %s: cannot create %s: %s", dir, copy,
                   strerror(e));
    goto out;
  }
  test_exit_at(1);
  int mrc = log_copy_compact(log, cfd, "copying");
  log_close(log);
  if (mrc) {
    close(cfd);
    unlink(copy);
    rc = log_error(NULL, log_err_mdb(mrc), "reclaim %s: writing the copy %s: %s%s", dir, copy,
                   mdb_strerror(mrc),
                   mrc == ENOSPC ? " (the copy needs about the size of the live data free)" : "");
    goto out;
  }
  test_exit_at(2);
  /* The copy keeps the owner and mode of the file it replaces. */
  if (fchmod(cfd, before.st_mode & 07777) < 0 ||
      (geteuid() == 0 && fchown(cfd, before.st_uid, before.st_gid) < 0) ||
      (!getenv("ENGRAM_TEST_RECLAIM_NO_FSYNC") && fsync(cfd) < 0)) {
    int e = errno;
    close(cfd);
    unlink(copy);
    rc = log_error(NULL, err_from_errno(e), "reclaim %s: flushing the copy %s: %s", dir, copy,
                   strerror(e));
    goto out;
  }
  struct stat after;
  if (fstat(cfd, &after) < 0) after.st_size = 0;
  close(cfd);
  swap_step(&o, 1);
  test_exit_at(3);

  /* 3. The swap. lock.mdb holds the old file's transaction ids, which the copy restarts:
   * with nobody else open it is only reader-table state, made again by the next open. */
  if (unlink(lockmdb) < 0 && errno != ENOENT) {
    int e = errno;
    unlink(copy);
    rc = log_error(NULL, err_from_errno(e), "reclaim %s: cannot remove %s: %s", dir, lockmdb,
                   strerror(e));
    goto out;
  }
  /* The write-ahead file describes the old file, whose last checkpoint (at the close
   * above, or at the open's recovery) left it with nothing to replay: it goes before the
   * copy comes, and the next open starts a new one. */
  snprintf(walf, sizeof walf, "%s/" LOG_WAL_FILE, dir);
  unlink(walf);
  snprintf(walf, sizeof walf, "%s/" LOG_WAL_SHM, dir);
  unlink(walf);
  swap_step(&o, 2);
  test_exit_at(4);
  if (rename(copy, data) < 0) {
    int e = errno;
    unlink(copy);
    rc = log_error(NULL, err_from_errno(e), "reclaim %s: cannot rename %s to %s: %s", dir, copy,
                   data, strerror(e));
    goto out;
  }
  swap_step(&o, 3);
  test_exit_at(5);
  int frc = log_fsync_path(dir, O_RDONLY | O_DIRECTORY);
  if (frc < 0) {
    rc = log_error(NULL, err_from_errno(-frc),
                   "reclaim %s: the copy is in place but the directory could not be flushed: "
                   "%s (run `engram sync` or `sync`)",
                   dir, strerror(-frc));
    goto out;
  }
  swap_step(&o, 4);
  test_exit_at(6);
  if (report) {
    report->bytes_before = (uint64_t)before.st_size;
    report->bytes_after = (uint64_t)after.st_size;
  }
out:
  if (ftruncate(lfd, 0) < 0) {
    /* a stale pid in the file only shows in the message of a refused open */
  }
  close(lfd);
  return rc;
}
