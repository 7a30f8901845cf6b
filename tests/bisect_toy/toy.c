/* toy: a small libuv line-echo server, the repository that `harness bisect`
 * is tested on.  tests/test_bisect.py commits this file, then seven edits of
 * it; one of them (commit 5) makes a reset session leak its read buffer.
 *
 *   toy PORT
 *
 * It listens on 127.0.0.1:PORT (0 picks a free port), announces
 * "listening on 127.0.0.1:PORT" on stdout and echoes what each client sends.
 * On SIGTERM or SIGINT it closes the listener, the signal handles and every
 * session, lets the loop run dry, and exits 0 only if uv_loop_close()
 * succeeds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define BUF_SIZE 256

#define CHECK(expr)                                                      \
  do {                                                                   \
    int rc_ = (expr);                                                    \
    if (rc_ < 0) {                                                       \
      fprintf(stderr, "toy: %s: %s\n", #expr, uv_err_name(rc_));         \
      exit(1);                                                           \
    }                                                                    \
  } while (0)

typedef struct link {
  struct link *prev, *next;
} link_t;

typedef struct session {
  link_t link; /* first: a link_t * is its session */
  uv_tcp_t tcp;
  char *buf;
} session_t;

typedef struct server {
  uv_tcp_t listener;
  uv_signal_t sigterm, sigint;
  link_t sessions;
} server_t;

typedef struct reply {
  uv_write_t req; /* first: freed through the request */
  char data[];
} reply_t;

static void *xmalloc(size_t size) {
  void *p = malloc(size);
  if (p == NULL) {
    fprintf(stderr, "toy: out of memory\n");
    exit(1);
  }
  return p;
}

static void on_session_closed(uv_handle_t *handle) {
  session_t *s = handle->data;
  free(s->buf);
  free(s);
}

static void session_close(session_t *s) {
  if (uv_is_closing((uv_handle_t *)&s->tcp))
    return;
  s->link.prev->next = s->link.next;
  s->link.next->prev = s->link.prev;
  uv_close((uv_handle_t *)&s->tcp, on_session_closed);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  session_t *s = handle->data;
  (void)suggested;
  *buf = uv_buf_init(s->buf, BUF_SIZE);
}

static void after_write(uv_write_t *req, int status) {
  if (status < 0 && status != UV_ECANCELED)
    fprintf(stderr, "toy: write: %s\n", uv_err_name(status));
  free(req);
}

static void session_echo(session_t *s, const char *data, size_t len) {
  reply_t *r = xmalloc(sizeof(*r) + len);
  uv_buf_t buf;
  int rc;

  memcpy(r->data, data, len);
  buf = uv_buf_init(r->data, (unsigned)len);
  rc = uv_write(&r->req, (uv_stream_t *)&s->tcp, &buf, 1, after_write);
  if (rc < 0) {
    fprintf(stderr, "toy: uv_write: %s\n", uv_err_name(rc));
    free(r);
    session_close(s);
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  session_t *s = stream->data;
  if (nread > 0) {
    session_echo(s, buf->base, (size_t)nread);
  } else if (nread < 0) {
    if (nread != UV_EOF && nread != UV_ECONNRESET)
      fprintf(stderr, "toy: read: %s\n", uv_err_name((int)nread));
    session_close(s);
  }
}

static session_t *session_new(server_t *server) {
  session_t *s = xmalloc(sizeof(*s));
  s->buf = xmalloc(BUF_SIZE);
  s->link.next = server->sessions.next;
  s->link.prev = &server->sessions;
  server->sessions.next->prev = &s->link;
  server->sessions.next = &s->link;
  return s;
}

static void on_connection(uv_stream_t *listener, int status) {
  server_t *server = listener->data;
  session_t *s;
  int rc;

  if (status < 0) {
    fprintf(stderr, "toy: accept: %s\n", uv_err_name(status));
    return;
  }
  s = session_new(server);
  CHECK(uv_tcp_init(listener->loop, &s->tcp));
  s->tcp.data = s;
  rc = uv_accept(listener, (uv_stream_t *)&s->tcp);
  if (rc == 0)
    rc = uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
  if (rc < 0) {
    fprintf(stderr, "toy: accept: %s\n", uv_err_name(rc));
    session_close(s);
  }
}

static void on_signal(uv_signal_t *handle, int signum) {
  server_t *server = handle->data;
  (void)signum;
  uv_close((uv_handle_t *)&server->listener, NULL);
  uv_close((uv_handle_t *)&server->sigterm, NULL);
  uv_close((uv_handle_t *)&server->sigint, NULL);
  /* session_close() unlinks the session: the list shrinks every turn. */
  while (server->sessions.next != &server->sessions)
    session_close((session_t *)server->sessions.next);
}

static int listen_on(server_t *server, uv_loop_t *loop, int port) {
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof(bound);

  CHECK(uv_ip4_addr("127.0.0.1", port, &addr));
  CHECK(uv_tcp_init(loop, &server->listener));
  server->listener.data = server;
  CHECK(uv_tcp_bind(&server->listener, (const struct sockaddr *)&addr, 0));
  CHECK(uv_listen((uv_stream_t *)&server->listener, 128, on_connection));
  CHECK(uv_tcp_getsockname(&server->listener, (struct sockaddr *)&bound, &len));
  return ntohs(((struct sockaddr_in *)&bound)->sin_port);
}

int main(int argc, char **argv) {
  uv_loop_t *loop = uv_default_loop();
  server_t server;
  char *end = NULL;
  long port;
  int rc;

  port = argc == 2 ? strtol(argv[1], &end, 10) : -1;
  if (argc != 2 || *end != '\0' || port < 0 || port > 65535) {
    fprintf(stderr, "usage: toy PORT   (0 picks a free port)\n");
    return 2;
  }
  server.sessions.prev = server.sessions.next = &server.sessions;
  printf("listening on 127.0.0.1:%d\n", listen_on(&server, loop, (int)port));
  fflush(stdout);
  CHECK(uv_signal_init(loop, &server.sigterm));
  CHECK(uv_signal_init(loop, &server.sigint));
  server.sigterm.data = server.sigint.data = &server;
  CHECK(uv_signal_start(&server.sigterm, on_signal, SIGTERM));
  CHECK(uv_signal_start(&server.sigint, on_signal, SIGINT));
  uv_run(loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(loop);
  if (rc != 0) {
    fprintf(stderr, "toy: uv_loop_close: %s\n", uv_err_name(rc));
    return 1;
  }
  fprintf(stderr, "toy: stopped\n");
  return 0;
}
