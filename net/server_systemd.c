/* server_systemd.c — the daemon under a service manager: readiness and stopping told
 * through the sd_notify datagram protocol, journald priorities on log lines, and admin
 * actions logged with who asked for them. No libsystemd: the protocol is one datagram. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "net/server.h"

/* sd_notify(3): one datagram of "KEY=VALUE\n" lines to the AF_UNIX socket named by
 * $NOTIFY_SOCKET (a path, or '@' for the abstract namespace). Nothing without it. */
void server_sd_notify(const char *state) {
  const char *path = getenv("NOTIFY_SOCKET");
  if (!path || (path[0] != '/' && path[0] != '@') ||
      strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
    return;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  size_t n = strlen(path);
  memcpy(sa.sun_path, path, n);
  if (path[0] == '@') sa.sun_path[0] = '\0';
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  ssize_t r = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa,
                     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
  (void)r; /* a manager that does not listen is no reason to stop serving */
  close(fd);
}

/* Whether stderr is the journal: $JOURNAL_STREAM holds "DEV:INODE" of the stream
 * systemd connected, and stderr must still be that stream (not redirected since). */
int server_stderr_is_journal(void) {
  const char *js = getenv("JOURNAL_STREAM");
  unsigned long long dev, ino;
  struct stat st;
  if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2) return 0;
  if (fstat(STDERR_FILENO, &st) != 0) return 0;
  return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* syslog priorities of the daemon's levels, as journald reads a "<N>" prefix. */
int server_log_priority(const char *level) {
  if (!strcmp(level, "error")) return 3;
  if (!strcmp(level, "warn")) return 4;
  return 6;
}

void server_log_admin(struct net_server *s, zmq_msg_t *body, const char *op, const char *what) {
  const char *peer = body ? zmq_msg_gets(body, "Peer-Address") : NULL;
  const char *key = body ? zmq_msg_gets(body, "User-Id") : NULL;
  server_log(s, "info", "admin", "%s %s by peer %s key %s", op, what, peer && *peer ? peer : "-",
             key && *key ? key : "-");
}
