/* test_durations.c — every duration an option or argument may give has a documented
 * maximum: the maximum is accepted, one millisecond more is refused with ENGRAM_EINVAL
 * and a message, on embedded handles and through `engram serve` alike; and no duration,
 * however large, wraps the nanosecond clock (a dedup window that overflowed used to turn
 * deduplication off). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/common.h"
#include "engram.h"
#include "helpers/testutil.h"
#include "test_net_daemon.h"

#define OK(log, call) TU_OK(log, call)

/* The call was refused as invalid, with a message naming the limit. */
#define INVALID(log, call) invalid_at(log, (call), #call, __LINE__)
static void invalid_at(engram *log, int rc, const char *what, int line) {
  if (rc != ENGRAM_EINVAL)
    fprintf(stderr, "line %d: %s: expected ENGRAM_EINVAL, got %s (%s)\n", line, what,
            engram_errname(rc), engram_errmsg(log));
  assert_int_equal(rc, ENGRAM_EINVAL);
  if (!strstr(engram_errmsg(log), "over the limit"))
    fprintf(stderr, "line %d: %s: message '%s' does not name the limit\n", line, what,
            engram_errmsg(log));
  assert_non_null(strstr(engram_errmsg(log), "over the limit"));
}

static const engram_event ev = {.type = "memory.saved", .payload = "{}", .payload_len = 2};

/* ---------------------------------------------------------------------------------
 * The conversion helper.
 * ------------------------------------------------------------------------------ */
static void converting_a_huge_duration_saturates_instead_of_wrapping(void **state) {
  (void)state;
  assert_int_equal(clock_ms_to_ns(0), 0);
  assert_int_equal(clock_ms_to_ns(1500), 1500000000LL);
  assert_int_equal(clock_ms_to_ns(10000000000000ull), INT64_MAX); /* 10^13 ms: past 2262 */
  assert_int_equal(clock_ms_to_ns(9000000000000ull), 9000000000000LL * 1000000);
  assert_int_equal(clock_ms_to_ns((uint64_t)INT64_MAX / 1000000), INT64_MAX / 1000000 * 1000000);
  assert_int_equal(clock_ms_to_ns((uint64_t)INT64_MAX / 1000000 + 1), INT64_MAX);
  assert_int_equal(clock_ms_to_ns(UINT64_MAX), INT64_MAX);
  int64_t now = 1700000000LL * 1000000000;
  assert_int_equal(clock_after_ms(now, 250), now + 250000000);
  assert_int_equal(clock_after_ms(now, UINT64_MAX), INT64_MAX);
  assert_int_equal(clock_after_ms(now, 20000000000000ull), INT64_MAX);
  assert_int_equal(clock_add_ns(INT64_MAX - 1, 5), INT64_MAX);
  assert_int_equal(clock_add_ns(INT64_MIN + 1, -5), INT64_MIN);
  assert_int_equal(clock_add_ns(-5, 3), -2);
}

/* ---------------------------------------------------------------------------------
 * engram_open options.
 * ------------------------------------------------------------------------------ */
static void a_dedup_window_of_ten_trillion_ms_is_refused_at_open(void **state) {
  (void)state;
  char *dir = tu_tmpdir("dur-dedup");
  tu_clock clk;
  tu_clock_init(&clk, 0);
  engram_options o = {
      .dedup_window_ms = 10000000000000ull, .clock_ns = tu_clock_ns, .clock_ctx = &clk};
  engram *log = NULL;
  int rc = engram_open(dir, &o, &log);
  if (rc == 0) {
    /* Were it accepted, it would have to deduplicate. */
    tu_topic(log, "memory", NULL);
    engram_event e = ev;
    e.idempotency_key = "req-1";
    uint64_t a = 0, b = 0;
    int dup = -1;
    OK(log, engram_append(log, "memory", &e, &a, NULL));
    tu_clock_advance_ms(&clk, 1000);
    OK(log, engram_append(log, "memory", &e, &b, &dup));
    fprintf(stderr, "window 10^13 ms accepted: offsets %llu and %llu, duplicate %d\n",
            (unsigned long long)a, (unsigned long long)b, dup);
    engram_close(log);
  }
  assert_int_equal(rc, ENGRAM_EINVAL);
  assert_null(log);
  assert_non_null(strstr(engram_errmsg(NULL), "dedup_window_ms"));
  assert_non_null(strstr(engram_errmsg(NULL), "over the limit"));
  /* Nothing was created. */
  char *data = tu_join(dir, "data.mdb");
  assert_false(tu_exists(data));
  free(data);
  tu_tmpdir_done(dir);
}

