/* cmd_group.c — consumer groups from the command line: group, consume, ack, nack,
 * reject, cancel, status. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

#define MAX_CONSUME 100000 /* events one `consume` may fetch */

static const struct cli_opt help_opts[] = {
    {"-h", 0, CLI_OPT_HELP}, {"--help", 0, CLI_OPT_HELP}, {NULL, 0, 0}};

/* Checks for TOPIC GROUP OFFSET and parses the offset; 0 or the usage status. */
static int topic_group_offset(struct cli_args *a, uint64_t *offset) {
  if (cli_args_count(a, 3, 3, "TOPIC GROUP OFFSET")) return CLI_EXIT_USAGE;
  const char *e = cli_parse_offset(a->pos[2], offset);
  if (e) return cli_usage(a->cmd, "OFFSET '%s': %s", a->pos[2], e);
  return 0;
}

/* ---------------------------------------------------------------------------------
 * group create | list | show | delete | reset
 * ------------------------------------------------------------------------------ */
static const char group_help[] =
    "usage: engram group create TOPIC GROUP [options]\n"
    "       engram group list [TOPIC] [--json]\n"
    "       engram group show TOPIC GROUP [--json]\n"
    "       engram group delete TOPIC GROUP\n"
    "       engram group reset TOPIC GROUP --to OFFSET|@TIME|earliest|latest\n"
    "\n"
    "Manages consumer groups: named cursors over one topic whose members compete for\n"
    "its events. `engram group SUBCOMMAND --help` describes each one.\n";

static const char create_help[] =
    "usage: engram group create TOPIC GROUP [options]\n"
    "\n"
    "Creates consumer group GROUP on TOPIC.\n"
    "\n"
    "options:\n"
    "  --filter PATTERN    deliver only these types: exact (memory.saved), prefix\n"
    "                      (memory.*) or *; repeatable, at most 16 (default: *)\n"
    "  --ack-wait D        lease length before an unacked event is delivered again\n"
    "                      (default 30s, at most 30d)\n"
    "  --max-deliver N     attempts before an event goes to the dead-letter queue\n"
    "                      (default 5, at least 1)\n"
    "  --backoff D,D,...   delay before each retry after a nack or an expired lease; the\n"
    "                      last step repeats; at most 16 steps of at most 30d each\n"
    "                      (default 1s,5s,30s,2m)\n"
    "  --start WHERE       earliest (default), latest (only new events), an OFFSET, or\n"
    "                      @TIME (the first event appended at or after it)\n"
    "  --key-ordered       events with the same key are never in flight together and\n"
    "                      finish in order\n"
    "  --result-ttl D      how long ack results are kept (default 1d, at most 365d)\n"
    "  -h, --help          this help\n"
    "Durations: 250ms, 30s, 2m, 1h, 1d, or combined (1h30m).\n";

static const char *parse_backoff(const char *s, uint64_t *out, size_t *n) {
  const char *p = s;
  *n = 0;
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    char step[64];
    if (len == 0) return "empty step";
    if (len >= sizeof step) return "step too long";
    if (*n == ENGRAM_MAX_BACKOFF) return "at most 16 steps";
    memcpy(step, p, len);
    step[len] = '\0';
    const char *e = cli_parse_duration_ms(step, ENGRAM_MAX_BACKOFF_MS, &out[*n]);
    if (e) return e;
    (*n)++;
    if (!comma) return NULL;
    p = comma + 1;
  }
}

