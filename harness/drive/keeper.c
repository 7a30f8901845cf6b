/* The native keeper: keeper.py's Keeper in C, with the same lines on the
 * same pipes.  The harness starts it with posix_spawn() (no copy of the
 * harness's memory, no fork server, no setpriv hop) and it starts the server
 * with a fork of itself: a few hundred kilobytes, not a Python interpreter.
 * keeper.py compiles it once per machine and falls back to the Python keeper
 * where no C compiler is found.
 *
 *   usage: leak-keeper CWD ARGV...    (CWD "": the keeper's own)
 *   fd 0, 1, 2  the server's stdin, stdout, stderr
 *   fd 3        CTL, read:    'signal N' | 'kill'; end-of-file: kill the tree
 *   fd 4        STATUS, write: 'started PID' | 'failed ERRNO MESSAGE' |
 *               'exit PID STATUS' | 'empty' | 'killed N' | 'error TEXT'
 *
 * It is a child subreaper, deaf to the terminal's signals, in a session of
 * its own and named leak-keeper from its exec on (posix_spawn's setsid, its
 * file's name); the server gets every signal at its default disposition, an
 * empty mask and PR_SET_PDEATHSIG (SIGKILL when the keeper dies). */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CTL 3
#define STATUS 4
#define KILL_SECONDS 10.0

static pid_t root = -1; /* the server's first process, until reaped */
static int sigfd = -1;

static void say(const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof line - 2) n = sizeof line - 2;
  line[n++] = '\n';
  /* A harness that is gone reads nothing: CTL will read end-of-file. */
  if (write(STATUS, line, n) < 0) {}
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The server's side of the fork: never returns. */
static void exec_server(pid_t keeper, const char *cwd, char **argv, int err_w) {
  sigset_t none;
  for (int sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != keeper) _exit(127);
  if (cwd[0] == '\0' || chdir(cwd) == 0) execvp(argv[0], argv);
  int e = errno;
  if (write(err_w, &e, sizeof e) < 0) {}
  _exit(127);
}

static int start(const char *cwd, char **argv) {
  int err[2];
  if (pipe2(err, O_CLOEXEC) != 0) {
    say("failed %d %s", errno, strerror(errno));
    return 0;
  }
  pid_t keeper = getpid();
  pid_t pid = fork();
  if (pid == 0) exec_server(keeper, cwd, argv, err[1]);
  int fork_errno = errno;
  close(err[1]);
  if (pid < 0) {
    close(err[0]);
    say("failed %d %s", fork_errno, strerror(fork_errno));
    return 0;
  }
  int e = 0;
  ssize_t got;
  do got = read(err[0], &e, sizeof e); while (got < 0 && errno == EINTR);
  close(err[0]);
  if (got == (ssize_t)sizeof e) {
    waitpid(pid, NULL, 0);
    say("failed %d %s", e, strerror(e));
    return 0;
  }
  root = pid;
  say("started %d", (int)pid);
  return 1;
}

/* Reap what has exited; 0 once no child is left. */
static int reap(void) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid < 0) return errno == EINTR ? 1 : 0;
    if (pid == 0) return 1;
    if (pid == root) {
      root = -1;
      say("exit %d %d", (int)pid, status);
    }
  }
}

/* Every live process below this one, read from /proc (parent PIDs). */
static int descendants(pid_t *out, int cap) {
  static pid_t pids[65536], ppids[65536];
  int n = 0, found = 0;
  DIR *proc = opendir("/proc");
  if (proc == NULL) return 0;
  struct dirent *d;
  while ((d = readdir(proc)) != NULL && n < 65536) {
    if (!isdigit((unsigned char)d->d_name[0])) continue;
    char path[300], buf[512];
    snprintf(path, sizeof path, "/proc/%s/stat", d->d_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0) continue;
    buf[len] = '\0';
    char *paren = strrchr(buf, ')');
    char state;
    int ppid;
    if (paren == NULL || sscanf(paren + 1, " %c %d", &state, &ppid) != 2 || state == 'Z') continue;
    pids[n] = atoi(d->d_name);
    ppids[n++] = ppid;
  }
  closedir(proc);
  /* Breadth first from this process: out[] is its own queue. */
  pid_t me = getpid();
  for (int next = -1; next < found; next++) {
    pid_t parent = next < 0 ? me : out[next];
    for (int i = 0; i < n && found < cap; i++)
      if (ppids[i] == parent) out[found++] = pids[i];
  }
  return found;
}

