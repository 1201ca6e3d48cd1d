/* test_open.c — opening and creating a log (log/env.c): path forms, leftovers of
 * interrupted creations, directories that hold something else, the messages each case
 * gives, and read-only opens (a read-only bind mount and an unprivileged user need root;
 * those cases are skipped otherwise). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"

typedef struct fx {
  char *root; /* the test's temporary directory */
  char *log;  /* root/log: where the tests put their log */
  char *mnt;  /* a read-only bind mount to undo at teardown, NULL = none */
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->root = tu_tmpdir("open");
  f->log = tu_join(f->root, "log");
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  if (f->mnt) umount2(f->mnt, MNT_DETACH);
  free(f->mnt);
  free(f->log);
  tu_tmpdir_done(f->root);
  free(f);
  return 0;
}

/* ---- helpers ---------------------------------------------------------------------- */

static void put_file(const char *path, const void *data, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, len), (ssize_t)len);
  close(fd);
}

/* A snapshot of every file of a directory (names and contents), for before/after. */
typedef struct snap {
  size_t n;
  char name[16][256];
  unsigned char *data[16];
  size_t len[16];
} snap;

static void snap_take(const char *dir, snap *s) {
  memset(s, 0, sizeof *s);
  DIR *d = opendir(dir);
  assert_non_null(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    assert_true(s->n < 16);
    snprintf(s->name[s->n], sizeof s->name[0], "%s", e->d_name);
    char *p = tu_join(dir, e->d_name);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    s->len[s->n] = S_ISREG(st.st_mode) ? (size_t)st.st_size : 0;
    s->data[s->n] = malloc(s->len[s->n] + 1);
    if (S_ISREG(st.st_mode)) {
      int fd = open(p, O_RDONLY);
      assert_true(fd >= 0);
      assert_int_equal(read(fd, s->data[s->n], s->len[s->n]), (ssize_t)s->len[s->n]);
      close(fd);
    }
    free(p);
    s->n++;
  }
  closedir(d);
}

static int snap_find(const snap *s, const char *name) {
  for (size_t i = 0; i < s->n; i++)
    if (!strcmp(s->name[i], name)) return (int)i;
  return -1;
}

/* Every file before is there after with the same bytes, and no file was added. */
static void snap_assert_same(const snap *before, const snap *after) {
  for (size_t i = 0; i < after->n; i++)
    if (snap_find(before, after->name[i]) < 0) fail_msg("file %s appeared", after->name[i]);
  for (size_t i = 0; i < before->n; i++) {
    int j = snap_find(after, before->name[i]);
    if (j < 0) fail_msg("file %s vanished", before->name[i]);
    if (before->len[i] != after->len[j] || memcmp(before->data[i], after->data[j], before->len[i]))
      fail_msg("file %s changed (%zu -> %zu bytes)", before->name[i], before->len[i],
               after->len[j]);
  }
}

static void snap_free(snap *s) {
  for (size_t i = 0; i < s->n; i++) free(s->data[i]);
}

/* Names in dir containing ".creating." (leftovers of a creation). */
static int count_creating(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strstr(e->d_name, ".creating.")) n++;
  closedir(d);
  return n;
}

static void append_one(engram *log, const char *topic, const char *payload) {
  engram_topic_info ti;
  if (engram_topic_info_get(log, topic, &ti) == ENGRAM_ENOTFOUND)
    assert_int_equal(engram_topic_create(log, topic, NULL), 0);
  engram_event ev = {.type = "memory.saved", .payload = payload, .payload_len = strlen(payload)};
  uint64_t off;
  assert_int_equal(engram_append(log, topic, &ev, &off, NULL), 0);
}

static void expect_open_error(const char *path, uint32_t flags, int code, const char *words) {
  engram_options o = {.flags = flags};
  engram *log = NULL;
  int rc = engram_open(path, &o, &log);
  assert_null(log);
  if (rc != code) fail_msg("open %s: rc %d (%s), wanted %d", path, rc, engram_errmsg(NULL), code);
  if (!strstr(engram_errmsg(NULL), words))
    fail_msg("open %s: message '%s' lacks '%s'", path, engram_errmsg(NULL), words);
}

/* Makes an LMDB environment of another program in dir, with liblmdb itself. */
static void make_foreign_env(const char *dir) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 4);
  assert_int_equal(mdb_env_open(env, dir, 0, 0644), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, "accounts", MDB_CREATE, &dbi), 0);
  MDB_val k = {5, "alice"}, v = {3, "100"};
  assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

/* ---- creation --------------------------------------------------------------------- */

