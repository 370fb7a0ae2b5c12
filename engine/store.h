// The Store: what the engine persists through. Owned by the engine (its consumer); implemented
// in storage/ (RocksDB for real, in-memory and fault-injecting for tests).
//
// Threads: Write is called from one writer thread at a time, concurrently with the engine
// thread's reads (recovery reads, point reads, ScanRetired) and with ReadEvents from any thread.
// NewBatch and the WriteBatch methods are called on the engine thread; a sealed batch is then
// handed to the writer and never touched by the engine thread again.
//
// Durability contract:
//  1. Write(batch, sync=true) returns Ok only once every mutation in the batch is durable (WAL
//     synced). A batch is atomic: after a crash either all of it is visible or none.
//  2. After any failed Write, the store is poisoned: every later Write fails with kPoisoned and
//     nothing more reaches disk. The engine never acknowledges what was not written.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/latency_histogram.h"
#include "engine/status.h"
#include "engine/types.h"

namespace tw {

// Current on-disk format version, checked at open (docs/FORMAT.md). Version 2 added the end
// record (PutTaskEnd); a version 1 database is read as is (its terminal records are state
// records) and marked version 2 at open.
inline constexpr uint32_t kFormatVersion = 2;
inline constexpr uint32_t kFormatVersionReadable = 1;  // the older version opened and upgraded
// Version 3 is version 2 that may hold encrypted values (RocksStoreOptions::payload_keys): a
// store opened with payload keys marks its database 3 before it writes, so that a build without
// encryption (which reads 1 and 2) refuses it instead of reading ciphertext as records, and a
// store opened without keys refuses it with a message that asks for them.
inline constexpr uint32_t kFormatVersionSealed = 3;

struct ActivityRecord {
  uint64_t id = 0;  // internal, never reused; a re-created name gets a new id
  std::string name;
  int64_t creation_ms = 0;
};

// Written once when a task is issued; never changes.
struct TaskIssueRecord {
  uint64_t activity_id = 0;  // 0 = callback task
  int64_t issued_ms = 0;
  uint32_t timeout_s = 0;  // 0 = none
  uint32_t heartbeat_s = 0;
  uint32_t schedule_to_start_s = 0;
  std::string input;
  std::string correlation;      // opaque bytes of the workflow engine
  std::string idempotency_key;  // empty = none
};

// A task's state record: written at start (STARTED, started_ms, worker) and when a started task
// is handed back (SCHEDULED). Its end record, the same struct, is written once at the terminal
// transition under its own key (state, timeout_kind, ended_ms, output / error / cause; not
// worker or started_ms), so ending a task never reads the start back.
struct TaskStateRecord : Outcome {
  int64_t started_ms = 0;  // 0 = never started
  int64_t ended_ms = 0;    // 0 = not terminal
  std::string worker;
};

// The compact entry recovery rebuilds the in-memory index from; present while the task is live.
struct LiveRecord {
  TaskState state = TaskState::kScheduled;    // kScheduled or kStarted
  uint64_t activity_id = 0;                   // 0 = callback task
  uint64_t queue_seq = 0;                     // FIFO position while kScheduled
  uint32_t heartbeat_s = 0;                   // 0 = no heartbeat clock
  int64_t heartbeat_deadline_ms = 0;          // 0 = none; as of the last persisted transition
  int64_t overall_deadline_ms = 0;            // 0 = none (set when started)
  int64_t schedule_to_start_deadline_ms = 0;  // 0 = none (while kScheduled)
  uint32_t timeout_s = 0;                     // to compute the overall deadline when started
  // What the issue record holds that a terminal transition needs (kLiveHas* bits), so that
  // recovery knows which tasks need a read at their end. Records written before this field
  // existed decode as kLiveFlagsUnknown.
  uint8_t flags = 0;
};
inline constexpr uint8_t kLiveHasIdempotencyKey = 1;
inline constexpr uint8_t kLiveHasCorrelation = 2;
inline constexpr uint8_t kLiveFlagsUnknown = kLiveHasIdempotencyKey | kLiveHasCorrelation;

// One entry of the outcome stream: a terminal transition.
struct EventRecord : Outcome {  // state is terminal
  uint64_t seq = 0;             // gapless, from 1
  TaskId task_id;
  uint64_t activity_id = 0;
  int64_t time_ms = 0;
  std::string correlation;
};

// Counters and cursors kept in the meta column family.
struct StoreMeta {
  uint64_t next_event_seq = 1;   // the seq the next appended event gets
  uint64_t first_event_seq = 1;  // events below this were trimmed
  uint64_t next_activity_id = 1;
  uint64_t next_queue_seq = 1;
  std::vector<std::pair<std::string, uint64_t>> consumers;  // name -> highest acked seq
};

// Mutations collected by the engine for one group commit. Not thread-safe.
class WriteBatch {
 public:
  virtual ~WriteBatch() = default;
  virtual void PutActivity(const ActivityRecord& a) = 0;
  virtual void DeleteActivity(uint64_t activity_id) = 0;
  virtual void PutTaskIssue(const TaskId& id, const TaskIssueRecord& r) = 0;
  virtual void PutTaskState(const TaskId& id, const TaskStateRecord& r) = 0;
  // REQUIRES: r.state is terminal.
  virtual void PutTaskEnd(const TaskId& id, const TaskStateRecord& r) = 0;
  virtual void PutLive(const TaskId& id, const LiveRecord& r) = 0;
  virtual void DeleteLive(const TaskId& id) = 0;
  virtual void PutIdempotencyKey(std::string_view key, const TaskId& id) = 0;
  virtual void AppendEvent(const EventRecord& e) = 0;
  // Records that `id` became terminal at ended_ms; retention removes it after the period.
  virtual void PutRetired(int64_t ended_ms, const TaskId& id, std::string_view idempotency_key) = 0;
  // Removes a retired task: its records (issue, state, end), idempotency key and retention
  // entry.
  virtual void DeleteTask(int64_t ended_ms, const TaskId& id, std::string_view idempotency_key) = 0;
  virtual void PutConsumer(std::string_view name, uint64_t acked_seq) = 0;
  virtual void DeleteConsumer(std::string_view name) = 0;
  virtual void TrimEventsBelow(uint64_t seq) = 0;  // range delete of events [first, seq)
  virtual void PutCounters(uint64_t next_event_seq, uint64_t next_activity_id,
                           uint64_t next_queue_seq) = 0;
  virtual size_t Count() const = 0;  // mutations added
  virtual size_t ByteSize() const = 0;
  virtual void Clear() = 0;
};

// What the storage underneath reports about itself, counted since this store opened (a store
// reopened after a storage failure starts again from zero). Zero for a store that measures none.
struct StoreStats {
  // Each sync of the write-ahead log: how long the file system took, in LatencyBuckets buckets,
  // and the slowest. A group commit with durability sync waits for one of these.
  LatencyBuckets::Counts wal_sync_us{};
  uint64_t wal_sync_max_us = 0;
  // Write stalls: times the store began to slow writes down (delayed) or to stop them (stopped)
  // because flushes or compactions fell behind, and the time spent in either state.
  uint64_t write_stalls_delayed = 0;
  uint64_t write_stalls_stopped = 0;
  uint64_t write_stall_us = 0;
  // Background work: memtable flushes and compactions finished, and the bytes compactions read
  // and wrote.
  uint64_t flushes = 0;
  uint64_t compactions = 0;
  uint64_t compaction_read_bytes = 0;
  uint64_t compaction_write_bytes = 0;
};

class Store {
 public:
  virtual ~Store() = default;

