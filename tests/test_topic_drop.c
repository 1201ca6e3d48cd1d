/* test_topic_drop.c — topics that appear or vanish under an open handle: made by another
 * process after the open, dropped and recreated in this process, dropped by one thread
 * while others read and append, and the same seen through `engram serve`. Every public
 * call must return 0 or a public ENGRAM_E* code with a message, never crash. */
#include <pthread.h>
#include <setjmp.h>
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

typedef tu_fx fx;

static int setup(void **state) {
  fx *f = tu_fx_new("topic_drop");
  engram_close(tu_open(f->logdir, NULL)); /* the log exists; no handle is held */
  *state = f;
  return 0;
}

/* A code a caller can meet: 0 or one of the table's ENGRAM_E*, and then with a message. */
static int public_code(engram *log, int rc) {
  if (rc == 0) return 1;
  if (!strcmp(engram_errname(rc), "ENGRAM_E?")) return 0;
  return engram_errmsg(log)[0] != '\0';
}

#define EXPECT_OK(log, what, rc)                                                                \
  do {                                                                                          \
    int rc_ = (rc);                                                                             \
    if (rc_)                                                                                    \
      fprintf(stderr, "%s: %d %s: '%s'\n", what, rc_, engram_errname(rc_), engram_errmsg(log)); \
    assert_int_equal(rc_, 0);                                                                   \
  } while (0)

/* ---------------------------------------------------------------------------------
 * The sweep: each public entry point that names a topic, called as the first use of
 * that topic by the handle. Each op gets its own topic "<prefix><i>" so that it, and not
 * an earlier op, is the one that meets the topic first.
 * ------------------------------------------------------------------------------ */
enum { N_EVENTS = 3 };

static int op_read(engram *log, const char *t) {
  engram_batch *b = NULL;
  int rc = engram_read(log, t, 2, &b);
  if (rc == 0 && (b->count != 1 || b->events[0].offset != 2)) rc = 1000;
  engram_batch_free(b);
  return rc;
}
static int op_read_range(engram *log, const char *t) {
  engram_batch *b = NULL;
  int rc = engram_read_range(log, t, 1, 100, &b);
  if (rc == 0 && b->count != N_EVENTS) rc = 1000;
  engram_batch_free(b);
  return rc;
}
static int op_topic_info(engram *log, const char *t) {
  engram_topic_info i;
  int rc = engram_topic_info_get(log, t, &i);
  if (rc == 0 && (i.count != N_EVENTS || i.head_offset != N_EVENTS)) rc = 1000;
  return rc;
}
static int op_topic_list(engram *log, const char *t) {
  engram_topic_info *l = NULL;
  size_t n = 0;
  int rc = engram_topic_list(log, &l, &n);
  int found = 0;
  for (size_t k = 0; rc == 0 && k < n; k++)
    if (!strcmp(l[k].name, t)) found = l[k].count == N_EVENTS && l[k].head_offset == N_EVENTS;
  engram_free(l);
  return rc == 0 && !found ? 1000 : rc;
}
static int op_group_info(engram *log, const char *t) {
  engram_group_info gi;
  return engram_group_info_get(log, t, "g", &gi);
}
static int op_group_create(engram *log, const char *t) {
  return engram_group_create(log, t, "h", NULL);
}
static int op_fetch(engram *log, const char *t) {
  engram_batch *b = NULL;
  int rc = engram_fetch(log, t, "g", "c1", 10, 0, &b);
  if (rc == 0 && b->count != N_EVENTS) rc = 1000;
  engram_batch_free(b);
  return rc;
}
static int op_ack_fetch(engram *log, const char *t) {
  engram_batch *b = NULL;
  int rc = engram_ack_fetch(log, t, "g", "c1", NULL, 0, NULL, 10, 0, &b);
  if (rc == 0 && b->count != N_EVENTS) rc = 1000;
  engram_batch_free(b);
  return rc;
}
static int op_status(engram *log, const char *t) {
  engram_status st;
  return engram_status_get(log, t, "g", 1, &st);
}
static int op_append(engram *log, const char *t) {
  engram_event ev = {.type = "memory.saved", .payload = "x", .payload_len = 1};
  uint64_t off = 0;
  int rc = engram_append(log, t, &ev, &off, NULL);
  return rc == 0 && off != N_EVENTS + 1 ? 1000 : rc;
}

