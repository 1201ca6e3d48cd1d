/* test_schedule.c — schedules: the cron parser and its DST rules in real zones, interval
 * and cron fires under a test clock, pause/resume, run-now, remove, idempotent declares,
 * missed-fire policies after downtime, bad input that leaves the log unchanged, and one
 * simulated day on one log by a daemon and two embedded processes (the daemon and one
 * process killed and restarted) in which every slot fires exactly once. Two daemons on
 * one directory are refused by design (DIR/daemon.lock), so the third firing process is
 * embedded. */
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/common.h"
#include "common/cron.h"
#include "engram.h"
#include "helpers/testutil.h"

#define OK(log, call) TU_OK(log, call)
#define NS 1000000000ll
#define MIN (60 * NS)
#define HOUR (60 * MIN)

extern char **environ;

/* UTC seconds of a civil UTC time. */
static int64_t utc(int y, int mo, int d, int h, int mi) {
  return cron_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60;
}

/* The next n firing instants after `after` (UTC seconds). */
static void next_n(const char *zone, const char *expr, int64_t after, int64_t *out, int n) {
  struct tz *z;
  struct cron c;
  char err[256];
  assert_int_equal(tz_load(NULL, zone, &z, err, sizeof err), 0);
  if (cron_parse(expr, &c, err, sizeof err)) fail_msg("%s: %s", expr, err);
  for (int i = 0; i < n; i++) out[i] = after = cron_next(&c, z, after);
  tz_free(z);
}

static void cron_fields_lists_ranges_steps_and_names_parse(void **state) {
  (void)state;
  int64_t t[4];
  /* Steps from a start, names of days, lists. */
  next_n("UTC", "5/20 9 * * mon,WED-fri", utc(2026, 12, 7, 0, 0), t, 4); /* Mon 7 Dec */
  assert_true(t[0] == utc(2026, 12, 7, 9, 5));
  assert_true(t[1] == utc(2026, 12, 7, 9, 25));
  assert_true(t[2] == utc(2026, 12, 7, 9, 45));
  assert_true(t[3] == utc(2026, 12, 9, 9, 5)); /* Tuesday skipped */
  /* Months by name, 7 = Sunday. */
  next_n("UTC", "0 0 * JAN 7", utc(2026, 12, 7, 0, 0), t, 2);
  assert_true(t[0] == utc(2027, 1, 3, 0, 0));
  assert_true(t[1] == utc(2027, 1, 10, 0, 0));
  /* Vixie: both day fields restricted, either matches (Friday or the 13th). */
  next_n("UTC", "0 0 13 * FRI", utc(2026, 11, 1, 0, 0), t, 4);
  assert_true(t[0] == utc(2026, 11, 6, 0, 0));
  assert_true(t[1] == utc(2026, 11, 13, 0, 0));
  assert_true(t[2] == utc(2026, 11, 20, 0, 0));
  assert_true(t[3] == utc(2026, 11, 27, 0, 0));
  /* Feb 29 comes every 4 years. */
  next_n("UTC", "0 12 29 2 *", utc(2026, 1, 1, 0, 0), t, 2);
  assert_true(t[0] == utc(2028, 2, 29, 12, 0));
  assert_true(t[1] == utc(2032, 2, 29, 12, 0));
}

