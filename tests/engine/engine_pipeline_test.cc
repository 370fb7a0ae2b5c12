// tw-test-labels: threads
// How the engine commits (EngineOptions::commit).
// Pipelined: while the writer writes batch N, the engine thread keeps applying into batch N+1,
// hands it over once the writer is free (group commit) or as soon as it is full; replies run in
// batch order and only once their own batch is durable; a failed write stops every batch sealed
// after it from reaching the store.
// Inline: the engine thread writes each batch itself; what arrives during a write is the next
// batch, whole; no writer thread exists; a failed write poisons the engine the same way.
#include <dirent.h>
#include <pthread.h>

#include <condition_variable>
#include <fstream>
#include <mutex>
#include <numeric>
#include <vector>

#include "engine/reply_burst.h"
#include "tests/engine/engine_test_harness.h"

namespace tw::engine_test {
namespace {

// A Store in front of a MemoryStore whose Writes can be held at a gate, and then let through
// or failed without touching the inner store (which therefore is not poisoned: only the
// engine can keep later batches away from it). Counts NewBatch calls: the engine takes a new
// batch each time it seals one.
class GatedStore final : public Store {
 public:
  explicit GatedStore(std::unique_ptr<MemoryStore> inner) : inner_(std::move(inner)) {}

  // The next Write waits at the gate until Open() or Fail().
  void HoldNextWrite() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_next_ = true;
  }
  // Waits until a Write is held at the gate.
  bool WaitHeld() {
    return WaitFor([this] { return held_; });
  }
  // Waits until the engine has taken at least n batches from NewBatch.
  bool WaitNewBatches(int n) {
    return WaitFor([this, n] { return new_batches_ >= n; });
  }
  void Open() { Release(false); }
  void Fail() { Release(true); }
  int new_batches() {
    std::lock_guard<std::mutex> lock(mu_);
    return new_batches_;
  }
  // The names of the threads that called Write so far: each once, and the last one's.
  std::set<std::string> writing_threads() {
    std::lock_guard<std::mutex> lock(mu_);
    return {writing_threads_.begin(), writing_threads_.end()};
  }
  size_t writes_by(const std::string& thread) {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<size_t>(
        std::count(writing_threads_.begin(), writing_threads_.end(), thread));
  }
  std::string last_writing_thread() {
    std::lock_guard<std::mutex> lock(mu_);
    return writing_threads_.empty() ? "" : writing_threads_.back();
  }
  int writes_reaching_inner() {
    std::lock_guard<std::mutex> lock(mu_);
    return inner_writes_;
  }

  std::unique_ptr<WriteBatch> NewBatch() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++new_batches_;
    }
    cv_.notify_all();
    return inner_->NewBatch();
  }
  Status Write(WriteBatch* batch, bool sync) override {
    char name[16] = {};
    ::pthread_getname_np(::pthread_self(), name, sizeof(name));
    std::unique_lock<std::mutex> lock(mu_);
    writing_threads_.push_back(name);
    if (hold_next_) {
      hold_next_ = false;
      held_ = true;
      cv_.notify_all();
      cv_.wait(lock, [this] { return released_; });
      held_ = false;
      released_ = false;
      if (fail_) return Status::IoError("injected: write failed at the gate");
    }
    ++inner_writes_;
    lock.unlock();
    return inner_->Write(batch, sync);
  }
  Status LoadMeta(StoreMeta* meta) override { return inner_->LoadMeta(meta); }
  Status LoadActivities(std::vector<ActivityRecord>* out) override {
    return inner_->LoadActivities(out);
  }
  Status ScanLive(const std::function<void(const TaskId&, const LiveRecord&)>& fn) override {
    return inner_->ScanLive(fn);
  }
  Status GetTaskIssue(const TaskId& id, TaskIssueRecord* out) override {
    return inner_->GetTaskIssue(id, out);
  }
  Status GetTaskState(const TaskId& id, TaskStateRecord* out) override {
    return inner_->GetTaskState(id, out);
  }
  Status GetTaskEnd(const TaskId& id, TaskStateRecord* out) override {
    return inner_->GetTaskEnd(id, out);
  }
  Status FindIdempotencyKey(std::string_view key, TaskId* out) override {
    return inner_->FindIdempotencyKey(key, out);
  }
  Status ScanRetired(
      int64_t before_ms, size_t max,
      const std::function<void(int64_t, const TaskId&, std::string_view)>& fn) override {
    return inner_->ScanRetired(before_ms, max, fn);
  }
  Status ReadEvents(uint64_t from_seq, size_t max, std::vector<EventRecord>* out) override {
    return inner_->ReadEvents(from_seq, max, out);
  }

 private:
  template <typename Pred>
  bool WaitFor(Pred pred) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kReplyTimeout, pred);  // a hang guard, not a sleep
  }
  void Release(bool fail) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      released_ = true;
      fail_ = fail;
    }
    cv_.notify_all();
  }

  std::unique_ptr<MemoryStore> inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool hold_next_ = false;  // all guarded by mu_
  bool held_ = false;
  bool released_ = false;
  bool fail_ = false;
  std::vector<std::string> writing_threads_;  // in call order
  int new_batches_ = 0;
  int inner_writes_ = 0;
};

