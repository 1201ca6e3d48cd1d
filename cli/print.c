/* print.c — how the engram command shows things: times, ages, durations, events,
 * topics, groups and dead-letter entries, as JSON and as aligned text. */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define NS_PER_MS 1000000
#define NS_PER_S 1000000000

void cli_fmt_time(int64_t ns, char *buf, size_t len) {
  if (ns <= 0) {
    snprintf(buf, len, "-");
    return;
  }
  time_t s = (time_t)(ns / NS_PER_S);
  int ms = (int)(ns % NS_PER_S / NS_PER_MS);
  struct tm tm;
  if (!gmtime_r(&s, &tm)) {
    snprintf(buf, len, "%" PRId64 "ns", ns);
    return;
  }
  snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

void cli_fmt_age(int64_t ns, char *buf, size_t len) {
  if (ns < 0) {
    snprintf(buf, len, "-");
    return;
  }
  int64_t ms = ns / NS_PER_MS, s = ms / 1000;
  if (s < 1)
    snprintf(buf, len, "%" PRId64 "ms", ms);
  else if (s < 60)
    snprintf(buf, len, "%" PRId64 "s", s);
  else if (s < 3600)
    snprintf(buf, len, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
  else if (s < 86400)
    snprintf(buf, len, "%" PRId64 "h%02" PRId64 "m", s / 3600, s % 3600 / 60);
  else
    snprintf(buf, len, "%" PRId64 "d%02" PRId64 "h", s / 86400, s % 86400 / 3600);
}

void cli_fmt_duration_ms(uint64_t ms, char *buf, size_t len) {
  static const struct {
    const char *unit;
    uint64_t ms;
  } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
  if (ms == 0) {
    snprintf(buf, len, "0s");
    return;
  }
  size_t o = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < sizeof units / sizeof units[0] && o < len; i++) {
    uint64_t q = ms / units[i].ms;
    if (!q) continue;
    ms %= units[i].ms;
    int n = snprintf(buf + o, len - o, "%" PRIu64 "%s", q, units[i].unit);
    if (n < 0) break;
    o += (size_t)n;
  }
}

/* ---------------------------------------------------------------------------------
 * Events.
 * ------------------------------------------------------------------------------ */
void cli_json_event(json_writer *w, const engram_event *ev, const char *topic, const char *group) {
  json_obj(w);
  json_kstr(w, "topic", ev->topic ? ev->topic : topic);
  if (group) json_kstr(w, "group", group);
  json_ku64(w, "offset", ev->offset);
  if (group) json_ku64(w, "attempt", ev->attempt);
  json_kstr(w, "type", ev->type);
  json_kstr(w, "key", ev->key);
  json_key(w, "headers");
  json_obj(w);
  for (size_t i = 0; i < ev->n_headers; i++)
    json_kstr(w, ev->headers[i].name, ev->headers[i].value ? ev->headers[i].value : "");
  json_obj_end(w);
  json_ki64(w, "timestamp_ns", ev->timestamp_ns);
  json_kstr(w, "content_type", ev->content_type && ev->content_type[0] ? ev->content_type : NULL);
  if (ev->payload_len == 0 || json_utf8_valid(ev->payload, ev->payload_len)) {
    json_key(w, "payload");
    json_strn(w, ev->payload ? ev->payload : "", ev->payload_len);
  } else {
    json_key(w, "payload_base64");
    json_b64(w, ev->payload, ev->payload_len);
  }
  json_kstr(w, "idempotency_key", ev->idempotency_key);
  if (ev->deliver_at_ns) json_ki64(w, "deliver_at_ns", ev->deliver_at_ns);
  if (ev->flags & ENGRAM_EVENT_TOMBSTONE) json_kbool(w, "tombstone", 1);
  json_obj_end(w);
}

/* ---------------------------------------------------------------------------------
 * Untrusted text. Event fields, error strings and reasons come from producers and
 * workers; written raw, an ESC or a C1 CSI in them would drive the operator's terminal.
 * ------------------------------------------------------------------------------ */
/* Whether Unicode code point u is an invisible control of line or text direction. */
static int format_control(uint32_t u) {
  return (u >= 0x80 && u <= 0x9F) || u == 0x061C || u == 0x200E || u == 0x200F ||
         (u >= 0x2028 && u <= 0x202E) || (u >= 0x2066 && u <= 0x2069);
}

/* The length of the well-formed UTF-8 sequence at s (1..4), its code point in *u; 0 when
 * the bytes there are not UTF-8. */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *u) {
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
    if (c == 0xE0) lo = 0xA0; /* overlong */
    if (c == 0xED) hi = 0x9F; /* surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    k = 4, v = c & 0x07;
    if (c == 0xF0) lo = 0x90; /* overlong */
    if (c == 0xF4) hi = 0x8F; /* past U+10FFFF */
  } else {
    return 0;
  }
  if (k > n || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 1; i < k; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    v = (v << 6) | (s[i] & 0x3F);
  }
  *u = v;
  return k;
}

