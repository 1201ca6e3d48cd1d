/* test_compaction.c — key compaction: only the newest event of each key stays, keyless
 * events always stay, tombstones (the event flag or the topic's tombstone type) go after
 * their ttl on the test clock, unfinished events are kept unless the topic forces it,
 * reads name the gaps, verify still finds a missing record; a model test of random
 * appends, groups and compactions; kill -9 of processes in the middle of compaction. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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
  tu_fx_dirs("compaction", &f->dir, &f->logdir);
  tu_clock_init(&f->clock, 0);
  engram_options o = {.durability = ENGRAM_DURABILITY_NOMETASYNC,
                      .maintenance_ms = ENGRAM_MAINTENANCE_OFF,
                      .clock_ns = tu_clock_ns,
                      .clock_ctx = &f->clock};
  f->log = tu_open(f->logdir, &o);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  tu_fx_dirs_done(f->log, f->dir, f->logdir);
  free(f);
  return 0;
}

#define OK(log, call) TU_OK(log, call)

static uint64_t put(engram *log, const char *topic, const char *type, const char *key,
                    uint32_t flags) {
  char payload[64];
  snprintf(payload, sizeof payload, "{\"key\":\"%s\"}", key ? key : "");
  engram_event e = {
      .type = type, .key = key, .payload = payload, .payload_len = strlen(payload), .flags = flags};
  uint64_t off = 0;
  OK(log, engram_append(log, topic, &e, &off, NULL));
  return off;
}

static engram_compact_report compact(engram *log, const char *topic) {
  engram_compact_report r;
  OK(log, engram_compact(log, topic, &r));
  return r;
}

static int stored(engram *log, const char *topic, uint64_t off) {
  engram_batch *b = NULL;
  int rc = engram_read(log, topic, off, &b);
  engram_batch_free(b);
  return rc == 0;
}

static void assert_verify_clean(engram *log) {
  engram_verify_report vr;
  OK(log, engram_verify(log, &vr));
  if (vr.damaged) fprintf(stderr, "verify: %s\n", vr.first_damage);
  assert_int_equal(vr.damaged, 0);
}

static void only_the_newest_event_of_each_key_stays_and_keyless_events_stay(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.flags = ENGRAM_TOPIC_COMPACT_KEY};
  tu_topic(f->log, "m", &cfg);
  put(f->log, "m", "memory.saved", "a", 0);    /* 1 */
  put(f->log, "m", "memory.saved", "b", 0);    /* 2 */
  put(f->log, "m", "memory.queried", NULL, 0); /* 3 */
  put(f->log, "m", "memory.updated", "a", 0);  /* 4 */
  put(f->log, "m", "memory.updated", "a", 0);  /* 5 */
  put(f->log, "m", "memory.queried", NULL, 0); /* 6 */
  engram_compact_report r = compact(f->log, "m");
  assert_int_equal(r.compacted, 2);
  assert_int_equal(r.removed, 0);
  assert_false(stored(f->log, "m", 1));
  assert_true(stored(f->log, "m", 2));
  assert_true(stored(f->log, "m", 3));
  assert_false(stored(f->log, "m", 4));
  assert_true(stored(f->log, "m", 5));
  assert_true(stored(f->log, "m", 6));
  engram_batch *b = NULL;
  assert_int_equal(engram_read(f->log, "m", 4, &b), ENGRAM_ENOTFOUND);
  assert_non_null(strstr(engram_errmsg(f->log), "key compaction"));

  /* A range read skips the gaps and says which offsets are gone. */
  OK(f->log, engram_read_range(f->log, "m", 1, 100, &b));
  assert_int_equal(b->count, 4);
  assert_int_equal(b->events[0].offset, 2);
  assert_int_equal(b->from, 1);
  assert_int_equal(b->next, 7);
  assert_int_equal(b->removed, 2);
  engram_batch_free(b);
  OK(f->log, engram_read_range(f->log, "m", 3, 1, &b));
  assert_int_equal(b->count, 1);
  assert_int_equal(b->next, 4);
  engram_batch_free(b);
  OK(f->log, engram_read_range(f->log, "m", 4, 1, &b));
  assert_int_equal(b->events[0].offset, 5);
  assert_int_equal(b->from, 4);
  assert_int_equal(b->next, 6);
  assert_int_equal(b->removed, 1);
  engram_batch_free(b);

  engram_topic_info ti;
  OK(f->log, engram_topic_info_get(f->log, "m", &ti));
  assert_int_equal(ti.count, 4);
  assert_int_equal(ti.compacted, 2);
  assert_int_equal(ti.head_offset, 6);
  /* Nothing more to do, and new offsets go on from the head. */
  r = compact(f->log, "m");
  assert_int_equal(r.compacted, 0);
  assert_int_equal(put(f->log, "m", "memory.updated", "b", 0), 7);
  assert_int_equal(compact(f->log, "m").compacted, 1);
  assert_verify_clean(f->log);
}

