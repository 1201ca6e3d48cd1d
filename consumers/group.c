/* group.c — consumer groups: their records, filters, creation, listing, deletion, replay. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumers/cg.h"

int cg_dbs_get(struct log *log, cg_dbs *d) {
  int rc;
  if ((rc = log_aux_dbi(log, "groups", 0, &d->groups))) return rc;
  if ((rc = log_aux_dbi(log, "leases", 0, &d->leases))) return rc;
  if ((rc = log_aux_dbi(log, "due", 0, &d->due))) return rc;
  if ((rc = log_aux_dbi(log, "dlq", 0, &d->dlq))) return rc;
  if ((rc = log_aux_dbi(log, "results", 0, &d->results))) return rc;
  if ((rc = log_aux_dbi(log, "keys", 0, &d->keys))) return rc;
  return log_aux_dbi(log, "skips", 0, &d->skips);
}

void cg_key_gid(unsigned char *k, uint32_t gid) { be32_put(k, gid); }

void cg_key_gid_off(unsigned char *k, uint32_t gid, uint64_t off) {
  be32_put(k, gid);
  be64_put(k + 4, off);
}

int cg_del_prefix(MDB_txn *txn, MDB_dbi dbi, uint32_t gid) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, dbi, &c);
  if (rc) return log_err_mdb(rc);
  unsigned char p[4];
  be32_put(p, gid);
  for (;;) {
    MDB_val k = {4, p}, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc) break;
    if (k.mv_size < 4 || memcmp(k.mv_data, p, 4)) break;
    if ((rc = mdb_cursor_del(c, 0))) break;
  }
  mdb_cursor_close(c);
  return rc == 0 || rc == MDB_NOTFOUND ? 0 : log_err_mdb(rc);
}

/* log_verify's check of the group records: each key is "topic\0group" with valid
 * names and each value decodes (keys that start with NUL are counters). Reads only: a log without
 * groups has no database. */
void cg_verify_records(struct log *log, MDB_txn *txn, log_damage_fn damage, void *ctx) {
  MDB_dbi dbi;
  MDB_cursor *c;
  if (mdb_dbi_open(txn, "groups", 0, &dbi) || mdb_cursor_open(txn, dbi, &c)) {
    cg_schedule_verify(txn, damage, ctx);
    return;
  }
  MDB_val k, v;
  int op = MDB_FIRST, rc;
  char text[512];
  while ((rc = mdb_cursor_get(c, &k, &v, op)) == 0) {
    op = MDB_NEXT;
    if (k.mv_size && !*(const char *)k.mv_data) continue; /* "\0next_group_id" and such */
    char key[2 * ENGRAM_MAX_NAME + 2];
    size_t n = k.mv_size < sizeof key - 1 ? k.mv_size : sizeof key - 1;
    memcpy(key, k.mv_data, n);
    key[n] = '\0';
    const char *group = strlen(key) < n ? key + strlen(key) + 1 : "";
    Engram__GroupMeta *m = engram__group_meta__unpack(NULL, v.mv_size, v.mv_data);
    if (!m || !log_valid_name(key) || !log_valid_name(group)) {
      snprintf(text, sizeof text, "group %.200s/%.200s: record key or value does not decode", key,
               group);
      damage(ctx, text);
    }
    engram__group_meta__free_unpacked(m, NULL);
  }
  if (rc != MDB_NOTFOUND) {
    snprintf(text, sizeof text, "groups: %s", log_mdb_text(rc));
    damage(ctx, text);
  }
  mdb_cursor_close(c);
  cg_schedule_verify(txn, damage, ctx);
}

static size_t group_key(unsigned char *buf, const char *topic, const char *group) {
  size_t a = strlen(topic), b = strlen(group);
  memcpy(buf, topic, a);
  buf[a] = '\0';
  memcpy(buf + a + 1, group, b);
  return a + 1 + b;
}

