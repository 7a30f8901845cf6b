/* Two ways for an I/O completion to hand its result to the side waiting for
 * it: the two designs of seed 000's awaiter (concurrencpp-X asio_coro_util).
 *
 * callback_awaiter_t is the design before the fix: one nullable slot (the
 * std::function<void(T)> "setter") that both stores the result and resumes the
 * waiter.  The completion calls whatever is in the slot; once the waiting side
 * is gone the slot is empty and the call goes to address 0.
 *
 * result_cell_t is the fix (shared_ptr<optional<T>>): a reference-counted cell
 * owned by the completion and the waiter alike.  The completion only stores
 * the result and tells the waiter, if there still is one.  No function pointer
 * that can be empty sits on the completion path.
 */
#ifndef SERVERS_COMMON_AWAIT_H
#define SERVERS_COMMON_AWAIT_H

typedef void (*awaiter_setter)(void *waiter, int result);

typedef struct callback_awaiter {
  awaiter_setter setter;
  void *waiter;
} callback_awaiter_t;

void callback_awaiter_set(callback_awaiter_t *aw, awaiter_setter setter, void *waiter);
/* The awaiter's frame is gone: its setter goes with it. */
void callback_awaiter_reset(callback_awaiter_t *aw);
/* What asio's binder1 does on completion: call the slot, set or not. */
void callback_awaiter_complete(callback_awaiter_t *aw, int result);

typedef struct result_cell {
  int refs;
  int has_value;
  int value;
  void *waiter; /* NULL once the waiting side is gone */
} result_cell_t;

result_cell_t *result_cell_new(void *waiter);
result_cell_t *result_cell_ref(result_cell_t *cell);
void result_cell_unref(result_cell_t *cell);
void result_cell_store(result_cell_t *cell, int value);

#endif
