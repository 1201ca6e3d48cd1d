/* cron.h — time zones read from TZif files and 5-field cron expressions: what schedules
 * need to turn "0 2 * * *" in Europe/Paris into UTC instants. Pure computation over the C
 * library: the TZ environment variable is never read nor set. */
#ifndef ENGRAM_CRON_H
#define ENGRAM_CRON_H

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------------------------
 * Time zones (tz.c).
 * ------------------------------------------------------------------------------ */
struct tz;

/* Loads the zone `name` ("UTC", "Europe/Paris") from its TZif file under `dir` (NULL =
 * /usr/share/zoneinfo): the 64-bit section of a version 2+ file, and its footer's POSIX
 * TZ rule for times after the last transition. "UTC" (and "" or NULL) needs no file.
 * Returns 0, or -1 with a message in err (an unknown or badly spelled zone, a file that
 * is not TZif), or -2 when out of memory. */
int tz_load(const char *dir, const char *name, struct tz **out, char *err, size_t errlen);
void tz_free(struct tz *z);
/* The offset east of UTC in seconds in effect at the UTC instant t (seconds). */
int32_t tz_offset(const struct tz *z, int64_t t);
/* 1 when `name` is spelled as a zone name may be: "UTC", or words of [A-Za-z0-9_+-]
 * joined by '/', no "." or ".." word, at most 64 bytes. */
int tz_valid_name(const char *name);

/* ---------------------------------------------------------------------------------
 * Cron expressions (cron.c).
 * ------------------------------------------------------------------------------ */
struct cron {
  uint64_t minute; /* bit m: minute m (0-59) */
  uint32_t hour;   /* bit h: hour h (0-23) */
  uint32_t dom;    /* bit d: day of month d (1-31) */
  uint32_t month;  /* bit m: month m (1-12) */
  uint32_t dow;    /* bit d: day of week d (0 = Sunday .. 6) */
  int dom_any;     /* day-of-month field is "*" (or "* /1" ...) */
  int dow_any;     /* day-of-week field is "*" */
};

/* Parses "minute hour day-of-month month day-of-week" (*, values, ranges, lists, steps,
 * JAN-DEC, SUN-SAT, 7 = Sunday). Returns 0, or -1 with a message in err naming the
 * field and what is wrong; an expression no date can match (e.g. "0 0 30 2 *") is
 * refused too. */
int cron_parse(const char *expr, struct cron *c, char *err, size_t errlen);
/* The first instant (UTC seconds, a whole minute of local time or the end of a DST gap)
 * strictly after `after` at which the expression fires in zone z: a local time that does
 * not exist fires at the first instant after the gap, one that occurs twice fires at its
 * first occurrence. Returns INT64_MAX when there is none within 30 years. */
int64_t cron_next(const struct cron *c, const struct tz *z, int64_t after);

/* Civil dates (proleptic Gregorian) as days since 1970-01-01. */
int64_t cron_days_from_civil(int64_t y, unsigned m, unsigned d);
void cron_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d);

#endif
