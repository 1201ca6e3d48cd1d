/* test_groups_model.c — random sequences of appends, fetches, acks, nacks, rejects,
 * extends, cancels, redrives, ack-and-fetches (all or nothing), clock moves and reopens
 * against one consumer group,
 * checked step by step against a small in-memory model of the group's rules.
 *
 * The model keeps, per event, its state, attempt, due time (lease deadline or retry
 * time), holder and lease: a fetch must deliver only what the model says is deliverable
 * (due retries and expired leases first, in due order, whole leases or the head of one;
 * then new events in offset order), every settle call must return exactly the code the
 * model predicts (ESTALE exactly when the quoted attempt is older), and the group's
 * counters and every event's status must match the model after every step. The one
 * thing the model cannot predict is the order of leases that fall due at the same
 * instant, and so which of several expired last leases a fetch that fills up reaches:
 * it checks the order constraints and asks status for those few events.
 *
 * The log runs in async durability: durability is not what is tested here, and each
 * reopen flushes anyway. ENGRAM_TEST_SEED=N runs only sequence N; ENGRAM_MODEL_SEQS
 * changes the number of sequences. A second run does the same with a key-ordered group,
 * the model following each key's owner and the events blocked behind it. */
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

#define T0 1700000000000000000LL
#define MS 1000000LL
#define MAXEV 1024
#define NCONS 3

enum { M_NEW, M_LEASED, M_WAITING, M_DONE, M_DEAD, M_BLOCKED };
#define NKEYS 3 /* key-ordered runs: events have key 1..NKEYS or none (0) */

typedef struct mev {
  int state;
  int filtered; /* type outside the group's filter: never delivered */
  int skip;     /* M_NEW: cancelled ahead of the cursor */
  uint32_t attempt;
  int64_t due;  /* M_LEASED: lease deadline; M_WAITING: when due */
  int lid;      /* the lease it belongs to (M_LEASED, M_WAITING) */
  int consumer; /* last holder */
  int64_t ts;   /* append time */
  int acks;     /* successful acks: never more than one */
  int key;      /* 0 = none */
  int keyless;  /* redriven: delivered without its key's order */
} mev;

typedef struct model {
  mev ev[MAXEV + 2]; /* by offset */
  uint64_t head, next;
  uint64_t acked, delivered, redelivered;
  int lids;
  uint64_t ack_wait;
  uint32_t max_deliver;
  uint64_t backoff[3];
  size_t n_backoff;
  int keyed;                  /* the group is key-ordered */
  uint64_t holder[NKEYS + 1]; /* key-ordered: the event that owns each key, 0 = free */
} model;

/* One log per test for all its sequences, each sequence on a topic of its own that it
 * drops at the end: creating a log costs flushes that would dominate the run. */
static struct {
  char *dir, *logdir;
  engram *log;
  engram_options opts;
  tu_clock clock;
} env;

typedef struct run {
  engram *log; /* env.log */
  char topic[32];
  model m;
  uint64_t rng;
  unsigned seq;
  int step;
  const char *op; /* what the step does, for failure messages */
} run;

static const char *cons_name[NCONS] = {"c0", "c1", "c2"};
static const char *key_name[NKEYS + 1] = {NULL, "mem-1", "mem-2", "mem-3"};

/* How often each interesting case came up over all sequences: printed at the end so a
 * change that stops exercising one shows. */
static struct {
  unsigned long stale, already, dead_code, notleased, never_issued, settled, busy;
  unsigned long split_fetch, died_on_expiry, survived_expiry, due_delivered, reopen, redriven;
  unsigned long blocked, handed_over;
  unsigned long ack_fetch_ok, ack_fetch_refused; /* engram_ack_fetch applied / refused whole */
} cov;

#define CHECK(r, cond, ...) check_at(r, (cond), #cond, __LINE__, __VA_ARGS__)
static void check_at(run *r, int ok, const char *what, int line, const char *fmt, ...) {
  if (ok) return;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "sequence %u step %d (%s), line %d: %s: %s [last message: %s]\n", r->seq, r->step,
          r->op ? r->op : "", line, what, buf, r->log ? engram_errmsg(r->log) : "");
  fail();
}

static uint64_t rnd(run *r, uint64_t n) { return n ? tu_rand(&r->rng) % n : 0; }
static int64_t now(run *r) {
  (void)r;
  return tu_clock_ns(&env.clock);
}
static mev *E(run *r, uint64_t off) { return &r->m.ev[off]; }

static int is_due(run *r, const mev *e) {
  return (e->state == M_LEASED || e->state == M_WAITING) && e->due <= now(r);
}
static int dies_on_expiry(run *r, const mev *e) {
  return e->state == M_LEASED && e->due <= now(r) && e->attempt >= r->m.max_deliver;
}

static void reopen(run *r) {
  engram_close(env.log);
  env.log = r->log = NULL;
  int rc = engram_open(env.logdir, &env.opts, &env.log);
  CHECK(r, rc == 0, "open: %s", engram_errname(rc));
  r->log = env.log;
}

/* ---------------------------------------------------------------------------------
 * Steps.
 * ------------------------------------------------------------------------------ */
