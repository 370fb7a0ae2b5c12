#include "storage/codec.h"

#include <limits>
#include <type_traits>

#include "engine/assert.h"

namespace tw::codec {
namespace {

constexpr uint8_t kFlagHasError = 0x01;
constexpr uint8_t kFlagHasCause = 0x02;
constexpr uint8_t kFlagsKnown = kFlagHasError | kFlagHasCause;
// LiveRecord::flags: the bits engine/store.h defines (kLiveFlagsUnknown is all of them).
constexpr uint8_t kLiveFlagsKnown = kLiveHasIdempotencyKey | kLiveHasCorrelation;

// The shortest value of each record, version byte included: every varint and length prefix one
// byte, every byte string empty; a value also holds its byte strings. Encoders assert (debug)
// that they appended at least this much, decoders that what they accepted was as long; unused
// under NDEBUG. In the order of the fields:
// version, creation_ms, name
[[maybe_unused]] constexpr size_t kActivityBytesMin = 3;
// version, activity_id, issued_ms, 3 timeouts, input, correlation, idempotency_key
[[maybe_unused]] constexpr size_t kTaskIssueBytesMin = 9;
// version, state, timeout_kind, started_ms, ended_ms, flags, worker, output, error, cause
[[maybe_unused]] constexpr size_t kTaskStateBytesMin = 10;
// version, state, activity_id, queue_seq, heartbeat_s, 3 deadlines, timeout_s (flags optional)
[[maybe_unused]] constexpr size_t kLiveBytesMin = 9;
// version, task id, activity_id, state, timeout_kind, time_ms, flags, 4 byte strings
[[maybe_unused]] constexpr size_t kEventBytesMin = 10 + kTaskIdBytes;
// version, task id: exact
[[maybe_unused]] constexpr size_t kIdempotencyValueBytes = 1 + kTaskIdBytes;
// version, idempotency key
[[maybe_unused]] constexpr size_t kRetiredValueBytesMin = 2;
// version, 3 counters
[[maybe_unused]] constexpr size_t kCountersBytesMin = 4;
[[maybe_unused]] constexpr size_t kCountersBytesMax = 1 + 3 * kVarint64BytesMax;
// version, value
[[maybe_unused]] constexpr size_t kU64ValueBytesMin = 2;
[[maybe_unused]] constexpr size_t kU64ValueBytesMax = 1 + kVarint64BytesMax;

// Decoders read these fields with Reader::Varint32: encoders must not be handed wider ones.
static_assert(std::is_same_v<decltype(TaskIssueRecord::timeout_s), uint32_t>);
static_assert(std::is_same_v<decltype(TaskIssueRecord::heartbeat_s), uint32_t>);
static_assert(std::is_same_v<decltype(TaskIssueRecord::schedule_to_start_s), uint32_t>);
static_assert(std::is_same_v<decltype(LiveRecord::heartbeat_s), uint32_t>);
static_assert(std::is_same_v<decltype(LiveRecord::timeout_s), uint32_t>);
static_assert(kFormatVersionValueBytes == sizeof(uint32_t));

// The bytes an encoder appended to dst since `start`. The helpers below serve the debug-only
// assertions: unused under NDEBUG.
[[maybe_unused]] std::string_view Appended(const std::string& dst, size_t start) {
  return std::string_view(dst).substr(start);
}

// What every value decoder checks first: the record version byte, then at least `min_bytes`.
[[maybe_unused]] bool IsVersioned(std::string_view v, size_t min_bytes) {
  TW_DEBUG_ASSERT(min_bytes >= 1);
  return v.size() >= min_bytes && static_cast<uint8_t>(v[0]) == kRecordVersion;
}

// ---- writing ----

void PutU8(uint8_t v, std::string* dst) { dst->push_back(static_cast<char>(v)); }

void PutVarint64(uint64_t v, std::string* dst) {
  char buf[kVarint64BytesMax];
  size_t n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  TW_DEBUG_ASSERT(n < kVarint64BytesMax);
  // Reader::Varint64 takes only bit 63 from a 10th byte.
  TW_DEBUG_ASSERT(n < kVarint64BytesMax - 1 || v <= 1);
  buf[n++] = static_cast<char>(v);
  dst->append(buf, n);
}

// Zigzag keeps small negative numbers short; times are never expected to be negative, but the
// types allow it and a decoder must not be able to disagree with the encoder.
uint64_t ZigZag(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
int64_t UnZigZag(uint64_t v) { return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1); }

void PutSigned(int64_t v, std::string* dst) { PutVarint64(ZigZag(v), dst); }

void PutBytes(std::string_view b, std::string* dst) {
  PutVarint64(b.size(), dst);
  dst->append(b.data(), b.size());
}

void PutFlags(bool has_error, bool has_cause, std::string* dst) {
  PutU8(static_cast<uint8_t>((has_error ? kFlagHasError : 0) | (has_cause ? kFlagHasCause : 0)),
        dst);
}

void PutBigEndian64(uint64_t v, char* dst) {
  for (int i = 7; i >= 0; --i) {
    dst[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
}

uint64_t GetBigEndian64(const char* src) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(src[i]);
  return v;
}

bool ValidTaskState(uint8_t s) {
  return s >= static_cast<uint8_t>(TaskState::kScheduled) &&
         s <= static_cast<uint8_t>(TaskState::kCancelled);
}
bool ValidTimeoutKind(uint8_t k) {
  return k <= static_cast<uint8_t>(TimeoutKind::kScheduleToStart);
}

// ---- reading: every method checks bounds and returns false on malformed input ----

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}

