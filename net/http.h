/* http.h — the daemon's HTTP side (libmicrohttpd): dashboard, JSON API, /metrics. Private
 * to net/. */
#ifndef ENGRAM_NET_HTTP_H
#define ENGRAM_NET_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "engram.h"

struct net_server;
struct http_server;

/* Checks an `http` address ("HOST:PORT", HOST an IPv4 address or "localhost") and its
 * token rule: a non-loopback address needs a token. 0 or ENGRAM_EINVAL with the message. */
int http_check_options(const char *addr, const char *token);
/* Starts HTTP on addr for the daemon's handle; *out is NULL when addr is NULL. The
 * actual port (addr's port 0 = any) is written into bound (cap bytes, "HOST:PORT"). */
int http_start(struct net_server *s, engram *log, const char *addr, const char *token,
               struct http_server **out, char *bound, size_t cap);
/* Stops the HTTP threads and the sampler and frees h; accepts NULL. */
void http_stop(struct http_server *h);

/* The dashboard page (http_page.c). */
extern const char http_page_html[];

/* A growing text buffer for replies. */
typedef struct hbuf {
  char *p;
  size_t len, cap;
  int oom;
} hbuf;
void hb_put(hbuf *b, const char *s, size_t n);
void hb_puts(hbuf *b, const char *s);
void hb_printf(hbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void hb_json_str(hbuf *b, const char *s); /* a JSON string literal, escaped */
void hb_free(hbuf *b);

/* One request as the handler sees it, whatever carries it: libmicrohttpd's connection, or
 * the fuzz target (tests/fuzz/fuzz_http.c), which so runs the daemon's very code. */
typedef struct http_request {
  const char *method; /* "GET", "POST" ... */
  const char *url;    /* the path, without the query */
  /* A query argument or a header by name; NULL when absent. */
  const char *(*arg)(void *ctx, const char *name);
  const char *(*header)(void *ctx, const char *name);
  void *ctx;
} http_request;
typedef struct http_reply {
  unsigned status;  /* HTTP status */
  const char *type; /* Content-Type, static */
  hbuf out;         /* the body; the caller frees it with hb_free */
} http_reply;
/* Answers one request: token and CSRF checks, then the endpoint (bodies carry nothing:
 * arguments are in the URL). */
void http_handle(struct http_server *h, const http_request *rq, http_reply *rp);
/* The handler's state on the daemon's handle, neither listening nor sampling (http_start
 * adds both); s may be NULL (no daemon counters, no parked fetches to wake). Freed by
 * http_stop. NULL when out of memory. */
struct http_server *http_server_new(struct net_server *s, engram *log, const char *token);

/* The per-group time series the sampler keeps (one sample a second, one a minute). */
#define HTTP_SECONDS 300 /* per-second samples kept: 5 minutes */
#define HTTP_MINUTES 120 /* per-minute samples kept: 2 hours */
#define HTTP_MAX_SERIES 256

typedef struct http_sample {
  int64_t t_ns;  /* CLOCK_REALTIME of the sample */
  uint64_t head; /* the topic's head offset: appended = its growth */
  uint64_t lag, in_flight, retrying, dead;
  uint64_t acked, delivered, redelivered; /* cumulative */
  int64_t oldest_unfinished_ns;
} http_sample;

#endif
