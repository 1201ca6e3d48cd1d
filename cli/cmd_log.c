/* cmd_log.c — commands on the log and its topics: read, topics, topic, verify, backup,
 * sync. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"

#define READ_CHUNK 1000

/* ---------------------------------------------------------------------------------
 * read
 * ------------------------------------------------------------------------------ */
static const char read_help[] =
    "usage: engram read TOPIC [--from OFFSET | --last N | --since TIME] [--count N]\n"
    "                   [--follow] [--json]\n"
    "\n"
    "Prints events of TOPIC in offset order, one per line: offset, append time, type,\n"
    "key (- when none) and the start of the payload.\n"
    "\n"
    "options:\n"
    "  --from OFFSET  first offset to print (default 1: the oldest stored event)\n"
    "  --last N       the newest N events instead\n"
    "  --since TIME   from the first event appended at or after TIME: @RFC3339,\n"
    "                 @UNIX-SECONDS, or a duration ago (10m, 2h, 7d)\n"
    "  --count N      at most N events (default: all)\n"
    "  --follow       at the head, wait for new events and print them as they come\n"
    "                 (until Ctrl-C, or --count events in all)\n"
    "  --json         one JSON object per line: {\"topic\",\"offset\",\"type\",\"key\",\n"
    "                 \"headers\",\"timestamp_ns\",\"content_type\",\"payload\",\n"
    "                 \"idempotency_key\"} plus \"deliver_at_ns\" when set; a payload that\n"
    "                 is not UTF-8 comes as \"payload_base64\" instead of \"payload\"\n"
    "  -h, --help     this help\n"
    "\n"
    "Offsets are dense, so a missing offset below the head is damage: read prints the\n"
    "events before a damaged or missing record, then fails with its offset (status 1).\n"
    "On a topic compacted by key, the offsets compaction removed are shown as gaps:\n"
    "'-- offsets A..B removed by key compaction' (with --json: {\"topic\",\n"
    "\"removed_from\",\"removed_to\",\"removed_by\"}).\n";

/* The first offset of topic whose event was appended at or after since_ns (head + 1 when
 * none): a binary search over the stored offsets, whose append times do not decrease. */
static int offset_since(struct cli *c, const char *topic, int64_t since_ns, uint64_t *out) {
  engram_topic_info info;
  int rc = engram_topic_info_get(c->log, topic, &info);
  if (rc != 0) return cli_fail(c, rc, "read %s", topic);
  uint64_t lo = info.first_offset ? info.first_offset : 1, hi = info.head_offset + 1;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    engram_batch *b = NULL;
    rc = engram_read(c->log, topic, mid, &b);
    if (rc != 0) return cli_fail(c, rc, "read %s offset %" PRIu64, topic, mid);
    int64_t t = b && b->count ? b->events[0].timestamp_ns : 0;
    engram_batch_free(b);
    if (t < since_ns)
      lo = mid + 1;
    else
      hi = mid;
  }
  *out = lo;
  return 0;
}

/* --since: "@TIME", or a duration ago. */
static const char *parse_since(const char *v, int64_t *ns) {
  if (v[0] == '@') return cli_parse_time_ns(v, ns);
  uint64_t ms;
  const char *e = cli_parse_duration_ms(v, 100ull * 365 * 86400000, &ms);
  if (e) return "expected @TIME or a duration ago (e.g. 10m, 2h, 7d)";
  *ns = cli_now_ns() - (int64_t)ms * 1000000;
  return NULL;
}

/* How long --follow sleeps between looks at a topic's head. */
#define FOLLOW_POLL_NS 100000000L

/* Says that offsets [lo, hi] were removed by key compaction: a line of text, or a JSON
 * object {"topic","removed_from","removed_to","removed_by":"key compaction"}. */
static int print_gap(json_writer *w, int json, const char *topic, uint64_t lo, uint64_t hi) {
  if (!json) {
    if (lo == hi)
      printf("-- offset %" PRIu64 " removed by key compaction\n", lo);
    else
      printf("-- offsets %" PRIu64 "..%" PRIu64 " removed by key compaction\n", lo, hi);
    return 0;
  }
  json_obj(w);
  json_kstr(w, "topic", topic);
  json_ku64(w, "removed_from", lo);
  json_ku64(w, "removed_to", hi);
  json_kstr(w, "removed_by", "key compaction");
  json_obj_end(w);
  return cli_json_emit(w) ? CLI_EXIT_FAIL : 0;
}

/* Prints b's events and the gaps key compaction left between them, moving *from past
 * them and counting the events off *count. */
