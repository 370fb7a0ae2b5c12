// tw-test-labels: threads
//
// The AWS JSON 1.0 gateway (rpc/aws/gateway.h), in process, over a real Engine on a MemoryStore,
// through raw HTTP (tests/rpc/aws_test_http.h): every operation's answer byte for byte as
// SEMANTICS.md records it, the protocol errors, SigV4 refusals, the long polls, and the bounds.
// The real AWS clients (AWS CLI, boto3, the JavaScript SDK) run against tokenwheeld in
// tests/clients/. Long polls use real time, kept to about a second.
#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/errors.h"
#include "engine/validate.h"
#include "rpc/aws/gateway.h"
#include "storage/memory_store.h"
#include "tests/rpc/aws_test_http.h"
#include "tests/rpc/gateway_fixture.h"

namespace tw::rpc::aws {
namespace {

using nlohmann::json;
using testing::HttpClient;
using testing::HttpResponse;

constexpr char kArnPrefix[] = "arn:aws:states:us-east-1:000000000000:activity:";
constexpr char kValidationType[] = "com.amazon.coral.validate#ValidationException";
constexpr int64_t kStorageRetryMs = 500;

std::string Sfn(const char* op) { return std::string("AWSStepFunctions.") + op; }
std::string Tw(const char* op) { return std::string("TokenWheel.") + op; }

class GatewayTest : public testing::GatewayFixture {
 protected:
  void SetUp() override {
    EngineOptions eo;
    eo.pollers_per_activity_max = pollers_max_;
    eo.storage_retry_ms = kStorageRetryMs;
    eo.reopen_store = [this](std::unique_ptr<Store>* out) {
      auto store = std::make_unique<MemoryStore>(disk_);
      store_ = store.get();
      *out = std::move(store);
      return Status::Ok();
    };
    auto store = std::make_unique<MemoryStore>(disk_);
    store_ = store.get();
    OpenEngine(eo, std::move(store));
  }

  std::unique_ptr<HttpClient> Connect() {
    auto c = std::make_unique<HttpClient>(gateway_->port());
    EXPECT_TRUE(c->connected());
    return c;
  }

  // One request on a fresh connection, answered.
  HttpResponse Call(const std::string& target, const std::string& body) {
    auto c = Connect();
    auto r = c->Post(target, body);
    EXPECT_TRUE(r.has_value()) << target << " " << body;
    return r.value_or(HttpResponse{});
  }
  json CallOk(const std::string& target, const json& body) {
    HttpResponse r = Call(target, body.dump());
    EXPECT_EQ(r.status, 200) << target << ": " << r.body;
    return json::parse(r.body, nullptr, false);
  }

  std::string CreateActivity(const std::string& name) {
    return CallOk(Sfn("CreateActivity"), {{"name", name}})["activityArn"].get<std::string>();
  }
  std::string IssueCallback(const json& extra = json::object()) {
    json body = extra;
    return CallOk(Tw("IssueTask"), body)["taskToken"].get<std::string>();
  }

