/* topic.c — topics: their metadata records, database handles, and the topic API. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log/log_private.h"
#include "schema/record.pb-c.h"

#define DEFAULT_COMPRESS_THRESHOLD 256
#define DEFAULT_MAX_PAYLOAD (1u << 20)
#define DEFAULT_DICT_TRAIN_AFTER 4096

/* name -> database handle, for topics this process has touched. */
struct log_topic_cache {
  char name[ENGRAM_MAX_NAME + 1];
  MDB_dbi dbi;
  struct log_topic_cache *next;
};

void log_topic_cache_free(struct log *log) {
  struct log_topic_cache *c = log->topics;
  while (c) {
    struct log_topic_cache *n = c->next;
    free(c);
    c = n;
  }
  log->topics = NULL;
}

void log_topic_cache_add(struct log *log, const char *name, MDB_dbi dbi) {
  struct log_topic_cache *c = calloc(1, sizeof *c);
  if (!c) return;
  snprintf(c->name, sizeof c->name, "%s", name);
  c->dbi = dbi;
  pthread_mutex_lock(&log->aux_mu);
  c->next = log->topics;
  log->topics = c;
  pthread_mutex_unlock(&log->aux_mu);
}

/* Closes this handle's LMDB handles of topics that no longer exist, so their slots
 * (max_topics + 32 in all) serve new names. Closing a handle is safe only where no
 * transaction of the process can hold it: the commit leader calls this between
 * batches, with dbi_mu held, and it runs only if it gets the map lock exclusively (every
 * read transaction holds it shared; write transactions run only in the leader). Busy
 * readers make it give up after a short wait: the next solo batch tries again. The
 * emptied database stays in the file for a later re-creation (log_topic_drop_in). */
void log_topic_handles_reclaim(struct log *log) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_nsec += 20000000;
  if (until.tv_nsec >= 1000000000) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000;
  }
  if (pthread_rwlock_timedwrlock(&log->map_lock, &until) != 0) return;
  MDB_txn *txn;
  MDB_dbi *closing = NULL;
  size_t n = 0, cap = 0;
  if (mdb_txn_begin(log->env, NULL, MDB_RDONLY, &txn) == 0) {
    pthread_mutex_lock(&log->aux_mu);
    struct log_topic_cache **pp = &log->topics;
    while (*pp) {
      struct log_topic_cache *c = *pp;
      MDB_val k = {strlen(c->name), c->name}, v;
      if (mdb_get(txn, log->db_topics, &k, &v) != MDB_NOTFOUND) {
        pp = &c->next;
        continue;
      }
      if (n == cap) {
        MDB_dbi *a = realloc(closing, (cap = cap ? 2 * cap : 8) * sizeof *a);
        if (!a) break;
        closing = a;
      }
      closing[n++] = c->dbi;
      *pp = c->next;
      free(c);
    }
    pthread_mutex_unlock(&log->aux_mu);
    mdb_txn_abort(txn);
  }
  /* A name cached twice closes its one handle twice; LMDB ignores the second. */
  for (size_t i = 0; i < n; i++) mdb_dbi_close(log->env, closing[i]);
  pthread_rwlock_unlock(&log->map_lock);
  free(closing);
}

/* The cached handle of a topic's database, 0 when this handle has not opened it yet.
 * A drop only empties the database (log_topic_drop_in), and a handle is closed only
 * while no transaction runs (log_topic_handles_reclaim), so a cached one is valid for
 * every transaction begun after it was opened, across drops and re-creations by any
 * process. */
static int topic_dbi_cached(struct log *log, const char *name, MDB_dbi *dbi) {
  int found = 0;
  pthread_mutex_lock(&log->aux_mu);
  for (struct log_topic_cache *c = log->topics; c; c = c->next) {
    if (!strcmp(c->name, name)) {
      *dbi = c->dbi;
      found = 1;
      break;
    }
  }
  pthread_mutex_unlock(&log->aux_mu);
  return found;
}

/* Opens a topic's database in a transaction of its own (log_open_dbi) and caches it.
 * The handle is valid only in transactions begun after this returns. */
static int topic_dbi_open(struct log *log, const char *name, MDB_dbi *dbi) {
  if (topic_dbi_cached(log, name, dbi)) return 0;
  char dbname[ENGRAM_MAX_NAME + 8];
  snprintf(dbname, sizeof dbname, LOG_TOPIC_DB_PREFIX "%s", name);
  int rc = log_open_dbi(log, dbname, MDB_INTEGERKEY, dbi);
  if (rc) return rc;
  log_topic_cache_add(log, name, *dbi);
  return 0;
}

