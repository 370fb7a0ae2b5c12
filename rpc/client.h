// A small C++ client for the Cap'n Proto API (rpc/tokenwheel.capnp), in the engine's vocabulary
// (engine/engine.h): used by the CLI, the tests and the benchmark.
//
// Threads. A Client belongs to the thread that connected it: it runs on that thread's KJ event
// loop (created on first use and shared by every Client of the thread). Not thread-safe.
//
// Errors. Every call answers Result<T>: a typed error is the server's answer (InvalidToken,
// TaskTimedOut with its reason, ServiceUnavailable while its storage is failed, ...). Trouble on
// the way is also an Error, with Error::transport set and one of these codes:
//   kOverloaded   the server is overloaded (back off, retry)
//   kUnavailable  could not connect, or disconnected
//   kInternal     a bug, or the server refused the request as malformed
// IsTransportError() tells the two kinds apart.
//
// The *Async forms return promises for callers that keep many calls in flight (the benchmark);
// they resolve on this thread's loop (drive it with wait_scope()) and reject with a kj::Exception
// on transport trouble. Each sync form is its async form plus a wait. Drop (or finish) every
// promise and Subscription of a client before the client itself.
#pragma once

#include <kj/async-io.h>
#include <kj/async.h>
#include <kj/timer.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/types.h"

namespace tw::rpc {

// True when no answer came (see above).
inline bool IsTransportError(const Error& e) { return e.transport; }

struct PingReply {
  std::string payload;
  StorageHealth storage;  // ok unless the server's storage is failed
};

struct ServerInfo {
  uint32_t api_version = 0;
  std::string server_version;
  uint32_t max_poll_seconds = 0;
  uint64_t request_bytes_max = 0;
  uint32_t batch_items_max = 0;
};

struct ServerStats {
  EngineStats engine;
  uint64_t connections = 0;
  uint64_t subscriptions = 0;
  uint64_t reply_handoffs = 0;     // engine -> RPC thread hand-offs
  uint64_t replies_delivered = 0;  // engine answers delivered through them
};

template <typename T>
using BatchResult = Result<std::vector<Result<T>>>;

// A live subscription to the outcome stream. Dropping it ends the subscription (the consumer's
// durable cursor stays).
class Subscription {
 public:
  virtual ~Subscription() = default;
  // The consumer's durable cursor at subscribe time, and the first sequence sent.
  virtual uint64_t acked_seq() const = 0;
  virtual uint64_t start_seq() const = 0;
  // Waits up to timeout_ms for events, then answers what has arrived, in sequence order
  // (possibly nothing). An error once the subscription ended or the connection dropped.
  virtual Result<std::vector<OutcomeEvent>> Next(int64_t timeout_ms) = 0;
};

// How to reach a server that wants TLS, a secret, or both (rpc/server.h, "Security"). The
// default: plain TCP, no secret -- the only way to reach a server without either, and how every
// client before these options connected.
struct ClientOptions {
  // A secret from the server's auth file (rpc/auth.h, LoadAuthSecrets: a client uses the first).
  // Set: the client calls Gate.authenticate with it and pipelines its calls on the answer (no
  // extra round trip); a server without auth accepts it too. Empty: the bootstrap capability is
  // used as the TokenWheel; a server with auth then refuses the first call and closes.
  std::string auth_secret;
  // TLS: on when `tls` is set or any file below is. The server's certificate must chain to a CA
  // in tls_ca_file (empty: the system's trusted CAs) and carry tls_server_name (empty: the host
  // part of the address), which is also sent as SNI. tls_cert_file and tls_key_file (PEM, the
  // key mode 0600): a client certificate, for a server that requires one (mutual TLS).
  bool tls = false;
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_server_name;

  bool UsesTls() const {
    return tls || !tls_ca_file.empty() || !tls_cert_file.empty() || !tls_key_file.empty();
  }
};

class Client {
 public:
  // Connects to "HOST:PORT" and checks the server answers (getInfo). Blocks up to timeout_ms
  // (the TLS handshake included). A bad TLS file is a kValidation error (not transport); a
  // certificate that does not verify, a wrong secret or a refusal is a transport error whose
  // message says why (e.g. "authentication failed").
  static Result<std::unique_ptr<Client>> Connect(const std::string& address,
                                                 int64_t timeout_ms = 5000);
  static Result<std::unique_ptr<Client>> Connect(const std::string& address,
                                                 const ClientOptions& options,
                                                 int64_t timeout_ms = 5000);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const ServerInfo& info() const { return info_; }
  // This thread's event loop, to wait on the *Async promises.
  kj::WaitScope& wait_scope();
  kj::Timer& timer();
  // This thread's I/O (e.g. to open other connections on the same loop).
  kj::AsyncIoProvider& io_provider();
  // This thread's low-level I/O: wraps raw file descriptors (a timerfd, say) into the loop.
  kj::LowLevelAsyncIoProvider& low_level_io();

