/* test_append.c — appending and reading events: offsets, batches, idempotency, topics,
 * compression and dictionaries, map growth, durability modes, reopen, backup, verify and
 * group commit. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"
#include "log/log_private.h"
#include "schema/record.pb-c.h"

typedef struct fx {
  char *dir;    /* the test's own temp dir */
  char *logdir; /* dir/log: where the log lives */
  engram *log;
  tu_clock clock;
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  tu_fx_dirs("append", &f->dir, &f->logdir);
  tu_clock_init(&f->clock, 0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  tu_fx_dirs_done(f->log, f->dir, f->logdir);
  free(f);
  return 0;
}

static engram *open_default(fx *f) {
  f->log = tu_open(f->logdir, NULL);
  return f->log;
}

static void reopen(fx *f, const engram_options *o) {
  engram_close(f->log);
  f->log = tu_open(f->logdir, o);
}

static void info(engram *log, const char *topic, engram_topic_info *i) {
  int rc = engram_topic_info_get(log, topic, i);
  if (rc) fprintf(stderr, "info %s: %s: %s\n", topic, engram_errname(rc), engram_errmsg(log));
  assert_int_equal(rc, 0);
}

/* info() once the topic's automatic dictionary, trained in the background, is there
 * (or after 30 s). */
static void info_with_dict(engram *log, const char *topic, engram_topic_info *i) {
  info(log, topic, i);
  for (int k = 0; k < 3000 && i->dict_id == 0; k++) {
    tu_sleep_ms(10);
    info(log, topic, i);
  }
}

static void ok(engram *log, int rc, const char *what) {
  if (rc) fprintf(stderr, "%s: %s: %s\n", what, engram_errname(rc), engram_errmsg(log));
  assert_int_equal(rc, 0);
}

/* Appends events [from, to) of e one batch of up to `per` at a time; returns the last offset. */
static uint64_t append_events(engram *log, const char *topic, const tu_events *e, size_t from,
                              size_t to, size_t per) {
  engram_event *evs = calloc(per, sizeof *evs);
  uint64_t *offs = calloc(per, sizeof *offs);
  uint64_t last = 0;
  for (size_t i = from; i < to; i += per) {
    size_t n = to - i < per ? to - i : per;
    for (size_t k = 0; k < n; k++) evs[k] = tu_event_of(&e->ev[i + k]);
    ok(log, engram_append_batch(log, topic, evs, n, offs, NULL), "append batch");
    for (size_t k = 1; k < n; k++) assert_int_equal(offs[k], offs[k - 1] + 1);
    last = offs[n - 1];
  }
  free(evs);
  free(offs);
  return last;
}

/* Reads offsets first..first+e_n-1 back and compares them with e->ev[e_from...]. */
static void expect_events(engram *log, const char *topic, uint64_t first, const tu_events *e,
                          size_t e_from, size_t n) {
  size_t seen = 0;
  uint64_t next = first;
  while (seen < n) {
    engram_batch *b = NULL;
    ok(log, engram_read_range(log, topic, next, 500, &b), "read_range");
    assert_true(b->count > 0);
    for (size_t k = 0; k < b->count && seen < n; k++, seen++) {
      const engram_event *r = &b->events[k];
      const tu_event *want = &e->ev[e_from + seen];
      assert_int_equal(r->offset, next + k);
      assert_string_equal(r->type, want->type);
      assert_int_equal(r->payload_len, want->len);
      assert_memory_equal(r->payload, want->payload, want->len);
      if (want->key[0]) assert_string_equal(r->key, want->key);
    }
    next += b->count;
    engram_batch_free(b);
  }
}

/* ---------------------------------------------------------------------------------
 * Offsets and reads.
 * ------------------------------------------------------------------------------ */
static void offsets_are_dense_from_one_and_read_back_in_order(void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  tu_topic(log, "memory", NULL);
  engram_topic_info i;
  info(log, "memory", &i);
  assert_int_equal(i.head_offset, 0);
  assert_int_equal(i.first_offset, 0);
  assert_int_equal(i.count, 0);

  tu_events *e = tu_memory_events(120);
  for (size_t k = 0; k < 100; k++) {
    engram_event ev = tu_event_of(&e->ev[k]);
    uint64_t off = 0;
    int dup = -1;
    ok(log, engram_append(log, "memory", &ev, &off, &dup), "append");
    assert_int_equal(off, k + 1);
    assert_int_equal(dup, 0);
  }
  info(log, "memory", &i);
  assert_int_equal(i.head_offset, 100);
  assert_int_equal(i.first_offset, 1);
  assert_int_equal(i.count, 100);

  for (uint64_t off = 1; off <= 100; off++) {
    engram_batch *b = NULL;
    ok(log, engram_read(log, "memory", off, &b), "read");
    assert_int_equal(b->count, 1);
    assert_int_equal(b->events[0].offset, off);
    assert_memory_equal(b->events[0].payload, e->ev[off - 1].payload, e->ev[off - 1].len);
    engram_batch_free(b);
  }
  expect_events(log, "memory", 1, e, 0, 100);

  engram_batch *b = NULL;
  ok(log, engram_read_range(log, "memory", 50, 10, &b), "read_range");
  assert_int_equal(b->count, 10);
  for (size_t k = 0; k < 10; k++) assert_int_equal(b->events[k].offset, 50 + k);
  engram_batch_free(b);
  /* from 0 starts at the first event; a range past the head is empty. */
  ok(log, engram_read_range(log, "memory", 0, 3, &b), "read_range 0");
  assert_int_equal(b->count, 3);
  assert_int_equal(b->events[0].offset, 1);
  engram_batch_free(b);
  ok(log, engram_read_range(log, "memory", 95, 1000, &b), "read_range tail");
  assert_int_equal(b->count, 6);
  engram_batch_free(b);
  ok(log, engram_read_range(log, "memory", 101, 10, &b), "read_range past head");
  assert_int_equal(b->count, 0);
  engram_batch_free(b);
  tu_events_free(e);
}

static void topics_have_independent_offsets(void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  tu_topic(log, "a", NULL);
  tu_topic(log, "b", NULL);
  engram_event ev = {.type = "x.y", .payload = "p", .payload_len = 1};
  uint64_t off;
  for (uint64_t k = 1; k <= 5; k++) {
    ok(log, engram_append(log, "a", &ev, &off, NULL), "append a");
    assert_int_equal(off, k);
  }
  ok(log, engram_append(log, "b", &ev, &off, NULL), "append b");
  assert_int_equal(off, 1);
}

/* ---------------------------------------------------------------------------------
 * Batches.
 * ------------------------------------------------------------------------------ */
