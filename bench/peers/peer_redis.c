/* peer_redis.c — the side-by-side workloads against Redis Streams (hiredis). */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peers/driver.h"

static const char *host = "127.0.0.1";
static int port = 6379;
static char durability_label[64] = "appendfsync always";

struct peer_conn {
  redisContext *r;
};

static peer_conn *conn_open(void) {
  struct timeval tv = {5, 0};
  redisContext *r = redisConnectWithTimeout(host, port, tv);
  if (!r || r->err) {
    fprintf(stderr, "redis connect %s:%d: %s\n", host, port, r ? r->errstr : "out of memory");
    if (r) redisFree(r);
    return NULL;
  }
  peer_conn *c = calloc(1, sizeof *c);
  if (!c) {
    redisFree(r);
    return NULL;
  }
  c->r = r;
  return c;
}

static void conn_close(peer_conn *c) {
  if (!c) return;
  redisFree(c->r);
  free(c);
}

/* Checks a reply: NULL (connection error) and error replies fail. Frees it. */
static int done(peer_conn *c, redisReply *rep, const char *what) {
  int bad = !rep || rep->type == REDIS_REPLY_ERROR;
  if (bad) fprintf(stderr, "redis %s: %s\n", what, rep ? rep->str : c->r->errstr);
  if (rep) freeReplyObject(rep);
  return bad ? -1 : 0;
}

static int setup(peer_conn *c, const char *stream) {
  return done(c, redisCommand(c->r, "DEL %s", stream), "DEL");
}

static int teardown(peer_conn *c, const char *stream) { return setup(c, stream); }

/* XADD stream * type T key K data P [t STAMP]: the same fields engram stores. */
static void xadd_args(const char *stream, const bench_event *e, const char *stamp,
                      const char **argv, size_t *lens, int *argc) {
  int n = 0;
  argv[n] = "XADD", lens[n++] = 4;
  argv[n] = stream, lens[n++] = strlen(stream);
  argv[n] = "*", lens[n++] = 1;
  argv[n] = "type", lens[n++] = 4;
  argv[n] = e->type, lens[n++] = strlen(e->type);
  argv[n] = "key", lens[n++] = 3;
  argv[n] = e->key, lens[n++] = strlen(e->key);
  argv[n] = "data", lens[n++] = 4;
  argv[n] = e->payload, lens[n++] = e->payload_len;
  if (stamp) {
    argv[n] = "t", lens[n++] = 1;
    argv[n] = stamp, lens[n++] = strlen(stamp);
  }
  *argc = n;
}

static int append(peer_conn *c, const char *stream, const bench_event *e, int64_t stamp) {
  const char *argv[12];
  size_t lens[12];
  int argc;
  char s[32];
  snprintf(s, sizeof s, "%lld", (long long)stamp);
  xadd_args(stream, e, stamp ? s : NULL, argv, lens, &argc);
  return done(c, redisCommandArgv(c->r, argc, argv, lens), "XADD");
}

/* A batch is n XADDs pipelined in one write; Redis answers them after one AOF write (and,
 * with appendfsync always, one fsync) per event-loop turn. */
static int append_batch(peer_conn *c, const char *stream, const bench_event *const *e, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const char *argv[12];
    size_t lens[12];
    int argc;
    xadd_args(stream, e[i], NULL, argv, lens, &argc);
    if (redisAppendCommandArgv(c->r, argc, argv, lens) != REDIS_OK) return -1;
  }
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    redisReply *rep = NULL;
    if (redisGetReply(c->r, (void **)&rep) != REDIS_OK) return -1;
    if (done(c, rep, "XADD")) rc = -1;
  }
  return rc;
}

static int group_create(peer_conn *c, const char *stream, const char *group, int blocking) {
  return done(
      c, redisCommand(c->r, "XGROUP CREATE %s %s %s MKSTREAM", stream, group, blocking ? "$" : "0"),
      "XGROUP CREATE");
}

/* XREADGROUP ... COUNT max [BLOCK wait] STREAMS stream >, then one XACK with every id. */
static int consume(peer_conn *c, const char *stream, const char *group, const char *consumer,
                   size_t max, int wait_ms, size_t *n, int64_t *stamps) {
  *n = 0;
  char count[16], block[16];
  snprintf(count, sizeof count, "%zu", max);
  snprintf(block, sizeof block, "%d", wait_ms);
  const char *argv[12] = {"XREADGROUP", "GROUP", group, consumer, "COUNT", count};
  int argc = 6;
  if (wait_ms > 0) argv[argc++] = "BLOCK", argv[argc++] = block;
  argv[argc++] = "STREAMS", argv[argc++] = stream, argv[argc++] = ">";
  redisReply *rep = redisCommandArgv(c->r, argc, argv, NULL);
  if (!rep || rep->type == REDIS_REPLY_ERROR) return done(c, rep, "XREADGROUP");
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements == 0) {
    freeReplyObject(rep); /* nil: nothing there (or the block timed out) */
    return 0;
  }
  redisReply *entries = rep->element[0]->element[1];
  size_t k = entries->elements;
  const char **ack = malloc((k + 3) * sizeof *ack);
  size_t *lens = malloc((k + 3) * sizeof *lens);
  if (!ack || !lens) {
    freeReplyObject(rep);
    free(ack);
    free(lens);
    return -1;
  }
  ack[0] = "XACK", lens[0] = 4;
  ack[1] = stream, lens[1] = strlen(stream);
  ack[2] = group, lens[2] = strlen(group);
  for (size_t i = 0; i < k; i++) {
    redisReply *id = entries->element[i]->element[0], *fields = entries->element[i]->element[1];
    ack[3 + i] = id->str, lens[3 + i] = id->len;
    stamps[i] = 0;
    for (size_t f = 0; f + 1 < fields->elements; f += 2)
      if (fields->element[f]->len == 1 && fields->element[f]->str[0] == 't')
        stamps[i] = strtoll(fields->element[f + 1]->str, NULL, 10);
  }
  int rc = done(c, redisCommandArgv(c->r, (int)(k + 3), ack, lens), "XACK");
  freeReplyObject(rep);
  free(ack);
  free(lens);
  if (!rc) *n = k;
  return rc;
}

static int option(int argc, char **argv, int i) {
  if (i + 1 >= argc) return 0;
  if (!strcmp(argv[i], "--port")) {
    port = atoi(argv[i + 1]);
  } else if (!strcmp(argv[i], "--host")) {
    host = argv[i + 1];
  } else if (!strcmp(argv[i], "--durability")) {
    snprintf(durability_label, sizeof durability_label, "%s", argv[i + 1]);
  } else {
    return 0;
  }
  return 2;
}

int main(int argc, char **argv) {
  static peer_sys sys = {
      .name = "redis",
      .durability = durability_label,
      .connect = conn_open,
      .close = conn_close,
      .setup = setup,
      .teardown = teardown,
      .append = append,
      .append_batch = append_batch,
      .group_create = group_create,
      .consume = consume,
      .option = option,
      .usage =
          "  --host H --port P   the Redis server (default 127.0.0.1:6379)\n"
          "  --durability TEXT   the server's appendfsync setting, for the table\n",
  };
  return peer_main(&sys, argc, argv);
}
