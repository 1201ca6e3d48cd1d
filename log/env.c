/* env.c — opening, creating and closing a log: the LMDB environment and its lifecycle. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "log/log_private.h"

static __thread char tls_err[512];

void (*log_attach_hook)(engram *log);
void (*log_detach_hook)(engram *log);

int log_error(const engram *log, int code, const char *fmt, ...) {
  (void)log;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tls_err, sizeof tls_err, fmt, ap);
  va_end(ap);
  return code;
}

void log_error_clear(const engram *log) {
  (void)log;
  tls_err[0] = '\0';
}

const char *engram_errmsg(const engram *log) {
  (void)log;
  return tls_err;
}

int log_err_mdb(int rc) {
  switch (rc) {
    case MDB_SUCCESS:
      return ENGRAM_OK;
    case MDB_NOTFOUND:
      return ENGRAM_ENOTFOUND;
    case MDB_KEYEXIST:
      return ENGRAM_EEXIST;
    case MDB_MAP_FULL:
      return LOG_EMAPFULL;
    case MDB_DBS_FULL:
      return ENGRAM_ELIMIT;
    case MDB_READERS_FULL:
      return ENGRAM_ELIMIT;
    case MDB_TXN_FULL:
      return ENGRAM_ETOOBIG;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_BAD_TXN: /* an earlier call in the transaction met a damaged page */
    case MDB_CURSOR_FULL:
    case MDB_PAGE_FULL:
    case MDB_INCOMPATIBLE:
      return ENGRAM_ECORRUPT;
    case MDB_VERSION_MISMATCH:
      return ENGRAM_EVERSION;
    case MDB_BAD_VALSIZE:
      return ENGRAM_ETOOBIG;
    case MDB_MAP_RESIZED:
      return LOG_EMAPRESIZED;
    default:
      if (rc > 0) return err_from_errno(rc);
      return ENGRAM_EINTERNAL;
  }
}

const char *log_mdb_text(int rc) {
  static __thread char buf[256];
  if (log_err_mdb(rc) != ENGRAM_ECORRUPT) return mdb_strerror(rc);
  snprintf(buf, sizeof buf,
           "data.mdb is damaged (LMDB: %s); run `engram verify` and restore from a backup",
           mdb_strerror(rc));
  return buf;
}

int64_t log_now_ns(const engram *log) {
  if (log && log->opts.clock_ns) return log->opts.clock_ns(log->opts.clock_ctx);
  return clock_realtime_ns();
}

/* Makes directory entries durable: LMDB never fsyncs the directory it creates files in. */
static int fsync_path(const char *path, int flags) {
  int fd = open(path, flags | O_CLOEXEC);
  if (fd < 0) return -errno;
  int rc = fsync(fd) < 0 ? -errno : 0;
  close(fd);
  return rc;
}

static int parent_dir(const char *path, char *out, size_t cap) {
  const char *slash = strrchr(path, '/');
  if (!slash) return snprintf(out, cap, ".") >= (int)cap ? -1 : 0;
  size_t n = (size_t)(slash - path);
  if (n == 0) n = 1;
  if (n >= cap) return -1;
  memcpy(out, path, n);
  out[n] = '\0';
  return 0;
}

static int dir_is_empty(const char *path) {
  DIR *d = opendir(path);
  if (!d) return -1;
  struct dirent *e;
  int empty = 1;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
      empty = 0;
      break;
    }
  }
  closedir(d);
  return empty;
}

int log_rmtree(const char *path) {
  DIR *d = opendir(path);
  if (!d) return unlink(path) == 0 || errno == ENOENT ? 0 : -errno;
  struct dirent *e;
  char sub[4096];
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
    struct stat st;
    if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
      log_rmtree(sub);
    else
      unlink(sub);
  }
  closedir(d);
  return rmdir(path) == 0 ? 0 : -errno;
}

static unsigned int env_flags_for(engram_durability d) {
  unsigned int f = MDB_NOTLS | MDB_NORDAHEAD;
  if (d == ENGRAM_DURABILITY_ASYNC)
    f |= MDB_NOSYNC;
  else
    f |= MDB_NOMETASYNC; /* sync mode forces the meta page itself, see commit.c */
  return f;
}

