/* cmd_restore.c — `engram restore --from-nats`: rebuilds a log (same topics, offsets,
 * payloads, types, keys, headers) from a stream written by `engram mirror`. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "mirror.h"

static const char help[] =
    "usage: engram restore --from-nats URL --stream NAME --data DIR\n"
    "                      [--subject-prefix P] [--nats-user U] [--nats-creds FILE]\n"
    "                      [--nats-nkey PUBLIC --nats-seed FILE] [--nats-ca FILE]\n"
    "                      [--nats-cert FILE --nats-key FILE]\n"
    "\n"
    "Reads every message of the JetStream stream NAME that `engram mirror` wrote and\n"
    "appends its events, topic by topic in offset order, to the log in DIR, which must\n"
    "be new or empty (no topics). Each topic's events must be the offsets 1..N, each\n"
    "once: a hole or two different events at one offset is refused and nothing of that\n"
    "topic is written. Copies of one event (the same offset and bytes) count once.\n"
    "Prints `restored T topics, E events from M messages (D duplicates)`.\n"
    "The messages to read are counted by the stream's leader once the stream is at\n"
    "rest (a leader, every online replica current; waited for up to 30 s), not by the\n"
    "consumer, which may sit on a replica still catching up. A stream without a leader\n"
    "(the cluster electing one) is waited for up to 120 s.\n"
    "Topics get the settings the mirror last published (the defaults for streams of\n"
    "older mirrors). Restored events carry their type, key, payload, content type,\n"
    "headers, deliver_at, flags, idempotency key and original append time (so the dedup\n"
    "window goes on from the original times; refused when that time is ahead of this\n"
    "host's clock; an event older than the one before it, where the original's clock\n"
    "stepped back, takes that one's time). Consumer groups are not mirrored, so their\n"
    "positions are not restored: the new log has no groups (recreate them with\n"
    "group create --start).\n"
    "The restored log has a log id of its own. See docs/scale-out.md.\n"
    "\n"
    "options:\n"
    "  --from-nats URL          NATS server(s), comma-separated; tls:// for TLS\n"
    "  --stream NAME            the stream to read\n"
    "  --data DIR               the log to write (or the global --data / $ENGRAM_DATA)\n"
    "  --subject-prefix P       only subjects P.<topic> (default: every message)\n" MIRROR_NATS_HELP
    "  -h, --help               this help\n";

struct rec {
  uint64_t offset;
  natsMsg *msg;
};

struct topic_recs {
  char *name;
  struct rec *r; /* every message of the topic, in stream order, then by offset */
  size_t n, cap;
  struct rec *w; /* the events to write: r without copies, offsets 1..nw */
  size_t nw;
};

static int by_offset(const void *a, const void *b) {
  const struct rec *x = a, *y = b;
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static const char *hdr(natsMsg *m, const char *name) {
  const char *v = NULL;
  return natsMsgHeader_Get(m, name, &v) == NATS_OK ? v : NULL;
}

static int same_msg(natsMsg *a, natsMsg *b) {
  static const char *const names[] = {MIRROR_H_TYPE,    MIRROR_H_KEY,  MIRROR_H_CONTENT_TYPE,
                                      MIRROR_H_HEADERS, MIRROR_H_TIME, MIRROR_H_DELIVER_AT,
                                      MIRROR_H_IDEM,    MIRROR_H_FLAGS};
  if (natsMsg_GetDataLength(a) != natsMsg_GetDataLength(b) ||
      memcmp(natsMsg_GetData(a), natsMsg_GetData(b), (size_t)natsMsg_GetDataLength(a)))
    return 0;
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    const char *x = hdr(a, names[i]), *y = hdr(b, names[i]);
    if (!x != !y || (x && strcmp(x, y))) return 0;
  }
  return 1;
}

/* The event of one message; strings are copied into *mem (freed by the caller). Returns
 * NULL or what is wrong. */
