// tw-test-labels: threads
//
// Storage failures on RocksDB (engine/engine.h, "Storage failures"): the engine, over a
// RocksStore on a FaultFs, gets a full disk (ENOSPC: IOStatus::NoSpace) or an I/O error (EIO)
// at every append and every sync of a short workload in turn: WAL writes, and the flushes of
// side column families that side_flush_every_bytes = 1 starts after every write (SST, blob and
// MANIFEST writes in RocksDB's background threads). Each case checks that
//   1. the process does not abort, and the failing call and every call after it are refused
//      with kUnavailable, while Health() and GetStats() name the failure;
//   2. once the file system works again, the engine reopens the store by itself (no restart)
//      and every acknowledged transition is there, none twice; a call that was refused may
//      have happened or not, but at most once;
//   3. the recovered engine works, and a restart after it finds the same.
// Time comes from a ManualClock; the waits are bounded polls of Health(), never sleeps for time
// to pass.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/types.h"
#include "storage/fault_fs.h"
#include "storage/rocksdb_store.h"
#include "storage/rocksdb_store_testing.h"
#include "tests/storage/store_test_util.h"

namespace tw {
namespace {

constexpr int64_t kStartMs = 1'700'000'000'000;
constexpr int64_t kRetryMs = 500;
constexpr int kTasks = 6;                         // issues per case; every other one succeeded
constexpr uint64_t kPointsMax = 400;              // more appends or syncs than the workload makes
constexpr auto kWait = std::chrono::seconds(60);  // a hang guard for replies and recovery
// Probes (2 ms apart) for a failure RocksDB's background work met to reach the engine.
constexpr int kProbesMax = 500;
constexpr int kFirstProbe = kTasks + 100;  // task indices of the probes

// On tmpfs when there is one: FaultFs decides what fails, and the real disk's fsyncs would only
// cost run time.
std::unique_ptr<testing_util::TempDir> NewDir() {
  return std::make_unique<testing_util::TempDir>("tw-storage-failure", TempDir::FastBase());
}

template <typename T>
Result<T> Await(const std::function<void(Callback<T>)>& start) {
  auto promise = std::make_shared<std::promise<Result<T>>>();
  std::future<Result<T>> future = promise->get_future();
  start([promise](Result<T> r) { promise->set_value(std::move(r)); });
  if (future.wait_for(kWait) != std::future_status::ready) {
    ADD_FAILURE() << "no reply";
    return Result<T>::Fail(Error::Make(ErrorCode::kInternal, "test: no reply"));
  }
  return future.get();
}

enum class Point { kAppend, kSync };

struct Case {
  Point point;
  FaultFs::Injected kind;
  uint64_t ok_before;
};

std::string Name(const Case& c) {
  return std::string(c.point == Point::kAppend ? "append" : "sync") + " #" +
         std::to_string(c.ok_before) + (c.kind == FaultFs::Injected::kNoSpace ? " ENOSPC" : " EIO");
}

// What the clients were told.
struct Acked {
  std::map<int, std::string> issued;           // task index -> token, acknowledged
  std::map<std::string, std::string> success;  // token -> output, acknowledged
  std::map<std::string, std::string> unknown;  // token -> output: refused with kUnavailable
  bool failed = false;                         // some call was refused with kUnavailable
};

class StorageFailureTest : public ::testing::Test {
 protected:
  RocksStoreOptions StoreOptions() const {
    RocksStoreOptions o;
    o.path = dir_->path() + "/db";
    o.side_flush_every_bytes = 1;  // a background flush after every write: more failure points
    o.block_cache_bytes = 1 << 20;
    return o;
  }
  RocksStoreTestHooks StoreHooks() const {
    RocksStoreTestHooks hooks;
    hooks.file_system = fs_;
    return hooks;
  }

  void Open() {
    std::unique_ptr<Store> store;
    ASSERT_TRUE(OpenRocksStoreForTesting(StoreOptions(), StoreHooks(), &store).ok());
    EngineOptions eo;
    eo.token_key_file = dir_->path() + "/token.key";
    eo.storage_retry_ms = kRetryMs;
    eo.reopen_store = [o = StoreOptions(), hooks = StoreHooks()](std::unique_ptr<Store>* out) {
      return OpenRocksStoreForTesting(o, hooks, out);
    };
    Result<std::unique_ptr<Engine>> r = Engine::Open(eo, std::move(store), &clock_);
    ASSERT_TRUE(r.ok()) << r.error.message;
    engine_ = std::move(r.value);
  }

