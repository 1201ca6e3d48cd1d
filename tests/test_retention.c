/* test_retention.c — retention limits per topic: what engram_compact() removes, what it
 * keeps for unfinished groups and delayed deliveries, forced retention's group
 * counters, reads below the first offset, offsets never reused, the config through
 * engram_topic_set(), and data.mdb staying bounded under a steady stream of appends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"

typedef struct fx {
  char *dir;
  char *logdir;
  tu_clock clock;
  engram *log;
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->dir = tu_tmpdir("retention");
  f->logdir = tu_join(f->dir, "log");
  tu_clock_init(&f->clock, 0);
  engram_options o = {
      .durability = ENGRAM_DURABILITY_NOMETASYNC, .clock_ns = tu_clock_ns, .clock_ctx = &f->clock};
  f->log = tu_open(f->logdir, &o);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  engram_close(f->log);
  free(f->logdir);
  tu_tmpdir_done(f->dir);
  free(f);
  return 0;
}

#define OK(log, call) TU_OK(log, call)

static void append_n(engram *log, const char *topic, size_t n, size_t payload) {
  static uint64_t seed = 1;
  char *buf = calloc(1, payload + 1);
  tu_fill_random(buf, payload, seed++); /* incompressible, like the worst real payload */
  engram_event *evs = calloc(n, sizeof *evs);
  uint64_t *offs = calloc(n, sizeof *offs);
  for (size_t i = 0; i < n; i++) {
    evs[i].type = "memory.saved";
    evs[i].payload = buf;
    evs[i].payload_len = payload;
  }
  OK(log, engram_append_batch(log, topic, evs, n, offs, NULL));
  free(offs);
  free(evs);
  free(buf);
}

static engram_topic_info info_of(engram *log, const char *topic) {
  engram_topic_info i;
  OK(log, engram_topic_info_get(log, topic, &i));
  return i;
}

static void a_max_events_limit_removes_the_oldest_and_never_reuses_offsets(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.max_events = 30};
  tu_topic(f->log, "t", &cfg);
  append_n(f->log, "t", 100, 40);
  engram_compact_report r;
  OK(f->log, engram_compact(f->log, "t", &r));
  assert_int_equal(r.removed, 70);
  assert_int_equal(r.skipped, 0);
  assert_int_equal(r.held_at, 0);
  engram_topic_info i = info_of(f->log, "t");
  assert_int_equal(i.first_offset, 71);
  assert_int_equal(i.head_offset, 100);
  assert_int_equal(i.count, 30);
  assert_int_equal(i.config.max_events, 30);

  /* A read below first says the offset was removed by retention. */
  engram_batch *b = NULL;
  assert_int_equal(engram_read(f->log, "t", 5, &b), ENGRAM_ENOTFOUND);
  assert_non_null(strstr(engram_errmsg(f->log), "removed by retention"));
  /* A range read from below first starts at first. */
  OK(f->log, engram_read_range(f->log, "t", 1, 1000, &b));
  assert_int_equal(b->count, 30);
  assert_int_equal(b->events[0].offset, 71);
  engram_batch_free(b);

  /* Nothing more to do: a second compact removes nothing. */
  OK(f->log, engram_compact(f->log, NULL, &r));
  assert_int_equal(r.removed, 0);

  /* Offsets go on from the head. */
  uint64_t off;
  engram_event e = {.type = "memory.saved"};
  OK(f->log, engram_append(f->log, "t", &e, &off, NULL));
  assert_int_equal(off, 101);

  engram_verify_report vr;
  OK(f->log, engram_verify(f->log, &vr));
  assert_int_equal(vr.damaged, 0);
}

static void an_emptied_topic_keeps_its_head_and_next_offset(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.max_age_ms = 60000};
  tu_topic(f->log, "t", &cfg);
  append_n(f->log, "t", 20, 10);
  tu_clock_advance_ms(&f->clock, 120000);
  engram_compact_report r;
  OK(f->log, engram_compact(f->log, "t", &r));
  assert_int_equal(r.removed, 20);
  engram_topic_info i = info_of(f->log, "t");
  assert_int_equal(i.count, 0);
  assert_int_equal(i.first_offset, 0);
  assert_int_equal(i.head_offset, 20);
  uint64_t off;
  engram_event e = {.type = "memory.saved"};
  OK(f->log, engram_append(f->log, "t", &e, &off, NULL));
  assert_int_equal(off, 21);
  engram_verify_report vr;
  OK(f->log, engram_verify(f->log, &vr));
  assert_int_equal(vr.damaged, 0);
}

