/* Load generator for line-echo servers (make bench): N connections on
 * 127.0.0.1, each sending lines and reading their echoes, for a fixed time.
 *
 * Every connection keeps DEPTH lines in flight: it sends a line, and each
 * echo that comes back completely is checked byte for byte against what was
 * sent and answered with the next line.  Each line is unique (connection,
 * sequence number, padding to LEN bytes), so an echo that is lost, reordered
 * or altered is a mismatch.  Round trips are timed from the write to the last
 * byte of the echo.  All connections connect first; the clock starts when the
 * last one is up.  At the end no line is sent any more, the lines in flight
 * are read back (for up to 2 s), and every connection is closed normally
 * (FIN, never a reset, nothing left unread): a workload that ends the way
 * clients that exchange lines and leave do.
 *
 * Output: one human line on stderr, one JSON line on stdout
 *   {"connections": N, "seconds": S, "lines": L, "lines_per_s": R,
 *    "p50_us": ..., "p99_us": ..., "max_us": ..., "mismatches": M,
 *    "errors": E, "error": "first error or null"}
 * Exit status 0 when every connection came up, every echo matched and no
 * error happened; 1 otherwise; 2 on bad usage.
 *
 * usage: load --port P [--connections N] [--seconds S] [--length LEN]
 *             [--depth D]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define MAX_CONNECTIONS 1024
#define MAX_DEPTH 64
#define MAX_LENGTH 65536
#define MAX_SAMPLES ((size_t)4 * 1000 * 1000) /* round trips timed, at most */
#define CONNECT_MS 10000
#define DRAIN_MS 2000

typedef struct conn conn_t;

typedef struct load {
  uv_loop_t loop;
  uv_timer_t timer; /* the end of the run, then the drain deadline */
  struct sockaddr_in addr;
  int connections, depth;
  size_t length;
  double seconds;
  conn_t *conns;
  int connected, closed;
  int running; /* lines are being sent */
  int draining;
  uint64_t start_ns, stop_ns;
  uint64_t lines;
  uint64_t mismatches;
  uint64_t errors;
  char first_error[160];
  uint64_t *samples;
  size_t nsamples;
} load_t;

/* A line in flight: its sequence number and when its write was queued. */
typedef struct flight {
  uint64_t seq;
  uint64_t sent_ns;
} flight_t;

typedef struct send_req {
  uv_write_t req;
  char data[];
} send_req_t;

struct conn {
  uv_tcp_t tcp;
  uv_connect_t connect;
  load_t *load;
  int id;
  int open;
  uint64_t next_seq;
  flight_t flights[MAX_DEPTH]; /* a ring: the oldest is at head */
  int head, inflight;
  char *expect; /* the oldest line in flight, as it must come back */
  size_t matched; /* bytes of it already received */
};

static void fail(load_t *l, const char *what, int err) {
  l->errors++;
  if (l->first_error[0] != '\0')
    return;
  if (err)
    snprintf(l->first_error, sizeof(l->first_error), "%s: %s", what, uv_err_name(err));
  else
    snprintf(l->first_error, sizeof(l->first_error), "%s", what);
}

/* The line `seq` of connection `id`: "c<id> s<seq> xxx...\n", LEN bytes. */
static void make_line(const load_t *l, int id, uint64_t seq, char *out) {
  int n = snprintf(out, l->length, "c%d s%" PRIu64 " ", id, seq);
  if (n < 0 || (size_t)n >= l->length - 1)
    n = 0;
  memset(out + n, 'a' + (int)(seq % 26), l->length - 1 - (size_t)n);
  out[l->length - 1] = '\n';
}

static void timer_close(load_t *l) {
  if (!uv_is_closing((uv_handle_t *)&l->timer))
    uv_close((uv_handle_t *)&l->timer, NULL);
}

static void on_closed(uv_handle_t *handle) {
  conn_t *c = handle->data;
  if (++c->load->closed == c->load->connections)
    timer_close(c->load);
}

