// The Cap'n Proto server. Layout:
//   RateLimitedLog    the server's log lines, at most one per kind of event per interval.
//   ConnectionLoad    what one connection has asked and not been answered (the per-connection
//                     bounds of server.h "Limits").
//   ConnectionGuard   the connection's capnp message stream: counts questions and answers by
//                     reading each message's kind, pauses reading at the bounds, closes.
//   ServerCore        the KJ-thread state shared by all connections: the engine bridge (pending
//                     calls by id, waiting polls), the new-events broadcast, counters, the
//                     global bounds (calls in flight, unwritten reply bytes).
//   TokenWheelImpl    the TokenWheel interface, one per connection: read params, call the
//                     engine through the core, fill results.
//   SubscriptionImpl  one outcome-stream subscription and its delivery loop.
//   ServerImpl        the RPC thread: listener, connections, start-up and shutdown.
// GCC (12, -O1 and up) reports a false "may be used uninitialized" inside kj::Maybe<MessageSize>
// when capnp's getResults() / newCall() copy their defaulted (null) size hint. Silenced for this
// file only; it must precede the capnp includes, where the warning is located.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

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
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <future>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/assert.h"
#include "rpc/bridge.h"
#include "rpc/buffered_stream.h"
#include "rpc/convert.h"
#include "rpc/mailbox.h"
#include "rpc/tokenwheel.capnp.h"

namespace tw::rpc {
namespace {

// Poll ids name a wait across every front end of one engine (rpc/bridge.h); this one owns the
// ids with this tag in the top byte (the AWS gateway's is 0x02).
constexpr uint8_t kPollIdTag = 0x01;

// Event-loop turns (of >= 1 ms) that shutdown waits for cancelled calls to unwind.
constexpr int kShutdownSettleTurns = 1000;

// The ordinals of the TokenWheel methods whose answers carry a task's payloads
// (rpc/tokenwheel.capnp; an ordinal never changes, it is the wire format).
constexpr uint16_t kListActivitiesMethod = 5;
constexpr uint16_t kDescribeTaskMethod = 16;

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

[[noreturn]] void ThrowLogistics(const Error& e) { kj::throwFatalException(ToException(e)); }

// First-segment size hints for results: without one capnp starts every message with an 8 KiB
// segment, which costs more in malloc than the small replies themselves.
capnp::MessageSize ResultWords(size_t payload_bytes, size_t items = 1) {
  return capnp::MessageSize{payload_bytes / sizeof(capnp::word) + 24 * items, 0};
}
constexpr capnp::MessageSize kSmallResult{32, 0};

void CheckBatch(size_t items) {
  if (items > limits::kRpcBatchItemsMax) {
    kj::throwFatalException(KJ_EXCEPTION(FAILED, "batch too long", items,
                                         static_cast<uint64_t>(limits::kRpcBatchItemsMax)));
  }
}

// Fills `out` (a result struct with an `error` arm) with e, or throws for logistics codes.
template <typename Builder>
void AnswerError(const Error& e, Builder out) {
  if (IsLogisticsError(e.code)) ThrowLogistics(e);
  FillError(e, out.initError());
}

// A batch item carries overloaded too as a value; internal still throws.
template <typename Builder>
void AnswerItemError(const Error& e, Builder out) {
  if (e.code == ErrorCode::kInternal) ThrowLogistics(e);
  FillError(e, out.initError());
}

// ---------------------------------------------------------------------------------------------

enum class LogKind : size_t {
  kConnectionLimit,   // a connection refused at connections_max
  kAcceptFailed,      // accept() failed (EMFILE, ENFILE, ...)
  kHandshakeTimeout,  // a connection closed for sending no call
  kQuestionsLimit,    // a connection closed for too many unfinished questions
  kOverloaded,        // single calls refused at calls_in_flight_max
  kPollShed,          // a task not handed to a connection that does not read its replies
  kConnectionError,   // a connection ended with an error other than a disconnect
  kCount,
};

// The server's log: at most one line per kind of event per interval, so that a flood of
// refusals cannot flood the log; the next line of a kind says how many were left out.
// RPC thread only.
class RateLimitedLog {
 public:
  explicit RateLimitedLog(const ServerOptions& options)
      : sink_(options.log),
        clock_(options.clock != nullptr ? options.clock : &system_clock_),
        interval_ms_(options.log_interval_ms) {}

  void Log(LogKind kind, const std::string& line) {
    TW_ASSERT(kind < LogKind::kCount);
    Kind& k = kinds_[static_cast<size_t>(kind)];
    const int64_t now_ms = clock_->NowMs();
    if (k.logged && now_ms - k.last_ms < interval_ms_) {
      ++k.left_out;
      return;
    }
    std::string out = line;
    if (k.left_out > 0) {
      out += " (and " + std::to_string(k.left_out) + " more since the last such line)";
    }
    k = Kind{true, now_ms, 0};
    Emit(out);
  }

  // Not rate-limited: for one-off lines.
  void Emit(const std::string& line) const {
    if (sink_) {
      sink_(line);
    } else {
      std::fprintf(stderr, "tokenwheel rpc: %s\n", line.c_str());
    }
  }

 private:
  struct Kind {
    bool logged = false;
    int64_t last_ms = 0;
    uint64_t left_out = 0;
  };
  const std::function<void(const std::string&)> sink_;
  SystemClock system_clock_;
  const Clock* const clock_;
  const int64_t interval_ms_;
  std::array<Kind, static_cast<size_t>(LogKind::kCount)> kinds_{};
};

// What one connection has asked and not yet been answered, against the per-connection bounds
// (server.h, "Limits"). Shared by the connection's ConnectionGuard (questions, calls, payload
// calls: counted from the messages) and its TokenWheelImpl (batch items, long polls).
// Refcounted because capnp keeps the TokenWheelImpl alive until its calls' promises end, which
// may be after the connection is gone. KJ thread only.
// Invariants:
//  1. payload_ids_ holds the answer ids of the unanswered describeTask / listActivities calls,
//     so its size is their number (<= kRpcConnectionPayloadCallsMax: reading pauses there).
//  2. polls_ counts getActivityTask calls from their start to their end; each is also in
//     calls_ from its Call message to its Return, a slightly longer span.
//  3. A paused read (WhenRoom) is woken whenever a count that Full() reads goes down.
class ConnectionLoad final : public kj::Refcounted {
 public:
  // True while the connection must not be read: backpressure. Waiting long polls are calls
  // too, but not counted here (they have their own bound, which refuses instead).
  bool Full() const {
    return calls_ - std::min(polls_, calls_) >= limits::kRpcConnectionCallsMax ||
           payload_ids_.size() >= limits::kRpcConnectionPayloadCallsMax ||
           batch_items_ >= limits::kRpcConnectionBatchItemsMax;
  }
  // Resolves once !Full().
  kj::Promise<void> WhenRoom() {
    if (!Full()) return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();
    waiter_ = kj::mv(paf.fulfiller);  // one read at a time
    return paf.promise.then([this]() { return WhenRoom(); });
  }

