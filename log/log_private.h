/* log_private.h — declarations shared by the files of log/ only. */
#ifndef ENGRAM_LOG_PRIVATE_H
#define ENGRAM_LOG_PRIVATE_H

#include "log/log.h"

/* Private codes that never leave log/: the commit leader handles them. */
#define LOG_EMAPFULL -1000
/* A job met a database handle opened after its transaction began: rerun the batch. */
#define LOG_ENEWDBI -1002
/* They never leave log_job_wait() (commit.c), the one exit of every write, which turns
 * any code outside engram's table into ENGRAM_EINTERNAL; read paths never make them. */

#define LOG_DB_META "meta"
#define LOG_DB_TOPICS "topics"
#define LOG_DB_IDEM "idem"
#define LOG_DB_DICTS "dicts"
#define LOG_DB_KEYIDX "keyidx" /* key compaction's index and queues (keys.c) */
#define LOG_DB_PARK "park"     /* parked free pages (park.c) */
#define LOG_TOPIC_DB_PREFIX "t/"
#define LOG_META_MAX_TOPICS "max_topics" /* meta key: the log's max_topics (be32) */
#define LOG_DEFAULT_MAX_TOPICS 1024

/* LMDB's page header: the bytes before a value on its first overflow page. */
#define LOG_PAGEHDRSZ 16
/* How a parked value begins (park.c): no other value of the log can (stored records,
 * free lists and the other databases' values never begin with four 0xff bytes). */
#define LOG_PARK_MAGIC \
  "\xff\xff\xff\xff"   \
  "engram:park"
#define LOG_PARK_MAGIC_LEN 16

struct log_dbi_req {
  const char *name;
  unsigned int flags;
  MDB_dbi dbi;
};

/* One topic appended to in a commit, for the commit hook. */
struct log_touched {
  char topic[ENGRAM_MAX_NAME + 1];
  uint64_t head;
  struct log_touched *next;
};
void log_touch(log_wtx *w, const char *topic, uint64_t head);
/* Drops the entries added after `mark` (the job that added them was rolled back). */
void log_touch_rollback(log_wtx *w, struct log_touched *mark);

/* commit.c */
struct log_job {
  log_job_fn fn;
  void *arg;
  int solo;             /* run alone in a top-level transaction */
  int relaxed;          /* released after its commit, without waiting for the meta flush */
  int may_defer;        /* log_write_deferrable: the job may ask (w->defer) for relaxed */
  int deferred;         /* it did, in its last run */
  int rc;               /* the job's result, or the commit's error */
  int done;             /* set under log->mu; the job may vanish right after */
  int waiting;          /* its writer sleeps on wake (set and cleared under log->mu) */
  int wake;             /* futex word the writer sleeps on: 0 sleep, 1 look again (the
                           leadership may be its), 2 done and counted by the releaser */
  uint64_t enq_commits; /* log->st_commits when it was queued */
  int64_t enq_ns;       /* CLOCK_MONOTONIC when it was queued */
  char msg[256];        /* the leader's error message for this job */
  struct log_job *next;
};
/* Counts a duration into a histogram (engram_duration_hist); the caller serialises. */
static inline void log_hist_add(engram_duration_hist *h, int64_t ns) {
  static const uint64_t bounds_us[] = ENGRAM_DURATION_BOUNDS_US;
  if (ns < 0) ns = 0;
  size_t i = 0;
  while (i < sizeof bounds_us / sizeof *bounds_us && (uint64_t)ns > bounds_us[i] * 1000) i++;
  h->buckets[i]++;
  h->count++;
  h->sum_ns += (uint64_t)ns;
}

/* log_write in two steps, so a caller can fix the order of its jobs in the queue. */
int log_job_enqueue(struct log *log, struct log_job *job);
int log_job_wait(struct log *log, struct log_job *job);
int log_commit_start(struct log *log);
/* Whether the calling thread is running a write job (its transaction is a write one). */
int log_in_write_job(void);
void log_commit_stop(struct log *log);
/* Starts the handle's checkpointer thread, on the first checkpoint asked for (with mu
 * held); until it runs (or when it cannot start) the flusher checkpoints. */
void log_checkpointer_start_locked(struct log *log);

/* wal.c: a futex call (op FUTEX_WAIT or FUTEX_WAKE for a word shared between processes,
 * their _PRIVATE forms for one within a process). */
struct timespec;
long log_futex(void *word, int op, uint32_t val, const struct timespec *ts);
/* wal.c: whether process pid is gone: it no longer exists, or it is a zombie (dead, not
 * yet reaped by its parent), which answers kill(pid, 0) but runs nothing more. A pid of
 * another pid namespace is not seen (see where each caller allows for that). */
int log_pid_gone(int32_t pid);

/* share.c: single appends of several processes committed together (see its top). */
#define LOG_SHARE_LOCAL 1 /* log_share_append: not taken, append as usual */
/* At an open that has the log to itself: empties DIR/commit.shm. */
void log_share_reset(const char *dir);
/* After the open (read-write): maps the file and registers the handle; without it (no
 * file, no entry left, a handle with its own clock) the handle's appends commit alone. */
