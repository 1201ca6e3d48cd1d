/* bench_net.c — engram served over ZeroMQ: remote appends (1 and 8 clients, one event per
 * request, sync and async), pipelined and batched appends, a remote group drain, and the
 * end-to-end latency from the append call to a waiting worker holding the event at a
 * steady 2,000 events/s, embedded (woken by notifications) and remote. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/bench.h"
#include "common/engram_bench.h"

static const char *usage =
    "usage: bench_net [options]\n"
    "  The daemon (engram serve, started here in a child process on an ipc endpoint) with\n"
    "  real memory events: remote appends from 1 and 8 clients one event per request,\n"
    "  pipelined (engram_append_async) and batched appends, a remote group drain (fetch then\n"
    "  ack, and engram_ack_fetch), and the\n"
    "  append-to-worker latency at a steady rate, embedded and remote.\n"
    "  --seconds S        time bound of each throughput workload (default 5)\n"
    "  --latency-seconds S  duration of each latency run (default 5)\n"
    "  --rate N           events/s of the latency runs (default 2000)\n"
    "  --drain-events N   events prefilled for the drain (default 200000)\n"
    "  --flush-ms N       embedded latency run: the handles' background flush interval\n"
    "                     (default: the library's, 1000)\n"
    "  --only LIST        one,eight,pipelined,batch,drain,latency,hops,curve (default all\n"
    "                     but curve); hops: one request's time by difference (embedded\n"
    "                     append, served server info without storage, served append, in\n"
    "                     turns); curve: one, eight, pipelined, batch and drain without\n"
    "                     and with CURVE, in turns\n"
    "  --json PATH        write results as JSON (one result per line) to PATH\n"
    "  --dir DIR          where to create the logs (default a temporary directory)\n"
    "  --quick            1 s bounds, 20k drain events, 2 s latency runs: a smoke run\n"
    "  --http-load        each daemon also serves HTTP (--http) while a thread here does\n"
    "                     every second what an open dashboard and a Prometheus scraping\n"
    "                     every second do: GET /api/overview, /api/series, /api/workers,\n"
    "                     /metrics\n"
    "  --only httpcost    (not in the default set) the daemon's CPU time (/proc/PID/stat)\n"
    "                     per pipelined append, per /metrics scrape and per dashboard\n"
    "                     refresh on a log of 3 topics and 6 groups, and the throughput\n"
    "                     ratio they imply for a CPU-bound daemon scraped and watched\n"
    "                     once a second\n";

static bench_events evs;
static double seconds = 5, latency_seconds = 5;
static double rate = 2000;
static uint64_t drain_events = 200000;
static uint32_t flush_ms; /* embedded latency run: background flush interval, 0 = default */
static const char *only;
static char root[4096];
static bench_out out;
static int run_no;
static double one_client_sync; /* events/s of remote_append_1client in sync mode */
/* CURVE on the daemons started from now on and their clients (the curve workload). */
static int use_curve;
static char srv_pub[41], srv_sec[41], cli_pub[41], cli_sec[41];
static const char *remote_name(void) { return use_curve ? "engram-remote-curve" : "engram-remote"; }
static int http_load;  /* --http-load */
static int http_serve; /* the httpcost workload: the daemon serves HTTP, nobody polls it */

/* ---------------------------------------------------------------------------------
 * --http-load: the dashboard's and Prometheus's requests, once a second each.
 * ------------------------------------------------------------------------------ */
static int http_port;
static pthread_t scraper;
static _Atomic int scraper_stop;
static _Atomic uint64_t scrapes, scrape_bytes;

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof sa;
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) ||
      getsockname(fd, (struct sockaddr *)&sa, &len))
    bench_die("no free port: %s", strerror(errno));
  close(fd);
  return ntohs(sa.sin_port);
}

static void http_get(const char *path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)http_port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (fd < 0) return;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
    char req[512], buf[65536];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    if (write(fd, req, (size_t)n) == n) {
      ssize_t k;
      while ((k = read(fd, buf, sizeof buf)) > 0) scrape_bytes += (uint64_t)k;
      scrapes++;
    }
  }
  close(fd);
}

static void *scraper_main(void *arg) {
  (void)arg;
  while (!scraper_stop) {
    int64_t next = bench_now_ns() + 1000000000;
    http_get("/metrics");
    http_get("/api/overview");
    http_get("/api/series?topic=memory&group=workers");
    http_get("/api/workers");
    while (!scraper_stop && bench_now_ns() < next) bench_sleep_until_ns(bench_now_ns() + 20000000);
  }
  return NULL;
}

static int wanted(const char *name) {
  if (!only) return 1;
  size_t n = strlen(name);
  for (const char *p = only; (p = strstr(p, name)); p += n)
    if ((p == only || p[-1] == ',') && (p[n] == 0 || p[n] == ',')) return 1;
  return 0;
}

static void emit(bench_result *r) {
  if (http_load) {
    size_t n = strlen(r->note);
    snprintf(r->note + n, sizeof r->note - n,
             "; with the dashboard and /metrics polled every second");
  }
  bench_table_row(r);
  bench_out_add(&out, r);
}

static const char *dname(engram_durability d) { return bench_durability_name(d); }

/* ---------------------------------------------------------------------------------
 * The daemon, in a child process, on a fresh log.
 * ------------------------------------------------------------------------------ */
typedef struct daemon_proc {
  pid_t pid;
  char dir[4200];
  char ep[4300];
} daemon_proc;

