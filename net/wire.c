/* wire.c — reading request frames safely (scan, decode, field checks) and converting
 * events between the wire and the public structs. */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "common/got.h"
#include "net/net.h"

/* ---------------------------------------------------------------------------------
 * Scanning: a frame is untrusted, so its structure is checked before protobuf-c builds
 * anything from it. protobuf-c cuts text at an embedded NUL without a word; the scan
 * refuses such text instead, so "topic\0x" can never pass as "topic".
 * ------------------------------------------------------------------------------ */
static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  uint64_t r = 0;
  for (int i = 0; i < 10; i++) {
    if (*p >= end) return -1;
    uint8_t b = *(*p)++;
    if (i == 9 && b > 1) return -1;
    r |= (uint64_t)(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      *v = r;
      return 0;
    }
  }
  return -1;
}

static int scan(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end,
                int depth, net_peek *pk, const char **why) {
  if (depth > NET_MAX_DEPTH) {
    *why = "messages nested too deeply";
    return -1;
  }
  while (p < end) {
    uint64_t tag, v;
    if (varint(&p, end, &tag)) {
      *why = "truncated field tag";
      return -1;
    }
    uint64_t num = tag >> 3;
    if (num == 0 || num > 536870911u) {
      *why = "invalid field number";
      return -1;
    }
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, (unsigned)num);
    switch (tag & 7) {
      case 0:
        if (varint(&p, end, &v)) {
          *why = "truncated number";
          return -1;
        }
        if (pk && num == 1) pk->version = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
        if (pk && num == 2) pk->id = v;
        break;
      case 1:
        if (end - p < 8) {
          *why = "truncated fixed64";
          return -1;
        }
        p += 8;
        break;
      case 5:
        if (end - p < 4) {
          *why = "truncated fixed32";
          return -1;
        }
        p += 4;
        break;
      case 2:
        if (varint(&p, end, &v) || v > (uint64_t)(end - p)) {
          *why = "truncated length-delimited field";
          return -1;
        }
        if (f && f->type == PROTOBUF_C_TYPE_STRING && memchr(p, 0, v)) {
          *why = "text field holds a NUL byte";
          return -1;
        }
        if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
            scan(f->descriptor, p, p + v, depth + 1, NULL, why))
          return -1;
        if (pk && num >= 10) pk->op = (int)(num > 1000000 ? 1000000 : num);
        p += v;
        break;
      default:
        *why = "unsupported wire type";
        return -1;
    }
  }
  return 0;
}

int net_wire_scan(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len, net_peek *pk,
                  const char **why) {
  if (pk) memset(pk, 0, sizeof *pk);
  const char *dummy;
  if (!why) why = &dummy;
  *why = "";
  if (!buf && len) return -1;
  return scan(d, buf, buf + len, 0, pk, why);
}

/* The daemon's main thread peeks (it routes appends by connection and answers a frame
 * that fails here at once); a worker unpacks. The fuzz target runs both through
 * net_request_decode: one decoder for the daemon and the fuzzer. */
int net_request_peek(const uint8_t *buf, size_t len, net_peek *pk, char *why, size_t cap) {
  const char *reason;
  if (len == 0) {
    memset(pk, 0, sizeof *pk);
    snprintf(why, cap, "empty request");
    return ENGRAM_EPROTO;
  }
  if (net_wire_scan(&engram__wire__request__descriptor, buf, len, pk, &reason)) {
    snprintf(why, cap, "malformed request: %s", reason);
    return ENGRAM_EPROTO;
  }
  if (pk->version != ENGRAM_PROTOCOL_VERSION) {
    if (pk->version == 0 && pk->op == 0) {
      snprintf(why, cap, "malformed request: no protocol version and no operation");
      return ENGRAM_EPROTO;
    }
    snprintf(why, cap, "protocol version %u not supported (this daemon speaks %d)", pk->version,
             ENGRAM_PROTOCOL_VERSION);
    return ENGRAM_EVERSION;
  }
  return 0;
}

