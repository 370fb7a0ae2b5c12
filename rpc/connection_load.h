// What one Cap'n Proto connection has asked and not yet been answered, against the
// per-connection bounds of rpc/server.h ("Limits"). Private to rpc/.
//
// Shared by the connection's ConnectionGuard (rpc/server.cc: questions, calls, payload calls,
// counted from the messages) and its TokenWheel service (rpc/service.h: batch items, long
// polls). Refcounted because capnp keeps the service alive until its calls' promises end, which
// may be after the connection is gone. KJ thread only.
// Invariants:
//  1. payload_ids_ holds the answer ids of the unanswered describeTask / listActivities calls,
//     so its size is their number (<= kRpcConnectionPayloadCallsMax: reading pauses there).
//  2. polls_ counts getActivityTask calls from their start to their end; each is also in
//     calls_ from its Call message to its Return, a slightly longer span.
//  3. A paused read (WhenRoom) is woken whenever a count that Full() reads goes down.
#pragma once

#include <kj/async.h>
#include <kj/refcount.h>
#include <kj/vector.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "engine/limits.h"
#include "rpc/buffered_stream.h"

namespace tw::rpc {

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
  kj::Promise<void> WhenRoom();

  // Message level: a Bootstrap or Call arrived (question `id`; `payload`: a describeTask or
  // listActivities call), a Return left for answer `id`, a Finish arrived.
  void Asked(uint32_t id, bool payload);
  void Answered(uint32_t id);
  void Finished() {
    // A Finish for a question that does not exist makes capnp end the connection.
    if (questions_ > 0) --questions_;
  }
  size_t questions() const { return questions_; }
  size_t calls() const { return calls_; }

  // The service: a long poll, from its start to its end.
  size_t polls() const { return polls_; }
  void PollStarted() { ++polls_; }
  void PollEnded();

  // The service: the items of a batch call, from its start to its end.
  void BatchStarted(size_t items) { batch_items_ += items; }
  void BatchEnded(size_t items);

  // Reply bytes on the connection's socket not yet written; 0 once the connection is gone.
  size_t UnwrittenReplyBytes() const { return stream_ == nullptr ? 0 : stream_->unwritten_bytes(); }
  void set_stream(BufferedIoStream* stream) { stream_ = stream; }
  // Ends the connection as ConnectionGuard::Close does: the next read fails with `reason`, which
  // capnp sends to the peer as an Abort before it disconnects. Nothing once the connection is
  // gone.
  void CloseConnection(const kj::Exception& reason) {
    if (stream_ != nullptr) stream_->FailReads(reason);
  }

 private:
  void Wake();

  size_t calls_ = 0;                  // Bootstrap / Call received, Return not yet sent
  size_t questions_ = 0;              // Bootstrap / Call received, Finish not yet received
  kj::Vector<uint32_t> payload_ids_;  // invariant 1
  size_t batch_items_ = 0;
  size_t polls_ = 0;  // getActivityTask calls in progress (counted in calls_ as well)
  BufferedIoStream* stream_ = nullptr;  // owned by the Connection, which clears this
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> waiter_;
};

}  // namespace tw::rpc