class EnginePipelineTest : public EngineTest {
 protected:
  // Two commands fill a batch, so a test can fill one while a write is held.
  void SetUp() override {
    options_.batch_commands_max = batch_commands_max_;
    options_.commit = commit_;
    commit_from_env_ = false;
    EngineTest::SetUp();
  }
  size_t batch_commands_max_ = 2;
  CommitMode commit_ = CommitMode::kPipelined;
  std::unique_ptr<Store> MakeStore() override {
    auto store = std::make_unique<GatedStore>(std::make_unique<MemoryStore>(disk_));
    gate_ = store.get();
    return store;
  }
  // Issues a callback task and records the order its reply arrives in.
  void IssueRecorded(Reply<IssueTaskReply>* reply, int tag) {
    engine_->IssueTask({}, [this, cb = reply->cb(), tag](Result<IssueTaskReply> r) {
      {
        std::lock_guard<std::mutex> lock(order_mu_);
        order_.push_back(tag);
      }
      cb(std::move(r));
    });
  }
  std::vector<int> Order() {
    std::lock_guard<std::mutex> lock(order_mu_);
    return order_;
  }

  // Issues tasks 1, 2, 3 (tags): holds the write of the batch with task 1, then waits until the
  // engine sealed the batch that tasks 2 and 3 fill while that write is held (sealing takes a
  // fresh batch from the store).
  void HoldAWriteAndSealAFullBatchBehindIt(Reply<IssueTaskReply>* one, Reply<IssueTaskReply>* two,
                                           Reply<IssueTaskReply>* three) {
    gate_->HoldNextWrite();
    IssueRecorded(one, 1);
    ASSERT_TRUE(gate_->WaitHeld()) << "the first batch never reached the store";
    const int sealed = gate_->new_batches();
    IssueRecorded(two, 2);
    IssueRecorded(three, 3);
    ASSERT_TRUE(gate_->WaitNewBatches(sealed + 1))
        << "the engine did not seal a full batch during the write";
  }

