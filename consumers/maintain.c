/* maintain.c — the maintenance runner: while its process holds DIR/maintenance.lock, a
 * handle's thread runs retention and key compaction on every topic with limits or
 * ENGRAM_TOPIC_COMPACT_KEY, one slice at a time, parks or releases free pages
 * (log/park.c), and fires the schedules that are due (waking at the next slot, within a
 * second). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "consumers/cg.h"

#define DEFAULT_INTERVAL_MS 1000

struct cg_maint {
  struct log *log;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* CLOCK_MONOTONIC; signalled at stop */
  int stop;          /* under mu */
  int fd;            /* DIR/maintenance.lock, -1 until opened */
  int holder;        /* this handle holds the lock: flock is released when the holder's
                        process exits or dies, so another one takes over */
  uint32_t interval_ms;
};

/* Takes the lock when free. The holder writes its pid into the file for operators. */
static void try_take(struct cg_maint *m) {
  if (m->fd < 0) {
    char path[4096];
    snprintf(path, sizeof path, "%s/maintenance.lock", m->log->path);
    m->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (m->fd < 0) return;
  }
  if (flock(m->fd, LOCK_EX | LOCK_NB) != 0) return;
  m->holder = 1;
  char pid[32];
  int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
  if (ftruncate(m->fd, 0) == 0 && pwrite(m->fd, pid, (size_t)n, 0) < 0) {
    /* The pid is for people; the lock works without it. */
  }
}

/* The schedules due now; returns the next slot of any (0 = none). */
static int64_t tick(struct cg_maint *m) {
  engram_schedule_tick_report r;
  memset(&r, 0, sizeof r);
  cg_schedule_tick(m->log, 0, &r); /* failures are tried again at the next pass */
  log_error_clear(m->log);
  return r.next_due_ns;
}

static int stopping(void *arg) {
  struct cg_maint *m = arg;
  pthread_mutex_lock(&m->mu);
  int stop = m->stop;
  pthread_mutex_unlock(&m->mu);
  return stop;
}

/* One pass: the limits of each topic that has any, until nothing more may be removed. */
static void pass(struct cg_maint *m) {
  engram_topic_info *list = NULL;
  size_t n = 0;
  if (log_topic_list(m->log, &list, &n)) return;
  for (size_t i = 0; i < n; i++) {
    const engram_topic_config *c = &list[i].config;
    if (!c->max_age_ms && !c->max_bytes && !c->max_events && !(c->flags & ENGRAM_TOPIC_COMPACT_KEY))
      continue;
    pthread_mutex_lock(&m->mu);
    int stop = m->stop;
    pthread_mutex_unlock(&m->mu);
    if (stop) break;
    cg_compact(m->log, list[i].name, NULL); /* errors show again next pass */
  }
  free(list);
  log_park_pass(m->log, NULL, stopping, m); /* errors show again next pass */
  log_error_clear(m->log);
}

static void *run(void *arg) {
  struct cg_maint *m = arg;
  log_progress_mute();
  /* The first pass comes soon after the open: free pages a dropped topic left behind
   * are parked before the handle's own writes cycle through them (log/park.c). */
  int64_t wait_ns = (int64_t)m->interval_ms * 1000000, last_pass = 0;
  if (wait_ns > 100000000) wait_ns = 100000000;
  pthread_mutex_lock(&m->mu);
  while (!m->stop) {
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += wait_ns / 1000000000;
    until.tv_nsec += (long)(wait_ns % 1000000000);
    if (until.tv_nsec >= 1000000000) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000;
    }
    while (!m->stop && pthread_cond_timedwait(&m->cv, &m->mu, &until) != ETIMEDOUT) {
    }
    if (m->stop) break;
    pthread_mutex_unlock(&m->mu);
    if (!m->holder) try_take(m);
    wait_ns = (int64_t)m->interval_ms * 1000000;
    if (m->holder) {
      /* Retention every interval; schedules at every wake, which comes at the next slot
       * when that is sooner (a second at most, however long the interval). */
      int64_t mono = clock_monotonic_ns();
      if (!last_pass || mono - last_pass >= wait_ns - 1000000) {
        pass(m);
        last_pass = mono;
      }
      int64_t next = tick(m), limit = wait_ns < 1000000000 ? wait_ns : 1000000000;
      int64_t until_next = next ? next - log_now_ns(m->log) : limit;
      wait_ns = until_next < limit ? until_next : limit;
      if (wait_ns < 1000000) wait_ns = 1000000;
    }
    pthread_mutex_lock(&m->mu);
  }
  pthread_mutex_unlock(&m->mu);
  return NULL;
}

void cg_maint_start(struct log *log) {
  if (!log || (log->opts.flags & ENGRAM_OPEN_RDONLY)) return;
  if (log->opts.maintenance_ms == ENGRAM_MAINTENANCE_OFF) return;
#if defined(__SANITIZE_ADDRESS__)
  /* AddressSanitizer's allocator (GCC 12) is not fork-safe: a child forked while this
   * thread starts or allocates blocks for good in its first malloc, and test programs
   * fork with handles open. Sanitizer builds run the runner only when asked for by an
   * explicit maintenance_ms. */
  if (log->opts.maintenance_ms == 0) return;
#endif
  struct cg_maint *m = calloc(1, sizeof *m);
  if (!m) return;
  m->log = log;
  m->fd = -1;
  m->interval_ms = log->opts.maintenance_ms ? log->opts.maintenance_ms : DEFAULT_INTERVAL_MS;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&m->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&m->mu, NULL);
  if (pthread_create(&m->thread, NULL, run, m) != 0) {
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
    return;
  }
  log->maint = m;
}

void cg_maint_stop(struct log *log) {
  struct cg_maint *m = log ? log->maint : NULL;
  if (!m) return;
  log->maint = NULL;
  /* A forked child has no copy of the thread: it only forgets the runner. */
  if (log_foreign(log)) return;
  pthread_mutex_lock(&m->mu);
  m->stop = 1;
  pthread_cond_signal(&m->cv);
  pthread_mutex_unlock(&m->mu);
  pthread_join(m->thread, NULL);
  if (m->fd >= 0) close(m->fd); /* releases the lock */
  pthread_cond_destroy(&m->cv);
  pthread_mutex_destroy(&m->mu);
  free(m);
}
