/* cron.c — 5-field cron expressions: parsing, and the next firing instant in a time zone
 * (DST gaps fire once at the gap's end, overlaps once at their first occurrence). */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/cron.h"

/* Howard Hinnant's algorithms: days since 1970-01-01 <-> proleptic Gregorian dates. */
int64_t cron_days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

void cron_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  unsigned doe = (unsigned)(z - era * 146097);
  unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static const char *const field_names[] = {"minute", "hour", "day-of-month", "month", "day-of-week"};
static const int field_lo[] = {0, 0, 1, 1, 0};
static const int field_hi[] = {59, 23, 31, 12, 7};
static const char *const months[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                     "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
static const char *const days[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

/* A number or (months, days of week) a three-letter name. */
static const char *value(const char *p, const char *end, int field, int *out) {
  if (p < end && isdigit((unsigned char)*p)) {
    int v = 0;
    while (p < end && isdigit((unsigned char)*p) && v < 1000) v = v * 10 + (*p++ - '0');
    *out = v;
    return p;
  }
  if (end - p >= 3 && (field == 3 || field == 4)) {
    const char *const *names = field == 3 ? months : days;
    int n = field == 3 ? 12 : 7;
    for (int i = 0; i < n; i++)
      if (strncasecmp(p, names[i], 3) == 0) {
        *out = field == 3 ? i + 1 : i;
        return p + 3;
      }
  }
  return NULL;
}

#define FAIL(...)                                          \
  do {                                                     \
    if (err && errlen) snprintf(err, errlen, __VA_ARGS__); \
    return -1;                                             \
  } while (0)

/* One field [p, end) into the bit set *bits; *any is set for "*" (with step 1). */
static int parse_field(const char *p, const char *end, int field, uint64_t *bits, int *any,
                       char *err, size_t errlen) {
  int lo = field_lo[field], hi = field_hi[field];
  const char *fname = field_names[field];
  int flen = (int)(end - p);
  *bits = 0;
  *any = 0;
  while (p < end) {
    const char *comma = memchr(p, ',', (size_t)(end - p));
    const char *iend = comma ? comma : end;
    if (iend == p) FAIL("cron %s field \"%.*s\": empty list item", fname, flen, end - flen);
    int a, b, step = 1, star = 0;
    const char *q = p;
    if (*q == '*') {
      a = lo;
      b = field == 4 ? 6 : hi;
      star = 1;
      q++;
    } else {
      if (!(q = value(q, iend, field, &a)))
        FAIL("cron %s field \"%.*s\": \"%.*s\" is not a value", fname, flen, end - flen,
             (int)(iend - p), p);
      b = a;
      if (q < iend && *q == '-') {
        if (!(q = value(q + 1, iend, field, &b)))
          FAIL("cron %s field \"%.*s\": range \"%.*s\" has no end", fname, flen, end - flen,
               (int)(iend - p), p);
      }
    }
    if (q < iend && *q == '/') {
      q++;
      if (q == iend || !isdigit((unsigned char)*q))
        FAIL("cron %s field \"%.*s\": step in \"%.*s\" is not a number", fname, flen, end - flen,
             (int)(iend - p), p);
      step = 0;
      while (q < iend && isdigit((unsigned char)*q) && step < 1000) step = step * 10 + (*q++ - '0');
      if (step < 1 || step > hi)
        FAIL("cron %s field \"%.*s\": step %d out of 1-%d", fname, flen, end - flen, step, hi);
      if (!star && b == a) b = field == 4 ? 6 : hi; /* "a/n": from a to the end */
    }
    if (q != iend)
      FAIL("cron %s field \"%.*s\": unexpected \"%.*s\"", fname, flen, end - flen, (int)(iend - q),
           q);
    if (a < lo || a > hi || b < lo || b > hi)
      FAIL("cron %s field \"%.*s\": \"%.*s\" out of %d-%d", fname, flen, end - flen,
           (int)(iend - p), p, lo, hi);
    if (b < a)
      FAIL("cron %s field \"%.*s\": range \"%.*s\" runs backwards", fname, flen, end - flen,
           (int)(iend - p), p);
    for (int v = a; v <= b; v += step) *bits |= 1ull << (field == 4 && v == 7 ? 0 : v);
    if (star && step == 1) *any = 1;
    p = comma ? comma + 1 : end;
    if (comma && p == end)
      FAIL("cron %s field \"%.*s\": ends with a comma", fname, flen, end - flen);
  }
  return 0;
}

static int days_in_month(int64_t y, unsigned m) {
  static const int md[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return md[m - 1] + (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0));
}

int cron_parse(const char *expr, struct cron *c, char *err, size_t errlen) {
  memset(c, 0, sizeof *c);
  if (!expr) FAIL("cron expression missing");
  if (strlen(expr) > 256) FAIL("cron expression over 256 bytes");
  const char *p = expr;
  uint64_t bits[5];
  int any[5];
  int n = 0;
  while (*p) {
    while (*p == ' ' || *p == '\t') p++;
    if (!*p) break;
    const char *s = p;
    while (*p && *p != ' ' && *p != '\t') p++;
    if (n == 5)
      FAIL(
          "cron expression \"%s\" has more than 5 fields (minute hour day-of-month month "
          "day-of-week)",
          expr);
    if (parse_field(s, p, n, &bits[n], &any[n], err, errlen)) return -1;
    n++;
  }
  if (n != 5)
    FAIL(
        "cron expression \"%s\" has %d field%s, not 5 (minute hour day-of-month month "
        "day-of-week)",
        expr, n, n == 1 ? "" : "s");
  c->minute = bits[0];
  c->hour = (uint32_t)bits[1];
  c->dom = (uint32_t)bits[2];
  c->month = (uint32_t)bits[3];
  c->dow = (uint32_t)bits[4];
  c->dom_any = any[2];
  c->dow_any = any[4];
  /* With only the day of month restricted, some chosen month must have such a day. */
  if (!c->dom_any && c->dow_any) {
    int ok = 0;
    for (unsigned m = 1; m <= 12 && !ok; m++)
      for (int d = 1; d <= days_in_month(2000, m) && !ok; d++)
        ok = (c->month >> m & 1) && (c->dom >> d & 1);
    if (!ok) FAIL("cron expression \"%s\" matches no date", expr);
  }
  return 0;
}

/* Does the local date match (Vixie: both day fields restricted = either matches)? */
static int day_matches(const struct cron *c, int64_t days, unsigned d) {
  int wd = (int)(((days % 7) + 7 + 4) % 7);
  int dom = c->dom >> d & 1, dow = c->dow >> wd & 1;
  if (c->dom_any && c->dow_any) return 1;
  if (c->dom_any) return dow;
  if (c->dow_any) return dom;
  return dom || dow;
}

/* The first local time (seconds of the local clock since the epoch, whole minutes) at or
 * after `lt` matching the expression; INT64_MAX past `limit`. */
static int64_t next_local(const struct cron *c, int64_t lt, int64_t limit) {
  int64_t fl = lt / 60 - (lt % 60 < 0);
  lt = fl * 60 + (lt - fl * 60 ? 60 : 0);
  while (lt <= limit) {
    int64_t days = lt / 86400 - (lt % 86400 < 0);
    int64_t sod = lt - days * 86400;
    int64_t y;
    unsigned m, d;
    cron_civil_from_days(days, &y, &m, &d);
    if (!(c->month >> m & 1)) { /* first day of the next month */
      lt = cron_days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : m + 1, 1) * 86400;
      continue;
    }
    if (!day_matches(c, days, d)) {
      lt = (days + 1) * 86400;
      continue;
    }
    int h = (int)(sod / 3600), mi = (int)(sod % 3600 / 60);
    if (!(c->hour >> h & 1)) {
      lt = days * 86400 + (int64_t)(h + 1) * 3600;
      continue;
    }
    if (!(c->minute >> mi & 1)) {
      lt += 60;
      continue;
    }
    return lt;
  }
  return INT64_MAX;
}

/* The UTC instant of local time lt: its first occurrence, or the end of the gap that
 * skips it. */
static int64_t resolve(const struct tz *z, int64_t lt) {
  int32_t before = tz_offset(z, lt - 86400), after = tz_offset(z, lt + 86400);
  int64_t u1 = lt - before, u2 = lt - after;
  int ok1 = tz_offset(z, u1) == before, ok2 = tz_offset(z, u2) == after;
  if (ok1 && ok2) return u1 < u2 ? u1 : u2;
  if (ok1) return u1;
  if (ok2) return u2;
  /* In a gap: the transition lies in (min, max]; find the first instant with the offset
   * in force after it. */
  int64_t lo = u1 < u2 ? u1 : u2, hi = u1 < u2 ? u2 : u1;
  int32_t off_lo = tz_offset(z, lo);
  if (tz_offset(z, hi) == off_lo) return hi; /* no change found: keep going */
  while (hi - lo > 1) {
    int64_t mid = lo + (hi - lo) / 2;
    if (tz_offset(z, mid) == off_lo)
      lo = mid;
    else
      hi = mid;
  }
  return hi;
}

int64_t cron_next(const struct cron *c, const struct tz *z, int64_t after) {
  /* Local time runs backwards by at most a few hours in an overlap: near an offset change,
   * start the walk early enough to meet every local time whose instant may lie after
   * `after`. resolve() is non-decreasing in local time, so the first match past `after`
   * is the earliest. */
  int32_t off = tz_offset(z, after);
  int near = tz_offset(z, after - 86400) != off || tz_offset(z, after + 86400) != off;
  int64_t lt = after + off - (near ? 4 * 3600 : 0);
  int64_t limit = after + 30ll * 366 * 86400;
  for (;;) {
    lt = next_local(c, lt, limit);
    if (lt == INT64_MAX) return INT64_MAX;
    int64_t u = resolve(z, lt);
    if (u > after) return u;
    lt += 60;
  }
}
