/* ops.c — the daemon runs one decoded request on its embedded handle through the public
 * API and builds the reply; so a remote call has exactly the embedded semantics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/net.h"

typedef Engram__Wire__Reply Reply;

static char *adup(net_arena *a, const char *s) {
  size_t n = strlen(s);
  char *d = net_arena_alloc(a, n + 1);
  if (d) memcpy(d, s, n + 1);
  return d ? d : (char *)"";
}

static Engram__Wire__TopicInfo *topic_to_wire(net_arena *a, const engram_topic_info *t) {
  Engram__Wire__TopicInfo *w = net_arena_alloc(a, sizeof *w);
  Engram__Wire__TopicConfig *c = net_arena_alloc(a, sizeof *c);
  if (!w || !c) return NULL;
  engram__wire__topic_info__init(w);
  engram__wire__topic_config__init(c);
  w->name = adup(a, t->name);
  c->compress_threshold = t->config.compress_threshold;
  c->max_payload = t->config.max_payload;
  c->dict_train_after = t->config.dict_train_after;
  c->flags = t->config.flags;
#define X(type, name) c->name = t->config.name;
  ENGRAM_TOPIC_RETENTION_FIELDS(X)
#undef X
  c->tombstone_type = adup(a, t->config.tombstone_type);
  w->config = c;
#define X(type, name) w->name = t->name;
  ENGRAM_TOPIC_INFO_FIELDS(X)
#undef X
  return w;
}

static Engram__Wire__GroupInfo *group_to_wire(net_arena *a, const engram_group_info *g) {
  Engram__Wire__GroupInfo *w = net_arena_alloc(a, sizeof *w);
  if (!w) return NULL;
  engram__wire__group_info__init(w);
  w->topic = adup(a, g->topic);
  w->name = adup(a, g->name);
  size_t nf = g->n_filters > ENGRAM_MAX_FILTERS ? ENGRAM_MAX_FILTERS : g->n_filters;
  size_t nb = g->n_backoff > ENGRAM_MAX_BACKOFF ? ENGRAM_MAX_BACKOFF : g->n_backoff;
  if (nf) {
    w->filters = net_arena_alloc(a, nf * sizeof *w->filters);
    if (!w->filters) return NULL;
    for (size_t i = 0; i < nf; i++) w->filters[i] = adup(a, g->filters[i]);
    w->n_filters = nf;
  }
  if (nb) {
    w->backoff_ms = net_arena_alloc(a, nb * sizeof *w->backoff_ms);
    if (!w->backoff_ms) return NULL;
    memcpy(w->backoff_ms, g->backoff_ms, nb * sizeof *w->backoff_ms);
    w->n_backoff_ms = nb;
  }
  w->ack_wait_ms = g->ack_wait_ms;
  w->max_deliver = g->max_deliver;
  w->result_ttl_ms = g->result_ttl_ms;
  w->flags = g->flags;
  w->created_ns = g->created_ns;
#define X(type, name) w->name = g->name;
  ENGRAM_GROUP_INFO_COUNTERS(X)
#undef X
  return w;
}

/* Events of a batch; the reply points into the batch, which the caller frees after
 * packing. `limit` bytes of payload at most (a read may stop early; never below one). */
static Engram__Wire__Events *events_to_wire(net_arena *a, const engram_batch *b, const char *topic,
                                            int with_attempt, size_t limit) {
  Engram__Wire__Events *w = net_arena_alloc(a, sizeof *w);
  if (!w) return NULL;
  engram__wire__events__init(w);
  w->topic = net_str(b->count ? b->events[0].topic : topic);
  w->from = b->from;
  w->next = b->next;
  w->removed = b->removed;
  if (!b->count) return w;
  w->events = net_arena_alloc(a, b->count * sizeof *w->events);
  if (!w->events) return NULL;
  size_t bytes = 0;
  for (size_t i = 0; i < b->count; i++) {
    bytes += b->events[i].payload_len;
    if (i > 0 && bytes > limit) break;
    if (!(w->events[i] = net_event_to_wire(a, &b->events[i], with_attempt))) return NULL;
    w->n_events = i + 1;
  }
  if (w->n_events < b->count && b->next) {
    /* Cut short: the covered range ends after the last event sent. */
    w->next = b->events[w->n_events - 1].offset + 1;
    w->removed = w->next - w->from - w->n_events;
  }
  return w;
}

static int group_cfg_from_wire(const Engram__Wire__GroupConfig *w, engram_group_config *c) {
  memset(c, 0, sizeof *c);
  c->filters = (const char *const *)w->filters;
  c->n_filters = w->n_filters;
  c->start = (engram_start)w->start;
  c->start_offset = w->start_offset;
  c->start_time_ns = w->start_time_ns;
  c->ack_wait_ms = w->ack_wait_ms;
  c->max_deliver = w->max_deliver;
  c->backoff_ms = w->backoff_ms;
  c->n_backoff = w->n_backoff_ms;
  c->result_ttl_ms = w->result_ttl_ms;
  c->flags = w->flags;
  return 0;
}