static void do_append(run *r) {
  size_t n = 1 + rnd(r, 5);
  if (r->m.head + n > MAXEV) return;
  engram_event evs[5];
  uint64_t offs[5];
  int keys[5];
  for (size_t i = 0; i < n; i++) {
    int filtered = rnd(r, 10) == 0;
    keys[i] = r->m.keyed ? (int)rnd(r, NKEYS + 1) : 0;
    evs[i] = (engram_event){.type = filtered ? "audit.login" : "memory.saved",
                            .key = key_name[keys[i]],
                            .payload = "{}",
                            .payload_len = 2};
  }
  int rc = engram_append_batch(r->log, r->topic, evs, n, offs, NULL);
  CHECK(r, rc == 0, "append: %s", engram_errname(rc));
  for (size_t i = 0; i < n; i++) {
    uint64_t o = ++r->m.head;
    CHECK(r, offs[i] == o, "append offset %llu, model %llu", (unsigned long long)offs[i],
          (unsigned long long)o);
    *E(r, o) =
        (mev){.state = M_NEW, .filtered = evs[i].type[0] == 'a', .ts = now(r), .key = keys[i]};
  }
}

/* Key-ordered groups: event o finished; when it owned its key, the key passes to the
 * first event blocked behind it, which becomes due now. */
static void release(run *r, uint64_t o) {
  model *m = &r->m;
  mev *e = E(r, o);
  if (!m->keyed || !e->key || e->keyless || m->holder[e->key] != o) return;
  m->holder[e->key] = 0;
  for (uint64_t p = 1; p <= m->head; p++) {
    mev *x = E(r, p);
    if (x->state != M_BLOCKED || x->key != e->key) continue;
    x->state = M_WAITING;
    x->due = now(r);
    x->lid = ++m->lids;
    m->holder[e->key] = p;
    cov.handed_over++;
    break;
  }
}

/* Key order as the model sees it: per key at most one event leased or waiting to be
 * retried, the key's owner, below every event blocked behind it. */
static void check_keys(run *r) {
  model *m = &r->m;
  if (!m->keyed) return;
  for (int k = 1; k <= NKEYS; k++) {
    uint64_t active = 0;
    for (uint64_t o = 1; o <= m->head; o++) {
      const mev *e = E(r, o);
      if (e->key != k || e->keyless || e->filtered) continue;
      if (e->state == M_LEASED || e->state == M_WAITING) {
        CHECK(r, !active, "key %d: offsets %llu and %llu both active", k,
              (unsigned long long)active, (unsigned long long)o);
        active = o;
      }
      if (e->state == M_BLOCKED)
        CHECK(r, m->holder[k] && m->holder[k] < o, "key %d: %llu blocked without an owner below it",
              k, (unsigned long long)o);
    }
    CHECK(r, active == m->holder[k], "key %d: owner %llu, active %llu", k,
          (unsigned long long)m->holder[k], (unsigned long long)active);
  }
}

/* The fetch, checked against the model, which it then updates. With acks (n_acks > 0)
 * it is an engram_ack_fetch whose acks the model has applied already and which must all
 * succeed. */
