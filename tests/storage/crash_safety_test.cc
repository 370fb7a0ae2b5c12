// Crash safety of the engine on RocksDB: the library-level counterpart of tokenwheel-crashtest
// (docs/RELIABILITY.md).
//
// EngineCore (single-threaded, deterministic) runs on a RocksStore over a FaultFs in a temp dir,
// with a ManualClock. Workloads of activities, callback and activity tasks with timeouts, takes,
// heartbeats, successes, failures, cancels, idempotent retries and clock jumps keep a model of
// what was ACKNOWLEDGED: a reply counts once it was delivered (its callback ran with ok after a
// successful Commit and the test passed it on), an outcome event once the batch that made it
// durable was delivered.
//
// Kill points of one group commit (Apply... -> Expire -> Commit = Write + sync -> replies):
//   kAfterApply  commands applied, the batch never written: the core is dropped before Commit;
//   kInWrite     the write fails before the batch is durable (an append failure, a sync failure,
//                or a power cut at the WAL sync): every reply of the batch must be kUnavailable,
//                and the poisoned core must answer everything after it kUnavailable too, with
//                nothing more reaching a file;
//   kAfterSync   the batch is durable; the process dies while delivering its replies (a random
//                prefix of them got out).
// Then the process dies (the FaultFs is switched off: nothing more reaches a file) and, usually,
// the power goes too: unsynced data is dropped, sometimes torn at a random byte. The store is
// reopened on a fresh FaultFs over the same directory, a new core recovers, and the test checks:
//   1. every acknowledged transition survived exactly: store records, DescribeCmd, events;
//   2. the crashed batch is entirely present or entirely absent: the recovered store equals,
//      record for record, the store before the batch or the store after it. A shadow
//      MemoryStore receives every batch the engine writes (and the crashed one, unsynced), so it
//      knows both, including the ids of tasks whose issue was never answered. kAfterApply must
//      be absent, kAfterSync present;
//   3. outcome events are gapless from 1, one per terminal task, equal to the task records;
//   4. the recovered engine works: exactly the overdue timers fire on the first Expire (heartbeat
//      clocks restart), new commands succeed, and the workload goes on to its next crash.
// No sleeps: time comes from the ManualClock only.
// Replay one seed: TW_SEED=<n>. Run more seeds: TW_CRASH_SEEDS=<n> (default kDefaultSeeds).
// The databases live under /dev/shm when it exists, else /tmp; TW_CRASH_DIR=<dir> overrides.
#include <gtest/gtest.h>
#include <rocksdb/file_system.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/engine_core.h"
#include "engine/store.h"
#include "engine/token.h"
#include "engine/types.h"
#include "storage/fault_fs.h"
#include "storage/memory_store.h"
#include "storage/rocksdb_store.h"
#include "storage/rocksdb_store_testing.h"
#include "tests/storage/store_test_util.h"

namespace tw {

// Readable gtest output for the engine's enums (found by ADL, so in namespace tw).
static void PrintTo(TaskState s, std::ostream* os) { *os << TaskStateName(s); }
static void PrintTo(TimeoutKind k, std::ostream* os) { *os << '"' << TimeoutKindName(k) << '"'; }
static void PrintTo(ErrorCode c, std::ostream* os) { *os << ErrorCodeName(c); }

namespace {

// Plans and requests are written with designated initializers naming only the fields a test
// sets; GCC warns about the fields left to their defaults, which is the point.
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

// On tmpfs (/dev/shm) when there is one, or TW_CRASH_DIR: FaultFs decides what survives a
// crash, so the real disk's fsyncs (milliseconds each, dozens per RocksDB open) would buy nothing
// but run time.
class CrashDir : public TempDir {
 public:
  CrashDir() : TempDir("tw-crash", Base()) {}

 private:
  static std::string Base() {
    const char* env = std::getenv("TW_CRASH_DIR");
    return env != nullptr ? std::string(env) : TempDir::FastBase();
  }
};

constexpr int64_t kStartMs = 1'700'000'000'000;
constexpr uint64_t kDefaultSeeds = 30;
constexpr int kEpochsPerSeed = 4;
constexpr size_t kReadAll = 1 << 20;
constexpr char kArnPrefix[] = "arn:aws:states:us-east-1:000000000000:activity:";

std::string Str(const TaskId& id) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%016llx%016llx", static_cast<unsigned long long>(id.hi),
                static_cast<unsigned long long>(id.lo));
  return buf;
}

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 10) : fallback;
}

// Turns off RocksDB's preallocation of new files (the WAL's is tens of MiB). On tmpfs it really
// allocates and zeroes that memory, and unlike an fsync it is not something FaultFs models.
class NoPreallocationFs final : public rocksdb::FileSystemWrapper {
 public:
  explicit NoPreallocationFs(std::shared_ptr<rocksdb::FileSystem> base)
      : FileSystemWrapper(std::move(base)) {}
  const char* Name() const override { return "TwNoPreallocationFs"; }
  rocksdb::IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* dbg) override {
    return target()->NewWritableFile(fname, NoPrealloc(opts), result, dbg);
  }
  rocksdb::IOStatus ReopenWritableFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                       std::unique_ptr<rocksdb::FSWritableFile>* result,
                                       rocksdb::IODebugContext* dbg) override {
    return target()->ReopenWritableFile(fname, NoPrealloc(opts), result, dbg);
  }
  rocksdb::IOStatus ReuseWritableFile(const std::string& fname, const std::string& old_fname,
                                      const rocksdb::FileOptions& opts,
                                      std::unique_ptr<rocksdb::FSWritableFile>* result,
                                      rocksdb::IODebugContext* dbg) override {
    return target()->ReuseWritableFile(fname, old_fname, NoPrealloc(opts), result, dbg);
  }

 private:
  static rocksdb::FileOptions NoPrealloc(rocksdb::FileOptions opts) {
    opts.allow_fallocate = false;
    return opts;
  }
};

// ---------------------------------------------------------------------------------------------
// A Store decorator that logs every batch's mutations, so that the test can replay them into the
// shadow MemoryStore (written batches at once, the crashed batch on demand) and knows every task
// id and idempotency key the engine ever wrote or tried to write.

using Op = std::function<void(WriteBatch*)>;

struct Catalog {
  std::set<TaskId> task_ids;
  std::set<std::string> idem_keys;
  std::map<uint64_t, std::string> activity_names;  // internal activity id -> name
};

class RecordingBatch final : public WriteBatch {
 public:
  RecordingBatch(std::unique_ptr<WriteBatch> real, Catalog* catalog)
      : real_(std::move(real)), catalog_(catalog) {}

  WriteBatch* real() { return real_.get(); }
  const std::vector<Op>& ops() const { return ops_; }

  void PutActivity(const ActivityRecord& a) override {
    catalog_->activity_names[a.id] = a.name;
    Log([a](WriteBatch* b) { b->PutActivity(a); });
  }
  void DeleteActivity(uint64_t activity_id) override {
    Log([activity_id](WriteBatch* b) { b->DeleteActivity(activity_id); });
  }
  void PutTaskIssue(const TaskId& id, const TaskIssueRecord& r) override {
    catalog_->task_ids.insert(id);
    if (!r.idempotency_key.empty()) catalog_->idem_keys.insert(r.idempotency_key);
    Log([id, r](WriteBatch* b) { b->PutTaskIssue(id, r); });
  }
  void PutTaskState(const TaskId& id, const TaskStateRecord& r) override {
    catalog_->task_ids.insert(id);
    Log([id, r](WriteBatch* b) { b->PutTaskState(id, r); });
  }
  void PutTaskEnd(const TaskId& id, const TaskStateRecord& r) override {
    catalog_->task_ids.insert(id);
    Log([id, r](WriteBatch* b) { b->PutTaskEnd(id, r); });
  }
  void PutLive(const TaskId& id, const LiveRecord& r) override {
    catalog_->task_ids.insert(id);
    Log([id, r](WriteBatch* b) { b->PutLive(id, r); });
  }
  void DeleteLive(const TaskId& id) override {
    Log([id](WriteBatch* b) { b->DeleteLive(id); });
  }
  void PutIdempotencyKey(std::string_view key, const TaskId& id) override {
    catalog_->idem_keys.insert(std::string(key));
    Log([k = std::string(key), id](WriteBatch* b) { b->PutIdempotencyKey(k, id); });
  }
  void AppendEvent(const EventRecord& e) override {
    Log([e](WriteBatch* b) { b->AppendEvent(e); });
  }
  void PutRetired(int64_t ended_ms, const TaskId& id, std::string_view key) override {
    Log([ended_ms, id, k = std::string(key)](WriteBatch* b) { b->PutRetired(ended_ms, id, k); });
  }
  void DeleteTask(int64_t ended_ms, const TaskId& id, std::string_view key) override {
    Log([ended_ms, id, k = std::string(key)](WriteBatch* b) { b->DeleteTask(ended_ms, id, k); });
  }
  void PutConsumer(std::string_view name, uint64_t acked_seq) override {
    Log([n = std::string(name), acked_seq](WriteBatch* b) { b->PutConsumer(n, acked_seq); });
  }
  void DeleteConsumer(std::string_view name) override {
    Log([n = std::string(name)](WriteBatch* b) { b->DeleteConsumer(n); });
  }
  void TrimEventsBelow(uint64_t seq) override {
    Log([seq](WriteBatch* b) { b->TrimEventsBelow(seq); });
  }
  void PutCounters(uint64_t next_event_seq, uint64_t next_activity_id,
                   uint64_t next_queue_seq) override {
    Log([=](WriteBatch* b) { b->PutCounters(next_event_seq, next_activity_id, next_queue_seq); });
  }
  size_t Count() const override { return real_->Count(); }
  size_t ByteSize() const override { return real_->ByteSize(); }
  void Clear() override {
    real_->Clear();
    ops_.clear();
  }

 private:
  // Applies the mutation to the real batch and keeps it for replay.
  void Log(Op op) {
    op(real_.get());
    ops_.push_back(std::move(op));
  }

  std::unique_ptr<WriteBatch> real_;
  Catalog* catalog_;
  std::vector<Op> ops_;
};

// Writes go to the real store; each one that succeeds is mirrored, synced, into the shadow.
class RecordingStore final : public Store {
 public:
  RecordingStore(std::unique_ptr<Store> real, MemoryStore* shadow, Catalog* catalog)
      : real_(std::move(real)), shadow_(shadow), catalog_(catalog) {}

  Store* real() { return real_.get(); }
  // The mutations of the batch being built now (the core builds all of them in one object).
  std::vector<Op> building_ops() const { return building_ ? building_->ops() : std::vector<Op>(); }
  // The mutations of the first Write that failed, if any.
  const std::optional<std::vector<Op>>& failed_ops() const { return failed_ops_; }

  std::unique_ptr<WriteBatch> NewBatch() override {
    auto b = std::make_unique<RecordingBatch>(real_->NewBatch(), catalog_);
    building_ = b.get();
    return b;
  }
  Status Write(WriteBatch* batch, bool sync) override {
    auto* b = static_cast<RecordingBatch*>(batch);
    Status s = real_->Write(b->real(), sync);
    if (s.ok()) {
      Replay(shadow_, b->ops(), /*sync=*/true);
    } else if (!failed_ops_) {
      failed_ops_ = b->ops();
    }
    return s;
  }
  Status LoadMeta(StoreMeta* meta) override { return real_->LoadMeta(meta); }
  Status LoadActivities(std::vector<ActivityRecord>* out) override {
    return real_->LoadActivities(out);
  }
  Status ScanLive(const std::function<void(const TaskId&, const LiveRecord&)>& fn) override {
    return real_->ScanLive(fn);
  }
  Status GetTaskIssue(const TaskId& id, TaskIssueRecord* out) override {
    return real_->GetTaskIssue(id, out);
  }
  Status GetTaskEnd(const TaskId& id, TaskStateRecord* out) override {
    return real_->GetTaskEnd(id, out);
  }
  Status GetTaskState(const TaskId& id, TaskStateRecord* out) override {
    return real_->GetTaskState(id, out);
  }
  Status FindIdempotencyKey(std::string_view key, TaskId* out) override {
    return real_->FindIdempotencyKey(key, out);
  }
  Status ScanRetired(
      int64_t before_ms, size_t max,
      const std::function<void(int64_t, const TaskId&, std::string_view)>& fn) override {
    return real_->ScanRetired(before_ms, max, fn);
  }
  Status ReadEvents(uint64_t from_seq, size_t max, std::vector<EventRecord>* out) override {
    return real_->ReadEvents(from_seq, max, out);
  }

