/* schedule.c — schedules: records in the `schedules` database, their slots (intervals and
 * cron expressions in a time zone), and fires that append an event and record the slot in
 * one write transaction, so that no slot fires twice. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cron.h"
#include "consumers/cg.h"

#define NS 1000000000ll
#define MAX_PAYLOAD (1u << 20)
#define N_OWN_HEADERS 3 /* engram-schedule, engram-slot, engram-fire */
/* Missed slots of a cron schedule counted one by one at most: past it `skipped` stops
 * counting (the slots are still skipped). */
#define MAX_COUNT 100000
/* A slot fired later than this after its time (or half its interval, when shorter) was
 * missed. */
#define GRACE_NS (30 * NS)

static int sched_dbi(struct log *log, MDB_dbi *out) {
  return log_aux_dbi(log, "schedules", 0, out);
}

/* The database for a change: refused on a read-only handle, which may lack it. */
static int sched_dbi_w(struct log *log, const char *what, MDB_dbi *out) {
  if (log->env_flags & MDB_RDONLY)
    return log_error(log, ENGRAM_ENOTSUP, "%s: the log %s is open read-only", what, log->path);
  return sched_dbi(log, out);
}

/* ---------------------------------------------------------------------------------
 * Checking a configuration (no log needed: api/ calls it for every backend).
 * ------------------------------------------------------------------------------ */
static int is_reserved(const char *name) { return strncmp(name, "engram-", 7) == 0; }

int cg_schedule_check(const char *what, const char *name, const engram_schedule_config *cfg) {
  if (!log_valid_name(name))
    return log_error(NULL, ENGRAM_EINVAL,
                     "%s: schedule name %s%.60s%s invalid (use 1-200 of [A-Za-z0-9._-])", what,
                     name ? "\"" : "", name ? name : "(null)", name ? "\"" : "");
  int has_cron = cfg->cron && *cfg->cron;
  if (has_cron == (cfg->every_ms != 0))
    return log_error(NULL, ENGRAM_EINVAL,
                     "%s %s: give either an interval (every_ms) or a cron expression, %s", what,
                     name, has_cron ? "not both" : "neither is set");
  if (cfg->every_ms && (cfg->every_ms < ENGRAM_MIN_SCHEDULE_EVERY_MS ||
                        cfg->every_ms > ENGRAM_MAX_SCHEDULE_EVERY_MS))
    return log_error(NULL, ENGRAM_EINVAL, "%s %s: interval of %llu ms out of %u ms - %llu ms", what,
                     name, (unsigned long long)cfg->every_ms, ENGRAM_MIN_SCHEDULE_EVERY_MS,
                     (unsigned long long)ENGRAM_MAX_SCHEDULE_EVERY_MS);
  if (cfg->start_ns < 0)
    return log_error(NULL, ENGRAM_EINVAL, "%s %s: negative start_ns", what, name);
  if (cfg->start_ns && !cfg->every_ms)
    return log_error(NULL, ENGRAM_EINVAL, "%s %s: start_ns is for interval schedules only", what,
                     name);
  int has_tz = cfg->tz && *cfg->tz;
  if (has_tz && strlen(cfg->tz) > ENGRAM_MAX_TZ)
    return log_error(NULL, ENGRAM_EINVAL, "%s %s: time zone name over %d bytes", what, name,
                     ENGRAM_MAX_TZ);
  if (!has_cron && has_tz && strcmp(cfg->tz, "UTC") != 0)
    return log_error(NULL, ENGRAM_EINVAL,
                     "%s %s: a time zone applies to cron schedules only (an interval counts in "
                     "UTC)",
                     what, name);
  char err[256];
  if (has_cron) {
    struct cron c;
    if (cron_parse(cfg->cron, &c, err, sizeof err))
      return log_error(NULL, ENGRAM_EINVAL, "%s %s: %s", what, name, err);
    struct tz *z;
    int rc = tz_load(NULL, cfg->tz, &z, err, sizeof err);
    if (rc == -2) return log_error(NULL, ENGRAM_ENOMEM, "%s %s: out of memory", what, name);
    if (rc) return log_error(NULL, ENGRAM_EINVAL, "%s %s: %s", what, name, err);
    tz_free(z);
  }
  if ((unsigned)cfg->missed > ENGRAM_MISSED_ALL)
    return log_error(NULL, ENGRAM_EINVAL, "%s %s: missed policy %d unknown (skip, once, all)", what,
                     name, (int)cfg->missed);
  if (cfg->max_catchup > ENGRAM_MAX_CATCHUP)
    return log_error(NULL, ENGRAM_EINVAL, "%s %s: max_catchup %u over the limit of %u", what, name,
                     cfg->max_catchup, ENGRAM_MAX_CATCHUP);
  if (!log_valid_name(cfg->topic))
    return log_error(NULL, ENGRAM_EINVAL,
                     "%s %s: topic name %s%.60s%s invalid (use 1-200 of [A-Za-z0-9._-])", what,
                     name, cfg->topic ? "\"" : "", cfg->topic ? cfg->topic : "(null)",
                     cfg->topic ? "\"" : "");
  if (cfg->n_headers > ENGRAM_MAX_HEADERS - N_OWN_HEADERS)
    return log_error(NULL, ENGRAM_ETOOBIG, "%s %s: %zu headers over the limit of %d", what, name,
                     cfg->n_headers, ENGRAM_MAX_HEADERS - N_OWN_HEADERS);
  if (cfg->n_headers && !cfg->headers)
    return log_error(NULL, ENGRAM_EINVAL, "%s %s: headers is NULL but n_headers is %zu", what, name,
                     cfg->n_headers);
  for (size_t i = 0; i < cfg->n_headers; i++)
    if (cfg->headers[i].name && is_reserved(cfg->headers[i].name))
      return log_error(NULL, ENGRAM_EINVAL, "%s %s: header name %.60s is reserved (engram-*)", what,
                       name, cfg->headers[i].name);
  /* The event of a fire, with its own headers at their longest. */
  engram_header hs[ENGRAM_MAX_HEADERS];
  for (size_t i = 0; i < cfg->n_headers; i++) hs[i] = cfg->headers[i];
  hs[cfg->n_headers] = (engram_header){"engram-schedule", name};
  hs[cfg->n_headers + 1] = (engram_header){"engram-slot", "0000-00-00T00:00:00.000000000Z"};
  hs[cfg->n_headers + 2] = (engram_header){"engram-fire", "scheduled"};
  engram_event ev = {.type = cfg->type,
                     .key = cfg->key && *cfg->key ? cfg->key : NULL,
                     .payload = cfg->payload,
                     .payload_len = cfg->payload_len,
                     .content_type = cfg->content_type,
                     .headers = hs,
                     .n_headers = cfg->n_headers + N_OWN_HEADERS};
  int rc = log_check_event(NULL, cfg->topic, &ev, MAX_PAYLOAD);
  if (rc) {
    /* "append T: what" becomes "schedule add NAME: what". */
    const char *msg = log_errmsg(NULL), *colon = strstr(msg, ": ");
    snprintf(err, sizeof err, "%s", colon ? colon + 2 : msg);
    return log_error(NULL, rc, "%s %s: %s", what, name, err);
  }
  return 0;
}

