#include "rpc/server_log.h"

#include <cstdio>

#include "engine/assert.h"

namespace tw::rpc {

RateLimitedLog::RateLimitedLog(const ServerOptions& options)
    : sink_(options.log),
      clock_(options.clock != nullptr ? options.clock : &system_clock_),
      interval_ms_(options.log_interval_ms) {}

void RateLimitedLog::Log(LogKind kind, const std::string& line) {
  TW_ASSERT(kind < LogKind::kCount);
  Kind& k = kinds_[static_cast<size_t>(kind)];
  const int64_t now_ms = clock_->NowMs();
  if (k.logged && now_ms - k.last_ms < interval_ms_) {
    ++k.left_out;
    return;
  }
  std::string out = line;
  if (k.left_out > 0) {
    out += " (and " + std::to_string(k.left_out) + " more since the last such line)";
  }
  k = Kind{true, now_ms, 0};
  Emit(out);
}

void RateLimitedLog::Emit(const std::string& line) const {
  if (sink_) {
    sink_(line);
  } else {
    std::fprintf(stderr, "tokenwheel rpc: %s\n", line.c_str());
  }
}

}  // namespace tw::rpc