static const char *to_event(natsMsg *m, engram_event *ev, engram_header *hs, char **mem) {
  memset(ev, 0, sizeof *ev);
  const char *type = hdr(m, MIRROR_H_TYPE), *key = hdr(m, MIRROR_H_KEY),
             *ct = hdr(m, MIRROR_H_CONTENT_TYPE), *h = hdr(m, MIRROR_H_HEADERS),
             *idem = hdr(m, MIRROR_H_IDEM);
  if (!type) return "no " MIRROR_H_TYPE " header";
  size_t need = strlen(type) + (key ? strlen(key) : 0) + (ct ? strlen(ct) : 0) +
                (h ? strlen(h) : 0) + (idem ? strlen(idem) : 0) + 5;
  char *p = *mem = malloc(need);
  if (!p) return "out of memory";
#define COPY(dst, src)                                     \
  do {                                                     \
    strcpy(p, src);                                        \
    if (mirror_pct_decode(p) < 0) return "a bad %-escape"; \
    dst = p;                                               \
    p += strlen(src) + 1;                                  \
  } while (0)
  COPY(ev->type, type);
  if (key) COPY(ev->key, key);
  if (ct) COPY(ev->content_type, ct);
  if (idem) COPY(ev->idempotency_key, idem);
  if (h && *h) {
    strcpy(p, h);
    size_t n = 0;
    for (char *part = strtok(p, "&"); part; part = strtok(NULL, "&")) {
      if (n == ENGRAM_MAX_HEADERS) return "too many headers";
      char *eq = strchr(part, '=');
      if (!eq) return "a header without '='";
      *eq = '\0';
      if (mirror_pct_decode(part) < 0 || mirror_pct_decode(eq + 1) < 0) return "a bad %-escape";
      hs[n].name = part;
      hs[n].value = eq + 1;
      n++;
    }
    ev->headers = hs;
    ev->n_headers = n;
  }
#undef COPY
  uint64_t at = 0, flags = 0;
  if (!mirror_header_u64(m, MIRROR_H_DELIVER_AT, &at)) ev->deliver_at_ns = (int64_t)at;
  if (!mirror_header_u64(m, MIRROR_H_FLAGS, &flags)) ev->flags = (uint32_t)flags;
  /* The original append time (streams of every mirror carry it). */
  if (!mirror_header_u64(m, MIRROR_H_TIME, &at) && at > 0 && at <= INT64_MAX) {
    ev->timestamp_ns = (int64_t)at;
    ev->flags |= ENGRAM_EVENT_TIMESTAMP;
  }
  ev->payload = natsMsg_GetData(m);
  ev->payload_len = (size_t)natsMsg_GetDataLength(m);
  return NULL;
}

/* Appends one topic's events, offsets 1..n, in batches; checks each offset. The topic
 * is made with the settings of its newest event that carries them (none in streams of
 * older mirrors: the defaults). */
static int write_topic(struct cli *c, struct topic_recs *t, uint64_t *events) {
  engram_topic_config cfg, *cp = NULL;
  for (size_t i = t->nw; i-- > 0 && !cp;) {
    const char *v = hdr(t->w[i].msg, MIRROR_H_CONFIG);
    if (!v) continue;
    if (mirror_config_decode(v, &cfg))
      return cli_error("restore: topic %s offset %" PRIu64 ": a malformed %s header", t->name,
                       t->w[i].offset, MIRROR_H_CONFIG);
    cp = &cfg;
  }
  int rc = engram_topic_create(c->log, t->name, cp);
  if (rc) return cli_fail(c, rc, "restore: topic %s", t->name);
  enum { CHUNK = 1000 };
  engram_event *evs = calloc(CHUNK, sizeof *evs);
  engram_header *hs = calloc((size_t)CHUNK * ENGRAM_MAX_HEADERS, sizeof *hs);
  char **mem = calloc(CHUNK, sizeof *mem);
  uint64_t *offs = calloc(CHUNK, sizeof *offs);
  int *dups = calloc(CHUNK, sizeof *dups);
  int status = 0;
  if (!evs || !hs || !mem || !offs || !dups) status = cli_error("restore: out of memory");
  /* A topic's append times never decrease, but the original's clock may have stepped
   * back (NTP) between two appends: such an event takes its predecessor's time, or the
   * restore could not append it at all. */
  int64_t last_ts = 0;
  uint64_t stepped = 0;
  for (size_t i = 0; i < t->nw && !status;) {
    size_t k = 0;
    for (; k < CHUNK && i + k < t->nw; k++) {
      const char *why = to_event(t->w[i + k].msg, &evs[k], hs + k * ENGRAM_MAX_HEADERS, &mem[k]);
      if (why) {
        status =
            cli_error("restore: topic %s offset %" PRIu64 ": %s", t->name, t->w[i + k].offset, why);
        k++;
        break;
      }
      if (evs[k].flags & ENGRAM_EVENT_TIMESTAMP) {
        if (evs[k].timestamp_ns < last_ts) {
          evs[k].timestamp_ns = last_ts;
          stepped++;
        }
        last_ts = evs[k].timestamp_ns;
      }
    }
    if (!status) {
      rc = engram_append_batch(c->log, t->name, evs, k, offs, dups);
      if (rc) status = cli_fail(c, rc, "restore: appending to %s", t->name);
      for (size_t j = 0; j < k && !status; j++)
        if (offs[j] != t->w[i + j].offset || dups[j])
          status = cli_error("restore: topic %s: event %" PRIu64 " landed at offset %" PRIu64,
                             t->name, t->w[i + j].offset, offs[j]);
    }
    for (size_t j = 0; j < k; j++) {
      free(mem[j]);
      mem[j] = NULL;
    }
    i += k;
    *events += k;
  }
  if (stepped && !status)
    fprintf(stderr,
            "engram: restore: topic %s: %" PRIu64
            " events older than the event before them "
            "(the original's clock stepped back) take that event's append time\n",
            t->name, stepped);
  free(evs);
  free(hs);
  free(mem);
  free(offs);
  free(dups);
  return status;
}

