// Small helpers the tests share: catching ipckit errors, polling for a condition, the start gate
// for forked children, and the wait-policy parameter of the parameterized sync tests.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <system_error>
#include <thread>

#include "ipckit/core/deadline.hpp"
#include "ipckit/core/error.hpp"
#include "ipckit/sync/event_count.hpp"

namespace ipckit::testing {

// Runs `f` and returns the error it threw (an empty code when it threw nothing).
template <class F>
std::error_code error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return {};
}

// Runs `f` and returns the E it threw (nullopt when it threw none; other types propagate).
template <class E, class F>
std::optional<E> caught(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  }
  return std::nullopt;
}

// Polls `pred` for up to `limit`; true once it holds.
template <class Pred>
bool eventually(Pred&& pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const Deadline d = Deadline::after(limit);
  while (!pred()) {
    if (d.expired()) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return true;
}

// Children block on this until the parent has forked them all, so that they really overlap.
inline void wait_for_start(const std::atomic<std::uint32_t>& go) {
  while (go.load(std::memory_order_acquire) == 0) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

// The parameter of the tests that run once per wait policy.
struct Mode {
  const char* name;
  WaitPolicy policy;
};
// Test names (and ctest names) show the mode, not the bytes of the struct.
inline void PrintTo(const Mode& m, std::ostream* os) { *os << m.name; }

// The name generator for INSTANTIATE_TEST_SUITE_P over Mode.
inline std::string mode_name(const ::testing::TestParamInfo<Mode>& info) {
  return std::string(info.param.name);
}

// Every wait policy: spinning only, spinning then sleeping, and sleeping at once.
inline auto all_modes() {
  return ::testing::Values(Mode{"spin_only", WaitPolicy::spin_only()},
                           Mode{"hybrid", WaitPolicy::hybrid()},
                           Mode{"block", WaitPolicy::block()});
}

}  // namespace ipckit::testing