static void a_max_age_limit_removes_only_events_older_than_it(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.max_age_ms = 30 * 60000};
  tu_topic(f->log, "t", &cfg);
  append_n(f->log, "t", 10, 10);
  tu_clock_advance_ms(&f->clock, 20 * 60000);
  append_n(f->log, "t", 10, 10);
  tu_clock_advance_ms(&f->clock, 20 * 60000); /* the first ten are 40 min old, the rest 20 */
  engram_compact_report r;
  OK(f->log, engram_compact(f->log, "t", &r));
  assert_int_equal(r.removed, 10);
  assert_int_equal(info_of(f->log, "t").first_offset, 11);
}

static void a_max_bytes_limit_keeps_the_topic_under_it(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.max_bytes = 256 * 1024, .compress_threshold = UINT32_MAX};
  tu_topic(f->log, "t", &cfg);
  for (int i = 0; i < 10; i++) append_n(f->log, "t", 100, 1000);
  engram_compact_report r;
  OK(f->log, engram_compact(f->log, "t", &r));
  assert_true(r.removed > 500);
  engram_topic_info i = info_of(f->log, "t");
  assert_true(i.count > 0);
  /* About 1 KiB a record: the survivors fit the limit. */
  assert_true(i.count * 1000 <= 256 * 1024);
  assert_int_equal(i.head_offset, 1000);
}

static void an_unfinished_group_holds_retention_unless_forced(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.max_events = 10};
  tu_topic(f->log, "t", &cfg);
  OK(f->log, engram_group_create(f->log, "t", "g", NULL));
  append_n(f->log, "t", 100, 10);
  /* The group finishes 1..20 and holds 21..30 leased. */
  engram_batch *b = NULL;
  OK(f->log, engram_fetch(f->log, "t", "g", "w", 30, 0, &b));
  assert_int_equal(b->count, 30);
  for (size_t i = 0; i < 20; i++)
    OK(f->log, engram_ack(f->log, "t", "g", b->events[i].offset, 0, NULL, 0));
  engram_batch_free(b);

  engram_compact_report r;
  OK(f->log, engram_compact(f->log, "t", &r));
  assert_int_equal(r.removed, 20);
  assert_int_equal(r.held_at, 21);
  assert_int_equal(info_of(f->log, "t").first_offset, 21);
  engram_group_info g;
  OK(f->log, engram_group_info_get(f->log, "t", "g", &g));
  assert_int_equal(g.retention_skipped, 0);
  assert_int_equal(g.in_flight, 10);

  /* Forced: down to the limit; the group counts the 10 leased and the 60 unseen. */
  engram_topic_info ti = info_of(f->log, "t");
  ti.config.flags |= ENGRAM_TOPIC_RETAIN_FORCE;
  OK(f->log, engram_topic_set(f->log, "t", &ti.config));
  OK(f->log, engram_compact(f->log, "t", &r));
  assert_int_equal(r.removed, 70);
  assert_int_equal(r.skipped, 70);
  assert_int_equal(info_of(f->log, "t").first_offset, 91);
  OK(f->log, engram_group_info_get(f->log, "t", "g", &g));
  assert_int_equal(g.retention_skipped, 70);
  assert_int_equal(g.in_flight, 0);
  assert_int_equal(g.next, 91);
  assert_int_equal(g.floor, 90);
  /* The group goes on at first. */
  OK(f->log, engram_fetch(f->log, "t", "g", "w", 100, 0, &b));
  assert_int_equal(b->count, 10);
  assert_int_equal(b->events[0].offset, 91);
  engram_batch_free(b);
  /* An ack of a removed leased event is refused, not crashed on. */
  assert_int_not_equal(engram_ack(f->log, "t", "g", 25, 0, NULL, 0), 0);
  engram_verify_report vr;
  OK(f->log, engram_verify(f->log, &vr));
  assert_int_equal(vr.damaged, 0);
}