  // Message level: a Bootstrap or Call arrived (question `id`; `payload`: a describeTask or
  // listActivities call), a Return left for answer `id`, a Finish arrived.
  void Asked(uint32_t id, bool payload) {
    ++calls_;
    ++questions_;
    if (payload) payload_ids_.add(id);
  }
  void Answered(uint32_t id) {
    // capnp sends exactly one Return per question it received; stay safe should it not.
    if (calls_ > 0) --calls_;
    for (size_t i = 0; i < payload_ids_.size(); ++i) {
      if (payload_ids_[i] == id) {
        payload_ids_[i] = payload_ids_.back();
        payload_ids_.removeLast();
        break;
      }
    }
    Wake();
  }
  void Finished() {
    // A Finish for a question that does not exist makes capnp end the connection.
    if (questions_ > 0) --questions_;
  }
  size_t questions() const { return questions_; }
  size_t calls() const { return calls_; }

  // TokenWheelImpl: a long poll, from its start to its end.
  size_t polls() const { return polls_; }
  void PollStarted() { ++polls_; }
  void PollEnded() {
    TW_ASSERT(polls_ > 0);
    --polls_;  // its Return, which takes it out of calls_, follows (and wakes)
  }

  // TokenWheelImpl: the items of a batch call, from its start to its end.
  void BatchStarted(size_t items) { batch_items_ += items; }
  void BatchEnded(size_t items) {
    TW_ASSERT(items <= batch_items_);
    batch_items_ -= items;
    Wake();
  }

  // Reply bytes on the connection's socket not yet written; 0 once the connection is gone.
  size_t UnwrittenReplyBytes() const { return stream_ == nullptr ? 0 : stream_->unwritten_bytes(); }
  void set_stream(BufferedIoStream* stream) { stream_ = stream; }

 private:
  void Wake() {
    KJ_IF_MAYBE (waiter, waiter_) {
      (*waiter)->fulfill();
      waiter_ = nullptr;
    }
  }

  size_t calls_ = 0;                  // Bootstrap / Call received, Return not yet sent
  size_t questions_ = 0;              // Bootstrap / Call received, Finish not yet received
  kj::Vector<uint32_t> payload_ids_;  // invariant 1
  size_t batch_items_ = 0;
  size_t polls_ = 0;  // getActivityTask calls in progress (counted in calls_ as well)
  BufferedIoStream* stream_ = nullptr;  // owned by the Connection, which clears this
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> waiter_;
};

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
        const bool payload = call.getInterfaceId() == capnp::typeId<proto::TokenWheel>() &&
                             (call.getMethodId() == kDescribeTaskMethod ||
                              call.getMethodId() == kListActivitiesMethod);
        Ask(call.getQuestionId(), payload);
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

class ServerCore;

// One outstanding engine call, waiting for its answer on the KJ thread.
class SlotBase {
 public:
  virtual ~SlotBase() noexcept(false) = default;  // kj::Own members may throw
  virtual void Reject(kj::Exception&& e) = 0;
};

template <typename T>
class Slot final : public SlotBase {
 public:
  explicit Slot(kj::Own<kj::PromiseFulfiller<Result<T>>> f) : fulfiller(kj::mv(f)) {}
  void Reject(kj::Exception&& e) override { fulfiller->reject(kj::mv(e)); }
  kj::Own<kj::PromiseFulfiller<Result<T>>> fulfiller;
};

// A batch call: one slot collecting `results.size()` answers.
template <typename T>
class BatchSlot final : public SlotBase {
 public:
  BatchSlot(kj::Own<kj::PromiseFulfiller<std::vector<Result<T>>>> f, size_t n)
      : fulfiller(kj::mv(f)), results(n), remaining(n) {}
  void Reject(kj::Exception&& e) override { fulfiller->reject(kj::mv(e)); }
  kj::Own<kj::PromiseFulfiller<std::vector<Result<T>>>> fulfiller;
  std::vector<Result<T>> results;
  std::vector<bool> filled = std::vector<bool>(results.size(), false);
  size_t remaining;
};

// A waiting getActivityTask call. Owned by the call's promise; destroyed when the call ends,
// normally or by cancellation.
class PollState {
 public:
  PollState(ServerCore& core, uint64_t poll_id,
            kj::Own<kj::PromiseFulfiller<Result<GetActivityTaskReply>>> fulfiller);
  ~PollState();
  PollState(const PollState&) = delete;
  PollState& operator=(const PollState&) = delete;

  // The engine's answer arrived (KJ thread). Holds the token until Delivered().
  void Answer(Result<GetActivityTaskReply> r);
  // The token is in the call's results: from here on its fate is the transport's.
  void Delivered() { held_token_.clear(); }
  // Server shutdown: fail the call if it is still waiting (the destructor then withdraws it).
  void Abort() {
    if (!answered_) fulfiller_->reject(KJ_EXCEPTION(DISCONNECTED, "server shutting down"));
  }

 private:
  ServerCore& core_;
  const uint64_t poll_id_;
  kj::Own<kj::PromiseFulfiller<Result<GetActivityTaskReply>>> fulfiller_;
  bool answered_ = false;
  std::string held_token_;  // a task handed to this call, not yet put in its results
};

// The KJ thread's side of the bridge to the engine (rpc/bridge.h): a call's answer fulfills a
// promise, which the caller may drop (a cancelled call) before the answer comes.
class ServerCore {
 public:
  ServerCore(Engine* engine, const ServerOptions& options, kj::Timer& timer,
             std::shared_ptr<Mailbox> mailbox)
      : options_(options),
        timer_(timer),
        bridge_(
            engine, std::move(mailbox),
            [this](std::function<void()> fn) {
              uncork_ = kj::evalLast(kj::mv(fn)).eagerlyEvaluate(nullptr);
            },
            options.calls_in_flight_max, limits::kRpcPayloadCallsInFlightMax, kPollIdTag),
        log_(options),
        reply_backlog_(limits::kRpcReplyBytesGlobalHigh) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    events_fork_ = paf.promise.fork();
    events_fulfiller_ = kj::mv(paf.fulfiller);
  }
  ~ServerCore() {
    // Every call promise (and so every slot and poll) belongs to a connection, and the
    // connections (and their streams) are gone by now.
    TW_ASSERT(calls_.empty());
    TW_ASSERT(polls_.empty());
    TW_ASSERT(reply_backlog_.bytes() == 0);
  }

