/* deliver.c — fetch: leasing due retries and expired leases first, then new events; and
 * ack-and-fetch, the acks of the last batch committed with the leases of the next. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumers/cg.h"

#define MAX_FETCH ENGRAM_MAX_FETCH
#define SCAN_FACTOR 16 /* new events looked at per event wanted, before giving up for now */
struct fetch_req {
  const char *topic, *group, *consumer;
  size_t max;
  cg_dbs d;
  MDB_dbi workers;
  log_bb *bb; /* the events delivered; rebuilt when the job is retried */
  /* ack-and-fetch: acked in the same job before the fetch; n_acks drops to 0 once they
   * are committed (a waiting fetch looks again without them) */
  const engram_ack_item *acks;
  size_t n_acks;
  int *codes;        /* per ack, may be NULL */
  char ack_msg[256]; /* the first failing ack's message */
  int defer_acks;    /* acks of a look that delivers nothing may wait for a later flush */
};

static __thread int tls_defer_acks;
static __thread int tls_deferred;
static __thread uint64_t tls_deferred_mark;

void cg_ack_fetch_defer(int on) {
  tls_defer_acks = on;
  tls_deferred = 0;
}

int cg_ack_fetch_deferred(uint64_t *mark) {
  *mark = tls_deferred_mark;
  return tls_deferred;
}

static int set_consumer(Engram__Lease *pb, const char *consumer) {
  char *s = strdup(consumer);
  if (!s) return ENGRAM_ENOMEM;
  if (pb->consumer && pb->consumer != protobuf_c_empty_string) free(pb->consumer);
  pb->consumer = s;
  return 0;
}

/* Adds event `o` to the batch with its attempt. An unreadable record goes to the DLQ. */
static int add_event(log_wtx *w, struct fetch_req *r, cg_group *g, uint64_t o, uint32_t attempt,
                     int *added) {
  log_view v;
  *added = 0;
  int rc = log_view_get(w->log, w->txn, &g->t, o, &v);
  if (rc) return rc;
  engram_event *e = log_bb_add(r->bb, w->log, w->txn, &g->t, &v, &rc);
  if (!e) return rc;
  e->attempt = attempt;
  *added = 1;
  return 0;
}

/* Redelivers (or dead-letters) one due lease. *room is what the fetch may still take. */
static int redeliver(log_wtx *w, struct fetch_req *r, cg_group *g, cg_lease *l, size_t *room) {
  Engram__GroupMeta *m = g->meta;
  int rc;
  if (l->pb->state == CG_LEASED && l->pb->attempt >= m->max_deliver) {
    /* Its last allowed lease expired: every open member is dead. */
    for (uint64_t o = l->first; o <= l->pb->last && l->pb; o++) {
      uint64_t i = o - l->first;
      if (!cg_bit(&l->pb->members, i) || cg_bit(&l->pb->done, i)) continue;
      if ((rc = cg_dead(w, &r->d, g, l, o, "max_deliver exceeded: lease expired", NULL))) return rc;
    }
    return 0;
  }
  int64_t old_due = cg_stored_due(l);
  uint64_t open = cg_lease_open(l);
  if (open > *room) {
    /* Take the first *room open members; the rest stay due in a lease of their own. */
    uint64_t seen = 0, cut = l->first;
    for (uint64_t o = l->first; o <= l->pb->last; o++) {
      uint64_t i = o - l->first;
      if (cg_bit(&l->pb->members, i) && !cg_bit(&l->pb->done, i) && seen++ == *room) {
        cut = o;
        break;
      }
    }
    cg_lease tail;
    rc = cg_lease_extract(w->txn, &r->d, m->id, l, cut, l->pb->last, &tail);
    if (rc == 0) rc = cg_lease_put(w->txn, &r->d, m->id, &tail, -1);
    cg_lease_free(&tail);
    if (rc) return rc;
    old_due = cg_stored_due(l);
  }
  uint32_t attempt = l->pb->attempt + 1;
  l->pb->state = CG_LEASED;
  l->pb->attempt = attempt;
  l->pb->deadline_ns = clock_after_ms(w->now_ns, m->ack_wait_ms);
  if (!l->pb->first_delivered_ns) l->pb->first_delivered_ns = w->now_ns;
  if ((rc = set_consumer(l->pb, r->consumer))) return rc;
  if ((rc = cg_lease_put(w->txn, &r->d, m->id, l, old_due))) return rc;
  for (uint64_t o = l->first; o <= l->pb->last; o++) {
    uint64_t i = o - l->first;
    if (!cg_bit(&l->pb->members, i) || cg_bit(&l->pb->done, i)) continue;
    int added;
    rc = add_event(w, r, g, o, attempt, &added);
    if (rc == ENGRAM_ECORRUPT) {
      if ((rc = cg_dead(w, &r->d, g, l, o, "record damaged", log_errmsg(w->log)))) return rc;
      if (!l->pb) break;
      continue;
    }
    if (rc) return rc;
    (*room)--;
    m->delivered++;
    if (attempt > 1) m->redelivered++;
  }
  return 0;
}

