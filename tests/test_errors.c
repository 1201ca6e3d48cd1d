/* test_errors.c — the error table: every code has its own name and text; unknown codes are safe. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engram.h"

#define CODE(c) \
  { c, #c }
static const struct {
  int code;
  const char *name;
} codes[] = {
    CODE(ENGRAM_OK),         CODE(ENGRAM_EINVAL),   CODE(ENGRAM_ENOTFOUND), CODE(ENGRAM_EEXIST),
    CODE(ENGRAM_ENOMEM),     CODE(ENGRAM_EIO),      CODE(ENGRAM_ECORRUPT),  CODE(ENGRAM_ENOSPC),
    CODE(ENGRAM_ETOOBIG),    CODE(ENGRAM_EVERSION), CODE(ENGRAM_ELIMIT),    CODE(ENGRAM_ESTALE),
    CODE(ENGRAM_ENOTLEASED), CODE(ENGRAM_EALREADY), CODE(ENGRAM_EDEAD),     CODE(ENGRAM_EBUSY),
    CODE(ENGRAM_ETIMEDOUT),  CODE(ENGRAM_ECLOSED),  CODE(ENGRAM_EPROTO),    CODE(ENGRAM_ECONN),
    CODE(ENGRAM_EDENIED),    CODE(ENGRAM_ENOTSUP),  CODE(ENGRAM_EINTERNAL),
};
#define NCODES (sizeof codes / sizeof codes[0])

static void every_code_has_its_own_macro_name(void **state) {
  for (size_t i = 0; i < NCODES; i++) {
    const char *name = engram_errname(codes[i].code);
    assert_non_null(name);
    assert_string_equal(name, codes[i].name);
  }
}

static void every_code_has_a_nonempty_description(void **state) {
  for (size_t i = 0; i < NCODES; i++) {
    const char *text = engram_strerror(codes[i].code);
    assert_non_null(text);
    assert_true(strlen(text) > 0);
  }
}

static void no_two_codes_share_a_description(void **state) {
  for (size_t i = 0; i < NCODES; i++)
    for (size_t j = i + 1; j < NCODES; j++)
      assert_string_not_equal(engram_strerror(codes[i].code), engram_strerror(codes[j].code));
}

static void released_codes_keep_their_numbers(void **state) {
  /* The header promises released numbers never change; pin them. */
  for (size_t i = 0; i < NCODES; i++) assert_int_equal(codes[i].code, -(int)i);
}

static void unknown_codes_get_a_name_and_text_that_are_not_any_real_code(void **state) {
  const int unknown[] = {1, 7, -23, -100, -1000, INT_MIN, INT_MAX};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    const char *name = engram_errname(unknown[i]);
    const char *text = engram_strerror(unknown[i]);
    assert_non_null(name);
    assert_non_null(text);
    assert_true(strlen(name) > 0);
    assert_true(strlen(text) > 0);
    for (size_t j = 0; j < NCODES; j++) {
      assert_string_not_equal(name, codes[j].name);
      assert_string_not_equal(text, engram_strerror(codes[j].code));
    }
  }
}

static void success_reads_as_success(void **state) {
  assert_string_equal(engram_errname(0), "ENGRAM_OK");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_code_has_its_own_macro_name),
      cmocka_unit_test(every_code_has_a_nonempty_description),
      cmocka_unit_test(no_two_codes_share_a_description),
      cmocka_unit_test(released_codes_keep_their_numbers),
      cmocka_unit_test(unknown_codes_get_a_name_and_text_that_are_not_any_real_code),
      cmocka_unit_test(success_reads_as_success),
  };
  return cmocka_run_group_tests_name("errors", tests, NULL, NULL);
}
