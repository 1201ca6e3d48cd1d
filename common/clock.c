/* clock.c — wall and monotonic clocks in nanoseconds, and errno translation. */
#include <errno.h>
#include <time.h>

#include "common.h"
#include "engram.h"

int64_t clock_realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t clock_monotonic_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void clock_sleep_ns(int64_t ns) {
  if (ns <= 0) return;
  struct timespec ts = {.tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

int err_from_errno(int e) {
  switch (e) {
    case 0:
      return ENGRAM_OK;
    case ENOMEM:
      return ENGRAM_ENOMEM;
    case ENOSPC:
    case EDQUOT:
      return ENGRAM_ENOSPC;
    case ENOENT:
      return ENGRAM_ENOTFOUND;
    case EEXIST:
    case ENOTEMPTY:
      return ENGRAM_EEXIST;
    case EINVAL:
      return ENGRAM_EINVAL;
    case EACCES:
    case EPERM:
      return ENGRAM_EDENIED;
    case EBUSY:
    case EAGAIN:
      return ENGRAM_EBUSY;
    case ETIMEDOUT:
      return ENGRAM_ETIMEDOUT;
    default:
      return ENGRAM_EIO;
  }
}
