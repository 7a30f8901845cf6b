/* dangling_stack_ref, buggy: a lazy task keeps a reference to a local of the
 * function that made it.
 *
 * Mechanism (seed 002, the dangling reference parameter trap): every echo
 * written is accounted for by a lazy task, `task<size_t> tally(const size_t
 * &written) { co_return written; }`, which does not run when it is made but
 * when the session next wakes up for input.  The write's completion calls
 * tally_write(), the seed's foo(): it passes a reference to its own local to
 * tally(), gets the task back, suspended at its initial suspend point, and
 * returns it.  The local's scope ends with tally_write(); when the next read
 * resumes the task (the seed's bar()), the task reads the dead local.
 *
 * Trigger: a second line sent after the first one's echo came back
 * (scenario ping-pong): the first echo's completion makes the task, the
 * second line's read runs it.
 *
 * What AddressSanitizer shows (detect_stack_use_after_return=1, which this
 * file makes ASan's default): `stack-use-after-return` READ of size 8 in
 * tally_resume (buggy.c) < session_run_tallies < on_read, the address
 * `located in stack of thread T0 at offset 32 in frame tally_write`,
 * variable 'written'.
 *
 * What valgrind shows: nothing, `ERROR SUMMARY: 0 errors`.  The write's
 * completion runs from libuv's pending queue, near the bottom of the stack;
 * the read comes later from inside libuv's poll, whose frame (its epoll event
 * array) covers the dead local's address: memcheck sees a read of live stack,
 * and the stale value only goes into a counter, so no uninitialised value
 * reaches a branch or a system call either.  The echoes are right.  Memcheck
 * cannot see this bug: the pair's detector is AddressSanitizer.
 */
#include <stdlib.h>
#include <string.h>

#include "../common/lines.h"
#include "../common/list.h"
#include "../common/server.h"

/* A lazy task's frame: made suspended, run when resumed. */
typedef struct tally {
  struct tally *next;
  const size_t *written; /* a reference: tally(const size_t &written) */
} tally_t;

typedef struct session {
  uv_tcp_t tcp;
  list_node_t node;
  uv_shutdown_t shutdown;
  tally_t *tallies; /* made, not yet run: oldest first */
  tally_t **tallies_tail;
  size_t bytes_out; /* what the tallies counted */
  lines_t lines;
} session_t;

typedef struct reply {
  uv_write_t req;
  size_t len;
  char data[];
} reply_t;

/* The coroutine: tally(const size_t &written).  Lazy: the body does not run
 * here; the frame keeps the reference. */
static tally_t *tally_new(const size_t *written) {
  tally_t *t = srv_xmalloc(sizeof(*t));
  t->next = NULL;
  t->written = written;
  return t;
}

/* The body, run on resume: co_return written. */
static size_t tally_resume(const tally_t *t) {
  return *t->written;
}

/* The seed's foo(): makes the task from a local and returns it. */
static tally_t *tally_write(size_t len) {
  size_t written = len;
  return tally_new(&written);
}

static void session_defer(session_t *s, tally_t *t) {
  *s->tallies_tail = t;
  s->tallies_tail = &t->next;
}

/* The seed's bar(): resumes every task made since the last wake-up and takes
 * its result. */
static void session_run_tallies(session_t *s) {
  tally_t *t;
  while ((t = s->tallies) != NULL) {
    s->tallies = t->next;
    s->bytes_out += tally_resume(t);
    free(t);
  }
  s->tallies_tail = &s->tallies;
}

static void on_session_closed(uv_handle_t *handle) {
  session_t *s = handle->data;
  tally_t *t;
  /* Tasks never resumed are destroyed unrun. */
  while ((t = s->tallies) != NULL) {
    s->tallies = t->next;
    free(t);
  }
  free(s);
}

static void session_close(session_t *s) {
  if (uv_is_closing((uv_handle_t *)&s->tcp))
    return;
  list_remove(&s->node);
  uv_close((uv_handle_t *)&s->tcp, on_session_closed);
}