static struct net_chunk *arena_chunk(net_arena *a, size_t cap);
static void *arena_take(net_arena *a, size_t n);

static void *arena_alloc(void *data, size_t size) { return arena_take(data, size); }

static void arena_release(void *data, void *p) {
  (void)data; /* everything goes at once, with the arena */
  (void)p;
}

static Engram__Wire__Request *unpack(net_arena *a, const uint8_t *buf, size_t len,
                                     const net_peek *pk, int *code, char *why, size_t cap) {
  *code = ENGRAM_EPROTO;
  ProtobufCAllocator al = {arena_alloc, arena_release, a};
  /* A decoded request takes about twice its frame (structs, strings, payloads) and a few
   * fixed structs: one chunk for all of it. */
  if (a && !a->chunks && !arena_chunk(a, 2 * len + 1024)) {
    *code = ENGRAM_ENOMEM;
    snprintf(why, cap, "out of memory for a request of %zu bytes", len);
    return NULL;
  }
  Engram__Wire__Request *rq = engram__wire__request__unpack(a ? &al : NULL, len, buf);
  if (!rq) {
    snprintf(why, cap, "malformed request: does not decode");
    return NULL;
  }
  /* A oneof member present on the wire is never NULL after unpacking, but the check
   * costs nothing and keeps every later dereference honest. */
  if (rq->op_case == ENGRAM__WIRE__REQUEST__OP__NOT_SET || !rq->hello) {
    snprintf(why, cap, "unknown operation %d", pk->op);
    if (!a) engram__wire__request__free_unpacked(rq, NULL);
    return NULL;
  }
  *code = 0;
  return rq;
}

Engram__Wire__Request *net_request_unpack_in(net_arena *a, const uint8_t *buf, size_t len,
                                             const net_peek *pk, int *code, char *why, size_t cap) {
  return unpack(a, buf, len, pk, code, why, cap);
}

Engram__Wire__Request *net_request_decode(const uint8_t *buf, size_t len, net_peek *pk, int *code,
                                          char *why, size_t cap) {
  if ((*code = net_request_peek(buf, len, pk, why, cap)) != 0) return NULL;
  return unpack(NULL, buf, len, pk, code, why, cap); /* freed with free_unpacked */
}

/* ---------------------------------------------------------------------------------
 * Field checks.
 * ------------------------------------------------------------------------------ */
const char *net_op_name(int op) {
  switch (op) {
#define X(name, CASE, retry, run)        \
  case ENGRAM__WIRE__REQUEST__OP_##CASE: \
    return #name;
    NET_OPS(X)
#undef X
    default:
      return "unknown";
  }
}

int net_op_retry(int op) {
  switch (op) {
#define X(name, CASE, retry, run)        \
  case ENGRAM__WIRE__REQUEST__OP_##CASE: \
    return retry;
    NET_OPS(X)
#undef X
    default:
      return NET_RETRY_NEVER;
  }
}

#define BAD(code, ...) (snprintf(why, cap, __VA_ARGS__), (code))

/* The API validates names, values and limits itself, with the messages an embedded
 * caller gets; what is checked here is only what must hold before the request can be
 * handed to it at all: members present, and counts that would make the daemon allocate
 * far more than the frame's size. Where the API has the same limit the message is
 * the API's. */
static int event_ok(const char *topic, const Engram__Wire__Event *e, char *why, size_t cap) {
  if (!e) return BAD(ENGRAM_EPROTO, "append %s: missing event", topic);
  if (e->n_headers > ENGRAM_MAX_HEADERS)
    return BAD(ENGRAM_ETOOBIG, "append %s: %zu headers over limit %d", topic, e->n_headers,
               ENGRAM_MAX_HEADERS);
  for (size_t i = 0; i < e->n_headers; i++)
    if (!e->headers[i]) return BAD(ENGRAM_EPROTO, "append %s: missing header", topic);
  return 0;
}

