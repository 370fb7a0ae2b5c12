#include "storage/rocksdb_options.h"

#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/env.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/listener.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/table_properties_collectors.h>

#include <algorithm>
#include <memory>

#include "storage/file_logger.h"
#include "storage/prefix_sorted_rep.h"

namespace tw::rocks {
namespace {

// RocksDB's own recovery from a background error (a flush or WAL write that hit a full disk)
// is turned off: the store is poisoned at its first failed Write instead, and the engine
// reopens it (EngineOptions::reopen_store). Left on, the recovery of RocksDB 7.8 waited for a
// flush that the poisoned store had paused (a Close after the disk had room again then hung),
// or synced a WAL writer that had failed before (an assertion in WritableFileWriter aborted
// the process).
class NoAutoRecovery final : public rocksdb::EventListener {
 public:
  const char* Name() const override { return "TwNoAutoRecovery"; }
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason /*reason*/, rocksdb::Status bg_error,
                            bool* auto_recovery) override {
    bg_error.PermitUncheckedError();
    *auto_recovery = false;
  }
};

rocksdb::CompressionType PickCompression() {
  const auto supported = rocksdb::GetSupportedCompressions();
  for (auto c : {rocksdb::kLZ4Compression, rocksdb::kSnappyCompression}) {
    if (std::find(supported.begin(), supported.end(), c) != supported.end()) return c;
  }
  return rocksdb::kNoCompression;
}

std::shared_ptr<rocksdb::TableFactory> MakeTable(const std::shared_ptr<rocksdb::Cache>& cache,
                                                 bool bloom) {
  rocksdb::BlockBasedTableOptions t;
  t.block_cache = cache;
  if (bloom) t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  return std::shared_ptr<rocksdb::TableFactory>(rocksdb::NewBlockBasedTableFactory(t));
}

// What the column families of one open share.
struct CfShared {
  const RocksStoreOptions& store;
  std::shared_ptr<rocksdb::Cache> cache;
  rocksdb::CompressionType compression;
  // Deletes are a steady part of this workload (live entries at every terminal transition,
  // whole tasks at retention): compact files dense with tombstones early.
  std::shared_ptr<rocksdb::TablePropertiesCollectorFactory> on_deletes;
};

rocksdb::ColumnFamilyOptions BaseCf(const CfShared& s, size_t write_buffer_bytes, bool bloom) {
  rocksdb::ColumnFamilyOptions c;
  c.write_buffer_size = write_buffer_bytes;
  c.compression = s.compression;
  c.level_compaction_dynamic_level_bytes = true;
  // Task ids, event seqs and retired keys grow with time, so a flush's keys mostly follow
  // everything already in the bottom level. A compaction rewrites only the bottom files its
  // inputs overlap; with RocksDB's 64 MiB default that was all of a young column family's
  // bottom level each time (docs/FORMAT.md, "Tuning").
  c.target_file_size_base = 8 << 20;
  c.table_factory = MakeTable(s.cache, bloom);
  return c;
}

rocksdb::ColumnFamilyOptions WithBlobs(const CfShared& s, rocksdb::ColumnFamilyOptions c) {
  c.enable_blob_files = s.store.use_blob_files;
  c.min_blob_size = s.store.blob_min_bytes;
  c.blob_compression_type = s.compression;
  // Retention deletes tasks and trims events: reclaim their blob space as compactions go.
  c.enable_blob_garbage_collection = true;
  return c;
}

rocksdb::ColumnFamilyOptions CompactOnDeletes(const CfShared& s, rocksdb::ColumnFamilyOptions c) {
  c.table_properties_collector_factories.push_back(s.on_deletes);
  return c;
}

// The per-column-family tuning of docs/FORMAT.md ("Tuning").
std::array<rocksdb::ColumnFamilyOptions, kCfCount> TuneCfs(const CfShared& s) {
  std::array<rocksdb::ColumnFamilyOptions, kCfCount> c;
  c[kDefault] = BaseCf(s, 4 << 20, false);
  // 32 MiB, not more: after a crash everything since the last flush is replayed from the WAL
  // before the store opens (10^6 live tasks: 1.0-1.4 s at 32 MiB with the preliminary replay
  // open, 2.8-4.0 s before it; docs/BENCHMARKS.md). Point Gets of task ids: a bloom filter.
  // The default skiplist memtable, on purpose: a hash-skiplist made inserts (on the writer
  // thread) ~15% cheaper, but its flush first re-sorts the whole memtable, a CPU burst that at
  // nice 19 on 2 cores fell behind under sustained load: RocksDB then stopped all writes for
  // 0.3-1.5 s at a time ("2 immutable memtables"). A skiplist flush is a plain walk
  // (docs/BENCHMARKS.md, "Crash recovery and the store's settings"). No prefix extractor either:
  // it served the hash memtable, and Gets filter on whole keys.
  c[kTasks] = CompactOnDeletes(s, WithBlobs(s, BaseCf(s, 32 << 20, true)));
  // Small values, written and deleted once per task. No bloom filter: nothing point-reads
  // `live`, so building one only cost CPU at every flush and compaction.
  c[kLive] = CompactOnDeletes(s, BaseCf(s, 32 << 20, false));
  // `live` is only written, and read by one full scan at open (ScanLive): never a point read.
  // An unsorted vector memtable makes an insert an append; it is sorted once, at flush or scan,
  // by 8-byte key prefix (storage/prefix_sorted_rep.h): a full `live` flush took 0.29 s of CPU
  // where RocksDB's VectorRep took 0.69 s (docs/BENCHMARKS.md).
  c[kLive].memtable_factory = NewPrefixSortedRepFactory();
  // Point Gets that mostly miss: the filter answers.
  c[kIdem] = CompactOnDeletes(s, BaseCf(s, 16 << 20, true));
  c[kEvents] = WithBlobs(s, BaseCf(s, 64 << 20, false));  // appended in key order, read in ranges
  c[kRetired] = CompactOnDeletes(s, BaseCf(s, 16 << 20, false));  // read in ranges from the oldest
  c[kActivities] = BaseCf(s, 4 << 20, false);
  c[kMeta] = BaseCf(s, 4 << 20, false);
  return c;
}

}  // namespace

