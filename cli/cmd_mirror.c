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
    "                     [--subject-prefix P] [--group NAME] [--replicas N]\n"
    "                     [--duplicate-window DURATION] [--batch N] [--max-pending N]\n"
    "                     [--once] [--nats-user U] [--nats-creds FILE]\n"
    "                     [--nats-nkey PUBLIC --nats-seed FILE] [--nats-ca FILE]\n"
    "                     [--nats-cert FILE --nats-key FILE]\n"
    "\n"
    "Publishes every event of the topics into the JetStream stream NAME, on subject\n"
    "P.<topic>, each exactly once, and keeps following them until SIGTERM or SIGINT.\n"
    "The event's offset, type, key, content type, headers, idempotency key, deliver_at\n"
    "and append time travel as Engram-* message headers, the payload as the body, and\n"
    "Nats-Msg-Id is <topic created_ns>:<topic>:<offset>. The position is the consumer\n"
    "group NAME of each topic (lag, `engram stat` and the dashboard show it); after a\n"
    "crash the mirror reads back what reached the stream and publishes only the rest.\n"
    "While NATS is unreachable it waits and retries with backoff. Run one mirror per\n"
    "stream and group. The stream is created when missing (file storage, subjects P.>).\n"
    "See docs/scale-out.md.\n"
    "\n"
    "options:\n"
    "  --nats URL               NATS server(s), comma-separated; tls:// for TLS\n"
    "  --topic T                a topic to mirror (repeat, or T1,T2)\n"
    "  --stream NAME            the stream (default ENGRAM)\n"
    "  --subject-prefix P       subjects are P.<topic> (default engram.<stream>)\n"
    "  --group NAME             the group holding the position (default mirror.<stream>)\n"
    "  --replicas N             replicas of a stream it creates (default 1; 3 for a cluster)\n"
    "  --duplicate-window DUR   duplicate window of a stream it creates (default 2m)\n"
    "  --batch N                events fetched and published at a time (default 1000)\n"
    "  --max-pending N          publishes awaiting their ack at once (default 4000)\n"
    "  --once                   stop once every topic is mirrored up to its head\n"
    "  --nats-user U            user name; the password comes from $ENGRAM_NATS_PASSWORD\n"
    "  --nats-creds FILE        NATS credentials file (JWT and nkey seed)\n"
    "  --nats-nkey PUBLIC       nkey authentication: the public key, with --nats-seed FILE\n"
    "  --nats-seed FILE         the file holding the nkey's seed\n"
    "  --nats-ca FILE           CA certificates for TLS (turns TLS on)\n"
    "  --nats-cert FILE         client certificate for TLS, with --nats-key FILE\n"
    "  --nats-key FILE          its private key\n"
    "  -h, --help               this help\n";

enum {
  O_NATS = 1,
  O_TOPIC,
  O_STREAM,
  O_PREFIX,
  O_GROUP,
  O_REPLICAS,
  O_DUP,
  O_BATCH,
  O_PENDING,
  O_ONCE,
  O_USER,
  O_CREDS,
  O_NKEY,
  O_SEED,
  O_CA,
  O_CERT,
  O_KEY
};

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) {
  (void)sig;
  stop_flag = 1;
}

/* Splits "a,b" into topics appended to *list. Returns 0 or -1 (out of memory). */
static int add_topics(char *val, const char ***list, size_t *n) {
  for (char *p = strtok(val, ","); p; p = strtok(NULL, ",")) {
    const char **l = realloc(*list, (*n + 1) * sizeof *l);
    if (!l) return -1;
    *list = l;
    l[(*n)++] = p;
  }
  return 0;
}

