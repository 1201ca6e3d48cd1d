/* wal.c — the write-ahead file: one flush per commit, in every durability mode.
 *
 * LMDB makes a commit durable with two ordered flushes: its data pages, then the meta
 * page that points at them (a meta page on disk before its data would point at pages
 * that are not there). engram pays one instead. Every page and meta write LMDB makes to
 * data.mdb is also appended, as (offset, bytes) extents, to one record of DIR/wal; a
 * commit is acknowledged once that file is flushed. data.mdb itself is written without
 * flushing (MDB_NOSYNC) and is flushed only at a checkpoint, which then starts the file
 * over. After a crash the first process to open the log alone rewrites the checkpoint's
 * two meta pages and every complete record, in order, into data.mdb: LMDB opens on the
 * newest acknowledged commit, whatever part of the unflushed writes reached the disk.
 *
 * Two things make that replay sound:
 * - Pages of the newest durable commit are never overwritten before a newer commit is
 *   durable: each writing handle holds a read transaction (the pin) on a commit whose
 *   record it has flushed, and LMDB reuses only pages freed before the oldest reader.
 *   The pin moves after each flush: a spare read transaction is started on the newest
 *   commit (whose record was written before the commit became visible), the file is
 *   flushed, then the spare replaces the pin unless a concurrent flush put a newer one
 *   there.
 * - Records are written in commit order: the record is appended when LMDB writes the
 *   meta page, the last write of a commit, still under LMDB's write lock. Processes
 *   share the file's tail and sequence through DIR/wal.shm, updated under that lock.
 *
 * LMDB has no hook for its writes: at the first open, the GOT entries of liblmdb for
 * pwrite and writev are pointed at functions here, which pass through every write that
 * is not to a registered data.mdb descriptor. Where that cannot be done (LMDB linked
 * statically, an unknown architecture) engram runs without the file, flushing as LMDB
 * does (see commit.c), and engram_commit_stats says so.
 *
 * Layout of DIR/wal: two header slots (at 0 and at SLOT), each a header page and a copy
 * of data.mdb's two meta pages as of the checkpoint; the header of generation g is in
 * slot g % 2, so a torn header leaves the other one. Records follow from 2 * SLOT: a
 * record header (generation, sequence number, length, CRC32C) and its extents. A record
 * counts when its generation is the header's, its sequence number follows the previous
 * one's and its CRC matches; replay stops at the first that does not.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/got.h"
#include "log/log_private.h"

#define WAL_MAGIC 0x314c4157474e45ull /* "ENGWAL1" */
#define WAL_REC_MAGIC 0x43455257u     /* "WREC" */
#define WAL_SHM_MAGIC 0x4d4853574c4157ull
#define WAL_VERSION 1
#define WAL_HDR_PAGE 4096
#define WAL_DEFAULT_CAP (64ull << 20)
#define WAL_ZERO_CHUNK (1ull << 20)     /* written ahead of the tail at a time */
#define WAL_ZERO_INITIAL (256ull << 10) /* written when the file is made */
#define WAL_SPARE_PINS 8                /* ended pins kept for the next flushes */
#define WAL_FLUSH_FDS 8                 /* flush descriptors kept for reuse */
/* Async mode: records written between two moves of a handle's pin (the flusher flushes
 * the file and moves it), and the most records that may follow the pin before the
 * committing leader flushes and moves it itself. LMDB reuses no page freed after the
 * oldest pin, so every commit meanwhile writes fresh pages at the end of data.mdb; and
 * LMDB takes free pages back one commit's worth per commit, oldest first, so every page
 * freed during a lag stays in its cycle of free pages for good: all of them are dirty
 * again by the next checkpoint, whose flush then takes longer, which delays the flushes
 * that move the pin. With a 4 MiB interval and no bound, 80,000 single-event commits
 * grew data.mdb to 110 MB and each event wrote 37 KB to the disk. */
#define WAL_PIN_EVERY (256ull << 10)
/* A background checkpoint writes data.mdb out in steps of at least WAL_PACE_CHUNK, and
 * in at most WAL_PACE_STEPS (each a system call, also over clean ranges). */
#define WAL_PACE_CHUNK (256ull << 10)
#define WAL_PACE_STEPS 1024
#define WAL_PIN_LAG_MAX (4ull << 20)
/* Most bytes of data.mdb writes a commit holds back until its record is written (sync
 * modes); a bigger commit writes through (LMDB spills thousands of pages at a time). */
#define WAL_HOLD_MAX (256ull << 10)
#define WAL_HELD_IOV 64 /* held writes written by one pwritev, at most */

/* LMDB's meta page: the page header, then MDB_meta. Offsets within the page. */
#define META_MAGIC_OFF 16
#define META_PSIZE_OFF 40    /* mm_dbs[FREE_DBI].md_pad holds the page size */
#define META_LAST_PG_OFF 136 /* mm_last_pg: the last page the meta counts as used */
#define META_TXNID_OFF 144
#define LMDB_MAGIC 0xBEEFC0DEu

struct wal_hdr {
  uint64_t magic;
  uint32_t version;
  uint32_t psize;
  uint64_t gen;
  uint64_t seq0;  /* sequence number of the generation's first record */
  uint64_t start; /* where that record is */
  uint32_t crc;   /* over this header (crc 0) and the two meta pages */
  uint32_t pad;
};

struct wal_rec {
  uint32_t magic;
  uint32_t crc; /* over this header (crc 0) and the extents */
  uint64_t gen;
  uint64_t seq;
  uint64_t len; /* bytes of extents */
};

struct wal_ext {
  uint64_t off;
  uint64_t len; /* the bytes follow, padded to 8 */
};

/* Shared by every process with the log open; rebuilt by whoever recovers. start, tail,
 * zeroed and seq change under LMDB's write lock and are read without it (by flushes and
 * kicks): those stores and reads are atomic. */
struct wal_shm {
  uint64_t magic;
  uint64_t gen;
  uint64_t seq0;  /* first sequence number of this generation */
  uint64_t start; /* where its first record is: the live records run from here to tail,
                     across the end of the file (back to the first record slot) when
                     wrapped */
  int wrapped;
  uint64_t tail;   /* where the next record goes */
  uint64_t seq;    /* the last record's sequence number */
  uint64_t synced; /* records up to this one are flushed */
  uint64_t zeroed; /* bytes of the file written at least once (zeros ahead of the tail):
                      a flush of records there only writes data, no file system journal */
  uint64_t preflushed_gen;
  uint64_t kicked;      /* records before this offset have been handed to writeback */
  int broken;           /* a flush of the file failed: records may be lost from there on, so no
                           later flush acknowledges anything until a checkpoint succeeds */
  uint64_t pending_gen; /* a background checkpoint has written the header of this
                           generation and is flushing it (0 = none): no other may write one */
  /* Flushes shared between processes (log_wal_sync). Zero in a file made by an older
   * engram, which then flushes alone: only synced decides what is durable. */
  int32_t flush_owner;    /* pid of the process whose flush the others wait for, 0 = none */
  uint32_t flush_gen;     /* bumped when that flush ends: a futex word */
  uint32_t flush_waiters; /* processes sleeping on flush_gen (one killed asleep stays
                             counted: a wake-up call per flush is then wasted) */
  /* The span of data.mdb (past its meta pages) that commits wrote since the newest
   * checkpoint began, hi 0 = none: what the next one writes out a chunk at a time. */
  uint64_t dirty_lo, dirty_hi;
};

struct wal {
  struct log *log;
  int data_fd; /* LMDB's descriptor of data.mdb (registered) */
  int fd;      /* DIR/wal */
  struct wal_shm *shm;
  uint32_t psize;
  uint64_t slot; /* size of a header slot */
  uint64_t cap;  /* most bytes of the file */
  /* The commit being written (under LMDB's write lock). */
  unsigned char *buf;
  size_t len, size;
  int overflow;      /* the commit is too big for the file: it is made durable in data.mdb */
  off_t pos;         /* the offset LMDB last sought in data.mdb, -1 once written from */
  int failed;        /* a write to the file failed: the next commit checkpoints instead */
  uint64_t data_end; /* data.mdb is at least this long (this handle's writes, fstat) */
  /* Writes of the commit being written to data.mdb, held until its record is written
   * (hold_write): (offset, length) extents and their bytes, as in a record. */
  unsigned char *held;
  size_t held_len, held_size;
  int hold;                 /* this handle holds writes back (its commits are flushed one by one) */
  int through;              /* this commit writes through: a write could not be held */
  uint64_t rec_at, rec_len; /* where the last record went */
  /* Pins (sync_mu): the pin, on a commit whose record is durable (up to pin_seq), and
   * ended read transactions kept for reuse. */
  pthread_mutex_t sync_mu;
  MDB_txn *pin;
  uint64_t pin_seq;
  uint64_t pin_tail; /* the file's tail when the pin last moved (log_wal_kick reads it) */
  MDB_txn *spare[WAL_SPARE_PINS];
  int n_spare;
  /* Descriptors of the file for flushes, each its own open file description: a failed
   * write-back is reported once per description, so every flush that covered the lost
   * pages hears of it (two flushes through one description: only the first would). */
  int flush_fd[WAL_FLUSH_FDS];
  int n_flush_fd;
  uint64_t pin_asked;   /* the tail when LOG_WAL_PIN was last asked for (async mode) */
  uint64_t pin_every;   /* WAL_PIN_EVERY, smaller in a smaller file */
  uint64_t pin_lag_max; /* WAL_PIN_LAG_MAX, likewise */
  uint64_t checkpoints; /* statistics: counted and read atomically, with no lock */
  uint64_t appended;    /* bytes of records this handle appended (statistics) */
};

