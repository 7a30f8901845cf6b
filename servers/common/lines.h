/* Line framing for the servers that handle their input a line at a time.
 *
 * A line is handed on with its '\n'.  A line longer than LINES_MAX is handed
 * on in LINES_MAX pieces, and what is left when the input ends (a partial
 * line) is handed on by lines_flush(), so that a server that echoes every
 * piece it is handed echoes its input byte for byte.
 */
#ifndef SERVERS_COMMON_LINES_H
#define SERVERS_COMMON_LINES_H

#include <stddef.h>

#define LINES_MAX 65536

typedef void (*lines_cb)(void *arg, const char *line, size_t len);

typedef struct lines {
  size_t len;
  char buf[LINES_MAX];
} lines_t;

void lines_init(lines_t *lines);
/* Appends data; calls on_line for every line (or LINES_MAX piece) it
 * completes.  The rest waits for more input. */
void lines_feed(lines_t *lines, const char *data, size_t len, lines_cb on_line, void *arg);
/* The input has ended: hands on the partial line, if there is one. */
void lines_flush(lines_t *lines, lines_cb on_line, void *arg);

#endif
