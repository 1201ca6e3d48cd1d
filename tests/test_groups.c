/* test_groups.c — consumer groups, one rule per test: creation and filters, start
 * positions, fetch order and attempts, ack / nack / reject / extend / cancel, fencing,
 * backoff, the dead-letter queue and redrive, key order, delayed delivery, status,
 * counters, replay, transactions, topic drop, reopen, and every bad input. Time is the
 * handle's hand-moved clock throughout. */
#include <pthread.h>
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

#define T0 1700000000000000000LL /* the clock at the start of every test */
#define MS 1000000LL
#define SEC 1000000000LL

typedef struct fx {
  char msg[512]; /* the message of the last expected failure */
  char *dir;     /* the test's own temp dir */
  char *logdir;  /* dir/log */
  engram *log;
  tu_clock clock;
  engram_options opts;
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  tu_fx_dirs("groups", &f->dir, &f->logdir);
  tu_clock_init(&f->clock, T0);
  f->opts.clock_ns = tu_clock_ns;
  f->opts.clock_ctx = &f->clock;
  f->log = tu_open(f->logdir, &f->opts);
  tu_topic(f->log, "memory", NULL);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  tu_fx_dirs_done(f->log, f->dir, f->logdir);
  free(f);
  return 0;
}

static void reopen(fx *f) {
  engram_close(f->log);
  f->log = tu_open(f->logdir, &f->opts);
}

static int64_t now(fx *f) { return tu_clock_ns(&f->clock); }
static void advance(fx *f, int64_t ms) { tu_clock_advance_ms(&f->clock, ms); }

/* ---------------------------------------------------------------------------------
 * Calls that must succeed, and calls that must fail with a code and a message.
 * ------------------------------------------------------------------------------ */
#define OK(f, call) ok_at(f, (call), #call, __LINE__)
static void ok_at(fx *f, int rc, const char *what, int line) {
  if (rc)
    fprintf(stderr, "line %d: %s: %s: %s\n", line, what, engram_errname(rc), engram_errmsg(f->log));
  assert_int_equal(rc, 0);
}

#define FAILS(f, call, want) fails_at(f, (call), want, #call, __LINE__)
static void fails_at(fx *f, int rc, int want, const char *what, int line) {
  if (rc != want)
    fprintf(stderr, "line %d: %s: expected %s, got %s (%s)\n", line, what, engram_errname(want),
            engram_errname(rc), engram_errmsg(f->log));
  assert_int_equal(rc, want);
  snprintf(f->msg, sizeof f->msg, "%s", engram_errmsg(f->log));
  if (!engram_errmsg(f->log)[0]) fprintf(stderr, "line %d: %s: empty message\n", line, what);
  assert_true(engram_errmsg(f->log)[0] != '\0');
}

/* ---------------------------------------------------------------------------------
 * Events.
 * ------------------------------------------------------------------------------ */
static uint64_t add_to(fx *f, const char *topic, const char *type, const char *key,
                       int64_t deliver_at) {
  engram_event ev = {
      .type = type, .key = key, .payload = "{}", .payload_len = 2, .deliver_at_ns = deliver_at};
  uint64_t off = 0;
  OK(f, engram_append(f->log, topic, &ev, &off, NULL));
  return off;
}
static uint64_t add(fx *f, const char *type, const char *key) {
  return add_to(f, "memory", type, key, 0);
}
static void add_n(fx *f, int n) {
  for (int i = 0; i < n; i++) add(f, "memory.saved", NULL);
}

/* ---------------------------------------------------------------------------------
 * Groups, fetches, status.
 * ------------------------------------------------------------------------------ */
static void mkgroup(fx *f, const char *name, const engram_group_config *cfg) {
  OK(f, engram_group_create(f->log, "memory", name, cfg));
}

static engram_group_info ginfo(fx *f, const char *g) {
  engram_group_info i;
  OK(f, engram_group_info_get(f->log, "memory", g, &i));
  return i;
}

static engram_batch *fetch(fx *f, const char *g, const char *consumer, size_t max) {
  engram_batch *b = NULL;
  OK(f, engram_fetch(f->log, "memory", g, consumer, max, 0, &b));
  assert_non_null(b);
  return b;
}

/* Fetches and checks the offsets delivered, in order, and that each has `attempt`
 * (0 = do not check attempts). */
#define GOT(f, g, c, max, attempt, ...)                    \
  got_at(f, g, c, max, attempt, (uint64_t[]){__VA_ARGS__}, \
         sizeof((uint64_t[]){__VA_ARGS__}) / sizeof(uint64_t), __LINE__)
static void got_at(fx *f, const char *g, const char *c, size_t max, uint32_t attempt,
                   const uint64_t *want, size_t n, int line) {
  engram_batch *b = fetch(f, g, c, max);
  int same = b->count == n;
  for (size_t i = 0; same && i < n; i++)
    same = b->events[i].offset == want[i] && (!attempt || b->events[i].attempt == attempt);
  if (!same) {
    fprintf(stderr, "line %d: fetch %s by %s got", line, g, c);
    for (size_t i = 0; i < b->count; i++)
      fprintf(stderr, " %llu(a%u)", (unsigned long long)b->events[i].offset, b->events[i].attempt);
    fprintf(stderr, ", wanted");
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %llu", (unsigned long long)want[i]);
    fprintf(stderr, " (attempt %u)\n", attempt);
  }
  engram_batch_free(b);
  assert_true(same);
}

#define NONE(f, g, c) none_at(f, g, c, __LINE__)
static void none_at(fx *f, const char *g, const char *c, int line) {
  engram_batch *b = fetch(f, g, c, 100);
  if (b->count)
    fprintf(stderr, "line %d: fetch %s by %s got %zu events, wanted none (first %llu)\n", line, g,
            c, b->count, (unsigned long long)b->events[0].offset);
  size_t n = b->count;
  engram_batch_free(b);
  assert_int_equal(n, 0);
}

static engram_status status(fx *f, const char *g, uint64_t off) {
  engram_status st;
  OK(f, engram_status_get(f->log, "memory", g, off, &st));
  return st;
}

#define STATE(f, g, off, want) state_at(f, g, off, want, __LINE__)
static void state_at(fx *f, const char *g, uint64_t off, engram_event_state want, int line) {
  engram_status st = status(f, g, off);
  if (st.state != want)
    fprintf(stderr, "line %d: %s offset %llu is %s, wanted %s\n", line, g, (unsigned long long)off,
            engram_state_name(st.state), engram_state_name(want));
  engram_free(st.result);
  assert_int_equal(st.state, want);
}

static size_t dlq(fx *f, const char *g, engram_dlq_entry **out) {
  engram_dlq_entry *e = NULL;
  size_t n = 0;
  OK(f, engram_dlq_list(f->log, "memory", g, 0, 0, &e, &n));
  if (out)
    *out = e;
  else
    engram_free(e);
  return n;
}

/* ---------------------------------------------------------------------------------
 * "Changes nothing": every group of the log, every event's status in each, and every
 * DLQ, before and after a refused call.
 * ------------------------------------------------------------------------------ */
#define SNAP_EVENTS 40
typedef struct snap {
  engram_group_info *groups;
  size_t n;
  engram_status st[8][SNAP_EVENTS];
  size_t dead[8];
  engram_topic_info topic;
} snap;

static void snap_take(fx *f, snap *s) {
  memset(s, 0, sizeof *s);
  OK(f, engram_group_list(f->log, NULL, &s->groups, &s->n));
  OK(f, engram_topic_info_get(f->log, "memory", &s->topic));
  for (size_t g = 0; g < s->n && g < 8; g++) {
    if (strcmp(s->groups[g].topic, "memory")) continue;
    for (uint64_t o = 1; o <= s->topic.head_offset && o <= SNAP_EVENTS; o++)
      s->st[g][o - 1] = status(f, s->groups[g].name, o);
    s->dead[g] = dlq(f, s->groups[g].name, NULL);
  }
}

static void snap_free(snap *s) {
  for (size_t g = 0; g < 8; g++)
    for (size_t o = 0; o < SNAP_EVENTS; o++) engram_free(s->st[g][o].result);
  engram_free(s->groups);
}

static void snap_same(fx *f, snap *a, int line) {
  snap b;
  snap_take(f, &b);
  assert_int_equal(a->n, b.n);
  assert_int_equal(a->topic.head_offset, b.topic.head_offset);
  for (size_t g = 0; g < a->n; g++) {
    if (memcmp(&a->groups[g], &b.groups[g], sizeof a->groups[g]))
      fprintf(stderr, "line %d: group %s changed\n", line, a->groups[g].name);
    assert_memory_equal(&a->groups[g], &b.groups[g], sizeof a->groups[g]);
    if (g >= 8) continue;
    assert_int_equal(a->dead[g], b.dead[g]);
    for (size_t o = 0; o < SNAP_EVENTS; o++) {
      engram_status *x = &a->st[g][o], *y = &b.st[g][o];
      if (x->state != y->state || x->attempt != y->attempt || x->deadline_ns != y->deadline_ns)
        fprintf(stderr, "line %d: group %s offset %zu changed: %s a%u -> %s a%u\n", line,
                a->groups[g].name, o + 1, engram_state_name(x->state), x->attempt,
                engram_state_name(y->state), y->attempt);
      assert_int_equal(x->state, y->state);
      assert_int_equal(x->attempt, y->attempt);
      assert_true(x->deadline_ns == y->deadline_ns);
      assert_string_equal(x->consumer, y->consumer);
      assert_string_equal(x->last_error, y->last_error);
      assert_int_equal(x->result_len, y->result_len);
      if (x->result_len) assert_memory_equal(x->result, y->result, x->result_len);
    }
  }
  snap_free(&b);
}

/* The call fails with `want`, says why, and changes nothing. */
#define REFUSED(f, call, want)               \
  do {                                       \
    snap s_;                                 \
    snap_take(f, &s_);                       \
    int rc_ = (call);                        \
    fails_at(f, rc_, want, #call, __LINE__); \
    snap_same(f, &s_, __LINE__);             \
    snap_free(&s_);                          \
  } while (0)

static const uint64_t backoff_10ms[] = {10};

/* =================================================================================
 * Creating, describing, listing, deleting.
 * ============================================================================== */
static void a_group_is_created_described_listed_and_deleted(void **state) {
  fx *f = *state;
  tu_topic(f->log, "other", NULL);
  add_n(f, 3);
  const char *filters[] = {"memory.*", "audit.login"};
  const uint64_t backoff[] = {100, 200, 300};
  engram_group_config cfg = {.filters = filters,
                             .n_filters = 2,
                             .ack_wait_ms = 1234,
                             .max_deliver = 7,
                             .backoff_ms = backoff,
                             .n_backoff = 3,
                             .result_ttl_ms = 999,
                             .flags = ENGRAM_GROUP_KEY_ORDERED};
  mkgroup(f, "indexer", &cfg);
  mkgroup(f, "audit", NULL);
  OK(f, engram_group_create(f->log, "other", "indexer", NULL)); /* names are per topic */

  engram_group_info i = ginfo(f, "indexer");
  assert_string_equal(i.topic, "memory");
  assert_string_equal(i.name, "indexer");
  assert_int_equal(i.n_filters, 2);
  assert_string_equal(i.filters[0], "memory.*");
  assert_string_equal(i.filters[1], "audit.login");
  assert_int_equal(i.ack_wait_ms, 1234);
  assert_int_equal(i.max_deliver, 7);
  assert_int_equal(i.n_backoff, 3);
  assert_int_equal(i.backoff_ms[2], 300);
  assert_int_equal(i.result_ttl_ms, 999);
  assert_int_equal(i.flags, ENGRAM_GROUP_KEY_ORDERED);
  assert_true(i.created_ns == T0);
  assert_int_equal(i.next, 1);
  assert_int_equal(i.floor, 0);
  assert_int_equal(i.lag, 3);

  engram_group_info *list = NULL;
  size_t n = 0;
  OK(f, engram_group_list(f->log, NULL, &list, &n));
  assert_int_equal(n, 3);
  /* In (topic, name) order. */
  assert_string_equal(list[0].topic, "memory");
  assert_string_equal(list[0].name, "audit");
  assert_string_equal(list[1].name, "indexer");
  assert_string_equal(list[2].topic, "other");
  engram_free(list);
  OK(f, engram_group_list(f->log, "memory", &list, &n));
  assert_int_equal(n, 2);
  engram_free(list);

  OK(f, engram_group_delete(f->log, "memory", "indexer"));
  engram_group_info gone;
  FAILS(f, engram_group_info_get(f->log, "memory", "indexer", &gone), ENGRAM_ENOTFOUND);
  OK(f, engram_group_info_get(f->log, "other", "indexer", &gone));
  OK(f, engram_group_list(f->log, "memory", &list, &n));
  assert_int_equal(n, 1);
  engram_free(list);
  REFUSED(f, engram_group_delete(f->log, "memory", "indexer"), ENGRAM_ENOTFOUND);
}

static void a_group_created_without_config_gets_the_documented_defaults(void **state) {
  fx *f = *state;
  mkgroup(f, "g", NULL);
  engram_group_info i = ginfo(f, "g");
  assert_int_equal(i.n_filters, 0);
  assert_int_equal(i.ack_wait_ms, 30000);
  assert_int_equal(i.max_deliver, 5);
  assert_int_equal(i.n_backoff, 4);
  assert_int_equal(i.backoff_ms[0], 1000);
  assert_int_equal(i.backoff_ms[1], 5000);
  assert_int_equal(i.backoff_ms[2], 30000);
  assert_int_equal(i.backoff_ms[3], 120000);
  assert_int_equal(i.result_ttl_ms, 86400000);
  assert_int_equal(i.flags, 0);
  assert_int_equal(i.lag, 0);
  assert_int_equal(i.oldest_unfinished_ns, 0);
}

static void creating_a_group_twice_fails_with_eexist_and_changes_nothing(void **state) {
  fx *f = *state;
  add_n(f, 2);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 1, 1, 1);
  engram_group_config other = {.max_deliver = 2};
  REFUSED(f, engram_group_create(f->log, "memory", "g", &other), ENGRAM_EEXIST);
  assert_int_equal(ginfo(f, "g").max_deliver, 5);
}

