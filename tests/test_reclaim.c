/* test_reclaim.c — engram_reclaim(): data.mdb shrinks after a dropped topic with every
 * other event, group, cursor, idempotency key, worker and topic setting intact; refused
 * while another process (or this one) has the log open; opens refused while it runs; a
 * reclaim killed after each of its steps leaves a log that opens and verifies with every
 * event; and the progress callback of backup, verify, compact and reclaim. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"

#define OK(log, call) TU_OK(log, call)

static char exe[4096]; /* the engram command */

static int have_cli(void) {
  const char *build = getenv("BUILD");
  snprintf(exe, sizeof exe, "%s/engram", build && *build ? build : "build");
  if (access(exe, X_OK) == 0) return 1;
  fprintf(stderr, "%s not built: skipped\n", exe);
  return 0;
}

/* Starts `engram --data DIR args...` with stdout and stderr to /dev/null and the
 * environment variable `env` (NAME=VALUE, may be NULL) set. Returns its pid. */
static pid_t start_cli(const char *dir, const char *env, ...) {
  char *argv[16] = {exe, "--data", (char *)dir};
  int n = 3;
  va_list ap;
  va_start(ap, env);
  char *s;
  while ((s = va_arg(ap, char *)) && n < 15) argv[n++] = s;
  va_end(ap);
  argv[n] = NULL;
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves no child behind */
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    if (env) putenv((char *)env);
    execv(argv[0], argv);
    _exit(127);
  }
  assert_true(pid > 0);
  return pid;
}

/* Whether the copy of a reclaim is left in dir. */
static int copy_left(const char *dir) {
  char *p = tu_join(dir, "data.mdb.reclaim");
  int there = tu_exists(p);
  free(p);
  return there;
}

static uint64_t file_size(const char *dir, const char *name) {
  char *p = tu_join(dir, name);
  struct stat st;
  uint64_t n = stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
  free(p);
  return n;
}

/* ---------------------------------------------------------------------------------
 * The log: "keep" with settings, keys, idempotency keys, a dictionary, a group with a
 * cursor, acks, a retry and a dead letter, and a worker; "big" is what gets dropped.
 * ------------------------------------------------------------------------------ */
#define KEEP_EVENTS 3000

static void make_keep(engram *log) {
  engram_topic_config cfg = {.compress_threshold = 64, .max_events = 100000};
  OK(log, engram_topic_create(log, "keep", &cfg));
  tu_events *e = tu_memory_events(KEEP_EVENTS);
  static char idem[KEEP_EVENTS][16];
  engram_event evs[100];
  uint64_t offs[100];
  for (size_t i = 0; i < KEEP_EVENTS; i += 100) {
    for (size_t j = 0; j < 100; j++) {
      evs[j] = tu_event_of(&e->ev[(i + j) % e->n]);
      snprintf(idem[i + j], sizeof idem[0], "idem-%zu", i + j);
      evs[j].idempotency_key = idem[i + j];
    }
    OK(log, engram_append_batch(log, "keep", evs, 100, offs, NULL));
    assert_int_equal(offs[99], i + 100);
  }
  tu_events_free(e);
  uint32_t dict;
  OK(log, engram_topic_train_dict(log, "keep", &dict));
  engram_group_config gc = {.max_deliver = 5};
  OK(log, engram_group_create(log, "keep", "g", &gc));
  engram_batch *b = NULL;
  OK(log, engram_fetch(log, "keep", "g", "c1", 100, 0, &b));
  assert_int_equal(b->count, 100);
  for (size_t i = 0; i < 90; i++)
    OK(log, engram_ack(log, "keep", "g", b->events[i].offset, b->events[i].attempt, "r", 1));
  OK(log, engram_reject(log, "keep", "g", b->events[90].offset, b->events[90].attempt, "bad"));
  OK(log,
     engram_nack(log, "keep", "g", b->events[91].offset, b->events[91].attempt, 3600000, "later"));
  engram_batch_free(b);
  engram_worker_info w;
  memset(&w, 0, sizeof w);
  snprintf(w.name, sizeof w.name, "worker-1");
  snprintf(w.host, sizeof w.host, "box");
  w.pid = 4242;
  w.handled = 90;
  OK(log, engram_worker_heartbeat(log, &w));
}

