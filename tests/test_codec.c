/* test_codec.c — every event field survives append and read, and the bytes stored on disk
 * are the documented record: CRC32C over (offset || message), then a protobuf Record. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zstd.h>

#include "common/common.h"
#include "engram.h"
#include "helpers/testutil.h"
#include "log/log.h"
#include "schema/record.pb-c.h"

typedef struct fx {
  char *dir;
  engram *log;
  tu_clock clock;
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->dir = tu_tmpdir("codec");
  tu_clock_init(&f->clock, 1700000000123456789LL);
  engram_options o = {.clock_ns = tu_clock_ns, .clock_ctx = &f->clock};
  f->log = tu_open(f->dir, &o);
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

/* Closes the log so the raw LMDB environment can be opened in this process. */
static void close_log(fx *f) {
  engram_close(f->log);
  f->log = NULL;
}

static engram_batch *read_one(engram *log, const char *topic, uint64_t off) {
  engram_batch *b = NULL;
  int rc = engram_read(log, topic, off, &b);
  if (rc)
    fprintf(stderr, "read %s %llu: %s: %s\n", topic, (unsigned long long)off, engram_errname(rc),
            engram_errmsg(log));
  assert_int_equal(rc, 0);
  assert_non_null(b);
  assert_int_equal(b->count, 1);
  return b;
}

