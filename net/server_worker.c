/* server_worker.c — the worker pool: requests decoded and run on the daemon's handle,
 * long-poll fetches parked, replies sent back to the main thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/server.h"

/* ---------------------------------------------------------------------------------
 * Replies.
 * ------------------------------------------------------------------------------ */
void server_job_free(struct job *j) {
  if (!j) return;
  zmq_msg_close(&j->ident);
  zmq_msg_close(&j->body);
  net_arena_free(&j->rq_mem); /* j->rq with it */
  free(j);
}

/* Sends the reply to j's client through `sock` (a worker's PUSH or the ROUTER) and frees j. */
void server_reply_send(struct net_server *s, void *sock, struct job *j, Engram__Wire__Reply *rp) {
  rp->id = j->pk.id;
  rp->version = ENGRAM_PROTOCOL_VERSION;
  rp->code = err_public(rp->code); /* never "a reply with an invalid code" */
  s->requests++;
  if (rp->code) {
    s->errors++;
    server_trouble(s, rp->code, net_op_name(j->pk.op), rp->error ? rp->error : "");
  }
  size_t n = engram__wire__reply__get_packed_size(rp);
  zmq_msg_t m;
  if (zmq_msg_init_size(&m, n) != 0) {
    server_job_free(j);
    return;
  }
  engram__wire__reply__pack(rp, zmq_msg_data(&m));
  int flags = sock == s->router ? ZMQ_DONTWAIT : 0;
  if (zmq_msg_send(&j->ident, sock, flags | ZMQ_SNDMORE) >= 0 &&
      (!j->delim || zmq_send(sock, "", 0, flags | ZMQ_SNDMORE) >= 0))
    zmq_msg_send(&m, sock, flags);
  zmq_msg_close(&m);
  server_job_free(j);
}

void server_reply_error(struct net_server *s, void *sock, struct job *j, int code,
                        const char *why) {
  Engram__Wire__Reply rp = ENGRAM__WIRE__REPLY__INIT;
  rp.code = code;
  rp.error = (char *)why;
  server_reply_send(s, sock, j, &rp);
}

/* ---------------------------------------------------------------------------------
 * Workers.
 * ------------------------------------------------------------------------------ */

/* Decodes and checks j's request (once: a parked fetch keeps its decoded form). Returns 0,
 * or replies with the error and returns -1. */
int server_prepare(struct net_server *s, struct worker *w, struct job *j) {
  if (j->rq) return 0;
  char why[512];
  int code = 0;
  j->rq = net_request_unpack_in(&j->rq_mem, zmq_msg_data(&j->body), zmq_msg_size(&j->body), &j->pk,
                                &code, why, sizeof why);
  if (code == ENGRAM_ENOMEM) {
    server_log(s, "error", "memory", "%s", why); /* the daemon's trouble, not the client's */
  } else if (code) {
    s->bad++;
    server_client_error(s, &j->body, code, net_op_name(j->pk.op), why);
  } else if ((code = net_request_check(j->rq, why, sizeof why)) != 0) {
    if (code == ENGRAM_EPROTO) {
      s->bad++;
      server_client_error(s, &j->body, code, net_op_name(j->pk.op), why);
    }
  }
  if (!code) return 0;
  server_reply_error(s, w->push, j, code, why);
  return -1;
}