/* LMDB maps lock.mdb and writes through the mapping; on a full disk (tmpfs especially)
 * touching an unbacked page of it kills the process with SIGBUS. Allocating the file's
 * blocks first turns that into a clean ENOSPC. */
static int prepare_lockfile(const char *dir) {
  char f[4200];
  snprintf(f, sizeof f, "%s/lock.mdb", dir);
  int fd = open(f, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return err_from_errno(errno);
  int rc = posix_fallocate(fd, 0, 128 * 1024);
  close(fd);
  return rc ? err_from_errno(rc) : 0;
}

static int env_make(const char *dir, const engram_options *o, unsigned int flags, MDB_env **out) {
  MDB_env *env;
  int prc = prepare_lockfile(dir);
  if (prc) return prc;
  int rc = mdb_env_create(&env);
  if (rc) return log_err_mdb(rc);
  mdb_env_set_maxdbs(env, o->max_topics + 32);
  mdb_env_set_maxreaders(env, 512);
  rc = mdb_env_set_mapsize(env, o->map_size);
  if (!rc) rc = mdb_env_open(env, dir, flags, 0644);
  if (rc) {
    mdb_env_close(env);
    return rc == MDB_INVALID || rc == MDB_VERSION_MISMATCH ? log_err_mdb(rc) : log_err_mdb(rc);
  }
  *out = env;
  return 0;
}

/* Writes the meta records of a brand-new log and forces them to disk. */
static int meta_init(MDB_env *env, int64_t now) {
  MDB_txn *txn;
  MDB_dbi dbi;
  int rc = mdb_txn_begin(env, NULL, 0, &txn);
  if (rc) return log_err_mdb(rc);
  rc = mdb_dbi_open(txn, LOG_DB_META, MDB_CREATE, &dbi);
  unsigned char ver[4], id[16], ts[8];
  be32_put(ver, ENGRAM_FORMAT_VERSION);
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || read(fd, id, sizeof id) != (ssize_t)sizeof id) {
    for (size_t i = 0; i < sizeof id; i++)
      id[i] = (unsigned char)(now >> (i % 8) * 8) ^ (unsigned char)i;
  }
  if (fd >= 0) close(fd);
  be64_put(ts, (uint64_t)now);
  struct {
    const char *k;
    void *v;
    size_t n;
  } kv[] = {{"format_version", ver, 4}, {"log_id", id, 16}, {"created_ns", ts, 8}};
  for (size_t i = 0; !rc && i < 3; i++) {
    MDB_val k = {strlen(kv[i].k), (void *)kv[i].k}, v = {kv[i].n, kv[i].v};
    rc = mdb_put(txn, dbi, &k, &v, 0);
  }
  if (rc) {
    mdb_txn_abort(txn);
    return log_err_mdb(rc);
  }
  rc = mdb_txn_commit(txn);
  if (!rc) rc = mdb_env_sync(env, 1);
  return log_err_mdb(rc);
}

/* Creates a log crash-safely: build it in a temporary directory beside the target, force
 * it and the directory to disk, then rename it into place. A crash leaves either no log
 * or a complete one (plus, at worst, a stray temporary directory). */
