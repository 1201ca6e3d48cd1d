/* main.c — the engram command: global options, the command table, opening the log and
 * reporting errors. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

struct command {
  const char *name;
  int (*run)(struct cli *c, int argc, char **argv);
  const char *summary;
};

static const struct command commands[] = {
#define CLI_ENTRY(name, summary) {#name, cmd_##name, summary},
    CLI_COMMANDS(CLI_ENTRY)
#undef CLI_ENTRY
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void print_help(void) {
  printf(
      "usage: engram [--data DIR | --connect ENDPOINT [--server-key KEY --client-key-file F]]\n"
      "              [--durability MODE] [--max-topics N] COMMAND [ARGS]\n"
      "       engram COMMAND --help | engram help COMMAND | engram --version\n"
      "\n"
      "engram is a durable event log with consumer groups.\n"
      "\n"
      "global options (before COMMAND):\n"
      "  --data DIR           the log directory (default: $ENGRAM_DATA); commands that\n"
      "                       only read open a log they may not write read-only\n"
      "  --connect ENDPOINT   use the log served by `engram serve` at ENDPOINT instead\n"
      "                       (default: $ENGRAM_CONNECT when $ENGRAM_DATA is not set)\n"
      "  --server-key KEY     with --connect: the daemon's CURVE public key, 40 Z85\n"
      "                       characters (its keygen BASE.pub; default $ENGRAM_SERVER_KEY)\n"
      "  --client-key-file F  with --server-key: this client's key pair from `engram\n"
      "                       keygen --out` (default $ENGRAM_CLIENT_KEY_FILE); its public\n"
      "                       key must be in the daemon's --allow-keys-file\n"
      "  --durability MODE    with --data: sync (default), nometasync or async\n"
      "  --max-topics N       with --data: let the log hold up to N topics (1 to 100000);\n"
      "                       the log keeps it (a new log: 1024); a smaller N changes\n"
      "                       nothing\n"
      "  -h, --help           this help\n"
      "  --version            print the versions and exit\n"
      "\n"
      "commands:\n");
  for (size_t i = 0; i < NCOMMANDS; i++)
    printf("  %-10s %s\n", commands[i].name, commands[i].summary);
  printf(
      "\n"
      "Durations are written 250ms, 30s, 2m, 1h, 1d (combinable: 1h30m); times as @ and\n"
      "RFC 3339 (@2024-01-12T10:00:00Z) or Unix seconds (@1705053600).\n"
      "Exit status: 0 success, 1 failure, 2 bad command line.\n");
}

static const struct command *find_command(const char *name) {
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (strcmp(commands[i].name, name) == 0) return &commands[i];
  return NULL;
}

/* Matches "--name VALUE" and "--name=VALUE" at argv[*i]: 1 (advanced, *out set), 0 (not
 * this option) or -1 (value missing; reported). */
static int global_value(int argc, char **argv, int *i, const char *name, const char **out) {
  const char *s = argv[*i];
  size_t n = strlen(name);
  if (strncmp(s, name, n) != 0) return 0;
  if (s[n] == '=') {
    *out = s + n + 1;
  } else if (s[n] == '\0') {
    if (*i + 1 >= argc) {
      cli_usage(NULL, "%s needs a value", name);
      return -1;
    }
    *out = argv[++*i];
  } else {
    return 0;
  }
  if (!**out) {
    cli_usage(NULL, "%s needs a non-empty value", name);
    return -1;
  }
  return 1;
}

/* `engram help COMMAND [SUBCOMMAND]` runs the command with --help. */
static int help_command(struct cli *c, int argc, char **argv) {
  if (argc < 2) {
    print_help();
    return 0;
  }
  if (argc > 3) return cli_usage("help", "expected COMMAND [SUBCOMMAND]");
  const struct command *cmd = find_command(argv[1]);
  if (!cmd) return cli_usage(NULL, "unknown command '%s'", argv[1]);
  char help[] = "--help";
  char *args[4] = {argv[1], argc == 3 ? argv[2] : help, argc == 3 ? help : NULL, NULL};
  return cmd->run(c, argc == 3 ? 3 : 2, args);
}

