#include "engine/timing_wheel.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace tw {

TimingWheel::TimingWheel(int64_t start_ms, uint32_t tick_ms, size_t timers_max)
    : timers_max_(timers_max), now_ms_(start_ms), tick_ms_(tick_ms) {
  // Ticks are unsigned and absolute; a negative start would need floor division everywhere
  // for times no caller has (they are ms since the epoch).
  TW_ASSERT(start_ms >= 0);
  TW_ASSERT(tick_ms >= 1);
  TW_ASSERT(timers_max >= 1);
  TW_ASSERT(timers_max <= limits::kWheelTimersMax);
  cur_tick_ = TargetTick(start_ms);
  target_tick_ = cur_tick_;
  std::fill(std::begin(heads_), std::end(heads_), kNil);
  // The chunk table is the only thing besides chunks that could ever reallocate; size it for
  // the bound now so growth is exactly one chunk allocation.
  chunks_.reserve((timers_max + kChunkEntries - 1) / kChunkEntries);
}

std::optional<int64_t> TimingWheel::NextDeadline() const {
  if (size_ == 0) return std::nullopt;
  for (uint32_t level = 0; level <= kLevels; ++level) {
    if (occupied_[level] == 0) continue;
    const uint64_t tick = SlotStartTick(level, std::countr_zero(occupied_[level]));
    // Saturate: a deadline near INT64_MAX rounds up past it.
    if (tick > static_cast<uint64_t>(INT64_MAX) / tick_ms_) return INT64_MAX;
    return static_cast<int64_t>(tick * tick_ms_);
  }
  TW_ASSERT_MSG(false, "pending timers but no occupied slot");
  return std::nullopt;
}

size_t TimingWheel::bytes_allocated() const {
  return size_t{capacity_} * sizeof(Entry) + chunks_.capacity() * sizeof(chunks_[0]);
}

// ---- slot arithmetic ----

uint64_t TimingWheel::SlotStartTick(uint32_t level, uint32_t slot) const {
  if (level == kLevels) {
    // The overflow list: its timers are all in later blocks; jump straight to the block of
    // the earliest one rather than block by block (a deadline of INT64_MAX is 2^27 blocks
    // away at 1 ms).
    const uint64_t next_block = (cur_tick_ | kRangeMask) + 1;
    return std::max(next_block, overflow_min_tick_ & ~kRangeMask);
  }
  const uint32_t shift = level * kSlotBits;
  const uint64_t above = ~((uint64_t{1} << (shift + kSlotBits)) - 1);
  return (cur_tick_ & above) | (uint64_t{slot} << shift);
}

// ---- the pool ----

void TimingWheel::Grow() {
  // Only reached with every entry pending (the free list is empty), and size_ < timers_max_,
  // so the table reserved in the constructor has room.
  TW_ASSERT(free_head_ == kNil);
  TW_ASSERT(chunks_.size() < chunks_.capacity());
  constexpr size_t kBytes = size_t{kChunkEntries} * sizeof(Entry);
  constexpr size_t kHugePage = size_t{2} << 20;
  constexpr size_t kAlign = kBytes < kHugePage ? kBytes : kHugePage;
  static_assert(kBytes % kAlign == 0);
  // Entry is an implicit-lifetime type, so the raw allocation holds Entry objects (C++20).
  auto* chunk = static_cast<Entry*>(std::aligned_alloc(kAlign, kBytes));
  if (chunk == nullptr) throw std::bad_alloc();
#if defined(__linux__)
  // Entries are reached at random (a handle, a chain hop); with 4 KiB pages a big pool also
  // misses the TLB on most hops. Advice only: failure changes speed, not behaviour.
  if (kAlign == kHugePage) (void)madvise(chunk, kBytes, MADV_HUGEPAGE);
#endif
  chunks_.emplace_back(chunk);
  capacity_ += kChunkEntries;
}

void TimingWheel::FreeChunk::operator()(Entry* chunk) const { std::free(chunk); }

// ---- advancing ----

uint64_t TimingWheel::TargetTick(int64_t now_ms) const {
  const auto now = static_cast<uint64_t>(now_ms);
  // Deadlines in the last partial tick round up past INT64_MAX; the end of time saturates so
  // that AdvanceTo(INT64_MAX) fires every pending timer instead of stranding those.
  if (now_ms == INT64_MAX && now % tick_ms_ != 0) return now / tick_ms_ + 1;
  return now / tick_ms_;
}

void TimingWheel::BeginAdvance(int64_t now_ms) {
  if (now_ms > now_ms_) {
    now_ms_ = now_ms;
    target_tick_ = TargetTick(now_ms);
  }
  TW_ASSERT(cur_tick_ <= target_tick_);
}

// Called with the due list empty. Moves cur_tick_ to the start of the next occupied slot if it
// is <= target_tick_ (cascading it unless it is a level-0 slot, which becomes the due list) and
// returns true; otherwise moves cur_tick_ to target_tick_ and returns false.
bool TimingWheel::MoveToNextOccupiedSlot() {
  TW_ASSERT(lanes_[DueList()] == 0);
  if (cur_tick_ == target_tick_) return false;
  // Lower levels always hold earlier ticks than higher ones (invariant 5), so the first
  // occupied level has the next event, at its lowest set bit.
  uint32_t level = 0;
  while (level <= kLevels && occupied_[level] == 0) ++level;
  if (level > kLevels) {
    cur_tick_ = target_tick_;
    return false;
  }
  const auto slot = static_cast<uint32_t>(std::countr_zero(occupied_[level]));
  const uint64_t start = SlotStartTick(level, slot);
  TW_ASSERT(start > cur_tick_);
  if (start > target_tick_) {
    // Nothing starts in (cur_tick_, target_tick_], so every entry keeps its level and slot
    // relative to the new position (invariants 5 and 6 still hold).
    cur_tick_ = target_tick_;
    return false;
  }
  cur_tick_ = start;
  ++slots_visited_;
  if (level > 0) Cascade(level * kSlots + slot);
  return true;
}