static void a_deleted_and_recreated_group_starts_afresh(void **state) {
  fx *f = *state;
  add_n(f, 3);
  mkgroup(f, "g", NULL);
  engram_batch *b = fetch(f, "g", "c", 3);
  OK(f, engram_ack(f->log, "memory", "g", 1, 1, "r", 1));
  OK(f, engram_reject(f->log, "memory", "g", 2, 1, "no"));
  engram_batch_free(b);
  OK(f, engram_group_delete(f->log, "memory", "g"));
  mkgroup(f, "g", NULL);
  engram_group_info i = ginfo(f, "g");
  assert_int_equal(i.dead, 0);
  assert_int_equal(i.acked, 0);
  assert_int_equal(i.in_flight, 0);
  assert_int_equal(dlq(f, "g", NULL), 0);
  engram_status st = status(f, "g", 1);
  assert_int_equal(st.state, ENGRAM_STATE_PENDING);
  assert_null(st.result);
  GOT(f, "g", "c", 10, 1, 1, 2, 3);
}

/* =================================================================================
 * Filters.
 * ============================================================================== */
static void filters_select_by_exact_type_prefix_star_and_union(void **state) {
  fx *f = *state;
  add(f, "memory.saved", NULL);       /* 1 */
  add(f, "memory.updated", NULL);     /* 2 */
  add(f, "memory", NULL);             /* 3: not under "memory.*" */
  add(f, "memoryx.saved", NULL);      /* 4: not under "memory.*" */
  add(f, "audit.login", NULL);        /* 5 */
  add(f, "memory.saved.extra", NULL); /* 6: under "memory.*", not "memory.saved" */
  const char *exact[] = {"memory.saved"}, *prefix[] = {"memory.*"}, *star[] = {"*"},
             *several[] = {"audit.login", "memory.updated"};
  mkgroup(f, "exact", &(engram_group_config){.filters = exact, .n_filters = 1});
  mkgroup(f, "prefix", &(engram_group_config){.filters = prefix, .n_filters = 1});
  mkgroup(f, "star", &(engram_group_config){.filters = star, .n_filters = 1});
  mkgroup(f, "several", &(engram_group_config){.filters = several, .n_filters = 2});
  mkgroup(f, "none", NULL);
  GOT(f, "exact", "c", 100, 1, 1);
  GOT(f, "prefix", "c", 100, 1, 1, 2, 6);
  GOT(f, "star", "c", 100, 1, 1, 2, 3, 4, 5, 6);
  GOT(f, "several", "c", 100, 1, 2, 5);
  GOT(f, "none", "c", 100, 1, 1, 2, 3, 4, 5, 6);
  /* Events the filter passed over are skipped, not deliverable and not ackable. */
  STATE(f, "exact", 2, ENGRAM_STATE_SKIPPED);
  STATE(f, "prefix", 3, ENGRAM_STATE_SKIPPED);
  STATE(f, "prefix", 4, ENGRAM_STATE_SKIPPED);
  STATE(f, "prefix", 2, ENGRAM_STATE_IN_FLIGHT);
  REFUSED(f, engram_ack(f->log, "memory", "exact", 2, 1, NULL, 0), ENGRAM_ENOTLEASED);
  REFUSED(f, engram_cancel(f->log, "memory", "exact", 2), ENGRAM_ENOTLEASED);
  /* Skipped events do not hold the floor back. */
  OK(f, engram_ack(f->log, "memory", "exact", 1, 1, NULL, 0));
  engram_group_info i = ginfo(f, "exact");
  assert_int_equal(i.floor, 6);
  assert_int_equal(i.lag, 0);
  /* Later events are filtered the same way. */
  add(f, "memory.saved", NULL);   /* 7 */
  add(f, "memory.deleted", NULL); /* 8 */
  GOT(f, "exact", "c", 100, 1, 7);
  GOT(f, "prefix", "c", 100, 1, 7, 8);
}

/* =================================================================================
 * Start positions.
 * ============================================================================== */
static void a_group_starts_at_earliest_latest_an_offset_or_a_time(void **state) {
  fx *f = *state;
  for (int i = 0; i < 5; i++) {
    add(f, "memory.saved", NULL); /* offset i+1 appended at T0 + i s */
    advance(f, 1000);
  }
  mkgroup(f, "earliest", &(engram_group_config){.start = ENGRAM_START_EARLIEST});
  mkgroup(f, "latest", &(engram_group_config){.start = ENGRAM_START_LATEST});
  mkgroup(f, "offset", &(engram_group_config){.start = ENGRAM_START_OFFSET, .start_offset = 4});
  mkgroup(f, "time",
          &(engram_group_config){.start = ENGRAM_START_TIME, .start_time_ns = T0 + 2 * SEC + 1});
  mkgroup(f, "time-exact",
          &(engram_group_config){.start = ENGRAM_START_TIME, .start_time_ns = T0 + 2 * SEC});
  mkgroup(f, "time-future",
          &(engram_group_config){.start = ENGRAM_START_TIME, .start_time_ns = T0 + 100 * SEC});
  mkgroup(f, "head-plus-one",
          &(engram_group_config){.start = ENGRAM_START_OFFSET, .start_offset = 6});
  add(f, "memory.saved", NULL); /* 6 */
  GOT(f, "earliest", "c", 100, 1, 1, 2, 3, 4, 5, 6);
  GOT(f, "latest", "c", 100, 1, 6);
  GOT(f, "offset", "c", 100, 1, 4, 5, 6);
  GOT(f, "time", "c", 100, 1, 4, 5, 6);
  GOT(f, "time-exact", "c", 100, 1, 3, 4, 5, 6);
  GOT(f, "time-future", "c", 100, 1, 6);
  GOT(f, "head-plus-one", "c", 100, 1, 6);
  /* Events before the start are finished for the group as far as counters go. */
  engram_group_info i = ginfo(f, "offset");
  assert_int_equal(i.in_flight, 3);
  assert_int_equal(i.floor, 3);
  assert_int_equal(i.lag, 3);
}

/* =================================================================================
 * Fetch order and attempts.
 * ============================================================================== */
static void due_retries_and_expired_leases_come_before_new_events_in_due_order(void **state) {
  fx *f = *state;
  add_n(f, 6);
  mkgroup(f, "g", &(engram_group_config){.ack_wait_ms = 10000});
  GOT(f, "g", "c1", 2, 1, 1, 2);                               /* lease [1,2] until T0+10s */
  GOT(f, "g", "c2", 2, 1, 3, 4);                               /* lease [3,4] until T0+10s */
  OK(f, engram_nack(f->log, "memory", "g", 3, 1, 0, "again")); /* due now */
  advance(f, 10000);
  /* 3 is due since T0, the leases since T0+10s; new events 5 and 6 come last. */
  GOT(f, "g", "c3", 100, 0, 3, 1, 2, 4, 5, 6);
  engram_status st = status(f, "g", 3);
  assert_int_equal(st.attempt, 2);
  assert_string_equal(st.consumer, "c3");
  st = status(f, "g", 5);
  assert_int_equal(st.attempt, 1);
}

static void a_small_fetch_takes_due_events_first_and_splits_a_lease_it_cannot_take_whole(
    void **state) {
  fx *f = *state;
  add_n(f, 5);
  mkgroup(f, "g", &(engram_group_config){.ack_wait_ms = 1000});
  GOT(f, "g", "c1", 3, 1, 1, 2, 3);
  advance(f, 1000);
  GOT(f, "g", "c2", 2, 2, 1, 2); /* the first two of the expired lease */
  GOT(f, "g", "c3", 1, 2, 3);    /* its remainder, before the new events */
  GOT(f, "g", "c3", 2, 1, 4, 5);
  /* The parts are leased separately: acking 1 and 2 does not touch 3. */
  OK(f, engram_ack(f->log, "memory", "g", 1, 2, NULL, 0));
  OK(f, engram_ack(f->log, "memory", "g", 2, 2, NULL, 0));
  engram_status st = status(f, "g", 3);
  assert_int_equal(st.state, ENGRAM_STATE_IN_FLIGHT);
  assert_string_equal(st.consumer, "c3");
  assert_true(st.deadline_ns == T0 + 2 * SEC);
  engram_group_info i = ginfo(f, "g");
  assert_int_equal(i.delivered, 8);
  assert_int_equal(i.redelivered, 3);
}

static void fetch_returns_an_empty_batch_when_there_is_nothing(void **state) {
  fx *f = *state;
  mkgroup(f, "g", NULL);
  NONE(f, "g", "c");
  add_n(f, 1);
  GOT(f, "g", "c", 10, 1, 1);
  NONE(f, "g", "c");
}

struct later_append {
  engram *log;
  int ms;
};
static void *append_later(void *arg) {
  struct later_append *a = arg;
  tu_sleep_ms(a->ms);
  engram_event ev = {.type = "memory.saved", .payload = "{}", .payload_len = 2};
  uint64_t off;
  engram_append(a->log, "memory", &ev, &off, NULL);
  return NULL;
}

static void a_waiting_fetch_returns_when_an_event_arrives_or_its_wait_ends(void **state) {
  fx *f = *state;
  mkgroup(f, "g", NULL);
  engram_batch *b = NULL;
  int64_t t = tu_mono_ms();
  OK(f, engram_fetch(f->log, "memory", "g", "c", 10, 150, &b));
  int64_t took = tu_mono_ms() - t;
  assert_int_equal(b->count, 0);
  engram_batch_free(b);
  assert_true(took >= 140 && took < 3000);

  pthread_t th;
  struct later_append a = {f->log, 50};
  pthread_create(&th, NULL, append_later, &a);
  t = tu_mono_ms();
  OK(f, engram_fetch(f->log, "memory", "g", "c", 10, 10000, &b));
  took = tu_mono_ms() - t;
  pthread_join(th, NULL);
  assert_int_equal(b->count, 1);
  assert_int_equal(b->events[0].offset, 1);
  engram_batch_free(b);
  assert_true(took < 5000);
}

static void fetched_events_carry_every_field_and_the_attempt(void **state) {
  fx *f = *state;
  engram_header h[] = {{"trace", "abc"}};
  engram_event ev = {.type = "memory.saved",
                     .key = "conv-1:D1:1",
                     .payload = "{\"x\":1}",
                     .payload_len = 7,
                     .content_type = "application/json",
                     .headers = h,
                     .n_headers = 1};
  uint64_t off;
  OK(f, engram_append(f->log, "memory", &ev, &off, NULL));
  mkgroup(f, "g", NULL);
  engram_batch *b = fetch(f, "g", "c", 1);
  assert_int_equal(b->count, 1);
  engram_event *e = &b->events[0];
  assert_int_equal(e->offset, 1);
  assert_string_equal(e->topic, "memory");
  assert_string_equal(e->type, "memory.saved");
  assert_string_equal(e->key, "conv-1:D1:1");
  assert_int_equal(e->payload_len, 7);
  assert_memory_equal(e->payload, "{\"x\":1}", 7);
  assert_string_equal(e->content_type, "application/json");
  assert_int_equal(e->n_headers, 1);
  assert_string_equal(e->headers[0].value, "abc");
  assert_true(e->timestamp_ns == T0);
  assert_int_equal(e->attempt, 1);
  engram_batch_free(b);
}

/* =================================================================================
 * Ack.
 * ============================================================================== */
static void a_second_ack_gets_ealready_and_changes_nothing(void **state) {
  fx *f = *state;
  add_n(f, 3);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 3, 1, 1, 2, 3);
  OK(f, engram_ack(f->log, "memory", "g", 1, 1, NULL, 0));
  assert_int_equal(ginfo(f, "g").acked, 1);
  /* The batch's lease still holds 2 and 3. */
  REFUSED(f, engram_ack(f->log, "memory", "g", 1, 1, NULL, 0), ENGRAM_EALREADY);
  REFUSED(f, engram_ack(f->log, "memory", "g", 1, 0, "late", 4), ENGRAM_EALREADY);
  OK(f, engram_ack(f->log, "memory", "g", 2, 1, NULL, 0));
  OK(f, engram_ack(f->log, "memory", "g", 3, 1, NULL, 0));
  /* The lease is gone now; the answer is the same. */
  REFUSED(f, engram_ack(f->log, "memory", "g", 3, 1, NULL, 0), ENGRAM_EALREADY);
  REFUSED(f, engram_nack(f->log, "memory", "g", 3, 1, 0, NULL), ENGRAM_EALREADY);
  REFUSED(f, engram_reject(f->log, "memory", "g", 3, 1, "x"), ENGRAM_EALREADY);
  REFUSED(f, engram_extend(f->log, "memory", "g", 3, 1, 0), ENGRAM_EALREADY);
  REFUSED(f, engram_cancel(f->log, "memory", "g", 3), ENGRAM_EALREADY);
  engram_group_info i = ginfo(f, "g");
  assert_int_equal(i.acked, 3);
  assert_int_equal(i.floor, 3);
  assert_int_equal(i.in_flight, 0);
}

static void ack_many_commits_the_good_items_and_reports_each_code(void **state) {
  fx *f = *state;
  add_n(f, 4);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 3, 1, 1, 2, 3);
  OK(f, engram_ack(f->log, "memory", "g", 2, 1, NULL, 0));
  engram_ack_item items[] = {{
                                 1,
                                 1,
                                 "one",
                                 3,
                             },
                             {2, 1, NULL, 0},
                             {3, 2, NULL, 0},
                             {4, 1, NULL, 0},
                             {3, 1, NULL, 0},
                             {99, 1, NULL, 0}};
  int codes[6];
  FAILS(f, engram_ack_many(f->log, "memory", "g", items, 6, codes), ENGRAM_EALREADY);
  assert_int_equal(codes[0], 0);
  assert_int_equal(codes[1], ENGRAM_EALREADY);
  assert_int_equal(codes[2], ENGRAM_EINVAL); /* attempt 2 was never delivered */
  assert_int_equal(codes[3], ENGRAM_ENOTLEASED);
  assert_int_equal(codes[4], 0);
  assert_int_equal(codes[5], ENGRAM_ENOTFOUND);
  STATE(f, "g", 1, ENGRAM_STATE_DONE);
  STATE(f, "g", 3, ENGRAM_STATE_DONE);
  STATE(f, "g", 4, ENGRAM_STATE_PENDING);
  engram_status st = status(f, "g", 1);
  assert_int_equal(st.result_len, 3);
  assert_memory_equal(st.result, "one", 3);
  engram_free(st.result);
  assert_int_equal(ginfo(f, "g").acked, 3);
}

