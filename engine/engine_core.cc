#include "engine/engine_core.h"

#include <algorithm>
#include <type_traits>
#include <utility>

#include "engine/assert.h"
#include "engine/errors.h"
#include "engine/reply_burst.h"
#include "engine/task_clocks.h"
#include "engine/validate.h"

namespace tw {

namespace {

// CompleteSealed calls its every_few callback after this many replies.
constexpr size_t kRepliesPerCallback = 256;

void Release(Held& held, const Status* failure) {
  std::visit(
      [failure](auto& h) {
        if constexpr (std::is_same_v<std::decay_t<decltype(h)>, HeldClosure>) {
          h(failure);
        } else {
          using T = decltype(h.result.value);
          h.done(failure == nullptr ? std::move(h.result) : FailedBatchResult<T>(*failure));
        }
      },
      held);
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
      registry_(options.region, options.account),
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
  events_.Recover(meta);
  next_activity_id_ = meta.next_activity_id;
  next_queue_seq_ = meta.next_queue_seq;

  std::vector<ActivityRecord> records;
  s = store_->LoadActivities(&records);
  if (!s.ok()) return s;
  std::unordered_map<uint64_t, uint32_t> slot_by_id;
  for (ActivityRecord& r : records) {
    slot_by_id[r.id] = registry_.Add(r.id, r.name, r.creation_ms);
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
        // A started task of a deleted activity: a placeholder slot for its ARN lookups.
        it = slot_by_id.emplace(r.activity_id, registry_.AddDeleted(r.activity_id)).first;
      }
      t.activity = it->second;
      registry_.AddRef(t.activity);
    }
    clocks::OnRecovered(t, r, now_ms_);
    if (r.state == TaskState::kScheduled) scheduled.emplace_back(r.queue_seq, slot);
    ArmTimer(slot);
  });
  if (!s.ok()) return s;
  std::sort(scheduled.begin(), scheduled.end());
  for (auto& [seq, slot] : scheduled) {
    const uint32_t as = tasks_.at(slot).activity;
    TW_ASSERT(as != kNilSlot);
    registry_.Enqueue(tasks_, as, slot, /*at_head=*/false);
  }
  recovered_tasks_ = tasks_.size();
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Batch mechanics

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
  if (poisoned_ && RefusedWhilePoisoned(cmd)) return;
  std::visit([this](auto& c) { Handle(c); }, cmd);
}

bool EngineCore::RefusedWhilePoisoned(Command& cmd) {
  return std::visit(
      [this](auto& c) {
        using C = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<C, WithdrawCmd> || std::is_same_v<C, StatsCmd>) {
          return false;  // a withdrawn poll is answered empty; stats say why the core is down
        } else if constexpr (std::is_same_v<C, ReturnCmd>) {
          return true;  // nothing to answer, nothing to write
        } else {
          ReplyFail(c.done, UnavailableError(poison_status_.ToString()));
          return true;
        }
      },
      cmd);
}

Status EngineCore::Commit() {
  SealedBatch sealed = Seal();
  Status s = WriteSealed(&sealed);
  CompleteSealed(&sealed, s);
  OnDurable(s);
  return s;
}

SealedBatch EngineCore::Seal() {
  TW_ASSERT(pending_.batches_in_flight() < limits::kBatchesInFlightMax);
  if (counters_dirty_) {
    batch_->PutCounters(events_.next_seq(), next_activity_id_, next_queue_seq_);
    counters_dirty_ = false;
  }
  SealedBatch sealed;
  sealed.batch = std::move(batch_);
  batch_ = store_->NewBatch();
  sealed.replies.swap(replies_);
  replies_.swap(spare_replies_);
  sealed.events = events_.Seal();
  if (poisoned_) sealed.poisoned = poison_status_;
  pending_.Seal();
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
  if (ok) events_.Publish(sealed->events);
  for (size_t i = 0; i < sealed->replies.size(); ++i) {
    Release(sealed->replies[i], ok ? nullptr : &write_status);
    if (every_few && (i + 1) % kRepliesPerCallback == 0) every_few();
  }
  sealed->replies.clear();
  if (spare_replies_.capacity() < sealed->replies.capacity()) {
    spare_replies_.swap(sealed->replies);
  }
  if (ok && sealed->events.grew && event_listener_) event_listener_(sealed->events.last);
}

void EngineCore::ReleaseBatchBuffers() {
  pending_.ReleaseBuffers();
  std::vector<Held>().swap(spare_replies_);
  if (replies_.empty()) std::vector<Held>().swap(replies_);
}

void EngineCore::OnDurable(const Status& write_status) {
  pending_.OnDurable();
  if (!write_status.ok() && !poisoned_) Poison(write_status);
}

void EngineCore::Poison(const Status& s) {
  TW_ASSERT(!s.ok());
  poisoned_ = true;
  poison_status_ = s;
}

// ---------------------------------------------------------------------------------------------
// Activities

void EngineCore::Handle(CreateActivityCmd& c) {
  const uint32_t existing = registry_.FindByName(c.req.name);
  if (existing != kNilSlot) {
    return Reply(c.done, Result<ActivityInfo>::Ok(registry_.InfoOf(existing)));
  }
  if (registry_.live() >= limits::kActivitiesMax) {
    return ReplyFail(c.done, ActivityLimitExceededError(limits::kActivitiesMax));
  }
  const uint32_t slot = registry_.Add(next_activity_id_++, c.req.name, now_ms_);
  counters_dirty_ = true;
  const Activity& a = registry_.at(slot);
  batch_->PutActivity(ActivityRecord{a.id, a.name, a.creation_ms});
  Reply(c.done, Result<ActivityInfo>::Ok(registry_.InfoOf(slot)));
}

