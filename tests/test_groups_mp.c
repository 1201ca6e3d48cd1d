/* test_groups_mp.c — consumer processes sharing one group: four processes, each with its
 * own handle, drain 100k events with fetch 100 + ack_many and every event is acked
 * exactly once; and when one of them is killed with SIGKILL while it holds a batch, that
 * batch goes to the others once its ack_wait has passed, nothing is lost and nothing is
 * finished twice. The same with engram_ack_fetch (each batch settled with the next
 * fetch) in sync durability, the victim killed at an arbitrary point: no ack a returned
 * call made is lost.
 *
 * Every process records what it was delivered and which of its acks succeeded in a file
 * of its own; the parent checks the union. The log runs in async durability: each fetch
 * and ack is a commit, and what is tested here is the accounting between processes, not
 * what reaches the disk (kill -9 loses nothing in any mode; test_crash covers power
 * cuts), so the commits need not pay for a flush each. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"

#define CONSUMERS 4
#define BATCH 100

typedef struct fx {
  char *dir;
  char *logdir;
  engram_options opts;
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  tu_fx_dirs("groups-mp", &f->dir, &f->logdir);
  f->opts.durability = ENGRAM_DURABILITY_ASYNC;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  tu_fx_dirs_done(NULL, f->dir, f->logdir);
  free(f);
  return 0;
}

/* One line of a consumer's record file. */
typedef struct rec {
  uint64_t offset;
  uint32_t attempt;
  uint32_t acked;    /* 0: delivered, 1: acked successfully */
  int64_t before_ns; /* CLOCK_REALTIME when the fetch was called */
  int64_t after_ns;  /* ... and when it returned */
} rec;

/* Appends `n` events to "memory" and makes group "g"; closes the log again, so that no
 * handle is open when the consumers fork. */
static void prefill(fx *f, uint64_t n, uint64_t ack_wait_ms) {
  engram *log = tu_open(f->logdir, &f->opts);
  tu_topic(log, "memory", NULL);
  engram_group_config cfg = {.ack_wait_ms = ack_wait_ms};
  assert_int_equal(engram_group_create(log, "memory", "g", &cfg), 0);
  tu_events *data = tu_generated_events(1000, 42);
  engram_event evs[1000];
  for (size_t i = 0; i < 1000; i++) evs[i] = tu_event_of(&data->ev[i]);
  static uint64_t offs[1000];
  for (uint64_t done = 0; done < n; done += 1000) {
    size_t k = n - done < 1000 ? (size_t)(n - done) : 1000;
    int rc = engram_append_batch(log, "memory", evs, k, offs, NULL);
    if (rc) fprintf(stderr, "prefill: %s: %s\n", engram_errname(rc), engram_errmsg(log));
    assert_int_equal(rc, 0);
  }
  tu_events_free(data);
  engram_close(log);
}

typedef struct consumer {
  fx *f;
  int index;
  int victim;        /* stop after the first batch, report it, and wait to be killed */
  int ready_fd;      /* victim (and kill_after): written once it holds its batch */
  int ack_fetch;     /* settle each batch with the next fetch (engram_ack_fetch) */
  size_t kill_after; /* ack_fetch: after this many recorded acks, tell ready_fd and go on
                        until killed */
} consumer;

static char *rec_path(fx *f, int index) {
  char name[32];
  snprintf(name, sizeof name, "records-%d", index);
  return tu_join(f->dir, name);
}

