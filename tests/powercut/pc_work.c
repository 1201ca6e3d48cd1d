/* pc_work.c — the power-cut test's workload and checker. `run` drives a real engram
 * workload and reports each acknowledged operation through the shim's pc_ack() (run
 * under tests/powercut/shim.so); `check` opens crash images and checks that everything
 * acknowledged before the cut is there and that the log verifies clean.
 *
 *   pc_work run SCENARIO ROOT [sync|nometasync|async]   the log is ROOT/log
 *   pc_work check ROOT ACKS [ROOT ACKS ...]             one result line per image
 *   pc_work proc ROLE ID ROOT MODE EACH TARGET READY_FD GO_FD
 *                                   a process of the "procs" scenarios (started by run)
 *
 * Scenarios: create, single, threads, threads8, pipeline, batch, groups, ackfetch, mixed,
 * train, reclaim, park, freed, served, served_many, procs, procs_group (see cmd_run).
 * Acknowledgement lines: "open", "topic T", "append T OFFSET SEQ", "group T G", "ack T G
 * OFFSET", and "mark TEXT" (no state: replay.py cuts at every point between two marks). A
 * line of a process the workload started begins with its name ("w2 append t 17 2005":
 * writer 2; "c1 ack t g 9": the consumer). An append's content is a function of SEQ, so
 * the checker compares the stored event byte for byte. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "engram.h"
#include "log/log.h"

static void (*ack_fn)(const char *);
static char who[16]; /* "w2 ": the name of a process the workload started, or "" */

static void ack(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void ack(const char *fmt, ...) {
  char line[256];
  size_t n = strlen(who);
  memcpy(line, who, n);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + n, sizeof line - n, fmt, ap);
  va_end(ap);
  if (ack_fn) ack_fn(line);
}

/* ---- the events ---- */
typedef struct expected {
  char type[24];
  char key[32];
  unsigned char payload[5000];
  size_t len;
} expected;

static void expected_event(uint64_t seq, expected *e) {
  snprintf(e->type, sizeof e->type, "%s", seq % 3 ? "memory.saved" : "memory.updated");
  snprintf(e->key, sizeof e->key, "conv-%llu", (unsigned long long)(seq % 17));
  /* Mostly small records; every seventh spans pages (LMDB overflow pages). */
  e->len = seq % 7 == 3 ? 4500 : 60 + (size_t)(seq * 37 % 600);
  uint64_t x = seq * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < e->len; i++) {
    if (i < e->len / 2) {
      e->payload[i] = (unsigned char)"I remember the tournament "[i % 26];
    } else {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      e->payload[i] = (unsigned char)x;
    }
  }
}

static engram_event as_event(const expected *x) {
  return (engram_event){
      .type = x->type, .key = x->key, .payload = x->payload, .payload_len = x->len};
}

/* ---- workloads ---- */
static const char *TOPIC = "t";

static int die(engram *log, const char *what, int rc) {
  fprintf(stderr, "pc_work: %s: %s (%s)\n", what, engram_errname(rc), engram_errmsg(log));
  exit(3);
}

static void append_one(engram *log, uint64_t seq) {
  expected x;
  expected_event(seq, &x);
  engram_event ev = as_event(&x);
  uint64_t off;
  int rc = engram_append(log, TOPIC, &ev, &off, NULL);
  if (rc) die(log, "append", rc);
  ack("append %s %llu %llu", TOPIC, (unsigned long long)off, (unsigned long long)seq);
}

struct thr {
  engram *log;
  int id, n;
};

static void *appender(void *arg) {
  struct thr *t = arg;
  for (int i = 0; i < t->n; i++) append_one(t->log, (uint64_t)t->id * 1000 + (uint64_t)i);
  return NULL;
}

static void run_threads(engram *log, int nthreads, int each) {
  pthread_t th[16];
  struct thr a[16];
  for (int i = 0; i < nthreads; i++) {
    a[i] = (struct thr){log, i + 1, each};
    pthread_create(&th[i], NULL, appender, &a[i]);
  }
  for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
}

struct pctx {
  uint64_t seq;
};

static void piped(void *ctx, int rc, uint64_t off, int dup) {
  struct pctx *p = ctx;
  (void)dup;
  if (rc) {
    fprintf(stderr, "pc_work: pipelined append: %s\n", engram_errname(rc));
    exit(3);
  }
  ack("append %s %llu %llu", TOPIC, (unsigned long long)off, (unsigned long long)p->seq);
}

