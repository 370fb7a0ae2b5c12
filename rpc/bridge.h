// The bridge between one front end's event-loop thread and the engine: the one way both front
// ends (rpc/server_core.h on KJ, rpc/aws/gateway.cc on Asio) submit commands and get answers
// back on their own thread. Private to rpc/.
//
// Batched both ways (docs/ARCHITECTURE.md, "rpc/ and tools/"):
//  - To the engine: the first call of a burst of events on the loop thread corks it
//    (Engine::Cork) and `at_burst_end` schedules the uncork, so a burst of calls wakes the engine
//    thread once.
//  - Back: each answer is posted to the loop through the Mailbox, which rings once per engine
//    reply burst.
//
// Bounds: single calls in flight (started, answer not yet delivered) are bounded for each bridge:
// at most `calls_max` in all, and at most `payload_calls_max` of the calls whose answers carry
// task payloads (describe, list). Past them Admit says no, and a front end refuses the call at
// once (OVERLOADED, ThrottlingException) before the engine sees it: an overload then costs a
// small reply instead of memory (the engine's queue only fills when the engine is the
// bottleneck; when the front end's thread is, answers would pile up in between). Long polls
// and batch items count separately (the engine bounds waiting polls: limits::kPollWaitersMax;
// the front ends bound batches).
//
// Threads: every method runs on the loop thread, except that the engine runs the callbacks Call
// and Poll pass it on its own thread; those only post to the mailbox. A `deliver` closure may be
// destroyed on the engine thread (when the loop has stopped, the mailbox drops what is posted to
// it), so it must own nothing of the loop's (capture weak references, ids).
// REQUIRES: the mailbox is closed (Mailbox::Close) before the bridge is destroyed: a posted
// answer refers to the bridge.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>

#include "engine/engine.h"
#include "engine/errors.h"
#include "rpc/mailbox.h"

namespace tw::rpc {

// How a call counts against the bridge's bounds.
enum class Admission : uint8_t {
  kBounded,  // refused at calls_max
  kPayload,  // also at payload_calls_max: its answer carries task payloads (describe, list)
  kAlways,   // never refused, not counted (stats: an operator must see an overload; batch items)
};

class Bridge {
 public:
  // Runs `fn` on the loop thread once the events queued so far have run (KJ: kj::evalLast;
  // Asio: a post).
  using AtBurstEnd = std::function<void(std::function<void()> fn)>;

  // Poll ids name a wait across every front end of one engine: each front end owns the ids with
  // its tag in the top byte.
  Bridge(Engine* engine, std::shared_ptr<Mailbox> mailbox, AtBurstEnd at_burst_end,
         size_t calls_max, size_t payload_calls_max, uint8_t poll_id_tag);
  ~Bridge();
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  Engine* engine() const { return engine_; }
  Mailbox& mailbox() { return *mailbox_; }
  size_t calls_in_flight() const { return calls_in_flight_; }
  size_t payload_calls_in_flight() const { return payload_calls_in_flight_; }

  // Whether a call may start now; false past the bounds (counted in refused()).
  bool Admit(Admission admission) {
    if (admission == Admission::kAlways) return true;
    const bool over =
        calls_in_flight_ >= calls_max_ ||
        (admission == Admission::kPayload && payload_calls_in_flight_ >= payload_calls_max_);
    if (over) ++refused_;
    return !over;
  }

  // Starts one engine call (admitted or not: see Admit): start(callback) calls the engine method
  // with `callback`; `deliver` gets the answer on the loop thread.
  template <typename T, typename StartFn>
  void Start(StartFn&& start, std::function<void(Result<T>)> deliver,
             Admission admission = Admission::kBounded) {
    CorkUntilBurstEnds();
    Count(admission, +1);
    start(Callback<T>([this, mailbox = mailbox_, admission,
                       deliver = std::move(deliver)](Result<T> r) mutable {
      // Engine thread: only post.
      mailbox->Post([this, admission, deliver = std::move(deliver), r = std::move(r)]() mutable {
        Count(admission, -1);
        deliver(std::move(r));
      });
    }));
  }

  // Admit, then Start; a refused call's `deliver` gets ThrottlingError at once (on this thread,
  // before Call returns) and `start` is not called.
  template <typename T, typename StartFn>
  void Call(StartFn&& start, std::function<void(Result<T>)> deliver,
            Admission admission = Admission::kBounded) {
    if (!Admit(admission)) {
      deliver(Result<T>::Fail(ThrottlingError("too many calls in flight")));
      return;
    }
    Start<T>(std::forward<StartFn>(start), std::move(deliver), admission);
  }

  // A long poll. `deliver` gets the engine's answer on the loop thread and returns whether its
  // caller took it; a task its caller could not take (gone, or the answer could not be sent) goes
  // back to the head of its queue (Engine::ReturnTask).
  using PollDeliver = std::function<bool(Result<GetActivityTaskReply>)>;
  void Poll(GetActivityTaskRequest req, uint64_t poll_id, PollDeliver deliver);
  // A poll's caller went away or its wait ran out (Engine::WithdrawPoll).
  void Withdraw(uint64_t poll_id);
  // A task handed to a caller that could not take it (Engine::ReturnTask).
  void ReturnTask(std::string token);
  uint64_t NextPollId();

  // The engine wake-ups of this loop's burst (see the top). Uncork first before blocking the
  // loop thread (a synchronous store read).
  void CorkUntilBurstEnds();
  void Uncork();

  uint64_t refused() const { return refused_; }  // calls Admit refused

 private:
  void Count(Admission admission, int delta) {
    if (admission == Admission::kAlways) return;
    calls_in_flight_ += static_cast<size_t>(delta);
    if (admission == Admission::kPayload) payload_calls_in_flight_ += static_cast<size_t>(delta);
  }

  Engine* const engine_;
  const std::shared_ptr<Mailbox> mailbox_;
  const AtBurstEnd at_burst_end_;
  const size_t calls_max_;
  const size_t payload_calls_max_;
  const uint64_t poll_id_tag_;
  // Loop thread only.
  size_t calls_in_flight_ = 0;
  size_t payload_calls_in_flight_ = 0;
  uint64_t refused_ = 0;
  uint64_t next_poll_seq_ = 1;
  bool corked_ = false;
  // A scheduled uncork holds a weak reference: it does nothing once the bridge is gone.
  std::shared_ptr<char> alive_;
};

// Reads the run of consecutive outcome events from `from` for a front end's loop thread: at
// most `max_events`, and no more once `max_bytes` of payloads are read (at least one event), in
// chunks, so that a consumer far behind costs a bounded read. *trimmed is set when nothing is
// readable although the stream had reached `from` before the read (its events were trimmed);
// an event made durable during the read never looks trimmed.
Result<std::vector<OutcomeEvent>> ReadEventRun(Engine* engine, uint64_t from, size_t max_events,
                                               size_t max_bytes, bool* trimmed);

}  // namespace tw::rpc
