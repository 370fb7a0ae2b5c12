#include "tools/crashtest/fronts.h"

#include <nlohmann/json.hpp>

#include "rpc/client.h"
#include "tools/crashtest/gateway_client.h"

namespace tw::crashtest {

namespace {

// Long enough for a long poll (tokenwheeld runs with --max-poll-seconds 1) on a loaded machine.
constexpr int64_t kCallTimeoutMs = 15'000;

// ---- Cap'n Proto ----

template <typename T>
CallAnswer FromResult(const Result<T>& r) {
  CallAnswer a;
  if (r.ok()) {
    a.answer = Answer::kApplied;
    return a;
  }
  const Error& e = r.error;
  a.detail = std::string(ErrorCodeName(e.code)) + ": " + e.message;
  // No answer, or an answer that says nothing about whether it happened (a storage failure may
  // leave a torn write that recovery keeps).
  if (e.transport || e.code == ErrorCode::kUnavailable || e.code == ErrorCode::kOverloaded ||
      e.code == ErrorCode::kInternal) {
    a.answer = Answer::kUnknown;
  } else if (e.code == ErrorCode::kTaskTimedOut) {
    a.answer = Answer::kRefused;
    if (e.refusal != Refusal::kNone) a.recorded_state = e.recorded_state;
  } else {
    a.answer = Answer::kRejected;
  }
  return a;
}

CallAnswer FromCompletion(const Result<CompletionReply>& r) {
  CallAnswer a = FromResult(r);
  if (r.ok() && r.value.duplicate) a.answer = Answer::kDuplicate;
  return a;
}

class CapnpFront final : public Front {
 public:
  explicit CapnpFront(std::unique_ptr<rpc::Client> c) : c_(std::move(c)) {}
  const char* name() const override { return "capnp"; }

  CallAnswer Issue(const IssueTaskRequest& req) override {
    auto r = c_->IssueTask(req);
    CallAnswer a = FromResult(r);
    a.token = r.value.token;
    a.existing = r.value.existing;
    return a;
  }
  CallAnswer Poll(const std::string& arn, const std::string& worker) override {
    auto r = c_->GetActivityTask({arn, worker}, 1);
    CallAnswer a = FromResult(r);
    a.token = r.value.token;
    a.input = r.value.input;
    return a;
  }
  CallAnswer Heartbeat(const std::string& token) override {
    return FromResult(c_->SendTaskHeartbeat(token));
  }
  CallAnswer Complete(CompletionKind kind, const std::string& token,
                      const std::string& payload) override {
    switch (kind) {
      case CompletionKind::kSuccess:
        return FromCompletion(c_->SendTaskSuccess({token, payload}));
      case CompletionKind::kFailure:
        return FromCompletion(c_->SendTaskFailure({token, payload, "crashtest"}));
      case CompletionKind::kCancel:
        return FromCompletion(c_->CancelTask(token));
    }
    return {};
  }
  CallAnswer CreateActivity(const std::string& name) override {
    auto r = c_->CreateActivity(name);
    CallAnswer a = FromResult(r);
    a.arn = r.value.arn;
    return a;
  }
  CallAnswer DeleteActivity(const std::string& arn) override {
    return FromResult(c_->DeleteActivity(arn));
  }

 private:
  std::unique_ptr<rpc::Client> c_;
};

// ---- the AWS gateway ----

// A string member of a reply, or "" (a reply of another shape is not an exception here).
std::string StringMember(const nlohmann::json& body, const char* name) {
  if (!body.is_object()) return "";
  auto it = body.find(name);
  return it != body.end() && it->is_string() ? it->get<std::string>() : "";
}

bool TrueMember(const nlohmann::json& body, const char* name) {
  if (!body.is_object()) return false;
  auto it = body.find(name);
  return it != body.end() && it->is_boolean() && it->get<bool>();
}

CallAnswer FromReply(const std::optional<GatewayReply>& r) {
  CallAnswer a;
  if (!r) return a;  // kUnknown
  if (r->ok()) {
    a.answer = TrueMember(r->body, "duplicate") ? Answer::kDuplicate : Answer::kApplied;
    return a;
  }
  const std::string code = r->error_code();
  a.detail = code + ": " + StringMember(r->body, "message");
  if (code == "TaskTimedOut") {
    a.answer = Answer::kRefused;
    a.recorded_state = StateNamed(StringMember(r->body, "recordedState"));
  } else if (r->status >= 500 || code == "ThrottlingException" || code == "ServiceUnavailable") {
    a.answer = Answer::kUnknown;
  } else {
    a.answer = Answer::kRejected;
  }
  return a;
}

std::pair<std::string, nlohmann::json> CompletionCall(CompletionKind kind, const std::string& token,
                                                      const std::string& payload) {
  switch (kind) {
    case CompletionKind::kSuccess:
      return {"AWSStepFunctions.SendTaskSuccess", {{"taskToken", token}, {"output", payload}}};
    case CompletionKind::kFailure:
      return {"AWSStepFunctions.SendTaskFailure",
              {{"taskToken", token}, {"error", payload}, {"cause", "crashtest"}}};
    case CompletionKind::kCancel:
      break;
  }
  return {"TokenWheel.CancelTask", {{"taskToken", token}}};
}

class GatewayFrontImpl final : public GatewayFront {
 public:
  explicit GatewayFrontImpl(const std::string& address) : c_(address) {}
  const char* name() const override { return "gateway"; }

