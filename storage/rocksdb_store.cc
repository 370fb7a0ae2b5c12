// RocksStore: tw::Store on RocksDB. Layout and encodings: docs/FORMAT.md, storage/codec.h.
//
// Invariants of RocksStore:
//  1. db_ holds exactly the column families of kCfNames (checked at open), and meta holds
//     kFormatVersion (checked or written at open).
//  2. Once poisoned_ is set it stays set, and no Write reaches RocksDB after it (nor does the
//     flush of a clean close: ~RocksStore skips it, nor any background flush or compaction:
//     they are paused before poisoned_ is set).
//  3. retired_floor_ms_ is a lower bound of the ended_ms of every entry in `retired`: no entry
//     is older. ScanRetired seeks there instead of to the start of the column family, so it does
//     not wade through the tombstones of tasks it already returned and the engine deleted.
//  4. env_ outlives db_ (member order and ~RocksStore).
//  5. first_event_seq_ equals meta first_event_seq as of the last successful Write; events below
//     it are trimmed for every reader, whether or not their range tombstone is written yet.

#include "storage/rocksdb_store.h"

#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/iterator.h>
#include <rocksdb/listener.h>
#include <rocksdb/memtablerep.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/table_properties_collectors.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdarg>
#include <limits>
#include <set>
#include <utility>

#include "engine/assert.h"
#include "engine/limits.h"
#include "storage/codec.h"
#include "storage/file_logger.h"
#include "storage/prefix_sorted_rep.h"

