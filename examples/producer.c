/* producer.c — appends memory events to a log, safely re-runnable.
 *
 *   producer DIR [COUNT]
 *
 * Opens (creating) the log in DIR, creates the topic "memory" when missing and appends
 * COUNT events (default 100) in batches of 25, each in one transaction. Every event
 * carries an idempotency key, so running the producer again inside the dedup window
 * writes nothing: the log reports the original offsets as duplicates. */
#include <engram.h>
#include <stdio.h>
#include <stdlib.h>

#define BATCH 25

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: producer DIR [COUNT]\n");
    return 2;
  }
  long count = argc == 3 ? strtol(argv[2], NULL, 10) : 100;
  if (count < 1 || count > 1000000) {
    fprintf(stderr, "producer: COUNT must be 1..1000000\n");
    return 2;
  }

  engram *log;
  int rc = engram_open(argv[1], NULL, &log);
  if (rc) {
    fprintf(stderr, "producer: %s\n", engram_errmsg(NULL));
    return 1;
  }
  rc = engram_topic_create(log, "memory", NULL);
  if (rc && rc != ENGRAM_EEXIST) goto fail_close;

  long written = 0, duplicates = 0;
  for (long first = 0; first < count; first += BATCH) {
    size_t n = count - first < BATCH ? (size_t)(count - first) : BATCH;
    engram_event evs[BATCH] = {0};
    char payloads[BATCH][96], keys[BATCH][32], ids[BATCH][32];
    for (size_t i = 0; i < n; i++) {
      long k = first + (long)i + 1;
      int len = snprintf(payloads[i], sizeof payloads[i],
                         "{\"user_id\":\"user-%ld\",\"text\":\"memory number %ld\"}", k % 7, k);
      snprintf(keys[i], sizeof keys[i], "user-%ld", k % 7);
      snprintf(ids[i], sizeof ids[i], "example-%ld", k);
      evs[i] = (engram_event){.type = k % 10 ? "memory.saved" : "memory.updated",
                              .key = keys[i],
                              .payload = payloads[i],
                              .payload_len = (size_t)len,
                              .content_type = "application/json",
                              .idempotency_key = ids[i]};
    }
    uint64_t offsets[BATCH];
    int dups[BATCH];
    if ((rc = engram_append_batch(log, "memory", evs, n, offsets, dups))) goto fail_close;
    for (size_t i = 0; i < n; i++) {
      if (dups[i])
        duplicates++;
      else
        written++;
    }
  }

  engram_topic_info info;
  if ((rc = engram_topic_info_get(log, "memory", &info))) goto fail_close;
  printf("appended %ld events (%ld duplicates); topic memory holds offsets up to %llu\n", written,
         duplicates, (unsigned long long)info.head_offset);
  engram_close(log);
  return 0;

fail_close:
  fprintf(stderr, "producer: %s: %s\n", engram_errname(rc), engram_errmsg(log));
  engram_close(log);
  return 1;
}