static void do_fetch_acking(run *r, int consumer, size_t max, const engram_ack_item *acks,
                            size_t n_acks) {
  model *m = &r->m;
  static mev before[MAXEV + 2];
  memcpy(before, m->ev, sizeof(mev) * (m->head + 1));
  size_t n_due = 0, n_new_avail = 0;
  uint64_t holder[NKEYS + 1];
  memcpy(holder, m->holder, sizeof holder);
  for (uint64_t o = 1; o <= m->head; o++) {
    const mev *e = &before[o];
    if (is_due(r, e) && !dies_on_expiry(r, e)) n_due++;
    if (e->state != M_NEW || e->filtered || e->skip) continue;
    if (m->keyed && e->key) {
      if (holder[e->key]) continue; /* it will wait behind its key */
      holder[e->key] = o;
    }
    n_new_avail++;
  }
  engram_batch *b = NULL;
  int codes[8] = {0};
  int rc = n_acks ? engram_ack_fetch(r->log, r->topic, "g", cons_name[consumer], acks, n_acks,
                                     codes, max, 0, &b)
                  : engram_fetch(r->log, r->topic, "g", cons_name[consumer], max, 0, &b);
  CHECK(r, rc == 0, "fetch: %s", engram_errname(rc));
  for (size_t i = 0; i < n_acks; i++)
    CHECK(r, codes[i] == 0, "ack-fetch item %zu: %d", i, codes[i]);
  size_t want = n_due + n_new_avail < max ? n_due + n_new_avail : max;
  CHECK(r, b->count == want, "fetch max %zu got %zu events, model says %zu (%zu due, %zu new)", max,
        b->count, want, n_due, n_new_avail);

  /* What was delivered, and from where. */
  static int seen[MAXEV + 2];
  memset(seen, 0, sizeof(int) * (m->head + 1));
  size_t got_due = 0;
  int in_new = 0, prev_lid = -1;
  int64_t max_due = INT64_MIN;
  uint64_t prev_off = 0;
  int *lid_done = calloc((size_t)m->lids + 1, sizeof(int));
  for (size_t i = 0; i < b->count; i++) {
    uint64_t o = b->events[i].offset;
    CHECK(r, o >= 1 && o <= m->head, "fetched offset %llu beyond head", (unsigned long long)o);
    CHECK(r, !seen[o], "offset %llu twice in one batch", (unsigned long long)o);
    seen[o] = 1;
    const mev *e = &before[o];
    if (e->state == M_NEW) {
      CHECK(r, !e->filtered && !e->skip, "offset %llu delivered though filtered or cancelled",
            (unsigned long long)o);
      CHECK(r, b->events[i].attempt == 1, "new offset %llu with attempt %u", (unsigned long long)o,
            b->events[i].attempt);
      CHECK(r, !in_new || o > prev_off, "new events out of order at %llu", (unsigned long long)o);
      in_new = 1;
      prev_off = o;
      continue;
    }
    CHECK(r, !in_new, "due offset %llu after new events", (unsigned long long)o);
    CHECK(r, is_due(r, e) && !dies_on_expiry(r, e),
          "offset %llu not deliverable (state %d attempt %u due %+lld ms)", (unsigned long long)o,
          e->state, e->attempt, (long long)((e->due - now(r)) / MS));
    CHECK(r, b->events[i].attempt == e->attempt + 1, "offset %llu attempt %u, model %u",
          (unsigned long long)o, b->events[i].attempt, e->attempt + 1);
    CHECK(r, e->due >= max_due, "offset %llu due before an earlier delivered one",
          (unsigned long long)o);
    max_due = e->due;
    if (e->lid != prev_lid) {
      CHECK(r, !lid_done[e->lid], "lease of offset %llu delivered in two pieces",
            (unsigned long long)o);
      if (prev_lid >= 0) lid_done[prev_lid] = 1;
      prev_off = 0;
    }
    CHECK(r, o > prev_off, "offsets of one lease out of order at %llu", (unsigned long long)o);
    prev_lid = e->lid;
    prev_off = o;
    got_due++;
  }
  /* Due events left behind: only when the batch filled up, none due earlier than what
   * was taken, and of a lease only its tail. */
  int partial_lid = -1;
  for (uint64_t o = 1; o <= m->head; o++) {
    const mev *e = &before[o];
    if (seen[o] || !is_due(r, e) || dies_on_expiry(r, e)) continue;
    CHECK(r, got_due == max, "due offset %llu left behind by a fetch that did not fill up",
          (unsigned long long)o);
    CHECK(r, e->due >= max_due, "due offset %llu left behind for a later one",
          (unsigned long long)o);
    for (uint64_t p = o + 1; p <= m->head; p++)
      CHECK(r, !(seen[p] && before[p].state != M_NEW && before[p].lid == e->lid),
            "lease split keeps %llu but delivers later %llu", (unsigned long long)o,
            (unsigned long long)p);
    for (uint64_t p = 1; p < o; p++)
      if (seen[p] && before[p].state != M_NEW && before[p].lid == e->lid) {
        CHECK(r, partial_lid < 0 || partial_lid == e->lid, "two leases split by one fetch");
        partial_lid = e->lid;
      }
  }
  /* New events: simulate the cursor. */
  size_t room = max - got_due;
  if (room > 0 && m->next <= m->head) {
    uint64_t o = m->next;
    for (; o <= m->head && room > 0; o++) {
      mev *e = E(r, o);
      if (e->skip) {
        e->state = M_DONE; /* the cursor passed its cancel marker */
        e->skip = 0;
        continue;
      }
      if (e->filtered) continue;
      if (m->keyed && e->key && m->holder[e->key]) {
        CHECK(r, !seen[o], "offset %llu delivered while %llu holds its key", (unsigned long long)o,
              (unsigned long long)m->holder[e->key]);
        e->state = M_BLOCKED;
        e->lid = ++m->lids;
        cov.blocked++;
        continue;
      }
      CHECK(r, seen[o], "new offset %llu not delivered in cursor order", (unsigned long long)o);
      if (m->keyed && e->key) m->holder[e->key] = o;
      room--;
    }
    m->next = o;
  }
  /* Expired last leases: dead if the fetch reached them, which it does unless it filled
   * up first; a lease's events share their fate. */
  int *lid_fate = calloc((size_t)m->lids + 1, sizeof(int));
  for (uint64_t o = 1; o <= m->head; o++) {
    const mev *e = &before[o];
    if (!dies_on_expiry(r, e)) continue;
    engram_status st;
    rc = engram_status_get(r->log, r->topic, "g", o, &st);
    CHECK(r, rc == 0, "status: %s", engram_errname(rc));
    int dead = st.state == ENGRAM_STATE_DEAD;
    CHECK(r, dead || st.state == ENGRAM_STATE_RETRYING, "expired last lease of %llu is %s",
          (unsigned long long)o, engram_state_name(st.state));
    if (!dead) {
      CHECK(r, got_due == max, "expired last lease of %llu survived a fetch that did not fill up",
            (unsigned long long)o);
      CHECK(r, e->due >= max_due, "expired last lease of %llu skipped for a later due one",
            (unsigned long long)o);
    }
    int fate = dead ? 1 : 2;
    CHECK(r, !lid_fate[e->lid] || lid_fate[e->lid] == fate, "a lease's events died apart");
    lid_fate[e->lid] = fate;
    if (dead) E(r, o)->state = M_DEAD;
    if (dead) release(r, o);
    if (dead)
      cov.died_on_expiry++;
    else
      cov.survived_expiry++;
  }
  if (partial_lid >= 0) cov.split_fetch++;
  cov.due_delivered += got_due;
  /* Apply the deliveries. */
  int64_t deadline = now(r) + (int64_t)m->ack_wait * MS;
  int new_lid = 0, tail_of = -1, tail_lid = 0;
  if (partial_lid >= 0) {
    tail_of = partial_lid;
    tail_lid = ++m->lids;
  }
  for (size_t i = 0; i < b->count; i++) {
    uint64_t o = b->events[i].offset;
    mev *e = E(r, o);
    if (before[o].state == M_NEW) {
      if (!new_lid) new_lid = ++m->lids;
      e->lid = new_lid;
    }
    e->state = M_LEASED;
    e->attempt = b->events[i].attempt;
    e->due = deadline;
    e->consumer = consumer;
    m->delivered++;
    if (e->attempt > 1) m->redelivered++;
  }
  if (tail_of >= 0)
    for (uint64_t o = 1; o <= m->head; o++)
      if (!seen[o] && before[o].lid == tail_of &&
          (before[o].state == M_LEASED || before[o].state == M_WAITING))
        E(r, o)->lid = tail_lid;
  engram_batch_free(b);
  free(lid_done);
  free(lid_fate);
}

