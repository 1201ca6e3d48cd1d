/* testutil.c — helpers shared by engram's C tests (see testutil.h). */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static void die(const char *what, const char *detail) {
  fprintf(stderr, "testutil: %s: %s\n", what, detail ? detail : "");
  fflush(stderr);
  abort();
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) die("malloc", "out of memory");
  return p;
}

void tu_test_filter(void) {
  const char *f = getenv("ENGRAM_TEST_FILTER");
  if (f && *f) cmocka_set_test_filter(f);
}

/* ---------------------------------------------------------------------------------
 * Paths and directories.
 * ------------------------------------------------------------------------------ */
char *tu_join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = xmalloc(n);
  snprintf(p, n, "%s/%s", dir, name);
  return p;
}

int tu_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static const char *tmp_root(void) {
  const char *r = getenv("ENGRAM_TEST_TMP");
  if (!r || !*r) r = getenv("TMPDIR");
  if (!r || !*r) r = "/tmp";
  return r;
}

char *tu_tmpdir(const char *tag) {
  char tmpl[4096];
  snprintf(tmpl, sizeof tmpl, "%s/engram-%s-XXXXXX", tmp_root(), tag ? tag : "test");
  if (!mkdtemp(tmpl)) die("mkdtemp", strerror(errno));
  char *out = realpath(tmpl, NULL);
  if (!out) die("realpath", strerror(errno));
  return out;
}

int tu_rmrf(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
  if (S_ISDIR(st.st_mode)) {
    DIR *d = opendir(path);
    if (!d) return -1;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d)) != NULL) {
      if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
      char *sub = tu_join(path, de->d_name);
      if (tu_rmrf(sub) != 0) rc = -1;
      free(sub);
    }
    closedir(d);
    if (rmdir(path) != 0) rc = -1;
    return rc;
  }
  return unlink(path) == 0 ? 0 : -1;
}

void tu_tmpdir_done(char *dir) {
  if (!dir) return;
  const char *keep = getenv("ENGRAM_KEEP_TMP");
  if (keep && *keep)
    fprintf(stderr, "kept %s\n", dir);
  else
    tu_rmrf(dir);
  free(dir);
}

engram *tu_open(const char *dir, const engram_options *opts) {
  engram *log = NULL;
  int rc = engram_open(dir, opts, &log);
  if (rc != 0 || !log) {
    char msg[512];
    snprintf(msg, sizeof msg, "engram_open %s: %s (%s)", dir, engram_errname(rc),
             engram_strerror(rc));
    die("open", msg);
  }
  return log;
}

void tu_ok_at(engram *log, int rc, const char *what, int line) {
  if (rc)
    fprintf(stderr, "line %d: %s: %s: %s\n", line, what, engram_errname(rc), engram_errmsg(log));
  assert_int_equal(rc, 0);
}

void tu_fx_dirs(const char *tag, char **dir, char **logdir) {
  *dir = tu_tmpdir(tag);
  *logdir = tu_join(*dir, "log");
}

void tu_fx_dirs_done(engram *log, char *dir, char *logdir) {
  engram_close(log);
  free(logdir);
  tu_tmpdir_done(dir);
}

tu_fx *tu_fx_new(const char *tag) {
  tu_fx *f = xmalloc(sizeof *f);
  f->log = NULL;
  tu_fx_dirs(tag, &f->dir, &f->logdir);
  return f;
}

int tu_fx_teardown(void **state) {
  tu_fx *f = *state;
  tu_fx_dirs_done(f->log, f->dir, f->logdir);
  free(f);
  return 0;
}

void tu_topic(engram *log, const char *topic, const engram_topic_config *cfg) {
  int rc = engram_topic_create(log, topic, cfg);
  if (rc != 0) {
    char msg[512];
    snprintf(msg, sizeof msg, "topic %s: %s: %s", topic, engram_errname(rc), engram_errmsg(log));
    die("topic_create", msg);
  }
}

/* ---------------------------------------------------------------------------------
 * Deterministic data and time.
 * ------------------------------------------------------------------------------ */
