/* A plain-sockets TCP server that is not built on the project's common layer:
 * the shape of "somebody else's server" for the harness's end-to-end tests.
 *
 *   toy_server MODE PORT
 *
 * It listens on 127.0.0.1:PORT (0 picks one and prints it on stderr), prints
 * nothing on stdout, and echoes what every client sends (up to MAX_CLIENTS
 * at once, one poll loop).  SIGTERM/SIGINT are blocked but in ppoll(), so a
 * stop signal is never lost between two checks.  MODE:
 *   echo         correct; exits 0 on SIGTERM
 *   leak         keeps a copy of every line it echoes, never freed
 *   leak-once    leaks one block at start, then serves as echo
 *   nullcall     calls a NULL handler on the first line it reads (SIGSEGV)
 *   ignore-term  ignores SIGTERM (and SIGINT): only SIGKILL ends it
 *   die-at-start exits with status 3 before listening
 *   never-listen sleeps without ever listening
 *   flood        writes megabytes to stdout and stderr, then serves as echo
 *   fork         forks a child that also stays alive, then serves as echo
 *   daemon       daemonizes (fork, setsid, fork: the first process exits 0)
 *                and the grandchild serves as echo
 *   daemon-leak  the same, and the grandchild leaks one block at start
 *   wrong-port   ignores PORT: listens on a port of its own choosing
 *   flood-exit   writes 1 GiB to stdout, then exits 4 before listening
 *   invalid-read reads a freed block when a client sends a line "READ"
 *   leak-quit    as leak, and exits (0) after echoing a line "QUIT"
 *   escapes      writes terminal control sequences to stderr, exits 5
 *   leak-twice   leaks one block from each of two call sites at start
 * At a clean exit it says on stderr how many connections it accepted.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static const char *mode;
static int accepted;

struct kept { struct kept *next; char line[]; };

static void on_term(int sig) { (void)sig; stop = 1; }

static void remember_line(const char *line, size_t len) {
  static struct kept *dummy;
  struct kept *k = malloc(sizeof(*k) + len + 1);
  memcpy(k->line, line, len);
  k->line[len] = '\0';
  k->next = NULL;
  dummy = NULL;  /* drop the only pointer: definitely lost */
  (void)dummy;
}

typedef void (*handler_fn)(const char *, size_t);

#define MAX_CLIENTS 256

/* One read and its echo; -1 when the client is gone. */
static int serve_chunk(int fd) {
  char buf[4096];
  handler_fn handler = NULL;
  ssize_t n = read(fd, buf, sizeof(buf));
  if (n <= 0)
    return -1;
  if (!strcmp(mode, "leak"))
    remember_line(buf, (size_t)n);
  if (!strcmp(mode, "nullcall"))
    handler(buf, (size_t)n);
  if (!strcmp(mode, "invalid-read") && n >= 4 && !memcmp(buf, "READ", 4)) {
    char *gone = malloc(16);
    free(gone);
    buf[0] = gone[0]; /* use after free: memcheck's InvalidRead */
    buf[0] = 'R';
  }
  if (!strcmp(mode, "leak-quit"))
    remember_line(buf, (size_t)n);
  if (!strcmp(mode, "leak-quit") && n >= 4 && !memcmp(buf, "QUIT", 4))
    stop = 1;
  return write(fd, buf, (size_t)n) < 0 ? -1 : 0;
}

static void serve(int lfd, const sigset_t *waitmask) {
  int clients[MAX_CLIENTS];
  int nclients = 0;
  while (!stop) {
    struct pollfd pfds[1 + MAX_CLIENTS];
    int n = nclients;
    pfds[0].fd = lfd;
    pfds[0].events = POLLIN;
    for (int i = 0; i < n; i++) {
      pfds[1 + i].fd = clients[i];
      pfds[1 + i].events = POLLIN;
    }
    if (ppoll(pfds, (nfds_t)(1 + n), NULL, waitmask) < 0)
      continue; /* EINTR: the loop checks stop */
    for (int i = n - 1; i >= 0; i--) {
      if (pfds[1 + i].revents && serve_chunk(clients[i]) < 0) {
        close(clients[i]);
        clients[i] = clients[--nclients];
      }
    }
    if (pfds[0].revents & POLLIN) {
      int fd = accept(lfd, NULL, NULL);
      accepted += fd >= 0;
      if (fd >= 0 && nclients < MAX_CLIENTS)
        clients[nclients++] = fd;
      else if (fd >= 0)
        close(fd);
    }
  }
  while (nclients > 0)
    close(clients[--nclients]);
}

