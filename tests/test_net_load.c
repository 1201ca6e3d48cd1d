/* test_net_load.c — 32 remote producers and 8 remote consumers in one group for a few
 * seconds: every acknowledged append is stored exactly once and every event is finished
 * exactly once; then the same with the daemon killed (SIGKILL) and restarted mid-load:
 * nothing acknowledged is lost, clients reconnect by themselves and finish. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"
#include "test_net_daemon.h"

#define PRODUCERS 32
#define CONSUMERS 8
#define MAX_SEQ 200000 /* appends one producer can make in a run, bounded for the tables */
#define MAX_OFFSETS 2000000

#define OK(log, call) TU_OK(log, call)

enum { UNSENT = 0, ACKED = 1, UNKNOWN = 2 };

struct run;

struct producer {
  struct run *run;
  int id;
  int idem;       /* retries with an idempotency key until acknowledged */
  uint8_t *state; /* per sequence number: ACKED or UNKNOWN */
  int n;          /* sequence numbers used */
  int errors;     /* calls that failed (ECONN / ETIMEDOUT) */
  int bad;        /* unexpected failures */
  char why[256];
};

struct consumer {
  struct run *run;
  int id;
  int bad;
  char why[256];
  long fetched, acked;
};

struct run {
  const char *ep;
  volatile int stop_producers;
  volatile int stop_consumers;
  _Atomic uint8_t *acks; /* per offset: successful acks seen by consumers */
  struct producer p[PRODUCERS];
  struct consumer c[CONSUMERS];
};

static engram *client(struct run *r, uint32_t timeout_ms) {
  engram_connect_options o = {.timeout_ms = timeout_ms};
  for (int i = 0; i < 200; i++) {
    engram *log = NULL;
    if (engram_connect(r->ep, &o, &log) == 0) return log;
    tu_sleep_ms(50);
  }
  return NULL;
}

static int transient(int rc) { return rc == ENGRAM_ECONN || rc == ENGRAM_ETIMEDOUT; }

static void *producer_main(void *arg) {
  struct producer *p = arg;
  engram *log = client(p->run, 2000);
  if (!log) {
    p->bad++;
    snprintf(p->why, sizeof p->why, "cannot connect");
    return NULL;
  }
  char payload[64], key[64];
  while (!p->run->stop_producers && p->n < MAX_SEQ) {
    int seq = p->n++;
    snprintf(payload, sizeof payload, "{\"p\":%d,\"s\":%d}", p->id, seq);
    snprintf(key, sizeof key, "p%d-s%d", p->id, seq);
    engram_event e = {.type = "memory.saved", .payload = payload, .payload_len = strlen(payload)};
    if (p->idem) e.idempotency_key = key;
    for (;;) {
      int rc = engram_append(log, "memory", &e, NULL, NULL);
      if (rc == 0) {
        p->state[seq] = ACKED;
        break;
      }
      if (!transient(rc)) {
        p->bad++;
        snprintf(p->why, sizeof p->why, "append: %s: %s", engram_errname(rc), engram_errmsg(log));
        p->state[seq] = UNKNOWN;
        goto out;
      }
      p->errors++;
      if (!p->idem) {
        p->state[seq] = UNKNOWN; /* never sent twice: its outcome stays unknown */
        break;
      }
      tu_sleep_ms(20); /* an idempotency key makes the retry safe */
    }
  }
out:
  engram_close(log);
  return NULL;
}

static void *consumer_main(void *arg) {
  struct consumer *c = arg;
  struct run *r = c->run;
  engram *log = client(r, 2000);
  if (!log) {
    c->bad++;
    snprintf(c->why, sizeof c->why, "cannot connect");
    return NULL;
  }
  char name[32];
  snprintf(name, sizeof name, "worker-%d", c->id);
  engram_ack_item items[64];
  int codes[64];
  while (!r->stop_consumers) {
    engram_batch *b = NULL;
    int rc = engram_fetch(log, "memory", "workers", name, 64, 100, &b);
    if (rc) {
      if (!transient(rc)) {
        c->bad++;
        snprintf(c->why, sizeof c->why, "fetch: %s: %s", engram_errname(rc), engram_errmsg(log));
        break;
      }
      continue;
    }
    size_t n = b->count;
    for (size_t i = 0; i < n; i++)
      items[i] = (engram_ack_item){b->events[i].offset, b->events[i].attempt, NULL, 0};
    c->fetched += (long)n;
    engram_batch_free(b);
    /* Acks whose outcome is unknown are repeated: acks are idempotent. */
    while (n) {
      for (size_t i = 0; i < n; i++) codes[i] = 1;
      rc = engram_ack_many(log, "memory", "workers", items, n, codes);
      if (transient(rc) && !r->stop_consumers) {
        tu_sleep_ms(20);
        continue;
      }
      for (size_t i = 0; i < n; i++) {
        if (codes[i] == 0) {
          atomic_fetch_add(&r->acks[items[i].offset], 1);
          c->acked++;
        } else if (codes[i] != ENGRAM_EALREADY && codes[i] != ENGRAM_ESTALE && codes[i] != 1) {
          c->bad++;
          snprintf(c->why, sizeof c->why, "ack %llu: %s", (unsigned long long)items[i].offset,
                   engram_errname(codes[i]));
        }
      }
      break;
    }
  }
  engram_close(log);
  return NULL;
}

