/* share.c — single appends of several processes committed together.
 *
 * Within a process, writers share commits through the leader of commit.c. Processes
 * cannot: each takes LMDB's write lock for commits of its own, and every hand-over of
 * that lock is a process wake-up. When more than one process has a log open for writing,
 * a single-event append goes through DIR/commit.shm instead, a file every such process
 * maps: the writer copies its event into a slot there, and one writer at a time (the
 * combiner, of any process) commits every ready slot in one transaction of its own handle
 * (all events in one nested transaction; if one fails, each in a nested transaction of its
 * own, so that it fails alone), then hands each slot its result. The combiner's handle
 * makes the commit durable as it does its own (one flush, in sync mode, before any slot is
 * released); the writers whose slots it carried wait once, on their slot's futex (in async
 * mode after a few turns of the CPU), and pay no commit and no flush of their own.
 *
 * A combiner may die at any point. Its slots then say which process took them, and
 * their writers find it gone (a futex wait of theirs times out every SHARE_POLL_MS and
 * looks). Whether its commit happened is read from the log itself: the combiner writes,
 * in the same transaction as the events, a receipt per slot (the slot's ticket, the
 * event's offset) into the meta database. A receipt with the slot's ticket means the
 * event was committed (the writer then flushes, as the dead combiner may not have); no
 * receipt means it was not and never will be (a transaction of a dead process that did
 * not commit never does), and the slot is offered again. Tickets are unique across
 * restarts of the file: they count up from a random 64-bit start.
 *
 * Handles share only with handles of the same durability and idempotency window (the
 * slot carries their fingerprint); a handle with its own clock does not share, nor one in
 * another pid namespace than the first to map the file. The file
 * holds no data that must survive: the first process to open the log alone empties it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log/log_private.h"

#define SHARE_FILE "commit.shm"
#define SHARE_MAGIC 0x34524853u /* "SHR4" */
#define SHARE_HANDLES 128       /* handles registered at once */
#define SHARE_SLOTS 64
#define SHARE_SLOT_BYTES 8192
#define SHARE_SLOT_HEAD 256
#define SHARE_DATA (SHARE_SLOT_BYTES - SHARE_SLOT_HEAD)
#define SHARE_POLL_MS 10 /* a writer looks whether its combiner still lives this often */
#define SHARE_GATHER_MAX_NS 1000000
#define SHARE_ASYNC_YIELDS 8 /* async: turns of the CPU a combiner gives writers first */
/* Async: turns of the CPU a writer gives the combiner before it sleeps on its slot. A
 * combine without a flush is short, so the result is mostly there after a few: no
 * sleep, and no wake-up for the combiner to make (it wakes only writers that sleep).
 * Eight processes: 1.18-1.27x the appends/s with 2 to 16 turns, the least CPU per append
 * with 4. */
#define SHARE_ASYNC_SPINS 4
#define SHARE_RECEIPT "share."

enum { S_FREE, S_FILLING, S_READY, S_TAKEN, S_DONE };

struct share_hdr {
  _Atomic uint32_t magic;
  _Atomic int32_t combiner;   /* pid of the process one of whose threads combines, 0 = none */
  _Atomic uint32_t ready;     /* bumped when a slot is made ready while someone gathers */
  _Atomic uint32_t gathering; /* combiners waiting on ready */
  _Atomic uint32_t want;      /* ready slots the gathering combiner waits for */
  _Atomic uint64_t tickets;   /* the next slot's ticket */
  _Atomic uint64_t pidns;     /* the pid namespace (its inode) of the handles that share:
                                 liveness is judged by pid, which means nothing across
                                 namespaces (a combiner taken for dead would have its
                                 slots committed twice) */
  _Atomic int32_t handles[SHARE_HANDLES]; /* the process of each registered handle, 0 = free */
};

