// Overload mode: the real server under far more load than it can take, and under hostile
// clients, through both front ends at once, while a well-behaved client keeps calling.
//
//  0. Sustainable: each front end alone, closed loop with 64 calls in flight, for 2 s; its
//     acknowledged issues per second are the sustainable rate.
//  1. Flood: Cap'n Proto connections that each keep kRpcConnectionCallsMax issues in flight
//     (8,192 in all: twice the server's global bound, 128x the sustainable phase's), and ten
//     thousand gateway connections with an issue each in flight, past the gateway's connection
//     cap (kOverloadAwsConnectionsMax). Callers past a bound must get OVERLOADED /
//     ThrottlingException, at once; both kinds must be seen.
//  2. Hostile: thousands of idle connections on both ports, slow-loris requests that trickle a
//     byte at a time on both (an HTTP body, a Cap'n Proto frame), garbage bytes, and oversize
//     frames (a Cap'n Proto frame claiming a huge segment, an HTTP body past the 1 MiB limit).
//     Garbage and oversize connections must be closed; idle and slow Cap'n Proto ones too, by
//     the handshake timeout.
// Throughout, a probe client issues, succeeds and describes a task every few ms on both front
// ends: every call must be answered (an answer may be OVERLOADED), within a bound. The server's
// RSS is sampled and must stay within a budget. At the end every issue and success that was
// acknowledged is read back.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace tw::crashtest {

class ServerProcess;

// The overload run's server settings (tokenwheeld flags; a --server-arg naming one wins): the
// gateway capped at 2,048 connections (default 16,384) so that the flood's 10,000 cross the cap
// on a 2-core machine, and Cap'n Proto connections that send no call closed after 2 s (default
// 10 s) so that the hostile phase sees it happen.
inline constexpr int64_t kOverloadAwsConnectionsMax = 2048;
inline constexpr int64_t kOverloadHandshakeTimeoutMs = 2000;

struct OverloadOptions {
  int64_t flood_ms = 5000;
  int64_t hostile_ms = 5000;
  uint64_t seed = 1;
  // The server's --handshake-timeout-ms: when shorter than the hostile phase, every idle or
  // slow-loris Cap'n Proto connection must be closed by the end of it.
  int64_t rpc_handshake_timeout_ms = kOverloadHandshakeTimeoutMs;
};

// Runs both phases against a started server. Fills `summary` with the figures; answers the
// number of failed expectations (0: all held).
uint64_t RunOverload(ServerProcess* server, const OverloadOptions& options,
                     nlohmann::json* summary);

}  // namespace tw::crashtest
