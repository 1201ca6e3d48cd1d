/* client_conn.c — the connection of a remote handle (engram_connect): every API call becomes a
 * request to `engram serve` over one DEALER socket, with ids, timeouts, pipelining and reconnects.
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

#include "net/client.h"

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

void client_pend_free(struct pend *p) {
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
    c->sends++;
  }
}

size_t client_put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

/* Sends the staged appends as one request. Called with mu held. */
void client_stage_flush(struct conn *c) {
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
  hl += client_put_varint(hdr + hl, tl);
  size_t in_len = hl + tl + c->s_len + 2;
  size_t n = 0;
  buf[n++] = 0x08; /* version */
  n += client_put_varint(buf + n, ENGRAM_PROTOCOL_VERSION);
  buf[n++] = 0x10; /* id */
  n += client_put_varint(buf + n, id);
  n += client_put_varint(buf + n, (ENGRAM__WIRE__REQUEST__OP_APPEND << 3) | 2);
  n += client_put_varint(buf + n, in_len);
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

void client_stage_maybe_flush(struct conn *c) {
  if (c->staged && c->a_reqs < MAX_BATCHES_OUT) client_stage_flush(c);
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

/* Ends every request in flight with `code` and "ENDPOINT: what". */
static void fail_inflight(struct conn *c, int code, const char *what) {
  char msg[700];
  snprintf(msg, sizeof msg, "%s: %s", c->endpoint, what);
  for (int b = 0; b < PEND_BUCKETS; b++)
    while (c->inflight[b]) pend_finish(c, c->inflight[b], NULL, code, msg);
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
    } else if (event == ZMQ_EVENT_CONNECTED) {
      c->tcp_reached = 1;
    } else if ((event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL ||
                event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) &&
               !c->ever_up) {
      /* A daemon whose CURVE setting is not this client's ends the handshake: say which
       * way now rather than as a timeout. */
      fail_inflight(c, ENGRAM_EDENIED,
                    c->o.server_key
                        ? "the daemon ended ZeroMQ's handshake: it does not use CURVE, or not "
                          "with this server key"
                        : "the daemon ended ZeroMQ's handshake: it requires CURVE (give its "
                          "public key and this client's key pair: --server-key and "
                          "--client-key-file, server_key in the API)");
    } else if (event == ZMQ_EVENT_CONNECT_RETRIED && !c->ever_up) {
      /* engram_connect to where nothing listens: say so now rather than at the timeout.
       * Later, with a handle in use, a daemon being restarted is waited for. */
      fail_inflight(c, ENGRAM_ECONN, "cannot reach the daemon (connection refused)");
    } else if (event == ZMQ_EVENT_DISCONNECTED) {
      /* Whatever `up` said: a request written since the last look may have gone to the
       * connection that just died. */
      c->up = 0;
      connection_lost(c);
    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      c->denied = 1;
      fail_inflight(c, ENGRAM_EDENIED, "the daemon refused this client's CURVE key");
    }
  }
}

/* Everything one look at the sockets can do without sleeping. Each look at a socket is
 * two system calls inside libzmq (a poll and a getpid), dearer than a small request on a
 * virtual machine, so it looks only where something can be: the monitor when its fd
 * woke the last poll, while no connection is up or requests wait to be sent, and now and
 * then; the socket again only when a request left meanwhile (a send may take libzmq's
 * pending commands, which must be settled before the next sleep on its fd). */
void client_pump(struct conn *c) {
  /* Counted from the start: the look at the monitor sends the requests that waited for
   * the handshake, and a send may take the socket's wake-up for a reply. */
  uint64_t sends = c->sends;
  drain_data(c);
  if (c->mon_ready || !c->up || c->n_unsent || (++c->pumps & 63) == 0) {
    c->mon_ready = 0;
    drain_monitor(c);
  }
  client_stage_maybe_flush(c);
  flush_unsent(c);
  if (c->sends != sends) drain_data(c);
}

/* The cheap look a pipelining producer takes on every call: the monitor (a lost
 * connection) only now and then, and always when someone waits. */
void client_pump_fast(struct conn *c) {
  flush_unsent(c);
  drain_replies(c, 0);
  if ((++c->pumps & 31) == 0) drain_monitor(c);
  client_stage_maybe_flush(c);
}

