#include "storage/memory_store.h"

#include <algorithm>
#include <map>
#include <optional>
#include <utility>
#include <variant>
#include <vector>

#include "engine/assert.h"
#include "engine/limits.h"

namespace tw {

// One std::map per RocksDB column family, ordered as the RocksDB keys are.
struct MemoryState {
  struct Counters {
    uint64_t next_event_seq = 1;
    uint64_t next_activity_id = 1;
    uint64_t next_queue_seq = 1;
  };
  std::map<uint64_t, ActivityRecord> activities;
  std::map<TaskId, TaskIssueRecord> issues;  // tasks id|0x00
  std::map<TaskId, TaskStateRecord> states;  // tasks id|0x01
  std::map<TaskId, TaskStateRecord> ends;    // tasks id|0x02
  std::map<TaskId, LiveRecord> live;
  std::map<std::string, TaskId, std::less<>> idem;
  std::map<uint64_t, EventRecord> events;
  std::map<std::pair<int64_t, TaskId>, std::string> retired;
  // meta
  std::optional<Counters> counters;
  std::optional<uint64_t> first_event_seq;
  std::map<std::string, uint64_t, std::less<>> consumers;
};

namespace {

struct PutActivityOp {
  ActivityRecord a;
};
struct DeleteActivityOp {
  uint64_t id;
};
struct PutIssueOp {
  TaskId id;
  TaskIssueRecord r;
};
struct PutStateOp {
  TaskId id;
  TaskStateRecord r;
};
struct PutEndOp {
  TaskId id;
  TaskStateRecord r;
};
struct PutLiveOp {
  TaskId id;
  LiveRecord r;
};
struct DeleteLiveOp {
  TaskId id;
};
struct PutIdemOp {
  std::string key;
  TaskId id;
};
struct AppendEventOp {
  EventRecord e;
};
struct PutRetiredOp {
  int64_t ended_ms;
  TaskId id;
  std::string key;
};
struct DeleteTaskOp {
  int64_t ended_ms;
  TaskId id;
  std::string key;
};
struct PutConsumerOp {
  std::string name;
  uint64_t acked;
};
struct DeleteConsumerOp {
  std::string name;
};
struct TrimOp {
  uint64_t seq;
};
struct CountersOp {
  MemoryState::Counters c;
};

using Op = std::variant<PutActivityOp, DeleteActivityOp, PutIssueOp, PutStateOp, PutLiveOp,
                        DeleteLiveOp, PutIdemOp, AppendEventOp, PutRetiredOp, DeleteTaskOp,
                        PutEndOp, PutConsumerOp, DeleteConsumerOp, TrimOp, CountersOp>;

// Applies one op to a state. The overload set mirrors RocksWriteBatch method by method.
struct Apply {
  MemoryState* s;
  void operator()(const PutActivityOp& o) const { s->activities[o.a.id] = o.a; }
  void operator()(const DeleteActivityOp& o) const { s->activities.erase(o.id); }
  void operator()(const PutIssueOp& o) const { s->issues[o.id] = o.r; }
  void operator()(const PutStateOp& o) const { s->states[o.id] = o.r; }
  void operator()(const PutEndOp& o) const { s->ends[o.id] = o.r; }
  void operator()(const PutLiveOp& o) const { s->live[o.id] = o.r; }
  void operator()(const DeleteLiveOp& o) const { s->live.erase(o.id); }
  void operator()(const PutIdemOp& o) const { s->idem.insert_or_assign(o.key, o.id); }
  void operator()(const AppendEventOp& o) const { s->events[o.e.seq] = o.e; }
  void operator()(const PutRetiredOp& o) const { s->retired[{o.ended_ms, o.id}] = o.key; }
  void operator()(const DeleteTaskOp& o) const {
    s->issues.erase(o.id);
    s->states.erase(o.id);
    s->ends.erase(o.id);
    if (!o.key.empty()) {
      auto it = s->idem.find(o.key);
      if (it != s->idem.end()) s->idem.erase(it);
    }
    s->retired.erase({o.ended_ms, o.id});
  }
  void operator()(const PutConsumerOp& o) const { s->consumers.insert_or_assign(o.name, o.acked); }
  void operator()(const DeleteConsumerOp& o) const {
    auto it = s->consumers.find(o.name);
    if (it != s->consumers.end()) s->consumers.erase(it);
  }
  void operator()(const TrimOp& o) const {
    s->events.erase(s->events.begin(), s->events.lower_bound(o.seq));
    s->first_event_seq = o.seq;
  }
  void operator()(const CountersOp& o) const { s->counters = o.c; }
};

class MemoryWriteBatch final : public WriteBatch {
 public:
  explicit MemoryWriteBatch(const MemoryStore* owner) : owner_(owner) {}