static int print_events(json_writer *w, int json, const char *topic, const engram_batch *b,
                        uint64_t *from, uint64_t *count) {
  uint64_t at = b && b->removed ? b->from : 0; /* the next offset the gaps start from */
  for (size_t i = 0; b && i<b->count && * count> 0; i++) {
    const engram_event *ev = &b->events[i];
    if (at && ev->offset > at && print_gap(w, json, topic, at, ev->offset - 1))
      return CLI_EXIT_FAIL;
    if (at) at = ev->offset + 1;
    if (json) {
      cli_json_event(w, ev, topic, NULL);
      if (cli_json_emit(w)) return CLI_EXIT_FAIL;
    } else {
      cli_text_event(stdout, ev, 0);
    }
    /* Never go backwards, whatever the batch holds. */
    if (ev->offset >= *from) *from = ev->offset + 1;
    (*count)--;
  }
  /* A gap at the end of the range (the head's tombstone went): *from moves over it. */
  if (at && *count > 0 && b->next > at) {
    if (print_gap(w, json, topic, at, b->next - 1)) return CLI_EXIT_FAIL;
    if (b->next > *from) *from = b->next;
  }
  return 0;
}

/* A damaged record fails the whole range read, so the chunk is read again one offset at
 * a time: the events before the damage are printed and the error names its offset.
 * Offsets are dense, so an offset the range read reached cannot be "not found" here: a
 * hole is damage too, and the command fails rather than skip an event silently. */
static int read_singly(struct cli *c, json_writer *w, int json, const char *topic, size_t want,
                       uint64_t *from, uint64_t *count) {
  for (size_t k = 0; k<want && * count> 0 && *from != 0; k++) {
    uint64_t off = *from;
    engram_batch *b = NULL;
    int rc = engram_read(c->log, topic, off, &b);
    if (rc == ENGRAM_ENOTFOUND)
      return cli_error("read %s: offset %" PRIu64
                       " is missing after a damage report: the log is damaged; run `engram "
                       "verify` and restore from a backup",
                       topic, off);
    if (rc != 0) return cli_fail(c, rc, "read %s offset %" PRIu64, topic, off);
    int status = print_events(w, json, topic, b, from, count);
    engram_batch_free(b);
    if (status) return status;
    if (*from == off) *from = off + 1;
  }
  return 0;
}

int cmd_read(struct cli *c, int argc, char **argv) {
  uint64_t from = 1, last = 0, count = UINT64_MAX;
  int json = 0, follow = 0;
  const char *since = NULL;
  const struct cli_opt opts[] = {CLI_OPT_OFFSET("--from", &from),
                                 CLI_OPT_U64("--last", &last, .min = 1),
                                 CLI_OPT_TEXT("--since", &since),
                                 CLI_OPT_U64("--count", &count, .min = 1),
                                 CLI_OPT_FLAG("--follow", &follow),
                                 CLI_OPT_FLAG("--json", &json),
                                 CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "read", argc, argv);
  int r = cli_args_parse(&a, opts, read_help, 1, 1, "TOPIC");
  if (r != CLI_GO) return r;
  const int have_from = cli_args_given(&a, "--from") != 0;
  if (have_from + (last != 0) + (since != NULL) > 1)
    return cli_usage(a.cmd, "--from, --last and --since exclude each other");
  int64_t since_ns = 0;
  const char *e = since ? parse_since(since, &since_ns) : NULL;
  if (e) return cli_usage(a.cmd, "--since '%s': %s", since, e);
  const char *topic = a.pos[0];
  int status = cli_open(c, CLI_OPEN_READ);
  if (status) return status;
  int rc;
  if (last) {
    engram_topic_info info;
    if ((rc = engram_topic_info_get(c->log, topic, &info)) != 0)
      return cli_fail(c, rc, "read %s", topic);
    if (info.head_offset == 0 && !follow) return 0;
    from = info.head_offset >= last ? info.head_offset - last + 1 : 1;
    if (last < count && !follow) count = last;
  }
  if (since && (status = offset_since(c, topic, since_ns, &from))) return status;

  json_writer w;
  json_w_init(&w);
  while (count > 0 && !status) {
    engram_batch *b = NULL;
    size_t want = count < READ_CHUNK ? (size_t)count : READ_CHUNK;
    uint64_t before = from;
    rc = engram_read_range(c->log, topic, from, want, &b);
    if (rc == ENGRAM_ECORRUPT) {
      status = read_singly(c, &w, json, topic, want, &from, &count);
      continue;
    }
    if (rc != 0) {
      status = cli_fail(c, rc, "read %s from offset %" PRIu64, topic, from);
      break;
    }
    status = print_events(&w, json, topic, b, &from, &count);
    size_t n = b ? b->count : 0;
    engram_batch_free(b);
    if (from == 0) break;
    if (n == 0 || from == before) {
      if (!follow) break;
      /* At the head: what was printed is out before waiting for more. */
      if (fflush(stdout) != 0) break;
      struct timespec ts = {0, FOLLOW_POLL_NS};
      nanosleep(&ts, NULL);
    }
  }
  json_w_free(&w);
  return status;
}

/* ---------------------------------------------------------------------------------
 * topics, topic show
 * ------------------------------------------------------------------------------ */
static const char topics_help[] =
    "usage: engram topics [--json]\n"
    "\n"
    "Lists the topics with their event counts and offsets.\n"
    "\n"
    "options:\n"
    "  --json     a JSON array of topic objects (the shape of `engram topic show --json`)\n"
    "  -h, --help this help\n";