static engram_ack_item *acks_from_wire(net_arena *a, Engram__Wire__AckItem *const *w, size_t n) {
  engram_ack_item *it = net_arena_alloc(a, (n ? n : 1) * sizeof *it);
  if (!it) return NULL;
  for (size_t i = 0; i < n; i++) {
    it[i].offset = w[i]->offset;
    it[i].attempt = w[i]->attempt;
    it[i].result =
        w[i]->has_result ? (w[i]->result.data ? (const void *)w[i]->result.data : "") : NULL;
    it[i].result_len = w[i]->has_result ? w[i]->result.len : 0;
  }
  return it;
}

static int nomem(engram *log) {
  return log_error(NULL, ENGRAM_ENOMEM, "daemon: out of memory for the reply");
}

static int run_txn(engram *log, net_arena *a, const Engram__Wire__TxnCommit *t, Reply *rp) {
  size_t napp = 0;
  for (size_t i = 0; i < t->n_ops; i++)
    napp += t->ops[i]->op_case == ENGRAM__WIRE__TXN_OP__OP_APPEND;
  Engram__Wire__TxnResult *res = net_arena_alloc(a, sizeof *res);
  uint64_t *offs = net_arena_alloc(a, (napp ? napp : 1) * sizeof *offs);
  if (!res || !offs) return nomem(log);
  engram__wire__txn_result__init(res);
  engram_txn *txn;
  int rc = engram_txn_begin(log, &txn);
  if (rc) return rc;
  size_t k = 0;
  for (size_t i = 0; i < t->n_ops && rc == 0; i++) {
    const Engram__Wire__TxnOp *o = t->ops[i];
    if (o->op_case == ENGRAM__WIRE__TXN_OP__OP_ACK) {
      const Engram__Wire__AckItem *it = o->ack->item;
      rc = engram_txn_ack(
          txn, o->ack->topic, o->ack->group, it->offset, it->attempt,
          it->has_result ? (it->result.data ? (const void *)it->result.data : "") : NULL,
          it->has_result ? it->result.len : 0);
    } else {
      engram_event ev;
      engram_header *h = net_arena_alloc(a, (o->append->event->n_headers + 1) * sizeof *h);
      if (!h) {
        rc = nomem(log);
        break;
      }
      net_event_from_wire(o->append->event, &ev, h);
      rc = engram_txn_append(txn, o->append->topic, &ev, &offs[k++]);
    }
  }
  if (rc) {
    engram_txn_abort(txn);
    return rc;
  }
  rc = engram_txn_commit(txn);
  if (rc) return rc;
  res->offsets = offs;
  res->n_offsets = napp;
  rp->result_case = ENGRAM__WIRE__REPLY__RESULT_TXN;
  rp->txn = res;
  return 0;
}

/* ---------------------------------------------------------------------------------
 * One handler per operation of NET_OPS (net.h). Each sets rc and leaves its do-while with
 * `break` on the first failure, so the reply's code and message are set in one place
 * (net_ops_run).
 * ------------------------------------------------------------------------------ */
typedef int (*op_fn)(struct net_server *s, engram *log, const Engram__Wire__Request *rq, Reply *rp,
                     net_arena *a, engram_batch **batch, int *empty_fetch);
#define OP(name)                                                                                 \
  static int name(struct net_server *s, engram *log, const Engram__Wire__Request *rq, Reply *rp, \
                  net_arena *a, engram_batch **batch, int *empty_fetch)

OP(op_hello) {
  int rc = 0;
  do {
    Engram__Wire__HelloResult *h = net_arena_alloc(a, sizeof *h);
    if (!h) {
      rc = nomem(log);
      break;
    }
    engram__wire__hello_result__init(h);
    h->protocol_version = ENGRAM_PROTOCOL_VERSION;
    h->server_version = ENGRAM_VERSION_STRING;
    h->max_message = net_server_max_message(s);
    rp->result_case = ENGRAM__WIRE__REPLY__RESULT_HELLO;
    rp->hello = h;
    break;
  } while (0);
  return rc;
}

OP(op_sync) {
  int rc = 0;
  do {
    rc = engram_sync(log);
    break;
  } while (0);
  return rc;
}

OP(op_backup) {
  int rc = 0;
  do {
    rc = engram_backup(log, rq->backup->dest);
    break;
  } while (0);
  return rc;
}

