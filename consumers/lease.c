/* lease.c — leases: one record per fetched batch (an offset range, member and done
 * bitmaps, attempt, deadline), their time index, splitting, dead-lettering and keys. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumers/cg.h"

void cg_lease_free(cg_lease *l) {
  if (l->pb) engram__lease__free_unpacked(l->pb, NULL);
  l->pb = NULL;
}

int cg_bit(const ProtobufCBinaryData *b, uint64_t i) {
  return i / 8 < b->len && (b->data[i / 8] >> (i % 8) & 1);
}

void cg_bit_set(ProtobufCBinaryData *b, uint64_t i) {
  if (i / 8 < b->len) b->data[i / 8] |= (uint8_t)(1u << (i % 8));
}

uint64_t cg_lease_open(const cg_lease *l) {
  uint64_t n = 0;
  for (size_t i = 0; i < l->pb->members.len; i++) {
    uint8_t m = l->pb->members.data[i] & (uint8_t) ~(i < l->pb->done.len ? l->pb->done.data[i] : 0);
    n += (uint64_t)__builtin_popcount(m);
  }
  return n;
}

/* New leases are built with protobuf-c's allocator so that cg_lease_free (which frees
 * unpacked messages) works for both. */
int cg_lease_new(cg_lease *l, uint64_t first, uint64_t last, int state) {
  l->first = first;
  Engram__Lease *pb = calloc(1, sizeof *pb);
  if (!pb) return ENGRAM_ENOMEM;
  engram__lease__init(pb);
  pb->last = last;
  pb->state = (uint32_t)state;
  size_t bytes = (size_t)((last - first) / 8 + 1);
  pb->members.data = calloc(1, bytes);
  pb->done.data = calloc(1, bytes);
  pb->members.len = pb->done.len = bytes;
  pb->consumer = strdup("");
  pb->last_error = strdup("");
  l->pb = pb;
  if (!pb->members.data || !pb->done.data || !pb->consumer || !pb->last_error) {
    cg_lease_free(l);
    return ENGRAM_ENOMEM;
  }
  return 0;
}

static int set_str(char **dst, const char *src) {
  char *s = strdup(src ? src : "");
  if (!s) return ENGRAM_ENOMEM;
  if (*dst && *dst != protobuf_c_empty_string) free(*dst);
  *dst = s;
  return 0;
}

const char *cg_lease_key(const cg_lease *l, uint64_t offset) {
  for (size_t i = 0; i < l->pb->n_keys; i++)
    if (l->pb->keys[i]->offset == offset) return l->pb->keys[i]->key;
  return NULL;
}

int cg_lease_add_key(cg_lease *l, uint64_t offset, const char *key, size_t len) {
  Engram__KeyedOffset **ks = realloc(l->pb->keys, (l->pb->n_keys + 1) * sizeof *ks);
  if (!ks) return ENGRAM_ENOMEM;
  l->pb->keys = ks;
  Engram__KeyedOffset *k = calloc(1, sizeof *k);
  if (!k) return ENGRAM_ENOMEM;
  engram__keyed_offset__init(k);
  k->offset = offset;
  k->key = strndup(key, len);
  if (!k->key) {
    free(k);
    return ENGRAM_ENOMEM;
  }
  ks[l->pb->n_keys++] = k;
  return 0;
}

static void due_key(unsigned char *k, uint32_t gid, int64_t due, uint64_t first) {
  be32_put(k, gid);
  be64_put(k + 4, (uint64_t)(due < 0 ? 0 : due));
  be64_put(k + 12, first);
}

static int has_due(const cg_lease *l) {
  return l->pb->state == CG_LEASED || l->pb->state == CG_WAITING;
}

/* The due time of a lease as stored, for cg_lease_put. */
int64_t cg_stored_due(const cg_lease *l) { return has_due(l) ? l->pb->deadline_ns : -1; }
#define stored_due cg_stored_due

