/* Incremental leak checks, for recording tests/inputs/incremental-leak-check.log:
 *
 *   valgrind --leak-check=full --show-leak-kinds=all --error-markers=begin,end \
 *            --log-file=incremental-leak-check.log build/progs/leakcheck_deltas
 *
 * Three leak checks requested from inside the program (memcheck.h client
 * requests) with leaks added and blocks freed in between, so the log holds
 * '(+N)' and '(-N)' deltas, 'new loss record' lines and thousands separators,
 * then valgrind's own leak check at exit.  Runs natively too (the requests
 * are no-ops).  Not a server. */
#include <stdlib.h>
#include <string.h>
#include <valgrind/memcheck.h>

struct node { struct node *next; char payload[24]; };

static void *reachable_big;   /* 300,000 bytes, freed before the last check */
static void *reachable_small; /* 100 bytes, kept to the end */

static void leak_bytes(size_t n) {
  char *p = malloc(n);
  memset(p, 0, n);
  p = NULL;  /* the only pointer is gone: definitely lost */
  (void)p;
}

static void leak_list(int n) {
  struct node *head = NULL;
  for (int i = 0; i < n; i++) {
    struct node *nd = malloc(sizeof(*nd));
    nd->next = head;
    head = nd;
  }
  head = NULL;  /* 1 definite + n-1 indirect */
  (void)head;
}

int main(void) {
  reachable_big = malloc(300000);
  reachable_small = malloc(100);
  leak_bytes(16);
  VALGRIND_DO_LEAK_CHECK;           /* full check: the baseline */

  leak_bytes(16);
  leak_list(3);
  VALGRIND_DO_ADDED_LEAK_CHECK;     /* what grew since the baseline */

  free(reachable_big);
  reachable_big = NULL;
  leak_bytes(32);
  VALGRIND_DO_CHANGED_LEAK_CHECK;   /* what grew or shrank */

  return 0;
}
