// TimingWheel against a timer set built on std::multimap (the obvious O(log n) baseline), run on
// the same workloads in the same binary so every ratio compares like with like:
//
//   insert         B = min(N, 10^4) inserts into a set holding N (untimed: cancel them again)
//   cancel         B cancels of random pending timers (untimed: insert B replacements first)
//   insert_cancel  per item: cancel a random pending timer, arm a new one (N stays constant)
//   mixed          per item: arm a new timer, then 90 %: cancel a random pending one,
//                  10 %: expire the earliest (time moves forward); N stays constant
//   mass_expiry    one advance past every deadline fires all N (untimed: rebuild)
//
// cancel_pipelined, insert_cancel_pipelined and mixed_pipelined are the same loops run by a
// caller that knows its next operations, as the engine does while it applies a batch of
// commands: it prefetches for them a few operations ahead (TimingWheel::Prefetch and
// PrefetchLinks; the map prefetches the node its handle names).
//
// Harness/insert_cancel/<N> runs the insert_cancel loop on no set at all (HarnessSet): the
// random handle access of the loop itself, which no set can be faster than.
//
// Deadlines are uniform over the next hour at 1 ms ticks; random choices come from an inline
// PRNG so both sides pay the same few cycles. Names come in pairs, Wheel/<workload>/<N> and
// Multimap/<workload>/<N>; counters: items_per_second (on CPU time), pending, and
// bytes_per_timer = bytes held / pending: the wheel's pool plus the wheel object; the map's
// nodes as requested from the allocator plus the map object (malloc's own per-node overhead
// is not counted, which flatters the map).
//
// Run: build/release/bench/tw_bench_timing_wheel --benchmark_out=wheel.json
//        --benchmark_out_format=json   (or `make bench`; docs/BENCHMARKS.md has results)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/prefetch.h"
#include "engine/timing_wheel.h"

namespace tw {
namespace {

constexpr int64_t kStartMs = 1'700'000'000'000;
constexpr int64_t kHorizonMs = 3'600'000;  // deadlines: uniform in (now, now + 1 h]
constexpr size_t kBatchMax = 10'000;
constexpr size_t kAll = std::numeric_limits<size_t>::max();

// splitmix64: a few cycles, good enough to make memory access patterns random.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t Next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform enough in [0, n) for benchmarking (Lemire's multiply-shift, no division).
  uint64_t Below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
  }
  int64_t Deadline(int64_t now_ms) {
    return now_ms + 1 + static_cast<int64_t>(Below(static_cast<uint64_t>(kHorizonMs)));
  }

 private:
  uint64_t s_;
};

class WheelSet {
 public:
  using Handle = TimingWheel::Handle;
  WheelSet() : wheel_(kStartMs) {}
  Handle Insert(uint64_t id, int64_t deadline_ms) { return wheel_.Schedule(id, deadline_ms); }
  void Cancel(Handle h) { wheel_.Cancel(h); }
  template <typename Fn>
  size_t ExpireUpTo(int64_t now_ms, Fn&& fn) {
    return wheel_.AdvanceTo(now_ms, kAll, fn);
  }
  // The engine's pattern: sleep until NextDeadline(), advance with a budget. NextDeadline()
  // is only a lower bound for far slots, so an advance may cascade without firing.
  template <typename Fn>
  void ExpireEarliest(Fn&& fn) {
    while (wheel_.AdvanceTo(*wheel_.NextDeadline(), 1, fn) == 0) {
    }
  }
  void Prefetch(Handle h) const { wheel_.Prefetch(h); }
  void PrefetchLinks(Handle h) const { wheel_.PrefetchLinks(h); }
  int64_t now_ms() const { return wheel_.now_ms(); }
  size_t size() const { return wheel_.size(); }
  // The pool plus the wheel object itself (its fixed list-head tables).
  size_t bytes() const { return wheel_.bytes_allocated() + sizeof(wheel_); }

 private:
  TimingWheel wheel_;
};