static void an_ack_result_is_kept_for_the_result_ttl_then_gone(void **state) {
  fx *f = *state;
  add_n(f, 2);
  mkgroup(f, "g", &(engram_group_config){.result_ttl_ms = 60000});
  GOT(f, "g", "c", 2, 1, 1, 2);
  OK(f, engram_ack(f->log, "memory", "g", 1, 1, "{\"summary\":\"ok\"}", 16));
  OK(f, engram_ack(f->log, "memory", "g", 2, 1, NULL, 0));
  advance(f, 59999);
  engram_status st = status(f, "g", 1);
  assert_int_equal(st.state, ENGRAM_STATE_DONE);
  assert_int_equal(st.result_len, 16);
  assert_memory_equal(st.result, "{\"summary\":\"ok\"}", 16);
  engram_free(st.result);
  st = status(f, "g", 2);
  assert_null(st.result);
  assert_int_equal(st.result_len, 0);
  advance(f, 1);
  st = status(f, "g", 1);
  assert_int_equal(st.state, ENGRAM_STATE_DONE);
  assert_null(st.result);
  assert_int_equal(st.result_len, 0);
  /* Results survive reopen while they live. */
  add_n(f, 1);
  GOT(f, "g", "c", 1, 1, 3);
  OK(f, engram_ack(f->log, "memory", "g", 3, 1, "r3", 2));
  reopen(f);
  st = status(f, "g", 3);
  assert_int_equal(st.result_len, 2);
  engram_free(st.result);
}

static void a_result_over_one_mib_is_refused(void **state) {
  fx *f = *state;
  add_n(f, 1);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 1, 1, 1);
  size_t n = (1u << 20) + 1;
  char *big = calloc(1, n);
  REFUSED(f, engram_ack(f->log, "memory", "g", 1, 1, big, n), ENGRAM_ETOOBIG);
  OK(f, engram_ack(f->log, "memory", "g", 1, 1, big, n - 1));
  free(big);
}

/* =================================================================================
 * Fencing.
 * ============================================================================== */
static void an_ack_quoting_an_older_attempt_after_redelivery_is_stale(void **state) {
  fx *f = *state;
  add_n(f, 2);
  mkgroup(f, "g", &(engram_group_config){.ack_wait_ms = 5000});
  GOT(f, "g", "slow", 2, 1, 1, 2);
  advance(f, 5000);
  GOT(f, "g", "fast", 1, 2, 1);
  REFUSED(f, engram_ack(f->log, "memory", "g", 1, 1, NULL, 0), ENGRAM_ESTALE);
  REFUSED(f, engram_nack(f->log, "memory", "g", 1, 1, 0, "x"), ENGRAM_ESTALE);
  REFUSED(f, engram_reject(f->log, "memory", "g", 1, 1, "x"), ENGRAM_ESTALE);
  REFUSED(f, engram_extend(f->log, "memory", "g", 1, 1, 0), ENGRAM_ESTALE);
  REFUSED(f, engram_ack(f->log, "memory", "g", 1, 3, NULL, 0), ENGRAM_EINVAL);
  /* 2 expired but nobody took it yet: the old holder may still finish it. */
  OK(f, engram_ack(f->log, "memory", "g", 2, 1, NULL, 0));
  OK(f, engram_ack(f->log, "memory", "g", 1, 2, NULL, 0));
  engram_group_info i = ginfo(f, "g");
  assert_int_equal(i.acked, 2);
  assert_int_equal(i.redelivered, 1);
  NONE(f, "g", "x");
}

static void a_stale_ack_is_refused_also_while_the_event_waits_for_its_retry(void **state) {
  fx *f = *state;
  add_n(f, 1);
  mkgroup(f, "g", &(engram_group_config){.ack_wait_ms = 1000});
  GOT(f, "g", "slow", 1, 1, 1);
  advance(f, 1000);
  GOT(f, "g", "fast", 1, 2, 1);
  OK(f, engram_nack(f->log, "memory", "g", 1, 2, 60000, "later"));
  REFUSED(f, engram_ack(f->log, "memory", "g", 1, 1, NULL, 0), ENGRAM_ESTALE);
  /* The current holder nacked it: it is not in flight until redelivered. */
  REFUSED(f, engram_ack(f->log, "memory", "g", 1, 2, NULL, 0), ENGRAM_ENOTLEASED);
  REFUSED(f, engram_ack(f->log, "memory", "g", 1, 0, NULL, 0), ENGRAM_ENOTLEASED);
}

static void an_ack_with_attempt_zero_is_not_fenced(void **state) {
  fx *f = *state;
  add_n(f, 1);
  mkgroup(f, "g", &(engram_group_config){.ack_wait_ms = 1000});
  GOT(f, "g", "a", 1, 1, 1);
  advance(f, 1000);
  GOT(f, "g", "b", 1, 2, 1);
  OK(f, engram_ack(f->log, "memory", "g", 1, 0, NULL, 0));
  STATE(f, "g", 1, ENGRAM_STATE_DONE);
}

/* =================================================================================
 * Nack and backoff.
 * ============================================================================== */
static void a_nack_with_a_delay_is_redelivered_at_that_delay_and_not_before(void **state) {
  fx *f = *state;
  add_n(f, 2);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 2, 1, 1, 2);
  OK(f, engram_nack(f->log, "memory", "g", 1, 1, 2000, "rate limited"));
  engram_status st = status(f, "g", 1);
  assert_int_equal(st.state, ENGRAM_STATE_RETRYING);
  assert_true(st.deadline_ns == T0 + 2 * SEC);
  assert_string_equal(st.last_error, "rate limited");
  assert_int_equal(st.attempt, 1);
  /* 2 stays leased to c: the nack only moved 1. */
  STATE(f, "g", 2, ENGRAM_STATE_IN_FLIGHT);
  advance(f, 1999);
  NONE(f, "g", "c");
  advance(f, 1);
  GOT(f, "g", "c2", 10, 2, 1);
  st = status(f, "g", 1);
  assert_string_equal(st.last_error, "rate limited"); /* kept across the redelivery */
  /* A nack with delay 0 is due at once. */
  OK(f, engram_nack(f->log, "memory", "g", 1, 2, 0, NULL));
  GOT(f, "g", "c2", 10, 3, 1);
}

static void a_nack_without_a_delay_follows_the_backoff_schedule_repeating_its_last_step(
    void **state) {
  fx *f = *state;
  add_n(f, 1);
  const uint64_t backoff[] = {1000, 5000};
  mkgroup(f, "g", &(engram_group_config){.backoff_ms = backoff, .n_backoff = 2, .max_deliver = 10});
  int64_t steps[] = {1000, 5000, 5000, 5000};
  GOT(f, "g", "c", 1, 1, 1);
  for (uint32_t k = 0; k < 4; k++) {
    OK(f, engram_nack(f->log, "memory", "g", 1, k + 1, -1, "boom"));
    advance(f, steps[k] - 1);
    NONE(f, "g", "c");
    advance(f, 1);
    GOT(f, "g", "c", 1, k + 2, 1);
  }
  /* Any negative delay means "the schedule". */
  OK(f, engram_nack(f->log, "memory", "g", 1, 5, INT64_MIN, NULL));
  assert_true(status(f, "g", 1).deadline_ns == now(f) + 5 * SEC);
}

static void the_default_backoff_starts_at_one_second(void **state) {
  fx *f = *state;
  add_n(f, 1);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 1, 1, 1);
  OK(f, engram_nack(f->log, "memory", "g", 1, 1, -1, NULL));
  advance(f, 999);
  NONE(f, "g", "c");
  advance(f, 1);
  GOT(f, "g", "c", 1, 2, 1);
  OK(f, engram_nack(f->log, "memory", "g", 1, 2, -1, NULL));
  advance(f, 4999);
  NONE(f, "g", "c");
  advance(f, 1);
  GOT(f, "g", "c", 1, 3, 1);
}

/* =================================================================================
 * Reject, max_deliver and the dead-letter queue.
 * ============================================================================== */
static void a_rejected_event_goes_to_the_dlq_with_its_reason(void **state) {
  fx *f = *state;
  add_n(f, 2);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "worker-1", 2, 1, 1, 2);
  advance(f, 250);
  OK(f, engram_reject(f->log, "memory", "g", 1, 1, "payload is not JSON"));
  engram_dlq_entry *e;
  assert_int_equal(dlq(f, "g", &e), 1);
  assert_int_equal(e[0].offset, 1);
  assert_int_equal(e[0].attempts, 1);
  assert_string_equal(e[0].reason, "rejected: payload is not JSON");
  assert_string_equal(e[0].last_error, "payload is not JSON");
  assert_string_equal(e[0].consumer, "worker-1");
  assert_true(e[0].first_delivered_ns == T0);
  assert_true(e[0].dead_ns == T0 + 250 * MS);
  engram_free(e);
  engram_status st = status(f, "g", 1);
  assert_int_equal(st.state, ENGRAM_STATE_DEAD);
  assert_string_equal(st.last_error, "rejected: payload is not JSON");
  assert_int_equal(st.attempt, 1);
  STATE(f, "g", 2, ENGRAM_STATE_IN_FLIGHT);
  REFUSED(f, engram_ack(f->log, "memory", "g", 1, 1, NULL, 0), ENGRAM_EDEAD);
  REFUSED(f, engram_reject(f->log, "memory", "g", 1, 1, "again"), ENGRAM_EDEAD);
  REFUSED(f, engram_cancel(f->log, "memory", "g", 1), ENGRAM_EDEAD);
  engram_group_info i = ginfo(f, "g");
  assert_int_equal(i.dead, 1);
  assert_int_equal(i.in_flight, 1);
  /* A dead event is finished as far as the floor goes. */
  assert_int_equal(i.floor, 1);
  advance(f, 60000);
  GOT(f, "g", "c", 10, 2, 2); /* never 1 */
}

static void after_max_deliver_nacks_the_event_is_dead_with_attempts_last_error_and_times(
    void **state) {
  fx *f = *state;
  add_n(f, 1);
  mkgroup(f, "g",
          &(engram_group_config){.max_deliver = 3, .backoff_ms = backoff_10ms, .n_backoff = 1});
  char err[32];
  for (uint32_t a = 1; a <= 3; a++) {
    GOT(f, "g", "w", 1, a, 1);
    snprintf(err, sizeof err, "boom %u", a);
    OK(f, engram_nack(f->log, "memory", "g", 1, a, -1, err));
    advance(f, 10);
  }
  NONE(f, "g", "w");
  engram_dlq_entry *e;
  assert_int_equal(dlq(f, "g", &e), 1);
  assert_int_equal(e[0].attempts, 3);
  assert_string_equal(e[0].reason, "max_deliver exceeded: 3 attempts");
  assert_string_equal(e[0].last_error, "boom 3");
  assert_string_equal(e[0].consumer, "w");
  assert_true(e[0].first_delivered_ns == T0);
  assert_true(e[0].dead_ns == T0 + 20 * MS);
  engram_free(e);
  STATE(f, "g", 1, ENGRAM_STATE_DEAD);
  engram_group_info i = ginfo(f, "g");
  assert_int_equal(i.dead, 1);
  assert_int_equal(i.redelivered, 2);
  assert_int_equal(i.retrying, 0);
}

static void an_expired_last_lease_sends_its_open_events_to_the_dlq(void **state) {
  fx *f = *state;
  add_n(f, 3);
  mkgroup(f, "g", &(engram_group_config){.max_deliver = 2, .ack_wait_ms = 1000});
  GOT(f, "g", "a", 3, 1, 1, 2, 3);
  OK(f, engram_nack(f->log, "memory", "g", 3, 1, 0, "flaky"));
  advance(f, 1000);
  GOT(f, "g", "b", 10, 2, 3, 1, 2);
  OK(f, engram_ack(f->log, "memory", "g", 2, 2, NULL, 0));
  advance(f, 1000);
  NONE(f, "g", "c");
  engram_dlq_entry *e;
  assert_int_equal(dlq(f, "g", &e), 2);
  assert_int_equal(e[0].offset, 1);
  assert_int_equal(e[0].attempts, 2);
  assert_string_equal(e[0].reason, "max_deliver exceeded: lease expired");
  assert_string_equal(e[0].consumer, "b");
  assert_true(e[0].first_delivered_ns == T0);
  assert_true(e[0].dead_ns == T0 + 2 * SEC);
  assert_int_equal(e[1].offset, 3);
  assert_string_equal(e[1].last_error, "flaky");
  engram_free(e);
  STATE(f, "g", 2, ENGRAM_STATE_DONE);
  engram_group_info i = ginfo(f, "g");
  assert_int_equal(i.dead, 2);
  assert_int_equal(i.in_flight, 0);
  assert_int_equal(i.lag, 0);
}

static void max_deliver_one_means_one_delivery(void **state) {
  fx *f = *state;
  add_n(f, 1);
  mkgroup(f, "g", &(engram_group_config){.max_deliver = 1});
  GOT(f, "g", "c", 1, 1, 1);
  OK(f, engram_nack(f->log, "memory", "g", 1, 1, 0, NULL));
  STATE(f, "g", 1, ENGRAM_STATE_DEAD);
  NONE(f, "g", "c");
}

static void the_dlq_is_listed_paged_and_purged_all_or_selected(void **state) {
  fx *f = *state;
  add_n(f, 6);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 6, 1, 1, 2, 3, 4, 5, 6);
  for (uint64_t o = 1; o <= 5; o++) {
    char why[16];
    snprintf(why, sizeof why, "bad %llu", (unsigned long long)o);
    OK(f, engram_reject(f->log, "memory", "g", o, 1, why));
  }
  engram_dlq_entry *e;
  size_t n;
  OK(f, engram_dlq_list(f->log, "memory", "g", 3, 2, &e, &n));
  assert_int_equal(n, 2);
  assert_int_equal(e[0].offset, 3);
  assert_string_equal(e[0].reason, "rejected: bad 3");
  assert_int_equal(e[1].offset, 4);
  engram_free(e);
  OK(f, engram_dlq_list(f->log, "memory", "g", 6, 0, &e, &n));
  assert_int_equal(n, 0);
  engram_free(e);

  size_t count = 99;
  const uint64_t some[] = {2, 4};
  OK(f, engram_dlq_purge(f->log, "memory", "g", some, 2, &count));
  assert_int_equal(count, 2);
  assert_int_equal(dlq(f, "g", &e), 3);
  assert_int_equal(e[0].offset, 1);
  assert_int_equal(e[1].offset, 3);
  assert_int_equal(e[2].offset, 5);
  engram_free(e);
  STATE(f, "g", 2, ENGRAM_STATE_DONE); /* purged: finished, never delivered again */
  /* One offset that is not dead: nothing is purged. */
  const uint64_t mixed[] = {1, 6};
  REFUSED(f, engram_dlq_purge(f->log, "memory", "g", mixed, 2, &count), ENGRAM_ENOTFOUND);
  OK(f, engram_dlq_purge(f->log, "memory", "g", NULL, 0, &count));
  assert_int_equal(count, 3);
  assert_int_equal(dlq(f, "g", NULL), 0);
  assert_int_equal(ginfo(f, "g").dead, 0);
  OK(f, engram_dlq_purge(f->log, "memory", "g", NULL, 0, NULL));
  advance(f, 3600000);
  GOT(f, "g", "c", 10, 2, 6);
}

