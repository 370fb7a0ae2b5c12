// The crash test's checker (tools/crashtest/model.h) against made-up server answers: each count
// fires on the problem it names, and the answers that are right under the semantics (an
// unanswered call that happened, a refused retry, a heartbeat period restarted by a restart)
// count nothing.
#include "tools/crashtest/model.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "tools/crashtest/server_process.h"

namespace tw::crashtest {
namespace {

class ModelTest : public ::testing::Test {
 protected:
  // A callback task issued (and answered) at `issued_ms`.
  TaskModel* Callback(const std::string& token, int64_t issued_ms, uint32_t timeout_s = 0,
                      uint32_t heartbeat_s = 0) {
    TaskModel m;
    m.key = "key-" + token;
    m.timeout_s = timeout_s;
    m.heartbeat_s = heartbeat_s;
    m.issue_earliest_ms = issued_ms;
    TaskModel* t = model_.NewTask(m);
    model_.Update(t, [&](TaskModel& x) {
      x.token = token;
      x.issue = Answer::kApplied;
      x.issue_latest_ms = issued_ms;
    });
    return t;
  }
  void Complete(TaskModel* t, CompletionKind kind, const std::string& payload, Answer answer) {
    model_.Update(t, [&](TaskModel& x) {
      x.completions.push_back(crashtest::Completion{kind, payload, answer, std::nullopt, 1});
    });
  }
  static TaskDescription Ended(TaskState state, const std::string& payload, int64_t ended_ms,
                               TimeoutKind kind = TimeoutKind::kNone) {
    TaskDescription d;
    d.state = state;
    d.timeout_kind = kind;
    if (state == TaskState::kSucceeded) d.output = payload;
    if (state == TaskState::kFailed) {
      d.has_error = true;
      d.error = payload;
    }
    d.ended_ms = ended_ms;
    return d;
  }
  static OutcomeEvent Event(uint64_t seq, const std::string& token, const Outcome& o) {
    OutcomeEvent e;
    static_cast<Outcome&>(e) = o;
    e.seq = seq;
    e.token = token;
    return e;
  }
  Counters Check() {
    return model_.Check(
        [&](const std::string& token) {
          auto it = server_.find(token);
          if (it == server_.end()) {
            return Result<TaskDescription>::Fail(
                Error::Make(ErrorCode::kTaskDoesNotExist, "Task Does Not Exist"));
          }
          return Result<TaskDescription>::Ok(it->second);
        },
        /*final_check=*/true);
  }

