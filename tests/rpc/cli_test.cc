// tw-test-labels: threads
//
// The tokenwheel CLI and tokenwheeld's flags, as a script would use them: JSON on stdout, exit 2
// for typed errors, 1 for connection / usage trouble.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/limits.h"
#include "tests/rpc/test_support.h"

namespace tw::rpc {
namespace {

using nlohmann::json;
using testing::CliResult;
using testing::NowMs;
using testing::RunCli;
using testing::ServerProcess;
using testing::TempDir;
using testing::WaitUntil;

// Points this process's stdin at a file while it lives: a CLI started meanwhile inherits it.
class StdinFrom {
 public:
  explicit StdinFrom(const std::string& path) : saved_(fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 0)) {
    const int fd = open(path.c_str(), O_RDONLY);
    EXPECT_GE(fd, 0) << path;
    if (fd > STDIN_FILENO) {  // else there was no stdin, and the file took its place
      EXPECT_EQ(dup2(fd, STDIN_FILENO), STDIN_FILENO);
      close(fd);
    }
  }
  ~StdinFrom() {
    if (saved_ < 0) {
      close(STDIN_FILENO);  // there was none
      return;
    }
    dup2(saved_, STDIN_FILENO);
    close(saved_);
  }
  StdinFrom(const StdinFrom&) = delete;
  StdinFrom& operator=(const StdinFrom&) = delete;

 private:
  const int saved_;
};

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

class CliTest : public ::testing::Test {
 protected:
  void StartServer(std::vector<std::string> extra = {}) {
    server_ = std::make_unique<ServerProcess>(dir_.path() + "/data", dir_.path() + "/server.log",
                                              std::move(extra));
    ASSERT_TRUE(server_->Start());
  }
  void TearDown() override {
    if (server_ != nullptr && server_->Running()) {
      EXPECT_EQ(server_->Terminate(), 0) << server_->Log();
    }
  }

