/* client.c — remote handles (engram_connect): every API call becomes a request to
 * `engram serve` over one DEALER socket, with ids, timeouts, pipelining and reconnects.
 *
 * Threads. A handle may be used by many threads. The socket is touched only under `mu`.
 * A caller sends its request, then waits for the reply with its id; one waiting thread
 * at a time (the reader) sleeps in poll() on the socket's signalling fd without holding
 * `mu`, the others on `cv`. Whoever reads replies files them under their ids and wakes
 * their owners, so replies may arrive in any order. libzmq's signalling fd is
 * edge-like: after any call on the socket the caller drains it until ZMQ_EVENTS shows
 * no input, so a reader's poll() never sleeps on input already announced.
 *
 * Reconnects. libzmq reconnects by itself; ZMQ_IMMEDIATE keeps requests from queueing
 * for a daemon that is not there (they wait, unsent, until one is, or fail with ECONN at
 * their deadline). A socket monitor tells when a connection drops: the replies of
 * requests sent over it will never come. Requests that are safe to repeat (reads, and
 * appends whose every event has an idempotency key) are sent again, with the same id,
 * once a connection is back; the others fail at once with ECONN, since the daemon may or
 * may not have applied them — a plain append is never silently sent twice.
 *
 * Requests are written only while the monitor says a connection is up. libzmq announces
 * DISCONNECTED before it takes the dead connection's pipe away from the socket, so a send
 * just after that announcement can still succeed — into a pipe about to be dropped, with
 * no further event to tell. Waiting for HANDSHAKE_SUCCEEDED of the next connection keeps
 * such requests unsent; any DISCONNECTED takes back what was sent, whatever `up` says.
 */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include "net/net.h"

#define PEND_BUCKETS 1024

struct pend {
  uint64_t id;
  uint8_t *req; /* the packed request, kept for a resend */
  size_t req_len;
  int retry; /* safe to send again after a lost connection */
  int sent;  /* written to a live connection */
  int done;
  int code; /* local failure when done without a reply */
  char msg[256];
  Engram__Wire__Reply *rp;    /* the reply when done */
  int64_t deadline_ns;        /* monotonic */
  int batch;                  /* a batch of pipelined appends */
  size_t refs;                /* batch: pipelined appends still pointing at it */
  size_t refs_total;          /* batch: appends in it */
  struct pend *next;          /* hash chain while in flight */
  struct pend *uprev, *unext; /* the unsent list, in id order */
  int in_unsent;
};

/* One pipelined append. */
struct aslot {
  struct pend *p; /* its batch, NULL while staged */
  uint32_t idx;   /* its place in the batch */
  engram_append_cb cb;
  void *ctx;
};

struct conn {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* non-reader waiters */
  void *zctx, *sock, *mon;
  int sock_fd, mon_fd, wake_fd;
  int reading; /* a thread sleeps in poll() */
  pthread_t reader;
  uint64_t next_id;
  struct pend *inflight[PEND_BUCKETS];
  size_t n_unsent;
  struct pend *u_head, *u_tail; /* requests waiting to be sent, oldest first */
  unsigned pumps;
  int up;      /* a connection is established */
  int ever_up; /* one was, since engram_connect */
  int denied;  /* the daemon refused our CURVE key */
  char endpoint[512];
  engram_connect_options o;
  char server_key[41], public_key[41], secret_key[41];
  uint32_t max_message;
  /* Pipelined appends: a ring of the outstanding ones in the order they were made, the
   * staged ones (not yet sent) at its end. */
  struct aslot *ring;     /* pipeline_window slots */
  size_t a_head, a_count; /* first outstanding slot, outstanding appends */
  size_t staged;          /* the last `staged` slots wait in sbuf */
  char s_topic[ENGRAM_MAX_NAME + 1];
  uint8_t *sbuf; /* staged events, each as an Append.events field */
  size_t s_len, s_cap;
  int s_idem;    /* every staged event has an idempotency key */
  size_t a_reqs; /* batches sent and not yet answered */
  int a_err;     /* first pipelined error since the last append_wait */
  char a_msg[256];
  pthread_t flusher; /* sends staged appends when the producer is away */
  int f_running, f_stop;
  pthread_cond_t f_cv;
};

static struct conn *C(engram *log) { return log->state; }

/* ---------------------------------------------------------------------------------
 * Pending requests.
 * ------------------------------------------------------------------------------ */
static void pend_insert(struct conn *c, struct pend *p) {
  struct pend **b = &c->inflight[p->id % PEND_BUCKETS];
  p->next = *b;
  *b = p;
}

static void pend_remove(struct conn *c, struct pend *p) {
  for (struct pend **pp = &c->inflight[p->id % PEND_BUCKETS]; *pp; pp = &(*pp)->next) {
    if (*pp == p) {
      *pp = p->next;
      p->next = NULL;
      return;
    }
  }
}

static struct pend *pend_find(struct conn *c, uint64_t id) {
  for (struct pend *p = c->inflight[id % PEND_BUCKETS]; p; p = p->next)
    if (p->id == id) return p;
  return NULL;
}

/* Queues p to be sent, keeping id order (a resend after a lost connection may come back
 * behind newer requests). */
static void unsent_add(struct conn *c, struct pend *p) {
  struct pend *after = c->u_tail;
  while (after && after->id > p->id) after = after->uprev;
  p->uprev = after;
  p->unext = after ? after->unext : c->u_head;
  if (p->unext)
    p->unext->uprev = p;
  else
    c->u_tail = p;
  if (after)
    after->unext = p;
  else
    c->u_head = p;
  p->in_unsent = 1;
  c->n_unsent++;
}

static void unsent_remove(struct conn *c, struct pend *p) {
  if (!p->in_unsent) return;
  if (p->uprev)
    p->uprev->unext = p->unext;
  else
    c->u_head = p->unext;
  if (p->unext)
    p->unext->uprev = p->uprev;
  else
    c->u_tail = p->uprev;
  p->uprev = p->unext = NULL;
  p->in_unsent = 0;
  c->n_unsent--;
}

static void wake_reader(struct conn *c) {
  if (c->reading && !pthread_equal(c->reader, pthread_self())) {
    uint64_t one = 1;
    ssize_t r = write(c->wake_fd, &one, sizeof one);
    (void)r;
  }
}

/* Ends a pending request (with its reply or a local error). Called with mu held. */
static void pend_finish(struct conn *c, struct pend *p, Engram__Wire__Reply *rp, int code,
                        const char *msg) {
  if (p->done) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return;
  }
  pend_remove(c, p);
  unsent_remove(c, p);
  if (p->batch) c->a_reqs--;
  p->done = 1;
  p->rp = rp;
  p->code = code;
  if (msg) snprintf(p->msg, sizeof p->msg, "%s", msg);
  free(p->req);
  p->req = NULL;
  pthread_cond_broadcast(&c->cv);
  wake_reader(c);
}

static void pend_free(struct pend *p) {
  if (!p) return;
  if (p->rp) engram__wire__reply__free_unpacked(p->rp, NULL);
  free(p->req);
  free(p);
}

/* ---------------------------------------------------------------------------------
 * Socket work, all with mu held.
 * ------------------------------------------------------------------------------ */
static void handle_reply(struct conn *c, const uint8_t *data, size_t len) {
  net_peek pk;
  const char *why;
  if (net_wire_scan(&engram__wire__reply__descriptor, data, len, &pk, &why)) return;
  Engram__Wire__Reply *rp = engram__wire__reply__unpack(NULL, len, data);
  if (!rp) return;
  struct pend *p = pend_find(c, rp->id);
  if (!p) { /* a late reply to a request that already timed out */
    engram__wire__reply__free_unpacked(rp, NULL);
    return;
  }
  pend_finish(c, p, rp, 0, NULL);
}

/* Reads every reply waiting. With `settle` it first makes libzmq process its pending
 * commands (ZMQ_EVENTS), which must happen before sleeping on the socket's fd; without,
 * it is the cheap read a busy producer does on every call (libzmq then looks at its
 * commands only every millisecond or so, saving a system call per look). */
static void drain_replies(struct conn *c, int settle) {
  for (;;) {
    if (settle) {
      uint32_t ev = 0;
      size_t sz = sizeof ev;
      if (zmq_getsockopt(c->sock, ZMQ_EVENTS, &ev, &sz) != 0 || !(ev & ZMQ_POLLIN)) return;
    }
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, c->sock, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&m);
      if (!settle) return;
      continue;
    }
    int more = zmq_msg_more(&m);
    /* A REQ-style empty delimiter never comes to a DEALER from the daemon; skip one if it does. */
    if (more && zmq_msg_size(&m) == 0) {
      zmq_msg_close(&m);
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, c->sock, 0) < 0) {
        zmq_msg_close(&m);
        return;
      }
      more = zmq_msg_more(&m);
    }
    if (!more) handle_reply(c, zmq_msg_data(&m), zmq_msg_size(&m));
    zmq_msg_close(&m);
    while (more) {
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, c->sock, 0) < 0)
        more = 0;
      else
        more = zmq_msg_more(&m);
      zmq_msg_close(&m);
    }
  }
}

static void drain_data(struct conn *c) { drain_replies(c, 1); }

/* Sends what waits to be sent, oldest first, as far as a connection takes it. Not while
 * no connection is known to be up: a send could go to a dead connection's pipe (see the
 * header). */
static void flush_unsent(struct conn *c) {
  if (c->denied || !c->up) return;
  while (c->u_head) {
    struct pend *p = c->u_head;
    if (zmq_send(c->sock, p->req, p->req_len, ZMQ_DONTWAIT) < 0) return;
    unsent_remove(c, p);
    p->sent = 1;
  }
}

