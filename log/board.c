/* board.c — the wake-up board of embedded handles: a commit wakes fetches waiting in any
 * process on the same directory, and is handed to the layer above's notify hook (net/
 * pushes it to a daemon serving the directory, or the daemon publishes its own).
 *
 * Waking goes through a board: a small file (DIR/notify.board) mapped shared by every
 * process that opens the log, holding one 32-bit sequence per topic bucket. A commit
 * bumps its topics' sequences and wakes their futex waiters; a fetch with nothing to
 * deliver sleeps on its topic's sequence. That costs a few microseconds where a ZeroMQ
 * PUB/SUB hop costs about a hundred, and it needs no daemon. Correctness never depends
 * on it: a waiter sleeps at most BOARD_MAX_WAIT_MS before the caller looks again, so a
 * lost wake-up (a writer killed between commit and bump) only costs that much latency.
 *
 * A waiter must not miss a bump that lands between its caller's last look and its sleep.
 * Each thread remembers the sequence it saw when its previous wait ended, which is before
 * the caller's following look; a sequence that moved since then ends the wait at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log/log_private.h"

#define BOARD_SLOTS 1024
#define BOARD_FILE "notify.board"
#define BOARD_MAX_WAIT_MS 20  /* longest sleep before the caller looks again */
#define BOARD_FIRST_WAIT_MS 2 /* a thread's first sleep on a topic: no earlier reading */

struct slot {
  _Atomic uint32_t seq;     /* bumped after every commit touching a topic of the bucket */
  _Atomic uint32_t waiters; /* threads sleeping on seq; 0 lets writers skip the syscall */
};

struct log_board {
  uint64_t gen;       /* tells a thread's saved reading from another handle's */
  struct slot *slots; /* BOARD_SLOTS entries, NULL = none (polling fallback) */
};

static _Atomic uint64_t next_gen = 1;

/* The reading a thread took when its previous wait ended. */
static __thread struct {
  uint64_t gen;
  unsigned slot;
  uint32_t seq;
} last;

static unsigned bucket(const char *topic) {
  uint32_t h = 2166136261u;
  for (const unsigned char *p = (const unsigned char *)topic; *p; p++) h = (h ^ *p) * 16777619u;
  return h % BOARD_SLOTS;
}

static void futex_wake(_Atomic uint32_t *addr) {
  log_futex((void *)addr, FUTEX_WAKE, INT_MAX, NULL);
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t ns) {
  struct timespec ts = {ns / 1000000000, ns % 1000000000};
  log_futex((void *)addr, FUTEX_WAIT, val, &ts);
}

static void bump(struct log_board *b, const char *topic) {
  if (!b->slots) return;
  struct slot *s = &b->slots[bucket(topic)];
  atomic_fetch_add(&s->seq, 1);
  if (atomic_load(&s->waiters)) futex_wake(&s->seq);
}

static struct slot *board_open(const char *dir) {
  char path[4200];
  if (snprintf(path, sizeof path, "%s/%s", dir, BOARD_FILE) >= (int)sizeof path) return NULL;
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return NULL;
  size_t size = BOARD_SLOTS * sizeof(struct slot);
  /* Zeroes are a valid board, so whoever comes first just sizes the file (its blocks
   * allocated: on a full disk the handle polls instead). */
  if (log_file_reserve(fd, size)) {
    close(fd);
    return NULL;
  }
  void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  return m == MAP_FAILED ? NULL : m;
}

/* The handle's commit hook: wake this directory's waiters, then tell the layer above. */
static void on_commit(void *arg, const char *topic, uint64_t head) {
  struct log *log = arg;
  bump(log->board, topic);
  log_commit_hook hook;
  void *ctx;
  pthread_mutex_lock(&log->mu);
  hook = log->notify_hook;
  ctx = log->notify_ctx;
  pthread_mutex_unlock(&log->mu);
  if (hook) hook(ctx, topic, head);
}

/* Without a board: what log_wait_append does without a hook — sleep on the handle's own
 * append signal, never longer than a short poll, since other processes do not signal it. */
static void poll_wait(struct log *log, int64_t deadline) {
  int64_t now = clock_monotonic_ns();
  int64_t until = now + 2000000;
  if (until > deadline) until = deadline;
  if (until <= now) return;
  struct timespec ts = {until / 1000000000, until % 1000000000};
  pthread_mutex_lock(&log->mu);
  uint64_t seq = log->append_seq;
  while (log->append_seq == seq && !log->closing)
    if (pthread_cond_timedwait(&log->append_cv, &log->mu, &ts) == ETIMEDOUT) break;
  pthread_mutex_unlock(&log->mu);
}

static void on_wait(void *arg, struct log *log, const char *topic, int64_t deadline) {
  struct log_board *b = arg;
  if (!b->slots) {
    poll_wait(log, deadline);
    return;
  }
  unsigned i = bucket(topic);
  struct slot *s = &b->slots[i];
  uint32_t cur = atomic_load(&s->seq);
  int64_t now = clock_monotonic_ns();
  int64_t until = now + (int64_t)BOARD_MAX_WAIT_MS * 1000000;
  if (last.gen == b->gen && last.slot == i) {
    if (cur != last.seq) {
      last.seq = cur; /* a commit since our last reading: the caller looks again */
      return;
    }
  } else {
    until = now + (int64_t)BOARD_FIRST_WAIT_MS * 1000000;
  }
  if (until > deadline) until = deadline;
  if (until > now) {
    atomic_fetch_add(&s->waiters, 1);
    futex_wait(&s->seq, cur, until - now);
    atomic_fetch_sub(&s->waiters, 1);
  }
  last.gen = b->gen;
  last.slot = i;
  last.seq = atomic_load(&s->seq);
}

void log_board_attach(struct log *log) {
  struct log_board *b = calloc(1, sizeof *b);
  if (!b) return; /* the handle polls instead */
  b->gen = atomic_fetch_add(&next_gen, 1);
  b->slots = board_open(log->path);
  pthread_mutex_lock(&log->mu);
  log->board = b;
  log->commit_hook = on_commit;
  log->commit_hook_ctx = log;
  log->wait_hook = on_wait;
  log->wait_hook_ctx = b;
  pthread_mutex_unlock(&log->mu);
}

void log_board_detach(struct log *log) {
  pthread_mutex_lock(&log->mu);
  struct log_board *b = log->board;
  log->board = NULL;
  log->commit_hook = NULL;
  log->commit_hook_ctx = NULL;
  log->wait_hook = NULL;
  log->wait_hook_ctx = NULL;
  pthread_mutex_unlock(&log->mu);
  log_notify_set(log, NULL, NULL, NULL);
  if (!b) return;
  if (b->slots) munmap(b->slots, BOARD_SLOTS * sizeof(struct slot));
  free(b);
}

void log_notify_set(struct log *log, log_commit_hook hook, void *ctx, void (*release)(void *)) {
  pthread_mutex_lock(&log->mu);
  void *old = log->notify_ctx;
  void (*old_release)(void *) = log->notify_release;
  log->notify_hook = hook;
  log->notify_ctx = ctx;
  log->notify_release = release;
  if (!log->board) { /* no board (read-only or out of memory): the hook hears commits alone */
    log->commit_hook = hook;
    log->commit_hook_ctx = ctx;
  }
  pthread_mutex_unlock(&log->mu);
  if (old_release) old_release(old);
}

void log_board_wake(struct log *log, const char *topic) {
  if (log->board) bump(log->board, topic);
}
