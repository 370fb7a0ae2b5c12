// RocksStore specifics: the format-version and column-family checks at open, corruption
// surfacing, blob files, poisoning through the real RocksDB write path, and crash consistency
// under a simulated power cut (FaultFs). The Store contract itself: store_semantics_test.cc.
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <rocksdb/transaction_log.h>
#include <rocksdb/utilities/options_util.h>
#include <rocksdb/write_batch.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "engine/limits.h"
#include "storage/codec.h"
#include "storage/rocksdb_store_testing.h"
#include "tests/storage/store_test_util.h"

namespace tw {
namespace {

using testing_util::Event;
using testing_util::Id;
using testing_util::Issue;
using testing_util::Live;
using testing_util::State;
using testing_util::TempDir;

const std::vector<std::string> kAllCfs = {"default", "tasks",   "live",       "idem",
                                          "events",  "retired", "activities", "meta"};

// Raw RocksDB access, to set up what tokenwheel itself never writes.
class RawDb {
 public:
  // `special`: options for the named CFs; every other CF gets defaults.
  RawDb(const std::string& path, const std::vector<std::string>& cfs, bool create = false,
        const std::map<std::string, rocksdb::ColumnFamilyOptions>& special = {}) {
    rocksdb::DBOptions o;
    o.create_if_missing = create;
    o.create_missing_column_families = create;
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    for (const auto& name : cfs) {
      auto it = special.find(name);
      descs.emplace_back(name, it == special.end() ? rocksdb::ColumnFamilyOptions() : it->second);
    }
    rocksdb::DB* raw = nullptr;
    auto s = rocksdb::DB::Open(o, path, descs, &handles_, &raw);
    EXPECT_TRUE(s.ok()) << s.ToString();
    db_.reset(raw);
    for (size_t i = 0; i < cfs.size(); ++i) by_name_[cfs[i]] = handles_[i];
  }
  ~RawDb() {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    EXPECT_TRUE(db_->Close().ok());
  }
  void Put(const std::string& cf, const std::string& key, const std::string& value) {
    rocksdb::WriteOptions wo;
    wo.sync = true;
    ASSERT_TRUE(db_->Put(wo, by_name_.at(cf), key, value).ok());
  }
  void Delete(const std::string& cf, const std::string& key) {
    ASSERT_TRUE(db_->Delete(rocksdb::WriteOptions(), by_name_.at(cf), key).ok());
  }
  std::string Get(const std::string& cf, const std::string& key) {
    std::string v;
    auto s = db_->Get(rocksdb::ReadOptions(), by_name_.at(cf), key, &v);
    return s.ok() ? v : "<" + s.ToString() + ">";
  }
  // Rewrites every table of `cf` with the options it was opened with.
  void CompactAll(const std::string& cf) {
    rocksdb::CompactRangeOptions o;
    o.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;  // no trivial move
    ASSERT_TRUE(db_->CompactRange(o, by_name_.at(cf), nullptr, nullptr).ok());
  }
  void DropCf(const std::string& cf) { ASSERT_TRUE(db_->DropColumnFamily(by_name_.at(cf)).ok()); }
  void CreateCf(const std::string& cf) {
    rocksdb::ColumnFamilyHandle* h = nullptr;
    ASSERT_TRUE(db_->CreateColumnFamily(rocksdb::ColumnFamilyOptions(), cf, &h).ok());
    handles_.push_back(h);
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::map<std::string, rocksdb::ColumnFamilyHandle*> by_name_;
};

// Every file of the directory with its size and modification time: "no changes" means this
// snapshot is identical before and after a refused open.
std::map<std::string, std::pair<uintmax_t, std::filesystem::file_time_type>> Snapshot(
    const std::string& dir) {
  std::map<std::string, std::pair<uintmax_t, std::filesystem::file_time_type>> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    out[e.path().filename().string()] = {e.file_size(), e.last_write_time()};
  }
  return out;
}

class RocksStoreTest : public ::testing::Test {
 protected:
  std::string path() const { return dir_.path() + "/db"; }

  Status Open(std::unique_ptr<Store>* store, std::shared_ptr<FaultFs> fs = nullptr,
              bool sync_default = true) {
    RocksStoreOptions o;
    o.path = path();
    o.sync_default = sync_default;
    o.blob_min_bytes = 1024;
    RocksStoreTestHooks hooks;
    hooks.file_system = std::move(fs);
    return OpenRocksStoreForTesting(o, hooks, store);
  }

  std::unique_ptr<Store> OpenOk(std::shared_ptr<FaultFs> fs = nullptr, bool sync_default = true) {
    std::unique_ptr<Store> store;
    Status s = Open(&store, std::move(fs), sync_default);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return store;
  }

  // Creates a store with one task in it, then closes it.
  void CreateWithData() {
    auto store = OpenOk();
    auto b = store->NewBatch();
    b->PutTaskIssue(Id(1), Issue(1));
    ASSERT_TRUE(store->Write(b.get(), true).ok());
  }