static void bad_cron_expressions_are_refused_with_the_field_named(void **state) {
  (void)state;
  static const struct {
    const char *expr, *says;
  } bad[] = {
      {"* * * *", "4 fields"},      {"* * * * * *", "more than 5"},    {"60 * * * *", "minute"},
      {"* 24 * * *", "hour"},       {"* * 0 * *", "day-of-month"},     {"* * * 13 *", "month"},
      {"* * * * 8", "day-of-week"}, {"*/0 * * * *", "step"},           {"5-1 * * * *", "backwards"},
      {"a * * * *", "not a value"}, {"0 0 30 2 *", "matches no date"}, {"1,,2 * * * *", "empty"},
      {"* * * FOO *", "month"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    struct cron c;
    char err[256] = "";
    assert_int_equal(cron_parse(bad[i].expr, &c, err, sizeof err), -1);
    if (!strstr(err, bad[i].says))
      fail_msg("\"%s\": message \"%s\" lacks \"%s\"", bad[i].expr, err, bad[i].says);
  }
  struct tz *z;
  char err[256];
  assert_int_equal(tz_load(NULL, "Mars/Olympus", &z, err, sizeof err), -1);
  assert_non_null(strstr(err, "unknown time zone"));
  assert_int_equal(tz_load(NULL, "../etc/passwd", &z, err, sizeof err), -1);
}

/* Paris: 29 Mar 2026 02:00 CET -> 03:00 CEST; 25 Oct 2026 03:00 CEST -> 02:00 CET. */
static void paris_dst_gap_fires_once_at_its_end_and_overlap_fires_once(void **state) {
  (void)state;
  int64_t t[6];
  /* 02:30 does not exist on 29 March: it fires at 03:00 CEST (01:00 UTC). */
  next_n("Europe/Paris", "30 2 * * *", utc(2026, 3, 27, 12, 0), t, 3);
  assert_true(t[0] == utc(2026, 3, 28, 1, 30)); /* 02:30 CET */
  assert_true(t[1] == utc(2026, 3, 29, 1, 0));  /* the gap's end */
  assert_true(t[2] == utc(2026, 3, 30, 0, 30)); /* 02:30 CEST */
  /* Every 30 minutes through the gap: 02:00 and 02:30 both land on 03:00, once. */
  next_n("Europe/Paris", "*/30 1-3 * * *", utc(2026, 3, 28, 23, 0), t, 5);
  assert_true(t[0] == utc(2026, 3, 29, 0, 0));  /* 01:00 CET */
  assert_true(t[1] == utc(2026, 3, 29, 0, 30)); /* 01:30 CET */
  assert_true(t[2] == utc(2026, 3, 29, 1, 0));  /* 03:00 CEST (02:00, 02:30 in the gap) */
  assert_true(t[3] == utc(2026, 3, 29, 1, 30)); /* 03:30 CEST */
  assert_true(t[4] == utc(2026, 3, 29, 23, 0)); /* 01:00 CEST the next day */
  /* 02:30 occurs twice on 25 October: once, at the first (CEST). */
  next_n("Europe/Paris", "30 2 * * *", utc(2026, 10, 23, 12, 0), t, 3);
  assert_true(t[0] == utc(2026, 10, 24, 0, 30));
  assert_true(t[1] == utc(2026, 10, 25, 0, 30)); /* 02:30 CEST, not 01:30 UTC again */
  assert_true(t[2] == utc(2026, 10, 26, 1, 30)); /* 02:30 CET */
  /* Hourly through the overlap: 02:00 once, then 03:00 CET. */
  next_n("Europe/Paris", "0 * * * *", utc(2026, 10, 24, 22, 30), t, 4);
  assert_true(t[0] == utc(2026, 10, 24, 23, 0)); /* 01:00 CEST */
  assert_true(t[1] == utc(2026, 10, 25, 0, 0));  /* 02:00 CEST */
  assert_true(t[2] == utc(2026, 10, 25, 2, 0));  /* 03:00 CET: 02:00 CET skipped */
  assert_true(t[3] == utc(2026, 10, 25, 3, 0));
  /* Far beyond the file's transitions the footer rule applies (last Sunday of March). */
  next_n("Europe/Paris", "0 2 * * *", utc(2045, 3, 25, 12, 0), t, 2);
  assert_true(t[0] == utc(2045, 3, 26, 1, 0)); /* 26 Mar 2045 is the last Sunday: the gap */
  assert_true(t[1] == utc(2045, 3, 27, 0, 0)); /* 02:00 CEST */
}

/* New York: 8 Mar 2026 02:00 EST -> 03:00 EDT; 1 Nov 2026 02:00 EDT -> 01:00 EST. */
static void new_york_dst_gap_and_overlap(void **state) {
  (void)state;
  int64_t t[3];
  next_n("America/New_York", "30 2 * * *", utc(2026, 3, 7, 0, 0), t, 3);
  assert_true(t[0] == utc(2026, 3, 7, 7, 30));
  assert_true(t[1] == utc(2026, 3, 8, 7, 0)); /* 03:00 EDT */
  assert_true(t[2] == utc(2026, 3, 9, 6, 30));
  next_n("America/New_York", "30 1 * * *", utc(2026, 10, 31, 0, 0), t, 3);
  assert_true(t[0] == utc(2026, 10, 31, 5, 30));
  assert_true(t[1] == utc(2026, 11, 1, 5, 30)); /* 01:30 EDT, the first one */
  assert_true(t[2] == utc(2026, 11, 2, 6, 30)); /* 01:30 EST */
}

/* An independent reference: glibc's localtime_r (TZ set in this test program only; the
 * library never reads TZ) walked minute by minute over a year. A local time fires at
 * its first occurrence; local times skipped by a gap fire at the gap's end. */
static int matches(const struct cron *c, const struct tm *tm) {
  if (!(c->minute >> tm->tm_min & 1) || !(c->hour >> tm->tm_hour & 1) ||
      !(c->month >> (tm->tm_mon + 1) & 1))
    return 0;
  int dom = c->dom >> tm->tm_mday & 1, dow = c->dow >> tm->tm_wday & 1;
  if (c->dom_any && c->dow_any) return 1;
  if (c->dom_any) return dow;
  if (c->dow_any) return dom;
  return dom || dow;
}

static void cron_next_agrees_with_glibc_localtime_over_a_year(void **state) {
  (void)state;
  static const struct {
    const char *zone, *expr;
  } cases[] = {
      {"Europe/Paris", "*/20 1-3 * * *"},        {"America/New_York", "0,30 1,2 * * *"},
      {"Australia/Lord_Howe", "*/15 1-3 * * *"}, {"America/Santiago", "0 0,23 * * *"},
      {"Europe/Dublin", "30 1 * * *"},           {"Asia/Kolkata", "45 23 13 * FRI"},
  };
  char *old_tz = getenv("TZ") ? strdup(getenv("TZ")) : NULL;
  int64_t start = utc(2026, 1, 1, 0, 0), end = start + 366 * 86400;
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    struct tz *z;
    struct cron c;
    char err[256], tzv[80];
    assert_int_equal(tz_load(NULL, cases[k].zone, &z, err, sizeof err), 0);
    assert_int_equal(cron_parse(cases[k].expr, &c, err, sizeof err), 0);
    snprintf(tzv, sizeof tzv, ":%s", cases[k].zone);
    setenv("TZ", tzv, 1);
    tzset();
    int64_t ours = cron_next(&c, z, start), n = 0;
    long prev_off = LONG_MIN;
    for (int64_t u = start + 60; u <= end; u += 60) {
      time_t tt = (time_t)u;
      struct tm tm;
      localtime_r(&tt, &tm);
      int64_t want = 0;
      if (prev_off != LONG_MIN && tm.tm_gmtoff > prev_off) {
        /* A gap ends in (u - 60, u]: its exact instant, then the skipped local minutes. */
        int64_t lo = u - 60, hi = u;
        while (hi - lo > 1) {
          int64_t mid = lo + (hi - lo) / 2;
          time_t mt = (time_t)mid;
          struct tm mm;
          localtime_r(&mt, &mm);
          if (mm.tm_gmtoff == prev_off)
            lo = mid;
          else
            hi = mid;
        }
        for (int64_t l = (hi + prev_off + 59) / 60 * 60; l < hi + tm.tm_gmtoff && !want; l += 60) {
          time_t lt = (time_t)l;
          struct tm lm;
          gmtime_r(&lt, &lm); /* the skipped local time's fields */
          if (matches(&c, &lm)) want = hi;
        }
      }
      time_t et = (time_t)(u - 3 * 3600);
      struct tm em;
      localtime_r(&et, &em);
      /* u's local time was shown before by u - (o' - o) when the offset o' three hours
       * earlier was larger and still held then: u is its second occurrence. */
      time_t pt = (time_t)(u - (em.tm_gmtoff - tm.tm_gmtoff));
      struct tm pm;
      localtime_r(&pt, &pm);
      int second = em.tm_gmtoff > tm.tm_gmtoff && pm.tm_gmtoff == em.tm_gmtoff;
      if (!want && !second && matches(&c, &tm)) want = u;
      if (want) {
        if (ours != want)
          fail_msg("%s \"%s\": ours %lld, glibc %lld", cases[k].zone, cases[k].expr,
                   (long long)ours, (long long)want);
        ours = cron_next(&c, z, want);
        n++;
      }
      prev_off = tm.tm_gmtoff;
    }
    assert_true(n > 50);
    tz_free(z);
  }
  if (old_tz)
    setenv("TZ", old_tz, 1);
  else
    unsetenv("TZ");
  tzset();
  free(old_tz);
}

/* ---------------------------------------------------------------------------------
 * Through the API, with a test clock.
 * ------------------------------------------------------------------------------ */