/* Escapes the character at s into out (at most 12 bytes, not NUL-terminated); returns
 * how many input bytes it took and sets *olen. */
static size_t escape_char(const char *s, size_t n, int flags, char *out, size_t *olen) {
  const unsigned char *p = (const unsigned char *)s;
  uint32_t u;
  size_t k = utf8_seq(p, n, &u);
  if (k == 0) { /* not UTF-8: the byte's value */
    *olen = (size_t)snprintf(out, 12, "\\x%02x", p[0]);
    return 1;
  }
  if ((u == '\n' || u == '\t') && (flags & CLI_ESC_LINES)) {
    out[0] = (char)u;
    *olen = 1;
  } else if (u == '\\' && (flags & CLI_ESC_MESSAGE)) {
    out[0] = '\\';
    *olen = 1;
  } else if (u == '\\' || u == '\n' || u == '\t' || u == '\r') {
    out[0] = '\\';
    out[1] = u == '\\' ? '\\' : u == '\n' ? 'n' : u == '\t' ? 't' : 'r';
    *olen = 2;
  } else if (u < 0x20 || u == 0x7F) {
    *olen = (size_t)snprintf(out, 12, "\\x%02x", (unsigned)u);
  } else if (format_control(u)) {
    *olen = (size_t)snprintf(out, 12, "\\u%04x", (unsigned)u);
  } else {
    memcpy(out, s, k);
    *olen = k;
  }
  return k;
}

void cli_put_text(FILE *f, const char *s, size_t n, int flags) {
  char e[12];
  for (size_t i = 0, el; i < n;) {
    i += escape_char(s + i, n - i, flags, e, &el);
    fwrite(e, 1, el, f);
  }
}

char *cli_escape(char *buf, size_t len, const char *s, size_t n) {
  size_t o = 0;
  char e[12];
  for (size_t i = 0, el; i < n;) {
    size_t k = escape_char(s + i, n - i, 0, e, &el);
    if (o + el >= len) break; /* cut at a character, never inside an escape */
    memcpy(buf + o, e, el);
    o += el;
    i += k;
  }
  if (len) buf[o] = '\0';
  return buf;
}

/* Writes at most max_chars characters of s on one line, escaped; "..." marks a cut. */
static void put_clean(FILE *f, const char *s, size_t n, size_t max_chars) {
  char e[12];
  size_t chars = 0;
  for (size_t i = 0, el; i < n; chars++) {
    if (chars == max_chars) {
      fputs("...", f);
      return;
    }
    i += escape_char(s + i, n - i, 0, e, &el);
    fwrite(e, 1, el, f);
  }
}

/* Text that may not be UTF-8 (keys are arbitrary bytes): shown when valid, else as '?'. */
static void put_name(FILE *f, const char *s) {
  if (!s) {
    fputc('-', f);
    return;
  }
  size_t n = strlen(s);
  if (json_utf8_valid(s, n))
    put_clean(f, s, n, 80);
  else
    fprintf(f, "<%zu bytes, not UTF-8>", n);
}