static void a_topic_without_compaction_keeps_every_event(void **state) {
  fx *f = *state;
  tu_topic(f->log, "plain", NULL);
  for (int i = 0; i < 5; i++) put(f->log, "plain", "memory.updated", "a", 0);
  assert_int_equal(compact(f->log, "plain").compacted, 0);
  for (uint64_t o = 1; o <= 5; o++) assert_true(stored(f->log, "plain", o));
}

static void tombstones_delete_their_key_and_go_after_their_ttl(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.flags = ENGRAM_TOPIC_COMPACT_KEY, .tombstone_ttl_ms = 60000};
  snprintf(cfg.tombstone_type, sizeof cfg.tombstone_type, "memory.deleted");
  tu_topic(f->log, "m", &cfg);
  put(f->log, "m", "memory.saved", "a", 0);                       /* 1 */
  put(f->log, "m", "memory.saved", "b", 0);                       /* 2 */
  put(f->log, "m", "memory.forget", "a", ENGRAM_EVENT_TOMBSTONE); /* 3: flag */
  put(f->log, "m", "memory.deleted", "b", 0);                     /* 4: the topic's type */
  engram_batch *b = NULL;
  OK(f->log, engram_read(f->log, "m", 4, &b));
  assert_int_equal(b->events[0].flags, ENGRAM_EVENT_TOMBSTONE);
  engram_batch_free(b);
  engram_compact_report r = compact(f->log, "m");
  assert_int_equal(r.compacted, 2);
  assert_int_equal(r.tombstones, 0);
  assert_true(stored(f->log, "m", 3));
  assert_true(stored(f->log, "m", 4));
  tu_clock_advance_ms(&f->clock, 59000);
  assert_int_equal(compact(f->log, "m").tombstones, 0);
  tu_clock_advance_ms(&f->clock, 2000);
  r = compact(f->log, "m");
  assert_int_equal(r.tombstones, 2);
  assert_false(stored(f->log, "m", 3));
  assert_false(stored(f->log, "m", 4));
  engram_topic_info ti;
  OK(f->log, engram_topic_info_get(f->log, "m", &ti));
  assert_int_equal(ti.count, 0);
  assert_int_equal(ti.head_offset, 4);
  /* The key lives again after its tombstone, and the head's offset is never reused. */
  assert_int_equal(put(f->log, "m", "memory.saved", "a", 0), 5);
  assert_int_equal(compact(f->log, "m").compacted, 0);
  assert_true(stored(f->log, "m", 5));
  assert_verify_clean(f->log);

  /* A tombstone needs a key; unknown flags are refused. */
  engram_event e = {.type = "memory.deleted", .flags = ENGRAM_EVENT_TOMBSTONE};
  assert_int_equal(engram_append(f->log, "m", &e, NULL, NULL), ENGRAM_EINVAL);
  e.key = "a";
  e.flags = 0x80;
  assert_int_equal(engram_append(f->log, "m", &e, NULL, NULL), ENGRAM_EINVAL);
  OK(f->log, engram_topic_info_get(f->log, "m", &ti));
  assert_int_equal(ti.head_offset, 5);
}

static void a_removed_head_tombstone_never_lets_its_offset_be_reused(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.flags = ENGRAM_TOPIC_COMPACT_KEY, .tombstone_ttl_ms = 1};
  tu_topic(f->log, "m", &cfg);
  put(f->log, "m", "memory.queried", NULL, 0);                     /* 1 */
  put(f->log, "m", "memory.deleted", "b", ENGRAM_EVENT_TOMBSTONE); /* 2: the head */
  tu_clock_advance_ms(&f->clock, 10);
  assert_int_equal(compact(f->log, "m").tombstones, 1);
  engram_topic_info ti;
  OK(f->log, engram_topic_info_get(f->log, "m", &ti));
  assert_int_equal(ti.head_offset, 2);
  assert_int_equal(put(f->log, "m", "memory.saved", "c", 0), 3);
  assert_verify_clean(f->log);
}

