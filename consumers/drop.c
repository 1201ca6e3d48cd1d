/* drop.c — dropping a topic: its events (log/) and every group on it (consumers/). */
#include "consumers/consumers.h"

static int drop_job(log_wtx *w, void *arg) {
  const char *topic = arg;
  int rc = group_drop_topic_in(w, topic);
  if (rc) return rc;
  return log_topic_drop_in(w, topic);
}

int engram_topic_drop(engram *log, const char *topic) {
  if (!log) return ENGRAM_EINVAL;
  if (log->remote) return log->remote->topic_drop(log, topic);
  int rc = log_write_solo(log, drop_job, (void *)topic);
  return rc < 0 ? rc : 0;
}
