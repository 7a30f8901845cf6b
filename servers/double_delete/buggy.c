/* double_delete, buggy: the read path and the write path both free the session.
 *
 * Mechanism (seed 004, the asio async echo server's Session): the session is
 * full duplex, its read stays armed while its echoes are queued, and each
 * path owns the session on error: the read-error handler and the write-error
 * handler both do `delete this` (session_delete: close the socket if it is
 * still open, free the memory).  When the peer resets while a reply is
 * queued, the read fails first and deletes; the socket's close then cancels
 * the queued writes, and the first cancelled write deletes again.
 *
 * Trigger: a client that reads nothing while its replies queue in the server,
 * then resets the connection (scenario stall-reset).
 *
 * What valgrind shows: invalid reads and writes of the freed session by
 * libuv (the handle's memory was released before its close callback), an
 * `Invalid read` in session_delete, then `Invalid free() / delete / delete[]
 * / realloc()` (InvalidFree) at free < session_delete < after_write, the block
 * having been freed at session_delete < on_read.  Natively glibc aborts:
 * `free(): double free detected in tcache 2` (SIGABRT).
 */
#include <stdlib.h>

#include "../common/list.h"
#include "../common/server.h"

typedef struct session {
  size_t bytes_in;
  size_t bytes_out;
  list_node_t node;
  uv_tcp_t tcp;
} session_t;

typedef struct echo_write {
  uv_write_t req;
  uv_buf_t buf;
  session_t *session;
} echo_write_t;

/* `delete this`: the socket closes with the session. */
static void session_delete(session_t *s) {
  if (!uv_is_closing((uv_handle_t *)&s->tcp)) {
    list_remove(&s->node);
    uv_close((uv_handle_t *)&s->tcp, NULL);
  }
  free(s);
}

static void after_write(uv_write_t *req, int status) {
  echo_write_t *w = (echo_write_t *)req;
  session_t *s = w->session;
  size_t len = w->buf.len;
  srv_free_buf(&w->buf);
  free(w);
  if (status < 0) {
    if (status != UV_ECANCELED)
      srv_log("write: %s", uv_err_name(status));
    session_delete(s);
    return;
  }
  s->bytes_out += len;
}

static void session_echo(session_t *s, const uv_buf_t *buf, size_t len) {
  echo_write_t *w;
  int rc;
  if (srv_output_full((uv_stream_t *)&s->tcp)) {
    srv_free_buf(buf);
    session_delete(s);
    return;
  }
  w = srv_xmalloc(sizeof(*w));
  w->buf = uv_buf_init(buf->base, (unsigned)len);
  w->session = s;
  rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &w->buf, 1, after_write);
  if (rc < 0) {
    srv_log("uv_write: %s", uv_err_name(rc));
    srv_free_buf(&w->buf);
    free(w);
    session_delete(s);
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  session_t *s = stream->data;
  if (nread > 0) {
    s->bytes_in += (size_t)nread;
    session_echo(s, buf, (size_t)nread);
    return;
  }
  srv_free_buf(buf);
  if (nread < 0) {
    if (nread != UV_EOF && nread != UV_ECONNRESET)
      srv_log("read: %s", uv_err_name((int)nread));
    session_delete(s);
  }
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
  if (uv_accept(listener, (uv_stream_t *)&s->tcp) < 0 ||
      uv_read_start((uv_stream_t *)&s->tcp, srv_alloc_buf, on_read) < 0)
    session_delete(s);
}

static void on_stop(srv_t *srv) {
  list_node_t *sessions = srv->data;
  list_node_t *node, *tmp;
  srv_close_listener(srv, NULL);
  LIST_FOREACH_SAFE(node, tmp, sessions) {
    session_delete(LIST_ENTRY(node, session_t, node));
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
