/* cmd_group.c — `engram group`: create, list, show, delete and reset consumer groups. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ---------------------------------------------------------------------------------
 * group create | list | show | delete | reset
 * ------------------------------------------------------------------------------ */
static const char group_help[] =
    "usage: engram group create TOPIC GROUP [options]\n"
    "       engram group list [TOPIC] [--json]\n"
    "       engram group show TOPIC GROUP [--json]\n"
    "       engram group delete TOPIC GROUP\n"
    "       engram group reset TOPIC GROUP --to OFFSET|@TIME|earliest|latest\n"
    "       engram group consumers TOPIC GROUP [--json]\n"
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
    "  --json              print {\"ok\":true,\"action\",\"topic\",\"group\"} instead\n"
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

/* --filter: repeatable, each a non-empty pattern of at most ENGRAM_MAX_TYPE bytes. */
struct filters {
  const char *v[ENGRAM_MAX_FILTERS];
  size_t n;
};

static int add_filter(struct cli_args *a, const struct cli_opt *o, const char *val) {
  struct filters *f = o->to;
  if (f->n == ENGRAM_MAX_FILTERS)
    return cli_usage(a->cmd, "at most %d --filter options", ENGRAM_MAX_FILTERS);
  if (!val[0]) return cli_usage(a->cmd, "--filter needs a non-empty pattern");
  if (strlen(val) > ENGRAM_MAX_TYPE)
    return cli_usage(a->cmd, "--filter pattern over %d bytes", ENGRAM_MAX_TYPE);
  f->v[f->n++] = val;
  return 0;
}

/* --backoff D,D,...: at most ENGRAM_MAX_BACKOFF steps. */
struct backoff {
  uint64_t ms[ENGRAM_MAX_BACKOFF];
  size_t n;
};

static int set_backoff(struct cli_args *a, const struct cli_opt *o, const char *val) {
  struct backoff *b = o->to;
  const char *e = parse_backoff(val, b->ms, &b->n);
  return e ? cli_usage(a->cmd, "--backoff '%s': %s", val, e) : 0;
}

static int set_max_deliver(struct cli_args *a, const struct cli_opt *o, const char *val) {
  uint32_t *v = o->to;
  const char *e = cli_parse_u32(val, v);
  if (e) return cli_usage(a->cmd, "--max-deliver '%s': %s", val, e);
  return *v ? 0 : cli_usage(a->cmd, "max-deliver must be at least 1");
}

