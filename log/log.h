/* log.h — the log layer's interface to the layers above it (consumers/, net/). Private. */
#ifndef ENGRAM_LOG_H
#define ENGRAM_LOG_H

#include <lmdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/common.h"
#include "common/got.h"
#include "engram.h"

struct log;
struct log_view;

/* Checks the records of the layers above during log_verify()'s walk, in its read
 * transaction: calls damage(ctx, text) for each one that does not decode. consumers/
 * supplies one for group records (api/ passes it), so log/ needs no knowledge of groups. */
typedef void (*log_damage_fn)(void *ctx, const char *text);
typedef void (*log_verify_fn)(struct log *log, MDB_txn *txn, log_damage_fn damage, void *ctx);

/* Hook the layers above install to hear about commits (net/ publishes them). */
typedef void (*log_commit_hook)(void *ctx, const char *topic, uint64_t head);

/* Room for every named database of a log (15 today) with some to spare. */
#define LOG_MAX_AUX 32

/* An open log: what an embedded engram handle (api/) holds. */
struct log {
  MDB_env *env;
  char *path;
  engram_options opts;       /* with defaults filled in */
  unsigned int env_flags;    /* LMDB flags the environment was opened with */
  pthread_rwlock_t map_lock; /* read txns hold it shared; map growth holds it exclusive */
  MDB_dbi db_meta, db_topics, db_idem, db_dicts;

  /* Named databases the upper layers use (groups, leases ...), opened on first use. */
  pthread_mutex_t aux_mu;
  pthread_mutex_t dbi_mu; /* LMDB forbids concurrent mdb_dbi_open in one process */
  struct {
    char name[32];
    MDB_dbi dbi;
  } aux[LOG_MAX_AUX];
  int n_aux;

  /* Group commit: writers queue jobs, one leader runs them in one transaction. */
  pthread_mutex_t mu;
  pthread_cond_t cv;        /* broadcast when the leader leaves or a flush ends (a leader
                               waiting for flushes, close); a job's writer sleeps on the
                               job's own futex word (commit.c) */
  pthread_cond_t gather_cv; /* wakes a gathering leader when a writer queues */
  pthread_cond_t append_cv; /* broadcast after every commit that appended */
  struct log_job *q_head, *q_tail;
  size_t q_len;               /* jobs queued */
  size_t active;              /* jobs queued, running or pending: their writers wait */
  size_t writers_hint;        /* writers expected back: the most recently active, lowered
                                 when a gather wait times out */
  int64_t last_flush_ns;      /* duration of the last explicit flush */
  int gathering;              /* the leader waits on gather_cv for writers to queue */
  int64_t gather_max_ns;      /* longest such wait; 0 = 500 us. The daemon raises it to
                                 about a network round trip. */
  int leader;                 /* 1 while a thread leads a commit */
  struct log_job *leader_job; /* that thread's own job */
  uint64_t append_seq;        /* bumped after every commit that appended */
  int64_t last_commit_ns;     /* monotonic time of the last commit */
  int dirty;                  /* commits not yet forced to disk (nometasync/async) */
  /* Sync mode: the batch committed last, released once a later flush covers its meta
   * page. Whoever leads next releases it. */
  struct log_job *pending_jobs;
  struct log_touched *pending_touched;
  /* With the write-ahead file: batches committed and awaiting their flush, each flushed
   * by the thread that committed it after handing the leadership on (the next batch
   * commits during that flush); a flush releases every one its records are covered by. */
  int flushing;
  struct batch *inflight;
  /* Commit statistics (under mu) for engram_commit_stats_get(). */
  uint64_t st_commits;         /* write transactions that changed something */
  uint64_t st_jobs;            /* jobs those carried */
  uint64_t st_flushes;         /* flushes of the data file by the commit path */
  uint64_t st_appends_shared;  /* single appends committed through share.c */
  uint64_t st_appends_carried; /* other processes' appends this handle's commits carried */
  uint64_t st_flushes_shared;  /* syncs another process's flush of the write-ahead file did */
  uint64_t st_max_wait;        /* most commits a job waited through, from queueing to its
                                  release (the leader's own: to its handing over) */
  uint64_t st_batch_hist[8];   /* commits of 1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, 65+ jobs */
  engram_duration_hist st_write, st_commit, st_flush; /* engram_commit_stats' histograms */
  int64_t commit_ns;  /* the leader's last mdb_txn_commit, counted by count_commit */
  int nested_batches; /* (leader) batches still to run with a transaction per job, after
                         one whose job failed (commit.c run_batch) */

