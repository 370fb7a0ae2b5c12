// RocksWriteBatch: the engine's records (engine/store.h) as one rocksdb::WriteBatch, encoded by
// storage/codec.h under the keys of docs/FORMAT.md. Private to storage/.
#pragma once

#include <rocksdb/write_batch.h>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "engine/store.h"
#include "storage/codec.h"
#include "storage/payload_cipher.h"
#include "storage/rocksdb_options.h"

namespace tw::rocks {

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
  // owner: the store whose Write takes this batch (compared, never used). cfs: its column
  // families. trim: its EventTrimState, read by TrimEventsBelow. cipher: its PayloadCipher, or
  // nullptr when payloads are stored plain; when set, every `tasks` and `events` value is
  // sealed under its key (SealAd). trim and cipher outlive the batch.
  RocksWriteBatch(const Store* owner, const CfHandles& cfs, const EventTrimState* trim,
                  const PayloadCipher* cipher);

  const Store* owner() const { return owner_; }
  rocksdb::WriteBatch* rep() { return &rep_; }
  // The oldest ended_ms put into `retired` by this batch; INT64_MAX when none.
  int64_t min_retired_ms() const { return min_retired_ms_; }
  // What this batch trims: the new first event seq (0 = no trim) and the end of its range
  // tombstone (0 = none).
  uint64_t trim_first_event_seq() const { return trim_first_event_seq_; }
  uint64_t trim_deleted_below() const { return trim_deleted_below_; }

  void PutActivity(const ActivityRecord& a) override;
  void DeleteActivity(uint64_t activity_id) override;
  void PutTaskIssue(const TaskId& id, const TaskIssueRecord& r) override;
  void PutTaskState(const TaskId& id, const TaskStateRecord& r) override;
  void PutTaskEnd(const TaskId& id, const TaskStateRecord& r) override;
  void PutLive(const TaskId& id, const LiveRecord& r) override;
  void DeleteLive(const TaskId& id) override;
  void PutIdempotencyKey(std::string_view key, const TaskId& id) override;
  void AppendEvent(const EventRecord& e) override;
  void PutRetired(int64_t ended_ms, const TaskId& id, std::string_view idempotency_key) override;
  void DeleteTask(int64_t ended_ms, const TaskId& id, std::string_view idempotency_key) override;
  void PutConsumer(std::string_view name, uint64_t acked_seq) override;
  void DeleteConsumer(std::string_view name) override;
  void TrimEventsBelow(uint64_t seq) override;
  void PutCounters(uint64_t next_event_seq, uint64_t next_activity_id,
                   uint64_t next_queue_seq) override;
  size_t Count() const override { return count_; }
  size_t ByteSize() const override { return rep_.GetDataSize(); }
  void Clear() override;

 private:
  std::string* ResetValue();
  void ConsumerKey(std::string_view name);
  void PutTaskRecord(const TaskId& id, codec::TaskKeyKind kind);
  void DeleteEventRange(uint64_t from, uint64_t to);
  void Put(Cf cf, const char* key, size_t key_bytes);
  void PutSealed(Cf cf, char ad_tag, const char* key, size_t key_bytes);
  void Delete(Cf cf, const rocksdb::Slice& key);

  const Store* owner_;
  CfHandles cfs_;
  const EventTrimState* trim_;   // the owner's
  const PayloadCipher* cipher_;  // the owner's; nullptr = plain
  rocksdb::WriteBatch rep_;
  std::string key_;     // reused: consumer keys
  std::string value_;   // reused: every encoded value
  std::string sealed_;  // reused: value_ sealed (cipher_ only)
  size_t count_ = 0;
  int64_t min_retired_ms_ = std::numeric_limits<int64_t>::max();
  uint64_t trim_first_event_seq_ = 0;
  uint64_t trim_deleted_below_ = 0;
};

}  // namespace tw::rocks
