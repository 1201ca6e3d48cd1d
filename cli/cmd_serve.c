/* cmd_serve.c — `engram serve` (the daemon in the foreground) and `engram keygen` (CURVE
 * key pairs for it and its clients). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "mirror.h"

static const char serve_help[] =
    "usage: engram serve [--data DIR] [--listen ENDPOINT] [--notify ENDPOINT]\n"
    "                    [--config FILE] [--log-json] [--log-file FILE]\n"
    "                    [--durability MODE] [--workers N] [--max-message SIZE]\n"
    "                    [--curve-secret-file FILE --allow-keys-file FILE]\n"
    "                    [--mirror-nats URL --mirror-topic T1,T2 [--mirror-stream NAME]]\n"
    "                    [--http HOST:PORT [--http-token TOKEN]]\n"
    "\n"
    "Serves the log in DIR over ZeroMQ in the foreground until SIGTERM or SIGINT, then\n"
    "answers the requests in flight and stops. Clients use `engram --connect ENDPOINT`\n"
    "or engram_connect(). One line is logged on stderr (or --log-file) per notable\n"
    "event; destructive requests (topic drop, group delete and reset, DLQ purge and\n"
    "redrive) with the peer and CURVE key that sent them. Under systemd\n"
    "(contrib/engram.service, Type=notify) it reports READY=1 once listening and\n"
    "STOPPING=1 on the way out, and prefixes lines with journald priorities. SIGHUP\n"
    "does not stop it: it reads --allow-keys-file again (a removed key is refused at its\n"
    "next connection; a file that does not read keeps the old list, logged as an error)\n"
    "and reopens --log-file (for logrotate).\n"
    "\n"
    "options:\n"
    "  --data DIR               the log directory (default: the global --data, then\n"
    "                           $ENGRAM_DATA); created when missing\n"
    "  --listen ENDPOINT        requests (default tcp://127.0.0.1:7450: this host only)\n"
    "  --notify ENDPOINT        PUB socket for (topic, head) notifications (default\n"
    "                           ipc://DIR/notify.ipc)\n"
    "  --config FILE            `key = value` lines with the same names as these options\n"
    "                           (data, listen, notify, log-json, log-file, durability,\n"
    "                           workers, max-message, curve-secret-file, allow-keys-file,\n"
    "                           mirror-nats, mirror-topic, mirror-stream); the\n"
    "                           command line wins\n"
    "  --log-json               log JSON lines instead of text\n"
    "  --log-file FILE          append log lines to FILE instead of stderr; reopened on\n"
    "                           SIGHUP\n"
    "  --durability MODE        sync (default), nometasync or async\n"
    "  --workers N              request worker threads (default: the machine's cores,\n"
    "                           at least 2)\n"
    "  --max-message SIZE       largest request accepted (default 16MiB)\n"
    "  --curve-secret-file FILE the daemon's key pair from `engram keygen --out`: turns\n"
    "                           on CURVE encryption and authentication\n"
    "  --allow-keys-file FILE   client public keys allowed in, one per line (with CURVE);\n"
    "                           read again on SIGHUP\n"
    "  --mirror-nats URL        also mirror topics into NATS JetStream, as `engram mirror`\n"
    "                           does (credentials in the URL: nats://user:pass@host:4222)\n"
    "  --mirror-topic T1,T2     the topics to mirror\n"
    "  --mirror-stream NAME     the stream (default ENGRAM)\n"
    "  --http HOST:PORT         serve the dashboard, /api, /metrics, /healthz, /readyz\n"
    "                           (e.g. 127.0.0.1:8080; see docs/operations.md)\n"
    "  --http-token TOKEN       every HTTP request needs it (Bearer, or Basic password);\n"
    "                           required for a non-loopback HOST (default\n"
    "                           $ENGRAM_HTTP_TOKEN)\n"
    "  -h, --help               this help\n";

static const char keygen_help[] =
    "usage: engram keygen [--out BASE]\n"
    "\n"
    "Makes a CURVE key pair. Without --out prints both keys as `public-key = ...` and\n"
    "`secret-key = ...` lines. With --out writes BASE.key (both keys, mode 0600: give\n"
    "it to `engram serve --curve-secret-file` or keep it for a client) and BASE.pub (the\n"
    "public key: a line of the daemon's --allow-keys-file, or the server key clients\n"
    "need); existing files are not overwritten.\n"
    "\n"
    "options:\n"
    "  --out BASE   write BASE.key and BASE.pub\n"
    "  -h, --help   this help\n";

/* Cuts a comment off a config line: '#' after a blank (Z85 keys and paths may hold '#'
 * elsewhere; a '#' opening the line is skipped by the reader), and the blanks before it. */
