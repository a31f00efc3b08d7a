// The blocking half every shared queue offers in the same words: push/pop with deadlines
// and timeouts, close, the optional-returning try_pop, built on the queue's own non-blocking
// try_push(const T&) / try_pop(T&) and its control block (CRTP: no virtual calls).
#pragma once

#include <chrono>
#include <optional>

#include "ipckit/channel/detail/control.hpp"
#include "ipckit/core/deadline.hpp"

namespace ipckit::detail {

// Derived provides: try_push(const T&) -> bool, try_pop(T&) -> bool, control() ->
// ChannelControl&, region() -> const Region&, and static constexpr const char* kPushWhat / kPopWhat for messages.
template <class Derived, class T>
class BlockingQueue {
 public:
  // Blocks while full. Throws Error(errc::closed) once the queue is closed,
  // Error(errc::peer_dead) when every consumer that attached has exited.
  void push(const T& v) {
    if (!self().try_push(v)) (void)push_until(v, Deadline::never());
  }
  // As push(); returns false, having pushed nothing, when the deadline passes first.
  [[nodiscard]] bool push_until(const T& v, const Deadline& deadline) {
    ChannelControl& c = self().control();
    return wait_side(
        c, c.writable, c.consumers, self().region(), deadline, Derived::kPushWhat,
        [&] { return self().try_push(v); }, /*fail_if_closed=*/true);
  }
  template <class Rep, class Period>
  [[nodiscard]] bool push_for(const T& v, std::chrono::duration<Rep, Period> timeout) {
    return push_until(v, Deadline::after(timeout));
  }

  // Empty optional when the queue is empty; never blocks.
  [[nodiscard]] std::optional<T> try_pop() {
    T v;
    if (!self().try_pop(v)) return std::nullopt;
    return v;
  }
  // Blocks while empty. Elements pushed before close() are still delivered; then throws
  // Error(errc::closed). Throws Error(errc::peer_dead) when the queue is empty and every
  // producer that attached has exited (after delivering what they pushed).
  T pop() {
    T v;
    if (!self().try_pop(v)) (void)pop_until(v, Deadline::never());
    return v;
  }
  [[nodiscard]] bool pop_until(T& out, const Deadline& deadline) {
    ChannelControl& c = self().control();
    return wait_side(
        c, c.readable, c.producers, self().region(), deadline, Derived::kPopWhat,
        [&] { return self().try_pop(out); }, /*fail_if_closed=*/false);
  }
  template <class Rep, class Period>
  [[nodiscard]] std::optional<T> pop_for(std::chrono::duration<Rep, Period> timeout) {
    T v;
    if (!pop_until(v, Deadline::after(timeout))) return std::nullopt;
    return v;
  }

  // Either side: no more pushes; pop() drains what is there, then throws errc::closed.
  void close() noexcept { self().control().close(); }
  [[nodiscard]] bool closed() const noexcept {
    return static_cast<const Derived&>(*this).control().is_closed();
  }
  [[nodiscard]] const WaitPolicy& policy() const noexcept {
    return static_cast<const Derived&>(*this).control().policy;
  }

 private:
  Derived& self() noexcept { return static_cast<Derived&>(*this); }
};

}  // namespace ipckit::detail
