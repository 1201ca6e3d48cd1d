/* group.c — consumer groups (being built): dropping a topic's groups. */
#include "consumers/consumers.h"

int group_drop_topic_in(log_wtx *w, const char *topic) {
  (void)w;
  (void)topic;
  return 0; /* no group storage exists yet */
}
