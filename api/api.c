/* api.c — every engram_* entry point, once, in the order of engram.h: check the
 * arguments, then call the handle's backend (embedded: api/embedded.c over log/ and
 * consumers/; remote: net/). Anything not defined here (or the error table in common/),
 * applications have no business using.
 *
 * The checks here are the ones that need no log: they run for every backend alike, so an
 * embedded and a remote handle answer bad input with the same code and message. What
 * needs the log's state (a topic's limits, a group's existence) is the backend's to judge;
 * a remote handle gets the daemon's embedded answer. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"

int api_handle_new(const struct engram_backend *be, void *state, engram **out) {
  engram *h = calloc(1, sizeof *h);
  if (!h) return log_error(NULL, ENGRAM_ENOMEM, "out of memory for a handle");
  h->be = be;
  h->state = state;
  *out = h;
  return 0;
}

/* ---------------------------------------------------------------------------------
 * Opening and closing.
 * ------------------------------------------------------------------------------ */
int engram_open(const char *path, const engram_options *opts, engram **out) {
  if (!out) return log_error(NULL, ENGRAM_EINVAL, "open: out is NULL");
  *out = NULL;
  struct log *log;
  int rc = log_open(path, opts, &log);
  if (rc) return rc;
  rc = api_handle_new(&api_embedded, log, out);
  if (rc) {
    log_close(log);
    return rc;
  }
  net_notify_attach(log);
  cg_maint_start(log);
  return 0;
}

void engram_close(engram *log) {
  if (!log) return;
  log->be->close(log);
  free(log);
}

const char *engram_errmsg(const engram *log) {
  (void)log;
  return log_errmsg(NULL);
}

int engram_sync(engram *log) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->sync(log);
}

int engram_commit_stats_get(engram *log, engram_commit_stats *out) {
  if (!log || !out) return log_error(NULL, ENGRAM_EINVAL, "commit stats: NULL argument");
  struct log *l = api_log(log);
  if (!l) return log_error(NULL, ENGRAM_ENOTSUP, "commit stats: only for embedded handles");
  return log_commit_stats(l, out);
}

int engram_backup(engram *log, const char *dest) {
  if (!log || !dest || !*dest) return log_error(NULL, ENGRAM_EINVAL, "backup: no destination");
  return log->be->backup(log, dest);
}

/* ---------------------------------------------------------------------------------
 * Topics.
 * ------------------------------------------------------------------------------ */
int engram_topic_create(engram *log, const char *topic, const engram_topic_config *cfg) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->topic_create(log, topic, cfg);
}

int engram_topic_info_get(engram *log, const char *topic, engram_topic_info *info) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->topic_info_get(log, topic, info);
}

int engram_topic_list(engram *log, engram_topic_info **out, size_t *n) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->topic_list(log, out, n);
}

int engram_topic_drop(engram *log, const char *topic) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->topic_drop(log, topic);
}

int engram_topic_train_dict(engram *log, const char *topic, uint32_t *dict_id) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->topic_train_dict(log, topic, dict_id);
}

int engram_topic_set(engram *log, const char *topic, const engram_topic_config *cfg) {
  if (!log) return ENGRAM_EINVAL;
  if (!cfg) return log_error(NULL, ENGRAM_EINVAL, "set topic: config is NULL");
  return log->be->topic_set(log, topic, cfg);
}

void engram_free(void *p) { free(p); }

/* ---------------------------------------------------------------------------------
 * Events.
 * ------------------------------------------------------------------------------ */
void engram_batch_free(engram_batch *b) { log_batch_free(b); }

int engram_append(engram *log, const char *topic, const engram_event *ev, uint64_t *offset,
                  int *duplicate) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->append(log, topic, ev, offset, duplicate);
}

int engram_append_batch(engram *log, const char *topic, const engram_event *evs, size_t n,
                        uint64_t *offsets, int *duplicates) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->append_batch(log, topic, evs, n, offsets, duplicates);
}

int engram_read(engram *log, const char *topic, uint64_t offset, engram_batch **out) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->read(log, topic, offset, out);
}

int engram_read_range(engram *log, const char *topic, uint64_t from, size_t max,
                      engram_batch **out) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->read_range(log, topic, from, max, out);
}

/* ---------------------------------------------------------------------------------
 * Consumer groups.
 * ------------------------------------------------------------------------------ */
int engram_group_create(engram *log, const char *topic, const char *group,
                        const engram_group_config *cfg) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->group_create(log, topic, group, cfg);
}

