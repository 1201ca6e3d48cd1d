/* cmd_schedule.c — `engram schedule`: add, list, show, remove, pause, resume and run-now
 * the log's schedules (periodic appends, fired by `engram serve` or the embedded process
 * holding the maintenance lease). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char help[] =
    "usage: engram schedule add NAME (--every DURATION | --cron \"M H DOM MON DOW\"\n"
    "                               [--tz ZONE]) --topic TOPIC --type TYPE\n"
    "                               [--payload TEXT | --payload-file FILE] [--key KEY]\n"
    "                               [--content-type CT] [--header NAME=VALUE]...\n"
    "                               [--missed skip|once|all] [--max-catchup N] [--json]\n"
    "       engram schedule list [--json]\n"
    "       engram schedule show NAME [--json]\n"
    "       engram schedule remove NAME [--json]\n"
    "       engram schedule pause NAME [--json]\n"
    "       engram schedule resume NAME [--json]\n"
    "       engram schedule run-now NAME [--json]\n"
    "\n"
    "Schedules append an event to a topic at every slot of an interval or a cron\n"
    "expression; they live in the log and are fired by `engram serve` or, with no daemon,\n"
    "by the process holding the log's maintenance lease. Each slot fires exactly once:\n"
    "its append carries the idempotency key NAME@SLOT (SLOT = the scheduled time in\n"
    "RFC 3339 UTC) and is committed with the schedule's state.\n"
    "\n"
    "add options:\n"
    "  --every DURATION     an interval (\"5m\", \"1h\", at least 1s); slots fall on\n"
    "                       multiples of it since 1970-01-01 UTC (:00, :05, :10 ...)\n"
    "  --cron EXPR          5 fields: minute hour day-of-month month day-of-week, each *,\n"
    "                       a value, a range a-b, a list a,b and a step */n or a-b/n;\n"
    "                       JAN-DEC, SUN-SAT (0 and 7 are Sunday); when both day fields\n"
    "                       are restricted, either matches\n"
    "  --tz ZONE            the IANA zone of --cron (default UTC): a local time skipped\n"
    "                       by a DST change fires at the end of the gap, one that occurs\n"
    "                       twice fires once\n"
    "  --topic TOPIC        where each fire appends (it must exist when it fires)\n"
    "  --type TYPE          the event type\n"
    "  --payload TEXT       the event payload (default empty)\n"
    "  --payload-file FILE  the payload read from FILE (at most 1 MiB)\n"
    "  --key KEY            the event key\n"
    "  --content-type CT    the event content type\n"
    "  --header NAME=VALUE  an event header; repeatable (names engram-* are reserved)\n"
    "  --missed POLICY      slots missed while nothing ran (more than 30 s late):\n"
    "                       skip = none, once = the newest (default), all = each, the\n"
    "                       newest --max-catchup of them\n"
    "  --max-catchup N      most missed slots --missed all fires (default 100)\n"
    "\n"
    "  --json               add, remove, pause, resume, run-now: {\"ok\":true,...};\n"
    "                       list, show: the schedules as JSON ({\"name\",\"every_ms\",\n"
    "                       \"cron\",\"tz\",\"topic\",\"type\",\"missed\",\"paused\",\"fires\",\n"
    "                       \"last_slot_ns\",\"next_slot_ns\",...})\n"
    "  -h, --help           this help\n"
    "\n"
    "A bad cron expression, an unknown zone, a bad name, or both or neither of --every\n"
    "and --cron exit with status 2 and one line naming the problem.\n";

static const char *const missed_names[] = {"once", "skip", "all", NULL}; /* engram_missed */

static const char *missed_name(engram_missed m) {
  return (unsigned)m <= ENGRAM_MISSED_ALL ? missed_names[m] : "?";
}

/* --header NAME=VALUE: repeatable. */
struct headers {
  engram_header v[ENGRAM_MAX_HEADERS];
  size_t n;
};

static int add_header(struct cli_args *a, const struct cli_opt *o, const char *val) {
  struct headers *h = o->to;
  if (h->n == ENGRAM_MAX_HEADERS)
    return cli_usage(a->cmd, "at most %d --header options", ENGRAM_MAX_HEADERS);
  const char *e = cli_parse_kv((char *)val, &h->v[h->n].name, &h->v[h->n].value);
  if (e) return cli_usage(a->cmd, "--header '%s': %s", val, e);
  h->n++;
  return 0;
}