int cg_lease_put(MDB_txn *txn, const cg_dbs *d, uint32_t gid, const cg_lease *l, int64_t old_due) {
  unsigned char kb[12], dk[20];
  cg_key_gid_off(kb, gid, l->first);
  size_t n = engram__lease__get_packed_size(l->pb);
  MDB_val k = {12, kb}, v = {n, NULL};
  int rc = mdb_put(txn, d->leases, &k, &v, MDB_RESERVE);
  if (rc) return log_err_mdb(rc);
  engram__lease__pack(l->pb, v.mv_data);
  int64_t due = has_due(l) ? l->pb->deadline_ns : -1;
  if (old_due >= 0 && old_due != due) {
    due_key(dk, gid, old_due, l->first);
    MDB_val dkey = {20, dk};
    rc = mdb_del(txn, d->due, &dkey, NULL);
    if (rc && rc != MDB_NOTFOUND) return log_err_mdb(rc);
  }
  if (due >= 0 && due != old_due) {
    due_key(dk, gid, due, l->first);
    MDB_val dkey = {20, dk}, dv = {0, ""};
    rc = mdb_put(txn, d->due, &dkey, &dv, 0);
    if (rc) return log_err_mdb(rc);
  }
  return 0;
}

int cg_lease_del(MDB_txn *txn, const cg_dbs *d, uint32_t gid, const cg_lease *l) {
  unsigned char kb[12], dk[20];
  cg_key_gid_off(kb, gid, l->first);
  MDB_val k = {12, kb};
  int rc = mdb_del(txn, d->leases, &k, NULL);
  if (rc && rc != MDB_NOTFOUND) return log_err_mdb(rc);
  if (has_due(l)) {
    due_key(dk, gid, l->pb->deadline_ns, l->first);
    MDB_val dkey = {20, dk};
    rc = mdb_del(txn, d->due, &dkey, NULL);
    if (rc && rc != MDB_NOTFOUND) return log_err_mdb(rc);
  }
  return 0;
}

/* The old due time of a lease as stored, for cg_lease_put. */

int cg_lease_find(MDB_txn *txn, const cg_dbs *d, uint32_t gid, uint64_t offset, cg_lease *l) {
  /* Ranges may overlap: a nacked or redelivered part of a batch gets a lease of its own
   * inside the range of the original, where the offset is marked done. So look back over
   * every lease that could cover the offset and prefer the one where it is still open. */
  l->pb = NULL;
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, d->leases, &c);
  if (rc) return log_err_mdb(rc);
  unsigned char kb[12];
  cg_key_gid_off(kb, gid, offset);
  MDB_val k = {12, kb}, v;
  rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  int exact = rc == 0 && k.mv_size == 12 && !memcmp(k.mv_data, kb, 12);
  if (!exact) rc = mdb_cursor_get(c, &k, &v, rc == 0 ? MDB_PREV : MDB_LAST);
  while (rc == 0 && k.mv_size == 12 && be32_get(k.mv_data) == gid) {
    uint64_t first = be64_get((unsigned char *)k.mv_data + 4);
    if (first + CG_MAX_LEASE_SPAN <= offset) break;
    Engram__Lease *pb = engram__lease__unpack(NULL, v.mv_size, v.mv_data);
    if (pb && first <= offset && offset <= pb->last && cg_bit(&pb->members, offset - first)) {
      int open = !cg_bit(&pb->done, offset - first);
      if (open || !l->pb) {
        if (l->pb) engram__lease__free_unpacked(l->pb, NULL);
        l->first = first;
        l->pb = pb;
        pb = NULL;
        if (open) break;
      }
    }
    if (pb) engram__lease__free_unpacked(pb, NULL);
    rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
  }
  mdb_cursor_close(c);
  return l->pb ? 0 : ENGRAM_ENOTFOUND;
}

/* Key-ordered groups keep, in the keys database, one record per busy key naming the
 * event that owns it (gid|key -> KeyState) and one entry per event waiting for it
 * (gid|key|0|offset -> ""), so that queueing behind a key and handing it over cost one
 * B-tree operation each however many events wait. Keys hold no NUL byte, so the two
 * kinds of entry never meet. */
