/* test_validation.c — every kind of bad input is refused with its own code and a message,
 * and a refused call leaves the log exactly as it was. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <locale.h>
#include <wchar.h>

#include "common/common.h"
#include "engram.h"
#include "helpers/testutil.h"

typedef struct fx {
  char *dir;
  engram *log;
  engram_topic_info before; /* "memory" as it was before the bad call */
  size_t n_topics;
} fx;

static size_t topic_count(engram *log) {
  engram_topic_info *list = NULL;
  size_t n = 0;
  assert_int_equal(engram_topic_list(log, &list, &n), 0);
  engram_free(list);
  return n;
}

static void snapshot(fx *f) {
  assert_int_equal(engram_topic_info_get(f->log, "memory", &f->before), 0);
  f->n_topics = topic_count(f->log);
}

/* A log with topics "memory" (3 events) and "small" (max_payload 1000). */
static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->dir = tu_tmpdir("validation");
  f->log = tu_open(f->dir, NULL);
  tu_topic(f->log, "memory", NULL);
  engram_topic_config small = {.max_payload = 1000};
  tu_topic(f->log, "small", &small);
  for (int i = 0; i < 3; i++) {
    engram_event ev = {
        .type = "memory.saved", .key = "conv-42:D1:1", .payload = "{}", .payload_len = 2};
    uint64_t off;
    assert_int_equal(engram_append(f->log, "memory", &ev, &off, NULL), 0);
  }
  snapshot(f);
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

/* A message quotes the bad name it was given: whatever that held, the message is one
 * line of valid UTF-8 (a CLI prints one line; Python decodes it strictly). Checked with
 * the C library's decoder, not engram's. */
static void one_line_of_utf8(const char *msg, int line) {
  locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
  assert_non_null(utf8);
  locale_t was = uselocale(utf8);
  mbstate_t st;
  memset(&st, 0, sizeof st);
  size_t n = strlen(msg), i = 0;
  while (i < n) {
    wchar_t wc;
    size_t k = mbrtowc(&wc, msg + i, n - i, &st);
    if (k == (size_t)-1 || k == (size_t)-2 || k == 0) {
      fprintf(stderr, "line %d: message not UTF-8 at byte %zu: %s\n", line, i, msg);
      fail();
    }
    if (wc < 0x20 || (wc >= 0x7f && wc < 0xa0)) {
      fprintf(stderr, "line %d: control character %#x in message: %s\n", line, (unsigned)wc, msg);
      fail();
    }
    i += k;
  }
  uselocale(was);
  freelocale(utf8);
}

/* The call returned `want`, said why, and changed nothing. */
#define refused(f, rc, want) refused_at(f, rc, want, __LINE__)
static void refused_at(fx *f, int rc, int want, int line) {
  if (rc != want)
    fprintf(stderr, "line %d: expected %s, got %s (%s)\n", line, engram_errname(want),
            engram_errname(rc), engram_errmsg(f->log));
  assert_int_equal(rc, want);
  const char *msg = engram_errmsg(f->log);
  assert_non_null(msg);
  if (!msg[0]) fprintf(stderr, "line %d: empty error message for %s\n", line, engram_errname(want));
  assert_true(strlen(msg) > 0);
  one_line_of_utf8(msg, line);
  engram_topic_info now;
  assert_int_equal(engram_topic_info_get(f->log, "memory", &now), 0);
  assert_int_equal(now.head_offset, f->before.head_offset);
  assert_int_equal(now.count, f->before.count);
  assert_int_equal(now.first_offset, f->before.first_offset);
  assert_int_equal(topic_count(f->log), f->n_topics);
}

static char *repeat(char c, size_t n) {
  char *s = malloc(n + 1);
  memset(s, c, n);
  s[n] = 0;
  return s;
}

static int append1(fx *f, const char *topic, const engram_event *ev) {
  uint64_t off = 0;
  return engram_append(f->log, topic, ev, &off, NULL);
}

