/* mirror.h — what `engram mirror`, `engram restore --from-nats` and `engram serve
 * --mirror-nats` share: reaching NATS, the stream's message layout, and the mirror loop.
 * Built on include/engram.h and libnats (nats.c) only. See docs/scale-out.md. */
#ifndef ENGRAM_CLI_MIRROR_H
#define ENGRAM_CLI_MIRROR_H

#include <nats/nats.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "engram.h"

/* NATS headers of a mirrored event (the payload is the message body). */
#define MIRROR_H_TOPIC "Engram-Topic"            /* topic name */
#define MIRROR_H_OFFSET "Engram-Offset"          /* decimal offset in the topic */
#define MIRROR_H_TOPIC_ID "Engram-Topic-Created" /* decimal created_ns of the topic */
#define MIRROR_H_LOG_ID                                  \
  "Engram-Log-Id" /* the log's id (engram_log_info_get); \
                     absent in streams of older mirrors */
#define MIRROR_H_TYPE "Engram-Type"
#define MIRROR_H_KEY "Engram-Key"                   /* percent-encoded; absent = none */
#define MIRROR_H_CONTENT_TYPE "Engram-Content-Type" /* percent-encoded; absent = none */
#define MIRROR_H_TIME "Engram-Timestamp"            /* decimal ns, CLOCK_REALTIME */
#define MIRROR_H_DELIVER_AT "Engram-Deliver-At"     /* decimal ns; absent = 0 */
#define MIRROR_H_IDEM "Engram-Idempotency-Key"      /* percent-encoded; absent = none */
#define MIRROR_H_HEADERS "Engram-Headers"           /* name=value&... each part percent-encoded */
#define MIRROR_H_FLAGS "Engram-Flags"               /* decimal ENGRAM_EVENT_*; absent = 0 */
/* The topic's settings (mirror_config_encode), on the first event of every batch: a
 * restore takes them from the newest event that carries them. */
#define MIRROR_H_CONFIG "Engram-Topic-Config"

/* How to reach NATS. Every field may be NULL. */
struct mirror_nats {
  const char *url;         /* "nats://h:4222,nats://h2:4222"; tls:// turns TLS on */
  const char *user;        /* user/password authentication */
  const char *password;    /* default $ENGRAM_NATS_PASSWORD */
  const char *creds;       /* a .creds file (JWT + nkey seed) */
  const char *nkey_public; /* nkey authentication: the public key ... */
  const char *nkey_seed;   /* ... and the file holding its seed */
  const char *ca;          /* TLS: CA certificates file (turns TLS on) */
  const char *cert, *key;  /* TLS: client certificate chain and key files */
};

struct mirror_config {
  struct mirror_nats nats;
  const char *stream;        /* JetStream stream, default "ENGRAM" */
  const char *prefix;        /* subject = prefix "." topic; default "engram.<stream>" */
  const char *const *topics; /* the topics to follow */
  size_t n_topics;
  const char *group;           /* the consumer group keeping the position; default
                                  "mirror.<stream>" */
  uint32_t replicas;           /* replicas of a stream the mirror creates, default 1 */
  uint64_t dup_window_ms;      /* duplicate window of a stream it creates, default 2m */
  uint32_t batch;              /* events per fetch, default 1000 */
  uint32_t max_pending;        /* asynchronous publishes in flight, default 4000 */
  int once;                    /* stop when every topic is mirrored up to its head */
  volatile sig_atomic_t *stop; /* set (from a signal handler) to stop after a batch */
  const char *who;             /* log line prefix, default "mirror" */
};

/* Follows the topics and publishes every event into the stream once, until *stop is
 * set (or, with once, until caught up). Waits and retries while NATS or the topics are
 * missing. Returns 0, MIRROR_RETRY when a remote log stopped answering (run it again),
 * or 1 after printing one line on stderr (a fatal problem: the subject belongs to
 * another topic, the log failed). */
#define MIRROR_RETRY 3
int mirror_run(engram *log, const struct mirror_config *cfg);