  // Replays logged mutations into `store` as one batch.
  static void Replay(Store* store, const std::vector<Op>& ops, bool sync) {
    auto b = store->NewBatch();
    for (const Op& op : ops) op(b.get());
    Status s = store->Write(b.get(), sync);
    ASSERT_TRUE(s.ok()) << "shadow store: " << s.ToString();
  }

 private:
  std::unique_ptr<Store> real_;
  MemoryStore* shadow_;
  Catalog* catalog_;
  RecordingBatch* building_ = nullptr;
  std::optional<std::vector<Op>> failed_ops_;
};

// ---------------------------------------------------------------------------------------------
// Everything a Store holds that the engine can observe, read back record by record.

struct Dump {
  uint64_t next_event_seq = 0;
  uint64_t first_event_seq = 0;
  uint64_t next_activity_id = 0;
  uint64_t next_queue_seq = 0;
  std::vector<std::pair<std::string, uint64_t>> consumers;
  std::map<uint64_t, ActivityRecord> activities;
  std::map<TaskId, LiveRecord> live;
  std::vector<EventRecord> events;
  std::vector<std::tuple<int64_t, TaskId, std::string>> retired;
  std::map<TaskId, TaskIssueRecord> issues;  // of every cataloged task that exists
  // The state record, or for a terminal task its end record with the state record's worker and
  // started_ms: the task's recorded outcome, as Describe shows it.
  std::map<TaskId, TaskStateRecord> states;
  std::map<TaskId, TaskStateRecord> ends;  // the end records alone
  std::map<std::string, TaskId> idem;
};

bool operator==(const Dump& a, const Dump& b) {
  return std::tie(a.next_event_seq, a.first_event_seq, a.next_activity_id, a.next_queue_seq,
                  a.consumers, a.activities, a.live, a.events, a.retired, a.issues, a.states,
                  a.ends, a.idem) == std::tie(b.next_event_seq, b.first_event_seq,
                                              b.next_activity_id, b.next_queue_seq, b.consumers,
                                              b.activities, b.live, b.events, b.retired, b.issues,
                                              b.states, b.ends, b.idem);
}

void TakeDump(Store* store, const Catalog& catalog, Dump* d) {
  *d = Dump();
  StoreMeta meta;
  ASSERT_TRUE(store->LoadMeta(&meta).ok());
  d->next_event_seq = meta.next_event_seq;
  d->first_event_seq = meta.first_event_seq;
  d->next_activity_id = meta.next_activity_id;
  d->next_queue_seq = meta.next_queue_seq;
  d->consumers = meta.consumers;
  std::vector<ActivityRecord> acts;
  ASSERT_TRUE(store->LoadActivities(&acts).ok());
  for (ActivityRecord& a : acts) d->activities[a.id] = a;
  ASSERT_TRUE(store
                  ->ScanLive([&](const TaskId& id, const LiveRecord& r) {
                    EXPECT_EQ(d->live.count(id), 0u) << "live entry listed twice";
                    d->live[id] = r;
                  })
                  .ok());
  ASSERT_TRUE(store->ReadEvents(1, kReadAll, &d->events).ok());
  ASSERT_TRUE(store
                  ->ScanRetired(std::numeric_limits<int64_t>::max(), kReadAll,
                                [&](int64_t ended_ms, const TaskId& id, std::string_view key) {
                                  d->retired.emplace_back(ended_ms, id, std::string(key));
                                })
                  .ok());
  for (const TaskId& id : catalog.task_ids) {
    TaskIssueRecord issue;
    Status s = store->GetTaskIssue(id, &issue);
    ASSERT_TRUE(s.ok() || s.IsNotFound()) << s.ToString();
    if (s.ok()) d->issues[id] = issue;
    TaskStateRecord state;
    s = store->GetTaskState(id, &state);
    ASSERT_TRUE(s.ok() || s.IsNotFound()) << s.ToString();
    const bool has_state = s.ok();
    if (has_state) d->states[id] = state;
    TaskStateRecord end;
    s = store->GetTaskEnd(id, &end);
    ASSERT_TRUE(s.ok() || s.IsNotFound()) << s.ToString();
    if (s.ok()) {
      ASSERT_TRUE(IsTerminal(end.state)) << "end record of a task that did not end";
      d->ends[id] = end;
      if (has_state) {
        end.worker = state.worker;
        end.started_ms = state.started_ms;
      }
      d->states[id] = end;
    }
  }
  for (const std::string& key : catalog.idem_keys) {
    TaskId id;
    Status s = store->FindIdempotencyKey(key, &id);
    ASSERT_TRUE(s.ok() || s.IsNotFound()) << s.ToString();
    if (s.ok()) d->idem[key] = id;
  }
}

template <typename K>
std::string KeyStr(const K& k) {
  if constexpr (std::is_same_v<K, TaskId>) {
    return Str(k);
  } else if constexpr (std::is_same_v<K, std::string>) {
    return "'" + k + "'";
  } else {
    return std::to_string(k);
  }
}

template <typename K, typename V>
void DiffMap(const char* what, const std::map<K, V>& want, const std::map<K, V>& got,
             std::ostringstream& out) {
  int shown = 0;
  for (const auto& [k, v] : want) {
    auto it = got.find(k);
    if (shown >= 5) break;
    if (it == got.end()) {
      out << "  " << what << " " << KeyStr(k) << ": missing\n";
      ++shown;
    } else if (!(it->second == v)) {
      out << "  " << what << " " << KeyStr(k) << ": differs\n";
      ++shown;
    }
  }
  for (const auto& [k, v] : got) {
    if (shown >= 5) break;
    if (want.count(k) == 0) {
      out << "  " << what << " " << KeyStr(k) << ": unexpected\n";
      ++shown;
    }
  }
}

// Where `got` differs from `want`, briefly.
std::string Diff(const Dump& want, const Dump& got, const char* name) {
  std::ostringstream out;
  out << "recovered store vs the store " << name << " the crashed batch:\n";
  auto scalar = [&](const char* what, uint64_t w, uint64_t g) {
    if (w != g) out << "  " << what << ": want " << w << ", got " << g << "\n";
  };
  scalar("meta.next_event_seq", want.next_event_seq, got.next_event_seq);
  scalar("meta.first_event_seq", want.first_event_seq, got.first_event_seq);
  scalar("meta.next_activity_id", want.next_activity_id, got.next_activity_id);
  scalar("meta.next_queue_seq", want.next_queue_seq, got.next_queue_seq);
  scalar("events", want.events.size(), got.events.size());
  scalar("retired", want.retired.size(), got.retired.size());
  if (want.consumers != got.consumers) out << "  consumers differ\n";
  DiffMap("activity", want.activities, got.activities, out);
  DiffMap("live", want.live, got.live, out);
  DiffMap("issue", want.issues, got.issues, out);
  DiffMap("state", want.states, got.states, out);
  DiffMap("end", want.ends, got.ends, out);
  DiffMap("idempotency key", want.idem, got.idem, out);
  for (size_t i = 0; i < std::min(want.events.size(), got.events.size()); ++i) {
    if (!(want.events[i] == got.events[i])) {
      out << "  event " << i + 1 << " differs\n";
      break;
    }
  }
  return out.str();
}

// The state a dump says a task is in; nullopt if it does not exist.
std::optional<TaskState> StateIn(const Dump& d, const TaskId& id) {
  if (d.issues.count(id) == 0) return std::nullopt;
  auto st = d.states.find(id);
  if (st != d.states.end() && IsTerminal(st->second.state)) return st->second.state;
  auto live = d.live.find(id);
  if (live != d.live.end()) return live->second.state;
  return std::nullopt;
}

// Check 3 and the structure around it: what one store must satisfy after any crash.
void CheckStoreInvariants(const Dump& d) {
  ASSERT_EQ(d.first_event_seq, 1u) << "nothing trims events in this test";
  ASSERT_EQ(d.next_event_seq, d.events.size() + 1) << "event counter vs events";
  std::map<TaskId, int> events_of;
  for (size_t i = 0; i < d.events.size(); ++i) {
    const EventRecord& e = d.events[i];
    ASSERT_EQ(e.seq, i + 1) << "event seqs must be gapless from 1";
    ASSERT_EQ(++events_of[e.task_id], 1) << "two events for task " << Str(e.task_id);
    auto issue = d.issues.find(e.task_id);
    ASSERT_NE(issue, d.issues.end()) << "event " << e.seq << " for a task that does not exist";
    auto st = d.states.find(e.task_id);
    ASSERT_NE(st, d.states.end()) << "event " << e.seq << " without the task's terminal record";
    const TaskStateRecord& r = st->second;
    ASSERT_TRUE(IsTerminal(r.state)) << "event " << e.seq << " for a task that is not terminal";
    EXPECT_EQ(e.state, r.state) << "event " << e.seq;
    EXPECT_EQ(e.timeout_kind, r.timeout_kind) << "event " << e.seq;
    EXPECT_EQ(e.time_ms, r.ended_ms) << "event " << e.seq;
    EXPECT_EQ(e.output, r.output) << "event " << e.seq;
    EXPECT_EQ(e.has_error, r.has_error) << "event " << e.seq;
    EXPECT_EQ(e.error, r.error) << "event " << e.seq;
    EXPECT_EQ(e.has_cause, r.has_cause) << "event " << e.seq;
    EXPECT_EQ(e.cause, r.cause) << "event " << e.seq;
    EXPECT_EQ(e.correlation, issue->second.correlation) << "event " << e.seq;
    EXPECT_EQ(e.activity_id, issue->second.activity_id) << "event " << e.seq;
    EXPECT_EQ(d.live.count(e.task_id), 0u) << "terminal task " << Str(e.task_id) << " still live";
  }
  std::set<std::tuple<int64_t, TaskId, std::string>> retired(d.retired.begin(), d.retired.end());
  ASSERT_EQ(retired.size(), d.retired.size()) << "retired entry listed twice";
  size_t terminal = 0;
  for (const auto& [id, r] : d.states) {
    ASSERT_EQ(d.issues.count(id), 1u) << "state record of a task never issued: " << Str(id);
    const std::string& key = d.issues.at(id).idempotency_key;
    if (IsTerminal(r.state)) {
      ++terminal;
      EXPECT_EQ(events_of[id], 1) << "terminal task " << Str(id) << " needs exactly one event";
      EXPECT_EQ(retired.count({r.ended_ms, id, key}), 1u) << "retention entry of " << Str(id);
    } else {
      auto live = d.live.find(id);
      ASSERT_NE(live, d.live.end()) << "non-terminal state record without live entry";
      EXPECT_EQ(live->second.state, r.state) << Str(id);
    }
  }
  EXPECT_EQ(terminal, d.events.size()) << "one event per terminal task";
  EXPECT_EQ(retired.size(), d.events.size()) << "one retention entry per terminal task";
  std::set<uint64_t> queue_seqs;
  for (const auto& [id, r] : d.live) {
    auto issue = d.issues.find(id);
    ASSERT_NE(issue, d.issues.end()) << "live entry of a task never issued: " << Str(id);
    EXPECT_EQ(r.activity_id, issue->second.activity_id) << Str(id);
    EXPECT_EQ(r.heartbeat_s, issue->second.heartbeat_s) << Str(id);
    EXPECT_EQ(r.timeout_s, issue->second.timeout_s) << Str(id);
    if (r.state == TaskState::kScheduled) {
      EXPECT_NE(r.activity_id, 0u) << "a scheduled callback task";
      EXPECT_LT(r.queue_seq, d.next_queue_seq) << Str(id);
      EXPECT_TRUE(queue_seqs.insert(r.queue_seq).second) << "queue seq used twice";
      EXPECT_EQ(d.activities.count(r.activity_id), 1u) << "queued task of a deleted activity";
    } else {
      EXPECT_EQ(r.state, TaskState::kStarted) << Str(id);
    }
  }
  for (const auto& [id, issue] : d.issues) {
    EXPECT_TRUE(StateIn(d, id).has_value()) << "task " << Str(id) << " neither live nor ended";
    if (issue.activity_id != 0) {
      EXPECT_LT(issue.activity_id, d.next_activity_id);
    }
    if (!issue.idempotency_key.empty()) {
      auto it = d.idem.find(issue.idempotency_key);
      ASSERT_NE(it, d.idem.end()) << "idempotency key of " << Str(id) << " missing";
      EXPECT_EQ(it->second, id) << "idempotency key names another task";
    }
  }
  for (const auto& [key, id] : d.idem) {
    auto issue = d.issues.find(id);
    ASSERT_NE(issue, d.issues.end()) << "idempotency key '" << key << "' of a missing task";
    EXPECT_EQ(issue->second.idempotency_key, key);
  }
  for (const auto& [id, a] : d.activities) EXPECT_LT(id, d.next_activity_id);
}

