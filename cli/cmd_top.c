/* cmd_top.c — `engram top`: a live terminal view of groups (lag, rates, oldest
 * unfinished) and workers, over --data or --connect. */
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"

static const char help[] =
    "usage: engram top [--interval DURATION] [--sort KEY] [--window W] [--once]\n"
    "\n"
    "A live view of every consumer group (lag, in flight, retrying, dead, appends, acks,\n"
    "nacks and dead letters per second, age of the oldest unfinished event) and of the\n"
    "workers (alive or lost, handled, failed, what each runs now), redrawn every\n"
    "interval, over --data or --connect. Rates are engram_rate_list's, kept in the log:\n"
    "the first frame has them. Keys: q quits; l, n, d, i, a sort by lag, name, dead, in\n"
    "flight, acks per second; w switches the rate window (1m, 5m, 15m). Into a pipe or\n"
    "a file, frames follow one another, a blank line between them.\n"
    "\n"
    "options:\n"
    "  --interval DURATION  redraw period (default 1s, at least 100ms)\n"
    "  --sort KEY           lag (default), name, dead, inflight or rate\n"
    "  --window W           rates over the last 1m (default), 5m or 15m\n"
    "  --once               print one frame and exit\n"
    "  -h, --help           this help\n";

enum { SORT_LAG, SORT_NAME, SORT_DEAD, SORT_INFLIGHT, SORT_RATE };
static const char *const sort_names[] = {"lag", "name", "dead", "inflight", "rate", NULL};
static const char *const window_names[] = {"1m", "5m", "15m", NULL}; /* ENGRAM_RATE_WINDOWS */

struct row {
  engram_group_info g;
  double append_rate, ack_rate, nack_rate, dead_rate; /* per second, < 0 = unknown */
};

static int sort_key;
static int cmp(const void *a, const void *b) {
  const struct row *x = a, *y = b;
  int c = 0;
  switch (sort_key) {
    case SORT_LAG:
      c = (x->g.lag < y->g.lag) - (x->g.lag > y->g.lag);
      break;
    case SORT_DEAD:
      c = (x->g.dead < y->g.dead) - (x->g.dead > y->g.dead);
      break;
    case SORT_INFLIGHT:
      c = (x->g.in_flight < y->g.in_flight) - (x->g.in_flight > y->g.in_flight);
      break;
    case SORT_RATE:
      c = (x->ack_rate < y->ack_rate) - (x->ack_rate > y->ack_rate);
      break;
  }
  if (c) return c;
  c = strcmp(x->g.topic, y->g.topic);
  return c ? c : strcmp(x->g.name, y->g.name);
}

static struct termios saved;
static int raw_on;
static volatile sig_atomic_t quit;
static void on_signal(int sig) { quit = sig; }
static void raw_off(void) {
  if (raw_on) tcsetattr(STDIN_FILENO, TCSANOW, &saved);
  raw_on = 0;
}

/* The row's rates over window w from the rate list (unknown when the group is not in it). */
static void rate(const engram_rate_info *r, size_t nr, struct row *row, int w) {
  row->append_rate = row->ack_rate = row->nack_rate = row->dead_rate = -1;
  for (size_t i = 0; i < nr; i++)
    if (!strcmp(r[i].topic, row->g.topic) && !strcmp(r[i].group, row->g.name)) {
      row->append_rate = r[i].appended[w];
      row->ack_rate = r[i].acked[w];
      row->nack_rate = r[i].nacked[w];
      row->dead_rate = r[i].dead_lettered[w];
    }
}

static void fmt_rate(double v, char *buf, size_t n) {
  if (v < 0)
    snprintf(buf, n, "-");
  else
    snprintf(buf, n, "%.1f", v);
}

static int window;

