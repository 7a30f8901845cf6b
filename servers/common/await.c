/* See await.h: the awaiter before and after seed 000's fix. */
#include "await.h"

#include <stddef.h>
#include <stdlib.h>

#include "server.h"

void callback_awaiter_set(callback_awaiter_t *aw, awaiter_setter setter, void *waiter) {
  aw->setter = setter;
  aw->waiter = waiter;
}

void callback_awaiter_reset(callback_awaiter_t *aw) {
  aw->setter = NULL;
  aw->waiter = NULL;
}

void callback_awaiter_complete(callback_awaiter_t *aw, int result) {
  aw->setter(aw->waiter, result);
}

result_cell_t *result_cell_new(void *waiter) {
  result_cell_t *cell = srv_xcalloc(1, sizeof(*cell));
  cell->refs = 1;
  cell->waiter = waiter;
  return cell;
}

result_cell_t *result_cell_ref(result_cell_t *cell) {
  cell->refs++;
  return cell;
}

void result_cell_unref(result_cell_t *cell) {
  if (--cell->refs == 0)
    free(cell);
}

void result_cell_store(result_cell_t *cell, int value) {
  cell->value = value;
  cell->has_value = 1;
}
