// tw-test-labels: threads
//
// tokenwheeld end to end through the C++ client (rpc/client.h): every operation and typed
// error, long polls (task mid-wait, timeout, caller gone), batches, timeouts on real clocks, and
// the outcome stream across a client reconnect and a server restart.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "engine/limits.h"
#include "rpc/client.h"
#include "tests/rpc/test_support.h"

namespace tw::rpc {
namespace {

using testing::NowMs;
using testing::ServerProcess;
using testing::WaitUntil;

constexpr int64_t kWaitMs = 20'000;  // bound on every "until it happens" wait

using ServerIntegrationTest = testing::DaemonTest;

IssueTaskRequest Callback(uint32_t timeout_s = 0, uint32_t heartbeat_s = 0) {
  IssueTaskRequest req;
  req.input = R"({"n":1})";
  req.timeout_s = timeout_s;
  req.heartbeat_s = heartbeat_s;
  return req;
}

IssueTaskRequest OnActivity(const std::string& arn, std::string input = "{}") {
  IssueTaskRequest req;
  req.activity_arn = arn;
  req.input = std::move(input);
  return req;
}

std::string Issue(Client& c, const IssueTaskRequest& req) {
  auto r = c.IssueTask(req);
  EXPECT_TRUE(r.ok()) << r.error.message;
  return r.value.token;
}

bool WaitForState(Client& c, const std::string& token, TaskState want) {
  return WaitUntil(
      [&]() {
        auto d = c.DescribeTask(token);
        return d.ok() && d.value.state == want;
      },
      kWaitMs);
}

bool WaitForWaitingPolls(Client& c, uint64_t n) {
  return WaitUntil(
      [&]() {
        auto s = c.Stats();
        return s.ok() && s.value.engine.waiting_polls == n;
      },
      kWaitMs);
}

SendTaskSuccessRequest Success(const std::string& token, std::string output) {
  return SendTaskSuccessRequest{token, std::move(output)};
}

TEST_F(ServerIntegrationTest, PingAndInfo) {
  StartServer();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto pong = c->Ping("hello");
  ASSERT_TRUE(pong.ok());
  EXPECT_EQ(pong.value.payload, "hello");
  EXPECT_TRUE(pong.value.storage.ok);
  EXPECT_EQ(c->info().api_version, 1u);
  EXPECT_EQ(c->info().max_poll_seconds, limits::kPollSecondsDefault);
  EXPECT_EQ(c->info().request_bytes_max, limits::kRequestBytesMax);
  EXPECT_EQ(c->info().batch_items_max, limits::kRpcBatchItemsMax);
}

// `tokenwheel backup`'s call: an online checkpoint under --backup-dir, restored by starting a
// second server on it while the first keeps running.
TEST_F(ServerIntegrationTest, CheckpointWhileServingRestoresAsADataDirectory) {
  const std::string backups = dir_.path() + "/backups";
  StartServer({"--backup-dir", backups});
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  const std::string before = Issue(*c, Callback());
  ASSERT_TRUE(c->SendTaskSuccess({before, R"({"r":1})"}).ok());
  auto cp = c->Checkpoint("nightly");
  ASSERT_TRUE(cp.ok()) << cp.error.message;
  EXPECT_EQ(cp.value, backups + "/nightly");
  const std::string after = Issue(*c, Callback());
  auto again = c->Checkpoint("nightly");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error.code, ErrorCode::kValidation) << again.error.message;

