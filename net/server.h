/* server.h — what the daemon's files (server*.c) share: its state, its jobs, and the
 * functions one file calls in another. Private to them.
 *
 * The daemon (engram serve): one thread owns the ZeroMQ sockets, a pool of workers runs
 * requests on the embedded handle, appends of each client run in order and in batches,
 * and long-poll fetches wait parked instead of holding a worker.
 *
 * Threads. The main thread alone touches the ROUTER (requests in, replies out), the PUB
 * (notifications) and the notify-in PULL (commits of embedded writers in other
 * processes). It hands requests to workers through a queue under `mu`; workers send
 * replies back over inproc PUSH sockets, one per worker, to a PULL the main thread
 * forwards to the ROUTER. An eventfd wakes the main thread for a stop request, a
 * notification to publish or a newly parked fetch.
 *
 * Appends. The appends of one client connection form a lane: a worker takes every
 * append queued on every ready lane at once, so a pipelining client's events keep their
 * order and the appends of all connections share one commit (consecutive appends to one
 * topic become one engram_append_batch).
 *
 * An idle daemon runs a quick request on the main thread itself (server_loop.c,
 * run_here): no hand-off to a worker and back. So are the appends of a burst of requests
 * when no worker is busy (run_burst_here): one commit for every connection's appends.
 *
 * Long polls. A fetch runs with no wait; when it finds nothing it is parked with the
 * topic's change sequence. A commit on the topic (from any worker, or from another
 * process through notify-in) or a group change made here moves its parked fetches back
 * to the queue (a commit the main thread made runs the first few of them right there); the main
 * thread also requeues them every PARK_RECHECK_MS (leases that expire and retry delays that pass
 * announce themselves to nobody) and at their deadline, when the last look answers whatever it
 * finds.
 */
#ifndef ENGRAM_NET_SERVER_H
#define ENGRAM_NET_SERVER_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "net/net.h"

#define PARK_RECHECK_MS 100
#define MAX_QUEUED 20000 /* requests waiting for a worker before the ROUTER is left unread */
#define MAX_PARKED 100000
#define LANE_TAKE 1024 /* appends one worker takes from a lane at once */
#define LANE_BUCKETS 1024
#define SEQ_BUCKETS 1024
#define MAX_TOPIC_SEQS 100000
#define RECV_BURST 512 /* requests read per wake before looking at replies again */
#define REPLIES_EP "inproc://engram-replies"
#define ACCEPT_MON_EP "inproc://engram-accept-monitor"
#define ZAP_EP "inproc://zeromq.zap.01"
#define LOG_BURST 20 /* client-error lines per second before suppressing */

struct job {
  struct job *next;
  zmq_msg_t ident; /* the ROUTER routing id of the client */
  int delim;       /* the client sent an empty delimiter frame (REQ socket) */
  zmq_msg_t body;  /* the request frame */
  net_peek pk;
  Engram__Wire__Request *rq; /* decoded by the worker; kept while parked */
  net_arena rq_mem;          /* where rq was decoded (net_request_unpack_in) */
  struct lane *lane;         /* appends: the client's lane */
  int64_t received_ns;       /* monotonic */
  int64_t deadline_ns;       /* fetch: end of its long poll */
  int64_t recheck_ns;        /* parked: next look regardless of notifications */
  uint32_t seq;              /* fetch: the topic's change sequence before its last look */
  int final;                 /* fetch: answer after this look, whatever it finds */
  int acked;                 /* ack-fetch: its acks are committed; it looks again as a fetch */
  int held;                  /* ack-fetch: it parked once with its acks held, uncommitted */
  uint64_t ack_mark;         /* ack-fetch: its acks were committed without their flush; the
                                answer waits for a flush that covers this (0: none) */
};

/* The appends of one client connection, run in order. */
struct lane {
  struct lane *next; /* hash chain */
  struct lane *next_ready;
  struct job *head, *tail;
  int busy;  /* a worker runs its appends */
  int ready; /* on the ready list */
  size_t id_len;
  unsigned char id[];
};

