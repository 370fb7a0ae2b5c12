// The Cap'n Proto server (rpc/server.h): the RPC thread, its listener and its connections.
// Layout of the server's units (all private to rpc/):
//   rpc/server_log.h       RateLimitedLog: the log, at most one line per kind of event per
//                          interval.
//   rpc/connection_load.h  ConnectionLoad: what one connection has asked and not been answered
//                          (the per-connection bounds of server.h "Limits").
//   rpc/server_core.h      ServerCore: the KJ-thread state shared by all connections: the engine
//                          bridge (pending calls by id, waiting polls), the new-events
//                          broadcast, counters, the global bounds (calls in flight, unwritten
//                          reply bytes).
//   rpc/service.h          the TokenWheel interface, one per connection: read params, call the
//                          engine through the core, fill results.
//   rpc/event_stream.h     the outcome-stream subscriptions and their delivery loops.
// This file:
//   ConnectionGuard   the connection's capnp message stream: counts questions and answers by
//                     reading each message's kind, pauses reading at the bounds, closes.
//   Connection        one accepted socket, its RPC system and its handshake timeout.
//   ServerImpl        the RPC thread: listener, accept loop, connection cap, start-up and
//                     shutdown.
#include "rpc/server.h"

#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.capnp.h>
#include <capnp/rpc.h>
#include <capnp/serialize-async.h>
#include <capnp/serialize.h>
#include <kj/async-io.h>
#include <kj/async.h>
#include <kj/debug.h>
#include <kj/timer.h>
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <future>
#include <thread>
#include <utility>

#include "engine/assert.h"
#include "rpc/auth.h"
#include "rpc/buffered_stream.h"
#include "rpc/connection_load.h"
#include "rpc/mailbox.h"
#include "rpc/server_core.h"
#include "rpc/server_log.h"
#include "rpc/service.h"
#include "rpc/tls.h"

namespace tw::rpc {
namespace {

// Event-loop turns (of >= 1 ms) that shutdown waits for cancelled calls to unwind.
constexpr int kShutdownSettleTurns = 1000;

// ConnectionGuard reads the root and the Call header of each message before capnp does, and a
// reader's traversal limit counts both reads: these words keep a message of exactly
// kRequestBytesMax readable.
constexpr size_t kGuardTraversalWords = 64;

capnp::ReaderOptions ServerReaderOptions() {
  capnp::ReaderOptions options;
  options.traversalLimitInWords =
      limits::kRequestBytesMax / sizeof(capnp::word) + kGuardTraversalWords;
  options.nestingLimit = 16;  // the schema nests 4 deep; a little room for evolution
  return options;
}

// One connection's capnp message stream, over its BufferedIoStream. capnp 0.9.2 counts neither
// the calls a connection has in flight nor its unfinished questions, and lets a connection's
// reads run ahead of its replies; this wrapper sees every message and
//  - reads the next message only while the connection's ConnectionLoad is not Full();
//  - counts Bootstrap / Call / Finish in and Return out, and fails the read (which makes capnp
//    send the reason as an Abort and disconnect) past kRpcConnectionQuestionsMax questions;
//  - notes the first Call (the handshake), and ends the connection on Close().
// The common case costs one continuation per message read: the pause is taken only when Full().
// The bytes of unwritten replies are bounded below it, by BufferedIoStream's read pause.
class ConnectionGuard final : public capnp::MessageStream {
 public:
  ConnectionGuard(BufferedIoStream& stream, kj::Own<ConnectionLoad> load, RateLimitedLog& log)
      : stream_(stream), inner_(stream), load_(kj::mv(load)), log_(log) {}

  using capnp::MessageStream::tryReadMessage;
  using capnp::MessageStream::writeMessage;
  using capnp::MessageStream::writeMessages;

  kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> tryReadMessage(
      kj::ArrayPtr<kj::AutoCloseFd> fd_space, capnp::ReaderOptions options,
      kj::ArrayPtr<capnp::word> scratch) override {
    if (!load_->Full()) return ReadAndCount(fd_space, options, scratch);
    return load_->WhenRoom().then(
        [this, fd_space, options, scratch]() { return ReadAndCount(fd_space, options, scratch); });
  }