static void an_unfinished_group_holds_compaction_unless_forced(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.flags = ENGRAM_TOPIC_COMPACT_KEY};
  tu_topic(f->log, "m", &cfg);
  OK(f->log, engram_group_create(f->log, "m", "g", NULL));
  for (int i = 0; i < 6; i++) put(f->log, "m", "memory.updated", "a", 0); /* 1..6 */
  engram_batch *b = NULL;
  OK(f->log, engram_fetch(f->log, "m", "g", "w", 3, 0, &b)); /* 1..3 leased */
  OK(f->log, engram_ack(f->log, "m", "g", 1, 0, NULL, 0));
  engram_batch_free(b);
  engram_compact_report r = compact(f->log, "m");
  assert_int_equal(r.compacted, 1); /* 2 is unfinished: it and all after it stay */
  assert_int_equal(r.compact_held_at, 2);
  assert_true(stored(f->log, "m", 2));

  cfg.flags |= ENGRAM_TOPIC_RETAIN_FORCE;
  OK(f->log, engram_topic_set(f->log, "m", &cfg));
  r = compact(f->log, "m");
  assert_int_equal(r.compacted, 4);
  assert_int_equal(r.skipped, 4); /* 2, 3 leased; 4, 5 not yet delivered */
  engram_group_info gi;
  OK(f->log, engram_group_info_get(f->log, "m", "g", &gi));
  assert_int_equal(gi.retention_skipped, 4);
  assert_int_equal(gi.in_flight, 0);
  /* The oldest unfinished event is the next stored one, past the gaps. */
  assert_true(gi.oldest_unfinished_ns > 0);
  /* The group moves over the gaps to the newest event. */
  OK(f->log, engram_fetch(f->log, "m", "g", "w", 10, 0, &b));
  assert_int_equal(b->count, 1);
  assert_int_equal(b->events[0].offset, 6);
  engram_batch_free(b);
  assert_verify_clean(f->log);
}

static void a_dead_lettered_event_is_finished_and_its_entry_goes_with_it(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.flags = ENGRAM_TOPIC_COMPACT_KEY};
  tu_topic(f->log, "m", &cfg);
  OK(f->log, engram_group_create(f->log, "m", "g", NULL));
  put(f->log, "m", "memory.updated", "a", 0); /* 1 */
  put(f->log, "m", "memory.updated", "a", 0); /* 2 */
  engram_batch *b = NULL;
  OK(f->log, engram_fetch(f->log, "m", "g", "w", 2, 0, &b));
  engram_batch_free(b);
  OK(f->log, engram_reject(f->log, "m", "g", 1, 0, "bad"));
  OK(f->log, engram_ack(f->log, "m", "g", 2, 0, NULL, 0));
  engram_group_info gi;
  OK(f->log, engram_group_info_get(f->log, "m", "g", &gi));
  assert_int_equal(gi.dead, 1);
  assert_int_equal(compact(f->log, "m").compacted, 1);
  OK(f->log, engram_group_info_get(f->log, "m", "g", &gi));
  assert_int_equal(gi.dead, 0);
  assert_int_equal(gi.retention_skipped, 0);
  assert_verify_clean(f->log);
}

static void a_delayed_delivery_still_ahead_holds_compaction(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.flags = ENGRAM_TOPIC_COMPACT_KEY};
  tu_topic(f->log, "m", &cfg);
  engram_event e = {.type = "memory.reminder",
                    .key = "a",
                    .deliver_at_ns = tu_clock_ns(&f->clock) + 3600ll * 1000000000};
  OK(f->log, engram_append(f->log, "m", &e, NULL, NULL)); /* 1, due in an hour */
  put(f->log, "m", "memory.updated", "a", 0);             /* 2 supersedes it */
  engram_compact_report r = compact(f->log, "m");
  assert_int_equal(r.compacted, 0);
  assert_int_equal(r.compact_held_at, 1);
  tu_clock_advance_ms(&f->clock, 2 * 3600 * 1000);
  assert_int_equal(compact(f->log, "m").compacted, 1);
  assert_false(stored(f->log, "m", 1));
}

