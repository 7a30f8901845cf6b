/* Errors from two threads, for recording tests/inputs/thread-errors.log:
 *
 *   valgrind --leak-check=full --show-leak-kinds=all --error-markers=begin,end \
 *            --log-file=thread-errors.log build/progs/thread_errors
 *
 * memcheck heads an error record with 'Thread N:' whenever the thread differs
 * from the one of the previous record, loss records included: the main
 * thread's invalid write comes first (no such line), then thread 2's invalid
 * read ('Thread 2:'), then the leak check at exit, run by thread 1, whose
 * first loss record is headed 'Thread 1:'.  Not a server. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static void *lost;

static void *worker(void *arg) {
  int *p = arg;
  int v = p[1];            /* p was freed by main: invalid read */
  char *leak = malloc(48); /* leaked by the worker */
  leak[0] = (char)v;
  lost = leak;
  lost = NULL;
  return NULL;
}

int main(void) {
  pthread_t t;
  int *p = malloc(4 * sizeof(int));
  char *q = malloc(8);
  q[8] = 'x';              /* invalid write, from the main thread */
  free(q);
  free(p);
  if (pthread_create(&t, NULL, worker, p) != 0)
    return 1;
  pthread_join(t, NULL);
  return 0;
}
