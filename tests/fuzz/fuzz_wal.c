/* fuzz_wal.c — libFuzzer target for the recovery of the write-ahead file (log/wal.c:
 * log_wal_recover, what the first open after a crash runs on DIR/wal, whatever a power
 * cut left in it).
 *
 * Input: the first byte picks how the rest becomes DIR/wal beside a real, whole data.mdb
 * (made once per process):
 *   even: the bytes are the file, as they are (headers and records as a cut left them);
 *   odd:  a whole header (the log's own meta pages) followed by records built from the
 *         bytes, each with a right CRC and the next sequence number, so that the replay
 *         itself runs: a record is [1 byte extents][per extent: 2 bytes offset in pages,
 *         2 bytes length, the bytes], cut short where the input ends.
 * Recovery must return 0 or an error with a message, never crash, and leave a file that
 * a second recovery reads as closed cleanly (it writes nothing more). The replayed pages
 * may be garbage for LMDB: the log is not opened. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "engram.h"
#include "log/log_private.h"

static char dir[256], data_path[300], wal_path[300];
static unsigned char *pristine;
static size_t pristine_len;

static void die(const char *what) {
  fprintf(stderr, "fuzz_wal: %s: %s\n", what, strerror(errno));
  abort();
}

static char top[64];

static void cleanup(void) { log_rmtree(top); }

static void setup(void) {
  if (pristine) return;
  char tmpl[] = "/tmp/fuzz_wal.XXXXXX";
  if (!mkdtemp(tmpl)) die("mkdtemp");
  snprintf(top, sizeof top, "%s", tmpl);
  atexit(cleanup);
  snprintf(dir, sizeof dir, "%s/log", tmpl);
  engram *log;
  if (engram_open(dir, NULL, &log) || engram_topic_create(log, "t", NULL)) die("make a log");
  for (int i = 0; i < 20; i++) {
    engram_event ev = {.type = "memory.saved", .payload = "{\"m\":1}", .payload_len = 7};
    uint64_t off;
    if (engram_append(log, "t", &ev, &off, NULL)) die("append");
  }
  engram_close(log);
  snprintf(data_path, sizeof data_path, "%s/data.mdb", dir);
  snprintf(wal_path, sizeof wal_path, "%s/wal", dir);
  FILE *f = fopen(data_path, "rb");
  if (!f) die("open data.mdb");
  fseek(f, 0, SEEK_END);
  pristine_len = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  pristine = malloc(pristine_len);
  if (!pristine || fread(pristine, 1, pristine_len, f) != pristine_len) die("read data.mdb");
  fclose(f);
}

static void put(const char *path, const void *b, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || (n && write(fd, b, n) != (ssize_t)n)) die(path);
  close(fd);
}

/* The file's layout (log/wal.c): two header slots of a page and two meta pages, then the
 * records; a header is magic, version, page size, generation, first sequence number and
 * start, then its CRC32C over itself (CRC 0) and the meta pages. */
struct hdr {
  uint64_t magic;
  uint32_t version, psize;
  uint64_t gen, seq0, start;
  uint32_t crc, pad;
};
struct rec {
  uint32_t magic, crc;
  uint64_t gen, seq, len;
};

static size_t build(const uint8_t *in, size_t n, unsigned char **out) {
  const uint32_t ps = 4096;
  size_t slot = 4096 + 2 * ps, cap = 2 * slot + n * 40 + 4096, len = 2 * slot;
  unsigned char *b = calloc(1, cap);
  if (!b) die("calloc");
  struct hdr h = {.magic = 0x314c4157474e45ull,
                  .version = 1,
                  .psize = ps,
                  .gen = 7,
                  .seq0 = 100,
                  .start = 2 * slot};
  memcpy(b + slot + 4096, pristine, 2 * ps); /* gen 7: slot 1 */
  h.crc = crc32c(crc32c(0, &h, sizeof h), b + slot + 4096, 2 * ps);
  memcpy(b + slot, &h, sizeof h);
  uint64_t seq = 100;
  size_t i = 0;
  while (i < n && len + sizeof(struct rec) <= cap) {
    unsigned next = in[i++];
    size_t body = len + sizeof(struct rec), p = body;
    for (unsigned e = 0; e < (next & 7) && i + 4 <= n; e++) {
      uint16_t pg, l;
      memcpy(&pg, in + i, 2);
      memcpy(&l, in + i + 2, 2);
      i += 4;
      l = (uint16_t)(l % 4097);
      if (l > n - i) l = (uint16_t)(n - i);
      uint64_t off = (uint64_t)(pg % (pristine_len / ps + 4)) * ps, el = l;
      if (p + 16 + ((el + 7) & ~7ull) > cap) break;
      memcpy(b + p, &off, 8);
      memcpy(b + p + 8, &el, 8);
      memcpy(b + p + 16, in + i, l);
      i += l;
      p += 16 + ((el + 7) & ~7ull);
    }
    struct rec r = {.magic = 0x43455257u, .gen = 7, .seq = seq++, .len = p - body};
    r.crc = crc32c(crc32c(0, &r, sizeof r), b + body, (size_t)r.len);
    memcpy(b + len, &r, sizeof r);
    len = p;
  }
  *out = b;
  return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  if (size == 0) return 0;
  put(data_path, pristine, pristine_len);
  unlink(wal_path);
  if (data[0] & 1) {
    unsigned char *b;
    size_t n = build(data + 1, size - 1, &b);
    put(wal_path, b, n);
    free(b);
  } else {
    put(wal_path, data + 1, size - 1);
  }
  int rc = log_wal_recover(dir, 0);
  if (rc > 0 || (rc < 0 && !log_errmsg(NULL)[0])) {
    fprintf(stderr, "fuzz_wal: recovery returned %d without a message\n", rc);
    abort();
  }
  if (rc == 0) {
    /* Recovered: what it left replays nothing and writes nothing. */
    struct stat a, b;
    if (stat(data_path, &a)) die("stat");
    int rc2 = log_wal_recover(dir, 1); /* read-only: refuses if a replay were needed */
    if (rc2 != 0) {
      fprintf(stderr, "fuzz_wal: a second recovery found work left: %s\n", log_errmsg(NULL));
      abort();
    }
    if (stat(data_path, &b) || a.st_size != b.st_size) die("data.mdb changed");
  }
  return 0;
}