/* The same event, appended alone and as the middle of a batch of three. */
static void refused_alone_and_in_a_batch(fx *f, const engram_event *bad, const char *topic,
                                         int want, int line) {
  refused_at(f, append1(f, topic, bad), want, line);
  engram_event batch[3] = {
      {.type = "memory.saved", .payload = "a", .payload_len = 1},
      *bad,
      {.type = "memory.saved", .payload = "c", .payload_len = 1},
  };
  uint64_t offs[3] = {0};
  refused_at(f, engram_append_batch(f->log, topic, batch, 3, offs, NULL), want, line);
}
#define refused_event(f, ev, topic, want) refused_alone_and_in_a_batch(f, ev, topic, want, __LINE__)

static const engram_event good = {.type = "memory.saved", .payload = "{}", .payload_len = 2};

static void bad_topic_names_are_refused_as_invalid(void **state) {
  fx *f = *state;
  char *long_name = repeat('t', ENGRAM_MAX_NAME + 1);
  const char *bad[] = {"",          long_name,   "a b", "a/b",  "caf\xc3\xa9",   "memory*",
                       "tab\there", "new\nline", "t:1", "t\\x", "c1\xc2\x9b[2J", "stray\xff",
                       "cut\xc3"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    refused(f, engram_topic_create(f->log, bad[i], NULL), ENGRAM_EINVAL);
    refused(f, append1(f, bad[i], &good), ENGRAM_EINVAL);
    engram_topic_info info;
    refused(f, engram_topic_info_get(f->log, bad[i], &info), ENGRAM_EINVAL);
  }
  refused(f, engram_topic_create(f->log, NULL, NULL), ENGRAM_EINVAL);
  free(long_name);
  /* A name the message must cut, with a two-byte character at every place of the cut. */
  for (size_t at = 20; at < 80; at++) {
    char *cut = repeat('t', at + 8);
    memcpy(cut + at, "\xc3\xa9", 2);
    refused(f, engram_topic_create(f->log, cut, NULL), ENGRAM_EINVAL);
    refused(f, append1(f, cut, &good), ENGRAM_EINVAL);
    refused(f, engram_group_create(f->log, "memory", cut, NULL), ENGRAM_EINVAL);
    free(cut);
  }
}

static void the_longest_and_oddest_valid_topic_names_are_accepted(void **state) {
  fx *f = *state;
  char *longest = repeat('t', ENGRAM_MAX_NAME);
  assert_int_equal(engram_topic_create(f->log, longest, NULL), 0);
  assert_int_equal(engram_topic_create(f->log, "A-z_0.9", NULL), 0);
  assert_int_equal(engram_topic_create(f->log, ".", NULL), 0);
  assert_int_equal(append1(f, longest, &good), 0);
  free(longest);
}

static void a_topic_that_does_not_exist_is_not_found(void **state) {
  fx *f = *state;
  refused(f, append1(f, "nosuch", &good), ENGRAM_ENOTFOUND);
  engram_batch *b = NULL;
  refused(f, engram_read(f->log, "nosuch", 1, &b), ENGRAM_ENOTFOUND);
  refused(f, engram_read_range(f->log, "nosuch", 1, 10, &b), ENGRAM_ENOTFOUND);
  engram_topic_info info;
  refused(f, engram_topic_info_get(f->log, "nosuch", &info), ENGRAM_ENOTFOUND);
  refused(f, engram_topic_drop(f->log, "nosuch"), ENGRAM_ENOTFOUND);
  refused(f, engram_topic_train_dict(f->log, "nosuch", NULL), ENGRAM_ENOTFOUND);
}

static void creating_a_topic_twice_is_refused(void **state) {
  fx *f = *state;
  refused(f, engram_topic_create(f->log, "memory", NULL), ENGRAM_EEXIST);
}

