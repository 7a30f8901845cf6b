/* See task.h. */
#include "task.h"

#include <stdlib.h>

#include "server.h"

void *task_spawn(size_t frame_size, const char *name) {
  task_t *task = srv_xcalloc(1, frame_size);
  list_init(&task->node);
  task->name = name;
  return task;
}

void task_finish(task_t *task) {
  task->finished = 1;
  if (task->detached)
    free(task);
}

void task_detach(task_t *task) {
  task->detached = 1;
}

int task_wait_release(task_t *task) {
  if (!task->finished) {
    srv_log("task %s still running at stop", task->name);
    return 1;
  }
  free(task);
  return 0;
}

void task_registry_init(task_registry_t *reg) {
  list_init(&reg->tasks);
  reg->count = 0;
  reg->on_empty = NULL;
  reg->on_empty_arg = NULL;
}

static void notify_if_empty(task_registry_t *reg) {
  task_registry_cb done = reg->on_empty;
  if (reg->count != 0 || done == NULL)
    return;
  reg->on_empty = NULL;
  done(reg, reg->on_empty_arg);
}

void task_registry_hold(task_registry_t *reg, task_t *task) {
  list_push(&reg->tasks, &task->node);
  reg->count++;
}

int task_registry_release(task_registry_t *reg, task_t *task) {
  int running;
  list_remove(&task->node);
  reg->count--;
  running = task_wait_release(task);
  notify_if_empty(reg);
  return running;
}

size_t task_registry_wait_all(task_registry_t *reg) {
  list_node_t *node, *tmp;
  size_t running = 0;
  LIST_FOREACH_SAFE(node, tmp, &reg->tasks) {
    running += (size_t)task_registry_release(reg, LIST_ENTRY(node, task_t, node));
  }
  return running;
}

void task_registry_await_empty(task_registry_t *reg, task_registry_cb done, void *arg) {
  reg->on_empty = done;
  reg->on_empty_arg = arg;
  notify_if_empty(reg);
}
