/* net.h — what the files of net/ share: the wire codec, the notification board and the
 * daemon's hooks. Private to net/ (and its tests and fuzz target). */
#ifndef ENGRAM_NET_H
#define ENGRAM_NET_H

#include <stddef.h>
#include <stdint.h>

#include "api/api.h"
#include "schema/wire.pb-c.h"

#define NET_DEFAULT_LISTEN "tcp://127.0.0.1:7450"
#define NET_DEFAULT_MAX_MESSAGE (16u << 20)
#define NET_MIN_MAX_MESSAGE (64u << 10)
#define NET_MAX_WORKERS 256
#define NET_DEFAULT_TIMEOUT_MS 10000
#define NET_DEFAULT_WINDOW 256
#define NET_MAX_WINDOW 65536
#define NET_GATHER_NS 1000000   /* the daemon's commit gather window: about a client round trip */
#define NET_MAX_DEPTH 8         /* nesting of messages inside a request */
#define NET_MAX_EVENTS 65536    /* events in one append request (as engram_append_batch) */
#define NET_MAX_ITEMS 100000    /* acks in one request (as engram_ack_many), txn operations */
#define NET_MAX_OFFSETS 1000000 /* offsets in one DLQ purge / redrive */
#define NET_MAX_READ 100000     /* events in one read_range reply (as the embedded API) */
#define NET_MAX_REPLY_EVENTS_BYTES (64u << 20) /* a read_range reply stops growing here */

/* ---------------------------------------------------------------------------------
 * Wire codec (wire.c).
 * ------------------------------------------------------------------------------ */
/* What a request frame says about itself before it is decoded. */
typedef struct net_peek {
  uint32_t version; /* 0 when absent */
  uint64_t id;      /* 0 when absent */
  int op;           /* field number of the operation (Engram__Wire__Request__OpCase), 0 = none */
} net_peek;

/* Walks a protobuf message without decoding it: field tags, lengths, nesting depth and
 * text fields (which must not hold NUL bytes) against descriptor d. Fills *pk from the
 * top level when pk is non-NULL. Returns 0, or -1 with *why set to a static reason. */
int net_wire_scan(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len, net_peek *pk,
                  const char **why);

/* Checks and decodes one request frame. Returns the request (free it with
 * engram__wire__request__free_unpacked(rq, NULL)) or NULL with *code (ENGRAM_EPROTO or
 * ENGRAM_EVERSION) and a message in why[cap]. *pk is filled either way, as far as the
 * frame could be read. */
Engram__Wire__Request *net_request_decode(const uint8_t *buf, size_t len, net_peek *pk, int *code,
                                          char *why, size_t cap);
/* net_request_decode's two halves, which the daemon runs on two threads (the main thread
 * peeks, a worker unpacks): one decoder for the daemon and the fuzz target.
 * net_request_peek: the structural scan, filling *pk, and the protocol version. Returns 0
 * or ENGRAM_EPROTO / ENGRAM_EVERSION with a message in why[cap]. */
int net_request_peek(const uint8_t *buf, size_t len, net_peek *pk, char *why, size_t cap);
/* protobuf-c's decoding of a frame net_request_peek passed, and an operation in it, into
 * *a: the many small allocations of a request (one per event, header and string) are
 * bumped out of the arena (see net_arena below), whose first chunk is sized from the
 * frame, and go with net_arena_free (never free_unpacked). Returns the request or NULL
 * with *code (ENGRAM_EPROTO, or ENGRAM_ENOMEM for the arena) and a message in why[cap]. */
struct net_arena;
Engram__Wire__Request *net_request_unpack_in(struct net_arena *a, const uint8_t *buf, size_t len,
                                             const net_peek *pk, int *code, char *why, size_t cap);

/* Checks what must hold before a decoded request can be handed to the API: members
 * present, and counts bounded before anything is allocated for them. Names, values and
 * the API's own limits are left to the API, so a remote caller gets exactly the codes and
 * messages of an embedded one. Returns 0 or an ENGRAM_E* code with a message in why[cap]. */
