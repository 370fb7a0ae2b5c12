// tw-test-labels: threads
//
// ReadEvents from other threads while the engine thread writes (engine/store.h: ReadEvents is
// the one method any thread may call). Readers must see a gapless, in-order stream, and never
// part of a batch: a Write is atomic for readers too. Run against both stores, and under TSan.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "tests/storage/store_test_util.h"

// Debian's RocksDB is not built with TSan: its memtable skiplist publishes entries with atomics
// TSan cannot see, while TSan does see the plain memcpy / memcmp on both sides, so every
// concurrent read of RocksDB-owned memory is reported as a race — inside rocksdb::, or in our
// decoder reading an iterator's value. Suppress exactly the stacks that pass through RocksDB or
// RocksStore (whose ReadEvents touches no member written after open). The MemoryStore run, the
// test's own code and everything else stay fully checked.
#if defined(__SANITIZE_THREAD__)
extern "C" const char* __tsan_default_suppressions() {
  return "race:rocksdb::\n"
         "race:storage/rocksdb_store.cc\n";
}
#endif

namespace tw {
namespace {

using testing_util::Id;
using testing_util::MemoryHarness;
using testing_util::RocksHarness;

constexpr uint64_t kBatches = 400;
constexpr size_t kReaders = 3;
constexpr size_t kReadMax = 64;

// Batch n carries BatchSize(n) events; each event's correlation is "<n>/<k>/<size>", so a reader
// can tell where batches end.
uint64_t BatchSize(uint64_t n) { return 1 + n % 17; }

EventRecord MakeEvent(uint64_t seq, uint64_t n, uint64_t k) {
  EventRecord e;
  e.seq = seq;
  e.task_id = Id(seq);
  e.state = TaskState::kSucceeded;
  e.time_ms = static_cast<int64_t>(seq);
  e.output = std::string(seq % 300, 'o');
  e.correlation = std::to_string(n) + "/" + std::to_string(k) + "/" + std::to_string(BatchSize(n));
  return e;
}

// True when the event is the last one of its batch.
bool EndsBatch(const EventRecord& e) {
  const auto first = e.correlation.find('/');
  const auto second = e.correlation.find('/', first + 1);
  const uint64_t k = std::stoull(e.correlation.substr(first + 1, second - first - 1));
  const uint64_t size = std::stoull(e.correlation.substr(second + 1));
  return k + 1 == size;
}

template <typename H>
class StoreThreadsTest : public ::testing::Test {
 protected:
  H h_;
};

using Harnesses = ::testing::Types<RocksHarness, MemoryHarness>;
TYPED_TEST_SUITE(StoreThreadsTest, Harnesses, testing_util::HarnessNames);

TYPED_TEST(StoreThreadsTest, ReadEventsConcurrentWithWritesAndTrims) {
  std::unique_ptr<Store> store = this->h_.Open();
  uint64_t total = 0;
  for (uint64_t n = 1; n <= kBatches; ++n) total += BatchSize(n);

  // Each reader publishes the next seq it wants; the writer trims only below all of them.
  std::vector<std::atomic<uint64_t>> cursors(kReaders);
  for (auto& c : cursors) c.store(1);
  std::atomic<bool> failed{false};

  auto reader = [&](size_t r) {
    uint64_t next = 1;
    std::vector<EventRecord> events;
    while (next <= total && !failed.load()) {
      Status s = store->ReadEvents(next, kReadMax, &events);
      if (!s.ok()) {
        ADD_FAILURE() << s.ToString();
        failed = true;
        return;
      }
      for (size_t i = 0; i < events.size(); ++i) {
        if (events[i].seq != next + i || events[i].task_id != Id(next + i)) {
          ADD_FAILURE() << "reader " << r << " expected " << next + i << " got " << events[i].seq;
          failed = true;
          return;
        }
      }
      // Fewer than asked means the reader reached the end of what is written: that end must
      // be a batch boundary.
      if (!events.empty() && events.size() < kReadMax && !EndsBatch(events.back())) {
        ADD_FAILURE() << "reader " << r << " saw part of a batch ending at " << events.back().seq
                      << " (" << events.back().correlation << ")";
        failed = true;
        return;
      }
      next += events.size();
      cursors[r].store(next);
      if (events.empty()) std::this_thread::yield();  // caught up with the writer
    }
  };

  std::vector<std::thread> readers;
  for (size_t r = 0; r < kReaders; ++r) readers.emplace_back(reader, r);

  // This thread is the engine thread.
  auto b = store->NewBatch();
  uint64_t seq = 1;
  uint64_t trimmed_below = 1;
  for (uint64_t n = 1; n <= kBatches && !failed.load(); ++n) {
    b->Clear();
    for (uint64_t k = 0; k < BatchSize(n); ++k) b->AppendEvent(MakeEvent(seq++, n, k));
    b->PutCounters(seq, 1, 1);
    if (n % 25 == 0) {
      uint64_t low = seq;
      for (auto& c : cursors) low = std::min(low, c.load());
      if (low > trimmed_below) {
        b->TrimEventsBelow(low);
        trimmed_below = low;
      }
    }
    Status s = store->Write(b.get(), /*sync=*/n % 50 == 0);
    if (!s.ok()) {  // no ASSERT: the readers must be joined first
      ADD_FAILURE() << s.ToString();
      failed = true;
    }
  }
  for (auto& t : readers) t.join();
  EXPECT_FALSE(failed.load());
  for (auto& c : cursors) EXPECT_EQ(c.load(), total + 1);

  StoreMeta meta;
  ASSERT_TRUE(store->LoadMeta(&meta).ok());
  EXPECT_EQ(meta.first_event_seq, trimmed_below);
  EXPECT_EQ(meta.next_event_seq, total + 1);
}

}  // namespace
}  // namespace tw