int net_request_check(const Engram__Wire__Request *rq, char *why, size_t cap) {
  int rc = 0;
  switch (rq->op_case) {
    case ENGRAM__WIRE__REQUEST__OP_APPEND: {
      const Engram__Wire__Append *a = rq->append;
      if (a->n_events > NET_MAX_EVENTS)
        return BAD(ENGRAM_ETOOBIG, "append %s: batch of %zu events over limit %d", a->topic,
                   a->n_events, NET_MAX_EVENTS);
      for (size_t i = 0; i < a->n_events; i++)
        if ((rc = event_ok(a->topic, a->events[i], why, cap))) return rc;
      return 0;
    }
    case ENGRAM__WIRE__REQUEST__OP_GROUP_CREATE:
      if (!rq->group_create->config) return 0;
      if (rq->group_create->config->n_filters > 1000 ||
          rq->group_create->config->n_backoff_ms > 1000)
        return BAD(ENGRAM_EINVAL, "group create %s/%s: too many filters or backoff steps",
                   rq->group_create->topic, rq->group_create->group);
      return 0;
    case ENGRAM__WIRE__REQUEST__OP_ACK: {
      const Engram__Wire__Ack *a = rq->ack;
      if (a->n_items > NET_MAX_ITEMS)
        return BAD(ENGRAM_ETOOBIG, "ack: %zu items over limit %d", a->n_items, NET_MAX_ITEMS);
      for (size_t i = 0; i < a->n_items; i++)
        if (!a->items[i]) return BAD(ENGRAM_EPROTO, "ack: missing item");
      return 0;
    }
    case ENGRAM__WIRE__REQUEST__OP_ACK_FETCH: {
      const Engram__Wire__AckFetch *a = rq->ack_fetch;
      if (a->n_items > NET_MAX_ITEMS)
        return BAD(ENGRAM_ETOOBIG, "ack-fetch: %zu acks over limit %d", a->n_items, NET_MAX_ITEMS);
      for (size_t i = 0; i < a->n_items; i++)
        if (!a->items[i]) return BAD(ENGRAM_EPROTO, "ack-fetch: missing item");
      return 0;
    }
    case ENGRAM__WIRE__REQUEST__OP_DLQ_PURGE:
    case ENGRAM__WIRE__REQUEST__OP_DLQ_REDRIVE: {
      const Engram__Wire__DlqSelect *d =
          rq->op_case == ENGRAM__WIRE__REQUEST__OP_DLQ_PURGE ? rq->dlq_purge : rq->dlq_redrive;
      if (d->all && d->n_offsets)
        return BAD(ENGRAM_EINVAL, "dlq %s/%s: both all and offsets given", d->topic, d->group);
      if (d->n_offsets > NET_MAX_OFFSETS)
        return BAD(ENGRAM_ETOOBIG, "dlq %s/%s: %zu offsets over limit %d", d->topic, d->group,
                   d->n_offsets, NET_MAX_OFFSETS);
      return 0;
    }
    case ENGRAM__WIRE__REQUEST__OP_TXN_COMMIT: {
      const Engram__Wire__TxnCommit *t = rq->txn_commit;
      if (t->n_ops > NET_MAX_ITEMS)
        return BAD(ENGRAM_ETOOBIG, "txn: %zu operations over limit %d", t->n_ops, NET_MAX_ITEMS);
      for (size_t i = 0; i < t->n_ops; i++) {
        const Engram__Wire__TxnOp *o = t->ops[i];
        if (!o) return BAD(ENGRAM_EPROTO, "txn: missing operation");
        if (o->op_case == ENGRAM__WIRE__TXN_OP__OP_ACK && o->ack) {
          if (!o->ack->item) return BAD(ENGRAM_EPROTO, "txn: ack without an item");
        } else if (o->op_case == ENGRAM__WIRE__TXN_OP__OP_APPEND && o->append) {
          if ((rc = event_ok(o->append->topic, o->append->event, why, cap))) return rc;
        } else {
          return BAD(ENGRAM_EPROTO, "txn: operation %zu is neither ack nor append", i);
        }
      }
      return 0;
    }
    case ENGRAM__WIRE__REQUEST__OP_SCHEDULE_ADD:
    case ENGRAM__WIRE__REQUEST__OP_SCHEDULE_SET: {
      const Engram__Wire__ScheduleSet *q = rq->op_case == ENGRAM__WIRE__REQUEST__OP_SCHEDULE_ADD
                                               ? rq->schedule_add
                                               : rq->schedule_set;
      if (!q->config) return BAD(ENGRAM_EPROTO, "schedule %s: missing configuration", q->name);
      if (q->config->n_headers > ENGRAM_MAX_HEADERS)
        return BAD(ENGRAM_ETOOBIG, "schedule %s: %zu headers over the limit of %d", q->name,
                   q->config->n_headers, ENGRAM_MAX_HEADERS);
      for (size_t i = 0; i < q->config->n_headers; i++)
        if (!q->config->headers[i])
          return BAD(ENGRAM_EPROTO, "schedule %s: missing header", q->name);
      return 0;
    }
    case ENGRAM__WIRE__REQUEST__OP__NOT_SET:
      return BAD(ENGRAM_EPROTO, "request without an operation");
    default:
      return 0;
  }
}

