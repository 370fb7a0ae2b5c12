#include "rpc/mailbox.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "engine/assert.h"

namespace tw::rpc {

Mailbox::Mailbox() : doorbell_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  TW_ASSERT_MSG(doorbell_fd_ >= 0, "eventfd failed");
}

Mailbox::~Mailbox() noexcept {
  doorbell_ = nullptr;  // stop watching before the fd goes
  close(doorbell_fd_);
}

bool Mailbox::Post(Fn fn) {
  bool ring = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return false;  // `fn` is destroyed here, on the posting thread (invariant 3)
    pending_.push_back(std::move(fn));
    // Inside a reply burst the ring waits for the burst's end (invariant 2), unless this burst
    // already held back kBurstRepliesPerWake posts.
    if (armed_ && !ReplyBurst::DeferWake(this, pending_.size())) {
      armed_ = false;
      ring = true;
    }
  }
  if (ring) Ring();
  return true;
}

void Mailbox::FlushBurst() {
  bool ring = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (armed_ && !pending_.empty()) {
      armed_ = false;
      ring = true;
    }
  }
  if (ring) Ring();
}

void Mailbox::Ring() {
  handoffs_.fetch_add(1, std::memory_order_relaxed);
  const uint64_t one = 1;
  // An eventfd write of 1 cannot block or fail short of a counter overflow (2^64 - 2 rings);
  // EINTR is retried.
  while (write(doorbell_fd_, &one, sizeof(one)) < 0) TW_ASSERT(errno == EINTR);
}

kj::Promise<void> Mailbox::Run(kj::LowLevelAsyncIoProvider& io) {
  TW_ASSERT(doorbell_.get() == nullptr);
  doorbell_ = io.wrapInputFd(doorbell_fd_, kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK |
                                               kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC);
  return Pump();
}

kj::Promise<void> Mailbox::Pump() {
  if (DrainOrArm()) return kj::evalLater([this]() { return Pump(); });
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return kj::NEVER_DONE;
  }
  // Consumes exactly the one ring of the post that disarms (invariant 2).
  return doorbell_->read(&ring_count_, sizeof(ring_count_)).then([this]() { return Pump(); });
}

bool Mailbox::DrainOrArm() {
  TW_ASSERT(draining_.empty());
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return false;
    if (pending_.empty()) {
      armed_ = true;
      return false;
    }
    draining_.swap(pending_);
  }
  // A closure may post again (synchronous engine answers land here too); those wait for the
  // next turn, which keeps one turn bounded by what was pending when it started.
  for (Fn& fn : draining_) fn();
  delivered_.fetch_add(draining_.size(), std::memory_order_relaxed);
  draining_.clear();
  return true;
}

void Mailbox::ConsumeRing() {
  uint64_t count = 0;
  // Non-blocking: a spurious wake-up (EAGAIN) consumes nothing.
  while (read(doorbell_fd_, &count, sizeof(count)) < 0 && errno == EINTR) {
  }
}

void Mailbox::Close() {
  std::vector<Fn> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    armed_ = false;
    dropped.swap(pending_);
  }
  doorbell_ = nullptr;
}

}  // namespace tw::rpc
