/* client_pipeline.c — pipelined appends of a remote handle (engram_append_async,
 * engram_append_wait): staged, sent in batches, answered through callbacks in order. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include "net/client.h"

/* ---------------------------------------------------------------------------------
 * Pipelined appends.
 * ------------------------------------------------------------------------------ */
struct done_cb {
  engram_append_cb cb;
  void *ctx;
  int rc;
  uint64_t offset;
  int dup;
};

/* The outcome of append `idx` of batch p. */
static void slot_result(struct pend *p, uint32_t idx, struct done_cb *d, const char **msg) {
  d->rc = p->code;
  *msg = p->msg;
  const Engram__Wire__Reply *rp = p->rp;
  if (!rp) return;
  d->rc = rp->code;
  *msg = rp->error;
  if (rp->code > 0 || rp->code < -1000) {
    d->rc = ENGRAM_EPROTO;
    *msg = "reply with an invalid code";
    return;
  }
  if (rp->code) return;
  const Engram__Wire__AppendResult *ar = rp->append;
  if (rp->result_case != ENGRAM__WIRE__REPLY__RESULT_APPEND || ar->n_offsets != p->refs_total ||
      (ar->n_duplicates && ar->n_duplicates != p->refs_total) ||
      (ar->n_codes && ar->n_codes != p->refs_total) ||
      (ar->n_errors && ar->n_errors != p->refs_total)) {
    d->rc = ENGRAM_EPROTO;
    *msg = "malformed append reply from the daemon";
    return;
  }
  d->rc = ar->n_codes ? ar->codes[idx] : 0;
  if (d->rc > 0 || d->rc < -1000) d->rc = ENGRAM_EPROTO;
  *msg = ar->n_errors ? ar->errors[idx] : "";
  d->offset = ar->offsets[idx];
  d->dup = ar->n_duplicates ? ar->duplicates[idx] != 0 : 0;
}

/* Takes finished pipelined appends off the front, in the order they were made, into
 * out[cap]. Called with mu held. */
static size_t pop_done(struct conn *c, struct done_cb *out, size_t cap) {
  size_t k = 0;
  while (k < cap && c->a_count > c->staged) {
    struct aslot *sl = &c->ring[c->a_head];
    if (!sl->p->done) break;
    struct done_cb d = {sl->cb, sl->ctx, 0, 0, 0};
    const char *msg = "";
    slot_result(sl->p, sl->idx, &d, &msg);
    if (d.rc && !c->a_err) {
      c->a_err = d.rc;
      snprintf(c->a_msg, sizeof c->a_msg, "%s", msg && *msg ? msg : engram_strerror(d.rc));
    }
    out[k++] = d;
    if (--sl->p->refs == 0) client_pend_free(sl->p);
    sl->p = NULL;
    c->a_head = (c->a_head + 1) % c->o.pipeline_window;
    c->a_count--;
  }
  return k;
}

static void run_cbs(const struct done_cb *d, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (d[i].cb) d[i].cb(d[i].ctx, d[i].rc, d[i].offset, d[i].dup);
}

/* Waits for the oldest pipelined append's batch. Called with mu held. */
static void wait_oldest(struct conn *c) {
  if (c->a_count == c->staged) client_stage_flush(c);
  if (c->a_count > c->staged) client_wait_pend(c, c->ring[c->a_head].p);
}

/* The flusher: while batches are out and appends staged, it waits for replies so that
 * staged appends leave even when the producer makes no further call. */