  Engine* engine() { return bridge_.engine(); }
  Bridge& bridge() { return bridge_; }
  const ServerOptions& options() const { return options_; }
  kj::Timer& timer() { return timer_; }
  RateLimitedLog& log() { return log_; }
  // Unwritten reply bytes of every connection (each one's BufferedIoStream counts itself).
  SharedWriteBacklog& reply_backlog() { return reply_backlog_; }

  // Calls the engine: `start(callback)` issues the engine method; the promise resolves with its
  // answer on this thread. Dropping the promise abandons the answer. Past the bridge's bounds
  // (see Admission) it throws OVERLOADED instead, without calling `start`.
  template <typename T, typename StartFn>
  kj::Promise<Result<T>> Call(StartFn&& start, Admission admission = Admission::kBounded) {
    Admit(admission);
    const uint64_t id = next_call_id_++;
    auto paf = kj::newPromiseAndFulfiller<Result<T>>();
    calls_.emplace(id, kj::heap<Slot<T>>(kj::mv(paf.fulfiller)));
    bridge_.Start<T>(
        std::forward<StartFn>(start), [this, id](Result<T> r) { Deliver<T>(id, std::move(r)); },
        admission);
    return paf.promise.attach(kj::defer([this, id]() { calls_.erase(id); }));
  }

  // `n` engine calls answered together: start(i, callback) issues item i.
  template <typename T, typename StartFn>
  kj::Promise<std::vector<Result<T>>> CallBatch(size_t n, StartFn&& start) {
    if (n == 0) return std::vector<Result<T>>();
    const uint64_t id = next_call_id_++;
    auto paf = kj::newPromiseAndFulfiller<std::vector<Result<T>>>();
    calls_.emplace(id, kj::heap<BatchSlot<T>>(kj::mv(paf.fulfiller), n));
    for (size_t i = 0; i < n; ++i) {
      bridge_.Start<T>([&](Callback<T> cb) { start(i, std::move(cb)); },
                       [this, id, i](Result<T> r) { DeliverItem<T>(id, i, std::move(r)); },
                       Admission::kAlways);
    }
    return paf.promise.attach(kj::defer([this, id]() { calls_.erase(id); }));
  }

  // A long poll; see server.h.
  // The caller must keep *state_out alive until it is done with the answer (attach it after its
  // continuation: a continuation's input promise is dropped before the continuation runs).
  kj::Promise<Result<GetActivityTaskReply>> Poll(GetActivityTaskRequest req, uint32_t wait_s,
                                                 kj::Own<PollState>* state_out);

  // Engine wake-ups: the bridge corks this thread for a burst of events, and kj::evalLast ends
  // the burst (rpc/bridge.h). evalLast runs once every event queued so far, and every event
  // those queue, has run (except later evalLasts: the write coalescing of
  // rpc/buffered_stream.h may write(2) first); the loop looks for new I/O only after that, so a
  // held command waits for the rest of its burst, never for new input. Work that blocks this
  // thread (a subscription's store read) uncorks first.
  void Uncork() { bridge_.Uncork(); }

  // Resolves at the next notice of new durable events.
  kj::Promise<void> WaitForEvents() { return events_fork_.addBranch(); }
  void OnEvents() {
    events_fulfiller_->fulfill();
    auto paf = kj::newPromiseAndFulfiller<void>();
    events_fork_ = paf.promise.fork();
    events_fulfiller_ = kj::mv(paf.fulfiller);
  }

  void ForgetPoll(uint64_t poll_id) { polls_.erase(poll_id); }

  size_t calls_in_flight() const { return bridge_.calls_in_flight(); }

  // Shutdown: every call still waiting for the engine fails (DISCONNECTED).
  void FailAll() {
    auto calls = std::move(calls_);
    calls_.clear();
    for (auto& [id, slot] : calls) slot->Reject(KJ_EXCEPTION(DISCONNECTED, "server shutting down"));
    auto polls = polls_;  // Abort does not touch polls_, but stay safe against it
    for (auto& [id, poll] : polls) poll->Abort();
  }
  // Nothing left that points at the core.
  bool Idle() const {
    return calls_.empty() && polls_.empty() && subscriptions.load(std::memory_order_relaxed) == 0 &&
           connections.load(std::memory_order_relaxed) == 0;
  }

  std::atomic<uint64_t> connections{0};
  std::atomic<uint64_t> subscriptions{0};
  Mailbox& mailbox() { return bridge_.mailbox(); }

 private:
  // Past the bridge's bounds a single call is refused OVERLOADED at once.
  void Admit(Admission admission) {
    if (bridge_.Admit(admission)) return;
    log_.Log(LogKind::kOverloaded,
             "overloaded: refusing single calls at " + std::to_string(bridge_.calls_in_flight()) +
                 " engine calls in flight (" + std::to_string(bridge_.payload_calls_in_flight()) +
                 " describeTask / listActivities)");
    kj::throwFatalException(
        KJ_EXCEPTION(OVERLOADED, "server overloaded: too many calls in flight; retry later",
                     bridge_.calls_in_flight(), bridge_.payload_calls_in_flight()));
  }

  template <typename T>
  void Deliver(uint64_t id, Result<T> r) {
    auto it = calls_.find(id);
    if (it == calls_.end()) return;  // the caller went away; the engine did the work anyway
    kj::Own<SlotBase> slot = kj::mv(it->second);
    calls_.erase(it);
    static_cast<Slot<T>*>(slot.get())->fulfiller->fulfill(kj::mv(r));
  }

  template <typename T>
  void DeliverItem(uint64_t id, size_t index, Result<T> r) {
    auto it = calls_.find(id);
    if (it == calls_.end()) return;
    auto* slot = static_cast<BatchSlot<T>*>(it->second.get());
    TW_ASSERT(index < slot->results.size());
    TW_ASSERT(!slot->filled[index]);  // the engine answers each command once
    slot->filled[index] = true;
    slot->results[index] = std::move(r);
    if (--slot->remaining > 0) return;
    kj::Own<SlotBase> owned = kj::mv(it->second);
    calls_.erase(it);
    slot->fulfiller->fulfill(kj::mv(slot->results));
  }

  // False when the call is gone (cancelled, disconnected): the bridge then returns a task the
  // engine handed it to the head of its queue.
  bool DeliverPoll(uint64_t poll_id, Result<GetActivityTaskReply> r) {
    auto it = polls_.find(poll_id);
    if (it == polls_.end()) return false;
    PollState* state = it->second;
    polls_.erase(it);
    state->Answer(std::move(r));
    return true;
  }

