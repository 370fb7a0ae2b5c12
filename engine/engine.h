// tokenwheel's engine: tasks, their exactly-once transitions and their timeouts, durable
// through a Store. This is the narrow header front ends include.
//
// Threads. One engine thread owns all task state. Every public method is thread-safe and
// non-blocking: it validates what it can on the caller's thread (token MAC, sizes, JSON),
// enqueues a command on a bounded queue and returns. Replies arrive through the callback, which
// runs ON THE ENGINE THREAD after the batch holding the command is durable, in batch
// order; a callback must not block and must not call back into the engine synchronously
// expecting an answer (enqueueing is fine). Callbacks of one batch run back to back, so a front
// end that hops threads once per non-empty reply list gets one hand-off per batch.
//
// How a batch is committed is EngineOptions::commit (CommitMode):
// - kPipelined: two engine threads. The engine thread applies commands and timers to the
//   in-memory state and seals a batch; the writer thread only writes and syncs it, then hands
//   it back, and the engine thread runs its replies. While the writer writes and syncs batch N,
//   the engine thread applies batch N+1 and hands it over as soon as N is durable (sooner when
//   it is full: limits::kBatchesInFlightMax sealed batches in flight).
// - kInline: one engine thread, which writes and syncs each batch itself after applying it.
//   Commands that arrive meanwhile wait in the queue and form the next batch. No hand-off to a
//   writer and back: fewer thread switches per batch, which is what a small machine runs out
//   of first (docs/BENCHMARKS.md, "Commit modes").
// - kAdaptive: both threads. At the end of a round of commands the engine thread writes the
//   batch itself when no command is waiting, no due timer is left over and no batch is in
//   flight, and hands it to the writer otherwise: inline under light load, pipelined under
//   heavy load (and through a mass expiry).
//
// A full queue answers at once (on the caller's thread) with ErrorCode::kOverloaded. Once Stop()
// began, every call answers kUnavailable.
//
// Storage failures (a failed write or sync: a full disk, an I/O error). The batch that failed,
// and every batch applied on top of it, answer kUnavailable, and so does every later call,
// at once on the caller's thread, until the storage works again: Health() and GetStats() say
// why. kUnavailable means "outcome unknown", not "did not happen": a batch whose sync failed
// may still be on disk. Retrying is safe: issues carry idempotency keys and an identical
// retried completion answers duplicate = true. With EngineOptions::reopen_store set, the
// engine thread then recovers by itself: every storage_retry_ms it closes the failed store,
// opens it again and rebuilds its state from what is on disk, exactly as a restart would
// (memory may be ahead of the disk, so it never carries on from memory). Waiting polls are
// answered before the old state goes. Without reopen_store the engine refuses every call
// until it is restarted.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/clock.h"
#include "engine/latency_histogram.h"
#include "engine/limits.h"
#include "engine/log.h"
#include "engine/store.h"
#include "engine/types.h"

