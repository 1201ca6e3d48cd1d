/* park.c — parked free pages: long runs of LMDB's free pages held in a database of their
 * own, so that LMDB's free list stays short.
 *
 * LMDB takes free pages back oldest first, a commit's worth per commit, and every page a
 * commit frees joins the end of that list. A log whose free list is long (a dropped
 * topic, retention that removed much at once) therefore writes every commit to pages no
 * commit since the last checkpoint wrote: the checkpoints write all of them back, and
 * a freed page waits a whole turn of the list before it is reused. Measured on a log of
 * 245 MiB that was 99.8 % free pages: 4-5 times the disk writes and 2.5 times the CPU of
 * a fresh log for the same 2,000 events/s, and several times its latency tail
 * (docs/storage.md).
 *
 * Parking: the maintenance runner, when LMDB's free list holds more than `above` pages,
 * stores values in `park` that LMDB takes from the free list's long runs of contiguous
 * pages (one value is one run of up to PARK_MAX_RUN pages: an overflow value, whose pages
 * LMDB allocates together), until `keep` pages are left free. The pages of a value are
 * never read: only its first page is written (LMDB's page header, which a later delete
 * reads, and PARK_MAGIC), and wal.c writes and records nothing else of the run, so
 * parking 60,000 pages writes a few hundred. When the free list falls below `below`
 * pages, or data.mdb grew since the last pass while pages are parked, values are deleted
 * again: their pages return to the free list and are reused before the file grows.
 * Parked pages count as free in engram_space_get; a compacting copy (reclaim, backup)
 * releases them first, so that it does not copy them.
 *
 * Keys: a sequence number, u64 big-endian. Values: PARK_MAGIC, then the run's length in
 * pages (u64 native), then zeros to the end of the first page; the rest of the run holds
 * whatever the pages held before. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log/log_private.h"

#define PARK_MIN_RUN 32     /* shorter runs of free pages stay free */
#define PARK_MAX_RUN 1024   /* pages of one value: LMDB holds a commit's pages in memory */
#define PARK_TXN_PAGES 1024 /* pages parked in one commit, at most (1-3 ms of LMDB's lock) */
#define PARK_QUIET 5        /* passes without a release before parking again after one */
#define PARK_PASS_TXNS 16   /* parking commits per pass: the next pass goes on */
#define PARK_PREFIX 8192    /* free pages read to find runs: see view() */
#define PARK_KEEP 1024      /* pages left free (4 MiB at 4 KiB pages) */

struct park_limits {
  uint64_t keep, above, below;
};

static struct park_limits limits(void) {
  uint64_t keep = PARK_KEEP;
  const char *e = getenv("ENGRAM_TEST_PARK_KEEP"); /* tests: small logs park too */
  if (e && strtoull(e, NULL, 10) > 0) keep = strtoull(e, NULL, 10);
  return (struct park_limits){.keep = keep, .above = 4 * keep, .below = keep / 4};
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int cmp_u64_desc(const void *a, const void *b) { return cmp_u64(b, a); }

/* What the free list and `park` hold, read in one read transaction. With want_runs, sizes
 * receives the runs of at least PARK_MIN_RUN contiguous free pages among the free list's
 * first records (in key order, the order in which LMDB reads them) up to PARK_PREFIX
 * pages, each cut into values of at most PARK_MAX_RUN pages, longest first. LMDB looks
 * for a value's run in the records it has read so far and reads the next one when none
 * is there, scanning all it has read after each: asking for a run only its whole free
 * list holds makes it read every record, and on a list of 6,659 records that one commit
 * took 210 ms (measured). A run among the first records it finds after reading those. */
struct park_view {
  uint64_t free_pages, parked, last_pgno;
  uint32_t psize;
  uint64_t *sizes; /* pages of each value to park */
  size_t n_sizes;
};

static int view_runs(uint64_t *pg, size_t n, struct park_view *v) {
  qsort(pg, n, sizeof *pg, cmp_u64);
  v->sizes = malloc((n / PARK_MIN_RUN + n / PARK_MAX_RUN + 1) * sizeof *v->sizes);
  if (!v->sizes) return ENGRAM_ENOMEM;
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && pg[j] == pg[j - 1] + 1) j++;
    for (uint64_t left = j - i; left >= PARK_MIN_RUN;) {
      uint64_t pages = left < PARK_MAX_RUN ? left : PARK_MAX_RUN;
      v->sizes[v->n_sizes++] = pages;
      left -= pages;
    }
    i = j;
  }
  /* Longest first: LMDB takes the lowest run at least as long as asked for, so a short
   * value asked for first could cut a longer run another value was to have. */
  qsort(v->sizes, v->n_sizes, sizeof *v->sizes, cmp_u64_desc);
  return 0;
}

