// The buffering transport wrapper (rpc/buffered_stream.h): bytes arrive intact and in order,
// small reads are served from one socket read, writes made while one is in progress are
// coalesced, EOF is reported, and a write error sticks.
#include "rpc/buffered_stream.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>

#include <string>
#include <vector>

namespace tw::rpc {
namespace {

class BufferedStreamTest : public ::testing::Test {
 protected:
  ~BufferedStreamTest() noexcept override {}
  void SetUp() override {
    auto pipe = io_.provider->newTwoWayPipe();
    a_ = kj::heap<BufferedIoStream>(kj::mv(pipe.ends[0]));
    b_ = kj::heap<BufferedIoStream>(kj::mv(pipe.ends[1]));
  }
  std::string ReadExactly(BufferedIoStream& s, size_t n) {
    std::string out(n, '\0');
    const size_t got = s.tryRead(out.data(), n, n).wait(io_.waitScope);
    out.resize(got);
    return out;
  }

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

}  // namespace
}  // namespace tw::rpc