  const MemoryStore* owner() const { return owner_; }
  const std::vector<Op>& ops() const { return ops_; }

  void PutActivity(const ActivityRecord& a) override {
    Add(PutActivityOp{a}, 8 + a.name.size() + 10);
  }
  void DeleteActivity(uint64_t id) override { Add(DeleteActivityOp{id}, 8); }
  void PutTaskIssue(const TaskId& id, const TaskIssueRecord& r) override {
    Add(PutIssueOp{id, r}, 17 + r.input.size() + r.correlation.size() + r.idempotency_key.size());
  }
  void PutTaskState(const TaskId& id, const TaskStateRecord& r) override {
    TW_ASSERT(static_cast<uint8_t>(r.state) >= static_cast<uint8_t>(TaskState::kScheduled));
    TW_ASSERT(static_cast<uint8_t>(r.state) <= static_cast<uint8_t>(TaskState::kCancelled));
    Add(PutStateOp{id, r},
        17 + r.worker.size() + r.output.size() + r.error.size() + r.cause.size());
  }
  void PutTaskEnd(const TaskId& id, const TaskStateRecord& r) override {
    TW_ASSERT(IsTerminal(r.state));
    Add(PutEndOp{id, r}, 17 + r.worker.size() + r.output.size() + r.error.size() + r.cause.size());
  }
  void PutLive(const TaskId& id, const LiveRecord& r) override {
    TW_ASSERT(r.state == TaskState::kScheduled || r.state == TaskState::kStarted);
    TW_ASSERT((r.flags & ~kLiveFlagsUnknown) == 0);  // as codec::EncodeLive: kLiveHas* bits only
    Add(PutLiveOp{id, r}, 16 + 40);                  // the record is kept whole, flags included
  }
  void DeleteLive(const TaskId& id) override { Add(DeleteLiveOp{id}, 16); }
  void PutIdempotencyKey(std::string_view key, const TaskId& id) override {
    TW_ASSERT(!key.empty());
    TW_ASSERT(key.size() <= limits::kIdempotencyKeyBytesMax);
    Add(PutIdemOp{std::string(key), id}, key.size() + 17);
  }
  void AppendEvent(const EventRecord& e) override {
    TW_ASSERT(e.seq >= 1);
    TW_ASSERT(IsTerminal(e.state));
    Add(AppendEventOp{e},
        8 + 40 + e.output.size() + e.error.size() + e.cause.size() + e.correlation.size());
  }
  void PutRetired(int64_t ended_ms, const TaskId& id, std::string_view key) override {
    Add(PutRetiredOp{ended_ms, id, std::string(key)}, 24 + key.size() + 2);
  }
  void DeleteTask(int64_t ended_ms, const TaskId& id, std::string_view key) override {
    Add(DeleteTaskOp{ended_ms, id, std::string(key)}, 17 * 2 + 24 + key.size());
  }
  void PutConsumer(std::string_view name, uint64_t acked_seq) override {
    CheckConsumerName(name);
    Add(PutConsumerOp{std::string(name), acked_seq}, name.size() + 20);
  }
  void DeleteConsumer(std::string_view name) override {
    CheckConsumerName(name);
    Add(DeleteConsumerOp{std::string(name)}, name.size() + 9);
  }
  void TrimEventsBelow(uint64_t seq) override {
    TW_ASSERT(seq >= 1);
    Add(TrimOp{seq}, 16 + 20);
  }
  void PutCounters(uint64_t next_event_seq, uint64_t next_activity_id,
                   uint64_t next_queue_seq) override {
    Add(CountersOp{{next_event_seq, next_activity_id, next_queue_seq}}, 8 + 30);
  }

