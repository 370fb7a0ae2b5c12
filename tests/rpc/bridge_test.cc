// tw-test-labels: threads
//
// The RPC server against a scripted fake Engine, in process: the thread hand-off and the races
// around long polls that a real engine makes hard to hit on purpose. The fake answers from its
// own "engine thread", as the real one does.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "tests/rpc/answering_engine.h"
#include "tests/rpc/test_support.h"

namespace tw::rpc {
namespace {

constexpr int64_t kWaitMs = 20'000;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

using testing::AnsweringEngine;

class FakeEngine final : public AnsweringEngine {
 public:
  enum class IssueMode { kAnswer, kHold, kOverloaded, kUnavailable };

  ~FakeEngine() override { JoinThread(); }

  // ---- Scripting (test thread) ----
  void set_issue_mode(IssueMode m) {
    std::lock_guard<std::mutex> lock(mu_);
    issue_mode_ = m;
  }
  size_t waiting_polls() {
    std::lock_guard<std::mutex> lock(mu_);
    return polls_.size();
  }
  std::vector<uint64_t> poll_ids() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<uint64_t> ids;
    for (const auto& [id, cb] : polls_) ids.push_back(id);
    return ids;
  }
  std::vector<uint64_t> withdrawn() {
    std::lock_guard<std::mutex> lock(mu_);
    return withdrawn_;
  }
  std::vector<std::string> returned() {
    std::lock_guard<std::mutex> lock(mu_);
    return returned_;
  }
  size_t held_issues() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_.size();
  }
  // Answers poll `id` (waiting or already withdrawn) from the engine thread.
  void AnswerPoll(uint64_t id, std::string token) {
    Callback<GetActivityTaskReply> cb;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = polls_.find(id);
      if (it == polls_.end()) {
        auto w = withdrawn_cbs_.find(id);
        ASSERT_NE(w, withdrawn_cbs_.end());
        cb = std::move(w->second);
        withdrawn_cbs_.erase(w);
      } else {
        cb = std::move(it->second);
        polls_.erase(it);
      }
    }
    Post([cb = std::move(cb), token = std::move(token)]() {
      GetActivityTaskReply reply;
      reply.token = token;
      reply.input = token.empty() ? "" : "{}";
      cb(Result<GetActivityTaskReply>::Ok(reply));
    });
  }
  // Answers every held issue back to back in ONE engine-thread job, like one engine batch.
  void ReleaseHeldIssues() {
    std::vector<Callback<IssueTaskReply>> held;
    {
      std::lock_guard<std::mutex> lock(mu_);
      held.swap(held_);
    }
    Post([held = std::move(held)]() {
      int i = 0;
      for (const auto& cb : held) {
        cb(Result<IssueTaskReply>::Ok(IssueTaskReply{"held-" + std::to_string(i++), false}));
      }
    });
  }
  // Appends events and tells the listener, from the engine thread.
  void AddEvents(std::vector<OutcomeEvent> events) {
    Post([this, events = std::move(events)]() {
      uint64_t last = 0;
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto e : events) {
          e.seq = events_.size() + 1;
          events_.push_back(e);
        }
        last = events_.size();
      }
      last_seq_.store(last);
      if (listener_) listener_(last);
    });
  }
  // Drops the events below seq (as if trimmed).
  void TrimBelow(uint64_t seq) {
    std::lock_guard<std::mutex> lock(mu_);
    first_kept_ = seq;
  }

  // ---- Engine ----
  void IssueTask(IssueTaskRequest, Callback<IssueTaskReply> done) override {
    std::unique_lock<std::mutex> lock(mu_);
    switch (issue_mode_) {
      case IssueMode::kAnswer:
        lock.unlock();
        AnswerOk(done, IssueTaskReply{"t", false});
        return;
      case IssueMode::kHold:
        held_.push_back(std::move(done));
        return;
      case IssueMode::kOverloaded:
        lock.unlock();  // the real engine answers a full queue at once, on the caller's thread
        done(Result<IssueTaskReply>::Fail(Error::Make(ErrorCode::kOverloaded, "queue full")));
        return;
      case IssueMode::kUnavailable:
        lock.unlock();
        done(Result<IssueTaskReply>::Fail(Error::Make(ErrorCode::kUnavailable, "stopping")));
        return;
    }
  }
  void GetActivityTask(GetActivityTaskRequest, uint64_t poll_id,
                       Callback<GetActivityTaskReply> done) override {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_EQ(polls_.count(poll_id), 0u) << "poll ids must be unique";
    polls_[poll_id] = std::move(done);
  }
  void WithdrawPoll(uint64_t poll_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    withdrawn_.push_back(poll_id);
    auto it = polls_.find(poll_id);
    if (it != polls_.end()) {
      // Keep the callback: the test decides whether the "engine" answers empty or raced a task.
      withdrawn_cbs_[poll_id] = std::move(it->second);
      polls_.erase(it);
    }
  }
  void ReturnTask(std::string token) override {
    std::lock_guard<std::mutex> lock(mu_);
    returned_.push_back(std::move(token));
  }
  Result<std::vector<OutcomeEvent>> ReadEvents(uint64_t from_seq, size_t max) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<OutcomeEvent> out;
    for (uint64_t s = std::max(from_seq, first_kept_); s <= events_.size() && out.size() < max;
         ++s) {
      if (s != from_seq + out.size()) break;  // a gap: stop
      out.push_back(events_[s - 1]);
    }
    return Result<std::vector<OutcomeEvent>>::Ok(std::move(out));
  }
  uint64_t LastEventSeq() const override { return last_seq_.load(); }
  void AddEventListener(std::function<void(uint64_t)> fn) override { listener_ = std::move(fn); }
  void GetStats(Callback<EngineStats> done) override {
    EngineStats s;
    s.waiting_polls = waiting_polls();
    AnswerOk(done, s);
  }

 private:
  std::mutex mu_;
  IssueMode issue_mode_ = IssueMode::kAnswer;
  std::map<uint64_t, Callback<GetActivityTaskReply>> polls_;
  std::map<uint64_t, Callback<GetActivityTaskReply>> withdrawn_cbs_;
  std::vector<uint64_t> withdrawn_;
  std::vector<std::string> returned_;
  std::vector<Callback<IssueTaskReply>> held_;
  std::vector<OutcomeEvent> events_;
  uint64_t first_kept_ = 1;
  std::atomic<uint64_t> last_seq_{0};
  std::function<void(uint64_t)> listener_;
};

class BridgeTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(30); }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }
  void StartServer(uint32_t max_poll_seconds) {
    ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.max_poll_seconds = max_poll_seconds;
    auto s = Server::Start(&engine_, options);
    ASSERT_TRUE(s.ok()) << s.error.message;
    server_ = std::move(s.value);
  }
  std::unique_ptr<Client> Connect() { return testing::ConnectOrFail(server_->address()); }
  // Waits for `done`, running the client's event loop meanwhile (so its calls go out).
  static bool Pump(Client& c, const std::function<bool()>& done) {
    const int64_t deadline = NowMs() + kWaitMs;
    while (!done()) {
      if (NowMs() > deadline) return false;
      c.wait_scope().poll();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
  }

  FakeEngine engine_;  // outlives the server
  std::unique_ptr<Server> server_;
};

TEST_F(BridgeTest, CancelledPollIsWithdrawnAndALateTaskGoesBack) {
  auto c = Connect();
  {
    auto poll = c->GetActivityTaskAsync({"arn:a", "w"}, 30);
    ASSERT_TRUE(Pump(*c, [&]() { return engine_.waiting_polls() == 1; }));
  }  // the call is cancelled
  ASSERT_TRUE(Pump(*c, [&]() { return engine_.withdrawn().size() == 1; }));
  // The engine had handed it a task just before the withdrawal arrived.
  engine_.AnswerPoll(engine_.withdrawn()[0], "task-1");
  ASSERT_TRUE(Pump(*c, [&]() { return engine_.returned().size() == 1; }));
  EXPECT_EQ(engine_.returned()[0], "task-1");
}