/* ---------------------------------------------------------------------------------
 * Small file helpers.
 * ------------------------------------------------------------------------------ */

/* Writes cnt buffers (iov, which it may change) at off, all of them. Returns 0 or -errno. */
static int pwritev_all(int fd, struct iovec *iov, int cnt, uint64_t off) {
  while (cnt) {
    ssize_t n = pwritev(fd, iov, cnt, (off_t)off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    off += (uint64_t)n;
    while (cnt && (size_t)n >= iov->iov_len) {
      n -= (ssize_t)iov->iov_len;
      iov++;
      cnt--;
    }
    if (cnt) {
      iov->iov_base = (char *)iov->iov_base + n;
      iov->iov_len -= (size_t)n;
    }
  }
  return 0;
}

/* Writes n bytes at off, all of them. Returns 0 or -errno. */
static int pwrite_all(int fd, const void *b, size_t n, uint64_t off) {
  struct iovec v = {(void *)b, n};
  return pwritev_all(fd, &v, 1, off);
}

/* The bytes of data.mdb a meta page counts as used (its last page's number plus one, in
 * pages), or UINT64_MAX when no file can be that long (a damaged page, which cover_pages
 * refuses). */
static uint64_t meta_bytes(const unsigned char *meta, uint32_t psize) {
  uint64_t last;
  memcpy(&last, meta + META_LAST_PG_OFF, sizeof last);
  uint64_t pages = last + 1;
  return pages > (uint64_t)INT64_MAX / psize ? UINT64_MAX : pages * psize;
}

/* Extends data.mdb to `need` bytes when it is shorter, never shortening it. LMDB does not
 * write the pages a commit took past the end of the file and freed again before it
 * committed (pages it dirtied and freed, overflow values it put and deleted): they go to
 * the free list unwritten, and the file then ends before the last page the meta page
 * counts. Nothing reads them, but a file that short looks cut short (env.c refuses to
 * open it), and a parked run among them would never be written whole (park.c). The size
 * is flushed with data.mdb, as the meta page that needs it is. Returns 0 or -errno. */
static int cover_pages(int data_fd, uint64_t need, uint64_t *end, int *hold) {
  struct stat st;
  if (need > (uint64_t)INT64_MAX) return -EFBIG;
  if (fstat(data_fd, &st) < 0) return -errno;
  /* Allocated, where writes are held (hold_write): a hole only ftruncate made could fail
   * a held write on a full disk. */
  if ((uint64_t)st.st_size < need &&
      (!*hold || fallocate(data_fd, 0, st.st_size, (off_t)need - st.st_size) < 0) &&
      (*hold = 0, ftruncate(data_fd, (off_t)need) < 0))
    return -errno;
  if (end) *end = (uint64_t)st.st_size > need ? (uint64_t)st.st_size : need;
  return 0;
}

static int pread_all(int fd, void *b, size_t n, uint64_t off) {
  unsigned char *p = b;
  while (n) {
    ssize_t r = pread(fd, p, n, (off_t)off);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (r == 0) return -ENODATA;
    p += r;
    n -= (size_t)r;
    off += (uint64_t)r;
  }
  return 0;
}

static uint64_t pad8(uint64_t n) { return (n + 7) & ~7ull; }

static uint64_t wal_cap_from_env(void) {
  const char *s = getenv("ENGRAM_TEST_WAL_SIZE"); /* tests: small files wrap often */
  if (s && *s) {
    unsigned long long v = strtoull(s, NULL, 10);
    if (v >= (256ull << 10)) return v;
  }
  return WAL_DEFAULT_CAP;
}

/* ---------------------------------------------------------------------------------
 * Headers and checkpoints.
 * ------------------------------------------------------------------------------ */

static uint32_t hdr_crc(struct wal_hdr h, const unsigned char *metas, uint32_t psize) {
  h.crc = 0;
  uint32_t c = crc32c(0, &h, sizeof h);
  return crc32c(c, metas, 2 * (size_t)psize);
}

/* Reads the valid header with the highest generation into *h and its metas; 0, or
 * -ENOENT when neither slot holds one. */
static int read_header(int fd, uint32_t psize, struct wal_hdr *h, unsigned char *metas) {
  uint64_t slot = WAL_HDR_PAGE + 2ull * psize;
  int found = 0;
  unsigned char *m = malloc(2 * (size_t)psize);
  if (!m) return -ENOMEM;
  for (int i = 0; i < 2; i++) {
    struct wal_hdr c;
    if (pread_all(fd, &c, sizeof c, i * slot) < 0) continue;
    if (c.magic != WAL_MAGIC || c.version != WAL_VERSION || c.psize != psize) continue;
    if (pread_all(fd, m, 2 * (size_t)psize, i * slot + WAL_HDR_PAGE) < 0) continue;
    if (hdr_crc(c, m, psize) != c.crc || c.gen % 2 != (uint64_t)i) continue;
    if (!found || c.gen > h->gen) {
      *h = c;
      memcpy(metas, m, 2 * (size_t)psize);
      found = 1;
    }
  }
  free(m);
  return found ? 0 : -ENOENT;
}

/* Writes the header of generation `gen` with `metas` (NULL: data.mdb's current meta pages,
 * read through `data_fd`), unflushed. The caller has flushed data.mdb. */
static int put_header(int fd, int data_fd, uint32_t psize, uint64_t gen, uint64_t seq0,
                      uint64_t start, const unsigned char *metas) {
  size_t n = WAL_HDR_PAGE + 2 * (size_t)psize;
  unsigned char *b = calloc(1, n);
  if (!b) return -ENOMEM;
  int rc = 0;
  if (metas)
    memcpy(b + WAL_HDR_PAGE, metas, 2 * (size_t)psize);
  else
    rc = pread_all(data_fd, b + WAL_HDR_PAGE, 2 * (size_t)psize, 0);
  if (rc == 0) {
    struct wal_hdr h = {.magic = WAL_MAGIC,
                        .version = WAL_VERSION,
                        .psize = psize,
                        .gen = gen,
                        .seq0 = seq0,
                        .start = start};
    h.crc = hdr_crc(h, b + WAL_HDR_PAGE, psize);
    memcpy(b, &h, sizeof h);
    rc = pwrite_all(fd, b, n, (gen % 2) * n);
  }
  free(b);
  return rc;
}

/* put_header, then flushes the file. */
static int write_header(int fd, int data_fd, uint32_t psize, uint64_t gen, uint64_t seq0,
                        uint64_t start, const unsigned char *metas) {
  int rc = put_header(fd, data_fd, psize, gen, seq0, start, metas);
  if (rc == 0 && fdatasync(fd) < 0) rc = -errno;
  return rc;
}

/* Makes data.mdb durable as it is and starts a new generation of the file. Called where
 * no commit can run: under LMDB's write lock, or alone at open. */
static int checkpoint(struct wal *w) {
  struct wal_shm *s = w->shm;
  if (fdatasync(w->fd) < 0) return -errno; /* every record, before data.mdb moves on */
  if (fdatasync(w->data_fd) < 0) return -errno;
  s->dirty_lo = s->dirty_hi = 0;
  int rc = write_header(w->fd, w->data_fd, w->psize, s->gen + 1, s->seq + 1, 2 * w->slot, NULL);
  if (rc) return rc;
  s->gen++;
  s->seq0 = s->seq + 1;
  __atomic_store_n(&s->start, 2 * w->slot, __ATOMIC_RELAXED);
  __atomic_store_n(&s->tail, 2 * w->slot, __ATOMIC_RELEASE);
  s->wrapped = 0;
  __atomic_store_n(&s->synced, s->seq, __ATOMIC_RELEASE);
  __atomic_store_n(&s->broken, 0, __ATOMIC_RELEASE);
  __atomic_fetch_add(&w->checkpoints, 1, __ATOMIC_RELAXED);
  return 0;
}

/* ---------------------------------------------------------------------------------
 * Capturing LMDB's writes.
 * ------------------------------------------------------------------------------ */

static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static off_t (*real_lseek)(int, off_t, int);

#define WAL_MAX_HANDLES 256
static struct {
  int fd;
  struct wal *w; /* NULL = free; set last, cleared first */
} registry[WAL_MAX_HANDLES];
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static int registry_top; /* entries in use lie below it: LMDB's writes scan only those */

static struct wal *find(int fd) {
  int top = __atomic_load_n(&registry_top, __ATOMIC_ACQUIRE);
  for (int i = 0; i < top; i++) {
    struct wal *w = __atomic_load_n(&registry[i].w, __ATOMIC_ACQUIRE);
    if (w && registry[i].fd == fd) return w;
  }
  return NULL;
}

static void capture_raw(struct wal *w, uint64_t off, const void *b, size_t n) {
  struct wal_shm *s = w->shm; /* under LMDB's write lock: no other writer now */
  if (s && off >= 2 * (uint64_t)w->psize) {
    if (!s->dirty_hi || off < s->dirty_lo) s->dirty_lo = off;
    if (off + n > s->dirty_hi) s->dirty_hi = off + n;
  }
  if (w->overflow) return;
  size_t need = w->len + sizeof(struct wal_ext) + pad8(n);
  if (sizeof(struct wal_rec) + need + 2 * w->slot > w->cap) {
    w->overflow = 1; /* bigger than the whole file */
    return;
  }
  if (need > w->size) {
    size_t sz = w->size ? w->size : 65536;
    while (sz < need) sz *= 2;
    unsigned char *nb = realloc(w->buf, sz);
    if (!nb) {
      w->overflow = 1; /* made durable by a checkpoint instead */
      return;
    }
    w->buf = nb;
    w->size = sz;
  }
  struct wal_ext e = {.off = off, .len = n};
  memcpy(w->buf + w->len, &e, sizeof e);
  memcpy(w->buf + w->len + sizeof e, b, n);
  memset(w->buf + w->len + sizeof e + n, 0, pad8(n) - n);
  w->len = need;
}

/* LMDB's page header: flags at 10, and for branch and leaf pages the bounds of the free
 * space between the node pointers and the nodes at 12 and 14 (an overflow run's page
 * count at 12 instead). LMDB never reads that free space (it does not even copy it when
 * it copies a page), so a record leaves it out. */
#define LMDB_P_BRANCH 0x01
#define LMDB_P_LEAF 0x02
#define LMDB_P_OVERFLOW 0x04
#define LMDB_P_LEAF2 0x20

/* Bytes of LMDB's write of n bytes from pg that matter: of a run of parked pages
 * (park.c), an overflow value no one reads, only the first page (LMDB's header, which a
 * delete reads, and the value's mark); otherwise all of them. */
static size_t parked_len(const struct wal *w, const unsigned char *pg, size_t n) {
  if (n <= w->psize) return n;
  uint16_t flags;
  uint32_t pages;
  memcpy(&flags, pg + 10, 2);
  memcpy(&pages, pg + 12, 4);
  if ((flags & LMDB_P_OVERFLOW) && (uint64_t)pages * w->psize == n &&
      !memcmp(pg + LOG_PAGEHDRSZ, LOG_PARK_MAGIC, LOG_PARK_MAGIC_LEN))
    return w->psize;
  return n;
}

/* Copies a write of LMDB's into the commit's record: whole pages without their free
 * space, anything else as it is. */
static void capture(struct wal *w, uint64_t off, const void *b, size_t n) {
  const unsigned char *p = b;
  size_t ps = w->psize;
  if (off % ps || n % ps) {
    capture_raw(w, off, b, n);
    return;
  }
  for (size_t i = 0; i < n;) {
    const unsigned char *pg = p + i;
    uint16_t flags, lower, upper;
    uint32_t pages;
    memcpy(&flags, pg + 10, 2);
    memcpy(&lower, pg + 12, 2);
    memcpy(&upper, pg + 14, 2);
    memcpy(&pages, pg + 12, 4);
    if ((flags & LMDB_P_OVERFLOW) && pages >= 1 && (uint64_t)pages * ps <= n - i) {
      /* the run, whole; of a parked one (park.c) only its first page */
      capture_raw(w, off + i, pg, parked_len(w, pg, (size_t)pages * ps));
      i += (size_t)pages * ps;
      continue;
    }
    if ((flags & (LMDB_P_BRANCH | LMDB_P_LEAF)) && !(flags & (LMDB_P_LEAF2 | LMDB_P_OVERFLOW)) &&
        lower >= LOG_PAGEHDRSZ && lower <= upper && upper <= ps && upper - lower >= 64) {
      capture_raw(w, off + i, pg, lower);
      if (upper < ps) capture_raw(w, off + i + upper, pg + upper, ps - upper);
    } else {
      capture_raw(w, off + i, pg, ps);
    }
    i += ps;
  }
}

/* Writes held back. In a mode that flushes each commit, a commit's writes to data.mdb
 * are held until its record is written: the record is then handed to the disk at once
 * (sync_file_range), and data.mdb's pages and meta page are written to the page cache
 * while the disk writes it, instead of before; the commit's flush then mostly waits for
 * the disk's cache flush alone. Nothing reads those pages before the meta page that
 * points at them is written: LMDB reads back during a transaction only the pages it
 * spilled, and a spill writes thousands of pages, more than a commit holds
 * (WAL_HOLD_MAX), so it writes through. Only writes inside the file are held: a write
 * that extends it may find the disk full, and must fail while LMDB can still abort the
 * commit (a failure at the meta page's write makes LMDB refuse every later one). */

/* A write that starts past the end of data.mdb leaves a hole before it (pages LMDB took
 * and freed unwritten): it is allocated, or writes are no longer held. */
static void fill_gap(struct wal *w, uint64_t off) {
  if (w->hold && off > w->data_end &&
      fallocate(w->data_fd, FALLOC_FL_KEEP_SIZE, (off_t)w->data_end, (off_t)(off - w->data_end)) <
          0)
    w->hold = 0;
}

/* Writes every held write to data.mdb, in order, each run of adjacent ones (the pages
 * of one writev of LMDB's) in one system call. Returns 0 or -errno. */
static int write_held(struct wal *w) {
  int rc = 0;
  for (size_t at = 0; at < w->held_len && !rc;) {
    struct iovec iov[WAL_HELD_IOV];
    int n = 0;
    uint64_t start = 0, end = 0;
    while (at < w->held_len && n < WAL_HELD_IOV) {
      struct wal_ext e;
      memcpy(&e, w->held + at, sizeof e);
      if (n && e.off != end) break;
      if (!n) start = end = e.off;
      iov[n++] = (struct iovec){w->held + at + sizeof e, (size_t)e.len};
      end += e.len;
      at += sizeof e + pad8(e.len);
    }
    rc = pwritev_all(w->data_fd, iov, n, start);
  }
  w->held_len = 0;
  return rc;
}

/* Holds the keep bytes at b that LMDB writes at off (of a parked run, only its first
 * page: parked_len) until the commit's record is written. Returns 1 when held; 0 when
 * the caller writes them now, after every write held before (the rest of the commit then
 * writes through too); -errno when those failed. */
static int hold_write(struct wal *w, uint64_t off, const void *b, size_t keep) {
  size_t need = w->held_len + sizeof(struct wal_ext) + pad8(keep);
  if (w->hold && !w->through && off + keep <= w->data_end && need <= WAL_HOLD_MAX) {
    if (need > w->held_size) {
      size_t sz = w->held_size ? w->held_size : 65536;
      while (sz < need) sz *= 2;
      unsigned char *nb = realloc(w->held, sz);
      if (nb) {
        w->held = nb;
        w->held_size = sz;
      }
    }
    if (need <= w->held_size) {
      struct wal_ext e = {.off = off, .len = keep};
      memcpy(w->held + w->held_len, &e, sizeof e);
      memcpy(w->held + w->held_len + sizeof e, b, keep);
      w->held_len = need;
      return 1;
    }
  }
  w->through = 1;
  return write_held(w);
}

/* Appends the commit's record. Returns 0, or -1 when it must be made durable by a
 * checkpoint instead (no room, or the file cannot be written). */
static int append_record(struct wal *w) {
  struct wal_shm *s = w->shm;
  uint64_t total = sizeof(struct wal_rec) + w->len;
  if (w->overflow || w->failed || __atomic_load_n(&s->broken, __ATOMIC_ACQUIRE)) return -1;
  /* The live records run from start to tail; past the end of the file the next one goes
   * to the first record slot, as long as it ends before start. */
  uint64_t at = s->tail;
  int wrap = 0;
  if (!s->wrapped && at + total > w->cap) {
    at = 2 * w->slot;
    wrap = 1;
  }
  if ((s->wrapped || wrap) && at + total > s->start) return -1; /* full */
  struct wal_rec r = {.magic = WAL_REC_MAGIC, .gen = s->gen, .seq = s->seq + 1, .len = w->len};
  r.crc = crc32c(crc32c(0, &r, sizeof r), w->buf, w->len);
  struct iovec iov[2] = {{&r, sizeof r}, {w->buf, w->len}};
  if (pwritev_all(w->fd, iov, 2, at) < 0) {
    w->failed = 1;
    return -1;
  }
  __atomic_store_n(&s->tail, at + total, __ATOMIC_RELEASE);
  w->rec_at = at;
  w->rec_len = total;
  w->appended += total;
  if (wrap) s->wrapped = 1;
  if (s->tail > s->zeroed) __atomic_store_n(&s->zeroed, s->tail, __ATOMIC_RELAXED);
  __atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELEASE);
  uint64_t live = s->wrapped ? w->cap - s->start + s->tail - 2 * w->slot : s->tail - s->start;
  if (live > w->cap / 2 &&
      __atomic_exchange_n(&s->preflushed_gen, s->gen, __ATOMIC_ACQ_REL) != s->gen) {
    /* Half full: the checkpointer checkpoints in the background, long before a commit
     * would find the file full (in async mode no flush of a commit comes to notice it). */
    pthread_mutex_lock(&w->log->mu);
    w->log->wal_work |= LOG_WAL_CHECKPOINT;
    log_checkpointer_start_locked(w->log);
    pthread_cond_broadcast(&w->log->flush_cv);
    pthread_mutex_unlock(&w->log->mu);
  }
  return 0;
}

