/* Stackful coroutines on ucontext: the C counterpart of libcopp's
 * coroutine_context (seed 003).
 *
 * A coroutine runs its function on its own malloc'd stack.  resume() switches
 * into it and saves the caller's context, the one yield() and the end of the
 * function switch back to.  Its status is READY (made, or suspended in
 * yield()), RUNNING (between a resume() and the next yield()) or FINISHED
 * (its function has returned).
 *
 * coro_resume() is libcopp after the seed's patch: a coroutine already
 * switched into can only be left by yield(), so resuming a RUNNING one is
 * refused (CORO_EC_IS_RUNNING, libcopp's COPP_EC_IS_RUNNING), as is resuming a
 * FINISHED one.  coro_resume_unchecked() is libcopp before it: it switches
 * whatever the status.  Called from inside the running coroutine, it saves
 * the coroutine's own context as its caller, over the real caller's, and
 * switches to the coroutine's last yield point, whose frames the running
 * code has since reused: control can never get back to the outer caller.
 *
 * Each stack is registered with valgrind (VALGRIND_STACK_REGISTER) so that
 * memcheck knows the switches for stack switches, and every switch is
 * announced to AddressSanitizer (__sanitizer_start_switch_fiber /
 * __sanitizer_finish_switch_fiber) when it is built in.
 */
#ifndef SERVERS_COMMON_CORO_H
#define SERVERS_COMMON_CORO_H

#include <stddef.h>

#define CORO_STACK_SIZE (64u << 10)

#define CORO_EC_SUCCESS 0
#define CORO_EC_IS_RUNNING (-1)  /* resume() of the running coroutine */
#define CORO_EC_IS_FINISHED (-2) /* resume() of a coroutine that has returned */

typedef enum coro_status {
  CORO_READY,
  CORO_RUNNING,
  CORO_FINISHED
} coro_status_t;

typedef struct coro coro_t;
typedef void (*coro_fn)(coro_t *co, void *arg);

/* Makes a coroutine, READY; fn(co, arg) runs at the first resume().  Exits
 * with status 1 if it cannot be made. */
coro_t *coro_create(coro_fn fn, void *arg, size_t stack_size);
/* Switches into the coroutine until it yields or returns: CORO_EC_SUCCESS,
 * or CORO_EC_IS_RUNNING / CORO_EC_IS_FINISHED and nothing happens. */
int coro_resume(coro_t *co);
/* The same switch without the status check (libcopp before the patch). */
int coro_resume_unchecked(coro_t *co);
/* From inside a coroutine: back to whoever resumed it (libcopp's
 * this_coroutine::yield()). */
void coro_yield(void);
/* The coroutine running now, NULL outside any. */
coro_t *coro_self(void);
coro_status_t coro_status(const coro_t *co);
const char *coro_strerror(int ec);
/* Frees a coroutine that is not running (READY or FINISHED). */
void coro_destroy(coro_t *co);

#endif