static void turning_compaction_on_indexes_the_stored_events(void **state) {
  fx *f = *state;
  tu_topic(f->log, "m", NULL);
  for (int i = 0; i < 30; i++) {
    char key[8];
    snprintf(key, sizeof key, "k%d", i % 3);
    put(f->log, "m", "memory.updated", key, 0);
  }
  engram_topic_info ti;
  OK(f->log, engram_topic_info_get(f->log, "m", &ti));
  engram_topic_config cfg = ti.config;
  cfg.flags |= ENGRAM_TOPIC_COMPACT_KEY;
  OK(f->log, engram_topic_set(f->log, "m", &cfg));
  put(f->log, "m", "memory.updated", "k0", 0); /* 31 */
  engram_compact_report r = compact(f->log, "m");
  assert_int_equal(r.indexed, 31);
  assert_int_equal(r.compacted, 28);
  OK(f->log, engram_topic_info_get(f->log, "m", &ti));
  assert_int_equal(ti.count, 3);
  assert_true(ti.config.flags & ENGRAM_TOPIC_COMPACT_KEY);
  assert_true(stored(f->log, "m", 29) && stored(f->log, "m", 30) && stored(f->log, "m", 31));
  assert_verify_clean(f->log);
  /* Bad settings are refused and change nothing. */
  snprintf(cfg.tombstone_type, sizeof cfg.tombstone_type, "not a type");
  assert_int_equal(engram_topic_set(f->log, "m", &cfg), ENGRAM_EINVAL);
  cfg.tombstone_type[0] = '\0';
  cfg.tombstone_ttl_ms = ENGRAM_MAX_RETENTION_AGE_MS + 1;
  assert_int_equal(engram_topic_set(f->log, "m", &cfg), ENGRAM_EINVAL);
  OK(f->log, engram_topic_info_get(f->log, "m", &ti));
  assert_int_equal(ti.config.tombstone_ttl_ms, ENGRAM_DEFAULT_TOMBSTONE_TTL_MS);
}

static void retention_over_compacted_gaps_keeps_verify_clean(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.flags = ENGRAM_TOPIC_COMPACT_KEY, .max_events = 3};
  tu_topic(f->log, "m", &cfg);
  for (int i = 0; i < 20; i++) {
    char key[8];
    snprintf(key, sizeof key, "k%d", i % 5);
    put(f->log, "m", "memory.updated", key, 0);
  }
  compact(f->log, "m");
  engram_topic_info ti;
  OK(f->log, engram_topic_info_get(f->log, "m", &ti));
  assert_int_equal(ti.count, 3);
  assert_int_equal(ti.first_offset, 18);
  assert_int_equal(ti.compacted, 0); /* every gap is below the first offset now */
  assert_verify_clean(f->log);
}

static void retention_emptying_a_topic_before_it_was_indexed_ends_compaction(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.flags = ENGRAM_TOPIC_COMPACT_KEY, .max_age_ms = 1000};
  tu_topic(f->log, "m", &cfg);
  for (int i = 0; i < 5; i++) put(f->log, "m", "memory.updated", "a", 0);
  tu_clock_advance_ms(&f->clock, 2000);
  engram_compact_report r = compact(f->log, "m"); /* returns: nothing is left to index */
  assert_int_equal(r.removed, 5);
  assert_int_equal(r.compacted, 0);
  assert_int_equal(put(f->log, "m", "memory.updated", "a", 0), 6);
  put(f->log, "m", "memory.updated", "a", 0);
  assert_int_equal(compact(f->log, "m").compacted, 1);
  assert_verify_clean(f->log);
}

static void verify_still_finds_a_missing_record_on_a_compacted_topic(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.flags = ENGRAM_TOPIC_COMPACT_KEY};
  tu_topic(f->log, "m", &cfg);
  for (int i = 0; i < 6; i++) put(f->log, "m", "memory.updated", i % 2 ? "a" : "b", 0);
  put(f->log, "m", "memory.queried", NULL, 0); /* 7 */
  put(f->log, "m", "memory.queried", NULL, 0); /* 8 */
  compact(f->log, "m");
  assert_verify_clean(f->log);
  engram_close(f->log);
  f->log = NULL;
  /* Damage: a keyless record vanishes (compaction never removes one). */
  MDB_env *env;
  assert_int_equal(tu_raw_open(f->logdir, 0, &env), 0);
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, "t/m", MDB_INTEGERKEY, &dbi), 0);
  uint64_t off = 7;
  MDB_val k = {8, &off};
  assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  engram_options o = {.maintenance_ms = ENGRAM_MAINTENANCE_OFF};
  f->log = tu_open(f->logdir, &o);
  engram_verify_report vr;
  OK(f->log, engram_verify(f->log, &vr));
  assert_true(vr.damaged > 0);
}