/* The code a settle call (ack, nack, reject, extend) must get, per the model. */
static int settle_code(run *r, uint64_t o, uint32_t quoted) {
  if (o == 0 || o > r->m.head) return ENGRAM_ENOTFOUND;
  const mev *e = E(r, o);
  if (e->filtered) return ENGRAM_ENOTLEASED;
  switch (e->state) {
    case M_NEW:
      return ENGRAM_ENOTLEASED;
    case M_DONE:
      return ENGRAM_EALREADY;
    case M_DEAD:
      return ENGRAM_EDEAD;
  }
  if (quoted && quoted < e->attempt) return ENGRAM_ESTALE;
  if (e->state == M_WAITING || e->state == M_BLOCKED) return ENGRAM_ENOTLEASED;
  if (quoted > e->attempt) return ENGRAM_EINVAL;
  return 0;
}

/* An offset worth settling: mostly leased or waiting ones, sometimes anything. */
static uint64_t pick_offset(run *r) {
  model *m = &r->m;
  if (!m->head) return rnd(r, 3);
  int want = rnd(r, 10) < 6 ? M_LEASED : rnd(r, 2) ? M_WAITING : -1;
  if (want >= 0) {
    uint64_t start = 1 + rnd(r, m->head);
    for (uint64_t k = 0; k < m->head; k++) {
      uint64_t o = 1 + (start - 1 + k) % m->head;
      if (E(r, o)->state == want && !E(r, o)->filtered) return o;
    }
  }
  return rnd(r, 20) == 0 ? m->head + 1 + rnd(r, 2) : 1 + rnd(r, m->head);
}

/* The attempt a worker quotes: right, stale, zero, or one never delivered. */
static uint32_t pick_attempt(run *r, uint64_t o) {
  uint32_t a = o >= 1 && o <= r->m.head ? E(r, o)->attempt : 1;
  switch (rnd(r, 10)) {
    case 0:
      return 0;
    case 1:
    case 2:
      return a > 1 ? 1 + (uint32_t)rnd(r, a - 1) : a;
    case 3:
      return a + 1;
    default:
      return a;
  }
}

static void count_code(int rc) {
  switch (rc) {
    case 0:
      cov.settled++;
      break;
    case ENGRAM_ESTALE:
      cov.stale++;
      break;
    case ENGRAM_EALREADY:
      cov.already++;
      break;
    case ENGRAM_EDEAD:
      cov.dead_code++;
      break;
    case ENGRAM_ENOTLEASED:
      cov.notleased++;
      break;
    case ENGRAM_EINVAL:
      cov.never_issued++;
      break;
    case ENGRAM_EBUSY:
      cov.busy++;
      break;
  }
}

static void expect_code(run *r, int rc, int want, uint64_t o, uint32_t quoted) {
  count_code(rc);
  const mev *e = o >= 1 && o <= r->m.head ? E(r, o) : NULL;
  CHECK(r, rc == want,
        "offset %llu quoting attempt %u: got %s, model says %s (state %d attempt %u)",
        (unsigned long long)o, quoted, engram_errname(rc), engram_errname(want), e ? e->state : -1,
        e ? e->attempt : 0);
}

static void ack_applied(run *r, uint64_t o) {
  mev *e = E(r, o);
  if (r->m.keyed && e->key && !e->keyless)
    for (uint64_t p = 1; p < o; p++) {
      const mev *x = E(r, p);
      CHECK(
          r,
          x->key != e->key || x->keyless || x->filtered || x->state == M_DONE || x->state == M_DEAD,
          "offset %llu of key %d finished before %llu", (unsigned long long)o, e->key,
          (unsigned long long)p);
    }
  e->state = M_DONE;
  e->acks++;
  CHECK(r, e->acks == 1, "offset %llu acked twice", (unsigned long long)o);
  r->m.acked++;
  release(r, o);
}

static void do_ack(run *r) {
  uint64_t o = pick_offset(r);
  uint32_t a = pick_attempt(r, o);
  int want = settle_code(r, o, a);
  int with_result = rnd(r, 4) == 0;
  int rc =
      engram_ack(r->log, r->topic, "g", o, a, with_result ? "result" : NULL, with_result ? 6 : 0);
  expect_code(r, rc, want, o, a);
  if (rc == 0) ack_applied(r, o);
}

static void do_ack_many(run *r) {
  engram_ack_item items[8];
  int codes[8], want[8];
  size_t n = 1 + rnd(r, 8);
  int first = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t o = pick_offset(r);
    uint32_t a = pick_attempt(r, o);
    items[i] = (engram_ack_item){.offset = o, .attempt = a};
    /* Items apply in order, so a repeated offset sees the earlier item's effect. */
    want[i] = settle_code(r, o, a);
    if (want[i] == 0) {
      ack_applied(r, o);
    } else if (!first) {
      first = want[i];
    }
  }
  int rc = engram_ack_many(r->log, r->topic, "g", items, n, codes);
  CHECK(r, rc == first, "ack_many returned %s, model says %s", engram_errname(rc),
        engram_errname(first));
  for (size_t i = 0; i < n; i++)
    expect_code(r, codes[i], want[i], items[i].offset, items[i].attempt);
}

