/* Tasks whose state outlives their handle unless someone holds and waits on
 * it: the C counterpart of concurrencpp's lazy_result::run() -> result<void>
 * (seeds 000 and 001).
 *
 * task_spawn() allocates the task's state (its "coroutine frame") and returns
 * the handle to its result.  The state is freed once the task has finished AND
 * its handle is gone: task_detach() drops the handle (fire-and-forget: the
 * state is freed when the task finishes, if it ever does), task_wait_release()
 * is the holder's wait() at stop (the task must have finished).  A task that
 * is still suspended when the program stops, with its handle dropped, is never
 * freed: nothing can reach it.
 */
#ifndef SERVERS_COMMON_TASK_H
#define SERVERS_COMMON_TASK_H

#include <stddef.h>

#include "list.h"

typedef struct task {
  list_node_t node; /* in the holder's registry, if any */
  int finished;
  int detached;
  const char *name;
} task_t;

/* The frame of a task embeds task_t as its first member. */
void *task_spawn(size_t frame_size, const char *name);
void task_finish(task_t *task);
void task_detach(task_t *task);
/* The holder's wait() at stop: frees a finished task; returns 1 (and frees
 * nothing) if it is still running. */
int task_wait_release(task_t *task);

/* A registry of held results (the fixed servers' sessions_ and accept_task_). */
typedef struct task_registry task_registry_t;
typedef void (*task_registry_cb)(task_registry_t *reg, void *arg);

struct task_registry {
  list_node_t tasks;
  size_t count;
  task_registry_cb on_empty; /* a pending task_registry_await_empty() */
  void *on_empty_arg;
};

void task_registry_init(task_registry_t *reg);
void task_registry_hold(task_registry_t *reg, task_t *task);
/* wait() on one held result: frees it if its task has finished (returns 1
 * and leaves it if not). */
int task_registry_release(task_registry_t *reg, task_t *task);
/* wait() on every held result: each task must have finished; frees them.
 * Returns the number still running (0 on a clean stop). */
size_t task_registry_wait_all(task_registry_t *reg);
/* wait() on every held result without blocking the loop (a stop that
 * co_awaits its sessions): done(reg, arg) runs once no held task is left, at
 * once if none is.  Tasks leave the registry as they finish, through
 * task_registry_release(). */
void task_registry_await_empty(task_registry_t *reg, task_registry_cb done, void *arg);

#endif
