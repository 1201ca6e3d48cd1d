/* append.c — validating and appending events, idempotency keys, automatic dictionaries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/log_private.h"

#define MAX_BATCH 65536

int log_valid_type(const char *s) {
  if (!s) return 0;
  size_t n = 0, word = 0;
  for (; s[n]; n++) {
    char c = s[n];
    if (n >= ENGRAM_MAX_TYPE) return 0;
    if (c == '.') {
      if (word == 0) return 0;
      word = 0;
    } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-') {
      word++;
    } else {
      return 0;
    }
  }
  return n > 0 && word > 0;
}

int log_check_event(const struct log *log, const char *topic, const engram_event *ev,
                    uint32_t max_payload) {
  if (!ev) return log_error(log, ENGRAM_EINVAL, "append %s: event is NULL", topic);
  if (!log_valid_type(ev->type))
    return log_error(
        log, ENGRAM_EINVAL,
        "append %s: event type %s%.60s%s invalid: use dotted words of [A-Za-z0-9_-], 1-200 bytes",
        topic, ev->type ? "'" : "", ev->type ? ev->type : "(null)", ev->type ? "'" : "");
  if (ev->key && strlen(ev->key) > ENGRAM_MAX_KEY)
    return log_error(log, ENGRAM_ETOOBIG, "append %s: key of %zu bytes over limit %d", topic,
                     strlen(ev->key), ENGRAM_MAX_KEY);
  if (ev->payload_len && !ev->payload)
    return log_error(log, ENGRAM_EINVAL, "append %s: payload is NULL but payload_len is %zu", topic,
                     ev->payload_len);
  if (ev->payload_len > max_payload)
    return log_error(log, ENGRAM_ETOOBIG, "append %s: payload %zu bytes over limit %u", topic,
                     ev->payload_len, max_payload);
  if (ev->content_type && strlen(ev->content_type) > ENGRAM_MAX_CONTENT_TYPE)
    return log_error(log, ENGRAM_ETOOBIG, "append %s: content type over %d bytes", topic,
                     ENGRAM_MAX_CONTENT_TYPE);
  if (ev->idempotency_key) {
    size_t n = strlen(ev->idempotency_key);
    if (n == 0) return log_error(log, ENGRAM_EINVAL, "append %s: empty idempotency key", topic);
    if (n > ENGRAM_MAX_KEY)
      return log_error(log, ENGRAM_ETOOBIG, "append %s: idempotency key of %zu bytes over limit %d",
                       topic, n, ENGRAM_MAX_KEY);
  }
  if (ev->deliver_at_ns < 0)
    return log_error(log, ENGRAM_EINVAL, "append %s: negative deliver_at", topic);
  if (ev->flags & ~(uint32_t)(ENGRAM_EVENT_TOMBSTONE | ENGRAM_EVENT_TIMESTAMP))
    return log_error(log, ENGRAM_EINVAL, "append %s: unknown event flags 0x%x", topic, ev->flags);
  if ((ev->flags & ENGRAM_EVENT_TIMESTAMP) && ev->timestamp_ns <= 0)
    return log_error(log, ENGRAM_EINVAL,
                     "append %s: timestamp %lld with ENGRAM_EVENT_TIMESTAMP: give a time in ns "
                     "since the epoch",
                     topic, (long long)ev->timestamp_ns);
  if ((ev->flags & ENGRAM_EVENT_TOMBSTONE) && !ev->key)
    return log_error(log, ENGRAM_EINVAL,
                     "append %s: a tombstone needs a key (it deletes the events of its key)",
                     topic);
  if (ev->n_headers > ENGRAM_MAX_HEADERS)
    return log_error(log, ENGRAM_ETOOBIG, "append %s: %zu headers over limit %d", topic,
                     ev->n_headers, ENGRAM_MAX_HEADERS);
  if (ev->n_headers && !ev->headers)
    return log_error(log, ENGRAM_EINVAL, "append %s: headers is NULL but n_headers is %zu", topic,
                     ev->n_headers);
  size_t hb = 0;
  for (size_t i = 0; i < ev->n_headers; i++) {
    const engram_header *h = &ev->headers[i];
    if (!h->name || !*h->name)
      return log_error(log, ENGRAM_EINVAL, "append %s: header %zu has no name", topic, i);
    hb += strlen(h->name) + (h->value ? strlen(h->value) : 0);
  }
  if (hb > ENGRAM_MAX_HEADER_BYTES)
    return log_error(log, ENGRAM_ETOOBIG, "append %s: headers of %zu bytes over limit %d", topic,
                     hb, ENGRAM_MAX_HEADER_BYTES);
  return 0;
}

/* Per-thread encode buffer. */
static pthread_key_t enc_key;
static pthread_once_t enc_once = PTHREAD_ONCE_INIT;
static void enc_free(void *p) {
  log_enc *e = p;
  free(e->buf);
  free(e);
}
static void enc_key_init(void) { pthread_key_create(&enc_key, enc_free); }
static log_enc *enc_get(void) {
  pthread_once(&enc_once, enc_key_init);
  log_enc *e = pthread_getspecific(enc_key);
  if (!e && (e = calloc(1, sizeof *e))) pthread_setspecific(enc_key, e);
  return e;
}