static void conn_close(conn_t *c) {
  if (!c->open)
    return;
  c->open = 0;
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void close_all(load_t *l) {
  for (int i = 0; i < l->connections; i++)
    conn_close(&l->conns[i]);
}

/* After the run: close what has nothing in flight any more. */
static void finish_if_done(load_t *l) {
  for (int i = 0; i < l->connections; i++) {
    conn_t *c = &l->conns[i];
    if (c->inflight == 0 || !c->open)
      conn_close(c);
  }
}

static void after_send(uv_write_t *req, int status) {
  conn_t *c = req->handle->data;
  free(req);
  if (status < 0 && status != UV_ECANCELED) {
    fail(c->load, "write", status);
    conn_close(c);
  }
}

static int conn_send(conn_t *c) {
  load_t *l = c->load;
  send_req_t *r = malloc(sizeof(*r) + l->length);
  uv_buf_t buf;
  int rc;
  if (r == NULL) {
    fail(l, "out of memory", 0);
    return -1;
  }
  make_line(l, c->id, c->next_seq, r->data);
  buf = uv_buf_init(r->data, (unsigned)l->length);
  rc = uv_write(&r->req, (uv_stream_t *)&c->tcp, &buf, 1, after_send);
  if (rc < 0) {
    free(r);
    fail(l, "uv_write", rc);
    return -1;
  }
  flight_t *f = &c->flights[(c->head + c->inflight) % MAX_DEPTH];
  f->seq = c->next_seq++;
  f->sent_ns = uv_hrtime();
  if (c->inflight++ == 0) {
    make_line(l, c->id, f->seq, c->expect);
    c->matched = 0;
  }
  return 0;
}

/* The oldest line in flight came back whole. */
static void on_echo(conn_t *c) {
  load_t *l = c->load;
  flight_t *f = &c->flights[c->head];
  if (l->running) {
    l->lines++;
    if (l->nsamples < MAX_SAMPLES)
      l->samples[l->nsamples++] = uv_hrtime() - f->sent_ns;
  }
  c->head = (c->head + 1) % MAX_DEPTH;
  c->inflight--;
  c->matched = 0;
  if (c->inflight > 0)
    make_line(l, c->id, c->flights[c->head].seq, c->expect);
  if (l->running && conn_send(c) < 0)
    conn_close(c);
}

static void alloc_buf(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  (void)handle;
  buf->base = malloc(suggested);
  buf->len = buf->base ? suggested : 0;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = stream->data;
  load_t *l = c->load;
  if (nread < 0) {
    if (c->inflight > 0 || l->running)
      fail(l, nread == UV_EOF ? "server closed the connection" : "read", (int)nread);
    conn_close(c);
  }
  for (ssize_t i = 0; i < nread && c->open; i++) {
    if (c->inflight == 0 || buf->base[i] != c->expect[c->matched]) {
      l->mismatches++;
      fail(l, "echo mismatch", 0);
      conn_close(c);
      break;
    }
    if (++c->matched == l->length)
      on_echo(c);
  }
  free(buf->base);
  if (l->draining)
    finish_if_done(l);
}

static void on_timer(uv_timer_t *timer) {
  load_t *l = timer->data;
  if (l->running) { /* the run is over: read back what is in flight */
    l->running = 0;
    l->draining = 1;
    l->stop_ns = uv_hrtime();
    finish_if_done(l);
    if (l->closed < l->connections)
      uv_timer_start(&l->timer, on_timer, DRAIN_MS, 0);
    return;
  }
  /* connect or drain deadline: what is still open failed */
  fail(l, l->draining ? "echoes missing at the end" : "connect timeout", UV_ETIMEDOUT);
  l->draining = 1;
  close_all(l);
}

static void start_run(load_t *l) {
  int rc;
  l->running = 1;
  l->start_ns = uv_hrtime();
  rc = uv_timer_start(&l->timer, on_timer, (uint64_t)(l->seconds * 1000), 0);
  if (rc < 0) {
    fail(l, "uv_timer_start", rc);
    on_timer(&l->timer);
    return;
  }
  for (int i = 0; i < l->connections; i++)
    for (int d = 0; d < l->depth && l->conns[i].open; d++)
      if (conn_send(&l->conns[i]) < 0)
        conn_close(&l->conns[i]);
}

static void on_connect(uv_connect_t *req, int status) {
  conn_t *c = req->handle->data;
  load_t *l = c->load;
  int rc;
  if (status < 0) {
    fail(l, "connect", status);
    close_all(l); /* no run without every connection */
    return;
  }
  rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_buf, on_read);
  if (rc < 0) {
    fail(l, "uv_read_start", rc);
    close_all(l);
    return;
  }
  if (++l->connected == l->connections && l->errors == 0)
    start_run(l);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

static double percentile_us(const load_t *l, double p) {
  if (l->nsamples == 0)
    return 0;
  size_t i = (size_t)(p * (double)(l->nsamples - 1) + 0.5);
  return (double)l->samples[i] / 1000.0;
}

static void report(load_t *l) {
  double elapsed = l->stop_ns > l->start_ns ? (double)(l->stop_ns - l->start_ns) / 1e9 : 0;
  double rate = elapsed > 0 ? (double)l->lines / elapsed : 0;
  qsort(l->samples, l->nsamples, sizeof(*l->samples), cmp_u64);
  double p50 = percentile_us(l, 0.50), p99 = percentile_us(l, 0.99);
  double max = l->nsamples ? (double)l->samples[l->nsamples - 1] / 1000.0 : 0;
  fprintf(stderr,
          "load: %d connections, depth %d, %zu-byte lines, %.2f s: %" PRIu64
          " lines, %.0f lines/s, round trip p50 %.1f us, p99 %.1f us, max %.1f us; "
          "%" PRIu64 " mismatches, %" PRIu64 " errors%s%s\n",
          l->connections, l->depth, l->length, elapsed, l->lines, rate, p50, p99, max,
          l->mismatches, l->errors, l->first_error[0] ? ": " : "", l->first_error);
  printf("{\"connections\": %d, \"depth\": %d, \"length\": %zu, \"seconds\": %.3f, "
         "\"lines\": %" PRIu64 ", \"lines_per_s\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f, "
         "\"max_us\": %.1f, \"mismatches\": %" PRIu64 ", \"errors\": %" PRIu64 ", \"error\": ",
         l->connections, l->depth, l->length, elapsed, l->lines, rate, p50, p99, max,
         l->mismatches, l->errors);
  if (l->first_error[0])
    printf("\"%s\"}\n", l->first_error); /* our own words: nothing to escape */
  else
    printf("null}\n");
}

static void usage(void) {
  fprintf(stderr, "usage: load --port P [--connections N] [--seconds S] [--length LEN] "
                  "[--depth D]\n  N <= %d, LEN 16..%d bytes with its newline, D <= %d\n",
          MAX_CONNECTIONS, MAX_LENGTH, MAX_DEPTH);
  exit(2);
}

static double number(const char *text, double lo, double hi) {
  char *end = NULL;
  double v = strtod(text, &end);
  if (end == text || *end != '\0' || v < lo || v > hi)
    usage();
  return v;
}

static void parse_args(load_t *l, int argc, char **argv, int *port) {
  *port = -1;
  l->connections = 8;
  l->seconds = 2;
  l->length = 64;
  l->depth = 1;
  for (int i = 1; i < argc; i++) {
    if (i + 1 >= argc)
      usage();
    if (strcmp(argv[i], "--port") == 0)
      *port = (int)number(argv[++i], 1, 65535);
    else if (strcmp(argv[i], "--connections") == 0)
      l->connections = (int)number(argv[++i], 1, MAX_CONNECTIONS);
    else if (strcmp(argv[i], "--seconds") == 0)
      l->seconds = number(argv[++i], 0.01, 3600);
    else if (strcmp(argv[i], "--length") == 0)
      l->length = (size_t)number(argv[++i], 16, MAX_LENGTH);
    else if (strcmp(argv[i], "--depth") == 0)
      l->depth = (int)number(argv[++i], 1, MAX_DEPTH);
    else
      usage();
  }
  if (*port < 0)
    usage();
}

static int setup(load_t *l, int port) {
  int rc;
  if ((rc = uv_loop_init(&l->loop)) < 0 || (rc = uv_ip4_addr("127.0.0.1", port, &l->addr)) < 0 ||
      (rc = uv_timer_init(&l->loop, &l->timer)) < 0) {
    fprintf(stderr, "load: setup: %s\n", uv_err_name(rc));
    return -1;
  }
  l->timer.data = l;
  l->conns = calloc((size_t)l->connections, sizeof(*l->conns));
  l->samples = malloc(MAX_SAMPLES * sizeof(*l->samples));
  if (l->conns == NULL || l->samples == NULL) {
    fprintf(stderr, "load: out of memory\n");
    return -1;
  }
  if ((rc = uv_timer_start(&l->timer, on_timer, CONNECT_MS, 0)) < 0) {
    fprintf(stderr, "load: uv_timer_start: %s\n", uv_err_name(rc));
    return -1;
  }
  return 0;
}

static void connect_all(load_t *l) {
  for (int i = 0; i < l->connections; i++) {
    conn_t *c = &l->conns[i];
    int rc;
    c->load = l;
    c->id = i;
    c->expect = malloc(l->length);
    if (c->expect == NULL) {
      fail(l, "out of memory", 0);
      l->closed++; /* never opened */
      continue;
    }
    if ((rc = uv_tcp_init(&l->loop, &c->tcp)) < 0) {
      fail(l, "uv_tcp_init", rc);
      l->closed++;
      continue;
    }
    c->tcp.data = c;
    c->open = 1;
    if ((rc = uv_tcp_nodelay(&c->tcp, 1)) < 0 ||
        (rc = uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&l->addr,
                             on_connect)) < 0) {
      fail(l, "connect", rc);
      conn_close(c);
    }
  }
  if (l->errors > 0)
    close_all(l);
  if (l->closed == l->connections)
    timer_close(l);
}

int main(int argc, char **argv) {
  static load_t l;
  int port, rc;
  parse_args(&l, argc, argv, &port);
  if (setup(&l, port) < 0)
    return 1;
  connect_all(&l);
  /* Bounded: the connect deadline, then the run, then the drain deadline
   * close every handle, and the loop runs dry. */
  uv_run(&l.loop, UV_RUN_DEFAULT);
  if (l.stop_ns == 0)
    l.stop_ns = l.start_ns;
  report(&l);
  if ((rc = uv_loop_close(&l.loop)) < 0) {
    fprintf(stderr, "load: uv_loop_close: %s\n", uv_err_name(rc));
    l.errors++;
  }
  for (int i = 0; i < l.connections; i++)
    free(l.conns[i].expect);
  free(l.conns);
  free(l.samples);
  return l.errors == 0 && l.mismatches == 0 && l.connected == l.connections ? 0 : 1;
}
