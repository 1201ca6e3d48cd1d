/* json.c — JSON writer, strict JSON parser, UTF-8 validation and base64 for the CLI. */
#include "json.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------
 * UTF-8.
 * ------------------------------------------------------------------------------ */

/* Length of the well-formed UTF-8 sequence starting at p (n bytes available), 0 when
 * it is malformed: stray continuation byte, overlong form, surrogate, past U+10FFFF or
 * cut short. */
static size_t utf8_seq(const unsigned char *p, size_t n) {
  unsigned c = p[0];
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0;
  if (c < 0xE0) return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
  if (c < 0xF0) {
    if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && p[1] < 0xA0) return 0;
    if (c == 0xED && p[1] > 0x9F) return 0;
    return 3;
  }
  if (c < 0xF5) {
    if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
    if (c == 0xF0 && p[1] < 0x90) return 0;
    if (c == 0xF4 && p[1] > 0x8F) return 0;
    return 4;
  }
  return 0;
}

int json_utf8_valid(const void *buf, size_t len) {
  const unsigned char *p = buf;
  size_t i = 0;
  while (i < len) {
    if (p[i] < 0x80) {
      i++;
      continue;
    }
    size_t k = utf8_seq(p + i, len - i);
    if (k == 0) return 0;
    i += k;
  }
  return 1;
}

/* ---------------------------------------------------------------------------------
 * Base64.
 * ------------------------------------------------------------------------------ */
static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t json_b64_encoded_len(size_t len) { return (len + 2) / 3 * 4; }

size_t json_b64_decoded_max(size_t len) { return (len + 3) / 4 * 3; }

static void b64_encode(const unsigned char *in, size_t n, char *out) {
  size_t i = 0, o = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = b64chars[v >> 18];
    out[o++] = b64chars[(v >> 12) & 63];
    out[o++] = b64chars[(v >> 6) & 63];
    out[o++] = b64chars[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    out[o++] = b64chars[v >> 18];
    out[o++] = b64chars[(v >> 12) & 63];
    out[o++] = '=';
    out[o++] = '=';
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    out[o++] = b64chars[v >> 18];
    out[o++] = b64chars[(v >> 12) & 63];
    out[o++] = b64chars[(v >> 6) & 63];
    out[o++] = '=';
  }
}

static int b64_val(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Accepts padded input and, as many encoders omit it, unpadded input too. */
int json_b64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len) {
  const unsigned char *s = (const unsigned char *)in;
  if (len >= 1 && s[len - 1] == '=') {
    if (len % 4 != 0) return -1;
    len--;
    if (s[len - 1] == '=') len--;
  }
  if (len % 4 == 1) return -1;
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; i++) {
    int v = b64_val(s[i]);
    if (v < 0) return -1;
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (unsigned char)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  *out_len = o;
  return 0;
}

/* ---------------------------------------------------------------------------------
 * Writer.
 * ------------------------------------------------------------------------------ */
void json_w_init(json_writer *w) { memset(w, 0, sizeof *w); }

void json_w_free(json_writer *w) {
  free(w->buf);
  memset(w, 0, sizeof *w);
}

void json_w_reset(json_writer *w) {
  w->len = 0;
  w->failed = 0;
  w->depth = 0;
  w->after_key = 0;
}

/* Makes room for n more bytes plus a terminating NUL; 0 or -1 (w->failed set). */
static int reserve(json_writer *w, size_t n) {
  if (w->failed) return -1;
  if (n > SIZE_MAX / 2 - w->len) {
    w->failed = 1;
    return -1;
  }
  if (w->len + n + 1 <= w->cap) return 0;
  size_t cap = w->cap ? w->cap : 256;
  while (cap < w->len + n + 1) cap *= 2;
  char *p = realloc(w->buf, cap);
  if (!p) {
    w->failed = 1;
    return -1;
  }
  w->buf = p;
  w->cap = cap;
  return 0;
}

static void put(json_writer *w, const char *s, size_t n) {
  if (reserve(w, n) < 0) return;
  memcpy(w->buf + w->len, s, n);
  w->len += n;
  w->buf[w->len] = '\0';
}

static void putc1(json_writer *w, char c) { put(w, &c, 1); }

/* Writes the comma a value needs when it is not the first of its container. */
static void before_value(json_writer *w) {
  if (w->after_key) {
    w->after_key = 0;
    return;
  }
  if (w->depth > 0) {
    if (w->started[w->depth - 1]) putc1(w, ',');
    w->started[w->depth - 1] = 1;
  }
}

