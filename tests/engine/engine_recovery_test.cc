// tw-test-labels: threads
// tw-test-commit-modes: inline pipelined
//
// The engine across a restart (Stop, then Open on the same data), on the in-memory store and on
// the RocksDB store: live tasks, queue order, clocks, idempotency keys, consumers and event
// sequence numbers all carry over. Time moves only through the ManualClock; no test sleeps.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
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
#include "storage/rocksdb_store.h"
#include "tests/engine/engine_test_harness.h"

namespace tw {

namespace {

using namespace engine_test;  // the shared harness: engine_test_harness.h

enum class StoreKind { kMemory, kRocks };
void PrintTo(StoreKind k, std::ostream* os) {
  *os << (k == StoreKind::kMemory ? "Memory" : "Rocks");
}

class EngineRecoveryTest : public EngineTest, public ::testing::WithParamInterface<StoreKind> {
 protected:
  std::unique_ptr<Store> MakeStore() override {
    if (GetParam() == StoreKind::kMemory) return EngineTest::MakeStore();
    std::unique_ptr<Store> store;
    RocksStoreOptions o;
    o.path = dir_ + "/db";
    Status s = OpenRocksStore(o, &store);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return store;
  }

  // Stops the engine, sets the clock to `now_ms` (a restart takes time), and opens it again.
  void RestartAt(int64_t now_ms) {
    engine_->Stop();
    engine_.reset();
    memory_store_ = nullptr;
    clock_.Set(now_ms);
    ASSERT_NO_FATAL_FAILURE(Open());
  }
};

INSTANTIATE_TEST_SUITE_P(Stores, EngineRecoveryTest,
                         ::testing::Values(StoreKind::kMemory, StoreKind::kRocks),
                         [](const ::testing::TestParamInfo<StoreKind>& info) {
                           return info.param == StoreKind::kMemory ? "Memory" : "Rocks";
                         });

TEST_P(EngineRecoveryTest, LiveTasksQueueOrderKeysAndEventsSurviveARestart) {
  const std::string arn = MustCreate("recover");
  const std::string done = MustIssue({});
  ASSERT_TRUE(IsOk(Success(done, "1")));
  const std::string started = MustIssue({.activity_arn = arn, .input = R"({"n":0})"});
  const std::string q1 = MustIssue({.activity_arn = arn, .input = R"({"n":1})"});
  const std::string q2 = MustIssue({.activity_arn = arn, .input = R"({"n":2})"});
  AdvanceAndSync(1'000);
  ASSERT_EQ(Take(arn, "w1").token, started);
  const std::string cb =
      MustIssue({.input = R"({"cb":1})", .correlation = "corr", .idempotency_key = "idem"});

  ASSERT_NO_FATAL_FAILURE(RestartAt(kT0 + 5'000));
  EXPECT_EQ(engine_->RecoveredTasks(), 4u);
  EXPECT_EQ(LastSeq(), 1u);
  EngineStats st = Stats();
  EXPECT_EQ(st.live_tasks, 4u);
  EXPECT_EQ(st.last_event_seq, 1u);
  EXPECT_EQ(Queued(arn), 2);

  Result<ActivityInfo> a = DescribeActivity(arn);
  ASSERT_TRUE(IsOk(a));
  EXPECT_EQ(a.value.creation_ms, kT0);
  Result<ActivityInfo> again = CreateActivity("recover");
  ASSERT_TRUE(IsOk(again));
  EXPECT_EQ(again.value.creation_ms, kT0) << "still idempotent by name after a restart";

  Result<TaskDescription> d = Describe(started);
  ASSERT_TRUE(IsOk(d));
  EXPECT_EQ(d.value.state, TaskState::kStarted);
  EXPECT_EQ(d.value.worker, "w1");
  EXPECT_EQ(d.value.started_ms, kT0 + 1'000);
  EXPECT_EQ(StateOf(q1), TaskState::kScheduled);
  d = Describe(cb);
  ASSERT_TRUE(IsOk(d));
  EXPECT_EQ(d.value.state, TaskState::kStarted);
  EXPECT_EQ(d.value.input, R"({"cb":1})");
  EXPECT_EQ(d.value.correlation, "corr");
  EXPECT_EQ(StateOf(done), TaskState::kSucceeded);
  EXPECT_TRUE(Success(done, "1").value.duplicate) << "the recorded outcome survives";

  Result<IssueTaskReply> reissue = Issue({.idempotency_key = "idem"});
  ASSERT_TRUE(IsOk(reissue));
  EXPECT_TRUE(reissue.value.existing);
  EXPECT_EQ(reissue.value.token, cb);

  // FIFO order holds across the restart, and new tasks queue behind the recovered ones.
  const std::string q3 = MustIssue({.activity_arn = arn, .input = R"({"n":3})"});
  GetActivityTaskReply t1 = Take(arn, "w2");
  EXPECT_EQ(t1.token, q1);
  EXPECT_EQ(t1.input, R"({"n":1})");
  EXPECT_EQ(Take(arn, "w3").token, q2);
  EXPECT_EQ(Take(arn, "w4").token, q3);

  // Event seqs continue gapless; the outcome event still carries the correlation.
  ASSERT_TRUE(IsOk(Success(started, "2")));
  ASSERT_TRUE(IsOk(Cancel(cb)));
  std::vector<OutcomeEvent> events = Events();
  ASSERT_EQ(events.size(), 3u);
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq, i + 1);
  EXPECT_EQ(events[0].token, done);
  EXPECT_EQ(events[1].token, started);
  EXPECT_EQ(events[1].activity_arn, arn);
  EXPECT_EQ(events[2].token, cb);
  EXPECT_EQ(events[2].correlation, "corr");
}

TEST_P(EngineRecoveryTest, HeartbeatClockRestartsFromTheRestartAndOverdueOverallFiresAtOnce) {
  const std::string hb = MustIssue({.heartbeat_s = 30});  // stored deadline kT0 + 30 s
  const std::string overall = MustIssue({.timeout_s = 20, .correlation = "late"});
  AdvanceAndSync(10'000);
  ASSERT_TRUE(IsOk(Heartbeat(hb)));  // kT0 + 40 s in memory; heartbeats are not persisted

  ASSERT_NO_FATAL_FAILURE(RestartAt(kT0 + 25'000));
  EXPECT_EQ(engine_->RecoveredTasks(), 2u);
  Sync();
  Result<TaskDescription> o = Describe(overall);
  ASSERT_TRUE(IsOk(o));
  EXPECT_EQ(o.value.state, TaskState::kTimedOut) << "overdue at restart: fires at the first Sync";
  EXPECT_EQ(o.value.timeout_kind, TimeoutKind::kOverall);
  std::vector<OutcomeEvent> events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].seq, 1u);
  EXPECT_EQ(events[0].token, overall);
  EXPECT_EQ(events[0].error, "States.Timeout");
  EXPECT_EQ(events[0].correlation, "late");

  // max(stored kT0 + 30 s, restart kT0 + 25 s + 30 s): a worker that was on time keeps its turn.
  Result<TaskDescription> h = Describe(hb);
  ASSERT_TRUE(IsOk(h));
  EXPECT_EQ(h.value.state, TaskState::kStarted);
  EXPECT_EQ(h.value.heartbeat_deadline_ms, kT0 + 55'000);
  AdvanceAndSync(29'999);
  EXPECT_EQ(StateOf(hb), TaskState::kStarted);
  AdvanceAndSync(1);
  h = Describe(hb);
  EXPECT_EQ(h.value.state, TaskState::kTimedOut);
  EXPECT_EQ(h.value.timeout_kind, TimeoutKind::kHeartbeat);
  events = Events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].seq, 2u);
}

TEST_P(EngineRecoveryTest, StoredHeartbeatDeadlineWinsWhenLater) {
  const std::string arn = MustCreate("hb");
  const std::string token = MustIssue({.activity_arn = arn, .heartbeat_s = 60});
  AdvanceAndSync(10'000);
  ASSERT_EQ(Take(arn).token, token);  // started kT0 + 10 s: stored deadline kT0 + 70 s
  ASSERT_NO_FATAL_FAILURE(RestartAt(kT0 + 10'500));
  // max(kT0 + 70 s, kT0 + 10.5 s + 60 s) = kT0 + 70.5 s
  EXPECT_EQ(Describe(token).value.heartbeat_deadline_ms, kT0 + 70'500);
  AdvanceAndSync(59'999);
  EXPECT_EQ(StateOf(token), TaskState::kStarted);
  AdvanceAndSync(1);
  EXPECT_EQ(Describe(token).value.timeout_kind, TimeoutKind::kHeartbeat);
}

TEST_P(EngineRecoveryTest, ScheduleToStartDeadlinesSurviveARestart) {
  const std::string arn = MustCreate("s2s");
  const std::string soon = MustIssue({.activity_arn = arn, .schedule_to_start_s = 10});
  const std::string later = MustIssue({.activity_arn = arn, .schedule_to_start_s = 60});
  ASSERT_NO_FATAL_FAILURE(RestartAt(kT0 + 30'000));
  Sync();
  Result<TaskDescription> s = Describe(soon);
  EXPECT_EQ(s.value.state, TaskState::kTimedOut) << "overdue at restart";
  EXPECT_EQ(s.value.timeout_kind, TimeoutKind::kScheduleToStart);
  Result<TaskDescription> l = Describe(later);
  EXPECT_EQ(l.value.state, TaskState::kScheduled);
  EXPECT_EQ(l.value.schedule_to_start_deadline_ms, kT0 + 60'000) << "not restarted at recovery";
  AdvanceAndSync(29'999);
  EXPECT_EQ(StateOf(later), TaskState::kScheduled);
  AdvanceAndSync(1);
  EXPECT_EQ(Describe(later).value.timeout_kind, TimeoutKind::kScheduleToStart);
}

// A recovered task that is taken and then returned gets a fresh schedule-to-start clock, as one
// that was never recovered does (engine_timeout_test: ReturnedTaskGetsAFreshScheduleToStartClock).
TEST_P(EngineRecoveryTest, RecoveredTaskThatIsReturnedKeepsItsScheduleToStartClock) {
  const std::string arn = MustCreate("s2s-return");
  const std::string token = MustIssue({.activity_arn = arn, .schedule_to_start_s = 60});
  ASSERT_NO_FATAL_FAILURE(RestartAt(kT0 + 10'000));
  ASSERT_EQ(Take(arn).token, token);
  engine_->ReturnTask(token);
  Sync();
  Result<TaskDescription> d = Describe(token);
  EXPECT_EQ(d.value.state, TaskState::kScheduled);
  EXPECT_EQ(d.value.schedule_to_start_deadline_ms, kT0 + 70'000);
  AdvanceAndSync(60'000);
  d = Describe(token);
  EXPECT_EQ(d.value.state, TaskState::kTimedOut);
  EXPECT_EQ(d.value.timeout_kind, TimeoutKind::kScheduleToStart);
}

TEST_P(EngineRecoveryTest, StartedTaskOfADeletedActivityRunsOnAfterARestart) {
  const std::string arn = MustCreate("deleted");
  const std::string token = MustIssue({.activity_arn = arn, .timeout_s = 100});
  ASSERT_EQ(Take(arn, "w").token, token);
  ASSERT_TRUE(IsOk(DeleteActivity(arn)));
  ASSERT_NO_FATAL_FAILURE(RestartAt(kT0 + 1'000));
  EXPECT_TRUE(IsError(DescribeActivity(arn), ErrorCode::kActivityDoesNotExist));
  Result<ListActivitiesReply> list = List(0);
  ASSERT_TRUE(IsOk(list));
  EXPECT_TRUE(list.value.activities.empty());
  EXPECT_EQ(StateOf(token), TaskState::kStarted);
  EXPECT_TRUE(IsOk(Heartbeat(token)));
  ASSERT_TRUE(IsOk(Success(token, "{}")));
  std::vector<OutcomeEvent> events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].state, TaskState::kSucceeded);

  Result<ActivityInfo> recreated = CreateActivity("deleted");
  ASSERT_TRUE(IsOk(recreated));
  EXPECT_EQ(recreated.value.creation_ms, kT0 + 1'000);
}

TEST_P(EngineRecoveryTest, ConsumersAndTrimSurviveARestart) {
  ASSERT_TRUE(IsOk(Register("a")));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(IsOk(Success(MustIssue({}), std::to_string(i))));
  ASSERT_TRUE(IsOk(Ack("a", 2)));
  ASSERT_NO_FATAL_FAILURE(RestartAt(kT0));
  EngineStats st = Stats();
  ASSERT_EQ(st.consumers.size(), 1u);
  EXPECT_EQ(st.consumers[0].name, "a");
  EXPECT_EQ(st.consumers[0].acked_seq, 2u);
  EXPECT_EQ(st.events_not_acked, 1u);
  Result<ConsumerInfo> a = Register("a");
  ASSERT_TRUE(IsOk(a));
  EXPECT_EQ(a.value.acked_seq, 2u);
  std::vector<OutcomeEvent> events = Events(3);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].output, "2");
  EXPECT_TRUE(IsError(Ack("a", 4), ErrorCode::kValidation));
  ASSERT_TRUE(IsOk(Success(MustIssue({}), "3")));
  EXPECT_EQ(Events(4).at(0).seq, 4u);
}

// Engine::Checkpoint: an online backup holds what was acknowledged before it and nothing after,
// opens as a data directory of its own, and refuses what it must. The in-memory store writes
// none: the call fails with a clear error.
TEST_P(EngineRecoveryTest, CheckpointHoldsWhatWasAcknowledgedAndOpensAsADataDirectory) {
  auto checkpoint = [&](const std::string& name) {
    return Call<std::string>([&](auto cb) { engine_->Checkpoint(name, std::move(cb)); });
  };
  EXPECT_TRUE(IsError(checkpoint("off"), ErrorCode::kValidation));  // no backup_dir
  options_.backup_dir = dir_ + "/backups";
  ASSERT_TRUE(std::filesystem::create_directory(options_.backup_dir));
  ASSERT_NO_FATAL_FAILURE(RestartAt(kT0));

  const std::string arn = MustCreate("kept");
  const std::string live = MustIssue({.input = R"({"k":1})"});
  const std::string done = MustIssue({});
  ASSERT_TRUE(IsOk(Success(done, R"("ok")")));
  const std::string queued = MustIssue({.activity_arn = arn});
  Result<std::string> cp = checkpoint("first");
  if (GetParam() == StoreKind::kMemory) {
    EXPECT_TRUE(IsError(cp, ErrorCode::kUnavailable));
    return;
  }
  ASSERT_TRUE(IsOk(cp));
  EXPECT_EQ(cp.value, options_.backup_dir + "/first");
  const std::string after = MustIssue({});
  ASSERT_TRUE(IsOk(Success(live, R"("later")")));

  EXPECT_TRUE(IsError(checkpoint("first"), ErrorCode::kValidation));  // exists
  const std::vector<std::string> bad_names = {
      "",    ".hidden", "../up",
      "a/b", "sp ace",  std::string(limits::kCheckpointNameCharsMax + 1, 'n')};
  for (const std::string& bad : bad_names) {
    EXPECT_TRUE(IsError(checkpoint(bad), ErrorCode::kValidation)) << bad;
    if (!bad.empty()) {
      EXPECT_FALSE(std::filesystem::exists(options_.backup_dir + "/" + bad)) << bad;
    }
  }
  EXPECT_TRUE(IsOk(checkpoint(std::string(limits::kCheckpointNameCharsMax, 'n'))));

  // The checkpoint as a data directory: the state at the call, the same token key.
  engine_->Stop();
  engine_.reset();
  EngineOptions restored = options_;
  restored.token_key_file = cp.value + "/token.key";
  restored.backup_dir.clear();
  std::unique_ptr<Store> store;
  RocksStoreOptions o;
  o.path = cp.value + "/db";
  ASSERT_TRUE(OpenRocksStore(o, &store).ok());
  Result<std::unique_ptr<Engine>> r = Engine::Open(restored, std::move(store), &clock_);
  ASSERT_TRUE(IsOk(r));
  engine_ = std::move(r.value);
  EXPECT_EQ(StateOf(live), TaskState::kStarted) << "its success came after the checkpoint";
  EXPECT_EQ(StateOf(done), TaskState::kSucceeded);
  EXPECT_EQ(Queued(arn), 1);
  EXPECT_EQ(Take(arn, "w").token, queued);
  EXPECT_TRUE(IsError(Describe(after), ErrorCode::kTaskDoesNotExist))
      << "issued after the checkpoint: a well-formed token of a task the copy never saw";
}

}  // namespace
}  // namespace tw
