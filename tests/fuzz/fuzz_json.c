/* fuzz_json.c — libFuzzer target for the engram command's JSON parser and writer
 * (cli/json.c, what `engram append --batch` reads from stdin).
 *
 * Input: any bytes, parsed as one JSON value. What parses is written back with
 * json_write_value, and the output must be valid UTF-8, parse again to the same tree
 * (types, numbers as written, strings and keys byte for byte, members in order) and
 * write back to the very same bytes. Links cli/json.c itself, never a copy of it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/json.h"

static void bug(const char *what) {
  fprintf(stderr, "fuzz_json: %s\n", what);
  abort();
}

static void same(const json_value *a, const json_value *b) {
  if (a->type != b->type) bug("re-parsed value has another type");
  switch (a->type) {
    case JSON_NUMBER:
      if (a->num_len != b->num_len || memcmp(a->num, b->num, a->num_len))
        bug("re-parsed number differs");
      break;
    case JSON_STRING:
      if (a->len != b->len || memcmp(a->str, b->str, a->len)) bug("re-parsed string differs");
      if (a->str[a->len] != '\0') bug("string not NUL-terminated");
      break;
    case JSON_ARRAY:
      if (a->len != b->len) bug("re-parsed array has another length");
      for (size_t i = 0; i < a->len; i++) same(&a->items[i], &b->items[i]);
      break;
    case JSON_OBJECT:
      if (a->len != b->len) bug("re-parsed object has another member count");
      for (size_t i = 0; i < a->len; i++) {
        const json_member *ma = &a->members[i], *mb = &b->members[i];
        if (ma->key_len != mb->key_len || memcmp(ma->key, mb->key, ma->key_len))
          bug("re-parsed key differs");
        same(&ma->value, &mb->value);
      }
      break;
    default:
      break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* An exact-size heap copy, so a read one byte past the end is caught. */
  char *text = malloc(size ? size : 1);
  if (!text) return 0;
  if (size) memcpy(text, data, size);
  char err[128];
  json_doc *doc = NULL;
  int rc = json_parse(text, size, &doc, err, sizeof err);
  if (rc == -1 && strncmp(err, "column ", 7) != 0) bug("a parse error without its column");
  if (rc != 0) {
    if (doc) bug("a failed parse returned a document");
    free(text);
    return 0;
  }
  json_writer w;
  json_w_init(&w);
  json_write_value(&w, json_doc_root(doc));
  if (w.failed) bug("writing a parsed value failed");
  if (w.depth != 0) bug("writer left containers open");
  if (!json_utf8_valid(w.buf, w.len)) bug("writer output is not UTF-8");
  json_doc *again = NULL;
  if (json_parse(w.buf, w.len, &again, err, sizeof err) != 0) {
    fprintf(stderr, "fuzz_json: %s in %.*s\n", err, (int)(w.len < 200 ? w.len : 200), w.buf);
    bug("writer output does not parse");
  }
  same(json_doc_root(doc), json_doc_root(again));
  json_writer w2;
  json_w_init(&w2);
  json_write_value(&w2, json_doc_root(again));
  if (w2.failed || w2.len != w.len || memcmp(w2.buf, w.buf, w.len))
    bug("writing the re-parsed value gives other bytes");
  json_w_free(&w2);
  json_doc_free(again);
  json_w_free(&w);
  json_doc_free(doc);
  free(text);
  return 0;
}
