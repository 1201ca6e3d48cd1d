/* consumers.h — the consumer-group layer's interface to the layers above it (net/). */
#ifndef ENGRAM_CONSUMERS_H
#define ENGRAM_CONSUMERS_H

#include "log/log.h"

/* Deletes every group of `topic` (leases, DLQ, results ...) inside a write job. */
int group_drop_topic_in(log_wtx *w, const char *topic);

/* A read-only view of one buffered operation of an engram_txn, for remote handles that
 * send a transaction's operations to the daemon. */
typedef struct txn_op_view {
  int is_append; /* 1: append of `event` to `topic`; 0: ack */
  const char *topic;
  const char *group;  /* ack */
  uint64_t offset;    /* ack */
  uint32_t attempt;   /* ack */
  const void *result; /* ack, may be NULL */
  size_t result_len;
  const engram_event *event; /* append */
  uint64_t *offset_out;      /* append: the caller's slot for the offset, may be NULL */
} txn_op_view;
/* Calls fn for every operation in order; stops at and returns the first non-zero result. */
int txn_each(const struct engram_txn *txn, int (*fn)(void *ctx, const txn_op_view *op), void *ctx);
/* Operations queued. */
size_t txn_count(const struct engram_txn *txn);

#endif
