// The engine core's parts on their own: the event log's cursors and trimming, the activity
// registry's slots, FIFOs and waiting polls, the task clocks, and the pending records'
// read-your-writes order. The whole core is exercised by engine_test.cc and the simulation.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "engine/activity_registry.h"
#include "engine/event_log.h"
#include "engine/pending_records.h"
#include "engine/task_clocks.h"
#include "storage/memory_store.h"

namespace tw {
namespace {

EventRecord Event(TaskState state) {
  EventRecord ev;
  ev.state = state;
  return ev;
}

class EventLogTest : public ::testing::Test {
 protected:
  // Seals the open batch and writes it, as the core does between commits.
  void Commit() {
    log_.Publish(log_.Seal());
    ASSERT_TRUE(store_.Write(batch_.get(), true).ok());
    batch_ = store_.NewBatch();
  }
  void AppendEvents(int n) {
    for (int i = 0; i < n; ++i) {
      EventRecord ev = Event(TaskState::kSucceeded);
      log_.Append(&ev, batch_.get());
    }
  }

  MemoryStore store_;
  std::unique_ptr<WriteBatch> batch_ = store_.NewBatch();
  EventLog log_;
};

TEST_F(EventLogTest, SequenceNumbersAreGaplessFromOne) {
  EventRecord a = Event(TaskState::kSucceeded);
  EventRecord b = Event(TaskState::kTimedOut);
  log_.Append(&a, batch_.get());
  log_.Append(&b, batch_.get());
  EXPECT_EQ(a.seq, 1u);
  EXPECT_EQ(b.seq, 2u);
  EXPECT_EQ(log_.published_last(), 0u) << "nothing is visible before its batch is written";
  Commit();
  EXPECT_EQ(log_.published_last(), 2u);
  log_.CheckInvariants();
}

TEST_F(EventLogTest, AnAckPastTheDurableEndIsRefusedAndChangesNothing) {
  ASSERT_TRUE(log_.Register("c", batch_.get()).ok());
  AppendEvents(3);
  // Appended but not sealed: not durable, so not ackable.
  Result<Empty> early = log_.Ack("c", 1, batch_.get());
  ASSERT_FALSE(early.ok());
  EXPECT_EQ(early.error.code, ErrorCode::kValidation);
  Commit();
  ASSERT_TRUE(log_.Ack("c", 3, batch_.get()).ok());
  ASSERT_TRUE(log_.Ack("c", 2, batch_.get()).ok()) << "an older ack is fine";
  EXPECT_EQ(log_.consumers().at(0).acked_seq, 3u) << "and does not move the cursor back";
  EXPECT_FALSE(log_.Ack("nobody", 1, batch_.get()).ok());
  log_.CheckInvariants();
}

TEST_F(EventLogTest, NotAckedCountsFromTheSlowestConsumer) {
  ASSERT_TRUE(log_.Register("fast", batch_.get()).ok());
  ASSERT_TRUE(log_.Register("slow", batch_.get()).ok());
  AppendEvents(5);
  Commit();
  ASSERT_TRUE(log_.Ack("fast", 5, batch_.get()).ok());
  ASSERT_TRUE(log_.Ack("slow", 2, batch_.get()).ok());
  Commit();
  EXPECT_EQ(log_.not_acked(), 3u);
  EXPECT_EQ(log_.published_first(), 3u) << "trimmed below the slowest cursor";
  log_.Delete("slow", batch_.get());
  Commit();
  EXPECT_EQ(log_.not_acked(), 0u);
  EXPECT_EQ(log_.published_first(), 6u);
  log_.CheckInvariants();
}

TEST_F(EventLogTest, ANewConsumerStartsAtTheEndAndTheCountIsBounded) {
  AppendEvents(2);
  Commit();
  Result<ConsumerInfo> c = log_.Register("late", batch_.get());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.value.acked_seq, 2u);
  for (size_t i = 1; i < limits::kConsumersMax; ++i) {
    ASSERT_TRUE(log_.Register("c" + std::to_string(i), batch_.get()).ok());
  }
  Result<ConsumerInfo> over = log_.Register("one-too-many", batch_.get());
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error.code, ErrorCode::kValidation);
  EXPECT_EQ(log_.consumers().size(), limits::kConsumersMax);
}

