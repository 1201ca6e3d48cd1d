/* read.c — reading events into batches, and checking every stored record (verify). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

void log_batch_free(engram_batch *b) { log_bb_free((log_bb *)b); }

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

engram_event *log_bb_add(log_bb *bb, struct log *log, MDB_txn *txn, const log_topic *t,
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
  e.flags = v->flags;
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

/* Offsets are dense: every offset from the topic's lowest (1, or the first one not
 * removed) up to its head is stored, except the t->compacted ones key compaction removed.
 * A hole in that range is damage on a topic without such gaps; with them, verify counts
 * the holes against t->compacted. */
static uint64_t lowest_offset(const log_topic *t) {
  return t->first_removed > 1 ? t->first_removed : 1;
}

static int hole(struct log *log, const log_topic *t, uint64_t offset, uint64_t found) {
  if (found)
    return log_error(log, ENGRAM_ECORRUPT,
                     "topic %s: offset %llu is missing (the next stored is %llu): data.mdb is "
                     "damaged; run `engram verify` and restore from a backup",
                     t->name, (unsigned long long)offset, (unsigned long long)found);
  return log_error(log, ENGRAM_ECORRUPT,
                   "topic %s: offset %llu is missing below the head: data.mdb is damaged; run "
                   "`engram verify` and restore from a backup",
                   t->name, (unsigned long long)offset);
}

int log_view_get(struct log *log, MDB_txn *txn, const log_topic *t, uint64_t offset, log_view *v) {
  MDB_val k = {8, &offset}, val;
  int rc = mdb_get(txn, t->dbi, &k, &val);
  if (rc == MDB_NOTFOUND) {
    if (offset >= lowest_offset(t) && offset <= log_topic_head(log, txn, t)) {
      if (t->compacted)
        return log_error(log, ENGRAM_ENOTFOUND,
                         "topic %s: offset %llu was removed by key compaction (a newer event of "
                         "its key, or its tombstone's expiry)",
                         t->name, (unsigned long long)offset);
      return hole(log, t, offset, 0);
    }
    if (offset && offset < lowest_offset(t))
      return log_error(log, ENGRAM_ENOTFOUND,
                       "topic %s: offset %llu was removed by retention (the first offset is "
                       "now %llu)",
                       t->name, (unsigned long long)offset, (unsigned long long)lowest_offset(t));
    return log_error(log, ENGRAM_ENOTFOUND, "topic %s: no event at offset %llu", t->name,
                     (unsigned long long)offset);
  }
  if (rc) return log_error(log, log_err_mdb(rc), "topic %s: %s", t->name, log_mdb_text(rc));
  if (log_codec_decode(val.mv_data, val.mv_size, offset, v))
    return log_error(log, ENGRAM_ECORRUPT, "topic %s offset %llu: record damaged (CRC or decode)",
                     t->name, (unsigned long long)offset);
  return 0;
}

