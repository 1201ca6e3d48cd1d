/* cmd_consume.c — `engram consume`: lease events for a group member, print them and
 * settle each (ack, nack, reject or leave leased) once it was written out. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

#define MAX_CONSUME ENGRAM_MAX_FETCH /* events one `consume` may fetch */

static const char consume_help[] =
    "usage: engram consume TOPIC GROUP --consumer NAME [--count N] [--wait D] [--json]\n"
    "                      [--result STR | --nack [--delay D] [--error STR] |\n"
    "                       --reject REASON | --no-ack]\n"
    "\n"
    "Leases up to N events of GROUP to consumer NAME (retries and expired leases first,\n"
    "then new events), and prints and acknowledges them one at a time: an event is\n"
    "acked only once it was written out (on a pipe: read by the reader). When output\n"
    "fails (a closed pipe, a full disk) the rest are not acked: they stay leased and\n"
    "come back after the ack wait, and the command exits 1. Prints nothing and exits 0\n"
    "when there is nothing to deliver.\n"
    "\n"
    "options:\n"
    "  --consumer NAME  this member's name (required)\n"
    "  --count N        fetch at most N events (default 1, at most 10000)\n"
    "  --wait D         when nothing is ready, wait up to D for events (default: no wait,\n"
    "                   at most 1h); Ctrl-C while waiting exits 130, leasing nothing\n"
    "  --json           one JSON object per event: the shape of `engram read --json`\n"
    "                   plus \"group\" and \"attempt\"\n"
    "  --result STR     keep STR as each ack's result (see `engram status`)\n"
    "  --nack           instead of acking, ask for redelivery: after --delay D, else\n"
    "                   after the group's backoff step; --error STR is kept as last error\n"
    "  --reject REASON  instead of acking, send the events to the dead-letter queue\n"
    "  --no-ack         leave the events leased; they come back after the ack wait\n"
    "  -h, --help       this help\n"
    "The text form prints offset, time, type, key, attempt=N and the payload's start.\n";

/* How `consume` finishes each event it printed. */
enum { SETTLE_NONE, SETTLE_ACK, SETTLE_NACK, SETTLE_REJECT };

struct settle {
  struct cli *c;
  const char *topic, *group;
  int op;             /* SETTLE_* */
  int64_t delay_ms;   /* nack: < 0 = the group's backoff */
  const char *text;   /* nack error or reject reason */
  const char *result; /* ack result, NULL = none */
  size_t next;        /* the first event of the batch not yet settled */
  size_t failed;      /* settlements refused so far */
  uint64_t first_offset;
  int first_rc; /* code of the first refusal */
};

/* Events written to a regular file are acked in steps of this many, one commit each. */
#define ACK_STEP 256

static const char *settle_verb(int op) {
  return op == SETTLE_NACK ? "nacked" : op == SETTLE_REJECT ? "rejected" : "acked";
}

static void refused(struct settle *s, uint64_t offset, int rc) {
  if (rc != 0 && !s->failed++) {
    s->first_offset = offset;
    s->first_rc = rc;
  }
}

/* Settles the events of b from s->next up to `upto` (excluded): acks in one commit,
 * nacks and rejects one by one. */
static void settle_upto(struct settle *s, const engram_batch *b, size_t upto) {
  if (s->op == SETTLE_ACK && upto > s->next) {
    engram_ack_item items[ACK_STEP] = {{0}};
    int codes[ACK_STEP] = {0};
    size_t n = upto - s->next;
    for (size_t i = 0; i < n; i++) {
      const engram_event *ev = &b->events[s->next + i];
      items[i] =
          (engram_ack_item){ev->offset, ev->attempt, s->result, s->result ? strlen(s->result) : 0};
      codes[i] = 0;
    }
    int rc = engram_ack_many(s->c->log, s->topic, s->group, items, n, codes);
    int any = 0;
    for (size_t i = 0; i < n; i++) {
      any |= codes[i] != 0;
      refused(s, items[i].offset, codes[i]);
    }
    if (rc != 0 && !any) /* the call failed as a whole */
      for (size_t i = 0; i < n; i++) refused(s, items[i].offset, rc);
  }
  for (size_t i = s->next; i < upto && s->op != SETTLE_ACK; i++) {
    const engram_event *ev = &b->events[i];
    if (s->op == SETTLE_NACK)
      refused(s, ev->offset,
              engram_nack(s->c->log, s->topic, s->group, ev->offset, ev->attempt, s->delay_ms,
                          s->text));
    else if (s->op == SETTLE_REJECT)
      refused(s, ev->offset,
              engram_reject(s->c->log, s->topic, s->group, ev->offset, ev->attempt, s->text));
  }
  s->next = upto;
}

/* Whether the reader has taken what was written to stdout. On a pipe, waits until the
 * reader has read it all (1) or closed its end (0), so that `consume | head -1` settles
 * only the event head read, not those the pipe's buffer absorbed. Elsewhere (a file, a
 * terminal) what is written is taken. */
static int output_taken(int fd, int is_pipe) {
  if (!is_pipe) return 1;
  for (int closed = 0;;) {
    int unread = 0;
    if (ioctl(fd, FIONREAD, &unread) != 0 || unread == 0) return 1;
    if (closed) return 0; /* the reader left our bytes unread */
    struct pollfd p = {.fd = fd, .events = 0};
    if (poll(&p, 1, 2) > 0 && (p.revents & (POLLERR | POLLHUP))) closed = 1;
  }
}

