/* test_rates.c — rates over 1, 5 and 15 minutes (engram_rate_list) and the group counters
 * they come from: nacks, rejects and dead letters counted at settle time in the group's
 * record without a commit of their own, rates computed from the log alone (another handle
 * or a read-only open sees them), the same through `engram serve`, bad input refused. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"
#include "test_net_daemon.h"

#define OK(log, call) TU_OK(log, call)
#define MIN_NS 60000000000ll
/* A minute boundary, so the tests know where in its minute the clock is. */
#define T0 (28333334ll * MIN_NS)

static void append_n(engram *log, const char *topic, int n) {
  for (int i = 0; i < n; i++) {
    engram_event ev = {.type = "memory.saved", .payload = "x", .payload_len = 1};
    uint64_t off;
    OK(log, engram_append(log, topic, &ev, &off, NULL));
  }
}

static const engram_rate_info *row(const engram_rate_info *r, size_t n, const char *topic,
                                   const char *group) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(r[i].topic, topic) && !strcmp(r[i].group, group)) return &r[i];
  fail_msg("no rate row %s/%s", topic, group);
  return NULL;
}

static void near(double got, double want) {
  if (fabs(got - want) > 1e-6 + fabs(want) * 1e-6) fail_msg("rate %.9f, expected %.9f", got, want);
}

/* Fetches the group's next n events for consumer c (n of them must come). */
static engram_batch *fetch_n(engram *log, const char *group, size_t n) {
  engram_batch *b = NULL;
  OK(log, engram_fetch(log, "t", group, "c", n, 0, &b));
  assert_int_equal(b->count, n);
  return b;
}

static void nacks_rejects_and_dead_letters_are_counted_when_settled(void **state) {
  (void)state;
  char *dir = tu_tmpdir("rates");
  tu_clock clk;
  tu_clock_init(&clk, 0);
  engram_options o = {.clock_ns = tu_clock_ns, .clock_ctx = &clk};
  engram *log = tu_open(dir, &o);
  tu_topic(log, "t", NULL);
  engram_group_config cfg = {.max_deliver = 2, .ack_wait_ms = 1000};
  OK(log, engram_group_create(log, "t", "g", &cfg));
  append_n(log, "t", 5);
  engram_batch *b = fetch_n(log, "g", 5);
  OK(log, engram_ack(log, "t", "g", 1, 1, NULL, 0));
  engram_commit_stats before, after;
  OK(log, engram_commit_stats_get(log, &before));
  OK(log, engram_nack(log, "t", "g", 2, 1, 0, "try again"));
  OK(log, engram_commit_stats_get(log, &after));
  assert_int_equal(after.commits, before.commits + 1); /* counted inside the nack's commit */
  OK(log, engram_reject(log, "t", "g", 3, 1, "poison"));
  OK(log, engram_nack(log, "t", "g", 4, 1, 0, "later"));
  /* A refused nack counts nothing. */
  assert_int_equal(engram_nack(log, "t", "g", 3, 1, 0, "again"), ENGRAM_EDEAD);
  assert_int_equal(engram_nack(log, "t", "g", 1, 1, 0, "again"), ENGRAM_EALREADY);
  engram_batch_free(b);
  b = fetch_n(log, "g", 2);                                      /* 2 and 4, attempt 2 */
  OK(log, engram_nack(log, "t", "g", 4, 2, 0, "still failing")); /* past max_deliver: dead */
  engram_batch_free(b);
  /* 5's lease expires at attempt 1; redelivered as attempt 2, it expires again: dead. */
  tu_clock_advance_ms(&clk, 1500);
  b = NULL;
  OK(log, engram_fetch(log, "t", "g", "c", 10, 0, &b));
  engram_batch_free(b);
  tu_clock_advance_ms(&clk, 1500);
  OK(log, engram_fetch(log, "t", "g", "c", 10, 0, &b));
  engram_batch_free(b);

  engram_group_info gi;
  OK(log, engram_group_info_get(log, "t", "g", &gi));
  assert_int_equal(gi.acked, 1);
  assert_int_equal(gi.nacked, 3);
  assert_int_equal(gi.rejected, 1);
  assert_int_equal(gi.dead_lettered, 4); /* the reject, 4 past max_deliver, 2 and 5 expired */
  assert_int_equal(gi.dead, 4);
  /* Redriving empties the queue; the counters stay (they count what happened). */
  size_t count = 0;
  OK(log, engram_dlq_redrive(log, "t", "g", NULL, 0, &count));
  assert_int_equal(count, 4);
  OK(log, engram_group_info_get(log, "t", "g", &gi));
  assert_int_equal(gi.dead, 0);
  assert_int_equal(gi.dead_lettered, 4);
  assert_int_equal(gi.nacked, 3);
  engram_close(log);
  tu_tmpdir_done(dir);
}