void log_share_attach(struct log *log);
void log_share_detach(struct log *log);
/* Appends one event through a shared commit when another process has the log open for
 * writing: 0 or an error as log_append, or LOG_SHARE_LOCAL. */
int log_share_append(struct log *log, const char *topic, const engram_event *ev, uint64_t *offset,
                     int *duplicate);
/* The event in a slot: encoded into buf (0 when it does not fit), decoded in place
 * (-1 when malformed; the strings and payload point into buf, headers has room for
 * ENGRAM_MAX_HEADERS). */
size_t log_share_encode(const char *topic, const engram_event *ev, unsigned char *buf, size_t cap);
int log_share_decode(const unsigned char *buf, size_t len, const char **topic, engram_event *ev,
                     engram_header *headers);

/* pipeline.c */
void log_pipe_stop(struct log *log);

/* env.c */
void log_map_adopt(struct log *log);
int log_map_grow(struct log *log);
int log_open_dbi(struct log *log, const char *name, unsigned int flags, MDB_dbi *out);
/* dbi_mu, taken by the leader around a solo job: opening a handle inside the job then
 * fails with ENGRAM_EINTERNAL instead of waiting for the lock its own thread holds. */
void log_dbi_lock(struct log *log);
void log_dbi_unlock(struct log *log);
int log_rmtree(const char *path);
/* Makes directory entries durable (fsync of `path` opened with `flags`); 0 or -errno. */
int log_fsync_path(const char *path, int flags);
/* What to do about an errno met opening a log (read-only mount, permissions, full disk). */
const char *log_open_advice(int e);
/* The engram code of an errno met opening a log's files: a read-only file system is
 * EDENIED, as a file this user may not write is (the CLI's read commands then open the
 * log read-only). */
int log_open_errno(int e);
/* Gives the first `size` bytes of fd disk blocks, extending the file as needed, so that a
 * store through a shared mapping of them cannot meet a full disk: on one, touching a page
 * the file system cannot back kills the process with SIGBUS. 0, or -errno (-ENOSPC when
 * the disk is full). Where the file system cannot allocate ahead it only extends the file. */
int log_file_reserve(int fd, size_t size);
/* log_open for reclaim.c, which holds DIR/open.lock exclusively itself: the handle takes
 * no lock of its own. */
int log_open_unlocked(const char *path, const engram_options *opts, struct log **out);

/* wal.c: the write-ahead file (see the comment at its top). */
#define LOG_WAL_FILE "wal"
#define LOG_WAL_SHM "wal.shm"
/* Installs the capture of LMDB's writes once per process; 1 when the file can be used. */
int log_wal_supported(void);
/* At an open that has the log to itself (the open lock held exclusively): replays the
 * file into data.mdb, flushes it and starts the file over (creating it when missing).
 * Read-only: writes nothing, and refuses (EDENIED) a log that needs a replay. Returns 0
 * or an error with its message set. */
int log_wal_recover(const char *dir, int rdonly);
/* After the environment is open (read-write): registers its data file, pins the newest
 * commit. 0 or an error with its message set (log->wal is then NULL). */
int log_wal_attach(struct log *log);
/* Makes every record appended so far durable (one flush, shared with other writers and
 * processes) and moves the pin. 0 or an error with its message set. */
int log_wal_sync(struct log *log);
/* The sequence number of the last record appended, and of the last one known durable. */
uint64_t log_wal_seq(const struct log *log);
uint64_t log_wal_synced(const struct log *log);
/* Work for the handle's background threads (log->wal_work): LOG_WAL_CHECKPOINT (the
 * checkpointer's) checkpoints when the file is half full; the flusher's LOG_WAL_ZERO_AHEAD
 * writes zeros ahead of the tail and its LOG_WAL_PIN flushes (or finds flushed) the
 * newest commit and moves the handle's pin to it. */
#define LOG_WAL_CHECKPOINT 1
#define LOG_WAL_ZERO_AHEAD 2
#define LOG_WAL_PIN 4
void log_wal_work(struct log *log, int work);
/* Async mode, after a commit: hands each new MiB of records to writeback at once, so that
 * the periodic flush has little left to write (and stalls no record write meanwhile),
 * asks for LOG_WAL_PIN after every WAL_PIN_EVERY bytes of records, and flushes and moves
 * the pin itself once WAL_PIN_LAG_MAX bytes of records follow it. */
void log_wal_kick(struct log *log);
/* Before mdb_env_close; `closing`: checkpoint when no other handle has the log open. */
void log_wal_detach(struct log *log, int closing);
uint64_t log_wal_checkpoints(const struct log *log);
/* Tests: called by the background checkpoint between writing its new header and flushing
 * it (NULL, the default: nothing). */
extern void (*log_wal_test_header_hook)(struct log *log);