/* A wire topic config -> the API's. */
static void topic_config_from_wire(const Engram__Wire__TopicConfig *w, engram_topic_config *c) {
  memset(c, 0, sizeof *c);
  if (!w) return;
  c->compress_threshold = w->compress_threshold;
  c->max_payload = w->max_payload;
  c->dict_train_after = w->dict_train_after;
  c->flags = w->flags;
#define X(type, name) c->name = w->name;
  ENGRAM_TOPIC_RETENTION_FIELDS(X)
#undef X
  /* Too long a type stays too long, so that the check below the API refuses it. */
  snprintf(c->tombstone_type, sizeof c->tombstone_type, "%s", w->tombstone_type);
  if (strlen(w->tombstone_type) >= sizeof c->tombstone_type) c->tombstone_type[0] = '.';
}

OP(op_topic_create) {
  int rc = 0;
  do {
    const Engram__Wire__TopicConfig *w = rq->topic_create->config;
    engram_topic_config c;
    topic_config_from_wire(w, &c);
    rc = engram_topic_create(log, rq->topic_create->topic, w ? &c : NULL);
    break;
  } while (0);
  return rc;
}

OP(op_topic_set) {
  int rc = 0;
  do {
    engram_topic_config c;
    topic_config_from_wire(rq->topic_set->config, &c);
    rc = engram_topic_set(log, rq->topic_set->topic, &c);
    break;
  } while (0);
  return rc;
}

OP(op_compact) {
  int rc = 0;
  do {
    engram_compact_report r;
    const char *topic = rq->compact->topic;
    rc = engram_compact(log, topic && *topic ? topic : NULL, &r);
    if (rc) break;
    Engram__Wire__CompactReport *w = net_arena_alloc(a, sizeof *w);
    if (!w) {
      rc = nomem(log);
      break;
    }
    engram__wire__compact_report__init(w);
#define X(type, name) w->name = r.name;
    ENGRAM_COMPACT_REPORT_FIELDS(X)
#undef X
    rp->result_case = ENGRAM__WIRE__REPLY__RESULT_COMPACT_REPORT;
    rp->compact_report = w;
    break;
  } while (0);
  return rc;
}

OP(op_log_info) {
  (void)rq;
  engram_log_info li;
  int rc = engram_log_info_get(log, &li);
  if (rc) return rc;
  Engram__Wire__LogInfo *w = net_arena_alloc(a, sizeof *w);
  char *id = net_arena_alloc(a, sizeof li.id);
  if (!w || !id) return nomem(log);
  engram__wire__log_info__init(w);
  memcpy(id, li.id, sizeof li.id);
  w->id = id;
  w->created_ns = li.created_ns;
  w->format_version = li.format_version;
  rp->result_case = ENGRAM__WIRE__REPLY__RESULT_LOG_INFO;
  rp->log_info = w;
  return 0;
}

OP(op_space) {
  (void)rq;
  engram_space sp;
  int rc = engram_space_get(log, &sp);
  if (rc) return rc;
  Engram__Wire__Space *w = net_arena_alloc(a, sizeof *w);
  if (!w) return nomem(log);
  engram__wire__space__init(w);
#define X(type, name) w->name = sp.name;
  ENGRAM_SPACE_FIELDS(X)
#undef X
  rp->result_case = ENGRAM__WIRE__REPLY__RESULT_SPACE;
  rp->space = w;
  return 0;
}

OP(op_topic_get) {
  int rc = 0;
  do {
    engram_topic_info info;
    rc = engram_topic_info_get(log, rq->topic_get->topic, &info);
    if (rc) break;
    if (!(rp->topic_info = topic_to_wire(a, &info))) {
      rc = nomem(log);
      break;
    }
    rp->result_case = ENGRAM__WIRE__REPLY__RESULT_TOPIC_INFO;
    break;
  } while (0);
  return rc;
}

OP(op_topic_list) {
  int rc = 0;
  do {
    engram_topic_info *list = NULL;
    size_t n = 0;
    rc = engram_topic_list(log, &list, &n);
    if (rc) break;
    Engram__Wire__TopicInfoList *w = net_arena_alloc(a, sizeof *w);
    if (w) {
      engram__wire__topic_info_list__init(w);
      w->topics = net_arena_alloc(a, (n ? n : 1) * sizeof *w->topics);
    }
    for (size_t i = 0; w && w->topics && i < n; i++)
      if (!(w->topics[w->n_topics++] = topic_to_wire(a, &list[i]))) w->topics = NULL;
    engram_free(list);
    if (!w || !w->topics) {
      rc = nomem(log);
      break;
    }
    rp->result_case = ENGRAM__WIRE__REPLY__RESULT_TOPICS;
    rp->topics = w;
    break;
  } while (0);
  return rc;
}