  ServerProcess restored(cp.value, dir_.path() + "/restored.log");
  ASSERT_TRUE(restored.Start());
  auto r = Client::Connect(restored.address());
  ASSERT_TRUE(r.ok()) << r.error.message;
  auto d = r.value->DescribeTask(before);
  ASSERT_TRUE(d.ok()) << d.error.message;
  EXPECT_EQ(d.value.state, TaskState::kSucceeded);
  EXPECT_EQ(d.value.output, R"({"r":1})");
  EXPECT_EQ(r.value->DescribeTask(after).error.code, ErrorCode::kTaskDoesNotExist);
  EXPECT_EQ(c->DescribeTask(after).value.state, TaskState::kStarted) << "the original serves on";
  r.value.reset();
  EXPECT_EQ(restored.Terminate(), 0) << restored.Log();
}

TEST_F(ServerIntegrationTest, ActivitiesAndTheirErrors) {
  StartServer();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto a = c->CreateActivity("orders");
  ASSERT_TRUE(a.ok()) << a.error.message;
  EXPECT_EQ(a.value.arn, "arn:aws:states:us-east-1:000000000000:activity:orders");
  EXPECT_EQ(a.value.name, "orders");
  // Idempotent by name: same ARN, same creation time.
  auto again = c->CreateActivity("orders");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value.arn, a.value.arn);
  EXPECT_EQ(again.value.creation_ms, a.value.creation_ms);
  ASSERT_TRUE(c->CreateActivity("billing").ok());

  auto d = c->DescribeActivity(a.value.arn);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value.name, "orders");

  // Pagination: one per page.
  std::set<std::string> names;
  std::string next;
  int pages = 0;
  do {
    auto page = c->ListActivities(1, next);
    ASSERT_TRUE(page.ok()) << page.error.message;
    for (const auto& act : page.value.activities) names.insert(act.name);
    next = page.value.next_token;
    ASSERT_LT(++pages, 10);
  } while (!next.empty());
  EXPECT_EQ(names, (std::set<std::string>{"billing", "orders"}));

  EXPECT_EQ(c->CreateActivity("bad name").error.code, ErrorCode::kInvalidName);
  EXPECT_EQ(c->CreateActivity("").error.code, ErrorCode::kInvalidName);
  EXPECT_EQ(c->DescribeActivity("nope").error.code, ErrorCode::kInvalidArn);
  EXPECT_EQ(c->DescribeActivity("nope").error.message, "Invalid Arn: 'Invalid ARN prefix: nope'");
  EXPECT_EQ(c->ListActivities(1001, "").error.code, ErrorCode::kValidation);
  EXPECT_EQ(c->ListActivities(0, "garbage-token").error.code, ErrorCode::kInvalidToken);

  ASSERT_TRUE(c->DeleteActivity(a.value.arn).ok());
  ASSERT_TRUE(c->DeleteActivity(a.value.arn).ok());  // twice is fine
  auto gone = c->DescribeActivity(a.value.arn);
  EXPECT_EQ(gone.error.code, ErrorCode::kActivityDoesNotExist);
  EXPECT_EQ(gone.error.message, "Activity Does Not Exist: '" + a.value.arn + "'");
  EXPECT_EQ(c->DeleteActivity("nope").error.code, ErrorCode::kInvalidArn);
}

TEST_F(ServerIntegrationTest, CallbackTaskSuccessDuplicatesAndRefusals) {
  StartServer();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  IssueTaskRequest req = Callback();
  req.correlation = std::string("\x00\x01wf-7", 6);
  const std::string token = Issue(*c, req);
  ASSERT_FALSE(token.empty());
  EXPECT_LE(token.size(), limits::kTaskTokenCharsMax);

  auto d = c->DescribeTask(token);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value.state, TaskState::kStarted);  // callback tasks are born started
  EXPECT_EQ(d.value.input, R"({"n":1})");
  EXPECT_EQ(d.value.correlation, req.correlation);

  ASSERT_TRUE(c->SendTaskHeartbeat(token).ok());
  auto ok = c->SendTaskSuccess(Success(token, R"({"done":true})"));
  ASSERT_TRUE(ok.ok()) << ok.error.message;
  EXPECT_FALSE(ok.value.duplicate);

  // The identical retry is answered as success, flagged.
  auto dup = c->SendTaskSuccess(Success(token, R"({"done":true})"));
  ASSERT_TRUE(dup.ok());
  EXPECT_TRUE(dup.value.duplicate);

  // A different completion is refused, and says why, with the recorded outcome.
  auto other = c->SendTaskSuccess(Success(token, R"({"done":false})"));
  EXPECT_EQ(other.error.code, ErrorCode::kTaskTimedOut);
  EXPECT_EQ(other.error.message, "Task Timed Out: 'Provided task does not exist anymore'");
  EXPECT_EQ(other.error.refusal, Refusal::kAlreadyCompleted);
  EXPECT_EQ(other.error.recorded_state, TaskState::kSucceeded);
  EXPECT_EQ(other.error.recorded_output(), R"({"done":true})");

  auto fail = c->SendTaskFailure(SendTaskFailureRequest{token, "E", "C"});
  EXPECT_EQ(fail.error.code, ErrorCode::kTaskTimedOut);
  EXPECT_EQ(fail.error.refusal, Refusal::kAlreadyCompleted);
  auto hb = c->SendTaskHeartbeat(token);
  EXPECT_EQ(hb.error.code, ErrorCode::kTaskTimedOut);
  auto cancel = c->CancelTask(token);
  EXPECT_EQ(cancel.error.code, ErrorCode::kTaskTimedOut);

  d = c->DescribeTask(token);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value.state, TaskState::kSucceeded);
  EXPECT_EQ(d.value.output, R"({"done":true})");
}

