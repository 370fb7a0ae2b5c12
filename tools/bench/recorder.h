// Latency samples and throughput over time, per client thread, merged after a run. Latency is
// measured from the intended send time when the load is open-loop (coordinated omission
// corrected: a call that waits behind a slow one counts its wait).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "tools/bench/system.h"

namespace tw::bench {

inline constexpr int64_t kTimelineBinMs = 100;  // throughput over time, per bin
inline constexpr size_t kTimelineBinsMax = kRunSecondsMax * 1000 / kTimelineBinMs;

class Recorder {
 public:
  explicit Recorder(int64_t start_us) : start_us_(start_us) {}
  // One operation that ended at done_us (steady) after latency_us, with its transitions.
  void Record(int64_t latency_us, int64_t done_us, int64_t transitions);
  void Merge(const Recorder& other);

  int64_t operations() const { return operations_; }
  int64_t transitions() const { return transitions_; }
  int64_t dropped() const { return dropped_; }
  // p50 .. p99.99 and max, in ms.
  nlohmann::json Percentiles() const;
  // The p-quantile (0..1) in ms; 0 without samples.
  double QuantileMs(double p) const;
  // Transitions per second in each kTimelineBinMs bin since the start.
  nlohmann::json Timeline() const;

 private:
  int64_t start_us_;
  mutable std::vector<int64_t> latencies_us_;
  mutable bool sorted_ = false;
  std::vector<int64_t> bins_;  // transitions per bin
  int64_t operations_ = 0;
  int64_t transitions_ = 0;
  int64_t dropped_ = 0;  // samples past kSamplesPerClientMax (still counted)
};

// The p-quantile (0..1) of sorted `v`, by rank.
int64_t SortedQuantile(const std::vector<int64_t>& v, double p);

}  // namespace tw::bench
