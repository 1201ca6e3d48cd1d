/* bench_retention.c — what retention and key compaction cost appends: the append rate of
 * producer threads with retention (or key compaction) removing events in the background,
 * against the same without it, in interleaved rounds; and the longest time one slice
 * spends in its write transaction (the write lock it holds). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bench.h"
#include "common/engram_bench.h"

static const char *usage =
    "usage: bench_retention [options]\n"
    "  Append throughput of N producer threads (synced appends of memory events, group\n"
    "  committed) with retention running in the background under max_events, against\n"
    "  the same with no limit, in interleaved rounds; and the longest write-lock hold\n"
    "  of a retention slice. Targets: ratio >= 0.9, longest slice <= 5 ms. The same for\n"
    "  key compaction: a topic compacted by key (each append keeps the key index) over\n"
    "  `keep` keys, compacted in the background, against the plain topic.\n"
    "  --json PATH     write the result as one JSON line to PATH\n"
    "  --seconds S     time per configuration, split over the rounds (default 6)\n"
    "  --rounds N      interleaved rounds (default 3)\n"
    "  --threads N     producers (default 4)\n"
    "  --keep N        the max_events limit (default 20000)\n"
    "  --quick         2 s, 2 rounds\n";

static bench_events evs;
static double seconds = 6;
static int rounds = 3, threads = 4;
static uint64_t keep = 20000;

typedef struct run {
  engram *log;
  volatile int stop;
  int64_t longest_ns, longest_cpu_ns;
  uint64_t removed, slices;
  uint64_t passes, passes_over; /* compact calls, and those with a slice over 5 ms */
} run;

typedef struct producer {
  pthread_t th;
  run *r;
  int id;
  int64_t end_ns;
  uint64_t n;
} producer;

/* Every configuration appends the same events with the same keys: `keep` distinct ones,
 * so key compaction keeps the topic at about `keep` events, as retention does. */
static void *produce(void *arg) {
  producer *p = arg;
  uint64_t i = (uint64_t)p->id * 1000003;
  char key[32];
  while (bench_now_ns() < p->end_ns) {
    engram_event ev = bench_engram_event(bench_event_at(&evs, i));
    snprintf(key, sizeof key, "memory-%llu", (unsigned long long)(i++ % keep));
    ev.key = key;
    bench_engram_check(p->r->log, engram_append(p->r->log, "memory", &ev, NULL, NULL), "append");
    p->n++;
  }
  return NULL;
}

/* The background: a retention pass every 100 ms (the library's own runner makes one a
 * second; this is ten times as eager, so each pass has less to do but the slices come
 * more often). */
static void *retain(void *arg) {
  run *r = arg;
  while (!r->stop) {
    engram_compact_report rep;
    bench_engram_check(r->log, engram_compact(r->log, "memory", &rep), "compact");
    if (rep.max_slice_ns > r->longest_ns) r->longest_ns = rep.max_slice_ns;
    if (rep.max_slice_cpu_ns > r->longest_cpu_ns) r->longest_cpu_ns = rep.max_slice_cpu_ns;
    r->removed += rep.removed + rep.compacted;
    r->slices += rep.slices;
    r->passes++;
    if (rep.max_slice_ns > 5000000) r->passes_over++;
    bench_sleep_until_ns(bench_now_ns() + 100000000);
  }
  return NULL;
}

enum { PLAIN, RETENTION, KEYCOMP };

/* One round of one configuration: events appended per second. */
static double round_of(const char *root, int mode, run *r) {
  int with_retention = mode != PLAIN;
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/%d", root, mode);
  bench_rmrf(dir);
  engram_options o = {.maintenance_ms = ENGRAM_MAINTENANCE_OFF};
  memset(r, 0, sizeof *r);
  bench_engram_check(NULL, engram_open(dir, &o, &r->log), "open");
  engram_topic_config cfg = {.max_events = mode == RETENTION ? keep : 0,
                             .flags = mode == KEYCOMP ? ENGRAM_TOPIC_COMPACT_KEY : 0};
  bench_engram_check(r->log, engram_topic_create(r->log, "memory", &cfg), "topic create");
  /* Start over the limit, so retention has work from the first moment. */
  engram_event b[1000];
  uint64_t offs[1000];
  static char keys[1000][32];
  for (uint64_t n = 0; n < keep * 2; n += 1000) {
    for (int i = 0; i < 1000; i++) {
      b[i] = bench_engram_event(bench_event_at(&evs, n + (uint64_t)i));
      snprintf(keys[i], sizeof keys[i], "memory-%llu", (unsigned long long)((n + i) % keep));
      b[i].key = keys[i];
    }
    bench_engram_check(r->log, engram_append_batch(r->log, "memory", b, 1000, offs, NULL), "fill");
  }
  pthread_t bg;
  if (with_retention) pthread_create(&bg, NULL, retain, r);
  producer *p = calloc((size_t)threads, sizeof *p);
  int64_t start = bench_now_ns(), end = start + (int64_t)(seconds / rounds * 1e9);
  for (int i = 0; i < threads; i++) {
    p[i] = (producer){.r = r, .id = i, .end_ns = end};
    pthread_create(&p[i].th, NULL, produce, &p[i]);
  }
  uint64_t n = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(p[i].th, NULL);
    n += p[i].n;
  }
  double s = (double)(bench_now_ns() - start) / 1e9;
  r->stop = 1;
  if (with_retention) pthread_join(bg, NULL);
  free(p);
  engram_close(r->log);
  bench_rmrf(dir);
  return (double)n / s;
}