static void daemon_start(daemon_proc *d, engram_durability dur, int prefill) {
  run_no++;
  if (http_load || http_serve) http_port = free_port();
  snprintf(d->dir, sizeof d->dir, "%s/log-%d", root, run_no);
  snprintf(d->ep, sizeof d->ep, "ipc://%s/req-%d.ipc", root, run_no);
  if (prefill) {
    /* Prefilled embedded before the daemon starts: the drain measures consumers only. */
    engram_options o = {.durability = ENGRAM_DURABILITY_ASYNC};
    engram *log = NULL;
    bench_engram_check(NULL, engram_open(d->dir, &o, &log), "open");
    bench_engram_check(log, engram_topic_create(log, "memory", NULL), "topic create");
    enum { FILL = 1000 };
    engram_event batch[FILL];
    uint64_t offs[FILL];
    for (uint64_t n = 0; n < (uint64_t)prefill; n += FILL) {
      size_t k = (uint64_t)prefill - n < FILL ? (size_t)((uint64_t)prefill - n) : FILL;
      for (size_t i = 0; i < k; i++) batch[i] = bench_engram_event(bench_event_at(&evs, n + i));
      bench_engram_check(log, engram_append_batch(log, "memory", batch, k, offs, NULL), "prefill");
    }
    bench_engram_check(log, engram_sync(log), "sync");
    engram_close(log);
  }
  fflush(stdout);
  d->pid = fork();
  if (d->pid < 0) bench_die("fork: %s", strerror(errno));
  if (d->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    char logf[4400];
    snprintf(logf, sizeof logf, "%s.log", d->dir);
    if (!freopen(logf, "w", stderr)) _exit(3);
    engram_serve_options so = {.listen = d->ep, .durability = dur};
    const char *allow[1] = {cli_pub};
    if (use_curve) {
      so.secret_key = srv_sec;
      so.public_key = srv_pub;
      so.allow_keys = allow;
      so.n_allow_keys = 1;
    }
    char http[64];
    snprintf(http, sizeof http, "127.0.0.1:%d", http_port);
    if (http_load || http_serve) so.http = http;
    _exit(engram_serve(d->dir, &so) ? 1 : 0);
  }
  /* Ready when it answers. */
  for (int i = 0; i < 500; i++) {
    engram_connect_options o = {.timeout_ms = 200};
    if (use_curve) {
      o.server_key = srv_pub;
      o.public_key = cli_pub;
      o.secret_key = cli_sec;
    }
    engram *log = NULL;
    if (engram_connect(d->ep, &o, &log) == 0) {
      if (!prefill) {
        int rc = engram_topic_create(log, "memory", NULL);
        if (rc && rc != ENGRAM_EEXIST) bench_engram_check(log, rc, "topic create");
      }
      engram_close(log);
      if (http_load) {
        scraper_stop = 0;
        if (pthread_create(&scraper, NULL, scraper_main, NULL)) bench_die("scraper thread");
      }
      return;
    }
    bench_sleep_until_ns(bench_now_ns() + 10000000);
  }
  bench_die("the daemon at %s did not come up (see %s.log)", d->ep, d->dir);
}

static void daemon_stop(daemon_proc *d) {
  if (http_load) {
    scraper_stop = 1;
    pthread_join(scraper, NULL);
  }
  kill(d->pid, SIGTERM);
  int st;
  waitpid(d->pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st))
    fprintf(stderr, "bench_net: the daemon exited badly (%d)\n", st);
  bench_rmrf(d->dir);
}

static engram *client(const char *ep, uint32_t window) {
  engram_connect_options o = {.timeout_ms = 30000, .pipeline_window = window};
  if (use_curve) {
    o.server_key = srv_pub;
    o.public_key = cli_pub;
    o.secret_key = cli_sec;
  }
  engram *log = NULL;
  bench_engram_check(NULL, engram_connect(ep, &o, &log), "connect");
  return log;
}

/* ---------------------------------------------------------------------------------
 * Remote appends, one event per request.
 * ------------------------------------------------------------------------------ */
typedef struct appender {
  const char *ep;
  int id, nthreads;
  bench_bound b;
  uint64_t n, bytes;
  bench_samples lat;
  pthread_barrier_t *start;
} appender;

static void *append_thread(void *arg) {
  appender *a = arg;
  engram *log = client(a->ep, 0);
  pthread_barrier_wait(a->start);
  a->b = bench_bound_make(seconds, 0);
  uint64_t i = (uint64_t)a->id * 7919;
  while (!bench_bound_done(&a->b, a->n)) {
    const bench_event *e = bench_event_at(&evs, i++);
    engram_event ev = bench_engram_event(e);
    int64_t t0 = bench_now_ns();
    bench_engram_check(log, engram_append(log, "memory", &ev, NULL, NULL), "append");
    bench_samples_add(&a->lat, bench_now_ns() - t0);
    a->n++;
    a->bytes += e->payload_len;
  }
  a->b.end_ns = bench_now_ns();
  engram_close(log);
  return NULL;
}

