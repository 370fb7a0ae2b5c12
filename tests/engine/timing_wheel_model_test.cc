// Randomized model test: the wheel against a plain reference (a std::multimap keyed by due
// time). Random Schedule / Cancel / Reschedule / AdvanceTo, random time jumps (one tick to
// decades), random budgets, and random wheel calls from inside the firing callback. After every
// advance: each fired timer was pending and fires once, with its deadline, never before its due
// time; and after every advance that did not run out of budget, exactly the timers due by then
// have fired (so none is more than one tick late).
//
// Every failure prints its seed. Replay one with TW_SEED=<n>; run more with
// TW_MODEL_SEEDS=<n>; change the length of each run with TW_MODEL_OPS=<n>.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/timing_wheel.h"

namespace tw {
namespace {

constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr size_t kAll = std::numeric_limits<size_t>::max();
constexpr int64_t kDayMs = 24LL * 3600 * 1000;

// Default run: 32 seeds x 65,536 top-level operations = 2,097,152.
constexpr uint64_t kDefaultSeeds = 32;
constexpr uint64_t kDefaultOpsPerSeed = 65'536;

// What the runs exercised, printed at the end so a reader can see the edges were reached.
struct Coverage {
  uint64_t ops = 0;
  uint64_t fired = 0;
  uint64_t fired_overdue = 0;
  uint64_t advances = 0;
  uint64_t budget_stops = 0;
  uint64_t nested_ops = 0;
  uint64_t stale_checks = 0;
  uint64_t slots_visited = 0;
  uint64_t max_pending = 0;
};

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

class ModelRun {
 public:
  // Members initialize in declaration order, so the seed alone fixes the start and tick.
  ModelRun(uint64_t seed, Coverage* coverage)
      : coverage_(coverage),
        rng_(seed),
        tick_ms_(PickTick()),
        model_now_(PickStart()),
        wheel_(model_now_, tick_ms_) {}

  void Run(uint64_t ops) {
    for (uint64_t op = 0; op < ops && !testing::Test::HasFailure(); ++op) {
      Step();
      ++coverage_->ops;
      coverage_->max_pending = std::max<uint64_t>(coverage_->max_pending, live_.size());
      if (op % 512 == 0) wheel_.Validate();
    }
    wheel_.Validate();
    // Drain: everything pending fires once time reaches the end of time.
    Advance(kMax, kAll);
    EXPECT_EQ(wheel_.size(), 0u);
    EXPECT_TRUE(live_.empty());
    coverage_->slots_visited += wheel_.slots_visited();
  }

 private:
  enum class Phase { kFill, kChurn, kFarJumps };

  struct Timer {
    int64_t deadline_ms;
    int64_t due_ms;  // kMin: overdue when armed, due at the next advance
    TimingWheel::Handle handle;
    std::multimap<int64_t, uint64_t>::iterator by_due;
    size_t pos;  // in live_ids_
  };

  uint64_t Rand(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }
  bool OneIn(uint64_t n) { return Rand(n) == 0; }

  int64_t PickStart() {
    switch (Rand(4)) {
      case 0:
        return 0;
      case 1:
        return 1'700'000'000'000 + static_cast<int64_t>(Rand(1'000'000));
      case 2:  // just before a top-level (64^6 tick) block boundary
        return (int64_t{1} << 36) * 25 - 1 - static_cast<int64_t>(Rand(3));
      default:
        return static_cast<int64_t>(Rand(uint64_t{1} << 45));
    }
  }

  uint32_t PickTick() {
    static constexpr uint32_t kTicks[] = {1, 1, 1, 2, 3, 10, 16, 1000};
    return kTicks[Rand(std::size(kTicks))];
  }

  // The due time the wheel promises: overdue -> next advance; else the deadline rounded up to
  // the tick (saturating at the end of time).
  int64_t DueMs(int64_t deadline_ms) const {
    if (deadline_ms <= model_now_) return kMin;
    const auto d = static_cast<uint64_t>(deadline_ms);
    const uint64_t ticks = d / tick_ms_ + (d % tick_ms_ != 0 ? 1 : 0);
    if (ticks > static_cast<uint64_t>(kMax) / tick_ms_) return kMax;
    return static_cast<int64_t>(ticks * tick_ms_);
  }

