/* fuzz_share.c — libFuzzer target for the decoder of a slot of DIR/commit.shm
 * (log_share_decode in log/share.c: what a combiner runs on another process's slot,
 * whatever that process, or a damaged file, left there).
 *
 * Input: the slot's bytes. A decode must fail cleanly or give an event whose strings and
 * payload lie inside the input, NUL-terminated; and the encoding is canonical: encoding
 * the decoded event again gives the input back, byte for byte. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "engram.h"
#include "log/log_private.h"

static void bug(const char *what) {
  fprintf(stderr, "fuzz_share: %s\n", what);
  abort();
}

/* A decoded string lies inside the input and ends there with its NUL. */
static void inside(const unsigned char *buf, size_t len, const char *s) {
  if (!s) return;
  const unsigned char *p = (const unsigned char *)s;
  if (p < buf || p >= buf + len) bug("string outside the input");
  size_t n = strnlen(s, (size_t)(buf + len - p));
  if (p + n >= buf + len) bug("string not terminated inside the input");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* An exact-size heap copy, so a read one byte past the end is caught. */
  unsigned char *buf = malloc(size ? size : 1);
  if (!buf) return 0;
  memcpy(buf, data, size);
  const char *topic;
  engram_event ev;
  engram_header headers[ENGRAM_MAX_HEADERS];
  if (log_share_decode(buf, size, &topic, &ev, headers) == 0) {
    inside(buf, size, topic);
    inside(buf, size, ev.type);
    inside(buf, size, ev.key);
    inside(buf, size, ev.content_type);
    inside(buf, size, ev.idempotency_key);
    if (ev.n_headers > ENGRAM_MAX_HEADERS) bug("too many headers");
    for (size_t i = 0; i < ev.n_headers; i++) {
      if (!ev.headers[i].name || !ev.headers[i].value) bug("a header without name or value");
      inside(buf, size, ev.headers[i].name);
      inside(buf, size, ev.headers[i].value);
    }
    const unsigned char *p = ev.payload;
    if (ev.payload_len && (p < buf || ev.payload_len > (size_t)(buf + size - p)))
      bug("payload outside the input");
    unsigned char *again = malloc(size ? size : 1);
    if (again) {
      size_t n = log_share_encode(topic, &ev, again, size);
      if (n != size || memcmp(again, buf, size)) bug("encoding the decoded event differs");
      free(again);
    }
  }
  free(buf);
  return 0;
}