TEST_F(ServerIntegrationTest, FailureAndCancel) {
  StartServer();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  const std::string failed = Issue(*c, Callback());
  auto f = c->SendTaskFailure(SendTaskFailureRequest{failed, "Boom", "it broke"});
  ASSERT_TRUE(f.ok()) << f.error.message;
  auto d = c->DescribeTask(failed);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value.state, TaskState::kFailed);
  EXPECT_TRUE(d.value.has_error);
  EXPECT_EQ(d.value.error, "Boom");
  EXPECT_EQ(d.value.cause, "it broke");

  // Neither error nor cause is fine.
  const std::string bare = Issue(*c, Callback());
  ASSERT_TRUE(c->SendTaskFailure(SendTaskFailureRequest{bare, std::nullopt, std::nullopt}).ok());
  d = c->DescribeTask(bare);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d.value.has_error);
  EXPECT_FALSE(d.value.has_cause);

  const std::string cancelled = Issue(*c, Callback());
  auto x = c->CancelTask(cancelled);
  ASSERT_TRUE(x.ok()) << x.error.message;
  d = c->DescribeTask(cancelled);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value.state, TaskState::kCancelled);
  auto late = c->SendTaskSuccess(Success(cancelled, "{}"));
  EXPECT_EQ(late.error.code, ErrorCode::kTaskTimedOut);
  EXPECT_EQ(late.error.refusal, Refusal::kCancelled);
}

TEST_F(ServerIntegrationTest, TypedValidationErrors) {
  StartServer();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  const std::string token = Issue(*c, Callback());

  auto bad = c->SendTaskSuccess(Success("not-a-token", "{}"));
  EXPECT_EQ(bad.error.code, ErrorCode::kInvalidToken);
  EXPECT_EQ(bad.error.message, "Invalid Token: 'Invalid token'");
  // A mangled real token fails the MAC.
  std::string mangled = token;
  mangled[mangled.size() - 3] = mangled[mangled.size() - 3] == 'A' ? 'B' : 'A';
  EXPECT_EQ(c->SendTaskHeartbeat(mangled).error.code, ErrorCode::kInvalidToken);
  EXPECT_EQ(c->DescribeTask(mangled).error.code, ErrorCode::kInvalidToken);
  EXPECT_EQ(c->CancelTask("").error.code == ErrorCode::kValidation ||
                c->CancelTask("").error.code == ErrorCode::kInvalidToken,
            true);
  EXPECT_NE(c->SendTaskHeartbeat(std::string(limits::kTaskTokenCharsMax + 1, 'A')).error.code,
            ErrorCode::kOk);

  auto no_output = c->SendTaskSuccess(SendTaskSuccessRequest{token, std::nullopt});
  EXPECT_EQ(no_output.error.code, ErrorCode::kValidation);
  auto not_json = c->SendTaskSuccess(Success(token, "{not json"));
  EXPECT_EQ(not_json.error.code, ErrorCode::kInvalidOutput);
  auto too_big =
      c->SendTaskSuccess(Success(token, "\"" + std::string(limits::kPayloadBytesMax, 'x') + "\""));
  EXPECT_EQ(too_big.error.code, ErrorCode::kValidation);
  auto long_error = c->SendTaskFailure(
      SendTaskFailureRequest{token, std::string(limits::kErrorCharsMax + 1, 'e'), std::nullopt});
  EXPECT_EQ(long_error.error.code, ErrorCode::kValidation);

  IssueTaskRequest hb_ge_timeout = Callback(10, 10);
  EXPECT_EQ(c->IssueTask(hb_ge_timeout).error.code, ErrorCode::kValidation);
  IssueTaskRequest bad_input = Callback();
  bad_input.input = "{";
  EXPECT_NE(c->IssueTask(bad_input).error.code, ErrorCode::kOk);
  EXPECT_EQ(
      c->IssueTask(OnActivity("arn:aws:states:us-east-1:000000000000:activity:none")).error.code,
      ErrorCode::kActivityDoesNotExist);
  EXPECT_EQ(c->IssueTask(OnActivity("nope")).error.code, ErrorCode::kInvalidArn);
  EXPECT_EQ(c->GetActivityTask({"nope", "w"}, 1).error.code, ErrorCode::kInvalidArn);
  EXPECT_EQ(c->GetActivityTask({"arn:aws:states:us-east-1:000000000000:activity:none", "w"}, 1)
                .error.code,
            ErrorCode::kActivityDoesNotExist);

  // The task survived all of that untouched.
  auto d = c->DescribeTask(token);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value.state, TaskState::kStarted);
}

