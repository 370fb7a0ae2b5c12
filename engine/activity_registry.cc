#include "engine/activity_registry.h"

#include <unordered_set>

#include "engine/assert.h"
#include "engine/errors.h"
#include "engine/limits.h"

namespace tw {

namespace {

// ListActivities' next token: this prefix, then the hex of the last name on the page.
constexpr std::string_view kNextTokenPrefix = "twl1.";

std::string HexEncode(const std::string& s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() * 2);
  for (unsigned char c : s) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

bool HexDecode(std::string_view s, std::string* out) {
  if (s.size() % 2 != 0) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  out->clear();
  for (size_t i = 0; i < s.size(); i += 2) {
    const int hi = nibble(s[i]);
    const int lo = nibble(s[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
  }
  return true;
}

}  // namespace

ActivityRegistry::ActivityRegistry(std::string region, std::string account)
    : region_(std::move(region)), account_(std::move(account)), arn_prefix_(MakeArn("")) {}

std::string ActivityRegistry::MakeArn(const std::string& name) const {
  return "arn:aws:states:" + region_ + ":" + account_ + ":activity:" + name;
}

uint32_t ActivityRegistry::FindByArn(std::string_view arn) const {
  if (arn.size() <= arn_prefix_.size() || !arn.starts_with(arn_prefix_)) return kNilSlot;
  auto it = by_name_.find(arn.substr(arn_prefix_.size()));
  return it == by_name_.end() ? kNilSlot : it->second;
}

uint32_t ActivityRegistry::FindByName(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? kNilSlot : it->second;
}

ActivityInfo ActivityRegistry::InfoOf(uint32_t slot) const {
  const Activity& a = activities_[slot];
  return ActivityInfo{a.arn, a.name, a.creation_ms};
}

uint32_t ActivityRegistry::AllocateSlot() {
  if (!free_slots_.empty()) {
    const uint32_t slot = free_slots_.back();
    free_slots_.pop_back();
    activities_[slot] = Activity();
    return slot;
  }
  activities_.emplace_back();
  return static_cast<uint32_t>(activities_.size() - 1);
}

void ActivityRegistry::IndexArn(const Activity& a) {
  std::lock_guard<std::mutex> lock(arn_mu_);
  arn_by_id_[a.id] = a.arn;
}

uint32_t ActivityRegistry::Add(uint64_t id, const std::string& name, int64_t creation_ms) {
  TW_ASSERT(id != 0);
  TW_ASSERT(FindByName(name) == kNilSlot);
  const uint32_t slot = AllocateSlot();
  Activity& a = activities_[slot];
  a.id = id;
  a.name = name;
  a.arn = MakeArn(name);
  a.creation_ms = creation_ms;
  by_name_[a.name] = slot;
  IndexArn(a);
  return slot;
}

uint32_t ActivityRegistry::AddDeleted(uint64_t id) {
  TW_ASSERT(id != 0);
  const uint32_t slot = AllocateSlot();
  activities_[slot].id = id;
  activities_[slot].deleted = true;
  return slot;
}

void ActivityRegistry::Remove(uint32_t slot) {
  Activity& a = activities_[slot];
  TW_ASSERT(!a.deleted);
  TW_ASSERT_MSG(a.head == kNilSlot && a.waiters.empty(), "queued tasks and polls go first");
  by_name_.erase(a.name);
  a.deleted = true;
  if (a.live_refs == 0) free_slots_.push_back(slot);
}

void ActivityRegistry::ReleaseRef(uint32_t slot) {
  if (slot == kNilSlot) return;
  Activity& a = activities_[slot];
  TW_ASSERT(a.live_refs > 0);
  if (--a.live_refs == 0 && a.deleted) free_slots_.push_back(slot);
}

void ActivityRegistry::Enqueue(TaskTable& tasks, uint32_t activity_slot, uint32_t slot,
                               bool at_head) {
  Activity& a = activities_[activity_slot];
  LiveTask& t = tasks.at(slot);
  TW_ASSERT(t.state == TaskState::kScheduled);
  TW_ASSERT(t.activity == activity_slot);
  t.queue.prev = kNilSlot;
  t.queue.next = kNilSlot;
  if (a.head == kNilSlot) {
    a.head = a.tail = slot;
  } else if (at_head) {
    t.queue.next = a.head;
    tasks.at(a.head).queue.prev = slot;
    a.head = slot;
  } else {
    t.queue.prev = a.tail;
    tasks.at(a.tail).queue.next = slot;
    a.tail = slot;
  }
  ++a.queued;
}

void ActivityRegistry::Unlink(TaskTable& tasks, uint32_t slot) {
  LiveTask& t = tasks.at(slot);
  TW_ASSERT(t.state == TaskState::kScheduled);
  Activity& a = activities_[t.activity];
  if (t.queue.prev == kNilSlot) {
    a.head = t.queue.next;
  } else {
    tasks.at(t.queue.prev).queue.next = t.queue.next;
  }
  if (t.queue.next == kNilSlot) {
    a.tail = t.queue.prev;
  } else {
    tasks.at(t.queue.next).queue.prev = t.queue.prev;
  }
  TW_ASSERT(a.queued > 0);
  --a.queued;
}

void ActivityRegistry::AddWaiter(uint32_t slot, Waiter w) {
  TW_ASSERT(!activities_[slot].deleted);
  const bool added = poll_slot_.emplace(w.poll_id, slot).second;
  TW_ASSERT_MSG(added, "a poll id waits once");
  activities_[slot].waiters.push_back(std::move(w));
}

Waiter ActivityRegistry::PopWaiter(uint32_t slot) {
  Activity& a = activities_[slot];
  TW_ASSERT(!a.waiters.empty());
  Waiter w = std::move(a.waiters.front());
  a.waiters.pop_front();
  poll_slot_.erase(w.poll_id);
  return w;
}

bool ActivityRegistry::Withdraw(uint64_t poll_id, Waiter* out) {
  auto it = poll_slot_.find(poll_id);
  if (it == poll_slot_.end()) return false;  // already answered
  Activity& a = activities_[it->second];
  poll_slot_.erase(it);
  for (auto w = a.waiters.begin(); w != a.waiters.end(); ++w) {
    if (w->poll_id == poll_id) {
      *out = std::move(*w);
      a.waiters.erase(w);
      return true;
    }
  }
  TW_ASSERT_MSG(false, "poll indexed but not waiting");
  return false;
}

void ActivityRegistry::TakeWaiters(uint32_t slot, const std::function<void(Waiter&)>& fn) {
  auto take = [&](Activity& a) {
    for (Waiter& w : a.waiters) {
      poll_slot_.erase(w.poll_id);
      fn(w);
    }
    a.waiters.clear();
  };
  if (slot != kNilSlot) return take(activities_[slot]);
  for (Activity& a : activities_) take(a);
  TW_ASSERT(poll_slot_.empty());
}

Result<ListActivitiesReply> ActivityRegistry::List(const ListActivitiesRequest& req) const {
  const uint32_t max = req.max_results == 0 ? limits::kListActivitiesDefault : req.max_results;
  auto it = by_name_.begin();
  if (!req.next_token.empty()) {
    const std::string_view tok = req.next_token;
    std::string after;
    if (tok.size() <= kNextTokenPrefix.size() || !tok.starts_with(kNextTokenPrefix) ||
        !HexDecode(tok.substr(kNextTokenPrefix.size()), &after)) {
      return Result<ListActivitiesReply>::Fail(InvalidTokenError());
    }
    it = by_name_.upper_bound(after);
  }
  ListActivitiesReply out;
  for (; it != by_name_.end() && out.activities.size() < max; ++it) {
    out.activities.push_back(InfoOf(it->second));
  }
  if (it != by_name_.end()) {
    out.next_token = std::string(kNextTokenPrefix) + HexEncode(out.activities.back().name);
  }
  return Result<ListActivitiesReply>::Ok(std::move(out));
}

std::vector<ActivityCounts> ActivityRegistry::Counts() const {
  std::vector<ActivityCounts> out;
  out.reserve(by_name_.size());
  for (const auto& [name, slot] : by_name_) {
    const Activity& a = activities_[slot];
    TW_ASSERT(a.live_refs >= a.queued);  // the queued tasks are live tasks of the slot
    out.push_back({a.arn, a.queued, a.live_refs - a.queued});
  }
  return out;
}

std::string ActivityRegistry::ArnForActivityId(uint64_t activity_id) const {
  std::lock_guard<std::mutex> lock(arn_mu_);
  auto it = arn_by_id_.find(activity_id);
  return it == arn_by_id_.end() ? std::string() : it->second;
}

void ActivityRegistry::CheckInvariants(TaskTable& tasks) const {
  // A1
  size_t named = 0;
  for (uint32_t s = 0; s < activities_.size(); ++s) {
    const Activity& a = activities_[s];
    if (a.deleted) continue;
    ++named;
    TW_ASSERT(FindByName(a.name) == s);
    TW_ASSERT(a.arn == MakeArn(a.name));
  }
  TW_ASSERT(named == by_name_.size());
  // A2
  const std::unordered_set<uint32_t> free(free_slots_.begin(), free_slots_.end());
  TW_ASSERT(free.size() == free_slots_.size());
  for (uint32_t s = 0; s < activities_.size(); ++s) {
    const Activity& a = activities_[s];
    TW_ASSERT((free.count(s) != 0) == (a.deleted && a.live_refs == 0));
  }
  // A3, A4
  size_t waiters = 0;
  for (uint32_t s = 0; s < activities_.size(); ++s) {
    const Activity& a = activities_[s];
    if (free.count(s) != 0) continue;
    uint64_t n = 0;
    uint32_t prev = kNilSlot;
    for (uint32_t t = a.head; t != kNilSlot; prev = t, t = tasks.at(t).queue.next) {
      const LiveTask& task = tasks.at(t);
      TW_ASSERT(task.state == TaskState::kScheduled);
      TW_ASSERT(task.activity == s);
      TW_ASSERT(task.queue.prev == prev);
      TW_ASSERT(++n <= a.queued);
    }
    TW_ASSERT(n == a.queued);
    TW_ASSERT(a.tail == prev);
    TW_ASSERT(!a.deleted || (a.queued == 0 && a.waiters.empty()));
    for (const Waiter& w : a.waiters) {
      auto it = poll_slot_.find(w.poll_id);
      TW_ASSERT(it != poll_slot_.end());
      TW_ASSERT(it->second == s);
    }
    waiters += a.waiters.size();
  }
  TW_ASSERT(waiters == poll_slot_.size());
  // A5
  std::unordered_map<uint32_t, uint64_t> refs;
  tasks.ForEach([&](uint32_t, const LiveTask& t) {
    if (t.activity != kNilSlot) ++refs[t.activity];
  });
  for (uint32_t s = 0; s < activities_.size(); ++s) {
    const auto it = refs.find(s);
    TW_ASSERT(activities_[s].live_refs == (it == refs.end() ? 0 : it->second));
  }
}

}  // namespace tw