  kj::Promise<void> writeMessage(
      kj::ArrayPtr<const int> fds,
      kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) override {
    OnOutgoing(segments);
    return inner_.writeMessage(fds, segments);
  }
  kj::Promise<void> writeMessages(
      kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) override {
    for (auto segments : messages) OnOutgoing(segments);
    return inner_.writeMessages(messages);
  }
  kj::Maybe<int> getSendBufferSize() override { return inner_.getSendBufferSize(); }
  kj::Promise<void> end() override { return inner_.end(); }

  // Ends the connection: the read in progress (or the next one) fails with `reason`, which
  // capnp sends to the peer as an Abort before it disconnects. Idempotent.
  void Close(const kj::Exception& reason) { stream_.FailReads(reason); }
  // The peer has sent a call (its first one ends the handshake).
  bool handshaken() const { return handshaken_; }

 private:
  kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> ReadAndCount(
      kj::ArrayPtr<kj::AutoCloseFd> fd_space, capnp::ReaderOptions options,
      kj::ArrayPtr<capnp::word> scratch) {
    return inner_.tryReadMessage(fd_space, options, scratch)
        .then([this](kj::Maybe<capnp::MessageReaderAndFds>&& message) {
          KJ_IF_MAYBE (m, message) {
            OnIncoming(*m->reader);
          }
          return kj::mv(message);
        });
  }

  void OnIncoming(capnp::MessageReader& reader) {
    auto message = reader.getRoot<capnp::rpc::Message>();
    switch (message.which()) {
      case capnp::rpc::Message::BOOTSTRAP:
        Ask(message.getBootstrap().getQuestionId(), false);
        break;
      case capnp::rpc::Message::CALL: {
        auto call = message.getCall();
        handshaken_ = true;
        Ask(call.getQuestionId(), IsPayloadCall(call.getInterfaceId(), call.getMethodId()));
        break;
      }
      case capnp::rpc::Message::FINISH:
        load_->Finished();
        break;
      default:
        break;
    }
  }

  void Ask(uint32_t id, bool payload) {
    load_->Asked(id, payload);
    if (load_->questions() <= limits::kRpcConnectionQuestionsMax) return;
    log_.Log(LogKind::kQuestionsLimit, "closing a connection with more than " +
                                           std::to_string(limits::kRpcConnectionQuestionsMax) +
                                           " unfinished questions");
    // Thrown from the read: capnp sends it to the peer as an Abort and disconnects.
    kj::throwFatalException(KJ_EXCEPTION(
        FAILED,
        "too many unfinished questions on one connection (a client must send Finish for the "
        "answers it has)",
        load_->questions(), static_cast<uint64_t>(limits::kRpcConnectionQuestionsMax)));
  }

  // Our own messages, built by capnp: a single-segment one has no far pointers and is read
  // without bounds checks (the common case; a checked reader costs an arena per message).
  void OnOutgoing(kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) {
    if (segments.size() == 1) {
      Count(capnp::readMessageUnchecked<capnp::rpc::Message>(segments[0].begin()));
    } else {
      capnp::SegmentArrayMessageReader reader(segments);
      Count(reader.getRoot<capnp::rpc::Message>());
    }
  }
  void Count(capnp::rpc::Message::Reader message) {
    if (message.which() == capnp::rpc::Message::RETURN) {
      load_->Answered(message.getReturn().getAnswerId());
    }
  }