static void the_lease_holder_compacts_in_the_background(void **state) {
  fx *f = *state;
  engram_close(f->log);
  engram_options o = {.durability = ENGRAM_DURABILITY_NOMETASYNC, .maintenance_ms = 10};
  f->log = tu_open(f->logdir, &o);
  engram_topic_config cfg = {.flags = ENGRAM_TOPIC_COMPACT_KEY};
  tu_topic(f->log, "m", &cfg);
  for (int i = 0; i < 40; i++) {
    char key[8];
    snprintf(key, sizeof key, "k%d", i % 4);
    put(f->log, "m", "memory.updated", key, 0);
  }
  /* Waits for a condition, not a time: up to 30 s on a loaded machine. */
  int64_t until = tu_mono_ms() + 30000;
  engram_topic_info ti = {0};
  while (tu_mono_ms() < until && (engram_topic_info_get(f->log, "m", &ti) != 0 || ti.count != 4))
    tu_sleep_ms(10);
  assert_int_equal(ti.count, 4);
  assert_int_equal(ti.compacted, 36);
}

/* ---------------------------------------------------------------------------------
 * The model: random appends of keys (some keyless, some tombstones), a group holding
 * some events, the clock moving, and compaction at random points; after each, the
 * stored set is the model's.
 * ------------------------------------------------------------------------------ */
#define M_MAX 1200
#define M_KEYS 12

typedef struct mev {
  int key;    /* -1 = none */
  int tomb;   /* a tombstone */
  int64_t ts; /* append time */
  int stored; /* not removed */
  int acked;  /* finished for the group */
  int leased; /* delivered, not finished */
} mev;

static void model_round(fx *f, uint64_t seed, int force) {
  const int64_t ttl_ms = 5000;
  engram_topic_config cfg = {
      .flags = ENGRAM_TOPIC_COMPACT_KEY | (force ? ENGRAM_TOPIC_RETAIN_FORCE : 0),
      .tombstone_ttl_ms = ttl_ms};
  char topic[32];
  snprintf(topic, sizeof topic, "m%llu%s", (unsigned long long)seed, force ? "f" : "");
  tu_topic(f->log, topic, &cfg);
  engram_group_config gc = {.ack_wait_ms = 3600000};
  OK(f->log, engram_group_create(f->log, topic, "g", &gc));
  mev *m = calloc(M_MAX + 1, sizeof *m);
  uint64_t head = 0, skipped = 0;
  for (int step = 0; step < 400 && head < M_MAX - 8; step++) {
    uint64_t op = tu_rand(&seed) % 10;
    if (op < 5) { /* a few appends */
      for (uint64_t i = 0, n = 1 + tu_rand(&seed) % 4; i < n; i++) {
        int key = tu_rand(&seed) % 6 == 0 ? -1 : (int)(tu_rand(&seed) % M_KEYS);
        int tomb = key >= 0 && tu_rand(&seed) % 7 == 0;
        char ks[8];
        snprintf(ks, sizeof ks, "k%d", key);
        uint64_t off = put(f->log, topic, tomb ? "memory.deleted" : "memory.updated",
                           key >= 0 ? ks : NULL, tomb ? ENGRAM_EVENT_TOMBSTONE : 0);
        assert_int_equal(off, head + 1);
        head = off;
        m[off] = (mev){.key = key, .tomb = tomb, .ts = tu_clock_ns(&f->clock), .stored = 1};
      }
    } else if (op < 7) { /* the group takes some and finishes some */
      engram_batch *b = NULL;
      OK(f->log, engram_fetch(f->log, topic, "g", "w", 1 + tu_rand(&seed) % 6, 0, &b));
      for (size_t i = 0; i < b->count; i++) {
        uint64_t o = b->events[i].offset;
        assert_true(m[o].stored); /* never a removed event */
        m[o].leased = 1;
      }
      engram_batch_free(b);
      for (uint64_t o = 1; o <= head; o++)
        if (m[o].leased && m[o].stored && tu_rand(&seed) % 3 == 0) {
          OK(f->log, engram_ack(f->log, topic, "g", o, 0, NULL, 0));
          m[o].leased = 0;
          m[o].acked = 1;
        }
    } else if (op < 8) {
      tu_clock_advance_ms(&f->clock, (int64_t)(tu_rand(&seed) % 4000));
    } else { /* compaction, checked against the model */
      engram_group_info gi;
      OK(f->log, engram_group_info_get(f->log, topic, "g", &gi));
      uint64_t safe = force ? head + 1 : gi.floor + 1;
      int64_t now = tu_clock_ns(&f->clock);
      uint64_t expect_removed = 0, expect_skipped = 0;
      for (uint64_t o = 1; o <= head; o++) {
        if (!m[o].stored || m[o].key < 0 || o >= safe) continue;
        int newer = 0;
        for (uint64_t p = o + 1; p <= head && !newer; p++) newer = m[p].key == m[o].key;
        int expired = m[o].tomb && now >= m[o].ts + ttl_ms * 1000000;
        if (newer || expired) {
          m[o].stored = 0;
          expect_removed++;
          if (!m[o].acked) expect_skipped++;
          m[o].leased = 0;
        }
      }
      engram_compact_report r = compact(f->log, topic);
      assert_int_equal(r.compacted, expect_removed);
      skipped += expect_skipped;
      /* The stored set, through a range read that names the gaps. */
      uint64_t from = 1, seen = 0, gaps = 0;
      for (;;) {
        engram_batch *b = NULL;
        OK(f->log, engram_read_range(f->log, topic, from, 1 + tu_rand(&seed) % 50, &b));
        if (b->count == 0) {
          gaps += b->removed;
          engram_batch_free(b);
          break;
        }
        for (size_t i = 0; i < b->count; i++) assert_true(m[b->events[i].offset].stored);
        seen += b->count;
        gaps += b->removed;
        from = b->next;
        engram_batch_free(b);
      }
      uint64_t want = 0;
      for (uint64_t o = 1; o <= head; o++) want += m[o].stored;
      assert_int_equal(seen, want);
      assert_int_equal(gaps, head - want);
      OK(f->log, engram_group_info_get(f->log, topic, "g", &gi));
      assert_int_equal(gi.retention_skipped, force ? skipped : 0);
      assert_verify_clean(f->log);
    }
  }
  assert_verify_clean(f->log);
  free(m);
}

