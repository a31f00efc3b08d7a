/// @class ipckit::Deadline
/// Deadline: a point on the monotonic clock (CLOCK_MONOTONIC) by which a blocking call must
/// return. Every blocking call in ipckit takes one, built from a timeout or "never".
#pragma once

#include <time.h>

#include <chrono>
#include <cstdint>

namespace ipckit {

class Deadline {
 public:
  using clock = std::chrono::steady_clock;  ///< CLOCK_MONOTONIC on Linux

  /// A deadline that never passes.
  static Deadline never() noexcept { return Deadline{clock::time_point::max()}; }
  /// The deadline at time point `t`.
  static Deadline at(clock::time_point t) noexcept { return Deadline{t}; }
  /// Now + `d`: now itself for a zero or negative `d`, never() when now + `d` would overflow.
  template <class Rep, class Period>
  static Deadline after(std::chrono::duration<Rep, Period> d) noexcept {
    const auto now = clock::now();
    if (d <= d.zero()) return Deadline{now};
    // Compare in floating point first: casting a huge duration to nanoseconds overflows.
    using fsec = std::chrono::duration<double>;
    if (std::chrono::duration_cast<fsec>(d) >=
        std::chrono::duration_cast<fsec>(clock::time_point::max() - now)) {
      return never();
    }
    return Deadline{now + std::chrono::duration_cast<clock::duration>(d)};
  }

  /// True for never().
  [[nodiscard]] bool is_never() const noexcept { return t_ == clock::time_point::max(); }
  /// True once the deadline has passed (never for never()).
  [[nodiscard]] bool expired() const noexcept { return !is_never() && clock::now() >= t_; }
  /// The time point (clock::time_point::max() for never()).
  [[nodiscard]] clock::time_point when() const noexcept { return t_; }
  /// Time left, zero once expired, clock::duration::max() for never().
  [[nodiscard]] clock::duration remaining() const noexcept {
    if (is_never()) return clock::duration::max();
    const auto left = t_ - clock::now();
    return left > clock::duration::zero() ? left : clock::duration::zero();
  }
  /// The earlier of this deadline and now + d: used to slice a long wait into bounded sleeps.
  template <class Rep, class Period>
  [[nodiscard]] Deadline capped(std::chrono::duration<Rep, Period> d) const noexcept {
    const Deadline other = after(d);
    return other.t_ < t_ ? other : *this;
  }
  /// Absolute CLOCK_MONOTONIC time for futex/pthread timed calls (valid unless is_never()).
  [[nodiscard]] timespec to_timespec() const noexcept {
    const auto ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(t_.time_since_epoch()).count();
    return timespec{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  }

 private:
  explicit Deadline(clock::time_point t) noexcept : t_(t) {}
  clock::time_point t_;
};

}  // namespace ipckit