namespace tw {
namespace {

// Column families, in the order of the handles vector. "default" exists in every RocksDB
// database; tokenwheel leaves it empty.
enum Cf : size_t {
  kDefault,
  kTasks,
  kLive,
  kIdem,
  kEvents,
  kRetired,
  kActivities,
  kMeta,
  kCfCount
};
constexpr std::array<const char*, kCfCount> kCfNames = {"default", "tasks",   "live",       "idem",
                                                        "events",  "retired", "activities", "meta"};

// A group commit carries hundreds of mutations; start big enough that the batch rarely grows.
constexpr size_t kBatchReserveBytes = 64 << 10;

// The column families RocksStoreOptions::side_flush_every_bytes flushes: those that never fill
// their memtable. The others flush when theirs fills, or at the max_total_wal_size backstop when
// they are no longer written; flushing them early would also queue their flushes ahead of the
// `tasks` and `live` ones on RocksDB's single flush thread (max_background_jobs = 4 gives one).
constexpr std::array<Cf, 3> kSideCfs = {kDefault, kActivities, kMeta};
// One-off scans at recovery read sequentially; large readahead, and keep them out of the cache.
constexpr size_t kRecoveryReadaheadBytes = 2 << 20;

Status FromRocks(const rocksdb::Status& s) {
  if (s.ok()) return Status::Ok();
  if (s.IsNotFound()) return Status::NotFound(s.ToString());
  if (s.IsCorruption()) return Status::Corruption(s.ToString());
  if (s.IsInvalidArgument() || s.IsNotSupported()) return Status::InvalidArgument(s.ToString());
  return Status::IoError(s.ToString());
}

std::string_view View(const rocksdb::Slice& s) { return {s.data(), s.size()}; }

// Keeps the read-only probe at open from rotating the database's LOG file: "no changes" means
// no file of the directory changes.
class NullLogger final : public rocksdb::Logger {
 public:
  using rocksdb::Logger::Logv;
  void Logv(const char* /*format*/, va_list /*ap*/) override {}
};

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

// The options of a read-write open of the database at `path`: MakeDbOptions, and RocksDB's info
// log written by a FileLogger (storage/file_logger.h: a full disk must not abort the process).
rocksdb::DBOptions MakeDbOptions(rocksdb::Env* env);
rocksdb::DBOptions MakeWritableDbOptions(rocksdb::Env* env, const std::string& path) {
  rocksdb::DBOptions o = MakeDbOptions(env);
  o.info_log = std::make_shared<FileLogger>(path, o.max_log_file_size, o.keep_log_file_num);
  return o;
}

rocksdb::DBOptions MakeDbOptions(rocksdb::Env* env) {
  rocksdb::DBOptions o;
  o.env = env;
  o.create_if_missing = false;  // OpenRocksStore decides, see Open()
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

std::shared_ptr<rocksdb::TableFactory> MakeTable(const std::shared_ptr<rocksdb::Cache>& cache,
                                                 bool bloom) {
  rocksdb::BlockBasedTableOptions t;
  t.block_cache = cache;
  if (bloom) t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  return std::shared_ptr<rocksdb::TableFactory>(rocksdb::NewBlockBasedTableFactory(t));
}

// The per-column-family tuning of docs/FORMAT.md ("Tuning").
std::vector<rocksdb::ColumnFamilyDescriptor> MakeCfDescriptors(const RocksStoreOptions& opt) {
  auto cache = rocksdb::NewLRUCache(opt.block_cache_bytes);
  const auto compression = PickCompression();
  // Deletes are a steady part of this workload (live entries at every terminal transition,
  // whole tasks at retention): compact files dense with tombstones early.
  auto on_deletes = rocksdb::NewCompactOnDeletionCollectorFactory(10'000, 5'000);

  auto base = [&](size_t write_buffer_bytes, bool bloom) {
    rocksdb::ColumnFamilyOptions c;
    c.write_buffer_size = write_buffer_bytes;
    c.compression = compression;
    c.level_compaction_dynamic_level_bytes = true;
    // Task ids, event seqs and retired keys grow with time, so a flush's keys mostly follow
    // everything already in the bottom level. A compaction rewrites only the bottom files its
    // inputs overlap; with RocksDB's 64 MiB default that was all of a young column family's
    // bottom level each time (docs/FORMAT.md, "Tuning").
    c.target_file_size_base = 8 << 20;
    c.table_factory = MakeTable(cache, bloom);
    return c;
  };
  auto blobs = [&](rocksdb::ColumnFamilyOptions c) {
    c.enable_blob_files = opt.use_blob_files;
    c.min_blob_size = opt.blob_min_bytes;
    c.blob_compression_type = compression;
    // Retention deletes tasks and trims events: reclaim their blob space as compactions go.
    c.enable_blob_garbage_collection = true;
    return c;
  };

  std::array<rocksdb::ColumnFamilyOptions, kCfCount> c;
  c[kDefault] = base(4 << 20, false);
  // 32 MiB, not more: after a crash everything since the last flush is replayed from the WAL
  // before the store opens (10^6 live tasks: 1.0-1.4 s at 32 MiB with the preliminary replay
  // open, 2.8-4.0 s before it; docs/BENCHMARKS.md).
  c[kTasks] = blobs(base(32 << 20, true));  // point Gets of task ids
  c[kTasks].table_properties_collector_factories.push_back(on_deletes);
  // The default skiplist memtable, on purpose: a hash-skiplist made inserts (on the writer
  // thread) ~15% cheaper, but its flush first re-sorts the whole memtable, a CPU burst that at
  // nice 19 on 2 cores fell behind under sustained load: RocksDB then stopped all writes for
  // 0.3-1.5 s at a time ("2 immutable memtables"). A skiplist flush is a plain walk
  // (docs/BENCHMARKS.md, "2026-11-22: what changed, measured"). No prefix extractor either:
  // it served the hash memtable, and Gets filter on whole keys.
  // Small values, written and deleted once per task. No bloom filter: nothing point-reads
  // `live`, so building one only cost CPU at every flush and compaction.
  c[kLive] = base(32 << 20, false);
  c[kLive].table_properties_collector_factories.push_back(on_deletes);
  // `live` is only written, and read by one full scan at open (ScanLive): never a point read.
  // An unsorted vector memtable makes an insert an append; it is sorted once, at flush or scan,
  // by 8-byte key prefix (storage/prefix_sorted_rep.h): a full `live` flush took 0.29 s of CPU
  // where RocksDB's VectorRep took 0.69 s (docs/BENCHMARKS.md).
  c[kLive].memtable_factory = NewPrefixSortedRepFactory();
  c[kIdem] = base(16 << 20, true);  // point Gets that mostly miss: the filter answers
  c[kIdem].table_properties_collector_factories.push_back(on_deletes);
  c[kEvents] = blobs(base(64 << 20, false));  // appended in key order, read in ranges
  c[kRetired] = base(16 << 20, false);        // read in ranges from the oldest
  c[kRetired].table_properties_collector_factories.push_back(on_deletes);
  c[kActivities] = base(4 << 20, false);
  c[kMeta] = base(4 << 20, false);

  std::vector<rocksdb::ColumnFamilyDescriptor> out;
  for (size_t i = 0; i < kCfCount; ++i) out.emplace_back(kCfNames[i], c[i]);
  return out;
}

class RocksStore;

// Engine-thread state a store shares with its batches, for trimming.
struct EventTrimState {
  // Every event below this is covered by a range tombstone already written. 0 = none known (a
  // reopened store does not know; its first range delete then starts at 0).
  uint64_t deleted_below = 0;
};

// Invariant: count_ is the number of tw::WriteBatch calls since the last Clear(); rep_ holds
// their RocksDB operations (DeleteTask is up to five of them).
class RocksWriteBatch final : public WriteBatch {
 public:
  RocksWriteBatch(const RocksStore* owner,
                  const std::array<rocksdb::ColumnFamilyHandle*, kCfCount>& cfs,
                  const EventTrimState* trim)
      : owner_(owner), cfs_(cfs), trim_(trim), rep_(kBatchReserveBytes) {}

  const RocksStore* owner() const { return owner_; }
  rocksdb::WriteBatch* rep() { return &rep_; }
  // The oldest ended_ms put into `retired` by this batch; INT64_MAX when none.
  int64_t min_retired_ms() const { return min_retired_ms_; }
  // What this batch trims: the new first event seq (0 = no trim) and the end of its range
  // tombstone (0 = none).
  uint64_t trim_first_event_seq() const { return trim_first_event_seq_; }
  uint64_t trim_deleted_below() const { return trim_deleted_below_; }

  void PutActivity(const ActivityRecord& a) override {
    char key[codec::kSeqKeyBytes];
    codec::EncodeSeqKey(a.id, key);
    codec::EncodeActivity(a, ResetValue());
    Put(kActivities, key, sizeof(key));
  }

  void DeleteActivity(uint64_t activity_id) override {
    char key[codec::kSeqKeyBytes];
    codec::EncodeSeqKey(activity_id, key);
    Delete(kActivities, rocksdb::Slice(key, sizeof(key)));
    ++count_;
  }

  void PutTaskIssue(const TaskId& id, const TaskIssueRecord& r) override {
    char key[codec::kTaskKeyBytes];
    codec::EncodeTaskKey(id, codec::TaskKeyKind::kIssue, key);
    codec::EncodeTaskIssue(r, ResetValue());
    Put(kTasks, key, sizeof(key));
  }

  void PutTaskState(const TaskId& id, const TaskStateRecord& r) override {
    char key[codec::kTaskKeyBytes];
    codec::EncodeTaskKey(id, codec::TaskKeyKind::kState, key);
    codec::EncodeTaskState(r, ResetValue());
    Put(kTasks, key, sizeof(key));
  }

  void PutTaskEnd(const TaskId& id, const TaskStateRecord& r) override {
    TW_DEBUG_ASSERT(IsTerminal(r.state));
    char key[codec::kTaskKeyBytes];
    codec::EncodeTaskKey(id, codec::TaskKeyKind::kEnd, key);
    codec::EncodeTaskState(r, ResetValue());
    Put(kTasks, key, sizeof(key));
  }

  void PutLive(const TaskId& id, const LiveRecord& r) override {
    char key[codec::kTaskIdBytes];
    codec::EncodeTaskId(id, key);
    codec::EncodeLive(r, ResetValue());
    Put(kLive, key, sizeof(key));
  }

  void DeleteLive(const TaskId& id) override {
    char key[codec::kTaskIdBytes];
    codec::EncodeTaskId(id, key);
    Delete(kLive, rocksdb::Slice(key, sizeof(key)));
    ++count_;
  }

  void PutIdempotencyKey(std::string_view key, const TaskId& id) override {
    TW_ASSERT(!key.empty());
    TW_ASSERT(key.size() <= limits::kIdempotencyKeyBytesMax);
    codec::EncodeIdempotencyValue(id, ResetValue());
    Put(kIdem, key.data(), key.size());
  }

  void AppendEvent(const EventRecord& e) override {
    TW_ASSERT(e.seq >= 1);
    char key[codec::kSeqKeyBytes];
    codec::EncodeSeqKey(e.seq, key);
    codec::EncodeEvent(e, ResetValue());
    Put(kEvents, key, sizeof(key));
  }

  void PutRetired(int64_t ended_ms, const TaskId& id, std::string_view idempotency_key) override {
    char key[codec::kRetiredKeyBytes];
    codec::EncodeRetiredKey(ended_ms, id, key);
    codec::EncodeRetiredValue(idempotency_key, ResetValue());
    Put(kRetired, key, sizeof(key));
    min_retired_ms_ = std::min(min_retired_ms_, ended_ms);
  }

  // Point deletes of exactly this task's keys: retention never scans `tasks`. Plain Delete, not
  // SingleDelete: SingleDelete is undefined if a key was ever put twice, and a resurrected
  // record would be a silent bug; the deletion-triggered compaction removes the tombstones.
  void DeleteTask(int64_t ended_ms, const TaskId& id, std::string_view idempotency_key) override {
    char key[codec::kRetiredKeyBytes];
    codec::EncodeTaskKey(id, codec::TaskKeyKind::kIssue, key);
    Delete(kTasks, rocksdb::Slice(key, codec::kTaskKeyBytes));
    codec::EncodeTaskKey(id, codec::TaskKeyKind::kState, key);
    Delete(kTasks, rocksdb::Slice(key, codec::kTaskKeyBytes));
    codec::EncodeTaskKey(id, codec::TaskKeyKind::kEnd, key);
    Delete(kTasks, rocksdb::Slice(key, codec::kTaskKeyBytes));
    if (!idempotency_key.empty()) {
      Delete(kIdem, rocksdb::Slice(idempotency_key.data(), idempotency_key.size()));
    }
    codec::EncodeRetiredKey(ended_ms, id, key);
    Delete(kRetired, rocksdb::Slice(key, codec::kRetiredKeyBytes));
    ++count_;
  }

  void PutConsumer(std::string_view name, uint64_t acked_seq) override {
    ConsumerKey(name);
    value_.clear();
    codec::EncodeU64Value(acked_seq, &value_);
    Put(kMeta, key_.data(), key_.size());
  }

  void DeleteConsumer(std::string_view name) override {
    ConsumerKey(name);
    Delete(kMeta, key_);
    ++count_;
  }

  // Logically, events below `seq` are gone at once: meta first_event_seq moves and ReadEvents
  // refuses to read below it. Physically they are range-deleted in runs of at least
  // kEventsPerRangeDeleteMin, each run starting where the previous one ended: the engine trims
  // after every acknowledgement, and a range tombstone per trim would make every memtable read
  // of `events` re-fragment thousands of overlapping tombstones.
  // REQUIRES: seq >= 1, and seq never below an earlier trim's.
  void TrimEventsBelow(uint64_t seq) override {
    TW_ASSERT(seq >= 1);
    TW_ASSERT(seq >= trim_first_event_seq_);
    const uint64_t from = std::max(trim_->deleted_below, trim_deleted_below_);
    if (seq >= from + limits::kEventsPerRangeDeleteMin) {
      char begin[codec::kSeqKeyBytes];
      char end[codec::kSeqKeyBytes];
      codec::EncodeSeqKey(from, begin);
      codec::EncodeSeqKey(seq, end);
      auto s = rep_.DeleteRange(cfs_[kEvents], rocksdb::Slice(begin, sizeof(begin)),
                                rocksdb::Slice(end, sizeof(end)));
      TW_ASSERT(s.ok());
      trim_deleted_below_ = seq;
    }
    trim_first_event_seq_ = seq;
    codec::EncodeU64Value(seq, ResetValue());
    Put(kMeta, codec::kMetaFirstEventSeq.data(), codec::kMetaFirstEventSeq.size());
  }

  void PutCounters(uint64_t next_event_seq, uint64_t next_activity_id,
                   uint64_t next_queue_seq) override {
    codec::EncodeCounters({next_event_seq, next_activity_id, next_queue_seq}, ResetValue());
    Put(kMeta, codec::kMetaCounters.data(), codec::kMetaCounters.size());
  }

  size_t Count() const override { return count_; }
  size_t ByteSize() const override { return rep_.GetDataSize(); }

  void Clear() override {
    rep_.Clear();  // keeps the buffer's capacity: the next group commit reuses it
    count_ = 0;
    min_retired_ms_ = std::numeric_limits<int64_t>::max();
    trim_first_event_seq_ = 0;
    trim_deleted_below_ = 0;
  }

 private:
  std::string* ResetValue() {
    value_.clear();  // keeps capacity
    return &value_;
  }

  void ConsumerKey(std::string_view name) {
    TW_ASSERT(!name.empty());
    TW_ASSERT(name.size() <= limits::kConsumerNameBytesMax);
    key_.clear();
    codec::AppendConsumerKey(name, &key_);
  }

  // Puts value_ under key. rocksdb::WriteBatch::Put fails only past its size limit, which is
  // unset here (and 4 GiB otherwise): a failure is a bug.
  void Put(Cf cf, const char* key, size_t key_bytes) {
    auto s = rep_.Put(cfs_[cf], rocksdb::Slice(key, key_bytes), value_);
    TW_ASSERT(s.ok());
    ++count_;
  }

  void Delete(Cf cf, const rocksdb::Slice& key) {
    auto s = rep_.Delete(cfs_[cf], key);
    TW_ASSERT(s.ok());
  }

  const RocksStore* owner_;
  std::array<rocksdb::ColumnFamilyHandle*, kCfCount> cfs_;
  const EventTrimState* trim_;  // the owner's
  rocksdb::WriteBatch rep_;
  std::string key_;    // reused: consumer keys
  std::string value_;  // reused: every encoded value
  size_t count_ = 0;
  int64_t min_retired_ms_ = std::numeric_limits<int64_t>::max();
  uint64_t trim_first_event_seq_ = 0;
  uint64_t trim_deleted_below_ = 0;
};

class RocksStore final : public Store {
 public:
  static Status Open(const RocksStoreOptions& options, std::unique_ptr<Store>* out);

  ~RocksStore() override {
    if (db_ != nullptr && opened_ && flush_on_close_ &&
        !poisoned_.load(std::memory_order_acquire)) {
      FlushAll();
    }
    for (auto* h : cfs_) {
      if (h != nullptr) db_->DestroyColumnFamilyHandle(h);
    }
    // Close() reports errors the destructor would swallow; a store being closed has nothing
    // left to acknowledge, so there is no one to report them to either.
    if (db_ != nullptr) db_->Close().PermitUncheckedError();
    db_.reset();
  }

  std::unique_ptr<WriteBatch> NewBatch() override {
    return std::make_unique<RocksWriteBatch>(this, cfs_, &trim_);
  }

  Status Write(WriteBatch* batch, bool sync) override;
  Status LoadMeta(StoreMeta* meta) override;
  Status LoadActivities(std::vector<ActivityRecord>* out) override;
  Status ScanLive(const std::function<void(const TaskId&, const LiveRecord&)>& fn) override;
  Status GetTaskIssue(const TaskId& id, TaskIssueRecord* out) override;
  Status GetTaskState(const TaskId& id, TaskStateRecord* out) override;
  Status GetTaskEnd(const TaskId& id, TaskStateRecord* out) override;
  Status FindIdempotencyKey(std::string_view key, TaskId* out) override;
  Status ScanRetired(
      int64_t before_ms, size_t max,
      const std::function<void(int64_t, const TaskId&, std::string_view)>& fn) override;
  Status ReadEvents(uint64_t from_seq, size_t max, std::vector<EventRecord>* out) override;

  rocksdb::DB* db() const { return db_.get(); }

 private:
  RocksStore() { cfs_.fill(nullptr); }

  // A clean close: flushes every column family's memtable (waiting) so that the next open has no
  // WAL to replay. Not for a poisoned store (nothing more reaches disk after a failed Write,
  // invariant 2) nor for one that failed to open. A failure is ignored: the WAL still holds
  // everything, so the next open replays it as after a crash.
  void FlushAll();
  void FlushSideCfs();
  Status OpenDb(const RocksStoreOptions& options, bool create);
  Status CheckOrWriteFormatVersion(bool version_expected);
  Status GetStateRecord(const TaskId& id, codec::TaskKeyKind kind, TaskStateRecord* out);
  Status AllEmpty(bool* empty);
  Status LoadFirstEventSeq();
  Status Get(Cf cf, const rocksdb::Slice& key, rocksdb::PinnableSlice* value);
  std::unique_ptr<rocksdb::Iterator> Scan(Cf cf, rocksdb::ReadOptions ro);

  std::unique_ptr<rocksdb::Env> env_;  // null = Env::Default(); declared first: outlives db_
  std::unique_ptr<rocksdb::DB> db_;
  std::array<rocksdb::ColumnFamilyHandle*, kCfCount> cfs_;
  bool sync_enabled_ = true;
  bool flush_on_close_ = true;
  bool opened_ = false;  // Open() succeeded: only then does the destructor flush
  std::atomic<bool> poisoned_{false};
  std::string poison_reason_;  // written once, before poisoned_ is set
  int64_t retired_floor_ms_ = std::numeric_limits<int64_t>::min();  // invariant 3
  uint64_t retired_writes_ = 0;               // Writes that put `retired` entries: see ScanRetired
  EventTrimState trim_;                       // engine thread
  uint64_t side_flush_every_bytes_ = 0;       // RocksStoreOptions::side_flush_every_bytes
  uint64_t bytes_since_side_flush_ = 0;       // writing thread
  std::atomic<uint64_t> first_event_seq_{1};  // invariant 5; read by ReadEvents, any thread
  std::function<void(std::string_view)> on_batch_committed_;  // benchmarks only
};

// Opens an existing database read-only with a silent logger, so that refusing it changes no
// file (not even LOG). Read-only opens replay the WAL, so the probes open only what they need.
class ReadOnlyDb {
 public:
  Status Open(const std::string& path, rocksdb::Env* env, const std::vector<Cf>& cfs) {
    rocksdb::DBOptions o = MakeDbOptions(env);
    o.info_log = std::make_shared<NullLogger>();
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    for (Cf cf : cfs) descs.emplace_back(kCfNames[cf], rocksdb::ColumnFamilyOptions());
    rocksdb::DB* raw = nullptr;
    auto s = rocksdb::DB::OpenForReadOnly(o, path, descs, &handles_, &raw);
    db_.reset(raw);
    return FromRocks(s);
  }
  ~ReadOnlyDb() {
    if (db_ == nullptr) return;
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    db_->Close().PermitUncheckedError();  // read-only: nothing to lose
  }
  rocksdb::DB* db() const { return db_.get(); }
  rocksdb::ColumnFamilyHandle* handle(size_t i) const { return handles_[i]; }
  size_t size() const { return handles_.size(); }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
};

// Reads the format version of an existing database (meta column family only).
Status ProbeFormatVersion(const std::string& path, rocksdb::Env* env, bool* found,
                          uint32_t* version) {
  ReadOnlyDb ro;
  Status st = ro.Open(path, env, {kDefault, kMeta});
  if (!st.ok()) return st;
  std::string value;
  auto s = ro.db()->Get(rocksdb::ReadOptions(), ro.handle(1), codec::kMetaFormatVersion, &value);
  *found = s.ok();
  if (s.IsNotFound()) return Status::Ok();
  if (!s.ok()) return FromRocks(s);
  return codec::DecodeFormatVersion(value, version);
}

// A database without a format version is accepted only if every column family is empty: that
// is a creation that crashed before its version write was synced. Anything else is refused.
Status ProbeEmpty(const std::string& path, rocksdb::Env* env) {
  ReadOnlyDb ro;
  std::vector<Cf> all;
  for (size_t cf = 0; cf < kCfCount; ++cf) all.push_back(static_cast<Cf>(cf));
  Status st = ro.Open(path, env, all);
  if (!st.ok()) return st;
  for (size_t i = 0; i < ro.size(); ++i) {
    std::unique_ptr<rocksdb::Iterator> it(
        ro.db()->NewIterator(rocksdb::ReadOptions(), ro.handle(i)));
    it->SeekToFirst();
    if (!it->status().ok()) return FromRocks(it->status());
    if (it->Valid()) {
      return Status::Corruption(path +
                                ": database has data but no format version in meta; "
                                "refusing to open");
    }
  }
  return Status::Ok();
}

// The bytes in the database's WAL files (`NNNNNN.log`).
Status WalBytes(const std::string& path, rocksdb::Env* env, uint64_t* bytes) {
  *bytes = 0;
  std::vector<std::string> children;
  auto s = env->GetChildren(path, &children);
  if (!s.ok()) return FromRocks(s);
  for (const std::string& name : children) {
    if (name.size() <= 4 || name.compare(name.size() - 4, 4, ".log") != 0) continue;
    if (!std::all_of(name.begin(), name.end() - 4, [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    uint64_t size = 0;
    s = env->GetFileSize(path + "/" + name, &size);
    if (!s.ok()) return FromRocks(s);
    *bytes += size;
  }
  return Status::Ok();
}

// The preliminary open of RocksStoreOptions::replay_open_min_wal_bytes: replays the WAL with the
// prefix-sorted vector memtable for `tasks` too; RocksDB flushes every replayed memtable to L0
// before the open returns (avoid_flush_during_recovery is false), and the close leaves no WAL to
// replay. The vector memtable is fine here because nothing reads it before that flush; it is not
// fine for the real open, whose `tasks` memtable serves point reads.
Status ReplayWalIntoTables(const RocksStoreOptions& options, rocksdb::Env* env) {
  std::vector<rocksdb::ColumnFamilyDescriptor> descs = MakeCfDescriptors(options);
  descs[kTasks].options.memtable_factory = NewPrefixSortedRepFactory();
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  auto s = rocksdb::DB::Open(MakeWritableDbOptions(env, options.path), options.path, descs,
                             &handles, &raw);
  if (!s.ok()) return FromRocks(s);
  std::unique_ptr<rocksdb::DB> db(raw);
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  return FromRocks(db->Close());
}

// The existing database's column families must be exactly kCfNames: a missing one means it is
// not (or no longer) a tokenwheel database, an unknown one that a newer format wrote it.
Status CheckColumnFamilies(const std::string& path, rocksdb::Env* env) {
  std::vector<std::string> names;
  auto s = rocksdb::DB::ListColumnFamilies(MakeDbOptions(env), path, &names);
  if (!s.ok()) return FromRocks(s);
  std::set<std::string> have(names.begin(), names.end());
  for (const char* want : kCfNames) {
    if (have.erase(want) == 0) {
      return Status::InvalidArgument(path + ": missing column family '" + want +
                                     "'; not a tokenwheel database, refusing to open");
    }
  }
  if (!have.empty()) {
    return Status::InvalidArgument(path + ": unknown column family '" + *have.begin() +
                                   "' (written by a newer tokenwheel?); refusing to open");
  }
  return Status::Ok();
}

Status RocksStore::Open(const RocksStoreOptions& options, std::unique_ptr<Store>* out) {
  TW_ASSERT(out != nullptr);
  if (options.path.empty()) return Status::InvalidArgument("RocksStoreOptions.path is empty");
  std::unique_ptr<RocksStore> store(new RocksStore());
  store->sync_enabled_ = options.sync_default;
  store->on_batch_committed_ = options.on_batch_committed;
  store->flush_on_close_ = options.flush_on_close;
  store->side_flush_every_bytes_ = options.side_flush_every_bytes;
  if (options.file_system) store->env_ = rocksdb::NewCompositeEnv(options.file_system);
  rocksdb::Env* env = store->env_ ? store->env_.get() : rocksdb::Env::Default();
  // Flushes and compactions (the HIGH and LOW pools) run at nice 19: on a small machine a
  // flush is a long CPU burst (sorting the `live` vector memtable), and the threads that
  // answer callers should get the cores first. Process-wide; idempotent.
  env->LowerThreadPoolCPUPriority(rocksdb::Env::Priority::HIGH, rocksdb::CpuPriority::kLow)
      .PermitUncheckedError();
  env->LowerThreadPoolCPUPriority(rocksdb::Env::Priority::LOW, rocksdb::CpuPriority::kLow)
      .PermitUncheckedError();

  auto exists = env->FileExists(options.path + "/CURRENT");
  if (!exists.ok() && !exists.IsNotFound()) return FromRocks(exists);
  const bool create = exists.IsNotFound();
  bool version_found = false;
  if (!create) {
    Status s = CheckColumnFamilies(options.path, env);
    if (!s.ok()) return s;
    uint32_t version = 0;
    s = ProbeFormatVersion(options.path, env, &version_found, &version);
    if (!s.ok()) return s;
    if (version_found && version != kFormatVersion && version != kFormatVersionReadable) {
      return Status::InvalidArgument(options.path + ": on-disk format version " +
                                     std::to_string(version) +
                                     " is not the version this build reads (" +
                                     std::to_string(kFormatVersion) + "); refusing to open");
    }
    if (!version_found) {
      s = ProbeEmpty(options.path, env);
      if (!s.ok()) return s;
    }
    uint64_t wal_bytes = 0;
    s = WalBytes(options.path, env, &wal_bytes);
    if (!s.ok()) return s;
    if (wal_bytes > 0 && wal_bytes >= options.replay_open_min_wal_bytes) {
      s = ReplayWalIntoTables(options, env);
      if (!s.ok()) return s;
    }
  }
  Status s = store->OpenDb(options, create);
  if (!s.ok()) return s;
  s = store->CheckOrWriteFormatVersion(/*version_expected=*/!create && version_found);
  if (!s.ok()) return s;
  s = store->LoadFirstEventSeq();
  if (!s.ok()) return s;
  store->opened_ = true;
  *out = std::move(store);
  return Status::Ok();
}

Status RocksStore::OpenDb(const RocksStoreOptions& options, bool create) {
  rocksdb::DBOptions o =
      MakeWritableDbOptions(env_ ? env_.get() : rocksdb::Env::Default(), options.path);
  o.create_if_missing = create;
  o.create_missing_column_families = create;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  auto s = rocksdb::DB::Open(o, options.path, MakeCfDescriptors(options), &handles, &raw);
  if (!s.ok()) return FromRocks(s);
  db_.reset(raw);
  TW_ASSERT(handles.size() == kCfCount);
  std::copy(handles.begin(), handles.end(), cfs_.begin());
  return Status::Ok();
}

void RocksStore::FlushAll() {
  rocksdb::FlushOptions fo;
  fo.wait = true;
  fo.allow_write_stall = true;  // nothing else writes any more: do not wait for compactions
  std::vector<rocksdb::ColumnFamilyHandle*> all(cfs_.begin(), cfs_.end());
  db_->Flush(fo, all).PermitUncheckedError();
}

// Reads the version back (the probe checked it), or writes it into a new or empty database.
// A version 1 database needs no rewrite to be read (FORMAT.md): it is marked kFormatVersion
// before anything is written in the new format, so an older build then refuses it.
Status RocksStore::CheckOrWriteFormatVersion(bool version_expected) {
  rocksdb::PinnableSlice value;
  Status s = Get(kMeta, codec::kMetaFormatVersion, &value);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  std::string encoded;
  codec::EncodeFormatVersion(kFormatVersion, &encoded);
  if (s.ok()) {
    uint32_t version = 0;
    s = codec::DecodeFormatVersion(View(value), &version);
    if (!s.ok()) return s;
    if (version == kFormatVersionReadable) {
      return FromRocks(db_->Put(wo, cfs_[kMeta], codec::kMetaFormatVersion, encoded));
    }
    // The probe read the same version; a mismatch now is a concurrent writer or a bug.
    if (version != kFormatVersion) return Status::Corruption("format version changed at open");
    return Status::Ok();
  }
  if (!s.IsNotFound()) return s;
  if (version_expected) return Status::Corruption("format version vanished at open");
  bool empty = false;
  s = AllEmpty(&empty);
  if (!s.ok()) return s;
  if (!empty) return Status::Corruption("database has data but no format version in meta");
  return FromRocks(db_->Put(wo, cfs_[kMeta], codec::kMetaFormatVersion, encoded));
}

Status RocksStore::LoadFirstEventSeq() {
  rocksdb::PinnableSlice value;
  Status s = Get(kMeta, codec::kMetaFirstEventSeq, &value);
  if (s.IsNotFound()) return Status::Ok();  // nothing trimmed yet: 1
  uint64_t first = 0;
  if (s.ok()) s = codec::DecodeU64Value(View(value), &first);
  if (s.ok()) first_event_seq_.store(first, std::memory_order_release);
  return s;
}

Status RocksStore::AllEmpty(bool* empty) {
  *empty = true;
  for (size_t cf = 0; cf < kCfCount && *empty; ++cf) {
    auto it = Scan(static_cast<Cf>(cf), rocksdb::ReadOptions());
    it->SeekToFirst();
    if (it->Valid()) *empty = false;
    if (!it->status().ok()) return FromRocks(it->status());
  }
  return Status::Ok();
}

Status RocksStore::Get(Cf cf, const rocksdb::Slice& key, rocksdb::PinnableSlice* value) {
  auto s = db_->Get(rocksdb::ReadOptions(), cfs_[cf], key, value);
  if (s.IsNotFound()) return Status::NotFound();
  return FromRocks(s);
}

std::unique_ptr<rocksdb::Iterator> RocksStore::Scan(Cf cf, rocksdb::ReadOptions ro) {
  return std::unique_ptr<rocksdb::Iterator>(db_->NewIterator(ro, cfs_[cf]));
}

Status RocksStore::Write(WriteBatch* batch, bool sync) {
  auto* b = dynamic_cast<RocksWriteBatch*>(batch);
  TW_ASSERT(b != nullptr);
  TW_ASSERT(b->owner() == this);
  if (poisoned_.load(std::memory_order_acquire)) {
    return Status::Poisoned("store poisoned by an earlier failed write: " + poison_reason_);
  }
  // Lower the floor before the entries become visible (invariant 3 holds at every instant).
  if (b->min_retired_ms() != std::numeric_limits<int64_t>::max()) {
    retired_floor_ms_ = std::min(retired_floor_ms_, b->min_retired_ms());
    ++retired_writes_;
  }
  rocksdb::WriteOptions wo;
  wo.sync = sync && sync_enabled_;
  rocksdb::Status s;
  if (b->Count() > 0) {
    s = db_->Write(wo, b->rep());
  } else if (wo.sync) {
    s = db_->SyncWAL();  // an empty synced write still makes earlier unsynced ones durable
  }
  if (!s.ok()) {
    poison_reason_ = s.ToString();
    // Invariant 2 covers RocksDB's own writers too: a flush already queued (a side flush asked
    // for before this write, or a full memtable) must not write after the store says it is
    // poisoned. Wait for running and queued background work, and let none start again.
    db_->PauseBackgroundWork().PermitUncheckedError();
    poisoned_.store(true, std::memory_order_release);
    return FromRocks(s);
  }
  if (b->trim_first_event_seq() != 0) {
    trim_.deleted_below = std::max(trim_.deleted_below, b->trim_deleted_below());
    first_event_seq_.store(b->trim_first_event_seq(), std::memory_order_release);
  }
  if (on_batch_committed_ && b->Count() > 0) on_batch_committed_(View(b->rep()->Data()));
  bytes_since_side_flush_ += b->rep()->GetDataSize();
  if (bytes_since_side_flush_ >= side_flush_every_bytes_) {
    bytes_since_side_flush_ = 0;
    FlushSideCfs();
  }
  return Status::Ok();
}

// Asks RocksDB to flush the side column families without waiting (side_flush_every_bytes). A
// column family whose previous flush is still pending is skipped: a second immutable memtable
// would make RocksDB stop writes (max_write_buffer_number = 2). A failed request is ignored:
// the data is in the WAL either way, and max_total_wal_size remains the backstop.
void RocksStore::FlushSideCfs() {
  std::vector<rocksdb::ColumnFamilyHandle*> cfs;
  for (Cf cf : kSideCfs) {
    uint64_t immutable = 0;
    uint64_t active_entries = 0;
    if (!db_->GetIntProperty(cfs_[cf], rocksdb::DB::Properties::kNumImmutableMemTable,
                             &immutable) ||
        !db_->GetIntProperty(cfs_[cf], rocksdb::DB::Properties::kNumEntriesActiveMemTable,
                             &active_entries)) {
      continue;
    }
    if (immutable == 0 && active_entries > 0) cfs.push_back(cfs_[cf]);
  }
  if (cfs.empty()) return;
  rocksdb::FlushOptions fo;
  fo.wait = false;
  fo.allow_write_stall = true;
  db_->Flush(fo, cfs).PermitUncheckedError();
}

Status RocksStore::LoadMeta(StoreMeta* meta) {
  *meta = StoreMeta();
  rocksdb::PinnableSlice value;
  Status s = Get(kMeta, codec::kMetaCounters, &value);
  if (s.ok()) {
    codec::Counters c;
    s = codec::DecodeCounters(View(value), &c);
    if (!s.ok()) return s;
    meta->next_event_seq = c.next_event_seq;
    meta->next_activity_id = c.next_activity_id;
    meta->next_queue_seq = c.next_queue_seq;
  } else if (!s.IsNotFound()) {
    return s;
  }
  value.Reset();
  s = Get(kMeta, codec::kMetaFirstEventSeq, &value);
  if (s.ok()) {
    s = codec::DecodeU64Value(View(value), &meta->first_event_seq);
    if (!s.ok()) return s;
  } else if (!s.IsNotFound()) {
    return s;
  }

  rocksdb::ReadOptions ro;
  rocksdb::Slice lower(codec::kMetaConsumerPrefix);
  rocksdb::Slice upper(codec::kMetaConsumerEnd);
  ro.iterate_lower_bound = &lower;
  ro.iterate_upper_bound = &upper;
  auto it = Scan(kMeta, ro);
  for (it->Seek(lower); it->Valid(); it->Next()) {
    std::string_view key = View(it->key());
    uint64_t acked = 0;
    s = codec::DecodeU64Value(View(it->value()), &acked);
    if (!s.ok()) return s;
    meta->consumers.emplace_back(std::string(key.substr(codec::kMetaConsumerPrefix.size())), acked);
  }
  if (!it->status().ok()) return FromRocks(it->status());

  // Never hand out a sequence or id that is already on disk, whatever the counters say.
  auto last = Scan(kEvents, rocksdb::ReadOptions());
  last->SeekToLast();
  if (last->Valid()) {
    uint64_t seq = 0;
    s = codec::DecodeSeqKey(View(last->key()), &seq);
    if (!s.ok()) return s;
    meta->next_event_seq = std::max(meta->next_event_seq, seq + 1);
  }
  if (!last->status().ok()) return FromRocks(last->status());
  auto act = Scan(kActivities, rocksdb::ReadOptions());
  act->SeekToLast();
  if (act->Valid()) {
    uint64_t id = 0;
    s = codec::DecodeSeqKey(View(act->key()), &id);
    if (!s.ok()) return s;
    meta->next_activity_id = std::max(meta->next_activity_id, id + 1);
  }
  return FromRocks(act->status());
}

Status RocksStore::LoadActivities(std::vector<ActivityRecord>* out) {
  out->clear();
  auto it = Scan(kActivities, rocksdb::ReadOptions());
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    ActivityRecord a;
    Status s = codec::DecodeSeqKey(View(it->key()), &a.id);
    if (s.ok()) s = codec::DecodeActivity(View(it->value()), &a);
    if (!s.ok()) return s;
    out->push_back(std::move(a));
  }
  return FromRocks(it->status());
}

Status RocksStore::ScanLive(const std::function<void(const TaskId&, const LiveRecord&)>& fn) {
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;
  ro.readahead_size = kRecoveryReadaheadBytes;
  auto it = Scan(kLive, ro);
  TaskId id;
  LiveRecord r;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    Status s = codec::DecodeTaskIdKey(View(it->key()), &id);
    if (s.ok()) s = codec::DecodeLive(View(it->value()), &r);
    if (!s.ok()) return s;
    fn(id, r);
  }
  return FromRocks(it->status());
}

Status RocksStore::GetTaskIssue(const TaskId& id, TaskIssueRecord* out) {
  char key[codec::kTaskKeyBytes];
  codec::EncodeTaskKey(id, codec::TaskKeyKind::kIssue, key);
  rocksdb::PinnableSlice value;
  Status s = Get(kTasks, rocksdb::Slice(key, sizeof(key)), &value);
  if (!s.ok()) return s;
  return codec::DecodeTaskIssue(View(value), out);
}

Status RocksStore::GetTaskState(const TaskId& id, TaskStateRecord* out) {
  return GetStateRecord(id, codec::TaskKeyKind::kState, out);
}

Status RocksStore::GetTaskEnd(const TaskId& id, TaskStateRecord* out) {
  return GetStateRecord(id, codec::TaskKeyKind::kEnd, out);
}

Status RocksStore::GetStateRecord(const TaskId& id, codec::TaskKeyKind kind, TaskStateRecord* out) {
  char key[codec::kTaskKeyBytes];
  codec::EncodeTaskKey(id, kind, key);
  rocksdb::PinnableSlice value;
  Status s = Get(kTasks, rocksdb::Slice(key, sizeof(key)), &value);
  if (!s.ok()) return s;
  return codec::DecodeTaskState(View(value), out);
}

Status RocksStore::FindIdempotencyKey(std::string_view key, TaskId* out) {
  if (key.empty()) return Status::NotFound();  // "no key" never matches
  rocksdb::PinnableSlice value;
  Status s = Get(kIdem, rocksdb::Slice(key.data(), key.size()), &value);
  if (!s.ok()) return s;
  return codec::DecodeIdempotencyValue(View(value), out);
}

Status RocksStore::ScanRetired(
    int64_t before_ms, size_t max,
    const std::function<void(int64_t, const TaskId&, std::string_view)>& fn) {
  if (max == 0 || before_ms <= retired_floor_ms_) return Status::Ok();  // nothing older exists
  char lower[8];
  char upper[8];
  codec::EncodeRetiredPrefix(retired_floor_ms_, lower);
  codec::EncodeRetiredPrefix(before_ms, upper);  // every key of an entry ended >= before_ms is >=
  rocksdb::Slice lower_slice(lower, sizeof(lower));
  rocksdb::Slice upper_slice(upper, sizeof(upper));
  rocksdb::ReadOptions ro;
  ro.iterate_lower_bound = &lower_slice;
  ro.iterate_upper_bound = &upper_slice;
  auto it = Scan(kRetired, ro);
  const uint64_t writes_at_start = retired_writes_;
  size_t n = 0;
  int64_t oldest = before_ms;  // when nothing is found, nothing older than before_ms exists
  for (it->Seek(lower_slice); it->Valid() && n < max; it->Next(), ++n) {
    int64_t ended_ms = 0;
    TaskId id;
    std::string_view idem;
    Status s = codec::DecodeRetiredKey(View(it->key()), &ended_ms, &id);
    if (s.ok()) s = codec::DecodeRetiredValue(View(it->value()), &idem);
    if (!s.ok()) return s;
    if (n == 0) oldest = ended_ms;
    fn(ended_ms, id, idem);
  }
  if (!it->status().ok()) return FromRocks(it->status());
  // Raise the floor only if no Write put entries meanwhile (fn may write): the iterator's view
  // could not have seen them.
  if (retired_writes_ == writes_at_start) retired_floor_ms_ = std::max(retired_floor_ms_, oldest);
  return Status::Ok();
}

Status RocksStore::ReadEvents(uint64_t from_seq, size_t max, std::vector<EventRecord>* out) {
  out->clear();
  // Below first_event_seq is trimmed, even where the range tombstone is not written yet.
  if (max == 0 || from_seq < first_event_seq_.load(std::memory_order_acquire)) {
    return Status::Ok();
  }
  char lower[codec::kSeqKeyBytes];
  char upper[codec::kSeqKeyBytes];
  codec::EncodeSeqKey(from_seq, lower);
  rocksdb::Slice upper_slice(upper, sizeof(upper));
  rocksdb::ReadOptions ro;
  // Past the range the iterator stops at the bound instead of reading on (or into tombstones).
  if (max <= std::numeric_limits<uint64_t>::max() - from_seq) {
    codec::EncodeSeqKey(from_seq + max, upper);
    ro.iterate_upper_bound = &upper_slice;
  }
  auto it = Scan(kEvents, ro);
  uint64_t expect = from_seq;
  for (it->Seek(rocksdb::Slice(lower, sizeof(lower))); it->Valid() && out->size() < max;
       it->Next(), ++expect) {
    uint64_t seq = 0;
    Status s = codec::DecodeSeqKey(View(it->key()), &seq);
    if (!s.ok()) return s;
    if (seq != expect) break;  // a gap: the end of the stream (or trimmed below from_seq)
    EventRecord& e = out->emplace_back();
    e.seq = seq;
    s = codec::DecodeEvent(View(it->value()), &e);
    if (!s.ok()) return s;
  }
  return FromRocks(it->status());
}

}  // namespace

Status OpenRocksStore(const RocksStoreOptions& options, std::unique_ptr<Store>* out) {
  return RocksStore::Open(options, out);
}

rocksdb::DB* RocksDbOf(Store* store) {
  auto* rocks = dynamic_cast<RocksStore*>(store);
  return rocks == nullptr ? nullptr : rocks->db();
}

}  // namespace tw
