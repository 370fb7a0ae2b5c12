// The AWS error vocabulary, in one place: every error code's wire name, `__type` and HTTP
// status, and every message text tokenwheel answers with. The engine builds its Errors here;
// both front ends (rpc/server.cc, Cap'n Proto; rpc/aws/, the AWS JSON 1.0 gateway) send what it
// built, and the gateway's own protocol errors come from here too. Texts recorded against real
// AWS are reproduced byte for byte (SEMANTICS.md); tokenwheel's own extensions follow the same
// shapes.
//
// Pure functions, any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/types.h"

namespace tw {

// ---- The wire ----

// The `__type` of an AWS JSON 1.0 error body: "<namespace>#<code>". The namespace does not
// matter to clients (botocore reads what follows '#', the JavaScript SDK the X-Amzn-ErrorType
// header first); it is the one AWS uses: ValidationException is Coral's, Step Functions' own
// errors are its service model's, and the protocol's (throttling, authentication, parsing) are
// Coral's.
std::string AwsErrorType(std::string_view code);
// The HTTP status of an engine error on the AWS gateway: 400 for every modeled error and for
// throttling (which every AWS SDK retries), 503 while unavailable, 500 for a bug.
int AwsHttpStatus(ErrorCode code);

// The gateway's protocol error codes, which have no ErrorCode (the engine never sees them).
inline constexpr char kSerializationException[] = "SerializationException";
inline constexpr char kUnknownOperationException[] = "UnknownOperationException";
inline constexpr char kThrottlingException[] = "ThrottlingException";

// ---- Exact AWS texts ----

inline constexpr char kInvalidTokenMessage[] = "Invalid Token: 'Invalid token'";
inline constexpr char kTaskGoneMessage[] = "Task Timed Out: 'Provided task does not exist anymore'";
inline constexpr char kTaskDoesNotExistMessage[] =
    "Task Does Not Exist: 'Provided task does not exist'";
inline constexpr char kThrottlingMessage[] = "Rate exceeded";

// ValidationException, the Coral envelope: "1 validation error detected: Value at '<field>'
// failed to satisfy constraint: <rule>", or "N validation errors detected: a; b" for several.
std::string ValidationMessage(const std::vector<std::string>& constraints);
// One constraint: "Value at '<field>' failed to satisfy constraint: <rule>".
std::string Constraint(std::string_view field, std::string_view rule);
// One constraint quoting the value: "Value '<value>' at '<field>' failed to satisfy ...".
std::string ValueConstraint(std::string_view value, std::string_view field, std::string_view rule);
inline constexpr char kNullRule[] = "Member must not be null";
inline constexpr char kTooShortRule[] = "Member must have length greater than or equal to 1";
inline constexpr char kUtf8Rule[] = "Member must be valid UTF-8";  // ours: AWS has none
std::string TooLongRule(size_t n);        // "Member must have length less than or equal to <n>"
std::string ValueAtMostRule(uint64_t n);  // "Member must have value less than or equal to <n>"

std::string MissingMessage(std::string_view field);            // kNullRule
std::string TooShortMessage(std::string_view field);           // kTooShortRule
std::string TooLongMessage(std::string_view field, size_t n);  // TooLongRule(n)
std::string InvalidUtf8Message(std::string_view field);        // kUtf8Rule

// ---- Errors ----

Error ValidationError(std::string message);
Error InvalidTokenError();
Error TaskGoneError();  // TaskTimedOut: the task ended; callers add the native Refusal
Error TaskDoesNotExistError();
Error InvalidNameError(std::string_view shown_name);  // "Invalid Name: '<name>'"
Error InvalidArnError(std::string_view arn);          // "Invalid Arn: 'Invalid ARN prefix: <arn>'"
Error ActivityDoesNotExistError(std::string_view arn);  // "Activity Does Not Exist: '<arn>'"
Error ActivityLimitExceededError(size_t activities_max);
Error ActivityWorkerLimitExceededError(size_t pollers_max);
// "Invalid Output: '<problem>'" (label "Output") or "Invalid Input: ..." (label "Input"): both
// InvalidOutput, SEMANTICS.md has no InvalidInput.
Error InvalidPayloadError(std::string_view label, std::string_view problem);
// ThrottlingException "Rate exceeded", with tokenwheel's reason after a colon when given.
Error ThrottlingError(std::string_view reason = {});
Error UnavailableError(std::string message);
// ServiceUnavailable "storage failure: <detail>" (engine.h, "Storage failures").
Error StorageFailureError(std::string_view detail);
// ServiceUnavailable "the engine is stopping".
Error StoppingError();

}  // namespace tw