static void dead_letters_of_removed_events_go_with_them(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.max_events = 2};
  tu_topic(f->log, "t", &cfg);
  OK(f->log, engram_group_create(f->log, "t", "g", NULL));
  append_n(f->log, "t", 6, 10);
  engram_batch *b = NULL;
  OK(f->log, engram_fetch(f->log, "t", "g", "w", 6, 0, &b));
  OK(f->log, engram_reject(f->log, "t", "g", 1, 0, "bad"));
  for (uint64_t o = 2; o <= 6; o++) OK(f->log, engram_ack(f->log, "t", "g", o, 0, NULL, 0));
  engram_batch_free(b);
  engram_compact_report r;
  OK(f->log, engram_compact(f->log, "t", &r));
  assert_int_equal(r.removed, 4); /* a dead-lettered event is finished: it may go */
  engram_dlq_entry *e = NULL;
  size_t n = 9;
  OK(f->log, engram_dlq_list(f->log, "t", "g", 0, 0, &e, &n));
  engram_free(e);
  assert_int_equal(n, 0);
  size_t count = 9;
  OK(f->log, engram_dlq_redrive(f->log, "t", "g", NULL, 0, &count));
  assert_int_equal(count, 0);
  /* The group goes on fetching. */
  append_n(f->log, "t", 1, 10);
  OK(f->log, engram_fetch(f->log, "t", "g", "w", 10, 0, &b));
  assert_int_equal(b->count, 1);
  assert_int_equal(b->events[0].offset, 7);
  engram_batch_free(b);
  engram_group_info gi;
  OK(f->log, engram_group_info_get(f->log, "t", "g", &gi));
  assert_int_equal(gi.dead, 0);
}

static void a_delayed_delivery_still_ahead_holds_retention(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.max_events = 1};
  tu_topic(f->log, "t", &cfg);
  append_n(f->log, "t", 5, 10);
  engram_event e = {.type = "memory.saved",
                    .deliver_at_ns = tu_clock_ns(&f->clock) + 3600ll * 1000000000};
  uint64_t off;
  OK(f->log, engram_append(f->log, "t", &e, &off, NULL));
  append_n(f->log, "t", 5, 10);
  engram_compact_report r;
  OK(f->log, engram_compact(f->log, "t", &r));
  assert_int_equal(r.removed, 5);
  assert_int_equal(r.held_at, 6);
  tu_clock_advance_ms(&f->clock, 2 * 3600 * 1000);
  OK(f->log, engram_compact(f->log, "t", &r));
  assert_int_equal(r.removed, 5);
  assert_int_equal(info_of(f->log, "t").first_offset, 11);
}

static void topic_set_checks_its_config_and_changes_only_the_named_topic(void **state) {
  fx *f = *state;
  tu_topic(f->log, "t", NULL);
  tu_topic(f->log, "u", NULL);
  engram_topic_config cfg = {.max_events = 5, .flags = 0x80};
  assert_int_equal(engram_topic_set(f->log, "t", &cfg), ENGRAM_EINVAL);
  assert_non_null(strstr(engram_errmsg(f->log), "flags"));
  assert_int_equal(info_of(f->log, "t").config.max_events, 0);
  assert_int_equal(engram_topic_set(f->log, "nope", &cfg), ENGRAM_EINVAL);
  cfg.flags = 0;
  assert_int_equal(engram_topic_set(f->log, "nope", &cfg), ENGRAM_ENOTFOUND);
  assert_int_equal(engram_topic_set(f->log, "t", NULL), ENGRAM_EINVAL);
  cfg.max_age_ms = UINT64_MAX;
  assert_int_equal(engram_topic_set(f->log, "t", &cfg), ENGRAM_EINVAL);
  cfg.max_age_ms = 86400000;
  cfg.max_bytes = 1 << 20;
  OK(f->log, engram_topic_set(f->log, "t", &cfg));
  engram_topic_info i = info_of(f->log, "t");
  assert_int_equal(i.config.max_events, 5);
  assert_int_equal(i.config.max_age_ms, 86400000);
  assert_int_equal(i.config.max_bytes, 1 << 20);
  assert_int_equal(i.config.max_payload, 1 << 20); /* defaults filled in */
  assert_int_equal(info_of(f->log, "u").config.max_events, 0);
  assert_int_equal(engram_compact(f->log, "nope", NULL), ENGRAM_ENOTFOUND);
}

/* An hour at 100 events a second (360,000 events of about 300 bytes) under a
 * 10,000-event limit, compacted as the background would (after every batch): data.mdb
 * stays below 8 MiB, where the same stream unlimited takes over 130 MiB. */