  pthread_cond_t flush_cv; /* wakes the flusher early at close */
  pid_t owner_pid;         /* the process that opened the handle */
  unsigned char id[16];    /* the log id (meta database); all zero = none yet */
  int64_t created_ns;      /* when the log was created (meta database); 0 = unknown */
  pthread_t flusher;       /* syncer (sync mode) or periodic flusher (other modes) */
  int flusher_running;
  pthread_t checkpointer; /* runs LOG_WAL_CHECKPOINT (commit.c), beside the flusher */
  int checkpointer_running;
  int closing;

  /* Topic cache: name -> dbi and config, refreshed when the topic's meta changes. */
  struct log_topic_cache *topics;

  /* Zstd dictionary caches. */
  struct log_dict_cache *dicts;
  /* Compresses half of a big batch's payloads beside the leader (codec.c), made on first
   * use; its buffers are the leader's (one job runs at a time). */
  struct log_zhelper *zhelper;

  struct log_pipe *pipe;     /* pipelined appends (pipeline.c), made on first use */
  struct log_touched *train; /* topics waiting for their automatic dictionary (mu) */
  pthread_t trainer;         /* trains them (commit.c), started on the first request */
  pthread_cond_t train_cv;   /* wakes it; initialised when it starts */
  int trainer_running;

  struct log_share *share;        /* share.c; NULL = appends commit within the process */
  struct log_board *board;        /* board.c; NULL for read-only handles */
  log_commit_hook notify_hook;    /* the layer above hears commits (log_notify_set) */
  void *notify_ctx;               /* its argument */
  void (*notify_release)(void *); /* frees notify_ctx when replaced or at close; may be NULL */
  log_commit_hook commit_hook;    /* may be NULL */
  void *commit_hook_ctx;
  /* Wait hook for fetch: when set (net/ notifications), called instead of the polling
   * fallback. Returns when something may have been appended to `topic` or the deadline
   * (CLOCK_MONOTONIC ns) passed. */
  void (*wait_hook)(void *ctx, struct log *log, const char *topic, int64_t deadline_mono_ns);
  void *wait_hook_ctx;
  struct cg_maint *maint;      /* the consumer layer's maintenance runner, NULL = none */
  int open_fd;                 /* DIR/open.lock, held shared while open (reclaim.c); -1 = none */
  engram_progress_fn progress; /* engram_progress_set(); NULL = none */
  struct wal *wal;             /* the write-ahead file (wal.c); NULL = LMDB flushes itself */
  uint64_t park_last_pgno;     /* data.mdb's last page at the last parking pass (park.c) */
  int park_released;           /* a pass gave parked pages back since the handle opened */
  int park_quiet;              /* passes since one last did */
  int wal_work;                /* (mu) LOG_WAL_* work for the flusher thread (wal.c) */
  void *progress_ctx;
};

/* ---------------------------------------------------------------------------------
 * Errors with context. Sets the calling thread's message and returns `code`.
 * ------------------------------------------------------------------------------ */
