/* cmd_append.c — `engram append`: one event from the command line, or a JSON-lines
 * batch from stdin appended in all-or-nothing batches. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "cli.h"

static const char help[] =
    "usage: engram append TOPIC TYPE [options]       payload from stdin unless --payload\n"
    "       engram append TOPIC --batch [--create] [--json] < events.jsonl\n"
    "\n"
    "Appends one event of type TYPE (e.g. memory.saved) to TOPIC and prints its offset.\n"
    "\n"
    "options:\n"
    "  --key K              ordering / compaction key (e.g. a memory id)\n"
    "  --tombstone          the event deletes its key (needs --key): on a topic compacted\n"
    "                       by key, the key's older events go, and this one after the\n"
    "                       topic's tombstone ttl\n"
    "  --idem KEY           idempotency key: a repeat inside the dedup window writes\n"
    "                       nothing and returns the first append's offset\n"
    "  --header NAME=VALUE  a header; repeatable, at most 64\n"
    "  --content-type T     the payload's content type, e.g. application/json\n"
    "  --payload STR        the payload; without it stdin is read to its end (up to\n"
    "                       64 MiB; a terminal is refused)\n"
    "  --delay D            deliver to groups only after D (250ms, 30s, 2m, 1h, 1d;\n"
    "                       at most 30 days)\n"
    "  --create             create the topic (and the log) with default settings if missing\n"
    "  --json               print {\"offset\":N,\"duplicate\":true|false}\n"
    "  --batch              append the JSON objects on stdin, one per line (see below)\n"
    "  --keep-time          with --batch: a line's \"timestamp_ns\" is its append time\n"
    "                       (an importer's copy; not older than the topic's newest\n"
    "                       event, not ahead of the clock)\n"
    "  -h, --help           this help\n"
    "\n"
    "With --batch each non-empty line is either\n"
    "  an event:  {\"type\":\"memory.saved\", \"payload\":..., \"key\":\"m-1\",\n"
    "              \"content_type\":\"text/plain\", \"headers\":{\"k\":\"v\"},\n"
    "              \"idempotency_key\":\"...\", \"deliver_at_ns\":1705053600000000000,\n"
    "              \"tombstone\":false}\n"
    "             (only \"type\" and one of \"payload\" / \"payload_base64\" are required;\n"
    "             a string payload is stored as its UTF-8 bytes, any other JSON value as\n"
    "             compact JSON text with content type application/json, null as empty;\n"
    "             \"topic\", \"offset\", \"timestamp_ns\", \"group\" and \"attempt\" are\n"
    "             ignored, so the output of `engram read --json` can be appended again;\n"
    "             with --keep-time \"timestamp_ns\" is kept)\n"
    "  or a raw memory event: an object with \"type\" and no payload field, e.g.\n"
    "             {\"type\":\"memory.saved\",\"memory_id\":\"m-1\",\"text\":\"...\"}: the whole\n"
    "             line becomes the payload (application/json) and \"memory_id\" the key.\n"
    "Lines are appended 500 at a time (fewer once their payloads reach 16 MiB), each\n"
    "batch in one transaction. A bad line, or a batch the log refuses, stops the\n"
    "command: nothing from that batch is appended, earlier batches stay. Prints the\n"
    "number of events and their offsets; with --json\n"
    "{\"count\":N,\"duplicates\":N,\"first_offset\":N,\"last_offset\":N}.\n"
    "On a terminal stderr shows the progress. Ctrl-C stops between batches and exits\n"
    "130 naming the line to resume from (`tail -n +LINE FILE | engram append ...`).\n";

#define BATCH_EVENTS 500
#define BATCH_BYTES (16u << 20) /* a batch also ends once its payloads reach this */
#define MAX_LINE ((size_t)ENGRAM_MAX_PAYLOAD_LIMIT / 3 * 4 + (1u << 20))

/* Makes sure the topic exists (creating it when asked) and fills *info. */
static int topic_ready(struct cli *c, const char *topic, int create, engram_topic_info *info) {
  int rc = engram_topic_info_get(c->log, topic, info);
  if (rc == ENGRAM_ENOTFOUND && create) {
    cli_forget_error(c);
    rc = engram_topic_create(c->log, topic, NULL);
    if (rc != 0 && rc != ENGRAM_EEXIST) return cli_fail(c, rc, "create topic %s", topic);
    if (rc == ENGRAM_EEXIST) cli_forget_error(c); /* created meanwhile by someone else */
    rc = engram_topic_info_get(c->log, topic, info);
  }
  if (rc == ENGRAM_ENOTFOUND)
    return cli_error(
        "append %s: no such topic (create it with 'engram topic create %s' or "
        "use --create)",
        topic, topic);
  if (rc != 0) return cli_fail(c, rc, "append %s", topic);
  return 0;
}