typedef struct fx {
  tu_fx *f;
  tu_clock clock;
} fx;

static int setup(void **state) {
  fx *x = calloc(1, sizeof *x);
  x->f = tu_fx_new("sched");
  tu_clock_init(&x->clock, utc(2026, 12, 5, 0, 0) * NS);
  engram_options o = {
      .clock_ns = tu_clock_ns, .clock_ctx = &x->clock, .maintenance_ms = ENGRAM_MAINTENANCE_OFF};
  x->f->log = tu_open(x->f->logdir, &o);
  tu_topic(x->f->log, "jobs", NULL);
  *state = x;
  return 0;
}

static int teardown(void **state) {
  fx *x = *state;
  void *f = x->f;
  free(x);
  return tu_fx_teardown(&f);
}

static void at(fx *x, int64_t ns) { atomic_store(&x->clock.ns, ns); }
static int64_t T0(void) { return utc(2026, 12, 5, 0, 0) * NS; }

static engram_schedule_config every(uint64_t ms) {
  return (engram_schedule_config){.every_ms = ms, .topic = "jobs", .type = "job.tick"};
}

static engram_schedule_tick_report tick(fx *x, int64_t now) {
  engram_schedule_tick_report r;
  at(x, now);
  OK(x->f->log, engram_schedule_tick(x->f->log, 0, &r));
  return r;
}

/* The events of topic jobs with the given schedule header, as slot strings. */
static size_t fired(engram *log, const char *sched, char slots[][48], size_t max) {
  engram_batch *b;
  OK(log, engram_read_range(log, "jobs", 1, 100000, &b));
  size_t k = 0;
  for (size_t i = 0; i < b->count; i++) {
    const engram_event *e = &b->events[i];
    const char *s = NULL, *slot = NULL;
    for (size_t h = 0; h < e->n_headers; h++) {
      if (!strcmp(e->headers[h].name, "engram-schedule")) s = e->headers[h].value;
      if (!strcmp(e->headers[h].name, "engram-slot")) slot = e->headers[h].value;
    }
    if (!s || strcmp(s, sched)) continue;
    if (k < max && slots) snprintf(slots[k], 48, "%s", slot ? slot : "");
    k++;
  }
  engram_batch_free(b);
  return k;
}

static engram_schedule_info *info(engram *log, const char *name) {
  engram_schedule_info *i = NULL;
  OK(log, engram_schedule_get(log, name, &i));
  return i;
}

static void an_interval_schedule_fires_each_slot_once_with_key_and_headers(void **state) {
  fx *x = *state;
  engram *log = x->f->log;
  engram_header h = {"origin", "beat"};
  engram_schedule_config c = every(5 * 60000);
  c.payload = "{\"x\":1}";
  c.payload_len = 7;
  c.key = "k1";
  c.content_type = "application/json";
  c.headers = &h;
  c.n_headers = 1;
  OK(log, engram_schedule_add(log, "cleanup", &c));
  assert_int_equal(engram_schedule_add(log, "cleanup", &c), ENGRAM_EEXIST);

  engram_schedule_tick_report r = tick(x, T0());
  assert_int_equal(r.fired, 1); /* created at 00:00: its first slot is 00:00 */
  assert_true(r.next_due_ns == T0() + 5 * MIN);
  r = tick(x, T0() + 4 * MIN);
  assert_int_equal(r.fired, 0);
  r = tick(x, T0() + 5 * MIN + NS / 2);
  assert_int_equal(r.fired, 1);
  r = tick(x, T0() + 5 * MIN + NS); /* the same slot again: nothing */
  assert_int_equal(r.fired, 0);

  engram_batch *b;
  OK(log, engram_read(log, "jobs", 2, &b));
  const engram_event *e = &b->events[0];
  assert_string_equal(e->idempotency_key, "cleanup@2026-12-05T00:05:00Z");
  assert_string_equal(e->type, "job.tick");
  assert_string_equal(e->key, "k1");
  assert_string_equal(e->content_type, "application/json");
  assert_int_equal(e->payload_len, 7);
  assert_memory_equal(e->payload, "{\"x\":1}", 7);
  int seen = 0;
  for (size_t i = 0; i < e->n_headers; i++) {
    const char *n = e->headers[i].name, *v = e->headers[i].value;
    if (!strcmp(n, "origin")) seen |= 1, assert_string_equal(v, "beat");
    if (!strcmp(n, "engram-schedule")) seen |= 2, assert_string_equal(v, "cleanup");
    if (!strcmp(n, "engram-slot")) seen |= 4, assert_string_equal(v, "2026-12-05T00:05:00Z");
    if (!strcmp(n, "engram-fire")) seen |= 8, assert_string_equal(v, "scheduled");
  }
  assert_int_equal(seen, 15);
  engram_batch_free(b);

  engram_schedule_info *i = info(log, "cleanup");
  assert_int_equal(i->fires, 2);
  assert_true(i->last_slot_ns == T0() + 5 * MIN);
  assert_true(i->next_slot_ns == T0() + 10 * MIN);
  assert_true(i->created_ns == T0());
  assert_int_equal(i->last_offset, 2);
  assert_string_equal(i->config.tz, "UTC");
  assert_int_equal(i->config.max_catchup, ENGRAM_DEFAULT_MAX_CATCHUP);
  assert_int_equal(i->config.n_headers, 1);
  assert_string_equal(i->config.headers[0].value, "beat");
  assert_memory_equal(i->config.payload, "{\"x\":1}", 7);
  engram_free(i);
}

static void a_cron_schedule_in_paris_fires_through_both_dst_changes(void **state) {
  fx *x = *state;
  engram *log = x->f->log;
  at(x, utc(2026, 3, 27, 12, 0) * NS);
  engram_schedule_config c = {
      .cron = "30 2 * * *", .tz = "Europe/Paris", .topic = "jobs", .type = "job.nightly"};
  OK(log, engram_schedule_add(log, "nightly", &c));
  /* Tick every 10 minutes through the spring change. */
  for (int64_t t = utc(2026, 3, 27, 12, 0); t <= utc(2026, 3, 30, 12, 0); t += 600) tick(x, t * NS);
  char slots[8][48];
  assert_int_equal(fired(log, "nightly", slots, 8), 3);
  assert_string_equal(slots[0], "2026-03-28T01:30:00Z");
  assert_string_equal(slots[1], "2026-03-29T01:00:00Z");
  assert_string_equal(slots[2], "2026-03-30T00:30:00Z");
}

