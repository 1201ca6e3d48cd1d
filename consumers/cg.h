/* cg.h — declarations shared by the files of consumers/ only. */
#ifndef ENGRAM_CG_H
#define ENGRAM_CG_H

#include "consumers/consumers.h"
#include "schema/group.pb-c.h"

#define CG_DEFAULT_ACK_WAIT_MS 30000
#define CG_DEFAULT_MAX_DELIVER 5
#define CG_DEFAULT_RESULT_TTL_MS 86400000ull
#define CG_MAX_RESULT ENGRAM_MAX_RESULT
#define CG_MAX_LEASE_SPAN 65536 /* offsets one lease may cover */

enum { CG_LEASED = 1, CG_WAITING = 2, CG_BLOCKED = 3 };

/* The databases of the consumer layer. */
typedef struct cg_dbs {
  MDB_dbi groups;  /* "topic\0group" -> GroupMeta */
  MDB_dbi leases;  /* gid|first -> Lease */
  MDB_dbi due;     /* gid|due_ns|first -> "" : leases by deadline / due time */
  MDB_dbi dlq;     /* gid|offset -> DlqEntry */
  MDB_dbi results; /* gid|offset -> expires_ns|bytes */
  MDB_dbi keys;    /* gid|key -> KeyState (the owner); gid|key|0|offset -> "" (waiting) */
  MDB_dbi skips;   /* gid|offset -> "" : cancelled before the cursor reached them */
} cg_dbs;
int cg_dbs_get(struct log *log, cg_dbs *d);

/* The counters the group keeps per-minute counts of (rates.c), in their slot order. */
#define CG_RATE_COUNTERS(X) X(delivered) X(acked) X(nacked) X(rejected) X(dead_lettered)
enum cg_rate_counter {
#define X(name) CG_RATE_##name,
  CG_RATE_COUNTERS(X)
#undef X
      CG_RATE_N
};
#define CG_RATE_BUCKETS 16 /* minutes of counts kept: a 15-minute window and the current one */

/* A loaded group: its meta record and the names it is stored under. */
typedef struct cg_group {
  char topic[ENGRAM_MAX_NAME + 1];
  char name[ENGRAM_MAX_NAME + 1];
  Engram__GroupMeta *meta; /* owned; free with cg_group_free */
  log_topic t;
  uint64_t loaded[CG_RATE_N]; /* the counters as loaded or last stored: a store adds the
                                 growth since to the current minute's counts */
} cg_group;
/* Loads a group in txn. Errors: EINVAL (names), ENOTFOUND (topic or group). */
int cg_group_load(struct log *log, MDB_txn *txn, const cg_dbs *d, const char *topic,
                  const char *group, cg_group *g);
/* Writes the group's record; the counters' growth since the load goes into the current
 * minute's counts (cg_rate_note) on the way. */
int cg_group_store(struct log *log, MDB_txn *txn, const cg_dbs *d, cg_group *g);
void cg_group_free(cg_group *g);
/* The group's lowest unfinished offset: its cursor, or the lowest open member of a lease
 * below it. Retention keeps everything from there on. 0 when the leases cannot be read. */
uint64_t cg_group_lowest_open(MDB_txn *txn, const cg_dbs *d, const cg_group *g);
int cg_filter_match(const Engram__GroupMeta *m, const char *type, size_t len);

/* A lease in memory. */
typedef struct cg_lease {
  uint64_t first;
  Engram__Lease *pb; /* owned */
} cg_lease;
void cg_lease_free(cg_lease *l);
int cg_bit(const ProtobufCBinaryData *b, uint64_t i);
void cg_bit_set(ProtobufCBinaryData *b, uint64_t i);
/* Finds the lease whose range holds `offset` as a member. Returns 0 and fills *l, or
 * ENGRAM_ENOTFOUND. */
int cg_lease_find(MDB_txn *txn, const cg_dbs *d, uint32_t gid, uint64_t offset, cg_lease *l);
/* Writes a lease and its due-index entry (deleting the entry at old_due when non-zero). */
int cg_lease_put(MDB_txn *txn, const cg_dbs *d, uint32_t gid, const cg_lease *l, int64_t old_due);
int cg_lease_del(MDB_txn *txn, const cg_dbs *d, uint32_t gid, const cg_lease *l);
/* Builds a new lease in memory for offsets [first, last]. */
int cg_lease_new(cg_lease *l, uint64_t first, uint64_t last, int state);
/* Members not yet done. */
uint64_t cg_lease_open(const cg_lease *l);
const char *cg_lease_key(const cg_lease *l, uint64_t offset);
/* Records the key of member `offset` (key-ordered groups). */
int cg_lease_add_key(cg_lease *l, uint64_t offset, const char *key, size_t len);
/* Marks `offset` done in its lease and deletes the lease when nothing is left; releases
 * its key in key-ordered groups. Writes the lease. */
