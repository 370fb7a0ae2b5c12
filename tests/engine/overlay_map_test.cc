// TaskOverlayMap, the flat id -> record map of a batch's overlay, against std::map.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <string>

#include "engine/engine_core.h"

namespace tw {
namespace {

TaskId Id(uint64_t hi, uint64_t lo) {
  TaskId id;
  id.hi = hi;
  id.lo = lo;
  return id;
}

TEST(TaskOverlayMapTest, FindsWhatWasPutAndNothingElse) {
  TaskOverlayMap<std::string> m;
  EXPECT_EQ(m.find(Id(1, 2)), nullptr) << "empty";
  m[Id(1, 2)] = "a";
  m[Id(2, 1)] = "b";
  ASSERT_NE(m.find(Id(1, 2)), nullptr);
  EXPECT_EQ(*m.find(Id(1, 2)), "a");
  EXPECT_EQ(*m.find(Id(2, 1)), "b");
  EXPECT_EQ(m.find(Id(1, 1)), nullptr);
  m[Id(1, 2)] = "c";  // overwrite in place
  EXPECT_EQ(*m.find(Id(1, 2)), "c");
  EXPECT_EQ(m.size(), 2u);
}

TEST(TaskOverlayMapTest, MatchesAReferenceMapThroughGrowthAndReuse) {
  std::mt19937_64 rng(7);
  TaskOverlayMap<uint64_t> m;
  for (int round = 0; round < 4; ++round) {
    std::map<std::pair<uint64_t, uint64_t>, uint64_t> ref;
    // Few distinct hi values: many ids share a home slot, so probing is exercised.
    const int n = 3000 + 2000 * round;
    for (int i = 0; i < n; ++i) {
      const uint64_t hi = rng() % 64;
      const uint64_t lo = rng() % 4096;
      const uint64_t v = rng();
      m[Id(hi, lo)] = v;
      ref[{hi, lo}] = v;
    }
    ASSERT_EQ(m.size(), ref.size());
    for (const auto& [k, v] : ref) {
      const uint64_t* got = m.find(Id(k.first, k.second));
      ASSERT_NE(got, nullptr);
      EXPECT_EQ(*got, v);
    }
    for (int i = 0; i < 1000; ++i) {
      const uint64_t hi = 64 + rng() % 64;  // never inserted
      EXPECT_EQ(m.find(Id(hi, rng() % 4096)), nullptr);
    }
    m.clear();
    EXPECT_EQ(m.size(), 0u);
    EXPECT_EQ(
        m.find(ref.begin() == ref.end() ? Id(0, 0)
                                        : Id(ref.begin()->first.first, ref.begin()->first.second)),
        nullptr)
        << "clear forgets everything";
  }
}

}  // namespace
}  // namespace tw
