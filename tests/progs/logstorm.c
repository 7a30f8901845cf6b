/* Produces a huge valgrind log for the parser benchmark (make bench): 64
 * leaf functions, each reached through 64 callers and 4 grand-callers, every
 * path leaking its own block and reading freed memory, so that memcheck
 * prints one loss record and one error record per path: 16,384 of each.
 * Run it under valgrind with --error-limit=no.  Not a server. */
#include <stdlib.h>

typedef void (*fn_t)(unsigned);

static volatile char sink;

#define X4(m, p) m(p##0) m(p##1) m(p##2) m(p##3)
#define X16(m, p) X4(m, p##0) X4(m, p##1) X4(m, p##2) X4(m, p##3)
#define X64(m, p) X16(m, p##0) X16(m, p##1) X16(m, p##2) X16(m, p##3)

#define LEAF(id)                                                               \
  static void leaf_##id(unsigned path) {                                      \
    char *lost = malloc(16 + (path & 15));                                     \
    char *gone = malloc(8);                                                    \
    lost[0] = (char)path;                                                      \
    free(gone);                                                                \
    sink = gone[path & 7];                                                     \
  }
X64(LEAF, )

#define LEAF_PTR(id) leaf_##id,
static const fn_t leaves[64] = {X64(LEAF_PTR, )};

#define CALLER(id)                                                             \
  static void caller_##id(unsigned path) {                                    \
    for (int i = 0; i < 64; i++)                                               \
      leaves[i](path * 64 + (unsigned)i);                                      \
  }
X64(CALLER, )

#define CALLER_PTR(id) caller_##id,
static const fn_t callers[64] = {X64(CALLER_PTR, )};

#define GRAND(id)                                                              \
  static void grand_##id(unsigned path, int width) {                          \
    for (int i = 0; i < width; i++)                                            \
      callers[i](path * 64 + (unsigned)i);                                     \
  }
X4(GRAND, )

int main(int argc, char **argv) {
  int width = argc > 1 ? atoi(argv[1]) : 64;
  int grands = argc > 2 ? atoi(argv[2]) : 4;
  if (width < 1 || width > 64 || grands < 1 || grands > 4)
    return 2;
  grand_0(0, width);
  if (grands > 1) grand_1(1, width);
  if (grands > 2) grand_2(2, width);
  if (grands > 3) grand_3(3, width);
  return 0;
}