static int group_create(struct cli *c, int argc, char **argv) {
  engram_group_config cfg;
  memset(&cfg, 0, sizeof cfg);
  struct filters filters = {.n = 0};
  struct backoff backoff = {.n = 0};
  struct cli_start start = {.start = ENGRAM_START_EARLIEST};
  int key_ordered = 0, json = 0;
  const struct cli_opt opts[] = {
      CLI_OPT_FLAG("--json", &json),
      CLI_OPT_CUSTOM("--filter", &filters, add_filter),
      CLI_OPT_DURATION("--ack-wait", &cfg.ack_wait_ms, .min = 1, .max = ENGRAM_MAX_ACK_WAIT_MS,
                       .low = "must be more than 0"),
      CLI_OPT_CUSTOM("--max-deliver", &cfg.max_deliver, set_max_deliver),
      CLI_OPT_CUSTOM("--backoff", &backoff, set_backoff),
      CLI_OPT_START("--start", &start),
      CLI_OPT_FLAG("--key-ordered", &key_ordered),
      CLI_OPT_DURATION("--result-ttl", &cfg.result_ttl_ms, .min = 1,
                       .max = ENGRAM_MAX_RESULT_TTL_MS, .low = "must be more than 0"),
      CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "group create", argc, argv);
  int r = cli_args_parse(&a, opts, create_help, 2, 2, "TOPIC GROUP");
  if (r != CLI_GO) return r;
  cfg.filters = filters.n ? filters.v : NULL;
  cfg.n_filters = filters.n;
  cfg.backoff_ms = backoff.n ? backoff.ms : NULL;
  cfg.n_backoff = backoff.n;
  cfg.start = start.start;
  cfg.start_offset = start.offset;
  cfg.start_time_ns = start.time_ns;
  if (key_ordered) cfg.flags |= ENGRAM_GROUP_KEY_ORDERED;
  int status = cli_open(c, CLI_OPEN_EXISTING);
  if (status) return status;
  int rc = engram_group_create(c->log, a.pos[0], a.pos[1], &cfg);
  if (rc != 0) return cli_fail_arg(c, rc, "create group %s on %s", a.pos[1], a.pos[0]);
  char text[2 * ENGRAM_MAX_NAME + 32];
  snprintf(text, sizeof text, "created group %s on topic %s", a.pos[1], a.pos[0]);
  struct cli_done d = {"group create", a.pos[0], a.pos[1], 0, 0, -1};
  return cli_done(json, &d, text);
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
  int json = 0;
  struct cli_args a;
  int r = cli_args_json(&a, "group list", argc, argv, h, 0, 1, "[TOPIC]", &json);
  if (r != CLI_GO) return r;
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
  printf("nacked:             %" PRIu64 "\n", g->nacked);
  printf("rejected:           %" PRIu64 "\n", g->rejected);
  printf("dead-lettered:      %" PRIu64 "\n", g->dead_lettered);
  if (g->oldest_unfinished_ns > 0) {
    cli_fmt_time(g->oldest_unfinished_ns, t, sizeof t);
    cli_fmt_age(now - g->oldest_unfinished_ns, buf, sizeof buf);
    printf("oldest unfinished:  %s (%s ago)\n", t, buf);
  } else {
    printf("oldest unfinished:  -\n");
  }
  if (g->retention_skipped)
    printf("skipped by retention: %" PRIu64 " (removed before the group finished them)\n",
           g->retention_skipped);
}

static int group_show(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram group show TOPIC GROUP [--json]\n"
      "\n"
      "Shows the group's settings and counters: floor (every offset up to it is\n"
      "finished), next offset to look at, lag, in flight, retrying, dead, acked,\n"
      "delivered, redelivered, nacked, rejected, dead-lettered (events that entered the\n"
      "DLQ) and the age of the oldest unfinished event.\n"
      "\n"
      "options:\n"
      "  --json     {\"topic\",\"group\",\"filters\",\"ack_wait_ms\",\"max_deliver\",\n"
      "             \"backoff_ms\",\"result_ttl_ms\",\"key_ordered\",\"created_ns\",\"floor\",\n"
      "             \"next\",\"lag\",\"in_flight\",\"retrying\",\"dead\",\"acked\",\"delivered\",\n"
      "             \"redelivered\",\"oldest_unfinished_ns\",\"oldest_unfinished_age_ms\",\n"
      "             \"retention_skipped\",\"nacked\",\"rejected\",\"dead_lettered\"}\n"
      "  -h, --help this help\n";
  int json = 0;
  struct cli_args a;
  int r = cli_args_json(&a, "group show", argc, argv, h, 2, 2, "TOPIC GROUP", &json);
  if (r != CLI_GO) return r;
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
      "usage: engram group delete TOPIC GROUP [--json]\n"
      "\n"
      "Deletes the group with its leases, dead-letter queue and results. The topic's\n"
      "events stay.\n"
      "\n"
      "options:\n" CLI_JSON_DONE_HELP;
  int json = 0;
  struct cli_args a;
  int r = cli_args_json(&a, "group delete", argc, argv, h, 2, 2, "TOPIC GROUP", &json);
  if (r != CLI_GO) return r;
  int status = cli_open(c, CLI_OPEN_EXISTING);
  if (status) return status;
  int rc = engram_group_delete(c->log, a.pos[0], a.pos[1]);
  if (rc != 0) return cli_fail(c, rc, "delete group %s of %s", a.pos[1], a.pos[0]);
  char text[2 * ENGRAM_MAX_NAME + 32];
  snprintf(text, sizeof text, "deleted group %s of topic %s", a.pos[1], a.pos[0]);
  struct cli_done d = {"group delete", a.pos[0], a.pos[1], 0, 0, -1};
  return cli_done(json, &d, text);
}

