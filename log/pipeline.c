/* pipeline.c — pipelined appends on embedded handles: the producer queues events and
 * goes on; two writer threads submit them in bulk to the commit path.
 *
 * Why two writers: in sync mode a committed batch is released only after the file is
 * flushed once more. While one writer waits for that, the other commits the next batch,
 * whose flush releases the first. So a producer that keeps appending pays about one
 * flush per commit, and every commit carries whatever queued meanwhile. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log/log_private.h"

#define WINDOW 4096 /* appends queued or in flight before the producer waits */
#define BULK 1024   /* appends per commit job */
#define WRITERS 2

struct aitem {
  char *topic;
  engram_event ev; /* deep copy */
  engram_append_cb cb;
  void *ctx;
  int rc;
  uint64_t off;
  int dup;
  uint64_t seq; /* queue order: callbacks run in this order */
  struct aitem *next;
};

struct log_pipe {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* queue changed, items completed, or stop */
  struct aitem *q_head, *q_tail;
  struct aitem *d_head; /* completed, callbacks not yet run, in queue order */
  size_t inflight;      /* queued + submitted, not completed */
  uint64_t seq;         /* next item's sequence number */
  uint64_t next_cb;     /* sequence number whose callback runs next */
  int first_err;
  char first_msg[256];
  int stop;
  int nwriters;
  pthread_t writers[WRITERS];
};

static void item_free(struct aitem *it) {
  free(it->topic);
  log_event_free(&it->ev);
  free(it);
}

static struct aitem *item_new(const char *topic, const engram_event *ev) {
  struct aitem *it = calloc(1, sizeof *it);
  if (!it) return NULL;
  it->topic = strdup(topic);
  if (!it->topic || log_event_copy(&it->ev, ev)) {
    item_free(it);
    return NULL;
  }
  return it;
}

/* One commit job over a bulk of items. An item refused for its own reasons (no such
 * topic, too big ...) fails alone; a storage error fails the whole job. */
static int bulk_job(log_wtx *w, void *arg) {
  for (struct aitem *it = arg; it; it = it->next) {
    it->off = 0;
    it->dup = 0;
    it->rc = log_append_in(w, it->topic, &it->ev, &it->off, &it->dup);
    if (it->rc == ENGRAM_EINVAL || it->rc == ENGRAM_ENOTFOUND || it->rc == ENGRAM_ETOOBIG) continue;
    if (it->rc < 0) return it->rc;
  }
  return 0;
}

static void *writer_main(void *arg) {
  struct log *log = arg;
  struct log_pipe *p = log->pipe;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->q_head && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
    if (!p->q_head) break;
    struct aitem *head = p->q_head, *last = head;
    for (int n = 1; n < BULK && last->next; n++) last = last->next;
    p->q_head = last->next;
    if (!p->q_head) p->q_tail = NULL;
    last->next = NULL;
    /* Taking a bulk and queueing its job happen under one lock, so bulks commit in
     * the order they were appended: a producer's events keep their order in the log. */
    struct log_job job = {.fn = bulk_job, .arg = head};
    int rc = log_job_enqueue(log, &job);
    pthread_mutex_unlock(&p->mu);
    if (rc == 0) rc = log_job_wait(log, &job);
    char msg[256];
    snprintf(msg, sizeof msg, "%s", log_errmsg(log));
    pthread_mutex_lock(&p->mu);
    size_t n = 0;
    for (struct aitem *it = head; it; it = it->next, n++) {
      if (rc < 0) it->rc = rc;
      if (it->rc < 0 && !p->first_err) {
        p->first_err = it->rc;
        snprintf(p->first_msg, sizeof p->first_msg, "%s", msg);
      }
    }
    /* Bulks can finish out of order (one waits for the other's flush): keep the list of
     * completed items in queue order. */
    struct aitem **pp = &p->d_head;
    while (*pp && (*pp)->seq < head->seq) pp = &(*pp)->next;
    last->next = *pp;
    *pp = head;
    p->inflight -= n;
    pthread_cond_broadcast(&p->cv);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* Runs the callbacks of completed items on the calling thread. Called with mu held;
 * releases it while calling out. */
static void deliver(struct log_pipe *p) {
  while (p->d_head && p->d_head->seq == p->next_cb) {
    struct aitem *list = p->d_head, *last = list;
    while (last->next && last->next->seq == last->seq + 1) last = last->next;
    p->d_head = last->next;
    last->next = NULL;
    p->next_cb = last->seq + 1;
    pthread_mutex_unlock(&p->mu);
    while (list) {
      struct aitem *next = list->next;
      if (list->cb) list->cb(list->ctx, list->rc, list->off, list->dup);
      item_free(list);
      list = next;
    }
    pthread_mutex_lock(&p->mu);
  }
}

static struct log_pipe *pipe_get(struct log *log) {
  pthread_mutex_lock(&log->mu);
  struct log_pipe *p = log->pipe;
  if (!p && (p = calloc(1, sizeof *p))) {
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    log->pipe = p;
    for (int i = 0; i < WRITERS; i++)
      if (pthread_create(&p->writers[i], NULL, writer_main, log) == 0) p->nwriters++;
  }
  pthread_mutex_unlock(&log->mu);
  return p && p->nwriters ? p : NULL;
}

int log_append_async(struct log *log, const char *topic, const engram_event *ev,
                     engram_append_cb cb, void *ctx) {
  if (!log) return ENGRAM_EINVAL;
  if (log_foreign(log))
    return log_error(log, ENGRAM_EINVAL,
                     "append: handle used in a child after fork; open a new one");
  struct log_pipe *p = pipe_get(log);
  struct aitem *it = item_new(topic, ev);
  if (!p || !it) {
    if (it) item_free(it);
    return log_error(log, ENGRAM_ENOMEM, "append %s: out of memory", topic);
  }
  it->cb = cb;
  it->ctx = ctx;
  pthread_mutex_lock(&p->mu);
  deliver(p);
  while (p->inflight >= WINDOW) {
    pthread_cond_wait(&p->cv, &p->mu);
    deliver(p);
  }
  it->seq = p->seq++;
  if (p->q_tail)
    p->q_tail->next = it;
  else
    p->q_head = it;
  p->q_tail = it;
  p->inflight++;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return 0;
}

int log_append_wait(struct log *log) {
  if (!log) return ENGRAM_EINVAL;
  struct log_pipe *p = log->pipe;
  if (!p) return 0;
  pthread_mutex_lock(&p->mu);
  while (p->inflight > 0 || p->d_head) {
    deliver(p);
    if (p->inflight > 0) pthread_cond_wait(&p->cv, &p->mu);
  }
  int rc = p->first_err;
  char msg[256];
  snprintf(msg, sizeof msg, "%s", p->first_msg);
  p->first_err = 0;
  p->first_msg[0] = '\0';
  pthread_mutex_unlock(&p->mu);
  return rc ? log_error(log, rc, "%s", msg) : 0;
}

/* At close: lets the writers finish what is queued, then frees everything. Callbacks of
 * appends not waited for are not run. */
void log_pipe_stop(struct log *log) {
  struct log_pipe *p = log->pipe;
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->nwriters; i++) pthread_join(p->writers[i], NULL);
  struct aitem *it = p->d_head;
  while (it) {
    struct aitem *n = it->next;
    item_free(it);
    it = n;
  }
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p);
  log->pipe = NULL;
}
