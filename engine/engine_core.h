// EngineCore: the deterministic, single-threaded heart of the engine. It applies commands to
// the in-memory state, fires timers, and collects every resulting mutation into one store
// WriteBatch per group commit; replies are held until that batch is durable. The runtime
// (engine_impl.cc) wraps it in a thread and a bounded queue; the simulation drives it directly.
//
// The state it owns, each part in its own unit:
//   tasks_     TaskTable (engine/task_table.h): the live tasks by id, in slots
//   wheel_     TimingWheel (engine/timing_wheel.h): one timer per live task with a deadline;
//              the deadlines themselves are set and judged in engine/task_clocks.h
//   registry_  ActivityRegistry (engine/activity_registry.h): activities, FIFOs, waiting polls
//   events_    EventLog (engine/event_log.h): event sequence numbers, consumers, trimming
//   pending_   PendingRecords (engine/pending_records.h): records not durable yet
// The commands it applies are in engine/commands.h; the task transitions are this unit's.
//
// Invariants (CheckInvariants asserts 1, 2, 5, 6 and 7 after walking the whole state, and the
// parts' own; 3 and 4 are properties of the code paths, shown by the crash and pipeline tests):
//  1. A task is in TaskTable iff it is live (SCHEDULED or STARTED); it has an armed timer iff
//     it has a deadline (clocks::ArmedDeadline != 0), and the wheel holds no other timer.
//  2. A SCHEDULED task is linked in exactly one activity FIFO, its own; a STARTED one in none
//     (ActivityRegistry A3).
//  3. Every terminal transition writes its end record (without reading the start record),
//     deletes its live record, appends one event and one retention entry, all in the same batch.
//  4. No reply or event leaves before the batch it depends on is durable (Commit returned Ok).
//     A heartbeat OK on a task whose start is durable depends on none: it leaves during Apply.
//  5. After a failed Commit or read the core is poisoned, for good: Apply answers every command
//     kUnavailable at the door (Stats at once, without a batch), and nothing more is written
//     (Seal marks the batch poisoned). The runtime stops firing its timers and replaces it with
//     a core recovered from the reopened store (engine.h, "Storage failures").
//  6. At most limits::kBatchesInFlightMax batches are sealed and not yet durable.
//  7. A timer never lies after its task's earliest deadline: a heartbeat only moves deadlines
//     later, and the firing re-arms (lazy re-arm), so no timeout fires late for a wrong timer.
// Thread: one thread at a time (the engine thread).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "engine/activity_registry.h"
#include "engine/clock.h"
#include "engine/commands.h"
#include "engine/engine.h"
#include "engine/errors.h"
#include "engine/event_log.h"
#include "engine/pending_records.h"
#include "engine/store.h"
#include "engine/task_table.h"
#include "engine/timing_wheel.h"
#include "engine/token.h"

namespace tw {

// A reply held back until its batch is durable: the caller's callback and its result.
template <typename T>
struct HeldReply {
  HeldReply(Callback<T> d, Result<T> r) : done(std::move(d)), result(std::move(r)) {}
  Callback<T> done;
  Result<T> result;
};
// The replies of the hot paths are held inline (no allocation per reply); the rare ones as one
// closure, run with nullptr when the batch is durable, else with the failure.
using HeldClosure = std::function<void(const Status*)>;
using Held = std::variant<HeldReply<Empty>, HeldReply<IssueTaskReply>,
                          HeldReply<GetActivityTaskReply>, HeldReply<CompletionReply>, HeldClosure>;

// A batch taken off the core by Seal(): its mutations and its held-back replies.
struct SealedBatch {
  std::unique_ptr<WriteBatch> batch;
  std::vector<Held> replies;  // in the order the commands were applied
  EventLog::Range events;     // the durable range once this batch is written
  Status poisoned;            // not ok: the core was poisoned when sealed, so nothing is written
};

class EngineCore {
 public:
  // REQUIRES: store, codec and clock outlive the core.
  EngineCore(const EngineOptions& options, Store* store, const TokenCodec* codec, Clock* clock);
  EngineCore(const EngineCore&) = delete;
  EngineCore& operator=(const EngineCore&) = delete;