int log_read_range(struct log *log, const char *topic, uint64_t from, size_t max,
                   engram_batch **out) {
  if (!log) return ENGRAM_EINVAL;
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
  uint64_t expect = 0, start = 0, gone = 0; /* the walk's next offset, first one, gaps met */
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
  expect = start = from > lowest_offset(&t) ? from : lowest_offset(&t);
  while (bb->pub.count < max) {
    int mrc = mdb_cursor_get(c, &k, &v, op);
    if (mrc == MDB_NOTFOUND) {
      /* The walk ended: it must have reached the head. */
      uint64_t head = log_topic_head(log, txn, &t);
      if (expect <= head && (gone += head + 1 - expect) > t.compacted)
        rc = hole(log, &t, expect, 0);
      else if (expect <= head)
        expect = head + 1;
      break;
    }
    if (mrc) {
      rc = log_error(log, log_err_mdb(mrc), "read %s offset %llu: %s", topic,
                     (unsigned long long)expect, log_mdb_text(mrc));
      break;
    }
    op = MDB_NEXT;
    uint64_t off = 0;
    if (k.mv_size == 8) memcpy(&off, k.mv_data, 8);
    if (off != expect) {
      /* Gaps key compaction left; more of them than it counted are damage. */
      if (off < expect || (gone += off - expect) > t.compacted) {
        rc = hole(log, &t, expect, off);
        break;
      }
      expect = off;
    }
    expect++;
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
  if (*out) {
    (*out)->from = start;
    (*out)->next = expect;
    (*out)->removed = gone;
  }
  return 0;
}

int log_read(struct log *log, const char *topic, uint64_t offset, engram_batch **out) {
  if (!log) return ENGRAM_EINVAL;
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
static const char *check_record(struct log *log, MDB_txn *txn, const log_topic *t,
                                const MDB_val *val, uint64_t off, void **scratch, size_t *scap) {
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

/* What a verify walk shares with the process that asked for it: the report so far and
 * what it is reading, so that a fault in the walk still names where it happened. */
struct walk {
  log_verify_fn records; /* the upper layers' records, or NULL */
  engram_verify_report report;
  int rc;        /* an error that is not damage (ENOMEM, EIO ...) */
  char msg[512]; /* its message */
  char where[320];
  /* Progress: the records the topics held when the walk began (report.records counts up
   * to it), and whether the record walk is over. The caller's process reads them while
   * the child walks (wait_reporting); a walk in the caller's process reports itself. */
  volatile uint64_t total;
  volatile int records_done;
  struct log *report_to; /* the caller's handle when the walk runs in its process */
};

static void walk_progress(struct walk *w) {
  if (!w->report_to) return;
  uint64_t done = w->report.records;
  log_progress(w->report_to, "checking records", done < w->total ? done : w->total, w->total);
}

static void damage(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void damage(struct walk *w, const char *fmt, ...) {
  if (!w->report.damaged) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->report.first_damage, sizeof w->report.first_damage, fmt, ap);
    va_end(ap);
  }
  w->report.damaged++;
}

/* Every record of one topic: CRC and decoding, offsets dense from the lowest to the head,
 * and as many records as that range holds. */
static void walk_topic(struct log *log, struct walk *w, const char *name, void **scratch,
                       size_t *scap) {
  MDB_txn *txn;
  int rc = log_read_begin(log, &txn);
  if (rc) {
    w->rc = rc;
    snprintf(w->msg, sizeof w->msg, "%s", log_errmsg(log));
    return;
  }
  log_topic t;
  rc = log_topic_get(log, txn, name, &t);
  if (rc) {
    if (rc != ENGRAM_ENOTFOUND) damage(w, "topic %s: %s", name, log_errmsg(log));
    log_read_end(log, txn); /* ENOTFOUND: dropped meanwhile */
    return;
  }
  w->report.topics++;
  snprintf(w->where, sizeof w->where, "topic %s", name);
  MDB_cursor *c;
  if ((rc = mdb_cursor_open(txn, t.dbi, &c))) {
    damage(w, "topic %s: %s", name, log_mdb_text(rc));
    log_read_end(log, txn);
    return;
  }
  uint64_t lowest = lowest_offset(&t), expect = lowest, n = 0, gaps = 0;
  MDB_val k, v;
  int op = MDB_FIRST;
  while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
    op = MDB_NEXT;
    uint64_t off = 0;
    if (k.mv_size == 8) memcpy(&off, k.mv_data, 8);
    snprintf(w->where, sizeof w->where, "topic %s offset %llu", name, (unsigned long long)off);
    w->report.records++;
    n++;
    if ((w->report.records & 1023) == 0) walk_progress(w);
    if (off < expect) {
      damage(w, "topic %s offset %llu: key out of order (after %llu)", name,
             (unsigned long long)off, (unsigned long long)expect - 1);
      continue;
    }
    /* Key compaction's gaps are counted (t.compacted); any more is damage. */
    if (off > expect && (gaps += off - expect) > t.compacted)
      damage(w, "topic %s offset %llu: missing (the next stored is %llu)", name,
             (unsigned long long)expect, (unsigned long long)off);
    expect = off + 1;
    const char *why = check_record(log, txn, &t, &v, off, scratch, scap);
    if (why) damage(w, "topic %s offset %llu: %s", name, (unsigned long long)off, why);
  }
  if (rc != MDB_NOTFOUND)
    damage(w, "topic %s after offset %llu: %s", name, (unsigned long long)expect - 1,
           log_mdb_text(rc));
  mdb_cursor_close(c);
  uint64_t head = log_topic_head(log, txn, &t);
  if (head >= lowest && n + t.compacted != head - lowest + 1)
    damage(w,
           "topic %s: %llu records stored for offsets %llu..%llu (%llu removed by key compaction)",
           name, (unsigned long long)n, (unsigned long long)lowest, (unsigned long long)head,
           (unsigned long long)t.compacted);
  log_read_end(log, txn);
}

/* LMDB's own structure: every named database opens, a cursor walks all its entries in
 * key order, their number matches the database's header (mdb_stat), and every topic
 * database has its record in `topics`. */
static void walk_free_pages(struct log *log, MDB_txn *txn, struct walk *w) {
  /* LMDB's free-page list (database 0): each entry is a transaction id and a list of
   * page numbers led by its length. Writers take pages from it, so a damaged entry
   * crashes or corrupts the next write even when every record reads back. */
  MDB_envinfo info;
  MDB_cursor *c;
  snprintf(w->where, sizeof w->where, "the free-page list");
  mdb_env_info(log->env, &info);
  int rc = mdb_cursor_open(txn, 0, &c);
  if (rc) {
    damage(w, "the free-page list: %s", log_mdb_text(rc));
    return;
  }
  MDB_val k, v;
  int op = MDB_FIRST;
  while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
    op = MDB_NEXT;
    size_t n = v.mv_size / sizeof(size_t), count = 0;
    if (n) memcpy(&count, v.mv_data, sizeof count);
    int bad = k.mv_size != sizeof(size_t) || v.mv_size % sizeof(size_t) || !n || count != n - 1;
    for (size_t i = 1; i < n && !bad; i++) {
      size_t pg;
      memcpy(&pg, (const char *)v.mv_data + i * sizeof pg, sizeof pg);
      bad = pg < 2 || pg > info.me_last_pgno;
    }
    if (bad) {
      damage(w, "the free-page list: an entry is malformed or names pages beyond the file");
      break;
    }
  }
  if (rc && rc != MDB_NOTFOUND) damage(w, "the free-page list: %s", log_mdb_text(rc));
  mdb_cursor_close(c);
}

