/* api.h — the handle behind every engram_* call and the backend table it calls. Private:
 * for api/ and for net/, which supplies the remote backend and the daemon. */
#ifndef ENGRAM_API_H
#define ENGRAM_API_H

#include "consumers/consumers.h"
#include "engram.h"
#include "log/log.h"

/* One backend: what an open handle does with a call whose arguments api/api.c has
 * checked (canonical/raft's struct raft_io). Every entry is set; each returns 0 or a
 * negative ENGRAM_E* code with the calling thread's message set, as engram.h says. */
struct engram_backend {
  const char *name;         /* "embedded", "remote" */
  void (*close)(engram *h); /* frees the backend state, not the handle */
  int (*sync)(engram *h);
  int (*backup)(engram *h, const char *dest);
  int (*topic_create)(engram *h, const char *topic, const engram_topic_config *cfg);
  int (*topic_info_get)(engram *h, const char *topic, engram_topic_info *info);
  int (*topic_list)(engram *h, engram_topic_info **out, size_t *n);
  int (*topic_drop)(engram *h, const char *topic);
  int (*topic_train_dict)(engram *h, const char *topic, uint32_t *dict_id);
  int (*append)(engram *h, const char *topic, const engram_event *ev, uint64_t *offset,
                int *duplicate);
  int (*append_batch)(engram *h, const char *topic, const engram_event *evs, size_t n,
                      uint64_t *offsets, int *duplicates);
  int (*read)(engram *h, const char *topic, uint64_t offset, engram_batch **out);
  int (*read_range)(engram *h, const char *topic, uint64_t from, size_t max, engram_batch **out);
  int (*group_create)(engram *h, const char *topic, const char *group,
                      const engram_group_config *cfg);
  int (*group_info_get)(engram *h, const char *topic, const char *group, engram_group_info *info);
  int (*group_list)(engram *h, const char *topic, engram_group_info **out, size_t *n);
  int (*group_delete)(engram *h, const char *topic, const char *group);
  int (*group_reset)(engram *h, const char *topic, const char *group, engram_start to,
                     uint64_t offset, int64_t time_ns);
  int (*fetch)(engram *h, const char *topic, const char *group, const char *consumer, size_t max,
               uint64_t wait_ms, engram_batch **out);
  int (*ack_many)(engram *h, const char *topic, const char *group, const engram_ack_item *items,
                  size_t n, int *codes);
  int (*nack)(engram *h, const char *topic, const char *group, uint64_t offset, uint32_t attempt,
              int64_t delay_ms, const char *error);
  int (*reject)(engram *h, const char *topic, const char *group, uint64_t offset, uint32_t attempt,
                const char *reason);
  int (*extend)(engram *h, const char *topic, const char *group, uint64_t offset, uint32_t attempt,
                uint64_t ms);
  int (*cancel)(engram *h, const char *topic, const char *group, uint64_t offset);
  int (*status_get)(engram *h, const char *topic, const char *group, uint64_t offset,
                    engram_status *st);
  int (*dlq_list)(engram *h, const char *topic, const char *group, uint64_t from, size_t max,
                  engram_dlq_entry **out, size_t *n);
  int (*dlq_purge)(engram *h, const char *topic, const char *group, const uint64_t *offsets,
                   size_t n, size_t *count);
  int (*dlq_redrive)(engram *h, const char *topic, const char *group, const uint64_t *offsets,
                     size_t n, size_t *count);
  /* The buffered operations of a non-empty engram_txn (txn_each reads them). */
  int (*txn_commit)(engram *h, const engram_txn *txn);
  int (*verify)(engram *h, engram_verify_report *report);
  int (*append_async)(engram *h, const char *topic, const engram_event *ev, engram_append_cb cb,
                      void *ctx);
  int (*append_wait)(engram *h);
  int (*worker_heartbeat)(engram *h, const engram_worker_info *w);
  int (*worker_list)(engram *h, uint64_t lost_after_ms, engram_worker_info **out, size_t *n);
  int (*worker_forget)(engram *h, const char *name);
  int (*topic_set)(engram *h, const char *topic, const engram_topic_config *cfg);
  int (*compact)(engram *h, const char *topic, engram_compact_report *report);
  int (*rate_list)(engram *h, const char *topic, engram_rate_info **out, size_t *n);
  int (*schedule_add)(engram *h, const char *name, const engram_schedule_config *cfg);
  int (*schedule_set)(engram *h, const char *name, const engram_schedule_config *cfg, int *changed);
  int (*schedule_get)(engram *h, const char *name, engram_schedule_info **out);
  int (*schedule_list)(engram *h, engram_schedule_info **out, size_t *n);
  int (*schedule_remove)(engram *h, const char *name);
  int (*schedule_pause)(engram *h, const char *name);
  int (*schedule_resume)(engram *h, const char *name);
  int (*schedule_run_now)(engram *h, const char *name, uint64_t *offset);
  int (*schedule_tick)(engram *h, int64_t now_ns, engram_schedule_tick_report *report);
  int (*log_info)(engram *h, engram_log_info *out);
  int (*space)(engram *h, engram_space *out);
  int (*ack_fetch)(engram *h, const char *topic, const char *group, const char *consumer,
                   const engram_ack_item *acks, size_t n_acks, int *codes, size_t max,
                   uint64_t wait_ms, engram_batch **out);
};

/* A public handle: its backend and that backend's state (a struct log for the embedded
 * backend, net/'s connection for the remote one). */
struct engram {
  const struct engram_backend *be;
  void *state;
};

/* A new handle over `state`. Returns 0 or ENGRAM_ENOMEM (the state is not freed). */
int api_handle_new(const struct engram_backend *be, void *state, engram **out);
/* The log of an embedded handle; NULL for any other. */
struct log *api_log(engram *h);
/* The embedded backend (embedded.c). */
extern const struct engram_backend api_embedded;

/* Supplied by net/ (the only layer with ZeroMQ); api/api.c checks their arguments. */
int net_connect(const char *endpoint, const engram_connect_options *opts, engram **out);
int net_serve(const char *data_dir, const engram_serve_options *opts);
void net_serve_stop(void);
int net_keygen(char public_key[41], char secret_key[41]);
/* Attaches the push of an embedded handle's commits to a daemon serving its directory
 * (nothing for a read-only handle). */
void net_notify_attach(struct log *log);
/* engram_server_info_get of a handle from net_connect (the daemon's stats request). */
int net_server_info(engram *h, engram_server_info *out);

#endif
