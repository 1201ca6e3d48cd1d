/* server_zap.c — CURVE: the ZAP handler that lets in only the allowed client keys, and
 * engram_keygen. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/server.h"

void *server_zap_main(void *arg) {
  struct net_server *s = arg;
  while (!s->zap_stop) {
    zmq_pollitem_t it = {s->zap, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 200) <= 0) continue;
    zmq_msg_t f[8];
    int n = 0, more = 1;
    while (more) {
      zmq_msg_t m;
      zmq_msg_init(&m);
      if (zmq_msg_recv(&m, s->zap, 0) < 0) {
        zmq_msg_close(&m);
        break;
      }
      more = zmq_msg_more(&m);
      if (n < 8)
        f[n++] = m;
      else
        zmq_msg_close(&m);
    }
    /* Frames: version, request id, domain, address, routing id, mechanism, credentials. */
    const char *status = "400", *text = "client key not allowed";
    char user[41] = ""; /* the admitted client's key: each request's "User-Id" */
    char addr[64] = "-";
    if (n > 3 && zmq_msg_size(&f[3]) > 0 && zmq_msg_size(&f[3]) < sizeof addr) {
      memcpy(addr, zmq_msg_data(&f[3]), zmq_msg_size(&f[3]));
      addr[zmq_msg_size(&f[3])] = '\0';
    }
    if (n == 7 && zmq_msg_size(&f[0]) == 3 && !memcmp(zmq_msg_data(&f[0]), "1.0", 3) &&
        zmq_msg_size(&f[5]) == 5 && !memcmp(zmq_msg_data(&f[5]), "CURVE", 5) &&
        zmq_msg_size(&f[6]) == 32) {
      pthread_mutex_lock(&s->allow_mu);
      for (size_t i = 0; i < s->n_allow; i++) {
        if (!memcmp(s->allow[i], zmq_msg_data(&f[6]), 32)) {
          status = "200";
          text = "OK";
          zmq_z85_encode(user, zmq_msg_data(&f[6]), 32);
          break;
        }
      }
      pthread_mutex_unlock(&s->allow_mu);
    } else {
      text = "unsupported authentication request";
    }
    if (*status != '2') {
      int dropped;
      if (server_client_log_ok(s, &dropped)) {
        char key[41] = "-";
        if (n == 7 && zmq_msg_size(&f[6]) == 32) zmq_z85_encode(key, zmq_msg_data(&f[6]), 32);
        server_log(s, "warn", "auth_denied", "peer %s key %s: %s", addr, key, text);
      }
    }
    const void *rid = n > 1 ? zmq_msg_data(&f[1]) : "";
    size_t rid_len = n > 1 ? zmq_msg_size(&f[1]) : 0;
    zmq_send(s->zap, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(s->zap, rid, rid_len, ZMQ_SNDMORE);
    zmq_send(s->zap, status, 3, ZMQ_SNDMORE);
    zmq_send(s->zap, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(s->zap, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(s->zap, "", 0, 0);
    for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
  }
  return NULL;
}

/* One line of the allow-keys file, trimmed in place: the key it holds (bare, or as
 * `public-key = KEY`), "" for a blank or '#' line. */
static char *key_of_line(char *l) {
  size_t n = strlen(l);
  while (n && (l[n - 1] == '\n' || l[n - 1] == '\r' || l[n - 1] == ' ' || l[n - 1] == '\t'))
    l[--n] = '\0';
  while (*l == ' ' || *l == '\t') l++;
  if (*l == '#') return l + strlen(l);
  if (!strncmp(l, "public-key", 10)) {
    char *p = l + 10;
    while (*p == ' ' || *p == '\t') p++;
    if (*p == '=') {
      for (p++; *p == ' ' || *p == '\t';) p++;
      return p;
    }
  }
  return l;
}

/* Reads path's keys onto *keys (*n of them, grown with realloc). 0, or an ENGRAM_E* code
 * with what is wrong in msg. */
static int read_keys_file(const char *path, unsigned char (**keys)[32], size_t *n, char *msg,
                          size_t cap) {
  FILE *f = fopen(path, "re");
  if (!f) {
    int e = errno;
    snprintf(msg, cap, "allow-keys file %s: %s", path, strerror(e));
    return e == ENOENT || e == EACCES ? ENGRAM_EINVAL : err_from_errno(e);
  }
  char *buf = NULL;
  size_t bcap = 0, from = *n;
  unsigned long line = 0;
  int rc = 0;
  ssize_t len;
  while (!rc && (len = getline(&buf, &bcap, f)) >= 0) {
    line++;
    char *k = key_of_line(buf);
    if (!*k) continue;
    unsigned char raw[32];
    if ((size_t)len > 4096 || !server_valid_z85_key(k, raw)) {
      snprintf(msg, cap, "allow-keys file %s:%lu: a key is 40 Z85 characters", path, line);
      rc = ENGRAM_EINVAL;
      break;
    }
    unsigned char(*grown)[32] = realloc(*keys, (*n + 1) * sizeof **keys);
    if (!grown) {
      snprintf(msg, cap, "allow-keys file %s: out of memory", path);
      rc = ENGRAM_ENOMEM;
      break;
    }
    *keys = grown;
    memcpy((*keys)[(*n)++], raw, 32);
  }
  if (!rc && ferror(f)) {
    snprintf(msg, cap, "allow-keys file %s: reading failed after line %lu", path, line);
    rc = ENGRAM_EIO;
  }
  if (!rc && *n == from) {
    snprintf(msg, cap, "allow-keys file %s: no keys in it", path);
    rc = ENGRAM_EINVAL;
  }
  free(buf);
  fclose(f);
  return rc;
}

int server_allow_load(struct net_server *s, int reload) {
  unsigned char(*keys)[32] = NULL;
  size_t n = 0;
  char msg[700] = "";
  int rc = 0;
  if (s->o.n_allow_keys && !(keys = calloc(s->o.n_allow_keys, 32))) {
    snprintf(msg, sizeof msg, "serve: out of memory");
    rc = ENGRAM_ENOMEM;
  }
  for (size_t i = 0; !rc && i < s->o.n_allow_keys; i++)
    zmq_z85_decode(keys[n++], s->o.allow_keys[i]);
  if (!rc && s->o.allow_keys_file)
    rc = read_keys_file(s->o.allow_keys_file, &keys, &n, msg, sizeof msg);
  if (rc) {
    free(keys);
    if (!reload) return log_error(NULL, rc, "%s", msg);
    server_log(s, "error", "sighup", "%s: keeping the %zu keys allowed before", msg, s->n_allow);
    return rc;
  }
  pthread_mutex_lock(&s->allow_mu);
  size_t was = s->n_allow;
  unsigned char(*old)[32] = s->allow;
  s->allow = keys;
  s->n_allow = n;
  pthread_mutex_unlock(&s->allow_mu);
  free(old);
  if (reload)
    server_log(s, "info", "sighup", "allow-list reloaded: %zu client keys (were %zu)", n, was);
  return 0;
}

int server_valid_z85_key(const char *k, unsigned char out[32]) {
  return k && strlen(k) == 40 && zmq_z85_decode(out, k) != NULL;
}

int net_keygen(char public_key[41], char secret_key[41]) {
  if (!zmq_has("curve"))
    return log_error(NULL, ENGRAM_ENOTSUP, "keygen: this libzmq has no CURVE support");
  if (zmq_curve_keypair(public_key, secret_key) != 0)
    return log_error(NULL, ENGRAM_ENOTSUP, "keygen: %s", zmq_strerror(errno));
  return 0;
}