/* ---------------------------------------------------------------------------------
 * Events.
 * ------------------------------------------------------------------------------ */
void net_event_from_wire(const Engram__Wire__Event *w, engram_event *e, engram_header *h) {
  memset(e, 0, sizeof *e);
  e->type = w->type;
  e->key = w->has_key ? w->key : NULL;
  e->payload = w->payload.len ? w->payload.data : NULL;
  e->payload_len = w->payload.len;
  e->content_type = *w->content_type ? w->content_type : NULL;
  e->idempotency_key = w->has_idempotency_key || *w->idempotency_key ? w->idempotency_key : NULL;
  e->deliver_at_ns = w->deliver_at_ns;
  e->timestamp_ns = w->timestamp_ns; /* an input with ENGRAM_EVENT_TIMESTAMP */
  e->flags = w->flags;
  for (size_t i = 0; i < w->n_headers; i++) {
    h[i].name = w->headers[i]->name;
    h[i].value = w->headers[i]->value;
  }
  e->headers = w->n_headers ? h : NULL;
  e->n_headers = w->n_headers;
}

int net_events_from_wire(Engram__Wire__Event *const *w, size_t n, engram_event **evs,
                         engram_header **hdrs) {
  size_t nh = 0;
  for (size_t i = 0; i < n; i++) {
    if (w[i]->n_headers > ENGRAM_MAX_HEADERS) return ENGRAM_ETOOBIG;
    nh += w[i]->n_headers;
  }
  *evs = calloc(n ? n : 1, sizeof **evs);
  *hdrs = calloc(nh ? nh : 1, sizeof **hdrs);
  if (!*evs || !*hdrs) {
    free(*evs);
    free(*hdrs);
    *evs = NULL;
    *hdrs = NULL;
    return ENGRAM_ENOMEM;
  }
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    net_event_from_wire(w[i], &(*evs)[i], *hdrs + at);
    at += w[i]->n_headers;
  }
  return 0;
}

struct net_chunk {
  struct net_chunk *next;
  size_t used, cap;
  max_align_t data[];
};

/* A new chunk of at least cap bytes at the head of a's list; NULL when out of memory. */
static struct net_chunk *arena_chunk(net_arena *a, size_t cap) {
  if (cap < 16384) cap = 16384;
  struct net_chunk *c = malloc(sizeof *c + cap);
  if (!c) return NULL;
  c->used = 0;
  c->cap = cap;
  c->next = a->chunks;
  a->chunks = c;
  return c;
}

/* n bytes, 16-aligned, not zeroed. */
static void *arena_take(net_arena *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  struct net_chunk *c = a->chunks;
  if ((!c || c->cap - c->used < n) && !(c = arena_chunk(a, n))) return NULL;
  void *p = (char *)c->data + c->used;
  c->used += n;
  return p;
}

void *net_arena_alloc(net_arena *a, size_t n) {
  void *p = arena_take(a, n);
  if (p) memset(p, 0, n);
  return p;
}