int cmd_consume(struct cli *c, int argc, char **argv) {
  const char *consumer = NULL, *error = NULL, *reason = NULL, *result = NULL;
  uint64_t count = 1, wait_ms = 0, delay_ms = 0;
  int json = 0, nack = 0, noack = 0;
  const struct cli_opt opts[] = {
      CLI_OPT_TEXT("--consumer", &consumer, .what = "needs a non-empty name"),
      CLI_OPT_U64("--count", &count, .min = 1, .max = MAX_CONSUME),
      CLI_OPT_DURATION("--wait", &wait_ms, .max = ENGRAM_MAX_FETCH_WAIT_MS),
      CLI_OPT_FLAG("--json", &json),
      CLI_OPT_FLAG("--nack", &nack),
      CLI_OPT_DURATION("--delay", &delay_ms, .max = ENGRAM_MAX_DELAY_MS),
      CLI_OPT_STR("--error", &error),
      CLI_OPT_TEXT("--reject", &reason, .what = "needs a non-empty reason"),
      CLI_OPT_FLAG("--no-ack", &noack),
      CLI_OPT_STR("--result", &result),
      CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "consume", argc, argv);
  int r = cli_args_parse(&a, opts, consume_help, 2, 2, "TOPIC GROUP");
  if (r != CLI_GO) return r;
  const int have_delay = cli_args_given(&a, "--delay") != 0;
  if (!consumer) return cli_usage(a.cmd, "missing --consumer NAME");
  if (nack + noack + (reason != NULL) > 1)
    return cli_usage(a.cmd, "--nack, --reject and --no-ack exclude each other");
  if ((have_delay || error) && !nack)
    return cli_usage(a.cmd, "%s applies only with --nack", have_delay ? "--delay" : "--error");
  if (result && (nack || noack || reason))
    return cli_usage(a.cmd, "--result applies only when the events are acked");
  const char *topic = a.pos[0], *group = a.pos[1];
  int status = cli_open(c, CLI_OPEN_EXISTING);
  if (status) return status;

  /* A reader that goes away (`| head -1`) must make writes fail with EPIPE, not kill the
   * command before it can tell which events were delivered. */
  signal(SIGPIPE, SIG_IGN);
  engram_batch *b = NULL;
  int rc = engram_fetch(c->log, topic, group, consumer, (size_t)count, wait_ms, &b);
  if (rc != 0) return cli_fail_arg(c, rc, "consume %s %s", topic, group);
  if (!b) return 0; /* nothing delivered */
  const int op = noack ? SETTLE_NONE : nack ? SETTLE_NACK : reason ? SETTLE_REJECT : SETTLE_ACK;
  struct stat st;
  const int have_st = fstat(STDOUT_FILENO, &st) == 0;
  const int to_pipe = have_st && S_ISFIFO(st.st_mode);
  /* A regular file holds what was written: acks can share commits. Anything else (a
   * pipe, a terminal, a socket) settles each event as soon as it is out. */
  const size_t step = have_st && S_ISREG(st.st_mode) ? ACK_STEP : 1;
  struct settle s = {.c = c,
                     .topic = topic,
                     .group = group,
                     .op = op,
                     .delay_ms = have_delay ? (int64_t)delay_ms : -1,
                     .text = nack ? error : reason,
                     .result = result};
  json_writer w;
  json_w_init(&w);
  /* One event at a time: written, flushed, taken by the reader, and only then settled
   * (in steps of `step`). What is not written stays leased and comes back after the ack
   * wait. */
  size_t done = 0;
  int out_errno = 0;
  for (; done < b->count; done++) {
    const engram_event *ev = &b->events[done];
    if (json) {
      cli_json_event(&w, ev, topic, group);
      if ((status = cli_json_emit(&w))) break;
    } else {
      cli_text_event(stdout, ev, 1);
    }
    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout)) {
      out_errno = errno ? errno : EIO;
      break;
    }
    if (!output_taken(STDOUT_FILENO, to_pipe)) {
      out_errno = EPIPE;
      break;
    }
    if (done + 1 - s.next >= step) settle_upto(&s, b, done + 1);
  }
  settle_upto(&s, b, done); /* what was written before the end or the failure */
  json_w_free(&w);
  if (out_errno) {
    /* Nothing more can be written: forget what stdio still holds so that the exit does
     * not report the same failure again. */
    __fpurge(stdout);
    clearerr(stdout);
    size_t left = b->count - done;
    if (op == SETTLE_NONE)
      status = cli_error("consume %s %s: output failed after %zu of %zu events (%s)", topic, group,
                         done, b->count, strerror(out_errno));
    else
      status = cli_error(
          "consume %s %s: output failed after %zu of %zu events (%s); the other %zu "
          "%s not %s and will be delivered again after the ack wait",
          topic, group, done, b->count, strerror(out_errno), left, left == 1 ? "was" : "were",
          settle_verb(op));
  }
  if (s.failed && !status)
    status = cli_error("consume %s %s: %zu of %zu %s failed; offset %" PRIu64 ": %s", topic, group,
                       s.failed, done,
                       op == SETTLE_NACK     ? "nacks"
                       : op == SETTLE_REJECT ? "rejects"
                                             : "acks",
                       s.first_offset, cli_errtext(c, s.first_rc));
  engram_batch_free(b);
  return status;
}