int main(int argc, char **argv) {
  const char *json = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json") && i + 1 < argc)
      json = argv[++i];
    else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
      seconds = atof(argv[++i]);
    else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
      rounds = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--keep") && i + 1 < argc)
      keep = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--quick")) {
      seconds = 2;
      rounds = 2;
    } else {
      fputs(usage, strcmp(argv[i], "--help") ? stderr : stdout);
      return strcmp(argv[i], "--help") ? 2 : 0;
    }
  }
  if (seconds <= 0 || rounds < 1 || threads < 1 || keep < 1000) {
    fputs(usage, stderr);
    return 2;
  }
  if (bench_events_load(&evs)) return 1;
  char root[4096];
  if (bench_mkdtemp(root, sizeof root, "bench_retention")) return 1;
  double off = 0, on = 0, kc = 0;
  int64_t longest = 0, longest_cpu = 0, kc_longest = 0, kc_longest_cpu = 0;
  uint64_t removed = 0, slices = 0, kc_removed = 0, kc_slices = 0;
  uint64_t passes = 0, over = 0, kc_passes = 0, kc_over = 0;
  for (int k = 0; k < rounds; k++) {
    run r;
    off += round_of(root, PLAIN, &r);
    on += round_of(root, RETENTION, &r);
    if (r.longest_ns > longest) longest = r.longest_ns;
    if (r.longest_cpu_ns > longest_cpu) longest_cpu = r.longest_cpu_ns;
    removed += r.removed;
    slices += r.slices;
    passes += r.passes;
    over += r.passes_over;
    kc += round_of(root, KEYCOMP, &r);
    if (r.longest_ns > kc_longest) kc_longest = r.longest_ns;
    if (r.longest_cpu_ns > kc_longest_cpu) kc_longest_cpu = r.longest_cpu_ns;
    kc_removed += r.removed;
    kc_slices += r.slices;
    kc_passes += r.passes;
    kc_over += r.passes_over;
  }
  off /= rounds;
  on /= rounds;
  kc /= rounds;
  double kc_ratio = off > 0 ? kc / off : 0;
  bench_rmrf(root);
  double ratio = off > 0 ? on / off : 0;
  printf(
      "appends/s, %d threads, sync: without retention %.0f, with retention %.0f: ratio %.2f "
      "(target >= 0.9)\n",
      threads, off, on, ratio);
  printf(
      "retention: %llu events removed in %llu slices; longest slice %.2f ms in its write "
      "transaction (target <= 5), of which at most %.2f ms on the CPU\n",
      (unsigned long long)removed, (unsigned long long)slices, longest / 1e6, longest_cpu / 1e6);
  printf("retention: %llu of %llu passes had a slice over 5 ms\n", (unsigned long long)over,
         (unsigned long long)passes);
  printf("appends/s, %d threads, sync: with key compaction %.0f: ratio %.2f (target >= 0.9)\n",
         threads, kc, kc_ratio);
  printf(
      "key compaction: %llu events removed in %llu slices; longest slice %.2f ms in its write "
      "transaction (target <= 5), of which at most %.2f ms on the CPU\n",
      (unsigned long long)kc_removed, (unsigned long long)kc_slices, kc_longest / 1e6,
      kc_longest_cpu / 1e6);
  printf("key compaction: %llu of %llu passes had a slice over 5 ms\n", (unsigned long long)kc_over,
         (unsigned long long)kc_passes);
  if (json) {
    FILE *f = fopen(json, "w");
    if (!f) return 1;
    fprintf(f,
            "{\"bench\":\"retention\",\"threads\":%d,\"keep\":%llu,\"appends_per_s_off\":%.0f,"
            "\"appends_per_s_on\":%.0f,\"ratio\":%.3f,\"removed\":%llu,\"slices\":%llu,"
            "\"longest_slice_ms\":%.3f,\"longest_slice_cpu_ms\":%.3f,"
            "\"appends_per_s_keycomp\":%.0f,\"ratio_keycomp\":%.3f,\"keycomp_removed\":%llu,"
            "\"keycomp_slices\":%llu,\"keycomp_longest_slice_ms\":%.3f,"
            "\"keycomp_longest_slice_cpu_ms\":%.3f,\"passes\":%llu,\"passes_over_5ms\":%llu,"
            "\"keycomp_passes\":%llu,\"keycomp_passes_over_5ms\":%llu,\"events\":\"%s\"}\n",
            threads, (unsigned long long)keep, off, on, ratio, (unsigned long long)removed,
            (unsigned long long)slices, longest / 1e6, longest_cpu / 1e6, kc, kc_ratio,
            (unsigned long long)kc_removed, (unsigned long long)kc_slices, kc_longest / 1e6,
            kc_longest_cpu / 1e6, (unsigned long long)passes, (unsigned long long)over,
            (unsigned long long)kc_passes, (unsigned long long)kc_over, evs.source);
    fclose(f);
  }
  bench_events_free(&evs);
  return 0;
}
