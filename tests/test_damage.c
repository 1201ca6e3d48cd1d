/* test_damage.c — a damaged data.mdb is reported as damage: no signal death, no event
 * skipped silently, verify's counts match the topic heads. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"

#define EVENTS 400

typedef tu_fx fx; /* logdir: the undamaged log */

/* Copies damaged per run: fewer under the sanitizers, where every command of the CLI
 * runs several times slower (ENGRAM_DAMAGE_COPIES overrides). */
#if defined(__SANITIZE_ADDRESS__)
#define DEFAULT_COPIES 25
#else
#define DEFAULT_COPIES 100
#endif

static int setup(void **state) {
  *state = tu_fx_new("damage");
  return 0;
}

static void ok(engram *log, int rc, const char *what) {
  if (rc != 0) fail_msg("%s: %s (%s)", what, engram_errname(rc), engram_errmsg(log));
}

/* A log of n events in topic "memory" with two groups, closed. The last two commits only
 * create groups, so both LMDB meta pages describe all n events. */
static void make_log(const char *dir, size_t n) {
  engram *log = tu_open(dir, NULL);
  engram_topic_config cfg = {.compress_threshold = 64};
  tu_topic(log, "memory", &cfg);
  tu_events *e = tu_generated_events(n, 0x5eed);
  for (size_t i = 0; i < n; i += 50) {
    engram_event evs[50];
    uint64_t offs[50];
    size_t k = n - i < 50 ? n - i : 50;
    for (size_t j = 0; j < k; j++) evs[j] = tu_event_of(&e->ev[i + j]);
    ok(log, engram_append_batch(log, "memory", evs, k, offs, NULL), "append");
  }
  tu_events_free(e);
  ok(log, engram_group_create(log, "memory", "g", NULL), "group g");
  ok(log, engram_group_create(log, "memory", "h", NULL), "group h");
  engram_close(log);
}

/* Deletes the record at offset from a closed log. */
static char *slurp(const char *path, size_t *len);

static void raw_delete(const char *dir, uint64_t offset) {
  MDB_env *env;
  assert_int_equal(tu_raw_open(dir, 0, &env), 0);
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, "t/memory", MDB_INTEGERKEY, &dbi), 0);
  MDB_val k = {8, &offset};
  assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

static void a_missing_offset_inside_the_range_is_damage_not_a_gap(void **state) {
  fx *f = *state;
  make_log(f->logdir, 50);
  raw_delete(f->logdir, 20);
  engram *log = tu_open(f->logdir, NULL);
  engram_batch *b = NULL;

  assert_int_equal(engram_read_range(log, "memory", 1, 100, &b), ENGRAM_ECORRUPT);
  assert_null(b);
  assert_non_null(strstr(engram_errmsg(log), "offset 20"));
  assert_int_equal(engram_read_range(log, "memory", 20, 100, &b), ENGRAM_ECORRUPT);
  assert_int_equal(engram_read(log, "memory", 20, &b), ENGRAM_ECORRUPT);
  assert_non_null(strstr(engram_errmsg(log), "offset 20"));
  /* What lies around the hole still reads. */
  ok(log, engram_read_range(log, "memory", 1, 19, &b), "read before the hole");
  assert_int_equal(b->count, 19);
  engram_batch_free(b);
  ok(log, engram_read_range(log, "memory", 21, 100, &b), "read after the hole");
  assert_int_equal(b->count, 30);
  assert_int_equal(b->events[0].offset, 21);
  engram_batch_free(b);
  /* Past the head is no damage. */
  assert_int_equal(engram_read(log, "memory", 51, &b), ENGRAM_ENOTFOUND);

  engram_verify_report r;
  ok(log, engram_verify(log, &r), "verify");
  assert_int_equal(r.topics, 1);
  assert_int_equal(r.records, 49);
  assert_true(r.damaged >= 1);
  assert_non_null(strstr(r.first_damage, "offset 20"));
  engram_close(log);
}

/* Makes the stored size of the record at offset 16 MiB larger, so that reading it runs
 * past the end of data.mdb and faults. LMDB keeps no checksum of its pages: a leaf node
 * is a 2+2-byte data size, 2 bytes of flags, a 2-byte key size, the key (the u64
 * offset), then the value. */
