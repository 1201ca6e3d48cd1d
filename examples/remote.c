/* remote.c — the same API through `engram serve`: a client on another process or host.
 *
 *   remote ENDPOINT            e.g. remote tcp://127.0.0.1:7450
 *
 * Connects to the daemon, appends three events to the topic "chat" (created when
 * missing) with idempotency keys — a remote append whose every event has a key is sent
 * again after a lost connection, never applied twice — then reads them back with a
 * consumer group and acks them. Every call is the one an embedded handle offers, with
 * the same errors; only engram_connect() differs from engram_open(). */
#include <engram.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: remote ENDPOINT\n");
    return 2;
  }
  engram *log;
  int rc = engram_connect(argv[1], &(engram_connect_options){.timeout_ms = 5000}, &log);
  if (rc) {
    fprintf(stderr, "remote: %s\n", engram_errmsg(NULL));
    return 1;
  }
  rc = engram_topic_create(log, "chat", NULL);
  if (rc && rc != ENGRAM_EEXIST) goto fail_close;
  rc = engram_group_create(log, "chat", "archiver", NULL);
  if (rc && rc != ENGRAM_EEXIST) goto fail_close;

  static const char *const lines[] = {"hello", "how are you?", "fine, thanks"};
  for (int i = 0; i < 3; i++) {
    char id[32];
    snprintf(id, sizeof id, "chat-line-%d", i + 1);
    engram_event ev = {.type = "chat.line",
                       .payload = lines[i],
                       .payload_len = strlen(lines[i]),
                       .content_type = "text/plain",
                       .idempotency_key = id};
    uint64_t offset;
    int dup;
    if ((rc = engram_append(log, "chat", &ev, &offset, &dup))) goto fail_close;
    printf("append %-14s -> offset %llu%s\n", lines[i], (unsigned long long)offset,
           dup ? " (duplicate)" : "");
  }

  engram_batch *b;
  if ((rc = engram_fetch(log, "chat", "archiver", "remote-1", 10, 1000, &b))) goto fail_close;
  for (size_t i = 0; i < b->count && !rc; i++) {
    const engram_event *e = &b->events[i];
    printf("fetch  offset %llu attempt %u: %.*s\n", (unsigned long long)e->offset, e->attempt,
           (int)e->payload_len, (const char *)e->payload);
    rc = engram_ack(log, "chat", "archiver", e->offset, e->attempt, NULL, 0);
  }
  engram_batch_free(b);
  if (rc) goto fail_close;
  engram_close(log);
  return 0;

fail_close:
  fprintf(stderr, "remote: %s: %s\n", engram_errname(rc), engram_errmsg(log));
  engram_close(log);
  return 1;
}