static void start_threads(struct run *r, pthread_t *pt, pthread_t *ct, int idem_half) {
  for (int i = 0; i < PRODUCERS; i++) {
    r->p[i] = (struct producer){.run = r, .id = i, .idem = idem_half && (i % 2 == 0)};
    r->p[i].state = calloc(MAX_SEQ, 1);
    pthread_create(&pt[i], NULL, producer_main, &r->p[i]);
  }
  for (int i = 0; i < CONSUMERS; i++) {
    r->c[i] = (struct consumer){.run = r, .id = i};
    pthread_create(&ct[i], NULL, consumer_main, &r->c[i]);
  }
}

/* Waits until the group has finished everything (or 30 s pass), then stops consumers. */
static void drain(struct run *r, engram *admin, pthread_t *ct) {
  int64_t end = tu_mono_ms() + 30000;
  engram_group_info gi;
  while (tu_mono_ms() < end) {
    if (engram_group_info_get(admin, "memory", "workers", &gi) == 0 && gi.lag == 0 &&
        gi.in_flight == 0 && gi.retrying == 0)
      break;
    tu_sleep_ms(100);
  }
  r->stop_consumers = 1;
  for (int i = 0; i < CONSUMERS; i++) pthread_join(ct[i], NULL);
}

/* The checks shared by both runs. Returns the number of events stored. */
static uint64_t check(struct run *r, engram *admin, int killed) {
  for (int i = 0; i < PRODUCERS; i++) {
    if (r->p[i].bad) fprintf(stderr, "producer %d: %s\n", i, r->p[i].why);
    assert_int_equal(r->p[i].bad, 0);
  }
  for (int i = 0; i < CONSUMERS; i++) {
    if (r->c[i].bad) fprintf(stderr, "consumer %d: %s\n", i, r->c[i].why);
    assert_int_equal(r->c[i].bad, 0);
  }
  /* Every stored event, by (producer, sequence). */
  uint8_t *seen[PRODUCERS];
  for (int i = 0; i < PRODUCERS; i++) seen[i] = calloc(MAX_SEQ, 1);
  uint64_t stored = 0, from = 1;
  for (;;) {
    engram_batch *b = NULL;
    OK(admin, engram_read_range(admin, "memory", from, 50000, &b));
    if (b->count == 0) {
      engram_batch_free(b);
      break;
    }
    for (size_t i = 0; i < b->count; i++) {
      int p = -1, s = -1;
      assert_int_equal(sscanf(b->events[i].payload, "{\"p\":%d,\"s\":%d}", &p, &s), 2);
      assert_true(p >= 0 && p < PRODUCERS && s >= 0 && s < MAX_SEQ);
      seen[p][s]++;
      assert_true(seen[p][s] == 1); /* no event stored twice */
      from = b->events[i].offset + 1;
      stored++;
    }
    engram_batch_free(b);
  }
  uint64_t acked = 0, unknown = 0, unknown_stored = 0;
  for (int i = 0; i < PRODUCERS; i++) {
    for (int s = 0; s < r->p[i].n; s++) {
      if (r->p[i].state[s] == ACKED) {
        acked++;
        if (seen[i][s] != 1)
          fprintf(stderr, "producer %d seq %d acknowledged but stored %d times\n", i, s,
                  seen[i][s]);
        assert_int_equal(seen[i][s], 1);
      } else if (r->p[i].state[s] == UNKNOWN) {
        unknown++;
        unknown_stored += seen[i][s];
        assert_false(r->p[i].idem); /* idempotent producers retried until acknowledged */
      }
    }
    free(seen[i]);
  }
  assert_int_equal(stored, acked + unknown_stored);

  /* Every event finished exactly once: the group acked each offset once, and no consumer
   * ever had two successful acks of one offset. */
  engram_group_info gi;
  OK(admin, engram_group_info_get(admin, "memory", "workers", &gi));
  engram_topic_info ti;
  OK(admin, engram_topic_info_get(admin, "memory", &ti));
  assert_int_equal(ti.count, stored);
  assert_int_equal(gi.floor, ti.head_offset);
  assert_int_equal(gi.acked, ti.head_offset);
  assert_int_equal(gi.dead, 0);
  uint64_t once = 0;
  for (uint64_t o = 1; o <= ti.head_offset; o++) {
    assert_true(r->acks[o] <= 1);
    once += r->acks[o];
  }
  if (!killed) {
    assert_int_equal(once, ti.head_offset);
    assert_int_equal(gi.redelivered, 0); /* no lease expired: ack_wait is long */
  }
  engram_verify_report rep;
  OK(admin, engram_verify(admin, &rep));
  assert_int_equal(rep.damaged, 0);
  long errs = 0;
  for (int i = 0; i < PRODUCERS; i++) errs += r->p[i].errors;
  fprintf(stderr,
          "%llu events stored (%llu acknowledged, %llu of unknown outcome, %llu of those stored), "
          "%ld failed calls, %llu redelivered\n",
          (unsigned long long)stored, (unsigned long long)acked, (unsigned long long)unknown,
          (unsigned long long)unknown_stored, errs, (unsigned long long)gi.redelivered);
  for (int i = 0; i < PRODUCERS; i++) free(r->p[i].state);
  return stored;
}