// No timer set at all: what the benchmark's own loop costs. Insert returns a handle made of its
// arguments, Cancel folds the handle it gets into a checksum, so the loop still reads and writes
// the handle array at a random position, as it does for the real sets. At 10^7 that one access
// misses the caches (an 80 MB array); its cost bounds how flat any set's curve can be.
class HarnessSet {
 public:
  struct Handle {
    uint64_t bits = 0;
  };
  Handle Insert(uint64_t id, int64_t deadline_ms) {
    ++size_;
    return Handle{id ^ static_cast<uint64_t>(deadline_ms)};
  }
  void Cancel(Handle h) {
    checksum_ += h.bits;
    --size_;
  }
  void Prefetch(Handle) const {}
  void PrefetchLinks(Handle) const {}
  int64_t now_ms() const { return kStartMs; }
  size_t size() const { return size_; }
  size_t bytes() const { return 0; }
  uint64_t checksum() const { return checksum_; }

 private:
  size_t size_ = 0;
  uint64_t checksum_ = 0;
};

// Counts what the multimap allocates (node bytes as requested, not malloc's overhead).
inline size_t g_map_bytes = 0;
template <typename T>
struct CountingAllocator {
  using value_type = T;
  CountingAllocator() = default;
  template <typename U>
  CountingAllocator(const CountingAllocator<U>&) {}  // NOLINT: rebinding must be implicit
  T* allocate(size_t n) {
    g_map_bytes += n * sizeof(T);
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, size_t n) {
    g_map_bytes -= n * sizeof(T);
    std::allocator<T>().deallocate(p, n);
  }
  template <typename U>
  bool operator==(const CountingAllocator<U>&) const {
    return true;
  }
};

class MultimapSet {
 public:
  using Map = std::multimap<int64_t, uint64_t, std::less<int64_t>,
                            CountingAllocator<std::pair<const int64_t, uint64_t>>>;
  using Handle = Map::iterator;
  MultimapSet() : base_bytes_(g_map_bytes) {}
  Handle Insert(uint64_t id, int64_t deadline_ms) { return map_.emplace(deadline_ms, id); }
  void Cancel(Handle h) { map_.erase(h); }
  template <typename Fn>
  size_t ExpireUpTo(int64_t now_ms, Fn&& fn) {
    now_ms_ = std::max(now_ms_, now_ms);
    size_t fired = 0;
    while (!map_.empty() && map_.begin()->first <= now_ms_) {
      const auto it = map_.begin();
      fn(it->second, it->first);
      map_.erase(it);
      ++fired;
    }
    return fired;
  }
  template <typename Fn>
  void ExpireEarliest(Fn&& fn) {
    const auto it = map_.begin();
    now_ms_ = std::max(now_ms_, it->first);
    fn(it->second, it->first);
    map_.erase(it);
  }
  // The node a handle names; an erase then rebalances through its parent and siblings, which
  // no handle names, so there is no second stage to prefetch.
  void Prefetch(Handle h) const { PrefetchWrite(&*h); }
  void PrefetchLinks(Handle) const {}
  int64_t now_ms() const { return now_ms_; }
  size_t size() const { return map_.size(); }
  size_t bytes() const { return g_map_bytes - base_bytes_ + sizeof(map_); }

 private:
  size_t base_bytes_;
  Map map_;
  int64_t now_ms_ = kStartMs;
};

size_t BatchFor(size_t pending) { return std::min(pending, kBatchMax); }

// A set holding `pending` timers plus their handles (ids are positions in `handles`).
template <typename Set>
struct Fixture {
  Fixture(size_t pending, uint64_t seed) : rng(seed), handles(pending) {
    for (size_t i = 0; i < pending; ++i) handles[i] = set.Insert(i, rng.Deadline(set.now_ms()));
  }
  Rng rng;
  Set set;
  std::vector<typename Set::Handle> handles;
};

