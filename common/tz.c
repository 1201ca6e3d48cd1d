/* tz.c — time zones from TZif files (RFC 8536): the transitions of the 64-bit section and
 * the footer's POSIX TZ rule for times after the last one. Never touches TZ or tzset(). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cron.h"

#define MAX_FILE (1 << 20) /* larger than any real zone file */
#define MAX_TYPES 256      /* TZif type indices are one byte */
#define MAX_TRANSITIONS 100000

/* A POSIX TZ rule date: Mm.w.d, Jn (1-365, no Feb 29) or n (0-365). */
struct rule_date {
  char kind; /* 'M', 'J' or 'n' */
  int m, w, d, n;
  int32_t secs; /* local time of day of the change, may be < 0 or > 24 h */
};

struct tz {
  int64_t *times; /* transition instants, UTC seconds, ascending */
  uint8_t *idx;   /* type of each transition */
  size_t n;       /* transitions */
  int32_t utoff[MAX_TYPES];
  size_t n_types;
  /* The footer rule, for instants after the last transition (has_rule 0: keep the last
   * type). */
  int has_rule;
  int32_t std_off, dst_off; /* east of UTC */
  int has_dst;
  struct rule_date start, end;
};

static int fail(char *err, size_t errlen, int code, const char *fmt, const char *a) {
  if (err && errlen) snprintf(err, errlen, fmt, a);
  return code;
}

