/* lines.c — reading the small text files of `serve` (its config, key files) line by
 * line, with the true line number of every line for the messages. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define MAX_LINE 65536 /* longer lines are refused: these files hold short settings */

int cli_lines_open(struct cli_lines *r, const char *path, const char *what) {
  memset(r, 0, sizeof *r);
  r->path = path;
  r->f = fopen(path, "r");
  if (!r->f) return cli_error("%s %s: %s", what, path, strerror(errno));
  return 0;
}

static int blank(char ch) { return ch == ' ' || ch == '\t'; }

char *cli_lines_next(struct cli_lines *r) {
  if (!r->f || r->status) return NULL;
  for (;;) {
    errno = 0;
    ssize_t n = getline(&r->buf, &r->cap, r->f);
    if (n < 0) {
      if (ferror(r->f))
        r->status = cli_error("%s: reading failed after line %lu: %s", r->path, r->line,
                              strerror(errno ? errno : EIO));
      return NULL;
    }
    r->line++; /* every line counts, blank or not */
    if ((size_t)n > MAX_LINE) {
      r->status = cli_lines_error(r, "line over %d bytes", MAX_LINE);
      return NULL;
    }
    char *s = r->buf;
    size_t len = strlen(s); /* a NUL byte ends the line */
    while (len && (blank(s[len - 1]) || s[len - 1] == '\n' || s[len - 1] == '\r')) s[--len] = '\0';
    while (blank(*s)) s++;
    if (*s && *s != '#') return s;
  }
}

int cli_lines_error(const struct cli_lines *r, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return cli_error("%s:%lu: %s", r->path, r->line, msg);
}

int cli_lines_close(struct cli_lines *r) {
  if (r->f) fclose(r->f);
  free(r->buf);
  int status = r->status;
  memset(r, 0, sizeof *r);
  return status;
}
