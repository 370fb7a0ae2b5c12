// tokenwheel: the command-line client of tokenwheeld (Cap'n Proto, through rpc/client.h).
//
// Output: JSON on stdout, one object (or one per line for `events watch`). On an error it prints
// {"error": CODE, "message": TEXT} (plus "reason" and its detail for a refused completion) and
// exits 2 for a typed error of the API, 1 for connection or usage trouble.
#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/types.h"
#include "rpc/client.h"

namespace {

using nlohmann::json;
using tw::rpc::Client;

constexpr int kExitTypedError = 2;
constexpr int kExitTrouble = 1;
constexpr int64_t kWatchPollMs = 1000;

void Print(const json& j) {
  // Payloads are the caller's bytes: never let a stray invalid UTF-8 byte abort the output.
  std::cout << j.dump(-1, ' ', false, json::error_handler_t::replace) << "\n" << std::flush;
}

// Epoch milliseconds as AWS-style epoch seconds.
double Seconds(int64_t ms) { return static_cast<double>(ms) / 1000.0; }

int PrintError(const tw::Error& e) {
  json j;
  j["error"] = tw::ErrorCodeName(e.code);
  j["message"] = e.message;
  if (e.refusal != tw::Refusal::kNone) {
    j["reason"] = tw::RefusalName(e.refusal);
    j["recordedState"] = tw::TaskStateName(e.recorded_state);
  }
  if (e.refusal == tw::Refusal::kTimedOut) j["timeoutKind"] = tw::TimeoutKindName(e.timeout_kind);
  if (e.refusal == tw::Refusal::kAlreadyCompleted) {
    if (e.recorded_state == tw::TaskState::kSucceeded) j["recordedOutput"] = e.recorded_output();
    if (!e.recorded_error().empty()) j["recordedError"] = e.recorded_error();
    if (!e.recorded_cause().empty()) j["recordedCause"] = e.recorded_cause();
  }
  Print(j);
  return tw::rpc::IsTransportError(e.code) ? kExitTrouble : kExitTypedError;
}

int UsageError(const std::string& message) {
  Print(json{{"error", "UsageError"}, {"message", message}});
  return kExitTrouble;
}

json ActivityJson(const tw::ActivityInfo& a) {
  return json{{"activityArn", a.arn}, {"name", a.name}, {"creationDate", Seconds(a.creation_ms)}};
}

json CompletionJson(const tw::CompletionReply& r) {
  json j = json::object();
  if (r.duplicate) j["duplicate"] = true;
  return j;
}

void PutTime(json& j, const char* key, int64_t ms) {
  if (ms != 0) j[key] = Seconds(ms);
}

json DescriptionJson(const tw::TaskDescription& d) {
  json j;
  j["state"] = tw::TaskStateName(d.state);
  if (d.timeout_kind != tw::TimeoutKind::kNone)
    j["timeoutReason"] = tw::TimeoutKindName(d.timeout_kind);
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
  if (d.state == tw::TaskState::kSucceeded) j["output"] = d.output;
  if (d.has_error) j["error"] = d.error;
  if (d.has_cause) j["cause"] = d.cause;
  if (!d.correlation.empty()) j["correlation"] = d.correlation;
  return j;
}

json EventJson(const tw::OutcomeEvent& e) {
  json j;
  j["sequence"] = e.seq;
  j["taskToken"] = e.token;
  j["state"] = tw::TaskStateName(e.state);
  if (e.timeout_kind != tw::TimeoutKind::kNone)
    j["timeoutReason"] = tw::TimeoutKindName(e.timeout_kind);
  if (!e.activity_arn.empty()) j["activityArn"] = e.activity_arn;
  j["time"] = Seconds(e.time_ms);
  if (e.state == tw::TaskState::kSucceeded) j["output"] = e.output;
  if (e.has_error) j["error"] = e.error;
  if (e.has_cause) j["cause"] = e.cause;
  if (!e.correlation.empty()) j["correlation"] = e.correlation;
  return j;
}

// Group commit write + sync times since the server started; quantiles are bucket upper ends
// (engine/latency_histogram.h: at most 25% above the true value).
json CommitLatencyJson(const tw::EngineStats& e) {
  return json{{"count", tw::LatencyCount(e.commit_latency_us)},
              {"p50", tw::LatencyQuantileUs(e.commit_latency_us, 0.50)},
              {"p99", tw::LatencyQuantileUs(e.commit_latency_us, 0.99)},
              {"p999", tw::LatencyQuantileUs(e.commit_latency_us, 0.999)},
              {"max", e.commit_latency_max_us}};
}

json StatsJson(const tw::rpc::ServerStats& s) {
  json queued = json::object();
  for (const auto& [arn, n] : s.engine.queued_per_activity) queued[arn] = n;
  json consumers = json::object();
  for (const auto& c : s.engine.consumers) consumers[c.name] = c.acked_seq;
  return json{{"liveTasks", s.engine.live_tasks},
              {"queuedPerActivity", queued},
              {"pendingTimers", s.engine.pending_timers},
              {"waitingPolls", s.engine.waiting_polls},
              {"lastEventSequence", s.engine.last_event_seq},
              {"eventsNotAcked", s.engine.events_not_acked},
              {"consumers", consumers},
              {"batches", s.engine.batches},
              {"commands", s.engine.commands},
              {"submitWakes", s.engine.submit_wakes},
              {"connections", s.connections},
              {"subscriptions", s.subscriptions},
              {"replyHandoffs", s.reply_handoffs},
              {"repliesDelivered", s.replies_delivered},
              {"commitLatencyUs", CommitLatencyJson(s.engine)}};
}

// Prints the value as JSON (through `to_json`) or the error; returns the exit code.
template <typename T, typename ToJson>
int Answer(const tw::Result<T>& r, ToJson&& to_json) {
  if (!r.ok()) return PrintError(r.error);
  Print(to_json(r.value));
  return 0;
}

json EmptyJson(const tw::Empty&) { return json::object(); }

// Everything the command line can say, parsed by CLI11 into one place.
struct Args {
  std::string server;
  std::string name_or_arn;  // activity create NAME / delete|describe ARN; task poll ARN
  std::string token;
  uint32_t max_results = 0;
  std::string next_token;
  bool callback = false;
  std::string activity;
  std::string input = "{}";
  uint32_t timeout_s = 0;
  uint32_t heartbeat_s = 0;
  uint32_t schedule_to_start_s = 0;
  std::string key;
  std::string correlation;
  std::string worker;
  uint32_t wait_s = 0;
  std::optional<std::string> output;
  std::optional<std::string> error;
  std::optional<std::string> cause;
  std::string consumer;
  uint64_t from_seq = 0;
  uint64_t count = 0;
  bool no_ack = false;
  std::string payload = "ping";
};

int WatchEvents(Client& client, const Args& a) {
  auto sub = client.Subscribe(a.consumer, a.from_seq);
  if (!sub.ok()) return PrintError(sub.error);
  uint64_t printed = 0;
  while (a.count == 0 || printed < a.count) {
    auto events = sub.value->Next(kWatchPollMs);
    if (!events.ok()) return PrintError(events.error);
    uint64_t last = 0;
    for (const tw::OutcomeEvent& e : events.value) {
      if (a.count != 0 && printed == a.count) break;
      Print(EventJson(e));
      last = e.seq;
      ++printed;
    }
    // Acknowledge what was printed (and flushed): at-least-once toward whoever reads stdout.
    if (last != 0 && !a.no_ack) {
      auto acked = client.AckEvents(a.consumer, last);
      if (!acked.ok()) return PrintError(acked.error);
    }
  }
  return 0;
}

int IssueTask(Client& client, const Args& a) {
  if (a.callback == !a.activity.empty())
    return UsageError("give exactly one of --callback, --activity ARN");
  tw::IssueTaskRequest req;
  req.activity_arn = a.activity;
  req.input = a.input;
  req.timeout_s = a.timeout_s;
  req.heartbeat_s = a.heartbeat_s;
  req.schedule_to_start_s = a.schedule_to_start_s;
  req.idempotency_key = a.key;
  req.correlation = a.correlation;
  return Answer(client.IssueTask(req), [](const tw::IssueTaskReply& r) {
    json j{{"taskToken", r.token}};
    if (r.existing) j["existing"] = true;
    return j;
  });
}

int PollTask(Client& client, const Args& a) {
  tw::GetActivityTaskRequest req{a.name_or_arn, a.worker};
  return Answer(client.GetActivityTask(req, a.wait_s), [](const tw::GetActivityTaskReply& r) {
    if (r.token.empty()) return json::object();
    return json{{"taskToken", r.token}, {"input", r.input}};
  });
}

// Runs the one subcommand that was chosen.
int Dispatch(CLI::App& app, Client& client, const Args& a) {
  auto chosen = [&](const char* group, const char* cmd) {
    CLI::App* g = app.get_subcommand(group);
    return g->parsed() && g->get_subcommand(cmd)->parsed();
  };
  if (app.get_subcommand("ping")->parsed()) {
    return Answer(client.Ping(a.payload), [](const std::string& s) {
      return json{{"payload", s}};
    });
  }
  if (app.get_subcommand("stats")->parsed()) return Answer(client.Stats(), StatsJson);
  if (chosen("activity", "create"))
    return Answer(client.CreateActivity(a.name_or_arn), ActivityJson);
  if (chosen("activity", "delete")) return Answer(client.DeleteActivity(a.name_or_arn), EmptyJson);
  if (chosen("activity", "describe")) {
    return Answer(client.DescribeActivity(a.name_or_arn), ActivityJson);
  }
  if (chosen("activity", "list")) {
    return Answer(client.ListActivities(a.max_results, a.next_token),
                  [](const tw::ListActivitiesReply& r) {
                    json list = json::array();
                    for (const auto& act : r.activities) list.push_back(ActivityJson(act));
                    json j{{"activities", list}};
                    if (!r.next_token.empty()) j["nextToken"] = r.next_token;
                    return j;
                  });
  }
  if (chosen("task", "issue")) return IssueTask(client, a);
  if (chosen("task", "poll")) return PollTask(client, a);
  if (chosen("task", "succeed")) {
    return Answer(client.SendTaskSuccess(tw::SendTaskSuccessRequest{a.token, a.output}),
                  CompletionJson);
  }
  if (chosen("task", "fail")) {
    return Answer(client.SendTaskFailure(tw::SendTaskFailureRequest{a.token, a.error, a.cause}),
                  CompletionJson);
  }
  if (chosen("task", "heartbeat")) return Answer(client.SendTaskHeartbeat(a.token), EmptyJson);
  if (chosen("task", "cancel")) return Answer(client.CancelTask(a.token), CompletionJson);
  if (chosen("task", "describe")) return Answer(client.DescribeTask(a.token), DescriptionJson);
  if (chosen("events", "watch")) return WatchEvents(client, a);
  if (chosen("events", "ack")) {
    return Answer(client.AckEvents(a.consumer, a.from_seq), EmptyJson);
  }
  if (chosen("events", "delete-consumer")) {
    return Answer(client.DeleteConsumer(a.consumer), EmptyJson);
  }
  return UsageError("no command; see --help");
}

void DefineCommands(CLI::App& app, Args& a) {
  const char* env = std::getenv("TOKENWHEEL_SERVER");
  a.server = env != nullptr && *env != '\0' ? env : "127.0.0.1:7411";
  app.add_option("--server", a.server, "HOST:PORT of tokenwheeld (env TOKENWHEEL_SERVER)")
      ->capture_default_str();
  app.require_subcommand(1);

  CLI::App* ping = app.add_subcommand("ping", "Round trip to the server, no engine work");
  ping->add_option("payload", a.payload, "Bytes to echo");
  app.add_subcommand("stats",
                     "Live tasks, queued per activity, pending timers, events not acked, ...");

  CLI::App* act = app.add_subcommand("activity", "Activities: named queues of work");
  act->require_subcommand(1);
  act->add_subcommand("create", "Create (idempotently by name) -> activityArn, creationDate")
      ->add_option("NAME", a.name_or_arn, "Activity name")
      ->required();
  act->add_subcommand("delete", "Delete; its queued tasks end FAILED")
      ->add_option("ARN", a.name_or_arn, "Activity ARN")
      ->required();
  act->add_subcommand("describe", "-> activityArn, name, creationDate")
      ->add_option("ARN", a.name_or_arn, "Activity ARN")
      ->required();
  CLI::App* list = act->add_subcommand("list", "-> activities, nextToken");
  list->add_option("--max-results", a.max_results, "0..1000, 0 means 100");
  list->add_option("--next-token", a.next_token, "From the previous page");

  CLI::App* task = app.add_subcommand("task", "Tasks and their tokens");
  task->require_subcommand(1);
  CLI::App* issue = task->add_subcommand("issue", "Issue a task -> taskToken");
  issue->add_flag("--callback", a.callback, "A callback task: born started, clocks run now");
  issue->add_option("--activity", a.activity, "Queue an activity task on ARN");
  issue->add_option("--input", a.input, "Task input, JSON")->capture_default_str();
  issue->add_option("--timeout", a.timeout_s, "Overall timeout, seconds (0 = none)");
  issue->add_option("--heartbeat", a.heartbeat_s, "Heartbeat timeout, seconds (0 = none)");
  issue->add_option("--schedule-to-start", a.schedule_to_start_s,
                    "Max seconds queued before a worker takes it (0 = none)");
  issue->add_option("--key", a.key, "Idempotency key: same key, same token");
  issue->add_option("--correlation", a.correlation, "Opaque bytes returned in the outcome event");
  CLI::App* poll = task->add_subcommand("poll", "Long-poll an activity -> taskToken, input, or {}");
  poll->add_option("ARN", a.name_or_arn, "Activity ARN")->required();
  poll->add_option("--worker", a.worker, "Worker name");
  poll->add_option("--wait", a.wait_s, "Wait at most S seconds (0 = the server's maximum)");
  CLI::App* succeed = task->add_subcommand("succeed", "Report success");
  succeed->add_option("TOKEN", a.token, "Task token")->required();
  succeed->add_option("--output", a.output, "Output, JSON")->required();
  CLI::App* fail = task->add_subcommand("fail", "Report failure");
  fail->add_option("TOKEN", a.token, "Task token")->required();
  fail->add_option("--error", a.error, "Error name (<= 256 chars)");
  fail->add_option("--cause", a.cause, "Cause (<= 32,768 chars)");
  task->add_subcommand("heartbeat", "Reset the heartbeat clock")
      ->add_option("TOKEN", a.token, "Task token")
      ->required();
  task->add_subcommand("cancel", "Cancel a live task")
      ->add_option("TOKEN", a.token, "Task token")
      ->required();
  task->add_subcommand("describe", "State, timeout reason, times, output / error / cause, worker")
      ->add_option("TOKEN", a.token, "Task token")
      ->required();

  CLI::App* events = app.add_subcommand("events", "The outcome stream");
  events->require_subcommand(1);
  CLI::App* watch = events->add_subcommand(
      "watch", "One JSON line per outcome event, acknowledging as it prints");
  watch->add_option("--consumer", a.consumer, "Consumer name (its cursor is durable)")->required();
  watch->add_option("--from", a.from_seq, "First sequence (0 = after the consumer's cursor)");
  watch->add_option("--count", a.count, "Exit after this many events (0 = run until killed)");
  watch->add_flag("--no-ack", a.no_ack, "Do not acknowledge");
  CLI::App* ack = events->add_subcommand("ack", "Acknowledge every event <= SEQ");
  ack->add_option("--consumer", a.consumer, "Consumer name")->required();
  ack->add_option("SEQ", a.from_seq, "Sequence")->required();
  events->add_subcommand("delete-consumer", "Forget a consumer")
      ->add_option("--consumer", a.consumer, "Consumer name")
      ->required();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "tokenwheel: command-line client of tokenwheeld. Prints JSON on stdout; errors as "
      "{\"error\": CODE, \"message\": TEXT}; exit 2 for a typed error, 1 for "
      "connection or usage trouble."};
  Args a;
  DefineCommands(app, a);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return UsageError(e.what());
  }
  auto connected = Client::Connect(a.server);
  if (!connected.ok()) return PrintError(connected.error);
  return Dispatch(app, *connected.value, a);
}