static void remote_appends(engram_durability dur, int nthreads) {
  daemon_proc d;
  daemon_start(&d, dur, 0);
  appender *a = calloc((size_t)nthreads, sizeof *a);
  pthread_t *t = calloc((size_t)nthreads, sizeof *t);
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, (unsigned)nthreads);
  for (int i = 0; i < nthreads; i++) {
    a[i] = (appender){.ep = d.ep, .id = i, .nthreads = nthreads, .start = &start};
    pthread_create(&t[i], NULL, append_thread, &a[i]);
  }
  uint64_t n = 0, bytes = 0;
  int64_t t0 = INT64_MAX, t1 = 0;
  bench_samples all = {0};
  for (int i = 0; i < nthreads; i++) {
    pthread_join(t[i], NULL);
    n += a[i].n;
    bytes += a[i].bytes;
    if (a[i].b.start_ns < t0) t0 = a[i].b.start_ns;
    if (a[i].b.end_ns > t1) t1 = a[i].b.end_ns;
    for (size_t k = 0; k < a[i].lat.n; k++) bench_samples_add(&all, a[i].lat.v[k]);
    bench_samples_free(&a[i].lat);
  }
  daemon_stop(&d);
  bench_result r;
  char wl[64];
  snprintf(wl, sizeof wl, nthreads == 1 ? "remote_append_1client" : "remote_append_%dclients",
           nthreads);
  bench_result_init(&r, wl, remote_name(), dname(dur));
  bench_result_rate(&r, n, (double)(t1 - t0) / 1e9, bytes);
  r.p50_us = (double)bench_samples_pct(&all, 50) / 1e3;
  r.p99_us = (double)bench_samples_pct(&all, 99) / 1e3;
  r.p999_us = (double)bench_samples_pct(&all, 99.9) / 1e3;
  if (nthreads == 1 && dur == ENGRAM_DURABILITY_SYNC) one_client_sync = r.events_per_s;
  if (nthreads > 1 && dur == ENGRAM_DURABILITY_SYNC && one_client_sync > 0)
    bench_result_ratio(&r, one_client_sync, "remote_append_1client_sync", 6);
  bench_result_note(&r, "%d client%s, each its own connection, one event per request and reply",
                    nthreads, nthreads > 1 ? "s" : "");
  emit(&r);
  bench_samples_free(&all);
  pthread_barrier_destroy(&start);
  free(a);
  free(t);
}

/* ---------------------------------------------------------------------------------
 * Pipelined and batched appends from one client.
 * ------------------------------------------------------------------------------ */
static _Atomic uint64_t acked;
static void on_ack(void *ctx, int rc, uint64_t off, int dup) {
  (void)ctx;
  (void)off;
  (void)dup;
  if (rc) bench_die("pipelined append failed: %s", engram_errname(rc));
  acked++;
}

static void pipelined(engram_durability dur) {
  daemon_proc d;
  daemon_start(&d, dur, 0);
  engram *log = client(d.ep, 1024);
  acked = 0;
  uint64_t n = 0, bytes = 0;
  bench_bound b = bench_bound_make(seconds, 0);
  while (!bench_bound_done(&b, n)) {
    const bench_event *e = bench_event_at(&evs, n);
    engram_event ev = bench_engram_event(e);
    bench_engram_check(log, engram_append_async(log, "memory", &ev, on_ack, NULL), "append_async");
    n++;
    bytes += e->payload_len;
  }
  bench_engram_check(log, engram_append_wait(log), "append_wait");
  double s = (double)(bench_now_ns() - b.start_ns) / 1e9;
  if (acked != n)
    bench_die("pipelined: %llu acknowledged of %llu", (unsigned long long)acked,
              (unsigned long long)n);
  engram_close(log);
  daemon_stop(&d);
  bench_result r;
  bench_result_init(&r, "remote_append_pipelined", remote_name(), dname(dur));
  bench_result_rate(&r, n, s, bytes);
  if (dur == ENGRAM_DURABILITY_ASYNC) bench_result_target_rate(&r, 100000);
  bench_result_note(&r,
                    "one client, engram_append_async with a window of 1024, one event per request");
  emit(&r);
}

static void batched(engram_durability dur) {
  daemon_proc d;
  daemon_start(&d, dur, 0);
  engram *log = client(d.ep, 0);
  enum { B = 100 };
  engram_event batch[B];
  uint64_t offs[B], n = 0, bytes = 0;
  bench_bound b = bench_bound_make(seconds, 0);
  while (!bench_bound_done(&b, n)) {
    for (int i = 0; i < B; i++) {
      const bench_event *e = bench_event_at(&evs, n + (uint64_t)i);
      batch[i] = bench_engram_event(e);
      bytes += e->payload_len;
    }
    bench_engram_check(log, engram_append_batch(log, "memory", batch, B, offs, NULL),
                       "append_batch");
    n += B;
  }
  double s = (double)(bench_now_ns() - b.start_ns) / 1e9;
  engram_close(log);
  daemon_stop(&d);
  bench_result r;
  bench_result_init(&r, "remote_append_batch100", remote_name(), dname(dur));
  bench_result_rate(&r, n, s, bytes);
  bench_result_note(&r, "one client, 100 events per engram_append_batch request");
  emit(&r);
}

/* ---------------------------------------------------------------------------------
 * httpcost: what HTTP costs the daemon, in its own CPU time rather than in throughput
 * ratios, which the noise of a shared machine hides (docs/benchmarks.md).
 * ------------------------------------------------------------------------------ */