static void a_redriven_event_is_delivered_again_to_its_group_only(void **state) {
  fx *f = *state;
  add_n(f, 3);
  mkgroup(f, "a", NULL);
  mkgroup(f, "b", NULL);
  GOT(f, "a", "c", 10, 1, 1, 2, 3);
  GOT(f, "b", "c", 10, 1, 1, 2, 3);
  OK(f, engram_reject(f->log, "memory", "a", 2, 1, "bug"));
  for (uint64_t o = 1; o <= 3; o++) OK(f, engram_ack(f->log, "memory", "b", o, 1, NULL, 0));
  OK(f, engram_ack(f->log, "memory", "a", 1, 1, NULL, 0));
  OK(f, engram_ack(f->log, "memory", "a", 3, 1, NULL, 0));
  size_t count = 0;
  OK(f, engram_dlq_redrive(f->log, "memory", "a", NULL, 0, &count));
  assert_int_equal(count, 1);
  assert_int_equal(dlq(f, "a", NULL), 0);
  STATE(f, "a", 2, ENGRAM_STATE_RETRYING);
  NONE(f, "b", "c");
  GOT(f, "a", "c2", 10, 1, 2); /* a fresh attempt count */
  NONE(f, "b", "c");
  OK(f, engram_ack(f->log, "memory", "a", 2, 1, "fixed", 5));
  STATE(f, "a", 2, ENGRAM_STATE_DONE);
  NONE(f, "a", "c");
  NONE(f, "b", "c");
  assert_int_equal(ginfo(f, "b").acked, 3);
  assert_int_equal(ginfo(f, "a").acked, 3);
}

static void redriving_selected_entries_leaves_the_others_dead(void **state) {
  fx *f = *state;
  add_n(f, 4);
  mkgroup(f, "g", &(engram_group_config){.max_deliver = 2});
  GOT(f, "g", "c", 10, 1, 1, 2, 3, 4);
  for (uint64_t o = 1; o <= 3; o++) OK(f, engram_reject(f->log, "memory", "g", o, 1, "x"));
  const uint64_t pick[] = {3, 1};
  size_t count = 0;
  OK(f, engram_dlq_redrive(f->log, "memory", "g", pick, 2, &count));
  assert_int_equal(count, 2);
  GOT(f, "g", "c", 10, 1, 1, 3);
  STATE(f, "g", 2, ENGRAM_STATE_DEAD);
  /* An offset that is not dead: nothing is redriven. */
  const uint64_t bad[] = {2, 4};
  REFUSED(f, engram_dlq_redrive(f->log, "memory", "g", bad, 2, &count), ENGRAM_ENOTFOUND);
  /* A redriven event gets max_deliver fresh attempts. */
  OK(f, engram_nack(f->log, "memory", "g", 1, 1, 0, NULL));
  GOT(f, "g", "c", 10, 2, 1);
  OK(f, engram_nack(f->log, "memory", "g", 1, 2, 0, "again"));
  STATE(f, "g", 1, ENGRAM_STATE_DEAD);
}

static void a_redriven_event_whose_batch_is_still_leased_does_not_disturb_the_batch(void **state) {
  fx *f = *state;
  add_n(f, 3);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 3, 1, 1, 2, 3);
  OK(f, engram_reject(f->log, "memory", "g", 1, 1, "x")); /* the batch lease is keyed at 1 */
  OK(f, engram_dlq_redrive(f->log, "memory", "g", NULL, 0, NULL));
  GOT(f, "g", "d", 10, 1, 1);
  STATE(f, "g", 2, ENGRAM_STATE_IN_FLIGHT);
  OK(f, engram_ack(f->log, "memory", "g", 2, 1, NULL, 0));
  OK(f, engram_ack(f->log, "memory", "g", 3, 1, NULL, 0));
  OK(f, engram_ack(f->log, "memory", "g", 1, 1, NULL, 0));
  engram_group_info i = ginfo(f, "g");
  assert_int_equal(i.lag, 0);
  assert_int_equal(i.in_flight, 0);
}

/* =================================================================================
 * Extend.
 * ============================================================================== */
static void an_extended_lease_is_not_redelivered_before_its_new_deadline(void **state) {
  fx *f = *state;
  add_n(f, 2);
  mkgroup(f, "g", &(engram_group_config){.ack_wait_ms = 10000});
  GOT(f, "g", "c", 2, 1, 1, 2);
  advance(f, 8000);
  OK(f, engram_extend(f->log, "memory", "g", 1, 1, 20000));
  engram_status st = status(f, "g", 2); /* the whole batch's lease moved */
  assert_int_equal(st.state, ENGRAM_STATE_IN_FLIGHT);
  assert_true(st.deadline_ns == T0 + 28 * SEC);
  advance(f, 19999);
  NONE(f, "g", "d");
  advance(f, 1);
  GOT(f, "g", "d", 10, 2, 1, 2);
  /* ms 0 = the group's ack_wait. */
  OK(f, engram_extend(f->log, "memory", "g", 2, 2, 0));
  assert_true(status(f, "g", 1).deadline_ns == now(f) + 10 * SEC);
}

static void extending_an_event_that_is_not_in_flight_is_refused(void **state) {
  fx *f = *state;
  add_n(f, 2);
  mkgroup(f, "g", NULL);
  REFUSED(f, engram_extend(f->log, "memory", "g", 1, 1, 0), ENGRAM_ENOTLEASED);
  GOT(f, "g", "c", 1, 1, 1);
  OK(f, engram_nack(f->log, "memory", "g", 1, 1, 5000, NULL));
  REFUSED(f, engram_extend(f->log, "memory", "g", 1, 1, 0), ENGRAM_ENOTLEASED);
}

/* =================================================================================
 * Cancel.
 * ============================================================================== */
static void cancelling_a_pending_event_finishes_it_without_delivery(void **state) {
  fx *f = *state;
  add_n(f, 3);
  mkgroup(f, "g", NULL);
  OK(f, engram_cancel(f->log, "memory", "g", 2));
  STATE(f, "g", 2, ENGRAM_STATE_DONE);
  REFUSED(f, engram_cancel(f->log, "memory", "g", 2), ENGRAM_EALREADY);
  REFUSED(f, engram_ack(f->log, "memory", "g", 2, 0, NULL, 0), ENGRAM_ENOTLEASED);
  GOT(f, "g", "c", 10, 1, 1, 3);
  STATE(f, "g", 2, ENGRAM_STATE_DONE);
  REFUSED(f, engram_ack(f->log, "memory", "g", 2, 0, NULL, 0), ENGRAM_EALREADY);
  REFUSED(f, engram_cancel(f->log, "memory", "g", 2), ENGRAM_EALREADY);
  /* Cancelling ahead of the head is refused. */
  REFUSED(f, engram_cancel(f->log, "memory", "g", 4), ENGRAM_ENOTFOUND);
  REFUSED(f, engram_cancel(f->log, "memory", "g", 0), ENGRAM_ENOTFOUND);
}

static void cancelling_ahead_of_the_cursor_skips_the_event_when_the_cursor_reaches_it(
    void **state) {
  fx *f = *state;
  add_n(f, 6);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 2, 1, 1, 2);
  OK(f, engram_cancel(f->log, "memory", "g", 4));
  OK(f, engram_cancel(f->log, "memory", "g", 5));
  STATE(f, "g", 4, ENGRAM_STATE_DONE);
  reopen(f); /* skip markers are stored */
  GOT(f, "g", "c", 2, 1, 3, 6);
  STATE(f, "g", 4, ENGRAM_STATE_DONE);
  STATE(f, "g", 5, ENGRAM_STATE_DONE);
  add_n(f, 1);
  GOT(f, "g", "c", 10, 1, 7);
}

static void cancelling_an_in_flight_event_is_refused_with_ebusy(void **state) {
  fx *f = *state;
  add_n(f, 1);
  mkgroup(f, "g", &(engram_group_config){.ack_wait_ms = 1000});
  GOT(f, "g", "c", 1, 1, 1);
  REFUSED(f, engram_cancel(f->log, "memory", "g", 1), ENGRAM_EBUSY);
  assert_non_null(strstr(f->msg, "held by c"));
}

static void cancelling_a_retrying_event_finishes_it(void **state) {
  fx *f = *state;
  add_n(f, 3);
  mkgroup(f, "g", &(engram_group_config){.ack_wait_ms = 1000});
  GOT(f, "g", "c", 3, 1, 1, 2, 3);
  OK(f, engram_nack(f->log, "memory", "g", 1, 1, 60000, NULL));
  OK(f, engram_cancel(f->log, "memory", "g", 1));
  STATE(f, "g", 1, ENGRAM_STATE_DONE);
  /* An expired lease is retrying too, by status and by cancel. */
  advance(f, 1000);
  STATE(f, "g", 2, ENGRAM_STATE_RETRYING);
  OK(f, engram_cancel(f->log, "memory", "g", 2));
  STATE(f, "g", 2, ENGRAM_STATE_DONE);
  advance(f, 60000);
  GOT(f, "g", "c", 10, 2, 3);
  REFUSED(f, engram_ack(f->log, "memory", "g", 2, 1, NULL, 0), ENGRAM_EALREADY);
}

/* =================================================================================
 * Key order.
 * ============================================================================== */
static void a_key_ordered_group_never_has_two_events_of_one_key_in_flight(void **state) {
  fx *f = *state;
  add(f, "memory.saved", "A");   /* 1 */
  add(f, "memory.saved", "B");   /* 2 */
  add(f, "memory.updated", "A"); /* 3 */
  add(f, "memory.deleted", "A"); /* 4 */
  add(f, "memory.updated", "B"); /* 5 */
  add(f, "memory.saved", NULL);  /* 6: no key, no order */
  mkgroup(f, "g", &(engram_group_config){.flags = ENGRAM_GROUP_KEY_ORDERED});
  GOT(f, "g", "c1", 10, 1, 1, 2, 6);
  STATE(f, "g", 3, ENGRAM_STATE_PENDING);
  STATE(f, "g", 4, ENGRAM_STATE_PENDING);
  REFUSED(f, engram_ack(f->log, "memory", "g", 3, 0, NULL, 0), ENGRAM_ENOTLEASED);
  NONE(f, "g", "c2");
  engram_group_info i = ginfo(f, "g");
  assert_int_equal(i.in_flight, 3);
  assert_int_equal(i.floor, 0);
  OK(f, engram_ack(f->log, "memory", "g", 1, 1, NULL, 0));
  GOT(f, "g", "c2", 10, 1, 3);
  NONE(f, "g", "c3");
  OK(f, engram_ack(f->log, "memory", "g", 2, 1, NULL, 0));
  GOT(f, "g", "c3", 10, 1, 5);
  OK(f, engram_ack(f->log, "memory", "g", 3, 1, NULL, 0));
  GOT(f, "g", "c1", 10, 1, 4);
  /* A new event of a free key goes at once; one of a busy key waits. */
  add(f, "memory.saved", "C"); /* 7 */
  add(f, "memory.saved", "A"); /* 8 */
  GOT(f, "g", "c1", 10, 1, 7);
  OK(f, engram_ack(f->log, "memory", "g", 4, 1, NULL, 0));
  GOT(f, "g", "c1", 10, 1, 8);
}

static void a_nack_or_expiry_of_the_first_event_of_a_key_holds_back_the_second(void **state) {
  fx *f = *state;
  add(f, "memory.saved", "A");   /* 1 */
  add(f, "memory.deleted", "A"); /* 2 */
  mkgroup(f, "g", &(engram_group_config){.flags = ENGRAM_GROUP_KEY_ORDERED, .ack_wait_ms = 1000});
  GOT(f, "g", "c", 10, 1, 1);
  OK(f, engram_nack(f->log, "memory", "g", 1, 1, 500, NULL));
  NONE(f, "g", "c");
  advance(f, 500);
  GOT(f, "g", "c", 10, 2, 1);
  advance(f, 1000); /* the lease expires */
  GOT(f, "g", "c", 10, 3, 1);
  OK(f, engram_ack(f->log, "memory", "g", 1, 3, NULL, 0));
  GOT(f, "g", "c", 10, 1, 2);
}

static void the_death_of_the_first_event_of_a_key_frees_the_key(void **state) {
  fx *f = *state;
  add(f, "memory.saved", "A");
  add(f, "memory.updated", "A");
  add(f, "memory.deleted", "A");
  mkgroup(f, "g",
          &(engram_group_config){
              .flags = ENGRAM_GROUP_KEY_ORDERED, .max_deliver = 1, .ack_wait_ms = 1000});
  GOT(f, "g", "c", 10, 1, 1);
  OK(f, engram_reject(f->log, "memory", "g", 1, 1, "x"));
  GOT(f, "g", "c", 10, 1, 2);
  advance(f, 1000); /* the last allowed lease of 2 expires */
  GOT(f, "g", "c", 10, 1, 3);
  STATE(f, "g", 2, ENGRAM_STATE_DEAD);
}

static void cancelling_an_event_waiting_behind_its_key_does_not_stall_the_key(void **state) {
  fx *f = *state;
  add(f, "memory.saved", "A");   /* 1 */
  add(f, "memory.updated", "A"); /* 2 */
  add(f, "memory.deleted", "A"); /* 3 */
  mkgroup(f, "g", &(engram_group_config){.flags = ENGRAM_GROUP_KEY_ORDERED});
  GOT(f, "g", "c", 10, 1, 1);
  OK(f, engram_cancel(f->log, "memory", "g", 2));
  STATE(f, "g", 2, ENGRAM_STATE_DONE);
  OK(f, engram_ack(f->log, "memory", "g", 1, 1, NULL, 0));
  GOT(f, "g", "c", 10, 1, 3);
  OK(f, engram_ack(f->log, "memory", "g", 3, 1, NULL, 0));
  assert_int_equal(ginfo(f, "g").lag, 0);
}

static void an_event_waiting_behind_its_key_still_waits_for_its_deliver_at(void **state) {
  fx *f = *state;
  add(f, "memory.saved", "A");                               /* 1 */
  add_to(f, "memory", "memory.updated", "A", T0 + 60 * SEC); /* 2 */
  add(f, "memory.deleted", "A");                             /* 3 */
  mkgroup(f, "g", &(engram_group_config){.flags = ENGRAM_GROUP_KEY_ORDERED});
  GOT(f, "g", "c", 10, 1, 1);
  OK(f, engram_ack(f->log, "memory", "g", 1, 1, NULL, 0));
  NONE(f, "g", "c");
  STATE(f, "g", 2, ENGRAM_STATE_RETRYING);
  STATE(f, "g", 3, ENGRAM_STATE_PENDING);
  advance(f, 59999);
  NONE(f, "g", "c");
  advance(f, 1);
  GOT(f, "g", "c", 10, 1, 2);
  OK(f, engram_ack(f->log, "memory", "g", 2, 1, NULL, 0));
  GOT(f, "g", "c", 10, 1, 3);
}

