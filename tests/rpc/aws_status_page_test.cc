// The gateway's status page (rpc/aws/status_page.h): GET / and GET /index.html answer one
// self-contained HTML page, GET /status.json the figures it shows, equal to what the test
// created through the gateway. Over a real Engine on a MemoryStore and a ManualClock, through
// raw HTTP (tests/rpc/aws_test_http.h). The page's script, run by a real browser, is checked by
// tests/clients/status_page_chromium.py.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "engine/clock.h"
#include "engine/engine.h"
#include "rpc/aws/gateway.h"
#include "rpc/aws/sigv4.h"
#include "storage/memory_store.h"
#include "tests/rpc/aws_test_http.h"
#include "tests/rpc/gateway_fixture.h"

namespace tw::rpc::aws {
namespace {

using nlohmann::json;
using testing::HttpClient;
using testing::HttpResponse;

constexpr char kArnPrefix[] = "arn:aws:states:us-east-1:000000000000:activity:";
constexpr int64_t kStartMs = testing::GatewayFixture::kStartMs;

class StatusPageTest : public testing::GatewayFixture {
 protected:
  void SetUp() override {
    OpenEngine(EngineOptions(), std::make_unique<MemoryStore>());
    options_.clock = &clock_;
  }

  HttpResponse Get(const std::string& path) {
    HttpClient c(gateway_->port());
    EXPECT_TRUE(c.connected());
    auto r = c.Get(path);
    EXPECT_TRUE(r.has_value()) << path;
    return r.value_or(HttpResponse{});
  }
  json CallOk(const std::string& target, const json& body) {
    HttpClient c(gateway_->port());
    auto r = c.Post(target, body.dump());
    EXPECT_TRUE(r.has_value()) << target;
    EXPECT_EQ(r.value_or(HttpResponse{}).status, 200) << target << ": " << r->body;
    return json::parse(r.value_or(HttpResponse{}).body, nullptr, false);
  }
  json Status() {
    HttpResponse r = Get("/status.json");
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("content-type"), "application/json");
    json j = json::parse(r.body, nullptr, false);
    EXPECT_TRUE(j.is_object()) << r.body;
    return j;
  }

