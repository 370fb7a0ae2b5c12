// Deterministic simulation of the engine core against a reference model.
//
// A seed drives a random workload of issues, takes, heartbeats, successes, failures, duplicate
// retries, cancels, withdrawn polls, clock jumps and crash-restarts (the core is rebuilt from
// the store, as after kill -9 between batches). The model predicts every reply and every
// outcome event exactly; after every group commit the test checks:
//   - every reply equals the model's prediction (code, refusal reason, duplicate flag);
//   - each task has at most one terminal transition and exactly one outcome event for it;
//   - no timeout fires before its deadline, and none is missed once the clock passed it;
//   - event sequence numbers are gapless and in order.
// Replay one seed: TW_SEED=<n>. Run more seeds: TW_SIM_SEEDS=<n> (default 1500).
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "engine/engine_core.h"
#include "engine/token.h"
#include "storage/memory_store.h"

namespace tw {
namespace {

constexpr int64_t kStartMs = 1'700'000'000'000;

struct ModelTask {
  TaskId id;
  std::string token;
  int activity = -1;  // index into Sim::activities_, -1 = callback
  TaskState state = TaskState::kScheduled;
  uint32_t heartbeat_s = 0;
  uint32_t timeout_s = 0;
  uint32_t schedule_to_start_s = 0;
  int64_t heartbeat_deadline_ms = 0;
  int64_t overall_deadline_ms = 0;
  int64_t s2s_deadline_ms = 0;
  std::string output;  // recorded outcome for duplicate checks
  std::optional<std::string> error;
  std::optional<std::string> cause;
  TimeoutKind timeout_kind = TimeoutKind::kNone;
  int events = 0;            // outcome events seen for this task
  bool token_known = false;  // a worker holds the token (callback, or handed out)
};

struct ModelActivity {
  std::string arn;
  std::vector<size_t> queue;      // task indexes, FIFO
  std::vector<uint64_t> waiters;  // poll ids, FIFO
  bool deleted = false;
};

// What the model expects of one reply.
struct Expect {
  Expect(std::string w = {}, ErrorCode c = ErrorCode::kOk, Refusal r = Refusal::kNone,
         bool dup = false, std::optional<size_t> t = std::nullopt)
      : what(std::move(w)), code(c), refusal(r), duplicate(dup), task(t) {}
  std::string what;
  ErrorCode code;
  Refusal refusal;
  bool duplicate;
  std::optional<size_t> task;  // poll: the task handed out (nullopt = empty / none yet)
};

struct Got {
  bool called = false;
  ErrorCode code = ErrorCode::kOk;
  Refusal refusal = Refusal::kNone;
  bool duplicate = false;
  std::string token;
};

class Sim {
 public:
  Sim(uint64_t seed, const TokenCodec* codec)
      : seed_(seed), rng_(seed), clock_(kStartMs), codec_(codec) {
    options_.tick_ms = 1;
    options_.pollers_per_activity_max = 3;
    Restart();
  }