// Links a cascading entry into the list its due tick names now.
inline void TimingWheel::Refile(uint32_t index, int64_t deadline_ms, uint32_t from) {
  const uint64_t due_tick = DueTick(deadline_ms);
  TW_ASSERT(due_tick >= cur_tick_);
  const uint32_t to = ListForTick(due_tick);
  // Strictly finer, so cascading makes progress; only a timer still blocks away goes back
  // to the overflow list (whose next event is then a later block).
  if (to == kOverflowList) {
    TW_ASSERT(from == kOverflowList);
    overflow_min_tick_ = std::min(overflow_min_tick_, due_tick);
  } else {
    TW_ASSERT(to < from);
  }
  Link(index, to);
}

// Re-files every timer of `list` relative to cur_tick_, which has just reached the list's
// start. Levels below it are empty here (they held earlier ticks), so the re-filed timers land
// in lists this loop alone fills: the heads it touches are ones it just wrote, still in cache.
void TimingWheel::Cascade(uint32_t list) {
  TW_ASSERT(list >= kSlots);
  // Only the non-empty lanes: a low-level slot holds a handful of timers, fewer than lanes.
  uint32_t cursor[kLanes];
  uint32_t live = lanes_[list];
  for (uint32_t lanes = live; lanes != 0; lanes &= lanes - 1) {
    const auto lane = static_cast<uint32_t>(std::countr_zero(lanes));
    cursor[lane] = Head(list, lane);
    Head(list, lane) = kNil;
  }
  lanes_[list] = 0;
  occupied_[list / kSlots] &= ~(uint64_t{1} << (list % kSlots));
  if (list == kOverflowList) overflow_min_tick_ = UINT64_MAX;
  // Round robin over the lanes, one entry each: kLanes independent chains in flight.
  while (live != 0) {
    for (uint32_t lanes = live; lanes != 0; lanes &= lanes - 1) {
      const auto lane = static_cast<uint32_t>(std::countr_zero(lanes));
      const uint32_t index = cursor[lane];
      const Entry& e = At(index);
      const uint32_t next = e.next;
      if (next != kNil) {
        PrefetchRead(&At(next));
      } else {
        live &= ~(1u << lane);
      }
      cursor[lane] = next;
      Refile(index, e.deadline_ms, list);
    }
  }
}

// ---- validation ----

size_t TimingWheel::ValidateList(uint32_t list) const {
  const bool occupied = (occupied_[list / kSlots] >> (list % kSlots)) & 1;
  TW_ASSERT(occupied == (lanes_[list] != 0));  // 3
  size_t count = 0;
  for (uint32_t lane = 0; lane < kLanes; ++lane) {
    TW_ASSERT(((lanes_[list] >> lane) & 1) == (Head(list, lane) != kNil));  // 3
    uint32_t prev = kNil;
    for (uint32_t index = Head(list, lane); index != kNil; index = At(index).next) {
      TW_ASSERT(index < next_unused_);
      TW_ASSERT(LaneOf(index) == lane);  // 2
      const Entry& e = At(index);
      TW_ASSERT(e.list == list);  // 2
      TW_ASSERT(e.prev == prev);  // 2
      ++count;
      TW_ASSERT(count <= size_);  // 2, and no cycle
      prev = index;
      ValidatePlacement(e, list);
    }
  }
  return count;
}

void TimingWheel::ValidatePlacement(const Entry& e, uint32_t list) const {
  if (list == DueList()) {
    TW_ASSERT(e.deadline_ms <= now_ms_);  // 4
    return;
  }
  TW_ASSERT(e.deadline_ms > 0);
  const uint64_t due_tick = DueTick(e.deadline_ms);
  TW_ASSERT(due_tick > cur_tick_);                                       // 5, 6
  TW_ASSERT(ListForTick(due_tick) == list);                              // 5, 6
  if (list == kOverflowList) TW_ASSERT(due_tick >= overflow_min_tick_);  // 6
}

void TimingWheel::Validate() const {
  TW_ASSERT(now_ms_ >= 0);                              // 1
  TW_ASSERT(target_tick_ == TargetTick(now_ms_));       // 1
  TW_ASSERT(cur_tick_ <= target_tick_);                 // 1
  TW_ASSERT(size_ <= timers_max_);                      // 2
  TW_ASSERT((occupied_[kLevels] & ~uint64_t{1}) == 0);  // 3
  TW_ASSERT(fire_lane_ < kLanes);
  size_t linked = 0;
  for (uint32_t list = 0; list < kLists; ++list) linked += ValidateList(list);
  TW_ASSERT(linked == size_);                              // 2
  TW_ASSERT(capacity_ == chunks_.size() * kChunkEntries);  // 7
  TW_ASSERT(next_unused_ <= capacity_);                    // 7
  size_t free = 0;
  for (uint32_t index = free_head_; index != kNil; index = At(index).next) {
    TW_ASSERT(index < next_unused_);         // 7
    TW_ASSERT(At(index).list == kFreeList);  // 7
    ++free;
    TW_ASSERT(free <= next_unused_);  // 7: acyclic
  }
  TW_ASSERT(free + size_ == next_unused_);  // 7
}

}  // namespace tw
