#include "rpc/server_log.h"

#include "engine/assert.h"

namespace tw::rpc {

namespace {

// The event name of each kind, as LogRecord::event.
const char* EventName(LogKind kind) {
  switch (kind) {
    case LogKind::kConnectionLimit:
      return "connection_limit";
    case LogKind::kAcceptFailed:
      return "accept_failed";
    case LogKind::kHandshakeTimeout:
      return "handshake_timeout";
    case LogKind::kQuestionsLimit:
      return "questions_limit";
    case LogKind::kOverloaded:
      return "overloaded";
    case LogKind::kPollShed:
      return "poll_shed";
    case LogKind::kConnectionError:
      return "connection_error";
    case LogKind::kAuthFailed:
      return "auth_failed";
    case LogKind::kTlsHandshake:
      return "tls_handshake_failed";
    case LogKind::kCount:
      break;
  }
  return "rpc";
}

}  // namespace

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
  LogRecord r{LogLevel::kWarn, "rpc", EventName(kind), line, {}};
  if (k.left_out > 0) {
    r.message += " (and " + std::to_string(k.left_out) + " more since the last such line)";
    r.fields.emplace_back("suppressed", std::to_string(k.left_out));
  }
  k = Kind{true, now_ms, 0};
  tw::Emit(sink_, r);
}

void RateLimitedLog::Emit(const std::string& line) const {
  tw::Emit(sink_, {LogLevel::kInfo, "rpc", "notice", line, {}});
}

}  // namespace tw::rpc