static void the_longest_dedup_window_deduplicates_to_its_last_millisecond(void **state) {
  (void)state;
  char *dir = tu_tmpdir("dur-dedup-max");
  tu_clock clk;
  tu_clock_init(&clk, 0);
  engram_options o = {
      .dedup_window_ms = ENGRAM_MAX_DEDUP_WINDOW_MS, .clock_ns = tu_clock_ns, .clock_ctx = &clk};
  engram *log = tu_open(dir, &o);
  tu_topic(log, "memory", NULL);
  engram_event e = ev;
  e.idempotency_key = "req-1";
  uint64_t off = 0;
  int dup = -1;
  OK(log, engram_append(log, "memory", &e, &off, &dup));
  assert_int_equal(off, 1);
  tu_clock_advance_ms(&clk, (int64_t)ENGRAM_MAX_DEDUP_WINDOW_MS - 1);
  OK(log, engram_append(log, "memory", &e, &off, &dup));
  assert_int_equal(off, 1);
  assert_int_equal(dup, 1);
  tu_clock_advance_ms(&clk, 1);
  OK(log, engram_append(log, "memory", &e, &off, &dup));
  assert_int_equal(off, 2);
  assert_int_equal(dup, 0);
  engram_close(log);
  tu_tmpdir_done(dir);
}