/* Reads FILE whole (at most max + 1 bytes, so an oversize one is seen). */
static int read_file(const char *path, size_t max, char **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return cli_usage("schedule add", "--payload-file %s: %s", path, strerror(errno));
  char *buf = malloc(max + 2);
  size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
  int err = ferror(f);
  fclose(f);
  if (!buf) return cli_error("out of memory");
  if (err) {
    free(buf);
    return cli_usage("schedule add", "--payload-file %s: read error", path);
  }
  *out = buf;
  *len = n;
  return 0;
}

static void json_schedule(json_writer *w, const engram_schedule_info *s) {
  const engram_schedule_config *c = &s->config;
  json_obj(w);
  json_kstr(w, "name", s->name);
  if (c->every_ms) {
    json_ku64(w, "every_ms", c->every_ms);
    json_ki64(w, "start_ns", c->start_ns);
  } else {
    json_kstr(w, "cron", c->cron);
    json_kstr(w, "tz", c->tz);
  }
  json_kstr(w, "topic", c->topic);
  json_kstr(w, "type", c->type);
  if (c->key && *c->key) json_kstr(w, "key", c->key);
  if (c->content_type && *c->content_type) json_kstr(w, "content_type", c->content_type);
  if (c->payload_len == 0 || json_utf8_valid(c->payload, c->payload_len)) {
    json_key(w, "payload");
    json_strn(w, c->payload ? c->payload : "", c->payload_len);
  } else {
    json_key(w, "payload_base64");
    json_b64(w, c->payload, c->payload_len);
  }
  json_key(w, "headers");
  json_obj(w);
  for (size_t i = 0; i < c->n_headers; i++) json_kstr(w, c->headers[i].name, c->headers[i].value);
  json_obj_end(w);
  json_kstr(w, "missed", missed_name(c->missed));
  json_ku64(w, "max_catchup", c->max_catchup);
#define X(type, name) json_k##type(w, #name, s->name);
#define json_kint64_t json_ki64
#define json_kuint64_t json_ku64
#define json_kuint32_t json_ku64
  ENGRAM_SCHEDULE_INFO_FIELDS(X)
#undef json_kint64_t
#undef json_kuint64_t
#undef json_kuint32_t
#undef X
  json_kstr(w, "last_error", s->last_error);
  json_obj_end(w);
}

/* "every 5m" or "cron 0 2 * * * Europe/Paris". */
static void spec(const engram_schedule_info *s, char *buf, size_t len) {
  if (s->config.every_ms) {
    char d[32];
    cli_fmt_duration_ms(s->config.every_ms, d, sizeof d);
    snprintf(buf, len, "every %s", d);
  } else {
    snprintf(buf, len, "cron %s %s", s->config.cron, s->config.tz);
  }
}

static void when(int64_t ns, char *buf, size_t len) {
  if (ns)
    cli_fmt_time(ns, buf, len);
  else
    snprintf(buf, len, "-");
}

static int show_text(const engram_schedule_info *s) {
  const engram_schedule_config *c = &s->config;
  char sp[ENGRAM_MAX_CRON + ENGRAM_MAX_TZ + 16], t[64];
  spec(s, sp, sizeof sp);
  printf("name:          %s\n", s->name);
  printf("schedule:      %s\n", sp);
  printf("state:         %s\n", s->paused ? "paused" : "active");
  printf("topic:         %s\n", c->topic);
  printf("type:          %s\n", c->type);
  if (c->key && *c->key) {
    printf("key:           ");
    cli_put_text(stdout, c->key, strlen(c->key), 0);
    printf("\n");
  }
  if (c->content_type && *c->content_type) printf("content type:  %s\n", c->content_type);
  printf("payload:       %zu bytes\n", c->payload_len);
  for (size_t i = 0; i < c->n_headers; i++) {
    printf("header:        ");
    cli_put_text(stdout, c->headers[i].name, strlen(c->headers[i].name), 0);
    printf("=");
    cli_put_text(stdout, c->headers[i].value, strlen(c->headers[i].value), 0);
    printf("\n");
  }
  printf("missed:        %s (max catch-up %" PRIu32 ")\n", missed_name(c->missed), c->max_catchup);
  when(s->created_ns, t, sizeof t);
  printf("created:       %s\n", t);
  when(s->last_slot_ns, t, sizeof t);
  printf("last slot:     %s\n", t);
  when(s->last_fire_ns, t, sizeof t);
  printf("last fire:     %s", t);
  if (s->last_offset) printf(" (offset %" PRIu64 ")", s->last_offset);
  printf("\n");
  when(s->next_slot_ns, t, sizeof t);
  printf("next slot:     %s%s\n", t, s->paused ? " (after a resume)" : "");
  printf("fires:         %" PRIu64 " (manual %" PRIu64 ", skipped slots %" PRIu64 ")\n", s->fires,
         s->manual_fires, s->skipped);
  if (s->last_error[0]) {
    when(s->last_error_ns, t, sizeof t);
    printf("last error:    %s: ", t);
    cli_put_text(stdout, s->last_error, strlen(s->last_error), 0);
    printf("\n");
  }
  return 0;
}

