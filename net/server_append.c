/* server_append.c — a client's lane of appends: run in order, consecutive appends to one
 * topic as one batch, each request alone again when a batch fails. */
#include <stdlib.h>
#include <string.h>

#include "net/server.h"

struct ares {
  uint64_t *offsets;
  int *dups;
  int *codes;
  char **msgs; /* malloc'd messages of failed units, NULL when fine */
};

static void reply_append(struct net_server *s, struct worker *w, struct job *j, struct ares *r) {
  const Engram__Wire__Append *ap = j->rq->append;
  size_t n = ap->n_events;
  Engram__Wire__Reply rp = ENGRAM__WIRE__REPLY__INIT;
  if (!ap->independent && r->codes[0]) {
    rp.code = r->codes[0];
    rp.error = r->msgs[0] ? r->msgs[0] : (char *)engram_strerror(r->codes[0]);
    server_reply_send(s, w->push, j, &rp);
    return;
  }
  Engram__Wire__AppendResult ar = ENGRAM__WIRE__APPEND_RESULT__INIT;
  protobuf_c_boolean *db = calloc(n, sizeof *db);
  char **errs = NULL;
  int failed = 0;
  for (size_t i = 0; i < n; i++) failed |= r->codes[i] != 0;
  if (failed) errs = calloc(n, sizeof *errs);
  if (!db || (failed && !errs)) {
    free(db);
    free(errs);
    server_reply_error(s, w->push, j, ENGRAM_ENOMEM, "append: out of memory for the reply");
    return;
  }
  for (size_t i = 0; i < n; i++) {
    db[i] = r->dups[i] != 0;
    if (errs) errs[i] = r->msgs[i] ? r->msgs[i] : (char *)"";
  }
  ar.n_offsets = n;
  ar.offsets = r->offsets;
  ar.n_duplicates = n;
  ar.duplicates = db;
  if (failed) {
    ar.n_codes = n;
    ar.codes = r->codes;
    ar.n_errors = n;
    ar.errors = errs;
  }
  rp.result_case = ENGRAM__WIRE__REPLY__RESULT_APPEND;
  rp.append = &ar;
  server_reply_send(s, w->push, j, &rp);
  free(db);
  free(errs);
}

/* One engram_append_batch over events [at, at + n) of the group; records the outcome in
 * every job's results it touches. */
static int append_range(struct net_server *s, const char *topic, engram_event *evs, size_t at,
                        size_t n, uint64_t *offs, int *dups) {
  int rc = engram_append_batch(s->log, topic, evs + at, n, offs + at, dups + at);
  if (rc == 0) s->appended += n;
  return rc;
}

/* Runs consecutive appends to one topic (js[0..n), total events <= NET_MAX_EVENTS) as one
 * engram_append_batch. When that fails (one bad event fails the whole batch) each unit
 * runs alone, so each gets its own answer: a unit is a whole request, or one event of an
 * independent request. */
static void run_append_group(struct net_server *s, struct worker *w, struct job **js, size_t nj) {
  const char *topic = js[0]->rq->append->topic;
  size_t total = 0, nh = 0;
  for (size_t i = 0; i < nj; i++) {
    const Engram__Wire__Append *ap = js[i]->rq->append;
    total += ap->n_events;
    for (size_t e = 0; e < ap->n_events; e++) nh += ap->events[e]->n_headers;
  }
  engram_event *evs = calloc(total ? total : 1, sizeof *evs);
  engram_header *hs = calloc(nh ? nh : 1, sizeof *hs);
  uint64_t *offs = calloc(total ? total : 1, sizeof *offs);
  int *dups = calloc(total ? total : 1, sizeof *dups);
  int *codes = calloc(total ? total : 1, sizeof *codes);
  char **msgs = calloc(total ? total : 1, sizeof *msgs);
  if (!evs || !hs || !offs || !dups || !codes || !msgs) {
    for (size_t i = 0; i < nj; i++)
      server_reply_error(s, w->push, js[i], ENGRAM_ENOMEM, "append: out of memory");
    goto done;
  }
  size_t at = 0, hat = 0;
  for (size_t i = 0; i < nj; i++) {
    const Engram__Wire__Append *ap = js[i]->rq->append;
    for (size_t e = 0; e < ap->n_events; e++) {
      net_event_from_wire(ap->events[e], &evs[at++], hs + hat);
      hat += ap->events[e]->n_headers;
    }
  }
  int rc = append_range(s, topic, evs, 0, total, offs, dups);
  if (rc && (nj > 1 || js[0]->rq->append->independent) && rc != ENGRAM_ENOTFOUND) {
    /* Unit by unit: a request that is all or none, or one event of an independent one. */
    at = 0;
    for (size_t i = 0; i < nj; i++) {
      const Engram__Wire__Append *ap = js[i]->rq->append;
      size_t unit = ap->independent ? 1 : ap->n_events;
      for (size_t e = 0; e < ap->n_events; e += unit) {
        int urc = append_range(s, topic, evs, at + e, unit, offs, dups);
        if (urc) {
          codes[at + e] = urc;
          msgs[at + e] = strdup(engram_errmsg(s->log));
        }
      }
      at += ap->n_events;
    }
  } else if (rc) {
    char *m = strdup(engram_errmsg(s->log));
    for (size_t i = 0; i < total; i++) {
      codes[i] = rc;
      msgs[i] = i == 0 ? m : (m ? strdup(m) : NULL);
    }
  }
  at = 0;
  for (size_t i = 0; i < nj; i++) {
    size_t k = js[i]->rq->append->n_events;
    struct ares r = {offs + at, dups + at, codes + at, msgs + at};
    if (!js[i]->rq->append->independent)
      for (size_t e = 0; e < k; e++)
        if (codes[at + e]) { /* a whole request failed: its first slot has the answer */
          codes[at] = codes[at + e];
          if (e) {
            free(msgs[at]);
            msgs[at] = msgs[at + e];
            msgs[at + e] = NULL;
          }
          break;
        }
    reply_append(s, w, js[i], &r);
    at += k;
  }
done:
  if (msgs)
    for (size_t i = 0; i < total; i++) free(msgs[i]);
  free(evs);
  free(hs);
  free(offs);
  free(dups);
  free(codes);
  free(msgs);
}

void server_run_lane(struct net_server *s, struct worker *w, struct job *list) {
  struct job *js[LANE_TAKE];
  size_t n = 0, events = 0;
  while (list) {
    struct job *j = list;
    list = j->next;
    j->next = NULL;
    if (server_prepare(s, w, j)) continue;
    if (j->rq->op_case != ENGRAM__WIRE__REQUEST__OP_APPEND) {
      server_run_one(s, w, j);
      continue;
    }
    size_t k = j->rq->append->n_events;
    if (k == 0) { /* the API's answer to an empty batch */
      engram_event none;
      uint64_t off;
      int rc = engram_append_batch(s->log, j->rq->append->topic, &none, 0, &off, NULL);
      server_reply_error(s, w->push, j, rc ? rc : ENGRAM_EINVAL, engram_errmsg(s->log));
      continue;
    }
    if (n &&
        (strcmp(js[0]->rq->append->topic, j->rq->append->topic) || events + k > NET_MAX_EVENTS)) {
      run_append_group(s, w, js, n);
      n = 0;
      events = 0;
    }
    js[n++] = j;
    events += k;
  }
  if (n) run_append_group(s, w, js, n);
}