static void hook_damage(void *ctx, const char *text) { damage(ctx, "%s", text); }

/* Every record of `topics` decodes and has its topic database; a topic whose record
 * does not decode is left out of topic lists, so this is where verify sees it. */
static void walk_topic_records(struct log *log, MDB_txn *txn, MDB_dbi main, struct walk *w) {
  MDB_cursor *c;
  snprintf(w->where, sizeof w->where, "the topics database");
  int rc = mdb_cursor_open(txn, log->db_topics, &c);
  if (rc) {
    damage(w, "topics: %s", log_mdb_text(rc));
    return;
  }
  MDB_val k, v;
  int op = MDB_FIRST;
  while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
    op = MDB_NEXT;
    char db[ENGRAM_MAX_NAME + 8];
    int len = k.mv_size <= ENGRAM_MAX_NAME ? (int)k.mv_size : ENGRAM_MAX_NAME;
    snprintf(db, sizeof db, "%s%.*s", LOG_TOPIC_DB_PREFIX, len, (const char *)k.mv_data);
    const char *name = db + strlen(LOG_TOPIC_DB_PREFIX);
    Engram__TopicMeta *m = engram__topic_meta__unpack(NULL, v.mv_size, v.mv_data);
    if (!m) {
      damage(w, "topic %s: its record in `topics` does not decode", name);
      continue;
    }
    engram__topic_meta__free_unpacked(m, NULL);
    MDB_val dk = {strlen(db), db}, dv;
    int drc = mdb_get(txn, main, &dk, &dv);
    if (drc == MDB_NOTFOUND)
      damage(w, "topic %s: listed in `topics` but its database is missing", name);
    else if (drc)
      damage(w, "topic %s: %s", name, log_mdb_text(drc));
  }
  if (rc != MDB_NOTFOUND) damage(w, "topics: %s", log_mdb_text(rc));
  mdb_cursor_close(c);
}