static int log_create(const char *path, const engram_options *o, int64_t now) {
  char parent[4096], tmp[4200];
  if (parent_dir(path, parent, sizeof parent) < 0) return ENGRAM_EINVAL;
  snprintf(tmp, sizeof tmp, "%s.creating.%ld.%lx", path, (long)getpid(),
           (unsigned long)(clock_monotonic_ns() & 0xffffffff));
  if (mkdir(tmp, 0755) < 0) return err_from_errno(errno);
  MDB_env *env;
  int rc = env_make(tmp, o, MDB_NOTLS, &env);
  if (rc == 0) {
    rc = meta_init(env, now);
    mdb_env_close(env);
  }
  char f[4300];
  snprintf(f, sizeof f, "%s/data.mdb", tmp);
  if (rc == 0 && fsync_path(f, O_RDONLY) < 0) rc = ENGRAM_EIO;
  snprintf(f, sizeof f, "%s/lock.mdb", tmp);
  unlink(f); /* the lock file is recreated at open; it holds no data */
  if (rc == 0 && fsync_path(tmp, O_RDONLY | O_DIRECTORY) < 0) rc = ENGRAM_EIO;
  if (rc == 0 && rename(tmp, path) < 0) {
    /* Another process created it first: theirs wins. */
    rc = (errno == EEXIST || errno == ENOTEMPTY) ? 0 : err_from_errno(errno);
  }
  if (rc == 0 && fsync_path(parent, O_RDONLY | O_DIRECTORY) < 0) rc = ENGRAM_EIO;
  log_rmtree(tmp);
  return rc;
}

static int read_meta(engram *log) {
  MDB_txn *txn;
  int rc = mdb_txn_begin(log->env, NULL, MDB_RDONLY, &txn);
  if (rc) return log_err_mdb(rc);
  MDB_val k = {14, "format_version"}, v;
  rc = mdb_get(txn, log->db_meta, &k, &v);
  int out = 0;
  if (rc || v.mv_size != 4)
    out =
        log_error(log, ENGRAM_ECORRUPT, "open %s: no format version: not an engram log", log->path);
  else if (be32_get(v.mv_data) != ENGRAM_FORMAT_VERSION)
    out = log_error(log, ENGRAM_EVERSION, "open %s: on-disk format %u, this build reads %u",
                    log->path, be32_get(v.mv_data), ENGRAM_FORMAT_VERSION);
  mdb_txn_abort(txn);
  return out;
}

static int open_core_dbs(engram *log) {
  MDB_txn *txn;
  int rc = mdb_txn_begin(log->env, NULL, 0, &txn);
  if (rc) return log_err_mdb(rc);
  struct {
    const char *name;
    MDB_dbi *dbi;
  } dbs[] = {{LOG_DB_META, &log->db_meta},
             {LOG_DB_TOPICS, &log->db_topics},
             {LOG_DB_IDEM, &log->db_idem},
             {LOG_DB_DICTS, &log->db_dicts}};
  for (size_t i = 0; !rc && i < sizeof dbs / sizeof dbs[0]; i++)
    rc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbs[i].dbi);
  if (rc) {
    mdb_txn_abort(txn);
    return log_err_mdb(rc);
  }
  return log_err_mdb(mdb_txn_commit(txn));
}

/* Opens every named database that exists, so their handles are valid in every later
 * transaction of this process (LMDB ties a handle to transactions begun after it). */
static int open_all_dbs(engram *log) {
  MDB_txn *txn;
  int rc = mdb_txn_begin(log->env, NULL, MDB_RDONLY, &txn);
  if (rc) return log_err_mdb(rc);
  MDB_dbi main;
  MDB_cursor *c;
  rc = mdb_dbi_open(txn, NULL, 0, &main);
  if (!rc) rc = mdb_cursor_open(txn, main, &c);
  if (rc) {
    mdb_txn_abort(txn);
    return log_err_mdb(rc);
  }
  MDB_val k, v;
  int op = MDB_FIRST;
  while (mdb_cursor_get(c, &k, &v, op) == 0) {
    op = MDB_NEXT;
    char name[ENGRAM_MAX_NAME + 8];
    if (k.mv_size == 0 || k.mv_size >= sizeof name) continue;
    memcpy(name, k.mv_data, k.mv_size);
    name[k.mv_size] = '\0';
    if (memchr(name, '\0', k.mv_size)) continue;
    int topic = !strncmp(name, LOG_TOPIC_DB_PREFIX, 2);
    MDB_dbi dbi;
    if (mdb_dbi_open(txn, name, topic ? MDB_INTEGERKEY : 0, &dbi) != 0) continue;
    if (topic) {
      log_topic_cache_add(log, name + 2, dbi);
    } else if (log->n_aux < LOG_MAX_AUX && strlen(name) < sizeof log->aux[0].name) {
      snprintf(log->aux[log->n_aux].name, sizeof log->aux[0].name, "%s", name);
      log->aux[log->n_aux++].dbi = dbi;
    }
  }
  mdb_cursor_close(c);
  return log_err_mdb(mdb_txn_commit(txn));
}

