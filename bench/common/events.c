/* events.c — memory events for the benches: the real dataset when present, else a generator. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define DATA_REL "../shared/data/memory-events.jsonl"
#define GEN_SEED 0x9e3779b97f4a7c15ull
#define GEN_COUNT 11349 /* as many as the dataset holds */

/* Copies the string value of "name" in a flat JSON object into dst. Returns 0 or -1. The
 * values read here (type, memory_id) hold no escapes in the dataset; escapes are copied
 * as they stand, which keeps them valid keys. */
static int json_field(const char *line, size_t len, const char *name, char *dst, size_t cap) {
  char pat[64];
  int pl = snprintf(pat, sizeof pat, "\"%s\":", name);
  const char *end = line + len;
  const char *p = memmem(line, len, pat, (size_t)pl);
  if (!p) return -1;
  p += pl;
  while (p < end && (*p == ' ' || *p == '\t')) p++;
  if (p >= end || *p != '"') return -1;
  p++;
  size_t n = 0;
  while (p < end && *p != '"') {
    if (*p == '\\' && p + 1 < end) {
      if (n + 2 >= cap) return -1;
      dst[n++] = *p++;
    }
    if (n + 1 >= cap) return -1;
    dst[n++] = *p++;
  }
  if (p >= end) return -1;
  dst[n] = 0;
  return n ? 0 : -1;
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 22, n = 0;
  char *buf = malloc(cap + 1);
  while (buf) {
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (n < cap) break;
    cap *= 2;
    char *nb = realloc(buf, cap + 1);
    if (!nb) {
      free(buf);
      buf = NULL;
    }
    buf = nb;
  }
  int err = ferror(f);
  fclose(f);
  if (!buf || err) {
    free(buf);
    return NULL;
  }
  buf[n] = 0;
  *len = n;
  return buf;
}

/* Parses JSON lines into events. The arena holds, per line, type\0key\0payload\0. */
static int parse_lines(bench_events *out, const char *text, size_t len) {
  size_t lines = 0;
  for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
  lines++;
  out->ev = calloc(lines, sizeof *out->ev);
  out->arena = malloc(len * 2 + lines * 64 + 1);
  if (!out->ev || !out->arena) return -1;
  char *a = out->arena;
  const char *p = text, *end = text + len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
    if (ll && p[ll - 1] == '\r') ll--;
    char type[256], key[1024];
    if (ll > 2 && json_field(p, ll, "type", type, sizeof type) == 0 &&
        json_field(p, ll, "memory_id", key, sizeof key) == 0) {
      bench_event *e = &out->ev[out->n++];
      size_t tl = strlen(type) + 1, kl = strlen(key) + 1;
      memcpy(a, type, tl);
      e->type = a;
      a += tl;
      memcpy(a, key, kl);
      e->key = a;
      a += kl;
      memcpy(a, p, ll);
      a[ll] = 0;
      e->payload = a;
      e->payload_len = ll;
      a += ll + 1;
      out->bytes += ll;
    }
    p += ll;
    while (p < end && (*p == '\r' || *p == '\n')) p++;
  }
  return out->n ? 0 : -1;
}

static int load_file(bench_events *out, const char *path) {
  size_t len = 0;
  char *text = read_file(path, &len);
  if (!text) return -1;
  int rc = parse_lines(out, text, len);
  free(text);
  if (rc) {
    bench_events_free(out);
    return -1;
  }
  snprintf(out->source, sizeof out->source, "%s", path);
  return 0;
}

/* The repository the executable sits in: build/bench/bench_x -> three levels up. */
static int exe_repo_path(char *out, size_t cap) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return -1;
  exe[n] = 0;
  for (int up = 0; up < 3; up++) {
    char *slash = strrchr(exe, '/');
    if (!slash) return -1;
    *slash = 0;
  }
  return snprintf(out, cap, "%s/%s", exe, DATA_REL) < (int)cap ? 0 : -1;
}

int bench_events_load(bench_events *out) {
  memset(out, 0, sizeof *out);
  const char *env = getenv("ENGRAM_BENCH_DATA");
  if (env) {
    if (*env && load_file(out, env) == 0) return 0;
    if (*env) fprintf(stderr, "bench: cannot read %s; using the generator\n", env);
    return bench_events_generate(out, GEN_COUNT);
  }
  if (load_file(out, DATA_REL) == 0) return 0;
  char path[PATH_MAX + 64];
  if (exe_repo_path(path, sizeof path) == 0 && load_file(out, path) == 0) return 0;
  return bench_events_generate(out, GEN_COUNT);
}

void bench_events_free(bench_events *evs) {
  if (!evs) return;
  free(evs->ev);
  free(evs->arena);
  evs->ev = NULL;
  evs->arena = NULL;
  evs->n = 0;
  evs->bytes = 0;
}

/* ---------------------------------------------------------------------------------
 * The generator. Line sizes follow the dataset's size quantiles (sizes only, no text);
 * the text is drawn from a small vocabulary so it compresses roughly like prose.
 * ------------------------------------------------------------------------------ */
static const struct {
  double q;
  int size;
} size_q[] = {{0, 155},  {5, 203},  {10, 218},   {20, 236},    {30, 250},  {40, 262},
              {50, 273}, {60, 285}, {70, 301},   {80, 325},    {90, 388},  {95, 453},
              {97, 517}, {99, 803}, {99.5, 930}, {99.9, 1280}, {100, 1585}};

