// tw-test-labels: threads
// tw-test-commit-modes: inline pipelined
//
// Storage failures (engine/engine.h, "Storage failures"): a failed write closes the door, every
// call is refused at once with kUnavailable while Health() and GetStats() say why, and with
// EngineOptions::reopen_store the engine reopens the store and rebuilds its state from the disk
// by itself. The faults here come from MemoryStore; tests/storage/storage_failure_test.cc runs
// the same through RocksDB on a fault-injecting file system (ENOSPC and EIO).
//
// Time moves only through the ManualClock. The reopen is due after storage_retry_ms of that
// clock; the engine thread notices it within its idle wait, so the tests wait (bounded) for
// Health() to change, never for real time to pass.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "tests/engine/engine_test_harness.h"

namespace tw::engine_test {
namespace {

constexpr int64_t kRetryMs = 500;
constexpr auto kHealthWait = std::chrono::seconds(30);  // a hang guard, not a delay

class StorageFailureTest : public EngineTest {
 protected:
  void SetUp() override {
    options_.storage_retry_ms = kRetryMs;
    if (with_reopen_) {
      options_.reopen_store = [this](std::unique_ptr<Store>* out) -> Status {
        ++reopens_;
        if (reopen_failures_left_.load() > 0) {
          --reopen_failures_left_;
          return Status::IoError("test: the disk is still full");
        }
        auto store = std::make_unique<MemoryStore>(disk_);
        memory_store_ = store.get();
        *out = std::move(store);
        return Status::Ok();
      };
    }
    EngineTest::SetUp();
  }

  // The next write of the store fails (armed on the engine thread, like the write).
  void FailNextWrite() {
    MemoryStore* store = memory_store_;
    EngineBlocker block(engine_.get(), [store] { store->FailNextWrite(); });
  }

  // A batch that fails: an issue, refused with kUnavailable.
  void CauseFailure() {
    FailNextWrite();
    Result<IssueTaskReply> r = Issue({.idempotency_key = "lost"});
    ASSERT_TRUE(IsError(r, ErrorCode::kUnavailable));
    EXPECT_NE(r.error.message.find("storage failure"), std::string::npos) << r.error.message;
  }

  // Waits (bounded) until `done()` holds: the engine thread acts on its own after a reopen.
  template <typename Pred>
  static bool WaitUntil(Pred done) {
    const auto deadline = std::chrono::steady_clock::now() + kHealthWait;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
  }

  // Waits (bounded) until Health().ok is `ok`.
  bool WaitForHealth(bool ok) {
    return WaitUntil([&] { return engine_->Health().ok == ok; });
  }

