// RocksStore: tw::Store on RocksDB. Layout and encodings: docs/FORMAT.md, storage/codec.h. The
// units it composes: storage/rocksdb_options.h (column families, DB and column family options),
// storage/rocksdb_batch.h (the write batch), storage/rocksdb_open.h (open, recovery, format
// version).
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
//  4. env_ outlives db_ (member order and ~RocksStore). Every write-ahead log sync, write stall,
//     flush and compaction of db_ reaches counters_ (through env_'s file system and a listener).
//  5. first_event_seq_ equals meta first_event_seq as of the last successful Write; events below
//     it are trimmed for every reader, whether or not their range tombstone is written yet.
//  6. cipher_ is set iff RocksStoreOptions::payload_keys was not empty; then every `tasks` and
//     `events` value this store writes is sealed (storage/payload_cipher.h), and meta holds
//     kFormatVersionSealed. Reads open sealed values and take plain ones as they are, so records
//     written before encryption was turned on stay readable.

#include "storage/rocksdb_store.h"

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/utilities/checkpoint.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <limits>
#include <utility>

#include "engine/assert.h"
#include "storage/codec.h"
#include "storage/payload_cipher.h"
#include "storage/rocksdb_batch.h"
#include "storage/rocksdb_convert.h"
#include "storage/rocksdb_open.h"
#include "storage/rocksdb_options.h"
#include "storage/rocksdb_store_testing.h"
#include "storage/store_stats.h"

namespace tw::rocks {
namespace {

// One-off scans at recovery read sequentially; large readahead, and keep them out of the cache.
constexpr size_t kRecoveryReadaheadBytes = 2 << 20;

// Calls fn for `it`'s entry and up to max - 1 after it; *oldest = the first one's ended_ms.
Status VisitRetired(rocksdb::Iterator* it, size_t max,
                    const std::function<void(int64_t, const TaskId&, std::string_view)>& fn,
                    int64_t* oldest) {
  for (size_t n = 0; it->Valid() && n < max; it->Next(), ++n) {
    int64_t ended_ms = 0;
    TaskId id;
    std::string_view idem;
    Status s = codec::DecodeRetiredKey(View(it->key()), &ended_ms, &id);
    if (s.ok()) s = codec::DecodeRetiredValue(View(it->value()), &idem);
    if (!s.ok()) return s;
    if (n == 0) *oldest = ended_ms;
    fn(ended_ms, id, idem);
  }
  return FromRocks(it->status());
}

// Opens the sealed `value` stored under `key` in the column family of `ad_tag` into *plain.
// `what` names the record in messages. REQUIRES: PayloadCipher::IsSealed(value).
Status OpenSealed(const PayloadCipher* cipher, char ad_tag, std::string_view key,
                  std::string_view value, const std::string& what, std::string* plain) {
  TW_DEBUG_ASSERT(PayloadCipher::IsSealed(value));
  if (cipher == nullptr) {
    return Status::InvalidArgument(what + " is encrypted, and no payload key file was given");
  }
  return cipher->Open(SealAd(ad_tag, key).view(), value, what, plain);
}

// Appends the events from `it`'s entry on while their seqs follow from_seq without a gap, up to
// max of them in *out.
Status ReadEventRun(rocksdb::Iterator* it, const PayloadCipher* cipher, uint64_t from_seq,
                    size_t max, std::vector<EventRecord>* out) {
  std::string buf;
  for (uint64_t expect = from_seq; it->Valid() && out->size() < max; it->Next(), ++expect) {
    uint64_t seq = 0;
    Status s = codec::DecodeSeqKey(View(it->key()), &seq);
    if (!s.ok()) return s;
    if (seq != expect) break;  // a gap: the end of the stream (or trimmed below from_seq)
    std::string_view plain = View(it->value());
    if (PayloadCipher::IsSealed(plain)) {
      s = OpenSealed(cipher, SealAd::kEvents, View(it->key()), plain,
                     "event " + std::to_string(seq), &buf);
      if (!s.ok()) return s;
      plain = buf;
    }
    EventRecord& e = out->emplace_back();
    e.seq = seq;
    s = codec::DecodeEvent(plain, &e);
    if (!s.ok()) return s;
  }
  return FromRocks(it->status());
}

// The task id as 32 hex digits (the key's bytes), for messages.
std::string IdText(const TaskId& id) {
  char text[33];
  std::snprintf(text, sizeof(text), "%016llx%016llx", static_cast<unsigned long long>(id.hi),
                static_cast<unsigned long long>(id.lo));
  return text;
}

const char* TaskKeyKindName(codec::TaskKeyKind kind) {
  switch (kind) {
    case codec::TaskKeyKind::kIssue:
      return "issue";
    case codec::TaskKeyKind::kState:
      return "state";
    case codec::TaskKeyKind::kEnd:
      return "end";
  }
  return "?";
}

class RocksStore final : public Store {
 public:
  static Status Open(const RocksStoreOptions& options, const RocksStoreTestHooks& hooks,
                     std::unique_ptr<Store>* out);

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
    return std::make_unique<RocksWriteBatch>(this, cfs_, &trim_, cipher_.get());
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
  Status Checkpoint(const std::string& dir) override;
  StoreStats Stats() const override { return counters_->Snapshot(); }

