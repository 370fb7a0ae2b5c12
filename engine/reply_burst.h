// Reply bursts: the engine thread runs a finished batch's reply callbacks back to back. A front
// end that hands each reply to another thread (the RPC mailbox, a benchmark's inbox) would
// otherwise wake that thread at the first reply of the burst; it drains the few replies there
// are so far, sleeps, and is woken again a few replies later -- a cross-thread wake-up (a futex
// or eventfd write, and on a VM an IPI) every few replies instead of one per batch.
//
// Inside a ReplyBurst::Scope, a callback that would wake its consumer may instead queue the
// reply without waking it and register its sink with Defer(): the sink's FlushBurst() then runs
// once, on the same thread, when the outermost scope ends, and wakes the consumer once. Replies
// keep their order; they only reach a sleeping consumer at the end of the burst (a batch's
// release is microseconds to a few milliseconds of callbacks; a sink bounds how many replies it
// holds, see limits::kBurstRepliesPerWake).
//
// Thread-local: a burst belongs to the thread that opened it. Scopes nest; only the outermost
// flushes. The burst holds what a sink's KeepAliveForBurst() returns until the flush, for a sink
// whose last owners may be the very callbacks that post to it (the engine destroys a batch's
// callbacks before its burst ends).
#pragma once

#include <cstddef>
#include <memory>

namespace tw {

class ReplyBurst {
 public:
  class Sink {
   public:
    // Runs once at the end of each burst in which Defer(this) returned true, on that thread.
    virtual void FlushBurst() = 0;
    // Called when Defer first registers this sink in a burst: an owning reference that keeps it
    // alive until its flush, or null if something else does.
    virtual std::shared_ptr<void> KeepAliveForBurst() { return nullptr; }

   protected:
    ~Sink() = default;
  };

  // Opens a burst on the calling thread (the engine thread, around releasing replies).
  class Scope {
   public:
    Scope();
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
  };

  // True iff the calling thread is inside a burst.
  static bool Active();

  // Registers `sink` to be flushed at the end of the calling thread's burst (once, however often
  // it is registered). False, and nothing registered, when no burst is open or the burst already
  // holds limits::kBurstSinksMax other sinks: the caller then wakes its consumer itself.
  static bool Defer(Sink* sink);

  // For a sink about to wake its sleeping consumer, which now holds `held` answers: true when it
  // may leave the wake-up to its FlushBurst instead (inside a burst, at most
  // limits::kBurstRepliesPerWake answers held, and registered with Defer).
  static bool DeferWake(Sink* sink, size_t held);
};

}  // namespace tw