static void topic_configs_out_of_range_are_refused(void **state) {
  fx *f = *state;
  engram_topic_config too_big = {.max_payload = ENGRAM_MAX_PAYLOAD_LIMIT + 1};
  refused(f, engram_topic_create(f->log, "cfg", &too_big), ENGRAM_EINVAL);
  engram_topic_config max = {.max_payload = ENGRAM_MAX_PAYLOAD_LIMIT};
  assert_int_equal(engram_topic_create(f->log, "cfg", &max), 0);
}

static void the_topic_limit_is_reported_as_a_limit(void **state) {
  fx *f = *state;
  engram_close(f->log);
  char *dir = tu_tmpdir("limit");
  engram_options o = {.max_topics = 2};
  f->log = tu_open(dir, &o);
  assert_int_equal(engram_topic_create(f->log, "memory", NULL), 0);
  assert_int_equal(engram_topic_create(f->log, "b", NULL), 0);
  snapshot(f);
  refused(f, engram_topic_create(f->log, "c", NULL), ENGRAM_ELIMIT);
  /* Dropping one makes room again. */
  assert_int_equal(engram_topic_drop(f->log, "b"), 0);
  assert_int_equal(engram_topic_create(f->log, "c", NULL), 0);
  engram_close(f->log);
  f->log = NULL;
  tu_tmpdir_done(dir);
  f->log = tu_open(f->dir, NULL);
}

static void bad_event_types_are_refused_as_invalid(void **state) {
  fx *f = *state;
  char *long_type = repeat('a', ENGRAM_MAX_TYPE + 1);
  const char *bad[] = {"",    ".a",       "a.", "a..b",        ".",    "a b",
                       "a/b", "memory.*", "*",  "caf\xc3\xa9", "a\tb", long_type};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    engram_event ev = good;
    ev.type = bad[i];
    refused_event(f, &ev, "memory", ENGRAM_EINVAL);
  }
  for (size_t at = 20; at < 80; at++) {
    char *cut = repeat('a', at + 8);
    memcpy(cut + at, "\xc3\xa9", 2);
    engram_event ev = good;
    ev.type = cut;
    refused_event(f, &ev, "memory", ENGRAM_EINVAL);
    free(cut);
  }
  engram_event ev = good;
  ev.type = NULL;
  refused_event(f, &ev, "memory", ENGRAM_EINVAL);
  free(long_type);
}

static void valid_event_types_at_the_edges_are_accepted(void **state) {
  fx *f = *state;
  char *longest = repeat('a', ENGRAM_MAX_TYPE);
  for (size_t i = 1; i + 1 < ENGRAM_MAX_TYPE; i += 2) longest[i] = '.';
  const char *ok[] = {"a", "A-b_c.d-9", "memory.saved", "x.y.z.w", longest};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    engram_event ev = good;
    ev.type = ok[i];
    assert_int_equal(append1(f, "memory", &ev), 0);
  }
  free(longest);
}

static void payloads_over_the_default_limit_are_too_big(void **state) {
  fx *f = *state;
  size_t limit = 1u << 20;
  char *p = calloc(1, limit + 1);
  engram_event ev = good;
  ev.payload = p;
  ev.payload_len = limit + 1;
  refused_event(f, &ev, "memory", ENGRAM_ETOOBIG);
  ev.payload_len = limit;
  assert_int_equal(append1(f, "memory", &ev), 0);
  free(p);
}

static void payloads_over_a_topics_own_limit_are_too_big(void **state) {
  fx *f = *state;
  char p[1001] = {0};
  engram_event ev = good;
  ev.payload = p;
  ev.payload_len = 1001;
  refused_event(f, &ev, "small", ENGRAM_ETOOBIG);
  ev.payload_len = 1000;
  assert_int_equal(append1(f, "small", &ev), 0);
}

static void a_null_payload_with_a_length_is_invalid(void **state) {
  fx *f = *state;
  engram_event ev = good;
  ev.payload = NULL;
  ev.payload_len = 10;
  refused_event(f, &ev, "memory", ENGRAM_EINVAL);
}