  // Rebuilds the in-memory index, queues and timers from the store. Call once, first.
  Status Recover();

  // One group commit: Apply any number of commands, Expire, then Commit. Commit writes and
  // (per options) syncs the batch, then releases its replies and events; on failure it poisons
  // the core and answers the batch's commands kUnavailable.
  // `read_clock` false applies `cmd` at the time the previous command read (the engine thread
  // reads the clock for the first command of each drained run and every few after: every
  // command of a run was queued before its first read, so a command's time still lies between
  // its submission and its application).
  void Apply(Command&& cmd, bool read_clock = true);
  // Fires due timers, at most `budget`. Returns true when none are left due at now_ms.
  bool Expire(int64_t now_ms, size_t budget);
  // Drops terminal records past retention (bounded per call). Returns true if it did any.
  bool Retire(int64_t now_ms);
  // Commit = Seal, WriteSealed, CompleteSealed, OnDurable, all on this thread.
  Status Commit();

  // The pipelined form of Commit, for the runtime: the engine thread Seals batch N and hands
  // it to a writer thread, which calls WriteSealed in seal order, while the engine thread
  // applies (and may seal) batch N+1; or it calls WriteSealed itself (EngineOptions::commit).
  // Once N is written, the engine thread calls OnDurable then CompleteSealed for it, in seal
  // order. Replies therefore run in batch order,
  // each only after its own batch is durable. A writer that saw a failed write must not write
  // any later batch: it hands them back with that failure (they were applied on top of it).
  // REQUIRES (Seal): fewer than limits::kBatchesInFlightMax batches sealed and not yet passed
  // to OnDurable.
  SealedBatch Seal();
  // Any one thread at a time (the writer, or the engine thread when it writes inline);
  // touches only the sealed batch and the store.
  Status WriteSealed(SealedBatch* sealed);
  // Engine thread, after WriteSealed: publishes the durable event range, runs the replies,
  // then calls the event listener.
  // `every_few`, if set, runs after every 256 replies (the runtime looks whether the writer
  // went idle); it may Seal.
  void CompleteSealed(SealedBatch* sealed, const Status& write_status,
                      const std::function<void()>& every_few = nullptr);
  // Engine thread: the oldest sealed batch is done; forget its overlay, poison on failure.
  void OnDurable(const Status& write_status);
  size_t batches_in_flight() const { return pending_.batches_in_flight(); }
  // Frees the buffers kept for reuse across batches (reply vectors, emptied overlays), which
  // grow to the largest batch seen. For an engine going idle. REQUIRES: nothing in flight.
  void ReleaseBatchBuffers();
  // The open batch is full: batch_commands_max commands or kExpiriesPerBatchMax timer
  // firings since the last Seal. The runtime seals a full batch without waiting for the writer.
  bool open_batch_full() const {
    return commands_ - commands_at_seal_ >= options_.batch_commands_max ||
           expiries_ - expiries_at_seal_ >= limits::kExpiriesPerBatchMax;
  }
  // Shutdown: answers every waiting poll empty and every waiting Sync kUnavailable. The
  // replies are released at the next Commit.
  void AnswerAllPollsEmpty();

  // Cache hints for the runtime's apply loop, which knows the commands it is about to apply.
  // With 10^6 tasks live, a completion misses the caches on a chain of dependent loads: its
  // index bucket, its task, its timer entry, that entry's list neighbours. Prefetch(cmd, s)
  // starts link s of the chain (0 <= s < kPrefetchStages) with ordinary reads of the links
  // before it (stages 2 and 3 run a Find), which are cheap once those have arrived: the
  // runtime calls the stages of one command one command apart, the last one command before
  // it applies it, and the misses of several commands overlap. Changes nothing; a no-op for
  // commands without a task id. Worth it only when prefetching() (checked once per batch).
  static constexpr size_t kPrefetchStages = 4;
  void Prefetch(const Command& cmd, int stage) const;
  // At least options.prefetch_min_live_tasks tasks are live: below, everything is in cache.
  bool prefetching() const { return tasks_.size() >= options_.prefetch_min_live_tasks; }