/* ---------------------------------------------------------------------------------
 * Pipelined appends go out in batches: while MAX_BATCHES_OUT batches wait for their
 * replies, further appends are staged and leave together as one independent Append
 * (each event succeeds or fails alone) when a reply frees a place. A slow producer
 * sends each event at once; a fast one sends few, large messages, which is what makes
 * pipelining pay where a message costs tens of microseconds.
 * ------------------------------------------------------------------------------ */
#define MAX_BATCHES_OUT 2
#define STAGE_MAX_EVENTS 1024
#define STAGE_MAX_BYTES (1u << 20)

static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

/* Sends the staged appends as one request. Called with mu held. */
static void stage_flush(struct conn *c) {
  if (!c->staged) return;
  size_t tl = strlen(c->s_topic);
  /* Append { topic = 1; events = 2 (already framed in sbuf); independent = 3 } */
  size_t inner = 1 + 10 + tl + c->s_len + 2;
  size_t cap = 2 + 11 + 2 + 10 + inner;
  uint8_t *buf = malloc(cap);
  struct pend *p = calloc(1, sizeof *p);
  uint64_t id = ++c->next_id;
  if (!buf || !p) {
    /* Out of memory: the staged appends fail like a lost request would. */
    free(buf);
    free(p);
    return;
  }
  uint8_t hdr[16];
  size_t hl = 0;
  hdr[hl++] = 0x0a;
  hl += put_varint(hdr + hl, tl);
  size_t in_len = hl + tl + c->s_len + 2;
  size_t n = 0;
  buf[n++] = 0x08; /* version */
  n += put_varint(buf + n, ENGRAM_PROTOCOL_VERSION);
  buf[n++] = 0x10; /* id */
  n += put_varint(buf + n, id);
  n += put_varint(buf + n, (ENGRAM__WIRE__REQUEST__OP_APPEND << 3) | 2);
  n += put_varint(buf + n, in_len);
  memcpy(buf + n, hdr, hl);
  n += hl;
  memcpy(buf + n, c->s_topic, tl);
  n += tl;
  memcpy(buf + n, c->sbuf, c->s_len);
  n += c->s_len;
  buf[n++] = 0x18; /* independent = true */
  buf[n++] = 0x01;
  p->id = id;
  p->req = buf;
  p->req_len = n;
  p->retry = c->s_idem;
  p->batch = 1;
  p->refs = c->staged;
  p->refs_total = c->staged;
  p->deadline_ns = clock_after_ms(clock_monotonic_ns(), c->o.timeout_ms);
  size_t first = (c->a_head + c->a_count - c->staged) % c->o.pipeline_window;
  for (size_t i = 0; i < c->staged; i++) {
    struct aslot *sl = &c->ring[(first + i) % c->o.pipeline_window];
    sl->p = p;
    sl->idx = (uint32_t)i;
  }
  c->staged = 0;
  c->s_len = 0;
  c->s_idem = 1;
  c->a_reqs++;
  pend_insert(c, p);
  unsent_add(c, p);
  flush_unsent(c);
}

static void stage_maybe_flush(struct conn *c) {
  if (c->staged && c->a_reqs < MAX_BATCHES_OUT) stage_flush(c);
}

static void connection_lost(struct conn *c) {
  /* Replies already received count: read them before judging what was lost. */
  drain_data(c);
  for (int b = 0; b < PEND_BUCKETS; b++) {
    struct pend *p = c->inflight[b];
    while (p) {
      struct pend *next = p->next;
      if (p->sent) {
        if (p->retry) {
          p->sent = 0;
          unsent_add(c, p);
        } else {
          char msg[700];
          snprintf(msg, sizeof msg,
                   "%s: connection to the daemon lost before the reply; the request may or may not "
                   "have been applied",
                   c->endpoint);
          pend_finish(c, p, NULL, ENGRAM_ECONN, msg);
        }
      }
      p = next;
    }
  }
}

static void drain_monitor(struct conn *c) {
  for (;;) {
    uint32_t ev = 0;
    size_t sz = sizeof ev;
    if (zmq_getsockopt(c->mon, ZMQ_EVENTS, &ev, &sz) != 0 || !(ev & ZMQ_POLLIN)) return;
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, c->mon, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&m);
      return;
    }
    uint16_t event = 0;
    if (zmq_msg_size(&m) >= 2) memcpy(&event, zmq_msg_data(&m), 2);
    int more = zmq_msg_more(&m);
    zmq_msg_close(&m);
    while (more) {
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, c->mon, 0) < 0)
        more = 0;
      else
        more = zmq_msg_more(&m);
      zmq_msg_close(&m);
    }
    if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      c->up = 1;
      c->ever_up = 1;
      flush_unsent(c);
    } else if (event == ZMQ_EVENT_CONNECT_RETRIED && !c->ever_up) {
      /* engram_connect to where nothing listens: say so now rather than at the timeout.
       * Later, with a handle in use, a daemon being restarted is waited for. */
      for (int b = 0; b < PEND_BUCKETS; b++) {
        while (c->inflight[b]) {
          char msg[700];
          snprintf(msg, sizeof msg, "%s: cannot reach the daemon (connection refused)",
                   c->endpoint);
          pend_finish(c, c->inflight[b], NULL, ENGRAM_ECONN, msg);
        }
      }
    } else if (event == ZMQ_EVENT_DISCONNECTED) {
      /* Whatever `up` said: a request written since the last look may have gone to the
       * connection that just died. */
      c->up = 0;
      connection_lost(c);
    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      c->denied = 1;
      for (int b = 0; b < PEND_BUCKETS; b++) {
        while (c->inflight[b]) {
          char msg[700];
          snprintf(msg, sizeof msg, "%s: the daemon refused this client's CURVE key", c->endpoint);
          pend_finish(c, c->inflight[b], NULL, ENGRAM_EDENIED, msg);
        }
      }
    }
  }
}

/* Everything one look at the sockets can do without sleeping. */
static void pump(struct conn *c) {
  drain_data(c);
  drain_monitor(c);
  stage_maybe_flush(c);
  flush_unsent(c);
  drain_data(c);
}

/* The cheap look a pipelining producer takes on every call: the monitor (a lost
 * connection) only now and then, and always when someone waits. */
static void pump_fast(struct conn *c) {
  flush_unsent(c);
  drain_replies(c, 0);
  if ((++c->pumps & 31) == 0) drain_monitor(c);
  stage_maybe_flush(c);
}

static void expire(struct conn *c, struct pend *p) {
  char msg[700];
  if (c->denied)
    snprintf(msg, sizeof msg, "%s: the daemon refused this client's CURVE key", c->endpoint);
  else if (p->sent)
    snprintf(msg, sizeof msg, "%s: no reply within %u ms", c->endpoint, c->o.timeout_ms);
  else
    snprintf(msg, sizeof msg, "%s: cannot reach the daemon (no connection within %u ms)",
             c->endpoint, c->o.timeout_ms);
  pend_finish(c, p, NULL,
              c->denied ? ENGRAM_EDENIED
              : p->sent ? ENGRAM_ETIMEDOUT
                        : ENGRAM_ECONN,
              msg);
}

/* Waits until p is done (a reply, a failure or its deadline). Called with mu held. */
static void wait_pend(struct conn *c, struct pend *p) {
  while (!p->done) {
    pump(c);
    if (p->done) break;
    int64_t now = clock_monotonic_ns();
    if (now >= p->deadline_ns) {
      expire(c, p);
      break;
    }
    if (c->reading) {
      int64_t until = p->deadline_ns;
      struct timespec ts = {until / 1000000000, until % 1000000000};
      pthread_cond_timedwait(&c->cv, &c->mu, &ts);
      continue;
    }
    c->reading = 1;
    c->reader = pthread_self();
    pthread_mutex_unlock(&c->mu);
    struct pollfd fds[3] = {
        {c->sock_fd, POLLIN, 0}, {c->mon_fd, POLLIN, 0}, {c->wake_fd, POLLIN, 0}};
    int64_t ms = (p->deadline_ns - now + 999999) / 1000000;
    /* Unsent requests wait for a connection: look again now and then, as libzmq
     * signals a new connection on the monitor but not always on the socket. */
    if (c->n_unsent && ms > 50) ms = 50;
    poll(fds, 3, ms > 1000000 ? 1000000 : (int)ms);
    if (fds[2].revents & POLLIN) {
      uint64_t v;
      ssize_t r = read(c->wake_fd, &v, sizeof v);
      (void)r;
    }
    pthread_mutex_lock(&c->mu);
    c->reading = 0;
    pthread_cond_broadcast(&c->cv); /* someone else may need to read now */
  }
}

/* Packs rq, sends it (or queues it unsent) and registers the pending request. Called with
 * mu held. Returns NULL with an error set on the handle. */
static struct pend *submit(engram *log, struct conn *c, Engram__Wire__Request *rq, int retry,
                           uint64_t extra_ms, int *rc) {
  if (c->denied) {
    *rc = log_error(NULL, ENGRAM_EDENIED, "%s: the daemon refused this client's CURVE key",
                    c->endpoint);
    return NULL;
  }
  stage_flush(c); /* requests leave in the order they were made */
  rq->version = ENGRAM_PROTOCOL_VERSION;
  rq->id = ++c->next_id;
  size_t n = engram__wire__request__get_packed_size(rq);
  if (c->max_message && n > c->max_message) {
    *rc =
        log_error(NULL, ENGRAM_ETOOBIG, "%s %s: request of %zu bytes over the daemon's limit of %u",
                  c->endpoint, net_op_name(rq->op_case), n, c->max_message);
    return NULL;
  }
  struct pend *p = calloc(1, sizeof *p);
  uint8_t *buf = malloc(n ? n : 1);
  if (!p || !buf) {
    free(p);
    free(buf);
    *rc = log_error(NULL, ENGRAM_ENOMEM, "%s: out of memory", c->endpoint);
    return NULL;
  }
  engram__wire__request__pack(rq, buf);
  p->id = rq->id;
  p->req = buf;
  p->req_len = n;
  p->retry = retry;
  p->deadline_ns = clock_after_ms(clock_after_ms(clock_monotonic_ns(), c->o.timeout_ms), extra_ms);
  pend_insert(c, p);
  unsent_add(c, p);
  flush_unsent(c);
  *rc = 0;
  return p;
}

