// tokenwheel as a system under test: tokenwheeld started by the crash test's launcher
// (tools/crashtest/server_process.h), driven through Cap'n Proto (rpc/client.h) or the AWS
// gateway (tools/crashtest/gateway_client.h). Timeouts are seen on the outcome stream.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "rpc/client.h"
#include "tools/bench/served_system.h"
#include "tools/bench/system.h"
#include "tools/crashtest/gateway_client.h"
#include "tools/crashtest/server_process.h"

namespace tw::bench {
namespace {

constexpr const char* kActivityName = "bench";
constexpr const char* kConsumerName = "bench-timeouts";
// Acknowledge the outcome stream every this many events: the server keeps unacked events.
constexpr uint64_t kAckEvery = 4096;
constexpr int64_t kNextWaitMs = 200;

template <typename T>
CallResult FromResult(const Result<T>& r) {
  if (r.ok()) return CallResult::Ok();
  if (!r.error.transport &&
      (r.error.code == ErrorCode::kTaskTimedOut || r.error.code == ErrorCode::kTaskDoesNotExist)) {
    return CallResult::Refused();
  }
  return CallResult::Failed(std::string(ErrorCodeName(r.error.code)) + ": " + r.error.message);
}

IssueTaskRequest ToRequest(const IssueSpec& spec, const std::string& arn) {
  IssueTaskRequest req;
  if (spec.activity) req.activity_arn = arn;
  req.input = "{\"bench\":1}";
  req.timeout_s = spec.timeout_s;
  req.heartbeat_s = spec.heartbeat_s;
  // No correlation: a task with one costs its completion or timeout a store read (the issue
  // record), which the peers' rows do not pay.
  return req;
}

class CapnpClient final : public Client {
 public:
  CapnpClient(std::unique_ptr<rpc::Client> c, std::string arn) : c_(std::move(c)), arn_(arn) {}

  CallResult Issue(const IssueSpec& spec, std::vector<std::string>* ids) override {
    if (spec.count == 1) {
      auto r = c_->IssueTask(ToRequest(spec, arn_));
      if (r.ok()) ids->push_back(std::move(r.value.token));
      return FromResult(r);
    }
    std::vector<IssueTaskRequest> reqs(static_cast<size_t>(spec.count), ToRequest(spec, arn_));
    auto r = c_->IssueTasks(reqs);
    if (!r.ok()) return FromResult(r);
    for (auto& item : r.value) {
      if (!item.ok()) return FromResult(item);
      ids->push_back(std::move(item.value.token));
    }
    return CallResult::Ok();
  }

  CallResult Succeed(const std::vector<std::string>& ids, int* applied) override {
    *applied = 0;
    if (ids.size() == 1) {
      auto r = c_->SendTaskSuccess({ids[0], "{\"ok\":1}"});
      if (r.ok() && !r.value.duplicate) *applied = 1;
      const CallResult cr = FromResult(r);
      return cr.status == CallStatus::kRefused ? CallResult::Ok() : cr;
    }
    std::vector<SendTaskSuccessRequest> reqs;
    reqs.reserve(ids.size());
    for (const std::string& id : ids) reqs.push_back({id, "{\"ok\":1}"});
    auto r = c_->SendTaskSuccesses(reqs);
    if (!r.ok()) return FromResult(r);
    for (auto& item : r.value) {
      const CallResult cr = FromResult(item);
      if (cr.status == CallStatus::kFailed) return cr;
      if (item.ok() && !item.value.duplicate) ++*applied;
    }
    return CallResult::Ok();
  }

  CallResult Poll(std::string* id) override {
    auto r = c_->GetActivityTask({arn_, "bench"}, 1);
    if (r.ok()) *id = r.value.token;
    return FromResult(r);
  }

  CallResult Heartbeat(const std::string& id) override {
    return FromResult(c_->SendTaskHeartbeat(id));
  }

 private:
  std::unique_ptr<rpc::Client> c_;
  std::string arn_;
};

std::string StringMember(const nlohmann::json& body, const char* name) {
  if (!body.is_object()) return "";
  auto it = body.find(name);
  return it != body.end() && it->is_string() ? it->get<std::string>() : "";
}

CallResult FromReply(const std::optional<crashtest::GatewayReply>& r) {
  if (!r) return CallResult::Failed("gateway: no answer");
  if (r->ok()) return CallResult::Ok();
  const std::string code = r->error_code();
  if (code == "TaskTimedOut" || code == "TaskDoesNotExist") return CallResult::Refused();
  return CallResult::Failed("gateway: " + code + ": " + StringMember(r->body, "message"));
}

nlohmann::json IssueBody(const IssueSpec& spec, const std::string& arn) {
  nlohmann::json body = {{"input", "{\"bench\":1}"},
                         {"timeoutSeconds", spec.timeout_s},
                         {"heartbeatSeconds", spec.heartbeat_s}};
  if (spec.activity) body["activityArn"] = arn;
  return body;
}

class GatewayClientAdapter final : public Client {
 public:
  GatewayClientAdapter(const std::string& address, std::string arn) : c_(address), arn_(arn) {}

