// A peer server (postgres, redis-server) or a setup command (initdb) as a child of the bench:
// fork + exec, in its own process group, optionally as another user (PostgreSQL refuses to run
// as root), killed when the bench dies (PR_SET_PDEATHSIG), stopped by its PID. tokenwheeld has its
// own launcher (tools/crashtest/server_process.h), which parses tokenwheeld's start line.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tw::bench {

// The user a child runs as: uid/gid 0 means "as this process".
struct RunAs {
  uid_t uid = 0;
  gid_t gid = 0;
};

// When this process is root: the unprivileged `nobody` (PostgreSQL will not run as root);
// otherwise this process's own ids.
RunAs UnprivilegedUser();

class ChildProcess {
 public:
  ChildProcess(std::vector<std::string> argv, std::string log_path, RunAs as);
  ~ChildProcess();  // kills what is still running
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool Start(std::string* error);
  bool Running();
  // SIGKILL to the child's process group (a postmaster and its backends), then reap.
  void Kill9();
  // SIGTERM, then SIGKILL after timeout_ms. The exit status, or -1 if it was killed.
  int Terminate(int64_t timeout_ms);
  // Runs to the end (a setup command): its exit status, or -1 if it ran past timeout_ms.
  int Wait(int64_t timeout_ms);
  pid_t pid() const { return pid_; }
  std::string LogTail(size_t max_bytes) const;

 private:
  std::vector<std::string> argv_;
  std::string log_path_;
  RunAs as_;
  pid_t pid_ = -1;
};

}  // namespace tw::bench