/* The meta page write: the end of a commit, still under LMDB's write lock. */
static ssize_t meta_write(struct wal *w, const void *b, size_t n, off_t off) {
  /* LMDB writes the meta from mm_mapsize on: where in b its mm_last_pg is. */
  uint64_t at = (uint64_t)off % w->psize;
  if (at <= META_LAST_PG_OFF && at + n >= META_LAST_PG_OFF + 8) {
    uint64_t need = meta_bytes((const unsigned char *)b - at, w->psize);
    int rc = need > w->data_end ? cover_pages(w->data_fd, need, &w->data_end, &w->hold) : 0;
    if (rc) {
      (void)write_held(w); /* as the record of LMDB's rewrite of the old meta has them */
      w->through = 0;
      errno = -rc;
      return -1; /* LMDB puts the old meta back */
    }
  }
  capture(w, (uint64_t)off, b, n);
  int in_file = append_record(w) == 0;
  w->len = 0;
  w->overflow = 0;
  w->through = 0;
  if (in_file) {
    /* The disk writes the record while the held pages go to the page cache (see
     * write_held); the flush that follows finds it written or under way. */
    if (w->held_len)
      sync_file_range(w->fd, (off_t)w->rec_at, (off_t)w->rec_len, SYNC_FILE_RANGE_WRITE);
    int rc = write_held(w);
    if (rc) {
      errno = -rc;
      return -1; /* LMDB puts the old meta back (a record that replays it follows) */
    }
    return real_pwrite(w->data_fd, b, n, off);
  }
  /* Made durable in data.mdb itself: the records before it, the commit with its meta
   * page, then a new generation of the file. */
  int hrc = write_held(w);
  if (hrc) {
    errno = -hrc;
    return -1;
  }
  if (fdatasync(w->fd) < 0 && !w->failed) return -1;
  ssize_t r = real_pwrite(w->data_fd, b, n, off);
  if (r != (ssize_t)n) return r;
  /* counts as a record: synced says when it is durable */
  __atomic_store_n(&w->shm->seq, w->shm->seq + 1, __ATOMIC_RELEASE);
  int rc = checkpoint(w);
  if (rc) {
    errno = -rc;
    return -1; /* LMDB puts the old meta back and refuses further commits */
  }
  w->failed = 0;
  return r;
}