static void do_fetch(run *r, int consumer, size_t max) {
  do_fetch_acking(r, consumer, max, NULL, 0);
}

/* Ack-and-fetch: all or nothing. The model applies the acks in order on a copy; when one
 * would fail, the call must fail with the first failing item's code, every item's code
 * as predicted, and the model (and so the log, checked after the step) unchanged; else
 * the fetch is checked as do_fetch checks one, on the model with the acks applied. */
static void do_ack_fetch(run *r) {
  static model saved;
  engram_ack_item items[8];
  int codes[8], want[8];
  size_t n = 1 + rnd(r, 3); /* few, so that all of them succeed often enough */
  int first = 0;
  int consumer = (int)rnd(r, NCONS);
  size_t max = 1 + rnd(r, 8);
  saved = r->m;
  for (size_t i = 0; i < n; i++) {
    uint64_t o = pick_offset(r);
    uint32_t a = pick_attempt(r, o);
    items[i] = (engram_ack_item){.offset = o, .attempt = a};
    want[i] = settle_code(r, o, a);
    if (want[i] == 0)
      ack_applied(r, o);
    else if (!first)
      first = want[i];
  }
  if (!first) {
    cov.ack_fetch_ok++;
    do_fetch_acking(r, consumer, max, items, n);
    return;
  }
  cov.ack_fetch_refused++;
  r->m = saved;
  engram_batch *b = (engram_batch *)codes;
  int rc =
      engram_ack_fetch(r->log, r->topic, "g", cons_name[consumer], items, n, codes, max, 0, &b);
  CHECK(r, rc == first, "ack_fetch returned %s, model says %s", engram_errname(rc),
        engram_errname(first));
  CHECK(r, b == NULL, "a failed ack_fetch returned a batch");
  for (size_t i = 0; i < n; i++)
    CHECK(r, codes[i] == want[i], "ack_fetch item %zu (offset %llu): %s, model %s", i,
          (unsigned long long)items[i].offset, engram_errname(codes[i]), engram_errname(want[i]));
}

static void do_nack(run *r) {
  model *m = &r->m;
  uint64_t o = pick_offset(r);
  uint32_t a = pick_attempt(r, o);
  int64_t delay = rnd(r, 3) == 0 ? -1 : (int64_t)rnd(r, 3000);
  int want = settle_code(r, o, a);
  int rc = engram_nack(r->log, r->topic, "g", o, a, delay, "failed");
  expect_code(r, rc, want, o, a);
  if (rc) return;
  mev *e = E(r, o);
  if (e->attempt >= m->max_deliver) {
    e->state = M_DEAD;
    release(r, o);
    return;
  }
  size_t k = e->attempt - 1 < m->n_backoff ? e->attempt - 1 : m->n_backoff - 1;
  e->state = M_WAITING;
  e->due = now(r) + (delay >= 0 ? delay : (int64_t)m->backoff[k]) * MS;
  e->lid = ++m->lids;
}

static void do_reject(run *r) {
  uint64_t o = pick_offset(r);
  uint32_t a = pick_attempt(r, o);
  int want = settle_code(r, o, a);
  int rc = engram_reject(r->log, r->topic, "g", o, a, "bad");
  expect_code(r, rc, want, o, a);
  if (rc == 0) {
    E(r, o)->state = M_DEAD;
    release(r, o);
  }
}

static void do_extend(run *r) {
  uint64_t o = pick_offset(r);
  uint32_t a = pick_attempt(r, o);
  uint64_t ms = rnd(r, 3) == 0 ? 0 : rnd(r, 5000);
  int want = settle_code(r, o, a);
  int rc = engram_extend(r->log, r->topic, "g", o, a, ms);
  expect_code(r, rc, want, o, a);
  if (rc) return;
  int lid = E(r, o)->lid;
  int64_t due = now(r) + (int64_t)(ms ? ms : r->m.ack_wait) * MS;
  for (uint64_t p = 1; p <= r->m.head; p++)
    if (E(r, p)->state == M_LEASED && E(r, p)->lid == lid) E(r, p)->due = due;
}

static void do_cancel(run *r) {
  uint64_t o = pick_offset(r);
  if (rnd(r, 3) == 0 && r->m.next <= r->m.head) o = r->m.next + rnd(r, r->m.head - r->m.next + 1);
  int want;
  mev *e = o >= 1 && o <= r->m.head ? E(r, o) : NULL;
  if (!e) {
    want = ENGRAM_ENOTFOUND;
  } else if (e->filtered) {
    /* Ahead of the cursor it gets a cancel marker like any event. */
    want = o < r->m.next ? ENGRAM_ENOTLEASED : e->skip ? ENGRAM_EALREADY : 0;
  } else if (e->state == M_NEW) {
    want = e->skip ? ENGRAM_EALREADY : 0;
  } else if (e->state == M_DONE) {
    want = ENGRAM_EALREADY;
  } else if (e->state == M_DEAD) {
    want = ENGRAM_EDEAD;
  } else if (e->state == M_LEASED && e->due > now(r)) {
    want = ENGRAM_EBUSY;
  } else {
    want = 0;
  }
  int rc = engram_cancel(r->log, r->topic, "g", o);
  count_code(rc);
  CHECK(r, rc == want, "cancel %llu: got %s, model says %s", (unsigned long long)o,
        engram_errname(rc), engram_errname(want));
  if (rc) return;
  if (e->state == M_NEW || e->filtered) {
    e->skip = 1;
  } else {
    int was_blocked = e->state == M_BLOCKED;
    e->state = M_DONE;
    if (!was_blocked) release(r, o);
  }
}

