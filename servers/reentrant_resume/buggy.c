/* reentrant_resume, buggy: a running coroutine is resumed from inside itself.
 *
 * Mechanism (seed 003, libcopp and libatbus): every session runs as a
 * stackful coroutine (common/coro.h) that waits on its inbox.  Messages reach
 * an inbox through a bus that delivers at once: it queues the message and
 * resumes the receiver, as libatbus calls the receive handler directly.  A
 * line from the network is such a message, copied in by the read callback; a
 * line "self:NOTE" makes the session, after the echo, send NOTE to itself,
 * and libatbus's shortcut for a message to self is the same direct call, with
 * one copy less: the note borrows the line's bytes.  So the running
 * coroutine's resume() is called from inside the coroutine, and this resume()
 * is libcopp's before the seed's patch: it does not check the status.  It
 * saves the coroutine's own context as its caller, over the read callback's,
 * and switches to the coroutine's last yield point, in coro_yield()'s frame,
 * which session_handle()'s frame has reused since (session_main calls both at
 * the same depth).  The yield "returns" into session_main as if the line's
 * handler had returned, and session_main frees the line while its handler is
 * still running and the note still borrows its bytes.  The session handles
 * the note, reading the freed line, then waits again: its yield switches to
 * the caller the inner resume saved, in frames reused in turn, and the return
 * from coro_switch_in() jumps to address 0.  Control never gets back to the
 * read callback, nor to the event loop.
 *
 * Trigger: a line "self:..." (scenario self-message).  The echo of that line
 * has already gone out when the server dies; the next line gets no answer.
 *
 * What valgrind shows: `Invalid read of size 1` (InvalidRead) at session_note
 * < session_handle < session_main (buggy.c), `Address 0x... is 54 bytes
 * inside a block of size 55 free'd` at free < session_main (buggy.c), alloc'd
 * at srv_xmalloc < bus_deliver; then `Use of uninitialised value of size 8`
 * (UninitValue) at coro_switch_in (coro.c), the return address read from a
 * reused frame, `Jump to the invalid address stated on the next line`
 * (InvalidJump) at 0x0, and `Process terminating with default action of
 * signal 11 (SIGSEGV)`, `Bad permissions for mapped region at address 0x0`.
 * Natively: SIGSEGV, the same jump to 0.  AddressSanitizer only sees the
 * crash: its swapcontext interceptor puts one more frame under coro_yield's,
 * so the stale yield point returns through a slot that now holds the
 * handler's session pointer: `SEGV on unknown address`, the PC being the
 * session's address, no frame of the program left to show.
 */
#include <stdlib.h>
#include <string.h>

#include "../common/coro.h"
#include "../common/lines.h"
#include "../common/list.h"
#include "../common/server.h"

#define SELF_PREFIX "self:"

enum msg_kind {
  MSG_LINE, /* a line from the client: echo it */
  MSG_NOTE, /* a note the session sent itself */
  MSG_EOF,  /* the client has sent everything: flush, FIN */
  MSG_END   /* the session is over: the coroutine returns */
};

typedef struct msg {
  struct msg *next;
  enum msg_kind kind;
  const char *data; /* its own copy (buf), or the sender's bytes, borrowed */
  size_t len;
  char buf[];
} msg_t;

typedef struct session {
  uv_tcp_t tcp;
  list_node_t node;
  uv_shutdown_t shutdown;
  unsigned id;
  coro_t *co;
  msg_t *inbox; /* oldest first */
  msg_t **inbox_tail;
  int failed; /* the coroutine could not queue a write */
  size_t notes;
  lines_t lines;
} session_t;

typedef struct reply {
  uv_write_t req;
  char data[];
} reply_t;

static msg_t *inbox_pop(session_t *s) {
  msg_t *m = s->inbox;
  if (m != NULL) {
    s->inbox = m->next;
    if (s->inbox == NULL)
      s->inbox_tail = &s->inbox;
  }
  return m;
}

/* Gives a message its own copy of the bytes it borrowed. */
static void msg_keep(msg_t *m) {
  if (m->data != m->buf && m->len > 0)
    memcpy(m->buf, m->data, m->len);
  m->data = m->buf;
}

/* The bus: the message goes into the receiver's inbox, then the receiver runs
 * at once and handles it before the send returns.  A message from the
 * network is copied in; a message to self, sent from inside the receiver's
 * coroutine, takes libatbus's shortcut and borrows the sender's bytes: one
 * copy less. */
static void bus_deliver(session_t *to, enum msg_kind kind, const char *data, size_t len,
                        int borrow) {
  msg_t *m = srv_xmalloc(sizeof(*m) + len);
  int rc;
  m->next = NULL;
  m->kind = kind;
  m->data = data;
  m->len = len;
  if (!borrow)
    msg_keep(m);
  *to->inbox_tail = m;
  to->inbox_tail = &m->next;
  rc = coro_resume_unchecked(to->co);
  if (rc != CORO_EC_SUCCESS) {
    /* Not handled now: it waits in the inbox, with bytes of its own. */
    srv_log("session %u: resume: %s; the message waits in the inbox", to->id,
            coro_strerror(rc));
    msg_keep(m);
  }
}

static void on_session_closed(uv_handle_t *handle) {
  session_t *s = handle->data;
  msg_t *m;
  coro_destroy(s->co);
  while ((m = inbox_pop(s)) != NULL)
    free(m);
  free(s);
}

static void session_close(session_t *s) {
  if (uv_is_closing((uv_handle_t *)&s->tcp))
    return;
  list_remove(&s->node);
  uv_close((uv_handle_t *)&s->tcp, on_session_closed);
}

