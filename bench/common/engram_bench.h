/* engram_bench.h — glue between the bench's memory events and engram's public API. */
#ifndef ENGRAM_BENCH_ENGRAM_H
#define ENGRAM_BENCH_ENGRAM_H

#include <engram.h>
#include <stdio.h>

#include "bench.h"

/* The engram event for a memory event: type, memory_id as key, the JSON line as payload. */
static inline engram_event bench_engram_event(const bench_event *e) {
  engram_event ev = {0};
  ev.type = e->type;
  ev.key = e->key;
  ev.payload = e->payload;
  ev.payload_len = e->payload_len;
  ev.content_type = "application/json";
  return ev;
}

/* Exits with the call, the code's name and the handle's message. */
static inline void bench_engram_check(engram *log, int rc, const char *what) {
  if (rc == 0) return;
  bench_die("%s: %s (%s) %s", what, engram_strerror(rc), engram_errname(rc),
            log ? engram_errmsg(log) : "");
}

static inline const char *bench_durability_name(engram_durability d) {
  return d == ENGRAM_DURABILITY_SYNC         ? "sync"
         : d == ENGRAM_DURABILITY_NOMETASYNC ? "nometasync"
                                             : "async";
}

#endif
