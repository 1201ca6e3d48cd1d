/* test_deliver.c — ack-and-fetch with a wait: acks held a moment while nothing is due are
 * committed with the lease of an event that comes meanwhile, in one commit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "api/api.h"
#include "engram.h"
#include "helpers/testutil.h"
#include "log/log.h"

typedef tu_fx fx;

static int setup(void **state) {
  *state = tu_fx_new("deliver");
  return 0;
}

/* The handle's own wait hook, wrapped: the first wait of the call appends an event (as
 * another thread would while the consumer waits), then waits as before. */
static void (*orig_hook)(void *, struct log *, const char *, int64_t);
static void *orig_ctx;
static engram *hook_handle;
static int hook_appends;

static void appending_wait(void *ctx, struct log *log, const char *topic, int64_t deadline) {
  if (hook_appends == 0) {
    hook_appends++;
    engram_event ev = {.type = "memory.saved", .payload = "x", .payload_len = 1};
    assert_int_equal(engram_append(hook_handle, "memory", &ev, NULL, NULL), 0);
  }
  orig_hook(orig_ctx ? orig_ctx : ctx, log, topic, deadline);
}

static uint64_t commits(engram *log) {
  engram_commit_stats st;
  assert_int_equal(engram_commit_stats_get(log, &st), 0);
  return st.commits;
}

static void acks_held_while_nothing_is_due_commit_with_the_next_lease(void **state) {
  fx *f = *state;
  f->log = tu_open(f->logdir, NULL);
  tu_topic(f->log, "memory", NULL);
  engram_group_config cfg = {.start = ENGRAM_START_EARLIEST};
  assert_int_equal(engram_group_create(f->log, "memory", "g", &cfg), 0);
  engram_event ev = {.type = "memory.saved", .payload = "a", .payload_len = 1};
  uint64_t first;
  assert_int_equal(engram_append(f->log, "memory", &ev, &first, NULL), 0);
  engram_batch *b;
  assert_int_equal(engram_fetch(f->log, "memory", "g", "c", 10, 0, &b), 0);
  assert_int_equal(b->count, 1);
  engram_ack_item it = {b->events[0].offset, b->events[0].attempt, NULL, 0};
  engram_batch_free(b);

  struct log *log = api_log(f->log);
  assert_non_null(log->wait_hook);
  orig_hook = log->wait_hook;
  orig_ctx = log->wait_hook_ctx;
  hook_handle = f->log;
  hook_appends = 0;
  log->wait_hook = appending_wait;
  uint64_t before = commits(f->log);
  assert_int_equal(engram_ack_fetch(f->log, "memory", "g", "c", &it, 1, NULL, 10, 60000, &b), 0);
  uint64_t after = commits(f->log);
  log->wait_hook = orig_hook;
  assert_int_equal(hook_appends, 1);
  assert_int_equal(b->count, 1);
  assert_int_equal(b->events[0].offset, first + 1);
  engram_batch_free(b);
  /* The append's commit, then the acks with the lease: two, not three. */
  assert_int_equal(after - before, 2);
  engram_status st;
  assert_int_equal(engram_status_get(f->log, "memory", "g", first, &st), 0);
  assert_int_equal(st.state, ENGRAM_STATE_DONE);
}

int main(void) {
  tu_test_filter();
#define T(name) cmocka_unit_test_setup_teardown(name, setup, tu_fx_teardown)
  const struct CMUnitTest tests[] = {
      T(acks_held_while_nothing_is_due_commit_with_the_next_lease),
  };
  return cmocka_run_group_tests_name("deliver", tests, NULL, NULL);
}
