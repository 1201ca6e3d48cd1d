/* rates.c — per-minute counts of each group's deliveries, acks, nacks, rejects and dead
 * letters, kept in its record, and the rates of engram_rate_list over 1, 5 and 15 minutes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumers/cg.h"

#define NS_PER_MIN 60000000000ll

static const uint32_t window_min[ENGRAM_RATE_WINDOWS] = {1, 5, 15};

void cg_rate_counters(const Engram__GroupMeta *m, uint64_t out[CG_RATE_N]) {
#define X(name) out[CG_RATE_##name] = m->name;
  CG_RATE_COUNTERS(X)
#undef X
}

static int64_t minute_of(int64_t ns) { return ns >= 0 ? ns / NS_PER_MIN : 0; }

int cg_rate_note(cg_group *g, int64_t now_ns) {
  Engram__GroupMeta *m = g->meta;
  uint64_t now[CG_RATE_N], grew = 0;
  cg_rate_counters(m, now);
  for (int c = 0; c < CG_RATE_N; c++) grew |= now[c] - g->loaded[c];
  if (!grew) return 0;
  if (m->n_rate_counts != CG_RATE_BUCKETS * CG_RATE_N) {
    /* A record from before rates (or damaged counts): start an empty ring. The array is
     * the unpacked message's, freed with it by protobuf-c's default allocator (free). */
    uint64_t *counts = calloc(CG_RATE_BUCKETS * CG_RATE_N, sizeof *counts);
    if (!counts) return ENGRAM_ENOMEM;
    free(m->rate_counts);
    m->rate_counts = counts;
    m->n_rate_counts = CG_RATE_BUCKETS * CG_RATE_N;
    m->rate_minute = 0;
  }
  int64_t minute = minute_of(now_ns);
  if (minute > m->rate_minute) {
    /* Minutes with no change since the newest slot count nothing: clear their slots. */
    int64_t gap = minute - m->rate_minute;
    if (gap > CG_RATE_BUCKETS) gap = CG_RATE_BUCKETS;
    for (int64_t k = minute - gap + 1; k <= minute; k++)
      memset(&m->rate_counts[(k % CG_RATE_BUCKETS) * CG_RATE_N], 0,
             CG_RATE_N * sizeof *m->rate_counts);
    m->rate_minute = minute;
  }
  /* A clock that stepped back counts into the newest slot. */
  uint64_t *slot = &m->rate_counts[(m->rate_minute % CG_RATE_BUCKETS) * CG_RATE_N];
  for (int c = 0; c < CG_RATE_N; c++) slot[c] += now[c] - g->loaded[c];
  memcpy(g->loaded, now, sizeof now);
  return 0;
}

/* The count of counter c in minute k (0 when not held). */
static uint64_t count_at(const Engram__GroupMeta *m, int64_t k, int c) {
  if (m->n_rate_counts != CG_RATE_BUCKETS * CG_RATE_N || k < 0 || k > m->rate_minute ||
      m->rate_minute - k >= CG_RATE_BUCKETS)
    return 0;
  return m->rate_counts[(k % CG_RATE_BUCKETS) * CG_RATE_N + c];
}

/* The window's length in seconds, shortened to the age of what it counts. */
static double span_s(uint32_t minutes, int64_t now_ns, int64_t born_ns) {
  double span = (double)minutes * 60.0;
  if (born_ns > 0 && now_ns > born_ns && (double)(now_ns - born_ns) / 1e9 < span)
    span = (double)(now_ns - born_ns) / 1e9;
  return span < 1.0 ? 1.0 : span;
}

/* Counter c per second over the last `minutes` minutes: the current minute's count, the
 * whole minutes before it, and the part of the oldest minute that falls in the window. */
static double group_rate(const Engram__GroupMeta *m, int c, uint32_t minutes, int64_t now_ns) {
  int64_t minute = minute_of(now_ns);
  double in_minute = (double)(now_ns - minute * NS_PER_MIN) / (double)NS_PER_MIN;
  double n = 0;
  for (uint32_t k = 0; k < minutes; k++) n += (double)count_at(m, minute - k, c);
  n += (double)count_at(m, minute - minutes, c) * (1.0 - in_minute);
  return n / span_s(minutes, now_ns, m->created_ns);
}

static void topic_rates(struct log *log, MDB_txn *txn, const log_topic *t, int64_t now_ns,
                        double out[ENGRAM_RATE_WINDOWS]) {
  uint64_t head = log_topic_head(log, txn, t);
  for (int i = 0; i < ENGRAM_RATE_WINDOWS; i++) {
    int64_t since = now_ns - (int64_t)window_min[i] * NS_PER_MIN;
    uint64_t from = log_topic_seek_time(log, txn, t, since);
    double n = from <= head ? (double)(head - from + 1) : 0;
    out[i] = n / span_s(window_min[i], now_ns, t->created_ns);
  }
}

