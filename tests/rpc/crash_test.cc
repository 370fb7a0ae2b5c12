// tw-test-labels: threads
//
// kill -9 of tokenwheeld: every acknowledged issue, success, failure and timeout is there after a
// restart, with its outcome event, and nothing is lost under load.
#include <gtest/gtest.h>
#include <kj/vector.h>
#include <signal.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "rpc/client.h"
#include "tests/rpc/test_support.h"

namespace tw::rpc {
namespace {

using testing::NowMs;
using testing::ServerProcess;
using testing::WaitUntil;

constexpr int64_t kWaitMs = 30'000;

using CrashTest = testing::DaemonTest;

IssueTaskRequest Callback(uint32_t timeout_s = 0) {
  IssueTaskRequest req;
  req.timeout_s = timeout_s;
  return req;
}

TEST_F(CrashTest, AcknowledgedOutcomesSurviveKill9) {
  StartServer();
  std::map<std::string, TaskState> want;      // token -> state after the restart
  std::map<std::string, std::string> output;  // succeeded token -> output
  std::vector<std::string> queued;
  std::vector<std::string> outcome_order;  // the order the outcomes were acknowledged
  {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    // The consumer exists before any outcome, so every event is kept for it.
    auto sub = c->Subscribe("workflow", 0);
    ASSERT_TRUE(sub.ok());
    auto a = c->CreateActivity("crashy");
    ASSERT_TRUE(a.ok());
    for (int i = 0; i < 30; ++i) {
      const std::string t = c->IssueTask(Callback()).value.token;
      output[t] = "{\"i\":" + std::to_string(i) + "}";
      ASSERT_TRUE(c->SendTaskSuccess({t, output[t]}).ok());
      want[t] = TaskState::kSucceeded;
      outcome_order.push_back(t);
    }
    for (int i = 0; i < 30; ++i) {
      const std::string t = c->IssueTask(Callback()).value.token;
      ASSERT_TRUE(c->SendTaskFailure({t, "E" + std::to_string(i), std::nullopt}).ok());
      want[t] = TaskState::kFailed;
      outcome_order.push_back(t);
    }
    std::vector<std::string> expiring;
    for (int i = 0; i < 10; ++i) expiring.push_back(c->IssueTask(Callback(1)).value.token);
    // A timeout is "acknowledged" once it is visible: wait for every one (bounded).
    for (const std::string& t : expiring) {
      ASSERT_TRUE(WaitUntil(
          [&]() { return c->DescribeTask(t).value.state == TaskState::kTimedOut; }, kWaitMs));
      want[t] = TaskState::kTimedOut;
    }
    // Five activity tasks a worker takes (STARTED), then five that stay queued, in this order.
    std::vector<std::string> taken;
    for (int i = 0; i < 10; ++i) {
      IssueTaskRequest req;
      req.activity_arn = a.value.arn;
      req.timeout_s = 3600;
      req.input = "{\"q\":" + std::to_string(i) + "}";
      const std::string t = c->IssueTask(req).value.token;
      (i < 5 ? taken : queued).push_back(t);
      want[t] = i < 5 ? TaskState::kStarted : TaskState::kScheduled;
    }
    for (const std::string& t : taken) {
      auto got = c->GetActivityTask({a.value.arn, "w"}, 5);
      ASSERT_TRUE(got.ok());
      ASSERT_EQ(got.value.token, t);  // FIFO
    }
    ASSERT_EQ(queued.size(), 5u);
  }
  server_->Kill9();
  StartServer();
  EXPECT_NE(server_->Log().find("recovered_tasks=10"), std::string::npos) << server_->Log();

  auto c = Connect();
  ASSERT_NE(c, nullptr);
  for (const auto& [t, s] : want) {
    auto d = c->DescribeTask(t);
    ASSERT_TRUE(d.ok()) << d.error.message;
    EXPECT_EQ(d.value.state, s) << TaskStateName(d.value.state) << " vs " << TaskStateName(s);
    if (s == TaskState::kSucceeded) {
      EXPECT_EQ(d.value.output, output[t]);
    }
    if (s == TaskState::kFailed) {
      EXPECT_EQ(d.value.error.substr(0, 1), "E");
    }
    if (s == TaskState::kTimedOut) {
      EXPECT_EQ(d.value.timeout_kind, TimeoutKind::kOverall);
    }
  }
  // Every outcome has its event, gapless, once, from the durable cursor (nothing was acked).
  auto sub = c->Subscribe("workflow", 0);
  ASSERT_TRUE(sub.ok());
  EXPECT_EQ(sub.value->start_seq(), 1u);
  std::vector<OutcomeEvent> events;
  const int64_t deadline = NowMs() + kWaitMs;
  while (events.size() < 70 && NowMs() < deadline) {
    auto next = sub.value->Next(200);
    ASSERT_TRUE(next.ok());
    for (auto& e : next.value) events.push_back(std::move(e));
  }
  ASSERT_EQ(events.size(), 70u);
  std::set<std::string> seen;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].seq, i + 1);
    EXPECT_EQ(events[i].state, want[events[i].token]);
    seen.insert(events[i].token);
    if (i < outcome_order.size()) {
      EXPECT_EQ(events[i].token, outcome_order[i]);
    }
  }
  EXPECT_EQ(seen.size(), 70u);
  // The queued ones are still queued, in order.
  auto a = c->CreateActivity("crashy");
  for (const std::string& t : queued) {
    auto got = c->GetActivityTask({a.value.arn, "w2"}, 5);
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(got.value.token, t);
  }
}