OP(op_topic_drop) {
  int rc = 0;
  do {
    rc = engram_topic_drop(log, rq->topic_drop->topic);
    if (!rc) net_server_topic_changed(s, rq->topic_drop->topic);
    break;
  } while (0);
  return rc;
}

OP(op_train) {
  int rc = 0;
  do {
    uint32_t id = 0;
    rc = engram_topic_train_dict(log, rq->topic_train_dict->topic, &id);
    if (rc) break;
    rp->result_case = ENGRAM__WIRE__REPLY__RESULT_DICT_ID;
    rp->dict_id = id;
    break;
  } while (0);
  return rc;
}

OP(op_read) {
  int rc = 0;
  do {
    const char *topic;
    if (rq->op_case == ENGRAM__WIRE__REQUEST__OP_READ) {
      topic = rq->read->topic;
      rc = engram_read(log, topic, rq->read->offset, batch);
    } else {
      topic = rq->read_range->topic;
      uint64_t max = rq->read_range->max;
      if (max > NET_MAX_READ) max = NET_MAX_READ;
      rc = engram_read_range(log, topic, rq->read_range->from, (size_t)max, batch);
    }
    if (rc) break;
    if (!(rp->events = events_to_wire(a, *batch, topic, 0, NET_MAX_REPLY_EVENTS_BYTES))) {
      rc = nomem(log);
      break;
    }
    rp->result_case = ENGRAM__WIRE__REPLY__RESULT_EVENTS;
    break;
  } while (0);
  return rc;
}

OP(op_verify) {
  int rc = 0;
  do {
    engram_verify_report r;
    rc = engram_verify(log, &r);
    if (rc) break;
    Engram__Wire__VerifyReport *w = net_arena_alloc(a, sizeof *w);
    if (!w) {
      rc = nomem(log);
      break;
    }
    engram__wire__verify_report__init(w);
    w->topics = r.topics;
    w->records = r.records;
    w->damaged = r.damaged;
    w->first_damage = adup(a, r.first_damage);
    rp->result_case = ENGRAM__WIRE__REPLY__RESULT_VERIFY;
    rp->verify = w;
    break;
  } while (0);
  return rc;
}

OP(op_group_create) {
  int rc = 0;
  do {
    const Engram__Wire__GroupCreate *g = rq->group_create;
    engram_group_config c;
    if (g->config) group_cfg_from_wire(g->config, &c);
    rc = engram_group_create(log, g->topic, g->group, g->config ? &c : NULL);
    break;
  } while (0);
  return rc;
}

OP(op_group_get) {
  int rc = 0;
  do {
    engram_group_info info;
    rc = engram_group_info_get(log, rq->group_get->topic, rq->group_get->group, &info);
    if (rc) break;
    if (!(rp->group_info = group_to_wire(a, &info))) {
      rc = nomem(log);
      break;
    }
    rp->result_case = ENGRAM__WIRE__REPLY__RESULT_GROUP_INFO;
    break;
  } while (0);
  return rc;
}

OP(op_group_list) {
  int rc = 0;
  do {
    engram_group_info *list = NULL;
    size_t n = 0;
    const char *topic = *rq->group_list->topic ? rq->group_list->topic : NULL;
    rc = engram_group_list(log, topic, &list, &n);
    if (rc) break;
    Engram__Wire__GroupInfoList *w = net_arena_alloc(a, sizeof *w);
    if (w) {
      engram__wire__group_info_list__init(w);
      w->groups = net_arena_alloc(a, (n ? n : 1) * sizeof *w->groups);
    }
    for (size_t i = 0; w && w->groups && i < n; i++)
      if (!(w->groups[w->n_groups++] = group_to_wire(a, &list[i]))) w->groups = NULL;
    engram_free(list);
    if (!w || !w->groups) {
      rc = nomem(log);
      break;
    }
    rp->result_case = ENGRAM__WIRE__REPLY__RESULT_GROUPS;
    rp->groups = w;
    break;
  } while (0);
  return rc;
}

OP(op_group_delete) {
  int rc = 0;
  do {
    rc = engram_group_delete(log, rq->group_delete->topic, rq->group_delete->group);
    break;
  } while (0);
  return rc;
}

OP(op_group_reset) {
  int rc = 0;
  do {
    const Engram__Wire__GroupReset *g = rq->group_reset;
    rc = engram_group_reset(log, g->topic, g->group, (engram_start)g->to, g->offset, g->time_ns);
    if (!rc) net_server_topic_changed(s, g->topic);
    break;
  } while (0);
  return rc;
}

