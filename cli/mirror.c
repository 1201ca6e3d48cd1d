/* mirror.c — publishes topics into a NATS JetStream stream exactly once and rebuilds a
 * log from such a stream. The position is a consumer group of the log; the stream's own
 * content is read back before anything that might already be in it is published again.
 * The exactly-once argument is in docs/scale-out.md. */
#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "mirror.h"

#define ACK_WAIT_MS 5000          /* how long one publish waits for the stream's ack */
#define BACKOFF_MIN_MS 100        /* first retry delay while NATS is unreachable */
#define BACKOFF_MAX_MS 5000       /* the longest */
#define LEASE_MS 3600000          /* the group's ack_wait: one batch is held at most this */
#define PROGRESS_NS 10000000000LL /* a progress line at most every 10 s */
#define ACK_MAX 65536             /* acks in one engram_ack_many (a daemon takes 100,000) */

/* ---------------------------------------------------------------------------------
 * Small helpers.
 * ------------------------------------------------------------------------------ */
void mirror_pct_encode(const char *s, size_t n, char *out) {
  static const char hex[] = "0123456789ABCDEF";
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch > 0x20 && ch < 0x7f && ch != '%' && ch != '&' && ch != '=') {
      *out++ = (char)ch;
    } else {
      *out++ = '%';
      *out++ = hex[ch >> 4];
      *out++ = hex[ch & 15];
    }
  }
  *out = '\0';
}

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  return -1;
}

long mirror_pct_decode(char *s) {
  char *w = s;
  for (const char *r = s; *r; r++) {
    if (*r != '%') {
      *w++ = *r;
      continue;
    }
    int hi = hexval(r[1]), lo = hi < 0 ? -1 : hexval(r[2]);
    if (hi < 0 || lo < 0) return -1;
    *w++ = (char)(hi << 4 | lo);
    r += 2;
  }
  *w = '\0';
  return (long)(w - s);
}

#define CONFIG_NUMBERS(X) \
  X(compress_threshold)   \
  X(max_payload)          \
  X(dict_train_after) X(flags) X(max_age_ms) X(max_bytes) X(max_events) X(tombstone_ttl_ms)

void mirror_config_encode(const engram_topic_config *cfg, char *out) {
  char *w = out;
#define PUT(name) w += sprintf(w, #name "=%" PRIu64 "&", (uint64_t)cfg->name);
  CONFIG_NUMBERS(PUT)
#undef PUT
  w += sprintf(w, "tombstone_type=");
  mirror_pct_encode(cfg->tombstone_type, strlen(cfg->tombstone_type), w);
}