namespace tw {

enum class Durability { kSync, kNone };

// Who writes and syncs the batches; see "How a batch is committed" above. Replies, events and
// durability are the same in all three modes.
enum class CommitMode {
  kPipelined,  // a writer thread, overlapping batch N's sync with applying batch N+1
  kInline,     // the engine thread itself, after applying each batch; no writer thread
  // The engine thread when no command is waiting, no due timer is left over and no batch is
  // in flight (nothing to overlap the sync with), else the writer thread.
  kAdaptive,
};
// "pipelined", "inline", "adaptive": the names of tokenwheeld's --commit.
const char* CommitModeName(CommitMode mode);
bool ParseCommitMode(std::string_view name, CommitMode* mode);  // false: no such mode

struct EngineOptions {
  Durability durability = Durability::kSync;
  uint32_t tick_ms = limits::kWheelTickMsDefault;
  int64_t retention_ms = limits::kRetentionMsDefault;
  std::string region = "us-east-1";
  std::string account = "000000000000";
  uint32_t pollers_per_activity_max = limits::kPollersPerActivityDefault;
  size_t command_queue_max = limits::kCommandQueueMax;
  size_t batch_commands_max = limits::kBatchCommandsMax;
  // Prefetch for upcoming task commands once this many tasks are live (0: always).
  size_t prefetch_min_live_tasks = limits::kPrefetchMinLiveTasksDefault;
  std::string token_key_file;  // created at first open with mode 0600 (required)
  uint16_t shard = 0;
  CommitMode commit = CommitMode::kAdaptive;  // docs/BENCHMARKS.md, "Commit modes"
  // Opens the store again after a storage failure (see "Storage failures" above); called on the
  // engine thread once the failed store is closed. Unset: a failure lasts until a restart.
  std::function<Status(std::unique_ptr<Store>*)> reopen_store;
  // Time between a storage failure and the first reopen, and between reopens that fail.
  int64_t storage_retry_ms = limits::kStorageRetryMsDefault;
  // Where Checkpoint writes, each into its own new subdirectory (empty: checkpoints are off).
  std::string backup_dir;
  // Where the engine's log records go (storage failures, reopens); unset: stderr. Called on the
  // engine thread.
  LogSink log;
};

// Whether the engine's storage works (Engine::Health, EngineStats::storage).
struct StorageHealth {
  bool ok = true;
  std::string error;            // while !ok: what failed, e.g. "No space left on device"
  int64_t failed_since_ms = 0;  // while !ok: when (engine clock)
  uint64_t failures = 0;        // storage failures since the engine opened
  uint64_t recoveries = 0;      // reopens that brought the engine back
};

// ---- Requests and replies ----

struct CreateActivityRequest {
  std::string name;
};
struct ActivityInfo {
  std::string arn;
  std::string name;
  int64_t creation_ms = 0;
};
struct DeleteActivityRequest {
  std::string arn;
};
struct DescribeActivityRequest {
  std::string arn;
};
struct ListActivitiesRequest {
  uint32_t max_results = 0;  // 0 means 100
  std::string next_token;
};
struct ListActivitiesReply {
  std::vector<ActivityInfo> activities;
  std::string next_token;  // empty when this is the last page
};

struct IssueTaskRequest {
  std::string activity_arn;          // empty: a callback task (born STARTED, clocks start now)
  std::string input = "{}";          // JSON
  uint32_t timeout_s = 0;            // 0 = none
  uint32_t heartbeat_s = 0;          // 0 = none; must be < timeout_s when both set
  uint32_t schedule_to_start_s = 0;  // activity tasks only; 0 = none
  std::string correlation;           // opaque, returned in the outcome event
  std::string idempotency_key;       // same key -> same token, no second task
};
struct IssueTaskReply {
  std::string token;
  bool existing = false;  // the idempotency key matched an earlier issue
};

struct GetActivityTaskRequest {
  std::string activity_arn;
  std::string worker_name;  // optional
};
struct GetActivityTaskReply {
  std::string token;  // empty: no task (withdrawn or engine stopping)
  std::string input;
};

struct SendTaskSuccessRequest {
  std::string token;
  std::optional<std::string> output;  // required; nullopt -> ValidationException
};
struct SendTaskFailureRequest {
  std::string token;
  std::optional<std::string> error;
  std::optional<std::string> cause;
};
struct SendTaskHeartbeatRequest {
  std::string token;
};
struct CancelTaskRequest {
  std::string token;
};
struct CompletionReply {
  bool duplicate = false;  // an identical retry of the completion that already won
};

struct DescribeTaskRequest {
  std::string token;
};
struct TaskDescription : Outcome {
  std::string activity_arn;  // empty for callback tasks
  int64_t issued_ms = 0;
  int64_t started_ms = 0;
  int64_t ended_ms = 0;
  int64_t heartbeat_deadline_ms = 0;
  int64_t overall_deadline_ms = 0;
  int64_t schedule_to_start_deadline_ms = 0;
  uint32_t timeout_s = 0;
  uint32_t heartbeat_s = 0;
  uint32_t schedule_to_start_s = 0;
  std::string worker;
  std::string input;
  std::string correlation;
};

struct OutcomeEvent : Outcome {  // state is terminal
  uint64_t seq = 0;
  std::string token;
  std::string activity_arn;  // empty for callback tasks, and for an activity deleted before
                             // the last restart (its name is gone from the store)
  int64_t time_ms = 0;
  std::string correlation;
};

struct ConsumerInfo {
  std::string name;
  uint64_t acked_seq = 0;  // resume from acked_seq + 1
};

// One activity's tasks in EngineStats: SCHEDULED (queued for a worker) and STARTED (handed to a
// worker, not ended).
struct ActivityCounts {
  std::string arn;
  uint64_t queued = 0;
  uint64_t started = 0;
};

struct EngineStats {
  uint64_t live_tasks = 0;
  uint64_t pending_timers = 0;
  uint64_t waiting_polls = 0;
  uint64_t last_event_seq = 0;
  uint64_t events_not_acked = 0;  // last_event_seq - slowest consumer's ack
  uint64_t batches = 0;
  uint64_t commands = 0;
  uint64_t index_bytes = 0;                  // in-memory task index + timing wheel, outside RocksDB
  std::vector<ActivityCounts> per_activity;  // every activity not deleted, by name
  std::vector<ConsumerInfo> consumers;
  // How long each group commit that wrote something took on the writer thread (RocksDB write,
  // and the WAL sync with durability sync), since the engine opened: a count per
  // LatencyBuckets bucket (LatencyQuantileUs reads quantiles off it), and the slowest one.
  LatencyBuckets::Counts commit_latency_us{};
  uint64_t commit_latency_max_us = 0;
  // Wake-ups of the engine thread for submitted commands (Engine::Cork saves them); with
  // `commands`, how well submissions are batched. Read when the Stats answer is released (after
  // its batch is durable), the fields above when its command is applied.
  uint64_t submit_wakes = 0;
  // The engine's command queue: commands waiting as of its last change, its bound
  // (EngineOptions::command_queue_max), and commands refused because it was full (OVERLOADED /
  // ThrottlingException), since the engine opened. Read when the Stats answer is released.
  uint64_t queue_depth = 0;
  uint64_t queue_max = 0;
  uint64_t queue_refusals = 0;
  // Tasks timed out since the engine (or its store, after a storage failure) opened, by the
  // clock that fired: indexed by TimeoutKind (kHeartbeat, kOverall, kScheduleToStart).
  std::array<uint64_t, 4> timeouts{};
  // Commands per group commit since the engine opened, in LatencyBuckets buckets (a count read
  // as "us"): how well the engine batches.
  LatencyBuckets::Counts batch_commands{};
  // How late each timeout fired since the engine opened: the engine's clock when it ended the
  // task minus the deadline that ran out (never negative), in LatencyBuckets buckets, and the
  // latest. Resolution 1 ms (the engine's clock); the wheel's tick and the engine's load add to it.
  LatencyBuckets::Counts timer_lateness_us{};
  uint64_t timer_lateness_max_us = 0;
  // Answered even while the storage is failed (then the fields above that need the engine's
  // state are zero when the state is gone).
  StorageHealth storage;
  // What the store measures underneath (write-ahead log syncs, write stalls, compactions).
  StoreStats store;
};

template <typename T>
using Callback = std::function<void(Result<T>)>;

class Engine {
 public:
  // Recovers state from `store` and starts the engine thread. `clock` must outlive the engine.
  static Result<std::unique_ptr<Engine>> Open(const EngineOptions& options,
                                              std::unique_ptr<Store> store, Clock* clock);
  // Stops (see Stop) and joins the engine thread.
  virtual ~Engine() = default;