static void walk_databases(struct log *log, struct walk *w) {
  MDB_txn *txn;
  int rc = log_read_begin(log, &txn);
  if (rc) {
    w->rc = rc;
    snprintf(w->msg, sizeof w->msg, "%s", log_errmsg(log));
    return;
  }
  walk_free_pages(log, txn, w);
  MDB_dbi main;
  MDB_cursor *mc = NULL;
  snprintf(w->where, sizeof w->where, "the list of databases");
  if ((rc = mdb_dbi_open(txn, NULL, 0, &main)) || (rc = mdb_cursor_open(txn, main, &mc))) {
    damage(w, "the list of databases: %s", log_mdb_text(rc));
    log_read_end(log, txn);
    return;
  }
  MDB_val name, ignored;
  MDB_stat es; /* the page size, for the parked values */
  mdb_env_stat(log->env, &es);
  int op = MDB_FIRST;
  while ((rc = mdb_cursor_get(mc, &name, &ignored, op)) == 0) {
    op = MDB_NEXT;
    char db[256];
    snprintf(db, sizeof db, "%.*s", (int)(name.mv_size < 255 ? name.mv_size : 255),
             (const char *)name.mv_data);
    snprintf(w->where, sizeof w->where, "database %s", db);
    MDB_dbi dbi;
    MDB_stat st;
    MDB_cursor *c;
    unsigned int flags = 0;
    int drc = mdb_dbi_open(txn, db, 0, &dbi);
    if (!drc) drc = mdb_stat(txn, dbi, &st);
    if (!drc) drc = mdb_dbi_flags(txn, dbi, &flags);
    if (!drc) drc = mdb_cursor_open(txn, dbi, &c);
    if (drc) {
      damage(w, "database %s: %s", db, log_mdb_text(drc));
      continue;
    }
    uint64_t n = 0;
    MDB_val k, v, pk = {0, NULL}, pv = {0, NULL};
    int cop = MDB_FIRST, parked = !strcmp(db, LOG_DB_PARK);
    while ((drc = mdb_cursor_get(c, &k, &v, cop)) == 0) {
      cop = MDB_NEXT;
      /* Parked pages (park.c): only the mark on a value's first page is ever written. */
      if (parked && ((v.mv_size + LOG_PAGEHDRSZ) % es.ms_psize || v.mv_size < LOG_PARK_MAGIC_LEN ||
                     memcmp(v.mv_data, LOG_PARK_MAGIC, LOG_PARK_MAGIC_LEN))) {
        damage(w, "database %s: entry %llu is not a run of parked pages", db,
               (unsigned long long)n + 1);
        break;
      }
      if (n) {
        int kc = mdb_cmp(txn, dbi, &pk, &k);
        if (kc > 0 || (kc == 0 && !((flags & MDB_DUPSORT) && mdb_dcmp(txn, dbi, &pv, &v) < 0))) {
          damage(w, "database %s: keys out of order after entry %llu", db, (unsigned long long)n);
          break;
        }
      }
      pk = k;
      pv = v;
      n++;
    }
    if (drc && drc != MDB_NOTFOUND)
      damage(w, "database %s after entry %llu: %s", db, (unsigned long long)n, log_mdb_text(drc));
    else if (drc == MDB_NOTFOUND && n != st.ms_entries)
      damage(w, "database %s: %llu entries walked, its header says %llu", db, (unsigned long long)n,
             (unsigned long long)st.ms_entries);
    mdb_cursor_close(c);
    size_t plen = strlen(LOG_TOPIC_DB_PREFIX);
    if (strncmp(db, LOG_TOPIC_DB_PREFIX, plen) == 0) {
      MDB_val tk = {strlen(db) - plen, db + plen}, tv;
      drc = mdb_get(txn, log->db_topics, &tk, &tv);
      /* A dropped topic leaves its database behind, emptied (docs/storage.md, "Dropping a
       * topic"): only one that still holds events lacks its record by damage. */
      if (drc == MDB_NOTFOUND) {
        if (n > 0) damage(w, "database %s: no record for topic %s in `topics`", db, db + plen);
      } else if (drc)
        damage(w, "topics: %s", log_mdb_text(drc));
    }
  }
  if (rc != MDB_NOTFOUND) damage(w, "the list of databases: %s", log_mdb_text(rc));
  mdb_cursor_close(mc);
  walk_topic_records(log, txn, main, w);
  if (w->records) {
    snprintf(w->where, sizeof w->where, "the consumer groups");
    w->records(log, txn, hook_damage, w);
  }
  log_read_end(log, txn);
}

