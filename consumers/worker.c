/* worker.c — workers as an operator sees them: registered by their fetches and
 * heartbeats, listed with their groups, counts and running tasks, forgotten on request. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumers/cg.h"

/* A fetch refreshes its consumer's record at most this often, so a busy consumer adds
 * no write of its own to most fetches. */
#define SEEN_EVERY_NS 1000000000ll
/* A heartbeat drops the records of workers not seen for this long (7 days), so names that
 * come and go (host-pid-N) do not pile up. */
#define FORGET_AFTER_NS (7ll * 86400 * 1000000000)

int cg_worker_dbi(struct log *log, MDB_dbi *out) { return log_aux_dbi(log, "workers", 0, out); }

/* The stored record of `name`, or NULL (rc 0) when there is none. */
static int load(MDB_txn *txn, MDB_dbi dbi, const char *name, Engram__WorkerRecord **out) {
  *out = NULL;
  MDB_val k = {strlen(name), (void *)name}, v;
  int rc = mdb_get(txn, dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return log_err_mdb(rc);
  *out = engram__worker_record__unpack(NULL, v.mv_size, v.mv_data);
  /* A record that does not decode is replaced by the next heartbeat. */
  return 0;
}

static int store(MDB_txn *txn, MDB_dbi dbi, const char *name, const Engram__WorkerRecord *r) {
  size_t len = engram__worker_record__get_packed_size(r);
  MDB_val k = {strlen(name), (void *)name}, v = {len, NULL};
  int rc = mdb_put(txn, dbi, &k, &v, MDB_RESERVE);
  if (rc) return log_err_mdb(rc);
  engram__worker_record__pack(r, v.mv_data);
  return 0;
}

static int has_group(const Engram__WorkerRecord *r, const char *tg) {
  for (size_t i = 0; i < r->n_groups; i++)
    if (!strcmp(r->groups[i], tg)) return 1;
  return 0;
}

/* The record's groups plus `add` (n of them) not yet there, oldest dropped past the
 * limit, as a malloc'd array of pointers into either (*n receives the count). */
static char **merge_groups(const Engram__WorkerRecord *r, char *const *add, size_t n_add,
                           size_t *n) {
  size_t cap = (r ? r->n_groups : 0) + n_add;
  char **g = malloc((cap ? cap : 1) * sizeof *g);
  if (!g) return NULL;
  size_t k = 0;
  for (size_t i = 0; r && i < r->n_groups; i++) g[k++] = r->groups[i];
  for (size_t i = 0; i < n_add; i++) {
    int seen = 0;
    for (size_t j = 0; j < k && !seen; j++) seen = !strcmp(g[j], add[i]);
    if (!seen) g[k++] = add[i];
  }
  size_t drop = k > ENGRAM_MAX_WORKER_GROUPS ? k - ENGRAM_MAX_WORKER_GROUPS : 0;
  memmove(g, g + drop, (k - drop) * sizeof *g);
  *n = k - drop;
  return g;
}

int cg_worker_seen(log_wtx *w, MDB_dbi dbi, const char *consumer, const char *topic,
                   const char *group) {
  char tg[2 * ENGRAM_MAX_NAME + 2];
  snprintf(tg, sizeof tg, "%s/%s", topic, group);
  Engram__WorkerRecord *r;
  int rc = load(w->txn, dbi, consumer, &r);
  if (rc) return rc;
  if (r && w->now_ns - r->last_seen_ns < SEEN_EVERY_NS && r->last_seen_ns <= w->now_ns &&
      has_group(r, tg)) {
    engram__worker_record__free_unpacked(r, NULL);
    return 0;
  }
  Engram__WorkerRecord fresh = ENGRAM__WORKER_RECORD__INIT, *use = r ? r : &fresh;
  if (!r) fresh.started_ns = w->now_ns;
  char **old = use->groups, *add = tg;
  size_t n_old = use->n_groups;
  char **g = merge_groups(r, &add, 1, &use->n_groups);
  if (!g) {
    use->n_groups = n_old;
    rc = log_error(w->log, ENGRAM_ENOMEM, "fetch: out of memory");
  } else {
    use->groups = g;
    use->last_seen_ns = w->now_ns;
    rc = store(w->txn, dbi, consumer, use);
    use->groups = old;
    use->n_groups = n_old;
    free(g);
  }
  if (r) engram__worker_record__free_unpacked(r, NULL);
  return rc;
}

/* Deletes the records of workers not seen for FORGET_AFTER_NS. */
static int prune(log_wtx *w, MDB_dbi dbi) {
  MDB_cursor *c;
  int rc = mdb_cursor_open(w->txn, dbi, &c);
  if (rc) return log_err_mdb(rc);
  MDB_val k, v;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
    Engram__WorkerRecord *r = engram__worker_record__unpack(NULL, v.mv_size, v.mv_data);
    int stale = r && w->now_ns - r->last_seen_ns > FORGET_AFTER_NS;
    if (r) engram__worker_record__free_unpacked(r, NULL);
    if (stale && (rc = mdb_cursor_del(c, 0))) break;
  }
  mdb_cursor_close(c);
  return rc == 0 || rc == MDB_NOTFOUND ? 0 : log_err_mdb(rc);
}