struct append_req {
  const char *topic;
  const engram_event *evs;
  size_t n;
  uint64_t *offsets;
  int *dups;
};

/* Looks an idempotency key up; returns 1 with *off when it is a duplicate in the window. */
static int idem_find(log_wtx *w, uint32_t topic_id, const char *key, int64_t now_ns,
                     uint64_t *off) {
  size_t kn = strlen(key);
  unsigned char kb[4 + ENGRAM_MAX_KEY];
  be32_put(kb, topic_id);
  memcpy(kb + 4, key, kn);
  MDB_val k = {4 + kn, kb}, v;
  if (mdb_get(w->txn, w->log->db_idem, &k, &v) != 0 || v.mv_size != 16) return 0;
  int64_t ts = (int64_t)be64_get((unsigned char *)v.mv_data + 8);
  if (now_ns >= clock_after_ms(ts, w->log->opts.dedup_window_ms)) return 0;
  *off = be64_get(v.mv_data);
  return 1;
}

static int idem_put(log_wtx *w, uint32_t topic_id, const char *key, int64_t now_ns, uint64_t off) {
  size_t kn = strlen(key);
  unsigned char kb[4 + ENGRAM_MAX_KEY], vb[16];
  be32_put(kb, topic_id);
  memcpy(kb + 4, key, kn);
  be64_put(vb, off);
  be64_put(vb + 8, (uint64_t)now_ns);
  MDB_val k = {4 + kn, kb}, v = {16, vb};
  int rc = mdb_put(w->txn, w->log->db_idem, &k, &v, 0);
  return rc ? log_err_mdb(rc) : 0;
}

/* Claims the topic's first dictionary training once it holds enough events. Training
 * takes tens of milliseconds of CPU (reading the samples, then ZDICT), so it runs after
 * the commit, outside any transaction (the trainer thread of commit.c); failing to train leaves the
 * topic without one. */
static int maybe_train(log_wtx *w, log_topic *t, uint64_t head) {
  if ((t->cfg.flags & ENGRAM_TOPIC_NO_DICT) || t->dict_trained_auto) return 0;
  uint64_t first = log_topic_first(w->log, w->txn, t);
  if (!first || head - first + 1 < t->cfg.dict_train_after) return 0;
  t->dict_trained_auto = 1;
  int rc = log_topic_meta_put(w->log, w->txn, t);
  if (rc == 0) log_train_request(w->log, t->name);
  return rc;
}

/* The append time of the topic's newest stored event, 0 when it has none (read only for
 * appends with ENGRAM_EVENT_TIMESTAMP). */
static int newest_time(log_wtx *w, const log_topic *t, MDB_cursor *c, int64_t *out) {
  MDB_val k, v;
  *out = 0;
  int rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return log_err_mdb(rc);
  uint64_t off;
  memcpy(&off, k.mv_data, 8);
  log_view view;
  if ((rc = log_view_get(w->log, w->txn, t, off, &view)))
    return log_error(w->log, rc, "append %s: reading the newest event (offset %llu) for its time",
                     t->name, (unsigned long long)off);
  *out = view.timestamp_ns;
  return 0;
}

