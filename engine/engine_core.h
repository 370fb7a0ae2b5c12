// EngineCore: the deterministic, single-threaded heart of the engine. It applies commands to
// the in-memory state, fires timers, and collects every resulting mutation into one store
// WriteBatch per group commit; replies are held until that batch is durable. The runtime
// (engine_impl.cc) wraps it in a thread and a bounded queue; the simulation drives it directly.
//
// Invariants:
//  1. A task is in TaskTable iff it is live (SCHEDULED or STARTED), and then it has exactly one
//     armed timer iff it has any deadline.
//  2. A SCHEDULED task is linked in exactly one activity FIFO; a STARTED one in none.
//  3. Every terminal transition writes its end record (without reading the start record),
//     deletes its live record, appends one event and one retention entry, all in the same batch.
//  4. No reply or event leaves before the batch it depends on is durable (Commit returned Ok).
//     A heartbeat OK on a task whose start is durable depends on none: it leaves during Apply.
//  5. After a failed Commit the core is poisoned: it answers every command kUnavailable (Stats
//     at once, without a batch) and writes nothing more. The runtime stops firing its timers
//     and replaces it with a core recovered from the reopened store (engine.h, "Storage
//     failures").
// Thread: one thread at a time (the engine thread).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/store.h"
#include "engine/task_table.h"
#include "engine/timing_wheel.h"
#include "engine/token.h"

namespace tw {

// ---- Commands: requests already validated on the caller's thread ----
struct CreateActivityCmd {
  CreateActivityRequest req;
  Callback<ActivityInfo> done;
};
struct DeleteActivityCmd {
  DeleteActivityRequest req;
  Callback<Empty> done;
};
struct DescribeActivityCmd {
  DescribeActivityRequest req;
  Callback<ActivityInfo> done;
};
struct ListActivitiesCmd {
  ListActivitiesRequest req;
  Callback<ListActivitiesReply> done;
};
struct IssueCmd {
  IssueTaskRequest req;
  Callback<IssueTaskReply> done;
};
struct PollCmd {
  GetActivityTaskRequest req;
  uint64_t poll_id = 0;
  Callback<GetActivityTaskReply> done;
};
struct WithdrawCmd {
  uint64_t poll_id = 0;
};
struct ReturnCmd {
  TaskId id;
};
struct SuccessCmd {
  TaskId id;
  std::string output;
  Callback<CompletionReply> done;
};
struct FailureCmd {
  TaskId id;
  std::optional<std::string> error;
  std::optional<std::string> cause;
  Callback<CompletionReply> done;
};
struct HeartbeatCmd {
  TaskId id;
  Callback<Empty> done;
};
struct CancelCmd {
  TaskId id;
  Callback<CompletionReply> done;
};
struct DescribeCmd {
  TaskId id;
  Callback<TaskDescription> done;
};
struct RegisterConsumerCmd {
  std::string name;
  Callback<ConsumerInfo> done;
};
struct DeleteConsumerCmd {
  std::string name;
  Callback<Empty> done;
};
struct AckCmd {
  std::string name;
  uint64_t seq = 0;
  Callback<Empty> done;
};
struct StatsCmd {
  Callback<EngineStats> done;
};
struct SyncCmd {
  Callback<Empty> done;
};

using Command = std::variant<CreateActivityCmd, DeleteActivityCmd, DescribeActivityCmd,
                             ListActivitiesCmd, IssueCmd, PollCmd, WithdrawCmd, ReturnCmd,
                             SuccessCmd, FailureCmd, HeartbeatCmd, CancelCmd, DescribeCmd,
                             RegisterConsumerCmd, DeleteConsumerCmd, AckCmd, StatsCmd, SyncCmd>;

// Copies a terminal outcome (state, timeout kind, output, error, cause) between the records and
// replies that carry one; from an rvalue the strings are moved. The time field is named
// differently in each, so callers set it.
template <typename From, typename To>
void AssignOutcome(From&& from, To* to) {
  to->state = from.state;
  to->timeout_kind = from.timeout_kind;
  to->output = std::forward<From>(from).output;
  to->has_error = from.has_error;
  to->has_cause = from.has_cause;
  to->error = std::forward<From>(from).error;
  to->cause = std::forward<From>(from).cause;
}

// Task id -> V for one batch's overlay: the entries in a flat vector, found through an
// open-addressing index of their positions. clear() keeps both allocations, so an overlay that
// is reused costs no allocation per entry (a node-based map cost one malloc and free each).
// Invariant: index_ is empty or a power of two more than twice items_.size(); each entry of
// items_ is referenced by exactly one index slot (value = position + 1; 0 = empty).
template <typename V>
class TaskOverlayMap {
 public:
  // The entry for id, appended default-constructed if absent.
  V& operator[](const TaskId& id) {
    if (2 * (items_.size() + 1) >= index_.size()) Grow();
    size_t i = Home(id);
    for (; index_[i] != 0; i = (i + 1) & (index_.size() - 1)) {
      auto& item = items_[index_[i] - 1];
      if (item.first == id) return item.second;
    }
    items_.emplace_back(id, V());
    index_[i] = static_cast<uint32_t>(items_.size());
    return items_.back().second;
  }
  const V* find(const TaskId& id) const {
    if (items_.empty()) return nullptr;
    for (size_t i = Home(id); index_[i] != 0; i = (i + 1) & (index_.size() - 1)) {
      const auto& item = items_[index_[i] - 1];
      if (item.first == id) return &item.second;
    }
    return nullptr;
  }
  void clear() {
    if (items_.empty()) return;
    items_.clear();
    std::fill(index_.begin(), index_.end(), 0);
  }
  size_t size() const { return items_.size(); }

