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
    "                    [--config FILE] [--log-json] [--durability MODE]\n"
    "                    [--workers N] [--max-message SIZE]\n"
    "                    [--curve-secret-file FILE --allow-keys-file FILE]\n"
    "                    [--mirror-nats URL --mirror-topic T [--mirror-stream NAME]]\n"
    "\n"
    "Serves the log in DIR over ZeroMQ in the foreground until SIGTERM or SIGINT, then\n"
    "answers the requests in flight and stops. Clients use `engram --connect ENDPOINT`\n"
    "or engram_connect(). One line is logged on stderr per notable event.\n"
    "\n"
    "options:\n"
    "  --data DIR               the log directory (default: the global --data, then\n"
    "                           $ENGRAM_DATA); created when missing\n"
    "  --listen ENDPOINT        requests (default tcp://127.0.0.1:7450: this host only)\n"
    "  --notify ENDPOINT        PUB socket for (topic, head) notifications (default\n"
    "                           ipc://DIR/notify.ipc)\n"
    "  --config FILE            `key = value` lines with the same names as these options\n"
    "                           (data, listen, notify, log-json, durability, workers,\n"
    "                           max-message, curve-secret-file, allow-keys-file); the\n"
    "                           command line wins\n"
    "  --log-json               log JSON lines instead of text\n"
    "  --durability MODE        sync (default), nometasync or async\n"
    "  --workers N              request worker threads (default 16)\n"
    "  --max-message SIZE       largest request accepted (default 16MiB)\n"
    "  --curve-secret-file FILE the daemon's key pair from `engram keygen --out`: turns\n"
    "                           on CURVE encryption and authentication\n"
    "  --allow-keys-file FILE   client public keys allowed in, one per line (with CURVE)\n"
    "  --mirror-nats URL        also mirror topics into NATS JetStream, as `engram mirror`\n"
    "                           does (credentials in the URL: nats://user:pass@host:4222)\n"
    "  --mirror-topic T         a topic to mirror (repeat, or T1,T2)\n"
    "  --mirror-stream NAME     the stream (default ENGRAM)\n"
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

enum {
  O_DATA = 1,
  O_LISTEN,
  O_NOTIFY,
  O_CONFIG,
  O_LOG_JSON,
  O_DURABILITY,
  O_WORKERS,
  O_MAX_MESSAGE,
  O_SECRET_FILE,
  O_ALLOW_FILE,
  O_MIRROR_NATS,
  O_MIRROR_TOPIC,
  O_MIRROR_STREAM,
  O_COUNT
};

static const struct cli_opt serve_opts[] = {
    {"--data", 1, O_DATA},
    {"--listen", 1, O_LISTEN},
    {"--notify", 1, O_NOTIFY},
    {"--config", 1, O_CONFIG},
    {"--log-json", 0, O_LOG_JSON},
    {"--durability", 1, O_DURABILITY},
    {"--workers", 1, O_WORKERS},
    {"--max-message", 1, O_MAX_MESSAGE},
    {"--curve-secret-file", 1, O_SECRET_FILE},
    {"--allow-keys-file", 1, O_ALLOW_FILE},
    {"--mirror-nats", 1, O_MIRROR_NATS},
    {"--mirror-topic", 1, O_MIRROR_TOPIC},
    {"--mirror-stream", 1, O_MIRROR_STREAM},
    {"-h", 0, CLI_OPT_HELP},
    {"--help", 0, CLI_OPT_HELP},
    {NULL, 0, 0},
};

/* Option values by id, from the command line or the config file (owned strings). */
struct settings {
  char *v[O_COUNT];
};

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
    s[--n] = '\0';
  return s;
}

/* Cuts a comment off a config line: '#' at the start or after a blank (Z85 keys and
 * paths may hold '#' elsewhere). */
static void strip_comment(char *line) {
  for (char *p = line; *p; p++)
    if (*p == '#' && (p == line || p[-1] == ' ' || p[-1] == '\t')) {
      *p = '\0';
      return;
    }
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

/* Reads a whole small file into a NUL-terminated buffer. */
static char *slurp(const char *path, const char *what) {
  FILE *f = fopen(path, "r");
  if (!f) {
    cli_error("%s %s: %s", what, path, strerror(errno));
    return NULL;
  }
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  size_t got;
  while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
    n += got;
    if (n + 1 == cap) {
      if (cap >= (1u << 20)) break;
      char *b = realloc(buf, cap * 2);
      if (!b) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = b;
      cap *= 2;
    }
  }
  fclose(f);
  if (!buf) {
    cli_error("%s %s: out of memory", what, path);
    return NULL;
  }
  buf[n] = '\0';
  return buf;
}