static void make_big(engram *log, size_t mib) {
  OK(log, engram_topic_create(log, "big", NULL));
  enum { PAYLOAD = 4000, BATCH = 256 };
  char *buf = malloc(PAYLOAD);
  uint64_t offs[BATCH];
  engram_event evs[BATCH];
  memset(evs, 0, sizeof evs);
  size_t n = mib * 1024 * 1024 / PAYLOAD;
  for (size_t done = 0; done < n; done += BATCH) {
    tu_fill_random(buf, PAYLOAD, done + 1); /* incompressible */
    for (size_t i = 0; i < BATCH; i++) {
      evs[i].type = "memory.saved";
      evs[i].payload = buf;
      evs[i].payload_len = PAYLOAD;
    }
    OK(log, engram_append_batch(log, "big", evs, BATCH, offs, NULL));
  }
  free(buf);
}

/* What must survive, as one fingerprint: every event of "keep" (offset, type, key,
 * payload, idempotency key, time), the topic's settings, the group's counters, the
 * dead letter and the worker. */
static uint64_t mix(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}
static uint64_t mixs(uint64_t h, const char *s) {
  return s ? mix(h, s, strlen(s) + 1) : mix(h, "", 1);
}

static uint64_t fingerprint(engram *log) {
  uint64_t h = 1469598103934665603ull, from = 1, n = 0;
  for (;;) {
    engram_batch *b = NULL;
    OK(log, engram_read_range(log, "keep", from, 1000, &b));
    for (size_t i = 0; i < b->count; i++) {
      const engram_event *e = &b->events[i];
      h = mix(h, &e->offset, sizeof e->offset);
      h = mixs(mixs(h, e->type), e->key);
      h = mix(h, e->payload, e->payload_len);
      h = mixs(h, e->idempotency_key);
      h = mix(h, &e->timestamp_ns, sizeof e->timestamp_ns);
      from = e->offset + 1;
      n++;
    }
    size_t got = b->count;
    engram_batch_free(b);
    if (!got) break;
  }
  assert_int_equal(n, KEEP_EVENTS);
  engram_topic_info ti;
  OK(log, engram_topic_info_get(log, "keep", &ti));
  h = mix(h, &ti.config, sizeof ti.config);
#define X(type, name) h = mix(h, &ti.name, sizeof ti.name);
  ENGRAM_TOPIC_INFO_FIELDS(X)
#undef X
  engram_group_info gi;
  OK(log, engram_group_info_get(log, "keep", "g", &gi));
#define X(type, name) h = mix(h, &gi.name, sizeof gi.name);
  ENGRAM_GROUP_INFO_COUNTERS(X)
#undef X
  assert_int_equal(gi.dead, 1);
  assert_true(gi.retrying >= 1);
  engram_dlq_entry *dl = NULL;
  size_t ndl = 0;
  OK(log, engram_dlq_list(log, "keep", "g", 0, 10, &dl, &ndl));
  assert_int_equal(ndl, 1);
  h = mix(h, &dl[0].offset, sizeof dl[0].offset);
  engram_free(dl);
  engram_worker_info *w = NULL;
  size_t nw = 0;
  OK(log, engram_worker_list(log, 0, &w, &nw));
  int mine = 0; /* c1, which fetched, and worker-1, which sent a heartbeat */
  for (size_t i = 0; i < nw; i++) {
    if (strcmp(w[i].name, "c1") && strcmp(w[i].name, "worker-1")) continue;
    mine++;
    h = mixs(mixs(h, w[i].name), w[i].host);
    h = mix(h, &w[i].handled, sizeof w[i].handled);
    h = mix(h, &w[i].started_ns, sizeof w[i].started_ns);
  }
  assert_int_equal(mine, 2);
  engram_free(w);
  return h;
}