static void run_pipeline(engram *log, int n) {
  static struct pctx ctx[4096];
  static expected x;
  for (int i = 0; i < n; i++) {
    ctx[i].seq = (uint64_t)i;
    expected_event((uint64_t)i, &x);
    engram_event ev = as_event(&x);
    int rc = engram_append_async(log, TOPIC, &ev, piped, &ctx[i]);
    if (rc) die(log, "append_async", rc);
  }
  int rc = engram_append_wait(log);
  if (rc) die(log, "append_wait", rc);
}

static void run_batches(engram *log, int nb, int each) {
  static expected xs[64];
  engram_event evs[64];
  uint64_t offs[64];
  for (int b = 0; b < nb; b++) {
    for (int i = 0; i < each; i++) {
      expected_event((uint64_t)(b * each + i), &xs[i]);
      evs[i] = as_event(&xs[i]);
    }
    int rc = engram_append_batch(log, TOPIC, evs, (size_t)each, offs, NULL);
    if (rc) die(log, "append_batch", rc);
    for (int i = 0; i < each; i++)
      ack("append %s %llu %llu", TOPIC, (unsigned long long)offs[i],
          (unsigned long long)(b * each + i));
  }
}

static void run_groups(engram *log, int n) {
  for (int i = 0; i < n; i++) append_one(log, (uint64_t)i);
  int rc = engram_group_create(log, TOPIC, "g", NULL);
  if (rc) die(log, "group_create", rc);
  ack("group %s g", TOPIC);
  for (;;) {
    engram_batch *b;
    rc = engram_fetch(log, TOPIC, "g", "c1", 4, 0, &b);
    if (rc) die(log, "fetch", rc);
    size_t cnt = b->count;
    if (cnt >= 2) {
      /* One by one, then the rest in one call. */
      engram_event *e = &b->events[0];
      rc = engram_ack(log, TOPIC, "g", e->offset, e->attempt, "r", 1);
      if (rc) die(log, "ack", rc);
      ack("ack %s g %llu", TOPIC, (unsigned long long)e->offset);
      engram_ack_item items[4];
      for (size_t i = 1; i < cnt; i++)
        items[i - 1] = (engram_ack_item){b->events[i].offset, b->events[i].attempt, NULL, 0};
      rc = engram_ack_many(log, TOPIC, "g", items, cnt - 1, NULL);
      if (rc) die(log, "ack_many", rc);
      for (size_t i = 1; i < cnt; i++)
        ack("ack %s g %llu", TOPIC, (unsigned long long)b->events[i].offset);
    } else {
      for (size_t i = 0; i < cnt; i++) {
        rc = engram_ack(log, TOPIC, "g", b->events[i].offset, b->events[i].attempt, NULL, 0);
        if (rc) die(log, "ack", rc);
        ack("ack %s g %llu", TOPIC, (unsigned long long)b->events[i].offset);
      }
    }
    engram_batch_free(b);
    if (cnt == 0) break;
  }
}

/* A drain with engram_ack_fetch: each call acks the batch before and leases the next in
 * one commit; its acks are acknowledged when it returns. */
static void run_ackfetch(engram *log, int n) {
  for (int i = 0; i < n; i++) append_one(log, (uint64_t)i);
  int rc = engram_group_create(log, TOPIC, "g", NULL);
  if (rc) die(log, "group_create", rc);
  ack("group %s g", TOPIC);
  engram_ack_item items[3];
  size_t n_items = 0;
  for (;;) {
    engram_batch *b = NULL;
    int codes[3];
    rc = engram_ack_fetch(log, TOPIC, "g", "c1", items, n_items, codes, 3, 0, &b);
    if (rc) die(log, "ack_fetch", rc);
    for (size_t i = 0; i < n_items; i++)
      ack("ack %s g %llu", TOPIC, (unsigned long long)items[i].offset);
    n_items = b->count;
    for (size_t i = 0; i < b->count; i++)
      items[i] = (engram_ack_item){b->events[i].offset, b->events[i].attempt, NULL, 0};
    engram_batch_free(b);
    if (n_items == 0) break;
  }
}

/* Appends from three threads while a consumer fetches and acks them. */
struct consumer {
  engram *log;
  int target;
};