static void after_write(uv_write_t *req, int status) {
  reply_t *r = (reply_t *)req;
  session_t *s = req->handle->data;
  if (status == 0)
    session_defer(s, tally_write(r->len));
  else if (status != UV_ECANCELED) {
    srv_log("write: %s", uv_err_name(status));
    session_close(s);
  }
  free(r);
}

static void session_on_line(void *arg, const char *line, size_t len) {
  session_t *s = arg;
  reply_t *r;
  uv_buf_t buf;
  int rc;

  if (uv_is_closing((uv_handle_t *)&s->tcp))
    return;
  if (srv_output_full((uv_stream_t *)&s->tcp)) {
    session_close(s);
    return;
  }
  r = srv_xmalloc(sizeof(*r) + len);
  memcpy(r->data, line, len);
  r->len = len;
  buf = uv_buf_init(r->data, (unsigned)len);
  rc = uv_write(&r->req, (uv_stream_t *)&s->tcp, &buf, 1, after_write);
  if (rc < 0) {
    srv_log("uv_write: %s", uv_err_name(rc));
    free(r);
    session_close(s);
  }
}

static void after_shutdown(uv_shutdown_t *req, int status) {
  session_t *s = req->handle->data;
  if (status < 0 && status != UV_ECANCELED)
    srv_log("shutdown: %s", uv_err_name(status));
  session_close(s);
}

static void session_end_of_input(session_t *s) {
  int rc;
  lines_flush(&s->lines, session_on_line, s);
  if (uv_is_closing((uv_handle_t *)&s->tcp))
    return;
  /* Flush what is queued, then send our FIN and close. */
  rc = uv_shutdown(&s->shutdown, (uv_stream_t *)&s->tcp, after_shutdown);
  if (rc < 0) {
    srv_log("uv_shutdown: %s", uv_err_name(rc));
    session_close(s);
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  session_t *s = stream->data;
  /* Awake: first the accounting deferred since the last read. */
  session_run_tallies(s);
  if (nread > 0)
    lines_feed(&s->lines, buf->base, (size_t)nread, session_on_line, s);
  srv_free_buf(buf);
  if (nread == UV_EOF) {
    uv_read_stop(stream);
    session_end_of_input(s);
  } else if (nread < 0) {
    if (nread != UV_ECONNRESET)
      srv_log("read: %s", uv_err_name((int)nread));
    session_close(s);
  }
}

static void on_connection(uv_stream_t *listener, int status) {
  srv_t *srv = listener->data;
  list_node_t *sessions = srv->data;
  session_t *s;
  int rc;

  if (status < 0) {
    srv_log("accept: %s", uv_err_name(status));
    return;
  }
  s = srv_xcalloc(1, sizeof(*s));
  s->tallies_tail = &s->tallies;
  lines_init(&s->lines);
  SRV_CHECK(uv_tcp_init(srv->loop, &s->tcp));
  s->tcp.data = s;
  list_push(sessions, &s->node);
  rc = uv_accept(listener, (uv_stream_t *)&s->tcp);
  if (rc == 0)
    rc = uv_read_start((uv_stream_t *)&s->tcp, srv_alloc_buf, on_read);
  if (rc < 0) {
    srv_log("accept: %s", uv_err_name(rc));
    session_close(s);
  }
}

static void on_stop(srv_t *srv) {
  list_node_t *sessions = srv->data;
  list_node_t *node, *tmp;
  srv_close_listener(srv, NULL);
  LIST_FOREACH_SAFE(node, tmp, sessions) {
    session_close(LIST_ENTRY(node, session_t, node));
  }
}

#if defined(__SANITIZE_ADDRESS__)
/* Under AddressSanitizer, this pair's detector: a dead frame's locals are
 * only watched with a fake stack, off unless asked for.  ASAN_OPTIONS still
 * overrides it.  Not static: the runtime looks this hook up by name. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "detect_stack_use_after_return=1";
}
#endif

int main(int argc, char **argv) {
  srv_t srv;
  list_node_t sessions;
  list_init(&sessions);
  srv_init(&srv, argc, argv, on_connection, on_stop);
  srv.data = &sessions;
  return srv_run(&srv);
}