/* NATS plumbing shared with restore. mirror_link_open connects (reconnecting forever
 * once connected) and makes the JetStream context with jo (may be NULL); on failure it
 * writes why into err. mirror_link_close accepts NULLs. */
natsStatus mirror_link_open(const struct mirror_nats *n, jsOptions *jo, natsConnection **nc,
                            jsCtx **js, char *err, size_t errlen);
void mirror_link_close(natsConnection **nc, jsCtx **js);
/* Ends the NATS library once every connection is closed: waits (up to 2 s) for its
 * threads, which otherwise may still run while the process exits and meet OpenSSL's
 * and the library's own exit-time teardown (a crash at exit over TLS). */
void mirror_library_end(void);
/* The text of natsStatus s, with the library's last error when it has one. */
const char *mirror_nats_why(natsStatus s);
/* 1 when stream information describes a stream at rest: it has a leader and every
 * other online replica is current with no lag (an offline one serves nothing). A stream
 * in transition can answer from a replica, or a new leader, that has not yet applied
 * every acknowledged message; restore waits for rest before it counts. */
int mirror_stream_rests(const jsStreamInfo *si);
/* A decimal header of msg; 0, or -1 when missing or not a number. */
int mirror_header_u64(natsMsg *msg, const char *name, uint64_t *out);

/* The options of struct mirror_nats that `engram mirror` and `engram restore` share: the
 * entries of their option tables (targets in *n), their help lines, and the check of
 * what goes together (0, or the usage status after one line on stderr). */
#define MIRROR_NATS_OPTS(n)                                                                    \
  CLI_OPT_TEXT("--nats-user", &(n)->user, .what = "needs a user name"),                        \
      CLI_OPT_STR("--nats-creds", &(n)->creds), CLI_OPT_STR("--nats-nkey", &(n)->nkey_public), \
      CLI_OPT_STR("--nats-seed", &(n)->nkey_seed), CLI_OPT_STR("--nats-ca", &(n)->ca),         \
      CLI_OPT_STR("--nats-cert", &(n)->cert), CLI_OPT_STR("--nats-key", &(n)->key)
#define MIRROR_NATS_HELP                                                                    \
  "  --nats-user U            user name; the password comes from $ENGRAM_NATS_PASSWORD\n"   \
  "  --nats-creds FILE        NATS credentials file (JWT and nkey seed)\n"                  \
  "  --nats-nkey PUBLIC       nkey authentication: the public key, with --nats-seed FILE\n" \
  "  --nats-seed FILE         the file holding the nkey's seed\n"                           \
  "  --nats-ca FILE           CA certificates for TLS (turns TLS on)\n"                     \
  "  --nats-cert FILE         client certificate for TLS, with --nats-key FILE\n"           \
  "  --nats-key FILE          its private key\n"
int mirror_nats_check(const char *cmd, const struct mirror_nats *n);

/* The mirror of `engram serve --mirror-nats`: a thread with a client handle of the
 * daemon listening on `listen` (its address on loopback when it listens on all). Stop
 * it after engram_serve() returns. */
struct mirror_thread;
int mirror_thread_start(const char *listen, const struct mirror_config *cfg,
                        struct mirror_thread **out);
void mirror_thread_stop(struct mirror_thread *t);

/* Percent-encoding of text carried in a header (bytes outside 0x21..0x7e, '%', '&' and
 * '='): out must hold 3 * n + 1 bytes. Decoding works in place and returns the length,
 * or -1 on a malformed escape. */
void mirror_pct_encode(const char *s, size_t n, char *out);
long mirror_pct_decode(char *s);

/* A topic's settings as name=value&... (every field of engram_topic_config, the
 * tombstone type percent-encoded) into out (MIRROR_CONFIG_MAX bytes), and back: decoding
 * fills *cfg (zeroed first; names it does not know are skipped) and returns 0, or -1
 * when a value is malformed. */
#define MIRROR_CONFIG_MAX 1024
void mirror_config_encode(const engram_topic_config *cfg, char *out);
int mirror_config_decode(const char *s, engram_topic_config *cfg);

#endif