  // A GetActivityTask sent on a new connection, waiting (bounded) until the engine holds it.
  std::unique_ptr<HttpClient> StartPoll(const std::string& arn, uint64_t waiting_after) {
    auto poller = Connect();
    EXPECT_TRUE(poller->SendRaw(
        HttpClient::PostRequest(Sfn("GetActivityTask"), json{{"activityArn", arn}}.dump())));
    WaitForWaitingPolls(waiting_after);
    return poller;
  }
  // Waits (bounded) until the engine holds `n` waiting polls.
  void WaitForWaitingPolls(uint64_t n) {
    const int64_t deadline = HttpClient::NowMs() + 10'000;
    while (CallOk(Tw("Stats"), json::object())["waitingPolls"] != n &&
           HttpClient::NowMs() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(CallOk(Tw("Stats"), json::object())["waitingPolls"], n);
  }

  // The error answer's code, checked against the header, the __type and the status.
  static void ExpectError(const HttpResponse& r, int status, const std::string& code,
                          const std::string& message) {
    EXPECT_EQ(r.status, status) << r.body;
    EXPECT_EQ(r.header("x-amzn-errortype"), code);
    json body = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(body.is_object()) << r.body;
    const std::string type = body.value("__type", "");
    EXPECT_EQ(type.substr(type.find('#') + 1), code) << type;
    EXPECT_EQ(body.value("message", "<none>"), message) << r.body;
  }

  std::shared_ptr<MemoryDisk> disk_ = std::make_shared<MemoryDisk>();
  MemoryStore* store_ = nullptr;
  uint32_t pollers_max_ = limits::kPollersPerActivityDefault;
};

// ---- The AWS operations, byte for byte ----

TEST_F(GatewayTest, ActivitiesAreCreatedDescribedListedAndDeleted) {
  StartGateway();
  HttpResponse created = Call(Sfn("CreateActivity"), R"({"name":"resize"})");
  EXPECT_EQ(created.status, 200);
  EXPECT_EQ(created.header("content-type"), "application/x-amz-json-1.0");
  EXPECT_FALSE(created.header("x-amzn-requestid").empty());
  EXPECT_EQ(created.body, std::string(R"({"activityArn":")") + kArnPrefix +
                              R"(resize","creationDate":1700000000.0})");
  // Idempotent by name: the same ARN and date.
  EXPECT_EQ(Call(Sfn("CreateActivity"), R"({"name":"resize"})").body, created.body);
  const std::string arn = std::string(kArnPrefix) + "resize";
  EXPECT_EQ(Call(Sfn("DescribeActivity"), json{{"activityArn", arn}}.dump()).body,
            R"({"activityArn":")" + arn + R"(","creationDate":1700000000.0,"name":"resize"})");
  json list = CallOk(Sfn("ListActivities"), json::object());
  ASSERT_EQ(list["activities"].size(), 1u);
  EXPECT_FALSE(list.contains("nextToken"));
  EXPECT_EQ(Call(Sfn("DeleteActivity"), json{{"activityArn", arn}}.dump()).body, "{}");
  EXPECT_EQ(Call(Sfn("DeleteActivity"), json{{"activityArn", arn}}.dump()).body, "{}");
  ExpectError(Call(Sfn("DescribeActivity"), json{{"activityArn", arn}}.dump()), 400,
              "ActivityDoesNotExist", "Activity Does Not Exist: '" + arn + "'");
}

TEST_F(GatewayTest, ListActivitiesPages) {
  StartGateway();
  for (int i = 0; i < 5; ++i) CreateActivity("a" + std::to_string(i));
  json page = CallOk(Sfn("ListActivities"), {{"maxResults", 2}});
  ASSERT_EQ(page["activities"].size(), 2u);
  std::vector<std::string> names;
  while (true) {
    for (auto& a : page["activities"]) names.push_back(a["name"]);
    if (!page.contains("nextToken")) break;
    page = CallOk(Sfn("ListActivities"), {{"maxResults", 2}, {"nextToken", page["nextToken"]}});
  }
  EXPECT_EQ(names, (std::vector<std::string>{"a0", "a1", "a2", "a3", "a4"}));
  ExpectError(Call(Sfn("ListActivities"), R"({"nextToken":"garbage"})"), 400, "InvalidToken",
              kInvalidTokenMessage);
  ExpectError(Call(Sfn("ListActivities"), R"({"maxResults":1001})"), 400, "ValidationException",
              "1 validation error detected: Value '1001' at 'maxResults' failed to satisfy "
              "constraint: Member must have value less than or equal to 1000");
}

TEST_F(GatewayTest, AWorkerPollsHeartbeatsAndSucceeds) {
  StartGateway();
  const std::string arn = CreateActivity("work");
  const std::string token = CallOk(
      Tw("IssueTask"),
      {{"activityArn", arn}, {"input", R"({"n":1})"}, {"heartbeatSeconds", 60}})["taskToken"];
  json task = CallOk(Sfn("GetActivityTask"), {{"activityArn", arn}, {"workerName", "w1"}});
  EXPECT_EQ(task, (json{{"taskToken", token}, {"input", R"({"n":1})"}}));
  EXPECT_EQ(Call(Sfn("SendTaskHeartbeat"), json{{"taskToken", token}}.dump()).body, "{}");
  EXPECT_EQ(
      Call(Sfn("SendTaskSuccess"), json{{"taskToken", token}, {"output", "[1,2]"}}.dump()).body,
      "{}");
  // A second success, even an identical one, is TaskTimedOut on the AWS gateway.
  ExpectError(Call(Sfn("SendTaskSuccess"), json{{"taskToken", token}, {"output", "[1,2]"}}.dump()),
              400, "TaskTimedOut", kTaskGoneMessage);
  ExpectError(Call(Sfn("SendTaskHeartbeat"), json{{"taskToken", token}}.dump()), 400,
              "TaskTimedOut", kTaskGoneMessage);
  json d = CallOk(Tw("DescribeTask"), {{"taskToken", token}});
  EXPECT_EQ(d["state"], "SUCCEEDED");
  EXPECT_EQ(d["output"], "[1,2]");
  EXPECT_EQ(d["worker"], "w1");
}

TEST_F(GatewayTest, FailureWithAndWithoutErrorAndCause) {
  StartGateway();
  const std::string a = IssueCallback();
  const std::string b = IssueCallback();
  EXPECT_EQ(Call(Sfn("SendTaskFailure"), json{{"taskToken", a}}.dump()).body, "{}");
  EXPECT_EQ(
      Call(Sfn("SendTaskFailure"), json{{"taskToken", b}, {"error", "E"}, {"cause", "why"}}.dump())
          .body,
      "{}");
  json d = CallOk(Tw("DescribeTask"), {{"taskToken", b}});
  EXPECT_EQ(d["state"], "FAILED");
  EXPECT_EQ(d["error"], "E");
  EXPECT_EQ(d["cause"], "why");
  ExpectError(Call(Sfn("SendTaskFailure"),
                   json{{"taskToken", IssueCallback()}, {"error", std::string(257, 'e')}}.dump()),
              400, "ValidationException",
              "1 validation error detected: Value at 'error' failed to satisfy constraint: "
              "Member must have length less than or equal to 256");
}

TEST_F(GatewayTest, TokensArrivesAndActivitiesThatAreNotThere) {
  StartGateway();
  ExpectError(Call(Sfn("SendTaskSuccess"), R"({"taskToken":"forged","output":"{}"})"), 400,
              "InvalidToken", kInvalidTokenMessage);
  ExpectError(Call(Sfn("SendTaskHeartbeat"), json{{"taskToken", std::string(2049, 'x')}}.dump()),
              400, "ValidationException",
              "1 validation error detected: Value at 'taskToken' failed to satisfy constraint: "
              "Member must have length less than or equal to 2048");
  ExpectError(Call(Sfn("GetActivityTask"), R"({"activityArn":"nope"})"), 400, "InvalidArn",
              "Invalid Arn: 'Invalid ARN prefix: nope'");
  ExpectError(Call(Sfn("GetActivityTask"),
                   json{{"activityArn", std::string(kArnPrefix) + "missing"}}.dump()),
              400, "ActivityDoesNotExist",
              std::string("Activity Does Not Exist: '") + kArnPrefix + "missing'");
  ExpectError(Call(Sfn("CreateActivity"), R"({"name":"has space"})"), 400, "InvalidName",
              "Invalid Name: 'has space'");
  ExpectError(Call(Sfn("SendTaskSuccess"),
                   json{{"taskToken", IssueCallback()}, {"output", "{nope"}}.dump()),
              400, "InvalidOutput", ValidateOutput(std::string("{nope")).message);
}

// ---- The protocol's own errors ----

TEST_F(GatewayTest, MissingMembersAreValidationExceptionsNamingEveryOne) {
  StartGateway();
  ExpectError(Call(Sfn("SendTaskSuccess"), "{}"), 400, "ValidationException",
              "2 validation errors detected: Value at 'taskToken' failed to satisfy constraint: "
              "Member must not be null; Value at 'output' failed to satisfy constraint: Member "
              "must not be null");
  const HttpResponse r = Call(Sfn("SendTaskSuccess"), R"({"taskToken":"t","output":null})");
  ExpectError(r, 400, "ValidationException",
              "1 validation error detected: Value at 'output' failed to satisfy constraint: "
              "Member must not be null");
  EXPECT_EQ(json::parse(r.body)["__type"], kValidationType);
  ExpectError(Call(Sfn("CreateActivity"), ""), 400, "ValidationException",
              "1 validation error detected: Value at 'name' failed to satisfy constraint: "
              "Member must not be null");
}

TEST_F(GatewayTest, MalformedBodiesAreSerializationExceptions) {
  StartGateway();
  for (const std::string& body :
       {std::string("{"), std::string("[]"), std::string("\"x\""), std::string("{}garbage"),
        std::string("{\"name\":\"a\"}\0junk", 17), std::string("\xff\xfe")}) {
    const HttpResponse r = Call(Sfn("CreateActivity"), body);
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_EQ(r.header("x-amzn-errortype"), "SerializationException") << body;
  }
  ExpectError(Call(Sfn("CreateActivity"), "[]"), 400, "SerializationException",
              kListWhereStructureMessage);
}

TEST_F(GatewayTest, MembersOfTheWrongTypeAreValidationExceptions) {
  StartGateway();
  ExpectError(Call(Sfn("CreateActivity"), R"({"name":7})"), 400, "ValidationException",
              "1 validation error detected: Value at 'name' failed to satisfy constraint: Member "
              "must be of type String");
  ExpectError(Call(Sfn("SendTaskHeartbeat"), R"({"taskToken":{"a":1}})"), 400,
              "ValidationException",
              "1 validation error detected: Value at 'taskToken' failed to satisfy constraint: "
              "Member must be of type String");
  ExpectError(Call(Sfn("ListActivities"), R"({"maxResults":"2"})"), 400, "ValidationException",
              "1 validation error detected: Value at 'maxResults' failed to satisfy constraint: "
              "Member must be of type Integer");
  ExpectError(Call(Sfn("ListActivities"), R"({"maxResults":-1})"), 400, "ValidationException",
              "1 validation error detected: Value '-1' at 'maxResults' failed to satisfy "
              "constraint: Member must have value greater than or equal to 0");
}

TEST_F(GatewayTest, UnknownTargetsPathsAndMethods) {
  StartGateway();
  ExpectError(Call("AWSStepFunctions.StartExecution", "{}"), 400, "UnknownOperationException", "");
  ExpectError(Call("TokenWheel.CreateActivity", "{}"), 400, "UnknownOperationException", "");
  ExpectError(Call("", "{}"), 400, "UnknownOperationException", "");
  auto c = Connect();
  auto r = c->Get("/nowhere");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 404);
}

// ---- Long polls ----

TEST_F(GatewayTest, AnEmptyPollAnswersEmptyAfterItsWait) {
  StartGateway();
  const std::string arn = CreateActivity("idle");
  const auto t0 = std::chrono::steady_clock::now();
  HttpResponse r = Call(Sfn("GetActivityTask"), json{{"activityArn", arn}}.dump());
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "{}");
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(900));
}

