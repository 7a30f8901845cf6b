/* stop_order, fixed: close every socket, then wait.
 *
 * Mechanism of the bug (seed 000, concurrencpp-X tcp_server::stop(), the
 * "wrong stop order" pitfall): the server holds every session's result and
 * waits on each at stop, but it waited BEFORE closing the sessions' sockets.
 * A session only finishes when its socket does, so a client that is connected
 * and idle at stop kept its session, and the wait, pending forever.
 *
 * The fix, the seed's graceful order: cancel the acceptor (the accept loop
 * finishes), close every session's socket (each session finishes in its close
 * callback, interrupting its pending read), then wait on every result.  The
 * wait is the loop's own: on_stop arms it and the last session to finish
 * resumes it; main then frees every held result.
 *
 * Trigger of the bug: clients connected and idle when the stop signal
 * arrives (scenario idle-at-stop-short).  What valgrind shows here: the
 * server logs "stop: waiting for 3 sessions", then "stop: every session has
 * finished", exits 0, and `All heap blocks were freed -- no leaks are
 * possible`.
 */
#include <stdlib.h>

#include "../common/server.h"
#include "../common/task.h"

/* The accept loop's state, as a task. */
typedef struct accept_task {
  task_t task;
  srv_t *srv;
  size_t accepted;
} accept_task_t;

typedef struct server {
  srv_t srv;
  accept_task_t *accept_task; /* accept_task_ = run().run() */
  task_registry_t sessions;   /* sessions_ */
} server_t;

/* A session's state, as a task: it finishes when its socket has closed. */
typedef struct session {
  task_t task;
  uv_tcp_t tcp;
  uv_shutdown_t shutdown;
  struct server *server;
  size_t echoed;
} session_t;

typedef struct echo_write {
  uv_write_t req;
  uv_buf_t buf;
} echo_write_t;

static void on_session_closed(uv_handle_t *handle) {
  session_t *s = handle->data;
  server_t *server = s->server;
  task_finish(&s->task);
  task_registry_release(&server->sessions, &s->task);
}

static void session_close(session_t *s) {
  if (!uv_is_closing((uv_handle_t *)&s->tcp))
    uv_close((uv_handle_t *)&s->tcp, on_session_closed);
}

static void after_write(uv_write_t *req, int status) {
  echo_write_t *w = (echo_write_t *)req;
  session_t *s = req->handle->data;
  srv_free_buf(&w->buf);
  free(w);
  if (status < 0 && status != UV_ECANCELED)
    session_close(s);
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
  rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &w->buf, 1, after_write);
  if (rc < 0) {
    srv_log("uv_write: %s", uv_err_name(rc));
    srv_free_buf(&w->buf);
    free(w);
    session_close(s);
    return;
  }
  s->echoed += len;
}

static void after_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  session_close(req->handle->data);
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
    session_close(s);
}

static void on_connection(uv_stream_t *listener, int status) {
  accept_task_t *a = listener->data;
  session_t *s;

  if (status < 0) {
    srv_log("accept: %s", uv_err_name(status));
    return;
  }
  s = task_spawn(sizeof(*s), "session");
  s->server = a->srv->data;
  task_registry_hold(&s->server->sessions, &s->task);
  SRV_CHECK(uv_tcp_init(a->srv->loop, &s->tcp));
  s->tcp.data = s;
  a->accepted++;
  if (uv_accept(listener, (uv_stream_t *)&s->tcp) < 0 ||
      uv_read_start((uv_stream_t *)&s->tcp, srv_alloc_buf, on_read) < 0)
    session_close(s);
}

static void start_accept_task(srv_t *srv) {
  accept_task_t *a = task_spawn(sizeof(*a), "accept loop");
  ((server_t *)srv->data)->accept_task = a;
  a->srv = srv;
  srv->listener.data = a;
}

static void on_listener_closed(uv_handle_t *handle) {
  accept_task_t *a = handle->data;
  task_finish(&a->task);
}

static void close_every_session(server_t *server) {
  list_node_t *node, *tmp;
  LIST_FOREACH_SAFE(node, tmp, &server->sessions.tasks) {
    session_close(LIST_ENTRY(node, session_t, task.node));
  }
}

/* The stop resumes here once every session task has finished. */
static void on_sessions_finished(task_registry_t *reg, void *arg) {
  (void)reg;
  (void)arg;
  srv_log("stop: every session has finished");
}

/* The stop's wait() on every session's result, as an await on the loop. */
static void wait_every_session(server_t *server) {
  srv_log("stop: waiting for %zu sessions", server->sessions.count);
  task_registry_await_empty(&server->sessions, on_sessions_finished, server);
}

static void on_stop(srv_t *srv) {
  server_t *server = srv->data;
  /* Cancel the acceptor, close every session's socket, then wait for every
   * session to finish; main frees each result once the loop has run dry. */
  srv_close_listener(srv, on_listener_closed);
  close_every_session(server);
  wait_every_session(server);
}

int main(int argc, char **argv) {
  server_t server;
  int rc;
  task_registry_init(&server.sessions);
  srv_init(&server.srv, argc, argv, on_connection, on_stop);
  server.srv.data = &server;
  start_accept_task(&server.srv);
  rc = srv_run(&server.srv);
  if (task_wait_release(&server.accept_task->task) != 0 ||
      task_registry_wait_all(&server.sessions) != 0)
    rc = 1;
  return rc;
}
