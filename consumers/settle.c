/* settle.c — finishing leased events: ack (with results), nack, reject, extend, cancel. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumers/cg.h"

/* Why an offset has no open lease: the error an ack/nack of it gets. */
static int classify(log_wtx *w, const cg_dbs *d, cg_group *g, uint64_t offset, const char *verb) {
  struct log *log = w->log;
  unsigned char kb[12];
  cg_key_gid_off(kb, g->meta->id, offset);
  MDB_val k = {12, kb}, v;
  if (mdb_get(w->txn, d->dlq, &k, &v) == 0)
    return log_error(log, ENGRAM_EDEAD, "%s %s/%s offset %llu: in the dead-letter queue", verb,
                     g->topic, g->name, (unsigned long long)offset);
  uint64_t head = log_topic_head(log, w->txn, &g->t);
  if (offset == 0 || offset > head)
    return log_error(log, ENGRAM_ENOTFOUND, "%s %s/%s offset %llu: no such event (head %llu)", verb,
                     g->topic, g->name, (unsigned long long)offset, (unsigned long long)head);
  if (offset >= g->meta->next)
    return log_error(log, ENGRAM_ENOTLEASED, "%s %s/%s offset %llu: not delivered yet", verb,
                     g->topic, g->name, (unsigned long long)offset);
  log_view ev;
  if (log_view_get(log, w->txn, &g->t, offset, &ev) == 0 &&
      !cg_filter_match(g->meta, ev.type, ev.type_len))
    return log_error(log, ENGRAM_ENOTLEASED, "%s %s/%s offset %llu: skipped by the group's filters",
                     verb, g->topic, g->name, (unsigned long long)offset);
  return log_error(log, ENGRAM_EALREADY, "%s %s/%s offset %llu: already finished", verb, g->topic,
                   g->name, (unsigned long long)offset);
}

/* Checks that `offset` in lease l may be settled by a caller quoting `attempt`. An
 * attempt older than the lease's is stale whatever the lease's state: a worker whose
 * lease was taken over must hear so even while the new holder's nack waits out its
 * delay. */
static int check_lease(log_wtx *w, const cg_dbs *d, cg_group *g, const cg_lease *l, uint64_t offset,
                       uint32_t attempt, const char *verb) {
  struct log *log = w->log;
  /* Finished in this lease: acked, cancelled or dead (a dead member stays marked in its
   * batch's lease while the rest of the batch is open). */
  if (cg_bit(&l->pb->done, offset - l->first)) return classify(w, d, g, offset, verb);
  if (attempt && attempt < l->pb->attempt)
    return log_error(log, ENGRAM_ESTALE,
                     "%s %s/%s offset %llu: attempt %u is stale, now at attempt %u", verb, g->topic,
                     g->name, (unsigned long long)offset, attempt, l->pb->attempt);
  if (l->pb->state != CG_LEASED)
    return log_error(log, ENGRAM_ENOTLEASED,
                     "%s %s/%s offset %llu: not in flight (waiting for redelivery)", verb, g->topic,
                     g->name, (unsigned long long)offset);
  if (attempt > l->pb->attempt)
    return log_error(log, ENGRAM_EINVAL,
                     "%s %s/%s offset %llu: attempt %u was never delivered (at %u)", verb, g->topic,
                     g->name, (unsigned long long)offset, attempt, l->pb->attempt);
  return 0;
}

static int put_result(log_wtx *w, const cg_dbs *d, cg_group *g, uint64_t offset, const void *result,
                      size_t len) {
  unsigned char kb[12];
  cg_key_gid_off(kb, g->meta->id, offset);
  MDB_val k = {12, kb}, v = {8 + len, NULL};
  int rc = mdb_put(w->txn, d->results, &k, &v, MDB_RESERVE);
  if (rc) return log_err_mdb(rc);
  be64_put(v.mv_data, (uint64_t)clock_after_ms(w->now_ns, g->meta->result_ttl_ms));
  if (len) memcpy((unsigned char *)v.mv_data + 8, result, len);
  return 0;
}

