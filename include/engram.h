/*
 * engram.h — the public interface of engram, a durable event log with consumer groups.
 *
 * This header is the manual. Read the caveats first:
 *
 * DURABILITY. A log is a directory holding one LMDB environment and its write-ahead file
 * (DIR/wal). In the default mode, ENGRAM_DURABILITY_SYNC, a write (append, ack, group
 * change ...) returns only after its commit is on disk: it survives kill -9 of any
 * process and a power cut. A commit costs one flush (of the write-ahead file), and
 * concurrent writers of a process share commits (group commit): N threads that append
 * at once wait for one flush between them, not N. After a crash the first open replays
 * the file into data.mdb (docs/storage.md). Two modes are opt-in:
 *   - ENGRAM_DURABILITY_NOMETASYNC: with the write-ahead file, the same as sync (kept for
 *     compatibility). Without it (ENGRAM_NO_WAL set, or LMDB linked in statically: see
 *     engram_commit_stats.write_ahead) a write returns after its data pages are flushed
 *     but before the page that makes them current is, and a power cut can lose exactly
 *     the newest commit; a background flush closes that window within flush_interval_ms.
 *   - ENGRAM_DURABILITY_ASYNC: a write returns after its commit reaches the OS page cache.
 *     kill -9 loses nothing; a power cut loses everything since the last background flush
 *     (at most `flush_interval_ms` old; with the write-ahead file also at most about 4 MiB
 *     of commit records: a commit that finds that many unflushed flushes them). With the
 *     write-ahead file the log stays whole; without it, because nothing orders the writes,
 *     the environment may be damaged (`engram verify` reports it). Use it for data you can
 *     rebuild.
 * Tools that write data.mdb themselves (mdb_load, a restored copy of data.mdb alone) must
 * only run on a log closed cleanly, and the write-ahead file must then be deleted.
 *
 * PROCESSES AND THREADS. Any number of processes may open the same directory at once;
 * LMDB serialises their write transactions. A handle may be used from many threads at
 * once. Do not open the same directory twice in one process (an LMDB rule): share the
 * handle. Do not use a handle in a child after fork(); open a new one.
 *
 * ERRORS. Every function that can fail returns 0 or a negative ENGRAM_E* code from the
 * table below (never any other value: an internal code that would escape becomes
 * ENGRAM_EINTERNAL). A message with context for the calling thread's last failure, on
 * any handle, is kept in one buffer per thread (engram_errmsg()): one line of valid
 * UTF-8, in which a name or value it quotes has its control characters and bytes that are
 * not UTF-8 escaped (\x0a, \xff; C1 controls \u009b). Nothing is written
 * when a call fails, except by engram_ack_many(), whose good items commit
 * (engram_ack_fetch() is all or nothing).
 *
 * DAMAGE. If data.mdb is damaged (a failing disk, a power cut under ASYNC), reads never
 * return damaged data nor skip an event: a record failing its CRC, a missing offset between
 * the topic's first offset and its head, and LMDB's own damage codes all give
 * ENGRAM_ECORRUPT with a message naming what and where. (On a topic compacted by key,
 * the offsets compaction removed are gaps, not damage: ENGRAM_ENOTFOUND, skipped by range
 * reads; engram_verify() checks their number, see engram_compact().) LMDB does not
 * checksum its pages, so a damaged page can make the reading process fault
 * (SIGSEGV/SIGBUS); engram_verify() runs its walk in a child process for that reason and
 * reports such a fault as damage, but other calls read in the caller's process. Run
 * engram_verify() (`engram verify`) after a crash of unknown cause, and restore a damaged
 * log from a backup.
 *
 * OWNERSHIP. Strings and buffers passed in are copied before the call returns. Results
 * are returned through out parameters and are owned by the caller, who frees them with
 * the matching _free function. close/free functions accept NULL and return void.
 */
#ifndef ENGRAM_H
#define ENGRAM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the functions the library exports. It is built with hidden visibility, so no
 * other name of it (crc32c, log_*, cg_*, net_*, the generated protobuf-c code ...) is
 * visible to programs, whose own functions of those names never meet the library's. */
#ifndef ENGRAM_API
#if defined(__GNUC__) && __GNUC__ >= 4
#define ENGRAM_API __attribute__((visibility("default")))
#else
#define ENGRAM_API
#endif
#endif

#define ENGRAM_VERSION_MAJOR 0
#define ENGRAM_VERSION_MINOR 1
#define ENGRAM_VERSION_PATCH 0
#define ENGRAM_VERSION_STRING "0.1.0"
/* Version of the on-disk format; a log written with another format version is refused
 * with ENGRAM_EVERSION at open. */
#define ENGRAM_FORMAT_VERSION 1
/* Version of the wire protocol carried in every request to `engram serve`. */
#define ENGRAM_PROTOCOL_VERSION 1

/* Limits that bad input is checked against. */
#define ENGRAM_MAX_NAME 200                  /* topic, group, consumer names: bytes */
#define ENGRAM_MAX_TYPE 200                  /* event type: bytes */
#define ENGRAM_MAX_KEY 256                   /* event key, idempotency key: bytes */
#define ENGRAM_MAX_CONTENT_TYPE 128          /* bytes */
#define ENGRAM_MAX_HEADERS 64                /* headers per event */
#define ENGRAM_MAX_HEADER_BYTES 8192         /* all header names and values of one event */
#define ENGRAM_MAX_FILTERS 16                /* type filter patterns per group */
#define ENGRAM_MAX_BACKOFF 16                /* steps in a group's backoff schedule */
#define ENGRAM_MAX_PAYLOAD_LIMIT (64u << 20) /* highest max_payload a topic may set */
#define ENGRAM_MAX_FETCH 10000               /* events one engram_fetch may lease */
#define ENGRAM_MAX_RESULT (1u << 20)         /* an ack's result: bytes */

/* The longest duration each option or argument may give, in milliseconds. A longer one
 * is refused with ENGRAM_EINVAL, so no duration can overflow the nanosecond clock. */
#define ENGRAM_MAX_DEDUP_WINDOW_MS (365ull * 86400000) /* dedup_window_ms: 365 days */
#define ENGRAM_MAX_FLUSH_INTERVAL_MS 3600000u          /* flush_interval_ms: 1 hour */
#define ENGRAM_MAX_ACK_WAIT_MS (30ull * 86400000)      /* a group's ack_wait_ms: 30 days */
#define ENGRAM_MAX_BACKOFF_MS (30ull * 86400000)       /* each backoff_ms step: 30 days */
#define ENGRAM_MAX_RESULT_TTL_MS (365ull * 86400000)   /* result_ttl_ms: 365 days */
#define ENGRAM_MAX_DELAY_MS (30ull * 86400000)         /* nack delay_ms, extend ms: 30 days */
#define ENGRAM_MAX_FETCH_WAIT_MS 3600000u              /* fetch wait_ms: 1 hour */
#define ENGRAM_MAX_TIMEOUT_MS 86400000u                /* a remote handle's timeout_ms: 1 day */

/* ---------------------------------------------------------------------------------
 * Errors. A released code never changes its number.
 * ------------------------------------------------------------------------------ */
#define ENGRAM_OK 0
#define ENGRAM_EINVAL -1    /* an argument is invalid (name, size, pattern, duration) */
#define ENGRAM_ENOTFOUND -2 /* no such topic, group, event or entry */
#define ENGRAM_EEXIST -3    /* topic or group already exists */
#define ENGRAM_ENOMEM -4    /* out of memory */
#define ENGRAM_EIO -5       /* an operating-system I/O call failed */
#define ENGRAM_ECORRUPT                                                                           \
  -6                          /* damage: a record failed its CRC or decoding, an offset below the \
                                 head is missing, or LMDB met a damaged page (see DAMAGE) */
#define ENGRAM_ENOSPC -7      /* the disk is full; the log stays usable once space returns */
#define ENGRAM_ETOOBIG -8     /* payload, headers or message over its limit */
#define ENGRAM_EVERSION -9    /* on-disk format or wire protocol version not supported */
#define ENGRAM_ELIMIT -10     /* a configured limit was reached (max_topics, open files) */
#define ENGRAM_ESTALE -11     /* ack/nack quotes an attempt older than the current lease */
#define ENGRAM_ENOTLEASED -12 /* the event was never delivered to this group */
#define ENGRAM_EALREADY -13   /* the event is already finished for this group (double ack) */
#define ENGRAM_EDEAD -14      /* the event is in the group's dead-letter queue */
#define ENGRAM_EBUSY -15      /* in use: in flight, or the directory is locked by a daemon */
#define ENGRAM_ETIMEDOUT -16  /* no answer in time */
#define ENGRAM_ECLOSED -17    /* the handle or connection is closed */
#define ENGRAM_EPROTO -18     /* malformed request or reply */
#define ENGRAM_ECONN -19      /* cannot reach the daemon */
#define ENGRAM_EDENIED -20    /* authentication or authorisation refused */
#define ENGRAM_ENOTSUP -21    /* not supported by this handle or build */
#define ENGRAM_EINTERNAL -22  /* a bug: an invariant did not hold */

/* The fixed description of a code ("not found" for ENGRAM_ENOTFOUND); never NULL. */
ENGRAM_API const char *engram_strerror(int code);
/* The code's name ("ENGRAM_ENOTFOUND"); never NULL. */
ENGRAM_API const char *engram_errname(int code);

/* ---------------------------------------------------------------------------------
 * Opening a log.
 * ------------------------------------------------------------------------------ */
typedef struct engram engram; /* a log handle: embedded (engram_open) or remote (engram_connect) */

typedef enum engram_durability {
  ENGRAM_DURABILITY_SYNC = 0,   /* default: a write returns after it is on disk */
  ENGRAM_DURABILITY_NOMETASYNC, /* a power cut may lose the newest commit */
  ENGRAM_DURABILITY_ASYNC       /* a power cut may lose the last flush interval */
} engram_durability;