void EngineCore::Handle(DeleteActivityCmd& c) {
  const uint32_t slot = registry_.FindByArn(c.req.arn);
  if (slot == kNilSlot) return Reply(c.done, Result<Empty>::Ok({}));  // deleting twice is fine
  const std::string arn = registry_.at(slot).arn;
  // Queued tasks end as FAILED (States.Runtime); started ones run on.
  while (registry_.at(slot).head != kNilSlot) {
    TaskStateRecord end;
    end.state = TaskState::kFailed;
    end.has_error = true;
    end.error = kStatesRuntime;
    end.has_cause = true;
    end.cause = ActivityDeletedCause(arn);
    Finish(registry_.at(slot).head, std::move(end));
  }
  registry_.TakeWaiters(slot,
                        [&](Waiter& w) { ReplyFail(w.done, ActivityDoesNotExistError(arn)); });
  batch_->DeleteActivity(registry_.at(slot).id);
  registry_.Remove(slot);
  Reply(c.done, Result<Empty>::Ok({}));
}

void EngineCore::Handle(DescribeActivityCmd& c) {
  const uint32_t slot = registry_.FindByArn(c.req.arn);
  if (slot == kNilSlot) return ReplyFail(c.done, ActivityDoesNotExistError(c.req.arn));
  Reply(c.done, Result<ActivityInfo>::Ok(registry_.InfoOf(slot)));
}

void EngineCore::Handle(ListActivitiesCmd& c) { Reply(c.done, registry_.List(c.req)); }

// ---------------------------------------------------------------------------------------------
// Timers and retention

bool EngineCore::Expire(int64_t now_ms, size_t budget) {
  now_ms_ = std::max(now_ms_, now_ms);
  bool caught_up = true;
  if (!poisoned_) {
    const size_t fired = wheel_.AdvanceTo(
        now_ms_, budget,
        [this](uint64_t id, int64_t /*deadline_ms*/) { OnTimer(static_cast<uint32_t>(id)); });
    caught_up = fired < budget;
    expiries_ += fired;
  }
  if (caught_up) {
    for (Callback<Empty>& done : sync_waiters_) {
      if (poisoned_) {
        ReplyFail(done, UnavailableError(poison_status_.ToString()));
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
  Reply(c.done, events_.Register(c.name, batch_.get()));
}

void EngineCore::Handle(DeleteConsumerCmd& c) {
  events_.Delete(c.name, batch_.get());
  Reply(c.done, Result<Empty>::Ok({}));
}

void EngineCore::Handle(AckCmd& c) { Reply(c.done, events_.Ack(c.name, c.seq, batch_.get())); }

EngineStats EngineCore::StatsNow() const {
  EngineStats st;
  st.live_tasks = tasks_.size();
  st.pending_timers = wheel_.size();
  st.waiting_polls = registry_.waiting_polls();
  st.last_event_seq = events_.durable_last();
  st.consumers = events_.consumers();
  st.events_not_acked = events_.not_acked();
  st.batches = batches_;
  st.commands = commands_;
  st.timeouts = timeouts_;
  st.batch_commands = batch_commands_;
  st.timer_lateness_us = timer_lateness_us_;
  st.timer_lateness_max_us = timer_lateness_max_us_;
  st.index_bytes = bytes_allocated();
  st.per_activity = registry_.Counts();
  st.store = store_->Stats();
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
  sync_waiters_.push_back(std::move(c.done));  // answered once Expire has caught up
}

void EngineCore::AnswerAllPollsEmpty() {
  for (Callback<Empty>& done : sync_waiters_) ReplyFail(done, StoppingError());
  sync_waiters_.clear();
  registry_.TakeWaiters(kNilSlot,
                        [this](Waiter& w) { Reply(w.done, Result<GetActivityTaskReply>::Ok({})); });
}

// ---------------------------------------------------------------------------------------------
// Invariants (engine_core.h)

void EngineCore::CheckInvariants() {
  wheel_.Validate();
  registry_.CheckInvariants(tasks_);  // 2
  events_.CheckInvariants();
  size_t armed = 0;
  tasks_.ForEach([&](uint32_t slot, const LiveTask& t) {
    TW_ASSERT(t.state == TaskState::kScheduled || t.state == TaskState::kStarted);  // 1
    TW_ASSERT(tasks_.Find(t.id) == slot);
    const int64_t deadline = clocks::ArmedDeadline(t);
    TW_ASSERT_MSG(t.timer.valid() == (deadline != 0), "a timer iff a deadline");
    if (!t.timer.valid()) return;
    ++armed;
    uint64_t id = 0;
    int64_t armed_for = 0;
    TW_ASSERT_MSG(wheel_.Inspect(t.timer, &id, &armed_for), "the task's timer is pending");
    TW_ASSERT(id == slot);
    TW_ASSERT_MSG(armed_for <= deadline, "the timer is never after the deadline");  // 7
  });
  TW_ASSERT_MSG(armed == wheel_.size(), "the wheel holds only the tasks' timers");  // 1
  TW_ASSERT(poisoned_ == !poison_status_.ok());                                     // 5
  TW_ASSERT(pending_.batches_in_flight() <= limits::kBatchesInFlightMax);           // 6
}

}  // namespace tw