static void verify_clean(engram *log) {
  engram_verify_report r;
  OK(log, engram_verify(log, &r));
  if (r.damaged) fail_msg("verify: %s", r.first_damage);
}

/* An idempotency key of the old file still answers with its original offset. */
static void idempotency_survives(engram *log) {
  engram_event ev = {
      .type = "memory.saved", .payload = "x", .payload_len = 1, .idempotency_key = "idem-17"};
  uint64_t off = 0;
  int dup = 0;
  OK(log, engram_append(log, "keep", &ev, &off, &dup));
  assert_int_equal(dup, 1);
  assert_int_equal(off, 18);
}

static engram_options fast = {.durability = ENGRAM_DURABILITY_NOMETASYNC,
                              .maintenance_ms = ENGRAM_MAINTENANCE_OFF};

/* ---------------------------------------------------------------------------------
 * The tests.
 * ------------------------------------------------------------------------------ */
static void a_dropped_topic_s_space_goes_back_and_everything_else_stays(void **state) {
  tu_fx *f = *state;
  engram *log = tu_open(f->logdir, &fast);
  make_keep(log);
  make_big(log, 50);
  /* engram_space_get: the 50 MiB are used pages, then free pages once dropped. */
  engram_space full, dropped, back;
  OK(log, engram_space_get(log, &full));
  assert_true(full.used_bytes > 50ull << 20);
  assert_true(full.free_bytes < full.used_bytes / 4);
  assert_true(full.map_bytes >= full.used_bytes + full.free_bytes);
  OK(log, engram_topic_drop(log, "big"));
  OK(log, engram_space_get(log, &dropped));
  assert_true(dropped.free_bytes > 50ull << 20);
  assert_true(dropped.used_bytes < 8ull << 20); /* "keep" is a few MiB at most */
  /* Pages are only moved from used to free: the pages in the file stay as many, but for
   * the pages the drop's own commit wrote. */
  assert_true(dropped.used_bytes + dropped.free_bytes >= full.used_bytes + full.free_bytes);
  assert_true(dropped.used_bytes + dropped.free_bytes <=
              full.used_bytes + full.free_bytes + (1ull << 20));
  uint64_t want = fingerprint(log);
  engram_close(log);
  uint64_t before = file_size(f->logdir, "data.mdb");
  assert_true(before > 50ull << 20);

  engram_reclaim_report r;
  OK(NULL, engram_reclaim(f->logdir, NULL, &r));
  uint64_t after = file_size(f->logdir, "data.mdb");
  fprintf(stderr, "data.mdb: %llu bytes before, %llu after\n", (unsigned long long)before,
          (unsigned long long)after);
  assert_int_equal(r.bytes_before, before);
  assert_int_equal(r.bytes_after, after);
  assert_true(after < before / 10); /* "keep" is a few MiB at most */
  assert_false(copy_left(f->logdir));

  log = tu_open(f->logdir, &fast);
  assert_int_equal(fingerprint(log), want);
  OK(log, engram_space_get(log, &back));
  assert_int_equal(back.file_bytes, after);
  assert_true(back.used_bytes + back.free_bytes <= after);
  assert_true(back.free_bytes < 1ull << 20);
  assert_true(back.used_bytes >= dropped.used_bytes / 2);
  verify_clean(log);
  idempotency_survives(log);
  /* The log goes on: the next offset follows the head, the dropped topic stays gone. */
  engram_event ev = {.type = "memory.saved", .payload = "y", .payload_len = 1};
  uint64_t off;
  OK(log, engram_append(log, "keep", &ev, &off, NULL));
  assert_int_equal(off, KEEP_EVENTS + 1);
  engram_topic_info ti;
  assert_int_equal(engram_topic_info_get(log, "big", &ti), ENGRAM_ENOTFOUND);
  engram_close(log);
}