int mirror_config_decode(const char *s, engram_topic_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  char buf[MIRROR_CONFIG_MAX], *save = NULL;
  if (strlen(s) >= sizeof buf) return -1;
  strcpy(buf, s);
  for (char *part = strtok_r(buf, "&", &save); part; part = strtok_r(NULL, "&", &save)) {
    char *eq = strchr(part, '=');
    if (!eq) return -1;
    *eq++ = '\0';
    if (!strcmp(part, "tombstone_type")) {
      long n = mirror_pct_decode(eq);
      if (n < 0 || (size_t)n >= sizeof cfg->tombstone_type) return -1;
      memcpy(cfg->tombstone_type, eq, (size_t)n + 1);
      continue;
    }
    char *end;
    errno = 0;
    unsigned long long x = strtoull(eq, &end, 10);
    if (errno || *end || !*eq || *eq == '-') return -1;
#define GET(name)                                 \
  if (!strcmp(part, #name)) {                     \
    if (x > (__typeof__(cfg->name))-1) return -1; \
    cfg->name = (__typeof__(cfg->name))x;         \
  }
    CONFIG_NUMBERS(GET)
#undef GET
  }
  return 0;
}

static void sleep_ms(uint64_t ms, volatile sig_atomic_t *stop) {
  while (ms > 0 && !(stop && *stop)) {
    uint64_t step = ms > 100 ? 100 : ms;
    struct timespec ts = {(time_t)(step / 1000), (long)(step % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    ms -= step;
  }
}

const char *mirror_nats_why(natsStatus s) {
  const char *t = nats_GetLastError(NULL);
  return t && *t ? t : natsStatus_GetText(s);
}

/* Operators see the connection come and go; publishes meanwhile wait in the client's
 * reconnect buffer or fail after their ack wait, and are read back and sent again. */
static void on_disconnected(natsConnection *nc, void *closure) {
  (void)closure;
  if (natsConnection_IsClosed(nc)) return; /* our own close */
  fprintf(stderr, "engram: nats: disconnected: reconnecting, retrying\n");
}

static void on_reconnected(natsConnection *nc, void *closure) {
  (void)closure;
  char url[256] = "";
  natsConnection_GetConnectedUrl(nc, url, sizeof url);
  fprintf(stderr, "engram: nats: reconnected to %s\n", url);
}

natsStatus mirror_link_open(const struct mirror_nats *n, jsOptions *jo, natsConnection **nc,
                            jsCtx **js, char *err, size_t errlen) {
  natsOptions *o = NULL;
  natsStatus s = natsOptions_Create(&o);
  const char *url = n->url ? n->url : "nats://127.0.0.1:4222";
  const char *password = n->password ? n->password : getenv("ENGRAM_NATS_PASSWORD");
  /* A comma-separated list: every server of a cluster to try (nats.c's SetURL takes
   * one). */
  char *list = strdup(url);
  const char *servers[16];
  int nservers = 0;
  if (!list) s = NATS_NO_MEMORY;
  for (char *p = list ? strtok(list, ", ") : NULL; p && nservers < 16; p = strtok(NULL, ", "))
    servers[nservers++] = p;
  if (s == NATS_OK) s = natsOptions_SetServers(o, servers, nservers);
  if (s == NATS_OK) s = natsOptions_SetNoRandomize(o, false);
  if (s == NATS_OK) s = natsOptions_SetName(o, "engram-mirror");
  if (s == NATS_OK && (!strncmp(url, "tls://", 6) || n->ca)) s = natsOptions_SetSecure(o, true);
  if (s == NATS_OK && n->ca) s = natsOptions_LoadCATrustedCertificates(o, n->ca);
  if (s == NATS_OK && (n->cert || n->key))
    s = natsOptions_LoadCertificatesChain(o, n->cert, n->key);
  if (s == NATS_OK && n->user) s = natsOptions_SetUserInfo(o, n->user, password);
  if (s == NATS_OK && n->creds) s = natsOptions_SetUserCredentialsFromFiles(o, n->creds, NULL);
  if (s == NATS_OK && n->nkey_seed)
    s = natsOptions_SetNKeyFromSeed(o, n->nkey_public, n->nkey_seed);
  if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(o, on_disconnected, NULL);
  if (s == NATS_OK) s = natsOptions_SetReconnectedCB(o, on_reconnected, NULL);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, 250);
  if (s == NATS_OK) s = natsOptions_SetTimeout(o, 2000);
  if (s == NATS_OK) s = natsOptions_SetPingInterval(o, 2000);
  if (s == NATS_OK) s = natsConnection_Connect(nc, o);
  if (s == NATS_OK) s = natsConnection_JetStream(js, *nc, jo);
  if (s != NATS_OK) {
    snprintf(err, errlen, "nats %s: %s", url, mirror_nats_why(s));
    natsConnection_Destroy(*nc);
    *nc = NULL;
    *js = NULL;
  }
  natsOptions_Destroy(o);
  free(list);
  return s;
}

int mirror_nats_check(const char *cmd, const struct mirror_nats *n) {
  if (!n->nkey_public != !n->nkey_seed)
    return cli_usage(cmd, "--nats-nkey and --nats-seed go together");
  if (!n->cert != !n->key) return cli_usage(cmd, "--nats-cert and --nats-key go together");
  return 0;
}

void mirror_link_close(natsConnection **nc, jsCtx **js) {
  jsCtx_Destroy(*js);
  *js = NULL;
  if (*nc) natsConnection_Close(*nc);
  natsConnection_Destroy(*nc);
  *nc = NULL;
}

void mirror_library_end(void) { nats_CloseAndWait(2000); }

int mirror_stream_rests(const jsStreamInfo *si) {
  const jsClusterInfo *c = si->Cluster;
  if (!c) return 1; /* a single server */
  if (!c->Leader || !*c->Leader) return 0;
  for (int i = 0; i < c->ReplicasLen; i++)
    if (!c->Replicas[i]->Offline && (!c->Replicas[i]->Current || c->Replicas[i]->Lag)) return 0;
  return 1;
}

int mirror_header_u64(natsMsg *msg, const char *name, uint64_t *out) {
  const char *v;
  if (natsMsgHeader_Get(msg, name, &v) != NATS_OK || !v || !*v) return -1;
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (errno || *end || *v == '-') return -1;
  *out = x;
  return 0;
}

/* ---------------------------------------------------------------------------------
 * The mirror.
 * ------------------------------------------------------------------------------ */
struct topic_state {
  const char *name;
  char subject[2 * ENGRAM_MAX_NAME + 8];
  int64_t created_ns; /* the topic's identity inside Msg-Ids */
  int ready;          /* group made, old leases dropped, stream read back */
  uint64_t *present;  /* offsets found in the stream at or above the last read-back */
  size_t n_present;
  uint64_t present_max;           /* highest offset in the stream when it was read back */
  size_t flights;                 /* batches of this topic in the window */
  char config[MIRROR_CONFIG_MAX]; /* the topic's settings (mirror_config_encode), "" = unknown */
  int64_t config_ns;              /* when they were read */
};

/* One fetched batch on its way into the stream. */
enum { ST_SEND, ST_WAIT, ST_IN }; /* per event: to publish (again), ack awaited, in the stream */
struct flight {
  struct topic_state *t;
  engram_batch *b;
  unsigned char *state; /* ST_* per event of b, written under mirror.mu */
  size_t awaited;       /* events in ST_WAIT */
  char *config;         /* the topic's settings (MIRROR_H_CONFIG) for its first event */
};

/* Batches in the window at once: fetched, published, their acks awaited. */
#define MAX_FLIGHTS 64

struct mirror {
  const struct mirror_config *cfg;
  engram *log;
  natsConnection *nc;
  jsCtx *js;
  jsOptions jo;
  char group[ENGRAM_MAX_NAME + 1];
  char log_id[33]; /* engram_log_info.id, the first part of every Nats-Msg-Id */
  struct topic_state *topics;
  /* The window: batches in fetch order (a ring), the oldest first. The main thread
   * pushes and pops them; the ack handler (a libnats thread) sets their events' states.
   * Both under mu; cv is signalled when a batch has all its acks or a publish failed. */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct flight fl[MAX_FLIGHTS];
  size_t fl_head, fl_n;
  size_t window_events; /* events of the batches in the window */
  int failed;           /* a publish failed or timed out: recover() before going on */
  char last_error[1024];
  uint64_t mirrored; /* events acknowledged by the stream and acked in the group */
  uint64_t reported; /* mirrored at the last progress line */
  int64_t last_progress_ns;
  int degraded; /* a failure was logged; the next success logs the recovery */
  char *enc;    /* publish_one's buffer for percent-encoded headers */
  size_t enc_cap;
  engram_ack_item *items; /* retire()'s acks and their codes */
  int *codes;
  size_t items_cap;
};

static const char *who(const struct mirror *m) { return m->cfg->who ? m->cfg->who : "mirror"; }

/* A problem that ends the run: one line on stderr (cli_error), then -1. */
static int fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fatal(const char *fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  cli_error("%s", buf);
  return -1;
}

static void note(struct mirror *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct mirror *m, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "engram %s: ", who(m));
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static int stopping(const struct mirror *m) { return m->cfg->stop && *m->cfg->stop; }

/* 1 when a publish failed since the last recover() (set by the ack handler too). */
static int failed(struct mirror *m) {
  pthread_mutex_lock(&m->mu);
  int f = m->failed;
  pthread_mutex_unlock(&m->mu);
  return f;
}

static struct flight *flight_at(struct mirror *m, size_t k) {
  return &m->fl[(m->fl_head + k) % MAX_FLIGHTS];
}

/* The batch of the window and the index in it of the event `off` of `topic`, or NULL. */
static struct flight *find_event(struct mirror *m, const char *topic, uint64_t off, size_t *at) {
  for (size_t k = 0; k < m->fl_n; k++) {
    struct flight *f = flight_at(m, k);
    const engram_event *ev = f->b->events;
    size_t lo = 0, hi = f->b->count;
    if (strcmp(f->t->name, topic) || off < ev[0].offset || off > ev[hi - 1].offset) continue;
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (ev[mid].offset < off)
        lo = mid + 1;
      else
        hi = mid;
    }
    if (lo < f->b->count && ev[lo].offset == off) {
      *at = lo;
      return f;
    }
  }
  return NULL;
}

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
  (void)js;
  struct mirror *m = closure;
  uint64_t off = 0;
  const char *topic = NULL;
  int ok = pa != NULL;
  if (natsMsgHeader_Get(msg, MIRROR_H_TOPIC, &topic) != NATS_OK) topic = NULL;
  int have = topic && mirror_header_u64(msg, MIRROR_H_OFFSET, &off) == 0;
  pthread_mutex_lock(&m->mu);
  size_t i = 0;
  struct flight *f = have ? find_event(m, topic, off, &i) : NULL;
  if (f && f->state[i] == ST_WAIT) {
    f->state[i] = ok ? ST_IN : ST_SEND;
    f->awaited--;
    if (!ok) {
      m->failed = 1;
      if (pae)
        snprintf(m->last_error, sizeof m->last_error, "%s",
                 pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err));
    }
    if (!ok || f->awaited == 0) pthread_cond_broadcast(&m->cv);
  }
  pthread_mutex_unlock(&m->mu);
  natsMsg_Destroy(msg);
}

