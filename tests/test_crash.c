/* test_crash.c — kill -9 of a writer at random moments loses no acknowledged event, leaves
 * no gap and no damage, also when other writer processes go on meanwhile; batches stay
 * all-or-nothing; creating a log is crash-safe. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"

#define ROUNDS 6

typedef struct fx {
  char *dir;
  char *logdir;
  uint64_t rng;
} fx;

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  tu_fx_dirs("crash", &f->dir, &f->logdir);
  const char *seed = getenv("ENGRAM_TEST_SEED");
  f->rng = seed ? strtoull(seed, NULL, 0) : (uint64_t)tu_now_ns() ^ ((uint64_t)getpid() << 32);
  if (!f->rng) f->rng = 1;
  print_message("seed 0x%llx (set ENGRAM_TEST_SEED to repeat)\n", (unsigned long long)f->rng);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  tu_fx_dirs_done(NULL, f->dir, f->logdir);
  free(f);
  return 0;
}

static int rand_between(fx *f, int lo, int hi) {
  return lo + (int)(tu_rand(&f->rng) % (uint64_t)(hi - lo + 1));
}

/* The event a writer appends as its seq-th: deterministic, so the parent can check any
 * offset's content without having been told about it. Offsets are seq + 1. */
typedef struct expected {
  char type[24];
  char key[48];
  unsigned char payload[1024];
  size_t len;
} expected;

static void expected_event(uint64_t seq, expected *e) {
  snprintf(e->type, sizeof e->type, "%s", seq % 3 ? "memory.saved" : "memory.updated");
  snprintf(e->key, sizeof e->key, "conv-%02d:D%llu:%llu", (int)(seq % 50),
           (unsigned long long)(seq / 50), (unsigned long long)(seq % 50));
  e->len = 64 + (size_t)(seq * 37 % 700);
  /* Half text (compressible, so some records take the zstd path), half noise. */
  int n =
      snprintf((char *)e->payload, e->len, "{\"seq\":%llu,\"text\":\"", (unsigned long long)seq);
  for (size_t i = (size_t)n; i < e->len / 2; i++)
    e->payload[i] = "I remember the tournament "[i % 26];
  tu_fill_random(e->payload + e->len / 2, e->len - e->len / 2, seq + 1);
}

static engram_event as_event(const expected *x) {
  return (engram_event){
      .type = x->type, .key = x->key, .payload = x->payload, .payload_len = x->len};
}

/* ---------------------------------------------------------------------------------
 * The child: appends from the log's head on, forever, and tells the parent about each
 * acknowledged offset by writing (seq, offset) to a pipe.
 * ------------------------------------------------------------------------------ */
struct writer {
  const char *logdir;
  int fd;    /* pipe write end */
  int batch; /* events per call */
  engram_durability mode;
};

static int writer_main(void *arg) {
  struct writer *w = arg;
  engram *log = NULL;
  engram_options o = {.durability = w->mode, .flush_interval_ms = 20};
  int rc = engram_open(w->logdir, &o, &log);
  if (rc == 0) {
    rc = engram_topic_create(log, "memory", NULL);
    if (rc == ENGRAM_EEXIST) rc = 0;
  }
  engram_topic_info info;
  if (rc == 0) rc = engram_topic_info_get(log, "memory", &info);
  if (rc) {
    fprintf(stderr, "writer: %s: %s\n", engram_errname(rc), log ? engram_errmsg(log) : "");
    return 1;
  }
  /* Ready: the parent's clock for the kill starts now, so the kill lands among appends. */
  uint64_t ready[2] = {UINT64_MAX, 0};
  if (write(w->fd, ready, sizeof ready) != (ssize_t)sizeof ready) return 3;
  uint64_t seq = info.head_offset;
  expected *x = malloc(64 * sizeof *x);
  engram_event evs[64];
  uint64_t offs[64];
  for (;;) {
    for (int k = 0; k < w->batch; k++) {
      expected_event(seq + (uint64_t)k, &x[k]);
      evs[k] = as_event(&x[k]);
    }
    rc = w->batch == 1 ? engram_append(log, "memory", evs, offs, NULL)
                       : engram_append_batch(log, "memory", evs, (size_t)w->batch, offs, NULL);
    if (rc) {
      fprintf(stderr, "writer: append: %s: %s\n", engram_errname(rc), engram_errmsg(log));
      return 2;
    }
    for (int k = 0; k < w->batch; k++) {
      uint64_t rec[2] = {seq + (uint64_t)k, offs[k]};
      if (write(w->fd, rec, sizeof rec) != (ssize_t)sizeof rec) return 3;
    }
    seq += (uint64_t)w->batch;
  }
}