static void do_redrive(run *r) {
  size_t count = 0, dead = 0;
  int rc = engram_dlq_redrive(r->log, r->topic, "g", NULL, 0, &count);
  CHECK(r, rc == 0, "redrive: %s", engram_errname(rc));
  for (uint64_t o = 1; o <= r->m.head; o++) {
    mev *e = E(r, o);
    if (e->state != M_DEAD) continue;
    dead++;
    *e = (mev){.state = M_WAITING,
               .attempt = 0,
               .due = now(r),
               .lid = ++r->m.lids,
               .ts = e->ts,
               .consumer = e->consumer,
               .acks = e->acks,
               .key = e->key,
               .keyless = 1};
  }
  CHECK(r, count == dead, "redrove %zu, model had %zu dead", count, dead);
  cov.redriven += count;
}

static void do_advance(run *r) {
  int64_t ms;
  switch (rnd(r, 4)) {
    case 0:
      ms = (int64_t)rnd(r, 50);
      break;
    case 1:
      ms = (int64_t)rnd(r, 1000);
      break;
    case 2:
      ms = (int64_t)r->m.ack_wait;
      break;
    default:
      ms = (int64_t)rnd(r, 6000);
      break;
  }
  tu_clock_advance_ms(&env.clock, ms);
}

/* ---------------------------------------------------------------------------------
 * Checks of the whole state.
 * ------------------------------------------------------------------------------ */
static void check_status(run *r, uint64_t o) {
  const mev *e = E(r, o);
  engram_status st;
  int rc = engram_status_get(r->log, r->topic, "g", o, &st);
  CHECK(r, rc == 0, "status %llu: %s", (unsigned long long)o, engram_errname(rc));
  engram_event_state want;
  if (e->filtered)
    want = ENGRAM_STATE_SKIPPED;
  else if (e->state == M_NEW)
    want = e->skip ? ENGRAM_STATE_DONE : ENGRAM_STATE_PENDING;
  else if (e->state == M_LEASED)
    want = e->due > now(r) ? ENGRAM_STATE_IN_FLIGHT : ENGRAM_STATE_RETRYING;
  else if (e->state == M_WAITING)
    want = ENGRAM_STATE_RETRYING;
  else if (e->state == M_DONE)
    want = ENGRAM_STATE_DONE;
  else if (e->state == M_BLOCKED)
    want = ENGRAM_STATE_PENDING;
  else
    want = ENGRAM_STATE_DEAD;
  CHECK(r, st.state == want, "status of %llu is %s, model says %s", (unsigned long long)o,
        engram_state_name(st.state), engram_state_name(want));
  if (e->state == M_LEASED || e->state == M_WAITING || e->state == M_DEAD || e->state == M_BLOCKED)
    CHECK(r, st.attempt == e->attempt, "status of %llu: attempt %u, model %u",
          (unsigned long long)o, st.attempt, e->attempt);
  if (e->state == M_LEASED || e->state == M_WAITING)
    CHECK(r, st.deadline_ns == e->due, "status of %llu: deadline off by %lld ms",
          (unsigned long long)o, (long long)((st.deadline_ns - e->due) / MS));
  if (e->state == M_LEASED)
    CHECK(r, !strcmp(st.consumer, cons_name[e->consumer]), "status of %llu: held by %s, model %s",
          (unsigned long long)o, st.consumer, cons_name[e->consumer]);
  engram_free(st.result);
}

static void check_counters(run *r) {
  model *m = &r->m;
  engram_group_info i;
  int rc = engram_group_info_get(r->log, r->topic, "g", &i);
  CHECK(r, rc == 0, "group info: %s", engram_errname(rc));
  uint64_t in_flight = 0, retrying = 0, dead = 0, lowest = m->next;
  for (uint64_t o = 1; o <= m->head; o++) {
    const mev *e = E(r, o);
    if (e->state == M_LEASED) in_flight++;
    if (e->state == M_WAITING) retrying++;
    if (e->state == M_DEAD) dead++;
    if ((e->state == M_LEASED || e->state == M_WAITING || e->state == M_BLOCKED) && o < lowest)
      lowest = o;
  }
  uint64_t floor = lowest - 1 > m->head ? m->head : lowest - 1;
  CHECK(r, i.in_flight == in_flight, "in_flight %llu, model %llu", (unsigned long long)i.in_flight,
        (unsigned long long)in_flight);
  CHECK(r, i.retrying == retrying, "retrying %llu, model %llu", (unsigned long long)i.retrying,
        (unsigned long long)retrying);
  CHECK(r, i.dead == dead, "dead %llu, model %llu", (unsigned long long)i.dead,
        (unsigned long long)dead);
  CHECK(r, i.acked == m->acked, "acked %llu, model %llu", (unsigned long long)i.acked,
        (unsigned long long)m->acked);
  CHECK(r, i.delivered == m->delivered, "delivered %llu, model %llu",
        (unsigned long long)i.delivered, (unsigned long long)m->delivered);
  CHECK(r, i.redelivered == m->redelivered, "redelivered %llu, model %llu",
        (unsigned long long)i.redelivered, (unsigned long long)m->redelivered);
  CHECK(r, i.next == m->next, "next %llu, model %llu", (unsigned long long)i.next,
        (unsigned long long)m->next);
  CHECK(r, i.floor == floor, "floor %llu, model %llu", (unsigned long long)i.floor,
        (unsigned long long)floor);
  CHECK(r, i.lag == m->head - floor, "lag %llu, model %llu", (unsigned long long)i.lag,
        (unsigned long long)(m->head - floor));
  int64_t oldest = m->head > floor ? E(r, floor + 1)->ts : 0;
  CHECK(r, i.oldest_unfinished_ns == oldest, "oldest unfinished off by %lld ms",
        (long long)((i.oldest_unfinished_ns - oldest) / MS));
}