static void walk(struct log *log, struct walk *w) {
  engram_topic_info *topics = NULL;
  size_t n = 0;
  snprintf(w->where, sizeof w->where, "the list of topics");
  int rc = log_topic_list(log, &topics, &n);
  if (rc == ENGRAM_ECORRUPT) {
    damage(w, "%s", log_errmsg(log));
  } else if (rc) {
    w->rc = rc;
    snprintf(w->msg, sizeof w->msg, "%s", log_errmsg(log));
    return;
  }
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) total += topics[i].count;
  w->total = total;
  void *scratch = NULL;
  size_t scap = 0;
  for (size_t i = 0; i < n && !w->rc; i++) walk_topic(log, w, topics[i].name, &scratch, &scap);
  free(scratch);
  free(topics);
  if (w->report.records > w->total) w->total = w->report.records; /* appended meanwhile */
  w->records_done = 1;
  if (w->report_to) {
    log_progress(w->report_to, "checking records", w->total, w->total);
    log_progress(w->report_to, "checking databases", 0, 1);
  }
  if (!w->rc) walk_databases(log, w);
  if (w->report_to) log_progress(w->report_to, "checking databases", 1, 1);
}

/* Waits for the walking child, reporting its progress every 100 ms to the handle's
 * callback. Returns waitpid's result. */
static pid_t wait_reporting(struct log *log, pid_t pid, int *st, struct walk *w) {
  pid_t got;
  uint64_t shown = 0, total = 0;
  int phase = 0; /* 0 records, 1 databases */
  for (;;) {
    got = waitpid(pid, st, log->progress ? WNOHANG : 0);
    if (got < 0 && errno == EINTR) continue;
    if (got != 0) break;
    uint64_t t = w->total, done = w->report.records;
    if (t > total) total = t;
    if (done > total) done = total;
    if (phase == 0 && done > shown) {
      shown = done;
      log_progress(log, "checking records", shown, total);
    }
    if (phase == 0 && w->records_done) {
      phase = 1;
      if (w->total > total) total = w->total;
      log_progress(log, "checking records", total, total);
      log_progress(log, "checking databases", 0, 1);
    }
    struct timespec nap = {0, 100000000};
    nanosleep(&nap, NULL);
  }
  if (got > 0 && log->progress) {
    if (phase == 0) {
      if (w->total > total) total = w->total;
      log_progress(log, "checking records", total, total);
      log_progress(log, "checking databases", 0, 1);
    }
    log_progress(log, "checking databases", 1, 1);
  }
  return got;
}

/* Signals a damaged page can raise in LMDB: a read outside the map, or an assertion
 * (abort) on an impossible page. Anything else (SIGKILL ...) came from outside. */
