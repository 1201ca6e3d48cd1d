/* bench_log.c — append and scan throughput of the log, next to this machine's raw limits. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/bench.h"
#include "common/engram_bench.h"

static const char *usage =
    "usage: bench_log [options]\n"
    "  Append and scan throughput of engram with real memory events, each figure next to\n"
    "  this machine's raw fdatasync rate and raw LMDB appends measured in the same run.\n"
    "  Each engram workload runs in rounds interleaved with the limit it is read against,\n"
    "  so drift on a shared machine hits both alike.\n"
    "  --json PATH        write results as JSON (one result per line) to PATH\n"
    "  --seconds S        time bound per workload, split over the rounds (default 3)\n"
    "  --rounds N         interleaved rounds (default 3)\n"
    "  --scan-events N    events in the scan topic (default 200000, at least 1000)\n"
    "  --threads N        producers of the group-commit workload (default 8)\n"
    "  --pipelined        also run one producer with engram_append_async + engram_append_wait\n"
    "  --only LIST        comma-separated subset: one,batch,async,scan\n"
    "  --dir DIR          where to create logs (default a temporary directory under $TMPDIR)\n"
    "  --quick            shorter bounds (1 s, 50k scan events), for a smoke run\n";

#define MAX_ROUNDS 16

static bench_events evs;
static double seconds = 3;
static int rounds = 3;
static uint64_t scan_events = 200000;
static int threads = 8;
static char root[4096];
static const char *only;
static bench_out out;
static int pipe_on;

static int wanted(const char *name) {
  if (!only) return 1;
  size_t n = strlen(name);
  for (const char *p = only; (p = strstr(p, name)); p += n)
    if ((p == only || p[-1] == ',') && (p[n] == 0 || p[n] == ',')) return 1;
  return 0;
}

static void emit(bench_result *r) {
  bench_table_row(r);
  bench_out_add(&out, r);
}

static void path_for(char *buf, size_t cap, const char *name) {
  snprintf(buf, cap, "%s/%s", root, name);
}

/* One workload's figures summed over its rounds. */
typedef struct acc {
  bench_result r; /* names, and latency of the first round for raw limits */
  uint64_t events, bytes;
  double secs;
  double rate[MAX_ROUNDS];
  int n;
  bench_samples lat;
  engram_commit_stats cs; /* commit path of the engram rounds, summed */
  int64_t worst_ns;       /* slowest single append */
  double fair;            /* lowest (slowest thread's appends / mean thread's), 0 = n/a */
} acc;

static void acc_init(acc *a, const char *workload, const char *system, const char *durability) {
  memset(a, 0, sizeof *a);
  bench_result_init(&a->r, workload, system, durability);
}

static void acc_add(acc *a, uint64_t events, uint64_t bytes, double secs) {
  a->events += events;
  a->bytes += bytes;
  a->secs += secs;
  if (a->n < MAX_ROUNDS) a->rate[a->n++] = secs > 0 ? (double)events / secs : 0;
}

/* Adds one round measured by a bench_raw_* function. */
static void acc_add_raw(acc *a, const bench_result *r) {
  if (a->n == 0) {
    char w[64], s[32], d[48];
    snprintf(w, sizeof w, "%s", a->r.workload);
    snprintf(s, sizeof s, "%s", a->r.system);
    snprintf(d, sizeof d, "%s", a->r.durability);
    a->r = *r;
    snprintf(a->r.workload, sizeof a->r.workload, "%s", w);
    snprintf(a->r.system, sizeof a->r.system, "%s", s);
    snprintf(a->r.durability, sizeof a->r.durability, "%s", d);
  }
  acc_add(a, r->events, (uint64_t)(r->mb_per_s * 1e6 * r->seconds), r->seconds);
}

