#include "rpc/aws/protocol.h"

#include <algorithm>
#include <array>
#include <utility>

#include "engine/assert.h"
#include "engine/json_scan.h"
#include "engine/limits.h"
#include "engine/validate.h"
#include "rpc/json_forms.h"

namespace tw::rpc::aws {

using nlohmann::json;

namespace {

constexpr std::string_view kAwsPrefix = "AWSStepFunctions.";
constexpr std::string_view kTokenWheelPrefix = "TokenWheel.";

struct OpInfo {
  Op op;
  const char* name;
  bool aws;  // AWSStepFunctions.* (else TokenWheel.*)
};
constexpr std::array<OpInfo, kOpCount> kOps = {{
    {Op::kCreateActivity, "CreateActivity", true},
    {Op::kDeleteActivity, "DeleteActivity", true},
    {Op::kDescribeActivity, "DescribeActivity", true},
    {Op::kListActivities, "ListActivities", true},
    {Op::kGetActivityTask, "GetActivityTask", true},
    {Op::kSendTaskSuccess, "SendTaskSuccess", true},
    {Op::kSendTaskFailure, "SendTaskFailure", true},
    {Op::kSendTaskHeartbeat, "SendTaskHeartbeat", true},
    {Op::kIssueTask, "IssueTask", false},
    {Op::kIssueTasks, "IssueTasks", false},
    {Op::kCancelTask, "CancelTask", false},
    {Op::kDescribeTask, "DescribeTask", false},
    {Op::kGetOutcomes, "GetOutcomes", false},
    {Op::kAckOutcomes, "AckOutcomes", false},
    {Op::kDeleteConsumer, "DeleteConsumer", false},
    {Op::kStats, "Stats", false},
}};

// A body or batch item that is not a JSON object: Coral's words for what it found instead.
ErrorReply NotAStructure(const json& value) {
  if (value.is_array()) return SerializationError(kListWhereStructureMessage);
  return SerializationError(std::string(kScalarWhereStructureMessage));
}

// The member `name`, or nullptr when absent or null (AWS reads a null member as absent).
const json* Member(const json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<ErrorReply> NotNegative(const json& value, const char* name) {
  return FromEngineError(ValidationError(ValidationMessage(
      {ValueConstraint(value.dump(), name, "Member must have value greater than or equal to 0")})));
}

}  // namespace

std::optional<Op> ParseTarget(std::string_view target) {
  bool aws = false;
  if (target.starts_with(kAwsPrefix)) {
    aws = true;
    target.remove_prefix(kAwsPrefix.size());
  } else if (target.starts_with(kTokenWheelPrefix)) {
    target.remove_prefix(kTokenWheelPrefix.size());
  } else {
    return std::nullopt;
  }
  for (const OpInfo& info : kOps) {
    if (info.aws == aws && target == info.name) return info.op;
  }
  return std::nullopt;
}

const char* OpName(Op op) {
  const OpInfo& info = kOps[static_cast<size_t>(op)];
  TW_ASSERT(info.op == op);
  return info.name;
}

ErrorReply FromEngineError(const Error& e) {
  TW_ASSERT(!e.ok());
  return ErrorReply{ErrorCodeName(e.code), e.message, AwsHttpStatus(e.code)};
}

ErrorReply SerializationError(std::string message) {
  return ErrorReply{kSerializationException, std::move(message), 400};
}

ErrorReply UnknownOperationError() { return ErrorReply{kUnknownOperationException, "", 400}; }

std::string ErrorBody(const ErrorReply& e) {
  return Dump(json{{"__type", AwsErrorType(e.code)}, {"message", e.message}});
}

// ---- Body ----

std::optional<ErrorReply> Body::Parse(std::string_view text, Body* out) {
  out->missing_.clear();
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    out->json_ = json::object();
    return std::nullopt;
  }
  // The scanner first: nlohmann/json stops at a NUL and would accept what follows it.
  if (!IsValidUtf8(text) || !IsJsonValue(text)) {
    return SerializationError(kMalformedBodyMessage);
  }
  out->json_ = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (out->json_.is_discarded()) return SerializationError(kMalformedBodyMessage);
  if (!out->json_.is_object()) return NotAStructure(out->json_);
  return std::nullopt;
}

Body Body::Of(json j) {
  Body b;
  b.json_ = std::move(j);
  return b;
}

std::optional<ErrorReply> Body::String(const char* name, std::optional<std::string>* out) const {
  out->reset();
  const json* v = Member(json_, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) return FromEngineError(WrongTypeError(name, "String"));
  *out = v->get<std::string>();
  return std::nullopt;
}

std::optional<ErrorReply> Body::Integer(const char* name, std::optional<uint64_t>* out) const {
  out->reset();
  const json* v = Member(json_, name);
  if (v == nullptr) return std::nullopt;
  if (v->is_number_integer() && !v->is_number_unsigned()) return NotNegative(*v, name);
  if (!v->is_number_unsigned()) return FromEngineError(WrongTypeError(name, "Integer"));
  *out = v->get<uint64_t>();
  return std::nullopt;
}

std::optional<ErrorReply> Body::Array(const char* name, const json** out) const {
  *out = Member(json_, name);
  if (*out != nullptr && !(*out)->is_array()) return FromEngineError(WrongTypeError(name, "List"));
  return std::nullopt;
}

std::optional<ErrorReply> Body::Required(const char* name, std::string* out) {
  std::optional<std::string> v;
  if (auto e = String(name, &v)) return e;
  if (!v) {
    missing_.emplace_back(name);
    return std::nullopt;
  }
  *out = std::move(*v);
  return std::nullopt;
}

std::optional<ErrorReply> Body::RequiredInteger(const char* name, uint64_t* out) {
  std::optional<uint64_t> v;
  if (auto e = Integer(name, &v)) return e;
  if (!v) {
    missing_.emplace_back(name);
    return std::nullopt;
  }
  *out = *v;
  return std::nullopt;
}

std::optional<ErrorReply> Body::Missing() const {
  if (missing_.empty()) return std::nullopt;
  std::vector<std::string> constraints;
  for (const std::string& name : missing_) constraints.push_back(Constraint(name, kNullRule));
  return FromEngineError(ValidationError(ValidationMessage(constraints)));
}

// ---- Requests ----

std::optional<ErrorReply> ReadCreateActivity(Body& b, CreateActivityRequest* out) {
  if (auto e = b.Required("name", &out->name)) return e;
  return b.Missing();
}

std::optional<ErrorReply> ReadActivityArn(Body& b, std::string* arn) {
  if (auto e = b.Required("activityArn", arn)) return e;
  return b.Missing();
}

std::optional<ErrorReply> ReadListActivities(Body& b, ListActivitiesRequest* out) {
  std::optional<uint64_t> max;
  if (auto e = b.Integer("maxResults", &max)) return e;
  std::optional<std::string> next;
  if (auto e = b.String("nextToken", &next)) return e;
  if (max && *max > limits::kListActivitiesMax) {
    return FromEngineError(ValidateMaxResults(*max));
  }
  out->max_results = static_cast<uint32_t>(max.value_or(0));
  out->next_token = next.value_or("");
  return std::nullopt;
}

std::optional<ErrorReply> ReadGetActivityTask(Body& b, GetActivityTaskRequest* out) {
  if (auto e = b.Required("activityArn", &out->activity_arn)) return e;
  std::optional<std::string> worker;
  if (auto e = b.String("workerName", &worker)) return e;
  out->worker_name = worker.value_or("");
  return b.Missing();
}

std::optional<ErrorReply> ReadSendTaskSuccess(Body& b, SendTaskSuccessRequest* out) {
  if (auto e = b.Required("taskToken", &out->token)) return e;
  std::string output;
  if (auto e = b.Required("output", &output)) return e;
  if (auto e = b.Missing()) return e;
  out->output = std::move(output);
  return std::nullopt;
}

std::optional<ErrorReply> ReadSendTaskFailure(Body& b, SendTaskFailureRequest* out) {
  if (auto e = b.Required("taskToken", &out->token)) return e;
  if (auto e = b.String("error", &out->error)) return e;
  if (auto e = b.String("cause", &out->cause)) return e;
  return b.Missing();
}

std::optional<ErrorReply> ReadTaskToken(Body& b, std::string* token) {
  if (auto e = b.Required("taskToken", token)) return e;
  return b.Missing();
}

namespace {

// A count of seconds that the engine checks against kTimeoutSecondsMax; a value past uint32 is
// refused here with the engine's own text.
std::optional<ErrorReply> Seconds(const Body& b, const char* name, uint32_t* out) {
  std::optional<uint64_t> v;
  if (auto e = b.Integer(name, &v)) return e;
  if (v && *v > limits::kTimeoutSecondsMax) {
    return FromEngineError(ValidateTimeouts(*v, 0, 0, true));
  }
  *out = static_cast<uint32_t>(v.value_or(0));
  return std::nullopt;
}

}  // namespace

std::optional<ErrorReply> ReadIssueTask(Body& b, IssueTaskRequest* out) {
  std::optional<std::string> s;
  if (auto e = b.String("activityArn", &s)) return e;
  out->activity_arn = s.value_or("");
  if (auto e = b.String("input", &s)) return e;
  out->input = s.value_or("{}");
  if (auto e = Seconds(b, "timeoutSeconds", &out->timeout_s)) return e;
  if (auto e = Seconds(b, "heartbeatSeconds", &out->heartbeat_s)) return e;
  if (auto e = Seconds(b, "scheduleToStartSeconds", &out->schedule_to_start_s)) return e;
  if (auto e = b.String("idempotencyKey", &s)) return e;
  out->idempotency_key = s.value_or("");
  if (auto e = b.String("correlation", &s)) return e;
  out->correlation = s.value_or("");
  return std::nullopt;
}

std::optional<ErrorReply> ReadIssueTasks(Body& b, std::vector<IssueTaskRequest>* out,
                                         std::vector<std::optional<ErrorReply>>* item_errors) {
  const json* tasks = nullptr;
  if (auto e = b.Array("tasks", &tasks)) return e;
  if (tasks == nullptr) {
    return FromEngineError(ValidationError(MissingMessage("tasks")));
  }
  if (tasks->size() > limits::kRpcBatchItemsMax) {
    return FromEngineError(ValidationError(
        ValidationMessage({Constraint("tasks", TooLongRule(limits::kRpcBatchItemsMax))})));
  }
  out->assign(tasks->size(), IssueTaskRequest{});
  item_errors->assign(tasks->size(), std::nullopt);
  for (size_t i = 0; i < tasks->size(); ++i) {
    const json& item = (*tasks)[i];
    if (!item.is_object()) {
      (*item_errors)[i] = NotAStructure(item);
      continue;
    }
    Body body = Body::Of(item);
    (*item_errors)[i] = ReadIssueTask(body, &(*out)[i]);
  }
  return std::nullopt;
}

std::optional<ErrorReply> ReadGetOutcomes(Body& b, uint32_t max_poll_s, GetOutcomesRequest* out) {
  if (auto e = b.Required("consumer", &out->consumer)) return e;
  std::optional<uint64_t> from, max, wait;
  if (auto e = b.Integer("fromSequence", &from)) return e;
  if (auto e = b.Integer("maxEvents", &max)) return e;
  if (auto e = b.Integer("waitSeconds", &wait)) return e;
  if (auto e = b.Missing()) return e;
  if (max && (*max == 0 || *max > limits::kEventsPerReadMax)) {
    return FromEngineError(ValidationError(ValidationMessage({ValueConstraint(
        std::to_string(*max), "maxEvents", ValueBetweenRule(1, limits::kEventsPerReadMax))})));
  }
  out->from_seq = from.value_or(0);
  out->max_events = static_cast<uint32_t>(max.value_or(limits::kListActivitiesDefault));
  // Like GetActivityTask's wait: never longer than the server's maximum.
  out->wait_s = static_cast<uint32_t>(std::min<uint64_t>(wait.value_or(0), max_poll_s));
  return std::nullopt;
}

std::optional<ErrorReply> ReadAckOutcomes(Body& b, std::string* consumer, uint64_t* seq) {
  if (auto e = b.Required("consumer", consumer)) return e;
  if (auto e = b.RequiredInteger("sequence", seq)) return e;
  return b.Missing();
}

std::optional<ErrorReply> ReadConsumer(Body& b, std::string* consumer) {
  if (auto e = b.Required("consumer", consumer)) return e;
  return b.Missing();
}

// ---- Responses ----

std::string ActivityBody(const ActivityInfo& a, bool with_name) {
  json j{{"activityArn", a.arn}, {"creationDate", EpochSeconds(a.creation_ms)}};
  if (with_name) j["name"] = a.name;
  return Dump(j);
}

std::string ListActivitiesBody(const ListActivitiesReply& r) {
  json list = json::array();
  for (const ActivityInfo& a : r.activities) list.push_back(ActivityJson(a));
  json j{{"activities", std::move(list)}};
  if (!r.next_token.empty()) j["nextToken"] = r.next_token;
  return Dump(j);
}

std::string ActivityTaskBody(const GetActivityTaskReply& r) {
  if (r.token.empty()) return kEmptyBody;
  return Dump(json{{"taskToken", r.token}, {"input", r.input}});
}

std::string IssueTaskBody(const IssueTaskReply& r) {
  return Dump(json{{"taskToken", r.token}, {"existing", r.existing}});
}

std::string IssueTasksBody(const std::vector<Result<IssueTaskReply>>& results,
                           const std::vector<std::optional<ErrorReply>>& item_errors) {
  TW_ASSERT(results.size() == item_errors.size());
  json list = json::array();
  for (size_t i = 0; i < results.size(); ++i) {
    if (item_errors[i]) {
      list.push_back(
          json{{"error", {{"code", item_errors[i]->code}, {"message", item_errors[i]->message}}}});
    } else if (!results[i].ok()) {
      // The engine's error with tokenwheel's detail; its code under "code", as above.
      json e = ErrorJson(results[i].error);
      e["code"] = std::move(e["error"]);
      e.erase("error");
      list.push_back(json{{"error", std::move(e)}});
    } else {
      list.push_back(
          json{{"taskToken", results[i].value.token}, {"existing", results[i].value.existing}});
    }
  }
  return Dump(json{{"results", std::move(list)}});
}

std::string CompletionBody(const CompletionReply& r) { return Dump(CompletionJson(r)); }

std::string DescriptionBody(const TaskDescription& d) { return Dump(DescriptionJson(d)); }

std::string OutcomesBody(const std::vector<OutcomeEvent>& events, uint64_t acked_seq,
                         uint64_t next_seq) {
  json list = json::array();
  for (const OutcomeEvent& e : events) list.push_back(EventJson(e));
  return Dump(
      json{{"events", std::move(list)}, {"ackedSequence", acked_seq}, {"nextSequence", next_seq}});
}

std::string StatsBody(const EngineStats& s, const json& gateway) {
  json j = EngineStatsJson(s);
  j["gateway"] = gateway;
  return Dump(j);
}

}  // namespace tw::rpc::aws
