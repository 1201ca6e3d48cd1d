/* env.c — opening, creating and closing a log: the LMDB environment and its lifecycle. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log/log_private.h"

static __thread char tls_err[512];

int log_error(const struct log *log, int code, const char *fmt, ...) {
  (void)log;
  /* Messages quote what the caller gave (names, types, paths): one line of valid UTF-8
   * whatever those held, so the CLI prints one line and bindings can decode it. */
  char raw[sizeof tls_err];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(raw, sizeof raw, fmt, ap);
  va_end(ap);
  text_one_line(tls_err, sizeof tls_err, raw);
  return code;
}

void log_error_clear(const struct log *log) {
  (void)log;
  tls_err[0] = '\0';
}

const char *log_errmsg(const struct log *log) {
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
    case MDB_MAP_RESIZED: /* adopted where met (read_start, commit.c); left over: retry */
      return ENGRAM_EBUSY;
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

int64_t log_now_ns(const struct log *log) {
  if (log && log->opts.clock_ns) return log->opts.clock_ns(log->opts.clock_ctx);
  int64_t t;
  if (clock_test_file_ns(&t)) return t; /* tests only: ENGRAM_TEST_CLOCK_FILE */
  return clock_realtime_ns();
}

/* Makes directory entries durable: LMDB never fsyncs the directory it creates files in. */
int log_fsync_path(const char *path, int flags) {
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

/* The path a log is known by: trailing slashes stripped ("logs/a/" is "logs/a") and a
 * last component "." or ".." resolved, so that the temporary directory of a creation,
 * named after the path, lands beside the target and never inside it. */
static int norm_path(const char *in, char *out, size_t cap) {
  size_t n = strlen(in);
  while (n > 1 && in[n - 1] == '/') n--;
  if (n >= cap) return -1;
  memcpy(out, in, n);
  out[n] = '\0';
  const char *base = strrchr(out, '/');
  base = base ? base + 1 : out;
  if (strcmp(base, ".") && strcmp(base, "..")) return 0;
  char *real = realpath(out, NULL);
  if (!real) return 0; /* reported by the checks that follow */
  int fits = strlen(real) < cap;
  if (fits) snprintf(out, cap, "%s", real);
  free(real);
  return fits ? 0 : -1;
}

/* errno of a failed file operation while opening, as an engram code: a read-only file
 * system refuses access like a permission does. */
int log_open_errno(int e) { return e == EROFS ? ENGRAM_EDENIED : err_from_errno(e); }

/* What to do about a failed file operation while opening. */
const char *log_open_advice(int e) {
  switch (e) {
    case EROFS:
      return "the file system is read-only: only reading is possible (engram's read "
             "commands and ENGRAM_OPEN_RDONLY open the log read-only)";
    case EACCES:
    case EPERM:
      return "this user may not write there: run as the log's owner; reading works "
             "read-only (engram's read commands, ENGRAM_OPEN_RDONLY)";
    case ENOSPC:
    case EDQUOT:
      return "the disk is full: free space and retry";
    case ENOTDIR:
      return "a component of the path is a file, not a directory";
    case EMFILE:
      return "this process has as many files open as its limit allows: raise the limit "
             "(ulimit -n, LimitNOFILE=) or open fewer";
    case ENFILE:
      return "the system has as many files open as it allows: raise fs.file-max or close "
             "some";
    default:
      return "check the directory and the disk";
  }
}

/* Creation leaves "<path>.creating.<pid>.<hex>" beside the target while it runs (a few
 * milliseconds). One whose creator is gone (crashed, or killed) is removed: a creator is
 * gone when its process no longer exists and the directory is over a minute old (a
 * creator in another PID namespace looks dead to kill(); the minute keeps its work safe),
 * or, for a process id reused since, when the directory is older than any creation can
 * take. */
#define STALE_DEAD_S 60
#define STALE_CREATING_S (10 * 60)

static void clear_stale_creating(const char *path) {
  char parent[4096];
  if (parent_dir(path, parent, sizeof parent) < 0) return;
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  size_t blen = strlen(base);
  DIR *d = opendir(parent);
  if (!d) return;
  struct dirent *e;
  time_t now = time(NULL);
  while ((e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, base, blen) || strncmp(e->d_name + blen, ".creating.", 10)) continue;
    char *end;
    long pid = strtol(e->d_name + blen + 10, &end, 10);
    if (end == e->d_name + blen + 10 || *end != '.' || pid <= 0) continue;
    char sub[8300];
    snprintf(sub, sizeof sub, "%s/%s", parent, e->d_name);
    struct stat st;
    if (lstat(sub, &st) < 0 || !S_ISDIR(st.st_mode)) continue;
    int dead = log_pid_gone((int32_t)pid);
    long age = (long)(now - st.st_mtime);
    if ((dead && age > STALE_DEAD_S) || age > STALE_CREATING_S) log_rmtree(sub);
  }
  closedir(d);
}

static unsigned int env_flags_for(engram_durability d, int wal) {
  unsigned int f = MDB_NOTLS | MDB_NORDAHEAD;
  if (wal || d == ENGRAM_DURABILITY_ASYNC) /* wal.c flushes */
    f |= MDB_NOSYNC;
  else
    f |= MDB_NOMETASYNC; /* sync mode forces the meta page itself, see commit.c */
  return f;
}

int log_file_reserve(int fd, size_t size) {
  for (;;) {
    if (fallocate(fd, 0, 0, (off_t)size) == 0) return 0;
    if (errno != EINTR) break;
  }
  int e = errno;
  if (e != EOPNOTSUPP && e != ENOSYS) return -e;
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  if ((size_t)st.st_size < size && ftruncate(fd, (off_t)size) < 0) return -errno;
  return 0;
}

/* LMDB maps lock.mdb and writes through the mapping (see log_file_reserve): its blocks
 * are allocated first, so that a full disk is a clean ENOSPC. Returns 0 or -errno. */
static int prepare_lockfile(const char *dir) {
  char f[4200];
  snprintf(f, sizeof f, "%s/lock.mdb", dir);
  int fd = open(f, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return -errno;
  int rc = log_file_reserve(fd, 128 * 1024);
  close(fd);
  return rc;
}

/* The message of an LMDB environment that would not open; returns the engram code. */
static int env_open_error(const char *dir, int rc) {
  if (rc == MDB_INVALID)
    return log_error(NULL, ENGRAM_ECORRUPT,
                     "open %s: %s/data.mdb is not an LMDB data file (damaged, or not a log): "
                     "restore the log from a backup, or move the directory aside",
                     dir, dir);
  if (rc == MDB_VERSION_MISMATCH)
    return log_error(NULL, ENGRAM_EVERSION,
                     "open %s: %s/data.mdb was made by an incompatible LMDB version: open it "
                     "with the engram build that wrote it",
                     dir, dir);
  if (rc > 0)
    return log_error(NULL, log_open_errno(rc), "open %s: %s: %s", dir, strerror(rc),
                     log_open_advice(rc));
  return log_error(NULL, log_err_mdb(rc), "open %s: %s", dir, mdb_strerror(rc));
}

/* Opens the environment in `dir` with *flags. A read-write open first makes sure it may
 * write lock.mdb (see prepare_lockfile). A read-only open (MDB_RDONLY) lets LMDB use the
 * lock file as it documents: written when it can be, skipped on a read-only file system;
 * when the user may not write it (EACCES), the environment is opened with MDB_NOLOCK,
 * LMDB's other pure read-only mode, and *flags says so. */
static int env_make(const char *dir, const engram_options *o, unsigned int *flags, MDB_env **out) {
  if (!(*flags & MDB_RDONLY)) {
    int prc = prepare_lockfile(dir);
    if (prc)
      return log_error(NULL, log_open_errno(-prc), "open %s: cannot write %s/lock.mdb: %s: %s", dir,
                       dir, strerror(-prc), log_open_advice(-prc));
  }
  for (;;) {
    MDB_env *env;
    int rc = mdb_env_create(&env);
    if (rc) return env_open_error(dir, rc);
    mdb_env_set_maxdbs(env, o->max_topics + 32);
    mdb_env_set_maxreaders(env, 512);
    rc = mdb_env_set_mapsize(env, o->map_size);
    if (!rc) rc = mdb_env_open(env, dir, *flags, 0644);
    if (rc == 0) {
      *out = env;
      return 0;
    }
    mdb_env_close(env);
    if ((rc == EACCES || rc == EPERM) && (*flags & MDB_RDONLY) && !(*flags & MDB_NOLOCK)) {
      *flags |= MDB_NOLOCK;
      continue;
    }
    return env_open_error(dir, rc);
  }
}

/* Checks engram's format record in the meta database, inside a transaction of the
 * caller's. Returns 0 or an error with its message set. */
static int check_format(const char *dir, MDB_txn *txn, MDB_dbi meta) {
  MDB_val k = {14, "format_version"}, v;
  int rc = mdb_get(txn, meta, &k, &v);
  MDB_stat ms;
  if (rc && mdb_stat(txn, meta, &ms) == 0 && ms.ms_entries == 0)
    return log_error(NULL, ENGRAM_ECORRUPT,
                     "open %s: an empty environment without engram's format record, left by a "
                     "creation that went wrong in an older build: it holds no events; remove "
                     "%s/data.mdb and %s/lock.mdb to make a new log there",
                     dir, dir, dir);
  if (rc || v.mv_size != 4)
    return log_error(NULL, ENGRAM_ECORRUPT,
                     "open %s: the meta database has no engram format record: a damaged log "
                     "or not an engram log; restore the log from a backup",
                     dir);
  if (be32_get(v.mv_data) != ENGRAM_FORMAT_VERSION)
    return log_error(NULL, ENGRAM_EVERSION,
                     "open %s: on-disk format %u, this build reads %u: open it with an engram "
                     "build of format %u",
                     dir, be32_get(v.mv_data), ENGRAM_FORMAT_VERSION, be32_get(v.mv_data));
  return 0;
}

/* The error for an environment with no engram meta database: names a few of its
 * databases so the user recognises whose it is. */
static int foreign_error(const char *dir, MDB_txn *txn) {
  char names[160] = "";
  size_t used = 0;
  MDB_dbi main;
  MDB_cursor *c;
  if (mdb_dbi_open(txn, NULL, 0, &main) == 0 && mdb_cursor_open(txn, main, &c) == 0) {
    MDB_val k, v;
    int op = MDB_FIRST, n = 0;
    while (n < 4 && mdb_cursor_get(c, &k, &v, op) == 0) {
      op = MDB_NEXT;
      size_t len = k.mv_size < 32 ? k.mv_size : 32;
      int printable = len > 0;
      for (size_t i = 0; i < len; i++)
        if (((const unsigned char *)k.mv_data)[i] < 0x20 ||
            ((const unsigned char *)k.mv_data)[i] > 0x7e)
          printable = 0;
      if (!printable) continue;
      int w = snprintf(names + used, sizeof names - used, "%s%.*s%s", n ? ", " : "", (int)len,
                       (const char *)k.mv_data, len < k.mv_size ? "..." : "");
      if (w < 0 || (size_t)w >= sizeof names - used) break;
      used += (size_t)w;
      n++;
    }
    mdb_cursor_close(c);
  }
  return log_error(NULL, ENGRAM_EEXIST,
                   "open %s: the directory holds an LMDB environment that is not an engram log "
                   "(no engram meta database%s%s): it was left unchanged; give engram a new or "
                   "empty directory",
                   dir, *names ? "; it holds: " : "", names);
}

/* Whether every page past the end of a data.mdb that ends before the pages its meta page
 * counts is free or parked: an earlier engram left the pages a commit took past
 * the end of the file and freed again unwritten (wal.c, cover_pages, now extends the file
 * over them), so its file could end short of them and be whole. Read in a child process:
 * LMDB trusts the pages it reads, and in a file that was cut short the free list's own
 * pages may lie past its end (a read there kills the reader with SIGBUS). Sanitizer
 * builds, which must not fork here (log/read.c), say no. Returns 1 or 0. */
static int short_but_whole(const char *dir, uint64_t have, uint64_t used) {
#if defined(__SANITIZE_ADDRESS__)
  (void)dir, (void)have, (void)used;
  return 0;
#else
  if (have >= used || used - have > (64u << 20)) return 0;
  pid_t pid = fork();
  if (pid < 0) return 0;
  if (pid == 0) {
    signal(SIGBUS, SIG_DFL);
    signal(SIGSEGV, SIG_DFL);
    size_t n = (size_t)(used - have);
    unsigned char *seen = calloc(n, 1);
    MDB_env *env;
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k, v;
    if (!seen || mdb_env_create(&env) || mdb_env_set_maxdbs(env, 4) ||
        mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS | MDB_NORDAHEAD, 0644) ||
        mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) || mdb_cursor_open(txn, 0, &c))
      _exit(1);
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      size_t len; /* an MDB_IDL: its length, then that many page numbers */
      if (v.mv_size < sizeof len) _exit(1);
      memcpy(&len, v.mv_data, sizeof len);
      if ((len + 1) * sizeof len > v.mv_size) _exit(1);
      for (size_t i = 1; i <= len; i++) {
        size_t pg;
        memcpy(&pg, (const char *)v.mv_data + i * sizeof pg, sizeof pg);
        if (pg >= have && pg < used) seen[pg - have] = 1;
      }
    }
    mdb_cursor_close(c);
    MDB_envinfo ei;
    MDB_stat st;
    MDB_dbi park;
    mdb_env_info(env, &ei);
    mdb_env_stat(env, &st);
    if (mdb_dbi_open(txn, LOG_DB_PARK, 0, &park) == 0 && mdb_cursor_open(txn, park, &c) == 0) {
      for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
           rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        uint64_t first = (uint64_t)((const char *)v.mv_data - LOG_PAGEHDRSZ -
                                    (const char *)ei.me_mapaddr) /
                         st.ms_psize,
                 pages = (v.mv_size + LOG_PAGEHDRSZ + st.ms_psize - 1) / st.ms_psize;
        for (uint64_t pg = first; pg < first + pages; pg++)
          if (pg >= have && pg < used) seen[pg - have] = 1;
      }
    }
    for (size_t i = 0; i < n; i++)
      if (!seen[i]) _exit(1);
    _exit(0);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return 0;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