/* Connects (again) with backoff until it works or the mirror stops. */
static int reconnect(struct mirror *m) {
  uint64_t delay = BACKOFF_MIN_MS;
  char err[512];
  mirror_link_close(&m->nc, &m->js);
  while (!stopping(m)) {
    if (mirror_link_open(&m->cfg->nats, &m->jo, &m->nc, &m->js, err, sizeof err) == NATS_OK)
      return 0;
    if (!m->degraded) note(m, "%s: retrying", err);
    m->degraded = 1;
    sleep_ms(delay, m->cfg->stop);
    delay = delay * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : delay * 2;
  }
  return -1;
}

/* 1 when the stream subject `have` takes every subject of `want` ("P.>"): the same, or
 * a "X.>" (or ">") with P under X. */
static int covers(const char *have, const char *want) {
  if (!strcmp(have, want) || !strcmp(have, ">")) return 1;
  size_t n = strlen(have);
  return n >= 2 && !strcmp(have + n - 2, ".>") && !strncmp(have, want, n - 1);
}

/* Makes the stream when missing and checks that it takes the prefix's subjects. Returns
 * 0, 1 (retry: NATS trouble) or -1 (fatal, printed). */
static int ensure_stream(struct mirror *m) {
  const struct mirror_config *c = m->cfg;
  jsStreamInfo *si = NULL;
  jsErrCode ec = 0;
  char subj[ENGRAM_MAX_NAME + 8];
  snprintf(subj, sizeof subj, "%s.>", c->prefix);
  natsStatus s = js_GetStreamInfo(&si, m->js, c->stream, NULL, &ec);
  if (s == NATS_NOT_FOUND || ec == JSStreamNotFoundErr) {
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[1] = {subj};
    sc.Name = c->stream;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Replicas = c->replicas;
    sc.Duplicates = (int64_t)c->dup_window_ms * 1000000;
    sc.AllowDirect = true;
    s = js_AddStream(&si, m->js, &sc, NULL, &ec);
    if (s == NATS_OK)
      note(m, "created stream %s (subjects %s, %u replicas, duplicate window %" PRIu64 " ms)",
           c->stream, subj, c->replicas, c->dup_window_ms);
  }
  if (s != NATS_OK) {
    snprintf(m->last_error, sizeof m->last_error, "stream %s: %s (%d)", c->stream,
             mirror_nats_why(s), (int)ec);
    return 1;
  }
  int covered = 0;
  for (int i = 0; i < si->Config->SubjectsLen; i++)
    if (covers(si->Config->Subjects[i], subj)) covered = 1;
  jsStreamInfo_Destroy(si);
  if (!covered) {
    cli_error(
        "%s: stream %s does not take subjects %s: use a --subject-prefix under one of its "
        "subjects or another --stream",
        who(m), c->stream, subj);
    return -1;
  }
  return 0;
}

/* Reads back which offsets >= lo of the topic the stream holds: the subject's last
 * message, then backwards message by message until an offset below lo (the mirror only
 * ever has one batch unacknowledged, so this walk is short). Returns 0, 1 (retry) or -1
 * (fatal, printed). */
