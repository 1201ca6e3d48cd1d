/* raw.c — this machine's physical limits: fdatasync of a 4 KiB block, raw LMDB commits
 * and appends of the same bytes the benches give engram. LMDB is used directly here, for
 * the baseline only; engram itself is reached through engram.h alone. */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"

double bench_raw_fsync(const char *dir, double seconds, bench_result *r) {
  char path[4200];
  snprintf(path, sizeof path, "%s/fsync.bin", dir);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) bench_die("open %s: %s", path, strerror(errno));
  /* Overwriting a preallocated file keeps its size fixed, so no journal commit rides along:
   * this is what one durable commit costs at least. */
  enum { BLOCKS = 256 };
  static char block[4096];
  memset(block, 'x', sizeof block);
  for (int i = 0; i < BLOCKS; i++)
    if (pwrite(fd, block, sizeof block, (off_t)i * 4096) != (ssize_t)sizeof block)
      bench_die("pwrite: %s", strerror(errno));
  fsync(fd);
  bench_samples lat = {0};
  bench_bound b = bench_bound_make(seconds, 100000);
  uint64_t n = 0;
  while (!bench_bound_done(&b, n)) {
    int64_t t0 = bench_now_ns();
    block[0] = (char)n;
    if (pwrite(fd, block, sizeof block, (off_t)(n % BLOCKS) * 4096) != (ssize_t)sizeof block)
      bench_die("pwrite: %s", strerror(errno));
    if (fdatasync(fd)) bench_die("fdatasync: %s", strerror(errno));
    bench_samples_add(&lat, bench_now_ns() - t0);
    n++;
  }
  double s = (double)(bench_now_ns() - b.start_ns) / 1e9;
  close(fd);
  unlink(path);
  bench_result_init(r, "fdatasync_4k", "disk", "fdatasync");
  bench_result_rate(r, n, s, 0);
  r->p50_us = (double)bench_samples_pct(&lat, 50) / 1e3;
  r->p99_us = (double)bench_samples_pct(&lat, 99) / 1e3;
  r->p999_us = (double)bench_samples_pct(&lat, 99.9) / 1e3;
  bench_samples_free(&lat);
  bench_result_note(r, "the physical limit of one durable write");
  return r->events_per_s;
}

static void mdb_check(int rc, const char *what) {
  if (rc) bench_die("lmdb %s: %s", what, mdb_strerror(rc));
}

typedef struct raw_env {
  MDB_env *env;
  MDB_dbi dbi;
  char dir[4200];
} raw_env;

static void raw_open(raw_env *e, const char *dir, const char *name, unsigned flags) {
  snprintf(e->dir, sizeof e->dir, "%s/%s", dir, name);
  bench_rmrf(e->dir);
  if (mkdir(e->dir, 0755)) bench_die("mkdir %s: %s", e->dir, strerror(errno));
  mdb_check(mdb_env_create(&e->env), "env_create");
  mdb_check(mdb_env_set_mapsize(e->env, (size_t)8 << 30), "set_mapsize");
  mdb_check(mdb_env_set_maxdbs(e->env, 4), "set_maxdbs");
  mdb_check(mdb_env_open(e->env, e->dir, flags, 0644), "env_open");
  MDB_txn *txn;
  mdb_check(mdb_txn_begin(e->env, NULL, 0, &txn), "txn_begin");
  mdb_check(mdb_dbi_open(txn, "events", MDB_CREATE | MDB_INTEGERKEY, &e->dbi), "dbi_open");
  mdb_check(mdb_txn_commit(txn), "commit");
}

static void raw_close(raw_env *e) {
  mdb_env_close(e->env);
  bench_rmrf(e->dir);
}

/* Puts events [next, next + n) with MDB_APPEND; returns their payload bytes. */
static uint64_t raw_put(const bench_events *evs, raw_env *e, MDB_txn *txn, uint64_t *next,
                        size_t n) {
  uint64_t bytes = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t k = ++*next;
    const bench_event *ev = bench_event_at(evs, k - 1);
    MDB_val key = {sizeof k, &k}, val = {ev->payload_len, (void *)ev->payload};
    mdb_check(mdb_put(txn, e->dbi, &key, &val, MDB_APPEND), "put");
    bytes += ev->payload_len;
  }
  return bytes;
}

