// A hierarchical, cascading timing wheel (Varghese & Lauck; the Kafka purgatory and Linux timer
// wheel are the same idea): the engine arms one timer per live task here and fires timeouts from
// it. Time is whatever the caller passes to AdvanceTo(); the wheel never reads a clock, so tests
// drive it with plain numbers and never sleep.
//
// Firing rule. A timer with deadline d fires at the first AdvanceTo(now_ms) with
//   now_ms >= d rounded up to a multiple of tick_ms (the "due time"),
// so never before d and less than one tick after it. With the default 1 ms tick the due time IS
// the deadline. A timer armed with d <= now_ms() (already overdue) fires at the next AdvanceTo,
// whatever the tick.
//
// Cost. Schedule, Cancel and Reschedule are O(1) and allocate nothing once the pool has grown to
// the peak number of pending timers. AdvanceTo costs O(levels) per occupied slot it reaches plus
// O(1) per timer per cascade (at most kWheelLevels - 1 cascades per timer, plus one per
// 64^kWheelLevels ticks, ~2.2 years at 1 ms, for timers armed further out than that), so idle
// time is skipped through the occupancy bitmaps rather than walked tick by tick.
//
// Memory. 32 bytes per entry, from a pool that grows by limits::kWheelPoolChunkEntries entries
// (2 MiB, backed by a transparent huge page where the kernel allows) only when every entry is
// pending, and never shrinks; freed entries go on a free list. The wheel object itself holds
// ~51 KB of list heads, so construct it once.
//
// Thread: single-threaded. The engine thread owns the wheel; nothing here is synchronized.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "engine/assert.h"
#include "engine/limits.h"
#include "engine/prefetch.h"

namespace tw {

// Layout. Ticks are absolute: tick t covers wall time ((t-1)*tick_ms, t*tick_ms], and a timer's
// due tick is ceil(d / tick_ms). cur_tick_ is the tick the wheel has processed up to. Level k
// (0 <= k < kWheelLevels) has 64 slots of 64^k ticks each; a timer with due tick D > cur_tick_
// lives at the level of the highest 6-bit group in which D and cur_tick_ differ, in the slot
// named by D's group at that level. Timers in a later 64^kWheelLevels-tick block than cur_tick_
// wait in one overflow list. So a level's slots are never "behind" the wheel: everything below
// the current position is empty, and the next timer is the lowest set bit of the lowest
// non-empty level (no rotation arithmetic, no wrap-around ambiguity). When cur_tick_ reaches the
// start of an occupied slot of level k >= 1, its timers cascade to levels below k.
//
// Invariants (Validate() checks every one):
//  1. now_ms_ >= 0, and cur_tick_ <= target_tick_ == TargetTick(now_ms_), which is
//     now_ms_ / tick_ms_ except at the end of time (INT64_MAX), where it rounds up.
//     cur_tick_ < target_tick_ only while a budget-limited AdvanceTo left work behind.
//  2. Every pending entry is linked in exactly one list, its `list` field names that list, and
//     it sits in lane (index % kLanes) of it; each lane is a well-formed doubly linked chain
//     (head.prev == kNil, a.next == b <=> b.prev == a). The number of linked entries equals
//     size_, and size_ <= timers_max_.
//  3. A lane is non-empty iff its bit in lanes_[list] is set, and a list has a non-empty lane
//     iff its occupancy bit is set (the overflow list is bit 0 of the word after the last
//     level; every other bit of that word is clear).
//  4. The "due" list, level 0 slot (cur_tick_ % 64), holds only timers with deadline_ms <=
//     now_ms_: overdue when armed, or cascaded into their own due tick.
//  5. Every other entry at level k, slot s has due tick D > cur_tick_, D and cur_tick_ agree on
//     every 6-bit group above k and differ in group k, and s == group k of D. Hence occupied
//     slots of level k all lie after cur_tick_'s position in that level.
//  6. Every overflow entry has a due tick in a later 64^kWheelLevels-tick block than cur_tick_,
//     and >= overflow_min_tick_.
//  7. Free entries have list == kFreeList and form one acyclic singly linked free list; free
//     plus pending entries == next_unused_ <= capacity_ == chunks_.size() * chunk size.
class TimingWheel {
 public:
  struct Handle {
    uint32_t index = UINT32_MAX;
    uint32_t generation = 0;
    bool valid() const { return index != UINT32_MAX; }
  };