int log_error(const struct log *log, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_error_clear(const struct log *log);
/* Translates an LMDB return code (MDB_* or errno) to ENGRAM_E*. The codes LMDB returns
 * when a page or a transaction is unusable (MDB_CORRUPTED, MDB_PAGE_NOTFOUND, MDB_BAD_TXN,
 * MDB_CURSOR_FULL, MDB_PAGE_FULL, MDB_INCOMPATIBLE, MDB_INVALID) become ENGRAM_ECORRUPT:
 * engram uses LMDB so that they arise only from a damaged data.mdb. */
int log_err_mdb(int rc);
/* Text for an LMDB code in a message: for damage, what is wrong and what to do; else
 * mdb_strerror(). Valid until the calling thread's next call. */
const char *log_mdb_text(int rc);

/* The handle's clock (CLOCK_REALTIME ns; the test clock when one is set). */
int64_t log_now_ns(const struct log *log);
/* Nonzero when the handle was opened in another process (used after a fork). */
static inline int log_foreign(const struct log *log) { return log->owner_pid != self_pid(); }

/* ---------------------------------------------------------------------------------
 * Validation shared by all layers.
 * ------------------------------------------------------------------------------ */
int log_valid_name(const char *s); /* topic/group/consumer: [A-Za-z0-9._-]{1,200} */
int log_valid_type(const char *s); /* dotted words of [A-Za-z0-9_-] */
/* Checks a whole event for append against a topic's limits; sets the error message. */
int log_check_event(const struct log *log, const char *topic, const engram_event *ev,
                    uint32_t max_payload);

/* ---------------------------------------------------------------------------------
 * Write jobs and group commit.
 * ------------------------------------------------------------------------------ */
typedef struct log_wtx {
  struct log *log;
  MDB_txn *txn;   /* the job's write transaction: the batch's, or a nested one of the job's own */
  int64_t now_ns; /* one clock reading for the whole commit */
  /* Topics appended to in this commit: published to the commit hook afterwards. */
  struct log_touched *touched;
  /* Set by a job of log_write_deferrable that wants its commit released before the
   * flush that makes it durable (reset before each run of the job). */
  int defer;
} log_wtx;

/* A job runs inside the leader's write transaction. It must only change the database
 * through w->txn and may be run more than once (when the map grows the whole commit is
 * retried), so it must rewrite, not accumulate, its outputs. Returning < 0 aborts just
 * this job's changes; its code is returned by log_write. */
typedef int (*log_job_fn)(log_wtx *w, void *arg);

/* Runs fn in a group-committed write transaction and returns once the commit is as
 * durable as the handle's mode promises. Returns fn's result (>= 0) or an error. */
int log_write(struct log *log, log_job_fn fn, void *arg);
/* Same, but the job runs alone in a top-level transaction of its own: needed by jobs
 * that create or delete named databases (LMDB ties new handles to their transaction).
 * A solo job may call mdb_dbi_open itself; other jobs must use log_aux_dbi /
 * log_topic_get, which open handles in transactions of their own.
 * Never call log_write* while holding a read transaction (map growth would deadlock). */
int log_write_solo(struct log *log, log_job_fn fn, void *arg);
/* Same as log_write, but in sync mode returns once the commit's data pages are flushed,
 * without waiting for the flush that makes its meta page durable: a power cut may undo
 * this commit (never a later one, and never corrupt anything). For state whose loss only
 * repeats work, such as the leases a fetch takes. */
int log_write_relaxed(struct log *log, log_job_fn fn, void *arg);

/* log_write for a job that may find, while it runs, that its caller can acknowledge it
 * later: it then sets w->defer, and in sync and nometasync modes (with the write-ahead
 * file) the call returns once the commit is written, before the flush that makes it
 * durable, with *deferred set and *mark naming what a flush must cover. The caller must
 * not acknowledge anything of the job before log_flushed(log, *mark), or a
 * log_flush_upto(log, *mark) that returned 0. Without deferral: log_write, *deferred 0. */
int log_write_deferrable(struct log *log, log_job_fn fn, void *arg, int *deferred, uint64_t *mark);
/* 1 when a flush (of any thread or process) made every commit up to mark durable. */
int log_flushed(struct log *log, uint64_t mark);
/* Flushes the write-ahead file unless mark is durable already; 0 or an error. */
int log_flush_upto(struct log *log, uint64_t mark);

/* Parked free pages (park.c): one pass of the maintenance runner parks runs of free
 * pages when LMDB's free list is long, or releases parked ones when it is short or the
 * file grew. Counts in pages. */
typedef struct log_park_report {
  uint64_t free_pages;     /* on LMDB's free list when the pass began */
  uint64_t parked_pages;   /* parked when the pass began */
  uint64_t parked_now;     /* parked by the pass */
  uint64_t released_pages; /* released by the pass */
} log_park_report;
/* stop (may be NULL) is asked between parking commits: nonzero ends the pass. */
int log_park_pass(struct log *log, log_park_report *r, int (*stop)(void *), void *ctx);
/* Pages on LMDB's free list and pages parked, now. */
int log_park_count(struct log *log, uint64_t *free_pages, uint64_t *parked);
/* Releases every parked page (before a compacting copy, which would copy them). */
int log_park_release_all(struct log *log);
/* Pages parked, in txn; dbi is the `park` database. */
uint64_t log_parked_pages(MDB_txn *txn, MDB_dbi dbi);
/* Bytes of write-ahead records this handle appended (0 without the file). */
uint64_t log_wal_appended(const struct log *log);

/* Opens (creating on first use) a named database for an upper layer, e.g. "groups".
 * With `dupsort` the database is opened MDB_DUPSORT. */
int log_aux_dbi(struct log *log, const char *name, unsigned int flags, MDB_dbi *out);
/* The same for a database that exists, creating nothing: ENGRAM_ENOTFOUND (no message)
 * when it does not. For background work with nothing to do on a log that never had such
 * records (the maintenance runner's schedule ticks). */
int log_aux_dbi_existing(struct log *log, const char *name, MDB_dbi *out);

/* ---------------------------------------------------------------------------------
 * Reads.
 * ------------------------------------------------------------------------------ */
/* Begins a read-only transaction (holds the map lock shared until log_read_end). */
int log_read_begin(struct log *log, MDB_txn **txn);
void log_read_end(struct log *log, MDB_txn *txn);

typedef struct log_topic {
  char name[ENGRAM_MAX_NAME + 1];
  uint32_t id;
  MDB_dbi dbi;
  engram_topic_config cfg; /* defaults filled in */
  uint32_t dict_id;
  uint64_t next_offset;   /* from the meta record: next offset when the db is empty */
  uint64_t first_removed; /* offsets below this were removed */
  int64_t created_ns;
  int dict_trained_auto;
  uint64_t compacted;  /* offsets in [first_removed, head] removed by key compaction */
  uint64_t index_next; /* key compaction: the key index covers the offsets below this */
} log_topic;

/* Looks a topic up in txn (read or write). Errors: EINVAL (name), ENOTFOUND. */
int log_topic_get(struct log *log, MDB_txn *txn, const char *name, log_topic *t);
/* Highest offset ever assigned in the topic (0 = none). */
uint64_t log_topic_head(struct log *log, MDB_txn *txn, const log_topic *t);
/* Lowest stored offset (0 = empty). */
uint64_t log_topic_first(struct log *log, MDB_txn *txn, const log_topic *t);
/* First offset whose append time is >= time_ns (head + 1 when none). */
uint64_t log_topic_seek_time(struct log *log, MDB_txn *txn, const log_topic *t, int64_t time_ns);

/* Appends inside a write job. Same contract as log_append. */
int log_append_in(log_wtx *w, const char *topic, const engram_event *ev, uint64_t *offset,
                  int *duplicate);
/* Deep copy of an event's input fields (strings, payload, headers) into malloc'd memory
 * freed with log_event_free. Returns 0 or ENGRAM_ENOMEM (nothing left allocated). */
int log_event_copy(engram_event *dst, const engram_event *src);
void log_event_free(engram_event *e);

/* Removes the topic's records with offsets below `below` (at most up to its head) inside
 * a write job, and records the new first offset (the head and the next offset to assign
 * do not move). *removed (may be NULL) receives how many records went. */
int log_topic_trim_in(log_wtx *w, log_topic *t, uint64_t below, uint64_t *removed);
/* Bytes of the pages holding the topic's records, in txn. */
uint64_t log_topic_bytes(struct log *log, MDB_txn *txn, const log_topic *t);

/* ---------------------------------------------------------------------------------
 * Key compaction's primitives (log/keys.c; the policy, which needs the groups, is
 * consumers/keycomp.c). A topic with ENGRAM_TOPIC_COMPACT_KEY has a key index (key ->
 * newest offset), complete below its index_next, and two queues in offset order: the
 * offsets a newer event of their key superseded (LOG_KEYS_DEAD) and the tombstones
 * (LOG_KEYS_TOMB). Compaction slices index the events appended since the last one.
 * ------------------------------------------------------------------------------ */
#define LOG_KEYS_DEAD 'd'
#define LOG_KEYS_TOMB 't'
/* The key index database inside a write job. Errors: as log_aux_dbi; the private code
 * that reruns the commit when the handle is newer than the transaction. */
int log_keys_dbi_in(log_wtx *w, MDB_dbi *dbi);
/* The lowest queued offset of `kind` at or above `from`, through cursor c on the key
 * index database (the caller's, reused for a whole slice): 0 and *off, or
 * ENGRAM_ENOTFOUND. */
int log_keys_next(MDB_cursor *c, uint32_t topic_id, int kind, uint64_t from, uint64_t *off);
int log_keys_forget_in(log_wtx *w, MDB_dbi dbi, uint32_t topic_id, int kind, uint64_t off);
/* The newest offset of a key, 0 = none. */
uint64_t log_keys_newest(MDB_txn *txn, MDB_dbi dbi, uint32_t topic_id, const char *key,
                         size_t key_len);
/* Indexes up to `max` stored events from t->index_next on, stopping early once the
 * monotonic clock passes until_ns, and moves t->index_next past them (the caller stores
 * the meta). *n receives how many were read. */
int log_keys_index_in(log_wtx *w, MDB_dbi dbi, log_topic *t, size_t max, int64_t until_ns,
                      uint64_t *n);
/* Stores the topic's metadata record (after log_keys_* moved its counters). */
int log_topic_meta_put(struct log *log, MDB_txn *txn, const log_topic *t);
/* Forgets the key of record *v in the index when the record is its newest (the record is
 * about to go). */
int log_keys_unindex_in(log_wtx *w, MDB_dbi dbi, const log_topic *t, const struct log_view *v);
/* Removes the record *v (decoded in w's transaction, at v->offset; head: the topic's
 * head) for key compaction, with the key's index entry when it points there, counting
 * the gap in t->compacted; the caller stores the meta. */
int log_keys_remove_in(log_wtx *w, MDB_dbi dbi, log_topic *t, const struct log_view *v,
                       uint64_t head);

/* Removes a topic with its events, idempotency keys and dictionaries; only inside a job
 * run with log_write_solo (it deletes a named database). */
int log_topic_drop_in(log_wtx *w, const char *topic);

/* A decoded record that points into LMDB's memory (valid only inside its transaction).
 * The payload is as stored (possibly compressed). */
typedef struct log_view {
  uint64_t offset;
  const char *type;
  size_t type_len;
  int has_key;
  const char *key;
  size_t key_len;
  const unsigned char *payload;
  size_t payload_len;
  const char *content_type;
  size_t content_type_len;
  const char *idem;
  size_t idem_len;
  int64_t timestamp_ns;
  int64_t deliver_at_ns;
  uint32_t compression;
  uint32_t dict_id;
  uint32_t raw_len;
  uint32_t flags; /* ENGRAM_EVENT_* */
  uint32_t n_headers;
  struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
  } headers[ENGRAM_MAX_HEADERS];
} log_view;