OP(op_fetch) {
  int rc = 0;
  do {
    const Engram__Wire__Fetch *f = rq->fetch;
    /* Never waits here: the daemon parks an empty fetch instead of holding a worker. A
     * wait over the API's limit is passed on so the API refuses it as it would. */
    rc = engram_fetch(log, f->topic, f->group, f->consumer, f->max,
                      f->wait_ms > ENGRAM_MAX_FETCH_WAIT_MS ? f->wait_ms : 0, batch);
    if (rc) break;
    *empty_fetch = (*batch)->count == 0;
    if (!(rp->events = events_to_wire(a, *batch, f->topic, 1, SIZE_MAX))) {
      rc = nomem(log);
      break;
    }
    rp->result_case = ENGRAM__WIRE__REPLY__RESULT_EVENTS;
    break;
  } while (0);
  return rc;
}

OP(op_ack) {
  int rc = 0;
  do {
    const Engram__Wire__Ack *ak = rq->ack;
    engram_ack_item *items = acks_from_wire(a, ak->items, ak->n_items);
    int *codes = net_arena_alloc(a, ak->n_items * sizeof *codes);
    Engram__Wire__AckResult *res = net_arena_alloc(a, sizeof *res);
    if (!items || !codes || !res) {
      rc = nomem(log);
      break;
    }
    /* 1 marks a code the call did not set (it failed before the items). */
    for (size_t i = 0; i < ak->n_items; i++) codes[i] = 1;
    rc = engram_ack_many(log, ak->topic, ak->group, items, ak->n_items, codes);
    engram__wire__ack_result__init(res);
    res->codes = codes;
    res->n_codes = ak->n_items;
    rp->result_case = ENGRAM__WIRE__REPLY__RESULT_ACK;
    rp->ack = res;
    /* Acks free keys of key-ordered groups: events may have become deliverable. */
    net_server_topic_changed(s, ak->topic);
    break;
  } while (0);
  return rc;
}

OP(op_ack_fetch) {
  int rc = 0;
  do {
    const Engram__Wire__AckFetch *f = rq->ack_fetch;
    engram_ack_item *items = acks_from_wire(a, f->items, f->n_items);
    int *codes = net_arena_alloc(a, (f->n_items ? f->n_items : 1) * sizeof *codes);
    Engram__Wire__AckResult *res = net_arena_alloc(a, sizeof *res);
    if (!items || !codes || !res) {
      rc = nomem(log);
      break;
    }
    /* 1 marks a code the call did not set (it failed before the items). */
    for (size_t i = 0; i < f->n_items; i++) codes[i] = 1;
    /* Never waits here: with nothing to deliver the daemon parks it, its acks committed,
     * and it looks again as a fetch (server_worker.c). */
    rc = engram_ack_fetch(log, f->topic, f->group, f->consumer, items, f->n_items, codes, f->max,
                          f->wait_ms > ENGRAM_MAX_FETCH_WAIT_MS ? f->wait_ms : 0, batch);
    if (rc) {
      /* All or nothing: the codes say which items failed. */
      engram__wire__ack_result__init(res);
      res->codes = codes;
      res->n_codes = f->n_items;
      rp->result_case = ENGRAM__WIRE__REPLY__RESULT_ACK;
      rp->ack = res;
      break;
    }
    /* Acks free keys of key-ordered groups: other fetches may have work now. */
    if (f->n_items) net_server_topic_changed(s, f->topic);
    *empty_fetch = (*batch)->count == 0;
    if (!(rp->events = events_to_wire(a, *batch, f->topic, 1, SIZE_MAX))) {
      rc = nomem(log);
      break;
    }
    rp->result_case = ENGRAM__WIRE__REPLY__RESULT_EVENTS;
  } while (0);
  return rc;
}

OP(op_nack) {
  int rc = 0;
  do {
    const Engram__Wire__Nack *n = rq->nack;
    rc = engram_nack(log, n->topic, n->group, n->offset, n->attempt, n->delay_ms,
                     n->has_error ? n->error : NULL);
    if (!rc) net_server_topic_changed(s, n->topic);
    break;
  } while (0);
  return rc;
}

OP(op_reject) {
  int rc = 0;
  do {
    const Engram__Wire__Reject *r = rq->reject;
    rc = engram_reject(log, r->topic, r->group, r->offset, r->attempt,
                       r->has_reason ? r->reason : NULL);
    if (!rc) net_server_topic_changed(s, r->topic);
    break;
  } while (0);
  return rc;
}

OP(op_extend) {
  int rc = 0;
  do {
    const Engram__Wire__Extend *e = rq->extend;
    rc = engram_extend(log, e->topic, e->group, e->offset, e->attempt, e->ms);
    break;
  } while (0);
  return rc;
}

OP(op_cancel) {
  int rc = 0;
  do {
    rc = engram_cancel(log, rq->cancel->topic, rq->cancel->group, rq->cancel->offset);
    if (!rc) net_server_topic_changed(s, rq->cancel->topic);
    break;
  } while (0);
  return rc;
}