static void too_many_headers_are_too_big(void **state) {
  fx *f = *state;
  engram_header h[ENGRAM_MAX_HEADERS + 1];
  for (size_t i = 0; i <= ENGRAM_MAX_HEADERS; i++) h[i] = (engram_header){"h", "v"};
  engram_event ev = good;
  ev.headers = h;
  ev.n_headers = ENGRAM_MAX_HEADERS + 1;
  refused_event(f, &ev, "memory", ENGRAM_ETOOBIG);
  ev.n_headers = ENGRAM_MAX_HEADERS;
  assert_int_equal(append1(f, "memory", &ev), 0);
}

static void header_bytes_over_the_limit_are_too_big(void **state) {
  fx *f = *state;
  /* Names and values together: 2 x (1 + 4096) > 8192. */
  char *v = repeat('v', 4096);
  engram_header h[2] = {{"a", v}, {"b", v}};
  engram_event ev = good;
  ev.headers = h;
  ev.n_headers = 2;
  refused_event(f, &ev, "memory", ENGRAM_ETOOBIG);
  /* One value alone over the limit. */
  char *big = repeat('v', ENGRAM_MAX_HEADER_BYTES + 1);
  engram_header one = {"a", big};
  ev.headers = &one;
  ev.n_headers = 1;
  refused_event(f, &ev, "memory", ENGRAM_ETOOBIG);
  /* Exactly at the limit is fine. */
  big[ENGRAM_MAX_HEADER_BYTES - 1] = 0;
  assert_int_equal(append1(f, "memory", &ev), 0);
  free(v);
  free(big);
}

static void headers_with_empty_or_missing_names_are_invalid(void **state) {
  fx *f = *state;
  engram_header empty[2] = {{"ok", "1"}, {"", "v"}};
  engram_event ev = good;
  ev.headers = empty;
  ev.n_headers = 2;
  refused_event(f, &ev, "memory", ENGRAM_EINVAL);
  engram_header null_name = {NULL, "v"};
  ev.headers = &null_name;
  ev.n_headers = 1;
  refused_event(f, &ev, "memory", ENGRAM_EINVAL);
  ev.headers = NULL;
  ev.n_headers = 3;
  refused_event(f, &ev, "memory", ENGRAM_EINVAL);
}

/* Strings over their size limit are "too big"; malformed ones are "invalid". */
static void keys_over_the_limit_are_too_big(void **state) {
  fx *f = *state;
  char *k = repeat('k', ENGRAM_MAX_KEY + 1);
  engram_event ev = good;
  ev.key = k;
  refused_event(f, &ev, "memory", ENGRAM_ETOOBIG);
  k[ENGRAM_MAX_KEY] = 0;
  assert_int_equal(append1(f, "memory", &ev), 0);
  free(k);
}

static void idempotency_keys_over_the_limit_are_too_big(void **state) {
  fx *f = *state;
  char *k = repeat('i', ENGRAM_MAX_KEY + 1);
  engram_event ev = good;
  ev.idempotency_key = k;
  refused_event(f, &ev, "memory", ENGRAM_ETOOBIG);
  /* Every length up to the limit is accepted, and works as a key. */
  const size_t lens[] = {1, ENGRAM_MAX_KEY / 2, ENGRAM_MAX_KEY - 1, ENGRAM_MAX_KEY};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
    k[lens[i]] = 0;
    uint64_t off = 0, again = 0;
    int dup = -1;
    int rc = engram_append(f->log, "memory", &ev, &off, &dup);
    if (rc)
      fprintf(stderr, "idempotency key of %zu bytes: %s: %s\n", lens[i], engram_errname(rc),
              engram_errmsg(f->log));
    assert_int_equal(rc, 0);
    assert_int_equal(dup, 0);
    assert_int_equal(engram_append(f->log, "memory", &ev, &again, &dup), 0);
    assert_int_equal(dup, 1);
    assert_int_equal(again, off);
    k[lens[i]] = 'i';
  }
  free(k);
}

