/* retain.c — retention: a topic's oldest events removed in bounded slices, never one a
 * group still needs unless the topic forces it (docs/operations.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "consumers/cg.h"

#define SLICE_MAX 256           /* records one slice removes at most */
#define SLICE_BUDGET_NS 1000000 /* a slice stops walking after this long in its transaction */
#define SLICE_MAX_GROUPS 4096   /* groups of one topic a slice looks at */

struct slice_req {
  const char *topic;
  cg_dbs d;
  /* Outputs, rewritten when the job reruns. */
  uint64_t removed, skipped, held_at;
  int64_t took_ns, cpu_ns;
  int more; /* the limits may ask for more than this slice removed */
};

int cg_topic_group_names(struct log *log, MDB_txn *txn, const cg_dbs *d, const char *topic,
                         char **out, size_t *n) {
  size_t plen = strlen(topic) + 1, len = 0, cap = 0;
  char *names = NULL;
  *out = NULL;
  *n = 0;
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, d->groups, &c);
  if (rc) return log_error(log, log_err_mdb(rc), "retention %s: %s", topic, log_mdb_text(rc));
  MDB_val k = {plen, (void *)topic}, v;
  int op = MDB_SET_RANGE;
  while (*n < SLICE_MAX_GROUPS && mdb_cursor_get(c, &k, &v, op) == 0) {
    op = MDB_NEXT;
    if (k.mv_size <= plen || memcmp(k.mv_data, topic, plen)) break;
    size_t gl = k.mv_size - plen;
    if (len + gl + 1 > cap) {
      char *p = realloc(names, cap = (len + gl + 1) * 2 + 256);
      if (!p) {
        free(names);
        mdb_cursor_close(c);
        return log_error(log, ENGRAM_ENOMEM, "retention %s: out of memory", topic);
      }
      names = p;
    }
    memcpy(names + len, (char *)k.mv_data + plen, gl);
    names[len + gl] = '\0';
    len += gl + 1;
    (*n)++;
  }
  mdb_cursor_close(c);
  *out = names;
  return 0;
}

/* Forced retention is about to remove [first, cut): the group finishes what it had open
 * there, its cursor moves to `cut`, and it counts the events it never finished. */
static int skip_below(log_wtx *w, const cg_dbs *d, cg_group *g, uint64_t first, uint64_t cut,
                      uint64_t *skipped) {
  Engram__GroupMeta *m = g->meta;
  uint64_t n = 0;
  int rc = 0;
  unsigned char kb[12];
  /* Leases below cut: their open members there are finished (keys released). */
  for (;;) {
    cg_key_gid_off(kb, m->id, 0);
    MDB_cursor *c;
    if ((rc = mdb_cursor_open(w->txn, d->leases, &c))) return log_err_mdb(rc);
    MDB_val k = {12, kb}, v;
    uint64_t lf = 0;
    int found = 0;
    int op = MDB_SET_RANGE;
    /* The first lease of the group with an open member below cut. */
    while (mdb_cursor_get(c, &k, &v, op) == 0 && k.mv_size == 12 && !memcmp(k.mv_data, kb, 4)) {
      op = MDB_NEXT;
      lf = be64_get((unsigned char *)k.mv_data + 4);
      if (lf >= cut) break;
      cg_lease l = {lf, engram__lease__unpack(NULL, v.mv_size, v.mv_data)};
      if (!l.pb) continue;
      for (uint64_t o = l.first; o <= l.pb->last && o < cut && !found; o++)
        found = cg_bit(&l.pb->members, o - l.first) && !cg_bit(&l.pb->done, o - l.first);
      cg_lease_free(&l);
      if (found) break;
    }
    mdb_cursor_close(c);
    if (!found) break;
    cg_key_gid_off(kb, m->id, lf);
    MDB_val lk = {12, kb}, lv;
    if ((rc = mdb_get(w->txn, d->leases, &lk, &lv))) return log_err_mdb(rc);
    cg_lease l = {lf, engram__lease__unpack(NULL, lv.mv_size, lv.mv_data)};
    if (!l.pb) return log_error(w->log, ENGRAM_ECORRUPT, "retention: a lease does not decode");
    uint64_t last = l.pb->last;
    for (uint64_t o = l.first; o <= last && o < cut && rc == 0; o++) {
      if (!cg_bit(&l.pb->members, o - l.first) || cg_bit(&l.pb->done, o - l.first)) continue;
      rc = cg_lease_finish(w, d, g, &l, o);
      n++;
    }
    cg_lease_free(&l);
    if (rc) return rc;
  }
  /* Events the cursor had not reached: those its filter takes are skipped, cancel markers
   * go with their events. */
  for (uint64_t o = m->next > first ? m->next : first; o < cut; o++) {
    cg_key_gid_off(kb, m->id, o);
    MDB_val k = {12, kb};
    if (m->skips && mdb_del(w->txn, d->skips, &k, NULL) == 0) {
      m->skips--;
      continue;
    }
    log_view v;
    if (log_view_get(w->log, w->txn, &g->t, o, &v) == 0 && cg_filter_match(m, v.type, v.type_len))
      n++;
  }
  if (m->next < cut) m->next = cut;
  m->retention_skipped += n;
  *skipped += n;
  return cg_group_store(w->log, w->txn, d, g);
}

