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

// The `__type` of an AWS JSON 1.0 error body: "<namespace>#<code>", the namespace of Step
// Functions' service model, or Coral's for ValidationException (SEMANTICS.md). Clients read only
// what follows '#' (botocore), or the X-Amzn-ErrorType header first (the JavaScript SDK).
std::string AwsErrorType(std::string_view code);
// The HTTP status of an engine error on the AWS gateway: 400 for every modeled error and for
// throttling (which every AWS SDK retries), 503 while unavailable, 500 for a bug.
int AwsHttpStatus(ErrorCode code);

// The gateway's protocol error codes, which have no ErrorCode (the engine never sees them).
inline constexpr char kSerializationException[] = "SerializationException";
inline constexpr char kUnknownOperationException[] = "UnknownOperationException";
inline constexpr char kThrottlingException[] = "ThrottlingException";

// SigV4 refusals (rpc/aws/sigv4.h; SEMANTICS.md, "Authentication errors"). The messages that
// name the part of a malformed Authorization header are built where it is parsed.
inline constexpr char kMissingAuthenticationTokenException[] =
    "MissingAuthenticationTokenException";
inline constexpr char kIncompleteSignature[] = "IncompleteSignature";
inline constexpr char kUnrecognizedClientException[] = "UnrecognizedClientException";
inline constexpr char kInvalidSignatureException[] = "InvalidSignatureException";
inline constexpr char kMissingAuthenticationTokenMessage[] = "Missing Authentication Token";
inline constexpr char kUnrecognizedClientMessage[] =
    "The security token included in the request is invalid.";
inline constexpr char kSignatureMismatchMessage[] =
    "The request signature we calculated does not match the signature you provided. Check your "
    "AWS Secret Access Key and signing method. Consult the service documentation for details.";

// ---- Exact AWS texts ----

inline constexpr char kInvalidTokenMessage[] = "Invalid Token: 'Invalid token'";
inline constexpr char kTaskGoneMessage[] = "Task Timed Out: 'Provided task does not exist anymore'";
inline constexpr char kTaskDoesNotExistMessage[] =
    "Task Does Not Exist: 'Provided task does not exist'";
inline constexpr char kThrottlingMessage[] = "Rate exceeded";

// The error names Step Functions records on outcomes the service itself decides: a task that
// timed out, and a queued task whose activity was deleted (with ActivityDeletedCause).
inline constexpr char kStatesTimeout[] = "States.Timeout";
inline constexpr char kStatesRuntime[] = "States.Runtime";
std::string ActivityDeletedCause(std::string_view arn);  // "The activity <arn> does not exist."

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
std::string TooLongRule(size_t n);            // "Member must have length less than or equal to <n>"
std::string ValueAtMostRule(uint64_t n);      // "Member must have value less than or equal to <n>"
std::string TypeRule(std::string_view type);  // "Member must be of type <type>" (String, ...)
std::string ValueAtLeastRule(uint64_t n);  // "Member must have value greater than or equal to <n>"
std::string ValueBetweenRule(uint64_t lo, uint64_t hi);  // "Member must have value between ..."

// SerializationException: a body that is not one JSON object.
inline constexpr char kMalformedBodyMessage[] =
    "Unable to parse the request body: it is not one JSON value";
inline constexpr char kListWhereStructureMessage[] = "Start of list found where not expected.";
inline constexpr char kScalarWhereStructureMessage[] =
    "A structure was expected, found a scalar value.";

std::string MissingMessage(std::string_view field);            // kNullRule
std::string TooShortMessage(std::string_view field);           // kTooShortRule
std::string TooLongMessage(std::string_view field, size_t n);  // TooLongRule(n)
// "1 validation error detected: <detail>", for tokenwheel's own rules in the AWS envelope.
std::string ValidationDetailMessage(std::string_view detail);
std::string InvalidUtf8Message(std::string_view field);  // kUtf8Rule

// ---- Errors ----

Error ValidationError(std::string message);
// A request member of the wrong JSON type: ValidationException, TypeRule(type).
Error WrongTypeError(std::string_view field, std::string_view type);
Error InvalidTokenError();
Error TaskGoneError();  // TaskTimedOut: the task ended; callers add the native Refusal
Error TaskDoesNotExistError();
Error InvalidNameError(std::string_view shown_name);  // "Invalid Name: '<name>'"
Error InvalidArnError(std::string_view arn);          // "Invalid Arn: 'Invalid ARN prefix: <arn>'"
Error ActivityDoesNotExistError(std::string_view arn);  // "Activity Does Not Exist: '<arn>'"
Error ActivityLimitExceededError(size_t activities_max);
Error ActivityWorkerLimitExceededError(size_t pollers_max);
// The native API's poll id is already waiting (ValidationException).
Error PollIdWaitingError();
// "Invalid Output: '<problem>'" (label "Output") or "Invalid Input: ..." (label "Input"): both
// InvalidOutput, SEMANTICS.md has no InvalidInput.
Error InvalidPayloadError(std::string_view label, std::string_view problem);
// ThrottlingException "Rate exceeded", with tokenwheel's reason after a colon when given.
Error ThrottlingError(std::string_view reason = {});
Error UnavailableError(std::string message);

// tokenwheel's outcome stream (ValidationException, its own texts).
Error ConsumerNameError();  // "consumer name must be 1..80 bytes"
Error UnknownConsumerError(std::string_view name);
Error TooManyConsumersError(size_t consumers_max);  // "too many consumers (<max>)"
Error AckBeyondLastEventError(uint64_t seq, uint64_t last_durable_seq);
// Events from `from` were trimmed (every consumer acknowledged them); `resume_hint` says how to
// resume from the consumer's cursor in the caller's API.
Error EventsTrimmedError(uint64_t from, std::string_view resume_hint);
// ServiceUnavailable "storage failure: <detail>" (engine.h, "Storage failures").
Error StorageFailureError(std::string_view detail);
// ServiceUnavailable "the engine is stopping".
Error StoppingError();

}  // namespace tw