/* The result: rate = events over time summed across rounds; per-round rates in "rounds". */
static bench_result *acc_done(acc *a) {
  bench_result_rate(&a->r, a->events, a->secs, a->bytes);
  if (a->lat.n) {
    a->r.p50_us = (double)bench_samples_pct(&a->lat, 50) / 1e3;
    a->r.p99_us = (double)bench_samples_pct(&a->lat, 99) / 1e3;
    a->r.p999_us = (double)bench_samples_pct(&a->lat, 99.9) / 1e3;
  }
  bench_samples_free(&a->lat);
  size_t l = strlen(a->r.extra);
  l += (size_t)snprintf(a->r.extra + l, sizeof a->r.extra - l, "%s\"rounds\": [", l ? ", " : "");
  for (int i = 0; i < a->n && l < sizeof a->r.extra; i++)
    l += (size_t)snprintf(a->r.extra + l, sizeof a->r.extra - l, "%s%.0f", i ? ", " : "",
                          a->rate[i]);
  if (l < sizeof a->r.extra) snprintf(a->r.extra + l, sizeof a->r.extra - l, "]");
  return &a->r;
}

static void extra_add(bench_result *r, const char *key, double v) {
  size_t l = strlen(r->extra);
  snprintf(r->extra + l, sizeof r->extra - l, "%s\"%s\": %.4f", l ? ", " : "", key, v);
}

static double round_s(void) { return seconds / rounds; }

static engram_commit_stats stats_of(engram *log) {
  engram_commit_stats st = {0};
  engram_commit_stats_get(log, &st);
  return st;
}

/* Adds what the commit path did since `from`. */
static void acc_commits(acc *a, engram *log, const engram_commit_stats *from) {
  engram_commit_stats now = stats_of(log);
  a->cs.commits += now.commits - from->commits;
  a->cs.jobs += now.jobs - from->jobs;
  a->cs.flushes += now.flushes - from->flushes;
  if (now.max_wait > a->cs.max_wait) a->cs.max_wait = now.max_wait;
  for (int i = 0; i < 8; i++) a->cs.batch_hist[i] += now.batch_hist[i] - from->batch_hist[i];
  a->cs.commit_duration.count += now.commit_duration.count - from->commit_duration.count;
  a->cs.commit_duration.sum_ns += now.commit_duration.sum_ns - from->commit_duration.sum_ns;
  a->cs.flush_duration.count += now.flush_duration.count - from->flush_duration.count;
  a->cs.flush_duration.sum_ns += now.flush_duration.sum_ns - from->flush_duration.sum_ns;
}

/* Records (commit_extras, before emit) and prints (commit_line, after) the commit histogram,
 * flushes per commit, the slowest append and the thread balance, so the cause of a miss is visible
 * in the output. */
static const char *hist_label[8] = {"1", "2", "3-4", "5-8", "9-16", "17-32", "33-64", "65+"};

static void commit_extras(const acc *a, bench_result *r) {
  if (!a->cs.commits) return;
  double c = (double)a->cs.commits;
  extra_add(r, "commits", c);
  extra_add(r, "writes_per_commit", (double)a->cs.jobs / c);
  extra_add(r, "flushes_per_commit", (double)a->cs.flushes / c);
  extra_add(r, "max_wait_commits", (double)a->cs.max_wait);
  if (a->cs.commit_duration.count)
    extra_add(r, "commit_mean_us",
              (double)a->cs.commit_duration.sum_ns / (double)a->cs.commit_duration.count / 1e3);
  if (a->cs.flush_duration.count)
    extra_add(r, "flush_mean_us",
              (double)a->cs.flush_duration.sum_ns / (double)a->cs.flush_duration.count / 1e3);
  if (a->worst_ns) extra_add(r, "slowest_append_ms", (double)a->worst_ns / 1e6);
  if (a->fair > 0) extra_add(r, "slowest_thread_share", a->fair);
  size_t l = strlen(r->extra);
  l += (size_t)snprintf(r->extra + l, sizeof r->extra - l, ", \"batch_hist\": [");
  for (int i = 0; i < 8 && l < sizeof r->extra; i++)
    l += (size_t)snprintf(r->extra + l, sizeof r->extra - l, "%s%llu", i ? ", " : "",
                          (unsigned long long)a->cs.batch_hist[i]);
  if (l < sizeof r->extra) snprintf(r->extra + l, sizeof r->extra - l, "]");
}