static void fill_defaults(engram_options *o) {
  if (!o->map_size) o->map_size = 1ull << 30;
  if (o->map_size < (1u << 20)) o->map_size = 1u << 20;
  if (!o->max_topics) o->max_topics = 1024;
  if (!o->dedup_window_ms) o->dedup_window_ms = 600000;
  if (!o->flush_interval_ms) o->flush_interval_ms = 1000;
}

int engram_open(const char *path, const engram_options *opts, engram **out) {
  if (!out) return log_error(NULL, ENGRAM_EINVAL, "open: out is NULL");
  *out = NULL;
  if (!path || !*path || strlen(path) > 3800)
    return log_error(NULL, ENGRAM_EINVAL, "open: invalid path");
  engram_options o = opts ? *opts : (engram_options){0};
  if ((unsigned)o.durability > ENGRAM_DURABILITY_ASYNC)
    return log_error(NULL, ENGRAM_EINVAL, "open %s: unknown durability mode %d", path,
                     o.durability);
  if (o.max_topics > 100000)
    return log_error(NULL, ENGRAM_EINVAL, "open %s: max_topics %u over 100000", path, o.max_topics);
  fill_defaults(&o);

  char f[4096];
  snprintf(f, sizeof f, "%s/data.mdb", path);
  struct stat st;
  if (stat(f, &st) < 0) {
    if (o.flags & ENGRAM_OPEN_NOCREATE)
      return log_error(NULL, ENGRAM_ENOTFOUND, "open %s: no log there", path);
    if (stat(path, &st) == 0 && (!S_ISDIR(st.st_mode) || dir_is_empty(path) != 1))
      return log_error(NULL, ENGRAM_EEXIST,
                       "open %s: exists and is not an empty directory or a log", path);
    int64_t now = o.clock_ns ? o.clock_ns(o.clock_ctx) : clock_realtime_ns();
    int rc = log_create(path, &o, now);
    if (rc) return log_error(NULL, rc, "open %s: cannot create: %s", path, engram_strerror(rc));
  }

  engram *log = calloc(1, sizeof *log);
  if (!log) return log_error(NULL, ENGRAM_ENOMEM, "open: out of memory");
  log->path = strdup(path);
  log->opts = o;
  log->env_flags = env_flags_for(o.durability);
  pthread_rwlock_init(&log->map_lock, NULL);
  pthread_mutex_init(&log->aux_mu, NULL);
  pthread_mutex_init(&log->dbi_mu, NULL);
  pthread_mutex_init(&log->mu, NULL);
  pthread_cond_init(&log->cv, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&log->append_cv, &ca);
  pthread_cond_init(&log->flush_cv, &ca);
  pthread_condattr_destroy(&ca);
  log->owner_pid = getpid();

  int rc = env_make(path, &o, log->env_flags, &log->env);
  if (rc) {
    rc = log_error(log, rc, "open %s: %s", path, engram_strerror(rc));
    goto fail;
  }
  int dead = 0;
  mdb_reader_check(log->env, &dead); /* clear slots of readers that died */
  /* The map may have grown in another process since the file was made. */
  mdb_env_set_mapsize(log->env, 0);
  rc = open_core_dbs(log);
  if (rc) {
    rc = log_error(log, rc, "open %s: %s", path, engram_strerror(rc));
    goto fail;
  }
  rc = read_meta(log);
  if (rc) goto fail;
  rc = open_all_dbs(log);
  if (rc) {
    rc = log_error(log, rc, "open %s: %s", path, engram_strerror(rc));
    goto fail;
  }
  rc = log_commit_start(log);
  if (rc) {
    rc = log_error(log, rc, "open %s: cannot start flusher", path);
    goto fail;
  }
  if (log_attach_hook) log_attach_hook(log);
  *out = log;
  log_error_clear(log);
  return 0;
fail:
  engram_close(log);
  return rc;
}

