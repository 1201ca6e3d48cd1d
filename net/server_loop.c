/* server_loop.c — the daemon's main thread: requests read off the ROUTER and queued,
 * replies forwarded, embedded writers' commits published, parked fetches timed. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/server.h"

/* Hello and stats; fetches and acks unless every commit is synced (appends go to lanes). */
static int quick_op(const struct net_server *s, int op) {
  return op == ENGRAM__WIRE__REQUEST__OP_HELLO || op == ENGRAM__WIRE__REQUEST__OP_STATS ||
         (s->o.durability != ENGRAM_DURABILITY_SYNC &&
          (op == ENGRAM__WIRE__REQUEST__OP_FETCH || op == ENGRAM__WIRE__REQUEST__OP_ACK ||
           op == ENGRAM__WIRE__REQUEST__OP_ACK_FETCH));
}

/* Fetches parked on a topic that a commit just woke: the main thread runs a few itself,
 * replying straight to the ROUTER, instead of handing them to a worker and back (two
 * thread wake-ups on the path from an append to a waiting consumer). A woken fetch never
 * flushes: its acks, if any, were committed before it parked. The rest, if more were
 * woken, are left to the workers. Called with s->running counting the caller. */
#define WOKEN_HERE 4
static void run_woken_here(struct net_server *s, struct worker *here) {
  for (int n = 0; n < WOKEN_HERE; n++) {
    pthread_mutex_lock(&s->mu);
    struct job *j =
        s->w_head && !s->stopping ? server_job_pop_locked(s, &s->w_head, &s->w_tail) : NULL;
    pthread_mutex_unlock(&s->mu);
    if (!j) return;
    server_run_job(s, here, j);
  }
}

/* Runs j on the main thread when that is the fastest way to answer it: the daemon is
 * idle (nothing queued, no worker running, no earlier request of this client waiting),
 * nothing else waits on the ROUTER, and the operation is quick: hello and stats; appends;
 * fetches and acks unless every commit is synced. The reply then leaves through the
 * ROUTER at once: no hand-off to a worker and back, two thread wake-ups that cost more
 * than the request itself on a machine with few cores. An append in sync mode runs here
 * too, flush and all: while the daemon is idle nobody else waits for the main thread
 * during that flush (measured: 1.15-1.5x the appends/s of one blocking client, the same
 * with eight). With more waiting, appends gather in lanes that run_burst_here runs after
 * the burst, as do the quick requests among them. Returns 1 when j was run (and freed). */
static int run_here(struct net_server *s, struct job *j) {
  int op = j->pk.op;
  if (op != ENGRAM__WIRE__REQUEST__OP_APPEND && !quick_op(s, op)) return 0;
  int ev = 0;
  size_t el = sizeof ev;
  if (zmq_getsockopt(s->router, ZMQ_EVENTS, &ev, &el) != 0 || (ev & ZMQ_POLLIN)) return 0;
  pthread_mutex_lock(&s->mu);
  int idle = s->queued == 0 && s->running == 0 && !s->stopping;
  if (idle && op == ENGRAM__WIRE__REQUEST__OP_APPEND) {
    const void *id = zmq_msg_data(&j->ident);
    size_t n = zmq_msg_size(&j->ident);
    for (struct lane *l = s->lanes[server_hash(id, n) % LANE_BUCKETS]; l; l = l->next)
      if (l->id_len == n && !memcmp(l->id, id, n)) idle = 0; /* its appends keep their order */
  }
  if (idle) s->running++;
  pthread_mutex_unlock(&s->mu);
  if (!idle) return 0;
  struct worker here = {.s = s, .push = s->router};
  server_run_job(s, &here, j);
  run_woken_here(s, &here);
  pthread_mutex_lock(&s->mu);
  s->running--;
  /* Parked fetches its commit or group change woke beyond those run here wait for the
   * committing thread to take them (server_on_commit does not signal): a worker's job. */
  if (s->w_head || s->q_head || s->ready_head) pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  return 1;
}

