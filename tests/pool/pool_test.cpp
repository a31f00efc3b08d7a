#include "ipckit/pool/pool.hpp"

#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <vector>

#include "leak_check.hpp"

namespace ipckit {
namespace {

int square(int x) { return x * x; }
int add(int a, int b) { return a + b; }

class PoolTest : public testing::LeakCheckedTest {};

TEST_F(PoolTest, MapSquares) {
  Pool pool{2};
  std::vector<int> in(100);
  std::iota(in.begin(), in.end(), 0);
  auto out = pool.map(square, in);
  ASSERT_EQ(out.size(), in.size());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(out[i], i * i);
  EXPECT_EQ(pool.apply(add, 2, 3), 5);
  auto s = pool.map([](const std::string& x) { return x + "!"; }, std::vector<std::string>{"a", "b"});
  EXPECT_EQ(s, (std::vector<std::string>{"a!", "b!"}));
  std::vector<int> got;
  for (int r : pool.imap(square, in, 3)) got.push_back(r);
  EXPECT_EQ(got, out);
  pool.close();
  pool.join();
}

}  // namespace
}  // namespace ipckit