TEST_F(BridgeTest, DisconnectedPollerIsWithdrawn) {
  {
    auto c = Connect();
    auto poll = c->GetActivityTaskAsync({"arn:a", "w"}, 30);
    ASSERT_TRUE(Pump(*c, [&]() { return engine_.waiting_polls() == 1; }));
    // Leaving the scope drops the call, then the client and its connection. (A worker killed
    // mid-poll, with no goodbye at all, is in server_integration_test.)
  }
  const int64_t deadline = NowMs() + kWaitMs;
  while (engine_.withdrawn().empty() && NowMs() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(engine_.withdrawn().size(), 1u);
  // An empty answer to a dead poll is simply dropped; nothing is returned.
  engine_.AnswerPoll(engine_.withdrawn()[0], "");
  auto c = Connect();
  ASSERT_TRUE(c->Ping("x").ok());
  EXPECT_TRUE(engine_.returned().empty());
}

TEST_F(BridgeTest, PollTimeoutWithdrawsAndAnswersEmpty) {
  auto c = Connect();
  const int64_t t0 = NowMs();
  auto poll = c->GetActivityTaskAsync({"arn:a", "w"}, 1);
  ASSERT_TRUE(Pump(*c, [&]() { return engine_.withdrawn().size() == 1; }));
  EXPECT_GE(NowMs() - t0, 900);
  engine_.AnswerPoll(engine_.withdrawn()[0], "");
  auto r = c->Wait(std::move(poll));
  ASSERT_TRUE(r.ok()) << r.error.message;
  EXPECT_TRUE(r.value.token.empty());
}

TEST_F(BridgeTest, TaskRacingTheTimeoutGoesToThePoller) {
  auto c = Connect();
  auto poll = c->GetActivityTaskAsync({"arn:a", "w"}, 1);
  ASSERT_TRUE(Pump(*c, [&]() { return engine_.withdrawn().size() == 1; }));
  // The engine handed out a task before it saw the withdrawal: the caller is still there, so it
  // gets the task rather than losing it.
  engine_.AnswerPoll(engine_.withdrawn()[0], "task-2");
  auto r = c->Wait(std::move(poll));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value.token, "task-2");
  EXPECT_TRUE(engine_.returned().empty());
}

TEST_F(BridgeTest, TaskArrivingMidWait) {
  auto c = Connect();
  auto poll = c->GetActivityTaskAsync({"arn:a", "w"}, 30);
  ASSERT_TRUE(Pump(*c, [&]() { return engine_.waiting_polls() == 1; }));
  engine_.AnswerPoll(engine_.poll_ids()[0], "task-3");
  auto r = c->Wait(std::move(poll));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value.token, "task-3");
  EXPECT_TRUE(engine_.withdrawn().empty());
}

TEST_F(BridgeTest, OverloadIsAnExceptionForSingleCallsAndAValueInBatches) {
  auto c = Connect();
  engine_.set_issue_mode(FakeEngine::IssueMode::kOverloaded);
  auto r = c->IssueTask(IssueTaskRequest{});
  EXPECT_EQ(r.error.code, ErrorCode::kOverloaded);
  EXPECT_TRUE(IsTransportError(r.error));
  auto batch = c->IssueTasks(std::vector<IssueTaskRequest>(3));
  ASSERT_TRUE(batch.ok()) << batch.error.message;
  ASSERT_EQ(batch.value.size(), 3u);
  for (const auto& item : batch.value) EXPECT_EQ(item.error.code, ErrorCode::kOverloaded);
  engine_.set_issue_mode(FakeEngine::IssueMode::kUnavailable);
  EXPECT_EQ(c->IssueTask(IssueTaskRequest{}).error.code, ErrorCode::kUnavailable);
  // None of it hurt the connection.
  engine_.set_issue_mode(FakeEngine::IssueMode::kAnswer);
  EXPECT_TRUE(c->IssueTask(IssueTaskRequest{}).ok());
}

TEST_F(BridgeTest, OneEngineBatchCrossesInFewHandoffs) {
  auto c = Connect();
  auto before = c->Stats();
  ASSERT_TRUE(before.ok());
  engine_.set_issue_mode(FakeEngine::IssueMode::kHold);
  constexpr int kCalls = 200;
  std::vector<kj::Promise<Result<IssueTaskReply>>> calls;
  for (int i = 0; i < kCalls; ++i) calls.push_back(c->IssueTaskAsync(IssueTaskRequest{}));
  ASSERT_TRUE(Pump(*c, [&]() { return engine_.held_issues() == kCalls; }));
  engine_.ReleaseHeldIssues();
  for (auto& p : calls) ASSERT_TRUE(c->Wait(std::move(p)).ok());
  auto after = c->Stats();
  ASSERT_TRUE(after.ok());
  const uint64_t replies = after.value.replies_delivered - before.value.replies_delivered;
  const uint64_t handoffs = after.value.reply_handoffs - before.value.reply_handoffs;
  EXPECT_GE(replies, static_cast<uint64_t>(kCalls));
  // Fewer wake-ups than replies: the RPC thread drains whatever piled up since its last turn.
  // How few depends on how fast the poster is against the drainer (under ASan on a busy
  // machine, 201 replies took 104 hand-offs; 1 + replies / 10 was asserted here before and
  // failed then). That a run of posts made while nobody drains is exactly one hand-off is
  // MailboxTest.ARunOfPostsIsOneHandoffAndKeepsOrder, without the timing.
  EXPECT_LT(handoffs, replies) << replies << " replies in " << handoffs << " hand-offs";
}

