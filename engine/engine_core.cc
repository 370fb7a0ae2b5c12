#include "engine/engine_core.h"

#include <algorithm>
#include <utility>

#include "engine/assert.h"
#include "engine/errors.h"
#include "engine/reply_burst.h"
#include "engine/validate.h"

namespace tw {

namespace {

constexpr char kTimeoutError[] = "States.Timeout";
constexpr char kRuntimeError[] = "States.Runtime";
constexpr char kNextTokenPrefix[] = "twl1.";

int64_t SecondsToMs(uint32_t s) { return static_cast<int64_t>(s) * 1000; }

// Earliest non-zero of two deadlines (0 = none).
int64_t EarliestDeadline(int64_t a, int64_t b) {
  if (a == 0) return b;
  if (b == 0) return a;
  return std::min(a, b);
}

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

EngineCore::EngineCore(const EngineOptions& options, Store* store, const TokenCodec* codec,
                       Clock* clock)
    : options_(options),
      store_(store),
      codec_(codec),
      clock_(clock),
      now_ms_(clock->NowMs()),
      wheel_(clock->NowMs(), options.tick_ms),
      arn_prefix_(MakeArn("")),
      batch_(store->NewBatch()) {
  TW_ASSERT(store_ != nullptr);
  TW_ASSERT(codec_ != nullptr);
}

// ---------------------------------------------------------------------------------------------
// Recovery

Status EngineCore::Recover() {
  now_ms_ = clock_->NowMs();
  StoreMeta meta;
  Status s = store_->LoadMeta(&meta);
  if (!s.ok()) return s;
  next_event_seq_ = meta.next_event_seq;
  first_event_seq_ = meta.first_event_seq;
  next_activity_id_ = meta.next_activity_id;
  next_queue_seq_ = meta.next_queue_seq;
  durable_last_event_seq_ = next_event_seq_ - 1;
  published_first_seq_.store(first_event_seq_, std::memory_order_release);
  published_last_seq_.store(durable_last_event_seq_, std::memory_order_release);
  for (auto& [name, seq] : meta.consumers) consumers_[name] = seq;

  std::vector<ActivityRecord> records;
  s = store_->LoadActivities(&records);
  if (!s.ok()) return s;
  std::unordered_map<uint64_t, uint32_t> slot_by_id;
  for (ActivityRecord& r : records) {
    const uint32_t slot = AllocateActivitySlot();
    Activity& a = activities_[slot];
    a.id = r.id;
    a.name = r.name;
    a.arn = MakeArn(r.name);
    a.creation_ms = r.creation_ms;
    activity_by_name_[a.name] = slot;
    slot_by_id[a.id] = slot;
    std::lock_guard<std::mutex> lock(arn_mu_);
    arn_by_activity_id_[a.id] = a.arn;
  }

  // SCHEDULED tasks are re-linked in queue_seq order once all are known.
  std::vector<std::pair<uint64_t, uint32_t>> scheduled;
  s = store_->ScanLive([&](const TaskId& id, const LiveRecord& r) {
    const uint32_t slot = tasks_.Insert(id);
    LiveTask& t = tasks_.at(slot);
    t.state = r.state;
    t.queue_seq = r.queue_seq;
    t.heartbeat_s = r.heartbeat_s;
    t.timeout_s = r.timeout_s;
    // Old records carry kLiveFlagsUnknown: then both are assumed and cost a read at the end.
    t.flags = r.flags & kLiveFlagsUnknown;
    if (r.activity_id != 0) {
      auto it = slot_by_id.find(r.activity_id);
      if (it == slot_by_id.end()) {
        // A started task of a deleted activity: keep a placeholder slot for its ARN lookups.
        const uint32_t as = AllocateActivitySlot();
        activities_[as].id = r.activity_id;
        activities_[as].deleted = true;
        it = slot_by_id.emplace(r.activity_id, as).first;
      }
      t.activity = it->second;
      activities_[t.activity].live_refs++;
    }
    if (r.state == TaskState::kScheduled) {
      t.deadline_ms = r.schedule_to_start_deadline_ms;
      scheduled.emplace_back(r.queue_seq, slot);
    } else {
      TW_ASSERT(r.state == TaskState::kStarted);
      t.deadline_ms = r.overall_deadline_ms;
      // A crash may have lost heartbeats: never time out a worker that was on time.
      t.heartbeat_deadline_ms = r.heartbeat_s == 0 ? 0
                                                   : std::max(r.heartbeat_deadline_ms,
                                                              now_ms_ + SecondsToMs(r.heartbeat_s));
    }
    ArmTimer(slot);
  });
  if (!s.ok()) return s;
  std::sort(scheduled.begin(), scheduled.end());
  for (auto& [seq, slot] : scheduled) {
    const uint32_t as = tasks_.at(slot).activity;
    TW_ASSERT(as != kNilSlot);
    Enqueue(as, slot, /*at_head=*/false);
  }
  recovered_tasks_ = tasks_.size();
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Batch mechanics

// CompleteSealed calls its every_few callback after this many replies.
constexpr size_t kRepliesPerCallback = 256;

template <typename T>
static Result<T> StorageFailure(const Status& failure) {
  return Result<T>::Fail(StorageFailureError(failure.ToString()));
}

template <typename T>
void EngineCore::Reply(Callback<T>& done, Result<T> r) {
  if (!done) return;
  if constexpr (std::is_constructible_v<Held, HeldReply<T>>) {
    replies_.emplace_back(std::in_place_type<HeldReply<T>>, std::move(done), std::move(r));
  } else {
    replies_.emplace_back(std::in_place_type<HeldClosure>,
                          [cb = std::move(done), r = std::move(r)](const Status* failure) mutable {
                            cb(failure == nullptr ? std::move(r) : StorageFailure<T>(*failure));
                          });
  }
}

static void Release(Held& held, const Status* failure) {
  std::visit(
      [failure](auto& h) {
        if constexpr (std::is_same_v<std::decay_t<decltype(h)>, HeldClosure>) {
          h(failure);
        } else {
          using T = decltype(h.result.value);
          h.done(failure == nullptr ? std::move(h.result) : StorageFailure<T>(*failure));
        }
      },
      held);
}

void EngineCore::Prefetch(const Command& cmd, int stage) const {
  const TaskId* id = nullptr;
  bool ends = true;  // the command ends the task, so it cancels its timer
  if (const auto* c = std::get_if<SuccessCmd>(&cmd)) {
    id = &c->id;
  } else if (const auto* c = std::get_if<FailureCmd>(&cmd)) {
    id = &c->id;
  } else if (const auto* c = std::get_if<CancelCmd>(&cmd)) {
    id = &c->id;
  } else if (const auto* c = std::get_if<HeartbeatCmd>(&cmd)) {
    id = &c->id;
    ends = false;  // lazy re-arm: a heartbeat does not touch the wheel
  } else {
    return;
  }
  switch (stage) {
    case 0:
      return tasks_.PrefetchBucket(*id);
    case 1:
      return tasks_.PrefetchTask(*id);
    default: {
      if (!ends) return;
      const uint32_t slot = tasks_.Find(*id);
      if (slot == kNilSlot) return;
      const TimingWheel::Handle timer = tasks_.at(slot).timer;
      if (stage == 2) return wheel_.Prefetch(timer);
      return wheel_.PrefetchLinks(timer);
    }
  }
}

void EngineCore::Apply(Command&& cmd, bool read_clock) {
  ++commands_;
  if (read_clock) now_ms_ = std::max(now_ms_, clock_->NowMs());
  std::visit([this](auto& c) { Handle(c); }, cmd);
}

Status EngineCore::Commit() {
  SealedBatch sealed = Seal();
  Status s = WriteSealed(&sealed);
  CompleteSealed(&sealed, s);
  OnDurable(s);
  return s;
}

SealedBatch EngineCore::Seal() {
  TW_ASSERT(inflight_.size() < limits::kBatchesInFlightMax);
  if (counters_dirty_) {
    batch_->PutCounters(next_event_seq_, next_activity_id_, next_queue_seq_);
    counters_dirty_ = false;
  }
  SealedBatch sealed;
  sealed.batch = std::move(batch_);
  batch_ = store_->NewBatch();
  sealed.replies.swap(replies_);
  replies_.swap(spare_replies_);
  sealed.last_event_seq = next_event_seq_ - 1;
  sealed.first_event_seq = first_event_seq_;
  sealed.new_events = sealed.last_event_seq != durable_last_event_seq_;
  durable_last_event_seq_ = sealed.last_event_seq;  // as of this batch, once it is written
  if (poisoned_) sealed.poisoned = poison_status_;
  inflight_.push_back(std::move(overlay_));
  if (spare_overlays_.empty()) {
    overlay_ = Overlay();
  } else {
    overlay_ = std::move(spare_overlays_.back());
    spare_overlays_.pop_back();
  }
  ++batches_;
  ++batch_commands_[LatencyBuckets::IndexOf(commands_ - commands_at_seal_)];
  commands_at_seal_ = commands_;
  expiries_at_seal_ = expiries_;
  return sealed;
}

Status EngineCore::WriteSealed(SealedBatch* sealed) {
  if (!sealed->poisoned.ok()) return sealed->poisoned;
  if (sealed->batch->Count() == 0) return Status::Ok();
  return store_->Write(sealed->batch.get(), options_.durability == Durability::kSync);
}

void EngineCore::CompleteSealed(SealedBatch* sealed, const Status& write_status,
                                const std::function<void()>& every_few) {
  const bool ok = write_status.ok();
  // The batch's replies (and its event notice) go out as one burst: a front end that hands
  // them to another thread wakes it once, at the end (engine/reply_burst.h).
  ReplyBurst::Scope burst;
  // Publish first: a caller that reads events from inside its reply must find them.
  if (ok) {
    published_first_seq_.store(sealed->first_event_seq, std::memory_order_release);
    published_last_seq_.store(sealed->last_event_seq, std::memory_order_release);
  }
  for (size_t i = 0; i < sealed->replies.size(); ++i) {
    Release(sealed->replies[i], ok ? nullptr : &write_status);
    if (every_few && (i + 1) % kRepliesPerCallback == 0) every_few();
  }
  sealed->replies.clear();
  if (spare_replies_.capacity() < sealed->replies.capacity()) {
    spare_replies_.swap(sealed->replies);
  }
  if (ok && sealed->new_events && event_listener_) event_listener_(sealed->last_event_seq);
}

void EngineCore::ReleaseBatchBuffers() {
  TW_ASSERT(inflight_.empty());
  spare_overlays_.clear();
  spare_overlays_.shrink_to_fit();
  if (overlay_.issue.size() == 0 && overlay_.state.size() == 0 && overlay_.end.size() == 0) {
    overlay_ = Overlay();
  }
  std::vector<Held>().swap(spare_replies_);
  if (replies_.empty()) std::vector<Held>().swap(replies_);
}

void EngineCore::OnDurable(const Status& write_status) {
  TW_ASSERT(!inflight_.empty());
  inflight_.front().clear();
  spare_overlays_.push_back(std::move(inflight_.front()));
  inflight_.pop_front();
  if (!write_status.ok() && !poisoned_) Poison(write_status);
}

void EngineCore::Poison(const Status& s) {
  poisoned_ = true;
  poison_status_ = s;
}

// ---------------------------------------------------------------------------------------------
// Activities

std::string EngineCore::MakeArn(const std::string& name) const {
  return "arn:aws:states:" + options_.region + ":" + options_.account + ":activity:" + name;
}

std::string EngineCore::ArnForActivityId(uint64_t activity_id) const {
  std::lock_guard<std::mutex> lock(arn_mu_);
  auto it = arn_by_activity_id_.find(activity_id);
  return it == arn_by_activity_id_.end() ? std::string() : it->second;
}

uint32_t EngineCore::FindActivityByArn(const std::string& arn) const {
  const std::string_view a = arn;
  if (a.size() <= arn_prefix_.size() || !a.starts_with(arn_prefix_)) return kNilSlot;
  auto it = activity_by_name_.find(a.substr(arn_prefix_.size()));
  return it == activity_by_name_.end() ? kNilSlot : it->second;
}

ActivityInfo EngineCore::InfoOf(const Activity& a) const {
  return ActivityInfo{a.arn, a.name, a.creation_ms};
}

uint32_t EngineCore::AllocateActivitySlot() {
  if (!free_activity_slots_.empty()) {
    const uint32_t slot = free_activity_slots_.back();
    free_activity_slots_.pop_back();
    activities_[slot] = Activity();
    return slot;
  }
  activities_.emplace_back();
  return static_cast<uint32_t>(activities_.size() - 1);
}

void EngineCore::ReleaseActivityRef(uint32_t activity_slot) {
  if (activity_slot == kNilSlot) return;
  Activity& a = activities_[activity_slot];
  TW_ASSERT(a.live_refs > 0);
  if (--a.live_refs == 0 && a.deleted) free_activity_slots_.push_back(activity_slot);
}

void EngineCore::Handle(CreateActivityCmd& c) {
  if (poisoned_) return ReplyError(c.done, ErrorCode::kUnavailable, poison_status_.ToString());
  auto it = activity_by_name_.find(c.req.name);
  if (it != activity_by_name_.end()) {
    return Reply(c.done, Result<ActivityInfo>::Ok(InfoOf(activities_[it->second])));
  }
  if (activity_by_name_.size() >= limits::kActivitiesMax) {
    return ReplyFail(c.done, ActivityLimitExceededError(limits::kActivitiesMax));
  }
  const uint32_t slot = AllocateActivitySlot();
  Activity& a = activities_[slot];
  a.id = next_activity_id_++;
  a.name = c.req.name;
  a.arn = MakeArn(a.name);
  a.creation_ms = now_ms_;
  counters_dirty_ = true;
  activity_by_name_[a.name] = slot;
  {
    std::lock_guard<std::mutex> lock(arn_mu_);
    arn_by_activity_id_[a.id] = a.arn;
  }
  batch_->PutActivity(ActivityRecord{a.id, a.name, a.creation_ms});
  Reply(c.done, Result<ActivityInfo>::Ok(InfoOf(a)));
}

void EngineCore::Handle(DeleteActivityCmd& c) {
  if (poisoned_) return ReplyError(c.done, ErrorCode::kUnavailable, poison_status_.ToString());
  const uint32_t slot = FindActivityByArn(c.req.arn);
  if (slot == kNilSlot) return Reply(c.done, Result<Empty>::Ok({}));  // deleting twice is fine
  Activity& a = activities_[slot];
  // Queued tasks end as FAILED (States.Runtime); started ones run on.
  while (a.head != kNilSlot) {
    const uint32_t t = a.head;
    TaskStateRecord end;
    end.state = TaskState::kFailed;
    end.has_error = true;
    end.error = kRuntimeError;
    end.has_cause = true;
    end.cause = "The activity " + a.arn + " does not exist.";
    Finish(t, std::move(end));
  }
  for (Waiter& w : a.waiters) {
    poll_activity_.erase(w.poll_id);
    --waiting_polls_;
    ReplyFail(w.done, ActivityDoesNotExistError(a.arn));
  }
  a.waiters.clear();
  batch_->DeleteActivity(a.id);
  activity_by_name_.erase(a.name);
  a.deleted = true;
  if (a.live_refs == 0) free_activity_slots_.push_back(slot);
  Reply(c.done, Result<Empty>::Ok({}));
}

void EngineCore::Handle(DescribeActivityCmd& c) {
  if (poisoned_) return ReplyError(c.done, ErrorCode::kUnavailable, poison_status_.ToString());
  const uint32_t slot = FindActivityByArn(c.req.arn);
  if (slot == kNilSlot) {
    return ReplyFail(c.done, ActivityDoesNotExistError(c.req.arn));
  }
  Reply(c.done, Result<ActivityInfo>::Ok(InfoOf(activities_[slot])));
}

void EngineCore::Handle(ListActivitiesCmd& c) {
  if (poisoned_) return ReplyError(c.done, ErrorCode::kUnavailable, poison_status_.ToString());
  const uint32_t max = c.req.max_results == 0 ? limits::kListActivitiesDefault : c.req.max_results;
  auto it = activity_by_name_.begin();
  if (!c.req.next_token.empty()) {
    std::string after;
    const std::string_view tok = c.req.next_token;
    const size_t plen = sizeof(kNextTokenPrefix) - 1;
    if (tok.size() <= plen || tok.substr(0, plen) != kNextTokenPrefix ||
        !HexDecode(tok.substr(plen), &after)) {
      return ReplyFail(c.done, InvalidTokenError());
    }
    it = activity_by_name_.upper_bound(after);
  }
  ListActivitiesReply out;
  for (; it != activity_by_name_.end() && out.activities.size() < max; ++it) {
    out.activities.push_back(InfoOf(activities_[it->second]));
  }
  if (it != activity_by_name_.end()) {
    out.next_token = kNextTokenPrefix + HexEncode(out.activities.back().name);
  }
  Reply(c.done, Result<ListActivitiesReply>::Ok(std::move(out)));
}

// ---------------------------------------------------------------------------------------------
// Tasks

LiveRecord EngineCore::LiveRecordOf(const LiveTask& t) const {
  LiveRecord r;
  r.state = t.state;
  r.activity_id = t.activity == kNilSlot ? 0 : activities_[t.activity].id;
  r.queue_seq = t.queue_seq;
  r.heartbeat_s = t.heartbeat_s;
  r.timeout_s = t.timeout_s;
  r.flags = t.flags & kLiveFlagsUnknown;
  if (t.state == TaskState::kScheduled) {
    r.schedule_to_start_deadline_ms = t.deadline_ms;
  } else {
    r.overall_deadline_ms = t.deadline_ms;
    r.heartbeat_deadline_ms = t.heartbeat_deadline_ms;
  }
  return r;
}

void EngineCore::ArmTimer(uint32_t slot) {
  LiveTask& t = tasks_.at(slot);
  int64_t when = t.deadline_ms;
  if (t.state == TaskState::kStarted) when = EarliestDeadline(when, t.heartbeat_deadline_ms);
  if (t.timer.valid()) {
    if (when == 0) {
      wheel_.Cancel(t.timer);
      t.timer = TimingWheel::Handle();
    } else {
      t.timer = wheel_.Reschedule(t.timer, when);
      TW_ASSERT(t.timer.valid());
    }
  } else if (when != 0) {
    t.timer = wheel_.Schedule(slot, when);
    TW_ASSERT(t.timer.valid());
  }
}

void EngineCore::Enqueue(uint32_t activity_slot, uint32_t slot, bool at_head) {
  Activity& a = activities_[activity_slot];
  LiveTask& t = tasks_.at(slot);
  TW_ASSERT(t.state == TaskState::kScheduled);
  t.queue.prev = kNilSlot;
  t.queue.next = kNilSlot;
  if (a.head == kNilSlot) {
    a.head = a.tail = slot;
  } else if (at_head) {
    t.queue.next = a.head;
    tasks_.at(a.head).queue.prev = slot;
    a.head = slot;
  } else {
    t.queue.prev = a.tail;
    tasks_.at(a.tail).queue.next = slot;
    a.tail = slot;
  }
  ++a.queued;
}

void EngineCore::Unlink(uint32_t slot) {
  LiveTask& t = tasks_.at(slot);
  TW_ASSERT(t.state == TaskState::kScheduled);
  Activity& a = activities_[t.activity];
  if (t.queue.prev == kNilSlot) {
    a.head = t.queue.next;
  } else {
    tasks_.at(t.queue.prev).queue.next = t.queue.next;
  }
  if (t.queue.next == kNilSlot) {
    a.tail = t.queue.prev;
  } else {
    tasks_.at(t.queue.next).queue.prev = t.queue.prev;
  }
  TW_ASSERT(a.queued > 0);
  --a.queued;
}

void EngineCore::StartTask(uint32_t slot, const std::string& worker, int64_t now_ms) {
  Unlink(slot);
  LiveTask& t = tasks_.at(slot);
  t.state = TaskState::kStarted;
  t.deadline_ms = t.timeout_s ? now_ms + SecondsToMs(t.timeout_s) : 0;
  t.heartbeat_deadline_ms = t.heartbeat_s ? now_ms + SecondsToMs(t.heartbeat_s) : 0;
  t.flags |= LiveTask::kReturnable;
  ArmTimer(slot);
  TaskStateRecord st;
  st.state = TaskState::kStarted;
  st.started_ms = now_ms;
  st.worker = worker;
  batch_->PutTaskState(t.id, st);
  overlay_.state[t.id] = std::move(st);
  batch_->PutLive(t.id, LiveRecordOf(t));
}

bool EngineCore::HandOutToWaiter(uint32_t activity_slot, int64_t now_ms) {
  Activity& a = activities_[activity_slot];
  // A queued task past its schedule-to-start deadline is never handed out.
  while (a.head != kNilSlot && !a.waiters.empty() && TimeOutIfDue(a.head)) {
  }
  if (a.head == kNilSlot || a.waiters.empty()) return false;
  Waiter w = std::move(a.waiters.front());
  a.waiters.pop_front();
  poll_activity_.erase(w.poll_id);
  --waiting_polls_;
  const uint32_t slot = a.head;
  StartTask(slot, w.worker, now_ms);
  const TaskId id = tasks_.at(slot).id;
  TaskIssueRecord issue;
  Status s = ReadIssue(id, &issue);
  if (!s.ok()) {
    Poison(s);
    ReplyError(w.done, ErrorCode::kUnavailable, s.ToString());
    return true;
  }
  Reply(w.done, Result<GetActivityTaskReply>::Ok(GetActivityTaskReply{
                    codec_->Encode(options_.shard, id), std::move(issue.input)}));
  return true;
}

void EngineCore::Handle(IssueCmd& c) {
  if (poisoned_) return ReplyError(c.done, ErrorCode::kUnavailable, poison_status_.ToString());
  IssueTaskRequest& req = c.req;
  if (!req.idempotency_key.empty()) {
    TaskId existing;
    Status s = FindIdempotencyKey(req.idempotency_key, &existing);
    if (s.ok()) {
      return Reply(c.done, Result<IssueTaskReply>::Ok(
                               IssueTaskReply{codec_->Encode(options_.shard, existing), true}));
    }
    if (!s.IsNotFound()) {
      Poison(s);
      return ReplyError(c.done, ErrorCode::kUnavailable, s.ToString());
    }
  }
  uint32_t activity_slot = kNilSlot;
  if (!req.activity_arn.empty()) {
    activity_slot = FindActivityByArn(req.activity_arn);
    if (activity_slot == kNilSlot) {
      return ReplyFail(c.done, ActivityDoesNotExistError(req.activity_arn));
    }
  }
  if (tasks_.size() >= limits::kLiveTasksMax) {
    return ReplyFail(c.done, ThrottlingError("too many live tasks (" +
                                             std::to_string(limits::kLiveTasksMax) + ")"));
  }

  const TaskId id = task_ids_.Next(now_ms_);
  const uint32_t slot = tasks_.Insert(id);
  LiveTask& t = tasks_.at(slot);
  t.activity = activity_slot;
  t.heartbeat_s = req.heartbeat_s;
  t.timeout_s = req.timeout_s;
  t.schedule_to_start_s = req.schedule_to_start_s;
  if (!req.idempotency_key.empty()) t.flags |= LiveTask::kHasIdempotencyKey;
  if (!req.correlation.empty()) t.flags |= LiveTask::kHasCorrelation;

  TaskIssueRecord issue;
  issue.activity_id = activity_slot == kNilSlot ? 0 : activities_[activity_slot].id;
  issue.issued_ms = now_ms_;
  issue.timeout_s = req.timeout_s;
  issue.heartbeat_s = req.heartbeat_s;
  issue.schedule_to_start_s = req.schedule_to_start_s;
  issue.input = std::move(req.input);
  issue.correlation = std::move(req.correlation);
  issue.idempotency_key = std::move(req.idempotency_key);
  batch_->PutTaskIssue(id, issue);
  if (!issue.idempotency_key.empty()) {
    batch_->PutIdempotencyKey(issue.idempotency_key, id);
    overlay_.idempotency[issue.idempotency_key] = id;
  }

  if (activity_slot == kNilSlot) {
    // A callback task is born STARTED: its clocks start now.
    t.state = TaskState::kStarted;
    t.deadline_ms = t.timeout_s ? now_ms_ + SecondsToMs(t.timeout_s) : 0;
    t.heartbeat_deadline_ms = t.heartbeat_s ? now_ms_ + SecondsToMs(t.heartbeat_s) : 0;
    ArmTimer(slot);
    batch_->PutLive(id, LiveRecordOf(t));
  } else {
    activities_[activity_slot].live_refs++;
    t.state = TaskState::kScheduled;
    t.queue_seq = next_queue_seq_++;
    counters_dirty_ = true;
    t.deadline_ms = t.schedule_to_start_s ? now_ms_ + SecondsToMs(t.schedule_to_start_s) : 0;
    Enqueue(activity_slot, slot, /*at_head=*/false);
    ArmTimer(slot);
    batch_->PutLive(id, LiveRecordOf(t));
  }
  overlay_.issue[id] = std::move(issue);
  Reply(c.done,
        Result<IssueTaskReply>::Ok(IssueTaskReply{codec_->Encode(options_.shard, id), false}));
  if (activity_slot != kNilSlot) HandOutToWaiter(activity_slot, now_ms_);
}

void EngineCore::Handle(PollCmd& c) {
  if (poisoned_) return ReplyError(c.done, ErrorCode::kUnavailable, poison_status_.ToString());
  const uint32_t slot = FindActivityByArn(c.req.activity_arn);
  if (slot == kNilSlot) {
    return ReplyFail(c.done, ActivityDoesNotExistError(c.req.activity_arn));
  }
  Activity& a = activities_[slot];
  if (a.waiters.size() >= options_.pollers_per_activity_max) {
    return ReplyFail(c.done, ActivityWorkerLimitExceededError(options_.pollers_per_activity_max));
  }
  if (waiting_polls_ >= limits::kPollWaitersMax) {
    return ReplyFail(c.done, ThrottlingError("too many waiting polls"));
  }
  if (poll_activity_.count(c.poll_id) != 0) {
    return ReplyError(c.done, ErrorCode::kValidation, "poll id already waiting");
  }
  a.waiters.push_back(Waiter{c.poll_id, std::move(c.req.worker_name), std::move(c.done)});
  poll_activity_[c.poll_id] = slot;
  ++waiting_polls_;
  HandOutToWaiter(slot, now_ms_);
}

void EngineCore::Handle(WithdrawCmd& c) {
  auto it = poll_activity_.find(c.poll_id);
  if (it == poll_activity_.end()) return;  // already answered
  Activity& a = activities_[it->second];
  poll_activity_.erase(it);
  for (auto w = a.waiters.begin(); w != a.waiters.end(); ++w) {
    if (w->poll_id == c.poll_id) {
      Reply(w->done, Result<GetActivityTaskReply>::Ok({}));
      a.waiters.erase(w);
      --waiting_polls_;
      return;
    }
  }
  TW_ASSERT_MSG(false, "poll indexed but not waiting");
}

void EngineCore::Handle(ReturnCmd& c) {
  if (poisoned_) return;
  const uint32_t slot = tasks_.Find(c.id);
  if (slot == kNilSlot) return;
  LiveTask& t = tasks_.at(slot);
  if (t.state != TaskState::kStarted || !(t.flags & LiveTask::kReturnable)) return;
  if (t.activity == kNilSlot || activities_[t.activity].deleted) return;
  if (t.schedule_to_start_s == 0) {
    // Recovery does not restore it (the live record has no room for it): read it back.
    TaskIssueRecord issue;
    Status s = ReadIssue(t.id, &issue);
    if (!s.ok() && !s.IsNotFound()) return Poison(s);
    t.schedule_to_start_s = issue.schedule_to_start_s;
  }
  t.state = TaskState::kScheduled;
  t.flags &= static_cast<uint8_t>(~LiveTask::kReturnable);
  t.deadline_ms = t.schedule_to_start_s ? now_ms_ + SecondsToMs(t.schedule_to_start_s) : 0;
  Enqueue(t.activity, slot, /*at_head=*/true);
  ArmTimer(slot);
  TaskStateRecord st;  // back to SCHEDULED, no worker
  batch_->PutTaskState(t.id, st);
  overlay_.state[t.id] = st;
  batch_->PutLive(t.id, LiveRecordOf(t));
  HandOutToWaiter(t.activity, now_ms_);
}

// Lookup order: the batch being built, the sealed batches in flight newest first, then the
// store.
template <typename Map, typename Key, typename Value>
static bool FindInOverlays(const Map Overlay::*map, const Overlay& current,
                           const std::deque<Overlay>& inflight, const Key& key, Value* out) {
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
  if (find(current)) return true;
  for (auto o = inflight.rbegin(); o != inflight.rend(); ++o) {
    if (find(*o)) return true;
  }
  return false;
}

bool EngineCore::StateIsDurable(const TaskId& id) const {
  auto pending = [&id](const Overlay& o) {
    return o.state.find(id) != nullptr || o.issue.find(id) != nullptr;
  };
  return !pending(overlay_) && std::none_of(inflight_.begin(), inflight_.end(), pending);
}

Status EngineCore::ReadIssue(const TaskId& id, TaskIssueRecord* out) {
  if (FindInOverlays(&Overlay::issue, overlay_, inflight_, id, out)) return Status::Ok();
  return store_->GetTaskIssue(id, out);
}

Status EngineCore::ReadEnd(const TaskId& id, TaskStateRecord* out) {
  if (FindInOverlays(&Overlay::end, overlay_, inflight_, id, out)) return Status::Ok();
  Status s = store_->GetTaskEnd(id, out);
  if (!s.IsNotFound()) return s;
  s = ReadState(id, out);
  if (s.ok() && !IsTerminal(out->state)) return Status::NotFound();
  return s;
}

Status EngineCore::ReadState(const TaskId& id, TaskStateRecord* out) {
  if (FindInOverlays(&Overlay::state, overlay_, inflight_, id, out)) return Status::Ok();
  return store_->GetTaskState(id, out);
}

Status EngineCore::FindIdempotencyKey(const std::string& key, TaskId* out) {
  if (FindInOverlays(&Overlay::idempotency, overlay_, inflight_, key, out)) {
    return Status::Ok();
  }
  return store_->FindIdempotencyKey(key, out);
}

void EngineCore::Finish(uint32_t slot, TaskStateRecord end) {
  LiveTask& t = tasks_.at(slot);
  const TaskId id = t.id;
  if (t.state == TaskState::kScheduled) Unlink(slot);
  if (t.timer.valid()) wheel_.Cancel(t.timer);

  // The end record goes under its own key: the start record (worker, started_ms) stays as it
  // is, so nothing is read back here.
  std::string correlation;
  std::string idempotency_key;
  if (t.flags & (LiveTask::kHasCorrelation | LiveTask::kHasIdempotencyKey)) {
    TaskIssueRecord issue;
    Status s = ReadIssue(id, &issue);
    if (s.ok()) {
      correlation = std::move(issue.correlation);
      idempotency_key = std::move(issue.idempotency_key);
    } else if (!s.IsNotFound()) {
      Poison(s);
    }
  }
  end.ended_ms = now_ms_;
  const uint64_t activity_id = t.activity == kNilSlot ? 0 : activities_[t.activity].id;
  if (end.state == TaskState::kTimedOut) ++timeouts_[static_cast<size_t>(end.timeout_kind)];

  EventRecord ev;
  ev.seq = next_event_seq_++;
  counters_dirty_ = true;
  ev.task_id = id;
  ev.activity_id = activity_id;
  AssignOutcome(end, &ev);
  ev.time_ms = end.ended_ms;
  ev.correlation = std::move(correlation);
  batch_->AppendEvent(ev);
  batch_->PutTaskEnd(id, end);
  batch_->DeleteLive(id);
  batch_->PutRetired(end.ended_ms, id, idempotency_key);
  overlay_.end[id] = std::move(end);

  ReleaseActivityRef(t.activity);
  tasks_.Erase(slot);
}

Error EngineCore::NotLiveError(const TaskId& id,
                               const std::function<bool(const TaskStateRecord&)>& matches,
                               bool* duplicate) {
  *duplicate = false;
  TaskStateRecord st;
  Status s = ReadEnd(id, &st);
  if (s.IsNotFound() || (s.ok() && !IsTerminal(st.state))) {
    // Unknown (never issued here, or past retention), or queued and never handed out.
    return TaskDoesNotExistError();
  }
  if (!s.ok()) {
    Poison(s);
    return Error::Make(ErrorCode::kUnavailable, s.ToString());
  }
  if (matches && matches(st)) {
    *duplicate = true;
    return Error();
  }
  Error e = TaskGoneError();
  e.recorded_state = st.state;
  switch (st.state) {
    case TaskState::kSucceeded:
    case TaskState::kFailed:
      e.refusal = Refusal::kAlreadyCompleted;
      e.recorded = std::make_shared<const RecordedEnd>(
          RecordedEnd{std::move(st.output), std::move(st.error), std::move(st.cause)});
      break;
    case TaskState::kTimedOut:
      e.refusal = Refusal::kTimedOut;
      e.timeout_kind = st.timeout_kind;
      break;
    case TaskState::kCancelled:
      e.refusal = Refusal::kCancelled;
      break;
    default:
      TW_ASSERT_MSG(false, "terminal state expected");
  }
  return e;
}

uint32_t EngineCore::FindLive(const TaskId& id) {
  const uint32_t slot = tasks_.Find(id);
  if (slot != kNilSlot && TimeOutIfDue(slot)) return kNilSlot;
  return slot;
}

// Whether a recorded terminal record is the one `end` would write: then a retried call is a
// duplicate of the transition that already won.
static bool SameOutcome(const TaskStateRecord& recorded, const TaskStateRecord& end) {
  return recorded.state == end.state && recorded.output == end.output &&
         recorded.has_error == end.has_error && recorded.error == end.error &&
         recorded.has_cause == end.has_cause && recorded.cause == end.cause;
}

void EngineCore::Complete(const TaskId& id, TaskStateRecord end, bool require_started,
                          Callback<CompletionReply>& done) {
  if (poisoned_) return ReplyError(done, ErrorCode::kUnavailable, poison_status_.ToString());
  const uint32_t slot = FindLive(id);
  if (slot == kNilSlot || (require_started && tasks_.at(slot).state != TaskState::kStarted)) {
    bool duplicate = false;
    Error e = NotLiveError(
        id, [&end](const TaskStateRecord& st) { return SameOutcome(st, end); }, &duplicate);
    if (duplicate) return Reply(done, Result<CompletionReply>::Ok({true}));
    return Reply(done, Result<CompletionReply>::Fail(std::move(e)));
  }
  Finish(slot, std::move(end));
  Reply(done, Result<CompletionReply>::Ok({false}));
}

void EngineCore::Handle(SuccessCmd& c) {
  TaskStateRecord end;
  end.state = TaskState::kSucceeded;
  end.output = std::move(c.output);
  Complete(c.id, std::move(end), /*require_started=*/true, c.done);
}

void EngineCore::Handle(FailureCmd& c) {
  TaskStateRecord end;
  end.state = TaskState::kFailed;
  end.has_error = c.error.has_value();
  end.has_cause = c.cause.has_value();
  end.error = c.error.value_or("");
  end.cause = c.cause.value_or("");
  Complete(c.id, std::move(end), /*require_started=*/true, c.done);
}

void EngineCore::Handle(HeartbeatCmd& c) {
  if (poisoned_) return ReplyError(c.done, ErrorCode::kUnavailable, poison_status_.ToString());
  const uint32_t slot = FindLive(c.id);
  if (slot == kNilSlot || tasks_.at(slot).state != TaskState::kStarted) {
    bool duplicate = false;
    Error e = NotLiveError(c.id, nullptr, &duplicate);
    return Reply(c.done, Result<Empty>::Fail(std::move(e)));
  }
  // Not persisted, and the wheel is not touched: when the timer fires, OnTimer compares with
  // the true deadline and re-arms (lazy re-arm). Recovery extends heartbeat deadlines.
  LiveTask& t = tasks_.at(slot);
  if (t.heartbeat_s != 0) t.heartbeat_deadline_ms = now_ms_ + SecondsToMs(t.heartbeat_s);
  t.flags &= static_cast<uint8_t>(~LiveTask::kReturnable);
  // Nothing of a heartbeat is written, so holding its answer for the batch's sync would make it
  // no more durable. All it tells the worker is "the task is STARTED", and once that state is
  // durable, the answer goes out at once: a worker's heartbeat round trip costs no fsync. While
  // the task's issue or start is still in a batch, the answer waits for that batch like any
  // other, so no answer reveals a state a crash could undo. (Refusals above always wait: the
  // end they report may not be durable yet.)
  if (c.done && StateIsDurable(t.id)) return c.done(Result<Empty>::Ok({}));
  Reply(c.done, Result<Empty>::Ok({}));
}

void EngineCore::Handle(CancelCmd& c) {
  TaskStateRecord end;  // a queued task may be cancelled too
  end.state = TaskState::kCancelled;
  Complete(c.id, std::move(end), /*require_started=*/false, c.done);
}

void EngineCore::Handle(DescribeCmd& c) {
  if (poisoned_) return ReplyError(c.done, ErrorCode::kUnavailable, poison_status_.ToString());
  TaskIssueRecord issue;
  Status s = ReadIssue(c.id, &issue);
  if (s.IsNotFound()) {
    return ReplyFail(c.done, TaskDoesNotExistError());
  }
  if (!s.ok()) {
    Poison(s);
    return ReplyError(c.done, ErrorCode::kUnavailable, s.ToString());
  }
  TaskDescription d;
  d.issued_ms = issue.issued_ms;
  d.timeout_s = issue.timeout_s;
  d.heartbeat_s = issue.heartbeat_s;
  d.schedule_to_start_s = issue.schedule_to_start_s;
  d.input = std::move(issue.input);
  d.correlation = std::move(issue.correlation);
  if (issue.activity_id != 0) d.activity_arn = ArnForActivityId(issue.activity_id);

  const uint32_t slot = FindLive(c.id);
  if (slot != kNilSlot) {
    const LiveTask& t = tasks_.at(slot);
    d.state = t.state;
    if (t.state == TaskState::kScheduled) {
      d.schedule_to_start_deadline_ms = t.deadline_ms;
    } else {
      d.overall_deadline_ms = t.deadline_ms;
      d.heartbeat_deadline_ms = t.heartbeat_deadline_ms;
      d.started_ms = issue.activity_id == 0 ? issue.issued_ms : 0;
    }
  }
  auto take_end = [&d](TaskStateRecord& end) {
    d.ended_ms = end.ended_ms;
    AssignOutcome(std::move(end), &d);
  };
  // The state record: the start (worker, started_ms); written by format version 1 it may hold
  // the end as well.
  TaskStateRecord st;
  s = ReadState(c.id, &st);
  if (s.ok()) {
    if (st.started_ms != 0) d.started_ms = st.started_ms;
    d.worker = std::move(st.worker);
    if (slot == kNilSlot && IsTerminal(st.state)) take_end(st);
  } else if (!s.IsNotFound()) {
    Poison(s);
    return ReplyError(c.done, ErrorCode::kUnavailable, s.ToString());
  }
  if (slot == kNilSlot) {  // ended: the end record says how
    TaskStateRecord end;
    s = FindInOverlays(&Overlay::end, overlay_, inflight_, c.id, &end)
            ? Status::Ok()
            : store_->GetTaskEnd(c.id, &end);
    if (s.ok()) {
      take_end(end);
    } else if (!s.IsNotFound()) {
      Poison(s);
      return ReplyError(c.done, ErrorCode::kUnavailable, s.ToString());
    }
  }
  if (issue.activity_id == 0 && d.started_ms == 0) d.started_ms = issue.issued_ms;
  Reply(c.done, Result<TaskDescription>::Ok(std::move(d)));
}

// ---------------------------------------------------------------------------------------------
// Timers and retention

TimeoutKind EngineCore::DueTimeout(const LiveTask& t) const {
  if (t.state == TaskState::kScheduled) {
    return t.deadline_ms != 0 && t.deadline_ms <= now_ms_ ? TimeoutKind::kScheduleToStart
                                                          : TimeoutKind::kNone;
  }
  const bool heartbeat_due = t.heartbeat_deadline_ms != 0 && t.heartbeat_deadline_ms <= now_ms_;
  const bool overall_due = t.deadline_ms != 0 && t.deadline_ms <= now_ms_;
  if (heartbeat_due && overall_due) {
    // Both ran out: the one that ran out first is the cause.
    return t.heartbeat_deadline_ms < t.deadline_ms ? TimeoutKind::kHeartbeat
                                                   : TimeoutKind::kOverall;
  }
  if (heartbeat_due) return TimeoutKind::kHeartbeat;
  if (overall_due) return TimeoutKind::kOverall;
  return TimeoutKind::kNone;
}

bool EngineCore::TimeOutIfDue(uint32_t slot) {
  const TimeoutKind kind = DueTimeout(tasks_.at(slot));
  if (kind == TimeoutKind::kNone) return false;
  TaskStateRecord end;
  end.state = TaskState::kTimedOut;
  end.timeout_kind = kind;
  end.has_error = true;
  end.error = kTimeoutError;
  Finish(slot, std::move(end));
  return true;
}

void EngineCore::OnTimer(uint32_t slot, int64_t now_ms) {
  TW_ASSERT(now_ms <= now_ms_);
  tasks_.at(slot).timer = TimingWheel::Handle();  // fired: the handle is stale now
  if (!TimeOutIfDue(slot)) ArmTimer(slot);        // a heartbeat moved the deadline: lazy re-arm
}

bool EngineCore::Expire(int64_t now_ms, size_t budget) {
  now_ms_ = std::max(now_ms_, now_ms);
  bool caught_up = true;
  if (!poisoned_) {
    const size_t fired =
        wheel_.AdvanceTo(now_ms_, budget, [this](uint64_t id, int64_t /*deadline_ms*/) {
          OnTimer(static_cast<uint32_t>(id), now_ms_);
        });
    caught_up = fired < budget;
    expiries_ += fired;
  }
  if (caught_up) {
    for (Callback<Empty>& done : sync_waiters_) {
      if (poisoned_) {
        ReplyError(done, ErrorCode::kUnavailable, poison_status_.ToString());
      } else {
        Reply(done, Result<Empty>::Ok({}));
      }
    }
    sync_waiters_.clear();
  }
  return caught_up;
}

bool EngineCore::Retire(int64_t now_ms) {
  if (poisoned_) return false;
  const int64_t before = now_ms - options_.retention_ms;
  if (before <= 0) return false;
  struct Expired {
    int64_t ended_ms;
    TaskId id;
    std::string key;
  };
  std::vector<Expired> expired;
  Status s = store_->ScanRetired(before, limits::kRetiredPerBatchMax,
                                 [&](int64_t ended_ms, const TaskId& id, std::string_view key) {
                                   expired.push_back(Expired{ended_ms, id, std::string(key)});
                                 });
  if (!s.ok()) {
    Poison(s);
    return false;
  }
  for (const Expired& e : expired) batch_->DeleteTask(e.ended_ms, e.id, e.key);
  return !expired.empty();
}

// ---------------------------------------------------------------------------------------------
// Consumers, stats, sync

void EngineCore::Handle(RegisterConsumerCmd& c) {
  if (poisoned_) return ReplyError(c.done, ErrorCode::kUnavailable, poison_status_.ToString());
  auto it = consumers_.find(c.name);
  if (it == consumers_.end()) {
    if (consumers_.size() >= limits::kConsumersMax) {
      return ReplyError(c.done, ErrorCode::kValidation,
                        "too many consumers (" + std::to_string(limits::kConsumersMax) + ")");
    }
    it = consumers_.emplace(c.name, next_event_seq_ - 1).first;
    batch_->PutConsumer(c.name, it->second);
  }
  Reply(c.done, Result<ConsumerInfo>::Ok(ConsumerInfo{it->first, it->second}));
}

void EngineCore::Handle(DeleteConsumerCmd& c) {
  if (poisoned_) return ReplyError(c.done, ErrorCode::kUnavailable, poison_status_.ToString());
  if (consumers_.erase(c.name) != 0) {
    batch_->DeleteConsumer(c.name);
    MaybeTrimEvents();
  }
  Reply(c.done, Result<Empty>::Ok({}));
}

void EngineCore::Handle(AckCmd& c) {
  if (poisoned_) return ReplyError(c.done, ErrorCode::kUnavailable, poison_status_.ToString());
  auto it = consumers_.find(c.name);
  if (it == consumers_.end()) {
    return ReplyFail(c.done, UnknownConsumerError(c.name));
  }
  if (c.seq > durable_last_event_seq_) {
    return ReplyFail(c.done, AckBeyondLastEventError(c.seq, durable_last_event_seq_));
  }
  if (c.seq > it->second) {
    it->second = c.seq;
    batch_->PutConsumer(c.name, c.seq);
    MaybeTrimEvents();
  }
  Reply(c.done, Result<Empty>::Ok({}));
}

void EngineCore::MaybeTrimEvents() {
  if (consumers_.empty()) return;  // nobody registered: keep everything
  uint64_t slowest = UINT64_MAX;
  for (auto& [name, seq] : consumers_) slowest = std::min(slowest, seq);
  if (slowest + 1 > first_event_seq_) {
    first_event_seq_ = slowest + 1;
    batch_->TrimEventsBelow(first_event_seq_);
  }
}

EngineStats EngineCore::StatsNow() const {
  EngineStats st;
  st.live_tasks = tasks_.size();
  st.pending_timers = wheel_.size();
  st.waiting_polls = waiting_polls_;
  st.last_event_seq = durable_last_event_seq_;
  uint64_t slowest = durable_last_event_seq_;
  for (auto& [name, seq] : consumers_) {
    slowest = std::min(slowest, seq);
    st.consumers.push_back(ConsumerInfo{name, seq});
  }
  st.events_not_acked = durable_last_event_seq_ - slowest;
  st.batches = batches_;
  st.commands = commands_;
  st.timeouts = timeouts_;
  st.batch_commands = batch_commands_;
  st.index_bytes = bytes_allocated();
  for (auto& [name, slot] : activity_by_name_) {
    st.queued_per_activity.emplace_back(activities_[slot].arn, activities_[slot].queued);
  }
  return st;
}

void EngineCore::Handle(StatsCmd& c) {
  // A poisoned core answers at once: its batches are never written, and an operator asking
  // why must still get an answer (the runtime adds the storage health).
  if (poisoned_) {
    if (c.done) c.done(Result<EngineStats>::Ok(StatsNow()));
    return;
  }
  Reply(c.done, Result<EngineStats>::Ok(StatsNow()));
}

void EngineCore::Handle(SyncCmd& c) {
  if (poisoned_) return ReplyError(c.done, ErrorCode::kUnavailable, poison_status_.ToString());
  sync_waiters_.push_back(std::move(c.done));  // answered once Expire has caught up
}

void EngineCore::AnswerAllPollsEmpty() {
  for (Callback<Empty>& done : sync_waiters_) {
    ReplyFail(done, StoppingError());
  }
  sync_waiters_.clear();
  for (Activity& a : activities_) {
    for (Waiter& w : a.waiters) Reply(w.done, Result<GetActivityTaskReply>::Ok({}));
    a.waiters.clear();
  }
  poll_activity_.clear();
  waiting_polls_ = 0;
}

}  // namespace tw