int cg_group_load(struct log *log, MDB_txn *txn, const cg_dbs *d, const char *topic,
                  const char *group, cg_group *g) {
  memset(g, 0, sizeof *g);
  if (!log_valid_name(group))
    return log_error(log, ENGRAM_EINVAL,
                     "group name %s%.40s%s invalid: use 1-200 of [A-Za-z0-9._-]", group ? "'" : "",
                     group ? group : "(null)", group ? "'" : "");
  int rc = log_topic_get(log, txn, topic, &g->t);
  if (rc) return rc;
  unsigned char kb[2 * ENGRAM_MAX_NAME + 2];
  MDB_val k = {group_key(kb, topic, group), kb}, v;
  rc = mdb_get(txn, d->groups, &k, &v);
  if (rc == MDB_NOTFOUND)
    return log_error(log, ENGRAM_ENOTFOUND, "group %s/%s: no such group", topic, group);
  if (rc) return log_error(log, log_err_mdb(rc), "group %s/%s: %s", topic, group, log_mdb_text(rc));
  g->meta = engram__group_meta__unpack(NULL, v.mv_size, v.mv_data);
  if (!g->meta)
    return log_error(log, ENGRAM_ECORRUPT, "group %s/%s: record does not decode", topic, group);
  if (g->meta->topic_id != g->t.id) {
    cg_group_free(g);
    return log_error(log, ENGRAM_ENOTFOUND, "group %s/%s: no such group", topic, group);
  }
  snprintf(g->topic, sizeof g->topic, "%s", topic);
  snprintf(g->name, sizeof g->name, "%s", group);
  cg_rate_counters(g->meta, g->loaded);
  return 0;
}

int cg_group_store(struct log *log, MDB_txn *txn, const cg_dbs *d, cg_group *g) {
  if (cg_rate_note(g, log_now_ns(log)))
    return log_error(log, ENGRAM_ENOMEM, "group %s/%s: out of memory", g->topic, g->name);
  size_t n = engram__group_meta__get_packed_size(g->meta);
  unsigned char kb[2 * ENGRAM_MAX_NAME + 2];
  MDB_val k = {group_key(kb, g->topic, g->name), kb}, v = {n, NULL};
  int rc = mdb_put(txn, d->groups, &k, &v, MDB_RESERVE);
  if (rc) return log_err_mdb(rc);
  engram__group_meta__pack(g->meta, v.mv_data);
  return 0;
}

void cg_group_free(cg_group *g) {
  if (g->meta) engram__group_meta__free_unpacked(g->meta, NULL);
  g->meta = NULL;
}

/* Patterns: "*", an exact dotted type, or a dotted prefix followed by ".*". */
static int valid_pattern(const char *p) {
  if (!p) return 0;
  if (!strcmp(p, "*")) return 1;
  size_t n = strlen(p);
  if (n >= 2 && !strcmp(p + n - 2, ".*")) {
    char buf[ENGRAM_MAX_TYPE + 1];
    if (n - 2 > ENGRAM_MAX_TYPE) return 0;
    memcpy(buf, p, n - 2);
    buf[n - 2] = '\0';
    return log_valid_type(buf);
  }
  return log_valid_type(p);
}

int cg_filter_match(const Engram__GroupMeta *m, const char *type, size_t len) {
  if (m->n_filters == 0) return 1;
  for (size_t i = 0; i < m->n_filters; i++) {
    const char *p = m->filters[i];
    size_t n = strlen(p);
    if (n == 1 && p[0] == '*') return 1;
    if (n >= 2 && p[n - 2] == '.' && p[n - 1] == '*') {
      if (len > n - 1 && !memcmp(type, p, n - 1)) return 1; /* "memory.*" matches "memory.x" */
    } else if (n == len && !memcmp(type, p, len)) {
      return 1;
    }
  }
  return 0;
}

/* ---------------------------------------------------------------------------------
 * Create.
 * ------------------------------------------------------------------------------ */
struct create_req {
  const char *topic, *group;
  const engram_group_config *cfg;
  cg_dbs d;
};

static int resolve_start(struct log *log, MDB_txn *txn, const log_topic *t, engram_start s,
                         uint64_t off, int64_t time_ns, uint64_t *next) {
  uint64_t head = log_topic_head(log, txn, t);
  switch (s) {
    case ENGRAM_START_EARLIEST: {
      uint64_t first = log_topic_first(log, txn, t);
      *next = first ? first : head + 1;
      return 0;
    }
    case ENGRAM_START_LATEST:
      *next = head + 1;
      return 0;
    case ENGRAM_START_OFFSET:
      if (off == 0) return log_error(log, ENGRAM_EINVAL, "start offset 0: offsets start at 1");
      if (off > head + 1)
        return log_error(log, ENGRAM_EINVAL, "start offset %llu beyond head %llu + 1",
                         (unsigned long long)off, (unsigned long long)head);
      *next = off;
      return 0;
    case ENGRAM_START_TIME:
      if (time_ns < 0) return log_error(log, ENGRAM_EINVAL, "start time is negative");
      *next = log_topic_seek_time(log, txn, t, time_ns);
      return 0;
  }
  return log_error(log, ENGRAM_EINVAL, "unknown start position %d", (int)s);
}