static void expire(struct conn *c, struct pend *p) {
  char msg[700];
  if (c->denied)
    snprintf(msg, sizeof msg, "%s: the daemon refused this client's CURVE key", c->endpoint);
  else if (p->sent)
    snprintf(msg, sizeof msg, "%s: no reply within %u ms", c->endpoint, c->o.timeout_ms);
  else if (c->tcp_reached && !c->ever_up) /* e.g. the daemon's --http port, or not engram */
    snprintf(msg, sizeof msg,
             "%s: cannot reach the daemon (something accepts connections there but did not "
             "answer ZeroMQ's handshake within %u ms: is it engram serve's --listen endpoint?)",
             c->endpoint, c->o.timeout_ms);
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
int client_poll(struct conn *c, int ms) {
  struct pollfd fds[3] = {{c->sock_fd, POLLIN, 0}, {c->mon_fd, POLLIN, 0}, {c->wake_fd, POLLIN, 0}};
  poll(fds, 3, ms);
  if (fds[2].revents & POLLIN) {
    uint64_t v;
    ssize_t r = read(c->wake_fd, &v, sizeof v);
    (void)r;
  }
  return (fds[1].revents & POLLIN) != 0;
}

void client_wait_pend(struct conn *c, struct pend *p) {
  while (!p->done) {
    client_pump(c);
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
    int64_t ms = (p->deadline_ns - now + 999999) / 1000000;
    /* Unsent requests wait for a connection: look again now and then, as libzmq
     * signals a new connection on the monitor but not always on the socket. Read under
     * mu: another thread queues requests meanwhile. */
    if (c->n_unsent && ms > 50) ms = 50;
    pthread_mutex_unlock(&c->mu);
    int mon = client_poll(c, ms > 1000000 ? 1000000 : (int)ms);
    pthread_mutex_lock(&c->mu);
    c->mon_ready |= mon;
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
  client_stage_flush(c); /* requests leave in the order they were made */
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
int client_rpc(engram *log, Engram__Wire__Request *rq, int retry, uint64_t extra_ms, int want,
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
  client_wait_pend(c, p);
  pthread_mutex_unlock(&c->mu);
  if (!p->rp) {
    rc = log_error(NULL, p->code, "%s", p->msg);
    client_pend_free(p);
    return rc;
  }
  Engram__Wire__Reply *rp = p->rp;
  p->rp = NULL;
  client_pend_free(p);
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
int client_retry_of(const Engram__Wire__Request *rq) {
  return net_op_retry(rq->op_case) == NET_RETRY_SAFE;
}

int client_call(engram *log, Engram__Wire__Request *rq) {
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, rq, client_retry_of(rq), 0, ENGRAM__WIRE__REPLY__RESULT__NOT_SET, &rp);
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  return rc;
}

int client_bad_reply(engram *log, Engram__Wire__Reply *rp, const char *what) {
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  return log_error(NULL, ENGRAM_EPROTO, "%s: %s: malformed reply from the daemon", C(log)->endpoint,
                   what);
}

/* ---------------------------------------------------------------------------------
 * Connecting.
 * ------------------------------------------------------------------------------ */
/* One ZeroMQ context for every connection of a process: its one I/O thread serves them
 * all, where a context per connection gave each its own (eight connections on two cores
 * measured 0.97-1.29x the appends/s with one, nine pairs of ten ahead). Made by the first
 * connection, ended with the last; a forked child never touches the one it inherited (a
 * context does not survive a fork) and makes its own. */
static struct {
  pthread_mutex_t mu;
  void *ctx;
  size_t users;
  pid_t pid; /* the process that made it */
} shared_ctx = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0};

static void *ctx_take(void) {
  pthread_mutex_lock(&shared_ctx.mu);
  if (shared_ctx.ctx && shared_ctx.pid != self_pid()) { /* the parent's, before a fork */
    shared_ctx.ctx = NULL;
    shared_ctx.users = 0;
  }
  if (!shared_ctx.ctx && (shared_ctx.ctx = net_zmq_ctx_new()) != NULL) {
    zmq_ctx_set(shared_ctx.ctx, ZMQ_BLOCKY, 0);
    shared_ctx.pid = self_pid();
  }
  void *ctx = shared_ctx.ctx;
  if (ctx) shared_ctx.users++;
  pthread_mutex_unlock(&shared_ctx.mu);
  return ctx;
}

/* Called once the connection's sockets are closed. */
static void ctx_give(void *ctx) {
  void *end = NULL;
  pthread_mutex_lock(&shared_ctx.mu);
  if (ctx == shared_ctx.ctx && shared_ctx.pid == self_pid() && --shared_ctx.users == 0) {
    end = ctx;
    shared_ctx.ctx = NULL;
  }
  pthread_mutex_unlock(&shared_ctx.mu);
  if (end) zmq_ctx_term(end);
}

void client_conn_free(struct conn *c) {
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
      client_pend_free(sl->p);
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
  if (c->zctx) ctx_give(c->zctx);
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
  if (!(c->zctx = ctx_take()))
    return log_error(NULL, ENGRAM_ENOMEM, "connect: cannot make a ZeroMQ context");
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
                         ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED |
                             ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                             ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_CONNECT_RETRIED) ||
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
  int bad = net_endpoint_check("connect", endpoint, 0);
  if (bad) return bad;
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
  c->mon_ready = 1;
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
    client_conn_free(c);
    free(log);
    return log_error(NULL, rc, "%s", msg);
  }
  /* Hello: proves the daemon is there and speaks our protocol. */
  REQ(hello, HELLO, Engram__Wire__Hello, ENGRAM__WIRE__HELLO__INIT);
  m.client = "engram-c " ENGRAM_VERSION_STRING;
  Engram__Wire__Reply *rp;
  rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_HELLO, &rp);
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
    client_conn_free(c);
    free(log);
    return log_error(NULL, rc, "%s", msg);
  }
  *out = log;
  return 0;
}