/* `key = value` lines; values already given on the command line are kept. */
static int read_config(const char *path, struct settings *st) {
  char *text = slurp(path, "config");
  if (!text) return CLI_EXIT_FAIL;
  int lineno = 0, status = 0;
  for (char *line = strtok(text, "\n"); line && !status; line = strtok(NULL, "\n")) {
    lineno++;
    strip_comment(line);
    char *l = trim(line);
    if (!*l) continue;
    char *eq = strchr(l, '=');
    if (!eq) {
      status = cli_error("config %s line %d: expected `key = value`", path, lineno);
      break;
    }
    *eq = '\0';
    char *key = trim(l), *val = trim(eq + 1);
    char opt[64];
    snprintf(opt, sizeof opt, "--%s", key);
    int id = 0;
    for (const struct cli_opt *o = serve_opts; o->name; o++)
      if (!strcmp(o->name, opt) && o->id != O_CONFIG && o->id != CLI_OPT_HELP) id = o->id;
    if (!id) {
      status = cli_error("config %s line %d: unknown key '%s'", path, lineno, key);
      break;
    }
    if (id == O_LOG_JSON) {
      if (strcmp(val, "true") && strcmp(val, "false") && strcmp(val, "1") && strcmp(val, "0")) {
        status = cli_error("config %s line %d: log-json must be true or false", path, lineno);
        break;
      }
      if (!strcmp(val, "false") || !strcmp(val, "0")) continue;
    }
    if (!*val) {
      status = cli_error("config %s line %d: '%s' needs a value", path, lineno, key);
      break;
    }
    if (!st->v[id] && !(st->v[id] = strdup(val))) status = cli_error("config: out of memory");
  }
  free(text);
  return status;
}

/* The value of a `name = KEY` line of text, or with name NULL a line that is a lone key.
 * Copies the 40 characters into out[41]; returns 0 or -1. */
static int key_line(const char *text, const char *name, char out[41]) {
  char *copy = strdup(text);
  if (!copy) return -1;
  int found = -1;
  for (char *line = strtok(copy, "\n"); line && found; line = strtok(NULL, "\n")) {
    char *l = trim(line);
    if (!*l || *l == '#') continue;
    char *val = name ? named(l, name) : l;
    if (val && strlen(val) == 40) {
      memcpy(out, val, 41);
      found = 0;
    }
  }
  free(copy);
  return found;
}

/* Allowed client keys: one per line, bare or as `public-key = KEY`. */
static int read_allow(const char *path, char ***keys, size_t *n) {
  char *text = slurp(path, "allow-keys file");
  if (!text) return CLI_EXIT_FAIL;
  int lineno = 0, status = 0;
  *keys = NULL;
  *n = 0;
  for (char *line = strtok(text, "\n"); line && !status; line = strtok(NULL, "\n")) {
    lineno++;
    char *l = trim(line);
    if (!*l || *l == '#') continue;
    char *v = named(l, "public-key");
    if (v) l = v;
    if (strlen(l) != 40) {
      status = cli_error("allow-keys file %s line %d: a key is 40 Z85 characters", path, lineno);
      break;
    }
    char **k = realloc(*keys, (*n + 1) * sizeof *k);
    if (!k || !(k[*n] = strdup(l))) {
      if (k) *keys = k;
      status = cli_error("allow-keys file: out of memory");
      break;
    }
    *keys = k;
    (*n)++;
  }
  free(text);
  if (!status && *n == 0) status = cli_error("allow-keys file %s: no keys in it", path);
  return status;
}

/* --mirror-nats: the mirror thread (cli/cmd_mirror.c) beside the daemon. */
static int mirror_start(struct settings *st, const engram_serve_options *so,
                        struct mirror_thread **out, const char ***topics) {
  if (!st->v[O_MIRROR_NATS] && !st->v[O_MIRROR_TOPIC] && !st->v[O_MIRROR_STREAM]) return 0;
  if (!st->v[O_MIRROR_NATS] || !st->v[O_MIRROR_TOPIC])
    return cli_usage("serve", "--mirror-nats and --mirror-topic go together");
  if (so->secret_key)
    return cli_usage("serve", "--mirror-nats with CURVE: run `engram mirror` beside the daemon");
  struct mirror_config mc;
  memset(&mc, 0, sizeof mc);
  mc.nats.url = st->v[O_MIRROR_NATS];
  mc.stream = st->v[O_MIRROR_STREAM];
  for (char *p = strtok(st->v[O_MIRROR_TOPIC], ","); p; p = strtok(NULL, ",")) {
    const char **l = realloc(*topics, (mc.n_topics + 1) * sizeof *l);
    if (!l) return cli_error("serve: out of memory");
    *topics = l;
    l[mc.n_topics++] = p;
  }
  mc.topics = *topics;
  return mirror_thread_start(so->listen, &mc, out) ? CLI_EXIT_FAIL : 0;
}