static int view(struct log *log, MDB_dbi park, int have_park, int want_runs, struct park_view *v) {
  memset(v, 0, sizeof *v);
  MDB_envinfo ei;
  MDB_stat st;
  mdb_env_info(log->env, &ei);
  mdb_env_stat(log->env, &st);
  v->last_pgno = ei.me_last_pgno;
  v->psize = st.ms_psize;
  MDB_txn *txn;
  int rc = log_read_begin(log, &txn);
  if (rc) return rc;
  uint64_t *pg = NULL;
  size_t n = 0, cap = 0;
  MDB_cursor *c;
  MDB_val k, d;
  if ((rc = mdb_cursor_open(txn, 0 /* FREE_DBI */, &c)) == 0) {
    for (MDB_cursor_op op = MDB_FIRST; (rc = mdb_cursor_get(c, &k, &d, op)) == 0; op = MDB_NEXT) {
      size_t len; /* an MDB_IDL: its length, then that many page numbers */
      if (d.mv_size < sizeof len) continue;
      memcpy(&len, d.mv_data, sizeof len);
      if ((len + 1) * sizeof len > d.mv_size) continue;
      v->free_pages += len;
      /* LMDB reuses no record of a commit a reader may still see: the newest one, at
       * least (this handle's own pin may be on it). */
      if (!want_runs || n >= PARK_PREFIX ||
          (k.mv_size == sizeof(size_t) && *(const size_t *)k.mv_data >= ei.me_last_txnid))
        continue;
      if (n + len > cap) {
        size_t nc = cap ? cap : 4096;
        while (nc < n + len) nc *= 2;
        uint64_t *np = realloc(pg, nc * sizeof *pg);
        if (!np) {
          rc = ENGRAM_ENOMEM;
          break;
        }
        pg = np;
        cap = nc;
      }
      memcpy(pg + n, (const size_t *)d.mv_data + 1, len * sizeof *pg);
      n += len;
    }
    if (rc == MDB_NOTFOUND) rc = 0;
    mdb_cursor_close(c);
  }
  if (rc == 0 && have_park) v->parked = log_parked_pages(txn, park);
  log_read_end(log, txn);
  if (rc == 0 && want_runs) rc = view_runs(pg, n, v);
  free(pg);
  if (rc > 0) rc = log_err_mdb(rc);
  return rc;
}

struct park_job {
  MDB_dbi dbi;
  uint32_t psize;
  uint64_t last_pgno;    /* the file's last page when the pass began */
  const uint64_t *sizes; /* pages of each value to park */
  size_t n_sizes;
  uint64_t want; /* pages to release */
  uint64_t done; /* pages parked (released) by the job */
  size_t n_ok;   /* values parked before one LMDB found no run for */
};

static int open_cursor(log_wtx *w, MDB_dbi dbi, MDB_cursor **c) {
  unsigned int f;
  if (mdb_dbi_flags(w->txn, dbi, &f)) return LOG_ENEWDBI; /* created after this txn began */
  int rc = mdb_cursor_open(w->txn, dbi, c);
  return rc ? log_err_mdb(rc) : 0;
}

