/* json.h — the JSON the engram command reads and writes: a writer that always emits
 * valid UTF-8, a small strict parser, UTF-8 validation and base64. */
#ifndef ENGRAM_CLI_JSON_H
#define ENGRAM_CLI_JSON_H

#include <stddef.h>
#include <stdint.h>

/* 1 when buf[0..len) is well-formed UTF-8 (no overlongs, surrogates or code points past
 * U+10FFFF), else 0. */
int json_utf8_valid(const void *buf, size_t len);

/* Standard base64 (RFC 4648 alphabet). The encoder pads; the decoder accepts input with
 * or without padding, writes at most json_b64_decoded_max(len) bytes and returns 0, or
 * -1 on a character outside the alphabet, misplaced padding or an impossible length. */
size_t json_b64_encoded_len(size_t len);
size_t json_b64_decoded_max(size_t len);
int json_b64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len);

/* ---------------------------------------------------------------------------------
 * Writer: builds compact JSON in a growing buffer; commas are placed automatically.
 * ------------------------------------------------------------------------------ */
#define JSON_MAX_DEPTH 128

typedef struct json_writer {
  char *buf;
  size_t len, cap;
  int failed; /* out of memory or nested too deeply: the buffer is incomplete */
  int depth;  /* open objects and arrays */
  unsigned char started[JSON_MAX_DEPTH]; /* per level: a value was already written */
  int after_key;                         /* the next value follows a key (no comma) */
} json_writer;

void json_w_init(json_writer *w);
void json_w_free(json_writer *w);
void json_w_reset(json_writer *w); /* empties the buffer, keeps its memory */

void json_obj(json_writer *w);
void json_obj_end(json_writer *w);
void json_arr(json_writer *w);
void json_arr_end(json_writer *w);
void json_key(json_writer *w, const char *key);
void json_str(json_writer *w, const char *s); /* NULL writes null */
/* Invalid UTF-8 in s is written as U+FFFD so the output is always valid JSON. */
void json_strn(json_writer *w, const void *s, size_t n);
void json_b64(json_writer *w, const void *data, size_t n); /* a base64 string */
void json_u64(json_writer *w, uint64_t v);
void json_i64(json_writer *w, int64_t v);
void json_rate(json_writer *w, double v); /* a finite, non-negative rate: 3 decimals */
void json_bool(json_writer *w, int v);
void json_null(json_writer *w);
/* Key + value shortcuts. */
void json_kstr(json_writer *w, const char *key, const char *s);
void json_ku64(json_writer *w, const char *key, uint64_t v);
void json_ki64(json_writer *w, const char *key, int64_t v);
void json_kbool(json_writer *w, const char *key, int v);

/* ---------------------------------------------------------------------------------
 * Parser: RFC 8259 JSON (objects, arrays, strings with escapes including surrogate
 * pairs, numbers, true, false, null) into a tree owned by one json_doc.
 * ------------------------------------------------------------------------------ */
typedef enum json_type {
  JSON_NULL,
  JSON_FALSE,
  JSON_TRUE,
  JSON_NUMBER,
  JSON_STRING,
  JSON_ARRAY,
  JSON_OBJECT
} json_type;

typedef struct json_value json_value;
typedef struct json_member json_member;

struct json_value {
  json_type type;
  const char *num; /* JSON_NUMBER: its text in the source, num_len bytes */
  size_t num_len;
  char *str;            /* JSON_STRING: decoded UTF-8, NUL-terminated (may hold NULs) */
  size_t len;           /* JSON_STRING: bytes in str; JSON_ARRAY / JSON_OBJECT: entries */
  json_value *items;    /* JSON_ARRAY */
  json_member *members; /* JSON_OBJECT, in source order */
};

struct json_member {
  char *key; /* decoded, NUL-terminated */
  size_t key_len;
  json_value value;
};

typedef struct json_doc json_doc;

/* Parses text[0..len) as one JSON value (surrounding whitespace allowed). On success
 * returns 0 and *out owns the tree (free with json_doc_free). On error returns -1 and
 * writes "column N: what was wrong" into err; returns -2 when out of memory. The tree
 * points into `text` for numbers, so text must outlive it. */
int json_parse(const char *text, size_t len, json_doc **out, char *err, size_t errlen);
const json_value *json_doc_root(const json_doc *doc);
void json_doc_free(json_doc *doc);

/* The member named key (first match), or NULL. */
const json_value *json_get(const json_value *obj, const char *key);
/* An integer number without fraction or exponent that fits int64_t: 0, else -1. */
int json_int64(const json_value *v, int64_t *out);
/* Writes v compactly (strings re-escaped, numbers as written). */
void json_write_value(json_writer *w, const json_value *v);

#endif
