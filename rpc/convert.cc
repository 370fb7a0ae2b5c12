#include "rpc/convert.h"

#include <utility>

#include "engine/assert.h"

namespace tw::rpc {

proto::TaskState ToProto(TaskState s) {
  switch (s) {
    case TaskState::kScheduled:
      return proto::TaskState::SCHEDULED;
    case TaskState::kStarted:
      return proto::TaskState::STARTED;
    case TaskState::kSucceeded:
      return proto::TaskState::SUCCEEDED;
    case TaskState::kFailed:
      return proto::TaskState::FAILED;
    case TaskState::kTimedOut:
      return proto::TaskState::TIMED_OUT;
    case TaskState::kCancelled:
      return proto::TaskState::CANCELLED;
  }
  return proto::TaskState::UNSPECIFIED;
}

TaskState FromProto(proto::TaskState s) {
  switch (s) {
    case proto::TaskState::SCHEDULED:
      return TaskState::kScheduled;
    case proto::TaskState::STARTED:
      return TaskState::kStarted;
    case proto::TaskState::SUCCEEDED:
      return TaskState::kSucceeded;
    case proto::TaskState::FAILED:
      return TaskState::kFailed;
    case proto::TaskState::TIMED_OUT:
      return TaskState::kTimedOut;
    case proto::TaskState::CANCELLED:
      return TaskState::kCancelled;
    case proto::TaskState::UNSPECIFIED:
      break;
  }
  return TaskState::kScheduled;
}

proto::TimeoutKind ToProto(TimeoutKind k) {
  switch (k) {
    case TimeoutKind::kNone:
      return proto::TimeoutKind::NONE;
    case TimeoutKind::kHeartbeat:
      return proto::TimeoutKind::HEARTBEAT;
    case TimeoutKind::kOverall:
      return proto::TimeoutKind::OVERALL;
    case TimeoutKind::kScheduleToStart:
      return proto::TimeoutKind::SCHEDULE_TO_START;
  }
  return proto::TimeoutKind::NONE;
}

TimeoutKind FromProto(proto::TimeoutKind k) {
  switch (k) {
    case proto::TimeoutKind::NONE:
      return TimeoutKind::kNone;
    case proto::TimeoutKind::HEARTBEAT:
      return TimeoutKind::kHeartbeat;
    case proto::TimeoutKind::OVERALL:
      return TimeoutKind::kOverall;
    case proto::TimeoutKind::SCHEDULE_TO_START:
      return TimeoutKind::kScheduleToStart;
  }
  return TimeoutKind::kNone;
}

proto::ErrorCode ToProto(ErrorCode c) {
  switch (c) {
    case ErrorCode::kOk:
      return proto::ErrorCode::OK;
    case ErrorCode::kValidation:
      return proto::ErrorCode::VALIDATION;
    case ErrorCode::kInvalidToken:
      return proto::ErrorCode::INVALID_TOKEN;
    case ErrorCode::kTaskDoesNotExist:
      return proto::ErrorCode::TASK_DOES_NOT_EXIST;
    case ErrorCode::kTaskTimedOut:
      return proto::ErrorCode::TASK_TIMED_OUT;
    case ErrorCode::kInvalidOutput:
      return proto::ErrorCode::INVALID_OUTPUT;
    case ErrorCode::kInvalidName:
      return proto::ErrorCode::INVALID_NAME;
    case ErrorCode::kInvalidArn:
      return proto::ErrorCode::INVALID_ARN;
    case ErrorCode::kActivityDoesNotExist:
      return proto::ErrorCode::ACTIVITY_DOES_NOT_EXIST;
    case ErrorCode::kActivityLimitExceeded:
      return proto::ErrorCode::ACTIVITY_LIMIT_EXCEEDED;
    case ErrorCode::kActivityWorkerLimitExceeded:
      return proto::ErrorCode::ACTIVITY_WORKER_LIMIT_EXCEEDED;
    case ErrorCode::kOverloaded:
      return proto::ErrorCode::OVERLOADED;
    case ErrorCode::kUnavailable:
    case ErrorCode::kInternal:
      return proto::ErrorCode::UNAVAILABLE;
  }
  return proto::ErrorCode::UNAVAILABLE;
}

ErrorCode FromProto(proto::ErrorCode c) {
  switch (c) {
    case proto::ErrorCode::OK:
      return ErrorCode::kOk;
    case proto::ErrorCode::VALIDATION:
      return ErrorCode::kValidation;
    case proto::ErrorCode::INVALID_TOKEN:
      return ErrorCode::kInvalidToken;
    case proto::ErrorCode::TASK_DOES_NOT_EXIST:
      return ErrorCode::kTaskDoesNotExist;
    case proto::ErrorCode::TASK_TIMED_OUT:
      return ErrorCode::kTaskTimedOut;
    case proto::ErrorCode::INVALID_OUTPUT:
      return ErrorCode::kInvalidOutput;
    case proto::ErrorCode::INVALID_NAME:
      return ErrorCode::kInvalidName;
    case proto::ErrorCode::INVALID_ARN:
      return ErrorCode::kInvalidArn;
    case proto::ErrorCode::ACTIVITY_DOES_NOT_EXIST:
      return ErrorCode::kActivityDoesNotExist;
    case proto::ErrorCode::ACTIVITY_LIMIT_EXCEEDED:
      return ErrorCode::kActivityLimitExceeded;
    case proto::ErrorCode::ACTIVITY_WORKER_LIMIT_EXCEEDED:
      return ErrorCode::kActivityWorkerLimitExceeded;
    case proto::ErrorCode::OVERLOADED:
      return ErrorCode::kOverloaded;
    case proto::ErrorCode::UNAVAILABLE:
      return ErrorCode::kUnavailable;
  }
  // An enumerant from a newer server: not an outcome this client knows.
  return ErrorCode::kInternal;
}

namespace {

void FillRecorded(const Error& e, proto::RecordedOutcome::Builder out) {
  out.setState(ToProto(e.recorded_state));
  if (e.recorded_state == TaskState::kSucceeded) out.setOutput(AsText(e.recorded_output()));
  if (e.recorded_state == TaskState::kFailed) {
    // The engine keeps the presence of error / cause only through non-emptiness here.
    if (!e.recorded_error().empty()) out.setError(AsText(e.recorded_error()));
    if (!e.recorded_cause().empty()) out.setCause(AsText(e.recorded_cause()));
  }
}

}  // namespace

void FillError(const Error& e, proto::Error::Builder out) {
  TW_ASSERT(!e.ok());
  out.setCode(ToProto(e.code));
  out.setAwsCode(ErrorCodeName(e.code));
  out.setMessage(AsText(e.message));
  switch (e.refusal) {
    case Refusal::kNone:
      out.getReason().setNone();
      break;
    case Refusal::kAlreadyCompleted:
      FillRecorded(e, out.getReason().initAlreadyCompleted());
      break;
    case Refusal::kTimedOut:
      out.getReason().setTimedOut(ToProto(e.timeout_kind));
      break;
    case Refusal::kCancelled:
      out.getReason().setCancelled();
      break;
  }
}

Error ReadError(proto::Error::Reader in) {
  Error e = Error::Make(FromProto(in.getCode()), ToString(in.getMessage()));
  if (e.code == ErrorCode::kOk) e.code = ErrorCode::kInternal;  // an error arm must hold an error
  auto reason = in.getReason();
  switch (reason.which()) {
    case proto::Error::Reason::NONE:
      break;
    case proto::Error::Reason::ALREADY_COMPLETED: {
      auto r = reason.getAlreadyCompleted();
      e.refusal = Refusal::kAlreadyCompleted;
      e.recorded_state = FromProto(r.getState());
      e.recorded = std::make_shared<const RecordedEnd>(
          RecordedEnd{ToString(r.getOutput()), ToString(r.getError()), ToString(r.getCause())});
      break;
    }
    case proto::Error::Reason::TIMED_OUT:
      e.refusal = Refusal::kTimedOut;
      e.recorded_state = TaskState::kTimedOut;
      e.timeout_kind = FromProto(reason.getTimedOut());
      break;
    case proto::Error::Reason::CANCELLED:
      e.refusal = Refusal::kCancelled;
      e.recorded_state = TaskState::kCancelled;
      break;
  }
  return e;
}

bool IsLogisticsError(ErrorCode c) {
  return c == ErrorCode::kOverloaded || c == ErrorCode::kInternal;
}

kj::Exception ToException(const Error& e) {
  TW_ASSERT(IsLogisticsError(e.code) || e.code == ErrorCode::kUnavailable);
  kj::Exception::Type type = kj::Exception::Type::FAILED;
  if (e.code == ErrorCode::kOverloaded) type = kj::Exception::Type::OVERLOADED;
  if (e.code == ErrorCode::kUnavailable) type = kj::Exception::Type::DISCONNECTED;
  return kj::Exception(type, __FILE__, __LINE__,
                       kj::str(ErrorCodeName(e.code), ": ", e.message.c_str()));
}

Error FromException(const kj::Exception& ex) {
  ErrorCode code = ErrorCode::kInternal;
  switch (ex.getType()) {
    case kj::Exception::Type::OVERLOADED:
      code = ErrorCode::kOverloaded;
      break;
    case kj::Exception::Type::DISCONNECTED:
      code = ErrorCode::kUnavailable;
      break;
    case kj::Exception::Type::FAILED:
    case kj::Exception::Type::UNIMPLEMENTED:
      code = ErrorCode::kInternal;
      break;
  }
  Error e = Error::Make(code, std::string(ex.getDescription().cStr()));
  e.transport = true;
  return e;
}

void FillActivity(const ActivityInfo& a, proto::ActivityInfo::Builder out) {
  out.setArn(AsText(a.arn));
  out.setName(AsText(a.name));
  out.setCreationMs(a.creation_ms);
}

ActivityInfo ReadActivity(proto::ActivityInfo::Reader in) {
  ActivityInfo a;
  a.arn = ToString(in.getArn());
  a.name = ToString(in.getName());
  a.creation_ms = in.getCreationMs();
  return a;
}

void FillIssueRequest(const IssueTaskRequest& r, proto::IssueTaskRequest::Builder out) {
  if (!r.activity_arn.empty()) out.setActivityArn(AsText(r.activity_arn));
  out.setInput(AsText(r.input));
  out.setTimeoutSeconds(r.timeout_s);
  out.setHeartbeatSeconds(r.heartbeat_s);
  out.setScheduleToStartSeconds(r.schedule_to_start_s);
  if (!r.correlation.empty()) out.setCorrelation(AsData(r.correlation));
  if (!r.idempotency_key.empty()) out.setIdempotencyKey(AsText(r.idempotency_key));
}

IssueTaskRequest ReadIssueRequest(proto::IssueTaskRequest::Reader in) {
  IssueTaskRequest r;
  r.activity_arn = ToString(in.getActivityArn());
  if (in.hasInput()) r.input = ToString(in.getInput());  // else the engine's default, "{}"
  r.timeout_s = in.getTimeoutSeconds();
  r.heartbeat_s = in.getHeartbeatSeconds();
  r.schedule_to_start_s = in.getScheduleToStartSeconds();
  r.correlation = ToString(in.getCorrelation());
  r.idempotency_key = ToString(in.getIdempotencyKey());
  return r;
}

void FillSuccessRequest(const SendTaskSuccessRequest& r, proto::SuccessRequest::Builder out) {
  out.setTaskToken(AsText(r.token));
  if (r.output.has_value()) out.setOutput(AsText(*r.output));
}

SendTaskSuccessRequest ReadSuccessRequest(proto::SuccessRequest::Reader in) {
  SendTaskSuccessRequest r;
  r.token = ToString(in.getTaskToken());
  if (in.hasOutput()) r.output = ToString(in.getOutput());
  return r;
}

void FillFailureRequest(const SendTaskFailureRequest& r, proto::FailureRequest::Builder out) {
  out.setTaskToken(AsText(r.token));
  if (r.error.has_value()) out.setError(AsText(*r.error));
  if (r.cause.has_value()) out.setCause(AsText(*r.cause));
}

SendTaskFailureRequest ReadFailureRequest(proto::FailureRequest::Reader in) {
  SendTaskFailureRequest r;
  r.token = ToString(in.getTaskToken());
  if (in.hasError()) r.error = ToString(in.getError());
  if (in.hasCause()) r.cause = ToString(in.getCause());
  return r;
}

void FillDescription(const TaskDescription& d, proto::TaskDescription::Builder out) {
  out.setState(ToProto(d.state));
  out.setTimeoutKind(ToProto(d.timeout_kind));
  out.setActivityArn(AsText(d.activity_arn));
  out.setIssuedMs(d.issued_ms);
  out.setStartedMs(d.started_ms);
  out.setEndedMs(d.ended_ms);
  out.setHeartbeatDeadlineMs(d.heartbeat_deadline_ms);
  out.setOverallDeadlineMs(d.overall_deadline_ms);
  out.setScheduleToStartDeadlineMs(d.schedule_to_start_deadline_ms);
  out.setTimeoutSeconds(d.timeout_s);
  out.setHeartbeatSeconds(d.heartbeat_s);
  out.setScheduleToStartSeconds(d.schedule_to_start_s);
  out.setWorker(AsText(d.worker));
  out.setInput(AsText(d.input));
  out.setOutput(AsText(d.output));
  if (d.has_error) out.setError(AsText(d.error));
  if (d.has_cause) out.setCause(AsText(d.cause));
  out.setCorrelation(AsData(d.correlation));
}

TaskDescription ReadDescription(proto::TaskDescription::Reader in) {
  TaskDescription d;
  d.state = FromProto(in.getState());
  d.timeout_kind = FromProto(in.getTimeoutKind());
  d.activity_arn = ToString(in.getActivityArn());
  d.issued_ms = in.getIssuedMs();
  d.started_ms = in.getStartedMs();
  d.ended_ms = in.getEndedMs();
  d.heartbeat_deadline_ms = in.getHeartbeatDeadlineMs();
  d.overall_deadline_ms = in.getOverallDeadlineMs();
  d.schedule_to_start_deadline_ms = in.getScheduleToStartDeadlineMs();
  d.timeout_s = in.getTimeoutSeconds();
  d.heartbeat_s = in.getHeartbeatSeconds();
  d.schedule_to_start_s = in.getScheduleToStartSeconds();
  d.worker = ToString(in.getWorker());
  d.input = ToString(in.getInput());
  d.output = ToString(in.getOutput());
  d.has_error = in.hasError();
  d.has_cause = in.hasCause();
  d.error = ToString(in.getError());
  d.cause = ToString(in.getCause());
  d.correlation = ToString(in.getCorrelation());
  return d;
}

void FillEvent(const OutcomeEvent& e, proto::OutcomeEvent::Builder out) {
  out.setSequence(e.seq);
  out.setTaskToken(AsText(e.token));
  out.setActivityArn(AsText(e.activity_arn));
  out.setState(ToProto(e.state));
  out.setTimeoutKind(ToProto(e.timeout_kind));
  out.setTimeMs(e.time_ms);
  if (e.state == TaskState::kSucceeded) out.setOutput(AsText(e.output));
  if (e.has_error) out.setError(AsText(e.error));
  if (e.has_cause) out.setCause(AsText(e.cause));
  if (!e.correlation.empty()) out.setCorrelation(AsData(e.correlation));
}

OutcomeEvent ReadEvent(proto::OutcomeEvent::Reader in) {
  OutcomeEvent e;
  e.seq = in.getSequence();
  e.token = ToString(in.getTaskToken());
  e.activity_arn = ToString(in.getActivityArn());
  e.state = FromProto(in.getState());
  e.timeout_kind = FromProto(in.getTimeoutKind());
  e.time_ms = in.getTimeMs();
  e.output = ToString(in.getOutput());
  e.has_error = in.hasError();
  e.has_cause = in.hasCause();
  e.error = ToString(in.getError());
  e.cause = ToString(in.getCause());
  e.correlation = ToString(in.getCorrelation());
  return e;
}

size_t EventWireBytes(const OutcomeEvent& e) {
  // Fixed part: the struct, six pointers, NUL terminators and word padding.
  constexpr size_t kFixedBytes = 128;
  return kFixedBytes + e.token.size() + e.activity_arn.size() + e.output.size() + e.error.size() +
         e.cause.size() + e.correlation.size();
}

void FillEngineStats(const EngineStats& s, proto::Stats::Builder out) {
  out.setLiveTasks(s.live_tasks);
  out.setPendingTimers(s.pending_timers);
  out.setWaitingPolls(s.waiting_polls);
  out.setLastEventSequence(s.last_event_seq);
  out.setEventsNotAcked(s.events_not_acked);
  out.setBatches(s.batches);
  out.setCommands(s.commands);
  auto queues = out.initQueuedPerActivity(static_cast<unsigned>(s.per_activity.size()));
  for (unsigned i = 0; i < queues.size(); ++i) {
    queues[i].setActivityArn(AsText(s.per_activity[i].arn));
    queues[i].setQueued(s.per_activity[i].queued);
    queues[i].setStarted(s.per_activity[i].started);
  }
  auto consumers = out.initConsumers(static_cast<unsigned>(s.consumers.size()));
  for (unsigned i = 0; i < consumers.size(); ++i) {
    consumers[i].setName(AsText(s.consumers[i].name));
    consumers[i].setAckedSequence(s.consumers[i].acked_seq);
  }
  auto buckets = out.initCommitLatencyBuckets(static_cast<unsigned>(s.commit_latency_us.size()));
  for (unsigned i = 0; i < buckets.size(); ++i) buckets.set(i, s.commit_latency_us[i]);
  out.setCommitLatencyMaxUs(s.commit_latency_max_us);
  out.setSubmitWakes(s.submit_wakes);
  FillStorageHealth(s.storage, out.initStorage());
  auto timeouts = out.initTimeoutsByKind(static_cast<unsigned>(s.timeouts.size()));
  for (unsigned i = 0; i < timeouts.size(); ++i) timeouts.set(i, s.timeouts[i]);
  auto sizes = out.initBatchCommandBuckets(static_cast<unsigned>(s.batch_commands.size()));
  for (unsigned i = 0; i < sizes.size(); ++i) sizes.set(i, s.batch_commands[i]);
  auto late = out.initTimerLatenessBuckets(static_cast<unsigned>(s.timer_lateness_us.size()));
  for (unsigned i = 0; i < late.size(); ++i) late.set(i, s.timer_lateness_us[i]);
  out.setTimerLatenessMaxUs(s.timer_lateness_max_us);
}

void FillStorageHealth(const StorageHealth& h, proto::StorageHealth::Builder out) {
  out.setOk(h.ok);
  out.setError(AsText(h.error));
  out.setFailedSinceMs(h.failed_since_ms);
  out.setFailures(h.failures);
  out.setRecoveries(h.recoveries);
}

StorageHealth ReadStorageHealth(proto::StorageHealth::Reader in) {
  StorageHealth h;
  h.ok = in.getOk();
  h.error = ToString(in.getError());
  h.failed_since_ms = in.getFailedSinceMs();
  h.failures = in.getFailures();
  h.recoveries = in.getRecoveries();
  return h;
}

EngineStats ReadEngineStats(proto::Stats::Reader in) {
  EngineStats s;
  s.live_tasks = in.getLiveTasks();
  s.pending_timers = in.getPendingTimers();
  s.waiting_polls = in.getWaitingPolls();
  s.last_event_seq = in.getLastEventSequence();
  s.events_not_acked = in.getEventsNotAcked();
  s.batches = in.getBatches();
  s.commands = in.getCommands();
  for (auto q : in.getQueuedPerActivity()) {
    s.per_activity.push_back({ToString(q.getActivityArn()), q.getQueued(), q.getStarted()});
  }
  for (auto c : in.getConsumers()) {
    s.consumers.push_back(ConsumerInfo{ToString(c.getName()), c.getAckedSequence()});
  }
  // A server with another bucket count (none yet) would send a list of another length: keep
  // what lines up, never read past either end.
  auto buckets = in.getCommitLatencyBuckets();
  for (unsigned i = 0; i < buckets.size() && i < s.commit_latency_us.size(); ++i) {
    s.commit_latency_us[i] = buckets[i];
  }
  s.commit_latency_max_us = in.getCommitLatencyMaxUs();
  s.submit_wakes = in.getSubmitWakes();
  if (in.hasStorage()) s.storage = ReadStorageHealth(in.getStorage());  // older servers: none
  auto timeouts = in.getTimeoutsByKind();
  for (unsigned i = 0; i < timeouts.size() && i < s.timeouts.size(); ++i) {
    s.timeouts[i] = timeouts[i];
  }
  auto sizes = in.getBatchCommandBuckets();
  for (unsigned i = 0; i < sizes.size() && i < s.batch_commands.size(); ++i) {
    s.batch_commands[i] = sizes[i];
  }
  auto late = in.getTimerLatenessBuckets();
  for (unsigned i = 0; i < late.size() && i < s.timer_lateness_us.size(); ++i) {
    s.timer_lateness_us[i] = late[i];
  }
  s.timer_lateness_max_us = in.getTimerLatenessMaxUs();
  return s;
}

}  // namespace tw::rpc