/* The group's dead-letter entries of offsets below cut: they go with their events (an
 * entry whose event is gone can be neither inspected nor redriven). */
static int dlq_drop_below(log_wtx *w, const cg_dbs *d, uint32_t gid, uint64_t cut) {
  unsigned char kb[12];
  cg_key_gid_off(kb, gid, 0);
  MDB_cursor *c;
  int rc = mdb_cursor_open(w->txn, d->dlq, &c);
  if (rc) return log_err_mdb(rc);
  MDB_val k, v;
  for (;;) {
    k = (MDB_val){12, kb}; /* from the group's start again after each delete */
    if ((rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE))) break;
    if (k.mv_size != 12 || memcmp(k.mv_data, kb, 4) ||
        be64_get((unsigned char *)k.mv_data + 4) >= cut)
      break;
    if ((rc = mdb_cursor_del(c, 0))) break;
  }
  mdb_cursor_close(c);
  return rc && rc != MDB_NOTFOUND ? log_err_mdb(rc) : 0;
}

int64_t cg_thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int slice_job(log_wtx *w, void *arg) {
  struct slice_req *r = arg;
  struct log *log = w->log;
  int64_t t0 = clock_monotonic_ns(), c0 = cg_thread_cpu_ns();
  r->removed = r->skipped = r->held_at = 0;
  r->took_ns = r->cpu_ns = 0;
  r->more = 0;
  log_topic t;
  int rc = log_topic_get(log, w->txn, r->topic, &t);
  if (rc) return rc;
  const engram_topic_config *cfg = &t.cfg;
  if (!cfg->max_age_ms && !cfg->max_bytes && !cfg->max_events) return 0;
  uint64_t first = log_topic_first(log, w->txn, &t);
  if (!first) return 0;
  uint64_t head = log_topic_head(log, w->txn, &t);
  MDB_stat st;
  if ((rc = mdb_stat(w->txn, t.dbi, &st))) return log_err_mdb(rc);
  uint64_t count = st.ms_entries, want = 0;
  if (cfg->max_events && count > cfg->max_events) want = count - cfg->max_events;
  if (cfg->max_bytes && count) {
    uint64_t bytes = log_topic_bytes(log, w->txn, &t);
    if (bytes > cfg->max_bytes) {
      uint64_t per = bytes / count ? bytes / count : 1;
      uint64_t need = (bytes - cfg->max_bytes + per - 1) / per;
      if (need > want) want = need;
    }
  }
  int64_t age_cut = cfg->max_age_ms ? w->now_ns - clock_ms_to_ns(cfg->max_age_ms) : INT64_MIN;
  int force = (cfg->flags & ENGRAM_TOPIC_RETAIN_FORCE) != 0;

  char *names = NULL;
  size_t n_groups = 0;
  if ((rc = cg_topic_group_names(log, w->txn, &r->d, r->topic, &names, &n_groups))) return rc;
  uint64_t safe = head + 1; /* lowest offset some group has not finished */
  if (!force) {
    const char *name = names;
    for (size_t i = 0; i < n_groups; i++, name += strlen(name) + 1) {
      cg_group g;
      if (cg_group_load(log, w->txn, &r->d, r->topic, name, &g) == 0) {
        uint64_t lo = cg_group_lowest_open(w->txn, &r->d, &g);
        if (lo < safe) safe = lo;
      }
      cg_group_free(&g);
    }
    log_error_clear(log);
  }

  uint64_t cut = first, events = 0; /* events below cut (gaps are not events) */
  for (uint64_t o = first; o <= head && cut - first < SLICE_MAX; o++) {
    if ((o & 15) == 0 && clock_monotonic_ns() - t0 > SLICE_BUDGET_NS) {
      r->more = 1;
      break;
    }
    log_view v;
    int vr = log_view_get(log, w->txn, &t, o, &v);
    if (vr == ENGRAM_ENOTFOUND && t.compacted) { /* a gap key compaction left */
      cut = o + 1;
      continue;
    }
    if (vr) break; /* damage stops retention here */
    if (events >= want && v.timestamp_ns >= age_cut) break;
    if (!force && (o >= safe || v.deliver_at_ns > w->now_ns)) {
      r->held_at = o;
      break;
    }
    cut = o + 1;
    events++;
  }
  if (cut - first == SLICE_MAX) r->more = 1;
  if (cut > first) {
    const char *name = names;
    for (size_t i = 0; i < n_groups && rc == 0; i++, name += strlen(name) + 1) {
      cg_group g;
      if (cg_group_load(log, w->txn, &r->d, r->topic, name, &g) == 0) {
        rc = dlq_drop_below(w, &r->d, g.meta->id, cut);
        if (rc == 0 && force) rc = skip_below(w, &r->d, &g, first, cut, &r->skipped);
      }
      cg_group_free(&g);
    }
    if (rc == 0) log_error_clear(log);
  }
  free(names);
  if (rc) return rc;
  if (cut > first && (rc = log_topic_trim_in(w, &t, cut, &r->removed))) return rc;
  if (r->removed == 0) r->more = 0;
  r->took_ns = clock_monotonic_ns() - t0;
  r->cpu_ns = cg_thread_cpu_ns() - c0;
  return 0;
}

