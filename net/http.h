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
/* Stops the HTTP threads and the sampler; accepts NULL. */
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
