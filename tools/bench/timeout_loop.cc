#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "tools/bench/system.h"

namespace tw::bench {

void PolledTimeoutLoop::Start() {
  thread_ = std::thread([this] { Run(); });
}

void PolledTimeoutLoop::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

bool PolledTimeoutLoop::Collect(int64_t count, int64_t until_steady_ms,
                                std::vector<TimeoutSeen>* seen, std::string* error) {
  while (SteadyMs() < until_steady_ms) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_.empty()) {
        *error = error_;
        return false;
      }
      for (const TimeoutSeen& s : pending_) {
        if (seen->size() < kLatenessSamplesMax) seen->push_back(s);
      }
      pending_.clear();
      if (ended_ >= count) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

void PolledTimeoutLoop::Run() {
  std::vector<int64_t> deadlines;
  while (!stop_) {
    deadlines.clear();
    std::string error;
    const bool ok = EndDue(&deadlines, &error);
    const int64_t now = WallMs();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!ok) {
        error_ = std::move(error);
        return;
      }
      for (int64_t deadline : deadlines) {
        if (pending_.size() < kLatenessSamplesMax) pending_.push_back({deadline, now, true, ""});
      }
      ended_ += static_cast<int64_t>(deadlines.size());
    }
    if (deadlines.empty())
      std::this_thread::sleep_for(std::chrono::milliseconds(kTimeoutLoopIdleMs));
  }
}

}  // namespace tw::bench
