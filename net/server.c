/* server.c — engram_serve: options checked, the directory locked, sockets and threads
 * started, stopped on a signal or engram_serve_stop(), and torn down. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/http.h"
#include "net/server.h"

volatile sig_atomic_t server_stop_requested;
volatile sig_atomic_t server_hup_requested;
static volatile int stop_fd = -1;
static _Atomic int serving;

/* Wakes the main loop (async-signal-safe: one write to the eventfd). */
static void wake_main(void) {
  int fd = stop_fd;
  if (fd >= 0) {
    uint64_t one = 1;
    ssize_t r = write(fd, &one, sizeof one);
    (void)r;
  }
}

void net_serve_stop(void) {
  server_stop_requested = 1;
  wake_main();
}

static void on_signal(int sig) {
  (void)sig;
  engram_serve_stop();
}

/* SIGHUP (a service manager's reload, logrotate, a closed terminal) must not kill the
 * daemon: the main loop is woken to reload the allow-list and reopen the log file. */
static void on_hup(int sig) {
  (void)sig;
  server_hup_requested = 1;
  wake_main();
}

/* ---------------------------------------------------------------------------------
 * Start and stop.
 * ------------------------------------------------------------------------------ */
static int zerr(int e) {
  switch (e) {
    case EADDRINUSE:
      return ENGRAM_EBUSY;
    case EINVAL:
    case EPROTONOSUPPORT:
    case ENOCOMPATPROTO:
    case ENODEV:
    case EADDRNOTAVAIL:
      return ENGRAM_EINVAL;
    case ENOMEM:
      return ENGRAM_ENOMEM;
    case ENAMETOOLONG:
      return ENGRAM_EINVAL;
    case EACCES:
      return ENGRAM_EDENIED;
    default:
      return ENGRAM_EIO;
  }
}

static int take_lock(struct net_server *s) {
  char path[4200];
  snprintf(path, sizeof path, "%s/daemon.lock", s->dir);
  s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (s->lock_fd < 0)
    return log_error(NULL, err_from_errno(errno), "serve %s: cannot open %s: %s", s->dir, path,
                     strerror(errno));
  if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
    int e = errno;
    char pid[32] = "";
    ssize_t n = pread(s->lock_fd, pid, sizeof pid - 1, 0);
    if (n > 0) pid[n] = '\0';
    char *nl = strchr(pid, '\n');
    if (nl) *nl = '\0';
    close(s->lock_fd);
    s->lock_fd = -1;
    if (e == EWOULDBLOCK)
      return log_error(NULL, ENGRAM_EBUSY,
                       "serve %s: another engram serve%s%s%s already serves this directory", s->dir,
                       *pid ? " (pid " : "", pid, *pid ? ")" : "");
    return log_error(NULL, err_from_errno(e), "serve %s: cannot lock %s: %s", s->dir, path,
                     strerror(e));
  }
  char buf[64];
  int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
  if (ftruncate(s->lock_fd, 0) == 0 &&
      pwrite(s->lock_fd, buf, (size_t)n, 0) != n) { /* informative only */
  }
  return 0;
}

static void *mksock(struct net_server *s, int type, int *rc) {
  void *z = zmq_socket(s->zctx, type);
  if (!z)
    *rc = log_error(NULL, zerr(errno), "serve: cannot make a socket: %s", zmq_strerror(errno));
  return z;
}

static int setup_curve(struct net_server *s, void *sock) {
  int one = 1;
  char key[41];
  snprintf(key, sizeof key, "%s", s->o.secret_key);
  if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
      zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, key, 41) ||
      zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "engram", 6))
    return log_error(NULL, ENGRAM_EINVAL, "serve: CURVE setup failed: %s", zmq_strerror(errno));
  return 0;
}