int log_valid_name(const char *s) {
  if (!s) return 0;
  size_t n = 0;
  for (; s[n]; n++) {
    char c = s[n];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-'))
      return 0;
    if (n >= ENGRAM_MAX_NAME) return 0;
  }
  return n > 0;
}

static void config_defaults(engram_topic_config *c) {
  if (!c->compress_threshold) c->compress_threshold = DEFAULT_COMPRESS_THRESHOLD;
  if (!c->max_payload) c->max_payload = DEFAULT_MAX_PAYLOAD;
  if (!c->dict_train_after) c->dict_train_after = DEFAULT_DICT_TRAIN_AFTER;
  if (!c->tombstone_ttl_ms) c->tombstone_ttl_ms = ENGRAM_DEFAULT_TOMBSTONE_TTL_MS;
}

static int meta_decode(struct log *log, const MDB_val *v, const char *name, log_topic *t) {
  Engram__TopicMeta *m = engram__topic_meta__unpack(NULL, v->mv_size, v->mv_data);
  if (!m) return log_error(log, ENGRAM_ECORRUPT, "topic %s: metadata does not decode", name);
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name);
  t->id = m->id;
  t->cfg.compress_threshold = m->compress_threshold;
  t->cfg.max_payload = m->max_payload;
  t->cfg.dict_train_after = m->dict_train_after;
  t->cfg.flags = m->flags;
#define X(type, name) t->cfg.name = m->name;
  ENGRAM_TOPIC_RETENTION_FIELDS(X)
#undef X
  snprintf(t->cfg.tombstone_type, sizeof t->cfg.tombstone_type, "%s", m->tombstone_type);
  t->compacted = m->compacted;
  t->index_next = m->index_next;
  t->first_removed = m->first_offset;
  t->next_offset = m->next_offset ? m->next_offset : 1;
  t->dict_id = m->dict_id;
  t->created_ns = m->created_ns;
  t->dict_trained_auto = m->dict_trained_auto;
  engram__topic_meta__free_unpacked(m, NULL);
  config_defaults(&t->cfg);
  return 0;
}

int log_topic_meta_put(struct log *log, MDB_txn *txn, const log_topic *t) {
  Engram__TopicMeta m = ENGRAM__TOPIC_META__INIT;
  m.id = t->id;
  m.compress_threshold = t->cfg.compress_threshold;
  m.max_payload = t->cfg.max_payload;
  m.dict_train_after = t->cfg.dict_train_after;
  m.flags = t->cfg.flags;
#define X(type, name) m.name = t->cfg.name;
  ENGRAM_TOPIC_RETENTION_FIELDS(X)
#undef X
  m.tombstone_type = (char *)t->cfg.tombstone_type;
  m.compacted = t->compacted;
  m.index_next = t->index_next;
  m.first_offset = t->first_removed;
  m.next_offset = t->next_offset;
  m.dict_id = t->dict_id;
  m.created_ns = t->created_ns;
  m.dict_trained_auto = t->dict_trained_auto;
  unsigned char buf[512];
  size_t n = engram__topic_meta__pack(&m, buf);
  MDB_val k = {strlen(t->name), (void *)t->name}, v = {n, buf};
  int rc = mdb_put(txn, log->db_topics, &k, &v, 0);
  return rc ? log_err_mdb(rc) : 0;
}

