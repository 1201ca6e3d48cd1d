/* test_workers.c — workers as first-class objects: registered by fetches and heartbeats,
 * shown lost after the timeout, forgotten on request, the same through `engram serve`,
 * from another process, and a worker killed with SIGKILL left lost with its leases. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"
#include "test_net_daemon.h"

#define EXPECT_OK(log, what, rc)                                                                \
  do {                                                                                          \
    int rc_ = (rc);                                                                             \
    if (rc_)                                                                                    \
      fprintf(stderr, "%s: %d %s: '%s'\n", what, rc_, engram_errname(rc_), engram_errmsg(log)); \
    assert_int_equal(rc_, 0);                                                                   \
  } while (0)

static void make_topic_group(engram *log, const char *topic, const char *group, int events) {
  tu_topic(log, topic, NULL);
  EXPECT_OK(log, "group create", engram_group_create(log, topic, group, NULL));
  for (int i = 0; i < events; i++) {
    engram_event ev = {.type = "memory.saved", .payload = "x", .payload_len = 1};
    uint64_t off;
    EXPECT_OK(log, "append", engram_append(log, topic, &ev, &off, NULL));
  }
}

static const engram_worker_info *find(const engram_worker_info *w, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (!strcmp(w[i].name, name)) return &w[i];
  return NULL;
}

/* The checks every backend shares: a fetch registers, a heartbeat adds details, the
 * list marks lost workers, forget removes one. */
static void exercise(engram *log, const char *topic) {
  engram_batch *b = NULL;
  EXPECT_OK(log, "fetch", engram_fetch(log, topic, "g", "w1", 2, 0, &b));
  assert_int_equal(b->count, 2);
  uint64_t running_offset = b->events[0].offset;
  engram_batch_free(b);

  engram_worker_info *list = NULL;
  size_t n = 0;
  EXPECT_OK(log, "list", engram_worker_list(log, 0, &list, &n));
  const engram_worker_info *w1 = find(list, n, "w1");
  assert_non_null(w1);
  assert_int_equal(w1->lost, 0);
  assert_int_equal(w1->n_groups, 1);
  char want[2 * ENGRAM_MAX_NAME + 2];
  snprintf(want, sizeof want, "%s/g", topic);
  assert_string_equal(w1->groups[0], want);
  assert_true(w1->started_ns > 0 && w1->last_seen_ns >= w1->started_ns);
  int64_t started = w1->started_ns;
  engram_free(list);

  engram_worker_info *hb = calloc(1, sizeof *hb);
  snprintf(hb->name, sizeof hb->name, "w1");
  snprintf(hb->host, sizeof hb->host, "box-1");
  hb->pid = 4242;
  hb->concurrency = 8;
  hb->handled = 17;
  hb->failed = 2;
  hb->n_groups = 1;
  snprintf(hb->groups[0], sizeof hb->groups[0], "other/g2");
  hb->n_running = 1;
  snprintf(hb->running[0].topic, sizeof hb->running[0].topic, "%s", topic);
  snprintf(hb->running[0].group, sizeof hb->running[0].group, "g");
  hb->running[0].offset = running_offset;
  hb->running[0].since_ns = tu_now_ns();
  EXPECT_OK(log, "heartbeat", engram_worker_heartbeat(log, hb));

  EXPECT_OK(log, "list", engram_worker_list(log, 0, &list, &n));
  w1 = find(list, n, "w1");
  assert_non_null(w1);
  assert_string_equal(w1->host, "box-1");
  assert_int_equal(w1->pid, 4242);
  assert_int_equal(w1->concurrency, 8);
  assert_int_equal(w1->handled, 17);
  assert_int_equal(w1->failed, 2);
  assert_int_equal(w1->started_ns, started); /* kept across heartbeats */
  assert_int_equal(w1->n_groups, 2);         /* the fetch's group and the heartbeat's */
  assert_string_equal(w1->groups[0], want);
  assert_string_equal(w1->groups[1], "other/g2");
  assert_int_equal(w1->n_running, 1);
  assert_int_equal(w1->running[0].offset, running_offset);
  assert_string_equal(w1->running[0].group, "g");
  engram_free(list);

  /* Bad input is refused and changes nothing. */
  hb->n_groups = ENGRAM_MAX_WORKER_GROUPS + 1;
  assert_int_equal(engram_worker_heartbeat(log, hb), ENGRAM_EINVAL);
  hb->n_groups = 1;
  snprintf(hb->groups[0], sizeof hb->groups[0], "no-slash");
  assert_int_equal(engram_worker_heartbeat(log, hb), ENGRAM_EINVAL);
  assert_non_null(strstr(engram_errmsg(log), "topic/group"));
  snprintf(hb->groups[0], sizeof hb->groups[0], "a/g");
  snprintf(hb->host, sizeof hb->host, "evil\x1b[2J");
  assert_int_equal(engram_worker_heartbeat(log, hb), ENGRAM_EINVAL);
  snprintf(hb->host, sizeof hb->host, "box-1");
  snprintf(hb->name, sizeof hb->name, "bad name");
  assert_int_equal(engram_worker_heartbeat(log, hb), ENGRAM_EINVAL);
  assert_int_equal(engram_worker_heartbeat(log, NULL), ENGRAM_EINVAL);
  free(hb);
  assert_int_equal(engram_worker_list(log, 0, NULL, &n), ENGRAM_EINVAL);
  EXPECT_OK(log, "list", engram_worker_list(log, 0, &list, &n));
  assert_string_equal(find(list, n, "w1")->groups[1], "other/g2");
  engram_free(list);

  assert_int_equal(engram_worker_forget(log, "nobody"), ENGRAM_ENOTFOUND);
  EXPECT_OK(log, "forget", engram_worker_forget(log, "w1"));
  EXPECT_OK(log, "list", engram_worker_list(log, 0, &list, &n));
  assert_null(find(list, n, "w1"));
  engram_free(list);
}

