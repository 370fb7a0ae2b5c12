// The Cap'n Proto front end's call counts for GET /metrics (rpc/server.h, RpcCounters): answered
// calls by method and result code, and each method's latency. Private to rpc/.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

#include "engine/latency_histogram.h"
#include "engine/types.h"
#include "rpc/server.h"

namespace tw::rpc {

// Thread-safe: the RPC thread records, the gateway's thread snapshots. A mutex: one uncontended
// lock per answered call, no allocation once a (method, code) pair has been seen.
class CallCounts {
 public:
  using SteadyClock = std::chrono::steady_clock;

  // A call of `method` (a string literal: its address is the key) answered with `code` (kOk for
  // success), `started` when it arrived.
  void Record(const char* method, ErrorCode code, SteadyClock::time_point started) {
    const auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - started).count();
    std::lock_guard<std::mutex> lock(mu_);
    ++calls_[{method, code}];
    auto& h = latency_us_[method];
    ++h[LatencyBuckets::IndexOf(us > 0 ? static_cast<uint64_t>(us) : 0)];
  }
  // A single call refused OVERLOADED at the calls-in-flight bound, before the engine saw it.
  void Overloaded() {
    std::lock_guard<std::mutex> lock(mu_);
    ++overloaded_;
  }
  RpcCounters Snapshot() const {
    RpcCounters out;
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, n] : calls_) {
      out.calls[{key.first, key.second == ErrorCode::kOk ? "" : ErrorCodeName(key.second)}] += n;
    }
    for (const auto& [method, h] : latency_us_) out.latency_us[method] = h;
    out.overloaded = overloaded_;
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::pair<const char*, ErrorCode>, uint64_t> calls_;
  std::map<const char*, LatencyBuckets::Counts> latency_us_;
  uint64_t overloaded_ = 0;
};

}  // namespace tw::rpc
