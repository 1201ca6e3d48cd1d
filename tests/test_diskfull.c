/* test_diskfull.c — on a full disk appends fail with ENGRAM_ENOSPC and a clear message,
 * nothing half-written remains, and the log works again once space returns. Needs root
 * to mount a small tmpfs; skipped otherwise. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"
#include "test_net_daemon.h"

#define EV_SIZE 4096

typedef struct fx {
  char *dir; /* mount point */
  int mounted;
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  f->dir = tu_tmpdir("diskfull");
  if (geteuid() == 0 && mount("tmpfs", f->dir, "tmpfs", 0, "size=8m,mode=0755") == 0)
    f->mounted = 1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  if (f->mounted) umount2(f->dir, MNT_DETACH);
  tu_tmpdir_done(f->dir);
  free(f);
  return 0;
}

static void need_tmpfs(fx *f) {
  if (!f->mounted) {
    print_message("skipped: cannot mount a tmpfs (needs root): %s\n", strerror(errno));
    skip();
  }
}

/* Writes `bytes` into a new file, or until the disk is full when bytes is 0. */
static size_t fill_file(const char *path, size_t bytes) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  char buf[65536];
  memset(buf, 0xab, sizeof buf);
  size_t done = 0;
  while (bytes == 0 || done < bytes) {
    size_t n = sizeof buf;
    if (bytes && bytes - done < n) n = bytes - done;
    ssize_t w = write(fd, buf, n);
    if (w <= 0) break;
    done += (size_t)w;
  }
  close(fd);
  return done;
}

static int clear_message(const char *msg) {
  return strcasestr(msg, "full") || strcasestr(msg, "space") || strcasestr(msg, "ENOSPC");
}

static void check_all(engram *log, uint64_t n) {
  unsigned char *want = malloc(EV_SIZE);
  uint64_t next = 1;
  for (;;) {
    engram_batch *b = NULL;
    int rc = engram_read_range(log, "memory", next, 128, &b);
    if (rc)
      fail_msg("read_range %llu: %s: %s", (unsigned long long)next, engram_errname(rc),
               engram_errmsg(log));
    size_t got = b->count;
    for (size_t k = 0; k < got; k++, next++) {
      assert_int_equal(b->events[k].offset, next);
      tu_fill_random(want, EV_SIZE, next);
      assert_int_equal(b->events[k].payload_len, EV_SIZE);
      assert_memory_equal(b->events[k].payload, want, EV_SIZE);
    }
    engram_batch_free(b);
    if (got == 0) break;
  }
  assert_int_equal(next, n + 1);
  engram_verify_report rep;
  assert_int_equal(engram_verify(log, &rep), 0);
  assert_int_equal(rep.damaged, 0);
  assert_int_equal(rep.records, n);
  free(want);
}

/* check_all, then closes the log, opens it again and checks it once more. */
static void check_all_and_reopened(engram *log, const char *dir, uint64_t n) {
  check_all(log, n);
  engram_close(log);
  log = tu_open(dir, NULL);
  check_all(log, n);
  engram_close(log);
}