static void *consume(void *arg) {
  struct consumer *c = arg;
  int done = 0;
  for (int idle = 0; done < c->target && idle < 2000;) {
    engram_batch *b;
    int rc = engram_fetch(c->log, TOPIC, "g", "c1", 5, 10, &b);
    if (rc) die(c->log, "fetch", rc);
    idle = b->count ? 0 : idle + 1;
    for (size_t i = 0; i < b->count; i++) {
      rc = engram_ack(c->log, TOPIC, "g", b->events[i].offset, b->events[i].attempt, NULL, 0);
      if (rc) die(c->log, "ack", rc);
      ack("ack %s g %llu", TOPIC, (unsigned long long)b->events[i].offset);
      done++;
    }
    engram_batch_free(b);
  }
  return NULL;
}

static void run_mixed(engram *log, int each) {
  int rc = engram_group_create(log, TOPIC, "g", NULL);
  if (rc) die(log, "group_create", rc);
  ack("group %s g", TOPIC);
  struct consumer c = {log, 3 * each};
  pthread_t th;
  pthread_create(&th, NULL, consume, &c);
  run_threads(log, 3, each);
  pthread_join(th, NULL);
}

/* "reclaim": appends and acks, a topic filled and dropped, then engram_reclaim() swaps a
 * compacted copy in (the cut may fall at any of its steps), and appends go on after it
 * into the new file. */
static engram *run_reclaim(engram *log, const char *path, const engram_options *o, int scale) {
  run_groups(log, 8 * scale);
  engram_topic_config tc = {.flags = ENGRAM_TOPIC_NO_DICT};
  int rc = engram_topic_create(log, "big", &tc);
  if (rc) die(log, "topic_create big", rc);
  static expected x;
  engram_event evs[8];
  uint64_t offs[8];
  for (int b = 0; b < 5 * scale; b++) {
    expected_event(3, &x); /* spans pages: the dropped topic leaves many free */
    for (int i = 0; i < 8; i++) evs[i] = as_event(&x);
    if ((rc = engram_append_batch(log, "big", evs, 8, offs, NULL))) die(log, "append big", rc);
  }
  if ((rc = engram_topic_drop(log, "big"))) die(log, "topic_drop", rc);
  engram_close(log);
  engram_reclaim_report r;
  ack("mark reclaim");
  if ((rc = engram_reclaim(path, NULL, &r))) die(NULL, "reclaim", rc);
  ack("mark reclaimed");
  if (r.bytes_after >= r.bytes_before) die(NULL, "reclaim gave nothing back", ENGRAM_EINTERNAL);
  if ((rc = engram_open(path, o, &log))) die(NULL, "open after reclaim", rc);
  for (int i = 0; i < 6 * scale; i++) append_one(log, (uint64_t)(1000 + i));
  return log;
}

/* "park": a topic filled and dropped; appends move the write-ahead file's pin past the
 * drop; its free pages are parked (log/park.c: commits that write only the first page of
 * each run, the cut may fall anywhere among them); appends go on; every parked page is
 * released and appends reuse them. The checker's verify reads every parked value's mark. */
static void park_all(engram *log) {
  log_park_report r;
  for (int i = 0; i < 64; i++) {
    int rc = log_park_pass(api_log(log), &r, NULL, NULL);
    if (rc) die(log, "park", rc);
    if (!r.parked_now) break;
  }
}

/* "freed": commits that put an overflow value and delete it again take pages past the
 * end of data.mdb and free them unwritten; the file is extended over them (wal.c,
 * cover_pages), and a cut must find it so, or recovery extend it again. */
static int freed_job(log_wtx *w, void *arg) {
  MDB_dbi dbi = *(MDB_dbi *)arg;
  static char big[40 * 4096];
  memset(big, 'y', sizeof big);
  MDB_val k = {5, "small"}, v = {1, "x"}, bk = {3, "big"}, bv = {sizeof big - 100, big};
  int rc = mdb_put(w->txn, dbi, &k, &v, 0);
  if (!rc) rc = mdb_put(w->txn, dbi, &bk, &bv, 0);
  if (!rc) rc = mdb_del(w->txn, dbi, &bk, NULL);
  return rc ? log_err_mdb(rc) : 0;
}

static void run_freed(engram *log, int scale) {
  MDB_dbi dbi;
  int rc = log_aux_dbi(api_log(log), "test.freed", 0, &dbi);
  if (rc) die(log, "aux dbi", rc);
  for (int i = 0; i < 4 * scale; i++) {
    append_one(log, (uint64_t)(2 * i));
    ack("mark freed");
    if ((rc = log_write_solo(api_log(log), freed_job, &dbi))) die(log, "freed job", rc);
    ack("mark freed done");
    append_one(log, (uint64_t)(2 * i + 1));
  }
}