/* Parks a value of each size in p->sizes, or none: when LMDB finds no run for one (it
 * takes pages past the end of the file instead), the job fails with ENGRAM_EBUSY, its
 * transaction is dropped (those pages included) and p->n_ok says how many it parked
 * before. It runs solo (log_write_solo): a failing job in a shared commit would make the
 * commits after it run nested transactions. */
static int park_run(log_wtx *w, void *arg) {
  struct park_job *p = arg;
  p->done = 0; /* the job may run again */
  p->n_ok = 0;
  MDB_cursor *c;
  int rc = open_cursor(w, p->dbi, &c);
  if (rc) return rc;
  MDB_val k, v;
  uint64_t seq = 0;
  if (mdb_cursor_get(c, &k, &v, MDB_LAST) == 0 && k.mv_size == 8) seq = be64_get(k.mv_data);
  for (size_t i = 0; i < p->n_sizes && !rc; i++) {
    uint64_t pages = p->sizes[i];
    unsigned char kb[8];
    be64_put(kb, ++seq);
    MDB_val key = {8, kb}, val = {pages * p->psize - LOG_PAGEHDRSZ, NULL};
    if ((rc = mdb_cursor_put(c, &key, &val, MDB_RESERVE | MDB_APPEND))) {
      rc = log_err_mdb(rc);
      break;
    }
    uint64_t first;
    memcpy(&first, (const unsigned char *)val.mv_data - LOG_PAGEHDRSZ, sizeof first);
    if (first + pages - 1 > p->last_pgno) {
      rc = ENGRAM_EBUSY;
      break;
    }
    unsigned char *b = val.mv_data;
    memcpy(b, LOG_PARK_MAGIC, LOG_PARK_MAGIC_LEN);
    memcpy(b + LOG_PARK_MAGIC_LEN, &pages, sizeof pages);
    memset(b + LOG_PARK_MAGIC_LEN + sizeof pages, 0,
           p->psize - LOG_PAGEHDRSZ - LOG_PARK_MAGIC_LEN - sizeof pages);
    p->done += pages;
    p->n_ok = i + 1;
  }
  mdb_cursor_close(c);
  return rc;
}

static int release_run(log_wtx *w, void *arg) {
  struct park_job *p = arg;
  p->done = 0;
  MDB_cursor *c;
  int rc = open_cursor(w, p->dbi, &c);
  if (rc) return rc;
  MDB_val k, v;
  while (p->done < p->want && (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST)) == 0) {
    uint64_t pages = (v.mv_size + LOG_PAGEHDRSZ - 1) / p->psize + 1;
    if ((rc = mdb_cursor_del(c, 0))) break;
    p->done += pages;
  }
  mdb_cursor_close(c);
  return rc == 0 || rc == MDB_NOTFOUND ? 0 : log_err_mdb(rc);
}

/* Releases up to `want` parked pages (all: UINT64_MAX) in commits of their own. */
static int release(struct log *log, MDB_dbi dbi, uint32_t psize, uint64_t want,
                   uint64_t *released) {
  struct park_job p = {.dbi = dbi, .psize = psize, .want = want};
  int rc = log_write(log, release_run, &p);
  *released = rc < 0 ? 0 : p.done;
  return rc < 0 ? rc : 0;
}