void cli_text_event(FILE *f, const engram_event *ev, int with_attempt) {
  char t[48];
  cli_fmt_time(ev->timestamp_ns, t, sizeof t);
  fprintf(f, "%" PRIu64 "  %s  ", ev->offset, t);
  put_name(f, ev->type);
  fputs("  ", f);
  put_name(f, ev->key);
  if (with_attempt) fprintf(f, "  attempt=%" PRIu32, ev->attempt);
  fputs("  ", f);
  if (ev->payload_len == 0)
    fputs("<empty>", f);
  else if (json_utf8_valid(ev->payload, ev->payload_len))
    put_clean(f, ev->payload, ev->payload_len, 100);
  else
    fprintf(f, "<%zu bytes, not UTF-8>", ev->payload_len);
  fputc('\n', f);
}

/* ---------------------------------------------------------------------------------
 * Topics, groups, dead letters.
 * ------------------------------------------------------------------------------ */
/* A fixed-size name field, NUL-terminated by contract; bounded here all the same. */
static void kfixed(json_writer *w, const char *key, const char *s, size_t size) {
  json_key(w, key);
  json_strn(w, s, strnlen(s, size));
}

/* Like kfixed, but "" becomes null. */
static void kfixed_opt(json_writer *w, const char *key, const char *s, size_t size) {
  if (!s[0]) {
    json_key(w, key);
    json_null(w);
    return;
  }
  kfixed(w, key, s, size);
}

/* One numeric field of an info struct's field list (X(type, name) in engram.h), by type. */
static void knum_uint64_t(json_writer *w, const char *key, uint64_t v) { json_ku64(w, key, v); }
static void knum_uint32_t(json_writer *w, const char *key, uint32_t v) { json_ku64(w, key, v); }
static void knum_int64_t(json_writer *w, const char *key, int64_t v) { json_ki64(w, key, v); }

/* The JSON objects of topics, groups and dead letters take their numeric fields from the
 * lists in engram.h, in the struct's order: a field added there is printed here too. */
void cli_json_topic(json_writer *w, const engram_topic_info *t) {
  json_obj(w);
  kfixed(w, "topic", t->name, sizeof t->name);
#define X(type, name) knum_##type(w, #name, t->name);
  ENGRAM_TOPIC_INFO_FIELDS(X)
#undef X
  json_key(w, "config");
  json_obj(w);
  json_ku64(w, "compress_threshold", t->config.compress_threshold);
  json_ku64(w, "max_payload", t->config.max_payload);
  json_ku64(w, "dict_train_after", t->config.dict_train_after);
  json_kbool(w, "no_dict", (t->config.flags & ENGRAM_TOPIC_NO_DICT) != 0);
#define X(type, name) json_ku64(w, #name, t->config.name);
  ENGRAM_TOPIC_RETENTION_FIELDS(X)
#undef X
  json_kbool(w, "retain_force", (t->config.flags & ENGRAM_TOPIC_RETAIN_FORCE) != 0);
  json_kbool(w, "compact_by_key", (t->config.flags & ENGRAM_TOPIC_COMPACT_KEY) != 0);
  kfixed(w, "tombstone_type", t->config.tombstone_type, sizeof t->config.tombstone_type);
  json_obj_end(w);
  json_obj_end(w);
}

void cli_json_group(json_writer *w, const engram_group_info *g, int64_t now_ns) {
  json_obj(w);
  kfixed(w, "topic", g->topic, sizeof g->topic);
  kfixed(w, "group", g->name, sizeof g->name);
  json_key(w, "filters");
  json_arr(w);
  for (size_t i = 0; i < g->n_filters && i < ENGRAM_MAX_FILTERS; i++)
    json_strn(w, g->filters[i], strnlen(g->filters[i], sizeof g->filters[i]));
  json_arr_end(w);
  json_ku64(w, "ack_wait_ms", g->ack_wait_ms);
  json_ku64(w, "max_deliver", g->max_deliver);
  json_key(w, "backoff_ms");
  json_arr(w);
  for (size_t i = 0; i < g->n_backoff && i < ENGRAM_MAX_BACKOFF; i++) json_u64(w, g->backoff_ms[i]);
  json_arr_end(w);
  json_ku64(w, "result_ttl_ms", g->result_ttl_ms);
  json_kbool(w, "key_ordered", (g->flags & ENGRAM_GROUP_KEY_ORDERED) != 0);
  json_ki64(w, "created_ns", g->created_ns);
#define X(type, name) knum_##type(w, #name, g->name);
  ENGRAM_GROUP_INFO_COUNTERS(X)
#undef X
  json_key(w, "oldest_unfinished_age_ms");
  if (g->oldest_unfinished_ns > 0 && now_ns >= g->oldest_unfinished_ns)
    json_i64(w, (now_ns - g->oldest_unfinished_ns) / NS_PER_MS);
  else
    json_null(w);
  json_obj_end(w);
}