/* ---------------------------------------------------------------------------------
 * Records.
 * ------------------------------------------------------------------------------ */
static int load(struct log *log, MDB_txn *txn, MDB_dbi dbi, const char *name,
                Engram__ScheduleRecord **out) {
  *out = NULL;
  MDB_val k = {strlen(name), (void *)name}, v;
  int rc = mdb_get(txn, dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return log_err_mdb(rc);
  *out = engram__schedule_record__unpack(NULL, v.mv_size, v.mv_data);
  if (!*out)
    return log_error(log, ENGRAM_ECORRUPT,
                     "schedule %s: its record does not decode (remove it and add it again)", name);
  return 0;
}

static int store(MDB_txn *txn, MDB_dbi dbi, const char *name, const Engram__ScheduleRecord *r) {
  size_t len = engram__schedule_record__get_packed_size(r);
  MDB_val k = {strlen(name), (void *)name}, v = {len, NULL};
  int rc = mdb_put(txn, dbi, &k, &v, MDB_RESERVE);
  if (rc) return log_err_mdb(rc);
  engram__schedule_record__pack(r, v.mv_data);
  return 0;
}

/* The configuration part of a record over cfg's memory (defaults filled in); hdrs holds
 * cfg->n_headers entries the record points to. */
static void config_to_record(const engram_schedule_config *cfg, Engram__ScheduleRecord *r,
                             Engram__ScheduleHeader *hdrs, Engram__ScheduleHeader **hp) {
  engram__schedule_record__init(r);
  r->every_ms = cfg->every_ms;
  r->start_ns = cfg->start_ns;
  r->cron = (char *)(cfg->cron ? cfg->cron : "");
  r->tz = (char *)(cfg->tz && *cfg->tz ? cfg->tz : "UTC");
  r->topic = (char *)cfg->topic;
  r->type = (char *)cfg->type;
  r->payload.data = (uint8_t *)cfg->payload;
  r->payload.len = cfg->payload_len;
  r->key = (char *)(cfg->key ? cfg->key : "");
  r->content_type = (char *)(cfg->content_type ? cfg->content_type : "");
  for (size_t i = 0; i < cfg->n_headers; i++) {
    engram__schedule_header__init(&hdrs[i]);
    hdrs[i].name = (char *)cfg->headers[i].name;
    hdrs[i].value = (char *)(cfg->headers[i].value ? cfg->headers[i].value : "");
    hp[i] = &hdrs[i];
  }
  r->headers = cfg->n_headers ? hp : NULL;
  r->n_headers = cfg->n_headers;
  r->missed = (uint32_t)cfg->missed;
  r->max_catchup = cfg->max_catchup ? cfg->max_catchup : ENGRAM_DEFAULT_MAX_CATCHUP;
}

static int same_str(const char *a, const char *b) { return !strcmp(a ? a : "", b ? b : ""); }

static int same_timing(const Engram__ScheduleRecord *a, const Engram__ScheduleRecord *b) {
  return a->every_ms == b->every_ms && a->start_ns == b->start_ns && same_str(a->cron, b->cron) &&
         same_str(a->tz, b->tz);
}

static int same_config(const Engram__ScheduleRecord *a, const Engram__ScheduleRecord *b) {
  if (!same_timing(a, b) || !same_str(a->topic, b->topic) || !same_str(a->type, b->type) ||
      !same_str(a->key, b->key) || !same_str(a->content_type, b->content_type) ||
      a->missed != b->missed || a->max_catchup != b->max_catchup ||
      a->payload.len != b->payload.len || a->n_headers != b->n_headers)
    return 0;
  if (a->payload.len && memcmp(a->payload.data, b->payload.data, a->payload.len)) return 0;
  for (size_t i = 0; i < a->n_headers; i++)
    if (!same_str(a->headers[i]->name, b->headers[i]->name) ||
        !same_str(a->headers[i]->value, b->headers[i]->value))
      return 0;
  return 1;
}

/* ---------------------------------------------------------------------------------
 * Slots.
 * ------------------------------------------------------------------------------ */
struct timing {
  int64_t every_ns; /* 0 = cron */
  int64_t start_ns;
  struct cron cron;
  struct tz *tz;
};

static int timing_load(const Engram__ScheduleRecord *r, struct timing *t, const char *name) {
  memset(t, 0, sizeof *t);
  if (r->every_ms) {
    t->every_ns = clock_ms_to_ns(r->every_ms);
    t->start_ns = r->start_ns;
    return 0;
  }
  char err[256];
  if (cron_parse(r->cron, &t->cron, err, sizeof err))
    return log_error(NULL, ENGRAM_ECORRUPT, "schedule %s: stored %s", name, err);
  int rc = tz_load(NULL, r->tz, &t->tz, err, sizeof err);
  if (rc == -2) return log_error(NULL, ENGRAM_ENOMEM, "schedule %s: out of memory", name);
  if (rc) return log_error(NULL, ENGRAM_EIO, "schedule %s: %s", name, err);
  return 0;
}

static void timing_free(struct timing *t) { tz_free(t->tz); }

/* The first slot strictly after `after` (INT64_MAX = none). */
static int64_t next_slot(const struct timing *t, int64_t after) {
  if (t->every_ns) {
    if (after < t->start_ns) return t->start_ns;
    int64_t k = (after - t->start_ns) / t->every_ns + 1;
    if (k > (INT64_MAX - t->start_ns) / t->every_ns) return INT64_MAX;
    return t->start_ns + k * t->every_ns;
  }
  int64_t s = after / NS - (after % NS < 0);
  int64_t u = cron_next(&t->cron, t->tz, s);
  return u == INT64_MAX || u > INT64_MAX / NS ? INT64_MAX : u * NS;
}

/* Reverses a[from, to). */
static void reverse(int64_t *a, uint64_t from, uint64_t to) {
  while (from + 1 < to) {
    int64_t x = a[from];
    a[from++] = a[--to];
    a[to] = x;
  }
}

/* The slots in (after, upto]: how many (up to `cap` for cron), and the newest `keep` of
 * them in order (keep <= count; out has room for keep). */
static uint64_t slots_in(const struct timing *t, int64_t after, int64_t upto, uint64_t cap,
                         int64_t *out, uint64_t keep) {
  int64_t first = next_slot(t, after);
  if (first > upto) return 0;
  if (t->every_ns) {
    uint64_t n = (uint64_t)((upto - first) / t->every_ns) + 1;
    int64_t last = first + (int64_t)(n - 1) * t->every_ns;
    if (keep > n) keep = n;
    for (uint64_t i = 0; i < keep; i++) out[i] = last - (int64_t)(keep - 1 - i) * t->every_ns;
    return n;
  }
  /* Cron: find a start from which the window up to `upto` holds `keep` slots (doubling
   * back from upto), then walk it; count the whole range up to cap. */
  uint64_t n = 0;
  for (int64_t s = first; s <= upto && n < cap; s = next_slot(t, s)) n++;
  if (keep == 0) return n;
  int64_t from = after;
  for (int64_t span = 60 * NS; upto - span > after; span *= 2) {
    uint64_t k = 0;
    for (int64_t s = next_slot(t, upto - span); s <= upto && k < keep; s = next_slot(t, s)) k++;
    if (k >= keep) {
      from = upto - span;
      break;
    }
    if (span > INT64_MAX / 4) break;
  }
  /* Ring of the newest `keep` slots in (from, upto]. */
  uint64_t seen = 0;
  for (int64_t s = next_slot(t, from); s <= upto; s = next_slot(t, s)) out[seen++ % keep] = s;
  if (seen > keep) { /* the oldest kept is at seen % keep: rotate it to the front */
    uint64_t r = seen % keep;
    reverse(out, 0, r);
    reverse(out, r, keep);
    reverse(out, 0, keep);
  }
  return n;
}

/* Slots at or before this one never fire. */
static int64_t base_of(const Engram__ScheduleRecord *r) {
  int64_t b = r->created_ns - 1;
  if (r->last_slot_ns > b) b = r->last_slot_ns;
  if (r->floor_ns > b) b = r->floor_ns;
  return b;
}

/* RFC 3339 UTC of t: a fraction only when t has one (all nine digits when `full`). */
static void rfc3339(int64_t t, char *buf, size_t cap, int full) {
  int64_t s = t / NS - (t % NS < 0), frac = t - s * NS;
  int64_t days = s / 86400 - (s % 86400 < 0), sod = s - days * 86400, y;
  unsigned m, d;
  cron_civil_from_days(days, &y, &m, &d);
  int n = snprintf(buf, cap, "%04lld-%02u-%02uT%02d:%02d:%02d", (long long)y, m, d,
                   (int)(sod / 3600), (int)(sod % 3600 / 60), (int)(sod % 60));
  if (n < 0 || (size_t)n >= cap) return;
  if (full || frac) {
    char f[16];
    snprintf(f, sizeof f, "%09lld", (long long)frac);
    if (!full)
      for (int i = 8; i > 0 && f[i] == '0'; i--) f[i] = '\0';
    snprintf(buf + n, cap - (size_t)n, ".%sZ", f);
  } else {
    snprintf(buf + n, cap - (size_t)n, "Z");
  }
}

/* Appends the event of one fire of r inside w. */
static int fire(log_wtx *w, const char *name, const Engram__ScheduleRecord *r, int64_t slot,
                const char *kind, uint64_t *offset) {
  char when[48], idem[ENGRAM_MAX_NAME + 64];
  rfc3339(slot, when, sizeof when, !strcmp(kind, "manual"));
  snprintf(idem, sizeof idem, "%s@%s%s", name, !strcmp(kind, "manual") ? "manual-" : "", when);
  engram_header hs[ENGRAM_MAX_HEADERS];
  size_t n = 0;
  for (size_t i = 0; i < r->n_headers && n < ENGRAM_MAX_HEADERS - N_OWN_HEADERS; i++)
    hs[n++] = (engram_header){r->headers[i]->name, r->headers[i]->value};
  hs[n++] = (engram_header){"engram-schedule", name};
  hs[n++] = (engram_header){"engram-slot", when};
  hs[n++] = (engram_header){"engram-fire", kind};
  engram_event ev = {.type = r->type,
                     .key = r->key && *r->key ? r->key : NULL,
                     .payload = r->payload.data,
                     .payload_len = r->payload.len,
                     .content_type = r->content_type && *r->content_type ? r->content_type : NULL,
                     .headers = hs,
                     .n_headers = n,
                     .idempotency_key = idem};
  int rc = log_append_in(w, r->topic, &ev, offset, NULL);
  if (rc) {
    const char *msg = log_errmsg(NULL);
    char copy[256];
    snprintf(copy, sizeof copy, "%s", msg);
    return log_error(w->log, rc, "schedule %s: fire of %s: %s", name, when, copy);
  }
  return 0;
}

/* ---------------------------------------------------------------------------------
 * Add, set, remove, pause, resume, run now.
 * ------------------------------------------------------------------------------ */
struct set_req {
  MDB_dbi dbi;
  const char *name;
  const engram_schedule_config *cfg;
  int mode;    /* 0 add, 1 set */
  int changed; /* out */
};

static int set_job(log_wtx *w, void *arg) {
  struct set_req *q = arg;
  q->changed = 0;
  Engram__ScheduleRecord *old;
  int rc = load(w->log, w->txn, q->dbi, q->name, &old);
  if (rc) return rc;
  if (old && q->mode == 0) {
    engram__schedule_record__free_unpacked(old, NULL);
    return log_error(w->log, ENGRAM_EEXIST,
                     "schedule add %s: a schedule of that name exists (remove it first)", q->name);
  }
  Engram__ScheduleRecord r;
  Engram__ScheduleHeader hdrs[ENGRAM_MAX_HEADERS], *hp[ENGRAM_MAX_HEADERS];
  config_to_record(q->cfg, &r, hdrs, hp);
  if (old) {
    if (same_config(old, &r)) {
      engram__schedule_record__free_unpacked(old, NULL);
      return 0;
    }
    r.created_ns = old->created_ns;
    r.paused = old->paused;
    r.fires = old->fires;
    r.manual_fires = old->manual_fires;
    r.skipped = old->skipped;
    r.last_slot_ns = old->last_slot_ns;
    r.last_fire_ns = old->last_fire_ns;
    r.last_offset = old->last_offset;
    r.floor_ns = old->floor_ns;
    /* A new timing starts from now: no catching up of slots the old one never had. */
    if (!same_timing(old, &r) && r.floor_ns < w->now_ns) r.floor_ns = w->now_ns;
    q->changed = 2;
  } else {
    r.created_ns = w->now_ns;
    q->changed = 1;
  }
  r.updated_ns = w->now_ns;
  rc = store(w->txn, q->dbi, q->name, &r);
  if (old) engram__schedule_record__free_unpacked(old, NULL);
  return rc;
}

static int set_common(struct log *log, const char *name, const engram_schedule_config *cfg,
                      int mode, int *changed) {
  struct set_req q = {.name = name, .cfg = cfg, .mode = mode};
  int rc = sched_dbi_w(log, mode ? "schedule set" : "schedule add", &q.dbi);
  if (rc) return rc;
  rc = log_write(log, set_job, &q);
  if (rc < 0) return rc;
  if (changed) *changed = q.changed;
  return 0;
}

int cg_schedule_add(struct log *log, const char *name, const engram_schedule_config *cfg) {
  return set_common(log, name, cfg, 0, NULL);
}

int cg_schedule_set(struct log *log, const char *name, const engram_schedule_config *cfg,
                    int *changed) {
  return set_common(log, name, cfg, 1, changed);
}

enum { OP_REMOVE, OP_PAUSE, OP_RESUME, OP_RUN_NOW };
static const char *const op_names[] = {"remove", "pause", "resume", "run-now"};

struct op_req {
  MDB_dbi dbi;
  const char *name;
  int op;
  uint64_t offset; /* out: run now */
};

static int op_job(log_wtx *w, void *arg) {
  struct op_req *q = arg;
  q->offset = 0;
  if (q->op == OP_REMOVE) {
    MDB_val k = {strlen(q->name), (void *)q->name};
    int rc = mdb_del(w->txn, q->dbi, &k, NULL);
    if (rc == MDB_NOTFOUND)
      return log_error(w->log, ENGRAM_ENOTFOUND, "schedule remove: no schedule named %s", q->name);
    return rc ? log_err_mdb(rc) : 0;
  }
  Engram__ScheduleRecord *r;
  int rc = load(w->log, w->txn, q->dbi, q->name, &r);
  if (rc) return rc;
  if (!r)
    return log_error(w->log, ENGRAM_ENOTFOUND, "schedule %s: no schedule named %s", op_names[q->op],
                     q->name);
  int write = 1;
  if (q->op == OP_PAUSE) {
    write = !r->paused;
    r->paused = 1;
  } else if (q->op == OP_RESUME) {
    write = r->paused;
    if (r->paused) {
      /* The slots that fell while paused are passed over. */
      struct timing t;
      if ((rc = timing_load(r, &t, q->name))) goto done;
      uint64_t n = slots_in(&t, base_of(r), w->now_ns, MAX_COUNT, NULL, 0);
      timing_free(&t);
      r->skipped += n;
      if (r->floor_ns < w->now_ns) r->floor_ns = w->now_ns;
      r->paused = 0;
    }
  } else {
    if ((rc = fire(w, q->name, r, w->now_ns, "manual", &q->offset))) goto done;
    r->manual_fires++;
    r->last_fire_ns = w->now_ns;
    r->last_offset = q->offset;
  }
  if (write) rc = store(w->txn, q->dbi, q->name, r);
done:
  engram__schedule_record__free_unpacked(r, NULL);
  return rc;
}

static int run_op(struct log *log, const char *name, int op, uint64_t *offset) {
  struct op_req q = {.name = name, .op = op};
  char what[32];
  snprintf(what, sizeof what, "schedule %s", op_names[op]);
  int rc = sched_dbi_w(log, what, &q.dbi);
  if (rc) return rc;
  rc = log_write(log, op_job, &q);
  if (rc < 0) return rc;
  if (offset) *offset = q.offset;
  return 0;
}

int cg_schedule_remove(struct log *log, const char *name) {
  return run_op(log, name, OP_REMOVE, NULL);
}
int cg_schedule_pause(struct log *log, const char *name) {
  return run_op(log, name, OP_PAUSE, NULL);
}
int cg_schedule_resume(struct log *log, const char *name) {
  return run_op(log, name, OP_RESUME, NULL);
}
int cg_schedule_run_now(struct log *log, const char *name, uint64_t *offset) {
  return run_op(log, name, OP_RUN_NOW, offset);
}

/* ---------------------------------------------------------------------------------
 * Ticks.
 * ------------------------------------------------------------------------------ */
struct tick_req {
  MDB_dbi dbi;
  const char *name;
  int64_t now;
  /* out, rewritten by every run of the job */
  uint64_t fired, skipped;
  int64_t next_ns;
};

/* Fires what is due of one schedule, reading its state in this very transaction. */
static int tick_job(log_wtx *w, void *arg) {
  struct tick_req *q = arg;
  q->fired = q->skipped = 0;
  q->next_ns = 0;
  Engram__ScheduleRecord *r;
  int rc = load(w->log, w->txn, q->dbi, q->name, &r);
  if (rc || !r) return rc; /* removed meanwhile: nothing to do */
  if (r->paused) {
    engram__schedule_record__free_unpacked(r, NULL);
    return 0;
  }
  struct timing t;
  if ((rc = timing_load(r, &t, q->name))) {
    engram__schedule_record__free_unpacked(r, NULL);
    return rc;
  }
  int64_t base = base_of(r);
  uint64_t keep = r->missed == ENGRAM_MISSED_ALL ? (r->max_catchup ? r->max_catchup : 1) : 1;
  int64_t *slots = malloc(keep * sizeof *slots);
  if (!slots) {
    rc = log_error(w->log, ENGRAM_ENOMEM, "schedule %s: out of memory", q->name);
    goto done;
  }
  uint64_t n = slots_in(&t, base, q->now, MAX_COUNT, slots, keep);
  if (n == 0) {
    q->next_ns = next_slot(&t, base);
    goto done;
  }
  if (keep > n) keep = n;
  /* A slot fired within GRACE of its time is on time; older ones were missed and follow
   * the policy: ALL fires them (the newest max_catchup), ONCE fires only the newest slot
   * due, SKIP fires only an on-time one. */
  int64_t grace = t.every_ns && t.every_ns / 2 < GRACE_NS ? t.every_ns / 2 : GRACE_NS;
  for (uint64_t i = 0; i < keep; i++) {
    int on_time = slots[i] > q->now - grace;
    if (r->missed == ENGRAM_MISSED_SKIP && !on_time) continue;
    uint64_t off;
    if ((rc = fire(w, q->name, r, slots[i], on_time ? "scheduled" : "catchup", &off))) goto done;
    r->last_fire_ns = w->now_ns;
    r->last_offset = off;
    q->fired++;
  }
  q->skipped = n - q->fired;
  char *err = r->last_error;  /* the record's memory, freed with it */
  r->last_error = (char *)""; /* a fire went through */
  r->last_error_ns = 0;
  r->fires += q->fired;
  r->skipped += q->skipped;
  r->last_slot_ns = slots[keep - 1];
  rc = store(w->txn, q->dbi, q->name, r);
  r->last_error = err;
  q->next_ns = next_slot(&t, r->last_slot_ns);
done:
  free(slots);
  timing_free(&t);
  engram__schedule_record__free_unpacked(r, NULL);
  return rc;
}

/* Keeps why a schedule's fire failed in its record, for `schedule show`: written when the
 * reason changes or a minute after it was last written, so a schedule failing at every
 * tick costs a write a minute, not a second. */
#define ERROR_EVERY_NS (60 * NS)

struct error_req {
  MDB_dbi dbi;
  const char *name;
  const char *text;
};

static int error_job(log_wtx *w, void *arg) {
  struct error_req *q = arg;
  Engram__ScheduleRecord *r;
  int rc = load(w->log, w->txn, q->dbi, q->name, &r);
  if (rc || !r) return rc;
  if (strcmp(r->last_error ? r->last_error : "", q->text) != 0 ||
      w->now_ns - r->last_error_ns >= ERROR_EVERY_NS) {
    char *old = r->last_error; /* the record's memory, freed with it */
    r->last_error = (char *)q->text;
    r->last_error_ns = w->now_ns;
    rc = store(w->txn, q->dbi, q->name, r);
    r->last_error = old;
  }
  engram__schedule_record__free_unpacked(r, NULL);
  return rc;
}

/* The names of the schedules not paused, with whether each is due at now (and else its
 * next slot), read in one read transaction. */
struct due {
  char name[ENGRAM_MAX_NAME + 1];
  int due;
  int64_t next_ns;
};

static int scan_due(struct log *log, MDB_dbi dbi, int64_t now, struct due **out, size_t *n) {
  *out = NULL;
  *n = 0;
  MDB_txn *txn;
  int rc = log_read_begin(log, &txn);
  if (rc) return rc;
  MDB_cursor *c;
  if ((rc = mdb_cursor_open(txn, dbi, &c))) {
    log_read_end(log, txn);
    return log_err_mdb(rc);
  }
  size_t cap = 0, k = 0;
  struct due *list = NULL;
  MDB_val key, val;
  for (int op = MDB_FIRST; mdb_cursor_get(c, &key, &val, op) == 0; op = MDB_NEXT) {
    if (key.mv_size == 0 || key.mv_size > ENGRAM_MAX_NAME) continue;
    Engram__ScheduleRecord *r = engram__schedule_record__unpack(NULL, val.mv_size, val.mv_data);
    if (!r) continue; /* damaged: verify reports it */
    if (!r->paused) {
      if (k == cap) {
        struct due *bigger = realloc(list, (cap ? 2 * cap : 16) * sizeof *list);
        if (!bigger) {
          engram__schedule_record__free_unpacked(r, NULL);
          rc = log_error(log, ENGRAM_ENOMEM, "schedule tick: out of memory");
          break;
        }
        list = bigger;
        cap = cap ? 2 * cap : 16;
      }
      struct due *d = &list[k];
      memcpy(d->name, key.mv_data, key.mv_size);
      d->name[key.mv_size] = '\0';
      struct timing t;
      if (timing_load(r, &t, d->name) == 0) {
        d->next_ns = next_slot(&t, base_of(r));
        d->due = d->next_ns <= now;
        timing_free(&t);
      } else {
        d->due = 1; /* let the tick report why */
        d->next_ns = 0;
      }
      k++;
    }
    engram__schedule_record__free_unpacked(r, NULL);
  }
  mdb_cursor_close(c);
  log_read_end(log, txn);
  if (rc) {
    free(list);
    return rc;
  }
  *out = list;
  *n = k;
  return 0;
}

int cg_schedule_tick(struct log *log, int64_t now, engram_schedule_tick_report *report) {
  if (now == 0) now = log_now_ns(log);
  MDB_dbi dbi;
  if (log->env_flags & MDB_RDONLY)
    return log_error(log, ENGRAM_ENOTSUP, "schedule tick: the log %s is open read-only", log->path);
  /* A log that never had a schedule has nothing to fire: no database is made for it. */
  int rc = log_aux_dbi_existing(log, "schedules", &dbi);
  if (rc == ENGRAM_ENOTFOUND) return 0;
  if (rc) return rc;
  struct due *list;
  size_t n;
  if ((rc = scan_due(log, dbi, now, &list, &n))) return rc;
  int64_t next = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    int64_t nx = list[i].next_ns;
    if (list[i].due) {
      struct tick_req q = {.dbi = dbi, .name = list[i].name, .now = now};
      int jrc = log_write(log, tick_job, &q);
      if (jrc < 0) {
        if (jrc == ENGRAM_EIO || jrc == ENGRAM_ENOSPC || jrc == ENGRAM_ENOMEM ||
            jrc == ENGRAM_ECORRUPT || jrc == ENGRAM_ENOTSUP)
          rc = jrc; /* the log, not the schedule: stop */
        char text[256];
        snprintf(text, sizeof text, "%s", log_errmsg(log));
        if (report) {
          if (!report->failed)
            snprintf(report->first_error, sizeof report->first_error, "%s", text);
          report->failed++;
        }
        if (rc == 0) {
          struct error_req e = {.dbi = dbi, .name = list[i].name, .text = text};
          log_write_relaxed(log, error_job, &e); /* for people: a failure here changes nothing */
          log_error_clear(log);
        }
        nx = now + NS; /* try again at the next tick */
      } else {
        if (report) {
          report->fired += q.fired;
          report->skipped += q.skipped;
        }
        nx = q.next_ns;
      }
    }
    if (nx > 0 && nx != INT64_MAX && (next == 0 || nx < next)) next = nx;
  }
  free(list);
  if (report) report->next_due_ns = next;
  return rc;
}