static const char *const words[] = {
    "I",       "you",      "we",       "the",       "a",       "and",        "to",
    "of",      "it",       "that",     "was",       "is",      "my",         "so",
    "really",  "just",     "been",     "have",      "with",    "for",        "on",
    "about",   "what",     "fun",      "great",     "love",    "friends",    "family",
    "project", "weekend",  "painting", "music",     "game",    "tournament", "dog",
    "hiking",  "camping",  "work",     "new",       "started", "amazing",    "thanks!",
    "Wow,",    "Hey",      "That's",   "cool!",     "trip",    "lately",     "book",
    "movie",   "class",    "garden",   "recipe",    "support", "group",      "kids",
    "feel",    "excited",  "proud",    "tough",     "time",    "next",       "week",
    "month",   "together", "shared",   "mentioned", "planned", "festival",   "screenplay",
    "turtles", "beach"};
#define N_WORDS (sizeof words / sizeof words[0])
static const char *const names[] = {
    "Nate",   "Joanna", "Caroline", "Melanie", "Jon",  "Gina", "John",   "Maria", "Tim",   "Audrey",
    "Andrew", "James",  "Deborah",  "Jolene",  "Evan", "Sam",  "Calvin", "Dave",  "Shawn", "Mia"};

static uint64_t rng_next(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) / 9007199254740992.0; }

static int target_size(uint64_t *s) {
  double u = rng_unit(s) * 100;
  for (size_t i = 1; i < sizeof size_q / sizeof size_q[0]; i++) {
    if (u <= size_q[i].q) {
      double f = (u - size_q[i - 1].q) / (size_q[i].q - size_q[i - 1].q);
      return size_q[i - 1].size + (int)(f * (size_q[i].size - size_q[i - 1].size));
    }
  }
  return size_q[sizeof size_q / sizeof size_q[0] - 1].size;
}

int bench_events_generate(bench_events *out, size_t n) {
  memset(out, 0, sizeof *out);
  out->ev = calloc(n, sizeof *out->ev);
  out->arena = malloc(n * (2048 + 128));
  if (!out->ev || !out->arena) {
    bench_events_free(out);
    return -1;
  }
  uint64_t s = GEN_SEED;
  char *a = out->arena;
  for (size_t i = 0; i < n; i++) {
    int conv = 26 + (int)(rng_next(&s) % 25), sess = 1 + (int)(i / 40 % 30);
    const char *who = names[rng_next(&s) % 20];
    double u = rng_unit(&s);
    const char *type = u < 0.745 ? "memory.saved" : u < 0.825 ? "memory.updated" : "memory.queried";
    const char *kind = type[7] == 'q' ? "qa" : type[7] == 'u' ? "profile_event" : "turn";
    char key[96], head[384], text[2048];
    if (type[7] == 'u')
      snprintf(key, sizeof key, "conv-%d:%s:profile", conv, who);
    else
      snprintf(key, sizeof key, "conv-%d:D%d:%zu", conv, sess, i % 40 + 1);
    int hl = snprintf(head, sizeof head,
                      "{\"type\":\"%s\",\"user_id\":\"conv-%d:%s\",\"session\":\"conv-%d/s%d\","
                      "\"ts\":\"2022-%02d-%02dT%02d:%02d:%02dZ\",\"text\":\"",
                      type, conv, who, conv, sess, 1 + (int)(i / 1000 % 12), 1 + (int)(i / 40 % 28),
                      (int)(i / 180 % 24), (int)(i / 3 % 60), (int)(i * 20 % 60));
    char tail[192];
    int tl = snprintf(tail, sizeof tail, "\",\"memory_id\":\"%s\",\"kind\":\"%s\"}", key, kind);
    int want = target_size(&s) - hl - tl;
    if (want < 8) want = 8;
    int t = 0;
    while (t < want) {
      const char *w = words[rng_next(&s) % N_WORDS];
      int wl = (int)strlen(w);
      if (t + wl + 1 >= (int)sizeof text) break;
      if (t) text[t++] = ' ';
      memcpy(text + t, w, (size_t)wl);
      t += wl;
    }
    if (t > want) t = want;
    if (t > 0 && text[t - 1] == ' ') text[t - 1] = '.';
    bench_event *e = &out->ev[i];
    size_t tyl = strlen(type) + 1, kl = strlen(key) + 1;
    memcpy(a, type, tyl);
    e->type = a;
    a += tyl;
    memcpy(a, key, kl);
    e->key = a;
    a += kl;
    e->payload = a;
    memcpy(a, head, (size_t)hl);
    memcpy(a + hl, text, (size_t)t);
    memcpy(a + hl + t, tail, (size_t)tl);
    e->payload_len = (size_t)(hl + t + tl);
    a[e->payload_len] = 0;
    a += e->payload_len + 1;
    out->bytes += e->payload_len;
  }
  out->n = n;
  snprintf(out->source, sizeof out->source, "generator (seed %#llx, %zu events)",
           (unsigned long long)GEN_SEED, n);
  return 0;
}

static int cmp_size(const void *a, const void *b) {
  size_t x = *(const size_t *)a, y = *(const size_t *)b;
  return x < y ? -1 : x > y;
}

size_t bench_events_size_pct(const bench_events *evs, double p) {
  if (!evs->n) return 0;
  size_t *v = malloc(evs->n * sizeof *v);
  if (!v) return 0;
  for (size_t i = 0; i < evs->n; i++) v[i] = evs->ev[i].payload_len;
  qsort(v, evs->n, sizeof *v, cmp_size);
  size_t idx = (size_t)(p / 100.0 * (double)evs->n);
  if (idx >= evs->n) idx = evs->n - 1;
  size_t r = v[idx];
  free(v);
  return r;
}
