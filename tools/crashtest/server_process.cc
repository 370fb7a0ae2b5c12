#include "tools/crashtest/server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace tw::crashtest {

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t Percentile(std::vector<int64_t> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * static_cast<double>(v.size() - 1))];
}

namespace {

std::string ReadFrom(const std::string& path, size_t offset) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (!in || size <= static_cast<std::streamoff>(offset)) return "";
  in.seekg(static_cast<std::streamoff>(offset));
  std::string out(static_cast<size_t>(size) - offset, '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  return out;
}

size_t FileSize(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  return in ? static_cast<size_t>(in.tellg()) : 0;
}

// The value after `key` up to the next space or newline, or "".
std::string Field(const std::string& text, const std::string& key) {
  const size_t at = text.find(key);
  if (at == std::string::npos) return "";
  const size_t begin = at + key.size();
  const size_t end = text.find_first_of(" \n", begin);
  return end == std::string::npos ? "" : text.substr(begin, end - begin);
}

}  // namespace

ServerProcess::ServerProcess(std::string binary, std::string data_dir, std::string log_path,
                             std::vector<std::string> extra_args)
    : binary_(std::move(binary)),
      data_dir_(std::move(data_dir)),
      log_path_(std::move(log_path)),
      extra_args_(std::move(extra_args)) {}

ServerProcess::~ServerProcess() { Kill9(); }

bool ServerProcess::Start(int64_t timeout_ms, std::string* error) {
  std::vector<std::string> args = {binary_,        "--data-dir",         data_dir_,
                                   "--rpc-listen", "127.0.0.1:0",        "--aws-listen",
                                   "127.0.0.1:0",  "--max-poll-seconds", "1"};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  args.insert(args.end(), start_args_.begin(), start_args_.end());
  log_offset_ = FileSize(log_path_);  // restarts append to the same log

  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // fork + exec rather than posix_spawn: the child asks to be killed when this process dies
  // (even by SIGKILL, a test runner's timeout), so no server outlives its test. Between fork
  // and exec only async-signal-safe calls.
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
    const int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0 || ::dup2(fd, 1) < 0 || ::dup2(fd, 2) < 0) ::_exit(127);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  if (pid_ < 0) {
    pid_ = -1;
    *error = std::string("cannot start ") + binary_ + ": fork: " + std::strerror(errno);
    return false;
  }
  const int64_t deadline = SteadyMs() + timeout_ms;
  while (SteadyMs() < deadline) {
    if (ParseStartLine(ReadFrom(log_path_, log_offset_))) return true;
    if (!Running()) {
      *error = "tokenwheeld exited during start:\n" + LogTail(4000);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  *error =
      "tokenwheeld did not start within " + std::to_string(timeout_ms) + " ms:\n" + LogTail(4000);
  Kill9();
  return false;
}

bool ServerProcess::ParseStartLine(const std::string& log) {
  const size_t at = log.find("started, listening on ");
  if (at == std::string::npos || log.find('\n', at) == std::string::npos) return false;
  const std::string line = log.substr(at, log.find('\n', at) - at + 1);
  rpc_address_ = Field(line, "listening on ");
  aws_address_ = Field(line, "aws_listen=");
  recovery_ms_ = std::strtoll(Field(line, "recovery_ms=").c_str(), nullptr, 10);
  return !rpc_address_.empty() && !aws_address_.empty();
}

bool ServerProcess::Running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

bool ServerProcess::WaitExit(int64_t timeout_ms) {
  const int64_t deadline = SteadyMs() + timeout_ms;
  while (Running()) {
    if (SteadyMs() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

void ServerProcess::Kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

void ServerProcess::CutPower(int64_t timeout_ms) {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGUSR1);
  if (!WaitExit(timeout_ms)) Kill9();
}

int ServerProcess::Terminate(int64_t timeout_ms) {
  if (pid_ <= 0) return -1;
  const pid_t pid = pid_;
  ::kill(pid, SIGTERM);
  const int64_t deadline = SteadyMs() + timeout_ms;
  while (SteadyMs() < deadline) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      pid_ = -1;
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  Kill9();
  return -1;
}

std::string ServerProcess::Log() const { return ReadFrom(log_path_, 0); }

std::string ServerProcess::LogTail(size_t max_bytes) const {
  const std::string log = ReadFrom(log_path_, log_offset_);
  return log.size() <= max_bytes ? log : log.substr(log.size() - max_bytes);
}

}  // namespace tw::crashtest