  BufferedIoStream& stream_;
  capnp::AsyncIoMessageStream inner_;
  kj::Own<ConnectionLoad> load_;
  RateLimitedLog& log_;
  bool handshaken_ = false;
};

// ---------------------------------------------------------------------------------------------

// A connection's socket: replies are always accepted (never queued inside capnp, where they
// could not be counted) and reading pauses instead, at the connection's and at the global
// unwritten-reply bounds.
BufferedIoStream::Options ConnectionStreamOptions(SharedWriteBacklog& reply_backlog) {
  BufferedIoStream::Options options;
  options.write_wait_bytes = BufferedIoStream::kNever;
  options.read_pause_bytes = limits::kRpcConnectionReplyBytesHigh;
  options.shared = &reply_backlog;
  options.shared_pause_bytes = limits::kRpcConnectionReplyBytesLow;
  return options;
}

// Reads and drops what a peer sends until it closes, so that closing our end does not reset the
// connection before the peer has read our last bytes (an Abort with the reason).
kj::Promise<void> DrainUntilEof(kj::AsyncIoStream& stream, kj::ArrayPtr<kj::byte> buffer) {
  return stream.tryRead(buffer.begin(), 1, buffer.size())
      .then([&stream, buffer](size_t n) -> kj::Promise<void> {
        if (n == 0) return kj::READY_NOW;
        return DrainUntilEof(stream, buffer);
      });
}

// The bootstrap capability of a new connection: the TokenWheel, or a Gate in front of it.
capnp::Capability::Client BootstrapFor(ServerCore& core, kj::Own<ConnectionLoad> load) {
  const AuthSecrets* auth = core.options().auth.get();
  if (auth == nullptr) return NewTokenWheelService(core, kj::mv(load));
  return NewGateService(core, kj::mv(load), *auth);
}

// One accepted socket (a TLS one once its handshake is done), its RPC system and its handshake
// timeout, which fires at `deadline` (the accept time plus the timeout).
struct Connection {
  Connection(kj::Own<kj::AsyncIoStream> s, ServerCore& core, kj::TimePoint deadline)
      : core(core),
        load(kj::refcounted<ConnectionLoad>()),
        stream(
            kj::heap<BufferedIoStream>(kj::mv(s), ConnectionStreamOptions(core.reply_backlog()))),
        guard(*stream, kj::addRef(*load), core.log()),
        network(guard, capnp::rpc::twoparty::Side::SERVER, ServerReaderOptions()),
        rpc(capnp::makeRpcServer(network, BootstrapFor(core, kj::addRef(*load)))) {
    load->set_stream(stream.get());
    rpc.setFlowLimit(limits::kRpcFlowLimitBytes / sizeof(capnp::word));
    core.connections.fetch_add(1, std::memory_order_relaxed);
    const int64_t timeout_ms = core.options().handshake_timeout_ms;
    handshake = core.timer()
                    .atTime(deadline)
                    .then([this, timeout_ms]() { CloseIfSilent(timeout_ms); })
                    .eagerlyEvaluate(nullptr);
  }
  ~Connection() {
    load->set_stream(nullptr);  // an in-flight call may keep `load` past this
    core.connections.fetch_sub(1, std::memory_order_relaxed);
  }

  // Resolves once capnp has let go of the connection and its last bytes (an Abort with the
  // reason, when the server closed it) had a moment to leave: they are written, the write side
  // is shut (capnp did that, after them), and what the peer still sends is read into `scratch`
  // and dropped until it closes. Closing a socket with unread input would reset it and lose them.
  kj::Promise<void> Closed(kj::ArrayPtr<kj::byte> scratch) {
    kj::Timer& timer = core.timer();
    return network.onDisconnect()
        .then([this, scratch, &timer]() {
          return stream->WhenFlushed()
              .then([this, scratch]() { return DrainUntilEof(*stream, scratch); })
              .exclusiveJoin(timer.afterDelay(limits::kRpcCloseFlushMs * kj::MILLISECONDS));
        })
        .catch_([](kj::Exception&&) {});  // a reset while draining: gone anyway
  }

  // The handshake timeout: closes the connection unless it has sent a call.
  void CloseIfSilent(int64_t timeout_ms) {
    if (guard.handshaken()) return;
    core.log().Log(LogKind::kHandshakeTimeout, "closing connections that sent no call within " +
                                                   std::to_string(timeout_ms) + " ms");
    guard.Close(
        KJ_EXCEPTION(DISCONNECTED, "no call within the server's handshake timeout", timeout_ms));
  }