static void appends_on_a_full_disk_fail_cleanly_and_work_again_once_space_returns(void **state) {
  fx *f = *state;
  need_tmpfs(f);
  char *filler = tu_join(f->dir, "filler");
  assert_int_equal(fill_file(filler, 2u << 20), 2u << 20);
  char *logdir = tu_join(f->dir, "log");
  engram_options o = {.map_size = 1u << 20};
  engram *log = tu_open(logdir, &o);
  engram_topic_config cfg = {.compress_threshold = UINT32_MAX};
  tu_topic(log, "memory", &cfg);

  unsigned char *buf = malloc(16 * EV_SIZE);
  engram_event evs[16];
  uint64_t offs[16];
  uint64_t head = 0;
  int rc = 0;
  for (int round = 0; round < 1000; round++) {
    for (int k = 0; k < 16; k++) {
      tu_fill_random(buf + k * EV_SIZE, EV_SIZE, head + (uint64_t)k + 1);
      evs[k] = (engram_event){
          .type = "memory.saved", .payload = buf + k * EV_SIZE, .payload_len = EV_SIZE};
    }
    rc = engram_append_batch(log, "memory", evs, 16, offs, NULL);
    if (rc) break;
    assert_int_equal(offs[0], head + 1);
    head = offs[15];
  }
  print_message("%llu events fitted before the disk filled\n", (unsigned long long)head);
  assert_true(head > 100);
  assert_true(rc < 0);
  /* The code and message are checked at the end, so that a wrong code still lets the
   * recovery below be tested. */
  int first_rc = rc;
  char first_msg[512];
  snprintf(first_msg, sizeof first_msg, "%s", engram_errmsg(log));

  /* Single events may still fit; fill up with them until they fail too. */
  engram_event one = {.type = "memory.saved", .payload = buf, .payload_len = EV_SIZE};
  uint64_t off;
  for (int k = 0; k < 1000; k++) {
    tu_fill_random(buf, EV_SIZE, head + 1);
    rc = engram_append(log, "memory", &one, &off, NULL);
    if (rc) break;
    assert_int_equal(off, head + 1);
    head = off;
  }
  if (rc != first_rc)
    fail_msg("a single append on the full disk: %s (%s), the batch's: %s", engram_errname(rc),
             engram_errmsg(log), engram_errname(first_rc));
  /* Still full: the same failure again, and nothing was half-written. */
  for (int k = 0; k < 3; k++) {
    assert_int_equal(engram_append(log, "memory", &one, &off, NULL), first_rc);
    for (int j = 0; j < 16; j++) tu_fill_random(buf + j * EV_SIZE, EV_SIZE, head + (uint64_t)j + 1);
    assert_int_equal(engram_append_batch(log, "memory", evs, 16, offs, NULL), first_rc);
  }
  engram_topic_info info;
  assert_int_equal(engram_topic_info_get(log, "memory", &info), 0);
  assert_int_equal(info.head_offset, head);
  assert_int_equal(info.count, head);
  check_all(log, head);

  /* Space returns. */
  assert_int_equal(unlink(filler), 0);
  tu_fill_random(buf, EV_SIZE, head + 1);
  rc = engram_append(log, "memory", &one, &off, NULL);
  if (rc) fail_msg("append after freeing space: %s: %s", engram_errname(rc), engram_errmsg(log));
  assert_int_equal(off, head + 1);
  head++;
  for (int k = 0; k < 16; k++) tu_fill_random(buf + k * EV_SIZE, EV_SIZE, head + (uint64_t)k + 1);
  for (int k = 0; k < 16; k++) evs[k].payload = buf + k * EV_SIZE;
  assert_int_equal(engram_append_batch(log, "memory", evs, 16, offs, NULL), 0);
  assert_int_equal(offs[0], head + 1);
  head += 16;
  check_all_and_reopened(log, logdir, head);
  free(buf);
  free(logdir);
  free(filler);
  if (first_rc != ENGRAM_ENOSPC)
    fail_msg("expected ENGRAM_ENOSPC on a full disk, got %s: '%s'", engram_errname(first_rc),
             first_msg);
  if (!clear_message(first_msg))
    fail_msg("the message does not say the disk is full: '%s'", first_msg);
}

/* A log in dir with the topic "memory" (payloads stored as they are) holding 8 events of
 * EV_SIZE bytes, offsets 1 to 8, closed. */
static void make_log_of_eight(const char *dir) {
  engram *log = tu_open(dir, NULL);
  engram_topic_config cfg = {.compress_threshold = UINT32_MAX};
  tu_topic(log, "memory", &cfg);
  unsigned char *buf = malloc(EV_SIZE);
  for (uint64_t i = 1; i <= 8; i++) {
    tu_fill_random(buf, EV_SIZE, i);
    engram_event ev = {.type = "memory.saved", .payload = buf, .payload_len = EV_SIZE};
    uint64_t off;
    assert_int_equal(engram_append(log, "memory", &ev, &off, NULL), 0);
    assert_int_equal(off, i);
  }
  free(buf);
  engram_close(log);
}

/* data.mdb may have holes: pages LMDB took past the end of the file and freed unwritten,
 * a file extended by an older engram. In sync mode a commit's page writes inside the
 * file are held until its record is written, and a held write that found no space would
 * fail only at the meta page, where LMDB gives up on the handle for good. So holes are
 * allocated at open, and where they cannot be, no write is held: appends into a hole on
 * a full disk fail with ENOSPC like any other, and work again once space returns. */