OP(op_status_get) {
  int rc = 0;
  do {
    engram_status st;
    memset(&st, 0, sizeof st);
    rc = engram_status_get(log, rq->status_get->topic, rq->status_get->group,
                           rq->status_get->offset, &st);
    if (rc) break;
    Engram__Wire__Status *w = net_arena_alloc(a, sizeof *w);
    void *res = st.result ? net_arena_alloc(a, st.result_len + 1) : NULL;
    if (!w || (st.result && !res)) {
      engram_free(st.result);
      rc = nomem(log);
      break;
    }
    engram__wire__status__init(w);
    w->state = (uint32_t)st.state;
    w->consumer = adup(a, st.consumer);
    w->attempt = st.attempt;
    w->deadline_ns = st.deadline_ns;
    w->last_error = adup(a, st.last_error);
    if (st.result) {
      memcpy(res, st.result, st.result_len);
      w->has_result = 1;
      w->result.data = res;
      w->result.len = st.result_len;
    }
    engram_free(st.result);
    rp->result_case = ENGRAM__WIRE__REPLY__RESULT_STATUS;
    rp->status = w;
    break;
  } while (0);
  return rc;
}

OP(op_dlq_list) {
  int rc = 0;
  do {
    const Engram__Wire__DlqList *d = rq->dlq_list;
    /* A reply must stay a bounded message: at most NET_MAX_READ entries per call. */
    uint64_t max = d->max == 0 || d->max > NET_MAX_READ ? NET_MAX_READ : d->max;
    engram_dlq_entry *list = NULL;
    size_t n = 0;
    rc = engram_dlq_list(log, d->topic, d->group, d->from, (size_t)max, &list, &n);
    if (rc) break;
    Engram__Wire__DlqEntries *w = net_arena_alloc(a, sizeof *w);
    if (w) {
      engram__wire__dlq_entries__init(w);
      w->entries = net_arena_alloc(a, (n ? n : 1) * sizeof *w->entries);
    }
    for (size_t i = 0; w && w->entries && i < n; i++) {
      Engram__Wire__DlqEntry *e = net_arena_alloc(a, sizeof *e);
      if (!e) {
        w->entries = NULL;
        break;
      }
      engram__wire__dlq_entry__init(e);
#define NUM(type, name) e->name = list[i].name;
#define TEXT(size, name) e->name = adup(a, list[i].name);
      ENGRAM_DLQ_ENTRY_FIELDS(NUM, TEXT)
#undef NUM
#undef TEXT
      w->entries[w->n_entries++] = e;
    }
    engram_free(list);
    if (!w || !w->entries) {
      rc = nomem(log);
      break;
    }
    rp->result_case = ENGRAM__WIRE__REPLY__RESULT_DLQ;
    rp->dlq = w;
    break;
  } while (0);
  return rc;
}

OP(op_dlq_select) {
  int rc = 0;
  do {
    int redrive = rq->op_case == ENGRAM__WIRE__REQUEST__OP_DLQ_REDRIVE;
    const Engram__Wire__DlqSelect *d = redrive ? rq->dlq_redrive : rq->dlq_purge;
    size_t count = 0;
    const uint64_t *offs = d->all ? NULL : d->offsets;
    size_t n = d->all ? 0 : d->n_offsets;
    rc = redrive ? engram_dlq_redrive(log, d->topic, d->group, offs, n, &count)
                 : engram_dlq_purge(log, d->topic, d->group, offs, n, &count);
    if (rc) break;
    if (redrive) net_server_topic_changed(s, d->topic);
    rp->result_case = ENGRAM__WIRE__REPLY__RESULT_COUNT;
    rp->count = count;
    break;
  } while (0);
  return rc;
}

OP(op_txn_commit) {
  int rc = 0;
  do {
    rc = run_txn(log, a, rq->txn_commit, rp);
    if (!rc) {
      uint64_t napp = 0;
      for (size_t i = 0; i < rq->txn_commit->n_ops; i++) {
        const Engram__Wire__TxnOp *o = rq->txn_commit->ops[i];
        if (o->op_case == ENGRAM__WIRE__TXN_OP__OP_ACK)
          net_server_topic_changed(s, o->ack->topic);
        else
          napp++;
      }
      net_server_count_appended(s, napp);
    }
    break;
  } while (0);
  return rc;
}

OP(op_stats) {
  int rc = 0;
  do {
    Engram__Wire__StatsResult *st = net_arena_alloc(a, sizeof *st);
    if (!st) {
      rc = nomem(log);
      break;
    }
    engram__wire__stats_result__init(st);
    net_server_stats(s, st);
    rp->result_case = ENGRAM__WIRE__REPLY__RESULT_STATS;
    rp->stats = st;
    break;
  } while (0);
  return rc;
}

