/* test_net_garbage.c — thousands of random, truncated, mutated and malformed frames at a
 * running daemon: every frame gets an error reply (or a correct answer when a mutation
 * happens to be a valid request), the daemon never stops serving a well-behaved client
 * running alongside, and the log verifies afterwards. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"
#include "net/net.h"
#include "schema/wire.pb-c.h"
#include "test_net_daemon.h"

#define FRAMES 6000

#define OK(log, call) TU_OK(log, call)

/* ---------------------------------------------------------------------------------
 * Valid requests to mutate. None names the topic the well-behaved client uses, and the
 * daemon runs in the test's temp dir, so a mutation that turns into a drop or a backup
 * cannot hurt the check or the tree.
 * ------------------------------------------------------------------------------ */
struct frame {
  uint8_t *p;
  size_t n;
};

static struct frame pack(Engram__Wire__Request *rq) {
  struct frame f;
  f.n = engram__wire__request__get_packed_size(rq);
  f.p = malloc(f.n ? f.n : 1);
  engram__wire__request__pack(rq, f.p);
  return f;
}

/* Completes the request in rq (version 1, the id, the op with its field set to v) and
 * adds it packed to out. */
#define ADD(id_, op_, field_, v_)                 \
  do {                                            \
    rq.version = 1;                               \
    rq.id = (id_);                                \
    rq.op_case = ENGRAM__WIRE__REQUEST__OP_##op_; \
    rq.field_ = (v_);                             \
    out[n++] = pack(&rq);                         \
  } while (0)

static int templates(struct frame *out) {
  int n = 0;
  Engram__Wire__Request rq;
  /* append of two events with every field */
  {
    engram__wire__request__init(&rq);
    Engram__Wire__Append a = ENGRAM__WIRE__APPEND__INIT;
    Engram__Wire__Event e[2] = {ENGRAM__WIRE__EVENT__INIT, ENGRAM__WIRE__EVENT__INIT};
    Engram__Wire__Event *ep[2] = {&e[0], &e[1]};
    Engram__Wire__Header h = ENGRAM__WIRE__HEADER__INIT, *hp = &h;
    h.name = "source";
    h.value = "fuzz";
    for (int i = 0; i < 2; i++) {
      e[i].type = "memory.saved";
      e[i].has_key = 1;
      e[i].key = "conv-1:D1:1";
      e[i].payload.data = (uint8_t *)"{\"text\":\"hello\"}";
      e[i].payload.len = 16;
      e[i].content_type = "application/json";
      e[i].headers = &hp;
      e[i].n_headers = 1;
    }
    e[1].idempotency_key = "idem-1";
    e[1].has_idempotency_key = 1;
    a.topic = "memory";
    a.events = ep;
    a.n_events = 2;
    ADD(7, APPEND, append, &a);
  }
  {
    engram__wire__request__init(&rq);
    Engram__Wire__ReadRange r = ENGRAM__WIRE__READ_RANGE__INIT;
    r.topic = "memory";
    r.from = 1;
    r.max = 5;
    ADD(8, READ_RANGE, read_range, &r);
  }
  {
    engram__wire__request__init(&rq);
    Engram__Wire__Fetch f = ENGRAM__WIRE__FETCH__INIT;
    f.topic = "memory";
    f.group = "g";
    f.consumer = "c1";
    f.max = 3;
    f.wait_ms = 0;
    ADD(9, FETCH, fetch, &f);
  }
  {
    engram__wire__request__init(&rq);
    Engram__Wire__Ack a = ENGRAM__WIRE__ACK__INIT;
    Engram__Wire__AckItem it = ENGRAM__WIRE__ACK_ITEM__INIT, *ip = &it;
    it.offset = 1;
    it.attempt = 1;
    it.has_result = 1;
    it.result.data = (uint8_t *)"ok";
    it.result.len = 2;
    a.topic = "memory";
    a.group = "g";
    a.items = &ip;
    a.n_items = 1;
    ADD(10, ACK, ack, &a);
  }
  {
    engram__wire__request__init(&rq);
    Engram__Wire__GroupCreate g = ENGRAM__WIRE__GROUP_CREATE__INIT;
    Engram__Wire__GroupConfig c = ENGRAM__WIRE__GROUP_CONFIG__INIT;
    char *filters[] = {"memory.*", "memory.saved"};
    uint64_t backoff[] = {10, 20};
    c.filters = filters;
    c.n_filters = 2;
    c.backoff_ms = backoff;
    c.n_backoff_ms = 2;
    c.max_deliver = 3;
    g.topic = "memory";
    g.group = "h";
    g.config = &c;
    ADD(11, GROUP_CREATE, group_create, &g);
  }
  {
    engram__wire__request__init(&rq);
    Engram__Wire__Nack k = ENGRAM__WIRE__NACK__INIT;
    k.topic = "memory";
    k.group = "g";
    k.offset = 2;
    k.attempt = 1;
    k.delay_ms = -1;
    k.has_error = 1;
    k.error = "boom";
    ADD(12, NACK, nack, &k);
  }
  {
    engram__wire__request__init(&rq);
    Engram__Wire__Hello h = ENGRAM__WIRE__HELLO__INIT;
    h.client = "garbage test";
    ADD(13, HELLO, hello, &h);
  }
  {
    engram__wire__request__init(&rq);
    Engram__Wire__TxnCommit t = ENGRAM__WIRE__TXN_COMMIT__INIT;
    Engram__Wire__TxnOp o[2] = {ENGRAM__WIRE__TXN_OP__INIT, ENGRAM__WIRE__TXN_OP__INIT};
    Engram__Wire__TxnOp *op[2] = {&o[0], &o[1]};
    Engram__Wire__TxnAck ta = ENGRAM__WIRE__TXN_ACK__INIT;
    Engram__Wire__AckItem it = ENGRAM__WIRE__ACK_ITEM__INIT;
    Engram__Wire__TxnAppend tp = ENGRAM__WIRE__TXN_APPEND__INIT;
    Engram__Wire__Event e = ENGRAM__WIRE__EVENT__INIT;
    it.offset = 3;
    ta.topic = "memory";
    ta.group = "g";
    ta.item = &it;
    e.type = "memory.derived";
    e.payload.data = (uint8_t *)"x";
    e.payload.len = 1;
    tp.topic = "memory";
    tp.event = &e;
    o[0].op_case = ENGRAM__WIRE__TXN_OP__OP_ACK;
    o[0].ack = &ta;
    o[1].op_case = ENGRAM__WIRE__TXN_OP__OP_APPEND;
    o[1].append = &tp;
    t.ops = op;
    t.n_ops = 2;
    ADD(14, TXN_COMMIT, txn_commit, &t);
  }
  return n;
}
#undef ADD