  bool U8(uint8_t* out) {
    if (pos_ >= in_.size()) return false;
    *out = static_cast<uint8_t>(in_[pos_++]);
    return true;
  }

  bool Varint64(uint64_t* out) {
    uint64_t v = 0;
    for (size_t i = 0; i < kVarint64BytesMax; ++i) {
      uint8_t b = 0;
      if (!U8(&b)) return false;
      // The 10th byte holds bit 63 only: anything more would overflow.
      if (i == kVarint64BytesMax - 1 && b > 1) return false;
      v |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
      if ((b & 0x80) == 0) {
        *out = v;
        return true;
      }
    }
    return false;
  }

  bool Varint32(uint32_t* out) {
    uint64_t v = 0;
    if (!Varint64(&v) || v > std::numeric_limits<uint32_t>::max()) return false;
    *out = static_cast<uint32_t>(v);
    return true;
  }

  bool Signed(int64_t* out) {
    uint64_t v = 0;
    if (!Varint64(&v)) return false;
    *out = UnZigZag(v);
    return true;
  }

  bool BytesView(std::string_view* out) {
    uint64_t n = 0;
    if (!Varint64(&n) || n > in_.size() - pos_) return false;
    *out = in_.substr(pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    TW_DEBUG_ASSERT(pos_ <= in_.size());
    return true;
  }

  bool Bytes(std::string* out) {
    std::string_view v;
    if (!BytesView(&v)) return false;
    out->assign(v.data(), v.size());
    return true;
  }

  bool Raw(size_t n, const char** out) {
    if (n > in_.size() - pos_) return false;
    *out = in_.data() + pos_;
    pos_ += n;
    TW_DEBUG_ASSERT(pos_ <= in_.size());
    return true;
  }

  bool Version() {
    uint8_t v = 0;
    return U8(&v) && v == kRecordVersion;
  }

  bool State(TaskState* out) {
    uint8_t s = 0;
    if (!U8(&s) || !ValidTaskState(s)) return false;
    *out = static_cast<TaskState>(s);
    return true;
  }

  bool Timeout(TimeoutKind* out) {
    uint8_t k = 0;
    if (!U8(&k) || !ValidTimeoutKind(k)) return false;
    *out = static_cast<TimeoutKind>(k);
    return true;
  }

  bool Flags(bool* has_error, bool* has_cause) {
    uint8_t f = 0;
    if (!U8(&f) || (f & ~kFlagsKnown) != 0) return false;
    *has_error = (f & kFlagHasError) != 0;
    *has_cause = (f & kFlagHasCause) != 0;
    return true;
  }

  bool Done() const { return pos_ == in_.size(); }

 private:
  std::string_view in_;
  size_t pos_ = 0;
};

Status Bad(const char* what) { return Status::Corruption(std::string("malformed ") + what); }

// The bytes of each record's byte strings (see kTaskIssueBytesMin and the like).
[[maybe_unused]] size_t IssueBytes(const TaskIssueRecord& t) {
  return t.input.size() + t.correlation.size() + t.idempotency_key.size();
}
[[maybe_unused]] size_t StateBytes(const TaskStateRecord& t) {
  return t.worker.size() + t.output.size() + t.error.size() + t.cause.size();
}
[[maybe_unused]] size_t EventBytes(const EventRecord& e) {
  return e.output.size() + e.error.size() + e.cause.size() + e.correlation.size();
}

// A live record up to its optional flags byte.
bool ReadLiveFields(Reader* r, LiveRecord* out) {
  return r->Version() && r->State(&out->state) && !IsTerminal(out->state) &&
         r->Varint64(&out->activity_id) && r->Varint64(&out->queue_seq) &&
         r->Varint32(&out->heartbeat_s) && r->Signed(&out->heartbeat_deadline_ms) &&
         r->Signed(&out->overall_deadline_ms) && r->Signed(&out->schedule_to_start_deadline_ms) &&
         r->Varint32(&out->timeout_s);
}

// The trailing flags byte is optional: records written before it existed end here, and
// recovery must then assume the issue record holds both (a read at the task's end).
bool ReadLiveFlags(Reader* r, uint8_t* flags) {
  if (r->Done()) {
    *flags = kLiveFlagsUnknown;
    return true;
  }
  return r->U8(flags) && (*flags & ~kLiveFlagsKnown) == 0 && r->Done();
}

}  // namespace

// ---- keys ----

void EncodeTaskId(const TaskId& id, char* dst) {
  PutBigEndian64(id.hi, dst);
  PutBigEndian64(id.lo, dst + 8);
}

TaskId DecodeTaskId(const char* src) {
  return TaskId{GetBigEndian64(src), GetBigEndian64(src + 8)};
}

void EncodeSeqKey(uint64_t seq, char* dst) { PutBigEndian64(seq, dst); }

uint64_t DecodeSeqKeyUnchecked(const char* src) { return GetBigEndian64(src); }

void EncodeTaskKey(const TaskId& id, TaskKeyKind kind, char* dst) {
  TW_DEBUG_ASSERT(static_cast<uint8_t>(kind) <= static_cast<uint8_t>(TaskKeyKind::kEnd));
  EncodeTaskId(id, dst);
  dst[kTaskIdBytes] = static_cast<char>(kind);
}

void EncodeRetiredPrefix(int64_t ended_ms, char* dst) {
  PutBigEndian64(static_cast<uint64_t>(ended_ms) ^ (uint64_t{1} << 63), dst);
}

void EncodeRetiredKey(int64_t ended_ms, const TaskId& id, char* dst) {
  EncodeRetiredPrefix(ended_ms, dst);
  EncodeTaskId(id, dst + 8);
}

void AppendConsumerKey(std::string_view name, std::string* dst) {
  dst->append(kMetaConsumerPrefix.data(), kMetaConsumerPrefix.size());
  dst->append(name.data(), name.size());
}

Status DecodeTaskIdKey(std::string_view key, TaskId* id) {
  if (key.size() != kTaskIdBytes) return Bad("task id key");
  *id = DecodeTaskId(key.data());
  return Status::Ok();
}

Status DecodeSeqKey(std::string_view key, uint64_t* seq) {
  if (key.size() != kSeqKeyBytes) return Bad("sequence key");
  *seq = GetBigEndian64(key.data());
  return Status::Ok();
}

Status DecodeRetiredKey(std::string_view key, int64_t* ended_ms, TaskId* id) {
  if (key.size() != kRetiredKeyBytes) return Bad("retired key");
  *ended_ms = static_cast<int64_t>(GetBigEndian64(key.data()) ^ (uint64_t{1} << 63));
  *id = DecodeTaskId(key.data() + 8);
  return Status::Ok();
}

// ---- values ----

void EncodeActivity(const ActivityRecord& a, std::string* dst) {
  [[maybe_unused]] const size_t start = dst->size();
  PutU8(kRecordVersion, dst);
  PutSigned(a.creation_ms, dst);
  PutBytes(a.name, dst);
  TW_DEBUG_ASSERT(IsVersioned(Appended(*dst, start), kActivityBytesMin + a.name.size()));
}

Status DecodeActivity(std::string_view v, ActivityRecord* out) {
  Reader r(v);
  if (!r.Version() || !r.Signed(&out->creation_ms) || !r.Bytes(&out->name) || !r.Done()) {
    return Bad("activity record");
  }
  TW_DEBUG_ASSERT(IsVersioned(v, kActivityBytesMin + out->name.size()));
  return Status::Ok();
}

void EncodeTaskIssue(const TaskIssueRecord& t, std::string* dst) {
  [[maybe_unused]] const size_t start = dst->size();
  PutU8(kRecordVersion, dst);
  PutVarint64(t.activity_id, dst);
  PutSigned(t.issued_ms, dst);
  PutVarint64(t.timeout_s, dst);
  PutVarint64(t.heartbeat_s, dst);
  PutVarint64(t.schedule_to_start_s, dst);
  PutBytes(t.input, dst);
  PutBytes(t.correlation, dst);
  PutBytes(t.idempotency_key, dst);
  TW_DEBUG_ASSERT(IsVersioned(Appended(*dst, start), kTaskIssueBytesMin + IssueBytes(t)));
}

Status DecodeTaskIssue(std::string_view v, TaskIssueRecord* out) {
  Reader r(v);
  if (!r.Version() || !r.Varint64(&out->activity_id) || !r.Signed(&out->issued_ms) ||
      !r.Varint32(&out->timeout_s) || !r.Varint32(&out->heartbeat_s) ||
      !r.Varint32(&out->schedule_to_start_s) || !r.Bytes(&out->input) ||
      !r.Bytes(&out->correlation) || !r.Bytes(&out->idempotency_key) || !r.Done()) {
    return Bad("task issue record");
  }
  TW_DEBUG_ASSERT(IsVersioned(v, kTaskIssueBytesMin + IssueBytes(*out)));
  return Status::Ok();
}

void EncodeTaskState(const TaskStateRecord& t, std::string* dst) {
  TW_ASSERT(ValidTaskState(static_cast<uint8_t>(t.state)));
  TW_ASSERT(ValidTimeoutKind(static_cast<uint8_t>(t.timeout_kind)));
  [[maybe_unused]] const size_t start = dst->size();
  PutU8(kRecordVersion, dst);
  PutU8(static_cast<uint8_t>(t.state), dst);
  PutU8(static_cast<uint8_t>(t.timeout_kind), dst);
  PutSigned(t.started_ms, dst);
  PutSigned(t.ended_ms, dst);
  PutFlags(t.has_error, t.has_cause, dst);
  PutBytes(t.worker, dst);
  PutBytes(t.output, dst);
  PutBytes(t.error, dst);
  PutBytes(t.cause, dst);
  TW_DEBUG_ASSERT(IsVersioned(Appended(*dst, start), kTaskStateBytesMin + StateBytes(t)));
}

Status DecodeTaskState(std::string_view v, TaskStateRecord* out) {
  Reader r(v);
  if (!r.Version() || !r.State(&out->state) || !r.Timeout(&out->timeout_kind) ||
      !r.Signed(&out->started_ms) || !r.Signed(&out->ended_ms) ||
      !r.Flags(&out->has_error, &out->has_cause) || !r.Bytes(&out->worker) ||
      !r.Bytes(&out->output) || !r.Bytes(&out->error) || !r.Bytes(&out->cause) || !r.Done()) {
    return Bad("task state record");
  }
  TW_DEBUG_ASSERT(IsVersioned(v, kTaskStateBytesMin + StateBytes(*out)));
  TW_DEBUG_ASSERT(ValidTaskState(static_cast<uint8_t>(out->state)));
  return Status::Ok();
}

void EncodeLive(const LiveRecord& l, std::string* dst) {
  TW_ASSERT(l.state == TaskState::kScheduled || l.state == TaskState::kStarted);
  TW_ASSERT((l.flags & ~kLiveFlagsKnown) == 0);
  [[maybe_unused]] const size_t start = dst->size();
  PutU8(kRecordVersion, dst);
  PutU8(static_cast<uint8_t>(l.state), dst);
  PutVarint64(l.activity_id, dst);
  PutVarint64(l.queue_seq, dst);
  PutVarint64(l.heartbeat_s, dst);
  PutSigned(l.heartbeat_deadline_ms, dst);
  PutSigned(l.overall_deadline_ms, dst);
  PutSigned(l.schedule_to_start_deadline_ms, dst);
  PutVarint64(l.timeout_s, dst);
  PutU8(l.flags, dst);
  TW_DEBUG_ASSERT(IsVersioned(Appended(*dst, start), kLiveBytesMin + 1));
}

Status DecodeLive(std::string_view v, LiveRecord* out) {
  Reader r(v);
  if (!ReadLiveFields(&r, out) || !ReadLiveFlags(&r, &out->flags)) return Bad("live record");
  TW_DEBUG_ASSERT(IsVersioned(v, kLiveBytesMin));
  TW_DEBUG_ASSERT(!IsTerminal(out->state));
  TW_DEBUG_ASSERT((out->flags & ~kLiveFlagsKnown) == 0);
  return Status::Ok();
}

void EncodeEvent(const EventRecord& e, std::string* dst) {
  TW_ASSERT(ValidTaskState(static_cast<uint8_t>(e.state)));
  TW_ASSERT(IsTerminal(e.state));
  TW_ASSERT(ValidTimeoutKind(static_cast<uint8_t>(e.timeout_kind)));
  [[maybe_unused]] const size_t start = dst->size();
  PutU8(kRecordVersion, dst);
  char id[kTaskIdBytes];
  EncodeTaskId(e.task_id, id);
  dst->append(id, sizeof(id));
  PutVarint64(e.activity_id, dst);
  PutU8(static_cast<uint8_t>(e.state), dst);
  PutU8(static_cast<uint8_t>(e.timeout_kind), dst);
  PutSigned(e.time_ms, dst);
  PutFlags(e.has_error, e.has_cause, dst);
  PutBytes(e.output, dst);
  PutBytes(e.error, dst);
  PutBytes(e.cause, dst);
  PutBytes(e.correlation, dst);
  TW_DEBUG_ASSERT(IsVersioned(Appended(*dst, start), kEventBytesMin + EventBytes(e)));
}

Status DecodeEvent(std::string_view v, EventRecord* out) {
  Reader r(v);
  const char* id = nullptr;
  if (!r.Version() || !r.Raw(kTaskIdBytes, &id)) return Bad("event record");
  out->task_id = DecodeTaskId(id);
  if (!r.Varint64(&out->activity_id) || !r.State(&out->state) || !IsTerminal(out->state) ||
      !r.Timeout(&out->timeout_kind) || !r.Signed(&out->time_ms) ||
      !r.Flags(&out->has_error, &out->has_cause) || !r.Bytes(&out->output) ||
      !r.Bytes(&out->error) || !r.Bytes(&out->cause) || !r.Bytes(&out->correlation) || !r.Done()) {
    return Bad("event record");
  }
  TW_DEBUG_ASSERT(IsVersioned(v, kEventBytesMin + EventBytes(*out)));
  TW_DEBUG_ASSERT(IsTerminal(out->state));
  return Status::Ok();
}

void EncodeIdempotencyValue(const TaskId& id, std::string* dst) {
  [[maybe_unused]] const size_t start = dst->size();
  PutU8(kRecordVersion, dst);
  char buf[kTaskIdBytes];
  EncodeTaskId(id, buf);
  dst->append(buf, sizeof(buf));
  TW_DEBUG_ASSERT(IsVersioned(Appended(*dst, start), kIdempotencyValueBytes));
  TW_DEBUG_ASSERT(Appended(*dst, start).size() == kIdempotencyValueBytes);
}

Status DecodeIdempotencyValue(std::string_view v, TaskId* out) {
  Reader r(v);
  const char* id = nullptr;
  if (!r.Version() || !r.Raw(kTaskIdBytes, &id) || !r.Done()) return Bad("idempotency value");
  *out = DecodeTaskId(id);
  TW_DEBUG_ASSERT(IsVersioned(v, kIdempotencyValueBytes));
  TW_DEBUG_ASSERT(v.size() == kIdempotencyValueBytes);
  return Status::Ok();
}

void EncodeRetiredValue(std::string_view idempotency_key, std::string* dst) {
  [[maybe_unused]] const size_t start = dst->size();
  PutU8(kRecordVersion, dst);
  PutBytes(idempotency_key, dst);
  TW_DEBUG_ASSERT(
      IsVersioned(Appended(*dst, start), kRetiredValueBytesMin + idempotency_key.size()));
  TW_DEBUG_ASSERT(Appended(*dst, start).ends_with(idempotency_key));
}

Status DecodeRetiredValue(std::string_view v, std::string_view* key) {
  Reader r(v);
  if (!r.Version() || !r.BytesView(key) || !r.Done()) return Bad("retired value");
  TW_DEBUG_ASSERT(IsVersioned(v, kRetiredValueBytesMin + key->size()));
  TW_DEBUG_ASSERT(key->data() + key->size() == v.data() + v.size());  // *key is v's tail
  return Status::Ok();
}

void EncodeCounters(const Counters& c, std::string* dst) {
  [[maybe_unused]] const size_t start = dst->size();
  PutU8(kRecordVersion, dst);
  PutVarint64(c.next_event_seq, dst);
  PutVarint64(c.next_activity_id, dst);
  PutVarint64(c.next_queue_seq, dst);
  TW_DEBUG_ASSERT(IsVersioned(Appended(*dst, start), kCountersBytesMin));
  TW_DEBUG_ASSERT(Appended(*dst, start).size() <= kCountersBytesMax);
}

Status DecodeCounters(std::string_view v, Counters* out) {
  Reader r(v);
  if (!r.Version() || !r.Varint64(&out->next_event_seq) || !r.Varint64(&out->next_activity_id) ||
      !r.Varint64(&out->next_queue_seq) || !r.Done()) {
    return Bad("counters");
  }
  TW_DEBUG_ASSERT(IsVersioned(v, kCountersBytesMin));
  TW_DEBUG_ASSERT(v.size() <= kCountersBytesMax);
  return Status::Ok();
}

void EncodeU64Value(uint64_t value, std::string* dst) {
  [[maybe_unused]] const size_t start = dst->size();
  PutU8(kRecordVersion, dst);
  PutVarint64(value, dst);
  TW_DEBUG_ASSERT(IsVersioned(Appended(*dst, start), kU64ValueBytesMin));
  TW_DEBUG_ASSERT(Appended(*dst, start).size() <= kU64ValueBytesMax);
}

Status DecodeU64Value(std::string_view v, uint64_t* out) {
  Reader r(v);
  if (!r.Version() || !r.Varint64(out) || !r.Done()) return Bad("u64 value");
  TW_DEBUG_ASSERT(IsVersioned(v, kU64ValueBytesMin));
  TW_DEBUG_ASSERT(v.size() <= kU64ValueBytesMax);
  return Status::Ok();
}

void EncodeFormatVersion(uint32_t version, std::string* dst) {
  [[maybe_unused]] const size_t start = dst->size();
  for (int i = 0; i < 4; ++i) PutU8(static_cast<uint8_t>(version >> (8 * i)), dst);
  TW_DEBUG_ASSERT(Appended(*dst, start).size() == kFormatVersionValueBytes);
  // Little-endian: the low byte first, as the decoder reads it.
  TW_DEBUG_ASSERT(static_cast<uint8_t>((*dst)[start]) == static_cast<uint8_t>(version));
}

Status DecodeFormatVersion(std::string_view v, uint32_t* out) {
  if (v.size() != kFormatVersionValueBytes) return Bad("format version");
  uint32_t version = 0;
  for (int i = 3; i >= 0; --i) version = (version << 8) | static_cast<uint8_t>(v[i]);
  TW_DEBUG_ASSERT(static_cast<uint8_t>(v[0]) == static_cast<uint8_t>(version));  // as encoded
  *out = version;
  return Status::Ok();
}

}  // namespace tw::codec