static void declare_is_idempotent_and_a_change_keeps_the_fire_state(void **state) {
  fx *x = *state;
  engram *log = x->f->log;
  engram_schedule_config c = every(60000);
  int changed = -1;
  OK(log, engram_schedule_set(log, "s", &c, &changed));
  assert_int_equal(changed, 1);
  tick(x, T0() + 3 * MIN);
  engram_schedule_info *i = info(log, "s");
  uint64_t fires = i->fires;
  int64_t updated = i->updated_ns;
  engram_free(i);
  at(x, T0() + 3 * MIN + NS);
  OK(log, engram_schedule_set(log, "s", &c, &changed));
  assert_int_equal(changed, 0);
  c.tz = "UTC"; /* the default spelled out: the same configuration */
  c.max_catchup = ENGRAM_DEFAULT_MAX_CATCHUP;
  OK(log, engram_schedule_set(log, "s", &c, &changed));
  assert_int_equal(changed, 0);
  i = info(log, "s");
  assert_true(i->updated_ns == updated);
  engram_free(i);
  c.type = "job.other";
  OK(log, engram_schedule_set(log, "s", &c, &changed));
  assert_int_equal(changed, 2);
  i = info(log, "s");
  assert_int_equal(i->fires, fires);
  assert_true(i->created_ns == T0());
  assert_string_equal(i->config.type, "job.other");
  engram_free(i);
  /* A timing change does not catch up what the new timing would have fired before. */
  c.every_ms = 1000;
  at(x, T0() + 10 * MIN);
  OK(log, engram_schedule_set(log, "s", &c, &changed));
  assert_int_equal(changed, 2);
  engram_schedule_tick_report r = tick(x, T0() + 10 * MIN + NS);
  assert_int_equal(r.fired, 1);
  assert_int_equal(r.skipped, 0);
}

static void pause_skips_slots_resume_continues_and_run_now_stays_outside(void **state) {
  fx *x = *state;
  engram *log = x->f->log;
  engram_schedule_config c = every(60000);
  c.missed = ENGRAM_MISSED_ALL;
  OK(log, engram_schedule_add(log, "p", &c));
  tick(x, T0());
  OK(log, engram_schedule_pause(log, "p"));
  OK(log, engram_schedule_pause(log, "p")); /* again: nothing */
  engram_schedule_tick_report r = tick(x, T0() + 10 * MIN);
  assert_int_equal(r.fired, 0);
  assert_int_equal(r.next_due_ns, 0);
  uint64_t off = 0;
  OK(log, engram_schedule_run_now(log, "p", &off)); /* paused, but asked for */
  assert_int_equal(off, 2);
  engram_batch *b;
  OK(log, engram_read(log, "jobs", off, &b));
  assert_string_equal(b->events[0].idempotency_key, "p@manual-2026-12-05T00:10:00.000000000Z");
  engram_batch_free(b);
  engram_schedule_info *i = info(log, "p");
  assert_int_equal(i->paused, 1);
  assert_int_equal(i->manual_fires, 1);
  assert_int_equal(i->fires, 1);
  assert_true(i->last_slot_ns == T0());
  assert_true(i->next_slot_ns == T0() + 11 * MIN); /* what would fire after a resume now */
  engram_free(i);
  at(x, T0() + 10 * MIN + 30 * NS);
  OK(log, engram_schedule_resume(log, "p"));
  OK(log, engram_schedule_resume(log, "p"));
  r = tick(x, T0() + 10 * MIN + 31 * NS);
  assert_int_equal(r.fired, 0); /* the paused slots are not caught up */
  r = tick(x, T0() + 11 * MIN);
  assert_int_equal(r.fired, 1);
  i = info(log, "p");
  assert_int_equal(i->skipped, 10);
  assert_int_equal(i->fires, 2);
  engram_free(i);
  OK(log, engram_schedule_remove(log, "p"));
  assert_int_equal(engram_schedule_remove(log, "p"), ENGRAM_ENOTFOUND);
  assert_int_equal(engram_schedule_run_now(log, "p", NULL), ENGRAM_ENOTFOUND);
  engram_schedule_info *list;
  size_t n;
  OK(log, engram_schedule_list(log, &list, &n));
  assert_int_equal(n, 0);
  engram_free(list);
  r = tick(x, T0() + 20 * MIN);
  assert_int_equal(r.fired, 0);
}

/* Three schedules, one per policy, every minute, down from 00:01 to 01:00:30. */
static void missed_fires_follow_skip_once_and_all_bounded_by_max_catchup(void **state) {
  fx *x = *state;
  engram *log = x->f->log;
  engram_schedule_config c = every(60000);
  c.missed = ENGRAM_MISSED_SKIP;
  OK(log, engram_schedule_add(log, "skip", &c));
  c.missed = ENGRAM_MISSED_ONCE;
  OK(log, engram_schedule_add(log, "once", &c));
  c.missed = ENGRAM_MISSED_ALL;
  c.max_catchup = 20;
  OK(log, engram_schedule_add(log, "all", &c));
  engram_schedule_tick_report r = tick(x, T0());
  assert_int_equal(r.fired, 3);
  /* Downtime: the next tick comes 60 min 20 s later (60 slots passed, 01:00 is 20 s old). */
  r = tick(x, T0() + HOUR + 20 * NS);
  char slots[64][48];
  assert_int_equal(fired(log, "skip", slots, 64), 2); /* 00:00 and the on-time 01:00 */
  assert_string_equal(slots[1], "2026-12-05T01:00:00Z");
  assert_int_equal(fired(log, "once", slots, 64), 2);
  assert_string_equal(slots[1], "2026-12-05T01:00:00Z");
  assert_int_equal(fired(log, "all", slots, 64), 21); /* the newest 20 */
  assert_string_equal(slots[1], "2026-12-05T00:41:00Z");
  assert_string_equal(slots[20], "2026-12-05T01:00:00Z");
  engram_schedule_info *i = info(log, "skip");
  assert_int_equal(i->skipped, 59);
  engram_free(i);
  i = info(log, "all");
  assert_int_equal(i->skipped, 40);
  assert_int_equal(i->fires, 21);
  engram_free(i);
  /* Downtime past the grace of the newest slot (30 s): SKIP fires nothing, ONCE one
   * catch-up. */
  r = tick(x, T0() + 2 * HOUR + MIN + 40 * NS);
  assert_int_equal(fired(log, "skip", NULL, 0), 2);
  assert_int_equal(fired(log, "once", slots, 64), 3);
  assert_string_equal(slots[2], "2026-12-05T02:01:00Z");
  /* Nothing fires twice on the next tick. */
  r = tick(x, T0() + 2 * HOUR + MIN + 41 * NS);
  assert_int_equal(r.fired, 0);

  /* A cron schedule catching up all: the newest max_catchup, in order. */
  engram_schedule_config cc = {.cron = "*/5 * * * *",
                               .tz = "Europe/Paris",
                               .topic = "jobs",
                               .type = "job.cron",
                               .missed = ENGRAM_MISSED_ALL,
                               .max_catchup = 4};
  OK(log, engram_schedule_add(log, "cron-all", &cc));
  r = tick(x, T0() + 3 * HOUR + 7 * MIN);
  assert_int_equal(fired(log, "cron-all", slots, 64), 4);
  assert_string_equal(slots[0], "2026-12-05T02:50:00Z");
  assert_string_equal(slots[1], "2026-12-05T02:55:00Z");
  assert_string_equal(slots[2], "2026-12-05T03:00:00Z");
  assert_string_equal(slots[3], "2026-12-05T03:05:00Z");
  engram_schedule_info *ci = info(log, "cron-all");
  assert_int_equal(ci->skipped, 9); /* 02:05 .. 02:45 */
  engram_free(ci);
}