/* "served": a daemon in this process (engram_serve on a thread, sync mode) and two remote
 * handles. A producer appends one event at a time; a consumer thread acks each batch with
 * the fetch of the next (engram_ack_fetch with a wait). An ack-fetch that finds nothing
 * parks with its acks committed but not flushed: it is answered after the flush of the
 * append that wakes it, and the last one after its wait, after a flush made for it. */
struct served {
  char ep[200];
  char dir[4096];
  int n, rc;
  volatile int got;
};

static void *serve_main(void *arg) {
  struct served *sv = arg;
  engram_serve_options so = {.listen = sv->ep, .durability = ENGRAM_DURABILITY_SYNC};
  sv->rc = engram_serve(sv->dir, &so);
  return NULL;
}

static engram *served_connect(struct served *sv) {
  for (int i = 0; i < 500; i++) {
    engram *c;
    if (engram_connect(sv->ep, NULL, &c) == 0) {
      engram_topic_info ti;
      if (engram_topic_info_get(c, TOPIC, &ti) == 0) return c;
      engram_close(c);
    }
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
  }
  die(NULL, "connect to the daemon", ENGRAM_ECONN);
  return NULL;
}

/* Acks everything of `held` it fetched before with the next ack-fetch; records the acks
 * once the call that carried them returned. */
static void served_consume(engram *c, engram_ack_item *held, size_t *n_held, uint64_t wait_ms,
                           size_t *got) {
  engram_batch *b = NULL;
  int rc = engram_ack_fetch(c, TOPIC, "g", "c1", held, *n_held, NULL, 8, wait_ms, &b);
  if (rc) die(c, "ack_fetch", rc);
  for (size_t i = 0; i < *n_held; i++)
    ack("ack %s g %llu", TOPIC, (unsigned long long)held[i].offset);
  *n_held = 0;
  for (size_t i = 0; i < b->count && i < 8; i++)
    held[(*n_held)++] = (engram_ack_item){b->events[i].offset, b->events[i].attempt, NULL, 0};
  *got += b->count;
  engram_batch_free(b);
}

static void *served_consumer(void *arg) {
  struct served *sv = arg;
  engram *c = served_connect(sv);
  engram_ack_item held[8];
  size_t n_held = 0, got = 0;
  while (got < (size_t)sv->n) {
    served_consume(c, held, &n_held, 2000, &got);
    sv->got = (int)got;
  }
  /* The last acks: nothing comes, the wait ends, and the answer follows a flush. */
  served_consume(c, held, &n_held, 50, &got);
  engram_close(c);
  return NULL;
}

/* "served_many": producers on connections of their own appending at once, without
 * pauses, so that the daemon commits the appends of several connections together (the
 * main thread's bursts, the workers' lanes). */
struct served_producer {
  struct served *sv;
  int id, n;
};

static void *served_producer(void *arg) {
  struct served_producer *p = arg;
  engram *c = served_connect(p->sv);
  for (int i = 0; i < p->n; i++) append_one(c, (uint64_t)p->id * 1000 + (uint64_t)i);
  engram_close(c);
  return NULL;
}

static void run_served(const char *root, int scale, int producers) {
  struct served sv = {.n = 8 * scale * producers};
  snprintf(sv.dir, sizeof sv.dir, "%s/log", root);
  /* The socket outside ROOT: it holds no data. */
  snprintf(sv.ep, sizeof sv.ep, "ipc:///tmp/pc-served-%ld.ipc", (long)getpid());
  pthread_t srv, con;
  if (pthread_create(&srv, NULL, serve_main, &sv)) die(NULL, "serve thread", ENGRAM_ENOMEM);
  engram *p = served_connect(&sv);
  int rc = engram_group_create(p, TOPIC, "g", NULL);
  if (rc) die(p, "group_create", rc);
  ack("group %s g", TOPIC);
  if (pthread_create(&con, NULL, served_consumer, &sv)) die(NULL, "consumer", ENGRAM_ENOMEM);
  if (producers == 1) {
    for (int i = 0; i < sv.n; i++) {
      /* The consumer is parked in its ack-fetch when most appends come. */
      struct timespec ts = {0, 3000000};
      nanosleep(&ts, NULL);
      append_one(p, (uint64_t)i);
    }
  } else {
    pthread_t th[8];
    struct served_producer pp[8];
    for (int i = 0; i < producers && i < 8; i++) {
      pp[i] = (struct served_producer){&sv, i + 1, sv.n / producers};
      if (pthread_create(&th[i], NULL, served_producer, &pp[i]))
        die(NULL, "producer", ENGRAM_ENOMEM);
    }
    for (int i = 0; i < producers && i < 8; i++) pthread_join(th[i], NULL);
  }
  pthread_join(con, NULL);
  engram_close(p);
  engram_serve_stop();
  pthread_join(srv, NULL);
  if (sv.rc) die(NULL, "serve", sv.rc);
}