static void __attribute__((noinline)) leak_at_start(void) { remember_line("start", 5); }
static void __attribute__((noinline)) leak_at_config(void) { remember_line("config", 6); }

/* The classic double fork: the caller's process exits, the grandchild is
 * the daemon, in a session of its own. */
static void daemonize(void) {
  if (fork() > 0)
    _exit(0);
  setsid();
  if (fork() > 0)
    _exit(0);
}

static void flood_and_exit(void) {
  static char chunk[1 << 20];
  memset(chunk, 'F', sizeof(chunk));
  for (int i = 0; i < 1024; i++)
    if (fwrite(chunk, 1, sizeof(chunk), stdout) != sizeof(chunk))
      break;
  fflush(stdout);
  exit(4);
}

static void flood(void) {
  static char chunk[65536];
  memset(chunk, 'f', sizeof(chunk) - 1);
  for (int i = 0; i < 64; i++) {
    fputs(chunk, stdout);
    fputs(chunk, stderr);
  }
  fflush(stdout);
}

int main(int argc, char **argv) {
  struct sockaddr_in addr;
  struct sigaction sa;
  sigset_t stops, waitmask;
  int lfd, one = 1;
  socklen_t len = sizeof(addr);

  if (argc != 3) {
    fprintf(stderr, "usage: toy_server MODE PORT\n");
    return 2;
  }
  mode = argv[1];
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = !strcmp(mode, "ignore-term") ? SIG_IGN : on_term;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&stops);
  sigaddset(&stops, SIGTERM);
  sigaddset(&stops, SIGINT);
  sigprocmask(SIG_BLOCK, &stops, &waitmask);
  if (!strcmp(mode, "die-at-start")) {
    fprintf(stderr, "toy_server: cannot start (on purpose)\n");
    return 3;
  }
  if (!strcmp(mode, "never-listen")) {
    while (!stop)
      sigsuspend(&waitmask);
    return 0;
  }
  if (!strcmp(mode, "flood"))
    flood();
  if (!strcmp(mode, "flood-exit"))
    flood_and_exit();
  if (!strcmp(mode, "escapes")) {
    fprintf(stderr, "\033[31mred\033[0m \a bell \033]0;title\007\n");
    return 5;
  }
  if (!strncmp(mode, "daemon", 6))
    daemonize();
  if (!strcmp(mode, "daemon-leak"))
    remember_line("daemon", 6);
  if (!strcmp(mode, "leak-twice")) {
    leak_at_start();
    leak_at_config();
  }
  if (!strcmp(mode, "leak-once"))
    remember_line("started", 7);
  if (!strcmp(mode, "fork") && fork() == 0) {
    while (!stop)
      sigsuspend(&waitmask);
    _exit(0);
  }
  lfd = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  memset(&addr, 0, sizeof(addr));
  addr.sin_family = AF_INET;
  addr.sin_port = htons(!strcmp(mode, "wrong-port") ? 0 : (unsigned short)atoi(argv[2]));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 64) < 0) {
    perror("toy_server: bind/listen");
    return 1;
  }
  getsockname(lfd, (struct sockaddr *)&addr, &len);
  fprintf(stderr, "toy_server: %s mode on port %d\n", mode, ntohs(addr.sin_port));
  serve(lfd, &waitmask);
  close(lfd);
  fprintf(stderr, "toy_server: %d connections accepted\n", accepted);
  return 0;
}
