/* testutil.h — helpers shared by engram's C tests: temp dirs, test data, clocks, children,
 * raw LMDB access to a closed log. */
#ifndef ENGRAM_TESTUTIL_H
#define ENGRAM_TESTUTIL_H

#include <lmdb.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "engram.h"

/* Runs only the test cases matching $ENGRAM_TEST_FILTER (a cmocka pattern, `*` and `?`)
 * when it is set; call it at the top of main. */
void tu_test_filter(void);

/* ---------------------------------------------------------------------------------
 * Temporary directories. Created under $ENGRAM_TEST_TMP, else $TMPDIR, else /tmp, and
 * removed by tu_tmpdir_done() unless ENGRAM_KEEP_TMP is set (then the path is printed).
 * ------------------------------------------------------------------------------ */
char *tu_tmpdir(const char *tag); /* malloc'd absolute path of a new empty dir; aborts on failure */
void tu_tmpdir_done(char *dir);   /* removes (or keeps) the dir and frees the string */
int tu_rmrf(const char *path);    /* recursive rm; 0 when gone */
char *tu_join(const char *dir, const char *name); /* malloc'd "dir/name" */
int tu_exists(const char *path);

/* Opens a log or aborts the test process with the library's message: for set-up steps
 * whose failure makes the rest of a test meaningless. */
engram *tu_open(const char *dir, const engram_options *opts);
/* Creates a topic (cfg may be NULL) or aborts. */
void tu_topic(engram *log, const char *topic, const engram_topic_config *cfg);

/* Fails the test (cmocka) unless rc is 0, printing the line, the call and the log's
 * message first. Files use it as `#define OK(log, call) TU_OK(log, call)`. */
#define TU_OK(log, call) tu_ok_at((log), (call), #call, __LINE__)
void tu_ok_at(engram *log, int rc, const char *what, int line);

/* ---------------------------------------------------------------------------------
 * The usual cmocka fixture: the test's own temp dir, the path dir/log inside it (not
 * created), and a handle the test may open there (closed at teardown when set).
 * ------------------------------------------------------------------------------ */
typedef struct tu_fx {
  char *dir;    /* the test's own temp dir */
  char *logdir; /* dir/log: where the log lives */
  engram *log;  /* NULL, or a handle teardown closes */
} tu_fx;
tu_fx *tu_fx_new(const char *tag); /* a new fixture whose temp dir is named after tag */
int tu_fx_teardown(void **state);  /* a cmocka teardown for a tu_fx in *state */
/* The two halves for a file whose fixture has more fields: *dir = a new temp dir named
 * after tag, *logdir = dir/log; then closes log (NULL = none) and frees/removes both. */
void tu_fx_dirs(const char *tag, char **dir, char **logdir);
void tu_fx_dirs_done(engram *log, char *dir, char *logdir);

/* ---------------------------------------------------------------------------------
 * Agent-memory events: the shared data file when present (../shared/data/
 * memory-events.jsonl relative to the repo root, or $ENGRAM_TEST_DATA), else a
 * deterministic generator of events of the same shape.
 * ------------------------------------------------------------------------------ */
typedef struct tu_event {
  char type[32]; /* memory.saved | memory.updated | memory.queried */
  char key[96];  /* the memory id, e.g. conv-42:D1:3 */
  char *payload; /* the JSON line, NUL-terminated */
  size_t len;    /* payload bytes without the NUL */
} tu_event;

typedef struct tu_events {
  size_t n;
  tu_event *ev;
  int from_file; /* 1 when read from the data file, 0 when generated */
} tu_events;

/* Up to `max` events (max 0 = all of the file, or 2000 generated). Never NULL. */
tu_events *tu_memory_events(size_t max);
/* Exactly n generated events, whatever the data file holds. */
tu_events *tu_generated_events(size_t n, uint64_t seed);
void tu_events_free(tu_events *e);
/* An engram_event whose fields point into *e (no headers, no idempotency key). */
engram_event tu_event_of(const tu_event *e);

/* ---------------------------------------------------------------------------------
 * A clock the test moves by hand, for engram_options.clock_ns.
 * ------------------------------------------------------------------------------ */
typedef struct tu_clock {
  _Atomic int64_t ns; /* CLOCK_REALTIME nanoseconds the handle will read */
} tu_clock;
void tu_clock_init(tu_clock *c, int64_t start_ns); /* start 0 = the real time now */
void tu_clock_advance_ms(tu_clock *c, int64_t ms);
int64_t tu_clock_ns(void *ctx); /* the engram_options.clock_ns callback; ctx is a tu_clock */

/* ---------------------------------------------------------------------------------
 * Children. fn runs in the child, whose exit status is fn's return value (0..255); the
 * child never returns into the test runner.
 * ------------------------------------------------------------------------------ */
pid_t tu_spawn(int (*fn)(void *arg), void *arg);
/* Waits for pid. Returns its exit code, 128 + signal when it was killed, or -1 when it
 * did not end within timeout_ms (it is then killed with SIGKILL and reaped). */
int tu_wait(pid_t pid, int timeout_ms);
/* tu_spawn + tu_wait. */
int tu_fork_child(int (*fn)(void *arg), void *arg, int timeout_ms);

/* ---------------------------------------------------------------------------------
 * Deterministic data.
 * ------------------------------------------------------------------------------ */
uint64_t tu_rand(uint64_t *state); /* xorshift64*; state must not be 0 */
void tu_fill_random(void *buf, size_t n, uint64_t seed);
int64_t tu_now_ns(void);  /* CLOCK_REALTIME */
int64_t tu_mono_ms(void); /* CLOCK_MONOTONIC milliseconds */
void tu_sleep_ms(int64_t ms);

/* ---------------------------------------------------------------------------------
 * Raw access to the LMDB environment of a CLOSED log (an open handle in this process
 * would break LMDB's one-environment-per-process rule). A topic's records live in the
 * named database "t/<topic>", keyed by the u64 offset (MDB_INTEGERKEY).
 * ------------------------------------------------------------------------------ */
int tu_raw_open(const char *dir, int readonly, MDB_env **env); /* MDB_* code */
/* Copies the stored value at offset into a malloc'd buffer. MDB_* code. */
int tu_raw_get(const char *dir, const char *topic, uint64_t offset, unsigned char **val,
               size_t *len);
/* Overwrites the stored value at offset. MDB_* code. */
int tu_raw_put(const char *dir, const char *topic, uint64_t offset, const void *val, size_t len);
/* Calls fn for every stored record of the topic in offset order, in one read transaction;
 * stops early when fn returns non-zero. MDB_* code. */
int tu_raw_scan(const char *dir, const char *topic,
                int (*fn)(uint64_t offset, const unsigned char *val, size_t len, void *ctx),
                void *ctx);
/* Number of entries in the topic's database (or -1 when it cannot be opened). */
long tu_raw_count(const char *dir, const char *topic);

#endif