struct share_slot {
  _Atomic uint32_t state; /* S_*: the futex word its writer sleeps on */
  uint32_t fp;            /* the writer's handle's fingerprint */
  _Atomic int32_t owner;  /* the writer's process */
  _Atomic int32_t holder; /* the combiner's process that took it */
  uint64_t ticket;
  uint64_t offset;                /* result: the event's offset */
  int32_t rc;                     /* result: 0 or an ENGRAM_E* code */
  int32_t dup;                    /* result: an idempotency duplicate */
  uint32_t len;                   /* bytes of data */
  _Atomic uint32_t sleeping;      /* its writer sleeps on state (else it looks by itself) */
  char msg[SHARE_SLOT_HEAD - 48]; /* result: the error message */
  unsigned char data[SHARE_DATA];
};

_Static_assert(sizeof(struct share_hdr) <= 4096, "share header fits its page");
_Static_assert(sizeof(struct share_slot) == SHARE_SLOT_BYTES, "share slot size");

struct log_share {
  struct share_hdr *hdr;
  struct share_slot *slots;
  int handle;  /* this handle's entry in hdr->handles */
  uint32_t fp; /* durability and idempotency window */
  int32_t pid;
  int expected;   /* slots the last combine of this handle carried (sync: gathers for them) */
  int solo;       /* combines in a row that carried no other process's append (prune_gone) */
  int test_die;   /* ENGRAM_TEST_SHARE_DIE: 1 = the combiner dies with its slots taken,
                     2 = once its commit is durable, before handing out the results */
  int test_ready; /* ENGRAM_TEST_SHARE_READY: the combiner waits (up to 10 s) for this
                     many ready slots */
};

#define SHARE_MAP_BYTES (4096 + (size_t)SHARE_SLOTS * SHARE_SLOT_BYTES)

static void wake_all(_Atomic uint32_t *w) { log_futex((void *)w, FUTEX_WAKE, INT_MAX, NULL); }

/* ---- the event in a slot: a flat encoding, decoded in place ---- */

static int put_bytes(unsigned char *buf, size_t cap, size_t *at, const void *p, size_t n) {
  if (n > cap - *at) return -1;
  if (n) memcpy(buf + *at, p, n);
  *at += n;
  return 0;
}

static int put_u32(unsigned char *buf, size_t cap, size_t *at, uint32_t v) {
  unsigned char b[4];
  be32_put(b, v);
  return put_bytes(buf, cap, at, b, 4);
}

/* A string as u32 length (UINT32_MAX = NULL), its bytes and a NUL. */
static int put_str(unsigned char *buf, size_t cap, size_t *at, const char *s) {
  if (!s) return put_u32(buf, cap, at, UINT32_MAX);
  size_t n = strlen(s);
  if (n >= UINT32_MAX || put_u32(buf, cap, at, (uint32_t)n)) return -1;
  return put_bytes(buf, cap, at, s, n + 1);
}

size_t log_share_encode(const char *topic, const engram_event *ev, unsigned char *buf, size_t cap) {
  size_t at = 0;
  unsigned char b[8];
  if (put_str(buf, cap, &at, topic) || put_str(buf, cap, &at, ev->type) ||
      put_str(buf, cap, &at, ev->key) || put_str(buf, cap, &at, ev->content_type) ||
      put_str(buf, cap, &at, ev->idempotency_key) || put_u32(buf, cap, &at, ev->flags))
    return 0;
  be64_put(b, (uint64_t)ev->deliver_at_ns);
  if (put_bytes(buf, cap, &at, b, 8)) return 0;
  be64_put(b, (uint64_t)ev->timestamp_ns);
  if (put_bytes(buf, cap, &at, b, 8)) return 0;
  if (ev->n_headers > ENGRAM_MAX_HEADERS || put_u32(buf, cap, &at, (uint32_t)ev->n_headers))
    return 0;
  for (size_t i = 0; i < ev->n_headers; i++)
    if (put_str(buf, cap, &at, ev->headers[i].name) ||
        put_str(buf, cap, &at, ev->headers[i].value ? ev->headers[i].value : ""))
      return 0;
  if (ev->payload_len >= UINT32_MAX || put_u32(buf, cap, &at, (uint32_t)ev->payload_len) ||
      put_bytes(buf, cap, &at, ev->payload, ev->payload_len))
    return 0;
  return at;
}