static void appends_into_a_hole_on_a_full_disk_fail_cleanly(void **state) {
  fx *f = *state;
  need_tmpfs(f);
  char *logdir = tu_join(f->dir, "log");
  make_log_of_eight(logdir);
  unsigned char *buf = malloc(EV_SIZE);
  engram_event one = {.type = "memory.saved", .payload = buf, .payload_len = EV_SIZE};
  uint64_t head = 8, off;
  /* A hole past LMDB's last page: its next new pages go there. */
  char *data = tu_join(logdir, "data.mdb");
  struct stat st;
  assert_int_equal(stat(data, &st), 0);
  assert_int_equal(truncate(data, st.st_size + (2 << 20)), 0);
  /* Room for the open (its write-ahead header), not for the hole. */
  char *filler = tu_join(f->dir, "filler"), *slack = tu_join(f->dir, "slack");
  assert_int_equal(fill_file(slack, 64 << 10), 64 << 10);
  fill_file(filler, 0);
  assert_int_equal(unlink(slack), 0);
  engram *log = tu_open(logdir, NULL);
  int rc = 0;
  for (int k = 0; k < 1000 && !rc; k++) {
    tu_fill_random(buf, EV_SIZE, head + 1);
    rc = engram_append(log, "memory", &one, &off, NULL);
    if (!rc) head = off;
  }
  if (rc != ENGRAM_ENOSPC)
    fail_msg("expected ENGRAM_ENOSPC on the full disk, got %s: %s", engram_errname(rc),
             engram_errmsg(log));
  assert_int_equal(unlink(filler), 0);
  tu_fill_random(buf, EV_SIZE, head + 1);
  rc = engram_append(log, "memory", &one, &off, NULL);
  if (rc) fail_msg("append after freeing space: %s: %s", engram_errname(rc), engram_errmsg(log));
  assert_int_equal(off, head + 1);
  check_all_and_reopened(log, logdir, off);
  free(buf);
  free(data);
  free(slack);
  free(filler);
  free(logdir);
}

/* Exit status: minus engram_open's code (0 on success). */
static int open_in_child(void *arg) {
  engram *log = NULL;
  int rc = engram_open(arg, NULL, &log);
  if (rc == 0 && log == NULL) return 99;
  if (rc != 0 && log != NULL) return 98;
  if (rc) fprintf(stderr, "engram_open: %s: %s\n", engram_errname(rc), engram_errmsg(NULL));
  engram_close(log);
  return -rc;
}

static void creating_a_log_on_a_full_disk_fails_with_enospc_and_leaves_nothing_behind(
    void **state) {
  fx *f = *state;
  need_tmpfs(f);
  char *filler = tu_join(f->dir, "filler");
  fill_file(filler, 0);
  char *logdir = tu_join(f->dir, "log");
  /* In a child: a crash (e.g. SIGBUS from touching a mapped file on a full tmpfs) must
   * show as this test's failure, not end the test program. */
  int st = tu_fork_child(open_in_child, logdir, 60000);
  if (st >= 128) fail_msg("engram_open on a full disk killed the process with signal %d", st - 128);
  if (st != -ENGRAM_ENOSPC)
    fail_msg("expected ENGRAM_ENOSPC from engram_open on a full disk, got %s",
             st > 0    ? engram_errname(-st)
             : st == 0 ? "success"
                       : "a timeout");
  /* No log, and no half-made one beside it: only the filler remains. */
  DIR *d = opendir(f->dir);
  assert_non_null(d);
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || !strcmp(de->d_name, "filler"))
      continue;
    fail_msg("left behind on the full disk: %s", de->d_name);
  }
  closedir(d);
  assert_int_equal(unlink(filler), 0);
  engram *log = tu_open(logdir, NULL);
  tu_topic(log, "memory", NULL);
  engram_close(log);
  free(logdir);
  free(filler);
}