  // Thread-safe: any thread.
  virtual StoreStats Stats() const { return {}; }

  virtual std::unique_ptr<WriteBatch> NewBatch() = 0;
  // See the durability contract above. REQUIRES: batch came from this store's NewBatch().
  virtual Status Write(WriteBatch* batch, bool sync) = 0;

  // Recovery reads, called once at open.
  virtual Status LoadMeta(StoreMeta* meta) = 0;
  virtual Status LoadActivities(std::vector<ActivityRecord>* out) = 0;
  virtual Status ScanLive(const std::function<void(const TaskId&, const LiveRecord&)>& fn) = 0;

  // Point reads; NotFound when absent.
  virtual Status GetTaskIssue(const TaskId& id, TaskIssueRecord* out) = 0;
  virtual Status GetTaskState(const TaskId& id, TaskStateRecord* out) = 0;
  virtual Status GetTaskEnd(const TaskId& id, TaskStateRecord* out) = 0;
  virtual Status FindIdempotencyKey(std::string_view key, TaskId* out) = 0;

  // Retention: calls fn(ended_ms, id, idempotency_key) for retired tasks with
  // ended_ms < before_ms, oldest first, at most max entries.
  virtual Status ScanRetired(
      int64_t before_ms, size_t max,
      const std::function<void(int64_t, const TaskId&, std::string_view)>& fn) = 0;

  // Events with seq in [from_seq, from_seq + max), in order, stopping at the first gap (the
  // end). Thread-safe: any thread.
  virtual Status ReadEvents(uint64_t from_seq, size_t max, std::vector<EventRecord>* out) = 0;

  // Writes a consistent copy of the store into `dir` (which must not exist): every write that
  // returned before the call is in it. Thread-safe: any thread, concurrently with writes.
  virtual Status Checkpoint(const std::string& dir) {
    return Status::InvalidArgument("this store cannot write checkpoints (" + dir + ")");
  }
};

}  // namespace tw