int engram_group_info_get(engram *log, const char *topic, const char *group,
                          engram_group_info *info) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->group_info_get(log, topic, group, info);
}

int engram_group_list(engram *log, const char *topic, engram_group_info **out, size_t *n) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->group_list(log, topic, out, n);
}

int engram_group_delete(engram *log, const char *topic, const char *group) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->group_delete(log, topic, group);
}

int engram_group_reset(engram *log, const char *topic, const char *group, engram_start to,
                       uint64_t offset, int64_t time_ns) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->group_reset(log, topic, group, to, offset, time_ns);
}

int engram_fetch(engram *log, const char *topic, const char *group, const char *consumer,
                 size_t max, uint64_t wait_ms, engram_batch **out) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->fetch(log, topic, group, consumer, max, wait_ms, out);
}

int engram_ack(engram *log, const char *topic, const char *group, uint64_t offset, uint32_t attempt,
               const void *result, size_t result_len) {
  engram_ack_item it = {offset, attempt, result, result_len};
  return engram_ack_many(log, topic, group, &it, 1, NULL);
}

int engram_ack_many(engram *log, const char *topic, const char *group, const engram_ack_item *items,
                    size_t n, int *codes) {
  if (!log) return ENGRAM_EINVAL;
  if (!items || n == 0) return log_error(NULL, ENGRAM_EINVAL, "ack: no items");
  if (n > 100000) return log_error(NULL, ENGRAM_ETOOBIG, "ack: %zu items over limit 100000", n);
  return log->be->ack_many(log, topic, group, items, n, codes);
}

int engram_ack_fetch(engram *log, const char *topic, const char *group, const char *consumer,
                     const engram_ack_item *acks, size_t n_acks, int *codes, size_t max,
                     uint64_t wait_ms, engram_batch **out) {
  if (!log) return ENGRAM_EINVAL;
  if (out) *out = NULL;
  if (n_acks && !acks)
    return log_error(NULL, ENGRAM_EINVAL, "ack-fetch: acks is NULL but n_acks is %zu", n_acks);
  if (n_acks > 100000)
    return log_error(NULL, ENGRAM_ETOOBIG, "ack-fetch: %zu acks over limit 100000", n_acks);
  return log->be->ack_fetch(log, topic, group, consumer, acks, n_acks, codes, max, wait_ms, out);
}

int engram_nack(engram *log, const char *topic, const char *group, uint64_t offset,
                uint32_t attempt, int64_t delay_ms, const char *error) {
  if (!log) return ENGRAM_EINVAL;
  if (delay_ms > (int64_t)ENGRAM_MAX_DELAY_MS)
    return log_error(NULL, ENGRAM_EINVAL, "nack: delay of %lld ms over the limit of %llu (30 days)",
                     (long long)delay_ms, ENGRAM_MAX_DELAY_MS);
  if (error && strlen(error) > 4096)
    return log_error(NULL, ENGRAM_ETOOBIG, "nack: error text over 4096 bytes");
  return log->be->nack(log, topic, group, offset, attempt, delay_ms, error);
}

int engram_reject(engram *log, const char *topic, const char *group, uint64_t offset,
                  uint32_t attempt, const char *reason) {
  if (!log) return ENGRAM_EINVAL;
  if (reason && strlen(reason) > 200)
    return log_error(NULL, ENGRAM_ETOOBIG, "reject: reason over 200 bytes");
  return log->be->reject(log, topic, group, offset, attempt, reason);
}

int engram_extend(engram *log, const char *topic, const char *group, uint64_t offset,
                  uint32_t attempt, uint64_t ms) {
  if (!log) return ENGRAM_EINVAL;
  if (ms > ENGRAM_MAX_DELAY_MS)
    return log_error(NULL, ENGRAM_EINVAL, "extend: %llu ms over the limit of %llu (30 days)",
                     (unsigned long long)ms, ENGRAM_MAX_DELAY_MS);
  return log->be->extend(log, topic, group, offset, attempt, ms);
}

int engram_cancel(engram *log, const char *topic, const char *group, uint64_t offset) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->cancel(log, topic, group, offset);
}

int engram_status_get(engram *log, const char *topic, const char *group, uint64_t offset,
                      engram_status *st) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->status_get(log, topic, group, offset, st);
}

const char *engram_state_name(engram_event_state s) { return cg_state_name(s); }

int engram_dlq_list(engram *log, const char *topic, const char *group, uint64_t from, size_t max,
                    engram_dlq_entry **out, size_t *n) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->dlq_list(log, topic, group, from, max, out, n);
}