static int list_text(const engram_schedule_info *s, size_t n) {
  if (n == 0) {
    printf("no schedules\n");
    return 0;
  }
  struct cli_table *tb = cli_table_new(8);
  cli_table_row(tb, "NAME", "SCHEDULE", "TOPIC", "TYPE", "STATE", "LAST_FIRE", "NEXT_SLOT",
                "FIRES");
  for (size_t i = 0; i < n; i++) {
    char sp[ENGRAM_MAX_CRON + ENGRAM_MAX_TZ + 16], last[64], next[64], fires[24];
    spec(&s[i], sp, sizeof sp);
    when(s[i].last_fire_ns, last, sizeof last);
    when(s[i].next_slot_ns, next, sizeof next);
    snprintf(fires, sizeof fires, "%" PRIu64, s[i].fires + s[i].manual_fires);
    cli_table_row(tb, s[i].name, sp, s[i].config.topic, s[i].config.type,
                  s[i].paused ? "paused" : "active", last, next, fires);
  }
  return cli_table_print(tb, stdout);
}

static int add(struct cli *c, int argc, char **argv) {
  uint64_t every = 0;
  uint32_t max_catchup = 0;
  const char *cron = NULL, *tz = NULL, *topic = NULL, *type = NULL, *payload = NULL,
             *payload_file = NULL, *key = NULL, *ctype = NULL;
  struct headers hdrs = {.n = 0};
  int missed = 0, json = 0;
  const struct cli_opt opts[] = {
      CLI_OPT_DURATION("--every", &every, .min = 1000, .max = ENGRAM_MAX_SCHEDULE_EVERY_MS),
      CLI_OPT_STR("--cron", &cron),
      CLI_OPT_STR("--tz", &tz),
      CLI_OPT_TEXT("--topic", &topic, .what = "needs a topic"),
      CLI_OPT_TEXT("--type", &type, .what = "needs an event type"),
      CLI_OPT_STR("--payload", &payload),
      CLI_OPT_TEXT("--payload-file", &payload_file, .what = "needs a file"),
      CLI_OPT_STR("--key", &key),
      CLI_OPT_STR("--content-type", &ctype),
      CLI_OPT_CUSTOM("--header", &hdrs, add_header),
      CLI_OPT_ENUM("--missed", &missed, .names = missed_names),
      CLI_OPT_U32("--max-catchup", &max_catchup, .min = 1, .max = ENGRAM_MAX_CATCHUP),
      CLI_OPT_FLAG("--json", &json),
      CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "schedule add", argc, argv);
  int status = cli_args_parse(&a, opts, help, 1, 1, "NAME");
  if (status != CLI_GO) return status;
  if (!every == !(cron && *cron))
    return cli_usage("schedule add", "give either --every or --cron, %s",
                     every ? "not both" : "one of them");
  if (tz && every) return cli_usage("schedule add", "--tz applies to --cron only");
  if (!topic) return cli_usage("schedule add", "--topic is required");
  if (!type) return cli_usage("schedule add", "--type is required");
  if (payload && payload_file)
    return cli_usage("schedule add", "--payload and --payload-file exclude each other");
  if (max_catchup && missed != ENGRAM_MISSED_ALL)
    return cli_usage("schedule add", "--max-catchup applies to --missed all only");
  char *file_buf = NULL;
  size_t file_len = 0;
  if (payload_file && (status = read_file(payload_file, 1u << 20, &file_buf, &file_len)))
    return status;
  engram_schedule_config cfg = {.every_ms = every,
                                .cron = cron,
                                .tz = tz,
                                .topic = topic,
                                .type = type,
                                .payload = file_buf ? file_buf : payload,
                                .payload_len = file_buf  ? file_len
                                               : payload ? strlen(payload)
                                                         : 0,
                                .key = key,
                                .content_type = ctype,
                                .headers = hdrs.v,
                                .n_headers = hdrs.n,
                                .missed = (engram_missed)missed,
                                .max_catchup = max_catchup};
  if (!(status = cli_open(c, CLI_OPEN_EXISTING))) {
    int rc = engram_schedule_add(c->log, a.pos[0], &cfg);
    if (rc)
      status = cli_fail_arg(c, rc, "schedule add %s", a.pos[0]);
    else
      status = cli_done(
          json, &(struct cli_done){.action = "schedule add", .topic = topic, .count = -1}, "added");
  }
  free(file_buf);
  return status;
}