/* Empty text is null. */
void cli_json_dlq_entry(json_writer *w, const engram_dlq_entry *e) {
#define NUM(type, name) knum_##type(w, #name, e->name);
#define TEXT(size, name) kfixed_opt(w, #name, e->name, sizeof e->name);
  ENGRAM_DLQ_ENTRY_FIELDS(NUM, TEXT)
#undef NUM
#undef TEXT
}

int cli_done(int json, const struct cli_done *d, const char *text) {
  if (!json) {
    printf("%s\n", text);
    return 0;
  }
  json_writer w;
  json_w_init(&w);
  json_obj(&w);
  json_kbool(&w, "ok", 1);
  json_kstr(&w, "action", d->action);
  if (d->topic) json_kstr(&w, "topic", d->topic);
  if (d->group) json_kstr(&w, "group", d->group);
  if (d->has_offset) json_ku64(&w, "offset", d->offset);
  if (d->count >= 0) json_ki64(&w, "count", d->count);
  json_obj_end(&w);
  int st = cli_json_emit(&w);
  json_w_free(&w);
  return st;
}

static struct {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int running, stop;
  const char *what;
  const char *phase; /* the library's phase, NULL until it reports one */
  uint64_t done, total;
  struct timespec start; /* CLOCK_MONOTONIC, when it began */
  int64_t drawn_ns;      /* CLOCK_MONOTONIC of the last redraw */
} prog = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* "12.3 MiB" of a byte count, or the count itself for other units. */
static void amount(char *out, size_t cap, uint64_t n, int bytes) {
  if (bytes)
    snprintf(out, cap, "%.1f MiB", (double)n / (1024.0 * 1024.0));
  else
    snprintf(out, cap, "%" PRIu64, n);
}

static int64_t mono_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Draws the line; called with prog.mu held. */
static void progress_draw(void) {
  int64_t now = mono_ns();
  long s =
      (long)((now - ((int64_t)prog.start.tv_sec * 1000000000 + prog.start.tv_nsec)) / 1000000000);
  prog.drawn_ns = now;
  if (!prog.phase) {
    fprintf(stderr, "\r%s... %lds\033[K", prog.what, s);
  } else {
    int bytes = !strcmp(prog.phase, "copying");
    char d[32], t[32];
    amount(d, sizeof d, prog.done, bytes);
    amount(t, sizeof t, prog.total, bytes);
    if (prog.total)
      fprintf(stderr, "\r%s: %s %s of %s (%d%%), %lds\033[K", prog.what, prog.phase, d, t,
              (int)(prog.done * 100 / prog.total), s);
    else
      fprintf(stderr, "\r%s: %s %s, %lds\033[K", prog.what, prog.phase, d, s);
  }
  fflush(stderr);
}

/* Redraws five times a second, for the elapsed time; a report of the library redraws at
 * once when it starts a phase. */
static void *progress_main(void *arg) {
  (void)arg;
  struct timespec until;
  pthread_mutex_lock(&prog.mu);
  while (!prog.stop) {
    progress_draw();
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += 200000000;
    if (until.tv_nsec >= 1000000000) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000;
    }
    while (!prog.stop && pthread_cond_timedwait(&prog.cv, &prog.mu, &until) == 0) {
    }
  }
  fputs("\r\033[K", stderr);
  fflush(stderr);
  pthread_mutex_unlock(&prog.mu);
  return NULL;
}

void cli_progress_start(const char *what) {
  if (prog.running || !isatty(STDERR_FILENO)) return;
  prog.what = what;
  prog.phase = NULL;
  prog.done = prog.total = 0;
  prog.stop = 0;
  clock_gettime(CLOCK_MONOTONIC, &prog.start);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_destroy(&prog.cv);
  pthread_cond_init(&prog.cv, &ca);
  pthread_condattr_destroy(&ca);
  prog.running = pthread_create(&prog.thread, NULL, progress_main, NULL) == 0;
}