int engram_dlq_purge(engram *log, const char *topic, const char *group, const uint64_t *offsets,
                     size_t n, size_t *count) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->dlq_purge(log, topic, group, offsets, n, count);
}

int engram_dlq_redrive(engram *log, const char *topic, const char *group, const uint64_t *offsets,
                       size_t n, size_t *count) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->dlq_redrive(log, topic, group, offsets, n, count);
}

/* ---------------------------------------------------------------------------------
 * Transactions: buffered in memory (consumers/txn.c), committed by the backend.
 * ------------------------------------------------------------------------------ */
int engram_txn_begin(engram *log, engram_txn **out) {
  if (!log || !out) return log_error(NULL, ENGRAM_EINVAL, "txn: NULL argument");
  return cg_txn_begin(log, out);
}

int engram_txn_ack(engram_txn *txn, const char *topic, const char *group, uint64_t offset,
                   uint32_t attempt, const void *result, size_t result_len) {
  if (!txn) return ENGRAM_EINVAL;
  return cg_txn_ack(txn, topic, group, offset, attempt, result, result_len);
}

int engram_txn_append(engram_txn *txn, const char *topic, const engram_event *ev,
                      uint64_t *offset) {
  if (!txn) return ENGRAM_EINVAL;
  return cg_txn_append(txn, topic, ev, offset);
}

int engram_txn_commit(engram_txn *txn) {
  if (!txn) return ENGRAM_EINVAL;
  engram *log = cg_txn_owner(txn);
  int rc;
  if (cg_txn_failed(txn))
    rc = log_error(NULL, ENGRAM_ENOMEM, "txn commit: an operation could not be queued");
  else if (txn_count(txn) == 0)
    rc = 0;
  else
    rc = log->be->txn_commit(log, txn);
  cg_txn_abort(txn);
  return rc;
}

void engram_txn_abort(engram_txn *txn) { cg_txn_abort(txn); }

/* ---------------------------------------------------------------------------------
 * Verification and pipelined appends.
 * ------------------------------------------------------------------------------ */
int engram_verify(engram *log, engram_verify_report *report) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->verify(log, report);
}

int engram_append_async(engram *log, const char *topic, const engram_event *ev, engram_append_cb cb,
                        void *ctx) {
  if (!log) return ENGRAM_EINVAL;
  /* What can be judged without the topic is refused at once, for both backends alike;
   * the rest comes through the callback. */
  if (!log_valid_name(topic))
    return log_error(NULL, ENGRAM_EINVAL,
                     "append: topic name invalid (use 1-200 of [A-Za-z0-9._-])");
  int rc = log_check_event(NULL, topic, ev, ENGRAM_MAX_PAYLOAD_LIMIT);
  if (rc) return rc;
  return log->be->append_async(log, topic, ev, cb, ctx);
}

int engram_append_wait(engram *log) {
  if (!log) return ENGRAM_EINVAL;
  return log->be->append_wait(log);
}

/* ---------------------------------------------------------------------------------
 * The network (net/).
 * ------------------------------------------------------------------------------ */
int engram_connect(const char *endpoint, const engram_connect_options *opts, engram **out) {
  if (!out) return log_error(NULL, ENGRAM_EINVAL, "connect: out is NULL");
  *out = NULL;
  if (!endpoint || !*endpoint || strlen(endpoint) >= 512)
    return log_error(NULL, ENGRAM_EINVAL, "connect: invalid endpoint");
  return net_connect(endpoint, opts, out);
}

int engram_serve(const char *data_dir, const engram_serve_options *opts) {
  return net_serve(data_dir, opts);
}

void engram_serve_stop(void) { net_serve_stop(); }

int engram_keygen(char public_key[41], char secret_key[41]) {
  if (!public_key || !secret_key) return log_error(NULL, ENGRAM_EINVAL, "keygen: NULL buffer");
  return net_keygen(public_key, secret_key);
}

int engram_server_info_get(engram *log, engram_server_info *out) {
  if (!log || !out) return log_error(NULL, ENGRAM_EINVAL, "server info: NULL argument");
  if (api_log(log))
    return log_error(NULL, ENGRAM_ENOTSUP,
                     "server info: an embedded handle has no daemon; ask one from engram_connect");
  return net_server_info(log, out);
}

/* ---------------------------------------------------------------------------------
 * Workers.
 * ------------------------------------------------------------------------------ */
