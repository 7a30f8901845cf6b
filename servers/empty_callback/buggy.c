/* empty_callback, buggy: a completion calls through an empty callback slot.
 *
 * Mechanism (seed 000, concurrencpp-X awaiter): every queued echo write
 * reports back through the session's awaiter, a nullable slot (the
 * std::function<void(T)> "setter") that both stores the result and resumes
 * the session.  When the peer disconnects, the session ends: its awaiter goes
 * away with it and the slot is emptied.  The writes still queued are then
 * cancelled by the socket's close, complete with UV_ECANCELED, and each
 * completion calls the slot as asio's binder1 did: an empty one.
 *
 * This C model calls the NULL function pointer rather than modelling
 * std::bad_function_call: the process dies of SIGSEGV, not SIGABRT.
 *
 * Trigger: a client that reads nothing while its replies queue in the server,
 * then resets the connection (scenario stall-reset).
 *
 * What valgrind shows: `Jump to the invalid address stated on the next line`
 * (InvalidJump) at 0x0, called from callback_awaiter_complete <
 * after_write (buggy.c), then `Process terminating with default action of
 * signal 11 (SIGSEGV)`.
 */
#include <stdlib.h>

#include "../common/await.h"
#include "../common/list.h"
#include "../common/server.h"

typedef struct session {
  uv_tcp_t tcp;
  list_node_t node;
  uv_shutdown_t shutdown;
  callback_awaiter_t writes; /* resumed by every write's completion */
  size_t queued;
  size_t echoed;
} session_t;

typedef struct echo_write {
  uv_write_t req;
  uv_buf_t buf;
  session_t *session;
} echo_write_t;

static void on_session_closed(uv_handle_t *handle) {
  free(handle->data);
}

/* The session's coroutine ends: its awaiter is destroyed, then its socket. */
static void session_end(session_t *s) {
  if (uv_is_closing((uv_handle_t *)&s->tcp))
    return;
  callback_awaiter_reset(&s->writes);
  list_remove(&s->node);
  uv_close((uv_handle_t *)&s->tcp, on_session_closed);
}

/* The awaiter's setter: store the write's result and resume the session. */
static void on_write_result(void *waiter, int status) {
  session_t *s = waiter;
  s->queued--;
  if (status < 0)
    session_end(s);
}

static void after_write(uv_write_t *req, int status) {
  echo_write_t *w = (echo_write_t *)req;
  session_t *s = w->session;
  srv_free_buf(&w->buf);
  free(w);
  callback_awaiter_complete(&s->writes, status);
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
  w->session = s;
  rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &w->buf, 1, after_write);
  if (rc < 0) {
    srv_log("uv_write: %s", uv_err_name(rc));
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
  callback_awaiter_set(&s->writes, on_write_result, s);
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
