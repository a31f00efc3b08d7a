// register_exception<E>(): a task's exception of a registered type is rethrown on the caller
// as that type (fields through cereal, or rebuilt from its message); unregistered types stay
// RemoteError; an unregistered type derived from a registered one crosses as the base. Under
// both start methods, through map, imap and apply.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <typeinfo>
#include <vector>

#include "ipckit/pool/exceptions.hpp"
#include "ipckit/pool/pool.hpp"
#include "leak_check.hpp"
#include "test_util.hpp"

namespace ipckit {
namespace {

using PoolExceptionsTest = testing::LeakCheckedTest;

// Message only: rebuilt as QuotaExceeded(what()).
struct QuotaExceeded : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct TightQuota : QuotaExceeded {  // never registered
  using QuotaExceeded::QuotaExceeded;
};
// Fields through cereal.
struct BadRow : std::exception {
  int row = 0;
  std::string column;
  BadRow() = default;
  BadRow(int r, std::string c) : row(r), column(std::move(c)) {}
  [[nodiscard]] const char* what() const noexcept override { return "bad row"; }
  template <class Archive>
  void serialize(Archive& ar) {
    ar(row, column);
  }
};
struct NotRegistered : std::runtime_error {
  using std::runtime_error::runtime_error;
};

int throws(int kind) {
  switch (kind) {
    case 0: throw QuotaExceeded("quota of 5 used");
    case 1: throw BadRow(42, "price");
    case 2: throw NotRegistered("plain");
    case 3: throw TightQuota("tight");
    default: return kind;
  }
}

class Registered : public PoolExceptionsTest, public ::testing::WithParamInterface<StartMethod> {
 protected:
  static void SetUpTestSuite() {
    register_exception<QuotaExceeded>();
    register_exception<BadRow>();
  }
  Pool make_pool() {
    PoolOptions o;
    o.processes = 2;
    o.start = GetParam();
    return Pool{o};
  }
};

TEST_P(Registered, AMessageOnlyTypeIsRethrownAsItself) {
  Pool pool = make_pool();
  try {
    (void)pool.apply(throws, 0);
    FAIL() << "no exception";
  } catch (const QuotaExceeded& e) {
    EXPECT_STREQ(e.what(), "quota of 5 used");
    EXPECT_EQ(typeid(e), typeid(QuotaExceeded));
  }
}

TEST_P(Registered, ACerealTypeKeepsItsFields) {
  Pool pool = make_pool();
  try {
    (void)pool.map(throws, std::vector<int>{5, 1, 6});
    FAIL() << "no exception";
  } catch (const BadRow& e) {
    EXPECT_EQ(e.row, 42);
    EXPECT_EQ(e.column, "price");
  }
  auto it = pool.imap(throws, std::vector<int>{5, 1, 6});
  EXPECT_EQ(it.next(), 5);
  EXPECT_THROW((void)it.next(), BadRow);
  EXPECT_EQ(it.next(), 6);
}

TEST_P(Registered, AnUnregisteredTypeStaysRemoteError) {
  Pool pool = make_pool();
  try {
    (void)pool.apply(throws, 2);
    FAIL() << "no exception";
  } catch (const RemoteError& e) {
    EXPECT_NE(e.type_name().find("NotRegistered"), std::string::npos) << e.type_name();
    EXPECT_EQ(e.message(), "plain");
  }
}

TEST_P(Registered, AnUnregisteredDerivedTypeCrossesAsItsRegisteredBase) {
  Pool pool = make_pool();
  try {
    (void)pool.apply(throws, 3);
    FAIL() << "no exception";
  } catch (const QuotaExceeded& e) {
    EXPECT_EQ(typeid(e), typeid(QuotaExceeded));
    EXPECT_STREQ(e.what(), "tight");
  }
}

TEST_P(Registered, TheErrorCallbackGetsARemoteErrorWithTheMessage) {
  Pool pool = make_pool();
  std::string seen;
  auto ar = pool.apply_async(throws, std::tuple{0},
                             {.error_callback = [&](const Error& e) { seen = e.what(); }});
  EXPECT_THROW((void)ar.get(), QuotaExceeded);
  EXPECT_NE(seen.find("quota of 5 used"), std::string::npos) << seen;
}

INSTANTIATE_TEST_SUITE_P(StartMethods, Registered,
                         ::testing::Values(StartMethod::forkserver, StartMethod::fork),
                         [](const auto& info) {
                           return info.param == StartMethod::fork ? "fork" : "forkserver";
                         });

}  // namespace
}  // namespace ipckit
