/* test_wal.c — the write-ahead file's background checkpoint: commits go on while it
 * flushes, and every event committed across checkpoints is there after reopening. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"
#include "log/log_private.h"

typedef tu_fx fx;

/* A write-ahead file of 256 KiB: half of it fills after a few dozen commits, and the
 * flusher checkpoints in the background. */
static int setup(void **state) {
  setenv("ENGRAM_TEST_WAL_SIZE", "262144", 1);
  *state = tu_fx_new("wal");
  return 0;
}

static int teardown(void **state) {
  int rc = tu_fx_teardown(state);
  unsetenv("ENGRAM_TEST_WAL_SIZE");
  return rc;
}

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static engram *hook_log;
static _Atomic int hook_calls;    /* checkpoints that reached their header's flush */
static _Atomic int hook_progress; /* of those, how many saw a commit meanwhile */
static _Atomic uint64_t appended; /* the writer's appends so far */

static uint64_t commits_now(void) {
  engram_commit_stats st;
  return engram_commit_stats_get(hook_log, &st) == 0 ? st.commits : 0;
}

/* Runs in the flusher thread where the checkpoint's new header is about to be flushed:
 * waits (a bound, not a speed: 10 s) for the writer's appends to commit meanwhile. */
static void header_hook(struct log *log) {
  (void)log;
  uint64_t from = commits_now(), seen = appended;
  int64_t until = mono_ns() + 10 * (int64_t)1000000000;
  int moved = 0;
  while (mono_ns() < until && !moved) {
    moved = commits_now() >= from + 2 && appended >= seen + 2;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  hook_progress += moved;
  hook_calls++;
}

struct writer {
  engram *log;
  _Atomic int stop;
  _Atomic int rc; /* read by the main thread while the writer runs */
};

static void *writer_main(void *arg) {
  struct writer *w = arg;
  char p[1024];
  memset(p, 'x', sizeof p);
  while (!w->stop) {
    engram_event ev = {.type = "memory.saved", .payload = p, .payload_len = sizeof p};
    w->rc = engram_append(w->log, "memory", &ev, NULL, NULL);
    if (w->rc) break;
    appended++;
  }
  return NULL;
}

static void commits_go_on_while_a_checkpoint_flushes_its_header(void **state) {
  fx *f = *state;
  f->log = tu_open(f->logdir, NULL);
  tu_topic(f->log, "memory", NULL);
  hook_log = f->log;
  hook_calls = hook_progress = 0;
  appended = 0;
  log_wal_test_header_hook = header_hook;
  struct writer w = {.log = f->log};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, writer_main, &w), 0);
  int64_t until = mono_ns() + 25 * (int64_t)1000000000;
  while (hook_calls < 1 && mono_ns() < until && !w.rc) {
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
  }
  w.stop = 1;
  pthread_join(th, NULL);
  log_wal_test_header_hook = NULL;
  assert_int_equal(w.rc, 0);
  engram_commit_stats st;
  assert_int_equal(engram_commit_stats_get(f->log, &st), 0);
  if (!st.write_ahead) skip(); /* no write-ahead file in this build */
  assert_true(hook_calls >= 1);
  assert_int_equal(hook_progress, hook_calls);
}

static void every_event_committed_across_checkpoints_is_there_after_reopening(void **state) {
  fx *f = *state;
  engram_options o = {.durability = ENGRAM_DURABILITY_ASYNC};
  f->log = tu_open(f->logdir, &o);
  tu_topic(f->log, "memory", NULL);
  char p[512];
  uint64_t n = 0;
  engram_commit_stats st = {0};
  /* Until three checkpoints have passed (or 20,000 appends: a build without the file). */
  while (n < 20000) {
    int k = snprintf(p, sizeof p, "event-%llu", (unsigned long long)n);
    memset(p + k, 'y', sizeof p - (size_t)k);
    engram_event ev = {.type = "memory.saved", .payload = p, .payload_len = sizeof p};
    assert_int_equal(engram_append(f->log, "memory", &ev, NULL, NULL), 0);
    n++;
    if (n % 100 == 0) {
      assert_int_equal(engram_commit_stats_get(f->log, &st), 0);
      if (!st.write_ahead || st.checkpoints >= 3) break;
    }
  }
  engram_close(f->log);
  f->log = tu_open(f->logdir, NULL);
  engram_verify_report vr;
  assert_int_equal(engram_verify(f->log, &vr), 0);
  assert_int_equal(vr.records, n);
  assert_int_equal(vr.damaged, 0);
  engram_topic_info ti;
  assert_int_equal(engram_topic_info_get(f->log, "memory", &ti), 0);
  assert_int_equal(ti.head_offset, n);
}