static int append_job(log_wtx *w, void *arg) {
  struct append_req *r = arg;
  struct log *log = w->log;
  log_topic t;
  int rc = log_topic_get(log, w->txn, r->topic, &t);
  if (rc) return rc;
  for (size_t i = 0; i < r->n; i++) {
    rc = log_check_event(log, r->topic, &r->evs[i], t.cfg.max_payload);
    if (rc) return rc;
  }
  log_enc *enc = enc_get();
  if (!enc) return log_error(log, ENGRAM_ENOMEM, "append %s: out of memory", r->topic);
  MDB_cursor *c;
  rc = mdb_cursor_open(w->txn, t.dbi, &c);
  if (rc) return log_err_mdb(rc);
  uint64_t head = log_topic_head(log, w->txn, &t);
  const log_zpay *pre = NULL;
  if ((rc = log_codec_compress_batch(log, w->txn, &t, r->evs, r->n, &pre))) {
    mdb_cursor_close(c);
    return rc;
  }
  int appended = 0;
  int64_t newest = -1; /* the topic's newest append time, read at the first given time */
  for (size_t i = 0; i < r->n; i++) {
    const engram_event *ev = &r->evs[i];
    int64_t at = w->now_ns;
    engram_event copy;
    if (ev->flags & ENGRAM_EVENT_TIMESTAMP) {
      if (newest < 0 && (rc = newest_time(w, &t, c, &newest))) break;
      if (ev->timestamp_ns < newest) {
        rc = log_error(log, ENGRAM_EINVAL,
                       "append %s: timestamp %lld is older than the topic's newest event (%lld): "
                       "a topic's append times never decrease",
                       r->topic, (long long)ev->timestamp_ns, (long long)newest);
        break;
      }
      if (ev->timestamp_ns > w->now_ns) {
        rc = log_error(log, ENGRAM_EINVAL,
                       "append %s: timestamp %lld is ahead of the log's clock (%lld): a given "
                       "append time cannot be in the future",
                       r->topic, (long long)ev->timestamp_ns, (long long)w->now_ns);
        break;
      }
      at = ev->timestamp_ns;
      copy = *ev; /* an input flag: not stored */
      copy.flags &= ~(uint32_t)ENGRAM_EVENT_TIMESTAMP;
      ev = &copy;
    }
    engram_event tomb;
    if (ev->key && t.cfg.tombstone_type[0] && !strcmp(ev->type, t.cfg.tombstone_type)) {
      tomb = *ev; /* the topic's tombstone type: stored as a tombstone */
      tomb.flags |= ENGRAM_EVENT_TOMBSTONE;
      ev = &tomb;
    }
    uint64_t off;
    if (ev->idempotency_key && idem_find(w, t.id, ev->idempotency_key, at, &off)) {
      r->offsets[i] = off;
      if (r->dups) r->dups[i] = 1;
      continue;
    }
    off = head + 1;
    rc = log_codec_encode(log, w->txn, &t, ev, at, off, pre ? &pre[i] : NULL, enc);
    if (rc) break;
    MDB_val k = {8, &off}, v = {enc->len, enc->buf};
    rc = mdb_cursor_put(c, &k, &v, MDB_APPEND);
    if (rc) {
      rc = log_err_mdb(rc);
      if (rc != LOG_EMAPFULL)
        log_error(log, rc, "append %s: %s", r->topic,
                  rc == ENGRAM_ENOSPC ? "disk full: nothing of it was stored; free space on "
                                        "the log's file system and retry"
                                      : "write failed");
      break;
    }
    if (ev->idempotency_key && (rc = idem_put(w, t.id, ev->idempotency_key, at, off))) break;
    head = off;
    if (newest >= 0) newest = at;
    appended = 1;
    r->offsets[i] = off;
    if (r->dups) r->dups[i] = 0;
  }
  mdb_cursor_close(c);
  if (rc) return rc;
  if (appended) {
    log_touch(w, r->topic, head);
    rc = maybe_train(w, &t, head);
  }
  return rc;
}