static void a_long_queue_behind_one_key_is_handed_over_in_offset_order_across_reopens(
    void **state) {
  fx *f = *state;
  const uint64_t n = 300;
  /* Every event is of key "hot" but each 50th, of key "cold"; each 10th + 5 is cancelled. */
  for (uint64_t o = 1; o <= n; o++)
    add(f, o % 3 ? "memory.updated" : "memory.saved", o % 50 ? "hot" : "cold");
  mkgroup(f, "g", &(engram_group_config){.flags = ENGRAM_GROUP_KEY_ORDERED});
  GOT(f, "g", "c", 100, 1, 1, 50);
  for (uint64_t o = 5; o <= n; o += 10) OK(f, engram_cancel(f->log, "memory", "g", o));
  OK(f, engram_ack(f->log, "memory", "g", 1, 1, NULL, 0));
  OK(f, engram_ack(f->log, "memory", "g", 50, 1, NULL, 0));
  uint64_t expect = 2, hot_left = n - n / 50 - n / 10 - 1;
  while (hot_left) {
    engram_batch *b = fetch(f, "g", "c", 100);
    int hot = 0;
    for (size_t i = 0; i < b->count; i++) {
      uint64_t o = b->events[i].offset;
      OK(f, engram_ack(f->log, "memory", "g", o, 1, NULL, 0));
      if (o % 50 == 0) continue;
      /* One hot event at a time, in offset order, never a cancelled one. */
      hot++;
      while (expect % 10 == 5 || expect % 50 == 0) expect++;
      assert_int_equal(o, expect);
      expect++;
      if (--hot_left % 25 == 0) reopen(f);
    }
    engram_batch_free(b);
    assert_int_equal(hot, 1);
  }
  NONE(f, "g", "c");
  engram_group_info i = ginfo(f, "g");
  assert_int_equal(i.lag, 0);
  assert_int_equal(i.acked, n - n / 10);
}

static void a_redriven_event_of_a_key_ordered_group_runs_outside_key_order(void **state) {
  fx *f = *state;
  add(f, "memory.saved", "A");   /* 1 */
  add(f, "memory.updated", "A"); /* 2 */
  add(f, "memory.deleted", "A"); /* 3 */
  mkgroup(f, "g", &(engram_group_config){.flags = ENGRAM_GROUP_KEY_ORDERED});
  GOT(f, "g", "c", 10, 1, 1);
  OK(f, engram_reject(f->log, "memory", "g", 1, 1, "bad")); /* the key passes to 2 */
  GOT(f, "g", "c", 10, 1, 2);
  OK(f, engram_dlq_redrive(f->log, "memory", "g", NULL, 0, NULL));
  GOT(f, "g", "c", 10, 1, 1); /* while 2 holds the key */
  OK(f, engram_ack(f->log, "memory", "g", 2, 1, NULL, 0));
  GOT(f, "g", "c", 10, 1, 3); /* 1 does not hold the key either */
  OK(f, engram_ack(f->log, "memory", "g", 3, 1, NULL, 0));
  OK(f, engram_ack(f->log, "memory", "g", 1, 1, NULL, 0));
  assert_int_equal(ginfo(f, "g").lag, 0);
}

static void a_group_that_is_not_key_ordered_delivers_one_key_in_parallel(void **state) {
  fx *f = *state;
  add(f, "memory.saved", "A");
  add(f, "memory.updated", "A");
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 10, 1, 1, 2);
}

/* =================================================================================
 * Delayed delivery.
 * ============================================================================== */
static void a_delayed_event_is_delivered_to_no_group_before_its_time(void **state) {
  fx *f = *state;
  mkgroup(f, "a", NULL);
  mkgroup(f, "b", NULL);
  add_to(f, "memory", "memory.saved", NULL, T0 + 30 * SEC); /* 1 */
  add(f, "memory.saved", NULL);                             /* 2 */
  add_to(f, "memory", "memory.saved", NULL, T0 - SEC);      /* 3: already due */
  GOT(f, "a", "c", 10, 1, 2, 3);
  engram_status st = status(f, "a", 1);
  assert_int_equal(st.state, ENGRAM_STATE_RETRYING);
  assert_true(st.deadline_ns == T0 + 30 * SEC);
  assert_int_equal(st.attempt, 0);
  STATE(f, "b", 1, ENGRAM_STATE_PENDING); /* b has not looked yet */
  assert_int_equal(ginfo(f, "a").retrying, 1);
  advance(f, 29999);
  NONE(f, "a", "c");
  GOT(f, "b", "c", 10, 1, 2, 3);
  for (uint64_t o = 2; o <= 3; o++) {
    OK(f, engram_ack(f->log, "memory", "a", o, 1, NULL, 0));
    OK(f, engram_ack(f->log, "memory", "b", o, 1, NULL, 0));
  }
  reopen(f);
  advance(f, 1);
  GOT(f, "a", "c", 10, 1, 1);
  GOT(f, "b", "c", 10, 1, 1);
  engram_group_info i = ginfo(f, "a");
  assert_int_equal(i.redelivered, 0);
  assert_int_equal(i.delivered, 3);
  /* A group created later sees it at once. */
  mkgroup(f, "late", NULL);
  GOT(f, "late", "c", 10, 1, 1, 2, 3);
}

/* =================================================================================
 * Status.
 * ============================================================================== */
static void status_reports_every_state_with_its_details(void **state) {
  fx *f = *state;
  const char *filters[] = {"memory.*"};
  mkgroup(f, "g", &(engram_group_config){.filters = filters, .n_filters = 1, .ack_wait_ms = 10000});
  add(f, "memory.saved", NULL); /* 1: done with a result */
  add(f, "audit.login", NULL);  /* 2: skipped */
  add(f, "memory.saved", NULL); /* 3: lease expired -> retrying */
  add(f, "memory.saved", NULL); /* 4: nacked -> retrying */
  add(f, "memory.saved", NULL); /* 5: rejected -> dead */
  GOT(f, "g", "c1", 10, 1, 1, 3, 4, 5);
  OK(f, engram_ack(f->log, "memory", "g", 1, 1, "res", 3));
  OK(f, engram_nack(f->log, "memory", "g", 4, 1, 60000, "oops"));
  OK(f, engram_reject(f->log, "memory", "g", 5, 1, "nope"));
  add(f, "memory.saved", NULL); /* 6: in flight */
  add(f, "memory.saved", NULL); /* 7: pending */
  advance(f, 5000);
  GOT(f, "g", "c2", 1, 1, 6);
  advance(f, 5000); /* T0+10s: the first lease ends */

  engram_status st = status(f, "g", 1);
  assert_int_equal(st.state, ENGRAM_STATE_DONE);
  assert_int_equal(st.result_len, 3);
  assert_memory_equal(st.result, "res", 3);
  engram_free(st.result);
  st = status(f, "g", 2);
  assert_int_equal(st.state, ENGRAM_STATE_SKIPPED);
  st = status(f, "g", 3);
  assert_int_equal(st.state, ENGRAM_STATE_RETRYING);
  assert_int_equal(st.attempt, 1);
  assert_string_equal(st.consumer, "c1");
  assert_true(st.deadline_ns == T0 + 10 * SEC);
  st = status(f, "g", 4);
  assert_int_equal(st.state, ENGRAM_STATE_RETRYING);
  assert_true(st.deadline_ns == T0 + 60 * SEC);
  assert_string_equal(st.last_error, "oops");
  assert_int_equal(st.attempt, 1);
  st = status(f, "g", 5);
  assert_int_equal(st.state, ENGRAM_STATE_DEAD);
  assert_string_equal(st.last_error, "rejected: nope");
  assert_int_equal(st.attempt, 1);
  st = status(f, "g", 6);
  assert_int_equal(st.state, ENGRAM_STATE_IN_FLIGHT);
  assert_string_equal(st.consumer, "c2");
  assert_int_equal(st.attempt, 1);
  assert_true(st.deadline_ns == T0 + 15 * SEC);
  st = status(f, "g", 7);
  assert_int_equal(st.state, ENGRAM_STATE_PENDING);
  assert_int_equal(st.attempt, 0);
  FAILS(f, engram_status_get(f->log, "memory", "g", 8, &st), ENGRAM_ENOTFOUND);
  FAILS(f, engram_status_get(f->log, "memory", "g", 0, &st), ENGRAM_ENOTFOUND);
  assert_string_equal(engram_state_name(ENGRAM_STATE_IN_FLIGHT), "in_flight");
  assert_string_equal(engram_state_name(ENGRAM_STATE_SKIPPED), "skipped");
}

/* =================================================================================
 * Counters.
 * ============================================================================== */
static void counters_track_lag_in_flight_retrying_dead_acked_redelivered_and_the_oldest(
    void **state) {
  fx *f = *state;
  for (int i = 1; i <= 10; i++) {
    add(f, "memory.saved", NULL); /* offset i at T0 + (i-1) s */
    advance(f, 1000);
  }
  mkgroup(f, "g", &(engram_group_config){.ack_wait_ms = 10000});
  engram_group_info i = ginfo(f, "g");
  assert_int_equal(i.lag, 10);
  assert_true(i.oldest_unfinished_ns == T0);
  GOT(f, "g", "c", 6, 1, 1, 2, 3, 4, 5, 6);
  OK(f, engram_ack(f->log, "memory", "g", 1, 1, NULL, 0));
  OK(f, engram_ack(f->log, "memory", "g", 2, 1, NULL, 0));
  OK(f, engram_nack(f->log, "memory", "g", 3, 1, 60000, NULL));
  OK(f, engram_reject(f->log, "memory", "g", 4, 1, "x"));
  i = ginfo(f, "g");
  assert_int_equal(i.next, 7);
  assert_int_equal(i.floor, 2);
  assert_int_equal(i.lag, 8);
  assert_int_equal(i.in_flight, 2);
  assert_int_equal(i.retrying, 1);
  assert_int_equal(i.dead, 1);
  assert_int_equal(i.acked, 2);
  assert_int_equal(i.delivered, 6);
  assert_int_equal(i.redelivered, 0);
  assert_true(i.oldest_unfinished_ns == T0 + 2 * SEC);
  advance(f, 10000);
  GOT(f, "g", "c", 10, 0, 5, 6, 7, 8, 9, 10);
  OK(f, engram_cancel(f->log, "memory", "g", 3));
  i = ginfo(f, "g");
  assert_int_equal(i.floor, 4);
  assert_int_equal(i.lag, 6);
  assert_int_equal(i.in_flight, 6);
  assert_int_equal(i.retrying, 0);
  assert_int_equal(i.delivered, 12);
  assert_int_equal(i.redelivered, 2);
  assert_true(i.oldest_unfinished_ns == T0 + 4 * SEC);
  for (uint64_t o = 5; o <= 10; o++) OK(f, engram_ack(f->log, "memory", "g", o, 0, NULL, 0));
  i = ginfo(f, "g");
  assert_int_equal(i.floor, 10);
  assert_int_equal(i.lag, 0);
  assert_int_equal(i.in_flight, 0);
  assert_int_equal(i.acked, 8);
  assert_int_equal(i.oldest_unfinished_ns, 0);
  /* group_list reports the same counters. */
  engram_group_info *list;
  size_t n;
  OK(f, engram_group_list(f->log, "memory", &list, &n));
  assert_int_equal(n, 1);
  assert_int_equal(list[0].floor, i.floor);
  assert_int_equal(list[0].acked, i.acked);
  assert_int_equal(list[0].delivered, i.delivered);
  assert_int_equal(list[0].redelivered, i.redelivered);
  engram_free(list);
}

/* =================================================================================
 * Replay.
 * ============================================================================== */
static void reset_to_an_offset_or_a_time_replays_from_there(void **state) {
  fx *f = *state;
  for (int i = 0; i < 5; i++) {
    add(f, "memory.saved", NULL); /* offset i+1 at T0 + i s */
    advance(f, 1000);
  }
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 10, 1, 1, 2, 3, 4, 5);
  for (uint64_t o = 1; o <= 5; o++) OK(f, engram_ack(f->log, "memory", "g", o, 1, NULL, 0));
  OK(f, engram_group_reset(f->log, "memory", "g", ENGRAM_START_OFFSET, 2, 0));
  assert_int_equal(ginfo(f, "g").next, 2);
  assert_int_equal(ginfo(f, "g").lag, 4);
  STATE(f, "g", 3, ENGRAM_STATE_PENDING);
  GOT(f, "g", "c", 10, 1, 2, 3, 4, 5);
  OK(f, engram_group_reset(f->log, "memory", "g", ENGRAM_START_TIME, 0, T0 + 3 * SEC + 500 * MS));
  GOT(f, "g", "c", 10, 1, 5);
  OK(f, engram_group_reset(f->log, "memory", "g", ENGRAM_START_EARLIEST, 0, 0));
  GOT(f, "g", "c", 2, 1, 1, 2);
  OK(f, engram_group_reset(f->log, "memory", "g", ENGRAM_START_LATEST, 0, 0));
  NONE(f, "g", "c");
  engram_group_info i = ginfo(f, "g");
  assert_int_equal(i.in_flight, 0);
  assert_int_equal(i.lag, 0);
  assert_int_equal(i.acked, 5); /* totals survive */
  REFUSED(f, engram_group_reset(f->log, "memory", "g", ENGRAM_START_OFFSET, 7, 0), ENGRAM_EINVAL);
  assert_string_equal(f->msg, "reset group memory/g: start offset 7 beyond head 5 + 1");
  REFUSED(f, engram_group_reset(f->log, "memory", "g", ENGRAM_START_OFFSET, 0, 0), ENGRAM_EINVAL);
  REFUSED(f, engram_group_reset(f->log, "memory", "g", ENGRAM_START_TIME, 0, -1), ENGRAM_EINVAL);
  REFUSED(f, engram_group_reset(f->log, "memory", "g", (engram_start)9, 0, 0), ENGRAM_EINVAL);
  REFUSED(f, engram_group_reset(f->log, "memory", "nope", ENGRAM_START_EARLIEST, 0, 0),
          ENGRAM_ENOTFOUND);
}