/* The process's user + system CPU time in seconds (/proc/PID/stat utime, stime). */
static double proc_cpu_s(pid_t pid) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) bench_die("open %s: %s", path, strerror(errno));
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  unsigned long long ut = 0, st = 0;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    bench_die("cannot parse %s", path);
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds the daemon used while fn ran, less its idle use over that time. */
static double cpu_of(pid_t pid, double idle_per_s, void (*fn)(void *), void *arg, double *wall_s) {
  double c0 = proc_cpu_s(pid);
  int64_t t0 = bench_now_ns();
  fn(arg);
  *wall_s = (double)(bench_now_ns() - t0) / 1e9;
  double used = proc_cpu_s(pid) - c0 - idle_per_s * *wall_s;
  return used > 0 ? used : 0;
}

enum { HC_SCRAPES = 300, HC_REFRESHES = 100, HC_TOPICS = 3, HC_GROUPS = 2 };

static void hc_scrapes(void *arg) {
  (void)arg;
  for (int i = 0; i < HC_SCRAPES; i++) http_get("/metrics");
}

/* One refresh of an open dashboard: the overview, then one series per group's sparkline. */
static void hc_refreshes(void *arg) {
  (void)arg;
  for (int i = 0; i < HC_REFRESHES; i++) {
    http_get("/api/overview");
    for (int t = 0; t < HC_TOPICS; t++)
      for (int g = 0; g < HC_GROUPS; g++) {
        char path[128];
        snprintf(path, sizeof path, "/api/series?topic=t%d&group=g%d", t, g);
        http_get(path);
      }
  }
}

struct hc_appends {
  const char *ep;
  uint64_t n;
};
static void hc_append(void *arg) {
  struct hc_appends *a = arg;
  engram *log = client(a->ep, 1024);
  acked = 0;
  bench_bound b = bench_bound_make(seconds, 0);
  while (!bench_bound_done(&b, a->n)) {
    engram_event ev = bench_engram_event(bench_event_at(&evs, a->n));
    bench_engram_check(log, engram_append_async(log, "t0", &ev, on_ack, NULL), "append_async");
    a->n++;
  }
  bench_engram_check(log, engram_append_wait(log), "append_wait");
  engram_close(log);
}

static void http_cost(engram_durability dur) {
  http_serve = 1;
  daemon_proc d;
  daemon_start(&d, dur, 0);
  http_serve = 0;
  /* A log like the dashboard's usual one: 3 topics, 2 groups each with some in flight,
   * a worker per group. */
  engram *log = client(d.ep, 0);
  for (int t = 0; t < HC_TOPICS; t++) {
    char topic[16];
    snprintf(topic, sizeof topic, "t%d", t);
    int rc = engram_topic_create(log, topic, NULL);
    if (rc && rc != ENGRAM_EEXIST) bench_engram_check(log, rc, "topic create");
    for (int i = 0; i < 200; i++) {
      engram_event ev = bench_engram_event(bench_event_at(&evs, (uint64_t)i));
      bench_engram_check(log, engram_append(log, topic, &ev, NULL, NULL), "append");
    }
    for (int g = 0; g < HC_GROUPS; g++) {
      char group[16], consumer[16];
      snprintf(group, sizeof group, "g%d", g);
      snprintf(consumer, sizeof consumer, "w%d%d", t, g);
      bench_engram_check(log, engram_group_create(log, topic, group, NULL), "group create");
      engram_batch *bt = NULL;
      bench_engram_check(log, engram_fetch(log, topic, group, consumer, 50, 0, &bt), "fetch");
      for (size_t i = 0; i < bt->count / 2; i++)
        bench_engram_check(log, engram_ack(log, topic, group, bt->events[i].offset, 1, NULL, 0),
                           "ack");
      engram_batch_free(bt);
    }
  }
  engram_close(log);
  /* Idle: the sampler's listing once a second, nothing else. */
  double c0 = proc_cpu_s(d.pid);
  int64_t t0 = bench_now_ns();
  bench_sleep_until_ns(t0 + 3000000000ll);
  double idle = (proc_cpu_s(d.pid) - c0) / ((double)(bench_now_ns() - t0) / 1e9);
  struct hc_appends ap = {d.ep, 0};
  double wa, ws, wr;
  double cpu_a = cpu_of(d.pid, idle, hc_append, &ap, &wa);
  double cpu_s = cpu_of(d.pid, idle, hc_scrapes, NULL, &ws);
  double cpu_r = cpu_of(d.pid, idle, hc_refreshes, NULL, &wr);
  daemon_stop(&d);
  double per_append = cpu_a / (double)ap.n, per_scrape = cpu_s / HC_SCRAPES,
         per_refresh = cpu_r / HC_REFRESHES, tput = (double)ap.n / wa;
  /* A daemon bound by CPU at `tput` appends/s spends tput * per_append CPU-s a second; a
   * scrape and a dashboard refresh every second take theirs from it. */
  double ratio = 1 - (per_scrape + per_refresh) / (tput * per_append);
  bench_result r;
  bench_result_init(&r, "http_cost_cpu", remote_name(), dname(dur));
  bench_result_rate(&r, ap.n, wa, 0);
  r.ratio = ratio;
  snprintf(r.ratio_to, sizeof r.ratio_to, "no HTTP (from CPU time)");
  r.target = 0.95;
  snprintf(r.target_text, sizeof r.target_text, "ratio >= 0.95 x no HTTP");
  r.met = ratio >= 0.95;
  bench_result_note(&r,
                    "daemon CPU: %.1f us/append, %.0f us/scrape of /metrics, %.0f us/dashboard "
                    "refresh (overview + 6 series), idle %.1f ms/s; one scrape + one refresh = "
                    "%.0f appends",
                    per_append * 1e6, per_scrape * 1e6, per_refresh * 1e6, idle * 1e3,
                    (per_scrape + per_refresh) / per_append);
  snprintf(r.extra, sizeof r.extra,
           "\"cpu_us_per_append\": %.3f, \"cpu_us_per_scrape\": %.1f, \"cpu_us_per_refresh\": "
           "%.1f, \"idle_cpu_ms_per_s\": %.2f, \"scrapes\": %d, \"refreshes\": %d, "
           "\"scrape_wall_ms\": %.1f, \"refresh_wall_ms\": %.1f",
           per_append * 1e6, per_scrape * 1e6, per_refresh * 1e6, idle * 1e3, HC_SCRAPES,
           HC_REFRESHES, ws * 1e3, wr * 1e3);
  emit(&r);
}