static void run_park(engram *log, int scale) {
  engram_topic_config tc = {.flags = ENGRAM_TOPIC_NO_DICT};
  int rc = engram_topic_create(log, "big", &tc);
  if (rc) die(log, "topic_create big", rc);
  /* Events of 200 KB (incompressible): each one a run of 50 pages, freed by the drop. */
  static unsigned char big[200000];
  uint64_t r = 88172645463325252ull;
  for (size_t i = 0; i < sizeof big; i++) {
    r ^= r << 13, r ^= r >> 7, r ^= r << 17;
    big[i] = (unsigned char)r;
  }
  engram_event ev = {.type = "memory.saved", .payload = big, .payload_len = sizeof big};
  for (int i = 0; i < 6 * scale; i++)
    if ((rc = engram_append(log, "big", &ev, NULL, NULL))) die(log, "append big", rc);
  static expected x;
  for (int i = 0; i < 4; i++) append_one(log, (uint64_t)i);
  if ((rc = engram_topic_drop(log, "big"))) die(log, "topic_drop", rc);
  for (int i = 4; i < 8; i++) append_one(log, (uint64_t)i);
  uint64_t free_pages, parked;
  ack("mark park");
  park_all(log);
  ack("mark parked");
  if ((rc = log_park_count(api_log(log), &free_pages, &parked))) die(log, "park count", rc);
  if (parked < 32) {
    fprintf(stderr, "pc_work: free %llu parked %llu\n", (unsigned long long)free_pages,
            (unsigned long long)parked);
    die(log, "nothing parked", ENGRAM_EINTERNAL);
  }
  for (int i = 8; i < 8 + 6 * scale; i++) append_one(log, (uint64_t)i);
  ack("mark release");
  if ((rc = log_park_release_all(api_log(log)))) die(log, "release", rc);
  ack("mark released");
  for (int b = 0; b < 3 * scale; b++) {
    expected_event(100 + (uint64_t)b, &x);
    uint64_t off;
    ev = as_event(&x);
    if ((rc = engram_append(log, TOPIC, &ev, &off, NULL))) die(log, "append", rc);
    ack("append %s %llu %llu", TOPIC, (unsigned long long)off, (unsigned long long)(100 + b));
  }
}

/* "procs" and "procs_group": several processes (fork + exec of this program, so each is
 * a whole new process with the shim preloaded and its own sanitizer runtime) use the log
 * at once. Each opens the log, says so through READY_FD, and starts only when every one
 * has (GO_FD reaches its end): their appends and acks overlap, their records share the
 * write-ahead file and one process's flush may cover another's commit. */
static const char *mode_name(const engram_options *o) {
  return o->durability == ENGRAM_DURABILITY_NOMETASYNC ? "nometasync"
         : o->durability == ENGRAM_DURABILITY_ASYNC    ? "async"
                                                       : "sync";
}

static pid_t spawn(const char *role, int id, const char *root, const engram_options *o, int each,
                   int target, int ready_fd, int go_fd) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) die(NULL, "readlink /proc/self/exe", ENGRAM_EIO);
  exe[n] = '\0';
  char a_id[16], a_each[16], a_target[16], a_ready[16], a_go[16];
  snprintf(a_id, sizeof a_id, "%d", id);
  snprintf(a_each, sizeof a_each, "%d", each);
  snprintf(a_target, sizeof a_target, "%d", target);
  snprintf(a_ready, sizeof a_ready, "%d", ready_fd);
  snprintf(a_go, sizeof a_go, "%d", go_fd);
  char *args[] = {exe,    "proc",   (char *)role, a_id, (char *)root, (char *)mode_name(o),
                  a_each, a_target, a_ready,      a_go, NULL};
  pid_t pid = fork();
  if (pid < 0) die(NULL, "fork", ENGRAM_EIO);
  if (pid == 0) {
    execv(exe, args);
    _exit(127);
  }
  return pid;
}

