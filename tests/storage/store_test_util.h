// Helpers shared by the storage tests: temp dirs, record builders and comparisons, and one
// harness per Store implementation so that semantic tests are written once (typed tests).
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "engine/status.h"
#include "engine/store.h"
#include "storage/fault_fs.h"
#include "storage/memory_store.h"
#include "storage/rocksdb_store.h"
#include "storage/rocksdb_store_testing.h"
#include "tests/temp_dir.h"

namespace tw {

// Field-wise equality for the records, for EXPECT_EQ (tests only; the engine never compares).
inline auto Tie(const ActivityRecord& a) { return std::tie(a.id, a.name, a.creation_ms); }
inline auto Tie(const TaskIssueRecord& r) {
  return std::tie(r.activity_id, r.issued_ms, r.timeout_s, r.heartbeat_s, r.schedule_to_start_s,
                  r.input, r.correlation, r.idempotency_key);
}
inline auto Tie(const TaskStateRecord& r) {
  return std::tie(r.state, r.timeout_kind, r.started_ms, r.ended_ms, r.worker, r.output,
                  r.has_error, r.has_cause, r.error, r.cause);
}
inline auto Tie(const LiveRecord& r) {
  return std::tie(r.state, r.activity_id, r.queue_seq, r.heartbeat_s, r.heartbeat_deadline_ms,
                  r.overall_deadline_ms, r.schedule_to_start_deadline_ms, r.timeout_s, r.flags);
}
inline auto Tie(const EventRecord& e) {
  return std::tie(e.seq, e.task_id, e.activity_id, e.state, e.timeout_kind, e.time_ms, e.output,
                  e.has_error, e.has_cause, e.error, e.cause, e.correlation);
}
inline bool operator==(const ActivityRecord& a, const ActivityRecord& b) {
  return Tie(a) == Tie(b);
}
inline bool operator==(const TaskIssueRecord& a, const TaskIssueRecord& b) {
  return Tie(a) == Tie(b);
}
inline bool operator==(const TaskStateRecord& a, const TaskStateRecord& b) {
  return Tie(a) == Tie(b);
}
inline bool operator==(const LiveRecord& a, const LiveRecord& b) { return Tie(a) == Tie(b); }
inline bool operator==(const EventRecord& a, const EventRecord& b) { return Tie(a) == Tie(b); }
inline void PrintTo(const TaskId& id, std::ostream* os) { *os << id.hi << ":" << id.lo; }
inline void PrintTo(const Status& s, std::ostream* os) { *os << s.ToString(); }

namespace testing_util {

using ::tw::TempDir;

inline TaskId Id(uint64_t i) { return TaskId{i * 0x9E3779B97F4A7C15ull + 1, ~i}; }

inline std::string Payload(uint64_t seed, size_t bytes) {
  std::string s(bytes, '\0');
  uint64_t x = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (size_t i = 0; i < bytes; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    s[i] = static_cast<char>(x >> 56);
  }
  return s;
}

inline TaskIssueRecord Issue(uint64_t i, size_t input_bytes = 40) {
  TaskIssueRecord r;
  r.activity_id = i % 3;
  r.issued_ms = 1'700'000'000'000 + static_cast<int64_t>(i);
  r.timeout_s = static_cast<uint32_t>(i % 1000);
  r.heartbeat_s = 30;
  r.schedule_to_start_s = 5;
  r.input = Payload(i, input_bytes);
  r.correlation = "exec-" + std::to_string(i);
  r.idempotency_key = i % 2 == 0 ? "idem-" + std::to_string(i) : "";
  return r;
}

inline TaskStateRecord State(uint64_t i, TaskState state = TaskState::kSucceeded) {
  TaskStateRecord r;
  r.state = state;
  r.timeout_kind = state == TaskState::kTimedOut ? TimeoutKind::kHeartbeat : TimeoutKind::kNone;
  r.started_ms = 1'700'000'000'100 + static_cast<int64_t>(i);
  r.ended_ms = IsTerminal(state) ? r.started_ms + 50 : 0;
  r.worker = "worker-" + std::to_string(i % 7);
  r.output = state == TaskState::kSucceeded ? "{\"ok\":" + std::to_string(i) + "}" : "";
  r.has_error = state == TaskState::kFailed;
  r.has_cause = state == TaskState::kFailed;
  r.error = r.has_error ? "Err" : "";
  r.cause = r.has_cause ? std::string("because\0binary", 14) : "";
  return r;
}

inline LiveRecord Live(uint64_t i) {
  LiveRecord r;
  r.state = i % 2 ? TaskState::kStarted : TaskState::kScheduled;
  r.activity_id = i % 5;
  r.queue_seq = i;
  r.heartbeat_s = 10;
  r.heartbeat_deadline_ms = 1'700'000'000'000 + static_cast<int64_t>(i) * 10;
  r.overall_deadline_ms = r.state == TaskState::kStarted ? 1'800'000'000'000 : 0;
  r.schedule_to_start_deadline_ms = r.state == TaskState::kScheduled ? 1'750'000'000'000 : 0;
  r.timeout_s = 600;
  r.flags = static_cast<uint8_t>(i % 4);  // every combination of the kLiveHas* bits
  return r;
}

inline EventRecord Event(uint64_t seq, size_t output_bytes = 20) {
  EventRecord e;
  e.seq = seq;
  e.task_id = Id(seq);
  e.activity_id = seq % 4;
  e.state = seq % 3 == 0 ? TaskState::kFailed : TaskState::kSucceeded;
  e.time_ms = 1'700'000'000'000 + static_cast<int64_t>(seq);
  e.output = e.state == TaskState::kSucceeded ? Payload(seq, output_bytes) : "";
  e.has_error = e.state == TaskState::kFailed;
  e.error = e.has_error ? "States.TaskFailed" : "";
  e.correlation = "corr-" + std::to_string(seq);
  return e;
}

// ---- harnesses: how to open, reopen, fail and crash each Store ----

// Payload keys for tests: key id `id` is 32 bytes derived from the id alone.
inline keyfile::KeyList TestPayloadKeys(std::initializer_list<uint8_t> ids) {
  keyfile::KeyList keys;
  for (uint8_t id : ids) {
    keyfile::Key key;
    for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(id * 31 + i);
    keys.emplace_back(id, key);
  }
  return keys;
}

// The RocksDB store on a FaultFs (a plain pass-through until a test injects something);
// kSealed: with payload encryption on (one key).
template <bool kSealed>
class RocksHarnessT {
 public:
  RocksHarnessT() : fs_(std::make_shared<FaultFs>()) {}