static int group_create(struct cli *c, int argc, char **argv) {
  enum { O_FILTER = 1, O_ACKWAIT, O_MAXDEL, O_BACKOFF, O_START, O_KEYORD, O_TTL };
  static const struct cli_opt opts[] = {
      {"--filter", 1, O_FILTER},      {"--ack-wait", 1, O_ACKWAIT},
      {"--max-deliver", 1, O_MAXDEL}, {"--backoff", 1, O_BACKOFF},
      {"--start", 1, O_START},        {"--key-ordered", 0, O_KEYORD},
      {"--result-ttl", 1, O_TTL},     {"-h", 0, CLI_OPT_HELP},
      {"--help", 0, CLI_OPT_HELP},    {NULL, 0, 0}};
  struct cli_args a;
  cli_args_init(&a, "group create", argc, argv);
  const char *filters[ENGRAM_MAX_FILTERS];
  uint64_t backoff[ENGRAM_MAX_BACKOFF];
  engram_group_config cfg;
  memset(&cfg, 0, sizeof cfg);
  int o;
  const char *e;
  while ((o = cli_args_next(&a, opts)) > 0) {
    switch (o) {
      case CLI_OPT_HELP:
        return cli_help(create_help);
      case O_FILTER:
        if (cfg.n_filters == ENGRAM_MAX_FILTERS)
          return cli_usage(a.cmd, "at most %d --filter options", ENGRAM_MAX_FILTERS);
        if (!a.val[0]) return cli_usage(a.cmd, "--filter needs a non-empty pattern");
        if (strlen(a.val) > ENGRAM_MAX_TYPE)
          return cli_usage(a.cmd, "--filter pattern over %d bytes", ENGRAM_MAX_TYPE);
        filters[cfg.n_filters++] = a.val;
        break;
      case O_ACKWAIT:
        if ((e = cli_parse_duration_ms(a.val, ENGRAM_MAX_ACK_WAIT_MS, &cfg.ack_wait_ms)) ||
            (cfg.ack_wait_ms == 0 && (e = "must be more than 0")))
          return cli_usage(a.cmd, "--ack-wait '%s': %s", a.val, e);
        break;
      case O_MAXDEL:
        if ((e = cli_parse_u32(a.val, &cfg.max_deliver)))
          return cli_usage(a.cmd, "--max-deliver '%s': %s", a.val, e);
        if (cfg.max_deliver == 0) return cli_usage(a.cmd, "max-deliver must be at least 1");
        break;
      case O_BACKOFF:
        if ((e = parse_backoff(a.val, backoff, &cfg.n_backoff)))
          return cli_usage(a.cmd, "--backoff '%s': %s", a.val, e);
        break;
      case O_START:
        if ((e = cli_parse_start(a.val, &cfg.start, &cfg.start_offset, &cfg.start_time_ns)))
          return cli_usage(a.cmd, "--start '%s': %s", a.val, e);
        break;
      case O_KEYORD:
        cfg.flags |= ENGRAM_GROUP_KEY_ORDERED;
        break;
      case O_TTL:
        if ((e = cli_parse_duration_ms(a.val, ENGRAM_MAX_RESULT_TTL_MS, &cfg.result_ttl_ms)) ||
            (cfg.result_ttl_ms == 0 && (e = "must be more than 0")))
          return cli_usage(a.cmd, "--result-ttl '%s': %s", a.val, e);
        break;
    }
  }
  if (o < 0 || cli_args_count(&a, 2, 2, "TOPIC GROUP")) return CLI_EXIT_USAGE;
  cfg.filters = cfg.n_filters ? filters : NULL;
  cfg.backoff_ms = cfg.n_backoff ? backoff : NULL;
  int status = cli_open(c, CLI_OPEN_EXISTING);
  if (status) return status;
  int rc = engram_group_create(c->log, a.pos[0], a.pos[1], &cfg);
  if (rc != 0) return cli_fail(c, rc, "create group %s on %s", a.pos[1], a.pos[0]);
  printf("created group %s on topic %s\n", a.pos[1], a.pos[0]);
  return 0;
}

static int group_list(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram group list [TOPIC] [--json]\n"
      "\n"
      "Lists the consumer groups of TOPIC (default: of every topic) with their counters.\n"
      "\n"
      "options:\n"
      "  --json     a JSON array of group objects (the shape of `engram group show --json`)\n"
      "  -h, --help this help\n";
  static const struct cli_opt opts[] = {
      {"--json", 0, 1}, {"-h", 0, CLI_OPT_HELP}, {"--help", 0, CLI_OPT_HELP}, {NULL, 0, 0}};
  struct cli_args a;
  cli_args_init(&a, "group list", argc, argv);
  int o, json = 0;
  while ((o = cli_args_next(&a, opts)) > 0) {
    if (o == CLI_OPT_HELP) return cli_help(h);
    json = 1;
  }
  if (o < 0 || cli_args_count(&a, 0, 1, "[TOPIC]")) return CLI_EXIT_USAGE;
  const char *topic = a.npos ? a.pos[0] : NULL;
  int status = cli_open(c, CLI_OPEN_READ);
  if (status) return status;
  engram_group_info *g = NULL;
  size_t n = 0;
  int rc = engram_group_list(c->log, topic, &g, &n);
  if (rc != 0) return cli_fail(c, rc, "list groups%s%s", topic ? " of " : "", topic ? topic : "");
  int64_t now = cli_now_ns();
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_arr(&w);
    for (size_t i = 0; i < n; i++) cli_json_group(&w, &g[i], now);
    json_arr_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
  } else {
    struct cli_table *t = cli_table_new(8);
    cli_table_row(t, "TOPIC", "GROUP", "LAG", "IN_FLIGHT", "RETRYING", "DEAD", "ACKED", "FILTERS");
    for (size_t i = 0; i < n; i++) {
      char lag[24], inf[24], rt[24], dead[24], acked[24], filt[256];
      snprintf(lag, sizeof lag, "%" PRIu64, g[i].lag);
      snprintf(inf, sizeof inf, "%" PRIu64, g[i].in_flight);
      snprintf(rt, sizeof rt, "%" PRIu64, g[i].retrying);
      snprintf(dead, sizeof dead, "%" PRIu64, g[i].dead);
      snprintf(acked, sizeof acked, "%" PRIu64, g[i].acked);
      size_t fo = 0;
      filt[0] = '\0';
      for (size_t k = 0; k < g[i].n_filters && k < ENGRAM_MAX_FILTERS && fo < sizeof filt; k++) {
        int m = snprintf(filt + fo, sizeof filt - fo, "%s%.*s", k ? "," : "",
                         (int)sizeof g[i].filters[k] - 1, g[i].filters[k]);
        if (m < 0) break;
        fo += (size_t)m;
      }
      if (!filt[0]) snprintf(filt, sizeof filt, "*");
      char tn[ENGRAM_MAX_NAME + 1], gn[ENGRAM_MAX_NAME + 1];
      snprintf(tn, sizeof tn, "%.*s", (int)sizeof tn - 1, g[i].topic);
      snprintf(gn, sizeof gn, "%.*s", (int)sizeof gn - 1, g[i].name);
      cli_table_row(t, tn, gn, lag, inf, rt, dead, acked, filt);
    }
    status = cli_table_print(t, stdout);
  }
  engram_free(g);
  return status;
}