int log_park_pass(struct log *log, log_park_report *r, int (*stop)(void *), void *ctx) {
  log_park_report none;
  if (!r) r = &none;
  memset(r, 0, sizeof *r);
  if (log->env_flags & MDB_RDONLY) return 0;
  struct park_limits lim = limits();
  MDB_dbi dbi;
  int have = log_aux_dbi_existing(log, LOG_DB_PARK, &dbi) == 0;
  log_error_clear(log);
  struct park_view v;
  int rc = view(log, dbi, have, 0, &v);
  if (rc) return rc;
  uint64_t grew = log->park_last_pgno && v.last_pgno > log->park_last_pgno
                      ? v.last_pgno - log->park_last_pgno
                      : 0;
  log->park_last_pgno = v.last_pgno;
  r->free_pages = v.free_pages;
  r->parked_pages = v.parked;
  if (v.parked && (v.free_pages < lim.below || grew)) {
    /* Growth since the last pass would have come from parked pages: release twice it. */
    uint64_t want = v.free_pages < lim.keep ? lim.keep - v.free_pages : 0;
    if (want < 2 * grew) want = 2 * grew;
    log->park_released = 1;
    log->park_quiet = 0;
    return release(log, dbi, v.psize, want, &r->released_pages);
  }
  if (log->park_quiet < PARK_QUIET) log->park_quiet++;
  /* A log that gave parked pages back lately is growing into them: parking again at
   * once would park what it is about to use (and the file would grow meanwhile). */
  if (grew || v.free_pages <= lim.above || (log->park_released && log->park_quiet < PARK_QUIET))
    return 0;
  /* Without the write-ahead file (wal.c) every page of a parked run would be written:
   * such a handle only gives parked pages back. */
  if (!log->wal) return 0;
  if (!have && (rc = log_aux_dbi(log, LOG_DB_PARK, 0, &dbi))) return rc;
  uint64_t want = v.free_pages - lim.keep;
  for (int txns = 0; r->parked_now < want && txns < PARK_PASS_TXNS && !(stop && stop(ctx));
       txns++) {
    if ((rc = view(log, dbi, 1, 1, &v))) break;
    size_t end = 0;
    uint64_t sum = 0;
    while (end < v.n_sizes && sum + v.sizes[end] <= PARK_TXN_PAGES &&
           r->parked_now + sum + v.sizes[end] <= want)
      sum += v.sizes[end++];
    struct park_job p = {
        .dbi = dbi, .psize = v.psize, .last_pgno = v.last_pgno, .sizes = v.sizes, .n_sizes = end};
    int64_t t0 = clock_monotonic_ns();
    int stop = !end;
    if (end) rc = log_write_solo(log, park_run, &p);
    if (rc == ENGRAM_EBUSY && p.n_ok) { /* what came before the value LMDB had no run for */
      p.n_sizes = p.n_ok;
      rc = log_write_solo(log, park_run, &p);
      stop = 1;
    }
    int64_t took = clock_monotonic_ns() - t0;
    free(v.sizes);
    if (rc == ENGRAM_EBUSY) {
      log_error_clear(log);
      rc = 0;
      break; /* no run left that LMDB may reuse yet */
    }
    if (rc < 0) break;
    rc = 0;
    r->parked_now += p.done;
    if (stop || !p.done) break; /* no run left among the first records */
    /* Writers get LMDB's lock at least as long as parking had it. */
    struct timespec nap = {0, took > 1000000 ? (long)(took < 50000000 ? took : 50000000) : 1000000};
    nanosleep(&nap, NULL);
  }
  return rc;
}

int log_park_count(struct log *log, uint64_t *free_pages, uint64_t *parked) {
  MDB_dbi dbi;
  int have = log_aux_dbi_existing(log, LOG_DB_PARK, &dbi) == 0;
  log_error_clear(log);
  struct park_view v;
  int rc = view(log, dbi, have, 0, &v);
  *free_pages = v.free_pages;
  *parked = v.parked;
  return rc;
}

int log_park_release_all(struct log *log) {
  if (log->env_flags & MDB_RDONLY) return 0;
  MDB_dbi dbi;
  if (log_aux_dbi_existing(log, LOG_DB_PARK, &dbi)) {
    log_error_clear(log);
    return 0;
  }
  MDB_stat st;
  mdb_env_stat(log->env, &st);
  uint64_t released;
  return release(log, dbi, st.ms_psize, UINT64_MAX, &released);
}

uint64_t log_parked_pages(MDB_txn *txn, MDB_dbi dbi) {
  MDB_stat st;
  if (mdb_stat(txn, dbi, &st)) return 0;
  return st.ms_overflow_pages;
}