/* ---------------------------------------------------------------------------------
 * Malformed frames.
 * ------------------------------------------------------------------------------ */
static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

/* Builds one bad (or mutated) frame into buf; returns its length. */
static size_t make_garbage(uint64_t *rs, const struct frame *t, int nt, uint8_t *buf, size_t cap,
                           int *kind) {
  const struct frame *f = &t[tu_rand(rs) % (uint64_t)nt];
  size_t n = 0;
  *kind = (int)(tu_rand(rs) % 10);
  switch (*kind) {
    case 0: /* random bytes */
      n = tu_rand(rs) % 300;
      for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)tu_rand(rs);
      break;
    case 1: /* a valid request cut short */
      n = f->n ? tu_rand(rs) % f->n : 0;
      memcpy(buf, f->p, n);
      break;
    case 2: /* a few bits flipped */
    case 3:
      n = f->n;
      memcpy(buf, f->p, n);
      for (int k = 1 + (int)(tu_rand(rs) % 4); k > 0 && n; k--)
        buf[tu_rand(rs) % n] ^= (uint8_t)(1u << (tu_rand(rs) % 8));
      break;
    case 4: { /* bytes inserted or deleted */
      n = f->n;
      memcpy(buf, f->p, n);
      size_t at = n ? tu_rand(rs) % n : 0;
      if (tu_rand(rs) & 1 && n < cap - 8) {
        memmove(buf + at + 3, buf + at, n - at);
        buf[at] = (uint8_t)tu_rand(rs);
        buf[at + 1] = 0xff;
        buf[at + 2] = (uint8_t)tu_rand(rs);
        n += 3;
      } else if (n) {
        memmove(buf + at, buf + at + 1, n - at - 1);
        n--;
      }
      break;
    }
    case 5: { /* another protocol version */
      uint8_t v[16];
      size_t vn = put_varint(v, 1 << 3);
      vn += put_varint(v + vn, 2 + tu_rand(rs) % 1000);
      memcpy(buf, f->p, f->n);
      memcpy(buf + f->n, v, vn); /* a later field wins */
      n = f->n + vn;
      break;
    }
    case 6: { /* an operation this daemon does not know */
      n = 0;
      n += put_varint(buf + n, 1 << 3);
      n += put_varint(buf + n, 1);
      n += put_varint(buf + n, ((uint64_t)(100 + tu_rand(rs) % 1000) << 3) | 2);
      n += put_varint(buf + n, 2);
      buf[n++] = 0x08;
      buf[n++] = 0x01;
      break;
    }
    case 7: { /* messages nested far too deep */
      int depth = 20 + (int)(tu_rand(rs) % 100);
      n = 0;
      n += put_varint(buf + n, 1 << 3);
      n += put_varint(buf + n, 1);
      /* TxnCommit(37) -> ops(1) -> append(2) -> event(2) -> ...: nest length prefixes */
      uint8_t *p = buf + n;
      size_t len = 0;
      for (int i = 0; i < depth && len + 12 < cap - n; i++) {
        uint8_t hdr[12];
        size_t h = put_varint(hdr, ((uint64_t)(i == depth - 1 ? 37 : 1) << 3) | 2);
        h += put_varint(hdr + h, len);
        memmove(p + h, p, len);
        memcpy(p, hdr, h);
        len += h;
      }
      n += len;
      break;
    }
    case 8: { /* a text field with a NUL in it, or a length past the end */
      n = f->n;
      memcpy(buf, f->p, n);
      const char *m = memmem(buf, n, "memory", 6);
      if (m && tu_rand(rs) & 1) {
        buf[m - (const char *)buf + 3] = 0;
      } else {
        n = 0;
        n += put_varint(buf + n, 1 << 3);
        n += put_varint(buf + n, 1);
        n += put_varint(buf + n, (19 << 3) | 2);
        n += put_varint(buf + n, 1000000);
        buf[n++] = 0x0a;
      }
      break;
    }
    default: /* a varint that never ends, or one too long */
      n = 0;
      n += put_varint(buf + n, 1 << 3);
      for (int i = 0; i < 11; i++) buf[n++] = 0xff;
      if (tu_rand(rs) & 1) buf[n++] = 0x01;
      break;
  }
  return n;
}