/* ---------------------------------------------------------------------------------
 * Reading: info in one allocation.
 * ------------------------------------------------------------------------------ */
/* Bytes of the strings, payload and headers of one info beyond the struct itself. */
static size_t extra_size(const engram_schedule_config *c) {
  size_t s = 0;
  const char *strs[] = {c->cron, c->tz, c->topic, c->type, c->key, c->content_type};
  for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) s += (strs[i] ? strlen(strs[i]) : 0) + 1;
  s += c->payload_len + 8;
  s += c->n_headers * sizeof(engram_header) + 8;
  for (size_t i = 0; i < c->n_headers; i++)
    s += strlen(c->headers[i].name) + (c->headers[i].value ? strlen(c->headers[i].value) : 0) + 2;
  return s;
}

static char *put(char **p, const void *src, size_t n, int nul) {
  char *dst = *p;
  if (n) memcpy(dst, src, n);
  if (nul) dst[n++] = '\0';
  *p += n;
  return dst;
}

/* Copies src's config into dst, its memory taken from *p. */
static void deep_copy(engram_schedule_info *dst, const engram_schedule_info *src, char **p) {
  *dst = *src;
  const engram_schedule_config *s = &src->config;
  engram_schedule_config *d = &dst->config;
  /* Headers first: the array wants alignment. */
  size_t pad = (size_t)(-(uintptr_t)*p & 7);
  *p += pad;
  engram_header *hs = (engram_header *)*p;
  *p += s->n_headers * sizeof *hs;
  for (size_t i = 0; i < s->n_headers; i++) {
    hs[i].name = put(p, s->headers[i].name, strlen(s->headers[i].name), 1);
    const char *v = s->headers[i].value ? s->headers[i].value : "";
    hs[i].value = put(p, v, strlen(v), 1);
  }
  d->headers = s->n_headers ? hs : NULL;
#define STR(f) d->f = put(p, s->f ? s->f : "", s->f ? strlen(s->f) : 0, 1)
  STR(cron);
  STR(tz);
  STR(topic);
  STR(type);
  STR(key);
  STR(content_type);
#undef STR
  d->payload = s->payload_len ? put(p, s->payload, s->payload_len, 0) : NULL;
}