/* Destructive operations are logged with who asked, once they succeeded. */
static void log_admin(struct net_server *s, struct job *j) {
  const Engram__Wire__Request *rq = j->rq;
  char what[512];
  const Engram__Wire__DlqSelect *d = NULL;
  switch (rq->op_case) {
    case ENGRAM__WIRE__REQUEST__OP_TOPIC_DROP:
      snprintf(what, sizeof what, "topic %s", rq->topic_drop->topic);
      server_log_admin(s, &j->body, "topic_drop", what);
      return;
    case ENGRAM__WIRE__REQUEST__OP_GROUP_DELETE:
      snprintf(what, sizeof what, "group %s/%s", rq->group_delete->topic, rq->group_delete->group);
      server_log_admin(s, &j->body, "group_delete", what);
      return;
    case ENGRAM__WIRE__REQUEST__OP_GROUP_RESET:
      snprintf(what, sizeof what, "group %s/%s", rq->group_reset->topic, rq->group_reset->group);
      server_log_admin(s, &j->body, "group_reset", what);
      return;
    case ENGRAM__WIRE__REQUEST__OP_DLQ_PURGE:
    case ENGRAM__WIRE__REQUEST__OP_DLQ_REDRIVE:
      d = rq->op_case == ENGRAM__WIRE__REQUEST__OP_DLQ_PURGE ? rq->dlq_purge : rq->dlq_redrive;
      snprintf(what, sizeof what, "group %s/%s (%s)", d->topic, d->group,
               d->all ? "all entries" : "chosen entries");
      server_log_admin(
          s, &j->body,
          rq->op_case == ENGRAM__WIRE__REQUEST__OP_DLQ_PURGE ? "dlq_purge" : "dlq_redrive", what);
      return;
    default:
      return;
  }
}

void server_run_one(struct net_server *s, struct worker *w, struct job *j) {
  Engram__Wire__Reply rp = ENGRAM__WIRE__REPLY__INIT;
  net_arena a = {0};
  engram_batch *batch = NULL;
  int empty = 0;
  net_ops_run(s, s->log, j->rq, &rp, &a, &batch, &empty);
  if (rp.code == 0) log_admin(s, j);
  server_reply_send(s, w->push, j, &rp);
  engram_batch_free(batch);
  net_arena_free(&a);
}

const char *server_job_topic(const struct job *j) {
  return j->rq->op_case == ENGRAM__WIRE__REQUEST__OP_ACK_FETCH ? j->rq->ack_fetch->topic
                                                               : j->rq->fetch->topic;
}

/* Parks j until a commit on its topic or recheck_ns, unless its topic changed since its
 * look (j->seq) or the daemon stops: then it runs again at once. */
static void park(struct net_server *s, struct job *j, const char *topic, int64_t recheck_ns) {
  pthread_mutex_lock(&s->mu);
  struct tseq *t = server_tseq_get(s, topic);
  if (s->stopping) {
    j->final = 1;
    server_enqueue(s, j);
  } else if ((t ? t->seq : 0) != j->seq) {
    server_enqueue(s, j); /* something changed while it looked: look again */
  } else if (s->n_parked >= MAX_PARKED) {
    j->final = 1;
    server_enqueue(s, j);
  } else {
    j->recheck_ns = recheck_ns;
    j->next = s->parked;
    s->parked = j;
    s->n_parked++;
    s->park_signal = 1;
  }
  pthread_mutex_unlock(&s->mu);
  server_wake_main(s);
}

/* Runs a fetch or an ack-fetch, and parks it when it found nothing and may wait. An
 * ack-fetch with nothing to deliver first parks with its acks held, uncommitted, for up
 * to CG_ACK_HOLD_MS, as engram_ack_fetch does embedded: the commit that wakes it then
 * carries its acks and its leases together (a consumer that keeps up pays one commit per
 * event, not two). It then parks with its acks committed: every later look runs it
 * without them. */