  const ServerOptions options_;
  kj::Timer& timer_;
  kj::Promise<void> uncork_ = nullptr;  // the evalLast that ends a burst (before bridge_)
  Bridge bridge_;
  uint64_t next_call_id_ = 1;
  RateLimitedLog log_;
  SharedWriteBacklog reply_backlog_;
  std::unordered_map<uint64_t, kj::Own<SlotBase>> calls_;
  std::unordered_map<uint64_t, PollState*> polls_;  // PollState removes itself
  kj::ForkedPromise<void> events_fork_ = nullptr;
  kj::Own<kj::PromiseFulfiller<void>> events_fulfiller_;
};

PollState::PollState(ServerCore& core, uint64_t poll_id,
                     kj::Own<kj::PromiseFulfiller<Result<GetActivityTaskReply>>> fulfiller)
    : core_(core), poll_id_(poll_id), fulfiller_(kj::mv(fulfiller)) {}

PollState::~PollState() {
  core_.ForgetPoll(poll_id_);
  if (!answered_) {
    // Still waiting in the engine: withdraw. Should a task already be on its way, DeliverPoll
    // finds no poll and returns the task.
    core_.engine()->WithdrawPoll(poll_id_);
  } else if (!held_token_.empty()) {
    // Answered with a task that never made it into the results.
    core_.engine()->ReturnTask(std::move(held_token_));
  }
}

void PollState::Answer(Result<GetActivityTaskReply> r) {
  TW_ASSERT(!answered_);
  answered_ = true;
  if (r.ok()) held_token_ = r.value.token;
  fulfiller_->fulfill(kj::mv(r));
}

kj::Promise<Result<GetActivityTaskReply>> ServerCore::Poll(GetActivityTaskRequest req,
                                                           uint32_t wait_s,
                                                           kj::Own<PollState>* state_out) {
  const uint64_t poll_id = bridge_.NextPollId();
  auto paf = kj::newPromiseAndFulfiller<Result<GetActivityTaskReply>>();
  auto state = kj::heap<PollState>(*this, poll_id, kj::mv(paf.fulfiller));
  polls_.emplace(poll_id, state.get());
  *state_out = kj::mv(state);
  bridge_.Poll(std::move(req), poll_id, [this, poll_id](Result<GetActivityTaskReply> r) {
    return DeliverPoll(poll_id, std::move(r));
  });
  // When the wait runs out, withdraw and keep waiting for the engine's answer: empty, or a task
  // that raced with the withdrawal (which this caller then gets, rather than losing it).
  kj::Promise<Result<GetActivityTaskReply>> timeout =
      timer_.afterDelay(wait_s * kj::SECONDS)
          .then([this, poll_id]() -> kj::Promise<Result<GetActivityTaskReply>> {
            bridge_.Withdraw(poll_id);
            return kj::NEVER_DONE;
          });
  return paf.promise.exclusiveJoin(kj::mv(timeout));
}

// ---------------------------------------------------------------------------------------------

class SubscriptionImpl final : public proto::Subscription::Server {
 public:
  SubscriptionImpl(ServerCore& core, uint64_t start_seq, proto::EventSink::Client sink)
      : core_(core), next_seq_(start_seq), sink_(kj::mv(sink)) {
    core_.subscriptions.fetch_add(1, std::memory_order_relaxed);
    // Start on a later turn: the subscribe call's results go out first.
    task_ = kj::evalLater([this]() { return Loop(); })
                .catch_([this](kj::Exception&& e) -> kj::Promise<void> {
                  if (e.getType() == kj::Exception::Type::DISCONNECTED) return kj::READY_NOW;
                  // Tell the subscriber why its stream stopped (best effort).
                  auto request = sink_.endedRequest();
                  request.setReason(e.getDescription());
                  return request.send().ignoreResult();
                })
                .eagerlyEvaluate([](kj::Exception&& e) {
                  if (e.getType() != kj::Exception::Type::DISCONNECTED) {
                    KJ_LOG(WARNING, "subscription ended", e);
                  }
                });
  }
  ~SubscriptionImpl() { core_.subscriptions.fetch_sub(1, std::memory_order_relaxed); }

  kj::Promise<void> nextSequence(NextSequenceContext context) override {
    context.getResults().setSequence(next_seq_);
    return kj::READY_NOW;
  }

 private:
  kj::Promise<void> Loop() {
    // A store read on this thread follows: commands held for this burst go to the engine first.
    core_.Uncork();
    bool trimmed = false;
    Result<std::vector<OutcomeEvent>> read =
        ReadEventRun(core_.engine(), next_seq_, limits::kEventsPerReadMax,
                     limits::kEventsReadBytesMax, &trimmed);
    if (!read.ok()) {
      // Tell the subscriber why (a storage failure, say): it resubscribes from its cursor.
      return KJ_EXCEPTION(FAILED, "reading events failed", read.error.message.c_str());
    }
    std::vector<OutcomeEvent> events = std::move(read.value);
    if (events.empty()) {
      if (trimmed) {
        // Durable but not readable: trimmed (the consumer was deleted meanwhile).
        return KJ_EXCEPTION(FAILED, "events are no longer kept", next_seq_);
      }
      return core_.WaitForEvents().then([this]() { return Loop(); });
    }
    next_seq_ = events.back().seq + 1;
    return Send(std::make_shared<std::vector<OutcomeEvent>>(std::move(events)), 0).then([this]() {
      return Loop();
    });
  }

  // Sends events[from..] in messages of at most kRpcEventChunkBytesMax, each after the stream's
  // flow control allows it.
  kj::Promise<void> Send(std::shared_ptr<std::vector<OutcomeEvent>> events, size_t from) {
    if (from == events->size()) return kj::READY_NOW;
    size_t end = from;
    size_t bytes = 0;
    while (end < events->size()) {
      const size_t b = EventWireBytes((*events)[end]);
      if (end > from && bytes + b > limits::kRpcEventChunkBytesMax) break;
      bytes += b;
      ++end;
    }
    auto request = sink_.eventsRequest(capnp::MessageSize{bytes / sizeof(capnp::word) + 64, 0});
    auto list = request.initEvents(static_cast<unsigned>(end - from));
    for (size_t i = from; i < end; ++i) FillEvent((*events)[i], list[i - from]);
    return request.send().then(
        [this, events = std::move(events), end]() mutable { return Send(std::move(events), end); });
  }

