/* fuzz_http.c — libFuzzer target for the daemon's HTTP request handling: http_handle, the
 * very function libmicrohttpd's callback runs (token and CSRF checks, routing, argument
 * parsing, every endpoint's JSON and /metrics), driven without sockets over an embedded
 * log holding a topic, a group with pending and dead events, a worker and a schedule.
 *
 * Input: lines separated by '\n'. Line 1: the method, with a trailing '!' to ask the
 * server that has a token (the token is "t0ken"). Line 2: the URL path. Line 3: the query,
 * "k=v&k=v". Further lines: headers, "Name: value". The reply must have a status from 200
 * to 599 and a content type; a JSON reply must be one well-formed JSON value; and the
 * token server must never answer 200 to a request without the token (except /healthz). */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "net/http.h"

#define MAX_FIELDS 64

static engram *log_handle;
static struct http_server *open_server, *token_server;
static char dir[64];

static void bug(const char *what, const http_request *rq, const http_reply *rp) {
  fprintf(stderr, "fuzz_http: %s: %s %s -> %u %s\n%.2000s\n", what, rq->method, rq->url, rp->status,
          rp->type ? rp->type : "(null)", rp->out.p ? rp->out.p : "");
  abort();
}

struct fields {
  int n;
  const char *name[MAX_FIELDS], *value[MAX_FIELDS];
};
struct input {
  struct fields args, headers;
};

static const char *find(const struct fields *f, const char *name, int ci) {
  for (int i = 0; i < f->n; i++)
    if (ci ? !strcasecmp(f->name[i], name) : !strcmp(f->name[i], name)) return f->value[i];
  return NULL;
}
static const char *get_arg(void *ctx, const char *name) {
  return find(&((struct input *)ctx)->args, name, 0);
}
static const char *get_header(void *ctx, const char *name) {
  return find(&((struct input *)ctx)->headers, name, 1);
}

/* A small strict JSON checker: one value, then only whitespace. */
static const char *ws(const char *p) {
  while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
  return p;
}
static const char *value(const char *p, int depth);
static const char *string(const char *p) {
  if (*p++ != '"') return NULL;
  while (*p != '"') {
    unsigned char c = (unsigned char)*p;
    if (c < 0x20) return NULL;
    if (c == '\\') {
      p++;
      if (*p == 'u') {
        for (int i = 1; i <= 4; i++)
          if (!strchr("0123456789abcdefABCDEF", p[i]) || !p[i]) return NULL;
        p += 4;
      } else if (!*p || !strchr("\"\\/bfnrt", *p)) {
        return NULL;
      }
    }
    p++;
  }
  return p + 1;
}
static const char *number(const char *p) {
  const char *s = p;
  if (*p == '-') p++;
  if (*p < '0' || *p > '9') return NULL;
  while ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E' || *p == '+' || *p == '-')
    p++;
  return p > s ? p : NULL;
}
static const char *value(const char *p, int depth) {
  if (depth > 64) return NULL;
  p = ws(p);
  if (*p == '{' || *p == '[') {
    char close = *p == '{' ? '}' : ']';
    p = ws(p + 1);
    if (*p == close) return p + 1;
    for (;;) {
      if (close == '}') {
        if (!(p = string(ws(p)))) return NULL;
        p = ws(p);
        if (*p++ != ':') return NULL;
      }
      if (!(p = value(p, depth + 1))) return NULL;
      p = ws(p);
      if (*p == close) return p + 1;
      if (*p++ != ',') return NULL;
    }
  }
  if (*p == '"') return string(p);
  if (!strncmp(p, "true", 4)) return p + 4;
  if (!strncmp(p, "false", 5)) return p + 5;
  if (!strncmp(p, "null", 4)) return p + 4;
  return number(p);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *f) {
  (void)st;
  (void)flag;
  (void)f;
  return remove(path);
}