int net_request_check(const Engram__Wire__Request *rq, char *why, size_t cap);

/* ---------------------------------------------------------------------------------
 * The wire operations, one line each: X(name, CASE, retry, run)
 *   name   for logs and messages (net_op_name)
 *   CASE   the request's ENGRAM__WIRE__REQUEST__OP_<CASE>
 *   retry  whether the client sends it again after a lost connection (net_op_retry):
 *          NET_RETRY_SAFE (repeating changes nothing), NET_RETRY_NEVER (it may have been
 *          applied), NET_RETRY_KEYED (an append: safe when every event has an
 *          idempotency key)
 *   run    the daemon's handler in ops.c (NULL: run elsewhere, appends in their lanes)
 * A new operation is its .proto message, one line here, its handler and its client stub.
 * ------------------------------------------------------------------------------ */
#define NET_OPS(X)                                                    \
  X(hello, HELLO, NET_RETRY_SAFE, op_hello)                           \
  X(sync, SYNC, NET_RETRY_SAFE, op_sync)                              \
  X(backup, BACKUP, NET_RETRY_NEVER, op_backup)                       \
  X(topic_create, TOPIC_CREATE, NET_RETRY_NEVER, op_topic_create)     \
  X(topic_get, TOPIC_GET, NET_RETRY_SAFE, op_topic_get)               \
  X(topic_list, TOPIC_LIST, NET_RETRY_SAFE, op_topic_list)            \
  X(topic_drop, TOPIC_DROP, NET_RETRY_NEVER, op_topic_drop)           \
  X(topic_train_dict, TOPIC_TRAIN_DICT, NET_RETRY_NEVER, op_train)    \
  X(append, APPEND, NET_RETRY_KEYED, NULL)                            \
  X(read, READ, NET_RETRY_SAFE, op_read)                              \
  X(read_range, READ_RANGE, NET_RETRY_SAFE, op_read)                  \
  X(verify, VERIFY, NET_RETRY_SAFE, op_verify)                        \
  X(group_create, GROUP_CREATE, NET_RETRY_NEVER, op_group_create)     \
  X(group_get, GROUP_GET, NET_RETRY_SAFE, op_group_get)               \
  X(group_list, GROUP_LIST, NET_RETRY_SAFE, op_group_list)            \
  X(group_delete, GROUP_DELETE, NET_RETRY_NEVER, op_group_delete)     \
  X(group_reset, GROUP_RESET, NET_RETRY_NEVER, op_group_reset)        \
  X(fetch, FETCH, NET_RETRY_NEVER, op_fetch)                          \
  X(ack, ACK, NET_RETRY_NEVER, op_ack)                                \
  X(nack, NACK, NET_RETRY_NEVER, op_nack)                             \
  X(reject, REJECT, NET_RETRY_NEVER, op_reject)                       \
  X(extend, EXTEND, NET_RETRY_NEVER, op_extend)                       \
  X(cancel, CANCEL, NET_RETRY_NEVER, op_cancel)                       \
  X(status_get, STATUS_GET, NET_RETRY_SAFE, op_status_get)            \
  X(dlq_list, DLQ_LIST, NET_RETRY_SAFE, op_dlq_list)                  \
  X(dlq_purge, DLQ_PURGE, NET_RETRY_NEVER, op_dlq_select)             \
  X(dlq_redrive, DLQ_REDRIVE, NET_RETRY_NEVER, op_dlq_select)         \
  X(txn_commit, TXN_COMMIT, NET_RETRY_NEVER, op_txn_commit)           \
  X(stats, STATS, NET_RETRY_SAFE, op_stats)                           \
  X(worker_heartbeat, WORKER_HEARTBEAT, NET_RETRY_SAFE, op_beat)      \
  X(worker_list, WORKER_LIST, NET_RETRY_SAFE, op_workers)             \
  X(worker_forget, WORKER_FORGET, NET_RETRY_NEVER, op_forget)         \
  X(topic_set, TOPIC_SET, NET_RETRY_SAFE, op_topic_set)               \
  X(compact, COMPACT, NET_RETRY_SAFE, op_compact)                     \
  X(rate_list, RATE_LIST, NET_RETRY_SAFE, op_rates)                   \
  X(schedule_add, SCHEDULE_ADD, NET_RETRY_NEVER, op_sched_set)        \
  X(schedule_set, SCHEDULE_SET, NET_RETRY_SAFE, op_sched_set)         \
  X(schedule_get, SCHEDULE_GET, NET_RETRY_SAFE, op_sched_get)         \
  X(schedule_list, SCHEDULE_LIST, NET_RETRY_SAFE, op_sched_list)      \
  X(schedule_remove, SCHEDULE_REMOVE, NET_RETRY_NEVER, op_sched_op)   \
  X(schedule_pause, SCHEDULE_PAUSE, NET_RETRY_SAFE, op_sched_op)      \
  X(schedule_resume, SCHEDULE_RESUME, NET_RETRY_SAFE, op_sched_op)    \
  X(schedule_run_now, SCHEDULE_RUN_NOW, NET_RETRY_NEVER, op_sched_op) \
  X(schedule_tick, SCHEDULE_TICK, NET_RETRY_SAFE, op_sched_tick)      \
  X(log_info, LOG_INFO, NET_RETRY_SAFE, op_log_info)                  \
  X(space, SPACE, NET_RETRY_SAFE, op_space)                           \
  X(ack_fetch, ACK_FETCH, NET_RETRY_NEVER, op_ack_fetch)