static const struct {
  const char *name;
  int (*fn)(engram *log, const char *topic);
} ops[] = {
    {"read", op_read},
    {"read_range", op_read_range},
    {"topic_info", op_topic_info},
    {"topic_list", op_topic_list},
    {"group_info", op_group_info},
    {"group_create", op_group_create},
    {"fetch", op_fetch},
    {"status", op_status},
    {"append", op_append},
    {"ack_fetch", op_ack_fetch},
};
#define N_OPS (sizeof ops / sizeof ops[0])

/* Gives topic "<prefix><i>" of every op N_EVENTS events and a group "g". */
static void fill_topics(engram *log, const char *prefix) {
  for (size_t i = 0; i < N_OPS; i++) {
    char t[64];
    snprintf(t, sizeof t, "%s%zu", prefix, i);
    for (int k = 0; k < N_EVENTS; k++) {
      engram_event ev = {.type = "memory.saved", .payload = "p", .payload_len = 1};
      EXPECT_OK(log, "append", engram_append(log, t, &ev, NULL, NULL));
    }
    EXPECT_OK(log, "group", engram_group_create(log, t, "g", NULL));
  }
}

/* Makes topic "<prefix><i>" for every op, filled as fill_topics does. */
static void make_topics(engram *log, const char *prefix) {
  for (size_t i = 0; i < N_OPS; i++) {
    char t[64];
    snprintf(t, sizeof t, "%s%zu", prefix, i);
    EXPECT_OK(log, "create", engram_topic_create(log, t, NULL));
  }
  fill_topics(log, prefix);
}

/* Runs every op once on its own topic; each must succeed. */
static void sweep(engram *log, const char *prefix) {
  for (size_t i = 0; i < N_OPS; i++) {
    char t[64];
    snprintf(t, sizeof t, "%s%zu", prefix, i);
    int rc = ops[i].fn(log, t);
    if (rc)
      fprintf(stderr, "%s %s: %d %s: '%s'\n", ops[i].name, t, rc, engram_errname(rc),
              engram_errmsg(log));
    assert_true(public_code(log, rc));
    assert_int_equal(rc, 0);
  }
}

static int make_topics_child(void *arg) {
  const char *logdir = arg;
  engram *log = NULL;
  if (engram_open(logdir, NULL, &log)) return 1;
  make_topics(log, "fresh");
  engram_close(log);
  return 0;
}

static void topics_another_process_creates_after_the_open_work_with_every_call(void **state) {
  fx *f = *state;
  engram *log = tu_open(f->logdir, NULL);
  /* The handle has run transactions before the topics exist. */
  engram_topic_info *l = NULL;
  size_t n = 0;
  EXPECT_OK(log, "list", engram_topic_list(log, &l, &n));
  engram_free(l);
  assert_int_equal(tu_fork_child(make_topics_child, f->logdir, 60000), 0);
  sweep(log, "fresh");
  engram_close(log);
}

static void a_topic_dropped_and_recreated_in_this_process_works_with_every_call(void **state) {
  fx *f = *state;
  engram *log = tu_open(f->logdir, NULL);
  make_topics(log, "again");
  sweep(log, "again");
  for (size_t i = 0; i < N_OPS; i++) {
    char t[64];
    snprintf(t, sizeof t, "again%zu", i);
    EXPECT_OK(log, "drop", engram_topic_drop(log, t));
    /* Recreated, its first read finds it empty. */
    EXPECT_OK(log, "recreate", engram_topic_create(log, t, NULL));
    engram_batch *b = NULL;
    EXPECT_OK(log, "read_range recreated", engram_read_range(log, t, 1, 10, &b));
    assert_int_equal(b->count, 0);
    engram_batch_free(b);
    engram_topic_info ti;
    EXPECT_OK(log, "info recreated", engram_topic_info_get(log, t, &ti));
    assert_int_equal(ti.count, 0);
    assert_int_equal(ti.head_offset, 0);
  }
  fill_topics(log, "again");
  sweep(log, "again");
  engram_close(log);
}

static int drop_topics_child(void *arg) {
  const char *logdir = arg;
  engram *log = NULL;
  if (engram_open(logdir, NULL, &log)) return 1;
  for (size_t i = 0; i < N_OPS; i++) {
    char t[64];
    snprintf(t, sizeof t, "fresh%zu", i);
    if (engram_topic_drop(log, t)) return 2;
  }
  engram_close(log);
  return 0;
}

/* Another process drops the topics this handle has used and makes them again: the
 * handle sees them gone, then new. */