static void check_dlq(run *r) {
  engram_dlq_entry *e = NULL;
  size_t n = 0, k = 0;
  int rc = engram_dlq_list(r->log, r->topic, "g", 0, 0, &e, &n);
  CHECK(r, rc == 0, "dlq list: %s", engram_errname(rc));
  for (uint64_t o = 1; o <= r->m.head; o++) {
    if (E(r, o)->state != M_DEAD) continue;
    CHECK(r, k < n && e[k].offset == o, "dead offset %llu not listed in the DLQ",
          (unsigned long long)o);
    CHECK(r, e[k].attempts == E(r, o)->attempt, "DLQ attempts of %llu: %u, model %u",
          (unsigned long long)o, e[k].attempts, E(r, o)->attempt);
    k++;
  }
  CHECK(r, k == n, "DLQ holds %zu entries, model %zu", n, k);
  engram_free(e);
}

/* ---------------------------------------------------------------------------------
 * One sequence.
 * ------------------------------------------------------------------------------ */
static void run_sequence(unsigned seq, int keyed) {
  run *r = calloc(1, sizeof *r);
  r->seq = seq;
  r->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)seq * 0x100000001b3ull) ^ (keyed ? 0x4b3d : 0x5eed);
  r->log = env.log;
  snprintf(r->topic, sizeof r->topic, "memory-%u", seq);
  int rc = engram_topic_create(r->log, r->topic, NULL);
  CHECK(r, rc == 0, "topic: %s", engram_errname(rc));
  model *m = &r->m;
  static const uint64_t waits[] = {100, 1000, 5000};
  static const uint32_t maxd[] = {1, 2, 3, 5};
  static const uint64_t steps[] = {0, 50, 500, 2000};
  m->ack_wait = waits[rnd(r, 3)];
  m->max_deliver = maxd[rnd(r, 4)];
  /* Key-ordered runs never let a lease die of expiry: the key it frees would make a
   * blocked event due inside the same fetch, which the model does not follow
   * (test_groups covers that case). Rejects still free keys. */
  m->keyed = keyed;
  if (keyed) m->max_deliver = 1000;
  m->n_backoff = 1 + rnd(r, 3);
  for (size_t i = 0; i < m->n_backoff; i++) m->backoff[i] = steps[rnd(r, 4)];
  m->next = 1;
  const char *filters[] = {"memory.*"};
  engram_group_config cfg = {.filters = filters,
                             .n_filters = 1,
                             .ack_wait_ms = m->ack_wait,
                             .max_deliver = m->max_deliver,
                             .backoff_ms = m->backoff,
                             .n_backoff = m->n_backoff,
                             .flags = keyed ? ENGRAM_GROUP_KEY_ORDERED : 0};
  rc = engram_group_create(r->log, r->topic, "g", &cfg);
  CHECK(r, rc == 0, "group: %s", engram_errname(rc));

  int n_steps = 50 + (int)rnd(r, 51);
  for (r->step = 0; r->step < n_steps; r->step++) {
    unsigned k = (unsigned)rnd(r, 100);
    if (k < 14) {
      r->op = "append";
      do_append(r);
    } else if (k < 36) {
      /* A fourth of the fetches ack what the model picks in the same call. */
      if (rnd(r, 4) == 0) {
        r->op = "ack_fetch";
        do_ack_fetch(r);
      } else {
        r->op = "fetch";
        do_fetch(r, (int)rnd(r, NCONS), 1 + rnd(r, 8));
      }
    } else if (k < 50) {
      r->op = "ack";
      do_ack(r);
    } else if (k < 56) {
      r->op = "ack_many";
      do_ack_many(r);
    } else if (k < 64) {
      r->op = "nack";
      do_nack(r);
    } else if (k < 67) {
      r->op = "reject";
      do_reject(r);
    } else if (k < 71) {
      r->op = "extend";
      do_extend(r);
    } else if (k < 75) {
      r->op = "cancel";
      do_cancel(r);
    } else if (k < 77) {
      r->op = "redrive";
      do_redrive(r);
    } else if (k < 95) {
      r->op = "advance";
      do_advance(r);
    } else {
      r->op = "reopen";
      cov.reopen++;
      reopen(r);
    }
    r->op = "check";
    check_counters(r);
    check_keys(r);
    for (int i = 0; i < 3 && m->head; i++) check_status(r, 1 + rnd(r, m->head));
  }

  /* Drain: move past every deadline and delay, fetch and ack until nothing is left. */
  r->op = "drain";
  for (int round = 0; round < 1000; round++) {
    int open = 0;
    for (uint64_t o = 1; o <= m->head; o++) {
      const mev *e = E(r, o);
      if (e->state == M_LEASED || e->state == M_WAITING || e->state == M_BLOCKED ||
          (e->state == M_NEW && !e->filtered))
        open = 1;
    }
    if (!open) break;
    tu_clock_advance_ms(&env.clock, 6001);
    size_t before = m->delivered;
    do_fetch(r, (int)rnd(r, NCONS), 1 + rnd(r, 50));
    for (uint64_t o = 1; o <= m->head; o++) {
      if (E(r, o)->state != M_LEASED || E(r, o)->due <= now(r)) continue;
      uint32_t a = E(r, o)->attempt;
      if (rnd(r, 5) == 0) {
        int want = settle_code(r, o, a);
        rc = engram_nack(r->log, r->topic, "g", o, a, 0, "drain");
        expect_code(r, rc, want, o, a);
        if (rc == 0) {
          if (E(r, o)->attempt >= m->max_deliver) {
            E(r, o)->state = M_DEAD;
          } else {
            E(r, o)->state = M_WAITING;
            E(r, o)->due = now(r);
            E(r, o)->lid = ++m->lids;
          }
        }
      } else {
        rc = engram_ack(r->log, r->topic, "g", o, a, NULL, 0);
        expect_code(r, rc, 0, o, a);
        ack_applied(r, o);
      }
    }
    (void)before;
    check_counters(r);
    check_keys(r);
  }
  for (uint64_t o = 1; o <= m->head; o++) {
    const mev *e = E(r, o);
    CHECK(r, e->filtered || e->state == M_DONE || e->state == M_DEAD,
          "offset %llu unfinished after the drain (%d)", (unsigned long long)o, e->state);
    check_status(r, o);
  }
  check_counters(r);
  check_dlq(r);
  engram_group_info i;
  rc = engram_group_info_get(r->log, r->topic, "g", &i);
  CHECK(r, rc == 0 && i.lag == 0 && i.in_flight == 0 && i.retrying == 0,
        "drained group still has work");
  rc = engram_topic_drop(r->log, r->topic);
  CHECK(r, rc == 0, "topic drop: %s", engram_errname(rc));
  rc = engram_group_info_get(r->log, r->topic, "g", &i);
  CHECK(r, rc == ENGRAM_ENOTFOUND, "group of a dropped topic: %s", engram_errname(rc));
  free(r);
}