static void strip_comment(char *line) {
  for (char *p = line + 1; *p; p++)
    if (*p == '#' && (p[-1] == ' ' || p[-1] == '\t')) {
      *p = '\0';
      break;
    }
  size_t n = strlen(line);
  while (n && (line[n - 1] == ' ' || line[n - 1] == '\t')) line[--n] = '\0';
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
  return s;
}

/* The value of a `name = value` line, or NULL when the line is not about `name`. */
static char *named(char *line, const char *name) {
  size_t n = strlen(name);
  if (strncmp(line, name, n)) return NULL;
  char *p = line + n;
  while (*p == ' ' || *p == '\t') p++;
  if (*p != '=') return NULL;
  return trim(p + 1);
}

/* `key = value` lines named like the options (without "--"; not "config"), each at most
 * once. Values of options given on the command line are not read: the command line
 * wins. The values kept are copied into owned[] (by option). */
static int read_config(const char *path, const struct cli_args *a, const struct cli_opt *opts,
                       char *owned[CLI_MAX_OPTS]) {
  struct cli_lines r;
  if (cli_lines_open(&r, path, "config")) return CLI_EXIT_FAIL;
  unsigned long first[CLI_MAX_OPTS] = {0}; /* line of each key, 0 = not in the file */
  int status = 0;
  char *l;
  while (!status && (l = cli_lines_next(&r))) {
    strip_comment(l);
    char *eq = strchr(l, '=');
    if (!eq) {
      status = cli_lines_error(&r, "expected `key = value`");
      break;
    }
    *eq = '\0';
    char *key = trim(l), *val = trim(eq + 1);
    int k = 0;
    for (; opts[k].name; k++)
      if (strcmp(opts[k].name + 2, key) == 0 && strcmp(key, "config") != 0) break;
    if (!opts[k].name) {
      status = cli_lines_error(&r, "unknown key '%s'", key);
      break;
    }
    if (first[k]) {
      status = cli_lines_error(&r, "'%s' again (first set on line %lu)", key, first[k]);
      break;
    }
    first[k] = r.line;
    if (!*val) {
      status = cli_lines_error(&r, "'%s' needs a value", key);
      break;
    }
    if (cli_args_given(a, opts[k].name)) continue;
    if (!(owned[k] = strdup(val))) {
      status = cli_error("config: out of memory");
      break;
    }
    char why[256];
    int bare;
    const char *e = cli_opt_set(&opts[k], owned[k], why, sizeof why, &bare);
    if (e && bare)
      status = cli_lines_error(&r, "%s %s", key, e);
    else if (e)
      status = cli_lines_error(&r, "%s '%s': %s", key, val, e);
  }
  int rs = cli_lines_close(&r);
  return status ? status : rs;
}

/* Copies a 40-character key into out[41]; 0, or -1 when it has another length. */
static int key40(const char *k, char out[41]) {
  if (strlen(k) != 40) return -1;
  memcpy(out, k, 41);
  return 0;
}

int cli_read_key_file(const char *path, char sec[41], char pub[41]) {
  struct cli_lines r;
  if (cli_lines_open(&r, path, "secret key file")) return CLI_EXIT_FAIL;
  unsigned long sec_line = 0, pub_line = 0, lone_line = 0;
  char lone[41] = "";
  int status = 0;
  char *l, *v;
  while (!status && (l = cli_lines_next(&r))) {
    if ((v = named(l, "secret-key")) || (v = named(l, "public-key"))) {
      int is_sec = l[0] == 's';
      unsigned long *at = is_sec ? &sec_line : &pub_line;
      if (*at)
        status = cli_lines_error(&r, "a second %s line (the first is line %lu)",
                                 is_sec ? "secret-key" : "public-key", *at);
      else if (key40(v, is_sec ? sec : pub))
        status = cli_lines_error(&r, "a key is 40 Z85 characters");
      *at = r.line;
    } else if (!lone_line && key40(l, lone) == 0) {
      lone_line = r.line;
    } else {
      status = cli_lines_error(&r, "expected `secret-key = KEY` or `public-key = KEY`");
    }
  }
  int rs = cli_lines_close(&r);
  if (status || rs) return status ? status : rs;
  if (!sec_line && lone_line) memcpy(sec, lone, 41);
  if (!sec_line && !lone_line)
    return cli_error(
        "secret key file %s: no `secret-key = KEY` line (make one with 'engram keygen --out')",
        path);
  if (!pub_line) pub[0] = '\0';
  return 0;
}

