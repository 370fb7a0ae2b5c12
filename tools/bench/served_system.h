// What every measured system holds (tokenwheel_system.cc, postgres_system.cc, redis_system.cc):
// its options, a temp dir of its own (removed at Stop unless --keep) and the server process it
// started there (terminated at Stop); and, for the peers, a kill -9 and restart on the same dir.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <system_error>

#include "tools/bench/child_process.h"
#include "tools/bench/system.h"

namespace tw::bench {

inline constexpr int64_t kServerStopTimeoutMs = 10'000;  // SIGTERM, then SIGKILL

// Process: ChildProcess (the peers) or crashtest::ServerProcess (tokenwheeld); each has
// Terminate(timeout_ms) and Kill9().
template <typename Process>
class ServedSystem : public System {
 public:
  explicit ServedSystem(const SystemOptions& o) : o_(o) {}

  void Stop() override {
    if (server_) server_->Terminate(kServerStopTimeoutMs);
    server_.reset();
    if (!dir_.empty() && !o_.keep) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
    dir_.clear();
  }

 protected:
  // dir_ = a new temp dir named after `what`; false (with *error) if it cannot be made.
  bool MakeDir(const std::string& what, std::string* error) {
    dir_ = MakeTempDir(o_.work_dir, what);
    if (dir_.empty()) *error = "cannot make a temp dir in " + o_.work_dir;
    return !dir_.empty();
  }

  const SystemOptions o_;
  std::string dir_;
  std::unique_ptr<Process> server_;
};

// A peer (PostgreSQL, Redis): a ChildProcess on a free loopback port, which StartServer starts
// (again after a kill) on dir_ and waits for.
class PeerSystem : public ServedSystem<ChildProcess> {
 public:
  using ServedSystem::ServedSystem;

  bool KillAndRestart(int64_t* ready_ms, std::string* error) override {
    const int64_t t0 = SteadyMs();
    server_->Kill9();
    if (!StartServer(error)) return false;
    *ready_ms = SteadyMs() - t0;
    return true;
  }

 protected:
  virtual bool StartServer(std::string* error) = 0;

  int port_ = 0;
};

}  // namespace tw::bench
