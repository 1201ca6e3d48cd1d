/* client_ops.c — the remote calls: each engram_* call of a remote handle as a request to
 * the daemon and its reply back into API structs; the remote backend's table. */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include "net/client.h"

/* ---------------------------------------------------------------------------------
 * Conversions from replies.
 * ------------------------------------------------------------------------------ */
static int topic_from_wire(const Engram__Wire__TopicInfo *w, engram_topic_info *t) {
  memset(t, 0, sizeof *t);
  if (!w || net_copy_text(t->name, sizeof t->name, w->name)) return -1;
  if (w->config) {
    t->config.compress_threshold = w->config->compress_threshold;
    t->config.max_payload = w->config->max_payload;
    t->config.dict_train_after = w->config->dict_train_after;
    t->config.flags = w->config->flags;
#define X(type, name) t->config.name = w->config->name;
    ENGRAM_TOPIC_RETENTION_FIELDS(X)
#undef X
    if (net_copy_text(t->config.tombstone_type, sizeof t->config.tombstone_type,
                      w->config->tombstone_type))
      return -1;
  }
#define X(type, name) t->name = (type)w->name;
  ENGRAM_TOPIC_INFO_FIELDS(X)
#undef X
  return 0;
}

static int group_from_wire(const Engram__Wire__GroupInfo *w, engram_group_info *g) {
  memset(g, 0, sizeof *g);
  if (!w || net_copy_text(g->topic, sizeof g->topic, w->topic) ||
      net_copy_text(g->name, sizeof g->name, w->name))
    return -1;
  if (w->n_filters > ENGRAM_MAX_FILTERS || w->n_backoff_ms > ENGRAM_MAX_BACKOFF) return -1;
  for (size_t i = 0; i < w->n_filters; i++)
    if (net_copy_text(g->filters[i], sizeof g->filters[i], w->filters[i])) return -1;
  g->n_filters = w->n_filters;
  if (w->n_backoff_ms)
    memcpy(g->backoff_ms, w->backoff_ms, w->n_backoff_ms * sizeof *w->backoff_ms);
  g->n_backoff = w->n_backoff_ms;
  g->ack_wait_ms = w->ack_wait_ms;
  g->max_deliver = w->max_deliver;
  g->result_ttl_ms = w->result_ttl_ms;
  g->flags = w->flags;
  g->created_ns = w->created_ns;
#define X(type, name) g->name = (type)w->name;
  ENGRAM_GROUP_INFO_COUNTERS(X)
#undef X
  return 0;
}

static int batch_from_wire(engram *log, const Engram__Wire__Events *w, engram_batch **out) {
  *out = NULL;
  if (!w) return -1;
  log_topic t;
  memset(&t, 0, sizeof t);
  if (net_copy_text(t.name, sizeof t.name, w->topic)) return -1;
  log_bb *bb = log_bb_new(w->n_events);
  if (!bb) return log_error(NULL, ENGRAM_ENOMEM, "read: out of memory"), -2;
  for (size_t i = 0; i < w->n_events; i++) {
    const Engram__Wire__Event *e = w->events[i];
    if (e->n_headers > ENGRAM_MAX_HEADERS || e->payload.len > UINT32_MAX) {
      log_bb_free(bb);
      return -1;
    }
    log_view v;
    memset(&v, 0, sizeof v);
    v.offset = e->offset;
    v.type = e->type;
    v.type_len = strlen(e->type);
    v.has_key = e->has_key;
    v.key = e->key;
    v.key_len = e->has_key ? strlen(e->key) : 0;
    v.payload = e->payload.data;
    v.payload_len = e->payload.len;
    v.raw_len = (uint32_t)e->payload.len;
    v.content_type = e->content_type;
    v.content_type_len = strlen(e->content_type);
    v.idem = e->idempotency_key;
    v.idem_len = strlen(e->idempotency_key);
    v.timestamp_ns = e->timestamp_ns;
    v.deliver_at_ns = e->deliver_at_ns;
    v.flags = e->flags;
    v.n_headers = (uint32_t)e->n_headers;
    for (size_t h = 0; h < e->n_headers; h++) {
      v.headers[h].name = e->headers[h]->name;
      v.headers[h].name_len = strlen(e->headers[h]->name);
      v.headers[h].value = e->headers[h]->value;
      v.headers[h].value_len = strlen(e->headers[h]->value);
    }
    int rc;
    engram_event *ev = log_bb_add(bb, NULL, NULL, &t, &v, &rc);
    if (!ev) {
      log_bb_free(bb);
      return log_error(NULL, ENGRAM_ENOMEM, "read: out of memory"), -2;
    }
    ev->attempt = e->attempt;
  }
  *out = log_bb_finish(bb);
  if (*out) {
    (*out)->from = w->from;
    (*out)->next = w->next;
    (*out)->removed = w->removed;
  }
  return 0;
}

/* ---------------------------------------------------------------------------------
 * The operations.
 * ------------------------------------------------------------------------------ */

void client_conn_free(struct conn *c);

static void r_close(engram *log) {
  struct conn *c = C(log);
  if (c) {
    engram_append_wait(log);
    client_conn_free(c);
  }
}

static int r_sync(engram *log) {
  REQ(sync, SYNC, Engram__Wire__Sync, ENGRAM__WIRE__SYNC__INIT);
  (void)m;
  return client_call(log, &rq);
}

static int r_backup(engram *log, const char *dest) {
  REQ(backup, BACKUP, Engram__Wire__Backup, ENGRAM__WIRE__BACKUP__INIT);
  m.dest = net_str(dest);
  return client_call(log, &rq);
}

static void topic_config_to_wire(const engram_topic_config *cfg, Engram__Wire__TopicConfig *wc) {
  wc->compress_threshold = cfg->compress_threshold;
  wc->max_payload = cfg->max_payload;
  wc->dict_train_after = cfg->dict_train_after;
  wc->flags = cfg->flags;
#define X(type, name) wc->name = cfg->name;
  ENGRAM_TOPIC_RETENTION_FIELDS(X)
#undef X
  wc->tombstone_type = (char *)cfg->tombstone_type;
}

static int r_topic_create(engram *log, const char *topic, const engram_topic_config *cfg) {
  REQ(topic_create, TOPIC_CREATE, Engram__Wire__TopicCreate, ENGRAM__WIRE__TOPIC_CREATE__INIT);
  Engram__Wire__TopicConfig wc = ENGRAM__WIRE__TOPIC_CONFIG__INIT;
  m.topic = net_str(topic);
  if (cfg) {
    topic_config_to_wire(cfg, &wc);
    m.config = &wc;
  }
  return client_call(log, &rq);
}

