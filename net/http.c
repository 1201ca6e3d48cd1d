/* http.c — the daemon's HTTP side: the dashboard, its JSON API (with Flower-compatible
 * /api/workers, /api/tasks, /api/task/info/ID), /metrics, /healthz and /readyz, and the
 * sampler keeping each group's counters as a time series. libmicrohttpd runs it on a small
 * pool of its own threads, with bounded connections, memory and time, apart from the
 * ZeroMQ request path; every handler reads through the public API on the daemon's handle. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "net/http.h"
#include "net/net.h"
#include "net/server.h"

#define HTTP_THREADS 2          /* request threads */
#define HTTP_MAX_CONNECTIONS 64 /* open connections at once; more are refused */
#define HTTP_TIMEOUT_S 10       /* an idle or slow connection is closed after this */
#define HTTP_CONN_MEMORY 65536  /* bytes a connection may use for its request */
#define HTTP_MAX_SCAN 2000      /* offsets one event listing looks at */
#define HTTP_MAX_LIST 200       /* events one listing returns */
#define HTTP_MAX_PAYLOAD 65536  /* payload bytes an event's detail shows */

/* ---------------------------------------------------------------------------------
 * Text buffers.
 * ------------------------------------------------------------------------------ */
void hb_put(hbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

void hb_puts(hbuf *b, const char *s) { hb_put(b, s, strlen(s)); }

void hb_printf(hbuf *b, const char *fmt, ...) {
  char tmp[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n < sizeof tmp) {
    hb_put(b, tmp, (size_t)n);
    return;
  }
  char *big = malloc((size_t)n + 1);
  if (!big) {
    b->oom = 1;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  va_end(ap);
  hb_put(b, big, (size_t)n);
  free(big);
}

static void json_strn(hbuf *b, const char *s, size_t n) {
  hb_put(b, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      hb_put(b, e, 2);
    } else if (c < 0x20 || c == 0x7f) {
      hb_printf(b, "\\u%04x", c);
    } else if (c == '<') { /* never "</script>" in a page that embeds JSON */
      hb_puts(b, "\\u003c");
    } else {
      hb_put(b, (const char *)&c, 1);
    }
  }
  hb_put(b, "\"", 1);
}

void hb_json_str(hbuf *b, const char *s) {
  if (!s) {
    hb_puts(b, "null");
    return;
  }
  size_t n = strlen(s);
  if (text_utf8_valid(s, n)) {
    json_strn(b, s, n);
  } else { /* never invalid JSON: bytes that are not UTF-8 become '?' */
    char *c = malloc(n + 1);
    if (!c) {
      b->oom = 1;
      return;
    }
    for (size_t i = 0; i < n; i++) c[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
    json_strn(b, c, n);
    free(c);
  }
}

static void hb_b64(hbuf *b, const unsigned char *p, size_t n) {
  static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  hb_put(b, "\"", 1);
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                 (i + 2 < n ? p[i + 2] : 0);
    char o[4] = {t[v >> 18 & 63], t[v >> 12 & 63], i + 1 < n ? t[v >> 6 & 63] : '=',
                 i + 2 < n ? t[v & 63] : '='};
    hb_put(b, o, 4);
  }
  hb_put(b, "\"", 1);
}

void hb_free(hbuf *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

/* ---------------------------------------------------------------------------------
 * The sampler: every second, each group's counters; every minute, one more.
 * ------------------------------------------------------------------------------ */
struct series {
  char topic[ENGRAM_MAX_NAME + 1], group[ENGRAM_MAX_NAME + 1];
  http_sample sec[HTTP_SECONDS];
  size_t nsec, sec_pos; /* samples held; next slot */
  http_sample min[HTTP_MINUTES];
  size_t nmin, min_pos;
  int64_t minute; /* the minute (t / 60 s) of the newest per-minute sample */
  int alive;      /* seen in the last round */
};

struct http_server {
  struct net_server *s;
  engram *log;
  char token[256];
  int has_token;
  struct MHD_Daemon *d;
  pthread_t sampler;
  int sampler_running;
  pthread_mutex_t mu; /* the series and the counts below */
  pthread_cond_t cv;
  int stop;
  struct series *series[HTTP_MAX_SERIES];
  size_t n_series;
  uint64_t workers_alive, workers_lost;
  _Atomic uint64_t requests, refused;
  _Atomic int started; /* MHD_start_daemon returned: its messages go to the daemon's log */
};

static void push(http_sample *ring, size_t cap, size_t *n, size_t *pos, const http_sample *x) {
  ring[*pos] = *x;
  *pos = (*pos + 1) % cap;
  if (*n < cap) (*n)++;
}

static void sample_once(struct http_server *h) {
  engram_group_info *g = NULL;
  size_t n = 0;
  engram_worker_info *w = NULL;
  size_t nw = 0;
  int64_t now = clock_realtime_ns();
  int grc = engram_group_list(h->log, NULL, &g, &n);
  int wrc = engram_worker_list(h->log, 0, &w, &nw);
  pthread_mutex_lock(&h->mu);
  for (size_t i = 0; i < h->n_series; i++) h->series[i]->alive = 0;
  for (size_t i = 0; grc == 0 && i < n; i++) {
    struct series *se = NULL;
    for (size_t j = 0; j < h->n_series && !se; j++)
      if (!strcmp(h->series[j]->topic, g[i].topic) && !strcmp(h->series[j]->group, g[i].name))
        se = h->series[j];
    if (!se && h->n_series < HTTP_MAX_SERIES && (se = calloc(1, sizeof *se))) {
      snprintf(se->topic, sizeof se->topic, "%s", g[i].topic);
      snprintf(se->group, sizeof se->group, "%s", g[i].name);
      h->series[h->n_series++] = se;
    }
    if (!se) continue;
    se->alive = 1;
    http_sample x = {.t_ns = now,
                     .head = g[i].floor + g[i].lag,
                     .lag = g[i].lag,
                     .in_flight = g[i].in_flight,
                     .retrying = g[i].retrying,
                     .dead = g[i].dead,
                     .acked = g[i].acked,
                     .delivered = g[i].delivered,
                     .redelivered = g[i].redelivered,
                     .oldest_unfinished_ns = g[i].oldest_unfinished_ns};
    push(se->sec, HTTP_SECONDS, &se->nsec, &se->sec_pos, &x);
    int64_t minute = now / 60000000000ll;
    if (minute != se->minute) {
      se->minute = minute;
      push(se->min, HTTP_MINUTES, &se->nmin, &se->min_pos, &x);
    }
  }
  /* Groups that are gone leave the series. */
  for (size_t i = 0; grc == 0 && i < h->n_series;) {
    if (h->series[i]->alive) {
      i++;
      continue;
    }
    free(h->series[i]);
    h->series[i] = h->series[--h->n_series];
  }
  if (wrc == 0) {
    h->workers_alive = h->workers_lost = 0;
    for (size_t i = 0; i < nw; i++) {
      if (w[i].lost)
        h->workers_lost++;
      else
        h->workers_alive++;
    }
  }
  pthread_mutex_unlock(&h->mu);
  engram_free(g);
  engram_free(w);
}

static void *sampler_main(void *arg) {
  struct http_server *h = arg;
  pthread_mutex_lock(&h->mu);
  while (!h->stop) {
    pthread_mutex_unlock(&h->mu);
    sample_once(h);
    pthread_mutex_lock(&h->mu);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    while (!h->stop && pthread_cond_timedwait(&h->cv, &h->mu, &ts) != ETIMEDOUT) {
    }
  }
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

static double per_s(uint64_t from, uint64_t to, int64_t dt_ns) {
  if (dt_ns <= 0 || to < from) return 0;
  return (double)(to - from) * 1e9 / (double)dt_ns;
}

/* The windows of engram_rate_info, as /metrics labels them. */
static const char *const rate_window[ENGRAM_RATE_WINDOWS] = {"1m", "5m", "15m"};

/* A row's rates as {"window":["1m","5m","15m"],"appended":[a,b,c],...}; a group's row
 * (group != NULL) has every field, a topic's only "appended". */
static void json_rates(hbuf *b, const engram_rate_info *r, size_t nr, const char *topic,
                       const char *group) {
  const engram_rate_info *row = NULL;
  for (size_t i = 0; i < nr && !row; i++)
    if (!strcmp(r[i].topic, topic) && !strcmp(r[i].group, group ? group : "")) row = &r[i];
  static const engram_rate_info none;
  if (!row) row = &none;
  hb_puts(b, "{\"window\":[\"1m\",\"5m\",\"15m\"]");
#define X(type, name)                      \
  if (group || !strcmp(#name, "appended")) \
    hb_printf(b, ",\"" #name "\":[%.3f,%.3f,%.3f]", row->name[0], row->name[1], row->name[2]);
  ENGRAM_RATE_FIELDS(X)
#undef X
  hb_puts(b, "}");
}

static struct series *find_series(struct http_server *h, const char *topic, const char *group) {
  for (size_t i = 0; i < h->n_series; i++)
    if (!strcmp(h->series[i]->topic, topic) && !strcmp(h->series[i]->group, group))
      return h->series[i];
  return NULL;
}

/* ---------------------------------------------------------------------------------
 * Replies.
 * ------------------------------------------------------------------------------ */
struct req {
  struct http_server *h;
  const http_request *rq;
  const char *url, *method;
  hbuf out;
  unsigned status;
  const char *type;
};

static void fail(struct req *r, unsigned status, const char *code, const char *msg) {
  r->out.len = 0;
  r->status = status;
  r->type = "application/json";
  hb_puts(&r->out, "{\"error\":");
  hb_json_str(&r->out, code);
  hb_puts(&r->out, ",\"message\":");
  hb_json_str(&r->out, msg);
  hb_puts(&r->out, "}\n");
}

static void fail_engram(struct req *r, int rc) {
  const char *m = engram_errmsg(r->h->log);
  unsigned st = rc == ENGRAM_ENOTFOUND ? 404 : rc == ENGRAM_EINVAL ? 400 : 500;
  fail(r, st, engram_errname(rc), m && *m ? m : engram_strerror(rc));
}

static const char *arg(struct req *r, const char *name) { return r->rq->arg(r->rq->ctx, name); }

/* A required name argument; NULL (and the reply set) when missing or invalid. */
static const char *name_arg(struct req *r, const char *name) {
  const char *v = arg(r, name);
  size_t n = v ? strlen(v) : 0;
  int ok = n > 0 && n <= ENGRAM_MAX_NAME;
  for (size_t i = 0; ok && i < n; i++)
    ok = (v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z') ||
         (v[i] >= '0' && v[i] <= '9') || v[i] == '.' || v[i] == '_' || v[i] == '-';
  if (ok) return v;
  char msg[128];
  snprintf(msg, sizeof msg, "argument %s: 1-200 characters of [A-Za-z0-9._-] required", name);
  fail(r, 400, "ENGRAM_EINVAL", msg);
  return NULL;
}

/* An unsigned number argument; def when absent; -1 (reply set) when malformed. */
static int u64_arg(struct req *r, const char *name, uint64_t def, uint64_t *out) {
  const char *v = arg(r, name);
  *out = def;
  if (!v) return 0;
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (!*v || *end || errno || *v == '-') {
    char msg[128];
    snprintf(msg, sizeof msg, "argument %s: an unsigned number required", name);
    fail(r, 400, "ENGRAM_EINVAL", msg);
    return -1;
  }
  *out = x;
  return 0;
}

/* ---------------------------------------------------------------------------------
 * JSON objects.
 * ------------------------------------------------------------------------------ */
static void json_topic(hbuf *b, const engram_topic_info *t, const engram_rate_info *r, size_t nr) {
  hb_puts(b, "{\"name\":");
  hb_json_str(b, t->name);
#define X(type, name) hb_printf(b, ",\"" #name "\":%lld", (long long)t->name);
  ENGRAM_TOPIC_INFO_FIELDS(X)
#undef X
  hb_puts(b, ",\"rates\":");
  json_rates(b, r, nr, t->name, NULL);
  hb_puts(b, "}");
}

static void json_group(hbuf *b, const engram_group_info *g, int64_t now, const engram_rate_info *r,
                       size_t nr) {
  hb_puts(b, "{\"topic\":");
  hb_json_str(b, g->topic);
  hb_puts(b, ",\"name\":");
  hb_json_str(b, g->name);
#define X(type, name) hb_printf(b, ",\"" #name "\":%lld", (long long)g->name);
  ENGRAM_GROUP_INFO_COUNTERS(X)
#undef X
  hb_printf(b, ",\"oldest_unfinished_seconds\":%.3f",
            g->oldest_unfinished_ns > 0 ? (double)(now - g->oldest_unfinished_ns) / 1e9 : 0.0);
  hb_printf(b, ",\"ack_wait_ms\":%llu,\"max_deliver\":%u,\"rates\":",
            (unsigned long long)g->ack_wait_ms, g->max_deliver);
  json_rates(b, r, nr, g->topic, g->name);
  hb_puts(b, "}");
}

static void json_worker(hbuf *b, const engram_worker_info *w) {
  hb_puts(b, "{\"name\":");
  hb_json_str(b, w->name);
  hb_puts(b, ",\"host\":");
  hb_json_str(b, w->host);
  hb_printf(b,
            ",\"pid\":%u,\"concurrency\":%u,\"started_ns\":%lld,\"last_seen_ns\":%lld,"
            "\"handled\":%llu,\"failed\":%llu,\"lost\":%s,\"groups\":[",
            w->pid, w->concurrency, (long long)w->started_ns, (long long)w->last_seen_ns,
            (unsigned long long)w->handled, (unsigned long long)w->failed,
            w->lost ? "true" : "false");
  for (size_t i = 0; i < w->n_groups; i++) {
    if (i) hb_puts(b, ",");
    hb_json_str(b, w->groups[i]);
  }
  hb_puts(b, "],\"running\":[");
  for (size_t i = 0; i < w->n_running; i++) {
    hb_puts(b, i ? ",{\"topic\":" : "{\"topic\":");
    hb_json_str(b, w->running[i].topic);
    hb_puts(b, ",\"group\":");
    hb_json_str(b, w->running[i].group);
    hb_printf(b, ",\"offset\":%llu,\"since_ns\":%lld}", (unsigned long long)w->running[i].offset,
              (long long)w->running[i].since_ns);
  }
  hb_puts(b, "]}");
}

static void json_schedule(hbuf *b, const engram_schedule_info *s) {
  hb_puts(b, "{\"name\":");
  hb_json_str(b, s->name);
  hb_printf(b, ",\"every_ms\":%llu,\"cron\":", (unsigned long long)s->config.every_ms);
  hb_json_str(b, s->config.cron ? s->config.cron : "");
  hb_puts(b, ",\"tz\":");
  hb_json_str(b, s->config.tz ? s->config.tz : "UTC");
  hb_puts(b, ",\"topic\":");
  hb_json_str(b, s->config.topic ? s->config.topic : "");
  hb_puts(b, ",\"type\":");
  hb_json_str(b, s->config.type ? s->config.type : "");
#define X(type, name) hb_printf(b, ",\"" #name "\":%lld", (long long)s->name);
  ENGRAM_SCHEDULE_INFO_FIELDS(X)
#undef X
  hb_puts(b, ",\"last_error\":");
  hb_json_str(b, s->last_error);
  hb_puts(b, "}");
}

/* The schedules as a JSON array; "[]" when the handle has none (or cannot list them). */
static void json_schedules(hbuf *b, engram *log) {
  engram_schedule_info *s = NULL;
  size_t n = 0;
  hb_puts(b, "[");
  if (engram_schedule_list(log, &s, &n) == 0)
    for (size_t i = 0; i < n; i++) {
      if (i) hb_puts(b, ",");
      json_schedule(b, &s[i]);
    }
  engram_free(s);
  hb_puts(b, "]");
}

static void json_payload(hbuf *b, const void *p, size_t n) {
  size_t shown = n > HTTP_MAX_PAYLOAD ? HTTP_MAX_PAYLOAD : n;
  int text = text_utf8_valid(p, shown) && !memchr(p, '\0', shown);
  hb_printf(b, "\"payload_len\":%zu,\"payload_truncated\":%s,", n, shown < n ? "true" : "false");
  if (text) {
    hb_puts(b, "\"payload\":");
    json_strn(b, p, shown);
  } else {
    hb_puts(b, "\"payload_b64\":");
    hb_b64(b, p, shown);
  }
}

/* ---------------------------------------------------------------------------------
 * Endpoints.
 * ------------------------------------------------------------------------------ */
static void ep_overview(struct req *r) {
  engram_topic_info *t = NULL;
  engram_group_info *g = NULL;
  engram_worker_info *w = NULL;
  engram_rate_info *rt = NULL;
  size_t nt = 0, ng = 0, nw = 0, nr = 0;
  int rc = engram_topic_list(r->h->log, &t, &nt);
  if (rc == 0) rc = engram_group_list(r->h->log, NULL, &g, &ng);
  if (rc == 0) rc = engram_worker_list(r->h->log, 0, &w, &nw);
  if (rc == 0) rc = engram_rate_list(r->h->log, NULL, &rt, &nr);
  if (rc) {
    fail_engram(r, rc);
    goto out;
  }
  int64_t now = clock_realtime_ns();
  hbuf *b = &r->out;
  hb_printf(b, "{\"now_ns\":%lld,\"version\":", (long long)now);
  hb_json_str(b, ENGRAM_VERSION_STRING);
  hb_puts(b, ",\"topics\":[");
  for (size_t i = 0; i < nt; i++) {
    if (i) hb_puts(b, ",");
    json_topic(b, &t[i], rt, nr);
  }
  hb_puts(b, "],\"groups\":[");
  for (size_t i = 0; i < ng; i++) {
    if (i) hb_puts(b, ",");
    json_group(b, &g[i], now, rt, nr);
  }
  hb_puts(b, "],\"workers\":[");
  for (size_t i = 0; i < nw; i++) {
    if (i) hb_puts(b, ",");
    json_worker(b, &w[i]);
  }
  hb_puts(b, "],\"schedules\":");
  json_schedules(b, r->h->log);
  hb_puts(b, "}\n");
out:
  engram_free(t);
  engram_free(g);
  engram_free(w);
  engram_free(rt);
}

static void ep_series(struct req *r) {
  const char *topic = name_arg(r, "topic"), *group = topic ? name_arg(r, "group") : NULL;
  if (!group) return;
  const char *res = arg(r, "res");
  int minutes = res && !strcmp(res, "min");
  struct http_server *h = r->h;
  pthread_mutex_lock(&h->mu);
  struct series *se = find_series(h, topic, group);
  if (!se) {
    pthread_mutex_unlock(&h->mu);
    fail(r, 404, "ENGRAM_ENOTFOUND", "no such group (or not sampled yet)");
    return;
  }
  const http_sample *ring = minutes ? se->min : se->sec;
  size_t n = minutes ? se->nmin : se->nsec, pos = minutes ? se->min_pos : se->sec_pos,
         cap = minutes ? HTTP_MINUTES : HTTP_SECONDS;
  hbuf *b = &r->out;
  hb_printf(b, "{\"resolution\":\"%s\",\"samples\":[", minutes ? "min" : "sec");
  for (size_t i = 0; i < n; i++) {
    const http_sample *x = &ring[(pos + cap - n + i) % cap];
    const http_sample *p = i ? &ring[(pos + cap - n + i - 1) % cap] : NULL;
    int64_t dt = p ? x->t_ns - p->t_ns : 0;
    hb_printf(
        b,
        "%s{\"t_ns\":%lld,\"lag\":%llu,\"in_flight\":%llu,\"retrying\":%llu,\"dead\":%llu,"
        "\"oldest_unfinished_seconds\":%.3f,\"appended_per_s\":%.3f,\"delivered_per_s\":%.3f,"
        "\"acked_per_s\":%.3f,\"redelivered_per_s\":%.3f,\"dead_per_s\":%.3f}",
        i ? "," : "", (long long)x->t_ns, (unsigned long long)x->lag,
        (unsigned long long)x->in_flight, (unsigned long long)x->retrying,
        (unsigned long long)x->dead,
        x->oldest_unfinished_ns > 0 ? (double)(x->t_ns - x->oldest_unfinished_ns) / 1e9 : 0.0,
        p ? per_s(p->head, x->head, dt) : 0.0, p ? per_s(p->delivered, x->delivered, dt) : 0.0,
        p ? per_s(p->acked, x->acked, dt) : 0.0,
        p ? per_s(p->redelivered, x->redelivered, dt) : 0.0, p ? per_s(p->dead, x->dead, dt) : 0.0);
  }
  pthread_mutex_unlock(&h->mu);
  hb_puts(b, "]}\n");
}

/* Celery's names for engram's states, for the Flower-compatible endpoints. */
static const char *celery_state(engram_event_state s) {
  switch (s) {
    case ENGRAM_STATE_PENDING:
      return "RECEIVED";
    case ENGRAM_STATE_IN_FLIGHT:
      return "STARTED";
    case ENGRAM_STATE_RETRYING:
      return "RETRY";
    case ENGRAM_STATE_DONE:
      return "SUCCESS";
    case ENGRAM_STATE_DEAD:
      return "FAILURE";
    case ENGRAM_STATE_SKIPPED:
      return "IGNORED";
  }
  return "PENDING";
}

/* A Celery task's name: its "task" header (what engram.celery and Celery's own messages
 * carry), else the event type. */
static const char *task_name(const engram_event *e) {
  for (size_t i = 0; i < e->n_headers; i++)
    if (!strcmp(e->headers[i].name, "task")) return e->headers[i].value;
  return e->type;
}

/* An event's ack result as a JSON string; null when there is none or it is not UTF-8. */
static void json_result(hbuf *b, const engram_status *st) {
  if (st->result && text_utf8_valid(st->result, st->result_len))
    json_strn(b, st->result, st->result_len);
  else
    hb_puts(b, "null");
}

/* Flower's fields of a task (its /api/tasks entry, the head of /api/task/info): uuid,
 * name, state, received, retries, worker, exception and result (the ack's result as
 * text, null when none or not UTF-8). Ends with a comma. */
static void flower_fields(hbuf *b, const char *topic, uint64_t offset, const engram_event *e,
                          const engram_status *st) {
  hb_printf(b, "\"uuid\":\"%s:%llu\",\"name\":", topic, (unsigned long long)offset);
  hb_json_str(b, e ? task_name(e) : "");
  hb_printf(
      b, ",\"state\":\"%s\",\"received\":%.6f,\"retries\":%u,\"worker\":", celery_state(st->state),
      e ? (double)e->timestamp_ns / 1e9 : 0.0, st->attempt ? st->attempt - 1 : 0);
  hb_json_str(b, st->consumer);
  hb_puts(b, ",\"exception\":");
  hb_json_str(b, st->last_error);
  hb_puts(b, ",\"result\":");
  json_result(b, st);
  hb_puts(b, ",");
}

/* One event's detail: the event, and its state in `group` (may be NULL: "status" null).
 * With `flower`, Flower's task fields (flower_fields) come first. */
static int event_detail(struct req *r, hbuf *b, const char *topic, const char *group,
                        uint64_t offset, int flower) {
  engram_batch *ev = NULL;
  int rc = engram_read(r->h->log, topic, offset, &ev);
  if (rc) return rc;
  const engram_event *e = &ev->events[0];
  engram_status st;
  int has_status = group && engram_status_get(r->h->log, topic, group, offset, &st) == 0;
  hb_puts(b, "{");
  if (flower) {
    engram_status none = {.state = ENGRAM_STATE_PENDING};
    flower_fields(b, topic, offset, e, has_status ? &st : &none);
  }
  hb_puts(b, "\"topic\":");
  hb_json_str(b, topic);
  hb_printf(b, ",\"offset\":%llu,\"id\":\"%s:%llu\",\"type\":", (unsigned long long)offset, topic,
            (unsigned long long)offset);
  hb_json_str(b, e->type);
  hb_puts(b, ",\"key\":");
  hb_json_str(b, e->key);
  hb_puts(b, ",\"content_type\":");
  hb_json_str(b, e->content_type);
  hb_printf(b, ",\"timestamp_ns\":%lld,\"deliver_at_ns\":%lld,\"headers\":{",
            (long long)e->timestamp_ns, (long long)e->deliver_at_ns);
  for (size_t i = 0; i < e->n_headers; i++) {
    if (i) hb_puts(b, ",");
    hb_json_str(b, e->headers[i].name);
    hb_puts(b, ":");
    hb_json_str(b, e->headers[i].value);
  }
  hb_puts(b, "},");
  json_payload(b, e->payload, e->payload_len);
  engram_batch_free(ev);
  hb_puts(b, ",\"status\":");
  if (has_status) {
    hb_puts(b, "{\"group\":");
    hb_json_str(b, group);
    hb_puts(b, ",\"state\":");
    hb_json_str(b, engram_state_name(st.state));
    hb_puts(b, ",\"consumer\":");
    hb_json_str(b, st.consumer);
    hb_printf(b, ",\"attempt\":%u,\"deadline_ns\":%lld,\"last_error\":", st.attempt,
              (long long)st.deadline_ns);
    hb_json_str(b, st.last_error);
    hb_puts(b, ",\"result\":");
    json_result(b, &st);
    engram_free(st.result);
    hb_puts(b, "}");
  } else {
    hb_puts(b, "null");
  }
  hb_puts(b, "}");
  return 0;
}

static void ep_event(struct req *r) {
  const char *topic = name_arg(r, "topic");
  if (!topic) return;
  const char *group = arg(r, "group");
  if (group && !name_arg(r, "group")) return;
  uint64_t off;
  if (u64_arg(r, "offset", 0, &off)) return;
  int rc = event_detail(r, &r->out, topic, group, off, 0);
  if (rc)
    fail_engram(r, rc);
  else
    hb_puts(&r->out, "\n");
}

/* The states a listing may ask for: engram's names; "" (or none) = any unfinished. */
static int known_state(const char *state) {
  static const char *const names[] = {"pending", "in_flight", "retrying",
                                      "done",    "dead",      "skipped"};
  if (!state || !*state) return 1;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (!strcmp(state, names[i])) return 1;
  return 0;
}

/* Calls fn for the group's events whose state matches `state`, at most `limit`, looking
 * at HTTP_MAX_SCAN offsets. Unfinished states ("" = any unfinished) are looked for from
 * the group's floor up, oldest first: every event at or below the floor is finished.
 * Finished ones ("done", "skipped") and ALL_STATES (every state but skipped, as Flower
 * lists tasks) are looked for from the topic's head down, newest first, since most of them
 * lie at or below the floor; "dead" lists the dead-letter queue. */
#define ALL_STATES "*"
typedef void (*event_fn)(struct req *r, const char *topic, const char *group, uint64_t offset,
                         const engram_status *st, int first);
static int each_event(struct req *r, const char *topic, const char *group, const char *state,
                      uint64_t limit, event_fn fn) {
  engram_group_info g;
  int rc = engram_group_info_get(r->h->log, topic, group, &g);
  if (rc) return rc;
  uint64_t head = g.floor + g.lag, shown = 0;
  int first = 1;
  if (state && !strcmp(state, "dead")) {
    engram_dlq_entry *d = NULL;
    size_t n = 0;
    if ((rc = engram_dlq_list(r->h->log, topic, group, 0, (size_t)limit, &d, &n))) return rc;
    for (size_t i = 0; i < n; i++) {
      engram_status st = {.state = ENGRAM_STATE_DEAD, .attempt = d[i].attempts};
      snprintf(st.consumer, sizeof st.consumer, "%s", d[i].consumer);
      snprintf(st.last_error, sizeof st.last_error, "%s", d[i].reason);
      fn(r, topic, group, d[i].offset, &st, first);
      first = 0;
    }
    engram_free(d);
    return 0;
  }
  int all = state && !strcmp(state, ALL_STATES);
  int down = all || (state && (!strcmp(state, "done") || !strcmp(state, "skipped")));
  uint64_t lo = down ? (head > HTTP_MAX_SCAN ? head - HTTP_MAX_SCAN + 1 : 1) : g.floor + 1;
  uint64_t hi = down ? head : (head - g.floor > HTTP_MAX_SCAN ? g.floor + HTTP_MAX_SCAN : head);
  for (uint64_t i = 0; lo + i <= hi && shown < limit; i++) {
    uint64_t o = down ? hi - i : lo + i;
    engram_status st;
    if (engram_status_get(r->h->log, topic, group, o, &st)) continue; /* removed by retention */
    if (all               ? st.state != ENGRAM_STATE_SKIPPED
        : state && *state ? !strcmp(state, engram_state_name(st.state))
                          : st.state != ENGRAM_STATE_DONE && st.state != ENGRAM_STATE_SKIPPED) {
      fn(r, topic, group, o, &st, first);
      first = 0;
      shown++;
    }
    engram_free(st.result);
  }
  return 0;
}

static void list_one(struct req *r, const char *topic, const char *group, uint64_t offset,
                     const engram_status *st, int first) {
  hbuf *b = &r->out;
  hb_printf(
      b, "%s{\"offset\":%llu,\"id\":\"%s:%llu\",\"state\":\"%s\",\"consumer\":", first ? "" : ",",
      (unsigned long long)offset, topic, (unsigned long long)offset, engram_state_name(st->state));
  hb_json_str(b, st->consumer);
  hb_printf(b, ",\"attempt\":%u,\"deadline_ns\":%lld,\"last_error\":", st->attempt,
            (long long)st->deadline_ns);
  hb_json_str(b, st->last_error);
  hb_puts(b, "}");
}

static void ep_events(struct req *r) {
  const char *topic = name_arg(r, "topic"), *group = topic ? name_arg(r, "group") : NULL;
  if (!group) return;
  uint64_t limit;
  if (u64_arg(r, "limit", 50, &limit)) return;
  if (limit == 0 || limit > HTTP_MAX_LIST) limit = HTTP_MAX_LIST;
  const char *state = arg(r, "state");
  if (!known_state(state)) {
    fail(r, 400, "ENGRAM_EINVAL",
         "state: pending, in_flight, retrying, done, dead or skipped (none: any unfinished)");
    return;
  }
  hb_puts(&r->out, "{\"events\":[");
  int rc = each_event(r, topic, group, state, limit, list_one);
  if (rc)
    fail_engram(r, rc);
  else
    hb_puts(&r->out, "]}\n");
}

static void ep_dlq(struct req *r) {
  const char *topic = name_arg(r, "topic"), *group = topic ? name_arg(r, "group") : NULL;
  if (!group) return;
  engram_dlq_entry *d = NULL;
  size_t n = 0;
  int rc = engram_dlq_list(r->h->log, topic, group, 0, HTTP_MAX_LIST, &d, &n);
  if (rc) {
    fail_engram(r, rc);
    return;
  }
  hbuf *b = &r->out;
  hb_puts(b, "{\"entries\":[");
  for (size_t i = 0; i < n; i++) {
    hb_printf(b, "%s{\"offset\":%llu,\"attempts\":%u,\"reason\":", i ? "," : "",
              (unsigned long long)d[i].offset, d[i].attempts);
    hb_json_str(b, d[i].reason);
    hb_puts(b, ",\"last_error\":");
    hb_json_str(b, d[i].last_error);
    hb_puts(b, ",\"consumer\":");
    hb_json_str(b, d[i].consumer);
    hb_printf(b, ",\"first_delivered_ns\":%lld,\"dead_ns\":%lld}",
              (long long)d[i].first_delivered_ns, (long long)d[i].dead_ns);
  }
  hb_puts(b, "]}\n");
  engram_free(d);
}

/* POST /api/dlq/redrive or /api/dlq/purge ?topic&group&offset=N (or all=1). */
static void ep_dlq_change(struct req *r, int redrive) {
  const char *topic = name_arg(r, "topic"), *group = topic ? name_arg(r, "group") : NULL;
  if (!group) return;
  uint64_t off, all;
  if (u64_arg(r, "offset", 0, &off) || u64_arg(r, "all", 0, &all)) return;
  if (!off && all != 1) {
    fail(r, 400, "ENGRAM_EINVAL", "give offset=N, or all=1 for the whole queue");
    return;
  }
  size_t count = 0;
  int rc = redrive
               ? engram_dlq_redrive(r->h->log, topic, group, off ? &off : NULL, off ? 1 : 0, &count)
               : engram_dlq_purge(r->h->log, topic, group, off ? &off : NULL, off ? 1 : 0, &count);
  if (rc) {
    fail_engram(r, rc);
    return;
  }
  if (r->h->s) net_server_topic_changed(r->h->s, topic); /* a parked fetch may now have work */
  hb_printf(&r->out, "{\"count\":%zu}\n", count);
}

/* ---------------------------------------------------------------------------------
 * Schedules.
 * ------------------------------------------------------------------------------ */
static void ep_schedules(struct req *r) {
  hb_puts(&r->out, "{\"schedules\":");
  json_schedules(&r->out, r->h->log);
  hb_puts(&r->out, "}\n");
}

/* POST /api/schedules/run, /pause or /resume ?name=N. */
static void ep_schedule_change(struct req *r, const char *what) {
  const char *name = name_arg(r, "name");
  if (!name) return;
  uint64_t off = 0;
  int rc = !strcmp(what, "run")     ? engram_schedule_run_now(r->h->log, name, &off)
           : !strcmp(what, "pause") ? engram_schedule_pause(r->h->log, name)
                                    : engram_schedule_resume(r->h->log, name);
  if (rc) {
    fail_engram(r, rc);
    return;
  }
  hb_printf(&r->out, "{\"ok\":true,\"offset\":%llu}\n", (unsigned long long)off);
}

static void flower_task(struct req *r, const char *topic, const char *group, uint64_t offset,
                        const engram_status *st, int first) {
  hbuf *b = &r->out;
  engram_batch *ev = NULL;
  int found = engram_read(r->h->log, topic, offset, &ev) == 0;
  hb_printf(b, "%s\"%s:%llu\":{", first ? "" : ",", topic, (unsigned long long)offset);
  flower_fields(b, topic, offset, found ? &ev->events[0] : NULL, st);
  hb_puts(b, "\"topic\":");
  hb_json_str(b, topic);
  hb_puts(b, ",\"group\":");
  hb_json_str(b, group);
  hb_puts(b, "}");
  engram_batch_free(ev);
}

/* Flower's state names back to engram's; NULL for a name that is not one. No state:
 * every task. */
static const char *state_from_celery(const char *celery) {
  static const char *const m[][2] = {{"RECEIVED", "pending"},  {"PENDING", "pending"},
                                     {"STARTED", "in_flight"}, {"RETRY", "retrying"},
                                     {"SUCCESS", "done"},      {"FAILURE", "dead"},
                                     {"IGNORED", "skipped"}};
  if (!celery || !*celery) return ALL_STATES;
  for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
    if (!strcmp(celery, m[i][0])) return m[i][1];
  return NULL;
}

static void ep_flower_tasks(struct req *r) {
  uint64_t limit;
  if (u64_arg(r, "limit", 100, &limit)) return;
  if (limit == 0 || limit > HTTP_MAX_LIST) limit = HTTP_MAX_LIST;
  const char *state = state_from_celery(arg(r, "state"));
  if (!state) {
    fail(
        r, 400, "ENGRAM_EINVAL",
        "state: RECEIVED, PENDING, STARTED, RETRY, SUCCESS, FAILURE or IGNORED (none: every task)");
    return;
  }
  engram_group_info *g = NULL;
  size_t ng = 0;
  int rc = engram_group_list(r->h->log, NULL, &g, &ng);
  if (rc) {
    fail_engram(r, rc);
    return;
  }
  hb_puts(&r->out, "{");
  int any = 0;
  for (size_t i = 0; i < ng; i++) {
    size_t before = r->out.len;
    if (any) hb_puts(&r->out, ",");
    size_t start = r->out.len;
    each_event(r, g[i].topic, g[i].name, state, limit, flower_task);
    if (r->out.len == start) {
      r->out.len = before; /* nothing listed: drop the comma */
      r->out.p[before] = '\0';
    } else {
      any = 1;
    }
  }
  hb_puts(&r->out, "}\n");
  engram_free(g);
}

/* GET /api/task/info/TOPIC:OFFSET[?group=G]: the first group of the topic by default. */
static void ep_flower_task_info(struct req *r, const char *id) {
  char topic[ENGRAM_MAX_NAME + 1];
  const char *colon = strrchr(id, ':');
  char *end;
  if (!colon || colon == id || (size_t)(colon - id) > ENGRAM_MAX_NAME || !colon[1]) {
    fail(r, 400, "ENGRAM_EINVAL", "task id: TOPIC:OFFSET");
    return;
  }
  memcpy(topic, id, (size_t)(colon - id));
  topic[colon - id] = '\0';
  errno = 0;
  unsigned long long off = strtoull(colon + 1, &end, 10);
  if (*end || errno || colon[1] == '-') {
    fail(r, 400, "ENGRAM_EINVAL", "task id: TOPIC:OFFSET");
    return;
  }
  const char *group = arg(r, "group");
  engram_group_info *g = NULL;
  size_t ng = 0;
  if (!group && engram_group_list(r->h->log, topic, &g, &ng) == 0 && ng > 0) group = g[0].name;
  int rc = event_detail(r, &r->out, topic, group, off, 1);
  engram_free(g);
  if (rc)
    fail_engram(r, rc);
  else
    hb_puts(&r->out, "\n");
}

/* Flower's /api/workers: an object keyed by worker name. */
static void ep_flower_workers(struct req *r) {
  engram_worker_info *w = NULL;
  size_t n = 0;
  int rc = engram_worker_list(r->h->log, 0, &w, &n);
  if (rc) {
    fail_engram(r, rc);
    return;
  }
  hbuf *b = &r->out;
  hb_puts(b, "{");
  for (size_t i = 0; i < n; i++) {
    if (i) hb_puts(b, ",");
    hb_json_str(b, w[i].name);
    hb_printf(b, ":{\"status\":%s,\"hostname\":", w[i].lost ? "false" : "true");
    hb_json_str(b, w[i].host);
    hb_printf(b,
              ",\"pid\":%u,\"stats\":{\"pid\":%u,\"pool\":{\"max-concurrency\":%u},\"total\":"
              "%llu,\"failed\":%llu},\"active\":[",
              w[i].pid, w[i].pid, w[i].concurrency, (unsigned long long)w[i].handled,
              (unsigned long long)w[i].failed);
    for (size_t k = 0; k < w[i].n_running; k++)
      hb_printf(b, "%s{\"id\":\"%s:%llu\",\"topic\":\"%s\",\"group\":\"%s\",\"time_start\":%.6f}",
                k ? "," : "", w[i].running[k].topic, (unsigned long long)w[i].running[k].offset,
                w[i].running[k].topic, w[i].running[k].group,
                (double)w[i].running[k].since_ns / 1e9);
    hb_puts(b, "],\"queues\":[");
    for (size_t k = 0; k < w[i].n_groups; k++) {
      if (k) hb_puts(b, ",");
      hb_json_str(b, w[i].groups[k]);
    }
    hb_puts(b, "],\"engram\":");
    json_worker(b, &w[i]);
    hb_puts(b, "}");
  }
  hb_puts(b, "}\n");
  engram_free(w);
}

static void metric(hbuf *b, const char *name, const char *type, const char *help) {
  hb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A duration histogram in Prometheus' form: cumulative _bucket{le} in seconds, _sum, _count. */
static void metric_hist(hbuf *b, const char *name, const char *help,
                        const engram_duration_hist *x) {
  static const uint64_t bounds_us[] = ENGRAM_DURATION_BOUNDS_US;
  metric(b, name, "histogram", help);
  uint64_t cum = 0;
  for (size_t i = 0; i < ENGRAM_DURATION_BUCKETS; i++) {
    cum += x->buckets[i];
    if (i < sizeof bounds_us / sizeof *bounds_us)
      hb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, (double)bounds_us[i] / 1e6,
                (unsigned long long)cum);
    else
      hb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
  }
  hb_printf(b, "%s_sum %.9f\n%s_count %llu\n", name, (double)x->sum_ns / 1e9, name,
            (unsigned long long)x->count);
}

static void ep_metrics(struct req *r) {
  struct http_server *h = r->h;
  hbuf *b = &r->out;
  r->type = "text/plain; version=0.0.4; charset=utf-8";
  engram_topic_info *t = NULL;
  engram_group_info *g = NULL;
  size_t nt = 0, ng = 0;
  int rc = engram_topic_list(h->log, &t, &nt);
  if (rc == 0) rc = engram_group_list(h->log, NULL, &g, &ng);
  if (rc) {
    engram_free(t);
    fail_engram(r, rc);
    return;
  }
  int64_t now = clock_realtime_ns();
  metric(b, "engram_up", "gauge", "1 while the daemon serves");
  hb_puts(b, "engram_up 1\n");
  metric(b, "engram_topic_head_offset", "gauge", "highest offset assigned in the topic");
  for (size_t i = 0; i < nt; i++)
    hb_printf(b, "engram_topic_head_offset{topic=\"%s\"} %llu\n", t[i].name,
              (unsigned long long)t[i].head_offset);
  metric(b, "engram_topic_events", "gauge", "events stored in the topic");
  for (size_t i = 0; i < nt; i++)
    hb_printf(b, "engram_topic_events{topic=\"%s\"} %llu\n", t[i].name,
              (unsigned long long)t[i].count);
  metric(b, "engram_appends_total", "counter", "events appended to the topic (its head offset)");
  for (size_t i = 0; i < nt; i++)
    hb_printf(b, "engram_appends_total{topic=\"%s\"} %llu\n", t[i].name,
              (unsigned long long)t[i].head_offset);
  static const struct {
    const char *name, *type, *help;
    size_t off;
  } gm[] = {
      {"engram_group_lag", "gauge", "topic head minus the group's ack floor",
       offsetof(engram_group_info, lag)},
      {"engram_group_in_flight", "gauge", "events leased and not finished",
       offsetof(engram_group_info, in_flight)},
      {"engram_group_retrying", "gauge", "events waiting for a retry delay",
       offsetof(engram_group_info, retrying)},
      {"engram_dlq_size", "gauge", "events in the group's dead-letter queue",
       offsetof(engram_group_info, dead)},
      {"engram_acks_total", "counter", "acks accepted by the group",
       offsetof(engram_group_info, acked)},
      {"engram_deliveries_total", "counter", "deliveries by the group",
       offsetof(engram_group_info, delivered)},
      {"engram_redeliveries_total", "counter", "deliveries with attempt > 1",
       offsetof(engram_group_info, redelivered)},
      {"engram_nacks_total", "counter", "nacks accepted by the group",
       offsetof(engram_group_info, nacked)},
      {"engram_rejects_total", "counter", "rejects accepted by the group",
       offsetof(engram_group_info, rejected)},
      {"engram_dead_letters_total", "counter",
       "events that entered the group's dead-letter queue (rejects, max_deliver, damage)",
       offsetof(engram_group_info, dead_lettered)},
  };
  for (size_t k = 0; k < sizeof gm / sizeof gm[0]; k++) {
    metric(b, gm[k].name, gm[k].type, gm[k].help);
    for (size_t i = 0; i < ng; i++) {
      uint64_t v;
      memcpy(&v, (const char *)&g[i] + gm[k].off, sizeof v);
      hb_printf(b, "%s{topic=\"%s\",group=\"%s\"} %llu\n", gm[k].name, g[i].topic, g[i].name,
                (unsigned long long)v);
    }
  }
  metric(b, "engram_oldest_unfinished_seconds", "gauge",
         "age of the group's oldest unfinished event, 0 when none");
  for (size_t i = 0; i < ng; i++)
    hb_printf(
        b, "engram_oldest_unfinished_seconds{topic=\"%s\",group=\"%s\"} %.3f\n", g[i].topic,
        g[i].name,
        g[i].oldest_unfinished_ns > 0 ? (double)(now - g[i].oldest_unfinished_ns) / 1e9 : 0.0);
  engram_rate_info *rt = NULL;
  size_t nr = 0;
  if (engram_rate_list(h->log, NULL, &rt, &nr) == 0) {
    metric(b, "engram_topic_appended_per_second", "gauge",
           "events appended to the topic per second over the window");
    for (size_t i = 0; i < nr; i++)
      for (int k = 0; k < ENGRAM_RATE_WINDOWS && !rt[i].group[0]; k++)
        hb_printf(b, "engram_topic_appended_per_second{topic=\"%s\",window=\"%s\"} %.6f\n",
                  rt[i].topic, rate_window[k], rt[i].appended[k]);
#define X(type, name)                                                                     \
  if (strcmp(#name, "appended")) {                                                        \
    metric(b, "engram_group_" #name "_per_second", "gauge",                               \
           "the group's " #name " events per second over the window (engram_rate_list)"); \
    for (size_t i = 0; i < nr; i++)                                                       \
      for (int k = 0; k < ENGRAM_RATE_WINDOWS && rt[i].group[0]; k++)                     \
        hb_printf(b,                                                                      \
                  "engram_group_" #name                                                   \
                  "_per_second{topic=\"%s\",group=\"%s\",window=\"%s\"} %.6f\n",          \
                  rt[i].topic, rt[i].group, rate_window[k], rt[i].name[k]);               \
  }
    ENGRAM_RATE_FIELDS(X)
#undef X
    engram_free(rt);
  }
  engram_schedule_info *sc = NULL;
  size_t nsc = 0;
  if (engram_schedule_list(h->log, &sc, &nsc) == 0 && nsc) {
    static const struct {
      const char *name, *type, *help;
      size_t off;
      int ns; /* a time: shown in seconds */
    } sm[] = {
        {"engram_schedule_fires_total", "counter", "slots the schedule fired (scheduled, catch-up)",
         offsetof(engram_schedule_info, fires), 0},
        {"engram_schedule_manual_fires_total", "counter", "fires by run-now",
         offsetof(engram_schedule_info, manual_fires), 0},
        {"engram_schedule_skipped_total", "counter",
         "slots passed over (missed-fire policy, pause)", offsetof(engram_schedule_info, skipped),
         0},
        {"engram_schedule_paused", "gauge", "1 while the schedule is paused",
         offsetof(engram_schedule_info, paused), 0},
        {"engram_schedule_last_fire_timestamp_seconds", "gauge",
         "Unix time of the schedule's newest fire, 0 = never",
         offsetof(engram_schedule_info, last_fire_ns), 1},
        {"engram_schedule_next_fire_timestamp_seconds", "gauge",
         "Unix time of the schedule's next slot", offsetof(engram_schedule_info, next_slot_ns), 1},
    };
    for (size_t k = 0; k < sizeof sm / sizeof sm[0]; k++) {
      metric(b, sm[k].name, sm[k].type, sm[k].help);
      for (size_t i = 0; i < nsc; i++) {
        const char *p = (const char *)&sc[i] + sm[k].off;
        if (sm[k].ns) {
          int64_t v;
          memcpy(&v, p, sizeof v);
          hb_printf(b, "%s{schedule=\"%s\"} %.3f\n", sm[k].name, sc[i].name, (double)v / 1e9);
        } else if (sm[k].off == offsetof(engram_schedule_info, paused)) {
          uint32_t v;
          memcpy(&v, p, sizeof v);
          hb_printf(b, "%s{schedule=\"%s\"} %u\n", sm[k].name, sc[i].name, v);
        } else {
          uint64_t v;
          memcpy(&v, p, sizeof v);
          hb_printf(b, "%s{schedule=\"%s\"} %llu\n", sm[k].name, sc[i].name, (unsigned long long)v);
        }
      }
    }
  }
  engram_free(sc);
  uint64_t alive = 0, lost = 0;
  engram_worker_info *w = NULL;
  size_t nw = 0;
  if (engram_worker_list(h->log, 0, &w, &nw) == 0)
    for (size_t i = 0; i < nw; i++) *(w[i].lost ? &lost : &alive) += 1;
  engram_free(w);
  metric(b, "engram_workers_alive", "gauge", "workers seen within the lost timeout (30 s)");
  hb_printf(b, "engram_workers_alive %llu\n", (unsigned long long)alive);
  metric(b, "engram_workers_lost", "gauge", "known workers not seen within the lost timeout");
  hb_printf(b, "engram_workers_lost %llu\n", (unsigned long long)lost);
  engram_commit_stats cs;
  if (engram_commit_stats_get(h->log, &cs) == 0) {
    metric(b, "engram_commits_total", "counter", "write transactions committed");
    hb_printf(b, "engram_commits_total %llu\n", (unsigned long long)cs.commits);
    metric(b, "engram_commit_flushes_total", "counter", "fdatasync calls of the commit path");
    hb_printf(b, "engram_commit_flushes_total %llu\n", (unsigned long long)cs.flushes);
    metric(b, "engram_appends_shared_total", "counter",
           "single appends of the daemon committed through a commit shared between processes");
    hb_printf(b, "engram_appends_shared_total %llu\n", (unsigned long long)cs.appends_shared);
    metric(b, "engram_appends_carried_total", "counter",
           "appends of other processes the daemon's commits carried");
    hb_printf(b, "engram_appends_carried_total %llu\n", (unsigned long long)cs.appends_carried);
    metric(b, "engram_commit_batch_size", "histogram", "writes carried by one commit");
    static const char *const le[] = {"1", "2", "4", "8", "16", "32", "64", "+Inf"};
    uint64_t cum = 0, sum = 0;
    for (int i = 0; i < 8; i++) {
      cum += cs.batch_hist[i];
      hb_printf(b, "engram_commit_batch_size_bucket{le=\"%s\"} %llu\n", le[i],
                (unsigned long long)cum);
    }
    sum = cs.jobs;
    hb_printf(b, "engram_commit_batch_size_sum %llu\nengram_commit_batch_size_count %llu\n",
              (unsigned long long)sum, (unsigned long long)cum);
    metric_hist(b, "engram_write_latency_seconds",
                "time a write (append, ack, fetch ...) waited from queueing to its durable commit",
                &cs.write_latency);
    metric_hist(b, "engram_commit_duration_seconds",
                "time LMDB took to commit one write transaction (its write-ahead record "
                "written; without the write-ahead file, its data flush included)",
                &cs.commit_duration);
    metric_hist(b, "engram_fsync_duration_seconds",
                "time one flush of the commit path took (the write-ahead file's, one per commit; "
                "without it, mdb_env_sync)",
                &cs.flush_duration);
  }
  engram_space sp;
  if (engram_space_get(h->log, &sp) == 0) {
    static const struct {
      const char *name, *help;
    } space[] = {
        {"engram_data_file_bytes", "size of data.mdb"},
        {"engram_data_used_bytes", "pages of data.mdb the log uses"},
        {"engram_data_free_bytes",
         "free pages of data.mdb, reused by later writes (engram compact --reclaim gives them "
         "back)"},
        {"engram_map_bytes", "size of the log's memory map"},
    };
    const uint64_t v[] = {sp.file_bytes, sp.used_bytes, sp.free_bytes, sp.map_bytes};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
      metric(b, space[i].name, "gauge", space[i].help);
      hb_printf(b, "%s %llu\n", space[i].name, (unsigned long long)v[i]);
    }
  }
  Engram__Wire__StatsResult st = ENGRAM__WIRE__STATS_RESULT__INIT;
  if (h->s) net_server_stats(h->s, &st);
  metric(b, "engram_requests_total", "counter", "ZeroMQ requests answered");
  hb_printf(b, "engram_requests_total %llu\n", (unsigned long long)st.requests);
  metric(b, "engram_request_errors_total", "counter", "ZeroMQ requests answered with an error");
  hb_printf(b, "engram_request_errors_total %llu\n", (unsigned long long)st.errors);
  metric(b, "engram_daemon_appends_total", "counter", "events appended through the daemon");
  hb_printf(b, "engram_daemon_appends_total %llu\n", (unsigned long long)st.appended);
  metric(b, "engram_parked_fetches", "gauge", "long-poll fetches waiting for events");
  hb_printf(b, "engram_parked_fetches %u\n", st.parked);
  metric(b, "engram_http_requests_total", "counter", "HTTP requests served");
  hb_printf(b, "engram_http_requests_total %llu\n", (unsigned long long)h->requests);
  engram_free(t);
  engram_free(g);
}

static void ep_readyz(struct req *r) {
  engram_topic_info *t = NULL;
  size_t n = 0;
  int rc = engram_topic_list(r->h->log, &t, &n);
  engram_free(t);
  r->type = "text/plain; charset=utf-8";
  if (rc) {
    r->status = 503;
    hb_puts(&r->out, "not ready: the log cannot be read\n");
  } else {
    hb_puts(&r->out, "ready\n");
  }
}

/* ---------------------------------------------------------------------------------
 * Authentication and dispatch.
 * ------------------------------------------------------------------------------ */
static int same(const char *a, const char *b) {
  size_t na = strlen(a), nb = strlen(b);
  unsigned d = na != nb;
  for (size_t i = 0; i < na && i < nb; i++) d |= (unsigned char)(a[i] ^ b[i]);
  return d == 0;
}

/* Decodes standard base64 (with padding) into out (cap bytes, NUL-terminated); -1 when
 * src is not base64 or does not fit. */
static int b64_decode(const char *src, char *out, size_t cap) {
  size_t n = 0, bits = 0;
  uint32_t acc = 0;
  for (const char *p = src; *p && *p != '='; p++) {
    const char *t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *at = strchr(t, *p);
    if (!at) return -1;
    acc = acc << 6 | (uint32_t)(at - t);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (n + 1 >= cap) return -1;
      out[n++] = (char)(acc >> bits & 0xff);
    }
  }
  for (const char *p = strchr(src, '='); p && *p; p++)
    if (*p != '=') return -1;
  out[n] = '\0';
  return memchr(out, '\0', n) ? -1 : 0;
}

static int authorized(struct req *r) {
  struct http_server *h = r->h;
  if (!h->has_token) return 1;
  const char *a = r->rq->header(r->rq->ctx, "Authorization");
  if (!a) return 0;
  if (!strncmp(a, "Bearer ", 7)) return same(a + 7, h->token);
  /* Basic auth: any user, the token as the password. */
  char cred[512];
  if (strncmp(a, "Basic ", 6) || b64_decode(a + 6, cred, sizeof cred)) return 0;
  const char *colon = strchr(cred, ':');
  return colon && same(colon + 1, h->token);
}

static void route(struct req *r) {
  const char *u = r->url;
  int get = !strcmp(r->method, "GET") || !strcmp(r->method, "HEAD");
  int post = !strcmp(r->method, "POST");
  r->status = 200;
  r->type = "application/json";
  if (!strcmp(u, "/healthz")) { /* liveness: any method, no token */
    r->type = "text/plain; charset=utf-8";
    hb_puts(&r->out, "ok\n");
    return;
  }
  if (!authorized(r)) {
    fail(r, 401, "ENGRAM_EDENIED", "this daemon's HTTP needs its token (Bearer or Basic auth)");
    return;
  }
  if (post) {
    /* A custom header: a cross-site form or image cannot send one (CSRF). */
    const char *x = r->rq->header(r->rq->ctx, "X-Engram-Csrf");
    if (!x || !*x) {
      fail(r, 403, "ENGRAM_EDENIED", "POST needs the header X-Engram-Csrf: 1");
      return;
    }
    if (!strcmp(u, "/api/dlq/redrive")) return ep_dlq_change(r, 1);
    if (!strcmp(u, "/api/dlq/purge")) return ep_dlq_change(r, 0);
    if (!strcmp(u, "/api/schedules/run")) return ep_schedule_change(r, "run");
    if (!strcmp(u, "/api/schedules/pause")) return ep_schedule_change(r, "pause");
    if (!strcmp(u, "/api/schedules/resume")) return ep_schedule_change(r, "resume");
    fail(r, 404, "ENGRAM_ENOTFOUND", "no such endpoint");
    return;
  }
  if (!get || !strncmp(u, "/api/dlq/", 9) ||
      !strncmp(u, "/api/schedules/", 15)) { /* never a change through GET */
    fail(r, 405, "ENGRAM_EINVAL",
         get ? "this endpoint changes state: use POST" : "only GET, HEAD and POST");
    return;
  }
  if (!strcmp(u, "/") || !strcmp(u, "/index.html")) {
    r->type = "text/html; charset=utf-8";
    hb_puts(&r->out, http_page_html);
  } else if (!strcmp(u, "/readyz")) {
    ep_readyz(r);
  } else if (!strcmp(u, "/metrics")) {
    ep_metrics(r);
  } else if (!strcmp(u, "/api/overview")) {
    ep_overview(r);
  } else if (!strcmp(u, "/api/series")) {
    ep_series(r);
  } else if (!strcmp(u, "/api/events")) {
    ep_events(r);
  } else if (!strcmp(u, "/api/event")) {
    ep_event(r);
  } else if (!strcmp(u, "/api/dlq")) {
    ep_dlq(r);
  } else if (!strcmp(u, "/api/schedules")) {
    ep_schedules(r);
  } else if (!strcmp(u, "/api/workers")) {
    ep_flower_workers(r);
  } else if (!strcmp(u, "/api/tasks")) {
    ep_flower_tasks(r);
  } else if (!strncmp(u, "/api/task/info/", 15)) {
    ep_flower_task_info(r, u + 15);
  } else {
    fail(r, 404, "ENGRAM_ENOTFOUND", "no such endpoint");
  }
}

void http_handle(struct http_server *h, const http_request *rq, http_reply *rp) {
  h->requests++;
  struct req r = {.h = h, .rq = rq, .url = rq->url, .method = rq->method};
  log_error_clear(NULL);
  route(&r);
  if (r.out.oom) {
    hb_free(&r.out);
    fail(&r, 500, "ENGRAM_ENOMEM", "out of memory");
  }
  rp->status = r.status;
  rp->type = r.type;
  rp->out = r.out;
}

static const char *mhd_arg(void *ctx, const char *name) {
  return MHD_lookup_connection_value(ctx, MHD_GET_ARGUMENT_KIND, name);
}

static const char *mhd_header(void *ctx, const char *name) {
  return MHD_lookup_connection_value(ctx, MHD_HEADER_KIND, name);
}

static int posted; /* a non-NULL marker for *con_cls: the request's body is being read */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
  struct http_server *h = cls;
  if (!*con_cls) { /* first call: the headers only */
    *con_cls = &posted;
    return MHD_YES;
  }
  if (*upload_size) { /* bodies carry nothing: arguments are in the URL */
    *upload_size = 0;
    return MHD_YES;
  }
  http_request rq = {.method = method, .url = url, .arg = mhd_arg, .header = mhd_header, .ctx = c};
  http_reply r = {0};
  http_handle(h, &rq, &r);
  struct MHD_Response *resp = MHD_create_response_from_buffer(
      r.out.len, r.out.p ? r.out.p : (void *)"", MHD_RESPMEM_MUST_COPY);
  hb_free(&r.out);
  if (!resp) return MHD_NO;
  MHD_add_response_header(resp, "Content-Type", r.type);
  MHD_add_response_header(resp, "Cache-Control", "no-store");
  MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header(resp, "X-Frame-Options", "DENY");
  MHD_add_response_header(resp, "Content-Security-Policy",
                          "default-src 'self'; script-src 'unsafe-inline'; style-src "
                          "'unsafe-inline'; img-src 'self' data:");
  if (r.status == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Basic realm=\"engram\"");
  enum MHD_Result ret = MHD_queue_response(c, r.status, resp);
  MHD_destroy_response(resp);
  return ret;
}

/* ---------------------------------------------------------------------------------
 * Start and stop.
 * ------------------------------------------------------------------------------ */
/* "HOST:PORT" -> an IPv4 address; loopback says whether it is 127.0.0.0/8. */
static int parse_addr(const char *addr, struct sockaddr_in *sa, int *loopback) {
  const char *colon = addr ? strrchr(addr, ':') : NULL;
  if (!colon || colon == addr || (size_t)(colon - addr) >= 64) return -1;
  char host[64];
  memcpy(host, addr, (size_t)(colon - addr));
  host[colon - addr] = '\0';
  if (!strcmp(host, "localhost")) snprintf(host, sizeof host, "127.0.0.1");
  char *end;
  errno = 0;
  unsigned long port = strtoul(colon + 1, &end, 10);
  if (!colon[1] || *end || errno || port > 65535) return -1;
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) return -1;
  *loopback = (ntohl(sa->sin_addr.s_addr) >> 24) == 127;
  return 0;
}

int http_check_options(const char *addr, const char *token) {
  if (!addr) return 0;
  struct sockaddr_in sa;
  int loopback;
  if (parse_addr(addr, &sa, &loopback))
    return log_error(NULL, ENGRAM_EINVAL,
                     "serve: http address '%.100s' is not HOST:PORT with an IPv4 HOST", addr);
  if (token && (!*token || strlen(token) > 200))
    return log_error(NULL, ENGRAM_EINVAL, "serve: http token must be 1-200 characters");
  if (!loopback && !token)
    return log_error(NULL, ENGRAM_EINVAL,
                     "serve: http on %.100s is reachable beyond this host: give a token "
                     "(--http-token or ENGRAM_HTTP_TOKEN)",
                     addr);
  return 0;
}

struct http_server *http_server_new(struct net_server *s, engram *log, const char *token) {
  struct http_server *h = calloc(1, sizeof *h);
  if (!h) return NULL;
  h->s = s;
  h->log = log;
  if (token) {
    snprintf(h->token, sizeof h->token, "%s", token);
    h->has_token = 1;
  }
  pthread_mutex_init(&h->mu, NULL);
  pthread_cond_init(&h->cv, NULL);
  return h;
}

/* libmicrohttpd's own messages (a failed accept, a connection it dropped) become lines of
 * the daemon's log. While it starts they are left out: a start that fails is reported
 * once, by http_start's error (MHD would say "port 0" for an address in use). */
static void on_mhd_message(void *cls, const char *fmt, va_list ap) {
  struct http_server *h = cls;
  if (!atomic_load(&h->started)) return;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
  server_log(h->s, "warn", "http", "%s", msg);
}

int http_start(struct net_server *s, engram *log, const char *addr, const char *token,
               struct http_server **out, char *bound, size_t cap) {
  *out = NULL;
  if (!addr) return 0;
  struct sockaddr_in sa;
  int loopback;
  if (parse_addr(addr, &sa, &loopback)) return http_check_options(addr, token);
  struct http_server *h = http_server_new(s, log, token);
  if (!h) return log_error(NULL, ENGRAM_ENOMEM, "serve: out of memory");
  h->d = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL,
      on_request, h, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)HTTP_THREADS,
      MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNECTIONS,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNECTIONS / 2,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      (size_t)HTTP_CONN_MEMORY, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_message, h, MHD_OPTION_END);
  if (!h->d) {
    int e = errno;
    http_stop(h);
    return log_error(NULL, e == EADDRINUSE ? ENGRAM_EBUSY : ENGRAM_EINVAL,
                     "serve: cannot serve HTTP on %.100s: %s", addr, strerror(e));
  }
  atomic_store(&h->started, 1);
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
  char host[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &sa.sin_addr, host, sizeof host);
  snprintf(bound, cap, "%s:%u", host, di ? (unsigned)di->port : (unsigned)ntohs(sa.sin_port));
  if (pthread_create(&h->sampler, NULL, sampler_main, h) == 0) h->sampler_running = 1;
  *out = h;
  return 0;
}

void http_stop(struct http_server *h) {
  if (!h) return;
  if (h->d) MHD_stop_daemon(h->d);
  if (h->sampler_running) {
    pthread_mutex_lock(&h->mu);
    h->stop = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->sampler, NULL);
  }
  for (size_t i = 0; i < h->n_series; i++) free(h->series[i]);
  pthread_mutex_destroy(&h->mu);
  pthread_cond_destroy(&h->cv);
  free(h);
}