/* ---------------------------------------------------------------------------------
 * Remote group drain.
 * ------------------------------------------------------------------------------ */
typedef struct drainer {
  const char *ep;
  int id;
  int ack_fetch; /* settle each batch with the fetch of the next (engram_ack_fetch) */
  uint64_t acked, rounds;
  pthread_barrier_t *start;
  int64_t deadline;
  _Atomic uint64_t *total;
} drainer;

static void *drain_thread(void *arg) {
  drainer *c = arg;
  engram *log = client(c->ep, 0);
  char name[32];
  snprintf(name, sizeof name, "worker-%d", c->id);
  engram_ack_item items[100];
  size_t held = 0; /* ack_fetch: fetched, acked by the next call */
  pthread_barrier_wait(c->start);
  while (*c->total < drain_events && bench_now_ns() < c->deadline) {
    engram_batch *b = NULL;
    if (c->ack_fetch)
      bench_engram_check(
          log, engram_ack_fetch(log, "memory", "workers", name, items, held, NULL, 100, 50, &b),
          "ack_fetch");
    else
      bench_engram_check(log, engram_fetch(log, "memory", "workers", name, 100, 50, &b), "fetch");
    c->rounds++;
    c->acked += held;
    *c->total += held;
    held = 0;
    size_t k = b->count;
    for (size_t i = 0; i < k; i++)
      items[i] = (engram_ack_item){b->events[i].offset, b->events[i].attempt, NULL, 0};
    engram_batch_free(b);
    if (k && c->ack_fetch) {
      held = k;
    } else if (k) {
      bench_engram_check(log, engram_ack_many(log, "memory", "workers", items, k, NULL),
                         "ack_many");
      c->acked += k;
      *c->total += k;
    }
  }
  if (held) {
    bench_engram_check(log, engram_ack_many(log, "memory", "workers", items, held, NULL),
                       "ack_many");
    c->acked += held;
    *c->total += held;
  }
  engram_close(log);
  return NULL;
}

static void group_drain(engram_durability dur, int consumers, int ack_fetch) {
  daemon_proc d;
  daemon_start(&d, dur, (int)drain_events);
  engram *admin = client(d.ep, 0);
  bench_engram_check(admin, engram_group_create(admin, "memory", "workers", NULL), "group create");
  engram_server_info before, after;
  bench_engram_check(admin, engram_server_info_get(admin, &before), "server info");
  _Atomic uint64_t total = 0;
  drainer *c = calloc((size_t)consumers, sizeof *c);
  pthread_t *t = calloc((size_t)consumers, sizeof *t);
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, (unsigned)consumers + 1);
  int64_t deadline = bench_now_ns() + (int64_t)(seconds * 6 * 1e9);
  for (int i = 0; i < consumers; i++) {
    c[i] = (drainer){.ep = d.ep,
                     .id = i,
                     .ack_fetch = ack_fetch,
                     .start = &start,
                     .deadline = deadline,
                     .total = &total};
    pthread_create(&t[i], NULL, drain_thread, &c[i]);
  }
  pthread_barrier_wait(&start);
  int64_t t0 = bench_now_ns();
  uint64_t rounds = 0;
  for (int i = 0; i < consumers; i++) {
    pthread_join(t[i], NULL);
    rounds += c[i].rounds;
  }
  double s = (double)(bench_now_ns() - t0) / 1e9;
  engram_group_info gi;
  bench_engram_check(admin, engram_group_info_get(admin, "memory", "workers", &gi), "group info");
  bench_engram_check(admin, engram_server_info_get(admin, &after), "server info");
  engram_close(admin);
  daemon_stop(&d);
  bench_result r;
  bench_result_init(&r, ack_fetch ? "remote_group_drain_ackfetch" : "remote_group_drain",
                    remote_name(), dname(dur));
  bench_result_rate(&r, total, s, 0);
  uint64_t commits = after.commits - before.commits, flushes = after.flushes - before.flushes;
  snprintf(r.extra, sizeof r.extra,
           "\"consumers\": %d, \"acked\": %llu, \"redelivered\": %llu, \"rounds\": %llu, "
           "\"daemon_commits\": %llu, \"daemon_flushes\": %llu, \"commits_per_round\": %.2f, "
           "\"flushes_per_round\": %.2f",
           consumers, (unsigned long long)gi.acked, (unsigned long long)gi.redelivered,
           (unsigned long long)rounds, (unsigned long long)commits, (unsigned long long)flushes,
           rounds ? (double)commits / (double)rounds : 0.0,
           rounds ? (double)flushes / (double)rounds : 0.0);
  bench_result_note(&r, "%d remote consumers, %s per round, %llu prefilled events", consumers,
                    ack_fetch ? "engram_ack_fetch of 100 (acks of the last batch with the fetch)"
                              : "fetch 100 + ack_many",
                    (unsigned long long)drain_events);
  emit(&r);
  pthread_barrier_destroy(&start);
  free(c);
  free(t);
}