  // Expects Open to fail with `code` and a message containing `needle`, changing no file.
  void ExpectRefused(Status::Code code, const std::string& needle) {
    auto before = Snapshot(path());
    std::unique_ptr<Store> store;
    Status s = Open(&store);
    EXPECT_EQ(s.code(), code) << s.ToString();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.ToString();
    EXPECT_EQ(store, nullptr);
    EXPECT_EQ(Snapshot(path()), before);
  }

  TempDir dir_;
};

TEST_F(RocksStoreTest, CreatesDatabaseWithEveryColumnFamilyAndFormatVersion) {
  OpenOk().reset();
  std::vector<std::string> cfs;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path(), &cfs).ok());
  std::sort(cfs.begin(), cfs.end());
  auto want = kAllCfs;
  std::sort(want.begin(), want.end());
  EXPECT_EQ(cfs, want);
  RawDb raw(path(), kAllCfs);
  std::string version;
  codec::EncodeFormatVersion(kFormatVersion, &version);
  EXPECT_EQ(raw.Get("meta", "format_version"), version);
}

// Keys that grow with time land past the bottom level; small target files keep a compaction
// from rewriting the whole bottom level (docs/FORMAT.md, "Tuning"). Read back from the OPTIONS
// file RocksDB persisted, so it pins what the store really opened with.
TEST_F(RocksStoreTest, EveryColumnFamilyWritesEightMiBTargetFiles) {
  auto store = OpenOk();
  rocksdb::DBOptions db_options;
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  rocksdb::ConfigOptions config;
  ASSERT_TRUE(rocksdb::LoadLatestOptions(config, path(), &db_options, &cfs).ok());
  ASSERT_EQ(cfs.size(), kAllCfs.size());
  for (const auto& cf : cfs) {
    EXPECT_EQ(cf.options.target_file_size_base, uint64_t{8} << 20) << cf.name;
  }
}

TEST_F(RocksStoreTest, ReopensItsOwnDatabase) {
  CreateWithData();
  auto store = OpenOk();
  TaskIssueRecord issue;
  ASSERT_TRUE(store->GetTaskIssue(Id(1), &issue).ok());
  EXPECT_EQ(issue, Issue(1));
}

// Version 1 kept a task's end in its state record; that still reads the same, so a version 1
// database opens as is and is marked version 2 (an older build then refuses it).
TEST_F(RocksStoreTest, OpensFormatVersion1AndMarksItVersion2) {
  CreateWithData();
  {
    RawDb raw(path(), kAllCfs);
    std::string v;
    codec::EncodeFormatVersion(kFormatVersionReadable, &v);
    raw.Put("meta", "format_version", v);
  }
  {
    auto store = OpenOk();
    TaskIssueRecord issue;
    ASSERT_TRUE(store->GetTaskIssue(Id(1), &issue).ok());
    EXPECT_EQ(issue, Issue(1));
  }
  RawDb raw(path(), kAllCfs);
  std::string version;
  codec::EncodeFormatVersion(kFormatVersion, &version);
  EXPECT_EQ(raw.Get("meta", "format_version"), version);
}

// Until 2026-11-22 `tasks` had a 16-byte prefix extractor (for its hash memtable), so its tables
// carry prefix filters. The store, which no longer sets one, reads them as they are.
TEST_F(RocksStoreTest, ReadsTasksTablesWrittenWithTheOldPrefixExtractor) {
  CreateWithData();
  {
    rocksdb::ColumnFamilyOptions old_tasks;
    old_tasks.prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(codec::kTaskIdBytes));
    rocksdb::BlockBasedTableOptions t;
    t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
    old_tasks.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
    RawDb raw(path(), kAllCfs, false, {{"tasks", old_tasks}});
    raw.CompactAll("tasks");
  }
  auto store = OpenOk();
  TaskIssueRecord issue;
  ASSERT_TRUE(store->GetTaskIssue(Id(1), &issue).ok());
  EXPECT_EQ(issue, Issue(1));
  EXPECT_TRUE(store->GetTaskIssue(Id(2), &issue).IsNotFound());
}

TEST_F(RocksStoreTest, RefusesNewerFormatVersionWithoutChangingFiles) {
  CreateWithData();
  {
    RawDb raw(path(), kAllCfs);
    std::string v;
    codec::EncodeFormatVersion(kFormatVersionSealed + 1, &v);
    raw.Put("meta", "format_version", v);
  }
  ExpectRefused(Status::Code::kInvalidArgument,
                "format version " + std::to_string(kFormatVersionSealed + 1));
  RawDb raw(path(), kAllCfs);  // and the data is still there
  char key[codec::kTaskKeyBytes];
  codec::EncodeTaskKey(Id(1), codec::TaskKeyKind::kIssue, key);
  EXPECT_EQ(raw.Get("tasks", std::string(key, sizeof(key)))[0], codec::kRecordVersion);
}

TEST_F(RocksStoreTest, RefusesUnreadableFormatVersion) {
  CreateWithData();
  { RawDb(path(), kAllCfs).Put("meta", "format_version", "v1"); }
  ExpectRefused(Status::Code::kCorruption, "format version");
}

