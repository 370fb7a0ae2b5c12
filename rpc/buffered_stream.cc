#include "rpc/buffered_stream.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "engine/assert.h"

namespace tw::rpc {

kj::Promise<void> SharedWriteBacklog::WhenUnder() {
  if (!over()) return kj::READY_NOW;
  if (under_fulfiller_.get() == nullptr) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    under_ = paf.promise.fork();
    under_fulfiller_ = kj::mv(paf.fulfiller);
  }
  return under_.addBranch();
}

void SharedWriteBacklog::Sub(size_t n) {
  TW_ASSERT(n <= bytes_);
  bytes_ -= n;
  if (!over() && under_fulfiller_.get() != nullptr) {
    under_fulfiller_->fulfill();
    under_fulfiller_ = nullptr;
  }
}

BufferedIoStream::BufferedIoStream(kj::Own<kj::AsyncIoStream> inner, const Options& options)
    : inner_(kj::mv(inner)),
      options_(options),
      read_buffer_(kj::heapArray<kj::byte>(kReadBufferBytes)) {
  TW_ASSERT(options_.write_wait_bytes > 0);
  TW_ASSERT(options_.read_pause_bytes > 0);
  // A stream that holds nothing unwritten must always read: otherwise one peer's backlog would
  // stop every connection.
  TW_ASSERT(options_.shared == nullptr || options_.shared_pause_bytes > 0);
}

BufferedIoStream::~BufferedIoStream() noexcept(false) {
  if (options_.shared != nullptr) options_.shared->Sub(unwritten_bytes());  // invariant 4
}

kj::Promise<size_t> BufferedIoStream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  TW_ASSERT(min_bytes <= max_bytes);
  KJ_IF_MAYBE (reason, read_failure_) {
    return kj::cp(*reason);
  }
  if (ReadsPaused()) {
    // The peer is not reading what we wrote: read nothing new from it until it does.
    ++read_pauses_;
    return WhenReadsMayResume().then(
        [this, buffer, min_bytes, max_bytes]() { return tryRead(buffer, min_bytes, max_bytes); });
  }
  return ReadInto(static_cast<kj::byte*>(buffer), min_bytes, max_bytes, 0);
}

void BufferedIoStream::FailReads(const kj::Exception& reason) {
  if (read_failure_ != nullptr) return;
  read_failure_ = kj::cp(reason);
  // A paused read checks again (and fails); one waiting for the socket is woken by shutting the
  // socket's read side (it sees end of stream, and ReadInto turns that into the failure). No
  // canceler around every socket read: its adapter would cost each read an event-loop turn.
  WakeReader();
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() { inner_->abortRead(); })) {
    (void)e;  // the socket is gone already: so is any read on it
  }
}

bool BufferedIoStream::ReadsPaused() const {
  if (write_error_ != nullptr) return false;  // invariant 3: nothing is buffered
  const size_t unwritten = unwritten_bytes();
  if (unwritten >= options_.read_pause_bytes) return true;
  return options_.shared != nullptr && options_.shared->over() &&
         unwritten >= options_.shared_pause_bytes;
}

kj::Promise<void> BufferedIoStream::WhenReadsMayResume() {
  // Every finished write round (and a failed write) wakes the reader, which checks again; the
  // shared backlog wakes it when the sum falls under its mark. Unwritten bytes imply a write in
  // progress, so a round will finish (or fail).
  TW_ASSERT(writing_);
  auto paf = kj::newPromiseAndFulfiller<void>();
  // One read at a time: a waiter left here belongs to a read that is gone (it was cancelled, or
  // the shared backlog woke it), and dropping it rejects nothing anyone waits for.
  read_waiter_ = kj::mv(paf.fulfiller);
  // Only a pause for the shared backlog ends when it falls under its mark (joining an already
  // resolved WhenUnder would spin: ready events all the time, and KJ never polls for I/O).
  if (options_.shared == nullptr || !options_.shared->over()) return kj::mv(paf.promise);
  return paf.promise.exclusiveJoin(options_.shared->WhenUnder());
}

void BufferedIoStream::WakeReader() {
  KJ_IF_MAYBE (waiter, read_waiter_) {
    (*waiter)->fulfill();
    read_waiter_ = nullptr;
  }
}

kj::Promise<size_t> BufferedIoStream::ReadInto(kj::byte* dst, size_t min_bytes, size_t max_bytes,
                                               size_t done) {
  const size_t buffered = read_end_ - read_begin_;
  const size_t n = std::min(buffered, max_bytes - done);
  if (n > 0) {
    std::memcpy(dst + done, read_buffer_.begin() + read_begin_, n);
    read_begin_ += n;
    done += n;
  }
  if (done >= min_bytes) return done;
  TW_ASSERT(read_begin_ == read_end_);  // we only go to the socket with an empty buffer
  const size_t want = min_bytes - done;
  ++inner_reads_;
  if (max_bytes - done >= kReadBufferBytes) {
    // A big read (a large message body): straight into the caller's memory.
    return inner_->tryRead(dst + done, want, max_bytes - done).then([this, done](size_t got) {
      ThrowIfReadsFailed();
      return done + got;
    });
  }
  return inner_->tryRead(read_buffer_.begin(), want, kReadBufferBytes)
      .then([this, dst, min_bytes, max_bytes, done, want](size_t got) -> kj::Promise<size_t> {
        ThrowIfReadsFailed();
        read_begin_ = 0;
        read_end_ = got;
        if (got < want) {
          // End of stream: hand over what there is (less than min_bytes says EOF).
          std::memcpy(dst + done, read_buffer_.begin(), got);
          read_begin_ = got;
          return done + got;
        }
        return ReadInto(dst, min_bytes, max_bytes, done);
      });
}