 private:
  size_t Home(const TaskId& id) const { return TaskIdHash()(id) & (index_.size() - 1); }
  void Grow() {
    index_.assign(std::max<size_t>(64, 2 * index_.size()), 0);
    for (size_t k = 0; k < items_.size(); ++k) {
      size_t i = Home(items_[k].first);
      while (index_[i] != 0) i = (i + 1) & (index_.size() - 1);
      index_[i] = static_cast<uint32_t>(k + 1);
    }
  }

  std::vector<std::pair<TaskId, V>> items_;
  std::vector<uint32_t> index_;
};

// Records written by a batch that is not durable yet; the engine reads its own writes here.
struct Overlay {
  TaskOverlayMap<TaskIssueRecord> issue;
  TaskOverlayMap<TaskStateRecord> state;
  TaskOverlayMap<TaskStateRecord> end;
  std::unordered_map<std::string, TaskId> idempotency;  // rare: only issues with a key

  void clear() {
    issue.clear();
    state.clear();
    end.clear();
    idempotency.clear();
  }
};

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
  std::vector<Held> replies;    // in the order the commands were applied
  uint64_t last_event_seq = 0;  // the durable range once this batch is written
  uint64_t first_event_seq = 1;
  bool new_events = false;
  Status poisoned;  // not ok: the core was poisoned when sealed, so nothing is written
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
  size_t batches_in_flight() const { return inflight_.size(); }
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
  uint64_t last_event_seq() const { return published_last_seq_.load(std::memory_order_acquire); }
  uint64_t first_event_seq() const { return published_first_seq_.load(std::memory_order_acquire); }
  size_t live_tasks() const { return tasks_.size(); }
  size_t bytes_allocated() const { return tasks_.bytes_allocated() + wheel_.bytes_allocated(); }
  uint64_t recovered_tasks() const { return recovered_tasks_; }
  // The event listener runs after each Commit that made new events durable.
  void set_event_listener(std::function<void(uint64_t)> fn) { event_listener_ = std::move(fn); }
  // Event ARNs for ReadEvents on other threads: activity id -> ARN. Thread-safe.
  std::string ArnForActivityId(uint64_t activity_id) const;

 private:
  struct Waiter {
    uint64_t poll_id;
    std::string worker;
    Callback<GetActivityTaskReply> done;
  };
  struct Activity {
    uint64_t id = 0;
    std::string name;
    std::string arn;
    int64_t creation_ms = 0;
    bool deleted = false;
    uint32_t head = kNilSlot;  // FIFO of SCHEDULED task slots
    uint32_t tail = kNilSlot;
    uint64_t queued = 0;
    uint64_t live_refs = 0;  // live tasks pointing at this slot (keeps a deleted slot alive)
    std::deque<Waiter> waiters;
  };

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
  void ReplyError(Callback<T>& done, ErrorCode code, std::string message) {
    Reply(done, Result<T>::Fail(Error::Make(code, std::move(message))));
  }
  template <typename T>
  void ReplyFail(Callback<T>& done, Error e) {
    Reply(done, Result<T>::Fail(std::move(e)));
  }

  // Activities.
  uint32_t FindActivityByArn(const std::string& arn) const;  // kNilSlot if none / deleted
  ActivityInfo InfoOf(const Activity& a) const;
  std::string MakeArn(const std::string& name) const;
  uint32_t AllocateActivitySlot();
  void ReleaseActivityRef(uint32_t activity_slot);

