/* driver.h — the workloads every system runs in the side-by-side bench, behind one table of
 * operations that each client (engram, Redis Streams, NATS JetStream) fills in. */
#ifndef ENGRAM_BENCH_PEER_DRIVER_H
#define ENGRAM_BENCH_PEER_DRIVER_H

#include <stddef.h>
#include <stdint.h>

#include "common/bench.h"

typedef struct peer_conn peer_conn; /* one connection (or handle) of the system */

/* What a system's commit path did, counted by the system itself (engram's
 * engram_commit_stats, or the daemon's server info): the cause of a miss, next to it. */
typedef struct peer_commits {
  uint64_t writes;  /* writes the commits carried (0: not counted, as by a daemon) */
  uint64_t commits; /* write transactions that changed something */
  uint64_t flushes; /* fdatasync calls */
  uint64_t hist[8]; /* commits carrying 1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, 65+ writes */
  uint64_t commit_ns, flush_ns; /* time in LMDB's commits and in flushes (0: not counted) */
} peer_commits;

typedef struct peer_sys {
  const char *name;       /* "engram", "engram-remote", "redis", "nats" */
  const char *durability; /* what this run's durability is, in the system's words */
  /* A connection usable by the calling thread; NULL after printing why on stderr. Called
   * in the process that uses it (after fork for consumers). */
  peer_conn *(*connect)(void);
  void (*close)(peer_conn *c);
  /* Makes `stream` exist and be empty. */
  int (*setup)(peer_conn *c, const char *stream);
  /* Removes `stream` and what belongs to it. */
  int (*teardown)(peer_conn *c, const char *stream);
  /* Appends one event and returns once the system acknowledged it. `stamp` (0 = none) is
   * a CLOCK_MONOTONIC send time carried with the event for the latency workload. */
  int (*append)(peer_conn *c, const char *stream, const bench_event *e, int64_t stamp);
  /* Appends n events in one request (or pipelined burst) and waits for every ack. */
  int (*append_batch)(peer_conn *c, const char *stream, const bench_event *const *e, size_t n);
  /* Creates a consumer group on `stream`. blocking 0: it reads from the start (a drain of
   * a backlog); 1: it reads only events appended from now on, and its consumer will wait
   * for them (latency workload). */
  int (*group_create)(peer_conn *c, const char *stream, const char *group, int blocking);
  /* Takes up to `max` events for `consumer` and acks each. wait_ms 0: return at once (or as
   * soon as the system can tell) when nothing is there; > 0: block up to wait_ms for events.
   * *n receives how many; stamps[i] the send time carried by each (0 = none). */
  int (*consume)(peer_conn *c, const char *stream, const char *group, const char *consumer,
                 size_t max, int wait_ms, size_t *n, int64_t *stamps);
  /* A system whose consume acks each batch with the fetch of the next (engram's
   * engram_ack_fetch) acks what it still holds; the drain and the latency consumer call
   * it once a consumer is done (the drain before its clock stops). May be NULL. */
  int (*finish)(peer_conn *c, const char *stream, const char *group);
  /* Parses a system option (argv[i], value argv[i+1]); returns how many arguments it took,
   * 0 when the option is not the system's. May be NULL. */
  int (*option)(int argc, char **argv, int i);
  /* Extra usage lines for the system's options. */
  const char *usage;
  /* The commit path's counters so far (engram; may be NULL): of the connection's own
   * handle, or with *global set of the whole server behind it (a daemon's, for every
   * connection). Returns 0, or -1 when it has none. */
  int (*commit_counts)(peer_conn *c, peer_commits *out, int *global);
} peer_sys;

/* Parses the common options, runs the workload named by --workload and prints one JSON
 * result per line on stdout. Returns the process exit code. */
int peer_main(peer_sys *sys, int argc, char **argv);

/* 1 when the workload is drain_split: a system that can settle a batch with the fetch of
 * the next (engram) fetches, then acks, in two calls, as before it could. */
extern int peer_drain_split;

/* The events every client sends (loaded by peer_main before any workload). */
extern bench_events peer_events;

#endif