static void bad_input_is_refused_and_leaves_the_log_unchanged(void **state) {
  fx *x = *state;
  engram *log = x->f->log;
  struct {
    const char *name;
    engram_schedule_config c;
    int code;
    const char *says;
  } bad[] = {
      {"bad name!", every(60000), ENGRAM_EINVAL, "schedule name"},
      {"", every(60000), ENGRAM_EINVAL, "schedule name"},
      {"both",
       {.every_ms = 60000, .cron = "* * * * *", .topic = "jobs", .type = "a"},
       ENGRAM_EINVAL,
       "not both"},
      {"neither", {.topic = "jobs", .type = "a"}, ENGRAM_EINVAL, "neither"},
      {"cron", {.cron = "61 * * * *", .topic = "jobs", .type = "a"}, ENGRAM_EINVAL, "minute"},
      {"zone",
       {.cron = "* * * * *", .tz = "Europe/Atlantis", .topic = "jobs", .type = "a"},
       ENGRAM_EINVAL,
       "unknown time zone"},
      {"tzint",
       {.every_ms = 60000, .tz = "Europe/Paris", .topic = "jobs", .type = "a"},
       ENGRAM_EINVAL,
       "cron schedules only"},
      {"short", every(10), ENGRAM_EINVAL, "interval"},
      {"type", {.every_ms = 60000, .topic = "jobs", .type = "bad type"}, ENGRAM_EINVAL, "type"},
      {"topic", {.every_ms = 60000, .topic = "no/topic", .type = "a"}, ENGRAM_EINVAL, "topic"},
      {"missed",
       {.every_ms = 60000, .topic = "jobs", .type = "a", .missed = 7},
       ENGRAM_EINVAL,
       "missed"},
      {"catchup",
       {.every_ms = 60000, .topic = "jobs", .type = "a", .max_catchup = 99999},
       ENGRAM_EINVAL,
       "max_catchup"},
  };
  engram_header reserved = {"engram-slot", "x"};
  engram_schedule_config rc = every(60000);
  rc.headers = &reserved;
  rc.n_headers = 1;
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    int got = engram_schedule_add(log, bad[i].name, &bad[i].c);
    if (got != bad[i].code || !strstr(engram_errmsg(log), bad[i].says))
      fail_msg("%s: %s '%s' (wanted %s)", bad[i].name, engram_errname(got), engram_errmsg(log),
               bad[i].says);
    assert_int_equal(engram_schedule_set(log, bad[i].name, &bad[i].c, NULL), bad[i].code);
  }
  assert_int_equal(engram_schedule_add(log, "hdr", &rc), ENGRAM_EINVAL);
  assert_non_null(strstr(engram_errmsg(log), "reserved"));
  char big[ENGRAM_MAX_NAME + 2];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  engram_schedule_config ok = every(60000);
  assert_int_equal(engram_schedule_add(log, big, &ok), ENGRAM_EINVAL);
  engram_schedule_info *list;
  size_t n;
  OK(log, engram_schedule_list(log, &list, &n));
  assert_int_equal(n, 0);
  engram_free(list);
  engram_topic_info ti;
  OK(log, engram_topic_info_get(log, "jobs", &ti));
  assert_int_equal(ti.head_offset, 0);
  /* A fire into a missing topic fails, is reported and is tried again. */
  ok.topic = "later";
  OK(log, engram_schedule_add(log, "later", &ok));
  engram_schedule_tick_report r = tick(x, T0() + MIN);
  assert_int_equal(r.failed, 1);
  assert_non_null(strstr(r.first_error, "later"));
  engram_schedule_info *i = info(log, "later");
  assert_non_null(strstr(i->last_error, "topic")); /* `schedule show` says why */
  assert_true(i->last_error_ns == T0() + MIN);
  engram_free(i);
  tu_topic(log, "later", NULL);
  r = tick(x, T0() + MIN + NS);
  assert_int_equal(r.failed, 0);
  assert_int_equal(r.fired, 1);
  i = info(log, "later");
  assert_string_equal(i->last_error, "");
  assert_int_equal(i->last_error_ns, 0);
  engram_free(i);
}

static void the_embedded_lease_holder_fires_without_being_asked(void **state) {
  (void)state;
  char *dir = tu_tmpdir("sched-lease");
  char *logdir = tu_join(dir, "log");
  tu_clock ck;
  tu_clock_init(&ck, utc(2026, 12, 5, 0, 0) * NS + NS / 2);
  engram *log = tu_open(
      logdir, &(engram_options){.clock_ns = tu_clock_ns, .clock_ctx = &ck, .maintenance_ms = 50});
  tu_topic(log, "jobs", NULL);
  engram_schedule_config c = every(60000);
  OK(log, engram_schedule_add(log, "m", &c));
  atomic_store(&ck.ns, utc(2026, 12, 5, 0, 1) * NS); /* the first slot is due */
  int64_t end = tu_mono_ms() + 30000;
  engram_topic_info ti;
  for (;;) {
    OK(log, engram_topic_info_get(log, "jobs", &ti));
    if (ti.head_offset == 1) break;
    if (tu_mono_ms() > end) fail_msg("the maintenance runner never fired the slot");
    tu_sleep_ms(10);
  }
  engram_schedule_info *i = info(log, "m");
  assert_true(i->last_slot_ns == utc(2026, 12, 5, 0, 1) * NS);
  engram_free(i);
  char path[4200];
  snprintf(path, sizeof path, "%s/maintenance.lock", logdir);
  assert_true(tu_exists(path));
  engram_close(log);
  free(logdir);
  tu_tmpdir_done(dir);
}

