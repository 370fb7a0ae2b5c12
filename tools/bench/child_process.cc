#include "tools/bench/child_process.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "tools/bench/system.h"

namespace tw::bench {

RunAs UnprivilegedUser() {
  if (::geteuid() != 0) return {};
  const passwd* pw = ::getpwnam("nobody");
  if (pw == nullptr) return {65534, 65534};
  return {pw->pw_uid, pw->pw_gid};
}

ChildProcess::ChildProcess(std::vector<std::string> argv, std::string log_path, RunAs as)
    : argv_(std::move(argv)), log_path_(std::move(log_path)), as_(as) {}

ChildProcess::~ChildProcess() { Kill9(); }

bool ChildProcess::Start(std::string* error) {
  std::vector<char*> argv;
  for (const std::string& a : argv_) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    // Only async-signal-safe calls until exec.
    ::setpgid(0, 0);
    const int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0 || ::dup2(fd, 1) < 0 || ::dup2(fd, 2) < 0) ::_exit(127);
    if (as_.uid != 0) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(as_.gid) != 0 || ::setuid(as_.uid) != 0) {
        ::_exit(126);
      }
    }
    // After the uid change, which clears it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  if (pid_ < 0) {
    pid_ = -1;
    *error = "fork: " + std::string(std::strerror(errno));
    return false;
  }
  ::setpgid(pid_, pid_);  // also here, so a Kill9 right after Start finds the group
  return true;
}

bool ChildProcess::Running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

void ChildProcess::Kill9() {
  if (pid_ <= 0) return;
  ::kill(-pid_, SIGKILL);
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

int ChildProcess::Wait(int64_t timeout_ms) {
  const int64_t deadline = SteadyMs() + timeout_ms;
  while (pid_ > 0) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (SteadyMs() > deadline) {
      Kill9();
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return -1;
}

int ChildProcess::Terminate(int64_t timeout_ms) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  // After timeout_ms, Wait SIGKILLs the whole group while its leader is still unreaped (so the
  // group id cannot have been reused by then).
  return Wait(timeout_ms);
}

std::string ChildProcess::LogTail(size_t max_bytes) const {
  std::ifstream in(log_path_, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  return s.size() <= max_bytes ? s : s.substr(s.size() - max_bytes);
}

}  // namespace tw::bench