// ---------------------------------------------------------------------------------------------
// The model of acknowledged state.

struct ModelActivity {
  std::string name;
  std::string arn;
  bool acked = false;  // its creation was acknowledged (or recovered)
  bool dead = false;   // deleted, or its creation was lost in a crash
};

struct ModelTask {
  TaskId id;
  std::string token;
  int activity = -1;  // index into activities_, -1 = callback task
  std::string input;
  std::string correlation;
  std::string idem_key;
  uint32_t timeout_s = 0;
  uint32_t heartbeat_s = 0;
  uint32_t s2s_s = 0;
  int64_t issued_ms = 0;
  bool acked = false;  // its issue reply was delivered (false: learned from a recovered store)
  TaskState state = TaskState::kScheduled;
  std::string worker;
  TimeoutKind timeout_kind = TimeoutKind::kNone;
  std::string output;
  bool has_error = false;
  bool has_cause = false;
  std::string error;
  std::string cause;
  int events = 0;
};

// One command's reply, from the engine's callback to the model.
struct Pending {
  std::string what;
  bool expect_ok = false;
  bool called = false;
  ErrorCode code = ErrorCode::kOk;
  Refusal refusal = Refusal::kNone;
  std::string token;            // issue and poll replies
  bool flag = false;            // IssueTaskReply::existing, CompletionReply::duplicate
  std::function<void()> apply;  // updates the model when delivered; set when ok
};

struct IssueSpec {
  int activity = -1;  // -1 = callback task
  uint32_t timeout_s = 0;
  uint32_t heartbeat_s = 0;
  uint32_t s2s_s = 0;
  std::string input = "{}";
  std::string correlation;
  std::string idem_key;
};

enum class KillPoint { kAfterApply, kInWrite, kAfterSync };
enum class WriteFault { kAppend, kSync, kPowerOffAtSync };

struct CrashPlan {
  KillPoint point = KillPoint::kAfterApply;
  WriteFault fault = WriteFault::kSync;  // kInWrite only
  bool power_cut = true;                 // false: only the process dies; the OS keeps its cache
  uint64_t torn_seed = 0;                // power cut: keep a random part of unsynced tails
  int poisoned_batches = 0;              // kInWrite: batches the poisoned core gets first
  std::optional<size_t> replies_out;     // kAfterSync: replies delivered first (default random)
  int64_t restart_ms = 0;                // clock advance before recovery
  bool clean_close = false;  // the process closes the store normally (no kill, no power cut)
};

std::string PlanStr(const CrashPlan& p) {
  static const char* kPoints[] = {"after-apply", "in-write", "after-sync"};
  static const char* kFaults[] = {"append failure", "sync failure", "power off at sync"};
  std::string s = kPoints[static_cast<int>(p.point)];
  if (p.point == KillPoint::kInWrite)
    s += std::string(" (") + kFaults[static_cast<int>(p.fault)] + ")";
  s += p.clean_close ? ", clean close" : p.power_cut ? ", power cut" : ", process kill only";
  if (p.torn_seed) s += " torn " + std::to_string(p.torn_seed);
  return s;
}

enum class Outcome { kAbsent, kPresent, kEither };  // kEither: the batch changed nothing

// ---------------------------------------------------------------------------------------------
// The harness: an EngineCore on a RocksStore on a FaultFs, the shadow store, the model, the
// workload and the crash-and-verify cycle. Single-threaded; a seed replays the same decisions
// (task ids come from a CSPRNG, so no decision may depend on them).

class CrashHarness {
 public:
  CrashHarness(uint64_t seed, const TokenCodec* codec)
      : rng_(seed), store_rng_(seed ^ 0x570e), clock_(kStartMs), codec_(codec), dir_() {
    options_.tick_ms = 1;
    options_.pollers_per_activity_max = 3;
    shadow_ = std::make_unique<MemoryStore>(shadow_disk_);
  }
  ~CrashHarness() {
    core_.reset();  // its callbacks point into pendings_
    pendings_.clear();
  }

  // ---- setup ----
  void Open() {
    ASSERT_NO_FATAL_FAILURE(OpenStore());
    ASSERT_NO_FATAL_FAILURE(NewCore());
  }

  // ---- commands: Apply only; replies come at Commit, reach the model at delivery ----
  Pending* CreateActivity() {
    const int index = static_cast<int>(activities_.size());
    ModelActivity a;
    a.name = "act-" + std::to_string(index);
    a.arn = kArnPrefix + a.name;
    activities_.push_back(a);
    Pending* p = NewPending("create " + a.name, true);
    core_->Apply(CreateActivityCmd{{a.name}, [this, p, index](Result<ActivityInfo> r) {
                                     Arrive(p, r.error);
                                     if (r.ok()) p->apply = [this, index] { OnCreated(index); };
                                   }});
    return p;
  }

  Pending* DeleteActivity(int index) {
    Pending* p = NewPending("delete " + activities_[index].name, false);
    core_->Apply(DeleteActivityCmd{{activities_[index].arn}, [this, p, index](Result<Empty> r) {
                                     Arrive(p, r.error);
                                     if (r.ok()) p->apply = [this, index] { OnDeleted(index); };
                                   }});
    return p;
  }

  Pending* Issue(const IssueSpec& spec, bool expect_ok = false) {
    Pending* p = NewPending("issue " + spec.correlation, expect_ok);
    IssueTaskRequest req;
    if (spec.activity >= 0) req.activity_arn = activities_[spec.activity].arn;
    req.input = spec.input;
    req.timeout_s = spec.timeout_s;
    req.heartbeat_s = spec.heartbeat_s;
    req.schedule_to_start_s = spec.s2s_s;
    req.correlation = spec.correlation;
    req.idempotency_key = spec.idem_key;
    const int64_t now = clock_.NowMs();
    core_->Apply(IssueCmd{std::move(req), [this, p, spec, now](Result<IssueTaskReply> r) {
                            Arrive(p, r.error);
                            if (!r.ok()) return;
                            p->token = r.value.token;
                            p->flag = r.value.existing;
                            p->apply = [this, spec, now, v = r.value] { OnIssued(spec, now, v); };
                          }});
    return p;
  }

  Pending* Poll(int activity, bool expect_ok = false) {
    const uint64_t poll_id = next_poll_id_++;
    const std::string worker = "w" + std::to_string(poll_id);
    Pending* p = NewPending("poll " + activities_[activity].name, expect_ok);
    waiting_polls_.insert(poll_id);
    core_->Apply(PollCmd{{activities_[activity].arn, worker},
                         poll_id,
                         [this, p, worker, poll_id](Result<GetActivityTaskReply> r) {
                           Arrive(p, r.error);
                           waiting_polls_.erase(poll_id);
                           if (!r.ok()) return;
                           p->token = r.value.token;
                           p->apply = [this, worker, v = r.value] { OnHandedOut(worker, v); };
                         }});
    return p;
  }

  void Withdraw(uint64_t poll_id) { core_->Apply(WithdrawCmd{poll_id}); }

  // A heartbeat on a task whose start is durable is answered during Apply, not held for the
  // commit: nothing of it is written. Such an answer must be OK and must not reveal more than
  // the acknowledged state, in which the task is STARTED.
  Pending* Heartbeat(const TaskId& id) {
    Pending* p = NewPending("heartbeat", false);
    applying_heartbeat_ = true;
    core_->Apply(HeartbeatCmd{id, [this, p, id](Result<Empty> r) {
                                if (!applying_heartbeat_) return Arrive(p, r.error);
                                EXPECT_TRUE(r.ok()) << "a refusal ran before its batch committed";
                                auto it = index_.find(id);
                                ASSERT_NE(it, index_.end()) << "an unacknowledged task";
                                EXPECT_EQ(tasks_[it->second].state, TaskState::kStarted)
                                    << "an answer revealed a start that is not acknowledged";
                                p->called = true;
                                ++immediate_heartbeats_;
                              }});
    applying_heartbeat_ = false;
    return p;
  }

  Pending* Success(const TaskId& id, const std::string& output, bool expect_ok = false) {
    Pending* p = NewPending("success " + Str(id), expect_ok);
    ModelTask end;
    end.state = TaskState::kSucceeded;
    end.output = output;
    core_->Apply(SuccessCmd{id, output, CompletionCallback(p, id, end)});
    return p;
  }

  Pending* Failure(const TaskId& id, std::optional<std::string> error,
                   std::optional<std::string> cause, bool expect_ok = false) {
    Pending* p = NewPending("failure " + Str(id), expect_ok);
    ModelTask end;
    end.state = TaskState::kFailed;
    end.has_error = error.has_value();
    end.has_cause = cause.has_value();
    end.error = error.value_or("");
    end.cause = cause.value_or("");
    core_->Apply(FailureCmd{id, error, cause, CompletionCallback(p, id, end)});
    return p;
  }

  Pending* Cancel(const TaskId& id, bool expect_ok = false) {
    Pending* p = NewPending("cancel " + Str(id), expect_ok);
    ModelTask end;
    end.state = TaskState::kCancelled;
    core_->Apply(CancelCmd{id, CompletionCallback(p, id, end)});
    return p;
  }

  void Describe(const TaskId& id) {
    Pending* p = NewPending("describe", false);
    core_->Apply(DescribeCmd{id, [this, p](Result<TaskDescription> r) { Arrive(p, r.error); }});
  }

  uint64_t immediate_heartbeats() const { return immediate_heartbeats_; }

  // Fires every due timer.
  void ExpireAll() { ASSERT_TRUE(core_->Expire(clock_.NowMs(), SIZE_MAX)); }

