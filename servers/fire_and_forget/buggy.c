/* fire_and_forget, buggy: task state that nobody holds is never freed.
 *
 * Mechanism (seeds 000 and 001, concurrencpp-X tcp_echo_server): the accept
 * loop and every session run as tasks, started like `run().run()` and
 * `session(socket).run()`: the handle to each task's result is dropped on the
 * spot.  With the handles gone nobody can reach the tasks again: at stop the
 * server cannot close the sessions' sockets in order nor wait for the tasks,
 * so it tears the loop down (every handle closed, no owner told), and every
 * task still suspended at that moment keeps its state forever.
 *
 * Trigger: sessions connected when the stop signal arrives (scenario
 * sessions-at-stop).  A session that ends before the stop frees itself.
 *
 * What valgrind shows: the server exits 0, but `in use at exit: N bytes in
 * S+1 blocks` for S sessions alive at stop: S definitely-lost session states
 * (malloc < task_spawn < on_connection) and the accept loop's (malloc <
 * task_spawn < start_accept_task).  The leak grows with S: the per-session
 * state times the sessions alive, plus the accept loop's.
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

/* A session's state, as a task: it finishes when its socket has closed. */
typedef struct session {
  task_t task;
  uv_tcp_t tcp;
  uv_shutdown_t shutdown;
  size_t echoed;
} session_t;

typedef struct echo_write {
  uv_write_t req;
  uv_buf_t buf;
} echo_write_t;

static void on_session_closed(uv_handle_t *handle) {
  session_t *s = handle->data;
  task_finish(&s->task);
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
  task_detach(&s->task);
  SRV_CHECK(uv_tcp_init(a->srv->loop, &s->tcp));
  s->tcp.data = s;
  a->accepted++;
  if (uv_accept(listener, (uv_stream_t *)&s->tcp) < 0 ||
      uv_read_start((uv_stream_t *)&s->tcp, srv_alloc_buf, on_read) < 0)
    session_close(s);
}

static void start_accept_task(srv_t *srv) {
  accept_task_t *a = task_spawn(sizeof(*a), "accept loop");
  task_detach(&a->task);
  a->srv = srv;
  srv->listener.data = a;
}

static void on_stop(srv_t *srv) {
  /* Nothing holds the tasks, so nothing can be closed in order or waited
   * for: tear the loop down. */
  srv_close_all_handles(srv);
}

int main(int argc, char **argv) {
  srv_t srv;
  srv_init(&srv, argc, argv, on_connection, on_stop);
  start_accept_task(&srv);
  return srv_run(&srv);
}