  rocksdb::DB* db() const { return db_.get(); }

 private:
  RocksStore(const RocksStoreOptions& options, const RocksStoreTestHooks& hooks);

  rocksdb::Env* env() const { return env_.get(); }
  // A clean close: flushes every column family's memtable (waiting) so that the next open has no
  // WAL to replay. Not for a poisoned store (nothing more reaches disk after a failed Write,
  // invariant 2) nor for one that failed to open. A failure is ignored: the WAL still holds
  // everything, so the next open replays it as after a crash.
  void FlushAll();
  void FlushSideCfs();
  bool NeedsSideFlush(Cf cf) const;
  rocksdb::Status Commit(RocksWriteBatch* b, bool sync);
  Status Poison(const rocksdb::Status& s);
  void AfterCommit(RocksWriteBatch* b);
  Status LoadCounters(StoreMeta* meta);
  Status LoadConsumers(StoreMeta* meta);
  Status RaisePastLastKey(Cf cf, uint64_t* next);
  Status LoadFirstEventSeq();
  Status GetMetaU64(std::string_view key, uint64_t* value);
  Status GetStateRecord(const TaskId& id, codec::TaskKeyKind kind, TaskStateRecord* out);
  // The plain value of the task record (id, kind), opened if sealed: a view of *value or *buf.
  Status GetTaskRecord(const TaskId& id, codec::TaskKeyKind kind, rocksdb::PinnableSlice* value,
                       std::string* buf, std::string_view* plain);
  Status Get(Cf cf, const rocksdb::Slice& key, rocksdb::PinnableSlice* value);
  std::unique_ptr<rocksdb::Iterator> Scan(Cf cf, rocksdb::ReadOptions ro);