int log_topic_get(struct log *log, MDB_txn *txn, const char *name, log_topic *t) {
  if (!log_valid_name(name))
    return log_error(log, ENGRAM_EINVAL, "topic name %s%.40s%s: use 1-200 of [A-Za-z0-9._-]",
                     name ? "'" : "", name ? name : "(null)", name ? "'" : "");
  for (int tries = 0;; tries++) {
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = mdb_get(txn, log->db_topics, &k, &v);
    if (rc == MDB_NOTFOUND)
      return log_error(log, ENGRAM_ENOTFOUND, "topic %s: no such topic", name);
    if (rc) return log_error(log, log_err_mdb(rc), "topic %s: %s", name, log_mdb_text(rc));
    if ((rc = meta_decode(log, &v, name, t))) return rc;
    unsigned int flags;
    int cached = topic_dbi_cached(log, name, &t->dbi);
    if (cached && mdb_dbi_flags(txn, t->dbi, &flags) == 0) return 0;
    /* This handle has not opened the topic's database, or opened it after txn began
     * (the topic was made by another process or thread): txn cannot use the handle. */
    if (log_in_write_job()) {
      /* A write job: open the handle now and have the commit leader rerun the batch in a
       * new transaction, which sees it. */
      if (cached) return LOG_ENEWDBI;
      if ((rc = topic_dbi_open(log, name, &t->dbi))) return rc;
      return mdb_dbi_flags(txn, t->dbi, &flags) == 0 ? 0 : LOG_ENEWDBI;
    }
    if (tries > 0)
      return log_error(log, ENGRAM_EINTERNAL, "topic %s: database handle unusable", name);
    /* The thread's read transaction: open the handle with no snapshot held, then
     * renew the transaction on the newest snapshot and look again. */
    log_read_pause(log, txn);
    rc = cached ? 0 : topic_dbi_open(log, name, &t->dbi);
    int rrc = log_read_resume(log, txn);
    if (rc) return rc;
    if (rrc) return rrc;
  }
}

static uint64_t last_key(MDB_txn *txn, MDB_dbi dbi, int op) {
  MDB_cursor *c;
  if (mdb_cursor_open(txn, dbi, &c)) return 0;
  MDB_val k, v;
  uint64_t off = 0;
  if (mdb_cursor_get(c, &k, &v, op) == 0) memcpy(&off, k.mv_data, 8);
  mdb_cursor_close(c);
  return off;
}

uint64_t log_topic_head(struct log *log, MDB_txn *txn, const log_topic *t) {
  /* next_offset outlives records removed at the top (key compaction's tombstones). */
  uint64_t last = last_key(txn, t->dbi, MDB_LAST);
  return last > t->next_offset - 1 ? last : t->next_offset - 1;
}

uint64_t log_topic_first(struct log *log, MDB_txn *txn, const log_topic *t) {
  return last_key(txn, t->dbi, MDB_FIRST);
}

uint64_t log_topic_seek_time(struct log *log, MDB_txn *txn, const log_topic *t, int64_t time_ns) {
  /* Append times never decrease with offset (the commit clock reading is taken under the
   * write lock), so binary search over offsets. */
  uint64_t lo = log_topic_first(log, txn, t), hi = log_topic_head(log, txn, t);
  if (lo == 0) return hi + 1;
  uint64_t ans = hi + 1;
  while (lo <= hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    log_view v;
    if (log_view_get(log, txn, t, mid, &v) != 0) {
      lo = mid + 1; /* unreadable records do not stop the search */
      continue;
    }
    if (v.timestamp_ns >= time_ns) {
      ans = mid;
      if (mid == 0) break;
      hi = mid - 1;
    } else {
      lo = mid + 1;
    }
  }
  return ans;
}

/* ---------------------------------------------------------------------------------
 * Public topic API.
 * ------------------------------------------------------------------------------ */
struct create_req {
  const char *name;
  engram_topic_config cfg;
};

static int create_job(log_wtx *w, void *arg) {
  struct create_req *r = arg;
  struct log *log = w->log;
  MDB_val k = {strlen(r->name), (void *)r->name}, v;
  if (mdb_get(w->txn, log->db_topics, &k, &v) == 0)
    return log_error(log, ENGRAM_EEXIST, "create topic %s: already exists", r->name);
  MDB_stat st;
  mdb_stat(w->txn, log->db_topics, &st);
  if (st.ms_entries >= log->opts.max_topics)
    return log_error(log, ENGRAM_ELIMIT,
                     "create topic %s: %u topics already, the log's max_topics: open the log "
                     "once with a larger max_topics to raise it (engram --data DIR --max-topics "
                     "N ..., engram.open(..., max_topics=N)); a daemon serving it sees the new "
                     "limit once restarted",
                     r->name, log->opts.max_topics);
  /* Topic ids are never reused, so stale keys of a dropped topic cannot match. */
  MDB_val ik = {13, "next_topic_id"};
  uint32_t id = 1;
  if (mdb_get(w->txn, log->db_meta, &ik, &v) == 0 && v.mv_size == 4) id = be32_get(v.mv_data);
  unsigned char nb[4];
  be32_put(nb, id + 1);
  MDB_val nv = {4, nb};
  int rc = mdb_put(w->txn, log->db_meta, &ik, &nv, 0);
  if (rc) return log_err_mdb(rc);
  char dbname[ENGRAM_MAX_NAME + 8];
  snprintf(dbname, sizeof dbname, LOG_TOPIC_DB_PREFIX "%s", r->name);
  MDB_dbi dbi;
  rc = mdb_dbi_open(w->txn, dbname, MDB_INTEGERKEY | MDB_CREATE, &dbi);
  if (rc == MDB_DBS_FULL)
    return log_error(log, ENGRAM_ELIMIT, "create topic %s: too many databases", r->name);
  if (rc) return log_err_mdb(rc);
  log_topic t = {0};
  snprintf(t.name, sizeof t.name, "%s", r->name);
  t.id = id;
  t.cfg = r->cfg;
  t.next_offset = 1;
  t.index_next = 1; /* key compaction indexes from the first event on */
  t.created_ns = w->now_ns;
  return log_topic_meta_put(log, w->txn, &t);
}

