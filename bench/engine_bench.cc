// The durable engine (Engine over the RocksDB store, --durability sync: every batch's WAL synced
// before its replies) against the disk it writes to. Each Engine/<workload> records the exact
// RocksDB WriteBatches the engine committed (RocksStoreTestHooks::on_batch_committed: serialized
// rocksdb::WriteBatch data, batch boundaries kept); Baseline/<workload> replays them into a fresh
// store with the same options and column families through raw DB::Write with sync = true, timing
// only the writes. So the baseline writes the same keys and bytes in the same group commits, and
// the ratio is what the engine costs on top of its own disk writes.
//
//   IssueSucceed        callback tasks, issue then success; a client thread keeps --window tasks
//                       in flight, sending the success as each issue reply arrives.
//                       items = durable transitions (2 per task).
//   ActivityLifecycle   activity tasks: issue, take (a poll per task, waiting when the queue is
//                       empty), heartbeat x3, success; --window tasks in flight.
//                       items = durable transitions (issue, start, success: 3 per task);
//                       counters: calls_per_second (6 engine calls per task).
//   Memory/LiveTasks    issue --live_tasks callback tasks (1 s timeout, ManualClock, durability
//                       none: setup speed) and measure memory per live task: EngineStats::
//                       index_bytes / live (task index + timing wheel), the RSS delta
//                       (/proc/self/statm, after malloc_trim) and the RSS delta minus RocksDB's
//                       memtables, block cache and table readers.
//   Recovery/LiveTasks/clean
//                       reopen after a clean close (the store flushes its memtables on close,
//                       so no WAL replay): store open + Engine::Open until ready; counters
//                       store_open_s and engine_open_s split it.
//   Recovery/LiveTasks/after_crash
//                       the same after a close that left everything only in the WAL, as kill -9
//                       does (RocksStoreTestHooks::flush_on_close = false at the build): the open
//                       replays the WAL. Rebuilds the database first (untimed).
//   AtScale/prefetch:on|off/run:i
//                       --live_tasks live callback tasks (1 h timeout) that a client completes
//                       at random and replaces, --window rounds in flight: success of a random
//                       live task, then the issue of its replacement, so the live count stays
//                       put and every completion reaches a cold task, timer and index bucket.
//                       Durability sync. items = durable transitions (2 per round, --tasks
//                       rounds). prefetch:off sets EngineOptions::prefetch_min_live_tasks past
//                       the live count, so each :on/:off pair (back to back, on one database,
//                       built once untimed; odd pairs run :on first, even ones :off first)
//                       measures the engine thread's prefetch hints; the second line of a pair
//                       reports on_vs_off (items/s) and the CPU counters show the engine
//                       thread's cost per item.
//   MassTimeout         open it again with durability sync, advance the ManualClock past every
//                       deadline, Sync(): time until every TIMED_OUT event is durable.
//                       items = timeouts. Consumes the database (a later run rebuilds it).
//
// The client thread talks to the engine the way the RPC server does: the calls it makes for
// each drain of its inbox go in corked (Engine::Cork: one engine wake-up per drain), and its
// inbox wakes it once per reply burst of the engine thread (engine/reply_burst.h).
//
// Every timed region is measured by hand (UseManualTime, one iteration): setup, engine start
// and shutdown, and building the baseline's batches stay outside. Temp dirs are under /tmp and
// removed afterwards. Baseline/<w> reports engine_vs_baseline = engine items/s / baseline items/s
// of the Engine/<w> run just before it (recording one first, untimed, if filtered out). The
// throughput workloads run --reps times as alternating pairs Engine/<w>/run:i, Baseline/<w>/run:i.
//
// Run: build/release/bench/tw_bench_engine   (or `make bench`; docs/BENCHMARKS.md has results)
//      own flags: --tasks=N (throughput workloads, default 200000) --window=N (default 2048)
//                 --live_tasks=N (default 1000000) --reps=N (throughput workloads, default 3)
//      TW_BENCH_COMMIT=adaptive|inline|pipelined: EngineOptions::commit (default: its default)
//      TW_BENCH_PAYLOAD_KEY=1: the engine's store encrypts payloads at rest (one payload key,
//                 RocksStoreOptions::payload_keys); the baseline replays the same sealed batches
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/limits.h"
#include "engine/reply_burst.h"
#include "storage/rocksdb_store.h"
#include "storage/rocksdb_store_testing.h"
#include "tests/temp_dir.h"