/* From outside the coroutine (libuv's callbacks): deliver, and close the
 * session once its coroutine has returned. */
static void session_post(session_t *s, enum msg_kind kind, const char *data, size_t len) {
  if (uv_is_closing((uv_handle_t *)&s->tcp))
    return;
  bus_deliver(s, kind, data, len, 0);
  if (coro_status(s->co) == CORO_FINISHED)
    session_close(s);
}

static void after_write(uv_write_t *req, int status) {
  reply_t *r = (reply_t *)req;
  session_t *s = req->handle->data;
  free(r);
  if (status < 0 && status != UV_ECANCELED) {
    srv_log("write: %s", uv_err_name(status));
    session_post(s, MSG_END, NULL, 0);
  }
}

static void after_shutdown(uv_shutdown_t *req, int status) {
  session_t *s = req->handle->data;
  if (status < 0 && status != UV_ECANCELED)
    srv_log("shutdown: %s", uv_err_name(status));
  session_post(s, MSG_END, NULL, 0);
}

/* In the coroutine: queue the echo. */
static void session_send(session_t *s, const char *data, size_t len) {
  reply_t *r;
  uv_buf_t buf;
  int rc;
  if (srv_output_full((uv_stream_t *)&s->tcp)) {
    s->failed = 1;
    return;
  }
  r = srv_xmalloc(sizeof(*r) + len);
  memcpy(r->data, data, len);
  buf = uv_buf_init(r->data, (unsigned)len);
  rc = uv_write(&r->req, (uv_stream_t *)&s->tcp, &buf, 1, after_write);
  if (rc < 0) {
    srv_log("uv_write: %s", uv_err_name(rc));
    free(r);
    s->failed = 1;
  }
}

/* A note to self: logged, without its newline. */
static void session_note(session_t *s, const char *data, size_t len) {
  if (len > 0 && data[len - 1] == '\n')
    len--;
  s->notes++;
  srv_log("session %u: note to self: %.*s", s->id, (int)len, data);
}

static void session_handle(session_t *s, const msg_t *m) {
  size_t prefix = strlen(SELF_PREFIX);
  int rc;
  switch (m->kind) {
  case MSG_LINE:
    session_send(s, m->data, m->len);
    if (m->len >= prefix && memcmp(m->data, SELF_PREFIX, prefix) == 0)
      bus_deliver(s, MSG_NOTE, m->data + prefix, m->len - prefix, 1);
    break;
  case MSG_NOTE:
    session_note(s, m->data, m->len);
    break;
  case MSG_EOF:
    /* Flush what is queued, then send our FIN; after_shutdown ends us. */
    rc = uv_shutdown(&s->shutdown, (uv_stream_t *)&s->tcp, after_shutdown);
    if (rc < 0) {
      srv_log("uv_shutdown: %s", uv_err_name(rc));
      s->failed = 1;
    }
    break;
  case MSG_END:
    break;
  }
}

/* The session's coroutine: handle what arrives, wait when there is nothing. */
static void session_main(coro_t *co, void *arg) {
  session_t *s = arg;
  (void)co;
  for (;;) {
    msg_t *m = inbox_pop(s);
    enum msg_kind kind;
    if (m == NULL) {
      coro_yield();
      continue;
    }
    kind = m->kind;
    session_handle(s, m);
    free(m);
    if (kind == MSG_END || s->failed)
      return;
  }
}

static void session_on_line(void *arg, const char *line, size_t len) {
  session_post(arg, MSG_LINE, line, len);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  session_t *s = stream->data;
  if (nread > 0)
    lines_feed(&s->lines, buf->base, (size_t)nread, session_on_line, s);
  srv_free_buf(buf);
  if (nread == UV_EOF) {
    uv_read_stop(stream);
    lines_flush(&s->lines, session_on_line, s);
    session_post(s, MSG_EOF, NULL, 0);
  } else if (nread < 0) {
    if (nread != UV_ECONNRESET)
      srv_log("read: %s", uv_err_name((int)nread));
    session_post(s, MSG_END, NULL, 0);
  }
}

static void on_connection(uv_stream_t *listener, int status) {
  static unsigned next_id;
  srv_t *srv = listener->data;
  list_node_t *sessions = srv->data;
  session_t *s;
  int rc;

  if (status < 0) {
    srv_log("accept: %s", uv_err_name(status));
    return;
  }
  s = srv_xcalloc(1, sizeof(*s));
  s->id = ++next_id;
  s->inbox_tail = &s->inbox;
  lines_init(&s->lines);
  SRV_CHECK(uv_tcp_init(srv->loop, &s->tcp));
  s->tcp.data = s;
  list_push(sessions, &s->node);
  /* Start the coroutine: it runs up to its first wait on the inbox. */
  s->co = coro_create(session_main, s, CORO_STACK_SIZE);
  rc = coro_resume(s->co);
  if (rc != CORO_EC_SUCCESS) {
    srv_log("coro_resume: %s", coro_strerror(rc));
    exit(1);
  }
  rc = uv_accept(listener, (uv_stream_t *)&s->tcp);
  if (rc == 0)
    rc = uv_read_start((uv_stream_t *)&s->tcp, srv_alloc_buf, on_read);
  if (rc < 0) {
    srv_log("accept: %s", uv_err_name(rc));
    session_post(s, MSG_END, NULL, 0);
  }
}

static void on_stop(srv_t *srv) {
  list_node_t *sessions = srv->data;
  list_node_t *node, *tmp;
  srv_close_listener(srv, NULL);
  LIST_FOREACH_SAFE(node, tmp, sessions) {
    session_post(LIST_ENTRY(node, session_t, node), MSG_END, NULL, 0);
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