/* Parses a command whose only option is --json: CLI_GO with *json set, or the exit
 * status. */
static int json_only(struct cli_args *a, const char *help, int min, int max, const char *names,
                     int *json) {
  const struct cli_opt opts[] = {CLI_OPT_FLAG("--json", json), CLI_OPT_END};
  *json = 0;
  return cli_args_parse(a, opts, help, min, max, names);
}

int cmd_topics(struct cli *c, int argc, char **argv) {
  struct cli_args a;
  int json;
  cli_args_init(&a, "topics", argc, argv);
  int status = json_only(&a, topics_help, 0, 0, "no arguments", &json);
  if (status != CLI_GO) return status;
  if ((status = cli_open(c, CLI_OPEN_READ))) return status;
  engram_topic_info *t = NULL;
  size_t n = 0;
  int rc = engram_topic_list(c->log, &t, &n);
  if (rc != 0) return cli_fail(c, rc, "list topics");
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_arr(&w);
    for (size_t i = 0; i < n; i++) cli_json_topic(&w, &t[i]);
    json_arr_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
  } else {
    struct cli_table *tb = cli_table_new(6);
    cli_table_row(tb, "TOPIC", "EVENTS", "FIRST", "HEAD", "DICT", "CREATED");
    for (size_t i = 0; i < n; i++) {
      char cnt[24], first[24], head[24], dict[24], created[48], name[ENGRAM_MAX_NAME + 1];
      snprintf(name, sizeof name, "%.*s", (int)sizeof name - 1, t[i].name);
      snprintf(cnt, sizeof cnt, "%" PRIu64, t[i].count);
      snprintf(first, sizeof first, "%" PRIu64, t[i].first_offset);
      snprintf(head, sizeof head, "%" PRIu64, t[i].head_offset);
      if (t[i].dict_id)
        snprintf(dict, sizeof dict, "%" PRIu32, t[i].dict_id);
      else
        snprintf(dict, sizeof dict, "-");
      cli_fmt_time(t[i].created_ns, created, sizeof created);
      cli_table_row(tb, name, cnt, first, head, dict, created);
    }
    status = cli_table_print(tb, stdout);
  }
  engram_free(t);
  return status;
}

static void show_topic_text(const engram_topic_info *t) {
  char created[48];
  cli_fmt_time(t->created_ns, created, sizeof created);
  printf("topic:               %.*s\n", (int)sizeof t->name, t->name);
  printf("events:              %" PRIu64 "\n", t->count);
  printf("first offset:        %" PRIu64 "\n", t->first_offset);
  printf("head offset:         %" PRIu64 "\n", t->head_offset);
  if (t->config.compress_threshold == UINT32_MAX)
    printf("compress threshold:  never\n");
  else
    printf("compress threshold:  %" PRIu32 " bytes\n", t->config.compress_threshold);
  printf("max payload:         %" PRIu32 " bytes\n", t->config.max_payload);
  if (t->config.flags & ENGRAM_TOPIC_NO_DICT)
    printf("dictionary:          never (--no-dict)\n");
  else if (t->dict_id)
    printf("dictionary:          id %" PRIu32 " (retrained after %" PRIu32 " events)\n", t->dict_id,
           t->config.dict_train_after);
  else
    printf("dictionary:          none yet (trained after %" PRIu32 " events)\n",
           t->config.dict_train_after);
  char age[48];
  if (t->config.max_age_ms)
    cli_fmt_age((int64_t)t->config.max_age_ms * 1000000, age, sizeof age);
  else
    snprintf(age, sizeof age, "none");
  printf("retention max age:   %s\n", age);
  if (t->config.max_bytes)
    printf("retention max bytes: %" PRIu64 "\n", t->config.max_bytes);
  else
    printf("retention max bytes: none\n");
  if (t->config.max_events)
    printf("retention max events: %" PRIu64 "\n", t->config.max_events);
  else
    printf("retention max events: none\n");
  printf("retention:           %s\n", t->config.flags & ENGRAM_TOPIC_RETAIN_FORCE
                                          ? "forced (may remove events groups have not finished)"
                                          : "safe (waits for unfinished groups)");
  if (t->config.flags & ENGRAM_TOPIC_COMPACT_KEY) {
    char ttl[48];
    cli_fmt_age((int64_t)t->config.tombstone_ttl_ms * 1000000, ttl, sizeof ttl);
    printf("key compaction:      on (newest event per key; tombstones kept %s)\n", ttl);
    if (t->config.tombstone_type[0]) printf("tombstone type:      %s\n", t->config.tombstone_type);
    printf("compacted gaps:      %" PRIu64 " offsets removed by key compaction\n", t->compacted);
  } else {
    printf("key compaction:      off\n");
  }
  printf("created:             %s\n", created);
}

/* ---------------------------------------------------------------------------------
 * topic create | drop | show | train-dict
 * ------------------------------------------------------------------------------ */