TEST_F(RocksStoreTest, RefusesMissingColumnFamily) {
  CreateWithData();
  { RawDb(path(), kAllCfs).DropCf("retired"); }
  ExpectRefused(Status::Code::kInvalidArgument, "missing column family 'retired'");
}

TEST_F(RocksStoreTest, RefusesUnknownColumnFamily) {
  CreateWithData();
  { RawDb(path(), kAllCfs).CreateCf("queue_v2"); }
  ExpectRefused(Status::Code::kInvalidArgument, "unknown column family 'queue_v2'");
}

TEST_F(RocksStoreTest, RefusesAForeignRocksDb) {
  { RawDb(path(), {"default"}, /*create=*/true).Put("default", "k", "v"); }
  ExpectRefused(Status::Code::kInvalidArgument, "missing column family");
}

TEST_F(RocksStoreTest, RefusesDataWithoutFormatVersion) {
  CreateWithData();
  { RawDb(path(), kAllCfs).Delete("meta", "format_version"); }
  ExpectRefused(Status::Code::kCorruption, "no format version");
}

// A creation that crashed after its column families but before its version write: empty, so
// it is finished at the next open rather than refused forever.
TEST_F(RocksStoreTest, EmptyDatabaseWithoutVersionIsCompleted) {
  { RawDb(path(), kAllCfs, /*create=*/true); }
  OpenOk().reset();
  RawDb raw(path(), kAllCfs);
  std::string version;
  codec::EncodeFormatVersion(kFormatVersion, &version);
  EXPECT_EQ(raw.Get("meta", "format_version"), version);
}

TEST_F(RocksStoreTest, CorruptValuesAreCorruptionNotCrashes) {
  CreateWithData();
  {
    RawDb raw(path(), kAllCfs);
    char key[codec::kTaskKeyBytes];
    codec::EncodeTaskKey(Id(1), codec::TaskKeyKind::kState, key);
    raw.Put("tasks", std::string(key, sizeof(key)), "\x01\x09");
    char id[codec::kTaskIdBytes];
    codec::EncodeTaskId(Id(1), id);
    raw.Put("live", std::string(id, sizeof(id)), "\x01");
    raw.Put("live", "short-key", "");
    char seq[codec::kSeqKeyBytes];
    codec::EncodeSeqKey(1, seq);
    raw.Put("events", std::string(seq, sizeof(seq)), std::string(3, '\xff'));
    raw.Put("idem", "k", "\x02");
    raw.Put("meta", "counters", "\x01\x80");
  }
  auto store = OpenOk();
  TaskStateRecord state;
  EXPECT_EQ(store->GetTaskState(Id(1), &state).code(), Status::Code::kCorruption);
  EXPECT_EQ(store->ScanLive([](const TaskId&, const LiveRecord&) {}).code(),
            Status::Code::kCorruption);
  std::vector<EventRecord> events;
  EXPECT_EQ(store->ReadEvents(1, 10, &events).code(), Status::Code::kCorruption);
  TaskId id;
  EXPECT_EQ(store->FindIdempotencyKey("k", &id).code(), Status::Code::kCorruption);
  StoreMeta meta;
  EXPECT_EQ(store->LoadMeta(&meta).code(), Status::Code::kCorruption);
}

// Payloads of at least blob_min_bytes leave the LSM for blob files (written at flush: the clean
// close flushes every memtable).
TEST_F(RocksStoreTest, LargeValuesGoToBlobFiles) {
  {
    auto store = OpenOk();
    auto b = store->NewBatch();
    for (uint64_t i = 1; i <= 20; ++i) {
      b->PutTaskIssue(Id(i), Issue(i, 8 << 10));
      b->AppendEvent(Event(i, 8 << 10));
    }
    ASSERT_TRUE(store->Write(b.get(), true).ok());
  }
  auto store = OpenOk();
  store.reset();
  int blobs = 0;
  for (const auto& e : std::filesystem::directory_iterator(path())) {
    blobs += e.path().extension() == ".blob";
  }
  EXPECT_GE(blobs, 1);
  store = OpenOk();
  TaskIssueRecord issue;
  ASSERT_TRUE(store->GetTaskIssue(Id(20), &issue).ok());
  EXPECT_EQ(issue, Issue(20, 8 << 10));
  std::vector<EventRecord> events;
  ASSERT_TRUE(store->ReadEvents(1, 100, &events).ok());
  ASSERT_EQ(events.size(), 20u);
  EXPECT_EQ(events[19], Event(20, 8 << 10));
}