int log_append_in(log_wtx *w, const char *topic, const engram_event *ev, uint64_t *offset,
                  int *duplicate) {
  uint64_t off = 0;
  int dup = 0;
  struct append_req r = {topic, ev, 1, &off, &dup};
  int rc = append_job(w, &r);
  if (rc) return rc;
  if (offset) *offset = off;
  if (duplicate) *duplicate = dup;
  return 0;
}

int log_append_batch(struct log *log, const char *topic, const engram_event *evs, size_t n,
                     uint64_t *offsets, int *duplicates) {
  if (!log) return ENGRAM_EINVAL;
  if (!evs || !offsets)
    return log_error(log, ENGRAM_EINVAL, "append %s: events or offsets is NULL",
                     topic ? topic : "");
  if (n == 0) return log_error(log, ENGRAM_EINVAL, "append %s: empty batch", topic ? topic : "");
  if (n > MAX_BATCH)
    return log_error(log, ENGRAM_ETOOBIG, "append %s: batch of %zu events over limit %d",
                     topic ? topic : "", n, MAX_BATCH);
  struct append_req r = {topic, evs, n, offsets, duplicates};
  int rc = log_write(log, append_job, &r);
  return rc < 0 ? rc : 0;
}

int log_append(struct log *log, const char *topic, const engram_event *ev, uint64_t *offset,
               int *duplicate) {
  if (!log) return ENGRAM_EINVAL;
  uint64_t off = 0;
  int dup = 0;
  int rc = topic && ev ? log_share_append(log, topic, ev, &off, &dup) : LOG_SHARE_LOCAL;
  if (rc == LOG_SHARE_LOCAL) rc = log_append_batch(log, topic, ev, 1, &off, &dup);
  if (rc) return rc;
  if (offset) *offset = off;
  if (duplicate) *duplicate = dup;
  return 0;
}

static char *dup_s(const char *s, int *bad) {
  if (!s) return NULL;
  char *d = strdup(s);
  if (!d) *bad = 1;
  return d;
}

int log_event_copy(engram_event *dst, const engram_event *src) {
  memset(dst, 0, sizeof *dst);
  int bad = 0;
  dst->type = dup_s(src->type, &bad);
  dst->key = dup_s(src->key, &bad);
  dst->content_type = dup_s(src->content_type, &bad);
  dst->idempotency_key = dup_s(src->idempotency_key, &bad);
  dst->deliver_at_ns = src->deliver_at_ns;
  dst->timestamp_ns = src->timestamp_ns; /* an input with ENGRAM_EVENT_TIMESTAMP */
  dst->flags = src->flags;
  dst->payload_len = src->payload_len;
  if (src->payload_len) {
    void *p = malloc(src->payload_len);
    if (p)
      memcpy(p, src->payload, src->payload_len);
    else
      bad = 1;
    dst->payload = p;
  }
  if (src->n_headers) {
    engram_header *h = calloc(src->n_headers, sizeof *h);
    dst->headers = h;
    if (!h) bad = 1;
    for (size_t i = 0; h && i < src->n_headers; i++) {
      h[i].name = dup_s(src->headers[i].name, &bad);
      h[i].value = dup_s(src->headers[i].value ? src->headers[i].value : "", &bad);
      dst->n_headers = i + 1;
    }
  }
  if (bad) {
    log_event_free(dst);
    return ENGRAM_ENOMEM;
  }
  return 0;
}

void log_event_free(engram_event *e) {
  free((void *)e->type);
  free((void *)e->key);
  free((void *)e->payload);
  free((void *)e->content_type);
  free((void *)e->idempotency_key);
  for (size_t i = 0; i < e->n_headers; i++) {
    free((void *)e->headers[i].name);
    free((void *)e->headers[i].value);
  }
  free((void *)e->headers);
  memset(e, 0, sizeof *e);
}
