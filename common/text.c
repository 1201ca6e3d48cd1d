/* text.c — UTF-8 checks and the one-line form of a message that echoes what it was given. */
#include <stdio.h>

#include "common/common.h"

size_t text_utf8_char(const unsigned char *s, size_t n, uint32_t *cp) {
  if (n == 0) return 0;
  unsigned c = s[0];
  size_t k;
  uint32_t v, lo = 0x80, hi = 0xBF; /* the second byte's allowed range */
  if (c < 0x80) {
    k = 1, v = c;
  } else if (c >= 0xC2 && c <= 0xDF) {
    k = 2, v = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    k = 3, v = c & 0x0F;
    if (c == 0xE0) lo = 0xA0; /* overlong */
    if (c == 0xED) hi = 0x9F; /* surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    k = 4, v = c & 0x07;
    if (c == 0xF0) lo = 0x90; /* overlong */
    if (c == 0xF4) hi = 0x8F; /* past U+10FFFF */
  } else {
    return 0;
  }
  if (k > n || (k > 1 && (s[1] < lo || s[1] > hi))) return 0;
  for (size_t i = 1; i < k; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    v = (v << 6) | (s[i] & 0x3F);
  }
  if (cp) *cp = v;
  return k;
}

int text_utf8_valid(const void *s, size_t n) {
  const unsigned char *p = s;
  for (size_t i = 0, k; i < n; i += k)
    if ((k = text_utf8_char(p + i, n - i, NULL)) == 0) return 0;
  return 1;
}

size_t text_one_line(char *dst, size_t cap, const char *src) {
  if (cap == 0) return 0;
  const unsigned char *s = (const unsigned char *)src;
  size_t n = strlen(src), o = 0;
  for (size_t i = 0; i < n;) {
    uint32_t u = 0;
    size_t k = text_utf8_char(s + i, n - i, &u);
    char esc[8];
    const char *put = src + i;
    size_t len = k;
    if (k == 0 || u < 0x20 || u == 0x7F) {
      snprintf(esc, sizeof esc, "\\x%02x", s[i]);
      put = esc, len = 4, k = 1;
    } else if (u >= 0x80 && u <= 0x9F) { /* C1 controls */
      snprintf(esc, sizeof esc, "\\u%04x", (unsigned)u);
      put = esc, len = 6;
    }
    if (o + len >= cap) break; /* cut between characters, never inside one */
    memmove(dst + o, put, len);
    o += len;
    i += k;
  }
  dst[o] = '\0';
  return o;
}