uint64_t tu_rand(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

void tu_fill_random(void *buf, size_t n, uint64_t seed) {
  uint64_t s = seed ? seed : 0x9E3779B97F4A7C15ULL;
  unsigned char *p = buf;
  for (size_t i = 0; i < n; i++) {
    if (i % 8 == 0) s = tu_rand(&s) | 1;
    p[i] = (unsigned char)(s >> (8 * (i % 8)));
  }
}

int64_t tu_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t tu_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

void tu_sleep_ms(int64_t ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ---------------------------------------------------------------------------------
 * The controllable clock.
 * ------------------------------------------------------------------------------ */
void tu_clock_init(tu_clock *c, int64_t start_ns) {
  atomic_store(&c->ns, start_ns ? start_ns : tu_now_ns());
}

void tu_clock_advance_ms(tu_clock *c, int64_t ms) { atomic_fetch_add(&c->ns, ms * 1000000LL); }

int64_t tu_clock_ns(void *ctx) { return atomic_load(&((tu_clock *)ctx)->ns); }

/* ---------------------------------------------------------------------------------
 * Children.
 * ------------------------------------------------------------------------------ */
#if defined(__SANITIZE_ADDRESS__)
#define TU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TU_ASAN 1
#endif
#endif

pid_t tu_spawn(int (*fn)(void *arg), void *arg) {
  fflush(stdout);
  fflush(stderr);
#ifdef TU_ASAN
  /* ASan's allocator, unlike glibc's malloc, takes no lock around fork: a thread of this
   * process inside it at the fork (one an open has just started runs its set-up there)
   * leaves its lock held in the child, whose every thread start then waits forever. Let
   * threads just started get through that first. */
  tu_sleep_ms(20);
#endif
  pid_t pid = fork();
  if (pid < 0) die("fork", strerror(errno));
  if (pid == 0) {
    /* The test runner's crash handlers would resume the runner inside the child; a crash
     * here must end the child and show in its exit status. */
    const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], SIG_DFL);
    int rc = fn(arg);
    fflush(stdout);
    fflush(stderr);
    /* _exit: the child must not run the parent's atexit handlers or test runner. */
    _exit(rc & 0xff);
  }
  return pid;
}

int tu_wait(pid_t pid, int timeout_ms) {
  int64_t deadline = tu_mono_ms() + timeout_ms;
  int status;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return -1;
    if (tu_mono_ms() >= deadline) {
      kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      return -1;
    }
    tu_sleep_ms(2);
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

int tu_fork_child(int (*fn)(void *arg), void *arg, int timeout_ms) {
  return tu_wait(tu_spawn(fn, arg), timeout_ms);
}

/* ---------------------------------------------------------------------------------
 * Memory events.
 * ------------------------------------------------------------------------------ */
static void copy_field(const char *line, const char *name, char *out, size_t cap) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":\"", name);
  out[0] = 0;
  const char *p = strstr(line, pat);
  if (!p) return;
  p += strlen(pat);
  size_t i = 0;
  while (p[i] && p[i] != '"' && i + 1 < cap) {
    out[i] = p[i];
    i++;
  }
  out[i] = 0;
}

static void push(tu_events *e, size_t *cap, const char *type, const char *key, const char *payload,
                 size_t len) {
  if (e->n == *cap) {
    *cap = *cap ? *cap * 2 : 256;
    e->ev = realloc(e->ev, *cap * sizeof *e->ev);
    if (!e->ev) die("realloc", "out of memory");
  }
  tu_event *t = &e->ev[e->n++];
  snprintf(t->type, sizeof t->type, "%s", type);
  snprintf(t->key, sizeof t->key, "%s", key);
  t->payload = xmalloc(len + 1);
  memcpy(t->payload, payload, len);
  t->payload[len] = 0;
  t->len = len;
}

static tu_events *load_file(const char *path, size_t max) {
  FILE *f = fopen(path, "r");
  if (!f) return NULL;
  tu_events *e = calloc(1, sizeof *e);
  if (!e) die("calloc", "out of memory");
  size_t cap = 0;
  char *line = NULL;
  size_t lcap = 0;
  ssize_t n;
  while ((max == 0 || e->n < max) && (n = getline(&line, &lcap, f)) > 0) {
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    if (n == 0) continue;
    char type[32], key[96];
    copy_field(line, "type", type, sizeof type);
    copy_field(line, "memory_id", key, sizeof key);
    if (!type[0]) continue;
    push(e, &cap, type, key, line, (size_t)n);
  }
  free(line);
  fclose(f);
  if (e->n == 0) {
    free(e->ev);
    free(e);
    return NULL;
  }
  e->from_file = 1;
  return e;
}

