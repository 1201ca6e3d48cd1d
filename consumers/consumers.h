/* consumers.h — the consumer-group layer's interface to the layers above it (net/). */
#ifndef ENGRAM_CONSUMERS_H
#define ENGRAM_CONSUMERS_H

#include "log/log.h"

/* Deletes every group of `topic` (leases, DLQ, results ...) inside a write job. */
int group_drop_topic_in(log_wtx *w, const char *topic);

#endif
