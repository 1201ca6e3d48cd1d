/* args.c — command-line parsing: typed option tables and positionals, numbers,
 * durations, times, sizes, start positions and name=value pairs. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cli.h"

void cli_args_init(struct cli_args *a, const char *cmd, int argc, char **argv) {
  memset(a, 0, sizeof *a);
  a->cmd = cmd;
  a->argc = argc;
  a->argv = argv;
  a->pos = argv + 1;
}

/* "must be at least 1", "at most 100000": the default refusals of a bound. */
static const char *bound(const char *custom, const char *word, uint64_t v, char *why, size_t len) {
  if (custom) return custom;
  snprintf(why, len, "%s %" PRIu64, word, v);
  return why;
}

/* The bounds of a number, size or duration (durations' max is their own limit). */
static const char *in_bounds(const struct cli_opt *o, uint64_t v, char *why, size_t len) {
  if (v < o->min && o->type == CLI_T_DURATION && !o->low) { /* "at least 1s", not "1" (ms) */
    char d[32];
    cli_fmt_duration_ms(o->min, d, sizeof d);
    snprintf(why, len, "must be at least %s", d);
    return why;
  }
  if (v < o->min) return bound(o->low, "must be at least", o->min, why, len);
  if (o->max && o->type != CLI_T_DURATION && v > o->max)
    return bound(o->high, "at most", o->max, why, len);
  return NULL;
}

const char *cli_opt_set(const struct cli_opt *o, const char *value, char *why, size_t len,
                        int *bare) {
  const char *e = NULL;
  uint64_t v = 0;
  *bare = 0;
  switch (o->type) {
    case CLI_T_FLAG:
      if (!value || !strcmp(value, "true") || !strcmp(value, "1"))
        *(int *)o->to = 1;
      else if (!strcmp(value, "false") || !strcmp(value, "0"))
        *(int *)o->to = 0;
      else
        e = "must be true or false";
      return e;
    case CLI_T_STR:
      *(const char **)o->to = value;
      return NULL;
    case CLI_T_TEXT:
      if (!value[0]) {
        *bare = 1;
        return o->what ? o->what : "needs a non-empty value";
      }
      *(const char **)o->to = value;
      return NULL;
    case CLI_T_U64:
    case CLI_T_U32:
      if ((e = o->type == CLI_T_U32 ? cli_parse_u32(value, (uint32_t *)o->to)
                                    : cli_parse_u64(value, (uint64_t *)o->to)))
        return e;
      v = o->type == CLI_T_U32 ? *(uint32_t *)o->to : *(uint64_t *)o->to;
      return in_bounds(o, v, why, len);
    case CLI_T_OFFSET:
      return cli_parse_offset(value, (uint64_t *)o->to);
    case CLI_T_DURATION:
      if ((e = cli_parse_duration_ms(value, o->max, (uint64_t *)o->to))) return e;
      return in_bounds(o, *(uint64_t *)o->to, why, len);
    case CLI_T_SIZE:
      if ((e = cli_parse_size(value, (uint64_t *)o->to))) return e;
      return in_bounds(o, *(uint64_t *)o->to, why, len);
    case CLI_T_START: {
      struct cli_start *st = o->to;
      if ((e = cli_parse_start(value, &st->start, &st->offset, &st->time_ns))) return e;
      st->text = value;
      return NULL;
    }
    case CLI_T_ENUM: {
      size_t n = 0, at = 0;
      for (; o->names[n]; n++)
        if (!strcmp(o->names[n], value)) {
          *(int *)o->to = (int)n;
          return NULL;
        }
      /* "must be sync, nometasync or async, not 'fast'" */
      at = (size_t)snprintf(why, len, "must be");
      for (size_t i = 0; i < n && at < len; i++)
        at += (size_t)snprintf(why + at, len - at, "%s %s",
                               i == 0      ? ""
                               : i + 1 < n ? ","
                                           : " or",
                               o->names[i]);
      if (at < len) snprintf(why + at, len - at, ", not '%s'", value);
      *bare = 1;
      return why;
    }
    case CLI_T_CUSTOM:
      break;
  }
  return "cannot be set here";
}

/* Positionals are moved down into pos[] as they are met; pos[npos] never lies past the
 * argument being read, so the compaction overwrites only what was already consumed. */