#endif
}

/* mdb_txn_begin for the steps of an open and of a look at a log, which read and write
 * outside the commit path: when another process grew the map since this environment
 * took its size (MDB_MAP_RESIZED), the new size is adopted and the begin tried again.
 * `log` is NULL before the environment belongs to a handle (no other thread uses it). */
static int open_txn_begin(struct log *log, MDB_env *env, unsigned int flags, MDB_txn **txn) {
  for (;;) {
    int rc = mdb_txn_begin(env, NULL, flags, txn);
    if (rc != MDB_MAP_RESIZED) return rc;
    if (log)
      log_map_adopt(log);
    else if ((rc = mdb_env_set_mapsize(env, 0)))
      return rc;
  }
}

/* Decides, without writing a byte, whether `dir` holds an engram log of this format:
 * the environment is opened MDB_RDONLY | MDB_NOLOCK, so neither data.mdb nor lock.mdb
 * (nor its absence) is touched, which matters when the directory is someone else's.
 * Holding no reader slot, the read could meet pages a writer reuses, which needs two
 * commits after the one read: it is retried when the environment moved on that far.
 * Returns 0 for an engram log, ENGRAM_ENOTFOUND (no message) when there is no
 * data.mdb, else an error with its message set. */
static int probe(const char *dir) {
  char f[4200];
  snprintf(f, sizeof f, "%s/data.mdb", dir);
  struct stat st;
  if (stat(f, &st) < 0) {
    int e = errno;
    if (e == ENOENT) return ENGRAM_ENOTFOUND;
    return log_error(NULL, log_open_errno(e), "open %s: cannot reach %s: %s: %s", dir, f,
                     strerror(e), log_open_advice(e));
  }
  if (S_ISDIR(st.st_mode))
    return log_error(NULL, ENGRAM_EEXIST,
                     "open %s: %s is a directory, not a data file: this is not an engram log; "
                     "give engram a new or empty directory",
                     dir, f);
  if (!S_ISREG(st.st_mode))
    return log_error(NULL, ENGRAM_EEXIST,
                     "open %s: %s is not a regular file: this is not an engram log; give "
                     "engram a new or empty directory",
                     dir, f);
  if (st.st_size == 0)
    return log_error(NULL, ENGRAM_ECORRUPT,
                     "open %s: %s is empty (0 bytes): not a log, or a copy that was cut short; "
                     "restore the log from a backup, or move the directory aside to make a new "
                     "log there",
                     dir, f);
  for (int tries = 0;; tries++) {
    MDB_env *env;
    int rc = mdb_env_create(&env);
    if (rc) return env_open_error(dir, rc);
    mdb_env_set_maxdbs(env, 4);
    rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS | MDB_NORDAHEAD, 0644);
    if (rc) {
      mdb_env_close(env);
      return env_open_error(dir, rc);
    }
    MDB_envinfo info;
    MDB_stat ms;
    mdb_env_info(env, &info);
    mdb_env_stat(env, &ms);
    /* The size is taken after the meta page is read: a writer of another process grows
     * the file before it writes the meta page that covers the new pages, so a file still
     * shorter than that page says is cut short, not in the middle of a commit. */
    if (stat(f, &st) < 0) st.st_size = 0;
    if ((uint64_t)(info.me_last_pgno + 1) * ms.ms_psize > (uint64_t)st.st_size &&
        !short_but_whole(dir, (uint64_t)st.st_size / ms.ms_psize, info.me_last_pgno + 1)) {
      mdb_env_close(env);
      return log_error(NULL, ENGRAM_ECORRUPT,
                       "open %s: %s is truncated (%lld bytes, its pages need %llu): restore the "
                       "log from a backup",
                       dir, f, (long long)st.st_size,
                       (unsigned long long)(info.me_last_pgno + 1) * ms.ms_psize);
    }
    MDB_txn *txn;
    rc = open_txn_begin(NULL, env, MDB_RDONLY, &txn);
    if (rc) {
      mdb_env_close(env);
      return env_open_error(dir, rc);
    }
    size_t seen = mdb_txn_id(txn);
    MDB_dbi meta;
    int mrc = mdb_dbi_open(txn, LOG_DB_META, 0, &meta);
    if (mrc == 0)
      rc = check_format(dir, txn, meta);
    else if (mrc == MDB_NOTFOUND || mrc == MDB_INCOMPATIBLE)
      rc = foreign_error(dir, txn);
    else
      rc = env_open_error(dir, mrc);
    mdb_txn_abort(txn);
    mdb_env_info(env, &info);
    mdb_env_close(env);
    if (info.me_last_txnid <= seen + 1 || tries >= 8) return rc;
  }
}

