/* cmd_dlq.c — `engram dlq`: list, show, purge and redrive a group's dead-letter queue. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char dlq_help[] =
    "usage: engram dlq list TOPIC GROUP [--json]\n"
    "       engram dlq show TOPIC GROUP OFFSET [--json]\n"
    "       engram dlq purge TOPIC GROUP [OFFSET...]\n"
    "       engram dlq redrive TOPIC GROUP [OFFSET...]\n"
    "\n"
    "The dead-letter queue holds a group's events that were rejected or ran out of\n"
    "attempts. `engram dlq SUBCOMMAND --help` describes each one.\n";

static int dlq_list(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram dlq list TOPIC GROUP [--json]\n"
      "\n"
      "Lists the group's dead-letter entries in offset order: offset, attempts, when it\n"
      "died, reason, last error and last consumer.\n"
      "\n"
      "options:\n"
      "  --json     a JSON array of {\"offset\",\"attempts\",\"reason\",\"last_error\",\n"
      "             \"consumer\",\"first_delivered_ns\",\"dead_ns\"}\n"
      "  -h, --help this help\n";
  int json = 0;
  struct cli_args a;
  int status = cli_args_json(&a, "dlq list", argc, argv, h, 2, 2, "TOPIC GROUP", &json);
  if (status != CLI_GO) return status;
  if ((status = cli_open(c, CLI_OPEN_READ))) return status;
  engram_dlq_entry *e = NULL;
  size_t n = 0;
  int rc = engram_dlq_list(c->log, a.pos[0], a.pos[1], 0, 0, &e, &n);
  if (rc != 0) return cli_fail(c, rc, "dlq list %s %s", a.pos[0], a.pos[1]);
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_arr(&w);
    for (size_t i = 0; i < n; i++) {
      json_obj(&w);
      cli_json_dlq_entry(&w, &e[i]);
      json_obj_end(&w);
    }
    json_arr_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
  } else {
    struct cli_table *t = cli_table_new(6);
    cli_table_row(t, "OFFSET", "ATTEMPTS", "DEAD_AT", "REASON", "LAST_ERROR", "CONSUMER");
    for (size_t i = 0; i < n; i++) {
      char off[24], att[16], dead[48];
      char reason[4 * sizeof e[i].reason], lerr[4 * sizeof e[i].last_error],
          cons[4 * sizeof e[i].consumer];
      snprintf(off, sizeof off, "%" PRIu64, e[i].offset);
      snprintf(att, sizeof att, "%" PRIu32, e[i].attempts);
      cli_fmt_time(e[i].dead_ns, dead, sizeof dead);
      /* Reasons and errors are the workers' words: escaped, never raw. */
      cli_escape(reason, sizeof reason, e[i].reason, strnlen(e[i].reason, sizeof e[i].reason));
      cli_escape(lerr, sizeof lerr, e[i].last_error,
                 strnlen(e[i].last_error, sizeof e[i].last_error));
      cli_escape(cons, sizeof cons, e[i].consumer, strnlen(e[i].consumer, sizeof e[i].consumer));
      cli_table_row(t, off, att, dead, reason[0] ? reason : "-", lerr[0] ? lerr : "-",
                    cons[0] ? cons : "-");
    }
    status = cli_table_print(t, stdout);
  }
  engram_free(e);
  return status;
}

