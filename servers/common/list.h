/* A minimal intrusive doubly-linked list: how servers keep their sessions
 * reachable, so that a stop can find and close every one of them. */
#ifndef SERVERS_COMMON_LIST_H
#define SERVERS_COMMON_LIST_H

#include <stddef.h>

typedef struct list_node {
  struct list_node *prev;
  struct list_node *next;
} list_node_t;

static inline void list_init(list_node_t *head) { head->prev = head->next = head; }

static inline int list_empty(const list_node_t *head) { return head->next == head; }

static inline void list_push(list_node_t *head, list_node_t *node) {
  node->prev = head->prev;
  node->next = head;
  head->prev->next = node;
  head->prev = node;
}

static inline void list_remove(list_node_t *node) {
  node->prev->next = node->next;
  node->next->prev = node->prev;
  node->prev = node->next = node;
}

#define LIST_ENTRY(ptr, type, member)                                          \
  ((type *)((char *)(ptr) - offsetof(type, member)))

/* Safe against removal of the current node. */
#define LIST_FOREACH_SAFE(node, tmp, head)                                     \
  for ((node) = (head)->next, (tmp) = (node)->next; (node) != (head);          \
       (node) = (tmp), (tmp) = (node)->next)

#endif
