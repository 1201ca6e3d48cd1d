/* bench_groups.c — consumer-group drain: processes fetch leased events and ack them, by
 * fetch then ack (two commits a batch) and by ack-and-fetch (engram_ack_fetch: one). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/bench.h"
#include "common/engram_bench.h"

static const char *usage =
    "usage: bench_groups [options]\n"
    "  Consumer-group drain with real memory events: a topic is prefilled, then consumer\n"
    "  processes (each with its own handle) fetch leased events and ack each one, in sync\n"
    "  and async durability, two ways: fetch then ack (drain_fetch: two commits a batch)\n"
    "  and ack-and-fetch (drain_ackfetch: engram_ack_fetch acks a batch with the fetch of\n"
    "  the next, one commit); the synced commit rate is measured in the same run.\n"
    "  --events N         events prefilled (default 1000000)\n"
    "  --consumers N      consumer processes (default 4)\n"
    "  --batch N          events per fetch in the drain (default 100)\n"
    "  --seconds S        time bound of the sync and one-event workloads (default 5)\n"
    "  --drain-seconds S  time bound of the async drain (default 30)\n"
    "  --durability LIST  sync,async (default both)\n"
    "  --only LIST        drain,roundtrip (default both)\n"
    "  --mode LIST        fetch,ackfetch: the ways of settling (default both)\n"
    "  --json PATH        write results as JSON (one result per line) to PATH\n"
    "  --dir DIR          where to create the log (default a temporary directory)\n"
    "  --quick            100k events, 2 s bounds: a smoke run\n";

#define MAX_CONSUMERS 64
#define SAMPLES 100000 /* round-trip latencies kept per consumer */

static bench_events evs;
static uint64_t n_events = 1000000;
static int consumers = 4;
static size_t batch = 100;
static double seconds = 5, drain_seconds = 30;
static const char *durabilities = "sync,async", *only, *modes = "fetch,ackfetch";
static char root[4096], logdir[4200];
static bench_out out;
static double fsync_rate, commit_rate;

static int listed(const char *list, const char *name) {
  if (!list) return 1;
  size_t n = strlen(name);
  for (const char *p = list; (p = strstr(p, name)); p += n)
    if ((p == list || p[-1] == ',') && (p[n] == 0 || p[n] == ',')) return 1;
  return 0;
}

static void emit(bench_result *r) {
  bench_table_row(r);
  bench_out_add(&out, r);
}

/* What consumers report back, in memory shared across fork(). */
typedef struct child_stat {
  uint64_t acked, fetches, empty;
  uint64_t commits, flushes; /* the handle's commit path (engram_commit_stats_get) */
  int64_t end_ns;
  int rc;
  char err[256];
  size_t n_samples;
  int64_t samples[SAMPLES];
} child_stat;

typedef struct shared {
  int64_t start_ns, deadline_ns;
  child_stat c[MAX_CONSUMERS];
} shared;

static shared *sh;

static void prefill(void) {
  engram_options o = {0};
  o.durability = ENGRAM_DURABILITY_ASYNC;
  engram *log = NULL;
  bench_engram_check(NULL, engram_open(logdir, &o, &log), "open");
  bench_engram_check(log, engram_topic_create(log, "memory", NULL), "topic create");
  enum { FILL = 1000 };
  engram_event *b = calloc(FILL, sizeof *b);
  uint64_t *offs = calloc(FILL, sizeof *offs);
  if (!b || !offs) bench_die("out of memory");
  int64_t t0 = bench_now_ns();
  uint64_t bytes = 0;
  for (uint64_t n = 0; n < n_events; n += FILL) {
    size_t k = n_events - n < FILL ? (size_t)(n_events - n) : FILL;
    for (size_t i = 0; i < k; i++) {
      b[i] = bench_engram_event(bench_event_at(&evs, n + i));
      bytes += b[i].payload_len;
    }
    bench_engram_check(log, engram_append_batch(log, "memory", b, k, offs, NULL), "append_batch");
  }
  bench_engram_check(log, engram_sync(log), "sync");
  double s = (double)(bench_now_ns() - t0) / 1e9;
  free(b);
  free(offs);
  engram_close(log);
  bench_result r;
  bench_result_init(&r, "prefill_batch1000", "engram", "async");
  bench_result_rate(&r, n_events, s, bytes);
  bench_result_note(&r, "engram_append_batch of 1000, then engram_sync");
  emit(&r);
}

static void group_create(const char *name) {
  engram *log = NULL;
  bench_engram_check(NULL, engram_open(logdir, NULL, &log), "open");
  engram_group_config cfg = {0};
  cfg.start = ENGRAM_START_EARLIEST;
  cfg.ack_wait_ms = 600000; /* no lease may expire mid-run: each event is delivered once */
  bench_engram_check(log, engram_group_create(log, "memory", name, &cfg), "group create");
  engram_close(log);
}