int main(int argc, char **argv) {
  struct cli c;
  memset(&c, 0, sizeof c);
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; i++) {
    const char *s = argv[i], *v = NULL;
    int r;
    if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0) {
      print_help();
      return cli_finish(0);
    }
    if (strcmp(s, "--version") == 0) {
      printf("engram %s (on-disk format %d, protocol %d)\n", ENGRAM_VERSION_STRING,
             ENGRAM_FORMAT_VERSION, ENGRAM_PROTOCOL_VERSION);
      return cli_finish(0);
    }
    if (strcmp(s, "--") == 0) {
      i++;
      break;
    }
    if ((r = global_value(argc, argv, &i, "--data", &v)) != 0) {
      if (r < 0) return CLI_EXIT_USAGE;
      c.data = v;
    } else if ((r = global_value(argc, argv, &i, "--connect", &v)) != 0) {
      if (r < 0) return CLI_EXIT_USAGE;
      c.connect = v;
    } else if ((r = global_value(argc, argv, &i, "--server-key", &v)) != 0) {
      if (r < 0) return CLI_EXIT_USAGE;
      c.server_key = v;
    } else if ((r = global_value(argc, argv, &i, "--client-key-file", &v)) != 0) {
      if (r < 0) return CLI_EXIT_USAGE;
      c.client_key_file = v;
    } else if ((r = global_value(argc, argv, &i, "--durability", &v)) != 0) {
      if (r < 0) return CLI_EXIT_USAGE;
      if (strcmp(v, "sync") == 0)
        c.durability = ENGRAM_DURABILITY_SYNC;
      else if (strcmp(v, "nometasync") == 0)
        c.durability = ENGRAM_DURABILITY_NOMETASYNC;
      else if (strcmp(v, "async") == 0)
        c.durability = ENGRAM_DURABILITY_ASYNC;
      else
        return cli_usage(NULL, "--durability must be sync, nometasync or async, not '%s'", v);
      c.durability_set = 1;
    } else if ((r = global_value(argc, argv, &i, "--max-topics", &v)) != 0) {
      if (r < 0) return CLI_EXIT_USAGE;
      char *end;
      errno = 0;
      unsigned long n = strtoul(v, &end, 10);
      if (*end || errno || v[0] == '-' || n < 1 || n > 100000)
        return cli_usage(NULL, "--max-topics must be a number from 1 to 100000, not '%s'", v);
      c.max_topics = (uint32_t)n;
    } else {
      return cli_usage(NULL, "unknown global option '%s'", s);
    }
  }
  if (c.data && c.connect) return cli_usage(NULL, "--data and --connect exclude each other");
  if ((c.server_key || c.client_key_file) && c.data)
    return cli_usage(NULL, "--server-key and --client-key-file apply to --connect only");
  if (c.connect && c.durability_set)
    return cli_usage(NULL, "--durability applies to --data only (a daemon keeps its own)");
  if (c.connect && c.max_topics)
    return cli_usage(NULL, "--max-topics applies to --data only (a daemon's log keeps its own)");
  if (i >= argc) return cli_usage(NULL, "missing command");

  int status;
  if (strcmp(argv[i], "help") == 0) {
    status = help_command(&c, argc - i, argv + i);
  } else {
    const struct command *cmd = find_command(argv[i]);
    if (!cmd) return cli_usage(NULL, "unknown command '%s'", argv[i]);
    status = cmd->run(&c, argc - i, argv + i);
  }
  status = cli_finish(status);
  engram_close(c.log);
  return status;
}

const char *cli_data_dir(const struct cli *c) {
  if (c->connect) return NULL;
  if (c->data && *c->data) return c->data;
  const char *env = getenv("ENGRAM_DATA");
  return env && *env ? env : NULL;
}

