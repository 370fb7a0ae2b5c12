// The AWS JSON 1.0 protocol of the gateway, without any HTTP: which operation an X-Amz-Target
// names, how a request body becomes an engine request (and which AWS error a bad one gets), and
// how an engine answer becomes a response body. Pure functions, any thread; the gateway
// (rpc/aws/gateway.cc) does the I/O.
//
// Wire rules (SEMANTICS.md, "AWS wire protocol"):
//  - The body is one JSON object; anything else is SerializationException. An empty body reads
//    as {}. Unknown members are ignored, a member whose value is null is absent, as AWS does.
//  - A member of the wrong JSON type is ValidationException ("... Member must be of type
//    String"); a missing required member is ValidationException "Member must not be null", all
//    missing members in one message. A body (or batch item) that is not an object, or not JSON,
//    is SerializationException.
//  - Lengths and contents are checked by the engine's validators (engine/validate.h), so both
//    front ends answer the same texts (engine/errors.h).
//  - Success: 200 and a JSON body, {} when empty. Times are epoch seconds (JSON numbers with a
//    fractional part). Error: the status of the code, {"__type": ..., "message": ...}, and the
//    X-Amzn-ErrorType header (the gateway sets it from ErrorReply::code).
//
// The AWS operations (target prefix "AWSStepFunctions.") are Step Functions' own; tokenwheel's
// issuer operations (prefix "TokenWheel.") follow the same conventions, documented with an
// example each in docs/AWS_GATEWAY.md.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/engine.h"
#include "engine/errors.h"

namespace tw::rpc::aws {

enum class Op : uint8_t {
  kCreateActivity,
  kDeleteActivity,
  kDescribeActivity,
  kListActivities,
  kGetActivityTask,
  kSendTaskSuccess,
  kSendTaskFailure,
  kSendTaskHeartbeat,
  // TokenWheel.*
  kIssueTask,
  kIssueTasks,
  kCancelTask,
  kDescribeTask,
  kGetOutcomes,
  kAckOutcomes,
  kDeleteConsumer,
  kStats,
};
inline constexpr size_t kOpCount = static_cast<size_t>(Op::kStats) + 1;

// "AWSStepFunctions.SendTaskSuccess" -> kSendTaskSuccess; nullopt for anything else.
std::optional<Op> ParseTarget(std::string_view target);
// The operation's name without its prefix ("SendTaskSuccess"), for logs and metrics.
const char* OpName(Op op);

// An error answer.
struct ErrorReply {
  std::string code;  // the AWS code: "InvalidToken", "SerializationException", ...
  std::string message;
  int status = 400;
};
ErrorReply FromEngineError(const Error& e);  // ErrorCodeName, the message, AwsHttpStatus
ErrorReply SerializationError(std::string message);
ErrorReply UnknownOperationError();
// {"__type":"<namespace>#<code>","message":"<text>"}
std::string ErrorBody(const ErrorReply& e);

// A request body, parsed. Member readers answer the AWS error a bad member gets.
class Body {
 public:
  // Parses `text` (an empty text is {}). On failure returns the SerializationException.
  static std::optional<ErrorReply> Parse(std::string_view text, Body* out);

  // Optional members: absent or null -> nullopt. Wrong JSON type -> ValidationException
  // ("Member must be of type ...").
  std::optional<ErrorReply> String(const char* name, std::optional<std::string>* out) const;
  std::optional<ErrorReply> Integer(const char* name, std::optional<uint64_t>* out) const;
  std::optional<ErrorReply> Array(const char* name, const nlohmann::json** out) const;
  // Required members: a missing one is recorded (Missing()), the others read as above.
  std::optional<ErrorReply> Required(const char* name, std::string* out);
  std::optional<ErrorReply> RequiredInteger(const char* name, uint64_t* out);
  // ValidationException naming every required member that was missing, or nullopt.
  std::optional<ErrorReply> Missing() const;

  const nlohmann::json& object() const { return json_; }
  static Body Of(nlohmann::json j);  // an item of a batch, as a body

 private:
  nlohmann::json json_ = nlohmann::json::object();
  std::vector<std::string> missing_;
};

// ---- Requests: a body to an engine request, or the error it gets ----
std::optional<ErrorReply> ReadCreateActivity(Body& b, CreateActivityRequest* out);
std::optional<ErrorReply> ReadActivityArn(Body& b, std::string* arn);  // Delete, Describe
std::optional<ErrorReply> ReadListActivities(Body& b, ListActivitiesRequest* out);
std::optional<ErrorReply> ReadGetActivityTask(Body& b, GetActivityTaskRequest* out);
std::optional<ErrorReply> ReadSendTaskSuccess(Body& b, SendTaskSuccessRequest* out);
std::optional<ErrorReply> ReadSendTaskFailure(Body& b, SendTaskFailureRequest* out);
std::optional<ErrorReply> ReadTaskToken(Body& b,
                                        std::string* token);  // Heartbeat, Cancel, Describe
std::optional<ErrorReply> ReadIssueTask(Body& b, IssueTaskRequest* out);
// IssueTasks: at most limits::kRpcBatchItemsMax items in "tasks"; an item that cannot be read
// gets its error in `item_errors` (same index) and an empty request.
std::optional<ErrorReply> ReadIssueTasks(Body& b, std::vector<IssueTaskRequest>* out,
                                         std::vector<std::optional<ErrorReply>>* item_errors);
struct GetOutcomesRequest {
  std::string consumer;
  uint64_t from_seq = 0;  // 0: the consumer's cursor + 1
  uint32_t max_events = 0;
  uint32_t wait_s = 0;
};
// waitSeconds is capped at max_poll_s (--max-poll-seconds), as GetActivityTask's wait is.
std::optional<ErrorReply> ReadGetOutcomes(Body& b, uint32_t max_poll_s, GetOutcomesRequest* out);
std::optional<ErrorReply> ReadAckOutcomes(Body& b, std::string* consumer, uint64_t* seq);
std::optional<ErrorReply> ReadConsumer(Body& b, std::string* consumer);  // DeleteConsumer

// ---- Responses ----
inline constexpr char kEmptyBody[] = "{}";
std::string ActivityBody(const ActivityInfo& a, bool with_name);
std::string ListActivitiesBody(const ListActivitiesReply& r);
std::string ActivityTaskBody(const GetActivityTaskReply& r);  // {} for no task
std::string IssueTaskBody(const IssueTaskReply& r);
std::string IssueTasksBody(const std::vector<Result<IssueTaskReply>>& results,
                           const std::vector<std::optional<ErrorReply>>& item_errors);
std::string CompletionBody(const CompletionReply& r);  // TokenWheel.CancelTask
std::string DescriptionBody(const TaskDescription& d);
std::string OutcomesBody(const std::vector<OutcomeEvent>& events, uint64_t acked_seq,
                         uint64_t next_seq);
std::string StatsBody(const EngineStats& s, const nlohmann::json& gateway);

}  // namespace tw::rpc::aws
