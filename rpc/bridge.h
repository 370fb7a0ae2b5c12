// The bridge between one front end's event-loop thread and the engine: the one way both front
// ends (rpc/server.cc on KJ, rpc/aws/gateway.cc on Asio) submit commands and get answers back on
// their own thread. Private to rpc/.
//
// Batched both ways (docs/ARCHITECTURE.md, "rpc/ and tools/"):
//  - To the engine: the first call of a burst of events on the loop thread corks it
//    (Engine::Cork) and `at_burst_end` schedules the uncork, so a burst of calls wakes the engine
//    thread once.
//  - Back: each answer is posted to the loop through the Mailbox, which rings once per engine
//    reply burst.
//
// Bounds: at most `calls_max` calls in flight (started, answer not yet delivered) through one
// bridge; past it Call refuses at once with ErrorCode::kOverloaded, before the engine sees the
// call. Long polls count separately (the engine bounds waiting polls: limits::kPollWaitersMax).
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

class Bridge {
 public:
  // Runs `fn` on the loop thread once the events queued so far have run (KJ: kj::evalLast;
  // Asio: a post).
  using AtBurstEnd = std::function<void(std::function<void()> fn)>;

  // Poll ids name a wait across every front end of one engine: each front end owns the ids with
  // its tag in the top byte.
  Bridge(Engine* engine, std::shared_ptr<Mailbox> mailbox, AtBurstEnd at_burst_end,
         size_t calls_max, uint8_t poll_id_tag);
  ~Bridge();
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  Engine* engine() const { return engine_; }
  Mailbox& mailbox() { return *mailbox_; }
  size_t calls_in_flight() const { return calls_in_flight_; }

  // Starts one engine call: start(callback) calls the engine method with `callback`; `deliver`
  // gets the answer on the loop thread. Past calls_max calls in flight, `deliver` gets
  // ThrottlingError at once (on this thread, before Call returns) and `start` is not called.
  template <typename T, typename Start>
  void Call(Start&& start, std::function<void(Result<T>)> deliver) {
    if (calls_in_flight_ >= calls_max_) {
      ++refused_;
      deliver(Result<T>::Fail(ThrottlingError("too many calls in flight")));
      return;
    }
    CorkUntilBurstEnds();
    ++calls_in_flight_;
    start(
        Callback<T>([this, mailbox = mailbox_, deliver = std::move(deliver)](Result<T> r) mutable {
          // Engine thread: only post.
          mailbox->Post([this, deliver = std::move(deliver), r = std::move(r)]() mutable {
            --calls_in_flight_;
            deliver(std::move(r));
          });
        }));
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

  uint64_t refused() const { return refused_; }  // calls refused past calls_max

 private:
  Engine* const engine_;
  const std::shared_ptr<Mailbox> mailbox_;
  const AtBurstEnd at_burst_end_;
  const size_t calls_max_;
  const uint64_t poll_id_tag_;
  // Loop thread only.
  size_t calls_in_flight_ = 0;
  uint64_t refused_ = 0;
  uint64_t next_poll_seq_ = 1;
  bool corked_ = false;
  // A scheduled uncork holds a weak reference: it does nothing once the bridge is gone.
  std::shared_ptr<char> alive_;
};

}  // namespace tw::rpc
