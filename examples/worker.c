/* worker.c — one worker of the consumer group "indexer" on the topic "memory".
 *
 *   worker DIR [CONSUMER]
 *
 * Creates the group when missing (every event type, from the first event), then leases
 * events in batches of up to 50, "indexes" each one and acks it, quoting the attempt it
 * was delivered with (fencing: an ack for a lease that expired and went to another
 * worker fails with ENGRAM_ESTALE and changes nothing). The acks of a batch go with the
 * fetch of the next (engram_ack_fetch: one commit a batch); that call is all or nothing,
 * so when one ack is stale the batch's acks are made on their own (engram_ack_many).
 * Events whose payload is empty are rejected into the group's dead-letter queue. Stops
 * when a fetch waited 200 ms and found nothing, then prints the group's counters. Run several
 * workers at once (other CONSUMER names, other processes): each event is leased to one of them at a
 * time. */
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
  engram_ack_item held[50]; /* the acks of the last batch, made by the next call */
  char results[50][64];     /* their results, alive until that call */
  int codes[50];
  size_t n_held = 0;
  for (;;) {
    engram_batch *b;
    rc = engram_ack_fetch(log, TOPIC, GROUP, consumer, held, n_held, codes, 50, 200, &b);
    if (rc == ENGRAM_ESTALE || rc == ENGRAM_EALREADY) {
      /* Another worker has one of them now: nothing was applied; ack the others alone. */
      rc = engram_ack_many(log, TOPIC, GROUP, held, n_held, codes);
      for (size_t i = 0; i < n_held; i++) acked += codes[i] == 0;
      n_held = 0;
      if (rc == ENGRAM_ESTALE || rc == ENGRAM_EALREADY) rc = 0;
      if (rc) goto fail_close;
      continue;
    }
    if (rc) goto fail_close;
    acked += n_held;
    n_held = 0;
    size_t n = b->count;
    for (size_t i = 0; i < n && !rc; i++) {
      const engram_event *e = &b->events[i];
      if (e->payload_len == 0) {
        rc = engram_reject(log, TOPIC, GROUP, e->offset, e->attempt, "empty payload");
        if (rc == ENGRAM_ESTALE || rc == ENGRAM_EALREADY) /* another worker has it now */
          rc = 0;
        else
          rejected += rc == 0;
        continue;
      }
      char *result = results[n_held];
      int len =
          snprintf(result, sizeof results[0], "indexed %zu bytes of %s", e->payload_len, e->type);
      held[n_held++] = (engram_ack_item){e->offset, e->attempt, result, (size_t)len};
    }
    engram_batch_free(b);
    if (rc) goto fail_close;
    if (n == 0) break; /* the call that found nothing made the last acks */
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