static size_t key_prefix(unsigned char *kb, uint32_t gid, const char *key, size_t kn) {
  be32_put(kb, gid);
  memcpy(kb + 4, key, kn);
  return 4 + kn;
}

static int holder_put(MDB_txn *txn, const cg_dbs *d, MDB_val *k, uint64_t holder) {
  Engram__KeyState ks = ENGRAM__KEY_STATE__INIT;
  ks.holder = holder;
  MDB_val v = {engram__key_state__get_packed_size(&ks), NULL};
  int rc = mdb_put(txn, d->keys, k, &v, MDB_RESERVE);
  if (rc) return log_err_mdb(rc);
  engram__key_state__pack(&ks, v.mv_data);
  return 0;
}

int cg_key_take(log_wtx *w, const cg_dbs *d, cg_group *g, const char *key, size_t kn,
                uint64_t offset, int *busy) {
  unsigned char kb[4 + ENGRAM_MAX_KEY + 9];
  if (kn > ENGRAM_MAX_KEY) kn = ENGRAM_MAX_KEY;
  size_t n = key_prefix(kb, g->meta->id, key, kn);
  MDB_val k = {n, kb}, v;
  int rc = mdb_get(w->txn, d->keys, &k, &v);
  *busy = rc == 0;
  if (rc == MDB_NOTFOUND) return holder_put(w->txn, d, &k, offset);
  if (rc) return log_err_mdb(rc);
  kb[n] = 0;
  be64_put(kb + n + 1, offset);
  MDB_val wk = {n + 9, kb}, wv = {0, ""};
  rc = mdb_put(w->txn, d->keys, &wk, &wv, 0);
  return rc ? log_err_mdb(rc) : 0;
}

/* The first event waiting for the key (whose entries start with kb[0..n]), removing its
 * entry; 0 when none waits. */
static int waiting_pop(MDB_txn *txn, const cg_dbs *d, unsigned char *kb, size_t n, uint64_t *next) {
  *next = 0;
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, d->keys, &c);
  if (rc) return log_err_mdb(rc);
  kb[n] = 0;
  MDB_val k = {n + 1, kb}, v;
  rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
  if (rc == 0 && k.mv_size == n + 9 && !memcmp(k.mv_data, kb, n + 1)) {
    *next = be64_get((unsigned char *)k.mv_data + n + 1);
    rc = mdb_cursor_del(c, 0);
  } else if (rc == MDB_NOTFOUND || rc == 0) {
    rc = 0;
  }
  mdb_cursor_close(c);
  return rc ? log_err_mdb(rc) : 0;
}