static const char topic_help[] =
    "usage: engram topic create TOPIC [--compress-threshold N|never] [--max-payload BYTES]\n"
    "                                 [--no-dict | --dict-after N] [retention options]\n"
    "       engram topic set TOPIC [--max-age D] [--max-bytes SIZE] [--max-events N]\n"
    "                              [--force | --no-force]\n"
    "                              [--compact-by-key | --no-compact-by-key]\n"
    "                              [--tombstone-ttl D] [--tombstone-type TYPE]\n"
    "       engram topic drop TOPIC\n"
    "       engram topic show TOPIC [--json]\n"
    "       engram topic train-dict TOPIC\n"
    "\n"
    "Manages topics. Topic names are 1..200 bytes of A-Z a-z 0-9 . _ -\n"
    "`engram topic SUBCOMMAND --help` describes each one.\n";

#define RETENTION_HELP                                                                    \
  "  --max-age D             retention: remove events older than D (e.g. 7d, 12h; 0 =\n"  \
  "                          no limit)\n"                                                 \
  "  --max-bytes SIZE        retention: keep the topic's records under SIZE (K, M, G)\n"  \
  "  --max-events N          retention: keep at most N events\n"                          \
  "  --force                 retention may remove events a group has not finished or a\n" \
  "                          delayed delivery waits for (the groups count them as\n"      \
  "                          skipped by retention); by default it waits for them\n"       \
  "  --compact-by-key        key compaction: keep only the newest event of each key\n"    \
  "                          (events without a key always stay)\n"                        \
  "  --tombstone-ttl D       key compaction: remove a tombstone D after its append\n"     \
  "                          (default 1d)\n"                                              \
  "  --tombstone-type TYPE   key compaction: events of TYPE (e.g. memory.deleted) are\n"  \
  "                          tombstones, as if appended with --tombstone ('' = none)\n"

static const char create_help[] =
    "usage: engram topic create TOPIC [options]\n"
    "\n"
    "Creates TOPIC (and the log directory if it does not exist yet).\n"
    "\n"
    "options:\n"
    "  --compress-threshold N  zstd-compress payloads of at least N bytes (default 256);\n"
    "                          'never' turns compression off\n"
    "  --max-payload BYTES     largest payload accepted (default 1M; at most 64M);\n"
    "                          K, M, G suffixes are powers of 1024\n"
    "  --no-dict               never train or use a zstd dictionary\n"
    "  --dict-after N          train a dictionary once the topic holds N events\n"
    "                          (default 4096)\n" RETENTION_HELP
    "  --json                  print {\"ok\":true,\"action\",\"topic\"} instead\n"
    "  -h, --help              this help\n";

/* --compress-threshold N|never */
static int set_threshold(struct cli_args *a, const struct cli_opt *o, const char *val) {
  uint32_t *to = o->to;
  uint64_t v;
  const char *e;
  if (strcmp(val, "never") == 0) {
    *to = UINT32_MAX;
    return 0;
  }
  if ((e = cli_parse_size(val, &v)) || (v == 0 && (e = "must be at least 1")) ||
      (v >= UINT32_MAX && (e = "too large (use 'never')")))
    return cli_usage(a->cmd, "--compress-threshold '%s': %s", val, e);
  *to = (uint32_t)v;
  return 0;
}

static int topic_create(struct cli *c, int argc, char **argv) {
  engram_topic_config cfg;
  memset(&cfg, 0, sizeof cfg);
  uint64_t max_payload = 0;
  int no_dict = 0, force = 0, json = 0, compact = 0;
  const char *tomb_type = NULL;
  const struct cli_opt opts[] = {
      CLI_OPT_FLAG("--json", &json),
      CLI_OPT_CUSTOM("--compress-threshold", &cfg.compress_threshold, set_threshold),
      CLI_OPT_SIZE("--max-payload", &max_payload, .min = 1, .max = ENGRAM_MAX_PAYLOAD_LIMIT,
                   .high = "over the 64 MiB limit"),
      CLI_OPT_FLAG("--no-dict", &no_dict),
      CLI_OPT_U32("--dict-after", &cfg.dict_train_after, .min = 1),
      CLI_OPT_DURATION("--max-age", &cfg.max_age_ms, .max = ENGRAM_MAX_RETENTION_AGE_MS),
      CLI_OPT_SIZE("--max-bytes", &cfg.max_bytes),
      CLI_OPT_U64("--max-events", &cfg.max_events),
      CLI_OPT_FLAG("--force", &force),
      CLI_OPT_FLAG("--compact-by-key", &compact),
      CLI_OPT_DURATION("--tombstone-ttl", &cfg.tombstone_ttl_ms, .min = 1,
                       .max = ENGRAM_MAX_RETENTION_AGE_MS),
      CLI_OPT_STR("--tombstone-type", &tomb_type),
      CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "topic create", argc, argv);
  int r = cli_args_parse(&a, opts, create_help, 1, 1, "TOPIC");
  if (r != CLI_GO) return r;
  if (compact) cfg.flags |= ENGRAM_TOPIC_COMPACT_KEY;
  if (tomb_type) snprintf(cfg.tombstone_type, sizeof cfg.tombstone_type, "%s", tomb_type);
  if (tomb_type && strlen(tomb_type) >= sizeof cfg.tombstone_type)
    return cli_usage(a.cmd, "--tombstone-type: over %d bytes", ENGRAM_MAX_TYPE);
  cfg.max_payload = (uint32_t)max_payload;
  if (no_dict) cfg.flags |= ENGRAM_TOPIC_NO_DICT;
  if (force) cfg.flags |= ENGRAM_TOPIC_RETAIN_FORCE;
  if ((cfg.flags & ENGRAM_TOPIC_NO_DICT) && cfg.dict_train_after)
    return cli_usage(a.cmd, "--no-dict and --dict-after exclude each other");
  int status = cli_open(c, CLI_OPEN_CREATE);
  if (status) return status;
  int rc = engram_topic_create(c->log, a.pos[0], &cfg);
  if (rc != 0) return cli_fail_arg(c, rc, "create topic %s", a.pos[0]);
  char text[ENGRAM_MAX_NAME + 32];
  snprintf(text, sizeof text, "created topic %s", a.pos[0]);
  struct cli_done d = {"topic create", a.pos[0], NULL, 0, 0, -1};
  return cli_done(json, &d, text);
}