/* ---------------------------------------------------------------------------------
 * A well-behaved client running during the flood.
 * ------------------------------------------------------------------------------ */
struct good {
  const char *ep;
  volatile int stop;
  int rc;
  int rounds;
  char why[256];
};

static void *good_client(void *arg) {
  struct good *g = arg;
  engram_connect_options o = {.timeout_ms = 5000};
  engram *log = NULL;
  if ((g->rc = engram_connect(g->ep, &o, &log))) {
    snprintf(g->why, sizeof g->why, "connect: %s", engram_errmsg(NULL));
    return NULL;
  }
  uint64_t expect = 1;
  while (!g->stop && !g->rc) {
    char payload[64];
    snprintf(payload, sizeof payload, "good-%d", g->rounds);
    engram_event e = {.type = "memory.saved", .payload = payload, .payload_len = strlen(payload)};
    uint64_t off = 0;
    if ((g->rc = engram_append(log, "sentinel", &e, &off, NULL))) {
      snprintf(g->why, sizeof g->why, "append: %s", engram_errmsg(log));
      break;
    }
    engram_batch *b = NULL;
    if ((g->rc = engram_read(log, "sentinel", off, &b))) {
      snprintf(g->why, sizeof g->why, "read: %s", engram_errmsg(log));
      break;
    }
    if (off != expect || b->count != 1 || b->events[0].payload_len != strlen(payload) ||
        memcmp(b->events[0].payload, payload, strlen(payload))) {
      g->rc = -1000;
      snprintf(g->why, sizeof g->why, "round %d: wrong answer (offset %llu)", g->rounds,
               (unsigned long long)off);
    }
    engram_batch_free(b);
    expect++;
    g->rounds++;
  }
  engram_close(log);
  return NULL;
}

static Engram__Wire__Reply *recv_reply(void *sock, int timeout_ms) {
  zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
  if (zmq_poll(&it, 1, timeout_ms) <= 0) return NULL;
  zmq_msg_t m;
  zmq_msg_init(&m);
  if (zmq_msg_recv(&m, sock, 0) < 0) return NULL;
  if (zmq_msg_size(&m) == 0 && zmq_msg_more(&m)) { /* REQ envelope */
    zmq_msg_close(&m);
    zmq_msg_init(&m);
    zmq_msg_recv(&m, sock, 0);
  }
  Engram__Wire__Reply *rp = engram__wire__reply__unpack(NULL, zmq_msg_size(&m), zmq_msg_data(&m));
  zmq_msg_close(&m);
  return rp;
}