/* Runs a writer, kills it with SIGKILL after `ms`, and collects what it reported. */
static uint64_t *run_and_kill(const char *logdir, int batch, engram_durability mode, int ms,
                              size_t *n_out) {
  int p[2];
  assert_int_equal(pipe(p), 0);
  struct writer w = {.logdir = logdir, .fd = p[1], .batch = batch, .mode = mode};
  pid_t pid = tu_spawn(writer_main, &w);
  close(p[1]);
  size_t cap = 4096, n = 0;
  uint64_t *recs = malloc(cap * sizeof *recs);
  /* Until the writer says it is ready, allow it 30 s to open the log. */
  int64_t kill_at = tu_mono_ms() + 30000;
  int ready = 0;
  int killed = 0;
  for (;;) {
    int64_t left = kill_at - tu_mono_ms();
    if (!killed && left <= 0) {
      kill(pid, SIGKILL);
      killed = 1;
    }
    struct pollfd pf = {.fd = p[0], .events = POLLIN};
    int r = poll(&pf, 1, killed ? 1000 : (int)(left > 0 ? left : 0));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (killed) break; /* nothing more after the kill */
      continue;
    }
    if (n + 2 > cap) {
      cap *= 2;
      recs = realloc(recs, cap * sizeof *recs);
    }
    ssize_t got = read(p[0], recs + n, 2 * sizeof *recs);
    if (got == 0) break; /* EOF: the child is gone */
    if (got < 0) {
      if (errno == EINTR) continue;
      break;
    }
    assert_int_equal(got, 2 * sizeof *recs);
    if (!ready && recs[n] == UINT64_MAX) {
      ready = 1;
      kill_at = tu_mono_ms() + ms;
      continue;
    }
    n += 2;
  }
  close(p[0]);
  int st = tu_wait(pid, 10000);
  /* Killed by us (128 + 9); any other end means the writer itself failed. */
  if (st != 128 + SIGKILL) fprintf(stderr, "writer ended with status %d before the kill\n", st);
  assert_int_equal(st, 128 + SIGKILL);
  *n_out = n / 2;
  return recs;
}

/* Every offset 1..head holds exactly the event the writer made for it, every reported
 * offset is there, and verify finds no damage. Returns the head. */
