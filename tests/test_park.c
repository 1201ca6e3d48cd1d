/* test_park.c — parked free pages (log/park.c): after a big topic is dropped, a parking
 * pass takes its runs of free pages off LMDB's free list, writing only the first page
 * of each run; the log's later growth reuses them before data.mdb grows; engram_space_get
 * counts them as free; verify, backup and reclaim see through them; and a crash after
 * parking recovers with every acknowledged event, the parked pages still releasable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/api.h"
#include "engram.h"
#include "helpers/testutil.h"
#include "log/log.h"
#include "log/log_private.h"

#define OK(log, call) TU_OK(log, call)
#define KEEP 256 /* ENGRAM_TEST_PARK_KEEP: parks above 1024 free pages, keeps 256 */
#define PAYLOAD 4000

static uint64_t file_size(const char *dir, const char *name) {
  char *p = tu_join(dir, name);
  struct stat st;
  uint64_t n = stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
  free(p);
  return n;
}

/* Appends n (a multiple of 64) incompressible 4,000-byte events to topic, in batches of
 * 64; the payload of the i-th is tu_fill_random(seed + i / 64 * 64). */
static void fill(engram *log, const char *topic, size_t n, uint64_t seed) {
  enum { BATCH = 64 };
  char *buf = malloc(PAYLOAD);
  engram_event evs[BATCH];
  uint64_t offs[BATCH];
  memset(evs, 0, sizeof evs);
  for (size_t done = 0; done < n; done += BATCH) {
    tu_fill_random(buf, PAYLOAD, seed + done);
    for (size_t i = 0; i < BATCH; i++) {
      evs[i].type = "memory.saved";
      evs[i].payload = buf;
      evs[i].payload_len = PAYLOAD;
    }
    OK(log, engram_append_batch(log, topic, evs, BATCH, offs, NULL));
  }
  free(buf);
}

/* Every event of topic `keep` has the payload fill() gave it, each fill having been given
 * the number of events before it as its seed. Returns how many. */
static uint64_t check_keep(engram *log, uint64_t seed) {
  char *want = malloc(PAYLOAD);
  uint64_t from = 1, n = 0;
  for (;;) {
    engram_batch *b = NULL;
    OK(log, engram_read_range(log, "keep", from, 256, &b));
    for (size_t i = 0; i < b->count; i++) {
      const engram_event *e = &b->events[i];
      assert_int_equal(e->offset, n + 1);
      tu_fill_random(want, PAYLOAD, seed + (e->offset - 1) / 64 * 64);
      assert_int_equal(e->payload_len, PAYLOAD);
      assert_memory_equal(e->payload, want, PAYLOAD);
      n++;
      from = e->offset + 1;
    }
    size_t got = b->count;
    engram_batch_free(b);
    if (!got) break;
  }
  free(want);
  return n;
}

/* Runs parking passes until one parks nothing. */
static log_park_report park(engram *log) {
  log_park_report sum = {0}, r;
  for (int i = 0; i < 64; i++) {
    assert_int_equal(log_park_pass(api_log(log), &r, NULL, NULL), 0);
    if (i == 0) sum = r;
    sum.parked_now += i ? r.parked_now : 0;
    sum.released_pages += i ? r.released_pages : 0;
    if (!r.parked_now) break;
  }
  return sum;
}

static uint64_t parked_pages(engram *log) {
  uint64_t free_pages, parked;
  assert_int_equal(log_park_count(api_log(log), &free_pages, &parked), 0);
  return parked;
}

static uint64_t free_pages(engram *log) {
  uint64_t free_pages, parked;
  assert_int_equal(log_park_count(api_log(log), &free_pages, &parked), 0);
  return free_pages;
}

/* A log with topic `keep` (2 MiB) beside a dropped topic of 24 MiB whose free pages are
 * reusable (later commits moved the write-ahead file's pin past the drop). */
static engram *dropped(tu_fx *fx) {
  setenv("ENGRAM_TEST_PARK_KEEP", "256", 1);
  engram_options o = {.maintenance_ms = ENGRAM_MAINTENANCE_OFF};
  engram *log = fx->log = tu_open(fx->logdir, &o);
  engram_topic_config cfg = {.flags = ENGRAM_TOPIC_NO_DICT};
  OK(log, engram_topic_create(log, "keep", &cfg));
  OK(log, engram_topic_create(log, "big", &cfg));
  fill(log, "big", 6144, 1000000); /* 24 MiB */
  fill(log, "keep", 512, 0);       /* 2 MiB */
  OK(log, engram_topic_drop(log, "big"));
  engram_event e = {.type = "memory.saved", .payload = "x", .payload_len = 1};
  OK(log, engram_topic_create(log, "tick", NULL));
  for (int i = 0; i < 3; i++) OK(log, engram_append(log, "tick", &e, NULL, NULL));
  return log;
}