  // Holds the write of a batch with task 1, queues tasks 2..41 and a Sync behind it (far from
  // a full batch of 64), checks that no reply runs early, opens the gate, and checks that all
  // answer in order. Returns how many writes the disk took, the held one included; `last` is
  // the token of task 41.
  uint64_t WritesForAHeldWriteAndFortyBehindIt(std::string* last) {
    constexpr int kQueued = 40;
    static_assert(kQueued + 1 < 64, "the batch must not fill up");
    EXPECT_TRUE(IsOk(Call<Empty>([&](auto cb) { engine_->Sync(std::move(cb)); })));
    const uint64_t writes_before = disk_->write_count();
    gate_->HoldNextWrite();
    Reply<IssueTaskReply> first;
    IssueRecorded(&first, 1);
    EXPECT_TRUE(gate_->WaitHeld()) << "the first batch never reached the store";
    std::vector<Reply<IssueTaskReply>> queued(kQueued);
    for (int i = 0; i < kQueued; ++i) IssueRecorded(&queued[i], i + 2);
    Reply<Empty> synced;
    engine_->Sync(synced.cb());
    EXPECT_FALSE(first.ready()) << "a reply ran before its batch was written";

    gate_->Open();
    EXPECT_TRUE(IsOk(first.Get()));
    for (auto& reply : queued) {
      Result<IssueTaskReply> r = reply.Get();
      EXPECT_TRUE(IsOk(r));
      *last = r.value.token;
    }
    EXPECT_TRUE(IsOk(synced.Get()));
    std::vector<int> expected(kQueued + 1);
    std::iota(expected.begin(), expected.end(), 1);
    EXPECT_EQ(Order(), expected);
    return disk_->write_count() - writes_before;
  }

  // After a failed write: the engine answers kUnavailable, nothing later reached the store (which
  // itself never failed, so only the engine kept it away), and after a restart only `kept`,
  // written before the failure, is live.
  void ExpectPoisonedKeepingOnly(const std::string& kept, int inner_before) {
    EXPECT_TRUE(IsError(Issue({}), ErrorCode::kUnavailable)) << "the engine is poisoned";
    EXPECT_EQ(gate_->writes_reaching_inner(), inner_before);
    ASSERT_NO_FATAL_FAILURE(Restart());
    EXPECT_EQ(Stats().live_tasks, 1u);
    EXPECT_EQ(StateOf(kept), TaskState::kStarted);
  }

  GatedStore* gate_ = nullptr;
  std::mutex order_mu_;
  std::vector<int> order_;
};

class EngineGroupCommitTest : public EnginePipelineTest {
 protected:
  EngineGroupCommitTest() { batch_commands_max_ = 64; }
};

class EngineInlineCommitTest : public EnginePipelineTest {
 protected:
  EngineInlineCommitTest() {
    batch_commands_max_ = 64;
    commit_ = CommitMode::kInline;
  }
};

class EngineAdaptiveCommitTest : public EnginePipelineTest {
 protected:
  EngineAdaptiveCommitTest() { commit_ = CommitMode::kAdaptive; }  // two commands fill a batch
};

// Threads of this process with the given name (Linux: /proc/self/task/<tid>/comm).
int ThreadsNamed(const std::string& name) {
  int n = 0;
  DIR* dir = ::opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream comm(std::string("/proc/self/task/") + e->d_name + "/comm");
    std::string line;
    if (std::getline(comm, line) && line == name) ++n;
  }
  ::closedir(dir);
  return n;
}

// The forty queue behind the held write. The writer frees up while the engine thread may still
// be applying some of them: it seals what it applied so far, and everything else goes in one
// more write. So at most two writes after the held one, never one per command (group commit),
// whatever the timing.
TEST_F(EngineGroupCommitTest, CommandsWaitingForTheWriterShareAWrite) {
  std::string last;
  const uint64_t writes = WritesForAHeldWriteAndFortyBehindIt(&last);
  EXPECT_GE(writes, 2u);
  EXPECT_LE(writes, 3u) << "the held batch, then at most two group commits";
}