  size_t Count() const override { return ops_.size(); }
  size_t ByteSize() const override { return bytes_; }
  void Clear() override {
    ops_.clear();
    bytes_ = 0;
  }

 private:
  static void CheckConsumerName(std::string_view name) {
    TW_ASSERT(!name.empty());
    TW_ASSERT(name.size() <= limits::kConsumerNameBytesMax);
  }
  // bytes: roughly what the RocksDB batch would hold, so that batch-size limits behave alike.
  void Add(Op op, size_t bytes) {
    ops_.push_back(std::move(op));
    bytes_ += bytes;
  }

  const MemoryStore* owner_;
  std::vector<Op> ops_;
  size_t bytes_ = 0;
};

}  // namespace

// ---- MemoryDisk ----

MemoryDisk::MemoryDisk() : state_(std::make_unique<MemoryState>()) {}
MemoryDisk::~MemoryDisk() = default;

void MemoryDisk::DropUnsyncedWrites() {
  std::lock_guard<std::mutex> lock(mu_);
  if (synced_copy_) state_ = std::move(synced_copy_);
}

uint64_t MemoryDisk::write_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return write_count_;
}

// ---- MemoryStore ----

MemoryStore::MemoryStore() : MemoryStore(std::make_shared<MemoryDisk>()) {}
MemoryStore::MemoryStore(std::shared_ptr<MemoryDisk> disk) : disk_(std::move(disk)) {
  TW_ASSERT(disk_ != nullptr);
}
MemoryStore::~MemoryStore() = default;

void MemoryStore::FailWritesAfter(uint64_t n) {
  fail_armed_ = true;
  writes_before_failure_ = n;
}

std::unique_ptr<WriteBatch> MemoryStore::NewBatch() {
  return std::make_unique<MemoryWriteBatch>(this);
}

Status MemoryStore::Write(WriteBatch* batch, bool sync) {
  auto* b = dynamic_cast<MemoryWriteBatch*>(batch);
  TW_ASSERT(b != nullptr);
  TW_ASSERT(b->owner() == this);
  if (poisoned_) return Status::Poisoned("store poisoned by an earlier failed write");
  if (fail_armed_) {
    if (writes_before_failure_ == 0) {
      poisoned_ = true;
      return Status::IoError("injected write failure (MemoryStore)");
    }
    --writes_before_failure_;
  }
  std::lock_guard<std::mutex> lock(disk_->mu_);
  // The first unsynced write after a synced one snapshots what a power cut would leave.
  if (!sync && !disk_->synced_copy_) {
    disk_->synced_copy_ = std::make_unique<MemoryState>(*disk_->state_);
  }
  Apply apply{disk_->state_.get()};
  for (const Op& op : b->ops()) std::visit(apply, op);
  if (sync) disk_->synced_copy_.reset();
  ++disk_->write_count_;
  return Status::Ok();
}

