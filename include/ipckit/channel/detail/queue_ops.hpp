// The blocking half every shared queue offers in the same words: push/pop with deadlines
// and timeouts, close, the optional-returning try_pop, built on the queue's own non-blocking
// try_push(const T&) / try_pop(T&) and its control block (CRTP: no virtual calls).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

#include "ipckit/channel/detail/control.hpp"
#include "ipckit/core/deadline.hpp"
#include "ipckit/shm/segment.hpp"

namespace ipckit::detail {

// Derived provides: try_push(const T&) -> bool, try_pop(T&) -> bool, control() ->
// ChannelControl&, region() -> const Region&, take(Side), a constructor
// Derived(Region, validated capacity), static constexpr LayoutSpec kLayout, and
// static constexpr const char* kPushWhat / kPopWhat / kOpenWhat for messages.
template <class Derived, class T>
class BlockingQueue {
 public:
  // The queue create() made under `name` in `seg`, once its creator has published it; the
  // caller takes `side` at once. open() waits for nothing; open_until()/open_for() wait
  // while the name is missing or the queue is being built. Throws errc::not_found,
  // errc::timeout (still being built), errc::bad_layout (not this queue type).
  static Derived open(Segment& seg, std::string_view name, Side side = Side::none) {
    return open_until(seg, name, Deadline::after(std::chrono::seconds(0)), side);
  }
  static Derived open_until(Segment& seg, std::string_view name, const Deadline& deadline,
                            Side side = Side::none) {
    std::uint64_t capacity = 0;
    Region r = Region::open(seg, name, Derived::kLayout, deadline, Derived::kOpenWhat, capacity);
    Derived q(std::move(r), capacity);
    q.take(side);
    return q;
  }
  template <class Rep, class Period>
  static Derived open_for(Segment& seg, std::string_view name,
                          std::chrono::duration<Rep, Period> timeout, Side side = Side::none) {
    return open_until(seg, name, Deadline::after(timeout), side);
  }

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
    T v{};
    if (!self().try_pop(v)) return std::nullopt;
    return v;
  }
  // Blocks while empty. Elements pushed before close() are still delivered; then throws
  // Error(errc::closed). Throws Error(errc::peer_dead) when the queue is empty and every
  // producer that attached has exited (after delivering what they pushed).
  T pop() {
    T v{};
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
    T v{};
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
