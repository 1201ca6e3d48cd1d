/* server.c — the daemon (engram serve): one thread owns the ZeroMQ sockets, a pool of
 * workers runs requests on the embedded handle, appends of each client run in order and
 * in batches, and long-poll fetches wait parked instead of holding a worker.
 *
 * Threads. The main thread alone touches the ROUTER (requests in, replies out), the PUB
 * (notifications) and the notify-in PULL (commits of embedded writers in other
 * processes). It hands requests to workers through a queue under `mu`; workers send
 * replies back over inproc PUSH sockets, one per worker, to a PULL the main thread
 * forwards to the ROUTER. An eventfd wakes the main thread for a stop request, a
 * notification to publish or a newly parked fetch.
 *
 * Appends. The appends of one client connection form a lane: a worker takes every
 * append queued on the lane at once, so a pipelining client's events keep their order
 * and share one commit (consecutive appends to one topic become one
 * engram_append_batch). Lanes of different clients run on different workers, whose
 * commits the library's group commit shares.
 *
 * Long polls. A fetch runs with no wait; when it finds nothing it is parked with the
 * topic's change sequence. A commit on the topic (from any worker, or from another
 * process through notify-in) or a group change made here moves its parked fetches back
 * to the queue; the main thread also requeues them every PARK_RECHECK_MS (leases that
 * expire and retry delays that pass announce themselves to nobody) and at their
 * deadline, when the last look answers whatever it finds.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
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
#define ZAP_EP "inproc://zeromq.zap.01"
#define LOG_BURST 20 /* client-error lines per second before suppressing */

struct job {
  struct job *next;
  zmq_msg_t ident; /* the ROUTER routing id of the client */
  int delim;       /* the client sent an empty delimiter frame (REQ socket) */
  zmq_msg_t body;  /* the request frame */
  net_peek pk;
  Engram__Wire__Request *rq; /* decoded by the worker; kept while parked */
  struct lane *lane;         /* appends: the client's lane */
  int64_t received_ns;       /* monotonic */
  int64_t deadline_ns;       /* fetch: end of its long poll */
  int64_t recheck_ns;        /* parked: next look regardless of notifications */
  uint32_t seq;              /* fetch: the topic's change sequence before its last look */
  int final;                 /* fetch: answer after this look, whatever it finds */
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
  struct tseq *dirty; /* topics with a head to publish */
  int stopping;       /* no new requests; parked fetches answer now */
  int exiting;        /* workers leave when the queue is empty */
  int running;        /* jobs being executed */
  int park_signal;    /* main thread must look at the parked list */

  pthread_t *workers;
  int n_workers;
  pthread_t zap_thread;
  int zap_running;
  _Atomic int zap_stop;
  unsigned char (*allow)[32];
  size_t n_allow;

  _Atomic uint64_t requests, errors, bad, appended, notifications;
  int64_t started_ns;

  pthread_mutex_t log_mu; /* rate limit of client-error lines */
  int64_t log_window;
  int log_count, log_dropped;
};

static volatile sig_atomic_t stop_requested;
static volatile int stop_fd = -1;
static _Atomic int serving;

void net_serve_stop(void) {
  stop_requested = 1;
  int fd = stop_fd;
  if (fd >= 0) {
    uint64_t one = 1;
    ssize_t r = write(fd, &one, sizeof one);
    (void)r;
  }
}

static void on_signal(int sig) {
  (void)sig;
  engram_serve_stop();
}

/* ---------------------------------------------------------------------------------
 * Logging: one line per notable event, text or JSON.
 * ------------------------------------------------------------------------------ */
/* The length of the well-formed UTF-8 sequence at s (1..4) with its code point in *u;
 * 0 when the bytes there are not UTF-8. */
static size_t utf8_seq(const unsigned char *s, uint32_t *u) {
  unsigned char c = s[0];
  size_t k;
  uint32_t v, lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
  if (c < 0x80) {
    *u = c;
    return 1;
  } else if (c >= 0xC2 && c <= 0xDF) {
    k = 2, v = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    k = 3, v = c & 0x0F;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    k = 4, v = c & 0x07;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (s[1] < lo || s[1] > hi) return 0; /* also stops at the NUL */
  for (size_t i = 1; i < k; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    v = (v << 6) | (s[i] & 0x3F);
  }
  *u = v;
  return k;
}

/* Log lines carry text from clients (names, patterns, messages quoting them): written
 * raw, an ESC or a C1 CSI in it would drive the terminal of whoever tails the log. So
 * every control character is escaped: C0 and DEL as \xHH (\n \t \r by name) in text and
 * \u00HH in JSON, C1 controls and Unicode's invisible line and direction controls as
 * \uHHHH, bytes that are not UTF-8 as \xHH (in JSON a literal "\\xHH"), and '\' (and in
 * JSON '"') with a backslash. Printable UTF-8 is kept. out is cut between characters. */
static void log_escape(char *out, size_t cap, const char *s, int json) {
  size_t o = 0;
  while (*s) {
    const unsigned char *p = (const unsigned char *)s;
    char e[16];
    size_t el;
    uint32_t u;
    size_t k = utf8_seq(p, &u);
    if (k == 0) {
      el = (size_t)snprintf(e, sizeof e, json ? "\\\\x%02x" : "\\x%02x", p[0]);
      k = 1;
    } else if (u == '\\' || (json && u == '"')) {
      e[0] = '\\', e[1] = (char)u, el = 2;
    } else if (u == '\n' || u == '\t' || u == '\r') {
      e[0] = '\\', e[1] = u == '\n' ? 'n' : u == '\t' ? 't' : 'r', el = 2;
    } else if (u < 0x20 || u == 0x7F) {
      el = (size_t)snprintf(e, sizeof e, json ? "\\u%04x" : "\\x%02x", (unsigned)u);
    } else if ((u >= 0x80 && u <= 0x9F) || u == 0x061C || u == 0x200E || u == 0x200F ||
               (u >= 0x2028 && u <= 0x202E) || (u >= 0x2066 && u <= 0x2069)) {
      el = (size_t)snprintf(e, sizeof e, "\\u%04x", (unsigned)u);
    } else {
      memcpy(e, s, k);
      el = k;
    }
    if (o + el >= cap) break;
    memcpy(out + o, e, el);
    o += el;
    s += k;
  }
  out[o] = '\0';
}

static void slog(struct net_server *s, const char *level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void slog(struct net_server *s, const char *level, const char *event, const char *fmt, ...) {
  char msg[1024], ts[64], line[2300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  struct tm tm;
  gmtime_r(&now.tv_sec, &tm);
  size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000);
  char esc[2100];
  log_escape(esc, sizeof esc, msg, s->log_json);
  if (s->log_json)
    snprintf(line, sizeof line,
             "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"%s\",\"msg\":\"%s\"}\n", ts, level, event,
             esc);
  else
    snprintf(line, sizeof line, "%s %-5s %s: %s\n", ts, level, event, esc);
  fputs(line, stderr);
  fflush(stderr);
}

/* Client errors can come by the thousand from one bad client: a few lines per second
 * tell the operator without flooding the log. */
static int client_log_ok(struct net_server *s, int *dropped) {
  pthread_mutex_lock(&s->log_mu);
  int64_t sec = clock_monotonic_ns() / 1000000000;
  *dropped = 0;
  if (sec != s->log_window) {
    *dropped = s->log_dropped;
    s->log_window = sec;
    s->log_count = 0;
    s->log_dropped = 0;
  }
  int ok = s->log_count++ < LOG_BURST;
  if (!ok) s->log_dropped++;
  pthread_mutex_unlock(&s->log_mu);
  return ok;
}

static void client_error(struct net_server *s, zmq_msg_t *body, int code, const char *op,
                         const char *why) {
  int dropped;
  if (!client_log_ok(s, &dropped)) return;
  const char *peer = body ? zmq_msg_gets(body, "Peer-Address") : NULL;
  if (dropped) slog(s, "warn", "client_error", "%d more client errors not logged", dropped);
  slog(s, "warn", "client_error", "peer %s op %s: %s: %s", peer ? peer : "-", op,
       engram_errname(code), why);
}

/* ---------------------------------------------------------------------------------
 * Topic sequences, parking, notifications. All under s->mu.
 * ------------------------------------------------------------------------------ */
static unsigned hash_bytes(const void *p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)p)[i]) * 16777619u;
  return h;
}