/* LMDB reuses no page freed after the oldest reader, and each writing handle pins the
 * newest commit it knows durable. In async mode the pin must move as records pile up,
 * not only at the periodic flush (here: once an hour), or every commit writes fresh pages
 * at the end of data.mdb: 8,000 appends would grow it by about 170 MB. */
static void an_async_writer_reuses_pages_between_periodic_flushes(void **state) {
  fx *f = *state;
  unsetenv("ENGRAM_TEST_WAL_SIZE"); /* the default file: no checkpoint moves the pin */
  engram_options o = {.durability = ENGRAM_DURABILITY_ASYNC, .flush_interval_ms = 3600000};
  f->log = tu_open(f->logdir, &o);
  tu_topic(f->log, "memory", NULL);
  char p[200];
  memset(p, 'z', sizeof p);
  for (int i = 0; i < 8000; i++) {
    engram_event ev = {.type = "memory.saved", .payload = p, .payload_len = sizeof p};
    assert_int_equal(engram_append(f->log, "memory", &ev, NULL, NULL), 0);
  }
  engram_commit_stats st;
  assert_int_equal(engram_commit_stats_get(f->log, &st), 0);
  if (!st.write_ahead) skip();
  char path[4200];
  snprintf(path, sizeof path, "%s/data.mdb", f->logdir);
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  /* Pages are reused once the pin moves (every few MiB of records): tens of MB at most,
   * where 8,000 appends without the pin moving grow it by about 170 MB. */
  printf("data.mdb %.1f MB\n", (double)sb.st_size / 1e6);
  assert_true(sb.st_size < 100 * 1000 * 1000);
}

/* Another process keeps a handle open that wrote once, long ago: its pin must move on too,
 * or LMDB reuses no page while it stays open and data.mdb grows with every commit. */
struct idle_pipes {
  char *logdir;
  int ready[2], done[2];
};

static int idle_writer(void *arg) {
  struct idle_pipes *p = arg;
  engram_options o = {.durability = ENGRAM_DURABILITY_ASYNC, .flush_interval_ms = 20};
  engram *log;
  if (engram_open(p->logdir, &o, &log)) return 1;
  int rc = engram_topic_create(log, "memory", NULL);
  if (rc && rc != ENGRAM_EEXIST) return 2;
  engram_event ev = {.type = "memory.saved", .payload = "x", .payload_len = 1};
  if (engram_append(log, "memory", &ev, NULL, NULL)) return 3;
  char c = 'r';
  if (write(p->ready[1], &c, 1) != 1) return 4;
  if (read(p->done[0], &c, 1) < 0) return 5; /* idle until the parent is done */
  engram_close(log);
  return 0;
}

static void a_handle_that_stopped_writing_does_not_keep_pages_from_reuse(void **state) {
  fx *f = *state;
  unsetenv("ENGRAM_TEST_WAL_SIZE");
  /* The child first: a fork while this process has a handle (and its threads) open could
   * copy a lock in use. */
  struct idle_pipes p = {.logdir = f->logdir};
  assert_int_equal(pipe(p.ready), 0);
  assert_int_equal(pipe(p.done), 0);
  pid_t pid = tu_spawn(idle_writer, &p);
  close(p.ready[1]); /* a child that fails before it is ready ends the read */
  char c;
  assert_int_equal(read(p.ready[0], &c, 1), 1);
  engram_options o = {.durability = ENGRAM_DURABILITY_ASYNC};
  f->log = tu_open(f->logdir, &o);
  engram_commit_stats st;
  assert_int_equal(engram_commit_stats_get(f->log, &st), 0);
  char pl[200];
  memset(pl, 'z', sizeof pl);
  for (int i = 0; i < 8000; i++) {
    engram_event ev = {.type = "memory.saved", .payload = pl, .payload_len = sizeof pl};
    assert_int_equal(engram_append(f->log, "memory", &ev, NULL, NULL), 0);
  }
  char path[4200];
  snprintf(path, sizeof path, "%s/data.mdb", f->logdir);
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  c = 'd';
  assert_int_equal(write(p.done[1], &c, 1), 1);
  assert_int_equal(tu_wait(pid, 30000), 0);
  close(p.ready[0]);
  close(p.done[0]);
  close(p.done[1]);
  if (!st.write_ahead) skip();
  /* Without the idle handle's pin moving: about 170 MB. */
  printf("data.mdb %.1f MB\n", (double)sb.st_size / 1e6);
  assert_true(sb.st_size < 100 * 1000 * 1000);
}

int main(void) {
  tu_test_filter();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(commits_go_on_while_a_checkpoint_flushes_its_header),
      T(every_event_committed_across_checkpoints_is_there_after_reopening),
      T(an_async_writer_reuses_pages_between_periodic_flushes),
      T(a_handle_that_stopped_writing_does_not_keep_pages_from_reuse),
  };
  return cmocka_run_group_tests_name("wal", tests, NULL, NULL);
}