  CallResult Issue(const IssueSpec& spec, std::vector<std::string>* ids) override {
    if (spec.count == 1) {
      const auto r = c_.Call("TokenWheel.IssueTask", IssueBody(spec, arn_), kCallTimeoutMs);
      const CallResult cr = FromReply(r);
      if (cr.ok()) ids->push_back(StringMember(r->body, "taskToken"));
      return cr;
    }
    nlohmann::json tasks = nlohmann::json::array();
    for (int i = 0; i < spec.count; ++i) tasks.push_back(IssueBody(spec, arn_));
    const auto r = c_.Call("TokenWheel.IssueTasks", {{"tasks", tasks}}, kCallTimeoutMs);
    const CallResult cr = FromReply(r);
    if (!cr.ok()) return cr;
    const auto& results = r->body["results"];
    if (!results.is_array()) return CallResult::Failed("gateway: IssueTasks: no results");
    for (const auto& item : results) {
      const std::string token = StringMember(item, "taskToken");
      if (token.empty()) return CallResult::Failed("gateway: IssueTasks item: " + item.dump());
      ids->push_back(token);
    }
    return CallResult::Ok();
  }

  // The gateway has no batch completion: a batch is one call per item on one connection.
  CallResult Succeed(const std::vector<std::string>& ids, int* applied) override {
    *applied = 0;
    for (const std::string& id : ids) {
      const CallResult cr =
          FromReply(c_.Call("AWSStepFunctions.SendTaskSuccess",
                            {{"taskToken", id}, {"output", "{\"ok\":1}"}}, kCallTimeoutMs));
      if (cr.status == CallStatus::kFailed) return cr;
      if (cr.ok()) ++*applied;
    }
    return CallResult::Ok();
  }

  CallResult Poll(std::string* id) override {
    const auto r = c_.Call("AWSStepFunctions.GetActivityTask",
                           {{"activityArn", arn_}, {"workerName", "bench"}}, kCallTimeoutMs);
    const CallResult cr = FromReply(r);
    if (cr.ok()) *id = StringMember(r->body, "taskToken");
    return cr;
  }

  CallResult Heartbeat(const std::string& id) override {
    return FromReply(
        c_.Call("AWSStepFunctions.SendTaskHeartbeat", {{"taskToken", id}}, kCallTimeoutMs));
  }

 private:
  crashtest::GatewayClient c_;
  std::string arn_;
};

// The outcome stream as one consumer, on its own connection; TIMED_OUT events counted.
class StreamWatch final : public TimeoutWatch {
 public:
  bool Begin(const std::string& address, std::string* error) {
    auto c = rpc::Client::Connect(address, kStartTimeoutMs);
    if (!c.ok()) {
      *error = "connect: " + c.error.message;
      return false;
    }
    client_ = std::move(c.value);
    // A consumer starts after the last event so far: drop an earlier run's cursor first.
    (void)client_->DeleteConsumer(kConsumerName);
    auto s = client_->Subscribe(kConsumerName, 0);
    if (!s.ok()) {
      *error = "subscribe: " + s.error.message;
      return false;
    }
    sub_ = std::move(s.value);
    return true;
  }

  bool Collect(int64_t count, int64_t until_steady_ms, std::vector<TimeoutSeen>* seen,
               std::string* error) override {
    while (seen_ < count && SteadyMs() < until_steady_ms) {
      auto r = sub_->Next(kNextWaitMs);
      if (!r.ok()) {
        *error = "outcome stream: " + r.error.message;
        return false;
      }
      const int64_t now = WallMs();
      for (const OutcomeEvent& e : r.value) {
        last_seq_ = e.seq;
        if (e.state != TaskState::kTimedOut) continue;
        ++seen_;
        if (seen->size() >= kLatenessSamplesMax) continue;
        // The deadline is not in the event: one in `stride` keeps its token, to read its own
        // deadline back (ExactDeadlines); the others count, with their deadline unknown (0).
        const int64_t stride =
            std::max<int64_t>(1, count / static_cast<int64_t>(kExactDeadlinesMax));
        TimeoutSeen s{0, now, false, ""};
        if (seen_ % stride == 0 && sampled_ < kExactDeadlinesMax) {
          s.token = e.token;
          ++sampled_;
        }
        seen->push_back(std::move(s));
      }
      if (last_seq_ >= acked_seq_ + kAckEvery) {
        auto a = client_->AckEvents(kConsumerName, last_seq_);
        if (!a.ok()) {
          *error = "ack: " + a.error.message;
          return false;
        }
        acked_seq_ = last_seq_;
      }
    }
    return true;
  }