// The framework calls a benchmark function several times while it sizes the iteration count.
// Building 10^7 timers takes seconds (tens for the map), so the built set is kept for the
// next call of the same benchmark; every workload leaves it holding exactly `pending` timers.
template <typename Set>
Fixture<Set>& CachedFixture(const std::string& workload, size_t pending) {
  static std::unique_ptr<Fixture<Set>> cached;
  static std::string cached_key;
  const std::string key = workload + "/" + std::to_string(pending);
  if (cached == nullptr || key != cached_key) {
    cached.reset();  // free the old one first: at 10^7 it is hundreds of MB
    cached = std::make_unique<Fixture<Set>>(pending, std::hash<std::string>()(key));
    cached_key = key;
  }
  return *cached;
}

void SetCounters(benchmark::State& state, size_t items_per_iteration, size_t bytes,
                 size_t pending) {
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * items_per_iteration));
  state.counters["bytes_per_timer"] =
      static_cast<double>(bytes) / static_cast<double>(std::max<size_t>(pending, 1));
  state.counters["pending"] = static_cast<double>(pending);
}

// How far ahead a pipelined loop prefetches: its own handle slot at 2 * kAhead operations, the
// set's first stage (Prefetch) at kAhead, its second (PrefetchLinks) at kAhead / 2. A miss here
// is 150-250 ns and one operation 10-40 ns, so each stage needs several operations to land:
// at 10^7 timers 16 measured 15-25 % faster than 8.
constexpr size_t kAhead = 16;

template <typename Set>
void BM_Insert(benchmark::State& state, size_t pending) {
  auto& f = CachedFixture<Set>("insert", pending);
  const size_t batch = BatchFor(pending);
  std::vector<typename Set::Handle> added(batch);
  const int64_t now_ms = f.set.now_ms();
  for (auto _ : state) {
    for (size_t i = 0; i < batch; ++i) added[i] = f.set.Insert(pending + i, f.rng.Deadline(now_ms));
    state.PauseTiming();  // once per batch: the pending count returns to `pending`
    for (size_t i = 0; i < batch; ++i) f.set.Cancel(added[i]);
    state.ResumeTiming();
  }
  SetCounters(state, batch, f.set.bytes(), f.set.size());
}

template <typename Set, bool kPipelined = false>
void BM_Cancel(benchmark::State& state, size_t pending) {
  auto& f = CachedFixture<Set>(kPipelined ? "cancel_pipelined" : "cancel", pending);
  const size_t batch = BatchFor(pending);
  std::vector<typename Set::Handle> victims(batch);
  const int64_t now_ms = f.set.now_ms();
  for (auto _ : state) {
    state.PauseTiming();  // once per batch: pick random victims, put replacements in
    for (size_t i = 0; i < batch; ++i) {
      const size_t p = f.rng.Below(pending);
      victims[i] = f.handles[p];  // distinct: a re-picked position yields the replacement
      f.handles[p] = f.set.Insert(p, f.rng.Deadline(now_ms));
    }
    state.ResumeTiming();
    for (size_t i = 0; i < batch; ++i) {
      if constexpr (kPipelined) {
        if (i + kAhead / 2 < batch) f.set.PrefetchLinks(victims[i + kAhead / 2]);
        if (i + kAhead < batch) f.set.Prefetch(victims[i + kAhead]);
      }
      f.set.Cancel(victims[i]);
    }
  }
  SetCounters(state, batch, f.set.bytes(), f.set.size());
}

template <typename Set>
void BM_InsertCancel(benchmark::State& state, size_t pending) {
  auto& f = CachedFixture<Set>("insert_cancel", pending);
  const int64_t now_ms = f.set.now_ms();
  for (auto _ : state) {
    const size_t p = f.rng.Below(pending);
    f.set.Cancel(f.handles[p]);
    f.handles[p] = f.set.Insert(p, f.rng.Deadline(now_ms));
  }
  benchmark::DoNotOptimize(f.set);
  SetCounters(state, 1, f.set.bytes(), f.set.size());
}

