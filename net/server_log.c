/* server_log.c — the daemon's log lines: text or JSON, client text escaped, client errors
 * rate-limited. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "net/server.h"

/* Log lines carry text from clients (names, patterns, messages quoting them): written
 * raw, an ESC or a C1 CSI in it would drive the terminal of whoever tails the log. So
 * every control character is escaped: C0 and DEL as \xHH (\n \t \r by name) in text and
 * \u00HH in JSON, C1 controls and Unicode's invisible line and direction controls as
 * \uHHHH, bytes that are not UTF-8 as \xHH (in JSON a literal "\\xHH"), and '\' (and in
 * JSON '"') with a backslash. Printable UTF-8 is kept. out is cut between characters. */
static void log_escape(char *out, size_t cap, const char *s, int json) {
  size_t o = 0, left = strlen(s);
  while (*s) {
    const unsigned char *p = (const unsigned char *)s;
    char e[16];
    size_t el;
    uint32_t u;
    size_t k = text_utf8_char(p, left, &u);
    if (k == 0) {
      el = (size_t)snprintf(e, sizeof e, json ? "\\\\x%02x" : "\\x%02x", p[0]);
      k = 1;
    } else if (u == '\\' || (json && u == '"')) {
      e[0] = '\\', e[1] = (char)u, el = 2;
    } else if (u == '\n' || u == '\t' || u == '\r') {
      e[0] = '\\', e[1] = u == '\n' ? 'n' : u == '\t' ? 't' : 'r', el = 2;
    } else if (u < 0x20 || u == 0x7F) {
      el = (size_t)snprintf(e, sizeof e, json ? "\\u%04x" : "\\x%02x", (unsigned)u);
    } else if ((u >= 0x80 && u <= 0x9F) || u == 0x061C || u == 0x200E || u == 0x200F ||
               (u >= 0x2028 && u <= 0x202E) || (u >= 0x2066 && u <= 0x2069)) {
      el = (size_t)snprintf(e, sizeof e, "\\u%04x", (unsigned)u);
    } else {
      memcpy(e, s, k);
      el = k;
    }
    if (o + el >= cap) break;
    memcpy(out + o, e, el);
    o += el;
    s += k;
    left -= k;
  }
  out[o] = '\0';
}

void server_log(struct net_server *s, const char *level, const char *event, const char *fmt, ...) {
  char msg[1024], ts[64], line[2300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  struct tm tm;
  gmtime_r(&now.tv_sec, &tm);
  size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000);
  char esc[2100];
  log_escape(esc, sizeof esc, msg, s->log_json);
  char prio[8] = "";
  if (s->journal) snprintf(prio, sizeof prio, "<%d>", server_log_priority(level));
  if (s->log_json)
    snprintf(line, sizeof line,
             "%s{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"%s\",\"msg\":\"%s\"}\n", prio, ts,
             level, event, esc);
  else
    snprintf(line, sizeof line, "%s%s %-5s %s: %s\n", prio, ts, level, event, esc);
  /* One write of the whole line: lines of several threads never interleave, and a SIGHUP
   * that swaps the file under log_fd (dup3) falls between two lines. */
  size_t len = strlen(line), done = 0;
  while (done < len) {
    ssize_t w = write(s->log_fd, line + done, len - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break; /* a full disk loses log lines, never requests */
    done += (size_t)w;
  }
}

int server_log_open(struct net_server *s, int reload) {
  if (!s->o.log_file) return 0;
  int fd = open(s->o.log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) {
    int e = errno;
    if (!reload)
      return log_error(NULL, e == ENOENT || e == EACCES ? ENGRAM_EINVAL : err_from_errno(e),
                       "serve: log file %s: %s", s->o.log_file, strerror(e));
    server_log(s, "error", "sighup", "cannot reopen log file %s: %s (still writing the old one)",
               s->o.log_file, strerror(e));
    return err_from_errno(e);
  }
  if (!reload || s->log_fd == STDERR_FILENO) {
    s->log_fd = fd;
    return 0;
  }
  /* dup3 swaps the file atomically under the number every thread writes to. */
  int rc = dup3(fd, s->log_fd, O_CLOEXEC) < 0 ? err_from_errno(errno) : 0;
  close(fd);
  if (!rc) server_log(s, "info", "sighup", "log file %s reopened", s->o.log_file);
  return rc;
}

/* Client errors can come by the thousand from one bad client: a few lines per second
 * tell the operator without flooding the log. */
int server_client_log_ok(struct net_server *s, int *dropped) {
  pthread_mutex_lock(&s->log_mu);
  int64_t sec = clock_monotonic_ns() / 1000000000;
  *dropped = 0;
  if (sec != s->log_window) {
    *dropped = s->log_dropped;
    s->log_window = sec;
    s->log_count = 0;
    s->log_dropped = 0;
  }
  int ok = s->log_count++ < LOG_BURST;
  if (!ok) s->log_dropped++;
  pthread_mutex_unlock(&s->log_mu);
  return ok;
}

void server_trouble(struct net_server *s, int code, const char *op, const char *why) {
  if (code != ENGRAM_ENOSPC && code != ENGRAM_EIO && code != ENGRAM_ECORRUPT &&
      code != ENGRAM_ENOMEM && code != ENGRAM_EINTERNAL)
    return;
  pthread_mutex_lock(&s->log_mu);
  int64_t sec = clock_monotonic_ns() / 1000000000;
  int ok = sec != s->trouble_window, dropped = s->trouble_dropped;
  if (ok) {
    s->trouble_window = sec;
    s->trouble_dropped = 0;
  } else {
    s->trouble_dropped++;
  }
  pthread_mutex_unlock(&s->log_mu);
  if (!ok) return;
  if (dropped)
    server_log(s, "error", "storage",
               "op %s: %s: %s (and %d more such failures since the last line)", op,
               engram_errname(code), why, dropped);
  else
    server_log(s, "error", "storage", "op %s: %s: %s", op, engram_errname(code), why);
}

void server_client_error(struct net_server *s, zmq_msg_t *body, int code, const char *op,
                         const char *why) {
  int dropped;
  if (!server_client_log_ok(s, &dropped)) return;
  const char *peer = body ? zmq_msg_gets(body, "Peer-Address") : NULL;
  if (dropped) server_log(s, "warn", "client_error", "%d more client errors not logged", dropped);
  server_log(s, "warn", "client_error", "peer %s op %s: %s: %s", peer ? peer : "-", op,
             engram_errname(code), why);
}