/* Deletes a few expired results of the group (they are kept roughly in expiry order). */
static void sweep_results(log_wtx *w, const cg_dbs *d, cg_group *g) {
  MDB_cursor *c;
  if (mdb_cursor_open(w->txn, d->results, &c)) return;
  unsigned char p[4];
  be32_put(p, g->meta->id);
  for (int i = 0; i < 16; i++) {
    MDB_val k = {4, p}, v;
    if (mdb_cursor_get(c, &k, &v, MDB_SET_RANGE) || k.mv_size != 12 || memcmp(k.mv_data, p, 4) ||
        v.mv_size < 8)
      break;
    if ((int64_t)be64_get(v.mv_data) > w->now_ns) break;
    if (mdb_cursor_del(c, 0)) break;
  }
  mdb_cursor_close(c);
}

static int lease_flush(log_wtx *w, const cg_dbs *d, cg_group *g, cg_lease *l) {
  if (!l->pb) return 0;
  if (cg_lease_open(l) == 0) return cg_lease_del(w->txn, d, g->meta->id, l);
  return cg_lease_put(w->txn, d, g->meta->id, l, cg_stored_due(l));
}

/* Acks items against one group, keeping the current lease in memory so a batch of acks
 * of one fetched batch costs one lease write. codes[i] gets each result. */
int cg_ack_items(log_wtx *w, const cg_dbs *d, cg_group *g, const engram_ack_item *items, size_t n,
                 int *codes, char *first_msg, size_t msg_cap) {
  cg_lease cur = {0};
  int first_err = 0, rc = 0;
  for (size_t i = 0; i < n; i++) {
    const engram_ack_item *it = &items[i];
    int code = 0;
    if (it->result_len > CG_MAX_RESULT) {
      code = log_error(w->log, ENGRAM_ETOOBIG,
                       "ack %s/%s offset %llu: result of %zu bytes over limit %u", g->topic,
                       g->name, (unsigned long long)it->offset, it->result_len, CG_MAX_RESULT);
    } else if (it->result_len && !it->result) {
      code = log_error(w->log, ENGRAM_EINVAL, "ack %s/%s offset %llu: result is NULL", g->topic,
                       g->name, (unsigned long long)it->offset);
    } else {
      int hit = cur.pb && it->offset >= cur.first && it->offset <= cur.pb->last &&
                cg_bit(&cur.pb->members, it->offset - cur.first) &&
                !cg_bit(&cur.pb->done, it->offset - cur.first);
      if (!hit) {
        if ((rc = lease_flush(w, d, g, &cur))) break;
        cg_lease_free(&cur);
        if (cg_lease_find(w->txn, d, g->meta->id, it->offset, &cur) != 0)
          code = classify(w, d, g, it->offset, "ack");
      }
      if (!code) code = check_lease(w, d, g, &cur, it->offset, it->attempt, "ack");
      if (!code && it->result && (rc = put_result(w, d, g, it->offset, it->result, it->result_len)))
        break;
      if (!code) {
        cg_bit_set(&cur.pb->done, it->offset - cur.first);
        g->meta->acked++;
        const char *key = cg_lease_key(&cur, it->offset);
        if (key && (rc = cg_key_release(w, d, g, key, it->offset))) break;
      }
    }
    if (codes) codes[i] = code;
    if (code && !first_err) {
      first_err = code;
      if (first_msg) snprintf(first_msg, msg_cap, "%s", log_errmsg(w->log));
    }
  }
  if (rc == 0) rc = lease_flush(w, d, g, &cur);
  cg_lease_free(&cur);
  if (rc) return rc;
  sweep_results(w, d, g);
  return first_err;
}

int cg_ack_one(log_wtx *w, const cg_dbs *d, cg_group *g, uint64_t offset, uint32_t attempt,
               const void *result, size_t result_len) {
  engram_ack_item it = {offset, attempt, result, result_len};
  return cg_ack_items(w, d, g, &it, 1, NULL, NULL, 0);
}

struct settle_req {
  const char *topic, *group;
  cg_dbs d;
  const engram_ack_item *items;
  size_t n;
  int *codes;
  int first_err;
  char msg[256];
  /* nack / reject / extend / cancel */
  int op;
  uint64_t offset;
  uint32_t attempt;
  int64_t delay_ms;
  const char *text;
};

