#include "storage/store_stats.h"

#include <string_view>
#include <utility>

#include "engine/assert.h"

namespace tw::rocks {

namespace {

// RocksDB names a write-ahead log file NNNNNN.log (LOG, its info log, is another name).
bool IsWalName(std::string_view fname) {
  constexpr std::string_view kSuffix = ".log";
  return fname.size() > kSuffix.size() && fname.substr(fname.size() - kSuffix.size()) == kSuffix;
}

class TimedWalFile final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  TimedWalFile(std::unique_ptr<rocksdb::FSWritableFile> file,
               std::shared_ptr<StoreCounters> counters)
      : FSWritableFileOwnerWrapper(std::move(file)), counters_(std::move(counters)) {}

  rocksdb::IOStatus Sync(const rocksdb::IOOptions& opts, rocksdb::IODebugContext* dbg) override {
    const auto t0 = std::chrono::steady_clock::now();
    rocksdb::IOStatus s = target()->Sync(opts, dbg);
    Record(t0);
    return s;
  }
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& opts, rocksdb::IODebugContext* dbg) override {
    const auto t0 = std::chrono::steady_clock::now();
    rocksdb::IOStatus s = target()->Fsync(opts, dbg);
    Record(t0);
    return s;
  }

 private:
  void Record(std::chrono::steady_clock::time_point t0) {
    const auto us =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    counters_->RecordWalSync(static_cast<uint64_t>(us));
  }

  std::shared_ptr<StoreCounters> counters_;
};

}  // namespace

void StoreCounters::RecordWalSync(uint64_t us) {
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.wal_sync_us[LatencyBuckets::IndexOf(us)];
  if (us > stats_.wal_sync_max_us) stats_.wal_sync_max_us = us;
}

void StoreCounters::StallChanged(const std::string& cf, rocksdb::WriteStallCondition prev,
                                 rocksdb::WriteStallCondition cur, SteadyClock::time_point now) {
  using Condition = rocksdb::WriteStallCondition;
  std::lock_guard<std::mutex> lock(mu_);
  if (cur == Condition::kDelayed && prev == Condition::kNormal) ++stats_.write_stalls_delayed;
  if (cur == Condition::kStopped) ++stats_.write_stalls_stopped;
  const bool was_stalled = !stalled_.empty();
  if (cur == Condition::kNormal) {
    stalled_.erase(cf);
  } else {
    stalled_.insert(cf);
  }
  if (!was_stalled && !stalled_.empty()) stalled_since_ = now;
  if (was_stalled && stalled_.empty()) stats_.write_stall_us += StalledUsLocked(now);
}

void StoreCounters::RecordFlush() {
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.flushes;
}

void StoreCounters::RecordCompaction(uint64_t read_bytes, uint64_t write_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  ++stats_.compactions;
  stats_.compaction_read_bytes += read_bytes;
  stats_.compaction_write_bytes += write_bytes;
}

StoreStats StoreCounters::Snapshot(SteadyClock::time_point now) const {
  std::lock_guard<std::mutex> lock(mu_);
  StoreStats out = stats_;
  if (!stalled_.empty()) out.write_stall_us += StalledUsLocked(now);
  return out;
}

uint64_t StoreCounters::StalledUsLocked(SteadyClock::time_point now) const {
  const auto us =
      std::chrono::duration_cast<std::chrono::microseconds>(now - stalled_since_).count();
  return us > 0 ? static_cast<uint64_t>(us) : 0;
}

TimedWalFs::TimedWalFs(std::shared_ptr<rocksdb::FileSystem> base,
                       std::shared_ptr<StoreCounters> counters)
    : FileSystemWrapper(std::move(base)), counters_(std::move(counters)) {
  TW_ASSERT(counters_ != nullptr);
}

rocksdb::IOStatus TimedWalFs::Wrap(const std::string& fname, rocksdb::IOStatus s,
                                   std::unique_ptr<rocksdb::FSWritableFile>* result) {
  if (s.ok() && IsWalName(fname)) {
    TW_ASSERT(*result != nullptr);
    *result = std::make_unique<TimedWalFile>(std::move(*result), counters_);
  }
  return s;
}

rocksdb::IOStatus TimedWalFs::NewWritableFile(const std::string& fname,
                                              const rocksdb::FileOptions& opts,
                                              std::unique_ptr<rocksdb::FSWritableFile>* result,
                                              rocksdb::IODebugContext* dbg) {
  return Wrap(fname, target()->NewWritableFile(fname, opts, result, dbg), result);
}

rocksdb::IOStatus TimedWalFs::ReopenWritableFile(const std::string& fname,
                                                 const rocksdb::FileOptions& opts,
                                                 std::unique_ptr<rocksdb::FSWritableFile>* result,
                                                 rocksdb::IODebugContext* dbg) {
  return Wrap(fname, target()->ReopenWritableFile(fname, opts, result, dbg), result);
}

rocksdb::IOStatus TimedWalFs::ReuseWritableFile(const std::string& fname,
                                                const std::string& old_fname,
                                                const rocksdb::FileOptions& opts,
                                                std::unique_ptr<rocksdb::FSWritableFile>* result,
                                                rocksdb::IODebugContext* dbg) {
  return Wrap(fname, target()->ReuseWritableFile(fname, old_fname, opts, result, dbg), result);
}

StatsListener::StatsListener(std::shared_ptr<StoreCounters> counters)
    : counters_(std::move(counters)) {
  TW_ASSERT(counters_ != nullptr);
}

void StatsListener::OnStallConditionsChanged(const rocksdb::WriteStallInfo& info) {
  counters_->StallChanged(info.cf_name, info.condition.prev, info.condition.cur,
                          StoreCounters::SteadyClock::now());
}

void StatsListener::OnFlushCompleted(rocksdb::DB* /*db*/, const rocksdb::FlushJobInfo& /*info*/) {
  counters_->RecordFlush();
}

void StatsListener::OnCompactionCompleted(rocksdb::DB* /*db*/,
                                          const rocksdb::CompactionJobInfo& info) {
  if (!info.status.ok()) return;
  counters_->RecordCompaction(info.stats.total_input_bytes, info.stats.total_output_bytes);
}

}  // namespace tw::rocks
