/* cli.h — what the files of the engram command share: the command table, the handle,
 * argument parsing, error reporting and output helpers. Uses only the public API. */
#ifndef ENGRAM_CLI_H
#define ENGRAM_CLI_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "engram.h"
#include "json.h"

/* Exit statuses. */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1  /* the operation failed (or verify found damage) */
#define CLI_EXIT_USAGE 2 /* the command line was wrong */

/* Every top-level command: name, handler suffix and one-line summary, in the order
 * `engram --help` lists them. Adding a command is one line here and one file that
 * defines cmd_<name>(). */
#define CLI_COMMANDS(X)                                                               \
  X(append, "append events to a topic (one, or a JSON-lines batch from stdin)")       \
  X(read, "print events of a topic")                                                  \
  X(topics, "list topics")                                                            \
  X(topic, "create, drop, show, set a topic or train its dictionary")                 \
  X(group, "create, list, show, delete, reset consumer groups; who holds what")       \
  X(consume, "fetch events for a group member, print them and ack / nack / reject")   \
  X(ack, "acknowledge one event for a group")                                         \
  X(nack, "ask for one event to be delivered again")                                  \
  X(reject, "send one event to the group's dead-letter queue")                        \
  X(cancel, "finish a pending or retrying event without delivering it")               \
  X(status, "show one event's state in a group")                                      \
  X(dlq, "list, show, purge or redrive a group's dead-letter queue")                  \
  X(stat, "topics and groups at a glance: heads, lag, in flight, dead")               \
  X(verify, "check every stored record and the database structure")                   \
  X(backup, "write a consistent copy of the log to a new directory")                  \
  X(serve, "serve a log over ZeroMQ (the daemon, in the foreground)")                 \
  X(keygen, "make a CURVE key pair for serve and its clients")                        \
  X(mirror, "publish topics into a NATS JetStream stream, exactly once")              \
  X(restore, "rebuild a log from a stream written by mirror (--from-nats)")           \
  X(sync, "force everything committed so far to disk")                                \
  X(info, "what the daemon behind --connect is: version, durability, limits, uptime") \
  X(workers, "list the workers serving groups (alive or lost), or forget one")        \
  X(top, "a live view of groups and workers: lag, rates, oldest unfinished")          \
  X(compact, "apply retention limits now; --reclaim shrinks data.mdb")                \
  X(schedule, "add, list, show, remove, pause, resume or run-now periodic appends")   \
  X(rates, "events per second of topics and groups over 1, 5 and 15 minutes")

/* State shared by all commands: the global options and the handle they open. */
struct cli {
  const char *data;            /* --data or $ENGRAM_DATA; NULL when neither */
  const char *connect;         /* --connect endpoint; NULL = embedded */
  const char *server_key;      /* --server-key: the daemon's CURVE public key (Z85) */
  const char *client_key_file; /* --client-key-file: this client's pair (keygen --out) */
  int durability_set;          /* --durability was given */
  engram_durability durability;
  uint32_t max_topics; /* --max-topics: raises the log's own; 0 = the log's own */
  engram *log;         /* opened by cli_open(), closed by main */
  char stale[256];     /* the message of a failure a command chose to ignore */
};

#define CLI_DECLARE(name, summary) int cmd_##name(struct cli *c, int argc, char **argv);
CLI_COMMANDS(CLI_DECLARE)
#undef CLI_DECLARE

/* The log directory: --data, else $ENGRAM_DATA, else NULL (also with --connect). For
 * commands such as a daemon that open the directory themselves. */
const char *cli_data_dir(const struct cli *c);

/* Opens the log named by the global options. CLI_OPEN_CREATE allows making a new log
 * directory; otherwise a missing log is an error. CLI_OPEN_READ is for commands that only
 * read: when the log may not be written (read-only mount, another user's directory:
 * ENGRAM_EDENIED) they open it again with ENGRAM_OPEN_RDONLY. Returns 0, or prints the
 * library's message in one line and returns the exit status to use. */
#define CLI_OPEN_EXISTING 0
#define CLI_OPEN_CREATE 1
#define CLI_OPEN_READ 2
int cli_open(struct cli *c, int create);