/* Reads f to its end into a malloc'd buffer of at most max bytes. 0, -1 (read error),
 * -2 (over max) or -3 (out of memory). */
static int read_all(FILE *f, size_t max, unsigned char **out, size_t *len) {
  size_t n = 0, cap = 0;
  unsigned char *buf = NULL;
  for (;;) {
    if (cap - n < 65536) {
      size_t nc = cap ? cap * 2 : 65536;
      if (nc > max + 65536) nc = max + 65536;
      if (nc <= cap) {
        free(buf);
        return -2;
      }
      unsigned char *b = realloc(buf, nc);
      if (!b) {
        free(buf);
        return -3;
      }
      buf = b;
      cap = nc;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (n > max) {
      free(buf);
      return -2;
    }
    if (r == 0) break;
  }
  if (ferror(f)) {
    free(buf);
    return -1;
  }
  *out = buf;
  *len = n;
  return 0;
}

static int append_one(struct cli *c, struct cli_args *a, const char *key, uint32_t flags,
                      const char *idem, const engram_header *hdrs, size_t nh, const char *ctype,
                      const char *payload, uint64_t delay_ms, int create, int json) {
  const char *topic = a->pos[0], *type = a->pos[1];
  unsigned char *stdin_buf = NULL;
  size_t plen = 0;
  if (!payload) {
    if (isatty(STDIN_FILENO))
      return cli_usage(a->cmd, "give the payload with --payload STR or pipe it on stdin");
    int r = read_all(stdin, ENGRAM_MAX_PAYLOAD_LIMIT, &stdin_buf, &plen);
    if (r == -1) return cli_error("append %s: reading the payload from stdin failed", topic);
    if (r == -2)
      return cli_error("append %s: payload on stdin over %u bytes", topic,
                       (unsigned)ENGRAM_MAX_PAYLOAD_LIMIT);
    if (r == -3) return cli_error("append %s: out of memory reading stdin", topic);
  } else {
    plen = strlen(payload);
  }
  int status = cli_open(c, create ? CLI_OPEN_CREATE : CLI_OPEN_EXISTING);
  if (status) goto out;
  engram_topic_info info;
  if ((status = topic_ready(c, topic, create, &info)) != 0) goto out;

  engram_event ev;
  memset(&ev, 0, sizeof ev);
  ev.type = type;
  ev.key = key;
  ev.flags = flags;
  ev.payload = payload ? (const void *)payload : stdin_buf;
  ev.payload_len = plen;
  ev.content_type = ctype;
  ev.headers = hdrs;
  ev.n_headers = nh;
  ev.idempotency_key = idem;
  if (delay_ms) ev.deliver_at_ns = cli_now_ns() + (int64_t)delay_ms * 1000000;
  uint64_t offset = 0;
  int dup = 0;
  int rc = engram_append(c->log, topic, &ev, &offset, &dup);
  if (rc != 0) {
    status = cli_fail(c, rc, "append %s", topic);
    goto out;
  }
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_obj(&w);
    json_ku64(&w, "offset", offset);
    json_kbool(&w, "duplicate", dup);
    json_obj_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
  } else {
    printf("%" PRIu64 "\n", offset);
  }
out:
  free(stdin_buf);
  return status;
}

/* ---------------------------------------------------------------------------------
 * Batches.
 * ------------------------------------------------------------------------------ */

/* What one input line owns until its batch is appended. */
struct item {
  char *line;           /* the line as read (raw events point into it) */
  json_doc *doc;        /* its parse tree (strings point into it) */
  unsigned char *owned; /* payload decoded from base64 or re-written JSON */
  char *keybuf;         /* a numeric memory_id turned into text */
  engram_header *headers;
};

struct batch {
  engram_event evs[BATCH_EVENTS];
  struct item items[BATCH_EVENTS];
  uint64_t offsets[BATCH_EVENTS];
  int dups[BATCH_EVENTS];
  size_t n;
  size_t bytes;
  uint64_t first_line; /* input line of evs[0] */
};

struct totals {
  uint64_t count, dups, first, last;
};