void BufferedIoStream::ThrowIfReadsFailed() const {
  KJ_IF_MAYBE (reason, read_failure_) {
    kj::throwFatalException(kj::cp(*reason));
  }
}

kj::Promise<void> BufferedIoStream::write(const void* buffer, size_t size) {
  kj::ArrayPtr<const kj::byte> piece(static_cast<const kj::byte*>(buffer), size);
  return write(kj::arrayPtr(&piece, 1));
}

kj::Promise<void> BufferedIoStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  KJ_IF_MAYBE (e, write_error_) {
    return kj::cp(*e);
  }
  size_t added = 0;
  for (const auto& piece : pieces) {
    pending_.addAll(piece);
    added += piece.size();
  }
  if (options_.shared != nullptr) options_.shared->Add(added);  // invariant 4
  if (!writing_) StartWrite();
  if (pending_.size() < options_.write_wait_bytes) return kj::READY_NOW;
  // Too much accepted and unwritten: this writer waits for the socket.
  auto paf = kj::newPromiseAndFulfiller<void>();
  TW_ASSERT(room_waiter_ == nullptr);  // capnp waits for each write before the next
  room_waiter_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

kj::Promise<void> BufferedIoStream::WhenFlushed() {
  if (!writing_) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  flush_waiters_.add(kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

void BufferedIoStream::StartWrite() {
  TW_ASSERT(!writing_);
  if (pending_.empty()) return;
  writing_ = true;
  // The first round waits for evalLast: every message this burst of events produces (e.g. the
  // replies of one engine batch) is in pending_ by then, and goes out in one write. Later rounds
  // write what accumulated while the previous write was in progress.
  struct Loop {
    static kj::Promise<void> Round(BufferedIoStream* s) {
      if (s->pending_.empty()) {
        s->writing_ = false;
        if (s->shutdown_requested_) s->inner_->shutdownWrite();
        for (auto& waiter : s->flush_waiters_) waiter->fulfill();
        s->flush_waiters_.clear();
        return kj::READY_NOW;
      }
      // Swap the two buffers: pending_ gets the one the last round wrote, emptied but with its
      // capacity, so that a steady stream of replies does not allocate and grow a new buffer
      // every round (that was most of this stream's share of the RPC thread's malloc time).
      kj::Vector<kj::byte> written = kj::mv(s->inflight_);
      s->inflight_ = kj::mv(s->pending_);
      s->pending_ = kj::mv(written);
      ++s->inner_writes_;
      return s->inner_->write(s->inflight_.begin(), s->inflight_.size()).then([s]() {
        s->RoundWritten();
        return kj::evalLast([s]() { return Round(s); });
      });
    }
  };
  // The previous loop, if any, has finished (writing_ was false): replacing it is safe. A socket
  // write that throws at once (EPIPE) becomes a rejection like any other.
  write_task_ = kj::evalLast([this]() {
                  return Loop::Round(this);
                }).eagerlyEvaluate([this](kj::Exception&& e) { WriteFailed(kj::mv(e)); });
}

void BufferedIoStream::RoundWritten() {
  const size_t written = inflight_.size();
  inflight_.clear();
  // A burst's big buffer is not kept for the rest of the connection's life.
  if (inflight_.capacity() > kKeptBufferBytes) inflight_ = kj::Vector<kj::byte>();
  if (options_.shared != nullptr) options_.shared->Sub(written);  // invariant 4
  KJ_IF_MAYBE (waiter, room_waiter_) {
    if (pending_.size() < options_.write_wait_bytes) {
      (*waiter)->fulfill();
      room_waiter_ = nullptr;
    }
  }
  WakeReader();
}

void BufferedIoStream::WriteFailed(kj::Exception&& e) {
  writing_ = false;
  // Invariant 3: nothing buffered will ever be written. The inner write has ended, so its
  // buffer is free too.
  if (options_.shared != nullptr) options_.shared->Sub(unwritten_bytes());
  pending_ = kj::Vector<kj::byte>();
  inflight_ = kj::Vector<kj::byte>();
  KJ_IF_MAYBE (waiter, room_waiter_) {
    (*waiter)->reject(kj::cp(e));
    room_waiter_ = nullptr;
  }
  write_error_ = kj::mv(e);
  WakeReader();  // reads no longer pause; they see the socket's own state
  for (auto& waiter : flush_waiters_) waiter->fulfill();
  flush_waiters_.clear();
}

void BufferedIoStream::shutdownWrite() {
  if (writing_) {
    shutdown_requested_ = true;  // after the buffered bytes
  } else {
    inner_->shutdownWrite();
  }
}

}  // namespace tw::rpc