static void a_batch_gets_consecutive_offsets(void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  tu_topic(log, "memory", NULL);
  tu_events *e = tu_memory_events(300);
  uint64_t last = append_events(log, "memory", e, 0, 3, 3);
  assert_int_equal(last, 3);
  last = append_events(log, "memory", e, 3, 300, 100);
  assert_int_equal(last, 300);
  expect_events(log, "memory", 1, e, 0, 300);
  tu_events_free(e);
}

static void one_bad_event_makes_the_whole_batch_write_nothing(void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  engram_topic_config cfg = {.max_payload = 4096};
  tu_topic(log, "memory", &cfg);
  tu_events *e = tu_memory_events(20);
  append_events(log, "memory", e, 0, 5, 5);

  engram_event evs[10];
  uint64_t offs[10];
  for (int k = 0; k < 10; k++) evs[k] = tu_event_of(&e->ev[5 + k]);
  evs[0].idempotency_key = "first-of-a-failed-batch";
  /* A bad type in the middle. */
  evs[6].type = "memory..saved";
  assert_int_equal(engram_append_batch(log, "memory", evs, 10, offs, NULL), ENGRAM_EINVAL);
  /* A payload over the topic's limit at the end. */
  evs[6] = tu_event_of(&e->ev[11]);
  char big[5000] = {0};
  evs[9].payload = big;
  evs[9].payload_len = sizeof big;
  assert_int_equal(engram_append_batch(log, "memory", evs, 10, offs, NULL), ENGRAM_ETOOBIG);

  engram_topic_info i;
  info(log, "memory", &i);
  assert_int_equal(i.head_offset, 5);
  assert_int_equal(i.count, 5);
  engram_batch *b = NULL;
  assert_int_equal(engram_read(log, "memory", 6, &b), ENGRAM_ENOTFOUND);

  /* The idempotency key of the failed batch was not kept either. */
  evs[9] = tu_event_of(&e->ev[14]);
  int dups[10];
  ok(log, engram_append_batch(log, "memory", evs, 10, offs, dups), "append good batch");
  for (int k = 0; k < 10; k++) {
    assert_int_equal(offs[k], 6 + k);
    assert_int_equal(dups[k], 0);
  }
  expect_events(log, "memory", 1, e, 0, 15);
  tu_events_free(e);
}

/* ---------------------------------------------------------------------------------
 * Idempotent append.
 * ------------------------------------------------------------------------------ */
static void a_repeated_idempotency_key_returns_the_original_offset_and_writes_nothing(
    void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  tu_topic(log, "memory", NULL);
  tu_topic(log, "other", NULL);
  engram_event ev = {
      .type = "memory.saved", .payload = "original", .payload_len = 8, .idempotency_key = "req-1"};
  uint64_t off;
  int dup;
  ok(log, engram_append(log, "memory", &ev, &off, &dup), "append");
  assert_int_equal(off, 1);
  assert_int_equal(dup, 0);
  engram_event plain = {.type = "memory.saved", .payload = "x", .payload_len = 1};
  ok(log, engram_append(log, "memory", &plain, &off, &dup), "append plain");
  assert_int_equal(off, 2);

  engram_event again = ev;
  again.payload = "changed";
  again.payload_len = 7;
  ok(log, engram_append(log, "memory", &again, &off, &dup), "append duplicate");
  assert_int_equal(off, 1);
  assert_int_equal(dup, 1);
  /* duplicate may be NULL. */
  ok(log, engram_append(log, "memory", &again, &off, NULL), "append duplicate, no flag");
  assert_int_equal(off, 1);

  engram_topic_info i;
  info(log, "memory", &i);
  assert_int_equal(i.head_offset, 2);
  assert_int_equal(i.count, 2);
  engram_batch *b = NULL;
  ok(log, engram_read(log, "memory", 1, &b), "read");
  assert_int_equal(b->events[0].payload_len, 8);
  assert_memory_equal(b->events[0].payload, "original", 8);
  engram_batch_free(b);

  /* Keys belong to their topic. */
  ok(log, engram_append(log, "other", &again, &off, &dup), "append other topic");
  assert_int_equal(off, 1);
  assert_int_equal(dup, 0);

  /* A batch of duplicates writes nothing. */
  engram_event evs[2] = {ev, again};
  uint64_t offs[2];
  int dups[2];
  ok(log, engram_append_batch(log, "memory", evs, 2, offs, dups), "batch of duplicates");
  assert_int_equal(offs[0], 1);
  assert_int_equal(offs[1], 1);
  assert_int_equal(dups[0], 1);
  assert_int_equal(dups[1], 1);
  info(log, "memory", &i);
  assert_int_equal(i.head_offset, 2);
}

static void a_duplicate_inside_one_batch_resolves_to_the_first(void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  tu_topic(log, "memory", NULL);
  engram_event evs[4] = {
      {.type = "a.b", .payload = "1", .payload_len = 1, .idempotency_key = "k"},
      {.type = "a.b", .payload = "2", .payload_len = 1},
      {.type = "a.b", .payload = "3", .payload_len = 1, .idempotency_key = "k"},
      {.type = "a.b", .payload = "4", .payload_len = 1, .idempotency_key = "j"},
  };
  uint64_t offs[4];
  int dups[4];
  ok(log, engram_append_batch(log, "memory", evs, 4, offs, dups), "batch");
  assert_int_equal(offs[0], 1);
  assert_int_equal(offs[1], 2);
  assert_int_equal(offs[2], 1);
  assert_int_equal(offs[3], 3);
  assert_int_equal(dups[0], 0);
  assert_int_equal(dups[1], 0);
  assert_int_equal(dups[2], 1);
  assert_int_equal(dups[3], 0);
  engram_topic_info i;
  info(log, "memory", &i);
  assert_int_equal(i.head_offset, 3);
  assert_int_equal(i.count, 3);
  engram_batch *b = NULL;
  ok(log, engram_read(log, "memory", 3, &b), "read");
  assert_memory_equal(b->events[0].payload, "4", 1);
  engram_batch_free(b);
}

static void an_idempotency_key_is_forgotten_after_the_dedup_window(void **state) {
  fx *f = *state;
  engram_options o = {.dedup_window_ms = 1000, .clock_ns = tu_clock_ns, .clock_ctx = &f->clock};
  f->log = tu_open(f->logdir, &o);
  engram *log = f->log;
  tu_topic(log, "memory", NULL);
  engram_event ev = {
      .type = "memory.saved", .payload = "p", .payload_len = 1, .idempotency_key = "req-9"};
  uint64_t off;
  int dup;
  ok(log, engram_append(log, "memory", &ev, &off, &dup), "append");
  assert_int_equal(off, 1);
  tu_clock_advance_ms(&f->clock, 999);
  ok(log, engram_append(log, "memory", &ev, &off, &dup), "append inside window");
  assert_int_equal(off, 1);
  assert_int_equal(dup, 1);
  tu_clock_advance_ms(&f->clock, 2);
  ok(log, engram_append(log, "memory", &ev, &off, &dup), "append after window");
  assert_int_equal(off, 2);
  assert_int_equal(dup, 0);
  /* The new append opened a new window. */
  tu_clock_advance_ms(&f->clock, 500);
  ok(log, engram_append(log, "memory", &ev, &off, &dup), "append inside the new window");
  assert_int_equal(off, 2);
  assert_int_equal(dup, 1);
}