/* One consumer process: fetch up to `max`, ack what came in one engram_ack_many, repeat
 * until nothing is left or the deadline passes. With ack_fetch, each batch is acked by the
 * engram_ack_fetch that fetches the next (one commit a round); an event counts as acked
 * once the call that acked it returned. */
static int consume(int id, engram_durability d, const char *group, size_t max, int ack_fetch,
                   int ready_fd, int go_fd) {
  child_stat *st = &sh->c[id];
  engram_options o = {0};
  o.durability = d;
  engram *log = NULL;
  int rc = engram_open(logdir, &o, &log);
  /* Looks the topic up once before the clock starts, as a worker checks its topic at start. */
  engram_topic_info ti;
  if (!rc) rc = engram_topic_info_get(log, "memory", &ti);
  if (rc) {
    st->rc = rc;
    snprintf(st->err, sizeof st->err, "open: %s %s", engram_strerror(rc),
             log ? engram_errmsg(log) : "");
  }
  char c = 'r';
  if (write(ready_fd, &c, 1) != 1) return 1;
  close(ready_fd);
  if (read(go_fd, &c, 1) < 0) return 1; /* EOF when the parent releases everyone at once */
  if (rc) return 1;
  char name[32];
  snprintf(name, sizeof name, "c%d", id);
  engram_ack_item *items = calloc(max, sizeof *items);
  if (!items) return 1;
  uint64_t budget = n_events; /* never more than the topic holds */
  size_t held = 0;            /* ack_fetch: fetched, to be acked by the next call */
  while (st->acked < budget) {
    int64_t t0 = bench_now_ns();
    if (t0 >= sh->deadline_ns) break;
    engram_batch *b = NULL;
    rc = ack_fetch ? engram_ack_fetch(log, "memory", group, name, items, held, NULL, max, 0, &b)
                   : engram_fetch(log, "memory", group, name, max, 0, &b);
    if (rc) {
      snprintf(st->err, sizeof st->err, "%s: %s %s", ack_fetch ? "ack_fetch" : "fetch",
               engram_errname(rc), engram_errmsg(log));
      break;
    }
    st->fetches++;
    st->acked += held;
    held = 0;
    size_t n = b->count;
    if (n == 0) {
      st->empty++;
      engram_batch_free(b);
      break; /* every event is leased or finished: the drain is over for this consumer */
    }
    for (size_t i = 0; i < n; i++)
      items[i] = (engram_ack_item){.offset = b->events[i].offset, .attempt = b->events[i].attempt};
    engram_batch_free(b);
    if (ack_fetch) {
      held = n;
    } else {
      rc = n == 1 ? engram_ack(log, "memory", group, items[0].offset, items[0].attempt, NULL, 0)
                  : engram_ack_many(log, "memory", group, items, n, NULL);
      if (rc) {
        snprintf(st->err, sizeof st->err, "ack: %s %s", engram_errname(rc), engram_errmsg(log));
        break;
      }
      st->acked += n;
    }
    if (st->n_samples < SAMPLES) st->samples[st->n_samples++] = bench_now_ns() - t0;
  }
  if (held && !rc) {
    /* Stopped at the time bound holding a batch: its acks go alone. */
    rc = engram_ack_many(log, "memory", group, items, held, NULL);
    if (rc)
      snprintf(st->err, sizeof st->err, "ack: %s %s", engram_errname(rc), engram_errmsg(log));
    else
      st->acked += held;
  }
  st->end_ns = bench_now_ns();
  st->rc = rc;
  engram_commit_stats cs;
  if (engram_commit_stats_get(log, &cs) == 0) {
    st->commits = cs.commits;
    st->flushes = cs.flushes;
  }
  free(items);
  engram_close(log);
  return rc ? 1 : 0;
}