  // One normal group commit: Commit, then deliver every reply and the new events.
  void CommitAndDeliver() {
    ASSERT_TRUE(arrivals_.empty()) << "a reply ran before its batch was committed";
    Status s = core_->Commit();
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_NO_FATAL_FAILURE(Deliver(arrivals_.size(), /*events=*/true));
  }

  // Crashes the batch applied so far at plan.point, restarts on the same directory, verifies
  // (checks 1-4) and leaves a working core with the model rebuilt from the recovered store.
  void Crash(const CrashPlan& plan, Outcome* outcome = nullptr);

  // ---- the random workload ----
  void RandomBatch() {
    Prune();
    JumpClock();
    const int n = 1 + Rand(10);
    for (int i = 0; i < n && !::testing::Test::HasFatalFailure(); ++i) RandomCommand();
    RandomExpire();
  }

  CrashPlan RandomPlan() {
    CrashPlan plan;
    plan.point = static_cast<KillPoint>(Rand(3));
    plan.fault = static_cast<WriteFault>(Rand(3));
    plan.power_cut = Rand(4) != 0 || plan.fault == WriteFault::kPowerOffAtSync;
    if (plan.power_cut && Rand(2) == 0) plan.torn_seed = 1 + rng_() % 1'000'000;
    plan.poisoned_batches = Rand(3);
    plan.restart_ms = Rand(3) == 0 ? 0 : Rand(5000);
    return plan;
  }

  // ---- for directed tests ----
  ManualClock& clock() { return clock_; }
  FaultFs* fs() { return fs_.get(); }
  EngineCore* core() { return core_.get(); }
  const std::vector<ModelTask>& tasks() const { return tasks_; }
  const ModelTask* TaskByCorrelation(const std::string& c) const {
    for (const ModelTask& t : tasks_) {
      if (t.correlation == c) return &t;
    }
    return nullptr;
  }
  TaskId IdOf(const Pending* p) const {
    TaskId id;
    uint16_t shard = 0;
    EXPECT_TRUE(codec_->Decode(p->token, &id, &shard)) << p->what;
    return id;
  }
  const Catalog& catalog() const { return catalog_; }
  Store* store() { return store_->real(); }
  const std::vector<EventRecord>& acked_events() const { return acked_events_; }

  // Everything the store holds now.
  void DumpStore(Dump* d) { TakeDump(store_->real(), catalog_, d); }

  // The description of a task, through a group commit of its own.
  void DescribeNow(const TaskId& id, Result<TaskDescription>* out) {
    bool called = false;
    core_->Apply(DescribeCmd{id, [&](Result<TaskDescription> r) {
                               called = true;
                               *out = std::move(r);
                             }});
    ASSERT_TRUE(core_->Commit().ok());
    ASSERT_TRUE(called);
  }

 private:
  int Rand(int n) { return static_cast<int>(rng_() % static_cast<uint64_t>(n)); }

  Pending* NewPending(std::string what, bool expect_ok) {
    pendings_.push_back(std::make_unique<Pending>());
    Pending* p = pendings_.back().get();
    p->what = std::move(what);
    p->expect_ok = expect_ok;
    return p;
  }

  void Arrive(Pending* p, const Error& e) {
    EXPECT_FALSE(p->called) << p->what << " answered twice";
    p->called = true;
    p->code = e.code;
    p->refusal = e.refusal;
    arrivals_.push_back(p);
  }

  Callback<CompletionReply> CompletionCallback(Pending* p, const TaskId& id, const ModelTask& end) {
    return [this, p, id, end](Result<CompletionReply> r) {
      Arrive(p, r.error);
      if (!r.ok()) return;
      p->flag = r.value.duplicate;
      p->apply = [this, id, end, dup = r.value.duplicate] { OnCompleted(id, end, dup); };
    };
  }

  // Drops answered pendings (waiting polls stay). Pending pointers a test holds die here.
  void Prune() {
    pendings_.remove_if([](const std::unique_ptr<Pending>& p) { return p->called; });
  }

  void OpenStore() {
    fs_ = std::make_shared<FaultFs>();
    RocksStoreOptions o;
    o.path = dir_.path() + "/db";
    // Half the opens replay through the preliminary open, and half the stores flush their side
    // column families every few KiB (RocksStoreOptions), so crashes land around both. A
    // separate stream, so that the workload's decisions stay those of earlier builds.
    if (store_rng_() % 2 == 0) o.replay_open_min_wal_bytes = 0;
    if (store_rng_() % 2 == 0) o.side_flush_every_bytes = 1 + store_rng_() % (16 << 10);
    std::unique_ptr<Store> real;
    RocksStoreTestHooks hooks;
    hooks.file_system = std::make_shared<NoPreallocationFs>(fs_);
    Status s = OpenRocksStoreForTesting(o, hooks, &real);
    ASSERT_TRUE(s.ok()) << s.ToString();
    store_ = std::make_unique<RecordingStore>(std::move(real), shadow_.get(), &catalog_);
  }