static void a_read_only_log_without_schedules_lists_none_and_verify_checks_records(void **state) {
  (void)state;
  char *dir = tu_tmpdir("sched-ro");
  char *logdir = tu_join(dir, "log");
  engram_options off = {.maintenance_ms = ENGRAM_MAINTENANCE_OFF};
  engram *log = tu_open(logdir, &off);
  tu_topic(log, "jobs", NULL); /* a log as older builds leave it: no schedules database */
  engram_close(log);
  log = tu_open(logdir, &(engram_options){.flags = ENGRAM_OPEN_RDONLY});
  engram_schedule_info *list = NULL, *one = NULL;
  size_t n = 9;
  OK(log, engram_schedule_list(log, &list, &n));
  assert_int_equal(n, 0);
  engram_free(list);
  assert_int_equal(engram_schedule_get(log, "x", &one), ENGRAM_ENOTFOUND);
  engram_schedule_tick_report r;
  assert_int_equal(engram_schedule_tick(log, 0, &r), ENGRAM_ENOTSUP);
  engram_schedule_config c = every(60000);
  assert_int_equal(engram_schedule_add(log, "x", &c), ENGRAM_ENOTSUP);
  engram_close(log);

  log = tu_open(logdir, &off);
  OK(log, engram_schedule_add(log, "x", &c));
  engram_verify_report vr;
  OK(log, engram_verify(log, &vr));
  assert_int_equal(vr.damaged, 0);
  engram_close(log);
  /* A schedule record that does not decode is damage verify names. */
  MDB_env *env;
  assert_int_equal(tu_raw_open(logdir, 0, &env), 0);
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, "schedules", 0, &dbi), 0);
  MDB_val k = {1, "x"}, v = {3, "\xff\xff\xff"};
  assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  log = tu_open(logdir, &off);
  OK(log, engram_verify(log, &vr));
  assert_int_equal(vr.damaged, 1);
  assert_non_null(strstr(vr.first_damage, "schedule x"));
  assert_int_equal(engram_schedule_get(log, "x", &one), ENGRAM_ECORRUPT);
  OK(log, engram_schedule_remove(log, "x")); /* the way out */
  engram_close(log);
  free(logdir);
  tu_tmpdir_done(dir);
}

/* ---------------------------------------------------------------------------------
 * One simulated day, three processes, one log.
 * ------------------------------------------------------------------------------ */
static void write_clock(const char *path, int64_t ns) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  unsigned char b[8];
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)ns >> (8 * i));
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, b, 8), 8);
  close(fd);
  assert_int_equal(rename(tmp, path), 0); /* readers see the old or the new 8 bytes */
}

/* Starts argv[0] (fork + exec), its stderr appended to `errfile` when not NULL; the child
 * dies with this process (a failing test leaves no daemon behind). */
static pid_t spawn(char *const argv[], const char *errfile) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (errfile) {
      int fd = open(errfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) dup2(fd, 2);
    }
    execve(argv[0], argv, environ);
    _exit(127);
  }
  return pid;
}

/* The embedded ticker (this program run as `test_schedule --ticker DIR STOPFILE`): opens
 * the log and ticks in a loop until STOPFILE exists; its runner may hold the lease too. */
static int ticker_main(const char *dir, const char *stop) {
  engram *log;
  /* A dedup window of 1 ms: exactly once must not lean on idempotency keys. */
  engram_options o = {.maintenance_ms = 200, .dedup_window_ms = 1};
  if (engram_open(dir, &o, &log)) {
    fprintf(stderr, "ticker: %s\n", engram_errmsg(NULL));
    return 1;
  }
  while (access(stop, F_OK) != 0) {
    /* Every third step of the test is left to whichever process's runner holds the
     * maintenance lease (the daemon's, mostly). */
    int64_t now;
    if (clock_test_file_ns(&now) && (now / (20 * MIN)) % 3 != 0) {
      engram_schedule_tick_report r;
      int rc = engram_schedule_tick(log, 0, &r);
      if (rc) fprintf(stderr, "ticker: %s\n", engram_errmsg(log));
    }
    usleep(3000);
  }
  engram_close(log);
  return 0;
}

/* Expected slots in (created - 1, upto] of the three schedules. */
static size_t expected(int64_t start, int64_t upto) {
  size_t n = 0;
  for (int64_t t = start; t <= upto; t += 5 * MIN) n++;            /* every 5 minutes */
  for (int64_t t = start; t <= upto; t += HOUR) n++;               /* hourly */
  for (int64_t t = start + 7 * MIN; t <= upto; t += 15 * MIN) n++; /* "7-59/15 * * * *" */
  return n;
}