static void idempotency_keys_survive_reopen(void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  tu_topic(log, "memory", NULL);
  engram_event ev = {
      .type = "memory.saved", .payload = "p", .payload_len = 1, .idempotency_key = "req-reopen"};
  uint64_t off;
  int dup;
  ok(log, engram_append(log, "memory", &ev, &off, &dup), "append");
  reopen(f, NULL);
  ok(f->log, engram_append(f->log, "memory", &ev, &off, &dup), "append after reopen");
  assert_int_equal(off, 1);
  assert_int_equal(dup, 1);
}

/* ---------------------------------------------------------------------------------
 * Topics.
 * ------------------------------------------------------------------------------ */
static void topics_are_created_listed_in_name_order_described_and_dropped(void **state) {
  fx *f = *state;
  int64_t t0 = tu_clock_ns(&f->clock);
  engram_options o = {.clock_ns = tu_clock_ns, .clock_ctx = &f->clock};
  f->log = tu_open(f->logdir, &o);
  engram *log = f->log;
  engram_topic_config custom = {.compress_threshold = 1000,
                                .max_payload = 2048,
                                .dict_train_after = 50,
                                .flags = ENGRAM_TOPIC_NO_DICT};
  tu_topic(log, "memory", NULL);
  tu_topic(log, "audit", &custom);
  tu_topic(log, "jobs", NULL);

  engram_topic_info *list = NULL;
  size_t n = 0;
  ok(log, engram_topic_list(log, &list, &n), "list");
  assert_int_equal(n, 3);
  assert_string_equal(list[0].name, "audit");
  assert_string_equal(list[1].name, "jobs");
  assert_string_equal(list[2].name, "memory");
  /* Custom values are kept (defaults: see the next test). */
  assert_int_equal(list[0].config.compress_threshold, 1000);
  assert_int_equal(list[0].config.max_payload, 2048);
  assert_int_equal(list[0].config.dict_train_after, 50);
  assert_int_equal(list[0].config.flags, ENGRAM_TOPIC_NO_DICT);
  assert_int_equal(list[0].created_ns, t0);
  engram_free(list);

  engram_event ev = {
      .type = "memory.saved", .payload = "old", .payload_len = 3, .idempotency_key = "same-key"};
  uint64_t off;
  int dup;
  for (int k = 0; k < 3; k++) ok(log, engram_append(log, "memory", &ev, &off, &dup), "append");
  ev.idempotency_key = NULL;
  for (int k = 0; k < 3; k++) ok(log, engram_append(log, "memory", &ev, &off, &dup), "append");
  assert_int_equal(off, 4);

  ok(log, engram_topic_drop(log, "memory"), "drop");
  engram_topic_info i;
  assert_int_equal(engram_topic_info_get(log, "memory", &i), ENGRAM_ENOTFOUND);
  engram_batch *b = NULL;
  assert_int_equal(engram_read(log, "memory", 1, &b), ENGRAM_ENOTFOUND);
  assert_int_equal(engram_append(log, "memory", &ev, &off, NULL), ENGRAM_ENOTFOUND);
  ok(log, engram_topic_list(log, &list, &n), "list after drop");
  assert_int_equal(n, 2);
  assert_string_equal(list[0].name, "audit");
  assert_string_equal(list[1].name, "jobs");
  engram_free(list);

  /* Recreated, the topic is a new, empty one: none of the old events or keys remain, and
   * the next offset follows the head it reports. */
  ok(log, engram_topic_create(log, "memory", NULL), "recreate");
  info(log, "memory", &i);
  assert_int_equal(i.count, 0);
  assert_int_equal(i.first_offset, 0);
  uint64_t head = i.head_offset;
  ok(log, engram_read_range(log, "memory", 0, 100, &b), "read_range recreated");
  assert_int_equal(b->count, 0);
  engram_batch_free(b);
  ev.idempotency_key = "same-key";
  ev.payload = "new";
  ok(log, engram_append(log, "memory", &ev, &off, &dup), "append recreated");
  assert_int_equal(dup, 0);
  assert_int_equal(off, head + 1);
  ok(log, engram_read(log, "memory", off, &b), "read recreated");
  assert_memory_equal(b->events[0].payload, "new", 3);
  engram_batch_free(b);
}

static void a_topic_created_without_config_gets_the_documented_defaults(void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  tu_topic(log, "memory", NULL);
  engram_topic_config zero = {0};
  tu_topic(log, "zero", &zero);
  const char *names[] = {"memory", "zero"};
  for (int k = 0; k < 2; k++) {
    engram_topic_info i;
    info(log, names[k], &i);
    /* engram.h: compress_threshold default 256, max_payload 1 MiB, dict_train_after 4096. */
    assert_int_equal(i.config.max_payload, 1u << 20);
    assert_int_equal(i.config.dict_train_after, 4096);
    assert_int_equal(i.config.flags, 0);
    assert_int_equal(i.config.compress_threshold, 256);
  }
}

/* ---------------------------------------------------------------------------------
 * Compression and dictionaries.
 * ------------------------------------------------------------------------------ */
static Engram__Record *raw_record(const char *dir, const char *topic, uint64_t off,
                                  size_t *stored) {
  unsigned char *val;
  size_t len;
  assert_int_equal(tu_raw_get(dir, topic, off, &val, &len), 0);
  Engram__Record *r = engram__record__unpack(NULL, len - 4, val + 4);
  assert_non_null(r);
  if (stored) *stored = len;
  free(val);
  return r;
}