static int is_fault(int sig) {
  return sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL || sig == SIGABRT;
}

/* The walk runs in a child process with a handle of its own: LMDB trusts the pages it
 * reads, so a damaged page can make it read outside the map. In the child that is a
 * report, not the caller's death. */
int log_verify(struct log *log, engram_verify_report *report, log_verify_fn records) {
  if (!log || !report) return log_error(log, ENGRAM_EINVAL, "verify: NULL argument");
  memset(report, 0, sizeof *report);
  struct walk *w = mmap(NULL, sizeof *w, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (w == MAP_FAILED) return log_error(log, err_from_errno(errno), "verify: %s", strerror(errno));
  memset(w, 0, sizeof *w);
  w->records = records;
#if defined(__SANITIZE_ADDRESS__)
  /* AddressSanitizer's allocator (GCC 12) is not fork-safe: a child forked while another
   * thread allocates can block for good in its first malloc. Sanitizer builds walk in the
   * calling process, without the isolation (a damaged page can fault the caller). */
  w->report_to = log;
  walk(log, w);
  *report = w->report;
  int src = w->rc;
  if (src) log_error(log, src, "verify: %s", w->msg);
  munmap(w, sizeof *w);
  return src;
#endif
  pid_t pid = fork();
  if (pid < 0) {
    int rc = log_error(log, err_from_errno(errno), "verify: fork: %s", strerror(errno));
    munmap(w, sizeof *w);
    return rc;
  }
  if (pid == 0) {
    /* A fault must end the child, not run a handler the caller installed for itself. */
    static const int faults[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    for (size_t i = 0; i < sizeof faults / sizeof faults[0]; i++) signal(faults[i], SIG_DFL);
    log_codec_after_fork();
    /* Read-only: no flusher thread, no notifications, nothing written. */
    engram_options o = log->opts;
    o.flags |= ENGRAM_OPEN_NOCREATE | ENGRAM_OPEN_RDONLY;
    struct log *own;
    snprintf(w->where, sizeof w->where, "the environment");
    int rc = log_open(log->path, &o, &own);
    if (rc == ENGRAM_ECORRUPT || rc == ENGRAM_EVERSION) {
      damage(w, "%s", log_errmsg(NULL));
    } else if (rc) {
      w->rc = rc;
      snprintf(w->msg, sizeof w->msg, "%s", log_errmsg(NULL));
    } else {
      walk(own, w);
      log_close(own);
    }
    _exit(0);
  }
  int st = 0, rc = 0;
  pid_t got;
  got = wait_reporting(log, pid, &st, w);
  if (got < 0) { /* SIGCHLD ignored by the program: the child was reaped for us */
    rc = log_error(log, ENGRAM_EINTERNAL,
                   "verify: cannot wait for the checking process (%s): do not ignore SIGCHLD",
                   strerror(errno));
    munmap(w, sizeof *w);
    return rc;
  }
  *report = w->report;
  int sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
  if (sig) {
    /* The child may have died holding a reader slot: free it. */
    int dead = 0;
    mdb_reader_check(log->env, &dead);
  }
  if (is_fault(sig)) {
    char first[1024];
    snprintf(first, sizeof first,
             "%s/data.mdb: reading %s crashed (%s): its pages are damaged; restore the log "
             "from a backup",
             log->path, w->where, strsignal(WTERMSIG(st)));
    if (!report->damaged)
      snprintf(report->first_damage, sizeof report->first_damage, "%.255s", first);
    report->damaged++;
  } else if (sig) {
    rc = log_error(log, ENGRAM_EIO, "verify: the checking process was killed (%s); run it again",
                   strsignal(sig));
  } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    rc = log_error(log, ENGRAM_EINTERNAL, "verify: the checking process failed (status %d)", st);
  } else if (w->rc) {
    rc = log_error(log, w->rc, "verify: %s", w->msg);
  }
  munmap(w, sizeof *w);
  return rc;
}
