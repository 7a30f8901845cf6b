/* A correct line-echo server: the reference every scenario must judge clean.
 *
 * Each complete line a client sends comes back as it was sent.  A partial
 * line is echoed when the client half-closes, then the server closes its
 * side.  A client that stops reading while the server still has more than
 * SRV_OUTPUT_LIMIT bytes of replies queued for it is disconnected, like
 * redis's client-output-buffer-limit: reads stay armed and memory stays
 * bounded.  A
 * line longer than MAX_LINE is echoed in MAX_LINE pieces.
 *
 * Stop (SIGTERM/SIGINT): close the listener, close every session (queued
 * writes complete with UV_ECANCELED and free their memory), let the loop run
 * dry; uv_loop_close() must then return 0.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../common/list.h"
#include "../common/server.h"

#define MAX_LINE 65536

typedef struct echo_server {
  srv_t srv;
  list_node_t sessions;
} echo_server_t;

typedef struct session {
  uv_tcp_t tcp;
  list_node_t node;
  uv_shutdown_t shutdown;
  size_t line_len;
  char line[MAX_LINE];
} session_t;

typedef struct reply {
  uv_write_t req;
  size_t len;
  char data[];
} reply_t;

static void on_session_closed(uv_handle_t *handle) {
  session_t *s = handle->data;
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
  free(r);
  if (status < 0 && status != UV_ECANCELED) {
    srv_log("write: %s", uv_err_name(status));
    session_close(s);
  }
}

static void session_send(session_t *s, const char *data, size_t len) {
  reply_t *r;
  uv_buf_t buf;
  int rc;

  if (srv_output_full((uv_stream_t *)&s->tcp)) {
    session_close(s);
    return;
  }
  r = srv_xmalloc(sizeof(*r) + len);
  memcpy(r->data, data, len);
  r->len = len;
  buf = uv_buf_init(r->data, (unsigned)len);
  rc = uv_write(&r->req, (uv_stream_t *)&s->tcp, &buf, 1, after_write);
  if (rc < 0) {
    srv_log("uv_write: %s", uv_err_name(rc));
    free(r);
    session_close(s);
  }
}

static void session_feed(session_t *s, const char *data, size_t len) {
  for (size_t i = 0; i < len && !uv_is_closing((uv_handle_t *)&s->tcp); i++) {
    s->line[s->line_len++] = data[i];
    if (data[i] == '\n' || s->line_len == MAX_LINE) {
      session_send(s, s->line, s->line_len);
      s->line_len = 0;
    }
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
  if (s->line_len > 0) {
    session_send(s, s->line, s->line_len);
    s->line_len = 0;
  }
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
    session_feed(s, buf->base, (size_t)nread);
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
  echo_server_t *server = srv->data;
  session_t *s;
  int rc;

  if (status < 0) {
    srv_log("accept: %s", uv_err_name(status));
    return;
  }
  s = srv_xmalloc(sizeof(*s));
  s->line_len = 0;
  SRV_CHECK(uv_tcp_init(srv->loop, &s->tcp));
  s->tcp.data = s;
  list_push(&server->sessions, &s->node);
  rc = uv_accept(listener, (uv_stream_t *)&s->tcp);
  if (rc == 0)
    rc = uv_read_start((uv_stream_t *)&s->tcp, srv_alloc_buf, on_read);
  if (rc < 0) {
    srv_log("accept: %s", uv_err_name(rc));
    session_close(s);
  }
}

static void on_stop(srv_t *srv) {
  echo_server_t *server = srv->data;
  list_node_t *node, *tmp;
  srv_close_listener(srv, NULL);
  LIST_FOREACH_SAFE(node, tmp, &server->sessions) {
    session_close(LIST_ENTRY(node, session_t, node));
  }
}

int main(int argc, char **argv) {
  echo_server_t server;
  list_init(&server.sessions);
  srv_init(&server.srv, argc, argv, on_connection, on_stop);
  server.srv.data = &server;
  return srv_run(&server.srv);
}