static void topics_another_process_drops_and_recreates_read_as_gone_then_new(void **state) {
  fx *f = *state;
  engram *log = tu_open(f->logdir, NULL);
  assert_int_equal(tu_fork_child(make_topics_child, f->logdir, 60000), 0);
  sweep(log, "fresh");
  assert_int_equal(tu_fork_child(drop_topics_child, f->logdir, 60000), 0);
  for (size_t i = 0; i < N_OPS; i++) {
    char t[64];
    snprintf(t, sizeof t, "fresh%zu", i);
    engram_batch *b = NULL;
    assert_int_equal(engram_read_range(log, t, 1, 10, &b), ENGRAM_ENOTFOUND);
    assert_true(public_code(log, ENGRAM_ENOTFOUND));
  }
  assert_int_equal(tu_fork_child(make_topics_child, f->logdir, 60000), 0);
  /* The group "h" the first sweep made went with the dropped topic. */
  engram_group_info gi;
  assert_int_equal(engram_group_info_get(log, "fresh5", "h", &gi), ENGRAM_ENOTFOUND);
  sweep(log, "fresh");
  engram_close(log);
}

/* Through the daemon: the daemon opened the log before another process made the topics;
 * no reply may carry a code outside the table ("reply with an invalid code"). */
static void the_daemon_serves_topics_another_process_creates_after_it_started(void **state) {
  (void)state;
  td d;
  td_init(&d, "topic_drop_serve");
  td_start(&d);
  engram *r = td_connect_within(d.ep, 10000, NULL);
  assert_non_null(r);
  engram_topic_info *l = NULL;
  size_t n = 0;
  EXPECT_OK(r, "list", engram_topic_list(r, &l, &n));
  engram_free(l);
  assert_int_equal(tu_fork_child(make_topics_child, d.logdir, 60000), 0);
  sweep(r, "fresh");
  engram_close(r);
  td_done(&d);
}

/* ---------------------------------------------------------------------------------
 * Threads racing a drop.
 * ------------------------------------------------------------------------------ */
struct race {
  engram *log;
  int64_t until_ms;
  int bad;        /* calls that returned a code outside the table or no message */
  uint64_t calls; /* calls made */
  uint64_t ok;    /* calls that succeeded */
  pthread_mutex_t mu;
};

static void tally(struct race *r, int rc) {
  pthread_mutex_lock(&r->mu);
  r->calls++;
  if (rc == 0) r->ok++;
  if (!public_code(r->log, rc)) {
    if (r->bad < 5)
      fprintf(stderr, "race: code %d (%s) '%s'\n", rc, engram_errname(rc), engram_errmsg(r->log));
    r->bad++;
  }
  pthread_mutex_unlock(&r->mu);
}

static void *race_reader(void *arg) {
  struct race *r = arg;
  while (tu_mono_ms() < r->until_ms) {
    engram_batch *b = NULL;
    int rc = engram_read_range(r->log, "hot", 1, 50, &b);
    if (rc == 0) {
      /* Whatever a read returns is one life of the topic: dense offsets from 1. */
      for (size_t k = 0; k < b->count; k++)
        if (b->events[k].offset != k + 1) rc = 1000;
    }
    engram_batch_free(b);
    tally(r, rc);
    b = NULL;
    rc = engram_read(r->log, "hot", 1, &b);
    engram_batch_free(b);
    tally(r, rc);
    engram_topic_info i;
    tally(r, engram_topic_info_get(r->log, "hot", &i));
  }
  return NULL;
}

static void *race_writer(void *arg) {
  struct race *r = arg;
  while (tu_mono_ms() < r->until_ms) {
    engram_event ev = {.type = "memory.saved", .payload = "w", .payload_len = 1};
    tally(r, engram_append(r->log, "hot", &ev, NULL, NULL));
    engram_batch *b = NULL;
    int rc = engram_fetch(r->log, "hot", "g", "c", 5, 0, &b);
    engram_batch_free(b);
    tally(r, rc);
  }
  return NULL;
}

static void *race_dropper(void *arg) {
  struct race *r = arg;
  while (tu_mono_ms() < r->until_ms) {
    tally(r, engram_topic_drop(r->log, "hot"));
    tally(r, engram_topic_create(r->log, "hot", NULL));
    tally(r, engram_group_create(r->log, "hot", "g", NULL));
  }
  return NULL;
}

/* Another process reading and appending through its own handle during the race. */
static int race_process(void *arg) {
  const char *logdir = arg;
  engram_options o = {.durability = ENGRAM_DURABILITY_ASYNC};
  struct race r = {.until_ms = tu_mono_ms() + 3000};
  if (engram_open(logdir, &o, &r.log)) return 1;
  pthread_mutex_init(&r.mu, NULL);
  pthread_t th[2];
  pthread_create(&th[0], NULL, race_reader, &r);
  pthread_create(&th[1], NULL, race_writer, &r);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  engram_close(r.log);
  return r.bad ? 2 : 0;
}