/* The value of environment variable name, NULL when unset or empty. */
static const char *env(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

/* Connects to the daemon at c->connect, with CURVE when a server key is given (on the
 * command line or in the environment). */
static int connect_remote(struct cli *c) {
  const char *server_key = c->server_key ? c->server_key : env("ENGRAM_SERVER_KEY");
  const char *key_file = c->client_key_file ? c->client_key_file : env("ENGRAM_CLIENT_KEY_FILE");
  engram_connect_options o;
  memset(&o, 0, sizeof o);
  char sec[41], pub[41];
  if (key_file && !server_key)
    return cli_usage(NULL, "a client key file (%s) needs the daemon's key: --server-key KEY",
                     key_file);
  if (server_key) {
    if (strlen(server_key) != 40)
      return cli_usage(NULL, "--server-key must be the daemon's 40-character Z85 public key");
    if (!key_file)
      return cli_usage(NULL,
                       "--server-key needs this client's key pair: --client-key-file FILE "
                       "(make one with 'engram keygen --out BASE')");
    int st = cli_read_key_file(key_file, sec, pub);
    if (st) return st;
    if (!pub[0])
      return cli_error(
          "client key file %s: no `public-key = KEY` line (as 'engram keygen --out' "
          "writes it)",
          key_file);
    o.server_key = server_key;
    o.public_key = pub;
    o.secret_key = sec;
  }
  int rc = engram_connect(c->connect, &o, &c->log);
  memset(sec, 0, sizeof sec);
  if (rc != 0) {
    c->log = NULL;
    const char *m = engram_errmsg(NULL);
    if (*m) return cli_error("%s", m);
    return cli_error("connect %s: %s", c->connect, engram_strerror(rc));
  }
  return 0;
}

int cli_open(struct cli *c, int create) {
  if (c->log) return 0;
  int rc;
  if (!c->connect && !c->data && env("ENGRAM_CONNECT")) {
    if (env("ENGRAM_DATA"))
      return cli_usage(NULL,
                       "ENGRAM_DATA and ENGRAM_CONNECT are both set: say which with --data or "
                       "--connect");
    c->connect = env("ENGRAM_CONNECT");
  }
  if (c->connect) return connect_remote(c);
  const char *dir = cli_data_dir(c);
  if (!dir)
    return cli_usage(NULL,
                     "no log given: use --data DIR or --connect ENDPOINT, or set ENGRAM_DATA");
  cli_fault_guard(dir);
  engram_options o;
  memset(&o, 0, sizeof o);
  o.durability = c->durability;
  o.max_topics = c->max_topics;
  o.flags = create == CLI_OPEN_CREATE ? 0 : ENGRAM_OPEN_NOCREATE;
  /* A command is a short visit: it leaves background retention to the processes that
   * stay (engram serve, the services); `engram compact` applies it on demand. */
  o.maintenance_ms = ENGRAM_MAINTENANCE_OFF;
  rc = engram_open(dir, &o, &c->log);
  /* A read command on a log this user or mount may not write: read it read-only. */
  if (rc == ENGRAM_EDENIED && create == CLI_OPEN_READ) {
    o.flags |= ENGRAM_OPEN_RDONLY;
    rc = engram_open(dir, &o, &c->log);
  }
  if (rc != 0) {
    c->log = NULL;
    const char *m = engram_errmsg(NULL);
    if (rc == ENGRAM_ENOTFOUND && strstr(m, ": no log there"))
      return cli_error(
          "open %s: no log there (make one with 'engram topic create' or "
          "'engram append --create')",
          dir);
    if (*m) return cli_error("%s", m);
    return cli_error("open %s: %s", dir, engram_strerror(rc));
  }
  return 0;
}

void cli_forget_error(struct cli *c) {
  const char *m = c->log ? engram_errmsg(c->log) : NULL;
  snprintf(c->stale, sizeof c->stale, "%s", m ? m : "");
}

/* The handle's message for the failure just seen, or NULL when it has none. */
static const char *fresh_errmsg(const struct cli *c) {
  const char *m = c && c->log ? engram_errmsg(c->log) : NULL;
  if (!m || !*m) return NULL;
  if (c->stale[0] && strncmp(m, c->stale, sizeof c->stale - 1) == 0) return NULL;
  return m;
}

const char *cli_errtext(struct cli *c, int code) {
  const char *m = fresh_errmsg(c);
  return m ? m : engram_strerror(code);
}

/* A message on stderr: one line whatever the names and values it quotes held (control
 * characters and bytes that are not UTF-8 escaped; a library message is already so). */
static void vput_message(const char *fmt, va_list ap) {
  char buf[2048];
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  if (n < 0) return;
  cli_put_text(stderr, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1, CLI_ESC_MESSAGE);
}

static int vfail(struct cli *c, int code, const char *fmt, va_list ap) {
  const char *m = fresh_errmsg(c);
  fflush(stdout);
  fputs("engram: ", stderr);
  if (m) {
    cli_put_text(stderr, m, strlen(m), CLI_ESC_MESSAGE);
  } else {
    vput_message(fmt, ap);
    fprintf(stderr, ": %s", engram_strerror(code));
  }
  fputc('\n', stderr);
  return CLI_EXIT_FAIL;
}

int cli_fail(struct cli *c, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = vfail(c, code, fmt, ap);
  va_end(ap);
  return r;
}

int cli_fail_arg(struct cli *c, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = vfail(c, code, fmt, ap);
  va_end(ap);
  return code == ENGRAM_EINVAL ? CLI_EXIT_USAGE : r;
}

int cli_error(const char *fmt, ...) {
  va_list ap;
  fflush(stdout);
  va_start(ap, fmt);
  fputs("engram: ", stderr);
  vput_message(fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return CLI_EXIT_FAIL;
}

int cli_usage(const char *cmd, const char *fmt, ...) {
  va_list ap;
  fflush(stdout);
  va_start(ap, fmt);
  fputs("engram: ", stderr);
  if (cmd) fprintf(stderr, "%s: ", cmd);
  vput_message(fmt, ap);
  fprintf(stderr, " (see 'engram %s%s--help')\n", cmd ? cmd : "", cmd ? " " : "");
  va_end(ap);
  return CLI_EXIT_USAGE;
}

int cli_help(const char *text) {
  fputs(text, stdout);
  return CLI_EXIT_OK;
}

int cli_finish(int status) {
  if (fflush(stdout) != 0 || ferror(stdout)) {
    /* A closed pipe is the reader's choice, not a failure worth a message. */
    if (errno != EPIPE) fprintf(stderr, "engram: write to stdout: %s\n", strerror(errno));
    return status ? status : CLI_EXIT_FAIL;
  }
  return status;
}

int cli_dispatch_sub(struct cli *c, const char *cmd, const struct cli_sub *subs, const char *help,
                     int argc, char **argv) {
  if (argc < 2) return cli_usage(cmd, "missing subcommand");
  const char *s = argv[1];
  if (strcmp(s, "-h") == 0 || strcmp(s, "--help") == 0 || strcmp(s, "help") == 0)
    return cli_help(help);
  for (const struct cli_sub *sub = subs; sub->name; sub++)
    if (strcmp(sub->name, s) == 0) return sub->run(c, argc - 1, argv + 1);
  return cli_usage(cmd, "unknown subcommand '%s'", s);
}