/* The topic's entry; with `create`, made when missing (at most MAX_TOPIC_SEQS of them:
 * past that a topic only loses its prompt wake-ups, not its events). */
static struct tseq *tseq_lookup(struct net_server *s, const char *topic, int create) {
  size_t n = strlen(topic);
  struct tseq **b = &s->seqs[hash_bytes(topic, n) % SEQ_BUCKETS];
  for (struct tseq *t = *b; t; t = t->next)
    if (!strcmp(t->name, topic)) return t;
  if (!create || s->n_seqs >= MAX_TOPIC_SEQS) return NULL;
  struct tseq *t = calloc(1, sizeof *t + n + 1);
  if (!t) return NULL;
  memcpy(t->name, topic, n + 1);
  t->next = *b;
  *b = t;
  s->n_seqs++;
  return t;
}

static struct tseq *tseq_get(struct net_server *s, const char *topic) {
  return tseq_lookup(s, topic, 1);
}

static void wake_main(struct net_server *s) {
  uint64_t one = 1;
  ssize_t r = write(s->wake_fd, &one, sizeof one);
  (void)r;
}

static void enqueue(struct net_server *s, struct job *j) {
  j->next = NULL;
  if (s->q_tail)
    s->q_tail->next = j;
  else
    s->q_head = j;
  s->q_tail = j;
  s->queued++;
  pthread_cond_signal(&s->cv);
}

/* Parked fetches on `topic` look again now. Called from a worker (a commit, a group
 * change) they go to the woken list without waking another worker: the calling worker
 * takes them as soon as its current job is done, which saves a thread hand-off on the
 * path from an append to a waiting consumer. From the main thread (`signal`) a worker
 * is woken. */
static void topic_changed_locked(struct net_server *s, const char *topic, int signal) {
  struct tseq *t = tseq_get(s, topic);
  if (t) t->seq++;
  struct job **pp = &s->parked;
  while (*pp) {
    struct job *j = *pp;
    if (!strcmp(j->rq->fetch->topic, topic)) {
      *pp = j->next;
      s->n_parked--;
      j->next = NULL;
      if (s->w_tail)
        s->w_tail->next = j;
      else
        s->w_head = j;
      s->w_tail = j;
      s->queued++;
      if (signal) pthread_cond_signal(&s->cv);
    } else {
      pp = &j->next;
    }
  }
}

void net_server_topic_changed(struct net_server *s, const char *topic) {
  pthread_mutex_lock(&s->mu);
  topic_changed_locked(s, topic, 0);
  pthread_mutex_unlock(&s->mu);
  net_notify_wake(api_log(s->log), topic);
}

/* The daemon handle's commit hook: runs on the committing worker. */
static void on_commit(void *ctx, const char *topic, uint64_t head) {
  struct net_server *s = ctx;
  pthread_mutex_lock(&s->mu);
  topic_changed_locked(s, topic, 0);
  struct tseq *t = tseq_get(s, topic);
  int wake = 0;
  if (t) {
    if (head > t->head) t->head = head;
    if (!t->dirty) {
      t->dirty = 1;
      t->next_dirty = s->dirty;
      s->dirty = t;
      wake = 1;
    }
  }
  pthread_mutex_unlock(&s->mu);
  if (wake) wake_main(s);
}

static void publish(struct net_server *s, const char *topic, uint64_t head) {
  unsigned char h[8];
  be64_put(h, head);
  if (zmq_send(s->pub, topic, strlen(topic), ZMQ_DONTWAIT | ZMQ_SNDMORE) >= 0 &&
      zmq_send(s->pub, h, 8, ZMQ_DONTWAIT) >= 0)
    s->notifications++;
}

/* Main thread: publishes the newest head of every topic committed since last time. */
static void publish_dirty(struct net_server *s) {
  struct {
    char name[ENGRAM_MAX_NAME + 1];
    uint64_t head;
  } batch[64];
  for (;;) {
    int n = 0;
    pthread_mutex_lock(&s->mu);
    while (s->dirty && n < 64) {
      struct tseq *t = s->dirty;
      s->dirty = t->next_dirty;
      t->dirty = 0;
      snprintf(batch[n].name, sizeof batch[n].name, "%s", t->name);
      batch[n].head = t->head;
      n++;
    }
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++) publish(s, batch[i].name, batch[i].head);
    if (n < 64) return;
  }
}

/* ---------------------------------------------------------------------------------
 * Replies.
 * ------------------------------------------------------------------------------ */
static void job_free(struct job *j) {
  if (!j) return;
  zmq_msg_close(&j->ident);
  zmq_msg_close(&j->body);
  if (j->rq) engram__wire__request__free_unpacked(j->rq, NULL);
  free(j);
}

/* Sends the reply to j's client through `sock` (a worker's PUSH or the ROUTER) and frees j. */
static void reply_send(struct net_server *s, void *sock, struct job *j, Engram__Wire__Reply *rp) {
  rp->id = j->pk.id;
  rp->version = ENGRAM_PROTOCOL_VERSION;
  rp->code = err_public(rp->code); /* never "a reply with an invalid code" */
  s->requests++;
  if (rp->code) s->errors++;
  size_t n = engram__wire__reply__get_packed_size(rp);
  zmq_msg_t m;
  if (zmq_msg_init_size(&m, n) != 0) {
    job_free(j);
    return;
  }
  engram__wire__reply__pack(rp, zmq_msg_data(&m));
  int flags = sock == s->router ? ZMQ_DONTWAIT : 0;
  if (zmq_msg_send(&j->ident, sock, flags | ZMQ_SNDMORE) >= 0 &&
      (!j->delim || zmq_send(sock, "", 0, flags | ZMQ_SNDMORE) >= 0))
    zmq_msg_send(&m, sock, flags);
  zmq_msg_close(&m);
  job_free(j);
}

static void reply_error(struct net_server *s, void *sock, struct job *j, int code,
                        const char *why) {
  Engram__Wire__Reply rp = ENGRAM__WIRE__REPLY__INIT;
  rp.code = code;
  rp.error = (char *)why;
  reply_send(s, sock, j, &rp);
}

/* ---------------------------------------------------------------------------------
 * Workers.
 * ------------------------------------------------------------------------------ */