static int read_back(struct mirror *m, struct topic_state *t, uint64_t lo) {
  natsMsg *msg = NULL;
  jsErrCode ec = 0;
  t->n_present = 0;
  t->present_max = 0;
  natsStatus s = js_GetLastMsg(&msg, m->js, m->cfg->stream, t->subject, NULL, &ec);
  if (s == NATS_NOT_FOUND || ec == JSNoMessageFoundErr) return 0;
  if (s != NATS_OK) {
    snprintf(m->last_error, sizeof m->last_error, "reading back %s: %s", t->subject,
             mirror_nats_why(s));
    return 1;
  }
  uint64_t off = 0, created = 0;
  const char *lid = NULL; /* absent in messages of mirrors before log ids: then the topic's
                             creation time alone names it */
  if (natsMsgHeader_Get(msg, MIRROR_H_LOG_ID, &lid) != NATS_OK) lid = NULL;
  if (mirror_header_u64(msg, MIRROR_H_OFFSET, &off) ||
      mirror_header_u64(msg, MIRROR_H_TOPIC_ID, &created) || (int64_t)created != t->created_ns ||
      (lid && strcmp(lid, m->log_id))) {
    natsMsg_Destroy(msg);
    cli_error(
        "%s: subject %s of stream %s holds events of another topic (not topic %s "
        "created at %" PRId64 " of log %s): mirror into another --stream or --subject-prefix",
        who(m), t->subject, m->cfg->stream, t->name, t->created_ns, m->log_id);
    return -1;
  }
  t->present_max = off;
  uint64_t seq = natsMsg_GetSequence(msg);
  size_t cap = 0;
  int rc = 0;
  while (off >= lo) {
    if (t->n_present == cap) {
      cap = cap ? cap * 2 : 1024;
      uint64_t *p = realloc(t->present, cap * sizeof *p);
      if (!p) {
        rc = fatal("%s: out of memory", who(m));
        break;
      }
      t->present = p;
    }
    t->present[t->n_present++] = off;
    /* The previous message of this subject. */
    off = 0;
    while (off == 0 && seq > 1) {
      natsMsg_Destroy(msg);
      msg = NULL;
      seq--;
      s = js_GetMsg(&msg, m->js, m->cfg->stream, seq, NULL, &ec);
      if (s == NATS_NOT_FOUND || ec == JSNoMessageFoundErr) continue; /* deleted */
      if (s != NATS_OK) {
        snprintf(m->last_error, sizeof m->last_error, "reading back %s seq %" PRIu64 ": %s",
                 t->subject, seq, mirror_nats_why(s));
        rc = 1;
        break;
      }
      if (strcmp(natsMsg_GetSubject(msg), t->subject)) continue;
      if (mirror_header_u64(msg, MIRROR_H_OFFSET, &off)) off = 0;
    }
    if (rc || off == 0) break;
  }
  natsMsg_Destroy(msg);
  if (rc) return rc;
  /* Ascending, for the binary search. */
  for (size_t i = 0; i < t->n_present / 2; i++) {
    uint64_t x = t->present[i];
    t->present[i] = t->present[t->n_present - 1 - i];
    t->present[t->n_present - 1 - i] = x;
  }
  return 0;
}

static int in_stream(const struct topic_state *t, uint64_t off) {
  if (off > t->present_max) return 0;
  size_t lo = 0, hi = t->n_present;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (t->present[mid] < off)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < t->n_present && t->present[lo] == off;
}

/* Group made (earliest, long lease), leases of a previous run dropped, stream read back.
 * Returns 0, 1 (not yet: topic missing or NATS trouble) or -1 (fatal, printed). */
static int prepare_topic(struct mirror *m, struct topic_state *t) {
  engram_topic_info ti;
  int rc = engram_topic_info_get(m->log, t->name, &ti);
  if (rc == ENGRAM_ENOTFOUND) {
    snprintf(m->last_error, sizeof m->last_error, "topic %s does not exist yet", t->name);
    return 1;
  }
  if (rc) return fatal("%s: topic %s: %s", who(m), t->name, engram_errmsg(m->log));
  t->created_ns = ti.created_ns;
  engram_group_info gi;
  rc = engram_group_info_get(m->log, t->name, m->group, &gi);
  if (rc == ENGRAM_ENOTFOUND) {
    engram_group_config gc;
    memset(&gc, 0, sizeof gc);
    gc.start = ENGRAM_START_EARLIEST;
    gc.ack_wait_ms = LEASE_MS;
    gc.max_deliver = 1000000; /* the highest allowed: a batch is never dead-lettered */
    rc = engram_group_create(m->log, t->name, m->group, &gc);
    if (rc == 0 || rc == ENGRAM_EEXIST) rc = engram_group_info_get(m->log, t->name, m->group, &gi);
  }
  if (rc)
    return fatal("%s: group %s of topic %s: %s", who(m), m->group, t->name, engram_errmsg(m->log));
  /* Events a previous run fetched and did not ack come again at once, not after their
   * lease; whether they reached the stream is read back below. */
  if (gi.in_flight > 0 || gi.retrying > 0) {
    rc = engram_group_reset(m->log, t->name, m->group, ENGRAM_START_OFFSET, gi.floor + 1, 0);
    if (rc)
      return fatal("%s: resetting group %s of topic %s: %s", who(m), m->group, t->name,
                   engram_errmsg(m->log));
  }
  rc = read_back(m, t, gi.floor + 1);
  if (rc == 0) t->ready = 1;
  return rc;
}