static void stretch_record(const char *dir, uint64_t offset) {
  unsigned char *val;
  size_t vlen;
  assert_int_equal(tu_raw_get(dir, "memory", offset, &val, &vlen), 0);
  char *file = tu_join(dir, "data.mdb");
  size_t len;
  char *buf = slurp(file, &len);
  int fd = open(file, O_RDWR), patched = 0;
  assert_true(fd >= 0);
  for (size_t i = 8; i + 8 + 16 <= len; i++) {
    if (memcmp(buf + i, &offset, 8) || memcmp(buf + i + 8, val, 16)) continue;
    uint16_t hi = 0x100;
    assert_int_equal(pwrite(fd, &hi, 2, (off_t)(i - 6)), 2);
    patched++;
  }
  assert_true(patched > 0);
  close(fd);
  free(buf);
  free(val);
  free(file);
}

static void a_fault_in_the_verify_walk_becomes_a_damage_report(void **state) {
  fx *f = *state;
#if defined(__SANITIZE_ADDRESS__)
  /* Sanitizer builds walk in the calling process (log/read.c): no isolation to test. */
  (void)f;
  skip();
#endif
  make_log(f->logdir, 50);
  stretch_record(f->logdir, 50);
  engram *log = tu_open(f->logdir, NULL);
  engram_verify_report r;
  ok(log, engram_verify(log, &r), "verify");
  assert_true(r.damaged >= 1);
  assert_non_null(strstr(r.first_damage, "data.mdb"));
  assert_non_null(strstr(r.first_damage, "backup"));
  /* The handle still works after the walk's fault. */
  engram_topic_info *t;
  size_t n;
  ok(log, engram_topic_list(log, &t, &n), "topics");
  engram_free(t);
  engram_close(log);
}

static void a_topic_record_that_does_not_decode_is_damage(void **state) {
  fx *f = *state;
  make_log(f->logdir, 50);
  MDB_env *env;
  assert_int_equal(tu_raw_open(f->logdir, 0, &env), 0);
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, "topics", 0, &dbi), 0);
  MDB_val k = {strlen("memory"), "memory"}, v = {4, "\xff\xff\xff\xff"};
  assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);

  engram *log = tu_open(f->logdir, NULL);
  engram_batch *b = NULL;
  assert_int_equal(engram_read_range(log, "memory", 1, 100, &b), ENGRAM_ECORRUPT);
  engram_verify_report r;
  ok(log, engram_verify(log, &r), "verify");
  assert_true(r.damaged >= 1);
  assert_non_null(strstr(r.first_damage, "memory"));
  engram_close(log);
}

static void a_group_record_that_does_not_decode_is_damage(void **state) {
  fx *f = *state;
  make_log(f->logdir, 10);
  MDB_env *env;
  assert_int_equal(tu_raw_open(f->logdir, 0, &env), 0);
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, "groups", 0, &dbi), 0);
  MDB_val k = {strlen("memory") + 2, "memory\0g"}, v = {4, "\xff\xff\xff\xff"};
  assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);

  engram *log = tu_open(f->logdir, NULL);
  engram_verify_report r;
  ok(log, engram_verify(log, &r), "verify");
  assert_int_equal(r.records, 10);
  assert_int_equal(r.damaged, 1);
  assert_non_null(strstr(r.first_damage, "group memory/g"));
  engram_close(log);
}

static void verify_counts_every_record_of_a_clean_log(void **state) {
  fx *f = *state;
  make_log(f->logdir, EVENTS);
  engram *log = tu_open(f->logdir, NULL);
  engram_verify_report r;
  ok(log, engram_verify(log, &r), "verify");
  assert_int_equal(r.topics, 1);
  assert_int_equal(r.records, EVENTS);
  assert_int_equal(r.damaged, 0);
  assert_string_equal(r.first_damage, "");
  engram_close(log);
}

/* ---------------------------------------------------------------------------------
 * Flipped bits, through the engram command.
 * ------------------------------------------------------------------------------ */
static char exe[512];

/* Runs `engram --data dir ARGS...` with stdout and stderr into files; returns what
 * tu_wait returns (exit code, 128 + signal, -1 on timeout). */
