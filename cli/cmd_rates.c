/* cmd_rates.c — `engram rates`: events per second over the last 1, 5 and 15 minutes. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char help[] =
    "usage: engram rates [TOPIC] [--window 1m|5m|15m] [--json]\n"
    "\n"
    "Events per second of every topic (or of TOPIC) and of its groups, over the last\n"
    "--window (default 1m): appended per topic; delivered, acked, nacked, rejected and\n"
    "dead-lettered per group. The rates are kept in the log (engram_rate_list), so they\n"
    "are the same in every process, with or without a daemon, and known at once.\n"
    "\n"
    "options:\n"
    "  --window W  1m (default), 5m or 15m; --json always gives all three\n"
    "  --json      a JSON array of {\"topic\",\"group\" (null for the topic's row),\n"
    "              \"window\":[\"1m\",\"5m\",\"15m\"],\"appended\":[a,b,c],\"delivered\",\n"
    "              \"acked\",\"nacked\",\"rejected\",\"dead_lettered\"} (a topic's row:\n"
    "              \"appended\" only)\n"
    "  -h, --help  this help\n";

static const char *const windows[] = {"1m", "5m", "15m", NULL}; /* ENGRAM_RATE_WINDOWS */

static void json_row(json_writer *w, const engram_rate_info *r) {
  json_obj(w);
  json_kstr(w, "topic", r->topic);
  json_kstr(w, "group", r->group[0] ? r->group : NULL);
  json_key(w, "window");
  json_arr(w);
  for (int i = 0; i < ENGRAM_RATE_WINDOWS; i++) json_str(w, windows[i]);
  json_arr_end(w);
#define X(type, name)                                                       \
  if (r->group[0] || !strcmp(#name, "appended")) {                          \
    json_key(w, #name);                                                     \
    json_arr(w);                                                            \
    for (int i = 0; i < ENGRAM_RATE_WINDOWS; i++) json_rate(w, r->name[i]); \
    json_arr_end(w);                                                        \
  }
  ENGRAM_RATE_FIELDS(X)
#undef X
  json_obj_end(w);
}

static int text(const engram_rate_info *r, size_t n, int win) {
  if (n == 0) {
    printf("no topics\n");
    return 0;
  }
  printf("per second over the last %s\n", windows[win]);
  struct cli_table *tb = cli_table_new(8);
  cli_table_row(tb, "TOPIC", "GROUP", "APPENDED", "DELIVERED", "ACKED", "NACKED", "REJECTED",
                "DEAD_LETTERED");
  for (size_t i = 0; i < n; i++) {
    char v[6][32];
    const double x[6] = {r[i].appended[win], r[i].delivered[win], r[i].acked[win],
                         r[i].nacked[win],   r[i].rejected[win],  r[i].dead_lettered[win]};
    for (int k = 0; k < 6; k++) {
      if (k && !r[i].group[0])
        snprintf(v[k], sizeof v[k], "-");
      else
        snprintf(v[k], sizeof v[k], "%.2f", x[k]);
    }
    cli_table_row(tb, r[i].topic, r[i].group[0] ? r[i].group : "-", v[0], v[1], v[2], v[3], v[4],
                  v[5]);
  }
  return cli_table_print(tb, stdout);
}

int cmd_rates(struct cli *c, int argc, char **argv) {
  int json = 0, win = 0;
  const struct cli_opt opts[] = {CLI_OPT_FLAG("--json", &json),
                                 CLI_OPT_ENUM("--window", &win, .names = windows), CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "rates", argc, argv);
  int status = cli_args_parse(&a, opts, help, 0, 1, "[TOPIC]");
  if (status != CLI_GO) return status;
  if (win < 0) win = 0;
  if ((status = cli_open(c, CLI_OPEN_READ))) return status;
  const char *topic = a.npos ? a.pos[0] : NULL;
  engram_rate_info *r = NULL;
  size_t n = 0;
  int rc = engram_rate_list(c->log, topic, &r, &n);
  if (rc != 0) return topic ? cli_fail(c, rc, "rates %s", topic) : cli_fail(c, rc, "rates");
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_arr(&w);
    for (size_t i = 0; i < n; i++) json_row(&w, &r[i]);
    json_arr_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
  } else {
    status = text(r, n, win);
  }
  engram_free(r);
  return status;
}
