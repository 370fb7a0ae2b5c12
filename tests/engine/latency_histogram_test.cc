// LatencyBuckets' layout and LatencyHistogram's quantiles (engine/latency_histogram.h).
#include "engine/latency_histogram.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace tw {
namespace {

using B = LatencyBuckets;

// Every value lands in a bucket whose bounds hold it, no wider than a quarter of its lower
// bound (from 4 us on), and the index never decreases as the value grows.
TEST(LatencyBucketsTest, EveryValueFallsInsideItsBucket) {
  std::vector<uint64_t> values;
  for (uint64_t v = 0; v < 70'000; ++v) values.push_back(v);
  for (uint32_t e = 16; e < 64; ++e) {
    const uint64_t p = uint64_t{1} << e;
    for (uint64_t v : {p - 1, p, p + 1, p + p / 4 - 1, p + p / 4, p + p / 2 + 3})
      values.push_back(v);
  }
  values.push_back(UINT64_MAX);
  size_t last_index = 0;
  uint64_t last_value = 0;
  for (uint64_t v : values) {
    const size_t i = B::IndexOf(v);
    ASSERT_LT(i, B::kCount) << v;
    EXPECT_LE(B::LowerBound(i), v) << v;
    if (i + 1 < B::kCount) {
      EXPECT_LT(v, B::UpperBound(i)) << v;
      if (v >= B::kSubBuckets) {
        EXPECT_LE(B::UpperBound(i) - B::LowerBound(i), B::LowerBound(i) / 4) << v;
      }
    } else {
      EXPECT_GE(v, uint64_t{1} << B::kTopExponent) << "only the top values share the last bucket";
      EXPECT_EQ(B::UpperBound(i), UINT64_MAX);
    }
    if (v >= last_value) {
      EXPECT_GE(i, last_index) << v;
    }
    last_index = i;
    last_value = v;
  }
}

// Consecutive buckets tile the range: each one ends where the next begins.
TEST(LatencyBucketsTest, BucketsAreContiguous) {
  for (size_t i = 0; i + 1 < B::kCount; ++i) {
    EXPECT_EQ(B::UpperBound(i), B::LowerBound(i + 1)) << i;
    EXPECT_LT(B::LowerBound(i), B::LowerBound(i + 1)) << i;
    EXPECT_EQ(B::IndexOf(B::LowerBound(i)), i) << i;
  }
}

TEST(LatencyHistogramTest, QuantilesAreNeverBelowTheTrueValueAndAtMostAQuarterAbove) {
  LatencyHistogram h;
  EXPECT_EQ(LatencyQuantileUs(h.Snapshot(), 0.5), 0u) << "nothing recorded";
  for (uint64_t us = 1; us <= 1000; ++us) h.Record(us);
  const B::Counts c = h.Snapshot();
  uint64_t total = 0;
  for (uint64_t n : c) total += n;
  EXPECT_EQ(total, 1000u);
  EXPECT_EQ(LatencyCount(c), 1000u);
  EXPECT_EQ(h.max_us(), 1000u);
  for (auto [q, truth] : std::vector<std::pair<double, uint64_t>>{
           {0.001, 1}, {0.5, 500}, {0.9, 900}, {0.99, 990}, {0.999, 999}, {1.0, 1000}}) {
    const uint64_t got = LatencyQuantileUs(c, q);
    EXPECT_GE(got, truth) << q;
    EXPECT_LE(got, truth + truth / 4 + 1) << q;
  }
}

TEST(LatencyHistogramTest, OneSlowOutlierMovesOnlyTheTopQuantiles) {
  LatencyHistogram h;
  for (int i = 0; i < 999; ++i) h.Record(200);
  h.Record(40'000);
  const B::Counts c = h.Snapshot();
  EXPECT_LT(LatencyQuantileUs(c, 0.99), 300u);
  EXPECT_GE(LatencyQuantileUs(c, 1.0), 40'000u);
  EXPECT_EQ(h.max_us(), 40'000u);
}

TEST(LatencyHistogramTest, TheOpenEndedBucketReportsItsLowerBound) {
  LatencyHistogram h;
  h.Record(UINT64_MAX);
  EXPECT_EQ(LatencyQuantileUs(h.Snapshot(), 0.5), uint64_t{1} << B::kTopExponent);
  EXPECT_EQ(h.max_us(), UINT64_MAX);
}

TEST(LatencyHistogramTest, DeltaCountsOnlyWhatCameBetweenTwoSnapshots) {
  LatencyHistogram h;
  for (int i = 0; i < 100; ++i) h.Record(50);
  const B::Counts before = h.Snapshot();
  for (int i = 0; i < 10; ++i) h.Record(5000);
  const B::Counts delta = LatencyDelta(h.Snapshot(), before);
  uint64_t total = 0;
  for (uint64_t n : delta) total += n;
  EXPECT_EQ(total, 10u);
  EXPECT_GE(LatencyQuantileUs(delta, 0.5), 5000u);
  EXPECT_EQ(LatencyDelta(before, h.Snapshot())[B::IndexOf(5000)], 0u) << "never negative";
}

}  // namespace
}  // namespace tw
