/* keys.c — the key index of topics compacted by key: key -> newest offset, and the queues
 * of superseded offsets and of tombstones that key compaction works through. */
#include <string.h>

#include "log/log_private.h"

/* One database, "keyidx", keys led by the topic id (so a drop deletes one prefix):
 *   topic_id be32 | 'k' | key bytes  -> newest offset be64
 *   topic_id be32 | 'd' | offset be64 -> ""  (superseded by a newer event of its key)
 *   topic_id be32 | 't' | offset be64 -> ""  (a tombstone)
 * Queue entries may outlive their record (retention removed it): compaction drops them. */
#define KEY_INDEX 'k'

int log_keys_dbi_in(log_wtx *w, MDB_dbi *dbi) {
  int rc = log_aux_dbi(w->log, LOG_DB_KEYIDX, 0, dbi);
  if (rc) return rc;
  unsigned int f;
  return mdb_dbi_flags(w->txn, *dbi, &f) == 0 ? 0 : LOG_ENEWDBI;
}

static size_t index_key(unsigned char *kb, uint32_t topic_id, const char *key, size_t n) {
  be32_put(kb, topic_id);
  kb[4] = KEY_INDEX;
  memcpy(kb + 5, key, n);
  return 5 + n;
}

static void queue_key(unsigned char kb[13], uint32_t topic_id, int kind, uint64_t off) {
  be32_put(kb, topic_id);
  kb[4] = (unsigned char)kind;
  be64_put(kb + 5, off);
}

static int queue_put(log_wtx *w, MDB_dbi dbi, uint32_t topic_id, int kind, uint64_t off) {
  unsigned char kb[13];
  queue_key(kb, topic_id, kind, off);
  MDB_val k = {13, kb}, v = {0, ""};
  int rc = mdb_put(w->txn, dbi, &k, &v, 0);
  return rc ? log_err_mdb(rc) : 0;
}

uint64_t log_keys_newest(MDB_txn *txn, MDB_dbi dbi, uint32_t topic_id, const char *key,
                         size_t key_len) {
  unsigned char kb[5 + ENGRAM_MAX_KEY];
  if (key_len > ENGRAM_MAX_KEY) return 0;
  MDB_val k = {index_key(kb, topic_id, key, key_len), kb}, v;
  if (mdb_get(txn, dbi, &k, &v) || v.mv_size != 8) return 0;
  return be64_get(v.mv_data);
}

/* Notes event `off` of key (key, key_len) in the index: it supersedes the key's newest
 * event so far, or a newer one supersedes it; a tombstone joins its queue. Idempotent. */
static int note(log_wtx *w, MDB_dbi dbi, const log_topic *t, const char *key, size_t key_len,
                uint64_t off, int tombstone) {
  if (key_len > ENGRAM_MAX_KEY) return 0; /* refused at append; never indexed */
  uint64_t newest = log_keys_newest(w->txn, dbi, t->id, key, key_len);
  int rc = 0;
  if (newest > off) return queue_put(w, dbi, t->id, LOG_KEYS_DEAD, off);
  if (newest < off) {
    if (newest && (rc = queue_put(w, dbi, t->id, LOG_KEYS_DEAD, newest))) return rc;
    unsigned char kb[5 + ENGRAM_MAX_KEY], vb[8];
    be64_put(vb, off);
    MDB_val k = {index_key(kb, t->id, key, key_len), kb}, v = {8, vb};
    if ((rc = mdb_put(w->txn, dbi, &k, &v, 0))) return log_err_mdb(rc);
  }
  return tombstone ? queue_put(w, dbi, t->id, LOG_KEYS_TOMB, off) : 0;
}

