/* test_commit.c — the group commit path: every writer's call returns as soon as its own
 * write is durable, whoever leads; the commit statistics add up; dictionary training
 * happens beside the commit path, not in it. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"

typedef tu_fx fx;

static int setup(void **state) {
  *state = tu_fx_new("commit");
  return 0;
}

static uint64_t commits(engram *log) {
  engram_commit_stats st;
  assert_int_equal(engram_commit_stats_get(log, &st), 0);
  return st.commits;
}

#define WRITERS 8

typedef struct writer {
  engram *log;
  int id;
  _Atomic int *stop;
  _Atomic uint64_t appends; /* read by the main thread while the writer runs */
  uint64_t worst;           /* most commits seen between calling append and its return
                               (printed: it includes time the scheduler parks the thread) */
  int rc;
} writer;

static void *writer_main(void *arg) {
  writer *w = arg;
  char p[64];
  while (!*w->stop) {
    int n = snprintf(p, sizeof p, "writer-%d-%llu", w->id, (unsigned long long)w->appends);
    engram_event ev = {.type = "memory.saved", .payload = p, .payload_len = (size_t)n};
    uint64_t before = commits(w->log);
    w->rc = engram_append(w->log, "memory", &ev, NULL, NULL);
    uint64_t seen = commits(w->log) - before;
    if (w->rc) break;
    if (seen > w->worst) w->worst = seen;
    w->appends++;
  }
  return NULL;
}

/* The writer that happens to lead must not keep leading while others queue more: it
 * returns once its append is durable and another writer leads. Counted in commits, not
 * time, from queueing to release. Without the write-ahead file at most three: the commit
 * already running, the one carrying the append and the one whose flush makes it current.
 * With it (one flush per commit, paid after handing over) at most five: the commit
 * running, the batch committed while the one before it flushes, the one carrying the
 * append, one committed while that flushes, and one more when two waiting flushes take
 * their turns in the other order (the later one covers both). */
static void every_writer_returns_within_a_few_commits_while_others_keep_writing(void **state) {
  fx *f = *state;
  f->log = tu_open(f->logdir, NULL);
  tu_topic(f->log, "memory", NULL);
  _Atomic int stop = 0;
  writer w[WRITERS];
  pthread_t th[WRITERS];
  for (int i = 0; i < WRITERS; i++) {
    w[i] = (writer){.log = f->log, .id = i, .stop = &stop};
    pthread_create(&th[i], NULL, writer_main, &w[i]);
  }
  /* Until every writer has done a few appends, and enough commits happened that a
   * writer stuck leading would show. */
  for (int round = 0; round < 20000; round++) {
    int slow = 0;
    for (int i = 0; i < WRITERS; i++) slow |= w[i].appends < 5;
    if (!slow && commits(f->log) > 300) break;
    tu_sleep_ms(2);
  }
  stop = 1;
  for (int i = 0; i < WRITERS; i++) pthread_join(th[i], NULL);
  engram_commit_stats st;
  assert_int_equal(engram_commit_stats_get(f->log, &st), 0);
  print_message("%llu commits, longest wait %llu commits\n", (unsigned long long)st.commits,
                (unsigned long long)st.max_wait);
  /* Counted by the library from queueing to release (for a leader: to handing over), so
   * a writer the scheduler parks after its release does not count against it. */
  assert_true(st.max_wait <= (st.write_ahead ? 5u : 3u));
  for (int i = 0; i < WRITERS; i++) {
    uint64_t n = w[i].appends;
    print_message("writer %d: %llu appends, worst %llu commits\n", i, (unsigned long long)n,
                  (unsigned long long)w[i].worst);
    assert_int_equal(w[i].rc, 0);
    assert_true(w[i].appends >= 5);
  }
}

/* In async mode there is no flush to share, and a leader that committed whatever was
 * queued carried 1.6-1.7 writes per commit with eight blocking writers on two cores
 * (most commits carried one): it now lets the runnable writers queue first. */
