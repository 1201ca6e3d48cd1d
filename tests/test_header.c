/* test_header.c — what include/engram.h says about errors and its version holds: the
 * example texts it quotes for engram_strerror() and engram_errname() are the library's,
 * the version string is MAJOR.MINOR.PATCH, and engram_errmsg() is one buffer per thread,
 * shared by every handle and by engram_open(). Run from the repository root (it reads
 * include/engram.h). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engram.h"
#include "helpers/testutil.h"

#define STR_(x) #x
#define STR(x) STR_(x)

static char *read_header(void) {
  FILE *f = fopen("include/engram.h", "r");
  if (!f) fail_msg("include/engram.h: not found (run from the repository root)");
  static char buf[1 << 18];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return buf;
}

/* The comment just before the declaration of `fn` (from the line after the previous
 * declaration or blank line), copied into out. */
static void comment_before(const char *header, const char *decl, char *out, size_t cap) {
  const char *d = strstr(header, decl);
  if (!d) fail_msg("include/engram.h: no \"%s\"", decl);
  const char *start = d;
  while (start > header && !(start[-1] == '\n' && (start[-2] == ';' || start[-2] == '\n'))) start--;
  size_t n = (size_t)(d - start) < cap - 1 ? (size_t)(d - start) : cap - 1;
  memcpy(out, start, n);
  out[n] = '\0';
}

/* Calls check(text) on every "quoted" text of comment c; returns how many. */
static int each_quoted(const char *c, const char *(*lookup)(const char *), const char *what) {
  int n = 0;
  for (const char *q = strchr(c, '"'); q; q = strchr(q, '"')) {
    const char *end = strchr(q + 1, '"');
    if (!end) break;
    char text[256];
    snprintf(text, sizeof text, "%.*s", (int)(end - q - 1), q + 1);
    if (!lookup(text))
      fail_msg("engram.h quotes \"%s\" as an example of %s: no code has it", text, what);
    n++;
    q = end + 1;
  }
  return n;
}

static const char *find_text(const char *text) {
  for (int code = 0; code >= -64; code--)
    if (strcmp(engram_strerror(code), text) == 0) return text;
  return NULL;
}

static const char *find_name(const char *text) {
  for (int code = 0; code >= -64; code--)
    if (strcmp(engram_errname(code), text) == 0) return text;
  return NULL;
}

static void strerror_examples_are_the_library_texts(void **state) {
  char c[1024];
  comment_before(read_header(), "ENGRAM_API const char *engram_strerror(", c, sizeof c);
  assert_true(each_quoted(c, find_text, "engram_strerror()") >= 1);
}

static void errname_examples_are_the_library_names(void **state) {
  char c[1024];
  comment_before(read_header(), "ENGRAM_API const char *engram_errname(", c, sizeof c);
  assert_true(each_quoted(c, find_name, "engram_errname()") >= 1);
}

static void version_string_is_major_minor_patch(void **state) {
  assert_string_equal(
      ENGRAM_VERSION_STRING,
      STR(ENGRAM_VERSION_MAJOR) "." STR(ENGRAM_VERSION_MINOR) "." STR(ENGRAM_VERSION_PATCH));
}

static void fail_append(engram *log) {
  char big[ENGRAM_MAX_KEY + 2];
  memset(big, 'k', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  engram_event ev = {.type = "memory.saved", .key = big};
  uint64_t off;
  assert_int_equal(engram_append(log, "memory", &ev, &off, NULL), ENGRAM_ETOOBIG);
}

static void *other_thread(void *arg) {
  /* A thread that made no failing call sees "", whatever other threads did. */
  return (void *)(intptr_t)(strcmp(engram_errmsg((const engram *)arg), "") == 0);
}

static void errmsg_is_one_buffer_per_thread_shared_by_handles(void **state) {
  char *d1 = tu_tmpdir("header-a"), *d2 = tu_tmpdir("header-b");
  engram *a = tu_open(d1, NULL), *b = tu_open(d2, NULL);
  tu_topic(a, "memory", NULL);
  fail_append(a);
  const char *msg = engram_errmsg(a);
  assert_non_null(strstr(msg, "over limit"));
  /* The same message, read through the other handle or NULL. */
  assert_ptr_equal(engram_errmsg(b), msg);
  assert_ptr_equal(engram_errmsg(NULL), msg);
  pthread_t t;
  void *ok;
  assert_int_equal(pthread_create(&t, NULL, other_thread, a), 0);
  assert_int_equal(pthread_join(t, &ok), 0);
  assert_true((intptr_t)ok);
  /* A failing open overwrites it: the message names the last failure of the thread. */
  engram *none;
  char *missing = tu_join(d1, "no/such/parent");
  assert_int_equal(engram_open(missing, NULL, &none), ENGRAM_ENOTFOUND);
  assert_non_null(strstr(engram_errmsg(a), "no/such/parent"));
  free(missing);
  engram_close(a);
  engram_close(b);
  tu_tmpdir_done(d1);
  tu_tmpdir_done(d2);
}

int main(void) {
  tu_test_filter();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(strerror_examples_are_the_library_texts),
      cmocka_unit_test(errname_examples_are_the_library_names),
      cmocka_unit_test(version_string_is_major_minor_patch),
      cmocka_unit_test(errmsg_is_one_buffer_per_thread_shared_by_handles),
  };
  return cmocka_run_group_tests_name("header", tests, NULL, NULL);
}