// The apply loop prefetches for the commands ahead of the one it applies (EngineCore::Prefetch;
// on from the first live task in these tests). A batch of every kind of task command, queued
// while the engine thread is held so that it applies them as one run, answers exactly as the
// same commands do one at a time: the hints change nothing, and the reads that form their
// addresses (index, tasks, timer entries; ASan checks those, not the prefetches themselves)
// stay in bounds, stale, unknown and repeated tokens included. Every task has a timer, so the
// wheel's hints see live handles.
TEST_F(EngineGroupCommitTest, TaskCommandsAppliedWithPrefetchHintsAnswerAsAlways) {
  constexpr int kTasks = 40;
  std::vector<std::string> tokens;
  for (int i = 0; i < kTasks; ++i) tokens.push_back(MustIssue({.timeout_s = 3600}));
  ASSERT_TRUE(IsOk(Cancel(tokens[kTasks - 1])));  // stale before the batch
  std::unique_ptr<TokenCodec> codec;
  ASSERT_TRUE(TokenCodec::OpenKeyFile(options_.token_key_file, &codec).ok());
  const std::string unknown = codec->Encode(options_.shard, TaskIdGenerator().Next(0));

  std::vector<Reply<CompletionReply>> succeeded(10), failed(10), cancelled(10), repeated(2);
  std::vector<Reply<Empty>> heartbeats(9);
  Reply<CompletionReply> stale, of_unknown;
  {
    EngineBlocker block(engine_.get());
    for (int i = 0; i < 10; ++i) {
      engine_->SendTaskSuccess({tokens[i], "{\"i\":" + std::to_string(i) + "}"}, succeeded[i].cb());
      engine_->SendTaskFailure({tokens[10 + i], "E" + std::to_string(i), "cause"}, failed[i].cb());
      engine_->CancelTask({tokens[20 + i]}, cancelled[i].cb());
      if (i < 9) engine_->SendTaskHeartbeat({tokens[30 + i]}, heartbeats[i].cb());
    }
    engine_->SendTaskSuccess({tokens[0], "{\"i\":0}"}, repeated[0].cb());  // the same outcome
    engine_->SendTaskSuccess({tokens[1], "{\"other\":1}"}, repeated[1].cb());
    engine_->CancelTask({tokens[kTasks - 1]}, stale.cb());  // cancelled before the batch
    engine_->SendTaskSuccess({unknown, "{}"}, of_unknown.cb());
  }  // 43 commands, one batch (at most 64)

  for (auto& r : succeeded) EXPECT_TRUE(IsOk(r.Get()));
  for (auto& r : failed) EXPECT_TRUE(IsOk(r.Get()));
  for (auto& r : cancelled) EXPECT_TRUE(IsOk(r.Get()));
  for (auto& r : heartbeats) EXPECT_TRUE(IsOk(r.Get()));
  Result<CompletionReply> same = repeated[0].Get();
  ASSERT_TRUE(IsOk(same));
  EXPECT_TRUE(same.value.duplicate);
  EXPECT_TRUE(IsError(repeated[1].Get(), ErrorCode::kTaskTimedOut)) << "another outcome";
  Result<CompletionReply> again = stale.Get();  // a retried cancel of a cancelled task
  ASSERT_TRUE(IsOk(again));
  EXPECT_TRUE(again.value.duplicate);
  EXPECT_TRUE(IsError(of_unknown.Get(), ErrorCode::kTaskDoesNotExist));

  EXPECT_EQ(Stats().live_tasks, 9u) << "the nine heartbeated tasks";
  EXPECT_EQ(Stats().pending_timers, 9u);
  EXPECT_EQ(StateOf(tokens[3]), TaskState::kSucceeded);
  EXPECT_EQ(StateOf(tokens[13]), TaskState::kFailed);
  EXPECT_EQ(StateOf(tokens[23]), TaskState::kCancelled);
  EXPECT_EQ(StateOf(tokens[33]), TaskState::kStarted);
}