/* Options for engram_open(). Zero means default for every field; NULL means all defaults. */
typedef struct engram_options {
  engram_durability durability; /* default ENGRAM_DURABILITY_SYNC */
  uint64_t map_size;            /* initial LMDB map size in bytes, default 1 GiB; grows
                                   automatically (doubling) when full */
  uint32_t max_topics;          /* topics the log may hold, at most 100000: the log keeps
                                   its own (1024 for a new log); a larger value raises it
                                   for this and every later open, 0 or a smaller one uses
                                   the log's */
  uint64_t dedup_window_ms;     /* idempotency window, default 600000 (10 min), at most
                                   ENGRAM_MAX_DEDUP_WINDOW_MS */
  uint32_t flush_interval_ms;   /* background flush in nometasync/async modes, default 1000,
                                   at most ENGRAM_MAX_FLUSH_INTERVAL_MS */
  uint32_t flags;               /* ENGRAM_OPEN_* */
  /* Clock for tests: returns CLOCK_REALTIME nanoseconds. NULL = the system clock. Every
   * timestamp, lease deadline, retry delay and schedule slot of this handle is read from
   * it. For tests only: with clock_ns NULL and the environment variable
   * ENGRAM_TEST_CLOCK_FILE naming a file, the clock is the little-endian int64 held in that
   * file's first 8 bytes (read at every call), so that test programs in several processes
   * share one fast clock; never set it in production. */
  int64_t (*clock_ns)(void *ctx);
  void *clock_ctx;
  /* How often this handle runs retention (and parks or gives back free pages,
   * docs/storage.md) while its process holds the log's maintenance lease
   * (DIR/maintenance.lock: one process at a time, taken over when its holder exits or
   * dies), default 1000 ms, the first pass at most 100 ms after the open;
   * ENGRAM_MAINTENANCE_OFF = never (read-only handles never do). `engram serve` runs it
   * through its own handle. */
  uint32_t maintenance_ms;
} engram_options;
#define ENGRAM_MAINTENANCE_OFF UINT32_MAX

#define ENGRAM_OPEN_NOCREATE 0x1 /* fail with ENGRAM_ENOTFOUND if the log does not exist */
/* Open for reading only (implies NOCREATE). The environment is opened with LMDB's
 * MDB_RDONLY: data.mdb is never written, and every call that would write (append, group
 * changes, acks, topic create/drop ...) fails with ENGRAM_ENOTSUP. LMDB still keeps its
 * reader table in lock.mdb when it may write it; on a read-only file system it uses
 * none, and when this user may not write lock.mdb (EACCES) the log is opened with
 * MDB_NOLOCK. Without the reader table a writer in another process can reuse pages a
 * read is looking at: read such a log while nobody writes it (a copy, a stopped
 * daemon's directory), or expect ENGRAM_ECORRUPT from reads that met a rewrite. A
 * database no writer ever made reads as absent (no groups yet: an empty group list,
 * ENGRAM_ENOTFOUND for a group). A log never opened read-write since creation by an
 * older build cannot be opened read-only (ENGRAM_ENOTSUP). See docs/storage.md. */
#define ENGRAM_OPEN_RDONLY 0x2

/* Opens (creating if missing, crash-safely) the log in directory `path`; trailing
 * slashes are ignored. A missing or empty directory gets a new log (built beside it in
 * "<path>.creating.<pid>.<n>" and renamed into place; such leftovers of a creator that
 * died are removed by later opens). What the directory holds is checked before
 * anything is written: an environment that is not an engram log is left byte-for-byte
 * unchanged. On success *out is a handle the caller closes with engram_close(). Clears
 * stale reader slots left by dead processes. On failure engram_errmsg(NULL) names what
 * is wrong and what to do. Errors:
 *   EINVAL    path or options invalid
 *   ENOTFOUND no log there (NOCREATE or RDONLY), or the parent directory is missing
 *   EEXIST    the path is a file, a directory holding other files, a directory whose
 *             data.mdb is not a file, or another program's LMDB environment
 *   ECORRUPT  data.mdb is empty, truncated, not an LMDB file, or lacks engram's format
 *             record
 *   EVERSION  another on-disk format or LMDB version
 *   EDENIED   the user may not write the directory or lock.mdb, or the file system is
 *             read-only: open with ENGRAM_OPEN_RDONLY to read
 *   ENOTSUP   RDONLY on a log that lacks databases only a read-write open adds
 *   EBUSY     engram_reclaim() (`engram compact --reclaim`) is rewriting the data file:
 *             retry when it ends (the open does not wait)
 *   EIO, ENOSPC, ENOMEM
 * Every handle holds a shared flock on DIR/open.lock (created when missing) until it is
 * closed, so that engram_reclaim() can tell that nobody has the log open. */
ENGRAM_API int engram_open(const char *path, const engram_options *opts, engram **out);

/* Flushes what is still pending and closes. Accepts NULL. In a child made by fork(),
 * closing a handle the parent opened touches nothing of the log and returns at once (its
 * threads and files are the parent's); the child's copy of its memory is not freed. */
ENGRAM_API void engram_close(engram *log);

/* The message of the calling thread's last failure, with context ("append memory:
 * payload 2097152 bytes over limit 1048576"); "" when the thread has had none. Each
 * thread has one message buffer, shared by all handles: `log` is not used (NULL is
 * fine, e.g. after a failed engram_open() or engram_connect()), so a failure on one
 * handle is what every handle reports on that thread, and other threads never see it.
 * Read it right after the call that failed: the next failing call of the thread, on any
 * handle, overwrites it, and a call that succeeds may clear it or leave it in place.
 * The pointer stays valid for the life of the thread. */
ENGRAM_API const char *engram_errmsg(const engram *log);

/* Forces everything committed so far to disk (useful in nometasync/async modes). */
ENGRAM_API int engram_sync(engram *log);

/* A histogram of durations: counts per bucket, bucket i holding the durations above
 * bound i-1 and at most bound i of ENGRAM_DURATION_BOUNDS_US (microseconds), the last
 * bucket those above every bound. /metrics shows them as Prometheus histograms. */
#define ENGRAM_DURATION_BUCKETS 16
#define ENGRAM_DURATION_BOUNDS_US                                                              \
  {                                                                                            \
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, \
        2500000                                                                                \
  }
typedef struct engram_duration_hist {
  uint64_t count;                            /* durations counted */
  uint64_t sum_ns;                           /* their sum, nanoseconds */
  uint64_t buckets[ENGRAM_DURATION_BUCKETS]; /* per bucket, not cumulative */
} engram_duration_hist;

/* What the commit path of this handle did since it was opened: how many writes each
 * commit carried, how many flushes they cost, and how long writes, commits and flushes
 * took. For benchmarks, diagnostics and /metrics.
 * Errors: EINVAL (NULL argument), ENOTSUP (a remote handle). */
typedef struct engram_commit_stats {
  uint64_t commits;       /* write transactions that changed something */
  uint64_t jobs;          /* writes (appends, batches, acks, fetches ...) they carried */
  uint64_t flushes;       /* fdatasync calls by the commit path (write-ahead file, or data
                             file without it) */
  uint64_t batch_hist[8]; /* commits carrying 1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, 65+ writes */
  uint64_t max_wait;      /* most commits one write waited through, from queueing to its
                             release (for the thread that led: to handing the lead over);
                             at most 3 (the one running, its own, the one that makes it
                             durable) when the lead passes on in turn */
  engram_duration_hist write_latency;   /* each write (append, batch, ack, fetch ...), from
                                           queueing to its release: what its caller waits
                                           for the commit, flush included */
  engram_duration_hist commit_duration; /* each commit that wrote: LMDB's commit of the
                                           transaction, its data flush included (sync and
                                           nometasync) */
  engram_duration_hist flush_duration;  /* each flush of the commit path: of the write-ahead
                                           file (one per commit); without it, the one that
                                           makes the last commit's meta page durable and the
                                           background flush of nometasync/async */
  uint64_t checkpoints;     /* write-ahead file checkpoints: data.mdb flushed, the file begun
                               again (when it fills up, or a commit is too big for it) */
  int write_ahead;          /* 1: commits go through the write-ahead file (one flush each);
                               0: LMDB flushes data, then meta page (two for a lone writer) */
  uint64_t flushes_shared;  /* times this handle's writes were made durable by a flush of
                               another process on the same log, waited for instead of
                               flushing (one flush at a time between processes) */
  uint64_t appends_shared;  /* this handle's single appends committed through a commit shared
                               between processes (when another process has the log open
                               for writing), by whichever process committed them */
  uint64_t appends_carried; /* appends of other processes' handles that this handle's
                               commits carried */
} engram_commit_stats;
ENGRAM_API int engram_commit_stats_get(engram *log, engram_commit_stats *out);

/* Consistent, compacted hot copy of the log into directory `dest` (created; must not
 * exist or be empty) while writers keep running. Reports progress ("copying", bytes) to
 * the handle's engram_progress_set() callback. Errors: EINVAL (dest is the log's
 * directory or inside it, where the copy would be lost with the log), EEXIST, EIO,
 * ENOSPC. */
ENGRAM_API int engram_backup(engram *log, const char *dest);

/* ---------------------------------------------------------------------------------
 * Topics.
 * ------------------------------------------------------------------------------ */
/* Declares one field of a field list (ENGRAM_*_FIELDS). */
#define ENGRAM_FIELD_(type, name) type name;

#define ENGRAM_TOPIC_NO_DICT 0x1 /* never train or use a zstd dictionary */
/* Retention may remove events that a group has not finished or that a delayed delivery
 * waits for (bounded disk over completeness); the groups concerned count them in
 * retention_skipped. Without it retention waits for them (docs/operations.md). */
#define ENGRAM_TOPIC_RETAIN_FORCE 0x2
/* Key compaction: of the events that carry a key, only the newest of each key is kept;
 * older ones are removed in the background (and by engram_compact()), and a tombstone
 * (ENGRAM_EVENT_TOMBSTONE, or an event of the topic's tombstone_type) removes its key
 * altogether once tombstone_ttl_ms has passed. Events without a key are never removed by
 * compaction. The safety rule and ENGRAM_TOPIC_RETAIN_FORCE apply as for retention.
 * Reads see the removed offsets as gaps (engram_read_range(), docs/operations.md). */
#define ENGRAM_TOPIC_COMPACT_KEY 0x4
#define ENGRAM_DEFAULT_TOMBSTONE_TTL_MS 86400000ull      /* tombstone_ttl_ms 0: 1 day */
#define ENGRAM_MAX_RETENTION_AGE_MS (3650ull * 86400000) /* max_age_ms: 10 years */

/* The retention limits of engram_topic_config, one X(type, name) each, in the struct's
 * order: the wire, the CLI and the bindings copy them from this list. 0 = no limit.
 * Retention removes the oldest events while any limit is exceeded, in slices of at most
 * a few milliseconds each, run in the background by `engram serve` or by the embedded
 * process holding the maintenance lease, and on demand by engram_compact(). */