template <typename Set>
void BM_Mixed(benchmark::State& state, size_t pending) {
  auto& f = CachedFixture<Set>("mixed", pending);
  size_t freed = 0;  // the position in `handles` an expiry just emptied
  auto on_expire = [&](uint64_t id, int64_t) { freed = id; };
  for (auto _ : state) {
    size_t p;
    if (f.rng.Below(10) != 0) {
      p = f.rng.Below(pending);
      f.set.Cancel(f.handles[p]);
    } else {
      f.set.ExpireEarliest(on_expire);
      p = freed;
    }
    f.handles[p] = f.set.Insert(p, f.rng.Deadline(f.set.now_ms()));
  }
  SetCounters(state, 1, f.set.bytes(), f.set.size());
}

// The next operations of a pipelined loop: positions in `handles` to cancel, or kExpire. A
// ring of kRing upcoming choices drawn from the fixture's stream; Pop() takes the next one and
// draws one more at the far end.
class Upcoming {
 public:
  static constexpr size_t kExpire = std::numeric_limits<size_t>::max();
  // expire_one_in: 0 for cancels only; k for an expiry in place of a cancel 1 time in k.
  Upcoming(Rng& rng, size_t pending, uint64_t expire_one_in)
      : rng_(rng), pending_(pending), expire_one_in_(expire_one_in) {
    for (size_t& p : ring_) p = Draw();
  }
  // The choice `ahead` operations from now (0 is the next Pop()).
  size_t At(size_t ahead) const { return ring_[(head_ + ahead) & (kRing - 1)]; }
  size_t Pop() {
    const size_t p = ring_[head_];
    ring_[head_] = Draw();
    head_ = (head_ + 1) & (kRing - 1);
    return p;
  }

 private:
  static constexpr size_t kRing = 64;
  static_assert(kRing > 2 * kAhead, "At(2 * kAhead) must not wrap onto the next Pop()");
  size_t Draw() {
    if (expire_one_in_ != 0 && rng_.Below(expire_one_in_) == 0) return kExpire;
    return rng_.Below(pending_);
  }
  Rng& rng_;
  size_t pending_;
  uint64_t expire_one_in_;
  size_t ring_[kRing];
  size_t head_ = 0;
};

template <typename Set>
void PrefetchAhead(Fixture<Set>& f, const Upcoming& next) {
  const size_t links = next.At(kAhead / 2);
  if (links != Upcoming::kExpire) f.set.PrefetchLinks(f.handles[links]);
  const size_t entry = next.At(kAhead);
  if (entry != Upcoming::kExpire) f.set.Prefetch(f.handles[entry]);
  const size_t slot = next.At(2 * kAhead);
  if (slot != Upcoming::kExpire) PrefetchRead(&f.handles[slot]);
}

template <typename Set>
void BM_InsertCancelPipelined(benchmark::State& state, size_t pending) {
  auto& f = CachedFixture<Set>("insert_cancel_pipelined", pending);
  const int64_t now_ms = f.set.now_ms();
  Upcoming next(f.rng, pending, /*expire_one_in=*/0);
  for (auto _ : state) {
    PrefetchAhead(f, next);
    const size_t p = next.Pop();
    f.set.Cancel(f.handles[p]);
    f.handles[p] = f.set.Insert(p, f.rng.Deadline(now_ms));
  }
  benchmark::DoNotOptimize(f.set);
  SetCounters(state, 1, f.set.bytes(), f.set.size());
}

template <typename Set>
void BM_MixedPipelined(benchmark::State& state, size_t pending) {
  auto& f = CachedFixture<Set>("mixed_pipelined", pending);
  size_t freed = 0;
  auto on_expire = [&](uint64_t id, int64_t) { freed = id; };
  Upcoming next(f.rng, pending, /*expire_one_in=*/10);
  for (auto _ : state) {
    PrefetchAhead(f, next);
    size_t p = next.Pop();
    if (p != Upcoming::kExpire) {
      f.set.Cancel(f.handles[p]);
    } else {
      f.set.ExpireEarliest(on_expire);
      p = freed;
    }
    f.handles[p] = f.set.Insert(p, f.rng.Deadline(f.set.now_ms()));
  }
  SetCounters(state, 1, f.set.bytes(), f.set.size());
}

