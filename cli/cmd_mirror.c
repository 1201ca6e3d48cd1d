/* cmd_mirror.c — `engram mirror`: publishes topics into a NATS JetStream stream, exactly
 * once, until stopped; and the mirror thread of `engram serve --mirror-nats`. */
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mirror.h"

static const char help[] =
    "usage: engram mirror --nats URL --topic T [--topic T2 ...] [--stream NAME]\n"
    "                     [--subject-prefix P] [--replicas N]\n"
    "                     [--duplicate-window DURATION] [--batch N] [--max-pending N]\n"
    "                     [--once] [--nats-user U] [--nats-creds FILE]\n"
    "                     [--nats-nkey PUBLIC --nats-seed FILE] [--nats-ca FILE]\n"
    "                     [--nats-cert FILE --nats-key FILE]\n"
    "\n"
    "Publishes every event of the topics into the JetStream stream NAME, on subject\n"
    "P.<topic> (P defaults to engram.<stream>), each exactly once, and keeps following\n"
    "them until SIGTERM or SIGINT. The event's offset, type, key, content type,\n"
    "headers, idempotency key, deliver_at and append time travel as Engram-* message\n"
    "headers, the payload as the body, and Nats-Msg-Id is <log id>:<topic>:<offset>\n"
    "(the log id of `engram stat`). The position is the consumer group\n"
    "mirror.<stream> of each topic (`engram stat` shows its lag). Batches are published\n"
    "one after the other without waiting for the stream's acks (up to --max-pending\n"
    "events in flight); the oldest batches the stream acknowledged whole are acked in\n"
    "the group. After a crash the mirror reads back what reached the stream and\n"
    "publishes only the rest. The topic's settings travel with the first event of each\n"
    "batch (for engram restore); consumer groups are not mirrored. While NATS\n"
    "is unreachable it waits and retries with backoff. Run one mirror per stream. The\n"
    "stream is created when missing (file storage, subjects P.>).\n"
    "See docs/scale-out.md.\n"
    "\n"
    "options:\n"
    "  --nats URL               NATS server(s), comma-separated; tls:// for TLS\n"
    "  --topic T                a topic to mirror (repeat, or T1,T2)\n"
    "  --stream NAME            the stream (default ENGRAM)\n"
    "  --subject-prefix P       subjects are P.<topic> (default engram.<stream>)\n"
    "  --replicas N             replicas of a stream it creates (default 1; 3 for a cluster)\n"
    "  --duplicate-window DUR   duplicate window of a stream it creates (default 2m)\n"
    "  --batch N                events fetched and published at a time (default 1000,\n"
    "                           at most 10000)\n"
    "  --max-pending N          events of the batches in flight, published and awaiting\n"
    "                           their ack (default 4000)\n"
    "  --once                   stop once every topic is mirrored up to its head\n" MIRROR_NATS_HELP
    "  -h, --help               this help\n";

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
  (void)sig;
  stop_flag = 1;
}

/* --topic T (repeatable, or T1,T2): the topics, copied. */
struct topic_list {
  char **v;
  size_t n;
};

