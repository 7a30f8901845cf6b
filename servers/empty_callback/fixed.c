/* empty_callback, fixed: the completion stores its result in a shared cell.
 *
 * Mechanism of the bug (seed 000, concurrencpp-X awaiter): every queued write
 * reported back through a nullable slot (the std::function "setter") that both
 * stored the result and resumed the session; once a disconnect had ended the
 * session, the writes cancelled by the socket's close called the empty slot.
 *
 * The fix, as in the seed (shared_ptr<optional<T>> storage): the result
 * storage is a reference-counted cell owned by the session and by every
 * queued write alike.  A completion only stores its result and resumes the
 * session if the session is still there; there is no function pointer on the
 * completion path that can be empty.  The cell is freed by whichever owner
 * lets go of it last.
 *
 * Trigger of the bug: a client that reads nothing while its replies queue,
 * then resets the connection (scenario stall-reset).  What valgrind shows
 * here: no error, `All heap blocks were freed -- no leaks are possible`.
 */
#include <stdlib.h>

#include "../common/await.h"
#include "../common/list.h"
#include "../common/server.h"

typedef struct session {
  uv_tcp_t tcp;
  list_node_t node;
  uv_shutdown_t shutdown;
  result_cell_t *writes; /* shared with every queued write */
  size_t queued;
  size_t echoed;
} session_t;

typedef struct echo_write {
  uv_write_t req;
  uv_buf_t buf;
  result_cell_t *result;
} echo_write_t;

static void on_session_closed(uv_handle_t *handle) {
  free(handle->data);
}

/* The session's coroutine ends: it lets go of the cell, then its socket. */
static void session_end(session_t *s) {
  if (uv_is_closing((uv_handle_t *)&s->tcp))
    return;
  s->writes->waiter = NULL;
  result_cell_unref(s->writes);
  list_remove(&s->node);
  uv_close((uv_handle_t *)&s->tcp, on_session_closed);
}

/* Resume the session with a write's result. */
static void on_write_result(void *waiter, int status) {
  session_t *s = waiter;
  s->queued--;
  if (status < 0)
    session_end(s);
}

static void after_write(uv_write_t *req, int status) {
  echo_write_t *w = (echo_write_t *)req;
  result_cell_t *cell = w->result;
  srv_free_buf(&w->buf);
  free(w);
  result_cell_store(cell, status);
  if (cell->waiter != NULL)
    on_write_result(cell->waiter, status);
  result_cell_unref(cell);
}

static void session_echo(session_t *s, const uv_buf_t *buf, size_t len) {
  echo_write_t *w;
  int rc;
  if (srv_output_full((uv_stream_t *)&s->tcp)) {
    srv_free_buf(buf);
    session_end(s);
    return;
  }
  w = srv_xmalloc(sizeof(*w));
  w->buf = uv_buf_init(buf->base, (unsigned)len);
  w->result = result_cell_ref(s->writes);
  rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &w->buf, 1, after_write);
  if (rc < 0) {
    srv_log("uv_write: %s", uv_err_name(rc));
    result_cell_unref(w->result);
    srv_free_buf(&w->buf);
    free(w);
    session_end(s);
    return;
  }
  s->queued++;
  s->echoed += len;
}

static void after_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  session_end(req->handle->data);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  session_t *s = stream->data;
  if (nread > 0) {
    session_echo(s, buf, (size_t)nread);
    return;
  }
  srv_free_buf(buf);
  if (nread == UV_EOF) {
    uv_read_stop(stream);
    if (uv_shutdown(&s->shutdown, stream, after_shutdown) == 0)
      return;
  }
  if (nread < 0)
    session_end(s);
}

static void on_connection(uv_stream_t *listener, int status) {
  srv_t *srv = listener->data;
  list_node_t *sessions = srv->data;
  session_t *s;

  if (status < 0) {
    srv_log("accept: %s", uv_err_name(status));
    return;
  }
  s = srv_xcalloc(1, sizeof(*s));
  SRV_CHECK(uv_tcp_init(srv->loop, &s->tcp));
  s->tcp.data = s;
  list_push(sessions, &s->node);
  s->writes = result_cell_new(s);
  if (uv_accept(listener, (uv_stream_t *)&s->tcp) < 0 ||
      uv_read_start((uv_stream_t *)&s->tcp, srv_alloc_buf, on_read) < 0)
    session_end(s);
}

static void on_stop(srv_t *srv) {
  list_node_t *sessions = srv->data;
  list_node_t *node, *tmp;
  srv_close_listener(srv, NULL);
  LIST_FOREACH_SAFE(node, tmp, sessions) {
    session_end(LIST_ENTRY(node, session_t, node));
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