static void reclaim_is_refused_while_a_handle_of_this_process_is_open(void **state) {
  tu_fx *f = *state;
  engram *log = tu_open(f->logdir, &fast);
  make_keep(log);
  uint64_t want = fingerprint(log);
  struct stat st0, st1;
  char *data = tu_join(f->logdir, "data.mdb");
  assert_int_equal(stat(data, &st0), 0);
  engram_reclaim_report r = {1, 1};
  assert_int_equal(engram_reclaim(f->logdir, NULL, &r), ENGRAM_EBUSY);
  assert_non_null(strstr(engram_errmsg(NULL), "(this process)"));
  assert_int_equal(r.bytes_before, 0);
  assert_int_equal(stat(data, &st1), 0);
  assert_int_equal(st0.st_ino, st1.st_ino);
  assert_int_equal(fingerprint(log), want);
  engram_close(log);
  /* A read-only handle counts as much. */
  engram_options ro = {.flags = ENGRAM_OPEN_RDONLY};
  log = tu_open(f->logdir, &ro);
  assert_int_equal(engram_reclaim(f->logdir, NULL, NULL), ENGRAM_EBUSY);
  engram_close(log);
  OK(NULL, engram_reclaim(f->logdir, NULL, NULL));
  free(data);
}

/* Whether process `pid` holds a flock on the file at `path`, from /proc/locks. (Probing
 * with a lock of our own would not do: an exclusive one, even for an instant, is what a
 * reclaim holds, and an open meeting it fails.) */
static int holds_flock(const char *path, pid_t pid) {
  struct stat st;
  FILE *f = stat(path, &st) == 0 ? fopen("/proc/locks", "re") : NULL;
  if (!f) return 0;
  char line[256];
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) {
    char kind[16];
    long p;
    unsigned maj, min;
    unsigned long ino;
    if (strstr(line, "->")) continue;
    if (sscanf(line, "%*d: %15s %*s %*s %ld %x:%x:%lu", kind, &p, &maj, &min, &ino) == 5)
      found = !strcmp(kind, "FLOCK") && p == (long)pid && ino == (unsigned long)st.st_ino;
  }
  fclose(f);
  return found;
}

/* Waits until the child holds DIR/open.lock (it opened the log). */
static void wait_open_by_other(const char *dir, pid_t child) {
  char *p = tu_join(dir, "open.lock");
  int64_t until = tu_mono_ms() + 60000;
  while (!holds_flock(p, child)) {
    int st;
    if (waitpid(child, &st, WNOHANG) == child) fail_msg("the child exited (status %d)", st);
    if (tu_mono_ms() > until) fail_msg("the child never opened the log");
    tu_sleep_ms(10);
  }
  free(p);
}

static void reclaim_is_refused_while_another_process_has_the_log_open(void **state) {
  tu_fx *f = *state;
  if (!have_cli()) {
    skip();
    return;
  }
  engram *log = tu_open(f->logdir, &fast);
  make_keep(log);
  OK(log, engram_topic_create(log, "idle", NULL));
  OK(log, engram_group_create(log, "idle", "g", NULL));
  uint64_t want = fingerprint(log);
  engram_close(log);
  struct stat st0, st1;
  char *data = tu_join(f->logdir, "data.mdb");
  assert_int_equal(stat(data, &st0), 0);

  pid_t child =
      start_cli(f->logdir, NULL, "consume", "idle", "g", "--consumer", "c", "--wait", "1h", NULL);
  wait_open_by_other(f->logdir, child);
  assert_int_equal(engram_reclaim(f->logdir, NULL, NULL), ENGRAM_EBUSY);
  char pid[32];
  snprintf(pid, sizeof pid, "pid %ld", (long)child);
  if (!strstr(engram_errmsg(NULL), pid)) fail_msg("no %s in: %s", pid, engram_errmsg(NULL));
  assert_int_equal(stat(data, &st1), 0);
  assert_int_equal(st0.st_ino, st1.st_ino);
  assert_false(copy_left(f->logdir));
  kill(child, SIGKILL);
  assert_int_equal(tu_wait(child, 30000), 128 + SIGKILL);

  /* Its holder gone (killed: the kernel drops the lock), the reclaim runs. */
  OK(NULL, engram_reclaim(f->logdir, NULL, NULL));
  log = tu_open(f->logdir, &fast);
  assert_int_equal(fingerprint(log), want);
  verify_clean(log);
  engram_close(log);
  free(data);
}

