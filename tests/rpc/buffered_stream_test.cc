// The buffering transport wrapper (rpc/buffered_stream.h): bytes arrive intact and in order,
// small reads are served from one socket read, writes made while one is in progress are
// coalesced, EOF is reported, and a write error sticks. Backpressure the server's way: writes
// always accepted and counted, reads paused while the peer does not read (alone, or summed
// over streams).
#include "rpc/buffered_stream.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/debug.h>

#include <string>
#include <vector>

namespace tw::rpc {
namespace {

// Reads n bytes (fewer only at end of stream), waiting on `scope`.
std::string ReadBytes(BufferedIoStream& s, size_t n, kj::WaitScope& scope) {
  std::string out(n, '\0');
  out.resize(s.tryRead(out.data(), n, n).wait(scope));
  return out;
}

class BufferedStreamTest : public ::testing::Test {
 protected:
  ~BufferedStreamTest() noexcept override {}
  void SetUp() override {
    auto pipe = io_.provider->newTwoWayPipe();
    a_ = kj::heap<BufferedIoStream>(kj::mv(pipe.ends[0]));
    b_ = kj::heap<BufferedIoStream>(kj::mv(pipe.ends[1]));
  }
  std::string ReadExactly(BufferedIoStream& s, size_t n) { return ReadBytes(s, n, io_.waitScope); }

  kj::AsyncIoContext io_ = kj::setupAsyncIo();
  kj::Own<BufferedIoStream> a_;
  kj::Own<BufferedIoStream> b_;
};

TEST_F(BufferedStreamTest, ManySmallWritesArriveInOrderCoalesced) {
  std::string expect;
  std::vector<kj::Promise<void>> writes;
  for (int i = 0; i < 1000; ++i) {
    const std::string msg = "message-" + std::to_string(i) + ";";
    expect += msg;
    writes.push_back(a_->write(msg.data(), msg.size()));
  }
  for (auto& w : writes) w.wait(io_.waitScope);
  // Read in small, capnp-like pieces: 8 bytes then the rest.
  std::string got;
  while (got.size() < expect.size()) {
    got += ReadExactly(*b_, std::min<size_t>(8, expect.size() - got.size()));
    got += ReadExactly(*b_, std::min<size_t>(100, expect.size() - got.size()));
  }
  EXPECT_EQ(got, expect);
  EXPECT_LT(a_->inner_writes(), 1000u / 10) << "writes made back to back must share syscalls";
  EXPECT_LT(b_->inner_reads(), 1000u / 10) << "small reads must come from the buffer";
}

TEST_F(BufferedStreamTest, LargeReadAndWriteGoStraightThrough) {
  std::string big(3 * BufferedIoStream::kReadBufferBytes + 17, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  auto write = a_->write(big.data(), big.size());
  const std::string got = ReadExactly(*b_, big.size());
  write.wait(io_.waitScope);
  EXPECT_EQ(got, big);
}

// The two write buffers are swapped and reused between rounds, and one grown past
// kKeptBufferBytes is dropped: no round may carry bytes of an earlier one, whatever the sizes.
TEST_F(BufferedStreamTest, ReusedWriteBuffersCarryNothingOver) {
  for (int round = 0; round < 40; ++round) {
    const size_t size = round % 7 == 3 ? 2 * BufferedIoStream::kKeptBufferBytes + round
                                       : static_cast<size_t>(1 + round * 37);
    std::string msg(size, '\0');
    for (size_t i = 0; i < size; ++i) msg[i] = static_cast<char>('A' + (round + i) % 26);
    auto write = a_->write(msg.data(), msg.size());
    EXPECT_EQ(ReadExactly(*b_, msg.size()), msg) << "round " << round;
    write.wait(io_.waitScope);
  }
  // Nothing extra is left behind: the next bytes on the wire are the next write's.
  a_->write("end", 3).wait(io_.waitScope);
  EXPECT_EQ(ReadExactly(*b_, 3), "end");
}

TEST_F(BufferedStreamTest, EndOfStreamIsShortRead) {
  a_->write("abc", 3).wait(io_.waitScope);
  a_->shutdownWrite();
  char buf[16];
  EXPECT_EQ(b_->tryRead(buf, 10, sizeof(buf)).wait(io_.waitScope), 3u);
  EXPECT_EQ(std::string(buf, 3), "abc");
  EXPECT_EQ(b_->tryRead(buf, 1, sizeof(buf)).wait(io_.waitScope), 0u);
}

TEST_F(BufferedStreamTest, WriteErrorSticks) {
  b_ = nullptr;  // the peer is gone
  // The first writes may be accepted into the buffer; once the socket write fails, every later
  // write reports it.
  bool failed = false;
  for (int i = 0; i < 100 && !failed; ++i) {
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                   a_->write("x", 1).wait(io_.waitScope);
                   io_.provider->getTimer().afterDelay(1 * kj::MILLISECONDS).wait(io_.waitScope);
                 })) {
      (void)e;
      failed = true;
    }
  }
  EXPECT_TRUE(failed);
  EXPECT_ANY_THROW(a_->write("y", 1).wait(io_.waitScope));
}

