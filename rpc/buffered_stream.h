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
//
// Backpressure (Options). By default write() waits while kWriteBufferHighBytes are unwritten,
// and reads never wait. A server wants the opposite: capnp builds every reply before it writes
// it and queues it inside itself while write() waits, where nobody can count it. So the server
// lets write() always accept (every unwritten byte is then in this buffer, counted) and instead
// stops *reading* a peer that does not read its replies: tryRead() waits while this stream holds
// read_pause_bytes unwritten, or while a SharedWriteBacklog over many streams is over its mark
// and this stream holds shared_pause_bytes. Nothing new is read, so no new reply is made.
//
// Invariants:
//  1. At most one write to the inner stream is in progress (writing_).
//  2. pending_ holds bytes accepted but not yet handed to the inner stream, in order.
//  3. Once a write failed, every later write fails with that error (reads see the socket's own
//     error), nothing stays buffered, and reads no longer pause.
//  4. The shared backlog, if any, counts exactly pending_.size() + inflight_.size() for this
//     stream, from acceptance until the bytes are written, dropped (a write error) or the stream
//     is destroyed.
//  5. Once FailReads() was called, every read fails with its exception (the one in progress
//     too, if it waits for the socket -- whose read side FailReads shuts -- or for a pause).
// KJ thread only (like every KJ object).
#pragma once

#include <kj/array.h>
#include <kj/async-io.h>
#include <kj/vector.h>

#include <cstddef>
#include <cstdint>

namespace tw::rpc {

// Unwritten bytes summed over many BufferedIoStreams (one server's connections), with a mark:
// while the sum is at or over it, the streams holding a little or more stop reading. KJ thread
// only; outlives its streams.
class SharedWriteBacklog {
 public:
  explicit SharedWriteBacklog(size_t high_bytes) : high_bytes_(high_bytes) {}
  ~SharedWriteBacklog() noexcept(false) {}
  SharedWriteBacklog(const SharedWriteBacklog&) = delete;
  SharedWriteBacklog& operator=(const SharedWriteBacklog&) = delete;

  size_t bytes() const { return bytes_; }
  size_t high_bytes() const { return high_bytes_; }
  bool over() const { return bytes_ >= high_bytes_; }
  // Resolves once bytes() is under the mark (at once if it is).
  kj::Promise<void> WhenUnder();

  // The streams' accounting (invariant 4 of BufferedIoStream).
  void Add(size_t n) { bytes_ += n; }
  void Sub(size_t n);

 private:
  const size_t high_bytes_;
  size_t bytes_ = 0;
  kj::Own<kj::PromiseFulfiller<void>> under_fulfiller_;  // set while someone may wait
  kj::ForkedPromise<void> under_ = nullptr;
};

class BufferedIoStream final : public kj::AsyncIoStream {
 public:
  static constexpr size_t kReadBufferBytes = 64 * 1024;
  // Accepted-but-unwritten bytes above which write() waits for the socket (the default).
  static constexpr size_t kWriteBufferHighBytes = 1 << 20;
  // A write buffer up to this capacity is reused for the next round; a bigger one is freed.
  static constexpr size_t kKeptBufferBytes = 64 * 1024;
  static constexpr size_t kNever = SIZE_MAX;

  struct Options {
    // write() waits for the socket while this many accepted bytes are not yet handed to it.
    // kNever: write() always accepts at once; the caller bounds what it writes (by the reads
    // below).
    size_t write_wait_bytes = kWriteBufferHighBytes;
    // tryRead() waits while this stream holds this many bytes not yet written. kNever: never.
    size_t read_pause_bytes = kNever;
    // Optional, outlives the stream: while it is over its mark, tryRead() also waits if this
    // stream holds shared_pause_bytes or more not yet written.
    SharedWriteBacklog* shared = nullptr;
    size_t shared_pause_bytes = kNever;
  };

  explicit BufferedIoStream(kj::Own<kj::AsyncIoStream> inner)
      : BufferedIoStream(kj::mv(inner), Options()) {}
  BufferedIoStream(kj::Own<kj::AsyncIoStream> inner, const Options& options);
  ~BufferedIoStream() noexcept(false);

  // AsyncInputStream. One read at a time (as for any KJ stream).
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

  // Ends reading: the read in progress (if it waits) and every later one fail with `reason`.
  // Writing goes on. Idempotent (the first reason stays).
  void FailReads(const kj::Exception& reason);

  // Bytes accepted by write() and not yet written to the inner stream.
  size_t unwritten_bytes() const { return pending_.size() + inflight_.size(); }
  // Resolves once everything accepted so far is written (or a write failed).
  kj::Promise<void> WhenFlushed();

  // Counters, for tests and benchmarks.
  uint64_t inner_reads() const { return inner_reads_; }
  uint64_t inner_writes() const { return inner_writes_; }
  uint64_t read_pauses() const { return read_pauses_; }  // tryRead calls that had to wait

 private:
  kj::Promise<size_t> ReadInto(kj::byte* dst, size_t min_bytes, size_t max_bytes, size_t done);
  bool ReadsPaused() const;
  void ThrowIfReadsFailed() const;
  kj::Promise<void> WhenReadsMayResume();
  void StartWrite();
  void RoundWritten();
  void WriteFailed(kj::Exception&& e);
  void WakeReader();

  kj::Own<kj::AsyncIoStream> inner_;
  const Options options_;

  kj::Array<kj::byte> read_buffer_;
  size_t read_begin_ = 0;  // unread bytes are read_buffer_[read_begin_, read_end_)
  size_t read_end_ = 0;

  kj::Vector<kj::byte> pending_;   // accepted, not yet written (invariant 2)
  kj::Vector<kj::byte> inflight_;  // being written now; empty between rounds (reused)
  bool writing_ = false;           // a flush is scheduled or in progress (invariant 1)
  bool shutdown_requested_ = false;
  kj::Maybe<kj::Exception> write_error_;                        // invariant 3
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> room_waiter_;  // a write() waiting for room
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> read_waiter_;  // a paused tryRead()
  kj::Maybe<kj::Exception> read_failure_;                       // invariant 5
  kj::Vector<kj::Own<kj::PromiseFulfiller<void>>> flush_waiters_;
  kj::Promise<void> write_task_ = nullptr;

  uint64_t inner_reads_ = 0;
  uint64_t inner_writes_ = 0;
  uint64_t read_pauses_ = 0;
};

}  // namespace tw::rpc
