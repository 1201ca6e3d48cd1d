/* peer_zmq_echo.c — the floor under every served row: a bare ZeroMQ DEALER -> ROUTER echo
 * over the same transport as `engram serve`, each request the size of engram's append
 * request for the same events, and no storage at all.
 *
 *   peer_zmq_echo --serve ENDPOINT        the echo (a ROUTER on one thread, as the daemon's)
 *   peer_zmq_echo --connect ENDPOINT ...  the workloads (append1, append8, batch100)
 *
 * Only the append workloads mean something here: there is nothing to consume. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "peers/driver.h"

static const char *endpoint;
static void *zctx;

struct peer_conn {
  void *dealer;
  char *buf;
  size_t cap;
};

static peer_conn *conn_open(void) {
  if (!endpoint) {
    fprintf(stderr, "peer_zmq_echo: give --connect ENDPOINT\n");
    return NULL;
  }
  if (!zctx && !(zctx = zmq_ctx_new())) return NULL;
  peer_conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->dealer = zmq_socket(zctx, ZMQ_DEALER);
  int linger = 0;
  zmq_setsockopt(c->dealer, ZMQ_LINGER, &linger, sizeof linger);
  if (!c->dealer || zmq_connect(c->dealer, endpoint)) {
    fprintf(stderr, "peer_zmq_echo: connect %s: %s\n", endpoint, zmq_strerror(errno));
    if (c->dealer) zmq_close(c->dealer);
    free(c);
    return NULL;
  }
  return c;
}

static void conn_close(peer_conn *c) {
  if (!c) return;
  zmq_close(c->dealer);
  free(c->buf);
  free(c);
}

static int nothing(peer_conn *c, const char *stream) {
  (void)c;
  (void)stream;
  return 0;
}

/* What engram's Append request carries for one event: its fields and protobuf's tags. */
static size_t wire_size(const char *stream, const bench_event *e) {
  return 24 + strlen(stream) + strlen(e->type) + (e->key ? strlen(e->key) : 0) +
         strlen("application/json") + e->payload_len;
}

static int round_trip(peer_conn *c, size_t n) {
  if (n > c->cap) {
    char *b = realloc(c->buf, n);
    if (!b) return -1;
    memset(b, 'x', n);
    c->buf = b;
    c->cap = n;
  }
  if (zmq_send(c->dealer, c->buf, n, 0) < 0) return -1;
  zmq_msg_t m;
  zmq_msg_init(&m);
  int rc = zmq_msg_recv(&m, c->dealer, 0);
  zmq_msg_close(&m);
  return rc < 0 ? -1 : 0;
}

static int append(peer_conn *c, const char *stream, const bench_event *e, int64_t stamp) {
  (void)stamp;
  return round_trip(c, wire_size(stream, e));
}

static int append_batch(peer_conn *c, const char *stream, const bench_event *const *e, size_t n) {
  size_t total = 8;
  for (size_t i = 0; i < n; i++) total += wire_size(stream, e[i]);
  return round_trip(c, total);
}

static int group_create(peer_conn *c, const char *stream, const char *group, int blocking) {
  (void)c, (void)stream, (void)group, (void)blocking;
  fprintf(stderr, "peer_zmq_echo: an echo has no groups\n");
  return -1;
}

static int consume(peer_conn *c, const char *stream, const char *group, const char *consumer,
                   size_t max, int wait_ms, size_t *n, int64_t *stamps) {
  (void)c, (void)stream, (void)group, (void)consumer, (void)max, (void)wait_ms, (void)stamps;
  *n = 0;
  return -1;
}

/* The echo: every message back to whoever sent it, on one thread. */
static int serve(const char *ep) {
  void *ctx = zmq_ctx_new();
  void *r = zmq_socket(ctx, ZMQ_ROUTER);
  if (!r || zmq_bind(r, ep)) {
    fprintf(stderr, "peer_zmq_echo: bind %s: %s\n", ep, zmq_strerror(errno));
    return 1;
  }
  for (;;) {
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&id, r, 0) < 0 || zmq_msg_recv(&body, r, 0) < 0) {
      zmq_msg_close(&id);
      zmq_msg_close(&body);
      if (errno == EINTR) continue;
      return 1;
    }
    zmq_msg_send(&id, r, ZMQ_SNDMORE);
    zmq_msg_send(&body, r, 0);
    zmq_msg_close(&id);
    zmq_msg_close(&body);
  }
}

static int option(int argc, char **argv, int i) {
  if (i + 1 >= argc) return 0;
  if (!strcmp(argv[i], "--connect")) {
    endpoint = argv[i + 1];
    return 2;
  }
  return 0;
}

static peer_sys sys = {
    .name = "zmq-echo",
    .durability = "none (no storage)",
    .connect = conn_open,
    .close = conn_close,
    .setup = nothing,
    .teardown = nothing,
    .append = append,
    .append_batch = append_batch,
    .group_create = group_create,
    .consume = consume,
    .option = option,
    .usage =
        "  --connect ENDPOINT  the echo's endpoint\n"
        "  --serve ENDPOINT    run the echo there (alone, not with a workload)\n",
};

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "--serve")) return serve(argv[2]);
  return peer_main(&sys, argc, argv);
}