static uint64_t check_log(const char *logdir, const uint64_t *recs, size_t n) {
  engram *log = tu_open(logdir, NULL);
  engram_topic_info info;
  int rc = engram_topic_info_get(log, "memory", &info);
  if (rc == ENGRAM_ENOTFOUND && n == 0) { /* killed before the topic was made */
    engram_close(log);
    return 0;
  }
  assert_int_equal(rc, 0);
  uint64_t head = info.head_offset;
  assert_int_equal(info.count, head);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(recs[2 * i + 1], recs[2 * i] + 1);
    if (recs[2 * i + 1] > head)
      fail_msg("reported offset %llu is beyond the head %llu after the crash",
               (unsigned long long)recs[2 * i + 1], (unsigned long long)head);
  }
  expected *x = malloc(sizeof *x);
  uint64_t next = 1;
  for (;;) {
    engram_batch *b = NULL;
    rc = engram_read_range(log, "memory", next, 200, &b);
    if (rc)
      fail_msg("read_range %llu: %s: %s", (unsigned long long)next, engram_errname(rc),
               engram_errmsg(log));
    size_t got = b->count;
    for (size_t k = 0; k < got; k++) {
      const engram_event *e = &b->events[k];
      if (e->offset != next)
        fail_msg("gap: offset %llu where %llu was due", (unsigned long long)e->offset,
                 (unsigned long long)next);
      expected_event(next - 1, x);
      assert_string_equal(e->type, x->type);
      assert_string_equal(e->key, x->key);
      assert_int_equal(e->payload_len, x->len);
      assert_memory_equal(e->payload, x->payload, x->len);
      next++;
    }
    engram_batch_free(b);
    if (got == 0) break;
  }
  assert_int_equal(next, head + 1);
  engram_verify_report rep;
  assert_int_equal(engram_verify(log, &rep), 0);
  if (rep.damaged)
    fail_msg("verify: %llu damaged: %s", (unsigned long long)rep.damaged, rep.first_damage);
  assert_int_equal(rep.records, head);
  free(x);
  engram_close(log);
  return head;
}

static void a_writer_killed_at_random_moments_loses_no_acknowledged_event(void **state) {
  fx *f = *state;
  uint64_t prev_head = 0;
  for (int round = 0; round < ROUNDS; round++) {
    int ms = rand_between(f, 50, 400);
    size_t n;
    uint64_t *recs = run_and_kill(f->logdir, 1, ENGRAM_DURABILITY_SYNC, ms, &n);
    uint64_t head = check_log(f->logdir, recs, n);
    print_message("round %d: killed after %d ms, %zu acknowledged, head %llu\n", round, ms, n,
                  (unsigned long long)head);
    /* The log only grows: nothing from earlier rounds went missing. */
    assert_true(head >= prev_head);
    if (n) assert_true(recs[2 * (n - 1) + 1] <= head);
    prev_head = head;
    free(recs);
  }
  assert_true(prev_head > 0);
}

static void a_writer_killed_during_batch_appends_leaves_whole_batches_only(void **state) {
  fx *f = *state;
  uint64_t prev_head = 0;
  for (int round = 0; round < ROUNDS; round++) {
    int ms = rand_between(f, 50, 400);
    size_t n;
    uint64_t *recs = run_and_kill(f->logdir, 50, ENGRAM_DURABILITY_SYNC, ms, &n);
    uint64_t head = check_log(f->logdir, recs, n);
    print_message("round %d: killed after %d ms, %zu acknowledged, head %llu\n", round, ms, n,
                  (unsigned long long)head);
    if (head % 50) fail_msg("head %llu is inside a batch of 50", (unsigned long long)head);
    assert_true(head >= prev_head);
    prev_head = head;
    free(recs);
  }
  assert_true(prev_head > 0);
}

/* engram.h: in the weaker modes a power cut may lose commits, but kill -9 loses nothing. */
static void writers_in_the_weaker_modes_killed_at_random_lose_nothing_either(void **state) {
  fx *f = *state;
  const engram_durability modes[] = {ENGRAM_DURABILITY_NOMETASYNC, ENGRAM_DURABILITY_ASYNC};
  const char *names[] = {"nometasync", "async"};
  for (int m = 0; m < 2; m++) {
    char *dir = tu_join(f->dir, names[m]);
    uint64_t prev_head = 0;
    for (int round = 0; round < 3; round++) {
      int ms = rand_between(f, 50, 300);
      size_t n;
      uint64_t *recs = run_and_kill(dir, round == 1 ? 20 : 1, modes[m], ms, &n);
      uint64_t head = check_log(dir, recs, n);
      print_message("%s round %d: killed after %d ms, %zu acknowledged, head %llu\n", names[m],
                    round, ms, n, (unsigned long long)head);
      assert_true(head >= prev_head);
      prev_head = head;
      free(recs);
    }
    assert_true(prev_head > 0);
    free(dir);
  }
}

