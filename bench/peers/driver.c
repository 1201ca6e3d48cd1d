/* driver.c — runs the side-by-side workloads against one system through its peer_sys table. */
#include "peers/driver.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

bench_events peer_events;
int peer_drain_split;

static const char *usage =
    "  --workload W        append1 | append8 | append8p | batch100 | drain | drain_split |\n"
    "                      latency |\n"
    "                      limits | ping (drain_split: engram fetches, then acks, in two\n"
    "                      calls; drain: one engram_ack_fetch a batch)\n"
    "  --row R             the table row this run belongs to: fsync | everyday\n"
    "  --seconds S         bound of each append workload (default 3)\n"
    "  --drain-events N    events prefilled for the drain (default 200000)\n"
    "  --drain-seconds S   bound of the drain (default 20)\n"
    "  --consumers N       drain consumer processes (default 4)\n"
    "  --producers N       producers of append8 (threads) and append8p (processes), default 8\n"
    "  --rate R            latency workload: events/s in total (default 2000)\n"
    "  --latency-seconds S latency workload length (default 5)\n"
    "  --latency-producers N  threads sharing the latency rate (default 8)\n"
    "  --quick             short bounds for a smoke run\n";

static peer_sys *sys;
static const char *workload = "", *row = "";
static double seconds = 3, drain_seconds = 20, latency_seconds = 5, rate = 2000;
static uint64_t drain_events = 200000;
static int consumers = 4, producers = 8, latency_producers = 8;
static char stream[64];

#define MAX_PROCS 64
#define MAX_SAMPLES 200000

/* Shared across fork(): what consumer processes report. */
typedef struct shared {
  int64_t start_ns, deadline_ns;
  volatile int stop;          /* latency: producers are done */
  volatile uint64_t produced; /* latency: events sent, valid once stop is set */
  uint64_t consumed;          /* updated atomically */
  uint64_t target;            /* drain: stop once this many are consumed */
  struct {
    uint64_t n;
    int64_t last_ns; /* end of the last consume that got events */
    char err[256];
  } c[MAX_PROCS];
  /* The commit path's counters over the workload: the children's own handles' summed
   * (updated atomically), or a daemon's for all of them (child 0's reading at its start,
   * the parent's at the end). */
  peer_commits commits, commits_before;
  int commits_summed, commits_global;
  uint64_t n_samples; /* updated atomically */
  int64_t samples[MAX_SAMPLES];
} shared;

static shared *sh;

static void result_base(bench_result *r, const char *wl) {
  bench_result_init(r, wl, sys->name, sys->durability);
  snprintf(r->extra, sizeof r->extra, "\"row\": \"%s\"", row);
}

