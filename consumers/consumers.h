/* consumers.h — the consumer-group layer's interface to the layers above it (net/). */
#ifndef ENGRAM_CONSUMERS_H
#define ENGRAM_CONSUMERS_H

#include "log/log.h"

/* Deletes every group of `topic` (leases, DLQ, results ...) inside a write job. */
int group_drop_topic_in(log_wtx *w, const char *topic);

/* The consumer-group operations, one per public call of engram.h that an embedded
 * handle runs here (api/ checks the arguments that need no log, then calls them).
 * Same contracts, but a caller must pass a valid handle. */
int cg_topic_drop(struct log *log, const char *topic);
int cg_group_create(struct log *log, const char *topic, const char *group,
                    const engram_group_config *cfg);
int cg_group_info_get(struct log *log, const char *topic, const char *group,
                      engram_group_info *info);
int cg_group_list(struct log *log, const char *topic, engram_group_info **out, size_t *n);
int cg_group_delete(struct log *log, const char *topic, const char *group);
int cg_group_reset(struct log *log, const char *topic, const char *group, engram_start to,
                   uint64_t offset, int64_t time_ns);
int cg_fetch(struct log *log, const char *topic, const char *group, const char *consumer,
             size_t max, uint64_t wait_ms, engram_batch **out);
/* engram_ack_fetch: the acks and the fetch's leases in one write job. */
int cg_ack_fetch(struct log *log, const char *topic, const char *group, const char *consumer,
                 const engram_ack_item *acks, size_t n_acks, int *codes, size_t max,
                 uint64_t wait_ms, engram_batch **out);
/* The daemon's ack-fetches that park (net/server_worker.c). While on, this thread's
 * cg_ack_fetch with wait 0 whose look finds nothing to deliver commits its acks without
 * waiting for the flush that makes them durable (log_write_deferrable): the daemon answers
 * it only later, once an event comes or its wait ends. cg_ack_fetch_deferred then tells
 * whether the last such call deferred, and the mark a flush must cover (log_flushed,
 * log_flush_upto) before anything answers it. */
void cg_ack_fetch_defer(int on);
int cg_ack_fetch_deferred(uint64_t *mark);
/* How long a waiting ack-and-fetch with nothing to deliver holds its acks, uncommitted,
 * for events to lease in the same commit (a worker keeping up with a stream then pays
 * one commit per event, not two), then commits them and waits on: embedded, and parked
 * in the daemon. */
#define CG_ACK_HOLD_MS 2
/* Read-only look: could a fetch of the group deliver anything now (events past its
 * cursor, or a lease due)? 1 also when it cannot tell (no such topic or group): the
 * fetch itself then says why. */
int cg_fetch_due(struct log *log, const char *topic, const char *group);
int cg_ack_many(struct log *log, const char *topic, const char *group, const engram_ack_item *items,
                size_t n, int *codes);
int cg_nack(struct log *log, const char *topic, const char *group, uint64_t offset,
            uint32_t attempt, int64_t delay_ms, const char *error);
int cg_reject(struct log *log, const char *topic, const char *group, uint64_t offset,
              uint32_t attempt, const char *reason);
int cg_extend(struct log *log, const char *topic, const char *group, uint64_t offset,
              uint32_t attempt, uint64_t ms);
int cg_cancel(struct log *log, const char *topic, const char *group, uint64_t offset);
int cg_status_get(struct log *log, const char *topic, const char *group, uint64_t offset,
                  engram_status *st);
const char *cg_state_name(engram_event_state s);
int cg_dlq_list(struct log *log, const char *topic, const char *group, uint64_t from, size_t max,
                engram_dlq_entry **out, size_t *n);
int cg_dlq_purge(struct log *log, const char *topic, const char *group, const uint64_t *offsets,
                 size_t n, size_t *count);
int cg_dlq_redrive(struct log *log, const char *topic, const char *group, const uint64_t *offsets,
                   size_t n, size_t *count);

/* Workers (worker.c): engram_worker_heartbeat / _list / _forget, arguments checked. */
int cg_worker_heartbeat(struct log *log, const engram_worker_info *info);
int cg_worker_list(struct log *log, uint64_t lost_after_ms, engram_worker_info **out, size_t *n);
int cg_worker_forget(struct log *log, const char *name);
/* Retention (retain.c): engram_compact. */
int cg_compact(struct log *log, const char *topic, engram_compact_report *report);
/* Rates (rates.c): engram_rate_list, arguments checked. */
int cg_rate_list(struct log *log, const char *topic, engram_rate_info **out, size_t *n);
/* The maintenance runner (maintain.c): a thread that runs retention on every topic with
 * limits each opts.maintenance_ms while this handle holds DIR/maintenance.lock. Start
 * after the open of a writable handle (a failure only leaves it without one); stop
 * before its close. */
void cg_maint_start(struct log *log);
void cg_maint_stop(struct log *log);

/* Checks the group records in log_verify's walk (its log_verify_fn). */
void cg_verify_records(struct log *log, MDB_txn *txn, log_damage_fn damage, void *ctx);

/* Transactions: a buffer of acks and appends (memory only) made for an API handle
 * (`owner`, opaque here), committed on a log by cg_txn_commit (which leaves the buffer
 * to cg_txn_abort, its destructor). */
int cg_txn_begin(void *owner, engram_txn **out);
void *cg_txn_owner(const engram_txn *txn);
int cg_txn_failed(const engram_txn *txn); /* an operation could not be queued */
int cg_txn_ack(engram_txn *txn, const char *topic, const char *group, uint64_t offset,
               uint32_t attempt, const void *result, size_t result_len);
int cg_txn_append(engram_txn *txn, const char *topic, const engram_event *ev, uint64_t *offset);
int cg_txn_commit(struct log *log, const engram_txn *txn);
void cg_txn_abort(engram_txn *txn);

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

/* Schedules (schedule.c): same contracts as engram.h's engram_schedule_*. */
/* Checks a schedule's name and configuration (zone files included; no log needed), with
 * `what` ("schedule add") opening the message. */
int cg_schedule_check(const char *what, const char *name, const engram_schedule_config *cfg);
int cg_schedule_add(struct log *log, const char *name, const engram_schedule_config *cfg);
int cg_schedule_set(struct log *log, const char *name, const engram_schedule_config *cfg,
                    int *changed);
int cg_schedule_get(struct log *log, const char *name, engram_schedule_info **out);
int cg_schedule_list(struct log *log, engram_schedule_info **out, size_t *n);
int cg_schedule_remove(struct log *log, const char *name);
int cg_schedule_pause(struct log *log, const char *name);
int cg_schedule_resume(struct log *log, const char *name);
int cg_schedule_run_now(struct log *log, const char *name, uint64_t *offset);
/* Fires what is due at now (0 = the log's clock); report may be NULL, else zeroed by the
 * caller. */
int cg_schedule_tick(struct log *log, int64_t now, engram_schedule_tick_report *report);
/* Copies n infos (their config's strings, payload and headers too) into one allocation
 * freed with free(): what get and list return, and what the remote client builds. */
int cg_schedule_infos_copy(const engram_schedule_info *src, size_t n, engram_schedule_info **out);

#endif