struct worker {
  struct net_server *s;
  void *push;
  unsigned turn;
};

/* Decodes and checks j's request (once: a parked fetch keeps its decoded form). Returns 0,
 * or replies with the error and returns -1. */
static int prepare(struct net_server *s, struct worker *w, struct job *j) {
  if (j->rq) return 0;
  char why[512];
  int code = 0;
  j->rq = engram__wire__request__unpack(NULL, zmq_msg_size(&j->body), zmq_msg_data(&j->body));
  if (!j->rq) {
    code = ENGRAM_EPROTO;
    snprintf(why, sizeof why, "malformed request: does not decode");
  } else if (j->rq->op_case == ENGRAM__WIRE__REQUEST__OP__NOT_SET || !j->rq->hello) {
    code = ENGRAM_EPROTO;
    snprintf(why, sizeof why, "unknown operation %d", j->pk.op);
  }
  if (code) {
    s->bad++;
    client_error(s, &j->body, code, net_op_name(j->pk.op), why);
  } else if ((code = net_request_check(j->rq, why, sizeof why)) != 0) {
    if (code == ENGRAM_EPROTO) {
      s->bad++;
      client_error(s, &j->body, code, net_op_name(j->pk.op), why);
    }
  }
  if (!code) return 0;
  reply_error(s, w->push, j, code, why);
  return -1;
}

static void run_one(struct net_server *s, struct worker *w, struct job *j) {
  Engram__Wire__Reply rp = ENGRAM__WIRE__REPLY__INIT;
  net_arena a = {0};
  engram_batch *batch = NULL;
  int empty = 0;
  net_ops_run(s, s->log, j->rq, &rp, &a, &batch, &empty);
  reply_send(s, w->push, j, &rp);
  engram_batch_free(batch);
  net_arena_free(&a);
}

static void run_fetch(struct net_server *s, struct worker *w, struct job *j) {
  const Engram__Wire__Fetch *f = j->rq->fetch;
  if (!j->deadline_ns) j->deadline_ns = clock_after_ms(j->received_ns, f->wait_ms);
  /* Looked up, not made: the topic name is not validated until the fetch runs. */
  pthread_mutex_lock(&s->mu);
  struct tseq *t = tseq_lookup(s, f->topic, 0);
  j->seq = t ? t->seq : 0;
  pthread_mutex_unlock(&s->mu);

  Engram__Wire__Reply rp = ENGRAM__WIRE__REPLY__INIT;
  net_arena a = {0};
  engram_batch *batch = NULL;
  int empty = 0;
  net_ops_run(s, s->log, j->rq, &rp, &a, &batch, &empty);
  if (empty && !j->final && clock_monotonic_ns() < j->deadline_ns) {
    engram_batch_free(batch);
    net_arena_free(&a);
    pthread_mutex_lock(&s->mu);
    t = tseq_get(s, f->topic);
    if (s->stopping) {
      j->final = 1;
      enqueue(s, j);
    } else if ((t ? t->seq : 0) != j->seq) {
      enqueue(s, j); /* something changed while it looked: look again */
    } else if (s->n_parked >= MAX_PARKED) {
      j->final = 1;
      enqueue(s, j);
    } else {
      j->recheck_ns = clock_monotonic_ns() + PARK_RECHECK_MS * 1000000ll;
      j->next = s->parked;
      s->parked = j;
      s->n_parked++;
      s->park_signal = 1;
    }
    pthread_mutex_unlock(&s->mu);
    wake_main(s);
    return;
  }
  reply_send(s, w->push, j, &rp);
  engram_batch_free(batch);
  net_arena_free(&a);
}

/* Results of the appends of one job. */
struct ares {
  uint64_t *offsets;
  int *dups;
  int *codes;
  char **msgs; /* malloc'd messages of failed units, NULL when fine */
};

static void reply_append(struct net_server *s, struct worker *w, struct job *j, struct ares *r) {
  const Engram__Wire__Append *ap = j->rq->append;
  size_t n = ap->n_events;
  Engram__Wire__Reply rp = ENGRAM__WIRE__REPLY__INIT;
  if (!ap->independent && r->codes[0]) {
    rp.code = r->codes[0];
    rp.error = r->msgs[0] ? r->msgs[0] : (char *)engram_strerror(r->codes[0]);
    reply_send(s, w->push, j, &rp);
    return;
  }
  Engram__Wire__AppendResult ar = ENGRAM__WIRE__APPEND_RESULT__INIT;
  protobuf_c_boolean *db = calloc(n, sizeof *db);
  char **errs = NULL;
  int failed = 0;
  for (size_t i = 0; i < n; i++) failed |= r->codes[i] != 0;
  if (failed) errs = calloc(n, sizeof *errs);
  if (!db || (failed && !errs)) {
    free(db);
    free(errs);
    reply_error(s, w->push, j, ENGRAM_ENOMEM, "append: out of memory for the reply");
    return;
  }
  for (size_t i = 0; i < n; i++) {
    db[i] = r->dups[i] != 0;
    if (errs) errs[i] = r->msgs[i] ? r->msgs[i] : (char *)"";
  }
  ar.n_offsets = n;
  ar.offsets = r->offsets;
  ar.n_duplicates = n;
  ar.duplicates = db;
  if (failed) {
    ar.n_codes = n;
    ar.codes = r->codes;
    ar.n_errors = n;
    ar.errors = errs;
  }
  rp.result_case = ENGRAM__WIRE__REPLY__RESULT_APPEND;
  rp.append = &ar;
  reply_send(s, w->push, j, &rp);
  free(db);
  free(errs);
}

/* One engram_append_batch over events [at, at + n) of the group; records the outcome in
 * every job's results it touches. */
static int append_range(struct net_server *s, const char *topic, engram_event *evs, size_t at,
                        size_t n, uint64_t *offs, int *dups) {
  int rc = engram_append_batch(s->log, topic, evs + at, n, offs + at, dups + at);
  if (rc == 0) s->appended += n;
  return rc;
}

/* Runs consecutive appends to one topic (js[0..n), total events <= NET_MAX_EVENTS) as one
 * engram_append_batch. When that fails (one bad event fails the whole batch) each unit
 * runs alone, so each gets its own answer: a unit is a whole request, or one event of an
 * independent request. */
