/* drop.c — dropping a topic: its events (log/) and every group on it (consumers/). */
#include "consumers/cg.h"

static int drop_job(log_wtx *w, void *arg) {
  const char *topic = arg;
  int rc = group_drop_topic_in(w, topic);
  if (rc) return rc;
  return log_topic_drop_in(w, topic);
}

int cg_topic_drop(struct log *log, const char *topic) {
  if (!log) return ENGRAM_EINVAL;
  if (!log_valid_name(topic)) return log_error(log, ENGRAM_EINVAL, "drop topic: invalid name");
  /* Open the group databases first: a solo job may not open handles through
   * log_aux_dbi (it holds the handle lock). */
  cg_dbs d;
  int rc = cg_dbs_get(log, &d);
  if (rc) return rc;
  rc = log_write_solo(log, drop_job, (void *)topic);
  return rc < 0 ? rc : 0;
}