/* After a burst of requests: when no worker is busy, the main thread runs the appends of
 * every connection itself, as one commit (in sync mode with its flush, while the next
 * requests gather in the ROUTER for the next batch, as a single-threaded server's would)
 * and replies straight to the ROUTER. Handing them to a
 * worker costs two thread wake-ups and a pass of each reply through the inproc PUSH and
 * PULL, more CPU than the commit itself on a machine with few cores: served `append8`
 * measured 1.1-1.6x the appends/s (fsync row) and 1.1-1.3x (everyday) against the
 * workers, though those overlap one batch's flush with the next one's commit. The quick
 * requests at the head of the queue (quick_op: fetches and acks of a group drained by
 * several consumers) run here after them, each its own commit. Otherwise a worker is
 * woken for what the burst queued. */
static void run_burst_here(struct net_server *s) {
  pthread_mutex_lock(&s->mu);
  s->hold = 0;
  if (!s->ready_head && !s->q_head) {
    pthread_mutex_unlock(&s->mu);
    return;
  }
  if (s->running || s->w_head || s->stopping) {
    /* Each kind (lanes, requests) then has a worker of its own, as when each queued
     * request signalled one. */
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return;
  }
  struct lane *taken[LANE_TAKE];
  struct job *list = NULL, *quick = NULL, **qt = &quick;
  size_t nl = s->ready_head ? server_lanes_take_locked(s, taken, &list) : 0;
  for (size_t n = 0; s->q_head && n < RECV_BURST && quick_op(s, s->q_head->pk.op); n++) {
    *qt = server_job_pop_locked(s, &s->q_head, &s->q_tail);
    qt = &(*qt)->next;
  }
  if (s->q_head) pthread_cond_signal(&s->cv); /* the slower ones for a worker */
  s->running++;
  pthread_mutex_unlock(&s->mu);
  struct worker here = {.s = s, .push = s->router};
  if (list) server_run_lane(s, &here, list);
  while (quick) {
    struct job *j = quick;
    quick = j->next;
    j->next = NULL;
    server_run_job(s, &here, j);
  }
  run_woken_here(s, &here);
  pthread_mutex_lock(&s->mu);
  s->running--;
  server_lanes_give_locked(s, taken, nl);
  if (s->w_head || s->q_head || s->ready_head) pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

/* Reads one request off the ROUTER and queues it (or answers a bad frame at once, or runs
 * it here). Returns 0; 1 when it ran here, having seen nothing else waiting (so the
 * caller need not ask the ROUTER again before its next poll); -1 when nothing was
 * waiting. */
static int take_request(struct net_server *s) {
  struct job *j = calloc(1, sizeof *j);
  if (!j) return -1;
  zmq_msg_init(&j->ident);
  zmq_msg_init(&j->body);
  if (zmq_msg_recv(&j->ident, s->router, ZMQ_DONTWAIT) < 0) {
    server_job_free(j);
    return -1;
  }
  j->received_ns = clock_monotonic_ns();
  /* Frames after the routing id: the request, or an empty delimiter and the request. */
  zmq_msg_t parts[2];
  int np = 0, frames = 0, more = zmq_msg_more(&j->ident);
  while (more) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, s->router, 0) < 0) {
      zmq_msg_close(&m);
      break;
    }
    more = zmq_msg_more(&m);
    frames++;
    if (np < 2) {
      zmq_msg_init(&parts[np]);
      zmq_msg_move(&parts[np++], &m);
    }
    zmq_msg_close(&m);
  }
  int bad = 0;
  if (frames == 2 && zmq_msg_size(&parts[0]) == 0) {
    j->delim = 1; /* a REQ socket's envelope */
    zmq_msg_move(&j->body, &parts[1]);
  } else if (frames == 1) {
    zmq_msg_move(&j->body, &parts[0]);
  } else {
    bad = 1;
    if (frames >= 2) j->delim = zmq_msg_size(&parts[0]) == 0;
    if (np) zmq_msg_move(&j->body, &parts[np - 1]);
  }
  for (int i = 0; i < np; i++) zmq_msg_close(&parts[i]);
  char why[300];
  if (bad) {
    s->bad++;
    snprintf(why, sizeof why, "malformed request: one frame expected, got %d", frames - j->delim);
    server_client_error(s, &j->body, ENGRAM_EPROTO, "-", why);
    server_reply_error(s, s->router, j, ENGRAM_EPROTO, why);
    return 0;
  }
  int code =
      net_request_peek(zmq_msg_data(&j->body), zmq_msg_size(&j->body), &j->pk, why, sizeof why);
  if (code) {
    s->bad++;
    server_client_error(s, &j->body, code, net_op_name(j->pk.op), why);
    server_reply_error(s, s->router, j, code, why);
    return 0;
  }
  if (run_here(s, j)) return 1;
  pthread_mutex_lock(&s->mu);
  if (j->pk.op == ENGRAM__WIRE__REQUEST__OP_APPEND) {
    const void *id = zmq_msg_data(&j->ident);
    size_t n = zmq_msg_size(&j->ident);
    struct lane **b = &s->lanes[server_hash(id, n) % LANE_BUCKETS], *l;
    for (l = *b; l; l = l->next)
      if (l->id_len == n && !memcmp(l->id, id, n)) break;
    if (!l && (l = calloc(1, sizeof *l + n)) != NULL) {
      l->id_len = n;
      memcpy(l->id, id, n);
      l->next = *b;
      *b = l;
    }
    if (l) {
      j->lane = l;
      if (l->tail)
        l->tail->next = j;
      else
        l->head = j;
      l->tail = j;
      s->queued++;
      server_lane_ready_locked(s, l);
      pthread_mutex_unlock(&s->mu);
      return 0;
    }
  }
  server_enqueue(s, j);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