static void run_append_group(struct net_server *s, struct worker *w, struct job **js, size_t nj) {
  const char *topic = js[0]->rq->append->topic;
  size_t total = 0, nh = 0;
  for (size_t i = 0; i < nj; i++) {
    const Engram__Wire__Append *ap = js[i]->rq->append;
    total += ap->n_events;
    for (size_t e = 0; e < ap->n_events; e++) nh += ap->events[e]->n_headers;
  }
  engram_event *evs = calloc(total ? total : 1, sizeof *evs);
  engram_header *hs = calloc(nh ? nh : 1, sizeof *hs);
  uint64_t *offs = calloc(total ? total : 1, sizeof *offs);
  int *dups = calloc(total ? total : 1, sizeof *dups);
  int *codes = calloc(total ? total : 1, sizeof *codes);
  char **msgs = calloc(total ? total : 1, sizeof *msgs);
  if (!evs || !hs || !offs || !dups || !codes || !msgs) {
    for (size_t i = 0; i < nj; i++)
      reply_error(s, w->push, js[i], ENGRAM_ENOMEM, "append: out of memory");
    goto done;
  }
  size_t at = 0, hat = 0;
  for (size_t i = 0; i < nj; i++) {
    const Engram__Wire__Append *ap = js[i]->rq->append;
    for (size_t e = 0; e < ap->n_events; e++) {
      net_event_from_wire(ap->events[e], &evs[at++], hs + hat);
      hat += ap->events[e]->n_headers;
    }
  }
  int rc = append_range(s, topic, evs, 0, total, offs, dups);
  if (rc && (nj > 1 || js[0]->rq->append->independent) && rc != ENGRAM_ENOTFOUND) {
    /* Unit by unit: a request that is all or none, or one event of an independent one. */
    at = 0;
    for (size_t i = 0; i < nj; i++) {
      const Engram__Wire__Append *ap = js[i]->rq->append;
      size_t unit = ap->independent ? 1 : ap->n_events;
      for (size_t e = 0; e < ap->n_events; e += unit) {
        int urc = append_range(s, topic, evs, at + e, unit, offs, dups);
        if (urc) {
          codes[at + e] = urc;
          msgs[at + e] = strdup(engram_errmsg(s->log));
        }
      }
      at += ap->n_events;
    }
  } else if (rc) {
    char *m = strdup(engram_errmsg(s->log));
    for (size_t i = 0; i < total; i++) {
      codes[i] = rc;
      msgs[i] = i == 0 ? m : (m ? strdup(m) : NULL);
    }
  }
  at = 0;
  for (size_t i = 0; i < nj; i++) {
    size_t k = js[i]->rq->append->n_events;
    struct ares r = {offs + at, dups + at, codes + at, msgs + at};
    if (!js[i]->rq->append->independent)
      for (size_t e = 0; e < k; e++)
        if (codes[at + e]) { /* a whole request failed: its first slot has the answer */
          codes[at] = codes[at + e];
          if (e) {
            free(msgs[at]);
            msgs[at] = msgs[at + e];
            msgs[at + e] = NULL;
          }
          break;
        }
    reply_append(s, w, js[i], &r);
    at += k;
  }
done:
  if (msgs)
    for (size_t i = 0; i < total; i++) free(msgs[i]);
  free(evs);
  free(hs);
  free(offs);
  free(dups);
  free(codes);
  free(msgs);
}

static void run_lane(struct net_server *s, struct worker *w, struct job *list) {
  struct job *js[LANE_TAKE];
  size_t n = 0, events = 0;
  while (list) {
    struct job *j = list;
    list = j->next;
    j->next = NULL;
    if (prepare(s, w, j)) continue;
    if (j->rq->op_case != ENGRAM__WIRE__REQUEST__OP_APPEND) {
      run_one(s, w, j);
      continue;
    }
    size_t k = j->rq->append->n_events;
    if (k == 0) { /* the API's answer to an empty batch */
      engram_event none;
      uint64_t off;
      int rc = engram_append_batch(s->log, j->rq->append->topic, &none, 0, &off, NULL);
      reply_error(s, w->push, j, rc ? rc : ENGRAM_EINVAL, engram_errmsg(s->log));
      continue;
    }
    if (n &&
        (strcmp(js[0]->rq->append->topic, j->rq->append->topic) || events + k > NET_MAX_EVENTS)) {
      run_append_group(s, w, js, n);
      n = 0;
      events = 0;
    }
    js[n++] = j;
    events += k;
  }
  if (n) run_append_group(s, w, js, n);
}

static void run_job(struct net_server *s, struct worker *w, struct job *j) {
  if (prepare(s, w, j)) return;
  if (j->rq->op_case == ENGRAM__WIRE__REQUEST__OP_FETCH)
    run_fetch(s, w, j);
  else if (j->rq->op_case == ENGRAM__WIRE__REQUEST__OP_APPEND) {
    j->next = NULL;
    run_lane(s, w, j);
  } else
    run_one(s, w, j);
}

static void lane_ready_locked(struct net_server *s, struct lane *l) {
  if (l->ready || l->busy || !l->head) return;
  l->ready = 1;
  l->next_ready = NULL;
  if (s->ready_tail)
    s->ready_tail->next_ready = l;
  else
    s->ready_head = l;
  s->ready_tail = l;
  pthread_cond_signal(&s->cv);
}