static int r_topic_set(engram *log, const char *topic, const engram_topic_config *cfg) {
  REQ(topic_set, TOPIC_SET, Engram__Wire__TopicSet, ENGRAM__WIRE__TOPIC_SET__INIT);
  Engram__Wire__TopicConfig wc = ENGRAM__WIRE__TOPIC_CONFIG__INIT;
  m.topic = net_str(topic);
  topic_config_to_wire(cfg, &wc);
  m.config = &wc;
  return client_call(log, &rq);
}

static int r_compact(engram *log, const char *topic, engram_compact_report *report) {
  REQ(compact, COMPACT, Engram__Wire__Compact, ENGRAM__WIRE__COMPACT__INIT);
  m.topic = net_str(topic);
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_COMPACT_REPORT,
                      &rp);
  if (!rc && report) {
#define X(type, name) report->name = (type)rp->compact_report->name;
    ENGRAM_COMPACT_REPORT_FIELDS(X)
#undef X
  }
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  return rc;
}

static int r_log_info(engram *log, engram_log_info *out) {
  REQ(log_info, LOG_INFO, Engram__Wire__LogInfoGet, ENGRAM__WIRE__LOG_INFO_GET__INIT);
  (void)m;
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_LOG_INFO, &rp);
  if (!rc && net_copy_text(out->id, sizeof out->id, rp->log_info->id))
    rc = log_error(NULL, ENGRAM_EPROTO, "log info: id too long");
  if (!rc) {
    out->created_ns = rp->log_info->created_ns;
    out->format_version = rp->log_info->format_version;
  }
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  return rc;
}

static int r_space(engram *log, engram_space *out) {
  REQ(space, SPACE, Engram__Wire__SpaceGet, ENGRAM__WIRE__SPACE_GET__INIT);
  (void)m;
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_SPACE, &rp);
  if (!rc) {
#define X(type, name) out->name = rp->space->name;
    ENGRAM_SPACE_FIELDS(X)
#undef X
  }
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  return rc;
}

static int r_topic_info_get(engram *log, const char *topic, engram_topic_info *info) {
  if (!info) return log_error(NULL, ENGRAM_EINVAL, "topic info: info is NULL");
  REQ(topic_get, TOPIC_GET, Engram__Wire__TopicGet, ENGRAM__WIRE__TOPIC_GET__INIT);
  m.topic = net_str(topic);
  Engram__Wire__Reply *rp;
  int rc =
      client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_TOPIC_INFO, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  if (topic_from_wire(rp->topic_info, info)) return client_bad_reply(log, rp, "topic info");
  engram__wire__reply__free_unpacked(rp, NULL);
  return 0;
}

static int r_topic_list(engram *log, engram_topic_info **out, size_t *n) {
  if (!out || !n) return log_error(NULL, ENGRAM_EINVAL, "topic list: NULL argument");
  *out = NULL;
  *n = 0;
  REQ(topic_list, TOPIC_LIST, Engram__Wire__TopicList, ENGRAM__WIRE__TOPIC_LIST__INIT);
  (void)m;
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_TOPICS, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  size_t k = rp->topics->n_topics;
  engram_topic_info *list = calloc(k ? k : 1, sizeof *list);
  if (!list) {
    engram__wire__reply__free_unpacked(rp, NULL);
    return log_error(NULL, ENGRAM_ENOMEM, "topic list: out of memory");
  }
  for (size_t i = 0; i < k; i++) {
    if (topic_from_wire(rp->topics->topics[i], &list[i])) {
      free(list);
      return client_bad_reply(log, rp, "topic list");
    }
  }
  engram__wire__reply__free_unpacked(rp, NULL);
  *out = list;
  *n = k;
  return 0;
}

static int r_topic_drop(engram *log, const char *topic) {
  REQ(topic_drop, TOPIC_DROP, Engram__Wire__TopicDrop, ENGRAM__WIRE__TOPIC_DROP__INIT);
  m.topic = net_str(topic);
  return client_call(log, &rq);
}

static int r_topic_train_dict(engram *log, const char *topic, uint32_t *dict_id) {
  REQ(topic_train_dict, TOPIC_TRAIN_DICT, Engram__Wire__TopicTrainDict,
      ENGRAM__WIRE__TOPIC_TRAIN_DICT__INIT);
  m.topic = net_str(topic);
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_DICT_ID, &rp);
  if (!rc && dict_id) *dict_id = rp->dict_id;
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  return rc;
}

/* Wire events for a request: pointers into the caller's events. */

void client_wev_free(struct wev *w) {
  if (w->ev != &w->ev1) {
    free(w->ev);
    free(w->evp);
  }
  if (w->h != w->h8) {
    free(w->h);
    free(w->hp);
  }
}

/* What the wire cannot carry (NULL where the API wants a pointer) is checked here, with
 * the API's own message; everything else is the daemon's to judge, so remote callers
 * get the embedded codes and messages. */
static int inexpressible(const engram_event *e) {
  if (!e->type || (e->payload_len && !e->payload) || (e->n_headers && !e->headers)) return 1;
  for (size_t i = 0; i < e->n_headers; i++)
    if (!e->headers[i].name) return 1;
  return 0;
}

