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
// Limits (the values are in engine/limits.h; the per-connection ones are counted from the
// messages themselves: capnp 0.9 keeps no such counts, so the server wraps each connection's
// message stream and reads every message's kind and question id). A request message may be at
// most kRequestBytesMax (capnp's traversal limit); garbage on a socket ends that connection only.
//  - Backpressure, per connection. A connection is not read while it has kRpcConnectionCallsMax
//    calls unanswered (waiting long polls not counted), or kRpcConnectionPayloadCallsMax
//    describeTask / listActivities unanswered, or kRpcConnectionBatchItemsMax items of batch
//    calls unanswered, or kRpcConnectionReplyBytesHigh reply bytes not yet written to its
//    socket; nor while it holds kRpcConnectionReplyBytesLow unwritten reply bytes and all
//    connections together hold kRpcReplyBytesGlobalHigh. Its calls then wait in the sockets. So
//    a peer that never reads its replies is, after a bounded amount, not read either; replies
//    are never left queued inside capnp, where they could not be counted (the socket wrapper,
//    rpc/buffered_stream.h, accepts and counts them all). Unanswered call bytes are also
//    bounded by kRpcFlowLimitBytes (capnp's flow limit).
//  - Long polls: at most kRpcConnectionPollsMax wait per connection; past it a poll is answered
//    OVERLOADED at once. A poll answered with a task while its connection holds
//    kRpcPollShedReplyBytes unwritten reply bytes does not get it: the task goes back to the
//    head of its queue and the poll answers OVERLOADED.
//  - Questions (Bootstrap and Call messages) the peer has not finished: past
//    kRpcConnectionQuestionsMax the connection is closed, the reason sent to it as an Abort.
//  - Handshake: a connection that has sent no call within ServerOptions::handshake_timeout_ms
//    of being accepted is closed (idle and bootstrap-only sockets hold no slot for long). With
//    TLS the same deadline covers the TLS handshake too, and a connection in its TLS handshake
//    holds a connection slot: a handshake flood is bounded by connections_max.
//  - Authentication (ServerOptions::auth): at most kRpcAuthAttemptsMax authenticate calls per
//    connection; the first wrong secret closes it (rpc/service.h, NewGateService).
//  - Connections: at ServerOptions::connections_max a new connection gets an Abort saying so
//    (type OVERLOADED; a capnp client reports it) and is closed; at most
//    kRpcRefusalsInProgressMax refusals at a time, each at most kRpcRefusalLingerMs.
//  - In flight, all connections: at most ServerOptions::calls_in_flight_max single engine calls
//    wait for the engine (kRpcPayloadCallsInFlightMax of them describeTask / listActivities); a
//    single call past that is answered OVERLOADED at once, without reaching the engine. stats
//    is never refused; batch items are bounded per connection and by the engine's queue (their
//    items then answer overloaded), long polls by the engine (kPollWaitersMax).
//  - accept() failing (EMFILE / ENFILE: out of descriptors) is retried after a backoff of
//    kRpcAcceptBackoffMsMin doubling to kRpcAcceptBackoffMsMax; connections wait in the listen
//    backlog meanwhile. Log lines are rate-limited per kind of event (ServerOptions::log).
//  - A closed connection's last bytes get up to kRpcCloseFlushMs to leave (its input is read
//    and dropped meanwhile, so that closing does not reset the connection and lose them).
//
// Security (docs/OPERATIONS.md, "Security"). Two independent layers, each optional:
//  - TLS (tls_cert_file / tls_key_file, kj-tls): the server's certificate; with
//    tls_client_ca_file, mutual TLS: a client without a certificate chaining to that CA fails the
//    handshake and never reaches capnp. Over TLS the connection's BufferedIoStream and capnp sit
//    on the decrypted stream; nothing else changes.
//  - A bearer secret (auth): the bootstrap capability is a Gate (rpc/tokenwheel.capnp) that
//    yields the TokenWheel only for a listed secret. Without it the bootstrap capability is the
//    TokenWheel, as for a client that predates the Gate: that path is unchanged.
// A server with neither must listen on loopback only; tokenwheeld enforces that before binding.
//
// Memory budget, above the engine (its live-task table, and its queue: what the calls in
// flight above carry, up to ~260 KiB of payloads each). With the defaults:
//  - a connection: ~0.2 MiB (read buffer, kept write buffers, capnp's state), plus what its
//    peer can make it hold: one request being read (<= 1 MiB), unanswered requests (<= the
//    flow limit), unwritten replies (<= 1 MiB, or 64 KiB while the global mark is reached,
//    plus the answers of its unanswered calls: <= 16 payload answers of <= ~0.8 MiB, 1024 small
//    ones, 16,384 batch items of ~100 B) and capnp's table entries (<= 8192 questions).
//  - all connections: unwritten replies <= 64 MiB + connections x 64 KiB beyond the answers in
//    flight, of which at most 256 payload answers (~200 MiB).
// Measured (tests/rpc/server_bounds_test.cc, tokenwheeld, Debug): a connection pipelining
// describeTask for a 256 KB task without reading grows the server's peak RSS by ~16 MB (the
// code before: +1.17 GB for 4,000 calls); 300,000 Bootstraps never finished, ~5 MB (before:
// +442 MB).