static void extra_add(bench_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void extra_add(bench_result *r, const char *fmt, ...) {
  size_t l = strlen(r->extra);
  if (l + 3 >= sizeof r->extra) return;
  if (l) {
    memcpy(r->extra + l, ", ", 3);
    l += 2;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->extra + l, sizeof r->extra - l, fmt, ap);
  va_end(ap);
}

static void latency_fill(bench_result *r, bench_samples *lat, int cdf) {
  if (!lat->n) return;
  r->p50_us = (double)bench_samples_pct(lat, 50) / 1e3;
  r->p99_us = (double)bench_samples_pct(lat, 99) / 1e3;
  r->p999_us = (double)bench_samples_pct(lat, 99.9) / 1e3;
  if (!cdf) return;
  static const double ps[] = {0,  1,  5,  10, 20, 30,   40,   50,    60,    70, 80,
                              90, 95, 97, 98, 99, 99.5, 99.9, 99.95, 99.99, 100};
  char buf[1024];
  size_t l = 0;
  for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
    l += (size_t)snprintf(buf + l, sizeof buf - l, "%s[%g, %.1f]", i ? ", " : "", ps[i],
                          (double)bench_samples_pct(lat, ps[i]) / 1e3);
  extra_add(r, "\"latency_cdf_us\": [%s], \"samples\": %zu", buf, lat->n);
}

/* ---------------------------------------------------------------------------------
 * The commit path's counters (engram): commits, writes per commit, flushes per commit,
 * printed with each result so that the cause of a miss is in the output.
 * ------------------------------------------------------------------------------ */
static int counts_take(peer_conn *c, peer_commits *out, int *global) {
  *global = 0;
  return c && sys->commit_counts ? sys->commit_counts(c, out, global) : -1;
}

/* *sum += b - a; atomically, since children add into the shared sum at once. */
static void counts_add(peer_commits *sum, const peer_commits *a, const peer_commits *b) {
  __atomic_add_fetch(&sum->writes, b->writes - a->writes, __ATOMIC_RELAXED);
  __atomic_add_fetch(&sum->commits, b->commits - a->commits, __ATOMIC_RELAXED);
  __atomic_add_fetch(&sum->flushes, b->flushes - a->flushes, __ATOMIC_RELAXED);
  for (int i = 0; i < 8; i++)
    __atomic_add_fetch(&sum->hist[i], b->hist[i] - a->hist[i], __ATOMIC_RELAXED);
  __atomic_add_fetch(&sum->commit_ns, b->commit_ns - a->commit_ns, __ATOMIC_RELAXED);
  __atomic_add_fetch(&sum->flush_ns, b->flush_ns - a->flush_ns, __ATOMIC_RELAXED);
}

/* A workload whose connections live in this process: counters at its start. */
typedef struct counts {
  peer_commits before;
  int have, global;
} counts;

static counts counts_begin(peer_conn *c) {
  counts k = {0};
  k.have = counts_take(c, &k.before, &k.global) == 0;
  return k;
}

static void counts_extra(bench_result *r, const peer_commits *d, int global, uint64_t events) {
  if (!d->commits) return;
  char hist[384] = "";
  if (!global) {
    size_t l =
        (size_t)snprintf(hist, sizeof hist,
                         ", \"writes\": %llu, \"writes_per_commit\": %.2f, "
                         "\"commits_by_writes\": [",
                         (unsigned long long)d->writes, (double)d->writes / (double)d->commits);
    for (int i = 0; i < 8; i++)
      l += (size_t)snprintf(hist + l, sizeof hist - l, "%s%llu", i ? ", " : "",
                            (unsigned long long)d->hist[i]);
    l += (size_t)snprintf(hist + l, sizeof hist - l, "]");
    /* Means per commit and per flush: with the time between commits (the run's seconds
     * over its commits) they say where a commit's cycle goes. */
    snprintf(hist + l, sizeof hist - l, ", \"commit_us\": %.1f, \"flush_us\": %.1f",
             (double)d->commit_ns / 1e3 / (double)d->commits,
             d->flushes ? (double)d->flush_ns / 1e3 / (double)d->flushes : 0.0);
  }
  extra_add(r,
            "\"commit_path\": {\"counted_by\": \"%s\", \"commits\": %llu, \"flushes\": %llu, "
            "\"events_per_commit\": %.2f, \"flushes_per_commit\": %.2f%s}",
            global ? "daemon" : "handles", (unsigned long long)d->commits,
            (unsigned long long)d->flushes, (double)events / (double)d->commits,
            (double)d->flushes / (double)d->commits, hist);
}

/* Ends what counts_begin started on the same connection and adds it to the result. */
static void counts_end(counts *k, peer_conn *c, bench_result *r, uint64_t events) {
  peer_commits after, d = {0};
  int global;
  if (!k->have || counts_take(c, &after, &global)) return;
  counts_add(&d, &k->before, &after);
  counts_extra(r, &d, k->global, events);
}

/* In a child process, once connected: its handle's counters, or for a daemon's (one
 * count for every connection) child 0's reading alone, as the start of the whole run. */
static counts child_counts_begin(peer_conn *c, int id) {
  counts k = counts_begin(c);
  if (k.have && k.global) {
    if (id == 0) {
      sh->commits_before = k.before;
      __atomic_store_n(&sh->commits_global, 1, __ATOMIC_RELEASE);
    }
    k.have = 0;
  }
  return k;
}

static void child_counts_end(counts *k, peer_conn *c) {
  peer_commits after;
  int global;
  if (!k->have || counts_take(c, &after, &global)) return;
  counts_add(&sh->commits, &k->before, &after);
  __atomic_store_n(&sh->commits_summed, 1, __ATOMIC_RELEASE);
}

/* In the parent after the children: what they summed, or the daemon's count since child
 * 0 started, read on c. */
static void children_counts_extra(peer_conn *c, bench_result *r, uint64_t events) {
  peer_commits after, d = {0};
  int global;
  if (sh->commits_global) {
    if (counts_take(c, &after, &global)) return;
    counts_add(&d, &sh->commits_before, &after);
    counts_extra(r, &d, 1, events);
  } else if (sh->commits_summed) {
    counts_extra(r, &sh->commits, 0, events);
  }
}

static void print_result(bench_result *r) {
  bench_result_json(stdout, r);
  fputc('\n', stdout);
  fflush(stdout);
}

static int fail(const char *wl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(const char *wl, const char *fmt, ...) {
  bench_result r;
  result_base(&r, wl);
  va_list ap;
  va_start(ap, fmt);
  char msg[200];
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  bench_result_note(&r, "FAILED: %s", msg);
  print_result(&r);
  fprintf(stderr, "%s %s: %s\n", sys->name, wl, msg);
  return 1;
}

/* ---------------------------------------------------------------------------------
 * Appends.
 * ------------------------------------------------------------------------------ */
/* Every stream gets this many events before the clock starts, so each system is measured
 * in its steady state (engram trains a topic's zstd dictionary once, at 4,096 events). */
#define WARM_EVENTS 5000

static int prefill(peer_conn *c, uint64_t n);
static int w_append1(void) {
  peer_conn *c = sys->connect();
  if (!c) return fail(workload, "connect");
  if (sys->setup(c, stream) || prefill(c, WARM_EVENTS)) return fail(workload, "setup");
  counts k = counts_begin(c);
  bench_samples lat = {0};
  uint64_t n = 0, bytes = 0;
  bench_bound b = bench_bound_make(seconds, 100000);
  while (!bench_bound_done(&b, n)) {
    const bench_event *e = bench_event_at(&peer_events, n);
    int64_t t0 = bench_now_ns();
    if (sys->append(c, stream, e, 0))
      return fail(workload, "append failed after %llu events", (unsigned long long)n);
    bench_samples_add(&lat, bench_now_ns() - t0);
    bytes += e->payload_len;
    n++;
  }
  double s = (double)(bench_now_ns() - b.start_ns) / 1e9;
  bench_result r;
  result_base(&r, workload);
  counts_end(&k, c, &r, n);
  sys->teardown(c, stream);
  sys->close(c);
  bench_result_rate(&r, n, s, bytes);
  latency_fill(&r, &lat, 0);
  bench_samples_free(&lat);
  bench_result_note(&r, "1 producer, one event per request, waits for each ack");
  print_result(&r);
  return 0;
}

typedef struct producer {
  pthread_t th;
  int id;
  bench_bound *bound;
  uint64_t n, bytes;
  bench_samples lat;
  int err;
} producer;

static void *produce(void *arg) {
  producer *p = arg;
  peer_conn *c = sys->connect();
  if (!c) {
    p->err = 1;
    return NULL;
  }
  uint64_t i = (uint64_t)p->id * 1000003;
  while (!bench_bound_done(p->bound, p->n)) {
    const bench_event *e = bench_event_at(&peer_events, i++);
    int64_t t0 = bench_now_ns();
    if (sys->append(c, stream, e, 0)) {
      p->err = 1;
      break;
    }
    bench_samples_add(&p->lat, bench_now_ns() - t0);
    p->bytes += e->payload_len;
    p->n++;
  }
  sys->close(c);
  return NULL;
}

static int w_append_many(void) {
  peer_conn *c = sys->connect();
  if (!c) return fail(workload, "connect");
  if (sys->setup(c, stream) || prefill(c, WARM_EVENTS)) return fail(workload, "setup");
  producer *ps = calloc((size_t)producers, sizeof *ps);
  if (!ps) return fail(workload, "out of memory");
  counts k = counts_begin(c);
  bench_bound b = bench_bound_make(seconds, 200000);
  b.max = 200000 / (uint64_t)producers;
  for (int i = 0; i < producers; i++) {
    ps[i].id = i;
    ps[i].bound = &b;
    if (pthread_create(&ps[i].th, NULL, produce, &ps[i])) return fail(workload, "pthread_create");
  }
  uint64_t n = 0, bytes = 0;
  int err = 0;
  bench_samples lat = {0};
  for (int i = 0; i < producers; i++) {
    pthread_join(ps[i].th, NULL);
    n += ps[i].n;
    bytes += ps[i].bytes;
    err |= ps[i].err;
    for (size_t k = 0; k < ps[i].lat.n; k++) bench_samples_add(&lat, ps[i].lat.v[k]);
    bench_samples_free(&ps[i].lat);
  }
  double s = (double)(bench_now_ns() - b.start_ns) / 1e9;
  free(ps);
  bench_result r;
  result_base(&r, workload);
  counts_end(&k, c, &r, n);
  sys->teardown(c, stream);
  sys->close(c);
  if (err) return fail(workload, "a producer failed");
  bench_result_rate(&r, n, s, bytes);
  latency_fill(&r, &lat, 0);
  bench_samples_free(&lat);
  extra_add(&r, "\"producers\": %d", producers);
  bench_result_note(&r, "%d producers (threads, a connection each), one event per request",
                    producers);
  print_result(&r);
  return 0;
}

static int w_batch(size_t per) {
  peer_conn *c = sys->connect();
  if (!c) return fail(workload, "connect");
  if (sys->setup(c, stream) || prefill(c, WARM_EVENTS)) return fail(workload, "setup");
  const bench_event **evs = calloc(per, sizeof *evs);
  if (!evs) return fail(workload, "out of memory");
  counts k = counts_begin(c);
  bench_samples lat = {0};
  uint64_t n = 0, bytes = 0;
  bench_bound b = bench_bound_make(seconds, 1000000);
  while (!bench_bound_done(&b, n)) {
    for (size_t i = 0; i < per; i++) {
      evs[i] = bench_event_at(&peer_events, n + i);
      bytes += evs[i]->payload_len;
    }
    int64_t t0 = bench_now_ns();
    if (sys->append_batch(c, stream, evs, per))
      return fail(workload, "batch failed after %llu events", (unsigned long long)n);
    bench_samples_add(&lat, bench_now_ns() - t0);
    n += per;
  }
  double s = (double)(bench_now_ns() - b.start_ns) / 1e9;
  free(evs);
  bench_result r;
  result_base(&r, workload);
  counts_end(&k, c, &r, n);
  sys->teardown(c, stream);
  sys->close(c);
  bench_result_rate(&r, n, s, bytes);
  latency_fill(&r, &lat, 0);
  bench_samples_free(&lat);
  bench_result_note(
      &r, "1 producer, batches of %zu, waits for every ack of a batch (latency per batch)", per);
  print_result(&r);
  return 0;
}

/* ---------------------------------------------------------------------------------
 * Group drain: consumer processes fetch up to 100 and ack each.
 * ------------------------------------------------------------------------------ */
static int prefill(peer_conn *c, uint64_t n) {
  enum { FILL = 1000 };
  const bench_event *evs[FILL];
  for (uint64_t done = 0; done < n; done += FILL) {
    size_t k = n - done < FILL ? (size_t)(n - done) : FILL;
    for (size_t i = 0; i < k; i++) evs[i] = bench_event_at(&peer_events, done + i);
    if (sys->append_batch(c, stream, evs, k)) return -1;
  }
  return 0;
}

static int drain_child(int id, int ready_fd, int go_fd) {
  peer_conn *c = sys->connect();
  counts k = child_counts_begin(c, id);
  char ch = c ? 'r' : 'x';
  if (write(ready_fd, &ch, 1) != 1) return 1;
  close(ready_fd);
  if (read(go_fd, &ch, 1) < 0 || !c) return 1;
  char name[32];
  snprintf(name, sizeof name, "c%d", id);
  int64_t *stamps = calloc(100, sizeof *stamps);
  int rc = 0;
  while (__atomic_load_n(&sh->consumed, __ATOMIC_RELAXED) < sh->target &&
         bench_now_ns() < sh->deadline_ns) {
    size_t n = 0;
    if (sys->consume(c, stream, "drain", name, 100, 0, &n, stamps)) {
      snprintf(sh->c[id].err, sizeof sh->c[id].err, "consume failed");
      rc = 1;
      break;
    }
    if (n == 0) break;
    sh->c[id].n += n;
    sh->c[id].last_ns = bench_now_ns();
    __atomic_add_fetch(&sh->consumed, n, __ATOMIC_RELAXED);
  }
  if (!rc && sys->finish) {
    /* What the last consume fetched is acked now: the clock stops after it. */
    if (sys->finish(c, stream, "drain")) {
      snprintf(sh->c[id].err, sizeof sh->c[id].err, "final ack failed");
      rc = 1;
    } else if (sh->c[id].n) {
      sh->c[id].last_ns = bench_now_ns();
    }
  }
  free(stamps);
  child_counts_end(&k, c);
  sys->close(c);
  return rc;
}

/* Forks `k` processes running fn(id, ready, go), waits until each is connected and releases
 * them together. Returns 0 or -1; pids[] receives the children. */
static int spawn(int k, int (*fn)(int, int, int), pid_t *pids) {
  int ready[2], go[2];
  if (pipe(ready) || pipe(go)) return -1;
  fflush(NULL);
  for (int i = 0; i < k; i++) {
    pids[i] = fork();
    if (pids[i] < 0) return -1;
    if (pids[i] == 0) {
      close(ready[0]);
      close(go[1]);
      _exit(fn(i, ready[1], go[0]));
    }
  }
  close(ready[1]);
  close(go[0]);
  int ok = 0;
  for (int i = 0; i < k; i++) {
    char ch;
    if (read(ready[0], &ch, 1) == 1 && ch == 'r') ok++;
  }
  close(ready[0]);
  sh->start_ns = bench_now_ns();
  if (!sh->deadline_ns) sh->deadline_ns = sh->start_ns + (int64_t)(drain_seconds * 1e9);
  close(go[1]);
  return ok == k ? 0 : -1;
}

static int reap(int k, pid_t *pids, double timeout_s) {
  int bad = 0;
  int64_t until = bench_now_ns() + (int64_t)(timeout_s * 1e9);
  for (int i = 0; i < k; i++) {
    int status;
    for (;;) {
      pid_t p = waitpid(pids[i], &status, WNOHANG);
      if (p == pids[i]) break;
      if (p < 0) {
        bad = 1;
        break;
      }
      if (bench_now_ns() > until) {
        kill(pids[i], SIGKILL);
        waitpid(pids[i], &status, 0);
        bad = 1;
        break;
      }
      usleep(2000);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status)) bad = 1;
  }
  return bad ? -1 : 0;
}

/* Runs fn in a child process and returns its exit code. Client libraries start threads
 * and keep global state (cnats does), which a fork()ed child cannot use safely: so the
 * parent never connects before it has forked every consumer. */
static int in_child(int (*fn)(void)) {
  fflush(NULL);
  pid_t p = fork();
  if (p < 0) return -1;
  if (p == 0) _exit(fn());
  int status;
  if (waitpid(p, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static double prefill_s;

/* append8p: one blocking producer per process (a connection, or an embedded handle,
 * each), all appending to one stream until the deadline. */
static int append_setup(void) {
  peer_conn *c = sys->connect();
  if (!c || sys->setup(c, stream) || prefill(c, WARM_EVENTS)) return 1;
  sys->close(c);
  return 0;
}

static int append_child(int id, int ready_fd, int go_fd) {
  peer_conn *c = sys->connect();
  counts k = child_counts_begin(c, id);
  char ch = c ? 'r' : 'x';
  if (write(ready_fd, &ch, 1) != 1) return 1;
  close(ready_fd);
  if (read(go_fd, &ch, 1) < 0 || !c) return 1;
  uint64_t i = (uint64_t)id * 1000003;
  int rc = 0;
  while (bench_now_ns() < sh->deadline_ns) {
    const bench_event *e = bench_event_at(&peer_events, i++);
    int64_t t0 = bench_now_ns();
    if (sys->append(c, stream, e, 0)) {
      snprintf(sh->c[id].err, sizeof sh->c[id].err, "append failed");
      rc = 1;
      break;
    }
    int64_t t1 = bench_now_ns();
    uint64_t k = __atomic_fetch_add(&sh->n_samples, 1, __ATOMIC_RELAXED);
    if (k < MAX_SAMPLES) sh->samples[k] = t1 - t0;
    sh->c[id].n++;
    sh->c[id].last_ns = t1;
  }
  child_counts_end(&k, c);
  sys->close(c);
  return rc;
}

static int w_append_procs(void) {
  memset(sh, 0, sizeof *sh);
  if (in_child(append_setup)) return fail(workload, "setup or prefill failed");
  memset(sh, 0, sizeof *sh);
  sh->deadline_ns = bench_now_ns() + (int64_t)((seconds + 1) * 1e9); /* + the spawn */
  pid_t pids[MAX_PROCS];
  int n_procs = producers < MAX_PROCS ? producers : MAX_PROCS;
  int spawned = spawn(n_procs, append_child, pids);
  sh->deadline_ns = sh->start_ns + (int64_t)(seconds * 1e9);
  int reaped = reap(n_procs, pids, seconds + 60);
  uint64_t n = 0, least = UINT64_MAX;
  int64_t end = sh->start_ns;
  char err[256] = "";
  for (int i = 0; i < n_procs; i++) {
    n += sh->c[i].n;
    if (sh->c[i].n < least) least = sh->c[i].n;
    if (sh->c[i].last_ns > end) end = sh->c[i].last_ns;
    if (sh->c[i].err[0] && !err[0]) snprintf(err, sizeof err, "producer %d: %s", i, sh->c[i].err);
  }
  bench_result r;
  result_base(&r, workload);
  peer_conn *c = sys->connect();
  if (c) {
    children_counts_extra(c, &r, n);
    sys->teardown(c, stream);
    sys->close(c);
  }
  if (spawned || reaped || err[0]) return fail(workload, "%s", err[0] ? err : "a producer failed");
  double s = (double)(end - sh->start_ns) / 1e9;
  bench_samples lat = {0};
  uint64_t ns = sh->n_samples < MAX_SAMPLES ? sh->n_samples : MAX_SAMPLES;
  for (uint64_t i = 0; i < ns; i++) bench_samples_add(&lat, sh->samples[i]);
  bench_result_rate(&r, n, s,
                    (uint64_t)((double)peer_events.bytes / (double)peer_events.n * (double)n));
  latency_fill(&r, &lat, 0);
  bench_samples_free(&lat);
  extra_add(&r, "\"producers\": %d, \"slowest_producer_share\": %.2f", n_procs,
            n ? (double)least * n_procs / (double)n : 0.0);
  bench_result_note(&r, "%d producer processes, one event per request, each waits for its ack",
                    n_procs);
  print_result(&r);
  return 0;
}

static int drain_setup(void) {
  peer_conn *c = sys->connect();
  if (!c || sys->setup(c, stream)) return 1;
  int64_t t0 = bench_now_ns();
  if (prefill(c, drain_events)) return 1;
  sh->n_samples = (uint64_t)(bench_now_ns() - t0); /* hands the prefill time back */
  if (sys->group_create(c, stream, "drain", 0)) return 1;
  sys->close(c);
  return 0;
}

static int w_drain(void) {
  memset(sh, 0, sizeof *sh);
  if (in_child(drain_setup)) return fail(workload, "setup or prefill failed");
  prefill_s = (double)sh->n_samples / 1e9;
  double fill_s = prefill_s;
  memset(sh, 0, sizeof *sh);
  sh->target = drain_events;
  pid_t pids[MAX_PROCS];
  int spawned = spawn(consumers, drain_child, pids);
  int reaped = reap(consumers, pids, drain_seconds + 30);
  uint64_t n = 0;
  int64_t end = sh->start_ns;
  char err[256] = "";
  peer_conn *c;
  for (int i = 0; i < consumers; i++) {
    n += sh->c[i].n;
    if (sh->c[i].last_ns > end) end = sh->c[i].last_ns;
    if (sh->c[i].err[0] && !err[0]) snprintf(err, sizeof err, "consumer %d: %s", i, sh->c[i].err);
  }
  double s = (double)(end - sh->start_ns) / 1e9;
  bench_result r;
  result_base(&r, workload);
  c = sys->connect();
  if (c) {
    children_counts_extra(c, &r, n);
    sys->teardown(c, stream);
    sys->close(c);
  }
  if (spawned || reaped || err[0]) return fail(workload, "%s", err[0] ? err : "a consumer failed");
  bench_result_rate(&r, n, s,
                    (uint64_t)((double)peer_events.bytes / (double)peer_events.n * (double)n));
  extra_add(
      &r,
      "\"prefilled\": %llu, \"consumers\": %d, \"prefill_events_per_s\": %.0f, \"drained_all\": %s",
      (unsigned long long)drain_events, consumers, (double)drain_events / fill_s,
      n >= drain_events ? "true" : "false");
  bench_result_note(&r, "%d consumer processes fetch up to 100 and ack each%s; %s", consumers,
                    peer_drain_split ? " (fetch, then ack: two calls)"
                    : sys->finish    ? " (the acks of a batch with the fetch of the next: one call)"
                                     : "",
                    n >= drain_events ? "drained everything" : "stopped at the time bound");
  print_result(&r);
  return 0;
}

/* ---------------------------------------------------------------------------------
 * End-to-end latency at a steady rate with a consumer blocked waiting for events.
 * ------------------------------------------------------------------------------ */
static int latency_child(int id, int ready_fd, int go_fd) {
  peer_conn *c = sys->connect();
  counts k = child_counts_begin(c, -1); /* a daemon's count is the parent's */
  char ch = c ? 'r' : 'x';
  if (write(ready_fd, &ch, 1) != 1) return 1;
  close(ready_fd);
  if (read(go_fd, &ch, 1) < 0 || !c) return 1;
  int64_t stamps[100];
  uint64_t got = 0;
  int rc = 0;
  for (;;) {
    if (sh->stop && got >= sh->produced) break;
    if (bench_now_ns() > sh->deadline_ns) break;
    size_t n = 0;
    if (sys->consume(c, stream, "lat", "c0", 100, 200, &n, stamps)) {
      snprintf(sh->c[0].err, sizeof sh->c[0].err, "consume failed");
      rc = 1;
      break;
    }
    int64_t now = bench_now_ns();
    for (size_t i = 0; i < n; i++) {
      if (!stamps[i]) continue;
      uint64_t k = __atomic_fetch_add(&sh->n_samples, 1, __ATOMIC_RELAXED);
      if (k < MAX_SAMPLES) sh->samples[k] = now - stamps[i];
    }
    got += n;
    sh->c[0].n = got;
  }
  if (!rc && sys->finish && sys->finish(c, stream, "lat")) {
    snprintf(sh->c[0].err, sizeof sh->c[0].err, "final ack failed");
    rc = 1;
  }
  child_counts_end(&k, c);
  sys->close(c);
  return rc;
}

/* The producers connect first and the schedule starts once all have: a connection made
 * inside the schedule would make its first events late, measuring the connection (a
 * handshake, a log opened) instead of the system's steady end-to-end latency. */
typedef struct pace_start {
  pthread_barrier_t connected, go; /* the producers and the main thread */
  int64_t t0_ns;                   /* set between the two */
} pace_start;

typedef struct pacer {
  pthread_t th;
  int id, n;
  pace_start *start;
  int64_t t0_ns, interval_ns, end_ns;
  uint64_t sent, late;
  int err;
} pacer;

static void *pace(void *arg) {
  pacer *p = arg;
  peer_conn *c = sys->connect();
  pthread_barrier_wait(&p->start->connected);
  pthread_barrier_wait(&p->start->go);
  if (!c) {
    p->err = 1;
    return NULL;
  }
  p->t0_ns = p->start->t0_ns + p->interval_ns * p->id / p->n;
  p->end_ns = p->start->t0_ns + p->end_ns;
  uint64_t i = (uint64_t)p->id * 7919;
  for (uint64_t k = 0;; k++) {
    /* Open loop: each event has a scheduled send time and carries it, so a system that
     * falls behind shows it as latency instead of quietly lowering the rate. */
    int64_t due = p->t0_ns + (int64_t)k * p->interval_ns;
    if (due >= p->end_ns) break;
    int64_t now = bench_now_ns();
    if (due > now)
      bench_sleep_until_ns(due);
    else if (now - due > 1000000)
      p->late++;
    if (sys->append(c, stream, bench_event_at(&peer_events, i++), due)) {
      p->err = 1;
      break;
    }
    p->sent++;
  }
  sys->close(c);
  return NULL;
}

static int latency_setup(void) {
  peer_conn *c = sys->connect();
  /* The group starts after the warm-up events: its consumer sees only what is sent now. */
  if (!c || sys->setup(c, stream) || prefill(c, WARM_EVENTS) ||
      sys->group_create(c, stream, "lat", 1))
    return 1;
  sys->close(c);
  return 0;
}

static int w_latency(void) {
  if (in_child(latency_setup)) return fail(workload, "setup failed");
  memset(sh, 0, sizeof *sh);
  sh->deadline_ns = bench_now_ns() + (int64_t)((latency_seconds + 30) * 1e9);
  pid_t pid;
  if (spawn(1, latency_child, &pid)) {
    reap(1, &pid, 5);
    return fail(workload, "consumer did not start");
  }
  usleep(100000); /* let the consumer block in its first wait */
  /* Held for the counters: the producers' handle (embedded, shared by their threads), or
   * a connection to the daemon that counts for all. */
  peer_conn *hold = sys->connect();
  counts k = counts_begin(hold);
  pacer *ps = calloc((size_t)latency_producers, sizeof *ps);
  pace_start start;
  pthread_barrier_init(&start.connected, NULL, (unsigned)latency_producers + 1);
  pthread_barrier_init(&start.go, NULL, (unsigned)latency_producers + 1);
  int64_t interval = (int64_t)(1e9 * latency_producers / rate);
  for (int i = 0; i < latency_producers; i++) {
    ps[i] = (pacer){.id = i,
                    .n = latency_producers,
                    .start = &start,
                    .interval_ns = interval,
                    .end_ns = (int64_t)(latency_seconds * 1e9)}; /* from t0 */
    if (pthread_create(&ps[i].th, NULL, pace, &ps[i])) return fail(workload, "pthread_create");
  }
  pthread_barrier_wait(&start.connected);
  int64_t t0 = start.t0_ns = bench_now_ns() + 1000000;
  pthread_barrier_wait(&start.go);
  uint64_t sent = 0, late = 0;
  int err = 0;
  for (int i = 0; i < latency_producers; i++) {
    pthread_join(ps[i].th, NULL);
    sent += ps[i].sent;
    late += ps[i].late;
    err |= ps[i].err;
  }
  double s = (double)(bench_now_ns() - t0) / 1e9;
  free(ps);
  pthread_barrier_destroy(&start.connected);
  pthread_barrier_destroy(&start.go);
  sh->produced = sent;
  __atomic_store_n(&sh->stop, 1, __ATOMIC_RELEASE);
  sh->deadline_ns = bench_now_ns() + 10 * (int64_t)1000000000;
  int bad = reap(1, &pid, 15);
  bench_result r;
  result_base(&r, workload);
  peer_commits after;
  int global;
  if (k.have && !counts_take(hold, &after, &global)) {
    counts_add(&sh->commits, &k.before, &after); /* the consumer's own, if counted, are in */
    counts_extra(&r, &sh->commits, k.global, sent);
  }
  if (hold) sys->close(hold);
  peer_conn *c = sys->connect();
  if (c) {
    sys->teardown(c, stream);
    sys->close(c);
  }
  if (err) return fail(workload, "a producer failed");
  if (bad || sh->c[0].err[0])
    return fail(workload, "consumer: %s", sh->c[0].err[0] ? sh->c[0].err : "failed");
  bench_samples lat = {0};
  uint64_t ns = sh->n_samples < MAX_SAMPLES ? sh->n_samples : MAX_SAMPLES;
  for (uint64_t i = 0; i < ns; i++) bench_samples_add(&lat, sh->samples[i]);
  bench_result_rate(&r, sent, s, 0);
  latency_fill(&r, &lat, 1);
  extra_add(&r,
            "\"rate_target\": %.0f, \"received\": %llu, \"late_sends\": %llu, \"producers\": %d",
            rate, (unsigned long long)sh->c[0].n, (unsigned long long)late, latency_producers);
  bench_samples_free(&lat);
  bench_result_note(&r,
                    "%.0f events/s from %d producers, 1 consumer blocked in its fetch; latency = "
                    "scheduled send to receipt%s",
                    rate, latency_producers, sh->c[0].n < sent ? "; SOME EVENTS NOT RECEIVED" : "");
  print_result(&r);
  return 0;
}

/* The machine's physical limits, so every figure can be read as a fraction of them. */
static int w_limits(void) {
  char dir[4096];
  if (bench_mkdtemp(dir, sizeof dir, "limits")) return fail(workload, "mkdtemp");
  bench_result r[4];
  bench_raw_fsync(dir, seconds < 2 ? seconds : 2, &r[0]);
  bench_raw_lmdb_commits(dir, &peer_events, 0, 1, seconds < 2 ? seconds : 2, 20000, &r[1]);
  bench_raw_lmdb_commits(dir, &peer_events, 1, 1, seconds < 2 ? seconds : 2, 20000, &r[2]);
  bench_raw_lmdb_append(dir, &peer_events, seconds, 1000000, &r[3], NULL);
  bench_rmrf(dir);
  for (int i = 0; i < 4; i++) {
    snprintf(r[i].extra, sizeof r[i].extra, "\"row\": \"%s\"",
             strncmp(row, "limits", 6) ? "limits" : row);
    print_result(&r[i]);
  }
  return 0;
}

int peer_main(peer_sys *s, int argc, char **argv) {
  sys = s;
  signal(SIGPIPE, SIG_IGN);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int took = 0;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      printf("usage: %s --workload W [options]\n%s%s", argv[0], usage,
             sys->usage ? sys->usage : "");
      return 0;
    } else if (!strcmp(a, "--quick")) {
      seconds = 1, drain_events = 50000, drain_seconds = 10, latency_seconds = 2;
      continue;
    } else if (!v) {
      took = 0;
    } else if (!strcmp(a, "--workload")) {
      workload = v, took = 2;
    } else if (!strcmp(a, "--row")) {
      row = v, took = 2;
    } else if (!strcmp(a, "--seconds")) {
      seconds = bench_arg_double(v, a), took = 2;
    } else if (!strcmp(a, "--drain-events")) {
      drain_events = (uint64_t)bench_arg_double(v, a), took = 2;
    } else if (!strcmp(a, "--drain-seconds")) {
      drain_seconds = bench_arg_double(v, a), took = 2;
    } else if (!strcmp(a, "--consumers")) {
      consumers = (int)bench_arg_double(v, a), took = 2;
    } else if (!strcmp(a, "--producers")) {
      producers = (int)bench_arg_double(v, a), took = 2;
    } else if (!strcmp(a, "--rate")) {
      rate = bench_arg_double(v, a), took = 2;
    } else if (!strcmp(a, "--latency-seconds")) {
      latency_seconds = bench_arg_double(v, a), took = 2;
    } else if (!strcmp(a, "--latency-producers")) {
      latency_producers = (int)bench_arg_double(v, a), took = 2;
    }
    if (!took && sys->option) took = sys->option(argc, argv, i);
    if (!took) {
      fprintf(stderr, "%s: unknown or incomplete option %s\n", argv[0], a);
      return 2;
    }
    i += took - 1;
  }
  if (consumers < 1 || consumers > MAX_PROCS || producers < 1 || latency_producers < 1 ||
      rate <= 0 || seconds <= 0 || drain_events < 1000)
    bench_die("bad bounds: --consumers 1..%d, --producers >= 1, --rate > 0, --drain-events >= 1000",
              MAX_PROCS);
  if (bench_events_load(&peer_events)) bench_die("cannot load or generate events");
  sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED) bench_die("mmap: %s", strerror(errno));
  snprintf(stream, sizeof stream, "bench-%s-%d", workload, (int)getpid());
  int rc;
  if (!strcmp(workload, "append1"))
    rc = w_append1();
  else if (!strcmp(workload, "append8"))
    rc = w_append_many();
  else if (!strcmp(workload, "append8p"))
    rc = w_append_procs();
  else if (!strcmp(workload, "batch100"))
    rc = w_batch(100);
  else if (!strcmp(workload, "drain"))
    rc = w_drain();
  else if (!strcmp(workload, "drain_split"))
    peer_drain_split = 1, rc = w_drain();
  else if (!strcmp(workload, "latency"))
    rc = w_latency();
  else if (!strcmp(workload, "limits"))
    rc = w_limits();
  else if (!strcmp(workload, "ping")) {
    peer_conn *c = sys->connect();
    rc = c ? 0 : 1;
    if (c) sys->close(c);
  } else {
    fprintf(stderr, "%s: unknown workload '%s'\n", argv[0], workload);
    rc = 2;
  }
  bench_events_free(&peer_events);
  return rc;
}