void net_arena_free(net_arena *a) {
  struct net_chunk *c = a->chunks;
  while (c) {
    struct net_chunk *n = c->next;
    free(c);
    c = n;
  }
  a->chunks = NULL;
}

Engram__Wire__Event *net_event_to_wire(net_arena *a, const engram_event *e, int with_attempt) {
  Engram__Wire__Event *w = net_arena_alloc(a, sizeof *w);
  if (!w) return NULL;
  engram__wire__event__init(w);
  w->offset = e->offset;
  w->type = net_str(e->type);
  w->has_key = e->key != NULL;
  w->key = net_str(e->key);
  w->payload.data = (uint8_t *)e->payload;
  w->payload.len = e->payload ? e->payload_len : 0;
  w->content_type = net_str(e->content_type);
  w->idempotency_key = net_str(e->idempotency_key);
  w->has_idempotency_key = e->idempotency_key != NULL;
  w->deliver_at_ns = e->deliver_at_ns;
  w->timestamp_ns = e->timestamp_ns;
  w->attempt = with_attempt ? e->attempt : 0;
  w->flags = e->flags;
  if (e->n_headers) {
    Engram__Wire__Header *h = net_arena_alloc(a, e->n_headers * sizeof *h);
    Engram__Wire__Header **hp = net_arena_alloc(a, e->n_headers * sizeof *hp);
    if (!h || !hp) return NULL;
    for (size_t i = 0; i < e->n_headers; i++) {
      engram__wire__header__init(&h[i]);
      h[i].name = net_str(e->headers[i].name);
      h[i].value = net_str(e->headers[i].value);
      hp[i] = &h[i];
    }
    w->headers = hp;
    w->n_headers = e->n_headers;
  }
  return w;
}

int net_copy_text(char *dst, size_t cap, const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n >= cap) {
    dst[0] = '\0';
    return -1;
  }
  if (n) memcpy(dst, s, n);
  dst[n] = '\0';
  return 0;
}

/* ---------------------------------------------------------------------------------
 * Workers.
 * ------------------------------------------------------------------------------ */
static char *arena_dup(net_arena *a, const char *s) {
  size_t n = strlen(s);
  char *d = net_arena_alloc(a, n + 1);
  if (d) memcpy(d, s, n + 1);
  return d;
}

Engram__Wire__WorkerInfo *net_worker_to_wire(net_arena *a, const engram_worker_info *in) {
  Engram__Wire__WorkerInfo *w = net_arena_alloc(a, sizeof *w);
  if (!w) return NULL;
  engram__wire__worker_info__init(w);
#define NUM(type, name) w->name = in->name;
#define TEXT(size, name) \
  if (!(w->name = arena_dup(a, in->name))) return NULL;
  ENGRAM_WORKER_INFO_FIELDS(NUM, TEXT)
#undef NUM
#undef TEXT
  size_t ng = in->n_groups > ENGRAM_MAX_WORKER_GROUPS ? ENGRAM_MAX_WORKER_GROUPS : in->n_groups;
  size_t nr = in->n_running > ENGRAM_MAX_WORKER_RUNNING ? ENGRAM_MAX_WORKER_RUNNING : in->n_running;
  if (ng) {
    if (!(w->groups = net_arena_alloc(a, ng * sizeof *w->groups))) return NULL;
    for (size_t i = 0; i < ng; i++)
      if (!(w->groups[i] = arena_dup(a, in->groups[i]))) return NULL;
    w->n_groups = ng;
  }
  if (nr) {
    if (!(w->running = net_arena_alloc(a, nr * sizeof *w->running))) return NULL;
    for (size_t i = 0; i < nr; i++) {
      Engram__Wire__WorkerTask *t = net_arena_alloc(a, sizeof *t);
      if (!t) return NULL;
      engram__wire__worker_task__init(t);
      if (!(t->topic = arena_dup(a, in->running[i].topic)) ||
          !(t->group = arena_dup(a, in->running[i].group)))
        return NULL;
      t->offset = in->running[i].offset;
      t->since_ns = in->running[i].since_ns;
      w->running[i] = t;
    }
    w->n_running = nr;
  }
  return w;
}