#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/latency_histogram.h"
#include "engine/limits.h"
#include "engine/log.h"
#include "engine/types.h"

namespace tw::rpc {

class AuthSecrets;  // rpc/auth.h

struct ServerOptions {
  std::string listen_address = "127.0.0.1:7411";  // HOST:PORT; port 0 picks a free one
  uint32_t max_poll_seconds = limits::kPollSecondsDefault;
  // Open connections; past it a new one is refused (an Abort saying so, then closed). Each one
  // is a descriptor: keep it under the open-files limit (RaiseOpenFilesLimit).
  size_t connections_max = limits::kRpcConnectionsMax;
  size_t subscriptions_max = limits::kRpcSubscriptionsMax;
  std::string server_version = "tokenwheel";  // reported by getInfo
  // A connection that has sent no call this long after it was accepted is closed.
  int64_t handshake_timeout_ms = limits::kRpcHandshakeTimeoutMsDefault;
  // Single engine calls waiting for the engine, all connections together; past it a single
  // call is answered OVERLOADED at once (see "Limits").
  size_t calls_in_flight_max = limits::kRpcCallsInFlightMax;
  // Where log records go (component "rpc"), on the RPC thread. Unset: stderr. At most one
  // record per kind of event per log_interval_ms; the next one of a kind says how many were
  // left out (field "suppressed").
  LogSink log;
  int64_t log_interval_ms = limits::kRpcLogIntervalMsDefault;
  // The clock of that rate limit; null: the system clock. REQUIRES: outlives the server.
  const Clock* clock = nullptr;
  // Bearer secrets (rpc/auth.h). Null: no authentication, the bootstrap capability is the
  // TokenWheel. Set: it is a Gate that wants one of these secrets (see "Security").
  std::shared_ptr<const AuthSecrets> auth;
  // TLS: PEM files (rpc/tls.h). cert and key both empty: plain TCP; else both are needed.
  // client_ca set: mutual TLS, every client must present a certificate signed by a CA in it.
  // Read at Start: a bad file makes Start fail, naming it.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
};

// The Cap'n Proto front end's counts since it started (Server::Counters), for GET /metrics.
struct RpcCounters {
  // Answered calls by (method, AWS error code; "" for success). Batch calls count once, as
  // answered (their items' outcomes are in each item).
  std::map<std::pair<std::string, std::string>, uint64_t> calls;
  // Time from a call's arrival to its answer, by method.
  std::map<std::string, LatencyBuckets::Counts> latency_us;
  uint64_t overloaded = 0;  // single calls refused OVERLOADED before reaching the engine
};

// Raises this process's soft limit on open files (RLIMIT_NOFILE) to its hard limit, so that
// connections_max connections fit (systemd's default soft limit is 1024). Returns the soft
// limit now in force. Call at start, before the store and the server open their descriptors.
Result<uint64_t> RaiseOpenFilesLimit();

class Server {
 public:
  // Binds the listen address and starts the RPC thread. Installs the engine's event listener
  // (Engine::AddEventListener), so call it before traffic reaches the engine.
  // REQUIRES: `engine` outlives the server.
  static Result<std::unique_ptr<Server>> Start(Engine* engine, const ServerOptions& options);

  // Shutdown(), then frees everything. Any thread but the RPC thread.
  virtual ~Server() = default;

  // The bound address, e.g. "127.0.0.1:40123" (the real port when the options said 0).
  virtual std::string address() const = 0;
  virtual uint16_t port() const = 0;

  // The front end's counts so far. Any thread.
  virtual RpcCounters Counters() const = 0;

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