static int dlq_show(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram dlq show TOPIC GROUP OFFSET [--json]\n"
      "\n"
      "Shows one dead-letter entry and the event itself.\n"
      "\n"
      "options:\n"
      "  --json     the entry's fields (as in `dlq list --json`) plus \"event\": the event\n"
      "             as `engram read --json` prints it, or null when it is no longer stored\n"
      "  -h, --help this help\n";
  int json = 0;
  struct cli_args a;
  int status = cli_args_json(&a, "dlq show", argc, argv, h, 3, 3, "TOPIC GROUP OFFSET", &json);
  if (status != CLI_GO) return status;
  uint64_t off;
  if ((status = cli_args_offset(&a, 2, &off))) return status;
  const char *topic = a.pos[0], *group = a.pos[1];
  if ((status = cli_open(c, CLI_OPEN_READ))) return status;
  engram_dlq_entry *e = NULL;
  size_t n = 0;
  int rc = engram_dlq_list(c->log, topic, group, off, 1, &e, &n);
  if (rc != 0) return cli_fail(c, rc, "dlq show %s %s", topic, group);
  if (n == 0 || e[0].offset != off) {
    engram_free(e);
    return cli_error("dlq show %s %s: offset %" PRIu64 " is not in the dead-letter queue", topic,
                     group, off);
  }
  engram_batch *b = NULL;
  rc = engram_read(c->log, topic, off, &b);
  if (rc != 0 && rc != ENGRAM_ENOTFOUND) {
    engram_free(e);
    return cli_fail(c, rc, "read %s offset %" PRIu64, topic, off);
  }
  if (rc == ENGRAM_ENOTFOUND) cli_forget_error(c);
  const engram_event *ev = b && b->count ? &b->events[0] : NULL;
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_obj(&w);
    json_kstr(&w, "topic", topic);
    json_kstr(&w, "group", group);
    cli_json_dlq_entry(&w, &e[0]);
    json_key(&w, "event");
    if (ev)
      cli_json_event(&w, ev, topic, NULL);
    else
      json_null(&w);
    json_obj_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
  } else {
    char t[48];
    printf("offset:           %" PRIu64 "\n", e[0].offset);
    printf("attempts:         %" PRIu32 "\n", e[0].attempts);
    /* Reasons and errors are the workers' words: escaped, never raw. */
    fputs("reason:           ", stdout);
    cli_put_text(stdout, e[0].reason, strnlen(e[0].reason, sizeof e[0].reason), 0);
    fputc('\n', stdout);
    if (e[0].last_error[0]) {
      fputs("last error:       ", stdout);
      cli_put_text(stdout, e[0].last_error, strnlen(e[0].last_error, sizeof e[0].last_error), 0);
      fputc('\n', stdout);
    }
    if (e[0].consumer[0]) {
      fputs("last consumer:    ", stdout);
      cli_put_text(stdout, e[0].consumer, strnlen(e[0].consumer, sizeof e[0].consumer), 0);
      fputc('\n', stdout);
    }
    cli_fmt_time(e[0].first_delivered_ns, t, sizeof t);
    printf("first delivered:  %s\n", t);
    cli_fmt_time(e[0].dead_ns, t, sizeof t);
    printf("dead since:       %s\n", t);
    if (!ev) {
      printf("event:            no longer stored\n");
    } else {
      printf("event:            ");
      cli_text_event(stdout, ev, 0);
      if (ev->content_type && ev->content_type[0]) {
        fputs("content type:     ", stdout);
        cli_put_text(stdout, ev->content_type, strlen(ev->content_type), 0);
        fputc('\n', stdout);
      }
      for (size_t i = 0; i < ev->n_headers; i++) {
        const char *v = ev->headers[i].value ? ev->headers[i].value : "";
        fputs("header:           ", stdout);
        cli_put_text(stdout, ev->headers[i].name, strlen(ev->headers[i].name), 0);
        fputc('=', stdout);
        cli_put_text(stdout, v, strlen(v), 0);
        fputc('\n', stdout);
      }
      if (ev->payload_len && json_utf8_valid(ev->payload, ev->payload_len)) {
        printf("payload:\n");
        cli_put_text(stdout, ev->payload, ev->payload_len, CLI_ESC_LINES);
        printf("\n");
      }
    }
  }
  engram_batch_free(b);
  engram_free(e);
  return status;
}

/* purge and redrive: the same shape, a different verb. */
static int dlq_apply(struct cli *c, int argc, char **argv, int redrive) {
  static const char purge_h[] =
      "usage: engram dlq purge TOPIC GROUP [OFFSET...] [--json]\n"
      "\n"
      "Removes the given entries from the dead-letter queue, or every entry when no\n"
      "OFFSET is given, and prints how many were removed. The events stay in the topic.\n"
      "\n"
      "options:\n"
      "  --json      print {\"ok\":true,\"action\",\"topic\",\"group\",\"count\"}\n";
  static const char redrive_h[] =
      "usage: engram dlq redrive TOPIC GROUP [OFFSET...] [--json]\n"
      "\n"
      "Delivers the given dead-letter entries again, or every entry when no OFFSET is\n"
      "given, to this group only and with fresh attempt counts; prints how many.\n"
      "\n"
      "options:\n"
      "  --json      print {\"ok\":true,\"action\",\"topic\",\"group\",\"count\"}\n";
  int json = 0;
  struct cli_args a;
  int r = cli_args_json(&a, redrive ? "dlq redrive" : "dlq purge", argc, argv,
                        redrive ? redrive_h : purge_h, 2, -1, "TOPIC GROUP [OFFSET...]", &json);
  if (r != CLI_GO) return r;
  size_t n = (size_t)a.npos - 2;
  uint64_t *offs = NULL;
  if (n) {
    offs = calloc(n, sizeof *offs);
    if (!offs) return cli_error("%s: out of memory", a.cmd);
    for (size_t i = 0; i < n; i++) {
      const char *e = cli_parse_offset(a.pos[2 + i], &offs[i]);
      if (e) {
        free(offs);
        return cli_usage(a.cmd, "OFFSET '%s': %s", a.pos[2 + i], e);
      }
    }
  }
  int status = cli_open(c, CLI_OPEN_EXISTING);
  if (status) {
    free(offs);
    return status;
  }
  size_t count = 0;
  int rc = redrive ? engram_dlq_redrive(c->log, a.pos[0], a.pos[1], offs, n, &count)
                   : engram_dlq_purge(c->log, a.pos[0], a.pos[1], offs, n, &count);
  free(offs);
  if (rc != 0) return cli_fail(c, rc, "%s %s %s", a.cmd, a.pos[0], a.pos[1]);
  char text[64];
  snprintf(text, sizeof text, "%s %zu entr%s", redrive ? "redrove" : "purged", count,
           count == 1 ? "y" : "ies");
  struct cli_done d = {a.cmd, a.pos[0], a.pos[1], 0, 0, (int64_t)count};
  return cli_done(json, &d, text);
}

static int dlq_purge(struct cli *c, int argc, char **argv) { return dlq_apply(c, argc, argv, 0); }
static int dlq_redrive(struct cli *c, int argc, char **argv) { return dlq_apply(c, argc, argv, 1); }

int cmd_dlq(struct cli *c, int argc, char **argv) {
  static const struct cli_sub subs[] = {{"list", dlq_list},
                                        {"show", dlq_show},
                                        {"purge", dlq_purge},
                                        {"redrive", dlq_redrive},
                                        {NULL, NULL}};
  return cli_dispatch_sub(c, "dlq", subs, dlq_help, argc, argv);
}