static int list(struct cli *c, int argc, char **argv) {
  int json = 0;
  const struct cli_opt opts[] = {CLI_OPT_FLAG("--json", &json), CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "schedule list", argc, argv);
  int status = cli_args_parse(&a, opts, help, 0, 0, "no arguments");
  if (status != CLI_GO) return status;
  if ((status = cli_open(c, CLI_OPEN_READ))) return status;
  engram_schedule_info *s = NULL;
  size_t n = 0;
  int rc = engram_schedule_list(c->log, &s, &n);
  if (rc) return cli_fail(c, rc, "schedule list");
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_arr(&w);
    for (size_t i = 0; i < n; i++) json_schedule(&w, &s[i]);
    json_arr_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
  } else {
    status = list_text(s, n);
  }
  engram_free(s);
  return status;
}

static int show(struct cli *c, int argc, char **argv) {
  int json = 0;
  const struct cli_opt opts[] = {CLI_OPT_FLAG("--json", &json), CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "schedule show", argc, argv);
  int status = cli_args_parse(&a, opts, help, 1, 1, "NAME");
  if (status != CLI_GO) return status;
  if ((status = cli_open(c, CLI_OPEN_READ))) return status;
  engram_schedule_info *s = NULL;
  int rc = engram_schedule_get(c->log, a.pos[0], &s);
  if (rc) return cli_fail_arg(c, rc, "schedule show %s", a.pos[0]);
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_schedule(&w, s);
    status = cli_json_emit(&w);
    json_w_free(&w);
  } else {
    status = show_text(s);
  }
  engram_free(s);
  return status;
}

/* remove, pause, resume, run-now: one name each. */
static int one(struct cli *c, int argc, char **argv) {
  const char *sub = argv[0];
  int json = 0;
  char cmd[64];
  snprintf(cmd, sizeof cmd, "schedule %s", sub);
  const struct cli_opt opts[] = {CLI_OPT_FLAG("--json", &json), CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, cmd, argc, argv);
  int status = cli_args_parse(&a, opts, help, 1, 1, "NAME");
  if (status != CLI_GO) return status;
  if ((status = cli_open(c, CLI_OPEN_EXISTING))) return status;
  const char *name = a.pos[0];
  uint64_t off = 0;
  int rc;
  const char *done;
  if (!strcmp(sub, "remove")) {
    rc = engram_schedule_remove(c->log, name);
    done = "removed";
  } else if (!strcmp(sub, "pause")) {
    rc = engram_schedule_pause(c->log, name);
    done = "paused";
  } else if (!strcmp(sub, "resume")) {
    rc = engram_schedule_resume(c->log, name);
    done = "resumed";
  } else {
    rc = engram_schedule_run_now(c->log, name, &off);
    done = "fired";
  }
  if (rc) return cli_fail_arg(c, rc, "%s %s", cmd, name);
  char text[64];
  if (off)
    snprintf(text, sizeof text, "fired at offset %" PRIu64, off);
  else
    snprintf(text, sizeof text, "%s", done);
  return cli_done(
      json, &(struct cli_done){.action = cmd, .offset = off, .has_offset = off != 0, .count = -1},
      text);
}

int cmd_schedule(struct cli *c, int argc, char **argv) {
  static const struct cli_sub subs[] = {{"add", add},     {"list", list}, {"show", show},
                                        {"remove", one},  {"pause", one}, {"resume", one},
                                        {"run-now", one}, {NULL, NULL}};
  return cli_dispatch_sub(c, "schedule", subs, help, argc, argv);
}