static void commit_line(const acc *a, const bench_result *r) {
  if (!a->cs.commits) return;
  double c = (double)a->cs.commits;
  printf("    %s: %llu commits, %.2f writes and %.2f flushes per commit; writes per commit:",
         r->workload, (unsigned long long)a->cs.commits, (double)a->cs.jobs / c,
         (double)a->cs.flushes / c);
  for (int i = 0; i < 8; i++)
    if (a->cs.batch_hist[i])
      printf(" %s:%.0f%%", hist_label[i], 100.0 * (double)a->cs.batch_hist[i] / c);
  printf("; longest wait %llu commits", (unsigned long long)a->cs.max_wait);
  const engram_duration_hist *cd = &a->cs.commit_duration, *fd = &a->cs.flush_duration;
  if (cd->count) printf("; commit %.0f us", (double)cd->sum_ns / (double)cd->count / 1e3);
  if (fd->count) printf("; flush %.0f us", (double)fd->sum_ns / (double)fd->count / 1e3);
  if (a->worst_ns) printf("; slowest append %.1f ms", (double)a->worst_ns / 1e6);
  if (a->fair > 0) printf("; slowest thread %.2f x the mean", a->fair);
  printf("\n");
}

/* ---------------------------------------------------------------------------------
 * engram workloads: each runs one round into an accumulator.
 * ------------------------------------------------------------------------------ */
/* Events written before the clock starts, so each workload measures the steady state:
 * engram trains a topic's zstd dictionary once, when it reaches 4,096 events. */
#define WARM_EVENTS 5000

/* Waits (up to 10 s) for the topic's automatic dictionary, which engram trains in the
 * background once the topic holds 4,096 events, so no workload measures that training. */
static uint32_t wait_dict(engram *log) {
  engram_topic_info info = {0};
  for (int i = 0; i < 2000; i++) {
    bench_engram_check(log, engram_topic_info_get(log, "memory", &info), "topic info");
    if (info.dict_id) break;
    usleep(5000);
  }
  return info.dict_id;
}

static engram *open_log(const char *name, engram_durability d, int warm) {
  char dir[4200];
  path_for(dir, sizeof dir, name);
  bench_rmrf(dir);
  engram_options o = {0};
  o.durability = d;
  engram *log = NULL;
  bench_engram_check(NULL, engram_open(dir, &o, &log), "open");
  bench_engram_check(log, engram_topic_create(log, "memory", NULL), "topic create");
  engram_event b[1000];
  uint64_t offs[1000];
  for (uint64_t n = 0; warm && n < WARM_EVENTS; n += 1000) {
    for (int i = 0; i < 1000; i++) b[i] = bench_engram_event(bench_event_at(&evs, n + (uint64_t)i));
    bench_engram_check(log, engram_append_batch(log, "memory", b, 1000, offs, NULL), "warm-up");
  }
  if (warm) wait_dict(log);
  return log;
}

static void close_log(engram *log, const char *name) {
  char dir[4200];
  engram_close(log);
  path_for(dir, sizeof dir, name);
  bench_rmrf(dir);
}

