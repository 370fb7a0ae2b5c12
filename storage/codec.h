// Key and value encodings of the RocksDB store (docs/FORMAT.md is the byte-by-byte spec; keep
// the two in step). Private to storage/.
//
// Keys are big-endian so that RocksDB's bytewise order is the numeric order. Values start with
// a one-byte record version, then varints / zigzag varints / length-prefixed bytes.
//
// Encoders append to a caller-owned buffer so that one buffer serves a whole group commit
// (no allocation per mutation once it has grown). Encoders assert (release) the invariants the
// decoders check, so that a bad record is refused at write time by the engine's own process
// instead of being found as "corruption" at the next recovery. In pairs, debug builds also
// assert the shape of what an encoder appended (version byte, lengths, field sizes) and of what
// a decoder accepted.
//
// Decoders are total: any input, including truncated or random bytes, yields either the record
// or Status::Corruption, never a crash or a read out of bounds. A value must be consumed
// exactly; trailing bytes are corruption too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "engine/status.h"
#include "engine/store.h"
#include "engine/types.h"

namespace tw::codec {

// The version byte every value (except the format version itself) starts with. A change to a
// value layout adds a new record version; a decoder refuses versions it does not know.
inline constexpr uint8_t kRecordVersion = 1;

inline constexpr size_t kTaskIdBytes = 16;
inline constexpr size_t kSeqKeyBytes = 8;                     // events, activities
inline constexpr size_t kTaskKeyBytes = kTaskIdBytes + 1;     // tasks
inline constexpr size_t kRetiredKeyBytes = 8 + kTaskIdBytes;  // retired
inline constexpr size_t kVarint64BytesMax = 10;               // LEB128 of 2^64 - 1
inline constexpr size_t kFormatVersionValueBytes = 4;         // fixed32, little-endian

// The `tasks` column family holds two records per task, told apart by the key's last byte.
enum class TaskKeyKind : uint8_t { kIssue = 0x00, kState = 0x01, kEnd = 0x02 };

// ---- meta column family keys ----
inline constexpr std::string_view kMetaFormatVersion = "format_version";
inline constexpr std::string_view kMetaCounters = "counters";
inline constexpr std::string_view kMetaFirstEventSeq = "first_event_seq";
inline constexpr std::string_view kMetaConsumerPrefix = "consumer/";
// The first key after every "consumer/..." key: '/' + 1 == '0'. Upper bound of the scan.
inline constexpr std::string_view kMetaConsumerEnd = "consumer0";

// ---- keys (fixed-size ones are written into caller buffers: no allocation) ----

void EncodeTaskId(const TaskId& id, char* dst);  // kTaskIdBytes: hi BE, lo BE
TaskId DecodeTaskId(const char* src);            // REQUIRES: kTaskIdBytes readable
void EncodeSeqKey(uint64_t seq, char* dst);      // kSeqKeyBytes, BE
uint64_t DecodeSeqKeyUnchecked(const char* src);
void EncodeTaskKey(const TaskId& id, TaskKeyKind kind, char* dst);  // kTaskKeyBytes
// ended_ms is stored with its sign bit flipped so that negative times (never expected, but
// representable) still sort before positive ones.
void EncodeRetiredPrefix(int64_t ended_ms, char* dst);  // 8 bytes: the ScanRetired bound
void EncodeRetiredKey(int64_t ended_ms, const TaskId& id, char* dst);  // kRetiredKeyBytes
void AppendConsumerKey(std::string_view name, std::string* dst);

Status DecodeTaskIdKey(std::string_view key, TaskId* id);  // `live` keys
Status DecodeSeqKey(std::string_view key, uint64_t* seq);  // `events`, `activities` keys
Status DecodeRetiredKey(std::string_view key, int64_t* ended_ms, TaskId* id);

// ---- values: Encode* appends to dst; Decode* overwrites every field it owns (on error, *out
// is left partly written) ----

// ActivityRecord without its id (the key holds it). Decode leaves out->id alone.
void EncodeActivity(const ActivityRecord& a, std::string* dst);
Status DecodeActivity(std::string_view v, ActivityRecord* out);

void EncodeTaskIssue(const TaskIssueRecord& r, std::string* dst);
Status DecodeTaskIssue(std::string_view v, TaskIssueRecord* out);

void EncodeTaskState(const TaskStateRecord& r, std::string* dst);
Status DecodeTaskState(std::string_view v, TaskStateRecord* out);

// REQUIRES: r.state is kScheduled or kStarted (a live task is not terminal), and r.flags has
// only kLiveHas* bits. The flags byte is the record's last field and optional on read: a record
// written before it existed (one byte shorter) decodes with flags = kLiveFlagsUnknown.
void EncodeLive(const LiveRecord& r, std::string* dst);
Status DecodeLive(std::string_view v, LiveRecord* out);

// EventRecord without its seq (the key holds it). Decode leaves out->seq alone.
// REQUIRES: IsTerminal(e.state).
void EncodeEvent(const EventRecord& e, std::string* dst);
Status DecodeEvent(std::string_view v, EventRecord* out);

void EncodeIdempotencyValue(const TaskId& id, std::string* dst);  // `idem` values
Status DecodeIdempotencyValue(std::string_view v, TaskId* out);

void EncodeRetiredValue(std::string_view idempotency_key, std::string* dst);
// *key points into v: valid as long as v is.
Status DecodeRetiredValue(std::string_view v, std::string_view* key);

// meta "counters".
struct Counters {
  uint64_t next_event_seq = 1;
  uint64_t next_activity_id = 1;
  uint64_t next_queue_seq = 1;
};
void EncodeCounters(const Counters& c, std::string* dst);
Status DecodeCounters(std::string_view v, Counters* out);

// meta "first_event_seq" and "consumer/<name>": one versioned u64.
void EncodeU64Value(uint64_t value, std::string* dst);
Status DecodeU64Value(std::string_view v, uint64_t* out);

// meta "format_version": fixed32 little-endian, no record version (it *is* the version).
void EncodeFormatVersion(uint32_t version, std::string* dst);
Status DecodeFormatVersion(std::string_view v, uint32_t* out);

}  // namespace tw::codec