rocksdb::DBOptions MakeDbOptions(rocksdb::Env* env) {
  rocksdb::DBOptions o;
  o.env = env;
  o.create_if_missing = false;  // the open decides (storage/rocksdb_open.h)
  o.create_missing_column_families = false;
  o.max_background_jobs = 4;
  // The WAL is synced by Write(sync); SST and blob files are synced incrementally so that a
  // flush does not end in one long fsync stall.
  o.bytes_per_sync = 1 << 20;
  o.manual_wal_flush = false;  // every Write reaches the OS: kill -9 loses nothing
  // The vector memtable (`live`) does not take concurrent inserts;
  // there is one writer (the engine thread) anyway.
  o.allow_concurrent_memtable_write = false;
  o.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  // `meta` is rewritten by every batch and `activities` almost never: bound the WAL so that a
  // rarely written column family cannot pin old WAL files (and recovery time) forever.
  o.max_total_wal_size = 256 << 20;
  // Close never flushes by itself (with the WAL on it would not anyway): ~RocksStore flushes
  // explicitly on a clean close, and a poisoned store must write nothing more.
  o.avoid_flush_during_shutdown = true;
  o.keep_log_file_num = 5;
  o.max_log_file_size = 16 << 20;
  // No automatic resume after a background error, retryable or not (NoAutoRecovery).
  o.max_bgerror_resume_count = 0;
  o.listeners.push_back(std::make_shared<NoAutoRecovery>());
  return o;
}

rocksdb::DBOptions MakeWritableDbOptions(rocksdb::Env* env, const std::string& path) {
  rocksdb::DBOptions o = MakeDbOptions(env);
  o.info_log = std::make_shared<FileLogger>(path, o.max_log_file_size, o.keep_log_file_num);
  return o;
}

std::vector<rocksdb::ColumnFamilyDescriptor> MakeCfDescriptors(const RocksStoreOptions& options) {
  const CfShared shared{options, rocksdb::NewLRUCache(options.block_cache_bytes), PickCompression(),
                        rocksdb::NewCompactOnDeletionCollectorFactory(10'000, 5'000)};
  const auto tuned = TuneCfs(shared);
  std::vector<rocksdb::ColumnFamilyDescriptor> out;
  for (size_t i = 0; i < kCfCount; ++i) out.emplace_back(kCfNames[i], tuned[i]);
  return out;
}

}  // namespace tw::rocks