int log_keys_next(MDB_cursor *c, uint32_t topic_id, int kind, uint64_t from, uint64_t *off) {
  unsigned char kb[13];
  queue_key(kb, topic_id, kind, from);
  MDB_val k = {13, kb}, v;
  int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  if (rc == 0 && (k.mv_size != 13 || memcmp(k.mv_data, kb, 5))) rc = MDB_NOTFOUND;
  if (rc == 0) *off = be64_get((unsigned char *)k.mv_data + 5);
  if (rc == MDB_NOTFOUND) return ENGRAM_ENOTFOUND;
  return rc ? log_err_mdb(rc) : 0;
}

int log_keys_forget_in(log_wtx *w, MDB_dbi dbi, uint32_t topic_id, int kind, uint64_t off) {
  unsigned char kb[13];
  queue_key(kb, topic_id, kind, off);
  MDB_val k = {13, kb};
  int rc = mdb_del(w->txn, dbi, &k, NULL);
  return rc && rc != MDB_NOTFOUND ? log_err_mdb(rc) : 0;
}

int log_keys_index_in(log_wtx *w, MDB_dbi dbi, log_topic *t, size_t max, int64_t until_ns,
                      uint64_t *n) {
  *n = 0;
  MDB_cursor *c;
  int rc = mdb_cursor_open(w->txn, t->dbi, &c);
  if (rc) return log_err_mdb(rc);
  uint64_t from = t->index_next, next = t->index_next;
  MDB_val k = {8, &from}, v;
  int op = MDB_SET_RANGE;
  int erc = 0; /* the index's error (ENGRAM_E*; rc holds LMDB's) */
  while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
    op = MDB_NEXT;
    uint64_t off = 0;
    if (k.mv_size == 8) memcpy(&off, k.mv_data, 8);
    if (*n == max || ((*n & 15) == 15 && clock_monotonic_ns() > until_ns)) break;
    (*n)++;
    next = off + 1;
    log_view view;
    if (log_codec_decode(v.mv_data, v.mv_size, off, &view)) continue; /* verify's job */
    if (!view.has_key) continue;
    erc = note(w, dbi, t, view.key, view.key_len, off, (view.flags & ENGRAM_EVENT_TOMBSTONE) != 0);
    if (erc) break;
  }
  mdb_cursor_close(c);
  if (erc) return erc;
  if (rc && rc != MDB_NOTFOUND) return log_err_mdb(rc);
  if (rc == MDB_NOTFOUND) {
    /* The walk passed the last stored record: everything up to the head is covered, also
     * offsets whose records retention removed before they were indexed. */
    uint64_t head = log_topic_head(w->log, w->txn, t);
    if (next < head + 1) next = head + 1;
  }
  if (next > t->index_next) t->index_next = next;
  return 0;
}

int log_keys_unindex_in(log_wtx *w, MDB_dbi dbi, const log_topic *t, const log_view *v) {
  if (!v->has_key || log_keys_newest(w->txn, dbi, t->id, v->key, v->key_len) != v->offset) return 0;
  unsigned char kb[5 + ENGRAM_MAX_KEY];
  MDB_val k = {index_key(kb, t->id, v->key, v->key_len), kb};
  int rc = mdb_del(w->txn, dbi, &k, NULL);
  return rc ? log_err_mdb(rc) : 0;
}

int log_keys_remove_in(log_wtx *w, MDB_dbi dbi, log_topic *t, const log_view *v, uint64_t head) {
  struct log *log = w->log;
  /* Removing the head must not let its offset be assigned again. */
  if (t->next_offset < head + 1) t->next_offset = head + 1;
  uint64_t off = v->offset;
  int rc = log_keys_unindex_in(w, dbi, t, v); /* reads *v: before the record goes */
  if (rc) return rc;
  MDB_val k = {8, &off};
  if ((rc = mdb_del(w->txn, t->dbi, &k, NULL)) == MDB_NOTFOUND) return 0;
  if (rc) return log_error(log, log_err_mdb(rc), "compact %s: %s", t->name, log_mdb_text(rc));
  if (off >= (t->first_removed > 1 ? t->first_removed : 1)) t->compacted++;
  return 0;
}
