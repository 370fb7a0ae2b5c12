// tw-test-labels: threads
//
// The engine -> RPC thread hand-off (rpc/mailbox.h): order, one wake-up per run of posts and
// per reply burst, and closing.
#include "rpc/mailbox.h"

#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/timer.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "engine/limits.h"
#include "engine/reply_burst.h"

namespace tw::rpc {
namespace {

class MailboxTest : public ::testing::Test {
 protected:
  ~MailboxTest() noexcept override {}

  // Runs the loop until `done` or a 20 s bound.
  bool RunUntil(const std::function<bool()>& done) {
    for (int i = 0; i < 20'000 && !done(); ++i) {
      io_.provider->getTimer().afterDelay(1 * kj::MILLISECONDS).wait(io_.waitScope);
    }
    return done();
  }

  kj::AsyncIoContext io_ = kj::setupAsyncIo();
  Mailbox mailbox_;
};

TEST_F(MailboxTest, ARunOfPostsIsOneHandoffAndKeepsOrder) {
  kj::Promise<void> pump = mailbox_.Run(*io_.lowLevelProvider).eagerlyEvaluate(nullptr);
  io_.waitScope.poll();  // the pump arms its doorbell
  std::vector<int> seen;
  // The "engine thread" posts 1000 replies back to back while this thread is not looking.
  std::thread engine([&]() {
    for (int i = 0; i < 1000; ++i) mailbox_.Post([&seen, i]() { seen.push_back(i); });
  });
  engine.join();
  ASSERT_TRUE(RunUntil([&]() { return seen.size() == 1000; }));
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(seen[i], i);
  EXPECT_EQ(mailbox_.handoffs(), 1u);
  EXPECT_EQ(mailbox_.delivered(), 1000u);
}

TEST_F(MailboxTest, AReplyBurstRingsOnceAtItsEnd) {
  kj::Promise<void> pump = mailbox_.Run(*io_.lowLevelProvider).eagerlyEvaluate(nullptr);
  io_.waitScope.poll();  // the pump arms its doorbell
  std::vector<int> seen;
  uint64_t rings_inside = 99;
  std::thread engine([&]() {
    ReplyBurst::Scope burst;
    for (int i = 0; i < 100; ++i) mailbox_.Post([&seen, i]() { seen.push_back(i); });
    rings_inside = mailbox_.handoffs();
  });
  engine.join();
  EXPECT_EQ(rings_inside, 0u);  // the RPC thread slept through the burst
  EXPECT_EQ(mailbox_.handoffs(), 1u);
  ASSERT_TRUE(RunUntil([&]() { return seen.size() == 100; }));
  for (int i = 0; i < 100; ++i) ASSERT_EQ(seen[i], i);
  EXPECT_EQ(mailbox_.handoffs(), 1u);
}

TEST_F(MailboxTest, ALongBurstRingsOnceItHoldsBurstRepliesPerWake) {
  kj::Promise<void> pump = mailbox_.Run(*io_.lowLevelProvider).eagerlyEvaluate(nullptr);
  io_.waitScope.poll();
  constexpr int kHeld = static_cast<int>(limits::kBurstRepliesPerWake);
  int delivered = 0;
  std::vector<uint64_t> rings;  // handoffs() after each post
  std::thread engine([&]() {
    ReplyBurst::Scope burst;
    for (int i = 0; i < kHeld + 10; ++i) {
      mailbox_.Post([&delivered]() { ++delivered; });
      rings.push_back(mailbox_.handoffs());
    }
  });
  engine.join();
  EXPECT_EQ(rings[kHeld - 1], 0u);
  EXPECT_EQ(rings[kHeld], 1u);  // the post past the limit rang
  EXPECT_EQ(rings.back(), 1u);  // and the RPC thread, not yet re-armed, needs no other ring
  EXPECT_EQ(mailbox_.handoffs(), 1u);
  ASSERT_TRUE(RunUntil([&]() { return delivered == kHeld + 10; }));
}

TEST(MailboxBurstTest, ABurstKeepsAMailboxAliveUntilItRings) {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  auto mailbox = std::make_shared<Mailbox>();
  std::weak_ptr<Mailbox> watch = mailbox;
  kj::Promise<void> pump = mailbox->Run(*io.lowLevelProvider).eagerlyEvaluate(nullptr);
  io.waitScope.poll();  // armed
  {
    ReplyBurst::Scope burst;
    EXPECT_TRUE(mailbox->Post([]() {}));
    pump = nullptr;   // nothing will run it any more; only the burst's ring is left
    mailbox.reset();  // its last owner gone, as when the engine drops a batch's callbacks
    EXPECT_FALSE(watch.expired());
  }
  EXPECT_TRUE(watch.expired());  // rang, then released
}

TEST_F(MailboxTest, ConcurrentPostersLoseNothing) {
  kj::Promise<void> pump = mailbox_.Run(*io_.lowLevelProvider).eagerlyEvaluate(nullptr);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 20'000;
  std::vector<std::vector<int>> seen(kThreads);
  std::vector<std::thread> posters;
  for (int t = 0; t < kThreads; ++t) {
    posters.emplace_back([&, t]() {
      for (int i = 0; i < kPerThread; ++i) mailbox_.Post([&seen, t, i]() { seen[t].push_back(i); });
    });
  }
  // The RPC thread drains while they post.
  const bool all = RunUntil([&]() {
    size_t n = 0;
    for (const auto& s : seen) n += s.size();
    return n == kThreads * kPerThread;
  });
  for (auto& p : posters) p.join();
  ASSERT_TRUE(all);
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) ASSERT_EQ(seen[t][i], i);  // per-poster order
  }
  EXPECT_LE(mailbox_.handoffs(), mailbox_.delivered());
  EXPECT_GE(mailbox_.handoffs(), 1u);
}

TEST_F(MailboxTest, PostsBeforeRunAreDelivered) {
  int runs = 0;
  mailbox_.Post([&]() { ++runs; });
  mailbox_.Post([&]() { ++runs; });
  kj::Promise<void> pump = mailbox_.Run(*io_.lowLevelProvider).eagerlyEvaluate(nullptr);
  ASSERT_TRUE(RunUntil([&]() { return runs == 2; }));
  EXPECT_EQ(mailbox_.handoffs(), 0u);  // nothing had to be woken
}

TEST_F(MailboxTest, CloseDropsPendingAndLaterPosts) {
  kj::Promise<void> pump = mailbox_.Run(*io_.lowLevelProvider).eagerlyEvaluate(nullptr);
  io_.waitScope.poll();
  auto token = std::make_shared<int>(7);
  std::weak_ptr<int> watch = token;
  int runs = 0;
  mailbox_.Post([&runs, token]() { ++runs; });
  token.reset();
  pump = nullptr;
  mailbox_.Close();
  EXPECT_TRUE(watch.expired());  // the dropped closure (and what it held) is gone
  EXPECT_FALSE(mailbox_.Post([&]() { ++runs; }));
  io_.waitScope.poll();
  EXPECT_EQ(runs, 0);
}

}  // namespace
}  // namespace tw::rpc
