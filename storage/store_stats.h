// What RocksDB does underneath a RocksStore, measured for StoreStats (engine/store.h): a file
// system wrapper times every sync of a write-ahead log file, and an event listener counts write
// stalls, flushes and compactions. Both report into one StoreCounters that the store snapshots.
// Private to storage/.
#pragma once

#include <rocksdb/file_system.h>
#include <rocksdb/listener.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "engine/store.h"

namespace tw::rocks {

// Thread-safe: RocksDB reports from its writing thread and its background threads at once. A
// mutex: each report follows a file sync or a whole flush or compaction, so it is never hot.
class StoreCounters {
 public:
  void RecordWalSync(uint64_t us);
  using SteadyClock = std::chrono::steady_clock;

  // A column family's write-stall state changed at `now`. Stall time runs while any column
  // family is delayed or stopped.
  void StallChanged(const std::string& cf, rocksdb::WriteStallCondition prev,
                    rocksdb::WriteStallCondition cur, SteadyClock::time_point now);
  void RecordFlush();
  void RecordCompaction(uint64_t read_bytes, uint64_t write_bytes);
  // The counts as of `now`: a stall still going on counts up to it.
  StoreStats Snapshot(SteadyClock::time_point now) const;
  StoreStats Snapshot() const { return Snapshot(SteadyClock::now()); }

 private:
  uint64_t StalledUsLocked(SteadyClock::time_point now) const;

  mutable std::mutex mu_;
  StoreStats stats_;               // guarded by mu_; write_stall_us holds finished stalls only
  std::set<std::string> stalled_;  // column families delayed or stopped now
  SteadyClock::time_point stalled_since_;  // when stalled_ last became non-empty
};

// Wraps `base`; every write-ahead log file it opens for writing reports the time of each Sync
// and Fsync to `counters`. Other files pass through untouched.
class TimedWalFs final : public rocksdb::FileSystemWrapper {
 public:
  TimedWalFs(std::shared_ptr<rocksdb::FileSystem> base, std::shared_ptr<StoreCounters> counters);

  const char* Name() const override { return "TwTimedWalFs"; }
  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                      const rocksdb::FileOptions& opts,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override;

 private:
  // Wraps *result when `fname` names a write-ahead log and the open succeeded.
  rocksdb::IOStatus Wrap(const std::string& fname, rocksdb::IOStatus s,
                         std::unique_ptr<rocksdb::FSWritableFile>* result);

  std::shared_ptr<StoreCounters> counters_;
};

// Reports write-stall changes, finished flushes and finished compactions to the counters.
class StatsListener final : public rocksdb::EventListener {
 public:
  explicit StatsListener(std::shared_ptr<StoreCounters> counters);

  const char* Name() const override { return "TwStatsListener"; }
  void OnStallConditionsChanged(const rocksdb::WriteStallInfo& info) override;
  void OnFlushCompleted(rocksdb::DB* db, const rocksdb::FlushJobInfo& info) override;
  void OnCompactionCompleted(rocksdb::DB* db, const rocksdb::CompactionJobInfo& info) override;

 private:
  std::shared_ptr<StoreCounters> counters_;
};

}  // namespace tw::rocks