int cli_args_parse(struct cli_args *a, const struct cli_opt *opts, const char *help, int min,
                   int max, const char *names) {
  a->opts = opts;
  int nopts = 0;
  while (opts[nopts].name) nopts++;
  if (nopts > CLI_MAX_OPTS) /* a table this file cannot track: a bug, caught by any test */
    return cli_error("%s: over %d options in its table", a->cmd, CLI_MAX_OPTS);
  int only_pos = 0;
  for (int i = 1; i < a->argc;) {
    char *s = a->argv[i];
    if (only_pos || s[0] != '-' || s[1] == '\0') {
      a->pos[a->npos++] = s;
      i++;
      continue;
    }
    i++;
    if (strcmp(s, "--") == 0) {
      only_pos = 1;
      continue;
    }
    size_t nl = strlen(s);
    const char *eq = NULL;
    if (s[1] == '-' && (eq = strchr(s, '=')) != NULL) nl = (size_t)(eq - s);
    if ((nl == 2 && !memcmp(s, "-h", 2)) || (nl == 6 && !memcmp(s, "--help", 6))) {
      if (eq) return cli_usage(a->cmd, "--help takes no value");
      return cli_help(help);
    }
    int k = 0;
    for (; opts[k].name; k++)
      if (strlen(opts[k].name) == nl && memcmp(opts[k].name, s, nl) == 0) break;
    const struct cli_opt *o = &opts[k];
    if (!o->name) return cli_usage(a->cmd, "unknown option '%.*s'", (int)nl, s);
    const char *val = NULL;
    if (o->type != CLI_T_FLAG) {
      if (eq)
        val = eq + 1;
      else if (i < a->argc)
        val = a->argv[i++];
      else
        return cli_usage(a->cmd, "%s needs a value", o->name);
    } else if (eq) {
      return cli_usage(a->cmd, "%s takes no value", o->name);
    }
    a->seen[k] = ++a->nseen;
    if (o->type == CLI_T_CUSTOM) {
      int r = o->parse(a, o, val);
      if (r) return r;
      continue;
    }
    char why[256];
    int bare;
    const char *e = cli_opt_set(o, val, why, sizeof why, &bare);
    if (e && bare) return cli_usage(a->cmd, "%s %s", o->name, e);
    if (e) return cli_usage(a->cmd, "%s '%s': %s", o->name, val, e);
  }
  return cli_args_count(a, min, max, names) ? CLI_EXIT_USAGE : CLI_GO;
}

int cli_args_json(struct cli_args *a, const char *cmd, int argc, char **argv, const char *help,
                  int min, int max, const char *names, int *json) {
  const struct cli_opt opts[] = {CLI_OPT_FLAG("--json", json), CLI_OPT_END};
  cli_args_init(a, cmd, argc, argv);
  int r = cli_args_parse(a, opts, help, min, max, names);
  a->opts = NULL; /* the table lives in this call only (cli_args_given: never given) */
  return r;
}

int cli_args_offset(const struct cli_args *a, int i, uint64_t *offset) {
  const char *e = cli_parse_offset(a->pos[i], offset);
  return e ? cli_usage(a->cmd, "OFFSET '%s': %s", a->pos[i], e) : 0;
}

int cli_args_given(const struct cli_args *a, const char *name) {
  for (int k = 0; a->opts && a->opts[k].name; k++)
    if (strcmp(a->opts[k].name, name) == 0) return a->seen[k];
  return 0;
}

int cli_args_count(const struct cli_args *a, int min, int max, const char *names) {
  if (a->npos < min) return cli_usage(a->cmd, "missing arguments: expected %s", names);
  if (max >= 0 && a->npos > max)
    return cli_usage(a->cmd, "unexpected argument '%s': expected %s", a->pos[max], names);
  return 0;
}

/* ---------------------------------------------------------------------------------
 * Numbers.
 * ------------------------------------------------------------------------------ */
static int digit(char c) { return c >= '0' && c <= '9'; }

const char *cli_parse_u64(const char *s, uint64_t *out) {
  if (!*s) return "empty number";
  if (*s == '-') return "must not be negative";
  uint64_t v = 0;
  for (const char *p = s; *p; p++) {
    if (!digit(*p)) return "not a whole number";
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10) return "number too large";
    v = v * 10 + d;
  }
  *out = v;
  return NULL;
}

const char *cli_parse_u32(const char *s, uint32_t *out) {
  uint64_t v;
  const char *e = cli_parse_u64(s, &v);
  if (e) return e;
  if (v > UINT32_MAX) return "number too large (at most 4294967295)";
  *out = (uint32_t)v;
  return NULL;
}

