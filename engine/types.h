// Vocabulary shared by the core, the store and the front ends.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

namespace tw {

// A 128-bit task id: hi grows with issue time, lo is random (engine/token.h,
// TaskIdGenerator). Compared and hashed as two words; ids of earlier releases are all random.
struct TaskId {
  uint64_t hi = 0;
  uint64_t lo = 0;
  friend bool operator==(const TaskId&, const TaskId&) = default;
  friend auto operator<=>(const TaskId&, const TaskId&) = default;
  bool IsZero() const { return hi == 0 && lo == 0; }
};

struct TaskIdHash {
  size_t operator()(const TaskId& id) const {
    // lo is uniformly random, and so are the low bits of lo * an odd constant: the table masks
    // low bits. hi (mostly a counter) only reshuffles them.
    return static_cast<size_t>(id.hi ^ (id.lo * 0x9E3779B97F4A7C15ull));
  }
};

enum class TaskState : uint8_t {
  kScheduled = 1,  // activity task waiting in its activity's queue
  kStarted = 2,    // taken by a worker, or a callback task (born started)
  kSucceeded = 3,
  kFailed = 4,
  kTimedOut = 5,
  kCancelled = 6,
};
inline bool IsTerminal(TaskState s) { return s >= TaskState::kSucceeded; }
const char* TaskStateName(TaskState s);  // "SCHEDULED", "STARTED", ...

// Which clock ended a task (Better than AWS: the outcome says which one fired).
enum class TimeoutKind : uint8_t { kNone = 0, kHeartbeat = 1, kOverall = 2, kScheduleToStart = 3 };
const char* TimeoutKindName(TimeoutKind k);  // "", "heartbeat", "overall", "scheduleToStart"

// How a task stands: its state and, once terminal, how it ended. The one value type behind the
// end record, the stream's event, the outcome a client reads and a task's description, which
// all derive from it (a state record before the end carries only `state`).
struct Outcome {
  TaskState state = TaskState::kScheduled;
  TimeoutKind timeout_kind = TimeoutKind::kNone;  // kTimedOut: the clock that ran out
  std::string output;                             // SUCCEEDED
  bool has_error = false;
  bool has_cause = false;
  std::string error;  // FAILED, or States.Timeout / States.Runtime (docs/SEMANTICS.md)
  std::string cause;

  Outcome& outcome() { return *this; }
  const Outcome& outcome() const { return *this; }
  // Same state and payload: a completion retried with these is a duplicate of the one that
  // won, not a second transition.
  bool SameResult(const Outcome& o) const {
    return state == o.state && output == o.output && has_error == o.has_error && error == o.error &&
           has_cause == o.has_cause && cause == o.cause;
  }
};

enum class ErrorCode : uint8_t {
  kOk = 0,
  kValidation,                   // ValidationException
  kInvalidToken,                 // InvalidToken
  kTaskDoesNotExist,             // TaskDoesNotExist
  kTaskTimedOut,                 // TaskTimedOut (also: completed / cancelled, see Refusal)
  kInvalidOutput,                // InvalidOutput
  kInvalidName,                  // InvalidName
  kInvalidArn,                   // InvalidArn
  kActivityDoesNotExist,         // ActivityDoesNotExist
  kActivityLimitExceeded,        // ActivityLimitExceeded
  kActivityWorkerLimitExceeded,  // ActivityWorkerLimitExceeded
  kOverloaded,                   // command queue full (AWS: ThrottlingException)
  kUnavailable,                  // engine stopping, or poisoned by a storage failure
  kInternal,
};
// The AWS error code string ("ValidationException", "InvalidToken", ..., "ThrottlingException").
// Defined with the rest of the AWS vocabulary in engine/errors.cc.
const char* ErrorCodeName(ErrorCode c);

// Why a call on a finished task was refused. AWS reports all of these as TaskTimedOut; the
// native API says which.
enum class Refusal : uint8_t { kNone = 0, kAlreadyCompleted, kTimedOut, kCancelled };
const char* RefusalName(Refusal r);  // "", "alreadyCompleted", "timedOut", "cancelled"

// What the finished task of a Refusal::kAlreadyCompleted recorded.
struct RecordedEnd {
  std::string output;  // SUCCEEDED
  std::string error;   // FAILED
  std::string cause;   // FAILED
};

// An expected, typed failure of an operation. Business outcomes are values, not exceptions.
struct Error {
  ErrorCode code = ErrorCode::kOk;
  std::string message;  // the exact AWS text where SEMANTICS.md records one
  // Set when code == kTaskTimedOut because the task is already terminal:
  Refusal refusal = Refusal::kNone;
  TaskState recorded_state = TaskState::kScheduled;  // the terminal state it ended in
  TimeoutKind timeout_kind = TimeoutKind::kNone;     // with Refusal::kTimedOut
  // With kAlreadyCompleted. Behind a shared, immutable pointer: every Result carries an Error,
  // and answers are moved several times on their way out, so an Error stays small.
  std::shared_ptr<const RecordedEnd> recorded;
  // Set by clients (rpc/client.h) when no answer came: the connection dropped, or the server
  // threw (overload, a bug). Unset: the server answered with this error.
  bool transport = false;

  bool ok() const { return code == ErrorCode::kOk; }
  // The fields of `recorded`, or "" without it.
  const std::string& recorded_output() const;
  const std::string& recorded_error() const;
  const std::string& recorded_cause() const;
  static Error Make(ErrorCode c, std::string msg) {
    Error e;
    e.code = c;
    e.message = std::move(msg);
    return e;
  }
};

// A value or an Error. [[nodiscard]], like Status: a dropped result is a dropped error.
template <typename T>
struct [[nodiscard]] Result {
  Error error;
  T value{};

  bool ok() const { return error.ok(); }
  static Result Ok(T v) {
    Result r;
    r.value = std::move(v);
    return r;
  }
  static Result Fail(Error e) {
    Result r;
    r.error = std::move(e);
    return r;
  }
};

struct Empty {};

}  // namespace tw