static void rates_count_each_window_and_fade_as_the_minutes_pass(void **state) {
  (void)state;
  char *dir = tu_tmpdir("rates");
  tu_clock clk;
  tu_clock_init(&clk, T0);
  engram_options o = {.clock_ns = tu_clock_ns, .clock_ctx = &clk};
  engram *log = tu_open(dir, &o);
  tu_topic(log, "t", NULL);
  tu_topic(log, "quiet", NULL);
  OK(log, engram_group_create(log, "t", "g", NULL));
  OK(log, engram_group_create(log, "t", "h", NULL));
  /* Twenty minutes on, half-way through a minute: 60 appends, 60 deliveries, 30 acks,
   * 6 nacks, 3 rejects. */
  tu_clock_advance_ms(&clk, 20 * 60000 + 30000);
  append_n(log, "t", 60);
  engram_batch *b = fetch_n(log, "g", 60);
  engram_batch_free(b);
  for (uint64_t off = 1; off <= 30; off++) OK(log, engram_ack(log, "t", "g", off, 1, NULL, 0));
  for (uint64_t off = 31; off <= 36; off++)
    OK(log, engram_nack(log, "t", "g", off, 1, 60000, NULL));
  for (uint64_t off = 37; off <= 39; off++) OK(log, engram_reject(log, "t", "g", off, 1, "bad"));

  engram_rate_info *r = NULL;
  size_t n = 0;
  OK(log, engram_rate_list(log, NULL, &r, &n));
  assert_int_equal(n, 4); /* quiet, t, t/g, t/h in name order */
  assert_string_equal(r[0].topic, "quiet");
  assert_string_equal(r[0].group, "");
  assert_string_equal(r[1].topic, "t");
  assert_string_equal(r[1].group, "");
  assert_string_equal(r[2].group, "g");
  assert_string_equal(r[3].group, "h");
  const double secs[ENGRAM_RATE_WINDOWS] = {60, 300, 900};
  for (int i = 0; i < ENGRAM_RATE_WINDOWS; i++) {
    near(r[0].appended[i], 0);
    near(r[1].appended[i], 60 / secs[i]);
    near(r[1].acked[i], 0); /* the topic's row carries appends only */
    const engram_rate_info *g = &r[2];
    near(g->appended[i], 60 / secs[i]);
    near(g->delivered[i], 60 / secs[i]);
    near(g->acked[i], 30 / secs[i]);
    near(g->nacked[i], 6 / secs[i]);
    near(g->rejected[i], 3 / secs[i]);
    near(g->dead_lettered[i], 3 / secs[i]);
    near(r[3].delivered[i], 0);
    near(r[3].appended[i], 60 / secs[i]);
  }
  engram_free(r);

  /* One topic only. */
  OK(log, engram_rate_list(log, "t", &r, &n));
  assert_int_equal(n, 3);
  engram_free(r);

  /* 61 s later, 31 s into the next minute: the appends (counted from their times) have
   * left the 1-minute window; the group's counts of the last minute are taken for the
   * 29 s of it the window still covers. */
  tu_clock_advance_ms(&clk, 61000);
  OK(log, engram_rate_list(log, "t", &r, &n));
  const engram_rate_info *g = row(r, n, "t", "g");
  near(g->appended[0], 0);
  near(g->appended[1], 60.0 / 300);
  near(g->acked[0], 30.0 * 29 / 60 / 60);
  near(g->acked[1], 30.0 / 300);
  near(g->acked[2], 30.0 / 900);
  engram_free(r);

  /* New acks land in the current minute; 16 minutes on, everything has left. */
  for (uint64_t off = 40; off <= 49; off++) OK(log, engram_ack(log, "t", "g", off, 1, NULL, 0));
  OK(log, engram_rate_list(log, "t", &r, &n));
  g = row(r, n, "t", "g");
  near(g->acked[0], (10 + 30.0 * 29 / 60) / 60);
  engram_free(r);
  tu_clock_advance_ms(&clk, 16 * 60000);
  OK(log, engram_rate_list(log, "t", &r, &n));
  g = row(r, n, "t", "g");
  for (int i = 0; i < ENGRAM_RATE_WINDOWS; i++) {
    near(g->acked[i], 0);
    near(g->appended[i], 0);
  }
  engram_free(r);
  /* An ack after the gap rolls the ring: only it counts. */
  OK(log, engram_ack(log, "t", "g", 50, 1, NULL, 0));
  OK(log, engram_rate_list(log, "t", &r, &n));
  g = row(r, n, "t", "g");
  near(g->acked[0], 1.0 / 60);
  near(g->acked[2], 1.0 / 900);
  engram_free(r);
  engram_close(log);
  tu_tmpdir_done(dir);
}