  // Tasks.
  void StartTask(uint32_t slot, const std::string& worker, int64_t now_ms);
  void Enqueue(uint32_t activity_slot, uint32_t slot, bool at_head);
  void Unlink(uint32_t slot);
  void ArmTimer(uint32_t slot);
  LiveRecord LiveRecordOf(const LiveTask& t) const;
  // Ends a live task: writes state, deletes live, appends event and retention entry, frees it.
  void Finish(uint32_t slot, TaskStateRecord end);
  // Success, failure and cancel: the first terminal transition wins; an identical retry of it
  // answers duplicate; any other call on a finished task is refused with the reason.
  void Complete(const TaskId& id, TaskStateRecord end, bool require_started,
                Callback<CompletionReply>& done);
  void OnTimer(uint32_t slot, int64_t now_ms);
  // Which clock of a live task has run out at now_ms_ (kNone if none).
  TimeoutKind DueTimeout(const LiveTask& t) const;
  // Times the task out if a deadline passed, even if the wheel has not reached it yet, so a
  // late call never beats its own timeout. Returns true if the task ended.
  bool TimeOutIfDue(uint32_t slot);
  // The slot of a live task, after timing it out if it is overdue (then kNilSlot).
  uint32_t FindLive(const TaskId& id);
  bool HandOutToWaiter(uint32_t activity_slot, int64_t now_ms);
  // The refusal or duplicate answer for a completion on a task that is not live.
  // Returns true and sets *duplicate when `matches` says the recorded outcome is this one.
  Error NotLiveError(const TaskId& id, const std::function<bool(const TaskStateRecord&)>& matches,
                     bool* duplicate);
  Status ReadIssue(const TaskId& id, TaskIssueRecord* out);
  Status ReadState(const TaskId& id, TaskStateRecord* out);
  // Whether the task's issue and its latest state record are durable: no open or in-flight
  // batch holds either.
  bool StateIsDurable(const TaskId& id) const;
  // The task's end record; NotFound while it has none. Falls back to a terminal state record,
  // which is where format version 1 kept the end.
  Status ReadEnd(const TaskId& id, TaskStateRecord* out);
  Status FindIdempotencyKey(const std::string& key, TaskId* out);
  void MaybeTrimEvents();
  void Poison(const Status& s);

  EngineOptions options_;
  Store* store_;
  const TokenCodec* codec_;
  Clock* clock_;
  int64_t now_ms_ = 0;  // the batch's time
  TaskIdGenerator task_ids_;

  TaskTable tasks_;
  TimingWheel wheel_;
  std::vector<Activity> activities_;
  std::vector<uint32_t> free_activity_slots_;
  // Live activities only, sorted for listing; transparent, so an ARN's name looks up in place.
  std::map<std::string, uint32_t, std::less<>> activity_by_name_;
  const std::string arn_prefix_;                          // MakeArn(""), for FindActivityByArn
  std::unordered_map<uint64_t, uint32_t> poll_activity_;  // waiting poll id -> activity slot
  size_t waiting_polls_ = 0;

  // Counters persisted with PutCounters.
  uint64_t next_event_seq_ = 1;
  uint64_t first_event_seq_ = 1;
  uint64_t next_activity_id_ = 1;
  uint64_t next_queue_seq_ = 1;
  bool counters_dirty_ = false;
  std::map<std::string, uint64_t> consumers_;

  // The batch being built.
  std::unique_ptr<WriteBatch> batch_;
  // Each reply runs after the batch is durable, or answers kUnavailable when the batch failed
  // to commit. spare_replies_: a finished batch's emptied vector, reused by the next Seal.
  std::vector<Held> replies_;
  std::vector<Held> spare_replies_;
  // Read-your-writes: records of the batch being built, and of the sealed batches in flight
  // (oldest first; at most limits::kBatchesInFlightMax). Reads look newest first.
  Overlay overlay_;
  std::deque<Overlay> inflight_;
  std::vector<Overlay> spare_overlays_;  // emptied by OnDurable, reused by Seal

  // Sync barriers wait here until Expire has caught up with every due timer.
  std::vector<Callback<Empty>> sync_waiters_;
  std::atomic<uint64_t> published_last_seq_{0};
  std::atomic<uint64_t> published_first_seq_{1};

  bool poisoned_ = false;
  Status poison_status_;
  uint64_t durable_last_event_seq_ = 0;
  uint64_t recovered_tasks_ = 0;
  uint64_t batches_ = 0;
  uint64_t commands_ = 0;
  uint64_t commands_at_seal_ = 0;
  uint64_t expiries_ = 0;               // wheel firings (a firing may re-arm instead of timing out)
  std::array<uint64_t, 4> timeouts_{};  // EngineStats::timeouts
  LatencyBuckets::Counts batch_commands_{};  // EngineStats::batch_commands
  uint64_t expiries_at_seal_ = 0;
  std::function<void(uint64_t)> event_listener_;

  mutable std::mutex arn_mu_;
  std::unordered_map<uint64_t, std::string> arn_by_activity_id_;  // guarded by arn_mu_
};

}  // namespace tw