/* Fetches and decodes the record at `offset` (CRC checked). Errors: ENOTFOUND, ECORRUPT. */
int log_view_get(struct log *log, MDB_txn *txn, const log_topic *t, uint64_t offset, log_view *v);

/* Builds engram_batch results: one growing allocation freed by log_batch_free. */
typedef struct log_bb log_bb;
log_bb *log_bb_new(size_t expected);
/* Copies the view's event into the batch (decompressing the payload). Returns the new
 * event (valid until the next add) or NULL with *rc set. */
engram_event *log_bb_add(log_bb *bb, struct log *log, MDB_txn *txn, const log_topic *t,
                         const log_view *v, int *rc);
/* Finishes building: returns the batch (never NULL unless out of memory). */
engram_batch *log_bb_finish(log_bb *bb);
void log_bb_free(log_bb *bb);
size_t log_bb_count(const log_bb *bb);
/* Copies bytes into the batch's memory; used by upper layers to attach strings. */
void *log_bb_copy(log_bb *bb, const void *p, size_t n);

/* Waits until an append to `topic` may have happened or the deadline passes
 * (CLOCK_MONOTONIC ns). Uses the wait hook when installed, else in-process signals
 * plus short polling for appends from other processes. */
void log_wait_append(struct log *log, const char *topic, int64_t deadline_mono_ns);