// Many issue -> success chains in flight; kill -9 in the middle of them. Every success that was
// acknowledged must be SUCCEEDED after the restart; every issued token must exist.
struct Load {
  Client* client = nullptr;
  ServerProcess* server = nullptr;
  size_t kill_after = 0;
  bool killed = false;
  std::set<std::string> issued;
  std::vector<std::string> succeeded;
};

kj::Promise<void> Chain(Load& load) {
  if (load.killed) return kj::READY_NOW;
  IssueTaskRequest req;
  req.input = R"({"load":true})";
  return load.client->IssueTaskAsync(req).then(
      [&load](Result<IssueTaskReply> r) -> kj::Promise<void> {
        if (!r.ok()) return kj::READY_NOW;
        const std::string token = r.value.token;
        load.issued.insert(token);
        return load.client->SendTaskSuccessAsync({token, R"({"ok":1})"})
            .then([&load, token](Result<CompletionReply> s) -> kj::Promise<void> {
              if (s.ok()) {
                load.succeeded.push_back(token);
                if (!load.killed && load.succeeded.size() >= load.kill_after) {
                  kill(load.server->pid(), SIGKILL);  // while the other chains are mid-flight
                  load.killed = true;
                }
              }
              return Chain(load);
            });
      });
}

TEST_F(CrashTest, KillNineUnderLoadLosesNothingAcknowledged) {
  StartServer();
  Load load;
  {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    load.client = c.get();
    load.server = server_.get();
    load.kill_after = 2000;
    kj::Vector<kj::Promise<void>> chains;
    for (int i = 0; i < 64; ++i) {
      chains.add(Chain(load).catch_([](kj::Exception&&) {}));  // disconnects end the chains
    }
    kj::joinPromises(chains.releaseAsArray()).wait(c->wait_scope());
  }
  ASSERT_TRUE(load.killed);
  server_->Kill9();  // reap
  StartServer();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  std::set<std::string> acked(load.succeeded.begin(), load.succeeded.end());
  std::vector<kj::Promise<Result<TaskDescription>>> checks;
  std::vector<std::string> order(load.issued.begin(), load.issued.end());
  for (const std::string& t : order) checks.push_back(c->DescribeTaskAsync(t));
  size_t succeeded = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    auto d = c->Wait(std::move(checks[i]));
    ASSERT_TRUE(d.ok()) << "issued token lost: " << d.error.message;
    if (acked.count(order[i]) > 0) {
      ASSERT_EQ(d.value.state, TaskState::kSucceeded) << "acknowledged success lost";
      EXPECT_EQ(d.value.output, R"({"ok":1})");
    }
    if (d.value.state == TaskState::kSucceeded) ++succeeded;
  }
  EXPECT_GE(succeeded, acked.size());  // unacknowledged ones may have made it too
  EXPECT_GE(acked.size(), 2000u);
}

}  // namespace
}  // namespace tw::rpc