int cg_lease_finish(log_wtx *w, const cg_dbs *d, cg_group *g, cg_lease *l, uint64_t offset);
/* Moves the open members of l within [lo, hi] into a new lease *out keyed at its first
 * member, with l's state, attempt, deadline, consumer, error and keys; writes l (re-keyed
 * when its first offset moved to out) but not out. ENGRAM_ENOTFOUND when none is open. */
int cg_lease_extract(MDB_txn *txn, const cg_dbs *d, uint32_t gid, cg_lease *l, uint64_t lo,
                     uint64_t hi, cg_lease *out);
int64_t cg_stored_due(const cg_lease *l);
/* Moves aside a lease keyed at `offset` (where offset itself is finished), so a new
 * single-event lease can take that key. */
int cg_lease_make_room(MDB_txn *txn, const cg_dbs *d, uint32_t gid, uint64_t offset);
/* Moves `offset` out of lease l into a single-event lease of `state` due at `due`, and
 * writes both. */
int cg_lease_split_one(log_wtx *w, const cg_dbs *d, cg_group *g, cg_lease *l, uint64_t offset,
                       int state, int64_t due, const char *error, cg_lease *out);
/* Sends offset (a member of l, or l == NULL) to the DLQ. */
int cg_dead(log_wtx *w, const cg_dbs *d, cg_group *g, cg_lease *l, uint64_t offset,
            const char *reason, const char *last_error);
/* Key-ordered groups: takes the key for `offset`, or queues `offset` behind the key's
 * owner and sets *busy. */
int cg_key_take(log_wtx *w, const cg_dbs *d, cg_group *g, const char *key, size_t len,
                uint64_t offset, int *busy);
/* Key-ordered groups: `offset` finished. When it owned the key, the key passes to the
 * next waiting event; when it was waiting, it leaves the queue. */
int cg_key_release(log_wtx *w, const cg_dbs *d, cg_group *g, const char *key, uint64_t offset);

void cg_key_gid(unsigned char *k, uint32_t gid);
void cg_key_gid_off(unsigned char *k, uint32_t gid, uint64_t off);
/* Deletes every key of dbi with the 4-byte gid prefix. */
int cg_del_prefix(MDB_txn *txn, MDB_dbi dbi, uint32_t gid);
/* Appends "offset" details of the group for messages. */
#define CG_WHAT "%s/%s"

/* worker.c: the "workers" database, and a fetch's refresh of its consumer's record
 * (at most once a second per consumer, unless it fetches from a new group). */
int cg_worker_dbi(struct log *log, MDB_dbi *out);
int cg_worker_seen(log_wtx *w, MDB_dbi dbi, const char *consumer, const char *topic,
                   const char *group);

/* rates.c: the counters of CG_RATE_COUNTERS as they are now in g->meta, into out. */
void cg_rate_counters(const Engram__GroupMeta *m, uint64_t out[CG_RATE_N]);
/* Adds the growth of the counters since g->loaded to the per-minute counts of the minute
 * of now_ns (rolling the ring forward), and makes g->loaded current. Returns 0 or
 * ENGRAM_ENOMEM. */
int cg_rate_note(cg_group *g, int64_t now_ns);
/* retain.c: the names of the groups of `topic`, malloc'd one after another ("a\0b\0"),
 * *n of them; the calling thread's CPU time. */
int cg_topic_group_names(struct log *log, MDB_txn *txn, const cg_dbs *d, const char *topic,
                         char **out, size_t *n);
int64_t cg_thread_cpu_ns(void);
/* keycomp.c: key compaction of one topic until nothing more may go, added to *rep. */
int cg_keycomp_topic(struct log *log, const cg_dbs *d, const char *topic,
                     engram_compact_report *rep);

/* settle.c: acks of items against a loaded group inside a job, codes[i] (may be NULL)
 * receiving each item's code; returns the first failing item's code (its message copied
 * to first_msg when not NULL) or a storage error, 0 when all succeeded. Items that
 * succeed change w->txn even when others fail: abort the job to apply none. */
int cg_ack_items(log_wtx *w, const cg_dbs *d, cg_group *g, const engram_ack_item *items, size_t n,
                 int *codes, char *first_msg, size_t msg_cap);
/* settle.c: one ack inside a job (used by txn.c too). */
int cg_ack_one(log_wtx *w, const cg_dbs *d, cg_group *g, uint64_t offset, uint32_t attempt,
               const void *result, size_t result_len);

/* log_verify's check of the schedule records (schedule.c): each key a valid name, each
 * value decoding to a record whose cron expression parses. Reads only. */
void cg_schedule_verify(MDB_txn *txn, log_damage_fn damage, void *ctx);

#endif