static void thousands_of_bad_frames_leave_the_daemon_serving_and_the_log_intact(void **state) {
  (void)state;
  td d;
  td_init(&d, "net-garbage");
  d.o.durability = ENGRAM_DURABILITY_ASYNC;
  d.o.max_message = 1 << 20;
  td_start(&d);
  engram_connect_options co = {.timeout_ms = 5000};
  engram *r = td_connect_within(d.ep, 5000, &co);
  assert_non_null(r);
  OK(r, engram_topic_create(r, "memory", NULL));
  OK(r, engram_topic_create(r, "sentinel", NULL));
  OK(r, engram_group_create(r, "memory", "g", NULL));
  for (int i = 0; i < 50; i++) {
    engram_event e = {.type = "memory.saved", .payload = "{}", .payload_len = 2};
    OK(r, engram_append(r, "memory", &e, NULL, NULL));
  }

  struct good g = {.ep = d.ep};
  pthread_t gt;
  pthread_create(&gt, NULL, good_client, &g);

  struct frame t[16];
  int nt = templates(t);
  void *ctx = zmq_ctx_new();
  void *dealer = zmq_socket(ctx, ZMQ_DEALER);
  int zero = 0;
  zmq_setsockopt(dealer, ZMQ_LINGER, &zero, sizeof zero);
  assert_int_equal(zmq_connect(dealer, d.ep), 0);

  uint64_t rs = 0x5eed5eedull;
  uint8_t *buf = malloc(1 << 16);
  int replies = 0, errors = 0, malformed = 0;
  int kinds[10] = {0};
  for (int i = 0; i < FRAMES; i++) {
    int kind;
    size_t n = make_garbage(&rs, t, nt, buf, 1 << 16, &kind);
    kinds[kind]++;
    if (i % 97 == 0) {
      /* Several frames in one message: one error reply. */
      zmq_send(dealer, buf, n, ZMQ_SNDMORE);
      zmq_send(dealer, "x", 1, ZMQ_SNDMORE);
      zmq_send(dealer, buf, n, 0);
    } else {
      zmq_send(dealer, buf, n, 0);
    }
    Engram__Wire__Reply *rp = recv_reply(dealer, 5000);
    if (!rp) {
      fprintf(stderr, "frame %d (kind %d, %zu bytes): no reply\n", i, kind, n);
      fail();
    }
    replies++;
    assert_true(rp->code <= 0 && rp->code >= ENGRAM_EINTERNAL);
    if (rp->code) {
      errors++;
      assert_true(rp->error[0] != '\0');
    }
    if (rp->code == ENGRAM_EPROTO || rp->code == ENGRAM_EVERSION) malformed++;
    if (i % 97 == 0) assert_int_equal(rp->code, ENGRAM_EPROTO);
    engram__wire__reply__free_unpacked(rp, NULL);
  }
  fprintf(stderr, "%d frames: %d replies, %d errors, %d malformed or wrong version\n", FRAMES,
          replies, errors, malformed);
  assert_int_equal(replies, FRAMES);
  assert_true(malformed > FRAMES / 3);

  /* A REQ socket's envelope is answered in kind. */
  void *req = zmq_socket(ctx, ZMQ_REQ);
  zmq_setsockopt(req, ZMQ_LINGER, &zero, sizeof zero);
  zmq_connect(req, d.ep);
  zmq_send(req, t[6].p, t[6].n, 0);
  Engram__Wire__Reply *rp = recv_reply(req, 5000);
  assert_non_null(rp);
  assert_int_equal(rp->code, 0);
  assert_int_equal(rp->result_case, ENGRAM__WIRE__REPLY__RESULT_HELLO);
  assert_int_equal(rp->id, 13);
  engram__wire__reply__free_unpacked(rp, NULL);
  zmq_close(req);

  /* The daemon counted them. */
  {
    Engram__Wire__Request rq = ENGRAM__WIRE__REQUEST__INIT;
    Engram__Wire__Stats st = ENGRAM__WIRE__STATS__INIT;
    rq.version = 1;
    rq.id = 4242;
    rq.op_case = ENGRAM__WIRE__REQUEST__OP_STATS;
    rq.stats = &st;
    struct frame f = pack(&rq);
    zmq_send(dealer, f.p, f.n, 0);
    free(f.p);
    Engram__Wire__Reply *sr = recv_reply(dealer, 5000);
    assert_non_null(sr);
    assert_int_equal(sr->id, 4242);
    assert_int_equal(sr->result_case, ENGRAM__WIRE__REPLY__RESULT_STATS);
    assert_true(sr->stats->bad_requests >= (uint64_t)malformed);
    assert_true(sr->stats->requests >= FRAMES);
    assert_string_equal(sr->stats->version, ENGRAM_VERSION_STRING);
    engram__wire__reply__free_unpacked(sr, NULL);
  }

  /* Over the size limit: the connection is dropped, nothing else happens. */
  size_t big = (1 << 20) + 100;
  uint8_t *huge = calloc(1, big);
  zmq_send(dealer, huge, big, 0);
  free(huge);
  tu_sleep_ms(200);

  g.stop = 1;
  pthread_join(gt, NULL);
  if (g.rc) fprintf(stderr, "well-behaved client: %s\n", g.why);
  assert_int_equal(g.rc, 0);
  assert_true(g.rounds > 10);

  /* Still serving, still right, and the log verifies. */
  engram_batch *b = NULL;
  OK(r, engram_read_range(r, "sentinel", 1, 100000, &b));
  assert_int_equal(b->count, (size_t)g.rounds);
  for (size_t i = 0; i < b->count; i++) {
    char payload[64];
    snprintf(payload, sizeof payload, "good-%zu", i);
    assert_int_equal(b->events[i].payload_len, strlen(payload));
    assert_memory_equal(b->events[i].payload, payload, strlen(payload));
  }
  engram_batch_free(b);
  engram_verify_report rep;
  OK(r, engram_verify(r, &rep));
  assert_int_equal(rep.damaged, 0);
  engram_close(r);
  assert_true(td_log_has(&d, "client_error"));

  free(buf);
  for (int i = 0; i < nt; i++) free(t[i].p);
  zmq_close(dealer);
  zmq_ctx_term(ctx);
  assert_int_equal(td_stop(&d), 0);
  td_done(&d);
}

