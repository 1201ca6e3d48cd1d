/* keycomp.c — key compaction: the superseded events and expired tombstones of a topic
 * compacted by key removed in bounded slices, through the key index the slices extend
 * (log/keys.c), never one a group still needs unless the topic forces it. */
#include <stdlib.h>
#include <string.h>

#include "consumers/cg.h"

#define SLICE_MAX 256           /* records one slice removes at most */
#define INDEX_MAX 4096          /* records one slice indexes at most */
#define SLICE_BUDGET_NS 1000000 /* a slice stops after this long in its transaction */

struct kc_req {
  const char *topic;
  cg_dbs d;
  /* Outputs, rewritten when the job reruns. */
  uint64_t compacted, tombstones, skipped, held_at, indexed;
  int64_t took_ns, cpu_ns;
  int more; /* more may be removable than this slice removed */
};

/* Forced compaction is about to remove `o`: each group finishes it (an open lease member)
 * or will never see it (ahead of its cursor), and counts it when it had not finished it;
 * its dead-letter entry and cancel marker go with it. */
static int settle_one(log_wtx *w, const cg_dbs *d, cg_group *g, uint64_t o, const log_view *v,
                      int force, uint64_t *skipped) {
  Engram__GroupMeta *m = g->meta;
  unsigned char kb[12];
  cg_key_gid_off(kb, m->id, o);
  MDB_val k = {12, kb};
  uint64_t n = 0;
  int changed = 0, rc = mdb_del(w->txn, d->dlq, &k, NULL);
  if (rc && rc != MDB_NOTFOUND) return log_err_mdb(rc);
  rc = 0;
  if (!force) return 0; /* o is below every group's lowest unfinished offset */
  if (o >= m->next) {
    if (m->skips && mdb_del(w->txn, d->skips, &k, NULL) == 0) {
      m->skips--;
      changed = 1;
    } else if (cg_filter_match(m, v->type, v->type_len)) {
      n = 1;
    }
  } else {
    cg_lease l;
    if (cg_lease_find(w->txn, d, m->id, o, &l) == 0) {
      if (!cg_bit(&l.pb->done, o - l.first)) {
        rc = cg_lease_finish(w, d, g, &l, o);
        n = 1;
      }
      cg_lease_free(&l);
      if (rc) return rc;
    }
  }
  if (n) {
    m->retention_skipped += n;
    *skipped += n;
    changed = 1;
  }
  return changed ? cg_group_store(w->log, w->txn, d, g) : 0;
}

/* Removes `o` (decoded in *v) with what the groups hold of it. */
static int remove_one(log_wtx *w, struct kc_req *r, MDB_dbi keys, log_topic *t, uint64_t head,
                      const char *names, size_t n_groups, int force, uint64_t o,
                      const log_view *v) {
  int rc = 0;
  const char *name = names;
  for (size_t i = 0; i < n_groups && rc == 0; i++, name += strlen(name) + 1) {
    cg_group g;
    if (cg_group_load(w->log, w->txn, &r->d, r->topic, name, &g) == 0)
      rc = settle_one(w, &r->d, &g, o, v, force, &r->skipped);
    cg_group_free(&g);
  }
  if (rc) return rc;
  log_error_clear(w->log);
  if ((rc = log_keys_remove_in(w, keys, t, v, head))) return rc;
  r->compacted++;
  return 0;
}