enum { NET_RETRY_NEVER, NET_RETRY_SAFE, NET_RETRY_KEYED };

/* The operation's name ("append", "fetch" ...) for logs and messages; "unknown" for a
 * number that names none. */
const char *net_op_name(int op);
/* The operation's retry policy (NET_RETRY_*); NET_RETRY_NEVER for an unknown one. */
int net_op_retry(int op);

/* Wire events -> engram events pointing into the wire messages. *evs and *hdrs are one
 * malloc'd block each (free both with free()). Returns 0, ENGRAM_ETOOBIG or ENGRAM_ENOMEM. */
int net_events_from_wire(Engram__Wire__Event *const *w, size_t n, engram_event **evs,
                         engram_header **hdrs);
/* One wire event -> engram event; h has room for w->n_headers (at most ENGRAM_MAX_HEADERS). */
void net_event_from_wire(const Engram__Wire__Event *w, engram_event *e, engram_header *h);

/* A bump allocator for the pieces of one reply or request: freed at once. */
typedef struct net_arena {
  struct net_chunk *chunks;
} net_arena;
void *net_arena_alloc(net_arena *a, size_t n); /* zeroed; NULL when out of memory */
void net_arena_free(net_arena *a);

/* An engram event -> a wire event allocated in the arena, pointing into e's memory. */
Engram__Wire__Event *net_event_to_wire(net_arena *a, const engram_event *e, int with_attempt);

/* Binary data views of text: protobuf-c wants non-const pointers for packing. */
static inline char *net_str(const char *s) { return (char *)(s ? s : ""); }

/* A ZeroMQ context for engram (client, daemon, notifications): zmq_ctx_new(), after
 * pointing libzmq's import of getpid() at self_pid() once per process. libzmq asks for
 * the process id around nearly every look at a socket's mailbox (to notice a fork), a
 * system call each time, about a dozen per request on each side; self_pid() answers the
 * same without one, renewed in every forked child. Where libzmq is linked in statically
 * it is left as it is. */
void *net_zmq_ctx_new(void);
/* Refuses (ENGRAM_EINVAL, naming `what`) an endpoint without TRANSPORT://, an http(s)://
 * address (the dashboard's, not the requests'), and a tcp:// endpoint whose port libzmq
 * would silently change: not a number, over 65535, or 0 where it connects (binding also
 * takes 0 and *, a free port). Other transports pass, for libzmq to judge. */