static int run_cli(const char *dir, const char *out, const char *err, ...) {
  char *argv[16] = {exe, "--data", (char *)dir};
  int n = 3;
  va_list ap;
  va_start(ap, err);
  char *s;
  while ((s = va_arg(ap, char *)) && n < 15) argv[n++] = s;
  va_end(ap);
  argv[n] = NULL;
  pid_t pid = fork();
  if (pid == 0) {
    int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int in = open("/dev/null", O_RDONLY);
    dup2(o, 1);
    dup2(e, 2);
    dup2(in, 0);
    execv(argv[0], argv);
    _exit(127);
  }
  return tu_wait(pid, 30000);
}

static char *slurp(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  if (!fp) fail_msg("cannot read %s", path);
  char *buf = NULL;
  size_t cap = 0, n = 0, r;
  do {
    if (cap - n < 65536) buf = realloc(buf, cap = cap * 2 + 65536);
    r = fread(buf + n, 1, cap - n - 1, fp);
    n += r;
  } while (r > 0);
  fclose(fp);
  buf[n] = '\0';
  if (len) *len = n;
  return buf;
}

static void copy_file(const char *from, const char *to) {
  size_t n;
  char *b = slurp(from, &n);
  FILE *fp = fopen(to, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(b, 1, n, fp), n);
  fclose(fp);
  free(b);
}

static void flip_bits(const char *path, int bits, uint64_t *rng, char *what, size_t wlen) {
  int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  size_t w = 0;
  for (int i = 0; i < bits; i++) {
    off_t at = (off_t)(tu_rand(rng) % (uint64_t)st.st_size);
    unsigned char byte;
    assert_int_equal(pread(fd, &byte, 1, at), 1);
    int bit = (int)(tu_rand(rng) % 8);
    byte ^= (unsigned char)(1u << bit);
    assert_int_equal(pwrite(fd, &byte, 1, at), 1);
    if (w < wlen) w += (size_t)snprintf(what + w, wlen - w, " %lld.%d", (long long)at, bit);
  }
  close(fd);
}

static int died(int st) { return st < 0 || st >= 128; }

