/* embedded.c — the embedded backend: a handle's calls run on its own struct log, through
 * log/ and consumers/. */
#include "api/api.h"

static struct log *L(engram *h) { return h->state; }

static void e_close(engram *h) {
  /* In a child made by fork() the handle's threads are the parent's (joining them never
   * returns) and so are its files: a checkpoint or flush from here would race the
   * parent's commits. The child's copy is left as it is. */
  if (log_foreign(L(h))) return;
  cg_maint_stop(L(h));
  log_close(L(h));
}
static int e_sync(engram *h) { return log_sync(L(h)); }
static int e_backup(engram *h, const char *dest) { return log_backup(L(h), dest); }
static int e_topic_create(engram *h, const char *topic, const engram_topic_config *cfg) {
  return log_topic_create(L(h), topic, cfg);
}
static int e_topic_info_get(engram *h, const char *topic, engram_topic_info *info) {
  return log_topic_info_get(L(h), topic, info);
}
static int e_topic_list(engram *h, engram_topic_info **out, size_t *n) {
  return log_topic_list(L(h), out, n);
}
static int e_topic_drop(engram *h, const char *topic) { return cg_topic_drop(L(h), topic); }
static int e_topic_set(engram *h, const char *topic, const engram_topic_config *cfg) {
  return log_topic_set(L(h), topic, cfg);
}

static int e_compact(engram *h, const char *topic, engram_compact_report *report) {
  return cg_compact(L(h), topic, report);
}
static int e_log_info(engram *h, engram_log_info *out) { return log_info(L(h), out); }
static int e_space(engram *h, engram_space *out) { return log_space(L(h), out); }

static int e_topic_train_dict(engram *h, const char *topic, uint32_t *dict_id) {
  return log_topic_train_dict(L(h), topic, dict_id);
}
static int e_append(engram *h, const char *topic, const engram_event *ev, uint64_t *offset,
                    int *duplicate) {
  return log_append(L(h), topic, ev, offset, duplicate);
}
static int e_append_batch(engram *h, const char *topic, const engram_event *evs, size_t n,
                          uint64_t *offsets, int *duplicates) {
  return log_append_batch(L(h), topic, evs, n, offsets, duplicates);
}
static int e_read(engram *h, const char *topic, uint64_t offset, engram_batch **out) {
  return log_read(L(h), topic, offset, out);
}
static int e_read_range(engram *h, const char *topic, uint64_t from, size_t max,
                        engram_batch **out) {
  return log_read_range(L(h), topic, from, max, out);
}
static int e_group_create(engram *h, const char *topic, const char *group,
                          const engram_group_config *cfg) {
  return cg_group_create(L(h), topic, group, cfg);
}
static int e_group_info_get(engram *h, const char *topic, const char *group,
                            engram_group_info *info) {
  return cg_group_info_get(L(h), topic, group, info);
}
static int e_group_list(engram *h, const char *topic, engram_group_info **out, size_t *n) {
  return cg_group_list(L(h), topic, out, n);
}
static int e_group_delete(engram *h, const char *topic, const char *group) {
  return cg_group_delete(L(h), topic, group);
}
static int e_group_reset(engram *h, const char *topic, const char *group, engram_start to,
                         uint64_t offset, int64_t time_ns) {
  return cg_group_reset(L(h), topic, group, to, offset, time_ns);
}
static int e_fetch(engram *h, const char *topic, const char *group, const char *consumer,
                   size_t max, uint64_t wait_ms, engram_batch **out) {
  return cg_fetch(L(h), topic, group, consumer, max, wait_ms, out);
}
static int e_ack_many(engram *h, const char *topic, const char *group, const engram_ack_item *items,
                      size_t n, int *codes) {
  return cg_ack_many(L(h), topic, group, items, n, codes);
}
static int e_ack_fetch(engram *h, const char *topic, const char *group, const char *consumer,
                       const engram_ack_item *acks, size_t n_acks, int *codes, size_t max,
                       uint64_t wait_ms, engram_batch **out) {
  return cg_ack_fetch(L(h), topic, group, consumer, acks, n_acks, codes, max, wait_ms, out);
}
static int e_nack(engram *h, const char *topic, const char *group, uint64_t offset,
                  uint32_t attempt, int64_t delay_ms, const char *error) {
  return cg_nack(L(h), topic, group, offset, attempt, delay_ms, error);
}
static int e_reject(engram *h, const char *topic, const char *group, uint64_t offset,
                    uint32_t attempt, const char *reason) {
  return cg_reject(L(h), topic, group, offset, attempt, reason);
}
static int e_extend(engram *h, const char *topic, const char *group, uint64_t offset,
                    uint32_t attempt, uint64_t ms) {
  return cg_extend(L(h), topic, group, offset, attempt, ms);
}
static int e_cancel(engram *h, const char *topic, const char *group, uint64_t offset) {
  return cg_cancel(L(h), topic, group, offset);
}
static int e_status_get(engram *h, const char *topic, const char *group, uint64_t offset,
                        engram_status *st) {
  return cg_status_get(L(h), topic, group, offset, st);
}
static int e_dlq_list(engram *h, const char *topic, const char *group, uint64_t from, size_t max,
                      engram_dlq_entry **out, size_t *n) {
  return cg_dlq_list(L(h), topic, group, from, max, out, n);
}
static int e_dlq_purge(engram *h, const char *topic, const char *group, const uint64_t *offsets,
                       size_t n, size_t *count) {
  return cg_dlq_purge(L(h), topic, group, offsets, n, count);
}
static int e_dlq_redrive(engram *h, const char *topic, const char *group, const uint64_t *offsets,
                         size_t n, size_t *count) {
  return cg_dlq_redrive(L(h), topic, group, offsets, n, count);
}
static int e_txn_commit(engram *h, const engram_txn *txn) { return cg_txn_commit(L(h), txn); }
static int e_verify(engram *h, engram_verify_report *report) {
  return log_verify(L(h), report, cg_verify_records);
}
static int e_append_async(engram *h, const char *topic, const engram_event *ev, engram_append_cb cb,
                          void *ctx) {
  return log_append_async(L(h), topic, ev, cb, ctx);
}
static int e_append_wait(engram *h) { return log_append_wait(L(h)); }
static int e_worker_heartbeat(engram *h, const engram_worker_info *w) {
  return cg_worker_heartbeat(L(h), w);
}
static int e_worker_list(engram *h, uint64_t lost_after_ms, engram_worker_info **out, size_t *n) {
  return cg_worker_list(L(h), lost_after_ms, out, n);
}
static int e_worker_forget(engram *h, const char *name) { return cg_worker_forget(L(h), name); }
static int e_rate_list(engram *h, const char *topic, engram_rate_info **out, size_t *n) {
  return cg_rate_list(L(h), topic, out, n);
}
static int e_schedule_add(engram *h, const char *name, const engram_schedule_config *cfg) {
  return cg_schedule_add(L(h), name, cfg);
}
static int e_schedule_set(engram *h, const char *name, const engram_schedule_config *cfg,
                          int *changed) {
  return cg_schedule_set(L(h), name, cfg, changed);
}
static int e_schedule_get(engram *h, const char *name, engram_schedule_info **out) {
  return cg_schedule_get(L(h), name, out);
}
static int e_schedule_list(engram *h, engram_schedule_info **out, size_t *n) {
  return cg_schedule_list(L(h), out, n);
}
static int e_schedule_remove(engram *h, const char *name) { return cg_schedule_remove(L(h), name); }
static int e_schedule_pause(engram *h, const char *name) { return cg_schedule_pause(L(h), name); }
static int e_schedule_resume(engram *h, const char *name) { return cg_schedule_resume(L(h), name); }
static int e_schedule_run_now(engram *h, const char *name, uint64_t *offset) {
  return cg_schedule_run_now(L(h), name, offset);
}
static int e_schedule_tick(engram *h, int64_t now_ns, engram_schedule_tick_report *report) {
  return cg_schedule_tick(L(h), now_ns, report);
}