/* A new log id: 16 random bytes (from the time if /dev/urandom cannot be read). */
static void make_id(unsigned char id[16], int64_t now) {
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || read(fd, id, 16) != 16) {
    for (size_t i = 0; i < 16; i++)
      id[i] = (unsigned char)(now >> (i % 8) * 8) ^ (unsigned char)(i * 37 + getpid());
  }
  if (fd >= 0) close(fd);
}

/* Writes the meta records and the log's own databases of a brand-new log and forces
 * them to disk. */
static int meta_init(MDB_env *env, int64_t now, uint32_t max_topics) {
  MDB_txn *txn;
  MDB_dbi dbi;
  int rc = mdb_txn_begin(env, NULL, 0, &txn);
  if (rc) return log_err_mdb(rc);
  const char *own[] = {LOG_DB_TOPICS, LOG_DB_IDEM, LOG_DB_DICTS};
  for (size_t i = 0; !rc && i < sizeof own / sizeof own[0]; i++)
    rc = mdb_dbi_open(txn, own[i], MDB_CREATE, &dbi);
  if (!rc) rc = mdb_dbi_open(txn, LOG_DB_META, MDB_CREATE, &dbi);
  unsigned char ver[4], id[16], ts[8], mt[4];
  be32_put(ver, ENGRAM_FORMAT_VERSION);
  make_id(id, now);
  be64_put(ts, (uint64_t)now);
  be32_put(mt, max_topics);
  struct {
    const char *k;
    void *v;
    size_t n;
  } kv[] = {{"format_version", ver, 4},
            {"log_id", id, 16},
            {"created_ns", ts, 8},
            {LOG_META_MAX_TOPICS, mt, 4}};
  for (size_t i = 0; !rc && i < sizeof kv / sizeof kv[0]; i++) {
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
 * or a complete one (plus, at worst, a temporary directory that a later open removes).
 * When the rename finds the target no longer empty, another process may have created
 * the log first: that counts as success only if what is there now is an engram log.
 * Returns 0 or an error with its message set. */
static int log_create(const char *path, const engram_options *o, int64_t now) {
  char parent[4096], tmp[4200];
  if (parent_dir(path, parent, sizeof parent) < 0)
    return log_error(NULL, ENGRAM_EINVAL, "open %s: path too long", path);
  snprintf(tmp, sizeof tmp, "%s.creating.%ld.%lx", path, (long)getpid(),
           (unsigned long)(clock_monotonic_ns() & 0xffffffff));
  if (mkdir(tmp, 0755) < 0) {
    int e = errno;
    return log_error(NULL, log_open_errno(e), "open %s: cannot create a log in %s: %s: %s", path,
                     parent, strerror(e), log_open_advice(e));
  }
  MDB_env *env;
  unsigned int flags = MDB_NOTLS;
  int rc = env_make(tmp, o, &flags, &env);
  if (rc == 0) {
    rc = meta_init(env, now, o->max_topics);
    mdb_env_close(env);
    if (rc) rc = log_error(NULL, rc, "open %s: cannot create: %s", path, engram_strerror(rc));
  }
  char f[4300];
  int frc;
  snprintf(f, sizeof f, "%s/data.mdb", tmp);
  if (rc == 0 && (frc = log_fsync_path(f, O_RDONLY)) < 0)
    rc = log_error(NULL, log_open_errno(-frc), "open %s: cannot flush the new log: %s", path,
                   strerror(-frc));
  snprintf(f, sizeof f, "%s/lock.mdb", tmp);
  unlink(f); /* the lock file is recreated at open; it holds no data */
  if (rc == 0 && (frc = log_fsync_path(tmp, O_RDONLY | O_DIRECTORY)) < 0)
    rc = log_error(NULL, log_open_errno(-frc), "open %s: cannot flush the new log: %s", path,
                   strerror(-frc));
  if (rc == 0 && rename(tmp, path) < 0) {
    int e = errno;
    if (e == EEXIST || e == ENOTEMPTY) {
      rc = probe(path);
      if (rc == ENGRAM_ENOTFOUND)
        rc = log_error(NULL, ENGRAM_EEXIST,
                       "open %s: files appeared in the directory while the log was being "
                       "created, and they are no log: give engram a new or empty directory",
                       path);
    } else {
      rc = log_error(NULL, log_open_errno(e), "open %s: cannot move the new log into place: %s: %s",
                     path, strerror(e), log_open_advice(e));
    }
  }
  if (rc == 0 && (frc = log_fsync_path(parent, O_RDONLY | O_DIRECTORY)) < 0)
    rc = log_error(NULL, log_open_errno(-frc), "open %s: cannot flush %s: %s", path, parent,
                   strerror(-frc));
  log_rmtree(tmp);
  return rc;
}

/* What the log in env says of its topics: the max_topics it keeps (0 for a log made
 * before it kept one) and how many topics it has, each of which needs one of this
 * process's handle slots (the log's own databases take at most 32 more). */
static int env_topic_room(MDB_env *env, uint32_t *stored, uint64_t *topics) {
  *stored = 0;
  *topics = 0;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_stat st;
  int rc = open_txn_begin(NULL, env, MDB_RDONLY, &txn);
  if (rc) return rc;
  if (mdb_dbi_open(txn, LOG_DB_TOPICS, 0, &dbi) == 0 && mdb_stat(txn, dbi, &st) == 0)
    *topics = st.ms_entries;
  MDB_val k = {strlen(LOG_META_MAX_TOPICS), LOG_META_MAX_TOPICS}, v;
  if (mdb_dbi_open(txn, LOG_DB_META, 0, &dbi) == 0 && mdb_get(txn, dbi, &k, &v) == 0 &&
      v.mv_size == 4)
    *stored = be32_get(v.mv_data);
  mdb_txn_abort(txn);
  return 0;
}

/* Keeps max_topics in the log when it is more than the log keeps (another process may
 * have raised it meanwhile: the larger stays). Returns 0 or an LMDB code. */
static int raise_max_topics(struct log *log, uint32_t max_topics) {
  MDB_txn *txn;
  int rc = open_txn_begin(log, log->env, 0, &txn);
  if (rc) return rc;
  MDB_val k = {strlen(LOG_META_MAX_TOPICS), LOG_META_MAX_TOPICS}, v;
  if (mdb_get(txn, log->db_meta, &k, &v) == 0 && v.mv_size == 4 &&
      be32_get(v.mv_data) >= max_topics) {
    mdb_txn_abort(txn);
    return 0;
  }
  unsigned char mt[4];
  be32_put(mt, max_topics);
  MDB_val nv = {4, mt};
  if ((rc = mdb_put(txn, log->db_meta, &k, &nv, 0))) {
    mdb_txn_abort(txn);
    return rc;
  }
  return mdb_txn_commit(txn);
}

/* Gives a log made before log ids its id, in one write transaction (another process
 * opening it at the same time may have done so first: its id is kept). Returns 0 or an
 * LMDB code. */
static int give_id(struct log *log) {
  MDB_txn *txn;
  int rc = open_txn_begin(log, log->env, 0, &txn);
  if (rc) return rc;
  MDB_val ik = {6, "log_id"}, ck = {10, "created_ns"}, v;
  if (mdb_get(txn, log->db_meta, &ik, &v) == 0 && v.mv_size == 16) {
    memcpy(log->id, v.mv_data, 16);
    mdb_txn_abort(txn);
    return 0;
  }
  unsigned char id[16], ts[8];
  int64_t now = clock_realtime_ns();
  make_id(id, now);
  MDB_val nv = {16, id};
  rc = mdb_put(txn, log->db_meta, &ik, &nv, 0);
  if (!rc && !log->created_ns) {
    /* Not known: the creation time of a log without one is the time it got its id. */
    be64_put(ts, (uint64_t)now);
    MDB_val tv = {8, ts};
    rc = mdb_put(txn, log->db_meta, &ck, &tv, 0);
  }
  if (rc) {
    mdb_txn_abort(txn);
    return rc;
  }
  if ((rc = mdb_txn_commit(txn))) return rc;
  memcpy(log->id, id, 16);
  if (!log->created_ns) log->created_ns = now;
  return 0;
}

int log_info(struct log *log, engram_log_info *out) {
  static const char hex[] = "0123456789abcdef";
  static const unsigned char none[16];
  memset(out, 0, sizeof *out);
  if (memcmp(log->id, none, 16))
    for (size_t i = 0; i < 16; i++) {
      out->id[2 * i] = hex[log->id[i] >> 4];
      out->id[2 * i + 1] = hex[log->id[i] & 15];
    }
  out->created_ns = log->created_ns;
  out->format_version = ENGRAM_FORMAT_VERSION;
  return 0;
}

/* Opens the log's own databases. The format record is checked in a read transaction
 * before anything else, so nothing is ever written into an environment that is not an
 * engram log. The other databases exist from creation on; a write transaction makes
 * them only for a log created by an older build and never opened since. */
static int open_core_dbs(struct log *log) {
  MDB_txn *txn;
  int rc = open_txn_begin(log, log->env, MDB_RDONLY, &txn);
  if (rc) return env_open_error(log->path, rc);
  rc = mdb_dbi_open(txn, LOG_DB_META, 0, &log->db_meta);
  if (rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE) {
    rc = foreign_error(log->path, txn);
    mdb_txn_abort(txn);
    return rc;
  }
  if (rc == 0)
    rc = check_format(log->path, txn, log->db_meta);
  else
    rc = env_open_error(log->path, rc);
  if (rc) {
    mdb_txn_abort(txn);
    return rc;
  }
  /* The log's identity. Logs made before ids were written get one at their next
   * read-write open (below); a read-only handle of such a log reports none. */
  MDB_val ik = {6, "log_id"}, ck = {10, "created_ns"}, iv, cv;
  int need_id = mdb_get(txn, log->db_meta, &ik, &iv) != 0 || iv.mv_size != 16;
  if (!need_id) memcpy(log->id, iv.mv_data, 16);
  if (mdb_get(txn, log->db_meta, &ck, &cv) == 0 && cv.mv_size == 8)
    log->created_ns = (int64_t)be64_get(cv.mv_data);
  struct {
    const char *name;
    MDB_dbi *dbi;
  } dbs[] = {{LOG_DB_TOPICS, &log->db_topics},
             {LOG_DB_IDEM, &log->db_idem},
             {LOG_DB_DICTS, &log->db_dicts}};
  size_t n = sizeof dbs / sizeof dbs[0];
  int missing = 0;
  for (size_t i = 0; !rc && i < n; i++) {
    rc = mdb_dbi_open(txn, dbs[i].name, 0, dbs[i].dbi);
    if (rc == MDB_NOTFOUND) {
      missing = 1;
      rc = 0;
    }
  }
  if (rc) {
    mdb_txn_abort(txn);
    return env_open_error(log->path, rc);
  }
  if ((rc = mdb_txn_commit(txn))) return env_open_error(log->path, rc);
  if (need_id && !(log->env_flags & MDB_RDONLY) && (rc = give_id(log)))
    return env_open_error(log->path, rc);
  if (!missing) return 0;
  if (log->env_flags & MDB_RDONLY)
    return log_error(NULL, ENGRAM_ENOTSUP,
                     "open %s read-only: this log has never been opened for writing and lacks "
                     "databases a read needs: open it read-write once",
                     log->path);
  if ((rc = open_txn_begin(log, log->env, 0, &txn))) return env_open_error(log->path, rc);
  for (size_t i = 0; !rc && i < n; i++) rc = mdb_dbi_open(txn, dbs[i].name, MDB_CREATE, dbs[i].dbi);
  if (rc) {
    mdb_txn_abort(txn);
    return env_open_error(log->path, rc);
  }
  if ((rc = mdb_txn_commit(txn))) return env_open_error(log->path, rc);
  return 0;
}

/* The cached handle of an upper layer's database: 1 when found. */
static int aux_find(struct log *log, const char *name, MDB_dbi *out) {
  int found = 0;
  pthread_mutex_lock(&log->aux_mu);
  for (int i = 0; i < log->n_aux && !found; i++) {
    if (!strcmp(log->aux[i].name, name)) {
      *out = log->aux[i].dbi;
      found = 1;
    }
  }
  pthread_mutex_unlock(&log->aux_mu);
  return found;
}

/* Caches a handle once: two threads may open the same database at once, and a name
 * cached twice would take the slot of another. */
static void aux_add(struct log *log, const char *name, MDB_dbi dbi) {
  pthread_mutex_lock(&log->aux_mu);
  int i = 0;
  while (i < log->n_aux && strcmp(log->aux[i].name, name)) i++;
  if (i == log->n_aux && log->n_aux < LOG_MAX_AUX && strlen(name) < sizeof log->aux[0].name) {
    snprintf(log->aux[i].name, sizeof log->aux[0].name, "%s", name);
    log->aux[i].dbi = dbi;
    log->n_aux++;
  }
  pthread_mutex_unlock(&log->aux_mu);
}

/* Opens every named database that exists, so their handles are valid in every later
 * transaction of this process (LMDB ties a handle to transactions begun after it). */
static int open_all_dbs(struct log *log) {
  MDB_txn *txn;
  int rc = open_txn_begin(log, log->env, MDB_RDONLY, &txn);
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
    /* The emptied database a drop leaves behind (see log_topic_drop_in) costs a handle
     * slot only once its topic is created again. */
    MDB_val tk = {strlen(name + 2), name + 2}, tv;
    if (topic && mdb_get(txn, log->db_topics, &tk, &tv) != 0) continue;
    MDB_dbi dbi;
    if (mdb_dbi_open(txn, name, topic ? MDB_INTEGERKEY : 0, &dbi) != 0) continue;
    if (topic) {
      log_topic_cache_add(log, name + 2, dbi);
    } else {
      aux_add(log, name, dbi);
    }
  }
  mdb_cursor_close(c);
  return log_err_mdb(mdb_txn_commit(txn));
}

static void fill_defaults(engram_options *o) {
  if (!o->map_size) o->map_size = 1ull << 30;
  if (o->map_size < (1u << 20)) o->map_size = 1u << 20;
  if (!o->max_topics) o->max_topics = LOG_DEFAULT_MAX_TOPICS;
  if (!o->dedup_window_ms) o->dedup_window_ms = 600000;
  if (!o->flush_interval_ms) o->flush_interval_ms = 1000;
}

/* Finds out what `path` holds before anything is opened for writing: 0 when it is an
 * engram log, 1 when a new log should be made there, else an error with its message
 * set. Nothing is written. */
static int inspect_target(const char *path, const engram_options *o) {
  int may_create = !(o->flags & (ENGRAM_OPEN_NOCREATE | ENGRAM_OPEN_RDONLY));
  struct stat st;
  if (stat(path, &st) < 0) {
    int e = errno;
    if (e == ENOENT) {
      char parent[4096];
      if (parent_dir(path, parent, sizeof parent) == 0 && stat(parent, &st) < 0)
        return log_error(NULL, ENGRAM_ENOTFOUND,
                         "open %s: the parent directory %s does not exist: create it first "
                         "(mkdir -p %s)",
                         path, parent, parent);
      if (!may_create) return log_error(NULL, ENGRAM_ENOTFOUND, "open %s: no log there", path);
      return 1;
    }
    return log_error(NULL, log_open_errno(e), "open %s: %s: %s", path, strerror(e),
                     log_open_advice(e));
  }
  if (!S_ISDIR(st.st_mode))
    return log_error(NULL, ENGRAM_EEXIST,
                     "open %s: this is a file, not a log directory: give a directory (a missing "
                     "or empty one makes a new log)",
                     path);
  int rc = probe(path);
  if (rc != ENGRAM_ENOTFOUND) return rc;
  int empty = dir_is_empty(path);
  if (empty == 0)
    return log_error(NULL, ENGRAM_EEXIST,
                     "open %s: the directory holds other files and no log (no data.mdb): give "
                     "engram a new or empty directory",
                     path);
  if (!may_create) return log_error(NULL, ENGRAM_ENOTFOUND, "open %s: no log there", path);
  return 1;
}

static int open_impl(const char *path, const engram_options *opts, int lock, struct log **out) {
  if (!out) return log_error(NULL, ENGRAM_EINVAL, "open: out is NULL");
  *out = NULL;
  char norm[3900];
  if (!path || !*path || strlen(path) > 3800 || norm_path(path, norm, sizeof norm) < 0)
    return log_error(NULL, ENGRAM_EINVAL, "open: invalid path");
  struct stat pst;
  if (strstr(path, "://") && stat(path, &pst) < 0)
    return log_error(NULL, ENGRAM_EINVAL,
                     "open %s: that is an endpoint, not a directory: a log served by engram "
                     "serve is reached with engram_connect (Python engram.connect, the CLI's "
                     "--connect)",
                     path);
  path = norm;
  engram_options o = opts ? *opts : (engram_options){0};
  uint32_t asked_topics = o.max_topics; /* 0: the log's own */
  if ((unsigned)o.durability > ENGRAM_DURABILITY_ASYNC)
    return log_error(NULL, ENGRAM_EINVAL, "open %s: unknown durability mode %d", path,
                     o.durability);
  if (o.max_topics > 100000)
    return log_error(NULL, ENGRAM_EINVAL, "open %s: max_topics %u over 100000", path, o.max_topics);
  if (o.dedup_window_ms > ENGRAM_MAX_DEDUP_WINDOW_MS)
    return log_error(NULL, ENGRAM_EINVAL,
                     "open %s: dedup_window_ms %llu over the limit of %llu (365 days)", path,
                     (unsigned long long)o.dedup_window_ms, ENGRAM_MAX_DEDUP_WINDOW_MS);
  if (o.flush_interval_ms > ENGRAM_MAX_FLUSH_INTERVAL_MS)
    return log_error(NULL, ENGRAM_EINVAL,
                     "open %s: flush_interval_ms %u over the limit of %u (1 hour)", path,
                     o.flush_interval_ms, ENGRAM_MAX_FLUSH_INTERVAL_MS);
  fill_defaults(&o);
  int rdonly = (o.flags & ENGRAM_OPEN_RDONLY) != 0;

  if (!rdonly) clear_stale_creating(path);
  /* With the write-ahead file, data.mdb is whole only after a replay: the first open to
   * have the log to itself replays before anything reads it. */
  int wal = log_wal_supported(), open_fd = -1, locked = 0, excl = !lock, rc;
  char wf[4100];
  snprintf(wf, sizeof wf, "%s/" LOG_WAL_FILE, path);
  int has_wal = access(wf, F_OK) == 0;
  if (has_wal && !wal && !rdonly)
    return log_error(NULL, ENGRAM_ENOTSUP,
                     "open %s: the log keeps its newest commits in %s, which this process "
                     "cannot write (ENGRAM_NO_WAL is set, or LMDB is linked in statically): "
                     "open it read-only, or from a process without that limit",
                     path, wf);
  if (has_wal && lock) {
    if ((rc = log_open_lock_ex(path, &open_fd, &excl))) return rc;
    locked = 1;
  }
  if (has_wal && excl && (rc = log_wal_recover(path, rdonly))) goto early_fail;

  rc = inspect_target(path, &o);
  if (rc < 0) goto early_fail;
  if (rc == 1) {
    int64_t now = o.clock_ns ? o.clock_ns(o.clock_ctx) : clock_realtime_ns();
    if ((rc = log_create(path, &o, now))) goto early_fail;
  }

  /* Taken after the checks above, which only read: a reclaim swaps data.mdb by a rename,
   * so they met the old file or the new one, both whole. From here on no reclaim runs. */
  if (lock && !locked) {
    if ((rc = log_open_lock_ex(path, &open_fd, &excl))) return rc;
    locked = 1;
  }
  if (wal && !rdonly && excl && !has_wal && (rc = log_wal_recover(path, 0))) goto early_fail;
  if (!rdonly && excl) log_share_reset(path); /* nobody else has it open */
  if (lock && excl && open_fd >= 0 && (rc = log_open_lock_share(path, open_fd))) return rc;
  if (open_fd >= 0 && !rdonly) {
    char f[4100];
    snprintf(f, sizeof f, "%s/" LOG_RECLAIM_COPY, path);
    unlink(f); /* the copy of a reclaim that died before its swap */
  }

  struct log *log = calloc(1, sizeof *log);
  if (!log) {
    if (open_fd >= 0) close(open_fd);
    return log_error(NULL, ENGRAM_ENOMEM, "open: out of memory");
  }
  log->open_fd = open_fd;
  log->path = strdup(path);
  log->opts = o;
  log->env_flags = env_flags_for(o.durability, wal && !rdonly) | (rdonly ? MDB_RDONLY : 0);
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
  pthread_cond_init(&log->gather_cv, &ca);
  pthread_condattr_destroy(&ca);
  log->owner_pid = self_pid();
  if (!log->path) {
    rc = log_error(NULL, ENGRAM_ENOMEM, "open: out of memory");
    goto fail;
  }

  if ((rc = env_make(path, &o, &log->env_flags, &log->env))) goto fail;
  /* The log keeps its max_topics: this handle allows the larger of it and the one asked
   * for, and has a handle slot for every database the log holds, however many topics an
   * earlier handle let it make. LMDB fixes the slots when it opens the environment: when
   * they are too few, it is opened again with enough. */
  uint32_t stored_topics = 0;
  uint64_t topics = 0;
  if ((rc = env_topic_room(log->env, &stored_topics, &topics))) {
    rc = env_open_error(path, rc);
    goto fail;
  }
  uint32_t limit = asked_topics > stored_topics ? asked_topics : stored_topics;
  if (!limit) limit = LOG_DEFAULT_MAX_TOPICS;
  uint64_t slots = (limit > topics ? limit : topics) + 32;
  log->opts.max_topics = limit;
  if (slots > (uint64_t)o.max_topics + 32) {
    mdb_env_close(log->env);
    log->env = NULL;
    log->env_flags = env_flags_for(o.durability, wal && !rdonly) | (rdonly ? MDB_RDONLY : 0);
    engram_options more = o;
    more.max_topics = (uint32_t)(slots - 32);
    if ((rc = env_make(path, &more, &log->env_flags, &log->env))) goto fail;
  }
  if (wal && !rdonly && (rc = log_wal_attach(log))) goto fail;
  int dead = 0;
  mdb_reader_check(log->env, &dead); /* clear slots of readers that died */
  /* The map may have grown in another process since the file was made. */
  mdb_env_set_mapsize(log->env, 0);
  if ((rc = open_core_dbs(log))) goto fail;
  if (!rdonly && limit > stored_topics && (rc = raise_max_topics(log, limit))) {
    rc = env_open_error(path, rc);
    goto fail;
  }
  rc = open_all_dbs(log);
  if (rc) {
    rc = log_error(log, rc, "open %s: %s", path, engram_strerror(rc));
    goto fail;
  }
  rc = rdonly ? 0 : log_commit_start(log);
  if (rc) {
    rc = log_error(log, rc, "open %s: cannot start flusher", path);
    goto fail;
  }
  /* A read-only handle commits nothing, and the notification board is a file it must
   * not create. */
  if (!rdonly) log_board_attach(log);
  if (!rdonly) log_share_attach(log);
  *out = log;
  log_error_clear(log);
  return 0;
fail:
  log_close(log);
  return rc;
early_fail:
  if (open_fd >= 0) close(open_fd);
  return rc;
}

int log_open(const char *path, const engram_options *opts, struct log **out) {
  return open_impl(path, opts, 1, out);
}

int log_open_unlocked(const char *path, const engram_options *opts, struct log **out) {
  return open_impl(path, opts, 0, out);
}

static __thread int progress_muted;

void log_progress_mute(void) { progress_muted = 1; }

void log_progress(struct log *log, const char *phase, uint64_t done, uint64_t total) {
  if (log && log->progress && !progress_muted) log->progress(log->progress_ctx, phase, done, total);
}

void log_close(struct log *log) {
  if (!log) return;
  log_share_detach(log);
  if (log->env) log_board_detach(log);
  log_pipe_stop(log);
  log_commit_stop(log);
  if (log->env) {
    if (log->dirty && log->wal)
      log_wal_sync(log);
    else if (log->dirty)
      mdb_env_sync(log->env, 1);
    log_wal_detach(log, 1);
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
  pthread_cond_destroy(&log->gather_cv);
  free(log->path);
  if (log->open_fd >= 0) close(log->open_fd); /* last: the log is closed for a reclaim */
  free(log);
}

int log_sync(struct log *log) {
  if (!log) return ENGRAM_EINVAL;
  if (log->env_flags & MDB_RDONLY) return 0; /* a read-only handle has written nothing */
  if (log->wal) {
    int wrc = log_wal_sync(log);
    if (wrc) return wrc;
    pthread_mutex_lock(&log->mu);
    log->dirty = 0;
    pthread_mutex_unlock(&log->mu);
    return 0;
  }
  int rc = mdb_env_sync(log->env, 1);
  if (rc) return log_error(log, log_err_mdb(rc), "sync: %s", log_mdb_text(rc));
  pthread_mutex_lock(&log->mu);
  log->dirty = 0;
  pthread_mutex_unlock(&log->mu);
  return 0;
}

/* Whether dest (which may not exist yet) is the log's directory or lies inside it. */
static int inside_log_dir(const struct log *log, const char *dest) {
  char *home = realpath(log->path, NULL), *at = realpath(dest, NULL), parent[4096];
  if (!at && parent_dir(dest, parent, sizeof parent) == 0) at = realpath(parent, NULL);
  size_t n = home ? strlen(home) : 0;
  int in = home && at && strncmp(at, home, n) == 0 && (at[n] == '\0' || at[n] == '/');
  free(home);
  free(at);
  return in;
}

int log_backup(struct log *log, const char *dest) {
  if (!log || !dest || !*dest) return log_error(log, ENGRAM_EINVAL, "backup: no destination");
  if (inside_log_dir(log, dest))
    return log_error(log, ENGRAM_EINVAL,
                     "backup %s: inside the log's own directory, where it would be lost with "
                     "the log: choose a directory outside %s",
                     dest, log->path);
  struct stat st;
  if (stat(dest, &st) == 0) {
    if (!S_ISDIR(st.st_mode) || dir_is_empty(dest) != 1)
      return log_error(log, ENGRAM_EEXIST, "backup %s: exists and is not empty", dest);
  } else if (mkdir(dest, 0755) < 0) {
    return log_error(log, err_from_errno(errno), "backup %s: %s", dest, strerror(errno));
  }
  char f[4200], parent[4096];
  snprintf(f, sizeof f, "%s/data.mdb", dest);
  int fd = open(f, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    return log_error(log, err_from_errno(errno), "backup %s: %s: %s", dest, f, strerror(errno));
  int rc = log_copy_compact(log, fd, "copying");
  if (rc) {
    close(fd);
    unlink(f);
    return log_error(log, log_err_mdb(rc), "backup %s: %s", dest, log_mdb_text(rc));
  }
  rc = fsync(fd);
  close(fd);
  if (rc < 0 || log_fsync_path(dest, O_RDONLY | O_DIRECTORY) < 0)
    return log_error(log, ENGRAM_EIO, "backup %s: cannot flush copy", dest);
  if (parent_dir(dest, parent, sizeof parent) == 0) log_fsync_path(parent, O_RDONLY | O_DIRECTORY);
  return 0;
}

/* Begins (txn_in NULL) or renews (txn_in reset) a read-only transaction and returns with
 * the map lock held shared, or with an error and the lock released. Another process
 * growing the map is adopted here, where this thread holds no lock. */
static int read_start(struct log *log, MDB_txn *txn_in, MDB_txn **txn) {
  for (;;) {
    pthread_rwlock_rdlock(&log->map_lock);
    int rc = txn_in ? mdb_txn_renew(txn_in) : mdb_txn_begin(log->env, NULL, MDB_RDONLY, txn);
    if (rc == 0) {
      if (txn_in) *txn = txn_in;
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
    return rc;
  }
}

int log_read_begin(struct log *log, MDB_txn **txn) {
  int rc = read_start(log, NULL, txn);
  return rc ? log_error(log, log_err_mdb(rc), "read: %s", log_mdb_text(rc)) : 0;
}

void log_read_end(struct log *log, MDB_txn *txn) {
  if (txn) mdb_txn_abort(txn);
  pthread_rwlock_unlock(&log->map_lock);
}

void log_read_pause(struct log *log, MDB_txn *txn) {
  mdb_txn_reset(txn);
  pthread_rwlock_unlock(&log->map_lock);
}

int log_read_resume(struct log *log, MDB_txn *txn) {
  MDB_txn *same;
  int rc = read_start(log, txn, &same);
  if (rc == 0) return 0;
  /* log_read_end still aborts the (reset) transaction and releases the lock. */
  pthread_rwlock_rdlock(&log->map_lock);
  return log_error(log, log_err_mdb(rc), "read: %s", log_mdb_text(rc));
}

int log_disk_nearly_full(const struct log *log) {
  struct statvfs st;
  if (statvfs(log->path, &st) != 0) return 0;
  return (uint64_t)st.f_bavail * st.f_frsize < (8u << 20);
}

/* Another process grew the map: adopt its size. */
void log_map_adopt(struct log *log) {
  pthread_rwlock_wrlock(&log->map_lock);
  mdb_env_set_mapsize(log->env, 0);
  pthread_rwlock_unlock(&log->map_lock);
}

/* Doubles the map. Called by the commit leader with no transaction open. */
int log_map_grow(struct log *log) {
  pthread_rwlock_wrlock(&log->map_lock);
  MDB_envinfo info;
  mdb_env_info(log->env, &info);
  size_t want = info.me_mapsize * 2;
  int rc = mdb_env_set_mapsize(log->env, want);
  pthread_rwlock_unlock(&log->map_lock);
  return rc ? log_err_mdb(rc) : 0;
}

/* The thread that holds dbi_mu for a solo job (log_dbi_lock), so that an open of a
 * handle inside that job fails with a message instead of waiting for itself. */
static _Thread_local const struct log *dbi_holder;

void log_dbi_lock(struct log *log) {
  pthread_mutex_lock(&log->dbi_mu);
  dbi_holder = log;
}

void log_dbi_unlock(struct log *log) {
  dbi_holder = NULL;
  pthread_mutex_unlock(&log->dbi_mu);
}

/* Opens a database that exists in a read transaction of its own, committed so that the
 * handle stays valid for every transaction begun after. It is not the thread's read
 * transaction (log_read_begin): the caller may hold a paused one, and its record must
 * survive. LMDB: a transaction that opens a handle must end before another may open
 * one. Lock order: dbi_mu, then map_lock. Returns 0, MDB_NOTFOUND (no message) or an
 * error with its message. */
static int open_existing(struct log *log, const char *name, unsigned int flags, MDB_dbi *out) {
  if (dbi_holder == log)
    return log_error(log, ENGRAM_EINTERNAL,
                     "open database %s: asked inside a job that runs alone, which holds the "
                     "handle lock: open the database before the job is queued",
                     name);
  MDB_txn *txn;
  pthread_mutex_lock(&log->dbi_mu);
  int rc = read_start(log, NULL, &txn);
  if (rc) {
    pthread_mutex_unlock(&log->dbi_mu);
    return log_error(log, log_err_mdb(rc), "open database %s: %s", name, log_mdb_text(rc));
  }
  int mrc = mdb_dbi_open(txn, name, flags, out);
  if (mrc == 0)
    mrc = mdb_txn_commit(txn);
  else
    mdb_txn_abort(txn);
  pthread_rwlock_unlock(&log->map_lock);
  pthread_mutex_unlock(&log->dbi_mu);
  if (mrc == 0 || mrc == MDB_NOTFOUND) return mrc;
  return log_error(log, log_err_mdb(mrc), "open database %s: %s", name, log_mdb_text(mrc));
}

int log_aux_dbi(struct log *log, const char *name, unsigned int flags, MDB_dbi *out) {
  if (aux_find(log, name, out)) return 0;
  int rc = log_open_dbi(log, name, flags, out);
  if (rc == ENGRAM_ENOTSUP && (log->env_flags & MDB_RDONLY))
    return log_error(log, ENGRAM_ENOTFOUND,
                     "read-only log %s holds no database %s: nothing of that kind was ever "
                     "stored in it",
                     log->path, name);
  if (rc) return rc;
  aux_add(log, name, *out);
  return 0;
}

/* Opens (creating) a named database in a transaction of its own, so the handle is
 * shared by every later transaction. Creation goes through the commit path. */
static int create_dbi_job(log_wtx *w, void *arg) {
  struct log_dbi_req *r = arg;
  int rc = mdb_dbi_open(w->txn, r->name, r->flags | MDB_CREATE, &r->dbi);
  return rc ? log_err_mdb(rc) : 0;
}

int log_open_dbi(struct log *log, const char *name, unsigned int flags, MDB_dbi *out) {
  int rc = open_existing(log, name, flags, out);
  if (rc != MDB_NOTFOUND) return rc;
  struct log_dbi_req r = {.name = name, .flags = flags};
  rc = log_write_solo(log, create_dbi_job, &r);
  if (rc < 0) return rc;
  *out = r.dbi;
  return 0;
}

int log_aux_dbi_existing(struct log *log, const char *name, MDB_dbi *out) {
  if (aux_find(log, name, out)) return 0;
  /* Nothing is created when the database is absent. */
  int rc = open_existing(log, name, 0, out);
  if (rc == MDB_NOTFOUND) return ENGRAM_ENOTFOUND;
  if (rc) return rc;
  aux_add(log, name, *out);
  return 0;
}
