// The Cap'n Proto server's log (rpc/server.h, ServerOptions::log): at most one line per kind of
// event per interval, so that a flood of refusals cannot flood the log; the next line of a kind
// says how many were left out. Private to rpc/.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "engine/clock.h"
#include "rpc/server.h"

namespace tw::rpc {

enum class LogKind : size_t {
  kConnectionLimit,   // a connection refused at connections_max
  kAcceptFailed,      // accept() failed (EMFILE, ENFILE, ...)
  kHandshakeTimeout,  // a connection closed for sending no call
  kQuestionsLimit,    // a connection closed for too many unfinished questions
  kOverloaded,        // single calls refused at calls_in_flight_max
  kPollShed,          // a task not handed to a connection that does not read its replies
  kConnectionError,   // a connection ended with an error other than a disconnect
  kAuthFailed,        // a connection closed for a wrong secret or a call before authenticating
  kTlsHandshake,      // a TLS handshake failed or timed out
  kCount,
};

// RPC thread only. REQUIRES: options.clock (when set) outlives the log.
class RateLimitedLog {
 public:
  explicit RateLimitedLog(const ServerOptions& options);

  void Log(LogKind kind, const std::string& line);
  // Not rate-limited: for one-off lines.
  void Emit(const std::string& line) const;

 private:
  struct Kind {
    bool logged = false;
    int64_t last_ms = 0;
    uint64_t left_out = 0;
  };
  const LogSink sink_;
  SystemClock system_clock_;
  const Clock* const clock_;
  const int64_t interval_ms_;
  std::array<Kind, static_cast<size_t>(LogKind::kCount)> kinds_{};
};

}  // namespace tw::rpc
