// tw-test-labels: threads
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

namespace tw {

// Readable gtest output for the engine's enums (found by ADL, so in namespace tw).
static void PrintTo(TaskState s, std::ostream* os) { *os << TaskStateName(s); }
static void PrintTo(TimeoutKind k, std::ostream* os) { *os << '"' << TimeoutKindName(k) << '"'; }

namespace {

// ---- Test harness (kept identical in engine_timeout_test.cc and engine_recovery_test.cc) ----

// Requests are written with designated initializers, naming only the fields a test sets; GCC
// warns about the fields left to their defaults, which is the point.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

constexpr int64_t kT0 = 1'700'000'000'000;  // ManualClock's default start
constexpr auto kReplyTimeout = std::chrono::seconds(30);
constexpr char kArnPrefix[] = "arn:aws:states:us-east-1:000000000000:activity:";

[[maybe_unused]] std::string Arn(const std::string& name) { return kArnPrefix + name; }

// One reply, handed from the engine thread to the test thread.
template <typename T>
class Reply {
 public:
  Reply()
      : promise_(std::make_shared<std::promise<Result<T>>>()), future_(promise_->get_future()) {}
  Callback<T> cb() const {
    return [p = promise_](Result<T> r) { p->set_value(std::move(r)); };
  }
  // Whether the engine answered yet. Exact after a Sync: earlier batches' replies run first.
  bool ready() const {
    return future_.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  }
  // Waits for the reply (not a sleep: a hang guard only).
  Result<T> Get() {
    if (future_.wait_for(kReplyTimeout) != std::future_status::ready) {
      ADD_FAILURE() << "no reply within " << kReplyTimeout.count() << " s";
      return Result<T>::Fail(Error::Make(ErrorCode::kInternal, "test: no reply"));
    }
    return future_.get();
  }

 private:
  std::shared_ptr<std::promise<Result<T>>> promise_;
  std::future<Result<T>> future_;
};

template <typename T>
::testing::AssertionResult IsOk(const Result<T>& r) {
  if (r.ok()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected ok, got " << ErrorCodeName(r.error.code) << ": " << r.error.message;
}

template <typename T>
::testing::AssertionResult IsError(const Result<T>& r, ErrorCode code,
                                   std::optional<std::string> message = std::nullopt) {
  if (r.error.code != code) {
    return ::testing::AssertionFailure()
           << "expected " << ErrorCodeName(code) << ", got "
           << (r.ok() ? "ok" : ErrorCodeName(r.error.code)) << " (" << r.error.message << ")";
  }
  if (message && r.error.message != *message) {
    return ::testing::AssertionFailure() << ErrorCodeName(code) << " message: expected \""
                                         << *message << "\", got \"" << r.error.message << "\"";
  }
  return ::testing::AssertionSuccess();
}

// The answer to a call on a task that already ended: TaskTimedOut with the AWS text and the
// native reason.
template <typename T>
::testing::AssertionResult IsRefusal(const Result<T>& r, Refusal why, TaskState recorded) {
  ::testing::AssertionResult a = IsError(r, ErrorCode::kTaskTimedOut, kTaskGoneMessage);
  if (!a) return a;
  if (r.error.refusal != why) {
    return ::testing::AssertionFailure()
           << "refusal: expected " << RefusalName(why) << ", got " << RefusalName(r.error.refusal);
  }
  if (r.error.recorded_state != recorded) {
    return ::testing::AssertionFailure() << "recorded_state: expected " << TaskStateName(recorded)
                                         << ", got " << TaskStateName(r.error.recorded_state);
  }
  return ::testing::AssertionSuccess();
}

// Holds the engine thread inside a reply callback until Release(), so that commands enqueued
// meanwhile stay queued and then form one batch. `on_engine_thread` runs first, on the engine
// thread (e.g. to arm a store fault).
class EngineBlocker {
 public:
  explicit EngineBlocker(Engine* engine, std::function<void()> on_engine_thread = nullptr)
      : state_(std::make_shared<State>()) {
    state_->released = state_->release.get_future().share();
    engine->Sync([s = state_, fn = std::move(on_engine_thread)](Result<Empty> r) {
      if (r.ok() && fn) fn();
      s->entered.set_value();
      if (r.ok()) s->released.wait();  // a refused Sync runs on the caller's thread: never block
    });
    state_->entered.get_future().wait();
  }
  ~EngineBlocker() { Release(); }
  void Release() {
    if (released_) return;
    released_ = true;
    state_->release.set_value();
  }

 private:
  struct State {
    std::promise<void> entered;
    std::promise<void> release;
    std::shared_future<void> released;
  };
  std::shared_ptr<State> state_;
  bool released_ = false;
};

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tw-engine-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
    options_.token_key_file = dir_ + "/token.key";
    ASSERT_NO_FATAL_FAILURE(Open());
  }