const struct engram_backend api_embedded = {
    .name = "embedded",
    .close = e_close,
    .sync = e_sync,
    .backup = e_backup,
    .topic_create = e_topic_create,
    .topic_info_get = e_topic_info_get,
    .topic_list = e_topic_list,
    .topic_drop = e_topic_drop,
    .topic_train_dict = e_topic_train_dict,
    .append = e_append,
    .append_batch = e_append_batch,
    .read = e_read,
    .read_range = e_read_range,
    .group_create = e_group_create,
    .group_info_get = e_group_info_get,
    .group_list = e_group_list,
    .group_delete = e_group_delete,
    .group_reset = e_group_reset,
    .fetch = e_fetch,
    .ack_many = e_ack_many,
    .nack = e_nack,
    .reject = e_reject,
    .extend = e_extend,
    .cancel = e_cancel,
    .status_get = e_status_get,
    .dlq_list = e_dlq_list,
    .dlq_purge = e_dlq_purge,
    .dlq_redrive = e_dlq_redrive,
    .txn_commit = e_txn_commit,
    .verify = e_verify,
    .append_async = e_append_async,
    .append_wait = e_append_wait,
    .worker_heartbeat = e_worker_heartbeat,
    .worker_list = e_worker_list,
    .worker_forget = e_worker_forget,
    .topic_set = e_topic_set,
    .compact = e_compact,
    .rate_list = e_rate_list,
    .schedule_add = e_schedule_add,
    .schedule_set = e_schedule_set,
    .schedule_get = e_schedule_get,
    .schedule_list = e_schedule_list,
    .schedule_remove = e_schedule_remove,
    .schedule_pause = e_schedule_pause,
    .schedule_resume = e_schedule_resume,
    .schedule_run_now = e_schedule_run_now,
    .schedule_tick = e_schedule_tick,
    .log_info = e_log_info,
    .space = e_space,
    .ack_fetch = e_ack_fetch,
};

struct log *api_log(engram *h) {
  return h && h->be == &api_embedded ? h->state : NULL;
}
