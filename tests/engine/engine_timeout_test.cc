// tw-test-labels: threads
// tw-test-commit-modes: inline pipelined
//
// The engine's timeouts through its public API: heartbeat, overall and schedule-to-start clocks,
// when each starts, that none fires early or late, what the outcome says, and what a worker is
// told afterwards. Time moves only through the ManualClock, then Sync(); no test sleeps.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/limits.h"
#include "engine/token.h"
#include "engine/types.h"
#include "engine/validate.h"
#include "storage/memory_store.h"
#include "tests/engine/engine_test_harness.h"

namespace tw {

namespace {

using namespace engine_test;  // the shared harness: engine_test_harness.h

// A timed-out task's outcome event: TIMED_OUT, States.Timeout, no cause, and which clock fired.
void ExpectTimeoutEvent(const OutcomeEvent& e, const std::string& token, TimeoutKind kind,
                        int64_t time_ms) {
  EXPECT_EQ(e.token, token);
  EXPECT_EQ(e.state, TaskState::kTimedOut);
  EXPECT_EQ(e.timeout_kind, kind) << TimeoutKindName(e.timeout_kind);
  EXPECT_TRUE(e.has_error);
  EXPECT_EQ(e.error, "States.Timeout");
  EXPECT_FALSE(e.has_cause);
  EXPECT_EQ(e.cause, "");
  EXPECT_EQ(e.output, "");
  EXPECT_EQ(e.time_ms, time_ms);
}

// When a Sync is answered, the timeouts it fired are durable, so their events must be readable:
// checked inside the Sync's reply, on the engine thread, where it is deterministic.
TEST_F(EngineTest, SyncMakesTheEventsOfFiredTimeoutsReadable) {
  MustIssue({.timeout_s = 1});
  clock_.Advance(1'000);
  auto seen = std::make_shared<std::pair<uint64_t, size_t>>();
  Engine* engine = engine_.get();
  Result<Empty> r = Call<Empty>([&](Callback<Empty> done) {
    engine_->Sync([engine, seen, done](Result<Empty> res) {
      seen->first = engine->LastEventSeq();
      seen->second = engine->ReadEvents(1, 10).value.size();
      done(std::move(res));
    });
  });
  ASSERT_TRUE(IsOk(r));
  EXPECT_EQ(seen->first, 1u) << "LastEventSeq lags the Sync that fired the timeout";
  EXPECT_EQ(seen->second, 1u) << "ReadEvents misses the timeout event after its Sync";
}

// =============================================================================================
// Heartbeat and overall clocks of callback tasks

TEST_F(EngineTest, HeartbeatTimeoutFiresAtItsDeadlineNeverBefore) {
  const std::string token = MustIssue({.heartbeat_s = 10, .correlation = "hb"});
  AdvanceAndSync(9'999);
  EXPECT_EQ(StateOf(token), TaskState::kStarted) << "1 ms before the deadline";
  EXPECT_EQ(LastSeq(), 0u);

  AdvanceAndSync(1);
  Result<TaskDescription> d = Describe(token);
  ASSERT_TRUE(IsOk(d));
  EXPECT_EQ(d.value.state, TaskState::kTimedOut);
  EXPECT_EQ(d.value.timeout_kind, TimeoutKind::kHeartbeat);
  EXPECT_EQ(d.value.ended_ms, kT0 + 10'000) << "with a 1 ms tick, exactly at the deadline";
  EXPECT_TRUE(d.value.has_error);
  EXPECT_EQ(d.value.error, "States.Timeout");
  EXPECT_FALSE(d.value.has_cause);

  std::vector<OutcomeEvent> events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].seq, 1u);
  ExpectTimeoutEvent(events[0], token, TimeoutKind::kHeartbeat, kT0 + 10'000);
  EXPECT_EQ(events[0].correlation, "hb");
  EXPECT_EQ(events[0].activity_arn, "");
  EngineStats st = Stats();
  EXPECT_EQ(st.live_tasks, 0u);
  EXPECT_EQ(st.pending_timers, 0u);
}

TEST_F(EngineTest, CoarseTickFiresWithinOneTickNeverBefore) {
  options_.tick_ms = 50;
  ASSERT_NO_FATAL_FAILURE(Restart());
  clock_.Advance(7);  // a deadline that is not a multiple of the tick
  const std::string token = MustIssue({.heartbeat_s = 1});
  const int64_t deadline = kT0 + 7 + 1'000;
  ASSERT_EQ(Describe(token).value.heartbeat_deadline_ms, deadline);

  AdvanceAndSync(999);  // deadline - 1
  EXPECT_EQ(StateOf(token), TaskState::kStarted);
  AdvanceAndSync(50);  // deadline + 49: past the end of the deadline's tick
  Result<TaskDescription> d = Describe(token);
  EXPECT_EQ(d.value.state, TaskState::kTimedOut);
  EXPECT_EQ(d.value.timeout_kind, TimeoutKind::kHeartbeat);
  EXPECT_GE(d.value.ended_ms, deadline);
  EXPECT_LT(d.value.ended_ms, deadline + 50);
}

TEST_F(EngineTest, HeartbeatsKeepATaskAlivePastManyIntervals) {
  const std::string token = MustIssue({.heartbeat_s = 10});
  for (int i = 1; i <= 5; ++i) {
    AdvanceAndSync(9'000);
    ASSERT_EQ(StateOf(token), TaskState::kStarted) << "heartbeat " << i;
    ASSERT_TRUE(IsOk(Heartbeat(token)));
    EXPECT_EQ(Describe(token).value.heartbeat_deadline_ms, clock_.NowMs() + 10'000);
  }
  const int64_t last_heartbeat = clock_.NowMs();  // kT0 + 45 s: 4.5 intervals after issue
  EXPECT_EQ(LastSeq(), 0u) << "heartbeats make no outcome event";

  AdvanceAndSync(9'999);
  EXPECT_EQ(StateOf(token), TaskState::kStarted);
  AdvanceAndSync(1);
  Result<TaskDescription> d = Describe(token);
  EXPECT_EQ(d.value.state, TaskState::kTimedOut);
  EXPECT_EQ(d.value.timeout_kind, TimeoutKind::kHeartbeat);
  EXPECT_EQ(d.value.ended_ms, last_heartbeat + 10'000);
  ASSERT_EQ(Events().size(), 1u);
}

TEST_F(EngineTest, OverallTimeoutCapsATaskWhateverItsHeartbeats) {
  const std::string token = MustIssue({.timeout_s = 30, .heartbeat_s = 10, .correlation = "o"});
  for (int i = 0; i < 3; ++i) {
    AdvanceAndSync(8'000);
    ASSERT_TRUE(IsOk(Heartbeat(token)));
  }
  // At kT0 + 24 s the heartbeat clock runs to kT0 + 34 s; the overall clock ends at kT0 + 30 s.
  AdvanceAndSync(5'999);
  EXPECT_EQ(StateOf(token), TaskState::kStarted);
  AdvanceAndSync(1);
  Result<TaskDescription> d = Describe(token);
  EXPECT_EQ(d.value.state, TaskState::kTimedOut);
  EXPECT_EQ(d.value.timeout_kind, TimeoutKind::kOverall);
  EXPECT_EQ(d.value.ended_ms, kT0 + 30'000);
  std::vector<OutcomeEvent> events = Events();
  ASSERT_EQ(events.size(), 1u);
  ExpectTimeoutEvent(events[0], token, TimeoutKind::kOverall, kT0 + 30'000);
  EXPECT_EQ(events[0].correlation, "o");
}

TEST_F(EngineTest, OverallTimeoutWithoutHeartbeatClock) {
  const std::string token = MustIssue({.timeout_s = 5});
  AdvanceAndSync(4'999);
  EXPECT_EQ(StateOf(token), TaskState::kStarted);
  AdvanceAndSync(1);
  EXPECT_EQ(Describe(token).value.timeout_kind, TimeoutKind::kOverall);
}

TEST_F(EngineTest, TaskWithoutTimeoutsNeverTimesOut) {
  const std::string token = MustIssue({});
  AdvanceAndSync(400LL * 24 * 3600 * 1000);  // longer than the longest allowed timeout
  EXPECT_EQ(StateOf(token), TaskState::kStarted);
  EXPECT_EQ(Stats().pending_timers, 0u);
}

TEST_F(EngineTest, ManyTimeoutsFireInOneSync) {
  const std::string token_a = MustIssue({.heartbeat_s = 1});
  const std::string token_b = MustIssue({.timeout_s = 2});
  const std::string token_c = MustIssue({.timeout_s = 3, .heartbeat_s = 2});
  AdvanceAndSync(10'000);  // one big jump fires all three, in deadline order
  std::vector<OutcomeEvent> events = Events();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].token, token_a);
  EXPECT_EQ(events[0].timeout_kind, TimeoutKind::kHeartbeat);
  EXPECT_EQ(events[1].token, token_b);
  EXPECT_EQ(events[1].timeout_kind, TimeoutKind::kOverall);
  EXPECT_EQ(events[2].token, token_c);
  EXPECT_EQ(events[2].timeout_kind, TimeoutKind::kHeartbeat);
  EXPECT_EQ(Stats().live_tasks, 0u);
}

// =============================================================================================
// Activity tasks: clocks start at GetActivityTask; schedule-to-start bounds the queue

TEST_F(EngineTest, ActivityTaskClocksStartWhenAWorkerTakesIt) {
  const std::string arn = MustCreate("slow-queue");
  const std::string token = MustIssue({.activity_arn = arn, .timeout_s = 10, .heartbeat_s = 5});
  AdvanceAndSync(3'600'000);  // an hour in the queue: no clock runs yet
  EXPECT_EQ(StateOf(token), TaskState::kScheduled);
  EXPECT_EQ(LastSeq(), 0u);

  ASSERT_EQ(Take(arn, "w").token, token);
  const int64_t taken = kT0 + 3'600'000;
  Result<TaskDescription> d = Describe(token);
  EXPECT_EQ(d.value.started_ms, taken);
  EXPECT_EQ(d.value.heartbeat_deadline_ms, taken + 5'000);
  EXPECT_EQ(d.value.overall_deadline_ms, taken + 10'000);

  AdvanceAndSync(4'999);
  EXPECT_EQ(StateOf(token), TaskState::kStarted);
  AdvanceAndSync(1);
  d = Describe(token);
  EXPECT_EQ(d.value.state, TaskState::kTimedOut);
  EXPECT_EQ(d.value.timeout_kind, TimeoutKind::kHeartbeat);
  std::vector<OutcomeEvent> events = Events();
  ASSERT_EQ(events.size(), 1u);
  ExpectTimeoutEvent(events[0], token, TimeoutKind::kHeartbeat, taken + 5'000);
  EXPECT_EQ(events[0].activity_arn, arn);
}

TEST_F(EngineTest, ActivityTaskOverallTimeoutCountsFromTheTake) {
  const std::string arn = MustCreate("overall");
  const std::string token = MustIssue({.activity_arn = arn, .timeout_s = 20});
  AdvanceAndSync(15'000);
  ASSERT_EQ(Take(arn).token, token);
  AdvanceAndSync(19'999);  // kT0 + 35 s: 35 s after issue, 20 s - 1 ms after the take
  EXPECT_EQ(StateOf(token), TaskState::kStarted);
  AdvanceAndSync(1);
  EXPECT_EQ(Describe(token).value.timeout_kind, TimeoutKind::kOverall);
}

TEST_F(EngineTest, ScheduleToStartTimeoutEndsAQueuedTask) {
  const std::string arn = MustCreate("s2s");
  const std::string token =
      MustIssue({.activity_arn = arn, .schedule_to_start_s = 60, .correlation = "s"});
  AdvanceAndSync(59'999);
  EXPECT_EQ(StateOf(token), TaskState::kScheduled);
  EXPECT_EQ(Queued(arn), 1);
  AdvanceAndSync(1);
  Result<TaskDescription> d = Describe(token);
  EXPECT_EQ(d.value.state, TaskState::kTimedOut);
  EXPECT_EQ(d.value.timeout_kind, TimeoutKind::kScheduleToStart);
  EXPECT_EQ(Queued(arn), 0);
  std::vector<OutcomeEvent> events = Events();
  ASSERT_EQ(events.size(), 1u);
  ExpectTimeoutEvent(events[0], token, TimeoutKind::kScheduleToStart, kT0 + 60'000);
  EXPECT_EQ(events[0].activity_arn, arn);
  EXPECT_EQ(events[0].correlation, "s");

  Poll p = StartPoll(arn, "w");  // nothing left to take
  Sync();
  EXPECT_FALSE(p.reply.ready());
  engine_->WithdrawPoll(p.id);
  EXPECT_TRUE(p.reply.Get().value.token.empty());
}

TEST_F(EngineTest, ScheduleToStartStopsMatteringOnceTaken) {
  const std::string arn = MustCreate("s2s-taken");
  const std::string token = MustIssue({.activity_arn = arn, .schedule_to_start_s = 60});
  AdvanceAndSync(30'000);
  ASSERT_EQ(Take(arn).token, token);
  EXPECT_EQ(Describe(token).value.schedule_to_start_deadline_ms, 0);
  AdvanceAndSync(3'600'000);
  EXPECT_EQ(StateOf(token), TaskState::kStarted);
}

TEST_F(EngineTest, ReturnedTaskGetsAFreshScheduleToStartClock) {
  const std::string arn = MustCreate("s2s-return");
  const std::string token = MustIssue({.activity_arn = arn, .schedule_to_start_s = 60});
  AdvanceAndSync(50'000);
  ASSERT_EQ(Take(arn).token, token);
  engine_->ReturnTask(token);
  Sync();
  Result<TaskDescription> d = Describe(token);
  EXPECT_EQ(d.value.state, TaskState::kScheduled);
  EXPECT_EQ(d.value.schedule_to_start_deadline_ms, kT0 + 110'000);
  AdvanceAndSync(59'999);
  EXPECT_EQ(StateOf(token), TaskState::kScheduled);
  AdvanceAndSync(1);
  EXPECT_EQ(Describe(token).value.timeout_kind, TimeoutKind::kScheduleToStart);
}

TEST_F(EngineTest, TaskHandedOutAtIssueHasNoScheduleToStartClock) {
  const std::string arn = MustCreate("handed");
  Poll p = StartPoll(arn, "w");
  Sync();
  const std::string token = MustIssue({.activity_arn = arn, .schedule_to_start_s = 10});
  ASSERT_EQ(p.reply.Get().value.token, token);
  EXPECT_EQ(Describe(token).value.schedule_to_start_deadline_ms, 0);
  AdvanceAndSync(3'600'000);
  EXPECT_EQ(StateOf(token), TaskState::kStarted);
  EXPECT_EQ(Stats().pending_timers, 0u);
}

TEST_F(EngineTest, ReturnedTaskStopsItsStartedClocksUntilTakenAgain) {
  const std::string arn = MustCreate("return-clocks");
  const std::string token = MustIssue({.activity_arn = arn, .timeout_s = 5, .heartbeat_s = 2});
  ASSERT_EQ(Take(arn, "lost").token, token);
  engine_->ReturnTask(token);
  Sync();
  AdvanceAndSync(60'000);
  Result<TaskDescription> d = Describe(token);
  EXPECT_EQ(d.value.state, TaskState::kScheduled) << "no clock runs while queued again";
  EXPECT_EQ(d.value.heartbeat_deadline_ms, 0);
  EXPECT_EQ(d.value.overall_deadline_ms, 0);
  ASSERT_EQ(Take(arn, "w2").token, token);
  d = Describe(token);
  EXPECT_EQ(d.value.started_ms, kT0 + 60'000);
  EXPECT_EQ(d.value.heartbeat_deadline_ms, kT0 + 62'000);
  AdvanceAndSync(1'999);
  EXPECT_EQ(StateOf(token), TaskState::kStarted);
  AdvanceAndSync(1);
  EXPECT_EQ(Describe(token).value.timeout_kind, TimeoutKind::kHeartbeat);
}

// =============================================================================================
// After a timeout

TEST_F(EngineTest, CallsAfterAHeartbeatTimeoutAreRefusedAsTimedOut) {
  const std::string token = MustIssue({.heartbeat_s = 1});
  AdvanceAndSync(1'000);
  for (int i = 0; i < 2; ++i) {
    Result<CompletionReply> s = Success(token, "{}");
    EXPECT_TRUE(IsRefusal(s, Refusal::kTimedOut, TaskState::kTimedOut));
    EXPECT_EQ(s.error.timeout_kind, TimeoutKind::kHeartbeat);
    Result<CompletionReply> f = Failure(token, "e", "c");
    EXPECT_TRUE(IsRefusal(f, Refusal::kTimedOut, TaskState::kTimedOut));
    EXPECT_EQ(f.error.timeout_kind, TimeoutKind::kHeartbeat);
    Result<Empty> h = Heartbeat(token);
    EXPECT_TRUE(IsRefusal(h, Refusal::kTimedOut, TaskState::kTimedOut));
    EXPECT_EQ(h.error.timeout_kind, TimeoutKind::kHeartbeat);
    Result<CompletionReply> c = Cancel(token);
    EXPECT_TRUE(IsRefusal(c, Refusal::kTimedOut, TaskState::kTimedOut));
    EXPECT_EQ(c.error.timeout_kind, TimeoutKind::kHeartbeat);
  }
  EXPECT_EQ(Events().size(), 1u) << "refusals make no event";
}

TEST_F(EngineTest, CallsAfterOverallAndScheduleToStartTimeoutsSayWhichClock) {
  const std::string arn = MustCreate("kinds");
  const std::string overall = MustIssue({.timeout_s = 2});
  const std::string queued = MustIssue({.activity_arn = arn, .schedule_to_start_s = 2});
  AdvanceAndSync(2'000);

  Result<CompletionReply> o = Success(overall, "{}");
  EXPECT_TRUE(IsRefusal(o, Refusal::kTimedOut, TaskState::kTimedOut));
  EXPECT_EQ(o.error.timeout_kind, TimeoutKind::kOverall);
  EXPECT_EQ(o.error.message, "Task Timed Out: 'Provided task does not exist anymore'");

  Result<CompletionReply> q = Failure(queued, "e", std::nullopt);
  EXPECT_TRUE(IsRefusal(q, Refusal::kTimedOut, TaskState::kTimedOut));
  EXPECT_EQ(q.error.timeout_kind, TimeoutKind::kScheduleToStart);
}

// A completion or heartbeat that arrives once the clock is past the deadline must not win
// because the engine thread had not yet looked at its timers: the timeout was the first terminal
// transition. (No Sync between moving the clock and the call.)
TEST_F(EngineTest, SuccessAfterTheDeadlineIsRefusedEvenBeforeTheTimerRan) {
  const std::string token = MustIssue({.heartbeat_s = 10});
  Sync();
  clock_.Advance(10'000);
  Result<CompletionReply> r = Success(token, "{}");
  EXPECT_TRUE(IsRefusal(r, Refusal::kTimedOut, TaskState::kTimedOut));
  Sync();
  EXPECT_EQ(Describe(token).value.state, TaskState::kTimedOut);
}

TEST_F(EngineTest, PollAfterTheScheduleToStartDeadlineDoesNotGetTheTask) {
  const std::string arn = MustCreate("late-poll");
  const std::string token = MustIssue({.activity_arn = arn, .schedule_to_start_s = 10});
  Sync();
  clock_.Advance(10'000);
  Poll p = StartPoll(arn, "w");
  Sync();
  EXPECT_FALSE(p.reply.ready()) << "a task past its schedule-to-start deadline was handed out";
  engine_->WithdrawPoll(p.id);
  EXPECT_TRUE(IsOk(p.reply.Get()));
  Result<TaskDescription> d = Describe(token);
  EXPECT_EQ(d.value.state, TaskState::kTimedOut);
  EXPECT_EQ(d.value.timeout_kind, TimeoutKind::kScheduleToStart);
}

TEST_F(EngineTest, LateHeartbeatDoesNotReviveATimedOutTask) {
  const std::string token = MustIssue({.heartbeat_s = 10});
  Sync();
  clock_.Advance(10'500);
  Result<Empty> r = Heartbeat(token);
  EXPECT_TRUE(IsRefusal(r, Refusal::kTimedOut, TaskState::kTimedOut));
  Sync();
  Result<TaskDescription> d = Describe(token);
  EXPECT_EQ(d.value.state, TaskState::kTimedOut);
  EXPECT_EQ(d.value.ended_ms, kT0 + 10'500);
}

// Sync promises that every timer due by now has fired. More expiries than one batch handles
// (limits::kExpiriesPerBatchMax) must not let Sync answer early.
TEST_F(EngineTest, SyncWaitsForEveryDueTimerBeyondOneBatchBudget) {
  const size_t n = limits::kExpiriesPerBatchMax + 64;
  auto answered = std::make_shared<std::atomic<size_t>>(0);
  auto failed = std::make_shared<std::atomic<size_t>>(0);
  Reply<IssueTaskReply> last;
  for (size_t i = 0; i < n; ++i) {
    if (i + 1 == n) {
      engine_->IssueTask({.timeout_s = 1}, last.cb());
    } else {
      engine_->IssueTask({.timeout_s = 1}, [answered, failed](Result<IssueTaskReply> r) {
        answered->fetch_add(1);
        if (!r.ok()) failed->fetch_add(1);
      });
    }
  }
  ASSERT_TRUE(IsOk(last.Get()));
  ASSERT_EQ(failed->load(), 0u);
  ASSERT_EQ(Stats().live_tasks, n);

  clock_.Advance(1'000);
  // Hold the engine thread inside the Sync reply, and queue GetStats meanwhile: it is then the
  // next command the engine applies after answering the Sync.
  Reply<EngineStats> stats;
  {
    EngineBlocker block(engine_.get());
    engine_->GetStats(stats.cb());
  }
  Result<EngineStats> st = stats.Get();
  ASSERT_TRUE(IsOk(st));
  EXPECT_EQ(st.value.live_tasks, 0u) << "Sync answered with due timers still unfired";
  Sync();
  EXPECT_EQ(Stats().live_tasks, 0u);
  EXPECT_EQ(LastSeq(), n);
}

}  // namespace
}  // namespace tw