static int group_reset(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram group reset TOPIC GROUP --to OFFSET|@TIME|earliest|latest [--json]\n"
      "\n"
      "Replay: moves the group's cursor to OFFSET, to the first event appended at or\n"
      "after @TIME, to the first stored event (earliest) or past the last (latest).\n"
      "Outstanding leases and retries are dropped (their acks then fail as stale); the\n"
      "dead-letter queue is kept.\n"
      "\n"
      "options:\n"
      "  --to WHERE   where to move the cursor (required)\n"
      "  --json       print {\"ok\":true,\"action\",\"topic\",\"group\"} instead\n"
      "  -h, --help   this help\n";
  struct cli_start to = {.text = NULL};
  int json = 0;
  const struct cli_opt opts[] = {CLI_OPT_START("--to", &to), CLI_OPT_FLAG("--json", &json),
                                 CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "group reset", argc, argv);
  int r = cli_args_parse(&a, opts, h, 2, 2, "TOPIC GROUP");
  if (r != CLI_GO) return r;
  if (!to.text) return cli_usage(a.cmd, "missing --to OFFSET|@TIME|earliest|latest");
  int status = cli_open(c, CLI_OPEN_EXISTING);
  if (status) return status;
  int rc = engram_group_reset(c->log, a.pos[0], a.pos[1], to.start, to.offset, to.time_ns);
  if (rc != 0) return cli_fail_arg(c, rc, "reset group %s of %s", a.pos[1], a.pos[0]);
  char text[3 * ENGRAM_MAX_NAME + 48];
  snprintf(text, sizeof text, "reset group %s of topic %s to %s", a.pos[1], a.pos[0], to.text);
  struct cli_done d = {"group reset", a.pos[0], a.pos[1], 0, 0, -1};
  return cli_done(json, &d, text);
}

/* ---------------------------------------------------------------------------------
 * group consumers: who holds what, since when
 * ------------------------------------------------------------------------------ */
#define CONSUMERS_SCAN_MAX 100000 /* unfinished offsets looked at, from the floor up */
#define CONSUMERS_OFFSETS 16      /* offsets listed per consumer */

struct holder {
  char name[ENGRAM_MAX_NAME + 1];
  uint64_t n;                          /* events in flight */
  uint64_t offsets[CONSUMERS_OFFSETS]; /* the lowest of them */
  int64_t first_deadline_ns, last_deadline_ns;
};

