/* The shared layer: arguments, listener, readiness line, stop signals and
 * the clean-exit check.  See server.h. */
#include "server.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *progname = "server";

void srv_log(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", progname);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

void srv_fatal(const char *what, int err) {
  srv_log("%s failed: %s (%s)", what, uv_err_name(err), uv_strerror(err));
  exit(1);
}

void *srv_xmalloc(size_t size) {
  void *p = malloc(size);
  if (p == NULL) {
    srv_log("out of memory (%zu bytes)", size);
    exit(1);
  }
  return p;
}

void *srv_xcalloc(size_t count, size_t size) {
  void *p = calloc(count, size);
  if (p == NULL) {
    srv_log("out of memory (%zu x %zu bytes)", count, size);
    exit(1);
  }
  return p;
}

int srv_output_full(uv_stream_t *stream) {
  if (uv_stream_get_write_queue_size(stream) <= SRV_OUTPUT_LIMIT)
    return 0;
  srv_log("client reads nothing: %zu bytes of replies queued, closing it",
          uv_stream_get_write_queue_size(stream));
  return 1;
}

void srv_alloc_buf(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)handle;
  buf->base = srv_xmalloc(suggested);
  buf->len = suggested;
}

void srv_free_buf(const uv_buf_t *buf) { free(buf->base); }

static void usage(void) {
  fprintf(stderr, "usage: %s --port N   (N = 0 picks a free port)\n", progname);
  exit(2);
}

static int parse_port(int argc, char **argv) {
  int port = -1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      char *end = NULL;
      long v = strtol(argv[++i], &end, 10);
      if (*end != '\0' || v < 0 || v > 65535)
        usage();
      port = (int)v;
    } else {
      usage();
    }
  }
  if (port < 0)
    usage();
  return port;
}

static void on_signal_closed(uv_handle_t *handle) { (void)handle; }

static void on_stop_signal(uv_signal_t *handle, int signum) {
  srv_t *srv = handle->data;
  if (srv->stopping)
    return;
  srv->stopping = 1;
  srv_log("signal %d: stopping", signum);
  uv_close((uv_handle_t *)&srv->sigterm, on_signal_closed);
  uv_close((uv_handle_t *)&srv->sigint, on_signal_closed);
  srv->on_stop(srv);
}

static void start_signal(srv_t *srv, uv_signal_t *sig, int signum) {
  SRV_CHECK(uv_signal_init(srv->loop, sig));
  sig->data = srv;
  SRV_CHECK(uv_signal_start(sig, on_stop_signal, signum));
}

static void listen_on(srv_t *srv, int port, uv_connection_cb on_connection) {
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof(bound);

  SRV_CHECK(uv_ip4_addr("127.0.0.1", port, &addr));
  SRV_CHECK(uv_tcp_init(srv->loop, &srv->listener));
  srv->listener.data = srv;
  SRV_CHECK(uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0));
  SRV_CHECK(uv_listen((uv_stream_t *)&srv->listener, 511, on_connection));
  SRV_CHECK(uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &len));
  srv->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
}

void srv_init(srv_t *srv, int argc, char **argv, uv_connection_cb on_connection,
              srv_stop_cb on_stop) {
  const char *slash;

  if (argc > 0 && argv[0] != NULL) {
    slash = strrchr(argv[0], '/');
    progname = slash ? slash + 1 : argv[0];
  }
  memset(srv, 0, sizeof(*srv));
  srv->on_stop = on_stop;
  /* libuv leaves SIGPIPE alone: a write to a reset peer would kill us. */
  signal(SIGPIPE, SIG_IGN);
  srv->loop = uv_default_loop();
  listen_on(srv, parse_port(argc, argv), on_connection);
  start_signal(srv, &srv->sigterm, SIGTERM);
  start_signal(srv, &srv->sigint, SIGINT);
  /* The harness waits for this line: it carries the real port. */
  printf("listening on 127.0.0.1:%d\n", srv->port);
  fflush(stdout);
}

void srv_close_listener(srv_t *srv, uv_close_cb close_cb) {
  if (srv->listener_closed)
    return;
  srv->listener_closed = 1;
  uv_close((uv_handle_t *)&srv->listener, close_cb);
}

static void close_one(uv_handle_t *handle, void *arg) {
  (void)arg;
  if (!uv_is_closing(handle))
    uv_close(handle, NULL);
}

void srv_close_all_handles(srv_t *srv) {
  srv->listener_closed = 1;
  uv_walk(srv->loop, close_one, NULL);
}

static void report_open_handle(uv_handle_t *handle, void *arg) {
  (void)arg;
  srv_log("still open at exit: %s handle %p%s", uv_handle_type_name(handle->type),
          (void *)handle, uv_is_closing(handle) ? " (closing)" : "");
}

int srv_run(srv_t *srv) {
  int rc = uv_run(srv->loop, UV_RUN_DEFAULT);
  if (rc != 0)
    srv_log("uv_run returned %d with handles still active", rc);
  rc = uv_loop_close(srv->loop);
  if (rc != 0) {
    srv_log("uv_loop_close failed: %s", uv_err_name(rc));
    uv_walk(srv->loop, report_open_handle, NULL);
    return 1;
  }
  srv_log("stopped cleanly");
  return 0;
}