static void the_runs_of_a_dropped_topic_are_parked_writing_only_their_first_pages(void **state) {
  tu_fx *fx = *state;
  engram *log = dropped(fx);
  engram_space before;
  OK(log, engram_space_get(log, &before));
  uint64_t psize = 4096, wal0 = log_wal_appended(api_log(log));
  assert_true(before.free_bytes / psize > 5000); /* the dropped topic's pages */
  log_park_report r = park(log);
  uint64_t parked = parked_pages(log);
  assert_true(r.parked_now > 4000);
  assert_int_equal(parked, r.parked_now);
  /* Each value's first page and the commits' own pages went to the write-ahead file:
   * nothing near the 16+ MiB a whole copy of the runs would have been. */
  uint64_t wal = log_wal_appended(api_log(log)) - wal0;
  assert_true(wal < parked * psize / 16);
  assert_true(free_pages(log) < 4 * KEEP + 64); /* what the pass left, and its commits freed */
  /* Parked pages are free space: the file and the totals did not move. */
  engram_space sp;
  OK(log, engram_space_get(log, &sp));
  assert_int_equal(sp.file_bytes, before.file_bytes);
  assert_true(sp.free_bytes + 64 * psize >= before.free_bytes);
  assert_true(sp.used_bytes <= before.used_bytes + 64 * psize);
  engram_verify_report vr;
  OK(log, engram_verify(log, &vr));
  assert_int_equal(vr.damaged, 0);
  assert_int_equal(check_keep(log, 0), 512);
}

static void growth_takes_parked_pages_before_the_file_grows(void **state) {
  tu_fx *fx = *state;
  engram *log = dropped(fx);
  park(log);
  uint64_t parked = parked_pages(log), size = file_size(fx->logdir, "data.mdb");
  assert_true(parked > 4000);
  /* 16 MiB more, with a pass after each MiB as the maintenance runner would run them:
   * the free list runs short or the file grows, and parked pages are given back. */
  for (int i = 0; i < 16; i++) {
    fill(log, "keep", 256, 512 + (uint64_t)i * 256);
    log_park_report r;
    assert_int_equal(log_park_pass(api_log(log), &r, NULL, NULL), 0);
  }
  uint64_t left = parked_pages(log);
  assert_true(left < parked - 3000);
  /* At most what one pass's worth of growth took before the pass saw it. */
  assert_true(file_size(fx->logdir, "data.mdb") <= size + (2u << 20));
  engram_verify_report vr;
  OK(log, engram_verify(log, &vr));
  assert_int_equal(vr.damaged, 0);
  /* Everything released, the pages reused: the events read back whole. */
  assert_int_equal(log_park_release_all(api_log(log)), 0);
  assert_int_equal(parked_pages(log), 0);
  fill(log, "keep", 1024, 512 + 16 * 256);
  OK(log, engram_verify(log, &vr));
  assert_int_equal(vr.damaged, 0);
  assert_int_equal(check_keep(log, 0), 512 + 16 * 256 + 1024);
}

static void backup_and_reclaim_leave_parked_pages_out(void **state) {
  tu_fx *fx = *state;
  engram *log = dropped(fx);
  park(log);
  assert_true(parked_pages(log) > 4000);
  char *dest = tu_join(fx->dir, "backup");
  OK(log, engram_backup(log, dest));
  assert_true(file_size(dest, "data.mdb") < (8u << 20)); /* keep's 2 MiB, not 24 more */
  engram *b = tu_open(dest, NULL);
  assert_int_equal(check_keep(b, 0), 512);
  engram_close(b);
  free(dest);
  engram_close(log);
  fx->log = NULL;
  engram_reclaim_report rr;
  OK(NULL, engram_reclaim(fx->logdir, NULL, &rr));
  assert_true(rr.bytes_after < (8u << 20));
  log = fx->log = tu_open(fx->logdir, NULL);
  assert_int_equal(check_keep(log, 0), 512);
}

/* The child parks, appends and dies without closing: recovery replays the parking
 * commits (first pages only) and every acknowledged append. */