/* Whether the file holds a C0 control other than newline, a DEL or a C1 control. */
static int file_has_control_bytes(const char *path) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  int c, prev = 0, found = 0;
  while (!found && (c = fgetc(f)) != EOF) {
    found = (c < 0x20 && c != '\n') || c == 0x7F || (prev == 0xC2 && c >= 0x80 && c <= 0x9F);
    prev = c;
  }
  fclose(f);
  return found;
}

/* A transaction whose append names `topic` and carries no event: refused as malformed,
 * and logged with the topic quoted. */
static void send_txn_without_event(void *dealer, const char *topic) {
  Engram__Wire__TxnAppend ta = ENGRAM__WIRE__TXN_APPEND__INIT;
  ta.topic = (char *)topic;
  Engram__Wire__TxnOp op = ENGRAM__WIRE__TXN_OP__INIT, *opp = &op;
  op.op_case = ENGRAM__WIRE__TXN_OP__OP_APPEND;
  op.append = &ta;
  Engram__Wire__TxnCommit t = ENGRAM__WIRE__TXN_COMMIT__INIT;
  t.ops = &opp;
  t.n_ops = 1;
  Engram__Wire__Request rq;
  engram__wire__request__init(&rq);
  rq.version = ENGRAM_PROTOCOL_VERSION;
  rq.id = 99;
  rq.op_case = ENGRAM__WIRE__REQUEST__OP_TXN_COMMIT;
  rq.txn_commit = &t;
  struct frame f = pack(&rq);
  assert_true(zmq_send(dealer, f.p, f.n, 0) >= 0);
  free(f.p);
  Engram__Wire__Reply *rp = recv_reply(dealer, 10000);
  assert_non_null(rp);
  assert_int_equal(rp->code, ENGRAM_EPROTO);
  engram__wire__reply__free_unpacked(rp, NULL);
}

static void client_text_reaches_the_daemon_log_escaped(void **state) {
  (void)state;
  /* ESC [31m, BEL, a C1 CSI, a right-to-left override and a byte that is not UTF-8. */
  const char *topic =
      "\x1b[31mred\x07 \xc2\x9b"
      "2J \xe2\x80\xae \xff";
  for (int json = 0; json <= 1; json++) {
    td d;
    td_init(&d, "net-logesc");
    d.o.log_json = json;
    td_start(&d);
    void *ctx = zmq_ctx_new();
    void *dealer = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(dealer, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(dealer, d.ep), 0);
    send_txn_without_event(dealer, topic);
    zmq_close(dealer);
    zmq_ctx_term(ctx);
    assert_int_equal(td_stop(&d), 0);
    if (file_has_control_bytes(d.logfile)) {
      td_dump_log(&d);
      fail_msg("the daemon's log (%s) holds raw control bytes", json ? "JSON" : "text");
    }
    if (json) {
      assert_true(td_log_has(&d, "\\u001b[31mred\\u0007 \\u009b2J \\u202e \\\\xff"));
    } else {
      assert_true(td_log_has(&d, "\\x1b[31mred\\x07 \\u009b2J \\u202e \\xff"));
    }
    td_done(&d);
  }
}

