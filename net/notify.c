/* notify.c — notifications for embedded handles: a commit wakes fetches waiting in any
 * process on the same directory, and reaches the daemon (when one serves the directory),
 * which publishes it on ZeroMQ.
 *
 * Waking goes through a board: a small file (DIR/notify.board) mapped shared by every
 * process that opens the log, holding one 32-bit sequence per topic bucket. A commit
 * bumps its topics' sequences and wakes their futex waiters; a fetch with nothing to
 * deliver sleeps on its topic's sequence. That costs a few microseconds where a ZeroMQ
 * PUB/SUB hop costs about a hundred, and it needs no daemon. Correctness never depends
 * on it: a waiter sleeps at most NOTIFY_MAX_WAIT_MS before the caller looks again, so a
 * lost wake-up (a writer killed between commit and bump, a writer built without net/)
 * only costs that much latency.
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
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "net/net.h"

#define BOARD_SLOTS 1024
#define BOARD_FILE "notify.board"
#define NOTIFY_MAX_WAIT_MS 20       /* longest sleep before the caller looks again */
#define NOTIFY_FIRST_WAIT_MS 2      /* a thread's first sleep on a topic: no earlier reading */
#define NOTIFY_RECHECK_NS 500000000 /* how often a writer looks for a daemon */

const int net_notify_linked = 1;

struct slot {
  _Atomic uint32_t seq;     /* bumped after every commit touching a topic of the bucket */
  _Atomic uint32_t waiters; /* threads sleeping on seq; 0 lets writers skip the syscall */
};

struct notify {
  struct log *log;
  uint64_t gen;                /* tells a thread's saved reading from another handle's */
  struct slot *board;          /* BOARD_SLOTS entries, NULL = none (polling fallback) */
  char in_path[512];           /* the daemon's notify-in ipc socket */
  pthread_mutex_t mu;          /* guards everything below */
  void *zctx, *push;           /* PUSH to the daemon while it runs */
  int64_t checked_ns;          /* monotonic time of the last look for the daemon */
  log_commit_hook daemon_hook; /* set on the daemon's own handle */
  void *daemon_ctx;
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
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t ns) {
  struct timespec ts = {ns / 1000000000, ns % 1000000000};
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT, val, &ts, NULL, 0);
}

static void bump(struct notify *n, const char *topic) {
  if (!n->board) return;
  struct slot *s = &n->board[bucket(topic)];
  atomic_fetch_add(&s->seq, 1);
  if (atomic_load(&s->waiters)) futex_wake(&s->seq);
}

int net_ipc_path(const char *dir, const char *name, char *out, size_t cap) {
  int n = snprintf(out, cap, "%s/%s", dir, name);
  if (n > 0 && (size_t)n < cap && (size_t)n < sizeof(((struct sockaddr_un *)0)->sun_path)) return 0;
  /* Too long for a Unix socket: a name under /tmp that every process derives alike. */
  char real[4096];
  const char *p = realpath(dir, real) ? real : dir;
  uint64_t h = 1469598103934665603ull;
  for (const unsigned char *c = (const unsigned char *)p; *c; c++) h = (h ^ *c) * 1099511628211ull;
  n = snprintf(out, cap, "/tmp/engram-%016llx-%s", (unsigned long long)h, name);
  return n > 0 && (size_t)n < cap ? 0 : -1;
}

static struct slot *board_open(const char *dir) {
  char path[4200];
  if (snprintf(path, sizeof path, "%s/%s", dir, BOARD_FILE) >= (int)sizeof path) return NULL;
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return NULL;
  size_t size = BOARD_SLOTS * sizeof(struct slot);
  struct stat st;
  /* Zeroes are a valid board, so whoever comes first just sizes the file. */
  if (fstat(fd, &st) < 0 || ((size_t)st.st_size < size && ftruncate(fd, (off_t)size) < 0)) {
    close(fd);
    return NULL;
  }
  void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  return m == MAP_FAILED ? NULL : m;
}

/* Sends (topic, head) to the daemon's notify-in socket when a daemon serves the
 * directory. Never blocks: past the queue limit a message is dropped. */