/* Starts `writers` writer processes and, when `consumer`, one consumer of group g that
 * acks every event they append; waits for them all. */
static void run_procs(const char *root, const engram_options *o, int writers, int each,
                      int consumer) {
  int ready[2], go[2];
  if (pipe(ready) || pipe(go)) die(NULL, "pipe", ENGRAM_EIO);
  /* The children keep only ready[1] and go[0]. */
  fcntl(ready[0], F_SETFD, FD_CLOEXEC);
  fcntl(go[1], F_SETFD, FD_CLOEXEC);
  pid_t pids[16];
  int n = 0;
  for (int i = 1; i <= writers; i++)
    pids[n++] = spawn("writer", i, root, o, each, 0, ready[1], go[0]);
  if (consumer) pids[n++] = spawn("consumer", 1, root, o, 0, writers * each, ready[1], go[0]);
  close(ready[1]);
  close(go[0]);
  char c;
  for (int got = 0; got < n && read(ready[0], &c, 1) == 1;) got++;
  close(go[1]); /* go: every process has opened the log (or one died: waitpid says) */
  close(ready[0]);
  for (int i = 0; i < n; i++) {
    int st;
    while (waitpid(pids[i], &st, 0) < 0)
      if (errno != EINTR) die(NULL, "waitpid", ENGRAM_EIO);
    if (!WIFEXITED(st) || WEXITSTATUS(st)) {
      fprintf(stderr, "pc_work: process %d of the scenario failed (status 0x%x)\n", i + 1, st);
      exit(3);
    }
  }
}

static int cmd_proc(int argc, char **argv) {
  if (argc < 10) return 2;
  const char *role = argv[2];
  int id = atoi(argv[3]), each = atoi(argv[6]), target = atoi(argv[7]);
  int ready_fd = atoi(argv[8]), go_fd = atoi(argv[9]);
  char path[4096];
  snprintf(path, sizeof path, "%s/log", argv[4]);
  engram_options o = {0};
  if (!strcmp(argv[5], "nometasync")) o.durability = ENGRAM_DURABILITY_NOMETASYNC;
  if (!strcmp(argv[5], "async")) o.durability = ENGRAM_DURABILITY_ASYNC;
  ack_fn = (void (*)(const char *))dlsym(RTLD_DEFAULT, "pc_ack");
  snprintf(who, sizeof who, "%c%d ", !strcmp(role, "writer") ? 'w' : 'c', id);
  engram *log;
  int rc = engram_open(path, &o, &log);
  if (rc) die(NULL, "open", rc);
  char c = 1, d;
  if (write(ready_fd, &c, 1) != 1) die(log, "write to the ready pipe", ENGRAM_EIO);
  close(ready_fd);
  while (read(go_fd, &d, 1) > 0) {
  }
  close(go_fd);
  if (!strcmp(role, "writer")) {
    for (int i = 0; i < each; i++) append_one(log, (uint64_t)id * 1000 + (uint64_t)i);
  } else {
    /* Acks every event the writers append (a bound on idle fetches only so that a
     * writer that died cannot leave it waiting for ever). */
    int done = 0;
    for (int idle = 0; done < target;) {
      engram_batch *b;
      rc = engram_fetch(log, TOPIC, "g", "c1", 5, 10, &b);
      if (rc) die(log, "fetch", rc);
      idle = b->count ? 0 : idle + 1;
      if (idle > 6000) die(log, "the writers' events never came", ENGRAM_ETIMEDOUT);
      for (size_t i = 0; i < b->count; i++) {
        rc = engram_ack(log, TOPIC, "g", b->events[i].offset, b->events[i].attempt, NULL, 0);
        if (rc) die(log, "ack", rc);
        ack("ack %s g %llu", TOPIC, (unsigned long long)b->events[i].offset);
        done++;
      }
      engram_batch_free(b);
    }
  }
  engram_close(log);
  return 0;
}

