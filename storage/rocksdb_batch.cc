#include "storage/rocksdb_batch.h"

#include <algorithm>

#include "engine/assert.h"
#include "engine/limits.h"

namespace tw::rocks {
namespace {

// A group commit carries hundreds of mutations; start big enough that the batch rarely grows.
constexpr size_t kBatchReserveBytes = 64 << 10;

}  // namespace

RocksWriteBatch::RocksWriteBatch(const Store* owner, const CfHandles& cfs,
                                 const EventTrimState* trim, const PayloadCipher* cipher)
    : owner_(owner), cfs_(cfs), trim_(trim), cipher_(cipher), rep_(kBatchReserveBytes) {}

void RocksWriteBatch::PutActivity(const ActivityRecord& a) {
  char key[codec::kSeqKeyBytes];
  codec::EncodeSeqKey(a.id, key);
  codec::EncodeActivity(a, ResetValue());
  Put(kActivities, key, sizeof(key));
}

void RocksWriteBatch::DeleteActivity(uint64_t activity_id) {
  char key[codec::kSeqKeyBytes];
  codec::EncodeSeqKey(activity_id, key);
  Delete(kActivities, rocksdb::Slice(key, sizeof(key)));
  ++count_;
}

void RocksWriteBatch::PutTaskIssue(const TaskId& id, const TaskIssueRecord& r) {
  codec::EncodeTaskIssue(r, ResetValue());
  PutTaskRecord(id, codec::TaskKeyKind::kIssue);
}

void RocksWriteBatch::PutTaskState(const TaskId& id, const TaskStateRecord& r) {
  codec::EncodeTaskState(r, ResetValue());
  PutTaskRecord(id, codec::TaskKeyKind::kState);
}

void RocksWriteBatch::PutTaskEnd(const TaskId& id, const TaskStateRecord& r) {
  TW_DEBUG_ASSERT(IsTerminal(r.state));
  codec::EncodeTaskState(r, ResetValue());
  PutTaskRecord(id, codec::TaskKeyKind::kEnd);
}

void RocksWriteBatch::PutLive(const TaskId& id, const LiveRecord& r) {
  char key[codec::kTaskIdBytes];
  codec::EncodeTaskId(id, key);
  codec::EncodeLive(r, ResetValue());
  Put(kLive, key, sizeof(key));
}

void RocksWriteBatch::DeleteLive(const TaskId& id) {
  char key[codec::kTaskIdBytes];
  codec::EncodeTaskId(id, key);
  Delete(kLive, rocksdb::Slice(key, sizeof(key)));
  ++count_;
}

void RocksWriteBatch::PutIdempotencyKey(std::string_view key, const TaskId& id) {
  TW_ASSERT(!key.empty());
  TW_ASSERT(key.size() <= limits::kIdempotencyKeyBytesMax);
  codec::EncodeIdempotencyValue(id, ResetValue());
  Put(kIdem, key.data(), key.size());
}

void RocksWriteBatch::AppendEvent(const EventRecord& e) {
  TW_ASSERT(e.seq >= 1);
  char key[codec::kSeqKeyBytes];
  codec::EncodeSeqKey(e.seq, key);
  codec::EncodeEvent(e, ResetValue());
  PutSealed(kEvents, SealAd::kEvents, key, sizeof(key));
}

void RocksWriteBatch::PutRetired(int64_t ended_ms, const TaskId& id,
                                 std::string_view idempotency_key) {
  char key[codec::kRetiredKeyBytes];
  codec::EncodeRetiredKey(ended_ms, id, key);
  codec::EncodeRetiredValue(idempotency_key, ResetValue());
  Put(kRetired, key, sizeof(key));
  min_retired_ms_ = std::min(min_retired_ms_, ended_ms);
}

// Point deletes of exactly this task's keys: retention never scans `tasks`. Plain Delete, not
// SingleDelete: SingleDelete is undefined if a key was ever put twice, and a resurrected
// record would be a silent bug; the deletion-triggered compaction removes the tombstones.
void RocksWriteBatch::DeleteTask(int64_t ended_ms, const TaskId& id,
                                 std::string_view idempotency_key) {
  char key[codec::kRetiredKeyBytes];
  for (auto kind :
       {codec::TaskKeyKind::kIssue, codec::TaskKeyKind::kState, codec::TaskKeyKind::kEnd}) {
    codec::EncodeTaskKey(id, kind, key);
    Delete(kTasks, rocksdb::Slice(key, codec::kTaskKeyBytes));
  }
  if (!idempotency_key.empty()) {
    Delete(kIdem, rocksdb::Slice(idempotency_key.data(), idempotency_key.size()));
  }
  codec::EncodeRetiredKey(ended_ms, id, key);
  Delete(kRetired, rocksdb::Slice(key, codec::kRetiredKeyBytes));
  ++count_;
}

void RocksWriteBatch::PutConsumer(std::string_view name, uint64_t acked_seq) {
  ConsumerKey(name);
  codec::EncodeU64Value(acked_seq, ResetValue());
  Put(kMeta, key_.data(), key_.size());
}

void RocksWriteBatch::DeleteConsumer(std::string_view name) {
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
void RocksWriteBatch::TrimEventsBelow(uint64_t seq) {
  TW_ASSERT(seq >= 1);
  TW_ASSERT(seq >= trim_first_event_seq_);
  const uint64_t from = std::max(trim_->deleted_below, trim_deleted_below_);
  if (seq >= from + limits::kEventsPerRangeDeleteMin) DeleteEventRange(from, seq);
  trim_first_event_seq_ = seq;
  codec::EncodeU64Value(seq, ResetValue());
  Put(kMeta, codec::kMetaFirstEventSeq.data(), codec::kMetaFirstEventSeq.size());
}

void RocksWriteBatch::PutCounters(uint64_t next_event_seq, uint64_t next_activity_id,
                                  uint64_t next_queue_seq) {
  codec::EncodeCounters({next_event_seq, next_activity_id, next_queue_seq}, ResetValue());
  Put(kMeta, codec::kMetaCounters.data(), codec::kMetaCounters.size());
}

void RocksWriteBatch::Clear() {
  rep_.Clear();  // keeps the buffer's capacity: the next group commit reuses it
  count_ = 0;
  min_retired_ms_ = std::numeric_limits<int64_t>::max();
  trim_first_event_seq_ = 0;
  trim_deleted_below_ = 0;
}

std::string* RocksWriteBatch::ResetValue() {
  value_.clear();  // keeps capacity
  return &value_;
}

void RocksWriteBatch::ConsumerKey(std::string_view name) {
  TW_ASSERT(!name.empty());
  TW_ASSERT(name.size() <= limits::kConsumerNameBytesMax);
  key_.clear();
  codec::AppendConsumerKey(name, &key_);
}

// Puts value_ under the task key of (id, kind).
void RocksWriteBatch::PutTaskRecord(const TaskId& id, codec::TaskKeyKind kind) {
  char key[codec::kTaskKeyBytes];
  codec::EncodeTaskKey(id, kind, key);
  PutSealed(kTasks, SealAd::kTasks, key, sizeof(key));
}

// One range tombstone over the events [from, to); a part of a Trim, not counted on its own.
void RocksWriteBatch::DeleteEventRange(uint64_t from, uint64_t to) {
  char begin[codec::kSeqKeyBytes];
  char end[codec::kSeqKeyBytes];
  codec::EncodeSeqKey(from, begin);
  codec::EncodeSeqKey(to, end);
  auto s = rep_.DeleteRange(cfs_[kEvents], rocksdb::Slice(begin, sizeof(begin)),
                            rocksdb::Slice(end, sizeof(end)));
  TW_ASSERT(s.ok());
  trim_deleted_below_ = to;
}

// Puts value_ under key. rocksdb::WriteBatch::Put fails only past its size limit, which is
// unset here (and 4 GiB otherwise): a failure is a bug.
void RocksWriteBatch::Put(Cf cf, const char* key, size_t key_bytes) {
  auto s = rep_.Put(cfs_[cf], rocksdb::Slice(key, key_bytes), value_);
  TW_ASSERT(s.ok());
  ++count_;
}

// Put, with value_ sealed first when the store encrypts payloads.
void RocksWriteBatch::PutSealed(Cf cf, char ad_tag, const char* key, size_t key_bytes) {
  if (cipher_ == nullptr) return Put(cf, key, key_bytes);
  sealed_.clear();  // keeps capacity
  cipher_->Seal(SealAd(ad_tag, std::string_view(key, key_bytes)).view(), value_, &sealed_);
  TW_DEBUG_ASSERT(sealed_.size() == value_.size() + PayloadCipher::kOverheadBytes);
  auto s = rep_.Put(cfs_[cf], rocksdb::Slice(key, key_bytes), sealed_);
  TW_ASSERT(s.ok());
  ++count_;
}

void RocksWriteBatch::Delete(Cf cf, const rocksdb::Slice& key) {
  auto s = rep_.Delete(cfs_[cf], key);
  TW_ASSERT(s.ok());
}

}  // namespace tw::rocks
