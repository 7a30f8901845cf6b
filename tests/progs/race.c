/* Two threads push onto one list without a lock: the helgrind and DRD
 * reference logs in tests/inputs/ were recorded from it. */
#include <pthread.h>
#include <stdio.h>
struct node { struct node *next; int id; };
static struct node *head;
static struct node nodes[4];
static void register_node(struct node *n) { n->next = head; head = n; }
static void *worker(void *arg) { register_node(arg); return NULL; }
int main(void) {
  pthread_t t[2];
  for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, worker, &nodes[i]);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  return head == NULL;
}