int cg_key_release(log_wtx *w, const cg_dbs *d, cg_group *g, const char *key, uint64_t offset) {
  if (!(g->meta->flags & ENGRAM_GROUP_KEY_ORDERED) || !key) return 0;
  size_t kn = strlen(key);
  if (kn > ENGRAM_MAX_KEY) kn = ENGRAM_MAX_KEY;
  unsigned char kb[4 + ENGRAM_MAX_KEY + 9];
  size_t n = key_prefix(kb, g->meta->id, key, kn);
  MDB_val k = {n, kb}, v;
  int rc = mdb_get(w->txn, d->keys, &k, &v);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return log_err_mdb(rc);
  Engram__KeyState *ks = engram__key_state__unpack(NULL, v.mv_size, v.mv_data);
  if (!ks)
    return log_error(w->log, ENGRAM_ECORRUPT, "group %s/%s: key state does not decode", g->topic,
                     g->name);
  uint64_t holder = ks->holder;
  engram__key_state__free_unpacked(ks, NULL);
  if (holder != offset) {
    /* Not the owner: an event still waiting for the key was finished (cancelled). It
     * must leave the queue, or the key would pass to a finished event and stall. */
    kb[n] = 0;
    be64_put(kb + n + 1, offset);
    MDB_val wk = {n + 9, kb};
    rc = mdb_del(w->txn, d->keys, &wk, NULL);
    return rc && rc != MDB_NOTFOUND ? log_err_mdb(rc) : 0;
  }
  /* Hand the key to the first waiting event that still waits; its blocked lease becomes
   * due now, or at its deliver_at when that is later. */
  for (;;) {
    uint64_t next;
    if ((rc = waiting_pop(w->txn, d, kb, n, &next))) return rc;
    k = (MDB_val){n, kb};
    if (!next) {
      rc = mdb_del(w->txn, d->keys, &k, NULL);
      return rc && rc != MDB_NOTFOUND ? log_err_mdb(rc) : 0;
    }
    cg_lease nl;
    if (cg_lease_find(w->txn, d, g->meta->id, next, &nl) != 0) continue;
    int waits = !cg_bit(&nl.pb->done, next - nl.first) && nl.pb->state == CG_BLOCKED;
    if (waits) {
      int64_t old = cg_stored_due(&nl);
      nl.pb->state = CG_WAITING;
      if (nl.pb->deadline_ns < w->now_ns) nl.pb->deadline_ns = w->now_ns;
      rc = cg_lease_put(w->txn, d, g->meta->id, &nl, old);
      if (rc == 0) rc = holder_put(w->txn, d, &k, next);
    }
    cg_lease_free(&nl);
    if (waits || rc) return rc;
  }
}

int cg_lease_finish(log_wtx *w, const cg_dbs *d, cg_group *g, cg_lease *l, uint64_t offset) {
  cg_bit_set(&l->pb->done, offset - l->first);
  int rc;
  const char *key = cg_lease_key(l, offset);
  char kcopy[ENGRAM_MAX_KEY + 1];
  if (key) snprintf(kcopy, sizeof kcopy, "%s", key);
  if (cg_lease_open(l) == 0)
    rc = cg_lease_del(w->txn, d, g->meta->id, l);
  else
    rc = cg_lease_put(w->txn, d, g->meta->id, l, stored_due(l));
  if (rc) return rc;
  return key ? cg_key_release(w, d, g, kcopy, offset) : 0;
}

/* Re-keys l at its first open member (its old first offset now belongs to another lease). */
static int rekey(MDB_txn *txn, const cg_dbs *d, uint32_t gid, cg_lease *l) {
  uint64_t span = l->pb->last - l->first, f = 0;
  while (f <= span && !(cg_bit(&l->pb->members, f) && !cg_bit(&l->pb->done, f))) f++;
  int rc = cg_lease_del(txn, d, gid, l);
  if (rc || f > span) return rc;
  size_t bytes = (size_t)((span - f) / 8 + 1);
  ProtobufCBinaryData m = {bytes, calloc(1, bytes)}, dn = {bytes, calloc(1, bytes)};
  if (!m.data || !dn.data) {
    free(m.data);
    free(dn.data);
    return ENGRAM_ENOMEM;
  }
  for (uint64_t i = f; i <= span; i++) {
    if (cg_bit(&l->pb->members, i)) cg_bit_set(&m, i - f);
    if (cg_bit(&l->pb->done, i)) cg_bit_set(&dn, i - f);
  }
  free(l->pb->members.data);
  free(l->pb->done.data);
  l->pb->members = m;
  l->pb->done = dn;
  l->first += f;
  return cg_lease_put(txn, d, gid, l, -1);
}

int cg_lease_make_room(MDB_txn *txn, const cg_dbs *d, uint32_t gid, uint64_t offset) {
  unsigned char kb[12];
  cg_key_gid_off(kb, gid, offset);
  MDB_val k = {12, kb}, v;
  if (mdb_get(txn, d->leases, &k, &v) != 0) return 0;
  cg_lease l = {offset, engram__lease__unpack(NULL, v.mv_size, v.mv_data)};
  if (!l.pb) return ENGRAM_ECORRUPT;
  int rc = cg_lease_open(&l) ? rekey(txn, d, gid, &l) : cg_lease_del(txn, d, gid, &l);
  cg_lease_free(&l);
  return rc;
}