enum { OP_NACK = 1, OP_REJECT, OP_EXTEND, OP_CANCEL };

static int ack_job(log_wtx *w, void *arg) {
  struct settle_req *r = arg;
  cg_group g;
  int rc = cg_group_load(w->log, w->txn, &r->d, r->topic, r->group, &g);
  if (rc) {
    cg_group_free(&g);
    return rc;
  }
  uint64_t acked = g.meta->acked;
  r->msg[0] = '\0';
  r->first_err = cg_ack_items(w, &r->d, &g, r->items, r->n, r->codes, r->msg, sizeof r->msg);
  rc = r->first_err < 0 && r->first_err != ENGRAM_EALREADY && r->first_err != ENGRAM_ESTALE &&
               r->first_err != ENGRAM_ENOTLEASED && r->first_err != ENGRAM_EDEAD &&
               r->first_err != ENGRAM_ENOTFOUND && r->first_err != ENGRAM_ETOOBIG &&
               r->first_err != ENGRAM_EINVAL
           ? r->first_err /* a storage error: abort everything */
           : 0;
  if (rc == 0 && g.meta->acked != acked) rc = cg_group_store(w->log, w->txn, &r->d, &g);
  cg_group_free(&g);
  return rc;
}

int cg_ack_many(struct log *log, const char *topic, const char *group, const engram_ack_item *items,
                size_t n, int *codes) {
  if (!log) return ENGRAM_EINVAL;
  struct settle_req r = {.topic = topic, .group = group, .items = items, .n = n, .codes = codes};
  int rc = cg_dbs_get(log, &r.d);
  if (rc) return rc;
  rc = log_write(log, ack_job, &r);
  if (rc < 0) return rc;
  if (r.first_err) return log_error(log, r.first_err, "%s", r.msg);
  log_error_clear(log);
  return 0;
}

static uint64_t backoff_for(const Engram__GroupMeta *m, uint32_t attempt) {
  if (m->n_backoff_ms == 0) return 0;
  size_t i = attempt ? attempt - 1 : 0;
  if (i >= m->n_backoff_ms) i = m->n_backoff_ms - 1;
  return m->backoff_ms[i];
}

