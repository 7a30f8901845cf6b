/* captured_context, buggy: a continuation reads captures freed at its first
 * suspension.
 *
 * Mechanism (seed 002, the coroutine lambda capture trap): every line a
 * session reads is answered by a coroutine lambda, in C++ terms
 * `[s, seq, len]() -> task<> { co_await write(echo); account(s, seq, len); }`.
 * The line handler builds the lambda object (its captures, on the heap like
 * the handler's own coroutine frame) and calls it; the call returns at the
 * lambda's first suspension, the echo's write.  The handler's scope ends
 * there and destroys the lambda object, but the lambda's frame only holds a
 * pointer to it (`this`): when the write completes, the rest of the body
 * reads its captures through that pointer, from freed memory.
 *
 * Trigger: any line and its echo (scenario echo).
 *
 * What valgrind shows: `Invalid read of size 8` (InvalidRead) at
 * reply_resume (buggy.c), called by libuv's write completion, `Address 0x...
 * is 0 bytes inside a block of size 24 free'd` at free < session_on_line
 * (buggy.c) < lines_feed < on_read, alloc'd at malloc < srv_xmalloc <
 * session_on_line; the same three reads (session, seq, len) for every line.
 * Memcheck leaves a freed block as it was, so the stale captures still hold
 * the right values and every echo comes back intact.  AddressSanitizer:
 * `heap-use-after-free` READ of size 8 in reply_resume (buggy.c), the block
 * freed by session_on_line; it stops the server at the first line.
 */
#include <stdlib.h>
#include <string.h>

#include "../common/lines.h"
#include "../common/list.h"
#include "../common/server.h"

typedef struct session {
  uv_tcp_t tcp;
  list_node_t node;
  uv_shutdown_t shutdown;
  size_t lines_in;  /* lines read */
  size_t lines_out; /* the last line whose echo was written */
  size_t bytes_out;
  lines_t lines;
} session_t;

/* The lambda object: what it captured, by value. */
typedef struct captures {
  session_t *session;
  size_t seq;
  size_t len;
} captures_t;

/* The lambda's coroutine frame: its `this` and the write it awaits. */
typedef struct reply {
  uv_write_t req;
  const captures_t *self; /* the lambda object, not a copy of it */
  char data[];
} reply_t;

static void on_session_closed(uv_handle_t *handle) {
  free(handle->data);
}

static void session_close(session_t *s) {
  if (uv_is_closing((uv_handle_t *)&s->tcp))
    return;
  list_remove(&s->node);
  uv_close((uv_handle_t *)&s->tcp, on_session_closed);
}

/* The lambda's body after its co_await: account for the echo written. */
static void reply_resume(uv_write_t *req, int status) {
  reply_t *r = (reply_t *)req;
  const captures_t *self = r->self;
  session_t *s = self->session;
  if (status == 0) {
    s->lines_out = self->seq;
    s->bytes_out += self->len;
  } else if (status != UV_ECANCELED) {
    srv_log("write: %s", uv_err_name(status));
    session_close(s);
  }
  free(r);
}

/* Calling the lambda: its body runs up to its first suspension, the write. */
static void reply_start(const captures_t *self, const char *line) {
  session_t *s = self->session;
  reply_t *r = srv_xmalloc(sizeof(*r) + self->len);
  uv_buf_t buf;
  int rc;

  r->self = self;
  memcpy(r->data, line, self->len);
  buf = uv_buf_init(r->data, (unsigned)self->len);
  rc = uv_write(&r->req, (uv_stream_t *)&s->tcp, &buf, 1, reply_resume);
  if (rc < 0) {
    srv_log("uv_write: %s", uv_err_name(rc));
    free(r);
    session_close(s);
  }
}

/* The line handler: builds the lambda and calls it. */
static void session_on_line(void *arg, const char *line, size_t len) {
  session_t *s = arg;
  captures_t *callback;

  if (uv_is_closing((uv_handle_t *)&s->tcp))
    return;
  if (srv_output_full((uv_stream_t *)&s->tcp)) {
    session_close(s);
    return;
  }
  callback = srv_xmalloc(sizeof(*callback));
  callback->session = s;
  callback->seq = ++s->lines_in;
  callback->len = len;
  reply_start(callback, line);
  /* The call has returned at the lambda's first suspension: the handler's
   * scope ends, and the lambda object with it. */
  free(callback);
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

int main(int argc, char **argv) {
  srv_t srv;
  list_node_t sessions;
  list_init(&sessions);
  srv_init(&srv, argc, argv, on_connection, on_stop);
  srv.data = &sessions;
  return srv_run(&srv);
}