static void one_day_with_a_daemon_and_two_processes_fires_every_slot_exactly_once(void **state) {
  (void)state;
  char *dir = tu_tmpdir("sched-day");
  char *logdir = tu_join(dir, "log"), *clockf = tu_join(dir, "clock"), *stop = tu_join(dir, "stop"),
       *dlog = tu_join(dir, "daemon.log"), *tlog = tu_join(dir, "tickers.log");
  int64_t start = utc(2026, 12, 5, 0, 0) * NS, end = start + 24 * HOUR;
  write_clock(clockf, start);
  setenv("ENGRAM_TEST_CLOCK_FILE", clockf, 1);

  char self[4096], cli[4200];
  ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
  assert_true(sl > 0);
  self[sl] = '\0';
  /* build/tests/test_schedule -> build/engram */
  snprintf(cli, sizeof cli, "%s", self);
  char *slash = strrchr(cli, '/');
  *slash = '\0';
  slash = strrchr(cli, '/');
  snprintf(slash, sizeof cli - (size_t)(slash - cli), "/engram");
  assert_true(access(cli, X_OK) == 0);

  /* The schedules, made by this process at the start of the day (then closed: the
   * children do the firing). */
  {
    tu_clock ck;
    tu_clock_init(&ck, start);
    engram *log = tu_open(logdir, &(engram_options){.clock_ns = tu_clock_ns,
                                                    .clock_ctx = &ck,
                                                    .maintenance_ms = ENGRAM_MAINTENANCE_OFF});
    tu_topic(log, "jobs", NULL);
    engram_schedule_config c = every(5 * 60000);
    c.missed = ENGRAM_MISSED_ALL;
    c.max_catchup = 1000;
    OK(log, engram_schedule_add(log, "five", &c));
    c.every_ms = 3600000;
    OK(log, engram_schedule_add(log, "hourly", &c));
    c.every_ms = 0;
    c.cron = "7-59/15 * * * *";
    c.tz = "Europe/Paris";
    OK(log, engram_schedule_add(log, "cron", &c));
    engram_close(log);
  }
  char ep[4200], lockf[4200];
  snprintf(ep, sizeof ep, "ipc://%s/req.ipc", dir);
  snprintf(lockf, sizeof lockf, "%s/maintenance.lock", logdir);
  char *daemon_argv[] = {cli, "serve", "--data", logdir, "--listen", ep, NULL};
  char *ticker_argv[] = {self, "--ticker", logdir, stop, NULL};
  pid_t daemon = spawn(daemon_argv, dlog);
  /* The daemon takes the maintenance lease first (its pid in the lock file). */
  char want_pid[32];
  snprintf(want_pid, sizeof want_pid, "%ld\n", (long)daemon);
  for (int64_t until = tu_mono_ms() + 30000;;) {
    char buf[32] = "";
    FILE *f = fopen(lockf, "r");
    if (f) {
      if (!fgets(buf, sizeof buf, f)) buf[0] = '\0';
      fclose(f);
    }
    if (!strcmp(buf, want_pid)) break;
    if (tu_mono_ms() > until) fail_msg("the daemon did not take the maintenance lease");
    tu_sleep_ms(20);
  }
  /* A second daemon on the directory, at another endpoint, is refused by design
   * (DIR/daemon.lock): hence one daemon and two embedded processes. */
  char ep2[4200], dlog2[4200];
  snprintf(ep2, sizeof ep2, "ipc://%s/req2.ipc", dir);
  snprintf(dlog2, sizeof dlog2, "%s/daemon2.log", dir);
  char *daemon2_argv[] = {cli, "serve", "--data", logdir, "--listen", ep2, NULL};
  assert_int_equal(tu_wait(spawn(daemon2_argv, dlog2), 30000), 1);
  pid_t t1 = spawn(ticker_argv, tlog), t2 = spawn(ticker_argv, tlog);

  engram *rd = tu_open(logdir, &(engram_options){.flags = ENGRAM_OPEN_RDONLY});
  int64_t step = 20 * MIN;
  int killed = 0;
  for (int64_t now = start; now <= end; now += step) {
    write_clock(clockf, now);
    if (!killed && now >= start + 12 * HOUR) {
      /* Midway: the daemon and one ticker die with SIGKILL and come back. */
      kill(daemon, SIGKILL);
      kill(t1, SIGKILL);
      assert_int_equal(tu_wait(daemon, 10000), 128 + SIGKILL);
      assert_int_equal(tu_wait(t1, 10000), 128 + SIGKILL);
      daemon = spawn(daemon_argv, dlog);
      t1 = spawn(ticker_argv, tlog);
      killed = 1;
    }
    /* Wait until every slot due by now has fired. */
    size_t want = expected(start, now);
    int64_t deadline = tu_mono_ms() + 60000;
    for (;;) {
      engram_topic_info ti;
      OK(rd, engram_topic_info_get(rd, "jobs", &ti));
      if (ti.head_offset >= want) {
        assert_int_equal(ti.head_offset, want); /* never more than the slots due */
        break;
      }
      if (tu_mono_ms() > deadline)
        fail_msg("at +%lld min: %llu events, %zu slots due", (long long)((now - start) / MIN),
                 (unsigned long long)ti.head_offset, want);
      tu_sleep_ms(2);
    }
  }
  int sfd = open(stop, O_WRONLY | O_CREAT, 0644);
  close(sfd);
  assert_int_equal(tu_wait(t1, 20000), 0);
  assert_int_equal(tu_wait(t2, 20000), 0);
  kill(daemon, SIGTERM);
  assert_int_equal(tu_wait(daemon, 20000), 0);

  /* No process complained (a sanitizer build reports there too). */
  const char *logs[] = {dlog, tlog};
  for (int l = 0; l < 2; l++) {
    FILE *f = fopen(logs[l], "r");
    char line[4096];
    while (f && fgets(line, sizeof line, f))
      if (strstr(line, "ticker:") || strstr(line, "Sanitizer") || strstr(line, "runtime error") ||
          strstr(line, " error "))
        fail_msg("%s: %s", logs[l], line);
    if (f) fclose(f);
  }

  /* Every slot exactly once: the idempotency keys are the expected set, no duplicate. */
  engram_batch *b;
  OK(rd, engram_read_range(rd, "jobs", 1, 100000, &b));
  size_t want = expected(start, end);
  assert_int_equal(want, 289 + 25 + 96); /* docs/operations.md quotes the 410 */
  assert_int_equal(b->count, want);
  char **keys = calloc(want, sizeof *keys);
  for (size_t i = 0; i < b->count; i++) keys[i] = strdup(b->events[i].idempotency_key);
  for (size_t i = 0; i < want; i++)
    for (size_t j = i + 1; j < want; j++)
      if (!strcmp(keys[i], keys[j])) fail_msg("slot fired twice: %s", keys[i]);
  /* ... and each is a slot of its schedule. */
  for (int64_t t = start; t <= end; t += MIN) {
    int64_t m = (t - start) / MIN;
    const char *names[3] = {m % 5 == 0 ? "five" : NULL, m % 60 == 0 ? "hourly" : NULL,
                            m % 15 == 7 ? "cron" : NULL};
    for (int j = 0; j < 3; j++) {
      if (!names[j]) continue;
      int64_t s = t / NS, days = s / 86400, y;
      unsigned mo, d;
      cron_civil_from_days(days, &y, &mo, &d);
      char k[128];
      snprintf(k, sizeof k, "%s@%04lld-%02u-%02uT%02d:%02d:00Z", names[j], (long long)y, mo, d,
               (int)(s % 86400 / 3600), (int)(s % 3600 / 60));
      int found = 0;
      for (size_t i = 0; i < want && !found; i++) found = !strcmp(keys[i], k);
      if (!found) fail_msg("slot never fired: %s", k);
    }
  }
  for (size_t i = 0; i < want; i++) free(keys[i]);
  free(keys);
  engram_batch_free(b);
  engram_close(rd);
  unsetenv("ENGRAM_TEST_CLOCK_FILE");
  free(logdir);
  free(clockf);
  free(stop);
  free(dlog);
  free(tlog);
  tu_tmpdir_done(dir);
}