static int get_u32(const unsigned char *buf, size_t len, size_t *at, uint32_t *v) {
  if (len - *at < 4) return -1;
  *v = be32_get(buf + *at);
  *at += 4;
  return 0;
}

static int get_str(const unsigned char *buf, size_t len, size_t *at, const char **s) {
  uint32_t n;
  if (get_u32(buf, len, at, &n)) return -1;
  if (n == UINT32_MAX) {
    *s = NULL;
    return 0;
  }
  if (len - *at < (size_t)n + 1 || buf[*at + n] != '\0' || memchr(buf + *at, 0, n)) return -1;
  *s = (const char *)buf + *at;
  *at += (size_t)n + 1;
  return 0;
}

int log_share_decode(const unsigned char *buf, size_t len, const char **topic, engram_event *ev,
                     engram_header *headers) {
  size_t at = 0;
  uint32_t flags, nh, plen;
  memset(ev, 0, sizeof *ev);
  if (get_str(buf, len, &at, topic) || !*topic || get_str(buf, len, &at, &ev->type) ||
      get_str(buf, len, &at, &ev->key) || get_str(buf, len, &at, &ev->content_type) ||
      get_str(buf, len, &at, &ev->idempotency_key) || get_u32(buf, len, &at, &flags) ||
      len - at < 16)
    return -1;
  ev->flags = flags;
  ev->deliver_at_ns = (int64_t)be64_get(buf + at);
  ev->timestamp_ns = (int64_t)be64_get(buf + at + 8);
  at += 16;
  if (get_u32(buf, len, &at, &nh) || nh > ENGRAM_MAX_HEADERS) return -1;
  for (uint32_t i = 0; i < nh; i++)
    if (get_str(buf, len, &at, &headers[i].name) || !headers[i].name ||
        get_str(buf, len, &at, &headers[i].value) || !headers[i].value)
      return -1;
  ev->headers = nh ? headers : NULL;
  ev->n_headers = nh;
  if (get_u32(buf, len, &at, &plen) || len - at != plen) return -1;
  ev->payload = plen ? buf + at : NULL;
  ev->payload_len = plen;
  return 0;
}

/* ---- the file ---- */

void log_share_reset(const char *dir) {
  char path[4200];
  if (snprintf(path, sizeof path, "%s/%s", dir, SHARE_FILE) >= (int)sizeof path) return;
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) return;
  if (ftruncate(fd, 0) < 0) { /* left as it was: its stale slots are found dead */
  }
  close(fd);
}

static uint32_t fingerprint(const struct log *log) {
  uint64_t v = (uint64_t)log->opts.durability * 0x9e3779b97f4a7c15ull ^ log->opts.dedup_window_ms;
  uint32_t fp = (uint32_t)(v ^ (v >> 32));
  return fp ? fp : 1;
}