int cg_lease_extract(MDB_txn *txn, const cg_dbs *d, uint32_t gid, cg_lease *l, uint64_t lo,
                     uint64_t hi, cg_lease *out) {
  out->pb = NULL;
  uint64_t a = UINT64_MAX, b = 0;
  if (lo < l->first) lo = l->first;
  if (hi > l->pb->last) hi = l->pb->last;
  for (uint64_t o = lo; o <= hi && o >= lo; o++) {
    uint64_t i = o - l->first;
    if (cg_bit(&l->pb->members, i) && !cg_bit(&l->pb->done, i)) {
      if (a == UINT64_MAX) a = o;
      b = o;
    }
  }
  if (a == UINT64_MAX) return ENGRAM_ENOTFOUND;
  int64_t old_due = stored_due(l);
  int rc = cg_lease_new(out, a, b, (int)l->pb->state);
  if (rc) return rc;
  out->pb->attempt = l->pb->attempt;
  out->pb->deadline_ns = l->pb->deadline_ns;
  out->pb->first_delivered_ns = l->pb->first_delivered_ns;
  if ((rc = set_str(&out->pb->consumer, l->pb->consumer))) return rc;
  if ((rc = set_str(&out->pb->last_error, l->pb->last_error))) return rc;
  for (uint64_t o = a; o <= b; o++) {
    uint64_t i = o - l->first;
    if (!cg_bit(&l->pb->members, i) || cg_bit(&l->pb->done, i)) continue;
    cg_bit_set(&out->pb->members, o - a);
    cg_bit_set(&l->pb->done, i);
    const char *key = cg_lease_key(l, o);
    if (key && (rc = cg_lease_add_key(out, o, key, strlen(key)))) return rc;
  }
  if (cg_lease_open(l) == 0) return cg_lease_del(txn, d, gid, l);
  if (l->first == a) return rekey(txn, d, gid, l);
  return cg_lease_put(txn, d, gid, l, old_due);
}

int cg_lease_split_one(log_wtx *w, const cg_dbs *d, cg_group *g, cg_lease *l, uint64_t offset,
                       int state, int64_t due, const char *error, cg_lease *out) {
  int rc = cg_lease_extract(w->txn, d, g->meta->id, l, offset, offset, out);
  if (rc) return rc;
  out->pb->state = (uint32_t)state;
  out->pb->deadline_ns = due;
  if (error && (rc = set_str(&out->pb->last_error, error))) return rc;
  return cg_lease_put(w->txn, d, g->meta->id, out, -1);
}

int cg_dead(log_wtx *w, const cg_dbs *d, cg_group *g, cg_lease *l, uint64_t offset,
            const char *reason, const char *last_error) {
  Engram__DlqEntry e = ENGRAM__DLQ_ENTRY__INIT;
  e.attempts = l ? l->pb->attempt : 0;
  e.reason = (char *)reason;
  e.last_error = (char *)(last_error ? last_error : (l ? l->pb->last_error : ""));
  e.consumer = l ? l->pb->consumer : (char *)"";
  e.first_delivered_ns = l ? l->pb->first_delivered_ns : 0;
  e.dead_ns = w->now_ns;
  unsigned char kb[12];
  cg_key_gid_off(kb, g->meta->id, offset);
  size_t n = engram__dlq_entry__get_packed_size(&e);
  MDB_val k = {12, kb}, v = {n, NULL};
  int rc = mdb_put(w->txn, d->dlq, &k, &v, MDB_RESERVE);
  if (rc) return log_err_mdb(rc);
  engram__dlq_entry__pack(&e, v.mv_data);
  g->meta->dead_lettered++; /* the caller stores the group */
  return l ? cg_lease_finish(w, d, g, l, offset) : 0;
}