// RocksStoreTestHooks::flush_on_close = false (the benchmarks' stand-in for kill -9) leaves the
// data only in the WAL, and the next open replays it. Proof: without the WAL files it would be
// gone; with them it is all there.
TEST_F(RocksStoreTest, WithoutFlushOnCloseTheNextOpenReplaysTheWal) {
  auto write_and_close = [&] {
    RocksStoreOptions o;
    o.path = path();
    RocksStoreTestHooks hooks;
    hooks.flush_on_close = false;
    std::unique_ptr<Store> store;
    ASSERT_TRUE(OpenRocksStoreForTesting(o, hooks, &store).ok());
    auto b = store->NewBatch();
    for (uint64_t i = 1; i <= 50; ++i) b->PutTaskIssue(Id(i), Issue(i));
    ASSERT_TRUE(store->Write(b.get(), /*sync=*/true).ok());
  };
  write_and_close();
  {
    auto store = OpenOk();  // replays, and flushes at its clean close
    for (uint64_t i = 1; i <= 50; ++i) {
      TaskIssueRecord issue;
      ASSERT_TRUE(store->GetTaskIssue(Id(i), &issue).ok()) << i;
      EXPECT_EQ(issue, Issue(i));
    }
  }
  std::filesystem::remove_all(path());
  write_and_close();
  for (const auto& e : std::filesystem::directory_iterator(path())) {
    if (e.path().extension() == ".log") std::filesystem::remove(e.path());
  }
  auto store = OpenOk();
  TaskIssueRecord issue;
  EXPECT_TRUE(store->GetTaskIssue(Id(1), &issue).IsNotFound()) << "it was only in the WAL";
}

// With RocksStoreOptions::replay_open_min_wal_bytes = 0, a crash's WAL is replayed by a
// preliminary open whose `tasks` memtable is the prefix-sorted vector; that open flushes
// everything, so the real open finds it all in tables. Every record kind must come back: point
// reads of tasks, live entries in id order, events. The preliminary open leaves its own LOG
// behind (rotated to LOG.old.*), which proves it ran.
TEST_F(RocksStoreTest, APreliminaryReplayOpenKeepsEverythingTheWalHeld) {
  {
    RocksStoreOptions o;
    o.path = path();
    RocksStoreTestHooks hooks;
    hooks.flush_on_close = false;
    std::unique_ptr<Store> store;
    ASSERT_TRUE(OpenRocksStoreForTesting(o, hooks, &store).ok());
    for (uint64_t round = 0; round < 4; ++round) {
      auto b = store->NewBatch();
      for (uint64_t i = 1 + round * 200; i <= 200 + round * 200; ++i) {
        // Ids in reverse insertion order within a batch: the memtables must sort them.
        const uint64_t id = 1000 - i;
        b->PutTaskIssue(Id(id), Issue(id, id % 97 == 0 ? 4096 : 40));
        b->PutTaskState(Id(id), State(id, TaskState::kStarted));
        b->PutLive(Id(id), Live(id));
        b->AppendEvent(Event(i));
      }
      ASSERT_TRUE(store->Write(b.get(), /*sync=*/true).ok());
    }
  }
  auto count_old_logs = [&] {
    size_t n = 0;
    for (const auto& e : std::filesystem::directory_iterator(path())) {
      n += e.path().filename().string().rfind("LOG.old.", 0) == 0;
    }
    return n;
  };
  const size_t old_logs = count_old_logs();
  RocksStoreOptions o;
  o.path = path();
  o.replay_open_min_wal_bytes = 0;
  std::unique_ptr<Store> store;
  ASSERT_TRUE(OpenRocksStore(o, &store).ok());
  EXPECT_EQ(count_old_logs(), old_logs + 2) << "the preliminary open and the real one";
  for (uint64_t i = 1; i <= 800; ++i) {
    const uint64_t id = 1000 - i;
    TaskIssueRecord issue;
    ASSERT_TRUE(store->GetTaskIssue(Id(id), &issue).ok()) << id;
    EXPECT_EQ(issue, Issue(id, id % 97 == 0 ? 4096 : 40));
    TaskStateRecord state;
    ASSERT_TRUE(store->GetTaskState(Id(id), &state).ok()) << id;
    EXPECT_EQ(state, State(id, TaskState::kStarted));
  }
  std::vector<TaskId> live;
  ASSERT_TRUE(
      store->ScanLive([&](const TaskId& id, const LiveRecord&) { live.push_back(id); }).ok());
  std::set<TaskId> want;  // TaskId's order is the key order ScanLive promises
  for (uint64_t id = 200; id < 1000; ++id) want.insert(Id(id));
  EXPECT_EQ(live, std::vector<TaskId>(want.begin(), want.end()));
  std::vector<EventRecord> events;
  ASSERT_TRUE(store->ReadEvents(1, 1000, &events).ok());
  ASSERT_EQ(events.size(), 800u);
  EXPECT_EQ(events.back(), Event(800));
}