static void a_compressible_payload_is_stored_smaller_and_reads_back_whole(void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  tu_topic(log, "memory", NULL);
  engram_topic_config never = {.compress_threshold = UINT32_MAX};
  tu_topic(log, "raw", &never);
  char p[2048];
  for (size_t k = 0; k < sizeof p; k++) p[k] = "{\"text\":\"I won my first tournament\"} "[k % 36];
  engram_event ev = {.type = "memory.saved", .payload = p, .payload_len = sizeof p};
  uint64_t off, roff;
  ok(log, engram_append(log, "memory", &ev, &off, NULL), "append");
  ok(log, engram_append(log, "raw", &ev, &roff, NULL), "append raw");
  engram_batch *b = NULL;
  ok(log, engram_read(log, "memory", off, &b), "read");
  assert_int_equal(b->events[0].payload_len, sizeof p);
  assert_memory_equal(b->events[0].payload, p, sizeof p);
  engram_batch_free(b);
  engram_close(f->log);
  f->log = NULL;

  size_t stored;
  Engram__Record *r = raw_record(f->logdir, "memory", off, &stored);
  assert_true(stored < sizeof p / 2);
  assert_int_equal(r->compression, 1);
  engram__record__free_unpacked(r, NULL);
  r = raw_record(f->logdir, "raw", roff, &stored);
  assert_true(stored > sizeof p);
  assert_int_equal(r->compression, 0);
  engram__record__free_unpacked(r, NULL);
}

/* A batch big enough that half its payloads are compressed on the handle's helper thread
 * (log_codec_compress_batch): compressible, incompressible and small payloads mixed,
 * without and then with a dictionary. Every payload reads back byte for byte and is
 * stored as it would be alone: compressed (naming the dictionary in force) when that is
 * smaller, else as it is. */
#define MIXED_N 300
static char mixed_pay[2][MIXED_N][512];
static engram_event mixed_evs[2][MIXED_N];

/* Batch b (0, 1) of the mixed payloads: random bytes (which do not compress; new ones in
 * each batch, so that a dictionary trained on the first cannot hold the second's), short
 * ones under the threshold and compressible text. */
static void mixed_batch(int b, uint32_t *x) {
  for (size_t i = 0; i < MIXED_N; i++) {
    char *p = mixed_pay[b][i];
    size_t len = 0;
    if (i % 3 == 0) {
      for (len = 0; len < 500; len++) {
        *x ^= *x << 13;
        *x ^= *x >> 17;
        *x ^= *x << 5;
        p[len] = (char)*x;
      }
    } else if (i % 3 == 1) {
      len = (size_t)snprintf(p, 512, "short %zu", i);
    } else {
      while (len < 400)
        len += (size_t)snprintf(p + len, 512 - len, "{\"user\":\"u%zu\",\"text\":\"likes tea\"} ",
                                i % 7);
    }
    mixed_evs[b][i] = (engram_event){.type = "memory.saved", .payload = p, .payload_len = len};
  }
}

static void a_big_batch_compressed_on_two_threads_reads_back_exactly(void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  engram_topic_config cfg = {.compress_threshold = 64, .dict_train_after = 1000000};
  tu_topic(log, "memory", &cfg);
  uint32_t x = 2463534242u, dict = 0;
  uint64_t offs[MIXED_N];
  mixed_batch(0, &x);
  ok(log, engram_append_batch(log, "memory", mixed_evs[0], MIXED_N, offs, NULL), "batch");
  ok(log, engram_topic_train_dict(log, "memory", &dict), "train");
  mixed_batch(1, &x);
  ok(log, engram_append_batch(log, "memory", mixed_evs[1], MIXED_N, offs, NULL), "batch 2");
  assert_int_equal(offs[MIXED_N - 1], 2 * MIXED_N);
  for (uint64_t next = 1; next <= 2 * MIXED_N;) {
    engram_batch *b = NULL;
    ok(log, engram_read_range(log, "memory", next, 100, &b), "read_range");
    for (size_t k = 0; k < b->count; k++) {
      uint64_t off = next + k;
      const engram_event *want = &mixed_evs[off > MIXED_N][(off - 1) % MIXED_N];
      assert_int_equal(b->events[k].payload_len, want->payload_len);
      assert_memory_equal(b->events[k].payload, want->payload, want->payload_len);
    }
    next += b->count;
    engram_batch_free(b);
  }
  engram_close(f->log);
  f->log = NULL;
  for (uint64_t off = 1; off <= 2 * MIXED_N; off++) {
    size_t i = (off - 1) % MIXED_N, stored;
    const engram_event *ev = &mixed_evs[off > MIXED_N][i];
    Engram__Record *r = raw_record(f->logdir, "memory", off, &stored);
    assert_int_equal(r->raw_len, ev->payload_len);
    assert_int_equal(r->compression, i % 3 == 2);
    assert_int_equal(r->dict_id, i % 3 == 2 && off > MIXED_N ? dict : 0);
    if (i % 3 == 2) assert_true(r->payload.len < ev->payload_len / 2);
    engram__record__free_unpacked(r, NULL);
  }
}

/* Batch after batch shared with the helper thread: a helper that wakes for a batch the
 * leader already finished alone must claim nothing of the next one, whose buffers the
 * leader is filling (each batch's payloads differ, so a payload compressed into the
 * wrong batch's room reads back wrong). */
static void batches_in_a_row_shared_with_the_helper_read_back_exactly(void **state) {
  fx *f = *state;
  /* The helper starts late on most batches: the leader finishes them alone. */
  setenv("ENGRAM_TEST_ZHELPER_STALL_US", "300", 1);
  engram *log = open_default(f);
  engram_topic_config cfg = {.compress_threshold = 64, .dict_train_after = 1000000};
  tu_topic(log, "memory", &cfg);
  enum { BATCHES = 300, PER = 37 };
  /* Two sets of events in turn: a helper holding the last batch's would read them. */
  static char pay[2][PER][160];
  static engram_event evs[2][PER];
  uint64_t offs[PER];
  for (int b = 0; b < BATCHES; b++) {
    for (int i = 0; i < PER; i++) {
      size_t len = 0;
      char *p = pay[b % 2][i];
      while (len < 120) len += (size_t)snprintf(p + len, 160 - len, "batch %d event %d; ", b, i);
      evs[b % 2][i] = (engram_event){.type = "memory.saved", .payload = p, .payload_len = len};
    }
    ok(log, engram_append_batch(log, "memory", evs[b % 2], PER, offs, NULL), "batch");
  }
  for (uint64_t next = 1; next <= BATCHES * PER;) {
    engram_batch *r = NULL;
    ok(log, engram_read_range(log, "memory", next, 500, &r), "read_range");
    assert_true(r->count > 0);
    for (size_t k = 0; k < r->count; k++) {
      uint64_t off = next + k;
      int b = (int)((off - 1) / PER), i = (int)((off - 1) % PER);
      char want[160];
      size_t len = 0;
      while (len < 120)
        len += (size_t)snprintf(want + len, sizeof want - len, "batch %d event %d; ", b, i);
      assert_int_equal(r->events[k].payload_len, len);
      assert_memory_equal(r->events[k].payload, want, len);
    }
    next += r->count;
    engram_batch_free(r);
  }
  engram_close(f->log);
  f->log = NULL;
  unsetenv("ENGRAM_TEST_ZHELPER_STALL_US");
}

