// The in-memory index of live tasks: a chunked slab of compact LiveTask entries plus an
// open-addressing id -> slot table. Private to engine/.
//
// Invariants:
//  1. Every live task has exactly one slot; Find(id) returns it, and slots of erased tasks are
//     on the free list and not reachable from the index.
//  2. The index holds slot numbers only (4 bytes each) and is kept at most kMaxLoad full, so a
//     probe sequence always ends at an empty bucket.
//  3. Slots never move: a slot number stays valid until Erase (the timing wheel and activity
//     queues hold slot numbers).
// Thread: engine thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/assert.h"
#include "engine/prefetch.h"
#include "engine/store.h"
#include "engine/timing_wheel.h"
#include "engine/types.h"

namespace tw {

inline constexpr uint32_t kNilSlot = UINT32_MAX;

struct LiveTask {
  // The low two bits equal the store's kLiveHas* bits: they are persisted in live records.
  enum Flags : uint8_t {
    kHasIdempotencyKey = kLiveHasIdempotencyKey,  // the end must read the key to retire it
    kHasCorrelation = kLiveHasCorrelation,        // the outcome event must read it
    kReturnable = 8,  // started and nothing happened since: ReturnTask may requeue it
  };

  TaskId id;
  // SCHEDULED: schedule-to-start deadline; STARTED: overall deadline. 0 = none.
  int64_t deadline_ms = 0;
  union {
    int64_t heartbeat_deadline_ms;  // STARTED; 0 = none
    struct {
      uint32_t prev;
      uint32_t next;
    } queue;  // SCHEDULED: links in the activity's FIFO
  };
  uint64_t queue_seq = 0;  // FIFO position; kept after start so a returned task goes back first
  TimingWheel::Handle timer;
  uint32_t activity = kNilSlot;  // activity slot; kNilSlot for callback tasks
  uint32_t heartbeat_s = 0;
  uint32_t timeout_s = 0;
  uint32_t schedule_to_start_s = 0;
  TaskState state = TaskState::kScheduled;
  uint8_t flags = 0;

  LiveTask() : heartbeat_deadline_ms(0) {}
};
static_assert(sizeof(LiveTask) <= 72, "LiveTask is the per-task memory budget: keep it small");

class TaskTable {
 public:
  TaskTable();
  TaskTable(const TaskTable&) = delete;
  TaskTable& operator=(const TaskTable&) = delete;

  // kNilSlot when absent.
  uint32_t Find(const TaskId& id) const;
  // Cache hints for a Find(id) to come, in two steps that each need the one before to have
  // arrived: the bucket the probe starts at, then the task that bucket names. They change
  // nothing and read nothing out of bounds, whatever the id.
  void PrefetchBucket(const TaskId& id) const { PrefetchRead(&index_[Bucket(id)]); }
  void PrefetchTask(const TaskId& id) const {
    const uint32_t slot = index_[Bucket(id)];
    if (slot == kNilSlot) return;
    const auto* task = reinterpret_cast<const char*>(&at(slot));
    PrefetchWrite(task);
    PrefetchWrite(task + sizeof(LiveTask) - 1);  // 72 bytes: it may straddle two lines
  }
  // REQUIRES: id not present. Returns the new slot, its LiveTask default-initialized with id.
  uint32_t Insert(const TaskId& id);
  // REQUIRES: slot is live.
  void Erase(uint32_t slot);

  LiveTask& at(uint32_t slot) { return ChunkEntry(slot); }
  const LiveTask& at(uint32_t slot) const { return const_cast<TaskTable*>(this)->ChunkEntry(slot); }
  size_t size() const { return size_; }
  size_t bytes_allocated() const;

  // Calls fn(slot, task) for every live task (stats, tests).
  template <typename Fn>
  void ForEach(Fn&& fn) {
    for (uint32_t b = 0; b < index_.size(); ++b) {
      if (index_[b] != kNilSlot) fn(index_[b], at(index_[b]));
    }
  }

 private:
  static constexpr uint32_t kChunkEntries = 1u << 14;
  static constexpr double kMaxLoad = 0.5;

  LiveTask& ChunkEntry(uint32_t slot) {
    TW_DEBUG_ASSERT(slot / kChunkEntries < chunks_.size());
    return chunks_[slot / kChunkEntries][slot % kChunkEntries];
  }
  size_t Bucket(const TaskId& id) const { return TaskIdHash()(id) & (index_.size() - 1); }
  void Grow();
  uint32_t AllocateSlot();

  std::vector<std::unique_ptr<LiveTask[]>> chunks_;
  std::vector<uint32_t> free_slots_;
  uint32_t next_unused_slot_ = 0;
  std::vector<uint32_t> index_;  // power-of-two buckets of slot numbers, kNilSlot = empty
  size_t size_ = 0;
};

}  // namespace tw