// Every side_flush_every_bytes written, the store switches the side column families (meta is
// written by every batch here) to a new memtable, and so to a new WAL file, so that they do not
// keep old WAL files alive. With the default (32 MiB) a small write switches nothing.
TEST_F(RocksStoreTest, SideColumnFamiliesFlushEverySoManyBytes) {
  for (uint64_t every : {uint64_t{32} << 20, uint64_t{1}}) {
    SCOPED_TRACE("side_flush_every_bytes " + std::to_string(every));
    std::filesystem::remove_all(path());
    RocksStoreOptions o;
    o.path = path();
    o.side_flush_every_bytes = every;
    std::unique_ptr<Store> store;
    ASSERT_TRUE(OpenRocksStore(o, &store).ok());
    auto wal_number = [&] {
      std::unique_ptr<rocksdb::LogFile> wal;
      EXPECT_TRUE(RocksDbOf(store.get())->GetCurrentWalFile(&wal).ok());
      return wal ? wal->LogNumber() : 0;
    };
    const uint64_t before = wal_number();
    for (uint64_t i = 1; i <= 3; ++i) {
      auto b = store->NewBatch();
      b->PutTaskIssue(Id(i), Issue(i));
      b->PutCounters(/*next_event_seq=*/i, /*next_activity_id=*/1, /*next_queue_seq=*/i);
      ASSERT_TRUE(store->Write(b.get(), /*sync=*/true).ok());
    }
    if (every == 1) {
      EXPECT_GE(wal_number(), before + 3) << "one switch per write";
    } else {
      EXPECT_EQ(wal_number(), before);
    }
    StoreMeta meta;
    ASSERT_TRUE(store->LoadMeta(&meta).ok());
    EXPECT_EQ(meta.next_event_seq, 3u);
  }
}

// StoreStats counts what RocksDB did underneath: exactly one write-ahead log sync per synced
// write and none for an unsynced one (no flush runs here to sync a closed log).
TEST_F(RocksStoreTest, StatsCountOneWalSyncPerSyncedWrite) {
  auto store = OpenOk();
  const StoreStats before = store->Stats();
  constexpr uint64_t kSynced = 5;
  for (uint64_t i = 1; i <= kSynced; ++i) {
    auto b = store->NewBatch();
    b->PutTaskIssue(Id(i), Issue(i));
    ASSERT_TRUE(store->Write(b.get(), /*sync=*/true).ok());
  }
  const StoreStats synced = store->Stats();
  EXPECT_EQ(LatencyCount(synced.wal_sync_us) - LatencyCount(before.wal_sync_us), kSynced);
  EXPECT_GT(synced.wal_sync_max_us, 0u);
  auto unsynced = store->NewBatch();
  unsynced->PutTaskIssue(Id(100), Issue(100));
  ASSERT_TRUE(store->Write(unsynced.get(), /*sync=*/false).ok());
  EXPECT_EQ(LatencyCount(store->Stats().wal_sync_us), LatencyCount(synced.wal_sync_us));
  EXPECT_EQ(store->Stats().flushes, 0u);
}

// Flushes and compactions reach StoreStats: a side flush after every write (meta is rewritten
// by each) piles level-0 tables until RocksDB compacts them. Bounded polls: both run on
// RocksDB's background threads.
TEST_F(RocksStoreTest, StatsCountFlushesAndCompactions) {
  RocksStoreOptions o;
  o.path = path();
  o.side_flush_every_bytes = 1;
  std::unique_ptr<Store> store;
  ASSERT_TRUE(OpenRocksStoreForTesting(o, RocksStoreTestHooks(), &store).ok());
  const auto WaitFor = [&](const std::function<bool(const StoreStats&)>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!done(store->Stats())) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
  };
  // Level-0 tables pile up until RocksDB compacts them; the first compaction may be a trivial
  // move (files moved down a level: nothing read or written), so flush on until one reads.
  constexpr uint64_t kFlushesMax = 64;
  uint64_t i = 1;
  for (; i <= kFlushesMax && store->Stats().compaction_read_bytes == 0; ++i) {
    auto b = store->NewBatch();
    b->PutTaskIssue(Id(i), Issue(i));
    b->PutCounters(i + 1, 2, 3);
    ASSERT_TRUE(store->Write(b.get(), true).ok());
    ASSERT_TRUE(WaitFor([&](const StoreStats& s) { return s.flushes >= i; })) << "flush " << i;
  }
  EXPECT_LE(i, kFlushesMax) << "no compaction read anything after " << kFlushesMax << " flushes";
  const StoreStats s = store->Stats();
  EXPECT_GE(s.compactions, 1u);
  EXPECT_GT(s.compaction_write_bytes, 0u);
  EXPECT_EQ(s.write_stalls_stopped, 0u);
}