  ServerCore& core_;
  uint64_t next_seq_;
  proto::EventSink::Client sink_;
  kj::Promise<void> task_ = nullptr;
};

// ---------------------------------------------------------------------------------------------

class TokenWheelImpl final : public proto::TokenWheel::Server {
 public:
  TokenWheelImpl(ServerCore& core, kj::Own<ConnectionLoad> load)
      : core_(core), load_(kj::mv(load)) {}

  kj::Promise<void> ping(PingContext context) override {
    auto payload = context.getParams().getPayload();
    auto out = context.getResults(ResultWords(payload.size()));
    out.setPayload(payload);
    // Only while failed: a health check then learns why, and the echo stays an echo.
    const StorageHealth health = core_.engine()->Health();
    if (!health.ok) FillStorageHealth(health, out.initStorage());
    return kj::READY_NOW;
  }

  kj::Promise<void> getInfo(GetInfoContext context) override {
    auto out = context.getResults();
    out.setApiVersion(proto::API_VERSION);
    out.setServerVersion(AsText(core_.options().server_version));
    out.setMaxPollSeconds(core_.options().max_poll_seconds);
    out.setRequestBytesMax(limits::kRequestBytesMax);
    out.setBatchItemsMax(static_cast<uint32_t>(limits::kRpcBatchItemsMax));
    return kj::READY_NOW;
  }

  // ---- Activities ----

  kj::Promise<void> createActivity(CreateActivityContext context) override {
    CreateActivityRequest req{ToString(context.getParams().getName())};
    Engine* engine = core_.engine();
    return core_
        .Call<ActivityInfo>([&](Callback<ActivityInfo> cb) {
          engine->CreateActivity(std::move(req), std::move(cb));
        })
        .then([context](Result<ActivityInfo> r) mutable {
          AnswerActivity(r, context.getResults(kSmallResult).initResult());
        });
  }

  kj::Promise<void> deleteActivity(DeleteActivityContext context) override {
    DeleteActivityRequest req{ToString(context.getParams().getActivityArn())};
    Engine* engine = core_.engine();
    return core_
        .Call<Empty>(
            [&](Callback<Empty> cb) { engine->DeleteActivity(std::move(req), std::move(cb)); })
        .then([context](Result<Empty> r) mutable {
          AnswerEmpty(r, context.getResults(kSmallResult).initResult());
        });
  }

  kj::Promise<void> describeActivity(DescribeActivityContext context) override {
    DescribeActivityRequest req{ToString(context.getParams().getActivityArn())};
    Engine* engine = core_.engine();
    return core_
        .Call<ActivityInfo>([&](Callback<ActivityInfo> cb) {
          engine->DescribeActivity(std::move(req), std::move(cb));
        })
        .then([context](Result<ActivityInfo> r) mutable {
          AnswerActivity(r, context.getResults(kSmallResult).initResult());
        });
  }

  kj::Promise<void> listActivities(ListActivitiesContext context) override {
    auto params = context.getParams();
    ListActivitiesRequest req;
    req.max_results = params.getMaxResults();
    req.next_token = ToString(params.getNextToken());
    Engine* engine = core_.engine();
    return core_
        .Call<ListActivitiesReply>(
            [&](Callback<ListActivitiesReply> cb) {
              engine->ListActivities(std::move(req), std::move(cb));
            },
            Admission::kPayload)
        .then([context](Result<ListActivitiesReply> r) mutable {
          auto out = context.getResults().initResult();
          if (!r.ok()) return AnswerError(r.error, out);
          auto ok = out.initOk();
          auto list = ok.initActivities(static_cast<unsigned>(r.value.activities.size()));
          for (unsigned i = 0; i < list.size(); ++i) FillActivity(r.value.activities[i], list[i]);
          ok.setNextToken(AsText(r.value.next_token));
        });
  }

  // ---- Tasks ----

  kj::Promise<void> issueTask(IssueTaskContext context) override {
    IssueTaskRequest req = ReadIssueRequest(context.getParams().getRequest());
    context.releaseParams();
    Engine* engine = core_.engine();
    return core_
        .Call<IssueTaskReply>(
            [&](Callback<IssueTaskReply> cb) { engine->IssueTask(std::move(req), std::move(cb)); })
        .then([context](Result<IssueTaskReply> r) mutable {
          auto out = context.getResults(kSmallResult).initResult();
          if (!r.ok()) return AnswerError(r.error, out);
          FillIssueOk(r.value, out);
        });
  }

  kj::Promise<void> issueTasks(IssueTasksContext context) override {
    return Batch<IssueTaskReply>(
        context, [](auto r) { return ReadIssueRequest(r); },
        [](Engine* e, IssueTaskRequest r, Callback<IssueTaskReply> cb) {
          e->IssueTask(std::move(r), std::move(cb));
        },
        [](const std::vector<Result<IssueTaskReply>>& results, auto out) {
          for (unsigned i = 0; i < out.size(); ++i) {
            if (!results[i].ok()) {
              AnswerItemError(results[i].error, out[i]);
            } else {
              FillIssueOk(results[i].value, out[i]);
            }
          }
        });
  }

  kj::Promise<void> getActivityTask(GetActivityTaskContext context) override {
    if (load_->polls() >= limits::kRpcConnectionPollsMax) {
      kj::throwFatalException(KJ_EXCEPTION(OVERLOADED, "too many long polls on one connection",
                                           static_cast<uint64_t>(load_->polls())));
    }
    auto params = context.getParams();
    GetActivityTaskRequest req;
    req.activity_arn = ToString(params.getActivityArn());
    req.worker_name = ToString(params.getWorkerName());
    const uint32_t max_s = core_.options().max_poll_seconds;
    const uint32_t wait_s =
        params.getWaitSeconds() == 0 ? max_s : std::min(params.getWaitSeconds(), max_s);
    context.releaseParams();
    // A cancelled call (or a dropped connection) must drop this promise: that is what withdraws
    // the poll.
    context.allowCancellation();
    kj::Own<PollState> state;
    auto reply = core_.Poll(std::move(req), wait_s, &state);
    TW_ASSERT(state.get() != nullptr);
    PollState* poll = state.get();
    ConnectionLoad* load = load_.get();  // lives as long as this object, which the call holds
    ServerCore* core = &core_;
    load_->PollStarted();  // until the call ends (the defer below)
    // `state` is attached outside the continuation, so it outlives it.
    return reply
        .then([context, poll, load, core](Result<GetActivityTaskReply> r) mutable {
          if (r.ok() && !r.value.token.empty() &&
              load->UnwrittenReplyBytes() >= limits::kRpcPollShedReplyBytes) {
            // The peer does not read its replies: a task handed to it would sit in memory.
            // Not Delivered(), so the PollState gives the task back to its queue's head.
            core->log().Log(LogKind::kPollShed,
                            "a connection does not read its replies: its polls get no tasks");
            kj::throwFatalException(KJ_EXCEPTION(
                OVERLOADED, "this connection's replies are not being read; task not handed out"));
          }
          auto out = context.getResults(ResultWords(r.value.token.size() + r.value.input.size()))
                         .initResult();
          if (!r.ok()) return AnswerError(r.error, out);
          auto ok = out.initOk();
          ok.setTaskToken(AsText(r.value.token));
          ok.setInput(AsText(r.value.input));
          poll->Delivered();
        })
        .attach(kj::mv(state),
                kj::defer([load = kj::addRef(*load_)]() mutable { load->PollEnded(); }));
  }

