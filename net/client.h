/* client.h — what the files of the remote backend share (client_conn.c: the connection,
 * requests and replies; client_ops.c: the remote calls; client_pipeline.c: pipelined
 * appends). Private to net/. */
#ifndef ENGRAM_NET_CLIENT_H
#define ENGRAM_NET_CLIENT_H

#include <pthread.h>

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
  int mon_ready;   /* the monitor's fd woke a poll (or has not been looked at yet) */
  uint64_t sends;  /* requests handed to libzmq */
  int up;          /* a connection is established */
  int ever_up;     /* one was, since engram_connect */
  int tcp_reached; /* a TCP connection was made (whether or not ZeroMQ's handshake followed) */
  int denied;      /* the daemon refused our CURVE key */
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

static inline struct conn *C(engram *log) { return log->state; }

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

/* A request of operation CASE with its message `m` (type msgtype, initialised by INIT). */
#define REQ(field, CASE, msgtype, INIT)                   \
  Engram__Wire__Request rq = ENGRAM__WIRE__REQUEST__INIT; \
  msgtype m = INIT;                                       \
  rq.op_case = ENGRAM__WIRE__REQUEST__OP_##CASE;          \
  rq.field = &m

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

void client_pend_free(struct pend *p);
size_t client_put_varint(uint8_t *p, uint64_t v);
void client_stage_flush(struct conn *c);
void client_stage_maybe_flush(struct conn *c);
void client_pump(struct conn *c);
void client_pump_fast(struct conn *c);
void client_wait_pend(struct conn *c, struct pend *p);
/* The reader's wait, without c->mu: up to ms for the socket, the monitor or a wake-up
 * (then drained). */
/* Sleeps until a socket or the wake-up fd is ready, or ms pass. Called without mu; returns
 * 1 when the monitor's fd is ready (the caller sets mon_ready under mu). */
int client_poll(struct conn *c, int ms);
int client_rpc(engram *log, Engram__Wire__Request *rq, int retry, uint64_t extra_ms, int want,
               Engram__Wire__Reply **out);
int client_retry_of(const Engram__Wire__Request *rq);
int client_call(engram *log, Engram__Wire__Request *rq);
int client_bad_reply(engram *log, Engram__Wire__Reply *rp, const char *what);
void client_conn_free(struct conn *c);
void client_wev_free(struct wev *w);
int client_wev_build(engram *log, const char *topic, const engram_event *evs, size_t n,
                     struct wev *w, int *all_idem);
int client_append_async(engram *log, const char *topic, const engram_event *ev, engram_append_cb cb,
                        void *ctx);
int client_append_wait(engram *log);

#endif
