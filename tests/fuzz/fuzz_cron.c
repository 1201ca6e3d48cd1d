/* fuzz_cron.c — libFuzzer target for the cron parser and the next-slot search (common/
 * cron.c, what `engram schedule add --cron` and the daemon's schedule_add run on client
 * text).
 *
 * Input: any bytes, taken as one expression (up to the first NUL). What parses must give,
 * in UTC and in Europe/Paris (DST gaps and overlaps), next instants that move strictly
 * forward and that a search started one second earlier finds again. Links common/cron.c
 * and common/tz.c themselves. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cron.h"

static void bug(const char *what, const char *expr) {
  fprintf(stderr, "fuzz_cron: \"%s\": %s\n", expr, what);
  abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char expr[300];
  size_t n = size < sizeof expr - 1 ? size : sizeof expr - 1;
  memcpy(expr, data, n);
  expr[n] = '\0';
  struct cron c;
  char err[256];
  if (cron_parse(expr, &c, err, sizeof err) != 0) {
    if (!err[0]) bug("refused without a message", expr);
    return 0;
  }
  static struct tz *zones[2];
  if (!zones[0] && (tz_load(NULL, "UTC", &zones[0], err, sizeof err) ||
                    tz_load(NULL, "Europe/Paris", &zones[1], err, sizeof err)))
    return 0; /* no tzdata on this host */
  /* 2026-03-28 and 2026-10-24 noon UTC: the days before Paris's changes. */
  static const int64_t starts[] = {1774699200, 1792843200};
  for (int z = 0; z < 2; z++)
    for (int s = 0; s < 2; s++) {
      int64_t t = starts[s];
      for (int i = 0; i < 8; i++) {
        int64_t next = cron_next(&c, zones[z], t);
        if (next == INT64_MAX) break;
        if (next <= t) bug("next is not after the start", expr);
        if (cron_next(&c, zones[z], next - 1) != next) bug("next is not found again", expr);
        t = next;
      }
    }
  return 0;
}
