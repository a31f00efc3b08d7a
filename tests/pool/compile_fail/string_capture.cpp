// Must not compile: a lambda capturing a std::string is neither trivially copyable nor
// serialisable.
#include <string>
#include <vector>

#include "ipckit/pool/pool.hpp"

int main() {
  ipckit::Pool pool{1};
  std::string prefix = "x";
  return static_cast<int>(
      pool.map([prefix](int x) { return prefix.size() + static_cast<std::size_t>(x); },
               std::vector<int>{1})
          .size());
}