#define ENGRAM_TOPIC_RETENTION_FIELDS(X)                                                      \
  X(uint64_t, max_age_ms)       /* remove events appended more than this long ago */          \
  X(uint64_t, max_bytes)        /* keep the topic's stored records (LMDB pages) under this */ \
  X(uint64_t, max_events)       /* keep at most this many events */                           \
  X(uint64_t, tombstone_ttl_ms) /* key compaction: a tombstone is removed this long after     \
                                   its append; 0 = ENGRAM_DEFAULT_TOMBSTONE_TTL_MS */

typedef struct engram_topic_config {
  uint32_t compress_threshold; /* payloads of at least this many bytes are zstd
                                  compressed; default 256; UINT32_MAX = never */
  uint32_t max_payload;        /* bytes, default 1 MiB, at most ENGRAM_MAX_PAYLOAD_LIMIT */
  uint32_t dict_train_after;   /* train a dictionary automatically once the topic holds
                                  this many events (in the background: no append waits
                                  for it); default 4096 */
  uint32_t flags;              /* ENGRAM_TOPIC_* */
  ENGRAM_TOPIC_RETENTION_FIELDS(ENGRAM_FIELD_)
  /* Key compaction: events of this type appended from now on are tombstones, as if they
   * carried ENGRAM_EVENT_TOMBSTONE (so `memory.deleted` deletes its key without a change
   * to its producers); "" = none. A valid event type when set. */
  char tombstone_type[ENGRAM_MAX_TYPE + 1];
} engram_topic_config;

/* The numeric fields of engram_topic_info, one X(type, name) each, in the struct's order:
 * the wire, the CLI and the bindings copy and print them from this list, so a new one is
 * a line here (and its field in schema/wire.proto). */
#define ENGRAM_TOPIC_INFO_FIELDS(X)                                         \
  X(uint64_t, first_offset) /* lowest stored offset, 0 when empty */        \
  X(uint64_t, head_offset)  /* highest offset ever assigned, 0 when none */ \
  X(uint64_t, count)        /* events stored */                             \
  X(uint32_t, dict_id)      /* current zstd dictionary id, 0 = none */      \
  X(int64_t, created_ns)    /* CLOCK_REALTIME */                            \
  X(uint64_t, compacted)    /* offsets between the first and the head       \
                               removed by key compaction (the gaps) */
typedef struct engram_topic_info {
  char name[ENGRAM_MAX_NAME + 1];
  engram_topic_config config; /* with defaults filled in */
  ENGRAM_TOPIC_INFO_FIELDS(ENGRAM_FIELD_)
} engram_topic_info;

/* Topic names are 1..200 bytes of [A-Za-z0-9._-]. Errors: EINVAL, EEXIST, ELIMIT. */
ENGRAM_API int engram_topic_create(engram *log, const char *topic, const engram_topic_config *cfg);
/* Fills *info. Errors: EINVAL, ENOTFOUND. */
ENGRAM_API int engram_topic_info_get(engram *log, const char *topic, engram_topic_info *info);
/* Lists topics in name order: *out is a malloc'd array of *n entries the caller frees
 * with engram_free(). */
ENGRAM_API int engram_topic_list(engram *log, engram_topic_info **out, size_t *n);
/* Drops a topic with its events, idempotency keys, dictionaries and groups, in one
 * commit. Safe while other threads of this handle or other processes read, append to or
 * consume from the topic: a call that began before the drop sees the topic whole, every
 * later call gets ENGRAM_ENOTFOUND until the topic is created again. A re-created topic
 * is a new one: empty, offsets from 1 again, no groups, and nothing of the old topic
 * (keys, leases, dictionaries) applies to it (docs/storage.md, "Dropping a topic").
 * Errors: EINVAL, ENOTFOUND. */
ENGRAM_API int engram_topic_drop(engram *log, const char *topic);
/* Trains (or retrains) the topic's zstd dictionary from its newest events now. Records
 * keep the id of the dictionary they were written with, so old records stay readable.
 * *dict_id (may be NULL) receives the new id. Errors: ENOTFOUND, EINVAL (too few events). */
ENGRAM_API int engram_topic_train_dict(engram *log, const char *topic, uint32_t *dict_id);
/* Replaces the topic's configuration with *cfg (zero fields take their defaults, as in
 * engram_topic_create): to change one setting, read the config with
 * engram_topic_info_get(), change it and pass it back. New retention limits apply from the
 * next retention slice; lowering one never removes anything in this call.
 * Errors: EINVAL (config), ENOTFOUND (topic). */
ENGRAM_API int engram_topic_set(engram *log, const char *topic, const engram_topic_config *cfg);

/* Frees memory returned by engram_topic_list(), engram_group_list(), engram_dlq_list(),
 * engram_worker_list(), engram_schedule_get() and engram_schedule_list(). Accepts NULL. */
ENGRAM_API void engram_free(void *p);

/* ---------------------------------------------------------------------------------
 * Events.
 * ------------------------------------------------------------------------------ */
typedef struct engram_header {
  const char *name;  /* non-empty, NUL-terminated */
  const char *value; /* NUL-terminated */
} engram_header;

/* One event. On append the caller fills the input fields; on read and fetch every field
 * is filled and points into memory owned by the batch or event it came in. */
typedef struct engram_event {
  uint64_t offset;     /* out: dense per topic, from 1 */
  const char *topic;   /* out */
  const char *type;    /* dotted name, e.g. "memory.saved": [A-Za-z0-9_-] words
                          joined by single dots, 1..200 bytes */
  const char *key;     /* ordering / compaction key, NULL = none */
  const void *payload; /* may be NULL when payload_len is 0 */
  size_t payload_len;
  const char *content_type;     /* NULL or "" = none */
  const engram_header *headers; /* n_headers entries */
  size_t n_headers;
  const char *idempotency_key; /* NULL = none */
  int64_t deliver_at_ns;       /* CLOCK_REALTIME, >= 0 (a time, not a duration: any
                                  value up to INT64_MAX); 0 = deliver at once */
  int64_t timestamp_ns;        /* out: append time, CLOCK_REALTIME; an input only with
                                  ENGRAM_EVENT_TIMESTAMP */
  uint32_t attempt;            /* out, fetch only: 1 on first delivery; 0 on read */
  uint32_t flags;              /* ENGRAM_EVENT_*; on read and fetch as stored */
} engram_event;

/* The event deletes its key: on a topic compacted by key (ENGRAM_TOPIC_COMPACT_KEY) every
 * older event of the key becomes removable at once, and the tombstone itself once the
 * topic's tombstone_ttl_ms has passed. Needs a key (EINVAL without one). On a topic with
 * a tombstone_type, events of that type are stored with this flag. */
#define ENGRAM_EVENT_TOMBSTONE 0x1
/* Append only, never stored: the event's timestamp_ns is an input, its append time,
 * instead of the commit's clock reading. For importers that rebuild a log (`engram
 * restore` gives restored events their original times). A topic's append times never
 * decrease with the offset (seeks by time and retention by age rely on it), so the time
 * must be at least the time of the topic's newest event (and of the events before it in
 * the same batch) and at most the log's clock now (a later ordinary append would
 * otherwise get an older time); otherwise the append fails with ENGRAM_EINVAL ("...
 * older than the topic's newest event ..." / "... ahead of the log's clock ...") and
 * writes nothing. An idempotency key appended so takes the event's time as its own: the
 * dedup window runs from the original time, and a key is a duplicate of an earlier one
 * when its event's time is inside the window of that one's. Ordinary appends are
 * unaffected. Through the daemon: servers before this flag refuse it as an unknown flag
 * (ENGRAM_EINVAL). */
#define ENGRAM_EVENT_TIMESTAMP 0x2

/* A set of events returned by read or fetch; one allocation the caller frees. */
typedef struct engram_batch {
  size_t count;
  engram_event *events;
  /* engram_read_range() only (0 otherwise): the read covered the offsets [from, next),
   * each of them either in `events` or removed by key compaction, and `removed` counts
   * those gaps. Read on from `next`. */
  uint64_t from;
  uint64_t next;
  uint64_t removed;
} engram_batch;
ENGRAM_API void engram_batch_free(engram_batch *b);

/* Appends one event to `topic` and returns after it is durable (per the handle's
 * durability mode). *offset receives its offset. With an idempotency key already used
 * on this topic inside the dedup window, nothing is written, *offset receives the
 * original offset and *duplicate (may be NULL) is set to 1, else 0.
 * Errors: EINVAL (bad type, key, headers), ENOTFOUND (topic), ETOOBIG, ENOSPC, EIO. */
ENGRAM_API int engram_append(engram *log, const char *topic, const engram_event *ev,
                             uint64_t *offset, int *duplicate);

/* Appends n events to `topic` in one transaction: all or none. offsets[i] and
 * duplicates[i] (duplicates may be NULL) receive each event's result; a duplicate
 * inside the batch itself resolves to the first one's offset. */
ENGRAM_API int engram_append_batch(engram *log, const char *topic, const engram_event *evs,
                                   size_t n, uint64_t *offsets, int *duplicates);

/* Reads the event at `offset`. *out is a batch of one. Errors: ENOTFOUND (also for an
 * offset removed by retention or by key compaction, with a message saying which),
 * ECORRUPT. */
ENGRAM_API int engram_read(engram *log, const char *topic, uint64_t offset, engram_batch **out);

/* Reads up to `max` events with offsets >= `from` in order. An empty batch means there
 * is nothing at or after `from`. On a topic compacted by key the offsets removed by
 * compaction are skipped, and the batch says which offsets are gone: every offset of
 * [(*out)->from, (*out)->next) that is not in its events ((*out)->removed of them). Errors:
 * ENOTFOUND (topic), ECORRUPT (a damaged record: nothing of it is returned). */
ENGRAM_API int engram_read_range(engram *log, const char *topic, uint64_t from, size_t max,
                                 engram_batch **out);

/* ---------------------------------------------------------------------------------
 * Consumer groups. A group is a named cursor over one topic (named within it). Members
 * compete: each event is leased to one consumer at a time. See docs/consumer-groups.md.
 * ------------------------------------------------------------------------------ */