static int create_job(log_wtx *w, void *arg) {
  struct create_req *r = arg;
  struct log *log = w->log;
  const engram_group_config *c = r->cfg;
  log_topic t;
  int rc = log_topic_get(log, w->txn, r->topic, &t);
  if (rc) return rc;
  unsigned char kb[2 * ENGRAM_MAX_NAME + 2];
  MDB_val k = {group_key(kb, r->topic, r->group), kb}, v;
  if (mdb_get(w->txn, r->d.groups, &k, &v) == 0) {
    Engram__GroupMeta *old = engram__group_meta__unpack(NULL, v.mv_size, v.mv_data);
    int same_topic = old && old->topic_id == t.id;
    if (old) engram__group_meta__free_unpacked(old, NULL);
    if (same_topic)
      return log_error(log, ENGRAM_EEXIST, "create group %s/%s: already exists", r->topic,
                       r->group);
  }
  Engram__GroupMeta m = ENGRAM__GROUP_META__INIT;
  MDB_val ik = {14, "\0next_group_id"};
  uint32_t id = 1;
  if (mdb_get(w->txn, r->d.groups, &ik, &v) == 0 && v.mv_size == 4) id = be32_get(v.mv_data);
  unsigned char nb[4];
  be32_put(nb, id + 1);
  MDB_val nv = {4, nb};
  if ((rc = mdb_put(w->txn, r->d.groups, &ik, &nv, 0))) return log_err_mdb(rc);
  m.id = id;
  m.topic_id = t.id;
  m.n_filters = c->n_filters;
  m.filters = (char **)c->filters;
  m.ack_wait_ms = c->ack_wait_ms ? c->ack_wait_ms : CG_DEFAULT_ACK_WAIT_MS;
  m.max_deliver = c->max_deliver ? c->max_deliver : CG_DEFAULT_MAX_DELIVER;
  static const uint64_t def_backoff[] = {1000, 5000, 30000, 120000};
  m.n_backoff_ms = c->n_backoff ? c->n_backoff : 4;
  m.backoff_ms = (uint64_t *)(c->n_backoff ? c->backoff_ms : def_backoff);
  m.result_ttl_ms = c->result_ttl_ms ? c->result_ttl_ms : CG_DEFAULT_RESULT_TTL_MS;
  m.flags = c->flags;
  m.created_ns = w->now_ns;
  if ((rc = resolve_start(log, w->txn, &t, c->start, c->start_offset, c->start_time_ns, &m.next))) {
    char why[256]; /* the message buffer cannot be its own argument */
    snprintf(why, sizeof why, "%s", log_errmsg(log));
    return log_error(log, rc, "create group %s/%s: %s", r->topic, r->group, why);
  }
  cg_group g = {.meta = &m};
  snprintf(g.topic, sizeof g.topic, "%s", r->topic);
  snprintf(g.name, sizeof g.name, "%s", r->group);
  return cg_group_store(log, w->txn, &r->d, &g);
}