static void a_crash_after_parking_keeps_every_acknowledged_event(void **state) {
  tu_fx *fx = *state;
  engram *log = dropped(fx);
  engram_close(log);
  fx->log = NULL;
  pid_t pid = fork();
  if (pid == 0) {
    engram_options o = {.maintenance_ms = ENGRAM_MAINTENANCE_OFF};
    engram *c = NULL;
    if (engram_open(fx->logdir, &o, &c)) _exit(2);
    log_park_report r;
    for (int i = 0; i < 64; i++)
      if (log_park_pass(api_log(c), &r, NULL, NULL) || !r.parked_now) break;
    fill(c, "keep", 256, 512);
    _exit(0); /* no close: the write-ahead file holds the commits since the checkpoint */
  }
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  engram_options o = {.maintenance_ms = ENGRAM_MAINTENANCE_OFF};
  log = fx->log = tu_open(fx->logdir, &o);
  assert_true(parked_pages(log) > 4000);
  engram_verify_report vr;
  OK(log, engram_verify(log, &vr));
  assert_int_equal(vr.damaged, 0);
  assert_int_equal(check_keep(log, 0), 512 + 256);
  /* The parked runs' first pages came back: releasing reads them. */
  assert_int_equal(log_park_release_all(api_log(log)), 0);
  assert_int_equal(parked_pages(log), 0);
  fill(log, "keep", 2048, 768);
  OK(log, engram_verify(log, &vr));
  assert_int_equal(vr.damaged, 0);
  assert_int_equal(check_keep(log, 0), 768 + 2048);
}

/* Pages a commit took past the end of data.mdb and freed again before it committed go
 * to the free list unwritten (LMDB writes no page it dirtied and freed): here an overflow
 * value of 40 pages, put and deleted in one transaction on a log with few free pages, so
 * that its pages are new ones. Before data.mdb was extended over them, the file ended 39
 * pages short of what the meta page counts: the next open refused the log as cut short,
 * and a parking pass could park a run there, writing only its first page, for good (the
 * benchmark's log after eight processes had appended while their runners parked). */
static int freed_overflow_job(log_wtx *w, void *arg) {
  MDB_dbi dbi = *(MDB_dbi *)arg;
  static char big[40 * 4096];
  memset(big, 'x', sizeof big);
  MDB_val k = {5, "small"}, v = {1, "x"}, bk = {3, "big"}, bv = {sizeof big - 100, big};
  int rc = mdb_put(w->txn, dbi, &k, &v, 0); /* LMDB reads the free list */
  if (!rc) rc = mdb_put(w->txn, dbi, &bk, &bv, 0);
  if (!rc) rc = mdb_del(w->txn, dbi, &bk, NULL);
  return rc ? log_err_mdb(rc) : 0;
}

static uint64_t pages_past_the_end(engram *log, const char *dir) {
  MDB_envinfo ei;
  mdb_env_info(api_log(log)->env, &ei);
  uint64_t have = file_size(dir, "data.mdb") / 4096, used = ei.me_last_pgno + 1;
  return used > have ? used - have : 0;
}

/* A new log with topic "t" and one event, then a commit of freed_overflow_job; *free0:
 * the free pages before that commit. */
static engram *freed_commit(tu_fx *fx, const engram_options *o, uint64_t *free0) {
  engram *log = fx->log = tu_open(fx->logdir, o);
  engram_event e = {.type = "memory.saved", .payload = "x", .payload_len = 1};
  OK(log, engram_topic_create(log, "t", NULL));
  OK(log, engram_append(log, "t", &e, NULL, NULL));
  MDB_dbi dbi;
  assert_int_equal(log_aux_dbi(api_log(log), "test.freed", 0, &dbi), 0);
  *free0 = free_pages(log);
  assert_int_equal(log_write_solo(api_log(log), freed_overflow_job, &dbi), 0);
  return log;
}

static void pages_freed_unwritten_lie_inside_the_file(void **state) {
  tu_fx *fx = *state;
  setenv("ENGRAM_TEST_PARK_KEEP", "4", 1); /* parks above 16 free pages */
  engram_options o = {.maintenance_ms = ENGRAM_MAINTENANCE_OFF};
  engram_event e = {.type = "memory.saved", .payload = "x", .payload_len = 1};
  uint64_t free0;
  engram *log = freed_commit(fx, &o, &free0);
  assert_true(free_pages(log) >= free0 + 39); /* the value's pages went to the free list */
  assert_int_equal(pages_past_the_end(log, fx->logdir), 0);
  /* Opened again as it is; then its free pages parked and released. */
  engram_close(log);
  log = fx->log = tu_open(fx->logdir, &o);
  for (int i = 0; i < 3; i++) OK(log, engram_append(log, "t", &e, NULL, NULL));
  log_park_report r;
  for (int i = 0; i < 8; i++)
    if (log_park_pass(api_log(log), &r, NULL, NULL) || !r.parked_now) break;
  engram_close(log);
  log = fx->log = tu_open(fx->logdir, &o);
  assert_int_equal(pages_past_the_end(log, fx->logdir), 0);
  engram_verify_report vr;
  OK(log, engram_verify(log, &vr));
  assert_int_equal(vr.damaged, 0);
  assert_int_equal(log_park_release_all(api_log(log)), 0);
  fill(log, "t", 256, 0);
  OK(log, engram_verify(log, &vr));
  assert_int_equal(vr.damaged, 0);
}