static void setup_log(td *d, engram **admin, uint64_t ack_wait_ms) {
  td_start(d);
  engram_connect_options o = {.timeout_ms = 10000};
  *admin = td_connect_within(d->ep, 5000, &o);
  assert_non_null(*admin);
  OK(*admin, engram_topic_create(*admin, "memory", NULL));
  engram_group_config g = {.ack_wait_ms = ack_wait_ms, .max_deliver = 100};
  OK(*admin, engram_group_create(*admin, "memory", "workers", &g));
}

static void load_run(engram_durability durability, int64_t produce_ms) {
  td d;
  td_init(&d, "net-load");
  d.o.durability = durability;
  engram *admin;
  setup_log(&d, &admin, 60000);
  struct run *r = calloc(1, sizeof *r);
  r->ep = d.ep;
  r->acks = calloc(MAX_OFFSETS, 1);
  pthread_t pt[PRODUCERS], ct[CONSUMERS];
  int64_t t0 = tu_mono_ms();
  start_threads(r, pt, ct, 0);
  tu_sleep_ms(produce_ms);
  r->stop_producers = 1;
  for (int i = 0; i < PRODUCERS; i++) pthread_join(pt[i], NULL);
  int64_t t1 = tu_mono_ms();
  drain(r, admin, ct);
  uint64_t n = check(r, admin, 0);
  fprintf(stderr, "%.0f appends/s from %d remote clients (%s durability), drained %.1f s after\n",
          (double)n * 1000.0 / (double)(t1 - t0), PRODUCERS,
          durability == ENGRAM_DURABILITY_SYNC ? "sync" : "async",
          (double)(tu_mono_ms() - t1) / 1000.0);
  assert_true(n > 100);
  engram_close(admin);
  free((void *)r->acks);
  free(r);
  assert_int_equal(td_stop(&d), 0);
  td_done(&d);
}

static void thirty_two_producers_and_eight_consumers_lose_and_repeat_nothing(void **state) {
  (void)state;
  load_run(ENGRAM_DURABILITY_SYNC, 3000);
}

/* In async mode the daemon's main thread runs the appends and the fetches and acks of a
 * burst itself when no worker is busy: the same guarantees. */
static void the_same_load_in_async_mode_loses_and_repeats_nothing(void **state) {
  (void)state;
  load_run(ENGRAM_DURABILITY_ASYNC, 2000);
}

static void a_daemon_killed_mid_load_and_restarted_loses_nothing_acknowledged(void **state) {
  (void)state;
  td d;
  td_init(&d, "net-kill");
  engram *admin;
  setup_log(&d, &admin, 1000); /* leases lost with the daemon come back after a second */
  struct run *r = calloc(1, sizeof *r);
  r->ep = d.ep;
  r->acks = calloc(MAX_OFFSETS, 1);
  pthread_t pt[PRODUCERS], ct[CONSUMERS];
  start_threads(r, pt, ct, 1);
  tu_sleep_ms(1500);
  td_kill(&d);
  tu_sleep_ms(300);
  td_start(&d);
  tu_sleep_ms(1500);
  r->stop_producers = 1;
  for (int i = 0; i < PRODUCERS; i++) pthread_join(pt[i], NULL);
  drain(r, admin, ct);
  check(r, admin, 1);
  engram_close(admin);
  free((void *)r->acks);
  free(r);
  assert_int_equal(td_stop(&d), 0);
  td_done(&d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(thirty_two_producers_and_eight_consumers_lose_and_repeat_nothing),
      cmocka_unit_test(the_same_load_in_async_mode_loses_and_repeats_nothing),
      cmocka_unit_test(a_daemon_killed_mid_load_and_restarted_loses_nothing_acknowledged),
  };
  return cmocka_run_group_tests_name("net_load", tests, NULL, NULL);
}
