// The Cap'n Proto front end: serves rpc/tokenwheel.capnp for one Engine. The narrow header the
// mains include; everything else in rpc/ is private to it.
//
// Threads. The server runs its own thread with one KJ event loop: it accepts connections,
// decodes calls, and hands them to the engine (Engine methods are thread-safe and do not
// block); the calls of one burst of events wake the engine thread once (Engine::Cork). The
// engine answers on its own thread; the answers of one engine batch cross back to the RPC
// thread in ONE hand-off (rpc/mailbox.h) and are turned into replies there. No KJ object is
// ever touched from another thread.
//
// Long polls. A getActivityTask call waits up to min(waitSeconds, max_poll_seconds), then
// answers empty. A call that is cancelled, or whose connection drops, is withdrawn from the
// engine (Engine::WithdrawPoll); a task that the engine handed to it anyway goes back to the head
// of its queue (Engine::ReturnTask).
//
// Limits. A request message may be at most limits::kRequestBytesMax (capnp traversal limit);
// unanswered calls per connection are bounded by limits::kRpcFlowLimitBytes; connections by
// ServerOptions::connections_max. Garbage on a socket ends that connection only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/engine.h"
#include "engine/limits.h"
#include "engine/types.h"

namespace tw::rpc {

struct ServerOptions {
  std::string listen_address = "127.0.0.1:7411";  // HOST:PORT; port 0 picks a free one
  uint32_t max_poll_seconds = limits::kPollSecondsDefault;
  size_t connections_max = limits::kRpcConnectionsMax;
  size_t subscriptions_max = limits::kRpcSubscriptionsMax;
  std::string server_version = "tokenwheel";  // reported by getInfo
};

class Server {
 public:
  // Binds the listen address and starts the RPC thread. Installs the engine's event listener
  // (Engine::SetEventListener), so call it before traffic reaches the engine.
  // REQUIRES: `engine` outlives the server.
  static Result<std::unique_ptr<Server>> Start(Engine* engine, const ServerOptions& options);

  // Shutdown(), then frees everything. Any thread but the RPC thread.
  virtual ~Server() = default;

  // The bound address, e.g. "127.0.0.1:40123" (the real port when the options said 0).
  virtual std::string address() const = 0;
  virtual uint16_t port() const = 0;

  // Closes the listening socket: no new connections; existing ones are served on. Idempotent.
  // Any thread but the RPC thread.
  virtual void StopAccepting() = 0;

  // Delivers the engine answers already handed over, gives replies a moment to flush
  // (limits::kRpcShutdownFlushMs), closes every connection and joins the RPC thread. Call after
  // Engine::Stop() for a clean stop (so in-flight calls get their answers). Idempotent. Any
  // thread but the RPC thread.
  virtual void Shutdown() = 0;
};

}  // namespace tw::rpc