TEST_F(EnginePipelineTest, AFullBatchIsSealedWhileAWriteIsInFlightAndRepliesKeepBatchOrder) {
  ASSERT_TRUE(IsOk(Call<Empty>([&](auto cb) { engine_->Sync(std::move(cb)); })));
  const uint64_t writes_before = disk_->write_count();
  // The first batch's write is held. Two more commands fill the next batch, which the engine
  // seals at once, so the writer finds it ready.
  Reply<IssueTaskReply> first;
  Reply<IssueTaskReply> second;
  Reply<IssueTaskReply> third;
  ASSERT_NO_FATAL_FAILURE(HoldAWriteAndSealAFullBatchBehindIt(&first, &second, &third));
  // Both places in the pipeline are taken: this one waits in the open batch.
  Reply<IssueTaskReply> fourth;
  IssueRecorded(&fourth, 4);
  EXPECT_FALSE(first.ready());
  EXPECT_FALSE(second.ready()) << "a reply ran before its batch was written";

  gate_->Open();
  const Result<IssueTaskReply> r1 = first.Get();
  ASSERT_TRUE(IsOk(r1));
  ASSERT_TRUE(IsOk(second.Get()));
  ASSERT_TRUE(IsOk(third.Get()));
  ASSERT_TRUE(IsOk(fourth.Get()));
  EXPECT_EQ(Order(), (std::vector<int>{1, 2, 3, 4}));
  EXPECT_EQ(disk_->write_count(), writes_before + 3);

  // All durable and live after a restart.
  ASSERT_NO_FATAL_FAILURE(Restart());
  EXPECT_EQ(Stats().live_tasks, 4u);
  EXPECT_EQ(StateOf(r1.value.token), TaskState::kStarted);
}