/* Runs `consumers` processes against `group` and returns the events acked per second. */
static void drain(const char *workload, engram_durability d, size_t max, double bound_s,
                  bench_result *r) {
  int ack_fetch = strstr(workload, "ackfetch") != NULL;
  char group[64];
  snprintf(group, sizeof group, "%s%zu-%s", workload, max, bench_durability_name(d));
  group_create(group);
  memset(sh, 0, sizeof *sh);
  int ready[2], go[2];
  if (pipe(ready) || pipe(go)) bench_die("pipe: %s", strerror(errno));
  pid_t pids[MAX_CONSUMERS];
  fflush(NULL);
  for (int i = 0; i < consumers; i++) {
    pids[i] = fork();
    if (pids[i] < 0) bench_die("fork: %s", strerror(errno));
    if (pids[i] == 0) {
      close(ready[0]);
      close(go[1]);
      _exit(consume(i, d, group, max, ack_fetch, ready[1], go[0]));
    }
  }
  close(ready[1]);
  close(go[0]);
  char c;
  for (int i = 0; i < consumers; i++)
    if (read(ready[0], &c, 1) != 1) bench_die("a consumer died before starting");
  close(ready[0]);
  sh->start_ns = bench_now_ns();
  sh->deadline_ns = sh->start_ns + (int64_t)(bound_s * 1e9);
  close(go[1]); /* releases every consumer at once */
  int failed = 0;
  for (int i = 0; i < consumers; i++) {
    int status;
    if (waitpid(pids[i], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) failed = 1;
  }
  uint64_t acked = 0, fetches = 0, commits = 0, flushes = 0;
  int64_t end = sh->start_ns;
  bench_samples lat = {0};
  char err[256] = "";
  for (int i = 0; i < consumers; i++) {
    child_stat *st = &sh->c[i];
    acked += st->acked;
    fetches += st->fetches;
    commits += st->commits;
    flushes += st->flushes;
    if (st->end_ns > end) end = st->end_ns;
    if (st->err[0] && !err[0]) snprintf(err, sizeof err, "consumer %d: %s", i, st->err);
    for (size_t k = 0; k < st->n_samples; k++) bench_samples_add(&lat, st->samples[k]);
  }
  double s = (double)(end - sh->start_ns) / 1e9;
  uint64_t bytes = (uint64_t)((double)evs.bytes / (double)evs.n * (double)acked);

  /* Cross-check with the group's own counters. */
  engram *log = NULL;
  engram_group_info info;
  memset(&info, 0, sizeof info);
  int irc = engram_open(logdir, NULL, &log);
  if (!irc) irc = engram_group_info_get(log, "memory", group, &info);
  engram_close(log);

  char wl[64];
  snprintf(wl, sizeof wl, "%s%zu_%dproc", workload, max, consumers);
  bench_result_init(r, wl, "engram", bench_durability_name(d));
  bench_result_rate(r, acked, s, bytes);
  r->p50_us = (double)bench_samples_pct(&lat, 50) / 1e3;
  r->p99_us = (double)bench_samples_pct(&lat, 99) / 1e3;
  r->p999_us = (double)bench_samples_pct(&lat, 99.9) / 1e3;
  bench_samples_free(&lat);
  snprintf(r->extra, sizeof r->extra,
           "\"consumers\": %d, \"fetch_max\": %zu, \"fetches\": %llu, \"commits\": %llu,"
           " \"flushes\": %llu, \"commits_per_fetch\": %.2f, \"flushes_per_fetch\": %.2f,"
           " \"group_acked\": %llu, \"group_redelivered\": %llu, \"group_in_flight\": %llu,"
           " \"drained_all\": %s",
           consumers, max, (unsigned long long)fetches, (unsigned long long)commits,
           (unsigned long long)flushes, fetches ? (double)commits / (double)fetches : 0.0,
           fetches ? (double)flushes / (double)fetches : 0.0, (unsigned long long)info.acked,
           (unsigned long long)info.redelivered, (unsigned long long)info.in_flight,
           acked >= n_events ? "true" : "false");
  if (failed || err[0])
    bench_result_note(r, "FAILED: %s", err[0] ? err : "a consumer exited abnormally");
  else if (irc)
    bench_result_note(r, "group info: %s", engram_strerror(irc));
  else if (info.acked != acked)
    bench_result_note(r, "MISMATCH: consumers acked %llu, group counts %llu",
                      (unsigned long long)acked, (unsigned long long)info.acked);
  else if (ack_fetch)
    bench_result_note(r,
                      "engram_ack_fetch of %zu: each batch acked with the fetch of the next, one "
                      "commit a round; %s; latency = one round",
                      max,
                      acked >= n_events ? "drained the whole topic" : "stopped at the time bound");
  else
    bench_result_note(r, "fetch %zu + ack each (%s per fetch); %s; latency = one fetch+ack round",
                      max, max == 1 ? "engram_ack" : "engram_ack_many",
                      acked >= n_events ? "drained the whole topic" : "stopped at the time bound");
}

/* The synced LMDB commit rate right now: the sync workloads are read against the mean of
 * one measurement just before and one just after them, so drift hits both alike. */
static double synced_commits(void) {
  bench_result r;
  double rate = bench_raw_lmdb_commits(root, &evs, 0, 1, 1, 20000, &r);
  bench_result_note(
      &r, "synced commits/s (one put each), measured around the sync workload next to it");
  emit(&r);
  return rate;
}

static void limit_extra(bench_result *r, double before) {
  size_t l = strlen(r->extra);
  snprintf(r->extra + l, sizeof r->extra - l,
           ", \"commits_per_s_before\": %.0f, \"commits_per_s_after\": %.0f", before,
           2 * commit_rate - before);
}

int main(int argc, char **argv) {
  const char *json = NULL, *dir = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage, stdout);
      return 0;
    } else if (!strcmp(a, "--events") && v) {
      n_events = (uint64_t)bench_arg_double(v, a), i++;
    } else if (!strcmp(a, "--consumers") && v) {
      consumers = (int)bench_arg_double(v, a), i++;
    } else if (!strcmp(a, "--batch") && v) {
      batch = (size_t)bench_arg_double(v, a), i++;
    } else if (!strcmp(a, "--seconds") && v) {
      seconds = bench_arg_double(v, a), i++;
    } else if (!strcmp(a, "--drain-seconds") && v) {
      drain_seconds = bench_arg_double(v, a), i++;
    } else if (!strcmp(a, "--durability") && v) {
      durabilities = v, i++;
    } else if (!strcmp(a, "--only") && v) {
      only = v, i++;
    } else if (!strcmp(a, "--mode") && v) {
      modes = v, i++;
    } else if (!strcmp(a, "--json") && v) {
      json = v, i++;
    } else if (!strcmp(a, "--dir") && v) {
      dir = v, i++;
    } else if (!strcmp(a, "--quick")) {
      n_events = 100000, seconds = 2, drain_seconds = 5;
    } else {
      fprintf(stderr, "bench_groups: unknown or incomplete option %s\n%s", a, usage);
      return 2;
    }
  }
  if (n_events < 1000 || consumers < 1 || consumers > MAX_CONSUMERS || batch < 1 || batch > 10000 ||
      seconds <= 0 || drain_seconds <= 0)
    bench_die("--events >= 1000, --consumers 1..%d, --batch 1..10000, bounds > 0", MAX_CONSUMERS);
  if (dir) {
    snprintf(root, sizeof root, "%s/bench-groups.%d", dir, (int)getpid());
    if (mkdir(root, 0755)) bench_die("mkdir %s: %s", root, strerror(errno));
  } else if (bench_mkdtemp(root, sizeof root, "groups")) {
    bench_die("cannot create a temporary directory: %s", strerror(errno));
  }
  snprintf(logdir, sizeof logdir, "%s/log", root);
  sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED) bench_die("mmap: %s", strerror(errno));
  if (bench_events_load(&evs)) bench_die("cannot load or generate events");
  char run_extra[256];
  snprintf(run_extra, sizeof run_extra,
           "\"prefilled\": %llu, \"consumers\": %d, \"fetch_max\": %zu, \"seconds\": %g, "
           "\"drain_seconds\": %g",
           (unsigned long long)n_events, consumers, batch, seconds, drain_seconds);
  if (bench_out_open(&out, json, "groups", &evs, run_extra)) return 1;
  printf("engram %s bench_groups: %llu events prefilled from %s, %d consumer processes\n\n",
         ENGRAM_VERSION_STRING, (unsigned long long)n_events, evs.source, consumers);
  bench_table_header();

  bench_result r;
  fsync_rate = bench_raw_fsync(root, 2, &r);
  emit(&r);
  prefill();

  int do_sync = listed(durabilities, "sync"), do_async = listed(durabilities, "async");
  static const char *const ways[] = {"fetch", "ackfetch"};
  for (int w = 0; w < 2; w++) {
    if (!listed(modes, ways[w])) continue;
    char wl[64];
    if (listed(only, "drain")) {
      snprintf(wl, sizeof wl, "drain_%s", ways[w]);
      if (do_async) {
        drain(wl, ENGRAM_DURABILITY_ASYNC, batch, drain_seconds, &r);
        bench_result_target_rate(&r, 500000);
        emit(&r);
      }
      if (do_sync) {
        double before = synced_commits();
        drain(wl, ENGRAM_DURABILITY_SYNC, batch, seconds, &r);
        commit_rate = (before + synced_commits()) / 2;
        char name[64];
        snprintf(name, sizeof name, "lmdb synced commits/s x %zu", batch);
        bench_result_ratio(&r, commit_rate * (double)batch, name, 0.8);
        limit_extra(&r, before);
        emit(&r);
      }
    }
    if (listed(only, "roundtrip")) {
      snprintf(wl, sizeof wl, "roundtrip_%s", ways[w]);
      if (do_async) {
        drain(wl, ENGRAM_DURABILITY_ASYNC, 1, seconds, &r);
        emit(&r);
      }
      if (do_sync) {
        double before = synced_commits();
        drain(wl, ENGRAM_DURABILITY_SYNC, 1, seconds, &r);
        commit_rate = (before + synced_commits()) / 2;
        bench_result_ratio(&r, commit_rate, "lmdb synced commits/s", 0);
        limit_extra(&r, before);
        emit(&r);
      }
    }
  }
  bench_out_close(&out);
  bench_rmrf(root);
  bench_events_free(&evs);
  if (json) printf("\nresults: %s\n", json);
  return 0;
}