struct dict_tally {
  uint32_t id1, id2;     /* dictionaries in force for offsets 1001-1500 and 1501-2000 */
  size_t records, wrong; /* records seen; records naming the wrong dictionary */
  size_t with1, with2;   /* records compressed with id1 / id2 */
  size_t bytes1, raw1;   /* stored and raw bytes of the id1 records */
};

static int tally_record(uint64_t off, const unsigned char *val, size_t len, void *ctx) {
  struct dict_tally *t = ctx;
  Engram__Record *r = len > 4 ? engram__record__unpack(NULL, len - 4, val + 4) : NULL;
  t->records++;
  if (!r) {
    t->wrong++;
    return 0;
  }
  uint32_t want = off <= 1000 ? 0 : off <= 1500 ? t->id1 : t->id2;
  if (r->compression && r->dict_id != want) t->wrong++;
  if (!r->compression && r->dict_id != 0) t->wrong++;
  if (r->compression && off > 1000 && off <= 1500) {
    t->with1++;
    t->bytes1 += len;
    t->raw1 += r->raw_len;
  }
  if (r->compression && off > 1500) t->with2++;
  engram__record__free_unpacked(r, NULL);
  return 0;
}

static void records_written_before_and_after_a_retrain_read_back_identically(void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  /* A threshold below the smallest event, so nearly every record takes the zstd path. */
  engram_topic_config cfg = {.compress_threshold = 100, .dict_train_after = 1000000};
  tu_topic(log, "memory", &cfg);
  tu_events *e = tu_memory_events(2000);
  if (e->n < 2000) {
    tu_events_free(e);
    e = tu_generated_events(2000, 11);
  }
  append_events(log, "memory", e, 0, 1000, 100);
  engram_topic_info i;
  info(log, "memory", &i);
  assert_int_equal(i.dict_id, 0);

  uint32_t id1 = 0, id2 = 0;
  ok(log, engram_topic_train_dict(log, "memory", &id1), "train");
  assert_true(id1 != 0);
  info(log, "memory", &i);
  assert_int_equal(i.dict_id, id1);
  append_events(log, "memory", e, 1000, 1500, 100);

  ok(log, engram_topic_train_dict(log, "memory", &id2), "retrain");
  assert_true(id2 != 0);
  assert_true(id2 != id1);
  info(log, "memory", &i);
  assert_int_equal(i.dict_id, id2);
  append_events(log, "memory", e, 1500, 2000, 100);
  expect_events(log, "memory", 1, e, 0, 2000);

  /* What is stored: which dictionary each record names, and what it saved. */
  engram_close(f->log);
  f->log = NULL;
  struct dict_tally t = {.id1 = id1, .id2 = id2};
  assert_int_equal(tu_raw_scan(f->logdir, "memory", tally_record, &t), 0);
  assert_int_equal(t.records, 2000);
  assert_int_equal(t.wrong, 0);
  size_t with1 = t.with1, with2 = t.with2, bytes1 = t.bytes1, raw1 = t.raw1;
  assert_true(with1 > 50);
  assert_true(with2 > 50);
  /* The point of a dictionary: small events shrink well. */
  assert_true(bytes1 * 10 < raw1 * 7);
  f->log = tu_open(f->logdir, NULL);
  expect_events(f->log, "memory", 1, e, 0, 2000);
  tu_events_free(e);
}

static void a_dictionary_is_trained_automatically_after_dict_train_after_events(void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  engram_topic_config cfg = {.dict_train_after = 500};
  tu_topic(log, "memory", &cfg);
  engram_topic_config off = {.dict_train_after = 100, .flags = ENGRAM_TOPIC_NO_DICT};
  tu_topic(log, "nodict", &off);
  tu_events *e = tu_memory_events(700);
  append_events(log, "memory", e, 0, 450, 50);
  engram_topic_info i;
  info(log, "memory", &i);
  assert_int_equal(i.dict_id, 0);
  append_events(log, "memory", e, 450, 700, 50);
  /* Trained in the background, outside the append that crossed the threshold. */
  info_with_dict(log, "memory", &i);
  assert_true(i.dict_id != 0);
  expect_events(log, "memory", 1, e, 0, 700);

  append_events(log, "nodict", e, 0, 300, 50);
  info(log, "nodict", &i);
  assert_int_equal(i.dict_id, 0);
  assert_int_equal(engram_topic_train_dict(log, "nodict", NULL), ENGRAM_EINVAL);
  tu_events_free(e);
}

/* ---------------------------------------------------------------------------------
 * Map growth, durability modes, reopen.
 * ------------------------------------------------------------------------------ */
#define BIG_EV 4096
#define BIG_N 5120 /* 20 MiB */

static void the_map_grows_from_one_mib_to_hold_twenty(void **state) {
  fx *f = *state;
  engram_options o = {.map_size = 1u << 20};
  f->log = tu_open(f->logdir, &o);
  engram_topic_config cfg = {.compress_threshold = UINT32_MAX, .max_payload = 4u << 20};
  tu_topic(f->log, "blobs", &cfg);
  unsigned char *buf = malloc(64 * BIG_EV);
  engram_event evs[64];
  uint64_t offs[64];
  for (size_t i = 0; i < BIG_N; i += 64) {
    for (size_t k = 0; k < 64; k++) {
      tu_fill_random(buf + k * BIG_EV, BIG_EV, i + k + 1);
      evs[k] =
          (engram_event){.type = "blob.put", .payload = buf + k * BIG_EV, .payload_len = BIG_EV};
    }
    ok(f->log, engram_append_batch(f->log, "blobs", evs, 64, offs, NULL), "append 64 x 4 KiB");
    assert_int_equal(offs[0], i + 1);
  }
  /* One event larger than the whole initial map. */
  unsigned char *huge = malloc(3u << 20);
  tu_fill_random(huge, 3u << 20, 999);
  engram_event h = {.type = "blob.put", .payload = huge, .payload_len = 3u << 20};
  uint64_t hoff;
  ok(f->log, engram_append(f->log, "blobs", &h, &hoff, NULL), "append 3 MiB");
  assert_int_equal(hoff, BIG_N + 1);

  for (int pass = 0; pass < 2; pass++) {
    unsigned char *want = malloc(BIG_EV);
    uint64_t next = 1;
    while (next <= BIG_N) {
      engram_batch *b = NULL;
      ok(f->log, engram_read_range(f->log, "blobs", next, 256, &b), "read_range");
      assert_true(b->count > 0);
      for (size_t k = 0; k < b->count && next <= BIG_N; k++, next++) {
        tu_fill_random(want, BIG_EV, next);
        assert_int_equal(b->events[k].offset, next);
        assert_int_equal(b->events[k].payload_len, BIG_EV);
        assert_memory_equal(b->events[k].payload, want, BIG_EV);
      }
      engram_batch_free(b);
    }
    engram_batch *b = NULL;
    ok(f->log, engram_read(f->log, "blobs", hoff, &b), "read 3 MiB");
    assert_int_equal(b->events[0].payload_len, 3u << 20);
    assert_memory_equal(b->events[0].payload, huge, 3u << 20);
    engram_batch_free(b);
    free(want);
    /* Reopen with the same small map size: the file's size wins. */
    if (pass == 0) reopen(f, &o);
  }
  engram_verify_report rep;
  ok(f->log, engram_verify(f->log, &rep), "verify");
  assert_int_equal(rep.records, BIG_N + 1);
  assert_int_equal(rep.damaged, 0);
  free(huge);
  free(buf);
}