static void flipped_bits_never_kill_a_reader_nor_hide_an_event(void **state) {
  fx *f = *state;
  const char *build = getenv("BUILD");
  snprintf(exe, sizeof exe, "%s/engram", build && *build ? build : "build");
  if (access(exe, X_OK) != 0) {
    fprintf(stderr, "%s not built: skipped\n", exe);
    skip();
    return;
  }
  make_log(f->logdir, EVENTS);
  char *out = tu_join(f->dir, "out"), *err = tu_join(f->dir, "err");
  char *want = tu_join(f->dir, "want");
  assert_int_equal(run_cli(f->logdir, want, err, "read", "memory", "--json", NULL), 0);
  size_t want_len;
  char *want_text = slurp(want, &want_len);
  assert_true(want_len > 0);
  char *src = tu_join(f->logdir, "data.mdb");

  const char *env = getenv("ENGRAM_DAMAGE_COPIES");
  int copies = env && atoi(env) > 0 ? atoi(env) : DEFAULT_COPIES;
  const char *seed_env = getenv("ENGRAM_TEST_SEED");
  uint64_t rng = seed_env ? strtoull(seed_env, NULL, 0) : 0xda11a9e5eedULL;
  if (!rng) rng = 1;
  fprintf(stderr, "seed 0x%llx, %d copies\n", (unsigned long long)rng, copies);
  int problems = 0, flagged = 0, clean = 0;
  char copy[64];
  for (int i = 0; i < copies && problems < 10; i++) {
    snprintf(copy, sizeof copy, "copy%d", i);
    char *cdir = tu_join(f->dir, copy);
    assert_int_equal(mkdir(cdir, 0755), 0);
    char *dst = tu_join(cdir, "data.mdb");
    copy_file(src, dst);
    char what[256] = "";
    flip_bits(dst, 1 + (int)(tu_rand(&rng) % 8), &rng, what, sizeof what);

    int problem = 0;
#define PROBLEM(...)                                \
  do {                                              \
    fprintf(stderr, "copy %d (bits%s): ", i, what); \
    fprintf(stderr, __VA_ARGS__);                   \
    fprintf(stderr, "\n");                          \
    problem = 1;                                    \
  } while (0)

    /* verify: no signal, and a clean verdict counts every event. */
    int v = run_cli(cdir, out, err, "verify", "--json", NULL);
    char *vout = slurp(out, NULL), *verr = slurp(err, NULL);
    if (died(v)) PROBLEM("verify died: %d: %s", v, verr);
    unsigned long long topics = 0, records = 0, damaged = 0;
    int parsed = sscanf(vout, "{\"topics\":%llu,\"records\":%llu,\"damaged\":%llu", &topics,
                        &records, &damaged) == 3;
    int verify_clean = v == 0 && parsed && damaged == 0;
    if (v == 0 && !verify_clean) PROBLEM("verify exit 0 but output %s", vout);
    if (verify_clean && (topics != 1 || records != EVENTS))
      PROBLEM("verify clean but counts %llu topics %llu records", topics, records);
    if (strstr(verr, "MDB_") && !strstr(verr, "damaged"))
      PROBLEM("verify leaked an LMDB code: %s", verr);
    if (v == 0)
      clean++;
    else
      flagged++;

    /* read: no signal; success means every event, identical. */
    int r = run_cli(cdir, out, err, "read", "memory", "--json", NULL);
    size_t got_len;
    char *got = slurp(out, &got_len), *rerr = slurp(err, NULL);
    if (died(r)) PROBLEM("read died: %d: %s", r, rerr);
    if (r == 0 && (got_len != want_len || memcmp(got, want_text, want_len)))
      PROBLEM("read exit 0 but its events differ from the original");
    if (verify_clean && r != 0) PROBLEM("verify clean but read failed: %s", rerr);
    if (r != 0 && r < 128 && !strchr(rerr, '\n')) PROBLEM("read failed with no message");
    if (strstr(rerr, "MDB_") && !strstr(rerr, "damaged"))
      PROBLEM("read leaked an LMDB code: %s", rerr);
    free(got);
    free(rerr);

    /* The other read commands, then the writes. */
    static const char *const cmds[][8] = {
        {"stat", NULL},
        {"topics", NULL},
        {"topic", "show", "memory", "--json", NULL},
        {"consume", "memory", "g", "--consumer", "c", "--count", "5", NULL},
        {"append", "memory", "memory.saved", "--payload", "{\"after\":1}", NULL},
    };
    for (size_t k = 0; k < sizeof cmds / sizeof cmds[0]; k++) {
      const char *const *a = cmds[k];
      int s = run_cli(cdir, out, err, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
      char *e = slurp(err, NULL);
      if (died(s)) PROBLEM("%s died: %d: %s", a[0], s, e);
      if ((strstr(e, "MDB_") && !strstr(e, "damaged")) || strstr(e, "internal error") ||
          strstr(e, "unknown error"))
        PROBLEM("%s: %s", a[0], e);
      /* Group records carry no CRC: a flipped bit can rename a group undetected, so
       * consume may fail (cleanly) after a clean verify. */
      if (verify_clean && s != 0 && strcmp(a[0], "consume") != 0)
        PROBLEM("verify clean but %s failed: %s", a[0], e);
      if (verify_clean && strcmp(a[0], "topic") == 0) {
        char *o = slurp(out, NULL);
        if (!strstr(o, "\"count\":400")) PROBLEM("verify clean but topic show says %s", o);
        free(o);
      }
      free(e);
    }
    free(vout);
    free(verr);
    problems += problem;
    if (!problem && !getenv("ENGRAM_KEEP_TMP")) tu_rmrf(cdir);
    free(dst);
    free(cdir);
  }
  fprintf(stderr, "%d copies verified clean, %d flagged\n", clean, flagged);
  free(src);
  free(want_text);
  free(want);
  free(out);
  free(err);
  assert_int_equal(problems, 0);
}

int main(void) {
  tu_test_filter();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, tu_fx_teardown)
  const struct CMUnitTest tests[] = {
      T(a_missing_offset_inside_the_range_is_damage_not_a_gap),
      T(a_topic_record_that_does_not_decode_is_damage),
      T(a_group_record_that_does_not_decode_is_damage),
      T(verify_counts_every_record_of_a_clean_log),
      T(a_fault_in_the_verify_walk_becomes_a_damage_report),
      T(flipped_bits_never_kill_a_reader_nor_hide_an_event),
  };
  return cmocka_run_group_tests_name("damage", tests, NULL, NULL);
}
