// Overload mode: the real server under far more load than it can take, and under hostile
// clients, through both front ends at once, while a well-behaved client keeps calling.
//
//  1. Flood: Cap'n Proto connections that each keep kRpcConnectionCallsMax issues in flight
//     (together several times the server's global bound), and ten thousand gateway connections
//     with an issue each in flight (more than the gateway's bound). Past the bounds the answers
//     must be OVERLOADED / ThrottlingException, at once.
//  2. Hostile: thousands of idle connections on both ports, slow-loris requests that trickle a
//     byte at a time, garbage bytes, and oversize frames (a Cap'n Proto frame claiming a huge
//     segment, an HTTP body past the 1 MiB limit).
// Throughout, a probe client issues, succeeds and describes a task every few ms on both front
// ends: every call must be answered (an answer may be OVERLOADED), within a bound. The server's
// RSS is sampled. At the end every issue and success that was acknowledged is read back.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace tw::crashtest {

class ServerProcess;

struct OverloadOptions {
  int64_t flood_ms = 5000;
  int64_t hostile_ms = 5000;
  uint64_t seed = 1;
};

// Runs both phases against a started server. Fills `summary` with the figures; answers the
// number of failed expectations (0: all held).
uint64_t RunOverload(ServerProcess* server, const OverloadOptions& options,
                     nlohmann::json* summary);

}  // namespace tw::crashtest