OP(op_beat) {
  engram_worker_info *w = net_arena_alloc(a, sizeof *w);
  if (!w) return nomem(log);
  if (!rq->worker_heartbeat->worker || net_worker_from_wire(rq->worker_heartbeat->worker, w))
    return log_error(NULL, ENGRAM_EINVAL,
                     "worker heartbeat: worker missing, or a name, text or list over its limit");
  return engram_worker_heartbeat(log, w);
}

OP(op_workers) {
  engram_worker_info *list = NULL;
  size_t n = 0;
  int rc = engram_worker_list(log, rq->worker_list->lost_after_ms, &list, &n);
  if (rc) return rc;
  Engram__Wire__WorkerInfoList *w = net_arena_alloc(a, sizeof *w);
  if (w) {
    engram__wire__worker_info_list__init(w);
    w->workers = net_arena_alloc(a, (n ? n : 1) * sizeof *w->workers);
  }
  for (size_t i = 0; w && w->workers && i < n; i++)
    if (!(w->workers[w->n_workers++] = net_worker_to_wire(a, &list[i]))) w->workers = NULL;
  engram_free(list);
  if (!w || !w->workers) return nomem(log);
  rp->result_case = ENGRAM__WIRE__REPLY__RESULT_WORKERS;
  rp->workers = w;
  return 0;
}

OP(op_forget) { return engram_worker_forget(log, rq->worker_forget->name); }

OP(op_rates) {
  engram_rate_info *list = NULL;
  size_t n = 0;
  const char *topic = *rq->rate_list->topic ? rq->rate_list->topic : NULL;
  int rc = engram_rate_list(log, topic, &list, &n);
  if (rc) return rc;
  Engram__Wire__RateInfoList *w = net_arena_alloc(a, sizeof *w);
  if (w) {
    engram__wire__rate_info_list__init(w);
    w->rates = net_arena_alloc(a, (n ? n : 1) * sizeof *w->rates);
  }
  for (size_t i = 0; w && w->rates && i < n; i++) {
    Engram__Wire__RateInfo *r = net_arena_alloc(a, sizeof *r);
#define X(type, name) +ENGRAM_RATE_WINDOWS
    double *vals = net_arena_alloc(a, (0 ENGRAM_RATE_FIELDS(X)) * sizeof *vals);
#undef X
    if (!r || !vals) {
      w->rates = NULL;
      break;
    }
    engram__wire__rate_info__init(r);
    r->topic = adup(a, list[i].topic);
    r->group = adup(a, list[i].group);
#define X(type, name)                              \
  memcpy(vals, list[i].name, sizeof list[i].name); \
  r->name = vals;                                  \
  r->n_##name = ENGRAM_RATE_WINDOWS;               \
  vals += ENGRAM_RATE_WINDOWS;
    ENGRAM_RATE_FIELDS(X)
#undef X
    w->rates[w->n_rates++] = r;
  }
  engram_free(list);
  if (!w || !w->rates) return nomem(log);
  rp->result_case = ENGRAM__WIRE__REPLY__RESULT_RATES;
  rp->rates = w;
  return 0;
}

/* Schedules. */
OP(op_sched_set) {
  int add = rq->op_case == ENGRAM__WIRE__REQUEST__OP_SCHEDULE_ADD;
  const Engram__Wire__ScheduleSet *q = add ? rq->schedule_add : rq->schedule_set;
  engram_header *hs = net_arena_alloc(a, ENGRAM_MAX_HEADERS * sizeof *hs);
  if (!hs) return nomem(log);
  engram_schedule_config c;
  if (net_schedule_config_from_wire(q->config, &c, hs))
    return log_error(NULL, ENGRAM_EPROTO, "schedule %s: configuration missing or malformed",
                     q->name);
  int changed = 0;
  int rc =
      add ? engram_schedule_add(log, q->name, &c) : engram_schedule_set(log, q->name, &c, &changed);
  if (rc) return rc;
  rp->result_case = ENGRAM__WIRE__REPLY__RESULT_COUNT;
  rp->count = (uint64_t)changed;
  return 0;
}

