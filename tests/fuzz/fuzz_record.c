/* fuzz_record.c — libFuzzer target for the stored-record decoder, log_codec_decode().
 *
 * Input: 8 bytes of big-endian offset, then a stored value (u32 LE CRC32C, protobuf
 * Record). Each input is decoded twice: as given (the CRC must reject almost all of it)
 * and with its CRC recomputed, so the fuzzer reaches the protobuf reader behind it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "log/log.h"

static void bug(const char *what) {
  fprintf(stderr, "fuzz_record: %s\n", what);
  abort();
}

/* A returned slice lies inside the input (or is empty). Reading every byte lets the
 * address sanitizer catch a slice that does not. */
static unsigned slice(const unsigned char *buf, size_t len, const void *p, size_t n) {
  if (n == 0) return 0;
  const unsigned char *q = p;
  if (!q || q < buf || q > buf + len || n > (size_t)(buf + len - q)) bug("slice outside the input");
  unsigned sum = 0;
  for (size_t i = 0; i < n; i++) sum += q[i];
  return sum;
}

static void decode(const unsigned char *buf, size_t len, uint64_t offset) {
  log_view v;
  int rc = log_codec_decode(buf, len, offset, &v);
  if (rc == ENGRAM_ECORRUPT) return;
  if (rc != 0) bug("decode returned neither 0 nor ENGRAM_ECORRUPT");
  volatile unsigned sink = 0;
  if (v.offset != offset) bug("view offset differs");
  if (v.type_len == 0 || v.type_len > ENGRAM_MAX_TYPE) bug("type length out of range");
  if (v.compression > 1) bug("unknown compression accepted");
  if (v.compression == 0 && v.raw_len != v.payload_len)
    bug("raw_len differs from an uncompressed payload");
  if (!v.has_key && v.key_len) bug("a key without has_key");
  if (v.n_headers > ENGRAM_MAX_HEADERS) bug("too many headers");
  sink += slice(buf, len, v.type, v.type_len);
  sink += slice(buf, len, v.key, v.key_len);
  sink += slice(buf, len, v.payload, v.payload_len);
  sink += slice(buf, len, v.content_type, v.content_type_len);
  sink += slice(buf, len, v.idem, v.idem_len);
  for (uint32_t i = 0; i < v.n_headers; i++) {
    if (v.headers[i].name_len == 0) bug("a header without a name");
    sink += slice(buf, len, v.headers[i].name, v.headers[i].name_len);
    sink += slice(buf, len, v.headers[i].value, v.headers[i].value_len);
  }
  (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 8) return 0;
  uint64_t offset = be64_get(data);
  size_t len = size - 8;
  /* An exact-size heap copy, so a read one byte past the end is caught. */
  unsigned char *buf = malloc(len ? len : 1);
  if (!buf) return 0;
  memcpy(buf, data + 8, len);
  decode(buf, len, offset);
  if (len >= 4) {
    unsigned char ob[8];
    be64_put(ob, offset);
    le32_put(buf, crc32c(crc32c(0, ob, 8), buf + 4, len - 4));
    decode(buf, len, offset);
  }
  free(buf);
  return 0;
}
