// PendingRecords: the records of batches that are not durable yet, so the engine reads its own
// writes. The open batch's records, then those of each sealed batch in flight (oldest first, at
// most limits::kBatchesInFlightMax); a lookup looks newest first, and the caller falls back to
// the store when nothing pending has the key.
// Thread: the engine thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/assert.h"
#include "engine/store.h"
#include "engine/types.h"

namespace tw {

// Task id -> V for one batch's overlay: the entries in a flat vector, found through an
// open-addressing index of their positions. clear() keeps both allocations, so an overlay that
// is reused costs no allocation per entry (a node-based map cost one malloc and free each).
// Invariant: index_ is empty or a power of two more than twice items_.size(); each entry of
// items_ is referenced by exactly one index slot (value = position + 1; 0 = empty).
template <typename V>
class TaskOverlayMap {
 public:
  // The entry for id, appended default-constructed if absent.
  V& operator[](const TaskId& id) {
    if (2 * (items_.size() + 1) >= index_.size()) Grow();
    size_t i = Home(id);
    for (; index_[i] != 0; i = (i + 1) & (index_.size() - 1)) {
      auto& item = items_[index_[i] - 1];
      if (item.first == id) return item.second;
    }
    items_.emplace_back(id, V());
    index_[i] = static_cast<uint32_t>(items_.size());
    return items_.back().second;
  }
  const V* find(const TaskId& id) const {
    if (items_.empty()) return nullptr;
    for (size_t i = Home(id); index_[i] != 0; i = (i + 1) & (index_.size() - 1)) {
      const auto& item = items_[index_[i] - 1];
      if (item.first == id) return &item.second;
    }
    return nullptr;
  }
  void clear() {
    if (items_.empty()) return;
    items_.clear();
    std::fill(index_.begin(), index_.end(), 0);
  }
  size_t size() const { return items_.size(); }

 private:
  size_t Home(const TaskId& id) const { return TaskIdHash()(id) & (index_.size() - 1); }
  void Grow() {
    index_.assign(std::max<size_t>(64, 2 * index_.size()), 0);
    for (size_t k = 0; k < items_.size(); ++k) {
      size_t i = Home(items_[k].first);
      while (index_[i] != 0) i = (i + 1) & (index_.size() - 1);
      index_[i] = static_cast<uint32_t>(k + 1);
    }
  }

  std::vector<std::pair<TaskId, V>> items_;
  std::vector<uint32_t> index_;
};

// The records one batch wrote.
struct Overlay {
  TaskOverlayMap<TaskIssueRecord> issue;
  TaskOverlayMap<TaskStateRecord> state;
  TaskOverlayMap<TaskStateRecord> end;
  std::unordered_map<std::string, TaskId> idempotency;  // rare: only issues with a key

  bool empty() const {
    return issue.size() == 0 && state.size() == 0 && end.size() == 0 && idempotency.empty();
  }
  void clear() {
    issue.clear();
    state.clear();
    end.clear();
    idempotency.clear();
  }
};

class PendingRecords {
 public:
  // The open batch's overlay: every record the batch writes goes here too.
  Overlay& open() { return open_; }

  // Newest first; false when no pending batch wrote the key (then read the store).
  bool FindIssue(const TaskId& id, TaskIssueRecord* out) const {
    return Find(&Overlay::issue, id, out);
  }
  bool FindState(const TaskId& id, TaskStateRecord* out) const {
    return Find(&Overlay::state, id, out);
  }
  bool FindEnd(const TaskId& id, TaskStateRecord* out) const {
    return Find(&Overlay::end, id, out);
  }
  bool FindIdempotencyKey(const std::string& key, TaskId* out) const {
    return Find(&Overlay::idempotency, key, out);
  }
  // Whether the task's issue and its latest state record are durable: no pending batch holds
  // either.
  bool IsDurable(const TaskId& id) const {
    auto pending = [&id](const Overlay& o) {
      return o.state.find(id) != nullptr || o.issue.find(id) != nullptr;
    };
    return !pending(open_) && std::none_of(in_flight_.begin(), in_flight_.end(), pending);
  }

  // The open batch was sealed: its overlay joins those in flight; a new one opens.
  void Seal() {
    in_flight_.push_back(std::move(open_));
    if (spare_.empty()) {
      open_ = Overlay();
    } else {
      open_ = std::move(spare_.back());
      spare_.pop_back();
    }
  }
  // The oldest sealed batch is written (or failed): its records are the store's now.
  void OnDurable() {
    TW_ASSERT(!in_flight_.empty());
    in_flight_.front().clear();
    spare_.push_back(std::move(in_flight_.front()));
    in_flight_.pop_front();
  }
  size_t batches_in_flight() const { return in_flight_.size(); }
  // Frees the overlays kept for reuse. REQUIRES: nothing in flight.
  void ReleaseBuffers() {
    TW_ASSERT(in_flight_.empty());
    spare_.clear();
    spare_.shrink_to_fit();
    if (open_.empty()) open_ = Overlay();
  }

 private:
  template <typename Map, typename Key, typename Value>
  bool Find(const Map Overlay::*map, const Key& key, Value* out) const {
    auto find = [&](const Overlay& o) {
      const Map& m = o.*map;
      if constexpr (requires { m.find(key) == m.end(); }) {
        auto it = m.find(key);
        if (it == m.end()) return false;
        *out = it->second;
      } else {
        const Value* v = m.find(key);
        if (v == nullptr) return false;
        *out = *v;
      }
      return true;
    };
    if (find(open_)) return true;
    for (auto o = in_flight_.rbegin(); o != in_flight_.rend(); ++o) {
      if (find(*o)) return true;
    }
    return false;
  }

  Overlay open_;
  std::deque<Overlay> in_flight_;
  std::vector<Overlay> spare_;  // emptied by OnDurable, reused by Seal
};

}  // namespace tw