#define HOUR_EVENTS 360000
#define HOUR_BATCH 1000
#define HOUR_BOUND (8u << 20)
static void an_hour_of_appends_under_an_event_limit_keeps_data_mdb_bounded(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.max_events = 10000};
  tu_topic(f->log, "t", &cfg);
  int64_t longest = 0;
  for (int i = 0; i < HOUR_EVENTS / HOUR_BATCH; i++) {
    append_n(f->log, "t", HOUR_BATCH, 300);
    tu_clock_advance_ms(&f->clock, 10 * HOUR_BATCH);
    engram_compact_report r;
    OK(f->log, engram_compact(f->log, "t", &r));
    if (r.max_slice_ns > longest) longest = r.max_slice_ns;
  }
  engram_topic_info i = info_of(f->log, "t");
  assert_int_equal(i.count, 10000);
  assert_int_equal(i.head_offset, HOUR_EVENTS);
  char *path = tu_join(f->logdir, "data.mdb");
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  free(path);
  fprintf(stderr,
          "# data.mdb after %d events under max_events 10000: %lld bytes (bound %u); "
          "longest slice %.2f ms\n",
          HOUR_EVENTS, (long long)st.st_blocks * 512, HOUR_BOUND, longest / 1e6);
  /* Allocated blocks, not the apparent size: LMDB's file is sparse up to the map size. */
  assert_true((uint64_t)st.st_blocks * 512 < HOUR_BOUND);
}

/* ---------------------------------------------------------------------------------
 * The maintenance lease: retention in the background of one process at a time.
 * ------------------------------------------------------------------------------ */
/* The pid in DIR/maintenance.lock, 0 when none. */
static long lease_pid(const char *logdir) {
  char *path = tu_join(logdir, "maintenance.lock");
  FILE *fp = fopen(path, "r");
  free(path);
  long pid = 0;
  if (fp) {
    if (fscanf(fp, "%ld", &pid) != 1) pid = 0;
    fclose(fp);
  }
  return pid;
}

static int wait_count(engram *log, const char *topic, uint64_t want, int timeout_ms) {
  int64_t until = tu_mono_ms() + timeout_ms;
  while (tu_mono_ms() < until) {
    engram_topic_info i;
    if (engram_topic_info_get(log, topic, &i) == 0 && i.count == want) return 1;
    tu_sleep_ms(10);
  }
  return 0;
}

static void the_lease_holder_applies_retention_in_the_background(void **state) {
  fx *f = *state;
  engram_close(f->log);
  engram_options o = {.durability = ENGRAM_DURABILITY_NOMETASYNC, .maintenance_ms = 10};
  f->log = tu_open(f->logdir, &o);
  engram_topic_config cfg = {.max_events = 10};
  tu_topic(f->log, "t", &cfg);
  append_n(f->log, "t", 100, 10);
  assert_true(wait_count(f->log, "t", 10, 30000));
  assert_int_equal(lease_pid(f->logdir), (long)getpid());
  assert_int_equal(info_of(f->log, "t").first_offset, 91);
}

static const char *child_dir;
static int hold_lease(void *arg) {
  (void)arg;
  engram_options o = {.maintenance_ms = 10};
  engram *log = NULL;
  if (engram_open(child_dir, &o, &log)) return 1;
  for (;;) pause(); /* killed by the test */
}

static void another_process_takes_the_lease_over_when_its_holder_dies(void **state) {
  fx *f = *state;
  engram_close(f->log);
  child_dir = f->logdir;
  pid_t child = tu_spawn(hold_lease, NULL);
  int64_t until = tu_mono_ms() + 30000;
  while (lease_pid(f->logdir) != (long)child && tu_mono_ms() < until) tu_sleep_ms(10);
  assert_int_equal(lease_pid(f->logdir), (long)child);

  /* This process runs no retention while the child holds the lease. */
  engram_options o = {.durability = ENGRAM_DURABILITY_NOMETASYNC, .maintenance_ms = 10};
  f->log = tu_open(f->logdir, &o);
  tu_sleep_ms(100);
  assert_int_equal(lease_pid(f->logdir), (long)child);

  kill(child, SIGKILL);
  assert_int_equal(tu_wait(child, 30000), 128 + SIGKILL);
  until = tu_mono_ms() + 30000;
  while (lease_pid(f->logdir) != (long)getpid() && tu_mono_ms() < until) tu_sleep_ms(10);
  assert_int_equal(lease_pid(f->logdir), (long)getpid());
  engram_topic_config cfg = {.max_events = 5};
  tu_topic(f->log, "t", &cfg);
  append_n(f->log, "t", 50, 10);
  assert_true(wait_count(f->log, "t", 5, 30000));
}

/* ---------------------------------------------------------------------------------
 * kill -9 in the middle of retention, with appends and a consumer running.
 * ------------------------------------------------------------------------------ */
/* A child that appends, consumes (acking most, leaving some leased) and runs retention
 * every few milliseconds, until it is killed. */
