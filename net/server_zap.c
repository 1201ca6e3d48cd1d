/* server_zap.c — CURVE: the ZAP handler that lets in only the allowed client keys, and
 * engram_keygen. */
#include <errno.h>
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
      for (size_t i = 0; i < s->n_allow; i++) {
        if (!memcmp(s->allow[i], zmq_msg_data(&f[6]), 32)) {
          status = "200";
          text = "OK";
          zmq_z85_encode(user, zmq_msg_data(&f[6]), 32);
          break;
        }
      }
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