// ---- Backpressure ----------------------------------------------------------------------

// More than any socket pair buffers, so that most of it stays in the stream.
constexpr size_t kFlood = 8 << 20;

BufferedIoStream::Options ServerLike(size_t read_pause_bytes, SharedWriteBacklog* shared = nullptr,
                                     size_t shared_pause_bytes = BufferedIoStream::kNever) {
  BufferedIoStream::Options options;
  options.write_wait_bytes = BufferedIoStream::kNever;
  options.read_pause_bytes = read_pause_bytes;
  options.shared = shared;
  options.shared_pause_bytes = shared_pause_bytes;
  return options;
}

class BackpressureTest : public ::testing::Test {
 protected:
  ~BackpressureTest() noexcept override {}
  struct Pair {
    kj::Own<BufferedIoStream> server;
    kj::Own<BufferedIoStream> client;
  };
  Pair Connect(const BufferedIoStream::Options& server_options) {
    auto pipe = io_.provider->newTwoWayPipe();
    return Pair{kj::heap<BufferedIoStream>(kj::mv(pipe.ends[0]), server_options),
                kj::heap<BufferedIoStream>(kj::mv(pipe.ends[1]))};
  }
  // Starts a read of n bytes that sets *done when it completes.
  kj::Promise<void> ReadInBackground(BufferedIoStream& s, char* buffer, size_t n, bool* done) {
    return s.tryRead(buffer, n, n).then([done](size_t) { *done = true; }).eagerlyEvaluate(nullptr);
  }
  // Writes `data`; false if the write did not complete at once.
  bool WriteAccepted(BufferedIoStream& s, const std::string& data) {
    auto write = s.write(data.data(), data.size());
    if (!write.poll(io_.waitScope)) return false;
    write.wait(io_.waitScope);
    return true;
  }
  void Turns(int n) {
    for (int i = 0; i < n; ++i) {
      io_.waitScope.poll();
      io_.provider->getTimer().afterDelay(1 * kj::MILLISECONDS).wait(io_.waitScope);
    }
  }
  std::string ReadExactly(BufferedIoStream& s, size_t n) { return ReadBytes(s, n, io_.waitScope); }

  kj::AsyncIoContext io_ = kj::setupAsyncIo();
};

// A peer that does not read its replies is not read either, until it drains them; the replies
// are accepted at once (never left waiting in the caller) and counted.
TEST_F(BackpressureTest, ReadsPauseWhileTheStreamHoldsUnwrittenBytes) {
  Pair p = Connect(ServerLike(64 * 1024));
  std::string replies(kFlood, 'r');
  ASSERT_TRUE(WriteAccepted(*p.server, replies)) << "a write waited";
  Turns(5);  // the socket takes what it takes
  EXPECT_GE(p.server->unwritten_bytes(), 64u * 1024);
  p.client->write("call", 4).wait(io_.waitScope);
  char call[4];
  bool read_done = false;
  auto read = ReadInBackground(*p.server, call, sizeof(call), &read_done);
  Turns(20);
  EXPECT_FALSE(read_done) << "read a call while " << p.server->unwritten_bytes()
                          << " reply bytes were unread";
  EXPECT_GE(p.server->read_pauses(), 1u);
  // The peer reads its replies: the call is read.
  EXPECT_EQ(ReadExactly(*p.client, replies.size()), replies);
  read.wait(io_.waitScope);
  EXPECT_TRUE(read_done);
  EXPECT_EQ(std::string(call, 4), "call");
  EXPECT_EQ(p.server->unwritten_bytes(), 0u);
}