OutcomeEvent Event(std::string token, size_t output_bytes) {
  OutcomeEvent e;
  e.token = std::move(token);
  e.state = TaskState::kSucceeded;
  e.output = "\"" + std::string(output_bytes, 'o') + "\"";
  return e;
}

TEST_F(BridgeTest, SubscriptionDeliversInOrderAcrossChunks) {
  auto c = Connect();
  auto sub = c->Subscribe("wf", 1);
  ASSERT_TRUE(sub.ok()) << sub.error.message;
  // Big events: several sink messages (each <= kRpcEventChunkBytesMax).
  std::vector<OutcomeEvent> batch;
  for (int i = 0; i < 6; ++i) batch.push_back(Event("big-" + std::to_string(i), 200'000));
  engine_.AddEvents(batch);
  engine_.AddEvents({Event("small", 10)});
  std::vector<OutcomeEvent> got;
  const int64_t deadline = NowMs() + kWaitMs;
  while (got.size() < 7 && NowMs() < deadline) {
    auto next = sub.value->Next(100);
    ASSERT_TRUE(next.ok()) << next.error.message;
    for (auto& e : next.value) got.push_back(std::move(e));
  }
  ASSERT_EQ(got.size(), 7u);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].seq, i + 1);
  EXPECT_EQ(got[5].token, "big-5");
  EXPECT_EQ(got[5].output.size(), 200'002u);
  EXPECT_EQ(got[6].token, "small");
}

TEST_F(BridgeTest, SubscriptionEndsWhenItsEventsAreTrimmed) {
  auto c = Connect();
  auto sub = c->Subscribe("wf", 1);
  ASSERT_TRUE(sub.ok());
  engine_.TrimBelow(5);
  engine_.AddEvents({Event("a", 1), Event("b", 1)});
  Result<std::vector<OutcomeEvent>> next;
  const int64_t deadline = NowMs() + kWaitMs;
  do {
    next = sub.value->Next(100);
  } while (next.ok() && NowMs() < deadline);
  EXPECT_FALSE(next.ok());
  EXPECT_NE(next.error.message.find("no longer kept"), std::string::npos) << next.error.message;
}

TEST_F(BridgeTest, ShutdownWithAWaitingPoll) {
  auto c = Connect();
  auto poll = c->GetActivityTaskAsync({"arn:a", "w"}, 30);
  ASSERT_TRUE(Pump(*c, [&]() { return engine_.waiting_polls() == 1; }));
  server_->Shutdown();
  EXPECT_EQ(engine_.withdrawn().size(), 1u);
  auto r = c->Wait(std::move(poll));
  EXPECT_EQ(r.error.code, ErrorCode::kUnavailable);  // disconnected
  server_->Shutdown();                               // idempotent
}

TEST(BridgeStartTest, RefusesABusyPortABadAddressAndABadPollLimit) {
  FakeEngine engine;
  ServerOptions options;
  options.listen_address = "127.0.0.1:0";
  auto first = Server::Start(&engine, options);
  ASSERT_TRUE(first.ok());
  options.listen_address = first.value->address();
  auto second = Server::Start(&engine, options);  // the port is taken
  EXPECT_FALSE(second.ok());
  EXPECT_FALSE(second.error.message.empty());
  options.listen_address = "127.0.0.1:99999";
  EXPECT_FALSE(Server::Start(&engine, options).ok());
  options.listen_address = "127.0.0.1:0";
  options.max_poll_seconds = 0;
  EXPECT_FALSE(Server::Start(&engine, options).ok());
}

}  // namespace
}  // namespace tw::rpc