  ServerCore& core;
  kj::Own<ConnectionLoad> load;
  kj::Own<BufferedIoStream> stream;
  ConnectionGuard guard;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
  kj::Promise<void> handshake = nullptr;  // closes the connection if it sends no call in time
};

// A capnp Abort message (the first and last message a refused peer gets).
kj::Array<capnp::word> AbortMessage(kj::Exception::Type type, const std::string& reason) {
  capnp::MallocMessageBuilder message(64);
  auto abort = message.initRoot<capnp::rpc::Message>().initAbort();
  abort.setReason(reason);
  abort.setType(static_cast<capnp::rpc::Exception::Type>(type));
  return capnp::messageToFlatArray(message);
}

std::string HostPart(const std::string& address) {
  const size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

class ServerImpl final : public Server, public kj::TaskSet::ErrorHandler {
 public:
  ServerImpl(Engine* engine, const ServerOptions& options, std::unique_ptr<TlsConfig> tls)
      : engine_(engine),
        options_(options),
        mailbox_(std::make_shared<Mailbox>()),
        tls_(std::move(tls)) {}

  ~ServerImpl() noexcept override { Shutdown(); }

  // Called once by Start, on the starting thread.
  Error Launch() {
    std::shared_ptr<Mailbox> mailbox = mailbox_;
    // Runs on the engine thread after each batch with new events. The posted closure only runs
    // while the mailbox is open, which implies the core is alive.
    engine_->AddEventListener(
        [mailbox, this](uint64_t) { mailbox->Post([this]() { core_->OnEvents(); }); });
    std::future<std::string> started = started_.get_future();
    thread_ = std::thread([this]() { ThreadMain(); });
    std::string error = started.get();
    if (!error.empty()) {
      thread_.join();
      return Error::Make(ErrorCode::kUnavailable, error);
    }
    return Error{};
  }

  std::string address() const override {
    return HostPart(options_.listen_address) + ":" + std::to_string(port_);
  }
  uint16_t port() const override { return port_; }
  RpcCounters Counters() const override { return counts_->Snapshot(); }

  void StopAccepting() override {
    // Runs on the RPC thread through the mailbox; waits until done. The promise lives in the
    // closure: if the closure is dropped (the server stopped meanwhile) the future is released
    // as broken and the wait ends.
    auto done = std::make_shared<std::promise<void>>();
    std::future<void> finished = done->get_future();
    const bool posted = mailbox_->Post([this, done]() {
      accept_loop_ = nullptr;
      listener_ = nullptr;
      done->set_value();
    });
    done.reset();
    if (posted) finished.wait();
  }

  void Shutdown() override {
    if (!thread_.joinable()) return;
    mailbox_->Post([this]() { stop_fulfiller_->fulfill(); });
    thread_.join();
  }

 private:
  void ThreadMain() {
    bool reported = false;
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() { Serve(&reported); })) {
      const std::string what = e->getDescription().cStr();
      if (!reported) {
        started_.set_value(what.empty() ? "rpc server failed to start" : what);
      } else {
        std::fprintf(stderr, "tokenwheel rpc: server thread failed: %s\n", what.c_str());
      }
    }
  }

  void Serve(bool* reported) {
    kj::AsyncIoContext io = kj::setupAsyncIo();
    kj::WaitScope& ws = io.waitScope;
    // On every way out (a failed start included), the loop's objects go before the loop.
    KJ_DEFER({
      accept_loop_ = nullptr;
      listener_ = nullptr;
      tasks_ = nullptr;
      core_ = nullptr;
      stop_fulfiller_ = nullptr;
      mailbox_->Close();  // stops watching its doorbell while this loop still exists
    });
    kj::Promise<void> stop = Listen(io);
    kj::Promise<void> pump =
        mailbox_->Run(*io.lowLevelProvider).eagerlyEvaluate([](kj::Exception&& e) {
          KJ_LOG(ERROR, "mailbox pump ended", e);
        });
    *reported = true;
    started_.set_value(std::string());
    stop.wait(ws);
    Stop(io, kj::mv(pump));
  }