static void content_types_over_the_limit_are_too_big(void **state) {
  fx *f = *state;
  char *ct = repeat('c', ENGRAM_MAX_CONTENT_TYPE + 1);
  engram_event ev = good;
  ev.content_type = ct;
  refused_event(f, &ev, "memory", ENGRAM_ETOOBIG);
  ct[ENGRAM_MAX_CONTENT_TYPE] = 0;
  assert_int_equal(append1(f, "memory", &ev), 0);
  free(ct);
}

static void an_empty_idempotency_key_is_invalid(void **state) {
  fx *f = *state;
  engram_event ev = good;
  ev.idempotency_key = "";
  refused_event(f, &ev, "memory", ENGRAM_EINVAL);
}

static void a_deliver_at_before_the_epoch_is_invalid(void **state) {
  fx *f = *state;
  engram_event ev = good;
  ev.deliver_at_ns = -1;
  refused_event(f, &ev, "memory", ENGRAM_EINVAL);
}

static void null_pointers_are_invalid(void **state) {
  fx *f = *state;
  uint64_t off;
  refused(f, engram_append(f->log, NULL, &good, &off, NULL), ENGRAM_EINVAL);
  refused(f, engram_append(f->log, "memory", NULL, &off, NULL), ENGRAM_EINVAL);
  assert_int_equal(engram_append(NULL, "memory", &good, &off, NULL), ENGRAM_EINVAL);
  uint64_t offs[2];
  refused(f, engram_append_batch(f->log, "memory", NULL, 2, offs, NULL), ENGRAM_EINVAL);
  engram_event two[2] = {good, good};
  refused(f, engram_append_batch(f->log, "memory", two, 2, NULL, NULL), ENGRAM_EINVAL);
  refused(f, engram_append_batch(f->log, NULL, two, 2, offs, NULL), ENGRAM_EINVAL);
  engram_batch *b;
  refused(f, engram_read(f->log, "memory", 1, NULL), ENGRAM_EINVAL);
  refused(f, engram_read(f->log, NULL, 1, &b), ENGRAM_EINVAL);
  refused(f, engram_read_range(f->log, "memory", 1, 10, NULL), ENGRAM_EINVAL);
  refused(f, engram_topic_info_get(f->log, "memory", NULL), ENGRAM_EINVAL);
  refused(f, engram_topic_list(f->log, NULL, NULL), ENGRAM_EINVAL);
  refused(f, engram_verify(f->log, NULL), ENGRAM_EINVAL);
  refused(f, engram_backup(f->log, NULL), ENGRAM_EINVAL);
  refused(f, engram_topic_drop(f->log, NULL), ENGRAM_EINVAL);
}

static void reading_offsets_that_were_never_assigned_is_not_found(void **state) {
  fx *f = *state;
  engram_batch *b = NULL;
  refused(f, engram_read(f->log, "memory", 0, &b), ENGRAM_ENOTFOUND);
  refused(f, engram_read(f->log, "memory", f->before.head_offset + 1, &b), ENGRAM_ENOTFOUND);
  refused(f, engram_read(f->log, "memory", UINT64_MAX, &b), ENGRAM_ENOTFOUND);
  /* A range past the head is simply empty. */
  assert_int_equal(engram_read_range(f->log, "memory", f->before.head_offset + 1, 10, &b), 0);
  assert_int_equal(b->count, 0);
  engram_batch_free(b);
}

static void training_a_dictionary_on_too_few_events_is_invalid(void **state) {
  fx *f = *state;
  uint32_t id = 77;
  refused(f, engram_topic_train_dict(f->log, "memory", &id), ENGRAM_EINVAL);
  engram_topic_info info;
  assert_int_equal(engram_topic_info_get(f->log, "memory", &info), 0);
  assert_int_equal(info.dict_id, 0);
}