/* ---------------------------------------------------------------------------------
 * End-to-end latency: append call -> a waiting worker holds the event.
 * ------------------------------------------------------------------------------ */
#define MAX_LAT 200000
typedef struct lat_shared {
  int64_t sent[MAX_LAT]; /* monotonic ns of each append call, by sequence */
  int64_t got[MAX_LAT];  /* monotonic ns the worker held it */
  _Atomic int ready;     /* consumer waiting */
  _Atomic int done;      /* producer finished */
  uint64_t n;
  int err;
  char msg[256];
} lat_shared;

/* Acks leave from a thread of their own, so that the worker is back in fetch at once:
 * the latency measured is that of a worker already waiting. */
typedef struct ackq {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  engram_ack_item items[MAX_LAT];
  size_t head, tail;
  int stop;
  engram *log;
} ackq;

static void *acker(void *arg) {
  ackq *q = arg;
  engram_ack_item batch[256];
  pthread_mutex_lock(&q->mu);
  for (;;) {
    while (q->head == q->tail && !q->stop) pthread_cond_wait(&q->cv, &q->mu);
    if (q->head == q->tail) break;
    size_t k = 0;
    while (q->head != q->tail && k < 256) batch[k++] = q->items[q->head++ % MAX_LAT];
    pthread_mutex_unlock(&q->mu);
    engram_ack_many(q->log, "memory", "workers", batch, k, NULL);
    pthread_mutex_lock(&q->mu);
  }
  pthread_mutex_unlock(&q->mu);
  return NULL;
}

static engram *lat_open(const char *where, int remote, lat_shared *sh, const char *who) {
  engram *log = NULL;
  int rc;
  if (remote) {
    engram_connect_options o = {.timeout_ms = 30000};
    rc = engram_connect(where, &o, &log);
  } else {
    engram_options o = {.durability = ENGRAM_DURABILITY_ASYNC, .flush_interval_ms = flush_ms};
    rc = engram_open(where, &o, &log);
  }
  if (rc) snprintf(sh->msg, sizeof sh->msg, "%s open: %s", who, engram_errmsg(NULL));
  return rc ? NULL : log;
}

/* The worker: waits in fetch and notes when it holds each event; another thread acks. */
static int lat_consumer(lat_shared *sh, const char *where, int remote) {
  engram *log = lat_open(where, remote, sh, "consumer");
  if (!log) return 1;
  static ackq q = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  /* Embedded: one handle per process, shared; remote: a connection of its own. */
  q.log = remote ? lat_open(where, remote, sh, "acker") : log;
  if (!q.log) return 1;
  pthread_t t;
  pthread_create(&t, NULL, acker, &q);
  uint64_t seen = 0;
  /* Prime the connection and the wait path once before the producer starts. */
  engram_batch *b = NULL;
  engram_fetch(log, "memory", "workers", "worker", 1, 0, &b);
  engram_batch_free(b);
  sh->ready = 1;
  int rc = 0;
  while (!sh->done || seen < sh->n) {
    b = NULL;
    rc = engram_fetch(log, "memory", "workers", "worker", 256, 200, &b);
    int64_t now = bench_now_ns();
    if (rc) {
      snprintf(sh->msg, sizeof sh->msg, "fetch: %s", engram_errmsg(log));
      break;
    }
    size_t k = b->count;
    pthread_mutex_lock(&q.mu);
    for (size_t i = 0; i < k; i++) {
      uint64_t seq = b->events[i].offset - 1; /* offsets are dense: offset = sequence + 1 */
      if (seq < MAX_LAT) sh->got[seq] = now;
      q.items[q.tail++ % MAX_LAT] =
          (engram_ack_item){b->events[i].offset, b->events[i].attempt, NULL, 0};
    }
    pthread_cond_signal(&q.cv);
    pthread_mutex_unlock(&q.mu);
    engram_batch_free(b);
    seen += k;
  }
  pthread_mutex_lock(&q.mu);
  q.stop = 1;
  pthread_cond_signal(&q.cv);
  pthread_mutex_unlock(&q.mu);
  pthread_join(t, NULL);
  if (q.log != log) engram_close(q.log);
  engram_close(log);
  return rc ? 1 : 0;
}

static int lat_producer(lat_shared *sh, const char *where, int remote) {
  engram *log = lat_open(where, remote, sh, "producer");
  if (!log) return 1;
  int rc;
  while (!sh->ready) bench_sleep_until_ns(bench_now_ns() + 1000000);
  bench_sleep_until_ns(bench_now_ns() + 100000000);
  uint64_t total = (uint64_t)(rate * latency_seconds);
  if (total > MAX_LAT) total = MAX_LAT;
  int64_t start = bench_now_ns(), gap = (int64_t)(1e9 / rate);
  for (uint64_t i = 0; i < total; i++) {
    bench_sleep_until_ns(start + (int64_t)i * gap);
    engram_event ev = bench_engram_event(bench_event_at(&evs, i));
    sh->sent[i] = bench_now_ns();
    uint64_t off = 0;
    if ((rc = engram_append(log, "memory", &ev, &off, NULL)) || off != i + 1) {
      snprintf(sh->msg, sizeof sh->msg, "append: %s (offset %llu)", engram_errmsg(log),
               (unsigned long long)off);
      sh->n = i;
      sh->done = 1;
      engram_close(log);
      return 1;
    }
  }
  sh->n = total;
  sh->done = 1;
  engram_close(log);
  return 0;
}