static void the_stored_set_follows_the_model_through_random_compactions(void **state) {
  fx *f = *state;
  for (uint64_t seed = 1; seed <= 4; seed++) model_round(f, seed * 7919, 0);
}

static void forced_compaction_follows_the_model_and_counts_what_the_group_lost(void **state) {
  fx *f = *state;
  for (uint64_t seed = 1; seed <= 3; seed++) model_round(f, seed * 104729, 1);
}

/* ---------------------------------------------------------------------------------
 * kill -9 in the middle of compaction: children made by fork+exec of this program
 * (`test_compaction --churn DIR ROLE`) append, consume and compact until killed.
 * ------------------------------------------------------------------------------ */
static char self_path[4096];

static int churn_main(const char *dir, const char *role) {
  engram_options o = {.durability = ENGRAM_DURABILITY_NOMETASYNC, .maintenance_ms = 2};
  engram *log = NULL;
  if (engram_open(dir, &o, &log)) return 1;
  uint64_t seed = (uint64_t)getpid() * 2654435761u + 1;
  for (uint64_t i = 0;; i++) {
    if (!strcmp(role, "append")) {
      engram_event evs[16];
      char keys[16][8];
      size_t n = 1 + tu_rand(&seed) % 16;
      for (size_t k = 0; k < n; k++) {
        snprintf(keys[k], sizeof keys[k], "k%d", (int)(tu_rand(&seed) % 20));
        evs[k] = (engram_event){
            .type = "memory.updated", .key = keys[k], .payload = "{}", .payload_len = 2};
        if (tu_rand(&seed) % 10 == 0) evs[k].flags = ENGRAM_EVENT_TOMBSTONE;
      }
      uint64_t offs[16];
      engram_append_batch(log, "t", evs, n, offs, NULL);
    } else {
      engram_batch *b = NULL;
      if (engram_fetch(log, "t", "g", role, 20, 10, &b) == 0) {
        for (size_t k = 0; k < b->count; k++)
          if (tu_rand(&seed) % 5) engram_ack(log, "t", "g", b->events[k].offset, 0, NULL, 0);
        engram_batch_free(b);
      }
      if (i % 2 == 0) engram_compact(log, "t", NULL);
    }
  }
}

