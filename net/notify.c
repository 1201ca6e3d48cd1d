/* notify.c — commits of embedded writers reach the daemon serving their directory: each
 * commit's (topic, head) is pushed to its notify-in socket, and it publishes them on
 * ZeroMQ. (The wake-up of waiters in every process is log/board.c's.) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <zmq.h>

#include "net/net.h"

#define NOTIFY_RECHECK_NS 500000000 /* how often a writer looks for a daemon */

/* One writable embedded handle's way to the daemon. */
struct push {
  char in_path[512];  /* the daemon's notify-in ipc socket */
  pthread_mutex_t mu; /* guards everything below */
  void *zctx, *push;  /* PUSH to the daemon while it runs */
  int64_t checked_ns; /* monotonic time of the last look for the daemon */
};

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

/* Sends (topic, head) to the daemon's notify-in socket when a daemon serves the
 * directory. Never blocks: past the queue limit a message is dropped. */
static void push_to_daemon(void *arg, const char *topic, uint64_t head) {
  struct push *n = arg;
  pthread_mutex_lock(&n->mu);
  int64_t now = clock_monotonic_ns();
  if (now - n->checked_ns > NOTIFY_RECHECK_NS || n->checked_ns == 0) {
    n->checked_ns = now;
    struct stat st;
    int there = stat(n->in_path, &st) == 0;
    if (there && !n->push) {
      if (!n->zctx) {
        n->zctx = net_zmq_ctx_new();
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

static void push_free(void *arg) {
  struct push *n = arg;
  if (n->push) zmq_close(n->push);
  if (n->zctx) zmq_ctx_term(n->zctx);
  pthread_mutex_destroy(&n->mu);
  free(n);
}

void net_notify_attach(struct log *log) {
  if (!log || (log->env_flags & MDB_RDONLY)) return; /* a read-only handle commits nothing */
  struct push *n = calloc(1, sizeof *n);
  if (!n) return; /* the daemon's parked fetches look again by themselves */
  if (net_ipc_path(log->path, "notify-in.ipc", n->in_path, sizeof n->in_path) < 0)
    n->in_path[0] = '\0';
  pthread_mutex_init(&n->mu, NULL);
  log_notify_set(log, push_to_daemon, n, push_free);
}

void net_notify_set_daemon(struct log *log, log_commit_hook hook, void *ctx) {
  log_notify_set(log, hook, ctx, NULL);
}

void net_notify_wake(struct log *log, const char *topic) { log_board_wake(log, topic); }
