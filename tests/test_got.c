/* test_got.c — redirected imports: libzmq's getpid() answered by self_pid() (no system
 * call) and still right after a fork; liblmdb's writes captured for the write-ahead file. */
#include <lmdb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zmq.h>

#include <cmocka.h>

#include "common/got.h"
#include "helpers/testutil.h"
#include "log/log_private.h"
#include "net/net.h"

struct find {
  const char *name;
  void **slot;
};

static void find_slot(const char *name, void **slot, void *ctx) {
  struct find *f = ctx;
  if (!strcmp(name, f->name)) f->slot = slot;
}

static pid_t kernel_pid(void) { return (pid_t)syscall(SYS_getpid); }

/* What libzmq calls when it checks for a fork. */
static pid_t zmq_getpid(void **slot) { return ((pid_t(*)(void)) * slot)(); }

static void libzmq_asks_self_pid_and_gets_the_right_answer_after_a_fork(void **state) {
  (void)state;
  struct find f = {"getpid", NULL};
  assert_int_equal(got_each((void *)zmq_ctx_new, "libzmq", find_slot, &f), 0);
  assert_non_null(f.slot); /* libzmq checks for forks on this machine */
  void *ctx = net_zmq_ctx_new();
  assert_non_null(ctx);
  assert_ptr_equal(*f.slot, (void *)self_pid);
  assert_int_equal(zmq_getpid(f.slot), kernel_pid());
  for (int depth = 0; depth < 2; depth++) { /* a child, then a child of that child */
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0) {
      int ok = zmq_getpid(f.slot) == kernel_pid() && self_pid() == kernel_pid();
      if (ok && depth == 0) {
        pid_t q = fork();
        if (q == 0) _exit(zmq_getpid(f.slot) == kernel_pid() ? 0 : 1);
        ok = q > 0 && tu_wait(q, 10000) == 0;
      }
      _exit(ok ? 0 : 1);
    }
    assert_int_equal(tu_wait(p, 10000), 0);
  }
  assert_int_equal(zmq_getpid(f.slot), kernel_pid());
  /* A socket still works: the context's own threads run with the hook in place. */
  void *a = zmq_socket(ctx, ZMQ_PAIR), *b = zmq_socket(ctx, ZMQ_PAIR);
  assert_int_equal(zmq_bind(a, "inproc://got"), 0);
  assert_int_equal(zmq_connect(b, "inproc://got"), 0);
  assert_int_equal(zmq_send(b, "ping", 4, 0), 4);
  char buf[8];
  assert_int_equal(zmq_recv(a, buf, sizeof buf, 0), 4);
  assert_memory_equal(buf, "ping", 4);
  zmq_close(a);
  zmq_close(b);
  zmq_ctx_term(ctx);
}

static void liblmdb_writes_go_through_the_capture_when_the_write_ahead_file_is_on(void **state) {
  (void)state;
  if (!log_wal_supported()) skip(); /* LMDB linked in, or the file turned off */
  struct find f = {"writev", NULL};
  assert_int_equal(got_each((void *)mdb_txn_commit, "liblmdb", find_slot, &f), 0);
  assert_non_null(f.slot);
  assert_ptr_not_equal(*f.slot, (void *)writev); /* pointed at the capture */
}

static void an_address_outside_the_named_library_is_refused(void **state) {
  (void)state;
  struct find f = {"getpid", NULL};
  assert_int_equal(got_each((void *)zmq_ctx_new, "liblmdb", find_slot, &f), -1);
  assert_null(f.slot);
}

int main(void) {
  tu_test_filter();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(libzmq_asks_self_pid_and_gets_the_right_answer_after_a_fork),
      cmocka_unit_test(liblmdb_writes_go_through_the_capture_when_the_write_ahead_file_is_on),
      cmocka_unit_test(an_address_outside_the_named_library_is_refused),
  };
  return cmocka_run_group_tests_name("got", tests, NULL, NULL);
}