  void NewCore() {
    core_ = std::make_unique<EngineCore>(options_, store_.get(), codec_, &clock_);
    Status s = core_->Recover();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  // Delivers the first n arrived replies to the model, then (events) the batch's new events.
  void Deliver(size_t n, bool events) {
    for (size_t i = 0; i < n; ++i) {
      Pending* p = arrivals_[i];
      if (p->expect_ok) {
        ASSERT_EQ(p->code, ErrorCode::kOk) << p->what;
      }
      ASSERT_NE(p->code, ErrorCode::kUnavailable) << p->what << " after a successful commit";
      ASSERT_NE(p->code, ErrorCode::kInternal) << p->what;
      if (p->apply) p->apply();
      if (::testing::Test::HasFatalFailure()) return;
    }
    arrivals_.clear();
    if (events) {
      ASSERT_NO_FATAL_FAILURE(DeliverEvents());
    }
  }

  void OnCreated(int index) { activities_[index].acked = true; }
  void OnDeleted(int index) { activities_[index].dead = true; }

  void OnIssued(const IssueSpec& spec, int64_t now, const IssueTaskReply& v) {
    TaskId id;
    uint16_t shard = 0;
    ASSERT_TRUE(codec_->Decode(v.token, &id, &shard));
    if (v.existing) {
      ASSERT_FALSE(spec.idem_key.empty()) << "existing task without an idempotency key";
      auto it = idem_.find(spec.idem_key);
      if (it != idem_.end()) {
        ASSERT_EQ(it->second, id) << "an acknowledged idempotency key now names another task";
      }
      ASSERT_EQ(index_.count(id), 1u) << "idempotent issue answered with an unknown task";
      idem_[spec.idem_key] = id;
      return;
    }
    ASSERT_EQ(index_.count(id), 0u) << "task id issued twice";
    if (!spec.idem_key.empty()) {
      ASSERT_EQ(idem_.count(spec.idem_key), 0u)
          << "a second task for the acknowledged idempotency key '" << spec.idem_key << "'";
      idem_[spec.idem_key] = id;
    }
    ModelTask t;
    t.id = id;
    t.token = v.token;
    t.activity = spec.activity;
    t.input = spec.input;
    t.correlation = spec.correlation;
    t.idem_key = spec.idem_key;
    t.timeout_s = spec.timeout_s;
    t.heartbeat_s = spec.heartbeat_s;
    t.s2s_s = spec.s2s_s;
    t.issued_ms = now;
    t.acked = true;
    t.state = spec.activity < 0 ? TaskState::kStarted : TaskState::kScheduled;
    index_[id] = tasks_.size();
    tasks_.push_back(std::move(t));
  }

  void OnHandedOut(const std::string& worker, const GetActivityTaskReply& v) {
    if (v.token.empty()) return;  // withdrawn
    TaskId id;
    uint16_t shard = 0;
    ASSERT_TRUE(codec_->Decode(v.token, &id, &shard));
    auto it = index_.find(id);
    ASSERT_NE(it, index_.end()) << "handed out a task nobody issued";
    ModelTask& t = tasks_[it->second];
    ASSERT_EQ(t.state, TaskState::kScheduled) << "handed out a task that was not queued";
    ASSERT_EQ(v.input, t.input);
    t.state = TaskState::kStarted;
    t.worker = worker;
  }

  void OnCompleted(const TaskId& id, const ModelTask& end, bool duplicate) {
    auto it = index_.find(id);
    ASSERT_NE(it, index_.end());
    ModelTask& t = tasks_[it->second];
    if (duplicate) {
      ASSERT_EQ(t.state, end.state) << "duplicate of an outcome that was not acknowledged";
      ASSERT_EQ(std::tie(t.output, t.has_error, t.error, t.has_cause, t.cause),
                std::tie(end.output, end.has_error, end.error, end.has_cause, end.cause));
      return;
    }
    if (end.state == TaskState::kCancelled) {
      ASSERT_FALSE(IsTerminal(t.state)) << "cancelled a task that had ended";
    } else {
      ASSERT_EQ(t.state, TaskState::kStarted) << "completed a task that was not started";
    }
    t.state = end.state;
    t.output = end.output;
    t.has_error = end.has_error;
    t.has_cause = end.has_cause;
    t.error = end.error;
    t.cause = end.cause;
  }

  // Reads the events the last commit made durable; checks them against the replies.
  void DeliverEvents() {
    std::vector<EventRecord> events;
    ASSERT_TRUE(store_->ReadEvents(next_seq_, kReadAll, &events).ok());
    for (const EventRecord& e : events) {
      ASSERT_EQ(e.seq, next_seq_) << "event seqs must be gapless and in order";
      ++next_seq_;
      auto it = index_.find(e.task_id);
      ASSERT_NE(it, index_.end()) << "event " << e.seq << " for an unknown task";
      ModelTask& t = tasks_[it->second];
      ASSERT_EQ(t.events, 0) << "second event for one task";
      t.events = 1;
      ASSERT_EQ(e.correlation, t.correlation);
      if (IsTerminal(t.state)) {
        // Ended by a reply of this batch: the event must say the same.
        ASSERT_EQ(e.state, t.state);
        ASSERT_EQ(e.output, t.output);
        ASSERT_EQ(e.has_error, t.has_error);
        ASSERT_EQ(e.error, t.error);
        ASSERT_EQ(e.has_cause, t.has_cause);
        ASSERT_EQ(e.cause, t.cause);
      } else {
        // No reply: a timeout, or a queued task of a deleted activity.
        ASSERT_TRUE(e.state == TaskState::kTimedOut ||
                    (e.state == TaskState::kFailed && e.error == "States.Runtime"))
            << "event " << e.seq << " for a task no reply ended: " << TaskStateName(e.state);
        t.state = e.state;
        t.timeout_kind = e.timeout_kind;
        t.output = e.output;
        t.has_error = e.has_error;
        t.has_cause = e.has_cause;
        t.error = e.error;
        t.cause = e.cause;
      }
      acked_events_.push_back(e);
    }
    ASSERT_EQ(next_seq_ - 1, core_->last_event_seq());
    for (const ModelTask& t : tasks_) {
      if (IsTerminal(t.state)) {
        ASSERT_EQ(t.events, 1) << "acknowledged end of " << Str(t.id) << " without its event";
      }
    }
  }

  // ---- random workload ----
  void JumpClock() {
    const int r = Rand(10);
    if (r < 4) return;
    clock_.Advance(r < 7 ? Rand(50) : r < 9 ? Rand(3000) : Rand(20000));
  }

  void RandomExpire() {
    const int64_t now = clock_.NowMs();
    if (Rand(4) == 0) {
      core_->Expire(now, 1 + Rand(4));  // may leave due timers behind, as a busy engine does
      return;
    }
    while (!core_->Expire(now, 1 + Rand(64))) {
    }
  }

  std::vector<int> UsableActivities() const {
    std::vector<int> out;
    for (size_t i = 0; i < activities_.size(); ++i) {
      if (activities_[i].acked && !activities_[i].dead) out.push_back(static_cast<int>(i));
    }
    return out;
  }

  // A task a worker or issuer could name: mostly a started one.
  std::optional<TaskId> PickTask(bool prefer_started) {
    if (tasks_.empty()) return std::nullopt;
    if (prefer_started && Rand(5) != 0) {
      std::vector<size_t> started;
      for (size_t i = 0; i < tasks_.size(); ++i) {
        if (tasks_[i].state == TaskState::kStarted) started.push_back(i);
      }
      if (!started.empty()) return tasks_[started[Rand(static_cast<int>(started.size()))]].id;
    }
    return tasks_[Rand(static_cast<int>(tasks_.size()))].id;
  }

  void RandomIssue() {
    IssueSpec spec;
    const std::vector<int> usable = UsableActivities();
    spec.activity =
        usable.empty() || Rand(3) == 0 ? -1 : usable[Rand(static_cast<int>(usable.size()))];
    if (Rand(2)) spec.timeout_s = 1 + Rand(8);
    if (Rand(2)) spec.heartbeat_s = 1 + Rand(3);
    if (spec.timeout_s != 0 && spec.heartbeat_s >= spec.timeout_s) spec.heartbeat_s = 0;
    if (spec.activity >= 0 && Rand(3) == 0) spec.s2s_s = 1 + Rand(5);
    const uint64_t n = next_request_++;
    // Some inputs past the blob threshold, so recovery flushes write blob files.
    spec.input = Rand(20) == 0 ? "{\"pad\":\"" + std::string(4096 + Rand(4096), 'x') + "\"}"
                               : "{\"n\":" + std::to_string(n) + "}";
    spec.correlation = "c" + std::to_string(n);
    if (Rand(4) == 0) spec.idem_key = "k" + std::to_string(n);
    Issue(spec);
  }

  // An idempotent retry of an acknowledged issue: must answer the same task.
  void RetryIssue() {
    if (idem_.empty()) return RandomIssue();
    auto it = idem_.begin();
    std::advance(it, Rand(static_cast<int>(idem_.size())));
    const ModelTask& t = tasks_[index_.at(it->second)];
    IssueSpec spec;
    spec.activity = t.activity;
    if (spec.activity >= 0 && activities_[spec.activity].dead) return;
    spec.input = t.input;
    spec.correlation = t.correlation;
    spec.idem_key = it->first;
    Pending* p = Issue(spec, /*expect_ok=*/true);
    p->what = "idempotent retry of " + it->first;
  }

  void RandomCommand() {
    const int r = Rand(100);
    const std::vector<int> usable = UsableActivities();
    if (r < 32) return RandomIssue();
    if (r < 36) return RetryIssue();
    if (r < 50) {
      if (usable.empty()) return;
      Poll(usable[Rand(static_cast<int>(usable.size()))]);
      return;
    }
    if (r < 58) {
      if (auto id = PickTask(true)) Heartbeat(*id);
      return;
    }
    if (r < 70) {
      const std::string out = Rand(2) ? "\"ok\"" : "{\"v\":" + std::to_string(Rand(3)) + "}";
      if (auto id = PickTask(true)) Success(*id, out);
      return;
    }
    if (r < 78) {
      std::optional<std::string> error, cause;
      if (Rand(2)) error = "E" + std::to_string(Rand(2));
      if (Rand(2)) cause = "because";
      if (auto id = PickTask(true)) Failure(*id, error, cause);
      return;
    }
    if (r < 86) {
      if (auto id = PickTask(false)) Cancel(*id);
      return;
    }
    if (r < 89) {
      if (auto id = PickTask(false)) Describe(*id);
      return;
    }
    if (r < 92) {
      if (waiting_polls_.empty()) return;
      auto it = waiting_polls_.begin();
      std::advance(it, Rand(static_cast<int>(waiting_polls_.size())));
      Withdraw(*it);
      return;
    }
    if (r < 94) {
      if (usable.size() < 2) return;
      DeleteActivity(usable[Rand(static_cast<int>(usable.size()))]);
      CreateActivity();
      return;
    }
    if (r < 96) {
      CreateActivity();
      return;
    }
    RandomIssue();
  }

  // Applies a random batch to the poisoned core: everything must be refused and nothing may
  // reach a file.
  void PoisonedBatch(bool clear_failures) {
    if (clear_failures) fs_->ClearFailures();
    const uint64_t appends = fs_->append_count();
    const uint64_t syncs = fs_->sync_count();
    clock_.Advance(Rand(10000));
    const int n = 1 + Rand(6);
    for (int i = 0; i < n; ++i) RandomCommand();
    core_->Expire(clock_.NowMs(), SIZE_MAX);
    ASSERT_TRUE(arrivals_.empty()) << "a reply ran before its batch was committed";
    Status s = core_->Commit();
    ASSERT_FALSE(s.ok()) << "a poisoned core committed";
    for (Pending* p : arrivals_) EXPECT_EQ(p->code, ErrorCode::kUnavailable) << p->what;
    arrivals_.clear();
    EXPECT_EQ(fs_->append_count(), appends) << "a poisoned engine appended to a file";
    EXPECT_EQ(fs_->sync_count(), syncs) << "a poisoned engine synced a file";
  }

  // ---- verification ----

  // Before the crashed batch: the durable store holds exactly what was acknowledged (plus what
  // earlier recoveries learned), no more, no less.
  void CheckModelIsDurable(const Dump& pre) {
    ASSERT_EQ(pre.issues.size(), tasks_.size()) << "tasks on disk vs tasks acknowledged";
    for (const ModelTask& t : tasks_) {
      ASSERT_NO_FATAL_FAILURE(CheckIssue(pre, t));
      ASSERT_EQ(StateIn(pre, t.id), t.state) << "task " << t.correlation;
      ASSERT_NO_FATAL_FAILURE(CheckOutcome(pre, t));
    }
    ASSERT_EQ(pre.events.size(), acked_events_.size());
    for (size_t i = 0; i < acked_events_.size(); ++i) {
      ASSERT_TRUE(pre.events[i] == acked_events_[i]) << "event " << i + 1;
    }
    ASSERT_EQ(pre.idem, idem_);
    std::set<std::string> want, got;
    for (const ModelActivity& a : activities_) {
      if (a.acked && !a.dead) want.insert(a.name);
    }
    for (const auto& [id, a] : pre.activities) got.insert(a.name);
    ASSERT_EQ(want, got) << "activities on disk vs activities acknowledged";
  }

  void CheckIssue(const Dump& d, const ModelTask& t) {
    auto it = d.issues.find(t.id);
    ASSERT_NE(it, d.issues.end()) << "acknowledged task " << t.correlation << " lost";
    const TaskIssueRecord& r = it->second;
    EXPECT_EQ(r.input, t.input) << t.correlation;
    EXPECT_EQ(r.correlation, t.correlation);
    EXPECT_EQ(r.idempotency_key, t.idem_key) << t.correlation;
    EXPECT_EQ(r.timeout_s, t.timeout_s) << t.correlation;
    EXPECT_EQ(r.heartbeat_s, t.heartbeat_s) << t.correlation;
    EXPECT_EQ(r.schedule_to_start_s, t.s2s_s) << t.correlation;
    EXPECT_EQ(r.issued_ms, t.issued_ms) << t.correlation;
    EXPECT_EQ(r.activity_id == 0, t.activity < 0) << t.correlation;
  }

  // The recorded outcome (terminal) or worker (started activity task) of t, as the model has it.
  void CheckOutcome(const Dump& d, const ModelTask& t) {
    auto st = d.states.find(t.id);
    if (IsTerminal(t.state)) {
      ASSERT_NE(st, d.states.end()) << t.correlation;
      const TaskStateRecord& r = st->second;
      EXPECT_EQ(r.state, t.state) << t.correlation;
      EXPECT_EQ(r.timeout_kind, t.timeout_kind) << t.correlation;
      EXPECT_EQ(r.output, t.output) << t.correlation;
      EXPECT_EQ(r.has_error, t.has_error) << t.correlation;
      EXPECT_EQ(r.error, t.error) << t.correlation;
      EXPECT_EQ(r.has_cause, t.has_cause) << t.correlation;
      EXPECT_EQ(r.cause, t.cause) << t.correlation;
      EXPECT_EQ(r.worker, t.worker) << t.correlation;
    } else if (t.state == TaskState::kStarted && t.activity >= 0) {
      ASSERT_NE(st, d.states.end()) << "start of " << t.correlation << " lost";
      EXPECT_EQ(st->second.worker, t.worker) << t.correlation;
    }
  }

  // After the crash: every acknowledged transition survived (check 1, store level).
  // An acknowledged activity may be gone only because the crashed batch, present, deleted it.
  void CheckAckedSurvived(const Dump& rec, const Dump& pre, const Dump& post, bool present) {
    for (const ModelTask& t : tasks_) {
      ASSERT_NO_FATAL_FAILURE(CheckIssue(rec, t));
      const std::optional<TaskState> s = StateIn(rec, t.id);
      ASSERT_TRUE(s.has_value());
      if (IsTerminal(t.state)) {
        ASSERT_EQ(*s, t.state) << "acknowledged end of " << t.correlation << " lost";
        ASSERT_NO_FATAL_FAILURE(CheckOutcome(rec, t));
      } else if (t.state == TaskState::kStarted) {
        ASSERT_NE(*s, TaskState::kScheduled)
            << "acknowledged start of " << t.correlation << " lost";
        if (*s == TaskState::kStarted) {
          ASSERT_NO_FATAL_FAILURE(CheckOutcome(rec, t));
        }
      }
    }
    ASSERT_LE(acked_events_.size(), rec.events.size()) << "acknowledged events lost";
    for (size_t i = 0; i < acked_events_.size(); ++i) {
      ASSERT_TRUE(rec.events[i] == acked_events_[i])
          << "acknowledged event " << i + 1 << " changed";
    }
    for (const auto& [key, id] : idem_) {
      auto it = rec.idem.find(key);
      ASSERT_NE(it, rec.idem.end()) << "acknowledged idempotency key '" << key << "' lost";
      ASSERT_EQ(it->second, id);
    }
    std::set<std::string> names, deleted_by_batch;
    for (const auto& [id, a] : rec.activities) names.insert(a.name);
    for (const auto& [id, a] : pre.activities) {
      if (present && post.activities.count(id) == 0) deleted_by_batch.insert(a.name);
    }
    for (const ModelActivity& a : activities_) {
      if (a.acked && !a.dead && deleted_by_batch.count(a.name) == 0) {
        ASSERT_EQ(names.count(a.name), 1u) << "acknowledged activity " << a.name << " lost";
      }
      if (a.dead) {
        ASSERT_EQ(names.count(a.name), 0u) << "acknowledged delete of " << a.name << " lost";
      }
    }
  }

  int ActivityIndex(const std::string& name) {
    for (size_t i = 0; i < activities_.size(); ++i) {
      if (activities_[i].name == name) return static_cast<int>(i);
    }
    ADD_FAILURE() << "activity " << name << " unknown to the model";
    return -1;
  }

  // After verification the recovered store is the truth: the model adopts it (the crashed
  // batch, if present, is now as good as acknowledged).
  void RebuildModel(const Dump& rec) {
    std::set<std::string> names;
    for (const auto& [id, a] : rec.activities) names.insert(a.name);
    for (ModelActivity& a : activities_) {
      a.acked = names.count(a.name) != 0;
      a.dead = !a.acked;
    }
    // Known tasks keep their order, tasks learned from the crashed batch follow in request
    // order: the workload picks tasks by position, and ids (CSPRNG) must not steer a replay.
    std::vector<std::pair<std::tuple<size_t, int64_t, std::string>, TaskId>> order;
    for (const auto& [id, issue] : rec.issues) {
      auto known = index_.find(id);
      order.push_back(
          {{known == index_.end() ? SIZE_MAX : known->second, issue.issued_ms, issue.correlation},
           id});
    }
    std::sort(order.begin(), order.end());
    std::map<TaskId, ModelTask> old;
    for (ModelTask& t : tasks_) old[t.id] = std::move(t);
    tasks_.clear();
    index_.clear();
    std::map<TaskId, int> events_of;
    for (const EventRecord& e : rec.events) events_of[e.task_id]++;
    for (const auto& [key, id] : order) {
      const TaskIssueRecord& issue = rec.issues.at(id);
      ModelTask t;
      if (auto it = old.find(id); it != old.end()) t = it->second;
      t.id = id;
      t.token = codec_->Encode(options_.shard, id);
      t.activity =
          issue.activity_id == 0 ? -1 : ActivityIndex(catalog_.activity_names[issue.activity_id]);
      t.input = issue.input;
      t.correlation = issue.correlation;
      t.idem_key = issue.idempotency_key;
      t.timeout_s = issue.timeout_s;
      t.heartbeat_s = issue.heartbeat_s;
      t.s2s_s = issue.schedule_to_start_s;
      t.issued_ms = issue.issued_ms;
      t.state = *StateIn(rec, id);
      TaskStateRecord st;
      if (auto it = rec.states.find(id); it != rec.states.end()) st = it->second;
      t.worker = st.worker;
      t.timeout_kind = st.timeout_kind;
      t.output = st.output;
      t.has_error = st.has_error;
      t.has_cause = st.has_cause;
      t.error = st.error;
      t.cause = st.cause;
      t.events = events_of[id];
      index_[id] = tasks_.size();
      tasks_.push_back(std::move(t));
    }
    idem_ = rec.idem;
    acked_events_ = rec.events;
    next_seq_ = rec.events.size() + 1;
    waiting_polls_.clear();
  }

  // Check 4 and the engine side of checks 1-2: a new core recovers, fires exactly the overdue
  // timers at its first Expire, describes every task as the store has it, and works.
  void RecoverAndCheck(const Dump& rec) {
    ASSERT_NO_FATAL_FAILURE(NewCore());
    ASSERT_EQ(core_->live_tasks(), rec.live.size()) << "recovered live tasks";
    ASSERT_EQ(core_->last_event_seq(), rec.events.size());
    const int64_t now = clock_.NowMs();
    std::map<TaskId, TimeoutKind> overdue;
    for (const auto& [id, r] : rec.live) {
      if (r.state == TaskState::kScheduled && r.schedule_to_start_deadline_ms != 0 &&
          r.schedule_to_start_deadline_ms <= now) {
        overdue[id] = TimeoutKind::kScheduleToStart;
      }
      if (r.state == TaskState::kStarted && r.overall_deadline_ms != 0 &&
          r.overall_deadline_ms <= now) {
        overdue[id] = TimeoutKind::kOverall;
      }
    }
    ASSERT_NO_FATAL_FAILURE(ExpireAll());
    ASSERT_NO_FATAL_FAILURE(CommitAndDeliver());
    ASSERT_EQ(acked_events_.size(), rec.events.size() + overdue.size())
        << "the first Expire after recovery must fire exactly the overdue timers";
    for (size_t i = rec.events.size(); i < acked_events_.size(); ++i) {
      const EventRecord& e = acked_events_[i];
      auto it = overdue.find(e.task_id);
      ASSERT_NE(it, overdue.end()) << "a timer fired early after recovery: " << Str(e.task_id);
      EXPECT_EQ(e.state, TaskState::kTimedOut);
      EXPECT_EQ(e.timeout_kind, it->second);
      EXPECT_EQ(e.time_ms, now);
    }
    ASSERT_NO_FATAL_FAILURE(DescribeAll(rec, now));
    ASSERT_NO_FATAL_FAILURE(Smoke());
  }

  // DescribeCmd for every task the engine ever wrote or tried to: the ones on disk as the
  // model has them, the others unknown.
  void DescribeAll(const Dump& rec, int64_t restart_ms) {
    std::map<TaskId, Result<TaskDescription>> got;
    for (const TaskId& id : catalog_.task_ids) {
      core_->Apply(DescribeCmd{id, [&got, id](Result<TaskDescription> r) { got[id] = r; }});
    }
    ASSERT_TRUE(core_->Commit().ok());
    for (const TaskId& id : catalog_.task_ids) {
      auto g = got.find(id);
      ASSERT_NE(g, got.end()) << "describe not answered";
      const Result<TaskDescription>& r = g->second;
      auto index = index_.find(id);
      if (index == index_.end()) {
        ASSERT_EQ(r.error.code, ErrorCode::kTaskDoesNotExist)
            << "task " << Str(id) << " of a lost batch is visible";
        continue;
      }
      ASSERT_TRUE(r.ok()) << ErrorCodeName(r.error.code) << " " << r.error.message;
      const ModelTask& t = tasks_[index->second];
      const TaskDescription& d = r.value;
      ASSERT_EQ(d.state, t.state) << t.correlation;
      EXPECT_EQ(d.input, t.input);
      EXPECT_EQ(d.correlation, t.correlation);
      EXPECT_EQ(d.issued_ms, t.issued_ms);
      EXPECT_EQ(d.timeout_s, t.timeout_s);
      EXPECT_EQ(d.heartbeat_s, t.heartbeat_s);
      EXPECT_EQ(d.schedule_to_start_s, t.s2s_s);
      if (t.activity < 0) {
        EXPECT_EQ(d.activity_arn, "");
      } else if (!activities_[t.activity].dead) {
        EXPECT_EQ(d.activity_arn, activities_[t.activity].arn);
      }
      EXPECT_EQ(d.worker, t.worker) << t.correlation;
      if (IsTerminal(t.state)) {
        EXPECT_EQ(d.timeout_kind, t.timeout_kind) << t.correlation;
        EXPECT_EQ(d.output, t.output) << t.correlation;
        EXPECT_EQ(d.has_error, t.has_error) << t.correlation;
        EXPECT_EQ(d.error, t.error) << t.correlation;
        EXPECT_EQ(d.has_cause, t.has_cause) << t.correlation;
        EXPECT_EQ(d.cause, t.cause) << t.correlation;
        continue;
      }
      const LiveRecord& lr = rec.live.at(id);
      if (t.state == TaskState::kScheduled) {
        EXPECT_EQ(d.schedule_to_start_deadline_ms, lr.schedule_to_start_deadline_ms);
      } else {
        EXPECT_EQ(d.overall_deadline_ms, lr.overall_deadline_ms) << t.correlation;
        const int64_t hb = t.heartbeat_s == 0 ? 0
                                              : std::max(lr.heartbeat_deadline_ms,
                                                         restart_ms + t.heartbeat_s * 1000);
        EXPECT_EQ(d.heartbeat_deadline_ms, hb) << "heartbeat clock after recovery";
      }
    }
  }

  // The recovered engine takes new work: a new activity, a callback task and an activity task,
  // both taken and completed.
  void Smoke() {
    const int act = static_cast<int>(activities_.size());
    CreateActivity();
    ASSERT_NO_FATAL_FAILURE(CommitAndDeliver());
    const std::string tag = "smoke" + std::to_string(next_request_++);
    IssueSpec cb;
    cb.correlation = tag + "-cb";
    cb.timeout_s = 30;
    Pending* a = Issue(cb, true);
    IssueSpec at;
    at.activity = act;
    at.correlation = tag + "-act";
    Pending* b = Issue(at, true);
    Pending* poll = Poll(act, true);
    ASSERT_NO_FATAL_FAILURE(CommitAndDeliver());
    ASSERT_TRUE(a->called && b->called && poll->called);
    ASSERT_EQ(poll->token, b->token) << "the new activity task was not handed out";
    const TaskId ida = IdOf(a), idb = IdOf(b);
    Pending* sa = Success(ida, "\"smoke\"", true);
    Pending* fb = Failure(idb, "E", std::nullopt, true);
    const size_t events = acked_events_.size();
    ASSERT_NO_FATAL_FAILURE(CommitAndDeliver());
    ASSERT_FALSE(sa->flag);
    ASSERT_FALSE(fb->flag);
    ASSERT_EQ(acked_events_.size(), events + 2);
    Prune();
  }

  std::mt19937_64 rng_;
  std::mt19937_64 store_rng_;  // store options per open (OpenStore)
  ManualClock clock_;
  const TokenCodec* codec_;
  EngineOptions options_;
  CrashDir dir_;
  Catalog catalog_;
  std::shared_ptr<MemoryDisk> shadow_disk_ = std::make_shared<MemoryDisk>();
  std::unique_ptr<MemoryStore> shadow_;
  std::shared_ptr<FaultFs> fs_;
  std::unique_ptr<RecordingStore> store_;
  std::unique_ptr<EngineCore> core_;  // after store_: destroyed first

  std::vector<ModelActivity> activities_;
  std::vector<ModelTask> tasks_;
  std::map<TaskId, size_t> index_;
  std::map<std::string, TaskId> idem_;
  std::vector<EventRecord> acked_events_;
  uint64_t next_seq_ = 1;
  std::list<std::unique_ptr<Pending>> pendings_;
  std::vector<Pending*> arrivals_;     // replies of the last Commit, in the order they ran
  uint64_t immediate_heartbeats_ = 0;  // heartbeats answered during Apply
  bool applying_heartbeat_ = false;    // inside Heartbeat()'s Apply: an answer now is immediate
  std::set<uint64_t> waiting_polls_;
  uint64_t next_poll_id_ = 1;
  uint64_t next_request_ = 0;
};

void CrashHarness::Crash(const CrashPlan& plan, Outcome* outcome) {
  SCOPED_TRACE("crash " + PlanStr(plan));
  Dump pre, rocks_pre;
  ASSERT_NO_FATAL_FAILURE(TakeDump(shadow_.get(), catalog_, &pre));
  ASSERT_NO_FATAL_FAILURE(TakeDump(store_->real(), catalog_, &rocks_pre));
  ASSERT_TRUE(rocks_pre == pre) << "RocksStore and the shadow MemoryStore disagree\n"
                                << Diff(pre, rocks_pre, "mirrored before");
  ASSERT_NO_FATAL_FAILURE(CheckModelIsDurable(pre));
  ASSERT_TRUE(arrivals_.empty()) << "a reply ran before its batch was committed";

  std::vector<Op> unwritten;  // the crashed batch, if it never reached the store
  switch (plan.point) {
    case KillPoint::kAfterApply:
      unwritten = store_->building_ops();
      break;
    case KillPoint::kInWrite: {
      // Something to write and a reply to refuse, whatever the batch held.
      IssueSpec spec;
      spec.correlation = "fill" + std::to_string(next_request_++);
      Issue(spec);
      switch (plan.fault) {
        case WriteFault::kAppend:
          fs_->FailAppends(0);
          break;
        case WriteFault::kSync:
          fs_->FailSyncs(0);
          break;
        case WriteFault::kPowerOffAtSync:
          fs_->PowerOffAtSync(0);
          break;
      }
      Status s = core_->Commit();
      ASSERT_FALSE(s.ok()) << "the write was to fail";
      ASSERT_TRUE(core_->poisoned());
      ASSERT_FALSE(arrivals_.empty());
      for (Pending* p : arrivals_) {
        EXPECT_EQ(p->code, ErrorCode::kUnavailable) << p->what << " of a batch that failed";
      }
      arrivals_.clear();
      ASSERT_TRUE(store_->failed_ops().has_value());
      unwritten = *store_->failed_ops();
      for (int i = 0; i < plan.poisoned_batches; ++i) {
        ASSERT_NO_FATAL_FAILURE(PoisonedBatch(plan.fault != WriteFault::kPowerOffAtSync));
      }
      break;
    }
    case KillPoint::kAfterSync: {
      Status s = core_->Commit();
      ASSERT_TRUE(s.ok()) << s.ToString();
      const size_t out = plan.replies_out.value_or(Rand(static_cast<int>(arrivals_.size()) + 1));
      ASSERT_NO_FATAL_FAILURE(Deliver(std::min(out, arrivals_.size()), /*events=*/false));
      break;
    }
  }
  if (!unwritten.empty()) {
    ASSERT_NO_FATAL_FAILURE(RecordingStore::Replay(shadow_.get(), unwritten, /*sync=*/false));
  }
  Dump post;
  ASSERT_NO_FATAL_FAILURE(TakeDump(shadow_.get(), catalog_, &post));

  // The process dies: nothing more reaches a file. Then, maybe, the power goes.
  if (!plan.clean_close) fs_->SetActive(false);
  core_.reset();
  pendings_.clear();
  arrivals_.clear();
  store_.reset();
  if (plan.power_cut && !plan.clean_close) {
    Status s = fs_->DropUnsyncedData(plan.torn_seed);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  fs_.reset();
  clock_.Advance(plan.restart_ms);
  ASSERT_NO_FATAL_FAILURE(OpenStore());

  Dump rec;
  ASSERT_NO_FATAL_FAILURE(TakeDump(store_->real(), catalog_, &rec));
  const bool absent = rec == pre;
  const bool present = rec == post;
  ASSERT_TRUE(absent || present)
      << "the recovered store is neither the store before the crashed batch nor the one after "
         "it: acknowledged data was lost, or the batch is half applied\n"
      << Diff(pre, rec, "before") << Diff(post, rec, "after");
  if (plan.point == KillPoint::kAfterApply) {
    ASSERT_TRUE(absent) << "a batch that was never written appeared\n" << Diff(pre, rec, "before");
  }
  if (plan.point == KillPoint::kInWrite && plan.fault == WriteFault::kAppend) {
    ASSERT_TRUE(absent) << "a batch that failed to append appeared\n" << Diff(pre, rec, "before");
  }
  if (plan.point == KillPoint::kAfterSync) {
    ASSERT_TRUE(present) << "a synced batch was lost\n" << Diff(post, rec, "after");
  }
  if (outcome)
    *outcome = absent && present ? Outcome::kEither
               : present         ? Outcome::kPresent
                                 : Outcome::kAbsent;
  // The shadow follows the recovered store.
  if (present) {
    ASSERT_NO_FATAL_FAILURE(RecordingStore::Replay(shadow_.get(), {}, /*sync=*/true));
  } else {
    shadow_disk_->DropUnsyncedWrites();
  }
  Dump shadow_now;
  ASSERT_NO_FATAL_FAILURE(TakeDump(shadow_.get(), catalog_, &shadow_now));
  ASSERT_TRUE(shadow_now == rec);

  ASSERT_NO_FATAL_FAILURE(CheckStoreInvariants(rec));
  ASSERT_NO_FATAL_FAILURE(CheckAckedSurvived(rec, pre, post, present));
  ASSERT_NO_FATAL_FAILURE(RebuildModel(rec));
  ASSERT_NO_FATAL_FAILURE(RecoverAndCheck(rec));
}

// A codec with a fixed key: tokens need not be secret here.
std::unique_ptr<TokenCodec> TestCodec() {
  std::array<uint8_t, 32> key{};
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(i * 7 + 1);
  return std::make_unique<TokenCodec>(
      std::vector<std::pair<uint8_t, std::array<uint8_t, 32>>>{{1, key}});
}

// ---------------------------------------------------------------------------------------------
// The seeded random crash test.

void RunSeed(uint64_t seed, const TokenCodec* codec, std::map<std::string, int>* tally) {
  CrashHarness h(seed, codec);
  ASSERT_NO_FATAL_FAILURE(h.Open());
  for (int i = 0; i < 3; ++i) h.CreateActivity();
  ASSERT_NO_FATAL_FAILURE(h.CommitAndDeliver());
  std::mt19937_64 rng(seed ^ 0x5eed);
  for (int epoch = 0; epoch < kEpochsPerSeed; ++epoch) {
    const int batches = 2 + static_cast<int>(rng() % 15);
    for (int b = 0; b < batches; ++b) {
      ASSERT_NO_FATAL_FAILURE(h.RandomBatch());
      ASSERT_NO_FATAL_FAILURE(h.CommitAndDeliver());
    }
    ASSERT_NO_FATAL_FAILURE(h.RandomBatch());  // the batch that crashes
    const CrashPlan plan = h.RandomPlan();
    Outcome outcome = Outcome::kEither;
    ASSERT_NO_FATAL_FAILURE(h.Crash(plan, &outcome));
    static const char* kOutcomes[] = {"absent", "present", "no-op"};
    (*tally)[PlanStr(CrashPlan{plan.point, plan.fault, plan.power_cut, 0}) + ": " +
             kOutcomes[static_cast<int>(outcome)]]++;
  }
  (*tally)["heartbeats answered during apply"] += static_cast<int>(h.immediate_heartbeats());
}

TEST(CrashSafetyTest, RandomCrashesKeepEveryAcknowledgedTransition) {
  const char* one = std::getenv("TW_SEED");
  const uint64_t first = one ? std::strtoull(one, nullptr, 10) : 1;
  const uint64_t count = one ? 1 : EnvOr("TW_CRASH_SEEDS", kDefaultSeeds);
  auto codec = TestCodec();
  std::map<std::string, int> tally;
  for (uint64_t seed = first; seed < first + count; ++seed) {
    SCOPED_TRACE("replay with TW_SEED=" + std::to_string(seed));
    RunSeed(seed, codec.get(), &tally);
    if (::testing::Test::HasFailure()) {
      std::fprintf(stderr, "crash safety test failed: replay with TW_SEED=%llu\n",
                   static_cast<unsigned long long>(seed));
      return;
    }
  }
  for (const auto& [what, n] : tally) std::printf("  %-60s %d\n", what.c_str(), n);
  if (count > 1) {
    EXPECT_GT(tally["heartbeats answered during apply"], 0) << "path not exercised";
  }
}

// ---------------------------------------------------------------------------------------------
// Directed scenarios, one per kill point. Batch 1 (acknowledged): activity act-0, callback task
// A, activity tasks B and C. Batch 2 (the one that crashes): A succeeds, a worker takes B, C is
// cancelled, callback task D is issued with idempotency key "kD".

class CrashScenario : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(h_.Open());
    h_.CreateActivity();
    ASSERT_NO_FATAL_FAILURE(h_.CommitAndDeliver());
    IssueSpec a, b, c;
    a.correlation = "A";
    a.timeout_s = 60;
    b.activity = c.activity = 0;
    b.correlation = "B";
    b.input = "{\"b\":1}";
    c.correlation = "C";
    a_ = h_.Issue(a, true);
    b_ = h_.Issue(b, true);
    c_ = h_.Issue(c, true);
    ASSERT_NO_FATAL_FAILURE(h_.CommitAndDeliver());
    ida_ = h_.IdOf(a_);
    idb_ = h_.IdOf(b_);
    idc_ = h_.IdOf(c_);
  }