static int topic_set(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram topic set TOPIC [options]\n"
      "\n"
      "Changes TOPIC's retention and key compaction; settings not given stay as they\n"
      "are. New limits apply\n"
      "from the next retention slice (`engram serve` runs them in the background; or\n"
      "run `engram compact`).\n"
      "\n"
      "options:\n" RETENTION_HELP
      "  --no-force              retention waits for unfinished groups again\n"
      "  --no-compact-by-key     key compaction off (removed events stay removed)\n"
      "  --json                  print {\"ok\":true,\"action\",\"topic\"} instead\n"
      "  -h, --help              this help\n";
  /* UINT64_MAX marks an option not given. */
  uint64_t age = UINT64_MAX, bytes = UINT64_MAX, events = UINT64_MAX, ttl = UINT64_MAX;
  int force = 0, no_force = 0, json = 0, compact = 0, no_compact = 0;
  const char *tomb_type = NULL;
  const struct cli_opt opts[] = {
      CLI_OPT_FLAG("--json", &json),
      CLI_OPT_DURATION("--max-age", &age, .max = ENGRAM_MAX_RETENTION_AGE_MS),
      CLI_OPT_SIZE("--max-bytes", &bytes, .max = UINT64_MAX - 1),
      CLI_OPT_U64("--max-events", &events, .max = UINT64_MAX - 1),
      CLI_OPT_FLAG("--force", &force),
      CLI_OPT_FLAG("--no-force", &no_force),
      CLI_OPT_FLAG("--compact-by-key", &compact),
      CLI_OPT_FLAG("--no-compact-by-key", &no_compact),
      CLI_OPT_DURATION("--tombstone-ttl", &ttl, .min = 1, .max = ENGRAM_MAX_RETENTION_AGE_MS),
      CLI_OPT_STR("--tombstone-type", &tomb_type),
      CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "topic set", argc, argv);
  int status = cli_args_parse(&a, opts, h, 1, 1, "TOPIC");
  if (status != CLI_GO) return status;
  if (force && no_force) return cli_usage(a.cmd, "--force and --no-force exclude each other");
  if (compact && no_compact)
    return cli_usage(a.cmd, "--compact-by-key and --no-compact-by-key exclude each other");
  if (tomb_type && strlen(tomb_type) > ENGRAM_MAX_TYPE)
    return cli_usage(a.cmd, "--tombstone-type: over %d bytes", ENGRAM_MAX_TYPE);
  if ((status = cli_open(c, CLI_OPEN_EXISTING))) return status;
  engram_topic_info info;
  int rc = engram_topic_info_get(c->log, a.pos[0], &info);
  if (rc != 0) return cli_fail(c, rc, "set topic %s", a.pos[0]);
  engram_topic_config cfg = info.config;
  if (age != UINT64_MAX) cfg.max_age_ms = age;
  if (bytes != UINT64_MAX) cfg.max_bytes = bytes;
  if (events != UINT64_MAX) cfg.max_events = events;
  if (force) cfg.flags |= ENGRAM_TOPIC_RETAIN_FORCE;
  if (no_force) cfg.flags &= ~(uint32_t)ENGRAM_TOPIC_RETAIN_FORCE;
  if (compact) cfg.flags |= ENGRAM_TOPIC_COMPACT_KEY;
  if (no_compact) cfg.flags &= ~(uint32_t)ENGRAM_TOPIC_COMPACT_KEY;
  if (ttl != UINT64_MAX) cfg.tombstone_ttl_ms = ttl;
  if (tomb_type) snprintf(cfg.tombstone_type, sizeof cfg.tombstone_type, "%s", tomb_type);
  if ((rc = engram_topic_set(c->log, a.pos[0], &cfg)) != 0)
    return cli_fail_arg(c, rc, "set topic %s", a.pos[0]);
  char text[ENGRAM_MAX_NAME + 32];
  snprintf(text, sizeof text, "updated topic %s", a.pos[0]);
  struct cli_done d = {"topic set", a.pos[0], NULL, 0, 0, -1};
  return cli_done(json, &d, text);
}