/* ---------------------------------------------------------------------------------
 * Several writer processes: one killed again and again while the others go on.
 * ------------------------------------------------------------------------------ */
#define MP_SURVIVORS 3
#define MP_ROUNDS 6
#define MP_WRITERS (MP_SURVIVORS + MP_ROUNDS)

/* Writer id's n-th event: key "w<id>-<n>", a payload that names both. */
static size_t mp_event(int id, uint64_t n, char *key, size_t kcap, unsigned char *payload) {
  snprintf(key, kcap, "w%d-%llu", id, (unsigned long long)n);
  size_t len = 40 + (size_t)(n * 29 % 500);
  int k =
      snprintf((char *)payload, len, "{\"w\":%d,\"n\":%llu,\"t\":\"", id, (unsigned long long)n);
  tu_fill_random(payload + k, len - (size_t)k, ((uint64_t)id << 32) + n + 1);
  return len;
}

struct mp_writer {
  const char *logdir;
  int id;
  int ack_fd;       /* writes each acknowledged n */
  const char *stop; /* stops once this file exists (a pipe's end would be inherited by
                       every writer forked after it) */
};

static int mp_writer_main(void *arg) {
  struct mp_writer *w = arg;
  engram *log = NULL;
  int rc = engram_open(w->logdir, NULL, &log); /* sync: every ack is durable */
  if (rc == 0) {
    rc = engram_topic_create(log, "mp", NULL);
    if (rc == ENGRAM_EEXIST) rc = 0;
  }
  if (rc) {
    fprintf(stderr, "writer %d: %s: %s\n", w->id, engram_errname(rc),
            log ? engram_errmsg(log) : "");
    return 1;
  }
  char key[48];
  unsigned char payload[600];
  for (uint64_t n = 0;; n++) {
    if (tu_exists(w->stop)) break;
    size_t len = mp_event(w->id, n, key, sizeof key, payload);
    engram_event ev = {.type = "memory.saved", .key = key, .payload = payload, .payload_len = len};
    uint64_t off;
    if ((rc = engram_append(log, "mp", &ev, &off, NULL))) {
      fprintf(stderr, "writer %d: append %llu: %s: %s\n", w->id, (unsigned long long)n,
              engram_errname(rc), engram_errmsg(log));
      return 2;
    }
    if (write(w->ack_fd, &n, sizeof n) != (ssize_t)sizeof n) return 3;
  }
  engram_close(log);
  return 0;
}

struct mp_proc {
  pid_t pid;
  int ack_fd;     /* the parent's end */
  uint64_t acked; /* acknowledged: n = 0 .. acked - 1 */
  int eof;
};

static void mp_start(const char *logdir, const char *stop, int id, struct mp_proc *p) {
  int a[2];
  assert_int_equal(pipe(a), 0);
  struct mp_writer w = {.logdir = logdir, .id = id, .ack_fd = a[1], .stop = stop};
  p->pid = tu_spawn(mp_writer_main, &w);
  close(a[1]);
  p->ack_fd = a[0];
  p->acked = 0;
  p->eof = 0;
}

/* Reads the acks of every process until `until_ms` (or, with until_ms < 0, until each
 * has closed its pipe). */
static void mp_collect(struct mp_proc *ps, int n, int64_t until_ms) {
  for (;;) {
    struct pollfd pf[MP_WRITERS];
    int live = 0;
    for (int i = 0; i < n; i++) {
      pf[i] = (struct pollfd){.fd = ps[i].eof ? -1 : ps[i].ack_fd, .events = POLLIN};
      live += !ps[i].eof;
    }
    int64_t left = until_ms < 0 ? 30000 : until_ms - tu_mono_ms();
    if (!live || left <= 0) return;
    int r = poll(pf, (nfds_t)n, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0 && until_ms < 0) fail_msg("a writer neither acknowledged nor stopped for 30 s");
    for (int i = 0; i < n; i++) {
      if (!(pf[i].revents & (POLLIN | POLLHUP))) continue;
      uint64_t v[64];
      ssize_t got = read(ps[i].ack_fd, v, sizeof v);
      if (got <= 0) {
        if (got < 0 && errno == EINTR) continue;
        ps[i].eof = 1;
        close(ps[i].ack_fd);
        continue;
      }
      for (size_t k = 0; k < (size_t)got / sizeof *v; k++) {
        if (v[k] != ps[i].acked)
          fail_msg("writer %d acknowledged %llu out of order", i, (unsigned long long)v[k]);
        ps[i].acked++;
      }
    }
  }
}