static int parse_topics(struct cli_args *a, const struct cli_opt *opt, const char *value) {
  struct topic_list *l = opt->to;
  char *copy = strdup(value), *save = NULL;
  if (!copy) return cli_error("mirror: out of memory");
  for (char *p = strtok_r(copy, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
    char **v = realloc(l->v, (l->n + 1) * sizeof *v);
    if (!v || !(v[l->n] = strdup(p))) {
      if (v) l->v = v;
      free(copy);
      return cli_error("mirror: out of memory");
    }
    l->v = v;
    l->n++;
  }
  free(copy);
  if (!l->n) return cli_usage(a->cmd, "--topic needs a topic");
  return 0;
}

int cmd_mirror(struct cli *c, int argc, char **argv) {
  struct mirror_config mc;
  memset(&mc, 0, sizeof mc);
  struct topic_list topics = {NULL, 0};
  uint64_t batch = 0, pending = 0;
  const struct cli_opt opts[] = {
      CLI_OPT_TEXT("--nats", &mc.nats.url, .what = "needs a URL"),
      CLI_OPT_CUSTOM("--topic", &topics, parse_topics),
      CLI_OPT_TEXT("--stream", &mc.stream, .what = "needs a stream name"),
      CLI_OPT_TEXT("--subject-prefix", &mc.prefix, .what = "needs a prefix"),
      CLI_OPT_U32("--replicas", &mc.replicas, .min = 1, .max = 5),
      CLI_OPT_DURATION("--duplicate-window", &mc.dup_window_ms, .min = 1, .max = 365ull * 86400000),
      CLI_OPT_U64("--batch", &batch, .min = 1, .max = ENGRAM_MAX_FETCH),
      CLI_OPT_U64("--max-pending", &pending, .min = 1, .max = 1000000),
      CLI_OPT_FLAG("--once", &mc.once),
      MIRROR_NATS_OPTS(&mc.nats),
      CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "mirror", argc, argv);
  int status = cli_args_parse(&a, opts, help, 0, 0, "no arguments");
  if (status == CLI_GO) {
    status = 0;
    mc.batch = (uint32_t)batch;
    mc.max_pending = (uint32_t)pending;
    if (!mc.nats.url) status = cli_usage("mirror", "--nats URL is required");
    if (!status && !topics.n) status = cli_usage("mirror", "give at least one --topic");
    if (!status) status = mirror_nats_check("mirror", &mc.nats);
    if (!status) status = cli_open(c, CLI_OPEN_EXISTING);
    if (!status) {
      mc.topics = (const char *const *)topics.v;
      mc.n_topics = topics.n;
      mc.stop = &stop_flag;
      struct sigaction sa;
      memset(&sa, 0, sizeof sa);
      sa.sa_handler = on_signal;
      sigaction(SIGTERM, &sa, NULL);
      sigaction(SIGINT, &sa, NULL);
      status = mirror_run(c->log, &mc);
      mirror_library_end();
      if (status == MIRROR_RETRY) status = cli_error("mirror: the log stopped answering");
    }
  }
  for (size_t i = 0; i < topics.n; i++) free(topics.v[i]);
  free(topics.v);
  return status;
}

/* ---------------------------------------------------------------------------------
 * The mirror inside `engram serve`: a thread with a client handle of the daemon.
 * ------------------------------------------------------------------------------ */
struct mirror_thread {
  pthread_t tid;
  struct mirror_config cfg;
  char endpoint[512];
  volatile sig_atomic_t stop;
};

static void *mirror_main(void *arg) {
  struct mirror_thread *t = arg;
  engram *log = NULL;
  int said = 0;
  /* The daemon binds its endpoint after this thread starts: try until it answers. */
  while (!t->stop) {
    engram_topic_info *ti = NULL;
    size_t n;
    if (!log && engram_connect(t->endpoint, NULL, &log)) log = NULL;
    if (log && engram_topic_list(log, &ti, &n) == 0) {
      engram_free(ti);
      break;
    }
    if (!said) fprintf(stderr, "engram serve mirror: waiting for the daemon on %s\n", t->endpoint);
    said = 1;
    struct timespec ts = {0, 200000000L};
    nanosleep(&ts, NULL);
  }
  while (!t->stop && mirror_run(log, &t->cfg) == MIRROR_RETRY) {
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
  }
  engram_close(log);
  return NULL;
}

int mirror_thread_start(const char *listen, const struct mirror_config *cfg,
                        struct mirror_thread **out) {
  struct mirror_thread *t = calloc(1, sizeof *t);
  if (!t) return cli_error("serve: out of memory");
  t->cfg = *cfg;
  t->cfg.stop = &t->stop;
  t->cfg.who = "serve mirror";
  /* The daemon's own endpoint, reached on loopback when it listens on every address. */
  const char *l = listen ? listen : "tcp://127.0.0.1:7450";
  const char *star = strstr(l, "://*:");
  const char *any = strstr(l, "://0.0.0.0:");
  if (star)
    snprintf(t->endpoint, sizeof t->endpoint, "%.*s://127.0.0.1:%s", (int)(star - l), l, star + 5);
  else if (any)
    snprintf(t->endpoint, sizeof t->endpoint, "%.*s://127.0.0.1:%s", (int)(any - l), l, any + 11);
  else
    snprintf(t->endpoint, sizeof t->endpoint, "%s", l);
  if (pthread_create(&t->tid, NULL, mirror_main, t)) {
    free(t);
    return cli_error("serve: cannot start the mirror thread");
  }
  *out = t;
  return 0;
}

void mirror_thread_stop(struct mirror_thread *t) {
  if (!t) return;
  t->stop = 1;
  pthread_join(t->tid, NULL);
  free(t);
  mirror_library_end();
}
