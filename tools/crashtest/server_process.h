// One tokenwheeld child of the crash test: started on a data dir with both front ends on free
// loopback ports, killed with SIGKILL or by a power cut (the power-cut build's SIGUSR1), and
// started again on the same data dir. The destructor kills what is still running.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tw::crashtest {

int64_t WallMs();    // system clock, ms since the epoch: the server's clock for deadlines
int64_t SteadyMs();  // for durations
// The p-quantile (0..1) of `v` by rank; 0 when empty.
int64_t Percentile(std::vector<int64_t> v, double p);

class ServerProcess {
 public:
  ServerProcess(std::string binary, std::string data_dir, std::string log_path,
                std::vector<std::string> extra_args);
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Starts the server and waits up to timeout_ms for its "started, listening on" line. False
  // with *error set if it exits or does not get there.
  bool Start(int64_t timeout_ms, std::string* error);
  // SIGKILL and reap.
  void Kill9();
  // The power-cut build's SIGUSR1 (unsynced writes dropped, then SIGKILL), and reap. Falls back
  // to SIGKILL after timeout_ms.
  void CutPower(int64_t timeout_ms);
  // SIGTERM; the exit status as waitpid reports it, or -1 if it did not exit in timeout_ms
  // (then it is killed).
  int Terminate(int64_t timeout_ms);
  bool Running();
  // Arguments added to every later Start (after the constructor's).
  void SetExtraArgs(std::vector<std::string> args) { start_args_ = std::move(args); }

  pid_t pid() const { return pid_; }
  const std::string& rpc_address() const { return rpc_address_; }
  const std::string& aws_address() const { return aws_address_; }
  // From the start line: the engine's own recovery time.
  int64_t recovery_ms() const { return recovery_ms_; }
  // The whole log, every start of it.
  std::string Log() const;
  // The log since the last Start (for error reports).
  std::string LogTail(size_t max_bytes) const;

 private:
  bool WaitExit(int64_t timeout_ms);
  bool ParseStartLine(const std::string& log);

  std::string binary_;
  std::string data_dir_;
  std::string log_path_;
  std::vector<std::string> extra_args_;
  std::vector<std::string> start_args_;
  pid_t pid_ = -1;
  size_t log_offset_ = 0;
  std::string rpc_address_;
  std::string aws_address_;
  int64_t recovery_ms_ = 0;
};

}  // namespace tw::crashtest