static void show_group_text(const engram_group_info *g, int64_t now) {
  char buf[64], t[48];
  printf("group:              %.*s\n", (int)sizeof g->name, g->name);
  printf("topic:              %.*s\n", (int)sizeof g->topic, g->topic);
  printf("filters:            ");
  if (g->n_filters == 0) printf("*");
  for (size_t k = 0; k < g->n_filters && k < ENGRAM_MAX_FILTERS; k++)
    printf("%s%.*s", k ? ", " : "", (int)sizeof g->filters[k], g->filters[k]);
  printf("\n");
  cli_fmt_duration_ms(g->ack_wait_ms, buf, sizeof buf);
  printf("ack wait:           %s\n", buf);
  printf("max deliver:        %" PRIu32 "\n", g->max_deliver);
  printf("backoff:            ");
  for (size_t k = 0; k < g->n_backoff && k < ENGRAM_MAX_BACKOFF; k++) {
    cli_fmt_duration_ms(g->backoff_ms[k], buf, sizeof buf);
    printf("%s%s", k ? "," : "", buf);
  }
  if (g->n_backoff == 0) printf("-");
  printf("\n");
  cli_fmt_duration_ms(g->result_ttl_ms, buf, sizeof buf);
  printf("result ttl:         %s\n", buf);
  printf("key ordered:        %s\n", g->flags & ENGRAM_GROUP_KEY_ORDERED ? "yes" : "no");
  cli_fmt_time(g->created_ns, t, sizeof t);
  printf("created:            %s\n", t);
  printf("floor:              %" PRIu64 "\n", g->floor);
  printf("next:               %" PRIu64 "\n", g->next);
  printf("lag:                %" PRIu64 "\n", g->lag);
  printf("in flight:          %" PRIu64 "\n", g->in_flight);
  printf("retrying:           %" PRIu64 "\n", g->retrying);
  printf("dead:               %" PRIu64 "\n", g->dead);
  printf("acked:              %" PRIu64 "\n", g->acked);
  printf("delivered:          %" PRIu64 "\n", g->delivered);
  printf("redelivered:        %" PRIu64 "\n", g->redelivered);
  if (g->oldest_unfinished_ns > 0) {
    cli_fmt_time(g->oldest_unfinished_ns, t, sizeof t);
    cli_fmt_age(now - g->oldest_unfinished_ns, buf, sizeof buf);
    printf("oldest unfinished:  %s (%s ago)\n", t, buf);
  } else {
    printf("oldest unfinished:  -\n");
  }
}

static int group_show(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram group show TOPIC GROUP [--json]\n"
      "\n"
      "Shows the group's settings and counters: floor (every offset up to it is\n"
      "finished), next offset to look at, lag, in flight, retrying, dead, acked,\n"
      "delivered, redelivered and the age of the oldest unfinished event.\n"
      "\n"
      "options:\n"
      "  --json     {\"topic\",\"group\",\"filters\",\"ack_wait_ms\",\"max_deliver\",\n"
      "             \"backoff_ms\",\"result_ttl_ms\",\"key_ordered\",\"created_ns\",\"floor\",\n"
      "             \"next\",\"lag\",\"in_flight\",\"retrying\",\"dead\",\"acked\",\"delivered\",\n"
      "             \"redelivered\",\"oldest_unfinished_ns\",\"oldest_unfinished_age_ms\"}\n"
      "  -h, --help this help\n";
  static const struct cli_opt opts[] = {
      {"--json", 0, 1}, {"-h", 0, CLI_OPT_HELP}, {"--help", 0, CLI_OPT_HELP}, {NULL, 0, 0}};
  struct cli_args a;
  cli_args_init(&a, "group show", argc, argv);
  int o, json = 0;
  while ((o = cli_args_next(&a, opts)) > 0) {
    if (o == CLI_OPT_HELP) return cli_help(h);
    json = 1;
  }
  if (o < 0 || cli_args_count(&a, 2, 2, "TOPIC GROUP")) return CLI_EXIT_USAGE;
  int status = cli_open(c, CLI_OPEN_READ);
  if (status) return status;
  engram_group_info g;
  int rc = engram_group_info_get(c->log, a.pos[0], a.pos[1], &g);
  if (rc != 0) return cli_fail(c, rc, "group %s of %s", a.pos[1], a.pos[0]);
  int64_t now = cli_now_ns();
  if (!json) {
    show_group_text(&g, now);
    return 0;
  }
  json_writer w;
  json_w_init(&w);
  cli_json_group(&w, &g, now);
  status = cli_json_emit(&w);
  json_w_free(&w);
  return status;
}

static int group_delete(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram group delete TOPIC GROUP\n"
      "\n"
      "Deletes the group with its leases, dead-letter queue and results. The topic's\n"
      "events stay.\n";
  struct cli_args a;
  cli_args_init(&a, "group delete", argc, argv);
  int o;
  while ((o = cli_args_next(&a, help_opts)) > 0)
    if (o == CLI_OPT_HELP) return cli_help(h);
  if (o < 0 || cli_args_count(&a, 2, 2, "TOPIC GROUP")) return CLI_EXIT_USAGE;
  int status = cli_open(c, CLI_OPEN_EXISTING);
  if (status) return status;
  int rc = engram_group_delete(c->log, a.pos[0], a.pos[1]);
  if (rc != 0) return cli_fail(c, rc, "delete group %s of %s", a.pos[1], a.pos[0]);
  printf("deleted group %s of topic %s\n", a.pos[1], a.pos[0]);
  return 0;
}

