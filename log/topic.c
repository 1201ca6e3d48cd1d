/* topic.c — topics: their metadata records, database handles, and the topic API. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void log_topic_cache_free(engram *log) {
  struct log_topic_cache *c = log->topics;
  while (c) {
    struct log_topic_cache *n = c->next;
    free(c);
    c = n;
  }
  log->topics = NULL;
}

void log_topic_dbi_forget(engram *log, const char *name) {
  pthread_mutex_lock(&log->aux_mu);
  for (struct log_topic_cache **pp = &log->topics; *pp; pp = &(*pp)->next) {
    if (!strcmp((*pp)->name, name)) {
      struct log_topic_cache *c = *pp;
      *pp = c->next;
      free(c);
      break;
    }
  }
  pthread_mutex_unlock(&log->aux_mu);
}

void log_topic_cache_add(engram *log, const char *name, MDB_dbi dbi) {
  struct log_topic_cache *c = calloc(1, sizeof *c);
  if (!c) return;
  snprintf(c->name, sizeof c->name, "%s", name);
  c->dbi = dbi;
  pthread_mutex_lock(&log->aux_mu);
  c->next = log->topics;
  log->topics = c;
  pthread_mutex_unlock(&log->aux_mu);
}

static int topic_dbi(engram *log, const char *name, MDB_dbi *dbi) {
  pthread_mutex_lock(&log->aux_mu);
  for (struct log_topic_cache *c = log->topics; c; c = c->next) {
    if (!strcmp(c->name, name)) {
      *dbi = c->dbi;
      pthread_mutex_unlock(&log->aux_mu);
      return 0;
    }
  }
  pthread_mutex_unlock(&log->aux_mu);
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
}

static int meta_decode(engram *log, const MDB_val *v, const char *name, log_topic *t) {
  Engram__TopicMeta *m = engram__topic_meta__unpack(NULL, v->mv_size, v->mv_data);
  if (!m) return log_error(log, ENGRAM_ECORRUPT, "topic %s: metadata does not decode", name);
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name);
  t->id = m->id;
  t->cfg.compress_threshold = m->compress_threshold;
  t->cfg.max_payload = m->max_payload;
  t->cfg.dict_train_after = m->dict_train_after;
  t->cfg.flags = m->flags;
  t->first_removed = m->first_offset;
  t->next_offset = m->next_offset ? m->next_offset : 1;
  t->dict_id = m->dict_id;
  t->created_ns = m->created_ns;
  t->dict_trained_auto = m->dict_trained_auto;
  engram__topic_meta__free_unpacked(m, NULL);
  config_defaults(&t->cfg);
  return 0;
}

int log_topic_meta_put(engram *log, MDB_txn *txn, const log_topic *t) {
  Engram__TopicMeta m = ENGRAM__TOPIC_META__INIT;
  m.id = t->id;
  m.compress_threshold = t->cfg.compress_threshold;
  m.max_payload = t->cfg.max_payload;
  m.dict_train_after = t->cfg.dict_train_after;
  m.flags = t->cfg.flags;
  m.first_offset = t->first_removed;
  m.next_offset = t->next_offset;
  m.dict_id = t->dict_id;
  m.created_ns = t->created_ns;
  m.dict_trained_auto = t->dict_trained_auto;
  unsigned char buf[128];
  size_t n = engram__topic_meta__pack(&m, buf);
  MDB_val k = {strlen(t->name), (void *)t->name}, v = {n, buf};
  int rc = mdb_put(txn, log->db_topics, &k, &v, 0);
  return rc ? log_err_mdb(rc) : 0;
}

int log_topic_get(engram *log, MDB_txn *txn, const char *name, log_topic *t) {
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
    if ((rc = topic_dbi(log, name, &t->dbi))) return rc;
    unsigned int flags;
    if (mdb_dbi_flags(txn, t->dbi, &flags) == 0) return 0;
    /* The handle was opened after this transaction began (the topic was made by another
     * process): a read transaction is renewed in place, a write batch is rerun. */
    if (txn != log_read_txn_of_thread() || tries > 0) return LOG_ENEWDBI;
    mdb_txn_reset(txn);
    if ((rc = mdb_txn_renew(txn)))
      return log_error(log, log_err_mdb(rc), "topic %s: %s", name, log_mdb_text(rc));
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

uint64_t log_topic_head(engram *log, MDB_txn *txn, const log_topic *t) {
  uint64_t last = last_key(txn, t->dbi, MDB_LAST);
  return last ? last : t->next_offset - 1;
}

uint64_t log_topic_first(engram *log, MDB_txn *txn, const log_topic *t) {
  return last_key(txn, t->dbi, MDB_FIRST);
}

uint64_t log_topic_seek_time(engram *log, MDB_txn *txn, const log_topic *t, int64_t time_ns) {
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
  engram *log = w->log;
  MDB_val k = {strlen(r->name), (void *)r->name}, v;
  if (mdb_get(w->txn, log->db_topics, &k, &v) == 0)
    return log_error(log, ENGRAM_EEXIST, "create topic %s: already exists", r->name);
  MDB_stat st;
  mdb_stat(w->txn, log->db_topics, &st);
  if (st.ms_entries >= log->opts.max_topics)
    return log_error(log, ENGRAM_ELIMIT, "create topic %s: %u topics already (max_topics)", r->name,
                     log->opts.max_topics);
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
  t.created_ns = w->now_ns;
  return log_topic_meta_put(log, w->txn, &t);
}

