/* cmd_stat.c — `engram stat`: every topic and every group on one screen. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* A file over this size whose pages are mostly free gets the hint to reclaim them. */
#define CLI_RECLAIM_HINT_BYTES (64ull << 20)

static const char help[] =
    "usage: engram stat [--json] [--watch D [--count N]]\n"
    "\n"
    "Prints every topic (events, first and head offsets) and every consumer group with\n"
    "its counters: lag, in flight, retrying, dead, acked, redelivered and the age of\n"
    "the oldest unfinished event; then the log's id (random, made when the log was\n"
    "created, kept by backup) and creation time, and how data.mdb's space is used:\n"
    "its size, the pages the log uses and its free pages (freed by retention and\n"
    "dropped topics, reused by later writes; `engram compact --reclaim` gives them\n"
    "back, and is suggested when they are more than half of a file over 64 MiB).\n"
    "\n"
    "options:\n"
    "  --json     {\"topics\":[...],\"groups\":[...],\"log\":{\"id\":STR,\n"
    "             \"created_ns\":N,\"format_version\":N},\"space\":{\"file_bytes\":N,\n"
    "             \"used_bytes\":N,\"free_bytes\":N,\"map_bytes\":N}} with the\n"
    "             objects of `engram topics --json` and `engram group list --json`\n"
    "             (\"space\" is null from a daemon too old to tell it)\n"
    "  --watch D  print again every D (e.g. 2s, at least 100ms) until Ctrl-C, with\n"
    "             rates over the last minute (engram_rate_list, as engram top and\n"
    "             the dashboard show them): IN/S (events appended per second) per\n"
    "             topic, ACK/S per group; on a terminal the screen is redrawn, else\n"
    "             each print starts with a time line (--json: one object per print,\n"
    "             stat --json's plus \"ts_ns\", \"interval_ms\" and \"rates\":\n"
    "             {\"topics\":{NAME:IN/S},\"groups\":{\"TOPIC/GROUP\":ACK/S}}, null\n"
    "             for one created since the rates were read)\n"
    "  --count N  with --watch: stop after N prints\n"
    "  -h, --help this help\n";

/* What --watch holds for one print: the rates, and when the previous print was. */
struct prev {
  engram_rate_info *r;
  size_t nr;
  int64_t at_ns; /* 0 = no previous print */
};

/* The 1-minute rate of a topic (appends) or a group (acks); -1 when not listed. */
static double topic_rate(const struct prev *p, const engram_topic_info *t, int64_t now) {
  (void)now;
  for (size_t i = 0; i < p->nr; i++)
    if (!p->r[i].group[0] && !strcmp(p->r[i].topic, t->name)) return p->r[i].appended[0];
  return -1;
}

static double group_rate(const struct prev *p, const engram_group_info *g, int64_t now) {
  (void)now;
  for (size_t i = 0; i < p->nr; i++)
    if (!strcmp(p->r[i].topic, g->topic) && !strcmp(p->r[i].group, g->name))
      return p->r[i].acked[0];
  return -1;
}

static void fmt_rate(double r, char *buf, size_t len) {
  if (r < 0)
    snprintf(buf, len, "-");
  else
    snprintf(buf, len, "%.1f", r);
}

static int text(const engram_topic_info *t, size_t nt, const engram_group_info *g, size_t ng,
                int64_t now, const struct prev *p) {
  const int watch = p != NULL;
  struct cli_table *tb = cli_table_new(watch ? 5 : 4);
  if (watch)
    cli_table_row(tb, "TOPIC", "EVENTS", "FIRST", "HEAD", "IN/S");
  else
    cli_table_row(tb, "TOPIC", "EVENTS", "FIRST", "HEAD");
  for (size_t i = 0; i < nt; i++) {
    char name[ENGRAM_MAX_NAME + 1], cnt[24], first[24], head[24];
    snprintf(name, sizeof name, "%.*s", (int)sizeof name - 1, t[i].name);
    snprintf(cnt, sizeof cnt, "%" PRIu64, t[i].count);
    snprintf(first, sizeof first, "%" PRIu64, t[i].first_offset);
    snprintf(head, sizeof head, "%" PRIu64, t[i].head_offset);
    char r[32];
    if (watch) {
      fmt_rate(topic_rate(p, &t[i], now), r, sizeof r);
      cli_table_row(tb, name, cnt, first, head, r);
    } else {
      cli_table_row(tb, name, cnt, first, head);
    }
  }
  int status = cli_table_print(tb, stdout);
  if (status) return status;
  if (ng == 0) {
    printf("\nno consumer groups\n");
    return 0;
  }
  printf("\n");
  tb = cli_table_new(watch ? 10 : 9);
  if (watch)
    cli_table_row(tb, "TOPIC", "GROUP", "LAG", "IN_FLIGHT", "RETRYING", "DEAD", "ACKED",
                  "REDELIVERED", "OLDEST_UNFINISHED", "ACK/S");
  else
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
    char r[32];
    if (watch) {
      fmt_rate(group_rate(p, &g[i], now), r, sizeof r);
      cli_table_row(tb, tn, gn, lag, inf, rt, dead, acked, red, age, r);
    } else {
      cli_table_row(tb, tn, gn, lag, inf, rt, dead, acked, red, age);
    }
  }
  return cli_table_print(tb, stdout);
}

/* "key": a rate, or null when unknown. */
static void json_krate(json_writer *w, const char *key, double r) {
  json_key(w, key);
  if (r < 0)
    json_null(w);
  else
    json_rate(w, r);
}