int cg_schedule_infos_copy(const engram_schedule_info *src, size_t n, engram_schedule_info **out) {
  size_t total = (n ? n : 1) * sizeof **out;
  for (size_t i = 0; i < n; i++) total += extra_size(&src[i].config);
  engram_schedule_info *list = calloc(1, total);
  if (!list) return log_error(NULL, ENGRAM_ENOMEM, "schedules: out of memory");
  char *p = (char *)(list + (n ? n : 1));
  for (size_t i = 0; i < n; i++) deep_copy(&list[i], &src[i], &p);
  *out = list;
  return 0;
}

/* An info over r's memory (valid while r lives); hs has room for r->n_headers. */
static void record_info(const char *name, size_t name_len, const Engram__ScheduleRecord *r,
                        int64_t now, engram_schedule_info *o, engram_header *hs) {
  memset(o, 0, sizeof *o);
  snprintf(o->name, sizeof o->name, "%.*s", (int)name_len, name);
  engram_schedule_config *c = &o->config;
  c->every_ms = r->every_ms;
  c->start_ns = r->start_ns;
  c->cron = r->cron;
  c->tz = r->tz;
  c->topic = r->topic;
  c->type = r->type;
  c->payload = r->payload.data;
  c->payload_len = r->payload.len;
  c->key = r->key;
  c->content_type = r->content_type;
  for (size_t i = 0; i < r->n_headers; i++)
    hs[i] = (engram_header){r->headers[i]->name, r->headers[i]->value};
  c->headers = hs;
  c->n_headers = r->n_headers;
  c->missed = (engram_missed)r->missed;
  c->max_catchup = r->max_catchup;
  o->created_ns = r->created_ns;
  o->paused = r->paused;
  o->fires = r->fires;
  o->manual_fires = r->manual_fires;
  o->skipped = r->skipped;
  o->last_slot_ns = r->last_slot_ns;
  o->last_fire_ns = r->last_fire_ns;
  o->last_offset = r->last_offset;
  o->updated_ns = r->updated_ns;
  o->last_error_ns = r->last_error_ns;
  snprintf(o->last_error, sizeof o->last_error, "%s", r->last_error ? r->last_error : "");
  struct timing t;
  if (timing_load(r, &t, o->name) == 0) {
    int64_t base = base_of(r);
    if (r->paused && base < now) base = now;
    int64_t nx = next_slot(&t, base);
    o->next_slot_ns = nx == INT64_MAX ? 0 : nx;
    timing_free(&t);
  } else {
    log_error_clear(NULL);
  }
}