/* A reply of schedule infos: one (get) or a list. */
static int sched_reply(engram *log, Reply *rp, net_arena *a, engram_schedule_info *list, size_t n,
                       int one) {
  int rc = 0;
  if (one) {
    Engram__Wire__ScheduleInfo *w = net_schedule_to_wire(a, &list[0]);
    if (!w) {
      rc = nomem(log);
    } else {
      rp->result_case = ENGRAM__WIRE__REPLY__RESULT_SCHEDULE_INFO;
      rp->schedule_info = w;
    }
  } else {
    Engram__Wire__ScheduleInfoList *w = net_arena_alloc(a, sizeof *w);
    if (w) {
      engram__wire__schedule_info_list__init(w);
      w->schedules = net_arena_alloc(a, (n ? n : 1) * sizeof *w->schedules);
    }
    for (size_t i = 0; w && w->schedules && i < n; i++)
      if (!(w->schedules[w->n_schedules++] = net_schedule_to_wire(a, &list[i])))
        w->schedules = NULL;
    if (!w || !w->schedules) {
      rc = nomem(log);
    } else {
      rp->result_case = ENGRAM__WIRE__REPLY__RESULT_SCHEDULES;
      rp->schedules = w;
    }
  }
  engram_free(list);
  return rc;
}

OP(op_sched_get) {
  engram_schedule_info *i = NULL;
  int rc = engram_schedule_get(log, rq->schedule_get->name, &i);
  return rc ? rc : sched_reply(log, rp, a, i, 1, 1);
}

OP(op_sched_list) {
  engram_schedule_info *list = NULL;
  size_t n = 0;
  int rc = engram_schedule_list(log, &list, &n);
  return rc ? rc : sched_reply(log, rp, a, list, n, 0);
}

OP(op_sched_op) {
  uint64_t off = 0;
  int rc;
  switch (rq->op_case) {
    case ENGRAM__WIRE__REQUEST__OP_SCHEDULE_REMOVE:
      rc = engram_schedule_remove(log, rq->schedule_remove->name);
      break;
    case ENGRAM__WIRE__REQUEST__OP_SCHEDULE_PAUSE:
      rc = engram_schedule_pause(log, rq->schedule_pause->name);
      break;
    case ENGRAM__WIRE__REQUEST__OP_SCHEDULE_RESUME:
      rc = engram_schedule_resume(log, rq->schedule_resume->name);
      break;
    default:
      rc = engram_schedule_run_now(log, rq->schedule_run_now->name, &off);
      break;
  }
  if (rc) return rc;
  rp->result_case = ENGRAM__WIRE__REPLY__RESULT_COUNT;
  rp->count = off;
  return 0;
}

OP(op_sched_tick) {
  /* A client may tick the daemon's log, but not ahead of its clock: a slot fired early
   * would never fire at its time. */
  int64_t now, want = rq->schedule_tick->now_ns;
  if (!clock_test_file_ns(&now)) now = clock_realtime_ns(); /* the handle's default clock */
  if (want > now + 1000000000)
    return log_error(NULL, ENGRAM_EINVAL,
                     "schedule tick: now_ns is %lld s ahead of the daemon's clock (0 = its clock)",
                     (long long)((want - now) / 1000000000));
  engram_schedule_tick_report r;
  int rc = engram_schedule_tick(log, want, &r);
  if (rc) return rc;
  Engram__Wire__ScheduleTickReport *w = net_arena_alloc(a, sizeof *w);
  if (!w) return nomem(log);
  engram__wire__schedule_tick_report__init(w);
  w->fired = r.fired;
  w->skipped = r.skipped;
  w->failed = r.failed;
  w->next_due_ns = r.next_due_ns;
  w->first_error = adup(a, r.first_error);
  rp->result_case = ENGRAM__WIRE__REPLY__RESULT_SCHEDULE_TICK;
  rp->schedule_tick = w;
  return 0;
}

/* The daemon's handler of each operation, from NET_OPS (net.h). */
static const op_fn handlers[] = {
#define X(name, CASE, retry, run) [ENGRAM__WIRE__REQUEST__OP_##CASE] = run,
    NET_OPS(X)
#undef X
};

void net_ops_run(struct net_server *s, engram *log, const Engram__Wire__Request *rq, Reply *rp,
                 net_arena *a, engram_batch **batch, int *empty_fetch) {
  int rc = 0;
  *batch = NULL;
  *empty_fetch = 0;
  log_error_clear(NULL);
  size_t op = (size_t)rq->op_case;
  if (op < sizeof handlers / sizeof *handlers && handlers[op])
    rc = handlers[op](s, log, rq, rp, a, batch, empty_fetch);
  else /* appends run in server_append.c, in lanes */
    rc = log_error(NULL, ENGRAM_EPROTO, "operation %d not handled here", (int)rq->op_case);
  rp->code = rc;
  if (rc) {
    const char *m = engram_errmsg(log);
    rp->error = adup(a, m && *m ? m : engram_strerror(rc));
    if (rp->result_case != ENGRAM__WIRE__REPLY__RESULT_ACK)
      rp->result_case = ENGRAM__WIRE__REPLY__RESULT__NOT_SET;
  }
}