namespace tw {
namespace {

// ---- Configuration (own flags, see main) ----
struct Config {
  size_t tasks = 200'000;         // per throughput run
  size_t window = 2048;           // tasks in flight
  size_t live_tasks = 1'000'000;  // memory / recovery / mass timeout
  int reps = 3;                   // repetitions of the throughput workloads
};
Config g_config;

constexpr int64_t kStartMs = 1'700'000'000'000;
constexpr uint32_t kMassTimeoutS = 1;
constexpr char kInput[] = R"({"order":"A-1234567","amount":1999,"items":3})";
constexpr char kOutput[] = R"({"status":"shipped","tracking":"1Z999AA10123456784"})";

using Steady = std::chrono::steady_clock;
double SecondsSince(Steady::time_point t0) {
  return std::chrono::duration<double>(Steady::now() - t0).count();
}

// CPU time (ns) of the calling thread.
int64_t ThisThreadCpuNs() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// CPU time (ns) of this process's threads named `comm` (the engine names its threads tw-engine
// and tw-writer), summed: the first field of /proc/self/task/<tid>/schedstat.
int64_t NamedThreadsCpuNs(std::string_view comm) {
  int64_t total = 0;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream name(task.path() / "comm");
    std::string n;
    if (!std::getline(name, n) || n != comm) continue;
    std::ifstream stat(task.path() / "schedstat");
    int64_t ns = 0;
    if (stat >> ns) total += ns;
  }
  return total;
}

// Where one engine run's CPU went, per thread: the engine thread, its writer thread, and the
// benchmark's client thread (the caller side: validation, token checks, enqueueing).
struct ThreadCpu {
  int64_t engine_ns = 0;
  int64_t writer_ns = 0;
  int64_t client_ns = 0;
  static ThreadCpu Now() {
    return {NamedThreadsCpuNs("tw-engine"), NamedThreadsCpuNs("tw-writer"), ThisThreadCpuNs()};
  }
  ThreadCpu operator-(const ThreadCpu& o) const {
    return {engine_ns - o.engine_ns, writer_ns - o.writer_ns, client_ns - o.client_ns};
  }
};

// The engine's files inside a benchmark's TempDir.
std::string DbPath(const TempDir& dir) { return dir.path() + "/db"; }
std::string KeyFile(const TempDir& dir) { return dir.path() + "/token.key"; }

size_t RssBytes() {
  std::ifstream f("/proc/self/statm");
  size_t pages_total = 0;
  size_t pages_resident = 0;
  f >> pages_total >> pages_resident;
  return pages_resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

// RSS after handing freed heap pages back, so that the figure counts what is in use.
size_t TrimmedRssBytes() {
  malloc_trim(0);
  return RssBytes();
}

// Memory RocksDB holds in memtables, block cache and table readers (index and filter blocks).
uint64_t RocksMemBytes(rocksdb::DB* db) {
  uint64_t memtables = 0;
  uint64_t readers = 0;
  uint64_t cache = 0;
  db->GetAggregatedIntProperty(rocksdb::DB::Properties::kSizeAllMemTables, &memtables);
  db->GetAggregatedIntProperty(rocksdb::DB::Properties::kEstimateTableReadersMem, &readers);
  // One block cache shared by every column family: ask one of them.
  db->GetIntProperty(rocksdb::DB::Properties::kBlockCacheUsage, &cache);
  return memtables + readers + cache;
}

// The committed batches of one engine run, in order.
struct Recording {
  std::vector<std::string> batches;
  size_t bytes = 0;
  uint64_t items = 0;                  // of the engine run that wrote them
  double engine_items_per_second = 0;  // of the engine run that wrote them
};
std::map<std::string, Recording> g_recordings;

// Records committed batches while `on` is set (engine thread writes, bench thread reads after
// the engine stopped or after a Sync reply, which orders them).
struct Recorder {
  std::atomic<bool> on{false};
  Recording rec;
  std::function<void(std::string_view)> Hook() {
    return [this](std::string_view rep) {
      if (!on.load(std::memory_order_relaxed)) return;
      rec.batches.emplace_back(rep);
      rec.bytes += rep.size();
    };
  }
};

// An engine over a RocksDB store in `dir`.
struct OpenEngine {
  std::unique_ptr<Engine> engine;
  rocksdb::DB* db = nullptr;  // owned by the engine's store
  double store_open_s = 0;
  double engine_open_s = 0;
};

std::string OpenError(const std::string& what, const std::string& why) { return what + ": " + why; }

// TW_BENCH_PAYLOAD_KEY=1: one fixed payload key (a benchmark's data is throwaway), else none.
keyfile::KeyList BenchPayloadKeys() {
  const char* on = std::getenv("TW_BENCH_PAYLOAD_KEY");
  if (on == nullptr || std::string(on) != "1") return {};
  keyfile::Key key;
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(0xA5 ^ i);
  return {{1, key}};
}

bool Open(const TempDir& dir, Durability durability, Clock* clock, Recorder* recorder,
          const EngineOptions& base, OpenEngine* out, std::string* error,
          bool flush_on_close = true) {
  RocksStoreOptions so;
  so.path = DbPath(dir);
  so.payload_keys = BenchPayloadKeys();
  RocksStoreTestHooks hooks;
  hooks.flush_on_close = flush_on_close;
  if (recorder != nullptr) hooks.on_batch_committed = recorder->Hook();
  std::unique_ptr<Store> store;
  const auto t0 = Steady::now();
  Status s = OpenRocksStoreForTesting(so, hooks, &store);
  out->store_open_s = SecondsSince(t0);
  if (!s.ok()) {
    *error = OpenError("OpenRocksStore", s.ToString());
    return false;
  }
  out->db = RocksDbOf(store.get());
  EngineOptions eo = base;
  eo.durability = durability;
  eo.token_key_file = KeyFile(dir);
  const char* commit = std::getenv("TW_BENCH_COMMIT");  // the default unless it names another
  if (commit != nullptr && !ParseCommitMode(commit, &eo.commit)) {
    *error = "TW_BENCH_COMMIT must be adaptive, inline or pipelined";
    return false;
  }
  const auto t1 = Steady::now();
  auto r = Engine::Open(eo, std::move(store), clock);
  out->engine_open_s = SecondsSince(t1);
  if (!r.ok()) {
    *error = OpenError("Engine::Open", r.error.message);
    return false;
  }
  out->engine = std::move(r.value);
  return true;
}

// Blocks until a callback-style call answers.
template <typename T, typename F>
Result<T> Await(F&& call) {
  std::promise<Result<T>> p;
  auto f = p.get_future();
  call([&p](Result<T> r) { p.set_value(std::move(r)); });
  return f.get();
}

EngineStats Stats(Engine* e) {
  return Await<EngineStats>([e](Callback<EngineStats> cb) { e->GetStats(std::move(cb)); }).value;
}

// ---- Client side: replies hop from the engine thread to the client thread ----

enum class Kind : uint8_t { kIssued, kTaken, kHeartbeat, kSucceeded };
struct Msg {
  Kind kind;
  uint32_t lane;
  bool ok;
  std::string token;  // kIssued (callback tasks), kTaken
  std::string error;
};

// Engine-thread producers, one client-thread consumer. The consumer takes everything at once,
// and a wake-up is sent only when it sleeps: about one hand-off per engine batch.
class Inbox final : public ReplyBurst::Sink {
 public:
  // Like the RPC server's mailbox: inside the engine's reply burst, a sleeping client is woken
  // once, at the burst's end (or every kBurstRepliesPerWake replies).
  void Push(Msg m) {
    std::unique_lock<std::mutex> lock(mu_);
    items_.push_back(std::move(m));
    if (sleeping_ && !ReplyBurst::DeferWake(this, items_.size())) {
      sleeping_ = false;
      lock.unlock();
      cv_.notify_one();
    }
  }
  void FlushBurst() override {
    std::unique_lock<std::mutex> lock(mu_);
    if (sleeping_ && !items_.empty()) {
      sleeping_ = false;
      lock.unlock();
      cv_.notify_one();
    }
  }
  void TakeAll(std::vector<Msg>* out) {
    out->clear();
    std::unique_lock<std::mutex> lock(mu_);
    while (items_.empty()) {
      sleeping_ = true;
      cv_.wait(lock);
    }
    sleeping_ = false;
    out->swap(items_);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Msg> items_;
  bool sleeping_ = false;
};

template <typename T>
Callback<T> ToInbox(Inbox* inbox, Kind kind, uint32_t lane) {
  return [inbox, kind, lane](Result<T> r) {
    Msg m{kind, lane, r.ok(), {}, {}};
    if (!r.ok()) m.error = std::string(ErrorCodeName(r.error.code)) + ": " + r.error.message;
    if constexpr (std::is_same_v<T, IssueTaskReply>) {
      m.token = std::move(r.value.token);
    } else if constexpr (std::is_same_v<T, GetActivityTaskReply>) {
      m.token = std::move(r.value.token);
      if (m.ok && m.token.empty()) {
        m.ok = false;
        m.error = "poll answered empty";
      }
    }
    inbox->Push(std::move(m));
  };
}

// The client's two calls on callback tasks, answered into `inbox` tagged with `lane`.
void IssueCallbackTask(Engine* e, Inbox* inbox, uint32_t lane, uint32_t timeout_s) {
  IssueTaskRequest req;
  req.input = kInput;
  req.timeout_s = timeout_s;
  e->IssueTask(std::move(req), ToInbox<IssueTaskReply>(inbox, Kind::kIssued, lane));
}
void SucceedTask(Engine* e, Inbox* inbox, uint32_t lane, std::string token) {
  SendTaskSuccessRequest req;
  req.token = std::move(token);
  req.output = kOutput;
  e->SendTaskSuccess(std::move(req), ToInbox<CompletionReply>(inbox, Kind::kSucceeded, lane));
}

// What one engine run measured.
struct RunResult {
  bool ok = false;
  std::string error;
  double seconds = 0;
  uint64_t items = 0;
  uint64_t batches = 0;
  uint64_t commands = 0;
  ThreadCpu cpu;  // over the timed region
  Recording rec;
};

// Callback tasks: issue, and success as each issue reply arrives.
RunResult RunIssueSucceed(size_t tasks, size_t window) {
  RunResult out;
  TempDir dir{"tw_bench_engine"};
  SystemClock clock;
  Recorder recorder;
  OpenEngine oe;
  if (!Open(dir, Durability::kSync, &clock, &recorder, EngineOptions(), &oe, &out.error)) {
    return out;
  }
  Engine* e = oe.engine.get();
  const EngineStats before = Stats(e);
  Inbox inbox;
  std::vector<Msg> msgs;
  size_t issued = 0;
  size_t done = 0;
  auto issue = [&](uint32_t lane) {
    IssueCallbackTask(e, &inbox, lane, 3600);
    ++issued;
  };
  recorder.on = true;
  const ThreadCpu cpu0 = ThreadCpu::Now();
  const auto t0 = Steady::now();
  for (size_t i = 0; i < std::min(window, tasks); ++i) issue(static_cast<uint32_t>(i));
  while (done < tasks && out.error.empty()) {
    inbox.TakeAll(&msgs);
    CorkGuard cork(e);  // one engine wake-up per drain of replies, as the RPC server does
    for (Msg& m : msgs) {
      if (!m.ok) {
        out.error = m.error;
        break;
      }
      if (m.kind == Kind::kIssued) {
        SucceedTask(e, &inbox, m.lane, std::move(m.token));
      } else {
        ++done;
        if (issued < tasks) issue(m.lane);
      }
    }
  }
  out.seconds = SecondsSince(t0);
  out.cpu = ThreadCpu::Now() - cpu0;
  recorder.on = false;
  const EngineStats after = Stats(e);
  oe.engine->Stop();
  if (!out.error.empty()) return out;
  out.ok = true;
  out.items = 2 * tasks;
  out.batches = after.batches - before.batches;
  out.commands = after.commands - before.commands;
  out.rec = std::move(recorder.rec);
  return out;
}

// Activity tasks: issue, take, heartbeat x3, success. Each lane issues a task and polls once;
// it works whatever task its poll got (FIFO), so issues and takes stay balanced.
RunResult RunActivityLifecycle(size_t tasks, size_t window) {
  RunResult out;
  TempDir dir{"tw_bench_engine"};
  SystemClock clock;
  Recorder recorder;
  OpenEngine oe;
  EngineOptions eo;
  eo.pollers_per_activity_max =
      std::max<uint32_t>(eo.pollers_per_activity_max, static_cast<uint32_t>(window));
  if (!Open(dir, Durability::kSync, &clock, &recorder, eo, &oe, &out.error)) return out;
  Engine* e = oe.engine.get();
  auto act = Await<ActivityInfo>([e](Callback<ActivityInfo> cb) {
    e->CreateActivity(CreateActivityRequest{"bench-activity"}, std::move(cb));
  });
  if (!act.ok()) {
    out.error = act.error.message;
    return out;
  }
  const std::string arn = act.value.arn;
  const EngineStats before = Stats(e);
  Inbox inbox;
  std::vector<Msg> msgs;
  std::vector<std::string> token(window);
  std::vector<uint8_t> beats(window, 0);
  size_t started = 0;
  size_t done = 0;
  uint64_t next_poll_id = 1;
  auto start = [&](uint32_t lane) {
    IssueTaskRequest req;
    req.activity_arn = arn;
    req.input = kInput;
    req.timeout_s = 3600;
    req.heartbeat_s = 60;
    e->IssueTask(std::move(req), ToInbox<IssueTaskReply>(&inbox, Kind::kIssued, lane));
    GetActivityTaskRequest poll;
    poll.activity_arn = arn;
    poll.worker_name = "bench-worker";
    e->GetActivityTask(std::move(poll), next_poll_id++,
                       ToInbox<GetActivityTaskReply>(&inbox, Kind::kTaken, lane));
    ++started;
  };
  auto heartbeat = [&](uint32_t lane) {
    e->SendTaskHeartbeat(SendTaskHeartbeatRequest{token[lane]},
                         ToInbox<Empty>(&inbox, Kind::kHeartbeat, lane));
  };
  recorder.on = true;
  const ThreadCpu cpu0 = ThreadCpu::Now();
  const auto t0 = Steady::now();
  for (size_t i = 0; i < std::min(window, tasks); ++i) start(static_cast<uint32_t>(i));
  while (done < tasks && out.error.empty()) {
    inbox.TakeAll(&msgs);
    CorkGuard cork(e);  // one engine wake-up per drain of replies, as the RPC server does
    for (Msg& m : msgs) {
      if (!m.ok) {
        out.error = m.error;
        break;
      }
      switch (m.kind) {
        case Kind::kIssued:
          break;
        case Kind::kTaken:
          token[m.lane] = std::move(m.token);
          beats[m.lane] = 0;
          heartbeat(m.lane);
          break;
        case Kind::kHeartbeat:
          if (++beats[m.lane] < 3) {
            heartbeat(m.lane);
          } else {
            SendTaskSuccessRequest req;
            req.token = token[m.lane];
            req.output = kOutput;
            e->SendTaskSuccess(std::move(req),
                               ToInbox<CompletionReply>(&inbox, Kind::kSucceeded, m.lane));
          }
          break;
        case Kind::kSucceeded:
          ++done;
          if (started < tasks) start(m.lane);
          break;
      }
    }
  }
  out.seconds = SecondsSince(t0);
  out.cpu = ThreadCpu::Now() - cpu0;
  recorder.on = false;
  const EngineStats after = Stats(e);
  oe.engine->Stop();
  if (!out.error.empty()) return out;
  out.ok = true;
  out.items = 3 * tasks;
  out.batches = after.batches - before.batches;
  out.commands = after.commands - before.commands;
  out.rec = std::move(recorder.rec);
  return out;
}

// ---- The database of --live_tasks live callback tasks (memory, recovery, mass timeout) ----

struct MillionDb {
  std::unique_ptr<TempDir> dir;
  size_t live = 0;
  bool consumed = true;  // no database, or its tasks already timed out
  bool opened = false;   // opened since the build: its WAL was replayed and flushed
  bool in_wal = false;   // built without a flush at close and not opened since
  // What building it measured.
  double build_s = 0;
  uint64_t index_bytes = 0;
  int64_t rss_delta = 0;
  int64_t rocks_mem_delta = 0;
};
MillionDb g_million;

// Issues `n` callback tasks with a kMassTimeoutS timeout at kStartMs (the clock never moves, so
// none fires), durability none. Measures memory before and after.
bool BuildMillion(size_t n, std::string* error, bool flush_on_close = true) {
  g_million = MillionDb();
  g_million.dir = std::make_unique<TempDir>("tw_bench_engine");
  ManualClock clock(kStartMs);
  OpenEngine oe;
  if (!Open(*g_million.dir, Durability::kNone, &clock, nullptr, EngineOptions(), &oe, error,
            flush_on_close)) {
    return false;
  }
  Engine* e = oe.engine.get();
  Stats(e);
  const uint64_t rocks0 = RocksMemBytes(oe.db);
  const size_t rss0 = TrimmedRssBytes();

  constexpr size_t kWindow = 16'384;
  Inbox inbox;
  std::vector<Msg> msgs;
  size_t issued = 0;
  size_t done = 0;
  auto issue = [&] {
    IssueTaskRequest req;
    req.input = kInput;
    req.timeout_s = kMassTimeoutS;
    e->IssueTask(std::move(req), [&inbox](Result<IssueTaskReply> r) {
      Msg m{Kind::kIssued, 0, r.ok(), {}, {}};
      if (!r.ok()) m.error = r.error.message;
      inbox.Push(std::move(m));
    });
    ++issued;
  };
  const auto t0 = Steady::now();
  for (size_t i = 0; i < std::min(kWindow, n); ++i) issue();
  while (done < n && error->empty()) {
    inbox.TakeAll(&msgs);
    CorkGuard cork(e);  // one engine wake-up per drain of replies, as the RPC server does
    for (Msg& m : msgs) {
      if (!m.ok) {
        *error = m.error;
        break;
      }
      ++done;
      if (issued < n) issue();
    }
  }
  g_million.build_s = SecondsSince(t0);
  if (!error->empty()) {
    oe.engine->Stop();  // its remaining callbacks use `inbox`
    return false;
  }
  msgs = std::vector<Msg>();
  const EngineStats st = Stats(e);
  const uint64_t rocks1 = RocksMemBytes(oe.db);
  const size_t rss1 = TrimmedRssBytes();
  oe.engine->Stop();
  if (st.live_tasks != n) {
    *error = "live tasks " + std::to_string(st.live_tasks) + " != " + std::to_string(n);
    return false;
  }
  g_million.live = n;
  g_million.consumed = false;
  g_million.in_wal = !flush_on_close;
  g_million.index_bytes = st.index_bytes;
  g_million.rss_delta = static_cast<int64_t>(rss1) - static_cast<int64_t>(rss0);
  g_million.rocks_mem_delta = static_cast<int64_t>(rocks1) - static_cast<int64_t>(rocks0);
  return true;
}

bool EnsureMillion(std::string* error) {
  if (!g_million.consumed && g_million.live == g_config.live_tasks) return true;
  return BuildMillion(g_config.live_tasks, error);
}

// ---- At scale: random completions among --live_tasks live tasks ----

struct ScaleDb {
  std::unique_ptr<TempDir> dir;
  std::vector<std::string> tokens;  // one per live task, replaced as runs complete them
  double items_per_second[2] = {};  // the last run with prefetch off [0] and on [1]
};
ScaleDb g_scale;

constexpr uint32_t kScaleTimeoutS = 3600;

// Issues --live_tasks callback tasks, durability none, keeping their tokens. Untimed.
bool BuildScaleDb(std::string* error) {
  g_scale = ScaleDb();
  g_scale.dir = std::make_unique<TempDir>("tw_bench_engine");
  SystemClock clock;
  OpenEngine oe;
  if (!Open(*g_scale.dir, Durability::kNone, &clock, nullptr, EngineOptions(), &oe, error)) {
    return false;
  }
  Engine* e = oe.engine.get();
  const size_t n = g_config.live_tasks;
  g_scale.tokens.resize(n);
  constexpr size_t kWindow = 16'384;
  Inbox inbox;
  std::vector<Msg> msgs;
  size_t issued = 0;
  size_t done = 0;
  auto issue = [&] {
    IssueCallbackTask(e, &inbox, static_cast<uint32_t>(issued), kScaleTimeoutS);
    ++issued;
  };
  for (size_t i = 0; i < std::min(kWindow, n); ++i) issue();
  while (done < n && error->empty()) {
    inbox.TakeAll(&msgs);
    CorkGuard cork(e);  // one engine wake-up per drain of replies, as the RPC server does
    for (Msg& m : msgs) {
      if (!m.ok) {
        *error = m.error;
        break;
      }
      g_scale.tokens[m.lane] = std::move(m.token);
      ++done;
      if (issued < n) issue();
    }
  }
  oe.engine->Stop();
  return error->empty();
}

RunResult RunAtScale(bool prefetch, size_t rounds, size_t window) {
  RunResult out;
  if (window >= g_config.live_tasks) {
    out.error = "--window must be below --live_tasks (each round in flight holds a live task)";
    return out;
  }
  if (g_scale.tokens.size() != g_config.live_tasks && !BuildScaleDb(&out.error)) return out;
  SystemClock clock;
  OpenEngine oe;
  EngineOptions eo;
  eo.prefetch_min_live_tasks = prefetch ? limits::kPrefetchMinLiveTasksDefault : SIZE_MAX;
  if (!Open(*g_scale.dir, Durability::kSync, &clock, nullptr, eo, &oe, &out.error)) return out;
  Engine* e = oe.engine.get();
  const EngineStats before = Stats(e);
  std::vector<std::string>& tokens = g_scale.tokens;
  std::vector<uint8_t> busy(tokens.size(), 0);
  std::vector<size_t> position(window);  // the live task each lane works on
  uint64_t rng = 0x2545F4914F6CDD1DULL;  // xorshift64: picks the next victim
  Inbox inbox;
  std::vector<Msg> msgs;
  size_t started = 0;
  size_t done = 0;
  auto start_round = [&](uint32_t lane) {
    size_t p;
    do {
      rng ^= rng << 13;
      rng ^= rng >> 7;
      rng ^= rng << 17;
      p = static_cast<size_t>(rng % tokens.size());
    } while (busy[p] != 0);
    busy[p] = 1;
    position[lane] = p;
    SucceedTask(e, &inbox, lane, tokens[p]);
    ++started;
  };
  const ThreadCpu cpu0 = ThreadCpu::Now();
  const auto t0 = Steady::now();
  for (size_t i = 0; i < std::min(window, rounds); ++i) start_round(static_cast<uint32_t>(i));
  while (done < rounds && out.error.empty()) {
    inbox.TakeAll(&msgs);
    CorkGuard cork(e);  // one engine wake-up per drain of replies, as the RPC server does
    for (Msg& m : msgs) {
      if (!m.ok) {
        out.error = m.error;
        break;
      }
      if (m.kind == Kind::kSucceeded) {
        IssueCallbackTask(e, &inbox, m.lane, kScaleTimeoutS);
      } else {
        const size_t p = position[m.lane];
        tokens[p] = std::move(m.token);
        busy[p] = 0;
        ++done;
        if (started < rounds) start_round(m.lane);
      }
    }
  }
  out.seconds = SecondsSince(t0);
  out.cpu = ThreadCpu::Now() - cpu0;
  const EngineStats after = Stats(e);
  oe.engine->Stop();
  if (!out.error.empty()) {
    g_scale = ScaleDb();  // tokens and database no longer agree: rebuild next time
    return out;
  }
  if (after.live_tasks != tokens.size()) {
    out.error =
        "live tasks " + std::to_string(after.live_tasks) + " != " + std::to_string(tokens.size());
    return out;
  }
  out.ok = true;
  out.items = 2 * rounds;
  out.batches = after.batches - before.batches;
  out.commands = after.commands - before.commands;
  return out;
}

// second: the second run of its pair, which reports on_vs_off.
void BM_AtScale(benchmark::State& state, bool prefetch, bool second) {
  RunResult r;
  for (auto _ : state) {
    r = RunAtScale(prefetch, g_config.tasks, g_config.window);
    if (!r.ok) {
      state.SkipWithError(r.error.c_str());
      return;
    }
    state.SetIterationTime(r.seconds);
  }
  const double items = static_cast<double>(r.items);
  const double items_per_second = items / r.seconds;
  state.SetItemsProcessed(static_cast<int64_t>(r.items));
  state.counters["live_tasks"] = static_cast<double>(g_scale.tokens.size());
  state.counters["engine_cpu_ns_per_item"] = static_cast<double>(r.cpu.engine_ns) / items;
  state.counters["writer_cpu_ns_per_item"] = static_cast<double>(r.cpu.writer_ns) / items;
  if (r.batches != 0)
    state.counters["cmds_per_batch"] =
        static_cast<double>(r.commands) / static_cast<double>(r.batches);
  g_scale.items_per_second[prefetch ? 1 : 0] = items_per_second;
  if (second && g_scale.items_per_second[0] > 0 && g_scale.items_per_second[1] > 0) {
    state.counters["on_vs_off"] = g_scale.items_per_second[1] / g_scale.items_per_second[0];
  }
}

// Advance past every deadline, Sync: until every TIMED_OUT event is durable.
RunResult RunMassTimeout() {
  RunResult out;
  if (!EnsureMillion(&out.error)) return out;
  ManualClock clock(kStartMs);
  Recorder recorder;
  OpenEngine oe;
  if (!Open(*g_million.dir, Durability::kSync, &clock, &recorder, EngineOptions(), &oe,
            &out.error)) {
    return out;
  }
  g_million.consumed = true;  // whatever happens next, its tasks are no longer all live
  Engine* e = oe.engine.get();
  const EngineStats before = Stats(e);
  const uint64_t seq0 = e->LastEventSeq();
  recorder.on = true;
  const ThreadCpu cpu0 = ThreadCpu::Now();
  const auto t0 = Steady::now();
  clock.Advance(int64_t{kMassTimeoutS} * 1000 + 1);
  auto synced = Await<Empty>([e](Callback<Empty> cb) { e->Sync(std::move(cb)); });
  out.seconds = SecondsSince(t0);
  out.cpu = ThreadCpu::Now() - cpu0;
  recorder.on = false;
  const EngineStats after = Stats(e);
  if (!synced.ok()) {
    out.error = synced.error.message;
  } else if (e->LastEventSeq() - seq0 != g_million.live || after.live_tasks != 0) {
    out.error = "expected " + std::to_string(g_million.live) + " timeouts, got " +
                std::to_string(e->LastEventSeq() - seq0) + " events and " +
                std::to_string(after.live_tasks) + " live tasks";
  } else {
    // Spot-check both ends of the stream.
    for (uint64_t seq : {seq0 + 1, seq0 + g_million.live}) {
      auto ev = e->ReadEvents(seq, 1);
      if (!ev.ok() || ev.value.size() != 1 || ev.value[0].state != TaskState::kTimedOut ||
          ev.value[0].timeout_kind != TimeoutKind::kOverall) {
        out.error = "event " + std::to_string(seq) + " is not an overall TIMED_OUT";
      }
    }
  }
  oe.engine->Stop();
  if (!out.error.empty()) return out;
  out.ok = true;
  out.items = g_million.live;
  out.batches = after.batches - before.batches;
  out.commands = after.commands - before.commands;
  out.rec = std::move(recorder.rec);
  return out;
}

// ---- Benchmarks ----

using EngineRun = std::function<RunResult()>;

// batches = non-empty group commits (the recorded ones; the engine also counts empty loops).
void SetBatchCounters(benchmark::State& state, const RunResult& r) {
  const double batches = static_cast<double>(r.rec.batches.size());
  state.counters["batches"] = batches;
  if (batches == 0) return;
  state.counters["items_per_batch"] = static_cast<double>(r.items) / batches;
  if (r.commands > r.rec.batches.size()) {
    state.counters["cmds_per_batch"] = static_cast<double>(r.commands) / batches;
  }
  state.counters["bytes_per_batch"] = static_cast<double>(r.rec.bytes) / batches;
}

void KeepRecording(const std::string& workload, RunResult* r) {
  Recording& rec = g_recordings[workload];
  rec = std::move(r->rec);
  rec.items = r->items;
  rec.engine_items_per_second = static_cast<double>(r->items) / r->seconds;
}

void BM_Engine(benchmark::State& state, const std::string& workload, const EngineRun& run) {
  RunResult r;
  for (auto _ : state) {
    r = run();
    if (!r.ok) {
      state.SkipWithError(r.error.c_str());
      return;
    }
    state.SetIterationTime(r.seconds);
  }
  state.SetItemsProcessed(static_cast<int64_t>(r.items));
  SetBatchCounters(state, r);
  const double items = static_cast<double>(r.items);
  state.counters["engine_cpu_ns_per_item"] = static_cast<double>(r.cpu.engine_ns) / items;
  state.counters["writer_cpu_ns_per_item"] = static_cast<double>(r.cpu.writer_ns) / items;
  state.counters["client_cpu_ns_per_item"] = static_cast<double>(r.cpu.client_ns) / items;
  if (workload == "ActivityLifecycle") {
    state.counters["calls_per_second"] = benchmark::Counter(
        static_cast<double>(r.items) * 2, benchmark::Counter::kIsRate);  // 6 calls per 3 items
  }
  KeepRecording(workload, &r);
}

// Replays the Engine/<workload> recording into a fresh store: same options, same column
// families, the same batches with sync on. Only the writes are timed.
void BM_Baseline(benchmark::State& state, const std::string& workload, const EngineRun& run) {
  if (g_recordings.count(workload) == 0) {
    RunResult r = run();  // Engine/<workload> was filtered out: record now, untimed
    if (!r.ok) {
      state.SkipWithError(r.error.c_str());
      return;
    }
    KeepRecording(workload, &r);
  }
  const Recording& rec = g_recordings[workload];
  double seconds = 0;
  int64_t cpu_ns = 0;  // the writing thread's CPU time
  for (auto _ : state) {
    TempDir dir{"tw_bench_engine"};
    RocksStoreOptions so;
    so.path = DbPath(dir);
    std::unique_ptr<Store> store;
    Status s = OpenRocksStore(so, &store);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      return;
    }
    rocksdb::DB* db = RocksDbOf(store.get());
    std::vector<rocksdb::WriteBatch> batches;
    batches.reserve(rec.batches.size());
    for (const std::string& rep : rec.batches) batches.emplace_back(rep);
    rocksdb::WriteOptions wo;
    wo.sync = true;
    const int64_t cpu0 = ThisThreadCpuNs();
    const auto t0 = Steady::now();
    for (rocksdb::WriteBatch& b : batches) {
      rocksdb::Status ws = db->Write(wo, &b);
      if (!ws.ok()) {
        state.SkipWithError(ws.ToString().c_str());
        return;
      }
    }
    seconds = SecondsSince(t0);
    cpu_ns = ThisThreadCpuNs() - cpu0;
    state.SetIterationTime(seconds);
    batches.clear();
    store.reset();
  }
  state.SetItemsProcessed(static_cast<int64_t>(rec.items));
  state.counters["batches"] = static_cast<double>(rec.batches.size());
  state.counters["bytes_per_batch"] =
      rec.batches.empty()
          ? 0.0
          : static_cast<double>(rec.bytes) / static_cast<double>(rec.batches.size());
  // Engine items/s over this run's items/s (the goal: >= 0.7).
  const double baseline_items_per_second = static_cast<double>(rec.items) / seconds;
  state.counters["engine_vs_baseline"] = rec.engine_items_per_second / baseline_items_per_second;
  // Compare with the Engine run's writer_cpu_ns_per_item: the same writes, done there while the
  // engine and client threads share the cores.
  state.counters["writer_cpu_ns_per_item"] =
      static_cast<double>(cpu_ns) / static_cast<double>(rec.items);
}

void BM_Memory(benchmark::State& state) {
  for (auto _ : state) {
    std::string error;
    if (!BuildMillion(g_config.live_tasks, &error)) {
      state.SkipWithError(error.c_str());
      return;
    }
    state.SetIterationTime(g_million.build_s);
  }
  const double live = static_cast<double>(g_million.live);
  state.SetItemsProcessed(static_cast<int64_t>(g_million.live));  // issues/s, durability none
  state.counters["live_tasks"] = live;
  state.counters["index_bytes_per_task"] = static_cast<double>(g_million.index_bytes) / live;
  state.counters["rss_bytes_per_task"] = static_cast<double>(g_million.rss_delta) / live;
  state.counters["rss_minus_rocksdb_per_task"] =
      static_cast<double>(g_million.rss_delta - g_million.rocks_mem_delta) / live;
}

// Opens the database of live tasks and stops again. wal_replay: on a build closed without its
// flush, so the open replays the WAL as after kill -9; else a clean restart. Timed: store open +
// Engine::Open until ready (the engine thread runs); counters split the two.
void BM_Recovery(benchmark::State& state, bool wal_replay) {
  std::string error;
  if (!EnsureMillion(&error)) {
    state.SkipWithError(error.c_str());
    return;
  }
  OpenEngine oe;
  if (wal_replay ? !g_million.in_wal : !g_million.opened) {
    // A clean restart needs an earlier open (untimed); a replay needs a build closed without
    // its flush (as kill -9 leaves it) and not opened since.
    if (wal_replay && !BuildMillion(g_config.live_tasks, &error, /*flush_on_close=*/false)) {
      state.SkipWithError(error.c_str());
      return;
    }
    if (!wal_replay) {
      ManualClock clock(kStartMs);
      if (!Open(*g_million.dir, Durability::kSync, &clock, nullptr, EngineOptions(), &oe, &error)) {
        state.SkipWithError(error.c_str());
        return;
      }
      oe.engine.reset();
      g_million.opened = true;
    }
  }
  size_t rss0 = 0;
  size_t rss1 = 0;
  uint64_t rocks = 0;
  uint64_t recovered = 0;
  for (auto _ : state) {
    rss0 = TrimmedRssBytes();
    ManualClock clock(kStartMs);
    const auto t0 = Steady::now();
    if (!Open(*g_million.dir, Durability::kSync, &clock, nullptr, EngineOptions(), &oe, &error)) {
      state.SkipWithError(error.c_str());
      return;
    }
    state.SetIterationTime(SecondsSince(t0));
    g_million.opened = true;
    g_million.in_wal = false;
    recovered = oe.engine->RecoveredTasks();
    rss1 = TrimmedRssBytes();
    rocks = RocksMemBytes(oe.db);
    oe.engine->Stop();
    oe.engine.reset();
  }
  if (recovered != g_million.live) {
    state.SkipWithError("recovered a different number of tasks than were live");
    return;
  }
  const double live = static_cast<double>(recovered);
  state.SetItemsProcessed(static_cast<int64_t>(recovered));
  state.counters["recovered_tasks"] = live;
  state.counters["store_open_s"] = oe.store_open_s;
  state.counters["engine_open_s"] = oe.engine_open_s;  // Engine::Open to ready
  state.counters["rss_minus_rocksdb_per_task"] =
      (static_cast<double>(rss1) - static_cast<double>(rss0) - static_cast<double>(rocks)) / live;
}

void RegisterAll() {
  const int reps = g_config.reps;
  struct Throughput {
    const char* name;
    EngineRun run;
  };
  const size_t tasks = g_config.tasks;
  const size_t window = g_config.window;
  const Throughput throughput[] = {
      {"IssueSucceed", [=] { return RunIssueSucceed(tasks, window); }},
      {"ActivityLifecycle", [=] { return RunActivityLifecycle(tasks, window); }},
  };
  // Runs alternate, Engine then Baseline replaying that very run, so that each ratio compares
  // two measurements taken back to back (the load on a shared machine drifts over minutes).
  for (const Throughput& t : throughput) {
    const std::string w = t.name;
    const EngineRun run = t.run;
    for (int i = 1; i <= reps; ++i) {
      const std::string suffix = "/run:" + std::to_string(i);
      benchmark::RegisterBenchmark(("Engine/" + w + suffix).c_str(),
                                   [w, run](benchmark::State& st) { BM_Engine(st, w, run); })
          ->UseManualTime()
          ->Iterations(1)
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("Baseline/" + w + suffix).c_str(),
                                   [w, run](benchmark::State& st) { BM_Baseline(st, w, run); })
          ->UseManualTime()
          ->Iterations(1)
          ->Unit(benchmark::kMillisecond);
    }
  }
  // Pairs alternate which half runs first, so that a drift within a pair (RocksDB compacting
  // what the run before left) does not always fall on the same side.
  for (int i = 1; i <= reps; ++i) {
    const bool on_first = i % 2 == 1;
    for (bool prefetch : {on_first, !on_first}) {
      const bool second = prefetch != on_first;
      const std::string name = std::string("AtScale/prefetch:") + (prefetch ? "on" : "off") +
                               "/run:" + std::to_string(i);
      benchmark::RegisterBenchmark(
          name.c_str(),
          [prefetch, second](benchmark::State& st) { BM_AtScale(st, prefetch, second); })
          ->UseManualTime()
          ->Iterations(1)
          ->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::RegisterBenchmark("Memory/LiveTasks", BM_Memory)
      ->UseManualTime()
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Recovery/LiveTasks/clean",
                               [](benchmark::State& st) { BM_Recovery(st, /*wal_replay=*/false); })
      ->UseManualTime()
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Recovery/LiveTasks/after_crash",
                               [](benchmark::State& st) { BM_Recovery(st, /*wal_replay=*/true); })
      ->UseManualTime()
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  const std::string mass = "MassTimeout";
  const EngineRun mass_run = [] { return RunMassTimeout(); };
  benchmark::RegisterBenchmark(
      ("Engine/" + mass).c_str(),
      [mass, mass_run](benchmark::State& st) { BM_Engine(st, mass, mass_run); })
      ->UseManualTime()
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark(
      ("Baseline/" + mass).c_str(),
      [mass, mass_run](benchmark::State& st) { BM_Baseline(st, mass, mass_run); })
      ->UseManualTime()
      ->Iterations(1)
      ->Unit(benchmark::kMillisecond);
}

// Takes --name=value for our own flags out of argv (Google Benchmark rejects unknown ones).
bool TakeFlag(std::string_view arg, std::string_view name, size_t* out) {
  const std::string prefix = "--" + std::string(name) + "=";
  if (arg.substr(0, prefix.size()) != prefix) return false;
  *out = std::stoull(std::string(arg.substr(prefix.size())));
  return true;
}

}  // namespace
}  // namespace tw

int main(int argc, char** argv) {
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    size_t reps = 0;
    std::string_view a = argv[i];
    if (tw::TakeFlag(a, "tasks", &tw::g_config.tasks) ||
        tw::TakeFlag(a, "window", &tw::g_config.window) ||
        tw::TakeFlag(a, "live_tasks", &tw::g_config.live_tasks)) {
      continue;
    }
    if (tw::TakeFlag(a, "reps", &reps)) {
      tw::g_config.reps = static_cast<int>(std::max<size_t>(reps, 1));
      continue;
    }
    argv[kept++] = argv[i];
  }
  argc = kept;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  tw::RegisterAll();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
