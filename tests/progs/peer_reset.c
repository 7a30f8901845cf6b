/* A server whose bug needs exactly this from its clients: two connections,
 * a byte 'X' on one, then a reset (RST) of the other.  `harness shrink`'s
 * tests reduce a noisy scenario to those steps.
 *
 *   peer_reset PORT
 *
 * It listens on 127.0.0.1:PORT (0 picks one and says it on stderr), reads
 * and drops what clients send (one poll loop, clients kept in the order
 * they were accepted).  A client that sends data with an 'X' in it gets a
 * peer: the client that connected right after it, if it is still there
 * (connections are numbered as they are accepted, all pending ones before
 * any data is read, so this depends on what the clients did, not on
 * timing).  A client that ends with FIN is unlinked
 * from every peer before it is freed; one that is reset (ECONNRESET) is
 * freed on the spot and its peers still point at it: the bug.  At stop
 * (SIGTERM, SIGINT) the server first handles what is already pending (one
 * poll round that does not wait, so an RST that arrived just before the
 * signal is never missed), then says goodbye to each client's peer:
 * farewell() reads the freed peer's id, memcheck's InvalidRead in farewell.
 * Everything is freed at exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CLIENTS 64

struct client {
  int fd;
  int id;
  struct client *peer;
};

static volatile sig_atomic_t stop;
static struct client *clients[MAX_CLIENTS];
static int nclients, next_id;

static void on_term(int sig) { (void)sig; stop = 1; }

static void forget(int i) {
  memmove(&clients[i], &clients[i + 1], (size_t)(nclients - i - 1) * sizeof(clients[0]));
  nclients--;
}

static void unlink_peers(struct client *gone) {
  for (int i = 0; i < nclients; i++)
    if (clients[i]->peer == gone)
      clients[i]->peer = NULL;
}

static struct client *next_after(const struct client *c) {
  for (int i = 0; i < nclients; i++)
    if (clients[i]->id == c->id + 1)
      return clients[i];
  return NULL;
}

/* One read; 0 while the client lasts, -1 once it is gone (and freed). */
static int on_readable(int i) {
  struct client *c = clients[i];
  char buf[4096];
  ssize_t n = read(c->fd, buf, sizeof(buf));
  if (n > 0) {
    if (memchr(buf, 'X', (size_t)n))
      c->peer = next_after(c);
    return 0;
  }
  close(c->fd);
  forget(i);
  if (n < 0 && errno == ECONNRESET) {
    free(c); /* the bug: its peers still point at it */
    return -1;
  }
  unlink_peers(c);
  free(c);
  return -1;
}

/* Every connection waiting to be accepted (the listener does not block). */
static void on_accept(int lfd) {
  for (int k = 0; k < MAX_CLIENTS; k++) {
    int fd = accept(lfd, NULL, NULL);
    struct client *c;
    if (fd < 0)
      return;
    if (nclients == MAX_CLIENTS || !(c = calloc(1, sizeof(*c)))) {
      close(fd);
      continue;
    }
    c->fd = fd;
    c->id = ++next_id;
    clients[nclients++] = c;
  }
}

/* One poll round (`wait` NULL: until something happens).  New connections
 * first: a client's data is read knowing every connection that reached the
 * server before it. */
static void serve_round(int lfd, const struct timespec *wait, const sigset_t *mask) {
  struct pollfd pfds[1 + MAX_CLIENTS];
  struct client *polled[MAX_CLIENTS];
  int n = nclients;
  pfds[0].fd = lfd;
  pfds[0].events = POLLIN;
  for (int i = 0; i < n; i++) {
    polled[i] = clients[i];
    pfds[1 + i].fd = clients[i]->fd;
    pfds[1 + i].events = POLLIN;
  }
  if (ppoll(pfds, (nfds_t)(1 + n), wait, mask) <= 0)
    return; /* EINTR: the caller checks stop */
  if (pfds[0].revents & POLLIN)
    on_accept(lfd);
  for (int k = 0; k < n; k++) {
    if (!pfds[1 + k].revents)
      continue;
    for (int i = 0; i < nclients; i++)
      if (clients[i] == polled[k]) {
        on_readable(i);
        break;
      }
  }
}

static void farewell(struct client *c) {
  char line[64];
  int len = snprintf(line, sizeof(line), "bye from peer %d\n", c->peer->id);
  if (write(c->fd, line, (size_t)len) < 0)
    return; /* the client may be gone: nothing to tell it */
}

int main(int argc, char **argv) {
  struct sockaddr_in addr;
  struct sigaction sa;
  sigset_t stops, waitmask;
  const struct timespec now = {0, 0};
  socklen_t len = sizeof(addr);
  int lfd, one = 1;

  if (argc != 2) {
    fprintf(stderr, "usage: peer_reset PORT\n");
    return 2;
  }
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&stops);
  sigaddset(&stops, SIGTERM);
  sigaddset(&stops, SIGINT);
  sigprocmask(SIG_BLOCK, &stops, &waitmask);
  lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)atoi(argv[1]));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 64) < 0) {
    perror("peer_reset: bind/listen");
    return 1;
  }
  getsockname(lfd, (struct sockaddr *)&addr, &len);
  fprintf(stderr, "peer_reset: port %d\n", ntohs(addr.sin_port));
  while (!stop)
    serve_round(lfd, NULL, &waitmask);
  serve_round(lfd, &now, &waitmask); /* what arrived before the stop signal */
  for (int i = 0; i < nclients; i++)
    if (clients[i]->peer)
      farewell(clients[i]);
  while (nclients > 0) {
    close(clients[0]->fd);
    free(clients[0]);
    forget(0);
  }
  close(lfd);
  return 0;
}
