/* cmd_info.c — `engram info`: the daemon's own counters (requests, errors, waiting
 * fetches), like `redis-cli info` or `nats server info`. */
#include <inttypes.h>
#include <string.h>

#include "cli.h"

static const char help[] =
    "usage: engram --connect ENDPOINT info [--json]\n"
    "\n"
    "Prints the counters of the daemon at ENDPOINT: its version, uptime, requests\n"
    "answered (and how many failed or were malformed), events appended through it,\n"
    "notifications published, worker threads, requests waiting for a worker and\n"
    "long-poll fetches waiting for events.\n"
    "\n"
    "options:\n"
    "  --json     {\"version\",\"uptime_ms\",\"requests\",\"errors\",\"bad_requests\",\n"
    "             \"appended\",\"notifications\",\"workers\",\"queued\",\"waiting_fetches\"}\n"
    "  -h, --help this help\n";

int cmd_info(struct cli *c, int argc, char **argv) {
  int json = 0;
  const struct cli_opt opts[] = {CLI_OPT_FLAG("--json", &json), CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "info", argc, argv);
  int status = cli_args_parse(&a, opts, help, 0, 0, "no arguments");
  if (status != CLI_GO) return status;
  if ((status = cli_open(c, CLI_OPEN_READ))) return status;
  engram_server_stats st;
  int rc = engram_server_stats_get(c->log, &st);
  if (rc == ENGRAM_ENOTSUP)
    return cli_usage(a.cmd, "info shows a daemon's counters: use --connect ENDPOINT");
  if (rc != 0) return cli_fail(c, rc, "info");
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_obj(&w);
    json_kstr(&w, "version", st.version);
    json_ku64(&w, "uptime_ms", st.uptime_ms);
    json_ku64(&w, "requests", st.requests);
    json_ku64(&w, "errors", st.errors);
    json_ku64(&w, "bad_requests", st.bad_requests);
    json_ku64(&w, "appended", st.appended);
    json_ku64(&w, "notifications", st.notifications);
    json_ku64(&w, "workers", st.workers);
    json_ku64(&w, "queued", st.queued);
    json_ku64(&w, "waiting_fetches", st.parked);
    json_obj_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
    return status;
  }
  char up[32];
  cli_fmt_age((int64_t)st.uptime_ms * 1000000, up, sizeof up);
  printf("version:          %s\n", st.version);
  printf("uptime:           %s\n", up);
  printf("requests:         %" PRIu64 "\n", st.requests);
  printf("errors:           %" PRIu64 "\n", st.errors);
  printf("bad requests:     %" PRIu64 "\n", st.bad_requests);
  printf("appended:         %" PRIu64 "\n", st.appended);
  printf("notifications:    %" PRIu64 "\n", st.notifications);
  printf("workers:          %" PRIu32 "\n", st.workers);
  printf("queued:           %" PRIu32 "\n", st.queued);
  printf("waiting fetches:  %" PRIu32 "\n", st.parked);
  return 0;
}