class ActivityRegistryTest : public ::testing::Test {
 protected:
  uint32_t Queue(uint32_t activity, uint64_t n) {
    const uint32_t slot = tasks_.Insert(TaskId{1, n});
    LiveTask& t = tasks_.at(slot);
    t.state = TaskState::kScheduled;
    t.activity = activity;
    registry_.AddRef(activity);
    registry_.Enqueue(tasks_, activity, slot, /*at_head=*/false);
    return slot;
  }

  TaskTable tasks_;
  ActivityRegistry registry_{"us-east-1", "123456789012"};
};

TEST_F(ActivityRegistryTest, ArnsResolveOnlyForLiveActivities) {
  const uint32_t a = registry_.Add(1, "resize", 1000);
  const std::string arn = "arn:aws:states:us-east-1:123456789012:activity:resize";
  EXPECT_EQ(registry_.at(a).arn, arn);
  EXPECT_EQ(registry_.FindByArn(arn), a);
  EXPECT_EQ(registry_.FindByArn(arn + "x"), kNilSlot);
  EXPECT_EQ(registry_.FindByArn("arn:aws:states:eu-west-1:123456789012:activity:resize"), kNilSlot);
  registry_.Remove(a);
  EXPECT_EQ(registry_.FindByArn(arn), kNilSlot);
  EXPECT_EQ(registry_.ArnForActivityId(1), arn) << "events of the deleted activity keep its ARN";
  registry_.CheckInvariants(tasks_);
}

TEST_F(ActivityRegistryTest, ADeletedSlotStaysWhileATaskRefersToIt) {
  const uint32_t a = registry_.Add(1, "a", 0);
  const uint32_t t = Queue(a, 1);
  registry_.Unlink(tasks_, t);
  tasks_.at(t).state = TaskState::kStarted;  // started tasks outlive their activity
  registry_.Remove(a);
  registry_.CheckInvariants(tasks_);
  const uint32_t b = registry_.Add(2, "b", 0);
  EXPECT_NE(b, a) << "the slot is still referred to";
  registry_.ReleaseRef(a);
  tasks_.Erase(t);
  registry_.CheckInvariants(tasks_);
  EXPECT_EQ(registry_.Add(3, "c", 0), a) << "free once its last task ended";
}

TEST_F(ActivityRegistryTest, TheQueueIsFirstInFirstOutAndAReturnGoesFirst) {
  const uint32_t a = registry_.Add(1, "a", 0);
  const uint32_t t1 = Queue(a, 1);
  const uint32_t t2 = Queue(a, 2);
  EXPECT_EQ(registry_.at(a).head, t1);
  registry_.Unlink(tasks_, t1);
  EXPECT_EQ(registry_.at(a).head, t2);
  registry_.Enqueue(tasks_, a, t1, /*at_head=*/true);
  EXPECT_EQ(registry_.at(a).head, t1);
  EXPECT_EQ(registry_.at(a).tail, t2);
  EXPECT_EQ(registry_.at(a).queued, 2u);
  registry_.CheckInvariants(tasks_);
}

TEST_F(ActivityRegistryTest, WaitersAreTakenOnceByIdOrInOrder) {
  const uint32_t a = registry_.Add(1, "a", 0);
  registry_.AddWaiter(a, Waiter{7, "w7", nullptr});
  registry_.AddWaiter(a, Waiter{8, "w8", nullptr});
  EXPECT_TRUE(registry_.IsWaiting(7));
  EXPECT_EQ(registry_.waiting_polls(), 2u);
  Waiter w;
  EXPECT_TRUE(registry_.Withdraw(8, &w));
  EXPECT_EQ(w.worker, "w8");
  EXPECT_FALSE(registry_.Withdraw(8, &w)) << "answered already";
  EXPECT_EQ(registry_.PopWaiter(a).worker, "w7");
  EXPECT_EQ(registry_.waiting_polls(), 0u);
  registry_.CheckInvariants(tasks_);
}