/* Parses `topic SUB TOPIC [--json]`: CLI_GO or the exit status. */
static int topic_only(struct cli_args *a, const char *help, int *json) {
  const struct cli_opt opts[] = {CLI_OPT_FLAG("--json", json), CLI_OPT_END};
  return cli_args_parse(a, opts, help, 1, 1, "TOPIC");
}

static int topic_drop(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram topic drop TOPIC [--json]\n"
      "\n"
      "Drops TOPIC with its events, idempotency keys, dictionaries and consumer groups.\n"
      "There is no undo. Readers and writers of TOPIC (threads, other processes, the\n"
      "daemon) get 'no such topic' from then on; created again, it starts empty at\n"
      "offset 1.\n"
      "\n"
      "options:\n" CLI_JSON_DONE_HELP;
  struct cli_args a;
  int json = 0;
  cli_args_init(&a, "topic drop", argc, argv);
  int status = topic_only(&a, h, &json);
  if (status != CLI_GO) return status;
  if ((status = cli_open(c, CLI_OPEN_EXISTING))) return status;
  int rc = engram_topic_drop(c->log, a.pos[0]);
  if (rc != 0) return cli_fail(c, rc, "drop topic %s", a.pos[0]);
  char text[ENGRAM_MAX_NAME + 32];
  snprintf(text, sizeof text, "dropped topic %s", a.pos[0]);
  struct cli_done d = {"topic drop", a.pos[0], NULL, 0, 0, -1};
  return cli_done(json, &d, text);
}

static int topic_show(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram topic show TOPIC [--json]\n"
      "\n"
      "Shows TOPIC's counts, offsets and settings.\n"
      "\n"
      "options:\n"
      "  --json     {\"topic\",\"count\",\"first_offset\",\"head_offset\",\"dict_id\",\n"
      "             "
      "\"created_ns\",\"compacted\",\"config\":{\"compress_threshold\",\"max_payload\",\n"
      "             \"dict_train_after\",\"no_dict\",\"max_age_ms\",\"max_bytes\",\n"
      "             \"max_events\",\"tombstone_ttl_ms\",\"retain_force\",\n"
      "             \"compact_by_key\",\"tombstone_type\"}}\n"
      "  -h, --help this help\n";
  struct cli_args a;
  int json;
  cli_args_init(&a, "topic show", argc, argv);
  int status = json_only(&a, h, 1, 1, "TOPIC", &json);
  if (status != CLI_GO) return status;
  if ((status = cli_open(c, CLI_OPEN_READ))) return status;
  engram_topic_info info;
  int rc = engram_topic_info_get(c->log, a.pos[0], &info);
  if (rc != 0) return cli_fail(c, rc, "topic %s", a.pos[0]);
  if (!json) {
    show_topic_text(&info);
    return 0;
  }
  json_writer w;
  json_w_init(&w);
  cli_json_topic(&w, &info);
  status = cli_json_emit(&w);
  json_w_free(&w);
  return status;
}

static int topic_train(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram topic train-dict TOPIC [--json]\n"
      "\n"
      "Trains (or retrains) TOPIC's zstd dictionary from its newest events now and\n"
      "prints the new dictionary id. Older records keep the dictionary they were\n"
      "written with.\n"
      "\n"
      "options:\n"
      "  --json      print {\"ok\":true,\"action\",\"topic\",\"count\":DICT_ID}\n";
  struct cli_args a;
  int json = 0;
  cli_args_init(&a, "topic train-dict", argc, argv);
  int status = topic_only(&a, h, &json);
  if (status != CLI_GO) return status;
  if ((status = cli_open(c, CLI_OPEN_EXISTING))) return status;
  uint32_t id = 0;
  int rc = engram_topic_train_dict(c->log, a.pos[0], &id);
  if (rc != 0) return cli_fail(c, rc, "train dictionary for %s", a.pos[0]);
  char text[ENGRAM_MAX_NAME + 48];
  snprintf(text, sizeof text, "topic %s: dictionary %" PRIu32, a.pos[0], id);
  struct cli_done d = {"topic train-dict", a.pos[0], NULL, 0, 0, (int64_t)id};
  return cli_done(json, &d, text);
}

int cmd_topic(struct cli *c, int argc, char **argv) {
  static const struct cli_sub subs[] = {{"create", topic_create}, {"drop", topic_drop},
                                        {"show", topic_show},     {"train-dict", topic_train},
                                        {"set", topic_set},       {NULL, NULL}};
  return cli_dispatch_sub(c, "topic", subs, topic_help, argc, argv);
}

/* ---------------------------------------------------------------------------------
 * verify, backup, sync
 * ------------------------------------------------------------------------------ */
