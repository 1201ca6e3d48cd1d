/* read.c — reading events into batches, and checking every stored record (verify). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/log_private.h"
#include "schema/record.pb-c.h"

#define MAX_READ 100000
#define BLOCK (256 * 1024)
#define CACHE_BLOCKS 16

/* Batches are built in 256 KiB blocks. Freed blocks go to a small per-thread cache:
 * returning whole blocks to malloc made it trim and regrow the heap on every read,
 * and the page faults cost more than decoding. */
struct chunk {
  struct chunk *next;
  size_t used, cap;
  unsigned char data[];
};

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
struct block_cache {
  int n;
  void *blocks[CACHE_BLOCKS];
};
static void cache_free(void *p) {
  struct block_cache *c = p;
  for (int i = 0; i < c->n; i++) free(c->blocks[i]);
  free(c);
}
static void cache_init(void) { pthread_key_create(&cache_key, cache_free); }
static struct block_cache *cache_get(void) {
  pthread_once(&cache_once, cache_init);
  struct block_cache *c = pthread_getspecific(cache_key);
  if (!c && (c = calloc(1, sizeof *c))) pthread_setspecific(cache_key, c);
  return c;
}
static void *block_get(void) {
  struct block_cache *c = cache_get();
  if (c && c->n) return c->blocks[--c->n];
  return malloc(BLOCK);
}
static void block_put(void *b) {
  struct block_cache *c = cache_get();
  if (c && c->n < CACHE_BLOCKS)
    c->blocks[c->n++] = b;
  else
    free(b);
}

/* The batch and its memory; engram_batch is its first member. */
struct log_bb {
  engram_batch pub;
  size_t cap;
  int events_in_block; /* pub.events is a cached block */
  struct chunk *chunks;
  const char *topic; /* copied topic name shared by the batch's events */
};

log_bb *log_bb_new(size_t expected) {
  log_bb *bb = calloc(1, sizeof *bb);
  if (!bb) return NULL;
  if (expected > BLOCK / sizeof(engram_event)) expected = BLOCK / sizeof(engram_event);
  if (expected) {
    bb->pub.events = block_get();
    if (!bb->pub.events) {
      free(bb);
      return NULL;
    }
    bb->events_in_block = 1;
    bb->cap = BLOCK / sizeof(engram_event);
  }
  return bb;
}

void log_bb_free(log_bb *bb) {
  if (!bb) return;
  struct chunk *c = bb->chunks;
  while (c) {
    struct chunk *n = c->next;
    if (c->cap + sizeof *c == BLOCK)
      block_put(c);
    else
      free(c);
    c = n;
  }
  if (bb->events_in_block)
    block_put(bb->pub.events);
  else
    free(bb->pub.events);
  free(bb);
}

void engram_batch_free(engram_batch *b) { log_bb_free((log_bb *)b); }

engram_batch *log_bb_finish(log_bb *bb) { return &bb->pub; }

size_t log_bb_count(const log_bb *bb) { return bb->pub.count; }

static void *bb_alloc(log_bb *bb, size_t n) {
  n = (n + 7) & ~(size_t)7;
  struct chunk *c = bb->chunks;
  if (!c || c->cap - c->used < n) {
    if (n <= BLOCK - sizeof *c) {
      c = block_get();
      if (!c) return NULL;
      c->cap = BLOCK - sizeof *c;
    } else {
      c = malloc(sizeof *c + n);
      if (!c) return NULL;
      c->cap = n;
    }
    c->used = 0;
    c->next = bb->chunks;
    bb->chunks = c;
  }
  void *p = c->data + c->used;
  c->used += n;
  return p;
}

void *log_bb_copy(log_bb *bb, const void *p, size_t n) {
  char *d = bb_alloc(bb, n + 1);
  if (!d) return NULL;
  if (n) memcpy(d, p, n);
  d[n] = '\0';
  return d;
}

