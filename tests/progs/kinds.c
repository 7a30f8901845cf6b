/* One memcheck finding per mode, for recording the parser's reference logs
 * (tests/inputs/) and for the end-to-end tests.  Not a server. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct node { struct node *next; char payload[24]; };

static void *still_reachable;

static struct node *make_list(int n) {
  struct node *head = NULL;
  for (int i = 0; i < n; i++) {
    struct node *nd = malloc(sizeof(*nd));
    nd->next = head;
    head = nd;
  }
  return head;
}

static void leak_every_kind(void) {
  struct node *lost = make_list(3);         /* 1 definite + 2 indirect */
  char *interior = malloc(64);
  still_reachable = malloc(100);
  interior += 10;                            /* only an interior pointer */
  static char *possibly;
  possibly = interior;
  lost = NULL;
  (void)lost;
}

static int invalid_read(void) {
  int *p = malloc(4 * sizeof(int));
  free(p);
  return p[1];
}

static void invalid_write(void) {
  char *p = malloc(8);
  p[8] = 'x';
  free(p);
}

static void invalid_free(void) {
  char *p = malloc(16);
  free(p);
  free(p);
}

static void invalid_jump(void) {
  void (*volatile fn)(void) = NULL;
  fn();
}

static void syscall_param(void) {
  char *buf = malloc(16);
  ssize_t n = write(1, buf, 16);
  (void)n;
  free(buf);
}

static int uninit_condition(void) {
  int *p = malloc(sizeof(int));
  int r = 0;
  if (*p > 3)
    r = 1;
  free(p);
  return r;
}

static int uninit_value(void) {
  int **pp = malloc(sizeof(int *));
  int r = **pp;
  free(pp);
  return r;
}

static void overlap(void) {
  char *buf = malloc(64);
  memset(buf, 'a', 63);
  buf[63] = '\0';
  strncpy(buf + 2, buf, 5);
  free(buf);
}

static void fishy(void) {
  long volatile n = -1;
  char *p = malloc((size_t)n);
  free(p);
}

static void forked_leak(void) {
  pid_t pid = fork();
  if (pid == 0) {
    malloc(40);  /* the child leaks, the parent does not */
    _exit(0);
  }
  waitpid(pid, NULL, 0);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  int r = 0;
  if (!strcmp(mode, "leaks")) leak_every_kind();
  else if (!strcmp(mode, "invalid-read")) r = invalid_read();
  else if (!strcmp(mode, "invalid-write")) invalid_write();
  else if (!strcmp(mode, "invalid-free")) invalid_free();
  else if (!strcmp(mode, "invalid-jump")) invalid_jump();
  else if (!strcmp(mode, "syscall-param")) syscall_param();
  else if (!strcmp(mode, "uninit-condition")) r = uninit_condition();
  else if (!strcmp(mode, "uninit-value")) r = uninit_value();
  else if (!strcmp(mode, "overlap")) overlap();
  else if (!strcmp(mode, "fishy")) fishy();
  else if (!strcmp(mode, "fork-leak")) forked_leak();
  else if (!strcmp(mode, "abort")) abort();
  else if (!strcmp(mode, "clean")) free(malloc(10));
  else { fprintf(stderr, "unknown mode '%s'\n", mode); return 2; }
  return r & 0;
}
