// tokenwheeld as an operator meets it: who can read its data dir, which addresses it listens
// on, and how it refuses a bad flag. The storage-failure behaviour of a real server:
// disk_full_test.cc.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/rpc/aws_test_http.h"
#include "tests/rpc/test_support.h"

namespace tw::rpc::testing {
namespace {

mode_t ModeOf(const std::filesystem::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

// Runs tokenwheeld with `args` to its exit (bounded); the exit code and its log.
CliResult RunDaemon(const std::vector<std::string>& args, const std::string& log_path) {
  return RunCli(args, log_path, kDaemonPath);
}

// Every file and directory under the data dir is the server's alone.
void ExpectPrivate(const std::string& data_dir) {
  EXPECT_EQ(ModeOf(data_dir), 0700u);
  EXPECT_EQ(ModeOf(data_dir + "/db"), 0700u);
  EXPECT_EQ(ModeOf(data_dir + "/token.key"), 0600u);
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(data_dir + "/db")) {
    if (!e.is_regular_file()) continue;
    ++files;
    EXPECT_EQ(ModeOf(e.path()) & 077, 0u) << e.path() << " is readable by others";
  }
  EXPECT_GT(files, 3u);
}

TEST(DaemonTest, TheDataDirIsPrivate) {
  TempDir tmp;
  const std::string data = tmp.path() + "/data";
  ServerProcess server(data, tmp.path() + "/log");
  ASSERT_TRUE(server.Start());
  ExpectPrivate(data);
  EXPECT_EQ(server.Terminate(), 0);
  ExpectPrivate(data);  // what the clean close wrote too
}

TEST(DaemonTest, AnOlderWorldReadableDataDirIsMadePrivate) {
  TempDir tmp;
  const std::string data = tmp.path() + "/data";
  {
    ServerProcess server(data, tmp.path() + "/log");
    ASSERT_TRUE(server.Start());
    EXPECT_EQ(server.Terminate(), 0);
  }
  // As an older build left it.
  std::filesystem::permissions(data, std::filesystem::perms(0755));
  std::filesystem::permissions(data + "/db", std::filesystem::perms(0755));
  std::filesystem::permissions(data + "/token.key", std::filesystem::perms(0644));
  for (const auto& e : std::filesystem::directory_iterator(data + "/db")) {
    if (e.is_regular_file()) std::filesystem::permissions(e.path(), std::filesystem::perms(0644));
  }
  ServerProcess server(data, tmp.path() + "/log2");
  ASSERT_TRUE(server.Start());
  ExpectPrivate(data);
  EXPECT_NE(server.Log().find("took group and other permissions off"), std::string::npos)
      << server.Log();
}

TEST(DaemonTest, ANonLoopbackAddressIsRefused) {
  TempDir tmp;
  for (const char* address : {"0.0.0.0:0", "10.1.2.3:7411", "[::]:0", "example.com:7411"}) {
    const CliResult r = RunDaemon({"--data-dir", tmp.path() + "/data", "--rpc-listen", address},
                                  tmp.path() + "/out");
    EXPECT_EQ(r.exit_code, 1) << address;
    EXPECT_NE(r.err.find("loopback addresses only"), std::string::npos) << address << ": " << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(tmp.path() + "/data")) << "refused before touching disk";
}

TEST(DaemonTest, LoopbackAddressesAreServed) {
  TempDir tmp;
  for (const char* address : {"127.0.0.2:0", "localhost:0"}) {
    const std::string log = tmp.path() + "/log";
    const pid_t pid = ServerProcess::Spawn({kDaemonPath, "--data-dir", tmp.path() + "/data",
                                            "--rpc-listen", address, "--aws-listen", address},
                                           log);
    ASSERT_GT(pid, 0);
    const bool up = WaitUntil(
        [&]() { return ReadFile(log).find("listening on") != std::string::npos; }, kStartTimeoutMs);
    EXPECT_TRUE(up) << address << ": " << ReadFile(log);
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << address;
    std::filesystem::remove(log);
  }
}

TEST(DaemonTest, ABadCredentialsFileStopsTheStart) {
  TempDir tmp;
  const std::string keys = tmp.path() + "/keys.json";
  std::ofstream(keys) << R"([{"accessKeyId": "AKIDTEST", "secretAccessKey": "not-a-real-secret"}])";
  std::filesystem::permissions(keys, std::filesystem::perms(0644));
  CliResult r = RunDaemon({"--data-dir", tmp.path() + "/data", "--aws-listen", "127.0.0.1:0",
                           "--aws-credentials", keys},
                          tmp.path() + "/out");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--aws-credentials"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(keys), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("not-a-real-secret"), std::string::npos) << "never a secret in a log";
  std::ofstream(keys, std::ios::trunc) << "not json";
  std::filesystem::permissions(keys, std::filesystem::perms(0600));
  r = RunDaemon({"--data-dir", tmp.path() + "/data", "--aws-listen", "127.0.0.1:0",
                 "--aws-credentials", keys},
                tmp.path() + "/out");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(keys), std::string::npos) << r.err;
  // Without credentials the gateway stays on loopback.
  r = RunDaemon({"--data-dir", tmp.path() + "/data", "--aws-listen", "0.0.0.0:0"},
                tmp.path() + "/out");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("checks no signatures"), std::string::npos) << r.err;
}

TEST(DaemonTest, ABadStorageRetryIsRefused) {
  TempDir tmp;
  const CliResult r = RunDaemon({"--data-dir", tmp.path() + "/data", "--storage-retry-ms", "0"},
                                tmp.path() + "/out");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--storage-retry-ms must be"), std::string::npos) << r.err;
}