static void a_trailing_slash_on_an_empty_directory_makes_a_working_log(void **state) {
  fx *f = *state;
  assert_int_equal(mkdir(f->log, 0755), 0);
  char path[4200];
  snprintf(path, sizeof path, "%s//", f->log);
  engram *log = NULL;
  int rc = engram_open(path, NULL, &log);
  if (rc) fail_msg("open %s: %s", path, engram_errmsg(NULL));
  append_one(log, "mp", "{}");
  engram_close(log);
  assert_int_equal(count_creating(f->root), 0);
  assert_int_equal(count_creating(f->log), 0);
  /* Every later open, with or without the slash, finds the log. */
  log = tu_open(f->log, NULL);
  engram_topic_info ti;
  assert_int_equal(engram_topic_info_get(log, "mp", &ti), 0);
  assert_int_equal(ti.head_offset, 1);
  engram_close(log);
}

static void a_path_ending_in_dot_makes_the_log_in_that_directory(void **state) {
  fx *f = *state;
  assert_int_equal(mkdir(f->log, 0755), 0);
  char path[4200];
  snprintf(path, sizeof path, "%s/.", f->log);
  engram *log = NULL;
  int rc = engram_open(path, NULL, &log);
  if (rc) fail_msg("open %s: %s", path, engram_errmsg(NULL));
  engram_close(log);
  char *data = tu_join(f->log, "data.mdb");
  assert_true(tu_exists(data));
  free(data);
  assert_int_equal(count_creating(f->root), 0);
}

static void a_leftover_of_a_dead_creator_is_removed_and_a_live_ones_kept(void **state) {
  fx *f = *state;
  /* A child that exits at once leaves a pid no process has. */
  pid_t gone = fork();
  if (gone == 0) _exit(0);
  waitpid(gone, NULL, 0);
  char dead[4300], live[4300], other[4300];
  snprintf(dead, sizeof dead, "%s.creating.%ld.1234", f->log, (long)gone);
  snprintf(live, sizeof live, "%s.creating.%ld.5678", f->log, (long)getpid());
  snprintf(other, sizeof other, "%s/unrelated.creating.%ld.1", f->root, (long)gone);
  assert_int_equal(mkdir(dead, 0755), 0);
  char *inner = tu_join(dead, "data.mdb");
  put_file(inner, "x", 1);
  free(inner);
  assert_int_equal(mkdir(live, 0755), 0);
  assert_int_equal(mkdir(other, 0755), 0);
  /* A dead creator's directory younger than a minute may belong to a creator in another
   * PID namespace: kept until it is older. */
  engram *log = tu_open(f->log, NULL);
  engram_close(log);
  assert_true(tu_exists(dead));
  struct timespec two_min[2] = {{.tv_sec = time(NULL) - 120}, {.tv_sec = time(NULL) - 120}};
  assert_int_equal(utimensat(AT_FDCWD, dead, two_min, 0), 0);
  assert_int_equal(utimensat(AT_FDCWD, other, two_min, 0), 0);
  log = tu_open(f->log, NULL);
  engram_close(log);
  assert_false(tu_exists(dead));
  assert_true(tu_exists(live));  /* its creator may still be working */
  assert_true(tu_exists(other)); /* another log's */
  /* A live one older than any creation takes is a leftover too (reused pid). */
  struct timespec old[2] = {{.tv_sec = time(NULL) - 3600}, {.tv_sec = time(NULL) - 3600}};
  assert_int_equal(utimensat(AT_FDCWD, live, old, 0), 0);
  log = tu_open(f->log, NULL);
  engram_close(log);
  assert_false(tu_exists(live));
}

/* Runs as the clock callback, just before the log is built: another party fills the
 * target directory while the creation is under way. */
static int64_t junk_arrives(void *ctx) {
  char *p = tu_join(ctx, "notes.txt");
  put_file(p, "mine", 4);
  free(p);
  return tu_now_ns();
}

static void a_rename_refused_because_files_appeared_is_an_error_not_a_success(void **state) {
  fx *f = *state;
  assert_int_equal(mkdir(f->log, 0755), 0);
  engram_options o = {.clock_ns = junk_arrives, .clock_ctx = f->log};
  engram *log = NULL;
  int rc = engram_open(f->log, &o, &log);
  assert_null(log);
  if (rc != ENGRAM_EEXIST) fail_msg("rc %d: %s", rc, engram_errmsg(NULL));
  assert_non_null(strstr(engram_errmsg(NULL), "no log"));
  /* The directory holds what the other party put there and nothing of engram's. */
  snap s;
  snap_take(f->log, &s);
  assert_int_equal(s.n, 1);
  assert_string_equal(s.name[0], "notes.txt");
  snap_free(&s);
  assert_int_equal(count_creating(f->root), 0);
}

