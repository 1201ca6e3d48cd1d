/* steady_append.c — a steady append load for the mirror bench: RATE events/s of SIZE
 * bytes into TOPIC for SECONDS (batches every 10 ms), sampling the mirror group's lag
 * every 500 ms, then waiting (at most 120 s) for the lag to reach 0. Prints one JSON line
 * per sample and a summary. Uses only include/engram.h.
 * With COUNT, stops once COUNT events are appended (a prefill: RATE very high).
 * Usage: steady_append DIR TOPIC GROUP RATE SECONDS SIZE [COUNT] */
#include <engram.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t lag_of(engram *log, const char *topic, const char *group) {
  engram_group_info gi;
  if (engram_group_info_get(log, topic, group, &gi)) return UINT64_MAX;
  return gi.lag;
}

int main(int argc, char **argv) {
  if (argc != 7 && argc != 8) {
    fprintf(stderr, "usage: steady_append DIR TOPIC GROUP RATE SECONDS SIZE [COUNT]\n");
    return 2;
  }
  const char *dir = argv[1], *topic = argv[2], *group = argv[3];
  double rate = atof(argv[4]), seconds = atof(argv[5]);
  size_t size = (size_t)atol(argv[6]);
  uint64_t count = argc == 8 ? (uint64_t)atoll(argv[7]) : UINT64_MAX;
  engram *log = NULL;
  if (engram_open(dir, NULL, &log)) {
    fprintf(stderr, "steady_append: %s\n", engram_errmsg(NULL));
    return 1;
  }
  engram_topic_create(log, topic, NULL);
  enum { MAXB = 5000 };
  engram_event *evs = calloc(MAXB, sizeof *evs);
  uint64_t *offs = calloc(MAXB, sizeof *offs);
  char *payload = malloc(size);
  srand(17);
  for (size_t i = 0; i < size; i++) payload[i] = "abcdefghij klmnop"[rand() % 17];
  for (size_t i = 0; i < MAXB; i++) {
    evs[i].type = "memory.saved";
    evs[i].key = "m-1";
    evs[i].payload = payload;
    evs[i].payload_len = size;
  }
  double t0 = now(), next_sample = t0 + 0.5;
  uint64_t appended = 0, max_lag = 0;
  while (now() - t0 < seconds && appended < count) {
    double due = (now() - t0) * rate;
    size_t n = due > appended ? (size_t)(due - appended) : 0;
    if (n > MAXB) n = MAXB;
    if (n > count - appended) n = (size_t)(count - appended);
    if (n) {
      if (engram_append_batch(log, topic, evs, n, offs, NULL)) {
        fprintf(stderr, "steady_append: %s\n", engram_errmsg(log));
        return 1;
      }
      appended += n;
    } else {
      struct timespec ts = {0, 2000000L};
      nanosleep(&ts, NULL);
    }
    if (now() >= next_sample) {
      uint64_t lag = lag_of(log, topic, group);
      if (lag != UINT64_MAX && lag > max_lag) max_lag = lag;
      printf("{\"t\":%.1f,\"appended\":%" PRIu64 ",\"lag\":%" PRIu64 "}\n", now() - t0, appended,
             lag == UINT64_MAX ? 0 : lag);
      next_sample += 0.5;
    }
  }
  double load_secs = now() - t0;
  uint64_t end_lag = lag_of(log, topic, group);
  double t1 = now();
  while (end_lag != UINT64_MAX && lag_of(log, topic, group) != 0 && now() - t1 < 120) {
    struct timespec ts = {0, 20000000L};
    nanosleep(&ts, NULL);
  }
  double drain = now() - t1;
  printf("{\"what\":\"steady\",\"target_rate\":%.0f,\"appended\":%" PRIu64
         ",\"append_rate\":%.0f,\"max_lag\":%" PRIu64 ",\"lag_at_end\":%" PRIu64
         ",\"drain_secs\":%.2f,\"mirror_rate\":%.0f,\"caught_up\":%s}\n",
         rate, appended, appended / load_secs, max_lag, end_lag, drain,
         appended / (load_secs + drain), lag_of(log, topic, group) == 0 ? "true" : "false");
  engram_close(log);
  return 0;
}