static void every_durability_mode_opens_appends_syncs_and_reopens(void **state) {
  fx *f = *state;
  const engram_durability modes[] = {ENGRAM_DURABILITY_SYNC, ENGRAM_DURABILITY_NOMETASYNC,
                                     ENGRAM_DURABILITY_ASYNC};
  tu_events *e = tu_memory_events(100);
  for (size_t m = 0; m < 3; m++) {
    char name[32];
    snprintf(name, sizeof name, "mode%zu", m);
    char *dir = tu_join(f->dir, name);
    engram_options o = {.durability = modes[m], .flush_interval_ms = 50};
    engram *log = tu_open(dir, &o);
    tu_topic(log, "memory", NULL);
    for (size_t k = 0; k < 40; k++) {
      engram_event ev = tu_event_of(&e->ev[k]);
      uint64_t off;
      ok(log, engram_append(log, "memory", &ev, &off, NULL), "append");
      assert_int_equal(off, k + 1);
    }
    append_events(log, "memory", e, 40, 100, 30);
    ok(log, engram_sync(log), "sync");
    tu_sleep_ms(120); /* let the background flush run at least once */
    engram_close(log);
    log = tu_open(dir, NULL);
    expect_events(log, "memory", 1, e, 0, 100);
    engram_close(log);
    free(dir);
  }
  tu_events_free(e);
}

static void reopening_preserves_topics_configs_events_and_dictionaries(void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  engram_topic_config cfg = {
      .compress_threshold = 100, .max_payload = 9999, .dict_train_after = 300};
  tu_topic(log, "memory", &cfg);
  tu_topic(log, "empty", NULL);
  tu_events *e = tu_memory_events(400);
  append_events(log, "memory", e, 0, 400, 64);
  engram_topic_info before[2], after[2];
  info_with_dict(log, "memory", &before[0]);
  info(log, "empty", &before[1]);
  assert_true(before[0].dict_id != 0);
  reopen(f, NULL);
  info(f->log, "memory", &after[0]);
  info(f->log, "empty", &after[1]);
  for (int k = 0; k < 2; k++) {
    assert_string_equal(after[k].name, before[k].name);
    assert_int_equal(after[k].head_offset, before[k].head_offset);
    assert_int_equal(after[k].first_offset, before[k].first_offset);
    assert_int_equal(after[k].count, before[k].count);
    assert_int_equal(after[k].dict_id, before[k].dict_id);
    assert_int_equal(after[k].created_ns, before[k].created_ns);
    assert_memory_equal(&after[k].config, &before[k].config, sizeof before[k].config);
  }
  expect_events(f->log, "memory", 1, e, 0, 400);
  /* Appends continue where they stopped. */
  engram_event ev = tu_event_of(&e->ev[0]);
  uint64_t off;
  ok(f->log, engram_append(f->log, "memory", &ev, &off, NULL), "append after reopen");
  assert_int_equal(off, 401);
  tu_events_free(e);
}

/* ---------------------------------------------------------------------------------
 * Backup and verify.
 * ------------------------------------------------------------------------------ */
static void expect_same_events(engram *a, engram *b, const char *topic) {
  engram_topic_info ia, ib;
  info(a, topic, &ia);
  info(b, topic, &ib);
  assert_int_equal(ia.count, ib.count);
  assert_int_equal(ia.head_offset, ib.head_offset);
  assert_int_equal(ia.dict_id, ib.dict_id);
  uint64_t next = 0;
  for (;;) {
    engram_batch *x = NULL, *y = NULL;
    ok(a, engram_read_range(a, topic, next, 300, &x), "read source");
    ok(b, engram_read_range(b, topic, next, 300, &y), "read copy");
    assert_int_equal(x->count, y->count);
    size_t n = x->count;
    for (size_t k = 0; k < n; k++) {
      const engram_event *p = &x->events[k], *q = &y->events[k];
      assert_int_equal(p->offset, q->offset);
      assert_string_equal(p->type, q->type);
      assert_true((p->key == NULL) == (q->key == NULL));
      if (p->key) assert_string_equal(p->key, q->key);
      assert_int_equal(p->payload_len, q->payload_len);
      assert_memory_equal(p->payload, q->payload, p->payload_len);
      assert_int_equal(p->timestamp_ns, q->timestamp_ns);
      assert_int_equal(p->n_headers, q->n_headers);
      next = p->offset + 1;
    }
    engram_batch_free(x);
    engram_batch_free(y);
    if (n == 0) break;
  }
}

struct writer {
  engram *log;
  int stop; /* set and read atomically */
  int rc;
  uint64_t n;
};

static void *writer_main(void *arg) {
  struct writer *w = arg;
  char p[300];
  while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
    int len = snprintf(p, sizeof p, "{\"memory_id\":\"conv-1:D1:%llu\",\"text\":\"hot copy\"}",
                       (unsigned long long)w->n);
    engram_event ev = {.type = "memory.saved", .payload = p, .payload_len = (size_t)len};
    uint64_t off;
    w->rc = engram_append(w->log, "memory", &ev, &off, NULL);
    if (w->rc) break;
    w->n++;
  }
  return NULL;
}