int tz_valid_name(const char *name) {
  size_t len = strlen(name);
  if (len == 0 || len > 64 || name[0] == '/' || name[len - 1] == '/') return 0;
  const char *word = name;
  for (const char *p = name;; p++) {
    if (*p == '/' || *p == '\0') {
      size_t wl = (size_t)(p - word);
      if (wl == 0) return 0;
      if (!*p) break;
      word = p + 1;
      continue;
    }
    char ch = *p;
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
          ch == '_' || ch == '+' || ch == '-'))
      return 0;
  }
  return 1;
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static int64_t be64(const unsigned char *p) {
  return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

/* POSIX TZ string parsing: names, offsets, rule dates. */
static const char *skip_name(const char *p) {
  if (*p == '<') {
    const char *q = strchr(p, '>');
    return q && q - p >= 2 ? q + 1 : NULL;
  }
  const char *s = p;
  while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')) p++;
  return p - s >= 3 ? p : NULL;
}

/* [+-]hh[:mm[:ss]] as seconds; hours up to 167 (rule times may reach that). */
static const char *parse_hms(const char *p, int32_t *out) {
  int sign = 1;
  if (*p == '+' || *p == '-') sign = *p++ == '-' ? -1 : 1;
  if (*p < '0' || *p > '9') return NULL;
  int32_t h = 0, m = 0, s = 0;
  while (*p >= '0' && *p <= '9' && h < 1000) h = h * 10 + (*p++ - '0');
  if (h > 167) return NULL;
  if (*p == ':') {
    p++;
    if (*p < '0' || *p > '9') return NULL;
    while (*p >= '0' && *p <= '9' && m < 100) m = m * 10 + (*p++ - '0');
    if (*p == ':') {
      p++;
      if (*p < '0' || *p > '9') return NULL;
      while (*p >= '0' && *p <= '9' && s < 100) s = s * 10 + (*p++ - '0');
    }
  }
  if (m > 59 || s > 59) return NULL;
  *out = sign * (h * 3600 + m * 60 + s);
  return p;
}

static const char *parse_num(const char *p, int *out, int lo, int hi) {
  if (*p < '0' || *p > '9') return NULL;
  int v = 0;
  while (*p >= '0' && *p <= '9' && v <= hi) v = v * 10 + (*p++ - '0');
  if (v < lo || v > hi) return NULL;
  *out = v;
  return p;
}

static const char *parse_date(const char *p, struct rule_date *d) {
  memset(d, 0, sizeof *d);
  d->secs = 7200;
  if (*p == 'M') {
    d->kind = 'M';
    if (!(p = parse_num(p + 1, &d->m, 1, 12)) || *p != '.') return NULL;
    if (!(p = parse_num(p + 1, &d->w, 1, 5)) || *p != '.') return NULL;
    if (!(p = parse_num(p + 1, &d->d, 0, 6))) return NULL;
  } else if (*p == 'J') {
    d->kind = 'J';
    if (!(p = parse_num(p + 1, &d->n, 1, 365))) return NULL;
  } else {
    d->kind = 'n';
    if (!(p = parse_num(p, &d->n, 0, 365))) return NULL;
  }
  if (*p == '/') p = parse_hms(p + 1, &d->secs);
  return p;
}

static int parse_rule(struct tz *z, const char *s) {
  const char *p = skip_name(s);
  int32_t off;
  if (!p || !(p = parse_hms(p, &off))) return -1;
  z->std_off = -off; /* POSIX offsets count west */
  z->dst_off = z->std_off;
  if (*p == '\0') {
    z->has_rule = 1;
    return 0;
  }
  if (!(p = skip_name(p))) return -1;
  z->has_dst = 1;
  z->dst_off = z->std_off + 3600;
  if (*p && *p != ',') {
    if (!(p = parse_hms(p, &off))) return -1;
    z->dst_off = -off;
  }
  if (*p == '\0') { /* no dates: the US rules, as glibc assumes */
    z->start = (struct rule_date){'M', 3, 2, 0, 0, 7200};
    z->end = (struct rule_date){'M', 11, 1, 0, 0, 7200};
    z->has_rule = 1;
    return 0;
  }
  if (*p != ',' || !(p = parse_date(p + 1, &z->start))) return -1;
  if (*p != ',' || !(p = parse_date(p + 1, &z->end))) return -1;
  if (*p != '\0') return -1;
  z->has_rule = 1;
  return 0;
}

static int leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

/* Local midnight of the rule date in year y, as days since the epoch. */
static int64_t rule_day(const struct rule_date *d, int64_t y) {
  int64_t jan1 = cron_days_from_civil(y, 1, 1);
  if (d->kind == 'J') return jan1 + d->n - 1 + (leap(y) && d->n >= 60 ? 1 : 0);
  if (d->kind == 'n') return jan1 + d->n;
  static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int dim = mdays[d->m - 1] + (d->m == 2 && leap(y));
  int64_t first = cron_days_from_civil(y, (unsigned)d->m, 1);
  int wd = (int)(((first % 7) + 7 + 4) % 7); /* 1970-01-01 was a Thursday */
  int day = 1 + (d->d - wd + 7) % 7 + 7 * (d->w - 1);
  while (day > dim) day -= 7;
  return first + day - 1;
}

static int32_t rule_offset(const struct tz *z, int64_t t) {
  if (!z->has_dst) return z->std_off;
  int64_t y;
  unsigned mo, dd;
  int64_t days = (t + z->std_off) / 86400 - ((t + z->std_off) % 86400 < 0);
  cron_civil_from_days(days, &y, &mo, &dd);
  /* The change into DST is given in standard local time, out of it in DST local time. */
  int64_t start = rule_day(&z->start, y) * 86400 + z->start.secs - z->std_off;
  int64_t end = rule_day(&z->end, y) * 86400 + z->end.secs - z->dst_off;
  int dst = start < end ? (t >= start && t < end) : !(t >= end && t < start);
  return dst ? z->dst_off : z->std_off;
}

int32_t tz_offset(const struct tz *z, int64_t t) {
  if (!z) return 0;
  if (z->n == 0 || t >= z->times[z->n - 1]) {
    if (z->has_rule) return rule_offset(z, t);
    if (z->n == 0) return z->n_types ? z->utoff[0] : 0;
    return z->utoff[z->idx[z->n - 1]];
  }
  if (t < z->times[0]) return z->utoff[0];
  size_t lo = 0, hi = z->n - 1; /* times[lo] <= t < times[hi] */
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (z->times[mid] <= t)
      lo = mid;
    else
      hi = mid;
  }
  return z->utoff[z->idx[lo]];
}

