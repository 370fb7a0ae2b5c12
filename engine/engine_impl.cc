// The engine runtime: a bounded command queue, one engine thread running group commits over an
// EngineCore, and the caller-side validation that keeps CPU work off the engine thread.
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <thread>
#include <type_traits>

#include "engine/assert.h"
#include "engine/engine.h"
#include "engine/engine_core.h"
#include "engine/reply_burst.h"
#include "engine/token.h"
#include "engine/validate.h"

namespace tw {

const char* CommitModeName(CommitMode mode) {
  switch (mode) {
    case CommitMode::kPipelined:
      return "pipelined";
    case CommitMode::kInline:
      return "inline";
    case CommitMode::kAdaptive:
      return "adaptive";
  }
  return "?";
}

bool ParseCommitMode(std::string_view name, CommitMode* mode) {
  for (CommitMode m : {CommitMode::kPipelined, CommitMode::kInline, CommitMode::kAdaptive}) {
    if (name == CommitModeName(m)) {
      *mode = m;
      return true;
    }
  }
  return false;
}

namespace {

// How long the engine thread sleeps at most with nothing to do: bounds how late retention
// runs and how quickly a moved ManualClock is noticed without a command.
constexpr int64_t kIdleWaitMsMax = 100;
constexpr int64_t kRetireEveryMs = 1000;
// While applying a long run of commands, how often the engine thread looks whether the writer
// went idle (and then hands it the batch so far).
constexpr size_t kCommandsPerWriterCheck = 256;
// The engine thread reads the clock for the first command of a drained run and then every this
// many commands (EngineCore::Apply): a command takes ~1 us, a clock read ~50 ns on this VM.
constexpr size_t kCommandsPerClockRead = 16;
// Answers given while applying go out once per this many commands applied (ReplyBurst): one
// wake-up of a front end per run of commands, and a heartbeat's answer waits for at most this
// many more commands (~0.25 ms).
constexpr size_t kCommandsPerReplyBurst = 256;

// Engine::Cork of the calling thread: which engine it holds wake-ups for, whether the engine
// thread still has to be woken for a command this thread queued, and how many commands it
// queued since the engine thread was last woken for it.
struct CorkState {
  const void* engine = nullptr;
  bool wake_pending = false;
  size_t held = 0;
};
thread_local CorkState t_cork;

template <typename T>
void Fail(Callback<T>& done, ErrorCode code, std::string message) {
  if (done) done(Result<T>::Fail(Error::Make(code, std::move(message))));
}

template <typename T>
bool FailIf(const Error& e, Callback<T>& done) {
  if (e.ok()) return false;
  if (done) done(Result<T>::Fail(e));
  return true;
}

class EngineImpl final : public Engine {
 public:
  EngineImpl(const EngineOptions& options, std::unique_ptr<Store> store,
             std::unique_ptr<TokenCodec> codec, Clock* clock)
      : options_(options),
        store_(std::move(store)),
        codec_(std::move(codec)),
        clock_(clock),
        core_(std::make_unique<EngineCore>(options_, store_.get(), codec_.get(), clock_)) {}

  ~EngineImpl() override { Stop(); }