static void lane_drop_locked(struct net_server *s, struct lane *l) {
  struct lane **pp = &s->lanes[hash_bytes(l->id, l->id_len) % LANE_BUCKETS];
  for (; *pp; pp = &(*pp)->next) {
    if (*pp == l) {
      *pp = l->next;
      free(l);
      return;
    }
  }
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  struct net_server *s = w->s;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    while (!s->w_head && !s->q_head && !s->ready_head && !s->exiting)
      pthread_cond_wait(&s->cv, &s->mu);
    if (!s->w_head && !s->q_head && !s->ready_head) break;
    if (s->w_head) {
      struct job *j = s->w_head;
      s->w_head = j->next;
      if (!s->w_head) s->w_tail = NULL;
      s->queued--;
      s->running++;
      pthread_mutex_unlock(&s->mu);
      run_job(s, w, j);
      pthread_mutex_lock(&s->mu);
      s->running--;
      continue;
    }
    /* Alternate between plain requests and lanes so neither starves the other. */
    if (s->ready_head && (!s->q_head || (w->turn++ & 1))) {
      struct lane *l = s->ready_head;
      s->ready_head = l->next_ready;
      if (!s->ready_head) s->ready_tail = NULL;
      l->ready = 0;
      l->busy = 1;
      struct job *list = l->head, *last = l->head;
      size_t n = 1;
      while (last->next && n < LANE_TAKE) {
        last = last->next;
        n++;
      }
      l->head = last->next;
      if (!l->head) l->tail = NULL;
      last->next = NULL;
      s->queued -= n;
      s->running++;
      pthread_mutex_unlock(&s->mu);
      run_lane(s, w, list);
      pthread_mutex_lock(&s->mu);
      s->running--;
      l->busy = 0;
      if (l->head)
        lane_ready_locked(s, l);
      else
        lane_drop_locked(s, l);
    } else {
      struct job *j = s->q_head;
      s->q_head = j->next;
      if (!s->q_head) s->q_tail = NULL;
      s->queued--;
      s->running++;
      pthread_mutex_unlock(&s->mu);
      run_job(s, w, j);
      pthread_mutex_lock(&s->mu);
      s->running--;
    }
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

static void *worker_thread(void *arg) {
  struct worker *w = arg;
  worker_main(w);
  zmq_close(w->push);
  free(w);
  return NULL;
}

/* ---------------------------------------------------------------------------------
 * The main thread.
 * ------------------------------------------------------------------------------ */
/* Reads one request off the ROUTER and queues it (or answers a bad frame at once).
 * Returns 0, or -1 when nothing was waiting. */
static int take_request(struct net_server *s) {
  struct job *j = calloc(1, sizeof *j);
  if (!j) return -1;
  zmq_msg_init(&j->ident);
  zmq_msg_init(&j->body);
  if (zmq_msg_recv(&j->ident, s->router, ZMQ_DONTWAIT) < 0) {
    job_free(j);
    return -1;
  }
  j->received_ns = clock_monotonic_ns();
  /* Frames after the routing id: the request, or an empty delimiter and the request. */
  zmq_msg_t parts[2];
  int np = 0, frames = 0, more = zmq_msg_more(&j->ident);
  while (more) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, s->router, 0) < 0) {
      zmq_msg_close(&m);
      break;
    }
    more = zmq_msg_more(&m);
    frames++;
    if (np < 2) {
      zmq_msg_init(&parts[np]);
      zmq_msg_move(&parts[np++], &m);
    }
    zmq_msg_close(&m);
  }
  int bad = 0;
  if (frames == 2 && zmq_msg_size(&parts[0]) == 0) {
    j->delim = 1; /* a REQ socket's envelope */
    zmq_msg_move(&j->body, &parts[1]);
  } else if (frames == 1) {
    zmq_msg_move(&j->body, &parts[0]);
  } else {
    bad = 1;
    if (frames >= 2) j->delim = zmq_msg_size(&parts[0]) == 0;
    if (np) zmq_msg_move(&j->body, &parts[np - 1]);
  }
  for (int i = 0; i < np; i++) zmq_msg_close(&parts[i]);
  char why[300];
  const char *reason;
  if (bad) {
    s->bad++;
    snprintf(why, sizeof why, "malformed request: one frame expected, got %d", frames - j->delim);
    client_error(s, &j->body, ENGRAM_EPROTO, "-", why);
    reply_error(s, s->router, j, ENGRAM_EPROTO, why);
    return 0;
  }
  int code = 0;
  if (zmq_msg_size(&j->body) == 0) {
    code = ENGRAM_EPROTO;
    snprintf(why, sizeof why, "empty request");
  } else if (net_wire_scan(&engram__wire__request__descriptor, zmq_msg_data(&j->body),
                           zmq_msg_size(&j->body), &j->pk, &reason)) {
    code = ENGRAM_EPROTO;
    snprintf(why, sizeof why, "malformed request: %s", reason);
  } else if (j->pk.version != ENGRAM_PROTOCOL_VERSION) {
    if (j->pk.version == 0 && j->pk.op == 0) {
      code = ENGRAM_EPROTO;
      snprintf(why, sizeof why, "malformed request: no protocol version and no operation");
    } else {
      code = ENGRAM_EVERSION;
      snprintf(why, sizeof why, "protocol version %u not supported (this daemon speaks %d)",
               j->pk.version, ENGRAM_PROTOCOL_VERSION);
    }
  }
  if (code) {
    s->bad++;
    client_error(s, &j->body, code, net_op_name(j->pk.op), why);
    reply_error(s, s->router, j, code, why);
    return 0;
  }
  pthread_mutex_lock(&s->mu);
  if (j->pk.op == ENGRAM__WIRE__REQUEST__OP_APPEND) {
    const void *id = zmq_msg_data(&j->ident);
    size_t n = zmq_msg_size(&j->ident);
    struct lane **b = &s->lanes[hash_bytes(id, n) % LANE_BUCKETS], *l;
    for (l = *b; l; l = l->next)
      if (l->id_len == n && !memcmp(l->id, id, n)) break;
    if (!l && (l = calloc(1, sizeof *l + n)) != NULL) {
      l->id_len = n;
      memcpy(l->id, id, n);
      l->next = *b;
      *b = l;
    }
    if (l) {
      j->lane = l;
      if (l->tail)
        l->tail->next = j;
      else
        l->head = j;
      l->tail = j;
      s->queued++;
      lane_ready_locked(s, l);
      pthread_mutex_unlock(&s->mu);
      return 0;
    }
  }
  enqueue(s, j);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

/* Forwards replies from workers to the ROUTER. */
static void forward_replies(struct net_server *s) {
  for (int n = 0; n < 4096; n++) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, s->replies, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&m);
      return;
    }
    for (;;) {
      int more = zmq_msg_more(&m);
      zmq_msg_send(&m, s->router, ZMQ_DONTWAIT | (more ? ZMQ_SNDMORE : 0));
      zmq_msg_close(&m);
      if (!more) break;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, s->replies, 0) < 0) {
        zmq_msg_close(&m);
        break;
      }
    }
  }
}

/* (topic, head) from an embedded writer in another process: publish and wake. */
static void take_notify_in(struct net_server *s) {
  for (int n = 0; n < 4096; n++) {
    char topic[ENGRAM_MAX_NAME + 2];
    unsigned char head[9];
    int tn = zmq_recv(s->in_pull, topic, sizeof topic - 1, ZMQ_DONTWAIT);
    if (tn < 0) return;
    int more = 0;
    size_t ml = sizeof more;
    zmq_getsockopt(s->in_pull, ZMQ_RCVMORE, &more, &ml);
    int hn = more ? zmq_recv(s->in_pull, head, sizeof head, 0) : -1;
    for (;;) { /* drop any extra frames */
      zmq_getsockopt(s->in_pull, ZMQ_RCVMORE, &more, &ml);
      if (!more) break;
      char junk[1];
      zmq_recv(s->in_pull, junk, 1, 0);
    }
    if (tn > ENGRAM_MAX_NAME || hn != 8) continue;
    topic[tn] = '\0';
    if (!log_valid_name(topic)) continue;
    publish(s, topic, be64_get(head));
    pthread_mutex_lock(&s->mu);
    topic_changed_locked(s, topic, 1);
    pthread_mutex_unlock(&s->mu);
  }
}

/* Requeues parked fetches whose recheck time or deadline came; returns the poll timeout
 * in ms until the next one (-1 = none). */
static long check_parked(struct net_server *s) {
  int64_t now = clock_monotonic_ns(), next = INT64_MAX;
  pthread_mutex_lock(&s->mu);
  s->park_signal = 0;
  struct job **pp = &s->parked;
  while (*pp) {
    struct job *j = *pp;
    if (s->stopping || now >= j->deadline_ns || now >= j->recheck_ns) {
      *pp = j->next;
      s->n_parked--;
      if (s->stopping || now >= j->deadline_ns) j->final = 1;
      enqueue(s, j);
      continue;
    }
    int64_t t = j->recheck_ns < j->deadline_ns ? j->recheck_ns : j->deadline_ns;
    if (t < next) next = t;
    pp = &j->next;
  }
  pthread_mutex_unlock(&s->mu);
  if (next == INT64_MAX) return -1;
  long ms = (long)((next - now + 999999) / 1000000);
  return ms < 1 ? 1 : ms;
}

static int idle(struct net_server *s) {
  pthread_mutex_lock(&s->mu);
  int yes = !s->w_head && !s->q_head && !s->ready_head && s->running == 0 && !s->parked;
  pthread_mutex_unlock(&s->mu);
  return yes;
}