int net_worker_from_wire(const Engram__Wire__WorkerInfo *w, engram_worker_info *out) {
  memset(out, 0, sizeof *out);
  if (!w || w->n_groups > ENGRAM_MAX_WORKER_GROUPS || w->n_running > ENGRAM_MAX_WORKER_RUNNING)
    return -1;
#define NUM(type, name) out->name = (type)w->name;
#define TEXT(size, name) \
  if (net_copy_text(out->name, sizeof out->name, w->name)) return -1;
  ENGRAM_WORKER_INFO_FIELDS(NUM, TEXT)
#undef NUM
#undef TEXT
  for (size_t i = 0; i < w->n_groups; i++)
    if (net_copy_text(out->groups[i], sizeof out->groups[i], w->groups[i])) return -1;
  out->n_groups = w->n_groups;
  for (size_t i = 0; i < w->n_running; i++) {
    const Engram__Wire__WorkerTask *t = w->running[i];
    if (!t || net_copy_text(out->running[i].topic, sizeof out->running[i].topic, t->topic) ||
        net_copy_text(out->running[i].group, sizeof out->running[i].group, t->group))
      return -1;
    out->running[i].offset = t->offset;
    out->running[i].since_ns = t->since_ns;
  }
  out->n_running = w->n_running;
  return 0;
}

/* ---------------------------------------------------------------------------------
 * Schedules.
 * ------------------------------------------------------------------------------ */
Engram__Wire__ScheduleConfig *net_schedule_config_to_wire(net_arena *a,
                                                          const engram_schedule_config *c) {
  Engram__Wire__ScheduleConfig *w = net_arena_alloc(a, sizeof *w);
  if (!w) return NULL;
  engram__wire__schedule_config__init(w);
  w->every_ms = c->every_ms;
  w->start_ns = c->start_ns;
  if (!(w->cron = arena_dup(a, net_str(c->cron))) || !(w->tz = arena_dup(a, net_str(c->tz))) ||
      !(w->topic = arena_dup(a, net_str(c->topic))) ||
      !(w->type = arena_dup(a, net_str(c->type))) || !(w->key = arena_dup(a, net_str(c->key))) ||
      !(w->content_type = arena_dup(a, net_str(c->content_type))))
    return NULL;
  if (c->payload_len) {
    if (!(w->payload.data = net_arena_alloc(a, c->payload_len))) return NULL;
    memcpy(w->payload.data, c->payload, c->payload_len);
    w->payload.len = c->payload_len;
  }
  if (c->n_headers) {
    if (!(w->headers = net_arena_alloc(a, c->n_headers * sizeof *w->headers))) return NULL;
    for (size_t i = 0; i < c->n_headers; i++) {
      Engram__Wire__Header *h = net_arena_alloc(a, sizeof *h);
      if (!h) return NULL;
      engram__wire__header__init(h);
      if (!(h->name = arena_dup(a, net_str(c->headers[i].name))) ||
          !(h->value = arena_dup(a, net_str(c->headers[i].value))))
        return NULL;
      w->headers[i] = h;
    }
    w->n_headers = c->n_headers;
  }
  w->missed = (uint32_t)c->missed;
  w->max_catchup = c->max_catchup;
  return w;
}

int net_schedule_config_from_wire(const Engram__Wire__ScheduleConfig *w, engram_schedule_config *c,
                                  engram_header *hs) {
  memset(c, 0, sizeof *c);
  if (!w || w->n_headers > ENGRAM_MAX_HEADERS) return -1;
  for (size_t i = 0; i < w->n_headers; i++) {
    if (!w->headers[i]) return -1;
    hs[i] = (engram_header){w->headers[i]->name, w->headers[i]->value};
  }
  c->every_ms = w->every_ms;
  c->start_ns = w->start_ns;
  c->cron = w->cron;
  c->tz = w->tz;
  c->topic = w->topic;
  c->type = w->type;
  c->payload = w->payload.data;
  c->payload_len = w->payload.len;
  c->key = w->key;
  c->content_type = w->content_type;
  c->headers = w->n_headers ? hs : NULL;
  c->n_headers = w->n_headers;
  c->missed = (engram_missed)w->missed;
  c->max_catchup = w->max_catchup;
  return 0;
}

