// Fuzz target: the AWS JSON 1.0 request parser (rpc/aws/protocol.h), without HTTP.
//
// Input: "<X-Amz-Target value>\n<body>". The target names the operation; one that does not
// parse still picks one (by its length), so that every body reader sees every body. Then, as
// the gateway does: Body::Parse, the operation's Read*, the engine's validators on what was read
// (engine/validate.h: the caller's-thread half of every engine call), and the answer bodies
// built from the fields read.
//
// Checked:
//  - Body::Parse accepts exactly a body of JSON whitespace, or one JSON object (nlohmann/json
//    the oracle, but for a NUL, which it takes for the end of its input; compared on valid
//    UTF-8 only, as for payloads); its refusals are SerializationException;
//  - what a reader accepts is within the bounds it enforces (maxResults, timeouts, maxEvents,
//    waitSeconds, batch length);
//  - every error answer and every answer body is valid UTF-8 and exactly one JSON value.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "engine/json_scan.h"
#include "engine/limits.h"
#include "engine/validate.h"
#include "rpc/aws/protocol.h"
#include "tests/fuzz/fuzz_support.h"

namespace tw::rpc::aws {
namespace {

constexpr uint32_t kMaxPollSeconds = 20;
constexpr int64_t kSomeMs = 1'700'000'000'123;

void CheckJsonText(const std::string& text) {
  TW_FUZZ_CHECK(IsValidUtf8(text));
  TW_FUZZ_CHECK(IsJsonValue(text));
}

void CheckError(const ErrorReply& e) {
  TW_FUZZ_CHECK(!e.code.empty());
  TW_FUZZ_CHECK(e.status >= 400 && e.status <= 599);
  const std::string body = ErrorBody(e);
  CheckJsonText(body);
  const nlohmann::json j = nlohmann::json::parse(body);
  TW_FUZZ_CHECK(j.at("__type").get<std::string>().ends_with("#" + e.code));
}

// An engine validator's answer: fine, or an error the gateway can send.
void CheckValidation(const Error& e) {
  if (!e.ok()) CheckError(FromEngineError(e));
}

// Body::Parse against the oracle; true when it parsed.
bool CheckParse(std::string_view text, Body* body) {
  const std::optional<ErrorReply> e = Body::Parse(text, body);
  if (e) {
    TW_FUZZ_CHECK(e->code == kSerializationException);
    CheckError(*e);
  }
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    TW_FUZZ_CHECK(!e);
  } else if (IsValidUtf8(text)) {
    const std::string s(text);
    const bool oracle = nlohmann::json::accept(s) && s.find('\0') == std::string::npos &&
                        nlohmann::json::parse(s).is_object();
    TW_FUZZ_CHECK(!e == oracle);
  }
  return !e;
}

void Activities(Op op, Body& b) {
  ActivityInfo a{.creation_ms = kSomeMs};
  if (op == Op::kCreateActivity) {
    CreateActivityRequest r;
    if (auto e = ReadCreateActivity(b, &r)) return CheckError(*e);
    CheckValidation(ValidateActivityName(r.name));
    a.name = r.name;
    a.arn = "arn:aws:states:us-east-1:000000000000:activity:" + r.name;
  } else {
    if (auto e = ReadActivityArn(b, &a.arn)) return CheckError(*e);
    CheckValidation(ValidateArn(a.arn, "activityArn"));
  }
  CheckJsonText(ActivityBody(a, /*with_name=*/op == Op::kDescribeActivity));
}

void ListActivities(Body& b) {
  ListActivitiesRequest r;
  if (auto e = ReadListActivities(b, &r)) return CheckError(*e);
  TW_FUZZ_CHECK(r.max_results <= limits::kListActivitiesMax);
  TW_FUZZ_CHECK(ValidateMaxResults(r.max_results).ok());
  ListActivitiesReply reply;
  reply.activities.push_back(ActivityInfo{"arn:x", r.next_token, kSomeMs});
  reply.next_token = r.next_token;
  CheckJsonText(ListActivitiesBody(reply));
}

void GetActivityTask(Body& b) {
  GetActivityTaskRequest r;
  if (auto e = ReadGetActivityTask(b, &r)) return CheckError(*e);
  CheckValidation(ValidateArn(r.activity_arn, "activityArn"));
  CheckValidation(ValidateWorkerName(r.worker_name));
  CheckJsonText(ActivityTaskBody(GetActivityTaskReply{r.worker_name, r.activity_arn}));
}

void Completion(Op op, Body& b) {
  std::string token;
  if (op == Op::kSendTaskSuccess) {
    SendTaskSuccessRequest r;
    if (auto e = ReadSendTaskSuccess(b, &r)) return CheckError(*e);
    TW_FUZZ_CHECK(r.output.has_value());
    CheckValidation(ValidateOutput(r.output));
    token = r.token;
  } else if (op == Op::kSendTaskFailure) {
    SendTaskFailureRequest r;
    if (auto e = ReadSendTaskFailure(b, &r)) return CheckError(*e);
    CheckValidation(ValidateFailure(r.error, r.cause));
    token = r.token;
  } else {
    if (auto e = ReadTaskToken(b, &token)) return CheckError(*e);
  }
  CheckValidation(ValidateTaskToken(token));
  CheckJsonText(CompletionBody(CompletionReply{.duplicate = token.size() % 2 == 1}));
}

// The answers that carry what an issue stored: its description and its outcome event.
void IssueAnswers(const IssueTaskRequest& r) {
  TaskDescription d;
  d.activity_arn = r.activity_arn;
  d.input = r.input;
  d.correlation = r.correlation;
  d.worker = r.idempotency_key;
  CheckJsonText(DescriptionBody(d));
  OutcomeEvent event;
  event.seq = 1;
  event.state = TaskState::kSucceeded;
  event.output = r.input;
  event.token = r.idempotency_key;
  event.correlation = r.correlation;
  CheckJsonText(OutcomesBody({event}, 0, 2));
}

void CheckIssue(const IssueTaskRequest& r) {
  TW_FUZZ_CHECK(r.timeout_s <= limits::kTimeoutSecondsMax);
  TW_FUZZ_CHECK(r.heartbeat_s <= limits::kTimeoutSecondsMax);
  TW_FUZZ_CHECK(r.schedule_to_start_s <= limits::kTimeoutSecondsMax);
  const bool activity = !r.activity_arn.empty();
  if (activity) CheckValidation(ValidateArn(r.activity_arn, "activityArn"));
  CheckValidation(ValidateInput(r.input));
  CheckValidation(ValidateTimeouts(r.timeout_s, r.heartbeat_s, r.schedule_to_start_s, activity));
  IssueAnswers(r);
}

void IssueTask(Body& b) {
  IssueTaskRequest r;
  if (auto e = ReadIssueTask(b, &r)) return CheckError(*e);
  CheckIssue(r);
  CheckJsonText(IssueTaskBody(IssueTaskReply{r.idempotency_key, r.timeout_s % 2 == 1}));
}

void IssueTasks(Body& b) {
  std::vector<IssueTaskRequest> reqs;
  std::vector<std::optional<ErrorReply>> item_errors;
  if (auto e = ReadIssueTasks(b, &reqs, &item_errors)) return CheckError(*e);
  TW_FUZZ_CHECK(reqs.size() == item_errors.size());
  TW_FUZZ_CHECK(reqs.size() <= limits::kRpcBatchItemsMax);
  std::vector<Result<IssueTaskReply>> results;
  for (size_t i = 0; i < reqs.size(); ++i) {
    if (item_errors[i]) {
      CheckError(*item_errors[i]);
      results.push_back(Result<IssueTaskReply>::Ok({}));  // not read: the item error wins
      continue;
    }
    CheckIssue(reqs[i]);
    // The engine's refusal of an item, as the gateway renders it.
    results.push_back(i % 2 == 0
                          ? Result<IssueTaskReply>::Ok({reqs[i].idempotency_key, false})
                          : Result<IssueTaskReply>::Fail(InvalidArnError(reqs[i].activity_arn)));
  }
  CheckJsonText(IssueTasksBody(results, item_errors));
}

void Outcomes(Op op, Body& b) {
  std::string consumer;
  if (op == Op::kGetOutcomes) {
    GetOutcomesRequest r;
    if (auto e = ReadGetOutcomes(b, kMaxPollSeconds, &r)) return CheckError(*e);
    TW_FUZZ_CHECK(r.wait_s <= kMaxPollSeconds);
    TW_FUZZ_CHECK(r.max_events >= 1 && r.max_events <= limits::kEventsPerReadMax);
    consumer = r.consumer;
  } else if (op == Op::kAckOutcomes) {
    uint64_t seq = 0;
    if (auto e = ReadAckOutcomes(b, &consumer, &seq)) return CheckError(*e);
  } else {
    if (auto e = ReadConsumer(b, &consumer)) return CheckError(*e);
  }
  EngineStats stats;
  stats.consumers.push_back(ConsumerInfo{consumer, 7});
  CheckJsonText(StatsBody(stats, nlohmann::json{{"consumer", consumer}}));
}

void Dispatch(Op op, Body& b) {
  switch (op) {
    case Op::kCreateActivity:
    case Op::kDeleteActivity:
    case Op::kDescribeActivity:
      return Activities(op, b);
    case Op::kListActivities:
      return ListActivities(b);
    case Op::kGetActivityTask:
      return GetActivityTask(b);
    case Op::kSendTaskSuccess:
    case Op::kSendTaskFailure:
    case Op::kSendTaskHeartbeat:
    case Op::kCancelTask:
    case Op::kDescribeTask:
      return Completion(op, b);
    case Op::kIssueTask:
      return IssueTask(b);
    case Op::kIssueTasks:
      return IssueTasks(b);
    case Op::kGetOutcomes:
    case Op::kAckOutcomes:
    case Op::kDeleteConsumer:
      return Outcomes(op, b);
    case Op::kStats:
      return;
  }
}

}  // namespace
}  // namespace tw::rpc::aws

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tw::rpc::aws;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t newline = input.find('\n');
  const std::string_view target = input.substr(0, newline);
  const std::string_view text =
      newline == std::string_view::npos ? std::string_view() : input.substr(newline + 1);
  const std::optional<Op> parsed = ParseTarget(target);
  if (parsed) TW_FUZZ_CHECK(target.ends_with(std::string(".") + OpName(*parsed)));
  const Op op = parsed.value_or(static_cast<Op>(target.size() % kOpCount));
  Body body;
  if (CheckParse(text, &body)) Dispatch(op, body);
  return 0;
}