static natsStatus publish_one(struct mirror *m, const struct topic_state *t, const engram_event *ev,
                              const char *config) {
  natsMsg *msg = NULL;
  char num[32], id[ENGRAM_MAX_NAME + 64];
  char *enc = NULL;
  natsStatus s = natsMsg_Create(&msg, t->subject, NULL, ev->payload, (int)ev->payload_len);
#define SETH(name, val) \
  if (s == NATS_OK) s = natsMsgHeader_Set(msg, name, val)
  SETH(MIRROR_H_TOPIC, t->name);
  snprintf(num, sizeof num, "%" PRIu64, ev->offset);
  SETH(MIRROR_H_OFFSET, num);
  snprintf(num, sizeof num, "%" PRId64, t->created_ns);
  SETH(MIRROR_H_TOPIC_ID, num);
  SETH(MIRROR_H_LOG_ID, m->log_id);
  SETH(MIRROR_H_TYPE, ev->type);
  snprintf(num, sizeof num, "%" PRId64, ev->timestamp_ns);
  SETH(MIRROR_H_TIME, num);
  if (ev->deliver_at_ns) {
    snprintf(num, sizeof num, "%" PRId64, ev->deliver_at_ns);
    SETH(MIRROR_H_DELIVER_AT, num);
  }
  if (ev->flags) {
    snprintf(num, sizeof num, "%" PRIu32, ev->flags);
    SETH(MIRROR_H_FLAGS, num);
  }
  if (config) SETH(MIRROR_H_CONFIG, config);
  size_t hbytes = 0;
  for (size_t i = 0; i < ev->n_headers; i++)
    hbytes += strlen(ev->headers[i].name) + strlen(ev->headers[i].value) + 2;
  size_t need = 3 * (hbytes + ENGRAM_MAX_KEY + ENGRAM_MAX_CONTENT_TYPE) + 16;
  /* One buffer kept across publishes: a fresh one of this size per event made malloc
   * consolidate its free lists every time (a fifth of the mirror's CPU). */
  if (s == NATS_OK && need > m->enc_cap) {
    char *e = realloc(m->enc, need);
    if (e) {
      m->enc = e;
      m->enc_cap = need;
    } else {
      s = NATS_NO_MEMORY;
    }
  }
  enc = m->enc;
  if (s == NATS_OK && ev->key) {
    mirror_pct_encode(ev->key, strlen(ev->key), enc);
    SETH(MIRROR_H_KEY, enc);
  }
  if (s == NATS_OK && ev->content_type && *ev->content_type) {
    mirror_pct_encode(ev->content_type, strlen(ev->content_type), enc);
    SETH(MIRROR_H_CONTENT_TYPE, enc);
  }
  if (s == NATS_OK && ev->idempotency_key) {
    mirror_pct_encode(ev->idempotency_key, strlen(ev->idempotency_key), enc);
    SETH(MIRROR_H_IDEM, enc);
  }
  if (s == NATS_OK && ev->n_headers) {
    char *w = enc;
    for (size_t i = 0; i < ev->n_headers; i++) {
      if (i) *w++ = '&';
      mirror_pct_encode(ev->headers[i].name, strlen(ev->headers[i].name), w);
      w += strlen(w);
      *w++ = '=';
      mirror_pct_encode(ev->headers[i].value, strlen(ev->headers[i].value), w);
      w += strlen(w);
    }
    *w = '\0';
    SETH(MIRROR_H_HEADERS, enc);
  }
#undef SETH
  /* Log id, topic, offset: unique across logs and topics. (A dropped and re-created
   * topic reuses offsets; the read-back refuses a subject holding its predecessor's
   * events by their Engram-Topic-Created, before anything is published.) Mirrors
   * before log ids used "<topic created_ns>:<topic>:<offset>". */
  snprintf(id, sizeof id, "%s:%s:%" PRIu64, m->log_id, t->name, ev->offset);
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MsgId = id;
  po.MaxWait = ACK_WAIT_MS;
  if (s == NATS_OK) s = js_PublishMsgAsync(m->js, &msg, &po);
  natsMsg_Destroy(msg);
  return s;
}

/* ---------------------------------------------------------------------------------
 * The window. Batches are fetched and published one after the other without waiting
 * for acks, up to --max-pending events; the oldest batches the stream holds whole are
 * acked in the group (the position), so the group's floor only ever passes a
 * contiguous run of events the stream has acknowledged.
 * ------------------------------------------------------------------------------ */

/* Publishes the batch's events in ST_SEND. Returns NATS_OK, or the first failure (that
 * event stays ST_SEND and m->failed is set). */
static natsStatus send_flight(struct mirror *m, struct flight *f) {
  for (size_t i = 0; i < f->b->count; i++) {
    pthread_mutex_lock(&m->mu);
    int send = f->state[i] == ST_SEND;
    if (send) {
      f->state[i] = ST_WAIT;
      f->awaited++;
    }
    pthread_mutex_unlock(&m->mu);
    if (!send) continue;
    natsStatus s = m->js ? publish_one(m, f->t, &f->b->events[i], i == 0 ? f->config : NULL)
                         : NATS_CONNECTION_CLOSED;
    if (s != NATS_OK) {
      pthread_mutex_lock(&m->mu);
      if (f->state[i] == ST_WAIT) {
        f->state[i] = ST_SEND;
        f->awaited--;
      }
      m->failed = 1;
      snprintf(m->last_error, sizeof m->last_error, "publish: %s", mirror_nats_why(s));
      pthread_mutex_unlock(&m->mu);
      return s;
    }
  }
  return NATS_OK;
}

/* Takes a fetched batch into the window (which then owns it) and publishes the events
 * the stream does not hold yet. Returns 0 or -1 (out of memory, printed). */
static int push_flight(struct mirror *m, struct topic_state *t, engram_batch *b) {
  /* The topic's settings travel with the first event of each batch, read again at most
   * every second so that a change reaches the stream soon (when they cannot be read, the
   * batch goes without: restore takes them from another). */
  int64_t now = cli_now_ns();
  if (now - t->config_ns > 1000000000LL) {
    engram_topic_info ti;
    if (engram_topic_info_get(m->log, t->name, &ti) == 0) {
      mirror_config_encode(&ti.config, t->config);
      t->config_ns = now;
    }
  }
  unsigned char *state = malloc(b->count);
  char *config = *t->config ? strdup(t->config) : NULL;
  if (!state || (*t->config && !config)) {
    free(state);
    free(config);
    engram_batch_free(b);
    return fatal("%s: out of memory", who(m));
  }
  for (size_t i = 0; i < b->count; i++)
    state[i] = in_stream(t, b->events[i].offset) ? ST_IN : ST_SEND;
  pthread_mutex_lock(&m->mu);
  struct flight *f = flight_at(m, m->fl_n);
  f->t = t;
  f->b = b;
  f->state = state;
  f->awaited = 0;
  f->config = config;
  m->fl_n++;
  m->window_events += b->count;
  t->flights++;
  int fail = m->failed;
  pthread_mutex_unlock(&m->mu);
  if (!fail) send_flight(m, f); /* after a failure recover() publishes what is missing */
  return 0;
}