/* How many of the last pages data.mdb's meta counts are on the free list (*used: how many
 * it counts). */
static uint64_t trailing_free_pages(const char *dir, uint64_t *used) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_cursor *c;
  MDB_val k, v;
  MDB_envinfo ei;
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK, 0644), 0);
  mdb_env_info(env, &ei);
  *used = ei.me_last_pgno + 1;
  unsigned char *isfree = calloc(*used, 1);
  assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
  assert_int_equal(mdb_cursor_open(txn, 0, &c), 0);
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    const size_t *idl = v.mv_data;
    for (size_t i = 1; i <= idl[0]; i++)
      if (idl[i] < *used) isfree[idl[i]] = 1;
  }
  mdb_cursor_close(c);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  uint64_t n = 0;
  while (n < *used && isfree[*used - 1 - n]) n++;
  free(isfree);
  return n;
}

/* A log an engram before this fix closed with its file ending short of free pages opens
 * (their absence loses nothing), and its next commit extends the file over them. A file
 * cut short of pages in use is still refused (test_open). */
static void a_file_short_only_of_free_pages_opens(void **state) {
#if defined(__SANITIZE_ADDRESS__)
  skip(); /* the check runs in a child process, which sanitizer builds do not fork */
#endif
  tu_fx *fx = *state;
  engram_options o = {.maintenance_ms = ENGRAM_MAINTENANCE_OFF};
  engram_event e = {.type = "memory.saved", .payload = "x", .payload_len = 1};
  uint64_t free0;
  engram *log = freed_commit(fx, &o, &free0);
  engram_close(log);
  fx->log = NULL;
  uint64_t used, tail = trailing_free_pages(fx->logdir, &used);
  assert_true(tail >= 32);
  char *p = tu_join(fx->logdir, "data.mdb");
  assert_int_equal(truncate(p, (off_t)((used - tail) * 4096)), 0);
  free(p);
  log = fx->log = tu_open(fx->logdir, &o);
  OK(log, engram_append(log, "t", &e, NULL, NULL));
  assert_int_equal(pages_past_the_end(log, fx->logdir), 0);
  engram_verify_report vr;
  OK(log, engram_verify(log, &vr));
  assert_int_equal(vr.damaged, 0);
}

static int setup(void **state) {
  *state = tu_fx_new("park");
  return 0;
}

/* A job that runs alone holds the handle lock: a handle it asks for through
 * log_aux_dbi is refused with a message, and the log stays usable (it waited for its own
 * lock before). Not about parking, but this file is where solo jobs are run by hand. */
static int opens_a_handle_job(log_wtx *w, void *arg) {
  MDB_dbi dbi;
  return log_aux_dbi(w->log, arg, 0, &dbi);
}

static void a_solo_job_asking_for_a_new_handle_is_refused_not_hung(void **state) {
  tu_fx *fx = *state;
  engram *log = fx->log = tu_open(fx->logdir, NULL);
  alarm(60);
  assert_int_equal(log_write_solo(api_log(log), opens_a_handle_job, "test.never"),
                   ENGRAM_EINTERNAL);
  assert_non_null(strstr(engram_errmsg(log), "open database test.never"));
  alarm(0);
  OK(log, engram_topic_create(log, "t", NULL));
  MDB_dbi dbi;
  assert_int_equal(log_aux_dbi(api_log(log), "test.never", 0, &dbi), 0);
}

int main(void) {
  tu_test_filter();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, tu_fx_teardown)
  const struct CMUnitTest tests[] = {
      T(the_runs_of_a_dropped_topic_are_parked_writing_only_their_first_pages),
      T(growth_takes_parked_pages_before_the_file_grows),
      T(backup_and_reclaim_leave_parked_pages_out),
      T(pages_freed_unwritten_lie_inside_the_file),
      T(a_file_short_only_of_free_pages_opens),
      T(a_crash_after_parking_keeps_every_acknowledged_event),
      T(a_solo_job_asking_for_a_new_handle_is_refused_not_hung),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