static void a_backup_opens_verifies_and_holds_the_same_events(void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  engram_topic_config cfg = {.dict_train_after = 500};
  tu_topic(log, "memory", &cfg);
  tu_topic(log, "other", NULL);
  tu_events *e = tu_memory_events(1000);
  append_events(log, "memory", e, 0, e->n, 100);
  append_events(log, "other", e, 0, 50, 10);
  /* The dictionary is trained on a thread of the handle once 500 events are stored: wait
   * for it, or the backup may be taken before it lands and differ from the source after. */
  engram_topic_info ti = {0};
  for (int64_t until = tu_mono_ms() + 60000; tu_mono_ms() < until; tu_sleep_ms(10)) {
    info(log, "memory", &ti);
    if (ti.dict_id) break;
  }
  assert_int_not_equal(ti.dict_id, 0);

  char *dest = tu_join(f->dir, "backup");
  ok(log, engram_backup(log, dest), "backup");
  engram *copy = tu_open(dest, NULL);
  engram_verify_report rep;
  ok(copy, engram_verify(copy, &rep), "verify copy");
  assert_int_equal(rep.topics, 2);
  assert_int_equal(rep.records, e->n + 50);
  assert_int_equal(rep.damaged, 0);
  expect_same_events(log, copy, "memory");
  expect_same_events(log, copy, "other");
  engram_close(copy);

  /* Refused into a directory that holds something. */
  assert_int_equal(engram_backup(log, dest), ENGRAM_EEXIST);
  /* Refused inside the log's own directory (lost with the log), nothing made there. */
  char *inside = tu_join(f->logdir, "backup");
  char *deeper = tu_join(inside, "nested");
  assert_int_equal(engram_backup(log, inside), ENGRAM_EINVAL);
  assert_non_null(strstr(engram_errmsg(log), "outside"));
  assert_false(tu_exists(inside));
  assert_int_equal(mkdir(inside, 0755), 0);
  assert_int_equal(engram_backup(log, deeper), ENGRAM_EINVAL);
  assert_int_equal(engram_backup(log, inside), ENGRAM_EINVAL);
  assert_int_equal(rmdir(inside), 0);
  free(deeper);
  free(inside);

  /* A hot copy while a writer keeps appending: a consistent prefix. */
  struct writer w = {.log = log};
  pthread_t th;
  pthread_create(&th, NULL, writer_main, &w);
  tu_sleep_ms(50);
  char *dest2 = tu_join(f->dir, "backup-hot");
  ok(log, engram_backup(log, dest2), "hot backup");
  tu_sleep_ms(50);
  __atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
  pthread_join(th, NULL);
  assert_int_equal(w.rc, 0);
  assert_true(w.n > 0);
  copy = tu_open(dest2, NULL);
  ok(copy, engram_verify(copy, &rep), "verify hot copy");
  assert_int_equal(rep.damaged, 0);
  engram_topic_info ic, il;
  info(copy, "memory", &ic);
  info(log, "memory", &il);
  assert_true(ic.head_offset >= e->n && ic.head_offset <= il.head_offset);
  assert_int_equal(ic.count, ic.head_offset);
  engram_close(copy);
  free(dest);
  free(dest2);
  tu_events_free(e);
}

static void verify_and_read_report_a_damaged_record(void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  engram_topic_config cfg = {.compress_threshold = UINT32_MAX};
  tu_topic(log, "memory", &cfg);
  tu_events *e = tu_memory_events(10);
  append_events(log, "memory", e, 0, 10, 10);
  engram_verify_report rep;
  ok(log, engram_verify(log, &rep), "verify clean");
  assert_int_equal(rep.records, 10);
  assert_int_equal(rep.damaged, 0);
  assert_string_equal(rep.first_damage, "");
  engram_close(f->log);
  f->log = NULL;

  /* Flip one byte in the middle of the stored value of offset 5. */
  unsigned char *val;
  size_t len;
  assert_int_equal(tu_raw_get(f->logdir, "memory", 5, &val, &len), 0);
  val[4 + (len - 4) / 2] ^= 0x20;
  assert_int_equal(tu_raw_put(f->logdir, "memory", 5, val, len), 0);
  free(val);

  log = f->log = tu_open(f->logdir, NULL);
  engram_batch *b = NULL;
  assert_int_equal(engram_read(log, "memory", 5, &b), ENGRAM_ECORRUPT);
  assert_true(strlen(engram_errmsg(log)) > 0);
  ok(log, engram_read(log, "memory", 4, &b), "read 4");
  engram_batch_free(b);
  ok(log, engram_read(log, "memory", 6, &b), "read 6");
  engram_batch_free(b);
  b = NULL;
  assert_int_equal(engram_read_range(log, "memory", 1, 10, &b), ENGRAM_ECORRUPT);
  ok(log, engram_read_range(log, "memory", 6, 10, &b), "read past the damage");
  assert_int_equal(b->count, 5);
  engram_batch_free(b);

  ok(log, engram_verify(log, &rep), "verify damaged");
  assert_int_equal(rep.topics, 1);
  assert_int_equal(rep.records, 10);
  assert_int_equal(rep.damaged, 1);
  assert_non_null(strstr(rep.first_damage, "memory"));
  assert_non_null(strstr(rep.first_damage, "5"));
  tu_events_free(e);
}

/* ---------------------------------------------------------------------------------
 * Group commit.
 * ------------------------------------------------------------------------------ */
#define THREADS 8
#define PER_THREAD 200

struct appender {
  engram *log;
  int id;
  int rc;
  char msg[256];
  uint64_t offs[PER_THREAD];
};