  void ApplySecondBatch() {
    succ_ = h_.Success(ida_, "\"done\"");
    poll_ = h_.Poll(0);
    cancel_ = h_.Cancel(idc_);
    IssueSpec d;
    d.correlation = "D";
    d.idem_key = "kD";
    d_ = h_.Issue(d);
  }

  TaskDescription Describe(const TaskId& id) {
    Result<TaskDescription> r;
    h_.DescribeNow(id, &r);
    EXPECT_TRUE(r.ok()) << r.error.message;
    return r.value;
  }

  // Issues "kD" again on the recovered engine: existing=true iff D survived.
  bool DSurvived() {
    bool existing = false;
    h_.core()->Apply(IssueCmd{{.input = "{}", .correlation = "D", .idempotency_key = "kD"},
                              [&](Result<IssueTaskReply> r) {
                                EXPECT_TRUE(r.ok());
                                existing = r.value.existing;
                              }});
    EXPECT_TRUE(h_.core()->Commit().ok());
    return existing;
  }

  void ExpectSecondBatchAbsent() {
    EXPECT_EQ(Describe(ida_).state, TaskState::kStarted);
    EXPECT_EQ(Describe(idb_).state, TaskState::kScheduled);
    EXPECT_EQ(Describe(idc_).state, TaskState::kScheduled);
    std::vector<EventRecord> events;
    ASSERT_TRUE(h_.store()->ReadEvents(1, 100, &events).ok());
    // Only the smoke test's two events after recovery.
    EXPECT_EQ(events.size(), 2u);
    EXPECT_FALSE(DSurvived());
  }

