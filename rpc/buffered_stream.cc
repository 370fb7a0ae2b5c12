#include "rpc/buffered_stream.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "engine/assert.h"

namespace tw::rpc {

BufferedIoStream::BufferedIoStream(kj::Own<kj::AsyncIoStream> inner)
    : inner_(kj::mv(inner)), read_buffer_(kj::heapArray<kj::byte>(kReadBufferBytes)) {}

BufferedIoStream::~BufferedIoStream() noexcept(false) {}

kj::Promise<size_t> BufferedIoStream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  TW_ASSERT(min_bytes <= max_bytes);
  return ReadInto(static_cast<kj::byte*>(buffer), min_bytes, max_bytes, 0);
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
    return inner_->tryRead(dst + done, want, max_bytes - done).then([done](size_t got) {
      return done + got;
    });
  }
  return inner_->tryRead(read_buffer_.begin(), want, kReadBufferBytes)
      .then([this, dst, min_bytes, max_bytes, done, want](size_t got) -> kj::Promise<size_t> {
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

kj::Promise<void> BufferedIoStream::write(const void* buffer, size_t size) {
  kj::ArrayPtr<const kj::byte> piece(static_cast<const kj::byte*>(buffer), size);
  return write(kj::arrayPtr(&piece, 1));
}

kj::Promise<void> BufferedIoStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  KJ_IF_MAYBE (e, write_error_) {
    return kj::cp(*e);
  }
  for (const auto& piece : pieces) pending_.addAll(piece);
  if (!writing_) StartWrite();
  if (pending_.size() < kWriteBufferHighBytes) return kj::READY_NOW;
  // Too much accepted and unwritten: this writer waits for the socket.
  auto paf = kj::newPromiseAndFulfiller<void>();
  TW_ASSERT(room_waiter_ == nullptr);  // capnp waits for each write before the next
  room_waiter_ = kj::mv(paf.fulfiller);
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
        s->inflight_.clear();
        // A burst's big buffer is not kept for the rest of the connection's life.
        if (s->inflight_.capacity() > kKeptBufferBytes) s->inflight_ = kj::Vector<kj::byte>();
        KJ_IF_MAYBE (waiter, s->room_waiter_) {
          if (s->pending_.size() < kWriteBufferHighBytes) {
            (*waiter)->fulfill();
            s->room_waiter_ = nullptr;
          }
        }
        return kj::evalLast([s]() { return Round(s); });
      });
    }
  };
  // The previous loop, if any, has finished (writing_ was false): replacing it is safe. A socket
  // write that throws at once (EPIPE) becomes a rejection like any other.
  write_task_ = kj::evalLast([this]() {
                  return Loop::Round(this);
                }).eagerlyEvaluate([this](kj::Exception&& e) {
    writing_ = false;
    KJ_IF_MAYBE (waiter, room_waiter_) {
      (*waiter)->reject(kj::cp(e));
      room_waiter_ = nullptr;
    }
    write_error_ = kj::mv(e);
  });
}

void BufferedIoStream::shutdownWrite() {
  if (writing_) {
    shutdown_requested_ = true;  // after the buffered bytes
  } else {
    inner_->shutdownWrite();
  }
}

}  // namespace tw::rpc
