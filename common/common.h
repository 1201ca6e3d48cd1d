/* common.h — small helpers every layer may use: byte order, CRC32C, clocks, errno mapping. */
#ifndef ENGRAM_COMMON_H
#define ENGRAM_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Big-endian composite keys make byte order equal number order in LMDB. */
static inline void be64_put(unsigned char *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) {
    p[i] = (unsigned char)v;
    v >>= 8;
  }
}
static inline uint64_t be64_get(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}
static inline void be32_put(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}
static inline uint32_t be32_get(const unsigned char *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void le32_put(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16);
  p[3] = (unsigned char)(v >> 24);
}
static inline uint32_t le32_get(const unsigned char *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* CRC32C (Castagnoli), hardware-accelerated where the CPU has SSE4.2. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* CLOCK_REALTIME and CLOCK_MONOTONIC in nanoseconds. */
int64_t clock_realtime_ns(void);
int64_t clock_monotonic_ns(void);
/* Sleeps ns nanoseconds (restarting after signals). */
void clock_sleep_ns(int64_t ns);

/* Durations become nanoseconds only through these, so no option can wrap a deadline
 * into the past: a result past INT64_MAX (the year 2262) saturates there, which reads
 * as "never". The public limits (ENGRAM_MAX_*_MS) keep real values far below it. */
static inline int64_t clock_ms_to_ns(uint64_t ms) {
  return ms > (uint64_t)INT64_MAX / 1000000 ? INT64_MAX : (int64_t)ms * 1000000;
}
/* t + d nanoseconds, saturating at INT64_MIN / INT64_MAX. */
static inline int64_t clock_add_ns(int64_t t, int64_t d) {
  int64_t r;
  if (__builtin_add_overflow(t, d, &r)) return d > 0 ? INT64_MAX : INT64_MIN;
  return r;
}
/* t + ms milliseconds: a deadline `ms` after `t`. */
static inline int64_t clock_after_ms(int64_t t, uint64_t ms) {
  return clock_add_ns(t, clock_ms_to_ns(ms));
}

/* Maps an errno value to an ENGRAM_E* code. */
int err_from_errno(int e);
/* The one check that no private code (log/'s LOG_E*, or anything else outside the
 * error table) reaches a caller: returns `code` when it is 0, positive (an internal
 * count, not an error) or a code of the table, and ENGRAM_EINTERNAL for any other
 * negative value. Applied at the exit of every write (log_job_wait) and to every reply
 * the daemon sends. */
int err_public(int code);

/* For tests only: when the environment variable ENGRAM_TEST_CLOCK_FILE names a file, its
 * first 8 bytes (a little-endian int64 of CLOCK_REALTIME nanoseconds) are the default
 * clock of every handle, so that test programs in several processes share one fast clock.
 * Returns 1 with *ns set when the variable is set and the file readable, else 0. */
int clock_test_file_ns(int64_t *ns);

/* The length of the valid UTF-8 character at s[0..n) (1 for any ASCII byte), with its
 * code point in *cp (when cp is not NULL), or 0 when s does not start with one: a stray
 * or cut byte, an overlong form, a surrogate. */
size_t text_utf8_char(const unsigned char *s, size_t n, uint32_t *cp);
/* Whether s[0..n) is valid UTF-8. */
int text_utf8_valid(const void *s, size_t n);
/* Copies the NUL-terminated src to dst (cap bytes with its NUL) as one line of valid
 * UTF-8: control bytes and bytes that are not UTF-8 become \xNN, C1 controls \u00NN, and
 * a copy that does not fit is cut between characters. Returns the length written; dst
 * may not overlap src. For messages that quote what a caller gave (names, types), so
 * that a bad name cannot break the line or the caller's decoding of the message. */
size_t text_one_line(char *dst, size_t cap, const char *src);

#endif
