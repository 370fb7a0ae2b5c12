#include "engine/errors.h"

#include <utility>

#include "engine/assert.h"
#include "engine/limits.h"

namespace tw {

const char* ErrorCodeName(ErrorCode c) {
  switch (c) {
    case ErrorCode::kOk:
      return "";
    case ErrorCode::kValidation:
      return "ValidationException";
    case ErrorCode::kInvalidToken:
      return "InvalidToken";
    case ErrorCode::kTaskDoesNotExist:
      return "TaskDoesNotExist";
    case ErrorCode::kTaskTimedOut:
      return "TaskTimedOut";
    case ErrorCode::kInvalidOutput:
      return "InvalidOutput";
    case ErrorCode::kInvalidName:
      return "InvalidName";
    case ErrorCode::kInvalidArn:
      return "InvalidArn";
    case ErrorCode::kActivityDoesNotExist:
      return "ActivityDoesNotExist";
    case ErrorCode::kActivityLimitExceeded:
      return "ActivityLimitExceeded";
    case ErrorCode::kActivityWorkerLimitExceeded:
      return "ActivityWorkerLimitExceeded";
    case ErrorCode::kOverloaded:
      return kThrottlingException;
    case ErrorCode::kUnavailable:
      return "ServiceUnavailable";
    case ErrorCode::kInternal:
      return "InternalFailure";
  }
  return "InternalFailure";
}

std::string AwsErrorType(std::string_view code) {
  std::string type = code == "ValidationException" ? "com.amazon.coral.validate#"
                                                   : "com.amazonaws.swf.service.v2.model#";
  type.append(code);
  return type;
}

int AwsHttpStatus(ErrorCode code) {
  switch (code) {
    case ErrorCode::kUnavailable:
      return 503;
    case ErrorCode::kInternal:
      return 500;
    default:
      return 400;
  }
}

std::string Constraint(std::string_view field, std::string_view rule) {
  std::string s = "Value at '";
  s.append(field);
  s.append("' failed to satisfy constraint: ");
  s.append(rule);
  return s;
}

std::string ValueConstraint(std::string_view value, std::string_view field, std::string_view rule) {
  std::string s = "Value '";
  s.append(value);
  s.append("' at '");
  s.append(field);
  s.append("' failed to satisfy constraint: ");
  s.append(rule);
  return s;
}

std::string ValidationMessage(const std::vector<std::string>& constraints) {
  TW_ASSERT(!constraints.empty());
  std::string s = std::to_string(constraints.size());
  s.append(constraints.size() == 1 ? " validation error detected: "
                                   : " validation errors detected: ");
  for (size_t i = 0; i < constraints.size(); ++i) {
    if (i > 0) s.append("; ");
    s.append(constraints[i]);
  }
  return s;
}

std::string TooLongRule(size_t n) {
  return "Member must have length less than or equal to " + std::to_string(n);
}

std::string ValueAtMostRule(uint64_t n) {
  return "Member must have value less than or equal to " + std::to_string(n);
}

std::string ValueAtLeastRule(uint64_t n) {
  return "Member must have value greater than or equal to " + std::to_string(n);
}

std::string ValueBetweenRule(uint64_t lo, uint64_t hi) {
  return "Member must have value between " + std::to_string(lo) + " and " + std::to_string(hi);
}

std::string TypeRule(std::string_view type) {
  std::string rule = "Member must be of type ";
  rule.append(type);
  return rule;
}

std::string ValidationDetailMessage(std::string_view detail) {
  std::string m = "1 validation error detected: ";
  m.append(detail);
  return m;
}

std::string MissingMessage(std::string_view field) {
  return ValidationMessage({Constraint(field, kNullRule)});
}
std::string TooShortMessage(std::string_view field) {
  return ValidationMessage({Constraint(field, kTooShortRule)});
}
std::string TooLongMessage(std::string_view field, size_t n) {
  return ValidationMessage({Constraint(field, TooLongRule(n))});
}
std::string InvalidUtf8Message(std::string_view field) {
  return ValidationMessage({Constraint(field, kUtf8Rule)});
}

Error WrongTypeError(std::string_view field, std::string_view type) {
  return ValidationError(ValidationMessage({Constraint(field, TypeRule(type))}));
}

Error ValidationError(std::string message) {
  return Error::Make(ErrorCode::kValidation, std::move(message));
}

Error InvalidTokenError() { return Error::Make(ErrorCode::kInvalidToken, kInvalidTokenMessage); }

std::string ActivityDeletedCause(std::string_view arn) {
  std::string m = "The activity ";
  m.append(arn);
  m.append(" does not exist.");
  return m;
}

Error TaskGoneError() { return Error::Make(ErrorCode::kTaskTimedOut, kTaskGoneMessage); }

Error TaskDoesNotExistError() {
  return Error::Make(ErrorCode::kTaskDoesNotExist, kTaskDoesNotExistMessage);
}

Error InvalidNameError(std::string_view shown_name) {
  std::string m = "Invalid Name: '";
  m.append(shown_name);
  m.push_back('\'');
  return Error::Make(ErrorCode::kInvalidName, std::move(m));
}

Error InvalidArnError(std::string_view arn) {
  std::string m = "Invalid Arn: 'Invalid ARN prefix: ";
  m.append(arn);
  m.push_back('\'');
  return Error::Make(ErrorCode::kInvalidArn, std::move(m));
}

Error ActivityDoesNotExistError(std::string_view arn) {
  std::string m = "Activity Does Not Exist: '";
  m.append(arn);
  m.push_back('\'');
  return Error::Make(ErrorCode::kActivityDoesNotExist, std::move(m));
}

Error ActivityLimitExceededError(size_t activities_max) {
  return Error::Make(ErrorCode::kActivityLimitExceeded,
                     "Activity Limit Exceeded: 'The maximum number of activities (" +
                         std::to_string(activities_max) + ") has been reached'");
}

Error ActivityWorkerLimitExceededError(size_t pollers_max) {
  return Error::Make(ErrorCode::kActivityWorkerLimitExceeded,
                     "Activity Worker Limit Exceeded: 'The maximum number of concurrent "
                     "pollers (" +
                         std::to_string(pollers_max) + ") for this activity has been reached'");
}

Error InvalidPayloadError(std::string_view label, std::string_view problem) {
  std::string m = "Invalid ";
  m.append(label);
  m.append(": '");
  m.append(problem);
  m.push_back('\'');
  return Error::Make(ErrorCode::kInvalidOutput, std::move(m));
}

Error ThrottlingError(std::string_view reason) {
  std::string m = kThrottlingMessage;
  if (!reason.empty()) {
    m.append(": ");
    m.append(reason);
  }
  return Error::Make(ErrorCode::kOverloaded, std::move(m));
}

Error UnavailableError(std::string message) {
  return Error::Make(ErrorCode::kUnavailable, std::move(message));
}

Error StorageFailureError(std::string_view detail) {
  std::string m = "storage failure: ";
  m.append(detail);
  return UnavailableError(std::move(m));
}

Error StoppingError() { return UnavailableError("the engine is stopping"); }

Error ConsumerNameError() {
  return ValidationError("consumer name must be 1.." +
                         std::to_string(limits::kConsumerNameBytesMax) + " bytes");
}

Error TooManyConsumersError(size_t consumers_max) {
  return ValidationError("too many consumers (" + std::to_string(consumers_max) + ")");
}

Error PollIdWaitingError() { return ValidationError("poll id already waiting"); }

Error UnknownConsumerError(std::string_view name) {
  std::string m = "unknown consumer '";
  m.append(name);
  m.push_back('\'');
  return ValidationError(std::move(m));
}

Error AckBeyondLastEventError(uint64_t seq, uint64_t last_durable_seq) {
  return ValidationError("cannot acknowledge event " + std::to_string(seq) +
                         ": the last durable event is " + std::to_string(last_durable_seq));
}

Error EventsTrimmedError(uint64_t from, std::string_view resume_hint) {
  std::string m = "events from sequence " + std::to_string(from) + " are no longer kept; ";
  m.append(resume_hint);
  return ValidationError(std::move(m));
}

}  // namespace tw