static void open_container(json_writer *w, char c) {
  before_value(w);
  putc1(w, c);
  if (w->depth >= JSON_MAX_DEPTH) {
    w->failed = 1;
    return;
  }
  w->started[w->depth++] = 0;
}

static void close_container(json_writer *w, char c) {
  if (w->depth > 0) w->depth--;
  putc1(w, c);
}

void json_obj(json_writer *w) { open_container(w, '{'); }
void json_obj_end(json_writer *w) { close_container(w, '}'); }
void json_arr(json_writer *w) { open_container(w, '['); }
void json_arr_end(json_writer *w) { close_container(w, ']'); }

static void put_string(json_writer *w, const unsigned char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  putc1(w, '"');
  size_t i = 0;
  while (i < n) {
    /* Copy the longest run that needs no escaping in one go. */
    size_t j = i;
    while (j < n && s[j] >= 0x20 && s[j] < 0x7F && s[j] != '"' && s[j] != '\\') j++;
    if (j > i) {
      put(w, (const char *)s + i, j - i);
      i = j;
      continue;
    }
    unsigned char c = s[i];
    if (c >= 0x80) {
      size_t k = utf8_seq(s + i, n - i);
      if (k == 0) {
        put(w, "\\ufffd", 6);
        i++;
      } else {
        put(w, (const char *)s + i, k);
        i += k;
      }
      continue;
    }
    char esc[7];
    size_t el = 2;
    esc[0] = '\\';
    switch (c) {
      case '"':
        esc[1] = '"';
        break;
      case '\\':
        esc[1] = '\\';
        break;
      case '\b':
        esc[1] = 'b';
        break;
      case '\f':
        esc[1] = 'f';
        break;
      case '\n':
        esc[1] = 'n';
        break;
      case '\r':
        esc[1] = 'r';
        break;
      case '\t':
        esc[1] = 't';
        break;
      default:
        esc[1] = 'u';
        esc[2] = '0';
        esc[3] = '0';
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
        el = 6;
    }
    put(w, esc, el);
    i++;
  }
  putc1(w, '"');
}

void json_key(json_writer *w, const char *key) {
  before_value(w);
  put_string(w, (const unsigned char *)key, strlen(key));
  putc1(w, ':');
  w->after_key = 1;
}

void json_strn(json_writer *w, const void *s, size_t n) {
  before_value(w);
  put_string(w, s, n);
}

void json_str(json_writer *w, const char *s) {
  if (!s) {
    json_null(w);
    return;
  }
  json_strn(w, s, strlen(s));
}

void json_b64(json_writer *w, const void *data, size_t n) {
  before_value(w);
  size_t el = json_b64_encoded_len(n);
  if (reserve(w, el + 2) < 0) return;
  w->buf[w->len++] = '"';
  b64_encode(data, n, w->buf + w->len);
  w->len += el;
  w->buf[w->len++] = '"';
  w->buf[w->len] = '\0';
}

static void raw(json_writer *w, const char *s, size_t n) {
  before_value(w);
  put(w, s, n);
}

void json_u64(json_writer *w, uint64_t v) {
  char b[24];
  int n = snprintf(b, sizeof b, "%" PRIu64, v);
  raw(w, b, (size_t)n);
}

void json_rate(json_writer *w, double v) {
  char b[48];
  int n = snprintf(b, sizeof b, "%.3f", v);
  raw(w, b, (size_t)n);
}

void json_i64(json_writer *w, int64_t v) {
  char b[24];
  int n = snprintf(b, sizeof b, "%" PRId64, v);
  raw(w, b, (size_t)n);
}

void json_bool(json_writer *w, int v) { v ? raw(w, "true", 4) : raw(w, "false", 5); }
void json_null(json_writer *w) { raw(w, "null", 4); }

void json_kstr(json_writer *w, const char *key, const char *s) {
  json_key(w, key);
  json_str(w, s);
}
void json_ku64(json_writer *w, const char *key, uint64_t v) {
  json_key(w, key);
  json_u64(w, v);
}
void json_ki64(json_writer *w, const char *key, int64_t v) {
  json_key(w, key);
  json_i64(w, v);
}
void json_kbool(json_writer *w, const char *key, int v) {
  json_key(w, key);
  json_bool(w, v);
}