// A clean close flushes every column family: the next open has no WAL to replay. Proof: with
// every WAL file deleted after the close, the reopened store still holds everything.
TEST_F(RocksStoreTest, CleanCloseFlushesSoNothingIsOnlyInTheWal) {
  {
    auto store = OpenOk();
    auto b = store->NewBatch();
    b->PutActivity({1, "act", 5});
    for (uint64_t i = 1; i <= 100; ++i) {
      b->PutTaskIssue(Id(i), Issue(i, i == 7 ? 4096 : 40));  // one blob
      b->PutTaskState(Id(i), State(i, TaskState::kStarted));
      b->PutLive(Id(i), Live(i));
      b->AppendEvent(Event(i));
    }
    b->PutIdempotencyKey("k", Id(3));
    b->PutRetired(50, Id(9), "k");
    b->PutConsumer("c", 4);
    b->PutCounters(101, 2, 3);
    ASSERT_TRUE(store->Write(b.get(), /*sync=*/false).ok());  // not even synced
  }
  int wals = 0;
  for (const auto& e : std::filesystem::directory_iterator(path())) {
    if (e.path().extension() == ".log") {
      std::filesystem::remove(e.path());
      ++wals;
    }
  }
  EXPECT_GE(wals, 1);
  auto store = OpenOk();
  for (uint64_t i = 1; i <= 100; ++i) {
    TaskIssueRecord issue;
    TaskStateRecord state;
    ASSERT_TRUE(store->GetTaskIssue(Id(i), &issue).ok()) << i;
    EXPECT_EQ(issue, Issue(i, i == 7 ? 4096 : 40));
    ASSERT_TRUE(store->GetTaskState(Id(i), &state).ok()) << i;
    EXPECT_EQ(state, State(i, TaskState::kStarted));
  }
  std::vector<std::pair<TaskId, LiveRecord>> live;
  ASSERT_TRUE(
      store->ScanLive([&](const TaskId& id, const LiveRecord& r) { live.emplace_back(id, r); })
          .ok());
  ASSERT_EQ(live.size(), 100u);
  for (const auto& [id, r] : live) {
    uint64_t i = ~id.lo;  // Id(i) = {.., ~i}
    EXPECT_EQ(id, Id(i));
    EXPECT_EQ(r, Live(i)) << i;
  }
  std::vector<EventRecord> events;
  ASSERT_TRUE(store->ReadEvents(1, 1000, &events).ok());
  ASSERT_EQ(events.size(), 100u);
  EXPECT_EQ(events[99], Event(100));
  TaskId id;
  ASSERT_TRUE(store->FindIdempotencyKey("k", &id).ok());
  EXPECT_EQ(id, Id(3));
  size_t retired = 0;
  ASSERT_TRUE(store
                  ->ScanRetired(51, 10,
                                [&](int64_t ended_ms, const TaskId& t, std::string_view key) {
                                  EXPECT_EQ(ended_ms, 50);
                                  EXPECT_EQ(t, Id(9));
                                  EXPECT_EQ(key, "k");
                                  ++retired;
                                })
                  .ok());
  EXPECT_EQ(retired, 1u);
  StoreMeta meta;
  ASSERT_TRUE(store->LoadMeta(&meta).ok());
  EXPECT_EQ(meta.next_event_seq, 101u);
  EXPECT_EQ(meta.next_queue_seq, 3u);
  ASSERT_EQ(meta.consumers.size(), 1u);
  EXPECT_EQ(meta.consumers[0], (std::pair<std::string, uint64_t>("c", 4)));
  std::vector<ActivityRecord> activities;
  ASSERT_TRUE(store->LoadActivities(&activities).ok());
  ASSERT_EQ(activities.size(), 1u);
  EXPECT_EQ(activities[0], (ActivityRecord{1, "act", 5}));
}

// Live records written before LiveRecord::flags existed (no trailing flags byte) are read back
// with flags = kLiveFlagsUnknown; a record rewritten by this build keeps its flags.
TEST_F(RocksStoreTest, LiveRecordsWithoutFlagsByteReadAsFlagsUnknown) {
  CreateWithData();
  std::string old_value;
  codec::EncodeLive(Live(5), &old_value);
  old_value.pop_back();  // the earlier layout
  {
    RawDb raw(path(), kAllCfs);
    char id[codec::kTaskIdBytes];
    codec::EncodeTaskId(Id(5), id);
    raw.Put("live", std::string(id, sizeof(id)), old_value);
  }
  auto store = OpenOk();
  auto b = store->NewBatch();
  b->PutLive(Id(6), Live(6));
  ASSERT_TRUE(store->Write(b.get(), true).ok());
  std::map<TaskId, LiveRecord> got;
  ASSERT_TRUE(store->ScanLive([&](const TaskId& id, const LiveRecord& r) { got[id] = r; }).ok());
  ASSERT_EQ(got.size(), 2u);
  LiveRecord want = Live(5);
  want.flags = kLiveFlagsUnknown;
  EXPECT_EQ(got[Id(5)], want);
  EXPECT_EQ(got[Id(6)], Live(6));
}

// Counts the range tombstones the store wrote to `events`, from the WAL.
class RangeDeleteCounter : public rocksdb::WriteBatch::Handler {
 public:
  rocksdb::Status DeleteRangeCF(uint32_t /*cf*/, const rocksdb::Slice& begin,
                                const rocksdb::Slice& end) override {
    ranges.emplace_back(codec::DecodeSeqKeyUnchecked(begin.data()),
                        codec::DecodeSeqKeyUnchecked(end.data()));
    return rocksdb::Status::OK();
  }
  rocksdb::Status PutCF(uint32_t, const rocksdb::Slice&, const rocksdb::Slice&) override {
    return rocksdb::Status::OK();
  }
  rocksdb::Status DeleteCF(uint32_t, const rocksdb::Slice&) override {
    return rocksdb::Status::OK();
  }
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
};