  std::shared_ptr<StoreCounters> counters_ = std::make_shared<StoreCounters>();
  std::unique_ptr<rocksdb::Env> env_;  // declared before db_: outlives it (invariant 4)
  std::unique_ptr<rocksdb::DB> db_;
  CfHandles cfs_;
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
  std::function<void(std::string_view)> on_batch_committed_;  // RocksStoreTestHooks
  std::unique_ptr<const PayloadCipher> cipher_;               // invariant 6
};

RocksStore::RocksStore(const RocksStoreOptions& options, const RocksStoreTestHooks& hooks)
    : sync_enabled_(options.sync_default),
      flush_on_close_(hooks.flush_on_close),
      side_flush_every_bytes_(options.side_flush_every_bytes),
      on_batch_committed_(hooks.on_batch_committed) {
  cfs_.fill(nullptr);
  if (!options.payload_keys.empty()) {
    cipher_ = std::make_unique<const PayloadCipher>(options.payload_keys);
  }
  std::shared_ptr<rocksdb::FileSystem> base =
      hooks.file_system ? hooks.file_system : rocksdb::FileSystem::Default();
  env_ = rocksdb::NewCompositeEnv(std::make_shared<TimedWalFs>(std::move(base), counters_));
  TW_ASSERT(env_ != nullptr);
}

Status RocksStore::Open(const RocksStoreOptions& options, const RocksStoreTestHooks& hooks,
                        std::unique_ptr<Store>* out) {
  TW_ASSERT(out != nullptr);
  if (options.path.empty()) return Status::InvalidArgument("RocksStoreOptions.path is empty");
  std::unique_ptr<RocksStore> store(new RocksStore(options, hooks));
  LowerBackgroundPriority(store->env());
  OpenPlan plan;
  Status s = PrepareOpen(options, store->env(), &plan);
  if (s.ok())
    s = OpenDb(options, store->env(), plan.create,
               std::make_shared<StatsListener>(store->counters_), &store->db_, &store->cfs_);
  if (s.ok()) {
    s = CheckOrWriteFormatVersion(store->db(), store->cfs_, plan.version_expected,
                                  store->cipher_ != nullptr);
  }
  if (s.ok()) s = store->LoadFirstEventSeq();
  if (!s.ok()) return s;
  store->opened_ = true;
  *out = std::move(store);
  return Status::Ok();
}

void RocksStore::FlushAll() {
  rocksdb::FlushOptions fo;
  fo.wait = true;
  fo.allow_write_stall = true;  // nothing else writes any more: do not wait for compactions
  std::vector<rocksdb::ColumnFamilyHandle*> all(cfs_.begin(), cfs_.end());
  db_->Flush(fo, all).PermitUncheckedError();
}

Status RocksStore::LoadFirstEventSeq() {
  uint64_t first = 1;  // when meta has none: nothing trimmed yet
  Status s = GetMetaU64(codec::kMetaFirstEventSeq, &first);
  if (s.ok()) first_event_seq_.store(first, std::memory_order_release);
  return s;
}

// A missing key leaves *value as it was.
Status RocksStore::GetMetaU64(std::string_view key, uint64_t* value) {
  rocksdb::PinnableSlice encoded;
  Status s = Get(kMeta, key, &encoded);
  if (s.IsNotFound()) return Status::Ok();
  if (!s.ok()) return s;
  return codec::DecodeU64Value(View(encoded), value);
}

Status RocksStore::Get(Cf cf, const rocksdb::Slice& key, rocksdb::PinnableSlice* value) {
  auto s = db_->Get(rocksdb::ReadOptions(), cfs_[cf], key, value);
  if (s.IsNotFound()) return Status::NotFound();
  return FromRocks(s);
}

std::unique_ptr<rocksdb::Iterator> RocksStore::Scan(Cf cf, rocksdb::ReadOptions ro) {
  return std::unique_ptr<rocksdb::Iterator>(db_->NewIterator(ro, cfs_[cf]));
}

// RocksDB's checkpoint: SST files hard-linked (copied across file systems), the memtables flushed
// first, MANIFEST and CURRENT copied; a consistent point in the write order.
Status RocksStore::Checkpoint(const std::string& dir) {
  if (poisoned_.load(std::memory_order_acquire)) {
    return Status::Poisoned("the store failed; no checkpoint until it is open again");
  }
  rocksdb::Checkpoint* raw = nullptr;
  rocksdb::Status s = rocksdb::Checkpoint::Create(db_.get(), &raw);
  if (!s.ok()) return FromRocks(s);
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  return FromRocks(checkpoint->CreateCheckpoint(dir));
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
  rocksdb::Status s = Commit(b, sync);
  if (!s.ok()) return Poison(s);
  AfterCommit(b);
  return Status::Ok();
}

rocksdb::Status RocksStore::Commit(RocksWriteBatch* b, bool sync) {
  rocksdb::WriteOptions wo;
  wo.sync = sync && sync_enabled_;
  if (b->Count() > 0) return db_->Write(wo, b->rep());
  // An empty synced write still makes earlier unsynced ones durable.
  if (wo.sync) return db_->SyncWAL();
  return rocksdb::Status::OK();
}

Status RocksStore::Poison(const rocksdb::Status& s) {
  poison_reason_ = s.ToString();
  // Invariant 2 covers RocksDB's own writers too: a flush already queued (a side flush asked
  // for before this write, or a full memtable) must not write after the store says it is
  // poisoned. Wait for running and queued background work, and let none start again.
  db_->PauseBackgroundWork().PermitUncheckedError();
  poisoned_.store(true, std::memory_order_release);
  return FromRocks(s);
}

void RocksStore::AfterCommit(RocksWriteBatch* b) {
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
}

// Asks RocksDB to flush the side column families without waiting (side_flush_every_bytes). A
// failed request is ignored: the data is in the WAL either way, and max_total_wal_size remains
// the backstop.
void RocksStore::FlushSideCfs() {
  std::vector<rocksdb::ColumnFamilyHandle*> cfs;
  for (Cf cf : kSideCfs) {
    if (NeedsSideFlush(cf)) cfs.push_back(cfs_[cf]);
  }
  if (cfs.empty()) return;
  rocksdb::FlushOptions fo;
  fo.wait = false;
  fo.allow_write_stall = true;
  db_->Flush(fo, cfs).PermitUncheckedError();
}

// Whether `cf` has entries to flush and no flush pending: a second immutable memtable would
// make RocksDB stop writes (max_write_buffer_number = 2). false when RocksDB cannot tell.
bool RocksStore::NeedsSideFlush(Cf cf) const {
  uint64_t immutable = 0;
  uint64_t active_entries = 0;
  if (!db_->GetIntProperty(cfs_[cf], rocksdb::DB::Properties::kNumImmutableMemTable, &immutable) ||
      !db_->GetIntProperty(cfs_[cf], rocksdb::DB::Properties::kNumEntriesActiveMemTable,
                           &active_entries)) {
    return false;
  }
  return immutable == 0 && active_entries > 0;
}

Status RocksStore::LoadMeta(StoreMeta* meta) {
  *meta = StoreMeta();
  Status s = LoadCounters(meta);
  if (s.ok()) s = GetMetaU64(codec::kMetaFirstEventSeq, &meta->first_event_seq);
  if (s.ok()) s = LoadConsumers(meta);
  // Never hand out a sequence or id that is already on disk, whatever the counters say.
  if (s.ok()) s = RaisePastLastKey(kEvents, &meta->next_event_seq);
  if (s.ok()) s = RaisePastLastKey(kActivities, &meta->next_activity_id);
  return s;
}

// meta "counters"; when missing, *meta keeps its defaults.
Status RocksStore::LoadCounters(StoreMeta* meta) {
  rocksdb::PinnableSlice value;
  Status s = Get(kMeta, codec::kMetaCounters, &value);
  if (s.IsNotFound()) return Status::Ok();
  codec::Counters c;
  if (s.ok()) s = codec::DecodeCounters(View(value), &c);
  if (!s.ok()) return s;
  meta->next_event_seq = c.next_event_seq;
  meta->next_activity_id = c.next_activity_id;
  meta->next_queue_seq = c.next_queue_seq;
  return Status::Ok();
}

Status RocksStore::LoadConsumers(StoreMeta* meta) {
  rocksdb::ReadOptions ro;
  rocksdb::Slice lower(codec::kMetaConsumerPrefix);
  rocksdb::Slice upper(codec::kMetaConsumerEnd);
  ro.iterate_lower_bound = &lower;
  ro.iterate_upper_bound = &upper;
  auto it = Scan(kMeta, ro);
  for (it->Seek(lower); it->Valid(); it->Next()) {
    std::string_view key = View(it->key());
    uint64_t acked = 0;
    Status s = codec::DecodeU64Value(View(it->value()), &acked);
    if (!s.ok()) return s;
    meta->consumers.emplace_back(std::string(key.substr(codec::kMetaConsumerPrefix.size())), acked);
  }
  return FromRocks(it->status());
}

// Raises *next past the last key of `cf`, a column family keyed by sequence numbers.
Status RocksStore::RaisePastLastKey(Cf cf, uint64_t* next) {
  auto it = Scan(cf, rocksdb::ReadOptions());
  it->SeekToLast();
  if (it->Valid()) {
    uint64_t last = 0;
    Status s = codec::DecodeSeqKey(View(it->key()), &last);
    if (!s.ok()) return s;
    *next = std::max(*next, last + 1);
  }
  return FromRocks(it->status());
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
  rocksdb::PinnableSlice value;
  std::string buf;
  std::string_view plain;
  Status s = GetTaskRecord(id, codec::TaskKeyKind::kIssue, &value, &buf, &plain);
  if (!s.ok()) return s;
  return codec::DecodeTaskIssue(plain, out);
}

Status RocksStore::GetTaskState(const TaskId& id, TaskStateRecord* out) {
  return GetStateRecord(id, codec::TaskKeyKind::kState, out);
}

Status RocksStore::GetTaskEnd(const TaskId& id, TaskStateRecord* out) {
  return GetStateRecord(id, codec::TaskKeyKind::kEnd, out);
}

Status RocksStore::GetStateRecord(const TaskId& id, codec::TaskKeyKind kind, TaskStateRecord* out) {
  rocksdb::PinnableSlice value;
  std::string buf;
  std::string_view plain;
  Status s = GetTaskRecord(id, kind, &value, &buf, &plain);
  if (!s.ok()) return s;
  return codec::DecodeTaskState(plain, out);
}

Status RocksStore::GetTaskRecord(const TaskId& id, codec::TaskKeyKind kind,
                                 rocksdb::PinnableSlice* value, std::string* buf,
                                 std::string_view* plain) {
  char key[codec::kTaskKeyBytes];
  codec::EncodeTaskKey(id, kind, key);
  Status s = Get(kTasks, rocksdb::Slice(key, sizeof(key)), value);
  if (!s.ok()) return s;
  if (!PayloadCipher::IsSealed(View(*value))) {
    *plain = View(*value);
    return Status::Ok();
  }
  s = OpenSealed(cipher_.get(), SealAd::kTasks, std::string_view(key, sizeof(key)), View(*value),
                 "task " + IdText(id) + " " + TaskKeyKindName(kind) + " record", buf);
  if (s.ok()) *plain = *buf;
  return s;
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
  int64_t oldest = before_ms;  // when nothing is found, nothing older than before_ms exists
  it->Seek(lower_slice);
  Status s = VisitRetired(it.get(), max, fn, &oldest);
  if (!s.ok()) return s;
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
  it->Seek(rocksdb::Slice(lower, sizeof(lower)));
  return ReadEventRun(it.get(), cipher_.get(), from_seq, max, out);
}

}  // namespace

}  // namespace tw::rocks

namespace tw {

Status OpenRocksStore(const RocksStoreOptions& options, std::unique_ptr<Store>* out) {
  return rocks::RocksStore::Open(options, RocksStoreTestHooks(), out);
}

Status OpenRocksStoreForTesting(const RocksStoreOptions& options, const RocksStoreTestHooks& hooks,
                                std::unique_ptr<Store>* out) {
  return rocks::RocksStore::Open(options, hooks, out);
}

Status LoadPayloadKeyFile(const std::string& path, keyfile::KeyList* keys) {
  return keyfile::Load(path, "payload key file", keyfile::Mode::kPrivate, keys);
}

rocksdb::DB* RocksDbOf(Store* store) {
  auto* rocks_store = dynamic_cast<rocks::RocksStore*>(store);
  return rocks_store == nullptr ? nullptr : rocks_store->db();
}

}  // namespace tw