static void bad_open_arguments_are_refused(void **state) {
  engram *log = NULL;
  char *dir = tu_tmpdir("open");
  char *sub = tu_join(dir, "log");
  assert_int_equal(engram_open(NULL, NULL, &log), ENGRAM_EINVAL);
  assert_null(log);
  assert_int_equal(engram_open("", NULL, &log), ENGRAM_EINVAL);
  assert_int_equal(engram_open(sub, NULL, NULL), ENGRAM_EINVAL);
  engram_options bad_mode = {.durability = (engram_durability)7};
  assert_int_equal(engram_open(sub, &bad_mode, &log), ENGRAM_EINVAL);
  assert_false(tu_exists(sub));
  engram_options nocreate = {.flags = ENGRAM_OPEN_NOCREATE};
  assert_int_equal(engram_open(sub, &nocreate, &log), ENGRAM_ENOTFOUND);
  assert_false(tu_exists(sub));
  free(sub);
  tu_tmpdir_done(dir);
}

static void a_directory_holding_other_files_is_not_taken_over(void **state) {
  char *dir = tu_tmpdir("occupied");
  char *file = tu_join(dir, "notes.txt");
  FILE *fp = fopen(file, "w");
  fputs("mine\n", fp);
  fclose(fp);
  engram *log = NULL;
  int rc = engram_open(dir, NULL, &log);
  assert_true(rc < 0);
  assert_null(log);
  assert_true(tu_exists(file));
  char *mdb = tu_join(dir, "data.mdb");
  assert_false(tu_exists(mdb));
  free(mdb);
  free(file);
  tu_tmpdir_done(dir);
}

static void a_log_of_another_format_version_is_refused(void **state) {
  char *dir = tu_tmpdir("version");
  engram *log = tu_open(dir, NULL);
  engram_close(log);
  /* Rewrite the stored format version as the next one. */
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(tu_raw_open(dir, 0, &env), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
  unsigned char v[4];
  be32_put(v, ENGRAM_FORMAT_VERSION + 1);
  MDB_val k = {14, "format_version"}, val = {4, v};
  assert_int_equal(mdb_put(txn, dbi, &k, &val, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  log = NULL;
  assert_int_equal(engram_open(dir, NULL, &log), ENGRAM_EVERSION);
  assert_null(log);
  tu_tmpdir_done(dir);
}

int main(void) {
  tu_test_filter();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(bad_topic_names_are_refused_as_invalid),
      T(the_longest_and_oddest_valid_topic_names_are_accepted),
      T(a_topic_that_does_not_exist_is_not_found),
      T(creating_a_topic_twice_is_refused),
      T(topic_configs_out_of_range_are_refused),
      T(the_topic_limit_is_reported_as_a_limit),
      T(bad_event_types_are_refused_as_invalid),
      T(valid_event_types_at_the_edges_are_accepted),
      T(payloads_over_the_default_limit_are_too_big),
      T(payloads_over_a_topics_own_limit_are_too_big),
      T(a_null_payload_with_a_length_is_invalid),
      T(too_many_headers_are_too_big),
      T(header_bytes_over_the_limit_are_too_big),
      T(headers_with_empty_or_missing_names_are_invalid),
      T(keys_over_the_limit_are_too_big),
      T(idempotency_keys_over_the_limit_are_too_big),
      T(content_types_over_the_limit_are_too_big),
      T(an_empty_idempotency_key_is_invalid),
      T(a_deliver_at_before_the_epoch_is_invalid),
      T(null_pointers_are_invalid),
      T(reading_offsets_that_were_never_assigned_is_not_found),
      T(training_a_dictionary_on_too_few_events_is_invalid),
      cmocka_unit_test(bad_open_arguments_are_refused),
      cmocka_unit_test(a_directory_holding_other_files_is_not_taken_over),
      cmocka_unit_test(a_log_of_another_format_version_is_refused),
  };
  return cmocka_run_group_tests_name("validation", tests, NULL, NULL);
}