static int cmd_run(int argc, char **argv) {
  if (argc < 4) return 2;
  const char *scen = argv[2];
  char path[4096];
  snprintf(path, sizeof path, "%s/log", argv[3]);
  engram_options o = {0};
  if (argc > 4 && !strcmp(argv[4], "nometasync")) o.durability = ENGRAM_DURABILITY_NOMETASYNC;
  if (argc > 4 && !strcmp(argv[4], "async")) o.durability = ENGRAM_DURABILITY_ASYNC;
  int scale = getenv("PC_SCALE") ? atoi(getenv("PC_SCALE")) : 1;
  if (scale < 1) scale = 1;
  ack_fn = (void (*)(const char *))dlsym(RTLD_DEFAULT, "pc_ack");
  /* "park": a small log parks (above 64 free pages); no runner parks behind its back. */
  if (!strcmp(scen, "park")) {
    setenv("ENGRAM_TEST_PARK_KEEP", "16", 1);
    o.maintenance_ms = ENGRAM_MAINTENANCE_OFF;
  }
  engram *log;
  int rc = engram_open(path, &o, &log);
  if (rc) die(NULL, "open", rc);
  ack("open");
  /* "train": the topic trains its dictionary (in the background) part-way through. */
  engram_topic_config tc = {.flags = ENGRAM_TOPIC_NO_DICT};
  if (!strcmp(scen, "train")) tc = (engram_topic_config){.dict_train_after = 200};
  rc = engram_topic_create(log, TOPIC, &tc);
  if (rc) die(log, "topic_create", rc);
  ack("topic %s", TOPIC);
  if (!strcmp(scen, "create")) {
    append_one(log, 0);
  } else if (!strcmp(scen, "single")) {
    for (int i = 0; i < 20 * scale; i++) append_one(log, (uint64_t)i);
  } else if (!strcmp(scen, "threads")) {
    run_threads(log, 4, 8 * scale);
  } else if (!strcmp(scen, "threads8")) {
    run_threads(log, 8, 10 * scale);
  } else if (!strcmp(scen, "pipeline")) {
    run_pipeline(log, 150 * scale);
  } else if (!strcmp(scen, "batch")) {
    run_batches(log, 6 * scale, 8);
  } else if (!strcmp(scen, "groups")) {
    run_groups(log, 12 * scale);
  } else if (!strcmp(scen, "ackfetch")) {
    run_ackfetch(log, 12 * scale);
  } else if (!strcmp(scen, "mixed")) {
    run_mixed(log, 8 * scale);
  } else if (!strcmp(scen, "reclaim")) {
    log = run_reclaim(log, path, &o, scale);
  } else if (!strcmp(scen, "park")) {
    run_park(log, scale);
  } else if (!strcmp(scen, "freed")) {
    run_freed(log, scale);
  } else if (!strcmp(scen, "served")) {
    /* The daemon opens the log itself. */
    engram_close(log);
    run_served(argv[3], scale, 1);
    return 0;
  } else if (!strcmp(scen, "served_many")) {
    engram_close(log);
    run_served(argv[3], scale, 4);
    return 0;
  } else if (!strcmp(scen, "procs")) {
    /* Four writers; this process has closed the log, so the first of them to open it
     * recovers it and the last to close checkpoints. */
    engram_close(log);
    run_procs(argv[3], &o, 4, 8 * scale, 0);
    return 0;
  } else if (!strcmp(scen, "procs_group")) {
    /* Three writers and a consumer acking their events; this process keeps the log open
     * meanwhile (and checkpoints when it closes it last). */
    rc = engram_group_create(log, TOPIC, "g", NULL);
    if (rc) die(log, "group_create", rc);
    ack("group %s g", TOPIC);
    run_procs(argv[3], &o, 3, 8 * scale, 1);
  } else if (!strcmp(scen, "train")) {
    run_batches(log, 25, 8);
    /* Appends go on while the dictionary trains; then more that use it. */
    engram_topic_info ti = {0};
    for (int i = 0; i < 2000 && !ti.dict_id; i++) {
      append_one(log, (uint64_t)(1000 + i));
      if ((rc = engram_topic_info_get(log, TOPIC, &ti)) != 0) die(log, "topic_info", rc);
    }
    if (!ti.dict_id) die(log, "no dictionary trained", ENGRAM_EINTERNAL);
    for (int i = 0; i < 10 * scale; i++) append_one(log, (uint64_t)(5000 + i));
  } else {
    fprintf(stderr, "pc_work: unknown scenario %s\n", scen);
    return 2;
  }
  engram_close(log);
  return 0;
}