void cli_progress_report(void *ctx, const char *phase, uint64_t done, uint64_t total) {
  (void)ctx;
  if (!prog.running) return;
  pthread_mutex_lock(&prog.mu);
  int fresh = !prog.phase || strcmp(prog.phase, phase);
  prog.phase = phase;
  prog.done = done;
  prog.total = total;
  if (fresh || mono_ns() - prog.drawn_ns >= 200000000) progress_draw();
  pthread_mutex_unlock(&prog.mu);
}

void cli_progress_stop(void) {
  if (!prog.running) return;
  pthread_mutex_lock(&prog.mu);
  prog.stop = 1;
  pthread_cond_signal(&prog.cv);
  pthread_mutex_unlock(&prog.mu);
  pthread_join(prog.thread, NULL);
  prog.running = 0;
}

int cli_json_emit(json_writer *w) {
  if (w->failed) {
    json_w_reset(w);
    return cli_error("out of memory while formatting JSON");
  }
  if (w->len) fwrite(w->buf, 1, w->len, stdout);
  fputc('\n', stdout);
  json_w_reset(w);
  return 0;
}

/* ---------------------------------------------------------------------------------
 * Tables.
 * ------------------------------------------------------------------------------ */
struct cli_table {
  size_t ncols, nrows, cap;
  char **cells; /* nrows * ncols */
  int oom;
};

struct cli_table *cli_table_new(size_t ncols) {
  struct cli_table *t = calloc(1, sizeof *t);
  if (t) t->ncols = ncols;
  return t;
}

int cli_table_row(struct cli_table *t, ...) {
  if (!t || t->oom) return -1;
  if (t->nrows == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 16;
    char **c = realloc(t->cells, cap * t->ncols * sizeof *c);
    if (!c) {
      t->oom = 1;
      return -1;
    }
    t->cells = c;
    t->cap = cap;
  }
  va_list ap;
  va_start(ap, t);
  char **row = t->cells + t->nrows * t->ncols;
  for (size_t i = 0; i < t->ncols; i++) {
    const char *s = va_arg(ap, const char *);
    row[i] = strdup(s ? s : "-");
    if (!row[i]) {
      t->oom = 1;
      continue;
    }
    /* One row per line whatever a reason or error message holds. */
    for (char *p = row[i]; *p; p++)
      if ((unsigned char)*p < 0x20 || *p == 0x7F) *p = ' ';
  }
  va_end(ap);
  t->nrows++;
  return t->oom ? -1 : 0;
}

/* Display width of UTF-8 text, counting one column per code point. */
static size_t width(const char *s) {
  size_t w = 0;
  for (; *s; s++)
    if (((unsigned char)*s & 0xC0) != 0x80) w++;
  return w;
}

int cli_table_print(struct cli_table *t, FILE *f) {
  int rc = 0;
  if (!t || t->oom) {
    rc = cli_error("out of memory while building a table");
    goto out;
  }
  size_t *wd = calloc(t->ncols ? t->ncols : 1, sizeof *wd);
  if (!wd) {
    rc = cli_error("out of memory while printing a table");
    goto out;
  }
  for (size_t r = 0; r < t->nrows; r++)
    for (size_t c = 0; c < t->ncols; c++) {
      size_t n = width(t->cells[r * t->ncols + c]);
      if (n > wd[c]) wd[c] = n;
    }
  for (size_t r = 0; r < t->nrows; r++) {
    for (size_t c = 0; c < t->ncols; c++) {
      const char *s = t->cells[r * t->ncols + c];
      fputs(s, f);
      if (c + 1 < t->ncols)
        for (size_t k = width(s); k < wd[c] + 2; k++) fputc(' ', f);
    }
    fputc('\n', f);
  }
  free(wd);
out:
  if (t) {
    for (size_t i = 0; i < t->nrows * t->ncols; i++) free(t->cells[i]);
    free(t->cells);
    free(t);
  }
  return rc;
}