static void eight_async_writers_share_commits(void **state) {
  fx *f = *state;
  engram_options o = {.durability = ENGRAM_DURABILITY_ASYNC};
  f->log = tu_open(f->logdir, &o);
  tu_topic(f->log, "memory", NULL);
  engram_commit_stats before, after;
  assert_int_equal(engram_commit_stats_get(f->log, &before), 0);
  _Atomic int stop = 0;
  writer w[WRITERS];
  pthread_t th[WRITERS];
  for (int i = 0; i < WRITERS; i++) {
    w[i] = (writer){.log = f->log, .id = i, .stop = &stop};
    pthread_create(&th[i], NULL, writer_main, &w[i]);
  }
  for (int round = 0; round < 5000 && commits(f->log) - before.commits < 2000; round++)
    tu_sleep_ms(2);
  stop = 1;
  uint64_t total = 0;
  for (int i = 0; i < WRITERS; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(w[i].rc, 0);
    total += w[i].appends;
  }
  assert_int_equal(engram_commit_stats_get(f->log, &after), 0);
  double per = (double)(after.jobs - before.jobs) / (double)(after.commits - before.commits);
  print_message("%llu appends in %llu commits: %.2f per commit\n", (unsigned long long)total,
                (unsigned long long)(after.commits - before.commits), per);
  assert_true(per >= 2.5);
}

/* Writers whose appends fail inside the commit, half done (a batch whose second event has
 * a given time ahead of the log's clock, found only there), beside appends that succeed. A batch
 * first runs all its jobs in one transaction and, when one fails, runs again with a nested
 * transaction per job: every good append is stored once, at dense offsets, and every bad one fails
 * alone with its own message. */
typedef struct mixed_writer {
  engram *log;
  int id, n, bad, good;
  int wrong; /* failures that were not the expected refusal */
} mixed_writer;

static void *mixed_main(void *arg) {
  mixed_writer *w = arg;
  char p[64];
  for (int k = 0; k < w->n; k++) {
    int n = snprintf(p, sizeof p, "m-%d-%d", w->id, k);
    engram_event ev = {.type = "memory.saved", .payload = p, .payload_len = (size_t)n};
    int refuse = (k + w->id) % 4 == 0;
    int rc;
    if (refuse) {
      /* A batch of two whose second event is refused after the first was put: the
       * transaction holds half of the job, which must not reach the log. */
      engram_event two[2] = {ev, ev};
      two[1].flags = ENGRAM_EVENT_TIMESTAMP;
      two[1].timestamp_ns = INT64_MAX / 2; /* centuries ahead */
      uint64_t offs[2];
      rc = engram_append_batch(w->log, "memory", two, 2, offs, NULL);
    } else {
      rc = engram_append(w->log, "memory", &ev, NULL, NULL);
    }
    if (refuse) {
      if (rc == ENGRAM_EINVAL && strstr(engram_errmsg(w->log), "ahead of the log's clock"))
        w->bad++;
      else
        w->wrong++;
    } else if (rc == 0) {
      w->good++;
    } else {
      w->wrong++;
    }
  }
  return NULL;
}

static void appends_failing_inside_a_shared_commit_fail_alone(void **state) {
  fx *f = *state;
  engram_options o = {.durability = ENGRAM_DURABILITY_ASYNC};
  f->log = tu_open(f->logdir, &o);
  tu_topic(f->log, "memory", NULL);
  mixed_writer w[WRITERS];
  pthread_t th[WRITERS];
  for (int i = 0; i < WRITERS; i++) {
    w[i] = (mixed_writer){.log = f->log, .id = i, .n = 400};
    pthread_create(&th[i], NULL, mixed_main, &w[i]);
  }
  int good = 0, bad = 0;
  for (int i = 0; i < WRITERS; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(w[i].wrong, 0);
    assert_int_equal(w[i].good + w[i].bad, 400);
    good += w[i].good;
    bad += w[i].bad;
  }
  assert_int_equal(bad, WRITERS * 100);
  engram_commit_stats st;
  assert_int_equal(engram_commit_stats_get(f->log, &st), 0);
  uint64_t multi = 0;
  for (int b = 1; b < 8; b++) multi += st.batch_hist[b];
  print_message("%d stored, %d refused; %llu of %llu commits carried several appends\n", good, bad,
                (unsigned long long)multi, (unsigned long long)st.commits);
  assert_true(multi > 0); /* batches of several ran, with refusals among them */
  /* Every good append once, at offsets 1..good. */
  static char seen[WRITERS][400];
  memset(seen, 0, sizeof seen);
  engram_batch *b = NULL;
  assert_int_equal(engram_read_range(f->log, "memory", 1, (size_t)good + 10, &b), 0);
  assert_int_equal(b->count, (size_t)good);
  for (size_t i = 0; i < b->count; i++) {
    assert_int_equal(b->events[i].offset, i + 1);
    char p[64];
    size_t n = b->events[i].payload_len < 63 ? b->events[i].payload_len : 63;
    memcpy(p, b->events[i].payload, n);
    p[n] = '\0';
    int id, k;
    assert_int_equal(sscanf(p, "m-%d-%d", &id, &k), 2);
    assert_true(id >= 0 && id < WRITERS && k >= 0 && k < 400);
    assert_int_not_equal((k + id) % 4, 0); /* no refused event stored */
    assert_int_equal(seen[id][k], 0);
    seen[id][k] = 1;
  }
  engram_batch_free(b);
}