int engram_topic_create(engram *log, const char *topic, const engram_topic_config *cfg) {
  if (!log) return ENGRAM_EINVAL;
  if (log->remote) return log->remote->topic_create(log, topic, cfg);
  if (!log_valid_name(topic))
    return log_error(log, ENGRAM_EINVAL,
                     "create topic: invalid name (use 1-200 of [A-Za-z0-9._-])");
  struct create_req r = {.name = topic};
  if (cfg) r.cfg = *cfg;
  if (r.cfg.max_payload > ENGRAM_MAX_PAYLOAD_LIMIT)
    return log_error(log, ENGRAM_EINVAL, "create topic %s: max_payload %u over %u", topic,
                     r.cfg.max_payload, ENGRAM_MAX_PAYLOAD_LIMIT);
  if (r.cfg.flags & ~(uint32_t)ENGRAM_TOPIC_NO_DICT)
    return log_error(log, ENGRAM_EINVAL, "create topic %s: unknown flags 0x%x", topic, r.cfg.flags);
  config_defaults(&r.cfg);
  int rc = log_write_solo(log, create_job, &r);
  return rc < 0 ? rc : 0;
}

static void info_fill(engram *log, MDB_txn *txn, const log_topic *t, engram_topic_info *info) {
  memset(info, 0, sizeof *info);
  snprintf(info->name, sizeof info->name, "%s", t->name);
  info->config = t->cfg;
  info->first_offset = log_topic_first(log, txn, t);
  info->head_offset = log_topic_head(log, txn, t);
  MDB_stat st;
  info->count = mdb_stat(txn, t->dbi, &st) == 0 ? st.ms_entries : 0;
  info->dict_id = t->dict_id;
  info->created_ns = t->created_ns;
}

int engram_topic_info_get(engram *log, const char *topic, engram_topic_info *info) {
  if (!log || !info) return log_error(log, ENGRAM_EINVAL, "topic info: NULL argument");
  if (log->remote) return log->remote->topic_info_get(log, topic, info);
  MDB_txn *txn;
  int rc = log_read_begin(log, &txn);
  if (rc) return rc;
  log_topic t;
  rc = log_topic_get(log, txn, topic, &t);
  if (rc == 0) info_fill(log, txn, &t, info);
  log_read_end(log, txn);
  return rc;
}

int engram_topic_list(engram *log, engram_topic_info **out, size_t *n) {
  if (!log || !out || !n) return log_error(log, ENGRAM_EINVAL, "topic list: NULL argument");
  if (log->remote) return log->remote->topic_list(log, out, n);
  *out = NULL;
  *n = 0;
  MDB_txn *txn;
  int rc = log_read_begin(log, &txn);
  if (rc) return rc;
  MDB_cursor *c;
  rc = mdb_cursor_open(txn, log->db_topics, &c);
  if (rc) {
    log_read_end(log, txn);
    return log_err_mdb(rc);
  }
  size_t cap = 0, cnt = 0;
  engram_topic_info *arr = NULL;
  MDB_val k, v;
  int op = MDB_FIRST;
  rc = 0;
  while (mdb_cursor_get(c, &k, &v, op) == 0) {
    op = MDB_NEXT;
    char name[ENGRAM_MAX_NAME + 1];
    if (k.mv_size > ENGRAM_MAX_NAME) continue;
    memcpy(name, k.mv_data, k.mv_size);
    name[k.mv_size] = '\0';
    log_topic t;
    if (meta_decode(log, &v, name, &t) != 0) continue;
    if (topic_dbi(log, name, &t.dbi) != 0) continue;
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
  log_read_end(log, txn);
  if (rc) {
    free(arr);
    return log_error(log, rc, "topic list: out of memory");
  }
  *out = arr;
  *n = cnt;
  return 0;
}

void engram_free(void *p) { free(p); }

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
  engram *log = w->log;
  if (!log_valid_name(topic)) return log_error(log, ENGRAM_EINVAL, "drop topic: invalid name");
  MDB_val k = {strlen(topic), (void *)topic}, v;
  int rc = mdb_get(w->txn, log->db_topics, &k, &v);
  if (rc == MDB_NOTFOUND)
    return log_error(log, ENGRAM_ENOTFOUND, "drop topic %s: no such topic", topic);
  if (rc) return log_err_mdb(rc);
  log_topic t;
  rc = meta_decode(log, &v, topic, &t);
  if (rc) return rc;
  char dbname[ENGRAM_MAX_NAME + 8];
  snprintf(dbname, sizeof dbname, LOG_TOPIC_DB_PREFIX "%s", topic);
  MDB_dbi dbi;
  rc = mdb_dbi_open(w->txn, dbname, MDB_INTEGERKEY, &dbi);
  if (rc == 0) rc = mdb_drop(w->txn, dbi, 1);
  if (rc && rc != MDB_NOTFOUND) return log_err_mdb(rc);
  log_topic_dbi_forget(log, topic);
  rc = mdb_del(w->txn, log->db_topics, &k, NULL);
  if (rc) return log_err_mdb(rc);
  if ((rc = delete_prefix(w->txn, log->db_idem, t.id))) return rc;
  if ((rc = delete_prefix(w->txn, log->db_dicts, t.id))) return rc;
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

int log_dict_train(engram *log, const char *topic, uint32_t *dict_id) {
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

int engram_topic_train_dict(engram *log, const char *topic, uint32_t *dict_id) {
  if (!log) return ENGRAM_EINVAL;
  if (log->remote) return log->remote->topic_train_dict(log, topic, dict_id);
  return log_dict_train(log, topic, dict_id);
}