static void reads_and_appends_racing_drop_and_recreate_never_crash_or_leak_codes(void **state) {
  fx *f = *state;
  engram_options o = {.durability = ENGRAM_DURABILITY_ASYNC};
  struct race r = {.log = tu_open(f->logdir, &o), .until_ms = tu_mono_ms() + 3000};
  pthread_mutex_init(&r.mu, NULL);
  tu_topic(r.log, "hot", NULL);
  EXPECT_OK(r.log, "group", engram_group_create(r.log, "hot", "g", NULL));
  pid_t peer = tu_spawn(race_process, f->logdir);
  pthread_t th[5];
  void *(*fn[5])(void *) = {race_reader, race_reader, race_reader, race_writer, race_dropper};
  for (int i = 0; i < 5; i++) assert_int_equal(pthread_create(&th[i], NULL, fn[i], &r), 0);
  for (int i = 0; i < 5; i++) pthread_join(th[i], NULL);
  assert_int_equal(tu_wait(peer, 60000), 0); /* no crash, no bad code there either */
  print_message("%llu calls, %llu succeeded\n", (unsigned long long)r.calls,
                (unsigned long long)r.ok);
  assert_int_equal(r.bad, 0);
  assert_true(r.ok > 0);

  /* After a final drop the data is gone; recreated, the topic starts again at offset 1
   * with no events and no groups. */
  int rc = engram_topic_drop(r.log, "hot");
  assert_true(rc == 0 || rc == ENGRAM_ENOTFOUND);
  engram_batch *b = NULL;
  assert_int_equal(engram_read_range(r.log, "hot", 1, 10, &b), ENGRAM_ENOTFOUND);
  tu_topic(r.log, "hot", NULL);
  engram_topic_info i;
  EXPECT_OK(r.log, "info", engram_topic_info_get(r.log, "hot", &i));
  assert_int_equal(i.count, 0);
  assert_int_equal(i.head_offset, 0);
  engram_group_info gi;
  assert_int_equal(engram_group_info_get(r.log, "hot", "g", &gi), ENGRAM_ENOTFOUND);
  engram_event ev = {.type = "memory.saved", .payload = "n", .payload_len = 1};
  uint64_t off = 0;
  EXPECT_OK(r.log, "append", engram_append(r.log, "hot", &ev, &off, NULL));
  assert_int_equal(off, 1);
  EXPECT_OK(r.log, "read", engram_read_range(r.log, "hot", 1, 10, &b));
  assert_int_equal(b->count, 1);
  assert_memory_equal(b->events[0].payload, "n", 1);
  engram_batch_free(b);
  engram_verify_report rep;
  EXPECT_OK(r.log, "verify", engram_verify(r.log, &rep));
  assert_int_equal(rep.damaged, 0);
  engram_close(r.log);
  pthread_mutex_destroy(&r.mu);

  /* Another process sees the same. */
  engram *other = tu_open(f->logdir, NULL);
  EXPECT_OK(other, "info", engram_topic_info_get(other, "hot", &i));
  assert_int_equal(i.count, 1);
  engram_close(other);
}

/* Each topic name a handle uses takes one of LMDB's database slots (max_topics + 32
 * of them); a dropped topic's slot must come back, or a process that creates and drops
 * topics of ever new names runs out. */
static void creating_and_dropping_many_distinct_topics_never_runs_out_of_handles(void **state) {
  (void)state;
  engram_options o = {.max_topics = 2, .durability = ENGRAM_DURABILITY_ASYNC};
  /* A new log: it keeps the max_topics it is made with (an existing one keeps its own). */
  char *dir = tu_tmpdir("slots");
  engram *log = tu_open(dir, &o);
  for (int i = 0; i < 200; i++) {
    char t[32];
    snprintf(t, sizeof t, "session%d", i);
    EXPECT_OK(log, "create", engram_topic_create(log, t, NULL));
    engram_event ev = {.type = "memory.saved", .payload = "x", .payload_len = 1};
    EXPECT_OK(log, "append", engram_append(log, t, &ev, NULL, NULL));
    EXPECT_OK(log, "group", engram_group_create(log, t, "g", NULL));
    engram_batch *b = NULL;
    EXPECT_OK(log, "read", engram_read_range(log, t, 1, 10, &b));
    assert_int_equal(b->count, 1);
    engram_batch_free(b);
    EXPECT_OK(log, "drop", engram_topic_drop(log, t));
  }
  /* A name used before works again, from offset 1. */
  EXPECT_OK(log, "create", engram_topic_create(log, "session7", NULL));
  engram_event ev = {.type = "memory.saved", .payload = "y", .payload_len = 1};
  uint64_t off = 0;
  EXPECT_OK(log, "append", engram_append(log, "session7", &ev, &off, NULL));
  assert_int_equal(off, 1);
  engram_close(log);
  log = tu_open(dir, &o);
  engram_topic_info i;
  EXPECT_OK(log, "info", engram_topic_info_get(log, "session7", &i));
  assert_int_equal(i.count, 1);
  engram_close(log);
  tu_tmpdir_done(dir);
}