  std::unique_ptr<TokenCodec> codec_ = TestCodec();
  CrashHarness h_{7, codec_.get()};
  Pending *a_ = nullptr, *b_ = nullptr, *c_ = nullptr;
  Pending *succ_ = nullptr, *poll_ = nullptr, *cancel_ = nullptr, *d_ = nullptr;
  TaskId ida_, idb_, idc_;
};

TEST_F(CrashScenario, KillAfterApplyLosesTheWholeUnansweredBatch) {
  ApplySecondBatch();
  EXPECT_FALSE(succ_->called || poll_->called || cancel_->called || d_->called)
      << "no reply may run before Commit";
  Outcome outcome = Outcome::kEither;
  ASSERT_NO_FATAL_FAILURE(h_.Crash({.point = KillPoint::kAfterApply}, &outcome));
  EXPECT_EQ(outcome, Outcome::kAbsent);
  ExpectSecondBatchAbsent();
}

TEST_F(CrashScenario, KillInWriteAnswersUnavailableAndLosesTheWholeBatch) {
  ApplySecondBatch();
  Outcome outcome = Outcome::kEither;
  ASSERT_NO_FATAL_FAILURE(h_.Crash(
      {.point = KillPoint::kInWrite, .fault = WriteFault::kPowerOffAtSync, .poisoned_batches = 2},
      &outcome));
  EXPECT_EQ(outcome, Outcome::kAbsent);
  ExpectSecondBatchAbsent();
}

TEST_F(CrashScenario, KillInWriteOnAnAppendFailureLosesTheWholeBatch) {
  ApplySecondBatch();
  Outcome outcome = Outcome::kEither;
  ASSERT_NO_FATAL_FAILURE(h_.Crash(
      {.point = KillPoint::kInWrite, .fault = WriteFault::kAppend, .power_cut = false}, &outcome));
  EXPECT_EQ(outcome, Outcome::kAbsent);
  ExpectSecondBatchAbsent();
}

// A failed sync leaves the batch in the WAL file, unsynced. A power cut that drops it loses the
// whole batch; a process kill (the OS keeps the file) or a torn cut may keep the whole batch,
// though nobody was told: unacknowledged is not the same as absent. Never half of it.
TEST_F(CrashScenario, KillInWriteOnASyncFailureKeepsAllOrNothing) {
  ApplySecondBatch();
  Outcome outcome = Outcome::kEither;
  ASSERT_NO_FATAL_FAILURE(h_.Crash(
      {.point = KillPoint::kInWrite, .fault = WriteFault::kSync, .power_cut = false}, &outcome));
  ASSERT_NE(outcome, Outcome::kEither);
  const bool present = outcome == Outcome::kPresent;
  EXPECT_EQ(Describe(ida_).state, present ? TaskState::kSucceeded : TaskState::kStarted);
  EXPECT_EQ(Describe(idb_).state, present ? TaskState::kStarted : TaskState::kScheduled);
  EXPECT_EQ(Describe(idc_).state, present ? TaskState::kCancelled : TaskState::kScheduled);
  EXPECT_EQ(DSurvived(), present);
}