static int group_reset(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram group reset TOPIC GROUP --to OFFSET|@TIME|earliest|latest\n"
      "\n"
      "Replay: moves the group's cursor to OFFSET, to the first event appended at or\n"
      "after @TIME, to the first stored event (earliest) or past the last (latest).\n"
      "Outstanding leases and retries are dropped (their acks then fail as stale); the\n"
      "dead-letter queue is kept.\n"
      "\n"
      "options:\n"
      "  --to WHERE   where to move the cursor (required)\n"
      "  -h, --help   this help\n";
  static const struct cli_opt opts[] = {
      {"--to", 1, 1}, {"-h", 0, CLI_OPT_HELP}, {"--help", 0, CLI_OPT_HELP}, {NULL, 0, 0}};
  struct cli_args a;
  cli_args_init(&a, "group reset", argc, argv);
  int o;
  const char *to = NULL;
  engram_start start = ENGRAM_START_EARLIEST;
  uint64_t off = 0;
  int64_t t = 0;
  while ((o = cli_args_next(&a, opts)) > 0) {
    if (o == CLI_OPT_HELP) return cli_help(h);
    to = a.val;
    const char *e;
    if ((e = cli_parse_start(to, &start, &off, &t)))
      return cli_usage(a.cmd, "--to '%s': %s", to, e);
  }
  if (o < 0 || cli_args_count(&a, 2, 2, "TOPIC GROUP")) return CLI_EXIT_USAGE;
  if (!to) return cli_usage(a.cmd, "missing --to OFFSET|@TIME|earliest|latest");
  int status = cli_open(c, CLI_OPEN_EXISTING);
  if (status) return status;
  int rc = engram_group_reset(c->log, a.pos[0], a.pos[1], start, off, t);
  if (rc != 0) return cli_fail(c, rc, "reset group %s of %s", a.pos[1], a.pos[0]);
  printf("reset group %s of topic %s to %s\n", a.pos[1], a.pos[0], to);
  return 0;
}

int cmd_group(struct cli *c, int argc, char **argv) {
  static const struct cli_sub subs[] = {{"create", group_create}, {"list", group_list},
                                        {"show", group_show},     {"delete", group_delete},
                                        {"reset", group_reset},   {NULL, NULL}};
  return cli_dispatch_sub(c, "group", subs, group_help, argc, argv);
}

/* ---------------------------------------------------------------------------------
 * consume
 * ------------------------------------------------------------------------------ */
static const char consume_help[] =
    "usage: engram consume TOPIC GROUP --consumer NAME [--count N] [--wait D] [--json]\n"
    "                      [--result STR | --nack [--delay D] [--error STR] |\n"
    "                       --reject REASON | --no-ack]\n"
    "\n"
    "Leases up to N events of GROUP to consumer NAME (retries and expired leases first,\n"
    "then new events), and prints and acknowledges them one at a time: an event is\n"
    "acked only once it was written out (on a pipe: read by the reader). When output\n"
    "fails (a closed pipe, a full disk) the rest are not acked: they stay leased and\n"
    "come back after the ack wait, and the command exits 1. Prints nothing and exits 0\n"
    "when there is nothing to deliver.\n"
    "\n"
    "options:\n"
    "  --consumer NAME  this member's name (required)\n"
    "  --count N        fetch at most N events (default 1, at most 100000)\n"
    "  --wait D         when nothing is ready, wait up to D for events (default: no wait,\n"
    "                   at most 1h)\n"
    "  --json           one JSON object per event: the shape of `engram read --json`\n"
    "                   plus \"group\" and \"attempt\"\n"
    "  --result STR     keep STR as each ack's result (see `engram status`)\n"
    "  --nack           instead of acking, ask for redelivery: after --delay D, else\n"
    "                   after the group's backoff step; --error STR is kept as last error\n"
    "  --reject REASON  instead of acking, send the events to the dead-letter queue\n"
    "  --no-ack         leave the events leased; they come back after the ack wait\n"
    "  -h, --help       this help\n"
    "The text form prints offset, time, type, key, attempt=N and the payload's start.\n";

/* How `consume` finishes each event it printed. */
enum { SETTLE_NONE, SETTLE_ACK, SETTLE_NACK, SETTLE_REJECT };

struct settle {
  struct cli *c;
  const char *topic, *group;
  int op;             /* SETTLE_* */
  int64_t delay_ms;   /* nack: < 0 = the group's backoff */
  const char *text;   /* nack error or reject reason */
  const char *result; /* ack result, NULL = none */
  size_t next;        /* the first event of the batch not yet settled */
  size_t failed;      /* settlements refused so far */
  uint64_t first_offset;
  int first_rc; /* code of the first refusal */
};

/* Events written to a regular file are acked in steps of this many, one commit each. */
#define ACK_STEP 256

static const char *settle_verb(int op) {
  return op == SETTLE_NACK ? "nacked" : op == SETTLE_REJECT ? "rejected" : "acked";
}

static void refused(struct settle *s, uint64_t offset, int rc) {
  if (rc != 0 && !s->failed++) {
    s->first_offset = offset;
    s->first_rc = rc;
  }
}

/* Settles the events of b from s->next up to `upto` (excluded): acks in one commit,
 * nacks and rejects one by one. */
