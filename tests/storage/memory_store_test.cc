// MemoryStore specifics: restarts on a shared MemoryDisk, its power-cut model and the failure
// switch. The Store contract itself: store_semantics_test.cc.
#include "storage/memory_store.h"

#include <gtest/gtest.h>

#include "tests/storage/store_test_util.h"

namespace tw {
namespace {

using testing_util::Event;
using testing_util::Id;
using testing_util::Issue;

Status PutIssue(Store* store, uint64_t i, bool sync = true) {
  auto b = store->NewBatch();
  b->PutTaskIssue(Id(i), Issue(i));
  return store->Write(b.get(), sync);
}

bool Has(Store* store, uint64_t i) {
  TaskIssueRecord r;
  return store->GetTaskIssue(Id(i), &r).ok();
}

TEST(MemoryStoreTest, DataOutlivesTheStoreOnItsDisk) {
  auto disk = std::make_shared<MemoryDisk>();
  {
    MemoryStore store(disk);
    ASSERT_TRUE(PutIssue(&store, 1).ok());
  }
  MemoryStore again(disk);
  EXPECT_TRUE(Has(&again, 1));
  EXPECT_EQ(disk->write_count(), 1u);
  MemoryStore fresh;  // its own empty disk
  EXPECT_FALSE(Has(&fresh, 1));
}

TEST(MemoryStoreTest, DropUnsyncedWritesRollsBackToLastSyncedWrite) {
  MemoryStore store;
  ASSERT_TRUE(PutIssue(&store, 1, false).ok());
  ASSERT_TRUE(PutIssue(&store, 2, true).ok());
  ASSERT_TRUE(PutIssue(&store, 3, false).ok());
  ASSERT_TRUE(PutIssue(&store, 4, false).ok());
  EXPECT_TRUE(Has(&store, 4));  // visible before the cut
  store.disk()->DropUnsyncedWrites();
  EXPECT_TRUE(Has(&store, 1));
  EXPECT_TRUE(Has(&store, 2));
  EXPECT_FALSE(Has(&store, 3));
  EXPECT_FALSE(Has(&store, 4));
  store.disk()->DropUnsyncedWrites();  // nothing unsynced: no change
  EXPECT_TRUE(Has(&store, 2));
}

TEST(MemoryStoreTest, FailWritesAfterCountsThenPoisons) {
  MemoryStore store;
  store.FailWritesAfter(2);
  EXPECT_TRUE(PutIssue(&store, 1).ok());
  EXPECT_TRUE(PutIssue(&store, 2).ok());
  EXPECT_FALSE(store.poisoned());
  Status s = PutIssue(&store, 3);
  EXPECT_EQ(s.code(), Status::Code::kIoError);
  EXPECT_TRUE(store.poisoned());
  EXPECT_EQ(PutIssue(&store, 4).code(), Status::Code::kPoisoned);
  EXPECT_FALSE(Has(&store, 3));
  EXPECT_FALSE(Has(&store, 4));
  EXPECT_EQ(store.disk()->write_count(), 2u);
}

TEST(MemoryStoreTest, WriteDoesNotConsumeTheBatch) {
  MemoryStore store;
  auto b = store.NewBatch();
  b->AppendEvent(Event(1));
  ASSERT_TRUE(store.Write(b.get(), true).ok());
  EXPECT_EQ(b->Count(), 1u);  // as a RocksDB batch: the caller Clear()s it
}

TEST(MemoryStoreDeathTest, BatchOfAnotherStoreIsABug) {
  MemoryStore a;
  MemoryStore b;
  auto batch = a.NewBatch();
  EXPECT_DEATH((void)b.Write(batch.get(), true), "owner");
}

TEST(MemoryStoreDeathTest, TerminalLiveRecordIsABug) {
  MemoryStore store;
  auto b = store.NewBatch();
  LiveRecord r;
  r.state = TaskState::kSucceeded;
  EXPECT_DEATH(b->PutLive(Id(1), r), "kScheduled");
}

// Like codec::EncodeLive: a flag bit the format has no room for is a bug at write time.
TEST(MemoryStoreDeathTest, UnknownLiveFlagBitIsABug) {
  MemoryStore store;
  auto b = store.NewBatch();
  LiveRecord r;
  r.flags = 0x04;
  EXPECT_DEATH(b->PutLive(Id(1), r), "flags");
}

}  // namespace
}  // namespace tw
