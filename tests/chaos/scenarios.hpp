// The chaos scenarios: each runs one iteration (forks its processes, kills a victim chosen at
// random, checks the survivors and the messages) and adds what it saw to ctx.row. The leak
// check runs around each iteration in chaos.cpp.
#pragma once

#include <span>

#include "harness.hpp"

namespace ipckit::chaos {

void spsc_queue_scenario(Ctx& ctx);
void byte_ring_scenario(Ctx& ctx);
void socket_channel_scenario(Ctx& ctx);
void mpmc_queue_scenario(Ctx& ctx);
void channel_scenario(Ctx& ctx);
void queue_scenario(Ctx& ctx);
void pool_worker_scenario(Ctx& ctx);
void pool_parent_scenario(Ctx& ctx);
void barrier_scenario(Ctx& ctx);
void mutex_scenario(Ctx& ctx);
void shared_mutex_scenario(Ctx& ctx);
void condition_scenario(Ctx& ctx);
void event_scenario(Ctx& ctx);
void spmd_scenario(Ctx& ctx);
void segment_scenario(Ctx& ctx);

struct Scenario {
  const char* name;
  void (*run)(Ctx&);
  const char* what;
};

std::span<const Scenario> all_scenarios();

}  // namespace ipckit::chaos