static int check_config(struct log *log, const char *topic, const char *group,
                        const engram_group_config *c) {
  if (!log_valid_name(group))
    return log_error(log, ENGRAM_EINVAL,
                     "create group: invalid name (use 1-200 of [A-Za-z0-9._-])");
  if (c->n_filters > ENGRAM_MAX_FILTERS)
    return log_error(log, ENGRAM_EINVAL, "create group %s/%s: %zu filters over limit %d", topic,
                     group, c->n_filters, ENGRAM_MAX_FILTERS);
  if (c->n_filters && !c->filters)
    return log_error(log, ENGRAM_EINVAL, "create group %s/%s: filters is NULL", topic, group);
  for (size_t i = 0; i < c->n_filters; i++)
    if (!valid_pattern(c->filters[i]))
      return log_error(log, ENGRAM_EINVAL,
                       "create group %s/%s: filter '%.60s' invalid: use '*', a type, or a prefix "
                       "like 'memory.*'",
                       topic, group, c->filters[i] ? c->filters[i] : "(null)");
  if (c->ack_wait_ms > ENGRAM_MAX_ACK_WAIT_MS)
    return log_error(log, ENGRAM_EINVAL,
                     "create group %s/%s: ack_wait_ms %llu over the limit of %llu (30 days)", topic,
                     group, (unsigned long long)c->ack_wait_ms, ENGRAM_MAX_ACK_WAIT_MS);
  if (c->max_deliver > 1000000)
    return log_error(log, ENGRAM_EINVAL, "create group %s/%s: max_deliver %u over 1000000", topic,
                     group, c->max_deliver);
  if (c->n_backoff > ENGRAM_MAX_BACKOFF)
    return log_error(log, ENGRAM_EINVAL, "create group %s/%s: %zu backoff steps over limit %d",
                     topic, group, c->n_backoff, ENGRAM_MAX_BACKOFF);
  if (c->n_backoff && !c->backoff_ms)
    return log_error(log, ENGRAM_EINVAL, "create group %s/%s: backoff_ms is NULL", topic, group);
  for (size_t i = 0; i < c->n_backoff; i++)
    if (c->backoff_ms[i] > ENGRAM_MAX_BACKOFF_MS)
      return log_error(log, ENGRAM_EINVAL,
                       "create group %s/%s: backoff step %zu of %llu ms over the limit of %llu "
                       "(30 days)",
                       topic, group, i + 1, (unsigned long long)c->backoff_ms[i],
                       ENGRAM_MAX_BACKOFF_MS);
  if (c->result_ttl_ms > ENGRAM_MAX_RESULT_TTL_MS)
    return log_error(log, ENGRAM_EINVAL,
                     "create group %s/%s: result_ttl_ms %llu over the limit of %llu (365 days)",
                     topic, group, (unsigned long long)c->result_ttl_ms, ENGRAM_MAX_RESULT_TTL_MS);
  if (c->flags & ~(uint32_t)ENGRAM_GROUP_KEY_ORDERED)
    return log_error(log, ENGRAM_EINVAL, "create group %s/%s: unknown flags 0x%x", topic, group,
                     c->flags);
  if ((unsigned)c->start > ENGRAM_START_TIME)
    return log_error(log, ENGRAM_EINVAL, "create group %s/%s: unknown start %d", topic, group,
                     (int)c->start);
  return 0;
}

int cg_group_create(struct log *log, const char *topic, const char *group,
                    const engram_group_config *cfg) {
  if (!log) return ENGRAM_EINVAL;
  engram_group_config def = {0};
  if (!cfg) cfg = &def;
  if (!log_valid_name(topic))
    return log_error(log, ENGRAM_EINVAL, "create group: invalid topic name");
  int rc = check_config(log, topic, group, cfg);
  if (rc) return rc;
  struct create_req r = {.topic = topic, .group = group, .cfg = cfg};
  if ((rc = cg_dbs_get(log, &r.d))) return rc;
  rc = log_write(log, create_job, &r);
  return rc < 0 ? rc : 0;
}

uint64_t cg_group_lowest_open(MDB_txn *txn, const cg_dbs *d, const cg_group *g) {
  uint64_t lowest = g->meta->next;
  unsigned char p[4];
  be32_put(p, g->meta->id);
  MDB_cursor *c;
  if (mdb_cursor_open(txn, d->leases, &c)) return 0;
  MDB_val k = {4, p}, v;
  int op = MDB_SET_RANGE;
  while (mdb_cursor_get(c, &k, &v, op) == 0 && k.mv_size == 12 && !memcmp(k.mv_data, p, 4)) {
    op = MDB_NEXT;
    uint64_t first = be64_get((unsigned char *)k.mv_data + 4);
    if (first >= lowest) break; /* leases are in offset order */
    cg_lease l = {first, engram__lease__unpack(NULL, v.mv_size, v.mv_data)};
    if (!l.pb) {
      lowest = first; /* an unreadable lease holds what it may cover */
      break;
    }
    for (uint64_t i = 0; i <= l.pb->last - l.first; i++) {
      if (cg_bit(&l.pb->members, i) && !cg_bit(&l.pb->done, i)) {
        if (l.first + i < lowest) lowest = l.first + i;
        break;
      }
    }
    cg_lease_free(&l);
  }
  mdb_cursor_close(c);
  return lowest;
}

