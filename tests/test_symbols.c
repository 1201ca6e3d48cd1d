/* test_symbols.c — a program that defines functions named like engram's internals (its own
 * crc32c, log_error, cg_*, net_*, generated protobuf-c code) keeps them to itself: the
 * library never calls them, its records verify clean and its errors keep their codes and
 * messages. Built twice: test_symbols links libengram.a, test_symbols-shared libengram.so. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"

/* ---------------------------------------------------------------------------------
 * The program's own functions, named like the library's internal ones and doing
 * something else. Each counts its calls: the library must make none.
 * ------------------------------------------------------------------------------ */
static int program_calls;

uint32_t crc32c(uint32_t crc, const void *buf, size_t len) {
  program_calls++;
  return crc ^ (uint32_t)len ^ 0xdeadbeefu; /* anything but a CRC32C */
}

int log_error(const void *log, int code, const char *fmt, ...) {
  program_calls++;
  return 10;
}

int64_t clock_realtime_ns(void) {
  program_calls++;
  return 1;
}

int log_topic_get(void *log, void *txn, const char *name, void *t) {
  program_calls++;
  return -1;
}

int cg_group_load(void *log, void *txn, const void *d, const char *topic, const char *group,
                  void *g) {
  program_calls++;
  return -1;
}

int net_notify_wake(void *log, const char *topic) {
  program_calls++;
  return -1;
}

size_t engram__record__pack(const void *message, uint8_t *out) {
  program_calls++;
  return 0;
}

/* ---------------------------------------------------------------------------------
 * Fixture.
 * ------------------------------------------------------------------------------ */
#define N_EVENTS 40

typedef struct fx {
  char *dir;
  engram *log;
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->dir = tu_tmpdir("symbols");
  f->log = tu_open(f->dir, NULL);
  program_calls = 0;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  engram_close(f->log);
  tu_tmpdir_done(f->dir);
  free(f);
  return 0;
}

/* The standard CRC32C (Castagnoli, reflected), bit by bit: independent of the library. */
static uint32_t ref_crc32c(uint32_t crc, const unsigned char *p, size_t n) {
  crc = ~crc;
  while (n--) {
    crc ^= *p++;
    for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

static void append_memory_events(engram *log) {
  tu_topic(log, "memory", NULL);
  tu_events *evs = tu_memory_events(N_EVENTS);
  assert_int_equal(evs->n, N_EVENTS);
  for (size_t i = 0; i < evs->n; i++) {
    engram_event ev = tu_event_of(&evs->ev[i]);
    uint64_t off = 0;
    assert_int_equal(engram_append(log, "memory", &ev, &off, NULL), 0);
    assert_int_equal(off, i + 1);
  }
  tu_events_free(evs);
}

/* ---------------------------------------------------------------------------------
 * Tests.
 * ------------------------------------------------------------------------------ */
static void records_appended_beside_a_program_crc32c_verify_clean(void **state) {
  fx *f = *state;
  append_memory_events(f->log);

  engram_verify_report rep;
  assert_int_equal(engram_verify(f->log, &rep), 0);
  assert_int_equal(rep.topics, 1);
  assert_int_equal(rep.records, N_EVENTS);
  assert_int_equal(rep.damaged, 0);
  assert_string_equal(rep.first_damage, "");
  assert_int_equal(program_calls, 0);
}

static void stored_records_carry_the_real_crc32c(void **state) {
  fx *f = *state;
  append_memory_events(f->log);
  engram_close(f->log);
  f->log = NULL;

  /* Stored value = CRC32C(be64 offset || record) as little-endian u32, then the record. */
  for (uint64_t off = 1; off <= N_EVENTS; off++) {
    unsigned char *val = NULL;
    size_t len = 0;
    assert_int_equal(tu_raw_get(f->dir, "memory", off, &val, &len), 0);
    assert_true(len > 4);
    unsigned char ob[8];
    for (int i = 0; i < 8; i++) ob[i] = (unsigned char)(off >> (56 - 8 * i));
    uint32_t want = ref_crc32c(ref_crc32c(0, ob, 8), val + 4, len - 4);
    uint32_t got =
        (uint32_t)val[0] | (uint32_t)val[1] << 8 | (uint32_t)val[2] << 16 | (uint32_t)val[3] << 24;
    assert_int_equal(got, want);
    free(val);
  }

  f->log = tu_open(f->dir, NULL);
  engram_verify_report rep;
  assert_int_equal(engram_verify(f->log, &rep), 0);
  assert_int_equal(rep.damaged, 0);
  assert_int_equal(program_calls, 0);
}

static void a_program_log_error_leaves_the_librarys_codes_and_messages(void **state) {
  fx *f = *state;
  engram_topic_info info;
  assert_int_equal(engram_topic_info_get(f->log, "no-such-topic", &info), ENGRAM_ENOTFOUND);
  assert_non_null(strstr(engram_errmsg(f->log), "no-such-topic"));

  engram_batch *b = NULL;
  assert_int_equal(engram_read_range(f->log, "no-such-topic", 1, 10, &b), ENGRAM_ENOTFOUND);
  assert_non_null(strstr(engram_errmsg(f->log), "no-such-topic"));
  assert_int_equal(program_calls, 0);
}

static void group_reads_and_acks_never_call_the_programs_functions(void **state) {
  fx *f = *state;
  append_memory_events(f->log);
  assert_int_equal(engram_group_create(f->log, "memory", "indexer", NULL), 0);

  engram_batch *b = NULL;
  assert_int_equal(engram_fetch(f->log, "memory", "indexer", "w1", N_EVENTS, 0, &b), 0);
  assert_int_equal(b->count, N_EVENTS);
  for (size_t i = 0; i < b->count; i++)
    assert_int_equal(
        engram_ack(f->log, "memory", "indexer", b->events[i].offset, b->events[i].attempt, NULL, 0),
        0);
  engram_batch_free(b);

  engram_group_info gi;
  assert_int_equal(engram_group_info_get(f->log, "memory", "indexer", &gi), 0);
  assert_int_equal(gi.floor, N_EVENTS);
  assert_int_equal(engram_read_range(f->log, "memory", 1, N_EVENTS, &b), 0);
  assert_int_equal(b->count, N_EVENTS);
  engram_batch_free(b);
  assert_int_equal(program_calls, 0);
}

int main(void) {
  tu_test_filter();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(records_appended_beside_a_program_crc32c_verify_clean, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(stored_records_carry_the_real_crc32c, setup, teardown),
      cmocka_unit_test_setup_teardown(a_program_log_error_leaves_the_librarys_codes_and_messages,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(group_reads_and_acks_never_call_the_programs_functions, setup,
                                      teardown),
  };
  return cmocka_run_group_tests_name("symbols", tests, NULL, NULL);
}