void log_share_attach(struct log *log) {
  if ((log->env_flags & MDB_RDONLY) || log->opts.clock_ns || getenv("ENGRAM_NO_SHARE")) return;
  char path[4200];
  if (snprintf(path, sizeof path, "%s/%s", log->path, SHARE_FILE) >= (int)sizeof path) return;
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return; /* appends commit on their own */
  /* Zeroes are an empty file, so whoever comes first just sizes it (its blocks allocated:
   * on a full disk appends commit on their own). */
  if (log_file_reserve(fd, SHARE_MAP_BYTES)) {
    close(fd);
    return;
  }
  void *m = mmap(NULL, SHARE_MAP_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (m == MAP_FAILED) return;
  struct share_hdr *h = m;
  uint32_t mz = 0;
  if (!atomic_compare_exchange_strong(&h->magic, &mz, SHARE_MAGIC) && mz != SHARE_MAGIC) {
    munmap(m, SHARE_MAP_BYTES); /* another layout: appends commit on their own */
    return;
  }
  uint64_t zero = 0, start = 0;
  if (getrandom(&start, sizeof start, 0) != sizeof start) start = (uint64_t)clock_realtime_ns();
  start = (start >> 1) | 1;
  atomic_compare_exchange_strong(&h->tickets, &zero, start);
  struct stat ns;
  uint64_t mine = stat("/proc/self/ns/pid", &ns) == 0 ? (uint64_t)ns.st_ino : 0;
  zero = 0;
  if (!mine || (!atomic_compare_exchange_strong(&h->pidns, &zero, mine) && zero != mine)) {
    munmap(m, SHARE_MAP_BYTES); /* another pid namespace shares: this handle commits alone */
    return;
  }
  struct log_share *s = calloc(1, sizeof *s);
  if (!s) {
    munmap(m, SHARE_MAP_BYTES);
    return;
  }
  s->hdr = h;
  s->slots = (struct share_slot *)((char *)m + 4096);
  s->pid = (int32_t)getpid();
  s->fp = fingerprint(log);
  s->handle = -1;
  const char *e = getenv("ENGRAM_TEST_SHARE_DIE");
  s->test_die = e ? (!strcmp(e, "taken") ? 1 : !strcmp(e, "committed") ? 2 : 0) : 0;
  e = getenv("ENGRAM_TEST_SHARE_READY");
  s->test_ready = e ? atoi(e) : 0;
  for (int pass = 0; pass < 2 && s->handle < 0; pass++)
    for (int i = 0; i < SHARE_HANDLES && s->handle < 0; i++) {
      int32_t p = atomic_load(&h->handles[i]);
      if (p && (pass == 0 || !log_pid_gone(p))) continue;
      if (atomic_compare_exchange_strong(&h->handles[i], &p, s->pid)) s->handle = i;
    }
  if (s->handle < 0) { /* no entry left: this handle commits on its own */
    munmap(m, SHARE_MAP_BYTES);
    free(s);
    return;
  }
  log->share = s;
}

void log_share_detach(struct log *log) {
  struct log_share *s = log->share;
  if (!s) return;
  log->share = NULL;
  int32_t p = s->pid;
  atomic_compare_exchange_strong(&s->hdr->handles[s->handle], &p, 0);
  munmap(s->hdr, SHARE_MAP_BYTES);
  free(s);
}

/* Whether a handle of another process is registered. */
static int others(const struct log_share *s) {
  for (int i = 0; i < SHARE_HANDLES; i++) {
    int32_t p = atomic_load_explicit(&s->hdr->handles[i], memory_order_relaxed);
    if (p && p != s->pid) return 1;
  }
  return 0;
}

/* A process killed with the log open leaves its entry, and its neighbours go on sharing
 * commits with nobody. After every SHARE_PRUNE_AFTER combines of a handle that carried no
 * other process's append, the entries of processes that are gone are cleared, so that a
 * process left alone goes back to committing on its own. */
#define SHARE_PRUNE_AFTER 32
static void prune_gone(struct log_share *s) {
  for (int i = 0; i < SHARE_HANDLES; i++) {
    int32_t p = atomic_load_explicit(&s->hdr->handles[i], memory_order_relaxed);
    if (p && p != s->pid && log_pid_gone(p))
      atomic_compare_exchange_strong(&s->hdr->handles[i], &p, 0);
  }
}

/* Takes a free slot (or one whose writer died), set S_FILLING; -1 when none. */
static int claim(struct log_share *s) {
  static _Thread_local unsigned start;
  if (!start) start = (unsigned)syscall(SYS_gettid);
  for (int pass = 0; pass < 2; pass++)
    for (unsigned k = 0; k < SHARE_SLOTS; k++) {
      unsigned i = (start + k) % SHARE_SLOTS;
      struct share_slot *sl = &s->slots[i];
      uint32_t st = atomic_load(&sl->state);
      if (pass == 1 && (st == S_FILLING || st == S_DONE || st == S_READY || st == S_TAKEN) &&
          log_pid_gone(atomic_load(&sl->owner)) &&
          (st != S_TAKEN || log_pid_gone(atomic_load(&sl->holder)))) {
        /* its writer died (and the combiner that took it): nobody waits for it */
      } else if (st != S_FREE) {
        continue;
      }
      if (!atomic_compare_exchange_strong(&sl->state, &st, S_FILLING)) continue;
      atomic_store(&sl->owner, s->pid);
      return (int)i;
    }
  return -1;
}

/* ---- combining ---- */

struct drain {
  struct log_share *s;
  int n;
  int ix[SHARE_SLOTS];
  int rc[SHARE_SLOTS];
  int dup[SHARE_SLOTS];
  uint64_t off[SHARE_SLOTS];
  char msg[SHARE_SLOTS][sizeof((struct share_slot *)0)->msg];
  unsigned char buf[SHARE_DATA]; /* the slot being appended, copied */
};

static void receipt_key(unsigned char *k, int i) {
  memcpy(k, SHARE_RECEIPT, sizeof SHARE_RECEIPT - 1);
  be32_put(k + sizeof SHARE_RECEIPT - 1, (uint32_t)i);
}
#define RECEIPT_KEY_LEN (sizeof SHARE_RECEIPT - 1 + 4)

/* Appends slot k's event with its receipt in w->txn. Sets d->off[k] and d->dup[k]. */
static int put_slot(log_wtx *w, struct drain *d, int k) {
  struct share_slot *sl = &d->s->slots[d->ix[k]];
  const char *topic;
  engram_event ev;
  engram_header headers[ENGRAM_MAX_HEADERS];
  d->dup[k] = 0;
  d->off[k] = 0;
  /* Decoded from a copy: the slot is another process's memory. */
  size_t len = sl->len < SHARE_DATA ? sl->len : SHARE_DATA;
  memcpy(d->buf, sl->data, len);
  if (log_share_decode(d->buf, len, &topic, &ev, headers))
    return log_error(w->log, ENGRAM_EINTERNAL, "append: the shared slot %d is damaged", d->ix[k]);
  log_error_clear(w->log);
  int rc = log_append_in(w, topic, &ev, &d->off[k], &d->dup[k]);
  if (rc) return rc;
  unsigned char key[RECEIPT_KEY_LEN], val[16];
  receipt_key(key, d->ix[k]);
  be64_put(val, sl->ticket);
  be64_put(val + 8, d->off[k] | (d->dup[k] ? 1ull << 63 : 0));
  MDB_val kv = {sizeof key, key}, vv = {sizeof val, val};
  rc = mdb_put(w->txn, w->log->db_meta, &kv, &vv, 0);
  return rc == 0 ? 0 : rc == MDB_MAP_FULL ? LOG_EMAPFULL : log_err_mdb(rc);
}

/* Runs slots [from, to) in one nested transaction of w's. Returns 0 with all of them
 * appended, or the first failure with none. */
static int put_slots(log_wtx *w, struct drain *d, int from, int to) {
  MDB_txn *parent = w->txn, *child;
  int rc = mdb_txn_begin(w->log->env, parent, 0, &child);
  if (rc) return rc == MDB_MAP_FULL ? LOG_EMAPFULL : log_err_mdb(rc);
  struct log_touched *mark = w->touched;
  w->txn = child;
  for (int k = from; k < to && rc == 0; k++) rc = put_slot(w, d, k);
  w->txn = parent;
  if (rc == 0 && (rc = mdb_txn_commit(child)))
    rc = rc == MDB_MAP_FULL ? LOG_EMAPFULL : log_err_mdb(rc);
  else if (rc)
    mdb_txn_abort(child);
  if (rc) log_touch_rollback(w, mark);
  return rc;
}

/* The combiner's write job: takes every ready slot of its fingerprint and appends each
 * event with its receipt: all in one nested transaction, or, when one of them fails,
 * each in a nested transaction of its own, so that it fails alone (a nested transaction
 * per slot every time cost the combiner a page copy per slot and page). Reruns (the
 * leader grows the map and runs the batch again) append the slots taken before once
 * more, in the new transaction. */
static int drain_job(log_wtx *w, void *arg) {
  struct drain *d = arg;
  struct log_share *s = d->s;
  for (int i = 0; i < SHARE_SLOTS && d->n < SHARE_SLOTS; i++) {
    struct share_slot *sl = &s->slots[i];
    uint32_t st = S_READY;
    if (atomic_load(&sl->state) != S_READY || sl->fp != s->fp) continue;
    atomic_store(&sl->holder, s->pid); /* before the slot is seen taken */
    if (atomic_compare_exchange_strong(&sl->state, &st, S_TAKEN)) d->ix[d->n++] = i;
  }
  if (s->test_die == 1 && d->n) raise(SIGKILL);
  for (int k = 0; k < d->n; k++) {
    d->rc[k] = 0;
    d->msg[k][0] = '\0';
  }
  int rc = d->n > 1 ? put_slots(w, d, 0, d->n) : -1;
  if (rc == 0 || rc == LOG_EMAPFULL || rc == LOG_ENEWDBI) return rc; /* LOG_*: all again */
  for (int k = 0; k < d->n; k++) {
    rc = put_slots(w, d, k, k + 1);
    if (rc == LOG_EMAPFULL || rc == LOG_ENEWDBI) return rc;
    d->rc[k] = rc;
    if (rc) snprintf(d->msg[k], sizeof d->msg[k], "%s", log_errmsg(w->log));
  }
  return 0;
}

static int count_ready(struct log_share *s) {
  int n = 0;
  for (int i = 0; i < SHARE_SLOTS; i++)
    n += atomic_load_explicit(&s->slots[i].state, memory_order_relaxed) == S_READY;
  return n;
}

/* Sync mode: waits up to one flush's time for as many ready slots as the last combine of
 * this handle carried, so that writers coming back from it share the next commit. Async
 * mode: yields the CPU a few times instead (eight processes: 1.06-1.15x the appends/s,
 * p99 2-3x lower). */
static void gather(struct log *log, struct log_share *s) {
  if (log->opts.durability == ENGRAM_DURABILITY_ASYNC) {
    /* No flush to wait for: only a few turns of the CPU for runnable writers. */
    for (int k = 0; k < SHARE_ASYNC_YIELDS && s->expected > 1 && count_ready(s) < s->expected; k++)
      sched_yield();
    return;
  }
  if (log->opts.durability != ENGRAM_DURABILITY_SYNC || s->expected < 2) return;
  int64_t wait = log->last_flush_ns;
  if (wait > SHARE_GATHER_MAX_NS) wait = SHARE_GATHER_MAX_NS;
  if (wait <= 0) return;
  int64_t until = clock_monotonic_ns() + wait;
  atomic_store(&s->hdr->want, (uint32_t)s->expected);
  atomic_fetch_add(&s->hdr->gathering, 1);
  for (;;) {
    uint32_t seen = atomic_load(&s->hdr->ready);
    int n = count_ready(s);
    int64_t left = until - clock_monotonic_ns();
    if (n >= s->expected || left <= 0) {
      if (left <= 0) s->expected = n;
      break;
    }
    struct timespec ts = {left / 1000000000, left % 1000000000};
    log_futex((void *)&s->hdr->ready, FUTEX_WAIT, seen, &ts);
  }
  atomic_fetch_sub(&s->hdr->gathering, 1);
}

/* Gives up the combiner's role and wakes a writer whose slot is ready to take it, if that
 * writer sleeps (one that yields the CPU sees the role free by itself). */
static void hand_over(struct log_share *s) {
  atomic_store(&s->hdr->combiner, 0);
  for (int i = 0; i < SHARE_SLOTS; i++)
    if (atomic_load(&s->slots[i].state) == S_READY) {
      if (atomic_load(&s->slots[i].sleeping))
        log_futex((void *)&s->slots[i].state, FUTEX_WAKE, 1, NULL);
      break;
    }
}

/* Commits every ready slot (durably, as the handle commits its own writes), hands each
 * slot its result, then hands the combiner's role on. Holding the role through the flush
 * lets the writers coming back meanwhile gather for the next commit; letting the next
 * combiner commit during the flush was measured slower (smaller commits, flushes queued
 * one behind the other). Called with the role held. */
static void combine(struct log *log, struct log_share *s) {
  for (int64_t end = clock_monotonic_ns() + 10000000000ll;
       s->test_ready && clock_monotonic_ns() < end;) {
    int n = 0;
    for (int i = 0; i < SHARE_SLOTS; i++) n += atomic_load(&s->slots[i].state) == S_READY;
    if (n >= s->test_ready) break;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  gather(log, s);
  struct drain *d = malloc(sizeof *d);
  if (!d) {
    hand_over(s); /* the slots stay ready: the writers look again after their poll */
    return;
  }
  d->s = s;
  d->n = 0;
  int rc = log_write(log, drain_job, d);
  if (s->test_die == 2 && rc == 0) raise(SIGKILL);
  char msg[sizeof d->msg[0]];
  snprintf(msg, sizeof msg, "%s", log_errmsg(log));
  if (d->n) s->expected = d->n;
  int carried = 0, foreign = 0;
  for (int k = 0; k < d->n; k++) {
    struct share_slot *sl = &s->slots[d->ix[k]];
    sl->rc = rc < 0 ? rc : d->rc[k];
    sl->offset = d->off[k];
    sl->dup = d->dup[k];
    snprintf(sl->msg, sizeof sl->msg, "%s", rc < 0 ? msg : d->msg[k]);
    int other = atomic_load(&sl->owner) != s->pid;
    foreign += other;
    carried += other && sl->rc == 0;
    atomic_store(&sl->state, S_DONE);
    if (atomic_load(&sl->sleeping)) wake_all(&sl->state);
  }
  free(d);
  hand_over(s);
  if (foreign) {
    s->solo = 0;
  } else if (++s->solo == SHARE_PRUNE_AFTER) {
    s->solo = 0;
    prune_gone(s);
  }
  pthread_mutex_lock(&log->mu);
  log->st_appends_carried += (uint64_t)carried;
  pthread_mutex_unlock(&log->mu);
}

/* The slot's combiner died with it taken: the receipt in the log says whether its commit
 * happened. Returns 1 when the slot is done (results set), 0 when offered again. */
static int resolve(struct log *log, struct log_share *s, int i) {
  struct share_slot *sl = &s->slots[i];
  MDB_txn *txn;
  unsigned char key[RECEIPT_KEY_LEN];
  receipt_key(key, i);
  int found = 0;
  uint64_t v = 0;
  pthread_rwlock_rdlock(&log->map_lock);
  int rc = mdb_txn_begin(log->env, NULL, MDB_RDONLY, &txn);
  if (rc == 0) {
    MDB_val kv = {sizeof key, key}, vv;
    if (mdb_get(txn, log->db_meta, &kv, &vv) == 0 && vv.mv_size == 16 &&
        be64_get(vv.mv_data) == sl->ticket) {
      found = 1;
      v = be64_get((unsigned char *)vv.mv_data + 8);
    }
    mdb_txn_abort(txn);
  }
  pthread_rwlock_unlock(&log->map_lock);
  if (rc) return 0; /* looked at again after the next poll */
  if (!found) {
    atomic_store(&sl->holder, 0);
    atomic_store(&sl->state, S_READY);
    return 0;
  }
  sl->offset = v & ~(1ull << 63);
  sl->dup = (int)(v >> 63);
  sl->rc = 0;
  sl->msg[0] = '\0';
  /* Its combiner may have died before its flush. */
  if (log->opts.durability != ENGRAM_DURABILITY_ASYNC && (rc = log_sync(log)) < 0) {
    sl->rc = rc;
    snprintf(sl->msg, sizeof sl->msg, "%s", log_errmsg(log));
  }
  atomic_store(&sl->state, S_DONE);
  return 1;
}

int log_share_append(struct log *log, const char *topic, const engram_event *ev, uint64_t *offset,
                     int *duplicate) {
  struct log_share *s = log->share;
  if (!s || log_foreign(log) || !others(s) || log_in_write_job()) return LOG_SHARE_LOCAL;
  int i = claim(s);
  if (i < 0) return LOG_SHARE_LOCAL;
  struct share_slot *sl = &s->slots[i];
  size_t n = log_share_encode(topic, ev, sl->data, SHARE_DATA);
  if (n == 0) {
    atomic_store(&sl->state, S_FREE);
    return LOG_SHARE_LOCAL; /* too big for a slot */
  }
  sl->len = (uint32_t)n;
  atomic_store(&sl->sleeping, 0);
  sl->fp = s->fp;
  sl->ticket = atomic_fetch_add(&s->hdr->tickets, 1);
  atomic_store(&sl->holder, 0);
  atomic_store(&sl->state, S_READY);
  if (atomic_load(&s->hdr->gathering)) {
    /* The word always moves (a combiner about to sleep on it looks again); the combiner
     * is woken only once the slots it waits for are ready, not for each of them. Of two
     * writers that make the last two ready at once, at least one counts both. */
    atomic_fetch_add(&s->hdr->ready, 1);
    atomic_thread_fence(memory_order_seq_cst);
    if ((uint32_t)count_ready(s) >= atomic_load(&s->hdr->want)) wake_all(&s->hdr->ready);
  }
  int looked = 0; /* a wait timed out: see whether the combiner lives */
  int spins = 0;
  for (;;) {
    uint32_t st = atomic_load(&sl->state);
    if (st == S_DONE) break;
    if (st == S_READY) {
      int32_t c = atomic_load(&s->hdr->combiner);
      if (c == 0) {
        if (atomic_compare_exchange_strong(&s->hdr->combiner, &c, s->pid)) combine(log, s);
        continue;
      }
      if (looked && c != s->pid && log_pid_gone(c)) {
        atomic_compare_exchange_strong(&s->hdr->combiner, &c, 0);
        looked = 0;
        continue;
      }
    } else if (st == S_TAKEN && looked) {
      int32_t h = atomic_load(&sl->holder);
      if (h != s->pid && log_pid_gone(h)) {
        int32_t c = h;
        atomic_compare_exchange_strong(&s->hdr->combiner, &c, 0);
        resolve(log, s, i);
        looked = 0;
        continue;
      }
    }
    if (spins < SHARE_ASYNC_SPINS && log->opts.durability == ENGRAM_DURABILITY_ASYNC) {
      spins++;
      sched_yield(); /* a combine in async mode is short: the result comes meanwhile */
      continue;
    }
    atomic_store(&sl->sleeping, 1); /* before the state is looked at again by the wait */
    /* A combiner handing over wakes only writers marked asleep: look at the role once
     * more after the mark, so that a hand-over just before it is not slept through. */
    if (st == S_READY && atomic_load(&s->hdr->combiner) == 0) continue;
    struct timespec ts = {0, SHARE_POLL_MS * 1000000L};
    looked = log_futex((void *)&sl->state, FUTEX_WAIT, st, &ts) < 0 && errno == ETIMEDOUT;
  }
  int rc = sl->rc;
  if (rc == 0) {
    pthread_mutex_lock(&log->mu);
    log->st_appends_shared++;
    pthread_mutex_unlock(&log->mu);
    if (offset) *offset = sl->offset;
    if (duplicate) *duplicate = sl->dup;
    log_error_clear(log);
  } else {
    log_error(log, rc, "%s", sl->msg);
  }
  atomic_store(&sl->state, S_FREE);
  return rc;
}