static int bind_ep(struct net_server *s, void *sock, const char *ep, char *actual, size_t cap,
                   const char *what) {
  if (zmq_bind(sock, ep) != 0) {
    int e = errno;
    return log_error(NULL, zerr(e), "serve: cannot listen for %s on %s: %s", what, ep,
                     zmq_strerror(e));
  }
  size_t n = cap;
  if (!actual) return 0;
  if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, actual, &n) != 0) snprintf(actual, cap, "%s", ep);
  return 0;
}

static int check_options(const char *dir, const engram_serve_options *o) {
  if (!dir || !*dir || strlen(dir) > 3800)
    return log_error(NULL, ENGRAM_EINVAL, "serve: invalid data directory");
  if (o->listen && !*o->listen)
    return log_error(NULL, ENGRAM_EINVAL, "serve: empty listen endpoint");
  if (o->notify && !*o->notify)
    return log_error(NULL, ENGRAM_EINVAL, "serve: empty notify endpoint");
  int rc = 0;
  if ((o->listen && (rc = net_endpoint_check("serve: listen", o->listen, 1))) ||
      (o->notify && (rc = net_endpoint_check("serve: notify", o->notify, 1))))
    return rc;
  if ((unsigned)o->durability > ENGRAM_DURABILITY_ASYNC)
    return log_error(NULL, ENGRAM_EINVAL, "serve: unknown durability mode %d", o->durability);
  if (o->workers > NET_MAX_WORKERS)
    return log_error(NULL, ENGRAM_EINVAL, "serve: %u workers over limit %d", o->workers,
                     NET_MAX_WORKERS);
  if (o->max_message && o->max_message < NET_MIN_MAX_MESSAGE)
    return log_error(NULL, ENGRAM_EINVAL, "serve: max_message %u under %u bytes", o->max_message,
                     NET_MIN_MAX_MESSAGE);
  rc = http_check_options(o->http, o->http_token);
  if (rc) return rc;
  unsigned char k[32];
  if (o->secret_key || o->public_key || o->n_allow_keys || o->allow_keys_file) {
    if (!zmq_has("curve"))
      return log_error(NULL, ENGRAM_ENOTSUP, "serve: this libzmq has no CURVE support");
    if (!server_valid_z85_key(o->secret_key, k))
      return log_error(NULL, ENGRAM_EINVAL, "serve: CURVE secret key must be 40 Z85 characters");
    if (o->public_key && !server_valid_z85_key(o->public_key, k))
      return log_error(NULL, ENGRAM_EINVAL, "serve: CURVE public key must be 40 Z85 characters");
    if ((o->n_allow_keys == 0 || !o->allow_keys) && !o->allow_keys_file)
      return log_error(NULL, ENGRAM_EINVAL, "serve: CURVE needs a list of allowed client keys");
    for (size_t i = 0; i < o->n_allow_keys; i++)
      if (!server_valid_z85_key(o->allow_keys[i], k))
        return log_error(NULL, ENGRAM_EINVAL, "serve: allowed key %zu is not 40 Z85 characters",
                         i + 1);
  }
  return 0;
}