// Trimming after every acknowledgement must not write a range tombstone per trim: they are
// coalesced into runs of at least kEventsPerRangeDeleteMin that do not overlap.
TEST_F(RocksStoreTest, TrimsAreCoalescedIntoFewNonOverlappingRangeDeletes) {
  constexpr uint64_t kEvents = 5000;
  {
    auto fs = std::make_shared<FaultFs>();
    auto store = OpenOk(fs);
    auto b = store->NewBatch();
    for (uint64_t seq = 1; seq <= kEvents; ++seq) {
      b->Clear();
      b->AppendEvent(Event(seq, 4));
      if (seq > 3) b->TrimEventsBelow(seq - 2);  // a trim in every batch
      ASSERT_TRUE(store->Write(b.get(), false).ok());
    }
    // Close as after a kill -9: a clean close would flush and drop the WAL this test reads.
    // (Nothing is dropped afterwards: every byte written is still in the files.)
    fs->SetActive(false);
    store.reset();
    fs->SetActive(true);
  }
  rocksdb::Options o;
  o.avoid_flush_during_recovery = true;  // keep the WAL to read it back
  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  for (const auto& name : kAllCfs) descs.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::OpenForReadOnly(o, path(), descs, &handles, &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  std::unique_ptr<rocksdb::TransactionLogIterator> wal;
  ASSERT_TRUE(db->GetUpdatesSince(0, &wal).ok());
  RangeDeleteCounter counter;
  for (; wal->Valid(); wal->Next()) {
    ASSERT_TRUE(wal->GetBatch().writeBatchPtr->Iterate(&counter).ok());
  }
  for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  ASSERT_FALSE(counter.ranges.empty());
  EXPECT_LE(counter.ranges.size(), kEvents / limits::kEventsPerRangeDeleteMin + 1);
  uint64_t end = 0;
  for (const auto& [from, to] : counter.ranges) {
    EXPECT_EQ(from, end);  // each run starts where the previous ended
    EXPECT_GE(to - from, limits::kEventsPerRangeDeleteMin);
    end = to;
  }
}

// The real path: a WAL sync fails inside RocksDB. The store reports that error, then refuses
// every later write without touching a file.
TEST_F(RocksStoreTest, SyncFailurePoisonsAndNothingMoreReachesTheFiles) {
  auto fs = std::make_shared<FaultFs>();
  auto store = OpenOk(fs);
  auto b = store->NewBatch();
  b->PutTaskIssue(Id(1), Issue(1));
  ASSERT_TRUE(store->Write(b.get(), true).ok());
  fs->FailSyncs(0);
  b->Clear();
  b->PutTaskIssue(Id(2), Issue(2));
  Status s = store->Write(b.get(), true);
  EXPECT_EQ(s.code(), Status::Code::kIoError) << s.ToString();
  EXPECT_NE(s.message().find("injected sync failure"), std::string::npos) << s.ToString();
  fs->ClearFailures();
  const uint64_t appends = fs->append_count();
  const uint64_t syncs = fs->sync_count();
  for (int i = 0; i < 3; ++i) {
    b->Clear();
    b->PutTaskIssue(Id(3), Issue(3));
    EXPECT_EQ(store->Write(b.get(), i % 2 == 0).code(), Status::Code::kPoisoned);
  }
  EXPECT_EQ(fs->append_count(), appends);
  EXPECT_EQ(fs->sync_count(), syncs);
  TaskIssueRecord issue;
  EXPECT_TRUE(store->GetTaskIssue(Id(1), &issue).ok());
  EXPECT_TRUE(store->GetTaskIssue(Id(3), &issue).IsNotFound());
  // Closing a poisoned store does not flush its memtables either: not one more byte.
  store.reset();
  EXPECT_EQ(fs->append_count(), appends);
  EXPECT_EQ(fs->sync_count(), syncs);
  for (const auto& e : std::filesystem::directory_iterator(path())) {
    EXPECT_NE(e.path().extension(), ".sst") << e.path();
  }
}

TEST_F(RocksStoreTest, AppendFailureOfUnsyncedWritePoisons) {
  auto fs = std::make_shared<FaultFs>();
  auto store = OpenOk(fs);
  fs->FailAppends(0);
  auto b = store->NewBatch();
  b->AppendEvent(Event(1));
  EXPECT_EQ(store->Write(b.get(), false).code(), Status::Code::kIoError);
  fs->ClearFailures();
  EXPECT_EQ(store->Write(b.get(), true).code(), Status::Code::kPoisoned);
  std::vector<EventRecord> events;
  ASSERT_TRUE(store->ReadEvents(1, 10, &events).ok());
  EXPECT_TRUE(events.empty());
}

// sync_default = false is the throwaway `--durability=none` mode: sync=true does not sync.
TEST_F(RocksStoreTest, SyncDefaultFalseNeverSyncs) {
  auto fs = std::make_shared<FaultFs>();
  auto store = OpenOk(fs, /*sync_default=*/false);
  const uint64_t syncs = fs->sync_count();
  auto b = store->NewBatch();
  b->PutTaskIssue(Id(1), Issue(1));
  ASSERT_TRUE(store->Write(b.get(), true).ok());
  EXPECT_EQ(fs->sync_count(), syncs);
  EXPECT_GT(fs->unsynced_bytes(), 0u);
  fs->SetActive(false);
  store.reset();
  ASSERT_TRUE(fs->DropUnsyncedData().ok());
  fs->SetActive(true);
  store = OpenOk(fs);
  TaskIssueRecord issue;
  EXPECT_TRUE(store->GetTaskIssue(Id(1), &issue).IsNotFound());
}

// The durability contract under power cuts. Batches of several mutations (task records, live
// entry, event, counters) are written with a random mix of sync=true and sync=false; the power
// goes at the end (optionally tearing the unsynced tail at a random byte). After reopening:
//  - every batch up to the last synced one is present entirely;
//  - the batches after it form a prefix (the WAL is one ordered log), each entire or absent:
//    no batch is ever half present.
TEST_F(RocksStoreTest, PowerCutKeepsEverySyncedBatchAndNoHalfBatch) {
  for (uint64_t seed = 0; seed < 12; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::filesystem::remove_all(path());
    auto fs = std::make_shared<FaultFs>();
    std::mt19937_64 rng(seed);
    constexpr uint64_t kBatches = 60;
    constexpr uint64_t kPerBatch = 5;
    uint64_t last_synced = 0;  // batches are numbered from 1
    {
      auto store = OpenOk(fs);
      auto b = store->NewBatch();
      for (uint64_t n = 1; n <= kBatches; ++n) {
        b->Clear();
        for (uint64_t k = 0; k < kPerBatch; ++k) {
          const uint64_t i = (n - 1) * kPerBatch + k + 1;
          b->PutTaskIssue(Id(i), Issue(i, rng() % 3000));  // some past blob_min_bytes
          b->PutTaskState(Id(i), State(i, TaskState::kStarted));
          b->PutLive(Id(i), Live(i));
          b->AppendEvent(Event(i));
        }
        b->PutCounters(n * kPerBatch + 1, 1, n);
        // Mostly unsynced near the end, never in the last three: there is always a tail to lose.
        const bool sync = n < kBatches - 10 ? rng() % 3 == 0 : n <= kBatches - 3 && rng() % 4 == 0;
        ASSERT_TRUE(store->Write(b.get(), sync).ok());
        if (sync) last_synced = n;
      }
      fs->SetActive(false);  // power off; closing the store can write nothing more
    }
    ASSERT_GT(fs->unsynced_bytes(), 0u);
    ASSERT_TRUE(fs->DropUnsyncedData(seed % 2 == 0 ? 0 : seed).ok());
    fs->SetActive(true);

    auto store = OpenOk(fs);
    uint64_t present_batches = 0;
    for (uint64_t n = 1; n <= kBatches; ++n) {
      uint64_t present = 0;
      for (uint64_t k = 0; k < kPerBatch; ++k) {
        const uint64_t i = (n - 1) * kPerBatch + k + 1;
        TaskIssueRecord issue;
        TaskStateRecord state;
        Status a = store->GetTaskIssue(Id(i), &issue);
        Status c = store->GetTaskState(Id(i), &state);
        ASSERT_TRUE(a.ok() || a.IsNotFound()) << a.ToString();
        ASSERT_EQ(a.ok(), c.ok()) << "batch " << n << " half present";
        present += a.ok();
      }
      ASSERT_TRUE(present == 0 || present == kPerBatch) << "batch " << n << " half present";
      if (present == 0) break;
      ++present_batches;
    }
    EXPECT_GE(present_batches, last_synced);
    // Nothing past the first missing batch: the survivors are a prefix.
    uint64_t live = 0;
    ASSERT_TRUE(store->ScanLive([&](const TaskId&, const LiveRecord&) { ++live; }).ok());
    EXPECT_EQ(live, present_batches * kPerBatch);
    std::vector<EventRecord> events;
    ASSERT_TRUE(store->ReadEvents(1, 100'000, &events).ok());
    EXPECT_EQ(events.size(), present_batches * kPerBatch);
    StoreMeta meta;
    ASSERT_TRUE(store->LoadMeta(&meta).ok());
    EXPECT_EQ(meta.next_event_seq, present_batches * kPerBatch + 1);
    EXPECT_EQ(meta.next_queue_seq, std::max<uint64_t>(present_batches, 1));
    // With no tearing, exactly the synced prefix survives: proof the cut really dropped data.
    if (seed % 2 == 0) {
      EXPECT_EQ(present_batches, last_synced);
    }
    EXPECT_LT(present_batches, kBatches);
    // And the store keeps working after recovery.
    auto b = store->NewBatch();
    b->AppendEvent(Event(present_batches * kPerBatch + 1));
    ASSERT_TRUE(store->Write(b.get(), true).ok());
  }
}

}  // namespace
}  // namespace tw
