#include "engine/timing_wheel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "engine/limits.h"

namespace tw {
namespace {

constexpr int64_t kEpochMs = 1'700'000'000'000;  // a realistic wall-clock start
constexpr size_t kAll = std::numeric_limits<size_t>::max();
constexpr int64_t kYearMs = 366LL * 24 * 3600 * 1000;

struct Fired {
  uint64_t id;
  int64_t deadline_ms;
  bool operator==(const Fired&) const = default;
};

// Advances and returns what fired, in firing order.
std::vector<Fired> Advance(TimingWheel& wheel, int64_t now_ms, size_t budget = kAll) {
  std::vector<Fired> fired;
  const size_t n = wheel.AdvanceTo(now_ms, budget, [&](uint64_t id, int64_t deadline_ms) {
    fired.push_back({id, deadline_ms});
  });
  EXPECT_EQ(n, fired.size());
  wheel.Validate();
  return fired;
}

int64_t Pow64(int k) {
  int64_t v = 1;
  for (int i = 0; i < k; ++i) v *= 64;
  return v;
}

TEST(TimingWheelTest, FiresAtDeadlineNotBefore) {
  TimingWheel wheel(kEpochMs);
  const TimingWheel::Handle h = wheel.Schedule(7, kEpochMs + 5);
  EXPECT_TRUE(h.valid());
  EXPECT_EQ(wheel.size(), 1u);
  EXPECT_TRUE(Advance(wheel, kEpochMs + 4).empty());
  EXPECT_EQ(Advance(wheel, kEpochMs + 5), (std::vector<Fired>{{7, kEpochMs + 5}}));
  EXPECT_EQ(wheel.size(), 0u);
  EXPECT_TRUE(Advance(wheel, kEpochMs + 1000).empty());
}

TEST(TimingWheelTest, DeadlineInThePastOrNowFiresAtNextAdvance) {
  TimingWheel wheel(kEpochMs);
  wheel.Schedule(1, kEpochMs - 10'000);
  wheel.Schedule(2, kEpochMs);
  wheel.Schedule(3, std::numeric_limits<int64_t>::min());
  wheel.Schedule(4, -1);
  EXPECT_EQ(wheel.NextDeadline(), kEpochMs);  // <= now_ms(): work to do right now
  // No time passes, yet all four fire.
  std::vector<Fired> fired = Advance(wheel, kEpochMs);
  std::sort(fired.begin(), fired.end(), [](auto& a, auto& b) { return a.id < b.id; });
  EXPECT_EQ(fired, (std::vector<Fired>{{1, kEpochMs - 10'000},
                                       {2, kEpochMs},
                                       {3, std::numeric_limits<int64_t>::min()},
                                       {4, -1}}));
}

TEST(TimingWheelTest, OverdueFiresAtNextAdvanceEvenWithCoarseTickMidTick) {
  // now is 7 ms into a 10 ms tick; a deadline 2 ms ago is overdue and must not wait for the
  // next tick boundary.
  TimingWheel wheel(1007, 10);
  wheel.Schedule(1, 1005);
  EXPECT_EQ(Advance(wheel, 1008), (std::vector<Fired>{{1, 1005}}));
}

TEST(TimingWheelTest, ExactlyOnTickBoundary) {
  TimingWheel wheel(1000, 10);
  wheel.Schedule(1, 1100);  // exactly tick 110
  wheel.Schedule(2, 1101);  // rounds up to 1110
  EXPECT_TRUE(Advance(wheel, 1099).empty());
  EXPECT_EQ(Advance(wheel, 1100), (std::vector<Fired>{{1, 1100}}));
  EXPECT_TRUE(Advance(wheel, 1109).empty());
  EXPECT_EQ(Advance(wheel, 1110), (std::vector<Fired>{{2, 1101}}));
}

TEST(TimingWheelTest, CoarseTickNeverEarlyAtMostOneTickLate) {
  for (uint32_t tick_ms : {2u, 7u, 10u, 1000u}) {
    SCOPED_TRACE(tick_ms);
    const int64_t start = kEpochMs + 3;  // deliberately not tick-aligned
    TimingWheel wheel(start, tick_ms);
    std::vector<int64_t> deadlines;
    for (int64_t d = start + 1; d <= start + int64_t{3} * tick_ms + 1; ++d) deadlines.push_back(d);
    for (int64_t d : deadlines) wheel.Schedule(static_cast<uint64_t>(d), d);
    // Advance one millisecond at a time: that is the finest a caller can observe.
    size_t total = 0;
    for (int64_t now = start; now <= start + int64_t{5} * tick_ms; ++now) {
      for (const Fired& f : Advance(wheel, now)) {
        EXPECT_LE(f.deadline_ms, now) << "early";
        EXPECT_LT(now - f.deadline_ms, tick_ms) << "more than one tick late";
        EXPECT_EQ(now % tick_ms, 0) << "fires only when a tick boundary is reached";
        ++total;
      }
    }
    EXPECT_EQ(total, deadlines.size());
  }
}

TEST(TimingWheelTest, EveryLevelBoundaryPlusMinusOne) {
  // 64^k ticks from now, +-1, for every level and the first overflow block, from an aligned and
  // an unaligned start, with 1 ms and 10 ms ticks. Approach the deadline in big jumps (to
  // exercise cascades), then check the last millisecond before it fires nothing.
  for (uint32_t tick_ms : {1u, 10u}) {
    for (int64_t start_ticks : {Pow64(6) * 24, Pow64(6) * 24 + 12345, Pow64(6) * 25 - 1}) {
      for (int k = 1; k <= 7; ++k) {
        for (int64_t delta : {-1, 0, 1}) {
          const int64_t start = start_ticks * tick_ms;
          const int64_t deadline = start + (Pow64(k) + delta) * tick_ms;
          SCOPED_TRACE(testing::Message() << "tick=" << tick_ms << " start=" << start << " k=" << k
                                          << " delta=" << delta);
          TimingWheel wheel(start, tick_ms);
          wheel.Schedule(1, deadline);
          wheel.Schedule(2, deadline + 1);  // a neighbour one millisecond later
          wheel.Schedule(3, start + (Pow64(k) + delta) / 2 * tick_ms + 1);  // a halfway one
          for (int64_t step = 1; step <= 4; ++step) {
            const int64_t to = start + (deadline - 1 - start) * step / 4;
            for (const Fired& f : Advance(wheel, to)) EXPECT_LE(f.deadline_ms, to);
          }
          EXPECT_EQ(wheel.size(), 2u);
          EXPECT_TRUE(Advance(wheel, deadline - 1).empty());
          EXPECT_EQ(Advance(wheel, deadline), (std::vector<Fired>{{1, deadline}}));
          // Next due time for deadline + 1 is one tick later.
          EXPECT_EQ(wheel.NextDeadline(), deadline + tick_ms);
          EXPECT_TRUE(Advance(wheel, deadline + tick_ms - 1).empty());
          EXPECT_EQ(Advance(wheel, deadline + tick_ms), (std::vector<Fired>{{2, deadline + 1}}));
        }
      }
    }
  }
}

TEST(TimingWheelTest, MaximumRangeOneYearAndBeyond) {
  TimingWheel wheel(kEpochMs);
  const std::vector<int64_t> deadlines = {kEpochMs + kYearMs, kEpochMs + kYearMs + 1,
                                          kEpochMs + 2 * kYearMs, kEpochMs + 10 * kYearMs,
                                          kEpochMs + 1000 * kYearMs};
  for (size_t i = 0; i < deadlines.size(); ++i) wheel.Schedule(i, deadlines[i]);
  const TimingWheel::Handle never = wheel.Schedule(99, std::numeric_limits<int64_t>::max());
  for (size_t i = 0; i < deadlines.size(); ++i) {
    EXPECT_TRUE(Advance(wheel, deadlines[i] - 1).empty());
    EXPECT_EQ(Advance(wheel, deadlines[i]), (std::vector<Fired>{{i, deadlines[i]}}));
  }
  EXPECT_EQ(wheel.size(), 1u);
  EXPECT_GT(wheel.NextDeadline().value(), wheel.now_ms());
  EXPECT_TRUE(wheel.Cancel(never));
  EXPECT_EQ(wheel.size(), 0u);
}

TEST(TimingWheelTest, DeadlineAtInt64MaxFiresOnlyAtTheEndOfTime) {
  TimingWheel wheel(kEpochMs, 7);
  wheel.Schedule(1, std::numeric_limits<int64_t>::max());
  EXPECT_TRUE(Advance(wheel, std::numeric_limits<int64_t>::max() - 1).empty());
  EXPECT_EQ(wheel.NextDeadline(), std::numeric_limits<int64_t>::max());  // saturated
  EXPECT_EQ(Advance(wheel, std::numeric_limits<int64_t>::max()),
            (std::vector<Fired>{{1, std::numeric_limits<int64_t>::max()}}));
}

TEST(TimingWheelTest, CancelPendingFiredAndTwice) {
  TimingWheel wheel(kEpochMs);
  const TimingWheel::Handle a = wheel.Schedule(1, kEpochMs + 10);
  const TimingWheel::Handle b = wheel.Schedule(2, kEpochMs + 20);
  EXPECT_TRUE(wheel.Cancel(b));
  EXPECT_FALSE(wheel.Cancel(b)) << "double cancel";
  EXPECT_EQ(Advance(wheel, kEpochMs + 100), (std::vector<Fired>{{1, kEpochMs + 10}}));
  EXPECT_FALSE(wheel.Cancel(a)) << "cancel after it fired";
  EXPECT_FALSE(wheel.Cancel(TimingWheel::Handle{}));
  EXPECT_FALSE(wheel.Cancel(TimingWheel::Handle{123456, 0})) << "never issued";
  EXPECT_EQ(wheel.size(), 0u);
  wheel.Validate();
}

TEST(TimingWheelTest, StaleHandleStaysStaleAfterEntryReuse) {
  TimingWheel wheel(kEpochMs);
  const TimingWheel::Handle old = wheel.Schedule(1, kEpochMs + 10);
  EXPECT_TRUE(wheel.Cancel(old));
  const TimingWheel::Handle fresh = wheel.Schedule(2, kEpochMs + 10);
  EXPECT_EQ(fresh.index, old.index) << "the free list hands the entry back";
  EXPECT_NE(fresh.generation, old.generation);
  EXPECT_FALSE(wheel.Cancel(old));
  EXPECT_FALSE(wheel.Reschedule(old, kEpochMs + 5).valid());
  EXPECT_EQ(wheel.size(), 1u);
  EXPECT_EQ(Advance(wheel, kEpochMs + 10), (std::vector<Fired>{{2, kEpochMs + 10}}));
}

TEST(TimingWheelTest, PrefetchTakesAnyHandleAndChangesNothing) {
  using Handle = TimingWheel::Handle;
  TimingWheel wheel(kEpochMs);
  // No pool yet: every index is out of range, including ones far past the chunk table.
  for (const Handle h : {Handle{}, Handle{0, 0}, Handle{123456, 7}, Handle{UINT32_MAX - 1, 0}}) {
    wheel.Prefetch(h);
    wheel.PrefetchLinks(h);
  }
  EXPECT_EQ(wheel.size(), 0u);
  wheel.Validate();
  // 65 timers on one deadline: lane 0 chains entries 0, 32 and 64, so entry 32 has both
  // neighbours, and the others one each.
  std::vector<Handle> handles;
  for (uint64_t id = 0; id < 65; ++id) handles.push_back(wheel.Schedule(id, kEpochMs + 10));
  const Handle cancelled = handles[7];
  ASSERT_TRUE(wheel.Cancel(cancelled));
  std::vector<Handle> probes = handles;
  probes.push_back(Handle{handles[3].index, handles[3].generation + 1});  // forged generation
  probes.push_back(Handle{65, 0});        // past every entry handed out
  probes.push_back(Handle{1u << 20, 0});  // past the pool
  for (const Handle h : probes) {
    wheel.Prefetch(h);
    wheel.PrefetchLinks(h);
  }
  wheel.Validate();
  EXPECT_EQ(wheel.size(), 64u);
  EXPECT_FALSE(wheel.Cancel(cancelled)) << "a prefetch must not revive a stale handle";
  EXPECT_TRUE(wheel.Cancel(handles[32]));
  const std::vector<Fired> fired = Advance(wheel, kEpochMs + 10);
  EXPECT_EQ(fired.size(), 63u);
  for (const Fired& f : fired) {
    EXPECT_NE(f.id, 7u);
    EXPECT_NE(f.id, 32u);
    EXPECT_EQ(f.deadline_ms, kEpochMs + 10);
  }
}

TEST(TimingWheelTest, RescheduleEarlierAndLater) {
  TimingWheel wheel(kEpochMs);
  TimingWheel::Handle a = wheel.Schedule(1, kEpochMs + 100'000);
  TimingWheel::Handle b = wheel.Schedule(2, kEpochMs + 10);
  a = wheel.Reschedule(a, kEpochMs + 5);  // much earlier: from level 2 to level 0
  EXPECT_TRUE(a.valid());
  b = wheel.Reschedule(b, kEpochMs + 5'000'000);  // much later
  EXPECT_TRUE(b.valid());
  EXPECT_EQ(wheel.size(), 2u);
  EXPECT_EQ(Advance(wheel, kEpochMs + 5), (std::vector<Fired>{{1, kEpochMs + 5}}));
  EXPECT_TRUE(Advance(wheel, kEpochMs + 4'999'999).empty());
  EXPECT_EQ(Advance(wheel, kEpochMs + 5'000'000), (std::vector<Fired>{{2, kEpochMs + 5'000'000}}));
  EXPECT_FALSE(wheel.Reschedule(a, kEpochMs).valid()) << "fired: stale";
}

TEST(TimingWheelTest, RescheduleToThePastFiresAtNextAdvance) {
  TimingWheel wheel(kEpochMs);
  TimingWheel::Handle a = wheel.Schedule(1, kEpochMs + 1'000'000);
  EXPECT_EQ(wheel.Reschedule(a, kEpochMs - 1).index, a.index);
  EXPECT_EQ(Advance(wheel, kEpochMs), (std::vector<Fired>{{1, kEpochMs - 1}}));
}

TEST(TimingWheelTest, ScheduleCancelAndRescheduleFromInsideTheCallback) {
  TimingWheel wheel(kEpochMs);
  // Two timers due in the same tick (their order within it is unspecified): whichever fires
  // first cancels the other, which therefore never fires.
  const TimingWheel::Handle twins[2] = {wheel.Schedule(1, kEpochMs + 10),
                                        wheel.Schedule(2, kEpochMs + 10)};
  TimingWheel::Handle moved = wheel.Schedule(3, kEpochMs + 50);
  std::vector<Fired> fired;
  int64_t now = kEpochMs + 10;
  auto fn = [&](uint64_t id, int64_t deadline_ms) {
    fired.push_back({id, deadline_ms});
    if (id == 1 || id == 2) {
      EXPECT_FALSE(wheel.Cancel(twins[id - 1])) << "its own handle is stale in the callback";
      EXPECT_TRUE(wheel.Cancel(twins[2 - id]));         // same tick, not yet fired
      moved = wheel.Reschedule(moved, kEpochMs + 200);  // later
      EXPECT_TRUE(moved.valid());
      wheel.Schedule(10, kEpochMs + 100);  // re-arm, in the future
      wheel.Schedule(11, kEpochMs + 9);    // overdue: fires in this call
      wheel.Validate();
    }
  };
  EXPECT_EQ(wheel.AdvanceTo(now, kAll, fn), 2u);
  ASSERT_EQ(fired.size(), 2u);
  EXPECT_TRUE(fired[0].id == 1 || fired[0].id == 2);
  EXPECT_EQ(fired[1], (Fired{11, kEpochMs + 9}));
  fired.clear();
  now = kEpochMs + 1000;
  EXPECT_EQ(wheel.AdvanceTo(now, kAll, fn), 2u);
  EXPECT_EQ(fired, (std::vector<Fired>{{10, kEpochMs + 100}, {3, kEpochMs + 200}}));
  wheel.Validate();
}

TEST(TimingWheelTest, CallbackRescheduleEarlierThanPendingBacklog) {
  // The engine's lazy re-arm: while catching up over a long gap, a callback moves another
  // pending timer to a deadline still inside the gap; it must fire in this same call.
  TimingWheel wheel(kEpochMs);
  wheel.Schedule(1, kEpochMs + 10);
  TimingWheel::Handle later = wheel.Schedule(2, kEpochMs + 900'000);
  std::vector<Fired> fired;
  wheel.AdvanceTo(kEpochMs + 1'000'000, kAll, [&](uint64_t id, int64_t deadline_ms) {
    fired.push_back({id, deadline_ms});
    if (id == 1) {
      EXPECT_TRUE(wheel.Reschedule(later, kEpochMs + 500'000).valid());
    }
  });
  EXPECT_EQ(fired, (std::vector<Fired>{{1, kEpochMs + 10}, {2, kEpochMs + 500'000}}));
}

TEST(TimingWheelTest, BudgetLimitedAdvanceResumesWhereItLeftOff) {
  TimingWheel wheel(kEpochMs);
  // 100 timers over 10 ticks, plus far ones that need cascades.
  std::vector<int64_t> deadline_of(200);
  for (uint64_t id = 0; id < 100; ++id) deadline_of[id] = kEpochMs + 1 + id % 10;
  for (uint64_t id = 100; id < 200; ++id) deadline_of[id] = kEpochMs + 5000 * (id - 99);
  for (uint64_t id = 0; id < 200; ++id) wheel.Schedule(id, deadline_of[id]);
  const int64_t end = kEpochMs + int64_t{5000} * 101;
  std::vector<int> times_fired(200, 0);
  int64_t last_deadline = 0;
  size_t calls = 0;
  while (wheel.size() > 0) {
    const std::vector<Fired> fired = Advance(wheel, end, 7);
    EXPECT_LE(fired.size(), 7u);
    for (const Fired& f : fired) {
      ++times_fired[f.id];
      EXPECT_EQ(f.deadline_ms, deadline_of[f.id]);
      EXPECT_GE(f.deadline_ms, last_deadline) << "tick order across budget stops";
      last_deadline = f.deadline_ms;
    }
    ++calls;
    ASSERT_LT(calls, 100u);
  }
  EXPECT_EQ(calls, (200 + 6) / 7);
  EXPECT_TRUE(std::all_of(times_fired.begin(), times_fired.end(), [](int n) { return n == 1; }));
  // A budget of 0 fires nothing but still moves time.
  wheel.Schedule(1, end + 1);
  EXPECT_TRUE(Advance(wheel, end + 1, 0).empty());
  EXPECT_EQ(wheel.now_ms(), end + 1);
  EXPECT_EQ(Advance(wheel, end).size(), 1u) << "an earlier now resumes the backlog";
}

TEST(TimingWheelTest, BacklogResumesWithAnEarlierNow) {
  TimingWheel wheel(kEpochMs);
  for (uint64_t id = 0; id < 10; ++id) wheel.Schedule(id, kEpochMs + 100 + id);
  EXPECT_EQ(Advance(wheel, kEpochMs + 1000, 3).size(), 3u);
  EXPECT_LE(wheel.NextDeadline().value(), wheel.now_ms()) << "backlog is visible";
  // The clock stepped back: time does not move, but the backlog is still due.
  EXPECT_EQ(Advance(wheel, kEpochMs + 500).size(), 7u);
  EXPECT_EQ(wheel.now_ms(), kEpochMs + 1000);
}

TEST(TimingWheelTest, FiresInDeadlineOrder) {
  TimingWheel wheel(kEpochMs);
  uint64_t x = 12345;
  std::vector<int64_t> deadlines;
  for (uint64_t id = 0; id < 5000; ++id) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    const int64_t d = kEpochMs + static_cast<int64_t>((x >> 33) % 10'000'000);
    deadlines.push_back(d);
    wheel.Schedule(id, d);
  }
  const std::vector<Fired> fired = Advance(wheel, kEpochMs + 10'000'000);
  ASSERT_EQ(fired.size(), deadlines.size());
  for (size_t i = 1; i < fired.size(); ++i) {
    EXPECT_LE(fired[i - 1].deadline_ms, fired[i].deadline_ms);
  }
}

TEST(TimingWheelTest, AdvancingOverAnIdleGapVisitsOLevelsSlots) {
  TimingWheel wheel(kEpochMs);
  // Empty wheel: ten years of idle time visit no slot at all.
  EXPECT_TRUE(Advance(wheel, kEpochMs + 10 * kYearMs).empty());
  EXPECT_EQ(wheel.slots_visited(), 0u);
  // One timer a year out: one slot per cascade level plus the firing slot, not 3e10 ticks.
  const int64_t start = wheel.now_ms();
  wheel.Schedule(1, start + kYearMs);
  EXPECT_EQ(Advance(wheel, start + kYearMs).size(), 1u);
  EXPECT_LE(wheel.slots_visited(), limits::kWheelLevels + 1u);
  // Idle steps that reach no occupied slot cost nothing either.
  const uint64_t visited = wheel.slots_visited();
  wheel.Schedule(2, start + 3 * kYearMs);
  for (int i = 1; i <= 1000; ++i) Advance(wheel, start + kYearMs + i * 1'000'000LL);
  EXPECT_LE(wheel.slots_visited() - visited, limits::kWheelLevels + 1u);
}

TEST(TimingWheelTest, NextDeadline) {
  TimingWheel wheel(kEpochMs);
  EXPECT_EQ(wheel.NextDeadline(), std::nullopt);
  const TimingWheel::Handle near = wheel.Schedule(1, kEpochMs + 5);
  EXPECT_EQ(wheel.NextDeadline(), kEpochMs + 5) << "exact within 64 ticks";
  wheel.Cancel(near);
  EXPECT_EQ(wheel.NextDeadline(), std::nullopt);

  // Far: a lower bound that tightens to exact as the wheel follows it.
  const int64_t deadline = kEpochMs + 123'456'789;
  wheel.Schedule(2, deadline);
  int hops = 0;
  for (;;) {
    const int64_t next = wheel.NextDeadline().value();
    EXPECT_LE(next, deadline);
    EXPECT_GT(next, wheel.now_ms());
    if (!Advance(wheel, next).empty()) {
      EXPECT_EQ(next, deadline);
      break;
    }
    ASSERT_LE(++hops, static_cast<int>(limits::kWheelLevels));
  }

  // Coarse tick: the due time, i.e. the deadline rounded up to the tick.
  TimingWheel coarse(1000, 10);
  coarse.Schedule(1, 1033);
  EXPECT_EQ(coarse.NextDeadline(), 1040);
}

TEST(TimingWheelTest, SizeCountsPendingOnly) {
  TimingWheel wheel(kEpochMs);
  std::vector<TimingWheel::Handle> handles;
  for (uint64_t id = 0; id < 10; ++id) handles.push_back(wheel.Schedule(id, kEpochMs + 1 + id));
  EXPECT_EQ(wheel.size(), 10u);
  wheel.Cancel(handles[9]);
  EXPECT_EQ(wheel.size(), 9u);
  wheel.Reschedule(handles[0], kEpochMs + 1000);
  EXPECT_EQ(wheel.size(), 9u);
  Advance(wheel, kEpochMs + 5);
  EXPECT_EQ(wheel.size(), 5u);
  Advance(wheel, kEpochMs + 1000);
  EXPECT_EQ(wheel.size(), 0u);
}

TEST(TimingWheelTest, PoolIsReusedNotGrown) {
  TimingWheel wheel(kEpochMs);
  std::vector<TimingWheel::Handle> handles;
  for (uint64_t id = 0; id < 1000; ++id) handles.push_back(wheel.Schedule(id, kEpochMs + 10));
  const size_t bytes = wheel.bytes_allocated();
  EXPECT_GE(bytes, 1000u * 32);
  // A million more arm / cancel / fire cycles at the same peak never grow the pool.
  for (int round = 0; round < 1000; ++round) {
    for (auto& h : handles) EXPECT_TRUE(wheel.Cancel(h));
    for (uint64_t id = 0; id < 1000; ++id) {
      handles[id] = wheel.Schedule(id, wheel.now_ms() + 1 + static_cast<int64_t>(id));
    }
    if (round % 2 == 0) {
      EXPECT_EQ(Advance(wheel, wheel.now_ms() + 1000).size(), 1000u);
      for (uint64_t id = 0; id < 1000; ++id) {
        handles[id] = wheel.Schedule(id, wheel.now_ms() + 1 + static_cast<int64_t>(id));
      }
    }
  }
  EXPECT_EQ(wheel.bytes_allocated(), bytes);
}

TEST(TimingWheelTest, PoolGrowsInWholeChunksWhenFull) {
  TimingWheel wheel(kEpochMs);
  const uint32_t chunk = limits::kWheelPoolChunkEntries;
  EXPECT_LT(wheel.bytes_allocated(), 32u * chunk) << "nothing allocated before first use";
  for (uint64_t id = 0; id < chunk; ++id) wheel.Schedule(id, kEpochMs + 1 + id % 5000);
  const size_t one_chunk = wheel.bytes_allocated();
  EXPECT_GE(one_chunk, 32u * chunk);
  EXPECT_LE(one_chunk, 32u * chunk + 4096);
  wheel.Schedule(chunk, kEpochMs + 1);
  EXPECT_EQ(wheel.bytes_allocated(), one_chunk + size_t{32} * chunk);
  EXPECT_EQ(wheel.size(), chunk + 1u);
  wheel.Validate();
  EXPECT_EQ(Advance(wheel, kEpochMs + 5000).size(), chunk + 1u);
}

TEST(TimingWheelTest, ScheduleRefusesPastTimersMax) {
  TimingWheel wheel(kEpochMs, 1, 3);
  std::vector<TimingWheel::Handle> handles;
  for (uint64_t id = 0; id < 3; ++id) handles.push_back(wheel.Schedule(id, kEpochMs + 1));
  for (const auto& h : handles) EXPECT_TRUE(h.valid());
  EXPECT_FALSE(wheel.Schedule(3, kEpochMs + 1).valid());
  EXPECT_EQ(wheel.size(), 3u);
  EXPECT_TRUE(wheel.Cancel(handles[0]));
  EXPECT_TRUE(wheel.Schedule(4, kEpochMs + 1).valid()) << "room again after a cancel";
}

TEST(TimingWheelTest, TimeNeverMovesBackward) {
  TimingWheel wheel(kEpochMs);
  wheel.Schedule(1, kEpochMs + 100);
  EXPECT_TRUE(Advance(wheel, kEpochMs + 50).empty());
  EXPECT_TRUE(Advance(wheel, kEpochMs - 10'000).empty());
  EXPECT_EQ(wheel.now_ms(), kEpochMs + 50);
  EXPECT_EQ(Advance(wheel, kEpochMs + 100).size(), 1u);
}

TEST(TimingWheelTest, StartAtZeroAndSmallTimes) {
  TimingWheel wheel(0);
  wheel.Schedule(1, 1);
  wheel.Schedule(2, 64);
  wheel.Schedule(3, 65);
  EXPECT_EQ(Advance(wheel, 1).size(), 1u);
  EXPECT_EQ(Advance(wheel, 64).size(), 1u);
  EXPECT_EQ(Advance(wheel, 65).size(), 1u);
}

TEST(TimingWheelDeathTest, ConstructorPreconditions) {
  EXPECT_DEATH((void)TimingWheel(kEpochMs, 0), "tick_ms >= 1");
  EXPECT_DEATH((void)TimingWheel(-1), "start_ms >= 0");
}

}  // namespace
}  // namespace tw