/* Forwards replies from workers to the ROUTER. Returns 1 when it stopped with more
 * left (its fd then may not announce them), 0 when it found none left. */
int server_forward_replies(struct net_server *s) {
  for (int n = 0; n < 4096; n++) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, s->replies, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&m);
      return 0;
    }
    for (;;) {
      int more = zmq_msg_more(&m);
      zmq_msg_send(&m, s->router, ZMQ_DONTWAIT | (more ? ZMQ_SNDMORE : 0));
      zmq_msg_close(&m);
      if (!more) break;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, s->replies, 0) < 0) {
        zmq_msg_close(&m);
        break;
      }
    }
  }
  return 1;
}

/* (topic, head) from an embedded writer in another process: publish and wake. Returns
 * 1 when it stopped with more left, 0 when it found none left. */
static int take_notify_in(struct net_server *s) {
  for (int n = 0; n < 4096; n++) {
    char topic[ENGRAM_MAX_NAME + 2];
    unsigned char head[9];
    int tn = zmq_recv(s->in_pull, topic, sizeof topic - 1, ZMQ_DONTWAIT);
    if (tn < 0) return 0;
    int more = 0;
    size_t ml = sizeof more;
    zmq_getsockopt(s->in_pull, ZMQ_RCVMORE, &more, &ml);
    int hn = more ? zmq_recv(s->in_pull, head, sizeof head, 0) : -1;
    for (;;) { /* drop any extra frames */
      zmq_getsockopt(s->in_pull, ZMQ_RCVMORE, &more, &ml);
      if (!more) break;
      char junk[1];
      zmq_recv(s->in_pull, junk, 1, 0);
    }
    if (tn > ENGRAM_MAX_NAME || hn != 8) continue;
    topic[tn] = '\0';
    if (!log_valid_name(topic)) continue;
    server_publish(s, topic, be64_get(head));
    pthread_mutex_lock(&s->mu);
    server_topic_changed_locked(s, topic, 1);
    pthread_mutex_unlock(&s->mu);
  }
  return 1;
}

