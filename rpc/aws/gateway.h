// The AWS JSON 1.0 gateway: serves the AWS Step Functions activity and task-token operations
// (AWSStepFunctions.*) and tokenwheel's issuer operations (TokenWheel.*) over HTTP/1.1 for one
// Engine, so that unchanged AWS CLI, boto3 and AWS SDK workers, and workflow engines in any
// language, talk to tokenwheel. Also GET /healthz, GET /metrics (Prometheus text) and the
// operator's status page, GET / and GET /status.json (rpc/aws/status_page.h). The narrow header
// the mains include; docs/AWS_GATEWAY.md documents the wire.
//
// Threads. One thread runs one Boost.Asio loop: it accepts, reads and parses requests, checks
// SigV4 signatures, hands calls to the engine through rpc/bridge.h (a burst of calls wakes the
// engine once; a batch of answers comes back in one hand-off) and writes the answers. No thread
// per connection or per waiting poll.
//
// Bounds (engine/limits.h, "AWS JSON 1.0 gateway"; docs/AWS_GATEWAY.md lists them): a request
// body of at most limits::kRequestBytesMax (413 past it) and headers of at most
// kAwsHeaderBytesMax (431); one request at a time per connection (the next is read once the
// answer is written: a client that does not read its answers stops being read, and holds one
// answer), and neither kept once done; request bodies being read, all connections together, at
// most kAwsBodyBytesInFlightMax (503 ThrottlingException past it); no request read while
// kAwsReplyBytesGlobalHigh of answers wait to be written; a connection idle for
// idle_timeout_ms, or taking longer than request_timeout_ms to send one request, is closed
// (slow-loris clients); at most connections_max connections (past it a new one gets a 503
// ThrottlingException and is closed once it read it); at most calls_max engine calls in flight
// (past it ThrottlingException at once, which every AWS SDK retries with back-off); an accept
// loop that backs off on EMFILE/ENFILE and accepts again when descriptors free up.
//
// Long polls. GetActivityTask waits up to max_poll_seconds, then answers {}. A poll whose
// connection closes is withdrawn and never gets a task. A task whose answer could not be
// written (the connection died between the hand-out and the write) goes back to the head of
// its queue (Engine::ReturnTask) instead of being lost to a dead worker.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/limits.h"
#include "engine/log.h"
#include "engine/types.h"
#include "rpc/aws/sigv4.h"
#include "rpc/server.h"

namespace tw::rpc::aws {

struct GatewayOptions {
  std::string listen_address = "127.0.0.1:8083";  // HOST:PORT; port 0 picks a free one
  // The keys whose SigV4 signatures are accepted. Null: signatures are not checked, and Start
  // refuses to listen on an address that is not loopback.
  std::shared_ptr<const Credentials> credentials;
  // SigV4 request times are checked against it, and status.json's nowMs read from it; null:
  // the system clock.
  Clock* clock = nullptr;
  uint32_t max_poll_seconds = limits::kPollSecondsDefault;
  size_t connections_max = limits::kAwsConnectionsMax;
  size_t calls_max = limits::kAwsCallsInFlightMax;
  int64_t idle_timeout_ms = limits::kAwsIdleTimeoutMsDefault;
  int64_t request_timeout_ms = limits::kAwsRequestTimeoutMsDefault;
  std::string server_version = "tokenwheel";
  // Where the gateway's log records go (refused connections, accept failures, bad signatures:
  // at most one per kind per limits::kAwsLogIntervalMs); unset: stderr. Gateway thread.
  LogSink log;
  // The Cap'n Proto front end's counts, rendered in GET /metrics beside the gateway's own
  // (Server::Counters); unset: none. Called on the gateway thread.
  std::function<RpcCounters()> rpc_counters;
  // Tests only: runs on the gateway thread just before the answer of a GetActivityTask that
  // got a task is written (to kill the connection at that moment).
  std::function<void()> before_task_write;
};

class Gateway {
 public:
  // Binds the listen address and starts the gateway thread. REQUIRES: `engine` outlives the
  // gateway.
  static Result<std::unique_ptr<Gateway>> Start(Engine* engine, const GatewayOptions& options);

  // Shutdown(), then frees everything. Any thread but the gateway's.
  virtual ~Gateway() = default;

  virtual std::string address() const = 0;  // the bound address, with the real port
  virtual uint16_t port() const = 0;

  // No new connections; open ones are served on. Idempotent. Any thread but the gateway's.
  virtual void StopAccepting() = 0;
  // Delivers the answers already handed over, gives them limits::kRpcShutdownFlushMs to be
  // written, closes every connection and joins the thread. Call after Engine::Stop() for a clean
  // stop. Idempotent. Any thread but the gateway's.
  virtual void Shutdown() = 0;
};

// True for 127.0.0.0/8, ::1 and "localhost" (HOST of HOST:PORT, brackets allowed).
bool IsLoopbackAddress(const std::string& host_port);

}  // namespace tw::rpc::aws
