// tw-test-labels: threads
//
// Hostile or broken input over the wire: garbage bytes, oversize messages, wrong types, unknown
// methods, invalid tokens, connection churn. The server answers (typed or with an exception) or
// drops that one connection -- and keeps serving everyone else.
#include <arpa/inet.h>
#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/limits.h"
#include "rpc/client.h"
#include "rpc/tokenwheel.capnp.h"
#include "tests/rpc/test_support.h"

namespace tw::rpc {
namespace {

using testing::ServerProcess;
using testing::TempDir;

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ServerProcess>(dir_.path() + "/data", dir_.path() + "/server.log");
    ASSERT_TRUE(server_->Start());
    bystander_ = Connect();
    ASSERT_NE(bystander_, nullptr);
  }
  void TearDown() override {
    bystander_.reset();
    if (server_->Running()) {
      EXPECT_EQ(server_->Terminate(), 0) << server_->Log();
    }
  }
  std::unique_ptr<Client> Connect() { return testing::ConnectOrFail(server_->address()); }
  // The other client, connected before the abuse, still gets full service.
  void ExpectBystanderServed() {
    auto pong = bystander_->Ping("ok?");
    ASSERT_TRUE(pong.ok()) << pong.error.message;
    auto issued = bystander_->IssueTask(IssueTaskRequest{});
    ASSERT_TRUE(issued.ok()) << issued.error.message;
    EXPECT_TRUE(bystander_->SendTaskSuccess({issued.value.token, "{}"}).ok());
    auto fresh = Connect();
    ASSERT_NE(fresh, nullptr);
    EXPECT_TRUE(fresh->Ping("new").ok());
  }
  uint16_t Port() const {
    const std::string& a = server_->address();
    return static_cast<uint16_t>(std::stoi(a.substr(a.rfind(':') + 1)));
  }
  // A raw TCP socket to the server.
  int RawConnect() const {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(Port());
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    timeval tv{};
    tv.tv_sec = 20;  // bound every read below
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
  }
  // True once the server closed the socket (EOF or reset), reading and discarding until then.
  static bool ServerClosed(int fd) {
    char buf[4096];
    while (true) {
      const ssize_t n = read(fd, buf, sizeof(buf));
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
    }
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<Client> bystander_;
};

TEST_F(BadInputTest, GarbageBytesDropOnlyThatConnection) {
  std::mt19937 rng(42);
  for (int round = 0; round < 3; ++round) {
    const int fd = RawConnect();
    std::string junk(64 * 1024, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    // The write may fail part-way once the server hangs up; that is the point.
    (void)!write(fd, junk.data(), junk.size());
    EXPECT_TRUE(ServerClosed(fd));
    close(fd);
  }
  // A frame header announcing an absurd segment count, then silence.
  const int fd = RawConnect();
  const uint32_t header[2] = {0x7fffffff, 0x7fffffff};
  ASSERT_EQ(write(fd, header, sizeof(header)), static_cast<ssize_t>(sizeof(header)));
  EXPECT_TRUE(ServerClosed(fd));
  close(fd);
  ExpectBystanderServed();
}

TEST_F(BadInputTest, HalfAMessageThenHangUp) {
  const int fd = RawConnect();
  const uint32_t header[2] = {0, 1000};  // one segment of 1000 words, never sent
  ASSERT_EQ(write(fd, header, sizeof(header)), static_cast<ssize_t>(sizeof(header)));
  close(fd);
  ExpectBystanderServed();
}

TEST_F(BadInputTest, OversizeMessageIsRefused) {
  auto abuser = Connect();
  IssueTaskRequest req;
  req.input = "\"" + std::string(2 * limits::kRequestBytesMax, 'x') + "\"";
  auto r = abuser->IssueTask(req);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(IsTransportError(r.error)) << ErrorCodeName(r.error.code);
  ExpectBystanderServed();
}

TEST_F(BadInputTest, PayloadOverTheApiLimitIsATypedError) {
  auto c = Connect();
  IssueTaskRequest req;
  req.input = "\"" + std::string(limits::kPayloadBytesMax, 'x') + "\"";  // 2 bytes over
  EXPECT_EQ(c->IssueTask(req).error.code, ErrorCode::kValidation);
  EXPECT_TRUE(c->Ping("same connection").ok());
}

// A regression: nlohmann/json takes a NUL after a complete value for the end of its input, and the
// native API (Cap'n Proto Text carries NULs) accepted and stored "{}\0garbage". Every byte is
// validated now: refused, and nothing is written.
TEST_F(BadInputTest, NulInAnOutputIsInvalidOutputAndNothingIsStored) {
  auto c = Connect();
  auto issued = c->IssueTask(IssueTaskRequest{});  // a callback task: STARTED at once
  ASSERT_TRUE(issued.ok()) << issued.error.message;
  const std::string& token = issued.value.token;
  const uint64_t events = c->Stats().value.engine.last_event_seq;
  for (const std::string& output :
       {std::string("{}\0garbage", 10), std::string("1\0", 2), std::string("\"a\0b\"", 5)}) {
    const auto r = c->SendTaskSuccess({token, output});
    EXPECT_EQ(r.error.code, ErrorCode::kInvalidOutput) << ErrorCodeName(r.error.code);
    EXPECT_EQ(r.error.message.rfind("Invalid Output: 'Invalid JSON at byte ", 0), 0u)
        << r.error.message;
  }
  auto d = c->DescribeTask(token);
  ASSERT_TRUE(d.ok()) << d.error.message;
  EXPECT_EQ(d.value.state, TaskState::kStarted);
  EXPECT_EQ(d.value.output, "");
  EXPECT_EQ(c->Stats().value.engine.last_event_seq, events);  // no outcome event either
  // The task is untouched: it still takes a good output.
  EXPECT_TRUE(c->SendTaskSuccess({token, "{}"}).ok());
  EXPECT_EQ(c->DescribeTask(token).value.output, "{}");
}

TEST_F(BadInputTest, NulInAnInputIsRefusedAndNothingIsStored) {
  auto c = Connect();
  const uint64_t live = c->Stats().value.engine.live_tasks;
  IssueTaskRequest req;
  req.input = std::string("{}\0garbage", 10);
  req.idempotency_key = "nul-input";
  const auto refused = c->IssueTask(req);
  EXPECT_EQ(refused.error.code, ErrorCode::kInvalidOutput) << ErrorCodeName(refused.error.code);
  EXPECT_EQ(refused.error.message, "Invalid Input: 'Invalid JSON at byte 2'");
  EXPECT_EQ(c->Stats().value.engine.live_tasks, live);
  // Nor was the idempotency key taken: with a good input, the same key issues a new task.
  req.input = "{}";
  auto issued = c->IssueTask(req);
  ASSERT_TRUE(issued.ok()) << issued.error.message;
  EXPECT_FALSE(issued.value.existing);
  EXPECT_EQ(c->DescribeTask(issued.value.token).value.input, "{}");
}

TEST_F(BadInputTest, WrongTypesAndUnknownMethods) {
  // A raw capnp connection on the bystander's event loop (one loop per thread).
  auto& ws = bystander_->wait_scope();
  kj::Own<kj::AsyncIoStream> conn =
      bystander_->io_provider()
          .getNetwork()
          .parseAddress(server_->address())
          .then([](kj::Own<kj::NetworkAddress> a) { return a->connect(); })
          .wait(ws);
  capnp::TwoPartyClient raw(*conn);
  capnp::Capability::Client cap = raw.bootstrap();
  const uint64_t iface = capnp::typeId<proto::TokenWheel>();

  // issueTask (@6) whose `request` is Text instead of a struct.
  {
    auto req = cap.typelessRequest(iface, 6, nullptr);
    auto params = req.initAsAnyStruct(0, 1);
    params.getPointerSection()[0].setAs<capnp::Text>("I am not a struct");
    EXPECT_ANY_THROW(req.send().wait(ws));
  }
  // createActivity (@2) whose `name` is a struct instead of Text.
  {
    auto req = cap.typelessRequest(iface, 2, nullptr);
    auto params = req.initAsAnyStruct(0, 1);
    params.getPointerSection()[0].initAsAnyStruct(2, 2);
    EXPECT_ANY_THROW(req.send().wait(ws));
  }
  // A method this server does not have, and an interface it does not implement.
  {
    auto req = cap.typelessRequest(iface, 999, nullptr);
    req.initAsAnyStruct(0, 0);
    EXPECT_ANY_THROW(req.send().wait(ws));
    auto other = cap.typelessRequest(0x1234567890abcdefull, 0, nullptr);
    other.initAsAnyStruct(0, 0);
    EXPECT_ANY_THROW(other.send().wait(ws));
  }
  // Empty params where a struct is expected: every field reads as its default (null / 0), and
  // the answer is a typed error, not a crash.
  {
    auto req = cap.castAs<proto::TokenWheel>().sendTaskSuccessRequest();
    auto response = req.send().wait(ws);
    ASSERT_EQ(response.getResult().which(), proto::CompletionResult::ERROR);
    EXPECT_EQ(response.getResult().getError().getCode(), proto::ErrorCode::VALIDATION);
  }
  // The same connection still works after all of that.
  auto ping = cap.castAs<proto::TokenWheel>().pingRequest();
  ping.setPayload(capnp::Data::Reader(reinterpret_cast<const kj::byte*>("x"), 1));
  EXPECT_EQ(ping.send().wait(ws).getPayload().size(), 1u);
  ExpectBystanderServed();
}

TEST_F(BadInputTest, InvalidTokensAreTypedErrors) {
  auto c = Connect();
  const std::vector<std::string> tokens = {
      "",
      "A",
      std::string(limits::kTaskTokenCharsMax + 1, 'A'),
      std::string(40, '\xff'),
      std::string("AQEA\0AAAA", 9),
      "../../etc/passwd",
      std::string(46, '='),
  };
  for (const std::string& t : tokens) {
    for (auto code : {c->SendTaskSuccess({t, "{}"}).error.code, c->SendTaskHeartbeat(t).error.code,
                      c->DescribeTask(t).error.code, c->CancelTask(t).error.code}) {
      EXPECT_TRUE(code == ErrorCode::kInvalidToken || code == ErrorCode::kValidation)
          << ErrorCodeName(code) << " for a token of " << t.size() << " bytes";
    }
  }
  // Names with bytes that are not UTF-8 or are control characters.
  EXPECT_EQ(c->CreateActivity(std::string("bad\x01name")).error.code, ErrorCode::kInvalidName);
  EXPECT_NE(c->CreateActivity(std::string(limits::kActivityNameCharsMax + 1, 'n')).error.code,
            ErrorCode::kOk);
  EXPECT_TRUE(c->Ping("still fine").ok());
}

TEST_F(BadInputTest, ConnectionChurn) {
  for (int i = 0; i < 100; ++i) {
    const int fd = RawConnect();
    close(fd);
  }
  for (int i = 0; i < 20; ++i) {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
  }
  ExpectBystanderServed();
  // Every closed connection was cleaned up (the bystander and the check's own remain).
  EXPECT_TRUE(testing::WaitUntil(
      [&]() {
        auto s = bystander_->Stats();
        return s.ok() && s.value.connections == 1;
      },
      20'000));
}

}  // namespace
}  // namespace tw::rpc