int net_endpoint_check(const char *what, const char *ep, int binding);

/* ---------------------------------------------------------------------------------
 * Notifications (notify.c).
 * ------------------------------------------------------------------------------ */
/* The ipc path (without "ipc://") of the daemon's socket `name` for directory dir:
 * dir/name, or a path under /tmp derived from dir's real path when that is too long for
 * a Unix socket. Returns 0 or -1. */
int net_ipc_path(const char *dir, const char *name, char *out, size_t cap);

/* The daemon's handle publishes its own commits: this replaces the embedded commit hook
 * (which would send them to the daemon itself) with `hook`, keeping the wake-ups of
 * embedded waiters. */
void net_notify_set_daemon(struct log *log, log_commit_hook hook, void *ctx);
/* Wakes embedded waiters on `topic` of this handle's directory (the daemon calls it for
 * (topic, head) pushed by writers in other processes: they already did, so this is for
 * group changes that make events deliverable without an append). */
void net_notify_wake(struct log *log, const char *topic);

/* ---------------------------------------------------------------------------------
 * Daemon internals shared with the ops (server.c, ops.c).
 * ------------------------------------------------------------------------------ */
struct net_server;
/* Executes one decoded, checked request on the daemon's handle and fills the reply (whose
 * pieces live in the arena). For fetch, *empty_fetch is set when it delivered nothing
 * (the caller may park it). */
void net_ops_run(struct net_server *s, engram *log, const Engram__Wire__Request *rq,
                 Engram__Wire__Reply *rp, net_arena *a, engram_batch **batch, int *empty_fetch);
/* After a successful group change on `topic`: parked fetches on it look again. */
void net_server_topic_changed(struct net_server *s, const char *topic);
/* Fills the daemon's counters into a Stats reply. */
void net_server_stats(struct net_server *s, Engram__Wire__StatsResult *st);
uint32_t net_server_max_message(const struct net_server *s);
/* The daemon's worker threads when the options say 0: the machine's cores, at least 2. */
int net_default_workers(void);
void net_server_count_appended(struct net_server *s, uint64_t n);

/* The remote backend (client_ops.c): a handle made by engram_connect. */
extern const struct engram_backend net_remote;

/* Fixed-size text out of a reply: copies s into dst[cap] and returns 0, or -1 when it
 * does not fit (the daemon sent something no engram daemon sends). */
int net_copy_text(char *dst, size_t cap, const char *s);
/* A worker's info -> wire, allocated in the arena (NULL when out of memory). */
Engram__Wire__WorkerInfo *net_worker_to_wire(net_arena *a, const engram_worker_info *in);
/* Wire -> a worker's info; -1 when a text does not fit or a count is over its limit. */
int net_worker_from_wire(const Engram__Wire__WorkerInfo *w, engram_worker_info *out);

/* A schedule's configuration -> wire, its text and payload copied into the arena (NULL
 * when out of memory). */
Engram__Wire__ScheduleConfig *net_schedule_config_to_wire(net_arena *a,
                                                          const engram_schedule_config *c);
/* Wire -> a schedule's configuration pointing into w; hs has room for ENGRAM_MAX_HEADERS.
 * -1 when w is NULL or has more headers (or a missing one). */
int net_schedule_config_from_wire(const Engram__Wire__ScheduleConfig *w, engram_schedule_config *c,
                                  engram_header *hs);
/* A schedule's info -> wire, copied into the arena (NULL when out of memory). */
Engram__Wire__ScheduleInfo *net_schedule_to_wire(net_arena *a, const engram_schedule_info *in);
/* Wire -> a schedule's info pointing into w (hs as above); -1 as above or for a name that
 * does not fit. */
int net_schedule_from_wire(const Engram__Wire__ScheduleInfo *w, engram_schedule_info *out,
                           engram_header *hs);

#endif