/* The daemon answers a bad frame with what net_request_decode and net_request_check (the
 * fuzz target's path) say about it: one decoder, so the fuzzer tests what the daemon runs. */
static void bad_frames_get_the_decoders_code_and_message(void **state) {
  (void)state;
  struct {
    const char *what;
    uint8_t p[64];
    size_t n;
    int code;
    const char *msg;
  } cases[] = {
      {"truncated tag",
       {0x08, 0x01, 0x80},
       3,
       ENGRAM_EPROTO,
       "malformed request: truncated field tag"},
      {"NUL in a topic",
       {0x08, 0x01, 0x10, 0x05, 0x72, 0x03, 0x0a, 0x01, 0x00},
       9,
       ENGRAM_EPROTO,
       "malformed request: text field holds a NUL byte"},
      {"an id alone",
       {0x10, 0x07},
       2,
       ENGRAM_EPROTO,
       "malformed request: no protocol version and no operation"},
      {"version 2",
       {0x08, 0x02, 0x10, 0x07, 0x52, 0x00},
       6,
       ENGRAM_EVERSION,
       "protocol version 2 not supported (this daemon speaks 1)"},
      {"no operation", {0x08, 0x01, 0x10, 0x07}, 4, ENGRAM_EPROTO, "unknown operation 0"},
      {"unknown operation",
       {0x08, 0x01, 0x10, 0x07, 0xba, 0x3e, 0x00},
       7,
       ENGRAM_EPROTO,
       "unknown operation 999"},
      {"hello as a number",
       {0x08, 0x01, 0x10, 0x07, 0x50, 0x01},
       6,
       ENGRAM_EPROTO,
       "malformed request: does not decode"},
      {"dlq purge: all and offsets",
       {0x08, 0x01, 0x10, 0x07, 0x9a, 0x02, 0x0a, 0x0a, 0x01, 't', 0x12, 0x01, 'g', 0x18, 0x01,
        0x20, 0x05},
       17,
       ENGRAM_EINVAL,
       "dlq t/g: both all and offsets given"},
  };
  td d;
  td_init(&d, "net-badcodes");
  td_start(&d);
  void *ctx = zmq_ctx_new();
  void *dealer = zmq_socket(ctx, ZMQ_DEALER);
  int zero = 0;
  zmq_setsockopt(dealer, ZMQ_LINGER, &zero, sizeof zero);
  assert_int_equal(zmq_connect(dealer, d.ep), 0);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t n = cases[i].n;
    net_peek pk;
    int code = 0;
    char why[512] = "";
    Engram__Wire__Request *rq = net_request_decode(cases[i].p, n, &pk, &code, why, sizeof why);
    if (rq) {
      code = net_request_check(rq, why, sizeof why);
      engram__wire__request__free_unpacked(rq, NULL);
    }
    zmq_send(dealer, cases[i].p, n, 0);
    Engram__Wire__Reply *rp = recv_reply(dealer, 5000);
    assert_non_null(rp);
    if (rp->code != cases[i].code || strcmp(rp->error, cases[i].msg) || code != rp->code ||
        strcmp(why, rp->error))
      fail_msg("%s: daemon %s \"%s\", decoder %s \"%s\", expected %s \"%s\"", cases[i].what,
               engram_errname(rp->code), rp->error, engram_errname(code), why,
               engram_errname(cases[i].code), cases[i].msg);
    engram__wire__reply__free_unpacked(rp, NULL);
  }
  zmq_close(dealer);
  zmq_ctx_term(ctx);
  assert_int_equal(td_stop(&d), 0);
  td_done(&d);
}

int main(void) {
  tu_test_filter();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(thousands_of_bad_frames_leave_the_daemon_serving_and_the_log_intact),
      cmocka_unit_test(client_text_reaches_the_daemon_log_escaped),
      cmocka_unit_test(bad_frames_get_the_decoders_code_and_message),
  };
  return cmocka_run_group_tests_name("net_garbage", tests, NULL, NULL);
}