/* Key-ordered groups: takes the key for `o`, or queues `o` behind its current owner.
 * Returns 1 when o must wait. */
static int key_take(log_wtx *w, struct fetch_req *r, cg_group *g, const log_view *v, uint64_t o,
                    int *rc) {
  *rc = 0;
  if (!(g->meta->flags & ENGRAM_GROUP_KEY_ORDERED) || !v->has_key) return 0;
  int busy = 0;
  *rc = cg_key_take(w, &r->d, g, v->key, v->key_len, o, &busy);
  return busy;
}

/* A single-event lease that waits: for its deliver_at time, or for its key. */
static int park(log_wtx *w, struct fetch_req *r, cg_group *g, uint64_t o, const log_view *v,
                int state) {
  cg_lease l;
  int rc = cg_lease_new(&l, o, o, state);
  if (rc) return rc;
  cg_bit_set(&l.pb->members, 0);
  l.pb->deadline_ns = v->deliver_at_ns; /* blocked: kept so the release honours it */
  if ((g->meta->flags & ENGRAM_GROUP_KEY_ORDERED) && v->has_key)
    rc = cg_lease_add_key(&l, o, v->key, v->key_len);
  if (rc == 0) rc = cg_lease_put(w->txn, &r->d, g->meta->id, &l, -1);
  cg_lease_free(&l);
  return rc;
}

static int skip_marked(log_wtx *w, struct fetch_req *r, cg_group *g, uint64_t o) {
  if (!g->meta->skips) return 0;
  unsigned char kb[12];
  cg_key_gid_off(kb, g->meta->id, o);
  MDB_val k = {12, kb};
  if (mdb_del(w->txn, r->d.skips, &k, NULL) != 0) return 0;
  g->meta->skips--;
  return 1;
}

/* The lowest offset >= from in the group's DLQ, UINT64_MAX when none. The cursor meets
 * dead events again after a reset; they stay dead until redriven. */
static uint64_t next_dead(log_wtx *w, struct fetch_req *r, cg_group *g, uint64_t from) {
  MDB_cursor *c;
  uint64_t off = UINT64_MAX;
  if (mdb_cursor_open(w->txn, r->d.dlq, &c)) return off;
  unsigned char kb[12];
  cg_key_gid_off(kb, g->meta->id, from);
  MDB_val k = {12, kb}, v;
  if (mdb_cursor_get(c, &k, &v, MDB_SET_RANGE) == 0 && k.mv_size == 12 &&
      be32_get(k.mv_data) == g->meta->id)
    off = be64_get((unsigned char *)k.mv_data + 4);
  mdb_cursor_close(c);
  return off;
}