static void commit_statistics_count_commits_writes_and_flushes(void **state) {
  fx *f = *state;
  f->log = tu_open(f->logdir, NULL);
  tu_topic(f->log, "memory", NULL);
  engram_commit_stats before, after;
  assert_int_equal(engram_commit_stats_get(f->log, &before), 0);
  engram_event ev = {.type = "memory.saved", .payload = "x", .payload_len = 1};
  for (int i = 0; i < 10; i++)
    assert_int_equal(engram_append(f->log, "memory", &ev, NULL, NULL), 0);
  assert_int_equal(engram_commit_stats_get(f->log, &after), 0);
  /* One writer that waits for each append: one commit of one write each. */
  assert_int_equal(after.commits - before.commits, 10);
  assert_int_equal(after.jobs - before.jobs, 10);
  assert_int_equal(after.batch_hist[0] - before.batch_hist[0], 10);
  assert_true(after.flushes - before.flushes >= 10);
  uint64_t sum = 0;
  for (int i = 0; i < 8; i++) sum += after.batch_hist[i];
  assert_int_equal(sum, after.commits);

  assert_int_equal(engram_commit_stats_get(f->log, NULL), ENGRAM_EINVAL);
  assert_int_equal(engram_commit_stats_get(NULL, &after), ENGRAM_EINVAL);
}

static uint64_t hist_total(const engram_duration_hist *h) {
  uint64_t n = 0;
  for (int i = 0; i < ENGRAM_DURATION_BUCKETS; i++) n += h->buckets[i];
  return n;
}

/* Each write, commit and flush lands in its duration histogram, once. */
static void duration_histograms_count_every_write_commit_and_flush(void **state) {
  fx *f = *state;
  f->log = tu_open(f->logdir, NULL);
  tu_topic(f->log, "memory", NULL);
  engram_commit_stats before, after;
  assert_int_equal(engram_commit_stats_get(f->log, &before), 0);
  engram_event ev = {.type = "memory.saved", .payload = "x", .payload_len = 1};
  for (int i = 0; i < 10; i++)
    assert_int_equal(engram_append(f->log, "memory", &ev, NULL, NULL), 0);
  assert_int_equal(engram_commit_stats_get(f->log, &after), 0);
  assert_int_equal(after.write_latency.count - before.write_latency.count, 10);
  assert_int_equal(after.commit_duration.count - before.commit_duration.count,
                   after.commits - before.commits);
  /* Sync mode, one writer: each commit's meta page waits for a flush of its own. */
  assert_int_equal(after.flush_duration.count - before.flush_duration.count, 10);
  const engram_duration_hist *hs[] = {&after.write_latency, &after.commit_duration,
                                      &after.flush_duration};
  for (int k = 0; k < 3; k++) {
    assert_int_equal(hist_total(hs[k]), hs[k]->count);
    assert_true(hs[k]->sum_ns > 0);
  }
  /* A write waits for its commit and the flush after it: never less than they took. */
  assert_true(after.write_latency.sum_ns - before.write_latency.sum_ns >=
              after.commit_duration.sum_ns - before.commit_duration.sum_ns);
}

/* Training a topic's dictionary takes 100-300 ms of CPU: the append that crosses
 * dict_train_after must not pay it. It returns before the dictionary exists (training
 * takes far longer than the moment between the return and the look), and the dictionary
 * follows in the background. */