int cmd_mirror(struct cli *c, int argc, char **argv) {
  static const struct cli_opt opts[] = {{"--nats", 1, O_NATS},
                                        {"--topic", 1, O_TOPIC},
                                        {"--stream", 1, O_STREAM},
                                        {"--subject-prefix", 1, O_PREFIX},
                                        {"--group", 1, O_GROUP},
                                        {"--replicas", 1, O_REPLICAS},
                                        {"--duplicate-window", 1, O_DUP},
                                        {"--batch", 1, O_BATCH},
                                        {"--max-pending", 1, O_PENDING},
                                        {"--once", 0, O_ONCE},
                                        {"--nats-user", 1, O_USER},
                                        {"--nats-creds", 1, O_CREDS},
                                        {"--nats-nkey", 1, O_NKEY},
                                        {"--nats-seed", 1, O_SEED},
                                        {"--nats-ca", 1, O_CA},
                                        {"--nats-cert", 1, O_CERT},
                                        {"--nats-key", 1, O_KEY},
                                        {"-h", 0, CLI_OPT_HELP},
                                        {"--help", 0, CLI_OPT_HELP},
                                        {NULL, 0, 0}};
  struct cli_args a;
  cli_args_init(&a, "mirror", argc, argv);
  struct mirror_config mc;
  memset(&mc, 0, sizeof mc);
  const char **topics = NULL;
  size_t ntopics = 0;
  int o, status = 0;
  const char *why = NULL;
  uint64_t v;
  while ((o = cli_args_next(&a, opts)) > 0) {
    switch (o) {
      case CLI_OPT_HELP:
        free(topics);
        return cli_help(help);
      case O_NATS:
        mc.nats.url = a.val;
        break;
      case O_TOPIC:
        if (add_topics((char *)a.val, &topics, &ntopics)) {
          free(topics);
          return cli_error("mirror: out of memory");
        }
        break;
      case O_STREAM:
        mc.stream = a.val;
        break;
      case O_PREFIX:
        mc.prefix = a.val;
        break;
      case O_GROUP:
        mc.group = a.val;
        break;
      case O_REPLICAS:
        if ((why = cli_parse_u32(a.val, &mc.replicas)) || mc.replicas == 0 || mc.replicas > 5)
          status = cli_usage("mirror", "--replicas '%s': %s", a.val, why ? why : "must be 1..5");
        break;
      case O_DUP:
        if ((why = cli_parse_duration_ms(a.val, 365ull * 86400000, &mc.dup_window_ms)) ||
            mc.dup_window_ms == 0)
          status = cli_usage("mirror", "--duplicate-window '%s': %s", a.val,
                             why ? why : "must be longer than 0");
        break;
      case O_BATCH:
        if ((why = cli_parse_u64(a.val, &v)) || v == 0 || v > 100000)
          status = cli_usage("mirror", "--batch '%s': %s", a.val, why ? why : "must be 1..100000");
        mc.batch = (uint32_t)v;
        break;
      case O_PENDING:
        if ((why = cli_parse_u64(a.val, &v)) || v == 0 || v > 1000000)
          status = cli_usage("mirror", "--max-pending '%s': %s", a.val,
                             why ? why : "must be 1..1000000");
        mc.max_pending = (uint32_t)v;
        break;
      case O_ONCE:
        mc.once = 1;
        break;
      case O_USER:
        mc.nats.user = a.val;
        break;
      case O_CREDS:
        mc.nats.creds = a.val;
        break;
      case O_NKEY:
        mc.nats.nkey_public = a.val;
        break;
      case O_SEED:
        mc.nats.nkey_seed = a.val;
        break;
      case O_CA:
        mc.nats.ca = a.val;
        break;
      case O_CERT:
        mc.nats.cert = a.val;
        break;
      case O_KEY:
        mc.nats.key = a.val;
        break;
    }
    if (status) break;
  }
  if (!status && (o < 0 || cli_args_count(&a, 0, 0, "no arguments"))) status = CLI_EXIT_USAGE;
  if (!status && !mc.nats.url) status = cli_usage("mirror", "--nats URL is required");
  if (!status && !ntopics) status = cli_usage("mirror", "give at least one --topic");
  if (!status && !mc.nats.nkey_public != !mc.nats.nkey_seed)
    status = cli_usage("mirror", "--nats-nkey and --nats-seed go together");
  if (!status) status = cli_open(c, CLI_OPEN_EXISTING);
  if (!status) {
    mc.topics = topics;
    mc.n_topics = ntopics;
    mc.stop = &stop_flag;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    status = mirror_run(c->log, &mc);
    if (status == MIRROR_RETRY) status = cli_error("mirror: the log stopped answering");
  }
  free(topics);
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
}