/* Reads one (name != NULL) or all schedules into one allocation. */
static int read_infos(struct log *log, const char *name, engram_schedule_info **out, size_t *n) {
  *out = NULL;
  *n = 0;
  const char *what = name ? "schedule get" : "schedule list";
  MDB_dbi dbi;
  int rc = sched_dbi(log, &dbi);
  if (rc == ENGRAM_ENOTFOUND) { /* a read-only log that never had schedules */
    log_error_clear(log);
    if (name) return log_error(log, ENGRAM_ENOTFOUND, "%s: no schedule named %s", what, name);
    return cg_schedule_infos_copy(NULL, 0, out);
  }
  if (rc) return rc;
  MDB_txn *txn;
  if ((rc = log_read_begin(log, &txn))) return rc;
  int64_t now = log_now_ns(log);
  size_t cap = 0, k = 0;
  engram_schedule_info *tmp = NULL;
  Engram__ScheduleRecord **recs = NULL;
  engram_header *hs = NULL;
  MDB_cursor *c = NULL;
  MDB_val key, val;
  if (name) {
    key = (MDB_val){strlen(name), (void *)name};
    rc = mdb_get(txn, dbi, &key, &val);
    if (rc == MDB_NOTFOUND) {
      rc = log_error(log, ENGRAM_ENOTFOUND, "%s: no schedule named %s", what, name);
      goto done;
    }
    if (rc) {
      rc = log_err_mdb(rc);
      goto done;
    }
  } else if ((rc = mdb_cursor_open(txn, dbi, &c))) {
    rc = log_err_mdb(rc);
    goto done;
  }
  for (int op = MDB_FIRST;; op = MDB_NEXT) {
    if (c && mdb_cursor_get(c, &key, &val, op) != 0) break;
    if (key.mv_size == 0 || key.mv_size > ENGRAM_MAX_NAME) goto next;
    Engram__ScheduleRecord *r = engram__schedule_record__unpack(NULL, val.mv_size, val.mv_data);
    if (!r) {
      if (name) {
        rc = log_error(log, ENGRAM_ECORRUPT, "%s %s: its record does not decode", what, name);
        goto done;
      }
      goto next; /* damaged: verify reports it */
    }
    if (k == cap) {
      size_t nc = cap ? 2 * cap : 8;
      engram_schedule_info *t2 = realloc(tmp, nc * sizeof *tmp);
      if (t2) tmp = t2;
      Engram__ScheduleRecord **r2 = t2 ? realloc(recs, nc * sizeof *recs) : NULL;
      if (r2) recs = r2;
      if (!t2 || !r2) {
        engram__schedule_record__free_unpacked(r, NULL);
        rc = log_error(log, ENGRAM_ENOMEM, "%s: out of memory", what);
        goto done;
      }
      cap = nc;
    }
    recs[k] = r;
    snprintf(tmp[k].name, sizeof tmp[k].name, "%.*s", (int)key.mv_size, (char *)key.mv_data);
    k++;
  next:
    if (!c) break;
  }
  /* Header arrays for all, then the infos over the records, then one copy. */
  size_t nh = 0;
  for (size_t i = 0; i < k; i++) nh += recs[i]->n_headers;
  hs = malloc((nh ? nh : 1) * sizeof *hs);
  if (!hs) {
    rc = log_error(log, ENGRAM_ENOMEM, "%s: out of memory", what);
    goto done;
  }
  nh = 0;
  for (size_t i = 0; i < k; i++) {
    char nm[ENGRAM_MAX_NAME + 1];
    snprintf(nm, sizeof nm, "%s", tmp[i].name);
    record_info(nm, strlen(nm), recs[i], now, &tmp[i], hs + nh);
    nh += recs[i]->n_headers;
  }
  rc = cg_schedule_infos_copy(tmp, k, out);
  if (rc == 0) *n = k;
done:
  if (c) mdb_cursor_close(c);
  log_read_end(log, txn);
  for (size_t i = 0; i < k; i++) engram__schedule_record__free_unpacked(recs[i], NULL);
  free(recs);
  free(tmp);
  free(hs);
  return rc;
}

