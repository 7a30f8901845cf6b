/* unguarded_registry, buggy: loop threads share a session registry unlocked.
 *
 * Mechanism (seed 000, concurrencpp-X tcp_server: its fix saves every
 * session's result<void> in sessions_, and the write-up's last pitfall is
 * "saving the result<void> lacks mutex protection; data race at stop"): the
 * server runs its sessions on WORKERS loop threads, each with its own
 * uv_loop_t; the main loop accepts and hands each connection, round robin, to
 * a worker (a locked handoff queue and a uv_async_t wakeup per worker; the
 * socket moves as a dup'd descriptor, opened on the worker's loop with
 * uv_tcp_open).  Every worker saves its sessions' results in ONE registry,
 * sessions_, removes them when they finish and walks it at stop to close its
 * own sessions, and none of that holds a lock: two threads read and write the
 * same list (its head and its count) with nothing ordering them.  Stop is
 * otherwise graceful: close the listener, tell every worker (its wakeup),
 * each closes its sessions and its wakeup, main joins the threads, closes
 * every loop and waits on every result.
 *
 * Trigger: connections served by both workers (scenario two-workers: four
 * connections, so each worker registers two sessions).  The race is there
 * whatever the timing: no lock, no join orders one worker's registration
 * before the other's.
 *
 * What valgrind shows: helgrind, "Possible data race during read of size 8"
 * (and writes) on the registry by one worker thread, conflicting with the
 * other's previous write, at list_push < task_registry_hold <
 * session_register; DRD, "Conflicting load by thread N" and "Conflicting
 * store" at the same frames.  Every run (which worker is second, #2 or #3,
 * varies).  Memcheck and ASan see nothing in practice: the list is corrupted
 * only if a thread switch falls inside the few instructions that race.
 *
 * Deterministic: at stop each worker picks its sessions out of the registry
 * first and closes them after.  When the walk closed each session as it went,
 * it made system calls between two nodes, where the other worker could run
 * and unlink the very node the walk was to visit next; the walk then followed
 * that node's link to itself for ever.  That was a hang instead of the race's
 * report, in 4 of 714 runs under helgrind and DRD with a busy core (the new
 * walk: none in 600 runs, interleaved with 600 of the old).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "../common/list.h"
#include "../common/server.h"
#include "../common/task.h"

#define WORKERS 2

typedef struct server server_t;

/* A loop thread: its own loop, fed with connections by the main loop. */
typedef struct worker {
  server_t *server;
  int id;
  uv_loop_t loop;
  uv_thread_t thread;
  uv_async_t wakeup;
  uv_mutex_t lock;      /* guards handoffs and stopping */
  list_node_t handoffs; /* accepted sockets not yet taken */
  int stopping;
} worker_t;

struct server {
  srv_t srv;
  worker_t workers[WORKERS];
  size_t accepted;
  task_registry_t sessions; /* sessions_: every worker's sessions */
};

/* An accepted socket on its way from the main loop to a worker. */
typedef struct handoff {
  list_node_t node;
  uv_os_sock_t fd;
} handoff_t;

/* A session's state, as a task: it finishes when its socket has closed. */
typedef struct session {
  task_t task;
  uv_tcp_t tcp;
  uv_shutdown_t shutdown;
  worker_t *worker;
  list_node_t closing; /* in its worker's sessions to close, at stop */
  size_t echoed;
} session_t;

typedef struct echo_write {
  uv_write_t req;
  uv_buf_t buf;
} echo_write_t;

/* Saves the session's result in the shared registry, on the session's own
 * loop thread, while the other workers do the same. */
static void session_register(session_t *s) {
  server_t *server = s->worker->server;
  task_registry_hold(&server->sessions, &s->task);
}

/* The session has finished: wait on its result, which frees it. */
static void session_unregister(session_t *s) {
  server_t *server = s->worker->server;
  task_registry_release(&server->sessions, &s->task);
}