static void the_append_that_crosses_dict_train_after_returns_before_the_training(void **state) {
  fx *f = *state;
  f->log = tu_open(f->logdir, NULL);
  engram_topic_config cfg = {.dict_train_after = 2000};
  tu_topic(f->log, "memory", &cfg);
  tu_events *e = tu_memory_events(2000);
  assert_int_equal(e->n, 2000);
  engram_event evs[100];
  uint64_t offs[100];
  for (size_t i = 0; i + 1 < e->n; i += 100) {
    size_t n = i + 100 < e->n ? 100 : e->n - 1 - i;
    for (size_t k = 0; k < n; k++) evs[k] = tu_event_of(&e->ev[i + k]);
    assert_int_equal(engram_append_batch(f->log, "memory", evs, n, offs, NULL), 0);
  }
  engram_topic_info info;
  assert_int_equal(engram_topic_info_get(f->log, "memory", &info), 0);
  assert_int_equal(info.count, 1999);
  assert_int_equal(info.dict_id, 0);
  engram_event last = tu_event_of(&e->ev[1999]);
  assert_int_equal(engram_append(f->log, "memory", &last, NULL, NULL), 0);
  assert_int_equal(engram_topic_info_get(f->log, "memory", &info), 0);
  assert_int_equal(info.dict_id, 0);
  for (int i = 0; i < 3000 && info.dict_id == 0; i++) {
    tu_sleep_ms(10);
    assert_int_equal(engram_topic_info_get(f->log, "memory", &info), 0);
  }
  assert_true(info.dict_id != 0);
  /* New appends use it and every event still reads back. */
  assert_int_equal(engram_append(f->log, "memory", &last, NULL, NULL), 0);
  engram_batch *b = NULL;
  assert_int_equal(engram_read_range(f->log, "memory", 1, 3000, &b), 0);
  assert_int_equal(b->count, 2001);
  for (size_t i = 0; i < 2000; i++) {
    assert_int_equal(b->events[i].payload_len, e->ev[i].len);
    assert_memory_equal(b->events[i].payload, e->ev[i].payload, e->ev[i].len);
  }
  engram_batch_free(b);
  tu_events_free(e);
}

/* A log closed while its dictionary trains closes cleanly and reopens. */
static void closing_while_a_dictionary_trains_is_clean(void **state) {
  fx *f = *state;
  f->log = tu_open(f->logdir, NULL);
  engram_topic_config cfg = {.dict_train_after = 1000};
  tu_topic(f->log, "memory", &cfg);
  tu_events *e = tu_memory_events(1000);
  engram_event evs[100];
  uint64_t offs[100];
  for (size_t i = 0; i < e->n; i += 100) {
    for (size_t k = 0; k < 100; k++) evs[k] = tu_event_of(&e->ev[i + k]);
    assert_int_equal(engram_append_batch(f->log, "memory", evs, 100, offs, NULL), 0);
  }
  engram_close(f->log);
  f->log = tu_open(f->logdir, NULL);
  engram_verify_report vr;
  assert_int_equal(engram_verify(f->log, &vr), 0);
  assert_int_equal(vr.records, 1000);
  assert_int_equal(vr.damaged, 0);
  tu_events_free(e);
}

/* A flush of the write-ahead file that fails (a disk that lost a write-back) fails the
 * append it was for, and no later record counts until a checkpoint has made data.mdb
 * durable as it is: the next commit makes one instead of appending to the file. Every
 * append is there after reopening, the failed one too (committed, not known durable). */