static void one_thread(acc *a) {
  engram *log = open_log("one", ENGRAM_DURABILITY_SYNC, 1);
  engram_commit_stats from = stats_of(log);
  uint64_t n = 0, bytes = 0;
  bench_bound b = bench_bound_make(round_s(), 50000);
  while (!bench_bound_done(&b, n)) {
    const bench_event *e = bench_event_at(&evs, n);
    engram_event ev = bench_engram_event(e);
    int64_t t0 = bench_now_ns();
    bench_engram_check(log, engram_append(log, "memory", &ev, NULL, NULL), "append");
    int64_t dt = bench_now_ns() - t0;
    bench_samples_add(&a->lat, dt);
    if (dt > a->worst_ns) a->worst_ns = dt;
    bytes += e->payload_len;
    n++;
  }
  double s = (double)(bench_now_ns() - b.start_ns) / 1e9;
  acc_commits(a, log, &from);
  close_log(log, "one");
  acc_add(a, n, bytes, s);
}

typedef struct producer {
  pthread_t th;
  engram *log;
  int id;
  bench_bound *bound;
  uint64_t n, bytes;
  int64_t worst_ns;
} producer;

static void *produce(void *arg) {
  producer *p = arg;
  uint64_t i = (uint64_t)p->id * 1000003;
  while (!bench_bound_done(p->bound, p->n)) {
    const bench_event *e = bench_event_at(&evs, i++);
    engram_event ev = bench_engram_event(e);
    int64_t t0 = bench_now_ns();
    bench_engram_check(p->log, engram_append(p->log, "memory", &ev, NULL, NULL), "append");
    int64_t dt = bench_now_ns() - t0;
    if (dt > p->worst_ns) p->worst_ns = dt;
    p->bytes += e->payload_len;
    p->n++;
  }
  return NULL;
}

static void many_threads(acc *a) {
  engram *log = open_log("many", ENGRAM_DURABILITY_SYNC, 1);
  engram_commit_stats from = stats_of(log);
  producer *ps = calloc((size_t)threads, sizeof *ps);
  if (!ps) bench_die("out of memory");
  bench_bound b = bench_bound_make(round_s(), 50000);
  for (int i = 0; i < threads; i++) {
    ps[i] = (producer){.log = log, .id = i, .bound = &b};
    if (pthread_create(&ps[i].th, NULL, produce, &ps[i])) bench_die("pthread_create failed");
  }
  uint64_t n = 0, bytes = 0, least = UINT64_MAX;
  for (int i = 0; i < threads; i++) {
    pthread_join(ps[i].th, NULL);
    n += ps[i].n;
    bytes += ps[i].bytes;
    if (ps[i].n < least) least = ps[i].n;
    if (ps[i].worst_ns > a->worst_ns) a->worst_ns = ps[i].worst_ns;
  }
  double s = (double)(bench_now_ns() - b.start_ns) / 1e9;
  double share = n ? (double)least * threads / (double)n : 0;
  if (a->fair == 0 || share < a->fair) a->fair = share;
  acc_commits(a, log, &from);
  free(ps);
  close_log(log, "many");
  acc_add(a, n, bytes, s);
}

static uint64_t acked;
static void on_ack(void *ctx, int rc, uint64_t offset, int duplicate) {
  if (rc == 0) acked++;
}

static void pipelined(acc *a) {
  engram *log = open_log("pipe", ENGRAM_DURABILITY_SYNC, 1);
  engram_commit_stats from = stats_of(log);
  uint64_t n = 0, bytes = 0;
  acked = 0;
  bench_bound b = bench_bound_make(round_s(), 50000);
  while (!bench_bound_done(&b, n)) {
    const bench_event *e = bench_event_at(&evs, n);
    engram_event ev = bench_engram_event(e);
    bench_engram_check(log, engram_append_async(log, "memory", &ev, on_ack, NULL), "append_async");
    bytes += e->payload_len;
    n++;
  }
  bench_engram_check(log, engram_append_wait(log), "append_wait");
  double s = (double)(bench_now_ns() - b.start_ns) / 1e9;
  acc_commits(a, log, &from);
  close_log(log, "pipe");
  acc_add(a, acked, bytes, s);
}

