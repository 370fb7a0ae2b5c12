// A buffering wrapper for a KJ byte stream, under Cap'n Proto's two-party transport. Private to
// rpc/.
//
// Why: capnp 0.9 reads each message with two or more read() calls (first word, then the rest)
// and writes each message with its own write(). Under load that is several system calls per
// message on each side, which costs more than the RPC work itself. This wrapper
//  - reads up to kReadBufferBytes per read() and serves capnp's small reads from the buffer;
//  - coalesces writes: messages are appended to a buffer that is written when the event loop
//    is about to wait for I/O (kj::evalLast), so everything one burst of events produces -- the
//    replies of one engine batch, a client's pipelined calls -- leaves in one write(); messages
//    accepted while that write is in progress go in the next. No timer: nothing waits longer
//    than the current burst of events.
// Invariants:
//  1. At most one write to the inner stream is in progress (writing_).
//  2. pending_ holds bytes accepted but not yet handed to the inner stream, in order.
//  3. Once a write failed, every later write fails with that error (reads see the socket's own
//     error).
// KJ thread only (like every KJ object).
#pragma once

#include <kj/array.h>
#include <kj/async-io.h>
#include <kj/vector.h>

#include <cstddef>
#include <cstdint>

namespace tw::rpc {

class BufferedIoStream final : public kj::AsyncIoStream {
 public:
  static constexpr size_t kReadBufferBytes = 64 * 1024;
  // Accepted-but-unwritten bytes above which write() waits for the socket (backpressure).
  static constexpr size_t kWriteBufferHighBytes = 1 << 20;
  // A write buffer up to this capacity is reused for the next round; a bigger one is freed.
  static constexpr size_t kKeptBufferBytes = 64 * 1024;

  explicit BufferedIoStream(kj::Own<kj::AsyncIoStream> inner);
  ~BufferedIoStream() noexcept(false);

  // AsyncInputStream
  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override;

  // AsyncOutputStream
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }

  // AsyncIoStream
  void shutdownWrite() override;
  void abortRead() override { inner_->abortRead(); }
  void getsockopt(int level, int option, void* value, kj::uint* length) override {
    inner_->getsockopt(level, option, value, length);
  }
  void setsockopt(int level, int option, const void* value, kj::uint length) override {
    inner_->setsockopt(level, option, value, length);
  }
  void getsockname(struct sockaddr* addr, kj::uint* length) override {
    inner_->getsockname(addr, length);
  }
  void getpeername(struct sockaddr* addr, kj::uint* length) override {
    inner_->getpeername(addr, length);
  }

  // Counters, for tests and benchmarks.
  uint64_t inner_reads() const { return inner_reads_; }
  uint64_t inner_writes() const { return inner_writes_; }

 private:
  kj::Promise<size_t> ReadInto(kj::byte* dst, size_t min_bytes, size_t max_bytes, size_t done);
  void StartWrite();

  kj::Own<kj::AsyncIoStream> inner_;

  kj::Array<kj::byte> read_buffer_;
  size_t read_begin_ = 0;  // unread bytes are read_buffer_[read_begin_, read_end_)
  size_t read_end_ = 0;

  kj::Vector<kj::byte> pending_;   // accepted, not yet written (invariant 2)
  kj::Vector<kj::byte> inflight_;  // being written now; empty between rounds (reused)
  bool writing_ = false;           // a flush is scheduled or in progress (invariant 1)
  bool shutdown_requested_ = false;
  kj::Maybe<kj::Exception> write_error_;                        // invariant 3
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> room_waiter_;  // a write() waiting for room
  kj::Promise<void> write_task_ = nullptr;

  uint64_t inner_reads_ = 0;
  uint64_t inner_writes_ = 0;
};

}  // namespace tw::rpc