static void open_durations_are_accepted_up_to_their_maximum(void **state) {
  (void)state;
  struct {
    engram_options o;
    int ok;
  } cases[] = {
      {{.dedup_window_ms = ENGRAM_MAX_DEDUP_WINDOW_MS}, 1},
      {{.dedup_window_ms = ENGRAM_MAX_DEDUP_WINDOW_MS + 1}, 0},
      {{.dedup_window_ms = UINT64_MAX}, 0},
      {{.flush_interval_ms = ENGRAM_MAX_FLUSH_INTERVAL_MS,
        .durability = ENGRAM_DURABILITY_NOMETASYNC},
       1},
      {{.flush_interval_ms = ENGRAM_MAX_FLUSH_INTERVAL_MS + 1}, 0},
      {{.flush_interval_ms = UINT32_MAX}, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *dir = tu_tmpdir("dur-open");
    engram *log = NULL;
    int rc = engram_open(dir, &cases[i].o, &log);
    if (cases[i].ok) {
      OK(NULL, rc);
    } else {
      INVALID(NULL, rc);
      assert_null(log);
    }
    engram_close(log);
    tu_tmpdir_done(dir);
  }
}

static void a_remote_timeout_is_accepted_up_to_its_maximum(void **state) {
  (void)state;
  char *dir = tu_tmpdir("dur-connect");
  char ep[600];
  snprintf(ep, sizeof ep, "ipc://%s/nobody.ipc", dir);
  engram *log = NULL;
  engram_connect_options o = {.timeout_ms = ENGRAM_MAX_TIMEOUT_MS + 1};
  INVALID(NULL, engram_connect(ep, &o, &log));
  assert_null(log);
  o.timeout_ms = UINT32_MAX;
  INVALID(NULL, engram_connect(ep, &o, &log));
  /* At the maximum the options pass; with no daemon there the connect fails as always. */
  o.timeout_ms = ENGRAM_MAX_TIMEOUT_MS;
  int rc = engram_connect(ep, &o, &log);
  assert_int_not_equal(rc, ENGRAM_EINVAL);
  engram_close(log);
  tu_tmpdir_done(dir);
}

/* ---------------------------------------------------------------------------------
 * Group options and call arguments, the same on both kinds of handle.
 * ------------------------------------------------------------------------------ */
static void create_group(engram *log, const char *name, const engram_group_config *cfg) {
  OK(log, engram_group_create(log, "memory", name, cfg));
}

/* Checks every group duration on `log`, which holds an empty topic "memory". */
static void group_durations_are_bounded(engram *log) {
  /* Configuration: each maximum accepted, one more refused. */
  uint64_t back_max[2] = {1000, ENGRAM_MAX_BACKOFF_MS};
  uint64_t back_over[2] = {1000, ENGRAM_MAX_BACKOFF_MS + 1};
  create_group(log, "ack-max", &(engram_group_config){.ack_wait_ms = ENGRAM_MAX_ACK_WAIT_MS});
  INVALID(log,
          engram_group_create(log, "memory", "ack-over",
                              &(engram_group_config){.ack_wait_ms = ENGRAM_MAX_ACK_WAIT_MS + 1}));
  INVALID(log, engram_group_create(log, "memory", "ack-huge",
                                   &(engram_group_config){.ack_wait_ms = UINT64_MAX}));
  create_group(log, "back-max", &(engram_group_config){.backoff_ms = back_max, .n_backoff = 2});
  INVALID(log,
          engram_group_create(log, "memory", "back-over",
                              &(engram_group_config){.backoff_ms = back_over, .n_backoff = 2}));
  create_group(log, "ttl-max", &(engram_group_config){.result_ttl_ms = ENGRAM_MAX_RESULT_TTL_MS});
  INVALID(log, engram_group_create(
                   log, "memory", "ttl-over",
                   &(engram_group_config){.result_ttl_ms = ENGRAM_MAX_RESULT_TTL_MS + 1}));
  engram_group_info gi;
  OK(log, engram_group_info_get(log, "memory", "ack-max", &gi));
  assert_int_equal(gi.ack_wait_ms, ENGRAM_MAX_ACK_WAIT_MS);
  assert_int_equal(engram_group_info_get(log, "memory", "ack-over", &gi), ENGRAM_ENOTFOUND);

  /* Calls: fetch wait, nack delay, extend. */
  uint64_t off = 0;
  OK(log, engram_append(log, "memory", &ev, &off, NULL));
  OK(log, engram_append(log, "memory", &ev, &off, NULL));
  engram_batch *b = NULL;
  INVALID(log, engram_fetch(log, "memory", "ack-max", "c", 2, ENGRAM_MAX_FETCH_WAIT_MS + 1, &b));
  INVALID(log, engram_fetch(log, "memory", "ack-max", "c", 2, UINT64_MAX, &b));
  /* At the maximum wait: events are there, so it returns at once. */
  OK(log, engram_fetch(log, "memory", "ack-max", "c", 2, ENGRAM_MAX_FETCH_WAIT_MS, &b));
  assert_int_equal(b->count, 2);
  uint64_t o1 = b->events[0].offset, o2 = b->events[1].offset;
  engram_batch_free(b);
  INVALID(log, engram_extend(log, "memory", "ack-max", o1, 1, ENGRAM_MAX_DELAY_MS + 1));
  INVALID(log, engram_extend(log, "memory", "ack-max", o1, 1, UINT64_MAX));
  OK(log, engram_extend(log, "memory", "ack-max", o1, 1, ENGRAM_MAX_DELAY_MS));
  engram_status st;
  OK(log, engram_status_get(log, "memory", "ack-max", o1, &st));
  assert_int_equal(st.state, ENGRAM_STATE_IN_FLIGHT);
  assert_true(st.deadline_ns > clock_realtime_ns() + clock_ms_to_ns(ENGRAM_MAX_DELAY_MS - 60000));
  INVALID(log,
          engram_nack(log, "memory", "ack-max", o2, 1, (int64_t)ENGRAM_MAX_DELAY_MS + 1, NULL));
  INVALID(log, engram_nack(log, "memory", "ack-max", o2, 1, INT64_MAX, NULL));
  OK(log, engram_nack(log, "memory", "ack-max", o2, 1, (int64_t)ENGRAM_MAX_DELAY_MS, "later"));
  OK(log, engram_status_get(log, "memory", "ack-max", o2, &st));
  assert_int_equal(st.state, ENGRAM_STATE_RETRYING);
  assert_true(st.deadline_ns > clock_realtime_ns() + clock_ms_to_ns(ENGRAM_MAX_DELAY_MS - 60000));
  engram_free(st.result);
}

static void group_durations_are_bounded_on_an_embedded_handle(void **state) {
  (void)state;
  char *dir = tu_tmpdir("dur-groups");
  engram *log = tu_open(dir, NULL);
  tu_topic(log, "memory", NULL);
  group_durations_are_bounded(log);
  engram_close(log);
  tu_tmpdir_done(dir);
}

static void group_durations_are_bounded_through_the_daemon(void **state) {
  (void)state;
  td d;
  td_init(&d, "dur-net");
  td_start(&d);
  engram_connect_options co = {.timeout_ms = 5000};
  engram *r = td_connect_within(d.ep, 5000, &co);
  assert_non_null(r);
  OK(r, engram_topic_create(r, "memory", NULL));
  group_durations_are_bounded(r);
  engram_close(r);
  td_done(&d);
}

int main(void) {
  tu_test_filter();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(converting_a_huge_duration_saturates_instead_of_wrapping),
      cmocka_unit_test(a_dedup_window_of_ten_trillion_ms_is_refused_at_open),
      cmocka_unit_test(the_longest_dedup_window_deduplicates_to_its_last_millisecond),
      cmocka_unit_test(open_durations_are_accepted_up_to_their_maximum),
      cmocka_unit_test(a_remote_timeout_is_accepted_up_to_its_maximum),
      cmocka_unit_test(group_durations_are_bounded_on_an_embedded_handle),
      cmocka_unit_test(group_durations_are_bounded_through_the_daemon),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
