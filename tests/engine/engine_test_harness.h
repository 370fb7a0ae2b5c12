// The harness the engine API tests share (engine_test.cc, engine_timeout_test.cc,
// engine_recovery_test.cc): an Engine over a MemoryStore and a ManualClock, blocking helpers
// for replies, and EngineBlocker, which holds the engine's writer inside a reply.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <set>
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

namespace tw {

// Readable gtest output for the engine's enums (found by ADL, so in namespace tw).
inline void PrintTo(TaskState s, std::ostream* os) { *os << TaskStateName(s); }
inline void PrintTo(TimeoutKind k, std::ostream* os) { *os << '"' << TimeoutKindName(k) << '"'; }

namespace engine_test {

// Requests are written with designated initializers, naming only the fields a test sets; GCC
// warns about the fields left to their defaults, which is the point.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

constexpr int64_t kT0 = 1'700'000'000'000;  // ManualClock's default start
constexpr auto kReplyTimeout = std::chrono::seconds(30);
constexpr char kArnPrefix[] = "arn:aws:states:us-east-1:000000000000:activity:";

inline std::string Arn(const std::string& name) { return kArnPrefix + name; }

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
    // CMake registers these suites twice, once per EngineOptions::commit (tests/CMakeLists.txt).
    if (commit_from_env_) options_.commit = CommitModeFromEnv();
    ASSERT_NO_FATAL_FAILURE(Open());
  }

  // TW_TEST_COMMIT=inline (adaptive, pipelined) runs a suite with that CommitMode; unset,
  // with the default.
  static CommitMode CommitModeFromEnv() {
    CommitMode mode = EngineOptions().commit;
    const char* name = std::getenv("TW_TEST_COMMIT");
    if (name != nullptr && !ParseCommitMode(name, &mode)) {
      ADD_FAILURE() << "TW_TEST_COMMIT names no commit mode: " << name;
    }
    return mode;
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
    for (const ActivityCounts& a : Stats().per_activity) {
      if (a.arn == arn) return static_cast<int64_t>(a.queued);
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
  // Prefetch hints on from the first live task (by default from 64k), so that every test that
  // gets several task commands into one batch runs them, and the sanitizers check them.
  EngineOptions options_ = [] {
    EngineOptions o;
    o.prefetch_min_live_tasks = 0;
    return o;
  }();
  // Whether SetUp takes options_.commit from TW_TEST_COMMIT; a fixture that tests one mode
  // clears it and sets options_.commit itself.
  bool commit_from_env_ = true;
  std::shared_ptr<MemoryDisk> disk_ = std::make_shared<MemoryDisk>();
  MemoryStore* memory_store_ = nullptr;  // owned by engine_
  std::unique_ptr<Engine> engine_;
  uint64_t next_poll_id_ = 1;
};

}  // namespace engine_test
}  // namespace tw
