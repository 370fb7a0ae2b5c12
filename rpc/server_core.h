// The Cap'n Proto server's KJ-thread state shared by all its connections: the KJ side of the
// bridge to the engine (rpc/bridge.h: pending calls by id, waiting long polls), the new-events
// broadcast, the counters, the log, and the global bounds (calls in flight, unwritten reply
// bytes). Private to rpc/; rpc/server.cc owns the one ServerCore of a server.
//
// A call's answer fulfills a promise, which the caller may drop (a cancelled call) before the
// answer comes. KJ thread only, except the two counters, which stats read.
#pragma once

#include <kj/async.h>
#include <kj/timer.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/assert.h"
#include "engine/engine.h"
#include "rpc/bridge.h"
#include "rpc/buffered_stream.h"
#include "rpc/call_counts.h"
#include "rpc/mailbox.h"
#include "rpc/server.h"
#include "rpc/server_log.h"

namespace tw::rpc {

class ServerCore;

// A waiting getActivityTask call. Owned by the call's promise; destroyed when the call ends,
// normally or by cancellation (then withdrawn from the engine, or its task returned).
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
  void Abort();

 private:
  ServerCore& core_;
  const uint64_t poll_id_;
  kj::Own<kj::PromiseFulfiller<Result<GetActivityTaskReply>>> fulfiller_;
  bool answered_ = false;
  std::string held_token_;  // a task handed to this call, not yet put in its results
};

class ServerCore {
 public:
  // `counts` outlives the core (the server reads it from other threads).
  ServerCore(Engine* engine, const ServerOptions& options, kj::Timer& timer,
             std::shared_ptr<Mailbox> mailbox, std::shared_ptr<CallCounts> counts);
  ~ServerCore();

  Engine* engine() { return bridge_.engine(); }
  const ServerOptions& options() const { return options_; }
  kj::Timer& timer() { return timer_; }
  RateLimitedLog& log() { return log_; }
  CallCounts& counts() { return *counts_; }
  Mailbox& mailbox() { return bridge_.mailbox(); }
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
  void ForgetPoll(uint64_t poll_id) { polls_.erase(poll_id); }

  // Engine wake-ups: the bridge corks this thread for a burst of events, and kj::evalLast ends
  // the burst (rpc/bridge.h). evalLast runs once every event queued so far, and every event
  // those queue, has run (except later evalLasts: the write coalescing of
  // rpc/buffered_stream.h may write(2) first); the loop looks for new I/O only after that, so a
  // held command waits for the rest of its burst, never for new input. Work that blocks this
  // thread (a subscription's store read) uncorks first.
  void Uncork() { bridge_.Uncork(); }

  // Resolves at the next notice of new durable events.
  kj::Promise<void> WaitForEvents() { return events_fork_.addBranch(); }
  void OnEvents();

  // Shutdown: every call still waiting for the engine fails (DISCONNECTED).
  void FailAll();
  // Nothing left that points at the core.
  bool Idle() const;

  std::atomic<uint64_t> connections{0};
  std::atomic<uint64_t> subscriptions{0};

 private:
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

  // Past the bridge's bounds a single call is refused OVERLOADED at once.
  void Admit(Admission admission) {
    if (!bridge_.Admit(admission)) RefuseOverloaded();
  }
  [[noreturn]] void RefuseOverloaded();

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
  bool DeliverPoll(uint64_t poll_id, Result<GetActivityTaskReply> r);

  const ServerOptions options_;
  kj::Timer& timer_;
  kj::Promise<void> uncork_ = nullptr;  // the evalLast that ends a burst (before bridge_)
  Bridge bridge_;
  uint64_t next_call_id_ = 1;
  std::shared_ptr<CallCounts> counts_;
  RateLimitedLog log_;
  SharedWriteBacklog reply_backlog_;
  std::unordered_map<uint64_t, kj::Own<SlotBase>> calls_;
  std::unordered_map<uint64_t, PollState*> polls_;  // PollState removes itself
  kj::ForkedPromise<void> events_fork_ = nullptr;
  kj::Own<kj::PromiseFulfiller<void>> events_fulfiller_;
};

}  // namespace tw::rpc