static void on_session_closed(uv_handle_t *handle) {
  session_t *s = handle->data;
  task_finish(&s->task);
  session_unregister(s);
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

/* On the worker's thread: a session for a socket the main loop accepted. */
static void session_start(worker_t *w, uv_os_sock_t fd) {
  session_t *s = task_spawn(sizeof(*s), "session");
  int rc;
  s->worker = w;
  session_register(s);
  SRV_CHECK(uv_tcp_init(&w->loop, &s->tcp));
  s->tcp.data = s;
  rc = uv_tcp_open(&s->tcp, fd);
  if (rc < 0) {
    srv_log("uv_tcp_open: %s", uv_err_name(rc));
    close(fd);
    session_close(s);
    return;
  }
  rc = uv_read_start((uv_stream_t *)&s->tcp, srv_alloc_buf, on_read);
  if (rc < 0) {
    srv_log("uv_read_start: %s", uv_err_name(rc));
    session_close(s);
  }
}

/* At stop, on the worker's thread: close this worker's sessions, found in
 * the shared registry (the seed's stop() walking sessions_).  The walk only
 * picks them out, and they are closed after it: closing a socket makes
 * system calls, where the other worker may run meanwhile. */
static void worker_close_sessions(worker_t *w) {
  server_t *server = w->server;
  list_node_t mine, *node, *tmp;
  list_init(&mine);
  LIST_FOREACH_SAFE(node, tmp, &server->sessions.tasks) {
    session_t *s = LIST_ENTRY(node, session_t, task.node);
    if (s->worker == w)
      list_push(&mine, &s->closing);
  }
  LIST_FOREACH_SAFE(node, tmp, &mine) {
    list_remove(node);
    session_close(LIST_ENTRY(node, session_t, closing));
  }
}

/* The worker's wakeup: take the sockets handed over, then stop if told to. */
static void on_wakeup(uv_async_t *async) {
  worker_t *w = async->data;
  list_node_t taken, *node, *tmp;
  int stopping;

  list_init(&taken);
  uv_mutex_lock(&w->lock);
  LIST_FOREACH_SAFE(node, tmp, &w->handoffs) {
    list_remove(node);
    list_push(&taken, node);
  }
  stopping = w->stopping;
  uv_mutex_unlock(&w->lock);

  LIST_FOREACH_SAFE(node, tmp, &taken) {
    handoff_t *h = LIST_ENTRY(node, handoff_t, node);
    list_remove(node);
    session_start(w, h->fd);
    free(h);
  }
  if (stopping) {
    worker_close_sessions(w);
    uv_close((uv_handle_t *)&w->wakeup, NULL);
  }
}

static void worker_main(void *arg) {
  worker_t *w = arg;
  int rc = uv_run(&w->loop, UV_RUN_DEFAULT);
  if (rc != 0)
    srv_log("worker %d: uv_run returned %d with handles still active", w->id, rc);
}

/* On the main loop: queue the socket for the worker and wake it up. */
static void worker_handoff(worker_t *w, uv_os_sock_t fd) {
  handoff_t *h = srv_xmalloc(sizeof(*h));
  h->fd = fd;
  uv_mutex_lock(&w->lock);
  list_push(&w->handoffs, &h->node);
  uv_mutex_unlock(&w->lock);
  SRV_CHECK(uv_async_send(&w->wakeup));
}

static void workers_start(server_t *server) {
  sigset_t all, saved;
  int rc;

  /* The threads inherit a mask that blocks every signal: SIGTERM and SIGINT
   * reach the main thread, whose loop watches them. */
  sigfillset(&all);
  rc = pthread_sigmask(SIG_BLOCK, &all, &saved);
  if (rc != 0)
    srv_fatal("pthread_sigmask", uv_translate_sys_error(rc));
  for (int i = 0; i < WORKERS; i++) {
    worker_t *w = &server->workers[i];
    w->server = server;
    w->id = i + 1;
    list_init(&w->handoffs);
    SRV_CHECK(uv_loop_init(&w->loop));
    SRV_CHECK(uv_mutex_init(&w->lock));
    SRV_CHECK(uv_async_init(&w->loop, &w->wakeup, on_wakeup));
    w->wakeup.data = w;
    SRV_CHECK(uv_thread_create(&w->thread, worker_main, w));
  }
  rc = pthread_sigmask(SIG_SETMASK, &saved, NULL);
  if (rc != 0)
    srv_fatal("pthread_sigmask", uv_translate_sys_error(rc));
}

/* After the main loop has stopped: join every worker, close its loop. */
static int workers_join(server_t *server) {
  int status = 0;
  for (int i = 0; i < WORKERS; i++) {
    worker_t *w = &server->workers[i];
    int rc;
    SRV_CHECK(uv_thread_join(&w->thread));
    rc = uv_loop_close(&w->loop);
    if (rc != 0) {
      srv_log("worker %d: uv_loop_close failed: %s", w->id, uv_err_name(rc));
      status = 1;
    }
    if (!list_empty(&w->handoffs)) {
      srv_log("worker %d: sockets handed over but never taken", w->id);
      status = 1;
    }
    uv_mutex_destroy(&w->lock);
  }
  srv_log("stop: %d workers joined, their loops closed", WORKERS);
  return status;
}

static void on_accepted_closed(uv_handle_t *handle) { free(handle); }

static void on_connection(uv_stream_t *listener, int status) {
  srv_t *srv = listener->data;
  server_t *server = srv->data;
  uv_tcp_t *conn;
  uv_os_fd_t fd;
  int rc;

  if (status < 0) {
    srv_log("accept: %s", uv_err_name(status));
    return;
  }
  conn = srv_xmalloc(sizeof(*conn));
  SRV_CHECK(uv_tcp_init(srv->loop, conn));
  rc = uv_accept(listener, (uv_stream_t *)conn);
  if (rc == 0)
    rc = uv_fileno((uv_handle_t *)conn, &fd);
  /* The worker gets its own descriptor: this one goes with the handle. */
  if (rc == 0 && (fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
    rc = uv_translate_sys_error(errno);
  uv_close((uv_handle_t *)conn, on_accepted_closed);
  if (rc < 0) {
    srv_log("accept: %s", uv_err_name(rc));
    return;
  }
  worker_handoff(&server->workers[server->accepted++ % WORKERS], fd);
}

static void on_stop(srv_t *srv) {
  server_t *server = srv->data;
  srv_close_listener(srv, NULL);
  for (int i = 0; i < WORKERS; i++) {
    worker_t *w = &server->workers[i];
    uv_mutex_lock(&w->lock);
    w->stopping = 1;
    uv_mutex_unlock(&w->lock);
    SRV_CHECK(uv_async_send(&w->wakeup));
  }
  srv_log("stop: told %d workers to close their sessions", WORKERS);
}

int main(int argc, char **argv) {
  server_t *server = srv_xcalloc(1, sizeof(*server));
  int rc;
  task_registry_init(&server->sessions);
  srv_init(&server->srv, argc, argv, on_connection, on_stop);
  server->srv.data = server;
  workers_start(server);
  rc = srv_run(&server->srv);
  if (workers_join(server) != 0 || task_registry_wait_all(&server->sessions) != 0)
    rc = 1;
  free(server);
  return rc;
}