static void a_failed_flush_fails_its_append_and_the_next_commit_checkpoints(void **state) {
  fx *f = *state;
  setenv("ENGRAM_TEST_WAL_FAIL_FLUSH", "4", 1); /* read by the commit path per flush */
  f->log = tu_open(f->logdir, NULL);
  tu_topic(f->log, "memory", NULL);
  engram_commit_stats st;
  assert_int_equal(engram_commit_stats_get(f->log, &st), 0);
  if (!st.write_ahead) { /* this build commits without the file */
    unsetenv("ENGRAM_TEST_WAL_FAIL_FLUSH");
    skip();
  }
  uint64_t ckpt0 = st.checkpoints;
  int failed = -1;
  uint64_t ckpt_after_fail = 0;
  for (int i = 0; i < 10; i++) {
    char p[32];
    int n = snprintf(p, sizeof p, "event-%d", i);
    engram_event ev = {.type = "memory.saved", .payload = p, .payload_len = (size_t)n};
    int rc = engram_append(f->log, "memory", &ev, NULL, NULL);
    if (rc == ENGRAM_EIO) {
      assert_int_equal(failed, -1); /* one flush fails, one append with it */
      assert_non_null(strstr(engram_errmsg(f->log), "not known to be durable"));
      failed = i;
      assert_int_equal(engram_commit_stats_get(f->log, &st), 0);
      ckpt_after_fail = st.checkpoints;
    } else {
      assert_int_equal(rc, 0);
      if (failed >= 0 && i == failed + 1) {
        /* The commit right after the failure checkpointed. */
        assert_int_equal(engram_commit_stats_get(f->log, &st), 0);
        assert_true(st.checkpoints > ckpt_after_fail);
      }
    }
  }
  unsetenv("ENGRAM_TEST_WAL_FAIL_FLUSH");
  assert_true(failed >= 0 && failed < 9);
  assert_true(ckpt_after_fail >= ckpt0);
  engram_close(f->log);
  f->log = tu_open(f->logdir, NULL);
  engram_topic_info ti;
  assert_int_equal(engram_topic_info_get(f->log, "memory", &ti), 0);
  assert_int_equal(ti.count, 10);
}

/* Async mode with flushes of the write-ahead file that take long (a busy disk): LMDB
 * reuses no page freed after the handle's pin, which moves only when a flush ends, and
 * every page freed meanwhile stays in LMDB's cycle of free pages for good (it takes them
 * back oldest first, one commit's worth per commit). So once 4 MiB of records follow the
 * pin, the committing leader flushes and moves it itself, and data.mdb stays small: the
 * 22,698 commits below grew it to 65-82 MB; without that bound, to 164-218 MB. */
static void async_commits_do_not_outrun_slow_flushes_unbounded(void **state) {
  fx *f = *state;
  setenv("ENGRAM_TEST_WAL_FLUSH_STALL_MS", "100", 1); /* every flush waits 100 ms first */
  engram_options o = {.durability = ENGRAM_DURABILITY_ASYNC};
  f->log = tu_open(f->logdir, &o);
  tu_topic(f->log, "memory", NULL);
  engram_commit_stats st;
  assert_int_equal(engram_commit_stats_get(f->log, &st), 0);
  if (!st.write_ahead) { /* this build commits without the file */
    unsetenv("ENGRAM_TEST_WAL_FLUSH_STALL_MS");
    skip();
  }
  tu_events *e = tu_memory_events(0);
  const size_t rounds = 2;
  for (size_t r = 0; r < rounds; r++)
    for (size_t i = 0; i < e->n; i++) {
      engram_event ev = tu_event_of(&e->ev[i]);
      assert_int_equal(engram_append(f->log, "memory", &ev, NULL, NULL), 0);
    }
  char path[4200];
  snprintf(path, sizeof path, "%s/data.mdb", f->logdir);
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  print_message("data.mdb after %zu single-event async commits: %.1f MB\n", rounds * e->n,
                (double)sb.st_size / 1048576);
  assert_true(sb.st_size < (120ll << 20));
  engram_close(f->log);
  unsetenv("ENGRAM_TEST_WAL_FLUSH_STALL_MS");
  f->log = tu_open(f->logdir, NULL);
  engram_topic_info ti;
  assert_int_equal(engram_topic_info_get(f->log, "memory", &ti), 0);
  assert_int_equal(ti.count, rounds * e->n);
  tu_events_free(e);
}

int main(void) {
  tu_test_filter();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, tu_fx_teardown)
  const struct CMUnitTest tests[] = {
      T(every_writer_returns_within_a_few_commits_while_others_keep_writing),
      T(eight_async_writers_share_commits),
      T(appends_failing_inside_a_shared_commit_fail_alone),
      T(commit_statistics_count_commits_writes_and_flushes),
      T(duration_histograms_count_every_write_commit_and_flush),
      T(the_append_that_crosses_dict_train_after_returns_before_the_training),
      T(closing_while_a_dictionary_trains_is_clean),
      T(a_failed_flush_fails_its_append_and_the_next_commit_checkpoints),
      T(async_commits_do_not_outrun_slow_flushes_unbounded),
  };
  return cmocka_run_group_tests_name("commit", tests, NULL, NULL);
}