  CallAnswer Issue(const IssueTaskRequest& req) override {
    nlohmann::json body = {{"input", req.input},
                           {"timeoutSeconds", req.timeout_s},
                           {"heartbeatSeconds", req.heartbeat_s},
                           {"idempotencyKey", req.idempotency_key}};
    if (!req.activity_arn.empty()) {
      body["activityArn"] = req.activity_arn;
      body["scheduleToStartSeconds"] = req.schedule_to_start_s;
    }
    const auto r = c_.Call("TokenWheel.IssueTask", body, kCallTimeoutMs);
    CallAnswer a = FromReply(r);
    if (a.answer == Answer::kApplied) {
      a.token = StringMember(r->body, "taskToken");
      a.existing = TrueMember(r->body, "existing");
    }
    return a;
  }
  CallAnswer Poll(const std::string& arn, const std::string& worker) override {
    const auto r = c_.Call("AWSStepFunctions.GetActivityTask",
                           {{"activityArn", arn}, {"workerName", worker}}, kCallTimeoutMs);
    CallAnswer a = FromReply(r);
    if (a.answer == Answer::kApplied) {
      a.token = StringMember(r->body, "taskToken");
      a.input = StringMember(r->body, "input");
    }
    return a;
  }
  CallAnswer Heartbeat(const std::string& token) override {
    return FromReply(
        c_.Call("AWSStepFunctions.SendTaskHeartbeat", {{"taskToken", token}}, kCallTimeoutMs));
  }
  CallAnswer Complete(CompletionKind kind, const std::string& token,
                      const std::string& payload) override {
    const auto [target, body] = CompletionCall(kind, token, payload);
    return FromReply(c_.Call(target, body, kCallTimeoutMs));
  }
  CallAnswer CreateActivity(const std::string& name) override {
    const auto r = c_.Call("AWSStepFunctions.CreateActivity", {{"name", name}}, kCallTimeoutMs);
    CallAnswer a = FromReply(r);
    if (a.answer == Answer::kApplied) a.arn = StringMember(r->body, "activityArn");
    return a;
  }
  CallAnswer DeleteActivity(const std::string& arn) override {
    return FromReply(
        c_.Call("AWSStepFunctions.DeleteActivity", {{"activityArn", arn}}, kCallTimeoutMs));
  }
  bool StartComplete(CompletionKind kind, const std::string& token,
                     const std::string& payload) override {
    const auto [target, body] = CompletionCall(kind, token, payload);
    return c_.Send(target, body, kCallTimeoutMs);
  }
  CallAnswer FinishStarted() override { return FromReply(c_.Receive(kCallTimeoutMs)); }

 private:
  GatewayClient c_;
};

}  // namespace

std::optional<TaskState> StateNamed(const std::string& name) {
  for (TaskState s : {TaskState::kScheduled, TaskState::kStarted, TaskState::kSucceeded,
                      TaskState::kFailed, TaskState::kTimedOut, TaskState::kCancelled}) {
    if (name == TaskStateName(s)) return s;
  }
  return std::nullopt;
}

std::unique_ptr<Front> ConnectCapnp(const std::string& address, int64_t timeout_ms) {
  auto c = rpc::Client::Connect(address, timeout_ms);
  if (!c.ok()) return nullptr;
  return std::make_unique<CapnpFront>(std::move(c.value));
}

std::unique_ptr<GatewayFront> ConnectGateway(const std::string& address) {
  return std::make_unique<GatewayFrontImpl>(address);
}

std::string TaskInput(const std::string& key, size_t pad) {
  return nlohmann::json{{"key", key}, {"n", std::string(pad, 'x')}}.dump();
}

std::string KeyOfInput(const std::string& input) {
  const auto j = nlohmann::json::parse(input, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("key") || !j["key"].is_string()) return "";
  return j["key"].get<std::string>();
}

}  // namespace tw::crashtest
