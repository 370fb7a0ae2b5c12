// 10,000 concurrent GetActivityTask long polls on one tokenwheeld: every one waits in
// the engine, tasks issued meanwhile go to waiting pollers, one each, and the server still
// answers other calls. Each activity takes at most 1,000 pollers (AWS's limit), so the polls
// are spread over ten. The memory per waiting poll is measured by tw_bench_gateway
// (docs/BENCHMARKS.md), not asserted here.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/rpc/aws_test_http.h"
#include "tests/rpc/test_support.h"

namespace tw::rpc::testing {
namespace {

using nlohmann::json;

constexpr size_t kPolls = 10'000;
constexpr size_t kActivities = 10;
constexpr size_t kTasks = 100;

uint16_t PortOf(const std::string& address) {
  return static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
}

json Call(uint16_t port, const std::string& target, const json& body) {
  HttpClient c(port);
  auto r = c.Post(target, body.dump());
  EXPECT_TRUE(r.has_value());
  if (!r.has_value() || r->status != 200) return json();
  return json::parse(r->body, nullptr, false);
}

TEST(GatewayScaleTest, TenThousandPollsWaitAndEachTaskGoesToOne) {
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < kPolls + 512) {
    lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, kPolls + 1024);
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  if (lim.rlim_cur < kPolls + 512) GTEST_SKIP() << "open-files limit " << lim.rlim_cur;
  TempDir dir;
  ServerProcess server(dir.path() + "/data", dir.path() + "/log", {"--max-poll-seconds", "60"});
  ASSERT_TRUE(server.Start());
  const uint16_t port = PortOf(server.aws_address());
  std::vector<std::string> arns;
  for (size_t a = 0; a < kActivities; ++a) {
    arns.push_back(Call(port, "AWSStepFunctions.CreateActivity",
                        {{"name", "scale-" + std::to_string(a)}})["activityArn"]);
  }
  std::vector<std::unique_ptr<HttpClient>> pollers;
  for (size_t i = 0; i < kPolls; ++i) {
    pollers.push_back(std::make_unique<HttpClient>(port));
    ASSERT_TRUE(pollers.back()->connected()) << i;
    ASSERT_TRUE(pollers.back()->SendRaw(HttpClient::PostRequest(
        "AWSStepFunctions.GetActivityTask",
        json{{"activityArn", arns[i % kActivities]}, {"workerName", "w" + std::to_string(i)}}
            .dump())));
  }
  ASSERT_TRUE(WaitUntil(
      [&]() { return Call(port, "TokenWheel.Stats", json::object())["waitingPolls"] == kPolls; },
      60'000))
      << Call(port, "TokenWheel.Stats", json::object()).dump();

  std::set<std::string> issued;
  for (size_t t = 0; t < kTasks; ++t) {
    issued.insert(Call(port, "TokenWheel.IssueTask",
                       {{"activityArn", arns[t % kActivities]}, {"input", "{}"}})["taskToken"]);
  }
  // Exactly kTasks pollers are answered, each with a different task.
  std::vector<pollfd> fds;
  for (auto& p : pollers) fds.push_back(pollfd{p->fd(), POLLIN, 0});
  std::set<std::string> received;
  const int64_t deadline = NowMs() + 60'000;
  while (received.size() < kTasks && NowMs() < deadline) {
    if (::poll(fds.data(), fds.size(), 1000) <= 0) continue;
    for (size_t i = 0; i < fds.size(); ++i) {
      if ((fds[i].revents & POLLIN) == 0) continue;
      fds[i].events = 0;  // answered: one answer per poller
      auto r = pollers[i]->Read(10'000);
      ASSERT_TRUE(r.has_value());
      EXPECT_TRUE(received.insert(json::parse(r->body)["taskToken"]).second) << "twice";
    }
  }
  EXPECT_EQ(received, issued);
  EXPECT_EQ(Call(port, "TokenWheel.Stats", json::object())["waitingPolls"], kPolls - kTasks);
  pollers.clear();  // hang up: every remaining poll is withdrawn
  EXPECT_TRUE(WaitUntil(
      [&]() { return Call(port, "TokenWheel.Stats", json::object())["waitingPolls"] == 0; },
      60'000));
  EXPECT_EQ(server.Terminate(), 0) << server.Log();
}

uint64_t RssKb(pid_t pid) {
  const std::string status = ReadFile("/proc/" + std::to_string(pid) + "/status");
  const size_t at = status.find("VmRSS:");
  return at == std::string::npos ? 0 : std::stoull(status.substr(at + 6));
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;  // RSS is then mostly the sanitizer's
#else
constexpr bool kSanitized = false;
#endif

// The describe-flood abuse of server_bounds_test.cc, on the gateway: many connections ask for a
// ~256 KiB task description and never read the answers. Each connection holds at most one answer,
// describes in flight are bounded (kAwsPayloadCallsInFlightMax: the rest are throttled at once),
// and no connection starts reading a request while kAwsReplyBytesGlobalHigh of answers wait: the
// server's RSS stays within a budget, and a well-behaved client is served meanwhile.
TEST(GatewayScaleTest, ClientsThatNeverReadHoldABoundedAmountOfMemory) {
  constexpr size_t kGreedy = 1000;
  constexpr uint64_t kBudgetKb = 384 << 10;
  TempDir dir;
  ServerProcess server(dir.path() + "/data", dir.path() + "/log");
  ASSERT_TRUE(server.Start());
  const uint16_t port = PortOf(server.aws_address());
  const std::string token = Call(port, "TokenWheel.IssueTask",
                                 {{"input", "\"" + std::string(250'000, 'x') + "\""}})["taskToken"];
  const uint64_t before_kb = RssKb(server.pid());
  std::vector<std::unique_ptr<HttpClient>> greedy;
  const std::string describe =
      HttpClient::PostRequest("TokenWheel.DescribeTask", json{{"taskToken", token}}.dump());
  uint64_t peak_kb = before_kb;
  for (size_t i = 0; i < kGreedy; ++i) {
    greedy.push_back(std::make_unique<HttpClient>(port));
    ASSERT_TRUE(greedy.back()->SendRaw(describe));
    if (i % 100 == 0) peak_kb = std::max(peak_kb, RssKb(server.pid()));
  }
  for (int i = 0; i < 20; ++i) {  // while the server works through them
    peak_kb = std::max(peak_kb, RssKb(server.pid()));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // A bystander is served.
  HttpClient bystander(port);
  auto r = bystander.Post("AWSStepFunctions.ListActivities", "{}");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
  std::printf("gateway RSS: before %llu KiB, peak %llu KiB (+%llu KiB) with %zu greedy clients\n",
              static_cast<unsigned long long>(before_kb), static_cast<unsigned long long>(peak_kb),
              static_cast<unsigned long long>(peak_kb - before_kb), kGreedy);
  if (!kSanitized) {
    EXPECT_LT(peak_kb - before_kb, kBudgetKb);
  }
  greedy.clear();
  EXPECT_EQ(server.Terminate(), 0) << server.Log();
}

}  // namespace
}  // namespace tw::rpc::testing