int cmd_serve(struct cli *c, int argc, char **argv) {
  struct cli_args a;
  struct settings st;
  memset(&st, 0, sizeof st);
  cli_args_init(&a, "serve", argc, argv);
  int o, status = 0;
  while ((o = cli_args_next(&a, serve_opts)) > 0) {
    if (o == CLI_OPT_HELP) return cli_help(serve_help);
    if (o == O_MIRROR_TOPIC && st.v[o]) { /* repeatable: a comma-separated list */
      char *l = malloc(strlen(st.v[o]) + strlen(a.val) + 2);
      if (l) sprintf(l, "%s,%s", st.v[o], a.val);
      free(st.v[o]);
      st.v[o] = l;
      continue;
    }
    free(st.v[o]);
    st.v[o] = strdup(o == O_LOG_JSON ? "true" : a.val);
  }
  if (o < 0 || cli_args_count(&a, 0, 0, "no arguments")) {
    status = CLI_EXIT_USAGE;
    goto done;
  }
  if (st.v[O_CONFIG] && (status = read_config(st.v[O_CONFIG], &st))) goto done;

  engram_serve_options so;
  memset(&so, 0, sizeof so);
  const char *dir = st.v[O_DATA] ? st.v[O_DATA] : c->data ? c->data : getenv("ENGRAM_DATA");
  if (c->connect) {
    status = cli_usage("serve", "--connect does not apply: serve owns a directory (--data)");
    goto done;
  }
  if (!dir || !*dir) {
    status = cli_usage("serve", "no log given: use --data DIR or set ENGRAM_DATA");
    goto done;
  }
  so.listen = st.v[O_LISTEN];
  so.notify = st.v[O_NOTIFY];
  so.log_json = st.v[O_LOG_JSON] != NULL;
  so.durability = c->durability_set ? c->durability : ENGRAM_DURABILITY_SYNC;
  if (st.v[O_DURABILITY]) {
    const char *d = st.v[O_DURABILITY];
    if (!strcmp(d, "sync"))
      so.durability = ENGRAM_DURABILITY_SYNC;
    else if (!strcmp(d, "nometasync"))
      so.durability = ENGRAM_DURABILITY_NOMETASYNC;
    else if (!strcmp(d, "async"))
      so.durability = ENGRAM_DURABILITY_ASYNC;
    else {
      status = cli_usage("serve", "--durability must be sync, nometasync or async, not '%s'", d);
      goto done;
    }
  }
  const char *why;
  if (st.v[O_WORKERS]) {
    if ((why = cli_parse_u32(st.v[O_WORKERS], &so.workers)) || so.workers == 0) {
      status = cli_usage("serve", "--workers '%s': %s", st.v[O_WORKERS],
                         why ? why : "must be at least 1");
      goto done;
    }
  }
  if (st.v[O_MAX_MESSAGE]) {
    uint64_t v;
    if ((why = cli_parse_size(st.v[O_MAX_MESSAGE], &v)) || v > UINT32_MAX) {
      status = cli_usage("serve", "--max-message '%s': %s", st.v[O_MAX_MESSAGE],
                         why ? why : "over 4GiB");
      goto done;
    }
    so.max_message = (uint32_t)v;
  }
  char pub[41] = "", sec[41] = "";
  char **allow = NULL;
  size_t nallow = 0;
  if (!st.v[O_SECRET_FILE] != !st.v[O_ALLOW_FILE]) {
    status = cli_usage("serve", "--curve-secret-file and --allow-keys-file go together");
    goto done;
  }
  if (st.v[O_SECRET_FILE]) {
    char *text = slurp(st.v[O_SECRET_FILE], "secret key file");
    if (!text) {
      status = CLI_EXIT_FAIL;
      goto done;
    }
    int bad = key_line(text, "secret-key", sec) && key_line(text, NULL, sec);
    if (!bad && key_line(text, "public-key", pub) == 0) so.public_key = pub;
    free(text);
    if (bad) {
      status = cli_error(
          "secret key file %s: no `secret-key = KEY` line (make one with 'engram keygen --out')",
          st.v[O_SECRET_FILE]);
      goto done;
    }
    so.secret_key = sec;
    if ((status = read_allow(st.v[O_ALLOW_FILE], &allow, &nallow))) goto free_allow;
    so.allow_keys = (const char *const *)allow;
    so.n_allow_keys = nallow;
  }
  struct mirror_thread *mirror = NULL;
  const char **topics = NULL;
  if ((status = mirror_start(&st, &so, &mirror, &topics))) goto free_allow;
  int rc = engram_serve(dir, &so);
  mirror_thread_stop(mirror);
  free(topics);
  if (rc)
    status = cli_error("%s", *engram_errmsg(NULL) ? engram_errmsg(NULL) : engram_strerror(rc));
free_allow:
  for (size_t i = 0; i < nallow; i++) free(allow[i]);
  free(allow);
done:
  for (int i = 0; i < O_COUNT; i++) free(st.v[i]);
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
  static const struct cli_opt opts[] = {
      {"--out", 1, 1}, {"-h", 0, CLI_OPT_HELP}, {"--help", 0, CLI_OPT_HELP}, {NULL, 0, 0}};
  struct cli_args a;
  cli_args_init(&a, "keygen", argc, argv);
  int o;
  const char *out = NULL;
  while ((o = cli_args_next(&a, opts)) > 0) {
    if (o == CLI_OPT_HELP) return cli_help(keygen_help);
    out = a.val;
  }
  if (o < 0 || cli_args_count(&a, 0, 0, "no arguments")) return CLI_EXIT_USAGE;
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