/* ---------------------------------------------------------------------------------
 * Info and counters. Counters that follow from state (in flight, retrying, dead, lag)
 * are computed from the leases and DLQ, so they can never drift from them.
 * ------------------------------------------------------------------------------ */
static void info_fill(struct log *log, MDB_txn *txn, const cg_dbs *d, const cg_group *g,
                      engram_group_info *info) {
  const Engram__GroupMeta *m = g->meta;
  memset(info, 0, sizeof *info);
  snprintf(info->topic, sizeof info->topic, "%s", g->topic);
  snprintf(info->name, sizeof info->name, "%s", g->name);
  for (size_t i = 0; i < m->n_filters && i < ENGRAM_MAX_FILTERS; i++)
    snprintf(info->filters[i], sizeof info->filters[i], "%s", m->filters[i]);
  info->n_filters = m->n_filters;
  info->ack_wait_ms = m->ack_wait_ms;
  info->max_deliver = m->max_deliver;
  for (size_t i = 0; i < m->n_backoff_ms && i < ENGRAM_MAX_BACKOFF; i++)
    info->backoff_ms[i] = m->backoff_ms[i];
  info->n_backoff = m->n_backoff_ms;
  info->result_ttl_ms = m->result_ttl_ms;
  info->flags = m->flags;
  info->created_ns = m->created_ns;
  info->next = m->next;
  info->acked = m->acked;
  info->delivered = m->delivered;
  info->redelivered = m->redelivered;
  info->nacked = m->nacked;
  info->rejected = m->rejected;
  info->dead_lettered = m->dead_lettered;

  info->retention_skipped = m->retention_skipped;
  uint64_t floor_next = m->next; /* lowest unfinished offset */
  unsigned char p[4];
  be32_put(p, m->id);
  MDB_cursor *c;
  if (mdb_cursor_open(txn, d->leases, &c) == 0) {
    MDB_val k = {4, p}, v;
    int op = MDB_SET_RANGE;
    while (mdb_cursor_get(c, &k, &v, op) == 0 && k.mv_size == 12 && !memcmp(k.mv_data, p, 4)) {
      op = MDB_NEXT;
      cg_lease l = {be64_get((unsigned char *)k.mv_data + 4),
                    engram__lease__unpack(NULL, v.mv_size, v.mv_data)};
      if (!l.pb) continue;
      uint64_t open = cg_lease_open(&l);
      if (l.pb->state == CG_LEASED)
        info->in_flight += open;
      else if (l.pb->state == CG_WAITING)
        info->retrying += open;
      if (open && l.first < floor_next) {
        for (uint64_t i = 0; i <= l.pb->last - l.first; i++) {
          if (cg_bit(&l.pb->members, i) && !cg_bit(&l.pb->done, i)) {
            if (l.first + i < floor_next) floor_next = l.first + i;
            break;
          }
        }
      }
      cg_lease_free(&l);
    }
    mdb_cursor_close(c);
  }
  MDB_stat st;
  (void)st;
  if (mdb_cursor_open(txn, d->dlq, &c) == 0) {
    MDB_val k = {4, p}, v;
    int op = MDB_SET_RANGE;
    while (mdb_cursor_get(c, &k, &v, op) == 0 && k.mv_size == 12 && !memcmp(k.mv_data, p, 4)) {
      op = MDB_NEXT;
      info->dead++;
    }
    mdb_cursor_close(c);
  }
  uint64_t head = log_topic_head(log, txn, &g->t);
  info->floor = floor_next ? floor_next - 1 : 0;
  if (info->floor > head) info->floor = head;
  info->lag = head - info->floor;
  if (info->lag) {
    log_view v;
    if (log_view_get(log, txn, &g->t, info->floor + 1, &v) == 0)
      info->oldest_unfinished_ns = v.timestamp_ns;
  }
  log_error_clear(log);
}