  // Stop accepting, finish the queued commands, write and sync their batch, answer waiting
  // polls empty, join. Idempotent.
  virtual void Stop() = 0;

  virtual void CreateActivity(CreateActivityRequest req, Callback<ActivityInfo> done) = 0;
  virtual void DeleteActivity(DeleteActivityRequest req, Callback<Empty> done) = 0;
  virtual void DescribeActivity(DescribeActivityRequest req, Callback<ActivityInfo> done) = 0;
  virtual void ListActivities(ListActivitiesRequest req, Callback<ListActivitiesReply> done) = 0;

  virtual void IssueTask(IssueTaskRequest req, Callback<IssueTaskReply> done) = 0;

  // Takes the head of the activity's queue, or waits for one. `poll_id` is the caller's unique
  // name for this wait. A waiting poll is answered only by a task, by WithdrawPoll (empty), by
  // Stop (empty), or by ActivityDoesNotExist when its activity is deleted meanwhile.
  virtual void GetActivityTask(GetActivityTaskRequest req, uint64_t poll_id,
                               Callback<GetActivityTaskReply> done) = 0;
  // The poll's caller went away or its wait ran out. If the poll is still waiting it is
  // answered empty. If it already got a task, the reply is in flight: a front end that can no
  // longer deliver it calls ReturnTask.
  virtual void WithdrawPoll(uint64_t poll_id) = 0;
  // Puts a task handed to a poll that could not be delivered back at the head of its queue
  // (STARTED -> SCHEDULED), if nothing happened to it since. No reply.
  virtual void ReturnTask(std::string token) = 0;