static void batches(acc *a, engram_durability d, const char *name, int per_batch) {
  engram *log = open_log(name, d, 1);
  engram_event *batch = calloc((size_t)per_batch, sizeof *batch);
  uint64_t *offs = calloc((size_t)per_batch, sizeof *offs);
  if (!batch || !offs) bench_die("out of memory");
  uint64_t n = 0, bytes = 0;
  bench_bound b = bench_bound_make(round_s(), d == ENGRAM_DURABILITY_SYNC ? 500000 : 1000000);
  while (!bench_bound_done(&b, n)) {
    for (int i = 0; i < per_batch; i++) {
      const bench_event *e = bench_event_at(&evs, n + (uint64_t)i);
      batch[i] = bench_engram_event(e);
      bytes += e->payload_len;
    }
    int64_t t0 = bench_now_ns();
    bench_engram_check(log,
                       engram_append_batch(log, "memory", batch, (size_t)per_batch, offs, NULL),
                       "append_batch");
    bench_samples_add(&a->lat, bench_now_ns() - t0);
    n += (uint64_t)per_batch;
  }
  double s = (double)(bench_now_ns() - b.start_ns) / 1e9;
  free(batch);
  free(offs);
  close_log(log, name);
  acc_add(a, n, bytes, s);
}

/* ---------------------------------------------------------------------------------
 * Groups of interleaved workloads.
 * ------------------------------------------------------------------------------ */
static double limit_s(void) { return round_s() < 2 ? round_s() : 2; }

/* One event per commit: fdatasync, raw LMDB commits, engram with 1 and N threads. */
static void group_commits(void) {
  acc fs, lc, ln, one, many, pipe;
  char many_name[64];
  snprintf(many_name, sizeof many_name, "append_%dthreads", threads);
  acc_init(&fs, "fdatasync_4k", "disk", "fdatasync");
  acc_init(&lc, "lmdb_commit_1put", "lmdb", "sync");
  acc_init(&ln, "lmdb_commit_1put", "lmdb", "nometasync");
  acc_init(&one, "append_1thread", "engram", "sync");
  acc_init(&many, many_name, "engram", "sync");
  acc_init(&pipe, "append_pipelined", "engram", "sync");
  for (int i = 0; i < rounds; i++) {
    bench_result r;
    bench_raw_fsync(root, limit_s(), &r);
    acc_add_raw(&fs, &r);
    bench_raw_lmdb_commits(root, &evs, 0, 1, limit_s(), 20000, &r);
    acc_add_raw(&lc, &r);
    bench_raw_lmdb_commits(root, &evs, 1, 1, limit_s(), 20000, &r);
    acc_add_raw(&ln, &r);
    one_thread(&one);
    many_threads(&many);
    if (pipe_on) pipelined(&pipe);
  }
  bench_result *f = acc_done(&fs);
  double fsync_rate = f->events_per_s;
  emit(f);
  bench_result *r = acc_done(&lc);
  bench_result_ratio(r, fsync_rate, "fdatasync", 0);
  double commit_rate = r->events_per_s;
  emit(r);
  r = acc_done(&ln);
  bench_result_ratio(r, fsync_rate, "fdatasync", 0);
  emit(r);
  r = acc_done(&one);
  bench_result_ratio(r, fsync_rate, "fdatasync", 0.9);
  double one_rate = r->events_per_s;
  if (commit_rate > 0) extra_add(r, "ratio_to_lmdb_commit_sync", one_rate / commit_rate);
  bench_result_note(r, "one event per commit; %.2f x a plain synced LMDB commit",
                    commit_rate > 0 ? one_rate / commit_rate : 0);
  commit_extras(&one, r);
  emit(r);
  commit_line(&one, r);
  r = acc_done(&many);
  bench_result_ratio(r, one_rate, "append_1thread", 6);
  if (fsync_rate > 0) extra_add(r, "ratio_to_fdatasync", r->events_per_s / fsync_rate);
  bench_result_note(
      r, "%d threads, one event per append, commits shared (group commit); %.2f x fdatasync",
      threads, fsync_rate > 0 ? r->events_per_s / fsync_rate : 0);
  commit_extras(&many, r);
  emit(r);
  commit_line(&many, r);
  if (pipe_on) {
    r = acc_done(&pipe);
    bench_result_ratio(r, fsync_rate, "fdatasync", 0.9);
    bench_result_note(r, "one producer, engram_append_async + engram_append_wait");
    commit_extras(&pipe, r);
    emit(r);
    commit_line(&pipe, r);
  }
}