void json_write_value(json_writer *w, const json_value *v) {
  switch (v->type) {
    case JSON_NULL:
      json_null(w);
      break;
    case JSON_FALSE:
      json_bool(w, 0);
      break;
    case JSON_TRUE:
      json_bool(w, 1);
      break;
    case JSON_NUMBER:
      raw(w, v->num, v->num_len);
      break;
    case JSON_STRING:
      json_strn(w, v->str, v->len);
      break;
    case JSON_ARRAY:
      json_arr(w);
      for (size_t i = 0; i < v->len; i++) json_write_value(w, &v->items[i]);
      json_arr_end(w);
      break;
    case JSON_OBJECT:
      json_obj(w);
      for (size_t i = 0; i < v->len; i++) {
        before_value(w);
        put_string(w, (const unsigned char *)v->members[i].key, v->members[i].key_len);
        putc1(w, ':');
        w->after_key = 1;
        json_write_value(w, &v->members[i].value);
      }
      json_obj_end(w);
      break;
  }
}

/* ---------------------------------------------------------------------------------
 * Parser. The tree lives in an arena of blocks owned by the document, so freeing it is
 * one walk over the blocks however the parse ended.
 * ------------------------------------------------------------------------------ */
#define PARSE_MAX_DEPTH 100 /* below JSON_MAX_DEPTH so re-writing inside a wrapper fits */
#define ARENA_BLOCK (64u * 1024)

struct block {
  struct block *next;
  size_t used, cap;
  unsigned char *data;
};

struct json_doc {
  struct block *blocks;
  json_value root;
};

static void *arena_alloc(json_doc *d, size_t n) {
  n = (n + 15) & ~(size_t)15;
  struct block *b = d->blocks;
  if (!b || b->cap - b->used < n) {
    size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
    b = malloc(sizeof *b + cap + 16);
    if (!b) return NULL;
    /* Align the data area by hand: the header's size is not a multiple of 16. */
    uintptr_t p = ((uintptr_t)(b + 1) + 15) & ~(uintptr_t)15;
    b->data = (unsigned char *)p;
    b->used = 0;
    b->cap = cap;
    b->next = d->blocks;
    d->blocks = b;
  }
  void *p = b->data + b->used;
  b->used += n;
  return p;
}

void json_doc_free(json_doc *d) {
  if (!d) return;
  struct block *b = d->blocks;
  while (b) {
    struct block *next = b->next;
    free(b);
    b = next;
  }
  free(d);
}

const json_value *json_doc_root(const json_doc *d) { return &d->root; }

struct parser {
  const unsigned char *s;
  size_t len, pos;
  json_doc *doc;
  char *err;
  size_t errlen;
  int oom;
  int depth;
};

static int fail(struct parser *p, const char *what) {
  if (p->err && p->errlen) snprintf(p->err, p->errlen, "column %zu: %s", p->pos + 1, what);
  return -1;
}

static int nomem(struct parser *p) {
  p->oom = 1;
  return fail(p, "out of memory");
}

static void skip_ws(struct parser *p) {
  while (p->pos < p->len) {
    unsigned char c = p->s[p->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    p->pos++;
  }
}

static int hex4(const unsigned char *s, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned char c = s[i];
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= c - '0';
    else if (c >= 'a' && c <= 'f')
      v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      v |= c - 'A' + 10;
    else
      return -1;
  }
  *out = v;
  return 0;
}