static ssize_t hook_pwrite(int fd, const void *b, size_t n, off_t off) {
  struct wal *w = find(fd);
  if (!w) return real_pwrite(fd, b, n, off);
  if ((uint64_t)off < 2ull * w->psize) return meta_write(w, b, n, off);
  capture(w, (uint64_t)off, b, n);
  size_t keep = parked_len(w, b, n);
  int held = hold_write(w, (uint64_t)off, b, keep);
  if (held) {
    if (held > 0) return (ssize_t)n;
    errno = -held;
    return -1;
  }
  fill_gap(w, (uint64_t)off);
  ssize_t r = real_pwrite(fd, b, keep, off);
  if (r == (ssize_t)keep && (uint64_t)off + keep > w->data_end) w->data_end = (uint64_t)off + keep;
  return r == (ssize_t)keep ? (ssize_t)n : r;
}

/* LMDB seeks, then writes several pages with writev. The seek to a position in data.mdb
 * is only noted, and the writev that follows it becomes a pwritev there: one system call
 * instead of two per run of pages. Nothing of LMDB's reads the file offset otherwise
 * (its other writes and reads name their offsets; a failed write seeks again). */
static off_t hook_lseek(int fd, off_t off, int whence) {
  struct wal *w = find(fd);
  if (w && whence == SEEK_SET && off >= 0) {
    w->pos = off;
    return off;
  }
  if (w) w->pos = -1;
  return real_lseek(fd, off, whence);
}

static ssize_t hook_writev(int fd, const struct iovec *iov, int cnt) {
  struct wal *w = find(fd);
  if (!w) return real_writev(fd, iov, cnt);
  off_t at = w->pos;
  w->pos = -1;
  off_t start = at >= 0 ? at : lseek(fd, 0, SEEK_CUR), off = start;
  for (int i = 0; i < cnt && off >= 0; i++) {
    capture(w, (uint64_t)off, iov[i].iov_base, iov[i].iov_len);
    off += (off_t)iov[i].iov_len;
  }
  if (off < 0) w->overflow = 1;
  /* Held page by page (hold_write) while they may be; the rest is written here. */
  ssize_t held = 0;
  if (start >= 0)
    for (int h; cnt > 0; iov++, cnt--) {
      h = hold_write(w, (uint64_t)(start + held), iov[0].iov_base,
                     parked_len(w, iov[0].iov_base, iov[0].iov_len));
      if (h < 0) {
        errno = -h;
        return -1;
      }
      if (!h) break;
      held += (ssize_t)iov[0].iov_len;
    }
  if (!cnt) return held;
  start += held;
  if (start >= 0) fill_gap(w, (uint64_t)start);
  int parked = 0;
  for (int i = 0; i < cnt; i++)
    parked |= parked_len(w, iov[i].iov_base, iov[i].iov_len) != iov[i].iov_len;
  if (!parked) {
    ssize_t r = start >= 0 ? pwritev(fd, iov, cnt, start) : real_writev(fd, iov, cnt);
    if (r > 0 && start >= 0 && (uint64_t)(start + r) > w->data_end)
      w->data_end = (uint64_t)(start + r);
    return r < 0 ? r : held + r;
  }
  /* A commit that parks pages (park.c): each run written on its own, parked ones only in
   * their first page. */
  if (start < 0) return -1;
  off = start;
  ssize_t total = held;
  for (int i = 0; i < cnt; i++) {
    if (pwrite_all(fd, iov[i].iov_base, parked_len(w, iov[i].iov_base, iov[i].iov_len),
                   (uint64_t)off) < 0)
      return -1;
    off += (off_t)iov[i].iov_len;
    total += (ssize_t)iov[i].iov_len;
  }
  return total;
}

/* Points liblmdb's GOT entries for pwrite, writev and (where present) lseek at the hooks. */
struct lmdb_slots {
  void **pwrite, **writev, **lseek;
  int other_writer;
};

static void lmdb_slot(const char *name, void **slot, void *ctx) {
  struct lmdb_slots *f = ctx;
  if (!strcmp(name, "pwrite") || !strcmp(name, "pwrite64")) f->pwrite = slot;
  if (!strcmp(name, "writev")) f->writev = slot;
  if (!strcmp(name, "lseek") || !strcmp(name, "lseek64")) f->lseek = slot;
  /* An LMDB that can write its pages another way (a build with MDB_USE_PWRITEV, a later
   * release) would bypass the capture: then no write-ahead file at all. */
  if (!strncmp(name, "pwritev", 7) || !strcmp(name, "pwrite64v")) f->other_writer = 1;
}

static int hooks_ok;

static void install_hooks(void) {
  if (getenv("ENGRAM_NO_WAL")) return; /* documented: the old two-flush path */
  struct lmdb_slots f = {0};
  /* Fails where LMDB is linked in or the architecture is unknown. */
  if (got_each((void *)mdb_txn_commit, "liblmdb", lmdb_slot, &f) < 0) return;
  if (!f.pwrite || !f.writev || f.other_writer) return;
  real_pwrite = (ssize_t(*)(int, const void *, size_t, off_t)) * f.pwrite;
  real_writev = (ssize_t(*)(int, const struct iovec *, int)) * f.writev;
  /* The seek is optional: without it hook_writev asks for the offset itself. */
  if (f.lseek) real_lseek = (off_t(*)(int, off_t, int)) * f.lseek;
  void **const slots[3] = {f.lseek, f.pwrite, f.writev};
  void *const hooks[3] = {(void *)hook_lseek, (void *)hook_pwrite, (void *)hook_writev};
  if (got_set(slots, hooks, 3) == 0) hooks_ok = 1;
}

int log_wal_supported(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, install_hooks);
  return hooks_ok;
}

/* ---------------------------------------------------------------------------------
 * Recovery, at an open that has the log to itself.
 * ------------------------------------------------------------------------------ */

static int data_psize(int data_fd, uint32_t *psize) {
  unsigned char m[64];
  if (pread_all(data_fd, m, sizeof m, 0) < 0) return -1;
  uint32_t magic, ps;
  memcpy(&magic, m + META_MAGIC_OFF, 4);
  memcpy(&ps, m + META_PSIZE_OFF, 4);
  if (magic != LMDB_MAGIC || ps < 512 || ps > 65536 || (ps & (ps - 1))) return -1;
  *psize = ps;
  return 0;
}

