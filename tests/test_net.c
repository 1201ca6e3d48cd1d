/* test_net.c — the daemon and the remote client: every API call through `engram serve`
 * against an embedded handle doing the same (same results, codes and messages), long
 * polls, pipelining, out-of-order replies, timeouts, restarts, a second daemon, SIGTERM,
 * CURVE, notifications, the daemon's log and the CLI over --connect. The daemon runs in
 * a forked child on an ipc endpoint in the test's temp dir. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"
#include "test_net_daemon.h"

#define OK(log, call) TU_OK(log, call)

static engram *conn(td *d, uint32_t timeout_ms) {
  engram_connect_options o = {.timeout_ms = timeout_ms};
  engram *log = td_connect_within(d->ep, 5000, &o);
  assert_non_null(log);
  return log;
}

/* A daemon started in a new temp dir named after tag, and a client connected to it. */
static engram *serve_and_conn(td *d, const char *tag) {
  td_init(d, tag);
  td_start(d);
  return conn(d, 5000);
}

/* Closes the client, stops the daemon (which must exit 0) and removes its temp dir. */
static void conn_and_serve_done(td *d, engram *r) {
  engram_close(r);
  assert_int_equal(td_stop(d), 0);
  td_done(d);
}

static engram_event ev_of(const char *type, const char *key, const char *payload) {
  engram_event e = {.type = type, .key = key, .payload = payload, .payload_len = strlen(payload)};
  return e;
}

/* ---------------------------------------------------------------------------------
 * The log API.
 * ------------------------------------------------------------------------------ */
static void every_log_operation_works_through_the_daemon(void **state) {
  (void)state;
  td d;
  engram *r = serve_and_conn(&d, "net-log");

  engram_topic_config cfg = {.max_payload = 4096, .compress_threshold = 64};
  OK(r, engram_topic_create(r, "memory", &cfg));
  assert_int_equal(engram_topic_create(r, "memory", NULL), ENGRAM_EEXIST);
  OK(r, engram_topic_create(r, "other", NULL));

  /* One event with every field. */
  engram_header hs[2] = {{"source", "api"}, {"trace", ""}};
  char big[1000];
  memset(big, 'x', sizeof big);
  engram_event e = {.type = "memory.saved",
                    .key = "conv-1:D1:1",
                    .payload = big,
                    .payload_len = sizeof big,
                    .content_type = "text/plain",
                    .headers = hs,
                    .n_headers = 2,
                    .idempotency_key = "idem-1",
                    .deliver_at_ns = 0};
  uint64_t off = 0;
  int dup = -1;
  OK(r, engram_append(r, "memory", &e, &off, &dup));
  assert_int_equal(off, 1);
  assert_int_equal(dup, 0);
  /* The same idempotency key: the first offset, flagged duplicate. */
  OK(r, engram_append(r, "memory", &e, &off, &dup));
  assert_int_equal(off, 1);
  assert_int_equal(dup, 1);

  engram_event batch[3] = {ev_of("memory.updated", NULL, "a"), ev_of("memory.queried", "", "b"),
                           ev_of("memory.saved", "k", "")};
  uint64_t offs[3];
  int dups[3];
  OK(r, engram_append_batch(r, "memory", batch, 3, offs, dups));
  assert_int_equal(offs[0], 2);
  assert_int_equal(offs[2], 4);

  engram_batch *b = NULL;
  OK(r, engram_read(r, "memory", 1, &b));
  assert_int_equal(b->count, 1);
  const engram_event *x = &b->events[0];
  assert_int_equal(x->offset, 1);
  assert_string_equal(x->topic, "memory");
  assert_string_equal(x->type, "memory.saved");
  assert_string_equal(x->key, "conv-1:D1:1");
  assert_int_equal(x->payload_len, sizeof big);
  assert_memory_equal(x->payload, big, sizeof big);
  assert_string_equal(x->content_type, "text/plain");
  assert_int_equal(x->n_headers, 2);
  assert_string_equal(x->headers[0].name, "source");
  assert_string_equal(x->headers[1].value, "");
  assert_string_equal(x->idempotency_key, "idem-1");
  assert_true(x->timestamp_ns > 0);
  engram_batch_free(b);

  OK(r, engram_read_range(r, "memory", 2, 10, &b));
  assert_int_equal(b->count, 3);
  assert_null(b->events[0].key);     /* no key */
  assert_non_null(b->events[1].key); /* an empty key is a key */
  assert_string_equal(b->events[1].key, "");
  assert_int_equal(b->events[2].payload_len, 0);
  engram_batch_free(b);
  OK(r, engram_read_range(r, "memory", 100, 10, &b));
  assert_int_equal(b->count, 0);
  engram_batch_free(b);

  engram_topic_info ti;
  OK(r, engram_topic_info_get(r, "memory", &ti));
  assert_string_equal(ti.name, "memory");
  assert_int_equal(ti.head_offset, 4);
  assert_int_equal(ti.count, 4);
  assert_int_equal(ti.config.max_payload, 4096);
  engram_topic_info *list;
  size_t n;
  OK(r, engram_topic_list(r, &list, &n));
  assert_int_equal(n, 2);
  assert_string_equal(list[0].name, "memory");
  engram_free(list);

  engram_verify_report rep;
  OK(r, engram_verify(r, &rep));
  assert_int_equal(rep.records, 4);
  assert_int_equal(rep.damaged, 0);
  OK(r, engram_sync(r));
  char *dest = tu_join(d.dir, "copy");
  OK(r, engram_backup(r, dest));
  assert_int_equal(engram_backup(r, dest), ENGRAM_EEXIST);
  uint32_t dict = 0;
  assert_int_equal(engram_topic_train_dict(r, "memory", &dict), ENGRAM_EINVAL); /* too few events */
  OK(r, engram_topic_drop(r, "other"));
  assert_int_equal(engram_topic_info_get(r, "other", &ti), ENGRAM_ENOTFOUND);

  /* The backup is a log of its own. */
  engram *copy = tu_open(dest, NULL);
  OK(copy, engram_read(copy, "memory", 4, &b));
  engram_batch_free(b);
  engram_close(copy);
  free(dest);

  conn_and_serve_done(&d, r);
}

/* Errors: the daemon's code and its message, as the embedded library gives them. */
static void errors_carry_the_same_code_and_message_as_embedded(void **state) {
  (void)state;
  td d;
  engram *r = serve_and_conn(&d, "net-errors");
  char *edir = tu_join(d.dir, "embedded");
  engram *l = tu_open(edir, NULL);
  engram_topic_config cfg = {.max_payload = 16};
  OK(r, engram_topic_create(r, "memory", &cfg));
  OK(l, engram_topic_create(l, "memory", &cfg));

  engram_batch *b;
  engram_event big = ev_of("memory.saved", NULL, "0123456789abcdefXYZ");
  engram_event badtype = ev_of("memory..saved", NULL, "x");
  engram_event noidem = ev_of("memory.saved", NULL, "x");
  noidem.idempotency_key = "";
  engram_header h[65];
  for (int i = 0; i < 65; i++) h[i] = (engram_header){"h", "v"};
  engram_event manyh = ev_of("memory.saved", NULL, "x");
  manyh.headers = h;
  manyh.n_headers = 65;
  engram *both[2] = {l, r};
  int codes[2][8];
  char msgs[2][8][512];
  for (int s = 0; s < 2; s++) {
    engram *log = both[s];
    int k = 0;
    codes[s][k] = engram_read(log, "missing", 1, &b);
    snprintf(msgs[s][k++], 512, "%s", engram_errmsg(log));
    codes[s][k] = engram_read(log, "memory", 9, &b);
    snprintf(msgs[s][k++], 512, "%s", engram_errmsg(log));
    codes[s][k] = engram_append(log, "memory", &big, NULL, NULL);
    snprintf(msgs[s][k++], 512, "%s", engram_errmsg(log));
    codes[s][k] = engram_append(log, "memory", &badtype, NULL, NULL);
    snprintf(msgs[s][k++], 512, "%s", engram_errmsg(log));
    codes[s][k] = engram_append(log, "bad name", &noidem, NULL, NULL);
    snprintf(msgs[s][k++], 512, "%s", engram_errmsg(log));
    codes[s][k] = engram_append(log, "memory", &manyh, NULL, NULL);
    snprintf(msgs[s][k++], 512, "%s", engram_errmsg(log));
    codes[s][k] = engram_topic_create(log, "bad/name", NULL);
    snprintf(msgs[s][k++], 512, "%s", engram_errmsg(log));
    codes[s][k] = engram_read_range(log, "memory", 1, 0, &b);
    snprintf(msgs[s][k++], 512, "%s", engram_errmsg(log));
  }
  for (int k = 0; k < 8; k++) {
    if (codes[0][k] != codes[1][k] || strcmp(msgs[0][k], msgs[1][k]))
      fprintf(stderr, "case %d: embedded %s '%s', remote %s '%s'\n", k, engram_errname(codes[0][k]),
              msgs[0][k], engram_errname(codes[1][k]), msgs[1][k]);
    assert_true(codes[0][k] < 0);
    assert_int_equal(codes[0][k], codes[1][k]);
    assert_string_equal(msgs[0][k], msgs[1][k]);
  }
  /* Nothing was written by any of them. */
  engram_topic_info ti;
  OK(r, engram_topic_info_get(r, "memory", &ti));
  assert_int_equal(ti.count, 0);
  engram_close(l);
  free(edir);
  conn_and_serve_done(&d, r);
}

/* One bad input per case, for every entry point of engram.h that takes a handle: run
 * by the table below on an embedded and on a remote handle. Returns the call's code, or
 * 1 past the last case. */
static int bad_input(engram *log, int k) {
  static char long_text[5000];
  memset(long_text, 'x', sizeof long_text - 1);
  engram_event ev = ev_of("memory.saved", NULL, "x");
  engram_event badtype = ev_of("memory..saved", NULL, "x");
  engram_event big = ev_of("memory.saved", NULL, "0123456789abcdefXYZ");
  engram_ack_item item = {1, 1, NULL, 0};
  engram_topic_info ti;
  engram_group_info gi, *gl;
  engram_status st;
  engram_dlq_entry *dl;
  engram_batch *b;
  engram_txn *txn;
  uint32_t id;
  size_t n;
  uint64_t off;
  int rc;
  switch (k) {
    case 0:
      return engram_backup(log, "");
    case 1:
      return engram_topic_create(log, "bad/name", NULL);
    case 2:
      return engram_topic_info_get(log, "missing", &ti);
    case 3:
      return engram_topic_info_get(log, "bad name", &ti);
    case 4:
      return engram_topic_drop(log, "missing");
    case 5:
      return engram_topic_drop(log, "bad name");
    case 6:
      return engram_topic_train_dict(log, "missing", &id);
    case 7:
      return engram_append(log, "memory", &big, NULL, NULL);
    case 8:
      return engram_append(log, "memory", &badtype, NULL, NULL);
    case 9:
      return engram_append(log, "missing", &ev, NULL, NULL);
    case 10:
      return engram_append_batch(log, "memory", &ev, 0, NULL, NULL);
    case 11:
      return engram_append_batch(log, "bad name", &ev, 1, NULL, NULL);
    case 12:
      return engram_read(log, "missing", 1, &b);
    case 13:
      return engram_read_range(log, "memory", 1, 0, &b);
    case 14:
      return engram_group_create(log, "missing", "g", NULL);
    case 15:
      return engram_group_create(log, "memory", "bad name", NULL);
    case 16:
      return engram_group_info_get(log, "memory", "nosuch", &gi);
    case 17:
      return engram_group_list(log, "missing", &gl, &n);
    case 18:
      return engram_group_delete(log, "memory", "nosuch");
    case 19:
      return engram_group_reset(log, "memory", "nosuch", ENGRAM_START_EARLIEST, 0, 0);
    case 20:
      return engram_fetch(log, "memory", "nosuch", "c", 10, 0, &b);
    case 21:
      return engram_fetch(log, "memory", "g", "bad name", 10, 0, &b);
    case 22:
      return engram_ack(log, "memory", "g", 99, 1, NULL, 0);
    case 23:
      return engram_ack_many(log, "memory", "g", NULL, 0, NULL);
    case 24:
      return engram_ack_many(log, "memory", "g", &item, 100001, NULL);
    case 25:
      return engram_nack(log, "memory", "g", 1, 1, (int64_t)ENGRAM_MAX_DELAY_MS + 1, NULL);
    case 26:
      return engram_nack(log, "memory", "g", 1, 1, 0, long_text);
    case 27:
      return engram_nack(log, "memory", "g", 99, 1, 0, "boom");
    case 28:
      return engram_reject(log, "memory", "g", 1, 1, long_text);
    case 29:
      return engram_reject(log, "memory", "g", 99, 1, "bad");
    case 30:
      return engram_extend(log, "memory", "g", 1, 1, ENGRAM_MAX_DELAY_MS + 1);
    case 31:
      return engram_extend(log, "memory", "g", 99, 1, 1000);
    case 32:
      return engram_cancel(log, "memory", "nosuch", 1);
    case 33:
      return engram_status_get(log, "memory", "nosuch", 1, &st);
    case 34:
      return engram_dlq_list(log, "memory", "nosuch", 0, 10, &dl, &n);
    case 35:
      return engram_dlq_purge(log, "memory", "nosuch", NULL, 0, &n);
    case 36:
      return engram_dlq_redrive(log, "memory", "nosuch", NULL, 0, &n);
    case 37:
      if ((rc = engram_txn_begin(log, &txn))) return rc;
      rc = engram_txn_ack(txn, "memory", "bad name", 1, 1, NULL, 0);
      engram_txn_abort(txn);
      return rc;
    case 38:
      if ((rc = engram_txn_begin(log, &txn))) return rc;
      if ((rc = engram_txn_append(txn, "missing", &ev, &off))) return rc;
      return engram_txn_commit(txn);
    case 39:
      return engram_append_async(log, "bad name", &ev, NULL, NULL);
    case 40:
      return engram_append_async(log, "memory", &badtype, NULL, NULL);
    case 41:
      return engram_txn_begin(log, NULL);
    case 42:
      return engram_ack_fetch(log, "memory", "g", "c", NULL, 1, NULL, 10, 0, &b);
    case 43:
      return engram_ack_fetch(log, "memory", "g", "c", &item, 100001, NULL, 10, 0, &b);
    case 44:
      return engram_ack_fetch(log, "memory", "g", "bad name", &item, 1, NULL, 10, 0, &b);
    case 45:
      return engram_ack_fetch(log, "memory", "nosuch", "c", &item, 1, NULL, 10, 0, &b);
    case 46:
      return engram_ack_fetch(log, "memory", "g", "c", &item, 1, NULL, 0, 0, &b);
    case 47:
      return engram_ack_fetch(log, "memory", "g", "c", &item, 1, NULL, 10,
                              ENGRAM_MAX_FETCH_WAIT_MS + 1ull, &b);
    case 48:
      return engram_ack_fetch(log, "memory", "g", "c", &item, 1, NULL, 10, 0, NULL);
    case 49:
      return engram_ack_fetch(log, "memory", "g", "c", &item, 1, NULL, 10, 0, &b);
    default:
      return 1;
  }
}