/* An answer of a cluster electing a leader: worth asking again. */
static int in_transition(natsStatus s, jsErrCode ec) {
  return s == NATS_TIMEOUT || ec == JSClusterNotAvailErr || ec == JSClusterNotLeaderErr;
}

/* The stream's information from its leader, with per-subject counts of the subjects
 * matching filter (NULL: none), once the stream is at rest. A cluster in transition
 * answers otherwise: "temporarily unavailable" while its metadata leader is elected, an
 * empty state for a stream without a leader, and a replica that was away can be elected
 * leader while it still applies what it missed, answering with what it has applied so
 * far. A stream with a leader that does not rest within 30 s is taken as its leader
 * answers (an online replica that never catches up keeps the stream from resting). A
 * cluster without a leader is waited for up to LEADER_WAIT_NS: a member that comes back
 * (resumed, restarted) can call elections that take NATS tens of seconds on a busy host;
 * after 5 s one line on stderr says what restore waits for. */
#define REST_WAIT_NS 30000000000LL
#define LEADER_WAIT_NS 120000000000LL
#define LEADER_TELL_NS 5000000000LL /* no leader this long: one line on stderr */
static natsStatus leader_info(jsCtx *js, const char *stream, const char *filter, jsStreamInfo **si,
                              jsErrCode *ec) {
  int64_t start = cli_now_ns();
  int told = 0;
  for (;;) {
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Info.SubjectsFilter = filter;
    *ec = 0;
    *si = NULL;
    natsStatus s = js_GetStreamInfo(si, js, stream, &o, ec);
    int64_t waited = cli_now_ns() - start;
    if (s == NATS_OK && mirror_stream_rests(*si)) return NATS_OK;
    int led =
        s == NATS_OK && (!(*si)->Cluster || ((*si)->Cluster->Leader && *(*si)->Cluster->Leader));
    if (led && waited > REST_WAIT_NS) return NATS_OK;
    int transient = s == NATS_OK || in_transition(s, *ec);
    if (s == NATS_OK) { /* not at rest yet, or no leader */
      jsStreamInfo_Destroy(*si);
      *si = NULL;
      s = NATS_ERR; /* returned only without a leader, with *ec 0 */
    }
    if (!transient || waited > LEADER_WAIT_NS) return s;
    if (!led && !told && waited > LEADER_TELL_NS) {
      fprintf(stderr, "engram: restore: stream %s has no leader yet; waiting up to %lld s\n",
              stream, LEADER_WAIT_NS / 1000000000LL);
      told = 1;
    }
    struct timespec ts = {0, 100000000L};
    nanosleep(&ts, NULL);
  }
}

/* How many messages of the stream match the subject filter, as its leader counts them.
 * Not the consumer's count: an ephemeral consumer may be placed on a replica that has
 * not yet applied the newest acknowledged messages (a replica catching up after a
 * restart), and would count and deliver a stream without them; reading up to the
 * leader's count waits until it has them. */
static natsStatus stream_count(jsCtx *js, const char *stream, const char *filter, uint64_t *n,
                               jsErrCode *ec) {
  jsStreamInfo *si = NULL;
  natsStatus s = leader_info(js, stream, filter, &si, ec);
  *n = 0;
  if (s == NATS_OK && si->State.Subjects)
    for (int i = 0; i < si->State.Subjects->Count; i++) *n += si->State.Subjects->List[i].Msgs;
  jsStreamInfo_Destroy(si);
  return s;
}