static int slice_job(log_wtx *w, void *arg) {
  struct kc_req *r = arg;
  struct log *log = w->log;
  int64_t t0 = clock_monotonic_ns(), c0 = cg_thread_cpu_ns();
  r->compacted = r->tombstones = r->skipped = r->held_at = r->indexed = 0;
  r->took_ns = r->cpu_ns = 0;
  r->more = 0;
  log_topic t;
  int rc = log_topic_get(log, w->txn, r->topic, &t);
  if (rc) return rc;
  if (!(t.cfg.flags & ENGRAM_TOPIC_COMPACT_KEY)) return 0;
  MDB_dbi keys;
  if ((rc = log_keys_dbi_in(w, &keys))) return rc;
  uint64_t head = log_topic_head(log, w->txn, &t);
  if (t.index_next <= head) {
    /* The events appended since the last slice (or stored before compaction was turned
     * on) join the index first: read once each, in offset order, many per commit. The
     * queues then hold every superseded event and tombstone below index_next. */
    uint64_t before = t.index_next;
    if ((rc = log_keys_index_in(w, keys, &t, INDEX_MAX, t0 + SLICE_BUDGET_NS / 2, &r->indexed)))
      return rc;
    if ((rc = log_topic_meta_put(log, w->txn, &t))) return rc;
    if (t.index_next <= head) {
      r->more = t.index_next > before; /* never a slice again without progress */
      r->took_ns = clock_monotonic_ns() - t0;
      r->cpu_ns = cg_thread_cpu_ns() - c0;
      return 0;
    }
  }
  int force = (t.cfg.flags & ENGRAM_TOPIC_RETAIN_FORCE) != 0;
  char *names = NULL;
  size_t n_groups = 0;
  if ((rc = cg_topic_group_names(log, w->txn, &r->d, r->topic, &names, &n_groups))) return rc;
  uint64_t safe = head + 1; /* lowest offset some group has not finished */
  if (!force) {
    const char *name = names;
    for (size_t i = 0; i < n_groups; i++, name += strlen(name) + 1) {
      cg_group g;
      if (cg_group_load(log, w->txn, &r->d, r->topic, name, &g) == 0) {
        uint64_t lo = cg_group_lowest_open(w->txn, &r->d, &g);
        if (lo < safe) safe = lo;
      }
      cg_group_free(&g);
    }
    log_error_clear(log);
  }
  /* n: records removed; steps: queue entries looked at (stale ones are only dropped). */
  uint64_t n = 0, steps = 0, from = 0, off, compacted0 = t.compacted, next0 = t.next_offset;
  MDB_cursor *qc; /* walks the queues */
  if ((rc = mdb_cursor_open(w->txn, keys, &qc))) {
    free(names);
    return log_err_mdb(rc);
  }
  /* Superseded events, in offset order. */
  for (;;) {
    if (n == SLICE_MAX || ((++steps & 3) == 0 && clock_monotonic_ns() - t0 > SLICE_BUDGET_NS)) {
      r->more = 1;
      break;
    }
    if ((rc = log_keys_next(qc, t.id, LOG_KEYS_DEAD, from, &off))) break;
    from = off + 1;
    if (!force && off >= safe) {
      r->held_at = off;
      break;
    }
    log_view v;
    int vr = log_view_get(log, w->txn, &t, off, &v);
    if (vr == ENGRAM_ENOTFOUND) { /* retention removed it meanwhile */
      if ((rc = log_keys_forget_in(w, keys, t.id, LOG_KEYS_DEAD, off))) break;
      continue;
    }
    if (vr) break; /* damage stops compaction here; verify reports it */
    if (!force && v.deliver_at_ns > w->now_ns) {
      r->held_at = off;
      break;
    }
    if ((rc = remove_one(w, r, keys, &t, head, names, n_groups, force, off, &v))) break;
    if ((rc = log_keys_forget_in(w, keys, t.id, LOG_KEYS_DEAD, off))) break;
    n++;
  }
  if (rc == ENGRAM_ENOTFOUND) rc = 0;
  /* Tombstones whose time has come, once no older superseded event is left: a reader
   * never sees an old value of a key without the tombstone that deleted it. */
  uint64_t dead_low = UINT64_MAX;
  if (rc == 0 && log_keys_next(qc, t.id, LOG_KEYS_DEAD, 0, &off) == 0) dead_low = off;
  from = 0;
  while (rc == 0 && !r->more) {
    if (n == SLICE_MAX || ((++steps & 3) == 0 && clock_monotonic_ns() - t0 > SLICE_BUDGET_NS)) {
      r->more = 1;
      break;
    }
    if ((rc = log_keys_next(qc, t.id, LOG_KEYS_TOMB, from, &off))) break;
    from = off + 1;
    if (off >= dead_low) break;
    log_view v;
    int vr = log_view_get(log, w->txn, &t, off, &v);
    if (vr == ENGRAM_ENOTFOUND ||
        (vr == 0 && log_keys_newest(w->txn, keys, t.id, v.key, v.key_len) != off)) {
      /* Gone, or superseded: the queue of superseded events removes it. */
      rc = log_keys_forget_in(w, keys, t.id, LOG_KEYS_TOMB, off);
      continue;
    }
    if (vr) break;
    if (w->now_ns < clock_after_ms(v.timestamp_ns, t.cfg.tombstone_ttl_ms)) break;
    if (!force && (off >= safe || v.deliver_at_ns > w->now_ns)) {
      r->held_at = off;
      break;
    }
    if ((rc = remove_one(w, r, keys, &t, head, names, n_groups, force, off, &v))) break;
    if ((rc = log_keys_forget_in(w, keys, t.id, LOG_KEYS_TOMB, off))) break;
    r->tombstones++;
    n++;
  }
  if (rc == ENGRAM_ENOTFOUND) rc = 0;
  mdb_cursor_close(qc);
  free(names);
  if (rc) return rc;
  if ((t.compacted != compacted0 || t.next_offset != next0) &&
      (rc = log_topic_meta_put(log, w->txn, &t)))
    return rc;
  if (steps <= 1 && n == 0) r->more = 0;
  r->took_ns = clock_monotonic_ns() - t0;
  r->cpu_ns = cg_thread_cpu_ns() - c0;
  return 0;
}

int cg_keycomp_topic(struct log *log, const cg_dbs *d, const char *topic,
                     engram_compact_report *rep) {
  struct kc_req r = {.topic = topic, .d = *d};
  do {
    /* Losing a slice to a power cut only repeats it: a relaxed commit is enough. */
    int rc = log_write_relaxed(log, slice_job, &r);
    if (rc < 0) return rc;
    rep->compacted += r.compacted;
    rep->tombstones += r.tombstones;
    rep->skipped += r.skipped;
    rep->indexed += r.indexed;
    if (r.compacted || r.indexed) rep->slices++;
    if (r.held_at) rep->compact_held_at = r.held_at;
    if (r.took_ns > rep->max_slice_ns) rep->max_slice_ns = r.took_ns;
    if (r.cpu_ns > rep->max_slice_cpu_ns) rep->max_slice_cpu_ns = r.cpu_ns;
  } while (r.more);
  return 0;
}