/* ---------------------------------------------------------------------------------
 * The log's operations, one per public call of engram.h that an embedded handle
 * runs here (api/ checks the arguments and calls them). Same contracts as engram.h.
 * ------------------------------------------------------------------------------ */
int log_open(const char *path, const engram_options *opts, struct log **out);
void log_close(struct log *log);
/* The calling thread's last message (log_error's; the handle is not needed). */
const char *log_errmsg(const struct log *log);
int log_sync(struct log *log);
/* The handle's commit statistics (engram_commit_stats_get). */
int log_commit_stats(struct log *log, engram_commit_stats *out);
/* The log's identity (id, creation time, format), read at open. */
int log_info(struct log *log, engram_log_info *out);
int log_backup(struct log *log, const char *dest);
/* How data.mdb's space is used (engram_space_get; reclaim.c). */
int log_space(struct log *log, engram_space *out);
/* engram_reclaim (reclaim.c): a path, since no handle may be open. */
int log_reclaim(const char *path, const engram_reclaim_options *opts,
                engram_reclaim_report *report);
/* Reports progress to the handle's callback, when one is set. */
void log_progress(struct log *log, const char *phase, uint64_t done, uint64_t total);
/* The calling thread (one of the library's own, such as the maintenance runner) reports
 * no progress: the callback is for the caller's long calls, and a Python one called from
 * that thread would wait for the interpreter's lock, which a close holds while it stops
 * the thread. */