static void a_reset_drops_leases_and_retries_and_restarts_attempts(void **state) {
  fx *f = *state;
  add_n(f, 3);
  mkgroup(f, "g", &(engram_group_config){.ack_wait_ms = 1000});
  GOT(f, "g", "old", 3, 1, 1, 2, 3);
  advance(f, 1000);
  GOT(f, "g", "old", 3, 2, 1, 2, 3);
  OK(f, engram_nack(f->log, "memory", "g", 3, 2, 60000, NULL));
  OK(f, engram_group_reset(f->log, "memory", "g", ENGRAM_START_OFFSET, 1, 0));
  engram_group_info i = ginfo(f, "g");
  assert_int_equal(i.in_flight, 0);
  assert_int_equal(i.retrying, 0);
  STATE(f, "g", 1, ENGRAM_STATE_PENDING);
  /* The dropped lease cannot be acked... */
  REFUSED(f, engram_ack(f->log, "memory", "g", 1, 2, NULL, 0), ENGRAM_ENOTLEASED);
  GOT(f, "g", "new", 10, 1, 1, 2, 3);
  /* ...and once redelivered the count starts again at 1, so an ack quoting attempt 2
   * is one the group never issued, while one quoting 1 is the new holder's. */
  REFUSED(f, engram_ack(f->log, "memory", "g", 1, 2, NULL, 0), ENGRAM_EINVAL);
  OK(f, engram_ack(f->log, "memory", "g", 1, 1, NULL, 0));
}

static void a_reset_keeps_the_dlq_and_replay_does_not_deliver_dead_events(void **state) {
  fx *f = *state;
  add_n(f, 3);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 3, 1, 1, 2, 3);
  OK(f, engram_reject(f->log, "memory", "g", 2, 1, "bad"));
  OK(f, engram_ack(f->log, "memory", "g", 1, 1, NULL, 0));
  OK(f, engram_ack(f->log, "memory", "g", 3, 1, NULL, 0));
  OK(f, engram_group_reset(f->log, "memory", "g", ENGRAM_START_EARLIEST, 0, 0));
  assert_int_equal(dlq(f, "g", NULL), 1);
  STATE(f, "g", 2, ENGRAM_STATE_DEAD);
  GOT(f, "g", "c", 10, 1, 1, 3);
  STATE(f, "g", 2, ENGRAM_STATE_DEAD);
  /* Redrive delivers it once. */
  OK(f, engram_dlq_redrive(f->log, "memory", "g", NULL, 0, NULL));
  GOT(f, "g", "c", 10, 1, 2);
  NONE(f, "g", "c");
}

static void redriving_an_event_the_cursor_has_not_reached_again_delivers_it_once(void **state) {
  fx *f = *state;
  add_n(f, 4);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 4, 1, 1, 2, 3, 4);
  OK(f, engram_reject(f->log, "memory", "g", 3, 1, "bad"));
  OK(f, engram_group_reset(f->log, "memory", "g", ENGRAM_START_EARLIEST, 0, 0));
  OK(f, engram_dlq_redrive(f->log, "memory", "g", NULL, 0, NULL));
  STATE(f, "g", 3, ENGRAM_STATE_PENDING);
  GOT(f, "g", "c", 2, 1, 1, 2);
  GOT(f, "g", "c", 10, 1, 3, 4);
  NONE(f, "g", "c");
  for (uint64_t o = 1; o <= 4; o++) OK(f, engram_ack(f->log, "memory", "g", o, 1, NULL, 0));
  assert_int_equal(ginfo(f, "g").lag, 0);
}

/* =================================================================================
 * Transactions.
 * ============================================================================== */
static void a_transaction_commits_acks_and_appends_together(void **state) {
  fx *f = *state;
  tu_topic(f->log, "summaries", NULL);
  add_n(f, 2);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 2, 1, 1, 2);
  engram_txn *t;
  OK(f, engram_txn_begin(f->log, &t));
  uint64_t o1 = 0, o2 = 0;
  engram_event out = {
      .type = "summary.made", .payload = "s", .payload_len = 1, .idempotency_key = "from-1"};
  OK(f, engram_txn_ack(t, "memory", "g", 1, 1, "made 1", 6));
  OK(f, engram_txn_append(t, "summaries", &out, &o1));
  out.idempotency_key = "from-2";
  OK(f, engram_txn_append(t, "summaries", &out, &o2));
  OK(f, engram_txn_ack(t, "memory", "g", 2, 1, NULL, 0));
  OK(f, engram_txn_commit(t));
  assert_int_equal(o1, 1);
  assert_int_equal(o2, 2);
  STATE(f, "g", 1, ENGRAM_STATE_DONE);
  STATE(f, "g", 2, ENGRAM_STATE_DONE);
  engram_status st = status(f, "g", 1);
  assert_int_equal(st.result_len, 6);
  engram_free(st.result);
  engram_topic_info ti;
  OK(f, engram_topic_info_get(f->log, "summaries", &ti));
  assert_int_equal(ti.head_offset, 2);
  assert_int_equal(ginfo(f, "g").acked, 2);
  /* An empty transaction commits nothing; abort frees. */
  OK(f, engram_txn_begin(f->log, &t));
  OK(f, engram_txn_commit(t));
  OK(f, engram_txn_begin(f->log, &t));
  OK(f, engram_txn_append(t, "summaries", &out, NULL));
  engram_txn_abort(t);
  OK(f, engram_topic_info_get(f->log, "summaries", &ti));
  assert_int_equal(ti.head_offset, 2);
}

static void a_failing_ack_aborts_the_appends_of_its_transaction(void **state) {
  fx *f = *state;
  tu_topic(f->log, "summaries", NULL);
  add_n(f, 2);
  mkgroup(f, "g", &(engram_group_config){.ack_wait_ms = 1000});
  GOT(f, "g", "slow", 2, 1, 1, 2);
  OK(f, engram_ack(f->log, "memory", "g", 2, 1, NULL, 0));
  advance(f, 1000);
  GOT(f, "g", "fast", 2, 2, 1);
  engram_event out = {.type = "summary.made", .payload = "s", .payload_len = 1};
  int cases[] = {ENGRAM_ESTALE, ENGRAM_EALREADY, ENGRAM_ENOTFOUND};
  for (int k = 0; k < 3; k++) {
    engram_txn *t;
    OK(f, engram_txn_begin(f->log, &t));
    OK(f, engram_txn_append(t, "summaries", &out, NULL));
    if (k == 0) OK(f, engram_txn_ack(t, "memory", "g", 1, 1, "r", 1));  /* the slow worker: stale */
    if (k == 1) OK(f, engram_txn_ack(t, "memory", "g", 2, 1, NULL, 0)); /* already acked */
    if (k == 2) OK(f, engram_txn_ack(t, "memory", "nope", 1, 0, NULL, 0));
    OK(f, engram_txn_append(t, "summaries", &out, NULL));
    snap s;
    snap_take(f, &s);
    fails_at(f, engram_txn_commit(t), cases[k], "txn commit", __LINE__);
    snap_same(f, &s, __LINE__);
    snap_free(&s);
    engram_topic_info ti;
    OK(f, engram_topic_info_get(f->log, "summaries", &ti));
    assert_int_equal(ti.head_offset, 0);
  }
  /* The ack that fails also leaves the rest of its own transaction's acks undone. */
  engram_txn *t;
  OK(f, engram_txn_begin(f->log, &t));
  OK(f, engram_txn_ack(t, "memory", "g", 1, 2, NULL, 0));
  OK(f, engram_txn_ack(t, "memory", "g", 1, 2, NULL, 0));
  FAILS(f, engram_txn_commit(t), ENGRAM_EALREADY);
  STATE(f, "g", 1, ENGRAM_STATE_IN_FLIGHT);
}

/* =================================================================================
 * Topic drop, reopen.
 * ============================================================================== */
static void dropping_a_topic_removes_its_groups(void **state) {
  fx *f = *state;
  tu_topic(f->log, "other", NULL);
  add_n(f, 2);
  mkgroup(f, "g", NULL);
  OK(f, engram_group_create(f->log, "other", "g", NULL));
  GOT(f, "g", "c", 2, 1, 1, 2);
  OK(f, engram_reject(f->log, "memory", "g", 1, 1, "x"));
  OK(f, engram_ack(f->log, "memory", "g", 2, 1, "r", 1));
  OK(f, engram_topic_drop(f->log, "memory"));
  engram_group_info *list;
  size_t n;
  OK(f, engram_group_list(f->log, NULL, &list, &n));
  assert_int_equal(n, 1);
  assert_string_equal(list[0].topic, "other");
  engram_free(list);
  engram_group_info i;
  FAILS(f, engram_group_info_get(f->log, "memory", "g", &i), ENGRAM_ENOTFOUND);
  engram_batch *b = NULL;
  FAILS(f, engram_fetch(f->log, "memory", "g", "c", 1, 0, &b), ENGRAM_ENOTFOUND);
  /* A new topic of the same name has no groups until one is made, and that starts empty. */
  tu_topic(f->log, "memory", NULL);
  FAILS(f, engram_group_info_get(f->log, "memory", "g", &i), ENGRAM_ENOTFOUND);
  add_n(f, 2);
  mkgroup(f, "g", NULL);
  i = ginfo(f, "g");
  assert_int_equal(i.dead, 0);
  assert_int_equal(i.acked, 0);
  engram_status st = status(f, "g", 2);
  assert_int_equal(st.state, ENGRAM_STATE_PENDING);
  assert_null(st.result);
  GOT(f, "g", "c", 10, 1, 1, 2);
}

static void closing_and_reopening_keeps_every_kind_of_group_state(void **state) {
  fx *f = *state;
  add(f, "memory.saved", "A");   /* 1: done with result */
  add(f, "memory.saved", "B");   /* 2: in flight */
  add(f, "memory.saved", "C");   /* 3: retrying */
  add(f, "memory.saved", "D");   /* 4: dead */
  add(f, "memory.updated", "B"); /* 5: waits behind its key */
  add(f, "memory.saved", "E");   /* 6: pending (cancel marker on 7) */
  add(f, "memory.saved", "F");   /* 7 */
  mkgroup(f, "g", &(engram_group_config){.flags = ENGRAM_GROUP_KEY_ORDERED, .ack_wait_ms = 10000});
  GOT(f, "g", "c", 4, 1, 1, 2, 3, 4);
  OK(f, engram_ack(f->log, "memory", "g", 1, 1, "r1", 2));
  OK(f, engram_nack(f->log, "memory", "g", 3, 1, 5000, "e3"));
  OK(f, engram_reject(f->log, "memory", "g", 4, 1, "r4"));
  OK(f, engram_cancel(f->log, "memory", "g", 7));
  snap s;
  snap_take(f, &s);
  reopen(f);
  snap_same(f, &s, __LINE__);
  snap_free(&s);
  /* And it goes on working: fencing, key order, retries, the cancel marker. */
  GOT(f, "g", "c", 10, 1, 6); /* 5 waits for 2 */
  advance(f, 5000);
  GOT(f, "g", "c", 10, 2, 3);
  OK(f, engram_ack(f->log, "memory", "g", 2, 1, NULL, 0));
  GOT(f, "g", "c", 10, 1, 5);
  advance(f, 10000);
  GOT(f, "g", "d", 10, 0, 6, 3, 5); /* in deadline order */
  REFUSED(f, engram_ack(f->log, "memory", "g", 6, 1, NULL, 0), ENGRAM_ESTALE);
}

/* =================================================================================
 * Bad input: each gets its own code and message and changes nothing.
 * ============================================================================== */
static void unknown_topics_and_groups_are_refused_everywhere(void **state) {
  fx *f = *state;
  add_n(f, 1);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 1, 1, 1);
  engram_batch *b = NULL;
  engram_group_info i;
  engram_status st;
  engram_dlq_entry *e;
  size_t n;
  const char *topics[] = {"nope", "memory"}, *groups[] = {"g", "nope"};
  for (int k = 0; k < 2; k++) {
    const char *t = topics[k], *g = groups[k];
    if (!k) REFUSED(f, engram_group_create(f->log, t, "x", NULL), ENGRAM_ENOTFOUND);
    REFUSED(f, engram_group_info_get(f->log, t, g, &i), ENGRAM_ENOTFOUND);
    REFUSED(f, engram_group_delete(f->log, t, g), ENGRAM_ENOTFOUND);
    REFUSED(f, engram_group_reset(f->log, t, g, ENGRAM_START_EARLIEST, 0, 0), ENGRAM_ENOTFOUND);
    REFUSED(f, engram_fetch(f->log, t, g, "c", 1, 0, &b), ENGRAM_ENOTFOUND);
    assert_null(b);
    REFUSED(f, engram_ack(f->log, t, g, 1, 1, NULL, 0), ENGRAM_ENOTFOUND);
    REFUSED(f, engram_nack(f->log, t, g, 1, 1, 0, NULL), ENGRAM_ENOTFOUND);
    REFUSED(f, engram_reject(f->log, t, g, 1, 1, "x"), ENGRAM_ENOTFOUND);
    REFUSED(f, engram_extend(f->log, t, g, 1, 1, 0), ENGRAM_ENOTFOUND);
    REFUSED(f, engram_cancel(f->log, t, g, 1), ENGRAM_ENOTFOUND);
    REFUSED(f, engram_status_get(f->log, t, g, 1, &st), ENGRAM_ENOTFOUND);
    REFUSED(f, engram_dlq_list(f->log, t, g, 0, 0, &e, &n), ENGRAM_ENOTFOUND);
    REFUSED(f, engram_dlq_purge(f->log, t, g, NULL, 0, NULL), ENGRAM_ENOTFOUND);
    REFUSED(f, engram_dlq_redrive(f->log, t, g, NULL, 0, NULL), ENGRAM_ENOTFOUND);
  }
  engram_group_info *list;
  REFUSED(f, engram_group_list(f->log, "nope", &list, &n), ENGRAM_ENOTFOUND);
  /* The message names what was not found. */
  FAILS(f, engram_ack(f->log, "memory", "nope", 1, 1, NULL, 0), ENGRAM_ENOTFOUND);
  assert_non_null(strstr(f->msg, "nope"));
}

static void invalid_filter_patterns_are_refused(void **state) {
  fx *f = *state;
  const char *bad[] = {"",        "memory*", "*.saved",    "memory.**", ".*", "memory..saved",
                       "memory.", "me mory", "memory.*.x", "**"};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    const char *filters[] = {"memory.saved", bad[k]};
    REFUSED(f,
            engram_group_create(f->log, "memory", "g",
                                &(engram_group_config){.filters = filters, .n_filters = 2}),
            ENGRAM_EINVAL);
    assert_non_null(strstr(f->msg, "filter"));
  }
  const char *nul[] = {NULL};
  REFUSED(f,
          engram_group_create(f->log, "memory", "g",
                              &(engram_group_config){.filters = nul, .n_filters = 1}),
          ENGRAM_EINVAL);
  REFUSED(f,
          engram_group_create(f->log, "memory", "g",
                              &(engram_group_config){.filters = NULL, .n_filters = 1}),
          ENGRAM_EINVAL);
  const char *many[ENGRAM_MAX_FILTERS + 1];
  for (int k = 0; k <= ENGRAM_MAX_FILTERS; k++) many[k] = "*";
  REFUSED(f,
          engram_group_create(
              f->log, "memory", "g",
              &(engram_group_config){.filters = many, .n_filters = ENGRAM_MAX_FILTERS + 1}),
          ENGRAM_EINVAL);
  OK(f,
     engram_group_create(f->log, "memory", "g",
                         &(engram_group_config){.filters = many, .n_filters = ENGRAM_MAX_FILTERS}));
}

