/* fuzz_request.c — libFuzzer target for the daemon's request path: net_request_peek (the
 * structural scan and version check the daemon's main thread runs), then protobuf-c's
 * decoder into an arena and the operation check its workers run (net_request_unpack_in:
 * the same functions; a re-encoded request decodes again through net_request_decode, the
 * other allocator), the field checks
 * (net_request_check, as a worker runs them before the API sees a request) and the
 * conversions to API structs; and, on the same bytes, the client's reply path.
 *
 * Input: one request frame as a client would send it (schema/wire.proto, Request). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/net.h"

static void bug(const char *what) {
  fprintf(stderr, "fuzz_request: %s\n", what);
  abort();
}

/* Reads every byte of a string so the address sanitizer sees a bad one. */
static size_t touch(const char *s) {
  if (!s) bug("NULL text after decoding");
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

static size_t touch_event(const engram_event *e) {
  size_t sum = touch(e->type);
  if (e->key) sum += touch(e->key);
  if (e->content_type) sum += touch(e->content_type);
  if (e->idempotency_key) sum += touch(e->idempotency_key);
  const unsigned char *p = e->payload;
  for (size_t i = 0; i < e->payload_len; i++) sum += p[i];
  for (size_t i = 0; i < e->n_headers; i++)
    sum += touch(e->headers[i].name) + touch(e->headers[i].value);
  return sum;
}

static void exercise(const Engram__Wire__Request *rq) {
  volatile size_t sink = 0;
  if (rq->op_case == ENGRAM__WIRE__REQUEST__OP_APPEND) {
    engram_event *evs;
    engram_header *hs;
    const Engram__Wire__Append *a = rq->append;
    if (net_events_from_wire(a->events, a->n_events, &evs, &hs) == 0) {
      for (size_t i = 0; i < a->n_events; i++) sink += touch_event(&evs[i]);
      free(evs);
      free(hs);
    }
    sink += touch(a->topic);
  } else if (rq->op_case == ENGRAM__WIRE__REQUEST__OP_TXN_COMMIT) {
    for (size_t i = 0; i < rq->txn_commit->n_ops; i++) {
      const Engram__Wire__TxnOp *o = rq->txn_commit->ops[i];
      if (o->op_case == ENGRAM__WIRE__TXN_OP__OP_APPEND) {
        engram_event e;
        engram_header h[ENGRAM_MAX_HEADERS];
        net_event_from_wire(o->append->event, &e, h);
        sink += touch_event(&e) + touch(o->append->topic);
      } else {
        sink += touch(o->ack->topic) + touch(o->ack->group) + o->ack->item->result.len;
      }
    }
  } else if (rq->op_case == ENGRAM__WIRE__REQUEST__OP_GROUP_CREATE && rq->group_create->config) {
    const Engram__Wire__GroupConfig *c = rq->group_create->config;
    for (size_t i = 0; i < c->n_filters; i++) sink += touch(c->filters[i]);
    for (size_t i = 0; i < c->n_backoff_ms; i++) sink += c->backoff_ms[i];
  } else if (rq->op_case == ENGRAM__WIRE__REQUEST__OP_ACK) {
    for (size_t i = 0; i < rq->ack->n_items; i++) sink += rq->ack->items[i]->result.len;
  }
  (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* An exact-size copy: a read one byte past the frame is out of bounds. */
  uint8_t *buf = malloc(size ? size : 1);
  if (!buf) return 0;
  memcpy(buf, data, size);

  net_peek pk;
  int code = 0;
  char why[512] = "";
  /* As the daemon decodes: the scan on its main thread, then protobuf-c into an arena. */
  net_arena mem = {0};
  Engram__Wire__Request *rq = NULL;
  code = net_request_peek(buf, size, &pk, why, sizeof why);
  if (!code) rq = net_request_unpack_in(&mem, buf, size, &pk, &code, why, sizeof why);
  if (!rq) {
    if (code != ENGRAM_EPROTO && code != ENGRAM_EVERSION) bug("refused without EPROTO or EVERSION");
    if (!why[0]) bug("refused without a reason");
  } else {
    if (code != 0 || pk.version != ENGRAM_PROTOCOL_VERSION) bug("accepted with a wrong version");
    if (rq->op_case == ENGRAM__WIRE__REQUEST__OP__NOT_SET) bug("accepted without an operation");
    int rc = net_request_check(rq, why, sizeof why);
    if (rc > 0 || (rc && !why[0])) bug("a check failed without a code or a reason");
    if (rc == 0) exercise(rq);
    /* What was accepted encodes and decodes again. */
    size_t n = engram__wire__request__get_packed_size(rq);
    uint8_t *again = malloc(n ? n : 1);
    if (again) {
      engram__wire__request__pack(rq, again);
      net_peek pk2;
      Engram__Wire__Request *rq2 = net_request_decode(again, n, &pk2, &code, why, sizeof why);
      if (!rq2) bug("a decoded request does not survive re-encoding");
      if (rq2->op_case != rq->op_case || rq2->id != rq->id) bug("re-encoding changed the request");
      engram__wire__request__free_unpacked(rq2, NULL);
      free(again);
    }
  }
  net_arena_free(&mem);

  /* The client's side: the same bytes as a reply. */
  const char *reason;
  if (net_wire_scan(&engram__wire__reply__descriptor, buf, size, &pk, &reason) == 0) {
    Engram__Wire__Reply *rp = engram__wire__reply__unpack(NULL, size, buf);
    if (rp) {
      volatile size_t sink = touch(rp->error);
      if (rp->result_case == ENGRAM__WIRE__REPLY__RESULT_EVENTS)
        for (size_t i = 0; i < rp->events->n_events; i++)
          sink += touch(rp->events->events[i]->type);
      (void)sink;
      engram__wire__reply__free_unpacked(rp, NULL);
    }
  } else if (!reason || !reason[0]) {
    bug("scan refused without a reason");
  }
  free(buf);
  return 0;
}