/* A topic or group younger than a window is divided by its age, not the window. */
static void a_young_topic_divides_by_its_age(void **state) {
  (void)state;
  char *dir = tu_tmpdir("rates");
  tu_clock clk;
  tu_clock_init(&clk, T0);
  engram_options o = {.clock_ns = tu_clock_ns, .clock_ctx = &clk};
  engram *log = tu_open(dir, &o);
  tu_topic(log, "t", NULL);
  OK(log, engram_group_create(log, "t", "g", NULL));
  tu_clock_advance_ms(&clk, 10000);
  append_n(log, "t", 20);
  engram_batch *b = fetch_n(log, "g", 20);
  engram_batch_free(b);
  engram_rate_info *r = NULL;
  size_t n = 0;
  OK(log, engram_rate_list(log, "t", &r, &n));
  for (int i = 0; i < ENGRAM_RATE_WINDOWS; i++) {
    near(r[0].appended[i], 2.0);
    near(row(r, n, "t", "g")->delivered[i], 2.0);
  }
  engram_free(r);
  engram_close(log);
  tu_tmpdir_done(dir);
}

/* The counts live in the log: a new handle, and a read-only one, see the same rates. */
static void rates_come_from_the_log_for_any_handle(void **state) {
  (void)state;
  char *dir = tu_tmpdir("rates");
  tu_clock clk;
  tu_clock_init(&clk, T0);
  engram_options o = {.clock_ns = tu_clock_ns, .clock_ctx = &clk};
  engram *log = tu_open(dir, &o);
  tu_topic(log, "t", NULL);
  OK(log, engram_group_create(log, "t", "g", NULL));
  tu_clock_advance_ms(&clk, 30 * 60000);
  append_n(log, "t", 12);
  engram_batch *b = fetch_n(log, "g", 12);
  for (size_t i = 0; i < b->count; i++)
    OK(log, engram_ack(log, "t", "g", b->events[i].offset, 1, NULL, 0));
  engram_batch_free(b);
  engram_rate_info *first = NULL, *again = NULL;
  size_t n1 = 0, n2 = 0;
  OK(log, engram_rate_list(log, NULL, &first, &n1));
  engram_close(log);

  for (int ro = 0; ro < 2; ro++) {
    engram_options o2 = o;
    o2.flags = ro ? ENGRAM_OPEN_RDONLY : 0;
    log = tu_open(dir, &o2);
    OK(log, engram_rate_list(log, NULL, &again, &n2));
    assert_int_equal(n1, n2);
    assert_memory_equal(first, again, n1 * sizeof *first);
    near(row(again, n2, "t", "g")->acked[0], 12.0 / 60);
    engram_free(again);
    engram_close(log);
  }
  engram_free(first);
  tu_tmpdir_done(dir);
}