/* --mirror-nats: the mirror thread (cli/cmd_mirror.c) beside the daemon. topics is
 * the comma-separated --mirror-topic, split in place into *list. */
static int mirror_start(const char *url, char *topics, const char *stream,
                        const engram_serve_options *so, struct mirror_thread **out,
                        const char ***list) {
  if (!url && !topics && !stream) return 0;
  if (!url || !topics) return cli_usage("serve", "--mirror-nats and --mirror-topic go together");
  if (so->secret_key)
    return cli_usage("serve", "--mirror-nats with CURVE: run `engram mirror` beside the daemon");
  struct mirror_config mc;
  memset(&mc, 0, sizeof mc);
  mc.nats.url = url;
  mc.stream = stream;
  for (char *p = strtok(topics, ","); p; p = strtok(NULL, ",")) {
    const char **l = realloc(*list, (mc.n_topics + 1) * sizeof *l);
    if (!l) return cli_error("serve: out of memory");
    *list = l;
    l[mc.n_topics++] = p;
  }
  if (!mc.n_topics) return cli_usage("serve", "--mirror-topic needs a topic");
  mc.topics = *list;
  return mirror_thread_start(so->listen, &mc, out) ? CLI_EXIT_FAIL : 0;
}

static const char *const durabilities[] = {"sync", "nometasync", "async", NULL};
static const engram_durability durability_of[] = {
    ENGRAM_DURABILITY_SYNC, ENGRAM_DURABILITY_NOMETASYNC, ENGRAM_DURABILITY_ASYNC};