/* A process that opened the environment without taking open.lock (an older engram, a
 * plain LMDB program): it waits with the environment open until it is killed. */
static int hold_raw(void *arg) {
  prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failed test leaves no child behind */
  MDB_env *env;
  if (tu_raw_open(arg, 1, &env)) return 1;
  MDB_txn *txn;
  if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) return 2;
  for (;;) pause();
}

static void reclaim_is_refused_while_a_process_without_open_lock_has_the_environment(void **state) {
  tu_fx *f = *state;
  engram *log = tu_open(f->logdir, &fast);
  make_keep(log);
  uint64_t want = fingerprint(log);
  engram_close(log);
  pid_t child = tu_spawn(hold_raw, f->logdir); /* no handle, no thread: fork is safe */
  char *lockmdb = tu_join(f->logdir, "lock.mdb");
  int64_t until = tu_mono_ms() + 60000;
  for (;;) { /* until the child holds LMDB's lock */
    int fd = open(lockmdb, O_RDONLY | O_CLOEXEC);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    int held = fd >= 0 && fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
    if (fd >= 0) close(fd);
    if (held) break;
    int st;
    if (waitpid(child, &st, WNOHANG) == child) fail_msg("the child exited (status %d)", st);
    if (tu_mono_ms() > until) fail_msg("the child never opened the environment");
    tu_sleep_ms(10);
  }
  assert_int_equal(engram_reclaim(f->logdir, NULL, NULL), ENGRAM_EBUSY);
  char pid[32];
  snprintf(pid, sizeof pid, "pid %ld", (long)child);
  if (!strstr(engram_errmsg(NULL), pid)) fail_msg("no %s in: %s", pid, engram_errmsg(NULL));
  assert_false(copy_left(f->logdir));
  kill(child, SIGKILL);
  assert_int_equal(tu_wait(child, 30000), 128 + SIGKILL);
  OK(NULL, engram_reclaim(f->logdir, NULL, NULL));
  log = tu_open(f->logdir, &fast);
  assert_int_equal(fingerprint(log), want);
  engram_close(log);
  free(lockmdb);
}

static void an_open_fails_at_once_while_a_reclaim_holds_the_log(void **state) {
  tu_fx *f = *state;
  engram *log = tu_open(f->logdir, &fast);
  engram_close(log);
  /* What a running reclaim holds: DIR/open.lock, exclusively, with its pid inside. */
  char *p = tu_join(f->logdir, "open.lock");
  int fd = open(p, O_RDWR | O_CLOEXEC);
  assert_true(fd >= 0);
  assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), 0);
  assert_int_equal(pwrite(fd, "12345\n", 6, 0), 6);
  engram_options ro = {.flags = ENGRAM_OPEN_RDONLY};
  assert_int_equal(engram_open(f->logdir, &fast, &log), ENGRAM_EBUSY);
  assert_non_null(strstr(engram_errmsg(NULL), "compact --reclaim` (pid 12345)"));
  assert_int_equal(engram_open(f->logdir, &ro, &log), ENGRAM_EBUSY);
  close(fd);
  log = tu_open(f->logdir, &fast);
  engram_close(log);
  free(p);
}

static void bad_arguments_and_other_programs_directories_are_refused(void **state) {
  tu_fx *f = *state;
  engram_space sp;
  assert_int_equal(engram_space_get(NULL, &sp), ENGRAM_EINVAL);
  assert_int_equal(engram_reclaim(NULL, NULL, NULL), ENGRAM_EINVAL);
  assert_int_equal(engram_reclaim("", NULL, NULL), ENGRAM_EINVAL);
  assert_int_equal(engram_reclaim(f->logdir, NULL, NULL), ENGRAM_ENOTFOUND);
  assert_non_null(strstr(engram_errmsg(NULL), "no log there"));
  assert_int_equal(engram_progress_set(NULL, NULL, NULL), ENGRAM_EINVAL);
  /* Another program's LMDB environment is refused, and not a file is added to it. */
  assert_int_equal(mkdir(f->logdir, 0755), 0);
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_open(env, f->logdir, 0, 0644), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
  MDB_val k = {3, "abc"}, v = {1, "x"};
  assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  assert_int_equal(engram_reclaim(f->logdir, NULL, NULL), ENGRAM_EEXIST);
  assert_non_null(strstr(engram_errmsg(NULL), "not an engram log"));
  char *lock = tu_join(f->logdir, "open.lock");
  assert_false(tu_exists(lock));
  free(lock);
}