TEST_F(ServerIntegrationTest, IdempotencyKey) {
  StartServer();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  IssueTaskRequest req = Callback();
  req.idempotency_key = "wf-1/step-3";
  auto first = c->IssueTask(req);
  ASSERT_TRUE(first.ok());
  EXPECT_FALSE(first.value.existing);
  auto second = c->IssueTask(req);
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second.value.existing);
  EXPECT_EQ(second.value.token, first.value.token);
}

TEST_F(ServerIntegrationTest, TaskDoesNotExistAfterRetention) {
  StartServer({"--retention-seconds", "1"});
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  const std::string token = Issue(*c, Callback());
  ASSERT_TRUE(c->SendTaskSuccess(Success(token, "{}")).ok());
  // Retention drops the finished task after ~1 s; a well-formed token then names nothing.
  EXPECT_TRUE(
      WaitUntil([&]() { return c->DescribeTask(token).error.code == ErrorCode::kTaskDoesNotExist; },
                kWaitMs));
  EXPECT_EQ(c->SendTaskSuccess(Success(token, "{}")).error.code, ErrorCode::kTaskDoesNotExist);
}

TEST_F(ServerIntegrationTest, ActivityTasksFifo) {
  StartServer();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto a = c->CreateActivity("fifo");
  ASSERT_TRUE(a.ok());
  std::vector<std::string> tokens;
  for (int i = 0; i < 3; ++i) {
    tokens.push_back(Issue(*c, OnActivity(a.value.arn, "{\"i\":" + std::to_string(i) + "}")));
  }
  auto d = c->DescribeTask(tokens[0]);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value.state, TaskState::kScheduled);
  for (int i = 0; i < 3; ++i) {
    auto t = c->GetActivityTask({a.value.arn, "worker-1"}, 5);
    ASSERT_TRUE(t.ok()) << t.error.message;
    EXPECT_EQ(t.value.token, tokens[i]);
    EXPECT_EQ(t.value.input, "{\"i\":" + std::to_string(i) + "}");
  }
  d = c->DescribeTask(tokens[0]);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value.state, TaskState::kStarted);
  EXPECT_EQ(d.value.worker, "worker-1");
  EXPECT_NE(d.value.started_ms, 0);
}