static size_t utf8_put(unsigned char *o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (unsigned char)(0xC0 | cp >> 6);
    o[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (unsigned char)(0xE0 | cp >> 12);
    o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (unsigned char)(0xF0 | cp >> 18);
  o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
  o[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Decodes the string starting at the opening quote. The decoded form is never longer
 * than the source, so one allocation of the source span suffices. */
static int parse_string(struct parser *p, char **out, size_t *out_len) {
  size_t start = ++p->pos, end = start;
  while (end < p->len && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
  if (end >= p->len) return fail(p, "unterminated string");
  unsigned char *o = arena_alloc(p->doc, end - start + 1);
  if (!o) return nomem(p);
  size_t n = 0;
  while (p->pos < end) {
    unsigned char c = p->s[p->pos];
    if (c < 0x20) return fail(p, "control character in string (escape it)");
    if (c >= 0x80) {
      size_t k = utf8_seq(p->s + p->pos, end - p->pos);
      if (k == 0) return fail(p, "invalid UTF-8 in string");
      memcpy(o + n, p->s + p->pos, k);
      n += k;
      p->pos += k;
      continue;
    }
    if (c != '\\') {
      o[n++] = c;
      p->pos++;
      continue;
    }
    unsigned char e = p->s[p->pos + 1];
    switch (e) {
      case '"':
        o[n++] = '"';
        break;
      case '\\':
        o[n++] = '\\';
        break;
      case '/':
        o[n++] = '/';
        break;
      case 'b':
        o[n++] = '\b';
        break;
      case 'f':
        o[n++] = '\f';
        break;
      case 'n':
        o[n++] = '\n';
        break;
      case 'r':
        o[n++] = '\r';
        break;
      case 't':
        o[n++] = '\t';
        break;
      case 'u': {
        unsigned cp, lo;
        if (end - p->pos < 6 || hex4(p->s + p->pos + 2, &cp) < 0)
          return fail(p, "\\u needs four hex digits");
        if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(p, "lone low surrogate in \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (end - p->pos < 12 || p->s[p->pos + 6] != '\\' || p->s[p->pos + 7] != 'u' ||
              hex4(p->s + p->pos + 8, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
            return fail(p, "high surrogate in \\u escape without its low surrogate");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          p->pos += 6;
        }
        n += utf8_put(o + n, cp);
        p->pos += 6;
        continue;
      }
      default:
        return fail(p, "unknown escape in string");
    }
    p->pos += 2;
  }
  o[n] = '\0';
  p->pos = end + 1;
  *out = (char *)o;
  *out_len = n;
  return 0;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int parse_number(struct parser *p, json_value *v) {
  size_t i = p->pos;
  const unsigned char *s = p->s;
  if (i < p->len && s[i] == '-') i++;
  if (i >= p->len || !is_digit(s[i])) {
    p->pos = i;
    return fail(p, "invalid number");
  }
  if (s[i] == '0') {
    i++;
  } else {
    while (i < p->len && is_digit(s[i])) i++;
  }
  if (i < p->len && s[i] == '.') {
    i++;
    if (i >= p->len || !is_digit(s[i])) {
      p->pos = i;
      return fail(p, "a number needs digits after '.'");
    }
    while (i < p->len && is_digit(s[i])) i++;
  }
  if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < p->len && (s[i] == '+' || s[i] == '-')) i++;
    if (i >= p->len || !is_digit(s[i])) {
      p->pos = i;
      return fail(p, "a number needs digits in its exponent");
    }
    while (i < p->len && is_digit(s[i])) i++;
  }
  v->type = JSON_NUMBER;
  v->num = (const char *)s + p->pos;
  v->num_len = i - p->pos;
  p->pos = i;
  return 0;
}

static int parse_value(struct parser *p, json_value *v);

/* Arrays and objects gather their items in a malloc'd buffer while parsing, then copy
 * them into the document's arena. tmp (n items of size bytes, room for *cap) with room
 * for one more: tmp itself, or moved; NULL when out of memory (tmp is still valid). */
static void *grow(struct parser *p, void *tmp, size_t n, size_t *cap, size_t size) {
  if (n < *cap) return tmp;
  size_t nc = *cap ? *cap * 2 : 8;
  void *t = realloc(tmp, nc * size);
  if (!t) {
    nomem(p);
    return NULL;
  }
  *cap = nc;
  return t;
}

/* What follows an item: 1 at the closing bracket (consumed), 0 after a comma, or -1. */
static int next_item(struct parser *p, char close, const char *unterminated, const char *expected) {
  skip_ws(p);
  if (p->pos >= p->len) return fail(p, unterminated);
  if (p->s[p->pos] == close) {
    p->pos++;
    return 1;
  }
  if (p->s[p->pos] != ',') return fail(p, expected);
  p->pos++;
  return 0;
}

/* Whether the container opening at p->pos closes at once (then consumed). */
static int empty_container(struct parser *p, char close) {
  p->pos++;
  skip_ws(p);
  if (p->pos < p->len && p->s[p->pos] == close) {
    p->pos++;
    return 1;
  }
  return 0;
}

/* The n items of tmp copied into the arena as *out (NULL when none); 0 or -1. */
static int keep(struct parser *p, const void *tmp, size_t n, size_t size, void **out) {
  *out = NULL;
  if (!n) return 0;
  if (!(*out = arena_alloc(p->doc, n * size))) return nomem(p);
  memcpy(*out, tmp, n * size);
  return 0;
}

static int parse_array(struct parser *p, json_value *v) {
  json_value *tmp = NULL;
  size_t n = 0, cap = 0;
  int rc = -1, end = empty_container(p, ']');
  while (!end) {
    void *t = grow(p, tmp, n, &cap, sizeof *tmp);
    if (!t) goto out;
    tmp = t;
    skip_ws(p);
    if (parse_value(p, &tmp[n]) < 0) goto out;
    n++;
    if ((end = next_item(p, ']', "unterminated array", "expected ',' or ']' in array")) < 0)
      goto out;
  }
  v->type = JSON_ARRAY;
  v->len = n;
  void *items;
  if (keep(p, tmp, n, sizeof *tmp, &items) < 0) goto out;
  v->items = items;
  rc = 0;
out:
  free(tmp);
  return rc;
}

static int parse_object(struct parser *p, json_value *v) {
  json_member *tmp = NULL;
  size_t n = 0, cap = 0;
  int rc = -1, end = empty_container(p, '}');
  while (!end) {
    void *t = grow(p, tmp, n, &cap, sizeof *tmp);
    if (!t) goto out;
    tmp = t;
    skip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] != '"') {
      fail(p, "expected a string as object key");
      goto out;
    }
    if (parse_string(p, &tmp[n].key, &tmp[n].key_len) < 0) goto out;
    skip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] != ':') {
      fail(p, "expected ':' after object key");
      goto out;
    }
    p->pos++;
    skip_ws(p);
    if (parse_value(p, &tmp[n].value) < 0) goto out;
    n++;
    if ((end = next_item(p, '}', "unterminated object", "expected ',' or '}' in object")) < 0)
      goto out;
  }
  v->type = JSON_OBJECT;
  v->len = n;
  void *members;
  if (keep(p, tmp, n, sizeof *tmp, &members) < 0) goto out;
  v->members = members;
  rc = 0;
out:
  free(tmp);
  return rc;
}