/* The same bad-input table on both backends: the same code and the same message, and
 * nothing written. The argument checks live once in api/, the rest is the embedded
 * library's on both sides (the daemon runs it). */
static void every_entry_point_answers_bad_input_alike_on_both_backends(void **state) {
  (void)state;
  td d;
  engram *r = serve_and_conn(&d, "net-badtable");
  char *edir = tu_join(d.dir, "embedded");
  engram *l = tu_open(edir, NULL);
  engram_topic_config cfg = {.max_payload = 16};
  engram *both[2] = {l, r};
  for (int s = 0; s < 2; s++) {
    OK(both[s], engram_topic_create(both[s], "memory", &cfg));
    OK(both[s], engram_group_create(both[s], "memory", "g", NULL));
  }
  int failures = 0, k;
  for (k = 0; bad_input(l, k) != 1; k++) {
    int code[2];
    char msg[2][512];
    for (int s = 0; s < 2; s++) {
      code[s] = bad_input(both[s], k);
      snprintf(msg[s], sizeof msg[s], "%s", engram_errmsg(both[s]));
    }
    if (code[0] >= 0 || code[0] != code[1] || strcmp(msg[0], msg[1])) {
      fprintf(stderr, "case %d: embedded %s '%s', remote %s '%s'\n", k, engram_errname(code[0]),
              msg[0], engram_errname(code[1]), msg[1]);
      failures++;
    }
  }
  assert_true(k >= 40);
  assert_int_equal(failures, 0);
  engram_topic_info ti;
  for (int s = 0; s < 2; s++) {
    OK(both[s], engram_topic_info_get(both[s], "memory", &ti));
    assert_int_equal(ti.count, 0);
  }
  engram_close(l);
  free(edir);
  conn_and_serve_done(&d, r);
}

/* ---------------------------------------------------------------------------------
 * Groups: a seeded random walk of group operations, run on an embedded handle and on a
 * remote one side by side; every result, code and message must agree.
 * ------------------------------------------------------------------------------ */
struct side {
  engram *log;
  char out[64][512]; /* what each step observed, as text */
};

static uint64_t rnd(uint64_t *s, uint64_t n) { return tu_rand(s) % n; }

static void say(char *buf, size_t cap, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t n = strlen(buf);
  vsnprintf(buf + n, cap - n, fmt, ap);
  va_end(ap);
}

/* One step on one side, described into `out`. Uses its own copy of the random state so
 * both sides make the same choices. */
static void step(engram *log, uint64_t seed, char *out, size_t cap) {
  uint64_t s = seed;
  const char *groups[] = {"g", "ko", "f", "nosuch", "bad name"};
  const char *group = groups[rnd(&s, 10) < 8 ? rnd(&s, 3) : 3 + rnd(&s, 2)];
  const char *consumers[] = {"c0", "c1", "c2"};
  uint64_t off = 1 + rnd(&s, 45);
  uint32_t attempt = (uint32_t)rnd(&s, 4);
  int op = (int)rnd(&s, 17);
  int rc = 0;
  out[0] = '\0';
  switch (op) {
    case 0:
    case 1:
    case 2: {
      engram_batch *b = NULL;
      size_t max = rnd(&s, 20) == 0 ? 0 : 1 + rnd(&s, 5);
      rc = engram_fetch(log, "memory", group, consumers[rnd(&s, 3)], max, 0, &b);
      say(out, cap, "fetch %s max %zu:", group, max);
      for (size_t i = 0; b && i < b->count; i++)
        say(out, cap, " %llu/%u", (unsigned long long)b->events[i].offset, b->events[i].attempt);
      engram_batch_free(b);
      break;
    }
    case 3:
    case 4:
      rc = engram_ack(log, "memory", group, off, attempt, attempt == 3 ? "done" : NULL,
                      attempt == 3 ? 4 : 0);
      say(out, cap, "ack %s %llu/%u", group, (unsigned long long)off, attempt);
      break;
    case 5: {
      engram_ack_item it[3];
      int codes[3] = {99, 99, 99};
      for (int i = 0; i < 3; i++) it[i] = (engram_ack_item){off + (uint64_t)i, attempt, NULL, 0};
      rc = engram_ack_many(log, "memory", group, it, 3, codes);
      say(out, cap, "ack_many %s %llu: %d %d %d", group, (unsigned long long)off, codes[0],
          codes[1], codes[2]);
      break;
    }
    case 6:
      rc = engram_nack(log, "memory", group, off, attempt, rnd(&s, 2) ? 0 : 60000,
                       rnd(&s, 2) ? "boom" : NULL);
      say(out, cap, "nack %s %llu/%u", group, (unsigned long long)off, attempt);
      break;
    case 7:
      rc = engram_reject(log, "memory", group, off, attempt, rnd(&s, 2) ? "bad event" : NULL);
      say(out, cap, "reject %s %llu/%u", group, (unsigned long long)off, attempt);
      break;
    case 8:
      rc = engram_extend(log, "memory", group, off, attempt, rnd(&s, 2) ? 0 : 60000);
      say(out, cap, "extend %s %llu/%u", group, (unsigned long long)off, attempt);
      break;
    case 9:
      rc = engram_cancel(log, "memory", group, off);
      say(out, cap, "cancel %s %llu", group, (unsigned long long)off);
      break;
    case 10: {
      engram_status st;
      memset(&st, 0, sizeof st);
      rc = engram_status_get(log, "memory", group, off, &st);
      say(out, cap, "status %s %llu: %s %s %u '%s' %s", group, (unsigned long long)off,
          engram_state_name(st.state), st.consumer, st.attempt, st.last_error,
          st.result ? (char *)st.result : "-");
      engram_free(st.result);
      break;
    }
    case 11: {
      engram_group_info gi;
      memset(&gi, 0, sizeof gi);
      rc = engram_group_info_get(log, "memory", group, &gi);
      say(out, cap,
          "info %s: floor %llu next %llu lag %llu in_flight %llu retrying %llu dead %llu acked "
          "%llu redelivered %llu delivered %llu",
          group, (unsigned long long)gi.floor, (unsigned long long)gi.next,
          (unsigned long long)gi.lag, (unsigned long long)gi.in_flight,
          (unsigned long long)gi.retrying, (unsigned long long)gi.dead,
          (unsigned long long)gi.acked, (unsigned long long)gi.redelivered,
          (unsigned long long)gi.delivered);
      break;
    }
    case 12: {
      engram_dlq_entry *e = NULL;
      size_t n = 0;
      rc = engram_dlq_list(log, "memory", group, rnd(&s, 10), rnd(&s, 5), &e, &n);
      say(out, cap, "dlq %s:", group);
      for (size_t i = 0; i < n; i++)
        say(out, cap, " %llu/%u %s|%s|%s", (unsigned long long)e[i].offset, e[i].attempts,
            e[i].reason, e[i].last_error, e[i].consumer);
      engram_free(e);
      break;
    }
    case 13: {
      size_t count = 0;
      uint64_t sel[2] = {off, off + 1};
      int all = rnd(&s, 3) == 0;
      rc = engram_dlq_redrive(log, "memory", group, all ? NULL : sel, all ? 0 : 2, &count);
      say(out, cap, "redrive %s: %zu", group, count);
      break;
    }
    case 14: {
      size_t count = 0;
      uint64_t sel[1] = {off};
      rc = engram_dlq_purge(log, "memory", group, sel, 1, &count);
      say(out, cap, "purge %s: %zu", group, count);
      break;
    }
    case 15:
      if (rnd(&s, 4) == 0) {
        rc = engram_group_reset(log, "memory", group, ENGRAM_START_OFFSET, off, 0);
        say(out, cap, "reset %s %llu", group, (unsigned long long)off);
      } else {
        engram_event e =
            ev_of(rnd(&s, 2) ? "memory.saved" : "memory.updated", rnd(&s, 2) ? "k1" : NULL, "{}");
        uint64_t o = 0;
        rc = engram_append(log, "memory", &e, &o, NULL);
        say(out, cap, "append %llu", (unsigned long long)o);
      }
      break;
    default: {
      engram_group_info *gl = NULL;
      size_t n = 0;
      rc = engram_group_list(log, rnd(&s, 2) ? "memory" : NULL, &gl, &n);
      say(out, cap, "list:");
      for (size_t i = 0; i < n; i++) say(out, cap, " %s/%s", gl[i].topic, gl[i].name);
      engram_free(gl);
      break;
    }
  }
  say(out, cap, " -> %s", engram_errname(rc));
  if (rc) say(out, cap, " '%s'", engram_errmsg(log));
}

static void prepare_groups(engram *log) {
  OK(log, engram_topic_create(log, "memory", NULL));
  const char *types[] = {"memory.saved", "memory.updated", "memory.queried"};
  const char *keys[] = {"k0", "k1", "k2", NULL};
  for (int i = 0; i < 40; i++) {
    engram_event e = ev_of(types[i % 3], keys[i % 4], "{\"i\":1}");
    OK(log, engram_append(log, "memory", &e, NULL, NULL));
  }
  engram_group_config g = {.max_deliver = 3};
  OK(log, engram_group_create(log, "memory", "g", &g));
  engram_group_config ko = {.flags = ENGRAM_GROUP_KEY_ORDERED, .max_deliver = 4};
  OK(log, engram_group_create(log, "memory", "ko", &ko));
  const char *filters[] = {"memory.saved", "memory.q*"};
  engram_group_config f = {
      .filters = filters, .n_filters = 1, .start = ENGRAM_START_OFFSET, .start_offset = 5};
  OK(log, engram_group_create(log, "memory", "f", &f));
  assert_int_equal(engram_group_create(log, "memory", "f", &f), ENGRAM_EEXIST);
}

static void group_operations_agree_with_the_embedded_library_step_by_step(void **state) {
  (void)state;
  td d;
  td_init(&d, "net-groups");
  d.o.durability = ENGRAM_DURABILITY_ASYNC; /* the semantics do not depend on flushes */
  td_start(&d);
  engram *r = conn(&d, 5000);
  char *edir = tu_join(d.dir, "embedded");
  engram_options eo = {.durability = ENGRAM_DURABILITY_ASYNC};
  engram *l = tu_open(edir, &eo);
  prepare_groups(l);
  prepare_groups(r);
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  char a[2048], b[2048];
  int mismatches = 0;
  for (int i = 0; i < 1500 && mismatches < 5; i++) {
    uint64_t s = tu_rand(&seed);
    step(l, s, a, sizeof a);
    step(r, s, b, sizeof b);
    if (strcmp(a, b)) {
      fprintf(stderr, "step %d differs:\n  embedded: %s\n  remote:   %s\n", i, a, b);
      mismatches++;
    }
  }
  assert_int_equal(mismatches, 0);
  engram_close(l);
  free(edir);
  conn_and_serve_done(&d, r);
}

/* Time-driven group behaviour, on the daemon's own clock. */
static void leases_expire_and_retries_come_back_through_the_daemon(void **state) {
  (void)state;
  td d;
  engram *r = serve_and_conn(&d, "net-lease");
  OK(r, engram_topic_create(r, "memory", NULL));
  engram_event e = ev_of("memory.saved", NULL, "x");
  OK(r, engram_append(r, "memory", &e, NULL, NULL));
  uint64_t backoff[] = {100};
  engram_group_config g = {
      .ack_wait_ms = 200, .max_deliver = 3, .backoff_ms = backoff, .n_backoff = 1};
  OK(r, engram_group_create(r, "memory", "g", &g));
  engram_batch *b;
  OK(r, engram_fetch(r, "memory", "g", "w1", 10, 0, &b));
  assert_int_equal(b->count, 1);
  assert_int_equal(b->events[0].attempt, 1);
  engram_batch_free(b);
  /* Not acked: after the lease (200 ms) and the backoff (100 ms) it comes back; the
   * long poll is answered when it does, not at its own end. */
  int64_t t0 = tu_mono_ms();
  OK(r, engram_fetch(r, "memory", "g", "w2", 10, 3000, &b));
  int64_t took = tu_mono_ms() - t0;
  assert_int_equal(b->count, 1);
  assert_int_equal(b->events[0].attempt, 2);
  assert_true(took < 1500);
  assert_int_equal(engram_ack(r, "memory", "g", 1, 1, NULL, 0), ENGRAM_ESTALE);
  OK(r, engram_nack(r, "memory", "g", 1, 2, 0, "again"));
  engram_batch_free(b);
  OK(r, engram_fetch(r, "memory", "g", "w2", 10, 2000, &b));
  assert_int_equal(b->events[0].attempt, 3);
  engram_batch_free(b);
  OK(r, engram_nack(r, "memory", "g", 1, 3, 0, "third"));
  /* max_deliver 3: dead now. */
  engram_dlq_entry *dl;
  size_t n;
  OK(r, engram_dlq_list(r, "memory", "g", 0, 0, &dl, &n));
  assert_int_equal(n, 1);
  assert_int_equal(dl[0].attempts, 3);
  assert_string_equal(dl[0].last_error, "third");
  engram_free(dl);
  size_t count = 0;
  OK(r, engram_dlq_redrive(r, "memory", "g", NULL, 0, &count));
  assert_int_equal(count, 1);
  OK(r, engram_fetch(r, "memory", "g", "w3", 10, 2000, &b));
  assert_int_equal(b->count, 1);
  assert_int_equal(b->events[0].attempt, 1);
  OK(r, engram_ack(r, "memory", "g", 1, 1, "ok", 2));
  engram_batch_free(b);
  engram_status st;
  OK(r, engram_status_get(r, "memory", "g", 1, &st));
  assert_int_equal(st.state, ENGRAM_STATE_DONE);
  assert_int_equal(st.result_len, 2);
  assert_memory_equal(st.result, "ok", 2);
  engram_free(st.result);
  conn_and_serve_done(&d, r);
}