static size_t awaited_locked(struct mirror *m) {
  size_t n = 0;
  for (size_t k = 0; k < m->fl_n; k++) n += flight_at(m, k)->awaited;
  return n;
}

/* Waits up to ms for every awaited ack; returns 1 when none is awaited any more. */
static int wait_acks(struct mirror *m, uint64_t ms) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += (time_t)(ms / 1000);
  until.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&m->mu);
  while (awaited_locked(m) > 0)
    if (pthread_cond_timedwait(&m->cv, &m->mu, &until) == ETIMEDOUT) break;
  int all = awaited_locked(m) == 0;
  pthread_mutex_unlock(&m->mu);
  return all;
}

/* Waits up to ms until the oldest batch has all its acks or a publish failed. */
static void wait_oldest(struct mirror *m, uint64_t ms) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_nsec += (long)ms * 1000000L;
  until.tv_sec += until.tv_nsec / 1000000000L;
  until.tv_nsec %= 1000000000L;
  pthread_mutex_lock(&m->mu);
  while (m->fl_n && flight_at(m, 0)->awaited > 0 && !m->failed)
    if (pthread_cond_timedwait(&m->cv, &m->mu, &until) == ETIMEDOUT) break;
  pthread_mutex_unlock(&m->mu);
}

/* After a failed publish: waits for the window's outstanding acks (every publish gets
 * its ack, an error or a timeout after ACK_WAIT_MS; those that never come are taken
 * back), then, with backoff, reads back what of each topic's batches reached the
 * stream and publishes only the rest: past the stream's duplicate window a message id
 * alone would not stop a second copy. Until the stream holds every event of the window.
 * Returns 0, or -1 when stopped or fatal (printed). */
static int recover(struct mirror *m) {
  uint64_t delay = BACKOFF_MIN_MS;
  for (;;) {
    if (!wait_acks(m, ACK_WAIT_MS + 30000)) {
      natsMsgList pending = {0};
      if (m->js && js_PublishAsyncGetPendingList(&pending, m->js) == NATS_OK)
        natsMsgList_Destroy(&pending);
      pthread_mutex_lock(&m->mu);
      for (size_t k = 0; k < m->fl_n; k++) {
        struct flight *f = flight_at(m, k);
        for (size_t i = 0; i < f->b->count; i++)
          if (f->state[i] == ST_WAIT) f->state[i] = ST_SEND;
        f->awaited = 0;
      }
      pthread_mutex_unlock(&m->mu);
    }
    size_t missing = 0;
    pthread_mutex_lock(&m->mu);
    for (size_t k = 0; k < m->fl_n; k++) {
      const struct flight *f = flight_at(m, k);
      for (size_t i = 0; i < f->b->count; i++) missing += f->state[i] != ST_IN;
    }
    m->failed = 0;
    pthread_mutex_unlock(&m->mu);
    if (missing == 0) break;
    if (!m->degraded)
      note(m, "%zu of %zu events not acknowledged by the stream (%s): retrying", missing,
           m->window_events, m->last_error);
    m->degraded = 1;
    for (;;) {
      sleep_ms(delay, m->cfg->stop);
      delay = delay * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : delay * 2;
      if (stopping(m)) return -1;
      if (natsConnection_Status(m->nc) == NATS_CONN_STATUS_CLOSED && reconnect(m)) continue;
      int r = 0;
      for (size_t i = 0; i < m->cfg->n_topics && r == 0; i++) {
        struct topic_state *t = &m->topics[i];
        for (size_t k = 0; k < m->fl_n; k++)
          if (flight_at(m, k)->t == t) { /* its oldest batch */
            r = read_back(m, t, flight_at(m, k)->b->events[0].offset);
            break;
          }
      }
      if (r < 0) return -1;
      if (r == 0) break;
    }
    pthread_mutex_lock(&m->mu);
    for (size_t k = 0; k < m->fl_n; k++) {
      struct flight *f = flight_at(m, k);
      for (size_t i = 0; i < f->b->count; i++)
        f->state[i] = in_stream(f->t, f->b->events[i].offset) ? ST_IN : ST_SEND;
    }
    pthread_mutex_unlock(&m->mu);
    for (size_t k = 0; k < m->fl_n; k++)
      if (send_flight(m, flight_at(m, k)) != NATS_OK) break;
  }
  return 0;
}

/* Pops the oldest batches the stream holds whole and acks them in the group: one
 * engram_ack_many (one commit) per topic for all of them (per ACK_MAX events). Returns 0, or -1
 * when stopped or fatal (printed). */