static void settle_upto(struct settle *s, const engram_batch *b, size_t upto) {
  if (s->op == SETTLE_ACK && upto > s->next) {
    engram_ack_item items[ACK_STEP] = {{0}};
    int codes[ACK_STEP] = {0};
    size_t n = upto - s->next;
    for (size_t i = 0; i < n; i++) {
      const engram_event *ev = &b->events[s->next + i];
      items[i] =
          (engram_ack_item){ev->offset, ev->attempt, s->result, s->result ? strlen(s->result) : 0};
      codes[i] = 0;
    }
    int rc = engram_ack_many(s->c->log, s->topic, s->group, items, n, codes);
    int any = 0;
    for (size_t i = 0; i < n; i++) {
      any |= codes[i] != 0;
      refused(s, items[i].offset, codes[i]);
    }
    if (rc != 0 && !any) /* the call failed as a whole */
      for (size_t i = 0; i < n; i++) refused(s, items[i].offset, rc);
  }
  for (size_t i = s->next; i < upto && s->op != SETTLE_ACK; i++) {
    const engram_event *ev = &b->events[i];
    if (s->op == SETTLE_NACK)
      refused(s, ev->offset,
              engram_nack(s->c->log, s->topic, s->group, ev->offset, ev->attempt, s->delay_ms,
                          s->text));
    else if (s->op == SETTLE_REJECT)
      refused(s, ev->offset,
              engram_reject(s->c->log, s->topic, s->group, ev->offset, ev->attempt, s->text));
  }
  s->next = upto;
}

/* Whether the reader has taken what was written to stdout. On a pipe, waits until the
 * reader has read it all (1) or closed its end (0), so that `consume | head -1` settles
 * only the event head read, not those the pipe's buffer absorbed. Elsewhere (a file, a
 * terminal) what is written is taken. */
static int output_taken(int fd, int is_pipe) {
  if (!is_pipe) return 1;
  for (int closed = 0;;) {
    int unread = 0;
    if (ioctl(fd, FIONREAD, &unread) != 0 || unread == 0) return 1;
    if (closed) return 0; /* the reader left our bytes unread */
    struct pollfd p = {.fd = fd, .events = 0};
    if (poll(&p, 1, 2) > 0 && (p.revents & (POLLERR | POLLHUP))) closed = 1;
  }
}

