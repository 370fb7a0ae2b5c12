#include "engine/task_table.h"

namespace tw {

TaskTable::TaskTable() : index_(1024, kNilSlot) {}

uint32_t TaskTable::Find(const TaskId& id) const {
  const size_t mask = index_.size() - 1;
  for (size_t b = Bucket(id);; b = (b + 1) & mask) {
    const uint32_t slot = index_[b];
    if (slot == kNilSlot) return kNilSlot;
    if (at(slot).id == id) return slot;
  }
}

uint32_t TaskTable::AllocateSlot() {
  if (!free_slots_.empty()) {
    const uint32_t slot = free_slots_.back();
    free_slots_.pop_back();
    return slot;
  }
  if (next_unused_slot_ == chunks_.size() * kChunkEntries) {
    chunks_.push_back(std::make_unique<LiveTask[]>(kChunkEntries));
  }
  return next_unused_slot_++;
}

uint32_t TaskTable::Insert(const TaskId& id) {
  TW_DEBUG_ASSERT(Find(id) == kNilSlot);
  if (static_cast<double>(size_ + 1) > kMaxLoad * static_cast<double>(index_.size())) Grow();
  const uint32_t slot = AllocateSlot();
  LiveTask& t = at(slot);
  t = LiveTask();
  t.id = id;
  const size_t mask = index_.size() - 1;
  size_t b = Bucket(id);
  while (index_[b] != kNilSlot) b = (b + 1) & mask;
  index_[b] = slot;
  ++size_;
  return slot;
}

void TaskTable::Erase(uint32_t slot) {
  const size_t mask = index_.size() - 1;
  size_t b = Bucket(at(slot).id);
  while (index_[b] != slot) {
    TW_ASSERT(index_[b] != kNilSlot);  // the slot must be indexed
    b = (b + 1) & mask;
  }
  // Backward-shift deletion keeps probe sequences unbroken without tombstones.
  size_t hole = b;
  for (size_t next = (hole + 1) & mask; index_[next] != kNilSlot; next = (next + 1) & mask) {
    const size_t home = Bucket(at(index_[next]).id);
    // Move `next` into the hole if its home is not in (hole, next] cyclically.
    const bool home_in_range =
        (hole <= next) ? (home > hole && home <= next) : (home > hole || home <= next);
    if (!home_in_range) {
      index_[hole] = index_[next];
      hole = next;
    }
  }
  index_[hole] = kNilSlot;
  free_slots_.push_back(slot);
  --size_;
}

void TaskTable::Grow() {
  std::vector<uint32_t> old;
  old.swap(index_);
  index_.assign(old.size() * 2, kNilSlot);
  const size_t mask = index_.size() - 1;
  for (uint32_t slot : old) {
    if (slot == kNilSlot) continue;
    size_t b = Bucket(at(slot).id);
    while (index_[b] != kNilSlot) b = (b + 1) & mask;
    index_[b] = slot;
  }
}

size_t TaskTable::bytes_allocated() const {
  return chunks_.size() * kChunkEntries * sizeof(LiveTask) + index_.capacity() * sizeof(uint32_t) +
         free_slots_.capacity() * sizeof(uint32_t);
}

}  // namespace tw