/* Builds the wire events (pointing into the caller's). */
int client_wev_build(engram *log, const char *topic, const engram_event *evs, size_t n,
                     struct wev *w, int *all_idem) {
  memset(w, 0, sizeof *w);
  size_t nh = 0;
  *all_idem = 1;
  for (size_t i = 0; i < n; i++) {
    if (inexpressible(&evs[i])) {
      int rc = log_check_event(NULL, net_str(topic), &evs[i], ENGRAM_MAX_PAYLOAD_LIMIT);
      if (rc) return rc;
      return log_error(NULL, ENGRAM_EINVAL, "append %s: event %zu has a NULL field", net_str(topic),
                       i);
    }
    if (!evs[i].idempotency_key) *all_idem = 0;
    nh += evs[i].n_headers;
  }
  if (n == 1) {
    w->ev = &w->ev1;
    w->evp = &w->evp1;
  } else {
    w->ev = calloc(n, sizeof *w->ev);
    w->evp = calloc(n, sizeof *w->evp);
  }
  if (nh <= 8) {
    w->h = w->h8;
    w->hp = w->hp8;
  } else {
    w->h = calloc(nh, sizeof *w->h);
    w->hp = calloc(nh, sizeof *w->hp);
  }
  if (!w->ev || !w->evp || !w->h || !w->hp) {
    client_wev_free(w);
    return log_error(NULL, ENGRAM_ENOMEM, "append %s: out of memory", topic ? topic : "");
  }
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    const engram_event *e = &evs[i];
    Engram__Wire__Event *x = &w->ev[i];
    engram__wire__event__init(x);
    x->type = net_str(e->type);
    x->has_key = e->key != NULL;
    x->key = net_str(e->key);
    x->payload.data = (uint8_t *)e->payload;
    x->payload.len = e->payload ? e->payload_len : 0;
    x->content_type = net_str(e->content_type);
    x->idempotency_key = net_str(e->idempotency_key);
    x->has_idempotency_key = e->idempotency_key != NULL;
    x->deliver_at_ns = e->deliver_at_ns;
    x->timestamp_ns = e->timestamp_ns; /* an input with ENGRAM_EVENT_TIMESTAMP */
    x->flags = e->flags;
    if (e->n_headers) {
      x->headers = &w->hp[at];
      x->n_headers = e->n_headers;
      for (size_t k = 0; k < e->n_headers; k++, at++) {
        engram__wire__header__init(&w->h[at]);
        w->h[at].name = net_str(e->headers[k].name);
        w->h[at].value = net_str(e->headers[k].value);
        w->hp[at] = &w->h[at];
      }
    }
    w->evp[i] = x;
  }
  return 0;
}

static int r_append_batch(engram *log, const char *topic, const engram_event *evs, size_t n,
                          uint64_t *offsets, int *duplicates) {
  if (!evs || !offsets)
    return log_error(NULL, ENGRAM_EINVAL, "append %s: events or offsets is NULL",
                     topic ? topic : "");
  if (n == 0) return log_error(NULL, ENGRAM_EINVAL, "append %s: empty batch", topic ? topic : "");
  if (n > NET_MAX_EVENTS)
    return log_error(NULL, ENGRAM_ETOOBIG, "append %s: batch of %zu events over limit %d",
                     topic ? topic : "", n, NET_MAX_EVENTS);
  struct wev w;
  int idem;
  int rc = client_wev_build(log, topic, evs, n, &w, &idem);
  if (rc) return rc;
  REQ(append, APPEND, Engram__Wire__Append, ENGRAM__WIRE__APPEND__INIT);
  m.topic = net_str(topic);
  m.events = w.evp;
  m.n_events = n;
  Engram__Wire__Reply *rp;
  rc = client_rpc(log, &rq, idem, 0, ENGRAM__WIRE__REPLY__RESULT_APPEND, &rp);
  client_wev_free(&w);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  if (rp->append->n_offsets != n ||
      (rp->append->n_duplicates != n && rp->append->n_duplicates != 0))
    return client_bad_reply(log, rp, "append");
  for (size_t i = 0; i < n; i++) {
    offsets[i] = rp->append->offsets[i];
    if (duplicates) duplicates[i] = rp->append->n_duplicates ? rp->append->duplicates[i] != 0 : 0;
  }
  engram__wire__reply__free_unpacked(rp, NULL);
  return 0;
}

static int r_append(engram *log, const char *topic, const engram_event *ev, uint64_t *offset,
                    int *duplicate) {
  if (!ev) return log_error(NULL, ENGRAM_EINVAL, "append %s: event is NULL", topic ? topic : "");
  uint64_t off = 0;
  int dup = 0;
  int rc = r_append_batch(log, topic, ev, 1, &off, &dup);
  if (rc) return rc;
  if (offset) *offset = off;
  if (duplicate) *duplicate = dup;
  return 0;
}

static int read_reply(engram *log, Engram__Wire__Request *rq, engram_batch **out,
                      const char *what) {
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, rq, client_retry_of(rq), 0, ENGRAM__WIRE__REPLY__RESULT_EVENTS, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  rc = batch_from_wire(log, rp->events, out);
  if (rc == -1) return client_bad_reply(log, rp, what);
  engram__wire__reply__free_unpacked(rp, NULL);
  return rc ? ENGRAM_ENOMEM : 0;
}

static int r_read(engram *log, const char *topic, uint64_t offset, engram_batch **out) {
  if (!out) return log_error(NULL, ENGRAM_EINVAL, "read: out is NULL");
  *out = NULL;
  REQ(read, READ, Engram__Wire__Read, ENGRAM__WIRE__READ__INIT);
  m.topic = net_str(topic);
  m.offset = offset;
  return read_reply(log, &rq, out, "read");
}

static int r_read_range(engram *log, const char *topic, uint64_t from, size_t max,
                        engram_batch **out) {
  if (!out) return log_error(NULL, ENGRAM_EINVAL, "read: out is NULL");
  *out = NULL;
  if (max == 0) return log_error(NULL, ENGRAM_EINVAL, "read %s: max is 0", topic ? topic : "");
  REQ(read_range, READ_RANGE, Engram__Wire__ReadRange, ENGRAM__WIRE__READ_RANGE__INIT);
  m.topic = net_str(topic);
  m.from = from;
  m.max = max;
  return read_reply(log, &rq, out, "read");
}

static int r_verify(engram *log, engram_verify_report *report) {
  if (!report) return log_error(NULL, ENGRAM_EINVAL, "verify: NULL argument");
  REQ(verify, VERIFY, Engram__Wire__Verify, ENGRAM__WIRE__VERIFY__INIT);
  (void)m;
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_VERIFY, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  memset(report, 0, sizeof *report);
  report->topics = rp->verify->topics;
  report->records = rp->verify->records;
  report->damaged = rp->verify->damaged;
  snprintf(report->first_damage, sizeof report->first_damage, "%s", rp->verify->first_damage);
  engram__wire__reply__free_unpacked(rp, NULL);
  return 0;
}

/* engram_server_info_get: the daemon's stats request (api.h). */
int net_server_info(engram *log, engram_server_info *out) {
  REQ(stats, STATS, Engram__Wire__Stats, ENGRAM__WIRE__STATS__INIT);
  (void)m;
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_STATS, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  memset(out, 0, sizeof *out);
  const Engram__Wire__StatsResult *st = rp->stats;
  if (net_copy_text(out->version, sizeof out->version, st->version)) {
    engram__wire__reply__free_unpacked(rp, NULL);
    return log_error(NULL, ENGRAM_EPROTO, "server info: version text too long");
  }
#define X(type, name) out->name = (type)st->name;
  ENGRAM_SERVER_INFO_FIELDS(X)
#undef X
  engram__wire__reply__free_unpacked(rp, NULL);
  return 0;
}