static void item_free(struct item *it) {
  free(it->line);
  json_doc_free(it->doc);
  free(it->owned);
  free(it->keybuf);
  free(it->headers);
  memset(it, 0, sizeof *it);
}

static void batch_clear(struct batch *b) {
  for (size_t i = 0; i < b->n; i++) item_free(&b->items[i]);
  b->n = 0;
  b->bytes = 0;
}

/* Mirrors the library's rule for event types, so a bad one is reported with its line:
 * [A-Za-z0-9_-] words joined by single dots, 1..ENGRAM_MAX_TYPE bytes. */
static int type_ok(const char *s, size_t n) {
  if (n == 0 || n > ENGRAM_MAX_TYPE) return 0;
  int word = 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (ch == '.') {
      if (!word) return 0;
      word = 0;
    } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
               ch == '_' || ch == '-') {
      word = 1;
    } else {
      return 0;
    }
  }
  return word;
}

/* A string field (or null when allow_null): NULL and no error when absent or null. */
static const char *str_field(const json_value *obj, const char *name, size_t max, const char **out,
                             char *err, size_t errlen) {
  const json_value *v = json_get(obj, name);
  *out = NULL;
  if (!v || v->type == JSON_NULL) return NULL;
  if (v->type != JSON_STRING) {
    snprintf(err, errlen, "\"%s\" must be a string", name);
    return err;
  }
  if (strlen(v->str) != v->len) {
    snprintf(err, errlen, "\"%s\" contains a NUL character", name);
    return err;
  }
  if (max && v->len > max) {
    snprintf(err, errlen, "\"%s\" is %zu bytes, over the limit of %zu", name, v->len, max);
    return err;
  }
  *out = v->str;
  return NULL;
}

static const char *const known_fields[] = {
    "type", "key", "payload", "payload_base64", "content_type", "headers", "idempotency_key",
    "deliver_at_ns", "tombstone",
    /* written by `engram read --json` and `consume --json`; ignored on input */
    "topic", "offset", "timestamp_ns", "group", "attempt", NULL};

/* --keep-time: a line's "timestamp_ns" becomes its append time (ENGRAM_EVENT_TIMESTAMP). */
static int keep_time;