static void run_fetch(struct net_server *s, struct worker *w, struct job *j) {
  const Engram__Wire__Request *rq = j->rq;
  Engram__Wire__Request again;
  Engram__Wire__AckFetch bare;
  uint64_t wait_ms = rq->op_case == ENGRAM__WIRE__REQUEST__OP_ACK_FETCH ? rq->ack_fetch->wait_ms
                                                                        : rq->fetch->wait_ms;
  const char *topic = server_job_topic(j);
  if (j->acked && rq->op_case == ENGRAM__WIRE__REQUEST__OP_ACK_FETCH) {
    /* A shallow copy without the items: the decoded request stays as unpacked. */
    again = *rq;
    bare = *rq->ack_fetch;
    bare.n_items = 0;
    bare.items = NULL;
    again.ack_fetch = &bare;
    rq = &again;
  }
  if (!j->deadline_ns) j->deadline_ns = clock_after_ms(j->received_ns, wait_ms);
  /* Looked up, not made: the topic name is not validated until the fetch runs. */
  pthread_mutex_lock(&s->mu);
  struct tseq *t = server_tseq_lookup(s, topic, 0);
  j->seq = t ? t->seq : 0;
  pthread_mutex_unlock(&s->mu);

  if (rq->op_case == ENGRAM__WIRE__REQUEST__OP_ACK_FETCH && rq->ack_fetch->n_items && !j->acked &&
      !j->held && !j->final && wait_ms > 0 && s->ack_hold_ms > 0) {
    j->held = 1;
    int64_t now = clock_monotonic_ns();
    if (now < j->deadline_ns && !cg_fetch_due(api_log(s->log), topic, rq->ack_fetch->group)) {
      int64_t until = clock_after_ms(now, (uint64_t)s->ack_hold_ms);
      park(s, j, topic, until < j->deadline_ns ? until : j->deadline_ns);
      return;
    }
  }

  Engram__Wire__Reply rp = ENGRAM__WIRE__REPLY__INIT;
  net_arena a = {0};
  engram_batch *batch = NULL;
  int empty = 0;
  /* An ack-fetch that may park commits its acks without a flush of their own when it
   * finds nothing: its answer comes later, after the flush of the commit that wakes it
   * (an append's), or after one made for it below. In sync mode that is a flush per
   * event less for a consumer that keeps up. */
  int defer = j->rq->op_case == ENGRAM__WIRE__REQUEST__OP_ACK_FETCH && !j->acked && !j->final &&
              wait_ms > 0;
  if (defer) cg_ack_fetch_defer(1);
  net_ops_run(s, s->log, rq, &rp, &a, &batch, &empty);
  if (defer) {
    uint64_t mark;
    if (cg_ack_fetch_deferred(&mark)) j->ack_mark = mark;
    cg_ack_fetch_defer(0);
  }
  if (empty && !j->final && clock_monotonic_ns() < j->deadline_ns) {
    j->acked = rq->op_case == ENGRAM__WIRE__REQUEST__OP_ACK_FETCH;
    engram_batch_free(batch);
    net_arena_free(&a);
    park(s, j, topic, clock_monotonic_ns() + PARK_RECHECK_MS * 1000000ll);
    return;
  }
  if (j->ack_mark && !s->test_ack_no_flush) {
    /* Its acks are answered now: they must be durable first. */
    int frc = log_flush_upto(api_log(s->log), j->ack_mark);
    j->ack_mark = 0;
    if (frc) {
      char why[300];
      snprintf(why, sizeof why, "%s", engram_errmsg(s->log));
      engram_batch_free(batch);
      net_arena_free(&a);
      server_reply_error(s, w->push, j, frc, why);
      return;
    }
  }
  server_reply_send(s, w->push, j, &rp);
  engram_batch_free(batch);
  net_arena_free(&a);
}

void server_run_job(struct net_server *s, struct worker *w, struct job *j) {
  if (server_prepare(s, w, j)) return;
  if (j->rq->op_case == ENGRAM__WIRE__REQUEST__OP_FETCH ||
      j->rq->op_case == ENGRAM__WIRE__REQUEST__OP_ACK_FETCH)
    run_fetch(s, w, j);
  else if (j->rq->op_case == ENGRAM__WIRE__REQUEST__OP_APPEND) {
    j->next = NULL;
    server_run_lane(s, w, j);
  } else
    server_run_one(s, w, j);
}