  void TearDown() override {
    engine_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  virtual std::unique_ptr<Store> MakeStore() {
    auto store = std::make_unique<MemoryStore>(disk_);
    memory_store_ = store.get();
    return store;
  }

  void Open() {
    Result<std::unique_ptr<Engine>> r = Engine::Open(options_, MakeStore(), &clock_);
    ASSERT_TRUE(IsOk(r));
    engine_ = std::move(r.value);
  }

  // Stops the engine and opens a new one on the same data and key file with options_.
  void Restart() {
    engine_->Stop();
    engine_.reset();
    memory_store_ = nullptr;
    ASSERT_NO_FATAL_FAILURE(Open());
  }

  template <typename T, typename Start>
  static Result<T> Call(Start&& start) {
    Reply<T> reply;
    start(reply.cb());
    return reply.Get();
  }

  Result<ActivityInfo> CreateActivity(const std::string& name) {
    return Call<ActivityInfo>([&](auto cb) { engine_->CreateActivity({name}, std::move(cb)); });
  }
  std::string MustCreate(const std::string& name) {
    Result<ActivityInfo> r = CreateActivity(name);
    EXPECT_TRUE(IsOk(r)) << name;
    return r.value.arn;
  }
  Result<Empty> DeleteActivity(const std::string& arn) {
    return Call<Empty>([&](auto cb) { engine_->DeleteActivity({arn}, std::move(cb)); });
  }
  Result<ActivityInfo> DescribeActivity(const std::string& arn) {
    return Call<ActivityInfo>([&](auto cb) { engine_->DescribeActivity({arn}, std::move(cb)); });
  }
  Result<ListActivitiesReply> List(uint32_t max_results, const std::string& next_token = "") {
    return Call<ListActivitiesReply>([&](auto cb) {
      engine_->ListActivities({max_results, next_token}, std::move(cb));
    });
  }

  Result<IssueTaskReply> Issue(IssueTaskRequest req) {
    return Call<IssueTaskReply>(
        [&](auto cb) { engine_->IssueTask(std::move(req), std::move(cb)); });
  }
  std::string MustIssue(IssueTaskRequest req) {
    Result<IssueTaskReply> r = Issue(std::move(req));
    EXPECT_TRUE(IsOk(r));
    EXPECT_FALSE(r.value.existing);
    EXPECT_EQ(r.value.token.size(), TokenCodec::kTokenChars);
    return r.value.token;
  }

  Result<CompletionReply> Success(const std::string& token, std::optional<std::string> output) {
    return Call<CompletionReply>([&](auto cb) {
      engine_->SendTaskSuccess({token, std::move(output)}, std::move(cb));
    });
  }
  Result<CompletionReply> Failure(const std::string& token, std::optional<std::string> error,
                                  std::optional<std::string> cause) {
    return Call<CompletionReply>([&](auto cb) {
      engine_->SendTaskFailure({token, std::move(error), std::move(cause)}, std::move(cb));
    });
  }
  Result<Empty> Heartbeat(const std::string& token) {
    return Call<Empty>([&](auto cb) { engine_->SendTaskHeartbeat({token}, std::move(cb)); });
  }
  Result<CompletionReply> Cancel(const std::string& token) {
    return Call<CompletionReply>([&](auto cb) { engine_->CancelTask({token}, std::move(cb)); });
  }
  Result<TaskDescription> Describe(const std::string& token) {
    return Call<TaskDescription>([&](auto cb) { engine_->DescribeTask({token}, std::move(cb)); });
  }
  TaskState StateOf(const std::string& token) {
    Result<TaskDescription> r = Describe(token);
    EXPECT_TRUE(IsOk(r));
    return r.value.state;
  }

  struct Poll {
    uint64_t id = 0;
    Reply<GetActivityTaskReply> reply;
  };
  Poll StartPoll(const std::string& arn, const std::string& worker = "") {
    Poll p;
    p.id = next_poll_id_++;
    engine_->GetActivityTask({arn, worker}, p.id, p.reply.cb());
    return p;
  }
  // A poll that must get a task at once (checked after a Sync; withdrawn if it did not).
  GetActivityTaskReply Take(const std::string& arn, const std::string& worker = "worker") {
    Poll p = StartPoll(arn, worker);
    Sync();
    if (!p.reply.ready()) {
      ADD_FAILURE() << "no task for " << arn;
      engine_->WithdrawPoll(p.id);
    }
    Result<GetActivityTaskReply> r = p.reply.Get();
    EXPECT_TRUE(IsOk(r));
    EXPECT_FALSE(r.value.token.empty());
    return r.value;
  }

  Result<ConsumerInfo> Register(const std::string& name) {
    return Call<ConsumerInfo>([&](auto cb) { engine_->RegisterConsumer(name, std::move(cb)); });
  }
  Result<Empty> Ack(const std::string& name, uint64_t seq) {
    return Call<Empty>([&](auto cb) { engine_->AckEvents(name, seq, std::move(cb)); });
  }
  // ReadEvents and LastEventSeq after a Sync. The Sync is a workaround: the engine publishes a
  // batch's last event seq only after running the batch's replies, so right after a reply (or a
  // Sync that fired timers) the event may not be readable yet. ReplyIsSentOnlyWhenItsEventIs-
  // Readable (engine_test.cc) and SyncMakesTheEventsOfFiredTimeoutsReadable
  // (engine_timeout_test.cc) pin that bug; once fixed, these Syncs can go.
  std::vector<OutcomeEvent> Events(uint64_t from_seq = 1, size_t max = 4096) {
    Sync();
    Result<std::vector<OutcomeEvent>> r = engine_->ReadEvents(from_seq, max);
    EXPECT_TRUE(IsOk(r));
    return r.value;
  }
  uint64_t LastSeq() {
    Sync();
    return engine_->LastEventSeq();
  }

  EngineStats Stats() {
    Result<EngineStats> r = Call<EngineStats>([&](auto cb) { engine_->GetStats(std::move(cb)); });
    EXPECT_TRUE(IsOk(r));
    return r.value;
  }
  // SCHEDULED tasks of `arn` per GetStats; -1 when the activity is not listed.
  int64_t Queued(const std::string& arn) {
    for (auto& [a, n] : Stats().queued_per_activity) {
      if (a == arn) return static_cast<int64_t>(n);
    }
    return -1;
  }

  void Sync() {
    EXPECT_TRUE(IsOk(Call<Empty>([&](auto cb) { engine_->Sync(std::move(cb)); })));
  }
  void AdvanceAndSync(int64_t ms) {
    clock_.Advance(ms);
    Sync();
  }

  std::string dir_;
  ManualClock clock_{kT0};
  EngineOptions options_;
  std::shared_ptr<MemoryDisk> disk_ = std::make_shared<MemoryDisk>();
  MemoryStore* memory_store_ = nullptr;  // owned by engine_
  std::unique_ptr<Engine> engine_;
  uint64_t next_poll_id_ = 1;
};

// ---- end of the shared harness ----

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

}  // namespace
}  // namespace tw
