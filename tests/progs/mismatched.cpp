// Recorded once for tests/inputs/mismatched-free.log (needs g++, not built by make).
#include <cstdlib>
int main() {
  int *p = new int[4];
  std::free(p);
  return 0;
}
