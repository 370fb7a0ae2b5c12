#include "rpc/json_forms.h"

#include "engine/latency_histogram.h"

namespace tw::rpc {

using nlohmann::json;

namespace {

void PutTime(json& j, const char* key, int64_t ms) {
  if (ms != 0) j[key] = EpochSeconds(ms);
}

// Durations since the server started (group commit write + sync times, timer lateness);
// quantiles are bucket upper ends (engine/latency_histogram.h: at most 25% above the true value).
json HistogramJson(const LatencyBuckets::Counts& counts, uint64_t max_us) {
  return json{{"count", LatencyCount(counts)},
              {"p50", LatencyQuantileUs(counts, 0.50)},
              {"p99", LatencyQuantileUs(counts, 0.99)},
              {"p999", LatencyQuantileUs(counts, 0.999)},
              {"max", max_us}};
}

}  // namespace

double EpochSeconds(int64_t ms) { return static_cast<double>(ms) / 1000.0; }

json ActivityJson(const ActivityInfo& a) {
  return json{
      {"activityArn", a.arn}, {"name", a.name}, {"creationDate", EpochSeconds(a.creation_ms)}};
}

json CompletionJson(const CompletionReply& r) {
  json j = json::object();
  if (r.duplicate) j["duplicate"] = true;
  return j;
}

json DescriptionJson(const TaskDescription& d) {
  json j;
  j["state"] = TaskStateName(d.state);
  if (d.timeout_kind != TimeoutKind::kNone) j["timeoutReason"] = TimeoutKindName(d.timeout_kind);
  if (!d.activity_arn.empty()) j["activityArn"] = d.activity_arn;
  j["kind"] = d.activity_arn.empty() ? "callback" : "activity";
  PutTime(j, "issuedDate", d.issued_ms);
  PutTime(j, "startedDate", d.started_ms);
  PutTime(j, "endedDate", d.ended_ms);
  PutTime(j, "heartbeatDeadline", d.heartbeat_deadline_ms);
  PutTime(j, "timeoutDeadline", d.overall_deadline_ms);
  PutTime(j, "scheduleToStartDeadline", d.schedule_to_start_deadline_ms);
  if (d.timeout_s != 0) j["timeoutSeconds"] = d.timeout_s;
  if (d.heartbeat_s != 0) j["heartbeatSeconds"] = d.heartbeat_s;
  if (d.schedule_to_start_s != 0) j["scheduleToStartSeconds"] = d.schedule_to_start_s;
  if (!d.worker.empty()) j["worker"] = d.worker;
  j["input"] = d.input;
  if (d.state == TaskState::kSucceeded) j["output"] = d.output;
  if (d.has_error) j["error"] = d.error;
  if (d.has_cause) j["cause"] = d.cause;
  if (!d.correlation.empty()) j["correlation"] = d.correlation;
  return j;
}

json EventJson(const OutcomeEvent& e) {
  json j;
  j["sequence"] = e.seq;
  j["taskToken"] = e.token;
  j["state"] = TaskStateName(e.state);
  if (e.timeout_kind != TimeoutKind::kNone) j["timeoutReason"] = TimeoutKindName(e.timeout_kind);
  if (!e.activity_arn.empty()) j["activityArn"] = e.activity_arn;
  j["time"] = EpochSeconds(e.time_ms);
  if (e.state == TaskState::kSucceeded) j["output"] = e.output;
  if (e.has_error) j["error"] = e.error;
  if (e.has_cause) j["cause"] = e.cause;
  if (!e.correlation.empty()) j["correlation"] = e.correlation;
  return j;
}

json StorageJson(const StorageHealth& h) {
  json j{{"ok", h.ok}, {"failures", h.failures}, {"recoveries", h.recoveries}};
  if (!h.ok) {
    j["error"] = h.error;
    j["failedSince"] = EpochSeconds(h.failed_since_ms);
  }
  return j;
}

json EngineStatsJson(const EngineStats& s) {
  json queued = json::object();
  for (const ActivityCounts& a : s.per_activity) queued[a.arn] = a.queued;
  json consumers = json::object();
  for (const auto& c : s.consumers) consumers[c.name] = c.acked_seq;
  return json{{"liveTasks", s.live_tasks},
              {"queuedPerActivity", queued},
              {"pendingTimers", s.pending_timers},
              {"waitingPolls", s.waiting_polls},
              {"lastEventSequence", s.last_event_seq},
              {"eventsNotAcked", s.events_not_acked},
              {"consumers", consumers},
              {"batches", s.batches},
              {"commands", s.commands},
              {"submitWakes", s.submit_wakes},
              {"commitLatencyUs", HistogramJson(s.commit_latency_us, s.commit_latency_max_us)},
              {"timerLatenessUs", HistogramJson(s.timer_lateness_us, s.timer_lateness_max_us)},
              {"storage", StorageJson(s.storage)}};
}

json ErrorJson(const Error& e) {
  json j;
  j["error"] = ErrorCodeName(e.code);
  j["message"] = e.message;
  if (e.refusal != Refusal::kNone) {
    j["reason"] = RefusalName(e.refusal);
    j["recordedState"] = TaskStateName(e.recorded_state);
  }
  if (e.refusal == Refusal::kTimedOut) j["timeoutKind"] = TimeoutKindName(e.timeout_kind);
  if (e.refusal == Refusal::kAlreadyCompleted) {
    if (e.recorded_state == TaskState::kSucceeded) j["recordedOutput"] = e.recorded_output();
    if (!e.recorded_error().empty()) j["recordedError"] = e.recorded_error();
    if (!e.recorded_cause().empty()) j["recordedCause"] = e.recorded_cause();
  }
  return j;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace tw::rpc