  virtual void SendTaskSuccess(SendTaskSuccessRequest req, Callback<CompletionReply> done) = 0;
  virtual void SendTaskFailure(SendTaskFailureRequest req, Callback<CompletionReply> done) = 0;
  virtual void SendTaskHeartbeat(SendTaskHeartbeatRequest req, Callback<Empty> done) = 0;
  virtual void CancelTask(CancelTaskRequest req, Callback<CompletionReply> done) = 0;
  virtual void DescribeTask(DescribeTaskRequest req, Callback<TaskDescription> done) = 0;

  // ---- The outcome stream ----
  // Registers (idempotently) a consumer; a new one starts after the last event so far.
  virtual void RegisterConsumer(std::string name, Callback<ConsumerInfo> done) = 0;
  virtual void DeleteConsumer(std::string name, Callback<Empty> done) = 0;
  // Durably records that `name` processed every event <= seq. Events below the slowest
  // consumer are trimmed.
  virtual void AckEvents(std::string name, uint64_t seq, Callback<Empty> done) = 0;
  // Durable events with seq >= from_seq, at most max. Any thread, synchronous.
  virtual Result<std::vector<OutcomeEvent>> ReadEvents(uint64_t from_seq, size_t max) = 0;
  // Highest durable event seq (0 = none). Any thread.
  virtual uint64_t LastEventSeq() const = 0;
  // Adds a listener, called on the engine thread after each batch that made new events durable
  // (and after a reopen of the store), with the new last seq. Each front end adds one before
  // traffic starts; listeners are never removed, so one must stay valid (or do nothing) for
  // the engine's life. A listener must not call AddEventListener.
  virtual void AddEventListener(std::function<void(uint64_t last_seq)> fn) = 0;

  virtual void GetStats(Callback<EngineStats> done) = 0;

  // A barrier: answered once everything enqueued before it is durable and every timer due by
  // the clock's current time has fired and is durable. Tests with a ManualClock move the clock,
  // then Sync, instead of sleeping.
  virtual void Sync(Callback<Empty> done) = 0;

  // An online backup: writes a copy of the data directory as it is now (DIR/db, a consistent
  // RocksDB checkpoint, and DIR/token.key) into DIR = EngineOptions::backup_dir/name, a new
  // directory, and answers DIR. Everything acknowledged before the call is in it; a server
  // started with --data-dir DIR restores it. Written off the engine thread, one at a time.
  // Errors: validation (checkpoints off, a bad or taken name), unavailable (storage failed,
  // stopping, or the copy could not be written), overloaded (one is being written).
  virtual void Checkpoint(std::string /*name*/, Callback<std::string> done) {
    done(Result<std::string>::Fail(
        Error::Make(ErrorCode::kValidation, "this engine does not write checkpoints")));
  }

  // Recovery facts, for the start-up log line (of the last recovery, after a reopen).
  virtual uint64_t RecoveredTasks() const = 0;
  virtual int64_t RecoveryMs() const = 0;

  // Whether the engine serves calls: its storage works and Stop() has not begun (then ok is
  // false and error says "the engine is stopping"); since when the storage fails. Any thread;
  // never waits for the engine thread.
  virtual StorageHealth Health() const = 0;

  // Batched hand-off for a thread that submits commands in bursts (the RPC event loop). Between
  // Cork() and Uncork() on one thread, that thread's submissions wake the engine thread once:
  // at Uncork(), or earlier once limits::kCorkedCommandsPerWake commands were held. That is
  // one wake-up per burst instead of one per command that finds the queue empty. Answers and
  // their order do not change, only when the engine thread starts on them. A command that
  // another thread queues behind held ones waits for the same wake-up. One corked engine per
  // thread at a time; Uncork() before the thread ends or the engine is destroyed (CorkGuard
  // does both). The default (an engine with no wake-ups to save) does nothing.
  virtual void Cork() {}
  virtual void Uncork() {}
};

// Corks `engine` for the calling thread while it lives (Engine::Cork).
class CorkGuard {
 public:
  explicit CorkGuard(Engine* engine) : engine_(engine) { engine_->Cork(); }
  ~CorkGuard() { engine_->Uncork(); }
  CorkGuard(const CorkGuard&) = delete;
  CorkGuard& operator=(const CorkGuard&) = delete;

 private:
  Engine* const engine_;
};

}  // namespace tw