typedef enum engram_start {
  ENGRAM_START_EARLIEST = 0, /* from the first stored event */
  ENGRAM_START_LATEST,       /* only events appended after creation */
  ENGRAM_START_OFFSET,       /* from start_offset */
  ENGRAM_START_TIME          /* from the first event appended at or after start_time_ns */
} engram_start;

#define ENGRAM_GROUP_KEY_ORDERED 0x1 /* same key: never two in flight, finish in order */

typedef struct engram_group_config {
  const char *const *filters; /* type patterns: exact ("memory.saved"), prefix
                                 ("memory.*"), or "*"; NULL/0 = "*" */
  size_t n_filters;           /* at most ENGRAM_MAX_FILTERS */
  engram_start start;
  uint64_t start_offset;      /* ENGRAM_START_OFFSET */
  int64_t start_time_ns;      /* ENGRAM_START_TIME, CLOCK_REALTIME */
  uint64_t ack_wait_ms;       /* lease length, default 30000, at most ENGRAM_MAX_ACK_WAIT_MS */
  uint32_t max_deliver;       /* attempts before the DLQ, default 5 */
  const uint64_t *backoff_ms; /* delay before attempt k+1 after a nack of attempt k is
                                 backoff_ms[min(k-1, n-1)]; default 1s,5s,30s,2m; each
                                 at most ENGRAM_MAX_BACKOFF_MS. An expired lease is
                                 redelivered at its deadline. */
  size_t n_backoff;           /* at most ENGRAM_MAX_BACKOFF */
  uint64_t result_ttl_ms;     /* how long ack results are kept, default 86400000 (1 day),
                                 at most ENGRAM_MAX_RESULT_TTL_MS */
  uint32_t flags;             /* ENGRAM_GROUP_* */
} engram_group_config;

/* The counters of engram_group_info, one X(type, name) each, in the struct's order (see
 * ENGRAM_TOPIC_INFO_FIELDS): a new counter is a line here and its field in wire.proto. */
#define ENGRAM_GROUP_INFO_COUNTERS(X)                                                            \
  X(uint64_t, floor)               /* every offset <= floor is finished for this group */        \
  X(uint64_t, next)                /* next offset the group has not yet looked at */             \
  X(uint64_t, lag)                 /* topic head - floor */                                      \
  X(uint64_t, in_flight)           /* events leased and not yet finished */                      \
  X(uint64_t, retrying)            /* events waiting for a retry delay (incl. delayed events) */ \
  X(uint64_t, dead)                /* events in the dead-letter queue */                         \
  X(uint64_t, acked)               /* acks accepted since creation */                            \
  X(uint64_t, redelivered)         /* deliveries with attempt > 1 since creation */              \
  X(uint64_t, delivered)           /* deliveries since creation */                               \
  X(int64_t, oldest_unfinished_ns) /* append time of the oldest unfinished event, 0 = none */    \
  X(uint64_t, retention_skipped)   /* events removed by forced retention before the group        \
                                      finished them (ENGRAM_TOPIC_RETAIN_FORCE) */               \
  X(uint64_t, nacked)              /* nacks accepted since creation (with those past             \
                                      max_deliver that dead-lettered) */                         \
  X(uint64_t, rejected)            /* rejects accepted since creation */                         \
  X(uint64_t, dead_lettered)       /* events that entered the DLQ since creation: rejects,       \
                                      max_deliver exceeded, damaged records */

typedef struct engram_group_info {
  char topic[ENGRAM_MAX_NAME + 1];
  char name[ENGRAM_MAX_NAME + 1];
  char filters[ENGRAM_MAX_FILTERS][ENGRAM_MAX_TYPE + 1];
  size_t n_filters;
  uint64_t ack_wait_ms;
  uint32_t max_deliver;
  uint64_t backoff_ms[ENGRAM_MAX_BACKOFF];
  size_t n_backoff;
  uint64_t result_ttl_ms;
  uint32_t flags;
  int64_t created_ns;
  ENGRAM_GROUP_INFO_COUNTERS(ENGRAM_FIELD_)
} engram_group_info;

/* Creates a group on an existing topic. Errors: EINVAL (name, pattern, max_deliver or
 * durations out of range), ENOTFOUND (topic), EEXIST. */
ENGRAM_API int engram_group_create(engram *log, const char *topic, const char *group,
                                   const engram_group_config *cfg);
ENGRAM_API int engram_group_info_get(engram *log, const char *topic, const char *group,
                                     engram_group_info *info);
/* Lists groups of `topic` (NULL = all topics): malloc'd array freed with engram_free(). */
ENGRAM_API int engram_group_list(engram *log, const char *topic, engram_group_info **out,
                                 size_t *n);
/* Deletes a group with its leases, DLQ and results. */
ENGRAM_API int engram_group_delete(engram *log, const char *topic, const char *group);
/* Replay: moves the group's cursor to `offset` (ENGRAM_START_OFFSET) or to the first event
 * appended at or after `time_ns` (ENGRAM_START_TIME), or earliest / latest. Outstanding
 * leases and retries are dropped: an ack quoting one fails with ENOTLEASED or EALREADY
 * until the event is delivered again, and attempts restart at 1 (so an old ack quoting
 * attempt 1 is then accepted). The DLQ is kept; events in it are not replayed. */
ENGRAM_API int engram_group_reset(engram *log, const char *topic, const char *group,
                                  engram_start to, uint64_t offset, int64_t time_ns);

/* Leases up to `max` events (1 .. ENGRAM_MAX_FETCH) to `consumer`: first events whose
 * lease expired or whose retry delay passed, then new ones matching the group's filters. Each
 * event's attempt is 1 on first delivery. With wait_ms > 0 and nothing to deliver, waits up to
 * wait_ms for events (at most ENGRAM_MAX_FETCH_WAIT_MS). *out may be an empty batch. In sync mode a
 * fetch returns once its leases are written and flushed but before they are made durable: a power
 * cut may undo the newest fetches, which only delivers their events again. Errors: EINVAL,
 * ENOTFOUND. */
ENGRAM_API int engram_fetch(engram *log, const char *topic, const char *group, const char *consumer,
                            size_t max, uint64_t wait_ms, engram_batch **out);

/* One acknowledgement. attempt = the event's attempt as fetched (fencing), 0 = do not
 * check. result (may be NULL) is kept for the group's result_ttl_ms. */
typedef struct engram_ack_item {
  uint64_t offset;
  uint32_t attempt;
  const void *result;
  size_t result_len;
} engram_ack_item;

/* Finishes one event for the group. Errors: ESTALE (newer lease exists), ENOTLEASED (never
 * delivered, skipped by the filters, or waiting for a retry), EALREADY (already finished:
 * acks are idempotent, state unchanged), EDEAD, EINVAL (an attempt never delivered),
 * ENOTFOUND, ETOOBIG (result over ENGRAM_MAX_RESULT, 1 MiB). */
ENGRAM_API int engram_ack(engram *log, const char *topic, const char *group, uint64_t offset,
                          uint32_t attempt, const void *result, size_t result_len);
/* Acks n events in one commit. codes[i] (may be NULL) receives each item's code; the call
 * returns 0 when every item succeeded, else the first failing item's code. Items that
 * succeed are committed even when others fail. */
ENGRAM_API int engram_ack_many(engram *log, const char *topic, const char *group,
                               const engram_ack_item *items, size_t n, int *codes);
/* Ack-and-fetch: acks the n_acks items (as engram_ack_many) and leases up to `max` events
 * to `consumer` (as engram_fetch) in ONE write transaction, so a worker that settles each
 * batch as it fetches the next pays one commit (and its flushes) per batch instead of two.
 * All or nothing: when any item fails (ESTALE, ENOTLEASED, EALREADY, EDEAD, EINVAL,
 * ENOTFOUND, ETOOBIG, as engram_ack), nothing is acked and nothing is leased, *out is
 * NULL and the first failing item's code is returned, its message naming the offset;
 * codes[i] (may be NULL; n_acks of them) receives each item's code, 0 for an item that
 * would have succeeded, so the caller can retry without the failed ones (or settle them
 * one by one with engram_ack_many, whose good items commit). On success the acks are as
 * durable as engram_ack's when the call returns (in sync mode: on disk), even when the
 * batch is empty; the leases as engram_fetch's. The acks go first: the fetch never
 * delivers an event they finish, and in a key-ordered group it may deliver the next
 * event of a key they release. With wait_ms > 0 and nothing to deliver, the acks are held
 * up to 2 ms for an event to lease in the same commit (a worker keeping up with a steady
 * stream pays one commit per batch, not two), then committed, and the call waits on as
 * engram_fetch does (through `engram serve`: committed at once). acks may be NULL when
 * n_acks is 0 (then it is engram_fetch). Through `engram serve` it is one request.
 * Errors: those of engram_fetch and engram_ack_many; ETOOBIG (n_acks over 100000). */
ENGRAM_API int engram_ack_fetch(engram *log, const char *topic, const char *group,
                                const char *consumer, const engram_ack_item *acks, size_t n_acks,
                                int *codes, size_t max, uint64_t wait_ms, engram_batch **out);
/* Asks for redelivery after delay_ms, or after the group's backoff step when delay_ms < 0.
 * error (may be NULL) is kept as the last error. Past max_deliver attempts the event goes
 * to the DLQ instead. Errors as engram_ack, EINVAL (delay over ENGRAM_MAX_DELAY_MS). */
ENGRAM_API int engram_nack(engram *log, const char *topic, const char *group, uint64_t offset,
                           uint32_t attempt, int64_t delay_ms, const char *error);
/* Sends the event to the group's dead-letter queue at once with `reason`. */
ENGRAM_API int engram_reject(engram *log, const char *topic, const char *group, uint64_t offset,
                             uint32_t attempt, const char *reason);
/* Heartbeat: the lease now ends ms from now (0 = the group's ack_wait). Extends the
 * whole lease the event belongs to. Errors as engram_ack, EINVAL (ms over
 * ENGRAM_MAX_DELAY_MS). */
ENGRAM_API int engram_extend(engram *log, const char *topic, const char *group, uint64_t offset,
                             uint32_t attempt, uint64_t ms);
/* Marks a pending or retrying event (or one whose lease expired) finished without
 * delivering it. Errors: EBUSY (in flight), EALREADY, EDEAD, ENOTLEASED (skipped by the
 * filters), ENOTFOUND. */
