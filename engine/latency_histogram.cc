#include "engine/latency_histogram.h"

#include <algorithm>
#include <cmath>

#include "engine/assert.h"

namespace tw {

uint64_t LatencyQuantileUs(const LatencyBuckets::Counts& counts, double q) {
  TW_ASSERT(q > 0 && q <= 1);
  const uint64_t total = LatencyCount(counts);
  if (total == 0) return 0;
  // The rank of the q-quantile, 1-based: the smallest r >= 1 with r >= q * total.
  const uint64_t rank =
      std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * static_cast<double>(total))));
  uint64_t seen = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    seen += counts[i];
    if (seen >= rank) {
      return i + 1 < counts.size() ? LatencyBuckets::UpperBound(i) : LatencyBuckets::LowerBound(i);
    }
  }
  return LatencyBuckets::LowerBound(counts.size() - 1);  // not reached
}

uint64_t LatencyCount(const LatencyBuckets::Counts& counts) {
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  return total;
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