TEST_F(ServerIntegrationTest, LongPollTaskArrivesMidWait) {
  StartServer();
  auto worker = Connect();
  ASSERT_NE(worker, nullptr);
  ASSERT_NE(worker, nullptr);
  auto issuer = Connect();
  ASSERT_NE(issuer, nullptr);
  ASSERT_NE(issuer, nullptr);
  auto a = issuer->CreateActivity("mid");
  ASSERT_TRUE(a.ok());
  const int64_t t0 = NowMs();
  auto poll = worker->GetActivityTaskAsync({a.value.arn, "w"}, 30);
  ASSERT_TRUE(WaitForWaitingPolls(*issuer, 1));
  const std::string token = Issue(*issuer, OnActivity(a.value.arn, R"({"late":1})"));
  auto got = worker->Wait(std::move(poll));
  ASSERT_TRUE(got.ok()) << got.error.message;
  EXPECT_EQ(got.value.token, token);
  EXPECT_EQ(got.value.input, R"({"late":1})");
  EXPECT_LT(NowMs() - t0, 25'000);  // answered by the task, not by the 30 s wait
}

TEST_F(ServerIntegrationTest, LongPollTimesOutEmpty) {
  StartServer({"--max-poll-seconds", "1"});
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->info().max_poll_seconds, 1u);
  auto a = c->CreateActivity("quiet");
  ASSERT_TRUE(a.ok());
  const int64_t t0 = NowMs();
  auto r = c->GetActivityTask({a.value.arn, "w"}, 0);  // the server's maximum: 1 s
  const int64_t elapsed = NowMs() - t0;
  ASSERT_TRUE(r.ok()) << r.error.message;
  EXPECT_TRUE(r.value.token.empty());
  EXPECT_GE(elapsed, 900);
  EXPECT_LT(elapsed, 15'000);
  // Asking for longer than the maximum gets the maximum.
  const int64_t t1 = NowMs();
  r = c->GetActivityTask({a.value.arn, "w"}, 600);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r.value.token.empty());
  EXPECT_LT(NowMs() - t1, 15'000);
  // And the poll is gone from the engine.
  EXPECT_TRUE(WaitForWaitingPolls(*c, 0));
}

TEST_F(ServerIntegrationTest, LongPollCancelledCallLeavesTaskQueued) {
  StartServer();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto a = c->CreateActivity("cancelled-poll");
  ASSERT_TRUE(a.ok());
  {
    auto poll = c->GetActivityTaskAsync({a.value.arn, "w"}, 30);
    ASSERT_TRUE(WaitForWaitingPolls(*c, 1));
    // Dropping the promise cancels the call (capnp Finish); the server withdraws the poll.
  }
  ASSERT_TRUE(WaitForWaitingPolls(*c, 0));
  const std::string token = Issue(*c, OnActivity(a.value.arn));
  auto d = c->DescribeTask(token);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value.state, TaskState::kScheduled);
  auto got = c->GetActivityTask({a.value.arn, "w2"}, 5);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got.value.token, token);
}

TEST_F(ServerIntegrationTest, LongPollCallerDisconnectsTaskStaysQueued) {
  StartServer();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto a = c->CreateActivity("dead-worker");
  ASSERT_TRUE(a.ok());
  // A real worker process polling, then killed: its connection drops without a goodbye.
  const std::string out = dir_.path() + "/poller.out";
  const pid_t poller = ServerProcess::Spawn({testing::kCliPath, "--server", server_->address(),
                                             "task", "poll", a.value.arn, "--wait", "60"},
                                            out);
  ASSERT_GT(poller, 0);
  ASSERT_TRUE(WaitForWaitingPolls(*c, 1));
  kill(poller, SIGKILL);
  int status = 0;
  waitpid(poller, &status, 0);
  ASSERT_TRUE(WaitForWaitingPolls(*c, 0));

  const std::string token = Issue(*c, OnActivity(a.value.arn));
  auto d = c->DescribeTask(token);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value.state, TaskState::kScheduled);
  auto got = c->GetActivityTask({a.value.arn, "w2"}, 5);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got.value.token, token);
}