TEST_F(EnginePipelineTest, AFailedWriteKeepsEveryLaterSealedBatchOffTheStore) {
  const std::string kept = MustIssue({});
  const int inner_before = gate_->writes_reaching_inner();
  Reply<IssueTaskReply> first;
  Reply<IssueTaskReply> second;
  Reply<IssueTaskReply> second_too;
  ASSERT_NO_FATAL_FAILURE(HoldAWriteAndSealAFullBatchBehindIt(&first, &second, &second_too));
  // A call applied on top of both waits in the open batch.
  Reply<CompletionReply> third;
  engine_->SendTaskSuccess({kept, "{}"}, third.cb());

  gate_->Fail();
  EXPECT_TRUE(IsError(first.Get(), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(second.Get(), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(second_too.Get(), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(third.Get(), ErrorCode::kUnavailable));
  EXPECT_EQ(Order(), (std::vector<int>{1, 2, 3}));
  ExpectPoisonedKeepingOnly(kept, inner_before);
}

TEST_F(EnginePipelineTest, AHeartbeatOnADurableTaskIsAnsweredWithoutWaitingForAWrite) {
  const std::string arn = MustCreate("beats");
  IssueTaskRequest queued_req;
  queued_req.activity_arn = arn;
  queued_req.heartbeat_s = 60;
  const std::string queued = MustIssue(queued_req);  // durable, SCHEDULED
  IssueTaskRequest running_req;
  running_req.heartbeat_s = 60;
  const std::string running = MustIssue(running_req);  // durable, STARTED (a callback task)
  const uint64_t writes_before = disk_->write_count();

  // The take of `queued` is applied and its write is held: STARTED, but not durably so.
  gate_->HoldNextWrite();
  Poll poll = StartPoll(arn, "w");
  ASSERT_TRUE(gate_->WaitHeld()) << "the take never reached the store";
  Reply<Empty> on_taken;  // its issuer knows the token and may heartbeat already
  engine_->SendTaskHeartbeat({queued}, on_taken.cb());
  // Applied after the one above (one engine thread, commands in order), and answered while
  // the write is still held.
  ASSERT_TRUE(IsOk(Heartbeat(running)));
  EXPECT_EQ(disk_->write_count(), writes_before) << "the heartbeat waited for a write";
  EXPECT_FALSE(on_taken.ready()) << "a heartbeat revealed a start that is not durable";
  EXPECT_FALSE(poll.reply.ready());

  gate_->Open();
  ASSERT_TRUE(IsOk(poll.reply.Get()));
  EXPECT_TRUE(IsOk(on_taken.Get()));
  // Once the start is durable, its heartbeats are answered at once too.
  gate_->HoldNextWrite();
  Reply<IssueTaskReply> held;
  IssueRecorded(&held, 1);
  ASSERT_TRUE(gate_->WaitHeld());
  EXPECT_TRUE(IsOk(Heartbeat(queued)));
  EXPECT_FALSE(held.ready());
  gate_->Open();
  EXPECT_TRUE(IsOk(held.Get()));
}

// Whether each answer ran inside a reply burst (engine/reply_burst.h), and on which thread.
struct BurstNote {
  bool in_burst = false;
  std::string thread;
};
template <typename T>
Callback<T> NoteBurst(std::promise<BurstNote>* p) {
  return [p](Result<T>) {
    char name[16] = {};
    ::pthread_getname_np(::pthread_self(), name, sizeof(name));
    p->set_value(BurstNote{ReplyBurst::Active(), name});
  };
}

TEST_F(EnginePipelineTest, EveryAnswerFromTheEngineThreadRunsInAReplyBurst) {
  const std::string arn = MustCreate("bursts");
  IssueTaskRequest callback_req;
  callback_req.heartbeat_s = 60;
  const std::string running = MustIssue(callback_req);  // durable, STARTED
  std::promise<BurstNote> issued, taken, beat_now, beat_held, succeeded, refused;
  IssueTaskRequest activity_req;
  activity_req.activity_arn = arn;
  engine_->IssueTask(activity_req, NoteBurst<IssueTaskReply>(&issued));  // released with a batch
  GetActivityTaskRequest poll_req;
  poll_req.activity_arn = arn;
  engine_->GetActivityTask(poll_req, 1, NoteBurst<GetActivityTaskReply>(&taken));
  engine_->SendTaskHeartbeat({running}, NoteBurst<Empty>(&beat_now));  // answered while applying
  engine_->SendTaskSuccess({running, "{}"}, NoteBurst<CompletionReply>(&succeeded));
  engine_->SendTaskHeartbeat({running}, NoteBurst<Empty>(&beat_held));  // refused after the batch
  engine_->SendTaskHeartbeat({"not a token"}, NoteBurst<Empty>(&refused));  // on this thread
  for (auto* p : {&issued, &taken, &beat_now, &beat_held, &succeeded}) {
    const BurstNote note = p->get_future().get();
    EXPECT_EQ(note.thread, "tw-engine");
    EXPECT_TRUE(note.in_burst);
  }
  const BurstNote here = refused.get_future().get();
  EXPECT_NE(here.thread, "tw-engine");
  EXPECT_FALSE(here.in_burst);
}

TEST_F(EngineGroupCommitTest, PipelinedWritesOnTheWriterThread) {
  ASSERT_TRUE(IsOk(Issue({})));
  EXPECT_EQ(gate_->writing_threads(), std::set<std::string>{"tw-writer"});
  EXPECT_EQ(ThreadsNamed("tw-writer"), 1);
}

TEST_F(EngineInlineCommitTest, WritesOnTheEngineThreadAndRunsNoWriter) {
  ASSERT_TRUE(IsOk(Issue({})));
  ASSERT_TRUE(IsOk(Issue({})));
  EXPECT_EQ(gate_->writing_threads(), std::set<std::string>{"tw-engine"});
  const int threads = ThreadsNamed("tw-engine") + ThreadsNamed("tw-writer");
  EXPECT_EQ(threads, 1) << "a writer thread runs";
}

// The engine thread itself is held in the write. Everything that arrives meanwhile waits in the
// queue and then goes into one write: exactly one more, not one per command and not two (the
// pipelined engine may split them in two, EngineGroupCommitTest above).
TEST_F(EngineInlineCommitTest, CommandsArrivingDuringAWriteShareTheNextOne) {
  std::string last;
  EXPECT_EQ(WritesForAHeldWriteAndFortyBehindIt(&last), 2u)
      << "the held batch, then one group commit";
  ASSERT_NO_FATAL_FAILURE(Restart());
  EXPECT_EQ(Stats().live_tasks, 41u);
  EXPECT_EQ(StateOf(last), TaskState::kStarted);
}

TEST_F(EngineInlineCommitTest, AFailedWritePoisonsTheEngineAndNothingLaterReachesTheStore) {
  const std::string kept = MustIssue({});
  const int inner_before = gate_->writes_reaching_inner();
  gate_->HoldNextWrite();
  Reply<IssueTaskReply> first;
  IssueRecorded(&first, 1);
  ASSERT_TRUE(gate_->WaitHeld()) << "the first batch never reached the store";
  // Queued behind the held write: applied only after it failed, so refused, not written.
  Reply<IssueTaskReply> second;
  IssueRecorded(&second, 2);
  Reply<CompletionReply> third;
  engine_->SendTaskSuccess({kept, "{}"}, third.cb());

  gate_->Fail();
  EXPECT_TRUE(IsError(first.Get(), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(second.Get(), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(third.Get(), ErrorCode::kUnavailable));
  EXPECT_EQ(Order(), (std::vector<int>{1, 2}));
  ExpectPoisonedKeepingOnly(kept, inner_before);
}

// Inline, the engine thread's own write is what a reply waits for, and what Stats times.
TEST_F(EngineInlineCommitTest, RepliesWaitForTheirWriteAndStatsTimeIt) {
  const EngineStats before = Stats();
  gate_->HoldNextWrite();
  Reply<IssueTaskReply> held;
  IssueRecorded(&held, 1);
  ASSERT_TRUE(gate_->WaitHeld());
  EXPECT_FALSE(held.ready());
  gate_->Open();
  ASSERT_TRUE(IsOk(held.Get()));
  const EngineStats after = Stats();
  EXPECT_GE(LatencyCount(after.commit_latency_us) - LatencyCount(before.commit_latency_us), 1u)
      << "the inline write was not timed";
}

// A lone command is written by the engine thread: nothing to overlap its sync with. Five
// commands queued at once fill a batch of two with three still waiting: that batch goes to the
// writer, and the engine thread applies the next one meanwhile. Once all is quiet again, a lone
// command is the engine thread's again.
TEST_F(EngineAdaptiveCommitTest, WritesHereWhenNothingWaitsAndHandsOffWhenCommandsDo) {
  ASSERT_TRUE(IsOk(Issue({})));
  EXPECT_EQ(gate_->writing_threads(), std::set<std::string>{"tw-engine"}) << "a lone command";
  std::vector<Reply<IssueTaskReply>> burst(5);
  {
    EngineBlocker block(engine_.get());
    for (int i = 0; i < 5; ++i) IssueRecorded(&burst[i], i + 1);
  }
  for (auto& r : burst) ASSERT_TRUE(IsOk(r.Get()));
  EXPECT_EQ(Order(), (std::vector<int>{1, 2, 3, 4, 5}));
  EXPECT_EQ(gate_->writing_threads().count("tw-writer"), 1u) << "commands waited: no hand-off";
  ASSERT_TRUE(IsOk(Issue({})));
  EXPECT_EQ(gate_->last_writing_thread(), "tw-engine") << "a lone command after a hand-off";
  ASSERT_NO_FATAL_FAILURE(Restart());
  EXPECT_EQ(Stats().live_tasks, 7u);
}

// More timers due than one round fires (kExpiriesPerBatchMax): the round that leaves some for
// the next one hands its batch to the writer even with no command waiting, so that the next
// round's expiries overlap its sync.
TEST_F(EngineAdaptiveCommitTest, AMassExpiryOverlapsItsSyncs) {
  const size_t n = limits::kExpiriesPerBatchMax + 64;
  auto failed = std::make_shared<std::atomic<size_t>>(0);
  Reply<IssueTaskReply> last;
  for (size_t i = 0; i + 1 < n; ++i) {
    engine_->IssueTask({.timeout_s = 1}, [failed](Result<IssueTaskReply> r) {
      if (!r.ok()) failed->fetch_add(1);
    });
  }
  engine_->IssueTask({.timeout_s = 1}, last.cb());
  ASSERT_TRUE(IsOk(last.Get()));
  ASSERT_EQ(failed->load(), 0u);
  const size_t by_writer = gate_->writes_by("tw-writer");

  clock_.Advance(1'000);
  Sync();
  EXPECT_EQ(Stats().live_tasks, 0u);
  EXPECT_GT(gate_->writes_by("tw-writer"), by_writer) << "no expiry batch went to the writer";
}

}  // namespace
}  // namespace tw::engine_test