int cmd_consume(struct cli *c, int argc, char **argv) {
  enum {
    O_CONSUMER = 1,
    O_COUNT,
    O_WAIT,
    O_JSON,
    O_NACK,
    O_DELAY,
    O_ERROR,
    O_REJECT,
    O_NOACK,
    O_RESULT
  };
  static const struct cli_opt opts[] = {{"--consumer", 1, O_CONSUMER},
                                        {"--count", 1, O_COUNT},
                                        {"--wait", 1, O_WAIT},
                                        {"--json", 0, O_JSON},
                                        {"--nack", 0, O_NACK},
                                        {"--delay", 1, O_DELAY},
                                        {"--error", 1, O_ERROR},
                                        {"--reject", 1, O_REJECT},
                                        {"--no-ack", 0, O_NOACK},
                                        {"--result", 1, O_RESULT},
                                        {"-h", 0, CLI_OPT_HELP},
                                        {"--help", 0, CLI_OPT_HELP},
                                        {NULL, 0, 0}};
  struct cli_args a;
  cli_args_init(&a, "consume", argc, argv);
  const char *consumer = NULL, *error = NULL, *reason = NULL, *result = NULL, *e;
  uint64_t count = 1, wait_ms = 0, delay_ms = 0;
  int json = 0, nack = 0, noack = 0, have_delay = 0, o;
  while ((o = cli_args_next(&a, opts)) > 0) {
    switch (o) {
      case CLI_OPT_HELP:
        return cli_help(consume_help);
      case O_CONSUMER:
        if (!a.val[0]) return cli_usage(a.cmd, "--consumer needs a non-empty name");
        consumer = a.val;
        break;
      case O_COUNT:
        if ((e = cli_parse_u64(a.val, &count)) || (count == 0 && (e = "must be at least 1")) ||
            (count > MAX_CONSUME && (e = "at most 100000")))
          return cli_usage(a.cmd, "--count '%s': %s", a.val, e);
        break;
      case O_WAIT:
        if ((e = cli_parse_duration_ms(a.val, ENGRAM_MAX_FETCH_WAIT_MS, &wait_ms)))
          return cli_usage(a.cmd, "--wait '%s': %s", a.val, e);
        break;
      case O_JSON:
        json = 1;
        break;
      case O_NACK:
        nack = 1;
        break;
      case O_DELAY:
        if ((e = cli_parse_duration_ms(a.val, ENGRAM_MAX_DELAY_MS, &delay_ms)))
          return cli_usage(a.cmd, "--delay '%s': %s", a.val, e);
        have_delay = 1;
        break;
      case O_ERROR:
        error = a.val;
        break;
      case O_REJECT:
        if (!a.val[0]) return cli_usage(a.cmd, "--reject needs a non-empty reason");
        reason = a.val;
        break;
      case O_NOACK:
        noack = 1;
        break;
      case O_RESULT:
        result = a.val;
        break;
    }
  }
  if (o < 0 || cli_args_count(&a, 2, 2, "TOPIC GROUP")) return CLI_EXIT_USAGE;
  if (!consumer) return cli_usage(a.cmd, "missing --consumer NAME");
  if (nack + noack + (reason != NULL) > 1)
    return cli_usage(a.cmd, "--nack, --reject and --no-ack exclude each other");
  if ((have_delay || error) && !nack)
    return cli_usage(a.cmd, "%s applies only with --nack", have_delay ? "--delay" : "--error");
  if (result && (nack || noack || reason))
    return cli_usage(a.cmd, "--result applies only when the events are acked");
  const char *topic = a.pos[0], *group = a.pos[1];
  int status = cli_open(c, CLI_OPEN_EXISTING);
  if (status) return status;

  /* A reader that goes away (`| head -1`) must make writes fail with EPIPE, not kill the
   * command before it can tell which events were delivered. */
  signal(SIGPIPE, SIG_IGN);
  engram_batch *b = NULL;
  int rc = engram_fetch(c->log, topic, group, consumer, (size_t)count, wait_ms, &b);
  if (rc != 0) return cli_fail(c, rc, "consume %s %s", topic, group);
  if (!b) return 0; /* nothing delivered */
  const int op = noack ? SETTLE_NONE : nack ? SETTLE_NACK : reason ? SETTLE_REJECT : SETTLE_ACK;
  struct stat st;
  const int have_st = fstat(STDOUT_FILENO, &st) == 0;
  const int to_pipe = have_st && S_ISFIFO(st.st_mode);
  /* A regular file holds what was written: acks can share commits. Anything else (a
   * pipe, a terminal, a socket) settles each event as soon as it is out. */
  const size_t step = have_st && S_ISREG(st.st_mode) ? ACK_STEP : 1;
  struct settle s = {.c = c,
                     .topic = topic,
                     .group = group,
                     .op = op,
                     .delay_ms = have_delay ? (int64_t)delay_ms : -1,
                     .text = nack ? error : reason,
                     .result = result};
  json_writer w;
  json_w_init(&w);
  /* One event at a time: written, flushed, taken by the reader, and only then settled
   * (in steps of `step`). What is not written stays leased and comes back after the ack
   * wait. */
  size_t done = 0;
  int out_errno = 0;
  for (; done < b->count; done++) {
    const engram_event *ev = &b->events[done];
    if (json) {
      cli_json_event(&w, ev, topic, group);
      if ((status = cli_json_emit(&w))) break;
    } else {
      cli_text_event(stdout, ev, 1);
    }
    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout)) {
      out_errno = errno ? errno : EIO;
      break;
    }
    if (!output_taken(STDOUT_FILENO, to_pipe)) {
      out_errno = EPIPE;
      break;
    }
    if (done + 1 - s.next >= step) settle_upto(&s, b, done + 1);
  }
  settle_upto(&s, b, done); /* what was written before the end or the failure */
  json_w_free(&w);
  if (out_errno) {
    /* Nothing more can be written: forget what stdio still holds so that the exit does
     * not report the same failure again. */
    __fpurge(stdout);
    clearerr(stdout);
    size_t left = b->count - done;
    if (op == SETTLE_NONE)
      status = cli_error("consume %s %s: output failed after %zu of %zu events (%s)", topic, group,
                         done, b->count, strerror(out_errno));
    else
      status = cli_error(
          "consume %s %s: output failed after %zu of %zu events (%s); the other %zu "
          "%s not %s and will be delivered again after the ack wait",
          topic, group, done, b->count, strerror(out_errno), left, left == 1 ? "was" : "were",
          settle_verb(op));
  }
  if (s.failed && !status)
    status = cli_error("consume %s %s: %zu of %zu %s failed; offset %" PRIu64 ": %s", topic, group,
                       s.failed, done,
                       op == SETTLE_NACK     ? "nacks"
                       : op == SETTLE_REJECT ? "rejects"
                                             : "acks",
                       s.first_offset, cli_errtext(c, s.first_rc));
  engram_batch_free(b);
  return status;
}

/* ---------------------------------------------------------------------------------
 * ack, nack, reject, cancel
 * ------------------------------------------------------------------------------ */
int cmd_ack(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram ack TOPIC GROUP OFFSET [--attempt N] [--result STR]\n"
      "\n"
      "Finishes the event at OFFSET for GROUP. Acks are idempotent: acking a finished\n"
      "event says so and exits 0.\n"
      "\n"
      "options:\n"
      "  --attempt N   the attempt as fetched; refused as stale when the event was\n"
      "                delivered again since (default 0: do not check)\n"
      "  --result STR  keep STR as the event's result (see `engram status`)\n"
      "  -h, --help    this help\n";
  enum { O_ATTEMPT = 1, O_RESULT };
  static const struct cli_opt opts[] = {{"--attempt", 1, O_ATTEMPT},
                                        {"--result", 1, O_RESULT},
                                        {"-h", 0, CLI_OPT_HELP},
                                        {"--help", 0, CLI_OPT_HELP},
                                        {NULL, 0, 0}};
  struct cli_args a;
  cli_args_init(&a, "ack", argc, argv);
  uint32_t attempt = 0;
  const char *result = NULL;
  uint64_t off;
  int o;
  while ((o = cli_args_next(&a, opts)) > 0) {
    const char *e;
    if (o == CLI_OPT_HELP) return cli_help(h);
    if (o == O_ATTEMPT && (e = cli_parse_u32(a.val, &attempt)))
      return cli_usage(a.cmd, "--attempt '%s': %s", a.val, e);
    if (o == O_RESULT) result = a.val;
  }
  if (o < 0) return CLI_EXIT_USAGE;
  int status = topic_group_offset(&a, &off);
  if (status) return status;
  if ((status = cli_open(c, CLI_OPEN_EXISTING))) return status;
  int rc =
      engram_ack(c->log, a.pos[0], a.pos[1], off, attempt, result, result ? strlen(result) : 0);
  if (rc == ENGRAM_EALREADY) {
    printf("offset %" PRIu64 " was already finished for group %s\n", off, a.pos[1]);
    return 0;
  }
  if (rc != 0) return cli_fail(c, rc, "ack %s %s offset %" PRIu64, a.pos[0], a.pos[1], off);
  printf("acked offset %" PRIu64 "\n", off);
  return 0;
}