static void main_loop(struct net_server *s) {
  long timeout = -1;
  for (;;) {
    if (stop_requested && !s->stopping) {
      slog(s, "info", "stop", "stopping: no new requests, finishing those in flight");
      pthread_mutex_lock(&s->mu);
      s->stopping = 1;
      pthread_mutex_unlock(&s->mu);
      check_parked(s);
    }
    if (s->stopping) {
      forward_replies(s);
      if (idle(s)) {
        forward_replies(s);
        return;
      }
      timeout = 20;
    }
    pthread_mutex_lock(&s->mu);
    int room = s->queued < MAX_QUEUED;
    pthread_mutex_unlock(&s->mu);
    zmq_pollitem_t it[4] = {
        {s->router, 0, (short)(room && !s->stopping ? ZMQ_POLLIN : 0), 0},
        {s->replies, 0, ZMQ_POLLIN, 0},
        {s->in_pull, 0, ZMQ_POLLIN, 0},
        {NULL, s->wake_fd, ZMQ_POLLIN, 0},
    };
    int rc = zmq_poll(it, 4, timeout);
    if (rc < 0 && errno != EINTR) {
      slog(s, "error", "poll", "zmq_poll: %s", zmq_strerror(errno));
      clock_sleep_ns(10000000);
    }
    if (it[3].revents & ZMQ_POLLIN) {
      uint64_t v;
      ssize_t r = read(s->wake_fd, &v, sizeof v);
      (void)r;
    }
    publish_dirty(s);
    if (it[1].revents & ZMQ_POLLIN) forward_replies(s);
    if (it[0].revents & ZMQ_POLLIN && !s->stopping) {
      for (int n = 0; n < RECV_BURST; n++) {
        pthread_mutex_lock(&s->mu);
        int full = s->queued >= MAX_QUEUED;
        pthread_mutex_unlock(&s->mu);
        if (full || take_request(s) < 0) break;
      }
    }
    if (it[2].revents & ZMQ_POLLIN) take_notify_in(s);
    timeout = check_parked(s);
  }
}

/* ---------------------------------------------------------------------------------
 * CURVE: the ZAP handler lets in only the allowed client keys.
 * ------------------------------------------------------------------------------ */
static void *zap_main(void *arg) {
  struct net_server *s = arg;
  while (!s->zap_stop) {
    zmq_pollitem_t it = {s->zap, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 200) <= 0) continue;
    zmq_msg_t f[8];
    int n = 0, more = 1;
    while (more) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, s->zap, 0) < 0) {
        zmq_msg_close(&m);
        break;
      }
      more = zmq_msg_more(&m);
      if (n < 8)
        f[n++] = m;
      else
        zmq_msg_close(&m);
    }
    /* Frames: version, request id, domain, address, routing id, mechanism, credentials. */
    const char *status = "400", *text = "client key not allowed";
    char addr[64] = "-";
    if (n > 3 && zmq_msg_size(&f[3]) > 0 && zmq_msg_size(&f[3]) < sizeof addr) {
      memcpy(addr, zmq_msg_data(&f[3]), zmq_msg_size(&f[3]));
      addr[zmq_msg_size(&f[3])] = '\0';
    }
    if (n == 7 && zmq_msg_size(&f[0]) == 3 && !memcmp(zmq_msg_data(&f[0]), "1.0", 3) &&
        zmq_msg_size(&f[5]) == 5 && !memcmp(zmq_msg_data(&f[5]), "CURVE", 5) &&
        zmq_msg_size(&f[6]) == 32) {
      for (size_t i = 0; i < s->n_allow; i++) {
        if (!memcmp(s->allow[i], zmq_msg_data(&f[6]), 32)) {
          status = "200";
          text = "OK";
          break;
        }
      }
    } else {
      text = "unsupported authentication request";
    }
    if (*status != '2') {
      int dropped;
      if (client_log_ok(s, &dropped)) {
        char key[41] = "-";
        if (n == 7 && zmq_msg_size(&f[6]) == 32) zmq_z85_encode(key, zmq_msg_data(&f[6]), 32);
        slog(s, "warn", "auth_denied", "peer %s key %s: %s", addr, key, text);
      }
    }
    const void *rid = n > 1 ? zmq_msg_data(&f[1]) : "";
    size_t rid_len = n > 1 ? zmq_msg_size(&f[1]) : 0;
    zmq_send(s->zap, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(s->zap, rid, rid_len, ZMQ_SNDMORE);
    zmq_send(s->zap, status, 3, ZMQ_SNDMORE);
    zmq_send(s->zap, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(s->zap, "", 0, ZMQ_SNDMORE);
    zmq_send(s->zap, "", 0, 0);
    for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
  }
  return NULL;
}

static int valid_z85_key(const char *k, unsigned char out[32]) {
  return k && strlen(k) == 40 && zmq_z85_decode(out, k) != NULL;
}

int net_keygen(char public_key[41], char secret_key[41]) {
  if (!zmq_has("curve"))
    return log_error(NULL, ENGRAM_ENOTSUP, "keygen: this libzmq has no CURVE support");
  if (zmq_curve_keypair(public_key, secret_key) != 0)
    return log_error(NULL, ENGRAM_ENOTSUP, "keygen: %s", zmq_strerror(errno));
  return 0;
}

/* ---------------------------------------------------------------------------------
 * Start and stop.
 * ------------------------------------------------------------------------------ */
static int zerr(int e) {
  switch (e) {
    case EADDRINUSE:
      return ENGRAM_EBUSY;
    case EINVAL:
    case EPROTONOSUPPORT:
    case ENOCOMPATPROTO:
    case ENODEV:
    case EADDRNOTAVAIL:
      return ENGRAM_EINVAL;
    case ENOMEM:
      return ENGRAM_ENOMEM;
    case ENAMETOOLONG:
      return ENGRAM_EINVAL;
    case EACCES:
      return ENGRAM_EDENIED;
    default:
      return ENGRAM_EIO;
  }
}

static int take_lock(struct net_server *s) {
  char path[4200];
  snprintf(path, sizeof path, "%s/daemon.lock", s->dir);
  s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (s->lock_fd < 0)
    return log_error(NULL, err_from_errno(errno), "serve %s: cannot open %s: %s", s->dir, path,
                     strerror(errno));
  if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
    int e = errno;
    char pid[32] = "";
    ssize_t n = pread(s->lock_fd, pid, sizeof pid - 1, 0);
    if (n > 0) pid[n] = '\0';
    char *nl = strchr(pid, '\n');
    if (nl) *nl = '\0';
    close(s->lock_fd);
    s->lock_fd = -1;
    if (e == EWOULDBLOCK)
      return log_error(NULL, ENGRAM_EBUSY,
                       "serve %s: another engram serve%s%s%s already serves this directory", s->dir,
                       *pid ? " (pid " : "", pid, *pid ? ")" : "");
    return log_error(NULL, err_from_errno(e), "serve %s: cannot lock %s: %s", s->dir, path,
                     strerror(e));
  }
  char buf[64];
  int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
  if (ftruncate(s->lock_fd, 0) == 0 &&
      pwrite(s->lock_fd, buf, (size_t)n, 0) != n) { /* informative only */
  }
  return 0;
}

static void *mksock(struct net_server *s, int type, int *rc) {
  void *z = zmq_socket(s->zctx, type);
  if (!z)
    *rc = log_error(NULL, zerr(errno), "serve: cannot make a socket: %s", zmq_strerror(errno));
  return z;
}

static int setup_curve(struct net_server *s, void *sock) {
  int one = 1;
  char key[41];
  snprintf(key, sizeof key, "%s", s->o.secret_key);
  if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
      zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, key, 41) ||
      zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "engram", 6))
    return log_error(NULL, ENGRAM_EINVAL, "serve: CURVE setup failed: %s", zmq_strerror(errno));
  return 0;
}