/* Requeues parked fetches whose recheck time or deadline came; returns the poll timeout
 * in ms until the next one (-1 = none). */
static long check_parked(struct net_server *s) {
  int64_t now = clock_monotonic_ns(), next = INT64_MAX;
  pthread_mutex_lock(&s->mu);
  s->park_signal = 0;
  struct job **pp = &s->parked;
  while (*pp) {
    struct job *j = *pp;
    if (s->stopping || now >= j->deadline_ns || now >= j->recheck_ns) {
      *pp = j->next;
      s->n_parked--;
      if (s->stopping || now >= j->deadline_ns) j->final = 1;
      server_enqueue(s, j);
      continue;
    }
    int64_t t = j->recheck_ns < j->deadline_ns ? j->recheck_ns : j->deadline_ns;
    if (t < next) next = t;
    pp = &j->next;
  }
  pthread_mutex_unlock(&s->mu);
  if (next == INT64_MAX) return -1;
  long ms = (long)((next - now + 999999) / 1000000);
  return ms < 1 ? 1 : ms;
}

static int idle(struct net_server *s) {
  pthread_mutex_lock(&s->mu);
  int yes = !s->w_head && !s->q_head && !s->ready_head && s->running == 0 && !s->parked;
  pthread_mutex_unlock(&s->mu);
  return yes;
}

/* Whether a ZeroMQ socket holds a message now. Settles libzmq's pending commands, after
 * which its fd announces the next one. */
static int zmq_readable(void *sock) {
  int ev = 0;
  size_t el = sizeof ev;
  return zmq_getsockopt(sock, ZMQ_EVENTS, &ev, &el) == 0 && (ev & ZMQ_POLLIN);
}

/* Reads what the ROUTER's monitor reported (failed accepts: the daemon is out of
 * descriptors) and logs it at most every ACCEPT_LOG_NS, with the count since the last
 * line; libzmq retries such an accept at once, so the reports come in floods. */
#define ACCEPT_LOG_NS (10 * 1000000000LL)
static void take_accept_failures(struct net_server *s) {
  for (;;) {
    unsigned char ev[6];
    char addr[256];
    if (zmq_recv(s->accept_mon, ev, sizeof ev, ZMQ_DONTWAIT) < 0) break;
    int more = 0;
    size_t ml = sizeof more;
    if (zmq_getsockopt(s->accept_mon, ZMQ_RCVMORE, &more, &ml) == 0 && more)
      zmq_recv(s->accept_mon, addr, sizeof addr, ZMQ_DONTWAIT);
    uint32_t value;
    memcpy(&value, ev + 2, sizeof value);
    s->accept_failed++;
    s->accept_errno = (int)value;
  }
  int64_t now = clock_monotonic_ns();
  if (s->accept_failed &&
      (s->accept_logged_ns == 0 || now - s->accept_logged_ns >= ACCEPT_LOG_NS)) {
    server_log(s, "error", "accept",
               "cannot accept new connections on %s: %s (%llu attempts since the last line; "
               "open files limited to %llu): raise LimitNOFILE= or ulimit -n, or close idle "
               "clients",
               s->listen_ep, strerror(s->accept_errno), (unsigned long long)s->accept_failed,
               (unsigned long long)s->nofile);
    s->accept_failed = 0;
    s->accept_logged_ns = now;
  }
}

/* The main thread sleeps in poll() on the sockets' fds rather than in zmq_poll: that one
 * asks every socket for its events before and after each sleep, two system calls each
 * (a poll and a getpid inside libzmq), more than a small request costs on a virtual
 * machine. A ZeroMQ socket's fd announces only what arrives after its last settling, so
 * before each sleep the sockets whose fds may be silent are asked: the ROUTER always (a
 * send on it, a reply or a request run here, may settle its commands), the others only
 * when their last drain stopped early. */
