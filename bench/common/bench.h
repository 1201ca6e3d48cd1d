/* bench.h — what every bench program shares: memory events, clocks, percentiles, output. */
#ifndef ENGRAM_BENCH_H
#define ENGRAM_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Nothing here includes engram.h, so the peer clients (Redis, NATS) link the same code. */

/* ---------------------------------------------------------------------------------
 * Memory events: the real ones from ../shared/data/memory-events.jsonl when present, else
 * generated ones of the same shape and size spread (fixed seed: every run is identical).
 * ------------------------------------------------------------------------------ */
typedef struct bench_event {
  const char *type;    /* "memory.saved" | "memory.updated" | "memory.queried" */
  const char *key;     /* the memory_id */
  const char *payload; /* the whole JSON line, without its newline */
  size_t payload_len;
} bench_event;

typedef struct bench_events {
  bench_event *ev;
  size_t n;
  uint64_t bytes;   /* sum of payload_len */
  char source[512]; /* the file read, or "generator (seed ...)" */
  char *arena;      /* owns every string above */
} bench_events;

/* Loads the events. The file is looked for at $ENGRAM_BENCH_DATA (set it to "" to force
 * the generator), then ../shared/data/memory-events.jsonl relative to the current
 * directory and to the repository the executable was built in. Returns 0 or -1. */
int bench_events_load(bench_events *out);
/* Makes `n` events with the generator alone (used when the file is missing). */
int bench_events_generate(bench_events *out, size_t n);
void bench_events_free(bench_events *evs);
/* Event i of an endless stream cycling through the loaded events. */
static inline const bench_event *bench_event_at(const bench_events *evs, uint64_t i) {
  return &evs->ev[i % evs->n];
}
/* Payload size percentile of the loaded events (p in 0..100). */
size_t bench_events_size_pct(const bench_events *evs, double p);

/* ---------------------------------------------------------------------------------
 * Clocks and percentiles.
 * ------------------------------------------------------------------------------ */
int64_t bench_now_ns(void);  /* CLOCK_MONOTONIC */
int64_t bench_wall_ns(void); /* CLOCK_REALTIME, for latencies measured across processes */
void bench_sleep_until_ns(int64_t mono_ns);

/* A growable list of latency samples in nanoseconds. */
typedef struct bench_samples {
  int64_t *v;
  size_t n, cap;
  int sorted;
} bench_samples;
void bench_samples_add(bench_samples *s, int64_t ns);
/* The p-th percentile (p in 0..100, nearest rank) in nanoseconds; 0 when empty. */
int64_t bench_samples_pct(bench_samples *s, double p);
void bench_samples_free(bench_samples *s);
/* The p-th percentile of `n` doubles (sorts them in place). */
double bench_pct_double(double *v, size_t n, double p);
double bench_median(double *v, size_t n);

/* A deadline-and-count bound on a workload: run until `max` operations or `ns` elapse. */
typedef struct bench_bound {
  int64_t start_ns, end_ns;
  uint64_t max;
} bench_bound;
bench_bound bench_bound_make(double seconds, uint64_t max);
static inline int bench_bound_done(const bench_bound *b, uint64_t done) {
  return done >= b->max || (done % 16 == 0 && bench_now_ns() >= b->end_ns);
}

/* ---------------------------------------------------------------------------------
 * Results: one table row on stdout and one JSON object per line in the results file.
 * ------------------------------------------------------------------------------ */
typedef struct bench_result {
  char workload[64];   /* e.g. "append_1thread" */
  char system[32];     /* "engram", "lmdb", "disk", "redis", "nats", "engram-remote" */
  char durability[48]; /* "sync", "async", "appendfsync always", ... */
  uint64_t events;     /* operations counted */
  double seconds;
  double events_per_s;
  double mb_per_s;                /* payload megabytes (1e6) per second, 0 = not applicable */
  double ratio;                   /* this figure over `ratio_to`, 0 = none */
  char ratio_to[64];              /* e.g. "fdatasync" */
  double target;                  /* the target for `ratio` (or events/s when ratio_to is
                                     empty), 0 = none */
  char target_text[96];           /* "ratio >= 0.9 x fdatasync" */
  int met;                        /* 1 met, 0 missed, -1 no target */
  double p50_us, p99_us, p999_us; /* latency, 0 = not measured */
  char note[256];
  char extra[2048]; /* further JSON members ("\"k\": v, ...") or "" */
} bench_result;

void bench_result_init(bench_result *r, const char *workload, const char *system,
                       const char *durability);
/* Fills events_per_s and mb_per_s from events, seconds and payload bytes. */
void bench_result_rate(bench_result *r, uint64_t events, double seconds, uint64_t bytes);
/* Sets ratio = r->events_per_s / limit and judges it against target (0 = none). */
void bench_result_ratio(bench_result *r, double limit, const char *limit_name, double target);
/* Judges events_per_s against an absolute target (events/s). */
void bench_result_target_rate(bench_result *r, double target_eps);
void bench_result_note(bench_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes one result as a single-line JSON object (no trailing newline). */
void bench_result_json(FILE *f, const bench_result *r);
/* Writes a JSON string literal with escapes. */
void bench_json_str(FILE *f, const char *s);

/* A results file: {"bench": ..., "run": {...}, "results": [ one object per line ]}. */
typedef struct bench_out {
  FILE *f;
  int n;
} bench_out;
/* Opens `path` (creating its directory) and writes the header; NULL path = no file.
 * `run_extra` is more JSON members for "run" ("" for none). Returns 0 or -1. */
int bench_out_open(bench_out *o, const char *path, const char *bench, const bench_events *evs,
                   const char *run_extra);
void bench_out_add(bench_out *o, const bench_result *r);
void bench_out_close(bench_out *o);

/* Table on stdout. */
void bench_table_header(void);
void bench_table_row(const bench_result *r);

/* ---------------------------------------------------------------------------------
 * This machine's physical limits, measured in a scratch directory `dir`. Each fills *r
 * and returns its rate (operations/s).
 * ------------------------------------------------------------------------------ */
/* 4 KiB pwrite + fdatasync in a loop over a preallocated file. */
double bench_raw_fsync(const char *dir, double seconds, bench_result *r);
/* Raw LMDB commits of `per_commit` MDB_APPEND puts of the events' payloads, synced per
 * commit (nometasync = MDB_NOMETASYNC); rate in puts/s. */
double bench_raw_lmdb_commits(const char *dir, const bench_events *evs, int nometasync,
                              size_t per_commit, double seconds, uint64_t max_events,
                              bench_result *r);
/* Raw LMDB: MDB_APPEND puts of the same bytes in one transaction, commit unflushed
 * (MDB_NOSYNC); then, when scan is not NULL, a cursor walk over them. */
double bench_raw_lmdb_append(const char *dir, const bench_events *evs, double seconds,
                             uint64_t max_events, bench_result *r, bench_result *scan);

/* Small shared helpers. */
int bench_mkdtemp(char *out, size_t cap, const char *tag); /* under $TMPDIR or /tmp */
void bench_rmrf(const char *path);
double bench_arg_double(const char *s, const char *what); /* exits on bad input */
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