  bool poisoned() const { return poisoned_; }
  const Status& poison_status() const { return poison_status_; }
  // The figures GetStats reports, as of the batch being built (not the engine's own counters:
  // the runtime adds those).
  EngineStats StatsNow() const;
  bool has_pending() const { return !replies_.empty() || batch_->Count() > 0 || counters_dirty_; }
  std::optional<int64_t> NextDeadline() const { return wheel_.NextDeadline(); }
  // Durable event range, published after each successful Commit and before its replies run.
  // Thread-safe.
  uint64_t last_event_seq() const { return events_.published_last(); }
  uint64_t first_event_seq() const { return events_.published_first(); }
  size_t live_tasks() const { return tasks_.size(); }
  size_t bytes_allocated() const { return tasks_.bytes_allocated() + wheel_.bytes_allocated(); }
  uint64_t recovered_tasks() const { return recovered_tasks_; }
  // The event listener runs after each Commit that made new events durable.
  void set_event_listener(std::function<void(uint64_t)> fn) { event_listener_ = std::move(fn); }
  // Event ARNs for ReadEvents on other threads: activity id -> ARN. Thread-safe.
  std::string ArnForActivityId(uint64_t activity_id) const {
    return registry_.ArnForActivityId(activity_id);
  }

  // Asserts the invariants above and those of every part (the simulation calls it after each
  // step). O(live tasks + activities): for tests.
  void CheckInvariants();

 private:
  // The door: a poisoned core answers here, so no handler checks. True: `cmd` was answered.
  bool RefusedWhilePoisoned(Command& cmd);

  void Handle(CreateActivityCmd& c);
  void Handle(DeleteActivityCmd& c);
  void Handle(DescribeActivityCmd& c);
  void Handle(ListActivitiesCmd& c);
  void Handle(IssueCmd& c);
  void Handle(PollCmd& c);
  void Handle(WithdrawCmd& c);
  void Handle(ReturnCmd& c);
  void Handle(SuccessCmd& c);
  void Handle(FailureCmd& c);
  void Handle(HeartbeatCmd& c);
  void Handle(CancelCmd& c);
  void Handle(DescribeCmd& c);
  void Handle(RegisterConsumerCmd& c);
  void Handle(DeleteConsumerCmd& c);
  void Handle(AckCmd& c);
  void Handle(StatsCmd& c);
  void Handle(SyncCmd& c);

  template <typename T>
  void Reply(Callback<T>& done, Result<T> r);
  template <typename T>
  void ReplyFail(Callback<T>& done, Error e) {
    Reply(done, Result<T>::Fail(std::move(e)));
  }
  // A read of the store failed: poison, and answer kUnavailable.
  template <typename T>
  void ReplyReadFailure(Callback<T>& done, const Status& s) {
    // InvalidArgument: the store cannot read this one record with its configuration (sealed
    // under a payload key the key file no longer lists, storage/payload_cipher.h). The store
    // and every other record are fine, so this is not a storage failure: the call gets
    // InternalFailure naming the record and the key id, and the engine stays up.
    if (s.code() == Status::Code::kInvalidArgument) {
      return ReplyFail(done, Error::Make(ErrorCode::kInternal, s.message()));
    }
    Poison(s);
    ReplyFail(done, UnavailableError(s.ToString()));
  }