void server_main_loop(struct net_server *s) {
  long timeout = -1;
  int router_fd = -1, replies_fd = -1, in_fd = -1;
  size_t fl = sizeof(int);
  zmq_getsockopt(s->router, ZMQ_FD, &router_fd, &fl);
  fl = sizeof(int);
  zmq_getsockopt(s->replies, ZMQ_FD, &replies_fd, &fl);
  fl = sizeof(int);
  zmq_getsockopt(s->in_pull, ZMQ_FD, &in_fd, &fl);
  int mon_fd = -1;
  fl = sizeof(int);
  if (s->accept_mon) zmq_getsockopt(s->accept_mon, ZMQ_FD, &mon_fd, &fl);
  if (s->accept_mon) take_accept_failures(s);
  int replies_more = 1, in_more = 1; /* look at them before the first sleep */
  for (;;) {
    if (server_hup_requested) {
      server_hup_requested = 0;
      server_log(s, "info", "sighup", "SIGHUP: still serving; reloading");
      server_log_open(s, 1);
      if (s->o.secret_key) server_allow_load(s, 1);
    }
    if (server_stop_requested && !s->stopping) {
      server_log(s, "info", "stop", "stopping: no new requests, finishing those in flight");
      server_sd_notify("STOPPING=1");
      pthread_mutex_lock(&s->mu);
      s->stopping = 1;
      pthread_mutex_unlock(&s->mu);
      check_parked(s);
    }
    if (s->stopping) {
      server_forward_replies(s);
      if (idle(s)) {
        server_forward_replies(s);
        return;
      }
      timeout = 20;
    }
    pthread_mutex_lock(&s->mu);
    int room = s->queued < MAX_QUEUED;
    pthread_mutex_unlock(&s->mu);
    int want_router = room && !s->stopping;
    int router_ready = want_router && zmq_readable(s->router);
    int busy = router_ready || replies_more || in_more;
    /* Failed accepts not logged yet bring the loop back when their line is due. */
    if (s->accept_failed) {
      long due = (long)((s->accept_logged_ns + ACCEPT_LOG_NS - clock_monotonic_ns()) / 1000000);
      if (due < 1) due = 1;
      if (timeout < 0 || due < timeout) timeout = due;
    }
    struct pollfd pf[5] = {{want_router ? router_fd : -1, POLLIN, 0},
                           {replies_fd, POLLIN, 0},
                           {in_fd, POLLIN, 0},
                           {s->wake_fd, POLLIN, 0},
                           {mon_fd, POLLIN, 0}};
    int rc = poll(pf, 5, busy ? 0 : (int)timeout);
    if (rc < 0 && errno != EINTR) {
      server_log(s, "error", "poll", "poll: %s", strerror(errno));
      clock_sleep_ns(10000000);
    }
    if (pf[3].revents & POLLIN) {
      uint64_t v;
      ssize_t r = read(s->wake_fd, &v, sizeof v);
      (void)r;
    }
    server_publish_dirty(s);
    if (replies_more || (pf[1].revents & POLLIN)) replies_more = server_forward_replies(s);
    if ((router_ready || (pf[0].revents & POLLIN)) && !s->stopping) {
      pthread_mutex_lock(&s->mu);
      s->hold = 1;
      pthread_mutex_unlock(&s->mu);
      for (int n = 0; n < RECV_BURST; n++) {
        pthread_mutex_lock(&s->mu);
        int full = s->queued >= MAX_QUEUED;
        pthread_mutex_unlock(&s->mu);
        if (full || take_request(s) != 0) break; /* nothing left, or it ran here */
      }
      run_burst_here(s);
      server_publish_dirty(s); /* commits of requests run right here */
    }
    if (in_more || (pf[2].revents & POLLIN)) in_more = take_notify_in(s);
    if ((pf[4].revents & POLLIN) || s->accept_failed) take_accept_failures(s);
    timeout = check_parked(s);
  }
}