// Summed over streams: while the total is over its mark, a stream holding shared_pause_bytes
// stops reading, one holding less reads on; under the mark again, all read. Every byte leaves
// the sum when written, and when a stream with unwritten bytes goes.
TEST_F(BackpressureTest, ASharedBacklogPausesOnlyTheStreamsThatHoldIt) {
  SharedWriteBacklog backlog(256 * 1024);
  const auto options = ServerLike(BufferedIoStream::kNever, &backlog, 4096);
  Pair hog = Connect(options);
  Pair fine = Connect(options);
  std::string replies(kFlood, 'r');
  ASSERT_TRUE(WriteAccepted(*hog.server, replies));
  Turns(5);
  EXPECT_EQ(backlog.bytes(), hog.server->unwritten_bytes());
  ASSERT_TRUE(backlog.over());
  hog.client->write("call", 4).wait(io_.waitScope);
  char hog_call[4];
  bool hog_read = false;
  auto hog_reading = ReadInBackground(*hog.server, hog_call, sizeof(hog_call), &hog_read);
  // The other stream holds nothing: it is served.
  fine.client->write("ping", 4).wait(io_.waitScope);
  EXPECT_EQ(ReadExactly(*fine.server, 4), "ping");
  fine.server->write("pong", 4).wait(io_.waitScope);
  EXPECT_EQ(ReadExactly(*fine.client, 4), "pong");
  Turns(20);
  EXPECT_FALSE(hog_read);
  // The hog's peer reads: the sum falls under the mark and the hog reads again.
  EXPECT_EQ(ReadExactly(*hog.client, replies.size()), replies);
  hog_reading.wait(io_.waitScope);
  EXPECT_TRUE(hog_read);
  EXPECT_EQ(backlog.bytes(), 0u);
  // A stream that goes with bytes unwritten takes them out of the sum.
  ASSERT_TRUE(WriteAccepted(*hog.server, replies));
  Turns(2);
  EXPECT_GT(backlog.bytes(), 0u);
  hog.server = nullptr;
  EXPECT_EQ(backlog.bytes(), 0u);
}

// A failed write drops what was buffered (nothing will ever send it), and reads no longer
// pause: they see the socket's own end.
TEST_F(BackpressureTest, AWriteErrorReleasesTheBacklogAndTheReads) {
  SharedWriteBacklog backlog(256 * 1024);
  Pair p = Connect(ServerLike(64 * 1024, &backlog, 4096));
  std::string replies(kFlood, 'r');
  ASSERT_TRUE(WriteAccepted(*p.server, replies));
  Turns(2);
  ASSERT_GT(backlog.bytes(), 0u);
  char buffer[4];
  bool read_done = false;
  auto read =
      p.server->tryRead(buffer, 1, sizeof(buffer))
          .then([&](size_t) { read_done = true; }, [&](kj::Exception&&) { read_done = true; })
          .eagerlyEvaluate(nullptr);
  Turns(5);
  EXPECT_FALSE(read_done);
  p.client = nullptr;  // the peer is gone: the write fails
  for (int i = 0; i < 1000 && !read_done; ++i) Turns(1);
  EXPECT_TRUE(read_done);
  EXPECT_EQ(p.server->unwritten_bytes(), 0u);
  EXPECT_EQ(backlog.bytes(), 0u);
}

// FailReads ends reading with a reason: a read waiting for the socket fails with it, and so
// does every later one; writing goes on (the reason can still be sent).
TEST_F(BackpressureTest, FailReadsFailsTheWaitingReadAndTheNextOnes) {
  Pair p = Connect(ServerLike(64 * 1024));
  char buffer[4];
  auto read_outcome = [&](std::string* outcome) {
    return p.server->tryRead(buffer, 1, sizeof(buffer))
        .then([outcome](size_t) { *outcome = "read returned"; },
              [outcome](kj::Exception&& e) { *outcome = e.getDescription().cStr(); })
        .eagerlyEvaluate(nullptr);
  };
  std::string first;
  auto read = read_outcome(&first);
  Turns(2);
  EXPECT_TRUE(first.empty());
  p.server->FailReads(KJ_EXCEPTION(DISCONNECTED, "closing: no call in time"));
  for (int i = 0; i < 1000 && first.empty(); ++i) Turns(1);
  EXPECT_NE(first.find("closing: no call in time"), std::string::npos) << first;
  std::string next;
  auto later = read_outcome(&next);
  for (int i = 0; i < 1000 && next.empty(); ++i) Turns(1);
  EXPECT_NE(next.find("closing: no call in time"), std::string::npos) << next;
  ASSERT_TRUE(WriteAccepted(*p.server, "bye!"));
  EXPECT_EQ(ReadExactly(*p.client, 4), "bye!");
}

// By default (the client's way) a write waits while kWriteBufferHighBytes are unwritten.
TEST_F(BackpressureTest, ByDefaultWritesWaitAndReadsDoNot) {
  Pair p = Connect(BufferedIoStream::Options());
  std::string replies(kFlood, 'r');
  auto waiting = p.server->write(replies.data(), replies.size());
  Turns(5);
  EXPECT_FALSE(waiting.poll(io_.waitScope));
  p.client->write("call", 4).wait(io_.waitScope);
  EXPECT_EQ(ReadExactly(*p.server, 4), "call");  // reads do not pause
  EXPECT_EQ(ReadExactly(*p.client, replies.size()), replies);
  waiting.wait(io_.waitScope);
}

}  // namespace
}  // namespace tw::rpc