/* Leases new events from the group's cursor. */
static int deliver_new(log_wtx *w, struct fetch_req *r, cg_group *g, size_t *room) {
  Engram__GroupMeta *m = g->meta;
  uint64_t head = log_topic_head(w->log, w->txn, &g->t);
  if (m->next > head || *room == 0) return 0;
  uint64_t budget = (uint64_t)*room * SCAN_FACTOR + 4096;
  uint64_t o = m->next, first = 0, last = 0, dead = next_dead(w, r, g, m->next);
  cg_lease l = {0};
  int rc = 0;
  for (; o <= head && *room > 0 && budget > 0; o++, budget--) {
    if (first && o - first >= CG_MAX_LEASE_SPAN) break;
    if (o == dead) {
      dead = next_dead(w, r, g, o + 1);
      continue;
    }
    log_view v;
    rc = log_view_get(w->log, w->txn, &g->t, o, &v);
    if (rc == ENGRAM_ENOTFOUND) {
      rc = 0;
      continue;
    }
    if (rc == ENGRAM_ECORRUPT) {
      if ((rc = cg_dead(w, &r->d, g, NULL, o, "record damaged", log_errmsg(w->log)))) break;
      continue;
    }
    if (rc) break;
    if (skip_marked(w, r, g, o)) continue;
    if (!cg_filter_match(m, v.type, v.type_len)) continue;
    int blocked = key_take(w, r, g, &v, o, &rc);
    if (rc) break;
    if (blocked) {
      if ((rc = park(w, r, g, o, &v, CG_BLOCKED))) break;
      continue;
    }
    if (v.deliver_at_ns > w->now_ns) {
      if ((rc = park(w, r, g, o, &v, CG_WAITING))) break;
      continue;
    }
    if (!first) {
      first = o;
      uint64_t span_end =
          head < first + CG_MAX_LEASE_SPAN - 1 ? head : first + CG_MAX_LEASE_SPAN - 1;
      if ((rc = cg_lease_new(&l, first, span_end, CG_LEASED))) break;
    }
    cg_bit_set(&l.pb->members, o - first);
    if ((m->flags & ENGRAM_GROUP_KEY_ORDERED) && v.has_key &&
        (rc = cg_lease_add_key(&l, o, v.key, v.key_len)))
      break;
    engram_event *e = log_bb_add(r->bb, w->log, w->txn, &g->t, &v, &rc);
    if (!e) break;
    e->attempt = 1;
    last = o;
    (*room)--;
    m->delivered++;
  }
  if (rc == 0) {
    m->next = o;
    if (first) {
      /* Trim the range to what was delivered. */
      l.pb->last = last;
      size_t bytes = (size_t)((last - first) / 8 + 1);
      l.pb->members.len = l.pb->done.len = bytes;
      l.pb->attempt = 1;
      l.pb->deadline_ns = clock_after_ms(w->now_ns, m->ack_wait_ms);
      l.pb->first_delivered_ns = w->now_ns;
      rc = set_consumer(l.pb, r->consumer);
      if (rc == 0) rc = cg_lease_put(w->txn, &r->d, m->id, &l, -1);
    }
  }
  if (l.pb) cg_lease_free(&l);
  return rc;
}

static int fetch_job(log_wtx *w, void *arg) {
  struct fetch_req *r = arg;
  log_bb_free(r->bb);
  r->bb = log_bb_new(r->max);
  if (!r->bb) return log_error(w->log, ENGRAM_ENOMEM, "fetch: out of memory");
  cg_group g;
  int rc = cg_group_load(w->log, w->txn, &r->d, r->topic, r->group, &g);
  if (rc) goto out;
  size_t room = r->max;
  uint64_t before = g.meta->next, delivered = g.meta->delivered, skips = g.meta->skips,
           dead = g.meta->dead_lettered, acked = g.meta->acked;
  if (r->n_acks) {
    /* All or nothing: one failing ack aborts the job, so no ack and no lease is kept. The
     * acks go first, so the fetch never hands out what they finish and may hand out what
     * they free (the next event of a key in a key-ordered group). */
    r->ack_msg[0] = '\0';
    rc = cg_ack_items(w, &r->d, &g, r->acks, r->n_acks, r->codes, r->ack_msg, sizeof r->ack_msg);
    if (rc) {
      if (r->ack_msg[0])
        rc = log_error(w->log, rc, "%s (nothing was acked or fetched)", r->ack_msg);
      goto out;
    }
  }
  MDB_cursor *c;
  if ((rc = mdb_cursor_open(w->txn, r->d.due, &c))) {
    rc = log_err_mdb(rc);
    goto out;
  }
  unsigned char p[4];
  be32_put(p, g.meta->id);
  while (room > 0) {
    /* Each pass removes or re-times the entry it finds, so seek afresh every time. */
    MDB_val k = {4, p}, v;
    if (mdb_cursor_get(c, &k, &v, MDB_SET_RANGE) != 0 || k.mv_size != 20 || memcmp(k.mv_data, p, 4))
      break;
    int64_t due = (int64_t)be64_get((unsigned char *)k.mv_data + 4);
    if (due > w->now_ns) break;
    cg_lease l = {0};
    uint64_t first = be64_get((unsigned char *)k.mv_data + 12);
    unsigned char lk[12];
    cg_key_gid_off(lk, g.meta->id, first);
    MDB_val lkey = {12, lk}, lval;
    if (mdb_get(w->txn, r->d.leases, &lkey, &lval) != 0 ||
        !(l.pb = engram__lease__unpack(NULL, lval.mv_size, lval.mv_data)) ||
        cg_stored_due(&l) != due) {
      /* An index entry without its lease: drop it. */
      if (l.pb) engram__lease__free_unpacked(l.pb, NULL);
      mdb_cursor_del(c, 0);
      continue;
    }
    l.first = first;
    rc = redeliver(w, r, &g, &l, &room);
    cg_lease_free(&l);
    if (rc) break;
  }
  mdb_cursor_close(c);
  if (rc == 0) rc = deliver_new(w, r, &g, &room);
  if (rc == 0 &&
      (g.meta->next != before || g.meta->delivered != delivered || g.meta->skips != skips ||
       g.meta->dead_lettered != dead || g.meta->acked != acked))
    rc = cg_group_store(w->log, w->txn, &r->d, &g);
  /* The fetch registers its consumer in its own write transaction: no commit of its own. */
  if (rc == 0) rc = cg_worker_seen(w, r->workers, r->consumer, r->topic, r->group);
  /* Nothing to answer with yet: the acks need not be durable before the answer is. Not in
   * a key-ordered group: an ack there hands its key to the next event, which another
   * consumer may be given at once, and must be durable before that. */
  if (rc == 0 && r->defer_acks && r->n_acks && log_bb_count(r->bb) == 0 &&
      !(g.meta->flags & ENGRAM_GROUP_KEY_ORDERED))
    w->defer = 1;
out:
  cg_group_free(&g);
  return rc;
}