/* A topic's change sequence: bumped by commits and group changes. */
struct tseq {
  struct tseq *next;
  uint32_t seq;
  uint64_t head; /* newest head to publish */
  int dirty;     /* head not yet published */
  struct tseq *next_dirty;
  char name[];
};

struct net_server {
  engram *log;
  char dir[4096];
  engram_serve_options o;
  int log_json;
  void *zctx, *router, *pub, *in_pull, *replies, *zap;
  void *accept_mon;            /* PAIR: the ROUTER's failed accepts (out of descriptors) */
  uint64_t accept_failed;      /* failed accepts not yet logged */
  int accept_errno;            /* the last one's reason */
  int64_t accept_logged_ns;    /* when the last line about them was logged */
  uint64_t nofile, nofile_was; /* the soft limit of open files, and before serve raised it */
  char listen_ep[512], notify_ep[600], in_path[512], notify_path[512];
  int wake_fd;
  int lock_fd;

  pthread_mutex_t mu;
  pthread_cond_t cv; /* workers wait for jobs */
  struct job *q_head, *q_tail;
  struct job *w_head, *w_tail; /* parked fetches a commit woke: run before anything else */
  size_t queued;               /* jobs in the queues and in lanes */
  struct lane *lanes[LANE_BUCKETS];
  struct lane *ready_head, *ready_tail;
  struct job *parked;
  size_t n_parked;
  struct tseq *seqs[SEQ_BUCKETS];
  size_t n_seqs;
  struct tseq *dirty;    /* topics with a head to publish */
  int stopping;          /* no new requests; parked fetches answer now */
  int exiting;           /* workers leave when the queue is empty */
  int running;           /* jobs being executed */
  int park_signal;       /* main thread must look at the parked list */
  int hold;              /* the main thread is reading a burst of requests and may run
                            them itself: lanes made ready and requests queued wake nobody */
  pthread_t main_thread; /* runs server_main_loop */
  int ack_hold_ms;       /* how long a parked ack-fetch holds its acks uncommitted:
                            CG_ACK_HOLD_MS, or ENGRAM_TEST_ACK_HOLD_MS (tests) */
  int test_ack_no_flush; /* the power-cut test's control (ENGRAM_TEST_ACK_NO_FLUSH): parked
                            ack-fetches answered without the flush their acks wait for */

  pthread_t *workers;
  int n_workers;
  pthread_t zap_thread;
  int zap_running;
  _Atomic int zap_stop;
  pthread_mutex_t allow_mu;   /* guards allow, n_allow: a SIGHUP swaps them */
  unsigned char (*allow)[32]; /* allow_keys, then the keys of allow_keys_file */
  size_t n_allow;

  _Atomic uint64_t requests, errors, bad, appended, notifications;
  int64_t started_ns;

  struct http_server *http; /* the dashboard and /metrics (http.c), NULL = off */
  char http_ep[128];        /* its bound HOST:PORT */

  int journal;            /* stderr is the journal: log lines carry "<N>" priorities */
  int log_fd;             /* where log lines go: stderr, or log_file (reopened on SIGHUP) */
  pthread_mutex_t log_mu; /* rate limit of client-error lines */
  int64_t log_window;
  int log_count, log_dropped;
  int64_t trouble_window; /* the second of the last storage-trouble line (server_trouble) */
  int trouble_dropped;    /* such lines not logged since */
};

/* A worker thread: its reply socket and its turn between plain requests and lanes. */
struct worker {
  struct net_server *s;
  void *push;
  unsigned turn;
};

/* Set by engram_serve_stop() (and SIGTERM, SIGINT); the main loop then stops. */
extern volatile sig_atomic_t server_stop_requested;
/* Set by SIGHUP: the main loop reloads the allow-list, reopens the log file and goes on
 * serving (server_reload). */
extern volatile sig_atomic_t server_hup_requested;

/* Under a service manager (server_systemd.c). */
/* Sends state ("READY=1", "STOPPING=1" ...) to $NOTIFY_SOCKET, when set (sd_notify). */
void server_sd_notify(const char *state);
/* 1 when stderr is the stream $JOURNAL_STREAM names. */
int server_stderr_is_journal(void);
/* The syslog priority of a log level: error 3, warn 4, else 6 (info). */
int server_log_priority(const char *level);
/* One "admin" line for a destructive operation that succeeded: what, and who asked (the
 * peer's address and, with CURVE, its public key). */
