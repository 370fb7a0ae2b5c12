// The gateway's operator status page: GET / (and /index.html) answers one self-contained HTML
// page, and GET /status.json the figures it polls. Private to rpc/aws/; docs/OPERATIONS.md
// ("Status page") says what each figure means.
//
// The page keeps its own history (the last limits::kStatusPageHistorySamples samples, in the
// browser); the gateway keeps none: see status_page.cc for why.
#pragma once

#include <cstdint>
#include <string>

#include "engine/engine.h"
#include "rpc/aws/metrics.h"

namespace tw::rpc::aws {

inline constexpr char kStatusPageContentType[] = "text/html; charset=utf-8";
inline constexpr char kStatusJsonContentType[] = "application/json";

// The HTML page: inline CSS and JavaScript, no reference to anything outside the gateway (its
// Content-Security-Policy forbids every other origin). Its script polls `status.json` (relative,
// so the page also works behind a path prefix) every limits::kStatusPagePollMs.
std::string StatusPageHtml();

// GET /status.json: the engine's stats (the same EngineStats GET /metrics renders) and the
// gateway's counters as one JSON object; `now_ms` is the gateway clock's time (Unix ms), which
// the page divides counter differences by. Members (docs/OPERATIONS.md):
//   nowMs, liveTasks, queuedTasks, startedTasks, pendingTimers, waitingPolls, commands,
//   batches, lastEventSequence, eventsNotAcked,
//   timeouts {heartbeat, overall, scheduleToStart, total},
//   activities [{arn, name, queued}] (in the engine's order: by name),
//   storage {ok, ...} (rpc/json_forms.h StorageJson),
//   gateway {connections, callsInFlight, waitingPolls}.
std::string RenderStatusJson(const EngineStats& engine, const GatewayCounters& gateway,
                             int64_t now_ms);

}  // namespace tw::rpc::aws