int cmd_verify(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram verify [--json]\n"
      "\n"
      "Checks every record of every topic (CRC, decoding, decompression), that every\n"
      "offset from a topic's first to its head is stored, and LMDB's structure (free\n"
      "pages, key order and entry counts of every database); prints how many records\n"
      "were checked. The walk runs in a child process: a damaged page that crashes it\n"
      "is reported, not fatal. Exits with status 1 when anything is damaged, naming the\n"
      "first damage on stderr; restore a damaged log from a backup. On a terminal\n"
      "stderr shows the progress (records checked of the total).\n"
      "\n"
      "options:\n"
      "  --json     {\"topics\":N,\"records\":N,\"damaged\":N,\"first_damage\":STR|null}\n"
      "  -h, --help this help\n";
  struct cli_args a;
  int json;
  cli_args_init(&a, "verify", argc, argv);
  int status = json_only(&a, h, 0, 0, "no arguments", &json);
  if (status != CLI_GO) return status;
  if ((status = cli_open(c, CLI_OPEN_READ))) return status;
  engram_verify_report r;
  memset(&r, 0, sizeof r);
  cli_progress_start("verifying");
  engram_progress_set(c->log, cli_progress_report, NULL);
  int rc = engram_verify(c->log, &r);
  cli_progress_stop();
  if (rc != 0) return cli_fail(c, rc, "verify");
  size_t fdl = strnlen(r.first_damage, sizeof r.first_damage);
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_obj(&w);
    json_ku64(&w, "topics", r.topics);
    json_ku64(&w, "records", r.records);
    json_ku64(&w, "damaged", r.damaged);
    json_key(&w, "first_damage");
    if (fdl)
      json_strn(&w, r.first_damage, fdl);
    else
      json_null(&w);
    json_obj_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
  } else {
    printf("checked %" PRIu64 " topic%s, %" PRIu64 " record%s: %" PRIu64 " damaged\n", r.topics,
           r.topics == 1 ? "" : "s", r.records, r.records == 1 ? "" : "s", r.damaged);
  }
  if (r.damaged > 0)
    return cli_error("verify: %" PRIu64 " damaged record%s; first: %.*s", r.damaged,
                     r.damaged == 1 ? "" : "s", (int)fdl, fdl ? r.first_damage : "unknown");
  return status;
}

int cmd_backup(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram backup DEST [--json]\n"
      "\n"
      "Writes a consistent, compacted copy of the log into directory DEST (created; it\n"
      "must not exist or must be empty; its parent must exist: mkdir -p it first; not\n"
      "inside the log's directory) while writers keep running. Open the copy with\n"
      "--data DEST. On a terminal stderr shows the progress (MiB copied of the total).\n"
      "\n"
      "options:\n" CLI_JSON_DONE_HELP;
  int json = 0;
  struct cli_args a;
  int status = cli_args_json(&a, "backup", argc, argv, h, 1, 1, "DEST", &json);
  if (status != CLI_GO) return status;
  if (!a.pos[0][0]) return cli_usage(a.cmd, "DEST must not be empty");
  if ((status = cli_open(c, CLI_OPEN_READ))) return status;
  cli_progress_start("writing the backup");
  engram_progress_set(c->log, cli_progress_report, NULL);
  int rc = engram_backup(c->log, a.pos[0]);
  cli_progress_stop();
  if (rc != 0) return cli_fail(c, rc, "backup to %s", a.pos[0]);
  char text[4200];
  snprintf(text, sizeof text, "backup written to %s", a.pos[0]);
  struct cli_done d = {"backup", NULL, NULL, 0, 0, -1};
  return cli_done(json, &d, text);
}

int cmd_sync(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram sync [--json]\n"
      "\n"
      "Forces everything committed so far to disk. Useful after writes made with\n"
      "--durability nometasync or async. Prints nothing (with --json: {\"ok\":true,...}).\n";
  int json = 0;
  struct cli_args a;
  int status = cli_args_json(&a, "sync", argc, argv, h, 0, 0, "no arguments", &json);
  if (status != CLI_GO) return status;
  if ((status = cli_open(c, CLI_OPEN_EXISTING))) return status;
  int rc = engram_sync(c->log);
  if (rc != 0) return cli_fail(c, rc, "sync");
  struct cli_done d = {"sync", NULL, NULL, 0, 0, -1};
  return json ? cli_done(json, &d, "") : 0;
}

/* ---------------------------------------------------------------------------------
 * compact
 * ------------------------------------------------------------------------------ */
/* With --reclaim, the log must be closed first (the reclaim needs it to itself) and may
 * not be a daemon's. Prints the sizes; returns the exit status. */