/* A bit-at-a-time CRC32C, independent of the library's table/SSE4.2 code. */
static uint32_t ref_crc32c(uint32_t crc, const unsigned char *p, size_t n) {
  crc = ~crc;
  while (n--) {
    crc ^= *p++;
    for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

static const engram_header hdrs[] = {
    {"trace-id", "4bf92f3577b34da6a3ce929d0e0e4736"},
    {"empty", ""},
    {"user", "conv-42:Nate"},
    {"user", "duplicate names are kept in order"},
};

static void every_field_survives_append_and_read(void **state) {
  fx *f = *state;
  tu_topic(f->log, "memory", NULL);
  unsigned char payload[200];
  for (size_t i = 0; i < sizeof payload; i++) payload[i] = (unsigned char)(i * 7);
  payload[0] = 0;
  payload[100] = 0;
  payload[199] = 0;
  engram_event ev = {
      .type = "memory.saved",
      .key = "conv-42:D1:3",
      .payload = payload,
      .payload_len = sizeof payload,
      .content_type = "application/octet-stream",
      .headers = hdrs,
      .n_headers = 4,
      .idempotency_key = "req-7f3a",
      .deliver_at_ns = 1700000999000000000LL,
  };
  uint64_t off = 0;
  int dup = -1;
  assert_int_equal(engram_append(f->log, "memory", &ev, &off, &dup), 0);
  assert_int_equal(off, 1);
  assert_int_equal(dup, 0);

  engram_batch *b = read_one(f->log, "memory", 1);
  const engram_event *r = &b->events[0];
  assert_int_equal(r->offset, 1);
  assert_string_equal(r->topic, "memory");
  assert_string_equal(r->type, "memory.saved");
  assert_non_null(r->key);
  assert_string_equal(r->key, "conv-42:D1:3");
  assert_int_equal(r->payload_len, sizeof payload);
  assert_memory_equal(r->payload, payload, sizeof payload);
  assert_string_equal(r->content_type, "application/octet-stream");
  assert_int_equal(r->n_headers, 4);
  for (size_t i = 0; i < 4; i++) {
    assert_string_equal(r->headers[i].name, hdrs[i].name);
    assert_string_equal(r->headers[i].value, hdrs[i].value);
  }
  assert_non_null(r->idempotency_key);
  assert_string_equal(r->idempotency_key, "req-7f3a");
  assert_int_equal(r->deliver_at_ns, 1700000999000000000LL);
  /* The append time comes from the handle's clock, not from the caller. */
  assert_int_equal(r->timestamp_ns, 1700000000123456789LL);
  assert_int_equal(r->attempt, 0);
  engram_batch_free(b);
}

static void timestamp_is_set_by_append_and_ignores_the_callers_value(void **state) {
  fx *f = *state;
  tu_topic(f->log, "memory", NULL);
  engram_event ev = {.type = "memory.saved", .payload = "x", .payload_len = 1, .timestamp_ns = 42};
  uint64_t off;
  assert_int_equal(engram_append(f->log, "memory", &ev, &off, NULL), 0);
  tu_clock_advance_ms(&f->clock, 1500);
  assert_int_equal(engram_append(f->log, "memory", &ev, &off, NULL), 0);
  engram_batch *b = NULL;
  assert_int_equal(engram_read_range(f->log, "memory", 1, 10, &b), 0);
  assert_int_equal(b->count, 2);
  assert_int_equal(b->events[0].timestamp_ns, 1700000000123456789LL);
  assert_int_equal(b->events[1].timestamp_ns, 1700000000123456789LL + 1500000000LL);
  engram_batch_free(b);
}

static void a_null_key_and_an_empty_key_stay_different(void **state) {
  fx *f = *state;
  tu_topic(f->log, "memory", NULL);
  engram_event none = {.type = "memory.saved", .key = NULL, .payload = "a", .payload_len = 1};
  engram_event empty = {.type = "memory.saved", .key = "", .payload = "b", .payload_len = 1};
  uint64_t o1, o2;
  assert_int_equal(engram_append(f->log, "memory", &none, &o1, NULL), 0);
  assert_int_equal(engram_append(f->log, "memory", &empty, &o2, NULL), 0);
  engram_batch *b = read_one(f->log, "memory", o1);
  assert_null(b->events[0].key);
  engram_batch_free(b);
  b = read_one(f->log, "memory", o2);
  assert_non_null(b->events[0].key);
  assert_string_equal(b->events[0].key, "");
  engram_batch_free(b);
}

static void absent_optional_fields_read_back_as_absent(void **state) {
  fx *f = *state;
  tu_topic(f->log, "memory", NULL);
  engram_event ev = {.type = "memory.deleted", .payload = NULL, .payload_len = 0};
  uint64_t off;
  assert_int_equal(engram_append(f->log, "memory", &ev, &off, NULL), 0);
  engram_batch *b = read_one(f->log, "memory", off);
  const engram_event *r = &b->events[0];
  assert_string_equal(r->type, "memory.deleted");
  assert_null(r->key);
  assert_int_equal(r->payload_len, 0);
  assert_true(r->content_type == NULL || r->content_type[0] == 0);
  assert_int_equal(r->n_headers, 0);
  assert_true(r->idempotency_key == NULL || r->idempotency_key[0] == 0);
  assert_int_equal(r->deliver_at_ns, 0);
  engram_batch_free(b);
}

static void binary_payloads_with_every_byte_value_round_trip_compressed_or_not(void **state) {
  fx *f = *state;
  engram_topic_config plain = {.compress_threshold = UINT32_MAX};
  tu_topic(f->log, "plain", &plain);
  tu_topic(f->log, "packed", NULL);
  size_t sizes[] = {1, 255, 256, 257, 4096, 70000};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    unsigned char *p = malloc(sizes[i]);
    /* Half repetitive (compressible), half noise, with NULs throughout. */
    for (size_t k = 0; k < sizes[i]; k++) p[k] = (unsigned char)(k % 256);
    tu_fill_random(p + sizes[i] / 2, sizes[i] - sizes[i] / 2, 7 + i);
    engram_event ev = {.type = "blob.put", .payload = p, .payload_len = sizes[i]};
    const char *topics[] = {"plain", "packed"};
    for (int t = 0; t < 2; t++) {
      uint64_t off;
      assert_int_equal(engram_append(f->log, topics[t], &ev, &off, NULL), 0);
      engram_batch *b = read_one(f->log, topics[t], off);
      assert_int_equal(b->events[0].payload_len, sizes[i]);
      assert_memory_equal(b->events[0].payload, p, sizes[i]);
      engram_batch_free(b);
    }
    free(p);
  }
}

static void the_crc32c_matches_the_standard_check_value(void **state) {
  /* CRC-32C check value from RFC 3720 / the Castagnoli catalogue. */
  assert_int_equal(crc32c(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(ref_crc32c(0, (const unsigned char *)"123456789", 9), 0xE3069283u);
  unsigned char buf[1000];
  tu_fill_random(buf, sizeof buf, 3);
  for (size_t n = 0; n <= sizeof buf; n += 37) {
    assert_int_equal(crc32c(0, buf, n), ref_crc32c(0, buf, n));
    /* Chaining is how the stored CRC covers offset || message. */
    assert_int_equal(crc32c(crc32c(0, buf, n / 3), buf + n / 3, n - n / 3), crc32c(0, buf, n));
  }
}

/* Checks a stored value's CRC with the reference code and unpacks it with the generated
 * protobuf-c code. Returns the message (caller frees) or fails the test. */
static Engram__Record *unpack_stored(const unsigned char *val, size_t len, uint64_t off) {
  assert_true(len >= 4);
  unsigned char ob[8];
  be64_put(ob, off);
  uint32_t want = ref_crc32c(ref_crc32c(0, ob, 8), val + 4, len - 4);
  assert_int_equal(le32_get(val), want);
  Engram__Record *rec = engram__record__unpack(NULL, len - 4, val + 4);
  assert_non_null(rec);
  return rec;
}

static void stored_records_decode_with_the_generated_protobuf_code(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.compress_threshold = UINT32_MAX};
  tu_topic(f->log, "memory", &cfg);
  tu_events *evs = tu_memory_events(50);
  assert_true(evs->n >= 10);
  for (size_t i = 0; i < evs->n; i++) {
    engram_event ev = tu_event_of(&evs->ev[i]);
    engram_header h[2] = {{"seq", "x"}, {"source", "test"}};
    char seq[32];
    snprintf(seq, sizeof seq, "%zu", i);
    h[0].value = seq;
    ev.headers = h;
    ev.n_headers = 2;
    char idem[32];
    snprintf(idem, sizeof idem, "idem-%zu", i);
    if (i % 2) ev.idempotency_key = idem;
    if (i % 3 == 0) ev.key = NULL;
    ev.deliver_at_ns = (i % 5 == 0) ? 1800000000000000000LL + (int64_t)i : 0;
    uint64_t off;
    assert_int_equal(engram_append(f->log, "memory", &ev, &off, NULL), 0);
    assert_int_equal(off, i + 1);
    tu_clock_advance_ms(&f->clock, 1);
  }
  close_log(f);

  assert_int_equal(tu_raw_count(f->dir, "memory"), (long)evs->n);
  for (size_t i = 0; i < evs->n; i++) {
    unsigned char *val;
    size_t len;
    assert_int_equal(tu_raw_get(f->dir, "memory", i + 1, &val, &len), 0);
    Engram__Record *rec = unpack_stored(val, len, i + 1);
    const tu_event *e = &evs->ev[i];
    assert_string_equal(rec->type, e->type);
    if (i % 3 == 0 || !e->key[0]) {
      assert_false(rec->has_key);
    } else {
      assert_true(rec->has_key);
      assert_string_equal(rec->key, e->key);
    }
    assert_int_equal(rec->compression, 0);
    assert_int_equal(rec->payload.len, e->len);
    assert_memory_equal(rec->payload.data, e->payload, e->len);
    assert_string_equal(rec->content_type, "application/json");
    assert_int_equal(rec->n_headers, 2);
    assert_string_equal(rec->headers[0]->name, "seq");
    char seq[32];
    snprintf(seq, sizeof seq, "%zu", i);
    assert_string_equal(rec->headers[0]->value, seq);
    assert_string_equal(rec->headers[1]->name, "source");
    assert_string_equal(rec->headers[1]->value, "test");
    assert_int_equal(rec->timestamp_ns, 1700000000123456789LL + (int64_t)i * 1000000LL);
    if (i % 2) {
      char idem[32];
      snprintf(idem, sizeof idem, "idem-%zu", i);
      assert_string_equal(rec->idempotency_key, idem);
    } else {
      assert_string_equal(rec->idempotency_key, "");
    }
    assert_int_equal(rec->deliver_at_ns, (i % 5 == 0) ? 1800000000000000000LL + (int64_t)i : 0);
    engram__record__free_unpacked(rec, NULL);
    free(val);
  }
  tu_events_free(evs);
}

static void compressed_records_on_disk_hold_zstd_frames_of_the_payload(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.compress_threshold = 256, .flags = ENGRAM_TOPIC_NO_DICT};
  tu_topic(f->log, "memory", &cfg);
  char big[2048];
  for (size_t i = 0; i < sizeof big; i++) big[i] = "memory saved for conv-42 "[i % 25];
  engram_event small = {.type = "memory.saved", .payload = "short", .payload_len = 5};
  engram_event large = {.type = "memory.saved", .payload = big, .payload_len = sizeof big};
  uint64_t o1, o2;
  assert_int_equal(engram_append(f->log, "memory", &small, &o1, NULL), 0);
  assert_int_equal(engram_append(f->log, "memory", &large, &o2, NULL), 0);
  close_log(f);

  unsigned char *val;
  size_t len;
  assert_int_equal(tu_raw_get(f->dir, "memory", o1, &val, &len), 0);
  Engram__Record *rec = unpack_stored(val, len, o1);
  assert_int_equal(rec->compression, 0); /* under the threshold */
  assert_int_equal(rec->payload.len, 5);
  engram__record__free_unpacked(rec, NULL);
  free(val);

  assert_int_equal(tu_raw_get(f->dir, "memory", o2, &val, &len), 0);
  assert_true(len < sizeof big);
  rec = unpack_stored(val, len, o2);
  assert_int_equal(rec->compression, 1);
  assert_int_equal(rec->dict_id, 0);
  assert_int_equal(rec->raw_len, sizeof big);
  char out[sizeof big];
  size_t n = ZSTD_decompress(out, sizeof out, rec->payload.data, rec->payload.len);
  assert_false(ZSTD_isError(n));
  assert_int_equal(n, sizeof big);
  assert_memory_equal(out, big, sizeof big);
  engram__record__free_unpacked(rec, NULL);
  free(val);
}

/* log_codec_decode reads what append stored, field by field. */
static void the_private_decoder_reads_stored_values(void **state) {
  fx *f = *state;
  engram_topic_config cfg = {.compress_threshold = UINT32_MAX};
  tu_topic(f->log, "memory", &cfg);
  engram_event ev = {.type = "memory.updated",
                     .key = "conv-42:Nate:profile",
                     .payload = "{\"text\":\"hi\"}",
                     .payload_len = 13,
                     .content_type = "application/json",
                     .headers = hdrs,
                     .n_headers = 2,
                     .idempotency_key = "k1",
                     .deliver_at_ns = 5};
  uint64_t off;
  assert_int_equal(engram_append(f->log, "memory", &ev, &off, NULL), 0);
  close_log(f);
  unsigned char *val;
  size_t len;
  assert_int_equal(tu_raw_get(f->dir, "memory", off, &val, &len), 0);
  log_view v;
  assert_int_equal(log_codec_decode(val, len, off, &v), 0);
  assert_int_equal(v.type_len, strlen("memory.updated"));
  assert_memory_equal(v.type, "memory.updated", v.type_len);
  assert_true(v.has_key);
  assert_int_equal(v.key_len, strlen("conv-42:Nate:profile"));
  assert_memory_equal(v.key, "conv-42:Nate:profile", v.key_len);
  assert_int_equal(v.payload_len, 13);
  assert_memory_equal(v.payload, "{\"text\":\"hi\"}", 13);
  assert_int_equal(v.content_type_len, 16);
  assert_int_equal(v.idem_len, 2);
  assert_int_equal(v.n_headers, 2);
  assert_int_equal(v.headers[0].name_len, 8);
  assert_memory_equal(v.headers[0].name, "trace-id", 8);
  assert_int_equal(v.headers[1].value_len, 0);
  assert_int_equal(v.deliver_at_ns, 5);
  assert_int_equal(v.timestamp_ns, 1700000000123456789LL);
  assert_int_equal(v.compression, 0);
  /* The CRC covers the offset: the same bytes under another offset are refused. */
  assert_int_equal(log_codec_decode(val, len, off + 1, &v), ENGRAM_ECORRUPT);
  /* Any flipped bit is refused. */
  for (size_t i = 0; i < len; i++) {
    val[i] ^= 0x10;
    assert_int_equal(log_codec_decode(val, len, off, &v), ENGRAM_ECORRUPT);
    val[i] ^= 0x10;
  }
  /* Truncation is refused. */
  for (size_t n = 0; n < len; n++)
    assert_int_equal(log_codec_decode(val, n, off, &v), ENGRAM_ECORRUPT);
  free(val);
}

int main(void) {
  tu_test_filter();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(every_field_survives_append_and_read, setup, teardown),
      cmocka_unit_test_setup_teardown(timestamp_is_set_by_append_and_ignores_the_callers_value,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(a_null_key_and_an_empty_key_stay_different, setup, teardown),
      cmocka_unit_test_setup_teardown(absent_optional_fields_read_back_as_absent, setup, teardown),
      cmocka_unit_test_setup_teardown(
          binary_payloads_with_every_byte_value_round_trip_compressed_or_not, setup, teardown),
      cmocka_unit_test(the_crc32c_matches_the_standard_check_value),
      cmocka_unit_test_setup_teardown(stored_records_decode_with_the_generated_protobuf_code, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(compressed_records_on_disk_hold_zstd_frames_of_the_payload,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(the_private_decoder_reads_stored_values, setup, teardown),
  };
  return cmocka_run_group_tests_name("codec", tests, NULL, NULL);
}