  void Run(int steps) {
    for (int i = 0; i < 4; ++i) CreateActivity();
    for (int step = 0; step < steps && !::testing::Test::HasFailure(); ++step) {
      const int r = Rand(100);
      if (r < 8) {
        JumpClock();
      } else if (r < 10) {
        CrashRestart();
      } else {
        Batch();
      }
      core_->CheckInvariants();  // aborts, naming the invariant, if a step broke one
    }
    // Drain: run the clock far ahead; every task with a deadline must end.
    clock_.Advance(400'000);
    ExpireAndCommit();
    core_->CheckInvariants();
    for (const ModelTask& t : tasks_) {
      ASSERT_LE(t.events, 1) << "task with more than one outcome event";
      if (IsTerminal(t.state)) {
        ASSERT_EQ(t.events, 1) << "terminal task without its event";
      }
    }
  }

 private:
  int Rand(int n) { return static_cast<int>(rng_() % static_cast<uint64_t>(n)); }
  int64_t Now() const { return clock_.NowMs(); }

  void Restart() {
    core_.reset();
    core_ = std::make_unique<EngineCore>(options_, &store_, codec_, &clock_);
    Status s = core_->Recover();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // A crash between batches: nothing unacknowledged is pending, so the durable state is the
  // model's state, except that heartbeats were never persisted and waiting polls are gone.
  void CrashRestart() {
    clock_.Advance(Rand(1500));
    Restart();
    for (ModelActivity& a : activities_) a.waiters.clear();
    for (ModelTask& t : tasks_) {
      if (t.state == TaskState::kStarted && t.heartbeat_s != 0) {
        // The stored deadline is from start, older than restart: max() picks restart + interval.
        t.heartbeat_deadline_ms = std::max(t.heartbeat_deadline_ms, Now() + t.heartbeat_s * 1000);
      }
    }
    ExpireAndCommit();
  }

  void JumpClock() {
    const int r = Rand(10);
    clock_.Advance(r < 5 ? Rand(50) : r < 9 ? Rand(3000) : Rand(20000));
    ExpireAndCommit();
  }

  void CreateActivity() {
    AddActivity();
    ExpireAndCommit();
  }

  void AddActivity() {
    const std::string name = "act-" + std::to_string(activities_.size());
    Got* g = NewGot();
    core_->Apply(CreateActivityCmd{{name}, [g](Result<ActivityInfo> r) {
                                     g->called = true;
                                     g->code = r.error.code;
                                   }});
    ModelActivity a;
    a.arn = "arn:aws:states:us-east-1:000000000000:activity:" + name;
    activities_.push_back(a);
    expects_.push_back({"create", ErrorCode::kOk});
  }

  Got* NewGot() {
    gots_.push_back(std::make_unique<Got>());
    return gots_.back().get();
  }

  size_t PickTask() { return static_cast<size_t>(Rand(static_cast<int>(tasks_.size()))); }

  // Picks a task whose token a worker could hold; prefers live ones.
  std::optional<size_t> PickKnownTask() {
    for (int tries = 0; tries < 8 && !tasks_.empty(); ++tries) {
      const size_t i = PickTask();
      const ModelTask& t = tasks_[i];
      // A worker holds a token only once the reply that carried it arrived (a later batch).
      if (t.token_known && !t.token.empty() && (!IsTerminal(t.state) || Rand(3) == 0)) return i;
    }
    return std::nullopt;
  }

  void Batch() {
    const int n = 1 + Rand(12);
    for (int i = 0; i < n; ++i) OneCommand();
    ExpireAndCommit();
  }

  void OneCommand() {
    const int r = Rand(100);
    if (r < 25) return Issue();
    if (r < 40) return Poll();
    if (r < 45) return Withdraw();
    if (r < 60) return Heartbeat();
    if (r < 75) return Success();
    if (r < 85) return Failure();
    if (r < 92) return Cancel();
    if (r < 94) return DeleteAndRecreateActivity();
    return Heartbeat();
  }

  void Issue() {
    ModelTask t;
    const bool callback = Rand(3) == 0;
    t.activity = callback ? -1 : Rand(static_cast<int>(activities_.size()));
    if (Rand(2)) t.timeout_s = 1 + Rand(8);
    if (Rand(2)) t.heartbeat_s = 1 + Rand(3);
    if (t.timeout_s != 0 && t.heartbeat_s >= t.timeout_s) t.heartbeat_s = 0;
    if (!callback && Rand(3) == 0) t.schedule_to_start_s = 1 + Rand(5);
    IssueTaskRequest req;
    req.input = "{\"n\":" + std::to_string(tasks_.size()) + "}";
    req.timeout_s = t.timeout_s;
    req.heartbeat_s = t.heartbeat_s;
    req.schedule_to_start_s = t.schedule_to_start_s;
    req.correlation = "c" + std::to_string(tasks_.size());
    if (!callback) req.activity_arn = activities_[t.activity].arn;

    Got* g = NewGot();
    const size_t index = tasks_.size();
    core_->Apply(IssueCmd{std::move(req), [g](Result<IssueTaskReply> r) {
                            g->called = true;
                            g->code = r.error.code;
                            g->token = r.value.token;
                          }});
    if (!callback && activities_[t.activity].deleted) {
      expects_.push_back({"issue to deleted activity", ErrorCode::kActivityDoesNotExist});
      return;
    }
    expects_.push_back({"issue", ErrorCode::kOk, Refusal::kNone, false, index});
    issue_gots_.emplace_back(g, index);
    if (callback) {
      t.state = TaskState::kStarted;
      t.token_known = true;
      StartClocks(t);
      tasks_.push_back(t);
    } else {
      t.state = TaskState::kScheduled;
      if (t.schedule_to_start_s) t.s2s_deadline_ms = Now() + t.schedule_to_start_s * 1000;
      tasks_.push_back(t);
      ModelActivity& a = activities_[t.activity];
      a.queue.push_back(index);
      MatchWaiters(a);
    }
  }

  void StartClocks(ModelTask& t) {
    t.overall_deadline_ms = t.timeout_s ? Now() + t.timeout_s * 1000 : 0;
    t.heartbeat_deadline_ms = t.heartbeat_s ? Now() + t.heartbeat_s * 1000 : 0;
    t.s2s_deadline_ms = 0;
  }

  void MatchWaiters(ModelActivity& a) {
    while (!a.queue.empty() && !a.waiters.empty()) {
      const size_t ti = a.queue.front();
      a.queue.erase(a.queue.begin());
      const uint64_t poll = a.waiters.front();
      a.waiters.erase(a.waiters.begin());
      ModelTask& t = tasks_[ti];
      t.state = TaskState::kStarted;
      t.token_known = true;
      StartClocks(t);
      poll_expect_[poll]->task = ti;
    }
  }

  void Poll() {
    const int ai = Rand(static_cast<int>(activities_.size()));
    ModelActivity& a = activities_[ai];
    const uint64_t poll_id = next_poll_id_++;
    Got* g = NewGot();
    GetActivityTaskRequest req{a.arn, "w" + std::to_string(poll_id)};
    core_->Apply(PollCmd{req, poll_id, [g](Result<GetActivityTaskReply> r) {
                           g->called = true;
                           g->code = r.error.code;
                           g->token = r.value.token;
                         }});
    if (a.deleted) {
      expects_.push_back({"poll deleted", ErrorCode::kActivityDoesNotExist});
      return;
    }
    if (a.waiters.size() >= options_.pollers_per_activity_max) {
      expects_.push_back({"poll over limit", ErrorCode::kActivityWorkerLimitExceeded});
      return;
    }
    expects_.push_back({"poll", ErrorCode::kOk});
    pending_polls_[poll_id] = g;
    poll_expect_[poll_id] = &expects_.back();
    poll_activity_[poll_id] = ai;
    a.waiters.push_back(poll_id);
    MatchWaiters(a);
  }

  void Withdraw() {
    if (pending_polls_.empty()) return;
    auto it = pending_polls_.begin();
    std::advance(it, Rand(static_cast<int>(pending_polls_.size())));
    const uint64_t poll_id = it->first;
    core_->Apply(WithdrawCmd{poll_id});
    ModelActivity& a = activities_[poll_activity_[poll_id]];
    auto w = std::find(a.waiters.begin(), a.waiters.end(), poll_id);
    if (w != a.waiters.end()) a.waiters.erase(w);  // answered empty
  }

  // The expected answer for a call on a task that is not live (refusal or duplicate).
  Expect NotLive(const ModelTask& t, const char* what, bool duplicate) {
    Expect e{what};
    if (t.state == TaskState::kScheduled) {
      e.code = ErrorCode::kTaskDoesNotExist;
      return e;
    }
    if (duplicate) {
      e.duplicate = true;
      return e;
    }
    e.code = ErrorCode::kTaskTimedOut;
    switch (t.state) {
      case TaskState::kTimedOut:
        e.refusal = Refusal::kTimedOut;
        break;
      case TaskState::kCancelled:
        e.refusal = Refusal::kCancelled;
        break;
      default:
        e.refusal = Refusal::kAlreadyCompleted;
        break;
    }
    return e;
  }

  Callback<CompletionReply> CompletionCallback(Got* g) {
    return [g](Result<CompletionReply> r) {
      g->called = true;
      g->code = r.error.code;
      g->refusal = r.error.refusal;
      g->duplicate = r.value.duplicate;
    };
  }

  void Heartbeat() {
    auto pick = PickKnownTask();
    if (!pick) return;
    ModelTask& t = tasks_[*pick];
    Got* g = NewGot();
    core_->Apply(HeartbeatCmd{t.id, [g](Result<Empty> r) {
                                g->called = true;
                                g->code = r.error.code;
                                g->refusal = r.error.refusal;
                              }});
    if (t.state != TaskState::kStarted) {
      expects_.push_back(NotLive(t, "heartbeat", false));
      return;
    }
    if (t.heartbeat_s) t.heartbeat_deadline_ms = Now() + t.heartbeat_s * 1000;
    expects_.push_back({"heartbeat"});
  }

  void Success() {
    auto pick = PickKnownTask();
    if (!pick) return;
    ModelTask& t = tasks_[*pick];
    const std::string output = Rand(2) ? "\"ok\"" : "{\"v\":" + std::to_string(Rand(3)) + "}";
    Got* g = NewGot();
    core_->Apply(SuccessCmd{t.id, output, CompletionCallback(g)});
    if (t.state != TaskState::kStarted) {
      const bool dup = t.state == TaskState::kSucceeded && t.output == output;
      expects_.push_back(NotLive(t, "success", dup));
      return;
    }
    t.state = TaskState::kSucceeded;
    t.output = output;
    expected_events_.push_back(*pick);
    expects_.push_back({"success"});
  }

  void Failure() {
    auto pick = PickKnownTask();
    if (!pick) return;
    ModelTask& t = tasks_[*pick];
    std::optional<std::string> error, cause;
    if (Rand(2)) error = "E" + std::to_string(Rand(2));
    if (Rand(2)) cause = "because";
    Got* g = NewGot();
    core_->Apply(FailureCmd{t.id, error, cause, CompletionCallback(g)});
    if (t.state != TaskState::kStarted) {
      const bool dup = t.state == TaskState::kFailed && t.error == error && t.cause == cause;
      expects_.push_back(NotLive(t, "failure", dup));
      return;
    }
    t.state = TaskState::kFailed;
    t.error = error;
    t.cause = cause;
    expected_events_.push_back(*pick);
    expects_.push_back({"failure"});
  }

  void Cancel() {
    if (tasks_.empty()) return;
    const size_t i = PickTask();
    ModelTask& t = tasks_[i];
    if (t.token.empty()) return;  // the issuer has no token before the issue reply
    Got* g = NewGot();
    core_->Apply(CancelCmd{t.id, CompletionCallback(g)});
    if (IsTerminal(t.state)) {
      expects_.push_back(NotLive(t, "cancel", t.state == TaskState::kCancelled));
      return;
    }
    if (t.state == TaskState::kScheduled) {
      auto& q = activities_[t.activity].queue;
      q.erase(std::find(q.begin(), q.end(), i));
    }
    t.state = TaskState::kCancelled;
    expected_events_.push_back(i);
    expects_.push_back({"cancel"});
  }

  void DeleteAndRecreateActivity() {
    const int ai = Rand(static_cast<int>(activities_.size()));
    ModelActivity& a = activities_[ai];
    if (a.deleted) return;
    Got* g = NewGot();
    core_->Apply(DeleteActivityCmd{{a.arn}, [g](Result<Empty> r) {
                                     g->called = true;
                                     g->code = r.error.code;
                                   }});
    expects_.push_back({"delete activity"});
    for (size_t ti : a.queue) {
      tasks_[ti].state = TaskState::kFailed;
      tasks_[ti].error = "States.Runtime";
      tasks_[ti].cause = "The activity " + a.arn + " does not exist.";
      expected_events_.push_back(ti);
    }
    a.queue.clear();
    for (uint64_t poll : a.waiters) {
      poll_expect_[poll]->code = ErrorCode::kActivityDoesNotExist;
    }
    a.waiters.clear();
    a.deleted = true;
    AddActivity();  // keep the pool of live activities from draining
  }

  // Which clock fires first for a live task at `now` (the engine's tie rule: heartbeat only if
  // strictly earlier than the overall deadline).
  static TimeoutKind DueKind(const ModelTask& t, int64_t now) {
    if (t.state == TaskState::kScheduled) {
      return t.s2s_deadline_ms && t.s2s_deadline_ms <= now ? TimeoutKind::kScheduleToStart
                                                           : TimeoutKind::kNone;
    }
    if (t.state != TaskState::kStarted) return TimeoutKind::kNone;
    const bool hb = t.heartbeat_deadline_ms && t.heartbeat_deadline_ms <= now;
    const bool ov = t.overall_deadline_ms && t.overall_deadline_ms <= now;
    if (hb && ov) {
      return t.heartbeat_deadline_ms < t.overall_deadline_ms ? TimeoutKind::kHeartbeat
                                                             : TimeoutKind::kOverall;
    }
    return hb ? TimeoutKind::kHeartbeat : ov ? TimeoutKind::kOverall : TimeoutKind::kNone;
  }

  void ExpireAndCommit() {
    const int64_t now = Now();
    // Random budgets: the wheel must resume exactly where a budget stopped it.
    while (!core_->Expire(now, 1 + static_cast<size_t>(Rand(64)))) {
    }
    std::set<size_t> expected_timeouts;
    for (size_t i = 0; i < tasks_.size(); ++i) {
      ModelTask& t = tasks_[i];
      const TimeoutKind k = DueKind(t, now);
      if (k == TimeoutKind::kNone) continue;
      if (t.state == TaskState::kScheduled) {
        auto& q = activities_[t.activity].queue;
        q.erase(std::find(q.begin(), q.end(), i));
      }
      t.state = TaskState::kTimedOut;
      t.timeout_kind = k;
      expected_timeouts.insert(i);
    }
    Status s = core_->Commit();
    ASSERT_TRUE(s.ok()) << s.ToString();
    CheckReplies();
    CheckEvents(expected_timeouts, now);
  }

  void CheckReplies() {
    // Bind issued ids first: later checks need them.
    for (auto& [g, index] : issue_gots_) {
      ASSERT_TRUE(g->called);
      ASSERT_EQ(g->code, ErrorCode::kOk);
      uint16_t shard = 0;
      ASSERT_TRUE(codec_->Decode(g->token, &tasks_[index].id, &shard));
      tasks_[index].token = g->token;
    }
    issue_gots_.clear();
    ASSERT_EQ(gots_.size(), expects_.size());
    for (size_t i = 0; i < gots_.size(); ++i) {
      const Got& g = *gots_[i];
      const Expect& e = expects_[i];
      const bool is_waiting_poll = e.what == "poll" && !e.task && e.code == ErrorCode::kOk;
      if (is_waiting_poll) continue;  // still waiting, or withdrawn: checked below
      ASSERT_TRUE(g.called) << e.what << " #" << i << " not answered";
      ASSERT_EQ(static_cast<int>(g.code), static_cast<int>(e.code)) << e.what << " #" << i;
      ASSERT_EQ(static_cast<int>(g.refusal), static_cast<int>(e.refusal)) << e.what;
      ASSERT_EQ(g.duplicate, e.duplicate) << e.what;
      if (e.what == "poll" && e.task) {
        ASSERT_EQ(g.token, tasks_[*e.task].token);
      }
    }
    // Polls: a waiting one has not been called unless it was withdrawn (empty answer).
    std::vector<std::unique_ptr<Got>> keep_gots;
    std::vector<Expect> keep_expects;
    for (size_t i = 0; i < gots_.size(); ++i) {
      const Expect& e = expects_[i];
      if (e.what != "poll" || e.task || e.code != ErrorCode::kOk) continue;
      const Got& g = *gots_[i];
      if (g.called) {
        ASSERT_TRUE(g.token.empty()) << "a withdrawn poll got a task";
      } else {
        keep_gots.push_back(std::move(gots_[i]));
        keep_expects.push_back(e);
      }
    }
    // Re-point the still-waiting polls at their surviving records.
    std::map<Got*, uint64_t> poll_of;
    for (auto& [id, g] : pending_polls_) poll_of[g] = id;
    pending_polls_.clear();
    poll_expect_.clear();
    gots_.clear();
    expects_.clear();
    for (size_t i = 0; i < keep_gots.size(); ++i) {
      auto id = poll_of.find(keep_gots[i].get());
      ASSERT_NE(id, poll_of.end());
      ModelActivity& a = activities_[poll_activity_[id->second]];
      if (std::find(a.waiters.begin(), a.waiters.end(), id->second) == a.waiters.end()) {
        continue;  // lost in a crash-restart: the engine forgot it too
      }
      gots_.push_back(std::move(keep_gots[i]));
      expects_.push_back(keep_expects[i]);
      pending_polls_[id->second] = gots_.back().get();
      poll_expect_[id->second] = &expects_.back();
    }
  }

  void CheckEvents(const std::set<size_t>& expected_timeouts, int64_t now) {
    std::vector<EventRecord> events;
    Status s = store_.ReadEvents(next_seq_, 1 << 20, &events);
    ASSERT_TRUE(s.ok());
    ASSERT_EQ(events.size(), expected_events_.size() + expected_timeouts.size());
    std::map<TaskId, size_t> index_of;
    for (size_t i = 0; i < tasks_.size(); ++i) index_of[tasks_[i].id] = i;
    size_t k = 0;
    std::set<size_t> timeouts_seen;
    for (const EventRecord& e : events) {
      ASSERT_EQ(e.seq, next_seq_) << "event seqs must be gapless and in order";
      ++next_seq_;
      auto it = index_of.find(e.task_id);
      ASSERT_NE(it, index_of.end());
      ModelTask& t = tasks_[it->second];
      ++t.events;
      ASSERT_EQ(t.events, 1) << "second outcome event for one task";
      ASSERT_EQ(e.state, t.state);
      if (k < expected_events_.size()) {
        ASSERT_EQ(it->second, expected_events_[k]) << "command events in command order";
        ++k;
      } else {
        ASSERT_EQ(e.state, TaskState::kTimedOut);
        ASSERT_TRUE(expected_timeouts.count(it->second));
        timeouts_seen.insert(it->second);
        ASSERT_EQ(e.timeout_kind, t.timeout_kind);
        ASSERT_EQ(e.time_ms, now);
        const int64_t deadline = e.timeout_kind == TimeoutKind::kHeartbeat ? t.heartbeat_deadline_ms
                                 : e.timeout_kind == TimeoutKind::kOverall ? t.overall_deadline_ms
                                                                           : t.s2s_deadline_ms;
        ASSERT_LE(deadline, e.time_ms) << "timeout fired before its deadline";
      }
      if (e.state == TaskState::kSucceeded) {
        ASSERT_EQ(e.output, t.output);
      }
      if (e.state == TaskState::kFailed) {
        ASSERT_EQ(e.has_error, t.error.has_value());
        ASSERT_EQ(e.error, t.error.value_or(""));
        ASSERT_EQ(e.cause, t.cause.value_or(""));
      }
      ASSERT_EQ(e.correlation, "c" + std::to_string(it->second));
    }
    ASSERT_EQ(timeouts_seen.size(), expected_timeouts.size());
    expected_events_.clear();
  }

  uint64_t seed_;
  std::mt19937_64 rng_;
  ManualClock clock_;
  const TokenCodec* codec_;
  EngineOptions options_;
  MemoryStore store_;
  std::unique_ptr<EngineCore> core_;

  std::vector<ModelTask> tasks_;
  std::vector<ModelActivity> activities_;
  std::vector<std::unique_ptr<Got>> gots_;
  std::deque<Expect> expects_;  // deque: poll_expect_ points into it
  std::vector<std::pair<Got*, size_t>> issue_gots_;
  std::map<uint64_t, Got*> pending_polls_;
  std::map<uint64_t, Expect*> poll_expect_;
  std::map<uint64_t, int> poll_activity_;
  std::vector<size_t> expected_events_;  // task indexes, in command order, this batch
  uint64_t next_poll_id_ = 1;
  uint64_t next_seq_ = 1;
};

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : fallback;
}

TEST(EngineSimTest, RandomWorkloadsMatchTheModel) {
  const char* one = std::getenv("TW_SEED");
  const uint64_t first = one ? std::strtoull(one, nullptr, 10) : 1;
  const uint64_t count = one ? 1 : EnvOr("TW_SIM_SEEDS", 1500);
  std::array<uint8_t, 32> key{};
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(i * 7 + 1);
  const TokenCodec codec({{1, key}});
  for (uint64_t seed = first; seed < first + count; ++seed) {
    SCOPED_TRACE("replay with TW_SEED=" + std::to_string(seed));
    Sim sim(seed, &codec);
    sim.Run(120);
    if (::testing::Test::HasFailure()) {
      std::fprintf(stderr, "engine simulation failed: replay with TW_SEED=%llu\n",
                   static_cast<unsigned long long>(seed));
      return;
    }
  }
}

}  // namespace
}  // namespace tw