int cg_schedule_get(struct log *log, const char *name, engram_schedule_info **out) {
  size_t n;
  return read_infos(log, name, out, &n);
}

int cg_schedule_list(struct log *log, engram_schedule_info **out, size_t *n) {
  return read_infos(log, NULL, out, n);
}

void cg_schedule_verify(MDB_txn *txn, log_damage_fn damage, void *ctx) {
  MDB_dbi dbi;
  MDB_cursor *c;
  if (mdb_dbi_open(txn, "schedules", 0, &dbi) || mdb_cursor_open(txn, dbi, &c)) return;
  MDB_val k, v;
  int op = MDB_FIRST, rc;
  char text[512];
  while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
    op = MDB_NEXT;
    char name[ENGRAM_MAX_NAME + 1];
    size_t n = k.mv_size < sizeof name - 1 ? k.mv_size : sizeof name - 1;
    memcpy(name, k.mv_data, n);
    name[n] = '\0';
    Engram__ScheduleRecord *r = engram__schedule_record__unpack(NULL, v.mv_size, v.mv_data);
    int bad = !r || k.mv_size > ENGRAM_MAX_NAME || !log_valid_name(name);
    if (!bad && !r->every_ms) { /* the zone's file belongs to the host, not to the log */
      struct cron cr;
      bad = cron_parse(r->cron, &cr, text, sizeof text) != 0;
    }
    if (bad) {
      snprintf(text, sizeof text, "schedule %.200s: record key or value does not decode", name);
      damage(ctx, text);
    }
    if (r) engram__schedule_record__free_unpacked(r, NULL);
  }
  if (rc != MDB_NOTFOUND) {
    snprintf(text, sizeof text, "schedules: %s", log_mdb_text(rc));
    damage(ctx, text);
  }
  mdb_cursor_close(c);
}
