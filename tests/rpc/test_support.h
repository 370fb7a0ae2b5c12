// Helpers for the tests/rpc integration tests: a temp dir, a tokenwheeld child process (RAII:
// killed on any exit path), running the CLI, and bounded waits. Header-only: every *_test.cc
// here is its own binary.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "rpc/client.h"
#include "tests/temp_dir.h"

extern char** environ;

namespace tw::rpc::testing {

#ifndef TW_TOKENWHEELD_PATH
#error "TW_TOKENWHEELD_PATH must be defined (tools/CMakeLists.txt wires it for rpc_* tests)"
#endif
#ifndef TW_TOKENWHEEL_CLI_PATH
#error "TW_TOKENWHEEL_CLI_PATH must be defined (tools/CMakeLists.txt wires it for rpc_* tests)"
#endif

inline constexpr const char* kDaemonPath = TW_TOKENWHEELD_PATH;
inline constexpr const char* kCliPath = TW_TOKENWHEEL_CLI_PATH;

// Sanitizer builds start and run several times slower; every wait below is bounded by these.
inline constexpr int64_t kStartTimeoutMs = 60'000;
inline constexpr int64_t kStopTimeoutMs = 60'000;

inline int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Polls `done` every few ms until it is true or timeout_ms passed. Returns its last answer.
inline bool WaitUntil(const std::function<bool()>& done, int64_t timeout_ms) {
  const int64_t deadline = NowMs() + timeout_ms;
  while (true) {
    if (done()) return true;
    if (NowMs() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

using ::tw::TempDir;

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One tokenwheeld child on 127.0.0.1 with a free port. The destructor kills it (SIGKILL) if it
// is still running, so a failing test never leaks a server.
class ServerProcess {
 public:
  ServerProcess(std::string data_dir, std::string log_path, std::vector<std::string> extra = {})
      : data_dir_(std::move(data_dir)), log_path_(std::move(log_path)), extra_(std::move(extra)) {}
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Starts and waits for the "listening on HOST:PORT" log line. False (with a failure) if it
  // does not come.
  [[nodiscard]] bool Start() {
    std::vector<std::string> args = {kDaemonPath, "--data-dir", data_dir_, "--rpc-listen",
                                     "127.0.0.1:0"};
    // The AWS gateway on a free port too, unless the test chose.
    if (std::find(extra_.begin(), extra_.end(), "--aws-listen") == extra_.end()) {
      args.insert(args.end(), {"--aws-listen", "127.0.0.1:0"});
    }
    args.insert(args.end(), extra_.begin(), extra_.end());
    const size_t log_offset = ReadFile(log_path_).size();  // restarts append to the same log
    pid_ = Spawn(args, log_path_);
    if (pid_ <= 0) return false;
    const bool up = WaitUntil(
        [&]() {
          const std::string log = ReadFile(log_path_).substr(log_offset);
          const size_t at = log.find("listening on ");
          if (at == std::string::npos) return !Running();
          const size_t end = log.find_first_of(" \n", at + 13);
          if (end == std::string::npos) return false;
          address_ = log.substr(at + 13, end - at - 13);
          const size_t aws = log.find("aws_listen=", at);
          if (aws != std::string::npos) {
            const size_t aws_end = log.find_first_of(" \n", aws + 11);
            aws_address_ = log.substr(aws + 11, aws_end - aws - 11);
          }
          return true;
        },
        kStartTimeoutMs);
    if (!up || address_.empty() || !Running()) {
      ADD_FAILURE() << "tokenwheeld did not start; log:\n" << ReadFile(log_path_);
      return false;
    }
    return true;
  }

  bool Running() {
    if (pid_ <= 0) return false;
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      exit_status_ = status;
      return false;
    }
    return true;
  }

  // SIGTERM and wait: the exit code (-1 if it did not exit in time or died of a signal).
  int Terminate() { return SignalAndWait(SIGTERM); }
  // kill -9 and reap.
  void Kill9() { SignalAndWait(SIGKILL); }

  const std::string& address() const { return address_; }
  // The AWS gateway's HOST:PORT ("off" when the test turned it off).
  const std::string& aws_address() const { return aws_address_; }
  pid_t pid() const { return pid_; }
  std::string Log() const { return ReadFile(log_path_); }

  // Starts args[0] with stdout appended to out_path and stderr to err_path (or out_path).
  static pid_t Spawn(const std::vector<std::string>& args, const std::string& out_path,
                     const std::string& err_path = "") {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    if (err_path.empty()) {
      posix_spawn_file_actions_adddup2(&actions, 1, 2);
    } else {
      posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                       0644);
    }
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      ADD_FAILURE() << "posix_spawn " << argv[0] << " failed: " << rc;
      return -1;
    }
    return pid;
  }

 private:
  int SignalAndWait(int sig) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    int status = 0;
    const bool exited = WaitUntil(
        [&]() {
          const pid_t r = waitpid(pid_, &status, WNOHANG);
          return r == pid_;
        },
        kStopTimeoutMs);
    if (!exited) {
      ADD_FAILURE() << "tokenwheeld did not exit after signal " << sig;
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
    pid_ = -1;
    exit_status_ = status;
    if (exited && WIFEXITED(status)) return WEXITSTATUS(status);
    return -1;
  }

  std::string data_dir_;
  std::string log_path_;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
  int exit_status_ = 0;
  std::string address_;
  std::string aws_address_;
};

struct CliResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs `tokenwheel args...` to completion (bounded) and captures its output.
inline CliResult RunCli(const std::vector<std::string>& args, const std::string& out_path,
                        const char* binary = kCliPath) {
  std::vector<std::string> full = {binary};
  full.insert(full.end(), args.begin(), args.end());
  const std::string err_path = out_path + ".err";
  std::filesystem::remove(out_path);
  std::filesystem::remove(err_path);
  CliResult r;
  const pid_t pid = ServerProcess::Spawn(full, out_path, err_path);
  if (pid <= 0) return r;
  int status = 0;
  const bool exited =
      WaitUntil([&]() { return waitpid(pid, &status, WNOHANG) == pid; }, kStopTimeoutMs);
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    ADD_FAILURE() << "CLI did not exit: " << out_path;
  }
  r.exit_code = exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadFile(out_path);
  r.err = ReadFile(err_path);
  return r;
}

// A Cap'n Proto client of the server at `address`; null, with a test failure, when it does not
// connect.
inline std::unique_ptr<Client> ConnectOrFail(const std::string& address) {
  auto c = Client::Connect(address);
  EXPECT_TRUE(c.ok()) << c.error.message;
  return c.ok() ? std::move(c.value) : nullptr;
}

// A test with a tokenwheeld child: its data and log in a fresh TempDir, both front ends on free
// loopback ports. TearDown stops it with SIGTERM and expects a clean exit.
class DaemonTest : public ::testing::Test {
 protected:
  // Starts it; the first call fixes its extra arguments, a later one restarts it on the same
  // data directory (after a kill, say).
  void StartServer(std::vector<std::string> extra = {}) {
    if (server_ == nullptr) {
      server_ = std::make_unique<ServerProcess>(dir_.path() + "/data", dir_.path() + "/server.log",
                                                std::move(extra));
    }
    ASSERT_TRUE(server_->Start());
  }
  // A Cap'n Proto client of it (null, with a failure, when it does not connect).
  std::unique_ptr<Client> Connect() { return ConnectOrFail(server_->address()); }
  void TearDown() override {
    if (server_ != nullptr && server_->Running()) {
      EXPECT_EQ(server_->Terminate(), 0) << server_->Log();
    }
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
};

}  // namespace tw::rpc::testing