struct beat_req {
  MDB_dbi dbi;
  const engram_worker_info *info;
};

static int beat_job(log_wtx *w, void *arg) {
  struct beat_req *q = arg;
  const engram_worker_info *in = q->info;
  Engram__WorkerRecord *r;
  int rc = load(w->txn, q->dbi, in->name, &r);
  if (rc) return rc;
  Engram__WorkerRecord n = ENGRAM__WORKER_RECORD__INIT;
  char *add[ENGRAM_MAX_WORKER_GROUPS];
  for (size_t i = 0; i < in->n_groups; i++) add[i] = (char *)in->groups[i];
  Engram__WorkerTask tasks[ENGRAM_MAX_WORKER_RUNNING], *tp[ENGRAM_MAX_WORKER_RUNNING];
  for (size_t i = 0; i < in->n_running; i++) {
    engram__worker_task__init(&tasks[i]);
    tasks[i].topic = (char *)in->running[i].topic;
    tasks[i].group = (char *)in->running[i].group;
    tasks[i].offset = in->running[i].offset;
    tasks[i].since_ns = in->running[i].since_ns;
    tp[i] = &tasks[i];
  }
  char **g = merge_groups(r, add, in->n_groups, &n.n_groups);
  if (!g) {
    if (r) engram__worker_record__free_unpacked(r, NULL);
    return log_error(w->log, ENGRAM_ENOMEM, "worker heartbeat: out of memory");
  }
  n.groups = g;
  n.host = (char *)in->host;
  n.pid = in->pid;
  n.concurrency = in->concurrency;
  n.handled = in->handled;
  n.failed = in->failed;
  n.running = in->n_running ? tp : NULL;
  n.n_running = in->n_running;
  n.started_ns = in->started_ns ? in->started_ns : r ? r->started_ns : w->now_ns;
  n.last_seen_ns = w->now_ns;
  rc = store(w->txn, q->dbi, in->name, &n);
  free(g);
  if (r) engram__worker_record__free_unpacked(r, NULL);
  if (rc == 0) rc = prune(w, q->dbi);
  return rc;
}

int cg_worker_heartbeat(struct log *log, const engram_worker_info *info) {
  struct beat_req q = {.info = info};
  int rc = cg_worker_dbi(log, &q.dbi);
  if (rc) return rc;
  /* Relaxed: a heartbeat undone by a power cut is repeated by the next one. */
  rc = log_write_relaxed(log, beat_job, &q);
  return rc < 0 ? rc : 0;
}

