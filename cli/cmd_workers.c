/* cmd_workers.c — `engram workers`: the consumers that serve groups, alive or lost. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char help[] =
    "usage: engram workers [--lost-after DURATION] [--json]\n"
    "       engram workers forget NAME\n"
    "\n"
    "Lists the workers (consumers) known to the log: every consumer that fetched, and\n"
    "every worker that sent a heartbeat, with its host, pid, groups, events handled and\n"
    "failed, when it was last seen and what it runs now. A worker not seen for\n"
    "--lost-after (default 30s) is shown as lost. `forget NAME` removes a worker's\n"
    "record (a fetch or heartbeat by that name registers it again).\n"
    "\n"
    "options:\n"
    "  --lost-after DURATION  not seen for this long = lost (default 30s)\n"
    "  --json                 a JSON array of {\"name\",\"host\",\"pid\",\"concurrency\",\n"
    "                         \"started_ns\",\"last_seen_ns\",\"handled\",\"failed\",\"lost\",\n"
    "                         \"groups\":[\"topic/group\"...],\"running\":[{\"topic\",\n"
    "                         \"group\",\"offset\",\"since_ns\"}...]}\n"
    "  -h, --help             this help\n";

static void json_worker(json_writer *w, const engram_worker_info *k) {
  json_obj(w);
  json_kstr(w, "name", k->name);
  json_kstr(w, "host", k->host);
  json_ku64(w, "pid", k->pid);
  json_ku64(w, "concurrency", k->concurrency);
  json_ki64(w, "started_ns", k->started_ns);
  json_ki64(w, "last_seen_ns", k->last_seen_ns);
  json_ku64(w, "handled", k->handled);
  json_ku64(w, "failed", k->failed);
  json_kbool(w, "lost", (int)k->lost);
  json_key(w, "groups");
  json_arr(w);
  for (size_t i = 0; i < k->n_groups; i++) json_str(w, k->groups[i]);
  json_arr_end(w);
  json_key(w, "running");
  json_arr(w);
  for (size_t i = 0; i < k->n_running; i++) {
    json_obj(w);
    json_kstr(w, "topic", k->running[i].topic);
    json_kstr(w, "group", k->running[i].group);
    json_ku64(w, "offset", k->running[i].offset);
    json_ki64(w, "since_ns", k->running[i].since_ns);
    json_obj_end(w);
  }
  json_arr_end(w);
  json_obj_end(w);
}

static int text(const engram_worker_info *k, size_t n, int64_t now) {
  if (n == 0) {
    printf("no workers\n");
    return 0;
  }
  struct cli_table *tb = cli_table_new(9);
  cli_table_row(tb, "NAME", "STATE", "HOST", "PID", "HANDLED", "FAILED", "LAST_SEEN", "GROUPS",
                "RUNNING");
  for (size_t i = 0; i < n; i++) {
    char host[4 * sizeof k->host + 1], pid[16], handled[24], failed[24], seen[32];
    char groups[512] = "", running[512] = "";
    cli_escape(host, sizeof host, k[i].host, strlen(k[i].host));
    snprintf(pid, sizeof pid, "%" PRIu32, k[i].pid);
    snprintf(handled, sizeof handled, "%" PRIu64, k[i].handled);
    snprintf(failed, sizeof failed, "%" PRIu64, k[i].failed);
    cli_fmt_age(now - k[i].last_seen_ns, seen, sizeof seen);
    size_t used = 0;
    for (size_t g = 0; g < k[i].n_groups && used < sizeof groups; g++)
      used += (size_t)snprintf(groups + used, sizeof groups - used, "%s%s", g ? "," : "",
                               k[i].groups[g]);
    used = 0;
    for (size_t r = 0; r < k[i].n_running && used < sizeof running; r++) {
      char age[32];
      cli_fmt_age(now - k[i].running[r].since_ns, age, sizeof age);
      used += (size_t)snprintf(running + used, sizeof running - used, "%s%s/%s@%" PRIu64 "(%s)",
                               r ? "," : "", k[i].running[r].topic, k[i].running[r].group,
                               k[i].running[r].offset, age);
    }
    cli_table_row(tb, k[i].name, k[i].lost ? "lost" : "alive", *host ? host : "-",
                  k[i].pid ? pid : "-", handled, failed, seen, *groups ? groups : "-",
                  *running ? running : "-");
  }
  return cli_table_print(tb, stdout);
}

static int forget(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram workers forget NAME\n"
      "\n"
      "Removes the record of worker NAME (a worker that stopped for good). A fetch or a\n"
      "heartbeat by that name registers it again.\n";
  const struct cli_opt opts[] = {CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "workers forget", argc, argv);
  int status = cli_args_parse(&a, opts, h, 1, 1, "NAME");
  if (status != CLI_GO) return status;
  if ((status = cli_open(c, CLI_OPEN_EXISTING))) return status;
  int rc = engram_worker_forget(c->log, a.pos[0]);
  if (rc != 0) return cli_fail(c, rc, "workers forget %s", a.pos[0]);
  return 0;
}

int cmd_workers(struct cli *c, int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "forget")) return forget(c, argc - 1, argv + 1);
  int json = 0;
  uint64_t lost_ms = ENGRAM_DEFAULT_WORKER_LOST_MS;
  const struct cli_opt opts[] = {
      CLI_OPT_FLAG("--json", &json),
      CLI_OPT_DURATION("--lost-after", &lost_ms, .min = 1, .max = ENGRAM_MAX_DELAY_MS),
      CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "workers", argc, argv);
  int status = cli_args_parse(&a, opts, help, 0, 0, "no arguments");
  if (status != CLI_GO) return status;
  if ((status = cli_open(c, CLI_OPEN_READ))) return status;
  engram_worker_info *k = NULL;
  size_t n = 0;
  int rc = engram_worker_list(c->log, lost_ms, &k, &n);
  if (rc != 0) return cli_fail(c, rc, "list workers");
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_arr(&w);
    for (size_t i = 0; i < n; i++) json_worker(&w, &k[i]);
    json_arr_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
  } else {
    status = text(k, n, cli_now_ns());
  }
  engram_free(k);
  return status;
}