TEST_F(CrashScenario, KillAfterSyncKeepsTheWholeUnacknowledgedBatch) {
  ApplySecondBatch();
  Outcome outcome = Outcome::kEither;
  ASSERT_NO_FATAL_FAILURE(h_.Crash({.point = KillPoint::kAfterSync, .replies_out = 0}, &outcome));
  EXPECT_EQ(outcome, Outcome::kPresent);
  const TaskDescription a = Describe(ida_);
  EXPECT_EQ(a.state, TaskState::kSucceeded);
  EXPECT_EQ(a.output, "\"done\"");
  const TaskDescription b = Describe(idb_);
  EXPECT_EQ(b.state, TaskState::kStarted);
  EXPECT_EQ(b.worker, "w1");
  EXPECT_EQ(Describe(idc_).state, TaskState::kCancelled);
  EXPECT_TRUE(DSurvived());
  std::vector<EventRecord> events;
  ASSERT_TRUE(h_.store()->ReadEvents(1, 100, &events).ok());
  ASSERT_EQ(events.size(), 4u);  // A, C, then the smoke test's two
  EXPECT_EQ(events[0].task_id, ida_);
  EXPECT_EQ(events[1].task_id, idc_);
}

// A power cut at every possible point of the WAL tail: torn at a random byte, a batch whose
// sync failed is still all or nothing.
TEST_F(CrashScenario, TornWalTailKeepsAllOrNothing) {
  int present = 0;
  for (uint64_t torn = 1; torn <= 6; ++torn) {
    SCOPED_TRACE("torn seed " + std::to_string(torn));
    IssueSpec spec;
    spec.correlation = "T" + std::to_string(torn);
    spec.input = "{\"pad\":\"" + std::string(3000, 'y') + "\"}";
    h_.Issue(spec);
    h_.Issue(spec);
    for (const ModelTask& t : h_.tasks()) {
      if (t.state == TaskState::kStarted && t.activity < 0) h_.Cancel(t.id);
    }
    Outcome outcome = Outcome::kEither;
    ASSERT_NO_FATAL_FAILURE(h_.Crash(
        {.point = KillPoint::kInWrite, .fault = WriteFault::kSync, .torn_seed = torn}, &outcome));
    present += outcome == Outcome::kPresent;
  }
  std::printf("  torn WAL tails: batch present after %d of 6 cuts\n", present);
}

// After a failed write the engine is poisoned for good: every later command, timer and sync is
// refused kUnavailable and nothing more reaches a file, even once the disk works again and the
// store is closed cleanly.
TEST(CrashSafetyTest, WriteFailurePoisonsTheEngineAndNothingMoreReachesDisk) {
  auto codec = TestCodec();
  CrashHarness h(11, codec.get());
  ASSERT_NO_FATAL_FAILURE(h.Open());
  h.CreateActivity();
  ASSERT_NO_FATAL_FAILURE(h.CommitAndDeliver());
  IssueSpec a, b;
  a.correlation = "A";
  a.timeout_s = 5;
  b.activity = 0;
  b.correlation = "B";
  b.s2s_s = 2;
  Pending* pa = h.Issue(a, true);
  h.Issue(b, true);
  ASSERT_NO_FATAL_FAILURE(h.CommitAndDeliver());
  Dump before;
  ASSERT_NO_FATAL_FAILURE(h.DumpStore(&before));

  // The write fails at the append: the batch never reaches the WAL.
  h.fs()->FailAppends(0);
  std::vector<Result<IssueTaskReply>> replies;
  auto record = [&](Result<IssueTaskReply> r) { replies.push_back(r); };
  h.core()->Apply(IssueCmd{{.input = "{}", .correlation = "C"}, record});
  EXPECT_FALSE(h.core()->Commit().ok());
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].error.code, ErrorCode::kUnavailable);
  EXPECT_TRUE(h.core()->poisoned());

  h.fs()->ClearFailures();
  const uint64_t appends = h.fs()->append_count();
  const uint64_t syncs = h.fs()->sync_count();
  // Everything after is refused: commands, the timers of A and B, a barrier.
  std::vector<ErrorCode> codes;
  h.clock().Advance(60'000);
  for (int batch = 0; batch < 3; ++batch) {
    auto code = [&codes](auto r) { codes.push_back(r.error.code); };
    h.core()->Apply(IssueCmd{{.input = "{}", .correlation = "late"}, code});
    h.core()->Apply(CreateActivityCmd{{"late"}, code});
    h.core()->Apply(SuccessCmd{h.IdOf(pa), "\"late\"", code});
    h.core()->Apply(PollCmd{{std::string(kArnPrefix) + "act-0", "w"}, 99, code});
    h.core()->Apply(SyncCmd{code});
    h.core()->Expire(h.clock().NowMs(), SIZE_MAX);
    EXPECT_FALSE(h.core()->Commit().ok());
  }
  ASSERT_EQ(codes.size(), 15u);
  for (ErrorCode c : codes) EXPECT_EQ(c, ErrorCode::kUnavailable);
  EXPECT_EQ(h.core()->last_event_seq(), 0u) << "no timer may fire on a poisoned engine";
  EXPECT_EQ(h.fs()->append_count(), appends);
  EXPECT_EQ(h.fs()->sync_count(), syncs);

  Dump after;
  ASSERT_NO_FATAL_FAILURE(h.DumpStore(&after));
  EXPECT_TRUE(after == before) << Diff(before, after, "before");
  // A clean close and a reopen (the harness's crash cycle, verifying that the disk holds exactly
  // what was acknowledged); then the overdue timers of A (overall) and B (schedule-to-start)
  // fire at the first Expire after recovery.
  Outcome outcome = Outcome::kEither;
  ASSERT_NO_FATAL_FAILURE(
      h.Crash({.point = KillPoint::kAfterApply, .clean_close = true}, &outcome));
  EXPECT_EQ(outcome, Outcome::kEither);
  std::map<std::string, TimeoutKind> fired;
  for (const EventRecord& e : h.acked_events()) {
    if (e.state == TaskState::kTimedOut) fired[e.correlation] = e.timeout_kind;
  }
  EXPECT_EQ(fired, (std::map<std::string, TimeoutKind>{{"A", TimeoutKind::kOverall},
                                                       {"B", TimeoutKind::kScheduleToStart}}));
}

// Deadlines across a crash: overall and schedule-to-start deadlines passed during the outage
// fire on the first Expire after recovery; a heartbeat clock restarts from the recovery instead.
TEST(CrashSafetyTest, OverdueTimersFireOnTheFirstExpireAfterRecovery) {
  auto codec = TestCodec();
  CrashHarness h(13, codec.get());
  ASSERT_NO_FATAL_FAILURE(h.Open());
  h.CreateActivity();
  ASSERT_NO_FATAL_FAILURE(h.CommitAndDeliver());
  IssueSpec overall, s2s, heartbeat, later;
  overall.correlation = "overall";
  overall.timeout_s = 3;
  s2s.activity = 0;
  s2s.correlation = "s2s";
  s2s.s2s_s = 2;
  heartbeat.correlation = "heartbeat";
  heartbeat.heartbeat_s = 2;
  later.correlation = "later";
  later.timeout_s = 100;
  h.Issue(overall, true);
  h.Issue(s2s, true);
  h.Issue(heartbeat, true);
  h.Issue(later, true);
  ASSERT_NO_FATAL_FAILURE(h.CommitAndDeliver());
  const int64_t restart = kStartMs + 10'000;
  Outcome outcome = Outcome::kEither;
  ASSERT_NO_FATAL_FAILURE(h.Crash(
      {.point = KillPoint::kAfterApply, .restart_ms = restart - h.clock().NowMs()}, &outcome));
  std::map<std::string, TimeoutKind> fired;
  for (const EventRecord& e : h.acked_events()) {
    if (e.state == TaskState::kTimedOut) fired[e.correlation] = e.timeout_kind;
  }
  EXPECT_EQ(fired, (std::map<std::string, TimeoutKind>{{"overall", TimeoutKind::kOverall},
                                                       {"s2s", TimeoutKind::kScheduleToStart}}));
  const ModelTask* hb = h.TaskByCorrelation("heartbeat");
  ASSERT_NE(hb, nullptr);
  const TaskId hb_id = hb->id;
  Result<TaskDescription> d;
  ASSERT_NO_FATAL_FAILURE(h.DescribeNow(hb_id, &d));
  EXPECT_EQ(d.value.state, TaskState::kStarted);
  EXPECT_EQ(d.value.heartbeat_deadline_ms, restart + 2000);
  // Not before its restarted deadline, then at it.
  h.clock().Set(restart + 1999);
  ASSERT_NO_FATAL_FAILURE(h.ExpireAll());
  ASSERT_NO_FATAL_FAILURE(h.CommitAndDeliver());
  ASSERT_NO_FATAL_FAILURE(h.DescribeNow(hb_id, &d));
  EXPECT_EQ(d.value.state, TaskState::kStarted);
  h.clock().Set(restart + 2000);
  ASSERT_NO_FATAL_FAILURE(h.ExpireAll());
  ASSERT_NO_FATAL_FAILURE(h.CommitAndDeliver());
  ASSERT_NO_FATAL_FAILURE(h.DescribeNow(hb_id, &d));
  EXPECT_EQ(d.value.state, TaskState::kTimedOut);
  EXPECT_EQ(d.value.timeout_kind, TimeoutKind::kHeartbeat);
}

// The FaultFs hook the in-write kill point uses: the sync fails and the machine is off from that
// instant, so neither the data that sync was to cover nor anything after it survives the cut.
TEST(CrashSafetyTest, FaultFsPowerOffAtSyncStopsEverythingAtThatSync) {
  CrashDir dir;
  auto fs = std::make_shared<FaultFs>();
  const std::string path = dir.path() + "/f";
  std::unique_ptr<rocksdb::FSWritableFile> f;
  const rocksdb::IOOptions io;
  ASSERT_TRUE(fs->NewWritableFile(path, rocksdb::FileOptions(), &f, nullptr).ok());
  fs->PowerOffAtSync(1);
  ASSERT_TRUE(f->Append("one|", io, nullptr).ok());
  ASSERT_TRUE(f->Sync(io, nullptr).ok());  // the one sync allowed
  ASSERT_TRUE(f->Append("two|", io, nullptr).ok());
  rocksdb::IOStatus s = f->Sync(io, nullptr);
  EXPECT_TRUE(s.IsIOError());
  EXPECT_NE(s.ToString().find("power cut at sync"), std::string::npos) << s.ToString();
  EXPECT_FALSE(f->Append("three", io, nullptr).ok()) << "the machine is off";
  std::unique_ptr<rocksdb::FSWritableFile> g;
  EXPECT_FALSE(fs->NewWritableFile(dir.path() + "/g", rocksdb::FileOptions(), &g, nullptr).ok());
  fs->ClearFailures();  // disarms, but does not turn the machine back on
  EXPECT_FALSE(f->Append("four", io, nullptr).ok());
  EXPECT_EQ(fs->sync_count(), 1u);
  EXPECT_EQ(fs->unsynced_bytes(), 4u);
  f.reset();
  ASSERT_TRUE(fs->DropUnsyncedData().ok());
  fs->SetActive(true);
  uint64_t size = 0;
  ASSERT_TRUE(fs->GetFileSize(path, io, &size, nullptr).ok());
  EXPECT_EQ(size, 4u) << "only the synced 'one|' survives";
}

}  // namespace
}  // namespace tw
