// Must not compile: a pointer means nothing in another process.
#include <vector>

#include "ipckit/pool/pool.hpp"

int deref(const int* p) { return *p; }

int main() {
  ipckit::Pool pool{1};
  int x = 1;
  return static_cast<int>(pool.map(deref, std::vector<const int*>{&x}).size());
}