static int bind_ep(struct net_server *s, void *sock, const char *ep, char *actual, size_t cap,
                   const char *what) {
  if (zmq_bind(sock, ep) != 0) {
    int e = errno;
    return log_error(NULL, zerr(e), "serve: cannot listen for %s on %s: %s", what, ep,
                     zmq_strerror(e));
  }
  size_t n = cap;
  if (!actual) return 0;
  if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, actual, &n) != 0) snprintf(actual, cap, "%s", ep);
  return 0;
}

static int check_options(const char *dir, const engram_serve_options *o) {
  if (!dir || !*dir || strlen(dir) > 3800)
    return log_error(NULL, ENGRAM_EINVAL, "serve: invalid data directory");
  if (o->listen && !*o->listen)
    return log_error(NULL, ENGRAM_EINVAL, "serve: empty listen endpoint");
  if (o->notify && !*o->notify)
    return log_error(NULL, ENGRAM_EINVAL, "serve: empty notify endpoint");
  if ((unsigned)o->durability > ENGRAM_DURABILITY_ASYNC)
    return log_error(NULL, ENGRAM_EINVAL, "serve: unknown durability mode %d", o->durability);
  if (o->workers > NET_MAX_WORKERS)
    return log_error(NULL, ENGRAM_EINVAL, "serve: %u workers over limit %d", o->workers,
                     NET_MAX_WORKERS);
  if (o->max_message && o->max_message < NET_MIN_MAX_MESSAGE)
    return log_error(NULL, ENGRAM_EINVAL, "serve: max_message %u under %u bytes", o->max_message,
                     NET_MIN_MAX_MESSAGE);
  unsigned char k[32];
  if (o->secret_key || o->public_key || o->n_allow_keys) {
    if (!zmq_has("curve"))
      return log_error(NULL, ENGRAM_ENOTSUP, "serve: this libzmq has no CURVE support");
    if (!valid_z85_key(o->secret_key, k))
      return log_error(NULL, ENGRAM_EINVAL, "serve: CURVE secret key must be 40 Z85 characters");
    if (o->public_key && !valid_z85_key(o->public_key, k))
      return log_error(NULL, ENGRAM_EINVAL, "serve: CURVE public key must be 40 Z85 characters");
    if (o->n_allow_keys == 0 || !o->allow_keys)
      return log_error(NULL, ENGRAM_EINVAL, "serve: CURVE needs a list of allowed client keys");
    for (size_t i = 0; i < o->n_allow_keys; i++)
      if (!valid_z85_key(o->allow_keys[i], k))
        return log_error(NULL, ENGRAM_EINVAL, "serve: allowed key %zu is not 40 Z85 characters",
                         i + 1);
  }
  return 0;
}

