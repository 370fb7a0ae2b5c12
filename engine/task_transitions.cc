// EngineCore's task transitions: issue, hand-out, start, heartbeat, completion, return, time
// out, describe; and the reads they make (pending records first, then the store). The state
// they change belongs to the parts engine_core.h lists; the batch they write into, to the core.
#include <algorithm>
#include <utility>

#include "engine/assert.h"
#include "engine/engine_core.h"
#include "engine/errors.h"
#include "engine/task_clocks.h"

namespace tw {

// ---------------------------------------------------------------------------------------------
// Task transitions

LiveRecord EngineCore::LiveRecordOf(const LiveTask& t) const {
  LiveRecord r;
  r.state = t.state;
  r.activity_id = registry_.IdOf(t.activity);
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
  const int64_t when = clocks::ArmedDeadline(t);
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

void EngineCore::StartTask(uint32_t slot, const std::string& worker) {
  registry_.Unlink(tasks_, slot);
  LiveTask& t = tasks_.at(slot);
  t.state = TaskState::kStarted;
  clocks::OnStarted(t, now_ms_);
  t.flags |= LiveTask::kReturnable;
  ArmTimer(slot);
  TaskStateRecord st;
  st.state = TaskState::kStarted;
  st.started_ms = now_ms_;
  st.worker = worker;
  batch_->PutTaskState(t.id, st);
  pending_.open().state[t.id] = std::move(st);
  batch_->PutLive(t.id, LiveRecordOf(t));
}

void EngineCore::HandOutToWaiter(uint32_t activity_slot) {
  const Activity& a = registry_.at(activity_slot);
  // A queued task past its schedule-to-start deadline is never handed out.
  while (a.head != kNilSlot && !a.waiters.empty() && TimeOutIfDue(a.head)) {
  }
  if (a.head == kNilSlot || a.waiters.empty()) return;
  Waiter w = registry_.PopWaiter(activity_slot);
  const uint32_t slot = a.head;
  StartTask(slot, w.worker);
  const TaskId id = tasks_.at(slot).id;
  TaskIssueRecord issue;
  Status s = ReadIssue(id, &issue);
  if (!s.ok()) return ReplyReadFailure(w.done, s);
  Reply(w.done, Result<GetActivityTaskReply>::Ok(GetActivityTaskReply{
                    codec_->Encode(options_.shard, id), std::move(issue.input)}));
}

// The live task for an accepted issue, with its clocks running and its timer armed.
uint32_t EngineCore::NewTask(const IssueTaskRequest& req, uint32_t activity_slot) {
  const TaskId id = task_ids_.Next(now_ms_);
  const uint32_t slot = tasks_.Insert(id);
  LiveTask& t = tasks_.at(slot);
  t.activity = activity_slot;
  t.heartbeat_s = req.heartbeat_s;
  t.timeout_s = req.timeout_s;
  t.schedule_to_start_s = req.schedule_to_start_s;
  if (!req.idempotency_key.empty()) t.flags |= LiveTask::kHasIdempotencyKey;
  if (!req.correlation.empty()) t.flags |= LiveTask::kHasCorrelation;
  if (activity_slot == kNilSlot) {
    t.state = TaskState::kStarted;  // a callback task is born STARTED: its clocks start now
    clocks::OnStarted(t, now_ms_);
  } else {
    registry_.AddRef(activity_slot);
    t.state = TaskState::kScheduled;
    t.queue_seq = next_queue_seq_++;
    counters_dirty_ = true;
    clocks::OnQueued(t, now_ms_);
    registry_.Enqueue(tasks_, activity_slot, slot, /*at_head=*/false);
  }
  ArmTimer(slot);
  return slot;
}

void EngineCore::Handle(IssueCmd& c) {
  IssueTaskRequest& req = c.req;
  if (!req.idempotency_key.empty()) {
    TaskId existing;
    Status s = FindIdempotencyKey(req.idempotency_key, &existing);
    if (s.ok()) {
      return Reply(c.done, Result<IssueTaskReply>::Ok(
                               IssueTaskReply{codec_->Encode(options_.shard, existing), true}));
    }
    if (!s.IsNotFound()) return ReplyReadFailure(c.done, s);
  }
  uint32_t activity_slot = kNilSlot;
  if (!req.activity_arn.empty()) {
    activity_slot = registry_.FindByArn(req.activity_arn);
    if (activity_slot == kNilSlot) {
      return ReplyFail(c.done, ActivityDoesNotExistError(req.activity_arn));
    }
  }
  if (tasks_.size() >= limits::kLiveTasksMax) {
    return ReplyFail(c.done, ThrottlingError("too many live tasks (" +
                                             std::to_string(limits::kLiveTasksMax) + ")"));
  }
  const uint32_t slot = NewTask(req, activity_slot);
  const TaskId id = tasks_.at(slot).id;

  TaskIssueRecord issue;
  issue.activity_id = registry_.IdOf(activity_slot);
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
    pending_.open().idempotency[issue.idempotency_key] = id;
  }
  batch_->PutLive(id, LiveRecordOf(tasks_.at(slot)));
  pending_.open().issue[id] = std::move(issue);
  Reply(c.done,
        Result<IssueTaskReply>::Ok(IssueTaskReply{codec_->Encode(options_.shard, id), false}));
  if (activity_slot != kNilSlot) HandOutToWaiter(activity_slot);
}

void EngineCore::Handle(PollCmd& c) {
  const uint32_t slot = registry_.FindByArn(c.req.activity_arn);
  if (slot == kNilSlot) return ReplyFail(c.done, ActivityDoesNotExistError(c.req.activity_arn));
  if (registry_.at(slot).waiters.size() >= options_.pollers_per_activity_max) {
    return ReplyFail(c.done, ActivityWorkerLimitExceededError(options_.pollers_per_activity_max));
  }
  if (registry_.waiting_polls() >= limits::kPollWaitersMax) {
    return ReplyFail(c.done, ThrottlingError("too many waiting polls"));
  }
  if (registry_.IsWaiting(c.poll_id)) return ReplyFail(c.done, PollIdWaitingError());
  registry_.AddWaiter(slot, Waiter{c.poll_id, std::move(c.req.worker_name), std::move(c.done)});
  HandOutToWaiter(slot);
}

void EngineCore::Handle(WithdrawCmd& c) {
  Waiter w;
  if (registry_.Withdraw(c.poll_id, &w)) Reply(w.done, Result<GetActivityTaskReply>::Ok({}));
}

void EngineCore::Handle(ReturnCmd& c) {
  const uint32_t slot = tasks_.Find(c.id);
  if (slot == kNilSlot) return;
  LiveTask& t = tasks_.at(slot);
  if (t.state != TaskState::kStarted || !(t.flags & LiveTask::kReturnable)) return;
  if (t.activity == kNilSlot || registry_.at(t.activity).deleted) return;
  if (t.schedule_to_start_s == 0) {
    // Recovery does not restore it (the live record has no room for it): read it back.
    TaskIssueRecord issue;
    Status s = ReadIssue(t.id, &issue);
    if (!s.ok() && !s.IsNotFound()) return Poison(s);
    t.schedule_to_start_s = issue.schedule_to_start_s;
  }
  t.state = TaskState::kScheduled;
  t.flags &= static_cast<uint8_t>(~LiveTask::kReturnable);
  clocks::OnQueued(t, now_ms_);
  registry_.Enqueue(tasks_, t.activity, slot, /*at_head=*/true);
  ArmTimer(slot);
  TaskStateRecord st;  // back to SCHEDULED, no worker
  batch_->PutTaskState(t.id, st);
  pending_.open().state[t.id] = st;
  batch_->PutLive(t.id, LiveRecordOf(t));
  HandOutToWaiter(t.activity);
}

Status EngineCore::ReadIssue(const TaskId& id, TaskIssueRecord* out) {
  if (pending_.FindIssue(id, out)) return Status::Ok();
  return store_->GetTaskIssue(id, out);
}

Status EngineCore::ReadEnd(const TaskId& id, TaskStateRecord* out, bool v1_fallback) {
  if (pending_.FindEnd(id, out)) return Status::Ok();
  Status s = store_->GetTaskEnd(id, out);
  if (!s.IsNotFound() || !v1_fallback) return s;
  s = ReadState(id, out);
  if (s.ok() && !IsTerminal(out->state)) return Status::NotFound();
  return s;
}

Status EngineCore::ReadState(const TaskId& id, TaskStateRecord* out) {
  if (pending_.FindState(id, out)) return Status::Ok();
  return store_->GetTaskState(id, out);
}

Status EngineCore::FindIdempotencyKey(const std::string& key, TaskId* out) {
  if (pending_.FindIdempotencyKey(key, out)) return Status::Ok();
  return store_->FindIdempotencyKey(key, out);
}

void EngineCore::Finish(uint32_t slot, TaskStateRecord end) {
  LiveTask& t = tasks_.at(slot);
  TW_ASSERT(IsTerminal(end.state));
  const TaskId id = t.id;
  if (t.state == TaskState::kScheduled) registry_.Unlink(tasks_, slot);
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
  if (end.state == TaskState::kTimedOut) ++timeouts_[static_cast<size_t>(end.timeout_kind)];

  EventRecord ev;
  ev.outcome() = end.outcome();
  ev.task_id = id;
  ev.activity_id = registry_.IdOf(t.activity);
  ev.time_ms = end.ended_ms;
  ev.correlation = std::move(correlation);
  events_.Append(&ev, batch_.get());
  counters_dirty_ = true;
  batch_->PutTaskEnd(id, end);
  batch_->DeleteLive(id);
  batch_->PutRetired(end.ended_ms, id, idempotency_key);
  pending_.open().end[id] = std::move(end);

  registry_.ReleaseRef(t.activity);
  tasks_.Erase(slot);
}

Error EngineCore::NotLiveError(const TaskId& id, const Outcome* matches, bool* duplicate) {
  *duplicate = false;
  TaskStateRecord st;
  Status s = ReadEnd(id, &st);
  if (s.IsNotFound() || (s.ok() && !IsTerminal(st.state))) {
    // Unknown (never issued here, or past retention), or queued and never handed out.
    return TaskDoesNotExistError();
  }
  if (!s.ok()) {
    Poison(s);
    return UnavailableError(s.ToString());
  }
  if (matches != nullptr && matches->SameResult(st)) {
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

void EngineCore::Complete(const TaskId& id, TaskStateRecord end, bool require_started,
                          Callback<CompletionReply>& done) {
  const uint32_t slot = FindLive(id);
  if (slot == kNilSlot || (require_started && tasks_.at(slot).state != TaskState::kStarted)) {
    bool duplicate = false;
    Error e = NotLiveError(id, &end, &duplicate);
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

void EngineCore::Handle(CancelCmd& c) {
  TaskStateRecord end;  // a queued task may be cancelled too
  end.state = TaskState::kCancelled;
  Complete(c.id, std::move(end), /*require_started=*/false, c.done);
}

void EngineCore::Handle(HeartbeatCmd& c) {
  const uint32_t slot = FindLive(c.id);
  if (slot == kNilSlot || tasks_.at(slot).state != TaskState::kStarted) {
    bool duplicate = false;
    Error e = NotLiveError(c.id, nullptr, &duplicate);
    return Reply(c.done, Result<Empty>::Fail(std::move(e)));
  }
  // Not persisted, and the wheel is not touched: when the timer fires, OnTimer compares with
  // the true deadline and re-arms (lazy re-arm). Recovery extends heartbeat deadlines.
  LiveTask& t = tasks_.at(slot);
  clocks::OnHeartbeat(t, now_ms_);
  t.flags &= static_cast<uint8_t>(~LiveTask::kReturnable);
  // Nothing of a heartbeat is written, so holding its answer for the batch's sync would make it
  // no more durable. All it tells the worker is "the task is STARTED", and once that state is
  // durable, the answer goes out at once: a worker's heartbeat round trip costs no fsync. While
  // the task's issue or start is still in a batch, the answer waits for that batch like any
  // other, so no answer reveals a state a crash could undo. (Refusals above always wait: the
  // end they report may not be durable yet.)
  if (c.done && pending_.IsDurable(t.id)) return c.done(Result<Empty>::Ok({}));
  Reply(c.done, Result<Empty>::Ok({}));
}

void EngineCore::Handle(DescribeCmd& c) {
  TaskIssueRecord issue;
  Status s = ReadIssue(c.id, &issue);
  if (s.IsNotFound()) return ReplyFail(c.done, TaskDoesNotExistError());
  if (!s.ok()) return ReplyReadFailure(c.done, s);
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
  if (!DescribeFromRecords(c.id, slot != kNilSlot, &d, &s)) return ReplyReadFailure(c.done, s);
  if (issue.activity_id == 0 && d.started_ms == 0) d.started_ms = issue.issued_ms;
  Reply(c.done, Result<TaskDescription>::Ok(std::move(d)));
}

bool EngineCore::DescribeFromRecords(const TaskId& id, bool live, TaskDescription* d,
                                     Status* failure) {
  auto take_end = [d](TaskStateRecord& end) {
    d->ended_ms = end.ended_ms;
    d->outcome() = std::move(end.outcome());
  };
  // The state record: the start (worker, started_ms); written by format version 1 it may hold
  // the end as well.
  TaskStateRecord st;
  Status s = ReadState(id, &st);
  if (s.ok()) {
    if (st.started_ms != 0) d->started_ms = st.started_ms;
    d->worker = std::move(st.worker);
    if (!live && IsTerminal(st.state)) take_end(st);
  } else if (!s.IsNotFound()) {
    *failure = s;
    return false;
  }
  if (live) return true;
  TaskStateRecord end;  // ended: the end record says how
  s = ReadEnd(id, &end, /*v1_fallback=*/false);
  if (s.ok()) {
    take_end(end);
  } else if (!s.IsNotFound()) {
    *failure = s;
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Timeouts

bool EngineCore::TimeOutIfDue(uint32_t slot) {
  const TimeoutKind kind = clocks::Due(tasks_.at(slot), now_ms_);
  if (kind == TimeoutKind::kNone) return false;
  // How late the timeout fires, from the engine's clock (EngineStats::timer_lateness_us).
  const int64_t late_ms = now_ms_ - clocks::DeadlineOf(tasks_.at(slot), kind);
  TW_ASSERT(late_ms >= 0);  // never early
  const auto late_us = static_cast<uint64_t>(late_ms) * 1000;
  ++timer_lateness_us_[LatencyBuckets::IndexOf(late_us)];
  timer_lateness_max_us_ = std::max(timer_lateness_max_us_, late_us);
  TaskStateRecord end;
  end.state = TaskState::kTimedOut;
  end.timeout_kind = kind;
  end.has_error = true;
  end.error = kStatesTimeout;
  Finish(slot, std::move(end));
  return true;
}

void EngineCore::OnTimer(uint32_t slot) {
  tasks_.at(slot).timer = TimingWheel::Handle();  // fired: the handle is stale now
  if (!TimeOutIfDue(slot)) ArmTimer(slot);        // a heartbeat moved the deadline: lazy re-arm
}

}  // namespace tw
