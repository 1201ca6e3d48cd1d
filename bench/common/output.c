/* output.c — bench results as a table on stdout and as JSON, one result per line. */
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

void bench_result_init(bench_result *r, const char *workload, const char *system,
                       const char *durability) {
  memset(r, 0, sizeof *r);
  snprintf(r->workload, sizeof r->workload, "%s", workload);
  snprintf(r->system, sizeof r->system, "%s", system);
  snprintf(r->durability, sizeof r->durability, "%s", durability ? durability : "");
  r->met = -1;
}

void bench_result_rate(bench_result *r, uint64_t events, double seconds, uint64_t bytes) {
  r->events = events;
  r->seconds = seconds;
  r->events_per_s = seconds > 0 ? (double)events / seconds : 0;
  r->mb_per_s = seconds > 0 && bytes ? (double)bytes / 1e6 / seconds : 0;
}

void bench_result_ratio(bench_result *r, double limit, const char *limit_name, double target) {
  r->ratio = limit > 0 ? r->events_per_s / limit : 0;
  snprintf(r->ratio_to, sizeof r->ratio_to, "%s", limit_name);
  if (target > 0) {
    r->target = target;
    snprintf(r->target_text, sizeof r->target_text, ">= %.2f x %s", target, limit_name);
    r->met = limit > 0 ? r->ratio >= target : -1;
  }
}

void bench_result_target_rate(bench_result *r, double target_eps) {
  r->target = target_eps;
  snprintf(r->target_text, sizeof r->target_text, ">= %.0f events/s", target_eps);
  r->met = r->events_per_s >= target_eps;
}

void bench_result_note(bench_result *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->note, sizeof r->note, fmt, ap);
  va_end(ap);
}

void bench_json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p == '\n')
      fputs("\\n", f);
    else if (*p < 0x20)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

/* Numbers with enough digits to be useful and no exponent noise for typical rates. */
static void num(FILE *f, const char *k, double v) {
  fprintf(f, ", \"%s\": ", k);
  if (v == (double)(int64_t)v && v < 1e15 && v > -1e15)
    fprintf(f, "%lld", (long long)v);
  else
    fprintf(f, "%.6g", v);
}

void bench_result_json(FILE *f, const bench_result *r) {
  fputs("{\"workload\": ", f);
  bench_json_str(f, r->workload);
  fputs(", \"system\": ", f);
  bench_json_str(f, r->system);
  fputs(", \"durability\": ", f);
  bench_json_str(f, r->durability);
  num(f, "events", (double)r->events);
  num(f, "seconds", r->seconds);
  num(f, "events_per_s", r->events_per_s);
  if (r->mb_per_s > 0) num(f, "mb_per_s", r->mb_per_s);
  if (r->ratio_to[0]) {
    num(f, "ratio", r->ratio);
    fputs(", \"ratio_to\": ", f);
    bench_json_str(f, r->ratio_to);
  }
  if (r->target_text[0]) {
    num(f, "target", r->target);
    fputs(", \"target_text\": ", f);
    bench_json_str(f, r->target_text);
    fprintf(f, ", \"met\": %s", r->met == 1 ? "true" : r->met == 0 ? "false" : "null");
  }
  if (r->p50_us > 0) {
    num(f, "p50_us", r->p50_us);
    num(f, "p99_us", r->p99_us);
    num(f, "p999_us", r->p999_us);
  }
  if (r->note[0]) {
    fputs(", \"note\": ", f);
    bench_json_str(f, r->note);
  }
  if (r->extra[0]) fprintf(f, ", %s", r->extra);
  fputc('}', f);
}

static int mkdirs(const char *path) {
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0755) && errno != EEXIST) return -1;
    *p = '/';
  }
  return 0;
}