static int reclaim(struct cli *c, int json, const engram_compact_report *r) {
  const char *dir = cli_data_dir(c);
  engram_close(c->log);
  c->log = NULL;
  engram_reclaim_report rr;
  engram_reclaim_options o = {.progress = cli_progress_report};
  cli_progress_start("reclaiming");
  int rc = engram_reclaim(dir, &o, &rr);
  cli_progress_stop();
  if (rc != 0) { /* no handle now: the message is the thread's */
    const char *m = engram_errmsg(NULL);
    return *m ? cli_error("compact --%s", m)
              : cli_error("compact --reclaim %s: %s", dir, engram_strerror(rc));
  }
  uint64_t freed = rr.bytes_before > rr.bytes_after ? rr.bytes_before - rr.bytes_after : 0;
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_obj(&w);
#define X(type, name) json_ku64(&w, #name, (uint64_t)r->name);
    ENGRAM_COMPACT_REPORT_FIELDS(X)
#undef X
#define X(type, name) json_ku64(&w, #name, (uint64_t)rr.name);
    ENGRAM_RECLAIM_REPORT_FIELDS(X)
#undef X
    json_obj_end(&w);
    int status = cli_json_emit(&w);
    json_w_free(&w);
    return status;
  }
  printf("data.mdb: %" PRIu64 " bytes before, %" PRIu64 " after (%.1f MiB given back)\n",
         rr.bytes_before, rr.bytes_after, (double)freed / (1024.0 * 1024.0));
  return 0;
}

int cmd_compact(struct cli *c, int argc, char **argv) {
  static const char h[] =
      "usage: engram compact [TOPIC] [--reclaim] [--json]\n"
      "\n"
      "Applies the retention limits and key compaction of TOPIC (default: every topic)\n"
      "now, in short\n"
      "slices that let appends go on, and prints what was removed. Events a group has\n"
      "not finished are kept unless the topic was set with --force. The file does not\n"
      "shrink: LMDB reuses the freed pages for new events.\n"
      "\n"
      "With --reclaim it then gives the free space back to the file system: it writes a\n"
      "compacted copy of the whole log beside data.mdb and swaps it in, crash-safely\n"
      "(free disk space for the copy is needed). The log must not be open anywhere\n"
      "else: it is refused, naming the pids, while a daemon, worker or other command\n"
      "has it open; while it runs, other opens of the log fail at once. Not with\n"
      "--connect. On a terminal stderr shows the progress.\n"
      "\n"
      "options:\n"
      "  --reclaim  shrink data.mdb to the data it holds (an embedded log only)\n"
      "  --json     {\"removed\",\"slices\",\"skipped\",\"held_at\",\"max_slice_ns\",\n"
      "             \"max_slice_cpu_ns\",\"compacted\",\"tombstones\",\"compact_held_at\",\n"
      "             \"indexed\"}, with --reclaim also \"bytes_before\",\n"
      "             \"bytes_after\" (sizes of data.mdb)\n"
      "  -h, --help this help\n";
  int json = 0, do_reclaim = 0;
  const struct cli_opt opts[] = {CLI_OPT_FLAG("--json", &json),
                                 CLI_OPT_FLAG("--reclaim", &do_reclaim), CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "compact", argc, argv);
  int status = cli_args_parse(&a, opts, h, 0, 1, "[TOPIC]");
  if (status != CLI_GO) return status;
  if (do_reclaim && (c->connect || (!c->data && getenv("ENGRAM_CONNECT"))))
    return cli_error(
        "compact --reclaim: not through --connect: the daemon holds the log open; stop "
        "`engram serve` and run `engram compact --reclaim --data DIR` on its host");
  if ((status = cli_open(c, CLI_OPEN_EXISTING))) return status;
  const char *topic = a.npos ? a.pos[0] : NULL;
  engram_compact_report r;
  cli_progress_start("compacting");
  engram_progress_set(c->log, cli_progress_report, NULL);
  int rc = engram_compact(c->log, topic, &r);
  cli_progress_stop();
  if (rc != 0) return cli_fail(c, rc, "compact %s", topic ? topic : "");
  if (do_reclaim && json) return reclaim(c, json, &r);
  if (json) {
    json_writer w;
    json_w_init(&w);
    json_obj(&w);
#define X(type, name) json_ku64(&w, #name, (uint64_t)r.name);
    ENGRAM_COMPACT_REPORT_FIELDS(X)
#undef X
    json_obj_end(&w);
    status = cli_json_emit(&w);
    json_w_free(&w);
    return status;
  }
  printf("removed %" PRIu64 " events in %" PRIu64 " slices (longest %.2f ms)\n", r.removed,
         r.slices, r.max_slice_ns / 1e6);
  if (r.skipped)
    printf("%" PRIu64 " of them were unfinished for some group (forced retention)\n", r.skipped);
  if (r.held_at)
    printf("held at offset %" PRIu64
           ": a group has not finished it or its delayed delivery is "
           "ahead\n",
           r.held_at);
  if (r.compacted || r.indexed || r.compact_held_at)
    printf("key compaction removed %" PRIu64 " events (%" PRIu64 " expired tombstones)%s\n",
           r.compacted, r.tombstones, r.indexed ? " after indexing the stored ones" : "");
  if (r.compact_held_at)
    printf("key compaction held at offset %" PRIu64 ": a group has not finished it\n",
           r.compact_held_at);
  return do_reclaim ? reclaim(c, 0, &r) : 0;
}
