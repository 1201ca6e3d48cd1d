/* cmd_info.c — info: what the daemon behind --connect is (version, durability, limits,
 * uptime, counters). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char *const durability_names[] = {"sync", "nometasync", "async"};

static const char *durability_name(uint32_t d) {
  return d < sizeof durability_names / sizeof *durability_names ? durability_names[d] : "unknown";
}

int cmd_info(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram --connect ENDPOINT info [--json]\n"
      "\n"
      "Asks the daemon (engram serve) what it is: its version and protocol, the durability\n"
      "of its log, its limits (largest request, events per append), its worker threads,\n"
      "how long it has run, and its counters (requests, errors, events appended, commits\n"
      "and the flushes they cost), and the id of its log (as `engram stat` prints it).\n"
      "Two requests. Needs --connect: an embedded log has no daemon.\n"
      "\n"
      "options:\n"
      "  --json     one object: {\"version\":STR, \"durability\":STR, and the numbers by the\n"
      "             names of the text output; \"durability\" is a number there, its\n"
      "             name is \"durability_name\"}\n"
      "  -h, --help this help\n";
  int json = 0;
  struct cli_args a;
  int status = cli_args_json(&a, "info", argc, argv, h, 0, 0, "no arguments", &json);
  if (status != CLI_GO) return status;
  if (!c->connect) {
    fprintf(stderr, "engram: info: asks a daemon; give --connect ENDPOINT\n");
    return CLI_EXIT_USAGE;
  }
  if ((status = cli_open(c, CLI_OPEN_EXISTING))) return status;
  engram_server_info in;
  int rc = engram_server_info_get(c->log, &in);
  if (rc != 0) return cli_fail(c, rc, "info");
  engram_log_info li;
  if ((rc = engram_log_info_get(c->log, &li)) != 0) return cli_fail(c, rc, "info: log id");
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_obj(&w);
    json_kstr(&w, "version", in.version);
#define X(type, name) json_ku64(&w, #name, (uint64_t)in.name);
    ENGRAM_SERVER_INFO_FIELDS(X)
#undef X
    json_kstr(&w, "durability_name", durability_name(in.durability));
    json_kstr(&w, "log_id", li.id);
    json_obj_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
    return status;
  }
  printf("%-17s %s\n", "version", in.version);
  printf("%-17s %s\n", "durability_name", durability_name(in.durability));
#define X(type, name) printf("%-17s %" PRIu64 "\n", #name, (uint64_t)in.name);
  ENGRAM_SERVER_INFO_FIELDS(X)
#undef X
  printf("%-17s %s\n", "log_id", li.id);
  return 0;
}