/* The reclaim of a child ended after step N (ENGRAM_TEST_RECLAIM_EXIT, see log/reclaim.c):
 * 1 copy begun, 2 copy written, 3 copy flushed, 4 lock.mdb removed, 5 renamed,
 * 6 directory flushed. */
static void a_reclaim_killed_after_any_step_leaves_every_event(void **state) {
  tu_fx *f = *state;
  if (!have_cli()) {
    skip();
    return;
  }
  engram *log = tu_open(f->logdir, &fast);
  make_keep(log);
  uint64_t want = fingerprint(log);
  engram_close(log);
  for (int step = 1; step <= 6; step++) {
    log = tu_open(f->logdir, &fast);
    make_big(log, 2);
    OK(log, engram_topic_drop(log, "big"));
    engram_close(log);
    uint64_t before = file_size(f->logdir, "data.mdb");
    char env[64];
    snprintf(env, sizeof env, "ENGRAM_TEST_RECLAIM_EXIT=%d", step);
    pid_t child = start_cli(f->logdir, env, "compact", "--reclaim", NULL);
    assert_int_equal(tu_wait(child, 60000), 77);
    uint64_t after = file_size(f->logdir, "data.mdb");
    if (step >= 5)
      assert_true(after < before);
    else
      assert_int_equal(after, before);
    log = tu_open(f->logdir, &fast);
    /* A read-write open removes the copy of a reclaim that died before its swap. */
    assert_false(copy_left(f->logdir));
    assert_int_equal(fingerprint(log), want);
    verify_clean(log);
    engram_close(log);
  }
}

/* ---------------------------------------------------------------------------------
 * Progress.
 * ------------------------------------------------------------------------------ */
struct seen {
  char phases[8][32];
  int n_phases;
  uint64_t done, total; /* of the current phase */
  int calls;
  int bad; /* a call broke the contract */
  char why[200];
};

static void on_progress(void *ctx, const char *phase, uint64_t done, uint64_t total) {
  struct seen *s = ctx;
  s->calls++;
  if (!phase || !*phase) {
    s->bad = 1;
    snprintf(s->why, sizeof s->why, "no phase");
    return;
  }
  if (!s->n_phases || strcmp(s->phases[s->n_phases - 1], phase)) {
    if (s->n_phases && s->done != s->total && !s->bad) {
      s->bad = 1;
      snprintf(s->why, sizeof s->why, "phase %s ended at %llu of %llu", s->phases[s->n_phases - 1],
               (unsigned long long)s->done, (unsigned long long)s->total);
    }
    if (s->n_phases < 8) snprintf(s->phases[s->n_phases++], sizeof s->phases[0], "%s", phase);
    s->done = 0;
    s->total = 0;
  }
  if ((done < s->done || total < s->total || (total && done > total)) && !s->bad) {
    s->bad = 1;
    snprintf(s->why, sizeof s->why, "%s: %llu of %llu after %llu of %llu", phase,
             (unsigned long long)done, (unsigned long long)total, (unsigned long long)s->done,
             (unsigned long long)s->total);
  }
  s->done = done;
  s->total = total;
}

static void check_seen(struct seen *s, const char *first_phase) {
  if (s->bad) fail_msg("%s", s->why);
  assert_true(s->calls >= 2);
  assert_true(s->n_phases >= 1);
  assert_string_equal(s->phases[0], first_phase);
  if (s->done != s->total)
    fail_msg("the last phase ended at %llu of %llu", (unsigned long long)s->done,
             (unsigned long long)s->total);
  assert_true(s->total > 0);
}