/* Threads that first use groups at once on a new handle each open the group databases;
 * each database must be remembered once. Cached twice, the names filled the handle's
 * table, and a drop (which runs alone, holding the handle lock) then opened one itself
 * and waited for its own lock forever. The alarm turns such a hang into a failure. */
enum { FIRST_USERS = 4 };

struct first_use {
  engram *log;
  pthread_barrier_t *go;
  int i, rc;
};

static void *use_groups_first(void *arg) {
  struct first_use *u = arg;
  char g[16];
  snprintf(g, sizeof g, "g%d", u->i);
  pthread_barrier_wait(u->go);
  u->rc = engram_group_create(u->log, "keep", g, NULL);
  return NULL;
}

static void a_drop_after_threads_first_used_groups_at_once_finishes(void **state) {
  fx *f = *state;
  alarm(120);
  for (int round = 0; round < 6; round++) {
    char name[32];
    snprintf(name, sizeof name, "fresh%d", round);
    char *dir = tu_join(f->dir, name);
    engram *log = tu_open(dir, NULL);
    EXPECT_OK(log, "create keep", engram_topic_create(log, "keep", NULL));
    EXPECT_OK(log, "create big", engram_topic_create(log, "big", NULL));
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, FIRST_USERS);
    pthread_t th[FIRST_USERS];
    struct first_use u[FIRST_USERS];
    for (int i = 0; i < FIRST_USERS; i++) {
      u[i] = (struct first_use){log, &go, i, -1};
      assert_int_equal(pthread_create(&th[i], NULL, use_groups_first, &u[i]), 0);
    }
    for (int i = 0; i < FIRST_USERS; i++) {
      pthread_join(th[i], NULL);
      EXPECT_OK(log, "group create", u[i].rc);
    }
    pthread_barrier_destroy(&go);
    EXPECT_OK(log, "drop", engram_topic_drop(log, "big"));
    engram_group_info gi;
    EXPECT_OK(log, "group info", engram_group_info_get(log, "keep", "g0", &gi));
    engram_close(log);
    free(dir);
  }
  alarm(0);
}

/* A dropped topic leaves its emptied database behind: verify counts it as no damage. */
static void a_log_with_a_dropped_topic_verifies_clean(void **state) {
  fx *f = *state;
  engram *log = tu_open(f->logdir, NULL);
  make_topics(log, "gone");
  engram_verify_report r;
  EXPECT_OK(log, "verify before", engram_verify(log, &r));
  uint64_t before = r.records;
  assert_true(before > 0);
  EXPECT_OK(log, "drop", engram_topic_drop(log, "gone0"));
  EXPECT_OK(log, "verify", engram_verify(log, &r));
  assert_int_equal(r.damaged, 0);
  assert_int_equal(r.records, before - N_EVENTS);
  engram_close(log);
}

int main(void) {
  tu_test_filter();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, tu_fx_teardown)
  const struct CMUnitTest tests[] = {
      T(topics_another_process_creates_after_the_open_work_with_every_call),
      T(a_topic_dropped_and_recreated_in_this_process_works_with_every_call),
      T(topics_another_process_drops_and_recreates_read_as_gone_then_new),
      T(the_daemon_serves_topics_another_process_creates_after_it_started),
      T(reads_and_appends_racing_drop_and_recreate_never_crash_or_leak_codes),
      T(creating_and_dropping_many_distinct_topics_never_runs_out_of_handles),
      T(a_log_with_a_dropped_topic_verifies_clean),
      T(a_drop_after_threads_first_used_groups_at_once_finishes),
  };
  return cmocka_run_group_tests_name("topic_drop", tests, NULL, NULL);
}
