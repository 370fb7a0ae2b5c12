// The TokenWheel interface of rpc/tokenwheel.capnp, one instance per connection: read params,
// call the engine through the ServerCore (rpc/server_core.h), fill results. Private to rpc/.
// KJ thread only.
//
// Business outcomes are values (each result's `error` arm); logistics are exceptions: a single
// call past the core's bounds is OVERLOADED at once, as are a connection's long polls past
// kRpcConnectionPollsMax and subscriptions past ServerOptions::subscriptions_max; a batch past
// kRpcBatchItemsMax fails. The connection's batch items and long polls count in its
// ConnectionLoad (rpc/connection_load.h) while they run; the outcome stream a subscribe call
// opens is rpc/event_stream.h.
#pragma once

#include <capnp/capability.h>
#include <kj/memory.h>

#include <cstdint>

#include "rpc/auth.h"
#include "rpc/connection_load.h"
#include "rpc/server_core.h"
#include "rpc/tokenwheel.capnp.h"

namespace tw::rpc {

// The bootstrap capability of one connection when the server has no auth secrets. It is a Gate
// too: authenticate answers the same capability, whatever the secret. REQUIRES: `core` outlives
// it (the server frees the core only once every connection's calls have ended).
proto::TokenWheel::Client NewTokenWheelService(ServerCore& core, kj::Own<ConnectionLoad> load);

// The bootstrap capability of one connection when the server has auth secrets: only
// Gate.authenticate answers. A secret `secrets` matches answers the connection's TokenWheel
// (NewTokenWheelService, made once). A wrong secret, a TokenWheel call made on the Gate, or an
// authenticate call past kRpcAuthAttemptsMax fails with a FAILED exception saying why, logs one
// line (LogKind::kAuthFailed, rate limited) and closes the connection kRpcAuthRefusedCloseMs later
// (ConnectionLoad::CloseConnection; a client that reads the reason closes it first); every later
// call on the Gate fails at once, without comparing anything.
// REQUIRES: `core` and `secrets` outlive it.
proto::Gate::Client NewGateService(ServerCore& core, kj::Own<ConnectionLoad> load,
                                   const AuthSecrets& secrets);

// Whether a call answers with task payloads: describeTask and listActivities, admitted as
// Admission::kPayload (a connection has at most kRpcConnectionPayloadCallsMax unanswered).
inline bool IsPayloadCall(uint64_t interface_id, uint16_t method_id) {
  // Their ordinals in rpc/tokenwheel.capnp (an ordinal never changes: it is the wire format).
  constexpr uint16_t kListActivitiesMethod = 5;
  constexpr uint16_t kDescribeTaskMethod = 16;
  return interface_id == capnp::typeId<proto::TokenWheel>() &&
         (method_id == kDescribeTaskMethod || method_id == kListActivitiesMethod);
}

}  // namespace tw::rpc
