// The Cap'n Proto server's outcome stream: the subscriptions that a subscribe call
// (rpc/service.h) hands out, each pushing the durable outcome events to its EventSink.
// Private to rpc/. KJ thread only.
//
// A subscription reads from its cursor on, in runs of at most limits::kEventsPerReadMax events
// (limits::kEventsReadBytesMax of payloads), and sends each run in messages of at most
// limits::kRpcEventChunkBytesMax, each after the sink's flow control allows it; then it waits
// for the next notice of new events (ServerCore::WaitForEvents). A failed read or trimmed
// events end it, and its sink is told why (EventSink.ended); a disconnect ends it quietly.
// Each one counts in ServerCore::subscriptions while it lives.
#pragma once

#include <cstdint>

#include "engine/engine.h"
#include "rpc/server_core.h"
#include "rpc/tokenwheel.capnp.h"

namespace tw::rpc {

// A subscription that starts at event `start_seq`, on a later turn (the subscribe call's
// results go out first). REQUIRES: `core` outlives it (the server frees the core only once
// ServerCore::subscriptions is 0).
proto::Subscription::Client NewSubscription(ServerCore& core, uint64_t start_seq,
                                            proto::EventSink::Client sink);

// Whether the events from `start` on are still kept, or still to come; false for 0 and for
// trimmed events. Reads the store on this thread.
bool EventsKeptFrom(Engine* engine, uint64_t start);

}  // namespace tw::rpc