static void teardown(struct net_server *s) {
  http_stop(s->http); /* its handlers use the handle: first */
  s->http = NULL;
  if (s->workers) {
    pthread_mutex_lock(&s->mu);
    s->exiting = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_workers; i++) pthread_join(s->workers[i], NULL);
    free(s->workers);
    s->workers = NULL;
  }
  if (s->replies) server_forward_replies(s);
  if (s->zap_running) {
    s->zap_stop = 1;
    pthread_join(s->zap_thread, NULL);
  }
  /* Jobs still queued (a start that failed half-way) are dropped. */
  while (s->q_head) {
    struct job *j = s->q_head;
    s->q_head = j->next;
    server_job_free(j);
  }
  while (s->w_head) {
    struct job *j = s->w_head;
    s->w_head = j->next;
    server_job_free(j);
  }
  while (s->parked) {
    struct job *j = s->parked;
    s->parked = j->next;
    server_job_free(j);
  }
  for (int i = 0; i < LANE_BUCKETS; i++) {
    while (s->lanes[i]) {
      struct lane *l = s->lanes[i];
      s->lanes[i] = l->next;
      while (l->head) {
        struct job *j = l->head;
        l->head = j->next;
        server_job_free(j);
      }
      free(l);
    }
  }
  for (int i = 0; i < SEQ_BUCKETS; i++) {
    while (s->seqs[i]) {
      struct tseq *t = s->seqs[i];
      s->seqs[i] = t->next;
      free(t);
    }
  }
  int linger = 2000, zero = 0;
  if (s->accept_mon) {
    zmq_socket_monitor(s->router, NULL, 0);
    zmq_setsockopt(s->accept_mon, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(s->accept_mon);
  }
  if (s->router) {
    zmq_setsockopt(s->router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(s->router);
  }
  if (s->pub) {
    zmq_setsockopt(s->pub, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(s->pub);
  }
  if (s->in_pull) {
    zmq_setsockopt(s->in_pull, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(s->in_pull);
  }
  if (s->replies) zmq_close(s->replies);
  if (s->zap) zmq_close(s->zap);
  if (s->zctx) zmq_ctx_term(s->zctx);
  if (s->in_path[0]) unlink(s->in_path);
  if (s->notify_path[0]) unlink(s->notify_path);
  if (s->log) {
    net_notify_set_daemon(api_log(s->log), NULL, NULL);
    engram_close(s->log);
  }
  if (s->wake_fd >= 0) close(s->wake_fd);
  if (s->lock_fd >= 0) close(s->lock_fd);
  free(s->allow);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->log_mu);
  pthread_mutex_destroy(&s->allow_mu);
}

static int start(struct net_server *s) {
  int rc = 0;
  /* The daemon runs retention in the background (an explicit interval: the default one). */
  engram_options lo = {.durability = s->o.durability, .maintenance_ms = 1000};
  rc = engram_open(s->dir, &lo, &s->log);
  if (rc) {
    s->log = NULL;
    return rc;
  }
  /* A client waiting for its ack comes back a network round trip after its reply: the
   * commit leader waits about that long for released writers to queue again. */
  api_log(s->log)->gather_max_ns = NET_GATHER_NS;
  if ((rc = take_lock(s))) return rc;
  net_notify_set_daemon(api_log(s->log), server_on_commit, s);

  if ((s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
    return log_error(NULL, err_from_errno(errno), "serve: eventfd: %s", strerror(errno));
  if (!(s->zctx = net_zmq_ctx_new()))
    return log_error(NULL, ENGRAM_ENOMEM, "serve: cannot make a ZeroMQ context");
  zmq_ctx_set(s->zctx, ZMQ_IO_THREADS, 1);

  int curve = s->o.secret_key != NULL;
  if (curve) {
    if (!(s->zap = mksock(s, ZMQ_REP, &rc))) return rc;
    if ((rc = bind_ep(s, s->zap, ZAP_EP, NULL, 0, "authentication"))) return rc;
    if (pthread_create(&s->zap_thread, NULL, server_zap_main, s) != 0)
      return log_error(NULL, ENGRAM_ENOMEM, "serve: cannot start the authentication thread");
    s->zap_running = 1;
  }

  if (!(s->router = mksock(s, ZMQ_ROUTER, &rc))) return rc;
  int64_t maxmsg = s->o.max_message;
  int hwm = 10000, zero = 0;
  zmq_setsockopt(s->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
  zmq_setsockopt(s->router, ZMQ_SNDHWM, &hwm, sizeof hwm);
  zmq_setsockopt(s->router, ZMQ_RCVHWM, &hwm, sizeof hwm);
  zmq_setsockopt(s->router, ZMQ_LINGER, &zero, sizeof zero);
  int hb = 2000, hbt = 6000;
  zmq_setsockopt(s->router, ZMQ_HEARTBEAT_IVL, &hb, sizeof hb);
  zmq_setsockopt(s->router, ZMQ_HEARTBEAT_TIMEOUT, &hbt, sizeof hbt);
  if (curve && (rc = setup_curve(s, s->router))) return rc;
  const char *listen = s->o.listen ? s->o.listen : NET_DEFAULT_LISTEN;
  if ((rc = bind_ep(s, s->router, listen, s->listen_ep, sizeof s->listen_ep, "requests")))
    return rc;
  /* Out of descriptors, libzmq's listener fails every accept, silently and at full speed:
   * its monitor tells the main loop, which says so in the log. libzmq sends a monitor
   * event blocking, on its I/O thread: an unbounded queue to this side keeps a flood of
   * them from ever stopping that thread (or a stop of the monitor from waiting on it). */
  int unbounded = 0;
  if (zmq_socket_monitor(s->router, ACCEPT_MON_EP, ZMQ_EVENT_ACCEPT_FAILED) == 0 &&
      (s->accept_mon = zmq_socket(s->zctx, ZMQ_PAIR)) != NULL &&
      (zmq_setsockopt(s->accept_mon, ZMQ_RCVHWM, &unbounded, sizeof unbounded) != 0 ||
       zmq_connect(s->accept_mon, ACCEPT_MON_EP) != 0)) {
    zmq_close(s->accept_mon);
    s->accept_mon = NULL;
  }

  /* We hold the directory's daemon lock, so ipc files left there are stale. */
  if (net_ipc_path(s->dir, "notify-in.ipc", s->in_path, sizeof s->in_path) < 0)
    return log_error(NULL, ENGRAM_EINVAL, "serve %s: path too long for an ipc socket", s->dir);
  char ep[600];
  if (!(s->pub = mksock(s, ZMQ_PUB, &rc))) return rc;
  zmq_setsockopt(s->pub, ZMQ_SNDHWM, &hwm, sizeof hwm);
  if (s->o.notify) {
    snprintf(ep, sizeof ep, "%s", s->o.notify);
    if (curve && strncmp(ep, "ipc://", 6) && (rc = setup_curve(s, s->pub))) return rc;
  } else {
    if (net_ipc_path(s->dir, "notify.ipc", s->notify_path, sizeof s->notify_path) < 0)
      return log_error(NULL, ENGRAM_EINVAL, "serve %s: path too long for an ipc socket", s->dir);
    unlink(s->notify_path);
    snprintf(ep, sizeof ep, "ipc://%s", s->notify_path);
  }
  if ((rc = bind_ep(s, s->pub, ep, s->notify_ep, sizeof s->notify_ep, "notifications"))) return rc;

  if (!(s->in_pull = mksock(s, ZMQ_PULL, &rc))) return rc;
  int64_t small = 4096;
  zmq_setsockopt(s->in_pull, ZMQ_MAXMSGSIZE, &small, sizeof small);
  unlink(s->in_path);
  snprintf(ep, sizeof ep, "ipc://%s", s->in_path);
  if ((rc = bind_ep(s, s->in_pull, ep, NULL, 0, "embedded writers"))) return rc;

  if (!(s->replies = mksock(s, ZMQ_PULL, &rc))) return rc;
  int big = 0;
  zmq_setsockopt(s->replies, ZMQ_RCVHWM, &big, sizeof big);
  if ((rc = bind_ep(s, s->replies, REPLIES_EP, NULL, 0, "replies"))) return rc;

  s->main_thread = pthread_self(); /* before any thread that reads it starts */
  s->test_ack_no_flush = getenv("ENGRAM_TEST_ACK_NO_FLUSH") != NULL;
  const char *hold = getenv("ENGRAM_TEST_ACK_HOLD_MS");
  s->ack_hold_ms = hold && *hold ? atoi(hold) : CG_ACK_HOLD_MS;
  s->n_workers = s->o.workers ? (int)s->o.workers : net_default_workers();
  s->workers = calloc((size_t)s->n_workers, sizeof *s->workers);
  if (!s->workers) return log_error(NULL, ENGRAM_ENOMEM, "serve: out of memory");
  for (int i = 0; i < s->n_workers; i++) {
    struct worker *w = calloc(1, sizeof *w);
    if (w) w->s = s;
    if (w && (w->push = zmq_socket(s->zctx, ZMQ_PUSH)) != NULL) {
      zmq_setsockopt(w->push, ZMQ_SNDHWM, &big, sizeof big);
      zmq_connect(w->push, REPLIES_EP);
    }
    if (!w || !w->push || pthread_create(&s->workers[i], NULL, server_worker_thread, w) != 0) {
      if (w && w->push) zmq_close(w->push);
      free(w);
      s->n_workers = i;
      return log_error(NULL, ENGRAM_ENOMEM, "serve: cannot start worker %d", i);
    }
  }
  return http_start(s, s->log, s->o.http, s->o.http_token, &s->http, s->http_ep, sizeof s->http_ep);
}

/* A daemon holds a descriptor per connection: its soft limit of open files is raised to
 * the hard one (at most NOFILE_CAP), as servers do; the default soft limit of 1024 would
 * cap it near a thousand clients. */
#define NOFILE_CAP 1048576
static void raise_nofile(struct net_server *s) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  s->nofile = s->nofile_was = rl.rlim_cur;
  rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > NOFILE_CAP ? NOFILE_CAP : rl.rlim_max;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0) s->nofile = want;
  }
}

int net_serve(const char *data_dir, const engram_serve_options *opts) {
  engram_serve_options o = opts ? *opts : (engram_serve_options){0};
  int rc = check_options(data_dir, &o);
  if (rc) return rc;
  int expected = 0;
  if (!atomic_compare_exchange_strong(&serving, &expected, 1))
    return log_error(NULL, ENGRAM_EBUSY, "serve: this process already runs a daemon");
  if (!o.max_message) o.max_message = NET_DEFAULT_MAX_MESSAGE;

  struct net_server *s = calloc(1, sizeof *s);
  if (!s) {
    serving = 0;
    return log_error(NULL, ENGRAM_ENOMEM, "serve: out of memory");
  }
  snprintf(s->dir, sizeof s->dir, "%s", data_dir);
  s->o = o;
  s->log_json = o.log_json;
  s->journal = !o.log_file && server_stderr_is_journal();
  s->wake_fd = -1;
  s->lock_fd = -1;
  s->log_fd = STDERR_FILENO;
  s->started_ns = clock_monotonic_ns();
  raise_nofile(s);
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  pthread_mutex_init(&s->log_mu, NULL);
  pthread_mutex_init(&s->allow_mu, NULL);

  server_stop_requested = 0;
  server_hup_requested = 0;
  struct sigaction sa, hup, old_term, old_int, old_hup;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, &old_term);
  sigaction(SIGINT, &sa, &old_int);
  hup = sa;
  hup.sa_handler = on_hup;
  sigaction(SIGHUP, &hup, &old_hup);

  /* The allow-list and the log file first: a bad one must not leave a new log behind. */
  rc = o.secret_key ? server_allow_load(s, 0) : 0;
  if (!rc) rc = server_log_open(s, 0);
  if (!rc) rc = start(s);
  if (rc) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", engram_errmsg(NULL));
    stop_fd = -1;
    teardown(s);
    log_error(NULL, rc, "%s", msg);
  } else {
    stop_fd = s->wake_fd;
    const char *dnames[] = {"sync", "nometasync", "async"};
    server_log(s, "info", "start",
               "engram %s serving %s (pid %ld, durability %s, %d workers, protocol %d)",
               ENGRAM_VERSION_STRING, s->dir, (long)getpid(), dnames[o.durability], s->n_workers,
               ENGRAM_PROTOCOL_VERSION);
    server_log(s, "info", "listen", "requests on %s%s", s->listen_ep,
               o.secret_key ? " (CURVE, allow-listed keys only)" : "");
    server_log(s, "info", "notify", "notifications on %s", s->notify_ep);
    if (s->nofile != s->nofile_was)
      server_log(s, "info", "limits", "open files: %llu (raised from %llu)",
                 (unsigned long long)s->nofile, (unsigned long long)s->nofile_was);
    if (s->nofile < 4096)
      server_log(s, "warn", "limits",
                 "open files limited to %llu: each connection holds one; raise the hard limit "
                 "(LimitNOFILE= in the unit, ulimit -Hn) to serve more clients",
                 (unsigned long long)s->nofile);
    if (s->http)
      server_log(s, "info", "http", "dashboard and metrics on http://%s/%s", s->http_ep,
                 o.http_token ? " (token required)" : "");
    if (strncmp(s->listen_ep, "tcp://127.", 10) && strncmp(s->listen_ep, "tcp://[::1]", 11) &&
        strncmp(s->listen_ep, "ipc://", 6) && strncmp(s->listen_ep, "inproc://", 9) &&
        !o.secret_key)
      server_log(s, "warn", "listen", "%s is reachable beyond this host and CURVE is off",
                 s->listen_ep);
    char ready[5200];
    snprintf(ready, sizeof ready, "READY=1\nMAINPID=%ld\nSTATUS=serving %s on %s", (long)getpid(),
             s->dir, s->listen_ep);
    server_sd_notify(ready);
    server_main_loop(s);
    stop_fd = -1;
    uint64_t served = s->requests;
    double up = (double)(clock_monotonic_ns() - s->started_ns) / 1e9;
    teardown(s);
    server_log(s, "info", "stopped", "served %llu requests in %.1f s", (unsigned long long)served,
               up);
  }
  if (s->log_fd != STDERR_FILENO) close(s->log_fd);
  sigaction(SIGTERM, &old_term, NULL);
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGHUP, &old_hup, NULL);
  free(s);
  serving = 0;
  return rc;
}