static int literal(struct parser *p, const char *word, json_type t, json_value *v) {
  size_t n = strlen(word);
  if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
    return fail(p, "expected a value (true, false, null, a number, string, array or object)");
  p->pos += n;
  v->type = t;
  return 0;
}

static int parse_value(struct parser *p, json_value *v) {
  memset(v, 0, sizeof *v);
  if (p->pos >= p->len) return fail(p, "unexpected end of input");
  unsigned char c = p->s[p->pos];
  int rc;
  switch (c) {
    case '{':
    case '[':
      if (++p->depth > PARSE_MAX_DEPTH) return fail(p, "nested too deeply");
      rc = c == '{' ? parse_object(p, v) : parse_array(p, v);
      p->depth--;
      return rc;
    case '"':
      v->type = JSON_STRING;
      return parse_string(p, &v->str, &v->len);
    case 't':
      return literal(p, "true", JSON_TRUE, v);
    case 'f':
      return literal(p, "false", JSON_FALSE, v);
    case 'n':
      return literal(p, "null", JSON_NULL, v);
    default:
      if (c == '-' || is_digit(c)) return parse_number(p, v);
      return fail(p, "expected a value (true, false, null, a number, string, array or object)");
  }
}

int json_parse(const char *text, size_t len, json_doc **out, char *err, size_t errlen) {
  *out = NULL;
  json_doc *d = calloc(1, sizeof *d);
  if (!d) {
    if (err && errlen) snprintf(err, errlen, "out of memory");
    return -2;
  }
  struct parser p = {(const unsigned char *)text, len, 0, d, err, errlen, 0, 0};
  skip_ws(&p);
  if (p.pos >= p.len) {
    fail(&p, "empty input");
    goto fail;
  }
  if (parse_value(&p, &d->root) < 0) goto fail;
  skip_ws(&p);
  if (p.pos != p.len) {
    fail(&p, "unexpected data after the JSON value");
    goto fail;
  }
  *out = d;
  return 0;
fail:
  json_doc_free(d);
  return p.oom ? -2 : -1;
}

const json_value *json_get(const json_value *obj, const char *key) {
  if (!obj || obj->type != JSON_OBJECT) return NULL;
  size_t kl = strlen(key);
  for (size_t i = 0; i < obj->len; i++)
    if (obj->members[i].key_len == kl && memcmp(obj->members[i].key, key, kl) == 0)
      return &obj->members[i].value;
  return NULL;
}

int json_int64(const json_value *v, int64_t *out) {
  if (v->type != JSON_NUMBER) return -1;
  const char *s = v->num;
  size_t n = v->num_len, i = 0;
  int neg = 0;
  if (i < n && s[i] == '-') {
    neg = 1;
    i++;
  }
  if (i >= n) return -1;
  uint64_t acc = 0;
  const uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (; i < n; i++) {
    if (!is_digit((unsigned char)s[i])) return -1;
    unsigned d = (unsigned)(s[i] - '0');
    if (acc > (lim - d) / 10) return -1;
    acc = acc * 10 + d;
  }
  if (neg)
    *out = acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc;
  else
    *out = (int64_t)acc;
  return 0;
}