  void ExactDeadlines(std::vector<TimeoutSeen>* seen) override {
    for (TimeoutSeen& s : *seen) {
      if (s.token.empty()) continue;
      auto d = client_->DescribeTask(s.token);
      if (!d.ok()) continue;
      // The clock that fired: a storm task's heartbeat clock runs from its issue.
      const TaskDescription& t = d.value;
      int64_t deadline = t.heartbeat_deadline_ms;
      if (deadline == 0 && t.heartbeat_s != 0)
        deadline = t.issued_ms + int64_t{t.heartbeat_s} * 1000;
      if (t.timeout_kind == TimeoutKind::kOverall) deadline = t.overall_deadline_ms;
      if (deadline == 0) continue;
      s.deadline_ms = deadline;
      s.exact = true;
    }
  }

 private:
  std::unique_ptr<rpc::Client> client_;
  std::unique_ptr<rpc::Subscription> sub_;
  size_t sampled_ = 0;
  int64_t seen_ = 0;
  uint64_t last_seq_ = 0;
  uint64_t acked_seq_ = 0;
};

class TokenwheelSystem final : public ServedSystem<crashtest::ServerProcess> {
 public:
  TokenwheelSystem(const SystemOptions& o, bool gateway) : ServedSystem(o), gateway_(gateway) {}
  ~TokenwheelSystem() override { Stop(); }

  std::string name() const override { return gateway_ ? "tokenwheel-gateway" : "tokenwheel-capnp"; }
  std::string durability() const override {
    return "RocksDB WAL fsync (fdatasync) before every reply (group commit), "
           "tokenwheeld defaults (--commit adaptive)";
  }

  bool Start(std::string* error) override {
    if (!MakeDir("tokenwheel", error)) return false;
    server_ = std::make_unique<crashtest::ServerProcess>(
        o_.tokenwheeld, dir_ + "/data", dir_ + "/tokenwheeld.log", o_.tokenwheeld_args);
    if (!server_->Start(kStartTimeoutMs, error)) return false;
    return CreateActivity(error);
  }

  bool KillAndRestart(int64_t* ready_ms, std::string* error) override {
    const int64_t t0 = SteadyMs();
    server_->Kill9();
    if (!server_->Start(kStartTimeoutMs, error)) return false;
    auto c = rpc::Client::Connect(server_->rpc_address(), kStartTimeoutMs);
    if (!c.ok()) {
      *error = "connect after restart: " + c.error.message;
      return false;
    }
    auto p = c.value->Ping("ready");
    *ready_ms = SteadyMs() - t0;
    if (!p.ok()) *error = "ping after restart: " + p.error.message;
    return p.ok();
  }

  std::unique_ptr<Client> Connect(std::string* error) override {
    if (gateway_) return std::make_unique<GatewayClientAdapter>(server_->aws_address(), arn_);
    auto c = rpc::Client::Connect(server_->rpc_address(), kStartTimeoutMs);
    if (!c.ok()) {
      *error = "connect: " + c.error.message;
      return nullptr;
    }
    return std::make_unique<CapnpClient>(std::move(c.value), arn_);
  }

  std::unique_ptr<TimeoutWatch> WatchTimeouts(std::string* error) override {
    auto w = std::make_unique<StreamWatch>();
    if (!w->Begin(server_->rpc_address(), error)) return nullptr;
    return w;
  }

  int64_t LiveTasks() override {
    auto c = rpc::Client::Connect(server_->rpc_address(), kStartTimeoutMs);
    if (!c.ok()) return -1;
    auto s = c.value->Stats();
    return s.ok() ? static_cast<int64_t>(s.value.engine.live_tasks) : -1;
  }

  nlohmann::json ServerTimerLateness() override {
    auto c = rpc::Client::Connect(server_->rpc_address(), kStartTimeoutMs);
    if (!c.ok()) return nullptr;
    auto s = c.value->Stats();
    if (!s.ok()) return nullptr;
    const LatencyBuckets::Counts& h = s.value.engine.timer_lateness_us;
    auto ms = [](uint64_t us) { return static_cast<double>(us) / 1000.0; };
    // Quantiles are bucket upper ends: at most 25% above the true value.
    return {{"count", LatencyCount(h)},
            {"p50_ms", ms(LatencyQuantileUs(h, 0.5))},
            {"p99_ms", ms(LatencyQuantileUs(h, 0.99))},
            {"p99_9_ms", ms(LatencyQuantileUs(h, 0.999))},
            {"max_ms", ms(s.value.engine.timer_lateness_max_us)}};
  }

 private:
  bool CreateActivity(std::string* error) {
    auto c = rpc::Client::Connect(server_->rpc_address(), kStartTimeoutMs);
    if (!c.ok()) {
      *error = "connect: " + c.error.message;
      return false;
    }
    auto a = c.value->CreateActivity(kActivityName);
    if (!a.ok()) {
      *error = "create activity: " + a.error.message;
      return false;
    }
    arn_ = a.value.arn;
    return true;
  }

  bool gateway_;
  std::string arn_;
};

}  // namespace

std::unique_ptr<System> MakeTokenwheel(const SystemOptions& o, bool gateway) {
  return std::make_unique<TokenwheelSystem>(o, gateway);
}

}  // namespace tw::bench
