/* inspect.c — the status of one event in a group, and the dead-letter queue. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumers/cg.h"

const char *cg_state_name(engram_event_state s) {
  switch (s) {
    case ENGRAM_STATE_PENDING:
      return "pending";
    case ENGRAM_STATE_IN_FLIGHT:
      return "in_flight";
    case ENGRAM_STATE_RETRYING:
      return "retrying";
    case ENGRAM_STATE_DONE:
      return "done";
    case ENGRAM_STATE_DEAD:
      return "dead";
    case ENGRAM_STATE_SKIPPED:
      return "skipped";
  }
  return "unknown";
}

static void copy_result(MDB_txn *txn, const cg_dbs *d, uint32_t gid, uint64_t offset, int64_t now,
                        engram_status *st) {
  unsigned char kb[12];
  cg_key_gid_off(kb, gid, offset);
  MDB_val k = {12, kb}, v;
  if (mdb_get(txn, d->results, &k, &v) || v.mv_size < 8) return;
  if ((int64_t)be64_get(v.mv_data) <= now) return;
  st->result_len = v.mv_size - 8;
  st->result = malloc(st->result_len + 1);
  if (!st->result) {
    st->result_len = 0;
    return;
  }
  memcpy(st->result, (unsigned char *)v.mv_data + 8, st->result_len);
  ((char *)st->result)[st->result_len] = '\0';
}

int cg_status_get(struct log *log, const char *topic, const char *group, uint64_t offset,
                  engram_status *st) {
  if (!log || !st) return log_error(log, ENGRAM_EINVAL, "status: NULL argument");
  memset(st, 0, sizeof *st);
  cg_dbs d;
  int rc = cg_dbs_get(log, &d);
  if (rc) return rc;
  MDB_txn *txn;
  if ((rc = log_read_begin(log, &txn))) return rc;
  cg_group g;
  cg_lease l = {0};
  rc = cg_group_load(log, txn, &d, topic, group, &g);
  if (rc) goto out;
  int64_t now = log_now_ns(log);
  uint64_t head = log_topic_head(log, txn, &g.t);
  log_view ev;
  if (offset == 0 || offset > head ||
      log_view_get(log, txn, &g.t, offset, &ev) == ENGRAM_ENOTFOUND) {
    rc = log_error(log, ENGRAM_ENOTFOUND, "status %s/%s offset %llu: no such event", topic, group,
                   (unsigned long long)offset);
    goto out;
  }
  unsigned char kb[12];
  cg_key_gid_off(kb, g.meta->id, offset);
  MDB_val k = {12, kb}, v;
  if (mdb_get(txn, d.dlq, &k, &v) == 0) {
    Engram__DlqEntry *e = engram__dlq_entry__unpack(NULL, v.mv_size, v.mv_data);
    st->state = ENGRAM_STATE_DEAD;
    if (e) {
      st->attempt = e->attempts;
      snprintf(st->consumer, sizeof st->consumer, "%s", e->consumer);
      snprintf(st->last_error, sizeof st->last_error, "%s", e->reason);
      engram__dlq_entry__free_unpacked(e, NULL);
    }
    goto out;
  }
  if (cg_lease_find(txn, &d, g.meta->id, offset, &l) == 0 &&
      !cg_bit(&l.pb->done, offset - l.first)) {
    st->attempt = l.pb->attempt;
    st->deadline_ns = l.pb->deadline_ns;
    snprintf(st->last_error, sizeof st->last_error, "%s", l.pb->last_error);
    if (l.pb->state == CG_LEASED) {
      /* An expired lease waits for redelivery. */
      st->state = l.pb->deadline_ns > now ? ENGRAM_STATE_IN_FLIGHT : ENGRAM_STATE_RETRYING;
      snprintf(st->consumer, sizeof st->consumer, "%s", l.pb->consumer);
    } else if (l.pb->state == CG_WAITING) {
      st->state = ENGRAM_STATE_RETRYING;
    } else {
      st->state = ENGRAM_STATE_PENDING;
      st->deadline_ns = 0;
    }
    goto out;
  }
  if (!cg_filter_match(g.meta, ev.type, ev.type_len)) {
    st->state = ENGRAM_STATE_SKIPPED;
  } else if (offset >= g.meta->next) {
    MDB_val sv;
    st->state = mdb_get(txn, d.skips, &k, &sv) == 0 ? ENGRAM_STATE_DONE : ENGRAM_STATE_PENDING;
  } else {
    st->state = ENGRAM_STATE_DONE;
    if (l.pb) st->attempt = l.pb->attempt;
    copy_result(txn, &d, g.meta->id, offset, now, st);
  }
out:
  cg_lease_free(&l);
  cg_group_free(&g);
  log_read_end(log, txn);
  if (rc == 0) log_error_clear(log);
  return rc;
}