const char *cli_parse_offset(const char *s, uint64_t *out) {
  const char *e = cli_parse_u64(s, out);
  if (e) return e;
  if (*out == 0) return "offsets start at 1";
  return NULL;
}

const char *cli_parse_size(const char *s, uint64_t *out) {
  static const struct {
    const char *suffix;
    unsigned shift;
  } units[] = {{"", 0},    {"b", 0},    {"k", 10}, {"kb", 10}, {"kib", 10}, {"m", 20},
               {"mb", 20}, {"mib", 20}, {"g", 30}, {"gb", 30}, {"gib", 30}};
  if (!*s) return "empty size";
  if (*s == '-') return "must not be negative";
  uint64_t v = 0;
  const char *p = s;
  if (!digit(*p)) return "not a size (e.g. 1048576, 512K, 4MiB)";
  for (; digit(*p); p++) {
    unsigned d = (unsigned)(*p - '0');
    if (v > (UINT64_MAX - d) / 10) return "size too large";
    v = v * 10 + d;
  }
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strcasecmp(p, units[i].suffix) != 0) continue;
    if (v > (UINT64_MAX >> units[i].shift)) return "size too large";
    *out = v << units[i].shift;
    return NULL;
  }
  return "unknown size unit (use K, M or G, powers of 1024)";
}

/* ---------------------------------------------------------------------------------
 * Durations.
 * ------------------------------------------------------------------------------ */
#define NS_PER_MS 1000000ull
#define NS_PER_S 1000000000ull