void engram_close(engram *log) {
  if (!log) return;
  if (log->remote) {
    log->remote->close(log);
    return;
  }
  if (log->env && log_detach_hook) log_detach_hook(log);
  log_pipe_stop(log);
  log_commit_stop(log);
  if (log->env) {
    if (log->dirty) mdb_env_sync(log->env, 1);
    mdb_env_close(log->env);
  }
  log_codec_caches_free(log);
  log_topic_cache_free(log);
  while (log->train) {
    struct log_touched *t = log->train;
    log->train = t->next;
    free(t);
  }
  pthread_rwlock_destroy(&log->map_lock);
  pthread_mutex_destroy(&log->aux_mu);
  pthread_mutex_destroy(&log->dbi_mu);
  pthread_mutex_destroy(&log->mu);
  pthread_cond_destroy(&log->cv);
  pthread_cond_destroy(&log->append_cv);
  pthread_cond_destroy(&log->flush_cv);
  free(log->path);
  free(log);
}

int engram_sync(engram *log) {
  if (!log) return ENGRAM_EINVAL;
  if (log->remote) return log->remote->sync(log);
  int rc = mdb_env_sync(log->env, 1);
  if (rc) return log_error(log, log_err_mdb(rc), "sync: %s", log_mdb_text(rc));
  pthread_mutex_lock(&log->mu);
  log->dirty = 0;
  pthread_mutex_unlock(&log->mu);
  return 0;
}

int engram_backup(engram *log, const char *dest) {
  if (!log || !dest || !*dest) return log_error(log, ENGRAM_EINVAL, "backup: no destination");
  if (log->remote) return log->remote->backup(log, dest);
  struct stat st;
  if (stat(dest, &st) == 0) {
    if (!S_ISDIR(st.st_mode) || dir_is_empty(dest) != 1)
      return log_error(log, ENGRAM_EEXIST, "backup %s: exists and is not empty", dest);
  } else if (mkdir(dest, 0755) < 0) {
    return log_error(log, err_from_errno(errno), "backup %s: %s", dest, strerror(errno));
  }
  pthread_rwlock_rdlock(&log->map_lock);
  int rc = mdb_env_copy2(log->env, dest, MDB_CP_COMPACT);
  pthread_rwlock_unlock(&log->map_lock);
  if (rc) {
    char f[4200];
    snprintf(f, sizeof f, "%s/data.mdb", dest);
    unlink(f);
    return log_error(log, log_err_mdb(rc), "backup %s: %s", dest, log_mdb_text(rc));
  }
  char f[4200], parent[4096];
  snprintf(f, sizeof f, "%s/data.mdb", dest);
  if (fsync_path(f, O_RDONLY) < 0 || fsync_path(dest, O_RDONLY | O_DIRECTORY) < 0)
    return log_error(log, ENGRAM_EIO, "backup %s: cannot flush copy", dest);
  if (parent_dir(dest, parent, sizeof parent) == 0) fsync_path(parent, O_RDONLY | O_DIRECTORY);
  return 0;
}

static __thread MDB_txn *tls_read_txn;

MDB_txn *log_read_txn_of_thread(void) { return tls_read_txn; }

int log_read_begin(engram *log, MDB_txn **txn) {
  for (;;) {
    pthread_rwlock_rdlock(&log->map_lock);
    int rc = mdb_txn_begin(log->env, NULL, MDB_RDONLY, txn);
    if (rc == 0) {
      tls_read_txn = *txn;
      return 0;
    }
    pthread_rwlock_unlock(&log->map_lock);
    if (rc == MDB_MAP_RESIZED) {
      log_map_adopt(log);
      continue;
    }
    if (rc == MDB_READERS_FULL) {
      int dead = 0;
      mdb_reader_check(log->env, &dead);
      if (dead) continue;
    }
    return log_error(log, log_err_mdb(rc), "read: %s", log_mdb_text(rc));
  }
}