static void cleanup(void) {
  http_stop(open_server);
  http_stop(token_server);
  engram_close(log_handle);
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void setup_fail(const char *what) {
  fprintf(stderr, "fuzz_http: setup: %s: %s\n", what, engram_errmsg(NULL));
  abort();
}

/* A log with something to show: topic memory, group indexer with a dead event, pending
 * ones and one in flight, a worker, a schedule "nightly". Async durability: no fsync per mutating
 * request. */
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  snprintf(dir, sizeof dir, "/tmp/fuzz_http.XXXXXX");
  if (!mkdtemp(dir)) setup_fail("mkdtemp");
  char path[128];
  snprintf(path, sizeof path, "%s/log", dir);
  engram_options o = {.durability = ENGRAM_DURABILITY_ASYNC,
                      .maintenance_ms = ENGRAM_MAINTENANCE_OFF};
  if (engram_open(path, &o, &log_handle)) setup_fail("open");
  if (engram_topic_create(log_handle, "memory", NULL) ||
      engram_group_create(log_handle, "memory", "indexer", NULL))
    setup_fail("create");
  for (int i = 0; i < 6; i++) {
    char payload[64];
    int n = snprintf(payload, sizeof payload, "{\"id\":%d,\"note\":\"\\u00e9\\u0001\"}", i);
    engram_event ev = {.type = "memory.saved", .payload = payload, .payload_len = (size_t)n};
    if (engram_append(log_handle, "memory", &ev, NULL, NULL)) setup_fail("append");
  }
  engram_batch *b = NULL;
  if (engram_fetch(log_handle, "memory", "indexer", "w1", 2, 0, &b)) setup_fail("fetch");
  if (b->count == 2) {
    engram_reject(log_handle, "memory", "indexer", b->events[0].offset, 1, "bad \x01 payload");
    engram_nack(log_handle, "memory", "indexer", b->events[1].offset, 1, 60000, "later");
  }
  engram_batch_free(b);
  engram_schedule_config sc = {.every_ms = 3600000, .topic = "memory", .type = "memory.compact"};
  if (engram_schedule_add(log_handle, "nightly", &sc)) setup_fail("schedule");
  open_server = http_server_new(NULL, log_handle, NULL);
  token_server = http_server_new(NULL, log_handle, "t0ken");
  if (!open_server || !token_server) setup_fail("server");
  atexit(cleanup);
  return 0;
}

/* Splits s (modified) at sep into at most MAX_FIELDS name/value pairs at eq. */
static void split(char *s, char sep, const char *eq, struct fields *f) {
  for (char *p = s; p && *p && f->n < MAX_FIELDS;) {
    char *next = strchr(p, sep);
    if (next) *next++ = '\0';
    char *v = strstr(p, eq);
    if (v) {
      *v = '\0';
      v += strlen(eq);
    }
    f->name[f->n] = p;
    f->value[f->n++] = v ? v : "";
    p = next;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 8192) return 0;
  char *buf = malloc(size + 1);
  if (!buf) return 0;
  memcpy(buf, data, size);
  buf[size] = '\0'; /* text stops at the first NUL, as libmicrohttpd's strings do */
  char *line[3] = {buf, "", ""};
  char *rest = NULL;
  for (int i = 0; i < 3; i++) {
    char *nl = strchr(line[i], '\n');
    if (!nl) break;
    *nl = '\0';
    if (i < 2)
      line[i + 1] = nl + 1;
    else
      rest = nl + 1;
  }
  struct input in = {0};
  split(line[2], '&', "=", &in.args);
  if (rest) split(rest, '\n', ": ", &in.headers);
  size_t mlen = strlen(line[0]);
  int with_token = mlen && line[0][mlen - 1] == '!';
  if (with_token) line[0][mlen - 1] = '\0';
  http_request rq = {
      .method = line[0], .url = line[1], .arg = get_arg, .header = get_header, .ctx = &in};
  http_reply rp = {0};
  http_handle(with_token ? token_server : open_server, &rq, &rp);
  if (rp.status < 200 || rp.status > 599) bug("status out of range", &rq, &rp);
  if (!rp.type) bug("no content type", &rq, &rp);
  if (rp.out.len && (!rp.out.p || strlen(rp.out.p) != rp.out.len))
    bug("body length does not match its text", &rq, &rp);
  if (!strcmp(rp.type, "application/json")) {
    const char *end = rp.out.p ? value(rp.out.p, 0) : NULL;
    if (!end || *ws(end)) bug("a JSON reply that is not one JSON value", &rq, &rp);
  }
  if (with_token && rp.status < 400 && strcmp(rq.url, "/healthz")) {
    /* Let in: the Bearer token itself, or Basic auth (whose password was checked). */
    const char *a = get_header(&in, "Authorization");
    if (!a || (strcmp(a, "Bearer t0ken") && strncmp(a, "Basic ", 6)))
      bug("answered without the token", &rq, &rp);
  }
  hb_free(&rp.out);
  free(buf);
  return 0;
}
