#include "engine/types.h"

#include "engine/status.h"

namespace tw {

const char* TaskStateName(TaskState s) {
  switch (s) {
    case TaskState::kScheduled:
      return "SCHEDULED";
    case TaskState::kStarted:
      return "STARTED";
    case TaskState::kSucceeded:
      return "SUCCEEDED";
    case TaskState::kFailed:
      return "FAILED";
    case TaskState::kTimedOut:
      return "TIMED_OUT";
    case TaskState::kCancelled:
      return "CANCELLED";
  }
  return "UNKNOWN";
}

const char* TimeoutKindName(TimeoutKind k) {
  switch (k) {
    case TimeoutKind::kNone:
      return "";
    case TimeoutKind::kHeartbeat:
      return "heartbeat";
    case TimeoutKind::kOverall:
      return "overall";
    case TimeoutKind::kScheduleToStart:
      return "scheduleToStart";
  }
  return "";
}

const char* RefusalName(Refusal r) {
  switch (r) {
    case Refusal::kNone:
      return "";
    case Refusal::kAlreadyCompleted:
      return "alreadyCompleted";
    case Refusal::kTimedOut:
      return "timedOut";
    case Refusal::kCancelled:
      return "cancelled";
  }
  return "";
}

std::string Status::ToString() const {
  const char* name = "OK";
  switch (code_) {
    case Code::kOk:
      name = "OK";
      break;
    case Code::kNotFound:
      name = "NotFound";
      break;
    case Code::kCorruption:
      name = "Corruption";
      break;
    case Code::kIoError:
      name = "IOError";
      break;
    case Code::kInvalidArgument:
      name = "InvalidArgument";
      break;
    case Code::kPoisoned:
      name = "Poisoned";
      break;
  }
  return message_.empty() ? std::string(name) : std::string(name) + ": " + message_;
}

namespace {
const std::string& EmptyString() {
  static const std::string* const empty = new std::string();
  return *empty;
}
}  // namespace

const std::string& Error::recorded_output() const {
  return recorded ? recorded->output : EmptyString();
}
const std::string& Error::recorded_error() const {
  return recorded ? recorded->error : EmptyString();
}
const std::string& Error::recorded_cause() const {
  return recorded ? recorded->cause : EmptyString();
}

}  // namespace tw