static void push_to_daemon(struct notify *n, const char *topic, uint64_t head) {
  pthread_mutex_lock(&n->mu);
  int64_t now = clock_monotonic_ns();
  if (now - n->checked_ns > NOTIFY_RECHECK_NS || n->checked_ns == 0) {
    n->checked_ns = now;
    struct stat st;
    int there = stat(n->in_path, &st) == 0;
    if (there && !n->push) {
      if (!n->zctx) {
        n->zctx = zmq_ctx_new();
        if (n->zctx) zmq_ctx_set(n->zctx, ZMQ_BLOCKY, 0);
      }
      if (n->zctx && (n->push = zmq_socket(n->zctx, ZMQ_PUSH)) != NULL) {
        /* Queued until the connection is up (the first commit must not be lost to it),
         * bounded by the HWM when the socket file is stale; a closing handle gives them
         * a moment to leave. */
        int linger = 100, hwm = 1000;
        zmq_setsockopt(n->push, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(n->push, ZMQ_SNDHWM, &hwm, sizeof hwm);
        char ep[600];
        snprintf(ep, sizeof ep, "ipc://%s", n->in_path);
        if (zmq_connect(n->push, ep) != 0) {
          zmq_close(n->push);
          n->push = NULL;
        }
      }
    } else if (!there && n->push) {
      zmq_close(n->push);
      n->push = NULL;
    }
  }
  if (n->push) {
    unsigned char h[8];
    be64_put(h, head);
    if (zmq_send(n->push, topic, strlen(topic), ZMQ_DONTWAIT | ZMQ_SNDMORE) >= 0)
      zmq_send(n->push, h, 8, ZMQ_DONTWAIT);
  }
  pthread_mutex_unlock(&n->mu);
}

static void on_commit(void *arg, const char *topic, uint64_t head) {
  struct notify *n = arg;
  bump(n, topic);
  if (n->daemon_hook)
    n->daemon_hook(n->daemon_ctx, topic, head);
  else
    push_to_daemon(n, topic, head);
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
  struct notify *n = arg;
  if (!n->board) {
    poll_wait(log, deadline);
    return;
  }
  unsigned b = bucket(topic);
  struct slot *s = &n->board[b];
  uint32_t cur = atomic_load(&s->seq);
  int64_t now = clock_monotonic_ns();
  int64_t until = now + (int64_t)NOTIFY_MAX_WAIT_MS * 1000000;
  if (last.gen == n->gen && last.slot == b) {
    if (cur != last.seq) {
      last.seq = cur; /* a commit since our last reading: the caller looks again */
      return;
    }
  } else {
    until = now + (int64_t)NOTIFY_FIRST_WAIT_MS * 1000000;
  }
  if (until > deadline) until = deadline;
  if (until > now) {
    atomic_fetch_add(&s->waiters, 1);
    futex_wait(&s->seq, cur, until - now);
    atomic_fetch_sub(&s->waiters, 1);
  }
  last.gen = n->gen;
  last.slot = b;
  last.seq = atomic_load(&s->seq);
}

static void attach(struct log *log) {
  struct notify *n = calloc(1, sizeof *n);
  if (!n) return; /* the handle polls instead */
  n->log = log;
  n->gen = atomic_fetch_add(&next_gen, 1);
  n->board = board_open(log->path);
  if (net_ipc_path(log->path, "notify-in.ipc", n->in_path, sizeof n->in_path) < 0)
    n->in_path[0] = '\0';
  pthread_mutex_init(&n->mu, NULL);
  pthread_mutex_lock(&log->mu);
  log->commit_hook = on_commit;
  log->commit_hook_ctx = n;
  log->wait_hook = on_wait;
  log->wait_hook_ctx = n;
  pthread_mutex_unlock(&log->mu);
}

static struct notify *of(struct log *log) {
  return log && log->wait_hook == on_wait ? log->wait_hook_ctx : NULL;
}

static void detach(struct log *log) {
  struct notify *n = of(log);
  if (!n) return;
  pthread_mutex_lock(&log->mu);
  log->commit_hook = NULL;
  log->commit_hook_ctx = NULL;
  log->wait_hook = NULL;
  log->wait_hook_ctx = NULL;
  pthread_mutex_unlock(&log->mu);
  if (n->push) zmq_close(n->push);
  if (n->zctx) zmq_ctx_term(n->zctx);
  if (n->board) munmap(n->board, BOARD_SLOTS * sizeof(struct slot));
  pthread_mutex_destroy(&n->mu);
  free(n);
}

void net_notify_set_daemon(struct log *log, log_commit_hook hook, void *ctx) {
  struct notify *n = of(log);
  pthread_mutex_lock(&log->mu);
  if (n) {
    n->daemon_ctx = ctx;
    n->daemon_hook = hook;
  } else {
    log->commit_hook = hook;
    log->commit_hook_ctx = ctx;
  }
  pthread_mutex_unlock(&log->mu);
}

void net_notify_wake(struct log *log, const char *topic) {
  struct notify *n = of(log);
  if (n) bump(n, topic);
}

__attribute__((constructor)) static void notify_init(void) {
  log_attach_hook = attach;
  log_detach_hook = detach;
}