static void one_writer_process_killed_while_others_go_on_loses_no_acknowledged_event(void **state) {
  fx *f = *state;
  struct mp_proc ps[MP_WRITERS];
  char *stop = tu_join(f->dir, "stop");
  for (int i = 0; i < MP_SURVIVORS; i++) mp_start(f->logdir, stop, i, &ps[i]);
  for (int r = 0; r < MP_ROUNDS; r++) {
    int v = MP_SURVIVORS + r;
    mp_start(f->logdir, stop, v, &ps[v]);
    /* Until the victim's first ack, then a random while among the others' appends. */
    int64_t t0 = tu_mono_ms();
    while (ps[v].acked == 0 && !ps[v].eof && tu_mono_ms() - t0 < 30000)
      mp_collect(ps, v + 1, tu_mono_ms() + 5);
    assert_true(ps[v].acked > 0);
    mp_collect(ps, v + 1, tu_mono_ms() + rand_between(f, 20, 250));
    kill(ps[v].pid, SIGKILL);
    assert_int_equal(tu_wait(ps[v].pid, 10000), 128 + SIGKILL);
  }
  FILE *sf = fopen(stop, "w");
  assert_non_null(sf);
  fclose(sf);
  free(stop);
  mp_collect(ps, MP_WRITERS, -1);
  for (int i = 0; i < MP_SURVIVORS; i++) {
    if (tu_wait(ps[i].pid, 30000) != 0) fail_msg("surviving writer %d failed (see stderr)", i);
    assert_true(ps[i].acked > 0);
  }

  /* Every acknowledged event of every writer is there, once, with its content; what a
   * killed writer had not been told may or may not be. */
  engram *log = tu_open(f->logdir, NULL);
  engram_topic_info info;
  assert_int_equal(engram_topic_info_get(log, "mp", &info), 0);
  assert_int_equal(info.count, info.head_offset);
  uint64_t *seen[MP_WRITERS];
  size_t cap[MP_WRITERS];
  for (int i = 0; i < MP_WRITERS; i++) {
    cap[i] = ps[i].acked + 4096;
    seen[i] = calloc(cap[i], sizeof **seen);
  }
  uint64_t next = 1;
  char key[48];
  unsigned char payload[600];
  for (;;) {
    engram_batch *b = NULL;
    assert_int_equal(engram_read_range(log, "mp", next, 500, &b), 0);
    size_t got = b->count;
    for (size_t k = 0; k < got; k++) {
      const engram_event *e = &b->events[k];
      assert_int_equal(e->offset, next);
      int id;
      unsigned long long n;
      if (sscanf(e->key, "w%d-%llu", &id, &n) != 2 || id < 0 || id >= MP_WRITERS)
        fail_msg("offset %llu: key %s is nobody's", (unsigned long long)e->offset, e->key);
      size_t len = mp_event(id, n, key, sizeof key, payload);
      assert_int_equal(e->payload_len, len);
      assert_memory_equal(e->payload, payload, len);
      if (n < cap[id]) {
        if (seen[id][n]) fail_msg("writer %d's event %llu is there twice", id, n);
        seen[id][n] = e->offset;
      }
      next++;
    }
    engram_batch_free(b);
    if (got == 0) break;
  }
  assert_int_equal(next, info.head_offset + 1);
  uint64_t acked = 0;
  for (int i = 0; i < MP_WRITERS; i++) {
    for (uint64_t n = 0; n < ps[i].acked; n++)
      if (!seen[i][n])
        fail_msg("writer %d's acknowledged event %llu is missing (%s)", i, (unsigned long long)n,
                 i < MP_SURVIVORS ? "a survivor" : "killed");
    acked += ps[i].acked;
    free(seen[i]);
  }
  engram_verify_report rep;
  assert_int_equal(engram_verify(log, &rep), 0);
  if (rep.damaged)
    fail_msg("verify: %llu damaged: %s", (unsigned long long)rep.damaged, rep.first_damage);
  print_message("%d writers (%d killed), %llu acknowledged, head %llu\n", MP_WRITERS, MP_ROUNDS,
                (unsigned long long)acked, (unsigned long long)info.head_offset);
  engram_close(log);
}