/* Reads the record at `off` into *r and *buf when it is the one with sequence number
 * `seq`, whole (its CRC matches). 1 when it is, 0 when not, -ENOMEM. */
static int read_rec(int fd, uint64_t size, uint64_t off, uint64_t seq, struct wal_rec *r,
                    unsigned char **buf, size_t *cap) {
  if (off + sizeof *r > size || pread_all(fd, r, sizeof *r, off) < 0) return 0;
  if (r->magic != WAL_REC_MAGIC || r->seq != seq || r->len > size - off - sizeof *r) return 0;
  if (r->len > *cap) {
    unsigned char *nb = realloc(*buf, (size_t)r->len);
    if (!nb) return -ENOMEM;
    *buf = nb;
    *cap = (size_t)r->len;
  }
  if (pread_all(fd, *buf, (size_t)r->len, off + sizeof *r) < 0) return 0;
  struct wal_rec c = *r;
  c.crc = 0;
  return crc32c(crc32c(0, &c, sizeof c), *buf, (size_t)r->len) == r->crc;
}

/* Replays the records that follow the header's checkpoint into data.mdb: from its start,
 * in sequence, across the end of the file to the first record slot. Returns the number
 * replayed, the last one's sequence number in *last, or -errno. Sequence numbers only
 * grow over the file's life, so a record left from an earlier lap never follows. */
static int replay(int fd, int data_fd, const struct wal_hdr *h, const unsigned char *metas,
                  uint64_t first_slot, uint64_t *last) {
  int rc = pwrite_all(data_fd, metas, 2 * (size_t)h->psize, 0);
  if (rc) return rc;
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  uint64_t off = h->start, seq = h->seq0, n = 0;
  unsigned char *buf = NULL;
  size_t cap = 0;
  int wrapped = 0;
  *last = h->seq0 - 1;
  for (;;) {
    struct wal_rec r;
    int ok = read_rec(fd, (uint64_t)st.st_size, off, seq, &r, &buf, &cap);
    if (ok == 0 && !wrapped && off != first_slot) {
      wrapped = 1; /* the writer went on at the first slot */
      off = first_slot;
      ok = read_rec(fd, (uint64_t)st.st_size, off, seq, &r, &buf, &cap);
    }
    if (ok < 0) {
      free(buf);
      return ok;
    }
    if (!ok) break;
    for (uint64_t p = 0; p + sizeof(struct wal_ext) <= r.len;) {
      struct wal_ext e;
      memcpy(&e, buf + p, sizeof e);
      p += sizeof e;
      if (e.len > r.len - p) break; /* cannot be: the CRC matched */
      if ((rc = pwrite_all(data_fd, buf + p, (size_t)e.len, e.off))) {
        free(buf);
        return rc;
      }
      p += pad8(e.len);
    }
    *last = seq;
    seq++;
    n++;
    off += sizeof r + r.len;
  }
  free(buf);
  return (int)(n > 0x7fffffff ? 0x7fffffff : n);
}

/* Writes zeros from the end of the file up to `to` (nothing when it is longer). */
static int zero_fill(int fd, uint64_t to) {
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  static const unsigned char zeros[65536];
  for (uint64_t off = (uint64_t)st.st_size; off < to;) {
    size_t n = to - off < sizeof zeros ? (size_t)(to - off) : sizeof zeros;
    int rc = pwrite_all(fd, zeros, n, off);
    if (rc) return rc;
    off += n;
  }
  return 0;
}