static const char *envelope(const json_value *root, struct item *it, engram_event *ev, char *err,
                            size_t errlen) {
  for (size_t i = 0; i < root->len; i++) {
    const json_member *m = &root->members[i];
    size_t k = 0;
    for (; known_fields[k]; k++)
      if (strlen(known_fields[k]) == m->key_len && memcmp(known_fields[k], m->key, m->key_len) == 0)
        break;
    if (!known_fields[k]) {
      snprintf(err, errlen, "unknown field \"%.60s\"", m->key);
      return err;
    }
    for (size_t j = 0; j < i; j++)
      if (root->members[j].key_len == m->key_len &&
          memcmp(root->members[j].key, m->key, m->key_len) == 0) {
        snprintf(err, errlen, "field \"%.60s\" appears twice", m->key);
        return err;
      }
  }
  const char *e;
  if ((e = str_field(root, "key", ENGRAM_MAX_KEY, &ev->key, err, errlen))) return e;
  if ((e = str_field(root, "idempotency_key", ENGRAM_MAX_KEY, &ev->idempotency_key, err, errlen)))
    return e;
  if ((e = str_field(root, "content_type", ENGRAM_MAX_CONTENT_TYPE, &ev->content_type, err,
                     errlen)))
    return e;

  const json_value *p = json_get(root, "payload"), *p64 = json_get(root, "payload_base64");
  if (p && p64 && p->type != JSON_NULL && p64->type != JSON_NULL) {
    snprintf(err, errlen, "give \"payload\" or \"payload_base64\", not both");
    return err;
  }
  if (p64 && p64->type != JSON_NULL) {
    if (p64->type != JSON_STRING) {
      snprintf(err, errlen, "\"payload_base64\" must be a string");
      return err;
    }
    it->owned = malloc(json_b64_decoded_max(p64->len) + 1);
    if (!it->owned) {
      snprintf(err, errlen, "out of memory");
      return err;
    }
    size_t n;
    if (json_b64_decode(p64->str, p64->len, it->owned, &n) < 0) {
      snprintf(err, errlen, "\"payload_base64\" is not valid base64");
      return err;
    }
    ev->payload = it->owned;
    ev->payload_len = n;
  } else if (p && p->type == JSON_STRING) {
    ev->payload = p->str;
    ev->payload_len = p->len;
  } else if (p && p->type != JSON_NULL) {
    json_writer w;
    json_w_init(&w);
    json_write_value(&w, p);
    if (w.failed) {
      json_w_free(&w);
      snprintf(err, errlen, "out of memory");
      return err;
    }
    it->owned = (unsigned char *)w.buf; /* taken over from the writer */
    ev->payload = it->owned;
    ev->payload_len = w.len;
    if (!ev->content_type) ev->content_type = "application/json";
  }

  const json_value *h = json_get(root, "headers");
  if (h && h->type != JSON_NULL) {
    if (h->type != JSON_OBJECT) {
      snprintf(err, errlen, "\"headers\" must be an object of strings");
      return err;
    }
    if (h->len > ENGRAM_MAX_HEADERS) {
      snprintf(err, errlen, "%zu headers, over the limit of %d", h->len, ENGRAM_MAX_HEADERS);
      return err;
    }
    if (h->len) {
      it->headers = calloc(h->len, sizeof *it->headers);
      if (!it->headers) {
        snprintf(err, errlen, "out of memory");
        return err;
      }
    }
    size_t bytes = 0;
    for (size_t i = 0; i < h->len; i++) {
      const json_member *m = &h->members[i];
      if (m->key_len == 0 || strlen(m->key) != m->key_len) {
        snprintf(err, errlen, "header names must be non-empty and without NUL");
        return err;
      }
      if (m->value.type != JSON_STRING || strlen(m->value.str) != m->value.len) {
        snprintf(err, errlen, "header \"%.60s\" must be a string without NUL", m->key);
        return err;
      }
      bytes += m->key_len + m->value.len;
      it->headers[i].name = m->key;
      it->headers[i].value = m->value.str;
    }
    if (bytes > ENGRAM_MAX_HEADER_BYTES) {
      snprintf(err, errlen, "headers hold %zu bytes, over the limit of %d", bytes,
               ENGRAM_MAX_HEADER_BYTES);
      return err;
    }
    ev->headers = it->headers;
    ev->n_headers = h->len;
  }

  const json_value *d = json_get(root, "deliver_at_ns");
  if (d && d->type != JSON_NULL) {
    int64_t t;
    if (json_int64(d, &t) < 0 || t < 0) {
      snprintf(err, errlen, "\"deliver_at_ns\" must be a non-negative integer");
      return err;
    }
    ev->deliver_at_ns = t;
  }
  const json_value *tomb = json_get(root, "tombstone");
  if (tomb && tomb->type != JSON_NULL) {
    if (tomb->type != JSON_TRUE && tomb->type != JSON_FALSE) {
      snprintf(err, errlen, "\"tombstone\" must be true or false");
      return err;
    }
    if (tomb->type == JSON_TRUE) {
      if (!ev->key) {
        snprintf(err, errlen, "a tombstone needs a \"key\" (it deletes the events of its key)");
        return err;
      }
      ev->flags |= ENGRAM_EVENT_TOMBSTONE;
    }
  }
  const json_value *ts = json_get(root, "timestamp_ns");
  if (keep_time && ts && ts->type != JSON_NULL) {
    int64_t t;
    if (json_int64(ts, &t) < 0 || t <= 0) {
      snprintf(err, errlen, "\"timestamp_ns\" must be a positive integer");
      return err;
    }
    ev->timestamp_ns = t;
    ev->flags |= ENGRAM_EVENT_TIMESTAMP;
  }
  return NULL;
}

/* A raw memory event: the line itself is the payload and memory_id the key. */
static const char *raw_event(const json_value *root, struct item *it, const char *text, size_t len,
                             engram_event *ev, char *err, size_t errlen) {
  const json_value *id = json_get(root, "memory_id");
  if (id && id->type == JSON_STRING) {
    const char *e = str_field(root, "memory_id", ENGRAM_MAX_KEY, &ev->key, err, errlen);
    if (e) return e;
  } else if (id && id->type == JSON_NUMBER) {
    it->keybuf = strndup(id->num, id->num_len);
    if (!it->keybuf) {
      snprintf(err, errlen, "out of memory");
      return err;
    }
    ev->key = it->keybuf;
  } else if (id && id->type != JSON_NULL) {
    snprintf(err, errlen, "\"memory_id\" must be a string or a number");
    return err;
  }
  ev->payload = text;
  ev->payload_len = len;
  ev->content_type = "application/json";
  return NULL;
}