static void latency(int remote) {
  daemon_proc d = {0};
  char dir[4300];
  if (remote) {
    daemon_start(&d, ENGRAM_DURABILITY_ASYNC, 0);
    engram *admin = client(d.ep, 0);
    bench_engram_check(admin, engram_group_create(admin, "memory", "workers", NULL),
                       "group create");
    engram_close(admin);
  } else {
    snprintf(dir, sizeof dir, "%s/lat-%d", root, ++run_no);
    engram_options o = {.durability = ENGRAM_DURABILITY_ASYNC};
    engram *log = NULL;
    bench_engram_check(NULL, engram_open(dir, &o, &log), "open");
    bench_engram_check(log, engram_topic_create(log, "memory", NULL), "topic create");
    bench_engram_check(log, engram_group_create(log, "memory", "workers", NULL), "group create");
    engram_close(log);
  }
  const char *where = remote ? d.ep : dir;
  lat_shared *sh =
      mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (sh == MAP_FAILED) bench_die("mmap: %s", strerror(errno));
  memset(sh, 0, sizeof *sh);
  fflush(stdout);
  pid_t pc = fork();
  if (pc == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    _exit(lat_consumer(sh, where, remote));
  }
  pid_t pp = fork();
  if (pp == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    _exit(lat_producer(sh, where, remote));
  }
  int st1, st2;
  waitpid(pp, &st1, 0);
  waitpid(pc, &st2, 0);
  if (!WIFEXITED(st1) || WEXITSTATUS(st1) || !WIFEXITED(st2) || WEXITSTATUS(st2))
    bench_die("latency run failed: %s", sh->msg);
  bench_samples s = {0};
  uint64_t warm = sh->n / 20; /* the first 5% warm caches and connections */
  for (uint64_t i = warm; i < sh->n; i++)
    if (sh->got[i]) bench_samples_add(&s, sh->got[i] - sh->sent[i]);
  bench_result r;
  bench_result_init(&r, "e2e_latency_2000eps", remote ? "engram-remote" : "engram", "async");
  bench_result_rate(&r, s.n, latency_seconds, 0);
  r.events_per_s = rate;
  r.p50_us = (double)bench_samples_pct(&s, 50) / 1e3;
  r.p99_us = (double)bench_samples_pct(&s, 99) / 1e3;
  r.p999_us = (double)bench_samples_pct(&s, 99.9) / 1e3;
  r.met = r.p50_us <= 100 && r.p99_us <= 250 && r.p999_us <= 1000;
  snprintf(r.target_text, sizeof r.target_text, "p50 <= 100 us, p99 <= 250 us, p99.9 <= 1 ms");
  snprintf(r.extra, sizeof r.extra, "\"rate\": %.0f, \"samples\": %zu, \"max_us\": %.1f", rate, s.n,
           (double)bench_samples_pct(&s, 100) / 1e3);
  bench_result_note(
      &r, remote ? "producer and worker are remote clients (separate processes); worker long-polls "
                   "fetch (acks leave from another thread)"
                 : "producer and worker are separate processes on one directory; the worker "
                   "sleeps in fetch until the commit's notification wakes it");
  emit(&r);
  bench_samples_free(&s);
  munmap(sh, sizeof *sh);
  if (remote)
    daemon_stop(&d);
  else
    bench_rmrf(dir);
}

/* ---------------------------------------------------------------------------------
 * Where the time of one served request goes: by difference, sampled in turns in one
 * loop (so drift on a shared machine hits all three alike). An embedded append is the
 * storage's share; a remote engram_server_info_get (no storage) is the transport's and
 * the daemon's hops and codec; a remote append is both plus the append's own path.
 * ------------------------------------------------------------------------------ */
