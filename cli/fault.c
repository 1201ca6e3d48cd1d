/* fault.c — a fault while the command reads a damaged log becomes one line and status 1. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* LMDB trusts the pages it reads: a damaged data.mdb can make it follow a pointer out of
 * the map. The library cannot undo that in-process, so the command ends at once with
 * one line instead of dying of the signal. A fault from a bug in engram ends the same
 * way, so the line says "probably". */
static char where[4200];
static size_t where_len;
static char alt_stack[64 * 1024];

static void put(const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = write(2, s, n);
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

static void on_fault(int sig) {
  static const char head[] = "engram: ";
  static const char mid[] = ": the log's data.mdb is probably damaged (";
  static const char tail[] =
      " while reading it); run `engram verify` and restore the log from a backup\n";
  const char *name = sig == SIGBUS ? "SIGBUS" : "SIGSEGV";
  put(head, sizeof head - 1);
  put(where, where_len);
  put(mid, sizeof mid - 1);
  put(name, strlen(name));
  put(tail, sizeof tail - 1);
  _exit(CLI_EXIT_FAIL);
}

void cli_fault_guard(const char *dir) {
  snprintf(where, sizeof where, "%s", dir);
  where_len = strlen(where);
  stack_t ss = {.ss_sp = alt_stack, .ss_size = sizeof alt_stack};
  sigaltstack(&ss, NULL);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_fault;
  sa.sa_flags = SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, NULL);
  sigaction(SIGBUS, &sa, NULL);
}