/* reclaim.c */
#define LOG_OPEN_LOCK "open.lock"
#define LOG_RECLAIM_COPY "data.mdb.reclaim"
/* Takes the shared lock every handle holds on DIR/open.lock (see engram_reclaim): *fd is
 * the lock's descriptor, or -1 when the file can neither be opened nor created (a
 * read-only file system, a directory this user may not write). Fails with EBUSY, its
 * message set, while a reclaim holds the lock. */
int log_open_lock(const char *dir, int *fd);
/* As log_open_lock, first trying for the lock exclusively: *exclusive says whether it
 * got it (no other handle has the log open), and the caller then holds it exclusively
 * until it calls log_open_lock_share. */
int log_open_lock_ex(const char *dir, int *fd, int *exclusive);
/* Turns the exclusive lock into the shared one; EBUSY when a reclaim came in between. */
int log_open_lock_share(const char *dir, int fd);
/* Copies the environment of `log` compacted into `fd` (from the start), reporting the
 * bytes written under `phase` every 100 ms. Returns 0 or an LMDB/errno code. */
int log_copy_compact(struct log *log, int fd, const char *phase);
/* Less than 8 MiB free where the log lives. */
int log_disk_nearly_full(const struct log *log);
/* Moves a read transaction from log_read_begin to the newest snapshot in two steps, so
 * that it sees database handles opened since it began: pause resets it and releases the
 * map lock (the thread may then open handles, see log_open_dbi), resume renews it. Data
 * read through it before the pause is invalid after. After a failed resume the
 * transaction stays reset; log_read_end still ends it. */
void log_read_pause(struct log *log, MDB_txn *txn);
int log_read_resume(struct log *log, MDB_txn *txn);
void log_topic_cache_add(struct log *log, const char *name, MDB_dbi dbi);

/* topic.c */
void log_topic_cache_free(struct log *log);
void log_topic_handles_reclaim(struct log *log);

/* codec.c: record encoding and payload compression. */
typedef struct log_enc {
  unsigned char *buf; /* 4-byte CRC slot + message */
  size_t len;
  size_t cap;
} log_enc;
/* A payload compressed ahead of its record (log_codec_compress_batch). */
typedef struct log_zpay {
  const unsigned char *data;
  size_t len;
  uint32_t dict_id;
  int state; /* LOG_ZPAY_*: not done (log_codec_encode compresses), compressed, store raw */
} log_zpay;
enum { LOG_ZPAY_NONE, LOG_ZPAY_COMPRESSED, LOG_ZPAY_RAW };
/* pre (may be NULL): the payload as log_codec_compress_batch left it. */
int log_codec_encode(struct log *log, MDB_txn *txn, const log_topic *t, const engram_event *ev,
                     int64_t ts, uint64_t offset, const log_zpay *pre, log_enc *out);
/* Compresses the payloads of a big batch (at least 32 to compress) ahead of encoding, half
 * of them on a helper thread of the handle, so that two cores share the batch's zstd
 * work. *out receives one entry per event, valid until the next call on this handle, or
 * NULL when the batch is small (log_codec_encode then compresses each payload itself). */
int log_codec_compress_batch(struct log *log, MDB_txn *txn, const log_topic *t,
                             const engram_event *evs, size_t n, const log_zpay **out);
/* Decompresses a view's payload into dst (raw_len bytes). */
int log_codec_payload(struct log *log, MDB_txn *txn, uint32_t topic_id, const log_view *v,
                      void *dst);
void log_codec_caches_free(struct log *log);
/* Tests: called by a read between finding a payload's dictionary and decompressing. */
extern void (*log_codec_test_read_hook)(struct log *log);
/* Makes the codec's process-wide lock usable in a child made by fork(). */
void log_codec_after_fork(void);
/* Dictionary training in three steps, so only the first and last hold a transaction:
 * samples from the newest events (read txn), ZDICT training (no txn, the slow part), and
 * storing the dictionary as the topic's current one (write job). */
typedef struct log_samples {
  unsigned char *data;
  size_t *sizes;
  size_t n, used;
} log_samples;
typedef struct log_dict {
  unsigned char bytes[16 * 1024];
  size_t len;
  uint32_t id;
} log_dict;
int log_dict_samples(struct log *log, MDB_txn *txn, const log_topic *t, log_samples *out);
void log_samples_free(log_samples *s);
int log_dict_build(struct log *log, const char *topic, const log_samples *s, log_dict *out);
int log_dict_store(struct log *log, MDB_txn *txn, log_topic *t, const log_dict *d);
/* Trains a topic's dictionary outside any transaction (topic.c). */
int log_dict_train(struct log *log, const char *topic, uint32_t *dict_id);
/* A topic whose automatic training an append claimed: trained on the handle's trainer
 * thread, outside every commit (commit.c). */
void log_train_request(struct log *log, const char *topic);
void log_dict_forget_topic(struct log *log, uint32_t topic_id);

#endif