  Result<IssueTaskReply> Issue(int i) {
    IssueTaskRequest req;
    req.input = "{\"i\":" + std::to_string(i) + "}";
    req.idempotency_key = "task-" + std::to_string(i);
    return Await<IssueTaskReply>(
        [&](Callback<IssueTaskReply> cb) { engine_->IssueTask(std::move(req), std::move(cb)); });
  }
  Result<CompletionReply> Succeed(const std::string& token, const std::string& output) {
    return Await<CompletionReply>([&](Callback<CompletionReply> cb) {
      engine_->SendTaskSuccess({token, output}, std::move(cb));
    });
  }
  Result<TaskDescription> Describe(const std::string& token) {
    return Await<TaskDescription>(
        [&](Callback<TaskDescription> cb) { engine_->DescribeTask({token}, std::move(cb)); });
  }

  // Issues kTasks tasks and succeeds every other one, until a call is refused; then checks that
  // the engine refuses everything and says why.
  Acked RunUntilFailure(const Case& c) {
    Acked acked;
    for (int i = 0; i < kTasks && !acked.failed; ++i) {
      Result<IssueTaskReply> issued = Issue(i);
      if (!issued.ok()) {
        EXPECT_EQ(issued.error.code, ErrorCode::kUnavailable) << issued.error.message;
        acked.failed = true;
        break;
      }
      acked.issued[i] = issued.value.token;
      if (i % 2 == 0) continue;
      const std::string output = "{\"done\":" + std::to_string(i) + "}";
      Result<CompletionReply> done = Succeed(issued.value.token, output);
      if (done.ok()) {
        acked.success[issued.value.token] = output;
      } else {
        EXPECT_EQ(done.error.code, ErrorCode::kUnavailable) << done.error.message;
        acked.unknown[issued.value.token] = output;
        acked.failed = true;
      }
    }
    if (!acked.failed) return acked;
    // Down: everything is refused at once, and the failure is named.
    const StorageHealth health = engine_->Health();
    EXPECT_FALSE(health.ok);
    const char* expected =
        c.kind == FaultFs::Injected::kNoSpace ? "No space left on device" : "injected";
    EXPECT_NE(health.error.find(expected), std::string::npos) << health.error;
    EXPECT_EQ(Issue(kTasks + 1).error.code, ErrorCode::kUnavailable);
    Result<EngineStats> stats =
        Await<EngineStats>([&](Callback<EngineStats> cb) { engine_->GetStats(std::move(cb)); });
    EXPECT_TRUE(stats.ok());
    EXPECT_FALSE(stats.value.storage.ok);
    return acked;
  }

  // Moves the clock to the reopen and waits (bounded) for the engine to be healthy. A Stats call
  // wakes the engine thread, which then sees the reopen due, instead of at its next idle tick.
  bool RecoverAndWait() {
    clock_.Advance(kRetryMs);
    engine_->GetStats([](Result<EngineStats>) {});
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    while (!engine_->Health().ok) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
  }

  // Every acknowledged transition is there, exactly once; refused ones at most once.
  void CheckAcked(const Acked& acked) {
    for (const auto& [i, token] : acked.issued) {
      Result<IssueTaskReply> again = Issue(i);
      ASSERT_TRUE(again.ok()) << again.error.message;
      EXPECT_TRUE(again.value.existing) << "task " << i;
      EXPECT_EQ(again.value.token, token);
      Result<TaskDescription> d = Describe(token);
      ASSERT_TRUE(d.ok()) << "task " << i << ": " << d.error.message;
      auto success = acked.success.find(token);
      if (success != acked.success.end()) {
        EXPECT_EQ(d.value.state, TaskState::kSucceeded) << "task " << i;
        EXPECT_EQ(d.value.output, success->second);
      } else if (acked.unknown.count(token) == 0) {
        EXPECT_EQ(d.value.state, TaskState::kStarted) << "task " << i;
      }
    }
    // A refused success: done or not; retried, it is done once.
    for (const auto& [token, output] : acked.unknown) {
      Result<CompletionReply> retry = Succeed(token, output);
      EXPECT_TRUE(retry.ok()) << retry.error.message;
    }
    std::set<std::string> seen;
    Result<std::vector<OutcomeEvent>> events = engine_->ReadEvents(1, 4096);
    ASSERT_TRUE(events.ok()) << events.error.message;
    for (const OutcomeEvent& e : events.value) {
      EXPECT_TRUE(seen.insert(e.token).second) << "two events for one task";
    }
    for (const auto& [token, output] : acked.success) EXPECT_EQ(seen.count(token), 1u);
    for (const auto& [token, output] : acked.unknown) EXPECT_EQ(seen.count(token), 1u);
  }