static int create_log_child(void *arg) {
  engram *log = NULL;
  if (engram_open(arg, NULL, &log)) return 1;
  engram_topic_config cfg = {0};
  int rc = engram_topic_create(log, "theirs", &cfg);
  engram_close(log);
  return rc ? 2 : 0;
}

/* Another process creates the log while this one is creating it too. */
static int64_t other_process_creates(void *ctx) {
  static int done;
  if (!done++) assert_int_equal(tu_fork_child(create_log_child, ctx, 10000), 0);
  return tu_now_ns();
}

static void when_another_process_creates_the_log_first_its_log_is_opened(void **state) {
  fx *f = *state;
  engram_options o = {.clock_ns = other_process_creates, .clock_ctx = f->log};
  engram *log = NULL;
  int rc = engram_open(f->log, &o, &log);
  if (rc) fail_msg("open: %s", engram_errmsg(NULL));
  engram_topic_info ti;
  assert_int_equal(engram_topic_info_get(log, "theirs", &ti), 0);
  engram_close(log);
  assert_int_equal(count_creating(f->root), 0);
}

/* ---- what the directory holds ------------------------------------------------------ */

static void a_foreign_lmdb_environment_is_refused_and_left_byte_for_byte_unchanged(void **state) {
  fx *f = *state;
  assert_int_equal(mkdir(f->log, 0755), 0);
  make_foreign_env(f->log);
  snap before, after;
  snap_take(f->log, &before);
  expect_open_error(f->log, 0, ENGRAM_EEXIST, "not an engram log");
  assert_non_null(strstr(engram_errmsg(NULL), "accounts"));
  expect_open_error(f->log, ENGRAM_OPEN_NOCREATE, ENGRAM_EEXIST, "not an engram log");
  expect_open_error(f->log, ENGRAM_OPEN_RDONLY, ENGRAM_EEXIST, "not an engram log");
  snap_take(f->log, &after);
  snap_assert_same(&before, &after);
  snap_free(&after);
  snap_free(&before);
  /* Without its lock file too: none is created. */
  char *lock = tu_join(f->log, "lock.mdb");
  assert_int_equal(unlink(lock), 0);
  free(lock);
  snap_take(f->log, &before);
  expect_open_error(f->log, 0, ENGRAM_EEXIST, "not an engram log");
  snap_take(f->log, &after);
  snap_assert_same(&before, &after);
  snap_free(&after);
  snap_free(&before);
}

static void each_thing_that_is_not_a_log_gets_a_message_naming_it(void **state) {
  fx *f = *state;
  char p[4300];
  /* A regular file. */
  put_file(f->log, "hello", 5);
  expect_open_error(f->log, 0, ENGRAM_EEXIST, "is a file, not a log directory");
  unlink(f->log);
  /* A missing parent. */
  snprintf(p, sizeof p, "%s/no/such/log", f->root);
  expect_open_error(p, 0, ENGRAM_ENOTFOUND, "does not exist: create it first");
  /* An endpoint given for a directory: not "create tcp:/ first". */
  expect_open_error("tcp://127.0.0.1:7450", 0, ENGRAM_EINVAL, "an endpoint, not a directory");
  expect_open_error("ipc:///run/engram.ipc", ENGRAM_OPEN_RDONLY, ENGRAM_EINVAL, "engram_connect");
  /* A missing log without create. */
  expect_open_error(f->log, ENGRAM_OPEN_NOCREATE, ENGRAM_ENOTFOUND, "no log there");
  expect_open_error(f->log, ENGRAM_OPEN_RDONLY, ENGRAM_ENOTFOUND, "no log there");
  assert_false(tu_exists(f->log));
  /* A directory with other files. */
  assert_int_equal(mkdir(f->log, 0755), 0);
  snprintf(p, sizeof p, "%s/readme", f->log);
  put_file(p, "x", 1);
  expect_open_error(f->log, 0, ENGRAM_EEXIST, "holds other files and no log");
  unlink(p);
  /* An empty data.mdb. */
  snprintf(p, sizeof p, "%s/data.mdb", f->log);
  put_file(p, "", 0);
  expect_open_error(f->log, 0, ENGRAM_ECORRUPT, "data.mdb is empty");
  /* Random bytes. */
  unsigned char junk[20000];
  tu_fill_random(junk, sizeof junk, 42);
  put_file(p, junk, sizeof junk);
  expect_open_error(f->log, 0, ENGRAM_ECORRUPT, "not an LMDB data file");
  unlink(p);
  /* data.mdb as a directory. */
  assert_int_equal(mkdir(p, 0755), 0);
  expect_open_error(f->log, 0, ENGRAM_EEXIST, "data.mdb is a directory");
  rmdir(p);
  /* Nothing above wrote anything. */
  snap s;
  snap_take(f->log, &s);
  assert_int_equal(s.n, 0);
  snap_free(&s);
}

