#include "engine/latency_histogram.h"

#include "engine/assert.h"

namespace tw {

uint64_t LatencyQuantileUs(const LatencyBuckets::Counts& counts, double q) {
  TW_ASSERT(q > 0 && q <= 1);
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  if (total == 0) return 0;
  // The rank of the q-quantile, 1-based: the smallest r with r >= q * total.
  auto rank = static_cast<uint64_t>(q * static_cast<double>(total));
  if (static_cast<double>(rank) < q * static_cast<double>(total)) ++rank;
  if (rank == 0) rank = 1;
  uint64_t seen = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    seen += counts[i];
    if (seen >= rank) {
      return i + 1 < counts.size() ? LatencyBuckets::UpperBound(i) : LatencyBuckets::LowerBound(i);
    }
  }
  return LatencyBuckets::LowerBound(counts.size() - 1);  // not reached
}

LatencyBuckets::Counts LatencyDelta(const LatencyBuckets::Counts& counts,
                                    const LatencyBuckets::Counts& before) {
  LatencyBuckets::Counts out{};
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = counts[i] >= before[i] ? counts[i] - before[i] : 0;
  }
  return out;
}

}  // namespace tw
