/* peer_engram.c — the side-by-side workloads against engram, embedded or through `engram serve`. */
#include <engram.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peers/driver.h"

/* The runner links the whole library, so the client entry point is present exactly when
 * this build of engram has one; a build without it gets remote rows marked unsupported. */
#pragma weak engram_connect

static const char *data_dir; /* embedded: the log directory */
static const char *endpoint; /* remote: the daemon's endpoint */
static int share_connection; /* remote: the threads of a process share one connection */
/* remote, CURVE: the daemon's public key and this client's key pair (engram keygen) */
static char curve_server[64], curve_public[64], curve_secret[64];
static engram_durability durability = ENGRAM_DURABILITY_SYNC;
static char durability_label[64] = "sync";

struct peer_conn {
  engram *log;
  int looked_up; /* the topic was looked up once on this handle */
  /* drain: the batch fetched last, acked by the next engram_ack_fetch (or by finish) */
  engram_ack_item held[1000];
  size_t n_held;
};

/* Embedded: one handle per process shared by its threads, as the library intends (their
 * appends share commits). Remote: a connection per caller, like the peers' clients, or
 * with --share-connection one per process, its requests and replies interleaved. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static engram *shared_log;
static pid_t shared_pid;
static int shared_refs;

static engram_connect_options connect_options(void) {
  engram_connect_options o = {0};
  if (curve_server[0]) {
    o.server_key = curve_server;
    o.public_key = curve_public;
    o.secret_key = curve_secret;
  }
  return o;
}

/* Reads the `public-key = K` and `secret-key = K` lines of a file from `engram keygen`. */
static void read_client_keys(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) bench_die("--curve-client-keys %s: cannot open it", path);
  char line[256], key[64];
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, " public-key = %63s", key) == 1)
      snprintf(curve_public, sizeof curve_public, "%s", key);
    else if (sscanf(line, " secret-key = %63s", key) == 1)
      snprintf(curve_secret, sizeof curve_secret, "%s", key);
  }
  fclose(f);
  if (!curve_public[0] || !curve_secret[0])
    bench_die("--curve-client-keys %s: no public-key and secret-key lines", path);
}

static peer_conn *conn_open(void) {
  peer_conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  int rc;
  if (!endpoint && !data_dir) {
    fprintf(stderr, "peer_engram: give --data DIR or --connect ENDPOINT\n");
    free(c);
    return NULL;
  }
  if (endpoint && !share_connection) {
    engram_connect_options o = connect_options();
    rc = engram_connect ? engram_connect(endpoint, &o, &c->log) : ENGRAM_ENOTSUP;
    if (rc) {
      fprintf(stderr, "engram_connect %s: %s\n", endpoint, engram_errname(rc));
      free(c);
      return NULL;
    }
    return c;
  }
  pthread_mutex_lock(&mu);
  if (shared_log && shared_pid != getpid()) {
    shared_log = NULL; /* inherited across fork(): never used or closed here */
    shared_refs = 0;
  }
  rc = 0;
  if (!shared_log) {
    if (endpoint) {
      engram_connect_options o = connect_options();
      rc = engram_connect ? engram_connect(endpoint, &o, &shared_log) : ENGRAM_ENOTSUP;
    } else {
      engram_options o = {0};
      o.durability = durability;
      rc = engram_open(data_dir, &o, &shared_log);
    }
    shared_pid = getpid();
  }
  if (!rc) shared_refs++;
  c->log = shared_log;
  pthread_mutex_unlock(&mu);
  if (rc) {
    fprintf(stderr, "engram_%s %s: %s\n", endpoint ? "connect" : "open",
            endpoint ? endpoint : data_dir, engram_errname(rc));
    shared_log = NULL;
    free(c);
    return NULL;
  }
  return c;
}

static void conn_close(peer_conn *c) {
  if (!c) return;
  if (endpoint && !share_connection) {
    engram_close(c->log);
  } else {
    pthread_mutex_lock(&mu);
    if (--shared_refs == 0) {
      engram_close(shared_log);
      shared_log = NULL;
    }
    pthread_mutex_unlock(&mu);
  }
  free(c);
}

