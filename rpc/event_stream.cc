// GCC (12, -O1 and up) reports a false "may be used uninitialized" inside kj::Maybe<MessageSize>
// when capnp's newCall() copies its defaulted (null) size hint. Silenced for this file only; it
// must precede the capnp includes, where the warning is located.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "rpc/event_stream.h"

#include <kj/debug.h>

#include <memory>
#include <utility>
#include <vector>

#include "engine/limits.h"
#include "rpc/bridge.h"
#include "rpc/convert.h"

namespace tw::rpc {
namespace {

class SubscriptionImpl final : public proto::Subscription::Server {
 public:
  SubscriptionImpl(ServerCore& core, uint64_t start_seq, proto::EventSink::Client sink)
      : core_(core), next_seq_(start_seq), sink_(kj::mv(sink)) {
    core_.subscriptions.fetch_add(1, std::memory_order_relaxed);
    // Start on a later turn: the subscribe call's results go out first.
    task_ = kj::evalLater([this]() {
              return Loop();
            }).catch_([this](kj::Exception&& e) {
                return Ended(kj::mv(e));
              }).eagerlyEvaluate([](kj::Exception&& e) {
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

  // The loop stopped: tell the subscriber why (best effort), unless it is gone.
  kj::Promise<void> Ended(kj::Exception&& e) {
    if (e.getType() == kj::Exception::Type::DISCONNECTED) return kj::READY_NOW;
    auto request = sink_.endedRequest();
    request.setReason(e.getDescription());
    return request.send().ignoreResult();
  }

  ServerCore& core_;
  uint64_t next_seq_;
  proto::EventSink::Client sink_;
  kj::Promise<void> task_ = nullptr;
};

}  // namespace

proto::Subscription::Client NewSubscription(ServerCore& core, uint64_t start_seq,
                                            proto::EventSink::Client sink) {
  return kj::heap<SubscriptionImpl>(core, start_seq, kj::mv(sink));
}

bool EventsKeptFrom(Engine* engine, uint64_t start) {
  if (start == 0) return false;
  if (start > engine->LastEventSeq()) return true;  // the future: wait for it
  Result<std::vector<OutcomeEvent>> probe = engine->ReadEvents(start, 1);
  return probe.ok() && !probe.value.empty() && probe.value.front().seq == start;
}

}  // namespace tw::rpc