TEST_F(ServerIntegrationTest, TimeoutsOnRealClocks) {
  StartServer();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto a = c->CreateActivity("slow");
  ASSERT_TRUE(a.ok());
  const std::string hb = Issue(*c, Callback(30, 1));
  const std::string overall = Issue(*c, Callback(1, 0));
  IssueTaskRequest queued = OnActivity(a.value.arn);
  queued.schedule_to_start_s = 1;
  const std::string s2s = Issue(*c, queued);

  ASSERT_TRUE(WaitForState(*c, hb, TaskState::kTimedOut));
  ASSERT_TRUE(WaitForState(*c, overall, TaskState::kTimedOut));
  ASSERT_TRUE(WaitForState(*c, s2s, TaskState::kTimedOut));
  EXPECT_EQ(c->DescribeTask(hb).value.timeout_kind, TimeoutKind::kHeartbeat);
  EXPECT_EQ(c->DescribeTask(overall).value.timeout_kind, TimeoutKind::kOverall);
  EXPECT_EQ(c->DescribeTask(s2s).value.timeout_kind, TimeoutKind::kScheduleToStart);

  auto late = c->SendTaskSuccess(Success(hb, "{}"));
  EXPECT_EQ(late.error.code, ErrorCode::kTaskTimedOut);
  EXPECT_EQ(late.error.refusal, Refusal::kTimedOut);
  EXPECT_EQ(late.error.timeout_kind, TimeoutKind::kHeartbeat);
  // Never before the deadline.
  auto d = c->DescribeTask(overall);
  EXPECT_GE(d.value.ended_ms - d.value.started_ms, 1000);
}

TEST_F(ServerIntegrationTest, HeartbeatsKeepATaskAlive) {
  StartServer();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  const std::string token = Issue(*c, Callback(60, 2));
  const int64_t until = NowMs() + 3500;  // past the 2 s heartbeat clock, beating every 0.5 s
  while (NowMs() < until) {
    ASSERT_TRUE(c->SendTaskHeartbeat(token).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  auto d = c->DescribeTask(token);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value.state, TaskState::kStarted);
}

TEST_F(ServerIntegrationTest, BatchCalls) {
  StartServer();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  std::vector<IssueTaskRequest> reqs(200, Callback());
  auto issued = c->IssueTasks(reqs);
  ASSERT_TRUE(issued.ok()) << issued.error.message;
  ASSERT_EQ(issued.value.size(), reqs.size());
  std::vector<std::string> tokens;
  for (const auto& r : issued.value) {
    ASSERT_TRUE(r.ok()) << r.error.message;
    tokens.push_back(r.value.token);
  }
  EXPECT_EQ(std::set<std::string>(tokens.begin(), tokens.end()).size(), tokens.size());

  std::vector<std::string> beats(tokens.begin(), tokens.end());
  beats.push_back("garbage");
  auto hb = c->SendTaskHeartbeats(beats);
  ASSERT_TRUE(hb.ok());
  for (size_t i = 0; i < tokens.size(); ++i) EXPECT_TRUE(hb.value[i].ok());
  EXPECT_EQ(hb.value.back().error.code, ErrorCode::kInvalidToken);

  std::vector<SendTaskSuccessRequest> wins;
  for (size_t i = 0; i < 100; ++i) wins.push_back(Success(tokens[i], "{\"i\":1}"));
  wins.push_back(Success("garbage", "{}"));  // one bad item does not spoil the others
  auto s = c->SendTaskSuccesses(wins);
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s.value.size(), wins.size());
  for (size_t i = 0; i < 100; ++i) EXPECT_TRUE(s.value[i].ok());
  EXPECT_EQ(s.value.back().error.code, ErrorCode::kInvalidToken);

  std::vector<SendTaskFailureRequest> losses;
  for (size_t i = 100; i < 200; ++i) losses.push_back({tokens[i], "E", std::nullopt});
  losses.push_back({tokens[0], "E", std::nullopt});  // already succeeded
  auto f = c->SendTaskFailures(losses);
  ASSERT_TRUE(f.ok());
  for (size_t i = 0; i < 100; ++i) EXPECT_TRUE(f.value[i].ok());
  EXPECT_EQ(f.value.back().error.refusal, Refusal::kAlreadyCompleted);

  EXPECT_EQ(c->DescribeTask(tokens[5]).value.state, TaskState::kSucceeded);
  EXPECT_EQ(c->DescribeTask(tokens[150]).value.state, TaskState::kFailed);

  // Over the item limit: refused as a malformed request; the connection stays usable.
  std::vector<IssueTaskRequest> too_many(limits::kRpcBatchItemsMax + 1, Callback());
  auto refused = c->IssueTasks(too_many);
  EXPECT_EQ(refused.error.code, ErrorCode::kInternal);
  EXPECT_TRUE(c->Ping("still here").ok());
}

