// The crash test's expected-state model: every task the workload issued, every call it made on
// it and what came back (applied, refused, or no answer because the server died), and the times
// that bound each of its deadlines. The checker compares what the server says after each
// restart against it and counts what can never be right:
//
//   acked_lost           an answered issue, completion or hand-out the server no longer has
//   double_transitions   two completions of one task both applied, or a terminal task that
//                        later reads differently
//   wrong_outcome        a terminal state or payload no call (or clock) can explain
//   timers_lost          a live task past its latest possible deadline (plus the slack below)
//   timers_early         a timeout that fired before its earliest possible deadline
//   events_missing       a terminal task with no outcome event, or a gap in a subscription
//   events_duplicated_with_new_seq   one task's outcome under two sequence numbers
//   events_out_of_order  a subscription delivering a sequence not after the previous one
//
// A call with no answer may have happened or not, but at most once: both are accepted.
// Thread-safe: the workload's threads record, the main thread checks while they are paused.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace tw::crashtest {

// A timeout fires within a tick of its deadline when the server keeps up; right after a restart
// (every overdue timer at once) and on this loaded 2-core machine it may take longer. A live task
// is counted as a lost timer only this long after its latest possible deadline.
inline constexpr int64_t kTimerSlackMs = 2000;

// What a call got back.
enum class Answer : uint8_t {
  kPending,    // sent, no answer yet
  kApplied,    // ok: this call made the transition
  kDuplicate,  // ok: an identical retry of the completion that won
  kRefused,    // TaskTimedOut: the task had ended (or a deadline had passed)
  kRejected,   // any other typed error: nothing happened
  kUnknown,    // no answer (the server died, overload, storage failure): maybe, at most once
};

enum class CompletionKind : uint8_t { kSuccess, kFailure, kCancel };

struct Completion {
  CompletionKind kind = CompletionKind::kSuccess;
  std::string payload;  // success: the output; failure: the error
  Answer answer = Answer::kPending;
  std::optional<TaskState> recorded_state;  // with kRefused, when the front end said
  int cycle = 0;                            // when it was sent
};

struct TaskModel {
  std::string key;  // the idempotency key, also in the input: {"key": ...}
  std::string token;
  std::string activity_arn;  // empty: a callback task
  uint32_t timeout_s = 0;
  uint32_t heartbeat_s = 0;
  uint32_t schedule_to_start_s = 0;
  Answer issue = Answer::kPending;
  bool abandoned = false;  // an unanswered issue that cannot be resolved (activity deleted)

  // Bounds, wall ms. earliest: no clock can have started before; latest: it started by then.
  int64_t issue_earliest_ms = 0;
  int64_t issue_latest_ms = 0;
  bool handed_out = false;  // a poll answered with it (it is STARTED, durably)
  int64_t start_earliest_ms = 0;
  int64_t start_latest_ms = 0;
  int64_t heartbeat_acked_sent_ms = 0;  // the latest answered heartbeat, when it was sent
  int64_t heartbeat_latest_ms = 0;      // the latest heartbeat that may have happened
  bool activity_delete_sent = false;

  std::vector<Completion> completions;

  // What the checker saw.
  bool final_seen = false;
  int final_cycle = 0;  // the cycle whose check first saw it terminal
  Outcome final_outcome;
  int64_t ended_ms = 0;
  bool event_checked = false;  // its event was looked for (and counted if missing)
  bool timer_lost_counted = false;
  bool reported = false;  // one problem report per task is enough to read
};

struct Counters {
  uint64_t acked_lost = 0;
  uint64_t double_transitions = 0;
  uint64_t wrong_outcome = 0;
  uint64_t timers_lost = 0;
  uint64_t timers_early = 0;
  uint64_t events_missing = 0;
  uint64_t events_duplicated_with_new_seq = 0;
  uint64_t events_out_of_order = 0;

  uint64_t Total() const;
  void Add(const Counters& o);
  nlohmann::json ToJson() const;
};

class Model {
 public:
  // ---- recorded by the workload ----
  // A new task about to be issued; the returned pointer stays valid for the model's life.
  TaskModel* NewTask(TaskModel t);
  // Under the lock, mutate a task.
  template <typename F>
  void Update(TaskModel* t, F&& f) {
    std::lock_guard<std::mutex> lock(mu_);
    f(*t);
    if (!t->token.empty()) by_token_[t->token] = t;
  }
  TaskModel* FindByToken(const std::string& token);
  TaskModel* FindByKey(const std::string& key);
  // Every task of an activity, for a deletion.
  std::vector<TaskModel*> TasksOf(const std::string& activity_arn);

  // A task handed to two polls.
  void CountDoubleHandOut(TaskModel& t);

  // ---- the cycle clock ----
  void SetSeed(uint64_t seed) { seed_ = seed; }
  void BeginCycle(int cycle) { cycle_ = cycle; }
  int cycle() const { return cycle_; }
  void RecordKill(int cycle, int64_t wall_ms);
  void RecordReady(int64_t spawn_wall_ms, int64_t ready_wall_ms);
  int64_t KillMs(int cycle) const;

  // ---- events, from the consumer thread ----
  // One event delivered to consumer 0 (Cap'n Proto) or 1 (the gateway); `subscription` numbers
  // that consumer's reading sessions (a new one after each reconnect, from its durable cursor).
  void RecordEvent(const OutcomeEvent& e, int consumer, uint64_t subscription);

  // ---- the checks (the workload paused) ----
  // Every task's description from the server, as of `now_ms`: answers what it found.
  using Describe = std::function<Result<TaskDescription>(const std::string& token)>;
  Counters Check(const Describe& describe, bool final_check);
  // Waits (bounded) for an event of every terminal task, then counts those without one.
  Counters CheckEvents(int64_t wait_ms);
  // Unanswered issues, to resolve by re-issuing with their key.
  std::vector<TaskModel*> UnresolvedIssues();

  Counters TakeEventCounters();
  uint64_t tasks() const;
  uint64_t events() const;
  int64_t LatestDeadlineMs(const TaskModel& t, TaskState state) const;

 private:
  struct SeenEvent {
    uint64_t seq = 0;
    Outcome outcome;
  };
  bool ShouldDescribe(const TaskModel& t, size_t index) const;
  void CheckTask(TaskModel& t, const Result<TaskDescription>& d, int64_t now_ms, Counters* c);
  void CheckTerminal(TaskModel& t, const TaskDescription& d, Counters* c);
  void CheckLive(TaskModel& t, const TaskDescription& d, int64_t now_ms, Counters* c);
  int64_t EarliestDeadlineMs(const TaskModel& t, TimeoutKind kind, int64_t ended_ms) const;
  void Report(TaskModel& t, const char* what, const std::string& detail);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<TaskModel>> tasks_;
  std::map<std::string, TaskModel*> by_token_;
  std::map<std::string, TaskModel*> by_key_;
  int cycle_ = 0;
  uint64_t seed_ = 0;
  std::map<int, int64_t> kill_ms_;
  std::vector<std::pair<int64_t, int64_t>> restarts_;  // (spawned, ready) wall ms
  std::map<std::string, SeenEvent> events_by_token_;
  Counters event_counters_;
  uint64_t events_ = 0;
  uint64_t last_subscription_[2] = {0, 0};
  uint64_t last_seq_[2] = {0, 0};
};

const char* CompletionKindName(CompletionKind k);

}  // namespace tw::crashtest