static int write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n) {
    ssize_t w = write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

/* A consumer process: fetch up to 100, ack them all in one call, record everything;
 * stop when the group has nothing left (lag 0). Exit codes say what went wrong. */
static int consume(void *arg) {
  consumer *c = arg;
  char *path = rec_path(c->f, c->index);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
  free(path);
  if (fd < 0) return 10;
  engram *log = NULL;
  if (engram_open(c->f->logdir, &c->f->opts, &log)) return 11;
  char name[16];
  snprintf(name, sizeof name, "consumer-%d", c->index);
  rec recs[2 * BATCH];
  engram_ack_item items[BATCH];
  int codes[BATCH];
  int64_t deadline = tu_mono_ms() + 60000;
  for (;;) {
    if (tu_mono_ms() > deadline) return 12;
    engram_batch *b = NULL;
    int64_t at = tu_now_ns();
    int rc = engram_fetch(log, "memory", "g", name, BATCH, 100, &b);
    if (rc) {
      fprintf(stderr, "%s: fetch: %s: %s\n", name, engram_errname(rc), engram_errmsg(log));
      return 13;
    }
    if (b->count == 0) {
      engram_batch_free(b);
      engram_group_info i;
      if (engram_group_info_get(log, "memory", "g", &i)) return 14;
      if (i.lag == 0) break;
      continue;
    }
    int64_t after = tu_now_ns();
    size_t n = b->count, k = 0;
    for (size_t i = 0; i < n; i++) {
      items[i] = (engram_ack_item){.offset = b->events[i].offset, .attempt = b->events[i].attempt};
      recs[k++] = (rec){b->events[i].offset, b->events[i].attempt, 0, at, after};
    }
    engram_batch_free(b);
    if (c->victim) {
      /* Hold the batch, say so, and wait for SIGKILL. */
      if (write_all(fd, recs, k * sizeof *recs)) return 15;
      char one = 1;
      if (write_all(c->ready_fd, &one, 1)) return 16;
      for (;;) pause();
    }
    rc = engram_ack_many(log, "memory", "g", items, n, codes);
    if (rc && rc != ENGRAM_ESTALE && rc != ENGRAM_EALREADY) {
      fprintf(stderr, "%s: ack_many: %s: %s\n", name, engram_errname(rc), engram_errmsg(log));
      return 17;
    }
    for (size_t i = 0; i < n; i++)
      if (codes[i] == 0) recs[k++] = (rec){items[i].offset, items[i].attempt, 1, at, after};
    if (write_all(fd, recs, k * sizeof *recs)) return 18;
  }
  engram_close(log);
  close(fd);
  return 0;
}

/* A consumer process settling each batch with the fetch of the next: one
 * engram_ack_fetch per batch. An ack is recorded only after the call that made it
 * returned. When the call fails (an ack of an expired lease someone else took), the
 * batch is settled item by item with engram_ack_many instead. */
static int consume_ack_fetch(void *arg) {
  consumer *c = arg;
  char *path = rec_path(c->f, c->index);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
  free(path);
  if (fd < 0) return 10;
  engram *log = NULL;
  if (engram_open(c->f->logdir, &c->f->opts, &log)) return 11;
  char name[16];
  snprintf(name, sizeof name, "consumer-%d", c->index);
  rec recs[2 * BATCH];
  engram_ack_item items[BATCH];
  int codes[BATCH];
  size_t held = 0, recorded = 0;
  int told = 0;
  int64_t deadline = tu_mono_ms() + 60000;
  for (;;) {
    if (tu_mono_ms() > deadline) return 12;
    engram_batch *b = NULL;
    int64_t at = tu_now_ns();
    int rc = engram_ack_fetch(log, "memory", "g", name, items, held, codes, BATCH, 100, &b);
    size_t k = 0;
    if (rc == ENGRAM_ESTALE || rc == ENGRAM_EALREADY) {
      rc = engram_ack_many(log, "memory", "g", items, held, codes);
      if (rc && rc != ENGRAM_ESTALE && rc != ENGRAM_EALREADY) return 13;
      for (size_t i = 0; i < held; i++)
        if (codes[i] == 0) recs[k++] = (rec){items[i].offset, items[i].attempt, 1, at, at};
      held = 0;
      if (write_all(fd, recs, k * sizeof *recs)) return 18;
      recorded += k;
      continue;
    }
    if (rc) {
      fprintf(stderr, "%s: ack_fetch: %s: %s\n", name, engram_errname(rc), engram_errmsg(log));
      return 13;
    }
    int64_t after = tu_now_ns();
    for (size_t i = 0; i < held; i++)
      recs[k++] = (rec){items[i].offset, items[i].attempt, 1, at, after};
    held = b->count;
    for (size_t i = 0; i < held; i++) {
      items[i] = (engram_ack_item){.offset = b->events[i].offset, .attempt = b->events[i].attempt};
      recs[k++] = (rec){b->events[i].offset, b->events[i].attempt, 0, at, after};
    }
    engram_batch_free(b);
    if (write_all(fd, recs, k * sizeof *recs)) return 18;
    for (size_t i = 0; i < k; i++) recorded += recs[i].acked;
    if (c->kill_after && !told && recorded >= c->kill_after) {
      char one = 1;
      if (write_all(c->ready_fd, &one, 1)) return 16;
      told = 1; /* and go on: the kill lands wherever this process is */
    }
    if (held == 0 && !c->kill_after) { /* a victim goes on until it is killed */
      engram_group_info i;
      if (engram_group_info_get(log, "memory", "g", &i)) return 14;
      if (i.lag == 0) break;
    }
  }
  engram_close(log);
  close(fd);
  return 0;
}

static rec *read_recs(fx *f, int index, size_t *n) {
  char *path = rec_path(f, index);
  FILE *fp = fopen(path, "rb");
  free(path);
  assert_non_null(fp);
  fseek(fp, 0, SEEK_END);
  long size = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  rec *r = malloc((size_t)size + 1);
  *n = fread(r, sizeof *r, (size_t)size / sizeof *r, fp);
  fclose(fp);
  return r;
}

/* Sums successful acks per offset over every consumer's records. */
static void tally(fx *f, uint64_t n, unsigned char *acks, size_t *per_consumer) {
  memset(acks, 0, n + 1);
  for (int c = 0; c < CONSUMERS; c++) {
    size_t k;
    rec *r = read_recs(f, c, &k);
    per_consumer[c] = 0;
    for (size_t i = 0; i < k; i++) {
      assert_true(r[i].offset >= 1 && r[i].offset <= n);
      if (!r[i].acked) continue;
      per_consumer[c]++;
      if (acks[r[i].offset] < 255) acks[r[i].offset]++;
    }
    free(r);
  }
}

static void four_processes_drain_100k_events_and_each_is_acked_exactly_once(void **state) {
  fx *f = *state;
  const uint64_t n = 100000;
  prefill(f, n, 30000);
  consumer cs[CONSUMERS];
  pid_t pids[CONSUMERS];
  int64_t start = tu_mono_ms();
  for (int i = 0; i < CONSUMERS; i++) {
    cs[i] = (consumer){.f = f, .index = i};
    pids[i] = tu_spawn(consume, &cs[i]);
  }
  for (int i = 0; i < CONSUMERS; i++) {
    int rc = tu_wait(pids[i], 90000);
    if (rc) fprintf(stderr, "consumer %d ended with %d\n", i, rc);
    assert_int_equal(rc, 0);
  }
  int64_t took = tu_mono_ms() - start;
  unsigned char *acks = malloc(n + 1);
  size_t per[CONSUMERS];
  tally(f, n, acks, per);
  for (uint64_t o = 1; o <= n; o++) {
    if (acks[o] != 1)
      fprintf(stderr, "offset %llu acked %u times\n", (unsigned long long)o, acks[o]);
    assert_int_equal(acks[o], 1);
  }
  fprintf(stderr, "drained %llu events in %lld ms (%.0f/s); acks per consumer: %zu %zu %zu %zu\n",
          (unsigned long long)n, (long long)took, took ? n * 1000.0 / (double)took : 0.0, per[0],
          per[1], per[2], per[3]);
  free(acks);
  engram *log = tu_open(f->logdir, &f->opts);
  engram_group_info i;
  assert_int_equal(engram_group_info_get(log, "memory", "g", &i), 0);
  assert_int_equal(i.acked, n);
  assert_int_equal(i.delivered, n);
  assert_int_equal(i.redelivered, 0);
  assert_int_equal(i.lag, 0);
  assert_int_equal(i.in_flight, 0);
  engram_close(log);
}

static void a_consumer_killed_while_holding_a_batch_loses_nothing_and_finishes_nothing_twice(
    void **state) {
  fx *f = *state;
  const uint64_t n = 20000;
  const int64_t ack_wait_ms = 300;
  prefill(f, n, (uint64_t)ack_wait_ms);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  consumer cs[CONSUMERS];
  pid_t pids[CONSUMERS];
  /* The victim fetches first, so that it surely holds a batch before the others start. */
  cs[0] = (consumer){.f = f, .index = 0, .victim = 1, .ready_fd = fds[1]};
  pids[0] = tu_spawn(consume, &cs[0]);
  char one;
  ssize_t got;
  do got = read(fds[0], &one, 1);
  while (got < 0 && errno == EINTR);
  assert_int_equal(got, 1);
  for (int i = 1; i < CONSUMERS; i++) {
    cs[i] = (consumer){.f = f, .index = i};
    pids[i] = tu_spawn(consume, &cs[i]);
  }
  tu_sleep_ms(50); /* let the others get going, then kill the victim mid-run */
  assert_int_equal(kill(pids[0], SIGKILL), 0);
  assert_int_equal(tu_wait(pids[0], 10000), 128 + SIGKILL);
  for (int i = 1; i < CONSUMERS; i++) {
    int rc = tu_wait(pids[i], 90000);
    if (rc) fprintf(stderr, "consumer %d ended with %d\n", i, rc);
    assert_int_equal(rc, 0);
  }
  close(fds[0]);
  close(fds[1]);

  /* The victim's batch. */
  size_t nv;
  rec *victim = read_recs(f, 0, &nv);
  assert_int_equal(nv, BATCH);
  unsigned char *held = calloc(n + 1, 1);
  for (size_t i = 0; i < nv; i++) {
    assert_int_equal(victim[i].attempt, 1);
    assert_int_equal(victim[i].acked, 0);
    held[victim[i].offset] = 1;
  }
  int64_t held_at = victim[0].before_ns;
  free(victim);

  /* Every event acked exactly once; the victim's by someone else, on a later attempt,
   * after a redelivery that came no earlier than the end of the victim's lease (its
   * deadline is at least held_at + ack_wait; a fetch that redelivers returns after it). */
  unsigned char *acks = malloc(n + 1);
  size_t per[CONSUMERS];
  tally(f, n, acks, per);
  assert_int_equal(per[0], 0);
  unsigned char *again = calloc(n + 1, 1);
  size_t others = 0;
  for (int c = 1; c < CONSUMERS; c++) {
    size_t k;
    rec *r = read_recs(f, c, &k);
    for (size_t i = 0; i < k; i++) {
      if (held[r[i].offset]) assert_true(r[i].attempt >= 2);
      if (r[i].acked || r[i].attempt == 1) continue;
      if (!held[r[i].offset]) {
        others++; /* a survivor's own lease ran out under load: allowed, and still acked once */
        continue;
      }
      again[r[i].offset] = 1;
      assert_true(r[i].after_ns >= held_at + ack_wait_ms * 1000000);
    }
    free(r);
  }
  for (uint64_t o = 1; o <= n; o++) {
    if (acks[o] != 1)
      fprintf(stderr, "offset %llu acked %u times\n", (unsigned long long)o, acks[o]);
    assert_int_equal(acks[o], 1);
    if (held[o]) assert_true(again[o]);
  }
  if (others) fprintf(stderr, "%zu redeliveries of survivors' own expired leases\n", others);
  free(again);
  engram *log = tu_open(f->logdir, &f->opts);
  engram_group_info i;
  assert_int_equal(engram_group_info_get(log, "memory", "g", &i), 0);
  assert_int_equal(i.acked, n);
  assert_true(i.redelivered >= BATCH);
  assert_int_equal(i.delivered, n + i.redelivered);
  assert_int_equal(i.lag, 0);
  for (uint64_t o = 1; o <= n; o++) {
    if (!held[o]) continue;
    engram_status st;
    assert_int_equal(engram_status_get(log, "memory", "g", o, &st), 0);
    assert_int_equal(st.state, ENGRAM_STATE_DONE);
  }
  engram_close(log);
  free(acks);
  free(held);
}

/* A process draining with engram_ack_fetch in sync durability is killed with SIGKILL
 * at an arbitrary point of its run: every ack a call of it had returned is still there,
 * its unsettled batch goes to the others after its lease, and every event ends acked
 * exactly once (an ack the victim committed but had no time to record is acked by
 * nobody else: finished, never redelivered). */
static void a_consumer_killed_between_ack_fetch_calls_loses_no_ack_they_returned(void **state) {
  fx *f = *state;
  f->opts.durability = ENGRAM_DURABILITY_SYNC;
  const uint64_t n = 6000;
  prefill(f, n, 300);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  consumer cs[CONSUMERS];
  pid_t pids[CONSUMERS];
  cs[0] = (consumer){.f = f, .index = 0, .ack_fetch = 1, .kill_after = 500, .ready_fd = fds[1]};
  pids[0] = tu_spawn(consume_ack_fetch, &cs[0]);
  char one;
  ssize_t got;
  do got = read(fds[0], &one, 1);
  while (got < 0 && errno == EINTR);
  assert_int_equal(got, 1);
  assert_int_equal(kill(pids[0], SIGKILL), 0);
  assert_int_equal(tu_wait(pids[0], 10000), 128 + SIGKILL);
  close(fds[0]);
  close(fds[1]);

  /* Every ack the victim recorded (made by a call that returned) is there. */
  size_t nv;
  rec *victim = read_recs(f, 0, &nv);
  engram *log = tu_open(f->logdir, &f->opts);
  size_t victim_acks = 0;
  for (size_t i = 0; i < nv; i++) {
    if (!victim[i].acked) continue;
    victim_acks++;
    engram_status st;
    assert_int_equal(engram_status_get(log, "memory", "g", victim[i].offset, &st), 0);
    if (st.state != ENGRAM_STATE_DONE)
      fprintf(stderr, "offset %llu acked by the victim is %s\n",
              (unsigned long long)victim[i].offset, engram_state_name(st.state));
    assert_int_equal(st.state, ENGRAM_STATE_DONE);
  }
  assert_true(victim_acks >= 500);
  engram_group_info gi;
  assert_int_equal(engram_group_info_get(log, "memory", "g", &gi), 0);
  assert_true(gi.acked >= victim_acks);
  engram_close(log);
  free(victim);

  /* The others finish the drain the same way. */
  for (int i = 1; i < CONSUMERS; i++) {
    cs[i] = (consumer){.f = f, .index = i, .ack_fetch = 1};
    pids[i] = tu_spawn(consume_ack_fetch, &cs[i]);
  }
  for (int i = 1; i < CONSUMERS; i++) {
    int rc = tu_wait(pids[i], 90000);
    if (rc) fprintf(stderr, "consumer %d ended with %d\n", i, rc);
    assert_int_equal(rc, 0);
  }
  unsigned char *acks = malloc(n + 1);
  size_t per[CONSUMERS];
  tally(f, n, acks, per);
  log = tu_open(f->logdir, &f->opts);
  for (uint64_t o = 1; o <= n; o++) {
    if (acks[o] > 1)
      fprintf(stderr, "offset %llu acked %u times\n", (unsigned long long)o, acks[o]);
    assert_true(acks[o] <= 1);
    if (acks[o] == 0) { /* committed by the victim's last call, never recorded */
      engram_status st;
      assert_int_equal(engram_status_get(log, "memory", "g", o, &st), 0);
      assert_int_equal(st.state, ENGRAM_STATE_DONE);
    }
  }
  assert_int_equal(engram_group_info_get(log, "memory", "g", &gi), 0);
  assert_int_equal(gi.acked, n);
  assert_int_equal(gi.lag, 0);
  assert_int_equal(gi.in_flight, 0);
  engram_close(log);
  free(acks);
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(four_processes_drain_100k_events_and_each_is_acked_exactly_once),
      T(a_consumer_killed_while_holding_a_batch_loses_nothing_and_finishes_nothing_twice),
      T(a_consumer_killed_between_ack_fetch_calls_loses_no_ack_they_returned),
  };
  return cmocka_run_group_tests_name("groups_mp", tests, NULL, NULL);
}