TEST_F(ServerIntegrationTest, DeletingAnActivityFailsItsQueuedTasks) {
  StartServer();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto a = c->CreateActivity("doomed");
  ASSERT_TRUE(a.ok());
  const std::string queued = Issue(*c, OnActivity(a.value.arn));
  ASSERT_TRUE(c->DeleteActivity(a.value.arn).ok());
  ASSERT_TRUE(WaitForState(*c, queued, TaskState::kFailed));
  auto d = c->DescribeTask(queued);
  EXPECT_EQ(d.value.error, "States.Runtime");
  EXPECT_EQ(d.value.cause, "The activity " + a.value.arn + " does not exist.");
}

// Drains a subscription until it has seen `last` (or the wait runs out), checking order.
std::vector<OutcomeEvent> ReceiveThrough(Subscription& sub, uint64_t last) {
  std::vector<OutcomeEvent> got;
  const int64_t deadline = NowMs() + kWaitMs;
  while ((got.empty() || got.back().seq < last) && NowMs() < deadline) {
    auto next = sub.Next(200);
    EXPECT_TRUE(next.ok()) << next.error.message;
    if (!next.ok()) break;
    for (auto& e : next.value) {
      if (!got.empty()) {
        EXPECT_EQ(e.seq, got.back().seq + 1) << "gap or disorder";
      }
      got.push_back(std::move(e));
    }
  }
  return got;
}

TEST_F(ServerIntegrationTest, OutcomeStreamAcrossClientReconnect) {
  StartServer();
  std::map<std::string, std::string> output_of;  // token -> output
  {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    auto sub = c->Subscribe("workflow", 0);
    ASSERT_TRUE(sub.ok()) << sub.error.message;
    EXPECT_EQ(sub.value->start_seq(), 1u);
    for (int i = 0; i < 20; ++i) {
      const std::string token = Issue(*c, Callback());
      output_of[token] = "{\"i\":" + std::to_string(i) + "}";
      ASSERT_TRUE(c->SendTaskSuccess(Success(token, output_of[token])).ok());
    }
    auto got = ReceiveThrough(*sub.value, 20);
    ASSERT_EQ(got.size(), 20u);
    for (const auto& e : got) {
      EXPECT_EQ(e.state, TaskState::kSucceeded);
      EXPECT_EQ(e.output, output_of[e.token]);
    }
    ASSERT_TRUE(c->AckEvents("workflow", 10).ok());
  }
  // A new connection resumes after the durable cursor: 11.., nothing lost, nothing skipped.
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto sub = c->Subscribe("workflow", 0);
  ASSERT_TRUE(sub.ok());
  EXPECT_EQ(sub.value->acked_seq(), 10u);
  EXPECT_EQ(sub.value->start_seq(), 11u);
  const std::string more = Issue(*c, Callback());
  ASSERT_TRUE(c->CancelTask(more).ok());
  auto got = ReceiveThrough(*sub.value, 21);
  ASSERT_EQ(got.size(), 11u);
  EXPECT_EQ(got.front().seq, 11u);
  EXPECT_EQ(got.back().seq, 21u);
  EXPECT_EQ(got.back().token, more);
  EXPECT_EQ(got.back().state, TaskState::kCancelled);

  auto stats = c->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats.value.engine.last_event_seq, 21u);
  EXPECT_EQ(stats.value.subscriptions, 1u);
}

