// An in-memory tw::Store with the RocksDB store's semantics, for fast engine unit tests and the
// deterministic simulation. Same ordering (ids, sequences, retired entries), same atomic Write,
// same gap rule in ReadEvents, same poisoning; no encoding, no files.
//
// The data lives in a MemoryDisk that outlives the stores opened on it, so a test can "restart":
// drop the engine and its MemoryStore, optionally DropUnsyncedWrites() (a power cut), and open a
// new MemoryStore on the same disk.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "engine/status.h"
#include "engine/store.h"

namespace tw {

struct MemoryState;  // the column families: defined in memory_store.cc

// The "disk" of MemoryStores. Thread-safe: every method takes mu_.
//
// Durability model, a simplification of the WAL's: a Write with sync=true makes itself and every
// earlier write durable; DropUnsyncedWrites() loses every write after the last synced one (RocksDB
// may also keep a prefix of them, which this model never does).
class MemoryDisk {
 public:
  MemoryDisk();
  ~MemoryDisk();
  MemoryDisk(const MemoryDisk&) = delete;
  MemoryDisk& operator=(const MemoryDisk&) = delete;

  // Simulates a power cut. REQUIRES: no MemoryStore is writing concurrently.
  void DropUnsyncedWrites();

  // Total Writes applied (successful ones, any sync). For tests.
  uint64_t write_count() const;

 private:
  friend class MemoryStore;
  mutable std::mutex mu_;
  std::unique_ptr<MemoryState> state_;        // what readers see
  std::unique_ptr<MemoryState> synced_copy_;  // set while unsynced writes exist: the durable state
  uint64_t write_count_ = 0;
};

// Invariants:
//  1. A Write is applied to the disk entirely under its mutex: readers see all of it or none.
//  2. Once poisoned_ is set it stays set, and no Write reaches the disk after it.
class MemoryStore final : public Store {
 public:
  // A store on a fresh, empty disk.
  MemoryStore();
  // A store on `disk`, which may hold the data of an earlier store (a restart).
  explicit MemoryStore(std::shared_ptr<MemoryDisk> disk);
  ~MemoryStore() override;

  const std::shared_ptr<MemoryDisk>& disk() const { return disk_; }

  // ---- fault injection (engine thread, like Write) ----
  // The next Write fails with IoError (and so poisons this store).
  void FailNextWrite() { FailWritesAfter(0); }
  // The next n Writes succeed, every later one fails with IoError (the first failure poisons).
  void FailWritesAfter(uint64_t n);
  bool poisoned() const { return poisoned_; }

  std::unique_ptr<WriteBatch> NewBatch() override;
  Status Write(WriteBatch* batch, bool sync) override;
  Status LoadMeta(StoreMeta* meta) override;
  Status LoadActivities(std::vector<ActivityRecord>* out) override;
  Status ScanLive(const std::function<void(const TaskId&, const LiveRecord&)>& fn) override;
  Status GetTaskIssue(const TaskId& id, TaskIssueRecord* out) override;
  Status GetTaskState(const TaskId& id, TaskStateRecord* out) override;
  Status GetTaskEnd(const TaskId& id, TaskStateRecord* out) override;
  Status FindIdempotencyKey(std::string_view key, TaskId* out) override;
  Status ScanRetired(
      int64_t before_ms, size_t max,
      const std::function<void(int64_t, const TaskId&, std::string_view)>& fn) override;
  // Thread-safe (any thread), like the RocksDB store's.
  Status ReadEvents(uint64_t from_seq, size_t max, std::vector<EventRecord>* out) override;

 private:
  std::shared_ptr<MemoryDisk> disk_;
  bool fail_armed_ = false;
  uint64_t writes_before_failure_ = 0;
  bool poisoned_ = false;
};

}  // namespace tw