/* Turns one line into b->evs[b->n]. Returns NULL (done, or *skip for a blank line) or
 * the reason the line is refused. */
static const char *add_line(struct batch *b, char *line, size_t len, uint32_t max_payload,
                            int *skip, char *err, size_t errlen) {
  struct item *it = &b->items[b->n];
  engram_event *ev = &b->evs[b->n];
  memset(it, 0, sizeof *it);
  memset(ev, 0, sizeof *ev);
  it->line = line; /* owned by the item from here on, even on error */
  *skip = 0;
  while (len && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' ' ||
                 line[len - 1] == '\t'))
    len--;
  size_t start = 0;
  while (start < len && (line[start] == ' ' || line[start] == '\t')) start++;
  const char *text = line + start;
  len -= start;
  const char *e = NULL;
  if (len == 0) {
    *skip = 1;
    goto out;
  }
  int prc = json_parse(text, len, &it->doc, err, errlen);
  if (prc == -2) {
    snprintf(err, errlen, "out of memory");
    e = err;
    goto out;
  }
  if (prc < 0) {
    e = err;
    goto out;
  }
  const json_value *root = json_doc_root(it->doc);
  if (root->type != JSON_OBJECT) {
    snprintf(err, errlen, "expected a JSON object");
    e = err;
    goto out;
  }
  const json_value *type = json_get(root, "type");
  if (!type || type->type != JSON_STRING) {
    snprintf(err, errlen, "missing \"type\" (a string such as \"memory.saved\")");
    e = err;
    goto out;
  }
  if (!type_ok(type->str, type->len)) {
    snprintf(err, errlen,
             "bad type \"%.60s\": words of A-Z a-z 0-9 _ - joined by single dots, at most %d "
             "bytes",
             type->str, ENGRAM_MAX_TYPE);
    e = err;
    goto out;
  }
  ev->type = type->str;
  if (json_get(root, "payload") || json_get(root, "payload_base64"))
    e = envelope(root, it, ev, err, errlen);
  else
    e = raw_event(root, it, text, len, ev, err, errlen);
  if (!e && ev->payload_len > max_payload) {
    snprintf(err, errlen, "payload %zu bytes over the topic's limit %" PRIu32, ev->payload_len,
             max_payload);
    e = err;
  }
out:
  if (e || *skip) {
    item_free(it);
  } else {
    b->n++;
    b->bytes += ev->payload_len;
  }
  return e;
}

/* What a failure leaves behind: "nothing appended" when it hit the first batch, else
 * which earlier batches did go in. */
static void left_behind(const struct totals *t, uint64_t from_line, char *buf, size_t len) {
  if (t->count == 0)
    snprintf(buf, len, "nothing appended");
  else
    snprintf(buf, len,
             "nothing appended from line %" PRIu64 " on; the %" PRIu64
             " events before it were appended at offsets %" PRIu64 "..%" PRIu64,
             from_line, t->count, t->first, t->last);
}

static int flush(struct cli *c, const char *topic, struct batch *b, uint64_t last_line,
                 struct totals *t) {
  if (b->n == 0) return 0;
  int rc = engram_append_batch(c->log, topic, b->evs, b->n, b->offsets, b->dups);
  if (rc != 0) {
    char note[200];
    left_behind(t, b->first_line, note, sizeof note);
    cli_error("%s (in the batch of lines %" PRIu64 "..%" PRIu64 "; %s)", cli_errtext(c, rc),
              b->first_line, last_line, note);
    batch_clear(b);
    return CLI_EXIT_FAIL;
  }
  for (size_t i = 0; i < b->n; i++) {
    if (b->dups[i]) t->dups++;
    if (t->count == 0 && i == 0) t->first = t->last = b->offsets[i];
    if (b->offsets[i] < t->first) t->first = b->offsets[i];
    if (b->offsets[i] > t->last) t->last = b->offsets[i];
  }
  t->count += b->n;
  batch_clear(b);
  return 0;
}

/* Ctrl-C during a batch: the batch being read is dropped, the command says which lines
 * went in and how to resume, and exits 130. */
static volatile sig_atomic_t interrupted;
static void on_interrupt(int sig) {
  (void)sig;
  interrupted = 1;
}

/* Progress on a terminal: "appended N events (line L)" on stderr, redrawn at most every
 * PROGRESS_NS; nothing when stderr is not a terminal. */
