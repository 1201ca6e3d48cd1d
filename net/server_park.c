/* server_park.c — topic change sequences, parked long-poll fetches woken by commits and
 * group changes, and the notifications the daemon publishes. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/server.h"

/* ---------------------------------------------------------------------------------
 * Topic sequences, parking, notifications. All under s->mu.
 * ------------------------------------------------------------------------------ */
unsigned server_hash(const void *p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ ((const unsigned char *)p)[i]) * 16777619u;
  return h;
}

/* The topic's entry; with `create`, made when missing (at most MAX_TOPIC_SEQS of them:
 * past that a topic only loses its prompt wake-ups, not its events). */
struct tseq *server_tseq_lookup(struct net_server *s, const char *topic, int create) {
  size_t n = strlen(topic);
  struct tseq **b = &s->seqs[server_hash(topic, n) % SEQ_BUCKETS];
  for (struct tseq *t = *b; t; t = t->next)
    if (!strcmp(t->name, topic)) return t;
  if (!create || s->n_seqs >= MAX_TOPIC_SEQS) return NULL;
  struct tseq *t = calloc(1, sizeof *t + n + 1);
  if (!t) return NULL;
  memcpy(t->name, topic, n + 1);
  t->next = *b;
  *b = t;
  s->n_seqs++;
  return t;
}

struct tseq *server_tseq_get(struct net_server *s, const char *topic) {
  return server_tseq_lookup(s, topic, 1);
}

void server_wake_main(struct net_server *s) {
  uint64_t one = 1;
  ssize_t r = write(s->wake_fd, &one, sizeof one);
  (void)r;
}

void server_enqueue(struct net_server *s, struct job *j) {
  j->next = NULL;
  if (s->q_tail)
    s->q_tail->next = j;
  else
    s->q_head = j;
  s->q_tail = j;
  s->queued++;
  if (!s->hold) pthread_cond_signal(&s->cv);
}

/* Parked fetches on `topic` look again now. Called from a worker (a commit, a group
 * change) they go to the woken list without waking another worker: the calling worker
 * takes them as soon as its current job is done, which saves a thread hand-off on the
 * path from an append to a waiting consumer. From the main thread (`signal`) a worker
 * is woken. */
void server_topic_changed_locked(struct net_server *s, const char *topic, int signal) {
  struct tseq *t = server_tseq_get(s, topic);
  if (t) t->seq++;
  struct job **pp = &s->parked;
  while (*pp) {
    struct job *j = *pp;
    if (!strcmp(server_job_topic(j), topic)) {
      *pp = j->next;
      s->n_parked--;
      j->next = NULL;
      if (s->w_tail)
        s->w_tail->next = j;
      else
        s->w_head = j;
      s->w_tail = j;
      s->queued++;
      if (signal) pthread_cond_signal(&s->cv);
    } else {
      pp = &j->next;
    }
  }
}

void net_server_topic_changed(struct net_server *s, const char *topic) {
  pthread_mutex_lock(&s->mu);
  server_topic_changed_locked(s, topic, 0);
  pthread_mutex_unlock(&s->mu);
  net_notify_wake(api_log(s->log), topic);
}

/* The daemon handle's commit hook: runs on the committing worker. */
void server_on_commit(void *ctx, const char *topic, uint64_t head) {
  struct net_server *s = ctx;
  pthread_mutex_lock(&s->mu);
  server_topic_changed_locked(s, topic, 0);
  struct tseq *t = server_tseq_get(s, topic);
  int wake = 0;
  if (t) {
    if (head > t->head) t->head = head;
    if (!t->dirty) {
      t->dirty = 1;
      t->next_dirty = s->dirty;
      s->dirty = t;
      wake = 1;
    }
  }
  pthread_mutex_unlock(&s->mu);
  /* A commit the main thread made itself is published after its request (a wake-up
   * would cost it a write, a read and another turn of its loop: syscalls are dear). */
  if (wake && !pthread_equal(pthread_self(), s->main_thread)) server_wake_main(s);
}

void server_publish(struct net_server *s, const char *topic, uint64_t head) {
  unsigned char h[8];
  be64_put(h, head);
  if (zmq_send(s->pub, topic, strlen(topic), ZMQ_DONTWAIT | ZMQ_SNDMORE) >= 0 &&
      zmq_send(s->pub, h, 8, ZMQ_DONTWAIT) >= 0)
    s->notifications++;
}

/* Main thread: publishes the newest head of every topic committed since last time. */
void server_publish_dirty(struct net_server *s) {
  struct {
    char name[ENGRAM_MAX_NAME + 1];
    uint64_t head;
  } batch[64];
  for (;;) {
    int n = 0;
    pthread_mutex_lock(&s->mu);
    while (s->dirty && n < 64) {
      struct tseq *t = s->dirty;
      s->dirty = t->next_dirty;
      t->dirty = 0;
      snprintf(batch[n].name, sizeof batch[n].name, "%s", t->name);
      batch[n].head = t->head;
      n++;
    }
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < n; i++) server_publish(s, batch[i].name, batch[i].head);
    if (n < 64) return;
  }
}