/* One request and its reply. On success *out is the reply (free it with
 * engram__wire__reply__free_unpacked) and the result is the daemon's code (with the
 * daemon's message set on the handle). `want` is the result kind a success carries. */
static int rpc(engram *log, Engram__Wire__Request *rq, int retry, uint64_t extra_ms, int want,
               Engram__Wire__Reply **out) {
  struct conn *c = C(log);
  *out = NULL;
  int rc;
  pthread_mutex_lock(&c->mu);
  struct pend *p = submit(log, c, rq, retry, extra_ms, &rc);
  if (!p) {
    pthread_mutex_unlock(&c->mu);
    return rc;
  }
  wait_pend(c, p);
  pthread_mutex_unlock(&c->mu);
  if (!p->rp) {
    rc = log_error(NULL, p->code, "%s", p->msg);
    pend_free(p);
    return rc;
  }
  Engram__Wire__Reply *rp = p->rp;
  p->rp = NULL;
  pend_free(p);
  if (rp->code > 0 || rp->code < -1000) {
    engram__wire__reply__free_unpacked(rp, NULL);
    return log_error(NULL, ENGRAM_EPROTO, "%s: reply with an invalid code", c->endpoint);
  }
  if (rp->code) {
    rc = log_error(NULL, rp->code, "%s", *rp->error ? rp->error : engram_strerror(rp->code));
    *out = rp;
    return rc;
  }
  if (want != ENGRAM__WIRE__REPLY__RESULT__NOT_SET && (int)rp->result_case != want) {
    engram__wire__reply__free_unpacked(rp, NULL);
    return log_error(NULL, ENGRAM_EPROTO, "%s %s: reply of the wrong kind", c->endpoint,
                     net_op_name(rq->op_case));
  }
  log_error_clear(NULL);
  *out = rp;
  return 0;
}

/* Whether a request may be sent again after a lost connection: its operation's policy in
 * NET_OPS (appends decide per request: r_append_batch). */
static int retry_of(const Engram__Wire__Request *rq) {
  return net_op_retry(rq->op_case) == NET_RETRY_SAFE;
}

static int call(engram *log, Engram__Wire__Request *rq) {
  Engram__Wire__Reply *rp;
  int rc = rpc(log, rq, retry_of(rq), 0, ENGRAM__WIRE__REPLY__RESULT__NOT_SET, &rp);
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  return rc;
}

static int bad_reply(engram *log, Engram__Wire__Reply *rp, const char *what) {
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  return log_error(NULL, ENGRAM_EPROTO, "%s: %s: malformed reply from the daemon", C(log)->endpoint,
                   what);
}

/* ---------------------------------------------------------------------------------
 * Conversions from replies.
 * ------------------------------------------------------------------------------ */
static int topic_from_wire(const Engram__Wire__TopicInfo *w, engram_topic_info *t) {
  memset(t, 0, sizeof *t);
  if (!w || net_copy_text(t->name, sizeof t->name, w->name)) return -1;
  if (w->config) {
    t->config.compress_threshold = w->config->compress_threshold;
    t->config.max_payload = w->config->max_payload;
    t->config.dict_train_after = w->config->dict_train_after;
    t->config.flags = w->config->flags;
  }
#define X(type, name) t->name = (type)w->name;
  ENGRAM_TOPIC_INFO_FIELDS(X)
#undef X
  return 0;
}

static int group_from_wire(const Engram__Wire__GroupInfo *w, engram_group_info *g) {
  memset(g, 0, sizeof *g);
  if (!w || net_copy_text(g->topic, sizeof g->topic, w->topic) ||
      net_copy_text(g->name, sizeof g->name, w->name))
    return -1;
  if (w->n_filters > ENGRAM_MAX_FILTERS || w->n_backoff_ms > ENGRAM_MAX_BACKOFF) return -1;
  for (size_t i = 0; i < w->n_filters; i++)
    if (net_copy_text(g->filters[i], sizeof g->filters[i], w->filters[i])) return -1;
  g->n_filters = w->n_filters;
  if (w->n_backoff_ms)
    memcpy(g->backoff_ms, w->backoff_ms, w->n_backoff_ms * sizeof *w->backoff_ms);
  g->n_backoff = w->n_backoff_ms;
  g->ack_wait_ms = w->ack_wait_ms;
  g->max_deliver = w->max_deliver;
  g->result_ttl_ms = w->result_ttl_ms;
  g->flags = w->flags;
  g->created_ns = w->created_ns;
#define X(type, name) g->name = (type)w->name;
  ENGRAM_GROUP_INFO_COUNTERS(X)
#undef X
  return 0;
}

static int batch_from_wire(engram *log, const Engram__Wire__Events *w, engram_batch **out) {
  *out = NULL;
  if (!w) return -1;
  log_topic t;
  memset(&t, 0, sizeof t);
  if (net_copy_text(t.name, sizeof t.name, w->topic)) return -1;
  log_bb *bb = log_bb_new(w->n_events);
  if (!bb) return log_error(NULL, ENGRAM_ENOMEM, "read: out of memory"), -2;
  for (size_t i = 0; i < w->n_events; i++) {
    const Engram__Wire__Event *e = w->events[i];
    if (e->n_headers > ENGRAM_MAX_HEADERS || e->payload.len > UINT32_MAX) {
      log_bb_free(bb);
      return -1;
    }
    log_view v;
    memset(&v, 0, sizeof v);
    v.offset = e->offset;
    v.type = e->type;
    v.type_len = strlen(e->type);
    v.has_key = e->has_key;
    v.key = e->key;
    v.key_len = e->has_key ? strlen(e->key) : 0;
    v.payload = e->payload.data;
    v.payload_len = e->payload.len;
    v.raw_len = (uint32_t)e->payload.len;
    v.content_type = e->content_type;
    v.content_type_len = strlen(e->content_type);
    v.idem = e->idempotency_key;
    v.idem_len = strlen(e->idempotency_key);
    v.timestamp_ns = e->timestamp_ns;
    v.deliver_at_ns = e->deliver_at_ns;
    v.n_headers = (uint32_t)e->n_headers;
    for (size_t h = 0; h < e->n_headers; h++) {
      v.headers[h].name = e->headers[h]->name;
      v.headers[h].name_len = strlen(e->headers[h]->name);
      v.headers[h].value = e->headers[h]->value;
      v.headers[h].value_len = strlen(e->headers[h]->value);
    }
    int rc;
    engram_event *ev = log_bb_add(bb, NULL, NULL, &t, &v, &rc);
    if (!ev) {
      log_bb_free(bb);
      return log_error(NULL, ENGRAM_ENOMEM, "read: out of memory"), -2;
    }
    ev->attempt = e->attempt;
  }
  *out = log_bb_finish(bb);
  return 0;
}

/* ---------------------------------------------------------------------------------
 * The operations.
 * ------------------------------------------------------------------------------ */
#define REQ(field, CASE, msgtype, INIT)                   \
  Engram__Wire__Request rq = ENGRAM__WIRE__REQUEST__INIT; \
  msgtype m = INIT;                                       \
  rq.op_case = ENGRAM__WIRE__REQUEST__OP_##CASE;          \
  rq.field = &m

static void conn_free(struct conn *c);

static void r_close(engram *log) {
  struct conn *c = C(log);
  if (c) {
    engram_append_wait(log);
    conn_free(c);
  }
}

static int r_sync(engram *log) {
  REQ(sync, SYNC, Engram__Wire__Sync, ENGRAM__WIRE__SYNC__INIT);
  (void)m;
  return call(log, &rq);
}

static int r_backup(engram *log, const char *dest) {
  REQ(backup, BACKUP, Engram__Wire__Backup, ENGRAM__WIRE__BACKUP__INIT);
  m.dest = net_str(dest);
  return call(log, &rq);
}

static int r_topic_create(engram *log, const char *topic, const engram_topic_config *cfg) {
  REQ(topic_create, TOPIC_CREATE, Engram__Wire__TopicCreate, ENGRAM__WIRE__TOPIC_CREATE__INIT);
  Engram__Wire__TopicConfig wc = ENGRAM__WIRE__TOPIC_CONFIG__INIT;
  m.topic = net_str(topic);
  if (cfg) {
    wc.compress_threshold = cfg->compress_threshold;
    wc.max_payload = cfg->max_payload;
    wc.dict_train_after = cfg->dict_train_after;
    wc.flags = cfg->flags;
    m.config = &wc;
  }
  return call(log, &rq);
}

