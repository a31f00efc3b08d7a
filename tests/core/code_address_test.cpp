// CodeAddress: a function's address as module build id + offset, the same in every process
// running the program (here: a fresh exec of it would give another load address; the round
// trip, the refusals and a forked child are what a single process can check).
#include "ipckit/core/code_address.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>

#include "ipckit/core/error.hpp"

namespace ipckit {
namespace {

int forty_two() { return 42; }

TEST(CodeAddress, RoundTripsAFunctionOfTheProgramAndOfALibrary) {
  const detail::CodeAddress a = detail::code_address_of(&forty_two);
  EXPECT_NE(a.module, 0u);
  EXPECT_EQ(detail::function_at<int()>(a), &forty_two);
  EXPECT_EQ(detail::function_at<int()>(a)(), 42);
  // A function of libc: another module, another build id.
  const detail::CodeAddress b = detail::code_address_of(&::getpid);
  EXPECT_NE(b.module, a.module);
  EXPECT_EQ(detail::function_at<pid_t()>(b), &::getpid);
}

TEST(CodeAddress, AnAddressInNoModuleIsRefused) {
  const auto heap = std::make_unique<int>(1);
  try {
    (void)detail::to_code_address(heap.get());
    FAIL() << "a heap address passed for code";
  } catch (const Error& e) {
    EXPECT_TRUE(e.is(errc::invalid_argument)) << e.what();
  }
}

TEST(CodeAddress, AnUnknownBuildIdOrAnOffsetPastItsModuleIsNotFound) {
  detail::CodeAddress a = detail::code_address_of(&forty_two);
  detail::CodeAddress other = a;
  other.module ^= 0x5a5a5a5a5a5a5a5aull;
  try {
    (void)detail::from_code_address(other);
    FAIL() << "an unknown module resolved";
  } catch (const Error& e) {
    EXPECT_TRUE(e.is(errc::not_found)) << e.what();
  }
  a.offset = ~std::uint64_t{0} / 2;
  try {
    (void)detail::from_code_address(a);
    FAIL() << "an offset far past the module resolved";
  } catch (const Error& e) {
    EXPECT_TRUE(e.is(errc::not_found)) << e.what();
  }
}

TEST(CodeAddress, AForkedChildResolvesTheSameAddress) {
  const detail::CodeAddress a = detail::code_address_of(&forty_two);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(detail::function_at<int()>(a)() == 42 ? 0 : 1);
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

}  // namespace
}  // namespace ipckit