int cg_group_info_get(struct log *log, const char *topic, const char *group,
                      engram_group_info *info) {
  if (!log || !info) return log_error(log, ENGRAM_EINVAL, "group info: NULL argument");
  cg_dbs d;
  int rc = cg_dbs_get(log, &d);
  if (rc) return rc;
  MDB_txn *txn;
  if ((rc = log_read_begin(log, &txn))) return rc;
  cg_group g;
  rc = cg_group_load(log, txn, &d, topic, group, &g);
  if (rc == 0) info_fill(log, txn, &d, &g, info);
  cg_group_free(&g);
  log_read_end(log, txn);
  return rc;
}

int cg_group_list(struct log *log, const char *topic, engram_group_info **out, size_t *n) {
  if (!log || !out || !n) return log_error(log, ENGRAM_EINVAL, "group list: NULL argument");
  *out = NULL;
  *n = 0;
  if (topic && !log_valid_name(topic))
    return log_error(log, ENGRAM_EINVAL, "group list: invalid topic name");
  cg_dbs d;
  int rc = cg_dbs_get(log, &d);
  /* Only a read-only handle gets ENOTFOUND here: no group was ever made in this log. */
  int none = rc == ENGRAM_ENOTFOUND;
  if (rc && !none) return rc;
  MDB_txn *txn;
  if ((rc = log_read_begin(log, &txn))) return rc;
  if (topic) {
    log_topic t;
    if ((rc = log_topic_get(log, txn, topic, &t))) {
      log_read_end(log, txn);
      return rc;
    }
  }
  if (none) {
    log_read_end(log, txn);
    log_error_clear(log);
    return 0;
  }
  MDB_cursor *c;
  if ((rc = mdb_cursor_open(txn, d.groups, &c))) {
    log_read_end(log, txn);
    return log_err_mdb(rc);
  }
  size_t cap = 0, cnt = 0, plen = topic ? strlen(topic) + 1 : 0;
  engram_group_info *arr = NULL;
  unsigned char pfx[ENGRAM_MAX_NAME + 2];
  if (topic) memcpy(pfx, topic, plen);
  MDB_val k = {plen ? plen : 1, plen ? pfx : (unsigned char *)"\x01"}, v;
  int op = MDB_SET_RANGE;
  while (mdb_cursor_get(c, &k, &v, op) == 0) {
    op = MDB_NEXT;
    if (topic && (k.mv_size < plen || memcmp(k.mv_data, pfx, plen))) break;
    const char *kk = k.mv_data;
    const char *nul = memchr(kk, '\0', k.mv_size);
    if (!nul || nul == kk) continue;
    char tn[ENGRAM_MAX_NAME + 1], gn[ENGRAM_MAX_NAME + 1];
    size_t tl = (size_t)(nul - kk), gl = k.mv_size - tl - 1;
    if (tl > ENGRAM_MAX_NAME || gl > ENGRAM_MAX_NAME || gl == 0) continue;
    memcpy(tn, kk, tl);
    tn[tl] = '\0';
    memcpy(gn, nul + 1, gl);
    gn[gl] = '\0';
    cg_group g;
    if (cg_group_load(log, txn, &d, tn, gn, &g) != 0) {
      cg_group_free(&g);
      continue; /* a group of a dropped topic */
    }
    if (cnt == cap) {
      cap = cap ? cap * 2 : 8;
      engram_group_info *a = realloc(arr, cap * sizeof *a);
      if (!a) {
        cg_group_free(&g);
        rc = ENGRAM_ENOMEM;
        break;
      }
      arr = a;
    }
    info_fill(log, txn, &d, &g, &arr[cnt++]);
    cg_group_free(&g);
  }
  mdb_cursor_close(c);
  log_read_end(log, txn);
  if (rc) {
    free(arr);
    return log_error(log, rc, "group list: out of memory");
  }
  log_error_clear(log);
  *out = arr;
  *n = cnt;
  return 0;
}

/* ---------------------------------------------------------------------------------
 * Delete, reset, and dropping a topic's groups.
 * ------------------------------------------------------------------------------ */
static int clear_state(MDB_txn *txn, const cg_dbs *d, uint32_t gid, int with_dlq) {
  int rc;
  if ((rc = cg_del_prefix(txn, d->leases, gid))) return rc;
  if ((rc = cg_del_prefix(txn, d->due, gid))) return rc;
  if ((rc = cg_del_prefix(txn, d->keys, gid))) return rc;
  if ((rc = cg_del_prefix(txn, d->skips, gid))) return rc;
  if (with_dlq) {
    if ((rc = cg_del_prefix(txn, d->dlq, gid))) return rc;
    if ((rc = cg_del_prefix(txn, d->results, gid))) return rc;
  }
  return 0;
}

