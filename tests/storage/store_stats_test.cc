// StoreCounters (storage/store_stats.h): the arithmetic of write stalls, WAL sync latency and
// background work, with time passed in. The counting of a real RocksDB's work is checked in
// rocksdb_store_test.cc (StatsCount...).
#include "storage/store_stats.h"

#include <gtest/gtest.h>

#include <chrono>

namespace tw::rocks {
namespace {

using Condition = rocksdb::WriteStallCondition;
using std::chrono::microseconds;

TEST(StoreCountersTest, StallTimeRunsWhileAnyColumnFamilyIsStalled) {
  StoreCounters c;
  const auto t0 = StoreCounters::SteadyClock::time_point() + std::chrono::hours(1);
  c.StallChanged("live", Condition::kNormal, Condition::kDelayed, t0);
  c.StallChanged("tasks", Condition::kNormal, Condition::kDelayed, t0 + microseconds(100));
  c.StallChanged("live", Condition::kDelayed, Condition::kStopped, t0 + microseconds(200));
  // Still stalled: the time so far is counted up to the snapshot.
  EXPECT_EQ(c.Snapshot(t0 + microseconds(250)).write_stall_us, 250u);
  c.StallChanged("live", Condition::kStopped, Condition::kNormal, t0 + microseconds(300));
  EXPECT_EQ(c.Snapshot(t0 + microseconds(350)).write_stall_us, 350u);
  c.StallChanged("tasks", Condition::kDelayed, Condition::kNormal, t0 + microseconds(400));
  // Over: later snapshots add nothing; a second stall adds its own length.
  EXPECT_EQ(c.Snapshot(t0 + microseconds(5000)).write_stall_us, 400u);
  c.StallChanged("idem", Condition::kNormal, Condition::kStopped, t0 + microseconds(6000));
  c.StallChanged("idem", Condition::kStopped, Condition::kNormal, t0 + microseconds(6050));
  const StoreStats s = c.Snapshot(t0 + microseconds(9000));
  EXPECT_EQ(s.write_stall_us, 450u);
  EXPECT_EQ(s.write_stalls_delayed, 2u);  // live and tasks went from normal to delayed
  EXPECT_EQ(s.write_stalls_stopped, 2u);  // live (from delayed) and idem (from normal)
}

TEST(StoreCountersTest, WalSyncsFillLatencyBucketsAndTheMax) {
  StoreCounters c;
  c.RecordWalSync(3);
  c.RecordWalSync(1500);
  c.RecordWalSync(40'000);
  const StoreStats s = c.Snapshot();
  EXPECT_EQ(LatencyCount(s.wal_sync_us), 3u);
  EXPECT_EQ(s.wal_sync_max_us, 40'000u);
  EXPECT_EQ(s.wal_sync_us[LatencyBuckets::IndexOf(1500)], 1u);
  EXPECT_GE(LatencyQuantileUs(s.wal_sync_us, 1.0), 40'000u);
}

TEST(StoreCountersTest, FlushesAndCompactionsAddUp) {
  StoreCounters c;
  c.RecordFlush();
  c.RecordFlush();
  c.RecordCompaction(1000, 600);
  c.RecordCompaction(24, 0);
  const StoreStats s = c.Snapshot();
  EXPECT_EQ(s.flushes, 2u);
  EXPECT_EQ(s.compactions, 2u);
  EXPECT_EQ(s.compaction_read_bytes, 1024u);
  EXPECT_EQ(s.compaction_write_bytes, 600u);
  EXPECT_EQ(s.write_stall_us, 0u);
}

}  // namespace
}  // namespace tw::rocks
