// storage/codec: round trips, key order, and that every malformed value is Corruption (never a
// crash: the ASan build runs these over every prefix and every single-byte mutation).
#include "storage/codec.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "tests/storage/store_test_util.h"

namespace tw::codec {
namespace {

using testing_util::Event;
using testing_util::Id;
using testing_util::Issue;
using testing_util::Live;
using testing_util::Payload;
using testing_util::State;

constexpr int64_t kI64Min = std::numeric_limits<int64_t>::min();
constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();
constexpr uint32_t kU32Max = std::numeric_limits<uint32_t>::max();

// Every value kind as (name, encoded bytes, decoder-returns-status). The decoders write into a
// scratch record: only the Status matters for the corruption checks.
struct Kind {
  std::string name;
  std::string encoded;
  std::function<Status(std::string_view)> decode;
};

std::vector<Kind> AllKinds() {
  std::vector<Kind> kinds;
  auto add = [&](std::string name, std::string encoded, std::function<Status(std::string_view)> d) {
    kinds.push_back({std::move(name), std::move(encoded), std::move(d)});
  };
  std::string v;
  EncodeActivity({5, "an-activity", -3}, &v);
  add("activity", v, [](std::string_view in) {
    ActivityRecord r;
    return DecodeActivity(in, &r);
  });
  v.clear();
  EncodeTaskIssue(Issue(2), &v);
  add("issue", v, [](std::string_view in) {
    TaskIssueRecord r;
    return DecodeTaskIssue(in, &r);
  });
  v.clear();
  EncodeTaskState(State(4, TaskState::kFailed), &v);
  add("state", v, [](std::string_view in) {
    TaskStateRecord r;
    return DecodeTaskState(in, &r);
  });
  v.clear();
  EncodeLive(Live(3), &v);
  add("live", v, [](std::string_view in) {
    LiveRecord r;
    return DecodeLive(in, &r);
  });
  v.clear();
  EncodeEvent(Event(6), &v);
  add("event", v, [](std::string_view in) {
    EventRecord r;
    return DecodeEvent(in, &r);
  });
  v.clear();
  EncodeIdempotencyValue(Id(9), &v);
  add("idempotency", v, [](std::string_view in) {
    TaskId id;
    return DecodeIdempotencyValue(in, &id);
  });
  v.clear();
  EncodeRetiredValue("key", &v);
  add("retired", v, [](std::string_view in) {
    std::string_view key;
    return DecodeRetiredValue(in, &key);
  });
  v.clear();
  EncodeCounters({7, 8, 9}, &v);
  add("counters", v, [](std::string_view in) {
    Counters c;
    return DecodeCounters(in, &c);
  });
  v.clear();
  EncodeU64Value(300, &v);
  add("u64", v, [](std::string_view in) {
    uint64_t x = 0;
    return DecodeU64Value(in, &x);
  });
  v.clear();
  EncodeFormatVersion(kFormatVersion, &v);
  add("format_version", v, [](std::string_view in) {
    uint32_t x = 0;
    return DecodeFormatVersion(in, &x);
  });
  return kinds;
}

bool IsCorruption(const Status& s) { return s.code() == Status::Code::kCorruption; }

TEST(CodecTest, ActivityRoundTrip) {
  for (const ActivityRecord& a : {ActivityRecord{1, "", 0}, ActivityRecord{kU64Max, "x", kI64Min},
                                  ActivityRecord{2, std::string(80, 'n'), kI64Max}}) {
    std::string v;
    EncodeActivity(a, &v);
    ActivityRecord out;
    out.id = a.id;  // the key's part
    ASSERT_TRUE(DecodeActivity(v, &out).ok());
    EXPECT_EQ(out, a);
  }
}

TEST(CodecTest, TaskIssueRoundTripIncludingExtremes) {
  TaskIssueRecord extreme;
  extreme.activity_id = kU64Max;
  extreme.issued_ms = kI64Min;
  extreme.timeout_s = kU32Max;
  extreme.heartbeat_s = kU32Max;
  extreme.schedule_to_start_s = 0;
  extreme.input = Payload(1, 262'144);
  extreme.correlation = std::string("\0\0\xff", 3);
  extreme.idempotency_key = std::string(256, 'k');
  for (const TaskIssueRecord& r : {TaskIssueRecord(), Issue(1), Issue(2, 0), extreme}) {
    std::string v;
    EncodeTaskIssue(r, &v);
    TaskIssueRecord out;
    ASSERT_TRUE(DecodeTaskIssue(v, &out).ok());
    EXPECT_EQ(out, r);
  }
}

TEST(CodecTest, TaskStateRoundTripEveryStateAndTimeoutKind) {
  for (uint8_t s = 1; s <= 6; ++s) {
    for (uint8_t k = 0; k <= 3; ++k) {
      TaskStateRecord r = State(s * 10 + k, static_cast<TaskState>(s));
      r.timeout_kind = static_cast<TimeoutKind>(k);
      r.has_error = (k & 1) != 0;
      r.has_cause = (k & 2) != 0;
      r.started_ms = -static_cast<int64_t>(k);
      std::string v;
      EncodeTaskState(r, &v);
      TaskStateRecord out;
      ASSERT_TRUE(DecodeTaskState(v, &out).ok());
      EXPECT_EQ(out, r);
    }
  }
}

TEST(CodecTest, LiveRoundTripAndCompact) {
  for (uint64_t i : {0u, 1u, 2u, 1000u}) {
    std::string v;
    EncodeLive(Live(i), &v);
    LiveRecord out;
    ASSERT_TRUE(DecodeLive(v, &out).ok());
    EXPECT_EQ(out, Live(i));
    // Recovery reads one of these per live task: keep it small.
    EXPECT_LE(v.size(), 40u);
  }
  LiveRecord extreme;
  extreme.state = TaskState::kStarted;
  extreme.activity_id = kU64Max;
  extreme.queue_seq = kU64Max;
  extreme.heartbeat_s = kU32Max;
  extreme.heartbeat_deadline_ms = kI64Max;
  extreme.overall_deadline_ms = kI64Min;
  extreme.schedule_to_start_deadline_ms = -1;
  extreme.timeout_s = kU32Max;
  extreme.flags = kLiveFlagsUnknown;
  std::string v;
  EncodeLive(extreme, &v);
  LiveRecord out;
  ASSERT_TRUE(DecodeLive(v, &out).ok());
  EXPECT_EQ(out, extreme);
}

TEST(CodecTest, EventRoundTripKeepsSeqFromKey) {
  for (uint64_t seq : {1u, 2u, 3u, 77u}) {
    EventRecord e = Event(seq, 5000);
    e.timeout_kind = TimeoutKind::kOverall;
    e.has_cause = true;
    e.cause = "c";
    std::string v;
    EncodeEvent(e, &v);
    EventRecord out;
    out.seq = seq;
    ASSERT_TRUE(DecodeEvent(v, &out).ok());
    EXPECT_EQ(out, e);
  }
}

TEST(CodecTest, SmallValuesRoundTrip) {
  std::string v;
  EncodeIdempotencyValue(Id(42), &v);
  TaskId id;
  ASSERT_TRUE(DecodeIdempotencyValue(v, &id).ok());
  EXPECT_EQ(id, Id(42));

  v.clear();
  EncodeRetiredValue(std::string("a\0b", 3), &v);
  std::string_view key;
  ASSERT_TRUE(DecodeRetiredValue(v, &key).ok());
  EXPECT_EQ(key, std::string_view("a\0b", 3));

  v.clear();
  EncodeCounters({kU64Max, 1, 1u << 31}, &v);
  Counters c;
  ASSERT_TRUE(DecodeCounters(v, &c).ok());
  EXPECT_EQ(c.next_event_seq, kU64Max);
  EXPECT_EQ(c.next_activity_id, 1u);
  EXPECT_EQ(c.next_queue_seq, 1u << 31);

  for (uint64_t x : {uint64_t{0}, uint64_t{127}, uint64_t{128}, uint64_t{1} << 63, kU64Max}) {
    v.clear();
    EncodeU64Value(x, &v);
    uint64_t out = 1;
    ASSERT_TRUE(DecodeU64Value(v, &out).ok());
    EXPECT_EQ(out, x);
  }

  v.clear();
  EncodeFormatVersion(0x01020304, &v);
  EXPECT_EQ(v, std::string("\x04\x03\x02\x01", 4));  // fixed32 little-endian: FORMAT.md
  uint32_t version = 0;
  ASSERT_TRUE(DecodeFormatVersion(v, &version).ok());
  EXPECT_EQ(version, 0x01020304u);
}

// The byte layout FORMAT.md documents, pinned for one record: a change here is a format change.
TEST(CodecTest, LiveRecordBytesMatchFormatDoc) {
  LiveRecord r;
  r.state = TaskState::kScheduled;
  r.activity_id = 3;
  r.queue_seq = 300;
  r.heartbeat_s = 0;
  r.heartbeat_deadline_ms = 0;
  r.overall_deadline_ms = -1;
  r.schedule_to_start_deadline_ms = 64;
  r.timeout_s = 1;
  r.flags = kLiveHasCorrelation;
  std::string v;
  EncodeLive(r, &v);
  EXPECT_EQ(v, std::string("\x01\x01\x03\xac\x02\x00\x00\x01\x80\x01\x01\x02", 12));
}

TEST(CodecTest, LiveFlagsRoundTripEveryCombination) {
  for (uint8_t flags : {uint8_t{0}, kLiveHasIdempotencyKey, kLiveHasCorrelation,
                        uint8_t{kLiveHasIdempotencyKey | kLiveHasCorrelation}}) {
    LiveRecord r = Live(7);
    r.flags = flags;
    std::string v;
    EncodeLive(r, &v);
    EXPECT_EQ(static_cast<uint8_t>(v.back()), flags);  // the last byte (FORMAT.md)
    LiveRecord out;
    out.flags = static_cast<uint8_t>(~flags & kLiveFlagsUnknown);
    ASSERT_TRUE(DecodeLive(v, &out).ok());
    EXPECT_EQ(out, r);
  }
}

// Records written by builds before the flags byte existed (the same layout without the last
// byte) still decode, with flags = kLiveFlagsUnknown: recovery then reads the issue record at
// the task's end, as it did before the flags existed.
TEST(CodecTest, LiveRecordWithoutFlagsByteDecodesAsFlagsUnknown) {
  // FORMAT.md's example as the earlier build wrote it.
  const std::string old("\x01\x01\x03\xac\x02\x00\x00\x01\x80\x01\x01", 11);
  LiveRecord out;
  out.flags = 0;  // decoding into a reused record must overwrite it
  ASSERT_TRUE(DecodeLive(old, &out).ok());
  EXPECT_EQ(out.state, TaskState::kScheduled);
  EXPECT_EQ(out.activity_id, 3u);
  EXPECT_EQ(out.queue_seq, 300u);
  EXPECT_EQ(out.heartbeat_s, 0u);
  EXPECT_EQ(out.heartbeat_deadline_ms, 0);
  EXPECT_EQ(out.overall_deadline_ms, -1);
  EXPECT_EQ(out.schedule_to_start_deadline_ms, 64);
  EXPECT_EQ(out.timeout_s, 1u);
  EXPECT_EQ(out.flags, kLiveFlagsUnknown);

  for (uint64_t i : {0u, 1u, 2u, 1000u}) {
    std::string v;
    EncodeLive(Live(i), &v);
    v.pop_back();  // the earlier layout
    LiveRecord want = Live(i);
    want.flags = kLiveFlagsUnknown;
    ASSERT_TRUE(DecodeLive(v, &out).ok()) << i;
    EXPECT_EQ(out, want) << i;
  }
}

TEST(CodecTest, UnknownLiveFlagBitsAreCorruption) {
  std::string v;
  EncodeLive(Live(4), &v);
  LiveRecord out;
  for (uint8_t bad : {uint8_t{0x04}, uint8_t{0x07}, uint8_t{0x80}, uint8_t{0xff}}) {
    std::string w = v;
    w.back() = static_cast<char>(bad);
    EXPECT_TRUE(IsCorruption(DecodeLive(w, &out))) << int{bad};
  }
}

TEST(CodecDeathTest, EncodingAnUnknownLiveFlagBitIsABug) {
  LiveRecord r;
  r.flags = 0x04;
  std::string v;
  EXPECT_DEATH(EncodeLive(r, &v), "flags");
}

TEST(CodecTest, KeysAreBigEndianAndOrdered) {
  char a[kSeqKeyBytes];
  char b[kSeqKeyBytes];
  EncodeSeqKey(0x0102030405060708ull, a);
  EXPECT_EQ(std::string(a, 8), std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8));
  std::mt19937_64 rng(1);
  for (int i = 0; i < 10'000; ++i) {
    uint64_t x = rng() >> (rng() % 64);
    uint64_t y = rng() >> (rng() % 64);
    EncodeSeqKey(x, a);
    EncodeSeqKey(y, b);
    EXPECT_EQ(std::memcmp(a, b, 8) < 0, x < y);
    EXPECT_EQ(DecodeSeqKeyUnchecked(a), x);
  }
  char ta[kTaskKeyBytes];
  char tb[kTaskKeyBytes];
  for (int i = 0; i < 10'000; ++i) {
    TaskId x{rng() % 4, rng()};
    TaskId y{rng() % 4, rng()};
    EncodeTaskKey(x, TaskKeyKind::kIssue, ta);
    EncodeTaskKey(y, TaskKeyKind::kState, tb);
    EXPECT_EQ(std::memcmp(ta, tb, kTaskIdBytes) < 0, x < y);  // the live/tasks order is TaskId's
    EXPECT_EQ(DecodeTaskId(ta), x);
    EXPECT_EQ(ta[kTaskIdBytes], 0x00);
    EXPECT_EQ(tb[kTaskIdBytes], 0x01);
  }
}

TEST(CodecTest, RetiredKeysOrderByEndTimeThenIdIncludingNegativeTimes) {
  std::vector<int64_t> times = {kI64Min, -1'000, -1, 0, 1, 1'700'000'000'000, kI64Max};
  char a[kRetiredKeyBytes];
  char b[kRetiredKeyBytes];
  for (int64_t x : times) {
    for (int64_t y : times) {
      EncodeRetiredKey(x, Id(2), a);
      EncodeRetiredKey(y, Id(1), b);
      const int cmp = std::memcmp(a, b, kRetiredKeyBytes);
      const bool want_less = x != y ? x < y : Id(2) < Id(1);
      EXPECT_EQ(cmp < 0, want_less) << x << " " << y;
      int64_t ended = 0;
      TaskId id;
      ASSERT_TRUE(DecodeRetiredKey(std::string_view(a, kRetiredKeyBytes), &ended, &id).ok());
      EXPECT_EQ(ended, x);
      EXPECT_EQ(id, Id(2));
    }
  }
  // The ScanRetired upper bound: the 8-byte prefix of before_ms sorts after every key with an
  // earlier end time and before every key with that end time or later.
  char bound[8];
  EncodeRetiredPrefix(1000, bound);
  EncodeRetiredKey(999, TaskId{kU64Max, kU64Max}, a);
  EncodeRetiredKey(1000, TaskId{0, 0}, b);
  EXPECT_LT(std::memcmp(a, bound, 8), 0);
  EXPECT_GE(std::memcmp(b, bound, 8), 0);
}

TEST(CodecTest, MalformedKeysAreCorruption) {
  TaskId id;
  uint64_t seq = 0;
  int64_t ended = 0;
  EXPECT_TRUE(IsCorruption(DecodeTaskIdKey(std::string(15, 'a'), &id)));
  EXPECT_TRUE(IsCorruption(DecodeTaskIdKey(std::string(17, 'a'), &id)));
  EXPECT_TRUE(IsCorruption(DecodeSeqKey(std::string(7, 'a'), &seq)));
  EXPECT_TRUE(IsCorruption(DecodeSeqKey("", &seq)));
  EXPECT_TRUE(IsCorruption(DecodeRetiredKey(std::string(23, 'a'), &ended, &id)));
  EXPECT_TRUE(IsCorruption(DecodeRetiredKey(std::string(25, 'a'), &ended, &id)));
}

TEST(CodecTest, EveryProperPrefixIsCorruption) {
  for (const Kind& k : AllKinds()) {
    ASSERT_TRUE(k.decode(k.encoded).ok()) << k.name;
    for (size_t n = 0; n < k.encoded.size(); ++n) {
      // The live record's last field (flags) is optional: without it, it is the earlier layout
      // (LiveRecordWithoutFlagsByteDecodesAsFlagsUnknown).
      if (k.name == "live" && n == k.encoded.size() - 1) continue;
      Status s = k.decode(std::string_view(k.encoded).substr(0, n));
      EXPECT_TRUE(IsCorruption(s)) << k.name << " prefix " << n << ": " << s.ToString();
    }
  }
}

TEST(CodecTest, TrailingBytesAreCorruption) {
  for (const Kind& k : AllKinds()) {
    for (const char* tail : {"\x00", "x", "\x01\x02"}) {
      std::string v = k.encoded + std::string(tail, std::max<size_t>(1, std::strlen(tail)));
      EXPECT_TRUE(IsCorruption(k.decode(v))) << k.name;
    }
  }
}

TEST(CodecTest, UnknownRecordVersionIsCorruption) {
  for (const Kind& k : AllKinds()) {
    if (k.name == "format_version") continue;  // not versioned: it is the version
    for (uint8_t version : {uint8_t{0}, uint8_t{2}, uint8_t{0xff}}) {
      std::string v = k.encoded;
      v[0] = static_cast<char>(version);
      EXPECT_TRUE(IsCorruption(k.decode(v))) << k.name << " version " << int{version};
    }
  }
}

TEST(CodecTest, InvalidEnumsAndFlagsAreCorruption) {
  std::string v;
  EncodeTaskState(State(1), &v);  // [version, state, timeout_kind, ...]
  TaskStateRecord st;
  for (uint8_t bad : {uint8_t{0}, uint8_t{7}, uint8_t{0xff}}) {
    std::string w = v;
    w[1] = static_cast<char>(bad);
    EXPECT_TRUE(IsCorruption(DecodeTaskState(w, &st))) << int{bad};
  }
  std::string w = v;
  w[2] = 4;  // timeout kind past kScheduleToStart
  EXPECT_TRUE(IsCorruption(DecodeTaskState(w, &st)));

  v.clear();
  EncodeLive(Live(1), &v);
  LiveRecord live;
  w = v;
  w[1] = static_cast<char>(TaskState::kSucceeded);  // a live entry is never terminal
  EXPECT_TRUE(IsCorruption(DecodeLive(w, &live)));

  v.clear();
  EncodeEvent(Event(1), &v);  // [version, id x16, activity varint, state, ...]
  EventRecord ev;
  w = v;
  w[1 + 16 + 1] = static_cast<char>(TaskState::kStarted);  // an event is always terminal
  EXPECT_TRUE(IsCorruption(DecodeEvent(w, &ev)));

  // Unknown flag bits (state record: [ver, state, kind, started, ended, flags, ...]).
  TaskStateRecord zero;  // started_ms = ended_ms = 0: one byte each
  v.clear();
  EncodeTaskState(zero, &v);
  w = v;
  w[5] = 0x04;
  EXPECT_TRUE(IsCorruption(DecodeTaskState(w, &st)));
}

TEST(CodecTest, OverlongVarintsAndLengthsAreCorruption) {
  uint64_t x = 0;
  // 11 continuation bytes: longer than any u64.
  EXPECT_TRUE(IsCorruption(DecodeU64Value(std::string("\x01") + std::string(11, '\x80'), &x)));
  // 10 bytes whose last carries more than bit 63.
  EXPECT_TRUE(IsCorruption(
      DecodeU64Value(std::string("\x01") + std::string(9, '\xff') + std::string("\x02"), &x)));
  // The largest u64 is fine.
  ASSERT_TRUE(
      DecodeU64Value(std::string("\x01") + std::string(9, '\xff') + std::string("\x01"), &x).ok());
  EXPECT_EQ(x, kU64Max);
  // A u32 field holding 2^32.
  ActivityRecord a;
  std::string v;
  TaskIssueRecord issue;
  v = std::string("\x01\x00\x00\x80\x80\x80\x80\x10",
                  8);  // version, activity 0, issued 0, timeout_s = 2^32
  v += std::string(5, '\0');
  EXPECT_TRUE(IsCorruption(DecodeTaskIssue(v, &issue)));
  // A length prefix past the end, and one near 2^64 (no overflow in the bounds check).
  EXPECT_TRUE(IsCorruption(DecodeActivity(std::string("\x01\x00\x05"
                                                      "abc",
                                                      6),
                                          &a)));
  EXPECT_TRUE(IsCorruption(DecodeActivity(std::string("\x01\x00", 2) + std::string(9, '\xff') +
                                              std::string("\x01"
                                                          "abc"),
                                          &a)));
}

// Random single-byte mutations of valid values and random garbage: a decoder may accept a
// mutation (many are still well-formed) but must never crash or read out of bounds (ASan).
TEST(CodecTest, MutationsAndGarbageNeverCrash) {
  std::mt19937_64 rng(12345);
  for (const Kind& k : AllKinds()) {
    for (size_t i = 0; i < k.encoded.size(); ++i) {
      for (int trial = 0; trial < 8; ++trial) {
        std::string v = k.encoded;
        v[i] = static_cast<char>(rng());
        Status s = k.decode(v);
        EXPECT_TRUE(s.ok() || IsCorruption(s)) << k.name;
      }
    }
    for (int trial = 0; trial < 2'000; ++trial) {
      std::string v(rng() % 64, '\0');
      for (char& c : v) c = static_cast<char>(rng());
      if (!v.empty() && rng() % 2) v[0] = static_cast<char>(kRecordVersion);
      Status s = k.decode(v);
      EXPECT_TRUE(s.ok() || IsCorruption(s)) << k.name;
    }
  }
}

// A decoded record is fully overwritten: decoding into a reused record leaves no old bytes.
TEST(CodecTest, DecodeIntoReusedRecordOverwrites) {
  std::string big;
  std::string small;
  EncodeTaskIssue(Issue(1, 1000), &big);
  EncodeTaskIssue(Issue(3, 2), &small);
  TaskIssueRecord out;
  ASSERT_TRUE(DecodeTaskIssue(big, &out).ok());
  ASSERT_TRUE(DecodeTaskIssue(small, &out).ok());
  EXPECT_EQ(out, Issue(3, 2));
}

}  // namespace
}  // namespace tw::codec