int cmd_nack(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram nack TOPIC GROUP OFFSET [--attempt N] [--delay D] [--error STR]\n"
      "\n"
      "Asks for the event at OFFSET to be delivered again. Past the group's max-deliver\n"
      "attempts it goes to the dead-letter queue instead.\n"
      "\n"
      "options:\n"
      "  --attempt N  the attempt as fetched (default 0: do not check)\n"
      "  --delay D    redeliver after D (default: the group's backoff step; at most 30d)\n"
      "  --error STR  kept as the event's last error\n"
      "  -h, --help   this help\n";
  enum { O_ATTEMPT = 1, O_DELAY, O_ERROR };
  static const struct cli_opt opts[] = {{"--attempt", 1, O_ATTEMPT}, {"--delay", 1, O_DELAY},
                                        {"--error", 1, O_ERROR},     {"-h", 0, CLI_OPT_HELP},
                                        {"--help", 0, CLI_OPT_HELP}, {NULL, 0, 0}};
  struct cli_args a;
  cli_args_init(&a, "nack", argc, argv);
  uint32_t attempt = 0;
  const char *error = NULL, *e;
  uint64_t off, delay_ms = 0;
  int o, have_delay = 0;
  while ((o = cli_args_next(&a, opts)) > 0) {
    switch (o) {
      case CLI_OPT_HELP:
        return cli_help(h);
      case O_ATTEMPT:
        if ((e = cli_parse_u32(a.val, &attempt)))
          return cli_usage(a.cmd, "--attempt '%s': %s", a.val, e);
        break;
      case O_DELAY:
        if ((e = cli_parse_duration_ms(a.val, ENGRAM_MAX_DELAY_MS, &delay_ms)))
          return cli_usage(a.cmd, "--delay '%s': %s", a.val, e);
        have_delay = 1;
        break;
      case O_ERROR:
        error = a.val;
        break;
    }
  }
  if (o < 0) return CLI_EXIT_USAGE;
  int status = topic_group_offset(&a, &off);
  if (status) return status;
  if ((status = cli_open(c, CLI_OPEN_EXISTING))) return status;
  int rc = engram_nack(c->log, a.pos[0], a.pos[1], off, attempt,
                       have_delay ? (int64_t)delay_ms : -1, error);
  if (rc != 0) return cli_fail(c, rc, "nack %s %s offset %" PRIu64, a.pos[0], a.pos[1], off);
  printf("nacked offset %" PRIu64 "\n", off);
  return 0;
}

int cmd_reject(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram reject TOPIC GROUP OFFSET --reason STR [--attempt N]\n"
      "\n"
      "Sends the event at OFFSET to the group's dead-letter queue at once.\n"
      "\n"
      "options:\n"
      "  --reason STR  why (required); listed by `engram dlq list`\n"
      "  --attempt N   the attempt as fetched (default 0: do not check)\n"
      "  -h, --help    this help\n";
  enum { O_ATTEMPT = 1, O_REASON };
  static const struct cli_opt opts[] = {{"--attempt", 1, O_ATTEMPT},
                                        {"--reason", 1, O_REASON},
                                        {"-h", 0, CLI_OPT_HELP},
                                        {"--help", 0, CLI_OPT_HELP},
                                        {NULL, 0, 0}};
  struct cli_args a;
  cli_args_init(&a, "reject", argc, argv);
  uint32_t attempt = 0;
  const char *reason = NULL;
  uint64_t off;
  int o;
  while ((o = cli_args_next(&a, opts)) > 0) {
    const char *e;
    if (o == CLI_OPT_HELP) return cli_help(h);
    if (o == O_ATTEMPT && (e = cli_parse_u32(a.val, &attempt)))
      return cli_usage(a.cmd, "--attempt '%s': %s", a.val, e);
    if (o == O_REASON) {
      if (!a.val[0]) return cli_usage(a.cmd, "--reason must not be empty");
      reason = a.val;
    }
  }
  if (o < 0) return CLI_EXIT_USAGE;
  int status = topic_group_offset(&a, &off);
  if (status) return status;
  if (!reason) return cli_usage(a.cmd, "missing --reason STR");
  if ((status = cli_open(c, CLI_OPEN_EXISTING))) return status;
  int rc = engram_reject(c->log, a.pos[0], a.pos[1], off, attempt, reason);
  if (rc != 0) return cli_fail(c, rc, "reject %s %s offset %" PRIu64, a.pos[0], a.pos[1], off);
  printf("rejected offset %" PRIu64 "\n", off);
  return 0;
}