/* Batches of 100 per synced commit: raw LMDB against engram. */
static void group_batch(void) {
  acc lb, eb;
  acc_init(&lb, "lmdb_commit_100puts", "lmdb", "sync");
  acc_init(&eb, "append_batch100", "engram", "sync");
  for (int i = 0; i < rounds; i++) {
    bench_result r;
    bench_raw_lmdb_commits(root, &evs, 0, 100, limit_s(), 500000, &r);
    acc_add_raw(&lb, &r);
    batches(&eb, ENGRAM_DURABILITY_SYNC, "batch-sync", 100);
  }
  bench_result *r = acc_done(&lb);
  double lmdb_rate = r->events_per_s;
  emit(r);
  r = acc_done(&eb);
  bench_result_ratio(r, lmdb_rate, "lmdb_commit_100puts_sync", 0);
  bench_result_target_rate(r, 100000);
  bench_result_note(r, "100 events per engram_append_batch; latency per batch");
  emit(r);
}

/* Unflushed batches: raw LMDB appends in one transaction against engram async. */
static void group_async(void) {
  acc la, ea, en;
  acc_init(&la, "lmdb_append_1txn", "lmdb", "nosync");
  acc_init(&ea, "append_batch100", "engram", "async");
  acc_init(&en, "append_batch100", "engram", "nometasync");
  for (int i = 0; i < rounds; i++) {
    bench_result r;
    bench_raw_lmdb_append(root, &evs, round_s(), 1000000 / (uint64_t)rounds, &r, NULL);
    acc_add_raw(&la, &r);
    batches(&ea, ENGRAM_DURABILITY_ASYNC, "batch-async", 100);
    batches(&en, ENGRAM_DURABILITY_NOMETASYNC, "batch-nometa", 100);
  }
  bench_result *r = acc_done(&la);
  double lmdb_rate = r->events_per_s;
  emit(r);
  r = acc_done(&ea);
  bench_result_ratio(r, lmdb_rate, "lmdb_append_1txn", 0.85);
  bench_result_note(r, "100 events per engram_append_batch; latency per batch");
  emit(r);
  r = acc_done(&en);
  bench_result_ratio(r, lmdb_rate, "lmdb_append_1txn", 0);
  bench_result_note(r, "100 events per engram_append_batch: one data flush per commit");
  emit(r);
}

/* The one-time cost the warm-up keeps out of the other figures: single appends to a fresh
 * topic across the point where its zstd dictionary is trained (4,096 events by default). */