static int check(peer_conn *c, int rc, const char *what) {
  if (rc) fprintf(stderr, "engram %s: %s %s\n", what, engram_errname(rc), engram_errmsg(c->log));
  return rc ? -1 : 0;
}

static int setup(peer_conn *c, const char *stream) {
  engram_topic_drop(c->log, stream);
  return check(c, engram_topic_create(c->log, stream, NULL), "topic create");
}

static int teardown(peer_conn *c, const char *stream) {
  return check(c, engram_topic_drop(c->log, stream), "topic drop");
}

static engram_event event_of(const bench_event *e) {
  engram_event ev = {0};
  ev.type = e->type;
  ev.key = e->key;
  ev.payload = e->payload;
  ev.payload_len = e->payload_len;
  ev.content_type = "application/json";
  return ev;
}

static int append(peer_conn *c, const char *stream, const bench_event *e, int64_t stamp) {
  engram_event ev = event_of(e);
  char sent[32];
  engram_header h = {"sent", sent};
  if (stamp) {
    snprintf(sent, sizeof sent, "%lld", (long long)stamp);
    ev.headers = &h;
    ev.n_headers = 1;
  }
  return check(c, engram_append(c->log, stream, &ev, NULL, NULL), "append");
}

static int append_batch(peer_conn *c, const char *stream, const bench_event *const *e, size_t n) {
  engram_event evs[1000];
  uint64_t offs[1000];
  if (n > 1000) return -1;
  for (size_t i = 0; i < n; i++) evs[i] = event_of(e[i]);
  return check(c, engram_append_batch(c->log, stream, evs, n, offs, NULL), "append_batch");
}

static int group_create(peer_conn *c, const char *stream, const char *group, int blocking) {
  engram_group_config cfg = {0};
  cfg.start = blocking ? ENGRAM_START_LATEST : ENGRAM_START_EARLIEST;
  cfg.ack_wait_ms = 60000;
  return check(c, engram_group_create(c->log, stream, group, &cfg), "group create");
}

/* Takes up to max events and acks each. The acks of a batch ride with the fetch of the
 * next, as a worker does (docs/consumer-groups.md): one engram_ack_fetch, one commit, per
 * batch, also with a wait (the latency workload: a call that finds nothing due holds its
 * acks a moment for the next event); what is held at the end is acked by finish. In the
 * drain_split workload it fetches, then acks, in two calls. */
static int consume(peer_conn *c, const char *stream, const char *group, const char *consumer,
                   size_t max, int wait_ms, size_t *n, int64_t *stamps) {
  *n = 0;
  if (!c->looked_up) {
    /* A worker checks its topic once at start. */
    engram_topic_info ti;
    if (check(c, engram_topic_info_get(c->log, stream, &ti), "topic info")) return -1;
    c->looked_up = 1;
  }
  int together = !peer_drain_split;
  engram_batch *b = NULL;
  if (together) {
    if (check(c,
              engram_ack_fetch(c->log, stream, group, consumer, c->held, c->n_held, NULL, max,
                               (uint64_t)wait_ms, &b),
              "ack_fetch"))
      return -1;
    c->n_held = 0;
  } else if (check(c, engram_fetch(c->log, stream, group, consumer, max, (uint64_t)wait_ms, &b),
                   "fetch")) {
    return -1;
  }
  engram_ack_item *items = c->held;
  size_t k = b->count < 1000 ? b->count : 1000;
  for (size_t i = 0; i < k; i++) {
    const engram_event *ev = &b->events[i];
    items[i] = (engram_ack_item){.offset = ev->offset, .attempt = ev->attempt};
    stamps[i] = 0;
    for (size_t h = 0; h < ev->n_headers; h++)
      if (!strcmp(ev->headers[h].name, "sent")) stamps[i] = strtoll(ev->headers[h].value, NULL, 10);
  }
  engram_batch_free(b);
  *n = k;
  if (k == 0) return 0;
  if (together) {
    c->n_held = k;
    return 0;
  }
  int rc = k == 1 ? engram_ack(c->log, stream, group, items[0].offset, items[0].attempt, NULL, 0)
                  : engram_ack_many(c->log, stream, group, items, k, NULL);
  return check(c, rc, "ack");
}