static const char *const words[] = {
    "memory",  "agent",    "user",     "remember", "project",  "tournament", "screenplay",
    "turtles", "friends",  "weekend",  "hiking",   "coffee",   "recipe",     "painting",
    "music",   "guitar",   "deadline", "meeting",  "family",   "vacation",   "garden",
    "book",    "movie",    "dinner",   "started",  "finished", "excited",    "tired",
    "happy",   "planning", "learning", "shared",   "the",      "a",          "and",
    "with",    "about",    "after",    "before",   "really",   "new",        "old"};
static const char *const speakers[] = {"Nate", "Joanna", "Maria", "John", "Caroline",
                                       "Mel",  "Jon",    "Gina",  "Tim",  "Andrew"};

tu_events *tu_generated_events(size_t n, uint64_t seed) {
  tu_events *e = calloc(1, sizeof *e);
  if (!e) die("calloc", "out of memory");
  size_t cap = 0;
  uint64_t s = seed ? seed : 42;
  char text[900], line[1400], key[96];
  for (size_t i = 0; i < n; i++) {
    uint64_t r = tu_rand(&s);
    int conv = 26 + (int)(r % 25);
    const char *spk = speakers[(r >> 8) % 10];
    int pick = (int)((r >> 16) % 100);
    const char *type = pick < 75 ? "memory.saved" : pick < 83 ? "memory.updated" : "memory.queried";
    const char *kind = pick < 75 ? "turn" : pick < 83 ? "profile_event" : "qa";
    int session = 1 + (int)((r >> 24) % 30);
    /* Text lengths spread the whole line over about 150..800 bytes. */
    size_t want = 20 + (size_t)((r >> 32) % 560);
    size_t tl = 0;
    while (tl < want) {
      const char *w = words[tu_rand(&s) % (sizeof words / sizeof words[0])];
      int k = snprintf(text + tl, sizeof text - tl, "%s%s", tl ? " " : "", w);
      if (k < 0 || (size_t)k >= sizeof text - tl) break;
      tl += (size_t)k;
    }
    if (pick < 75)
      snprintf(key, sizeof key, "conv-%02d:D%d:%zu", conv, session, i % 40 + 1);
    else if (pick < 83)
      snprintf(key, sizeof key, "conv-%02d:%s:profile", conv, spk);
    else
      snprintf(key, sizeof key, "conv-%02d:Q%zu", conv, i);
    int len =
        snprintf(line, sizeof line,
                 "{\"type\":\"%s\",\"user_id\":\"conv-%02d:%s\",\"session\":\"conv-%02d/s%d\","
                 "\"ts\":\"2023-%02d-%02dT%02d:%02d:%02dZ\",\"text\":\"%s.\","
                 "\"memory_id\":\"%s\",\"kind\":\"%s\"}",
                 type, conv, spk, conv, session, 1 + (int)(i / 1000 % 12), 1 + (int)(i / 40 % 28),
                 (int)(i / 3600 % 24), (int)(i / 60 % 60), (int)(i % 60), text, key, kind);
    if (len < 0 || (size_t)len >= sizeof line) len = (int)sizeof line - 1;
    push(e, &cap, type, key, line, (size_t)len);
  }
  return e;
}

tu_events *tu_memory_events(size_t max) {
  const char *env = getenv("ENGRAM_TEST_DATA");
  tu_events *e = NULL;
  if (env && *env) e = load_file(env, max);
  if (!e) e = load_file("../shared/data/memory-events.jsonl", max);
  if (!e) e = tu_generated_events(max ? max : 2000, 42);
  return e;
}

void tu_events_free(tu_events *e) {
  if (!e) return;
  for (size_t i = 0; i < e->n; i++) free(e->ev[i].payload);
  free(e->ev);
  free(e);
}

engram_event tu_event_of(const tu_event *t) {
  engram_event ev;
  memset(&ev, 0, sizeof ev);
  ev.type = t->type;
  ev.key = t->key[0] ? t->key : NULL;
  ev.payload = t->payload;
  ev.payload_len = t->len;
  ev.content_type = "application/json";
  return ev;
}