  // start_ms: the wheel's current time (ms since the epoch). tick_ms: the resolution; timers
  // fire up to tick_ms - 1 ms after their deadline. timers_max: Schedule() refuses past this.
  // REQUIRES: start_ms >= 0, tick_ms >= 1, 1 <= timers_max <= limits::kWheelTimersMax.
  explicit TimingWheel(int64_t start_ms, uint32_t tick_ms = limits::kWheelTickMsDefault,
                       size_t timers_max = limits::kWheelTimersMax);
  TimingWheel(const TimingWheel&) = delete;
  TimingWheel& operator=(const TimingWheel&) = delete;

  // Arms a timer carrying `id`, due at deadline_ms (any value; <= now_ms() means "overdue":
  // it fires at the next AdvanceTo). Returns an invalid handle only if timers_max timers are
  // pending. O(1); allocates only when every pool entry is in use (one chunk at a time).
  Handle Schedule(uint64_t id, int64_t deadline_ms);

  // Disarms a pending timer. Returns false, and does nothing, if the handle is stale (already
  // fired or cancelled), invalid, or never issued: generation check, never UB. O(1). (The
  // 32-bit generation would alias only after 2^32 reuses of one entry while a stale handle to
  // it is still held.)
  bool Cancel(Handle h);

  // Moves a pending timer to a new deadline (earlier or later), keeping its id. Returns the
  // same handle, still valid, or an invalid handle if h was stale (nothing changes then). O(1).
  Handle Reschedule(Handle h, int64_t deadline_ms);

  // The pending timer's id and deadline; false if the handle is stale or invalid. For checks
  // (EngineCore::CheckInvariants), not for the hot path.
  bool Inspect(Handle h, uint64_t* id, int64_t* deadline_ms) const {
    if (!IsPending(h)) return false;
    *id = At(h.index).id;
    *deadline_ms = At(h.index).deadline_ms;
    return true;
  }

  // Moves the wheel's time to max(now_ms(), now_ms) (an earlier now_ms, e.g. a wall clock that
  // stepped back, fires nothing new) and fires, tick by tick in due-time order (within one tick
  // in no particular order), the timers that are due, calling fn(uint64_t id, int64_t
  // deadline_ms) for each, at most `budget` of them.
  // Returns the number fired. If the budget ran out, the wheel stops where it was and the next
  // AdvanceTo resumes there: nothing is skipped or fired twice. Overdue timers (armed with
  // deadline <= now_ms()) fire first, ahead of a backlog, in no particular order.
  //
  // Re-entrancy: when fn runs, its timer is no longer pending (its handle is stale). fn may
  // call Schedule / Cancel / Reschedule / NextDeadline on this wheel; a timer fn arms with a
  // deadline <= now_ms() fires within this same call while budget remains, so a callback that
  // always re-arms overdue timers loops until the budget runs out: the budget is the bound.
  // fn must not call AdvanceTo.
  template <typename Fn>
  size_t AdvanceTo(int64_t now_ms, size_t budget, Fn&& fn);

  // Prefetch hints, for a caller that knows its next operations (the engine applies commands
  // in batches). With 10^6+ timers pending, a Cancel or Reschedule of a random timer waits on
  // two dependent cache misses: its entry, then the entry's list neighbours, which it unlinks.
  // Prefetch(h) starts the first load; PrefetchLinks(h), called once that load has had time to
  // arrive (a few operations later), starts the second. Issued ahead of each operation, they
  // overlap the misses of several operations instead of paying them one after another
  // (docs/BENCHMARKS.md, the `_pipelined` workloads). Hints only: any handle is accepted
  // (stale, invalid, forged), nothing observable changes, and nothing depends on them.
  void Prefetch(Handle h) const;
  void PrefetchLinks(Handle h) const;

  // Pending timers.
  size_t size() const { return size_; }

  // nullopt if no timer is pending. Otherwise the earliest time at which AdvanceTo may fire a
  // pending timer: exact (the earliest due time) when that timer is within 64 ticks, otherwise
  // a tick-aligned lower bound (the start of the first occupied slot) that tightens as the
  // wheel cascades. <= now_ms() iff AdvanceTo has work right now (overdue timers or a
  // backlog). With tick_ms == 1 it is a lower bound on the earliest pending deadline; with a
  // coarser tick it can exceed a deadline by < 1 tick, which is when the timer fires.
  // O(kWheelLevels) bitmap scan, no allocation.
  std::optional<int64_t> NextDeadline() const;