/* ---------------------------------------------------------------------------------
 * Creation.
 * ------------------------------------------------------------------------------ */
struct creator {
  const char *base;
};

/* Creates base/log-0, base/log-1, ... one after another until killed. */
static int creator_main(void *arg) {
  struct creator *c = arg;
  for (int i = 0;; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/log-%d", c->base, i);
    engram *log = NULL;
    int rc = engram_open(path, NULL, &log);
    if (rc) {
      fprintf(stderr, "creator: open %s: %s\n", path, engram_errname(rc));
      return 1;
    }
    engram_close(log);
  }
}

static void a_log_killed_while_being_created_opens_fine(void **state) {
  fx *f = *state;
  int checked = 0;
  for (int round = 0; round < 8; round++) {
    char name[32];
    snprintf(name, sizeof name, "create-%d", round);
    char *base = tu_join(f->dir, name);
    assert_int_equal(mkdir(base, 0755), 0);
    struct creator c = {.base = base};
    pid_t pid = tu_spawn(creator_main, &c);
    tu_sleep_ms(rand_between(f, 5, 80));
    kill(pid, SIGKILL);
    assert_int_equal(tu_wait(pid, 10000), 128 + SIGKILL);
    /* Every log the child made or was making opens, takes an append and verifies. The
     * first missing index is the one it had not started; the one before it may have been
     * cut anywhere. */
    int i = 0;
    for (;; i++) {
      char path[4200];
      snprintf(path, sizeof path, "%s/log-%d", base, i);
      char next[4200];
      snprintf(next, sizeof next, "%s/log-%d", base, i + 1);
      int last = !tu_exists(next);
      engram *log = NULL;
      int rc = engram_open(path, NULL, &log);
      if (rc)
        fail_msg("round %d: open %s after a kill during creation: %s: %s", round, path,
                 engram_errname(rc), engram_errmsg(NULL));
      rc = engram_topic_create(log, "memory", NULL);
      assert_int_equal(rc, 0);
      engram_event ev = {.type = "memory.saved", .payload = "x", .payload_len = 1};
      uint64_t off;
      assert_int_equal(engram_append(log, "memory", &ev, &off, NULL), 0);
      assert_int_equal(off, 1);
      engram_verify_report rep;
      assert_int_equal(engram_verify(log, &rep), 0);
      assert_int_equal(rep.damaged, 0);
      engram_close(log);
      checked++;
      if (last) break;
    }
    print_message("round %d: %d logs created before the kill\n", round, i);
    free(base);
  }
  assert_true(checked >= 8);
}

int main(void) {
  tu_test_filter();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(a_writer_killed_at_random_moments_loses_no_acknowledged_event),
      T(a_writer_killed_during_batch_appends_leaves_whole_batches_only),
      T(writers_in_the_weaker_modes_killed_at_random_lose_nothing_either),
      T(one_writer_process_killed_while_others_go_on_loses_no_acknowledged_event),
      T(a_log_killed_while_being_created_opens_fine),
  };
  return cmocka_run_group_tests_name("crash", tests, NULL, NULL);
}