static void bad_arguments_are_refused(void **state) {
  (void)state;
  char *dir = tu_tmpdir("rates");
  engram *log = tu_open(dir, NULL);
  engram_rate_info *r = NULL;
  size_t n = 0;
  assert_int_equal(engram_rate_list(NULL, NULL, &r, &n), ENGRAM_EINVAL);
  assert_int_equal(engram_rate_list(log, NULL, NULL, &n), ENGRAM_EINVAL);
  assert_int_equal(engram_rate_list(log, NULL, &r, NULL), ENGRAM_EINVAL);
  assert_int_equal(engram_rate_list(log, "bad name", &r, &n), ENGRAM_EINVAL);
  assert_non_null(strstr(engram_errmsg(log), "topic name invalid"));
  assert_int_equal(engram_rate_list(log, "missing", &r, &n), ENGRAM_ENOTFOUND);
  assert_null(r);
  assert_int_equal(n, 0);
  OK(log, engram_rate_list(log, NULL, &r, &n)); /* no topics: an empty list */
  assert_int_equal(n, 0);
  engram_free(r);
  engram_close(log);
  tu_tmpdir_done(dir);
}

/* Through `engram serve`: the rates and the new counters cross the wire. */
static void rates_and_counters_come_through_the_daemon(void **state) {
  (void)state;
  td d;
  td_init(&d, "rates-net");
  td_start(&d);
  engram *log = td_connect_within(d.ep, 10000, NULL);
  assert_non_null(log);
  tu_topic(log, "t", NULL);
  engram_group_config cfg = {.max_deliver = 1};
  OK(log, engram_group_create(log, "t", "g", &cfg));
  append_n(log, "t", 6);
  engram_batch *b = fetch_n(log, "g", 6);
  engram_batch_free(b);
  OK(log, engram_ack(log, "t", "g", 1, 1, NULL, 0));
  OK(log, engram_nack(log, "t", "g", 2, 1, 0, "x")); /* max_deliver 1: dead */
  OK(log, engram_reject(log, "t", "g", 3, 1, "y"));
  engram_group_info gi;
  OK(log, engram_group_info_get(log, "t", "g", &gi));
  assert_int_equal(gi.nacked, 1);
  assert_int_equal(gi.rejected, 1);
  assert_int_equal(gi.dead_lettered, 2);
  engram_rate_info *r = NULL;
  size_t n = 0;
  OK(log, engram_rate_list(log, NULL, &r, &n));
  assert_int_equal(n, 2);
  const engram_rate_info *g = row(r, n, "t", "g");
  for (int i = 0; i < ENGRAM_RATE_WINDOWS; i++) {
    assert_true(g->appended[i] > 0);
    assert_true(g->delivered[i] > 0);
    assert_true(g->acked[i] > 0);
    assert_true(g->nacked[i] > 0);
    assert_true(g->rejected[i] > 0);
    /* Rates are never above the count divided by a second. */
    assert_true(g->appended[i] <= 6.0 && g->dead_lettered[i] <= 2.0);
  }
  engram_free(r);
  assert_int_equal(engram_rate_list(log, "missing", &r, &n), ENGRAM_ENOTFOUND);
  engram_close(log);
  td_done(&d);
}

int main(void) {
  tu_test_filter();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(nacks_rejects_and_dead_letters_are_counted_when_settled),
      cmocka_unit_test(rates_count_each_window_and_fade_as_the_minutes_pass),
      cmocka_unit_test(a_young_topic_divides_by_its_age),
      cmocka_unit_test(rates_come_from_the_log_for_any_handle),
      cmocka_unit_test(bad_arguments_are_refused),
      cmocka_unit_test(rates_and_counters_come_through_the_daemon),
  };
  return cmocka_run_group_tests_name("rates", tests, NULL, NULL);
}
