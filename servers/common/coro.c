/* See coro.h: stackful coroutines on ucontext. */
#include "coro.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <valgrind/valgrind.h>

#include "server.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define CORO_ASAN 1
#endif

struct coro {
  ucontext_t ctx;    /* the coroutine's own, saved when it yields */
  ucontext_t caller; /* saved by resume(): where yield() goes back to */
  coro_status_t status;
  coro_fn fn;
  void *arg;
  char *stack;
  size_t stack_size;
  unsigned valgrind_stack_id;
#ifdef CORO_ASAN
  void *fake_stack;          /* the coroutine's, while it is switched out */
  const void *caller_bottom; /* the stack it was resumed from */
  size_t caller_size;
#endif
};

/* The coroutine running now, NULL on the thread's own stack: libcopp's
 * this_coroutine. */
static coro_t *this_coro;

static void coro_fail(const char *what) {
  srv_log("%s failed: %s", what, strerror(errno));
  abort();
}

static void coro_entry(unsigned int hi, unsigned int lo) {
  coro_t *co = (coro_t *)(uintptr_t)(((uint64_t)hi << 32) | (uint64_t)lo);
#ifdef CORO_ASAN
  __sanitizer_finish_switch_fiber(NULL, &co->caller_bottom, &co->caller_size);
#endif
  co->fn(co, co->arg);
  co->status = CORO_FINISHED;
#ifdef CORO_ASAN
  /* NULL: this fiber is done, its fake stack goes. */
  __sanitizer_start_switch_fiber(NULL, co->caller_bottom, co->caller_size);
#endif
  setcontext(&co->caller);
  coro_fail("setcontext");
}

coro_t *coro_create(coro_fn fn, void *arg, size_t stack_size) {
  coro_t *co = srv_xcalloc(1, sizeof(*co));
  uintptr_t self = (uintptr_t)co;

  co->fn = fn;
  co->arg = arg;
  co->status = CORO_READY;
  co->stack_size = stack_size;
  co->stack = srv_xmalloc(stack_size);
  co->valgrind_stack_id = VALGRIND_STACK_REGISTER(co->stack, co->stack + stack_size);
  if (getcontext(&co->ctx) != 0)
    coro_fail("getcontext");
  co->ctx.uc_stack.ss_sp = co->stack;
  co->ctx.uc_stack.ss_size = stack_size;
  co->ctx.uc_link = NULL;
  makecontext(&co->ctx, (void (*)(void))coro_entry, 2, (unsigned int)((uint64_t)self >> 32),
              (unsigned int)(self & 0xffffffffu));
  return co;
}

/* Saves the current context as the coroutine's caller and switches to the
 * coroutine's own, until it yields or returns. */
static void coro_switch_in(coro_t *co) {
  coro_t *from = this_coro;
#ifdef CORO_ASAN
  void *caller_fake_stack = NULL;
#endif
  co->status = CORO_RUNNING;
  this_coro = co;
#ifdef CORO_ASAN
  __sanitizer_start_switch_fiber(&caller_fake_stack, co->stack, co->stack_size);
#endif
  if (swapcontext(&co->caller, &co->ctx) != 0)
    coro_fail("swapcontext");
#ifdef CORO_ASAN
  __sanitizer_finish_switch_fiber(caller_fake_stack, NULL, NULL);
#endif
  this_coro = from;
}

int coro_resume(coro_t *co) {
  if (co->status == CORO_RUNNING)
    return CORO_EC_IS_RUNNING;
  if (co->status == CORO_FINISHED)
    return CORO_EC_IS_FINISHED;
  coro_switch_in(co);
  return CORO_EC_SUCCESS;
}

int coro_resume_unchecked(coro_t *co) {
  coro_switch_in(co);
  return CORO_EC_SUCCESS;
}

void coro_yield(void) {
  coro_t *co = this_coro;
  if (co == NULL) {
    srv_log("coro_yield: not in a coroutine");
    abort();
  }
  co->status = CORO_READY;
#ifdef CORO_ASAN
  __sanitizer_start_switch_fiber(&co->fake_stack, co->caller_bottom, co->caller_size);
#endif
  if (swapcontext(&co->ctx, &co->caller) != 0)
    coro_fail("swapcontext");
  /* Resumed: running as this_coro again. */
#ifdef CORO_ASAN
  __sanitizer_finish_switch_fiber(this_coro->fake_stack, &this_coro->caller_bottom,
                                  &this_coro->caller_size);
#endif
}

coro_t *coro_self(void) { return this_coro; }

coro_status_t coro_status(const coro_t *co) { return co->status; }

const char *coro_strerror(int ec) {
  switch (ec) {
  case CORO_EC_SUCCESS:
    return "success";
  case CORO_EC_IS_RUNNING:
    return "the coroutine is running";
  case CORO_EC_IS_FINISHED:
    return "the coroutine has finished";
  default:
    return "unknown coroutine error";
  }
}

void coro_destroy(coro_t *co) {
  if (co->status == CORO_RUNNING) {
    srv_log("coro_destroy: the coroutine is running");
    abort();
  }
  VALGRIND_STACK_DEREGISTER(co->valgrind_stack_id);
  free(co->stack);
  free(co);
}