  std::string CreateActivity(const std::string& name) {
    return CallOk("AWSStepFunctions.CreateActivity", {{"name", name}})["activityArn"];
  }
  std::string Issue(json body) {
    return CallOk("TokenWheel.IssueTask", body)["taskToken"].get<std::string>();
  }
};

// Every src= and href= attribute value in `html` (quoted or not, any case). A scan by hand:
// GCC 12's -Wmaybe-uninitialized fires inside <regex> under ASan.
std::vector<std::string> References(const std::string& html) {
  std::string lower = html;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const auto is_space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  std::vector<std::string> out;
  for (const std::string attr : {"src", "href"}) {
    for (size_t at = lower.find(attr); at != std::string::npos; at = lower.find(attr, at + 1)) {
      if (at > 0 && (std::isalnum(static_cast<unsigned char>(lower[at - 1])) ||
                     lower[at - 1] == '-' || lower[at - 1] == '_')) {
        continue;  // part of a longer name
      }
      size_t i = at + attr.size();
      while (i < lower.size() && is_space(lower[i])) ++i;
      if (i >= lower.size() || lower[i] != '=') continue;
      ++i;
      while (i < lower.size() && is_space(lower[i])) ++i;
      const char quote = i < lower.size() && (lower[i] == '"' || lower[i] == '\'') ? lower[i++] : 0;
      size_t end = i;
      while (end < html.size() &&
             (quote != 0 ? html[end] != quote : !is_space(html[end]) && html[end] != '>')) {
        ++end;
      }
      out.push_back(html.substr(i, end - i));
    }
  }
  return out;
}

TEST(StatusPageReferencesTest, FindsEveryKindOfAttribute) {
  EXPECT_EQ(References(R"(<img SRC="http://a/x.png"><a href='https://b/'>x</a><link href=c.css>)"
                       R"(<p data-src="no">hrefs = 1</p>)"),
            (std::vector<std::string>{"http://a/x.png", "https://b/", "c.css"}));
}

TEST_F(StatusPageTest, ThePageIsOneSelfContainedHtmlDocument) {
  StartGateway();
  const HttpResponse page = Get("/");
  EXPECT_EQ(page.status, 200);
  EXPECT_EQ(page.header("content-type"), "text/html; charset=utf-8");
  EXPECT_EQ(page.body.rfind("<!DOCTYPE html>", 0), 0u) << page.body.substr(0, 100);
  EXPECT_NE(page.body.find("</html>"), std::string::npos);
  // Its script polls the JSON endpoint, at the bounds of engine/limits.h.
  EXPECT_NE(page.body.find("fetch('status.json'"), std::string::npos);
  EXPECT_NE(page.body.find("const POLL_MS = " + std::to_string(limits::kStatusPagePollMs) + ";"),
            std::string::npos);
  EXPECT_NE(page.body.find("const HISTORY_SAMPLES = " +
                           std::to_string(limits::kStatusPageHistorySamples) + ";"),
            std::string::npos);
  EXPECT_EQ(page.body.find('@'), std::string::npos) << "a placeholder left in";
  // Nothing from elsewhere: no URL at all, and every reference is a data: URL.
  EXPECT_EQ(page.body.find("http://"), std::string::npos);
  EXPECT_EQ(page.body.find("https://"), std::string::npos);
  EXPECT_EQ(page.body.find("<link rel=\"stylesheet\""), std::string::npos);
  const std::vector<std::string> refs = References(page.body);
  EXPECT_EQ(refs, std::vector<std::string>{"data:,"});  // the empty favicon
  EXPECT_NE(page.body.find("default-src 'none'"), std::string::npos);

  const HttpResponse index = Get("/index.html");
  EXPECT_EQ(index.status, 200);
  EXPECT_EQ(index.header("content-type"), "text/html; charset=utf-8");
  EXPECT_EQ(index.body, page.body);
}

TEST_F(StatusPageTest, StatusJsonCountsWhatWasCreated) {
  StartGateway();
  json s = Status();
  EXPECT_EQ(s["nowMs"], kStartMs);
  EXPECT_EQ(s["liveTasks"], 0);
  EXPECT_EQ(s["activities"], json::array());
  EXPECT_EQ(s["storage"]["ok"], true);

  const std::string alpha = CreateActivity("alpha");
  const std::string beta = CreateActivity("beta");
  EXPECT_EQ(alpha, std::string(kArnPrefix) + "alpha");
  // An overall timeout is armed when a task starts: no timer for a queued one.
  for (int i = 0; i < 3; ++i)
    Issue({{"activityArn", alpha}, {"input", "{}"}, {"timeoutSeconds", 60}});
  Issue({{"activityArn", beta}, {"input", "{}"}, {"timeoutSeconds", 60}});
  Issue({{"input", "{}"}, {"timeoutSeconds", 60}});  // a callback task: STARTED at once
  // A worker takes one of alpha's: STARTED.
  json task = CallOk("AWSStepFunctions.GetActivityTask", {{"activityArn", alpha}});
  ASSERT_TRUE(task.contains("taskToken")) << task;
  clock_.Advance(1500);

  s = Status();
  EXPECT_EQ(s["nowMs"], kStartMs + 1500);
  EXPECT_EQ(s["liveTasks"], 5);
  EXPECT_EQ(s["queuedTasks"], 3);
  EXPECT_EQ(s["startedTasks"], 2);
  EXPECT_EQ(s["activities"], json::parse(R"([
      {"arn": "arn:aws:states:us-east-1:000000000000:activity:alpha", "name": "alpha", "queued": 2,
       "started": 1},
      {"arn": "arn:aws:states:us-east-1:000000000000:activity:beta", "name": "beta", "queued": 1,
       "started": 0}
    ])"));
  EXPECT_EQ(s["waitingPolls"], 0);
  EXPECT_EQ(s["pendingTimers"], 2);              // the taken task's and the callback task's
  EXPECT_GT(s["commands"].get<uint64_t>(), 7u);  // 2 creates, 5 issues, 1 take, 2 stats
  EXPECT_EQ(s["timeouts"], json::parse(R"({"heartbeat": 0, "overall": 0, "scheduleToStart": 0,
                                           "total": 0})"));
  EXPECT_EQ(s["gateway"]["connections"], 1);  // this request's
}

TEST_F(StatusPageTest, StatusJsonCountsTimeoutsByClock) {
  StartGateway();
  const std::string token = Issue({{"input", "{}"}, {"timeoutSeconds", 1}});
  clock_.Advance(2000);
  // Describing the task meets its passed deadline: it times out first (no waiting for a timer).
  EXPECT_EQ(CallOk("TokenWheel.DescribeTask", {{"taskToken", token}})["state"], "TIMED_OUT");
  const json s = Status();
  EXPECT_EQ(s["timeouts"]["overall"], 1);
  EXPECT_EQ(s["timeouts"]["total"], 1);
  EXPECT_EQ(s["liveTasks"], 0);
  EXPECT_EQ(s["startedTasks"], 0);
}

// Like /metrics: answered without a signature when credentials are set, while an unsigned
// operation is still refused.
TEST_F(StatusPageTest, ThePageNeedsNoSignatureLikeMetrics) {
  options_.credentials = std::make_shared<Credentials>(
      std::vector<std::pair<std::string, std::string>>{{"AKIDSTATUSPAGE", "not-a-real-secret"}});
  StartGateway();
  EXPECT_EQ(Get("/metrics").status, 200);
  EXPECT_EQ(Get("/").status, 200);
  EXPECT_EQ(Get("/status.json").status, 200);
  HttpClient c(gateway_->port());
  auto unsigned_call = c.Post("AWSStepFunctions.ListActivities", "{}");
  ASSERT_TRUE(unsigned_call.has_value());
  EXPECT_EQ(unsigned_call->status, 400);
  EXPECT_EQ(unsigned_call->header("x-amzn-errortype"), "MissingAuthenticationTokenException");
}

TEST_F(StatusPageTest, OtherPathsAndMethodsKeepTheirAnswer) {
  StartGateway();
  for (const char* path : {"/status", "/index.htm", "/status.json/", "/?x=1", "/favicon.ico"}) {
    const HttpResponse r = Get(path);
    EXPECT_EQ(r.status, 404) << path;
    EXPECT_EQ(r.header("x-amzn-errortype"), "UnknownOperationException") << path;
  }
  HttpClient c(gateway_->port());
  auto post = c.Post("", "{}");  // POST / without a target: still the JSON protocol's refusal
  ASSERT_TRUE(post.has_value());
  EXPECT_EQ(post->status, 400);
  EXPECT_EQ(post->header("x-amzn-errortype"), "UnknownOperationException");
  ASSERT_TRUE(
      c.SendRaw("POST /status.json HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"));
  auto posted = c.Read();
  ASSERT_TRUE(posted.has_value());
  EXPECT_EQ(posted->status, 404);
}

}  // namespace
}  // namespace tw::rpc::aws
