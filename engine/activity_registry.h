// ActivityRegistry: the activities the engine knows, each with its FIFO of SCHEDULED tasks and
// its waiting polls. Activities live in slots; a live task names its activity by slot. A
// deleted activity keeps its slot (without a name) while started tasks still refer to it, so
// their outcome events can name its ARN.
// Thread: the engine thread, except ArnForActivityId (any thread).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "engine/task_table.h"

namespace tw {

// A poll waiting for a task of its activity.
struct Waiter {
  uint64_t poll_id = 0;
  std::string worker;
  Callback<GetActivityTaskReply> done;
};

struct Activity {
  uint64_t id = 0;  // persisted; slots are not
  std::string name;
  std::string arn;
  int64_t creation_ms = 0;
  bool deleted = false;
  uint32_t head = kNilSlot;  // FIFO of SCHEDULED task slots
  uint32_t tail = kNilSlot;
  uint64_t queued = 0;
  uint64_t live_refs = 0;  // live tasks pointing at this slot (keeps a deleted slot alive)
  std::deque<Waiter> waiters;
};

class ActivityRegistry {
 public:
  ActivityRegistry(std::string region, std::string account);

  std::string MakeArn(const std::string& name) const;
  // The slot of the live activity with this ARN, or kNilSlot.
  uint32_t FindByArn(std::string_view arn) const;
  uint32_t FindByName(const std::string& name) const;  // kNilSlot if none
  Activity& at(uint32_t slot) { return activities_[slot]; }
  const Activity& at(uint32_t slot) const { return activities_[slot]; }
  ActivityInfo InfoOf(uint32_t slot) const;
  uint64_t IdOf(uint32_t slot) const { return slot == kNilSlot ? 0 : activities_[slot].id; }
  size_t live() const { return by_name_.size(); }

  // A live, named activity; returns its slot.
  uint32_t Add(uint64_t id, const std::string& name, int64_t creation_ms);
  // Recovery: a slot for a deleted activity that still has started tasks.
  uint32_t AddDeleted(uint64_t id);
  // Deletion: the name goes at once, the slot when its last live task ends.
  // REQUIRES: no queued task and no waiting poll.
  void Remove(uint32_t slot);
  void AddRef(uint32_t slot) { ++activities_[slot].live_refs; }
  void ReleaseRef(uint32_t slot);  // kNilSlot: a callback task, nothing to release

  // The FIFO of SCHEDULED tasks, linked through the tasks themselves.
  void Enqueue(TaskTable& tasks, uint32_t activity_slot, uint32_t slot, bool at_head);
  void Unlink(TaskTable& tasks, uint32_t slot);

  // Waiting polls, by poll id.
  bool IsWaiting(uint64_t poll_id) const { return poll_slot_.count(poll_id) != 0; }
  void AddWaiter(uint32_t slot, Waiter w);
  Waiter PopWaiter(uint32_t slot);  // the oldest; REQUIRES: one waits
  // The waiting poll with this id, taken out; false if it was answered already.
  bool Withdraw(uint64_t poll_id, Waiter* out);
  // Takes every waiting poll of one activity (kNilSlot: of all), oldest first.
  void TakeWaiters(uint32_t slot, const std::function<void(Waiter&)>& fn);
  size_t waiting_polls() const { return poll_slot_.size(); }

  // One page of live activities by name; InvalidToken for a next token this did not issue.
  Result<ListActivitiesReply> List(const ListActivitiesRequest& req) const;
  // The activities not deleted, by name, with their queued and started tasks (started =
  // live_refs - queued: A3 and A5).
  std::vector<ActivityCounts> Counts() const;
  // Event ARNs for readers on other threads: activity id -> ARN ("" if never known).
  std::string ArnForActivityId(uint64_t activity_id) const;

  // Invariants (CheckInvariants asserts each; EngineCore::CheckInvariants calls it):
  //  A1. by_name_ holds exactly the slots not deleted, each under its own name and ARN.
  //  A2. A slot is free iff it is deleted with no live task referring to it.
  //  A3. Each FIFO is a well-linked list of `queued` SCHEDULED tasks of that activity, and a
  //      deleted activity has none.
  //  A4. poll_slot_ indexes exactly the waiters, each under its activity; a deleted activity
  //      has none.
  //  A5. live_refs counts the live tasks whose activity is the slot.
  void CheckInvariants(TaskTable& tasks) const;

 private:
  uint32_t AllocateSlot();
  void IndexArn(const Activity& a);

  const std::string region_;
  const std::string account_;
  const std::string arn_prefix_;  // MakeArn("")
  std::vector<Activity> activities_;
  std::vector<uint32_t> free_slots_;
  // Live activities only, sorted for listing; transparent, so an ARN's name looks up in place.
  std::map<std::string, uint32_t, std::less<>> by_name_;
  std::unordered_map<uint64_t, uint32_t> poll_slot_;  // waiting poll id -> activity slot

  mutable std::mutex arn_mu_;
  std::unordered_map<uint64_t, std::string> arn_by_id_;  // guarded by arn_mu_
};

}  // namespace tw