  Model model_;
  std::map<std::string, TaskDescription> server_;  // what the made-up server answers
  const int64_t now_ = WallMs();
};

TEST_F(ModelTest, WhatTheCallsExplainCountsNothing) {
  TaskModel* a = Callback("a", now_ - 5000);
  Complete(a, CompletionKind::kSuccess, "{\"x\":1}", Answer::kApplied);
  Complete(a, CompletionKind::kFailure, "E", Answer::kRefused);  // lost the race
  server_["a"] = Ended(TaskState::kSucceeded, "{\"x\":1}", now_ - 4000);
  // An unanswered failure that happened.
  TaskModel* b = Callback("b", now_ - 5000);
  Complete(b, CompletionKind::kFailure, "E2", Answer::kUnknown);
  server_["b"] = Ended(TaskState::kFailed, "E2", now_ - 4000);
  // An unanswered cancel that did not happen: the task is live, and no clock is due.
  TaskModel* c = Callback("c", now_ - 5000);
  Complete(c, CompletionKind::kCancel, "", Answer::kUnknown);
  server_["c"] = Ended(TaskState::kStarted, "", 0);
  EXPECT_EQ(Check().Total(), 0u);
}

TEST_F(ModelTest, AnAnsweredCompletionThatIsGoneIsAckedLost) {
  TaskModel* a = Callback("a", now_ - 5000);
  Complete(a, CompletionKind::kSuccess, "{}", Answer::kApplied);
  server_["a"] = Ended(TaskState::kStarted, "", 0);
  Callback("gone", now_ - 5000);  // the server no longer knows it
  const Counters c = Check();
  EXPECT_EQ(c.acked_lost, 2u);
  EXPECT_EQ(c.Total(), 2u);
}

TEST_F(ModelTest, TwoAppliedCompletionsAreADoubleTransition) {
  TaskModel* a = Callback("a", now_ - 5000);
  Complete(a, CompletionKind::kSuccess, "{}", Answer::kApplied);
  Complete(a, CompletionKind::kFailure, "E", Answer::kApplied);
  server_["a"] = Ended(TaskState::kSucceeded, "{}", now_ - 4000);
  EXPECT_EQ(Check().double_transitions, 1u);
}

TEST_F(ModelTest, ATerminalTaskThatChangesIsADoubleTransition) {
  TaskModel* a = Callback("a", now_ - 5000);
  Complete(a, CompletionKind::kSuccess, "{}", Answer::kUnknown);
  Complete(a, CompletionKind::kFailure, "E", Answer::kUnknown);
  server_["a"] = Ended(TaskState::kSucceeded, "{}", now_ - 4000);
  EXPECT_EQ(Check().Total(), 0u);
  server_["a"] = Ended(TaskState::kFailed, "E", now_ - 3000);
  EXPECT_EQ(Check().double_transitions, 1u);
}

TEST_F(ModelTest, AnOutcomeNoCallExplainsIsWrong) {
  TaskModel* a = Callback("a", now_ - 5000);
  Complete(a, CompletionKind::kSuccess, "{\"mine\":1}", Answer::kUnknown);
  server_["a"] = Ended(TaskState::kSucceeded, "{\"other\":1}", now_ - 4000);
  Callback("b", now_ - 5000);
  server_["b"] = Ended(TaskState::kCancelled, "", now_ - 4000);
  EXPECT_EQ(Check().wrong_outcome, 2u);
}

TEST_F(ModelTest, ATimeoutBeforeItsEarliestDeadlineIsEarly) {
  Callback("early", now_ - 5000, /*timeout_s=*/3);
  server_["early"] = Ended(TaskState::kTimedOut, "", now_ - 2500, TimeoutKind::kOverall);
  Callback("on-time", now_ - 5000, /*timeout_s=*/3);
  server_["on-time"] = Ended(TaskState::kTimedOut, "", now_ - 2000, TimeoutKind::kOverall);
  const Counters c = Check();
  EXPECT_EQ(c.timers_early, 1u);
  EXPECT_EQ(c.Total(), 1u);
}

TEST_F(ModelTest, ARestartGivesAFullHeartbeatPeriod) {
  // Heartbeat 2 s from the issue at -10 s; a restart spawned at -9 s, ready at -8.9 s. A
  // heartbeat timeout before -7 s would be early; one after is right.
  model_.RecordReady(now_ - 9000, now_ - 8900);
  Callback("early", now_ - 10'000, 0, /*heartbeat_s=*/2);
  server_["early"] = Ended(TaskState::kTimedOut, "", now_ - 7500, TimeoutKind::kHeartbeat);
  Callback("right", now_ - 10'000, 0, /*heartbeat_s=*/2);
  server_["right"] = Ended(TaskState::kTimedOut, "", now_ - 6900, TimeoutKind::kHeartbeat);
  const Counters c = Check();
  EXPECT_EQ(c.timers_early, 1u);
  EXPECT_EQ(c.Total(), 1u);
}

TEST_F(ModelTest, ALiveTaskPastItsDeadlineAndTheSlackIsATimerLost) {
  Callback("lost", now_ - 10'000, /*timeout_s=*/1);
  server_["lost"] = Ended(TaskState::kStarted, "", 0);
  Callback("not-yet", now_ - 1000 - kTimerSlackMs / 2, /*timeout_s=*/1);
  server_["not-yet"] = Ended(TaskState::kStarted, "", 0);
  const Counters c = Check();
  EXPECT_EQ(c.timers_lost, 1u);
  EXPECT_EQ(c.Total(), 1u);
}

TEST_F(ModelTest, EventChecks) {
  const Outcome done = Ended(TaskState::kSucceeded, "{}", now_);
  TaskModel* a = Callback("a", now_ - 5000);
  Complete(a, CompletionKind::kSuccess, "{}", Answer::kApplied);
  server_["a"] = Ended(TaskState::kSucceeded, "{}", now_ - 4000);
  Callback("b", now_ - 5000, /*timeout_s=*/1);  // ends with no event
  server_["b"] = Ended(TaskState::kTimedOut, "", now_ - 4000, TimeoutKind::kOverall);
  model_.RecordEvent(Event(1, "a", done), 0, 1);
  model_.RecordEvent(Event(3, "x", done), 0, 1);  // 2 skipped
  model_.RecordEvent(Event(2, "y", done), 0, 1);  // back in one session
  model_.RecordEvent(Event(1, "a", done), 0, 2);  // a new session repeats: fine
  model_.RecordEvent(Event(7, "a", done), 1, 1);  // the same task under a new sequence
  Counters c = Check();
  c.Add(model_.CheckEvents(/*wait_ms=*/0));
  c.Add(model_.TakeEventCounters());
  EXPECT_EQ(c.events_missing, 2u);  // the gap, and task b
  EXPECT_EQ(c.events_out_of_order, 1u);
  EXPECT_EQ(c.events_duplicated_with_new_seq, 1u);
  EXPECT_EQ(c.Total(), 4u);
}

}  // namespace
}  // namespace tw::crashtest