ENGRAM_API int engram_cancel(engram *log, const char *topic, const char *group, uint64_t offset);

typedef enum engram_event_state {
  ENGRAM_STATE_PENDING = 0, /* not yet delivered (or waiting behind its key) */
  ENGRAM_STATE_IN_FLIGHT,   /* leased: consumer, attempt, deadline */
  ENGRAM_STATE_RETRYING,    /* waiting for its retry delay or deliver_at */
  ENGRAM_STATE_DONE,        /* acked or cancelled */
  ENGRAM_STATE_DEAD,        /* in the DLQ */
  ENGRAM_STATE_SKIPPED      /* does not match the group's filters */
} engram_event_state;

typedef struct engram_status {
  engram_event_state state;
  char consumer[ENGRAM_MAX_NAME + 1]; /* IN_FLIGHT: who holds it */
  uint32_t attempt;                   /* deliveries so far; 0 once DONE (not kept) */
  int64_t deadline_ns;                /* IN_FLIGHT: lease end; RETRYING: when due */
  char last_error[256];               /* last nack error or DLQ reason, "" = none */
  void *result;                       /* DONE: malloc'd result or NULL; free with engram_free */
  size_t result_len;
} engram_status;
/* Errors: ENOTFOUND (topic, group or offset beyond head). */
ENGRAM_API int engram_status_get(engram *log, const char *topic, const char *group, uint64_t offset,
                                 engram_status *st);
ENGRAM_API const char *engram_state_name(engram_event_state s);

/* Dead-letter queue. */
/* The fields of engram_dlq_entry in the struct's order, numbers as NUM(type, name) and
 * text as TEXT(size, name) (see ENGRAM_TOPIC_INFO_FIELDS). */
#define ENGRAM_DLQ_ENTRY_FIELDS(NUM, TEXT)                             \
  NUM(uint64_t, offset)                                                \
  NUM(uint32_t, attempts)                                              \
  TEXT(256, reason) /* "rejected: ...", "max_deliver exceeded", ... */ \
  TEXT(256, last_error)                                                \
  TEXT(ENGRAM_MAX_NAME + 1, consumer) /* last holder */                \
  NUM(int64_t, first_delivered_ns)                                     \
  NUM(int64_t, dead_ns)
/* Declares one text field of such a list. */
#define ENGRAM_TEXT_FIELD_(size, name) char name[size];

typedef struct engram_dlq_entry {
  ENGRAM_DLQ_ENTRY_FIELDS(ENGRAM_FIELD_, ENGRAM_TEXT_FIELD_)
} engram_dlq_entry;
/* Lists up to max entries with offset >= from (max 0 = all): array freed with engram_free(). */
ENGRAM_API int engram_dlq_list(engram *log, const char *topic, const char *group, uint64_t from,
                               size_t max, engram_dlq_entry **out, size_t *n);
/* Removes the given entries (offsets NULL = all); *count (may be NULL) receives how many. */
ENGRAM_API int engram_dlq_purge(engram *log, const char *topic, const char *group,
                                const uint64_t *offsets, size_t n, size_t *count);
/* Delivers the given DLQ entries (NULL = all) again, to this group only, with fresh
 * attempt counts. */
ENGRAM_API int engram_dlq_redrive(engram *log, const char *topic, const char *group,
                                  const uint64_t *offsets, size_t n, size_t *count);

/* ---------------------------------------------------------------------------------
 * Transactions: acks and appends committed together (consume -> transform -> produce).
 * Operations are buffered and applied at commit in one LMDB write transaction: either
 * all take effect or none does.
 * ------------------------------------------------------------------------------ */
typedef struct engram_txn engram_txn;
ENGRAM_API int engram_txn_begin(engram *log, engram_txn **out);
/* Queues an ack (fenced by attempt when non-zero). */
ENGRAM_API int engram_txn_ack(engram_txn *txn, const char *topic, const char *group,
                              uint64_t offset, uint32_t attempt, const void *result,
                              size_t result_len);
/* Queues an append; *offset (may be NULL) is filled at commit. */
ENGRAM_API int engram_txn_append(engram_txn *txn, const char *topic, const engram_event *ev,
                                 uint64_t *offset);
/* Applies everything; on any failure nothing is applied and the error is returned. The
 * transaction is freed either way. */
ENGRAM_API int engram_txn_commit(engram_txn *txn);
ENGRAM_API void engram_txn_abort(engram_txn *txn);

/* ---------------------------------------------------------------------------------
 * Inspection.
 * ------------------------------------------------------------------------------ */
typedef struct engram_verify_report {
  uint64_t topics;
  uint64_t records;       /* records checked; on a sound log the sum of head - first + 1 */
  uint64_t damaged;       /* records failing CRC or decode, missing offsets, structural faults */
  char first_damage[256]; /* "topic memory offset 17: CRC mismatch", "" = none */
} engram_verify_report;
/* Checks every record of every topic (CRC, decoding, decompression), that every offset
 * from a topic's first to its head is stored once and in order, that the topic and group
 * records decode, and LMDB's structure: the free-page list, and a cursor walk over every database
 * in key order to the entry count its header holds. Returns 0 with report->damaged
 * possibly > 0. The walk runs in a child process (fork) with a handle of its own, because
 * LMDB does not check its pages: a damaged page that makes it fault is reported as damage
 * ("DIR/data.mdb: reading topic T offset N crashed (Bus error) ...") and the caller goes
 * on. The calling program must not ignore SIGCHLD (the child is waited for). Errors:
 * EINVAL; ENOMEM/EIO when fork or the child's open fails for a reason other than damage;
 * EIO when the child is killed from outside (SIGKILL ...); EINTERNAL when it cannot be
 * waited for. Reports progress ("checking records", then "checking databases") to the
 * handle's engram_progress_set() callback, every 100 ms while the child walks. */
ENGRAM_API int engram_verify(engram *log, engram_verify_report *report);

/* ---------------------------------------------------------------------------------
 * Pipelined appends: the producer does not wait for each acknowledgement.
 * ------------------------------------------------------------------------------ */
/* Called once per pipelined append with its result (rc 0 or ENGRAM_E*), from inside
 * engram_append_async() or engram_append_wait() on the producer's thread. */
typedef void (*engram_append_cb)(void *ctx, int rc, uint64_t offset, int duplicate);
/* Queues an append and returns before it is acknowledged. At most the handle's
 * pipeline window of appends are outstanding; past it the call first waits for the
 * oldest. The event is copied. cb may be NULL. Errors found before sending (EINVAL ...)
 * are returned at once; later ones reach cb and engram_append_wait(). */
ENGRAM_API int engram_append_async(engram *log, const char *topic, const engram_event *ev,
                                   engram_append_cb cb, void *ctx);
/* Waits until every pipelined append of this handle is acknowledged. Returns 0, or the
 * first error any of them got since the last call. */
ENGRAM_API int engram_append_wait(engram *log);

/* ---------------------------------------------------------------------------------
 * Remote: the daemon (engram serve) and clients.
 * ------------------------------------------------------------------------------ */
/* Remote handles. Same interface as engram_open(): every function above works on the
 * returned handle with the same semantics and errors. */
typedef struct engram_connect_options {
  uint32_t timeout_ms;    /* per request, default 10000, at most ENGRAM_MAX_TIMEOUT_MS */
  const char *server_key; /* CURVE: server public key (Z85, 40 chars), NULL = plain */
  const char *public_key; /* CURVE: this client's key pair (Z85) */
  const char *secret_key;
  uint32_t pipeline_window; /* pipelined appends in flight, default 256 */
} engram_connect_options;
/* Connects to `engram serve` at endpoint (e.g. "tcp://127.0.0.1:7450"). Errors: EINVAL
 * (also a tcp:// port that is not a number from 1 to 65535, which libzmq would otherwise
 * wrap to another port), ECONN, EDENIED, EVERSION. The connections of a process share one ZeroMQ
 * context (one I/O thread), made by the first and ended when the last closes; a child process after
 * fork() connects anew (a connection does not survive a fork). */
ENGRAM_API int engram_connect(const char *endpoint, const engram_connect_options *opts,
                              engram **out);
/* Remote failures. A request that cannot be sent within timeout_ms (no daemon there) fails
 * with ENGRAM_ECONN and was not applied; one sent whose reply does not come in time fails
 * with ENGRAM_ETIMEDOUT and may or may not have been applied. When the connection drops
 * (a daemon restart), requests safe to repeat (reads, sync, appends whose every event has
 * an idempotency key) are sent again once it is back; the others fail with ENGRAM_ECONN,
 * outcome unknown: a plain append is never sent twice. A fetch may take wait_ms +
 * timeout_ms. Pipelined appends leave in batches while earlier ones await their replies;
 * a thread of the handle sends them when the producer makes no further call. Remote
 * read_range and dlq_list return at most 100000 items per call. A remote
 * engram_txn_commit is one request, applied by the daemon in one transaction, and never
 * sent twice. See docs/protocol.md. */

typedef struct engram_serve_options {
  const char *listen; /* request endpoint, default "tcp://127.0.0.1:7450"; a tcp:// port
                         is a number to 65535 or * (any free port): others are EINVAL */
  const char *notify; /* PUB endpoint for (topic, head) notifications; default
                         "ipc://DIR/notify.ipc" */
  engram_durability durability;
  int log_json;           /* 1: log JSON lines instead of text */
  const char *secret_key; /* CURVE server key pair (Z85); NULL = no CURVE */
  const char *public_key;
  const char *const *allow_keys; /* client public keys allowed (Z85); with CURVE required */
  size_t n_allow_keys;
  uint32_t max_message;   /* largest request in bytes, default 16 MiB */
  uint32_t workers;       /* request worker threads, default the machine's cores (at least 2) */
  const char *http;       /* "127.0.0.1:8080": serve the dashboard, /api, /metrics, /healthz and
                             /readyz there (docs/operations.md); NULL = no HTTP */
  const char *http_token; /* when set, every HTTP request needs it (Bearer token, or the
                             password of Basic auth); required for a non-loopback http */
  const char *allow_keys_file; /* CURVE: a file of allowed client keys, one a line (bare Z85
                                  or `public-key = KEY`; blank and '#' lines skipped), added
                                  to allow_keys; read at start and again on SIGHUP */
  const char *log_file;        /* log lines appended to this file instead of stderr; reopened on
                                  SIGHUP (after logrotate moved it); NULL = stderr */
} engram_serve_options;
/* Runs the daemon on `data_dir` in the calling thread until SIGTERM or SIGINT (or
 * engram_serve_stop()), then finishes in-flight commits and returns 0. It raises the
 * process's soft limit of open files to its hard limit (at most 1048576): a connection
 * holds a descriptor. Refuses with
 * ENGRAM_EBUSY when another daemon serves the directory. SIGHUP does not stop it: it
 * reads allow_keys_file again (a file that no longer reads keeps the old list, logged as
 * an error; a removed key is refused at its next connection, connections already in keep
 * theirs) and reopens log_file. */