int cg_dlq_list(struct log *log, const char *topic, const char *group, uint64_t from, size_t max,
                engram_dlq_entry **out, size_t *n) {
  if (!log || !out || !n) return log_error(log, ENGRAM_EINVAL, "dlq list: NULL argument");
  *out = NULL;
  *n = 0;
  cg_dbs d;
  int rc = cg_dbs_get(log, &d);
  if (rc) return rc;
  MDB_txn *txn;
  if ((rc = log_read_begin(log, &txn))) return rc;
  cg_group g;
  rc = cg_group_load(log, txn, &d, topic, group, &g);
  engram_dlq_entry *arr = NULL;
  size_t cnt = 0, cap = 0;
  MDB_cursor *c = NULL;
  if (rc == 0 && (rc = mdb_cursor_open(txn, d.dlq, &c))) rc = log_err_mdb(rc);
  if (rc == 0) {
    unsigned char kb[12];
    cg_key_gid_off(kb, g.meta->id, from);
    MDB_val k = {12, kb}, v;
    int op = MDB_SET_RANGE;
    while ((max == 0 || cnt < max) && mdb_cursor_get(c, &k, &v, op) == 0) {
      op = MDB_NEXT;
      if (k.mv_size != 12 || be32_get(k.mv_data) != g.meta->id) break;
      Engram__DlqEntry *e = engram__dlq_entry__unpack(NULL, v.mv_size, v.mv_data);
      if (!e) continue;
      if (cnt == cap) {
        cap = cap ? cap * 2 : 16;
        engram_dlq_entry *a = realloc(arr, cap * sizeof *a);
        if (!a) {
          engram__dlq_entry__free_unpacked(e, NULL);
          rc = log_error(log, ENGRAM_ENOMEM, "dlq list: out of memory");
          break;
        }
        arr = a;
      }
      engram_dlq_entry *x = &arr[cnt++];
      memset(x, 0, sizeof *x);
      x->offset = be64_get((unsigned char *)k.mv_data + 4);
      x->attempts = e->attempts;
      snprintf(x->reason, sizeof x->reason, "%s", e->reason);
      snprintf(x->last_error, sizeof x->last_error, "%s", e->last_error);
      snprintf(x->consumer, sizeof x->consumer, "%s", e->consumer);
      x->first_delivered_ns = e->first_delivered_ns;
      x->dead_ns = e->dead_ns;
      engram__dlq_entry__free_unpacked(e, NULL);
    }
  }
  if (c) mdb_cursor_close(c);
  cg_group_free(&g);
  log_read_end(log, txn);
  if (rc) {
    free(arr);
    return rc;
  }
  log_error_clear(log);
  *out = arr;
  *n = cnt;
  return 0;
}

struct dlq_req {
  const char *topic, *group;
  cg_dbs d;
  const uint64_t *offsets;
  size_t n;
  int redrive;
  size_t count;
};

/* Purges or redrives one DLQ entry (the cursor is on it). */
static int dlq_one(log_wtx *w, struct dlq_req *r, cg_group *g, MDB_cursor *c, uint64_t offset) {
  int rc = mdb_cursor_del(c, 0);
  if (rc) return log_err_mdb(rc);
  r->count++;
  if (!r->redrive) return 0;
  /* After a reset the cursor may not have reached the event yet: it will deliver it
   * when it does, and a lease now would deliver it twice. */
  if (offset >= g->meta->next) return 0;
  /* Redriven events are due now in this group only, with a fresh attempt count. */
  cg_lease l;
  if ((rc = cg_lease_make_room(w->txn, &r->d, g->meta->id, offset))) return rc;
  if ((rc = cg_lease_new(&l, offset, offset, CG_WAITING))) return rc;
  cg_bit_set(&l.pb->members, 0);
  l.pb->deadline_ns = w->now_ns;
  rc = cg_lease_put(w->txn, &r->d, g->meta->id, &l, -1);
  cg_lease_free(&l);
  return rc;
}

static int dlq_job(log_wtx *w, void *arg) {
  struct dlq_req *r = arg;
  r->count = 0;
  cg_group g;
  int rc = cg_group_load(w->log, w->txn, &r->d, r->topic, r->group, &g);
  if (rc) {
    cg_group_free(&g);
    return rc;
  }
  MDB_cursor *c;
  if ((rc = mdb_cursor_open(w->txn, r->d.dlq, &c))) {
    cg_group_free(&g);
    return log_err_mdb(rc);
  }
  if (r->offsets) {
    for (size_t i = 0; i < r->n && rc == 0; i++) {
      unsigned char kb[12];
      cg_key_gid_off(kb, g.meta->id, r->offsets[i]);
      MDB_val k = {12, kb}, v;
      if (mdb_cursor_get(c, &k, &v, MDB_SET) != 0) {
        rc = log_error(w->log, ENGRAM_ENOTFOUND,
                       "dlq %s/%s: offset %llu is not in the dead-letter queue", r->topic, r->group,
                       (unsigned long long)r->offsets[i]);
        break;
      }
      rc = dlq_one(w, r, &g, c, r->offsets[i]);
    }
  } else {
    unsigned char p[4];
    be32_put(p, g.meta->id);
    for (;;) {
      MDB_val k = {4, p}, v;
      if (mdb_cursor_get(c, &k, &v, MDB_SET_RANGE) || k.mv_size != 12 || memcmp(k.mv_data, p, 4))
        break;
      if ((rc = dlq_one(w, r, &g, c, be64_get((unsigned char *)k.mv_data + 4)))) break;
    }
  }
  mdb_cursor_close(c);
  cg_group_free(&g);
  return rc;
}

static int dlq_run(struct log *log, struct dlq_req *r, size_t *count) {
  if (r->offsets == NULL && r->n) return log_error(log, ENGRAM_EINVAL, "dlq: offsets is NULL");
  int rc = cg_dbs_get(log, &r->d);
  if (rc) return rc;
  rc = log_write(log, dlq_job, r);
  if (rc < 0) return rc;
  if (count) *count = r->count;
  return 0;
}

int cg_dlq_purge(struct log *log, const char *topic, const char *group, const uint64_t *offsets,
                 size_t n, size_t *count) {
  if (!log) return ENGRAM_EINVAL;
  struct dlq_req r = {.topic = topic, .group = group, .offsets = offsets, .n = n};
  return dlq_run(log, &r, count);
}

int cg_dlq_redrive(struct log *log, const char *topic, const char *group, const uint64_t *offsets,
                   size_t n, size_t *count) {
  if (!log) return ENGRAM_EINVAL;
  struct dlq_req r = {.topic = topic, .group = group, .offsets = offsets, .n = n, .redrive = 1};
  return dlq_run(log, &r, count);
}