static void acking_an_offset_never_leased_is_refused(void **state) {
  fx *f = *state;
  add_n(f, 3);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 1, 1, 1);
  REFUSED(f, engram_ack(f->log, "memory", "g", 2, 1, NULL, 0), ENGRAM_ENOTLEASED);
  REFUSED(f, engram_nack(f->log, "memory", "g", 2, 1, 0, NULL), ENGRAM_ENOTLEASED);
  REFUSED(f, engram_reject(f->log, "memory", "g", 3, 0, "x"), ENGRAM_ENOTLEASED);
  REFUSED(f, engram_ack(f->log, "memory", "g", 4, 1, NULL, 0), ENGRAM_ENOTFOUND);
  REFUSED(f, engram_ack(f->log, "memory", "g", 0, 1, NULL, 0), ENGRAM_ENOTFOUND);
  REFUSED(f, engram_ack(f->log, "memory", "g", UINT64_MAX, 1, NULL, 0), ENGRAM_ENOTFOUND);
  /* An ack before the group's start was never leased either. */
  mkgroup(f, "late", &(engram_group_config){.start = ENGRAM_START_LATEST});
  REFUSED(f, engram_ack(f->log, "memory", "late", 1, 1, NULL, 0), ENGRAM_EALREADY);
}

static void delays_over_thirty_days_and_negative_times_are_refused(void **state) {
  fx *f = *state;
  add_n(f, 1);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 1, 1, 1);
  const int64_t day = 86400000;
  REFUSED(f, engram_nack(f->log, "memory", "g", 1, 1, 30 * day + 1, NULL), ENGRAM_EINVAL);
  REFUSED(f, engram_nack(f->log, "memory", "g", 1, 1, INT64_MAX, NULL), ENGRAM_EINVAL);
  REFUSED(f, engram_extend(f->log, "memory", "g", 1, 1, 30 * day + 1), ENGRAM_EINVAL);
  REFUSED(f, engram_extend(f->log, "memory", "g", 1, 1, UINT64_MAX), ENGRAM_EINVAL);
  engram_batch *b = NULL;
  REFUSED(f, engram_fetch(f->log, "memory", "g", "c", 1, 3600001, &b), ENGRAM_EINVAL);
  REFUSED(f,
          engram_group_create(f->log, "memory", "x",
                              &(engram_group_config){.ack_wait_ms = 30 * day + 1}),
          ENGRAM_EINVAL);
  const uint64_t bad_backoff[] = {1000, 30 * day + 1};
  REFUSED(f,
          engram_group_create(f->log, "memory", "x",
                              &(engram_group_config){.backoff_ms = bad_backoff, .n_backoff = 2}),
          ENGRAM_EINVAL);
  REFUSED(f,
          engram_group_create(f->log, "memory", "x",
                              &(engram_group_config){.result_ttl_ms = 366 * day}),
          ENGRAM_EINVAL);
  REFUSED(
      f,
      engram_group_create(f->log, "memory", "x",
                          &(engram_group_config){.start = ENGRAM_START_TIME, .start_time_ns = -1}),
      ENGRAM_EINVAL);
  engram_event ev = {.type = "memory.saved", .deliver_at_ns = -1};
  uint64_t off;
  REFUSED(f, engram_append(f->log, "memory", &ev, &off, NULL), ENGRAM_EINVAL);
  /* The limits themselves are accepted. */
  OK(f, engram_extend(f->log, "memory", "g", 1, 1, 30 * day));
  OK(f, engram_nack(f->log, "memory", "g", 1, 1, 30 * day, NULL));
  assert_true(status(f, "g", 1).deadline_ns == now(f) + 30 * day * MS);
}

static void config_limits_are_refused(void **state) {
  fx *f = *state;
  add_n(f, 1);
  REFUSED(
      f, engram_group_create(f->log, "memory", "x", &(engram_group_config){.max_deliver = 1000001}),
      ENGRAM_EINVAL);
  assert_non_null(strstr(f->msg, "max_deliver"));
  uint64_t steps[ENGRAM_MAX_BACKOFF + 1] = {0};
  REFUSED(f,
          engram_group_create(
              f->log, "memory", "x",
              &(engram_group_config){.backoff_ms = steps, .n_backoff = ENGRAM_MAX_BACKOFF + 1}),
          ENGRAM_EINVAL);
  REFUSED(f,
          engram_group_create(f->log, "memory", "x",
                              &(engram_group_config){.backoff_ms = NULL, .n_backoff = 1}),
          ENGRAM_EINVAL);
  REFUSED(f, engram_group_create(f->log, "memory", "x", &(engram_group_config){.flags = 0x2}),
          ENGRAM_EINVAL);
  REFUSED(
      f,
      engram_group_create(f->log, "memory", "x", &(engram_group_config){.start = (engram_start)4}),
      ENGRAM_EINVAL);
  REFUSED(
      f,
      engram_group_create(f->log, "memory", "x",
                          &(engram_group_config){.start = ENGRAM_START_OFFSET, .start_offset = 0}),
      ENGRAM_EINVAL);
  REFUSED(
      f,
      engram_group_create(f->log, "memory", "x",
                          &(engram_group_config){.start = ENGRAM_START_OFFSET, .start_offset = 3}),
      ENGRAM_EINVAL);
  assert_string_equal(f->msg, "create group memory/x: start offset 3 beyond head 1 + 1");
  OK(f, engram_group_create(f->log, "memory", "x", &(engram_group_config){.max_deliver = 1000000}));
}

static void bad_names_are_refused(void **state) {
  fx *f = *state;
  add_n(f, 1);
  mkgroup(f, "g", NULL);
  char long_name[ENGRAM_MAX_NAME + 2];
  memset(long_name, 'a', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  const char *bad[] = {"", "a b", "a/b", "ä", long_name, NULL};
  engram_batch *b = NULL;
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    REFUSED(f, engram_group_create(f->log, "memory", bad[k], NULL), ENGRAM_EINVAL);
    REFUSED(f, engram_group_create(f->log, bad[k], "g2", NULL), ENGRAM_EINVAL);
    REFUSED(f, engram_fetch(f->log, "memory", "g", bad[k], 1, 0, &b), ENGRAM_EINVAL);
    REFUSED(f, engram_fetch(f->log, "memory", bad[k], "c", 1, 0, &b), ENGRAM_EINVAL);
    REFUSED(f, engram_ack(f->log, "memory", bad[k], 1, 1, NULL, 0), ENGRAM_EINVAL);
    REFUSED(f, engram_cancel(f->log, bad[k], "g", 1), ENGRAM_EINVAL);
  }
  long_name[ENGRAM_MAX_NAME] = '\0'; /* exactly 200 bytes: fine */
  OK(f, engram_group_create(f->log, "memory", long_name, NULL));
  GOT(f, long_name, long_name, 1, 1, 1);
}

static void fetch_max_zero_or_over_the_limit_is_refused(void **state) {
  fx *f = *state;
  add_n(f, 1);
  mkgroup(f, "g", NULL);
  engram_batch *b = (engram_batch *)1;
  REFUSED(f, engram_fetch(f->log, "memory", "g", "c", 0, 0, &b), ENGRAM_EINVAL);
  assert_null(b);
  REFUSED(f, engram_fetch(f->log, "memory", "g", "c", 10001, 0, &b), ENGRAM_EINVAL);
  GOT(f, "g", "c", 10000, 1, 1);
}

static void null_pointers_are_refused(void **state) {
  fx *f = *state;
  add_n(f, 1);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 1, 1, 1);
  engram_batch *b;
  engram_dlq_entry *e;
  engram_group_info *gl;
  size_t n;
  REFUSED(f, engram_fetch(f->log, "memory", "g", "c", 1, 0, NULL), ENGRAM_EINVAL);
  REFUSED(f, engram_fetch(f->log, NULL, "g", "c", 1, 0, &b), ENGRAM_EINVAL);
  REFUSED(f, engram_fetch(f->log, "memory", NULL, "c", 1, 0, &b), ENGRAM_EINVAL);
  REFUSED(f, engram_fetch(f->log, "memory", "g", NULL, 1, 0, &b), ENGRAM_EINVAL);
  REFUSED(f, engram_group_info_get(f->log, "memory", "g", NULL), ENGRAM_EINVAL);
  REFUSED(f, engram_group_list(f->log, NULL, NULL, &n), ENGRAM_EINVAL);
  REFUSED(f, engram_group_list(f->log, NULL, &gl, NULL), ENGRAM_EINVAL);
  REFUSED(f, engram_status_get(f->log, "memory", "g", 1, NULL), ENGRAM_EINVAL);
  REFUSED(f, engram_dlq_list(f->log, "memory", "g", 0, 0, NULL, &n), ENGRAM_EINVAL);
  REFUSED(f, engram_dlq_list(f->log, "memory", "g", 0, 0, &e, NULL), ENGRAM_EINVAL);
  REFUSED(f, engram_dlq_purge(f->log, "memory", "g", NULL, 3, NULL), ENGRAM_EINVAL);
  REFUSED(f, engram_dlq_redrive(f->log, "memory", "g", NULL, 3, NULL), ENGRAM_EINVAL);
  REFUSED(f, engram_ack_many(f->log, "memory", "g", NULL, 1, NULL), ENGRAM_EINVAL);
  engram_ack_item it = {1, 1, NULL, 0};
  REFUSED(f, engram_ack_many(f->log, "memory", "g", &it, 0, NULL), ENGRAM_EINVAL);
  REFUSED(f, engram_ack(f->log, "memory", "g", 1, 1, NULL, 5), ENGRAM_EINVAL);
  REFUSED(f, engram_ack(f->log, NULL, "g", 1, 1, NULL, 0), ENGRAM_EINVAL);
  REFUSED(f, engram_group_delete(f->log, "memory", NULL), ENGRAM_EINVAL);
  REFUSED(f, engram_txn_begin(f->log, NULL), ENGRAM_EINVAL);
  engram_txn *t;
  OK(f, engram_txn_begin(f->log, &t));
  REFUSED(f, engram_txn_ack(t, NULL, "g", 1, 1, NULL, 0), ENGRAM_EINVAL);
  REFUSED(f, engram_txn_ack(t, "memory", "g", 1, 1, NULL, 3), ENGRAM_EINVAL);
  engram_txn_abort(t);
  /* A NULL handle is refused without a crash. */
  assert_int_equal(engram_fetch(NULL, "memory", "g", "c", 1, 0, &b), ENGRAM_EINVAL);
  assert_int_equal(engram_ack(NULL, "memory", "g", 1, 1, NULL, 0), ENGRAM_EINVAL);
  assert_int_equal(engram_nack(NULL, "memory", "g", 1, 1, 0, NULL), ENGRAM_EINVAL);
  assert_int_equal(engram_reject(NULL, "memory", "g", 1, 1, NULL), ENGRAM_EINVAL);
  assert_int_equal(engram_extend(NULL, "memory", "g", 1, 1, 0), ENGRAM_EINVAL);
  assert_int_equal(engram_cancel(NULL, "memory", "g", 1), ENGRAM_EINVAL);
  assert_int_equal(engram_group_create(NULL, "memory", "g", NULL), ENGRAM_EINVAL);
  assert_int_equal(engram_group_reset(NULL, "memory", "g", 0, 0, 0), ENGRAM_EINVAL);
  assert_int_equal(engram_txn_commit(NULL), ENGRAM_EINVAL);
  engram_txn_abort(NULL);
  /* Long texts are refused too. */
  char big[4200];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  REFUSED(f, engram_nack(f->log, "memory", "g", 1, 1, 0, big), ENGRAM_ETOOBIG);
  REFUSED(f, engram_reject(f->log, "memory", "g", 1, 1, big), ENGRAM_ETOOBIG);
}

/* =================================================================================
 * Ack-and-fetch.
 * ============================================================================== */
static uint64_t commits(fx *f) {
  engram_commit_stats st;
  OK(f, engram_commit_stats_get(f->log, &st));
  return st.commits;
}

/* Acks the offsets (attempt 1) and fetches up to max in one call; checks the offsets
 * delivered. */
static engram_batch *ack_fetch(fx *f, const char *g, const char *c, const uint64_t *acks, size_t n,
                               size_t max) {
  engram_ack_item items[16];
  int codes[16];
  assert_true(n <= 16);
  for (size_t i = 0; i < n; i++) {
    items[i] = (engram_ack_item){.offset = acks[i], .attempt = 1};
    codes[i] = 99;
  }
  engram_batch *b = NULL;
  OK(f, engram_ack_fetch(f->log, "memory", g, c, n ? items : NULL, n, codes, max, 0, &b));
  for (size_t i = 0; i < n; i++) assert_int_equal(codes[i], 0);
  assert_non_null(b);
  return b;
}

static void ack_fetch_acks_a_batch_and_leases_the_next_in_one_commit(void **state) {
  fx *f = *state;
  add_n(f, 7);
  mkgroup(f, "g", NULL);
  mkgroup(f, "w", NULL);
  GOT(f, "w", "c", 1, 1, 1); /* the first fetch of a log also creates its workers database */
  /* Without acks it is a fetch. */
  uint64_t c0 = commits(f);
  engram_batch *b = ack_fetch(f, "g", "c", NULL, 0, 3);
  assert_int_equal(commits(f), c0 + 1);
  assert_int_equal(b->count, 3);
  assert_int_equal(b->events[0].offset, 1);
  assert_int_equal(b->events[2].offset, 3);
  engram_batch_free(b);

  c0 = commits(f);
  b = ack_fetch(f, "g", "c", (uint64_t[]){1, 2, 3}, 3, 3);
  assert_int_equal(commits(f), c0 + 1); /* the acks and the leases: one commit */
  assert_int_equal(b->count, 3);
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(b->events[i].offset, 4 + i);
    assert_int_equal(b->events[i].attempt, 1);
  }
  engram_batch_free(b);
  for (uint64_t o = 1; o <= 3; o++) STATE(f, "g", o, ENGRAM_STATE_DONE);
  for (uint64_t o = 4; o <= 6; o++) {
    engram_status st = status(f, "g", o);
    assert_int_equal(st.state, ENGRAM_STATE_IN_FLIGHT);
    assert_string_equal(st.consumer, "c");
  }
  engram_group_info i = ginfo(f, "g");
  assert_int_equal(i.acked, 3);
  assert_int_equal(i.delivered, 6);
  assert_int_equal(i.floor, 3);
  assert_int_equal(i.in_flight, 3);

  /* The last batch: the acks commit even though the fetch takes the last event only, and
   * then nothing. */
  b = ack_fetch(f, "g", "c", (uint64_t[]){4, 5, 6}, 3, 10);
  assert_int_equal(b->count, 1);
  assert_int_equal(b->events[0].offset, 7);
  engram_batch_free(b);
  c0 = commits(f);
  b = ack_fetch(f, "g", "c", (uint64_t[]){7}, 1, 10);
  assert_int_equal(commits(f), c0 + 1);
  assert_int_equal(b->count, 0);
  engram_batch_free(b);
  i = ginfo(f, "g");
  assert_int_equal(i.acked, 7);
  assert_int_equal(i.floor, 7);
  assert_int_equal(i.in_flight, 0);
  /* Results are kept as with engram_ack. */
  add_n(f, 1);
  GOT(f, "g", "c", 10, 1, 8);
  engram_ack_item it = {8, 1, "done", 4};
  OK(f, engram_ack_fetch(f->log, "memory", "g", "c", &it, 1, NULL, 10, 0, &b));
  engram_batch_free(b);
  engram_status st = status(f, "g", 8);
  assert_int_equal(st.state, ENGRAM_STATE_DONE);
  assert_int_equal(st.result_len, 4);
  assert_memory_equal(st.result, "done", 4);
  engram_free(st.result);
}

