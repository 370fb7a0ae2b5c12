// tw-test-labels: threads
//
// Reply bursts (engine/reply_burst.h): one flush per registered sink at the outermost scope's
// end, bounded registrations, keep-alives, and bursts being per thread.
#include "engine/reply_burst.h"

#include <gtest/gtest.h>

#include <memory>
#include <thread>
#include <vector>

#include "engine/limits.h"

namespace tw {
namespace {

class CountingSink : public ReplyBurst::Sink {
 public:
  void FlushBurst() override {
    ++flushes;
    flushed_inside_burst = ReplyBurst::Active();
  }
  int flushes = 0;
  bool flushed_inside_burst = true;
};

TEST(ReplyBurstTest, NoBurstNoDeferral) {
  CountingSink sink;
  EXPECT_FALSE(ReplyBurst::Active());
  EXPECT_FALSE(ReplyBurst::Defer(&sink));
  EXPECT_EQ(sink.flushes, 0);
}

TEST(ReplyBurstTest, OneFlushPerSinkAtTheOutermostScopeEnd) {
  CountingSink a;
  CountingSink b;
  {
    ReplyBurst::Scope outer;
    EXPECT_TRUE(ReplyBurst::Active());
    EXPECT_TRUE(ReplyBurst::Defer(&a));
    {
      ReplyBurst::Scope inner;
      EXPECT_TRUE(ReplyBurst::Defer(&a));
      EXPECT_TRUE(ReplyBurst::Defer(&b));
    }
    EXPECT_TRUE(ReplyBurst::Active());
    EXPECT_EQ(a.flushes, 0);  // the inner scope's end is not the burst's
    EXPECT_EQ(b.flushes, 0);
    EXPECT_TRUE(ReplyBurst::Defer(&a));
  }
  EXPECT_FALSE(ReplyBurst::Active());
  EXPECT_EQ(a.flushes, 1);
  EXPECT_EQ(b.flushes, 1);
  EXPECT_FALSE(a.flushed_inside_burst);  // a flush's own posts wake at once
  {
    ReplyBurst::Scope next;  // a new burst starts with nothing registered
  }
  EXPECT_EQ(a.flushes, 1);
}

TEST(ReplyBurstTest, SinksPastTheLimitAreRefused) {
  std::vector<CountingSink> sinks(limits::kBurstSinksMax + 1);
  {
    ReplyBurst::Scope burst;
    for (size_t i = 0; i < limits::kBurstSinksMax; ++i) EXPECT_TRUE(ReplyBurst::Defer(&sinks[i]));
    EXPECT_FALSE(ReplyBurst::Defer(&sinks.back()));  // its caller wakes its consumer itself
    EXPECT_TRUE(ReplyBurst::Defer(&sinks[0]));       // already registered
  }
  for (size_t i = 0; i < limits::kBurstSinksMax; ++i) EXPECT_EQ(sinks[i].flushes, 1) << i;
  EXPECT_EQ(sinks.back().flushes, 0);
}

TEST(ReplyBurstTest, DeferWakeHoldsUpToBurstRepliesPerWake) {
  CountingSink sink;
  EXPECT_FALSE(ReplyBurst::DeferWake(&sink, 1));  // no burst: wake now
  {
    ReplyBurst::Scope burst;
    EXPECT_TRUE(ReplyBurst::DeferWake(&sink, 1));
    EXPECT_TRUE(ReplyBurst::DeferWake(&sink, limits::kBurstRepliesPerWake));
    EXPECT_FALSE(ReplyBurst::DeferWake(&sink, limits::kBurstRepliesPerWake + 1));
  }
  EXPECT_EQ(sink.flushes, 1);
}

class OwnedSink : public ReplyBurst::Sink, public std::enable_shared_from_this<OwnedSink> {
 public:
  explicit OwnedSink(int* flushes) : flushes_(flushes) {}
  void FlushBurst() override { ++*flushes_; }
  std::shared_ptr<void> KeepAliveForBurst() override { return shared_from_this(); }

 private:
  int* flushes_;
};

TEST(ReplyBurstTest, HoldsASinkWhoseOwnersAreGoneUntilItsFlush) {
  int flushes = 0;
  auto sink = std::make_shared<OwnedSink>(&flushes);
  std::weak_ptr<OwnedSink> watch = sink;
  {
    ReplyBurst::Scope burst;
    EXPECT_TRUE(ReplyBurst::Defer(sink.get()));
    sink.reset();  // as when the burst's last callback holding it is destroyed
    EXPECT_FALSE(watch.expired());
  }
  EXPECT_EQ(flushes, 1);
  EXPECT_TRUE(watch.expired());  // released right after its flush
}

TEST(ReplyBurstTest, ABurstBelongsToItsThread) {
  CountingSink mine;
  CountingSink theirs;
  bool other_active = true;
  bool other_deferred = true;
  {
    ReplyBurst::Scope burst;
    EXPECT_TRUE(ReplyBurst::Defer(&mine));
    std::thread other([&] {
      other_active = ReplyBurst::Active();
      other_deferred = ReplyBurst::Defer(&theirs);
    });
    other.join();
  }
  EXPECT_FALSE(other_active);
  EXPECT_FALSE(other_deferred);
  EXPECT_EQ(mine.flushes, 1);
  EXPECT_EQ(theirs.flushes, 0);
}

}  // namespace
}  // namespace tw