#define PROGRESS_NS 200000000LL
static void progress(int tty, const struct totals *t, uint64_t lineno, int64_t *last_ns, int done) {
  if (!tty) return;
  int64_t now = cli_now_ns();
  if (!done && now - *last_ns < PROGRESS_NS) return;
  *last_ns = now;
  if (done)
    fputs("\r\033[K", stderr);
  else
    fprintf(stderr, "\rappended %" PRIu64 " events (line %" PRIu64 ")\033[K", t->count, lineno);
  fflush(stderr);
}

static int append_batch(struct cli *c, const char *topic, int create, int json) {
  int status = cli_open(c, create ? CLI_OPEN_CREATE : CLI_OPEN_EXISTING);
  if (status) return status;
  engram_topic_info info;
  if ((status = topic_ready(c, topic, create, &info)) != 0) return status;
  uint32_t max_payload =
      info.config.max_payload ? info.config.max_payload : ENGRAM_MAX_PAYLOAD_LIMIT;

  struct batch *b = calloc(1, sizeof *b);
  if (!b) return cli_error("append %s: out of memory", topic);
  struct totals t = {0, 0, 0, 0};
  uint64_t lineno = 0, done_lines = 0; /* lines 1..done_lines are appended */
  char err[256];
  const int tty = isatty(STDERR_FILENO);
  int64_t shown_ns = 0;
  struct sigaction sa, old_int;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_interrupt; /* no SA_RESTART: a read of stdin returns */
  sigemptyset(&sa.sa_mask);
  interrupted = 0;
  sigaction(SIGINT, &sa, &old_int);
  for (;;) {
    char *line = NULL;
    size_t cap = 0;
    errno = 0;
    ssize_t n = interrupted ? -1 : getline(&line, &cap, stdin);
    if (interrupted) {
      free(line);
      progress(tty, &t, lineno, &shown_ns, 1);
      if (t.count)
        cli_error("append %s: interrupted: lines 1..%" PRIu64 " were appended (offsets %" PRIu64
                  "..%" PRIu64 "), nothing after; resume with `tail -n +%" PRIu64
                  " FILE | engram append %s --batch`",
                  topic, done_lines, t.first, t.last, done_lines + 1, topic);
      else
        cli_error("append %s: interrupted: nothing appended", topic);
      status = 130;
      goto out;
    }
    if (n < 0) {
      free(line);
      if (ferror(stdin)) {
        char note[200];
        left_behind(&t, b->n ? b->first_line : lineno + 1, note, sizeof note);
        status = cli_error("append %s: reading stdin failed after line %" PRIu64 " (%s)", topic,
                           lineno, note);
        goto out;
      }
      break;
    }
    lineno++;
    if ((size_t)n > MAX_LINE) {
      free(line);
      char note[200];
      left_behind(&t, b->n ? b->first_line : lineno, note, sizeof note);
      status = cli_error("append %s: line %" PRIu64 ": %zd bytes, too long (%s)", topic, lineno, n,
                         note);
      goto out;
    }
    /* A byte-order mark may open the input. */
    size_t skip_bom = 0;
    if (lineno == 1 && n >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) skip_bom = 3;
    if (skip_bom) memmove(line, line + 3, (size_t)n - 2);
    if (b->n == 0) b->first_line = lineno;
    int blank;
    const char *e = add_line(b, line, (size_t)n - skip_bom, max_payload, &blank, err, sizeof err);
    if (e) {
      char note[200];
      left_behind(&t, b->n ? b->first_line : lineno, note, sizeof note);
      status = cli_error("append %s: line %" PRIu64 ": %s (%s)", topic, lineno, e, note);
      goto out;
    }
    if (b->n == BATCH_EVENTS || b->bytes >= BATCH_BYTES) {
      if (interrupted) continue; /* say so above, before appending more */
      if ((status = flush(c, topic, b, lineno, &t)) != 0) goto out;
      done_lines = lineno;
      progress(tty, &t, lineno, &shown_ns, 0);
    }
  }
  if ((status = flush(c, topic, b, lineno, &t)) != 0) goto out;
  progress(tty, &t, lineno, &shown_ns, 1);
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_obj(&w);
    json_ku64(&w, "count", t.count);
    json_ku64(&w, "duplicates", t.dups);
    json_key(&w, "first_offset");
    t.count ? json_u64(&w, t.first) : json_null(&w);
    json_key(&w, "last_offset");
    t.count ? json_u64(&w, t.last) : json_null(&w);
    json_obj_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
  } else if (t.count == 0) {
    printf("appended 0 events\n");
  } else {
    printf("appended %" PRIu64 " event%s", t.count, t.count == 1 ? "" : "s");
    if (t.dups) printf(" (%" PRIu64 " duplicate%s)", t.dups, t.dups == 1 ? "" : "s");
    if (t.first == t.last)
      printf(", offset %" PRIu64 "\n", t.first);
    else
      printf(", offsets %" PRIu64 "..%" PRIu64 "\n", t.first, t.last);
  }
