/* clock.c — wall and monotonic clocks in nanoseconds, and errno translation. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
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

static const char *test_clock_path; /* set once, by find_test_clock */
static pthread_once_t test_clock_once = PTHREAD_ONCE_INIT;

static void find_test_clock(void) {
  const char *p = getenv("ENGRAM_TEST_CLOCK_FILE");
  test_clock_path = p && *p ? p : NULL;
}

int clock_test_file_ns(int64_t *ns) {
  pthread_once(&test_clock_once, find_test_clock);
  if (!test_clock_path) return 0;
  int fd = open(test_clock_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  unsigned char b[8];
  ssize_t n = pread(fd, b, sizeof b, 0);
  close(fd);
  if (n != (ssize_t)sizeof b) return 0;
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
  *ns = (int64_t)v;
  return 1;
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
    case EMFILE: /* the process's open-file limit (ulimit -n), or the system's */
    case ENFILE:
      return ENGRAM_ELIMIT;
    default:
      return ENGRAM_EIO;
  }
}