/* ---------------------------------------------------------------------------------
 * Long polls, pipelining, out-of-order replies.
 * ------------------------------------------------------------------------------ */
struct poller {
  engram *log;
  uint64_t wait_ms;
  int rc;
  size_t got;
  int64_t took_ms;
};

static void *poll_thread(void *arg) {
  struct poller *p = arg;
  engram_batch *b = NULL;
  int64_t t0 = tu_mono_ms();
  p->rc = engram_fetch(p->log, "memory", "g", "w", 100, p->wait_ms, &b);
  p->took_ms = tu_mono_ms() - t0;
  p->got = b ? b->count : 0;
  engram_batch_free(b);
  return NULL;
}

static void a_long_poll_returns_when_events_arrive_or_its_wait_ends(void **state) {
  (void)state;
  td d;
  engram *r = serve_and_conn(&d, "net-poll");
  engram *w = conn(&d, 5000);
  OK(r, engram_topic_create(r, "memory", NULL));
  OK(r, engram_group_create(r, "memory", "g", NULL));

  struct poller p = {.log = r, .wait_ms = 5000};
  pthread_t t;
  pthread_create(&t, NULL, poll_thread, &p);
  tu_sleep_ms(200);
  engram_event e = ev_of("memory.saved", NULL, "x");
  int64_t t0 = tu_mono_ms();
  OK(w, engram_append(w, "memory", &e, NULL, NULL));
  pthread_join(t, NULL);
  OK(r, p.rc);
  assert_int_equal(p.got, 1);
  assert_true(tu_mono_ms() - t0 < 1000);

  /* Nothing arrives: an empty batch after about the wait. */
  p = (struct poller){.log = r, .wait_ms = 300};
  poll_thread(&p);
  OK(r, p.rc);
  assert_int_equal(p.got, 0);
  assert_true(p.took_ms >= 280);
  assert_true(p.took_ms < 2000);

  /* An embedded writer in another process wakes a remote long poll too. */
  p = (struct poller){.log = r, .wait_ms = 5000};
  pthread_create(&t, NULL, poll_thread, &p);
  tu_sleep_ms(200);
  engram *l = tu_open(d.logdir, NULL);
  t0 = tu_mono_ms();
  OK(l, engram_append(l, "memory", &e, NULL, NULL));
  pthread_join(t, NULL);
  OK(r, p.rc);
  assert_int_equal(p.got, 1);
  assert_true(tu_mono_ms() - t0 < 1000);
  engram_close(l);

  engram_close(w);
  conn_and_serve_done(&d, r);
}

struct acks {
  uint64_t next; /* the offset the next callback must carry */
  int bad;
  int calls;
};

static void on_ack(void *ctx, int rc, uint64_t offset, int dup) {
  struct acks *a = ctx;
  if (rc != 0 || offset != a->next || dup) a->bad++;
  a->next++;
  a->calls++;
}

static void pipelined_appends_keep_their_order_and_report_every_offset(void **state) {
  (void)state;
  td d;
  td_init(&d, "net-pipe");
  d.o.durability = ENGRAM_DURABILITY_ASYNC;
  td_start(&d);
  engram_connect_options o = {.timeout_ms = 10000, .pipeline_window = 64};
  engram *r = td_connect_within(d.ep, 5000, &o);
  assert_non_null(r);
  OK(r, engram_topic_create(r, "memory", NULL));
  struct acks a = {.next = 1};
  char payload[64];
  for (int i = 0; i < 5000; i++) {
    snprintf(payload, sizeof payload, "{\"i\":%d}", i);
    engram_event e = ev_of("memory.saved", NULL, payload);
    OK(r, engram_append_async(r, "memory", &e, on_ack, &a));
    assert_true(a.next - 1 + 64 >= (uint64_t)i + 1); /* never more than the window outstanding */
  }
  OK(r, engram_append_wait(r));
  assert_int_equal(a.calls, 5000);
  assert_int_equal(a.bad, 0);
  /* Errors reach the callback and engram_append_wait. */
  engram_event bad = ev_of("memory.saved", NULL, "x");
  struct acks b2 = {.next = 0};
  OK(r, engram_append_async(r, "nosuch", &bad, on_ack, &b2));
  assert_int_equal(engram_append_wait(r), ENGRAM_ENOTFOUND);
  assert_true(strstr(engram_errmsg(r), "nosuch") != NULL);
  assert_int_equal(b2.calls, 1);
  assert_int_equal(b2.bad, 1);
  OK(r, engram_append_wait(r)); /* the error was reported once */
  /* Found before sending: returned at once. */
  engram_event badtype = ev_of("no..type", NULL, "x");
  assert_int_equal(engram_append_async(r, "memory", &badtype, NULL, NULL), ENGRAM_EINVAL);

  engram_batch *b;
  OK(r, engram_read_range(r, "memory", 1, 10000, &b));
  assert_int_equal(b->count, 5000);
  for (size_t i = 0; i < b->count; i++) {
    snprintf(payload, sizeof payload, "{\"i\":%zu}", i);
    assert_int_equal(b->events[i].offset, i + 1);
    assert_string_equal((const char *)b->events[i].payload, payload);
  }
  engram_batch_free(b);
  conn_and_serve_done(&d, r);
}

/* Several connections pipelining at once into an async daemon, whose main thread then runs
 * the appends of all of them as one commit: each connection's events keep their order,
 * every callback gets its own event's offset, a bad append fails alone and nothing is lost
 * or stored twice. */
#define MC_CONNS 6
#define MC_EACH 1500

struct mc_conn {
  const char *ep;
  int id;
  uint64_t off[MC_EACH]; /* offsets acknowledged, in call order */
  int n, bad, fails, other;
};

static void mc_on_ack(void *ctx, int rc, uint64_t offset, int dup) {
  struct mc_conn *c = ctx;
  if (rc != 0 || dup) {
    c->bad++;
    return;
  }
  if (c->n < MC_EACH) c->off[c->n] = offset;
  c->n++;
}

static void mc_on_fail(void *ctx, int rc, uint64_t offset, int dup) {
  (void)offset;
  (void)dup;
  struct mc_conn *c = ctx;
  if (rc == ENGRAM_ENOTFOUND) c->fails++;
}

static void mc_on_other(void *ctx, int rc, uint64_t offset, int dup) {
  (void)offset;
  struct mc_conn *c = ctx;
  if (rc == 0 && !dup) c->other++;
}

static void *mc_producer(void *arg) {
  struct mc_conn *c = arg;
  engram_connect_options o = {.timeout_ms = 10000, .pipeline_window = 32};
  engram *r = td_connect_within(c->ep, 5000, &o);
  if (!r) return NULL;
  char payload[64];
  for (int i = 0; i < MC_EACH; i++) {
    snprintf(payload, sizeof payload, "{\"c\":%d,\"i\":%d}", c->id, i);
    engram_event e = ev_of("memory.saved", NULL, payload);
    if (engram_append_async(r, "memory", &e, mc_on_ack, c)) break;
    if (i % 100 == 50) { /* another topic, and one that does not exist, in between */
      engram_event o2 = ev_of("memory.queried", NULL, payload);
      if (engram_append_async(r, "queries", &o2, mc_on_other, c)) break;
      if (c->id == 0 && engram_append_async(r, "nosuch", &o2, mc_on_fail, c)) break;
    }
  }
  engram_append_wait(r); /* the failed ones report here too: counted by the callbacks */
  engram_close(r);
  return NULL;
}

static void connections_pipelining_at_once(engram_durability durability) {
  td d;
  td_init(&d, "net-mconn");
  d.o.durability = durability;
  td_start(&d);
  engram_connect_options o = {.timeout_ms = 10000};
  engram *r = td_connect_within(d.ep, 5000, &o);
  assert_non_null(r);
  OK(r, engram_topic_create(r, "memory", NULL));
  OK(r, engram_topic_create(r, "queries", NULL));
  static struct mc_conn cs[MC_CONNS];
  pthread_t th[MC_CONNS];
  for (int i = 0; i < MC_CONNS; i++) {
    memset(&cs[i], 0, sizeof cs[i]);
    cs[i].ep = d.ep;
    cs[i].id = i;
    assert_int_equal(pthread_create(&th[i], NULL, mc_producer, &cs[i]), 0);
  }
  for (int i = 0; i < MC_CONNS; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < MC_CONNS; i++) {
    assert_int_equal(cs[i].bad, 0);
    assert_int_equal(cs[i].n, MC_EACH);
    assert_int_equal(cs[i].other, MC_EACH / 100);
    assert_int_equal(cs[i].fails, i == 0 ? MC_EACH / 100 : 0);
    for (int k = 1; k < MC_EACH; k++) assert_true(cs[i].off[k] > cs[i].off[k - 1]);
  }
  engram_batch *b;
  OK(r, engram_read_range(r, "memory", 1, MC_CONNS * MC_EACH + 10, &b));
  assert_int_equal(b->count, MC_CONNS * MC_EACH);
  int next[MC_CONNS] = {0};
  for (size_t k = 0; k < b->count; k++) {
    int c = -1, i = -1;
    assert_int_equal(sscanf((const char *)b->events[k].payload, "{\"c\":%d,\"i\":%d}", &c, &i), 2);
    assert_true(c >= 0 && c < MC_CONNS);
    assert_int_equal(i, next[c]); /* in the order its connection sent them, none twice */
    assert_int_equal(b->events[k].offset, cs[c].off[i]);
    next[c]++;
  }
  engram_batch_free(b);
  OK(r, engram_read_range(r, "queries", 1, 1000, &b));
  assert_int_equal(b->count, MC_CONNS * (MC_EACH / 100));
  engram_batch_free(b);
  conn_and_serve_done(&d, r);
}

static void connections_pipelining_at_once_share_commits_and_keep_their_order(void **state) {
  (void)state;
  connections_pipelining_at_once(ENGRAM_DURABILITY_ASYNC);
  connections_pipelining_at_once(ENGRAM_DURABILITY_SYNC); /* each batch waits for its flush */
}

struct results {
  int n;
  int rc[64];
  uint64_t off[64];
};

static void on_result(void *ctx, int rc, uint64_t offset, int dup) {
  struct results *r = ctx;
  if (r->n < 64) {
    r->rc[r->n] = rc;
    r->off[r->n] = offset;
  }
  r->n++;
}

/* Pipelined appends travel together, but each succeeds or fails alone; and appends left
 * staged by a producer that stops calling still leave. */
static void pipelined_appends_fail_alone_and_leave_without_further_calls(void **state) {
  (void)state;
  td d;
  td_init(&d, "net-pipe2");
  d.o.durability = ENGRAM_DURABILITY_ASYNC;
  td_start(&d);
  engram *r = conn(&d, 5000);
  engram *other = conn(&d, 5000);
  engram_topic_config cfg = {.max_payload = 16};
  OK(r, engram_topic_create(r, "small", &cfg));
  struct results res = {0};
  for (int i = 0; i < 40; i++) {
    engram_event e =
        ev_of("memory.saved", NULL, i % 2 ? "0123456789abcdefghijklmnopqrstuvwxyz" : "ok");
    OK(r, engram_append_async(r, "small", &e, on_result, &res));
  }
  assert_int_equal(engram_append_wait(r), ENGRAM_ETOOBIG);
  assert_non_null(strstr(engram_errmsg(r), "over limit"));
  assert_int_equal(res.n, 40);
  uint64_t next = 1;
  for (int i = 0; i < 40; i++) {
    if (i % 2) {
      assert_int_equal(res.rc[i], ENGRAM_ETOOBIG);
    } else {
      assert_int_equal(res.rc[i], 0);
      assert_int_equal(res.off[i], next++); /* the good ones, in order */
    }
  }
  /* A burst, then silence: the flusher sends what was staged. */
  struct results quiet = {0};
  for (int i = 0; i < 30; i++) {
    engram_event e = ev_of("memory.saved", NULL, "q");
    OK(r, engram_append_async(r, "small", &e, on_result, &quiet));
  }
  engram_topic_info ti;
  for (int i = 0; i < 100; i++) {
    OK(other, engram_topic_info_get(other, "small", &ti));
    if (ti.count == 50) break;
    tu_sleep_ms(10);
  }
  assert_int_equal(ti.count, 50);
  OK(r, engram_append_wait(r));
  assert_int_equal(quiet.n, 30);
  engram_close(other);
  conn_and_serve_done(&d, r);
}

struct appender {
  engram *log;
  int n;
  int rc;
};

static void *append_thread(void *arg) {
  struct appender *a = arg;
  for (int i = 0; i < a->n && !a->rc; i++) {
    engram_event e = ev_of("memory.saved", NULL, "x");
    a->rc = engram_append(a->log, "memory", &e, NULL, NULL);
  }
  return NULL;
}

