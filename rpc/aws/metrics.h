// The gateway's GET /metrics: Prometheus text format (version 0.0.4) for the engine's stats and
// the gateway's own counters. Private to rpc/aws/.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "engine/engine.h"
#include "engine/latency_histogram.h"
#include "rpc/aws/protocol.h"
#include "rpc/server.h"

namespace tw::rpc::aws {

// Counted on the gateway thread only.
struct GatewayCounters {
  // Requests answered, by operation and AWS code ("" for success).
  std::map<std::pair<Op, std::string>, uint64_t> requests;
  // Requests that named no operation (a bad target, a bad path, an unsigned request), by code.
  std::map<std::string, uint64_t> rejected;
  // Latency from the request's last byte to its answer being handed to the socket, by op.
  std::array<LatencyBuckets::Counts, kOpCount> latency_us{};
  uint64_t connections = 0;           // open now
  uint64_t connections_accepted = 0;  // since start
  uint64_t connections_refused = 0;   // past connections_max
  uint64_t waiting_polls = 0;         // GetActivityTask and GetOutcomes waiting now
  uint64_t calls_in_flight = 0;       // engine calls not yet answered
  uint64_t tasks_returned = 0;        // answers with a task that could not be written
  uint64_t accept_backoffs = 0;       // EMFILE / ENFILE
};

// `rpc`: the Cap'n Proto front end's counts, when it runs beside the gateway.
std::string RenderMetrics(const EngineStats& engine, const GatewayCounters& gateway,
                          const std::optional<RpcCounters>& rpc = std::nullopt);

}  // namespace tw::rpc::aws