  // ---- Sync ----
  Result<PingReply> Ping(const std::string& payload);
  Result<ServerInfo> GetInfo();

  Result<ActivityInfo> CreateActivity(const std::string& name);
  Result<Empty> DeleteActivity(const std::string& arn);
  Result<ActivityInfo> DescribeActivity(const std::string& arn);
  Result<ListActivitiesReply> ListActivities(uint32_t max_results, const std::string& next_token);

  Result<IssueTaskReply> IssueTask(const IssueTaskRequest& req);
  BatchResult<IssueTaskReply> IssueTasks(const std::vector<IssueTaskRequest>& reqs);
  // wait_s 0: the server's maximum.
  Result<GetActivityTaskReply> GetActivityTask(const GetActivityTaskRequest& req,
                                               uint32_t wait_s = 0);
  Result<CompletionReply> SendTaskSuccess(const SendTaskSuccessRequest& req);
  BatchResult<CompletionReply> SendTaskSuccesses(const std::vector<SendTaskSuccessRequest>& reqs);
  Result<CompletionReply> SendTaskFailure(const SendTaskFailureRequest& req);
  BatchResult<CompletionReply> SendTaskFailures(const std::vector<SendTaskFailureRequest>& reqs);
  Result<Empty> SendTaskHeartbeat(const std::string& token);
  BatchResult<Empty> SendTaskHeartbeats(const std::vector<std::string>& tokens);
  Result<CompletionReply> CancelTask(const std::string& token);
  Result<TaskDescription> DescribeTask(const std::string& token);

  // from_seq 0: resume from the consumer's durable cursor.
  Result<std::unique_ptr<Subscription>> Subscribe(const std::string& consumer, uint64_t from_seq);
  Result<Empty> AckEvents(const std::string& consumer, uint64_t seq);
  Result<Empty> DeleteConsumer(const std::string& consumer);
  // An online backup into the server's --backup-dir/name; answers the directory written.
  Result<std::string> Checkpoint(const std::string& name);
  Result<ServerStats> Stats();

  // ---- Async ----
  kj::Promise<std::string> PingAsync(const std::string& payload);
  kj::Promise<Result<IssueTaskReply>> IssueTaskAsync(const IssueTaskRequest& req);
  kj::Promise<BatchResult<IssueTaskReply>> IssueTasksAsync(
      const std::vector<IssueTaskRequest>& reqs);
  kj::Promise<Result<GetActivityTaskReply>> GetActivityTaskAsync(const GetActivityTaskRequest& req,
                                                                 uint32_t wait_s = 0);
  kj::Promise<Result<CompletionReply>> SendTaskSuccessAsync(const SendTaskSuccessRequest& req);
  kj::Promise<BatchResult<CompletionReply>> SendTaskSuccessesAsync(
      const std::vector<SendTaskSuccessRequest>& reqs);
  kj::Promise<Result<CompletionReply>> SendTaskFailureAsync(const SendTaskFailureRequest& req);
  kj::Promise<Result<Empty>> SendTaskHeartbeatAsync(const std::string& token);
  kj::Promise<Result<TaskDescription>> DescribeTaskAsync(const std::string& token);

  // Waits for `promise` on this thread's loop; transport trouble becomes an Error.
  template <typename T>
  Result<T> Wait(kj::Promise<Result<T>> promise);

  struct Impl;  // private to rpc/client.cc

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  static Error TransportError(const kj::Exception& e);

  std::unique_ptr<Impl> impl_;
  ServerInfo info_;
};

template <typename T>
Result<T> Client::Wait(kj::Promise<Result<T>> promise) {
  Result<T> out;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() { out = promise.wait(wait_scope()); })) {
    out = Result<T>::Fail(TransportError(*e));
  }
  return out;
}

}  // namespace tw::rpc