static void a_fetch_registers_its_consumer_and_a_heartbeat_adds_details(void **state) {
  (void)state;
  char *dir = tu_tmpdir("workers");
  engram *log = tu_open(dir, NULL);
  make_topic_group(log, "t", "g", 4);
  exercise(log, "t");
  engram_close(log);
  tu_tmpdir_done(dir);
}

static void a_worker_not_seen_for_the_timeout_is_lost_and_a_fetch_revives_it(void **state) {
  (void)state;
  char *dir = tu_tmpdir("workers");
  tu_clock clk;
  tu_clock_init(&clk, 0);
  engram_options o = {.clock_ns = tu_clock_ns, .clock_ctx = &clk};
  engram *log = tu_open(dir, &o);
  make_topic_group(log, "t", "g", 4);
  engram_batch *b = NULL;
  EXPECT_OK(log, "fetch", engram_fetch(log, "t", "g", "w1", 1, 0, &b));
  engram_batch_free(b);
  tu_clock_advance_ms(&clk, 10000);
  engram_worker_info *list = NULL;
  size_t n = 0;
  EXPECT_OK(log, "list", engram_worker_list(log, 0, &list, &n));
  assert_int_equal(n, 1);
  assert_int_equal(list[0].lost, 0);
  engram_free(list);
  EXPECT_OK(log, "list 5s", engram_worker_list(log, 5000, &list, &n));
  assert_int_equal(list[0].lost, 1);
  engram_free(list);
  tu_clock_advance_ms(&clk, 25000);
  EXPECT_OK(log, "list", engram_worker_list(log, 0, &list, &n));
  assert_int_equal(list[0].lost, 1);
  engram_free(list);
  EXPECT_OK(log, "fetch", engram_fetch(log, "t", "g", "w1", 1, 0, &b));
  engram_batch_free(b);
  EXPECT_OK(log, "list", engram_worker_list(log, 0, &list, &n));
  assert_int_equal(list[0].lost, 0);
  engram_free(list);
  engram_close(log);
  tu_tmpdir_done(dir);
}

/* A heartbeat forgets workers not seen for 7 days. */
static void workers_not_seen_for_a_week_are_forgotten_by_the_next_heartbeat(void **state) {
  (void)state;
  char *dir = tu_tmpdir("workers");
  tu_clock clk;
  tu_clock_init(&clk, 0);
  engram_options o = {.clock_ns = tu_clock_ns, .clock_ctx = &clk};
  engram *log = tu_open(dir, &o);
  make_topic_group(log, "t", "g", 1);
  engram_batch *b = NULL;
  EXPECT_OK(log, "fetch", engram_fetch(log, "t", "g", "old", 1, 0, &b));
  engram_batch_free(b);
  tu_clock_advance_ms(&clk, 6ll * 86400 * 1000);
  engram_worker_info *w = calloc(1, sizeof *w);
  snprintf(w->name, sizeof w->name, "new");
  EXPECT_OK(log, "heartbeat", engram_worker_heartbeat(log, w));
  engram_worker_info *list = NULL;
  size_t n = 0;
  EXPECT_OK(log, "list", engram_worker_list(log, 0, &list, &n));
  assert_int_equal(n, 2); /* six days: lost, still listed */
  engram_free(list);
  tu_clock_advance_ms(&clk, 2ll * 86400 * 1000);
  EXPECT_OK(log, "heartbeat", engram_worker_heartbeat(log, w));
  EXPECT_OK(log, "list", engram_worker_list(log, 0, &list, &n));
  assert_int_equal(n, 1);
  assert_string_equal(list[0].name, "new");
  engram_free(list);
  free(w);
  engram_close(log);
  tu_tmpdir_done(dir);
}

/* Fetches that follow each other within a second add no write of their own. */
static void repeated_fetches_refresh_the_worker_without_extra_commits(void **state) {
  (void)state;
  char *dir = tu_tmpdir("workers");
  engram *log = tu_open(dir, NULL);
  make_topic_group(log, "t", "g", 0);
  engram_batch *b = NULL;
  EXPECT_OK(log, "fetch", engram_fetch(log, "t", "g", "w1", 1, 0, &b));
  engram_batch_free(b);
  engram_commit_stats before, after;
  EXPECT_OK(log, "stats", engram_commit_stats_get(log, &before));
  for (int i = 0; i < 20; i++) {
    EXPECT_OK(log, "fetch", engram_fetch(log, "t", "g", "w1", 1, 0, &b));
    engram_batch_free(b);
  }
  EXPECT_OK(log, "stats", engram_commit_stats_get(log, &after));
  /* A clock that crosses a second boundary allows one refresh. */
  assert_true(after.commits - before.commits <= 1);
  engram_close(log);
  tu_tmpdir_done(dir);
}