static int one_job(log_wtx *w, void *arg) {
  struct settle_req *r = arg;
  static const char *verbs[] = {"", "nack", "reject", "extend", "cancel"};
  const char *verb = verbs[r->op];
  cg_group g;
  cg_lease l = {0}, moved = {0};
  int rc = cg_group_load(w->log, w->txn, &r->d, r->topic, r->group, &g);
  if (rc) goto out;
  if (cg_lease_find(w->txn, &r->d, g.meta->id, r->offset, &l) != 0) {
    if (r->op != OP_CANCEL) {
      rc = classify(w, &r->d, &g, r->offset, verb);
      goto out;
    }
    /* Cancel of an event without a lease: ahead of the cursor it gets a skip marker. */
    rc = classify(w, &r->d, &g, r->offset, verb);
    if (rc != ENGRAM_ENOTLEASED || r->offset < g.meta->next) goto out;
    unsigned char kb[12];
    cg_key_gid_off(kb, g.meta->id, r->offset);
    MDB_val k = {12, kb}, v = {0, ""};
    int mrc = mdb_put(w->txn, r->d.skips, &k, &v, MDB_NOOVERWRITE);
    if (mrc == MDB_KEYEXIST) {
      rc = log_error(w->log, ENGRAM_EALREADY, "cancel %s/%s offset %llu: already cancelled",
                     g.topic, g.name, (unsigned long long)r->offset);
      goto out;
    }
    if (mrc) {
      rc = log_err_mdb(mrc);
      goto out;
    }
    g.meta->skips++;
    rc = cg_group_store(w->log, w->txn, &r->d, &g);
    goto out;
  }
  if (r->op == OP_CANCEL) {
    if (cg_bit(&l.pb->done, r->offset - l.first))
      rc = classify(w, &r->d, &g, r->offset, verb);
    else if (l.pb->state == CG_LEASED &&
             l.pb->deadline_ns > w->now_ns) /* expired: retrying, as status says */
      rc = log_error(w->log, ENGRAM_EBUSY, "cancel %s/%s offset %llu: in flight (held by %s)",
                     g.topic, g.name, (unsigned long long)r->offset, l.pb->consumer);
    else
      rc = cg_lease_finish(w, &r->d, &g, &l, r->offset);
    goto out;
  }
  if ((rc = check_lease(w, &r->d, &g, &l, r->offset, r->attempt, verb))) goto out;
  switch (r->op) {
    case OP_NACK:
      g.meta->nacked++;
      if (l.pb->attempt >= g.meta->max_deliver) {
        char reason[64];
        snprintf(reason, sizeof reason, "max_deliver exceeded: %u attempts", l.pb->attempt);
        rc = cg_dead(w, &r->d, &g, &l, r->offset, reason, r->text);
      } else {
        uint64_t delay =
            r->delay_ms >= 0 ? (uint64_t)r->delay_ms : backoff_for(g.meta, l.pb->attempt);
        rc = cg_lease_split_one(w, &r->d, &g, &l, r->offset, CG_WAITING,
                                clock_after_ms(w->now_ns, delay), r->text ? r->text : "", &moved);
      }
      break;
    case OP_REJECT: {
      char reason[256];
      snprintf(reason, sizeof reason, "rejected: %s", r->text ? r->text : "");
      g.meta->rejected++;
      rc = cg_dead(w, &r->d, &g, &l, r->offset, reason, r->text);
      break;
    }
    case OP_EXTEND: {
      int64_t old = cg_stored_due(&l);
      uint64_t ms = r->delay_ms > 0 ? (uint64_t)r->delay_ms : g.meta->ack_wait_ms;
      l.pb->deadline_ns = clock_after_ms(w->now_ns, ms);
      rc = cg_lease_put(w->txn, &r->d, g.meta->id, &l, old);
      break;
    }
  }
  /* Nacks and rejects are counted in the group's record, in this same transaction. */
  if (rc == 0 && (r->op == OP_NACK || r->op == OP_REJECT))
    rc = cg_group_store(w->log, w->txn, &r->d, &g);
out:
  cg_lease_free(&l);
  cg_lease_free(&moved);
  cg_group_free(&g);
  return rc;
}

static int run_one(struct log *log, struct settle_req *r) {
  int rc = cg_dbs_get(log, &r->d);
  if (rc) return rc;
  rc = log_write(log, one_job, r);
  return rc < 0 ? rc : 0;
}

int cg_nack(struct log *log, const char *topic, const char *group, uint64_t offset,
            uint32_t attempt, int64_t delay_ms, const char *error) {
  if (!log) return ENGRAM_EINVAL;
  struct settle_req r = {.topic = topic,
                         .group = group,
                         .op = OP_NACK,
                         .offset = offset,
                         .attempt = attempt,
                         .delay_ms = delay_ms < 0 ? -1 : delay_ms,
                         .text = error};
  return run_one(log, &r);
}

int cg_reject(struct log *log, const char *topic, const char *group, uint64_t offset,
              uint32_t attempt, const char *reason) {
  if (!log) return ENGRAM_EINVAL;
  struct settle_req r = {.topic = topic,
                         .group = group,
                         .op = OP_REJECT,
                         .offset = offset,
                         .attempt = attempt,
                         .text = reason ? reason : ""};
  return run_one(log, &r);
}

int cg_extend(struct log *log, const char *topic, const char *group, uint64_t offset,
              uint32_t attempt, uint64_t ms) {
  if (!log) return ENGRAM_EINVAL;
  struct settle_req r = {.topic = topic,
                         .group = group,
                         .op = OP_EXTEND,
                         .offset = offset,
                         .attempt = attempt,
                         .delay_ms = (int64_t)ms};
  return run_one(log, &r);
}

int cg_cancel(struct log *log, const char *topic, const char *group, uint64_t offset) {
  if (!log) return ENGRAM_EINVAL;
  struct settle_req r = {.topic = topic, .group = group, .op = OP_CANCEL, .offset = offset};
  return run_one(log, &r);
}