  // The time the wheel has advanced to: max(start_ms, every now_ms passed to AdvanceTo).
  int64_t now_ms() const { return now_ms_; }

  // Bytes held by the entry pool (chunks plus the chunk table), for bytes-per-timer figures.
  size_t bytes_allocated() const;

  // Slots AdvanceTo has reached (fired or cascaded) since construction. Lets tests assert that
  // idle time costs O(levels), not O(ticks).
  uint64_t slots_visited() const { return slots_visited_; }

  // Debug: checks every invariant above with TW_ASSERT. O(pool entries).
  void Validate() const;

 private:
  static constexpr uint32_t kNil = UINT32_MAX;
  static constexpr uint32_t kSlotBits = 6;
  static constexpr uint32_t kSlots = limits::kWheelSlotsPerLevel;
  static constexpr uint64_t kSlotMask = kSlots - 1;
  static constexpr uint32_t kLevels = limits::kWheelLevels;
  static constexpr uint32_t kRangeBits = kSlotBits * kLevels;  // ticks one level set spans
  static constexpr uint64_t kRangeMask = (uint64_t{1} << kRangeBits) - 1;
  // Lists: level * kSlots + slot, then the overflow list, which sits at bit 0 of its own
  // occupancy word so that the next-event scan treats it as one more (coarsest) level.
  static constexpr uint16_t kOverflowList = kLevels * kSlots;
  static constexpr uint32_t kLists = kOverflowList + 1;
  static constexpr uint16_t kFreeList = UINT16_MAX;
  static constexpr uint32_t kChunkEntries = limits::kWheelPoolChunkEntries;
  static constexpr uint32_t kChunkBits = std::countr_zero(kChunkEntries);
  // Each list is kLanes independent chains; an entry's lane is its index mod kLanes. Walking
  // one chain is a dependent load per entry: at 150-250 ns a miss (measured on the 2-core
  // EPYC VM of docs/BENCHMARKS.md) a 70k-entry slot would cascade one miss at a time, 7x
  // slower than now. Walking the lanes round robin keeps up to kLanes misses in flight
  // (16 lanes measured 20 % slower than 32 at 10^6 timers; 64 no faster). Cancel and
  // Schedule still touch one lane only.
  static constexpr uint32_t kLanes = 32;
  using LaneMask = uint32_t;

  static_assert(kSlots == 64, "one 64-bit occupancy word per level");
  static_assert(uint32_t{1} << kSlotBits == kSlots);
  static_assert(kLevels >= 1);
  static_assert(kRangeBits < 63, "ticks must not overflow the range arithmetic");
  static_assert(std::has_single_bit(kChunkEntries), "chunk index is a shift and a mask");
  static_assert(limits::kWheelTimersMax < kNil, "entry indices are uint32 with kNil reserved");
  static_assert(kLists < kFreeList);
  static_assert(std::has_single_bit(kLanes));
  static_assert(kLanes <= sizeof(LaneMask) * 8);

  // 32 bytes: two entries per cache line. Deliberately no constructor: a fresh chunk is left
  // uninitialized and entries are initialized when first handed out.
  struct Entry {
    uint64_t id;
    int64_t deadline_ms;
    uint32_t prev;  // kNil at the head of a list
    uint32_t next;  // kNil at the tail; the free list's link for free entries
    uint32_t generation;
    uint16_t list;  // which list holds it, or kFreeList
  };
  static_assert(sizeof(Entry) == 32);

  Entry& At(uint32_t index) { return chunks_[index >> kChunkBits][index & (kChunkEntries - 1)]; }
  const Entry& At(uint32_t index) const {
    return chunks_[index >> kChunkBits][index & (kChunkEntries - 1)];
  }
  uint32_t DueList() const { return static_cast<uint32_t>(cur_tick_ & kSlotMask); }
  static uint32_t LaneOf(uint32_t index) { return index & (kLanes - 1); }
  uint32_t& Head(uint32_t list, uint32_t lane) { return heads_[list * kLanes + lane]; }
  uint32_t Head(uint32_t list, uint32_t lane) const { return heads_[list * kLanes + lane]; }
  uint32_t PickDueLane() const;
  bool IsPending(Handle h) const;
  uint64_t DueTick(int64_t deadline_ms) const;
  uint64_t TargetTick(int64_t now_ms) const;
  uint32_t ListForTick(uint64_t due_tick) const;
  uint64_t SlotStartTick(uint32_t level, uint32_t slot) const;