ENGRAM_API int engram_serve(const char *data_dir, const engram_serve_options *opts);
/* The daemon holds DIR/daemon.lock, logs one line per notable event on stderr (or
 * log_file), takes the commits of embedded writers of other processes on
 * ipc://DIR/notify-in.ipc and answers a malformed request with ENGRAM_EPROTO. Other errors: EINVAL
 * (options), EBUSY (directory or endpoint in use, or a daemon already runs in this process),
 * ENOTSUP (CURVE without libzmq support), EINVAL or EIO for an allow_keys_file that does not read
 * ("FILE:LINE:
 * ..." in the message) or a log_file that cannot be opened, and those of engram_open(). */
/* Asks a running engram_serve() of this process to stop (async-signal-safe). */
ENGRAM_API void engram_serve_stop(void);
/* Makes a CURVE key pair as two 40-character Z85 strings (plus NUL). */
ENGRAM_API int engram_keygen(char public_key[41], char secret_key[41]);

/* The numeric fields of engram_server_info, one X(type, name) each, in the struct's order
 * (the wire, the CLI and the bindings copy and print them from this list). */
#define ENGRAM_SERVER_INFO_FIELDS(X)                                                 \
  X(uint32_t, protocol_version) /* ENGRAM_PROTOCOL_VERSION the daemon speaks */      \
  X(uint32_t, durability)       /* engram_durability of the daemon's log */          \
  X(uint32_t, max_message)      /* largest request it accepts, bytes */              \
  X(uint32_t, max_events)       /* most events in one append request */              \
  X(uint32_t, workers)          /* request worker threads */                         \
  X(uint32_t, curve)            /* 1: clients must use CURVE */                      \
  X(uint64_t, uptime_ms)        /* since the daemon started */                       \
  X(uint64_t, requests)         /* requests answered */                              \
  X(uint64_t, errors)           /* of which with an error */                         \
  X(uint64_t, bad_requests)     /* malformed, unknown operation or other protocol */ \
  X(uint64_t, appended)         /* events appended through the daemon */             \
  X(uint64_t, notifications)    /* (topic, head) notifications published */          \
  X(uint32_t, queued)           /* requests waiting for a worker now */              \
  X(uint32_t, parked)           /* long-poll fetches waiting for events now */       \
  X(uint64_t, commits)          /* write transactions of the daemon's handle */      \
  X(uint64_t, flushes)          /* and the fdatasync calls they cost */

typedef struct engram_server_info {
  char version[32]; /* ENGRAM_VERSION_STRING of the daemon */
  ENGRAM_SERVER_INFO_FIELDS(ENGRAM_FIELD_)
} engram_server_info;
/* Asks the daemon behind a handle from engram_connect() what it is: its version,
 * durability, limits, uptime and counters (one request; safe to repeat). Fills *out.
 * Errors: EINVAL (NULL argument), ENOTSUP (an embedded handle: there is no daemon),
 * ECONN, ETIMEDOUT, EPROTO (a reply no engram daemon sends). */
ENGRAM_API int engram_server_info_get(engram *log, engram_server_info *out);
/* ---------------------------------------------------------------------------------
 * Workers: the consumers that serve groups, as an operator sees them. A fetch by consumer
 * C registers C (or refreshes its last-seen time, at most once a second, inside the
 * fetch's own write transaction); engram_worker_heartbeat() adds what a fetch cannot
 * know (host, pid, concurrency, counts, what runs now). The records live in the log, so
 * embedded workers of every process and remote workers through the daemon all appear.
 * ------------------------------------------------------------------------------ */
#define ENGRAM_MAX_WORKER_GROUPS 16  /* "topic/group" entries kept per worker */
#define ENGRAM_MAX_WORKER_RUNNING 16 /* running tasks reported per worker */
#define ENGRAM_DEFAULT_WORKER_LOST_MS 30000

/* One event a worker is handling now. */
typedef struct engram_worker_task {
  char topic[ENGRAM_MAX_NAME + 1];
  char group[ENGRAM_MAX_NAME + 1];
  uint64_t offset;
  int64_t since_ns; /* CLOCK_REALTIME: when the worker started it */
} engram_worker_task;

/* The scalar fields of engram_worker_info, numbers as NUM(type, name) and text as
 * TEXT(size, name) (see ENGRAM_DLQ_ENTRY_FIELDS). */
#define ENGRAM_WORKER_INFO_FIELDS(NUM, TEXT)                                                \
  TEXT(ENGRAM_MAX_NAME + 1, name) /* the consumer name it fetches with */                   \
  TEXT(256, host)                 /* "" = unknown */                                        \
  NUM(uint32_t, pid)              /* 0 = unknown */                                         \
  NUM(uint32_t, concurrency)      /* events it may handle at once, 0 = unknown */           \
  NUM(int64_t, started_ns)        /* CLOCK_REALTIME: first registration (or given start) */ \
  NUM(int64_t, last_seen_ns)      /* CLOCK_REALTIME: last fetch or heartbeat */             \
  NUM(uint64_t, handled)          /* events it finished, as it last reported */             \
  NUM(uint64_t, failed)           /* events that failed in it, as it last reported */       \
  NUM(uint32_t, lost)             /* out: 1 when not seen for the list's lost_after_ms */

typedef struct engram_worker_info {
  ENGRAM_WORKER_INFO_FIELDS(ENGRAM_FIELD_, ENGRAM_TEXT_FIELD_)
  size_t n_groups;
  char groups[ENGRAM_MAX_WORKER_GROUPS][2 * ENGRAM_MAX_NAME + 2]; /* "topic/group" it serves */
  size_t n_running;
  engram_worker_task running[ENGRAM_MAX_WORKER_RUNNING];
} engram_worker_info;

/* Registers or refreshes the worker `w->name`: its last-seen time becomes now; host, pid,
 * concurrency, handled, failed and running replace the stored ones; the groups are added
 * to those it is known to serve (at most ENGRAM_MAX_WORKER_GROUPS, oldest dropped);
 * started_ns 0 keeps the stored start (or now for a new worker); lost is ignored. The
 * heartbeat also forgets every worker not seen for 7 days.
 * Errors: EINVAL (NULL, a name not of 1-200 [A-Za-z0-9._-], n_groups or n_running over
 * their limits, a group not "topic/group" of valid names, a running task's names). */
ENGRAM_API int engram_worker_heartbeat(engram *log, const engram_worker_info *w);
/* Lists the known workers in name order, each marked lost when not seen for lost_after_ms
 * (0 = ENGRAM_DEFAULT_WORKER_LOST_MS): *out is a malloc'd array of *n entries freed with
 * engram_free(). Errors: EINVAL. */
ENGRAM_API int engram_worker_list(engram *log, uint64_t lost_after_ms, engram_worker_info **out,
                                  size_t *n);
/* Forgets a worker (a worker that stops cleanly; a lost one the operator removes). A fetch
 * or heartbeat by that name registers it again. Errors: EINVAL, ENOTFOUND. */
ENGRAM_API int engram_worker_forget(engram *log, const char *name);

/* ---------------------------------------------------------------------------------
 * Maintenance: retention and key compaction (docs/operations.md).
 * ------------------------------------------------------------------------------ */
/* What engram_compact() did, one X(type, name) each. */
#define ENGRAM_COMPACT_REPORT_FIELDS(X)                                                     \
  X(uint64_t, removed)         /* events removed */                                         \
  X(uint64_t, slices)          /* write transactions that removed something */              \
  X(uint64_t, skipped)         /* of them, unfinished for some group (forced retention) */  \
  X(uint64_t, held_at)         /* the offset retention stopped at because a group has not   \
                                  finished it or its delayed delivery is ahead; 0 = none */ \
  X(int64_t, max_slice_ns)     /* longest time one slice spent in its write transaction */  \
  X(int64_t, max_slice_cpu_ns) /* the most CPU time one slice used there (max_slice_ns      \
                                  minus this is waiting: I/O, or the CPU busy elsewhere) */ \
  X(uint64_t, compacted)       /* events removed by key compaction (not in removed) */      \
  X(uint64_t, tombstones)      /* of them, tombstones whose tombstone_ttl_ms had passed */  \
  X(uint64_t, compact_held_at) /* the offset key compaction stopped at because a group has  \
                                  not finished it or its delayed delivery is ahead */       \
  X(uint64_t, indexed)         /* events added to the key index: those appended since the   \
                                  last slice, or stored before compaction was turned on */
typedef struct engram_compact_report {
  ENGRAM_COMPACT_REPORT_FIELDS(ENGRAM_FIELD_)
} engram_compact_report;
/* Applies the retention limits and the key compaction of `topic` (NULL = every topic)
 * now, in slices of at most a few milliseconds each so that appends keep flowing, until
 * nothing more may be removed. The topic's first offset moves up; offsets are never
 * reused; a read of a removed offset gets ENGRAM_ENOTFOUND saying so. Unless the topic has
 * ENGRAM_TOPIC_RETAIN_FORCE, an event that a group has not finished (acked,
 * dead-lettered or cancelled) or whose delayed delivery is still ahead is kept, with
 * everything after it. *report (may be NULL) receives what was done. LMDB reuses the
 * freed pages: data.mdb stops growing but does not shrink (engram_reclaim() shrinks it).
 * Reports progress ("applying retention", topics) to the handle's engram_progress_set()
 * callback. Errors: ENOTFOUND (topic), ENOTSUP (read-only handle), EIO, ENOSPC. */
/* Key compaction (ENGRAM_TOPIC_COMPACT_KEY) removes, under the same safety rule, each
 * keyed event that a newer event of its key supersedes and each tombstone older than the
 * topic's tombstone_ttl_ms; it finds them through a key index that its slices extend
 * with the events appended since the last one (each event is read once; appends pay
 * nothing for it), never by scanning the topic again. Its gaps are counted in
 * engram_topic_info.compacted, so engram_verify() still reports a missing record as
 * damage. */