/* Checks a config for create or set and fills in its defaults. */
static int config_check(struct log *log, const char *verb, const char *topic,
                        engram_topic_config *c) {
  if (c->max_payload > ENGRAM_MAX_PAYLOAD_LIMIT)
    return log_error(log, ENGRAM_EINVAL, "%s topic %s: max_payload %u over %u", verb, topic,
                     c->max_payload, ENGRAM_MAX_PAYLOAD_LIMIT);
  if (c->flags &
      ~(uint32_t)(ENGRAM_TOPIC_NO_DICT | ENGRAM_TOPIC_RETAIN_FORCE | ENGRAM_TOPIC_COMPACT_KEY))
    return log_error(log, ENGRAM_EINVAL, "%s topic %s: unknown flags 0x%x", verb, topic, c->flags);
  if (c->max_age_ms > ENGRAM_MAX_RETENTION_AGE_MS)
    return log_error(log, ENGRAM_EINVAL, "%s topic %s: max_age_ms %llu over %llu (10 years)", verb,
                     topic, (unsigned long long)c->max_age_ms,
                     (unsigned long long)ENGRAM_MAX_RETENTION_AGE_MS);
  if (c->tombstone_ttl_ms > ENGRAM_MAX_RETENTION_AGE_MS)
    return log_error(log, ENGRAM_EINVAL, "%s topic %s: tombstone_ttl_ms %llu over %llu (10 years)",
                     verb, topic, (unsigned long long)c->tombstone_ttl_ms,
                     (unsigned long long)ENGRAM_MAX_RETENTION_AGE_MS);
  if (!memchr(c->tombstone_type, '\0', sizeof c->tombstone_type) ||
      (c->tombstone_type[0] && !log_valid_type(c->tombstone_type)))
    return log_error(log, ENGRAM_EINVAL,
                     "%s topic %s: tombstone type invalid: use dotted words of [A-Za-z0-9_-], "
                     "1-200 bytes",
                     verb, topic);
  if (c->flags & ENGRAM_TOPIC_COMPACT_KEY) {
    /* Compaction slices keep the key index: make sure its database exists. */
    MDB_dbi dbi;
    int rc = log_aux_dbi(log, LOG_DB_KEYIDX, 0, &dbi);
    if (rc) return rc;
  }
  config_defaults(c);
  return 0;
}

int log_topic_create(struct log *log, const char *topic, const engram_topic_config *cfg) {
  if (!log) return ENGRAM_EINVAL;
  if (!log_valid_name(topic))
    return log_error(log, ENGRAM_EINVAL,
                     "create topic: invalid name (use 1-200 of [A-Za-z0-9._-])");
  struct create_req r = {.name = topic};
  if (cfg) r.cfg = *cfg;
  int rc = config_check(log, "create", topic, &r.cfg);
  if (rc) return rc;
  rc = log_write_solo(log, create_job, &r);
  return rc < 0 ? rc : 0;
}

static int set_job(log_wtx *w, void *arg) {
  struct create_req *r = arg;
  log_topic t;
  int rc = log_topic_get(w->log, w->txn, r->name, &t);
  if (rc) return rc;
  if ((r->cfg.flags & ENGRAM_TOPIC_COMPACT_KEY) && !(t.cfg.flags & ENGRAM_TOPIC_COMPACT_KEY)) {
    /* Compaction turned on: its slices index the events stored so far (again, when it
     * was on before: indexing an event twice is harmless) and those appended after. */
    uint64_t first = log_topic_first(w->log, w->txn, &t);
    t.index_next = first ? first : log_topic_head(w->log, w->txn, &t) + 1;
  }
  t.cfg = r->cfg;
  return log_topic_meta_put(w->log, w->txn, &t);
}