static void dict_training(void) {
  engram *log = open_log("train", ENGRAM_DURABILITY_ASYNC, 0);
  enum { N = 6000 };
  bench_samples lat = {0};
  int64_t worst = 0;
  uint64_t worst_at = 0, bytes = 0;
  int64_t t0 = bench_now_ns();
  for (uint64_t n = 0; n < N; n++) {
    const bench_event *e = bench_event_at(&evs, n);
    engram_event ev = bench_engram_event(e);
    int64_t a = bench_now_ns();
    bench_engram_check(log, engram_append(log, "memory", &ev, NULL, NULL), "append");
    int64_t d = bench_now_ns() - a;
    bench_samples_add(&lat, d);
    if (d > worst) worst = d, worst_at = n + 1;
    bytes += e->payload_len;
  }
  double s = (double)(bench_now_ns() - t0) / 1e9;
  engram_topic_info info;
  info.dict_id = wait_dict(log);
  close_log(log, "train");
  bench_result r;
  bench_result_init(&r, "append_through_dict_training", "engram", "async");
  bench_result_rate(&r, N, s, bytes);
  r.p50_us = (double)bench_samples_pct(&lat, 50) / 1e3;
  r.p99_us = (double)bench_samples_pct(&lat, 99) / 1e3;
  r.p999_us = (double)bench_samples_pct(&lat, 99.9) / 1e3;
  bench_samples_free(&lat);
  snprintf(r.extra, sizeof r.extra, "\"max_us\": %.0f, \"max_at_event\": %llu, \"dict_id\": %u",
           (double)worst / 1e3, (unsigned long long)worst_at, info.dict_id);
  bench_result_note(
      &r, "one append at a time to a fresh topic: the slowest took %.1f ms, at event %llu",
      (double)worst / 1e6, (unsigned long long)worst_at);
  emit(&r);
}

/* Read scan with decode and decompression, next to LMDB's raw cursor walk. */
static void scan(void) {
  bench_result la, lmdb_scan;
  bench_raw_lmdb_append(root, &evs, seconds, scan_events, &la, &lmdb_scan);
  emit(&lmdb_scan);
  engram *log = open_log("scan", ENGRAM_DURABILITY_ASYNC, 0);
  enum { FILL = 1000, PAGE = 1000 };
  engram_event *batch = calloc(FILL, sizeof *batch);
  uint64_t *offs = calloc(FILL, sizeof *offs);
  if (!batch || !offs) bench_die("out of memory");
  uint64_t bytes = 0;
  int64_t t0 = bench_now_ns();
  for (uint64_t n = 0; n < scan_events; n += FILL) {
    size_t k = scan_events - n < FILL ? (size_t)(scan_events - n) : FILL;
    for (size_t i = 0; i < k; i++) {
      const bench_event *e = bench_event_at(&evs, n + i);
      batch[i] = bench_engram_event(e);
      bytes += e->payload_len;
    }
    bench_engram_check(log, engram_append_batch(log, "memory", batch, k, offs, NULL),
                       "append_batch");
  }
  bench_engram_check(log, engram_sync(log), "sync");
  double fill_s = (double)(bench_now_ns() - t0) / 1e9;
  free(batch);
  free(offs);
  engram_topic_info info;
  bench_engram_check(log, engram_topic_info_get(log, "memory", &info), "topic info");

  /* Passes over the whole topic until the time bound; the median pass is reported. */
  double rates[16];
  size_t passes = 0;
  uint64_t total = 0, checksum = 0;
  bench_bound b = bench_bound_make(seconds, 0);
  while (passes < 16 && (passes < 3 || bench_now_ns() < b.end_ns)) {
    uint64_t from = 1, seen = 0;
    int64_t p0 = bench_now_ns();
    for (;;) {
      engram_batch *page = NULL;
      bench_engram_check(log, engram_read_range(log, "memory", from, PAGE, &page), "read_range");
      size_t c = page->count;
      for (size_t i = 0; i < c; i++) checksum += page->events[i].payload_len;
      if (c) from = page->events[c - 1].offset + 1;
      seen += c;
      engram_batch_free(page);
      if (c == 0) break;
    }
    double s = (double)(bench_now_ns() - p0) / 1e9;
    if (seen != scan_events)
      bench_die("scan saw %llu events, expected %llu", (unsigned long long)seen,
                (unsigned long long)scan_events);
    rates[passes++] = (double)seen / s;
    total += seen;
  }
  close_log(log, "scan");
  double med = bench_median(rates, passes);
  bench_result r;
  bench_result_init(&r, "scan_read_range", "engram", "-");
  bench_result_rate(&r, total, (double)total / med, checksum);
  if (lmdb_scan.events_per_s > 0)
    bench_result_ratio(&r, lmdb_scan.events_per_s, "lmdb_cursor_scan", 0);
  bench_result_target_rate(&r, 2000000);
  snprintf(
      r.extra, sizeof r.extra,
      "\"topic_events\": %llu, \"passes\": %zu, \"dict_id\": %u, \"prefill_events_per_s\": %.0f",
      (unsigned long long)scan_events, passes, info.dict_id, (double)scan_events / fill_s);
  bench_result_note(&r, "median of %zu passes over %llu events, pages of %d, decode + zstd%s",
                    passes, (unsigned long long)scan_events, PAGE,
                    info.dict_id ? " with dictionary" : "");
  emit(&r);
}