/* ---------------------------------------------------------------------------------
 * What ops.c asks of the daemon.
 * ------------------------------------------------------------------------------ */
void net_server_stats(struct net_server *s, Engram__Wire__StatsResult *st) {
  st->uptime_ms = (uint64_t)(clock_monotonic_ns() - s->started_ns) / 1000000;
  st->requests = s->requests;
  st->errors = s->errors;
  st->bad_requests = s->bad;
  st->appended = s->appended;
  st->notifications = s->notifications;
  st->workers = (uint32_t)s->n_workers;
  pthread_mutex_lock(&s->mu);
  st->queued = (uint32_t)s->queued;
  st->parked = (uint32_t)s->n_parked;
  pthread_mutex_unlock(&s->mu);
  st->version = ENGRAM_VERSION_STRING;
  st->durability = (uint32_t)s->o.durability;
  st->max_message = s->o.max_message;
  st->max_events = NET_MAX_EVENTS;
  st->protocol_version = ENGRAM_PROTOCOL_VERSION;
  st->curve = s->o.secret_key != NULL;
  engram_commit_stats cs;
  if (engram_commit_stats_get(s->log, &cs) == 0) {
    st->commits = cs.commits;
    st->flushes = cs.flushes;
  }
}

uint32_t net_server_max_message(const struct net_server *s) { return s->o.max_message; }

/* One worker per core, at least two: requests and parked fetches are never left to wait
 * on a worker (a long poll holds none), so more threads than cores only add hand-offs;
 * the second keeps a lane's next batch forming while the first waits for its flush. */
int net_default_workers(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 2) n = 2;
  if (n > NET_MAX_WORKERS) n = NET_MAX_WORKERS;
  return (int)n;
}

void net_server_count_appended(struct net_server *s, uint64_t n) { s->appended += n; }