/* Makes a SIGSEGV or SIGBUS (LMDB reading a damaged data.mdb of the log in dir) print
 * one line naming dir and what to do, and exit with CLI_EXIT_FAIL instead of dying of the
 * signal (cli/fault.c). cli_open installs it for embedded logs. */
void cli_fault_guard(const char *dir);

/* Error reporting: each prints ONE line on stderr and returns the exit status. */
/* A failed library call: "engram: <errmsg>" when the handle has a message, else
 * "engram: <context>: <strerror(code)>". */
int cli_fail(struct cli *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The same for a call whose arguments came from the command line: ENGRAM_EINVAL (a value
 * the library refuses, such as a filter pattern or a count over its limit) is a bad
 * command line and returns CLI_EXIT_USAGE (2), as `engram --help` documents. */
int cli_fail_arg(struct cli *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Call after a failure the command handles itself (a missing topic about to be
 * created ...): the library keeps its message until the next error, and a later failure
 * that sets none must not be reported with it. */
void cli_forget_error(struct cli *c);
/* What went wrong in the last call: the handle's message when it has one, else
 * engram_strerror(code). For messages that add their own context. */
const char *cli_errtext(struct cli *c, int code);
/* "engram: <message>", status 1. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "engram: <cmd>: <message> (see 'engram <cmd> --help')", status 2. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints `text` (a command's help) on stdout; returns 0. */
int cli_help(const char *text);
/* Flushes stdout; a failed write becomes an error. Returns `status` or 1. */
int cli_finish(int status);

/* Subcommands of a command such as `topic` or `group`. */
struct cli_sub {
  const char *name;
  int (*run)(struct cli *c, int argc, char **argv); /* argv[0] = subcommand name */
};
/* Runs the subcommand named by argv[1]; `help` is the parent's help text. */
int cli_dispatch_sub(struct cli *c, const char *cmd, const struct cli_sub *subs, const char *help,
                     int argc, char **argv);

/* ---------------------------------------------------------------------------------
 * Command-line parsing (args.c).
 *
 * A command describes its options in a table: each entry names the option, what its
 * value is and where it goes; cli_args_parse() fills the targets, refuses what does
 * not parse with one usage line, and handles -h / --help (every command takes them):
 *
 *   struct cli_opt opts[] = {CLI_OPT_U64("--count", &count, .min = 1),
 *                            CLI_OPT_FLAG("--json", &json), CLI_OPT_END};
 *   int r = cli_args_parse(&a, opts, help, 1, 1, "TOPIC");
 *   if (r != CLI_GO) return r;
 * ------------------------------------------------------------------------------ */
enum cli_opt_type {
  CLI_T_FLAG,     /* int: set to 1 (no value) */
  CLI_T_STR,      /* const char *: the value as typed */
  CLI_T_TEXT,     /* const char *: a non-empty value; "" is refused with "NAME <what>" */
  CLI_T_U64,      /* uint64_t: decimal, at least min, at most max (0 = no limit) */
  CLI_T_U32,      /* uint32_t: the same within 32 bits */
  CLI_T_OFFSET,   /* uint64_t: an offset, >= 1 */
  CLI_T_DURATION, /* uint64_t milliseconds (cli_parse_duration_ms), at least min, at most
                   * max: the library's ENGRAM_MAX_*_MS for the option (required) */
  CLI_T_SIZE,     /* uint64_t bytes with K/M/G suffixes, at least min, at most max */
  CLI_T_START,    /* struct cli_start: earliest | latest | OFFSET | @TIME */
  CLI_T_ENUM,     /* int: the index of the value in names[] */
  CLI_T_CUSTOM    /* parse(a, opt, value) */
};

/* Where a CLI_T_START option lands. */
struct cli_start {
  engram_start start;
  uint64_t offset;  /* ENGRAM_START_OFFSET */
  int64_t time_ns;  /* ENGRAM_START_TIME */
  const char *text; /* the value as typed; NULL when the option was not given */
};

struct cli_args;
struct cli_opt {
  const char *name; /* as typed: "--key"; "--key K" and "--key=K" both work */
  enum cli_opt_type type;
  void *to;                 /* the target, of the type named above */
  uint64_t min;             /* numbers, sizes and durations: the smallest value accepted */
  uint64_t max;             /* the largest (0 = no limit, except for durations) */
  const char *low;          /* refusal below min (default "must be at least MIN") */
  const char *high;         /* refusal above max (default "at most MAX") */
  const char *what;         /* CLI_T_TEXT: completes the refusal of "" ("needs a non-empty name") */
  const char *const *names; /* CLI_T_ENUM: the values, NULL-terminated */
  /* CLI_T_CUSTOM: stores value into opt->to; returns 0 or the status of the usage error
   * it printed (cli_usage). */
  int (*parse)(struct cli_args *a, const struct cli_opt *opt, const char *value);
};

/* One entry per option; the target pointer's type is checked at compile time. Further
 * fields follow as designated initializers: CLI_OPT_U64("--count", &n, .min = 1). */
#define CLI_OPT_(opt, kind, ctype, target, ...) \
  { .name = (opt), .type = (kind), .to = (1 ? (target) : (ctype *)0), __VA_ARGS__ }
#define CLI_OPT_FLAG(opt, p, ...) CLI_OPT_(opt, CLI_T_FLAG, int, p, __VA_ARGS__)
#define CLI_OPT_STR(opt, p, ...) CLI_OPT_(opt, CLI_T_STR, const char *, p, __VA_ARGS__)
#define CLI_OPT_TEXT(opt, p, ...) CLI_OPT_(opt, CLI_T_TEXT, const char *, p, __VA_ARGS__)
#define CLI_OPT_U64(opt, p, ...) CLI_OPT_(opt, CLI_T_U64, uint64_t, p, __VA_ARGS__)
#define CLI_OPT_U32(opt, p, ...) CLI_OPT_(opt, CLI_T_U32, uint32_t, p, __VA_ARGS__)
#define CLI_OPT_OFFSET(opt, p, ...) CLI_OPT_(opt, CLI_T_OFFSET, uint64_t, p, __VA_ARGS__)
#define CLI_OPT_DURATION(opt, p, ...) CLI_OPT_(opt, CLI_T_DURATION, uint64_t, p, __VA_ARGS__)
#define CLI_OPT_SIZE(opt, p, ...) CLI_OPT_(opt, CLI_T_SIZE, uint64_t, p, __VA_ARGS__)
#define CLI_OPT_START(opt, p, ...) CLI_OPT_(opt, CLI_T_START, struct cli_start, p, __VA_ARGS__)
#define CLI_OPT_ENUM(opt, p, ...) CLI_OPT_(opt, CLI_T_ENUM, int, p, __VA_ARGS__)
#define CLI_OPT_CUSTOM(opt, p, fn, ...) \
  { .name = (opt), .type = CLI_T_CUSTOM, .to = (p), .parse = (fn), __VA_ARGS__ }
#define CLI_OPT_END \
  { .name = NULL }

#define CLI_MAX_OPTS 16 /* options of one command */
#define CLI_GO (-1)     /* cli_args_parse: the command goes on */

struct cli_args {
  const char *cmd; /* for messages: "group create" */
  int argc;
  char **argv;
  int npos;   /* positional arguments, compacted into pos[] */
  char **pos; /* = argv + 1 */
  const struct cli_opt *opts;
  int nseen;              /* options parsed so far */
  int seen[CLI_MAX_OPTS]; /* per opts[i]: 0 = not given, else nseen when it last came */
};
/* Parses argv[1..argc-1]; argv[0] is the command name. */
void cli_args_init(struct cli_args *a, const char *cmd, int argc, char **argv);
/* Parses every option into its target, in command-line order (a repeated option: the
 * last value wins), then checks that there are min..max positionals (max < 0: no upper
 * bound; names describes them for the message). "--" ends the options. Returns CLI_GO to
 * go on, 0 after printing `help` for -h / --help, or CLI_EXIT_USAGE after printing why
 * the command line is refused. */
int cli_args_parse(struct cli_args *a, const struct cli_opt *opts, const char *help, int min,
                   int max, const char *names);
/* cli_args_init and cli_args_parse for a command whose only option is --json (into
 * *json). */
int cli_args_json(struct cli_args *a, const char *cmd, int argc, char **argv, const char *help,
                  int min, int max, const char *names, int *json);
/* Positional i as an OFFSET; 0, or the usage status after saying what is wrong. */
int cli_args_offset(const struct cli_args *a, int i, uint64_t *offset);
/* 0 when the option `name` was not on the command line, else a number that grows with
 * its place there (of its last occurrence). */
int cli_args_given(const struct cli_args *a, const char *name);
/* Checks the number of positionals (names describes them for the message); returns 0
 * or prints a usage error and returns 2. max < 0 means no upper bound. */
int cli_args_count(const struct cli_args *a, int min, int max, const char *names);
/* Stores `value` (NULL for a flag on the command line; "true"/"false"/"1"/"0" from a
 * file) into the target of a typed option other than CLI_T_CUSTOM. Returns NULL or why
 * the value is refused; *bare is set when that reason stands without the value
 * ("needs a non-empty name"). why[len] holds formatted reasons. */
const char *cli_opt_set(const struct cli_opt *o, const char *value, char *why, size_t len,
                        int *bare);

/* Value parsers: each returns NULL on success or a short reason why `s` is refused. */
const char *cli_parse_u64(const char *s, uint64_t *out); /* decimal digits */
const char *cli_parse_u32(const char *s, uint32_t *out);
const char *cli_parse_offset(const char *s, uint64_t *out); /* >= 1 */
/* "250ms", "30s", "2m", "1h", "1d", combined ("1h30m") and with fractions ("1.5s"); whole
 * milliseconds, at most max_ms (the library's limit for the option, ENGRAM_MAX_*_MS, so
 * the command line refuses what the library would, with "over the limit of 30d"). */
const char *cli_parse_duration_ms(const char *s, uint64_t max_ms, uint64_t *ms);
/* "@2024-01-12T10:00:00Z" (RFC 3339, fractional seconds, +hh:mm offsets) or "@1705053600"
 * (Unix seconds, optionally fractional). */
const char *cli_parse_time_ns(const char *s, int64_t *ns);
/* Bytes with an optional K/KiB/M/MiB/G/GiB suffix (powers of 1024). */
const char *cli_parse_size(const char *s, uint64_t *out);
/* earliest | latest | OFFSET | @TIME */
const char *cli_parse_start(const char *s, engram_start *start, uint64_t *offset, int64_t *time_ns);
/* Splits "name=value" in place at the first '='; the name must not be empty. */
const char *cli_parse_kv(char *s, const char **name, const char **value);

/* ---------------------------------------------------------------------------------
 * Files of lines: `serve`'s config and key files (lines.c).
 * ------------------------------------------------------------------------------ */
struct cli_lines {
  FILE *f;
  const char *path;
  unsigned long line; /* number of the line last read, from 1; blank lines count */
  char *buf;
  size_t cap;
  int status; /* the exit status of a failure already reported, else 0 */
};
/* Opens path; returns 0, or prints "engram: WHAT PATH: <why>" and returns 1. */
int cli_lines_open(struct cli_lines *r, const char *path, const char *what);
/* The next line with something in it, without its leading and trailing blanks and line
 * end (it stops at a NUL byte). Blank lines and lines whose first character is '#' are
 * skipped. NULL at the end of the file, or after a read error or a line over 64 KiB
 * (reported; cli_lines_close returns its status). The line lives until the next call. */
char *cli_lines_next(struct cli_lines *r);
/* "engram: PATH:LINE: <message>" for the line last returned; returns 1. */
int cli_lines_error(const struct cli_lines *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Closes the file; returns 0 or the status of a failure cli_lines_next reported. */
int cli_lines_close(struct cli_lines *r);

/* A key pair as `engram keygen --out` writes it (cmd_serve.c): a `secret-key = KEY` line
 * (or else a line holding just the key) and an optional `public-key = KEY` line; pub is
 * "" without one. Returns 0, or prints why (with FILE:LINE) and returns 1. */
int cli_read_key_file(const char *path, char sec[41], char pub[41]);

/* CLOCK_REALTIME now, in nanoseconds. */
int64_t cli_now_ns(void);

/* ---------------------------------------------------------------------------------
 * Output (print.c).
 * ------------------------------------------------------------------------------ */
/* "2024-01-12T10:00:00.123Z"; buf of at least 40 bytes; "-" for 0. */
void cli_fmt_time(int64_t ns, char *buf, size_t len);
/* "850ms", "12s", "3m05s", "2h10m", "4d03h"; "-" for negative. */
void cli_fmt_age(int64_t ns, char *buf, size_t len);
/* "30s", "1h30m", "250ms": a millisecond duration in the form cli_parse_duration_ms
 * reads back. */
void cli_fmt_duration_ms(uint64_t ms, char *buf, size_t len);

/* Untrusted text (event fields, worker errors and reasons) in human-readable output:
 * every character that could drive a terminal is escaped. C0 controls and DEL become
 * \xHH (\n, \t, \r by name), C1 controls and Unicode's invisible line and direction
 * controls \uHHHH, bytes that are not UTF-8 \xHH, and a backslash \\; printable UTF-8
 * is kept. JSON output escapes by itself. */
#define CLI_ESC_LINES 0x1   /* keep \n and \t as they are: for multi-line blocks */
#define CLI_ESC_MESSAGE 0x2 /* keep a backslash as it is: for messages, escaped once */
void cli_put_text(FILE *f, const char *s, size_t n, int flags);
/* The same into buf (len bytes, always NUL-terminated, cut between characters): for
 * table cells and formatted lines. Returns buf. A buffer of 4 * n + 1 bytes holds all. */
char *cli_escape(char *buf, size_t len, const char *s, size_t n);

/* The JSON shape of an event (see docs/cli.md); with group != NULL adds "group" and
 * "attempt". `topic` is used when the event does not carry its topic name. */
void cli_json_event(json_writer *w, const engram_event *ev, const char *topic, const char *group);
/* One readable line: offset, time, type, key, [attempt,] payload preview. */
void cli_text_event(FILE *f, const engram_event *ev, int with_attempt);
void cli_json_topic(json_writer *w, const engram_topic_info *t);
void cli_json_group(json_writer *w, const engram_group_info *g, int64_t now_ns);
void cli_json_dlq_entry(json_writer *w, const engram_dlq_entry *e);
/* The outcome of a command that writes: with json, one object
 * {"ok":true,"action":ACTION,"topic":T,"group":G,"offset":N,"count":N} holding the fields
 * set (NULL / has_offset 0 / count < 0 leave them out); else `text` and a newline. */
struct cli_done {
  const char *action; /* "topic create", "ack" ... */
  const char *topic, *group;
  uint64_t offset;
  int has_offset;
  int64_t count; /* < 0: none */
};
int cli_done(int json, const struct cli_done *d, const char *text);
#define CLI_JSON_DONE_HELP \
  "  --json      print {\"ok\":true,\"action\",\"topic\",...} instead of the text line\n"

/* Writes the writer's buffer plus a newline to stdout and empties it. Returns 0, or
 * prints "out of memory" and returns 1 when the writer could not build it. */
int cli_json_emit(json_writer *w);

/* Progress of one long library call (backup, verify, compact) on a terminal: "WHAT...
 * 12s" on stderr, or with what the library reports through cli_progress_report (an
 * engram_progress_fn: pass it to engram_progress_set or engram_reclaim's options)
 * "WHAT: PHASE 12.0 MiB of 40.0 MiB (30%), 3s", redrawn five times a second by a thread
 * until cli_progress_stop() erases it. Nothing when stderr is not a terminal. */
void cli_progress_start(const char *what);
void cli_progress_report(void *ctx, const char *phase, uint64_t done, uint64_t total);
void cli_progress_stop(void);

/* A text table with aligned columns; cells are copied. */
struct cli_table;
struct cli_table *cli_table_new(size_t ncols);
/* Adds one row of ncols cells; returns 0 or -1 when out of memory. */
int cli_table_row(struct cli_table *t, ...);
/* Prints the rows (the first is the heading) and frees the table; 0 or 1 (out of memory
 * while building it, reported on stderr). Accepts NULL as "out of memory". */
int cli_table_print(struct cli_table *t, FILE *f);

#endif