static void fill(engram_worker_info *o, const char *name, size_t name_len,
                 const Engram__WorkerRecord *r, int64_t now, uint64_t lost_after_ms) {
  memset(o, 0, sizeof *o);
  snprintf(o->name, sizeof o->name, "%.*s", (int)name_len, name);
  snprintf(o->host, sizeof o->host, "%s", r->host);
  o->pid = r->pid;
  o->concurrency = r->concurrency;
  o->started_ns = r->started_ns;
  o->last_seen_ns = r->last_seen_ns;
  o->handled = r->handled;
  o->failed = r->failed;
  o->lost = now - r->last_seen_ns > (int64_t)(lost_after_ms * 1000000ull);
  for (size_t i = 0; i < r->n_groups && o->n_groups < ENGRAM_MAX_WORKER_GROUPS; i++)
    snprintf(o->groups[o->n_groups++], sizeof o->groups[0], "%s", r->groups[i]);
  for (size_t i = 0; i < r->n_running && o->n_running < ENGRAM_MAX_WORKER_RUNNING; i++) {
    const Engram__WorkerTask *t = r->running[i];
    engram_worker_task *d = &o->running[o->n_running++];
    snprintf(d->topic, sizeof d->topic, "%s", t->topic);
    snprintf(d->group, sizeof d->group, "%s", t->group);
    d->offset = t->offset;
    d->since_ns = t->since_ns;
  }
}

int cg_worker_list(struct log *log, uint64_t lost_after_ms, engram_worker_info **out, size_t *n) {
  *out = NULL;
  *n = 0;
  MDB_dbi dbi;
  int rc = cg_worker_dbi(log, &dbi);
  if (rc == ENGRAM_ENOTFOUND) { /* a read-only log no worker ever fetched from */
    log_error_clear(log);
    *out = calloc(1, sizeof **out);
    return *out ? 0 : log_error(log, ENGRAM_ENOMEM, "worker list: out of memory");
  }
  if (rc) return rc;
  MDB_txn *txn;
  if ((rc = log_read_begin(log, &txn))) return rc;
  MDB_cursor *c;
  size_t cap = 8, k = 0;
  engram_worker_info *list = malloc(cap * sizeof *list);
  if (!list) {
    log_read_end(log, txn);
    return log_error(log, ENGRAM_ENOMEM, "worker list: out of memory");
  }
  if ((rc = mdb_cursor_open(txn, dbi, &c))) {
    free(list);
    log_read_end(log, txn);
    return log_err_mdb(rc);
  }
  int64_t now = log_now_ns(log);
  MDB_val key, val;
  for (int op = MDB_FIRST; mdb_cursor_get(c, &key, &val, op) == 0; op = MDB_NEXT) {
    Engram__WorkerRecord *r = engram__worker_record__unpack(NULL, val.mv_size, val.mv_data);
    if (!r) continue; /* damaged: verify reports it; the next heartbeat replaces it */
    if (k == cap) {
      engram_worker_info *bigger = realloc(list, 2 * cap * sizeof *list);
      if (!bigger) {
        engram__worker_record__free_unpacked(r, NULL);
        rc = log_error(log, ENGRAM_ENOMEM, "worker list: out of memory");
        break;
      }
      list = bigger;
      cap *= 2;
    }
    fill(&list[k++], key.mv_data, key.mv_size, r, now, lost_after_ms);
    engram__worker_record__free_unpacked(r, NULL);
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

struct forget_req {
  MDB_dbi dbi;
  const char *name;
};

static int forget_job(log_wtx *w, void *arg) {
  struct forget_req *q = arg;
  MDB_val k = {strlen(q->name), (void *)q->name};
  int rc = mdb_del(w->txn, q->dbi, &k, NULL);
  if (rc == MDB_NOTFOUND)
    return log_error(w->log, ENGRAM_ENOTFOUND, "worker forget: no worker named %s", q->name);
  return rc ? log_err_mdb(rc) : 0;
}

int cg_worker_forget(struct log *log, const char *name) {
  struct forget_req q = {.name = name};
  int rc = cg_worker_dbi(log, &q.dbi);
  if (rc) return rc;
  rc = log_write(log, forget_job, &q);
  return rc < 0 ? rc : 0;
}