static void teardown(struct net_server *s) {
  if (s->workers) {
    pthread_mutex_lock(&s->mu);
    s->exiting = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_workers; i++) pthread_join(s->workers[i], NULL);
    free(s->workers);
    s->workers = NULL;
  }
  if (s->replies) forward_replies(s);
  if (s->zap_running) {
    s->zap_stop = 1;
    pthread_join(s->zap_thread, NULL);
  }
  /* Jobs still queued (a start that failed half-way) are dropped. */
  while (s->q_head) {
    struct job *j = s->q_head;
    s->q_head = j->next;
    job_free(j);
  }
  while (s->w_head) {
    struct job *j = s->w_head;
    s->w_head = j->next;
    job_free(j);
  }
  while (s->parked) {
    struct job *j = s->parked;
    s->parked = j->next;
    job_free(j);
  }
  for (int i = 0; i < LANE_BUCKETS; i++) {
    while (s->lanes[i]) {
      struct lane *l = s->lanes[i];
      s->lanes[i] = l->next;
      while (l->head) {
        struct job *j = l->head;
        l->head = j->next;
        job_free(j);
      }
      free(l);
    }
  }
  for (int i = 0; i < SEQ_BUCKETS; i++) {
    while (s->seqs[i]) {
      struct tseq *t = s->seqs[i];
      s->seqs[i] = t->next;
      free(t);
    }
  }
  int linger = 2000, zero = 0;
  if (s->router) {
    zmq_setsockopt(s->router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(s->router);
  }
  if (s->pub) {
    zmq_setsockopt(s->pub, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(s->pub);
  }
  if (s->in_pull) {
    zmq_setsockopt(s->in_pull, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(s->in_pull);
  }
  if (s->replies) zmq_close(s->replies);
  if (s->zap) zmq_close(s->zap);
  if (s->zctx) zmq_ctx_term(s->zctx);
  if (s->in_path[0]) unlink(s->in_path);
  if (s->notify_path[0]) unlink(s->notify_path);
  if (s->log) {
    net_notify_set_daemon(api_log(s->log), NULL, NULL);
    engram_close(s->log);
  }
  if (s->wake_fd >= 0) close(s->wake_fd);
  if (s->lock_fd >= 0) close(s->lock_fd);
  free(s->allow);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->log_mu);
}

static int start(struct net_server *s) {
  int rc = 0;
  engram_options lo = {.durability = s->o.durability};
  rc = engram_open(s->dir, &lo, &s->log);
  if (rc) {
    s->log = NULL;
    return rc;
  }
  /* A client waiting for its ack comes back a network round trip after its reply: the
   * commit leader waits about that long for released writers to queue again. */
  api_log(s->log)->gather_max_ns = NET_GATHER_NS;
  if ((rc = take_lock(s))) return rc;
  net_notify_set_daemon(api_log(s->log), on_commit, s);

  if ((s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
    return log_error(NULL, err_from_errno(errno), "serve: eventfd: %s", strerror(errno));
  if (!(s->zctx = zmq_ctx_new()))
    return log_error(NULL, ENGRAM_ENOMEM, "serve: cannot make a ZeroMQ context");
  zmq_ctx_set(s->zctx, ZMQ_IO_THREADS, 1);

  int curve = s->o.secret_key != NULL;
  if (curve) {
    s->n_allow = s->o.n_allow_keys;
    s->allow = calloc(s->n_allow, 32);
    if (!s->allow) return log_error(NULL, ENGRAM_ENOMEM, "serve: out of memory");
    for (size_t i = 0; i < s->n_allow; i++) zmq_z85_decode(s->allow[i], s->o.allow_keys[i]);
    if (!(s->zap = mksock(s, ZMQ_REP, &rc))) return rc;
    if ((rc = bind_ep(s, s->zap, ZAP_EP, NULL, 0, "authentication"))) return rc;
    if (pthread_create(&s->zap_thread, NULL, zap_main, s) != 0)
      return log_error(NULL, ENGRAM_ENOMEM, "serve: cannot start the authentication thread");
    s->zap_running = 1;
  }

  if (!(s->router = mksock(s, ZMQ_ROUTER, &rc))) return rc;
  int64_t maxmsg = s->o.max_message;
  int hwm = 10000, zero = 0;
  zmq_setsockopt(s->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
  zmq_setsockopt(s->router, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt(s->router, ZMQ_RCVHWM, &hwm, sizeof hwm);
  zmq_setsockopt(s->router, ZMQ_LINGER, &zero, sizeof zero);
  int hb = 2000, hbt = 6000;
  zmq_setsockopt(s->router, ZMQ_HEARTBEAT_IVL, &hb, sizeof hb);
  zmq_setsockopt(s->router, ZMQ_HEARTBEAT_TIMEOUT, &hbt, sizeof hbt);
  if (curve && (rc = setup_curve(s, s->router))) return rc;
  const char *listen = s->o.listen ? s->o.listen : NET_DEFAULT_LISTEN;
  if ((rc = bind_ep(s, s->router, listen, s->listen_ep, sizeof s->listen_ep, "requests")))
    return rc;

  /* We hold the directory's daemon lock, so ipc files left there are stale. */
  if (net_ipc_path(s->dir, "notify-in.ipc", s->in_path, sizeof s->in_path) < 0)
    return log_error(NULL, ENGRAM_EINVAL, "serve %s: path too long for an ipc socket", s->dir);
  char ep[600];
  if (!(s->pub = mksock(s, ZMQ_PUB, &rc))) return rc;
  zmq_setsockopt(s->pub, ZMQ_SNDHWM, &hwm, sizeof hwm);
  if (s->o.notify) {
    snprintf(ep, sizeof ep, "%s", s->o.notify);
    if (curve && strncmp(ep, "ipc://", 6) && (rc = setup_curve(s, s->pub))) return rc;
  } else {
    if (net_ipc_path(s->dir, "notify.ipc", s->notify_path, sizeof s->notify_path) < 0)
      return log_error(NULL, ENGRAM_EINVAL, "serve %s: path too long for an ipc socket", s->dir);
    unlink(s->notify_path);
    snprintf(ep, sizeof ep, "ipc://%s", s->notify_path);
  }
  if ((rc = bind_ep(s, s->pub, ep, s->notify_ep, sizeof s->notify_ep, "notifications"))) return rc;

  if (!(s->in_pull = mksock(s, ZMQ_PULL, &rc))) return rc;
  int64_t small = 4096;
  zmq_setsockopt(s->in_pull, ZMQ_MAXMSGSIZE, &small, sizeof small);
  unlink(s->in_path);
  snprintf(ep, sizeof ep, "ipc://%s", s->in_path);
  if ((rc = bind_ep(s, s->in_pull, ep, NULL, 0, "embedded writers"))) return rc;

  if (!(s->replies = mksock(s, ZMQ_PULL, &rc))) return rc;
  int big = 0;
  zmq_setsockopt(s->replies, ZMQ_RCVHWM, &big, sizeof big);
  if ((rc = bind_ep(s, s->replies, REPLIES_EP, NULL, 0, "replies"))) return rc;

  s->n_workers = s->o.workers ? (int)s->o.workers : NET_DEFAULT_WORKERS;
  s->workers = calloc((size_t)s->n_workers, sizeof *s->workers);
  if (!s->workers) return log_error(NULL, ENGRAM_ENOMEM, "serve: out of memory");
  for (int i = 0; i < s->n_workers; i++) {
    struct worker *w = calloc(1, sizeof *w);
    if (w) w->s = s;
    if (w && (w->push = zmq_socket(s->zctx, ZMQ_PUSH)) != NULL) {
      zmq_setsockopt(w->push, ZMQ_SNDHWM, &big, sizeof big);
      zmq_connect(w->push, REPLIES_EP);
    }
    if (!w || !w->push || pthread_create(&s->workers[i], NULL, worker_thread, w) != 0) {
      if (w && w->push) zmq_close(w->push);
      free(w);
      s->n_workers = i;
      return log_error(NULL, ENGRAM_ENOMEM, "serve: cannot start worker %d", i);
    }
  }
  return 0;
}

int net_serve(const char *data_dir, const engram_serve_options *opts) {
  (void)net_notify_linked;
  engram_serve_options o = opts ? *opts : (engram_serve_options){0};
  int rc = check_options(data_dir, &o);
  if (rc) return rc;
  int expected = 0;
  if (!atomic_compare_exchange_strong(&serving, &expected, 1))
    return log_error(NULL, ENGRAM_EBUSY, "serve: this process already runs a daemon");
  if (!o.max_message) o.max_message = NET_DEFAULT_MAX_MESSAGE;

  struct net_server *s = calloc(1, sizeof *s);
  if (!s) {
    serving = 0;
    return log_error(NULL, ENGRAM_ENOMEM, "serve: out of memory");
  }
  snprintf(s->dir, sizeof s->dir, "%s", data_dir);
  s->o = o;
  s->log_json = o.log_json;
  s->wake_fd = -1;
  s->lock_fd = -1;
  s->started_ns = clock_monotonic_ns();
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  pthread_mutex_init(&s->log_mu, NULL);

  stop_requested = 0;
  struct sigaction sa, old_term, old_int;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, &old_term);
  sigaction(SIGINT, &sa, &old_int);

  rc = start(s);
  if (rc) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", engram_errmsg(NULL));
    stop_fd = -1;
    teardown(s);
    log_error(NULL, rc, "%s", msg);
  } else {
    stop_fd = s->wake_fd;
    const char *dnames[] = {"sync", "nometasync", "async"};
    slog(s, "info", "start",
         "engram %s serving %s (pid %ld, durability %s, %d workers, protocol %d)",
         ENGRAM_VERSION_STRING, s->dir, (long)getpid(), dnames[o.durability], s->n_workers,
         ENGRAM_PROTOCOL_VERSION);
    slog(s, "info", "listen", "requests on %s%s", s->listen_ep,
         o.secret_key ? " (CURVE, allow-listed keys only)" : "");
    slog(s, "info", "notify", "notifications on %s", s->notify_ep);
    if (strncmp(s->listen_ep, "tcp://127.", 10) && strncmp(s->listen_ep, "tcp://[::1]", 11) &&
        strncmp(s->listen_ep, "ipc://", 6) && strncmp(s->listen_ep, "inproc://", 9) &&
        !o.secret_key)
      slog(s, "warn", "listen", "%s is reachable beyond this host and CURVE is off", s->listen_ep);
    main_loop(s);
    stop_fd = -1;
    uint64_t served = s->requests;
    double up = (double)(clock_monotonic_ns() - s->started_ns) / 1e9;
    teardown(s);
    slog(s, "info", "stopped", "served %llu requests in %.1f s", (unsigned long long)served, up);
  }
  sigaction(SIGTERM, &old_term, NULL);
  sigaction(SIGINT, &old_int, NULL);
  free(s);
  serving = 0;
  return rc;
}

/* ---------------------------------------------------------------------------------
 * What ops.c asks of the daemon.
 * ------------------------------------------------------------------------------ */
void net_server_stats(struct net_server *s, Engram__Wire__StatsResult *st) {
  st->uptime_ms = (uint64_t)(clock_monotonic_ns() - s->started_ns) / 1000000;
  st->requests = s->requests;
  st->errors = s->errors;
  st->bad_requests = s->bad;
  st->appended = s->appended;
  st->notifications = s->notifications;
  st->workers = (uint32_t)s->n_workers;
  pthread_mutex_lock(&s->mu);
  st->queued = (uint32_t)s->queued;
  st->parked = (uint32_t)s->n_parked;
  pthread_mutex_unlock(&s->mu);
  st->version = ENGRAM_VERSION_STRING;
}

uint32_t net_server_max_message(const struct net_server *s) { return s->o.max_message; }

void net_server_count_appended(struct net_server *s, uint64_t n) { s->appended += n; }