/* "topic/group" of two valid names. */
static int valid_topic_group(const char *s, size_t cap) {
  const char *end = memchr(s, '\0', cap), *slash = end ? memchr(s, '/', (size_t)(end - s)) : NULL;
  if (!slash) return 0;
  char t[ENGRAM_MAX_NAME + 1];
  size_t tn = (size_t)(slash - s);
  if (tn == 0 || tn > ENGRAM_MAX_NAME) return 0;
  memcpy(t, s, tn);
  t[tn] = '\0';
  return log_valid_name(t) && log_valid_name(slash + 1);
}

int engram_worker_heartbeat(engram *log, const engram_worker_info *w) {
  if (!log || !w) return log_error(NULL, ENGRAM_EINVAL, "worker heartbeat: NULL argument");
  if (!memchr(w->name, '\0', sizeof w->name) || !log_valid_name(w->name))
    return log_error(NULL, ENGRAM_EINVAL,
                     "worker heartbeat: name invalid (use 1-200 of [A-Za-z0-9._-])");
  const char *end = memchr(w->host, '\0', sizeof w->host);
  if (!end)
    return log_error(NULL, ENGRAM_EINVAL, "worker heartbeat %s: host not terminated", w->name);
  for (const char *p = w->host; p < end; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f)
      return log_error(NULL, ENGRAM_EINVAL, "worker heartbeat %s: control character in host",
                       w->name);
  if (w->n_groups > ENGRAM_MAX_WORKER_GROUPS || w->n_running > ENGRAM_MAX_WORKER_RUNNING)
    return log_error(
        NULL, ENGRAM_EINVAL, "worker heartbeat %s: %zu groups, %zu running over the limits %d, %d",
        w->name, w->n_groups, w->n_running, ENGRAM_MAX_WORKER_GROUPS, ENGRAM_MAX_WORKER_RUNNING);
  for (size_t i = 0; i < w->n_groups; i++)
    if (!valid_topic_group(w->groups[i], sizeof w->groups[i]))
      return log_error(NULL, ENGRAM_EINVAL,
                       "worker heartbeat %s: group %zu is not \"topic/group\" of valid names",
                       w->name, i);
  for (size_t i = 0; i < w->n_running; i++) {
    const engram_worker_task *t = &w->running[i];
    if (!memchr(t->topic, '\0', sizeof t->topic) || !memchr(t->group, '\0', sizeof t->group) ||
        !log_valid_name(t->topic) || !log_valid_name(t->group))
      return log_error(NULL, ENGRAM_EINVAL,
                       "worker heartbeat %s: running task %zu names no valid topic and group",
                       w->name, i);
  }
  return log->be->worker_heartbeat(log, w);
}

int engram_worker_list(engram *log, uint64_t lost_after_ms, engram_worker_info **out, size_t *n) {
  if (!log || !out || !n) return log_error(NULL, ENGRAM_EINVAL, "worker list: NULL argument");
  *out = NULL;
  *n = 0;
  if (lost_after_ms > ENGRAM_MAX_DELAY_MS)
    return log_error(NULL, ENGRAM_EINVAL, "worker list: lost after %llu ms over the limit of %llu",
                     (unsigned long long)lost_after_ms, ENGRAM_MAX_DELAY_MS);
  return log->be->worker_list(log, lost_after_ms ? lost_after_ms : ENGRAM_DEFAULT_WORKER_LOST_MS,
                              out, n);
}

int engram_worker_forget(engram *log, const char *name) {
  if (!log) return ENGRAM_EINVAL;
  if (!log_valid_name(name))
    return log_error(NULL, ENGRAM_EINVAL,
                     "worker forget: name invalid (use 1-200 of [A-Za-z0-9._-])");
  return log->be->worker_forget(log, name);
}

/* ---------------------------------------------------------------------------------
 * Maintenance.
 * ------------------------------------------------------------------------------ */
int engram_compact(engram *log, const char *topic, engram_compact_report *report) {
  if (!log) return ENGRAM_EINVAL;
  if (report) memset(report, 0, sizeof *report);
  return log->be->compact(log, topic, report);
}

/* ---------------------------------------------------------------------------------
 * Rates.
 * ------------------------------------------------------------------------------ */
int engram_rate_list(engram *log, const char *topic, engram_rate_info **out, size_t *n) {
  if (!log || !out || !n) return log_error(NULL, ENGRAM_EINVAL, "rate list: NULL argument");
  *out = NULL;
  *n = 0;
  if (topic && !log_valid_name(topic))
    return log_error(NULL, ENGRAM_EINVAL,
                     "rate list: topic name invalid (use 1-200 of [A-Za-z0-9._-])");
  return log->be->rate_list(log, topic, out, n);
}

/* ---------------------------------------------------------------------------------
 * Schedules.
 * ------------------------------------------------------------------------------ */