static void *flusher_main(void *arg) {
  struct conn *c = arg;
  pthread_mutex_lock(&c->mu);
  while (!c->f_stop) {
    client_stage_maybe_flush(c);
    if (!c->staged) {
      pthread_cond_wait(&c->f_cv, &c->mu);
      continue;
    }
    if (c->reading) {
      int64_t until = clock_monotonic_ns() + 20000000;
      struct timespec ts = {until / 1000000000, until % 1000000000};
      pthread_cond_timedwait(&c->cv, &c->mu, &ts);
      continue;
    }
    client_pump(c);
    if (!c->staged || c->a_reqs < MAX_BATCHES_OUT) continue;
    c->reading = 1;
    c->reader = pthread_self();
    pthread_mutex_unlock(&c->mu);
    int mon = client_poll(c, 20);
    pthread_mutex_lock(&c->mu);
    c->mon_ready |= mon;
    c->reading = 0;
    client_pump(c);
    pthread_cond_broadcast(&c->cv);
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

static int pipeline_start(engram *log, struct conn *c) {
  if (c->ring) return 0;
  c->ring = calloc(c->o.pipeline_window, sizeof *c->ring);
  c->s_cap = 64 << 10;
  c->sbuf = malloc(c->s_cap);
  c->s_idem = 1;
  if (!c->ring || !c->sbuf) {
    free(c->ring);
    free(c->sbuf);
    c->ring = NULL;
    c->sbuf = NULL;
    return log_error(NULL, ENGRAM_ENOMEM, "append: out of memory");
  }
  if (pthread_create(&c->flusher, NULL, flusher_main, c) != 0)
    return log_error(NULL, ENGRAM_ENOMEM, "append: cannot start a thread");
  c->f_running = 1;
  return 0;
}

int client_append_async(engram *log, const char *topic, const engram_event *ev, engram_append_cb cb,
                        void *ctx) {
  struct conn *c = C(log);
  struct wev w;
  int idem;
  int rc = client_wev_build(log, topic, ev, 1, &w, &idem);
  if (rc) return rc;
  size_t esz = engram__wire__event__get_packed_size(w.evp[0]);
  if (c->max_message && esz + 4096 > c->max_message) {
    client_wev_free(&w);
    return log_error(NULL, ENGRAM_ETOOBIG,
                     "append %s: event of %zu bytes over the daemon's request limit of %u", topic,
                     esz, c->max_message);
  }
  struct done_cb done[64];
  size_t nd = 0;
  pthread_mutex_lock(&c->mu);
  if (c->denied) {
    pthread_mutex_unlock(&c->mu);
    client_wev_free(&w);
    return log_error(NULL, ENGRAM_EDENIED, "%s: the daemon refused this client's CURVE key",
                     c->endpoint);
  }
  if ((rc = pipeline_start(log, c))) {
    pthread_mutex_unlock(&c->mu);
    client_wev_free(&w);
    return rc;
  }
  /* At the window: wait for the oldest, handing finished ones to their callbacks; and a
   * little past it, so that a producer faster than the daemon wakes once per quarter
   * window rather than once per reply. */
  size_t win = c->o.pipeline_window;
  size_t low = c->a_count >= win ? win - (win + 3) / 4 : SIZE_MAX;
  while (c->a_count > low) {
    wait_oldest(c);
    nd = pop_done(c, done, 64);
    if (nd) {
      pthread_mutex_unlock(&c->mu);
      run_cbs(done, nd);
      pthread_mutex_lock(&c->mu);
      nd = 0;
    }
  }
  /* Stage it: a new topic, a full stage or a stage near the request limit go first. */
  size_t limit = STAGE_MAX_BYTES;
  if (c->max_message && c->max_message / 2 < limit) limit = c->max_message / 2;
  if (c->staged &&
      (strcmp(c->s_topic, topic) || c->staged >= STAGE_MAX_EVENTS || c->s_len + esz + 16 > limit))
    client_stage_flush(c);
  if (c->s_len + esz + 16 > c->s_cap) {
    size_t cap = c->s_cap;
    while (cap < c->s_len + esz + 16) cap *= 2;
    uint8_t *b = realloc(c->sbuf, cap);
    if (!b) {
      pthread_mutex_unlock(&c->mu);
      client_wev_free(&w);
      return log_error(NULL, ENGRAM_ENOMEM, "append %s: out of memory", topic);
    }
    c->sbuf = b;
    c->s_cap = cap;
  }
  if (!c->staged) snprintf(c->s_topic, sizeof c->s_topic, "%s", topic);
  c->sbuf[c->s_len++] = 0x12; /* Append.events */
  c->s_len += client_put_varint(c->sbuf + c->s_len, esz);
  c->s_len += engram__wire__event__pack(w.evp[0], c->sbuf + c->s_len);
  client_wev_free(&w);
  if (!idem) c->s_idem = 0;
  struct aslot *sl = &c->ring[(c->a_head + c->a_count) % win];
  *sl = (struct aslot){NULL, 0, cb, ctx};
  c->a_count++;
  c->staged++;
  client_pump_fast(c); /* sends it now when fewer than MAX_BATCHES_OUT batches are out */
  if (c->staged == 1) pthread_cond_signal(&c->f_cv);
  nd = pop_done(c, done, 64);
  pthread_mutex_unlock(&c->mu);
  run_cbs(done, nd);
  return 0;
}

int client_append_wait(engram *log) {
  struct conn *c = C(log);
  struct done_cb done[64];
  pthread_mutex_lock(&c->mu);
  while (c->a_count) {
    wait_oldest(c);
    size_t nd = pop_done(c, done, 64);
    if (nd) {
      pthread_mutex_unlock(&c->mu);
      run_cbs(done, nd);
      pthread_mutex_lock(&c->mu);
    }
  }
  int rc = c->a_err;
  char msg[256];
  snprintf(msg, sizeof msg, "%s", c->a_msg);
  c->a_err = 0;
  c->a_msg[0] = '\0';
  pthread_mutex_unlock(&c->mu);
  if (rc) return log_error(NULL, rc, "%s", msg);
  return 0;
}