  // Task transitions.
  uint32_t NewTask(const IssueTaskRequest& req, uint32_t activity_slot);
  void StartTask(uint32_t slot, const std::string& worker);
  void ArmTimer(uint32_t slot);
  LiveRecord LiveRecordOf(const LiveTask& t) const;
  // Ends a live task: writes the end, deletes live, appends event and retention entry, frees it.
  void Finish(uint32_t slot, TaskStateRecord end);
  // Success, failure and cancel: the first terminal transition wins; an identical retry of it
  // answers duplicate; any other call on a finished task is refused with the reason.
  void Complete(const TaskId& id, TaskStateRecord end, bool require_started,
                Callback<CompletionReply>& done);
  void OnTimer(uint32_t slot);
  // Times the task out if a deadline passed, even if the wheel has not reached it yet, so a
  // late call never beats its own timeout. Returns true if the task ended.
  bool TimeOutIfDue(uint32_t slot);
  // The slot of a live task, after timing it out if it is overdue (then kNilSlot).
  uint32_t FindLive(const TaskId& id);
  // Hands the activity's first queued task to its first waiting poll, if both exist.
  void HandOutToWaiter(uint32_t activity_slot);
  // The refusal or duplicate answer for a completion on a task that is not live.
  // Returns true and sets *duplicate when `matches` says the recorded outcome is this one.
  Error NotLiveError(const TaskId& id, const Outcome* matches, bool* duplicate);
  // Fills the parts of a description the records hold; false (poisoned) on a failed read.
  bool DescribeFromRecords(const TaskId& id, bool live, TaskDescription* d, Status* failure);

  // Reads: pending records first, then the store.
  Status ReadIssue(const TaskId& id, TaskIssueRecord* out);
  Status ReadState(const TaskId& id, TaskStateRecord* out);
  // The task's end record; NotFound while it has none. With `v1_fallback`, a terminal state
  // record, which is where format version 1 kept the end.
  Status ReadEnd(const TaskId& id, TaskStateRecord* out, bool v1_fallback = true);
  Status FindIdempotencyKey(const std::string& key, TaskId* out);
  void Poison(const Status& s);

  EngineOptions options_;
  Store* store_;
  const TokenCodec* codec_;
  Clock* clock_;
  int64_t now_ms_ = 0;  // the batch's time
  TaskIdGenerator task_ids_;

  TaskTable tasks_;
  TimingWheel wheel_;
  ActivityRegistry registry_;
  EventLog events_;
  PendingRecords pending_;

  // Counters persisted with PutCounters (the event sequence is the EventLog's).
  uint64_t next_activity_id_ = 1;
  uint64_t next_queue_seq_ = 1;
  bool counters_dirty_ = false;

  // The batch being built.
  std::unique_ptr<WriteBatch> batch_;
  // Each reply runs after the batch is durable, or answers kUnavailable when the batch failed
  // to commit. spare_replies_: a finished batch's emptied vector, reused by the next Seal.
  std::vector<Held> replies_;
  std::vector<Held> spare_replies_;

  // Sync barriers wait here until Expire has caught up with every due timer.
  std::vector<Callback<Empty>> sync_waiters_;

  bool poisoned_ = false;
  Status poison_status_;
  uint64_t recovered_tasks_ = 0;
  uint64_t batches_ = 0;
  uint64_t commands_ = 0;
  uint64_t commands_at_seal_ = 0;
  uint64_t expiries_ = 0;  // wheel firings (a firing may re-arm instead of timing out)
  uint64_t expiries_at_seal_ = 0;
  std::array<uint64_t, 4> timeouts_{};          // EngineStats::timeouts
  LatencyBuckets::Counts batch_commands_{};     // EngineStats::batch_commands
  LatencyBuckets::Counts timer_lateness_us_{};  // EngineStats::timer_lateness_us
  uint64_t timer_lateness_max_us_ = 0;
  std::function<void(uint64_t)> event_listener_;
};

// A held reply whose batch failed: the answer is the storage failure.
template <typename T>
Result<T> FailedBatchResult(const Status& failure) {
  return Result<T>::Fail(StorageFailureError(failure.ToString()));
}

template <typename T>
inline void EngineCore::Reply(Callback<T>& done, Result<T> r) {
  if (!done) return;
  if constexpr (std::is_constructible_v<Held, HeldReply<T>>) {
    replies_.emplace_back(std::in_place_type<HeldReply<T>>, std::move(done), std::move(r));
  } else {
    replies_.emplace_back(std::in_place_type<HeldClosure>,
                          [cb = std::move(done), r = std::move(r)](const Status* failure) mutable {
                            cb(failure == nullptr ? std::move(r) : FailedBatchResult<T>(*failure));
                          });
  }
}

}  // namespace tw