static void replies_come_back_out_of_order_on_one_connection(void **state) {
  (void)state;
  td d;
  td_init(&d, "net-order");
  d.o.durability = ENGRAM_DURABILITY_ASYNC;
  td_start(&d);
  engram *r = conn(&d, 5000);
  OK(r, engram_topic_create(r, "memory", NULL));
  OK(r, engram_topic_create(r, "other", NULL));
  OK(r, engram_group_create(r, "memory", "g", NULL));
  /* A long poll on the handle first; then, on the same handle, appends to another topic
   * complete while it waits: their replies overtake the poll's. */
  struct poller p = {.log = r, .wait_ms = 3000};
  pthread_t t;
  pthread_create(&t, NULL, poll_thread, &p);
  tu_sleep_ms(100);
  int64_t t0 = tu_mono_ms();
  for (int i = 0; i < 50; i++) {
    engram_event e = ev_of("memory.saved", NULL, "y");
    OK(r, engram_append(r, "other", &e, NULL, NULL));
  }
  assert_true(tu_mono_ms() - t0 < 2000);
  struct appender ap = {.log = r, .n = 1};
  append_thread(&ap); /* now an event for the poll */
  OK(r, ap.rc);
  pthread_join(t, NULL);
  OK(r, p.rc);
  assert_int_equal(p.got, 1);
  assert_true(p.took_ms < 2500);

  /* Several threads on one handle at once. */
  struct appender as[4];
  pthread_t ts[4];
  for (int i = 0; i < 4; i++) {
    as[i] = (struct appender){.log = r, .n = 200};
    pthread_create(&ts[i], NULL, append_thread, &as[i]);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(ts[i], NULL);
    OK(r, as[i].rc);
  }
  engram_topic_info ti;
  OK(r, engram_topic_info_get(r, "memory", &ti));
  assert_int_equal(ti.count, 801);
  conn_and_serve_done(&d, r);
}

/* ---------------------------------------------------------------------------------
 * Timeouts, restarts, a second daemon, stopping.
 * ------------------------------------------------------------------------------ */
/* A plain TCP socket listening on a free loopback port (not ZeroMQ): returns its fd. */
static int plain_listener(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(fd, 8), 0);
  socklen_t len = sizeof sa;
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  *port = ntohs(sa.sin_port);
  return fd;
}

static void no_daemon_means_econn_and_a_frozen_one_etimedout(void **state) {
  (void)state;
  td d;
  td_init(&d, "net-timeout");
  engram *r = NULL;
  engram_connect_options o = {.timeout_ms = 300};
  int64_t t0 = tu_mono_ms();
  assert_int_equal(engram_connect(d.ep, &o, &r), ENGRAM_ECONN);
  assert_true(tu_mono_ms() - t0 < 2000);
  assert_null(r);
  assert_true(strlen(engram_errmsg(NULL)) > 0);
  assert_int_equal(engram_connect("nonsense://x", &o, &r), ENGRAM_EINVAL);
  /* Something that accepts TCP connections but is not the daemon (its HTTP port, say):
   * the message says a connection was made and what to check. */
  int port;
  int other = plain_listener(&port);
  char ep[64];
  snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
  assert_int_equal(engram_connect(ep, &o, &r), ENGRAM_ECONN);
  assert_non_null(strstr(engram_errmsg(NULL), "did not answer ZeroMQ's handshake"));
  close(other);

  td_start(&d);
  r = conn(&d, 300);
  OK(r, engram_topic_create(r, "memory", NULL));
  kill(d.pid, SIGSTOP);
  engram_event e = ev_of("memory.saved", NULL, "x");
  t0 = tu_mono_ms();
  assert_int_equal(engram_append(r, "memory", &e, NULL, NULL), ENGRAM_ETIMEDOUT);
  int64_t took = tu_mono_ms() - t0;
  if (took < 280 || took >= 2000) fprintf(stderr, "timed out after %lld ms\n", (long long)took);
  assert_true(took >= 280 && took < 2000);
  kill(d.pid, SIGCONT);
  /* The late reply is dropped; the next request gets its own. */
  /* The timed-out append was delivered and happens once the daemon runs again: a
   * timeout means "outcome unknown". */
  engram_topic_info ti;
  for (int i = 0; i < 100; i++) {
    OK(r, engram_topic_info_get(r, "memory", &ti));
    if (ti.count == 1) break;
    tu_sleep_ms(20);
  }
  assert_int_equal(ti.count, 1);
  conn_and_serve_done(&d, r);
}

struct infoer {
  engram *log;
  int rc;
  uint64_t count;
};

static void *info_thread(void *arg) {
  struct infoer *in = arg;
  engram_topic_info ti;
  in->rc = engram_topic_info_get(in->log, "memory", &ti);
  in->count = ti.count;
  return NULL;
}

static void clients_reconnect_after_a_daemon_restart(void **state) {
  (void)state;
  td d;
  td_init(&d, "net-restart");
  td_start(&d);
  /* Generous: a daemon restarting under the sanitizers on a loaded machine is slow. */
  engram *r = conn(&d, 8000);
  OK(r, engram_topic_create(r, "memory", NULL));
  engram_event e = ev_of("memory.saved", NULL, "x");
  OK(r, engram_append(r, "memory", &e, NULL, NULL));
  td_kill(&d);
  /* While it is down: nothing to send to, so ECONN, and certainly not applied. */
  int rc = engram_append(r, "memory", &e, NULL, NULL);
  assert_true(rc == ENGRAM_ECONN);
  /* Back up: the same handle works again. An idempotent append waiting across the
   * restart is delivered once the daemon is back. */
  td_start(&d);
  engram_event ie = ev_of("memory.saved", NULL, "y");
  ie.idempotency_key = "restart-1";
  uint64_t off = 0;
  OK(r, engram_append(r, "memory", &ie, &off, NULL));
  assert_int_equal(off, 2);
  engram_topic_info ti;
  OK(r, engram_topic_info_get(r, "memory", &ti));
  assert_int_equal(ti.count, 2);

  /* A restart while a read waits for its reply: it is sent again and answered. */
  kill(d.pid, SIGSTOP);
  struct infoer in = {.log = r};
  pthread_t t;
  int64_t t0 = tu_mono_ms();
  pthread_create(&t, NULL, info_thread, &in);
  tu_sleep_ms(200);
  pid_t old = d.pid;
  kill(old, SIGKILL);
  kill(old, SIGCONT);
  tu_wait(old, 5000);
  d.pid = 0;
  td_start(&d);
  int64_t up_ms = tu_mono_ms() - t0;
  pthread_join(t, NULL);
  int64_t took = tu_mono_ms() - t0;
  /* The read should be answered soon after the new daemon is up, not at its deadline. */
  if (in.rc || took - up_ms > 5000)
    fprintf(stderr, "read across the restart: %s after %lld ms (daemon back after %lld ms)\n",
            engram_errname(in.rc), (long long)took, (long long)up_ms);
  OK(r, in.rc);
  assert_int_equal(in.count, 2);
  conn_and_serve_done(&d, r);
}

/* A TCP port nothing listens on (bound and released: good enough for a test). */
static int free_port(void) {
  void *ctx = zmq_ctx_new();
  void *s = zmq_socket(ctx, ZMQ_REP);
  zmq_bind(s, "tcp://127.0.0.1:*");
  char ep[128];
  size_t n = sizeof ep;
  zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &n);
  zmq_close(s);
  zmq_ctx_term(ctx);
  return atoi(strrchr(ep, ':') + 1);
}

/* libzmq keeps the low 16 bits of a TCP port (99999 is 34463) and the digits before any
 * text: such an endpoint is refused, never served or reached on another port. */
static void a_tcp_port_libzmq_would_change_is_refused(void **state) {
  (void)state;
  const char *bad[] = {"tcp://127.0.0.1:99999", "tcp://127.0.0.1:65536",
                       "tcp://127.0.0.1:0",     "tcp://127.0.0.1:7450x",
                       "tcp://127.0.0.1:-1",    "tcp://127.0.0.1:",
                       "tcp://127.0.0.1",       "tcp://:7450"};
  engram_connect_options o = {.timeout_ms = 300};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    engram *r = NULL;
    int rc = engram_connect(bad[i], &o, &r);
    if (rc != ENGRAM_EINVAL)
      fprintf(stderr, "connect %s: %s (%s)\n", bad[i], engram_errname(rc), engram_errmsg(NULL));
    assert_int_equal(rc, ENGRAM_EINVAL);
    assert_null(r);
    assert_non_null(strstr(engram_errmsg(NULL), "TCP port"));
  }
  /* An address without its transport, or the dashboard's HTTP address, is told what an
   * endpoint is (libzmq said only "Invalid argument", "Protocol not supported"). */
  const char *what[][2] = {{"127.0.0.1:7450", "TRANSPORT://ADDRESS"},
                           {"localhost", "TRANSPORT://ADDRESS"},
                           {"http://127.0.0.1:8080", "not HTTP"},
                           {"https://engram.example:443", "not HTTP"}};
  for (size_t i = 0; i < sizeof what / sizeof what[0]; i++) {
    engram *r = NULL;
    assert_int_equal(engram_connect(what[i][0], &o, &r), ENGRAM_EINVAL);
    assert_null(r);
    const char *m = engram_errmsg(NULL);
    if (!strstr(m, what[i][1]) || !strstr(m, "tcp://127.0.0.1:7450"))
      fail_msg("connect %s: %s", what[i][0], m);
  }
  /* The daemon refuses such a listen or notify endpoint before it opens anything. */
  const char *listen_bad[] = {"tcp://127.0.0.1:99999", NULL};
  const char *notify_bad[] = {NULL, "tcp://127.0.0.1:70000"};
  for (size_t i = 0; i < 2; i++) {
    td d;
    td_init(&d, "net-badport");
    d.o.listen = listen_bad[i];
    d.o.notify = notify_bad[i];
    pid_t pid = tu_spawn(td_child, &d);
    assert_int_equal(tu_wait(pid, 5000), -ENGRAM_EINVAL);
    assert_true(td_log_has(&d, "TCP port"));
    assert_false(tu_exists(d.logdir));
    td_done(&d);
  }
}

/* An HTTP address in use stops the daemon with EBUSY and one message saying so (not
 * libmicrohttpd's own "Failed to bind to port 0" beside it). */
static void an_http_address_in_use_is_refused_with_one_message(void **state) {
  (void)state;
  int port;
  int busy = plain_listener(&port);
  char http[64];
  snprintf(http, sizeof http, "127.0.0.1:%d", port);
  td d;
  td_init(&d, "net-httpbusy");
  d.o.http = http;
  pid_t pid = tu_spawn(td_child, &d);
  assert_int_equal(tu_wait(pid, 10000), -ENGRAM_EBUSY);
  assert_true(td_log_has(&d, "cannot serve HTTP"));
  assert_false(td_log_has(&d, "port 0"));
  assert_false(td_log_has(&d, "Failed to bind"));
  close(busy);
  td_done(&d);
}

/* A daemon started with a low soft limit of open files: 48, under a hard limit of 64. */
static int low_nofile_child(void *arg) {
  struct rlimit rl = {.rlim_cur = 48, .rlim_max = 64};
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return 99;
  return td_child(arg);
}

static rlim_t soft_nofile_of(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/limits", (int)pid);
  FILE *f = fopen(path, "r");
  unsigned long long soft = 0;
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "Max open files", 14)) sscanf(line + 14, "%llu", &soft);
  if (f) fclose(f);
  return (rlim_t)soft;
}

/* The daemon raises its soft limit of open files to the hard one, and once out of
 * descriptors it says so in its log (libzmq fails every accept in silence), keeps
 * serving the connections it has, and stops cleanly. */
static void a_daemon_out_of_descriptors_says_so_and_keeps_serving(void **state) {
  (void)state;
  td d;
  td_init(&d, "net-nofile");
  int port = free_port();
  snprintf(d.ep, sizeof d.ep, "tcp://127.0.0.1:%d", port);
  d.pid = tu_spawn(low_nofile_child, &d);
  engram *r = td_connect_within(d.ep, 10000, NULL);
  assert_non_null(r);
  OK(r, engram_topic_create(r, "memory", NULL));
  assert_int_equal(soft_nofile_of(d.pid), 64);
  assert_true(td_log_has(&d, "open files: 64 (raised from 48)"));
  assert_true(td_log_has(&d, "open files limited to 64"));
  assert_false(td_log_has(&d, "cannot accept"));

  /* Far more connections than descriptors (plain TCP: the kernel completes them). */
  enum { N = 100 };
  int fds[N];
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  for (int i = 0; i < N; i++) {
    fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true(fds[i] >= 0);
    int rc = connect(fds[i], (struct sockaddr *)&sa, sizeof sa);
    assert_true(rc == 0 || errno == EINPROGRESS);
  }
  int said = 0;
  for (int64_t until = tu_mono_ms() + 10000; !said && tu_mono_ms() < until; tu_sleep_ms(50))
    said = td_log_has(&d, "cannot accept new connections");
  if (!said) td_dump_log(&d);
  assert_true(said);
  assert_true(td_log_has(&d, "Too many open files"));
  for (int i = 0; i < N; i++) close(fds[i]);

  /* The client connected before keeps its connection and is served. */
  engram_event e = ev_of("memory.saved", NULL, "after");
  uint64_t off = 0;
  OK(r, engram_append(r, "memory", &e, &off, NULL));
  assert_int_equal(off, 1);
  engram_close(r);
  assert_int_equal(td_stop(&d), 0);
  td_done(&d);
}

/* A connection per request (a CLI run, a script): every connect, append and close is
 * quick. The client sent its first request from inside the look at its monitor that saw
 * the handshake, then slept on the socket's fd without looking at the socket again: when
 * that send had taken the socket's pending wake-up, the reply sat unread until the
 * request's deadline (a 10 s connect, now and then). */