  // Start-up, on the RPC thread: the core, the listener and the accept loop. Returns what
  // resolves at Shutdown().
  kj::Promise<void> Listen(kj::AsyncIoContext& io) {
    core_ =
        std::make_unique<ServerCore>(engine_, options_, io.provider->getTimer(), mailbox_, counts_);
    refusal_ =
        AbortMessage(kj::Exception::Type::OVERLOADED, "tokenwheel server: connection limit (" +
                                                          std::to_string(options_.connections_max) +
                                                          ") reached; try again later");
    kj::Own<kj::NetworkAddress> addr =
        io.provider->getNetwork().parseAddress(options_.listen_address).wait(io.waitScope);
    listener_ = addr->listen();
    port_ = static_cast<uint16_t>(listener_->getPort());
    WarnIfDescriptorsRunOut();
    auto stop = kj::newPromiseAndFulfiller<void>();
    stop_fulfiller_ = kj::mv(stop.fulfiller);
    tasks_ = kj::heap<kj::TaskSet>(*this);
    accept_loop_ = AcceptLoop().eagerlyEvaluate(
        [](kj::Exception&& e) { KJ_LOG(ERROR, "accept loop ended", e); });
    return kj::mv(stop.promise);
  }

  // Shutdown: no new connections; let the answers already handed over become replies and
  // flush; then drop every connection (cancelling what is still pending) and the bridge.
  void Stop(kj::AsyncIoContext& io, kj::Promise<void> pump) {
    kj::WaitScope& ws = io.waitScope;
    accept_loop_ = nullptr;
    listener_ = nullptr;
    io.provider->getTimer().afterDelay(limits::kRpcShutdownFlushMs * kj::MILLISECONDS).wait(ws);
    pump = nullptr;
    mailbox_->Close();
    core_->FailAll();
    ws.poll();
    tasks_ = nullptr;  // connections, their calls, polls (withdrawn) and subscriptions
    FreeCore(io);
  }

  // Cancellations and releases unwind as events: lets them run (bounded), then frees the core,
  // or leaks it should something still refer to it.
  void FreeCore(kj::AsyncIoContext& io) {
    kj::WaitScope& ws = io.waitScope;
    kj::Timer& timer = io.provider->getTimer();
    for (int i = 0; i < kShutdownSettleTurns && !core_->Idle(); ++i) {
      ws.poll();
      if (!core_->Idle()) timer.afterDelay(1 * kj::MILLISECONDS).wait(ws);
    }
    if (!core_->Idle()) {
      // Something still refers to the core: leaking it is safe, freeing it is not.
      KJ_LOG(ERROR, "rpc server: calls still pending at shutdown; leaking the server core");
      (void)core_.release();  // NOLINT(bugprone-unused-return-value): deliberate leak
      return;
    }
    core_ = nullptr;
  }

  // Accepts until the listener goes. accept() failing -- EMFILE / ENFILE when descriptors run
  // out, which must not end the loop for good -- is retried after a backoff, during which
  // connections wait in the listen backlog; the first accept that works resets the backoff.
  kj::Promise<void> AcceptLoop() {
    // KJ's accept() throws at once (not a rejected promise) on errors like EMFILE.
    return kj::evalNow([this]() { return listener_->accept(); })
        .then([this](kj::Own<kj::AsyncIoStream>&& stream) { return Accepted(kj::mv(stream)); },
              [this](kj::Exception&& e) { return AcceptFailed(kj::mv(e)); });
  }