int cmd_cancel(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram cancel TOPIC GROUP OFFSET\n"
      "\n"
      "Marks a pending or retrying event finished for GROUP without delivering it.\n"
      "Fails when the event is in flight, already finished or dead.\n";
  struct cli_args a;
  cli_args_init(&a, "cancel", argc, argv);
  uint64_t off;
  int o;
  while ((o = cli_args_next(&a, help_opts)) > 0)
    if (o == CLI_OPT_HELP) return cli_help(h);
  if (o < 0) return CLI_EXIT_USAGE;
  int status = topic_group_offset(&a, &off);
  if (status) return status;
  if ((status = cli_open(c, CLI_OPEN_EXISTING))) return status;
  int rc = engram_cancel(c->log, a.pos[0], a.pos[1], off);
  if (rc != 0) return cli_fail(c, rc, "cancel %s %s offset %" PRIu64, a.pos[0], a.pos[1], off);
  printf("cancelled offset %" PRIu64 "\n", off);
  return 0;
}

/* ---------------------------------------------------------------------------------
 * status
 * ------------------------------------------------------------------------------ */
int cmd_status(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram status TOPIC GROUP OFFSET [--json]\n"
      "\n"
      "Shows the state of the event at OFFSET in GROUP: pending, in_flight (with its\n"
      "consumer and lease deadline), retrying (with when it is due), done, dead or\n"
      "skipped (not matching the filters); its attempts, last error and the result\n"
      "kept with its ack.\n"
      "\n"
      "options:\n"
      "  --json     {\"topic\",\"group\",\"offset\",\"state\",\"consumer\",\"attempt\",\n"
      "             \"deadline_ns\",\"last_error\",\"result\"} (null when not set); a result\n"
      "             that is not UTF-8 comes as \"result_base64\"\n"
      "  -h, --help this help\n";
  static const struct cli_opt opts[] = {
      {"--json", 0, 1}, {"-h", 0, CLI_OPT_HELP}, {"--help", 0, CLI_OPT_HELP}, {NULL, 0, 0}};
  struct cli_args a;
  cli_args_init(&a, "status", argc, argv);
  uint64_t off;
  int o, json = 0;
  while ((o = cli_args_next(&a, opts)) > 0) {
    if (o == CLI_OPT_HELP) return cli_help(h);
    json = 1;
  }
  if (o < 0) return CLI_EXIT_USAGE;
  int status = topic_group_offset(&a, &off);
  if (status) return status;
  if ((status = cli_open(c, CLI_OPEN_READ))) return status;
  engram_status st;
  memset(&st, 0, sizeof st);
  int rc = engram_status_get(c->log, a.pos[0], a.pos[1], off, &st);
  if (rc != 0) return cli_fail(c, rc, "status %s %s offset %" PRIu64, a.pos[0], a.pos[1], off);
  const char *state = engram_state_name(st.state);
  size_t cl = strnlen(st.consumer, sizeof st.consumer);
  size_t el = strnlen(st.last_error, sizeof st.last_error);
  int result_text = st.result && json_utf8_valid(st.result, st.result_len);
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_obj(&w);
    json_kstr(&w, "topic", a.pos[0]);
    json_kstr(&w, "group", a.pos[1]);
    json_ku64(&w, "offset", off);
    json_kstr(&w, "state", state);
    json_key(&w, "consumer");
    if (cl && st.state == ENGRAM_STATE_IN_FLIGHT)
      json_strn(&w, st.consumer, cl);
    else
      json_null(&w);
    json_ku64(&w, "attempt", st.attempt);
    json_key(&w, "deadline_ns");
    if (st.deadline_ns)
      json_i64(&w, st.deadline_ns);
    else
      json_null(&w);
    json_key(&w, "last_error");
    if (el)
      json_strn(&w, st.last_error, el);
    else
      json_null(&w);
    if (st.result && !result_text) {
      json_key(&w, "result_base64");
      json_b64(&w, st.result, st.result_len);
    } else {
      json_key(&w, "result");
      if (st.result)
        json_strn(&w, st.result, st.result_len);
      else
        json_null(&w);
    }
    json_obj_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
  } else {
    printf("state:       %s\n", state);
    if (cl && st.state == ENGRAM_STATE_IN_FLIGHT) {
      fputs("consumer:    ", stdout);
      cli_put_text(stdout, st.consumer, cl, 0);
      fputc('\n', stdout);
    }
    printf("attempt:     %" PRIu32 "\n", st.attempt);
    if (st.deadline_ns) {
      char t[48], age[32];
      int64_t now = cli_now_ns();
      cli_fmt_time(st.deadline_ns, t, sizeof t);
      const char *label = st.state == ENGRAM_STATE_IN_FLIGHT ? "deadline:" : "due:";
      if (st.deadline_ns >= now) {
        cli_fmt_age(st.deadline_ns - now, age, sizeof age);
        printf("%-13s%s (in %s)\n", label, t, age);
      } else {
        cli_fmt_age(now - st.deadline_ns, age, sizeof age);
        printf("%-13s%s (%s ago)\n", label, t, age);
      }
    }
    if (el) { /* the worker's words: escaped, never raw */
      fputs("last error:  ", stdout);
      cli_put_text(stdout, st.last_error, el, 0);
      fputc('\n', stdout);
    }
    if (st.result) {
      if (result_text) {
        fputs("result:      ", stdout);
        cli_put_text(stdout, st.result, st.result_len, 0);
        fputc('\n', stdout);
      } else
        printf("result:      <%zu bytes, not UTF-8; see --json>\n", st.result_len);
    }
  }
  engram_free(st.result);
  return status;
}