out:
  sigaction(SIGINT, &old_int, NULL);
  batch_clear(b);
  free(b);
  return status;
}

/* --header NAME=VALUE: repeatable, at most ENGRAM_MAX_HEADERS. */
struct headers {
  engram_header v[ENGRAM_MAX_HEADERS];
  size_t n;
};

static int add_header(struct cli_args *a, const struct cli_opt *o, const char *val) {
  struct headers *h = o->to;
  if (h->n == ENGRAM_MAX_HEADERS)
    return cli_usage(a->cmd, "at most %d --header options", ENGRAM_MAX_HEADERS);
  /* Split in place: the value lies in an argv string, which is ours to edit. */
  const char *e = cli_parse_kv((char *)val, &h->v[h->n].name, &h->v[h->n].value);
  if (e) return cli_usage(a->cmd, "--header '%s': %s", val, e);
  h->n++;
  return 0;
}

int cmd_append(struct cli *c, int argc, char **argv) {
  const char *key = NULL, *idem = NULL, *ctype = NULL, *payload = NULL;
  struct headers hdrs = {.n = 0};
  uint64_t delay_ms = 0;
  int create = 0, json = 0, batch = 0, tombstone = 0;
  const struct cli_opt opts[] = {CLI_OPT_STR("--key", &key),
                                 CLI_OPT_FLAG("--tombstone", &tombstone),
                                 CLI_OPT_STR("--idem", &idem),
                                 CLI_OPT_CUSTOM("--header", &hdrs, add_header),
                                 CLI_OPT_STR("--content-type", &ctype),
                                 CLI_OPT_STR("--payload", &payload),
                                 CLI_OPT_DURATION("--delay", &delay_ms, .max = ENGRAM_MAX_DELAY_MS),
                                 CLI_OPT_FLAG("--create", &create),
                                 CLI_OPT_FLAG("--json", &json),
                                 CLI_OPT_FLAG("--batch", &batch),
                                 CLI_OPT_FLAG("--keep-time", &keep_time),
                                 CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "append", argc, argv);
  int r = cli_args_parse(&a, opts, help, 0, -1, "");
  if (r != CLI_GO) return r;
  /* The options of a single event: --batch refuses them, naming the one given last. */
  static const char *const single[] = {"--key",     "--idem",  "--header",   "--content-type",
                                       "--payload", "--delay", "--tombstone"};
  const char *single_opt = NULL;
  for (size_t i = 0, last = 0; i < sizeof single / sizeof single[0]; i++)
    if ((size_t)cli_args_given(&a, single[i]) > last) {
      last = (size_t)cli_args_given(&a, single[i]);
      single_opt = single[i];
    }
  if (batch) {
    if (single_opt)
      return cli_usage(a.cmd, "%s does not apply to --batch (give it in each line)", single_opt);
    if (cli_args_count(&a, 1, 1, "TOPIC (the types come from the lines)")) return CLI_EXIT_USAGE;
    return append_batch(c, a.pos[0], create, json);
  }
  if (keep_time) return cli_usage(a.cmd, "--keep-time goes with --batch");
  if (cli_args_count(&a, 2, 2, "TOPIC TYPE")) return CLI_EXIT_USAGE;
  if (!type_ok(a.pos[1], strlen(a.pos[1])))
    return cli_usage(a.cmd, "bad type '%s': words of A-Z a-z 0-9 _ - joined by single dots",
                     a.pos[1]);
  if (tombstone && !key) return cli_usage(a.cmd, "--tombstone needs --key (the key it deletes)");
  return append_one(c, &a, key, tombstone ? ENGRAM_EVENT_TOMBSTONE : 0, idem,
                    hdrs.n ? hdrs.v : NULL, hdrs.n, ctype, payload, delay_ms, create, json);
}