  Status Start() {
    const int64_t t0 = clock_->NowMs();
    Status s = core_->Recover();
    recovery_ms_.store(clock_->NowMs() - t0, std::memory_order_relaxed);
    recovered_tasks_.store(core_->recovered_tasks(), std::memory_order_relaxed);
    if (!s.ok()) return s;
    InstallEventListener(core_.get());
    if (writer_thread_) {
      writer_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "tw-writer");
        RunWriter();
      });
    }
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "tw-engine");
      Run();
    });
    return Status::Ok();
  }

  void Cork() override {
    TW_ASSERT(t_cork.engine == nullptr);  // one corked engine per thread
    t_cork = CorkState{this, false, 0};
  }
  void Uncork() override {
    TW_ASSERT(t_cork.engine == this);
    const bool wake = t_cork.wake_pending;
    t_cork = CorkState{};
    if (wake) WakeForCommands();
  }

  void Stop() override {
    std::lock_guard<std::mutex> stop_lock(stop_mu_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    {
      // Health says so from now on (after stopping_: a reopen that reads stopping_ false sets
      // health before this overrides it).
      std::lock_guard<std::mutex> lock(health_mu_);
      if (health_.ok) health_.error = "the engine is stopping";
      health_.ok = false;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
    if (writer_.joinable()) writer_.join();
    std::thread checkpoint;  // joined without the lock, which the thread takes at its end
    {
      std::lock_guard<std::mutex> lock(checkpoint_mu_);
      checkpoint = std::move(checkpoint_thread_);
    }
    if (checkpoint.joinable()) checkpoint.join();
  }

  // ---- Activities ----
  void CreateActivity(CreateActivityRequest req, Callback<ActivityInfo> done) override {
    if (FailIf(ValidateActivityName(req.name), done)) return;
    Enqueue(CreateActivityCmd{std::move(req), std::move(done)});
  }
  void DeleteActivity(DeleteActivityRequest req, Callback<Empty> done) override {
    if (FailIf(ValidateArn(req.arn, "activityArn"), done)) return;
    Enqueue(DeleteActivityCmd{std::move(req), std::move(done)});
  }
  void DescribeActivity(DescribeActivityRequest req, Callback<ActivityInfo> done) override {
    if (FailIf(ValidateArn(req.arn, "activityArn"), done)) return;
    Enqueue(DescribeActivityCmd{std::move(req), std::move(done)});
  }
  void ListActivities(ListActivitiesRequest req, Callback<ListActivitiesReply> done) override {
    if (FailIf(ValidateMaxResults(req.max_results), done)) return;
    Enqueue(ListActivitiesCmd{std::move(req), std::move(done)});
  }

  // ---- Tasks ----
  void IssueTask(IssueTaskRequest req, Callback<IssueTaskReply> done) override {
    if (!req.activity_arn.empty() && FailIf(ValidateArn(req.activity_arn, "activityArn"), done)) {
      return;
    }
    if (FailIf(ValidateInput(req.input), done)) return;
    if (FailIf(ValidateTimeouts(req.timeout_s, req.heartbeat_s, req.schedule_to_start_s,
                                !req.activity_arn.empty()),
               done)) {
      return;
    }
    if (req.correlation.size() > limits::kCorrelationBytesMax) {
      return Fail(done, ErrorCode::kValidation,
                  TooLongMessage("correlation", limits::kCorrelationBytesMax));
    }
    if (req.idempotency_key.size() > limits::kIdempotencyKeyBytesMax) {
      return Fail(done, ErrorCode::kValidation,
                  TooLongMessage("idempotencyKey", limits::kIdempotencyKeyBytesMax));
    }
    Enqueue(IssueCmd{std::move(req), std::move(done)});
  }

  void GetActivityTask(GetActivityTaskRequest req, uint64_t poll_id,
                       Callback<GetActivityTaskReply> done) override {
    if (FailIf(ValidateArn(req.activity_arn, "activityArn"), done)) return;
    if (FailIf(ValidateWorkerName(req.worker_name), done)) return;
    Enqueue(PollCmd{std::move(req), poll_id, std::move(done)});
  }
  void WithdrawPoll(uint64_t poll_id) override { Enqueue(WithdrawCmd{poll_id}, /*force=*/true); }
  void ReturnTask(std::string token) override {
    TaskId id;
    if (!DecodeToken(token, &id)) return;
    Enqueue(ReturnCmd{id}, /*force=*/true);
  }

  void SendTaskSuccess(SendTaskSuccessRequest req, Callback<CompletionReply> done) override {
    TaskId id;
    if (!CheckToken(req.token, &id, done)) return;
    if (FailIf(ValidateOutput(req.output), done)) return;
    Enqueue(SuccessCmd{id, std::move(*req.output), std::move(done)});
  }
  void SendTaskFailure(SendTaskFailureRequest req, Callback<CompletionReply> done) override {
    TaskId id;
    if (!CheckToken(req.token, &id, done)) return;
    if (FailIf(ValidateFailure(req.error, req.cause), done)) return;
    Enqueue(FailureCmd{id, std::move(req.error), std::move(req.cause), std::move(done)});
  }
  void SendTaskHeartbeat(SendTaskHeartbeatRequest req, Callback<Empty> done) override {
    TaskId id;
    if (!CheckToken(req.token, &id, done)) return;
    Enqueue(HeartbeatCmd{id, std::move(done)});
  }
  void CancelTask(CancelTaskRequest req, Callback<CompletionReply> done) override {
    TaskId id;
    if (!CheckToken(req.token, &id, done)) return;
    Enqueue(CancelCmd{id, std::move(done)});
  }
  void DescribeTask(DescribeTaskRequest req, Callback<TaskDescription> done) override {
    TaskId id;
    if (!CheckToken(req.token, &id, done)) return;
    Enqueue(DescribeCmd{id, std::move(done)});
  }

  // ---- Outcome stream ----
  void RegisterConsumer(std::string name, Callback<ConsumerInfo> done) override {
    if (name.empty() || name.size() > limits::kConsumerNameBytesMax) {
      FailIf(ConsumerNameError(), done);
      return;
    }
    Enqueue(RegisterConsumerCmd{std::move(name), std::move(done)});
  }
  void DeleteConsumer(std::string name, Callback<Empty> done) override {
    Enqueue(DeleteConsumerCmd{std::move(name), std::move(done)});
  }
  void AckEvents(std::string name, uint64_t seq, Callback<Empty> done) override {
    Enqueue(AckCmd{std::move(name), seq, std::move(done)});
  }

  Result<std::vector<OutcomeEvent>> ReadEvents(uint64_t from_seq, size_t max) override {
    max = std::min(max, limits::kEventsPerReadMax);
    std::shared_lock<std::shared_mutex> state(state_mu_);  // the store may be reopened
    if (!core_) {
      return Result<std::vector<OutcomeEvent>>::Fail(StorageFailure());
    }
    const uint64_t last = core_->last_event_seq();
    std::vector<OutcomeEvent> out;
    from_seq = std::max(from_seq, core_->first_event_seq());  // below it, trimmed
    if (from_seq > last || max == 0) return Result<std::vector<OutcomeEvent>>::Ok(std::move(out));
    max = std::min<uint64_t>(max, last - from_seq + 1);
    std::vector<EventRecord> records;
    Status s = store_->ReadEvents(from_seq, max, &records);
    if (!s.ok()) {
      return Result<std::vector<OutcomeEvent>>::Fail(
          Error::Make(ErrorCode::kUnavailable, s.ToString()));
    }
    out.reserve(records.size());
    for (EventRecord& r : records) {
      OutcomeEvent e;
      e.seq = r.seq;
      e.token = codec_->Encode(options_.shard, r.task_id);
      if (r.activity_id != 0) e.activity_arn = core_->ArnForActivityId(r.activity_id);
      e.time_ms = r.time_ms;
      e.correlation = std::move(r.correlation);
      e.outcome() = std::move(r.outcome());
      out.push_back(std::move(e));
    }
    return Result<std::vector<OutcomeEvent>>::Ok(std::move(out));
  }
  uint64_t LastEventSeq() const override {
    std::shared_lock<std::shared_mutex> state(state_mu_);
    return core_ ? core_->last_event_seq() : last_event_seq_without_core_;
  }
  void AddEventListener(std::function<void(uint64_t)> fn) override {
    std::lock_guard<std::mutex> lock(listener_mu_);
    listeners_.push_back(std::move(fn));
  }

  void GetStats(Callback<EngineStats> done) override {
    Enqueue(StatsCmd{[this, done = std::move(done)](Result<EngineStats> r) {
      if (r.ok()) {
        r.value.commit_latency_us = commit_latency_.Snapshot();
        r.value.commit_latency_max_us = commit_latency_.max_us();
        r.value.submit_wakes = submit_wakes_.load(std::memory_order_relaxed);
        r.value.queue_depth = queue_depth_.load(std::memory_order_relaxed);
        r.value.queue_max = options_.command_queue_max;
        r.value.queue_refusals = queue_refusals_.load(std::memory_order_relaxed);
        r.value.storage = Health();
      }
      if (done) done(std::move(r));
    }});
  }
  void Sync(Callback<Empty> done) override { Enqueue(SyncCmd{std::move(done)}); }

  void Checkpoint(std::string name, Callback<std::string> done) override {
    if (FailIf(CheckpointNameError(name), done)) return;
    const std::string dir = options_.backup_dir + "/" + name;
    std::lock_guard<std::mutex> lock(checkpoint_mu_);
    {
      std::lock_guard<std::mutex> state(mu_);
      if (stopping_) {
        FailIf(StoppingError(), done);
        return;
      }
    }
    if (checkpoint_running_) {
      FailIf(Error::Make(ErrorCode::kOverloaded, "a checkpoint is being written; try again"), done);
      return;
    }
    if (checkpoint_thread_.joinable()) checkpoint_thread_.join();  // the last one, finished
    checkpoint_running_ = true;
    checkpoint_thread_ = std::thread([this, dir, done = std::move(done)]() {
      Result<std::string> r = WriteCheckpoint(dir);
      {
        std::lock_guard<std::mutex> lock(checkpoint_mu_);
        checkpoint_running_ = false;
      }
      done(std::move(r));
    });
  }
  uint64_t RecoveredTasks() const override {
    return recovered_tasks_.load(std::memory_order_relaxed);
  }
  int64_t RecoveryMs() const override { return recovery_ms_.load(std::memory_order_relaxed); }
  StorageHealth Health() const override {
    std::lock_guard<std::mutex> lock(health_mu_);
    return health_;
  }

 private:
  bool DecodeToken(const std::string& token, TaskId* id) const {
    uint16_t shard = 0;
    return codec_->Decode(token, id, &shard) && shard == options_.shard;
  }

  // The MAC check happens here, on the caller's thread: a forged token costs no storage read
  // and no engine time.
  template <typename T>
  bool CheckToken(const std::string& token, TaskId* id, Callback<T>& done) {
    if (FailIf(ValidateTaskToken(token), done)) return false;
    if (!DecodeToken(token, id)) {
      FailIf(InvalidTokenError(), done);
      return false;
    }
    return true;
  }

  // Answers on the caller's thread when the queue is full or the engine is stopping. `force`
  // admits commands that release resources (withdraw, return) even when the queue is full:
  // dropping them would strand a task or a poll.
  template <typename C>
  void Enqueue(C&& cmd, bool force = false) {
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_) {
      lock.unlock();
      if constexpr (requires { cmd.done; }) {
        FailIf(StoppingError(), cmd.done);
      }
      return;
    }
    if (down_.load(std::memory_order_acquire)) {
      // The storage failed: refuse at the door, without queueing. Stats still go in (they are
      // answered while down), and so do the forced commands, which release resources.
      if constexpr (requires { cmd.done; } && !std::is_same_v<std::decay_t<C>, StatsCmd>) {
        lock.unlock();
        FailIf(StorageFailure(), cmd.done);
        return;
      }
    }
    if (!force && queue_.size() >= options_.command_queue_max) {
      lock.unlock();
      queue_refusals_.fetch_add(1, std::memory_order_relaxed);
      if constexpr (requires { cmd.done; }) {
        FailIf(ThrottlingError(), cmd.done);
      }
      return;
    }
    const bool was_empty = queue_.empty();
    queue_.emplace_back(std::forward<C>(cmd));
    queue_depth_.store(queue_.size(), std::memory_order_relaxed);
    if (t_cork.engine != this) {
      // Counted under mu_, so that the engine thread, which takes this command under mu_,
      // counts this wake-up in any Stats it answers afterwards.
      if (was_empty) submit_wakes_.fetch_add(1, std::memory_order_relaxed);
      lock.unlock();
      if (was_empty) cv_.notify_one();
      return;
    }
    lock.unlock();
    // Corked. The engine thread sleeps only with an empty queue, so it needs a wake-up iff a
    // command of this burst found the queue empty. It gets it at Uncork, or once
    // kCorkedCommandsPerWake commands have been held since then. A command that finds the
    // queue non-empty, with no wake-up pending here, is behind one that the engine thread is
    // already awake for, or will be woken for.
    if (was_empty && !t_cork.wake_pending) {
      t_cork.wake_pending = true;
      t_cork.held = 0;
    }
    if (t_cork.wake_pending && ++t_cork.held >= limits::kCorkedCommandsPerWake) {
      t_cork.wake_pending = false;
      WakeForCommands();
    }
  }

  // A corked thread's wake-up (Uncork, or a long burst): counted before it notifies. The
  // corked thread's own later commands and Stats come after it.
  void WakeForCommands() {
    submit_wakes_.fetch_add(1, std::memory_order_relaxed);
    cv_.notify_one();
  }

  // The engine thread: timers and commands into a batch, then hand it to the writer (or write
  // it here, per EngineOptions::commit: WriteHere). Group commit: while the writer writes and
  // syncs one batch, the engine keeps applying into the next, and hands it over the moment the
  // writer is free (or sooner when it is full). It runs each batch's replies once it is back
  // durable.
  void Run() {
    std::vector<Command> batch;
    batch.reserve(options_.batch_commands_max);
    int64_t last_retire_ms = 0;
    bool timers_behind = true;
    for (;;) {
      if (!core_) {
        // The failed store is closed and did not open again: see RunWithoutCore.
        if (RunWithoutCore()) return;
        continue;
      }
      bool stop = false;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (queue_.empty() && written_.empty() && !stopping_ && !timers_behind) {
          // Going idle with nothing in flight: give back what the busiest batch made grow.
          if (core_->batches_in_flight() == 0 && !core_->has_pending())
            core_->ReleaseBatchBuffers();
          const int64_t now = clock_->NowMs();
          int64_t wait_ms = kIdleWaitMsMax;
          if (auto next = core_->NextDeadline()) {
            wait_ms = std::clamp<int64_t>(*next - now, 0, wait_ms);
          }
          if (core_->poisoned() && options_.reopen_store) {
            wait_ms = std::clamp<int64_t>(next_reopen_ms_ - now, 0, wait_ms);
          }
          if (wait_ms > 0) cv_.wait_for(lock, std::chrono::milliseconds(wait_ms));
        }
        const size_t n = std::min(queue_.size(), options_.batch_commands_max);
        for (size_t i = 0; i < n; ++i) {
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
        queue_depth_.store(queue_.size(), std::memory_order_relaxed);
        stop = stopping_ && queue_.empty();
        reaped_.swap(written_);
      }
      // A batch came back: first keep the writer busy with what accumulated meanwhile, then
      // release the finished batch's replies (the sooner they run, the sooner callers send what
      // comes next).
      OnDurableReaped();
      if (writer_thread_ && WriterIdle()) SealIfPending();
      ReleaseReaped();
      // Timers first, then commands, then timers again: a command never races a timeout that
      // was already due when its batch began (handlers also check their own task's deadlines).
      const int64_t now = clock_->NowMs();
      // A poisoned core writes nothing more: its timers wait for the reopened store.
      timers_behind = !core_->poisoned() && !core_->Expire(now, limits::kExpiriesPerBatchMax);
      // Step k issues prefetch stage s for command k - s and applies command k - kStages, so
      // every command gets its stages one step apart, the first ones of a batch included.
      // Without prefetching, the loop starts at the first Apply.
      constexpr size_t kStages = EngineCore::kPrefetchStages;
      const bool prefetching = core_->prefetching();
      // Answers given while applying (a heartbeat on a task whose state is durable writes
      // nothing and is answered at once) go out in bursts of kCommandsPerReplyBurst commands.
      std::optional<ReplyBurst::Scope> burst(std::in_place);
      for (size_t k = prefetching ? 0 : kStages; k < batch.size() + kStages; ++k) {
        for (size_t stage = 0; prefetching && stage < kStages; ++stage) {
          if (k >= stage && k - stage < batch.size()) {
            core_->Prefetch(batch[k - stage], static_cast<int>(stage));
          }
        }
        if (k < kStages) continue;
        const size_t i = k - kStages;
        core_->Apply(std::move(batch[i]), i % kCommandsPerClockRead == 0);
        if ((i + 1) % kCommandsPerReplyBurst == 0) {
          burst.reset();
          burst.emplace();
        }
        // A writer that finished during a long run of commands should not wait for the rest.
        if (writer_thread_ && (i + 1) % kCommandsPerWriterCheck == 0 && WriterIdle()) {
          SealIfPending();
        }
      }
      burst.reset();
      batch.clear();
      if (!timers_behind && !core_->poisoned()) {
        timers_behind = !core_->Expire(now, limits::kExpiriesPerBatchMax);
      }
      if (now - last_retire_ms >= kRetireEveryMs && !core_->poisoned()) {
        core_->Retire(now);
        last_retire_ms = now;
      }
      if (stop) core_->AnswerAllPollsEmpty();
      // Otherwise the writer is busy and its completion wakes this thread, which then seals.
      // Without a writer thread it is always idle: the batch is written here (WriteHere).
      if (stop || WriterIdle() || core_->open_batch_full()) {
        while (core_->batches_in_flight() >= limits::kBatchesInFlightMax) WaitForWriter();
        SealIfPending(/*round_end=*/true, timers_behind);
      }
      if (stop) {
        while (core_->batches_in_flight() > 0) WaitForWriter();
        StopWriter();
        return;
      }
      if (core_->poisoned()) {
        MarkDown(core_->poison_status());
        if (ReopenDue()) {
          TearDownCore();
          TryReopen();
          timers_behind = true;  // a new core: its overdue timers fire at once
        }
      }
    }
  }

  // ---- Storage failures (engine.h, "Storage failures") ----

  // Engine thread: the core is poisoned. The first time, closes the door (Enqueue refuses every
  // call at once) and schedules the first reopen.
  void MarkDown(const Status& failure) {
    if (down_.load(std::memory_order_relaxed)) return;
    const int64_t now = clock_->NowMs();
    {
      std::lock_guard<std::mutex> lock(health_mu_);
      health_.ok = false;
      health_.error = failure.ToString();
      health_.failed_since_ms = now;
      ++health_.failures;
    }
    down_.store(true, std::memory_order_release);
    next_reopen_ms_ = now + options_.storage_retry_ms;
    Emit(options_.log,
         {LogLevel::kError,
          "engine",
          "storage_failure",
          std::string("storage failure, refusing calls") +
              (options_.reopen_store ? " until the store opens again" : " until a restart") + ": " +
              failure.ToString(),
          {{"error", failure.ToString()},
           {"retry_ms", options_.reopen_store ? std::to_string(options_.storage_retry_ms) : ""}}});
  }

  // Engine thread: the failed store can be closed and opened again: the reopen is configured
  // and due, and no batch is still with the writer (their replies must run first).
  bool ReopenDue() const {
    return options_.reopen_store && core_->batches_in_flight() == 0 &&
           clock_->NowMs() >= next_reopen_ms_;
  }

  // Engine thread: answers what the poisoned core still holds (waiting polls, the open batch's
  // replies: kUnavailable, as the failed batches'), then closes the store. Other threads' reads
  // (ReadEvents, LastEventSeq) wait for the exclusive lock.
  void TearDownCore() {
    TW_ASSERT(core_->poisoned());
    TW_ASSERT(core_->batches_in_flight() == 0);
    core_->AnswerAllPollsEmpty();
    if (core_->has_pending()) {
      ReplyBurst::Scope burst;
      SealedBatch sealed = core_->Seal();
      const Status s = core_->WriteSealed(&sealed);  // poisoned: writes nothing
      TW_ASSERT(!s.ok());
      core_->CompleteSealed(&sealed, s);
      core_->OnDurable(s);
    }
    stats_without_core_ = core_->StatsNow();
    std::unique_ptr<EngineCore> core;
    std::unique_ptr<Store> store;
    {
      std::unique_lock<std::shared_mutex> state(state_mu_);
      last_event_seq_without_core_ = core_->last_event_seq();
      core = std::move(core_);
      store = std::move(store_);
    }
    // Closing RocksDB can wait for its background work: not under the lock, which the front
    // ends' threads take for ReadEvents and LastEventSeq.
    core.reset();   // before the store it reads
    store.reset();  // closes it
  }

  // Engine thread, with the store closed: opens it again and rebuilds the state from it, as at
  // start-up. On failure the engine stays without a core and tries again storage_retry_ms later.
  bool TryReopen() {
    TW_ASSERT(!core_);
    const int64_t t0 = clock_->NowMs();
    std::unique_ptr<Store> store;
    std::unique_ptr<EngineCore> core;  // destroyed before `store` on every way out
    Status s = options_.reopen_store(&store);
    if (s.ok()) {
      core = std::make_unique<EngineCore>(options_, store.get(), codec_.get(), clock_);
      s = core->Recover();
    }
    if (!s.ok()) {
      next_reopen_ms_ = clock_->NowMs() + options_.storage_retry_ms;
      std::lock_guard<std::mutex> lock(health_mu_);
      health_.error = "reopening the store failed: " + s.ToString();
      if (reopen_failures_logged_++ % kReopenFailuresPerLog == 0) {
        Emit(options_.log,
             {LogLevel::kWarn,
              "engine",
              "storage_reopen_failed",
              health_.error + " (retrying every " + std::to_string(options_.storage_retry_ms) +
                  " ms)",
              {{"error", s.ToString()}, {"retry_ms", std::to_string(options_.storage_retry_ms)}}});
      }
      return false;
    }
    InstallEventListener(core.get());
    const uint64_t last_seq = core->last_event_seq();
    recovered_tasks_.store(core->recovered_tasks(), std::memory_order_relaxed);
    recovery_ms_.store(clock_->NowMs() - t0, std::memory_order_relaxed);
    {
      std::unique_lock<std::shared_mutex> state(state_mu_);
      store_ = std::move(store);
      core_ = std::move(core);
    }
    // No batch is in flight and the writer waits for one: the next hand-off (under
    // writer_mu_) publishes this to it.
    write_failed_ = Status::Ok();
    bool stopping = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping = stopping_;
    }
    {
      std::lock_guard<std::mutex> lock(health_mu_);
      health_.ok = !stopping;
      health_.error = stopping ? "the engine is stopping" : "";
      health_.failed_since_ms = 0;
      ++health_.recoveries;
    }
    reopen_failures_logged_ = 0;
    down_.store(false, std::memory_order_release);
    const std::string tasks = std::to_string(RecoveredTasks());
    const std::string ms = std::to_string(RecoveryMs());
    Emit(options_.log, {LogLevel::kInfo,
                        "engine",
                        "storage_recovered",
                        "storage works again; state rebuilt from the store: recovered_tasks=" +
                            tasks + " recovery_ms=" + ms,
                        {{"recovered_tasks", tasks}, {"recovery_ms", ms}}});
    // Subscribers re-read from their cursors: the store may hold events that were never
    // announced (a failed batch that reached the disk after all).
    NotifyListeners(last_seq);
    return true;
  }

  // Engine thread, while the store is closed after a failed reopen: answers the commands that
  // were queued before the door closed, and reopens every storage_retry_ms. True: stopping.
  bool RunWithoutCore() {
    std::vector<Command> commands;
    bool stop = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (queue_.empty() && !stopping_) {
        const int64_t wait_ms =
            std::clamp<int64_t>(next_reopen_ms_ - clock_->NowMs(), 0, kIdleWaitMsMax);
        if (wait_ms > 0) cv_.wait_for(lock, std::chrono::milliseconds(wait_ms));
      }
      while (!queue_.empty()) {
        commands.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      queue_depth_.store(0, std::memory_order_relaxed);
      stop = stopping_;
    }
    for (Command& c : commands) RefuseWithoutCore(c);
    if (stop) {
      StopWriter();
      return true;
    }
    if (clock_->NowMs() >= next_reopen_ms_) TryReopen();
    return false;
  }

  // Engine thread, without a core: Stats answer with the last figures and the health; every
  // other command with a reply is refused; withdrawals and returns have nothing left to act on
  // (TearDownCore answered every poll).
  void RefuseWithoutCore(Command& cmd) {
    std::visit(
        [this](auto& c) {
          if constexpr (std::is_same_v<std::decay_t<decltype(c)>, StatsCmd>) {
            if (c.done) c.done(Result<EngineStats>::Ok(stats_without_core_));
          } else if constexpr (requires { c.done; }) {
            FailIf(StorageFailure(), c.done);
          }
        },
        cmd);
  }

  Error CheckpointNameError(const std::string& name) const {
    if (options_.backup_dir.empty()) {
      return Error::Make(ErrorCode::kValidation,
                         "checkpoints are off: start tokenwheeld with --backup-dir DIR");
    }
    const bool chars_ok = std::all_of(name.begin(), name.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    });
    if (name.empty() || name.size() > limits::kCheckpointNameCharsMax || !chars_ok ||
        name[0] == '.') {
      return Error::Make(
          ErrorCode::kValidation,
          "a checkpoint name is 1 to " + std::to_string(limits::kCheckpointNameCharsMax) +
              " of A-Z a-z 0-9 . _ -, not starting with '.': " + name.substr(0, 200));
    }
    return Error{};
  }

  // The checkpoint thread: DIR/db from the store, DIR/token.key from the key file. A failure
  // leaves what was written (a directory the operator removes; never a restorable half).
  Result<std::string> WriteCheckpoint(const std::string& dir) {
    std::error_code ec;
    if (!std::filesystem::create_directory(dir, ec)) {
      return Result<std::string>::Fail(Error::Make(
          ec ? ErrorCode::kUnavailable : ErrorCode::kValidation,
          ec ? "cannot create " + dir + ": " + ec.message() : "already exists: " + dir));
    }
    Status s;
    {
      std::shared_lock<std::shared_mutex> state(state_mu_);  // the store may be reopened
      s = store_ != nullptr && core_ != nullptr && !down_.load()
              ? store_->Checkpoint(dir + "/db")
              : Status::Poisoned("the storage failed; no checkpoint until it works again");
    }
    if (s.ok() && !options_.token_key_file.empty()) {
      s = TokenCodec::CopyKeyFile(options_.token_key_file, dir + "/token.key");
    }
    if (!s.ok()) {
      return Result<std::string>::Fail(
          Error::Make(ErrorCode::kUnavailable, "checkpoint " + dir + ": " + s.ToString()));
    }
    return Result<std::string>::Ok(dir);
  }

  Error StorageFailure() const {
    std::lock_guard<std::mutex> lock(health_mu_);
    return StorageFailureError(health_.error);
  }

  void InstallEventListener(EngineCore* core) {
    core->set_event_listener([this](uint64_t seq) { NotifyListeners(seq); });
  }

  void NotifyListeners(uint64_t last_seq) {
    std::lock_guard<std::mutex> lock(listener_mu_);
    for (const auto& fn : listeners_) fn(last_seq);
  }

  // Engine thread. Every sealed batch has been written (or failed), by whichever thread.
  bool WriterIdle() const { return finished_.load(std::memory_order_acquire) == handed_; }

  // Engine thread: seals the open batch, if it holds anything and the pipeline has room (else a
  // finished batch is on its way back and wakes this thread), and writes it here (at the end of
  // a round only, see WriteHere) or hands it to the writer.
  void SealIfPending(bool round_end = false, bool timers_behind = false) {
    if (!core_->has_pending()) return;
    if (core_->batches_in_flight() >= limits::kBatchesInFlightMax) return;
    const bool here = round_end && WriteHere(timers_behind);
    SealedBatch sealed = core_->Seal();
    ++handed_;
    if (here) {
      // The next round of Run() releases it like a batch the writer handed back. Commands
      // that arrive during the sync wait in the queue and form the next batch.
      Written w = Write(std::move(sealed));
      std::lock_guard<std::mutex> lock(mu_);
      written_.push_back(std::move(w));
    } else {
      HandToWriter(std::move(sealed));
    }
  }

  // Engine thread, sealing at the end of a round: whether to write the batch on this thread
  // rather than hand it to the writer. kAdaptive does so only when nothing is left to overlap
  // the sync with (no command waiting, no due timer left for the next round) and no earlier
  // batch is in flight (batches are written and released in order; the writer is idle then).
  bool WriteHere(bool timers_behind) {
    switch (options_.commit) {
      case CommitMode::kPipelined:
        return false;
      case CommitMode::kInline:
        return true;
      case CommitMode::kAdaptive:
        break;
    }
    if (timers_behind || core_->batches_in_flight() != 0) return false;
    std::lock_guard<std::mutex> lock(mu_);
    return queue_.empty();
  }

  // Engine thread: the batches in reaped_ are written (or failed). A failure closes the door
  // (MarkDown) before their replies run, so that a caller who got kUnavailable finds the
  // engine down.
  void OnDurableReaped() {
    for (const Written& w : reaped_) core_->OnDurable(w.status);
    if (core_->poisoned()) MarkDown(core_->poison_status());
  }

  // Engine thread: runs the replies of the batches in reaped_ (OnDurable already done).
  void ReleaseReaped() {
    ReplyBurst::Scope burst;  // every reaped batch in one burst
    for (Written& w : reaped_) core_->CompleteSealed(&w.sealed, w.status, seal_if_writer_idle_);
    reaped_.clear();
  }

  // Engine thread: waits until the writer finished at least one more batch, and releases it.
  // REQUIRES: reaped_ is empty (replies run in batch order).
  void WaitForWriter() {
    TW_ASSERT(reaped_.empty());
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return !written_.empty(); });
      reaped_.swap(written_);
    }
    OnDurableReaped();
    ReleaseReaped();
  }

  // ---- Writing sealed batches, in order: the writer thread, or inline the engine thread ----
  // A sealed batch written (or failed), with its write status.
  struct Written {
    SealedBatch sealed;
    Status status;
  };
  void HandToWriter(SealedBatch sealed) {
    {
      std::lock_guard<std::mutex> lock(writer_mu_);
      to_write_.push_back(std::move(sealed));
    }
    writer_cv_.notify_one();
  }

  void StopWriter() {
    {
      std::lock_guard<std::mutex> lock(writer_mu_);
      writer_stop_ = true;
    }
    writer_cv_.notify_one();
  }

  void RunWriter() {
    for (;;) {
      SealedBatch sealed;
      {
        std::unique_lock<std::mutex> lock(writer_mu_);
        writer_cv_.wait(lock, [this] { return !to_write_.empty() || writer_stop_; });
        if (to_write_.empty()) return;
        sealed = std::move(to_write_.front());
        to_write_.pop_front();
      }
      Written w = Write(std::move(sealed));
      {
        std::lock_guard<std::mutex> lock(mu_);
        written_.push_back(std::move(w));
      }
      cv_.notify_one();
    }
  }

  // The writer thread, or the engine thread (WriteHere), never both at once: writes and syncs
  // one sealed batch and times it. After a failed write no later batch is written: each was
  // applied on top of it. The engine thread writes only with no batch in flight, so it has
  // taken every batch the writer wrote out of written_ (under mu_), and it hands the writer a
  // batch only after its own write (writer_mu_): what one thread left in write_failed_ and
  // commit_latency_ is visible to the other.
  Written Write(SealedBatch sealed) {
    Written w;
    w.sealed = std::move(sealed);
    const bool writes = write_failed_.ok() && w.sealed.poisoned.ok() && w.sealed.batch->Count() > 0;
    const auto t0 = std::chrono::steady_clock::now();
    w.status = write_failed_.ok() ? core_->WriteSealed(&w.sealed) : write_failed_;
    if (writes && w.status.ok()) {
      const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
          std::chrono::steady_clock::now() - t0);
      commit_latency_.Record(static_cast<uint64_t>(us.count()));
    }
    if (!w.status.ok() && write_failed_.ok()) write_failed_ = w.status;  // MarkDown logs it
    // Counted before it is visible in written_: an engine thread that finds it there also
    // finds the writer idle (if nothing else was handed to it meanwhile).
    finished_.fetch_add(1, std::memory_order_release);
    return w;
  }

  // A reopen failure is logged once every this many attempts (one a second by default).
  static constexpr uint64_t kReopenFailuresPerLog = 60;

  const EngineOptions options_;
  // The store and the core built on it. Replaced only by the engine thread, after a storage
  // failure (TearDownCore, TryReopen), under state_mu_ held exclusively; null in between when
  // the reopen failed. Other threads (ReadEvents, LastEventSeq) read them under state_mu_
  // shared; the writer thread uses them only for a batch it was handed, which orders it.
  std::unique_ptr<Store> store_;
  std::unique_ptr<TokenCodec> codec_;
  Clock* clock_;
  std::unique_ptr<EngineCore> core_;  // declared after store_: destroyed first
  mutable std::shared_mutex state_mu_;
  uint64_t last_event_seq_without_core_ = 0;  // guarded by state_mu_
  EngineStats stats_without_core_;            // engine thread
  // Storage health. down_ closes the door (Enqueue) from the failure until the reopen.
  std::atomic<bool> down_{false};
  mutable std::mutex health_mu_;
  StorageHealth health_;                 // guarded by health_mu_
  int64_t next_reopen_ms_ = 0;           // engine thread
  uint64_t reopen_failures_logged_ = 0;  // engine thread
  std::thread thread_;
  std::thread writer_;
  // Checkpoint: at most one being written, on its own thread (joined by the next one or Stop).
  std::mutex checkpoint_mu_;
  bool checkpoint_running_ = false;  // guarded by checkpoint_mu_
  std::thread checkpoint_thread_;    // guarded by checkpoint_mu_

  std::mutex writer_mu_;
  std::condition_variable writer_cv_;
  // Guarded by writer_mu_: sealed batches the writer has not taken yet, oldest first. With the
  // one being written and those in written_, at most limits::kBatchesInFlightMax.
  std::deque<SealedBatch> to_write_;
  bool writer_stop_ = false;         // guarded by writer_mu_
  Status write_failed_;              // the writing thread's (see Write): the first failed write
  LatencyHistogram commit_latency_;  // recorded by the writing thread; EngineStats
  std::atomic<uint64_t> submit_wakes_{0};  // EngineStats::submit_wakes; submitting threads
  std::atomic<int64_t> recovery_ms_{0};
  std::atomic<uint64_t> recovered_tasks_{0};

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Command> queue_;           // guarded by mu_; bounded by command_queue_max (+ forced)
  std::atomic<size_t> queue_depth_{0};  // queue_.size() as of its last change, for Stats
  std::atomic<uint64_t> queue_refusals_{0};  // commands refused because queue_ was full
  std::vector<Written> written_;  // guarded by mu_: written (by either thread), not released
  std::vector<Written> reaped_;   // engine thread only
  const bool writer_thread_ = options_.commit != CommitMode::kInline;
  // Engine thread: between runs of replies, a writer that went idle gets the open batch. Only a
  // writer thread: a sync here would hold back the rest of the replies.
  const std::function<void()> seal_if_writer_idle_ = [this] {
    if (writer_thread_ && WriterIdle()) SealIfPending();
  };
  uint64_t handed_ = 0;                // engine thread only: batches sealed for writing
  std::atomic<uint64_t> finished_{0};  // batches written or failed, by either thread
  bool stopping_ = false;              // guarded by mu_
  std::mutex stop_mu_;                 // serializes Stop()
  std::mutex listener_mu_;             // a listener must not call AddEventListener
  std::vector<std::function<void(uint64_t)>> listeners_;  // guarded by listener_mu_
};

}  // namespace

Result<std::unique_ptr<Engine>> Engine::Open(const EngineOptions& options,
                                             std::unique_ptr<Store> store, Clock* clock) {
  using R = Result<std::unique_ptr<Engine>>;
  TW_ASSERT(store != nullptr);
  TW_ASSERT(clock != nullptr);
  if (options.tick_ms == 0 || options.batch_commands_max == 0 || options.command_queue_max == 0) {
    return R::Fail(Error::Make(ErrorCode::kValidation, "tick, batch and queue sizes must be > 0"));
  }
  std::unique_ptr<TokenCodec> codec;
  if (options.token_key_file.empty()) {
    return R::Fail(Error::Make(ErrorCode::kValidation, "token_key_file is required"));
  }
  Status s = TokenCodec::OpenKeyFile(options.token_key_file, &codec);
  if (!s.ok()) return R::Fail(Error::Make(ErrorCode::kUnavailable, "token key: " + s.ToString()));
  auto engine = std::make_unique<EngineImpl>(options, std::move(store), std::move(codec), clock);
  s = engine->Start();
  if (!s.ok()) return R::Fail(Error::Make(ErrorCode::kUnavailable, "recovery: " + s.ToString()));
  return R::Ok(std::move(engine));
}

}  // namespace tw