static void many_short_connections_each_connect_at_once(void **state) {
  (void)state;
  td d;
  td_init(&d, "net-churn");
  int port = free_port();
  snprintf(d.ep, sizeof d.ep, "tcp://127.0.0.1:%d", port);
  td_start(&d);
  engram *r = td_connect_within(d.ep, 10000, NULL);
  assert_non_null(r);
  OK(r, engram_topic_create(r, "memory", NULL));
  engram_close(r);
  engram_connect_options o = {.timeout_ms = 5000};
  engram_event e = ev_of("memory.saved", NULL, "x");
  int64_t worst = 0;
  for (int i = 0; i < 1500; i++) {
    int64_t t0 = tu_mono_ms();
    r = NULL;
    OK(NULL, engram_connect(d.ep, &o, &r));
    OK(r, engram_append(r, "memory", &e, NULL, NULL));
    engram_close(r);
    int64_t took = tu_mono_ms() - t0;
    if (took > worst) worst = took;
    if (took > 2000) {
      fprintf(stderr, "connection %d took %lld ms\n", i, (long long)took);
      break;
    }
  }
  assert_true(worst <= 2000);
  assert_int_equal(td_stop(&d), 0);
  td_done(&d);
}

static void a_second_daemon_on_the_same_directory_is_refused(void **state) {
  (void)state;
  td d;
  td_init(&d, "net-second");
  td_start(&d);
  td d2 = d;
  snprintf(d2.ep, sizeof d2.ep, "ipc://%s/other.ipc", d.dir);
  d2.o.listen = NULL;
  pid_t pid = tu_spawn(td_child, &d2);
  assert_int_equal(tu_wait(pid, 10000), -ENGRAM_EBUSY);
  assert_true(td_log_has(&d, "another engram serve"));
  /* Another directory on an endpoint in use: refused too. */
  td d3;
  td_init(&d3, "net-second-b");
  int port = free_port();
  snprintf(d3.ep, sizeof d3.ep, "tcp://127.0.0.1:%d", port);
  td d4;
  td_init(&d4, "net-second-c");
  snprintf(d4.ep, sizeof d4.ep, "tcp://127.0.0.1:%d", port);
  td_start(&d3);
  pid = tu_spawn(td_child, &d4);
  assert_int_equal(tu_wait(pid, 10000), -ENGRAM_EBUSY);
  assert_true(td_log_has(&d4, "cannot listen"));
  assert_int_equal(td_stop(&d3), 0);
  td_done(&d4);
  td_done(&d3);
  assert_int_equal(td_stop(&d), 0);
  td_done(&d);
}

static void sigterm_answers_requests_in_flight_and_stops_cleanly(void **state) {
  (void)state;
  td d;
  engram *r = serve_and_conn(&d, "net-sigterm");
  OK(r, engram_topic_create(r, "memory", NULL));
  OK(r, engram_group_create(r, "memory", "g", NULL));
  struct poller p = {.log = r, .wait_ms = 20000};
  pthread_t t;
  pthread_create(&t, NULL, poll_thread, &p);
  /* The signal comes once the daemon holds the fetch parked (its own counter says so),
   * however slowly the request travels on a loaded machine. */
  engram *watch = conn(&d, 5000);
  engram_server_info info = {0};
  for (int64_t until = tu_mono_ms() + 10000; tu_mono_ms() < until; tu_sleep_ms(10)) {
    OK(watch, engram_server_info_get(watch, &info));
    if (info.parked > 0) break;
  }
  assert_int_equal(info.parked, 1);
  engram_close(watch);
  int64_t t0 = tu_mono_ms();
  kill(d.pid, SIGTERM);
  pthread_join(t, NULL);
  OK(r, p.rc); /* answered (empty) rather than dropped */
  assert_int_equal(p.got, 0);
  assert_int_equal(tu_wait(d.pid, 5000), 0);
  d.pid = 0;
  assert_true(tu_mono_ms() - t0 < 3000);
  assert_true(td_log_has(&d, "stopping"));
  assert_true(td_log_has(&d, "stopped"));
  /* A clean stop leaves no socket files behind; the log opens and verifies. */
  char *sock = tu_join(d.logdir, "notify-in.ipc");
  assert_false(tu_exists(sock));
  free(sock);
  engram *l = tu_open(d.logdir, NULL);
  engram_verify_report rep;
  OK(l, engram_verify(l, &rep));
  assert_int_equal(rep.damaged, 0);
  engram_close(l);
  engram_close(r);
  td_done(&d);
}

/* ---------------------------------------------------------------------------------
 * CURVE.
 * ------------------------------------------------------------------------------ */
/* A CURVE client at a daemon without CURVE is refused at once, saying so. */
static void a_curve_client_at_a_plain_daemon_is_told_so(void **state) {
  (void)state;
  char spub[41], ssec[41], apub[41], asec[41];
  if (engram_keygen(spub, ssec) == ENGRAM_ENOTSUP) {
    skip();
    return;
  }
  OK(NULL, engram_keygen(apub, asec));
  td d;
  td_init(&d, "net-curve-plain");
  td_start(&d);
  engram_connect_options o = {
      .timeout_ms = 5000, .server_key = spub, .public_key = apub, .secret_key = asec};
  engram *r = NULL;
  int64_t t0 = tu_mono_ms();
  assert_int_equal(engram_connect(d.ep, &o, &r), ENGRAM_EDENIED);
  assert_true(tu_mono_ms() - t0 < 2500);
  assert_null(r);
  assert_non_null(strstr(engram_errmsg(NULL), "does not use CURVE"));
  assert_int_equal(td_stop(&d), 0);
  td_done(&d);
}

static void curve_lets_in_only_the_allowed_keys(void **state) {
  (void)state;
  char spub[41], ssec[41], apub[41], asec[41], bpub[41], bsec[41];
  if (engram_keygen(spub, ssec) == ENGRAM_ENOTSUP) {
    skip();
    return;
  }
  OK(NULL, engram_keygen(apub, asec));
  OK(NULL, engram_keygen(bpub, bsec));
  assert_int_equal(strlen(spub), 40);
  assert_string_not_equal(spub, apub);
  td d;
  td_init(&d, "net-curve");
  const char *allow[] = {apub};
  d.o.secret_key = ssec;
  d.o.public_key = spub;
  d.o.allow_keys = allow;
  d.o.n_allow_keys = 1;
  d.pid = tu_spawn(td_child, &d);
  engram_connect_options ok = {
      .timeout_ms = 3000, .server_key = spub, .public_key = apub, .secret_key = asec};
  engram *r = td_connect_within(d.ep, 10000, &ok);
  assert_non_null(r);
  OK(r, engram_topic_create(r, "memory", NULL));
  engram_close(r);
  /* Another key pair: refused. */
  engram_connect_options other = {
      .timeout_ms = 1000, .server_key = spub, .public_key = bpub, .secret_key = bsec};
  r = NULL;
  assert_int_equal(engram_connect(d.ep, &other, &r), ENGRAM_EDENIED);
  assert_null(r);
  /* No CURVE at all: refused at once, saying the daemon requires CURVE. */
  engram_connect_options plain = {.timeout_ms = 5000};
  int64_t t0 = tu_mono_ms();
  assert_int_equal(engram_connect(d.ep, &plain, &r), ENGRAM_EDENIED);
  assert_true(tu_mono_ms() - t0 < 2500);
  assert_non_null(strstr(engram_errmsg(NULL), "requires CURVE"));
  /* Half a configuration is refused before anything is sent. */
  engram_connect_options half = {.server_key = spub};
  assert_int_equal(engram_connect(d.ep, &half, &r), ENGRAM_EINVAL);
  assert_true(td_log_has(&d, "auth_denied"));
  assert_int_equal(td_stop(&d), 0);
  /* The daemon refuses CURVE without an allow-list. */
  d.o.n_allow_keys = 0;
  d.o.allow_keys = NULL;
  assert_int_equal(engram_serve(d.logdir, &d.o), ENGRAM_EINVAL);
  /* An allow_keys_file that does not read is refused with its line, before any log is
   * made; one that reads is the allow-list (the CLI's test reloads it on SIGHUP). */
  char *keys = tu_join(d.dir, "clients.allow"), *fresh = tu_join(d.dir, "fresh");
  FILE *f = fopen(keys, "w");
  assert_non_null(f);
  fprintf(f, "# clients\npublic-key = %s\nnot a key\n", apub);
  fclose(f);
  d.o.allow_keys_file = keys;
  assert_int_equal(engram_serve(fresh, &d.o), ENGRAM_EINVAL);
  assert_non_null(strstr(engram_errmsg(NULL), "clients.allow:3: a key is 40 Z85 characters"));
  struct stat st;
  assert_int_not_equal(stat(fresh, &st), 0);
  f = fopen(keys, "w");
  assert_non_null(f);
  fprintf(f, "%s\n", bpub);
  fclose(f);
  d.pid = tu_spawn(td_child, &d);
  engram_connect_options b = {
      .timeout_ms = 3000, .server_key = spub, .public_key = bpub, .secret_key = bsec};
  r = td_connect_within(d.ep, 10000, &b);
  assert_non_null(r);
  engram_close(r);
  assert_int_equal(engram_connect(d.ep, &ok, &r), ENGRAM_EDENIED);
  assert_int_equal(td_stop(&d), 0);
  free(keys);
  free(fresh);
  td_done(&d);
}

/* ---------------------------------------------------------------------------------
 * Notifications.
 * ------------------------------------------------------------------------------ */
struct wchild {
  const char *logdir;
  int delay_ms;
};

static int embedded_writer(void *arg) {
  struct wchild *w = arg;
  tu_sleep_ms(w->delay_ms);
  engram *l = NULL;
  if (engram_open(w->logdir, NULL, &l)) return 1;
  engram_event e = ev_of("memory.saved", NULL, "from another process");
  int rc = engram_append(l, "memory", &e, NULL, NULL);
  engram_close(l);
  return rc ? 2 : 0;
}

static int recv_note(void *sub, char *topic, uint64_t *head, int timeout_ms) {
  zmq_pollitem_t it = {sub, 0, ZMQ_POLLIN, 0};
  if (zmq_poll(&it, 1, timeout_ms) <= 0) return -1;
  int n = zmq_recv(sub, topic, 200, 0);
  if (n < 0) return -1;
  topic[n] = '\0';
  unsigned char h[8];
  if (zmq_recv(sub, h, 8, 0) != 8) return -1;
  *head = 0;
  for (int i = 0; i < 8; i++) *head = (*head << 8) | h[i];
  return 0;
}

static void commits_are_published_and_wake_embedded_waiters(void **state) {
  (void)state;
  td d;
  td_init(&d, "net-notify");
  char nep[600];
  snprintf(nep, sizeof nep, "ipc://%s/pub.ipc", d.dir);
  d.o.notify = nep;
  td_start(&d);
  engram *r = conn(&d, 5000);
  OK(r, engram_topic_create(r, "memory", NULL));
  OK(r, engram_group_create(r, "memory", "g", NULL));

  void *ctx = zmq_ctx_new();
  void *sub = zmq_socket(ctx, ZMQ_SUB);
  zmq_setsockopt(sub, ZMQ_SUBSCRIBE, "", 0);
  assert_int_equal(zmq_connect(sub, nep), 0);
  tu_sleep_ms(200); /* the subscription reaches the PUB */
  char topic[256];
  uint64_t head = 0;

  /* A remote append. */
  engram_event e = ev_of("memory.saved", NULL, "x");
  OK(r, engram_append(r, "memory", &e, NULL, NULL));
  assert_int_equal(recv_note(sub, topic, &head, 2000), 0);
  assert_string_equal(topic, "memory");
  assert_int_equal(head, 1);

  /* An embedded writer in another process: published through the daemon too. */
  struct wchild w = {d.logdir, 0};
  assert_int_equal(tu_fork_child(embedded_writer, &w, 10000), 0);
  assert_int_equal(recv_note(sub, topic, &head, 2000), 0);
  assert_string_equal(topic, "memory");
  assert_int_equal(head, 2);

  /* An embedded consumer in this process wakes on another process's commit. */
  engram *l = tu_open(d.logdir, NULL);
  engram_batch *b;
  OK(l, engram_fetch(l, "memory", "g", "c", 10, 0, &b));
  assert_int_equal(b->count, 2);
  engram_batch_free(b);
  w.delay_ms = 300;
  pid_t pid = tu_spawn(embedded_writer, &w);
  int64_t t0 = tu_mono_ms();
  OK(l, engram_fetch(l, "memory", "g", "c", 10, 5000, &b));
  int64_t took = tu_mono_ms() - t0;
  assert_int_equal(b->count, 1);
  engram_batch_free(b);
  assert_int_equal(tu_wait(pid, 10000), 0);
  assert_true(took >= 250 && took < 1500);
  engram_close(l);

  zmq_close(sub);
  zmq_ctx_term(ctx);
  conn_and_serve_done(&d, r);
}

/* Without a daemon, embedded processes still wake each other. */
static void embedded_waiters_wake_without_a_daemon(void **state) {
  (void)state;
  char *dir = tu_tmpdir("net-nodaemon");
  char *logdir = tu_join(dir, "log");
  engram *l = tu_open(logdir, NULL);
  tu_topic(l, "memory", NULL);
  OK(l, engram_group_create(l, "memory", "g", NULL));
  struct wchild w = {logdir, 200};
  pid_t pid = tu_spawn(embedded_writer, &w);
  int64_t t0 = tu_mono_ms();
  engram_batch *b;
  OK(l, engram_fetch(l, "memory", "g", "c", 10, 5000, &b));
  int64_t took = tu_mono_ms() - t0;
  assert_int_equal(b->count, 1);
  engram_batch_free(b);
  assert_int_equal(tu_wait(pid, 10000), 0);
  assert_true(took < 1500);
  engram_close(l);
  free(logdir);
  tu_tmpdir_done(dir);
}

/* ---------------------------------------------------------------------------------
 * The daemon's log and the CLI.
 * ------------------------------------------------------------------------------ */