void server_lane_ready_locked(struct net_server *s, struct lane *l) {
  if (l->ready || l->busy || !l->head) return;
  l->ready = 1;
  l->next_ready = NULL;
  if (s->ready_tail)
    s->ready_tail->next_ready = l;
  else
    s->ready_head = l;
  s->ready_tail = l;
  if (!s->hold) pthread_cond_signal(&s->cv);
}

static void lane_drop_locked(struct net_server *s, struct lane *l) {
  struct lane **pp = &s->lanes[server_hash(l->id, l->id_len) % LANE_BUCKETS];
  for (; *pp; pp = &(*pp)->next) {
    if (*pp == l) {
      *pp = l->next;
      free(l);
      return;
    }
  }
}

struct job *server_job_pop_locked(struct net_server *s, struct job **head, struct job **tail) {
  struct job *j = *head;
  *head = j->next;
  if (!*head) *tail = NULL;
  j->next = NULL;
  s->queued--;
  return j;
}

/* Runs the first job of a queue (head, tail), with s->mu released meanwhile. */
static void run_first(struct net_server *s, struct worker *w, struct job **head,
                      struct job **tail) {
  struct job *j = server_job_pop_locked(s, head, tail);
  s->running++;
  pthread_mutex_unlock(&s->mu);
  server_run_job(s, w, j);
  pthread_mutex_lock(&s->mu);
  s->running--;
}

/* Every ready lane at once (up to LANE_TAKE appends): the appends of all connections then
 * share one transaction and one flush, as a single-threaded server's would, instead of
 * one commit per connection. Each lane's appends stay in order; the lanes are busy until
 * server_lanes_give_locked. Returns how many lanes were taken (into taken), their appends
 * in one list. */
size_t server_lanes_take_locked(struct net_server *s, struct lane **taken, struct job **list) {
  size_t nl = 0, n = 0;
  struct job **tail = list;
  *list = NULL;
  while (s->ready_head && n < LANE_TAKE) {
    struct lane *l = s->ready_head;
    s->ready_head = l->next_ready;
    if (!s->ready_head) s->ready_tail = NULL;
    l->ready = 0;
    l->busy = 1;
    taken[nl++] = l;
    struct job *last = l->head;
    n++;
    while (last->next && n < LANE_TAKE) {
      last = last->next;
      n++;
    }
    *tail = l->head;
    tail = &last->next;
    l->head = last->next;
    if (!l->head) l->tail = NULL;
    last->next = NULL;
  }
  s->queued -= n;
  return nl;
}

void server_lanes_give_locked(struct net_server *s, struct lane **taken, size_t nl) {
  for (size_t i = 0; i < nl; i++) {
    struct lane *l = taken[i];
    l->busy = 0;
    if (l->head)
      server_lane_ready_locked(s, l);
    else
      lane_drop_locked(s, l);
  }
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  struct net_server *s = w->s;
  pthread_mutex_lock(&s->mu);
  for (;;) {
    while (!s->w_head && !s->q_head && !s->ready_head && !s->exiting)
      pthread_cond_wait(&s->cv, &s->mu);
    if (!s->w_head && !s->q_head && !s->ready_head) break;
    if (s->w_head) {
      run_first(s, w, &s->w_head, &s->w_tail);
      continue;
    }
    /* Alternate between plain requests and lanes so neither starves the other. */
    if (s->ready_head && (!s->q_head || (w->turn++ & 1))) {
      struct lane *taken[LANE_TAKE];
      struct job *list;
      size_t nl = server_lanes_take_locked(s, taken, &list);
      s->running++;
      pthread_mutex_unlock(&s->mu);
      server_run_lane(s, w, list);
      pthread_mutex_lock(&s->mu);
      s->running--;
      server_lanes_give_locked(s, taken, nl);
    } else {
      run_first(s, w, &s->q_head, &s->q_tail);
    }
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

void *server_worker_thread(void *arg) {
  struct worker *w = arg;
  worker_main(w);
  zmq_close(w->push);
  free(w);
  return NULL;
}