  // One case. Returns false when neither the workload nor the background work it started
  // reached the failure point.
  bool RunCase(const Case& c) {
    SCOPED_TRACE(Name(c));
    dir_ = NewDir();
    fs_ = std::make_shared<FaultFs>();
    Open();
    if (::testing::Test::HasFatalFailure()) return false;
    if (c.point == Point::kAppend) {
      fs_->FailAppends(c.ok_before, c.kind);
    } else {
      fs_->FailSyncs(c.ok_before, c.kind);
    }
    const Acked acked = RunUntilFailure(c);
    fs_->ClearFailures();  // space is back
    // A failure point past the workload's last call can still be reached by a background flush
    // it started, before the failures were cleared or while the workload ran: RocksDB then
    // refuses the next write. Whether a call was made to fail is final once they are cleared;
    // the engine learns of it at its next write (probes, until it is down or a bound passes, as
    // RocksDB may also have absorbed a failure of its own background work).
    const bool reached = acked.failed || fs_->injected_count() > 0;
    bool failed = acked.failed;
    // Each probe issues a new task: a repeated idempotent issue is answered without a write,
    // and would never meet a failure that reached RocksDB after the first probe.
    for (int i = 0; reached && !failed && i < kProbesMax; ++i) {
      Result<IssueTaskReply> probe = Issue(kFirstProbe + i);
      if (!probe.ok()) {
        EXPECT_EQ(probe.error.code, ErrorCode::kUnavailable) << probe.error.message;
      }
      failed = !probe.ok() || engine_->Health().failures > 0;
      if (!failed) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (failed) {
      EXPECT_TRUE(RecoverAndWait()) << engine_->Health().error;
      EXPECT_EQ(engine_->Health().recoveries, 1u);
    }
    CheckAcked(acked);
    // The recovered engine works, and a restart finds the same.
    Result<IssueTaskReply> fresh = Issue(kTasks + 3);
    EXPECT_TRUE(fresh.ok()) << fresh.error.message;
    engine_->Stop();
    engine_.reset();
    Open();
    if (engine_ != nullptr) CheckAcked(acked);
    engine_.reset();
    return reached;
  }

  std::unique_ptr<testing_util::TempDir> dir_;  // a fresh one per case
  std::shared_ptr<FaultFs> fs_;
  ManualClock clock_{kStartMs};
  std::unique_ptr<Engine> engine_;
};

// Every failure point of the workload in turn, until the workload ends before the failure.
class EveryPointTest : public StorageFailureTest,
                       public ::testing::WithParamInterface<std::tuple<Point, FaultFs::Injected>> {
};

TEST_P(EveryPointTest, NoAbortTypedRefusalsAndRecoveryWithEveryAcknowledgedTransition) {
  const auto [point, kind] = GetParam();
  uint64_t k = 0;
  for (; k < kPointsMax; ++k) {
    if (!RunCase({point, kind, k})) break;
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(k, 0u) << "the first point must fail";
  EXPECT_LT(k, kPointsMax) << "the workload has more failure points than the test tries";
}

INSTANTIATE_TEST_SUITE_P(
    , EveryPointTest,
    ::testing::Combine(::testing::Values(Point::kAppend, Point::kSync),
                       ::testing::Values(FaultFs::Injected::kNoSpace, FaultFs::Injected::kIoError)),
    [](const auto& info) {
      return std::string(std::get<0>(info.param) == Point::kAppend ? "Append" : "Sync") +
             (std::get<1>(info.param) == FaultFs::Injected::kNoSpace ? "NoSpace" : "IoError");
    });

}  // namespace
}  // namespace tw