  kj::Promise<void> Accepted(kj::Own<kj::AsyncIoStream> stream) {
    accept_backoff_ms_ = 0;
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() { Admit(kj::mv(stream)); })) {
      core_->log().Log(LogKind::kConnectionError, std::string("setting up a connection failed: ") +
                                                      e->getDescription().cStr());
    }
    return AcceptLoop();
  }

  kj::Promise<void> AcceptFailed(kj::Exception&& e) {
    accept_backoff_ms_ = accept_backoff_ms_ == 0
                             ? limits::kRpcAcceptBackoffMsMin
                             : std::min(2 * accept_backoff_ms_, limits::kRpcAcceptBackoffMsMax);
    core_->log().Log(LogKind::kAcceptFailed, std::string("accepting connections failed (") +
                                                 e.getDescription().cStr() + "); retrying within " +
                                                 std::to_string(limits::kRpcAcceptBackoffMsMax) +
                                                 " ms");
    return core_->timer().afterDelay(accept_backoff_ms_ * kj::MILLISECONDS).then([this]() {
      return AcceptLoop();
    });
  }

  // A new connection, or a refusal past connections_max. A connection lives in tasks_ until it
  // has closed and had its last bytes flushed (Connection::Closed).
  void Admit(kj::Own<kj::AsyncIoStream> stream) {
    if (core_->connections.load(std::memory_order_relaxed) >= options_.connections_max) {
      Refuse(kj::mv(stream));
      return;
    }
    const kj::TimePoint deadline =
        core_->timer().now() + options_.handshake_timeout_ms * kj::MILLISECONDS;
    if (tls_ != nullptr) {
      TlsHandshake(kj::mv(stream), deadline);
      return;
    }
    ServeConnection(kj::mv(stream), deadline);
  }

  // TLS: the handshake first, bounded by the connection's handshake deadline, while holding a
  // connection slot (so that a flood of handshakes is bounded by connections_max); then the
  // connection on the decrypted stream, with what is left of the deadline.
  void TlsHandshake(kj::Own<kj::AsyncIoStream> stream, kj::TimePoint deadline) {
    core_->connections.fetch_add(1, std::memory_order_relaxed);
    const int64_t timeout_ms = options_.handshake_timeout_ms;
    auto handshake =
        tls_->context()
            .wrapServer(kj::mv(stream))
            .exclusiveJoin(
                core_->timer().atTime(deadline).then([timeout_ms]() -> kj::Own<kj::AsyncIoStream> {
                  kj::throwFatalException(KJ_EXCEPTION(
                      DISCONNECTED, "TLS handshake not finished within the handshake timeout",
                      timeout_ms));
                }))
            .then(
                [this, deadline](kj::Own<kj::AsyncIoStream>&& tls_stream) {
                  ServeConnection(kj::mv(tls_stream), deadline);
                },
                [this](kj::Exception&& e) {
                  core_->log().Log(LogKind::kTlsHandshake,
                                   std::string("closing a connection: TLS handshake failed: ") +
                                       e.getDescription().cStr());
                })
            .attach(kj::defer(
                [this]() { core_->connections.fetch_sub(1, std::memory_order_relaxed); }));
    tasks_->add(kj::mv(handshake));
  }

  void ServeConnection(kj::Own<kj::AsyncIoStream> stream, kj::TimePoint deadline) {
    auto conn = kj::heap<Connection>(kj::mv(stream), *core_, deadline);
    auto scratch = kj::heapArray<kj::byte>(4096);
    kj::Promise<void> closed = conn->Closed(scratch);
    tasks_->add(closed.attach(kj::mv(conn), kj::mv(scratch)));
  }

  // Over connections_max: the peer gets an Abort saying why (a capnp client reports it as its
  // error), then the socket closes. Bounded: at most kRpcRefusalsInProgressMax at a time, each
  // for at most kRpcRefusalLingerMs; past that a refused socket is closed at once. A TLS peer
  // could not read a plain Abort: its socket is closed at once.
  void Refuse(kj::Own<kj::AsyncIoStream> stream) {
    core_->log().Log(LogKind::kConnectionLimit, "connection limit (" +
                                                    std::to_string(options_.connections_max) +
                                                    ") reached: refusing new connections");
    if (tls_ != nullptr || refusals_ >= limits::kRpcRefusalsInProgressMax) return;
    ++refusals_;
    kj::AsyncIoStream& s = *stream;
    auto buffer = kj::heapArray<kj::byte>(4096);
    kj::ArrayPtr<kj::byte> scratch = buffer;
    kj::ArrayPtr<const kj::byte> abort = refusal_.asBytes();
    auto refusal =
        s.write(abort.begin(), abort.size())
            .then([&s, scratch]() {
              s.shutdownWrite();
              return DrainUntilEof(s, scratch);
            })
            .exclusiveJoin(
                core_->timer().afterDelay(limits::kRpcRefusalLingerMs * kj::MILLISECONDS))
            .attach(kj::mv(stream), kj::mv(buffer), kj::defer([this]() { --refusals_; }));
    tasks_->add(kj::mv(refusal));
  }

  // connections_max connections need as many descriptors, besides the store's.
  void WarnIfDescriptorsRunOut() const {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return;
    if (options_.connections_max < limit.rlim_cur) return;
    core_->log().Emit("connections_max (" + std::to_string(options_.connections_max) +
                      ") is not below the open-files limit (" + std::to_string(limit.rlim_cur) +
                      "): descriptors can run out first (accept then backs off and retries); "
                      "raise the limit (RaiseOpenFilesLimit) or lower connections_max");
  }

  void taskFailed(kj::Exception&& e) override {
    if (e.getType() != kj::Exception::Type::DISCONNECTED) {
      core_->log().Log(
          LogKind::kConnectionError,
          std::string("a connection ended with an error: ") + e.getDescription().cStr());
    }
  }

  Engine* const engine_;
  const ServerOptions options_;
  const std::shared_ptr<Mailbox> mailbox_;
  const std::shared_ptr<CallCounts> counts_ = std::make_shared<CallCounts>();  // any thread
  const std::unique_ptr<TlsConfig> tls_;                                       // null: plain TCP
  std::promise<std::string> started_;  // empty string: listening
  std::thread thread_;
  std::atomic<uint16_t> port_{0};

  // RPC thread only.
  std::unique_ptr<ServerCore> core_;
  kj::Array<capnp::word> refusal_;  // the Abort a refused connection gets
  size_t refusals_ = 0;             // refusals in progress (Refuse)
  int64_t accept_backoff_ms_ = 0;   // 0: the last accept worked
  kj::Own<kj::ConnectionReceiver> listener_;
  kj::Promise<void> accept_loop_ = nullptr;
  kj::Own<kj::TaskSet> tasks_;
  kj::Own<kj::PromiseFulfiller<void>> stop_fulfiller_;
};

}  // namespace