  uint32_t Allocate();
  void Release(uint32_t index);
  void Grow();
  void Place(uint32_t index);
  void Link(uint32_t index, uint32_t list);
  void Unlink(uint32_t index);
  void BeginAdvance(int64_t now_ms);
  bool MoveToNextOccupiedSlot();
  void Cascade(uint32_t list);
  void Refile(uint32_t index, int64_t deadline_ms, uint32_t from);
  size_t ValidateList(uint32_t list) const;
  void ValidatePlacement(const Entry& e, uint32_t list) const;

  struct FreeChunk {
    void operator()(Entry* chunk) const;
  };
  std::vector<std::unique_ptr<Entry[], FreeChunk>> chunks_;  // reserved up front: never grows
  uint32_t capacity_ = 0;
  uint32_t next_unused_ = 0;  // entries [next_unused_, capacity_) have never been handed out
  uint32_t free_head_ = kNil;
  size_t size_ = 0;
  size_t timers_max_;
  int64_t now_ms_;
  uint32_t tick_ms_;
  uint64_t cur_tick_;
  uint64_t target_tick_;
  uint64_t overflow_min_tick_ = UINT64_MAX;  // a lower bound: Cancel does not raise it
  uint64_t slots_visited_ = 0;
  uint32_t fire_lane_ = 0;               // the due list is drained round robin across lanes
  uint64_t occupied_[kLevels + 1] = {};  // bit set iff the list has a non-empty lane
  LaneMask lanes_[kLists] = {};          // bit set iff that lane of the list is non-empty
  uint32_t heads_[kLists * kLanes];
};

// ---- inline: the per-timer paths ----

inline void TimingWheel::Link(uint32_t index, uint32_t list) {
  Entry& e = At(index);
  const uint32_t lane = LaneOf(index);
  uint32_t& head = Head(list, lane);
  e.list = static_cast<uint16_t>(list);
  e.prev = kNil;
  e.next = head;
  if (head != kNil) {
    At(head).prev = index;
  } else {
    lanes_[list] |= static_cast<LaneMask>(1u << lane);
    occupied_[list / kSlots] |= uint64_t{1} << (list % kSlots);
  }
  head = index;
}

inline void TimingWheel::Unlink(uint32_t index) {
  const Entry& e = At(index);
  if (e.prev != kNil) {
    At(e.prev).next = e.next;
  } else {
    const uint32_t lane = LaneOf(index);
    Head(e.list, lane) = e.next;
    if (e.next == kNil) {
      lanes_[e.list] &= static_cast<LaneMask>(~(1u << lane));
      if (lanes_[e.list] == 0) occupied_[e.list / kSlots] &= ~(uint64_t{1} << (e.list % kSlots));
    }
  }
  if (e.next != kNil) At(e.next).prev = e.prev;
}

// The first non-empty lane of the due list at or after fire_lane_, cyclically; kNil if none.
inline uint32_t TimingWheel::PickDueLane() const {
  const uint32_t mask = lanes_[DueList()];
  if (mask == 0) return kNil;
  return (fire_lane_ + std::countr_zero(std::rotr(mask, static_cast<int>(fire_lane_)))) &
         (kLanes - 1);
}

inline void TimingWheel::Release(uint32_t index) {
  Entry& e = At(index);
  ++e.generation;  // every outstanding handle to this entry is now stale
  e.list = kFreeList;
  e.next = free_head_;
  free_head_ = index;
}

inline TimingWheel::Handle TimingWheel::Schedule(uint64_t id, int64_t deadline_ms) {
  if (size_ >= timers_max_) return Handle{};
  const uint32_t index = Allocate();
  Entry& e = At(index);
  e.id = id;
  e.deadline_ms = deadline_ms;
  Place(index);
  ++size_;
  return Handle{index, e.generation};
}

inline bool TimingWheel::Cancel(Handle h) {
  if (!IsPending(h)) return false;
  Unlink(h.index);
  Release(h.index);
  TW_ASSERT(size_ > 0);
  --size_;
  return true;
}

inline TimingWheel::Handle TimingWheel::Reschedule(Handle h, int64_t deadline_ms) {
  if (!IsPending(h)) return Handle{};
  Unlink(h.index);
  At(h.index).deadline_ms = deadline_ms;
  Place(h.index);
  return h;
}

inline void TimingWheel::Prefetch(Handle h) const {
  if (h.index < next_unused_) PrefetchWrite(&At(h.index));
}

inline void TimingWheel::PrefetchLinks(Handle h) const {
  if (!IsPending(h)) return;
  const Entry& e = At(h.index);
  if (e.prev != kNil) PrefetchWrite(&At(e.prev));
  if (e.next != kNil) PrefetchWrite(&At(e.next));
}

inline bool TimingWheel::IsPending(Handle h) const {
  // next_unused_ bounds every index ever handed out, so a forged index never reads
  // uninitialized memory; kFreeList catches a forged generation on a free entry.
  if (h.index >= next_unused_) return false;
  const Entry& e = At(h.index);
  return e.generation == h.generation && e.list != kFreeList;
}

inline uint64_t TimingWheel::DueTick(int64_t deadline_ms) const {
  TW_ASSERT(deadline_ms > 0);  // only future deadlines get a tick; now_ms_ >= 0
  const auto d = static_cast<uint64_t>(deadline_ms);
  if (tick_ms_ == 1) return d;  // the default; skips a 64-bit division per cascade step
  return d / tick_ms_ + (d % tick_ms_ != 0 ? 1 : 0);
}

inline uint32_t TimingWheel::ListForTick(uint64_t due_tick) const {
  const uint64_t diff = due_tick ^ cur_tick_;
  if ((diff >> kRangeBits) != 0) return kOverflowList;
  // `| kSlotMask` puts every tick of the current 64-tick block, including cur_tick_ itself
  // (a cascade into the due slot), at level 0.
  const uint32_t level = (std::bit_width(diff | kSlotMask) - 1) / kSlotBits;
  const auto slot = static_cast<uint32_t>((due_tick >> (level * kSlotBits)) & kSlotMask);
  return level * kSlots + slot;
}

inline void TimingWheel::Place(uint32_t index) {
  Entry& e = At(index);
  if (e.deadline_ms <= now_ms_) {
    Link(index, DueList());
    return;
  }
  // d > now_ms_ >= target_tick_ * tick_ms_, so the due tick is past everything processed.
  const uint64_t due_tick = DueTick(e.deadline_ms);
  TW_ASSERT(due_tick > target_tick_);
  const uint32_t list = ListForTick(due_tick);
  if (list == kOverflowList) overflow_min_tick_ = std::min(overflow_min_tick_, due_tick);
  Link(index, list);
}

inline uint32_t TimingWheel::Allocate() {
  if (free_head_ != kNil) {
    const uint32_t index = free_head_;
    Entry& e = At(index);
    TW_ASSERT(e.list == kFreeList);
    free_head_ = e.next;
    // After a mass expiry the free list runs through the pool in random order: start the
    // next pop's load now so it overlaps the caller's work instead of stalling it.
    if (free_head_ != kNil) PrefetchRead(&At(free_head_));
    return index;
  }
  if (next_unused_ == capacity_) Grow();
  const uint32_t index = next_unused_++;
  At(index).generation = 0;
  return index;
}

template <typename Fn>
size_t TimingWheel::AdvanceTo(int64_t now_ms, size_t budget, Fn&& fn) {
  BeginAdvance(now_ms);
  size_t fired = 0;
  while (fired < budget) {
    // Re-read the lanes every time: fn may have armed, cancelled or moved timers.
    const uint32_t lane = PickDueLane();
    if (lane == kNil) {
      // Fast path: the next timer is in this 64-tick block, so no cascade can be due first.
      if (occupied_[0] != 0) {
        const uint64_t start = (cur_tick_ & ~kSlotMask) | std::countr_zero(occupied_[0]);
        TW_ASSERT(start > cur_tick_);
        if (start <= target_tick_) {
          cur_tick_ = start;
          ++slots_visited_;
          continue;
        }
      }
      if (!MoveToNextOccupiedSlot()) break;
      continue;
    }
    fire_lane_ = (lane + 1) & (kLanes - 1);
    const uint32_t index = Head(DueList(), lane);
    Entry& e = At(index);
    const uint64_t id = e.id;
    const int64_t deadline_ms = e.deadline_ms;
    // A lane is a chain of dependent loads: start this lane's next one now, so that it has
    // arrived by the time the round robin comes back to this lane.
    if (e.next != kNil) PrefetchRead(&At(e.next));
    Unlink(index);
    Release(index);
    --size_;
    ++fired;
    fn(id, deadline_ms);
  }
  return fired;
}

}  // namespace tw