static void hops(engram_durability dur) {
  daemon_proc d;
  daemon_start(&d, dur, 0);
  engram *r = client(d.ep, 0);
  char edir[4300];
  snprintf(edir, sizeof edir, "%s/hops-embedded-%d", root, run_no);
  engram_options eo = {.durability = dur};
  engram *e = NULL;
  bench_engram_check(NULL, engram_open(edir, &eo, &e), "open");
  bench_engram_check(e, engram_topic_create(e, "memory", NULL), "topic create");
  bench_samples s_info = {0}, s_rapp = {0}, s_eapp = {0};
  bench_bound b = bench_bound_make(seconds, 0);
  uint64_t n = 0;
  while (!bench_bound_done(&b, n)) {
    engram_event ev = bench_engram_event(bench_event_at(&evs, n));
    engram_server_info in;
    int64_t t0 = bench_now_ns();
    bench_engram_check(r, engram_server_info_get(r, &in), "server info");
    int64_t t1 = bench_now_ns();
    bench_engram_check(r, engram_append(r, "memory", &ev, NULL, NULL), "remote append");
    int64_t t2 = bench_now_ns();
    bench_engram_check(e, engram_append(e, "memory", &ev, NULL, NULL), "embedded append");
    int64_t t3 = bench_now_ns();
    bench_samples_add(&s_info, t1 - t0);
    bench_samples_add(&s_rapp, t2 - t1);
    bench_samples_add(&s_eapp, t3 - t2);
    n++;
  }
  engram_close(r);
  engram_close(e);
  daemon_stop(&d);
  bench_rmrf(edir);
  const char *names[3] = {"hops_embedded_append", "hops_remote_info", "hops_remote_append"};
  bench_samples *ss[3] = {&s_eapp, &s_info, &s_rapp};
  const char *notes[3] = {
      "the storage's share: an embedded append on its own log, in turns with the two below",
      "a served request without storage: transport, the daemon's hops, codec",
      "a served append: both of the above plus the append's own path (lane, batch, reply)"};
  for (int i = 0; i < 3; i++) {
    bench_result res;
    bench_result_init(&res, names[i], i ? "engram-remote" : "engram", dname(dur));
    bench_result_rate(&res, n, (double)(bench_now_ns() - b.start_ns) / 1e9, 0);
    res.p50_us = (double)bench_samples_pct(ss[i], 50) / 1e3;
    res.p99_us = (double)bench_samples_pct(ss[i], 99) / 1e3;
    res.p999_us = (double)bench_samples_pct(ss[i], 99.9) / 1e3;
    bench_result_note(&res, "%s", notes[i]);
    emit(&res);
    bench_samples_free(ss[i]);
  }
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
    } else if (!strcmp(a, "--latency-seconds") && v) {
      latency_seconds = bench_arg_double(v, "--latency-seconds");
      i++;
    } else if (!strcmp(a, "--rate") && v) {
      rate = bench_arg_double(v, "--rate");
      i++;
    } else if (!strcmp(a, "--drain-events") && v) {
      drain_events = (uint64_t)bench_arg_double(v, "--drain-events");
      i++;
    } else if (!strcmp(a, "--flush-ms") && v) {
      flush_ms = (uint32_t)bench_arg_double(v, "--flush-ms");
      i++;
    } else if (!strcmp(a, "--only") && v) {
      only = v;
      i++;
    } else if (!strcmp(a, "--dir") && v) {
      dir = v;
      i++;
    } else if (!strcmp(a, "--http-load")) {
      http_load = 1;
    } else if (!strcmp(a, "--quick")) {
      seconds = 1;
      latency_seconds = 2;
      drain_events = 20000;
    } else {
      fprintf(stderr, "bench_net: unknown or incomplete option %s\n%s", a, usage);
      return 2;
    }
  }
  if (seconds <= 0 || latency_seconds <= 0 || rate < 1 || rate > 100000 || drain_events < 100)
    bench_die("--seconds > 0, --latency-seconds > 0, --rate 1..100000, --drain-events >= 100");
  if (dir) {
    snprintf(root, sizeof root, "%s/bench-net.%d", dir, (int)getpid());
    if (mkdir(root, 0755)) bench_die("mkdir %s: %s", root, strerror(errno));
  } else if (bench_mkdtemp(root, sizeof root, "net")) {
    bench_die("cannot create a temporary directory: %s", strerror(errno));
  }
  if (bench_events_load(&evs)) bench_die("cannot load or generate events");
  char run_extra[256];
  snprintf(run_extra, sizeof run_extra, "\"seconds_per_workload\": %g, \"latency_rate\": %.0f",
           seconds, rate);
  if (bench_out_open(&out, json, "net", &evs, run_extra)) return 1;
  printf("engram %s bench_net: %zu distinct events from %s (payload p50 %zu B, p99 %zu B)\n",
         ENGRAM_VERSION_STRING, evs.n, evs.source, bench_events_size_pct(&evs, 50),
         bench_events_size_pct(&evs, 99));
  printf("daemons and logs in %s; each throughput workload bounded to %.1f s\n\n", root, seconds);
  bench_table_header();

  engram_durability both[2] = {ENGRAM_DURABILITY_SYNC, ENGRAM_DURABILITY_ASYNC};
  for (int k = 0; k < 2; k++) {
    if (wanted("one")) remote_appends(both[k], 1);
    if (wanted("eight")) remote_appends(both[k], 8);
  }
  for (int k = 0; k < 2; k++)
    if (wanted("pipelined")) pipelined(both[k]);
  for (int k = 0; k < 2; k++)
    if (wanted("batch")) batched(both[k]);
  for (int k = 0; k < 2; k++)
    if (wanted("drain")) {
      group_drain(both[k], 4, 0);
      group_drain(both[k], 4, 1);
    }
  if (wanted("latency")) {
    latency(0);
    latency(1);
  }
  for (int k = 0; k < 2; k++)
    if (wanted("hops")) hops(both[k]);
  for (int k = 0; k < 2; k++)
    if (only && wanted("httpcost")) http_cost(both[k]); /* only when asked */
  if (only && wanted("curve")) { /* only when asked: it runs ten workloads twice */
    /* The same rows without and with CURVE, in turns: its cost per row. */
    if (engram_keygen(srv_pub, srv_sec) || engram_keygen(cli_pub, cli_sec))
      bench_die("keygen: %s", engram_errmsg(NULL));
    for (int k = 0; k < 2; k++)
      for (use_curve = 0; use_curve < 2; use_curve++) {
        remote_appends(both[k], 1);
        remote_appends(both[k], 8);
        pipelined(both[k]);
        batched(both[k]);
        group_drain(both[k], 4, 0);
        group_drain(both[k], 4, 1);
      }
    use_curve = 0;
  }

  bench_out_close(&out);
  bench_rmrf(root);
  bench_events_free(&evs);
  if (json) printf("\nresults: %s\n", json);
  return 0;
}