Result<uint64_t> RaiseOpenFilesLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return Result<uint64_t>::Fail(Error::Make(
        ErrorCode::kInternal, std::string("getrlimit(RLIMIT_NOFILE): ") + std::strerror(errno)));
  }
  if (limit.rlim_cur != limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) != 0) {
      return Result<uint64_t>::Fail(Error::Make(
          ErrorCode::kInternal, "setrlimit(RLIMIT_NOFILE) to the hard limit " +
                                    std::to_string(limit.rlim_max) + ": " + std::strerror(errno)));
    }
    limit = raised;
  }
  return Result<uint64_t>::Ok(static_cast<uint64_t>(limit.rlim_cur));
}

Result<std::unique_ptr<Server>> Server::Start(Engine* engine, const ServerOptions& options) {
  TW_ASSERT(engine != nullptr);
  if (options.max_poll_seconds == 0 || options.max_poll_seconds > limits::kPollSecondsMax) {
    return Result<std::unique_ptr<Server>>::Fail(
        Error::Make(ErrorCode::kValidation,
                    "max_poll_seconds must be 1.." + std::to_string(limits::kPollSecondsMax)));
  }
  if (options.connections_max == 0 || options.calls_in_flight_max == 0 ||
      options.handshake_timeout_ms <= 0 || options.log_interval_ms < 0) {
    return Result<std::unique_ptr<Server>>::Fail(Error::Make(
        ErrorCode::kValidation,
        "connections_max, calls_in_flight_max and handshake_timeout_ms must be positive, "
        "log_interval_ms not negative"));
  }
  // A peer that closes early must not kill the process with SIGPIPE.
  struct sigaction old_action {};
  if (sigaction(SIGPIPE, nullptr, &old_action) == 0 && old_action.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
  std::unique_ptr<TlsConfig> tls;
  if (!options.tls_cert_file.empty() || !options.tls_key_file.empty() ||
      !options.tls_client_ca_file.empty()) {
    auto made = TlsConfig::ForServer(options.tls_cert_file, options.tls_key_file,
                                     options.tls_client_ca_file);
    if (!made.ok()) return Result<std::unique_ptr<Server>>::Fail(std::move(made.error));
    tls = std::move(made.value);
  }
  auto server = std::make_unique<ServerImpl>(engine, options, std::move(tls));
  Error e = server->Launch();
  if (!e.ok()) return Result<std::unique_ptr<Server>>::Fail(std::move(e));
  return Result<std::unique_ptr<Server>>::Ok(std::move(server));
}

}  // namespace tw::rpc