  // Runs the CLI against the server.
  CliResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {"--server", server_->address()});
    return RunCli(args, dir_.path() + "/cli.out");
  }

  // Runs the CLI, expects `exit_code`, and parses its one-object output.
  json CliJson(std::vector<std::string> args, int exit_code = 0) {
    CliResult r = Cli(args);
    EXPECT_EQ(r.exit_code, exit_code) << r.out << r.err;
    json j = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r.out;
    return j;
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(CliTest, HelpDocumentsEveryFlag) {
  CliResult d = RunCli({"--help"}, dir_.path() + "/help.out", testing::kDaemonPath);
  EXPECT_EQ(d.exit_code, 0);
  for (const char* flag :
       {"--data-dir", "--rpc-listen", "--durability", "--commit", "--tick-ms", "--max-poll-seconds",
        "--config", "--region", "--account", "--retention-seconds", "--rpc-auth-file",
        "--rpc-tls-cert", "--rpc-tls-key", "--rpc-tls-client-ca"}) {
    EXPECT_NE(d.out.find(flag), std::string::npos) << flag << " missing from:\n" << d.out;
  }
  EXPECT_EQ(d.out.find("no authentication yet"), std::string::npos) << d.out;
  CliResult c = RunCli({"--help"}, dir_.path() + "/help.out");
  EXPECT_EQ(c.exit_code, 0);
  for (const char* cmd :
       {"activity", "task", "events", "stats", "--server", "--auth-file", "--tls-ca", "--tls-cert",
        "--tls-key", "TOKENWHEEL_AUTH_FILE", "TOKENWHEEL_TLS_CA"}) {
    EXPECT_NE(c.out.find(cmd), std::string::npos) << cmd;
  }
  CliResult t = RunCli({"task", "--help"}, dir_.path() + "/help.out");
  EXPECT_EQ(t.exit_code, 0);
  for (const char* cmd : {"issue", "poll", "succeed", "fail", "heartbeat", "cancel", "describe"}) {
    EXPECT_NE(t.out.find(cmd), std::string::npos) << cmd;
  }
  for (const char* cmd : {"issue", "succeed", "fail"}) {
    CliResult h = RunCli({"task", cmd, "--help"}, dir_.path() + "/help.out");
    EXPECT_EQ(h.exit_code, 0);
    EXPECT_NE(h.out.find("file://PATH reads a file, - reads stdin"), std::string::npos) << h.out;
  }
}

TEST_F(CliTest, Activities) {
  StartServer();
  json created = CliJson({"activity", "create", "payments"});
  const std::string arn = created["activityArn"];
  EXPECT_EQ(arn, "arn:aws:states:us-east-1:000000000000:activity:payments");
  EXPECT_TRUE(created["creationDate"].is_number());
  EXPECT_EQ(CliJson({"activity", "describe", arn})["name"], "payments");
  json list = CliJson({"activity", "list"});
  ASSERT_EQ(list["activities"].size(), 1u);
  EXPECT_EQ(list["activities"][0]["activityArn"], arn);
  EXPECT_EQ(CliJson({"activity", "delete", arn}), json::object());
  json gone = CliJson({"activity", "describe", arn}, 2);
  EXPECT_EQ(gone["error"], "ActivityDoesNotExist");
  EXPECT_EQ(gone["message"], "Activity Does Not Exist: '" + arn + "'");
  EXPECT_EQ(CliJson({"activity", "create", "no spaces"}, 2)["error"], "InvalidName");
  EXPECT_EQ(CliJson({"activity", "describe", "x"}, 2)["error"], "InvalidArn");
}

TEST_F(CliTest, CallbackTaskLifecycle) {
  StartServer();
  json issued = CliJson({"task", "issue", "--callback", "--input", R"({"order":42})", "--timeout",
                         "600", "--heartbeat", "60", "--key", "order-42", "--correlation", "wf-1"});
  const std::string token = issued["taskToken"];
  ASSERT_FALSE(token.empty());
  json again =
      CliJson({"task", "issue", "--callback", "--input", R"({"order":42})", "--key", "order-42"});
  EXPECT_EQ(again["taskToken"], token);
  EXPECT_EQ(again["existing"], true);

  EXPECT_EQ(CliJson({"task", "heartbeat", token}), json::object());
  json d = CliJson({"task", "describe", token});
  EXPECT_EQ(d["state"], "STARTED");
  EXPECT_EQ(d["kind"], "callback");
  EXPECT_EQ(d["input"], R"({"order":42})");
  EXPECT_EQ(d["correlation"], "wf-1");
  EXPECT_EQ(d["timeoutSeconds"], 600);
  EXPECT_TRUE(d["heartbeatDeadline"].is_number());

  EXPECT_EQ(CliJson({"task", "succeed", token, "--output", R"({"paid":true})"}), json::object());
  EXPECT_EQ(CliJson({"task", "succeed", token, "--output", R"({"paid":true})"})["duplicate"], true);
  json refused = CliJson({"task", "succeed", token, "--output", R"({"paid":false})"}, 2);
  EXPECT_EQ(refused["error"], "TaskTimedOut");
  EXPECT_EQ(refused["message"], "Task Timed Out: 'Provided task does not exist anymore'");
  EXPECT_EQ(refused["reason"], "alreadyCompleted");
  EXPECT_EQ(refused["recordedState"], "SUCCEEDED");
  EXPECT_EQ(refused["recordedOutput"], R"({"paid":true})");
  EXPECT_EQ(CliJson({"task", "fail", token}, 2)["reason"], "alreadyCompleted");
  d = CliJson({"task", "describe", token});
  EXPECT_EQ(d["state"], "SUCCEEDED");
  EXPECT_EQ(d["output"], R"({"paid":true})");
}

TEST_F(CliTest, ActivityTaskPollFailAndCancel) {
  StartServer();
  const std::string arn = CliJson({"activity", "create", "jobs"})["activityArn"];
  const std::string token =
      CliJson({"task", "issue", "--activity", arn, "--input", R"({"job":1})"})["taskToken"];
  EXPECT_EQ(CliJson({"task", "describe", token})["state"], "SCHEDULED");
  json polled = CliJson({"task", "poll", arn, "--worker", "w-1", "--wait", "5"});
  EXPECT_EQ(polled["taskToken"], token);
  EXPECT_EQ(polled["input"], R"({"job":1})");
  EXPECT_EQ(CliJson({"task", "fail", token, "--error", "Oops", "--cause", "disk full"}),
            json::object());
  json d = CliJson({"task", "describe", token});
  EXPECT_EQ(d["state"], "FAILED");
  EXPECT_EQ(d["worker"], "w-1");
  EXPECT_EQ(d["error"], "Oops");
  EXPECT_EQ(d["cause"], "disk full");

  // Nothing queued: an empty answer after the wait.
  const int64_t t0 = NowMs();
  EXPECT_EQ(CliJson({"task", "poll", arn, "--wait", "1"}), json::object());
  EXPECT_GE(NowMs() - t0, 900);

  const std::string doomed = CliJson({"task", "issue", "--activity", arn})["taskToken"];
  EXPECT_EQ(CliJson({"task", "cancel", doomed}), json::object());
  EXPECT_EQ(CliJson({"task", "describe", doomed})["state"], "CANCELLED");
  json late = CliJson({"task", "heartbeat", doomed}, 2);
  EXPECT_EQ(late["error"], "TaskTimedOut");
  EXPECT_EQ(late["reason"], "cancelled");
}

TEST_F(CliTest, TimeoutReason) {
  StartServer();
  const std::string token = CliJson({"task", "issue", "--callback", "--timeout", "1"})["taskToken"];
  ASSERT_TRUE(WaitUntil(
      [&]() {
        return CliJson({"task", "describe", token})["state"] == "TIMED_OUT";
      },
      20'000));
  EXPECT_EQ(CliJson({"task", "describe", token})["timeoutReason"], "overall");
  json late = CliJson({"task", "succeed", token, "--output", "{}"}, 2);
  EXPECT_EQ(late["error"], "TaskTimedOut");
  EXPECT_EQ(late["reason"], "timedOut");
  EXPECT_EQ(late["timeoutKind"], "overall");
}

TEST_F(CliTest, TypedErrorsExitTwo) {
  StartServer();
  json bad = CliJson({"task", "succeed", "bogus", "--output", "{}"}, 2);
  EXPECT_EQ(bad["error"], "InvalidToken");
  EXPECT_EQ(bad["message"], "Invalid Token: 'Invalid token'");
  const std::string token = CliJson({"task", "issue", "--callback"})["taskToken"];
  EXPECT_EQ(CliJson({"task", "succeed", token, "--output", "{nope"}, 2)["error"], "InvalidOutput");
  EXPECT_EQ(
      CliJson({"task", "issue", "--callback", "--timeout", "5", "--heartbeat", "5"}, 2)["error"],
      "ValidationException");
}

TEST_F(CliTest, EventsWatchPrintsAndAcknowledges) {
  StartServer();
  std::vector<std::string> tokens;
  for (int i = 0; i < 3; ++i) {
    tokens.push_back(CliJson({"task", "issue", "--callback"})["taskToken"]);
  }
  CliJson({"task", "succeed", tokens[0], "--output", "1"});
  CliJson({"task", "fail", tokens[1], "--error", "E"});
  CliJson({"task", "cancel", tokens[2]});
  CliResult r = Cli({"events", "watch", "--consumer", "ops", "--from", "1", "--count", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::vector<json> lines;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
  ASSERT_EQ(lines.size(), 3u);
  const char* states[] = {"SUCCEEDED", "FAILED", "CANCELLED"};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(lines[i]["sequence"], i + 1);
    EXPECT_EQ(lines[i]["taskToken"], tokens[i]);
    EXPECT_EQ(lines[i]["state"], states[i]);
  }
  EXPECT_EQ(lines[0]["output"], "1");
  EXPECT_EQ(lines[1]["error"], "E");
  json stats = CliJson({"stats"});
  EXPECT_EQ(stats["consumers"]["ops"], 3);
  EXPECT_EQ(stats["lastEventSequence"], 3);
  EXPECT_EQ(stats["eventsNotAcked"], 0);
  EXPECT_EQ(stats["liveTasks"], 0);
  for (const char* key : {"queuedPerActivity", "pendingTimers", "waitingPolls", "connections"}) {
    EXPECT_TRUE(stats.contains(key)) << key;
  }
  // Three tasks were issued and ended, each a group commit that wrote: timed, end to end
  // through the RPC stats reply.
  const json& commits = stats["commitLatencyUs"];
  EXPECT_GE(commits["count"].get<uint64_t>(), 6u);
  EXPECT_LE(commits["p50"].get<uint64_t>(), commits["p99"].get<uint64_t>());
  EXPECT_LE(commits["p99"].get<uint64_t>(), commits["p999"].get<uint64_t>());
  EXPECT_GE(commits["max"].get<uint64_t>(), 1u);
  EXPECT_GE(stats["submitWakes"].get<uint64_t>(), 1u);
  EXPECT_LE(stats["submitWakes"].get<uint64_t>(), stats["commands"].get<uint64_t>());
}

// Issue 18: a payload larger than one argument may be (128 KiB) could not be sent. As with the
// AWS CLI, file://PATH and - (stdin) name the value.
TEST_F(CliTest, ValuesFromAFileAndFromStdin) {
  StartServer();
  const std::string input = R"({"blob":")" + std::string(200 * 1024, 'i') + R"("})";
  const std::string input_path = dir_.path() + "/input.json";
  WriteFile(input_path, input);
  // A relative path is read from the current directory, which the CLI inherits.
  const std::string relative = std::filesystem::relative(input_path).string();
  const std::string token =
      CliJson({"task", "issue", "--callback", "--input", "file://" + relative})["taskToken"];
  const std::string output = R"({"blob":")" + std::string(200 * 1024, 'o') + R"("})";
  WriteFile(dir_.path() + "/output.json", output);
  {
    StdinFrom stdin_from(dir_.path() + "/output.json");
    EXPECT_EQ(CliJson({"task", "succeed", token, "--output", "-"}), json::object());
  }
  json d = CliJson({"task", "describe", token});
  EXPECT_EQ(d["state"], "SUCCEEDED");
  EXPECT_EQ(d["input"], input);
  EXPECT_EQ(d["output"], output);

  // --error and --cause too, the bytes as they are (newlines kept).
  const std::string failed = CliJson({"task", "issue", "--callback"})["taskToken"];
  WriteFile(dir_.path() + "/error.txt", "Disk.Full");
  WriteFile(dir_.path() + "/cause.txt", "line 1\nline 2\n");
  {
    StdinFrom stdin_from(dir_.path() + "/cause.txt");
    EXPECT_EQ(CliJson({"task", "fail", failed, "--error", "file://" + dir_.path() + "/error.txt",
                       "--cause", "-"}),
              json::object());
  }
  d = CliJson({"task", "describe", failed});
  EXPECT_EQ(d["error"], "Disk.Full");
  EXPECT_EQ(d["cause"], "line 1\nline 2\n");

  // A file can hold what an argument cannot: a NUL, which the server refuses (issue 18).
  WriteFile(dir_.path() + "/nul.json", std::string("{}\0garbage", 10));
  json nul =
      CliJson({"task", "issue", "--callback", "--input", "file://" + dir_.path() + "/nul.json"}, 2);
  EXPECT_EQ(nul["error"], "InvalidOutput");
  EXPECT_EQ(nul["message"], "Invalid Input: 'Invalid JSON at byte 2'");
}

// Unreadable values are usage errors, found before connecting: nothing listens on port 1.
TEST_F(CliTest, UnreadableValuesAreUsageErrors) {
  auto usage = [&](const std::vector<std::string>& args) {
    std::vector<std::string> full = {"--server", "127.0.0.1:1"};
    full.insert(full.end(), args.begin(), args.end());
    CliResult r = RunCli(full, dir_.path() + "/cli.out");
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    json j = json::parse(r.out, nullptr, false);
    EXPECT_EQ(j["error"], "UsageError") << r.out;
    return j["message"].is_string() ? j["message"].get<std::string>() : std::string();
  };
  const std::string missing = dir_.path() + "/no-such.json";
  EXPECT_EQ(usage({"task", "issue", "--callback", "--input", "file://" + missing}),
            "--input: cannot read file://" + missing + ": No such file or directory");
  EXPECT_EQ(usage({"task", "fail", "T", "--error", "file://" + dir_.path()}),
            "--error: cannot read file://" + dir_.path() + ": Is a directory");
  // Past a request's limit, reading stops.
  const std::string big = dir_.path() + "/big.json";
  WriteFile(big, std::string(limits::kRequestBytesMax + 1, ' '));
  EXPECT_EQ(usage({"task", "succeed", "T", "--output", "file://" + big}),
            "--output: cannot read file://" + big + ": more than " +
                std::to_string(limits::kRequestBytesMax) + " bytes, a request's limit");
  {
    StdinFrom stdin_from(big);
    EXPECT_EQ(usage({"task", "succeed", "T", "--output", "-"}),
              "--output: cannot read stdin: more than " + std::to_string(limits::kRequestBytesMax) +
                  " bytes, a request's limit");
  }
  // Stdin can be read once.
  WriteFile(dir_.path() + "/in.txt", "x");
  StdinFrom stdin_from(dir_.path() + "/in.txt");
  EXPECT_EQ(usage({"task", "fail", "T", "--error", "-", "--cause", "-"}),
            "--error and --cause both read stdin (-); only one option may");
}

// Issue 18: CLI11 reads integers in C's base 0 ("010" was 8, "0x10" 16). Decimal only now.
TEST_F(CliTest, IntegersAreDecimal) {
  StartServer();
  const std::string token = CliJson(
      {"task", "issue", "--callback", "--timeout", "010", "--heartbeat", "09"})["taskToken"];
  const json d = CliJson({"task", "describe", token});
  EXPECT_EQ(d["timeoutSeconds"], 10);
  EXPECT_EQ(d["heartbeatSeconds"], 9);  // not even octal
  for (const char* bad : {"0x10", "1e3", "-1", "+5", " 5", "5s", "", "1_000", "4294967296"}) {
    json j = CliJson({"task", "issue", "--callback", "--timeout", bad}, 1);
    EXPECT_EQ(j["error"], "UsageError") << bad;
    const std::string message = j["message"].is_string() ? j["message"].get<std::string>() : "";
    EXPECT_EQ(message.rfind("--timeout: ", 0), 0u) << bad << ": " << message;
  }
  EXPECT_EQ(CliJson({"task", "issue", "--callback", "--timeout", "0x10"}, 1)["message"],
            "--timeout: '0x10' is not a decimal number (digits 0-9 only)");
  EXPECT_EQ(CliJson({"task", "issue", "--callback", "--timeout", "4294967296"}, 1)["message"],
            "--timeout: '4294967296' is out of range (0..4294967295)");
  // Every integer option of the CLI, 64-bit ones included.
  EXPECT_EQ(CliJson({"task", "poll", "arn:x", "--wait", "0x1"}, 1)["error"], "UsageError");
  EXPECT_EQ(
      CliJson({"task", "issue", "--activity", "arn:x", "--schedule-to-start", "1e1"}, 1)["error"],
      "UsageError");
  EXPECT_EQ(CliJson({"activity", "list", "--max-results", "1e2"}, 1)["error"], "UsageError");
  EXPECT_EQ(CliJson({"events", "ack", "--consumer", "c", "18446744073709551616"}, 1)["message"],
            "SEQ: '18446744073709551616' is out of range (0..18446744073709551615)");
  EXPECT_EQ(CliJson({"events", "watch", "--consumer", "c", "--from", "-1"}, 1)["error"],
            "UsageError");
  EXPECT_EQ(CliJson({"events", "watch", "--consumer", "c", "--count", "0x1"}, 1)["error"],
            "UsageError");
}

TEST_F(CliTest, ServerFromEnvironment) {
  StartServer();
  setenv("TOKENWHEEL_SERVER", server_->address().c_str(), 1);
  CliResult r = RunCli({"ping"}, dir_.path() + "/cli.out");
  unsetenv("TOKENWHEEL_SERVER");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(json::parse(r.out)["payload"], "ping");
}

TEST_F(CliTest, ConnectionAndUsageTroubleExitOne) {
  // Nothing listens on port 1 of loopback.
  CliResult down = RunCli({"--server", "127.0.0.1:1", "stats"}, dir_.path() + "/cli.out");
  EXPECT_EQ(down.exit_code, 1) << down.out;
  EXPECT_EQ(json::parse(down.out)["error"], "ServiceUnavailable");
  CliResult usage = RunCli({"task", "issue"}, dir_.path() + "/cli.out");  // neither kind
  EXPECT_EQ(usage.exit_code, 1);
  CliResult unknown = RunCli({"frobnicate"}, dir_.path() + "/cli.out");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_EQ(json::parse(unknown.out)["error"], "UsageError");
}

TEST_F(CliTest, DaemonConfigFileAndBadFlags) {
  const std::string config = dir_.path() + "/tw.json";
  std::ofstream(config) << R"({"max-poll-seconds": 1, "durability": "none"})";
  StartServer({"--config", config});
  EXPECT_NE(server_->Log().find("WARNING: --durability=none"), std::string::npos);
  EXPECT_NE(server_->Log().find("max_poll_seconds=1"), std::string::npos);
  const std::string arn = CliJson({"activity", "create", "cfg"})["activityArn"];
  const int64_t t0 = NowMs();
  EXPECT_EQ(CliJson({"task", "poll", arn}), json::object());  // the server's 1 s maximum
  EXPECT_LT(NowMs() - t0, 15'000);

  const std::string bad = dir_.path() + "/bad.json";
  std::ofstream(bad) << R"({"no-such-key": 1})";
  CliResult r = RunCli({"--config", bad, "--data-dir", dir_.path() + "/other"},
                       dir_.path() + "/d.out", testing::kDaemonPath);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("unknown key"), std::string::npos) << r.err;
  r = RunCli({"--durability", "maybe"}, dir_.path() + "/d.out", testing::kDaemonPath);
  EXPECT_NE(r.exit_code, 0);
  r = RunCli({"--max-poll-seconds", "0", "--data-dir", dir_.path() + "/other"},
             dir_.path() + "/d.out", testing::kDaemonPath);
  EXPECT_EQ(r.exit_code, 1);
}

// Every commit mode serves the same data dir, one after another: the mode is not part of the
// format. The flag, the config key and the default are in the start log line.
TEST_F(CliTest, DaemonCommitModes) {
  StartServer();
  EXPECT_NE(server_->Log().find(" commit=adaptive "), std::string::npos) << server_->Log();
  const std::string arn = CliJson({"activity", "create", "modes"})["activityArn"];
  ASSERT_EQ(server_->Terminate(), 0);
  const std::string config = dir_.path() + "/inline.json";
  std::ofstream(config) << R"({"commit": "inline"})";
  const std::vector<std::vector<std::string>> starts = {{"--config", config},
                                                        {"--commit", "pipelined"}};
  std::vector<std::string> tokens;
  for (const auto& flags : starts) {
    StartServer(flags);
    const std::string mode = flags[0] == "--config" ? "inline" : "pipelined";
    EXPECT_NE(server_->Log().find(" commit=" + mode + " "), std::string::npos) << server_->Log();
    for (const std::string& token : tokens) {  // issued by the previous mode, durable
      EXPECT_EQ(CliJson({"task", "describe", token})["state"], "SUCCEEDED") << mode;
    }
    CliJson({"task", "issue", "--activity", arn, "--input", R"({"mode":")" + mode + R"("})"});
    const json polled = CliJson({"task", "poll", arn, "--wait", "5"});
    ASSERT_TRUE(polled.contains("taskToken")) << mode << ": " << polled.dump();
    const std::string token = polled["taskToken"];
    EXPECT_EQ(CliJson({"task", "succeed", token, "--output", "{}"}), json::object()) << mode;
    tokens.push_back(token);
    ASSERT_EQ(server_->Terminate(), 0);
  }
  CliResult r = RunCli({"--commit", "sometimes", "--data-dir", dir_.path() + "/other"},
                       dir_.path() + "/d.out", testing::kDaemonPath);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/other")) << "a bad flag created data";
}

}  // namespace
}  // namespace tw::rpc
