/* cmd_settle.c — settling one event of a group by hand: ack, nack, reject, cancel, and
 * `status`, the event's state in the group. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* ---------------------------------------------------------------------------------
 * ack, nack, reject, cancel: one body, each command its help and options.
 * ------------------------------------------------------------------------------ */
enum verb { ACK, NACK, REJECT, CANCEL };

/* A settling command and the option values its table fills. */
struct settle {
  enum verb verb;
  const char *cmd, *done; /* "ack", and "acked" for the line it prints */
  uint32_t attempt;       /* --attempt, 0 = do not check */
  const char *result;     /* ack --result */
  uint64_t delay_ms;      /* nack --delay, when given */
  const char *error;      /* nack --error */
  const char *reason;     /* reject --reason (required) */
  int json;
};

static int settle(struct cli *c, int argc, char **argv, const char *help,
                  const struct cli_opt *opts, struct settle *s) {
  struct cli_args a;
  cli_args_init(&a, s->cmd, argc, argv);
  int status = cli_args_parse(&a, opts, help, 3, 3, "TOPIC GROUP OFFSET");
  if (status != CLI_GO) return status;
  uint64_t off;
  if ((status = cli_args_offset(&a, 2, &off))) return status;
  if (s->verb == REJECT && !s->reason) return cli_usage(a.cmd, "missing --reason STR");
  if ((status = cli_open(c, CLI_OPEN_EXISTING))) return status;
  const char *topic = a.pos[0], *group = a.pos[1];
  int rc;
  switch (s->verb) {
    case ACK:
      rc = engram_ack(c->log, topic, group, off, s->attempt, s->result,
                      s->result ? strlen(s->result) : 0);
      break;
    case NACK:
      rc = engram_nack(c->log, topic, group, off, s->attempt,
                       cli_args_given(&a, "--delay") ? (int64_t)s->delay_ms : -1, s->error);
      break;
    case REJECT:
      rc = engram_reject(c->log, topic, group, off, s->attempt, s->reason);
      break;
    default:
      rc = engram_cancel(c->log, topic, group, off);
      break;
  }
  char text[ENGRAM_MAX_NAME + 96];
  struct cli_done d = {s->cmd, topic, group, off, 1, -1};
  if (s->verb == ACK && rc == ENGRAM_EALREADY) { /* acks are idempotent: not an error */
    snprintf(text, sizeof text, "offset %" PRIu64 " was already finished for group %s", off, group);
    d.action = "ack (already finished)";
    return cli_done(s->json, &d, text);
  }
  if (rc != 0) return cli_fail(c, rc, "%s %s %s offset %" PRIu64, s->cmd, topic, group, off);
  snprintf(text, sizeof text, "%s offset %" PRIu64, s->done, off);
  return cli_done(s->json, &d, text);
}

int cmd_ack(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram ack TOPIC GROUP OFFSET [--attempt N] [--result STR] [--json]\n"
      "\n"
      "Finishes the event at OFFSET for GROUP. Acks are idempotent: acking a finished\n"
      "event says so and exits 0.\n"
      "\n"
      "options:\n"
      "  --attempt N   the attempt as fetched; refused as stale when the event was\n"
      "                delivered again since (default 0: do not check)\n"
      "  --result STR  keep STR as the event's result (see `engram status`)\n" CLI_JSON_DONE_HELP
      "  -h, --help    this help\n";
  struct settle s = {.verb = ACK, .cmd = "ack", .done = "acked"};
  const struct cli_opt opts[] = {CLI_OPT_U32("--attempt", &s.attempt),
                                 CLI_OPT_STR("--result", &s.result),
                                 CLI_OPT_FLAG("--json", &s.json), CLI_OPT_END};
  return settle(c, argc, argv, h, opts, &s);
}

int cmd_nack(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram nack TOPIC GROUP OFFSET [--attempt N] [--delay D] [--error STR] [--json]\n"
      "\n"
      "Asks for the event at OFFSET to be delivered again. Past the group's max-deliver\n"
      "attempts it goes to the dead-letter queue instead.\n"
      "\n"
      "options:\n"
      "  --attempt N  the attempt as fetched (default 0: do not check)\n"
      "  --delay D    redeliver after D (default: the group's backoff step; at most 30d)\n"
      "  --error STR  kept as the event's last error\n" CLI_JSON_DONE_HELP
      "  -h, --help   this help\n";
  struct settle s = {.verb = NACK, .cmd = "nack", .done = "nacked"};
  const struct cli_opt opts[] = {
      CLI_OPT_U32("--attempt", &s.attempt),
      CLI_OPT_DURATION("--delay", &s.delay_ms, .max = ENGRAM_MAX_DELAY_MS),
      CLI_OPT_STR("--error", &s.error), CLI_OPT_FLAG("--json", &s.json), CLI_OPT_END};
  return settle(c, argc, argv, h, opts, &s);
}

int cmd_reject(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram reject TOPIC GROUP OFFSET --reason STR [--attempt N] [--json]\n"
      "\n"
      "Sends the event at OFFSET to the group's dead-letter queue at once.\n"
      "\n"
      "options:\n"
      "  --reason STR  why (required); listed by `engram dlq list`\n"
      "  --attempt N   the attempt as fetched (default 0: do not check)\n" CLI_JSON_DONE_HELP
      "  -h, --help    this help\n";
  struct settle s = {.verb = REJECT, .cmd = "reject", .done = "rejected"};
  const struct cli_opt opts[] = {CLI_OPT_U32("--attempt", &s.attempt),
                                 CLI_OPT_TEXT("--reason", &s.reason, .what = "must not be empty"),
                                 CLI_OPT_FLAG("--json", &s.json), CLI_OPT_END};
  return settle(c, argc, argv, h, opts, &s);
}

int cmd_cancel(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram cancel TOPIC GROUP OFFSET [--json]\n"
      "\n"
      "Marks a pending or retrying event finished for GROUP without delivering it.\n"
      "Fails when the event is in flight, already finished or dead.\n"
      "\n"
      "options:\n" CLI_JSON_DONE_HELP;
  struct settle s = {.verb = CANCEL, .cmd = "cancel", .done = "cancelled"};
  const struct cli_opt opts[] = {CLI_OPT_FLAG("--json", &s.json), CLI_OPT_END};
  return settle(c, argc, argv, h, opts, &s);
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
  int json = 0;
  struct cli_args a;
  int status = cli_args_json(&a, "status", argc, argv, h, 3, 3, "TOPIC GROUP OFFSET", &json);
  if (status != CLI_GO) return status;
  uint64_t off;
  if ((status = cli_args_offset(&a, 2, &off))) return status;
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
