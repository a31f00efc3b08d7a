#include "ipckit/core/error.hpp"

#include <gtest/gtest.h>

#include <cerrno>

namespace ipckit {
namespace {

TEST(Error, CarriesLibraryConditionAndMessage) {
  const Error e(errc::peer_dead, "Channel::recv()");
  EXPECT_TRUE(e.is(errc::peer_dead));
  EXPECT_FALSE(e.is(errc::timeout));
  EXPECT_EQ(e.code().category().name(), std::string("ipckit"));
  EXPECT_NE(std::string(e.what()).find("Channel::recv()"), std::string::npos);
  EXPECT_NE(std::string(e.what()).find("peer process died"), std::string::npos);
}

TEST(Error, ThrowErrnoKeepsErrnoAndWhatWasAttempted) {
  try {
    throw_errno(ENOENT, "shm_open(\"/x\")");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), std::error_code(ENOENT, std::system_category()));
    EXPECT_NE(std::string(e.what()).find("shm_open(\"/x\") failed"), std::string::npos);
  }
}

TEST(Error, EveryCodeHasAMessage) {
  for (int i = static_cast<int>(errc::timeout); i <= static_cast<int>(errc::cancelled); ++i) {
    EXPECT_EQ(make_error_code(static_cast<errc>(i)).message().find("unknown"), std::string::npos)
        << i;
  }
}

TEST(Error, IsASystemError) { EXPECT_THROW(throw_error(errc::closed, "send"), std::system_error); }

}  // namespace
}  // namespace ipckit