static int finish(peer_conn *c, const char *stream, const char *group) {
  if (!c->n_held) return 0;
  int rc = engram_ack_many(c->log, stream, group, c->held, c->n_held, NULL);
  c->n_held = 0;
  return check(c, rc, "ack");
}

static int commit_counts(peer_conn *c, peer_commits *out, int *global) {
  memset(out, 0, sizeof *out);
  if (endpoint) {
    engram_server_info in;
    if (engram_server_info_get(c->log, &in)) return -1;
    out->commits = in.commits;
    out->flushes = in.flushes;
    *global = 1;
    return 0;
  }
  engram_commit_stats cs;
  if (engram_commit_stats_get(c->log, &cs)) return -1;
  out->writes = cs.jobs;
  out->commits = cs.commits;
  out->flushes = cs.flushes;
  memcpy(out->hist, cs.batch_hist, sizeof out->hist);
  out->commit_ns = cs.commit_duration.sum_ns;
  out->flush_ns = cs.flush_duration.sum_ns;
  *global = 0;
  return 0;
}

static int option(int argc, char **argv, int i) {
  if (!strcmp(argv[i], "--share-connection")) {
    share_connection = 1;
    return 1;
  }
  if (i + 1 >= argc) return 0;
  const char *a = argv[i], *v = argv[i + 1];
  if (!strcmp(a, "--data")) {
    data_dir = v;
  } else if (!strcmp(a, "--connect")) {
    endpoint = v;
  } else if (!strcmp(a, "--curve-server-key")) {
    snprintf(curve_server, sizeof curve_server, "%s", v);
  } else if (!strcmp(a, "--curve-client-keys")) {
    read_client_keys(v);
  } else if (!strcmp(a, "--durability")) {
    if (!strcmp(v, "sync"))
      durability = ENGRAM_DURABILITY_SYNC;
    else if (!strcmp(v, "nometasync"))
      durability = ENGRAM_DURABILITY_NOMETASYNC;
    else if (!strcmp(v, "async"))
      durability = ENGRAM_DURABILITY_ASYNC;
    else
      bench_die("--durability sync|nometasync|async");
    snprintf(durability_label, sizeof durability_label, "%s", v);
  } else {
    return 0;
  }
  return 2;
}

static peer_sys sys = {
    .name = "engram",
    .durability = durability_label,
    .connect = conn_open,
    .close = conn_close,
    .setup = setup,
    .teardown = teardown,
    .append = append,
    .append_batch = append_batch,
    .group_create = group_create,
    .consume = consume,
    .finish = finish,
    .option = option,
    .commit_counts = commit_counts,
    .usage =
        "  --data DIR          embedded: the log directory (created if missing)\n"
        "  --connect ENDPOINT  remote: the `engram serve` endpoint, e.g. tcp://127.0.0.1:7450\n"
        "  --durability D      sync | nometasync | async (embedded: the handle's mode;\n"
        "                      remote: a label, the daemon's mode is set where it runs)\n"
        "  --share-connection  remote: the threads of a process share one connection\n"
        "  --curve-server-key K  remote: CURVE, the daemon's public key (Z85)\n"
        "  --curve-client-keys FILE  remote, CURVE: this client's key pair, as written by\n"
        "                      `engram keygen --out BASE` (BASE.key)\n",
};

int main(int argc, char **argv) {
  for (int i = 1; i + 1 < argc; i++) {
    if (!strcmp(argv[i], "--connect")) sys.name = "engram-remote";
  }
  int rc = peer_main(&sys, argc, argv);
  return rc;
}