void log_read_end(engram *log, MDB_txn *txn) {
  if (txn == tls_read_txn) tls_read_txn = NULL;
  if (txn) mdb_txn_abort(txn);
  pthread_rwlock_unlock(&log->map_lock);
}

int log_disk_nearly_full(const engram *log) {
  struct statvfs st;
  if (statvfs(log->path, &st) != 0) return 0;
  return (uint64_t)st.f_bavail * st.f_frsize < (8u << 20);
}

/* Another process grew the map: adopt its size. */
void log_map_adopt(engram *log) {
  pthread_rwlock_wrlock(&log->map_lock);
  mdb_env_set_mapsize(log->env, 0);
  pthread_rwlock_unlock(&log->map_lock);
}

/* Doubles the map. Called by the commit leader with no transaction open. */
int log_map_grow(engram *log) {
  pthread_rwlock_wrlock(&log->map_lock);
  MDB_envinfo info;
  mdb_env_info(log->env, &info);
  size_t want = info.me_mapsize * 2;
  int rc = mdb_env_set_mapsize(log->env, want);
  pthread_rwlock_unlock(&log->map_lock);
  return rc ? log_err_mdb(rc) : 0;
}

int log_aux_dbi(engram *log, const char *name, unsigned int flags, MDB_dbi *out) {
  pthread_mutex_lock(&log->aux_mu);
  for (int i = 0; i < log->n_aux; i++) {
    if (!strcmp(log->aux[i].name, name)) {
      *out = log->aux[i].dbi;
      pthread_mutex_unlock(&log->aux_mu);
      return 0;
    }
  }
  pthread_mutex_unlock(&log->aux_mu);
  int rc = log_open_dbi(log, name, flags, out);
  if (rc) return rc;
  pthread_mutex_lock(&log->aux_mu);
  if (log->n_aux < LOG_MAX_AUX) {
    snprintf(log->aux[log->n_aux].name, sizeof log->aux[0].name, "%s", name);
    log->aux[log->n_aux].dbi = *out;
    log->n_aux++;
  }
  pthread_mutex_unlock(&log->aux_mu);
  return 0;
}

/* Opens (creating) a named database in a transaction of its own, so the handle is
 * shared by every later transaction. Creation goes through the commit path. */
static int create_dbi_job(log_wtx *w, void *arg) {
  struct log_dbi_req *r = arg;
  int rc = mdb_dbi_open(w->txn, r->name, r->flags | MDB_CREATE, &r->dbi);
  return rc ? log_err_mdb(rc) : 0;
}

int log_open_dbi(engram *log, const char *name, unsigned int flags, MDB_dbi *out) {
  /* Fast path: the database exists; open it in a read transaction and commit that so
   * the handle stays valid. */
  MDB_txn *txn;
  /* LMDB: a transaction that opens a handle must end before another may open one.
   * Lock order: dbi_mu, then map_lock. */
  pthread_mutex_lock(&log->dbi_mu);
  int rc = log_read_begin(log, &txn);
  if (rc) {
    pthread_mutex_unlock(&log->dbi_mu);
    return rc;
  }
  int mrc = mdb_dbi_open(txn, name, flags, out);
  if (mrc == 0) {
    if (tls_read_txn == txn) tls_read_txn = NULL;
    mrc = mdb_txn_commit(txn);
    pthread_mutex_unlock(&log->dbi_mu);
    pthread_rwlock_unlock(&log->map_lock);
    return mrc ? log_err_mdb(mrc) : 0;
  }
  log_read_end(log, txn);
  pthread_mutex_unlock(&log->dbi_mu);
  if (mrc != MDB_NOTFOUND)
    return log_error(log, log_err_mdb(mrc), "open database %s: %s", name, log_mdb_text(mrc));
  struct log_dbi_req r = {.name = name, .flags = flags};
  rc = log_write_solo(log, create_dbi_job, &r);
  if (rc < 0) return rc;
  *out = r.dbi;
  return 0;
}