/* What the trailing-slash bug of older builds left behind: an environment with engram's
 * databases, all empty, and no format record. */
static void a_directory_ruined_by_an_older_build_says_how_to_recover(void **state) {
  fx *f = *state;
  assert_int_equal(mkdir(f->log, 0755), 0);
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 8);
  assert_int_equal(mdb_env_open(env, f->log, 0, 0644), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  const char *names[] = {"meta", "topics", "idem", "dicts"};
  for (int i = 0; i < 4; i++) assert_int_equal(mdb_dbi_open(txn, names[i], MDB_CREATE, &dbi), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  snap before, after;
  snap_take(f->log, &before);
  expect_open_error(f->log, 0, ENGRAM_ECORRUPT, "it holds no events; remove");
  snap_take(f->log, &after);
  snap_assert_same(&before, &after);
  snap_free(&after);
  snap_free(&before);
}

static void a_truncated_data_file_is_reported_not_faulted_on(void **state) {
  fx *f = *state;
  engram *log = tu_open(f->log, NULL);
  for (int i = 0; i < 200; i++) append_one(log, "t", "a payload long enough to fill some pages");
  engram_close(log);
  char *p = tu_join(f->log, "data.mdb");
  struct stat st;
  assert_int_equal(stat(p, &st), 0);
  assert_int_equal(truncate(p, st.st_size / 2), 0);
  free(p);
  expect_open_error(f->log, 0, ENGRAM_ECORRUPT, "truncated");
}

/* ---- read-only ---------------------------------------------------------------------- */

static engram *make_log_with_events(const char *dir) {
  engram *log = tu_open(dir, NULL);
  append_one(log, "mp", "one");
  append_one(log, "mp", "two");
  engram_group_config gc = {0};
  assert_int_equal(engram_group_create(log, "mp", "g", &gc), 0);
  return log;
}

static void check_reads(engram *log) {
  engram_batch *b = NULL;
  assert_int_equal(engram_read_range(log, "mp", 1, 10, &b), 0);
  assert_int_equal(b->count, 2);
  engram_batch_free(b);
  engram_topic_info *ti = NULL;
  size_t n = 0;
  assert_int_equal(engram_topic_list(log, &ti, &n), 0);
  assert_int_equal(n, 1);
  engram_free(ti);
  engram_group_info *gi = NULL;
  assert_int_equal(engram_group_list(log, "mp", &gi, &n), 0);
  assert_int_equal(n, 1);
  engram_free(gi);
  engram_verify_report vr;
  assert_int_equal(engram_verify(log, &vr), 0);
}

static void a_read_only_handle_reads_refuses_writes_and_changes_no_file(void **state) {
  fx *f = *state;
  engram_close(make_log_with_events(f->log));
  char *data = tu_join(f->log, "data.mdb");
  snap before, after;
  snap_take(f->log, &before);
  engram_options o = {.flags = ENGRAM_OPEN_RDONLY};
  engram *log = NULL;
  if (engram_open(f->log, &o, &log)) fail_msg("open: %s", engram_errmsg(NULL));
  check_reads(log);
  engram_event ev = {.type = "memory.saved", .payload = "x", .payload_len = 1};
  uint64_t off;
  assert_int_equal(engram_append(log, "mp", &ev, &off, NULL), ENGRAM_ENOTSUP);
  assert_non_null(strstr(engram_errmsg(log), "read-only"));
  assert_int_equal(engram_topic_create(log, "new", NULL), ENGRAM_ENOTSUP);
  assert_int_equal(engram_sync(log), 0);
  engram_close(log);
  snap_take(f->log, &after);
  /* LMDB keeps its reader table in lock.mdb when it may write it (lmdb.h, MDB_RDONLY);
   * every other file is untouched. */
  int i = snap_find(&after, "lock.mdb"), j = snap_find(&before, "lock.mdb");
  if (i >= 0 && j >= 0) {
    free(after.data[i]);
    after.data[i] = malloc(before.len[j] + 1);
    memcpy(after.data[i], before.data[j], before.len[j]);
    after.len[i] = before.len[j];
  }
  snap_assert_same(&before, &after);
  snap_free(&after);
  snap_free(&before);
  free(data);
}

/* Bind-mounts dir read-only on mnt; 0 when not possible (not root). */
static int mount_ro(const char *dir, const char *mnt) {
  if (geteuid() != 0) return 0;
  if (mount(dir, mnt, NULL, MS_BIND, NULL) != 0) return 0;
  if (mount(NULL, mnt, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) != 0) {
    umount2(mnt, MNT_DETACH);
    return 0;
  }
  return 1;
}

static void on_a_read_only_mount_writes_name_the_cause_and_reads_work(void **state) {
  fx *f = *state;
  engram_close(make_log_with_events(f->log));
  char *mnt = tu_join(f->root, "ro");
  assert_int_equal(mkdir(mnt, 0755), 0);
  if (!mount_ro(f->log, mnt)) {
    free(mnt);
    print_message("skipped: cannot bind-mount read-only (needs root)\n");
    skip();
  }
  f->mnt = mnt;
  snap before, after;
  snap_take(f->log, &before);
  expect_open_error(mnt, 0, ENGRAM_EDENIED, "read-only");
  engram_options o = {.flags = ENGRAM_OPEN_RDONLY};
  engram *log = NULL;
  if (engram_open(mnt, &o, &log)) fail_msg("open read-only: %s", engram_errmsg(NULL));
  check_reads(log);
  char dest[4300];
  snprintf(dest, sizeof dest, "%s/copy", f->root);
  assert_int_equal(engram_backup(log, dest), 0);
  engram_close(log);
  snap_take(f->log, &after);
  snap_assert_same(&before, &after);
  snap_free(&after);
  snap_free(&before);
  log = tu_open(dest, NULL);
  engram_batch *b = NULL;
  assert_int_equal(engram_read_range(log, "mp", 1, 10, &b), 0);
  assert_int_equal(b->count, 2);
  engram_batch_free(b);
  engram_close(log);
}

/* As an unprivileged user who may read the log's directory but not write it. */
static int read_without_write_access(void *arg) {
  engram *log = NULL;
  int rc = engram_open(arg, NULL, &log);
  if (rc != ENGRAM_EDENIED) return 11;
  if (!strstr(engram_errmsg(NULL), "may not write")) return 12;
  engram_options o = {.flags = ENGRAM_OPEN_RDONLY};
  if (engram_open(arg, &o, &log)) return 13;
  engram_batch *b = NULL;
  rc = engram_read_range(log, "mp", 1, 10, &b);
  size_t n = b ? b->count : 0;
  engram_batch_free(b);
  engram_close(log);
  return rc ? 14 : n == 2 ? 0 : 15;
}

static int read_as_nobody(void *arg) {
  if (setgroups(0, NULL) || setgid(65534) || setuid(65534)) return 10;
  if (access(arg, R_OK | X_OK) != 0) return 77; /* the temp dir is not ours to reach */
  return read_without_write_access(arg);
}

static void a_user_who_cannot_write_the_directory_reads_it_read_only(void **state) {
  fx *f = *state;
  if (geteuid() != 0) {
    /* Permission bits stop an unprivileged user: take write access away from ourselves. */
    engram_close(make_log_with_events(f->log));
    char *lock = tu_join(f->log, "lock.mdb");
    assert_int_equal(chmod(lock, 0444), 0);
    assert_int_equal(chmod(f->log, 0555), 0);
    snap before, after;
    snap_take(f->log, &before);
    int rc = tu_fork_child(read_without_write_access, f->log, 20000);
    snap_take(f->log, &after);
    chmod(f->log, 0755);
    chmod(lock, 0644);
    free(lock);
    assert_int_equal(rc, 0);
    snap_assert_same(&before, &after);
    snap_free(&after);
    snap_free(&before);
    return;
  }
  engram_close(make_log_with_events(f->log));
  assert_int_equal(chmod(f->log, 0755), 0);
  /* The temporary directories above the log (the runner's, this test's) are private:
   * let others pass through them (search only) for the length of the test. */
  char up[4096];
  snprintf(up, sizeof up, "%s", f->root);
  char *opened[8];
  mode_t modes[8];
  int n_opened = 0;
  while (n_opened < 8 && strstr(up, "engram")) {
    struct stat st;
    assert_int_equal(stat(up, &st), 0);
    if (!(st.st_mode & S_IXOTH)) {
      opened[n_opened] = strdup(up);
      modes[n_opened++] = st.st_mode & 07777;
      assert_int_equal(chmod(up, (st.st_mode & 07777) | S_IXOTH), 0);
    }
    char *slash = strrchr(up, '/');
    if (!slash || slash == up) break;
    *slash = '\0';
  }
  snap before, after;
  snap_take(f->log, &before);
  int rc = tu_fork_child(read_as_nobody, f->log, 20000);
  for (int i = 0; i < n_opened; i++) {
    chmod(opened[i], modes[i]);
    free(opened[i]);
  }
  if (rc == 77) {
    snap_free(&before);
    print_message("skipped: the unprivileged user cannot reach %s\n", f->log);
    skip();
  }
  assert_int_equal(rc, 0);
  snap_take(f->log, &after);
  snap_assert_same(&before, &after);
  snap_free(&after);
  snap_free(&before);
}

/* ---- the log id ------------------------------------------------------------------- */

static void expect_hex_id(const engram_log_info *li) {
  assert_int_equal(strlen(li->id), 32);
  for (size_t i = 0; i < 32; i++)
    if (!strchr("0123456789abcdef", li->id[i])) fail_msg("id '%s' is not hex", li->id);
}

static void a_log_has_one_id_that_survives_reopen_and_backup_and_differs_from_others(void **state) {
  fx *f = *state;
  engram *log = NULL, *other = NULL;
  engram_log_info a, b, c;
  int64_t before = (int64_t)time(NULL) * 1000000000LL - 1000000000LL;
  assert_int_equal(engram_open(f->log, NULL, &log), 0);
  assert_int_equal(engram_log_info_get(log, &a), 0);
  expect_hex_id(&a);
  assert_true(a.created_ns >= before);
  assert_int_equal(a.format_version, ENGRAM_FORMAT_VERSION);
  char *bk = tu_join(f->root, "backup");
  assert_int_equal(engram_backup(log, bk), 0);
  engram_close(log);
  assert_int_equal(engram_open(f->log, NULL, &log), 0);
  assert_int_equal(engram_log_info_get(log, &b), 0);
  assert_string_equal(a.id, b.id);
  assert_true(a.created_ns == b.created_ns);
  engram_close(log);
  assert_int_equal(engram_open(bk, NULL, &log), 0); /* a copy of the same log */
  assert_int_equal(engram_log_info_get(log, &c), 0);
  assert_string_equal(a.id, c.id);
  engram_close(log);
  char *o = tu_join(f->root, "other");
  assert_int_equal(engram_open(o, NULL, &other), 0);
  assert_int_equal(engram_log_info_get(other, &c), 0);
  expect_hex_id(&c);
  assert_string_not_equal(a.id, c.id);
  assert_int_equal(engram_log_info_get(other, NULL), ENGRAM_EINVAL);
  assert_int_equal(engram_log_info_get(NULL, &c), ENGRAM_EINVAL);
  engram_close(other);
  free(o);
  free(bk);
}

/* Removes a record of the log's meta database (and the write-ahead file), as in a log
 * made before that record (and the file) existed. */
static void drop_meta_key(const char *dir, const char *key) {
  char wal[4200];
  snprintf(wal, sizeof wal, "%s/wal", dir);
  unlink(wal);
  snprintf(wal, sizeof wal, "%s/wal.shm", dir);
  unlink(wal);
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 8);
  assert_int_equal(mdb_env_open(env, dir, 0, 0644), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
  MDB_val k = {strlen(key), (void *)key};
  assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

/* Removes the id of a log, as a log made before ids (and before the write-ahead file). */
static void drop_id(const char *dir) { drop_meta_key(dir, "log_id"); }

/* A child made by fork() that closes the parent's handle (a library closing what it was
 * given, an atexit handler): the close returns at once and leaves the log to the parent,
 * and the child's own handle works. It hung before, joining the parent's threads. */
static void a_child_closing_the_parents_handle_returns_and_leaves_the_log_alone(void **state) {
  fx *f = *state;
  engram *log = NULL;
  assert_int_equal(engram_open(f->log, NULL, &log), 0);
  assert_int_equal(engram_topic_create(log, "memory", NULL), 0);
  engram_event ev = {.type = "memory.saved", .payload = "p", .payload_len = 1};
  assert_int_equal(engram_append(log, "memory", &ev, NULL, NULL), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    alarm(20); /* a hang fails the test instead of stalling it */
    engram_close(log);
    engram *mine = NULL;
    int rc = engram_open(f->log, NULL, &mine);
    if (rc == 0) rc = engram_append(mine, "memory", &ev, NULL, NULL);
    engram_close(mine);
    _exit(rc == 0 ? 0 : 3);
  }
  int st = 0;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
  /* The parent's handle goes on: its append follows the child's. */
  uint64_t off = 0;
  assert_int_equal(engram_append(log, "memory", &ev, &off, NULL), 0);
  assert_int_equal(off, 3);
  engram_close(log);
  assert_int_equal(engram_open(f->log, NULL, &log), 0);
  engram_verify_report vr;
  assert_int_equal(engram_verify(log, &vr), 0);
  assert_int_equal(vr.damaged, 0);
  engram_close(log);
}

static void a_log_without_an_id_gets_one_at_its_next_read_write_open(void **state) {
  fx *f = *state;
  engram *log = NULL;
  engram_log_info a, b;
  assert_int_equal(engram_open(f->log, NULL, &log), 0);
  assert_int_equal(engram_log_info_get(log, &a), 0);
  engram_close(log);
  drop_id(f->log);
  engram_options o;
  memset(&o, 0, sizeof o);
  o.flags = ENGRAM_OPEN_RDONLY;
  assert_int_equal(engram_open(f->log, &o, &log), 0);
  assert_int_equal(engram_log_info_get(log, &b), 0);
  assert_string_equal(b.id, ""); /* a read-only handle writes nothing */
  assert_true(b.created_ns == a.created_ns);
  engram_close(log);
  assert_int_equal(engram_open(f->log, NULL, &log), 0);
  assert_int_equal(engram_log_info_get(log, &b), 0);
  expect_hex_id(&b);
  assert_string_not_equal(a.id, b.id); /* a new one */
  assert_true(b.created_ns == a.created_ns);
  engram_close(log);
  assert_int_equal(engram_open(f->log, &o, &log), 0);
  assert_int_equal(engram_log_info_get(log, &a), 0);
  assert_string_equal(a.id, b.id); /* kept */
  engram_close(log);
}

/* Every topic of the log reads through h: 0, or fails the test naming the first that
 * does not. */
static void every_topic_reads(engram *h, int n) {
  for (int i = 0; i < n; i++) {
    char t[32];
    snprintf(t, sizeof t, "user-%d", i);
    engram_topic_info ti;
    int rc = engram_topic_info_get(h, t, &ti);
    if (rc || ti.count != 1) fail_msg("topic %s: %s: %s", t, engram_errname(rc), engram_errmsg(h));
  }
}

static void make_topics(engram *h, int from, int to) {
  for (int i = from; i < to; i++) {
    char t[32];
    snprintf(t, sizeof t, "user-%d", i);
    assert_int_equal(engram_topic_create(h, t, NULL), 0);
    append_one(h, t, "{}");
  }
}

/* A log keeps the max_topics it was made with: an open that gives none (the CLI, the
 * daemon, a second program) reaches every topic and may create up to that limit. It
 * once used its own default of 1024 instead: a log of 1,200 topics made through Python
 * with max_topics=2000 could not be read by `engram stat` (LMDB's MDB_DBS_FULL). */
static void a_log_keeps_its_max_topics_for_every_later_open(void **state) {
  fx *f = *state;
  engram_options big = {.max_topics = 1200};
  engram *h = tu_open(f->log, &big);
  make_topics(h, 0, 1100);
  engram_close(h);
  h = tu_open(f->log, NULL);
  every_topic_reads(h, 1100);
  make_topics(h, 1100, 1200); /* up to the kept limit */
  assert_int_equal(engram_topic_create(h, "one-more", NULL), ENGRAM_ELIMIT);
  assert_non_null(strstr(engram_errmsg(h), "max_topics"));
  engram_close(h);
  /* A smaller limit asked for does not lower the log's; a larger one raises it, for
   * later opens too. */
  engram_options small = {.max_topics = 10};
  h = tu_open(f->log, &small);
  every_topic_reads(h, 1200);
  assert_int_equal(engram_topic_create(h, "one-more", NULL), ENGRAM_ELIMIT);
  engram_close(h);
  engram_options more = {.max_topics = 1300};
  engram_close(tu_open(f->log, &more));
  h = tu_open(f->log, NULL);
  assert_int_equal(engram_topic_create(h, "one-more", NULL), 0);
  engram_close(h);
  engram_options ro = {.flags = ENGRAM_OPEN_RDONLY};
  h = tu_open(f->log, &ro);
  every_topic_reads(h, 1200);
  engram_close(h);
}

/* A log made before logs kept their max_topics, with more topics than an open's limit
 * (made by a handle that asked for more): the open still has a handle slot for each. */
static void an_older_log_with_more_topics_than_the_limit_is_still_read_whole(void **state) {
  fx *f = *state;
  engram_options mid = {.max_topics = 60};
  engram *h = tu_open(f->log, &mid);
  make_topics(h, 0, 60);
  engram_close(h);
  drop_meta_key(f->log, "max_topics"); /* the older log */
  engram_options tiny = {.max_topics = 2};
  h = tu_open(f->log, &tiny);
  every_topic_reads(h, 60);
  engram_close(h);
}

/* In a child allowed `limit` descriptors: 0 when the open and an append worked, 1 when
 * one failed with a message that names the limit and what to do, 2 otherwise (the
 * message on stderr). */
struct fd_limited {
  const char *dir;
  int limit;
};

static int open_with_few_descriptors(void *arg) {
  const struct fd_limited *l = arg;
  struct rlimit r = {(rlim_t)l->limit, (rlim_t)l->limit};
  if (setrlimit(RLIMIT_NOFILE, &r)) return 3;
  engram *log = NULL;
  int rc = engram_open(l->dir, NULL, &log);
  if (rc == 0) {
    engram_event ev = {.type = "memory.saved", .payload = "{}", .payload_len = 2};
    uint64_t off;
    rc = engram_append(log, "memory", &ev, &off, NULL);
    engram_close(log);
    if (rc == 0) return 0;
  }
  const char *m = engram_errmsg(NULL);
  if (strstr(m, "Too many open files") && strstr(m, "ulimit")) return 1;
  fprintf(stderr, "with %d descriptors: %s: %s\n", l->limit, engram_errname(rc), m);
  return 2;
}

/* Out of descriptors at any step of an open (the write-ahead file, its shared header, the
 * board, LMDB's files): the message says so and what to do, never that a file is
 * damaged. */
static void running_out_of_descriptors_at_open_says_so_at_every_step(void **state) {
  fx *f = *state;
  engram *log = tu_open(f->log, NULL);
  tu_topic(log, "memory", NULL);
  append_one(log, "memory", "{\"text\":\"kept\"}");
  engram_close(log);
  int failed = 0, worked = 0;
  for (int n = 4; n <= 40; n++) {
    struct fd_limited l = {f->log, n};
    int st = tu_fork_child(open_with_few_descriptors, &l, 60000);
    if (st != 0 && st != 1)
      fail_msg("open with %d descriptors: %s", n,
               st == 2  ? "a message that does not name the cause (above)"
               : st < 0 ? "a timeout"
                        : "the child died or could not lower its limit");
    failed += st == 1;
    worked += st == 0;
  }
  assert_true(failed > 0); /* the limits did bite */
  assert_true(worked > 0);
  log = tu_open(f->log, NULL);
  engram_verify_report rep;
  assert_int_equal(engram_verify(log, &rep), 0);
  assert_int_equal(rep.damaged, 0);
  assert_int_equal(rep.records, 1 + (uint64_t)worked);
  engram_close(log);
}

int main(void) {
  tu_test_filter();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(a_trailing_slash_on_an_empty_directory_makes_a_working_log),
      T(a_path_ending_in_dot_makes_the_log_in_that_directory),
      T(a_leftover_of_a_dead_creator_is_removed_and_a_live_ones_kept),
      T(a_rename_refused_because_files_appeared_is_an_error_not_a_success),
      T(when_another_process_creates_the_log_first_its_log_is_opened),
      T(a_foreign_lmdb_environment_is_refused_and_left_byte_for_byte_unchanged),
      T(each_thing_that_is_not_a_log_gets_a_message_naming_it),
      T(a_directory_ruined_by_an_older_build_says_how_to_recover),
      T(a_truncated_data_file_is_reported_not_faulted_on),
      T(a_read_only_handle_reads_refuses_writes_and_changes_no_file),
      T(a_log_keeps_its_max_topics_for_every_later_open),
      T(an_older_log_with_more_topics_than_the_limit_is_still_read_whole),
      T(on_a_read_only_mount_writes_name_the_cause_and_reads_work),
      T(a_user_who_cannot_write_the_directory_reads_it_read_only),
      T(a_log_has_one_id_that_survives_reopen_and_backup_and_differs_from_others),
      T(a_log_without_an_id_gets_one_at_its_next_read_write_open),
      T(a_child_closing_the_parents_handle_returns_and_leaves_the_log_alone),
      T(running_out_of_descriptors_at_open_says_so_at_every_step),
  };
  return cmocka_run_group_tests_name("open", tests, NULL, NULL);
}