  kj::Promise<void> sendTaskSuccess(SendTaskSuccessContext context) override {
    SendTaskSuccessRequest req = ReadSuccessRequest(context.getParams().getRequest());
    context.releaseParams();
    Engine* engine = core_.engine();
    return core_
        .Call<CompletionReply>([&](Callback<CompletionReply> cb) {
          engine->SendTaskSuccess(std::move(req), std::move(cb));
        })
        .then([context](Result<CompletionReply> r) mutable {
          AnswerCompletion(r, context.getResults(kSmallResult).initResult());
        });
  }

  kj::Promise<void> sendTaskSuccesses(SendTaskSuccessesContext context) override {
    return Batch<CompletionReply>(
        context, [](auto r) { return ReadSuccessRequest(r); },
        [](Engine* e, SendTaskSuccessRequest r, Callback<CompletionReply> cb) {
          e->SendTaskSuccess(std::move(r), std::move(cb));
        },
        [](const auto& results, auto out) { AnswerCompletions(results, out); });
  }

  kj::Promise<void> sendTaskFailure(SendTaskFailureContext context) override {
    SendTaskFailureRequest req = ReadFailureRequest(context.getParams().getRequest());
    context.releaseParams();
    Engine* engine = core_.engine();
    return core_
        .Call<CompletionReply>([&](Callback<CompletionReply> cb) {
          engine->SendTaskFailure(std::move(req), std::move(cb));
        })
        .then([context](Result<CompletionReply> r) mutable {
          AnswerCompletion(r, context.getResults(kSmallResult).initResult());
        });
  }

  kj::Promise<void> sendTaskFailures(SendTaskFailuresContext context) override {
    return Batch<CompletionReply>(
        context, [](auto r) { return ReadFailureRequest(r); },
        [](Engine* e, SendTaskFailureRequest r, Callback<CompletionReply> cb) {
          e->SendTaskFailure(std::move(r), std::move(cb));
        },
        [](const auto& results, auto out) { AnswerCompletions(results, out); });
  }

  kj::Promise<void> sendTaskHeartbeat(SendTaskHeartbeatContext context) override {
    SendTaskHeartbeatRequest req{ToString(context.getParams().getRequest().getTaskToken())};
    Engine* engine = core_.engine();
    return core_
        .Call<Empty>(
            [&](Callback<Empty> cb) { engine->SendTaskHeartbeat(std::move(req), std::move(cb)); })
        .then([context](Result<Empty> r) mutable {
          AnswerEmpty(r, context.getResults(kSmallResult).initResult());
        });
  }

  kj::Promise<void> sendTaskHeartbeats(SendTaskHeartbeatsContext context) override {
    return Batch<Empty>(
        context, [](auto r) { return SendTaskHeartbeatRequest{ToString(r.getTaskToken())}; },
        [](Engine* e, SendTaskHeartbeatRequest r, Callback<Empty> cb) {
          e->SendTaskHeartbeat(std::move(r), std::move(cb));
        },
        [](const std::vector<Result<Empty>>& results, auto out) {
          for (unsigned i = 0; i < out.size(); ++i) {
            if (!results[i].ok()) {
              AnswerItemError(results[i].error, out[i]);
            } else {
              out[i].setOk();
            }
          }
        });
  }

  kj::Promise<void> cancelTask(CancelTaskContext context) override {
    CancelTaskRequest req{ToString(context.getParams().getTaskToken())};
    Engine* engine = core_.engine();
    return core_
        .Call<CompletionReply>([&](Callback<CompletionReply> cb) {
          engine->CancelTask(std::move(req), std::move(cb));
        })
        .then([context](Result<CompletionReply> r) mutable {
          AnswerCompletion(r, context.getResults(kSmallResult).initResult());
        });
  }

  kj::Promise<void> describeTask(DescribeTaskContext context) override {
    DescribeTaskRequest req{ToString(context.getParams().getTaskToken())};
    Engine* engine = core_.engine();
    return core_
        .Call<TaskDescription>(
            [&](Callback<TaskDescription> cb) {
              engine->DescribeTask(std::move(req), std::move(cb));
            },
            Admission::kPayload)
        .then([context](Result<TaskDescription> r) mutable {
          const TaskDescription& d = r.value;
          auto out = context
                         .getResults(ResultWords(d.input.size() + d.output.size() + d.error.size() +
                                                 d.cause.size() + d.correlation.size() +
                                                 d.activity_arn.size() + d.worker.size()))
                         .initResult();
          if (!r.ok()) return AnswerError(r.error, out);
          FillDescription(r.value, out.initOk());
        });
  }

  // ---- The outcome stream ----

  kj::Promise<void> subscribe(SubscribeContext context) override {
    auto params = context.getParams();
    std::string consumer = ToString(params.getConsumer());
    const uint64_t from_seq = params.getFromSequence();
    proto::EventSink::Client sink = params.getSink();
    context.releaseParams();
    if (core_.subscriptions.load(std::memory_order_relaxed) >= core_.options().subscriptions_max) {
      kj::throwFatalException(KJ_EXCEPTION(OVERLOADED, "too many subscriptions"));
    }
    Engine* engine = core_.engine();
    ServerCore* core = &core_;
    return core_
        .Call<ConsumerInfo>([&](Callback<ConsumerInfo> cb) {
          engine->RegisterConsumer(std::move(consumer), std::move(cb));
        })
        .then([context, core, from_seq, sink = kj::mv(sink)](Result<ConsumerInfo> r) mutable {
          auto out = context.getResults().initResult();
          if (!r.ok()) return AnswerError(r.error, out);
          const uint64_t start = from_seq == 0 ? r.value.acked_seq + 1 : from_seq;
          if (!EventsKeptFrom(core->engine(), start)) {
            return AnswerError(
                EventsTrimmedError(start,
                                   "subscribe with fromSequence 0 to resume from the consumer's "
                                   "cursor"),
                out);
          }
          auto ok = out.initOk();
          ok.setSubscription(kj::heap<SubscriptionImpl>(*core, start, kj::mv(sink)));
          ok.setAckedSequence(r.value.acked_seq);
          ok.setStartSequence(start);
        });
  }