static int retire(struct mirror *m) {
  struct flight done[MAX_FLIGHTS];
  size_t n = 0;
  pthread_mutex_lock(&m->mu);
  while (m->fl_n) {
    struct flight *f = flight_at(m, 0);
    if (f->awaited || memchr(f->state, ST_SEND, f->b->count)) break;
    done[n++] = *f;
    m->fl_head = (m->fl_head + 1) % MAX_FLIGHTS;
    m->fl_n--;
    m->window_events -= f->b->count;
  }
  pthread_mutex_unlock(&m->mu);
  if (n && m->degraded) {
    note(m, "stream %s acknowledges again", m->cfg->stream);
    m->degraded = 0;
  }
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    struct topic_state *t = done[i].t;
    if (!t) continue;         /* acked with an earlier batch of its topic */
    size_t cnt = 0, last = i; /* this commit acks the topic's batches i..last */
    for (size_t j = i; j < n; j++)
      if (done[j].t == t) {
        if (cnt && cnt + done[j].b->count > ACK_MAX) break;
        cnt += done[j].b->count;
        last = j;
      }
    if (cnt > m->items_cap) { /* kept across calls: large allocations are slow */
      engram_ack_item *it = realloc(m->items, cnt * sizeof *it);
      if (it) m->items = it;
      int *co = realloc(m->codes, cnt * sizeof *co);
      if (co) m->codes = co;
      if (it && co) m->items_cap = cnt;
    }
    engram_ack_item *items = cnt <= m->items_cap ? m->items : NULL;
    int *codes = items ? m->codes : NULL;
    if (items) memset(items, 0, cnt * sizeof *items);
    if (!rc && !items) rc = fatal("%s: out of memory", who(m));
    size_t w = 0;
    for (size_t j = i; j <= last && items; j++)
      if (done[j].t == t)
        for (size_t e = 0; e < done[j].b->count; e++)
          items[w++].offset = done[j].b->events[e].offset;
    int arc =
        rc || !items || !codes ? 0 : engram_ack_many(m->log, t->name, m->group, items, cnt, codes);
    if (arc && stopping(m)) {
      rc = -1; /* serve's daemon stopped first: the next run reads the stream back */
    } else if (arc) {
      /* An event already finished (EALREADY) is fine. A lease that ran out while NATS
       * was away (ENOTLEASED, ESTALE: the batch was held past the group's ack_wait) is
       * taken up again: the topic is prepared anew once its batches have left the
       * window, which reads the stream back. Anything else ends the run. */
      for (size_t e = 0; e < cnt && !rc; e++)
        if (codes[e] == ENGRAM_ENOTLEASED || codes[e] == ENGRAM_ESTALE)
          t->ready = 0;
        else if (codes[e] && codes[e] != ENGRAM_EALREADY)
          rc = fatal("%s: ack of %s offset %" PRIu64 " in group %s: %s", who(m), t->name,
                     items[e].offset, m->group,
                     *engram_errmsg(m->log) ? engram_errmsg(m->log) : engram_strerror(codes[e]));
    }
    if (!rc) m->mirrored += cnt;
    for (size_t j = i; j <= last; j++)
      if (done[j].t == t) {
        t->flights--;
        engram_batch_free(done[j].b);
        free(done[j].state);
        free(done[j].config);
        done[j].t = NULL;
      }
  }
  return rc;
}

/* Frees the window (after the NATS link is closed: no ack handler runs any more). */
static void drop_window(struct mirror *m) {
  pthread_mutex_lock(&m->mu);
  for (size_t k = 0; k < m->fl_n; k++) {
    struct flight *f = flight_at(m, k);
    f->t->flights--;
    engram_batch_free(f->b);
    free(f->state);
    free(f->config);
  }
  m->fl_n = 0;
  m->window_events = 0;
  pthread_mutex_unlock(&m->mu);
}

static int subject_ok(const char *s) {
  /* No empty token (a topic "a..b" or ".a") and no wildcard. */
  if (!*s || *s == '.') return 0;
  for (const char *p = s; *p; p++) {
    if (*p == '*' || *p == '>' || *p == ' ') return 0;
    if (*p == '.' && (p[1] == '.' || p[1] == '\0')) return 0;
  }
  return 1;
}