engram_event *log_bb_add(log_bb *bb, engram *log, MDB_txn *txn, const log_topic *t,
                         const log_view *v, int *rc) {
  *rc = ENGRAM_ENOMEM;
  if (bb->pub.count == bb->cap) {
    size_t cap = bb->cap ? bb->cap * 2 : 16;
    engram_event *e =
        bb->events_in_block ? malloc(cap * sizeof *e) : realloc(bb->pub.events, cap * sizeof *e);
    if (!e) return NULL;
    if (bb->events_in_block) {
      memcpy(e, bb->pub.events, bb->pub.count * sizeof *e);
      block_put(bb->pub.events);
      bb->events_in_block = 0;
    }
    bb->pub.events = e;
    bb->cap = cap;
  }
  if (!bb->topic || strcmp(bb->topic, t->name)) {
    bb->topic = log_bb_copy(bb, t->name, strlen(t->name));
    if (!bb->topic) return NULL;
  }
  engram_event e = {0};
  e.offset = v->offset;
  e.topic = bb->topic;
  e.timestamp_ns = v->timestamp_ns;
  e.deliver_at_ns = v->deliver_at_ns;
  if (!(e.type = log_bb_copy(bb, v->type, v->type_len))) return NULL;
  if (v->has_key && !(e.key = log_bb_copy(bb, v->key, v->key_len))) return NULL;
  if (v->content_type_len &&
      !(e.content_type = log_bb_copy(bb, v->content_type, v->content_type_len)))
    return NULL;
  if (v->idem_len && !(e.idempotency_key = log_bb_copy(bb, v->idem, v->idem_len))) return NULL;
  if (v->n_headers) {
    engram_header *h = bb_alloc(bb, v->n_headers * sizeof *h);
    if (!h) return NULL;
    for (uint32_t i = 0; i < v->n_headers; i++) {
      h[i].name = log_bb_copy(bb, v->headers[i].name, v->headers[i].name_len);
      h[i].value = log_bb_copy(bb, v->headers[i].value, v->headers[i].value_len);
      if (!h[i].name || !h[i].value) return NULL;
    }
    e.headers = h;
    e.n_headers = v->n_headers;
  }
  /* One spare NUL byte so text payloads can be used as C strings. */
  unsigned char *p = bb_alloc(bb, (size_t)v->raw_len + 1);
  if (!p) return NULL;
  p[v->raw_len] = '\0';
  *rc = log_codec_payload(log, txn, t->id, v, p);
  if (*rc) return NULL;
  e.payload = p;
  e.payload_len = v->raw_len;
  bb->pub.events[bb->pub.count] = e;
  *rc = 0;
  return &bb->pub.events[bb->pub.count++];
}

int log_view_get(engram *log, MDB_txn *txn, const log_topic *t, uint64_t offset, log_view *v) {
  MDB_val k = {8, &offset}, val;
  int rc = mdb_get(txn, t->dbi, &k, &val);
  if (rc == MDB_NOTFOUND)
    return log_error(log, ENGRAM_ENOTFOUND, "topic %s: no event at offset %llu", t->name,
                     (unsigned long long)offset);
  if (rc) return log_error(log, log_err_mdb(rc), "topic %s: %s", t->name, mdb_strerror(rc));
  if (log_codec_decode(val.mv_data, val.mv_size, offset, v))
    return log_error(log, ENGRAM_ECORRUPT, "topic %s offset %llu: record damaged (CRC or decode)",
                     t->name, (unsigned long long)offset);
  return 0;
}

int engram_read_range(engram *log, const char *topic, uint64_t from, size_t max,
                      engram_batch **out) {
  if (!log) return ENGRAM_EINVAL;
  if (log->remote) return log->remote->read_range(log, topic, from, max, out);
  if (!out) return log_error(log, ENGRAM_EINVAL, "read: out is NULL");
  *out = NULL;
  if (max == 0) return log_error(log, ENGRAM_EINVAL, "read %s: max is 0", topic ? topic : "");
  if (max > MAX_READ) max = MAX_READ;
  MDB_txn *txn;
  int rc = log_read_begin(log, &txn);
  if (rc) return rc;
  log_topic t;
  rc = log_topic_get(log, txn, topic, &t);
  if (rc) {
    log_read_end(log, txn);
    return rc;
  }
  log_bb *bb = log_bb_new(max);
  MDB_cursor *c = NULL;
  if (!bb) {
    rc = log_error(log, ENGRAM_ENOMEM, "read %s: out of memory", topic);
    goto done;
  }
  if ((rc = mdb_cursor_open(txn, t.dbi, &c))) {
    rc = log_err_mdb(rc);
    goto done;
  }
  MDB_val k = {8, &from}, v;
  int op = MDB_SET_RANGE;
  while (bb->pub.count < max && mdb_cursor_get(c, &k, &v, op) == 0) {
    op = MDB_NEXT;
    uint64_t off;
    memcpy(&off, k.mv_data, 8);
    log_view view;
    if (log_codec_decode(v.mv_data, v.mv_size, off, &view)) {
      rc = log_error(log, ENGRAM_ECORRUPT, "read %s offset %llu: record damaged (CRC or decode)",
                     topic, (unsigned long long)off);
      break;
    }
    if (!log_bb_add(bb, log, txn, &t, &view, &rc)) {
      if (rc == ENGRAM_ENOMEM) log_error(log, rc, "read %s: out of memory", topic);
      break;
    }
  }
done:
  if (c) mdb_cursor_close(c);
  log_read_end(log, txn);
  if (rc) {
    log_bb_free(bb);
    return rc;
  }
  *out = log_bb_finish(bb);
  return 0;
}