static int r_group_create(engram *log, const char *topic, const char *group,
                          const engram_group_config *cfg) {
  REQ(group_create, GROUP_CREATE, Engram__Wire__GroupCreate, ENGRAM__WIRE__GROUP_CREATE__INIT);
  Engram__Wire__GroupConfig wc = ENGRAM__WIRE__GROUP_CONFIG__INIT;
  m.topic = net_str(topic);
  m.group = net_str(group);
  if (cfg) {
    if (cfg->n_filters > ENGRAM_MAX_FILTERS || (cfg->n_filters && !cfg->filters))
      return log_error(NULL, ENGRAM_EINVAL, "group create %s/%s: filters invalid (at most %d)",
                       net_str(topic), net_str(group), ENGRAM_MAX_FILTERS);
    if (cfg->n_backoff > ENGRAM_MAX_BACKOFF || (cfg->n_backoff && !cfg->backoff_ms))
      return log_error(NULL, ENGRAM_EINVAL,
                       "group create %s/%s: backoff invalid (at most %d steps)", net_str(topic),
                       net_str(group), ENGRAM_MAX_BACKOFF);
    for (size_t i = 0; i < cfg->n_filters; i++)
      if (!cfg->filters[i])
        return log_error(NULL, ENGRAM_EINVAL, "group create %s/%s: filter %zu is NULL",
                         net_str(topic), net_str(group), i);
    if ((unsigned)cfg->start > ENGRAM_START_TIME)
      return log_error(NULL, ENGRAM_EINVAL, "group create %s/%s: unknown start %d", net_str(topic),
                       net_str(group), (int)cfg->start);
    wc.filters = (char **)cfg->filters;
    wc.n_filters = cfg->n_filters;
    wc.start = (Engram__Wire__Start)cfg->start;
    wc.start_offset = cfg->start_offset;
    wc.start_time_ns = cfg->start_time_ns;
    wc.ack_wait_ms = cfg->ack_wait_ms;
    wc.max_deliver = cfg->max_deliver;
    wc.backoff_ms = (uint64_t *)cfg->backoff_ms;
    wc.n_backoff_ms = cfg->n_backoff;
    wc.result_ttl_ms = cfg->result_ttl_ms;
    wc.flags = cfg->flags;
    m.config = &wc;
  }
  return client_call(log, &rq);
}