int log_topic_set(struct log *log, const char *topic, const engram_topic_config *cfg) {
  if (!log) return ENGRAM_EINVAL;
  if (!cfg) return log_error(log, ENGRAM_EINVAL, "set topic: config is NULL");
  if (!log_valid_name(topic))
    return log_error(log, ENGRAM_EINVAL, "set topic: invalid name (use 1-200 of [A-Za-z0-9._-])");
  struct create_req r = {.name = topic, .cfg = *cfg};
  int rc = config_check(log, "set", topic, &r.cfg);
  if (rc) return rc;
  rc = log_write(log, set_job, &r);
  return rc < 0 ? rc : 0;
}

static void info_fill(struct log *log, MDB_txn *txn, const log_topic *t, engram_topic_info *info) {
  memset(info, 0, sizeof *info);
  snprintf(info->name, sizeof info->name, "%s", t->name);
  info->config = t->cfg;
  info->first_offset = log_topic_first(log, txn, t);
  info->head_offset = log_topic_head(log, txn, t);
  MDB_stat st;
  info->count = mdb_stat(txn, t->dbi, &st) == 0 ? st.ms_entries : 0;
  info->dict_id = t->dict_id;
  info->created_ns = t->created_ns;
  info->compacted = t->compacted;
}

int log_topic_info_get(struct log *log, const char *topic, engram_topic_info *info) {
  if (!log || !info) return log_error(log, ENGRAM_EINVAL, "topic info: NULL argument");
  MDB_txn *txn;
  int rc = log_read_begin(log, &txn);
  if (rc) return rc;
  log_topic t;
  rc = log_topic_get(log, txn, topic, &t);
  if (rc == 0) info_fill(log, txn, &t, info);
  log_read_end(log, txn);
  return rc;
}

/* Lists the topics of txn's snapshot into a malloc'd array. Returns 0, an error, or 1
 * when this handle lacks a usable database handle for some topic: then every such
 * topic's handle has been opened (outside any snapshot) and txn renewed, so the caller
 * lists again. */
static int list_in(struct log *log, MDB_txn *txn, int may_renew, engram_topic_info **out,
                   size_t *n) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, log->db_topics, &c);
  if (rc) return log_error(log, log_err_mdb(rc), "topic list: %s", log_mdb_text(rc));
  size_t cap = 0, cnt = 0, n_missing = 0;
  engram_topic_info *arr = NULL;
  char(*missing)[ENGRAM_MAX_NAME + 1] = NULL;
  MDB_val k, v;
  int op = MDB_FIRST;
  while (rc == 0 && mdb_cursor_get(c, &k, &v, op) == 0) {
    op = MDB_NEXT;
    char name[ENGRAM_MAX_NAME + 1];
    if (k.mv_size > ENGRAM_MAX_NAME) continue;
    memcpy(name, k.mv_data, k.mv_size);
    name[k.mv_size] = '\0';
    log_topic t;
    unsigned int flags;
    if (meta_decode(log, &v, name, &t) != 0) continue;
    if (!topic_dbi_cached(log, name, &t.dbi) || mdb_dbi_flags(txn, t.dbi, &flags) != 0) {
      /* Made since this handle looked (by another process or thread). Without a
       * renew left, it is left out, as if listed a moment earlier. */
      if (!may_renew) continue;
      void *m = realloc(missing, (n_missing + 1) * sizeof *missing);
      if (!m) {
        rc = ENGRAM_ENOMEM;
        break;
      }
      missing = m;
      memcpy(missing[n_missing++], name, sizeof name);
      continue;
    }
    if (cnt == cap) {
      cap = cap ? cap * 2 : 16;
      engram_topic_info *a = realloc(arr, cap * sizeof *a);
      if (!a) {
        rc = ENGRAM_ENOMEM;
        break;
      }
      arr = a;
    }
    info_fill(log, txn, &t, &arr[cnt++]);
  }
  mdb_cursor_close(c);
  if (rc == 0 && n_missing) {
    free(arr);
    arr = NULL;
    log_read_pause(log, txn);
    for (size_t i = 0; rc == 0 && i < n_missing; i++) {
      MDB_dbi dbi;
      rc = topic_dbi_open(log, missing[i], &dbi);
    }
    int rrc = log_read_resume(log, txn);
    if (rc == 0) rc = rrc ? rrc : 1;
  }
  free(missing);
  if (rc == ENGRAM_ENOMEM) rc = log_error(log, rc, "topic list: out of memory");
  if (rc) {
    free(arr);
    return rc;
  }
  *out = arr;
  *n = cnt;
  return 0;
}