void log_progress_mute(void);
int log_topic_create(struct log *log, const char *topic, const engram_topic_config *cfg);
int log_topic_info_get(struct log *log, const char *topic, engram_topic_info *info);
int log_topic_list(struct log *log, engram_topic_info **out, size_t *n);
int log_topic_train_dict(struct log *log, const char *topic, uint32_t *dict_id);
int log_topic_set(struct log *log, const char *topic, const engram_topic_config *cfg);
void log_batch_free(engram_batch *b);
int log_append(struct log *log, const char *topic, const engram_event *ev, uint64_t *offset,
               int *duplicate);
int log_append_batch(struct log *log, const char *topic, const engram_event *evs, size_t n,
                     uint64_t *offsets, int *duplicates);
int log_read(struct log *log, const char *topic, uint64_t offset, engram_batch **out);
int log_read_range(struct log *log, const char *topic, uint64_t from, size_t max,
                   engram_batch **out);
int log_verify(struct log *log, engram_verify_report *report, log_verify_fn records);
int log_append_async(struct log *log, const char *topic, const engram_event *ev,
                     engram_append_cb cb, void *ctx);
int log_append_wait(struct log *log);

/* ---------------------------------------------------------------------------------
 * The wake-up board (board.c): every writable handle maps DIR/notify.board at open, so a
 * commit wakes fetches waiting on its topic in any process on the directory.
 * ------------------------------------------------------------------------------ */
void log_board_attach(struct log *log); /* at open; without memory the handle polls */
void log_board_detach(struct log *log); /* at close; also releases the notify hook */
/* Wakes waiters on `topic` of this handle's directory (for group changes that make
 * events deliverable without an append). */
void log_board_wake(struct log *log, const char *topic);
/* The layer above hears every commit's (topic, head) through hook(ctx, ...), after the
 * board's wake-up; replacing it (or closing the handle) calls release(ctx) when set.
 * NULL hook: nobody hears. */
void log_notify_set(struct log *log, log_commit_hook hook, void *ctx, void (*release)(void *));

/* Record codec (log/codec.c), exposed for the fuzz target and `verify`. */
int log_codec_decode(const unsigned char *buf, size_t len, uint64_t offset, log_view *v);

#endif
