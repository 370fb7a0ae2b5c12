// The latency samples of one front-end benchmark run and the counters derived from them
// (tw_bench_rpc, tw_bench_gateway). Header-only.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

namespace tw::bench {

using Clock = std::chrono::steady_clock;

inline uint32_t MicrosSince(Clock::time_point t0) {
  return static_cast<uint32_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count());
}

// Sorts `v` and returns its q-quantile (0 when empty).
inline uint32_t SortedQuantile(std::vector<uint32_t>& v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}

struct Run {
  std::vector<uint32_t> latency_us;
  uint64_t calls = 0;
  uint64_t transitions = 0;  // durable task transitions (issue, success)
  uint64_t errors = 0;

  void Report(benchmark::State& state, double seconds) {
    state.SetIterationTime(seconds);
    state.counters["calls_per_s"] = static_cast<double>(calls) / seconds;
    if (transitions > 0) {
      state.counters["transitions_per_s"] = static_cast<double>(transitions) / seconds;
    }
    state.counters["p50_us"] = SortedQuantile(latency_us, 0.50);
    state.counters["p99_us"] = SortedQuantile(latency_us, 0.99);
    state.counters["p999_us"] = SortedQuantile(latency_us, 0.999);
    state.counters["errors"] = static_cast<double>(errors);
  }
};

}  // namespace tw::bench