int main(int argc, char **argv) {
  const char *json = NULL, *dir = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage, stdout);
      return 0;
    } else if (!strcmp(a, "--json") && v) {
      json = v;
      i++;
    } else if (!strcmp(a, "--seconds") && v) {
      seconds = bench_arg_double(v, "--seconds");
      i++;
    } else if (!strcmp(a, "--rounds") && v) {
      rounds = (int)bench_arg_double(v, "--rounds");
      i++;
    } else if (!strcmp(a, "--scan-events") && v) {
      scan_events = (uint64_t)bench_arg_double(v, "--scan-events");
      i++;
    } else if (!strcmp(a, "--threads") && v) {
      threads = (int)bench_arg_double(v, "--threads");
      i++;
    } else if (!strcmp(a, "--only") && v) {
      only = v;
      i++;
    } else if (!strcmp(a, "--dir") && v) {
      dir = v;
      i++;
    } else if (!strcmp(a, "--pipelined")) {
      pipe_on = 1;
    } else if (!strcmp(a, "--quick")) {
      seconds = 1;
      scan_events = 50000;
    } else {
      fprintf(stderr, "bench_log: unknown or incomplete option %s\n%s", a, usage);
      return 2;
    }
  }
  if (seconds <= 0 || scan_events < 1000 || threads < 1 || threads > 256 || rounds < 1 ||
      rounds > MAX_ROUNDS)
    bench_die("--seconds > 0, --scan-events >= 1000, --threads 1..256, --rounds 1..%d", MAX_ROUNDS);
  if (dir) {
    snprintf(root, sizeof root, "%s/bench-log.%d", dir, (int)getpid());
    if (mkdir(root, 0755)) bench_die("mkdir %s: %s", root, strerror(errno));
  } else if (bench_mkdtemp(root, sizeof root, "log")) {
    bench_die("cannot create a temporary directory: %s", strerror(errno));
  }
  if (bench_events_load(&evs)) bench_die("cannot load or generate events");
  char run_extra[256];
  snprintf(run_extra, sizeof run_extra,
           "\"seconds_per_workload\": %g, \"rounds\": %d, \"threads\": %d", seconds, rounds,
           threads);
  if (bench_out_open(&out, json, "log", &evs, run_extra)) return 1;
  printf(
      "engram %s bench_log: %zu distinct events from %s (payload p50 %zu B, p90 %zu B, p99 %zu "
      "B)\n",
      ENGRAM_VERSION_STRING, evs.n, evs.source, bench_events_size_pct(&evs, 50),
      bench_events_size_pct(&evs, 90), bench_events_size_pct(&evs, 99));
  printf("logs in %s; each workload bounded to %.1f s in %d interleaved rounds\n\n", root, seconds,
         rounds);
  bench_table_header();

  if (wanted("one")) group_commits();
  if (wanted("batch")) group_batch();
  if (wanted("async")) {
    group_async();
    dict_training();
  }
  if (wanted("scan")) scan();

  bench_out_close(&out);
  bench_rmrf(root);
  bench_events_free(&evs);
  if (json) printf("\nresults: %s\n", json);
  return 0;
}