/* Read-only look: could a fetch deliver anything now? Saves write transactions while
 * a consumer waits. Also reports when the next due entry falls. */
static int anything_due(struct log *log, struct fetch_req *r, int64_t *next_due) {
  MDB_txn *txn;
  *next_due = INT64_MAX;
  if (log_read_begin(log, &txn)) return 1;
  cg_group g;
  int yes = 1;
  if (cg_group_load(log, txn, &r->d, r->topic, r->group, &g) == 0) {
    yes = g.meta->next <= log_topic_head(log, txn, &g.t);
    MDB_cursor *c;
    if (!yes && mdb_cursor_open(txn, r->d.due, &c) == 0) {
      unsigned char p[4];
      be32_put(p, g.meta->id);
      MDB_val k = {4, p}, v;
      if (mdb_cursor_get(c, &k, &v, MDB_SET_RANGE) == 0 && k.mv_size == 20 &&
          !memcmp(k.mv_data, p, 4)) {
        *next_due = (int64_t)be64_get((unsigned char *)k.mv_data + 4);
        yes = *next_due <= log_now_ns(log);
      }
      mdb_cursor_close(c);
    }
  }
  cg_group_free(&g);
  log_read_end(log, txn);
  return yes;
}

/* Checks a fetch's arguments; `what` opens the message ("fetch", "ack-fetch"). */
static int fetch_check(struct log *log, const char *what, const char *topic, const char *group,
                       const char *consumer, size_t max, uint64_t wait_ms, engram_batch **out) {
  if (!out) return log_error(log, ENGRAM_EINVAL, "%s: out is NULL", what);
  *out = NULL;
  if (!log_valid_name(consumer))
    return log_error(log, ENGRAM_EINVAL,
                     "%s %s/%s: consumer name invalid (use 1-200 of [A-Za-z0-9._-])", what,
                     topic ? topic : "", group ? group : "");
  if (max == 0 || max > MAX_FETCH)
    return log_error(log, ENGRAM_EINVAL, "%s %s/%s: max %zu not in 1..%d", what, topic ? topic : "",
                     group ? group : "", max, MAX_FETCH);
  if (wait_ms > ENGRAM_MAX_FETCH_WAIT_MS)
    return log_error(log, ENGRAM_EINVAL, "%s %s/%s: wait %llu ms over the limit of %u (1 hour)",
                     what, topic ? topic : "", group ? group : "", (unsigned long long)wait_ms,
                     ENGRAM_MAX_FETCH_WAIT_MS);
  return 0;
}