ENGRAM_API int engram_compact(engram *log, const char *topic, engram_compact_report *report);

/* ---------------------------------------------------------------------------------
 * Rates: events per second over the last 1, 5 and 15 minutes, for every process alike.
 * Nothing is sampled by the reader: a topic's appends are counted from its records' append
 * times, and each group keeps per-minute counts of its deliveries, acks, nacks, rejects
 * and dead letters for the last 15 minutes in its own record, updated in the write
 * transactions that change those counters (no commit of their own). So an embedded
 * `engram top --data DIR` started a moment ago shows the same rates as the daemon.
 * ------------------------------------------------------------------------------ */
#define ENGRAM_RATE_WINDOWS 3 /* [0] = 1 minute, [1] = 5 minutes, [2] = 15 minutes */
/* The rate fields of engram_rate_info, one X(type, name) each, in the struct's order: each
 * is an array of ENGRAM_RATE_WINDOWS rates in events per second (the wire, the CLI and
 * the bindings copy them from this list). */
#define ENGRAM_RATE_FIELDS(X)                                                       \
  X(double, appended)      /* events appended to the topic (those retention already \
                              removed are not counted) */                           \
  X(double, delivered)     /* deliveries by the group, first and later attempts */  \
  X(double, acked)         /* acks accepted */                                      \
  X(double, nacked)        /* nacks accepted */                                     \
  X(double, rejected)      /* rejects accepted */                                   \
  X(double, dead_lettered) /* events that entered the group's dead-letter queue */
/* Declares one field of ENGRAM_RATE_FIELDS. */
#define ENGRAM_RATE_FIELD_(type, name) type name[ENGRAM_RATE_WINDOWS];

typedef struct engram_rate_info {
  char topic[ENGRAM_MAX_NAME + 1];
  char group[ENGRAM_MAX_NAME + 1]; /* "" = the topic's own row: only `appended` is set */
  ENGRAM_RATE_FIELDS(ENGRAM_RATE_FIELD_)
} engram_rate_info;
/* Lists the rates of `topic` (NULL = every topic), topics in name order, each topic's own
 * row (group "") followed by one row per group of it in name order; a group's row carries
 * its topic's `appended` too. Each rate is the count in the window divided by the
 * window's length, or by the topic's or group's age when it is younger; the minute
 * counts are interpolated at the window's older end, so a rate moves smoothly. *out is a
 * malloc'd array of *n entries freed with engram_free(). Errors: EINVAL (NULL argument,
 * topic name), ENOTFOUND (topic). */
ENGRAM_API int engram_rate_list(engram *log, const char *topic, engram_rate_info **out, size_t *n);

/* ---------------------------------------------------------------------------------
 * Schedules: periodic appends stored in the log (beat without its double fires; see
 * docs/operations.md, "Schedules").
 *
 * A schedule appends one event to a topic at every *slot*: a scheduled time given either
 * by an interval (every_ms, slots start_ns + k * every_ms) or by a 5-field cron
 * expression read in an IANA time zone. Schedules live in the log, so every process and
 * the daemon see the same ones; they are fired by engram_schedule_tick(), which
 * `engram serve` runs and, with no daemon, the embedded process holding the log's
 * maintenance lease (DIR/maintenance.lock) runs (at most a second after a slot falls due).
 *
 * EXACTLY ONCE. The fire of a slot is one append with the idempotency key "NAME@SLOT"
 * (SLOT = the scheduled time in RFC 3339 UTC, "2026-03-29T01:00:00Z", with a fraction of
 * a second only when it has one), committed in the same LMDB write transaction that
 * records the slot as the schedule's last: a slot fires at most once, however many
 * daemons and processes tick the log, across kill -9 and restarts, and long after the
 * dedup window has passed. The event carries the headers "engram-schedule" (NAME),
 * "engram-slot" (SLOT) and "engram-fire" ("scheduled", "catchup" or "manual").
 *
 * CRON. "minute hour day-of-month month day-of-week": minute 0-59, hour 0-23, day 1-31,
 * month 1-12 or JAN-DEC, day of week 0-7 (0 and 7 are Sunday) or SUN-SAT; each field is
 * "*", a value, a range "a-b", a list "a,b-c", with an optional step "* /n" or "a-b/n"
 * (written without the space); names are case-insensitive. When both day-of-month and
 * day-of-week are restricted (neither is "*"), a day matches if EITHER matches (Vixie cron).
 * Times are local to the schedule's zone, computed from the zone's TZif file under
 * /usr/share/zoneinfo (the TZ environment variable is never read nor set). Across DST
 * changes: a local time that does not exist (skipped by a spring-forward gap, e.g. 02:30
 * in Europe/Paris on the last Sunday of March) fires once at the first instant after the
 * gap (03:00 local); a local time that occurs twice (a fall-back overlap) fires once, at
 * its first occurrence.
 *
 * MISSED FIRES. A slot a tick reaches more than 30 s after its time (or half the
 * interval, for intervals under a minute) was missed: nothing ticked the log then (no
 * daemon, no process open). The next tick applies the schedule's `missed` policy to the
 * slots due: ONCE fires only the newest of them (once, as "catchup" when it was missed),
 * SKIP fires none of the missed ones (the schedule resumes with its next slot), ALL fires
 * each in order, but at most the newest max_catchup; older ones are skipped. Slots passed
 * over are counted in the info's `skipped` (for cron schedules, counting stops at 100,000
 * per tick: the rest are skipped uncounted). Slots that fall while a schedule is paused
 * are skipped on resume.
 * ------------------------------------------------------------------------------ */
#define ENGRAM_MAX_CRON 256                               /* cron expression: bytes */
#define ENGRAM_MAX_TZ 64                                  /* time zone name: bytes */
#define ENGRAM_MIN_SCHEDULE_EVERY_MS 1000u                /* shortest interval: 1 s */
#define ENGRAM_MAX_SCHEDULE_EVERY_MS (3660ull * 86400000) /* longest interval: about 10 years */
#define ENGRAM_DEFAULT_MAX_CATCHUP 100u                   /* max_catchup when 0 */
#define ENGRAM_MAX_CATCHUP 10000u                         /* highest max_catchup */

/* What a tick does with slots that passed without being fired (see MISSED FIRES). */
typedef enum engram_missed {
  ENGRAM_MISSED_ONCE = 0, /* default: fire the newest slot due, once */
  ENGRAM_MISSED_SKIP,     /* fire none of the missed slots */
  ENGRAM_MISSED_ALL       /* fire each missed slot (the newest max_catchup at most) */
} engram_missed;

/* A schedule's configuration. Zero / NULL means default for every field. Exactly one of
 * every_ms and cron is set. Strings and buffers are copied. */
typedef struct engram_schedule_config {
  uint64_t every_ms;   /* interval, ENGRAM_MIN_SCHEDULE_EVERY_MS .. ENGRAM_MAX_SCHEDULE_EVERY_MS;
                          0 = a cron schedule */
  int64_t start_ns;    /* interval only: slots are start_ns + k * every_ms (CLOCK_REALTIME,
                          >= 0); 0 = aligned to the Unix epoch, so "every 5 minutes" fires at
                          :00, :05, :10 ... UTC */
  const char *cron;    /* 5-field cron expression (see CRON), NULL/"" = an interval schedule */
  const char *tz;      /* IANA zone of the cron expression ("Europe/Paris"); NULL/"" = "UTC";
                          an interval schedule takes only "UTC" */
  const char *topic;   /* the topic each fire appends to (existing when it fires) */
  const char *type;    /* the event type, as engram_event.type */
  const void *payload; /* the event payload, at most 1 MiB; may be NULL when payload_len is 0 */
  size_t payload_len;
  const char *key;              /* the event key, NULL/"" = none */
  const char *content_type;     /* NULL/"" = none */
  const engram_header *headers; /* n_headers extra headers of every fire; names starting
                                   "engram-" are reserved */
  size_t n_headers;             /* at most ENGRAM_MAX_HEADERS - 3 */
  engram_missed missed;         /* default ENGRAM_MISSED_ONCE */
  uint32_t max_catchup;         /* ENGRAM_MISSED_ALL: most slots one catch-up fires,
                                   default ENGRAM_DEFAULT_MAX_CATCHUP, at most ENGRAM_MAX_CATCHUP */
} engram_schedule_config;

/* The state of a schedule, one X(type, name) each, in engram_schedule_info's order (the
 * wire, the CLI and the bindings copy and print them from this list). Times are
 * CLOCK_REALTIME nanoseconds, 0 = none. */
#define ENGRAM_SCHEDULE_INFO_FIELDS(X)                                                          \
  X(int64_t, created_ns)    /* when it was added; its first slot is the first at or after */    \
  X(uint32_t, paused)       /* 1: ticks fire nothing */                                         \
  X(uint64_t, fires)        /* slots fired (scheduled and catch-up) */                          \
  X(uint64_t, manual_fires) /* engram_schedule_run_now() fires */                               \
  X(uint64_t, skipped)      /* slots passed over (missed-fire policy, pause) */                 \
  X(int64_t, last_slot_ns)  /* the newest slot fired or passed over */                          \
  X(int64_t, last_fire_ns)  /* clock time of the newest fire, manual ones included */           \
  X(uint64_t, last_offset)  /* offset of the event of the newest fire */                        \
  X(int64_t, next_slot_ns)  /* the next slot to fire (also while paused: what would fire)    */ \
  X(int64_t, updated_ns)    /* last change of the configuration (add, a changing set) */        \
  X(int64_t, last_error_ns) /* when a fire last failed (see last_error), 0 = none */

typedef struct engram_schedule_info {
  char name[ENGRAM_MAX_NAME + 1];
  /* The configuration with defaults filled in (tz "UTC", missed, max_catchup); its
   * pointers point into the allocation holding this info and live as long as it. */
  engram_schedule_config config;
  ENGRAM_SCHEDULE_INFO_FIELDS(ENGRAM_FIELD_)
  char last_error[256]; /* why the last fire failed ("append jobs: no such topic"), "" when
                           none did since the last fire that succeeded */
} engram_schedule_info;