static void *appender_main(void *arg) {
  struct appender *a = arg;
  for (int k = 0; k < PER_THREAD; k++) {
    char p[64];
    int n = snprintf(p, sizeof p, "thread-%d-seq-%d", a->id, k);
    engram_event ev = {.type = "memory.saved", .payload = p, .payload_len = (size_t)n};
    a->rc = engram_append(a->log, "memory", &ev, &a->offs[k], NULL);
    if (a->rc) {
      snprintf(a->msg, sizeof a->msg, "%s", engram_errmsg(a->log));
      break;
    }
  }
  return NULL;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void eight_threads_appending_at_once_get_dense_offsets_and_lose_nothing(void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  tu_topic(log, "memory", NULL);
  struct appender *a = calloc(THREADS, sizeof *a);
  pthread_t th[THREADS];
  int64_t t0 = tu_mono_ms();
  for (int i = 0; i < THREADS; i++) {
    a[i].log = log;
    a[i].id = i;
    pthread_create(&th[i], NULL, appender_main, &a[i]);
  }
  for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
  int64_t ms = tu_mono_ms() - t0;
  print_message("%d synced appends from %d threads in %lld ms\n", THREADS * PER_THREAD, THREADS,
                (long long)ms);
  uint64_t *all = malloc(THREADS * PER_THREAD * sizeof *all);
  for (int i = 0; i < THREADS; i++) {
    if (a[i].rc) fprintf(stderr, "thread %d: %s: %s\n", i, engram_errname(a[i].rc), a[i].msg);
    assert_int_equal(a[i].rc, 0);
    for (int k = 0; k < PER_THREAD; k++) {
      all[i * PER_THREAD + k] = a[i].offs[k];
      /* One thread's appends keep their order. */
      if (k) assert_true(a[i].offs[k] > a[i].offs[k - 1]);
    }
  }
  qsort(all, THREADS * PER_THREAD, sizeof *all, cmp_u64);
  for (int k = 0; k < THREADS * PER_THREAD; k++) assert_int_equal(all[k], (uint64_t)k + 1);

  /* Each payload once, at the offset its thread was told. */
  int seen[THREADS][PER_THREAD];
  memset(seen, 0, sizeof seen);
  uint64_t next = 1;
  for (;;) {
    engram_batch *b = NULL;
    ok(log, engram_read_range(log, "memory", next, 500, &b), "read_range");
    if (b->count == 0) {
      engram_batch_free(b);
      break;
    }
    for (size_t k = 0; k < b->count; k++) {
      int t, s;
      char p[64];
      size_t n = b->events[k].payload_len < 63 ? b->events[k].payload_len : 63;
      memcpy(p, b->events[k].payload, n);
      p[n] = 0;
      assert_int_equal(sscanf(p, "thread-%d-seq-%d", &t, &s), 2);
      assert_true(t >= 0 && t < THREADS && s >= 0 && s < PER_THREAD);
      assert_int_equal(seen[t][s], 0);
      seen[t][s] = 1;
      assert_int_equal(a[t].offs[s], b->events[k].offset);
    }
    next = b->events[b->count - 1].offset + 1;
    engram_batch_free(b);
  }
  assert_int_equal(next, THREADS * PER_THREAD + 1);
  free(all);
  free(a);
}

/* A read in a snapshot from before a drop, decompressing with the topic's dictionary
 * while the drop takes the dictionary out of the cache: the reader's hook holds it between
 * finding the dictionary and using it until the drop has committed. The dictionary must
 * outlive the read (freed under it before: a use after free, seen by the sanitizers), and
 * the event reads back whole. */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int in_read, dropped;
} drop_race = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static void read_waits_for_the_drop(struct log *log) {
  (void)log;
  pthread_mutex_lock(&drop_race.mu);
  drop_race.in_read = 1;
  pthread_cond_broadcast(&drop_race.cv);
  while (!drop_race.dropped) pthread_cond_wait(&drop_race.cv, &drop_race.mu);
  pthread_mutex_unlock(&drop_race.mu);
}

struct race_reader {
  engram *log;
  uint64_t offset;
  int rc;
  engram_batch *b;
};

static void *race_read(void *arg) {
  struct race_reader *r = arg;
  r->rc = engram_read(r->log, "memory", r->offset, &r->b);
  return NULL;
}

static void a_read_keeps_the_dictionary_a_concurrent_drop_forgets(void **state) {
  fx *f = *state;
  engram *log = open_default(f);
  engram_topic_config cfg = {.compress_threshold = 100, .dict_train_after = 1000000};
  tu_topic(log, "memory", &cfg);
  tu_events *e = tu_memory_events(1200);
  if (e->n < 1200) {
    tu_events_free(e);
    e = tu_generated_events(1200, 13);
  }
  append_events(log, "memory", e, 0, 1000, 100);
  ok(log, engram_topic_train_dict(log, "memory", NULL), "train");
  /* An event written with the dictionary. */
  size_t i = 1000;
  while (i < e->n && e->ev[i].len < 100) i++;
  assert_true(i < e->n);
  engram_event ev = {
      .type = e->ev[i].type, .payload = e->ev[i].payload, .payload_len = e->ev[i].len};
  uint64_t off = 0;
  ok(log, engram_append(log, "memory", &ev, &off, NULL), "append");

  drop_race.in_read = drop_race.dropped = 0;
  log_codec_test_read_hook = read_waits_for_the_drop;
  struct race_reader r = {.log = log, .offset = off};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, race_read, &r), 0);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 30;
  pthread_mutex_lock(&drop_race.mu);
  while (!drop_race.in_read && pthread_cond_timedwait(&drop_race.cv, &drop_race.mu, &until) == 0) {
  }
  int in_read = drop_race.in_read;
  pthread_mutex_unlock(&drop_race.mu);
  if (!in_read)
    fprintf(stderr, "the read did not decompress with the dictionary: %s\n", engram_errname(r.rc));
  assert_true(in_read);
  ok(log, engram_topic_drop(log, "memory"), "drop");
  pthread_mutex_lock(&drop_race.mu);
  drop_race.dropped = 1;
  pthread_cond_broadcast(&drop_race.cv);
  pthread_mutex_unlock(&drop_race.mu);
  pthread_join(th, NULL);
  log_codec_test_read_hook = NULL;

  assert_int_equal(r.rc, 0);
  assert_int_equal(r.b->count, 1);
  assert_int_equal(r.b->events[0].offset, off);
  assert_int_equal(r.b->events[0].payload_len, e->ev[i].len);
  assert_memory_equal(r.b->events[0].payload, e->ev[i].payload, e->ev[i].len);
  engram_batch_free(r.b);
  /* The topic is gone for reads begun after the drop. */
  engram_batch *b = NULL;
  assert_int_equal(engram_read(log, "memory", off, &b), ENGRAM_ENOTFOUND);
  tu_events_free(e);
}

int main(void) {
  tu_test_filter();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(offsets_are_dense_from_one_and_read_back_in_order),
      T(topics_have_independent_offsets),
      T(a_batch_gets_consecutive_offsets),
      T(one_bad_event_makes_the_whole_batch_write_nothing),
      T(a_repeated_idempotency_key_returns_the_original_offset_and_writes_nothing),
      T(a_duplicate_inside_one_batch_resolves_to_the_first),
      T(an_idempotency_key_is_forgotten_after_the_dedup_window),
      T(idempotency_keys_survive_reopen),
      T(topics_are_created_listed_in_name_order_described_and_dropped),
      T(a_topic_created_without_config_gets_the_documented_defaults),
      T(a_compressible_payload_is_stored_smaller_and_reads_back_whole),
      T(records_written_before_and_after_a_retrain_read_back_identically),
      T(a_dictionary_is_trained_automatically_after_dict_train_after_events),
      T(a_read_keeps_the_dictionary_a_concurrent_drop_forgets),
      T(a_big_batch_compressed_on_two_threads_reads_back_exactly),
      T(batches_in_a_row_shared_with_the_helper_read_back_exactly),
      T(the_map_grows_from_one_mib_to_hold_twenty),
      T(every_durability_mode_opens_appends_syncs_and_reopens),
      T(reopening_preserves_topics_configs_events_and_dictionaries),
      T(a_backup_opens_verifies_and_holds_the_same_events),
      T(verify_and_read_report_a_damaged_record),
      T(eight_threads_appending_at_once_get_dense_offsets_and_lose_nothing),
  };
  return cmocka_run_group_tests_name("append", tests, NULL, NULL);
}
