/* timing.c — clocks, bounds and percentiles for the benches. */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "bench.h"

int64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t bench_wall_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_sleep_until_ns(int64_t mono_ns) {
  struct timespec ts = {mono_ns / 1000000000, mono_ns % 1000000000};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

bench_bound bench_bound_make(double seconds, uint64_t max) {
  bench_bound b;
  b.start_ns = bench_now_ns();
  b.end_ns = b.start_ns + (int64_t)(seconds * 1e9);
  b.max = max ? max : UINT64_MAX;
  return b;
}

void bench_samples_add(bench_samples *s, int64_t ns) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 4096;
    int64_t *v = realloc(s->v, cap * sizeof *v);
    if (!v) return; /* a lost sample only thins the distribution */
    s->v = v;
    s->cap = cap;
  }
  s->v[s->n++] = ns;
  s->sorted = 0;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

int64_t bench_samples_pct(bench_samples *s, double p) {
  if (!s->n) return 0;
  if (!s->sorted) {
    qsort(s->v, s->n, sizeof *s->v, cmp_i64);
    s->sorted = 1;
  }
  /* Nearest rank: the smallest sample with at least p% of samples at or below it. */
  double rank = p / 100.0 * (double)s->n;
  size_t idx = rank <= 1 ? 0 : (size_t)(rank + 0.999999) - 1;
  if (idx >= s->n) idx = s->n - 1;
  return s->v[idx];
}

void bench_samples_free(bench_samples *s) {
  free(s->v);
  s->v = NULL;
  s->n = s->cap = 0;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

double bench_pct_double(double *v, size_t n, double p) {
  if (!n) return 0;
  qsort(v, n, sizeof *v, cmp_d);
  double rank = p / 100.0 * (double)n;
  size_t idx = rank <= 1 ? 0 : (size_t)(rank + 0.999999) - 1;
  if (idx >= n) idx = n - 1;
  return v[idx];
}

double bench_median(double *v, size_t n) {
  if (!n) return 0;
  qsort(v, n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