Status MemoryStore::LoadMeta(StoreMeta* meta) {
  std::lock_guard<std::mutex> lock(disk_->mu_);
  const MemoryState& s = *disk_->state_;
  *meta = StoreMeta();
  if (s.counters) {
    meta->next_event_seq = s.counters->next_event_seq;
    meta->next_activity_id = s.counters->next_activity_id;
    meta->next_queue_seq = s.counters->next_queue_seq;
  }
  if (s.first_event_seq) meta->first_event_seq = *s.first_event_seq;
  for (const auto& [name, acked] : s.consumers) meta->consumers.emplace_back(name, acked);
  // As RocksStore: never hand out a sequence or id that is already stored.
  if (!s.events.empty()) {
    meta->next_event_seq = std::max(meta->next_event_seq, s.events.rbegin()->first + 1);
  }
  if (!s.activities.empty()) {
    meta->next_activity_id = std::max(meta->next_activity_id, s.activities.rbegin()->first + 1);
  }
  return Status::Ok();
}

Status MemoryStore::LoadActivities(std::vector<ActivityRecord>* out) {
  std::lock_guard<std::mutex> lock(disk_->mu_);
  out->clear();
  for (const auto& [id, a] : disk_->state_->activities) out->push_back(a);
  return Status::Ok();
}

// The callbacks run without the lock held (a callback may read the store), on a copy.
Status MemoryStore::ScanLive(const std::function<void(const TaskId&, const LiveRecord&)>& fn) {
  std::vector<std::pair<TaskId, LiveRecord>> copy;
  {
    std::lock_guard<std::mutex> lock(disk_->mu_);
    copy.assign(disk_->state_->live.begin(), disk_->state_->live.end());
  }
  for (const auto& [id, r] : copy) fn(id, r);
  return Status::Ok();
}

Status MemoryStore::GetTaskIssue(const TaskId& id, TaskIssueRecord* out) {
  std::lock_guard<std::mutex> lock(disk_->mu_);
  auto it = disk_->state_->issues.find(id);
  if (it == disk_->state_->issues.end()) return Status::NotFound();
  *out = it->second;
  return Status::Ok();
}

Status MemoryStore::GetTaskState(const TaskId& id, TaskStateRecord* out) {
  std::lock_guard<std::mutex> lock(disk_->mu_);
  auto it = disk_->state_->states.find(id);
  if (it == disk_->state_->states.end()) return Status::NotFound();
  *out = it->second;
  return Status::Ok();
}

Status MemoryStore::GetTaskEnd(const TaskId& id, TaskStateRecord* out) {
  std::lock_guard<std::mutex> lock(disk_->mu_);
  auto it = disk_->state_->ends.find(id);
  if (it == disk_->state_->ends.end()) return Status::NotFound();
  *out = it->second;
  return Status::Ok();
}

Status MemoryStore::FindIdempotencyKey(std::string_view key, TaskId* out) {
  std::lock_guard<std::mutex> lock(disk_->mu_);
  auto it = disk_->state_->idem.find(key);
  if (it == disk_->state_->idem.end()) return Status::NotFound();
  *out = it->second;
  return Status::Ok();
}

Status MemoryStore::ScanRetired(
    int64_t before_ms, size_t max,
    const std::function<void(int64_t, const TaskId&, std::string_view)>& fn) {
  std::vector<std::pair<std::pair<int64_t, TaskId>, std::string>> found;
  {
    std::lock_guard<std::mutex> lock(disk_->mu_);
    for (const auto& entry : disk_->state_->retired) {
      if (found.size() >= max || entry.first.first >= before_ms) break;
      found.push_back(entry);
    }
  }
  for (const auto& [key, idem] : found) fn(key.first, key.second, idem);
  return Status::Ok();
}

Status MemoryStore::ReadEvents(uint64_t from_seq, size_t max, std::vector<EventRecord>* out) {
  out->clear();
  std::lock_guard<std::mutex> lock(disk_->mu_);
  const auto& events = disk_->state_->events;
  uint64_t expect = from_seq;
  for (auto it = events.lower_bound(from_seq);
       it != events.end() && out->size() < max && it->first == expect; ++it, ++expect) {
    out->push_back(it->second);
  }
  return Status::Ok();
}

}  // namespace tw