static void progress_is_monotonic_and_never_past_its_total(void **state) {
  tu_fx *f = *state;
  engram *log = tu_open(f->logdir, &fast);
  make_keep(log);
  make_big(log, 8);
  struct seen s;

  memset(&s, 0, sizeof s);
  OK(log, engram_progress_set(log, on_progress, &s));
  engram_verify_report vr;
  OK(log, engram_verify(log, &vr));
  check_seen(&s, "checking records");
  assert_int_equal(s.n_phases, 2);
  assert_string_equal(s.phases[1], "checking databases");

  memset(&s, 0, sizeof s);
  char *dest = tu_join(f->dir, "copy");
  OK(log, engram_backup(log, dest));
  check_seen(&s, "copying");
  assert_true(s.total > (8ull << 20));

  memset(&s, 0, sizeof s);
  OK(log, engram_compact(log, NULL, NULL));
  check_seen(&s, "applying retention");
  assert_int_equal(s.total, 2); /* two topics */

  /* Removed: nothing is called. */
  OK(log, engram_progress_set(log, NULL, NULL));
  memset(&s, 0, sizeof s);
  OK(log, engram_compact(log, NULL, NULL));
  assert_int_equal(s.calls, 0);
  OK(log, engram_topic_drop(log, "big"));
  engram_close(log);

  memset(&s, 0, sizeof s);
  engram_reclaim_options o = {.progress = on_progress, .progress_ctx = &s};
  OK(NULL, engram_reclaim(f->logdir, &o, NULL));
  check_seen(&s, "copying");
  assert_int_equal(s.n_phases, 2);
  assert_string_equal(s.phases[1], "swapping");
  free(dest);
}

/* The callback is for the handle's own long calls: the maintenance runner's retention
 * passes (a thread of the library's) report nothing through it. A Python callback called
 * from that thread waits for the interpreter's lock, which a close holds while it stops
 * the runner. */
static void the_maintenance_runner_reports_no_progress(void **state) {
  tu_fx *f = *state;
  engram_options o = {.maintenance_ms = 20};
  engram *log = f->log = tu_open(f->logdir, &o);
  engram_topic_config cfg = {.max_events = 10};
  OK(log, engram_topic_create(log, "t", &cfg));
  struct seen s;
  memset(&s, 0, sizeof s);
  OK(log, engram_progress_set(log, on_progress, &s));
  engram_event e = {.type = "memory.saved", .payload = "x", .payload_len = 1};
  for (int i = 0; i < 100; i++) OK(log, engram_append(log, "t", &e, NULL, NULL));
  engram_topic_info ti;
  for (int i = 0; i < 200; i++) { /* retention ran: the runner passed */
    OK(log, engram_topic_info_get(log, "t", &ti));
    if (ti.count <= 10) break;
    usleep(10000);
  }
  assert_true(ti.count <= 10);
  usleep(100000);
  OK(log, engram_progress_set(log, NULL, NULL));
  assert_int_equal(s.calls, 0);
}

static int setup(void **state) {
  *state = tu_fx_new("reclaim");
  return 0;
}

int main(void) {
  tu_test_filter();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, tu_fx_teardown)
  const struct CMUnitTest tests[] = {
      T(a_dropped_topic_s_space_goes_back_and_everything_else_stays),
      T(reclaim_is_refused_while_a_handle_of_this_process_is_open),
      T(reclaim_is_refused_while_another_process_has_the_log_open),
      T(reclaim_is_refused_while_a_process_without_open_lock_has_the_environment),
      T(an_open_fails_at_once_while_a_reclaim_holds_the_log),
      T(bad_arguments_and_other_programs_directories_are_refused),
      T(a_reclaim_killed_after_any_step_leaves_every_event),
      T(progress_is_monotonic_and_never_past_its_total),
      T(the_maintenance_runner_reports_no_progress),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