TEST_F(GatewayTest, AWaitingPollGetsATaskIssuedLater) {
  options_.max_poll_seconds = 30;
  StartGateway();
  const std::string arn = CreateActivity("later");
  // Once the poll waits in the engine, a task issued goes to it.
  auto poller = StartPoll(arn, 1);
  const std::string token = CallOk(Tw("IssueTask"), {{"activityArn", arn}})["taskToken"];
  auto r = poller->Read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(json::parse(r->body)["taskToken"], token);
}

TEST_F(GatewayTest, APollWhoseClientHangsUpIsWithdrawnAndGetsNoTask) {
  options_.max_poll_seconds = 30;
  StartGateway();
  const std::string arn = CreateActivity("hangup");
  StartPoll(arn, 1);       // and hangs up at once
  WaitForWaitingPolls(0);  // withdrawn
  // The task is not lost to the dead poller: the next poll takes it at once.
  const std::string token = CallOk(Tw("IssueTask"), {{"activityArn", arn}})["taskToken"];
  EXPECT_EQ(CallOk(Sfn("GetActivityTask"), {{"activityArn", arn}})["taskToken"], token);
}

TEST_F(GatewayTest, ATaskWhoseAnswerCannotBeWrittenGoesBackToItsQueue) {
  // Set by the test thread before the poll is sent, taken by the gateway thread in the hook.
  std::atomic<HttpClient*> victim{nullptr};
  options_.before_task_write = [&victim]() {
    if (HttpClient* c = victim.load()) {
      c->Reset();             // the worker's connection dies
      victim.store(nullptr);  // after: the test thread then owns the client again
    }
  };
  StartGateway();
  const std::string arn = CreateActivity("lost");
  const std::string token = CallOk(Tw("IssueTask"), {{"activityArn", arn}})["taskToken"];
  {
    auto poller = Connect();
    victim.store(poller.get());
    ASSERT_TRUE(poller->SendRaw(
        HttpClient::PostRequest(Sfn("GetActivityTask"), json{{"activityArn", arn}}.dump())));
    const int64_t deadline = HttpClient::NowMs() + 10'000;
    while (victim.load() != nullptr && HttpClient::NowMs() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_EQ(victim.load(), nullptr) << "the hook did not run";
  }
  // Back at the head of its queue: the next worker gets it.
  json task = CallOk(Sfn("GetActivityTask"), {{"activityArn", arn}});
  EXPECT_EQ(task["taskToken"], token);
  EXPECT_EQ(CallOk(Tw("DescribeTask"), {{"taskToken", token}})["state"], "STARTED");
}

// ---- The issuer's operations ----

TEST_F(GatewayTest, IssueDescribeCancelAndIdempotency) {
  StartGateway();
  json issued = CallOk(
      Tw("IssueTask"),
      {{"input", "{}"}, {"timeoutSeconds", 60}, {"idempotencyKey", "k1"}, {"correlation", "c"}});
  EXPECT_EQ(issued["existing"], false);
  json again = CallOk(Tw("IssueTask"), {{"idempotencyKey", "k1"}});
  EXPECT_EQ(again["existing"], true);
  EXPECT_EQ(again["taskToken"], issued["taskToken"]);
  json d = CallOk(Tw("DescribeTask"), {{"taskToken", issued["taskToken"]}});
  EXPECT_EQ(d["state"], "STARTED");
  EXPECT_EQ(d["kind"], "callback");
  EXPECT_EQ(d["timeoutSeconds"], 60);
  EXPECT_EQ(d["correlation"], "c");
  EXPECT_EQ(CallOk(Tw("CancelTask"), {{"taskToken", issued["taskToken"]}}), json::object());
  EXPECT_EQ(CallOk(Tw("CancelTask"), {{"taskToken", issued["taskToken"]}}),
            (json{{"duplicate", true}}));
  // tokenwheel's operations say why a completion was refused.
  HttpResponse r = Call(Sfn("SendTaskSuccess"),
                        json{{"taskToken", issued["taskToken"]}, {"output", "1"}}.dump());
  ExpectError(r, 400, "TaskTimedOut", kTaskGoneMessage);
  ExpectError(Call(Tw("IssueTask"), R"({"heartbeatSeconds":10,"timeoutSeconds":5})"), 400,
              "ValidationException",
              "1 validation error detected: HeartbeatSeconds (10) must be less than "
              "TimeoutSeconds (5)");
}

TEST_F(GatewayTest, IssueTasksAnswersEachItem) {
  StartGateway();
  json r = CallOk(Tw("IssueTasks"),
                  {{"tasks", json::array({json{{"input", "1"}}, json{{"input", "{bad"}}, 7})}});
  ASSERT_EQ(r["results"].size(), 3u);
  EXPECT_TRUE(r["results"][0].contains("taskToken"));
  EXPECT_EQ(r["results"][1]["error"]["code"], "InvalidOutput");
  EXPECT_EQ(r["results"][2]["error"]["code"], "SerializationException");
  EXPECT_EQ(r["results"][2]["error"]["message"], kScalarWhereStructureMessage);
  ExpectError(Call(Tw("IssueTasks"), "{}"), 400, "ValidationException",
              "1 validation error detected: Value at 'tasks' failed to satisfy constraint: "
              "Member must not be null");
}

TEST_F(GatewayTest, OutcomesAreReadFromTheCursorWaitedForAndAcked) {
  options_.max_poll_seconds = 30;
  StartGateway();
  const std::string a = IssueCallback();
  CallOk(Sfn("SendTaskSuccess"), {{"taskToken", a}, {"output", "\"one\""}});
  // A new consumer starts after the last event: it waits, and gets the next one.
  auto waiter = Connect();
  ASSERT_TRUE(waiter->SendRaw(HttpClient::PostRequest(
      Tw("GetOutcomes"), json{{"consumer", "wf"}, {"waitSeconds", 20}}.dump())));
  const int64_t deadline = HttpClient::NowMs() + 10'000;
  while (CallOk(Tw("Stats"), json::object())["gateway"]["waitingPolls"] != 1 &&
         HttpClient::NowMs() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const std::string b = IssueCallback();
  CallOk(Sfn("SendTaskFailure"), {{"taskToken", b}, {"error", "E"}});
  auto r = waiter->Read();
  ASSERT_TRUE(r.has_value());
  json got = json::parse(r->body);
  ASSERT_EQ(got["events"].size(), 1u) << r->body;
  EXPECT_EQ(got["events"][0]["sequence"], 2);
  EXPECT_EQ(got["events"][0]["state"], "FAILED");
  EXPECT_EQ(got["events"][0]["taskToken"], b);
  EXPECT_EQ(got["ackedSequence"], 1);
  EXPECT_EQ(got["nextSequence"], 3);
  // From a sequence; then ack; then the cursor resumes after the ack.
  json all = CallOk(Tw("GetOutcomes"), {{"consumer", "wf"}, {"fromSequence", 1}});
  EXPECT_EQ(all["events"].size(), 2u);
  EXPECT_EQ(CallOk(Tw("AckOutcomes"), {{"consumer", "wf"}, {"sequence", 2}}), json::object());
  json after = CallOk(Tw("GetOutcomes"), {{"consumer", "wf"}});
  EXPECT_EQ(after["events"].size(), 0u);
  EXPECT_EQ(after["nextSequence"], 3);
  ExpectError(Call(Tw("AckOutcomes"), R"({"consumer":"wf","sequence":9})"), 400,
              "ValidationException", "cannot acknowledge event 9: the last durable event is 2");
  EXPECT_EQ(CallOk(Tw("DeleteConsumer"), {{"consumer", "wf"}}), json::object());
}

// ---- Health and metrics ----

TEST_F(GatewayTest, HealthAndMetrics) {
  StartGateway();
  auto c = Connect();
  auto health = c->Get("/healthz");
  ASSERT_TRUE(health.has_value());
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(json::parse(health->body)["status"], "ok");
  IssueCallback();
  Call(Sfn("SendTaskHeartbeat"), R"({"taskToken":"forged"})");
  auto metrics = c->Get("/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_EQ(metrics->status, 200);
  for (const std::string& needle : std::vector<std::string>{
           "tokenwheel_live_tasks 1", "tokenwheel_engine_commit_seconds_bucket{le=",
           "tokenwheel_gateway_requests_total{operation=\"IssueTask\",code=\"\"} 1",
           "tokenwheel_gateway_requests_total{operation=\"SendTaskHeartbeat\",code="
           "\"InvalidToken\"} "
           "1",
           "tokenwheel_gateway_request_seconds_count{operation=\"IssueTask\"} 1",
           "tokenwheel_timeouts_total{clock=\"heartbeat\"} 0", "tokenwheel_storage_ok 1",
           "tokenwheel_gateway_connections ", "tokenwheel_engine_queue_depth ",
           "tokenwheel_engine_queue_capacity " + std::to_string(EngineOptions().command_queue_max),
           "tokenwheel_engine_queue_refusals_total 0",
           // A MemoryStore measures nothing underneath: the store's series are there, at zero.
           "tokenwheel_wal_sync_seconds_count 0",
           "tokenwheel_rocksdb_write_stalls_total{condition=\"stopped\"} 0",
           "tokenwheel_rocksdb_compaction_written_bytes_total 0"}) {
    EXPECT_NE(metrics->body.find(needle), std::string::npos) << needle << "\n" << metrics->body;
  }
}

// Each consumer's lag: the events after its last acknowledgement.
TEST_F(GatewayTest, MetricsNameEachConsumersEventsNotAcked) {
  StartGateway();
  const auto Lag = [&] {
    auto m = Connect()->Get("/metrics");
    EXPECT_TRUE(m.has_value());
    const std::string needle = "tokenwheel_consumer_events_not_acked{consumer=\"wf\"} ";
    const size_t at = m ? m->body.find(needle) : std::string::npos;
    if (at == std::string::npos) return std::string("absent");
    return m->body.substr(at + needle.size(), m->body.find('\n', at) - at - needle.size());
  };
  EXPECT_EQ(Lag(), "absent");
  CallOk(Sfn("SendTaskSuccess"), {{"taskToken", IssueCallback()}, {"output", "1"}});
  CallOk(Tw("GetOutcomes"), {{"consumer", "wf"}, {"fromSequence", 1}});  // made at seq 1
  EXPECT_EQ(Lag(), "0");
  CallOk(Sfn("SendTaskSuccess"), {{"taskToken", IssueCallback()}, {"output", "2"}});
  CallOk(Sfn("SendTaskSuccess"), {{"taskToken", IssueCallback()}, {"output", "3"}});
  EXPECT_EQ(Lag(), "2");
  CallOk(Tw("AckOutcomes"), {{"consumer", "wf"}, {"sequence", 2}});
  EXPECT_EQ(Lag(), "1");
}

TEST_F(GatewayTest, HealthSaysWhenTheStorageFailedAndWhenItWorksAgain) {
  StartGateway();
  IssueCallback();
  // Armed on the engine thread, like the write it fails: the next one, the issue's.
  std::promise<void> armed;
  engine_->Sync([&](Result<Empty>) {
    store_->FailNextWrite();
    armed.set_value();
  });
  armed.get_future().wait();
  HttpResponse r = Call(Tw("IssueTask"), "{}");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.header("x-amzn-errortype"), "ServiceUnavailable");
  auto c = Connect();
  auto health = c->Get("/healthz");
  ASSERT_TRUE(health.has_value());
  EXPECT_EQ(health->status, 503);
  EXPECT_EQ(json::parse(health->body)["status"], "unavailable");
  auto metrics = c->Get("/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_NE(metrics->body.find("tokenwheel_storage_ok 0"), std::string::npos);
  // The engine's clock reaches the reopen; the store opens again and health says so.
  clock_.Advance(kStorageRetryMs);
  const int64_t deadline = HttpClient::NowMs() + 30'000;
  while (HttpClient::NowMs() < deadline) {
    auto h = Connect()->Get("/healthz");
    if (h && h->status == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  auto again = Connect()->Get("/healthz");
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->status, 200);
  EXPECT_EQ(json::parse(again->body)["storage"]["recoveries"], 1);
  EXPECT_EQ(Call(Tw("IssueTask"), "{}").status, 200);
}

// ---- Bounds ----

TEST_F(GatewayTest, ABodyOverOneMebibyteIs413AndLongHeadersAre431) {
  StartGateway();
  auto c = Connect();
  const std::string body = "{\"name\":\"" + std::string(limits::kRequestBytesMax, 'x') + "\"}";
  ASSERT_TRUE(c->SendRaw("POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: " + Sfn("CreateActivity") +
                         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n"));
  auto r = c->Read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 413);
  EXPECT_TRUE(c->WaitClosed());

  auto d = Connect();
  ASSERT_TRUE(d->SendRaw("POST / HTTP/1.1\r\nHost: x\r\nX-Junk: " +
                         std::string(limits::kAwsHeaderBytesMax, 'j') + "\r\n\r\n"));
  auto r2 = d->Read();
  ASSERT_TRUE(r2.has_value());
  EXPECT_EQ(r2->status, 431);
}

TEST_F(GatewayTest, SlowAndIdleClientsAreDisconnected) {
  options_.request_timeout_ms = 300;
  options_.idle_timeout_ms = 300;
  StartGateway();
  auto slow = Connect();
  ASSERT_TRUE(slow->SendRaw("POST / HTTP/1.1\r\nHost: x\r\n"));  // and never the rest
  auto idle = Connect();                                         // never sends a byte
  EXPECT_TRUE(slow->WaitClosed(10'000));
  EXPECT_TRUE(idle->WaitClosed(10'000));
  // Keep-alive works while within the idle timeout.
  auto c = Connect();
  ASSERT_TRUE(c->Post(Sfn("ListActivities"), "{}").has_value());
  ASSERT_TRUE(c->Post(Sfn("ListActivities"), "{}").has_value());
}

TEST_F(GatewayTest, PastTheConnectionCapANewConnectionIsRefusedClearly) {
  options_.connections_max = 3;
  StartGateway();
  std::vector<std::unique_ptr<HttpClient>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(Connect());
    ASSERT_TRUE(held.back()->Post(Sfn("ListActivities"), "{}").has_value());
  }
  auto extra = Connect();
  auto r = extra->Read();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->header("x-amzn-errortype"), "ThrottlingException");
  EXPECT_TRUE(extra->WaitClosed());
  held.pop_back();  // room again
  const int64_t deadline = HttpClient::NowMs() + 10'000;
  bool served = false;
  while (!served && HttpClient::NowMs() < deadline) {
    auto again = Connect();
    auto a = again->Post(Sfn("ListActivities"), "{}");
    served = a.has_value() && a->status == 200;
    if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(served);
}

TEST_F(GatewayTest, PastTheCallsInFlightBoundCallsAreThrottled) {
  options_.calls_max = 2;
  StartGateway();
  // Hold the engine thread so that calls stay in flight.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> entered;
  engine_->Sync([&](Result<Empty>) {
    entered.set_value();
    released.wait();
  });
  entered.get_future().wait();
  std::vector<std::unique_ptr<HttpClient>> clients;
  for (int i = 0; i < 2; ++i) {
    clients.push_back(Connect());
    ASSERT_TRUE(clients.back()->SendRaw(HttpClient::PostRequest(Tw("IssueTask"), "{}")));
  }
  // /healthz answers without the engine: wait until both calls are in flight.
  const int64_t deadline = HttpClient::NowMs() + 10'000;
  while (HttpClient::NowMs() < deadline) {
    auto h = Connect()->Get("/healthz");
    if (h && json::parse(h->body)["gateway"]["callsInFlight"] == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  HttpResponse third = Call(Tw("IssueTask"), "{}");
  ExpectError(third, 400, "ThrottlingException", "Rate exceeded: too many calls in flight");
  release.set_value();
  for (auto& c : clients) {
    auto r = c->Read();
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 200);
  }
}

TEST_F(GatewayTest, AClientThatNeverReadsItsAnswersStopsBeingRead) {
  StartGateway();
  // A task whose description is ~256 KiB: the sockets' buffers (a few MiB on loopback) hold a
  // few dozen answers.
  const std::string token =
      CallOk(Tw("IssueTask"), {{"input", "\"" + std::string(250'000, 'x') + "\""}})["taskToken"];
  const uint64_t commands_before = CallOk(Tw("Stats"), json::object())["commands"];
  constexpr int kRequests = 400;
  auto greedy = Connect();
  std::string pipeline;
  for (int i = 0; i < kRequests; ++i) {
    pipeline += HttpClient::PostRequest(Tw("DescribeTask"), json{{"taskToken", token}}.dump());
  }
  ASSERT_TRUE(greedy->SendRaw(pipeline));
  // It is served until its unread answers fill the buffers, then not read: the engine sees
  // some of its describes, far from all, however long we wait (a settle time, not a timeout).
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const uint64_t seen = CallOk(Tw("Stats"), json::object())["commands"].get<uint64_t>() -
                        commands_before - 1;  // minus this Stats
  EXPECT_GE(seen, 1u);
  EXPECT_LT(seen, kRequests / 2) << "describes answered for a client that reads nothing";
  // Others are served meanwhile; and once it reads, all are answered.
  EXPECT_EQ(Call(Sfn("ListActivities"), "{}").status, 200);
  for (int i = 0; i < kRequests; ++i) {
    auto r = greedy->Read();
    ASSERT_TRUE(r.has_value()) << i;
    ASSERT_EQ(r->status, 200) << i;
  }
}

TEST_F(GatewayTest, AnAnswerNotReadWithinTheIdleTimeoutClosesTheConnection) {
  options_.idle_timeout_ms = 300;
  StartGateway();
  const std::string token =
      CallOk(Tw("IssueTask"), {{"input", "\"" + std::string(250'000, 'x') + "\""}})["taskToken"];
  auto stuck = Connect();
  std::string pipeline;
  for (int i = 0; i < 100; ++i) {
    pipeline += HttpClient::PostRequest(Tw("DescribeTask"), json{{"taskToken", token}}.dump());
  }
  ASSERT_TRUE(stuck->SendRaw(pipeline));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // > the idle timeout, unread
  EXPECT_TRUE(stuck->WaitClosed(30'000));
  EXPECT_EQ(Call(Sfn("ListActivities"), "{}").status, 200);
}

TEST_F(GatewayTest, BodiesBeingReadAreBoundedForAllConnectionsTogether) {
  options_.request_timeout_ms = 30'000;
  StartGateway();
  // Each connection announces a body of almost 1 MiB and sends little of it: the gateway
  // takes kAwsBodyBytesInFlightMax of them and refuses the rest with a 503 at once.
  const size_t announced = limits::kRequestBytesMax - 1;
  const size_t fit = limits::kAwsBodyBytesInFlightMax / announced;
  std::vector<std::unique_ptr<HttpClient>> slow;
  size_t refused = 0;
  for (size_t i = 0; i < fit + 8; ++i) {
    slow.push_back(Connect());
    ASSERT_TRUE(slow.back()->SendRaw(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: " + Sfn("CreateActivity") +
        "\r\nContent-Length: " + std::to_string(announced) + "\r\n\r\n{\"name\":\""));
  }
  // The refusals come at once; the others wait for the rest of their bodies.
  std::vector<pollfd> fds;
  for (auto& c : slow) fds.push_back(pollfd{c->fd(), POLLIN, 0});
  const int64_t deadline = HttpClient::NowMs() + 3000;
  while (HttpClient::NowMs() < deadline) {
    if (::poll(fds.data(), fds.size(), 100) <= 0) continue;
    for (size_t i = 0; i < fds.size(); ++i) {
      if ((fds[i].revents & POLLIN) == 0) continue;
      fds[i].events = 0;
      auto r = slow[i]->Read(1000);
      ASSERT_TRUE(r.has_value());
      EXPECT_EQ(r->status, 503);
      EXPECT_EQ(r->header("x-amzn-errortype"), "ThrottlingException");
      ++refused;
    }
  }
  EXPECT_GE(refused, 8u);
  EXPECT_LE(refused, 8u + 1);
  EXPECT_EQ(Call(Sfn("ListActivities"), "{}").status, 200) << "small requests still pass";
}

class GatewayPollersTest : public GatewayTest {
 protected:
  void SetUp() override {
    pollers_max_ = 2;
    GatewayTest::SetUp();
  }
};

TEST_F(GatewayPollersTest, PastThePollersOfAnActivityAPollIsRefused) {
  options_.max_poll_seconds = 30;
  StartGateway();
  const std::string arn = CreateActivity("crowded");
  auto first = StartPoll(arn, 1);
  auto second = StartPoll(arn, 2);
  ExpectError(Call(Sfn("GetActivityTask"), json{{"activityArn", arn}}.dump()), 400,
              "ActivityWorkerLimitExceeded", ActivityWorkerLimitExceededError(2).message);
}

}  // namespace
}  // namespace tw::rpc::aws