int engram_read(engram *log, const char *topic, uint64_t offset, engram_batch **out) {
  if (!log) return ENGRAM_EINVAL;
  if (log->remote) return log->remote->read(log, topic, offset, out);
  if (!out) return log_error(log, ENGRAM_EINVAL, "read: out is NULL");
  *out = NULL;
  MDB_txn *txn;
  int rc = log_read_begin(log, &txn);
  if (rc) return rc;
  log_topic t;
  log_view v;
  log_bb *bb = NULL;
  rc = log_topic_get(log, txn, topic, &t);
  if (!rc) rc = log_view_get(log, txn, &t, offset, &v);
  if (!rc) {
    bb = log_bb_new(1);
    if (!bb)
      rc = log_error(log, ENGRAM_ENOMEM, "read: out of memory");
    else
      log_bb_add(bb, log, txn, &t, &v, &rc);
  }
  log_read_end(log, txn);
  if (rc) {
    log_bb_free(bb);
    return rc;
  }
  *out = log_bb_finish(bb);
  return 0;
}

/* Checks one record fully: CRC, our decoder, protobuf-c's decoder, and decompression. */
static const char *check_record(engram *log, MDB_txn *txn, const log_topic *t, const MDB_val *val,
                                uint64_t off, void **scratch, size_t *scap) {
  log_view v;
  if (log_codec_decode(val->mv_data, val->mv_size, off, &v)) return "CRC mismatch or undecodable";
  Engram__Record *r =
      engram__record__unpack(NULL, val->mv_size - 4, (const uint8_t *)val->mv_data + 4);
  if (!r) return "protobuf decode failed";
  int same = r->payload.len == v.payload_len && r->raw_len == v.raw_len &&
             r->timestamp_ns == v.timestamp_ns;
  engram__record__free_unpacked(r, NULL);
  if (!same) return "decoders disagree";
  if (v.raw_len + 1 > *scap) {
    void *p = realloc(*scratch, v.raw_len + 1);
    if (!p) return "out of memory";
    *scratch = p;
    *scap = v.raw_len + 1;
  }
  if (log_codec_payload(log, txn, t->id, &v, *scratch)) return "payload does not decompress";
  return NULL;
}

int engram_verify(engram *log, engram_verify_report *report) {
  if (!log || !report) return log_error(log, ENGRAM_EINVAL, "verify: NULL argument");
  if (log->remote) return log->remote->verify(log, report);
  memset(report, 0, sizeof *report);
  engram_topic_info *topics;
  size_t n;
  int rc = engram_topic_list(log, &topics, &n);
  if (rc) return rc;
  void *scratch = NULL;
  size_t scap = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    MDB_txn *txn;
    if ((rc = log_read_begin(log, &txn))) break;
    log_topic t;
    if (log_topic_get(log, txn, topics[i].name, &t) != 0) {
      log_read_end(log, txn);
      continue; /* dropped meanwhile */
    }
    report->topics++;
    MDB_cursor *c;
    if (mdb_cursor_open(txn, t.dbi, &c) == 0) {
      MDB_val k, v;
      int op = MDB_FIRST;
      uint64_t prev = 0;
      while (mdb_cursor_get(c, &k, &v, op) == 0) {
        op = MDB_NEXT;
        uint64_t off;
        memcpy(&off, k.mv_data, 8);
        report->records++;
        const char *why = check_record(log, txn, &t, &v, off, &scratch, &scap);
        if (!why && prev && off != prev + 1) why = "gap before this offset";
        prev = off;
        if (why) {
          if (!report->damaged)
            snprintf(report->first_damage, sizeof report->first_damage, "topic %s offset %llu: %s",
                     t.name, (unsigned long long)off, why);
          report->damaged++;
        }
      }
      mdb_cursor_close(c);
    }
    log_read_end(log, txn);
  }
  free(scratch);
  free(topics);
  return rc;
}
