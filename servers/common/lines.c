/* See lines.h. */
#include "lines.h"

void lines_init(lines_t *lines) { lines->len = 0; }

void lines_feed(lines_t *lines, const char *data, size_t len, lines_cb on_line, void *arg) {
  for (size_t i = 0; i < len; i++) {
    lines->buf[lines->len++] = data[i];
    if (data[i] == '\n' || lines->len == LINES_MAX) {
      size_t n = lines->len;
      lines->len = 0;
      on_line(arg, lines->buf, n);
    }
  }
}

void lines_flush(lines_t *lines, lines_cb on_line, void *arg) {
  size_t n = lines->len;
  if (n == 0)
    return;
  lines->len = 0;
  on_line(arg, lines->buf, n);
}