double bench_raw_lmdb_commits(const char *dir, const bench_events *evs, int nometasync,
                              size_t per_commit, double seconds, uint64_t max_events,
                              bench_result *r) {
  raw_env e;
  raw_open(&e, dir, "lmdb-commits", nometasync ? MDB_NOMETASYNC : 0);
  uint64_t next = 0, bytes = 0;
  bench_bound b = bench_bound_make(seconds, max_events);
  while (!bench_bound_done(&b, next)) {
    MDB_txn *txn;
    mdb_check(mdb_txn_begin(e.env, NULL, 0, &txn), "txn_begin");
    bytes += raw_put(evs, &e, txn, &next, per_commit);
    mdb_check(mdb_txn_commit(txn), "commit");
  }
  double s = (double)(bench_now_ns() - b.start_ns) / 1e9;
  raw_close(&e);
  char wl[64];
  snprintf(wl, sizeof wl, per_commit == 1 ? "lmdb_commit_1put" : "lmdb_commit_%zuputs", per_commit);
  bench_result_init(r, wl, "lmdb", nometasync ? "nometasync" : "sync");
  bench_result_rate(r, next, s, bytes);
  if (nometasync)
    bench_result_note(r, "MDB_NOMETASYNC, %zu put(s) per commit: one flush per commit", per_commit);
  else
    bench_result_note(r, "plain synced LMDB commit of %zu put(s): flushes twice (data, meta)",
                      per_commit);
  return r->events_per_s;
}

double bench_raw_lmdb_append(const char *dir, const bench_events *evs, double seconds,
                             uint64_t max_events, bench_result *r, bench_result *scan) {
  raw_env e;
  raw_open(&e, dir, "lmdb-append", MDB_NOSYNC);
  uint64_t next = 0, bytes = 0;
  MDB_txn *txn;
  bench_bound b = bench_bound_make(seconds, max_events);
  mdb_check(mdb_txn_begin(e.env, NULL, 0, &txn), "txn_begin");
  while (!bench_bound_done(&b, next)) bytes += raw_put(evs, &e, txn, &next, 1000);
  mdb_check(mdb_txn_commit(txn), "commit");
  double s = (double)(bench_now_ns() - b.start_ns) / 1e9;
  bench_result_init(r, "lmdb_append_1txn", "lmdb", "nosync");
  bench_result_rate(r, next, s, bytes);
  bench_result_note(r, "MDB_APPEND of the same payload bytes in one transaction, commit unflushed");

  if (scan) {
    double rates[4];
    uint64_t seen = 0, sum = 0;
    size_t passes = 0;
    for (int pass = 0; pass < 4; pass++) { /* the first pass only warms the page cache */
      int64_t t0 = bench_now_ns();
      uint64_t k0 = 0, s0 = 0;
      mdb_check(mdb_txn_begin(e.env, NULL, MDB_RDONLY, &txn), "txn_begin");
      MDB_cursor *c;
      mdb_check(mdb_cursor_open(txn, e.dbi, &c), "cursor_open");
      MDB_val k, v;
      for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
           rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        k0++;
        s0 += v.mv_size;
      }
      mdb_cursor_close(c);
      mdb_txn_abort(txn);
      if (pass) {
        rates[passes++] = (double)k0 / ((double)(bench_now_ns() - t0) / 1e9);
        seen += k0;
        sum += s0;
      }
    }
    double med = bench_median(rates, passes);
    bench_result_init(scan, "lmdb_cursor_scan", "lmdb", "-");
    bench_result_rate(scan, seen, (double)seen / med, sum);
    bench_result_note(scan, "raw cursor walk over %llu records, no decoding (median of %zu passes)",
                      (unsigned long long)next, passes);
  }
  raw_close(&e);
  return r->events_per_s;
}
