/* cmd_stat.c — `engram stat`: every topic and every group on one screen. */
#include <inttypes.h>
#include <string.h>

#include "cli.h"

static const char help[] =
    "usage: engram stat [--json]\n"
    "\n"
    "Prints every topic (events, first and head offsets) and every consumer group with\n"
    "its counters: lag, in flight, retrying, dead, acked, redelivered and the age of\n"
    "the oldest unfinished event.\n"
    "\n"
    "options:\n"
    "  --json     {\"topics\":[...],\"groups\":[...]} with the objects of\n"
    "             `engram topics --json` and `engram group list --json`\n"
    "  -h, --help this help\n";

static int text(const engram_topic_info *t, size_t nt, const engram_group_info *g, size_t ng,
                int64_t now) {
  struct cli_table *tb = cli_table_new(4);
  cli_table_row(tb, "TOPIC", "EVENTS", "FIRST", "HEAD");
  for (size_t i = 0; i < nt; i++) {
    char name[ENGRAM_MAX_NAME + 1], cnt[24], first[24], head[24];
    snprintf(name, sizeof name, "%.*s", (int)sizeof name - 1, t[i].name);
    snprintf(cnt, sizeof cnt, "%" PRIu64, t[i].count);
    snprintf(first, sizeof first, "%" PRIu64, t[i].first_offset);
    snprintf(head, sizeof head, "%" PRIu64, t[i].head_offset);
    cli_table_row(tb, name, cnt, first, head);
  }
  int status = cli_table_print(tb, stdout);
  if (status) return status;
  if (ng == 0) {
    printf("\nno consumer groups\n");
    return 0;
  }
  printf("\n");
  tb = cli_table_new(9);
  cli_table_row(tb, "TOPIC", "GROUP", "LAG", "IN_FLIGHT", "RETRYING", "DEAD", "ACKED",
                "REDELIVERED", "OLDEST_UNFINISHED");
  for (size_t i = 0; i < ng; i++) {
    char tn[ENGRAM_MAX_NAME + 1], gn[ENGRAM_MAX_NAME + 1], lag[24], inf[24], rt[24], dead[24],
        acked[24], red[24], age[32];
    snprintf(tn, sizeof tn, "%.*s", (int)sizeof tn - 1, g[i].topic);
    snprintf(gn, sizeof gn, "%.*s", (int)sizeof gn - 1, g[i].name);
    snprintf(lag, sizeof lag, "%" PRIu64, g[i].lag);
    snprintf(inf, sizeof inf, "%" PRIu64, g[i].in_flight);
    snprintf(rt, sizeof rt, "%" PRIu64, g[i].retrying);
    snprintf(dead, sizeof dead, "%" PRIu64, g[i].dead);
    snprintf(acked, sizeof acked, "%" PRIu64, g[i].acked);
    snprintf(red, sizeof red, "%" PRIu64, g[i].redelivered);
    if (g[i].oldest_unfinished_ns > 0)
      cli_fmt_age(now - g[i].oldest_unfinished_ns, age, sizeof age);
    else
      snprintf(age, sizeof age, "-");
    cli_table_row(tb, tn, gn, lag, inf, rt, dead, acked, red, age);
  }
  return cli_table_print(tb, stdout);
}

int cmd_stat(struct cli *c, int argc, char **argv) {
  int json = 0;
  const struct cli_opt opts[] = {CLI_OPT_FLAG("--json", &json), CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "stat", argc, argv);
  int status = cli_args_parse(&a, opts, help, 0, 0, "no arguments");
  if (status != CLI_GO) return status;
  if ((status = cli_open(c, CLI_OPEN_READ))) return status;
  engram_topic_info *t = NULL;
  engram_group_info *g = NULL;
  size_t nt = 0, ng = 0;
  int rc = engram_topic_list(c->log, &t, &nt);
  if (rc != 0) return cli_fail(c, rc, "list topics");
  rc = engram_group_list(c->log, NULL, &g, &ng);
  if (rc != 0) {
    engram_free(t);
    return cli_fail(c, rc, "list groups");
  }
  int64_t now = cli_now_ns();
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_obj(&w);
    json_key(&w, "topics");
    json_arr(&w);
    for (size_t i = 0; i < nt; i++) cli_json_topic(&w, &t[i]);
    json_arr_end(&w);
    json_key(&w, "groups");
    json_arr(&w);
    for (size_t i = 0; i < ng; i++) cli_json_group(&w, &g[i], now);
    json_arr_end(&w);
    json_obj_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
  } else {
    status = text(t, nt, g, ng, now);
  }
  engram_free(t);
  engram_free(g);
  return status;
}