static void the_daemon_logs_json_lines_when_asked(void **state) {
  (void)state;
  td d;
  td_init(&d, "net-json");
  d.o.log_json = 1;
  td_start(&d);
  assert_int_equal(td_stop(&d), 0);
  FILE *f = fopen(d.logfile, "r");
  assert_non_null(f);
  char line[4096];
  int lines = 0;
  while (fgets(line, sizeof line, f)) {
    lines++;
    assert_true(line[0] == '{');
    assert_non_null(strstr(line, "\"ts\":\""));
    assert_non_null(strstr(line, "\"event\":\""));
    assert_true(line[strlen(line) - 2] == '}');
  }
  fclose(f);
  assert_true(lines >= 4); /* start, listen, notify, stop, stopped */
  assert_true(td_log_has(&d, "\"event\":\"listen\""));
  td_done(&d);
}

static int run_cli(const char *out, char *const argv[]) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    int in = open("/dev/null", O_RDONLY);
    dup2(in, 0);
    execv(argv[0], argv);
    _exit(127);
  }
  return tu_wait(pid, 20000);
}

static void every_cli_command_works_with_connect(void **state) {
  (void)state;
  const char *build = getenv("BUILD");
  char exe[512];
  snprintf(exe, sizeof exe, "%s/engram", build && *build ? build : "build");
  if (access(exe, X_OK) != 0) {
    fprintf(stderr, "%s not built: skipped\n", exe);
    skip();
    return;
  }
  td d;
  td_init(&d, "net-cli");
  td_start(&d);
  char *out = tu_join(d.dir, "cli.out");
  char *bk = tu_join(d.dir, "backup");
  char *E = exe, *C = "--connect", *P = d.ep;
  struct {
    char *argv[16];
  } cmds[] = {
      {{E, C, P, "topic", "create", "memory", NULL}},
      {{E, C, P, "append", "memory", "memory.saved", "--key", "m-1", "--payload", "{\"a\":1}",
        NULL}},
      {{E, C, P, "append", "memory", "memory.updated", "--payload", "b", "--idem", "i-1", NULL}},
      {{E, C, P, "append", "memory", "memory.updated", "--payload", "b", "--idem", "i-1", "--json",
        NULL}},
      {{E, C, P, "read", "memory", NULL}},
      {{E, C, P, "read", "memory", "--json", NULL}},
      {{E, C, P, "topics", NULL}},
      {{E, C, P, "topic", "show", "memory", NULL}},
      {{E, C, P, "group", "create", "memory", "g", NULL}},
      {{E, C, P, "group", "list", NULL}},
      {{E, C, P, "group", "show", "memory", "g", NULL}},
      {{E, C, P, "consume", "memory", "g", "--consumer", "w1", "--count", "1", NULL}},
      {{E, C, P, "status", "memory", "g", "1", NULL}},
      {{E, C, P, "dlq", "list", "memory", "g", NULL}},
      {{E, C, P, "stat", NULL}},
      {{E, C, P, "verify", NULL}},
      {{E, C, P, "sync", NULL}},
      {{E, C, P, "backup", bk, NULL}},
      {{E, C, P, "group", "reset", "memory", "g", "--to", "earliest", NULL}},
      {{E, C, P, "group", "delete", "memory", "g", NULL}},
      {{E, C, P, "info", NULL}},
      {{E, C, P, "info", "--json", NULL}},
  };
  int failed = 0;
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
    int rc = run_cli(out, cmds[i].argv);
    if (rc != 0) {
      fprintf(stderr, "exit %d:", rc);
      for (char **a = cmds[i].argv + 3; *a; a++) fprintf(stderr, " %s", *a);
      fprintf(stderr, "\n");
      FILE *f = fopen(out, "r");
      char line[1024];
      while (f && fgets(line, sizeof line, f)) fprintf(stderr, "  | %s", line);
      if (f) fclose(f);
      failed++;
    }
  }
  /* Errors come back as one line and exit status 1. */
  char *bad[] = {E, C, P, "read", "nosuch", NULL};
  assert_int_equal(run_cli(out, bad), 1);
  char *nodaemon[] = {E, C, "ipc:///nonexistent/x.ipc", "topics", NULL};
  assert_int_equal(run_cli(out, nodaemon), 1);
  assert_int_equal(failed, 0);
  free(out);
  free(bk);
  assert_int_equal(td_stop(&d), 0);
  td_done(&d);
}

static int key_of(const char *path, const char *name, char out[41]) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[256];
  int found = -1;
  size_t n = strlen(name);
  while (found && fgets(line, sizeof line, f)) {
    if (!strncmp(line, name, n) && !strncmp(line + n, " = ", 3) && strlen(line + n + 3) >= 40) {
      memcpy(out, line + n + 3, 40);
      out[40] = '\0';
      found = 0;
    }
  }
  fclose(f);
  return found;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static void the_serve_command_takes_a_config_file_and_curve_key_files(void **state) {
  (void)state;
  const char *build = getenv("BUILD");
  char exe[512];
  snprintf(exe, sizeof exe, "%s/engram", build && *build ? build : "build");
  if (access(exe, X_OK) != 0 || engram_keygen((char[41]){0}, (char[41]){0}) == ENGRAM_ENOTSUP) {
    skip();
    return;
  }
  char *dir = tu_tmpdir("net-serve-cli");
  char *out = tu_join(dir, "out");
  char *sbase = tu_join(dir, "server"), *cbase = tu_join(dir, "client");
  char *skey = tu_join(dir, "server.key"), *cpub = tu_join(dir, "client.pub"),
       *ckey = tu_join(dir, "client.key");
  char *conf = tu_join(dir, "serve.conf"), *bad = tu_join(dir, "bad.conf"),
       *logf = tu_join(dir, "serve.log");
  char *kg1[] = {exe, "keygen", "--out", sbase, NULL},
       *kg2[] = {exe, "keygen", "--out", cbase, NULL};
  assert_int_equal(run_cli(out, kg1), 0);
  assert_int_equal(run_cli(out, kg2), 0);
  assert_int_not_equal(run_cli(out, kg1), 0); /* never overwrites */
  struct stat st;
  assert_int_equal(stat(skey, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  char spub[41], cp[41], cs[41];
  assert_int_equal(key_of(skey, "public-key", spub), 0);
  assert_int_equal(key_of(ckey, "public-key", cp), 0);
  assert_int_equal(key_of(ckey, "secret-key", cs), 0);

  char text[4096], ep[600];
  snprintf(ep, sizeof ep, "ipc://%s/cli.ipc", dir);
  snprintf(text, sizeof text,
           "# engram serve settings\n"
           "data = %s/log\n"
           "listen = %s\n"
           "log-json = true\n"
           "durability = async   # tests need no flushes\n"
           "workers = 4\n"
           "curve-secret-file = %s\n"
           "allow-keys-file = %s\n",
           dir, ep, skey, cpub);
  write_file(conf, text);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int fd = open(logf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    execl(exe, exe, "serve", "--config", conf, (char *)NULL);
    _exit(127);
  }
  engram_connect_options o = {
      .timeout_ms = 3000, .server_key = spub, .public_key = cp, .secret_key = cs};
  engram *r = td_connect_within(ep, 10000, &o);
  assert_non_null(r);
  OK(r, engram_topic_create(r, "memory", NULL));
  engram_close(r);
  kill(pid, SIGTERM);
  assert_int_equal(tu_wait(pid, 10000), 0);
  FILE *f = fopen(logf, "r");
  assert_non_null(f);
  char line[2048];
  int lines = 0;
  while (fgets(line, sizeof line, f)) {
    assert_true(line[0] == '{');
    lines++;
  }
  fclose(f);
  assert_true(lines >= 4);

  /* A bad line: one line on stderr, exit 1. */
  write_file(bad, "listen = tcp://127.0.0.1:1\nno-such-key = 1\n");
  char *badrun[] = {exe, "serve", "--data", dir, "--config", bad, NULL};
  assert_int_equal(run_cli(out, badrun), 1);
  f = fopen(out, "r");
  assert_non_null(f);
  lines = 0;
  while (fgets(line, sizeof line, f)) lines++;
  fclose(f);
  assert_int_equal(lines, 1);
  char *nokeys[] = {exe, "serve", "--data", dir, "--curve-secret-file", skey, NULL};
  assert_int_equal(run_cli(out, nokeys), 2);

  free(out);
  free(sbase);
  free(cbase);
  free(skey);
  free(cpub);
  free(ckey);
  free(conf);
  free(bad);
  free(logf);
  tu_tmpdir_done(dir);
}

/* A consume -> produce step over a connection: the acks and the appends land together
 * or not at all, and the appends' offsets come back in order. */
static void a_remote_transaction_commits_acks_and_appends_together(void **state) {
  (void)state;
  td d;
  engram *r = serve_and_conn(&d, "net-txn");
  OK(r, engram_topic_create(r, "memory", NULL));
  OK(r, engram_topic_create(r, "derived", NULL));
  engram_event in[2] = {ev_of("memory.saved", NULL, "a"), ev_of("memory.saved", NULL, "b")};
  uint64_t offs[2];
  OK(r, engram_append_batch(r, "memory", in, 2, offs, NULL));
  OK(r, engram_group_create(r, "memory", "g", NULL));
  engram_batch *b;
  OK(r, engram_fetch(r, "memory", "g", "w", 10, 0, &b));
  assert_int_equal(b->count, 2);

  engram_txn *txn;
  OK(r, engram_txn_begin(r, &txn));
  OK(r, engram_txn_ack(txn, "memory", "g", 1, b->events[0].attempt, "r1", 2));
  engram_header h = {"from", "1"};
  engram_event out1 = ev_of("memory.derived", "k", "A");
  out1.headers = &h;
  out1.n_headers = 1;
  uint64_t o1 = 0, o2 = 0, o3 = 0;
  OK(r, engram_txn_append(txn, "derived", &out1, &o1));
  OK(r, engram_txn_ack(txn, "memory", "g", 2, 0, NULL, 0));
  engram_event out2 = ev_of("memory.derived", NULL, "B");
  OK(r, engram_txn_append(txn, "derived", &out2, &o2));
  OK(r, engram_txn_append(txn, "derived", &out2, NULL));
  OK(r, engram_txn_append(txn, "memory", &out2, &o3));
  OK(r, engram_txn_commit(txn));
  engram_batch_free(b);
  assert_int_equal(o1, 1);
  assert_int_equal(o2, 2);
  assert_int_equal(o3, 3);

  engram_status st;
  OK(r, engram_status_get(r, "memory", "g", 1, &st));
  assert_int_equal(st.state, ENGRAM_STATE_DONE);
  assert_int_equal(st.result_len, 2);
  assert_memory_equal(st.result, "r1", 2);
  engram_free(st.result);
  OK(r, engram_status_get(r, "memory", "g", 2, &st));
  assert_int_equal(st.state, ENGRAM_STATE_DONE);
  engram_free(st.result);
  engram_topic_info ti;
  OK(r, engram_topic_info_get(r, "derived", &ti));
  assert_int_equal(ti.head_offset, 3);
  OK(r, engram_read(r, "derived", 1, &b));
  assert_int_equal(b->count, 1);
  assert_string_equal(b->events[0].key, "k");
  assert_int_equal(b->events[0].n_headers, 1);
  assert_string_equal(b->events[0].headers[0].value, "1");
  assert_memory_equal(b->events[0].payload, "A", 1);
  engram_batch_free(b);
  /* The append to the consumed topic is delivered to its group like any other. */
  OK(r, engram_fetch(r, "memory", "g", "w", 10, 0, &b));
  assert_int_equal(b->count, 1);
  assert_int_equal(b->events[0].offset, 3);
  engram_batch_free(b);

  conn_and_serve_done(&d, r);
}

static void a_failing_ack_aborts_the_whole_remote_transaction(void **state) {
  (void)state;
  td d;
  engram *r = serve_and_conn(&d, "net-txn-fail");
  OK(r, engram_topic_create(r, "memory", NULL));
  OK(r, engram_topic_create(r, "derived", NULL));
  engram_event e = ev_of("memory.saved", NULL, "a");
  OK(r, engram_append(r, "memory", &e, NULL, NULL));
  OK(r, engram_append(r, "memory", &e, NULL, NULL));
  engram_group_config g = {.ack_wait_ms = 100};
  OK(r, engram_group_create(r, "memory", "g", &g));
  engram_batch *b;
  OK(r, engram_fetch(r, "memory", "g", "w", 1, 0, &b));
  assert_int_equal(b->count, 1);
  engram_batch_free(b);
  OK(r, engram_ack(r, "memory", "g", 1, 1, NULL, 0));
  engram_event out = ev_of("memory.derived", NULL, "x");

  /* Already acked: the append before it and the valid ack after it are not applied. */
  OK(r, engram_fetch(r, "memory", "g", "w", 1, 0, &b));
  assert_int_equal(b->events[0].offset, 2);
  engram_batch_free(b);
  engram_txn *txn;
  uint64_t o = 77;
  OK(r, engram_txn_begin(r, &txn));
  OK(r, engram_txn_append(txn, "derived", &out, &o));
  OK(r, engram_txn_ack(txn, "memory", "g", 1, 0, NULL, 0));
  OK(r, engram_txn_ack(txn, "memory", "g", 2, 1, NULL, 0));
  assert_int_equal(engram_txn_commit(txn), ENGRAM_EALREADY);
  assert_non_null(strstr(engram_errmsg(r), "already finished"));
  assert_int_equal(o, 77);
  engram_topic_info ti;
  OK(r, engram_topic_info_get(r, "derived", &ti));
  assert_int_equal(ti.head_offset, 0);
  engram_status st;
  OK(r, engram_status_get(r, "memory", "g", 2, &st));
  assert_int_equal(st.state, ENGRAM_STATE_IN_FLIGHT);

  /* Stale: the lease expired and the event went out again at attempt 2. */
  OK(r, engram_fetch(r, "memory", "g", "w2", 1, 2000, &b));
  assert_int_equal(b->events[0].offset, 2);
  assert_int_equal(b->events[0].attempt, 2);
  engram_batch_free(b);
  OK(r, engram_txn_begin(r, &txn));
  OK(r, engram_txn_append(txn, "derived", &out, &o));
  OK(r, engram_txn_ack(txn, "memory", "g", 2, 1, NULL, 0));
  assert_int_equal(engram_txn_commit(txn), ENGRAM_ESTALE);
  assert_non_null(strstr(engram_errmsg(r), "stale"));
  OK(r, engram_topic_info_get(r, "derived", &ti));
  assert_int_equal(ti.head_offset, 0);
  OK(r, engram_status_get(r, "memory", "g", 2, &st));
  assert_int_equal(st.state, ENGRAM_STATE_IN_FLIGHT);
  assert_int_equal(st.attempt, 2);
  /* An append to a missing topic fails the same way. */
  OK(r, engram_txn_begin(r, &txn));
  OK(r, engram_txn_ack(txn, "memory", "g", 2, 2, NULL, 0));
  OK(r, engram_txn_append(txn, "nope", &out, NULL));
  assert_int_equal(engram_txn_commit(txn), ENGRAM_ENOTFOUND);
  OK(r, engram_status_get(r, "memory", "g", 2, &st));
  assert_int_equal(st.state, ENGRAM_STATE_IN_FLIGHT);

  conn_and_serve_done(&d, r);
}

static void an_empty_remote_transaction_commits_as_a_no_op(void **state) {
  (void)state;
  td d;
  engram *r = serve_and_conn(&d, "net-txn-empty");
  OK(r, engram_topic_create(r, "memory", NULL));
  engram_txn *txn;
  OK(r, engram_txn_begin(r, &txn));
  OK(r, engram_txn_commit(txn));
  OK(r, engram_txn_begin(r, &txn));
  engram_txn_abort(txn);
  engram_topic_info ti;
  OK(r, engram_topic_info_get(r, "memory", &ti));
  assert_int_equal(ti.head_offset, 0);
  conn_and_serve_done(&d, r);
}

/* ---------------------------------------------------------------------------------
 * What the daemon is; appends of many connections together.
 * ------------------------------------------------------------------------------ */
/* Threads of this process that run a ZeroMQ context's I/O. */
static int zmq_io_threads(void) {
  DIR *dir = opendir("/proc/self/task");
  assert_non_null(dir);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(dir))) {
    if (e->d_name[0] == '.') continue;
    char path[300], comm[64] = "";
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue; /* a thread that just ended */
    if (fgets(comm, sizeof comm, f) && !strncmp(comm, "ZMQbg/IO", 8)) n++;
    fclose(f);
  }
  closedir(dir);
  return n;
}

