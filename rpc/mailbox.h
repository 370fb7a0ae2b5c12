// The hand-off from foreign threads (the engine thread, the thread that stops the server) to one
// event loop thread: a KJ loop (Run) or any other that watches the doorbell fd itself and calls
// DrainOrArm (the AWS gateway's Asio loop). Private to rpc/.
//
// Any thread posts closures; the KJ thread runs them, in post order, on its own loop. Only the
// post that finds the mailbox empty while the KJ thread is waiting rings the doorbell (one
// eventfd write). The KJ thread wakes on that ring and drains what is there, so posts that keep
// coming while it drains ring again each time it catches up. The engine thread releases a
// batch's replies as a reply burst (engine/reply_burst.h): a post made inside one leaves the
// ring to the end of the burst (or to the limits::kBurstRepliesPerWake-th held post), so the
// replies of one engine batch cost one cross-thread wake-up and one drain.
//
// The doorbell is an eventfd watched by the KJ loop rather than a KJ cross-thread fulfiller:
// every byte of shared state is under one std::mutex, which keeps the hand-off visible to
// ThreadSanitizer (the system's libkj is not instrumented, so its internal futexes are not).
//
// Invariants:
//  1. A closure runs on the KJ thread only, and only while the mailbox is open.
//  2. armed_ is true only while pending_ is empty, or while a reply burst holds its ring (then
//     the burst has this mailbox registered, and FlushBurst rings). Whoever clears armed_ -- a
//     post, or FlushBurst -- rings the doorbell exactly once, and the KJ thread consumes that
//     ring exactly once.
//  3. Closures posted from foreign threads must not own KJ objects: one that is dropped (mailbox
//     closed) is destroyed on the posting thread.
#pragma once

#include <kj/async-io.h>
#include <kj/async.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/reply_burst.h"

namespace tw::rpc {

class Mailbox final : public ReplyBurst::Sink, public std::enable_shared_from_this<Mailbox> {
 public:
  using Fn = std::function<void()>;

  Mailbox();
  ~Mailbox() noexcept;
  Mailbox(const Mailbox&) = delete;
  Mailbox& operator=(const Mailbox&) = delete;

  // Any thread. False (and `fn` destroyed on this thread) when the mailbox is closed.
  bool Post(Fn fn);

  // KJ thread: runs posted closures until the returned promise is dropped. Call once; `io`
  // must outlive the promise.
  kj::Promise<void> Run(kj::LowLevelAsyncIoProvider& io);

  // For a loop other than KJ's, on its thread. DrainOrArm runs the closures pending now and
  // returns true (call it again on a later turn), or, with nothing pending, arms the doorbell and
  // returns false: once doorbell_fd() is readable, ConsumeRing() and call DrainOrArm again.
  int doorbell_fd() const { return doorbell_fd_; }
  bool DrainOrArm();
  void ConsumeRing();

  // ReplyBurst::Sink: the end of a burst that held this mailbox's ring.
  void FlushBurst() override;
  std::shared_ptr<void> KeepAliveForBurst() override { return weak_from_this().lock(); }

  // KJ thread: stops accepting, drops whatever is pending, and stops watching the doorbell.
  // Call after dropping Run's promise. Idempotent.
  void Close();

  // Counters (any thread): doorbell rings (cross-thread wake-ups) and closures run.
  uint64_t handoffs() const { return handoffs_.load(std::memory_order_relaxed); }
  uint64_t delivered() const { return delivered_.load(std::memory_order_relaxed); }

 private:
  // Runs what is pending, or arms the doorbell and waits for it.
  kj::Promise<void> Pump();
  // One eventfd write, for the post or flush that cleared armed_.
  void Ring();

  const int doorbell_fd_;  // eventfd
  std::mutex mu_;
  std::vector<Fn> pending_;  // guarded by mu_
  bool armed_ = false;       // guarded by mu_: the KJ thread waits on the doorbell
  bool closed_ = false;      // guarded by mu_
  // KJ thread only.
  kj::Own<kj::AsyncInputStream> doorbell_;
  uint64_t ring_count_ = 0;  // read target for the eventfd
  std::vector<Fn> draining_;
  std::atomic<uint64_t> handoffs_{0};
  std::atomic<uint64_t> delivered_{0};
};

}  // namespace tw::rpc
