// The Store contract (engine/store.h), written once and run against every implementation:
// RocksStore (on a FaultFs) and MemoryStore.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "engine/limits.h"
#include "tests/storage/store_test_util.h"

namespace tw {
namespace {

using testing_util::Event;
using testing_util::Id;
using testing_util::Issue;
using testing_util::Live;
using testing_util::MemoryHarness;
using testing_util::Payload;
using testing_util::RocksHarness;
using testing_util::State;

template <typename H>
class StoreSemanticsTest : public ::testing::Test {
 protected:
  void SetUp() override { store_ = h_.Open(); }

  void Reopen() {
    store_.reset();
    store_ = h_.Open();
  }

  // Writes whatever fill() adds as one batch; expects success.
  template <typename F>
  void Commit(F fill, bool sync = true) {
    auto b = store_->NewBatch();
    fill(b.get());
    Status s = store_->Write(b.get(), sync);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  std::vector<std::pair<TaskId, LiveRecord>> AllLive() {
    std::vector<std::pair<TaskId, LiveRecord>> out;
    Status s =
        store_->ScanLive([&](const TaskId& id, const LiveRecord& r) { out.emplace_back(id, r); });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  std::vector<std::tuple<int64_t, TaskId, std::string>> Retired(int64_t before_ms, size_t max) {
    std::vector<std::tuple<int64_t, TaskId, std::string>> out;
    Status s = store_->ScanRetired(before_ms, max,
                                   [&](int64_t ended_ms, const TaskId& id, std::string_view k) {
                                     out.emplace_back(ended_ms, id, std::string(k));
                                   });
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  std::vector<uint64_t> EventSeqs(uint64_t from, size_t max) {
    std::vector<EventRecord> events;
    Status s = store_->ReadEvents(from, max, &events);
    EXPECT_TRUE(s.ok()) << s.ToString();
    std::vector<uint64_t> seqs;
    for (const auto& e : events) seqs.push_back(e.seq);
    return seqs;
  }

  static std::vector<uint64_t> Range(uint64_t from, uint64_t to) {  // [from, to)
    std::vector<uint64_t> v;
    for (uint64_t i = from; i < to; ++i) v.push_back(i);
    return v;
  }

  H h_;
  std::unique_ptr<Store> store_;
};

using testing_util::RocksSealedHarness;
using Harnesses = ::testing::Types<RocksHarness, RocksSealedHarness, MemoryHarness>;
TYPED_TEST_SUITE(StoreSemanticsTest, Harnesses, testing_util::HarnessNames);

TYPED_TEST(StoreSemanticsTest, EmptyStoreReadsNothing) {
  StoreMeta meta;
  ASSERT_TRUE(this->store_->LoadMeta(&meta).ok());
  EXPECT_EQ(meta.next_event_seq, 1u);
  EXPECT_EQ(meta.first_event_seq, 1u);
  EXPECT_EQ(meta.next_activity_id, 1u);
  EXPECT_EQ(meta.next_queue_seq, 1u);
  EXPECT_TRUE(meta.consumers.empty());
  std::vector<ActivityRecord> acts;
  ASSERT_TRUE(this->store_->LoadActivities(&acts).ok());
  EXPECT_TRUE(acts.empty());
  EXPECT_TRUE(this->AllLive().empty());
  TaskIssueRecord issue;
  TaskStateRecord state;
  TaskId id;
  EXPECT_TRUE(this->store_->GetTaskIssue(Id(1), &issue).IsNotFound());
  EXPECT_TRUE(this->store_->GetTaskState(Id(1), &state).IsNotFound());
  EXPECT_TRUE(this->store_->FindIdempotencyKey("nope", &id).IsNotFound());
  EXPECT_TRUE(this->store_->FindIdempotencyKey("", &id).IsNotFound());
  EXPECT_TRUE(this->Retired(INT64_MAX, 100).empty());
  EXPECT_TRUE(this->EventSeqs(1, 100).empty());
}

TYPED_TEST(StoreSemanticsTest, ActivitiesPutDeleteLoadInIdOrder) {
  this->Commit([](WriteBatch* b) {
    for (uint64_t id : {300u, 2u, 1000000u, 17u}) {
      b->PutActivity({id, "act-" + std::to_string(id), static_cast<int64_t>(id) * 1000});
    }
  });
  this->Commit([](WriteBatch* b) {
    b->DeleteActivity(17);
    b->PutActivity({2, "renamed", -5});  // overwrite; negative times survive too
  });
  std::vector<ActivityRecord> acts;
  ASSERT_TRUE(this->store_->LoadActivities(&acts).ok());
  std::vector<ActivityRecord> want = {
      {2, "renamed", -5}, {300, "act-300", 300000}, {1000000, "act-1000000", 1000000000}};
  EXPECT_EQ(acts, want);
  this->Reopen();
  ASSERT_TRUE(this->store_->LoadActivities(&acts).ok());
  EXPECT_EQ(acts, want);
}

TYPED_TEST(StoreSemanticsTest, TaskRecordsRoundTripIncludingLargePayloads) {
  TaskIssueRecord big = Issue(7, 300 << 10);  // past kPayloadBytesMax: the store does not care
  this->Commit([&](WriteBatch* b) {
    b->PutTaskIssue(Id(1), Issue(1));
    b->PutTaskState(Id(1), State(1, TaskState::kStarted));
    b->PutTaskIssue(Id(7), big);
    b->PutTaskState(Id(7), State(7, TaskState::kFailed));
  });
  // State is rewritten at every transition; the issue record never is.
  this->Commit([](WriteBatch* b) { b->PutTaskState(Id(1), State(1, TaskState::kSucceeded)); });
  for (int pass = 0; pass < 2; ++pass) {
    TaskIssueRecord issue;
    TaskStateRecord state;
    ASSERT_TRUE(this->store_->GetTaskIssue(Id(1), &issue).ok());
    EXPECT_EQ(issue, Issue(1));
    ASSERT_TRUE(this->store_->GetTaskState(Id(1), &state).ok());
    EXPECT_EQ(state, State(1, TaskState::kSucceeded));
    ASSERT_TRUE(this->store_->GetTaskIssue(Id(7), &issue).ok());
    EXPECT_EQ(issue, big);
    ASSERT_TRUE(this->store_->GetTaskState(Id(7), &state).ok());
    EXPECT_EQ(state, State(7, TaskState::kFailed));
    EXPECT_TRUE(this->store_->GetTaskIssue(Id(2), &issue).IsNotFound());
    this->Reopen();
  }
}

// The end record has its own key: writing it leaves the state record (the start) as it was.
TYPED_TEST(StoreSemanticsTest, EndRecordIsKeptApartFromTheStateRecord) {
  this->Commit([&](WriteBatch* b) {
    b->PutTaskIssue(Id(1), Issue(1));
    b->PutTaskState(Id(1), State(1, TaskState::kStarted));
  });
  this->Commit([](WriteBatch* b) { b->PutTaskEnd(Id(1), State(11, TaskState::kSucceeded)); });
  for (int pass = 0; pass < 2; ++pass) {
    TaskStateRecord state;
    ASSERT_TRUE(this->store_->GetTaskState(Id(1), &state).ok());
    EXPECT_EQ(state, State(1, TaskState::kStarted));
    ASSERT_TRUE(this->store_->GetTaskEnd(Id(1), &state).ok());
    EXPECT_EQ(state, State(11, TaskState::kSucceeded));
    EXPECT_TRUE(this->store_->GetTaskEnd(Id(2), &state).IsNotFound());
    this->Reopen();
  }
}

TYPED_TEST(StoreSemanticsTest, ScanLiveInIdOrderAndDeleteLive) {
  std::map<TaskId, LiveRecord> want;
  this->Commit([&](WriteBatch* b) {
    for (uint64_t i = 1; i <= 50; ++i) {
      b->PutLive(Id(i), Live(i));
      want[Id(i)] = Live(i);
    }
  });
  this->Commit([&](WriteBatch* b) {
    for (uint64_t i = 1; i <= 50; i += 3) {
      b->DeleteLive(Id(i));
      want.erase(Id(i));
    }
    LiveRecord moved = Live(2);
    moved.state = TaskState::kStarted;
    moved.overall_deadline_ms = 42;
    moved.flags =
        kLiveHasIdempotencyKey;  // Live(2) has kLiveHasCorrelation: a rewrite keeps the new
    b->PutLive(Id(2), moved);
    want[Id(2)] = moved;
  });
  for (int pass = 0; pass < 2; ++pass) {
    auto got = this->AllLive();
    std::vector<std::pair<TaskId, LiveRecord>> expect(want.begin(), want.end());
    ASSERT_EQ(got.size(), expect.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].first, expect[i].first) << i;
      EXPECT_EQ(got[i].second, expect[i].second) << i;
    }
    this->Reopen();
  }
}

TYPED_TEST(StoreSemanticsTest, IdempotencyKeys) {
  std::string binary_key("k\0\xff", 3);
  this->Commit([&](WriteBatch* b) {
    b->PutIdempotencyKey("a", Id(1));
    b->PutIdempotencyKey(binary_key, Id(2));
    b->PutIdempotencyKey(std::string(limits::kIdempotencyKeyBytesMax, 'x'), Id(3));
  });
  TaskId id;
  ASSERT_TRUE(this->store_->FindIdempotencyKey("a", &id).ok());
  EXPECT_EQ(id, Id(1));
  ASSERT_TRUE(this->store_->FindIdempotencyKey(binary_key, &id).ok());
  EXPECT_EQ(id, Id(2));
  ASSERT_TRUE(
      this->store_->FindIdempotencyKey(std::string(limits::kIdempotencyKeyBytesMax, 'x'), &id)
          .ok());
  EXPECT_EQ(id, Id(3));
  EXPECT_TRUE(this->store_->FindIdempotencyKey("k", &id).IsNotFound());
}

TYPED_TEST(StoreSemanticsTest, ReadEventsRangesAndEnd) {
  this->Commit([](WriteBatch* b) {
    for (uint64_t s = 1; s <= 10; ++s) b->AppendEvent(Event(s, s == 4 ? 8000 : 20));
  });
  EXPECT_EQ(this->EventSeqs(1, 100), this->Range(1, 11));
  EXPECT_EQ(this->EventSeqs(1, 3), this->Range(1, 4));
  EXPECT_EQ(this->EventSeqs(4, 3), this->Range(4, 7));
  EXPECT_EQ(this->EventSeqs(10, 5), this->Range(10, 11));
  EXPECT_TRUE(this->EventSeqs(11, 5).empty());
  EXPECT_TRUE(this->EventSeqs(1, 0).empty());
  EXPECT_TRUE(this->EventSeqs(0, 5).empty());                   // seqs start at 1: 0 is a gap
  EXPECT_EQ(this->EventSeqs(8, SIZE_MAX), this->Range(8, 11));  // no overflow of from + max
  std::vector<EventRecord> events = {Event(99)};                // stale contents are replaced
  ASSERT_TRUE(this->store_->ReadEvents(3, 2, &events).ok());
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0], Event(3));
  EXPECT_EQ(events[1], Event(4, 8000));
}

TYPED_TEST(StoreSemanticsTest, ReadEventsStopsAtFirstGap) {
  this->Commit([](WriteBatch* b) {
    for (uint64_t s : {1u, 2u, 3u, 5u, 6u}) b->AppendEvent(Event(s));
  });
  EXPECT_EQ(this->EventSeqs(1, 100), this->Range(1, 4));
  EXPECT_TRUE(this->EventSeqs(4, 100).empty());
  EXPECT_EQ(this->EventSeqs(5, 100), this->Range(5, 7));
}

TYPED_TEST(StoreSemanticsTest, TrimEventsBelowDeletesRangeAndRecordsFirstSeq) {
  this->Commit([](WriteBatch* b) {
    for (uint64_t s = 1; s <= 20; ++s) b->AppendEvent(Event(s));
    b->PutCounters(21, 1, 1);
  });
  this->Commit([](WriteBatch* b) { b->TrimEventsBelow(8); });
  for (int pass = 0; pass < 2; ++pass) {
    StoreMeta meta;
    ASSERT_TRUE(this->store_->LoadMeta(&meta).ok());
    EXPECT_EQ(meta.first_event_seq, 8u);
    EXPECT_EQ(meta.next_event_seq, 21u);
    EXPECT_TRUE(this->EventSeqs(1, 100).empty());  // trimmed: a gap at from_seq
    EXPECT_TRUE(this->EventSeqs(7, 100).empty());
    EXPECT_EQ(this->EventSeqs(8, 100), this->Range(8, 21));
    this->Reopen();
  }
  this->Commit([](WriteBatch* b) {
    b->TrimEventsBelow(21);  // everything
    b->AppendEvent(Event(21));
  });
  EXPECT_EQ(this->EventSeqs(21, 100), this->Range(21, 22));
  EXPECT_TRUE(this->EventSeqs(20, 100).empty());
}

// The engine trims after every acknowledgement, often by a handful of events. However the store
// coalesces the physical deletes, nothing below first_event_seq is ever readable again.
TYPED_TEST(StoreSemanticsTest, TrimInSmallStepsHidesEverythingBelowFirstSeq) {
  constexpr uint64_t kEvents = 3000;
  uint64_t seq = 1;
  uint64_t first = 1;
  for (int round = 0; seq <= kEvents; ++round) {
    this->Commit([&](WriteBatch* b) {
      for (int i = 0; i < 37 && seq <= kEvents; ++i) b->AppendEvent(Event(seq++, 4));
      if (round % 2 == 1 && seq > first + 10) {
        first = seq - 10;
        b->TrimEventsBelow(first);
      }
    });
    ASSERT_TRUE(this->EventSeqs(first - 1, 5).empty() || first == 1) << first;
    ASSERT_EQ(this->EventSeqs(first, 3), this->Range(first, first + 3)) << first;
  }
  for (int pass = 0; pass < 2; ++pass) {
    StoreMeta meta;
    ASSERT_TRUE(this->store_->LoadMeta(&meta).ok());
    EXPECT_EQ(meta.first_event_seq, first);
    EXPECT_EQ(meta.next_event_seq, kEvents + 1);
    for (uint64_t below :
         {uint64_t{1}, uint64_t{1023}, uint64_t{1024}, uint64_t{2047}, first - 1}) {
      EXPECT_TRUE(this->EventSeqs(below, 10).empty()) << below;
    }
    EXPECT_EQ(this->EventSeqs(first, 100'000), this->Range(first, kEvents + 1));
    this->Reopen();
  }
  // And trimming continues after a reopen.
  this->Commit([&](WriteBatch* b) { b->TrimEventsBelow(kEvents); });
  EXPECT_TRUE(this->EventSeqs(kEvents - 1, 10).empty());
  EXPECT_EQ(this->EventSeqs(kEvents, 10), this->Range(kEvents, kEvents + 1));
}

TYPED_TEST(StoreSemanticsTest, CountersAndConsumersInMeta) {
  this->Commit([](WriteBatch* b) {
    b->PutCounters(5, 7, 11);
    b->PutConsumer("zeta", 3);
    b->PutConsumer("alpha", 4);
    b->PutConsumer("mid/with/slash", 1);
  });
  this->Commit([](WriteBatch* b) {
    b->PutConsumer("alpha", 9);
    b->DeleteConsumer("zeta");
    b->DeleteConsumer("never-existed");
    b->PutCounters(6, 8, 12);
  });
  for (int pass = 0; pass < 2; ++pass) {
    StoreMeta meta;
    ASSERT_TRUE(this->store_->LoadMeta(&meta).ok());
    EXPECT_EQ(meta.next_event_seq, 6u);
    EXPECT_EQ(meta.next_activity_id, 8u);
    EXPECT_EQ(meta.next_queue_seq, 12u);
    EXPECT_EQ(meta.first_event_seq, 1u);
    std::vector<std::pair<std::string, uint64_t>> want = {{"alpha", 9}, {"mid/with/slash", 1}};
    EXPECT_EQ(meta.consumers, want);
    this->Reopen();
  }
}

// A lagging counter must never make the engine reuse a sequence or an id that is on disk.
TYPED_TEST(StoreSemanticsTest, LoadMetaNeverBelowStoredEventsAndActivities) {
  this->Commit([](WriteBatch* b) {
    b->PutCounters(2, 1, 1);
    for (uint64_t s = 1; s <= 4; ++s) b->AppendEvent(Event(s));
    b->PutActivity({9, "nine", 0});
  });
  StoreMeta meta;
  ASSERT_TRUE(this->store_->LoadMeta(&meta).ok());
  EXPECT_EQ(meta.next_event_seq, 5u);
  EXPECT_EQ(meta.next_activity_id, 10u);
}

TYPED_TEST(StoreSemanticsTest, ScanRetiredOrderBoundsAndMax) {
  // (ended_ms, id index, key): inserted out of order, across batches.
  this->Commit([](WriteBatch* b) {
    b->PutRetired(300, Id(3), "k3");
    b->PutRetired(100, Id(2), "");
    b->PutRetired(100, Id(1), "k1");
  });
  this->Commit([](WriteBatch* b) {
    b->PutRetired(200, Id(4), "k4");
    b->PutRetired(-50, Id(5), "neg");  // before the epoch still sorts first
  });
  auto all = this->Retired(INT64_MAX, 100);
  std::vector<std::tuple<int64_t, TaskId, std::string>> want = {{-50, Id(5), "neg"},
                                                                {100, Id(1), "k1"},
                                                                {100, Id(2), ""},
                                                                {200, Id(4), "k4"},
                                                                {300, Id(3), "k3"}};
  std::sort(want.begin(), want.end());  // by end time, then id: the key order
  EXPECT_EQ(all, want);
  // before_ms is exclusive.
  EXPECT_EQ(this->Retired(200, 100), std::vector(want.begin(), want.begin() + 3));
  EXPECT_EQ(this->Retired(201, 100), std::vector(want.begin(), want.begin() + 4));
  EXPECT_EQ(this->Retired(-50, 100).size(), 0u);
  EXPECT_EQ(this->Retired(INT64_MAX, 2), std::vector(want.begin(), want.begin() + 2));
  EXPECT_TRUE(this->Retired(INT64_MAX, 0).empty());
  this->Reopen();
  EXPECT_EQ(this->Retired(INT64_MAX, 100), want);
}

TYPED_TEST(StoreSemanticsTest, DeleteTaskRemovesEverythingOfThatTaskOnly) {
  auto add = [](WriteBatch* b, uint64_t i, int64_t ended_ms) {
    TaskIssueRecord issue = Issue(i);
    b->PutTaskIssue(Id(i), issue);
    b->PutTaskState(Id(i), State(i));
    b->PutTaskEnd(Id(i), State(i, TaskState::kCancelled));
    if (!issue.idempotency_key.empty()) b->PutIdempotencyKey(issue.idempotency_key, Id(i));
    b->PutRetired(ended_ms, Id(i), issue.idempotency_key);
  };
  this->Commit([&](WriteBatch* b) {
    add(b, 2, 1000);  // has an idempotency key
    add(b, 3, 1000);  // has none
    add(b, 4, 5000);
  });
  // Retention: scan what expired, delete exactly that.
  std::vector<std::tuple<int64_t, TaskId, std::string>> expired = this->Retired(2000, 100);
  ASSERT_EQ(expired.size(), 2u);
  this->Commit([&](WriteBatch* b) {
    for (const auto& [ended_ms, id, key] : expired) b->DeleteTask(ended_ms, id, key);
  });
  for (int pass = 0; pass < 2; ++pass) {
    TaskIssueRecord issue;
    TaskStateRecord state;
    TaskId id;
    for (uint64_t i : {2u, 3u}) {
      EXPECT_TRUE(this->store_->GetTaskIssue(Id(i), &issue).IsNotFound()) << i;
      EXPECT_TRUE(this->store_->GetTaskState(Id(i), &state).IsNotFound()) << i;
      EXPECT_TRUE(this->store_->GetTaskEnd(Id(i), &state).IsNotFound()) << i;
    }
    EXPECT_TRUE(this->store_->GetTaskEnd(Id(4), &state).ok());
    EXPECT_TRUE(this->store_->FindIdempotencyKey(Issue(2).idempotency_key, &id).IsNotFound());
    ASSERT_TRUE(this->store_->GetTaskIssue(Id(4), &issue).ok());
    EXPECT_EQ(issue, Issue(4));
    ASSERT_TRUE(this->store_->FindIdempotencyKey(Issue(4).idempotency_key, &id).ok());
    EXPECT_EQ(id, Id(4));
    auto left = this->Retired(INT64_MAX, 100);
    ASSERT_EQ(left.size(), 1u);
    EXPECT_EQ(std::get<1>(left[0]), Id(4));
    this->Reopen();
  }
}

// Retention scans repeatedly from the oldest entry; a task retired later with an OLDER end time
// (a wall clock that stepped back) must still be found. Pins RocksStore's scan floor.
TYPED_TEST(StoreSemanticsTest, ScanRetiredFindsEntriesOlderThanEarlierScans) {
  this->Commit([](WriteBatch* b) {
    for (uint64_t i = 1; i <= 10; ++i) b->PutRetired(1000 + static_cast<int64_t>(i), Id(i), "");
  });
  auto first = this->Retired(1006, 3);
  ASSERT_EQ(first.size(), 3u);
  this->Commit([&](WriteBatch* b) {
    for (const auto& [ended_ms, id, key] : first) b->DeleteTask(ended_ms, id, key);
  });
  EXPECT_TRUE(this->Retired(1002, 100).empty());
  EXPECT_EQ(this->Retired(1006, 100).size(), 2u);  // 1004, 1005
  EXPECT_TRUE(this->Retired(900, 100).empty());
  this->Commit([](WriteBatch* b) { b->PutRetired(500, Id(99), "old"); });
  auto again = this->Retired(1006, 100);
  ASSERT_EQ(again.size(), 3u);
  EXPECT_EQ(again[0], std::make_tuple(int64_t{500}, Id(99), std::string("old")));
}

TYPED_TEST(StoreSemanticsTest, BatchCountByteSizeClearAndReuse) {
  auto b = this->store_->NewBatch();
  EXPECT_EQ(b->Count(), 0u);
  const size_t empty_bytes = b->ByteSize();
  b->PutTaskIssue(Id(1), Issue(1, 500));
  b->DeleteTask(10, Id(2), "key");
  b->AppendEvent(Event(1));
  EXPECT_EQ(b->Count(), 3u);
  EXPECT_GT(b->ByteSize(), empty_bytes + 500);
  b->Clear();
  EXPECT_EQ(b->Count(), 0u);
  EXPECT_EQ(b->ByteSize(), empty_bytes);
  ASSERT_TRUE(this->store_->Write(b.get(), true).ok());  // an empty write is fine
  TaskIssueRecord issue;
  EXPECT_TRUE(this->store_->GetTaskIssue(Id(1), &issue).IsNotFound());  // cleared: not written
  // The same batch object serves the next group commit.
  b->PutTaskIssue(Id(3), Issue(3));
  ASSERT_TRUE(this->store_->Write(b.get(), true).ok());
  ASSERT_TRUE(this->store_->GetTaskIssue(Id(3), &issue).ok());
  EXPECT_EQ(issue, Issue(3));
}

// A group commit of the size the engine writes: hundreds of mutations of every kind in one
// batch, all visible after one Write and after a reopen.
TYPED_TEST(StoreSemanticsTest, LargeGroupCommitIsWrittenWhole) {
  constexpr uint64_t kTasks = 300;
  this->Commit([&](WriteBatch* b) {
    for (uint64_t i = 1; i <= kTasks; ++i) {
      b->PutTaskIssue(Id(i), Issue(i, 100));
      b->PutTaskState(Id(i), State(i, TaskState::kStarted));
      b->PutLive(Id(i), Live(i));
      b->AppendEvent(Event(i, 100));
    }
    b->PutCounters(kTasks + 1, 1, kTasks + 1);
    EXPECT_EQ(b->Count(), kTasks * 4 + 1);
  });
  this->Reopen();
  EXPECT_EQ(this->AllLive().size(), kTasks);
  EXPECT_EQ(this->EventSeqs(1, 10'000), this->Range(1, kTasks + 1));
  TaskStateRecord state;
  ASSERT_TRUE(this->store_->GetTaskState(Id(kTasks), &state).ok());
  EXPECT_EQ(state, State(kTasks, TaskState::kStarted));
}

TYPED_TEST(StoreSemanticsTest, FailedWritePoisonsForGood) {
  this->Commit([](WriteBatch* b) { b->PutTaskIssue(Id(1), Issue(1)); });
  this->h_.InjectWriteFailure(this->store_.get());
  auto b = this->store_->NewBatch();
  b->PutTaskIssue(Id(2), Issue(2));
  Status failed = this->store_->Write(b.get(), true);
  EXPECT_FALSE(failed.ok());
  EXPECT_NE(failed.code(), Status::Code::kPoisoned);  // the real error, with its message
  EXPECT_FALSE(failed.message().empty());
  this->h_.ClearFailures();
  for (bool sync : {true, false}) {
    b->Clear();
    b->PutTaskIssue(Id(3), Issue(3));
    Status s = this->store_->Write(b.get(), sync);
    EXPECT_EQ(s.code(), Status::Code::kPoisoned) << s.ToString();
  }
  b->Clear();
  EXPECT_EQ(this->store_->Write(b.get(), true).code(), Status::Code::kPoisoned);
  // Reads still work, and nothing written after the poisoning exists, even after a reopen.
  TaskIssueRecord issue;
  EXPECT_TRUE(this->store_->GetTaskIssue(Id(1), &issue).ok());
  EXPECT_TRUE(this->store_->GetTaskIssue(Id(3), &issue).IsNotFound());
  this->Reopen();
  EXPECT_TRUE(this->store_->GetTaskIssue(Id(1), &issue).ok());
  EXPECT_TRUE(this->store_->GetTaskIssue(Id(3), &issue).IsNotFound());
  // A fresh store on the same data is not poisoned.
  this->Commit([](WriteBatch* b2) { b2->PutTaskIssue(Id(4), Issue(4)); });
}

TYPED_TEST(StoreSemanticsTest, CrashKeepsSyncedWritesAndDropsLaterUnsyncedOnes) {
  this->Commit([](WriteBatch* b) { b->PutTaskIssue(Id(1), Issue(1)); }, /*sync=*/true);
  this->Commit([](WriteBatch* b) { b->PutTaskIssue(Id(2), Issue(2)); }, /*sync=*/false);
  this->Commit([](WriteBatch* b) { b->AppendEvent(Event(1)); }, /*sync=*/false);
  this->h_.Crash(&this->store_);
  this->store_ = this->h_.Open();
  TaskIssueRecord issue;
  EXPECT_TRUE(this->store_->GetTaskIssue(Id(1), &issue).ok());
  EXPECT_TRUE(this->store_->GetTaskIssue(Id(2), &issue).IsNotFound());
  EXPECT_TRUE(this->EventSeqs(1, 10).empty());
}

// A synced write makes every earlier write durable (the WAL is one ordered log), and so does an
// empty synced write.
TYPED_TEST(StoreSemanticsTest, SyncedWriteMakesEarlierUnsyncedWritesDurable) {
  this->Commit([](WriteBatch* b) { b->PutTaskIssue(Id(1), Issue(1)); }, /*sync=*/false);
  this->Commit([](WriteBatch* b) { b->PutTaskIssue(Id(2), Issue(2)); }, /*sync=*/true);
  this->Commit([](WriteBatch* b) { b->PutTaskIssue(Id(3), Issue(3)); }, /*sync=*/false);
  this->Commit([](WriteBatch*) {}, /*sync=*/true);
  this->Commit([](WriteBatch* b) { b->PutTaskIssue(Id(4), Issue(4)); }, /*sync=*/false);
  this->h_.Crash(&this->store_);
  this->store_ = this->h_.Open();
  TaskIssueRecord issue;
  for (uint64_t i : {1u, 2u, 3u}) EXPECT_TRUE(this->store_->GetTaskIssue(Id(i), &issue).ok()) << i;
  EXPECT_TRUE(this->store_->GetTaskIssue(Id(4), &issue).IsNotFound());
}

}  // namespace
}  // namespace tw