Engram__Wire__ScheduleInfo *net_schedule_to_wire(net_arena *a, const engram_schedule_info *in) {
  Engram__Wire__ScheduleInfo *w = net_arena_alloc(a, sizeof *w);
  if (!w) return NULL;
  engram__wire__schedule_info__init(w);
  if (!(w->name = arena_dup(a, in->name))) return NULL;
  if (!(w->config = net_schedule_config_to_wire(a, &in->config))) return NULL;
#define X(type, name) w->name = in->name;
  ENGRAM_SCHEDULE_INFO_FIELDS(X)
#undef X
  if (!(w->last_error = arena_dup(a, in->last_error))) return NULL;
  return w;
}

int net_schedule_from_wire(const Engram__Wire__ScheduleInfo *w, engram_schedule_info *out,
                           engram_header *hs) {
  memset(out, 0, sizeof *out);
  if (!w || net_copy_text(out->name, sizeof out->name, w->name)) return -1;
  if (net_schedule_config_from_wire(w->config, &out->config, hs)) return -1;
#define X(type, name) out->name = (type)w->name;
  ENGRAM_SCHEDULE_INFO_FIELDS(X)
#undef X
  if (net_copy_text(out->last_error, sizeof out->last_error, net_str(w->last_error))) return -1;
  return 0;
}

static void zmq_getpid_slot(const char *name, void **slot, void *ctx) {
  if (!strcmp(name, "getpid")) *(void ***)ctx = slot;
}

static void zmq_hook(void) {
  void **slot = NULL;
  if (got_each((void *)zmq_ctx_new, "libzmq", zmq_getpid_slot, &slot) < 0 || !slot) return;
  void **const slots[1] = {slot};
  void *const hooks[1] = {(void *)self_pid};
  got_set(slots, hooks, 1);
}

void *net_zmq_ctx_new(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, zmq_hook);
  return zmq_ctx_new();
}

int net_endpoint_check(const char *what, const char *ep, int binding) {
  if (!strstr(ep, "://"))
    return log_error(NULL, ENGRAM_EINVAL,
                     "%s %.300s: an endpoint is TRANSPORT://ADDRESS: tcp://HOST:PORT, "
                     "ipc:///PATH or inproc://NAME (e.g. tcp://127.0.0.1:7450)",
                     what, ep);
  if (!strncmp(ep, "http://", 7) || !strncmp(ep, "https://", 8))
    return log_error(NULL, ENGRAM_EINVAL,
                     "%s %.300s: engram's requests travel over ZeroMQ, not HTTP: give the "
                     "daemon's --listen endpoint (tcp://HOST:PORT, e.g. tcp://127.0.0.1:7450); "
                     "--http serves the dashboard only",
                     what, ep);
  if (strncmp(ep, "tcp://", 6) != 0) return 0; /* ipc and inproc have no port */
  /* libzmq reads a TCP port with strtoul and keeps its low 16 bits: port 99999 would be
   * 34463 without a word, and a port with text after its digits the digits alone. */
  const char *colon = strrchr(ep + 6, ':');
  const char *port = colon ? colon + 1 : "";
  if (binding && !strcmp(port, "*")) return 0;
  char *end = NULL;
  errno = 0;
  unsigned long n = *port >= '0' && *port <= '9' ? strtoul(port, &end, 10) : 0;
  if (!colon || colon == ep + 6 || !end || *end || errno || n > 65535 || (!binding && n == 0))
    return log_error(NULL, ENGRAM_EINVAL,
                     "%s %.300s: the TCP port must be a number from %d to 65535%s (e.g. "
                     "tcp://127.0.0.1:7450)",
                     what, ep, binding ? 0 : 1, binding ? ", or * for any free one" : "");
  return 0;
}