int log_topic_list(struct log *log, engram_topic_info **out, size_t *n) {
  if (!log || !out || !n) return log_error(log, ENGRAM_EINVAL, "topic list: NULL argument");
  *out = NULL;
  *n = 0;
  MDB_txn *txn;
  int rc = log_read_begin(log, &txn);
  if (rc) return rc;
  rc = list_in(log, txn, 1, out, n);
  if (rc == 1) rc = list_in(log, txn, 0, out, n);
  log_read_end(log, txn);
  return rc;
}

/* Deletes every key of `dbi` that starts with the 4-byte topic id. */
static int delete_prefix(MDB_txn *txn, MDB_dbi dbi, uint32_t id) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(txn, dbi, &c);
  if (rc) return log_err_mdb(rc);
  unsigned char p[4];
  be32_put(p, id);
  for (;;) {
    MDB_val k = {4, p}, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc) break;
    if (k.mv_size < 4 || memcmp(k.mv_data, p, 4)) break;
    rc = mdb_cursor_del(c, 0);
    if (rc) break;
  }
  mdb_cursor_close(c);
  return rc == MDB_NOTFOUND || rc == 0 ? 0 : log_err_mdb(rc);
}

int log_topic_drop_in(log_wtx *w, const char *topic) {
  struct log *log = w->log;
  if (!log_valid_name(topic)) return log_error(log, ENGRAM_EINVAL, "drop topic: invalid name");
  MDB_val k = {strlen(topic), (void *)topic}, v;
  int rc = mdb_get(w->txn, log->db_topics, &k, &v);
  if (rc == MDB_NOTFOUND)
    return log_error(log, ENGRAM_ENOTFOUND, "drop topic %s: no such topic", topic);
  if (rc) return log_err_mdb(rc);
  log_topic t;
  rc = meta_decode(log, &v, topic, &t);
  if (rc) return rc;
  /* Empty the topic's database but keep it and its handle: mdb_drop(.., 1) would close
   * the handle and free its name while other threads' transactions still use it, which
   * LMDB forbids (a crash). Readers still in an older snapshot keep seeing the old
   * events; later transactions find no topic record. A re-creation reuses the database;
   * the leader closes the handle after the commit, where no transaction can hold it
   * (log_topic_handles_reclaim). */
  char dbname[ENGRAM_MAX_NAME + 8];
  snprintf(dbname, sizeof dbname, LOG_TOPIC_DB_PREFIX "%s", topic);
  MDB_dbi dbi;
  rc = mdb_dbi_open(w->txn, dbname, MDB_INTEGERKEY, &dbi);
  if (rc == 0) rc = mdb_drop(w->txn, dbi, 0);
  if (rc && rc != MDB_NOTFOUND) return log_err_mdb(rc);
  rc = mdb_del(w->txn, log->db_topics, &k, NULL);
  if (rc) return log_err_mdb(rc);
  if ((rc = delete_prefix(w->txn, log->db_idem, t.id))) return rc;
  if ((rc = delete_prefix(w->txn, log->db_dicts, t.id))) return rc;
  MDB_dbi keys;
  rc = mdb_dbi_open(w->txn, LOG_DB_KEYIDX, 0, &keys); /* a solo job may open handles */
  if (rc == 0 && (rc = delete_prefix(w->txn, keys, t.id))) return rc;
  if (rc && rc != MDB_NOTFOUND) return log_err_mdb(rc);
  log_dict_forget_topic(log, t.id);
  return 0;
}

struct store_req {
  const char *topic;
  uint32_t topic_id;
  const log_dict *dict;
};

static int store_job(log_wtx *w, void *arg) {
  struct store_req *r = arg;
  log_topic t;
  int rc = log_topic_get(w->log, w->txn, r->topic, &t);
  if (rc) return rc;
  if (t.id != r->topic_id)
    return log_error(w->log, ENGRAM_ENOTFOUND, "train dictionary %s: topic was dropped", r->topic);
  return log_dict_store(w->log, w->txn, &t, r->dict);
}

