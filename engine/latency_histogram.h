// Durations in log-linear microsecond buckets: fixed size, no allocation, one recording thread
// at a time and any number of readers. The engine's writing thread records how long each group
// commit's write and sync took (EngineStats::commit_latency), so an operator can tell a slow
// disk from a busy engine.
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace tw {

// Bucket layout. Values 0-3 us have a bucket each. From 4 us on, each power of two [2^e, 2^e+1)
// is split into kSubBuckets equal parts, so a bucket's width is at most a quarter of its lower
// bound: a quantile read off the buckets is at most 25% above the true value. The last bucket
// also holds everything from 2^kTopExponent us (~18 minutes) up.
struct LatencyBuckets {
  static constexpr uint32_t kSubBits = 2;
  static constexpr uint32_t kSubBuckets = 1u << kSubBits;
  static constexpr uint32_t kTopExponent = 30;
  static constexpr size_t kCount = kSubBuckets + (kTopExponent - kSubBits) * kSubBuckets + 1;

  using Counts = std::array<uint64_t, kCount>;

  static size_t IndexOf(uint64_t us) {
    if (us < kSubBuckets) return static_cast<size_t>(us);
    const auto e = static_cast<uint32_t>(std::bit_width(us) - 1);  // e >= kSubBits
    if (e >= kTopExponent) return kCount - 1;
    const uint64_t sub = (us >> (e - kSubBits)) & (kSubBuckets - 1);
    return kSubBuckets + (e - kSubBits) * kSubBuckets + static_cast<size_t>(sub);
  }
  // The smallest value that falls in bucket i.
  static uint64_t LowerBound(size_t i) {
    if (i < kSubBuckets) return i;
    const size_t k = i - kSubBuckets;
    const uint32_t e = static_cast<uint32_t>(k / kSubBuckets) + kSubBits;
    const uint64_t sub = k % kSubBuckets;
    return (kSubBuckets + sub) << (e - kSubBits);
  }
  // One past the largest value that falls in bucket i (the last bucket has no end: UINT64_MAX).
  static uint64_t UpperBound(size_t i) { return i + 1 < kCount ? LowerBound(i + 1) : UINT64_MAX; }
};

// The q-quantile (0 < q <= 1) of the durations counted in `counts`, as the upper end of the
// bucket that holds it (rounded toward the slow side: never below the true value, apart from
// the open-ended last bucket, reported as its lower bound); 0 when nothing is counted.
uint64_t LatencyQuantileUs(const LatencyBuckets::Counts& counts, double q);
// How many durations `counts` holds.
uint64_t LatencyCount(const LatencyBuckets::Counts& counts);
// counts - before, bucket by bucket (for the durations recorded between two snapshots).
LatencyBuckets::Counts LatencyDelta(const LatencyBuckets::Counts& counts,
                                    const LatencyBuckets::Counts& before);

// Thread-safety: Record from one thread at a time; Snapshot and max_us from any thread. A
// snapshot taken while Record runs may miss that one value or count it without its max.
class LatencyHistogram {
 public:
  void Record(uint64_t us) {
    auto& bucket = counts_[LatencyBuckets::IndexOf(us)];
    bucket.store(bucket.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    if (us > max_us_.load(std::memory_order_relaxed)) {
      max_us_.store(us, std::memory_order_relaxed);
    }
  }
  LatencyBuckets::Counts Snapshot() const {
    LatencyBuckets::Counts out{};
    for (size_t i = 0; i < out.size(); ++i) out[i] = counts_[i].load(std::memory_order_relaxed);
    return out;
  }
  uint64_t max_us() const { return max_us_.load(std::memory_order_relaxed); }

 private:
  std::array<std::atomic<uint64_t>, LatencyBuckets::kCount> counts_{};
  std::atomic<uint64_t> max_us_{0};
};

}  // namespace tw