/* ---------------------------------------------------------------------------------
 * Raw LMDB.
 * ------------------------------------------------------------------------------ */
int tu_raw_open(const char *dir, int readonly, MDB_env **env) {
  if (!readonly) {
    /* A writer that is not engram: the log's write-ahead file no longer describes
     * data.mdb and must go (docs/storage.md), as after any tool that writes the file. */
    char f[4200];
    snprintf(f, sizeof f, "%s/wal", dir);
    unlink(f);
    snprintf(f, sizeof f, "%s/wal.shm", dir);
    unlink(f);
  }
  int rc = mdb_env_create(env);
  if (rc) return rc;
  mdb_env_set_maxdbs(*env, 4096);
  rc = mdb_env_open(*env, dir, readonly ? MDB_RDONLY : 0, 0644);
  if (rc) {
    mdb_env_close(*env);
    *env = NULL;
  }
  return rc;
}

static int topic_db(MDB_txn *txn, const char *topic, MDB_dbi *dbi) {
  char name[ENGRAM_MAX_NAME + 8];
  snprintf(name, sizeof name, "t/%s", topic);
  return mdb_dbi_open(txn, name, MDB_INTEGERKEY, dbi);
}

int tu_raw_get(const char *dir, const char *topic, uint64_t offset, unsigned char **val,
               size_t *len) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  int rc = tu_raw_open(dir, 1, &env);
  if (rc) return rc;
  rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
  if (rc) goto fail_env;
  rc = topic_db(txn, topic, &dbi);
  if (rc) goto fail_txn;
  size_t k = (size_t)offset;
  MDB_val key = {sizeof k, &k}, v;
  rc = mdb_get(txn, dbi, &key, &v);
  if (rc) goto fail_txn;
  *val = xmalloc(v.mv_size);
  memcpy(*val, v.mv_data, v.mv_size);
  *len = v.mv_size;
fail_txn:
  mdb_txn_abort(txn);
fail_env:
  mdb_env_close(env);
  return rc;
}

int tu_raw_put(const char *dir, const char *topic, uint64_t offset, const void *val, size_t len) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  int rc = tu_raw_open(dir, 0, &env);
  if (rc) return rc;
  rc = mdb_txn_begin(env, NULL, 0, &txn);
  if (rc) goto fail_env;
  rc = topic_db(txn, topic, &dbi);
  if (rc) {
    mdb_txn_abort(txn);
    goto fail_env;
  }
  size_t k = (size_t)offset;
  MDB_val key = {sizeof k, &k}, v = {len, (void *)val};
  rc = mdb_put(txn, dbi, &key, &v, 0);
  if (rc)
    mdb_txn_abort(txn);
  else
    rc = mdb_txn_commit(txn);
fail_env:
  mdb_env_close(env);
  return rc;
}

int tu_raw_scan(const char *dir, const char *topic,
                int (*fn)(uint64_t offset, const unsigned char *val, size_t len, void *ctx),
                void *ctx) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_cursor *c;
  int rc = tu_raw_open(dir, 1, &env);
  if (rc) return rc;
  rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
  if (rc) goto fail_env;
  if ((rc = topic_db(txn, topic, &dbi)) || (rc = mdb_cursor_open(txn, dbi, &c))) goto fail_txn;
  MDB_val k, v;
  for (int op = MDB_FIRST; (rc = mdb_cursor_get(c, &k, &v, op)) == 0; op = MDB_NEXT) {
    size_t off;
    memcpy(&off, k.mv_data, sizeof off);
    if (fn((uint64_t)off, v.mv_data, v.mv_size, ctx)) break;
  }
  if (rc == MDB_NOTFOUND) rc = 0;
  mdb_cursor_close(c);
fail_txn:
  mdb_txn_abort(txn);
fail_env:
  mdb_env_close(env);
  return rc;
}

long tu_raw_count(const char *dir, const char *topic) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_stat st;
  long out = -1;
  if (tu_raw_open(dir, 1, &env)) return -1;
  if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0) {
    if (topic_db(txn, topic, &dbi) == 0 && mdb_stat(txn, dbi, &st) == 0) out = (long)st.ms_entries;
    mdb_txn_abort(txn);
  }
  mdb_env_close(env);
  return out;
}