static int delete_group(MDB_txn *txn, const cg_dbs *d, const char *topic, const char *group,
                        uint32_t gid) {
  unsigned char kb[2 * ENGRAM_MAX_NAME + 2];
  MDB_val k = {group_key(kb, topic, group), kb};
  int rc = mdb_del(txn, d->groups, &k, NULL);
  if (rc && rc != MDB_NOTFOUND) return log_err_mdb(rc);
  return clear_state(txn, d, gid, 1);
}

struct name_req {
  const char *topic, *group;
  cg_dbs d;
  engram_start to;
  uint64_t offset;
  int64_t time_ns;
};

static int delete_job(log_wtx *w, void *arg) {
  struct name_req *r = arg;
  cg_group g;
  int rc = cg_group_load(w->log, w->txn, &r->d, r->topic, r->group, &g);
  if (rc == 0) rc = delete_group(w->txn, &r->d, r->topic, r->group, g.meta->id);
  cg_group_free(&g);
  return rc;
}

int cg_group_delete(struct log *log, const char *topic, const char *group) {
  if (!log) return ENGRAM_EINVAL;
  struct name_req r = {.topic = topic, .group = group};
  int rc = cg_dbs_get(log, &r.d);
  if (rc) return rc;
  rc = log_write(log, delete_job, &r);
  return rc < 0 ? rc : 0;
}

static int reset_job(log_wtx *w, void *arg) {
  struct name_req *r = arg;
  cg_group g;
  int rc = cg_group_load(w->log, w->txn, &r->d, r->topic, r->group, &g);
  if (rc) goto out;
  uint64_t next;
  if ((rc = resolve_start(w->log, w->txn, &g.t, r->to, r->offset, r->time_ns, &next))) {
    char why[256]; /* the message buffer cannot be its own argument */
    snprintf(why, sizeof why, "%s", log_errmsg(w->log));
    rc = log_error(w->log, rc, "reset group %s/%s: %s", r->topic, r->group, why);
    goto out;
  }
  if ((rc = clear_state(w->txn, &r->d, g.meta->id, 0))) goto out;
  g.meta->next = next;
  g.meta->skips = 0;
  rc = cg_group_store(w->log, w->txn, &r->d, &g);
out:
  cg_group_free(&g);
  return rc;
}

int cg_group_reset(struct log *log, const char *topic, const char *group, engram_start to,
                   uint64_t offset, int64_t time_ns) {
  if (!log) return ENGRAM_EINVAL;
  struct name_req r = {
      .topic = topic, .group = group, .to = to, .offset = offset, .time_ns = time_ns};
  int rc = cg_dbs_get(log, &r.d);
  if (rc) return rc;
  rc = log_write(log, reset_job, &r);
  return rc < 0 ? rc : 0;
}

int group_drop_topic_in(log_wtx *w, const char *topic) {
  cg_dbs d;
  int rc = cg_dbs_get(w->log, &d);
  if (rc) return rc;
  MDB_cursor *c;
  if ((rc = mdb_cursor_open(w->txn, d.groups, &c))) return log_err_mdb(rc);
  size_t plen = strlen(topic) + 1;
  unsigned char pfx[ENGRAM_MAX_NAME + 2];
  memcpy(pfx, topic, plen);
  for (;;) {
    MDB_val k = {plen, pfx}, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc || k.mv_size <= plen || memcmp(k.mv_data, pfx, plen)) break;
    Engram__GroupMeta *m = engram__group_meta__unpack(NULL, v.mv_size, v.mv_data);
    uint32_t gid = m ? m->id : 0;
    if (m) engram__group_meta__free_unpacked(m, NULL);
    if ((rc = mdb_cursor_del(c, 0))) break;
    if (gid && (rc = clear_state(w->txn, &d, gid, 1))) break;
  }
  mdb_cursor_close(c);
  return rc == 0 || rc == MDB_NOTFOUND ? 0 : (rc < 0 ? rc : log_err_mdb(rc));
}