int cmd_serve(struct cli *c, int argc, char **argv) {
  const char *data = NULL, *config = NULL, *secret_file = NULL, *allow_file = NULL;
  const char *mirror_nats = NULL, *mirror_topic = NULL, *mirror_stream = NULL;
  int durability = -1;
  uint64_t max_message = 0;
  engram_serve_options so;
  memset(&so, 0, sizeof so);
  /* The config file's keys are these names without "--". */
  const struct cli_opt opts[] = {
      CLI_OPT_STR("--data", &data),
      CLI_OPT_STR("--listen", &so.listen),
      CLI_OPT_STR("--notify", &so.notify),
      CLI_OPT_STR("--config", &config),
      CLI_OPT_FLAG("--log-json", &so.log_json),
      CLI_OPT_ENUM("--durability", &durability, .names = durabilities),
      CLI_OPT_U32("--workers", &so.workers, .min = 1),
      CLI_OPT_SIZE("--max-message", &max_message, .max = UINT32_MAX, .high = "over 4GiB"),
      CLI_OPT_STR("--curve-secret-file", &secret_file),
      CLI_OPT_STR("--allow-keys-file", &allow_file),
      CLI_OPT_STR("--mirror-nats", &mirror_nats),
      CLI_OPT_TEXT("--mirror-topic", &mirror_topic, .what = "needs a topic"),
      CLI_OPT_STR("--mirror-stream", &mirror_stream),
      CLI_OPT_STR("--http", &so.http),
      CLI_OPT_STR("--http-token", &so.http_token),
      CLI_OPT_STR("--log-file", &so.log_file),
      CLI_OPT_END};
  char *owned[CLI_MAX_OPTS] = {NULL}; /* values read from the config file */
  char pub[41] = "", sec[41] = "";
  struct cli_args a;
  cli_args_init(&a, "serve", argc, argv);
  int status = cli_args_parse(&a, opts, serve_help, 0, 0, "no arguments");
  if (status != CLI_GO) return status;
  status = 0;
  if (config && (status = read_config(config, &a, opts, owned))) goto done;

  const char *dir = data ? data : c->data ? c->data : getenv("ENGRAM_DATA");
  if (c->connect) {
    status = cli_usage("serve", "--connect does not apply: serve owns a directory (--data)");
    goto done;
  }
  if (!dir || !*dir) {
    status = cli_usage("serve", "no log given: use --data DIR or set ENGRAM_DATA");
    goto done;
  }
  so.durability = c->durability_set ? c->durability : ENGRAM_DURABILITY_SYNC;
  if (durability >= 0) so.durability = durability_of[durability];
  so.max_message = (uint32_t)max_message;
  if (!so.http_token && getenv("ENGRAM_HTTP_TOKEN") && *getenv("ENGRAM_HTTP_TOKEN"))
    so.http_token = getenv("ENGRAM_HTTP_TOKEN");
  if (!secret_file != !allow_file) {
    status = cli_usage("serve", "--curve-secret-file and --allow-keys-file go together");
    goto done;
  }
  if (secret_file) {
    if ((status = cli_read_key_file(secret_file, sec, pub))) goto done;
    so.secret_key = sec;
    so.public_key = pub[0] ? pub : NULL;
    so.allow_keys_file = allow_file; /* read by the daemon, at start and on SIGHUP */
  }
  struct mirror_thread *mirror = NULL;
  const char **topics = NULL;
  char *topic_list = mirror_topic ? strdup(mirror_topic) : NULL;
  if (mirror_topic && !topic_list) status = cli_error("serve: out of memory");
  if (!status) status = mirror_start(mirror_nats, topic_list, mirror_stream, &so, &mirror, &topics);
  if (!status && c->max_topics) {
    /* The log keeps its max_topics: one open with the larger value raises it. */
    engram_options o = {.durability = so.durability, .max_topics = c->max_topics};
    engram *log = NULL;
    int orc = engram_open(dir, &o, &log);
    if (orc) {
      const char *m = engram_errmsg(NULL);
      status = *m ? cli_error("%s", m) : cli_error("open %s: %s", dir, engram_strerror(orc));
    }
    engram_close(log);
  }
  int rc = status ? 0 : engram_serve(dir, &so);
  mirror_thread_stop(mirror);
  free(topics);
  free(topic_list);
  if (rc)
    status = cli_error("%s", *engram_errmsg(NULL) ? engram_errmsg(NULL) : engram_strerror(rc));
done:
  for (int i = 0; i < CLI_MAX_OPTS; i++) free(owned[i]);
  return status;
}

static int write_new(const char *path, const char *text, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return cli_error("keygen: %s: %s", path, strerror(errno));
  size_t n = strlen(text);
  int ok = write(fd, text, n) == (ssize_t)n && fsync(fd) == 0;
  ok = close(fd) == 0 && ok;
  if (!ok) {
    unlink(path);
    return cli_error("keygen: cannot write %s", path);
  }
  return 0;
}

int cmd_keygen(struct cli *c, int argc, char **argv) {
  (void)c;
  const char *out = NULL;
  const struct cli_opt opts[] = {CLI_OPT_STR("--out", &out), CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "keygen", argc, argv);
  int r = cli_args_parse(&a, opts, keygen_help, 0, 0, "no arguments");
  if (r != CLI_GO) return r;
  char pub[41], sec[41];
  int rc = engram_keygen(pub, sec);
  if (rc) return cli_error("%s", *engram_errmsg(NULL) ? engram_errmsg(NULL) : engram_strerror(rc));
  if (!out) {
    printf("public-key = %s\nsecret-key = %s\n", pub, sec);
    return 0;
  }
  char kpath[4200], ppath[4200], text[256];
  snprintf(kpath, sizeof kpath, "%s.key", out);
  snprintf(ppath, sizeof ppath, "%s.pub", out);
  snprintf(text, sizeof text,
           "# engram CURVE key pair: keep this file secret\npublic-key = %s\nsecret-key = %s\n",
           pub, sec);
  if (write_new(kpath, text, 0600)) return CLI_EXIT_FAIL;
  snprintf(text, sizeof text, "public-key = %s\n", pub);
  if (write_new(ppath, text, 0644)) {
    unlink(kpath);
    return CLI_EXIT_FAIL;
  }
  printf("wrote %s and %s\npublic-key = %s\n", kpath, ppath, pub);
  return 0;
}