void server_log_admin(struct net_server *s, zmq_msg_t *body, const char *op, const char *what);

/* CURVE's allow-list (server_zap.c): allow_keys and the keys of allow_keys_file decoded
 * into s->allow. At start a file that does not read fails (-ENGRAM_E*, message naming
 * FILE:LINE); on a reload it is logged and the old list kept. */
int server_allow_load(struct net_server *s, int reload);

/* Logging (server_log.c): one line per notable event, text or JSON, client text escaped. */
/* Opens log_file (when set) as s->log_fd; on a reload opens it again in place of the old
 * one (logrotate moved it), logging what failed and keeping the old one then. */
int server_log_open(struct net_server *s, int reload);
/* Logs a request that failed for the daemon's own reason (a full disk, an I/O error,
 * damage, memory, a bug: never the client's), at most one line a second, counting the
 * rest; other codes log nothing. */
void server_trouble(struct net_server *s, int code, const char *op, const char *why);
void server_log(struct net_server *s, const char *level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Whether another client-error line fits this second (LOG_BURST); *dropped: lines
 * suppressed in the second before, to report. */
int server_client_log_ok(struct net_server *s, int *dropped);
/* Logs a client's error, rate-limited: its peer address, the operation, code and text. */
void server_client_error(struct net_server *s, zmq_msg_t *body, int code, const char *op,
                         const char *why);

/* Topic sequences, parking, notifications (server_park.c); the _locked ones and the
 * tseq lookups under s->mu. */
unsigned server_hash(const void *p, size_t n);
struct tseq *server_tseq_lookup(struct net_server *s, const char *topic, int create);
struct tseq *server_tseq_get(struct net_server *s, const char *topic);
void server_wake_main(struct net_server *s);
void server_enqueue(struct net_server *s, struct job *j);
void server_topic_changed_locked(struct net_server *s, const char *topic, int signal);
void server_on_commit(void *ctx, const char *topic, uint64_t head);
void server_publish(struct net_server *s, const char *topic, uint64_t head);
void server_publish_dirty(struct net_server *s);

/* Replies and workers (server_worker.c). */
void server_job_free(struct job *j);
/* The topic of a decoded fetch or ack-fetch (a job that may be parked). */
const char *server_job_topic(const struct job *j);
void server_reply_send(struct net_server *s, void *sock, struct job *j, Engram__Wire__Reply *rp);
void server_reply_error(struct net_server *s, void *sock, struct job *j, int code, const char *why);
int server_prepare(struct net_server *s, struct worker *w, struct job *j);
void server_run_one(struct net_server *s, struct worker *w, struct job *j);
/* Runs one request of any kind: decoded, then a fetch (maybe parked), an append (as a
 * lane of one) or any other operation; its reply leaves through w->push. */
void server_run_job(struct net_server *s, struct worker *w, struct job *j);
/* Puts a lane with appends on the ready list and wakes a worker for it (unless the main
 * thread holds the burst for itself: hold). */
void server_lane_ready_locked(struct net_server *s, struct lane *l);
/* Takes the first job off a queue (head, tail: s->q_head or s->w_head and their tails). */
struct job *server_job_pop_locked(struct net_server *s, struct job **head, struct job **tail);
size_t server_lanes_take_locked(struct net_server *s, struct lane **taken, struct job **list);
void server_lanes_give_locked(struct net_server *s, struct lane **taken, size_t nl);
void *server_worker_thread(void *arg);

/* Appends (server_append.c): runs a list of jobs taken from one lane, in order. */
void server_run_lane(struct net_server *s, struct worker *w, struct job *list);

/* The main thread (server_loop.c). */
int server_forward_replies(struct net_server *s);
void server_main_loop(struct net_server *s);

/* CURVE (server_zap.c). */
void *server_zap_main(void *arg);
int server_valid_z85_key(const char *k, unsigned char out[32]);

#endif
