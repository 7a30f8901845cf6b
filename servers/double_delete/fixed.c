/* double_delete, fixed: every pending operation holds a reference.
 *
 * Mechanism of the bug (seed 004, the asio async echo server's Session): a
 * full-duplex session whose read-error handler and write-error handler both
 * did `delete this`; a peer reset while a reply was queued ran both.
 *
 * The fix, as the seed's follow-up does with shared_ptr / shared_from_this:
 * the session is reference counted.  The socket holds one reference, dropped
 * in its close callback (libuv frees a handle's memory only there), and every
 * queued write holds one, dropped when it completes.  Error paths only close
 * the socket; the memory goes with the last reference, whichever path lets go
 * of it last.
 *
 * Trigger of the bug: a client that reads nothing while its replies queue,
 * then resets the connection (scenario stall-reset).  What valgrind shows
 * here: no error, `All heap blocks were freed -- no leaks are possible`.
 */
#include <stdlib.h>

#include "../common/list.h"
#include "../common/server.h"

typedef struct session {
  size_t bytes_in;
  size_t bytes_out;
  int refs; /* the socket's, plus one per queued write */
  list_node_t node;
  uv_tcp_t tcp;
} session_t;

typedef struct echo_write {
  uv_write_t req;
  uv_buf_t buf;
  session_t *session;
} echo_write_t;

static session_t *session_ref(session_t *s) {
  s->refs++;
  return s;
}

static void session_release(session_t *s) {
  if (--s->refs == 0)
    free(s);
}

static void on_session_closed(uv_handle_t *handle) {
  session_release(handle->data);
}

/* Any path may close; only the last reference frees. */
static void session_close(session_t *s) {
  if (!uv_is_closing((uv_handle_t *)&s->tcp)) {
    list_remove(&s->node);
    uv_close((uv_handle_t *)&s->tcp, on_session_closed);
  }
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
    session_close(s);
  } else {
    s->bytes_out += len;
  }
  session_release(s);
}

static void session_echo(session_t *s, const uv_buf_t *buf, size_t len) {
  echo_write_t *w;
  int rc;
  if (srv_output_full((uv_stream_t *)&s->tcp)) {
    srv_free_buf(buf);
    session_close(s);
    return;
  }
  w = srv_xmalloc(sizeof(*w));
  w->buf = uv_buf_init(buf->base, (unsigned)len);
  w->session = session_ref(s);
  rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &w->buf, 1, after_write);
  if (rc < 0) {
    srv_log("uv_write: %s", uv_err_name(rc));
    srv_free_buf(&w->buf);
    free(w);
    session_close(s);
    session_release(s);
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
    session_close(s);
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
  s->refs = 1;
  SRV_CHECK(uv_tcp_init(srv->loop, &s->tcp));
  s->tcp.data = s;
  list_push(sessions, &s->node);
  if (uv_accept(listener, (uv_stream_t *)&s->tcp) < 0 ||
      uv_read_start((uv_stream_t *)&s->tcp, srv_alloc_buf, on_read) < 0)
    session_close(s);
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
