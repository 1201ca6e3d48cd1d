/* test_net_daemon.h — starting and stopping `engram serve` in a child process, for the
 * tests of net/ (test_net*.c include it). */
#ifndef ENGRAM_TEST_NET_DAEMON_H
#define ENGRAM_TEST_NET_DAEMON_H

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engram.h"
#include "helpers/testutil.h"

typedef struct td {
  char *dir;         /* the test's temp dir */
  char *logdir;      /* dir/log: what the daemon serves */
  char ep[512];      /* ipc://dir/req.ipc unless changed before td_start */
  char logfile[512]; /* the daemon's stderr */
  engram_serve_options o;
  pid_t pid;
} td;

static int td_child(void *arg) {
  td *d = arg;
  /* A daemon must not outlive a test that crashed, nor write outside the test's dir. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (chdir(d->dir) != 0) return 100;
  int fd = open(d->logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd >= 0) {
    dup2(fd, 2);
    close(fd);
  }
  if (!d->o.listen) d->o.listen = d->ep;
  int rc = engram_serve(d->logdir, &d->o);
  if (rc) fprintf(stderr, "engram_serve: %s: %s\n", engram_errname(rc), engram_errmsg(NULL));
  return rc < 0 ? -rc : 0;
}

/* Makes the temp dir and the names; the daemon is not started. */
static void td_init(td *d, const char *tag) {
  memset(d, 0, sizeof *d);
  d->dir = tu_tmpdir(tag);
  d->logdir = tu_join(d->dir, "log");
  snprintf(d->ep, sizeof d->ep, "ipc://%s/req.ipc", d->dir);
  snprintf(d->logfile, sizeof d->logfile, "%s/daemon.log", d->dir);
}

/* Connects, retrying with short probes until the daemon answers or timeout_ms passes. */
static engram *td_connect_within(const char *ep, int timeout_ms,
                                 const engram_connect_options *opts) {
  int64_t end = tu_mono_ms() + timeout_ms;
  engram_connect_options o = opts ? *opts : (engram_connect_options){0};
  if (!o.timeout_ms) o.timeout_ms = 5000;
  for (;;) {
    engram_connect_options probe = o;
    probe.timeout_ms = 300;
    engram *log = NULL;
    int rc = engram_connect(ep, &probe, &log);
    if (rc == 0) {
      engram_close(log);
      rc = engram_connect(ep, &o, &log);
      if (rc == 0) return log;
    }
    if (tu_mono_ms() >= end) {
      fprintf(stderr, "connect %s: %s: %s\n", ep, engram_errname(rc), engram_errmsg(NULL));
      return NULL;
    }
    tu_sleep_ms(20);
  }
}

__attribute__((unused)) static void td_dump_log(td *d) {
  FILE *f = fopen(d->logfile, "r");
  if (!f) return;
  char line[4096];
  while (fgets(line, sizeof line, f)) fprintf(stderr, "  daemon| %s", line);
  fclose(f);
}

static void td_start(td *d) {
  d->pid = tu_spawn(td_child, d);
  engram *log = td_connect_within(d->ep, 10000, NULL);
  if (!log) {
    td_dump_log(d);
    fprintf(stderr, "the daemon did not come up\n");
    abort();
  }
  engram_close(log);
}

/* SIGTERM, then waits; returns the exit code (-1 when it did not stop in time). */
__attribute__((unused)) static int td_stop(td *d) {
  if (d->pid <= 0) return 0;
  kill(d->pid, SIGTERM);
  int rc = tu_wait(d->pid, 10000);
  d->pid = 0;
  return rc;
}

static void td_kill(td *d) {
  if (d->pid <= 0) return;
  kill(d->pid, SIGKILL);
  tu_wait(d->pid, 10000);
  d->pid = 0;
}

static void td_done(td *d) {
  td_kill(d);
  free(d->logdir);
  tu_tmpdir_done(d->dir);
}

/* Whether the daemon's log holds `text`. */
__attribute__((unused)) static int td_log_has(td *d, const char *text) {
  FILE *f = fopen(d->logfile, "r");
  if (!f) return 0;
  char line[4096];
  int found = 0;
  while (!found && fgets(line, sizeof line, f)) found = strstr(line, text) != NULL;
  fclose(f);
  return found;
}

#endif