static int other_process(void *arg) {
  engram *log = NULL;
  if (engram_open(arg, NULL, &log)) return 1;
  engram_batch *b = NULL;
  int rc = engram_fetch(log, "t", "g", "elsewhere", 1, 0, &b);
  engram_batch_free(b);
  engram_close(log);
  return rc ? 2 : 0;
}

static void workers_of_other_processes_and_of_the_daemon_all_appear(void **state) {
  (void)state;
  td d;
  td_init(&d, "workers_net");
  engram *log = tu_open(d.logdir, NULL);
  make_topic_group(log, "t", "g", 4);
  engram_close(log);
  assert_int_equal(tu_fork_child(other_process, d.logdir, 20000), 0);
  td_start(&d);
  engram *r = td_connect_within(d.ep, 10000, NULL);
  assert_non_null(r);
  exercise(r, "t");
  engram_worker_info *list = NULL;
  size_t n = 0;
  EXPECT_OK(r, "list", engram_worker_list(r, 0, &list, &n));
  assert_non_null(find(list, n, "elsewhere"));
  engram_free(list);
  engram_close(r);
  td_done(&d);
}

/* A worker process killed with SIGKILL: listed lost once the timeout passes, and its
 * lease still names it until the event is delivered again. */
static int doomed_worker(void *arg) {
  engram *log = NULL;
  if (engram_open(arg, NULL, &log)) return 1;
  engram_batch *b = NULL;
  if (engram_fetch(log, "t", "g", "doomed", 1, 0, &b) || b->count != 1) return 2;
  engram_worker_info *w = calloc(1, sizeof *w);
  snprintf(w->name, sizeof w->name, "doomed");
  w->pid = (uint32_t)getpid();
  w->n_running = 1;
  snprintf(w->running[0].topic, sizeof w->running[0].topic, "t");
  snprintf(w->running[0].group, sizeof w->running[0].group, "g");
  w->running[0].offset = b->events[0].offset;
  w->running[0].since_ns = tu_now_ns();
  if (engram_worker_heartbeat(log, w)) return 3;
  printf("ready\n");
  fflush(stdout);
  for (;;) pause();
}

static void a_sigkilled_worker_is_shown_lost_with_its_in_flight_event(void **state) {
  (void)state;
  char *dir = tu_tmpdir("workers");
  engram *log = tu_open(dir, NULL);
  make_topic_group(log, "t", "g", 1);
  pid_t pid = tu_spawn(doomed_worker, dir);
  engram_worker_info *list = NULL;
  size_t n = 0;
  int64_t end = tu_mono_ms() + 20000;
  for (;;) { /* wait for its heartbeat */
    EXPECT_OK(log, "list", engram_worker_list(log, 0, &list, &n));
    const engram_worker_info *w = find(list, n, "doomed");
    int ready = w && w->n_running == 1;
    engram_free(list);
    if (ready) break;
    assert_true(tu_mono_ms() < end);
    tu_sleep_ms(20);
  }
  kill(pid, SIGKILL);
  tu_wait(pid, 10000);
  /* 1 ms lost timeout: the test waits for the condition, not for a fixed time. */
  end = tu_mono_ms() + 20000;
  for (;;) {
    EXPECT_OK(log, "list", engram_worker_list(log, 1, &list, &n));
    const engram_worker_info *w = find(list, n, "doomed");
    assert_non_null(w);
    int lost = w->lost;
    if (lost) {
      assert_int_equal(w->n_running, 1);
      assert_int_equal(w->running[0].offset, 1);
    }
    engram_free(list);
    if (lost) break;
    assert_true(tu_mono_ms() < end);
    tu_sleep_ms(5);
  }
  engram_status st;
  EXPECT_OK(log, "status", engram_status_get(log, "t", "g", 1, &st));
  assert_int_equal(st.state, ENGRAM_STATE_IN_FLIGHT);
  assert_string_equal(st.consumer, "doomed");
  engram_close(log);
  tu_tmpdir_done(dir);
}

int main(void) {
  tu_test_filter();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_fetch_registers_its_consumer_and_a_heartbeat_adds_details),
      cmocka_unit_test(a_worker_not_seen_for_the_timeout_is_lost_and_a_fetch_revives_it),
      cmocka_unit_test(workers_not_seen_for_a_week_are_forgotten_by_the_next_heartbeat),
      cmocka_unit_test(repeated_fetches_refresh_the_worker_without_extra_commits),
      cmocka_unit_test(workers_of_other_processes_and_of_the_daemon_all_appear),
      cmocka_unit_test(a_sigkilled_worker_is_shown_lost_with_its_in_flight_event),
  };
  return cmocka_run_group_tests_name("workers", tests, NULL, NULL);
}