TEST_F(ActivityRegistryTest, ListingPagesByNameAndRefusesAForeignToken) {
  for (const char* n : {"c", "a", "b"}) registry_.Add(registry_.live() + 1, n, 0);
  Result<ListActivitiesReply> page =
      registry_.List(ListActivitiesRequest{.max_results = 2, .next_token = ""});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page.value.activities.size(), 2u);
  EXPECT_EQ(page.value.activities[1].name, "b");
  ListActivitiesRequest next{.max_results = 2, .next_token = page.value.next_token};
  Result<ListActivitiesReply> rest = registry_.List(next);
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest.value.activities.size(), 1u);
  EXPECT_EQ(rest.value.activities[0].name, "c");
  EXPECT_TRUE(rest.value.next_token.empty());
  Result<ListActivitiesReply> bad =
      registry_.List(ListActivitiesRequest{.max_results = 0, .next_token = "zz"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error.code, ErrorCode::kInvalidToken);
}

TEST(TaskClocksTest, TheClockThatRanOutFirstIsTheCause) {
  LiveTask t;
  t.state = TaskState::kStarted;
  t.timeout_s = 10;
  t.heartbeat_s = 3;
  clocks::OnStarted(t, 1000);
  EXPECT_EQ(clocks::ArmedDeadline(t), 4000);
  EXPECT_EQ(clocks::Due(t, 3999), TimeoutKind::kNone);
  EXPECT_EQ(clocks::Due(t, 4000), TimeoutKind::kHeartbeat);
  clocks::OnHeartbeat(t, 9000);  // heartbeat deadline 12000, after the overall 11000
  EXPECT_EQ(clocks::Due(t, 11000), TimeoutKind::kOverall);
  EXPECT_EQ(clocks::Due(t, 20000), TimeoutKind::kOverall) << "both passed: the earlier one";
}

TEST(TaskClocksTest, ARecoveredWorkerGetsAFullHeartbeatInterval) {
  LiveRecord r;
  r.state = TaskState::kStarted;
  r.heartbeat_s = 5;
  r.heartbeat_deadline_ms = 2000;  // passed while the server was down
  r.overall_deadline_ms = 100000;
  LiveTask t;
  t.state = TaskState::kStarted;
  t.heartbeat_s = 5;
  clocks::OnRecovered(t, r, 50000);
  EXPECT_EQ(t.heartbeat_deadline_ms, 55000);
  EXPECT_EQ(t.deadline_ms, 100000);
  EXPECT_EQ(clocks::Due(t, 54999), TimeoutKind::kNone);
}

TEST(TaskClocksTest, AQueuedTaskHasOnlyItsScheduleToStartClock) {
  LiveTask t;
  t.state = TaskState::kScheduled;
  t.schedule_to_start_s = 2;
  t.timeout_s = 1;  // runs only once started
  clocks::OnQueued(t, 0);
  EXPECT_EQ(clocks::ArmedDeadline(t), 2000);
  EXPECT_EQ(clocks::Due(t, 1999), TimeoutKind::kNone);
  EXPECT_EQ(clocks::Due(t, 2000), TimeoutKind::kScheduleToStart);
  t.schedule_to_start_s = 0;
  clocks::OnQueued(t, 0);
  EXPECT_EQ(clocks::ArmedDeadline(t), 0) << "no deadline, no timer";
}

TEST(PendingRecordsTest, TheNewestPendingWriteWinsUntilItIsDurable) {
  PendingRecords p;
  const TaskId id{1, 1};
  p.open().state[id].worker = "first";
  p.Seal();
  p.open().state[id].worker = "second";
  TaskStateRecord r;
  ASSERT_TRUE(p.FindState(id, &r));
  EXPECT_EQ(r.worker, "second");
  EXPECT_FALSE(p.IsDurable(id));
  p.Seal();
  p.OnDurable();  // the "first" batch is the store's now
  ASSERT_TRUE(p.FindState(id, &r));
  EXPECT_EQ(r.worker, "second");
  p.OnDurable();
  EXPECT_FALSE(p.FindState(id, &r)) << "durable: read the store";
  EXPECT_TRUE(p.IsDurable(id));
  EXPECT_EQ(p.batches_in_flight(), 0u);
}

}  // namespace
}  // namespace tw