int cmd_restore(struct cli *c, int argc, char **argv) {
  struct mirror_nats nats;
  memset(&nats, 0, sizeof nats);
  const char *stream = NULL, *prefix = NULL, *data = NULL;
  const struct cli_opt opts[] = {
      CLI_OPT_TEXT("--from-nats", &nats.url, .what = "needs a URL"),
      CLI_OPT_TEXT("--stream", &stream, .what = "needs a stream name"),
      CLI_OPT_TEXT("--data", &data, .what = "needs a directory"),
      CLI_OPT_TEXT("--subject-prefix", &prefix, .what = "needs a prefix"),
      MIRROR_NATS_OPTS(&nats),
      CLI_OPT_END};
  struct cli_args a;
  cli_args_init(&a, "restore", argc, argv);
  int r = cli_args_parse(&a, opts, help, 0, 0, "no arguments");
  if (r != CLI_GO) return r;
  if (data) c->data = data;
  if (!nats.url) return cli_usage("restore", "--from-nats URL is required");
  if (!stream) return cli_usage("restore", "--stream NAME is required");
  if ((r = mirror_nats_check("restore", &nats))) return r;
  if (c->connect)
    return cli_usage("restore", "--connect does not apply: restore writes --data DIR");
  /* Restore's own handle, with a dedup window of 1 ms: the original accepted every event
   * of the stream, an idempotency key seen before too (it came after the original's
   * window), so none may be deduplicated here. The keys keep their events' original times,
   * so the handles that append later dedupe with their own windows as the original did. */
  const char *dir = cli_data_dir(c);
  if (!dir) return cli_usage("restore", "--data DIR is required");
  cli_fault_guard(dir);
  engram_options o;
  memset(&o, 0, sizeof o);
  o.durability = c->durability;
  o.max_topics = c->max_topics;
  o.dedup_window_ms = 1;
  o.maintenance_ms = ENGRAM_MAINTENANCE_OFF;
  int status = 0;
  int rc = engram_open(dir, &o, &c->log);
  if (rc) {
    c->log = NULL;
    const char *m = engram_errmsg(NULL);
    return *m ? cli_error("%s", m) : cli_error("open %s: %s", dir, engram_strerror(rc));
  }
  engram_topic_info *ti = NULL;
  size_t nt = 0;
  rc = engram_topic_list(c->log, &ti, &nt);
  engram_free(ti);
  if (rc) return cli_fail(c, rc, "restore: listing topics");
  if (nt)
    return cli_error("restore: %s already holds %zu topics: restore into a new directory",
                     cli_data_dir(c), nt);

  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  char err[512];
  if (mirror_link_open(&nats, NULL, &nc, &js, err, sizeof err) != NATS_OK) {
    mirror_library_end();
    return cli_error("restore: %s", err);
  }
  jsStreamInfo *si = NULL;
  jsErrCode ec = 0;
  natsSubscription *sub = NULL;
  struct topic_recs *tops = NULL;
  size_t ntops = 0;
  uint64_t msgs = 0, dups = 0, events = 0;
  natsStatus s = leader_info(js, stream, NULL, &si, &ec);
  if (s != NATS_OK) {
    status = cli_error(
        "restore: stream %s: %s", stream,
        s == NATS_ERR && !ec ? "no leader (the cluster lost its quorum?)" : mirror_nats_why(s));
    goto out;
  }
  char filter[ENGRAM_MAX_NAME + 8];
  snprintf(filter, sizeof filter, "%s.>", prefix ? prefix : "");
  /* One subject filter the stream accepts: its own when it has one. */
  const char *subj = prefix ? filter : si->Config->SubjectsLen == 1 ? si->Config->Subjects[0] : ">";
  uint64_t total = 0; /* messages to read: the leader's count of the filter's subjects */
  s = stream_count(js, stream, subj, &total, &ec);
  for (uint64_t seq = 0; s == NATS_OK;) {
    if (msgs == total) {
      /* All counted messages are read. Ask again a moment later, and read on while the
       * count grows: a replica that just came back can answer once as the stream's
       * leader with the messages it has so far. */
      uint64_t again = 0;
      struct timespec ts = {0, 200000000L};
      nanosleep(&ts, NULL);
      s = stream_count(js, stream, subj, &again, &ec);
      if (s != NATS_OK || again <= total) break;
      total = again;
    }
    if (!sub) {
      jsSubOptions so;
      jsSubOptions_Init(&so);
      so.Stream = stream;
      so.Ordered = true;
      int64_t until = cli_now_ns() + 30000000000LL;
      while ((s = js_SubscribeSync(&sub, js, subj, NULL, &so, &ec)) != NATS_OK &&
             in_transition(s, ec) && cli_now_ns() < until) {
        struct timespec ts = {0, 250000000L};
        nanosleep(&ts, NULL);
      }
      if (s != NATS_OK) break;
    }
    natsMsg *m = NULL;
    s = natsSubscription_NextMsg(&m, sub, 10000);
    if (s != NATS_OK) {
      status = cli_error("restore: reading stream %s after sequence %" PRIu64 ": %s", stream, seq,
                         mirror_nats_why(s));
      goto out;
    }
    jsMsgMetaData *md = NULL;
    if (natsMsg_GetMetaData(&md, m) == NATS_OK) {
      seq = md->Sequence.Stream;
      jsMsgMetaData_Destroy(md);
    }
    msgs++;
    uint64_t off;
    const char *topic = hdr(m, MIRROR_H_TOPIC);
    if (!topic || mirror_header_u64(m, MIRROR_H_OFFSET, &off) || off == 0) {
      status = cli_error("restore: stream %s sequence %" PRIu64
                         " on %s was not written by "
                         "engram mirror (no %s / %s headers)",
                         stream, seq, natsMsg_GetSubject(m), MIRROR_H_TOPIC, MIRROR_H_OFFSET);
      natsMsg_Destroy(m);
      goto out;
    }
    size_t i = 0;
    while (i < ntops && strcmp(tops[i].name, topic)) i++;
    if (i == ntops) {
      struct topic_recs *tt = realloc(tops, (ntops + 1) * sizeof *tt);
      if (!tt || !(tt[ntops].name = strdup(topic))) {
        if (tt) tops = tt;
        natsMsg_Destroy(m);
        status = cli_error("restore: out of memory");
        goto out;
      }
      tops = tt;
      tops[ntops].r = tops[ntops].w = NULL;
      tops[ntops].n = tops[ntops].cap = tops[ntops].nw = 0;
      ntops++;
    }
    struct topic_recs *t = &tops[i];
    if (t->n == t->cap) {
      size_t cap = t->cap ? t->cap * 2 : 1024;
      struct rec *r = realloc(t->r, cap * sizeof *r);
      if (!r) {
        natsMsg_Destroy(m);
        status = cli_error("restore: out of memory");
        goto out;
      }
      t->r = r;
      t->cap = cap;
    }
    t->r[t->n].offset = off;
    t->r[t->n].msg = m;
    t->n++;
  }
  if (s != NATS_OK) {
    status = cli_error(
        "restore: reading stream %s: %s", stream,
        s == NATS_ERR && !ec ? "no leader (the cluster lost its quorum?)" : mirror_nats_why(s));
    goto out;
  }
  /* Offset order; copies of one event count once; holes and conflicts are refused. The
   * events to write go to t->w (pointers into t->r, which keeps every message). */
  for (size_t i = 0; i < ntops && !status; i++) {
    struct topic_recs *t = &tops[i];
    qsort(t->r, t->n, sizeof *t->r, by_offset);
    if (!(t->w = calloc(t->n ? t->n : 1, sizeof *t->w)))
      status = cli_error("restore: out of memory");
    for (size_t j = 0; j < t->n && !status; j++) {
      if (t->nw && t->w[t->nw - 1].offset == t->r[j].offset) {
        if (!same_msg(t->w[t->nw - 1].msg, t->r[j].msg))
          status = cli_error("restore: topic %s offset %" PRIu64
                             " has two different events in "
                             "stream %s",
                             t->name, t->r[j].offset, stream);
        dups++;
        continue;
      }
      if (t->r[j].offset != t->nw + 1)
        status = cli_error("restore: topic %s: offset %" PRIu64
                           " is missing from stream %s "
                           "(its events must be 1..N to keep their offsets)",
                           t->name, (uint64_t)t->nw + 1, stream);
      t->w[t->nw++] = t->r[j];
    }
  }
  for (size_t i = 0; i < ntops && !status; i++) status = write_topic(c, &tops[i], &events);
  if (!status)
    printf("restored %zu topics, %" PRIu64 " events from %" PRIu64 " messages (%" PRIu64
           " duplicates)\n",
           ntops, events, msgs, dups);
out:
  for (size_t i = 0; i < ntops; i++) {
    for (size_t j = 0; j < tops[i].n; j++) natsMsg_Destroy(tops[i].r[j].msg);
    free(tops[i].r);
    free(tops[i].w);
    free(tops[i].name);
  }
  free(tops);
  natsSubscription_Destroy(sub);
  jsStreamInfo_Destroy(si);
  mirror_link_close(&nc, &js);
  mirror_library_end();
  return cli_finish(status);
}
