/* txn.c — transactions that commit acks and appends together (consume -> produce). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumers/cg.h"

enum { TXN_ACK = 1, TXN_APPEND };

/* One buffered operation; every string and buffer is a private copy. */
struct txn_op {
  int kind;
  char *topic, *group;
  uint64_t offset;
  uint32_t attempt;
  void *result;
  size_t result_len;
  engram_event ev; /* TXN_APPEND: deep copy */
  uint64_t *out;   /* TXN_APPEND: caller's offset slot, may be NULL */
  struct txn_op *next;
};

struct engram_txn {
  void *owner; /* the API handle the transaction was begun on */
  struct txn_op *head, *tail;
  size_t n;
  int failed; /* an op could not be queued (out of memory): commit refuses */
};

static void op_free(struct txn_op *o) {
  free(o->topic);
  free(o->group);
  free(o->result);
  log_event_free(&o->ev);
  free(o);
}

void cg_txn_abort(engram_txn *txn) {
  if (!txn) return;
  struct txn_op *o = txn->head;
  while (o) {
    struct txn_op *n = o->next;
    op_free(o);
    o = n;
  }
  free(txn);
}

int cg_txn_begin(void *owner, engram_txn **out) {
  *out = calloc(1, sizeof **out);
  if (!*out) return log_error(NULL, ENGRAM_ENOMEM, "txn: out of memory");
  (*out)->owner = owner;
  return 0;
}

void *cg_txn_owner(const engram_txn *txn) { return txn->owner; }

int cg_txn_failed(const engram_txn *txn) { return txn->failed; }

static char *dup_or_null(const char *s, int *bad) {
  if (!s) return NULL;
  char *d = strdup(s);
  if (!d) *bad = 1;
  return d;
}

static void push(engram_txn *txn, struct txn_op *o) {
  if (txn->tail)
    txn->tail->next = o;
  else
    txn->head = o;
  txn->tail = o;
  txn->n++;
}

int cg_txn_ack(engram_txn *txn, const char *topic, const char *group, uint64_t offset,
               uint32_t attempt, const void *result, size_t result_len) {
  if (!txn) return ENGRAM_EINVAL;
  const struct log *log = NULL;
  if (!log_valid_name(topic) || !log_valid_name(group))
    return log_error(log, ENGRAM_EINVAL, "txn ack: invalid topic or group name");
  if (result_len > CG_MAX_RESULT)
    return log_error(log, ENGRAM_ETOOBIG, "txn ack: result over %u bytes", CG_MAX_RESULT);
  if (result_len && !result) return log_error(log, ENGRAM_EINVAL, "txn ack: result is NULL");
  struct txn_op *o = calloc(1, sizeof *o);
  int bad = !o;
  if (o) {
    o->kind = TXN_ACK;
    o->topic = dup_or_null(topic, &bad);
    o->group = dup_or_null(group, &bad);
    o->offset = offset;
    o->attempt = attempt;
    if (result) {
      o->result = malloc(result_len ? result_len : 1);
      if (o->result && result_len) memcpy(o->result, result, result_len);
      if (!o->result) bad = 1;
      o->result_len = result_len;
    }
  }
  if (bad) {
    if (o) op_free(o);
    txn->failed = 1;
    return log_error(log, ENGRAM_ENOMEM, "txn ack: out of memory");
  }
  push(txn, o);
  return 0;
}

int cg_txn_append(engram_txn *txn, const char *topic, const engram_event *ev, uint64_t *offset) {
  if (!txn) return ENGRAM_EINVAL;
  const struct log *log = NULL;
  if (!log_valid_name(topic))
    return log_error(log, ENGRAM_EINVAL, "txn append: invalid topic name");
  int rc = log_check_event(log, topic, ev, ENGRAM_MAX_PAYLOAD_LIMIT);
  if (rc) return rc;
  struct txn_op *o = calloc(1, sizeof *o);
  int bad = !o;
  if (o) {
    o->kind = TXN_APPEND;
    o->out = offset;
    o->topic = dup_or_null(topic, &bad);
    if (log_event_copy(&o->ev, ev)) bad = 1;
  }
  if (bad) {
    if (o) op_free(o);
    txn->failed = 1;
    return log_error(log, ENGRAM_ENOMEM, "txn append: out of memory");
  }
  push(txn, o);
  return 0;
}

/* Applies every op in one job: any failure aborts the job and so all of it. */
static int txn_job(log_wtx *w, void *arg) {
  engram_txn *txn = arg;
  cg_dbs d;
  int rc = cg_dbs_get(w->log, &d);
  for (struct txn_op *o = txn->head; o && rc == 0; o = o->next) {
    if (o->kind == TXN_APPEND) {
      uint64_t off = 0;
      rc = log_append_in(w, o->topic, &o->ev, &off, NULL);
      if (rc == 0 && o->out) *o->out = off;
      continue;
    }
    cg_group g;
    rc = cg_group_load(w->log, w->txn, &d, o->topic, o->group, &g);
    if (rc == 0) {
      uint64_t acked = g.meta->acked;
      rc = cg_ack_one(w, &d, &g, o->offset, o->attempt, o->result, o->result_len);
      if (rc == 0 && g.meta->acked != acked) rc = cg_group_store(w->log, w->txn, &d, &g);
    }
    cg_group_free(&g);
  }
  return rc;
}

int cg_txn_commit(struct log *log, const engram_txn *txn) {
  if (txn->n == 0) return 0;
  cg_dbs d;
  int rc = cg_dbs_get(log, &d); /* open the databases outside the job */
  if (rc == 0) rc = log_write(log, txn_job, (void *)txn);
  return rc > 0 ? 0 : rc;
}

int txn_each(const struct engram_txn *txn, int (*fn)(void *ctx, const txn_op_view *op), void *ctx) {
  for (const struct txn_op *o = txn->head; o; o = o->next) {
    txn_op_view v = {.is_append = o->kind == TXN_APPEND,
                     .topic = o->topic,
                     .group = o->group,
                     .offset = o->offset,
                     .attempt = o->attempt,
                     .result = o->result,
                     .result_len = o->result_len,
                     .event = &o->ev,
                     .offset_out = o->out};
    int rc = fn(ctx, &v);
    if (rc) return rc;
  }
  return 0;
}

size_t txn_count(const struct engram_txn *txn) { return txn->n; }