/* ---- the checker ---- */
/* Checks one image. Writes one line to stdout: "ok N" (N acknowledgements checked) or
 * "FAIL <why>". */
static void check_image(const char *root, const char *acks) {
  FILE *f = fopen(acks, "r");
  if (!f) {
    printf("FAIL cannot read %s\n", acks);
    return;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/log", root);
  char line[256];
  int opened = 0;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "open", 4)) opened = 1;
  rewind(f);
  /* The image is a throw-away copy: no need to flush what the open writes. */
  engram_options o = {.durability = ENGRAM_DURABILITY_ASYNC,
                      .flags = opened ? ENGRAM_OPEN_NOCREATE : 0};
  engram *log;
  int rc = engram_open(path, &o, &log);
  if (rc) {
    printf("FAIL open: %s: %s\n", engram_errname(rc), engram_errmsg(NULL));
    fclose(f);
    return;
  }
  engram_verify_report vr;
  rc = engram_verify(log, &vr);
  if (rc || vr.damaged) {
    printf("FAIL verify: %s %s\n", engram_errname(rc), vr.first_damage);
    goto out;
  }
  int n = 0;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = '\0';
    /* "w2 append ...": the process's name goes; the line says the same as without it. */
    char *body = line;
    if (body[0] >= 'a' && body[0] <= 'z' && body[1] >= '0' && body[1] <= '9') {
      char *sp = strchr(body, ' ');
      if (sp) body = sp + 1;
    }
    char t[256], g[256];
    unsigned long long off, seq;
    n++;
    if (!strcmp(body, "open") || !strncmp(body, "mark ", 5)) continue;
    if (sscanf(body, "topic %255s", t) == 1) {
      engram_topic_info ti;
      if ((rc = engram_topic_info_get(log, t, &ti)) != 0) {
        printf("FAIL lost: %s (%s)\n", line, engram_errname(rc));
        goto out;
      }
    } else if (sscanf(body, "append %255s %llu %llu", t, &off, &seq) == 3) {
      engram_batch *b = NULL;
      rc = engram_read(log, t, off, &b);
      expected x;
      expected_event(seq, &x);
      if (rc || b->count != 1 || b->events[0].payload_len != x.len ||
          memcmp(b->events[0].payload, x.payload, x.len) || strcmp(b->events[0].type, x.type) ||
          strcmp(b->events[0].key, x.key)) {
        printf("FAIL lost: %s (%s)\n", line, rc ? engram_errname(rc) : "content differs");
        engram_batch_free(b);
        goto out;
      }
      engram_batch_free(b);
    } else if (sscanf(body, "group %255s %255s", t, g) == 2) {
      engram_group_info gi;
      if ((rc = engram_group_info_get(log, t, g, &gi)) != 0) {
        printf("FAIL lost: %s (%s)\n", line, engram_errname(rc));
        goto out;
      }
    } else if (sscanf(body, "ack %255s %255s %llu", t, g, &off) == 3) {
      engram_status st;
      rc = engram_status_get(log, t, g, off, &st);
      if (rc || st.state != ENGRAM_STATE_DONE) {
        printf("FAIL lost: %s (%s)\n", line, rc ? engram_errname(rc) : engram_state_name(st.state));
        if (!rc) engram_free(st.result);
        goto out;
      }
      engram_free(st.result);
    } else {
      printf("FAIL unknown acknowledgement: %s\n", line);
      goto out;
    }
  }
  printf("ok %d\n", n);
out:
  engram_close(log);
  fclose(f);
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "run")) {
    int rc = cmd_run(argc, argv);
    if (rc == 2) fprintf(stderr, "usage: pc_work run SCENARIO ROOT [sync|nometasync|async]\n");
    return rc;
  }
  if (argc >= 2 && !strcmp(argv[1], "proc")) {
    int rc = cmd_proc(argc, argv);
    if (rc == 2)
      fprintf(stderr, "usage: pc_work proc ROLE ID ROOT MODE EACH TARGET READY_FD GO_FD\n");
    return rc;
  }
  if (argc >= 4 && !strcmp(argv[1], "check") && argc % 2 == 0) {
    for (int i = 2; i + 1 < argc; i += 2) {
      check_image(argv[i], argv[i + 1]);
      fflush(stdout);
    }
    return 0;
  }
  fprintf(stderr, "usage: pc_work run SCENARIO ROOT [mode] | pc_work check ROOT ACKS ...\n");
  return 2;
}