static int r_group_info_get(engram *log, const char *topic, const char *group,
                            engram_group_info *info) {
  if (!info) return log_error(NULL, ENGRAM_EINVAL, "group info: info is NULL");
  REQ(group_get, GROUP_GET, Engram__Wire__GroupGet, ENGRAM__WIRE__GROUP_GET__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  Engram__Wire__Reply *rp;
  int rc =
      client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_GROUP_INFO, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  if (group_from_wire(rp->group_info, info)) return client_bad_reply(log, rp, "group info");
  engram__wire__reply__free_unpacked(rp, NULL);
  return 0;
}

static int r_group_list(engram *log, const char *topic, engram_group_info **out, size_t *n) {
  if (!out || !n) return log_error(NULL, ENGRAM_EINVAL, "group list: NULL argument");
  *out = NULL;
  *n = 0;
  REQ(group_list, GROUP_LIST, Engram__Wire__GroupList, ENGRAM__WIRE__GROUP_LIST__INIT);
  m.topic = net_str(topic);
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_GROUPS, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  size_t k = rp->groups->n_groups;
  engram_group_info *list = calloc(k ? k : 1, sizeof *list);
  if (!list) {
    engram__wire__reply__free_unpacked(rp, NULL);
    return log_error(NULL, ENGRAM_ENOMEM, "group list: out of memory");
  }
  for (size_t i = 0; i < k; i++) {
    if (group_from_wire(rp->groups->groups[i], &list[i])) {
      free(list);
      return client_bad_reply(log, rp, "group list");
    }
  }
  engram__wire__reply__free_unpacked(rp, NULL);
  *out = list;
  *n = k;
  return 0;
}

static int r_group_delete(engram *log, const char *topic, const char *group) {
  REQ(group_delete, GROUP_DELETE, Engram__Wire__GroupDelete, ENGRAM__WIRE__GROUP_DELETE__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  return client_call(log, &rq);
}

static int r_group_reset(engram *log, const char *topic, const char *group, engram_start to,
                         uint64_t offset, int64_t time_ns) {
  if ((unsigned)to > ENGRAM_START_TIME)
    return log_error(NULL, ENGRAM_EINVAL, "group reset %s/%s: unknown position %d", net_str(topic),
                     net_str(group), (int)to);
  REQ(group_reset, GROUP_RESET, Engram__Wire__GroupReset, ENGRAM__WIRE__GROUP_RESET__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.to = (Engram__Wire__Start)to;
  m.offset = offset;
  m.time_ns = time_ns;
  return client_call(log, &rq);
}

static int r_fetch(engram *log, const char *topic, const char *group, const char *consumer,
                   size_t max, uint64_t wait_ms, engram_batch **out) {
  if (!out) return log_error(NULL, ENGRAM_EINVAL, "fetch: out is NULL");
  *out = NULL;
  if (max > UINT32_MAX) max = UINT32_MAX; /* the daemon refuses it with the embedded message */
  if (wait_ms > ENGRAM_MAX_FETCH_WAIT_MS)
    return log_error(NULL, ENGRAM_EINVAL, "fetch %s/%s: wait %llu ms over the limit of %u (1 hour)",
                     net_str(topic), net_str(group), (unsigned long long)wait_ms,
                     ENGRAM_MAX_FETCH_WAIT_MS);
  REQ(fetch, FETCH, Engram__Wire__Fetch, ENGRAM__WIRE__FETCH__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.consumer = net_str(consumer);
  m.max = (uint32_t)max;
  m.wait_ms = wait_ms;
  Engram__Wire__Reply *rp;
  int rc =
      client_rpc(log, &rq, client_retry_of(&rq), wait_ms, ENGRAM__WIRE__REPLY__RESULT_EVENTS, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  rc = batch_from_wire(log, rp->events, out);
  if (rc == -1) return client_bad_reply(log, rp, "fetch");
  engram__wire__reply__free_unpacked(rp, NULL);
  return rc ? ENGRAM_ENOMEM : 0;
}

/* The wire items of n acks, pointing into items (*wi and *wp freed by the caller, also on
 * failure). what opens the message. */
static int acks_to_wire(const char *what, const char *topic, const char *group,
                        const engram_ack_item *items, size_t n, Engram__Wire__AckItem **wi,
                        Engram__Wire__AckItem ***wp) {
  *wi = calloc(n ? n : 1, sizeof **wi);
  *wp = calloc(n ? n : 1, sizeof **wp);
  if (!*wi || !*wp) return log_error(NULL, ENGRAM_ENOMEM, "%s: out of memory", what);
  for (size_t i = 0; i < n; i++) {
    Engram__Wire__AckItem *w = &(*wi)[i];
    engram__wire__ack_item__init(w);
    w->offset = items[i].offset;
    w->attempt = items[i].attempt;
    if (items[i].result) {
      w->has_result = 1;
      w->result.data = (uint8_t *)items[i].result;
      w->result.len = items[i].result_len;
    } else if (items[i].result_len) {
      return log_error(NULL, ENGRAM_EINVAL, "%s %s/%s: result is NULL but result_len is %zu", what,
                       net_str(topic), net_str(group), items[i].result_len);
    }
    (*wp)[i] = w;
  }
  return 0;
}

/* Copies the per-item codes of an AckResult reply; codes the daemon's call left unset come
 * as 1 and stay unset here too. Returns 0, or -1 when the reply holds no such codes. */
static int codes_from_wire(const Engram__Wire__Reply *rp, size_t n, int *codes) {
  if (rp->result_case != ENGRAM__WIRE__REPLY__RESULT_ACK || rp->ack->n_codes != n) return -1;
  if (codes)
    for (size_t i = 0; i < n; i++)
      if (rp->ack->codes[i] <= 0) codes[i] = rp->ack->codes[i];
  return 0;
}

static int r_ack_many(engram *log, const char *topic, const char *group,
                      const engram_ack_item *items, size_t n, int *codes) {
  if (!items || n == 0) return log_error(NULL, ENGRAM_EINVAL, "ack: no items");
  if (n > NET_MAX_ITEMS)
    return log_error(NULL, ENGRAM_ETOOBIG, "ack: %zu items over limit %d", n, NET_MAX_ITEMS);
  Engram__Wire__AckItem *wi, **wp;
  int rc = acks_to_wire("ack", topic, group, items, n, &wi, &wp);
  if (rc) {
    free(wi);
    free(wp);
    return rc;
  }
  REQ(ack, ACK, Engram__Wire__Ack, ENGRAM__WIRE__ACK__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.items = wp;
  m.n_items = n;
  Engram__Wire__Reply *rp;
  rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_ACK, &rp);
  free(wi);
  free(wp);
  if (rp && codes_from_wire(rp, n, codes) && rc == 0) return client_bad_reply(log, rp, "ack");
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  return rc;
}

static int r_ack_fetch(engram *log, const char *topic, const char *group, const char *consumer,
                       const engram_ack_item *acks, size_t n_acks, int *codes, size_t max,
                       uint64_t wait_ms, engram_batch **out) {
  if (!out) return log_error(NULL, ENGRAM_EINVAL, "ack-fetch: out is NULL");
  *out = NULL;
  if (max > UINT32_MAX) max = UINT32_MAX; /* the daemon refuses it with the embedded message */
  if (wait_ms > ENGRAM_MAX_FETCH_WAIT_MS)
    return log_error(NULL, ENGRAM_EINVAL,
                     "ack-fetch %s/%s: wait %llu ms over the limit of %u (1 hour)", net_str(topic),
                     net_str(group), (unsigned long long)wait_ms, ENGRAM_MAX_FETCH_WAIT_MS);
  Engram__Wire__AckItem *wi, **wp;
  int rc = acks_to_wire("ack-fetch", topic, group, acks, n_acks, &wi, &wp);
  if (rc) {
    free(wi);
    free(wp);
    return rc;
  }
  REQ(ack_fetch, ACK_FETCH, Engram__Wire__AckFetch, ENGRAM__WIRE__ACK_FETCH__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.consumer = net_str(consumer);
  m.items = wp;
  m.n_items = n_acks;
  m.max = (uint32_t)max;
  m.wait_ms = wait_ms;
  Engram__Wire__Reply *rp;
  rc = client_rpc(log, &rq, client_retry_of(&rq), wait_ms, ENGRAM__WIRE__REPLY__RESULT_EVENTS, &rp);
  free(wi);
  free(wp);
  if (rc) {
    if (rp) {
      codes_from_wire(rp, n_acks, codes); /* a failing call's codes, when it got to the acks */
      engram__wire__reply__free_unpacked(rp, NULL);
    }
    return rc;
  }
  rc = batch_from_wire(log, rp->events, out);
  if (rc == -1) return client_bad_reply(log, rp, "ack-fetch");
  engram__wire__reply__free_unpacked(rp, NULL);
  if (rc == 0 && codes)
    for (size_t i = 0; i < n_acks; i++) codes[i] = 0;
  return rc ? ENGRAM_ENOMEM : 0;
}

static int r_nack(engram *log, const char *topic, const char *group, uint64_t offset,
                  uint32_t attempt, int64_t delay_ms, const char *error) {
  REQ(nack, NACK, Engram__Wire__Nack, ENGRAM__WIRE__NACK__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.offset = offset;
  m.attempt = attempt;
  m.delay_ms = delay_ms;
  m.has_error = error != NULL;
  m.error = net_str(error);
  return client_call(log, &rq);
}

static int r_reject(engram *log, const char *topic, const char *group, uint64_t offset,
                    uint32_t attempt, const char *reason) {
  REQ(reject, REJECT, Engram__Wire__Reject, ENGRAM__WIRE__REJECT__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.offset = offset;
  m.attempt = attempt;
  m.has_reason = reason != NULL;
  m.reason = net_str(reason);
  return client_call(log, &rq);
}

static int r_extend(engram *log, const char *topic, const char *group, uint64_t offset,
                    uint32_t attempt, uint64_t ms) {
  REQ(extend, EXTEND, Engram__Wire__Extend, ENGRAM__WIRE__EXTEND__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.offset = offset;
  m.attempt = attempt;
  m.ms = ms;
  return client_call(log, &rq);
}

static int r_cancel(engram *log, const char *topic, const char *group, uint64_t offset) {
  REQ(cancel, CANCEL, Engram__Wire__Cancel, ENGRAM__WIRE__CANCEL__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.offset = offset;
  return client_call(log, &rq);
}

static int r_status_get(engram *log, const char *topic, const char *group, uint64_t offset,
                        engram_status *st) {
  if (!st) return log_error(NULL, ENGRAM_EINVAL, "status: st is NULL");
  memset(st, 0, sizeof *st);
  REQ(status_get, STATUS_GET, Engram__Wire__StatusGet, ENGRAM__WIRE__STATUS_GET__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.offset = offset;
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_STATUS, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  const Engram__Wire__Status *w = rp->status;
  if (w->state > ENGRAM_STATE_SKIPPED ||
      net_copy_text(st->consumer, sizeof st->consumer, w->consumer))
    return client_bad_reply(log, rp, "status");
  st->state = (engram_event_state)w->state;
  st->attempt = w->attempt;
  st->deadline_ns = w->deadline_ns;
  snprintf(st->last_error, sizeof st->last_error, "%s", w->last_error);
  if (w->has_result) {
    st->result = malloc(w->result.len + 1);
    if (!st->result) {
      engram__wire__reply__free_unpacked(rp, NULL);
      return log_error(NULL, ENGRAM_ENOMEM, "status: out of memory");
    }
    if (w->result.len) memcpy(st->result, w->result.data, w->result.len);
    ((char *)st->result)[w->result.len] = '\0';
    st->result_len = w->result.len;
  }
  engram__wire__reply__free_unpacked(rp, NULL);
  return 0;
}

static int r_dlq_list(engram *log, const char *topic, const char *group, uint64_t from, size_t max,
                      engram_dlq_entry **out, size_t *n) {
  if (!out || !n) return log_error(NULL, ENGRAM_EINVAL, "dlq list: NULL argument");
  *out = NULL;
  *n = 0;
  REQ(dlq_list, DLQ_LIST, Engram__Wire__DlqList, ENGRAM__WIRE__DLQ_LIST__INIT);
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.from = from;
  m.max = max;
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_DLQ, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  size_t k = rp->dlq->n_entries;
  engram_dlq_entry *list = calloc(k ? k : 1, sizeof *list);
  if (!list) {
    engram__wire__reply__free_unpacked(rp, NULL);
    return log_error(NULL, ENGRAM_ENOMEM, "dlq list: out of memory");
  }
  for (size_t i = 0; i < k; i++) {
    const Engram__Wire__DlqEntry *e = rp->dlq->entries[i];
    if (net_copy_text(list[i].consumer, sizeof list[i].consumer, e->consumer)) {
      free(list);
      return client_bad_reply(log, rp, "dlq list");
    }
    /* Text that does not fit is cut, except the consumer's name (checked above). */
#define NUM(type, name) list[i].name = (type)e->name;
#define TEXT(size, name) snprintf(list[i].name, sizeof list[i].name, "%s", e->name);
    ENGRAM_DLQ_ENTRY_FIELDS(NUM, TEXT)
#undef NUM
#undef TEXT
  }
  engram__wire__reply__free_unpacked(rp, NULL);
  *out = list;
  *n = k;
  return 0;
}

static int dlq_select(engram *log, int redrive, const char *topic, const char *group,
                      const uint64_t *offsets, size_t n, size_t *count) {
  if (offsets && n == 0) {
    if (count) *count = 0;
    return 0;
  }
  if (n > NET_MAX_OFFSETS)
    return log_error(NULL, ENGRAM_ETOOBIG, "dlq: %zu offsets over limit %d", n, NET_MAX_OFFSETS);
  Engram__Wire__Request rq = ENGRAM__WIRE__REQUEST__INIT;
  Engram__Wire__DlqSelect m = ENGRAM__WIRE__DLQ_SELECT__INIT;
  if (redrive) {
    rq.op_case = ENGRAM__WIRE__REQUEST__OP_DLQ_REDRIVE;
    rq.dlq_redrive = &m;
  } else {
    rq.op_case = ENGRAM__WIRE__REQUEST__OP_DLQ_PURGE;
    rq.dlq_purge = &m;
  }
  m.topic = net_str(topic);
  m.group = net_str(group);
  m.all = offsets == NULL;
  m.offsets = (uint64_t *)offsets;
  m.n_offsets = offsets ? n : 0;
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_COUNT, &rp);
  if (!rc && count) *count = (size_t)rp->count;
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  return rc;
}

static int r_dlq_purge(engram *log, const char *topic, const char *group, const uint64_t *offsets,
                       size_t n, size_t *count) {
  return dlq_select(log, 0, topic, group, offsets, n, count);
}

static int r_dlq_redrive(engram *log, const char *topic, const char *group, const uint64_t *offsets,
                         size_t n, size_t *count) {
  return dlq_select(log, 1, topic, group, offsets, n, count);
}

/* One operation of a transaction on the wire, pointing into the engram_txn's copies. */
struct txop {
  Engram__Wire__TxnOp op;
  Engram__Wire__TxnAck ack;
  Engram__Wire__AckItem item;
  Engram__Wire__TxnAppend app;
  struct wev w;
  int built; /* w holds allocations to free */
  uint64_t *out;
};

struct txbuild {
  engram *log;
  struct txop *ops;
  Engram__Wire__TxnOp **opp;
  size_t n, napp;
};

static int tx_add(void *ctx, const txn_op_view *v) {
  struct txbuild *b = ctx;
  struct txop *t = &b->ops[b->n];
  engram__wire__txn_op__init(&t->op);
  if (v->is_append) {
    int idem;
    int rc = client_wev_build(b->log, v->topic, v->event, 1, &t->w, &idem);
    if (rc) return rc;
    t->built = 1;
    engram__wire__txn_append__init(&t->app);
    t->app.topic = net_str(v->topic);
    t->app.event = t->w.evp[0];
    t->op.op_case = ENGRAM__WIRE__TXN_OP__OP_APPEND;
    t->op.append = &t->app;
    t->out = v->offset_out;
    b->napp++;
  } else {
    engram__wire__ack_item__init(&t->item);
    t->item.offset = v->offset;
    t->item.attempt = v->attempt;
    if (v->result) {
      t->item.has_result = 1;
      t->item.result.data = (uint8_t *)v->result;
      t->item.result.len = v->result_len;
    }
    engram__wire__txn_ack__init(&t->ack);
    t->ack.topic = net_str(v->topic);
    t->ack.group = net_str(v->group);
    t->ack.item = &t->item;
    t->op.op_case = ENGRAM__WIRE__TXN_OP__OP_ACK;
    t->op.ack = &t->ack;
  }
  b->opp[b->n++] = &t->op;
  return 0;
}

/* The daemon applies the whole transaction in one LMDB write transaction (ops.c), so a
 * failure there applies nothing. Not repeated after a lost connection: it may have been
 * applied. */
static int r_txn_commit(engram *log, const struct engram_txn *txn) {
  size_t n = txn_count(txn);
  if (n == 0) { /* as embedded: nothing to apply */
    log_error_clear(NULL);
    return 0;
  }
  if (n > NET_MAX_ITEMS)
    return log_error(NULL, ENGRAM_ETOOBIG, "txn commit: %zu operations over limit %d", n,
                     NET_MAX_ITEMS);
  struct txbuild b = {.log = log, .ops = calloc(n, sizeof *b.ops), .opp = calloc(n, sizeof *b.opp)};
  int rc;
  if (!b.ops || !b.opp) {
    rc = log_error(NULL, ENGRAM_ENOMEM, "txn commit: out of memory");
    goto out;
  }
  rc = txn_each(txn, tx_add, &b);
  if (rc) goto out;
  REQ(txn_commit, TXN_COMMIT, Engram__Wire__TxnCommit, ENGRAM__WIRE__TXN_COMMIT__INIT);
  m.ops = b.opp;
  m.n_ops = b.n;
  Engram__Wire__Reply *rp;
  rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_TXN, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    goto out;
  }
  if (rp->txn->n_offsets != b.napp) {
    rc = client_bad_reply(log, rp, "txn commit");
    goto out;
  }
  for (size_t i = 0, k = 0; i < b.n; i++)
    if (b.ops[i].op.op_case == ENGRAM__WIRE__TXN_OP__OP_APPEND) {
      if (b.ops[i].out) *b.ops[i].out = rp->txn->offsets[k];
      k++;
    }
  engram__wire__reply__free_unpacked(rp, NULL);
out:
  if (b.ops)
    for (size_t i = 0; i < b.n; i++)
      if (b.ops[i].built) client_wev_free(&b.ops[i].w);
  free(b.ops);
  free(b.opp);
  return rc;
}

static int r_worker_heartbeat(engram *log, const engram_worker_info *w) {
  REQ(worker_heartbeat, WORKER_HEARTBEAT, Engram__Wire__WorkerHeartbeat,
      ENGRAM__WIRE__WORKER_HEARTBEAT__INIT);
  net_arena a = {0};
  m.worker = net_worker_to_wire(&a, w);
  int rc = m.worker ? client_call(log, &rq)
                    : log_error(NULL, ENGRAM_ENOMEM, "worker heartbeat: out of memory");
  net_arena_free(&a);
  return rc;
}

static int r_worker_list(engram *log, uint64_t lost_after_ms, engram_worker_info **out, size_t *n) {
  REQ(worker_list, WORKER_LIST, Engram__Wire__WorkerList, ENGRAM__WIRE__WORKER_LIST__INIT);
  m.lost_after_ms = lost_after_ms;
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_WORKERS, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  size_t k = rp->workers->n_workers;
  engram_worker_info *list = calloc(k ? k : 1, sizeof *list);
  if (!list) {
    engram__wire__reply__free_unpacked(rp, NULL);
    return log_error(NULL, ENGRAM_ENOMEM, "worker list: out of memory");
  }
  for (size_t i = 0; i < k; i++)
    if (net_worker_from_wire(rp->workers->workers[i], &list[i])) {
      free(list);
      return client_bad_reply(log, rp, "worker list");
    }
  engram__wire__reply__free_unpacked(rp, NULL);
  *out = list;
  *n = k;
  return 0;
}

static int r_worker_forget(engram *log, const char *name) {
  REQ(worker_forget, WORKER_FORGET, Engram__Wire__WorkerForget, ENGRAM__WIRE__WORKER_FORGET__INIT);
  m.name = net_str(name);
  return client_call(log, &rq);
}

static int r_rate_list(engram *log, const char *topic, engram_rate_info **out, size_t *n) {
  REQ(rate_list, RATE_LIST, Engram__Wire__RateList, ENGRAM__WIRE__RATE_LIST__INIT);
  m.topic = net_str(topic);
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_RATES, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  size_t k = rp->rates->n_rates;
  engram_rate_info *list = calloc(k ? k : 1, sizeof *list);
  if (!list) {
    engram__wire__reply__free_unpacked(rp, NULL);
    return log_error(NULL, ENGRAM_ENOMEM, "rate list: out of memory");
  }
  for (size_t i = 0; i < k; i++) {
    const Engram__Wire__RateInfo *w = rp->rates->rates[i];
    int bad = net_copy_text(list[i].topic, sizeof list[i].topic, w->topic) ||
              net_copy_text(list[i].group, sizeof list[i].group, w->group);
#define X(type, name)                                   \
  if (w->n_##name == ENGRAM_RATE_WINDOWS)               \
    memcpy(list[i].name, w->name, sizeof list[i].name); \
  else if (w->n_##name != 0)                            \
    bad = 1;
    ENGRAM_RATE_FIELDS(X)
#undef X
    if (bad) {
      free(list);
      return client_bad_reply(log, rp, "rate list");
    }
  }
  engram__wire__reply__free_unpacked(rp, NULL);
  *out = list;
  *n = k;
  return 0;
}

/* Schedules. */
static int sched_set(engram *log, int add, const char *name, const engram_schedule_config *cfg,
                     int *changed) {
  Engram__Wire__Request rq = ENGRAM__WIRE__REQUEST__INIT;
  Engram__Wire__ScheduleSet m = ENGRAM__WIRE__SCHEDULE_SET__INIT;
  if (add) {
    rq.op_case = ENGRAM__WIRE__REQUEST__OP_SCHEDULE_ADD;
    rq.schedule_add = &m;
  } else {
    rq.op_case = ENGRAM__WIRE__REQUEST__OP_SCHEDULE_SET;
    rq.schedule_set = &m;
  }
  net_arena a = {0};
  m.name = net_str(name);
  m.config = net_schedule_config_to_wire(&a, cfg);
  if (!m.config) {
    net_arena_free(&a);
    return log_error(NULL, ENGRAM_ENOMEM, "schedule %s: out of memory", name);
  }
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_COUNT, &rp);
  net_arena_free(&a);
  if (!rc && changed) *changed = (int)rp->count;
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  return rc;
}

static int r_schedule_add(engram *log, const char *name, const engram_schedule_config *cfg) {
  return sched_set(log, 1, name, cfg, NULL);
}

static int r_schedule_set(engram *log, const char *name, const engram_schedule_config *cfg,
                          int *changed) {
  return sched_set(log, 0, name, cfg, changed);
}

/* Infos of a reply into one allocation, as the embedded backend returns them. */
static int sched_infos(engram *log, Engram__Wire__Reply *rp, Engram__Wire__ScheduleInfo **w,
                       size_t n, engram_schedule_info **out, const char *what) {
  engram_schedule_info *tmp = calloc(n ? n : 1, sizeof *tmp);
  engram_header *hs = calloc((n ? n : 1) * ENGRAM_MAX_HEADERS, sizeof *hs);
  int rc = 0;
  if (!tmp || !hs) {
    rc = log_error(NULL, ENGRAM_ENOMEM, "%s: out of memory", what);
  } else {
    for (size_t i = 0; i < n && !rc; i++)
      if (net_schedule_from_wire(w[i], &tmp[i], hs + i * ENGRAM_MAX_HEADERS)) {
        free(tmp);
        free(hs);
        return client_bad_reply(log, rp, what);
      }
    rc = cg_schedule_infos_copy(tmp, n, out);
  }
  free(tmp);
  free(hs);
  engram__wire__reply__free_unpacked(rp, NULL);
  return rc;
}

static int r_schedule_get(engram *log, const char *name, engram_schedule_info **out) {
  REQ(schedule_get, SCHEDULE_GET, Engram__Wire__ScheduleName, ENGRAM__WIRE__SCHEDULE_NAME__INIT);
  m.name = net_str(name);
  Engram__Wire__Reply *rp;
  int rc =
      client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_SCHEDULE_INFO, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  return sched_infos(log, rp, &rp->schedule_info, 1, out, "schedule get");
}

static int r_schedule_list(engram *log, engram_schedule_info **out, size_t *n) {
  REQ(schedule_list, SCHEDULE_LIST, Engram__Wire__ScheduleList, ENGRAM__WIRE__SCHEDULE_LIST__INIT);
  Engram__Wire__Reply *rp;
  int rc =
      client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_SCHEDULES, &rp);
  if (rc) {
    if (rp) engram__wire__reply__free_unpacked(rp, NULL);
    return rc;
  }
  size_t k = rp->schedules->n_schedules;
  rc = sched_infos(log, rp, rp->schedules->schedules, k, out, "schedule list");
  if (!rc) *n = k;
  return rc;
}

static int sched_op(engram *log, int op, const char *name, uint64_t *offset) {
  Engram__Wire__Request rq = ENGRAM__WIRE__REQUEST__INIT;
  Engram__Wire__ScheduleName m = ENGRAM__WIRE__SCHEDULE_NAME__INIT;
  m.name = net_str(name);
  rq.op_case = op;
  switch (op) {
    case ENGRAM__WIRE__REQUEST__OP_SCHEDULE_REMOVE:
      rq.schedule_remove = &m;
      break;
    case ENGRAM__WIRE__REQUEST__OP_SCHEDULE_PAUSE:
      rq.schedule_pause = &m;
      break;
    case ENGRAM__WIRE__REQUEST__OP_SCHEDULE_RESUME:
      rq.schedule_resume = &m;
      break;
    default:
      rq.schedule_run_now = &m;
      break;
  }
  Engram__Wire__Reply *rp;
  int rc = client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_COUNT, &rp);
  if (!rc && offset) *offset = rp->count;
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  return rc;
}

static int r_schedule_remove(engram *log, const char *name) {
  return sched_op(log, ENGRAM__WIRE__REQUEST__OP_SCHEDULE_REMOVE, name, NULL);
}
static int r_schedule_pause(engram *log, const char *name) {
  return sched_op(log, ENGRAM__WIRE__REQUEST__OP_SCHEDULE_PAUSE, name, NULL);
}
static int r_schedule_resume(engram *log, const char *name) {
  return sched_op(log, ENGRAM__WIRE__REQUEST__OP_SCHEDULE_RESUME, name, NULL);
}
static int r_schedule_run_now(engram *log, const char *name, uint64_t *offset) {
  return sched_op(log, ENGRAM__WIRE__REQUEST__OP_SCHEDULE_RUN_NOW, name, offset);
}

static int r_schedule_tick(engram *log, int64_t now_ns, engram_schedule_tick_report *report) {
  REQ(schedule_tick, SCHEDULE_TICK, Engram__Wire__ScheduleTick, ENGRAM__WIRE__SCHEDULE_TICK__INIT);
  m.now_ns = now_ns;
  Engram__Wire__Reply *rp;
  int rc =
      client_rpc(log, &rq, client_retry_of(&rq), 0, ENGRAM__WIRE__REPLY__RESULT_SCHEDULE_TICK, &rp);
  if (!rc && report) {
    report->fired = rp->schedule_tick->fired;
    report->skipped = rp->schedule_tick->skipped;
    report->failed = rp->schedule_tick->failed;
    report->next_due_ns = rp->schedule_tick->next_due_ns;
    snprintf(report->first_error, sizeof report->first_error, "%s",
             net_str(rp->schedule_tick->first_error));
  }
  if (rp) engram__wire__reply__free_unpacked(rp, NULL);
  return rc;
}

const struct engram_backend net_remote = {
    .name = "remote",
    .close = r_close,
    .sync = r_sync,
    .backup = r_backup,
    .topic_create = r_topic_create,
    .topic_info_get = r_topic_info_get,
    .topic_list = r_topic_list,
    .topic_drop = r_topic_drop,
    .topic_train_dict = r_topic_train_dict,
    .topic_set = r_topic_set,
    .compact = r_compact,
    .log_info = r_log_info,
    .space = r_space,
    .ack_fetch = r_ack_fetch,
    .append = r_append,
    .append_batch = r_append_batch,
    .read = r_read,
    .read_range = r_read_range,
    .verify = r_verify,
    .group_create = r_group_create,
    .group_info_get = r_group_info_get,
    .group_list = r_group_list,
    .group_delete = r_group_delete,
    .group_reset = r_group_reset,
    .fetch = r_fetch,
    .ack_many = r_ack_many,
    .nack = r_nack,
    .reject = r_reject,
    .extend = r_extend,
    .cancel = r_cancel,
    .status_get = r_status_get,
    .dlq_list = r_dlq_list,
    .dlq_purge = r_dlq_purge,
    .dlq_redrive = r_dlq_redrive,
    .append_async = client_append_async,
    .append_wait = client_append_wait,
    .txn_commit = r_txn_commit,
    .worker_heartbeat = r_worker_heartbeat,
    .worker_list = r_worker_list,
    .worker_forget = r_worker_forget,
    .rate_list = r_rate_list,
    .schedule_add = r_schedule_add,
    .schedule_set = r_schedule_set,
    .schedule_get = r_schedule_get,
    .schedule_list = r_schedule_list,
    .schedule_remove = r_schedule_remove,
    .schedule_pause = r_schedule_pause,
    .schedule_resume = r_schedule_resume,
    .schedule_run_now = r_schedule_run_now,
    .schedule_tick = r_schedule_tick,
};