static void a_failing_ack_fails_the_whole_ack_fetch_and_changes_nothing(void **state) {
  fx *f = *state;
  add_n(f, 6);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 3, 1, 1, 2, 3);
  OK(f, engram_ack(f->log, "memory", "g", 2, 1, NULL, 0));
  engram_ack_item items[] = {{1, 1, "one", 3}, {2, 1, NULL, 0}, {3, 2, NULL, 0},
                             {4, 1, NULL, 0},  {3, 1, NULL, 0}, {99, 1, NULL, 0}};
  int codes[6] = {9, 9, 9, 9, 9, 9};
  engram_batch *b = (engram_batch *)&codes; /* must come back NULL */
  uint64_t c0 = commits(f);
  REFUSED(f, engram_ack_fetch(f->log, "memory", "g", "c", items, 6, codes, 10, 0, &b),
          ENGRAM_EALREADY);
  assert_null(b);
  assert_int_equal(commits(f), c0);
  /* The message names the first failing ack and says nothing was applied. */
  assert_non_null(strstr(f->msg, "offset 2"));
  assert_non_null(strstr(f->msg, "nothing was acked or fetched"));
  /* Each item's code, as engram_ack_many would give it. */
  assert_int_equal(codes[0], 0);
  assert_int_equal(codes[1], ENGRAM_EALREADY);
  assert_int_equal(codes[2], ENGRAM_EINVAL);
  assert_int_equal(codes[3], ENGRAM_ENOTLEASED);
  assert_int_equal(codes[4], 0);
  assert_int_equal(codes[5], ENGRAM_ENOTFOUND);
  STATE(f, "g", 1, ENGRAM_STATE_IN_FLIGHT);
  STATE(f, "g", 4, ENGRAM_STATE_PENDING);
  /* One bad item among good ones, without codes: still nothing. */
  engram_ack_item two[] = {{1, 1, NULL, 0}, {5, 1, NULL, 0}};
  REFUSED(f, engram_ack_fetch(f->log, "memory", "g", "c", two, 2, NULL, 10, 0, &b),
          ENGRAM_ENOTLEASED);
  /* Retried without the failed items, it succeeds. */
  engram_ack_item good[] = {{1, 1, NULL, 0}, {3, 1, NULL, 0}};
  OK(f, engram_ack_fetch(f->log, "memory", "g", "c", good, 2, codes, 10, 0, &b));
  assert_int_equal(codes[0], 0);
  assert_int_equal(codes[1], 0);
  assert_int_equal(b->count, 3);
  assert_int_equal(b->events[0].offset, 4);
  engram_batch_free(b);
  assert_int_equal(ginfo(f, "g").acked, 3);
  /* Bad arguments of either half change nothing either. */
  REFUSED(f, engram_ack_fetch(f->log, "memory", "g", "c", NULL, 1, NULL, 10, 0, &b), ENGRAM_EINVAL);
  REFUSED(f, engram_ack_fetch(f->log, "memory", "g", "c", good, 2, NULL, 0, 0, &b), ENGRAM_EINVAL);
  REFUSED(f,
          engram_ack_fetch(f->log, "memory", "g", "c", good, 2, NULL, ENGRAM_MAX_FETCH + 1, 0, &b),
          ENGRAM_EINVAL);
  REFUSED(f, engram_ack_fetch(f->log, "memory", "g", "bad name", good, 2, NULL, 10, 0, &b),
          ENGRAM_EINVAL);
  REFUSED(f,
          engram_ack_fetch(f->log, "memory", "g", "c", good, 2, NULL, 10,
                           ENGRAM_MAX_FETCH_WAIT_MS + 1ull, &b),
          ENGRAM_EINVAL);
  REFUSED(f, engram_ack_fetch(f->log, "memory", "g", "c", good, 2, NULL, 10, 0, NULL),
          ENGRAM_EINVAL);
  REFUSED(f, engram_ack_fetch(f->log, "memory", "nope", "c", good, 2, NULL, 10, 0, &b),
          ENGRAM_ENOTFOUND);
  REFUSED(f, engram_ack_fetch(f->log, "nope", "g", "c", good, 2, NULL, 10, 0, &b),
          ENGRAM_ENOTFOUND);
  REFUSED(f, engram_ack_fetch(f->log, "memory", "g", "c", good, 100001, NULL, 10, 0, &b),
          ENGRAM_ETOOBIG);
  assert_int_equal(engram_ack_fetch(NULL, "memory", "g", "c", good, 2, NULL, 10, 0, &b),
                   ENGRAM_EINVAL);
}

static void ack_fetch_keeps_redelivery_fencing_and_key_order(void **state) {
  fx *f = *state;
  add_n(f, 2);
  mkgroup(f, "g", &(engram_group_config){.ack_wait_ms = 1000});
  engram_batch *b = ack_fetch(f, "g", "c1", NULL, 0, 10);
  assert_int_equal(b->count, 2);
  engram_batch_free(b);
  /* The lease expires: the next ack-fetch of another consumer gets both, attempt 2. */
  advance(f, 1001);
  b = ack_fetch(f, "g", "c2", NULL, 0, 10);
  assert_int_equal(b->count, 2);
  assert_int_equal(b->events[0].attempt, 2);
  assert_int_equal(b->events[1].attempt, 2);
  engram_batch_free(b);
  /* The first holder's late acks are stale: refused, nothing changes. */
  engram_ack_item late[] = {{1, 1, NULL, 0}};
  REFUSED(f, engram_ack_fetch(f->log, "memory", "g", "c1", late, 1, NULL, 10, 0, &b),
          ENGRAM_ESTALE);
  engram_ack_item now2[] = {{1, 2, NULL, 0}, {2, 2, NULL, 0}};
  OK(f, engram_ack_fetch(f->log, "memory", "g", "c2", now2, 2, NULL, 10, 0, &b));
  assert_int_equal(b->count, 0);
  engram_batch_free(b);
  engram_group_info i = ginfo(f, "g");
  assert_int_equal(i.acked, 2);
  assert_int_equal(i.redelivered, 2);

  /* Key order: acking the first event of a key delivers the second in the same call. */
  mkgroup(f, "k", &(engram_group_config){.flags = ENGRAM_GROUP_KEY_ORDERED});
  add(f, "memory.saved", "A");   /* 3 */
  add(f, "memory.updated", "A"); /* 4 */
  GOT(f, "k", "c", 10, 1, 1, 2, 3);
  b = ack_fetch(f, "k", "c", (uint64_t[]){1, 2, 3}, 3, 10);
  assert_int_equal(b->count, 1);
  assert_int_equal(b->events[0].offset, 4);
  engram_batch_free(b);
}

struct ack_fetch_wait {
  engram *log;
  uint64_t offset;
  int rc;
  engram_batch *b;
  volatile int done;
};
static void *ack_fetch_waiting(void *arg) {
  struct ack_fetch_wait *a = arg;
  engram_ack_item it = {a->offset, 1, NULL, 0};
  a->rc = engram_ack_fetch(a->log, "memory", "g", "c", &it, 1, NULL, 10, 60000, &a->b);
  __atomic_store_n(&a->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

static void a_waiting_ack_fetch_commits_its_acks_before_it_waits(void **state) {
  fx *f = *state;
  add_n(f, 1);
  mkgroup(f, "g", NULL);
  GOT(f, "g", "c", 10, 1, 1);
  struct ack_fetch_wait a = {.log = f->log, .offset = 1};
  pthread_t th;
  pthread_create(&th, NULL, ack_fetch_waiting, &a);
  /* The ack is visible (committed) while the call still waits for events. */
  int64_t until = tu_mono_ms() + 20000;
  engram_status st;
  for (;;) {
    OK(f, engram_status_get(f->log, "memory", "g", 1, &st));
    if (st.state == ENGRAM_STATE_DONE || tu_mono_ms() > until) break;
    tu_sleep_ms(2);
  }
  assert_int_equal(st.state, ENGRAM_STATE_DONE);
  assert_false(__atomic_load_n(&a.done, __ATOMIC_ACQUIRE));
  /* An append ends the wait with that event. */
  uint64_t off = add(f, "memory.saved", NULL);
  pthread_join(th, NULL);
  assert_int_equal(a.rc, 0);
  assert_int_equal(a.b->count, 1);
  assert_int_equal(a.b->events[0].offset, off);
  engram_batch_free(a.b);
  assert_int_equal(ginfo(f, "g").acked, 1);
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(a_group_is_created_described_listed_and_deleted),
      T(a_group_created_without_config_gets_the_documented_defaults),
      T(creating_a_group_twice_fails_with_eexist_and_changes_nothing),
      T(a_deleted_and_recreated_group_starts_afresh),
      T(filters_select_by_exact_type_prefix_star_and_union),
      T(a_group_starts_at_earliest_latest_an_offset_or_a_time),
      T(due_retries_and_expired_leases_come_before_new_events_in_due_order),
      T(a_small_fetch_takes_due_events_first_and_splits_a_lease_it_cannot_take_whole),
      T(fetch_returns_an_empty_batch_when_there_is_nothing),
      T(a_waiting_fetch_returns_when_an_event_arrives_or_its_wait_ends),
      T(fetched_events_carry_every_field_and_the_attempt),
      T(a_second_ack_gets_ealready_and_changes_nothing),
      T(ack_many_commits_the_good_items_and_reports_each_code),
      T(an_ack_result_is_kept_for_the_result_ttl_then_gone),
      T(a_result_over_one_mib_is_refused),
      T(an_ack_quoting_an_older_attempt_after_redelivery_is_stale),
      T(a_stale_ack_is_refused_also_while_the_event_waits_for_its_retry),
      T(an_ack_with_attempt_zero_is_not_fenced),
      T(a_nack_with_a_delay_is_redelivered_at_that_delay_and_not_before),
      T(a_nack_without_a_delay_follows_the_backoff_schedule_repeating_its_last_step),
      T(the_default_backoff_starts_at_one_second),
      T(a_rejected_event_goes_to_the_dlq_with_its_reason),
      T(after_max_deliver_nacks_the_event_is_dead_with_attempts_last_error_and_times),
      T(an_expired_last_lease_sends_its_open_events_to_the_dlq),
      T(max_deliver_one_means_one_delivery),
      T(the_dlq_is_listed_paged_and_purged_all_or_selected),
      T(a_redriven_event_is_delivered_again_to_its_group_only),
      T(redriving_selected_entries_leaves_the_others_dead),
      T(a_redriven_event_whose_batch_is_still_leased_does_not_disturb_the_batch),
      T(an_extended_lease_is_not_redelivered_before_its_new_deadline),
      T(extending_an_event_that_is_not_in_flight_is_refused),
      T(cancelling_a_pending_event_finishes_it_without_delivery),
      T(cancelling_ahead_of_the_cursor_skips_the_event_when_the_cursor_reaches_it),
      T(cancelling_an_in_flight_event_is_refused_with_ebusy),
      T(cancelling_a_retrying_event_finishes_it),
      T(a_key_ordered_group_never_has_two_events_of_one_key_in_flight),
      T(a_nack_or_expiry_of_the_first_event_of_a_key_holds_back_the_second),
      T(the_death_of_the_first_event_of_a_key_frees_the_key),
      T(cancelling_an_event_waiting_behind_its_key_does_not_stall_the_key),
      T(an_event_waiting_behind_its_key_still_waits_for_its_deliver_at),
      T(a_long_queue_behind_one_key_is_handed_over_in_offset_order_across_reopens),
      T(a_redriven_event_of_a_key_ordered_group_runs_outside_key_order),
      T(a_group_that_is_not_key_ordered_delivers_one_key_in_parallel),
      T(a_delayed_event_is_delivered_to_no_group_before_its_time),
      T(status_reports_every_state_with_its_details),
      T(counters_track_lag_in_flight_retrying_dead_acked_redelivered_and_the_oldest),
      T(reset_to_an_offset_or_a_time_replays_from_there),
      T(a_reset_drops_leases_and_retries_and_restarts_attempts),
      T(a_reset_keeps_the_dlq_and_replay_does_not_deliver_dead_events),
      T(redriving_an_event_the_cursor_has_not_reached_again_delivers_it_once),
      T(a_transaction_commits_acks_and_appends_together),
      T(a_failing_ack_aborts_the_appends_of_its_transaction),
      T(dropping_a_topic_removes_its_groups),
      T(closing_and_reopening_keeps_every_kind_of_group_state),
      T(unknown_topics_and_groups_are_refused_everywhere),
      T(invalid_filter_patterns_are_refused),
      T(acking_an_offset_never_leased_is_refused),
      T(delays_over_thirty_days_and_negative_times_are_refused),
      T(config_limits_are_refused),
      T(bad_names_are_refused),
      T(fetch_max_zero_or_over_the_limit_is_refused),
      T(null_pointers_are_refused),
      T(ack_fetch_acks_a_batch_and_leases_the_next_in_one_commit),
      T(a_failing_ack_fails_the_whole_ack_fetch_and_changes_nothing),
      T(ack_fetch_keeps_redelivery_fencing_and_key_order),
      T(a_waiting_ack_fetch_commits_its_acks_before_it_waits),
  };
  return cmocka_run_group_tests_name("groups", tests, NULL, NULL);
}