  // a + b, b >= 0, saturating at the end of time: UBSan runs this test too.
  static int64_t SatAdd(int64_t a, int64_t b) { return a > kMax - b ? kMax : a + b; }

  int64_t TicksToMs(int64_t ticks) const {
    return ticks > (kMax - model_now_) / tick_ms_ ? kMax : model_now_ + ticks * tick_ms_;
  }

  // A deadline mix aimed at the edges: overdue, this tick, the next few ticks, 64^k tick
  // boundaries +-1 (relative and absolute), far (years) and the end of time.
  int64_t PickDeadline() {
    const int64_t now = model_now_;
    switch (Rand(16)) {
      case 0:
        return now - static_cast<int64_t>(Rand(5000));
      case 1:
        return OneIn(2) ? kMin : now;
      case 2:
      case 3:
      case 4:
        return SatAdd(TicksToMs(static_cast<int64_t>(Rand(70))), static_cast<int64_t>(Rand(2)));
      case 5:
      case 6: {
        const int k = 1 + static_cast<int>(Rand(7));
        const int64_t offset = (int64_t{1} << (6 * k)) - 1 + static_cast<int64_t>(Rand(3));
        return SatAdd(TicksToMs(offset), static_cast<int64_t>(Rand(2)));
      }
      case 7: {  // an absolute level boundary: the next multiple of 64^k ticks, +-1 ms
        const int k = 1 + static_cast<int>(Rand(6));
        const int64_t block = (int64_t{1} << (6 * k)) * tick_ms_;
        if (now > kMax - 2 * block) return kMax;
        return (now / block + 1) * block - 1 + static_cast<int64_t>(Rand(3));
      }
      case 8:
      case 9:
      case 10:
        return TicksToMs(static_cast<int64_t>(Rand(5000)));
      case 11:
      case 12:
        return TicksToMs(static_cast<int64_t>(Rand(400'000)));
      case 13:
        return now > kMax - kDayMs * 3 * 366 ? kMax
                                             : now + static_cast<int64_t>(Rand(kDayMs * 3 * 366));
      case 14:
        return OneIn(2) ? kMax : kMax - static_cast<int64_t>(Rand(1'000'000));
      default:
        return now > kMax - 100 ? kMax : now + 1 + static_cast<int64_t>(Rand(100));
    }
  }

  // Steps grow with the phase: fill moves at most a few thousand ticks, churn up to ~64^4
  // ticks, far jumps up to decades (and, rarely, the end of time, after which everything
  // armed is overdue).
  int64_t PickNow() {
    const int64_t now = model_now_;
    auto plus = [&](int64_t delta) { return delta > kMax - now ? kMax : now + delta; };
    const int64_t tick = tick_ms_;
    const uint64_t cases = phase_ == Phase::kFill ? 8 : phase_ == Phase::kChurn ? 10 : 12;
    switch (Rand(cases)) {
      case 0:
        return now - static_cast<int64_t>(Rand(1000));  // clock stepped back
      case 1:
        return now;
      case 2:
      case 3:
      case 4:
        return plus(static_cast<int64_t>(Rand(3)) * tick + static_cast<int64_t>(Rand(2)));
      case 5:
      case 6:
        return plus(static_cast<int64_t>(Rand(200)) * tick);
      case 7: {  // exactly to, or one before, the next 64^k tick boundary
        const int k = static_cast<int>(Rand(phase_ == Phase::kFill ? 3 : 7));
        const int64_t block = (int64_t{1} << (6 * k)) * tick;
        if (now > kMax - 2 * block) return kMax;
        return (now / block + 1) * block - static_cast<int64_t>(Rand(2));
      }
      case 8:
      case 9:
        return plus(static_cast<int64_t>(Rand(1 << 24)) * tick);
      case 10:
        return plus(static_cast<int64_t>(Rand(kDayMs * 2 * 366)));
      default:
        return OneIn(2000) ? kMax : plus(static_cast<int64_t>(Rand(kDayMs * 30 * 366)));
    }
  }

  void Step() {
    // Phases of 2048 ops: fill (small steps, the population climbs into the thousands and
    // fills every level), churn, and far jumps (years, decades) that sweep it out.
    if (ops_done_++ % 2048 == 0) phase_ = static_cast<Phase>(Rand(3));
    const size_t pending = live_ids_.size();
    const bool fill = phase_ == Phase::kFill && pending < 4000;
    const uint64_t schedule_pct = pending >= 4000 ? 10 : fill ? 70 : 40;
    const uint64_t churn_pct = fill ? 5 : 12;
    const uint64_t r = Rand(100);
    if (r < schedule_pct) {
      Schedule();
    } else if (r < schedule_pct + churn_pct) {
      Cancel();
    } else if (r < schedule_pct + 2 * churn_pct) {
      Reschedule();
    } else if (r < schedule_pct + 2 * churn_pct + 4) {
      StaleOps();
    } else {
      const size_t budget = OneIn(3) ? Rand(9) : kAll;
      Advance(PickNow(), budget);
    }
    ASSERT_EQ(wheel_.size(), live_.size());
  }

  void Track(uint64_t id, int64_t deadline_ms, TimingWheel::Handle h) {
    Timer t{deadline_ms, DueMs(deadline_ms), h, {}, live_ids_.size()};
    t.by_due = by_due_.emplace(t.due_ms, id);
    live_ids_.push_back(id);
    live_.emplace(id, t);
  }

  void Forget(uint64_t id) {
    auto it = live_.find(id);
    ASSERT_NE(it, live_.end());
    by_due_.erase(it->second.by_due);
    const size_t pos = it->second.pos;
    live_ids_[pos] = live_ids_.back();
    live_.at(live_ids_[pos]).pos = pos;
    live_ids_.pop_back();
    if (stale_.size() < 64) {
      stale_.push_back(it->second.handle);
    } else {
      stale_[Rand(stale_.size())] = it->second.handle;
    }
    live_.erase(it);
  }

  void Schedule() {
    const uint64_t id = next_id_++;
    const int64_t deadline_ms = PickDeadline();
    const TimingWheel::Handle h = wheel_.Schedule(id, deadline_ms);
    ASSERT_TRUE(h.valid());
    Track(id, deadline_ms, h);
  }

  void Cancel() {
    if (live_ids_.empty()) return;
    const uint64_t id = live_ids_[Rand(live_ids_.size())];
    // The engine prefetches ahead of the operation; a hint must change nothing.
    wheel_.Prefetch(live_.at(id).handle);
    wheel_.PrefetchLinks(live_.at(id).handle);
    ASSERT_TRUE(wheel_.Cancel(live_.at(id).handle));
    Forget(id);
  }

  void Reschedule() {
    if (live_ids_.empty()) return;
    const uint64_t id = live_ids_[Rand(live_ids_.size())];
    const Timer& t = live_.at(id);
    const TimingWheel::Handle h = t.handle;
    const int64_t deadline_ms = PickDeadline();
    const TimingWheel::Handle moved = wheel_.Reschedule(h, deadline_ms);
    ASSERT_TRUE(moved.valid());
    ASSERT_EQ(moved.index, h.index);
    ASSERT_EQ(moved.generation, h.generation);
    by_due_.erase(t.by_due);
    Timer& m = live_.at(id);
    m.deadline_ms = deadline_ms;
    m.due_ms = DueMs(deadline_ms);
    m.by_due = by_due_.emplace(m.due_ms, id);
  }

  void StaleOps() {
    if (stale_.empty()) return;
    const TimingWheel::Handle h = stale_[Rand(stale_.size())];
    ++coverage_->stale_checks;
    wheel_.Prefetch(h);
    wheel_.PrefetchLinks(h);
    EXPECT_FALSE(wheel_.Cancel(h));
    EXPECT_FALSE(wheel_.Reschedule(h, PickDeadline()).valid());
  }

  // What a callback may do to the wheel mid-advance: the engine re-arms from here.
  void NestedOp() {
    ++coverage_->nested_ops;
    switch (Rand(4)) {
      case 0:
        Schedule();
        break;
      case 1:
        Cancel();
        break;
      case 2:
        Reschedule();
        break;
      default:
        StaleOps();
        break;
    }
  }

  void Advance(int64_t now_ms, size_t budget) {
    if (now_ms > model_now_) model_now_ = now_ms;
    size_t seen = 0;
    const size_t fired = wheel_.AdvanceTo(now_ms, budget, [&](uint64_t id, int64_t deadline_ms) {
      ++seen;
      auto it = live_.find(id);
      if (it == live_.end()) {
        ADD_FAILURE() << "fired a timer that is not pending (twice, or cancelled): " << id;
        return;
      }
      const Timer& t = it->second;
      ++coverage_->fired;
      if (t.due_ms == kMin) ++coverage_->fired_overdue;
      EXPECT_EQ(deadline_ms, t.deadline_ms) << "id " << id;
      EXPECT_LE(deadline_ms, model_now_) << "early: id " << id;
      EXPECT_LE(t.due_ms, model_now_) << "before its due time: id " << id;
      if (t.due_ms != kMin) {
        // Timers armed in the future fire in due-time order, across calls too.
        EXPECT_GE(t.due_ms, last_due_fired_) << "out of order: id " << id;
        last_due_fired_ = t.due_ms;
      }
      Forget(id);
      if (OneIn(4)) NestedOp();
    });
    ASSERT_EQ(fired, seen);
    ASSERT_LE(fired, budget);
    ++coverage_->advances;
    if (fired == budget) ++coverage_->budget_stops;
    ASSERT_EQ(wheel_.now_ms(), model_now_);
    if (fired < budget) {
      // Complete: exactly the due timers fired; every remaining one is due strictly later.
      if (!by_due_.empty()) {
        ASSERT_GT(by_due_.begin()->first, model_now_)
            << "late: id " << by_due_.begin()->second << " deadline "
            << live_.at(by_due_.begin()->second).deadline_ms;
      }
    }
    if (by_due_.empty()) {
      ASSERT_FALSE(wheel_.NextDeadline().has_value());
    } else {
      // A lower bound on the earliest due time; past now only when nothing is due now.
      const int64_t next = wheel_.NextDeadline().value();
      const int64_t earliest = by_due_.begin()->first;
      ASSERT_LE(next, earliest == kMin ? model_now_ : earliest);
      if (fired < budget) {
        ASSERT_GT(next, model_now_);
      }
    }
  }

  Coverage* coverage_;
  std::mt19937_64 rng_;
  uint32_t tick_ms_;
  int64_t model_now_;  // the model's own idea of the wheel's time
  TimingWheel wheel_;
  int64_t last_due_fired_ = kMin;
  uint64_t ops_done_ = 0;
  Phase phase_ = Phase::kFill;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Timer> live_;
  std::vector<uint64_t> live_ids_;
  std::multimap<int64_t, uint64_t> by_due_;
  std::vector<TimingWheel::Handle> stale_;
};

TEST(TimingWheelModelTest, RandomOperationsMatchReference) {
  std::vector<uint64_t> seeds;
  if (std::getenv("TW_SEED") != nullptr) {
    seeds.push_back(EnvOr("TW_SEED", 0));
  } else {
    const uint64_t n = EnvOr("TW_MODEL_SEEDS", kDefaultSeeds);
    for (uint64_t s = 1; s <= n; ++s) seeds.push_back(s);
  }
  const uint64_t ops = EnvOr("TW_MODEL_OPS", kDefaultOpsPerSeed);
  Coverage c;
  for (uint64_t seed : seeds) {
    SCOPED_TRACE(testing::Message() << "seed " << seed << " (replay: TW_SEED=" << seed
                                    << " TW_MODEL_OPS=" << ops << ")");
    ModelRun(seed, &c).Run(ops);
    if (HasFailure()) break;  // one seed's failure is enough to read
  }
  std::printf(
      "model: %zu seeds, %llu ops, %llu advances (%llu stopped by budget), %llu fired (%llu "
      "overdue), %llu nested ops, %llu stale-handle checks, %llu slots visited, max pending "
      "%llu\n",
      seeds.size(), static_cast<unsigned long long>(c.ops),
      static_cast<unsigned long long>(c.advances), static_cast<unsigned long long>(c.budget_stops),
      static_cast<unsigned long long>(c.fired), static_cast<unsigned long long>(c.fired_overdue),
      static_cast<unsigned long long>(c.nested_ops),
      static_cast<unsigned long long>(c.stale_checks),
      static_cast<unsigned long long>(c.slots_visited),
      static_cast<unsigned long long>(c.max_pending));
  EXPECT_GE(c.ops, seeds.size() * ops);
}

}  // namespace
}  // namespace tw