/* data.mdb: size, used, free and its share, and a hint when reclaiming would pay. */
static void print_space(const engram_space *sp) {
  const double mib = 1024.0 * 1024.0;
  uint64_t pages = sp->used_bytes + sp->free_bytes;
  double share = pages ? 100.0 * (double)sp->free_bytes / (double)pages : 0;
  printf("data.mdb %.1f MiB: %.1f MiB used, %.1f MiB free (%.1f%%)\n", sp->file_bytes / mib,
         sp->used_bytes / mib, sp->free_bytes / mib, share);
  if (sp->file_bytes > CLI_RECLAIM_HINT_BYTES && sp->free_bytes * 2 > pages)
    printf(
        "most of data.mdb is free pages: `engram compact --reclaim`, with the log closed, "
        "gives them back\n");
}

/* One print of every topic and group; p != NULL when watching (rates since p). */
static int print_once(struct cli *c, int json, struct prev *p, uint64_t interval_ms, int tty) {
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
  engram_log_info li;
  engram_space sp;
  if ((rc = engram_log_info_get(c->log, &li)) != 0) {
    engram_free(t);
    engram_free(g);
    return cli_fail(c, rc, "log info");
  }
  /* A daemon older than the space request answers EPROTO: no space then, the rest shown. */
  int have_space = (rc = engram_space_get(c->log, &sp)) == 0;
  if (!have_space && rc != ENGRAM_EPROTO) {
    engram_free(t);
    engram_free(g);
    return cli_fail(c, rc, "space");
  }
  if (p) {
    engram_free(p->r);
    p->r = NULL;
    p->nr = 0;
    if ((rc = engram_rate_list(c->log, NULL, &p->r, &p->nr)) != 0) {
      engram_free(t);
      engram_free(g);
      return cli_fail(c, rc, "list rates");
    }
  }
  int64_t now = cli_now_ns();
  int status;
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_obj(&w);
    if (p) {
      json_key(&w, "ts_ns");
      json_i64(&w, now);
      json_key(&w, "interval_ms");
      json_u64(&w, interval_ms);
    }
    json_key(&w, "topics");
    json_arr(&w);
    for (size_t i = 0; i < nt; i++) cli_json_topic(&w, &t[i]);
    json_arr_end(&w);
    json_key(&w, "groups");
    json_arr(&w);
    for (size_t i = 0; i < ng; i++) cli_json_group(&w, &g[i], now);
    json_arr_end(&w);
    json_key(&w, "log");
    json_obj(&w);
    json_key(&w, "id");
    json_str(&w, li.id);
    json_key(&w, "created_ns");
    json_i64(&w, li.created_ns);
    json_key(&w, "format_version");
    json_u64(&w, li.format_version);
    json_obj_end(&w);
    json_key(&w, "space");
    if (have_space) {
      json_obj(&w);
#define X(type, name)  \
  json_key(&w, #name); \
  json_u64(&w, sp.name);
      ENGRAM_SPACE_FIELDS(X)
#undef X
      json_obj_end(&w);
    } else {
      json_null(&w);
    }
    if (p) { /* the objects keep stat --json's shape; rates sit beside them */
      json_key(&w, "rates");
      json_obj(&w);
      json_key(&w, "topics");
      json_obj(&w);
      for (size_t i = 0; i < nt; i++) json_krate(&w, t[i].name, topic_rate(p, &t[i], now));
      json_obj_end(&w);
      json_key(&w, "groups");
      json_obj(&w);
      for (size_t i = 0; i < ng; i++) {
        char k[2 * ENGRAM_MAX_NAME + 2];
        snprintf(k, sizeof k, "%s/%s", g[i].topic, g[i].name);
        json_krate(&w, k, group_rate(p, &g[i], now));
      }
      json_obj_end(&w);
      json_obj_end(&w);
    }
    json_obj_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
  } else {
    if (p && tty) {
      fputs("\033[H\033[2J", stdout); /* home, clear: redraw in place */
    } else if (p) {
      char ts[48];
      cli_fmt_time(now, ts, sizeof ts);
      printf("%s--- %s\n", p->at_ns ? "\n" : "", ts);
    }
    status = text(t, nt, g, ng, now, p);
    if (!status) {
      char ts[48];
      cli_fmt_time(li.created_ns, ts, sizeof ts);
      printf("\nlog %s, created %s\n", *li.id ? li.id : "(no id yet)", ts);
      if (have_space) print_space(&sp);
    }
  }
  if (p) p->at_ns = now;
  engram_free(t);
  engram_free(g);
  if (!status && fflush(stdout) != 0) status = CLI_EXIT_FAIL;
  return status;
}

int cmd_stat(struct cli *c, int argc, char **argv) {
  int json = 0;
  uint64_t watch_ms = 0, count = 0;
  const struct cli_opt opts[] = {CLI_OPT_FLAG("--json", &json),
                                 CLI_OPT_DURATION("--watch", &watch_ms, .min = 100, .max = 86400000,
                                                  .low = "must be at least 100ms"),
                                 CLI_OPT_U64("--count", &count, .min = 1), CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "stat", argc, argv);
  int status = cli_args_parse(&a, opts, help, 0, 0, "no arguments");
  if (status != CLI_GO) return status;
  const int watch = cli_args_given(&a, "--watch") != 0;
  if (count && !watch) return cli_usage(a.cmd, "--count applies only with --watch");
  if ((status = cli_open(c, CLI_OPEN_READ))) return status;
  if (!watch) return print_once(c, json, NULL, 0, 0);
  struct prev p = {0};
  const int tty = isatty(STDOUT_FILENO);
  for (uint64_t n = 0; !status && (!count || n < count); n++) {
    if (n) {
      struct timespec ts = {(time_t)(watch_ms / 1000), (long)(watch_ms % 1000) * 1000000};
      nanosleep(&ts, NULL);
    }
    status = print_once(c, json, &p, watch_ms, tty);
  }
  engram_free(p.r);
  return status;
}