TEST_F(ServerIntegrationTest, OutcomeStreamAcrossServerRestart) {
  StartServer();
  std::vector<std::string> tokens;
  {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    auto sub = c->Subscribe("engine-a", 0);
    ASSERT_TRUE(sub.ok());
    for (int i = 0; i < 10; ++i) {
      tokens.push_back(Issue(*c, Callback()));
      ASSERT_TRUE(c->SendTaskSuccess(Success(tokens.back(), "{}")).ok());
    }
    auto got = ReceiveThrough(*sub.value, 10);
    ASSERT_EQ(got.size(), 10u);
    ASSERT_TRUE(c->AckEvents("engine-a", 5).ok());
  }
  ASSERT_EQ(server_->Terminate(), 0) << server_->Log();
  ASSERT_TRUE(server_->Start());
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto sub = c->Subscribe("engine-a", 0);
  ASSERT_TRUE(sub.ok()) << sub.error.message;
  EXPECT_EQ(sub.value->start_seq(), 6u);
  for (int i = 0; i < 5; ++i) {
    tokens.push_back(Issue(*c, Callback()));
    ASSERT_TRUE(c->SendTaskFailure({tokens.back(), "E", std::nullopt}).ok());
  }
  auto got = ReceiveThrough(*sub.value, 15);
  ASSERT_EQ(got.size(), 10u);  // 6..15: the unacked 5 again (same sequences), then 5 new
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].seq, 6 + i);
    EXPECT_EQ(got[i].token, tokens[5 + i]);
    EXPECT_EQ(got[i].state, i < 5 ? TaskState::kSucceeded : TaskState::kFailed);
  }
  // An explicit start replays what is still kept (6.. : engine-a acknowledged only 5) ...
  auto replay = c->Subscribe("engine-b", 6);
  ASSERT_TRUE(replay.ok()) << replay.error.message;
  EXPECT_EQ(ReceiveThrough(*replay.value, 15).size(), 10u);
  // ... and says so, typed, for what every consumer acknowledged and was trimmed.
  auto trimmed = c->Subscribe("engine-c", 1);
  EXPECT_EQ(trimmed.error.code, ErrorCode::kValidation);
}

TEST_F(ServerIntegrationTest, StatsAndReplyBatching) {
  StartServer();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto a = c->CreateActivity("counted");
  ASSERT_TRUE(a.ok());
  Issue(*c, OnActivity(a.value.arn));
  Issue(*c, OnActivity(a.value.arn));
  Issue(*c, OnActivity(a.value.arn));
  auto taken = c->GetActivityTask({a.value.arn, "worker-1"}, 5);  // one of them STARTED
  ASSERT_TRUE(taken.ok());
  ASSERT_FALSE(taken.value.token.empty());
  Issue(*c, Callback(60));
  // Many calls in flight at once: the engine answers them in few batches, and each batch
  // crosses to the RPC thread in one hand-off.
  std::vector<kj::Promise<Result<IssueTaskReply>>> inflight;
  for (int i = 0; i < 500; ++i) inflight.push_back(c->IssueTaskAsync(Callback()));
  for (auto& p : inflight) ASSERT_TRUE(c->Wait(std::move(p)).ok());
  auto s = c->Stats();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s.value.engine.live_tasks, 504u);
  ASSERT_EQ(s.value.engine.per_activity.size(), 1u);
  EXPECT_EQ(s.value.engine.per_activity[0].queued, 2u);
  EXPECT_EQ(s.value.engine.per_activity[0].started, 1u);  // carried over the wire too
  EXPECT_GE(s.value.engine.pending_timers, 1u);
  EXPECT_EQ(s.value.connections, 1u);
  EXPECT_GE(s.value.replies_delivered, 506u);  // create, 504 issues, the poll
  EXPECT_LT(s.value.reply_handoffs, s.value.replies_delivered / 2)
      << "replies should cross threads in batches";
  // And the other way: the calls of one burst on the RPC thread wake the engine thread once
  // (Engine::Cork), or every kCorkedCommandsPerWake of them; never once per call.
  EXPECT_GE(s.value.engine.submit_wakes, 1u);
  EXPECT_LT(s.value.engine.submit_wakes, s.value.engine.commands / 4)
      << s.value.engine.commands << " commands in " << s.value.engine.submit_wakes << " wake-ups";
}

}  // namespace
}  // namespace tw::rpc