static void env_init(void) {
  env.dir = tu_tmpdir("model");
  env.logdir = tu_join(env.dir, "log");
  tu_clock_init(&env.clock, T0);
  env.opts = (engram_options){
      .durability = ENGRAM_DURABILITY_ASYNC, .clock_ns = tu_clock_ns, .clock_ctx = &env.clock};
  env.log = tu_open(env.logdir, &env.opts);
}

static void env_done(void) {
  engram_close(env.log);
  env.log = NULL;
  free(env.logdir);
  tu_tmpdir_done(env.dir);
}

static void run_all(int keyed, unsigned n) {
  const char *only = getenv("ENGRAM_TEST_SEED");
  const char *seqs = getenv("ENGRAM_MODEL_SEQS");
  if (seqs) n = (unsigned)strtoul(seqs, NULL, 0);
  env_init();
  if (only) {
    run_sequence((unsigned)strtoul(only, NULL, 0), keyed);
    env_done();
    return;
  }
  memset(&cov, 0, sizeof cov);
  int64_t start = tu_mono_ms();
  for (unsigned s = 0; s < n; s++) run_sequence(s, keyed);
  env_done();
  fprintf(stderr, "%u sequences in %lld ms\n", n, (long long)(tu_mono_ms() - start));
  fprintf(
      stderr,
      "settled %lu, stale %lu, already %lu, dead %lu, not leased %lu, never issued %lu, busy %lu;\n"
      "due events delivered %lu, fetches that split a lease %lu, expired last leases %lu dead / "
      "%lu "
      "left for later, redriven %lu, reopens %lu, blocked by a key %lu, keys handed over %lu\n",
      cov.settled, cov.stale, cov.already, cov.dead_code, cov.notleased, cov.never_issued, cov.busy,
      cov.due_delivered, cov.split_fetch, cov.died_on_expiry, cov.survived_expiry, cov.redriven,
      cov.reopen, cov.blocked, cov.handed_over);
  fprintf(stderr, "ack-fetch: %lu applied, %lu refused whole\n", cov.ack_fetch_ok,
          cov.ack_fetch_refused);
  /* Each case must have come up, or the sequences no longer test it. */
  assert_true(cov.stale && cov.already && cov.dead_code && cov.notleased && cov.never_issued &&
              cov.busy);
  assert_true(cov.ack_fetch_ok && cov.ack_fetch_refused);
  assert_true(cov.split_fetch && cov.redriven && cov.reopen);
  if (keyed)
    assert_true(cov.blocked && cov.handed_over);
  else
    assert_true(cov.died_on_expiry && cov.survived_expiry);
}

static void random_sequences_follow_the_model_step_by_step(void **state) {
  (void)state;
  run_all(0, 200);
}

static void random_sequences_of_a_key_ordered_group_follow_the_model_step_by_step(void **state) {
  (void)state;
  run_all(1, 100);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(random_sequences_follow_the_model_step_by_step),
      cmocka_unit_test(random_sequences_of_a_key_ordered_group_follow_the_model_step_by_step),
  };
  return cmocka_run_group_tests_name("groups_model", tests, NULL, NULL);
}