static int append_one(engram *r, const char *key) {
  engram_event e = ev_of("memory.saved", key, "{}");
  return engram_append(r, "ctx", &e, NULL, NULL);
}

/* The connections of a process share one ZeroMQ context (one I/O thread for all), made by
 * the first and ended with the last; a forked child makes its own and leaves the parent's
 * alone. */
static void connections_of_a_process_share_one_zeromq_context(void **state) {
  (void)state;
  td d;
  engram *a = serve_and_conn(&d, "net-ctx");
  assert_int_equal(zmq_io_threads(), 1);
  engram *b = conn(&d, 5000), *c = conn(&d, 5000);
  assert_int_equal(zmq_io_threads(), 1);
  OK(a, engram_topic_create(a, "ctx", NULL));
  OK(a, append_one(a, "a1"));
  OK(b, append_one(b, "b1"));
  OK(c, append_one(c, "c1"));

  pid_t p = fork();
  if (p == 0) {
    engram_connect_options o = {.timeout_ms = 5000};
    engram *k = NULL;
    int rc = engram_connect(d.ep, &o, &k);
    if (rc == 0) rc = append_one(k, "child");
    engram_close(k);
    _exit(rc ? 1 : 0);
  }
  assert_int_equal(tu_wait(p, 30000), 0);

  OK(a, append_one(a, "a2"));
  OK(b, append_one(b, "b2"));
  engram_close(b);
  OK(c, append_one(c, "c2"));
  engram_close(c);
  engram_close(a);
  assert_int_equal(zmq_io_threads(), 0); /* the last close ended it */
  engram *e = conn(&d, 5000);            /* and the next connection makes one anew */
  assert_int_equal(zmq_io_threads(), 1);
  engram_topic_info info;
  OK(e, engram_topic_info_get(e, "ctx", &info));
  assert_int_equal(info.head_offset, 7); /* three, the child's, three */
  conn_and_serve_done(&d, e);
}

static void the_daemon_says_what_it_is(void **state) {
  (void)state;
  td d;
  td_init(&d, "net-info");
  d.o.durability = ENGRAM_DURABILITY_NOMETASYNC;
  d.o.max_message = 1u << 20;
  td_start(&d);
  engram *r = conn(&d, 5000);
  OK(r, engram_topic_create(r, "memory", NULL));
  engram_event e = ev_of("memory.saved", "k", "{}");
  OK(r, engram_append(r, "memory", &e, NULL, NULL));

  engram_server_info info;
  memset(&info, 0xff, sizeof info);
  OK(r, engram_server_info_get(r, &info));
  assert_string_equal(info.version, ENGRAM_VERSION_STRING);
  assert_int_equal(info.protocol_version, ENGRAM_PROTOCOL_VERSION);
  assert_int_equal(info.durability, ENGRAM_DURABILITY_NOMETASYNC);
  assert_int_equal(info.max_message, 1u << 20);
  assert_int_equal(info.max_events, 65536);
  assert_int_equal(info.curve, 0);
  /* Workers default to the machine's cores, at least two. */
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  assert_int_equal(info.workers, cores < 2 ? 2 : cores);
  assert_true(info.requests >= 2); /* the topic and the append, answered before this one */
  assert_int_equal(info.appended, 1);
  assert_int_equal(info.errors, 0);
  assert_true(info.commits >= 1 && info.flushes >= 1);
  assert_true(info.uptime_ms < 600000);

  /* The daemon's log id, the same as the log's own. */
  engram_log_info li, lli;
  OK(r, engram_log_info_get(r, &li));
  assert_int_equal(strlen(li.id), 32);
  assert_int_equal(li.format_version, ENGRAM_FORMAT_VERSION);

  /* The daemon's log's space, as a handle of this process opened beside it sees it (no
   * write in between). */
  engram_space rs, es;
  OK(r, engram_space_get(r, &rs));
  engram *beside;
  OK(NULL, engram_open(d.logdir, NULL, &beside));
  OK(beside, engram_space_get(beside, &es));
  engram_close(beside);
  assert_true(rs.used_bytes > 0 && rs.file_bytes > 0);
  assert_true(rs.map_bytes >= rs.used_bytes + rs.free_bytes);
  assert_int_equal(rs.used_bytes, es.used_bytes);
  assert_int_equal(rs.free_bytes, es.free_bytes);
  assert_int_equal(rs.map_bytes, es.map_bytes);
  assert_int_equal(rs.file_bytes, es.file_bytes);
  assert_int_equal(engram_space_get(r, NULL), ENGRAM_EINVAL);

  /* Bad input and an embedded handle. */
  assert_int_equal(engram_server_info_get(r, NULL), ENGRAM_EINVAL);
  assert_int_equal(engram_server_info_get(NULL, &info), ENGRAM_EINVAL);
  engram_close(r);
  assert_int_equal(td_stop(&d), 0);
  engram *l;
  OK(NULL, engram_open(d.logdir, NULL, &l));
  OK(l, engram_log_info_get(l, &lli));
  assert_string_equal(li.id, lli.id);
  assert_true(li.created_ns == lli.created_ns);
  assert_int_equal(engram_server_info_get(l, &info), ENGRAM_ENOTSUP);
  assert_non_null(strstr(engram_errmsg(l), "engram_connect"));
  engram_close(l);
  td_done(&d);
}

#define SHARERS 8
#define SHARE_EACH 40
struct sharer {
  const char *ep;
  int id;
  uint64_t offs[SHARE_EACH];
  int bad_rc[SHARE_EACH];
  int fails;
};

static void *share_thread(void *arg) {
  struct sharer *t = arg;
  engram_connect_options o = {.timeout_ms = 30000};
  engram *r = td_connect_within(t->ep, 10000, &o);
  if (!r) {
    t->fails++;
    return NULL;
  }
  static char big[3000];
  memset(big, 'x', sizeof big - 1);
  for (int i = 0; i < SHARE_EACH; i++) {
    char key[32];
    snprintf(key, sizeof key, "c%d-%d", t->id, i);
    engram_event e = ev_of("memory.saved", key, "{}");
    if (t->id == 0 && i % 2) { /* over the topic's max_payload: refused alone */
      engram_event b = ev_of("memory.saved", key, big);
      t->bad_rc[i] = engram_append(r, "memory", &b, &t->offs[i], NULL);
      continue;
    }
    if (engram_append(r, "memory", &e, &t->offs[i], NULL)) t->fails++;
  }
  engram_close(r);
  return NULL;
}

static void appends_of_many_connections_commit_together_in_each_ones_order(void **state) {
  (void)state;
  td d;
  td_init(&d, "net-share");
  td_start(&d);
  engram *r = conn(&d, 5000);
  engram_topic_config cfg = {.max_payload = 1024};
  OK(r, engram_topic_create(r, "memory", &cfg));
  struct sharer ts[SHARERS];
  pthread_t th[SHARERS];
  memset(ts, 0, sizeof ts);
  for (int i = 0; i < SHARERS; i++) {
    ts[i].ep = d.ep;
    ts[i].id = i;
    assert_int_equal(pthread_create(&th[i], NULL, share_thread, &ts[i]), 0);
  }
  for (int i = 0; i < SHARERS; i++) pthread_join(th[i], NULL);
  size_t good = 0;
  for (int i = 0; i < SHARERS; i++) {
    assert_int_equal(ts[i].fails, 0);
    uint64_t last = 0;
    for (int k = 0; k < SHARE_EACH; k++) {
      if (i == 0 && k % 2) { /* each bad append got its own answer, nothing else did */
        assert_int_equal(ts[i].bad_rc[k], ENGRAM_ETOOBIG);
        continue;
      }
      assert_true(ts[i].offs[k] > last); /* a connection's appends keep their order */
      last = ts[i].offs[k];
      good++;
    }
  }
  /* Every good append has its own offset and its own event. */
  engram_topic_info ti;
  OK(r, engram_topic_info_get(r, "memory", &ti));
  assert_int_equal(ti.count, good);
  assert_int_equal(ti.head_offset, good);
  for (int i = 0; i < SHARERS; i++)
    for (int k = 0; k < SHARE_EACH; k++) {
      if (i == 0 && k % 2) continue;
      engram_batch *b;
      OK(r, engram_read(r, "memory", ts[i].offs[k], &b));
      char key[32];
      snprintf(key, sizeof key, "c%d-%d", i, k);
      assert_string_equal(b->events[0].key, key);
      engram_batch_free(b);
    }
  engram_server_info info;
  OK(r, engram_server_info_get(r, &info));
  assert_int_equal(info.appended, good);
  engram_close(r);
  assert_int_equal(td_stop(&d), 0);
  td_done(&d);
}

/* ---------------------------------------------------------------------------------
 * Ack-and-fetch through the daemon.
 * ------------------------------------------------------------------------------ */
static uint64_t daemon_commits(engram *r) {
  engram_server_info info;
  OK(r, engram_server_info_get(r, &info));
  return info.commits;
}

struct ack_fetcher {
  engram *log;
  engram_ack_item items[3];
  int rc;
  engram_batch *b;
  int done;
};