/* Waits until the fetch could deliver something (an append, the next due time) or the
 * deadline passes, checking cheaply. */
static void wait_due(struct log *log, struct fetch_req *r, int64_t deadline) {
  for (;;) {
    int64_t now = clock_monotonic_ns(), next_due;
    if (now >= deadline) break;
    if (anything_due(log, r, &next_due)) break;
    int64_t until = deadline;
    if (next_due != INT64_MAX) {
      int64_t in = next_due - log_now_ns(log);
      if (in < 0) in = 0;
      if (now + in < until) until = now + in;
    }
    log_wait_append(log, r->topic, until);
  }
}

/* Runs r's job until it delivers something or wait_ms has passed. The first run carries
 * r's acks, if any: it is committed as durably as an ack (log_write) before any wait longer
 * than CG_ACK_HOLD_MS; the runs after it lease only, relaxed like every fetch. */
static int fetch_run(struct log *log, struct fetch_req *r, uint64_t wait_ms, engram_batch **out) {
  int rc = cg_dbs_get(log, &r->d);
  if (rc == 0) rc = cg_worker_dbi(log, &r->workers);
  if (rc) return rc;
  int64_t deadline = clock_after_ms(clock_monotonic_ns(), wait_ms);
  if (r->n_acks && wait_ms > 0) {
    int64_t hold = clock_after_ms(clock_monotonic_ns(), CG_ACK_HOLD_MS);
    wait_due(log, r, hold < deadline ? hold : deadline);
  }
  for (;;) {
    /* Relaxed: a power cut that undoes a fetch only makes its events due again. Acks are
     * not repeatable work: with them the commit is as durable as the handle's mode. */
    if (r->n_acks && r->defer_acks) {
      int deferred;
      uint64_t mark;
      rc = log_write_deferrable(log, fetch_job, r, &deferred, &mark);
      if (rc >= 0 && deferred) {
        tls_deferred = 1;
        tls_deferred_mark = mark;
      }
    } else {
      rc = r->n_acks ? log_write(log, fetch_job, r) : log_write_relaxed(log, fetch_job, r);
    }
    if (rc < 0) {
      log_bb_free(r->bb);
      return rc;
    }
    r->n_acks = 0;
    if (log_bb_count(r->bb) > 0 || clock_monotonic_ns() >= deadline) break;
    wait_due(log, r, deadline);
  }
  *out = log_bb_finish(r->bb);
  log_error_clear(log);
  return 0;
}

int cg_fetch(struct log *log, const char *topic, const char *group, const char *consumer,
             size_t max, uint64_t wait_ms, engram_batch **out) {
  if (!log) return ENGRAM_EINVAL;
  int rc = fetch_check(log, "fetch", topic, group, consumer, max, wait_ms, out);
  if (rc) return rc;
  struct fetch_req r = {.topic = topic, .group = group, .consumer = consumer, .max = max};
  return fetch_run(log, &r, wait_ms, out);
}

int cg_fetch_due(struct log *log, const char *topic, const char *group) {
  struct fetch_req r = {.topic = topic, .group = group};
  int64_t next_due;
  if (!log || !topic || !group || cg_dbs_get(log, &r.d)) return 1;
  return anything_due(log, &r, &next_due);
}

int cg_ack_fetch(struct log *log, const char *topic, const char *group, const char *consumer,
                 const engram_ack_item *acks, size_t n_acks, int *codes, size_t max,
                 uint64_t wait_ms, engram_batch **out) {
  if (!log) return ENGRAM_EINVAL;
  int rc = fetch_check(log, "ack-fetch", topic, group, consumer, max, wait_ms, out);
  if (rc) return rc;
  if (n_acks && !acks)
    return log_error(log, ENGRAM_EINVAL, "ack-fetch %s/%s: acks is NULL with n_acks %zu",
                     topic ? topic : "", group ? group : "", n_acks);
  struct fetch_req r = {.topic = topic,
                        .group = group,
                        .consumer = consumer,
                        .max = max,
                        .acks = acks,
                        .n_acks = n_acks,
                        .codes = codes,
                        .defer_acks = tls_defer_acks && wait_ms == 0};
  return fetch_run(log, &r, wait_ms, out);
}