/* Appends a row to *arr; NULL when out of memory. */
static engram_rate_info *add_row(engram_rate_info **arr, size_t *cnt, size_t *cap) {
  if (*cnt == *cap) {
    size_t nc = *cap ? *cap * 2 : 16;
    engram_rate_info *a = realloc(*arr, nc * sizeof *a);
    if (!a) return NULL;
    *arr = a;
    *cap = nc;
  }
  engram_rate_info *r = &(*arr)[(*cnt)++];
  memset(r, 0, sizeof *r);
  return r;
}

/* The rows of one topic: its own, then one per group, in one read transaction. */
static int rows_of(struct log *log, const cg_dbs *d, int have_groups, const char *topic,
                   int64_t now_ns, engram_rate_info **arr, size_t *cnt, size_t *cap) {
  MDB_txn *txn;
  int rc = log_read_begin(log, &txn);
  if (rc) return rc;
  log_topic t;
  if ((rc = log_topic_get(log, txn, topic, &t))) {
    log_read_end(log, txn);
    return rc;
  }
  engram_rate_info *r = add_row(arr, cnt, cap);
  if (!r) {
    log_read_end(log, txn);
    return log_error(log, ENGRAM_ENOMEM, "rate list: out of memory");
  }
  snprintf(r->topic, sizeof r->topic, "%s", topic);
  topic_rates(log, txn, &t, now_ns, r->appended);
  double appended[ENGRAM_RATE_WINDOWS];
  memcpy(appended, r->appended, sizeof appended);
  MDB_cursor *c;
  if (!have_groups || mdb_cursor_open(txn, d->groups, &c) != 0) {
    log_read_end(log, txn);
    return 0;
  }
  size_t plen = strlen(topic) + 1;
  MDB_val k = {plen, (void *)topic}, v;
  int op = MDB_SET_RANGE;
  while (rc == 0 && mdb_cursor_get(c, &k, &v, op) == 0) {
    op = MDB_NEXT;
    if (k.mv_size <= plen || memcmp(k.mv_data, topic, plen)) break;
    size_t gl = k.mv_size - plen;
    if (gl > ENGRAM_MAX_NAME) continue;
    char gn[ENGRAM_MAX_NAME + 1];
    memcpy(gn, (const char *)k.mv_data + plen, gl);
    gn[gl] = '\0';
    cg_group g;
    if (cg_group_load(log, txn, d, topic, gn, &g) == 0) {
      if (!(r = add_row(arr, cnt, cap))) {
        rc = log_error(log, ENGRAM_ENOMEM, "rate list: out of memory");
      } else {
        snprintf(r->topic, sizeof r->topic, "%s", topic);
        snprintf(r->group, sizeof r->group, "%s", gn);
        memcpy(r->appended, appended, sizeof appended);
        for (int i = 0; i < ENGRAM_RATE_WINDOWS; i++) {
#define X(name) r->name[i] = group_rate(g.meta, CG_RATE_##name, window_min[i], now_ns);
          CG_RATE_COUNTERS(X)
#undef X
        }
      }
    }
    cg_group_free(&g);
  }
  mdb_cursor_close(c);
  log_read_end(log, txn);
  return rc;
}

int cg_rate_list(struct log *log, const char *topic, engram_rate_info **out, size_t *n) {
  *out = NULL;
  *n = 0;
  cg_dbs d;
  int rc = cg_dbs_get(log, &d);
  /* Only a read-only handle gets ENOTFOUND here: no group was ever made in this log. */
  int have_groups = rc == 0;
  if (rc && rc != ENGRAM_ENOTFOUND) return rc;
  engram_topic_info *topics = NULL;
  size_t nt = 0;
  if (!topic && (rc = log_topic_list(log, &topics, &nt))) return rc;
  int64_t now = log_now_ns(log);
  engram_rate_info *arr = NULL;
  size_t cnt = 0, cap = 0;
  rc = 0;
  if (topic) {
    rc = rows_of(log, &d, have_groups, topic, now, &arr, &cnt, &cap);
  } else {
    for (size_t i = 0; i < nt && rc == 0; i++) {
      rc = rows_of(log, &d, have_groups, topics[i].name, now, &arr, &cnt, &cap);
      if (rc == ENGRAM_ENOTFOUND) rc = 0; /* dropped since the list */
    }
  }
  free(topics);
  if (rc) {
    free(arr);
    return rc;
  }
  log_error_clear(log);
  *out = arr;
  *n = cnt;
  return 0;
}
