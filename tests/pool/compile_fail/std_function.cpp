// Must not compile: a std::function cannot cross to a worker process (its target lives in
// this process's heap). The build test checks the compiler says so in readable words.
#include <functional>
#include <vector>

#include "ipckit/pool/pool.hpp"

int main() {
  ipckit::Pool pool{1};
  std::function<int(int)> f = [](int x) { return x; };
  return static_cast<int>(pool.map(f, std::vector<int>{1}).size());
}
