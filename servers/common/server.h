/* The shared layer every server in this project is built on.
 *
 * It owns what is the same in every server: argument parsing (--port N,
 * --port 0 for an ephemeral port), the listener on 127.0.0.1, the readiness
 * line on stdout once listening, SIGTERM/SIGINT turned into a call of the
 * server's own stop function, SIGPIPE ignored, and the final check that the
 * loop closes cleanly (uv_loop_close() == 0).  Each server keeps its own
 * sessions and decides how to stop them: the order of a stop is part of
 * several bugs this project reproduces.
 */
#ifndef SERVERS_COMMON_SERVER_H
#define SERVERS_COMMON_SERVER_H

#include <stddef.h>
#include <uv.h>

typedef struct srv srv_t;
typedef void (*srv_stop_cb)(srv_t *srv);

struct srv {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_signal_t sigterm;
  uv_signal_t sigint;
  int port;
  int stopping;
  int listener_closed;
  srv_stop_cb on_stop;
  void *data; /* the server's own state */
};

/* Parses argv, sets up the loop, the listener and the stop signals, prints
 * "listening on 127.0.0.1:PORT".  Exits with status 2 on bad arguments and 1
 * on a libuv failure. */
void srv_init(srv_t *srv, int argc, char **argv, uv_connection_cb on_connection,
              srv_stop_cb on_stop);

/* Runs the loop until no handle is left, then closes it.  Returns the exit
 * status for main: 0 when uv_loop_close() succeeded. */
int srv_run(srv_t *srv);

/* Closes the listener (idempotent); close_cb may be NULL. */
void srv_close_listener(srv_t *srv, uv_close_cb close_cb);

/* Closes every handle still open on the loop, with no close callback: the
 * generic "close everything" that leaves each handle's owner unaware. */
void srv_close_all_handles(srv_t *srv);

/* Reports a failed libuv call and exits with status 1. */
void srv_fatal(const char *what, int err);

/* Checks a libuv return value: on failure reports it with uv_err_name(). */
#define SRV_CHECK(expr)                                                        \
  do {                                                                         \
    int srv_check_rc_ = (expr);                                                \
    if (srv_check_rc_ < 0)                                                     \
      srv_fatal(#expr, srv_check_rc_);                                         \
  } while (0)

/* malloc that reports and exits on failure. */
void *srv_xmalloc(size_t size);
void *srv_xcalloc(size_t count, size_t size);

/* A client that reads nothing must not make the server hold unbounded
 * memory: past SRV_OUTPUT_LIMIT bytes of queued replies, its session is
 * closed (like redis's client-output-buffer-limit).  Reads stay armed. */
#define SRV_OUTPUT_LIMIT ((size_t)8 << 20)

/* True (and logged) when `stream` already has SRV_OUTPUT_LIMIT bytes queued. */
int srv_output_full(uv_stream_t *stream);

/* Logs one line to stderr, prefixed with the program name. */
void srv_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The read buffer every server hands to libuv: malloc'd per read, freed by
 * the read callback with srv_free_buf(). */
void srv_alloc_buf(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);
void srv_free_buf(const uv_buf_t *buf);

#endif