static int compact_topic(struct log *log, const cg_dbs *d, const char *topic,
                         engram_compact_report *rep) {
  struct slice_req r = {.topic = topic, .d = *d};
  do {
    /* Losing a slice to a power cut only repeats it: a relaxed commit is enough. */
    int rc = log_write_relaxed(log, slice_job, &r);
    if (rc < 0) return rc;
    rep->removed += r.removed;
    rep->skipped += r.skipped;
    if (r.removed) rep->slices++;
    if (r.held_at) rep->held_at = r.held_at;
    if (r.took_ns > rep->max_slice_ns) rep->max_slice_ns = r.took_ns;
    if (r.cpu_ns > rep->max_slice_cpu_ns) rep->max_slice_cpu_ns = r.cpu_ns;
  } while (r.more);
  return cg_keycomp_topic(log, d, topic, rep);
}

int cg_compact(struct log *log, const char *topic, engram_compact_report *report) {
  engram_compact_report rep = {0};
  if (report) *report = rep;
  if (log->opts.flags & ENGRAM_OPEN_RDONLY)
    return log_error(log, ENGRAM_ENOTSUP, "compact: the log is open read-only");
  cg_dbs d;
  int rc = cg_dbs_get(log, &d);
  if (rc) return rc;
  if (topic) {
    log_progress(log, "applying retention", 0, 1);
    rc = compact_topic(log, &d, topic, &rep);
    if (rc == 0) log_progress(log, "applying retention", 1, 1);
  } else {
    engram_topic_info *list = NULL;
    size_t n = 0;
    if ((rc = log_topic_list(log, &list, &n))) return rc;
    log_progress(log, "applying retention", 0, n);
    for (size_t i = 0; i < n && rc == 0; i++) {
      rc = compact_topic(log, &d, list[i].name, &rep);
      if (rc == ENGRAM_ENOTFOUND) rc = 0; /* dropped meanwhile */
      if (rc == 0) log_progress(log, "applying retention", i + 1, n);
    }
    free(list);
  }
  if (report) *report = rep;
  return rc;
}