static void wait_child(double seconds) {
  struct pollfd p = {.fd = sigfd, .events = POLLIN};
  if (poll(&p, 1, (int)(seconds * 1000)) > 0) {
    struct signalfd_siginfo info;
    while (read(sigfd, &info, sizeof info) == (ssize_t)sizeof info) {}
  }
}

/* SIGKILL every descendant until none is left (a process may fork while the
 * others die: look again), within a deadline. */
static int kill_tree(void) {
  static pid_t tree[65536];
  int killed = 0;
  double end = now() + KILL_SECONDS;
  while (now() < end) {
    int n = descendants(tree, 65536);
    if (n == 0) break;
    for (int i = 0; i < n; i++)
      if (kill(tree[i], SIGKILL) == 0) killed++;
    if (reap()) wait_child(0.02);
  }
  while (reap() && now() < end) wait_child(0.02);
  return killed;
}

/* The server's first process, or, once it is gone (a daemon), every process
 * of the tree. */
static void send_signal(int number) {
  static pid_t tree[65536];
  if (root > 0) {
    kill(root, number);
    return;
  }
  int n = descendants(tree, 65536);
  for (int i = 0; i < n; i++) kill(tree[i], number);
}

/* Obey the complete lines in buf[0..*len); 1 once the keeper must end. */
static int obey(char *buf, size_t *len) {
  char *line = buf, *nl;
  while ((nl = memchr(line, '\n', buf + *len - line)) != NULL) {
    *nl = '\0';
    int number;
    if (sscanf(line, " signal %d", &number) == 1) {
      send_signal(number);
    } else if (strncmp(line, "kill", 4) == 0) {
      say("killed %d", kill_tree());
      return 1;
    }
    line = nl + 1;
  }
  *len = buf + *len - line;
  memmove(buf, line, *len);
  return 0;
}

static int serve(void) {
  char buf[4096];
  size_t len = 0;
  for (;;) {
    struct pollfd p[2] = {{.fd = CTL, .events = POLLIN}, {.fd = sigfd, .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      say("error poll: %s", strerror(errno));
      kill_tree();
      return 1;
    }
    if (p[1].revents) {
      struct signalfd_siginfo info;
      while (read(sigfd, &info, sizeof info) == (ssize_t)sizeof info) {}
      if (!reap()) {
        say("empty");
        return 0;
      }
    }
    if (p[0].revents) {
      if (len == sizeof buf) len = 0; /* a line longer than any command */
      ssize_t got = read(CTL, buf + len, sizeof buf - len);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        kill_tree();
        return 0;
      }
      len += got;
      if (obey(buf, &len)) return 0;
    }
  }
}

int main(int argc, char **argv) {
  static const int deaf[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU, SIGPIPE};
  if (argc < 3) {
    fprintf(stderr, "usage: leak-keeper CWD ARGV...\n");
    return 2;
  }
  /* Nothing the harness was given (a make jobserver's pipe) reaches the
   * server. */
  if (close_range(STATUS + 1, ~0U, 0) != 0)
    for (int fd = STATUS + 1; fd < 1024; fd++) close(fd);
  fcntl(CTL, F_SETFD, FD_CLOEXEC);
  fcntl(STATUS, F_SETFD, FD_CLOEXEC);
  for (size_t i = 0; i < sizeof deaf / sizeof deaf[0]; i++) signal(deaf[i], SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_SETMASK, &chld, NULL);
  sigfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sigfd < 0 || prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
    say("error %s: %s", sigfd < 0 ? "signalfd" : "PR_SET_CHILD_SUBREAPER", strerror(errno));
    return 1;
  }
  if (!start(argv[1], argv + 2)) return 1;
  return serve();
}