static int frame(struct cli *c, int clear) {
  engram_group_info *g = NULL;
  engram_worker_info *w = NULL;
  engram_rate_info *r = NULL;
  size_t ng = 0, nw = 0, nr = 0;
  int rc = engram_group_list(c->log, NULL, &g, &ng);
  if (rc) return cli_fail(c, rc, "top: list groups");
  if ((rc = engram_worker_list(c->log, 0, &w, &nw))) {
    engram_free(g);
    return cli_fail(c, rc, "top: list workers");
  }
  if ((rc = engram_rate_list(c->log, NULL, &r, &nr))) {
    engram_free(g);
    engram_free(w);
    return cli_fail(c, rc, "top: list rates");
  }
  int64_t now = cli_now_ns();
  struct row *rows = calloc(ng ? ng : 1, sizeof *rows);
  if (!rows) {
    engram_free(g);
    engram_free(w);
    engram_free(r);
    return cli_error("top: out of memory");
  }
  for (size_t i = 0; i < ng; i++) {
    rows[i].g = g[i];
    rate(r, nr, &rows[i], window);
  }
  engram_free(r);
  qsort(rows, ng, sizeof *rows, cmp);
  if (clear) fputs("\033[H\033[2J", stdout);
  size_t alive = 0;
  for (size_t i = 0; i < nw; i++) alive += !w[i].lost;
  char when[40];
  cli_fmt_time(now, when, sizeof when);
  printf(
      "engram top  %s  groups %zu  workers %zu alive, %zu lost  sort %s  rates over %s  (q "
      "quits)\n\n",
      when, ng, alive, nw - alive, sort_names[sort_key], window_names[window]);
  struct cli_table *tb = cli_table_new(12);
  cli_table_row(tb, "TOPIC", "GROUP", "LAG", "IN_FLIGHT", "RETRYING", "DEAD", "APPENDS/S", "ACKS/S",
                "NACKS/S", "DEAD/S", "OLDEST", "ACKED");
  for (size_t i = 0; i < ng; i++) {
    const engram_group_info *x = &rows[i].g;
    char lag[24], inf[24], rt[24], dead[24], ar[24], kr[24], nr_[24], dr[24], age[32], acked[24];
    snprintf(lag, sizeof lag, "%" PRIu64, x->lag);
    snprintf(inf, sizeof inf, "%" PRIu64, x->in_flight);
    snprintf(rt, sizeof rt, "%" PRIu64, x->retrying);
    snprintf(dead, sizeof dead, "%" PRIu64, x->dead);
    snprintf(acked, sizeof acked, "%" PRIu64, x->acked);
    fmt_rate(rows[i].append_rate, ar, sizeof ar);
    fmt_rate(rows[i].ack_rate, kr, sizeof kr);
    fmt_rate(rows[i].nack_rate, nr_, sizeof nr_);
    fmt_rate(rows[i].dead_rate, dr, sizeof dr);
    if (x->oldest_unfinished_ns > 0)
      cli_fmt_age(now - x->oldest_unfinished_ns, age, sizeof age);
    else
      snprintf(age, sizeof age, "-");
    cli_table_row(tb, x->topic, x->name, lag, inf, rt, dead, ar, kr, nr_, dr, age, acked);
  }
  int status = cli_table_print(tb, stdout);
  printf("\n");
  tb = cli_table_new(6);
  cli_table_row(tb, "WORKER", "STATE", "HANDLED", "FAILED", "LAST_SEEN", "RUNNING");
  for (size_t i = 0; i < nw && !status; i++) {
    char handled[24], failed[24], seen[32], running[256] = "";
    snprintf(handled, sizeof handled, "%" PRIu64, w[i].handled);
    snprintf(failed, sizeof failed, "%" PRIu64, w[i].failed);
    cli_fmt_age(now - w[i].last_seen_ns, seen, sizeof seen);
    size_t used = 0;
    for (size_t k = 0; k < w[i].n_running && used < sizeof running; k++)
      used += (size_t)snprintf(running + used, sizeof running - used, "%s%s@%" PRIu64, k ? "," : "",
                               w[i].running[k].topic, w[i].running[k].offset);
    cli_table_row(tb, w[i].name, w[i].lost ? "lost" : "alive", handled, failed, seen,
                  *running ? running : "-");
  }
  if (!status) status = cli_table_print(tb, stdout);
  fflush(stdout);
  free(rows);
  engram_free(g);
  engram_free(w);
  return status;
}

int cmd_top(struct cli *c, int argc, char **argv) {
  uint64_t interval = 1000;
  int once = 0, sort = SORT_LAG, win = 0;
  const struct cli_opt opts[] = {
      CLI_OPT_DURATION("--interval", &interval, .min = 100, .max = 3600000),
      CLI_OPT_ENUM("--sort", &sort, .names = sort_names),
      CLI_OPT_ENUM("--window", &win, .names = window_names), CLI_OPT_FLAG("--once", &once),
      CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "top", argc, argv);
  int status = cli_args_parse(&a, opts, help, 0, 0, "no arguments");
  if (status != CLI_GO) return status;
  sort_key = sort < 0 ? SORT_LAG : sort;
  window = win < 0 ? 0 : win;
  if ((status = cli_open(c, CLI_OPEN_READ))) return status;
  if (once) return frame(c, 0);
  if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0) {
    struct termios t = saved;
    t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    t.c_cc[VMIN] = 0;
    t.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0) raw_on = 1;
  }
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  /* Into a pipe or a file: frames one after another, a blank line between them, no
   * terminal control sequences. */
  int tty = isatty(STDOUT_FILENO), frames = 0;
  while (!quit) {
    if (!tty && frames++) putchar('\n');
    if ((status = frame(c, tty))) break;
    int64_t end = cli_now_ns() + (int64_t)interval * 1000000;
    int redraw = 0;
    while (!quit && !redraw) {
      int64_t left = (end - cli_now_ns()) / 1000000;
      if (left <= 0) break;
      struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
      if (poll(&p, 1, (int)left) <= 0 || !(p.revents & (POLLIN | POLLHUP))) continue;
      char ch;
      if (read(STDIN_FILENO, &ch, 1) != 1) {
        p.fd = -1; /* stdin closed: keep redrawing until a signal */
        usleep((useconds_t)(left > 0 ? left : 1) * 1000);
        break;
      }
      redraw = 1;
      switch (ch) {
        case 'q':
        case 'Q':
          quit = 1;
          break;
        case 'l':
          sort_key = SORT_LAG;
          break;
        case 'n':
          sort_key = SORT_NAME;
          break;
        case 'd':
          sort_key = SORT_DEAD;
          break;
        case 'i':
          sort_key = SORT_INFLIGHT;
          break;
        case 'a':
          sort_key = SORT_RATE;
          break;
        case 'w':
          window = (window + 1) % ENGRAM_RATE_WINDOWS;
          break;
        default:
          redraw = 0;
      }
    }
  }
  raw_off();
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  return status;
}