/* The build's engram command beside this test program (build/tests/x -> build/engram). */
static void cli_path(char *self, size_t self_cap, char *cli, size_t cli_cap) {
  ssize_t sl = readlink("/proc/self/exe", self, self_cap - 1);
  assert_true(sl > 0);
  self[sl] = '\0';
  snprintf(cli, cli_cap, "%s", self);
  char *slash = strrchr(cli, '/');
  *slash = '\0';
  slash = strrchr(cli, '/');
  snprintf(slash, cli_cap - (size_t)(slash - cli), "/engram");
  assert_true(access(cli, X_OK) == 0);
}

/* Connects to the daemon at ep, retrying until it answers. */
static engram *connect_within(const char *ep, int ms) {
  int64_t end = tu_mono_ms() + ms;
  for (;;) {
    engram *log = NULL;
    engram_connect_options o = {.timeout_ms = 5000};
    if (engram_connect(ep, &o, &log) == 0) return log;
    if (tu_mono_ms() > end) fail_msg("no daemon at %s: %s", ep, engram_errmsg(NULL));
    tu_sleep_ms(20);
  }
}

static void schedules_work_the_same_through_the_daemon(void **state) {
  (void)state;
  char *dir = tu_tmpdir("sched-remote");
  char *logdir = tu_join(dir, "log"), *dlog = tu_join(dir, "daemon.log");
  char self[4096], cli[4200], ep[4200];
  cli_path(self, sizeof self, cli, sizeof cli);
  snprintf(ep, sizeof ep, "ipc://%s/req.ipc", dir);
  char *argv[] = {cli, "serve", "--data", logdir, "--listen", ep, NULL};
  pid_t daemon = spawn(argv, dlog);
  engram *log = connect_within(ep, 20000);
  tu_topic(log, "jobs", NULL);
  engram_header h = {"origin", "remote"};
  engram_schedule_config c = {.cron = "0 2 * * *",
                              .tz = "Europe/Paris",
                              .topic = "jobs",
                              .type = "job.nightly",
                              .payload = "p",
                              .payload_len = 1,
                              .headers = &h,
                              .n_headers = 1,
                              .missed = ENGRAM_MISSED_SKIP};
  OK(log, engram_schedule_add(log, "nightly", &c));
  assert_int_equal(engram_schedule_add(log, "nightly", &c), ENGRAM_EEXIST);
  int changed = -1;
  OK(log, engram_schedule_set(log, "nightly", &c, &changed));
  assert_int_equal(changed, 0);
  OK(log, engram_schedule_set(
              log, "every",
              &(engram_schedule_config){.every_ms = 3600000, .topic = "jobs", .type = "job.hourly"},
              &changed));
  assert_int_equal(changed, 1);
  c.cron = "61 2 * * *";
  assert_int_equal(engram_schedule_add(log, "bad", &c), ENGRAM_EINVAL);
  assert_non_null(strstr(engram_errmsg(log), "minute"));
  engram_schedule_info *i = NULL;
  OK(log, engram_schedule_get(log, "nightly", &i));
  assert_string_equal(i->config.tz, "Europe/Paris");
  assert_string_equal(i->config.cron, "0 2 * * *");
  assert_int_equal(i->config.missed, ENGRAM_MISSED_SKIP);
  assert_int_equal(i->config.n_headers, 1);
  assert_string_equal(i->config.headers[0].value, "remote");
  assert_memory_equal(i->config.payload, "p", 1);
  assert_true(i->next_slot_ns > i->created_ns);
  engram_free(i);
  engram_schedule_info *list = NULL;
  size_t n = 0;
  OK(log, engram_schedule_list(log, &list, &n));
  assert_int_equal(n, 2);
  assert_string_equal(list[0].name, "every");
  assert_string_equal(list[1].name, "nightly");
  engram_free(list);
  OK(log, engram_schedule_pause(log, "nightly"));
  uint64_t off = 0;
  OK(log, engram_schedule_run_now(log, "nightly", &off));
  assert_int_equal(off, 1);
  engram_schedule_tick_report r;
  assert_int_equal(engram_schedule_tick(log, tu_now_ns() + 2 * 3600 * NS, &r), ENGRAM_EINVAL);
  assert_non_null(strstr(engram_errmsg(log), "ahead of the daemon's clock"));
  OK(log, engram_schedule_tick(log, 0, &r));
  assert_int_equal(r.fired, 0); /* the hourly one's first slot is ahead; nightly is paused */
  assert_true(r.next_due_ns > tu_now_ns());
  OK(log, engram_schedule_resume(log, "nightly"));
  OK(log, engram_schedule_remove(log, "nightly"));
  assert_int_equal(engram_schedule_remove(log, "nightly"), ENGRAM_ENOTFOUND);
  assert_int_equal(engram_schedule_get(log, "nightly", &i), ENGRAM_ENOTFOUND);
  engram_close(log);
  kill(daemon, SIGTERM);
  assert_int_equal(tu_wait(daemon, 20000), 0);
  free(logdir);
  free(dlog);
  tu_tmpdir_done(dir);
}

int main(int argc, char **argv) {
  if (argc == 4 && !strcmp(argv[1], "--ticker")) return ticker_main(argv[2], argv[3]);
  tu_test_filter();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(cron_fields_lists_ranges_steps_and_names_parse),
      cmocka_unit_test(bad_cron_expressions_are_refused_with_the_field_named),
      cmocka_unit_test(paris_dst_gap_fires_once_at_its_end_and_overlap_fires_once),
      cmocka_unit_test(new_york_dst_gap_and_overlap),
      cmocka_unit_test(cron_next_agrees_with_glibc_localtime_over_a_year),
      cmocka_unit_test_setup_teardown(
          an_interval_schedule_fires_each_slot_once_with_key_and_headers, setup, teardown),
      cmocka_unit_test_setup_teardown(a_cron_schedule_in_paris_fires_through_both_dst_changes,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(declare_is_idempotent_and_a_change_keeps_the_fire_state,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(pause_skips_slots_resume_continues_and_run_now_stays_outside,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(missed_fires_follow_skip_once_and_all_bounded_by_max_catchup,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(bad_input_is_refused_and_leaves_the_log_unchanged, setup,
                                      teardown),
      cmocka_unit_test(the_embedded_lease_holder_fires_without_being_asked),
      cmocka_unit_test(a_read_only_log_without_schedules_lists_none_and_verify_checks_records),
      cmocka_unit_test(schedules_work_the_same_through_the_daemon),
      cmocka_unit_test(one_day_with_a_daemon_and_two_processes_fires_every_slot_exactly_once),
  };
  return cmocka_run_group_tests_name("schedule", tests, NULL, NULL);
}