/* Opens dir in a child: it must give a handle or ENGRAM_ENOSPC, never a signal. */
static void open_on_full_disk(const char *dir, const char *when) {
  int st = tu_fork_child(open_in_child, (void *)dir, 60000);
  if (st >= 128)
    fail_msg("engram_open of a log on a full disk (%s) killed the process with signal %d", when,
             st - 128);
  if (st != 0 && st != -ENGRAM_ENOSPC)
    fail_msg("expected success or ENGRAM_ENOSPC from engram_open on a full disk (%s), got %s", when,
             st > 0 ? engram_errname(-st) : "a timeout");
}

/* A log closed cleanly, then the disk fills: opening it again (a service restarted) must
 * give a handle or ENGRAM_ENOSPC, never a signal, also when the files every process maps
 * (notify.board, commit.shm, wal.shm, LMDB's lock.mdb) are to be made again: a page of a
 * mapped file that the file system cannot back is a SIGBUS at the first store into it.
 * Once space returns the log opens with every event. */
static void opening_an_existing_log_on_a_full_disk_never_kills_the_process(void **state) {
  fx *f = *state;
  need_tmpfs(f);
  char *logdir = tu_join(f->dir, "log");
  make_log_of_eight(logdir);
  char *filler = tu_join(f->dir, "filler");
  fill_file(filler, 0);
  open_on_full_disk(logdir, "as closed");
  /* The shared files gone, as a copy of the directory or a tmp cleaner leaves it: the open
   * makes them again. */
  const char *shared[] = {"notify.board", "commit.shm", "wal.shm", "lock.mdb"};
  for (size_t i = 0; i < sizeof shared / sizeof *shared; i++) {
    char *p = tu_join(logdir, shared[i]);
    unlink(p);
    free(p);
  }
  fill_file(filler, 0); /* what their removal gave back */
  open_on_full_disk(logdir, "its shared files removed");
  /* Space back: the log opens and holds its eight events. */
  assert_int_equal(unlink(filler), 0);
  engram *log = tu_open(logdir, NULL);
  check_all(log, 8);
  engram_close(log);
  free(filler);
  free(logdir);
}

/* A daemon whose disk fills: its clients get ENGRAM_ENOSPC, and its log says so (one
 * line a second at most); it said nothing, and an operator saw only clients failing. */
static void a_daemon_on_a_full_disk_says_so_in_its_log(void **state) {
  fx *f = *state;
  need_tmpfs(f);
  td d;
  td_init(&d, "diskfull-serve"); /* its socket and log outside the full file system */
  free(d.logdir);
  d.logdir = tu_join(f->dir, "log");
  td_start(&d);
  engram *r = td_connect_within(d.ep, 10000, NULL);
  assert_non_null(r);
  engram_topic_config cfg = {.compress_threshold = UINT32_MAX};
  assert_int_equal(engram_topic_create(r, "blobs", &cfg), 0);
  static unsigned char buf[EV_SIZE];
  int rc = 0;
  for (int i = 0; i < 10000 && rc == 0; i++) {
    tu_fill_random(buf, sizeof buf, (uint64_t)i + 1);
    engram_event e = {.type = "blob.put", .payload = buf, .payload_len = sizeof buf};
    rc = engram_append(r, "blobs", &e, NULL, NULL);
  }
  assert_int_equal(rc, ENGRAM_ENOSPC);
  int said = 0;
  for (int64_t until = tu_mono_ms() + 5000; !said && tu_mono_ms() < until; tu_sleep_ms(20))
    said = td_log_has(&d, "error storage: op append: ENGRAM_ENOSPC");
  if (!said) td_dump_log(&d);
  assert_true(said);
  engram_close(r);
  assert_int_equal(td_stop(&d), 0);
  td_done(&d);
}

int main(void) {
  tu_test_filter();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(appends_on_a_full_disk_fail_cleanly_and_work_again_once_space_returns),
      T(creating_a_log_on_a_full_disk_fails_with_enospc_and_leaves_nothing_behind),
      T(appends_into_a_hole_on_a_full_disk_fail_cleanly),
      T(opening_an_existing_log_on_a_full_disk_never_kills_the_process),
      T(a_daemon_on_a_full_disk_says_so_in_its_log),
  };
  return cmocka_run_group_tests_name("diskfull", tests, NULL, NULL);
}