static int churn(void *arg) {
  (void)arg;
  engram_options o = {.durability = ENGRAM_DURABILITY_NOMETASYNC, .maintenance_ms = 2};
  engram *log = NULL;
  if (engram_open(child_dir, &o, &log)) return 1;
  uint64_t seed = (uint64_t)getpid(), held[64];
  size_t n_held = 0;
  for (uint64_t i = 0;; i++) {
    append_n(log, "t", 1 + tu_rand(&seed) % 50, 100);
    /* Events left leased last time are finished now: the floor moves, unevenly. */
    for (size_t k = 0; k < n_held; k++) engram_ack(log, "t", "g", held[k], 0, NULL, 0);
    n_held = 0;
    engram_batch *b = NULL;
    if (engram_fetch(log, "t", "g", "w", 40, 0, &b) == 0) {
      for (size_t k = 0; k < b->count; k++) {
        if (tu_rand(&seed) % 8 || n_held == 64)
          engram_ack(log, "t", "g", b->events[k].offset, 0, NULL, 0);
        else
          held[n_held++] = b->events[k].offset;
      }
      engram_batch_free(b);
    }
    if (i % 3 == 0) engram_compact(log, "t", NULL);
  }
}

static void kill_9_during_retention_loses_nothing_unfinished_and_verifies_clean(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.max_events = 50};
  tu_topic(f->log, "t", &cfg);
  /* Leases of a killed child expire soon, so a later child gets their events again and
   * finishes them: with an hour-long lease, an event a child held when killed in its first
   * iteration (offset 1, on a loaded machine) would keep retention at offset 1 for good. */
  engram_group_config g = {.ack_wait_ms = 500};
  OK(f->log, engram_group_create(f->log, "t", "g", &g));
  engram_close(f->log);
  f->log = NULL;
  child_dir = f->logdir;
  uint64_t seed = 42;
  for (int round = 0; round < 6; round++) {
    pid_t child = tu_spawn(churn, NULL);
    tu_sleep_ms(50 + (int64_t)(tu_rand(&seed) % 200));
    if (round == 5) {
      /* The last round ends only once retention has removed something, however slow
       * the machine (a sanitizer build on a loaded one may need seconds). */
      engram_options wo = {.maintenance_ms = ENGRAM_MAINTENANCE_OFF};
      engram *w = tu_open(f->logdir, &wo);
      int64_t until = tu_mono_ms() + 60000;
      engram_topic_info wi = {0};
      while (tu_mono_ms() < until &&
             (engram_topic_info_get(w, "t", &wi) != 0 || wi.first_offset <= 1))
        tu_sleep_ms(20);
      engram_close(w);
    }
    kill(child, SIGKILL);
    assert_int_equal(tu_wait(child, 30000), 128 + SIGKILL);
    engram_options o = {.maintenance_ms = ENGRAM_MAINTENANCE_OFF};
    engram *log = tu_open(f->logdir, &o);
    engram_verify_report vr;
    OK(log, engram_verify(log, &vr));
    assert_int_equal(vr.damaged, 0);
    engram_topic_info ti;
    engram_group_info gi;
    OK(log, engram_topic_info_get(log, "t", &ti));
    OK(log, engram_group_info_get(log, "t", "g", &gi));
    /* Everything the group has not finished is still stored. */
    if (gi.floor < ti.head_offset) assert_true(ti.first_offset <= gi.floor + 1);
    assert_int_equal(gi.retention_skipped, 0);
    /* And each unfinished leased event can be read. */
    engram_batch *b = NULL;
    if (gi.floor < ti.head_offset) {
      OK(log, engram_read(log, "t", gi.floor + 1, &b));
      engram_batch_free(b);
    }
    engram_close(log);
    if (round == 5) assert_true(ti.first_offset > 1); /* retention did remove events */
  }
  f->log = tu_open(f->logdir, NULL);
}

int main(void) {
  tu_test_filter();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(a_max_events_limit_removes_the_oldest_and_never_reuses_offsets),
      T(an_emptied_topic_keeps_its_head_and_next_offset),
      T(a_max_age_limit_removes_only_events_older_than_it),
      T(a_max_bytes_limit_keeps_the_topic_under_it),
      T(an_unfinished_group_holds_retention_unless_forced),
      T(a_delayed_delivery_still_ahead_holds_retention),
      T(dead_letters_of_removed_events_go_with_them),
      T(topic_set_checks_its_config_and_changes_only_the_named_topic),
      T(an_hour_of_appends_under_an_event_limit_keeps_data_mdb_bounded),
      T(the_lease_holder_applies_retention_in_the_background),
      T(another_process_takes_the_lease_over_when_its_holder_dies),
      T(kill_9_during_retention_loses_nothing_unfinished_and_verifies_clean),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