static int group_consumers(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram group consumers TOPIC GROUP [--json]\n"
      "\n"
      "Who holds what: for each consumer with events in flight, how many, the lowest\n"
      "offsets, since when it holds them (the oldest lease's deadline minus the ack wait;\n"
      "extended leases look younger) and when the next lease runs out. Looks at the\n"
      "group's unfinished offsets from its floor up (at most 100000).\n"
      "\n"
      "options:\n"
      "  --json      [{\"consumer\",\"in_flight\",\"offsets\",\"leased_since_ns\",\n"
      "              \"next_expiry_ns\"}]\n"
      "  -h, --help  this help\n";
  int json = 0;
  struct cli_args a;
  int r = cli_args_json(&a, "group consumers", argc, argv, h, 2, 2, "TOPIC GROUP", &json);
  if (r != CLI_GO) return r;
  int status = cli_open(c, CLI_OPEN_READ);
  if (status) return status;
  const char *topic = a.pos[0], *group = a.pos[1];
  engram_group_info g;
  int rc = engram_group_info_get(c->log, topic, group, &g);
  if (rc != 0) return cli_fail(c, rc, "group %s of %s", group, topic);
  struct holder *hs = NULL;
  size_t nh = 0, cap = 0;
  uint64_t found = 0, scanned = 0;
  for (uint64_t off = g.floor + 1; off < g.next && found < g.in_flight; off++) {
    if (++scanned > CONSUMERS_SCAN_MAX) break;
    engram_status st;
    rc = engram_status_get(c->log, topic, group, off, &st);
    if (rc == ENGRAM_ENOTFOUND) continue; /* compacted or dropped meanwhile */
    if (rc != 0) {
      free(hs);
      return cli_fail(c, rc, "status %s %s offset %" PRIu64, topic, group, off);
    }
    engram_free(st.result);
    if (st.state != ENGRAM_STATE_IN_FLIGHT) continue;
    found++;
    size_t k = 0;
    while (k < nh && strcmp(hs[k].name, st.consumer)) k++;
    if (k == nh) {
      if (nh == cap) {
        size_t nc = cap ? 2 * cap : 8;
        struct holder *m = realloc(hs, nc * sizeof *hs);
        if (!m) {
          free(hs);
          return cli_error("group consumers: out of memory");
        }
        hs = m, cap = nc;
      }
      memset(&hs[nh], 0, sizeof hs[nh]);
      snprintf(hs[nh].name, sizeof hs[nh].name, "%s", st.consumer);
      hs[nh].first_deadline_ns = hs[nh].last_deadline_ns = st.deadline_ns;
      nh++;
    }
    struct holder *x = &hs[k];
    if (x->n < CONSUMERS_OFFSETS) x->offsets[x->n] = off;
    x->n++;
    if (st.deadline_ns < x->first_deadline_ns) x->first_deadline_ns = st.deadline_ns;
    if (st.deadline_ns > x->last_deadline_ns) x->last_deadline_ns = st.deadline_ns;
  }
  const int64_t wait_ns = (int64_t)g.ack_wait_ms * 1000000;
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_arr(&w);
    for (size_t k = 0; k < nh; k++) {
      json_obj(&w);
      json_kstr(&w, "consumer", hs[k].name);
      json_ku64(&w, "in_flight", hs[k].n);
      json_key(&w, "offsets");
      json_arr(&w);
      for (uint64_t i = 0; i < hs[k].n && i < CONSUMERS_OFFSETS; i++)
        json_u64(&w, hs[k].offsets[i]);
      json_arr_end(&w);
      json_ki64(&w, "leased_since_ns", hs[k].first_deadline_ns - wait_ns);
      json_ki64(&w, "next_expiry_ns", hs[k].first_deadline_ns);
      json_obj_end(&w);
    }
    json_arr_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
  } else if (nh == 0) {
    printf("no events in flight in group %s of %s\n", group, topic);
  } else {
    int64_t now = cli_now_ns();
    struct cli_table *tb = cli_table_new(5);
    cli_table_row(tb, "CONSUMER", "IN_FLIGHT", "OFFSETS", "HOLDING_FOR", "NEXT_EXPIRY_IN");
    for (size_t k = 0; k < nh; k++) {
      char name[4 * ENGRAM_MAX_NAME + 1], n[24], offs[400] = "", held[32], exp[32];
      cli_escape(name, sizeof name, hs[k].name, strlen(hs[k].name));
      snprintf(n, sizeof n, "%" PRIu64, hs[k].n);
      size_t at = 0;
      for (uint64_t i = 0; i < hs[k].n && i < CONSUMERS_OFFSETS && at < sizeof offs; i++)
        at += (size_t)snprintf(offs + at, sizeof offs - at, "%s%" PRIu64, i ? "," : "",
                               hs[k].offsets[i]);
      if (hs[k].n > CONSUMERS_OFFSETS && at < sizeof offs)
        snprintf(offs + at, sizeof offs - at, ",...");
      cli_fmt_age(now - (hs[k].first_deadline_ns - wait_ns), held, sizeof held);
      cli_fmt_age(hs[k].first_deadline_ns - now, exp, sizeof exp);
      cli_table_row(tb, name, n, offs, held, exp);
    }
    status = cli_table_print(tb, stdout);
  }
  if (!status && scanned > CONSUMERS_SCAN_MAX)
    fprintf(stderr, "engram: group consumers: looked at the first %d unfinished offsets only\n",
            CONSUMERS_SCAN_MAX);
  free(hs);
  return status;
}

int cmd_group(struct cli *c, int argc, char **argv) {
  static const struct cli_sub subs[] = {{"create", group_create},
                                        {"list", group_list},
                                        {"show", group_show},
                                        {"delete", group_delete},
                                        {"reset", group_reset},
                                        {"consumers", group_consumers},
                                        {NULL, NULL}};
  return cli_dispatch_sub(c, "group", subs, group_help, argc, argv);
}
