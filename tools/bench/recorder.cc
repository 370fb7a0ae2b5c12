#include "tools/bench/recorder.h"

#include <algorithm>
#include <cmath>

namespace tw::bench {

int64_t SortedQuantile(const std::vector<int64_t>& v, double p) {
  if (v.empty()) return 0;
  const double rank = std::ceil(p * static_cast<double>(v.size())) - 1;
  const size_t i = rank < 0 ? 0 : static_cast<size_t>(rank);
  return v[std::min(i, v.size() - 1)];
}

void Recorder::Record(int64_t latency_us, int64_t done_us, int64_t transitions) {
  ++operations_;
  transitions_ += transitions;
  if (latencies_us_.size() < kSamplesPerClientMax) {
    latencies_us_.push_back(latency_us);
    sorted_ = false;
  } else {
    ++dropped_;
  }
  const int64_t bin = (done_us - start_us_) / (kTimelineBinMs * 1000);
  if (bin >= 0 && static_cast<size_t>(bin) < kTimelineBinsMax) {
    if (bins_.size() <= static_cast<size_t>(bin)) bins_.resize(static_cast<size_t>(bin) + 1, 0);
    bins_[static_cast<size_t>(bin)] += transitions;
  }
}

void Recorder::Merge(const Recorder& other) {
  operations_ += other.operations_;
  transitions_ += other.transitions_;
  dropped_ += other.dropped_;
  latencies_us_.insert(latencies_us_.end(), other.latencies_us_.begin(), other.latencies_us_.end());
  sorted_ = false;
  if (bins_.size() < other.bins_.size()) bins_.resize(other.bins_.size(), 0);
  for (size_t i = 0; i < other.bins_.size(); ++i) bins_[i] += other.bins_[i];
}

double Recorder::QuantileMs(double p) const {
  if (!sorted_) {
    std::sort(latencies_us_.begin(), latencies_us_.end());
    sorted_ = true;
  }
  return static_cast<double>(SortedQuantile(latencies_us_, p)) / 1000.0;
}

nlohmann::json Recorder::Percentiles() const {
  return {{"p50", QuantileMs(0.5)},         {"p90", QuantileMs(0.9)},
          {"p99", QuantileMs(0.99)},        {"p99.9", QuantileMs(0.999)},
          {"p99.99", QuantileMs(0.9999)},   {"max", QuantileMs(1.0)},
          {"samples", latencies_us_.size()}};
}

nlohmann::json Recorder::Timeline() const {
  nlohmann::json t = nlohmann::json::array();
  for (int64_t b : bins_) t.push_back(b * 1000 / kTimelineBinMs);
  return t;
}

}  // namespace tw::bench