TEST(DaemonTest, IntegersAreDecimalAndInRange) {
  TempDir tmp;
  for (const char* value : {"0x10", "010x", "-1", "1e3"}) {
    const CliResult r =
        RunDaemon({"--data-dir", tmp.path() + "/data", "--tick-ms", value}, tmp.path() + "/out");
    EXPECT_EQ(r.exit_code, 1) << value;
    EXPECT_NE(r.err.find("--tick-ms"), std::string::npos) << value << ": " << r.err;
  }
  // A config file: a negative or too large integer is refused, not wrapped.
  for (const char* config : {R"({"tick-ms": -1})", R"({"max-poll-seconds": 4294967296})",
                             R"({"storage-retry-ms": 1.5})"}) {
    const std::string path = tmp.path() + "/config.json";
    std::ofstream(path) << config;
    const CliResult r =
        RunDaemon({"--data-dir", tmp.path() + "/data", "--config", path}, tmp.path() + "/out");
    EXPECT_EQ(r.exit_code, 1) << config;
    EXPECT_NE(r.err.find("must be an integer"), std::string::npos) << config << ": " << r.err;
  }
}

// --log-format json --log-file: one JSON object per line, a record per start and stop with its
// facts as fields, and none per request.
TEST(DaemonTest, JsonLogsToAFileOneRecordPerEpisodeNotPerRequest) {
  TempDir tmp;
  const std::string log_file = tmp.path() + "/tokenwheeld.json";
  // Its stderr goes to the same file (both append): the start line is found there, and any
  // line that is not a record would show up.
  ServerProcess server(tmp.path() + "/data", log_file,
                       {"--log-format", "json", "--log-file", log_file});
  ASSERT_TRUE(server.Start());
  auto client = ConnectOrFail(server.address());
  ASSERT_NE(client, nullptr);
  for (int i = 0; i < 50; ++i) {
    IssueTaskRequest req;
    req.input = "{\"i\":" + std::to_string(i) + "}";
    ASSERT_TRUE(client->IssueTask(req).ok());
  }
  client.reset();
  EXPECT_EQ(server.Terminate(), 0);
  std::map<std::string, nlohmann::json> by_event;
  std::istringstream lines(ReadFile(log_file));
  size_t count = 0;
  for (std::string line; std::getline(lines, line); ++count) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object()) << line;
    for (const char* key : {"ts", "level", "component", "event", "msg"}) {
      EXPECT_TRUE(j.contains(key)) << key << " missing: " << line;
    }
    by_event[j.value("event", "")] = j;
  }
  EXPECT_LE(count, 4u) << ReadFile(log_file);  // started, stopped, and start-up warnings
  ASSERT_EQ(by_event.count("started"), 1u) << ReadFile(log_file);
  EXPECT_EQ(by_event["started"]["rpc_listen"], server.address());
  EXPECT_EQ(by_event["started"]["durability"], "sync");
  ASSERT_EQ(by_event.count("stopped"), 1u);
  EXPECT_EQ(by_event["stopped"]["signal"], "SIGTERM");
  EXPECT_EQ(by_event["stopped"]["level"], "info");
}

// A bad log flag, on the command line or in the config file, is refused by one check that names
// it, before anything is created.
TEST(DaemonTest, ABadLogFlagIsRefused) {
  TempDir tmp;
  CliResult r =
      RunDaemon({"--data-dir", tmp.path() + "/data", "--log-format", "xml"}, tmp.path() + "/log");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--log-format must be text or json"), std::string::npos) << r.err;
  const std::string config = tmp.path() + "/config.json";
  std::ofstream(config) << R"({"log-level": "verbose"})";
  r = RunDaemon({"--data-dir", tmp.path() + "/data", "--config", config}, tmp.path() + "/log");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--log-level must be debug, info, warn or error"), std::string::npos)
      << r.err;
  EXPECT_FALSE(std::filesystem::exists(tmp.path() + "/data"));
}

// GET /metrics on the gateway counts the Cap'n Proto front end's calls too: by method and code,
// with their latency, and single calls refused as overloaded.
TEST(DaemonTest, MetricsCountCapnProtoCallsByMethodAndCode) {
  TempDir tmp;
  ServerProcess server(tmp.path() + "/data", tmp.path() + "/log");
  ASSERT_TRUE(server.Start());
  auto client = ConnectOrFail(server.address());
  ASSERT_NE(client, nullptr);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(client->IssueTask({}).ok());
  SendTaskSuccessRequest forged;
  forged.token = std::string(46, 'A');
  forged.output = "{}";
  Result<CompletionReply> refused = client->SendTaskSuccess(forged);
  ASSERT_FALSE(refused.ok());
  const uint16_t port = static_cast<uint16_t>(
      std::stoi(server.aws_address().substr(server.aws_address().rfind(':') + 1)));
  HttpClient http(port);
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics.has_value());
  EXPECT_EQ(metrics->status, 200);
  for (const std::string& needle : std::vector<std::string>{
           "tokenwheel_rpc_requests_total{method=\"issueTask\",code=\"\"} 3",
           std::string("tokenwheel_rpc_requests_total{method=\"sendTaskSuccess\",code=\"") +
               ErrorCodeName(refused.error.code) + "\"} 1",
           "tokenwheel_rpc_request_seconds_count{method=\"issueTask\"} 3",
           "tokenwheel_rpc_overloaded_total 0"}) {
    EXPECT_NE(metrics->body.find(needle), std::string::npos) << needle << "\n" << metrics->body;
  }
}

}  // namespace
}  // namespace tw::rpc::testing