static void *ack_fetch_thread(void *arg) {
  struct ack_fetcher *a = arg;
  a->rc = engram_ack_fetch(a->log, "memory", "g", "w", a->items, 3, NULL, 10, 20000, &a->b);
  __atomic_store_n(&a->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

/* Topic "memory" with n events and group "g"; consumer "w" leases the first three, and
 * items[] receives their acks. */
static void fetch_first_three(engram *r, size_t n, engram_ack_item items[3]) {
  OK(r, engram_topic_create(r, "memory", NULL));
  engram_event in[8];
  uint64_t offs[8];
  assert_true(n >= 3 && n <= 8);
  for (size_t i = 0; i < n; i++) in[i] = ev_of("memory.saved", NULL, "x");
  OK(r, engram_append_batch(r, "memory", in, n, offs, NULL));
  OK(r, engram_group_create(r, "memory", "g", NULL));
  engram_batch *b = NULL;
  OK(r, engram_ack_fetch(r, "memory", "g", "w", NULL, 0, NULL, 3, 0, &b));
  assert_int_equal(b->count, 3);
  for (int i = 0; i < 3; i++)
    items[i] = (engram_ack_item){.offset = b->events[i].offset, .attempt = b->events[i].attempt};
  engram_batch_free(b);
}

/* Appends one event on w; the ack-fetch waiting on thread t gets it alone. */
static void append_late_and_join(engram *w, pthread_t t, struct ack_fetcher *a) {
  engram_event e = ev_of("memory.saved", NULL, "late");
  uint64_t off;
  OK(w, engram_append(w, "memory", &e, &off, NULL));
  pthread_join(t, NULL);
  OK(a->log, a->rc);
  assert_int_equal(a->b->count, 1);
  assert_int_equal(a->b->events[0].offset, off);
  engram_batch_free(a->b);
}

static void ack_fetch_through_the_daemon_is_one_commit_all_or_nothing_and_may_wait(void **state) {
  (void)state;
  td d;
  engram *r = serve_and_conn(&d, "net-ackfetch");
  engram_ack_item items[3];
  fetch_first_three(r, 6, items);
  engram_batch *b = NULL;

  /* The acks of 1..3 and the leases of 4..6: one request, one commit of the daemon. */
  uint64_t c0 = daemon_commits(r);
  int codes[3] = {9, 9, 9};
  OK(r, engram_ack_fetch(r, "memory", "g", "w", items, 3, codes, 3, 0, &b));
  assert_int_equal(daemon_commits(r), c0 + 1);
  assert_int_equal(codes[0], 0);
  assert_int_equal(codes[2], 0);
  assert_int_equal(b->count, 3);
  assert_int_equal(b->events[0].offset, 4);
  assert_int_equal(b->events[0].attempt, 1);
  engram_batch_free(b);
  engram_group_info gi;
  OK(r, engram_group_info_get(r, "memory", "g", &gi));
  assert_int_equal(gi.acked, 3);
  assert_int_equal(gi.in_flight, 3);

  /* A bad ack among good ones: nothing acked, nothing leased, each item's code back. */
  engram_ack_item bad[2] = {{4, 1, NULL, 0}, {99, 1, NULL, 0}};
  codes[0] = codes[1] = 9;
  b = (engram_batch *)codes;
  c0 = daemon_commits(r);
  assert_int_equal(engram_ack_fetch(r, "memory", "g", "w", bad, 2, codes, 10, 0, &b),
                   ENGRAM_ENOTFOUND);
  assert_null(b);
  assert_non_null(strstr(engram_errmsg(r), "nothing was acked or fetched"));
  assert_int_equal(codes[0], 0);
  assert_int_equal(codes[1], ENGRAM_ENOTFOUND);
  assert_int_equal(daemon_commits(r), c0);
  engram_status st;
  OK(r, engram_status_get(r, "memory", "g", 4, &st));
  assert_int_equal(st.state, ENGRAM_STATE_IN_FLIGHT);
  OK(r, engram_group_info_get(r, "memory", "g", &gi));
  assert_int_equal(gi.acked, 3);
  assert_int_equal(gi.delivered, 6);

  /* A long poll: its acks are committed while it waits (the daemon parks it), and it is
   * answered with the event that arrives, its acks not applied twice. */
  engram *w = conn(&d, 5000);
  struct ack_fetcher a = {.log = r};
  for (int i = 0; i < 3; i++)
    a.items[i] = (engram_ack_item){.offset = 4 + (uint64_t)i, .attempt = 1};
  pthread_t t;
  pthread_create(&t, NULL, ack_fetch_thread, &a);
  int64_t until = tu_mono_ms() + 20000;
  for (;;) {
    OK(w, engram_status_get(w, "memory", "g", 6, &st));
    if (st.state == ENGRAM_STATE_DONE || tu_mono_ms() > until) break;
    tu_sleep_ms(5);
  }
  assert_int_equal(st.state, ENGRAM_STATE_DONE);
  assert_false(__atomic_load_n(&a.done, __ATOMIC_ACQUIRE));
  append_late_and_join(w, t, &a);
  OK(w, engram_group_info_get(w, "memory", "g", &gi));
  assert_int_equal(gi.acked, 6);
  assert_int_equal(gi.in_flight, 1);
  engram_close(w);
  conn_and_serve_done(&d, r);
}

/* A parked ack-fetch holds its acks, uncommitted, for the commit that wakes it (here for
 * 3 s, ENGRAM_TEST_ACK_HOLD_MS; 2 ms in a real daemon, as engram_ack_fetch embedded): the
 * append and the ack-fetch then cost two commits of the daemon, not three (the acks at
 * the park, the append, the leases), and the acks are applied once. */
static void a_parked_ack_fetch_holds_its_acks_for_the_commit_that_wakes_it(void **state) {
  (void)state;
  td d;
  setenv("ENGRAM_TEST_ACK_HOLD_MS", "3000", 1);
  engram *r = serve_and_conn(&d, "net-ackhold");
  unsetenv("ENGRAM_TEST_ACK_HOLD_MS");
  engram *w = conn(&d, 5000);
  struct ack_fetcher a = {.log = r};
  fetch_first_three(r, 3, a.items);

  uint64_t c0 = daemon_commits(w);
  pthread_t t;
  pthread_create(&t, NULL, ack_fetch_thread, &a);
  engram_server_info info = {0};
  int64_t until = tu_mono_ms() + 20000;
  do {
    tu_sleep_ms(5);
    OK(w, engram_server_info_get(w, &info));
  } while (info.parked == 0 && tu_mono_ms() < until);
  assert_int_equal(info.parked, 1);
  /* Parked, its acks not yet applied. */
  engram_status st;
  OK(w, engram_status_get(w, "memory", "g", 1, &st));
  assert_int_equal(st.state, ENGRAM_STATE_IN_FLIGHT);
  assert_int_equal(daemon_commits(w), c0);

  append_late_and_join(w, t, &a);
  assert_int_equal(daemon_commits(w), c0 + 2);
  engram_group_info gi;
  OK(w, engram_group_info_get(w, "memory", "g", &gi));
  assert_int_equal(gi.acked, 3);
  assert_int_equal(gi.in_flight, 1);
  engram_close(w);
  conn_and_serve_done(&d, r);
}

/* ENGRAM_EVENT_TIMESTAMP: an importer appends with the original append times, embedded
 * and through the daemon alike (plain, batched, pipelined and transactional appends). A time older
 * than the topic's newest event, or ahead of the log's clock, is refused with the same message on
 * both, and leaves the topic as it was; an ordinary append afterwards is stamped by the clock as
 * before. Idempotency keys appended so take the event's time as theirs. */
static void appends_with_an_explicit_timestamp_keep_the_topics_times_in_order(void **state) {
  (void)state;
  td d;
  engram *r = serve_and_conn(&d, "net-timestamp");
  char *edir = tu_join(d.dir, "embedded");
  engram *l = tu_open(edir, NULL);
  engram *both[2] = {l, r};
  char msgs[2][3][512];
  int64_t now = tu_now_ns();
  for (int s = 0; s < 2; s++) {
    engram *log = both[s];
    OK(log, engram_topic_create(log, "memory", NULL));
    engram_event evs[3] = {ev_of("memory.saved", NULL, "a"), ev_of("memory.saved", NULL, "b"),
                           ev_of("memory.saved", "k", "c")};
    for (int i = 0; i < 3; i++) {
      evs[i].flags = ENGRAM_EVENT_TIMESTAMP;
      evs[i].timestamp_ns = now - 3600000000000LL + i * 1000; /* an hour ago */
    }
    evs[1].timestamp_ns = evs[0].timestamp_ns; /* equal times are in order */
    evs[2].idempotency_key = "once";
    uint64_t offs[3];
    OK(log, engram_append_batch(log, "memory", evs, 3, offs, NULL));
    engram_batch *b;
    OK(log, engram_read_range(log, "memory", 1, 10, &b));
    assert_int_equal(b->count, 3);
    for (int i = 0; i < 3; i++) {
      assert_int_equal(b->events[i].timestamp_ns, evs[i].timestamp_ns);
      assert_int_equal(b->events[i].flags, 0); /* an input flag, not stored */
    }
    engram_batch_free(b);
    /* Older than the newest event: refused, nothing written. */
    engram_event old = ev_of("memory.saved", NULL, "d");
    old.flags = ENGRAM_EVENT_TIMESTAMP;
    old.timestamp_ns = evs[2].timestamp_ns - 1;
    assert_int_equal(engram_append(log, "memory", &old, NULL, NULL), ENGRAM_EINVAL);
    snprintf(msgs[s][0], 512, "%s", engram_errmsg(log));
    /* Ahead of the clock: refused too (ordinary appends after it would go back in time). */
    engram_event ahead = old;
    ahead.timestamp_ns = now + 3600000000000LL;
    assert_int_equal(engram_append(log, "memory", &ahead, NULL, NULL), ENGRAM_EINVAL);
    snprintf(msgs[s][1], 512, "%s", engram_errmsg(log));
    engram_event neg = old;
    neg.timestamp_ns = -1;
    assert_int_equal(engram_append(log, "memory", &neg, NULL, NULL), ENGRAM_EINVAL);
    snprintf(msgs[s][2], 512, "%s", engram_errmsg(log));
    engram_topic_info ti;
    OK(log, engram_topic_info_get(log, "memory", &ti));
    assert_int_equal(ti.head_offset, 3);
    /* The key's time is the event's: an hour ago, past the default 10-minute window, so
     * the same key appends anew now. */
    engram_event again = ev_of("memory.saved", "k", "e");
    again.idempotency_key = "once";
    uint64_t off = 0;
    int dup = -1;
    OK(log, engram_append(log, "memory", &again, &off, &dup));
    assert_int_equal(dup, 0);
    assert_int_equal(off, 4);
    /* Within the window of an imported key's time: a duplicate. */
    engram_event recent = ev_of("memory.saved", NULL, "f");
    recent.flags = ENGRAM_EVENT_TIMESTAMP;
    recent.idempotency_key = "recent";
    OK(log, engram_read(log, "memory", 4, &b));
    recent.timestamp_ns = b->events[0].timestamp_ns; /* the clock's time of offset 4 */
    engram_batch_free(b);
    OK(log, engram_append(log, "memory", &recent, &off, &dup));
    assert_int_equal(off, 5);
    engram_event plain = ev_of("memory.saved", NULL, "g");
    plain.idempotency_key = "recent";
    OK(log, engram_append(log, "memory", &plain, &off, &dup));
    assert_int_equal(dup, 1);
    assert_int_equal(off, 5);
    /* An ordinary append is stamped by the clock, after the imported times. */
    engram_event later = ev_of("memory.saved", NULL, "h");
    OK(log, engram_append(log, "memory", &later, &off, NULL));
    OK(log, engram_read(log, "memory", off, &b));
    assert_true(b->events[0].timestamp_ns >= now);
    int64_t clock_time = b->events[0].timestamp_ns;
    engram_batch_free(b);
    /* Pipelined appends carry the given time too. */
    engram_event piped = ev_of("memory.saved", NULL, "i");
    piped.flags = ENGRAM_EVENT_TIMESTAMP;
    piped.timestamp_ns = clock_time;
    OK(log, engram_append_async(log, "memory", &piped, NULL, NULL));
    OK(log, engram_append_wait(log));
    OK(log, engram_read(log, "memory", off + 1, &b));
    assert_int_equal(b->events[0].timestamp_ns, clock_time);
    engram_batch_free(b);
    /* And appends in a transaction. */
    engram_txn *txn;
    OK(log, engram_txn_begin(log, &txn));
    uint64_t toff = 0;
    OK(log, engram_txn_append(txn, "memory", &piped, &toff));
    OK(log, engram_txn_commit(txn));
    OK(log, engram_read(log, "memory", toff, &b));
    assert_int_equal(b->events[0].timestamp_ns, clock_time);
    engram_batch_free(b);
  }
  for (int k = 0; k < 3; k++) { /* the same message, but for the clock's reading */
    char *clk[2] = {strstr(msgs[0][k], "clock ("), strstr(msgs[1][k], "clock (")};
    for (int s = 0; s < 2; s++)
      if (clk[s]) *clk[s] = '\0';
    assert_string_equal(msgs[0][k], msgs[1][k]);
  }
  assert_non_null(strstr(msgs[0][0], "older than"));
  assert_non_null(strstr(msgs[0][1], "ahead of"));
  engram_close(l);
  free(edir);
  conn_and_serve_done(&d, r);
}

int main(void) {
  tu_test_filter();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_log_operation_works_through_the_daemon),
      cmocka_unit_test(errors_carry_the_same_code_and_message_as_embedded),
      cmocka_unit_test(every_entry_point_answers_bad_input_alike_on_both_backends),
      cmocka_unit_test(group_operations_agree_with_the_embedded_library_step_by_step),
      cmocka_unit_test(leases_expire_and_retries_come_back_through_the_daemon),
      cmocka_unit_test(a_long_poll_returns_when_events_arrive_or_its_wait_ends),
      cmocka_unit_test(pipelined_appends_keep_their_order_and_report_every_offset),
      cmocka_unit_test(connections_pipelining_at_once_share_commits_and_keep_their_order),
      cmocka_unit_test(pipelined_appends_fail_alone_and_leave_without_further_calls),
      cmocka_unit_test(replies_come_back_out_of_order_on_one_connection),
      cmocka_unit_test(no_daemon_means_econn_and_a_frozen_one_etimedout),
      cmocka_unit_test(clients_reconnect_after_a_daemon_restart),
      cmocka_unit_test(a_tcp_port_libzmq_would_change_is_refused),
      cmocka_unit_test(an_http_address_in_use_is_refused_with_one_message),
      cmocka_unit_test(a_daemon_out_of_descriptors_says_so_and_keeps_serving),
      cmocka_unit_test(many_short_connections_each_connect_at_once),
      cmocka_unit_test(a_second_daemon_on_the_same_directory_is_refused),
      cmocka_unit_test(sigterm_answers_requests_in_flight_and_stops_cleanly),
      cmocka_unit_test(curve_lets_in_only_the_allowed_keys),
      cmocka_unit_test(a_curve_client_at_a_plain_daemon_is_told_so),
      cmocka_unit_test(commits_are_published_and_wake_embedded_waiters),
      cmocka_unit_test(embedded_waiters_wake_without_a_daemon),
      cmocka_unit_test(the_daemon_logs_json_lines_when_asked),
      cmocka_unit_test(every_cli_command_works_with_connect),
      cmocka_unit_test(the_serve_command_takes_a_config_file_and_curve_key_files),
      cmocka_unit_test(a_remote_transaction_commits_acks_and_appends_together),
      cmocka_unit_test(a_failing_ack_aborts_the_whole_remote_transaction),
      cmocka_unit_test(an_empty_remote_transaction_commits_as_a_no_op),
      cmocka_unit_test(the_daemon_says_what_it_is),
      cmocka_unit_test(connections_of_a_process_share_one_zeromq_context),
      cmocka_unit_test(appends_of_many_connections_commit_together_in_each_ones_order),
      cmocka_unit_test(ack_fetch_through_the_daemon_is_one_commit_all_or_nothing_and_may_wait),
      cmocka_unit_test(a_parked_ack_fetch_holds_its_acks_for_the_commit_that_wakes_it),
      cmocka_unit_test(appends_with_an_explicit_timestamp_keep_the_topics_times_in_order),
  };
  return cmocka_run_group_tests_name("net", tests, NULL, NULL);
}