static pid_t spawn_churn(const char *dir, const char *role) {
  pid_t pid = fork();
  if (pid == 0) {
    execl(self_path, self_path, "--churn", dir, role, (char *)NULL);
    _exit(127);
  }
  return pid;
}

static void kill_9_during_compaction_loses_nothing_unfinished_and_verifies_clean(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.flags = ENGRAM_TOPIC_COMPACT_KEY, .tombstone_ttl_ms = 1};
  tu_topic(f->log, "t", &cfg);
  /* Leases of killed workers expire and go to the next ones, so the floor moves on. */
  engram_group_config gc = {.ack_wait_ms = 1000};
  OK(f->log, engram_group_create(f->log, "t", "g", &gc));
  engram_close(f->log);
  f->log = NULL;
  uint64_t seed = 99, total = 0;
  for (int round = 0; round < 4; round++) {
    pid_t kids[3] = {spawn_churn(f->logdir, "append"), spawn_churn(f->logdir, "w1"),
                     spawn_churn(f->logdir, "w2")};
    /* Let them run until compaction has removed something more, however slow the machine. */
    engram_options wo = {.maintenance_ms = ENGRAM_MAINTENANCE_OFF};
    engram *w = tu_open(f->logdir, &wo);
    int64_t until = tu_mono_ms() + 60000;
    engram_topic_info wi = {0};
    while (tu_mono_ms() < until &&
           (engram_topic_info_get(w, "t", &wi) != 0 || wi.head_offset - wi.count <= total))
      tu_sleep_ms(20);
    engram_close(w);
    tu_sleep_ms((int64_t)(tu_rand(&seed) % 100));
    for (int k = 0; k < 3; k++) kill(kids[k], SIGKILL);
    for (int k = 0; k < 3; k++) assert_int_equal(tu_wait(kids[k], 30000), 128 + SIGKILL);

    engram_options o = {.maintenance_ms = ENGRAM_MAINTENANCE_OFF};
    engram *log = tu_open(f->logdir, &o);
    assert_verify_clean(log);
    engram_topic_info ti;
    engram_group_info gi;
    OK(log, engram_topic_info_get(log, "t", &ti));
    OK(log, engram_group_info_get(log, "t", "g", &gi));
    assert_true(ti.head_offset - ti.count > total); /* compaction did remove events */
    total = ti.head_offset - ti.count;
    assert_int_equal(gi.retention_skipped, 0);
    /* Nothing above the group's floor was removed: every compaction removed only
     * offsets below the lowest unfinished one of its time, and the floor never goes
     * back. So the range after the floor reads back whole, without a gap. */
    uint64_t from = gi.floor + 1, seen = 0;
    for (;;) {
      engram_batch *b = NULL;
      OK(log, engram_read_range(log, "t", from, 1000, &b));
      assert_int_equal(b->removed, 0);
      size_t got = b->count;
      seen += got;
      from = b->next;
      engram_batch_free(b);
      if (!got) break;
    }
    assert_int_equal(seen, ti.head_offset - gi.floor);
    engram_close(log);
  }
  f->log = tu_open(f->logdir, NULL);
}

int main(int argc, char **argv) {
  if (argc == 4 && !strcmp(argv[1], "--churn")) return churn_main(argv[2], argv[3]);
  ssize_t n = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
  if (n > 0) self_path[n] = '\0';
  tu_test_filter();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(only_the_newest_event_of_each_key_stays_and_keyless_events_stay),
      T(a_topic_without_compaction_keeps_every_event),
      T(tombstones_delete_their_key_and_go_after_their_ttl),
      T(a_removed_head_tombstone_never_lets_its_offset_be_reused),
      T(an_unfinished_group_holds_compaction_unless_forced),
      T(a_dead_lettered_event_is_finished_and_its_entry_goes_with_it),
      T(a_delayed_delivery_still_ahead_holds_compaction),
      T(turning_compaction_on_indexes_the_stored_events),
      T(retention_over_compacted_gaps_keeps_verify_clean),
      T(retention_emptying_a_topic_before_it_was_indexed_ends_compaction),
      T(verify_still_finds_a_missing_record_on_a_compacted_topic),
      T(the_lease_holder_compacts_in_the_background),
      T(the_stored_set_follows_the_model_through_random_compactions),
      T(forced_compaction_follows_the_model_and_counts_what_the_group_lost),
      T(kill_9_during_compaction_loses_nothing_unfinished_and_verifies_clean),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