static uint64_t gcd(uint64_t a, uint64_t b) {
  while (b) {
    uint64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

/* The reason a duration over max_ms is refused: "over the limit of 30d". */
static const char *over(uint64_t max_ms) {
  static char why[64];
  char d[32];
  cli_fmt_duration_ms(max_ms, d, sizeof d);
  snprintf(why, sizeof why, "over the limit of %s", d);
  return why;
}

const char *cli_parse_duration_ms(const char *s, uint64_t max_ms, uint64_t *ms) {
  /* max_ms is one of engram.h's limits (at most a year), so max_ns and everything
   * compared with it stay far below UINT64_MAX. */
  const uint64_t max_ns = max_ms * NS_PER_MS;
  static const struct {
    const char *unit;
    uint64_t ns;
  } units[] = {{"ms", NS_PER_MS},
               {"s", NS_PER_S},
               {"m", 60 * NS_PER_S},
               {"h", 3600 * NS_PER_S},
               {"d", 86400 * NS_PER_S}};
  if (!*s) return "empty duration";
  if (*s == '-') return "a duration cannot be negative";
  uint64_t total = 0;
  const char *p = s;
  while (*p) {
    if (!digit(*p)) return "not a duration (e.g. 250ms, 30s, 2m, 1h, 1d)";
    uint64_t whole = 0;
    for (; digit(*p); p++) {
      whole = whole * 10 + (uint64_t)(*p - '0');
      if (whole > max_ns) return over(max_ms);
    }
    uint64_t frac = 0, scale = 1;
    if (*p == '.') {
      p++;
      if (!digit(*p)) return "a duration needs digits after '.'";
      for (; digit(*p); p++) {
        if (scale == NS_PER_S) return "too many digits after '.' (at most 9)";
        frac = frac * 10 + (uint64_t)(*p - '0');
        scale *= 10;
      }
    }
    const char *u = p;
    while (*p && !digit(*p) && *p != '.') p++;
    size_t ul = (size_t)(p - u);
    if (ul == 0) return "a duration needs a unit: ms, s, m, h or d (e.g. 30s)";
    uint64_t unit_ns = 0;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
      if (strlen(units[i].unit) == ul && memcmp(units[i].unit, u, ul) == 0) unit_ns = units[i].ns;
    if (!unit_ns) return "unknown unit (use ms, s, m, h or d)";
    if (whole > max_ns / unit_ns) return over(max_ms);
    /* frac/scale of a unit, reduced first so the product cannot overflow. */
    uint64_t g = gcd(unit_ns, scale);
    uint64_t seg = whole * unit_ns + frac * (unit_ns / g) / (scale / g);
    if (seg > max_ns - total) return over(max_ms);
    total += seg;
  }
  if (total % NS_PER_MS) return "finer than a millisecond";
  *ms = total / NS_PER_MS;
  return NULL;
}

/* ---------------------------------------------------------------------------------
 * Times.
 * ------------------------------------------------------------------------------ */

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = (unsigned)(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static int leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

/* Reads exactly n digits. */
static int fixed(const char **p, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (!digit((*p)[i])) return -1;
    v = v * 10 + ((*p)[i] - '0');
  }
  *p += n;
  *out = v;
  return 0;
}

/* Optional ".digits": nanoseconds (digits past the ninth must be zeros). */
static const char *fraction_ns(const char **p, int64_t *ns) {
  *ns = 0;
  if (**p != '.') return NULL;
  (*p)++;
  if (!digit(**p)) return "needs digits after '.'";
  int64_t scale = 100000000;
  for (; digit(**p); (*p)++) {
    if (scale == 0) {
      if (**p != '0') return "finer than a nanosecond";
      continue;
    }
    *ns += (**p - '0') * scale;
    scale /= 10;
  }
  return NULL;
}

#define MAX_SECONDS (INT64_MAX / (int64_t)NS_PER_S) /* 2262-04-11 */

static const char *rfc3339(const char *s, int64_t *out) {
  static const char bad[] = "not an RFC 3339 time (e.g. @2024-01-12T10:00:00Z)";
  static const unsigned char mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const char *p = s;
  int y, mo, d, h, mi, sec;
  if (fixed(&p, 4, &y) || *p++ != '-' || fixed(&p, 2, &mo) || *p++ != '-' || fixed(&p, 2, &d))
    return bad;
  if (*p != 'T' && *p != 't' && *p != ' ') return bad;
  p++;
  if (fixed(&p, 2, &h) || *p++ != ':' || fixed(&p, 2, &mi) || *p++ != ':' || fixed(&p, 2, &sec))
    return bad;
  if (mo < 1 || mo > 12) return "month out of range";
  int dim = mdays[mo - 1] + (mo == 2 && leap(y));
  if (d < 1 || d > dim) return "day out of range";
  if (h > 23 || mi > 59 || sec > 60) return "time of day out of range";
  int64_t frac;
  const char *e = fraction_ns(&p, &frac);
  if (e) return e;
  int64_t off = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int sign = *p++ == '-' ? -1 : 1, oh, om;
    if (fixed(&p, 2, &oh) || *p++ != ':' || fixed(&p, 2, &om)) return bad;
    if (oh > 23 || om > 59) return "UTC offset out of range";
    off = sign * (oh * 3600 + om * 60);
  } else {
    return "a time needs a zone: Z or +hh:mm";
  }
  if (*p) return bad;
  int64_t secs =
      days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec - off;
  if (secs < 0) return "before 1970";
  if (secs >= MAX_SECONDS) return "after 2262";
  *out = secs * (int64_t)NS_PER_S + frac;
  return NULL;
}

const char *cli_parse_time_ns(const char *s, int64_t *ns) {
  if (s[0] != '@') return "a time starts with @ (e.g. @2024-01-12T10:00:00Z or @1705053600)";
  s++;
  if (!*s) return "empty time";
  if (strlen(s) > 4 && s[4] == '-') return rfc3339(s, ns);
  if (*s == '-') return "before 1970";
  const char *p = s;
  int64_t secs = 0;
  if (!digit(*p)) return "not a time (e.g. @2024-01-12T10:00:00Z or @1705053600)";
  for (; digit(*p); p++) {
    secs = secs * 10 + (*p - '0');
    if (secs >= MAX_SECONDS) return "after 2262";
  }
  int64_t frac;
  const char *e = fraction_ns(&p, &frac);
  if (e) return e;
  if (*p) return "not a time (e.g. @2024-01-12T10:00:00Z or @1705053600)";
  *ns = secs * (int64_t)NS_PER_S + frac;
  return NULL;
}

const char *cli_parse_start(const char *s, engram_start *start, uint64_t *offset,
                            int64_t *time_ns) {
  if (strcmp(s, "earliest") == 0) {
    *start = ENGRAM_START_EARLIEST;
    return NULL;
  }
  if (strcmp(s, "latest") == 0) {
    *start = ENGRAM_START_LATEST;
    return NULL;
  }
  if (s[0] == '@') {
    *start = ENGRAM_START_TIME;
    return cli_parse_time_ns(s, time_ns);
  }
  if (!digit(s[0])) return "expected earliest, latest, an offset or @TIME";
  *start = ENGRAM_START_OFFSET;
  return cli_parse_offset(s, offset);
}

const char *cli_parse_kv(char *s, const char **name, const char **value) {
  char *eq = strchr(s, '=');
  if (!eq) return "expected name=value";
  if (eq == s) return "empty name before '='";
  *eq = '\0';
  *name = s;
  *value = eq + 1;
  return NULL;
}

int64_t cli_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