/* Adds the schedule `name` (1-200 of [A-Za-z0-9._-]). Its first slot is the first at or
 * after now (the handle's clock). The topic need not exist yet: a fire into a missing
 * topic fails (the tick reports it) and is tried again at the next tick.
 * Errors: EINVAL (name, no or both of every_ms and cron, a bad cron expression, an unknown
 * zone, a field of the event; the message names it), EEXIST (a schedule of that name),
 * ETOOBIG (payload or headers), ENOTSUP (read-only handle). */
ENGRAM_API int engram_schedule_add(engram *log, const char *name,
                                   const engram_schedule_config *cfg);
/* Declares the schedule `name` idempotently (what a beat configuration loaded by every
 * process at start-up needs): adds it when missing; when it exists with the same
 * configuration (defaults filled in) does nothing; otherwise replaces the configuration
 * and keeps the fire state (last slot, counts, pause). When the timing changes (every_ms,
 * start_ns, cron or tz), slots before now are not caught up. *changed (may be NULL)
 * receives 0 (unchanged), 1 (added) or 2 (replaced). Errors as engram_schedule_add, but
 * never EEXIST. */
ENGRAM_API int engram_schedule_set(engram *log, const char *name, const engram_schedule_config *cfg,
                                   int *changed);
/* Fills *out with a malloc'd engram_schedule_info (payload and strings in the same
 * allocation) freed with engram_free(); next_slot_ns is computed for the handle's clock.
 * Errors: EINVAL, ENOTFOUND, ECORRUPT (its record does not decode: remove it and add it
 * again; engram_verify() reports it too). */
ENGRAM_API int engram_schedule_get(engram *log, const char *name, engram_schedule_info **out);
/* Lists the schedules in name order: *out is a malloc'd array of *n entries (payloads and
 * strings in the same allocation) freed with one engram_free(); a record that does not
 * decode is left out. Errors: EINVAL. */
ENGRAM_API int engram_schedule_list(engram *log, engram_schedule_info **out, size_t *n);
/* Removes a schedule; events it appended stay. Errors: EINVAL, ENOTFOUND. */
ENGRAM_API int engram_schedule_remove(engram *log, const char *name);
/* Pauses a schedule: ticks fire nothing for it until engram_schedule_resume(). Pausing a
 * paused schedule does nothing. Errors: EINVAL, ENOTFOUND. */
ENGRAM_API int engram_schedule_pause(engram *log, const char *name);
/* Resumes a paused schedule; the slots that fell while it was paused are skipped (counted
 * in `skipped`), the next fires at its time. Resuming a running one does nothing.
 * Errors: EINVAL, ENOTFOUND. */
ENGRAM_API int engram_schedule_resume(engram *log, const char *name);
/* Fires the schedule now, paused or not, outside its slot sequence: one append with the
 * idempotency key "NAME@manual-TIME" (TIME = the handle's clock, RFC 3339 UTC with
 * nanoseconds) and "engram-fire: manual"; the slots and the missed-fire state are not
 * touched. *offset (may be NULL) receives the event's offset.
 * Errors: EINVAL, ENOTFOUND (schedule or its topic), and those of engram_append(). */
ENGRAM_API int engram_schedule_run_now(engram *log, const char *name, uint64_t *offset);

/* What one engram_schedule_tick() did. */
typedef struct engram_schedule_tick_report {
  uint64_t fired;        /* events appended */
  uint64_t skipped;      /* slots passed over by missed-fire policies */
  uint64_t failed;       /* schedules whose fire failed (a missing topic ...): tried again
                            at the next tick */
  int64_t next_due_ns;   /* the earliest next slot of any schedule not paused, 0 = none */
  char first_error[256]; /* the message of the first failure, "" = none */
} engram_schedule_tick_report;
/* Fires every slot due at now_ns (0 = the handle's clock) of every schedule not paused,
 * each schedule in one write transaction: its appends, with its missed-fire policy
 * applied, and its new last slot. Safe to call from any number of processes at once: a
 * slot fires exactly once (see EXACTLY ONCE). A schedule that cannot fire (its topic
 * missing) is counted in report->failed and does not stop the others. The daemon and
 * the maintenance lease holder call it; tests call it with a test clock (a now_ns ahead
 * of the real time fires slots early, and they never fire again at their time). On a
 * remote handle the daemon ticks its log and refuses a now_ns more than a second ahead of
 * its clock. *report (may be NULL) receives what was done.
 * Errors: EINVAL (now_ns < 0, or ahead of a daemon's clock), ENOTSUP (read-only handle),
 * EIO, ENOSPC. */
ENGRAM_API int engram_schedule_tick(engram *log, int64_t now_ns,
                                    engram_schedule_tick_report *report);

/* ---------------------------------------------------------------------------------
 * The log's identity (docs/scale-out.md: the mirror names its messages by it).
 * ------------------------------------------------------------------------------ */
typedef struct engram_log_info {
  char id[33];             /* the log id: 32 lowercase hex digits, random, made when the
                              log is created and never changed. A backup (engram_backup)
                              keeps it; a log rebuilt by `engram restore` is a new log
                              with a new id. A log made before ids were stored gets one
                              at its next read-write open; "" while only read-only
                              handles have seen it. */
  int64_t created_ns;      /* CLOCK_REALTIME when the log was created (for such an old
                              log: when it got its id) */
  uint32_t format_version; /* ENGRAM_FORMAT_VERSION of its files */
} engram_log_info;
/* Fills *out with the identity of the log behind the handle (embedded: read at open, no
 * transaction; remote: the daemon's log, one request).
 * Errors: EINVAL (NULL argument); remote: ECONN, ETIMEDOUT, EPROTO (a reply no engram
 * daemon sends). */
ENGRAM_API int engram_log_info_get(engram *log, engram_log_info *out);

/* ---------------------------------------------------------------------------------
 * Progress of long calls, and giving space back to the file system (docs/operations.md).
 * ------------------------------------------------------------------------------ */
/* Called by a long call (engram_backup, engram_verify, engram_compact, engram_reclaim)
 * on the caller's thread while it works: `phase` names what it does now ("copying",
 * "checking records" ...; a static string), `done` of `total` units of that phase are
 * finished (bytes, records or topics, as the phase says). Within a phase `done` never
 * goes down and never exceeds `total`; `total` may grow (writers keep appending) and is
 * 0 when unknown. Each phase ends with a call where done == total. It must not call
 * engram on the same handle. Work in the background (the maintenance runner's retention
 * passes) reports nothing. */
typedef void (*engram_progress_fn)(void *ctx, const char *phase, uint64_t done, uint64_t total);
/* Sets (fn NULL: removes) the progress callback of `log`'s long calls. A remote handle
 * accepts it but never calls it: the daemon does the work. Errors: EINVAL (log NULL). */
ENGRAM_API int engram_progress_set(engram *log, engram_progress_fn fn, void *ctx);

/* Options for engram_reclaim(). Zero means default; NULL means all defaults. */
typedef struct engram_reclaim_options {
  engram_progress_fn progress; /* NULL = none; phases "copying" (bytes), "swapping" (steps) */
  void *progress_ctx;
} engram_reclaim_options;
/* What engram_reclaim() did, one X(type, name) each. */
#define ENGRAM_RECLAIM_REPORT_FIELDS(X)                             \
  X(uint64_t, bytes_before) /* size of data.mdb before, in bytes */ \
  X(uint64_t, bytes_after)  /* size of data.mdb after (the compacted copy) */
typedef struct engram_reclaim_report {
  ENGRAM_RECLAIM_REPORT_FIELDS(ENGRAM_FIELD_)
} engram_reclaim_report;
/* How data.mdb's space is used: how much of it the log fills and how much is free pages
 * (freed by retention, dropped topics and LMDB's copy-on-write, and reused by later
 * writes). A log that is mostly free pages writes more pages per commit than a compact
 * one (LMDB's free list is long); engram_reclaim() gives them back. One X(type, name)
 * each, in bytes. */
#define ENGRAM_SPACE_FIELDS(X)                                                          \
  X(uint64_t, file_bytes) /* size of DIR/data.mdb (pages newer than the last checkpoint \
                             may not have reached it yet) */                            \
  X(uint64_t, used_bytes) /* pages the log uses: events, groups, indexes, LMDB's own */ \
  X(uint64_t, free_bytes) /* pages on LMDB's free list (those a reader's snapshot still \
                             sees are reused once it ends) */                           \
  X(uint64_t, map_bytes)  /* the memory map: data.mdb grows to it, then the map doubles */
typedef struct engram_space {
  ENGRAM_SPACE_FIELDS(ENGRAM_FIELD_)
} engram_space;
/* Fills *out with the space of the log behind the handle (embedded: a read transaction
 * that walks LMDB's free list, 0.12 ms for 63,000 free pages in 7,600 lists; remote: the
 * daemon's log, one request). Errors: EINVAL (NULL argument), EIO; remote: ECONN,
 * ETIMEDOUT, EPROTO. */
ENGRAM_API int engram_space_get(engram *log, engram_space *out);

/* Gives the log's free pages back to the file system: LMDB never shrinks data.mdb (pages
 * freed by retention or a dropped topic are only reused), so this writes a compacted copy
 * of the log beside it (DIR/data.mdb.reclaim), forces it to disk, and renames it over
 * data.mdb. Every event, group, cursor, idempotency key, worker and topic setting is kept.
 * It needs the log to itself: every handle (read-write or read-only, of any process,
 * this one included) holds a shared lock on DIR/open.lock, and the reclaim takes it
 * exclusively for the whole copy and swap (and refuses as well while another process
 * holds LMDB's own lock on lock.mdb: an older engram, another LMDB program); while it
 * runs, engram_open() of the log fails at once with ENGRAM_EBUSY. A crash or power cut
 * at any step leaves the old or the new data file, complete, and at most a leftover copy
 * that the next read-write open removes. Needs free disk space for the copy (about the
 * size of the live data).
 * *report (may be NULL) receives the sizes. Errors:
 *   EINVAL    path invalid
 *   ENOTFOUND no log there
 *   EBUSY     some process has the log open (the message names the pids it can see:
 *             close them, or stop `engram serve`, and retry)
 *   EDENIED   the directory is not writable
 *   ECORRUPT, EVERSION as engram_open(); ENOSPC (nothing changed), EIO, ENOMEM */
ENGRAM_API int engram_reclaim(const char *path, const engram_reclaim_options *opts,
                              engram_reclaim_report *report);

#ifdef __cplusplus
}
#endif
#endif /* ENGRAM_H */