  // Moves the clock to the next reopen and waits (bounded) until the engine has tried it.
  void AdvanceToReopen() {
    const int before = reopens_.load();
    clock_.Advance(kRetryMs);
    const auto deadline = std::chrono::steady_clock::now() + kHealthWait;
    while (reopens_.load() == before && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    ASSERT_GT(reopens_.load(), before) << "no reopen";
  }

  // Moves the clock to the next reopen and waits for the engine to be healthy again.
  void Recover() {
    clock_.Advance(kRetryMs);
    ASSERT_TRUE(WaitForHealth(true)) << engine_->Health().error;
  }

  bool with_reopen_ = true;
  std::atomic<int> reopens_{0};
  std::atomic<int> reopen_failures_left_{0};
};

TEST_F(StorageFailureTest, AFailedWriteRefusesEveryCallAtOnceAndSaysWhy) {
  const std::string arn = MustCreate("kept");
  const std::string token = MustIssue({});
  ASSERT_NO_FATAL_FAILURE(CauseFailure());

  const StorageHealth health = engine_->Health();
  EXPECT_FALSE(health.ok);
  EXPECT_NE(health.error.find("injected"), std::string::npos) << health.error;
  EXPECT_EQ(health.failed_since_ms, clock_.NowMs());
  EXPECT_EQ(health.failures, 1u);

  // Refused on the caller's thread, before any queue: the reply is there when the call returns.
  Reply<CompletionReply> success;
  engine_->SendTaskSuccess({token, "{}"}, success.cb());
  EXPECT_TRUE(success.ready());
  EXPECT_TRUE(IsError(success.Get(), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(Describe(token), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(StartPoll(arn).reply.Get(), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(Call<Empty>([&](auto cb) { engine_->Sync(std::move(cb)); }),
                      ErrorCode::kUnavailable));

  // Stats are answered, with the failure.
  const EngineStats stats = Stats();
  EXPECT_FALSE(stats.storage.ok);
  EXPECT_EQ(stats.storage.error, health.error);
  EXPECT_GE(stats.live_tasks, 1u) << "as of memory, which may be ahead of the disk";
}

TEST_F(StorageFailureTest, TheEngineRecoversFromTheDiskByItself) {
  const std::string done = MustIssue({});
  ASSERT_TRUE(IsOk(Success(done, R"({"kept":true})")));
  const std::string live = MustIssue({.heartbeat_s = 60});
  ASSERT_NO_FATAL_FAILURE(CauseFailure());
  EXPECT_EQ(reopens_.load(), 0) << "no reopen before storage_retry_ms";

  ASSERT_NO_FATAL_FAILURE(Recover());
  const StorageHealth health = engine_->Health();
  EXPECT_TRUE(health.error.empty());
  EXPECT_EQ(health.failures, 1u);
  EXPECT_EQ(health.recoveries, 1u);
  EXPECT_EQ(reopens_.load(), 1);
  EXPECT_EQ(engine_->RecoveredTasks(), 1u);

  // What was acknowledged is there; what failed is not (MemoryStore drops a failed write).
  EXPECT_EQ(StateOf(done), TaskState::kSucceeded);
  EXPECT_EQ(StateOf(live), TaskState::kStarted);
  Result<IssueTaskReply> again = Issue({.idempotency_key = "lost"});
  ASSERT_TRUE(IsOk(again));
  EXPECT_FALSE(again.value.existing) << "the failed issue never happened";
  EXPECT_TRUE(IsOk(Success(live, "{}")));
  EXPECT_EQ(Stats().live_tasks, 1u);
  EXPECT_EQ(Events().size(), 2u);
  EXPECT_TRUE(Stats().storage.ok);
}

TEST_F(StorageFailureTest, AWaitingPollIsAnsweredBeforeTheStateIsRebuilt) {
  const std::string arn = MustCreate("queue");
  Poll poll = StartPoll(arn, "w");
  Sync();
  ASSERT_FALSE(poll.reply.ready());
  ASSERT_NO_FATAL_FAILURE(CauseFailure());
  ASSERT_NO_FATAL_FAILURE(Recover());
  ASSERT_TRUE(poll.reply.ready()) << "answered when the old state was torn down";
  Result<GetActivityTaskReply> r = poll.reply.Get();
  EXPECT_TRUE(r.ok() ? r.value.token.empty() : r.error.code == ErrorCode::kUnavailable);
  EXPECT_EQ(Stats().waiting_polls, 0u);
  // The activity came back from the disk; a new poll works.
  const std::string token = MustIssue({.activity_arn = arn});
  EXPECT_EQ(Take(arn).token, token);
}

TEST_F(StorageFailureTest, AReopenThatFailsIsRetried) {
  const std::string token = MustIssue({});
  ASSERT_TRUE(IsOk(Success(token, "{}")));
  const uint64_t last_seq = LastSeq();
  ASSERT_NO_FATAL_FAILURE(CauseFailure());
  reopen_failures_left_ = 2;

  ASSERT_NO_FATAL_FAILURE(AdvanceToReopen());  // the first reopen fails: the store stays closed
  ASSERT_EQ(reopens_.load(), 1);
  // Without a store: refused, and still answered for stats and the event cursor.
  EXPECT_TRUE(IsError(Describe(token), ErrorCode::kUnavailable));
  EngineStats stats = Stats();
  EXPECT_FALSE(stats.storage.ok);
  EXPECT_NE(stats.storage.error.find("reopening the store failed"), std::string::npos)
      << stats.storage.error;
  EXPECT_EQ(stats.last_event_seq, last_seq);
  EXPECT_EQ(engine_->LastEventSeq(), last_seq);
  EXPECT_TRUE(IsError(engine_->ReadEvents(1, 10), ErrorCode::kUnavailable));

  ASSERT_NO_FATAL_FAILURE(AdvanceToReopen());  // the second fails too
  EXPECT_FALSE(engine_->Health().ok);
  ASSERT_NO_FATAL_FAILURE(AdvanceToReopen());  // the third works
  ASSERT_TRUE(WaitForHealth(true));
  EXPECT_EQ(reopens_.load(), 3);
  EXPECT_EQ(StateOf(token), TaskState::kSucceeded);
  EXPECT_EQ(Events().size(), 1u);
}

TEST_F(StorageFailureTest, SubscribersAreToldAfterTheReopen) {
  // A listener lives as long as the engine, which outlives this body (TearDown stops it): the
  // counters are shared with the listener, not borrowed from this frame.
  struct Notices {
    std::atomic<int> count{0};
    std::atomic<uint64_t> last{0};
  };
  auto notices = std::make_shared<Notices>();
  engine_->AddEventListener([notices](uint64_t seq) {
    ++notices->count;
    notices->last = seq;
  });
  const std::string token = MustIssue({});
  ASSERT_TRUE(IsOk(Success(token, "{}")));
  const int before = notices->count.load();
  ASSERT_NO_FATAL_FAILURE(CauseFailure());
  ASSERT_NO_FATAL_FAILURE(Recover());
  // Health turns good just before the listeners hear of the reopen.
  EXPECT_TRUE(WaitUntil([&] { return notices->count.load() > before; }))
      << "a subscriber re-reads from its cursor after a reopen";
  EXPECT_EQ(notices->last.load(), 1u);
}

TEST_F(StorageFailureTest, StopReturnsWhileTheStoreIsClosed) {
  ASSERT_NO_FATAL_FAILURE(CauseFailure());
  reopen_failures_left_ = 1'000'000;
  ASSERT_NO_FATAL_FAILURE(AdvanceToReopen());
  engine_->Stop();  // returns: the test would hang otherwise
  EXPECT_TRUE(IsError(Issue({}), ErrorCode::kUnavailable));
}

class StorageFailureWithoutReopenTest : public StorageFailureTest {
 protected:
  void SetUp() override {
    with_reopen_ = false;
    StorageFailureTest::SetUp();
  }
};

TEST_F(StorageFailureWithoutReopenTest, TheEngineStaysDownUntilARestart) {
  const std::string token = MustIssue({});
  ASSERT_NO_FATAL_FAILURE(CauseFailure());
  clock_.Advance(100 * kRetryMs);
  EXPECT_TRUE(IsError(Describe(token), ErrorCode::kUnavailable));
  EXPECT_FALSE(Stats().storage.ok);
  EXPECT_FALSE(engine_->Health().ok);
  ASSERT_NO_FATAL_FAILURE(Restart());
  EXPECT_TRUE(engine_->Health().ok);
  EXPECT_EQ(StateOf(token), TaskState::kStarted);
}

}  // namespace
}  // namespace tw::engine_test