static int r_topic_info_get(engram *log, const char *topic, engram_topic_info *info) {
  if (!info) return log_error(NULL, ENGRAM_EINVAL, "topic info: info is NULL");
  REQ(topic_get, TOPIC_GET, Engram__Wire__TopicGet, ENGRAM__WIRE__TOPIC_GET__INIT);
  m.topic = net_str(topic);
  Engram__Wire__Reply *rp;
  int rc = rpc(log, &rq, retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_TOPIC_INFO, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  if (topic_from_wire(rp->topic_info, info)) return bad_reply(log, rp, "topic info");
  engram__wire__reply__free_unpacked(rp, NULL);
  return 0;
}

static int r_topic_list(engram *log, engram_topic_info **out, size_t *n) {
  if (!out || !n) return log_error(NULL, ENGRAM_EINVAL, "topic list: NULL argument");
  *out = NULL;
  *n = 0;
  REQ(topic_list, TOPIC_LIST, Engram__Wire__TopicList, ENGRAM__WIRE__TOPIC_LIST__INIT);
  (void)m;
  Engram__Wire__Reply *rp;
  int rc = rpc(log, &rq, retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_TOPICS, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  size_t k = rp->topics->n_topics;
  engram_topic_info *list = calloc(k ? k : 1, sizeof *list);
  if (!list) {
    engram__wire__reply__free_unpacked(rp, NULL);
    return log_error(NULL, ENGRAM_ENOMEM, "topic list: out of memory");
  }
  for (size_t i = 0; i < k; i++) {
    if (topic_from_wire(rp->topics->topics[i], &list[i])) {
      free(list);
      return bad_reply(log, rp, "topic list");
    }
  }
  engram__wire__reply__free_unpacked(rp, NULL);
  *out = list;
  *n = k;
  return 0;
}

static int r_topic_drop(engram *log, const char *topic) {
  REQ(topic_drop, TOPIC_DROP, Engram__Wire__TopicDrop, ENGRAM__WIRE__TOPIC_DROP__INIT);
  m.topic = net_str(topic);
  return call(log, &rq);
}

static int r_topic_train_dict(engram *log, const char *topic, uint32_t *dict_id) {
  REQ(topic_train_dict, TOPIC_TRAIN_DICT, Engram__Wire__TopicTrainDict,
      ENGRAM__WIRE__TOPIC_TRAIN_DICT__INIT);
  m.topic = net_str(topic);
  Engram__Wire__Reply *rp;
  int rc = rpc(log, &rq, retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_DICT_ID, &rp);
  if (!rc && dict_id) *dict_id = rp->dict_id;
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  return rc;
}

/* Wire events for a request: pointers into the caller's events. */
struct wev {
  Engram__Wire__Event *ev;
  Engram__Wire__Event **evp;
  Engram__Wire__Header *h;
  Engram__Wire__Header **hp;
  /* One event with few headers, the pipelined case, needs no allocation. */
  Engram__Wire__Event ev1;
  Engram__Wire__Event *evp1;
  Engram__Wire__Header h8[8];
  Engram__Wire__Header *hp8[8];
};

static void wev_free(struct wev *w) {
  if (w->ev != &w->ev1) {
    free(w->ev);
    free(w->evp);
  }
  if (w->h != w->h8) {
    free(w->h);
    free(w->hp);
  }
}

/* What the wire cannot carry (NULL where the API wants a pointer) is checked here, with
 * the API's own message; everything else is the daemon's to judge, so remote callers
 * get the embedded codes and messages. */
static int inexpressible(const engram_event *e) {
  if (!e->type || (e->payload_len && !e->payload) || (e->n_headers && !e->headers)) return 1;
  for (size_t i = 0; i < e->n_headers; i++)
    if (!e->headers[i].name) return 1;
  return 0;
}

/* Builds the wire events (pointing into the caller's). */
static int wev_build(engram *log, const char *topic, const engram_event *evs, size_t n,
                     struct wev *w, int *all_idem) {
  memset(w, 0, sizeof *w);
  size_t nh = 0;
  *all_idem = 1;
  for (size_t i = 0; i < n; i++) {
    if (inexpressible(&evs[i])) {
      int rc = log_check_event(NULL, net_str(topic), &evs[i], ENGRAM_MAX_PAYLOAD_LIMIT);
      if (rc) return rc;
      return log_error(NULL, ENGRAM_EINVAL, "append %s: event %zu has a NULL field", net_str(topic),
                       i);
    }
    if (!evs[i].idempotency_key) *all_idem = 0;
    nh += evs[i].n_headers;
  }
  if (n == 1) {
    w->ev = &w->ev1;
    w->evp = &w->evp1;
  } else {
    w->ev = calloc(n, sizeof *w->ev);
    w->evp = calloc(n, sizeof *w->evp);
  }
  if (nh <= 8) {
    w->h = w->h8;
    w->hp = w->hp8;
  } else {
    w->h = calloc(nh, sizeof *w->h);
    w->hp = calloc(nh, sizeof *w->hp);
  }
  if (!w->ev || !w->evp || !w->h || !w->hp) {
    wev_free(w);
    return log_error(NULL, ENGRAM_ENOMEM, "append %s: out of memory", topic ? topic : "");
  }
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    const engram_event *e = &evs[i];
    Engram__Wire__Event *x = &w->ev[i];
    engram__wire__event__init(x);
    x->type = net_str(e->type);
    x->has_key = e->key != NULL;
    x->key = net_str(e->key);
    x->payload.data = (uint8_t *)e->payload;
    x->payload.len = e->payload ? e->payload_len : 0;
    x->content_type = net_str(e->content_type);
    x->idempotency_key = net_str(e->idempotency_key);
    x->has_idempotency_key = e->idempotency_key != NULL;
    x->deliver_at_ns = e->deliver_at_ns;
    if (e->n_headers) {
      x->headers = &w->hp[at];
      x->n_headers = e->n_headers;
      for (size_t k = 0; k < e->n_headers; k++, at++) {
        engram__wire__header__init(&w->h[at]);
        w->h[at].name = net_str(e->headers[k].name);
        w->h[at].value = net_str(e->headers[k].value);
        w->hp[at] = &w->h[at];
      }
    }
    w->evp[i] = x;
  }
  return 0;
}

static int r_append_batch(engram *log, const char *topic, const engram_event *evs, size_t n,
                          uint64_t *offsets, int *duplicates) {
  if (!evs || !offsets)
    return log_error(NULL, ENGRAM_EINVAL, "append %s: events or offsets is NULL",
                     topic ? topic : "");
  if (n == 0) return log_error(NULL, ENGRAM_EINVAL, "append %s: empty batch", topic ? topic : "");
  if (n > NET_MAX_EVENTS)
    return log_error(NULL, ENGRAM_ETOOBIG, "append %s: batch of %zu events over limit %d",
                     topic ? topic : "", n, NET_MAX_EVENTS);
  struct wev w;
  int idem;
  int rc = wev_build(log, topic, evs, n, &w, &idem);
  if (rc) return rc;
  REQ(append, APPEND, Engram__Wire__Append, ENGRAM__WIRE__APPEND__INIT);
  m.topic = net_str(topic);
  m.events = w.evp;
  m.n_events = n;
  Engram__Wire__Reply *rp;
  rc = rpc(log, &rq, idem, 0, ENGRAM__WIRE__REPLY__RESULT_APPEND, &rp);
  wev_free(&w);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  if (rp->append->n_offsets != n ||
      (rp->append->n_duplicates != n && rp->append->n_duplicates != 0))
    return bad_reply(log, rp, "append");
  for (size_t i = 0; i < n; i++) {
    offsets[i] = rp->append->offsets[i];
    if (duplicates) duplicates[i] = rp->append->n_duplicates ? rp->append->duplicates[i] != 0 : 0;
  }
  engram__wire__reply__free_unpacked(rp, NULL);
  return 0;
}

static int r_append(engram *log, const char *topic, const engram_event *ev, uint64_t *offset,
                    int *duplicate) {
  if (!ev) return log_error(NULL, ENGRAM_EINVAL, "append %s: event is NULL", topic ? topic : "");
  uint64_t off = 0;
  int dup = 0;
  int rc = r_append_batch(log, topic, ev, 1, &off, &dup);
  if (rc) return rc;
  if (offset) *offset = off;
  if (duplicate) *duplicate = dup;
  return 0;
}

static int read_reply(engram *log, Engram__Wire__Request *rq, engram_batch **out,
                      const char *what) {
  Engram__Wire__Reply *rp;
  int rc = rpc(log, rq, retry_of(rq), 0, ENGRAM__WIRE__REPLY__RESULT_EVENTS, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  rc = batch_from_wire(log, rp->events, out);
  if (rc == -1) return bad_reply(log, rp, what);
  engram__wire__reply__free_unpacked(rp, NULL);
  return rc ? ENGRAM_ENOMEM : 0;
}

static int r_read(engram *log, const char *topic, uint64_t offset, engram_batch **out) {
  if (!out) return log_error(NULL, ENGRAM_EINVAL, "read: out is NULL");
  *out = NULL;
  REQ(read, READ, Engram__Wire__Read, ENGRAM__WIRE__READ__INIT);
  m.topic = net_str(topic);
  m.offset = offset;
  return read_reply(log, &rq, out, "read");
}

static int r_read_range(engram *log, const char *topic, uint64_t from, size_t max,
                        engram_batch **out) {
  if (!out) return log_error(NULL, ENGRAM_EINVAL, "read: out is NULL");
  *out = NULL;
  if (max == 0) return log_error(NULL, ENGRAM_EINVAL, "read %s: max is 0", topic ? topic : "");
  REQ(read_range, READ_RANGE, Engram__Wire__ReadRange, ENGRAM__WIRE__READ_RANGE__INIT);
  m.topic = net_str(topic);
  m.from = from;
  m.max = max;
  return read_reply(log, &rq, out, "read");
}

static int r_verify(engram *log, engram_verify_report *report) {
  if (!report) return log_error(NULL, ENGRAM_EINVAL, "verify: NULL argument");
  REQ(verify, VERIFY, Engram__Wire__Verify, ENGRAM__WIRE__VERIFY__INIT);
  (void)m;
  Engram__Wire__Reply *rp;
  int rc = rpc(log, &rq, retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_VERIFY, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  memset(report, 0, sizeof *report);
  report->topics = rp->verify->topics;
  report->records = rp->verify->records;
  report->damaged = rp->verify->damaged;
  snprintf(report->first_damage, sizeof report->first_damage, "%s", rp->verify->first_damage);
  engram__wire__reply__free_unpacked(rp, NULL);
  return 0;
}

static int r_group_create(engram *log, const char *topic, const char *group,
                          const engram_group_config *cfg) {
  REQ(group_create, GROUP_CREATE, Engram__Wire__GroupCreate, ENGRAM__WIRE__GROUP_CREATE__INIT);
  Engram__Wire__GroupConfig wc = ENGRAM__WIRE__GROUP_CONFIG__INIT;
  m.topic = net_str(topic);
  m.group = net_str(group);
  if (cfg) {
    if (cfg->n_filters > ENGRAM_MAX_FILTERS || (cfg->n_filters && !cfg->filters))
      return log_error(NULL, ENGRAM_EINVAL, "group create %s/%s: filters invalid (at most %d)",
                       net_str(topic), net_str(group), ENGRAM_MAX_FILTERS);
    if (cfg->n_backoff > ENGRAM_MAX_BACKOFF || (cfg->n_backoff && !cfg->backoff_ms))
      return log_error(NULL, ENGRAM_EINVAL,
                       "group create %s/%s: backoff invalid (at most %d steps)", net_str(topic),
                       net_str(group), ENGRAM_MAX_BACKOFF);
    for (size_t i = 0; i < cfg->n_filters; i++)
      if (!cfg->filters[i])
        return log_error(NULL, ENGRAM_EINVAL, "group create %s/%s: filter %zu is NULL",
                         net_str(topic), net_str(group), i);
    if ((unsigned)cfg->start > ENGRAM_START_TIME)
      return log_error(NULL, ENGRAM_EINVAL, "group create %s/%s: unknown start %d", net_str(topic),
                       net_str(group), (int)cfg->start);
    wc.filters = (char **)cfg->filters;
    wc.n_filters = cfg->n_filters;
    wc.start = (Engram__Wire__Start)cfg->start;
    wc.start_offset = cfg->start_offset;
    wc.start_time_ns = cfg->start_time_ns;
    wc.ack_wait_ms = cfg->ack_wait_ms;
    wc.max_deliver = cfg->max_deliver;
    wc.backoff_ms = (uint64_t *)cfg->backoff_ms;
    wc.n_backoff_ms = cfg->n_backoff;
    wc.result_ttl_ms = cfg->result_ttl_ms;
    wc.flags = cfg->flags;
    m.config = &wc;
  }
  return call(log, &rq);
}

static int r_group_info_get(engram *log, const char *topic, const char *group,
                            engram_group_info *info) {
  if (!info) return log_error(NULL, ENGRAM_EINVAL, "group info: info is NULL");
  REQ(group_get, GROUP_GET, Engram__Wire__GroupGet, ENGRAM__WIRE__GROUP_GET__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  Engram__Wire__Reply *rp;
  int rc = rpc(log, &rq, retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_GROUP_INFO, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  if (group_from_wire(rp->group_info, info)) return bad_reply(log, rp, "group info");
  engram__wire__reply__free_unpacked(rp, NULL);
  return 0;
}

static int r_group_list(engram *log, const char *topic, engram_group_info **out, size_t *n) {
  if (!out || !n) return log_error(NULL, ENGRAM_EINVAL, "group list: NULL argument");
  *out = NULL;
  *n = 0;
  REQ(group_list, GROUP_LIST, Engram__Wire__GroupList, ENGRAM__WIRE__GROUP_LIST__INIT);
  m.topic = net_str(topic);
  Engram__Wire__Reply *rp;
  int rc = rpc(log, &rq, retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_GROUPS, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  size_t k = rp->groups->n_groups;
  engram_group_info *list = calloc(k ? k : 1, sizeof *list);
  if (!list) {
    engram__wire__reply__free_unpacked(rp, NULL);
    return log_error(NULL, ENGRAM_ENOMEM, "group list: out of memory");
  }
  for (size_t i = 0; i < k; i++) {
    if (group_from_wire(rp->groups->groups[i], &list[i])) {
      free(list);
      return bad_reply(log, rp, "group list");
    }
  }
  engram__wire__reply__free_unpacked(rp, NULL);
  *out = list;
  *n = k;
  return 0;
}

static int r_group_delete(engram *log, const char *topic, const char *group) {
  REQ(group_delete, GROUP_DELETE, Engram__Wire__GroupDelete, ENGRAM__WIRE__GROUP_DELETE__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  return call(log, &rq);
}

static int r_group_reset(engram *log, const char *topic, const char *group, engram_start to,
                         uint64_t offset, int64_t time_ns) {
  if ((unsigned)to > ENGRAM_START_TIME)
    return log_error(NULL, ENGRAM_EINVAL, "group reset %s/%s: unknown position %d", net_str(topic),
                     net_str(group), (int)to);
  REQ(group_reset, GROUP_RESET, Engram__Wire__GroupReset, ENGRAM__WIRE__GROUP_RESET__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.to = (Engram__Wire__Start)to;
  m.offset = offset;
  m.time_ns = time_ns;
  return call(log, &rq);
}

static int r_fetch(engram *log, const char *topic, const char *group, const char *consumer,
                   size_t max, uint64_t wait_ms, engram_batch **out) {
  if (!out) return log_error(NULL, ENGRAM_EINVAL, "fetch: out is NULL");
  *out = NULL;
  if (max > UINT32_MAX) max = UINT32_MAX; /* the daemon refuses it with the embedded message */
  if (wait_ms > ENGRAM_MAX_FETCH_WAIT_MS)
    return log_error(NULL, ENGRAM_EINVAL, "fetch %s/%s: wait %llu ms over the limit of %u (1 hour)",
                     net_str(topic), net_str(group), (unsigned long long)wait_ms,
                     ENGRAM_MAX_FETCH_WAIT_MS);
  REQ(fetch, FETCH, Engram__Wire__Fetch, ENGRAM__WIRE__FETCH__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.consumer = net_str(consumer);
  m.max = (uint32_t)max;
  m.wait_ms = wait_ms;
  Engram__Wire__Reply *rp;
  int rc = rpc(log, &rq, retry_of(&rq), wait_ms, ENGRAM__WIRE__REPLY__RESULT_EVENTS, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  rc = batch_from_wire(log, rp->events, out);
  if (rc == -1) return bad_reply(log, rp, "fetch");
  engram__wire__reply__free_unpacked(rp, NULL);
  return rc ? ENGRAM_ENOMEM : 0;
}

static int r_ack_many(engram *log, const char *topic, const char *group,
                      const engram_ack_item *items, size_t n, int *codes) {
  if (!items || n == 0) return log_error(NULL, ENGRAM_EINVAL, "ack: no items");
  if (n > NET_MAX_ITEMS)
    return log_error(NULL, ENGRAM_ETOOBIG, "ack: %zu items over limit %d", n, NET_MAX_ITEMS);
  Engram__Wire__AckItem *wi = calloc(n, sizeof *wi);
  Engram__Wire__AckItem **wp = calloc(n, sizeof *wp);
  if (!wi || !wp) {
    free(wi);
    free(wp);
    return log_error(NULL, ENGRAM_ENOMEM, "ack: out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    engram__wire__ack_item__init(&wi[i]);
    wi[i].offset = items[i].offset;
    wi[i].attempt = items[i].attempt;
    if (items[i].result) {
      wi[i].has_result = 1;
      wi[i].result.data = (uint8_t *)items[i].result;
      wi[i].result.len = items[i].result_len;
    } else if (items[i].result_len) {
      free(wi);
      free(wp);
      return log_error(NULL, ENGRAM_EINVAL, "ack %s/%s: result is NULL but result_len is %zu",
                       net_str(topic), net_str(group), items[i].result_len);
    }
    wp[i] = &wi[i];
  }
  REQ(ack, ACK, Engram__Wire__Ack, ENGRAM__WIRE__ACK__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.items = wp;
  m.n_items = n;
  Engram__Wire__Reply *rp;
  int rc = rpc(log, &rq, retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_ACK, &rp);
  free(wi);
  free(wp);
  if (rp && rp->result_case == ENGRAM__WIRE__REPLY__RESULT_ACK && rp->ack->n_codes == n) {
    /* Codes the daemon's call left unset come as 1 and stay unset here too. */
    if (codes)
      for (size_t i = 0; i < n; i++)
        if (rp->ack->codes[i] <= 0) codes[i] = rp->ack->codes[i];
  } else if (rp && rc == 0) {
    return bad_reply(log, rp, "ack");
  }
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  return rc;
}

static int r_nack(engram *log, const char *topic, const char *group, uint64_t offset,
                  uint32_t attempt, int64_t delay_ms, const char *error) {
  REQ(nack, NACK, Engram__Wire__Nack, ENGRAM__WIRE__NACK__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.offset = offset;
  m.attempt = attempt;
  m.delay_ms = delay_ms;
  m.has_error = error != NULL;
  m.error = net_str(error);
  return call(log, &rq);
}

static int r_reject(engram *log, const char *topic, const char *group, uint64_t offset,
                    uint32_t attempt, const char *reason) {
  REQ(reject, REJECT, Engram__Wire__Reject, ENGRAM__WIRE__REJECT__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.offset = offset;
  m.attempt = attempt;
  m.has_reason = reason != NULL;
  m.reason = net_str(reason);
  return call(log, &rq);
}

static int r_extend(engram *log, const char *topic, const char *group, uint64_t offset,
                    uint32_t attempt, uint64_t ms) {
  REQ(extend, EXTEND, Engram__Wire__Extend, ENGRAM__WIRE__EXTEND__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.offset = offset;
  m.attempt = attempt;
  m.ms = ms;
  return call(log, &rq);
}

static int r_cancel(engram *log, const char *topic, const char *group, uint64_t offset) {
  REQ(cancel, CANCEL, Engram__Wire__Cancel, ENGRAM__WIRE__CANCEL__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.offset = offset;
  return call(log, &rq);
}

static int r_status_get(engram *log, const char *topic, const char *group, uint64_t offset,
                        engram_status *st) {
  if (!st) return log_error(NULL, ENGRAM_EINVAL, "status: st is NULL");
  memset(st, 0, sizeof *st);
  REQ(status_get, STATUS_GET, Engram__Wire__StatusGet, ENGRAM__WIRE__STATUS_GET__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.offset = offset;
  Engram__Wire__Reply *rp;
  int rc = rpc(log, &rq, retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_STATUS, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  const Engram__Wire__Status *w = rp->status;
  if (w->state > ENGRAM_STATE_SKIPPED ||
      net_copy_text(st->consumer, sizeof st->consumer, w->consumer))
    return bad_reply(log, rp, "status");
  st->state = (engram_event_state)w->state;
  st->attempt = w->attempt;
  st->deadline_ns = w->deadline_ns;
  snprintf(st->last_error, sizeof st->last_error, "%s", w->last_error);
  if (w->has_result) {
    st->result = malloc(w->result.len + 1);
    if (!st->result) {
      engram__wire__reply__free_unpacked(rp, NULL);
      return log_error(NULL, ENGRAM_ENOMEM, "status: out of memory");
    }
    if (w->result.len) memcpy(st->result, w->result.data, w->result.len);
    ((char *)st->result)[w->result.len] = '\0';
    st->result_len = w->result.len;
  }
  engram__wire__reply__free_unpacked(rp, NULL);
  return 0;
}

static int r_dlq_list(engram *log, const char *topic, const char *group, uint64_t from, size_t max,
                      engram_dlq_entry **out, size_t *n) {
  if (!out || !n) return log_error(NULL, ENGRAM_EINVAL, "dlq list: NULL argument");
  *out = NULL;
  *n = 0;
  REQ(dlq_list, DLQ_LIST, Engram__Wire__DlqList, ENGRAM__WIRE__DLQ_LIST__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.from = from;
  m.max = max;
  Engram__Wire__Reply *rp;
  int rc = rpc(log, &rq, retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_DLQ, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  size_t k = rp->dlq->n_entries;
  engram_dlq_entry *list = calloc(k ? k : 1, sizeof *list);
  if (!list) {
    engram__wire__reply__free_unpacked(rp, NULL);
    return log_error(NULL, ENGRAM_ENOMEM, "dlq list: out of memory");
  }
  for (size_t i = 0; i < k; i++) {
    const Engram__Wire__DlqEntry *e = rp->dlq->entries[i];
    if (net_copy_text(list[i].consumer, sizeof list[i].consumer, e->consumer)) {
      free(list);
      return bad_reply(log, rp, "dlq list");
    }
    list[i].offset = e->offset;
    list[i].attempts = e->attempts;
    snprintf(list[i].reason, sizeof list[i].reason, "%s", e->reason);
    snprintf(list[i].last_error, sizeof list[i].last_error, "%s", e->last_error);
    list[i].first_delivered_ns = e->first_delivered_ns;
    list[i].dead_ns = e->dead_ns;
  }
  engram__wire__reply__free_unpacked(rp, NULL);
  *out = list;
  *n = k;
  return 0;
}

static int dlq_select(engram *log, int redrive, const char *topic, const char *group,
                      const uint64_t *offsets, size_t n, size_t *count) {
  if (offsets && n == 0) {
    if (count) *count = 0;
    return 0;
  }
  if (n > NET_MAX_OFFSETS)
    return log_error(NULL, ENGRAM_ETOOBIG, "dlq: %zu offsets over limit %d", n, NET_MAX_OFFSETS);
  Engram__Wire__Request rq = ENGRAM__WIRE__REQUEST__INIT;
  Engram__Wire__DlqSelect m = ENGRAM__WIRE__DLQ_SELECT__INIT;
  if (redrive) {
    rq.op_case = ENGRAM__WIRE__REQUEST__OP_DLQ_REDRIVE;
    rq.dlq_redrive = &m;
  } else {
    rq.op_case = ENGRAM__WIRE__REQUEST__OP_DLQ_PURGE;
    rq.dlq_purge = &m;
  }
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.all = offsets == NULL;
  m.offsets = (uint64_t *)offsets;
  m.n_offsets = offsets ? n : 0;
  Engram__Wire__Reply *rp;
  int rc = rpc(log, &rq, retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_COUNT, &rp);
  if (!rc && count) *count = (size_t)rp->count;
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  return rc;
}

static int r_dlq_purge(engram *log, const char *topic, const char *group, const uint64_t *offsets,
                       size_t n, size_t *count) {
  return dlq_select(log, 0, topic, group, offsets, n, count);
}

static int r_dlq_redrive(engram *log, const char *topic, const char *group, const uint64_t *offsets,
                         size_t n, size_t *count) {
  return dlq_select(log, 1, topic, group, offsets, n, count);
}

/* ---------------------------------------------------------------------------------
 * Pipelined appends.
 * ------------------------------------------------------------------------------ */
struct done_cb {
  engram_append_cb cb;
  void *ctx;
  int rc;
  uint64_t offset;
  int dup;
};

/* The outcome of append `idx` of batch p. */
static void slot_result(struct pend *p, uint32_t idx, struct done_cb *d, const char **msg) {
  d->rc = p->code;
  *msg = p->msg;
  const Engram__Wire__Reply *rp = p->rp;
  if (!rp) return;
  d->rc = rp->code;
  *msg = rp->error;
  if (rp->code > 0 || rp->code < -1000) {
    d->rc = ENGRAM_EPROTO;
    *msg = "reply with an invalid code";
    return;
  }
  if (rp->code) return;
  const Engram__Wire__AppendResult *ar = rp->append;
  if (rp->result_case != ENGRAM__WIRE__REPLY__RESULT_APPEND || ar->n_offsets != p->refs_total ||
      (ar->n_duplicates && ar->n_duplicates != p->refs_total) ||
      (ar->n_codes && ar->n_codes != p->refs_total) ||
      (ar->n_errors && ar->n_errors != p->refs_total)) {
    d->rc = ENGRAM_EPROTO;
    *msg = "malformed append reply from the daemon";
    return;
  }
  d->rc = ar->n_codes ? ar->codes[idx] : 0;
  if (d->rc > 0 || d->rc < -1000) d->rc = ENGRAM_EPROTO;
  *msg = ar->n_errors ? ar->errors[idx] : "";
  d->offset = ar->offsets[idx];
  d->dup = ar->n_duplicates ? ar->duplicates[idx] != 0 : 0;
}

/* Takes finished pipelined appends off the front, in the order they were made, into
 * out[cap]. Called with mu held. */
static size_t pop_done(struct conn *c, struct done_cb *out, size_t cap) {
  size_t k = 0;
  while (k < cap && c->a_count > c->staged) {
    struct aslot *sl = &c->ring[c->a_head];
    if (!sl->p->done) break;
    struct done_cb d = {sl->cb, sl->ctx, 0, 0, 0};
    const char *msg = "";
    slot_result(sl->p, sl->idx, &d, &msg);
    if (d.rc && !c->a_err) {
      c->a_err = d.rc;
      snprintf(c->a_msg, sizeof c->a_msg, "%s", msg && *msg ? msg : engram_strerror(d.rc));
    }
    out[k++] = d;
    if (--sl->p->refs == 0) pend_free(sl->p);
    sl->p = NULL;
    c->a_head = (c->a_head + 1) % c->o.pipeline_window;
    c->a_count--;
  }
  return k;
}

static void run_cbs(const struct done_cb *d, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (d[i].cb) d[i].cb(d[i].ctx, d[i].rc, d[i].offset, d[i].dup);
}

/* Waits for the oldest pipelined append's batch. Called with mu held. */
static void wait_oldest(struct conn *c) {
  if (c->a_count == c->staged) stage_flush(c);
  if (c->a_count > c->staged) wait_pend(c, c->ring[c->a_head].p);
}

/* The flusher: while batches are out and appends staged, it waits for replies so that
 * staged appends leave even when the producer makes no further call. */
static void *flusher_main(void *arg) {
  struct conn *c = arg;
  pthread_mutex_lock(&c->mu);
  while (!c->f_stop) {
    stage_maybe_flush(c);
    if (!c->staged) {
      pthread_cond_wait(&c->f_cv, &c->mu);
      continue;
    }
    if (c->reading) {
      int64_t until = clock_monotonic_ns() + 20000000;
      struct timespec ts = {until / 1000000000, until % 1000000000};
      pthread_cond_timedwait(&c->cv, &c->mu, &ts);
      continue;
    }
    pump(c);
    if (!c->staged || c->a_reqs < MAX_BATCHES_OUT) continue;
    c->reading = 1;
    c->reader = pthread_self();
    pthread_mutex_unlock(&c->mu);
    struct pollfd fds[3] = {
        {c->sock_fd, POLLIN, 0}, {c->mon_fd, POLLIN, 0}, {c->wake_fd, POLLIN, 0}};
    poll(fds, 3, 20);
    if (fds[2].revents & POLLIN) {
      uint64_t v;
      ssize_t r = read(c->wake_fd, &v, sizeof v);
      (void)r;
    }
    pthread_mutex_lock(&c->mu);
    c->reading = 0;
    pump(c);
    pthread_cond_broadcast(&c->cv);
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

static int pipeline_start(engram *log, struct conn *c) {
  if (c->ring) return 0;
  c->ring = calloc(c->o.pipeline_window, sizeof *c->ring);
  c->s_cap = 64 << 10;
  c->sbuf = malloc(c->s_cap);
  c->s_idem = 1;
  if (!c->ring || !c->sbuf) {
    free(c->ring);
    free(c->sbuf);
    c->ring = NULL;
    c->sbuf = NULL;
    return log_error(NULL, ENGRAM_ENOMEM, "append: out of memory");
  }
  if (pthread_create(&c->flusher, NULL, flusher_main, c) != 0)
    return log_error(NULL, ENGRAM_ENOMEM, "append: cannot start a thread");
  c->f_running = 1;
  return 0;
}

static int r_append_async(engram *log, const char *topic, const engram_event *ev,
                          engram_append_cb cb, void *ctx) {
  struct conn *c = C(log);
  /* As the embedded pipeline does: what can be judged here is refused at once. */
  if (!log_valid_name(topic))
    return log_error(NULL, ENGRAM_EINVAL,
                     "append: topic name invalid (use 1-200 of [A-Za-z0-9._-])");
  int rc = log_check_event(NULL, topic, ev, ENGRAM_MAX_PAYLOAD_LIMIT);
  if (rc) return rc;
  struct wev w;
  int idem;
  rc = wev_build(log, topic, ev, 1, &w, &idem);
  if (rc) return rc;
  size_t esz = engram__wire__event__get_packed_size(w.evp[0]);
  if (c->max_message && esz + 4096 > c->max_message) {
    wev_free(&w);
    return log_error(NULL, ENGRAM_ETOOBIG,
                     "append %s: event of %zu bytes over the daemon's request limit of %u", topic,
                     esz, c->max_message);
  }
  struct done_cb done[64];
  size_t nd = 0;
  pthread_mutex_lock(&c->mu);
  if (c->denied) {
    pthread_mutex_unlock(&c->mu);
    wev_free(&w);
    return log_error(NULL, ENGRAM_EDENIED, "%s: the daemon refused this client's CURVE key",
                     c->endpoint);
  }
  if ((rc = pipeline_start(log, c))) {
    pthread_mutex_unlock(&c->mu);
    wev_free(&w);
    return rc;
  }
  /* At the window: wait for the oldest, handing finished ones to their callbacks; and a
   * little past it, so that a producer faster than the daemon wakes once per quarter
   * window rather than once per reply. */
  size_t win = c->o.pipeline_window;
  size_t low = c->a_count >= win ? win - (win + 3) / 4 : SIZE_MAX;
  while (c->a_count > low) {
    wait_oldest(c);
    nd = pop_done(c, done, 64);
    if (nd) {
      pthread_mutex_unlock(&c->mu);
      run_cbs(done, nd);
      pthread_mutex_lock(&c->mu);
      nd = 0;
    }
  }
  /* Stage it: a new topic, a full stage or a stage near the request limit go first. */
  size_t limit = STAGE_MAX_BYTES;
  if (c->max_message && c->max_message / 2 < limit) limit = c->max_message / 2;
  if (c->staged &&
      (strcmp(c->s_topic, topic) || c->staged >= STAGE_MAX_EVENTS || c->s_len + esz + 16 > limit))
    stage_flush(c);
  if (c->s_len + esz + 16 > c->s_cap) {
    size_t cap = c->s_cap;
    while (cap < c->s_len + esz + 16) cap *= 2;
    uint8_t *b = realloc(c->sbuf, cap);
    if (!b) {
      pthread_mutex_unlock(&c->mu);
      wev_free(&w);
      return log_error(NULL, ENGRAM_ENOMEM, "append %s: out of memory", topic);
    }
    c->sbuf = b;
    c->s_cap = cap;
  }
  if (!c->staged) snprintf(c->s_topic, sizeof c->s_topic, "%s", topic);
  c->sbuf[c->s_len++] = 0x12; /* Append.events */
  c->s_len += put_varint(c->sbuf + c->s_len, esz);
  c->s_len += engram__wire__event__pack(w.evp[0], c->sbuf + c->s_len);
  wev_free(&w);
  if (!idem) c->s_idem = 0;
  struct aslot *sl = &c->ring[(c->a_head + c->a_count) % win];
  *sl = (struct aslot){NULL, 0, cb, ctx};
  c->a_count++;
  c->staged++;
  pump_fast(c); /* sends it now when fewer than MAX_BATCHES_OUT batches are out */
  if (c->staged == 1) pthread_cond_signal(&c->f_cv);
  nd = pop_done(c, done, 64);
  pthread_mutex_unlock(&c->mu);
  run_cbs(done, nd);
  return 0;
}

static int r_append_wait(engram *log) {
  struct conn *c = C(log);
  struct done_cb done[64];
  pthread_mutex_lock(&c->mu);
  while (c->a_count) {
    wait_oldest(c);
    size_t nd = pop_done(c, done, 64);
    if (nd) {
      pthread_mutex_unlock(&c->mu);
      run_cbs(done, nd);
      pthread_mutex_lock(&c->mu);
    }
  }
  int rc = c->a_err;
  char msg[256];
  snprintf(msg, sizeof msg, "%s", c->a_msg);
  c->a_err = 0;
  c->a_msg[0] = '\0';
  pthread_mutex_unlock(&c->mu);
  if (rc) return log_error(NULL, rc, "%s", msg);
  return 0;
}

/* One operation of a transaction on the wire, pointing into the engram_txn's copies. */
struct txop {
  Engram__Wire__TxnOp op;
  Engram__Wire__TxnAck ack;
  Engram__Wire__AckItem item;
  Engram__Wire__TxnAppend app;
  struct wev w;
  int built; /* w holds allocations to free */
  uint64_t *out;
};

struct txbuild {
  engram *log;
  struct txop *ops;
  Engram__Wire__TxnOp **opp;
  size_t n, napp;
};

static int tx_add(void *ctx, const txn_op_view *v) {
  struct txbuild *b = ctx;
  struct txop *t = &b->ops[b->n];
  engram__wire__txn_op__init(&t->op);
  if (v->is_append) {
    int idem;
    int rc = wev_build(b->log, v->topic, v->event, 1, &t->w, &idem);
    if (rc) return rc;
    t->built = 1;
    engram__wire__txn_append__init(&t->app);
    t->app.topic = net_str(v->topic);
    t->app.event = t->w.evp[0];
    t->op.op_case = ENGRAM__WIRE__TXN_OP__OP_APPEND;
    t->op.append = &t->app;
    t->out = v->offset_out;
    b->napp++;
  } else {
    engram__wire__ack_item__init(&t->item);
    t->item.offset = v->offset;
    t->item.attempt = v->attempt;
    if (v->result) {
      t->item.has_result = 1;
      t->item.result.data = (uint8_t *)v->result;
      t->item.result.len = v->result_len;
    }
    engram__wire__txn_ack__init(&t->ack);
    t->ack.topic = net_str(v->topic);
    t->ack.group = net_str(v->group);
    t->ack.item = &t->item;
    t->op.op_case = ENGRAM__WIRE__TXN_OP__OP_ACK;
    t->op.ack = &t->ack;
  }
  b->opp[b->n++] = &t->op;
  return 0;
}

/* The daemon applies the whole transaction in one LMDB write transaction (ops.c), so a
 * failure there applies nothing. Not repeated after a lost connection: it may have been
 * applied. */
static int r_txn_commit(engram *log, const struct engram_txn *txn) {
  size_t n = txn_count(txn);
  if (n == 0) { /* as embedded: nothing to apply */
    log_error_clear(NULL);
    return 0;
  }
  if (n > NET_MAX_ITEMS)
    return log_error(NULL, ENGRAM_ETOOBIG, "txn commit: %zu operations over limit %d", n,
                     NET_MAX_ITEMS);
  struct txbuild b = {.log = log, .ops = calloc(n, sizeof *b.ops), .opp = calloc(n, sizeof *b.opp)};
  int rc;
  if (!b.ops || !b.opp) {
    rc = log_error(NULL, ENGRAM_ENOMEM, "txn commit: out of memory");
    goto out;
  }
  rc = txn_each(txn, tx_add, &b);
  if (rc) goto out;
  REQ(txn_commit, TXN_COMMIT, Engram__Wire__TxnCommit, ENGRAM__WIRE__TXN_COMMIT__INIT);
  m.ops = b.opp;
  m.n_ops = b.n;
  Engram__Wire__Reply *rp;
  rc = rpc(log, &rq, retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_TXN, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    goto out;
  }
  if (rp->txn->n_offsets != b.napp) {
    rc = bad_reply(log, rp, "txn commit");
    goto out;
  }
  for (size_t i = 0, k = 0; i < b.n; i++)
    if (b.ops[i].op.op_case == ENGRAM__WIRE__TXN_OP__OP_APPEND) {
      if (b.ops[i].out) *b.ops[i].out = rp->txn->offsets[k];
      k++;
    }
  engram__wire__reply__free_unpacked(rp, NULL);
out:
  if (b.ops)
    for (size_t i = 0; i < b.n; i++)
      if (b.ops[i].built) wev_free(&b.ops[i].w);
  free(b.ops);
  free(b.opp);
  return rc;
}

const struct engram_backend net_remote = {
    .name = "remote",
    .close = r_close,
    .sync = r_sync,
    .backup = r_backup,
    .topic_create = r_topic_create,
    .topic_info_get = r_topic_info_get,
    .topic_list = r_topic_list,
    .topic_drop = r_topic_drop,
    .topic_train_dict = r_topic_train_dict,
    .append = r_append,
    .append_batch = r_append_batch,
    .read = r_read,
    .read_range = r_read_range,
    .verify = r_verify,
    .group_create = r_group_create,
    .group_info_get = r_group_info_get,
    .group_list = r_group_list,
    .group_delete = r_group_delete,
    .group_reset = r_group_reset,
    .fetch = r_fetch,
    .ack_many = r_ack_many,
    .nack = r_nack,
    .reject = r_reject,
    .extend = r_extend,
    .cancel = r_cancel,
    .status_get = r_status_get,
    .dlq_list = r_dlq_list,
    .dlq_purge = r_dlq_purge,
    .dlq_redrive = r_dlq_redrive,
    .append_async = r_append_async,
    .append_wait = r_append_wait,
    .txn_commit = r_txn_commit,
};

/* ---------------------------------------------------------------------------------
 * Connecting.
 * ------------------------------------------------------------------------------ */
static void conn_free(struct conn *c) {
  if (!c) return;
  /* At close no caller waits and engram_append_wait has run: nothing is outstanding
   * unless the connection failed, and then only batches the ring still points at. */
  if (c->f_running) {
    pthread_mutex_lock(&c->mu);
    c->f_stop = 1;
    pthread_cond_broadcast(&c->f_cv);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    uint64_t one = 1;
    ssize_t r = write(c->wake_fd, &one, sizeof one);
    (void)r;
    pthread_join(c->flusher, NULL);
  }
  for (size_t i = 0; c->ring && i < c->a_count; i++) {
    struct aslot *sl = &c->ring[(c->a_head + i) % c->o.pipeline_window];
    if (sl->p && --sl->p->refs == 0) {
      if (!sl->p->done) pend_remove(c, sl->p);
      pend_free(sl->p);
    }
  }
  free(c->ring);
  free(c->sbuf);
  pthread_cond_destroy(&c->f_cv);
  int zero = 0;
  if (c->sock) {
    zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_socket_monitor(c->sock, NULL, 0);
    zmq_close(c->sock);
  }
  if (c->mon) {
    zmq_setsockopt(c->mon, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(c->mon);
  }
  if (c->zctx) zmq_ctx_term(c->zctx);
  if (c->wake_fd >= 0) close(c->wake_fd);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
}

static int zkey(const char *k) {
  unsigned char b[32];
  return k && strlen(k) == 40 && zmq_z85_decode(b, k) != NULL;
}

static int conn_open(struct conn *c, const char *endpoint) {
  static _Atomic uint64_t mon_seq;
  if (!(c->zctx = zmq_ctx_new()))
    return log_error(NULL, ENGRAM_ENOMEM, "connect: cannot make a ZeroMQ context");
  zmq_ctx_set(c->zctx, ZMQ_BLOCKY, 0);
  if (!(c->sock = zmq_socket(c->zctx, ZMQ_DEALER)))
    return log_error(NULL, ENGRAM_ENOMEM, "connect: cannot make a socket: %s", zmq_strerror(errno));
  int one = 1, zero = 0, hwm = 0, ivl = 100, ivl_max = 500, hb = 2000, hbt = 6000;
  zmq_setsockopt(c->sock, ZMQ_IMMEDIATE, &one, sizeof one);
  zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero);
  zmq_setsockopt(c->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt(c->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
  zmq_setsockopt(c->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
  zmq_setsockopt(c->sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
  zmq_setsockopt(c->sock, ZMQ_HEARTBEAT_IVL, &hb, sizeof hb);
  zmq_setsockopt(c->sock, ZMQ_HEARTBEAT_TIMEOUT, &hbt, sizeof hbt);
  if (c->o.server_key) {
    if (zmq_setsockopt(c->sock, ZMQ_CURVE_SERVERKEY, c->server_key, 41) ||
        zmq_setsockopt(c->sock, ZMQ_CURVE_PUBLICKEY, c->public_key, 41) ||
        zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, c->secret_key, 41))
      return log_error(NULL, ENGRAM_EINVAL, "connect %s: CURVE setup failed: %s", endpoint,
                       zmq_strerror(errno));
  }
  char mon_ep[64];
  snprintf(mon_ep, sizeof mon_ep, "inproc://engram-monitor-%llu", (unsigned long long)++mon_seq);
  if (zmq_socket_monitor(c->sock, mon_ep,
                         ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_CONNECT_RETRIED) ||
      !(c->mon = zmq_socket(c->zctx, ZMQ_PAIR)) || zmq_connect(c->mon, mon_ep))
    return log_error(NULL, ENGRAM_ENOMEM, "connect %s: cannot monitor the socket: %s", endpoint,
                     zmq_strerror(errno));
  size_t sz = sizeof c->sock_fd;
  zmq_getsockopt(c->sock, ZMQ_FD, &c->sock_fd, &sz);
  sz = sizeof c->mon_fd;
  zmq_getsockopt(c->mon, ZMQ_FD, &c->mon_fd, &sz);
  if ((c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
    return log_error(NULL, ENGRAM_EIO, "connect: eventfd: %s", strerror(errno));
  if (zmq_connect(c->sock, endpoint) != 0)
    return log_error(NULL, ENGRAM_EINVAL, "connect %s: %s", endpoint, zmq_strerror(errno));
  return 0;
}

int net_connect(const char *endpoint, const engram_connect_options *opts, engram **out) {
  engram_connect_options o = opts ? *opts : (engram_connect_options){0};
  if (o.timeout_ms > ENGRAM_MAX_TIMEOUT_MS)
    return log_error(NULL, ENGRAM_EINVAL, "connect %s: timeout_ms %u over the limit of %u (1 day)",
                     endpoint, o.timeout_ms, ENGRAM_MAX_TIMEOUT_MS);
  if (!o.timeout_ms) o.timeout_ms = NET_DEFAULT_TIMEOUT_MS;
  if (!o.pipeline_window) o.pipeline_window = NET_DEFAULT_WINDOW;
  if (o.pipeline_window > NET_MAX_WINDOW)
    return log_error(NULL, ENGRAM_EINVAL, "connect %s: pipeline window %u over limit %d", endpoint,
                     o.pipeline_window, NET_MAX_WINDOW);
  if (o.server_key || o.public_key || o.secret_key) {
    if (!zmq_has("curve"))
      return log_error(NULL, ENGRAM_ENOTSUP, "connect: this libzmq has no CURVE support");
    if (!zkey(o.server_key) || !zkey(o.public_key) || !zkey(o.secret_key))
      return log_error(NULL, ENGRAM_EINVAL,
                       "connect %s: CURVE needs the server key and this client's key pair, 40 Z85 "
                       "characters each",
                       endpoint);
  }
  struct conn *c = calloc(1, sizeof *c);
  engram *log = NULL;
  if (!c || api_handle_new(&net_remote, c, &log)) {
    free(c);
    free(log);
    return log_error(NULL, ENGRAM_ENOMEM, "connect: out of memory");
  }
  c->wake_fd = -1;
  pthread_mutex_init(&c->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->cv, &ca);
  pthread_cond_init(&c->f_cv, &ca);
  pthread_condattr_destroy(&ca);
  snprintf(c->endpoint, sizeof c->endpoint, "%s", endpoint);
  c->o = o;
  if (o.server_key) {
    snprintf(c->server_key, sizeof c->server_key, "%s", o.server_key);
    snprintf(c->public_key, sizeof c->public_key, "%s", o.public_key);
    snprintf(c->secret_key, sizeof c->secret_key, "%s", o.secret_key);
    c->o.server_key = c->server_key;
    c->o.public_key = c->public_key;
    c->o.secret_key = c->secret_key;
  }
  int rc = conn_open(c, endpoint);
  if (rc) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", engram_errmsg(NULL));
    conn_free(c);
    free(log);
    return log_error(NULL, rc, "%s", msg);
  }
  /* Hello: proves the daemon is there and speaks our protocol. */
  REQ(hello, HELLO, Engram__Wire__Hello, ENGRAM__WIRE__HELLO__INIT);
  m.client = "engram-c " ENGRAM_VERSION_STRING;
  Engram__Wire__Reply *rp;
  rc = rpc(log, &rq, retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_HELLO, &rp);
  if (!rc && (rp->version != ENGRAM_PROTOCOL_VERSION ||
              rp->hello->protocol_version != ENGRAM_PROTOCOL_VERSION))
    rc = log_error(NULL, ENGRAM_EVERSION,
                   "connect %s: the daemon speaks protocol %u, this client %d", endpoint,
                   rp->hello->protocol_version, ENGRAM_PROTOCOL_VERSION);
  if (!rc) c->max_message = rp->hello->max_message;
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  if (rc) {
    if (rc == ENGRAM_ETIMEDOUT) rc = ENGRAM_ECONN;
    char msg[512];
    snprintf(msg, sizeof msg, "connect %s", engram_errmsg(log));
    if (strncmp(engram_errmsg(log), endpoint, strlen(endpoint)) != 0)
      snprintf(msg, sizeof msg, "connect %s: %s", endpoint, engram_errmsg(log));
    conn_free(c);
    free(log);
    return log_error(NULL, rc, "%s", msg);
  }
  *out = log;
  return 0;
}
