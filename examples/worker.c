/* worker.c — one worker of the consumer group "indexer" on the topic "memory".
 *
 *   worker DIR [CONSUMER]
 *
 * Creates the group when missing (every event type, from the first event), then leases
 * events in batches of up to 50, "indexes" each one and acks it, quoting the attempt it
 * was delivered with (fencing: an ack for a lease that expired and went to another
 * worker fails with ENGRAM_ESTALE and changes nothing). Events whose payload is empty
 * are rejected into the group's dead-letter queue. Stops when a fetch waited 200 ms and
 * found nothing, then prints the group's counters. Run several workers at once (other
 * CONSUMER names, other processes): each event is leased to one of them at a time. */
#include <engram.h>
#include <stdio.h>
#include <string.h>

static const char *TOPIC = "memory", *GROUP = "indexer";

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: worker DIR [CONSUMER]\n");
    return 2;
  }
  const char *consumer = argc == 3 ? argv[2] : "worker-1";

  engram *log;
  int rc = engram_open(argv[1], &(engram_options){.flags = ENGRAM_OPEN_NOCREATE}, &log);
  if (rc) {
    fprintf(stderr, "worker: %s\n", engram_errmsg(NULL));
    return 1;
  }
  static const char *const filters[] = {"memory.*"};
  engram_group_config cfg = {.filters = filters, .n_filters = 1, .ack_wait_ms = 10000};
  rc = engram_group_create(log, TOPIC, GROUP, &cfg);
  if (rc && rc != ENGRAM_EEXIST) goto fail_close;

  unsigned long acked = 0, rejected = 0;
  for (;;) {
    engram_batch *b;
    if ((rc = engram_fetch(log, TOPIC, GROUP, consumer, 50, 200, &b))) goto fail_close;
    size_t n = b->count;
    for (size_t i = 0; i < n && !rc; i++) {
      const engram_event *e = &b->events[i];
      if (e->payload_len == 0) {
        rc = engram_reject(log, TOPIC, GROUP, e->offset, e->attempt, "empty payload");
        rejected += rc == 0;
        continue;
      }
      char result[64];
      int len = snprintf(result, sizeof result, "indexed %zu bytes of %s", e->payload_len, e->type);
      rc = engram_ack(log, TOPIC, GROUP, e->offset, e->attempt, result, (size_t)len);
      if (rc == ENGRAM_ESTALE || rc == ENGRAM_EALREADY) /* another worker has it now */
        rc = 0;
      else
        acked += rc == 0;
    }
    engram_batch_free(b);
    if (rc) goto fail_close;
    if (n == 0) break;
  }

  engram_group_info info;
  if ((rc = engram_group_info_get(log, TOPIC, GROUP, &info))) goto fail_close;
  printf("%s: acked %lu, rejected %lu; group %s: lag %llu, in flight %llu, dead %llu\n", consumer,
         acked, rejected, GROUP, (unsigned long long)info.lag, (unsigned long long)info.in_flight,
         (unsigned long long)info.dead);
  engram_close(log);
  return 0;

fail_close:
  fprintf(stderr, "worker: %s: %s\n", engram_errname(rc), engram_errmsg(log));
  engram_close(log);
  return 1;
}