int log_dict_train(struct log *log, const char *topic, uint32_t *dict_id) {
  MDB_txn *txn;
  int rc = log_read_begin(log, &txn);
  if (rc) return rc;
  log_topic t;
  log_samples s = {0};
  rc = log_topic_get(log, txn, topic, &t);
  if (rc == 0 && (t.cfg.flags & ENGRAM_TOPIC_NO_DICT))
    rc =
        log_error(log, ENGRAM_EINVAL, "train dictionary %s: the topic has dictionaries off", topic);
  if (rc == 0) rc = log_dict_samples(log, txn, &t, &s);
  log_read_end(log, txn);
  if (rc) return rc;
  log_dict *d = malloc(sizeof *d);
  if (!d) rc = log_error(log, ENGRAM_ENOMEM, "train dictionary %s: out of memory", topic);
  if (rc == 0) rc = log_dict_build(log, topic, &s, d);
  log_samples_free(&s);
  if (rc == 0) {
    struct store_req r = {topic, t.id, d};
    rc = log_write(log, store_job, &r);
    if (rc >= 0) {
      rc = 0;
      if (dict_id) *dict_id = d->id;
    }
  }
  free(d);
  return rc;
}

int log_topic_train_dict(struct log *log, const char *topic, uint32_t *dict_id) {
  if (!log) return ENGRAM_EINVAL;
  return log_dict_train(log, topic, dict_id);
}

/* ---------------------------------------------------------------------------------
 * Retention's primitives (the policy, which needs the groups, is consumers/retain.c).
 * ------------------------------------------------------------------------------ */
int log_topic_trim_in(log_wtx *w, log_topic *t, uint64_t below, uint64_t *removed) {
  struct log *log = w->log;
  uint64_t head = log_topic_head(log, w->txn, t), n = 0;
  if (removed) *removed = 0;
  if (below > head + 1) below = head + 1;
  MDB_cursor *c;
  int rc = mdb_cursor_open(w->txn, t->dbi, &c);
  if (rc) return log_error(log, log_err_mdb(rc), "trim %s: %s", t->name, log_mdb_text(rc));
  MDB_dbi keys = 0;
  int compact = (t->cfg.flags & ENGRAM_TOPIC_COMPACT_KEY) != 0;
  if (compact && (rc = log_keys_dbi_in(w, &keys))) {
    mdb_cursor_close(c);
    return rc;
  }
  uint64_t lowest = t->first_removed > 1 ? t->first_removed : 1;
  int erc = 0; /* the key index's error (an ENGRAM_E* code, where rc holds LMDB's) */
  MDB_val k, v;
  while ((rc = mdb_cursor_get(c, &k, &v, MDB_FIRST)) == 0) {
    uint64_t off = 0;
    if (k.mv_size == 8) memcpy(&off, k.mv_data, 8);
    if (off >= below) break;
    log_view view;
    /* The key index forgets a key whose newest event goes (its queues drop their
     * entries of removed offsets when compaction meets them). */
    if (compact && log_codec_decode(v.mv_data, v.mv_size, off, &view) == 0 &&
        (erc = log_keys_unindex_in(w, keys, t, &view)))
      break;
    if ((rc = mdb_cursor_del(c, 0))) break;
    n++;
  }
  mdb_cursor_close(c);
  if (erc) return erc;
  if (rc && rc != MDB_NOTFOUND)
    return log_error(log, log_err_mdb(rc), "trim %s: %s", t->name, log_mdb_text(rc));
  /* Gaps key compaction left below the new first offset are no longer gaps. */
  if (below > lowest) {
    uint64_t gaps = below - lowest > n ? below - lowest - n : 0;
    t->compacted = t->compacted > gaps ? t->compacted - gaps : 0;
  }
  /* The head survives an emptied database through next_offset, so offsets are never
   * reused; first_removed says where the dense range now begins. */
  if (t->next_offset < head + 1) t->next_offset = head + 1;
  if (t->first_removed < below) t->first_removed = below;
  if ((rc = log_topic_meta_put(log, w->txn, t))) return rc;
  if (removed) *removed = n;
  return 0;
}

uint64_t log_topic_bytes(struct log *log, MDB_txn *txn, const log_topic *t) {
  MDB_stat st;
  if (mdb_stat(txn, t->dbi, &st)) return 0;
  (void)log;
  return (uint64_t)st.ms_psize * (st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages);
}
