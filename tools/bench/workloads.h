// tokenwheel-bench's workloads (docs/BENCHMARKS.md, "tokenwheel-bench"). Each runs against one
// started System and answers its figures as JSON; every figure's object carries `counts` that
// must agree with each other (the smoke test checks them) and an `error` when the run failed.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "tools/bench/system.h"

namespace tw::bench {

enum class Workload { kCallback, kActivity, kTimeoutStorm, kHeartbeats, kRecovery };

struct WorkloadOptions {
  Workload workload = Workload::kCallback;
  double seconds = 10;  // load workloads: each load step's length
  double rate = 0;      // operations/s; 0: closed-loop at the maximum
  bool sweep = false;   // closed-loop, then open-loop at fractions of its rate
  int clients = 16;
  int batch = 1;               // items per call (1: single calls)
  int64_t tasks = 1'000'000;   // storm, heartbeats, recovery
  uint32_t storm_clock_s = 5;  // the storm's heartbeat clock
  int heartbeats_per_op = 10;  // heartbeats workload: heartbeats per completion
  // timeout-storm: a callback load at this many operations/s (open loop) from the end of the
  // issuing until past the last deadline, so timers fire under load; 0: none (idle).
  double storm_load_rate = 0;
  // timeout-storm: issue over about this many seconds (paced), so that the deadlines spread over
  // it; 0: as fast as the system takes them.
  double storm_spread_s = 0;
};

// Parses "callback" ...; false for an unknown name.
bool ParseWorkload(const std::string& name, Workload* w);
const char* WorkloadName(Workload w);

nlohmann::json RunWorkload(System& system, const WorkloadOptions& o);

}  // namespace tw::bench