  kj::Promise<void> ackEvents(AckEventsContext context) override {
    std::string consumer = ToString(context.getParams().getConsumer());
    const uint64_t seq = context.getParams().getSequence();
    Engine* engine = core_.engine();
    return core_
        .Call<Empty>(
            [&](Callback<Empty> cb) { engine->AckEvents(std::move(consumer), seq, std::move(cb)); })
        .then([context](Result<Empty> r) mutable {
          AnswerEmpty(r, context.getResults(kSmallResult).initResult());
        });
  }

  kj::Promise<void> deleteConsumer(DeleteConsumerContext context) override {
    std::string consumer = ToString(context.getParams().getConsumer());
    Engine* engine = core_.engine();
    return core_
        .Call<Empty>(
            [&](Callback<Empty> cb) { engine->DeleteConsumer(std::move(consumer), std::move(cb)); })
        .then([context](Result<Empty> r) mutable {
          AnswerEmpty(r, context.getResults(kSmallResult).initResult());
        });
  }

  kj::Promise<void> stats(StatsContext context) override {
    Engine* engine = core_.engine();
    ServerCore* core = &core_;
    return core_
        .Call<EngineStats>([&](Callback<EngineStats> cb) { engine->GetStats(std::move(cb)); },
                           Admission::kAlways)
        .then([context, core](Result<EngineStats> r) mutable {
          if (!r.ok()) {
            Error e = r.error;
            if (!IsLogisticsError(e.code) && e.code != ErrorCode::kUnavailable) {
              e.code = ErrorCode::kInternal;
            }
            ThrowLogistics(e);
          }
          auto out = context.getResults().initStats();
          FillEngineStats(r.value, out);
          out.setConnections(core->connections.load(std::memory_order_relaxed));
          out.setSubscriptions(core->subscriptions.load(std::memory_order_relaxed));
          out.setReplyHandoffs(core->mailbox().handoffs());
          out.setRepliesDelivered(core->mailbox().delivered());
        });
  }

 private:
  static bool EventsKeptFrom(Engine* engine, uint64_t start) {
    if (start == 0) return false;
    if (start > engine->LastEventSeq()) return true;  // the future: wait for it
    Result<std::vector<OutcomeEvent>> probe = engine->ReadEvents(start, 1);
    return probe.ok() && !probe.value.empty() && probe.value.front().seq == start;
  }

  static void AnswerActivity(const Result<ActivityInfo>& r, proto::ActivityResult::Builder out) {
    if (!r.ok()) return AnswerError(r.error, out);
    FillActivity(r.value, out.initOk());
  }

  static void AnswerEmpty(const Result<Empty>& r, proto::EmptyResult::Builder out) {
    if (!r.ok()) return AnswerError(r.error, out);
    out.setOk();
  }

  static void FillIssueOk(const IssueTaskReply& reply, proto::IssueTaskResult::Builder out) {
    auto ok = out.initOk();
    ok.setTaskToken(AsText(reply.token));
    ok.setExisting(reply.existing);
  }

  // The batch forms: read every request, hand them all to the engine at once (so they share
  // engine batches), then answer item by item. `read` turns a wire item into a request, `call`
  // passes one request to the engine, `answer` fills the result list.
  // The connection's batch items count from here until the call ends (answered or cancelled):
  // its reads pause at kRpcConnectionBatchItemsMax.
  template <typename Reply, typename Context, typename Read, typename Call, typename Answer>
  kj::Promise<void> Batch(Context context, Read read, Call call, Answer answer) {
    auto in = context.getParams().getRequests();
    CheckBatch(in.size());
    std::vector<decltype(read(in[0]))> reqs;
    reqs.reserve(in.size());
    for (auto r : in) reqs.push_back(read(r));
    context.releaseParams();
    Engine* engine = core_.engine();
    const size_t items = reqs.size();
    load_->BatchStarted(items);
    return core_
        .CallBatch<Reply>(
            reqs.size(),
            [&](size_t i, Callback<Reply> cb) { call(engine, std::move(reqs[i]), std::move(cb)); })
        .then([context, answer](std::vector<Result<Reply>> results) mutable {
          answer(results, context.getResults(ResultWords(0, results.size()))
                              .initResults(static_cast<unsigned>(results.size())));
        })
        .attach(
            kj::defer([load = kj::addRef(*load_), items]() mutable { load->BatchEnded(items); }));
  }

  static void AnswerCompletion(const Result<CompletionReply>& r,
                               proto::CompletionResult::Builder out) {
    if (!r.ok()) return AnswerError(r.error, out);
    out.initOk().setDuplicate(r.value.duplicate);
  }

  static void AnswerCompletions(const std::vector<Result<CompletionReply>>& results,
                                capnp::List<proto::CompletionResult>::Builder out) {
    TW_ASSERT(out.size() == results.size());
    for (unsigned i = 0; i < out.size(); ++i) {
      if (!results[i].ok()) {
        AnswerItemError(results[i].error, out[i]);
      } else {
        out[i].initOk().setDuplicate(results[i].value.duplicate);
      }
    }
  }

  ServerCore& core_;
  kj::Own<ConnectionLoad> load_;
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

// One accepted socket and its RPC system.
struct Connection {
  Connection(kj::Own<kj::AsyncIoStream> s, ServerCore& core)
      : core(core),
        load(kj::refcounted<ConnectionLoad>()),
        stream(
            kj::heap<BufferedIoStream>(kj::mv(s), ConnectionStreamOptions(core.reply_backlog()))),
        guard(*stream, kj::addRef(*load), core.log()),
        network(guard, capnp::rpc::twoparty::Side::SERVER, ServerReaderOptions()),
        rpc(capnp::makeRpcServer(network, kj::heap<TokenWheelImpl>(core, kj::addRef(*load)))) {
    load->set_stream(stream.get());
    rpc.setFlowLimit(limits::kRpcFlowLimitBytes / sizeof(capnp::word));
    core.connections.fetch_add(1, std::memory_order_relaxed);
    const int64_t timeout_ms = core.options().handshake_timeout_ms;
    handshake =
        core.timer()
            .afterDelay(timeout_ms * kj::MILLISECONDS)
            .then([this, timeout_ms]() {
              if (guard.handshaken()) return;
              this->core.log().Log(LogKind::kHandshakeTimeout,
                                   "closing connections that sent no call within " +
                                       std::to_string(timeout_ms) + " ms");
              guard.Close(KJ_EXCEPTION(
                  DISCONNECTED, "no call within the server's handshake timeout", timeout_ms));
            })
            .eagerlyEvaluate(nullptr);
  }
  ~Connection() {
    load->set_stream(nullptr);  // an in-flight call may keep `load` past this
    core.connections.fetch_sub(1, std::memory_order_relaxed);
  }