/* Parses the bytes of a TZif file into z. Returns 0 or -1. */
static int parse_tzif(struct tz *z, const unsigned char *b, size_t len) {
  if (len < 44 || memcmp(b, "TZif", 4) != 0) return -1;
  int version = b[4] ? b[4] - '0' : 1;
  const unsigned char *h = b;
  size_t pos = 0;
  int pass = 0;
  for (;;) {
    if (pos + 44 > len || memcmp(h, "TZif", 4) != 0) return -1;
    uint32_t isutcnt = be32(h + 20), isstdcnt = be32(h + 24), leapcnt = be32(h + 28),
             timecnt = be32(h + 32), typecnt = be32(h + 36), charcnt = be32(h + 40);
    if (typecnt == 0 || typecnt > MAX_TYPES || timecnt > MAX_TRANSITIONS || leapcnt > 100000 ||
        charcnt > 100000 || isutcnt > MAX_TYPES || isstdcnt > MAX_TYPES)
      return -1;
    size_t tsize = pass == 0 ? 4 : 8;
    size_t body = timecnt * tsize + timecnt + typecnt * 6 + charcnt + leapcnt * (tsize + 4) +
                  isstdcnt + isutcnt;
    if (pos + 44 + body > len) return -1;
    if (pass == 0 && version >= 2) {
      pos += 44 + body;
      h = b + pos;
      pass = 1;
      continue;
    }
    const unsigned char *p = h + 44;
    z->times = malloc((timecnt ? timecnt : 1) * sizeof *z->times);
    z->idx = malloc(timecnt ? timecnt : 1);
    if (!z->times || !z->idx) return -2;
    for (uint32_t i = 0; i < timecnt; i++)
      z->times[i] = tsize == 8 ? be64(p + i * 8) : (int32_t)be32(p + i * 4);
    p += timecnt * tsize;
    for (uint32_t i = 0; i < timecnt; i++) {
      if (p[i] >= typecnt) return -1;
      z->idx[i] = p[i];
      if (i && z->times[i] <= z->times[i - 1]) return -1;
    }
    p += timecnt;
    for (uint32_t i = 0; i < typecnt; i++) {
      int32_t off = (int32_t)be32(p + i * 6);
      if (off < -25 * 3600 || off > 26 * 3600) return -1;
      z->utoff[i] = off;
    }
    z->n = timecnt;
    z->n_types = typecnt;
    pos += 44 + body;
    if (pass == 1 && pos < len && b[pos] == '\n') {
      const unsigned char *nl = memchr(b + pos + 1, '\n', len - pos - 1);
      if (!nl) return -1;
      size_t flen = (size_t)(nl - (b + pos + 1));
      if (flen > 0) {
        char rule[128];
        if (flen >= sizeof rule) return -1;
        memcpy(rule, b + pos + 1, flen);
        rule[flen] = '\0';
        if (parse_rule(z, rule)) return -1;
      }
    }
    return 0;
  }
}

int tz_load(const char *dir, const char *name, struct tz **out, char *err, size_t errlen) {
  *out = NULL;
  struct tz *z = calloc(1, sizeof *z);
  if (!z) return -2;
  if (!name || !*name || !strcmp(name, "UTC")) {
    z->has_rule = 1; /* std_off 0, no DST */
    *out = z;
    return 0;
  }
  if (!tz_valid_name(name)) {
    free(z);
    return fail(err, errlen, -1,
                "time zone \"%.64s\" is not a zone name (like \"Europe/Paris\" or \"UTC\")", name);
  }
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir ? dir : "/usr/share/zoneinfo", name);
  FILE *f = fopen(path, "rb");
  if (!f) {
    free(z);
    return fail(err, errlen, -1,
                "unknown time zone \"%s\" (no such file under /usr/share/zoneinfo: is tzdata "
                "installed?)",
                name);
  }
  unsigned char *buf = malloc(MAX_FILE);
  size_t len = buf ? fread(buf, 1, MAX_FILE, f) : 0;
  fclose(f);
  if (!buf) {
    free(z);
    return -2;
  }
  int rc = parse_tzif(z, buf, len);
  free(buf);
  if (rc) {
    tz_free(z);
    if (rc == -2) return -2;
    return fail(err, errlen, -1, "time zone \"%s\": its zoneinfo file is not TZif", name);
  }
  *out = z;
  return 0;
}

void tz_free(struct tz *z) {
  if (!z) return;
  free(z->times);
  free(z->idx);
  free(z);
}