  std::unique_ptr<Store> Open() {
    RocksStoreOptions o;
    o.path = dir_.path() + "/db";
    if (kSealed) o.payload_keys = TestPayloadKeys({7});
    o.blob_min_bytes = 1024;
    // Exercise what big stores do only now and then: replays through the preliminary open,
    // and side column family flushes (every 8 KiB written).
    o.replay_open_min_wal_bytes = 0;
    o.side_flush_every_bytes = 8 << 10;
    RocksStoreTestHooks hooks;
    hooks.file_system = fs_;
    std::unique_ptr<Store> store;
    Status s = OpenRocksStoreForTesting(o, hooks, &store);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return store;
  }
  // Makes the next write of `store` fail at the file system (append and sync).
  void InjectWriteFailure(Store* /*store*/) {
    fs_->FailAppends(0);
    fs_->FailSyncs(0);
  }
  void ClearFailures() { fs_->ClearFailures(); }
  // The machine stops: nothing more reaches a file; unsynced data is lost.
  void Crash(std::unique_ptr<Store>* store) {
    fs_->SetActive(false);
    store->reset();
    Status s = fs_->DropUnsyncedData();
    EXPECT_TRUE(s.ok()) << s.ToString();
    fs_->SetActive(true);
  }

  FaultFs* fs() { return fs_.get(); }
  std::string path() const { return dir_.path() + "/db"; }

 private:
  TempDir dir_;
  std::shared_ptr<FaultFs> fs_;
};

using RocksHarness = RocksHarnessT<false>;
using RocksSealedHarness = RocksHarnessT<true>;

class MemoryHarness {
 public:
  std::unique_ptr<Store> Open() { return std::make_unique<MemoryStore>(disk_); }
  void InjectWriteFailure(Store* store) { static_cast<MemoryStore*>(store)->FailNextWrite(); }
  void ClearFailures() {}
  void Crash(std::unique_ptr<Store>* store) {
    store->reset();
    disk_->DropUnsyncedWrites();
  }

 private:
  std::shared_ptr<MemoryDisk> disk_ = std::make_shared<MemoryDisk>();
};

struct HarnessNames {
  template <typename T>
  static std::string GetName(int) {
    if constexpr (std::is_same_v<T, RocksHarness>) return "Rocks";
    if constexpr (std::is_same_v<T, RocksSealedHarness>) return "RocksSealed";
    return "Memory";
  }
};

}  // namespace testing_util
}  // namespace tw