  ServerCore& core;
  kj::Own<ConnectionLoad> load;
  kj::Own<BufferedIoStream> stream;
  ConnectionGuard guard;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
  kj::Promise<void> handshake = nullptr;  // closes the connection if it sends no call in time
};

// Reads and drops what a refused peer sends until it closes, so that closing our end does not
// reset the connection before the peer has read the reason.
kj::Promise<void> DrainUntilEof(kj::AsyncIoStream& stream, kj::ArrayPtr<kj::byte> buffer) {
  return stream.tryRead(buffer.begin(), 1, buffer.size())
      .then([&stream, buffer](size_t n) -> kj::Promise<void> {
        if (n == 0) return kj::READY_NOW;
        return DrainUntilEof(stream, buffer);
      });
}

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
  ServerImpl(Engine* engine, const ServerOptions& options)
      : engine_(engine), options_(options), mailbox_(std::make_shared<Mailbox>()) {}

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
    core_ = std::make_unique<ServerCore>(engine_, options_, io.provider->getTimer(), mailbox_);
    refusal_ =
        AbortMessage(kj::Exception::Type::OVERLOADED, "tokenwheel server: connection limit (" +
                                                          std::to_string(options_.connections_max) +
                                                          ") reached; try again later");
    kj::Own<kj::NetworkAddress> addr =
        io.provider->getNetwork().parseAddress(options_.listen_address).wait(ws);
    listener_ = addr->listen();
    port_ = static_cast<uint16_t>(listener_->getPort());
    WarnIfDescriptorsRunOut();
    auto stop = kj::newPromiseAndFulfiller<void>();
    stop_fulfiller_ = kj::mv(stop.fulfiller);
    tasks_ = kj::heap<kj::TaskSet>(*this);
    accept_loop_ = AcceptLoop().eagerlyEvaluate(
        [](kj::Exception&& e) { KJ_LOG(ERROR, "accept loop ended", e); });
    kj::Promise<void> pump =
        mailbox_->Run(*io.lowLevelProvider).eagerlyEvaluate([](kj::Exception&& e) {
          KJ_LOG(ERROR, "mailbox pump ended", e);
        });
    *reported = true;
    started_.set_value(std::string());

    stop.promise.wait(ws);

    // Shutdown: no new connections; let the answers already handed over become replies and
    // flush; then drop every connection (cancelling what is still pending) and the bridge.
    accept_loop_ = nullptr;
    listener_ = nullptr;
    io.provider->getTimer().afterDelay(limits::kRpcShutdownFlushMs * kj::MILLISECONDS).wait(ws);
    pump = nullptr;
    mailbox_->Close();
    core_->FailAll();
    ws.poll();
    tasks_ = nullptr;  // connections, their calls, polls (withdrawn) and subscriptions
    // Cancellations and releases unwind as events: let them run (bounded).
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
        .then(
            [this](kj::Own<kj::AsyncIoStream>&& stream) -> kj::Promise<void> {
              accept_backoff_ms_ = 0;
              KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() { Admit(kj::mv(stream)); })) {
                core_->log().Log(
                    LogKind::kConnectionError,
                    std::string("setting up a connection failed: ") + e->getDescription().cStr());
              }
              return AcceptLoop();
            },
            [this](kj::Exception&& e) -> kj::Promise<void> {
              accept_backoff_ms_ =
                  accept_backoff_ms_ == 0
                      ? limits::kRpcAcceptBackoffMsMin
                      : std::min(2 * accept_backoff_ms_, limits::kRpcAcceptBackoffMsMax);
              core_->log().Log(LogKind::kAcceptFailed,
                               std::string("accepting connections failed (") +
                                   e.getDescription().cStr() + "); retrying within " +
                                   std::to_string(limits::kRpcAcceptBackoffMsMax) + " ms");
              return core_->timer()
                  .afterDelay(accept_backoff_ms_ * kj::MILLISECONDS)
                  .then([this]() { return AcceptLoop(); });
            });
  }

  void Admit(kj::Own<kj::AsyncIoStream> stream) {
    if (core_->connections.load(std::memory_order_relaxed) >= options_.connections_max) {
      Refuse(kj::mv(stream));
      return;
    }
    auto conn = kj::heap<Connection>(kj::mv(stream), *core_);
    Connection* c = conn.get();
    kj::Timer& timer = core_->timer();
    // After capnp lets go of the connection, its last bytes (an Abort with the reason, when the
    // server closed it) get a moment to leave: they are written, the write side is shut
    // (capnp did that, after them), and what the peer still sends is read and dropped until it
    // closes. Closing a socket with unread input would reset it and lose them.
    auto scratch = kj::heapArray<kj::byte>(4096);
    kj::ArrayPtr<kj::byte> buffer = scratch;
    auto done =
        c->network.onDisconnect()
            .then([c, buffer, &timer]() {
              return c->stream->WhenFlushed()
                  .then([c, buffer]() { return DrainUntilEof(*c->stream, buffer); })
                  .exclusiveJoin(timer.afterDelay(limits::kRpcCloseFlushMs * kj::MILLISECONDS));
            })
            .catch_([](kj::Exception&&) {});  // a reset while draining: gone anyway
    tasks_->add(done.attach(kj::mv(conn), kj::mv(scratch)));
  }

  // Over connections_max: the peer gets an Abort saying why (a capnp client reports it as its
  // error), then the socket closes. Bounded: at most kRpcRefusalsInProgressMax at a time, each
  // for at most kRpcRefusalLingerMs; past that a refused socket is closed at once.
  void Refuse(kj::Own<kj::AsyncIoStream> stream) {
    core_->log().Log(LogKind::kConnectionLimit, "connection limit (" +
                                                    std::to_string(options_.connections_max) +
                                                    ") reached: refusing new connections");
    if (refusals_ >= limits::kRpcRefusalsInProgressMax) return;
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
  auto server = std::make_unique<ServerImpl>(engine, options);
  Error e = server->Launch();
  if (!e.ok()) return Result<std::unique_ptr<Server>>::Fail(std::move(e));
  return Result<std::unique_ptr<Server>>::Ok(std::move(server));
}

}  // namespace tw::rpc