int bench_out_open(bench_out *o, const char *path, const char *bench, const bench_events *evs,
                   const char *run_extra) {
  o->f = NULL;
  o->n = 0;
  if (!path) return 0;
  mkdirs(path);
  o->f = fopen(path, "w");
  if (!o->f) {
    fprintf(stderr, "bench: cannot write %s: %s\n", path, strerror(errno));
    return -1;
  }
  struct utsname u;
  uname(&u);
  char date[32];
  time_t t = time(NULL);
  strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
  fputs("{\"bench\": ", o->f);
  bench_json_str(o->f, bench);
  fputs(",\n \"run\": {\"date\": ", o->f);
  bench_json_str(o->f, date);
  fputs(", \"host\": ", o->f);
  bench_json_str(o->f, u.nodename);
  fputs(", \"kernel\": ", o->f);
  bench_json_str(o->f, u.release);
  fprintf(o->f, ", \"cpus\": %ld", sysconf(_SC_NPROCESSORS_ONLN));
  if (evs) {
    fputs(", \"events_source\": ", o->f);
    bench_json_str(o->f, evs->source);
    fprintf(o->f,
            ", \"distinct_events\": %zu, \"payload_bytes_p50\": %zu, \"payload_bytes_p90\": %zu"
            ", \"payload_bytes_p99\": %zu",
            evs->n, bench_events_size_pct(evs, 50), bench_events_size_pct(evs, 90),
            bench_events_size_pct(evs, 99));
  }
  if (run_extra && *run_extra) fprintf(o->f, ", %s", run_extra);
  fputs("},\n \"results\": [", o->f);
  return 0;
}

void bench_out_add(bench_out *o, const bench_result *r) {
  if (!o->f) return;
  fputs(o->n++ ? ",\n  " : "\n  ", o->f);
  bench_result_json(o->f, r);
  fflush(o->f);
}

void bench_out_close(bench_out *o) {
  if (!o->f) return;
  fputs("\n ]}\n", o->f);
  fclose(o->f);
  o->f = NULL;
}

static void rate(char *buf, size_t cap, double v) {
  if (v >= 1e6)
    snprintf(buf, cap, "%.2fM", v / 1e6);
  else if (v >= 1e4)
    snprintf(buf, cap, "%.1fk", v / 1e3);
  else
    snprintf(buf, cap, "%.0f", v);
}

void bench_table_header(void) {
  printf("%-26s %-8s %-12s %10s %8s %9s  %-30s %s\n", "workload", "system", "durability",
         "events/s", "MB/s", "ratio", "of", "target");
  printf("%-26s %-8s %-12s %10s %8s %9s  %-30s %s\n", "--------", "------", "----------",
         "--------", "----", "-----", "--", "------");
}

void bench_table_row(const bench_result *r) {
  char eps[32], mb[32] = "", ratio[32] = "", target[128] = "";
  rate(eps, sizeof eps, r->events_per_s);
  if (r->mb_per_s > 0) snprintf(mb, sizeof mb, "%.1f", r->mb_per_s);
  if (r->ratio_to[0]) snprintf(ratio, sizeof ratio, "%.3f", r->ratio);
  if (r->target_text[0])
    snprintf(target, sizeof target, "%s %s", r->target_text,
             r->met == 1   ? "MET"
             : r->met == 0 ? "MISSED"
                           : "");
  printf("%-26s %-8s %-12s %10s %8s %9s  %-30s %s\n", r->workload, r->system, r->durability, eps,
         mb, ratio, r->ratio_to, target);
  if (r->p50_us > 0)
    printf("%-26s %-8s %-12s latency p50 %.0f us, p99 %.0f us, p99.9 %.0f us\n", "", "", "",
           r->p50_us, r->p99_us, r->p999_us);
  if (r->note[0]) printf("%-26s   note: %s\n", "", r->note);
  fflush(stdout);
}

int bench_mkdtemp(char *out, size_t cap, const char *tag) {
  const char *tmp = getenv("TMPDIR");
  if (!tmp || !*tmp) tmp = "/tmp";
  snprintf(out, cap, "%s/engram-bench-%s.XXXXXX", tmp, tag);
  return mkdtemp(out) ? 0 : -1;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  return remove(path);
}

void bench_rmrf(const char *path) {
  if (path && *path) nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

double bench_arg_double(const char *s, const char *what) {
  char *end;
  errno = 0;
  double v = strtod(s ? s : "", &end);
  if (!s || !*s || *end || errno || v < 0)
    bench_die("bad value for %s: %s", what, s ? s : "(none)");
  return v;
}

void bench_die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("bench: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(1);
}