int mirror_run(engram *log, const struct mirror_config *cfg) {
  struct mirror m;
  memset(&m, 0, sizeof m);
  struct mirror_config c = *cfg;
  if (!c.stream) c.stream = "ENGRAM";
  char prefix[ENGRAM_MAX_NAME + 16];
  if (!c.prefix) {
    snprintf(prefix, sizeof prefix, "engram.%s", c.stream);
    c.prefix = prefix;
  }
  if (!c.replicas) c.replicas = 1;
  if (!c.dup_window_ms) c.dup_window_ms = 120000;
  if (!c.batch) c.batch = 1000;
  if (!c.max_pending) c.max_pending = 4000;
  m.cfg = &c;
  m.log = log;
  if (c.group)
    snprintf(m.group, sizeof m.group, "%s", c.group);
  else
    snprintf(m.group, sizeof m.group, "mirror.%s", c.stream);
  pthread_mutex_init(&m.mu, NULL);
  pthread_cond_init(&m.cv, NULL);
  jsOptions_Init(&m.jo);
  m.jo.Wait = ACK_WAIT_MS;
  m.jo.PublishAsync.MaxPending = c.max_pending;
  m.jo.PublishAsync.AckHandler = on_ack;
  m.jo.PublishAsync.AckHandlerClosure = &m;
  /* The window stays under MaxPending; a publish that meets it anyway (acks of another
   * run's messages) waits for room rather than failing. */
  m.jo.PublishAsync.StallWait = ACK_WAIT_MS;
  size_t window_max = c.max_pending > c.batch ? c.max_pending : c.batch;
  int status = 0;
  m.topics = calloc(c.n_topics, sizeof *m.topics);
  if (!m.topics) {
    status = cli_error("%s: out of memory", who(&m));
    goto done;
  }
  for (size_t i = 0; i < c.n_topics; i++) {
    struct topic_state *t = &m.topics[i];
    t->name = c.topics[i];
    snprintf(t->subject, sizeof t->subject, "%s.%s", c.prefix, t->name);
    if (!subject_ok(t->subject)) {
      status = cli_error(
          "%s: '%s' is not a NATS subject (empty token or wildcard): choose "
          "another --subject-prefix or topic",
          who(&m), t->subject);
      goto done;
    }
  }
  engram_log_info li;
  int lrc = engram_log_info_get(log, &li);
  if (lrc == ENGRAM_ECONN || lrc == ENGRAM_ETIMEDOUT || lrc == ENGRAM_ECLOSED) {
    note(&m, "log info: %s", engram_errmsg(log));
    status = MIRROR_RETRY;
    goto done;
  }
  if (lrc) {
    status = cli_error("%s: log info: %s", who(&m),
                       *engram_errmsg(log) ? engram_errmsg(log) : engram_strerror(lrc));
    goto done;
  }
  if (!*li.id) {
    status = cli_error(
        "%s: the log has no id yet (made by an older engram and only read "
        "since): open it read-write once",
        who(&m));
    goto done;
  }
  snprintf(m.log_id, sizeof m.log_id, "%s", li.id);
  int stream_ok = 0;
  engram_batch *b = NULL;
  size_t rr = 0; /* the topic fetched first in this round */
  while (!stopping(&m)) {
    if (!m.js || natsConnection_Status(m.nc) == NATS_CONN_STATUS_CLOSED) {
      if (m.fl_n) {
        pthread_mutex_lock(&m.mu);
        m.failed = 1; /* recover() reconnects, reads back and publishes again */
        pthread_mutex_unlock(&m.mu);
      } else if (reconnect(&m)) {
        break;
      }
    }
    if (!stream_ok && m.js) {
      int r = ensure_stream(&m);
      if (r < 0) {
        status = CLI_EXIT_FAIL;
        break;
      }
      if (r > 0) {
        if (!m.degraded) note(&m, "%s: retrying", m.last_error);
        m.degraded = 1;
        sleep_ms(BACKOFF_MAX_MS / 5, c.stop);
        continue;
      }
      stream_ok = 1;
    }
    if (failed(&m) && recover(&m)) {
      if (!stopping(&m)) status = CLI_EXIT_FAIL;
      goto done;
    }
    if (retire(&m)) {
      if (!stopping(&m)) status = CLI_EXIT_FAIL;
      goto done;
    }
    /* Fill the window: a batch of each topic in turn while there is room. */
    int fetched = 0, waiting = 0, full = 0;
    for (size_t k = 0; k < c.n_topics && !stopping(&m) && !failed(&m); k++) {
      struct topic_state *t = &m.topics[(rr + k) % c.n_topics];
      if (!t->ready) {
        if (t->flights) continue; /* prepared once its batches have left the window */
        int r = prepare_topic(&m, t);
        if (r < 0) {
          status = CLI_EXIT_FAIL;
          goto done;
        }
        if (r > 0) {
          waiting = 1;
          continue;
        }
      }
      if (m.fl_n == MAX_FLIGHTS || m.window_events + c.batch > window_max) {
        full = 1;
        break;
      }
      int rc = engram_fetch(log, t->name, m.group, "mirror", c.batch, 0, &b);
      if (rc && stopping(&m)) goto done;
      if (rc == ENGRAM_ECONN || rc == ENGRAM_ETIMEDOUT || rc == ENGRAM_ECLOSED) {
        /* A remote log (serve's own daemon, or --connect) went away: the caller may run
         * the mirror again, which reads the stream back first. */
        note(&m, "fetch from %s: %s", t->name, engram_errmsg(log));
        status = MIRROR_RETRY;
        goto done;
      }
      if (rc) {
        status = cli_error("%s: fetch from %s: %s", who(&m), t->name,
                           *engram_errmsg(log) ? engram_errmsg(log) : engram_strerror(rc));
        goto done;
      }
      if (b->count) {
        fetched = 1;
        if (push_flight(&m, t, b)) {
          b = NULL;
          status = CLI_EXIT_FAIL;
          goto done;
        }
      } else {
        engram_batch_free(b);
      }
      b = NULL;
    }
    rr++;
    int64_t now = cli_now_ns();
    int idle = !fetched && !m.fl_n;
    uint64_t lag = 0;
    if (idle || now - m.last_progress_ns > PROGRESS_NS) {
      engram_group_info gi;
      for (size_t i = 0; i < c.n_topics; i++)
        if (m.topics[i].ready && engram_group_info_get(log, m.topics[i].name, m.group, &gi) == 0)
          lag += gi.lag;
    }
    if (now - m.last_progress_ns > PROGRESS_NS && (m.mirrored != m.reported || lag)) {
      m.reported = m.mirrored;
      note(&m, "%" PRIu64 " events mirrored into %s, lag %" PRIu64, m.mirrored, c.stream, lag);
      m.last_progress_ns = now;
    }
    if (m.fl_n) {
      /* Acks to come: wait for the oldest batch's when the window is full, and briefly
       * when nothing new came; go on fetching at once otherwise. */
      if (full || !fetched) wait_oldest(&m, full ? 200 : 20);
      continue;
    }
    if (!idle) continue;
    if (c.once && !waiting && lag == 0) break;
    if (waiting && !m.degraded) {
      note(&m, "%s: waiting", m.last_error);
      m.degraded = 1;
    }
    /* Nothing new: a short long-poll on the first topic, then look at all again. */
    if (!waiting && c.n_topics == 1 && m.topics[0].ready) {
      if (engram_fetch(log, m.topics[0].name, m.group, "mirror", c.batch, 200, &b) == 0 &&
          b->count) {
        int r = push_flight(&m, &m.topics[0], b);
        b = NULL;
        if (r) {
          status = CLI_EXIT_FAIL;
          goto done;
        }
      }
      engram_batch_free(b);
      b = NULL;
    } else {
      sleep_ms(waiting ? 1000 : 50, c.stop);
    }
  }
  /* Stopping: what the stream acknowledges in a moment is acked in the group; the rest
   * is read back by the next run. */
  if (m.fl_n && m.js) {
    wait_acks(&m, 2000);
    if (retire(&m) && status == 0 && !stopping(&m)) status = CLI_EXIT_FAIL;
  }
done:
  if (m.js) {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 1000;
    js_PublishAsyncComplete(m.js, &po);
  }
  mirror_link_close(&m.nc, &m.js);
  drop_window(&m);
  free(m.enc);
  free(m.items);
  free(m.codes);
  if (m.topics)
    for (size_t i = 0; i < c.n_topics; i++) free(m.topics[i].present);
  free(m.topics);
  pthread_cond_destroy(&m.cv);
  pthread_mutex_destroy(&m.mu);
  if (status != CLI_EXIT_FAIL)
    note(&m, "stopped: %" PRIu64 " events mirrored into %s", m.mirrored, c.stream);
  return status;
}