template <typename Set>
void BM_MassExpiry(benchmark::State& state, size_t pending) {
  auto& f = CachedFixture<Set>("mass_expiry", pending);
  size_t bytes = f.set.bytes();
  uint64_t checksum = 0;
  auto on_expire = [&](uint64_t id, int64_t) { checksum += id; };
  for (auto _ : state) {
    state.PauseTiming();  // once per `pending` expiries: refill (the first time: cached fill)
    if (f.set.size() == 0) {
      for (size_t i = 0; i < pending; ++i) f.set.Insert(i, f.rng.Deadline(f.set.now_ms()));
    }
    bytes = f.set.bytes();
    const int64_t end_ms = f.set.now_ms() + kHorizonMs;
    state.ResumeTiming();
    if (f.set.ExpireUpTo(end_ms, on_expire) != pending) {
      state.SkipWithError("mass expiry fired the wrong number of timers");
    }
  }
  benchmark::DoNotOptimize(checksum);
  SetCounters(state, pending, bytes, pending);
}

using BenchFn = void (*)(benchmark::State&, size_t);

void RegisterPair(const char* workload, BenchFn wheel, BenchFn multimap) {
  for (int64_t n : {1'000, 100'000, 1'000'000, 10'000'000}) {
    for (bool is_wheel : {true, false}) {
      const std::string name =
          std::string(is_wheel ? "Wheel/" : "Multimap/") + workload + "/" + std::to_string(n);
      // The pending count is bound here, not passed as an Arg, so that the name stays exactly
      // <set>/<workload>/<pending>.
      auto* b = benchmark::RegisterBenchmark(name.c_str(), is_wheel ? wheel : multimap,
                                             static_cast<size_t>(n));
      b->Unit(benchmark::kNanosecond);
    }
  }
}

}  // namespace
}  // namespace tw

int main(int argc, char** argv) {
  using namespace tw;
  RegisterPair("insert", BM_Insert<WheelSet>, BM_Insert<MultimapSet>);
  RegisterPair("cancel", BM_Cancel<WheelSet>, BM_Cancel<MultimapSet>);
  RegisterPair("insert_cancel", BM_InsertCancel<WheelSet>, BM_InsertCancel<MultimapSet>);
  RegisterPair("mixed", BM_Mixed<WheelSet>, BM_Mixed<MultimapSet>);
  RegisterPair("mass_expiry", BM_MassExpiry<WheelSet>, BM_MassExpiry<MultimapSet>);
  RegisterPair("cancel_pipelined", BM_Cancel<WheelSet, true>, BM_Cancel<MultimapSet, true>);
  RegisterPair("insert_cancel_pipelined", BM_InsertCancelPipelined<WheelSet>,
               BM_InsertCancelPipelined<MultimapSet>);
  RegisterPair("mixed_pipelined", BM_MixedPipelined<WheelSet>, BM_MixedPipelined<MultimapSet>);
  // The loops alone, for the flatness goal (docs/BENCHMARKS.md): Harness/<workload>/<N>.
  for (int64_t n : {1'000, 100'000, 1'000'000, 10'000'000}) {
    const std::pair<const char*, BenchFn> loops[] = {
        {"insert_cancel", BM_InsertCancel<HarnessSet>},
        {"insert_cancel_pipelined", BM_InsertCancelPipelined<HarnessSet>}};
    for (const auto& [workload, fn] : loops) {
      const std::string name = std::string("Harness/") + workload + "/" + std::to_string(n);
      benchmark::RegisterBenchmark(name.c_str(), fn, static_cast<size_t>(n))
          ->Unit(benchmark::kNanosecond);
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