static int shm_open_file(const char *dir, int create, struct wal_shm **out) {
  char f[4200];
  snprintf(f, sizeof f, "%s/" LOG_WAL_SHM, dir);
  int fd = open(f, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
  if (fd < 0) return -errno;
  /* Also when it exists: one an older build made by ftruncate alone is sparse. */
  int rc = log_file_reserve(fd, 4096);
  if (rc) {
    close(fd);
    return rc;
  }
  void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int e = errno;
  close(fd);
  if (p == MAP_FAILED) return -e;
  *out = p;
  return 0;
}

int log_wal_recover(const char *dir, int rdonly) {
  char df[4200], wf[4200];
  snprintf(df, sizeof df, "%s/data.mdb", dir);
  snprintf(wf, sizeof wf, "%s/" LOG_WAL_FILE, dir);
  int data_fd = open(df, (rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (data_fd < 0) {
    int e = errno;
    return e == ENOENT ? 0
                       : log_error(NULL, log_open_errno(e), "open %s: cannot write %s: %s: %s", dir,
                                   df, strerror(e), log_open_advice(e));
  }
  uint32_t psize;
  if (data_psize(data_fd, &psize) < 0) {
    close(data_fd);
    return 0; /* not LMDB's: the open that follows says what it is */
  }
  int created = access(wf, F_OK) != 0;
  if (rdonly && created) {
    close(data_fd);
    return 0;
  }
  int fd = open(wf, (rdonly ? O_RDONLY : O_RDWR | O_CREAT) | O_CLOEXEC, 0644);
  if (fd < 0) {
    int e = errno;
    close(data_fd);
    return log_error(NULL, log_open_errno(e), "open %s: cannot write %s: %s: %s", dir, wf,
                     strerror(e), log_open_advice(e));
  }
  unsigned char *metas = malloc(2 * (size_t)psize), *now = malloc(2 * (size_t)psize);
  struct wal_hdr h = {0};
  int rc = (metas && now) ? 0 : -ENOMEM;
  int have = rc == 0 && read_header(fd, psize, &h, metas) == 0;
  /* A new file starts at a generation no record left in it from before can carry. */
  uint64_t slot = WAL_HDR_PAGE + 2ull * psize, last = 0,
           gen = have ? h.gen : (uint64_t)clock_realtime_ns();
  /* The power-cut test's control: without the replay, acknowledged commits are lost. */
  if (getenv("ENGRAM_TEST_WAL_NOREPLAY")) have = 0;
  if (rc == 0 && rdonly) {
    /* Nothing may be written: the log must be as its last checkpoint left it. */
    int clean = have && pread_all(data_fd, now, 2 * (size_t)psize, 0) == 0 &&
                !memcmp(now, metas, 2 * (size_t)psize);
    struct wal_rec r;
    if (clean && pread_all(fd, &r, sizeof r, h.start) == 0 && r.magic == WAL_REC_MAGIC &&
        r.seq == h.seq0)
      clean = 0;
    rc = clean || !have ? 0
                        : log_error(NULL, ENGRAM_EDENIED,
                                    "open %s read-only: the log was not closed cleanly and its "
                                    "last commits are still in %s: open it read-write once (as "
                                    "a user who may write it) to recover them",
                                    dir, wf);
    free(metas);
    free(now);
    close(fd);
    close(data_fd);
    return rc;
  }
  if (rc == 0 && have) {
    /* Closed cleanly (data.mdb as the header left it, no record after it): nothing to
     * replay or write. */
    struct wal_rec r;
    struct stat wst;
    int clean =
        pread_all(data_fd, now, 2 * (size_t)psize, 0) == 0 &&
        !memcmp(now, metas, 2 * (size_t)psize) &&
        !(pread_all(fd, &r, sizeof r, h.start) == 0 && r.magic == WAL_REC_MAGIC && r.seq == h.seq0);
    struct wal_shm *s = NULL;
    if (clean && fstat(fd, &wst) == 0 && shm_open_file(dir, 1, &s) == 0) {
      *s = (struct wal_shm){.magic = WAL_SHM_MAGIC,
                            .gen = h.gen,
                            .seq0 = h.seq0,
                            .start = h.start,
                            .tail = h.start,
                            .seq = h.seq0 - 1,
                            .synced = h.seq0 - 1,
                            .zeroed = (uint64_t)wst.st_size};
      munmap(s, 4096);
      free(metas);
      free(now);
      close(fd);
      close(data_fd);
      return 0;
    }
    int n = replay(fd, data_fd, &h, metas, 2 * slot, &last);
    if (n < 0) rc = n;
    /* The file's size as the newest meta page needs it: a power cut may have lost an
     * extension (cover_pages) whose commit the records brought back. */
    if (rc == 0 && (rc = pread_all(data_fd, now, 2 * (size_t)psize, 0)) == 0) {
      uint64_t t0, t1;
      memcpy(&t0, now + META_TXNID_OFF, sizeof t0);
      memcpy(&t1, now + psize + META_TXNID_OFF, sizeof t1);
      int alloc = 1;
      rc = cover_pages(data_fd, meta_bytes(now + (t1 > t0 ? psize : 0), psize), NULL, &alloc);
    }
  } else {
    /* A new file (or one no header of which is whole): its sequence numbers start past
     * any a record left in it can carry. */
    last = (uint64_t)clock_realtime_ns();
  }
  if (rc == 0 && fdatasync(data_fd) < 0) rc = -errno;
  if (rc == 0) rc = zero_fill(fd, 2 * slot + WAL_ZERO_INITIAL); /* flushed with the header */
  if (rc == 0) rc = write_header(fd, data_fd, psize, gen + 1, last + 1, 2 * slot, NULL);
  if (rc == 0 && created) rc = log_fsync_path(dir, O_RDONLY | O_DIRECTORY);
  struct wal_shm *s = NULL;
  if (rc == 0) rc = shm_open_file(dir, 1, &s);
  if (rc == 0) {
    struct stat wst;
    fstat(fd, &wst);
    *s = (struct wal_shm){.magic = WAL_SHM_MAGIC,
                          .gen = gen + 1,
                          .seq0 = last + 1,
                          .start = 2 * slot,
                          .tail = 2 * slot,
                          .seq = last,
                          .synced = last,
                          .zeroed = (uint64_t)wst.st_size};
    munmap(s, 4096);
  }
  free(metas);
  free(now);
  close(fd);
  close(data_fd);
  if (rc < 0)
    return log_error(NULL, log_open_errno(-rc), "open %s: cannot recover from %s: %s: %s", dir, wf,
                     strerror(-rc), log_open_advice(-rc));
  return 0;
}

/* ---------------------------------------------------------------------------------
 * A handle's use of the file.
 * ------------------------------------------------------------------------------ */

/* A write transaction of this file's own (the flusher's work, the checkpoint at close):
 * it holds the map lock shared, as a reader does, so that the map never grows under it
 * (log_map_grow resizes only with no transaction of the process running). */
static int own_txn_begin(struct log *log, MDB_txn **txn) {
  pthread_rwlock_rdlock(&log->map_lock);
  int rc = mdb_txn_begin(log->env, NULL, 0, txn);
  if (rc) pthread_rwlock_unlock(&log->map_lock);
  return rc;
}

static void own_txn_end(struct log *log, MDB_txn *txn) {
  mdb_txn_abort(txn);
  pthread_rwlock_unlock(&log->map_lock);
}

static int pin_begin(struct log *log, MDB_txn **txn) {
  for (;;) {
    /* Started under the map lock (the map may not move meanwhile); then it is only a
     * slot in the reader table: nothing is ever read through it. */
    pthread_rwlock_rdlock(&log->map_lock);
    int rc = *txn ? mdb_txn_renew(*txn) : mdb_txn_begin(log->env, NULL, MDB_RDONLY, txn);
    pthread_rwlock_unlock(&log->map_lock);
    if (rc == MDB_MAP_RESIZED) {
      if (*txn) {
        mdb_txn_abort(*txn);
        *txn = NULL;
      }
      log_map_adopt(log);
      continue;
    }
    if (rc && *txn) {
      mdb_txn_abort(*txn);
      *txn = NULL;
    }
    return rc;
  }
}

int log_wal_attach(struct log *log) {
  struct wal *w = calloc(1, sizeof *w);
  if (!w) return log_error(log, ENGRAM_ENOMEM, "open: out of memory");
  w->log = log;
  w->fd = -1;
  w->pos = -1;
  pthread_mutex_init(&w->sync_mu, NULL);
  log->wal = w;
  char f[4200];
  snprintf(f, sizeof f, "%s/" LOG_WAL_FILE, log->path);
  int rc = 0;
  if (mdb_env_get_fd(log->env, &w->data_fd) || data_psize(w->data_fd, &w->psize) < 0) {
    rc = log_error(log, ENGRAM_EIO, "open %s: cannot read the data file's page size", log->path);
  } else if ((w->fd = open(f, O_RDWR | O_CLOEXEC)) < 0) {
    int e = errno;
    rc = log_error(log, log_open_errno(e), "open %s: cannot write %s: %s: %s", log->path, f,
                   strerror(e), log_open_advice(e));
  } else if ((rc = shm_open_file(log->path, 0, &w->shm)) < 0 && rc != -ENOENT) {
    rc = log_error(log, log_open_errno(-rc), "open %s: cannot map %s/" LOG_WAL_SHM ": %s: %s",
                   log->path, log->path, strerror(-rc), log_open_advice(-rc));
  } else if (rc < 0 || w->shm->magic != WAL_SHM_MAGIC) {
    rc = log_error(log, ENGRAM_EIO,
                   "open %s: %s/" LOG_WAL_SHM
                   " is missing or damaged: close "
                   "every process using the log and open it again",
                   log->path, log->path);
  }
  if (rc) {
    log_wal_detach(log, 0);
    return rc;
  }
  w->slot = WAL_HDR_PAGE + 2ull * w->psize;
  struct stat st;
  int sized = fstat(w->data_fd, &st) == 0;
  if (sized) w->data_end = (uint64_t)st.st_size;
  /* Writes are held in the modes that flush each commit, in a file without holes (pages
   * LMDB freed unwritten, or a file an older engram extended): see hold_write. */
  w->hold = sized && log->opts.durability != ENGRAM_DURABILITY_ASYNC &&
            !getenv("ENGRAM_TEST_NO_HOLD") &&
            (!st.st_size || fallocate(w->data_fd, FALLOC_FL_KEEP_SIZE, 0, st.st_size) == 0);
  w->pin_asked = w->pin_tail = __atomic_load_n(&w->shm->tail, __ATOMIC_ACQUIRE);
  w->cap = wal_cap_from_env();
  /* A file smaller than the default (ENGRAM_TEST_WAL_SIZE) has smaller steps. */
  w->pin_every = WAL_PIN_EVERY < w->cap / 64 ? WAL_PIN_EVERY : w->cap / 64;
  w->pin_lag_max = WAL_PIN_LAG_MAX < w->cap / 8 ? WAL_PIN_LAG_MAX : w->cap / 8;
  if ((rc = pin_begin(log, &w->pin)))
    rc = log_error(log, log_err_mdb(rc), "open %s: %s", log->path, log_mdb_text(rc));
  pthread_mutex_lock(&registry_mu);
  int i = 0;
  while (i < WAL_MAX_HANDLES && registry[i].w) i++;
  if (!rc && i == WAL_MAX_HANDLES)
    rc = log_error(log, ENGRAM_ELIMIT, "open: more than %d logs open for writing in this process",
                   WAL_MAX_HANDLES);
  if (!rc) {
    registry[i].fd = w->data_fd;
    __atomic_store_n(&registry[i].w, w, __ATOMIC_RELEASE);
    if (i >= registry_top) __atomic_store_n(&registry_top, i + 1, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&registry_mu);
  /* The pin's commit may be another process's, its record not yet flushed. */
  if (!rc &&
      __atomic_load_n(&w->shm->synced, __ATOMIC_ACQUIRE) <
          __atomic_load_n(&w->shm->seq, __ATOMIC_ACQUIRE) &&
      fdatasync(w->fd) < 0)
    rc = log_error(log, err_from_errno(errno), "open %s: flush %s: %s", log->path, f,
                   strerror(errno));
  if (rc) log_wal_detach(log, 0);
  return rc;
}

/* An ended read transaction kept for reuse as a pin, or NULL (pin_begin starts one). */
static MDB_txn *pin_spare(struct wal *w) {
  MDB_txn *t = NULL;
  pthread_mutex_lock(&w->sync_mu);
  if (w->n_spare) t = w->spare[--w->n_spare];
  pthread_mutex_unlock(&w->sync_mu);
  return t;
}

/* Makes cand (a read transaction begun before the records up to upto were known
 * durable) the pin when `durable` and newer than the pin; ends whichever is left over,
 * keeping it for reuse. */
static void pin_offer(struct wal *w, MDB_txn *cand, int durable, uint64_t upto) {
  pthread_mutex_lock(&w->sync_mu);
  if (cand && durable && upto > w->pin_seq) {
    MDB_txn *old = w->pin;
    w->pin = cand;
    w->pin_seq = upto;
    __atomic_store_n(&w->pin_tail, __atomic_load_n(&w->shm->tail, __ATOMIC_ACQUIRE),
                     __ATOMIC_RELEASE);
    cand = old;
  }
  if (cand) {
    mdb_txn_reset(cand);
    if (w->n_spare < WAL_SPARE_PINS)
      w->spare[w->n_spare++] = cand;
    else
      mdb_txn_abort(cand);
  }
  pthread_mutex_unlock(&w->sync_mu);
}

/* A flush descriptor of the file, from the handle's pool or newly opened. -1 (errno set)
 * when none opens. */
static int flush_fd_take(struct log *log) {
  struct wal *w = log->wal;
  int fd = -1;
  pthread_mutex_lock(&w->sync_mu);
  if (w->n_flush_fd) fd = w->flush_fd[--w->n_flush_fd];
  pthread_mutex_unlock(&w->sync_mu);
  if (fd >= 0) return fd;
  char f[4200];
  snprintf(f, sizeof f, "%s/" LOG_WAL_FILE, log->path);
  return open(f, O_RDWR | O_CLOEXEC);
}

static void flush_fd_give(struct log *log, int fd) {
  struct wal *w = log->wal;
  if (fd < 0) return;
  pthread_mutex_lock(&w->sync_mu);
  if (w->n_flush_fd < WAL_FLUSH_FDS) {
    w->flush_fd[w->n_flush_fd++] = fd;
    fd = -1;
  }
  pthread_mutex_unlock(&w->sync_mu);
  if (fd >= 0) close(fd);
}

/* fdatasync, failing with EIO at the Nth call made while ENGRAM_TEST_WAL_FAIL_FLUSH is N
 * (tests: a disk that loses a write-back). */
static int flush_fails(int fd) {
  static long calls;
  const char *e = getenv("ENGRAM_TEST_WAL_FAIL_FLUSH");
  if (e && __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED) == atol(e)) {
    errno = EIO;
    return -1;
  }
  return fdatasync(fd);
}

#define WAL_TURN_WAIT_NS 2000000ll /* a sleep for another process's flush, before looking again */
#define WAL_TURN_MAX_WAITS 25      /* sleeps before flushing regardless (a stuck flush) */

long log_futex(void *word, int op, uint32_t val, const struct timespec *ts) {
  return syscall(SYS_futex, word, op, val, ts, NULL, 0);
}

int log_pid_gone(int32_t pid) {
  if (pid <= 0) return 1;
  if (kill(pid, 0) < 0 && errno == ESRCH) return 1;
  char path[64], buf[256];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "re");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *p = strrchr(buf, ')'); /* the state follows the command's name */
  return p && p[1] == ' ' && p[2] == 'Z';
}

/* Whose turn it is to flush, between processes. Each process's flush costs a cache flush
 * of the disk, and eight processes that each flush their own record pay eight where one
 * would do. So the process that starts a flush holds the turn (flush_owner) until it
 * ends; a process whose records came after that flush began sleeps until it ends, then
 * the first one awake flushes for all who waited meanwhile. Threads of one process flush
 * side by side as before (their commits are grouped by commit.c already). Returns 1 when
 * a flush of another process made the records up to upto durable; 0 when the caller must
 * flush, with *owner set when it holds the turn (flush_turn_end gives it back). Waiting
 * is only a saving: what is durable is decided by synced alone, a dead owner's turn is
 * taken back, and after WAL_TURN_MAX_WAITS sleeps the caller flushes anyway. */
static int flush_turn(struct wal_shm *s, uint64_t upto, int *owner) {
  int32_t me = (int32_t)self_pid();
  *owner = 0;
  for (int waits = 0;;) {
    if (__atomic_load_n(&s->synced, __ATOMIC_ACQUIRE) >= upto) return 1;
    int32_t cur = __atomic_load_n(&s->flush_owner, __ATOMIC_ACQUIRE);
    if (cur == 0) {
      if (__atomic_compare_exchange_n(&s->flush_owner, &cur, me, 0, __ATOMIC_ACQ_REL,
                                      __ATOMIC_ACQUIRE)) {
        *owner = 1;
        return 0;
      }
      continue;
    }
    if (cur == me || waits >= WAL_TURN_MAX_WAITS) return 0;
    uint32_t gen = __atomic_load_n(&s->flush_gen, __ATOMIC_ACQUIRE);
    __atomic_add_fetch(&s->flush_waiters, 1, __ATOMIC_ACQ_REL);
    long r = 0;
    /* Asleep only while that flush still runs: its end moves flush_gen first. */
    if (__atomic_load_n(&s->flush_owner, __ATOMIC_ACQUIRE) == cur &&
        __atomic_load_n(&s->synced, __ATOMIC_ACQUIRE) < upto) {
      struct timespec ts = {0, WAL_TURN_WAIT_NS};
      r = log_futex(&s->flush_gen, FUTEX_WAIT, gen, &ts);
    }
    __atomic_sub_fetch(&s->flush_waiters, 1, __ATOMIC_ACQ_REL);
    if (r < 0 && errno == ETIMEDOUT) {
      waits++;
      if (log_pid_gone(cur)) /* killed during its flush (reaped or not) */
        __atomic_compare_exchange_n(&s->flush_owner, &cur, 0, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
    }
  }
}

/* Tests: a flush that holds the turn for ENGRAM_TEST_WAL_FLUSH_STALL_MS before it begins
 * (a process stopped or killed during its flush). */
static void flush_turn_test_stall(void) {
  const char *e = getenv("ENGRAM_TEST_WAL_FLUSH_STALL_MS");
  if (e && atol(e) > 0) clock_sleep_ns(atol(e) * 1000000ll);
}

/* Gives the turn back after the owner's flush (synced already moved) and wakes those
 * waiting for it. */
static void flush_turn_end(struct wal_shm *s) {
  __atomic_store_n(&s->flush_owner, 0, __ATOMIC_RELEASE);
  __atomic_add_fetch(&s->flush_gen, 1, __ATOMIC_ACQ_REL);
  if (__atomic_load_n(&s->flush_waiters, __ATOMIC_ACQUIRE))
    log_futex(&s->flush_gen, FUTEX_WAKE, INT_MAX, NULL);
}

/* Makes every record written so far durable. Flushes of one process's threads run
 * concurrently; between processes one flush runs at a time and covers the records of
 * all that waited for it (flush_turn). */
int log_wal_sync(struct log *log) {
  struct wal *w = log->wal;
  struct wal_shm *s = w->shm;
  uint64_t want = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
  if (__atomic_load_n(&s->synced, __ATOMIC_ACQUIRE) >= want) return 0;
  /* A candidate pin first: its commit's record is then among those this flush covers. */
  MDB_txn *cand = pin_spare(w);
  int prc = pin_begin(log, &cand);
  uint64_t upto = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
  int rc = 0;
  int owner = 0;
  if (flush_turn(s, upto, &owner)) {
    /* Durable through another process's flush: the pin moves all the same. */
    pin_offer(w, cand, prc == 0, upto);
    pthread_mutex_lock(&log->mu);
    log->st_flushes_shared++;
    pthread_mutex_unlock(&log->mu);
    return 0;
  }
  if (owner) flush_turn_test_stall();
  int64_t t0 = clock_monotonic_ns();
  int fd = flush_fd_take(log);
  if (fd < 0 || flush_fails(fd) < 0) {
    int e = errno;
    /* Pages of records may be lost: nothing after them counts until a checkpoint (the
     * next commit of any process makes one) has made data.mdb durable as it is. */
    __atomic_store_n(&s->broken, 1, __ATOMIC_RELEASE);
    rc = log_error(log, err_from_errno(e),
                   "commit: flush %s/" LOG_WAL_FILE
                   ": %s; the write is committed but not known to be durable (the next "
                   "commit makes the log durable without the file, or fails if the disk "
                   "still does)",
                   log->path, strerror(e));
  } else if (__atomic_load_n(&s->broken, __ATOMIC_ACQUIRE)) {
    rc = log_error(log, ENGRAM_EIO,
                   "commit: an earlier flush of %s/" LOG_WAL_FILE
                   " failed, so this write is committed but not known to be durable (the "
                   "next commit makes the log durable without the file)",
                   log->path);
  }
  flush_fd_give(log, fd);
  int64_t took = clock_monotonic_ns() - t0;
  if (rc == 0) {
    uint64_t cur = __atomic_load_n(&s->synced, __ATOMIC_ACQUIRE);
    while (cur < upto && !__atomic_compare_exchange_n(&s->synced, &cur, upto, 0, __ATOMIC_ACQ_REL,
                                                      __ATOMIC_ACQUIRE)) {
    }
  }
  if (owner) flush_turn_end(s);
  pin_offer(w, cand, rc == 0 && prc == 0, upto);
  pthread_mutex_lock(&log->mu);
  log->last_flush_ns = took;
  log->st_flushes++;
  log_hist_add(&log->st_flush, took);
  /* The zeros ahead of the tail run short: the flusher writes more. */
  uint64_t zeroed = __atomic_load_n(&s->zeroed, __ATOMIC_RELAXED),
           tail = __atomic_load_n(&s->tail, __ATOMIC_RELAXED);
  if (rc == 0 && zeroed < w->cap && zeroed - tail < WAL_ZERO_CHUNK / 2) {
    log->wal_work |= LOG_WAL_ZERO_AHEAD;
    pthread_cond_broadcast(&log->flush_cv);
  }
  pthread_mutex_unlock(&log->mu);
  return rc;
}

/* Writes the span [lo, hi) of data.mdb out a chunk at a time, each waited for before the
 * next is queued, so that flushes of the write-ahead file meanwhile wait behind one
 * chunk, not behind the whole checkpoint. On a log whose free pages are many (a big
 * one), a commit writes pages no commit since the last checkpoint wrote, and a
 * checkpoint of 32 MiB of records wrote tens of MB of data.mdb at once: flushes of the
 * file waited up to 90 ms meanwhile (e2e p99 78-102 ms at 2,000 events/s; 11-15 ms with
 * 256 KiB steps, 15-37 ms with 1 MiB steps). */
static int write_out_paced(int fd, uint64_t lo, uint64_t hi) {
  if (hi <= lo) return 0;
  uint64_t chunk = (hi - lo) / WAL_PACE_STEPS;
  if (chunk < WAL_PACE_CHUNK) chunk = WAL_PACE_CHUNK;
  for (uint64_t at = lo; at < hi; at += chunk)
    if (sync_file_range(
            fd, (off64_t)at, (off64_t)(hi - at < chunk ? hi - at : chunk),
            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) < 0)
      return -errno;
  return 0;
}

/* The background checkpoint, holding LMDB's write lock (commits wait) only for moments:
 * note the newest commit's meta pages and where the records after it begin, flush both
 * files outside the lock (data.mdb then holds that commit, at least), write a header that
 * replays from there, flush it outside the lock too, and only then publish the new start.
 * The space before it is then free for the records to come back to. A crash before the
 * header is whole replays from the old one, whose records are all still in place; a crash
 * after it replays from the new one, and the records committed meanwhile follow it in
 * sequence. While one checkpoint flushes its header (pending_gen), no other background
 * checkpoint writes one: it could replay from an earlier start than the one published. A
 * full checkpoint (checkpoint(), under the lock) may overwrite it: it is newer in every
 * respect, and the pending one then finds the generation moved and publishes nothing. */
static void checkpoint_fuzzy(struct log *log) {
  struct wal *w = log->wal;
  struct wal_shm *s = w->shm;
  unsigned char *metas = malloc(2 * (size_t)w->psize);
  MDB_txn *txn;
  if (!metas || own_txn_begin(log, &txn) != 0) {
    free(metas);
    return;
  }
  uint64_t gen = s->gen, start = s->tail, seq0 = s->seq + 1;
  uint64_t lo = s->dirty_lo, hi = s->dirty_hi;
  s->dirty_lo = s->dirty_hi = 0; /* what comes now is the next checkpoint's */
  int rc = pread_all(w->data_fd, metas, 2 * (size_t)w->psize, 0);
  own_txn_end(log, txn);
  if (rc == 0 && fdatasync(w->fd) == 0 && write_out_paced(w->data_fd, lo, hi) == 0 &&
      fdatasync(w->data_fd) == 0 && own_txn_begin(log, &txn) == 0) {
    /* Unless another checkpoint came first (a commit that found the file full, another
     * process) or is flushing its header: then this one is stale. */
    int mine = s->gen == gen && s->pending_gen != gen + 1 &&
               put_header(w->fd, w->data_fd, w->psize, gen + 1, seq0, start, metas) == 0;
    if (mine) s->pending_gen = gen + 1;
    own_txn_end(log, txn);
    if (mine) {
      if (log_wal_test_header_hook) log_wal_test_header_hook(log);
      int flushed = fdatasync(w->fd) == 0;
      if (own_txn_begin(log, &txn) == 0) {
        if (flushed && s->gen == gen) {
          s->gen = gen + 1;
          s->seq0 = seq0;
          __atomic_store_n(&s->start, start, __ATOMIC_RELAXED);
          s->wrapped = s->tail < start;
          __atomic_fetch_add(&w->checkpoints, 1, __ATOMIC_RELAXED);
        }
        s->pending_gen = 0;
        own_txn_end(log, txn);
      } else {
        /* Nothing published: the old start stays, and the header (if it reached the
         * disk) replays records that are still in place. */
        __atomic_store_n(&s->pending_gen, 0, __ATOMIC_RELEASE);
      }
    }
  }
  free(metas);
}

void (*log_wal_test_header_hook)(struct log *log);

/* Bytes of records from `from` to `tail` in the ring of a file of `cap` bytes whose
 * records begin at `first`. */
static uint64_t ring_dist(uint64_t from, uint64_t tail, uint64_t first, uint64_t cap) {
  return tail >= from ? tail - from : (cap - from) + (tail - first);
}

/* Moves the pin to the newest commit when its record is already flushed (by another
 * thread or process: log_wal_sync then had nothing to do), so that LMDB may reuse the
 * pages freed before it. */
static void pin_advance(struct log *log) {
  struct wal *w = log->wal;
  struct wal_shm *s = w->shm;
  MDB_txn *cand = pin_spare(w);
  if (pin_begin(log, &cand) != 0) return;
  /* Read after the candidate began: its commit's record is among those up to here. */
  uint64_t upto = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
  int durable = __atomic_load_n(&s->synced, __ATOMIC_ACQUIRE) >= upto &&
                !__atomic_load_n(&s->broken, __ATOMIC_ACQUIRE);
  pin_offer(w, cand, durable, upto);
}

/* Flushes the file (or finds it flushed) and moves the pin to the newest commit. */
static void pin_move(struct log *log) {
  if (log_wal_sync(log) == 0) pin_advance(log);
}

void log_wal_kick(struct log *log) {
  struct wal *w = log->wal;
  if (!w) return;
  struct wal_shm *s = w->shm;
  uint64_t tail = __atomic_load_n(&s->tail, __ATOMIC_ACQUIRE),
           from = __atomic_load_n(&s->kicked, __ATOMIC_ACQUIRE);
  if (ring_dist(w->pin_asked, tail, 2 * w->slot, w->cap) >= w->pin_every) {
    w->pin_asked = tail; /* the leader's: one commit at a time per handle */
    pthread_mutex_lock(&log->mu);
    log->wal_work |= LOG_WAL_PIN;
    pthread_cond_broadcast(&log->flush_cv);
    pthread_mutex_unlock(&log->mu);
  }
  if (ring_dist(__atomic_load_n(&w->pin_tail, __ATOMIC_ACQUIRE), tail, 2 * w->slot, w->cap) >=
      w->pin_lag_max)
    pin_move(log); /* the flusher fell behind (a slow flush): wait for it here */
  if (from > tail) from = __atomic_load_n(&s->start, __ATOMIC_RELAXED); /* back to the first slot */
  if (tail - from < (1u << 20)) return;
  if (!__atomic_compare_exchange_n(&s->kicked, &from, tail, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    return; /* another thread or process does it */
  sync_file_range(w->fd, (off64_t)from, (off64_t)(tail - from), SYNC_FILE_RANGE_WRITE);
}

void log_wal_work(struct log *log, int work) {
  struct wal *w = log->wal;
  if (!w) return;
  if (work & LOG_WAL_ZERO_AHEAD) {
    /* Zeros written ahead of the tail, so that records land on blocks the file system
     * has already written: their flush then writes data only, no journal. Under LMDB's
     * write lock (no record is being written meanwhile), flushed outside it. */
    MDB_txn *txn;
    if (own_txn_begin(log, &txn) == 0) {
      struct wal_shm *s = w->shm;
      uint64_t to = s->zeroed + WAL_ZERO_CHUNK;
      if (to > w->cap) to = w->cap;
      int ok = s->zeroed < to && zero_fill(w->fd, to) == 0;
      if (ok) __atomic_store_n(&s->zeroed, to, __ATOMIC_RELAXED);
      own_txn_end(log, txn);
      if (ok) fdatasync(w->fd);
    }
  }
  if (work & LOG_WAL_PIN) pin_move(log);
  if (work & LOG_WAL_CHECKPOINT) checkpoint_fuzzy(log);
}

/* Checkpoints when this handle is the last one open (it may then take the open lock
 * exclusively), so that data.mdb alone is the log again. */
static void checkpoint_at_close(struct log *log) {
  struct wal *w = log->wal;
  if (w->shm->tail == w->shm->start && !w->shm->wrapped) return; /* nothing to replay */
  if (log->open_fd < 0 || flock(log->open_fd, LOCK_EX | LOCK_NB) < 0) return;
  MDB_txn *txn;
  if (own_txn_begin(log, &txn) == 0) { /* LMDB's write lock */
    checkpoint(w);
    own_txn_end(log, txn);
  }
}

void log_wal_detach(struct log *log, int closing) {
  struct wal *w = log->wal;
  if (!w) return;
  pthread_mutex_lock(&registry_mu);
  for (int i = 0; i < WAL_MAX_HANDLES; i++)
    if (registry[i].w == w) __atomic_store_n(&registry[i].w, NULL, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&registry_mu);
  if (w->pin) mdb_txn_abort(w->pin);
  w->pin = NULL;
  while (w->n_spare) mdb_txn_abort(w->spare[--w->n_spare]);
  while (w->n_flush_fd) close(w->flush_fd[--w->n_flush_fd]);
  if (closing && w->shm && w->fd >= 0) checkpoint_at_close(log);
  if (w->shm) munmap(w->shm, 4096);
  if (w->fd >= 0) close(w->fd);
  free(w->buf);
  free(w->held);
  pthread_mutex_destroy(&w->sync_mu);
  free(w);
  log->wal = NULL;
}

uint64_t log_wal_seq(const struct log *log) {
  return __atomic_load_n(&log->wal->shm->seq, __ATOMIC_ACQUIRE);
}

uint64_t log_wal_synced(const struct log *log) {
  return __atomic_load_n(&log->wal->shm->synced, __ATOMIC_ACQUIRE);
}

uint64_t log_wal_checkpoints(const struct log *log) {
  return log->wal ? __atomic_load_n(&log->wal->checkpoints, __ATOMIC_RELAXED) : 0;
}

uint64_t log_wal_appended(const struct log *log) { return log->wal ? log->wal->appended : 0; }