static int schedule_name(const char *what, const char *name) {
  if (log_valid_name(name)) return 0;
  return log_error(NULL, ENGRAM_EINVAL,
                   "%s: schedule name %s%.60s%s invalid (use 1-200 of [A-Za-z0-9._-])", what,
                   name ? "\"" : "", name ? name : "(null)", name ? "\"" : "");
}

int engram_schedule_add(engram *log, const char *name, const engram_schedule_config *cfg) {
  if (!log || !cfg) return log_error(NULL, ENGRAM_EINVAL, "schedule add: NULL argument");
  int rc = cg_schedule_check("schedule add", name, cfg);
  return rc ? rc : log->be->schedule_add(log, name, cfg);
}

int engram_schedule_set(engram *log, const char *name, const engram_schedule_config *cfg,
                        int *changed) {
  if (changed) *changed = 0;
  if (!log || !cfg) return log_error(NULL, ENGRAM_EINVAL, "schedule set: NULL argument");
  int rc = cg_schedule_check("schedule set", name, cfg);
  return rc ? rc : log->be->schedule_set(log, name, cfg, changed);
}

int engram_schedule_get(engram *log, const char *name, engram_schedule_info **out) {
  if (!log || !out) return log_error(NULL, ENGRAM_EINVAL, "schedule get: NULL argument");
  *out = NULL;
  int rc = schedule_name("schedule get", name);
  return rc ? rc : log->be->schedule_get(log, name, out);
}

int engram_schedule_list(engram *log, engram_schedule_info **out, size_t *n) {
  if (!log || !out || !n) return log_error(NULL, ENGRAM_EINVAL, "schedule list: NULL argument");
  *out = NULL;
  *n = 0;
  return log->be->schedule_list(log, out, n);
}

int engram_schedule_remove(engram *log, const char *name) {
  if (!log) return ENGRAM_EINVAL;
  int rc = schedule_name("schedule remove", name);
  return rc ? rc : log->be->schedule_remove(log, name);
}

int engram_schedule_pause(engram *log, const char *name) {
  if (!log) return ENGRAM_EINVAL;
  int rc = schedule_name("schedule pause", name);
  return rc ? rc : log->be->schedule_pause(log, name);
}

int engram_schedule_resume(engram *log, const char *name) {
  if (!log) return ENGRAM_EINVAL;
  int rc = schedule_name("schedule resume", name);
  return rc ? rc : log->be->schedule_resume(log, name);
}

int engram_schedule_run_now(engram *log, const char *name, uint64_t *offset) {
  if (offset) *offset = 0;
  if (!log) return ENGRAM_EINVAL;
  int rc = schedule_name("schedule run-now", name);
  return rc ? rc : log->be->schedule_run_now(log, name, offset);
}

int engram_schedule_tick(engram *log, int64_t now_ns, engram_schedule_tick_report *report) {
  if (report) memset(report, 0, sizeof *report);
  if (!log) return ENGRAM_EINVAL;
  if (now_ns < 0) return log_error(NULL, ENGRAM_EINVAL, "schedule tick: negative now_ns");
  return log->be->schedule_tick(log, now_ns, report);
}

/* ---------------------------------------------------------------------------------
 * The log's identity.
 * ------------------------------------------------------------------------------ */
int engram_log_info_get(engram *log, engram_log_info *out) {
  if (!log || !out) return ENGRAM_EINVAL;
  memset(out, 0, sizeof *out);
  return log->be->log_info(log, out);
}

int engram_space_get(engram *log, engram_space *out) {
  if (!log || !out) return ENGRAM_EINVAL;
  memset(out, 0, sizeof *out);
  return log->be->space(log, out);
}

/* ---------------------------------------------------------------------------------
 * Progress of long calls, and giving space back to the file system.
 * ------------------------------------------------------------------------------ */
int engram_progress_set(engram *log, engram_progress_fn fn, void *ctx) {
  if (!log) return log_error(NULL, ENGRAM_EINVAL, "progress: handle is NULL");
  struct log *l = api_log(log);
  if (l) { /* a remote handle's work runs in the daemon: nothing to report here */
    l->progress = fn;
    l->progress_ctx = fn ? ctx : NULL;
  }
  return 0;
}

int engram_reclaim(const char *path, const engram_reclaim_options *opts,
                   engram_reclaim_report *report) {
  if (report) memset(report, 0, sizeof *report);
  if (!path || !*path) return log_error(NULL, ENGRAM_EINVAL, "reclaim: no path");
  return log_reclaim(path, opts, report);
}
