// tw_bench_rpc: the Cap'n Proto front end under load, on loopback.
//
// One process: a real engine (RocksDB store, --durability sync unless TW_BENCH_DURABILITY=none;
// EngineOptions::commit as tokenwheeld's default unless TW_BENCH_COMMIT names another)
// behind the real RPC server on 127.0.0.1, and a client (rpc/client.h) on the benchmark thread
// keeping many calls in flight. Setup (store, engine, server, connection) is outside every timed
// region. Each benchmark reports calls/s, durable transitions/s where it makes any, and
// p50 / p99 / p99.9 latency per call in microseconds:
//   BM_Echo                 the ping RPC: no engine work. The transport baseline.
//   BM_IssueSucceed         single calls: issueTask (callback) then sendTaskSuccess with its token.
//   BM_IssueSucceedBatch    the same through issueTasks / sendTaskSuccesses, B items per call.
//   BM_DiskSync             write + fdatasync of one group commit's size in a loop, on the store's
//                           disk: the sync latency every durable call waits for.
//   BM_EchoPaced            pings, open loop, at half the peak measured the same way: the latency
//                           the machine, client and transport give at that rate. The baseline.
//   BM_IssueSucceedPaced    single calls, open loop, at half the peak (a closed loop at 256 in
//                           flight held for 5 s right before, and again right after);
//                           latency from each chain's scheduled start.
// Arguments: the number of calls (chains) in flight, and for batches the batch size; for the
// paced runs the percentage of the peak and the seconds. A paced run also reads the engine's
// commit latencies once a second and counts the seconds with a group commit over 2 ms (a disk
// stall), and which of the seconds over the p99 goal had one. TW_BENCH_PRINT_SECONDS=1 prints
// each paced second's p99, max and slowest commit with its CLOCK_MONOTONIC time, to line up
// with perf or LOG files.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <kj/async-io.h>
#include <kj/async.h>
#include <kj/debug.h>
#include <kj/timer.h>
#include <kj/vector.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_engine.h"
#include "bench/bench_stats.h"
#include "engine/clock.h"
#include "engine/engine.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "storage/rocksdb_store.h"

namespace tw::rpc {
namespace {

using bench::Clock;
using bench::MicrosSince;
using bench::Run;
using bench::SortedQuantile;

// Everything the benchmarks share: built in main(), before any timing.
struct Env {
  std::string dir;
  SystemClock clock;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Server> server;
  std::unique_ptr<Client> client;
};
Env* env = nullptr;

bool SetUp(Env* e) {
  bench::BenchEngine opened;
  if (!bench::OpenBenchEngine("tw-rpc-bench", &e->clock, &opened)) return false;
  e->dir = opened.dir;
  e->engine = std::move(opened.engine);
  ServerOptions server_options;
  server_options.listen_address = "127.0.0.1:0";
  auto server = Server::Start(e->engine.get(), server_options);
  if (!server.ok()) {
    std::fprintf(stderr, "server: %s\n", server.error.message.c_str());
    return false;
  }
  e->server = std::move(server.value);
  auto client = Client::Connect(e->server->address());
  if (!client.ok()) {
    std::fprintf(stderr, "client: %s\n", client.error.message.c_str());
    return false;
  }
  e->client = std::move(client.value);
  std::fprintf(stderr, "tw_bench_rpc: durability=%s commit=%s data=%s server=%s\n",
               opened.sync ? "sync" : "none", CommitModeName(opened.commit), e->dir.c_str(),
               e->server->address().c_str());
  return true;
}

void TearDown(Env* e) {
  e->client.reset();
  e->engine->Stop();
  e->server.reset();
  e->engine.reset();
  std::error_code ec;
  std::filesystem::remove_all(e->dir, ec);
}

// Engine / bridge facts over a run: average engine batch, replies per thread hand-off.
void ReportServerDelta(benchmark::State& state, const ServerStats& before) {
  auto after = env->client->Stats();
  if (!after.ok()) return;
  const double batches = static_cast<double>(after.value.engine.batches - before.engine.batches);
  const double commands = static_cast<double>(after.value.engine.commands - before.engine.commands);
  const double handoffs = static_cast<double>(after.value.reply_handoffs - before.reply_handoffs);
  const double replies =
      static_cast<double>(after.value.replies_delivered - before.replies_delivered);
  if (batches > 0) state.counters["cmds_per_batch"] = commands / batches;
  const double wakes =
      static_cast<double>(after.value.engine.submit_wakes - before.engine.submit_wakes);
  if (wakes > 0) state.counters["cmds_per_wake"] = commands / wakes;
  if (handoffs > 0) state.counters["replies_per_handoff"] = replies / handoffs;
  // The engine's group commits during this benchmark: write + WAL sync time (bucket upper ends,
  // at most 25% high). A call's latency tail far above commit_p99_us is not the disk's.
  const auto commits =
      LatencyDelta(after.value.engine.commit_latency_us, before.engine.commit_latency_us);
  state.counters["commit_p50_us"] = static_cast<double>(LatencyQuantileUs(commits, 0.50));
  state.counters["commit_p99_us"] = static_cast<double>(LatencyQuantileUs(commits, 0.99));
  state.counters["commit_p999_us"] = static_cast<double>(LatencyQuantileUs(commits, 0.999));
}

ServerStats StatsNow() {
  auto s = env->client->Stats();
  return s.ok() ? s.value : ServerStats{};
}

// ---- Closed loops: `window` chains, each starting its next call when the last one answers ----

struct Loop {
  Client* client = nullptr;
  uint64_t remaining = 0;  // chains still to start
  // No chain starts after this (the time-bounded loop of MeasurePeakTasksPerSecond).
  Clock::time_point deadline = Clock::time_point::max();
  Clock::time_point start;                // set by RunClosedLoop
  std::vector<uint64_t> tasks_by_second;  // TaskChain: completed tasks by second, if sized
  Run run;
  std::vector<IssueTaskRequest> batch;  // BM_IssueSucceedBatch
};

kj::Promise<void> EchoChain(Loop& l) {
  if (l.remaining == 0) return kj::READY_NOW;
  --l.remaining;
  const auto t0 = Clock::now();
  return l.client->PingAsync("0123456789abcdef").then([&l, t0](std::string) {
    l.run.latency_us.push_back(MicrosSince(t0));
    ++l.run.calls;
    return EchoChain(l);
  });
}

IssueTaskRequest CallbackTask() {
  IssueTaskRequest req;
  req.input = R"({"order":12345,"item":"widget"})";
  req.timeout_s = 3600;
  return req;
}

kj::Promise<void> TaskChain(Loop& l) {
  if (l.remaining == 0) return kj::READY_NOW;
  if (l.deadline != Clock::time_point::max() && Clock::now() >= l.deadline) return kj::READY_NOW;
  --l.remaining;
  const auto t0 = Clock::now();
  return l.client->IssueTaskAsync(CallbackTask())
      .then([&l, t0](Result<IssueTaskReply> issued) -> kj::Promise<void> {
        l.run.latency_us.push_back(MicrosSince(t0));
        ++l.run.calls;
        if (!issued.ok()) {
          ++l.run.errors;
          return TaskChain(l);
        }
        ++l.run.transitions;
        const auto t1 = Clock::now();
        return l.client->SendTaskSuccessAsync({issued.value.token, R"({"ok":true})"})
            .then([&l, t1](Result<CompletionReply> done) {
              l.run.latency_us.push_back(MicrosSince(t1));
              ++l.run.calls;
              if (done.ok()) {
                ++l.run.transitions;
                if (!l.tasks_by_second.empty()) {
                  const auto second = static_cast<size_t>(
                      std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - l.start)
                          .count());
                  if (second < l.tasks_by_second.size()) ++l.tasks_by_second[second];
                }
              } else {
                ++l.run.errors;
              }
              return TaskChain(l);
            });
      });
}

kj::Promise<void> BatchChain(Loop& l) {
  if (l.remaining == 0) return kj::READY_NOW;
  --l.remaining;
  const auto t0 = Clock::now();
  return l.client->IssueTasksAsync(l.batch).then(
      [&l, t0](BatchResult<IssueTaskReply> issued) -> kj::Promise<void> {
        l.run.latency_us.push_back(MicrosSince(t0));
        ++l.run.calls;
        std::vector<SendTaskSuccessRequest> wins;
        if (issued.ok()) {
          for (const auto& r : issued.value) {
            if (r.ok()) {
              ++l.run.transitions;
              wins.push_back({r.value.token, R"({"ok":true})"});
            } else {
              ++l.run.errors;
            }
          }
        } else {
          ++l.run.errors;
        }
        const auto t1 = Clock::now();
        return l.client->SendTaskSuccessesAsync(wins).then(
            [&l, t1](BatchResult<CompletionReply> done) {
              l.run.latency_us.push_back(MicrosSince(t1));
              ++l.run.calls;
              if (done.ok()) {
                for (const auto& r : done.value) {
                  if (r.ok()) {
                    ++l.run.transitions;
                  } else {
                    ++l.run.errors;
                  }
                }
              } else {
                ++l.run.errors;
              }
              return BatchChain(l);
            });
      });
}

template <typename ChainFn>
double RunClosedLoop(Loop& l, int window, ChainFn chain) {
  const auto t0 = Clock::now();
  l.start = t0;
  kj::Vector<kj::Promise<void>> chains;
  for (int i = 0; i < window; ++i) chains.add(chain(l));
  kj::joinPromises(chains.releaseAsArray()).wait(l.client->wait_scope());
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void BM_Echo(benchmark::State& state) {
  const int window = static_cast<int>(state.range(0));
  for (auto _ : state) {
    Loop l;
    l.client = env->client.get();
    l.remaining = 200'000;
    l.run.latency_us.reserve(l.remaining);
    const double seconds = RunClosedLoop(l, window, EchoChain);
    l.run.Report(state, seconds);
  }
}

void BM_IssueSucceed(benchmark::State& state) {
  const int window = static_cast<int>(state.range(0));
  for (auto _ : state) {
    const ServerStats before = StatsNow();
    Loop l;
    l.client = env->client.get();
    // Tasks (two calls each): 50,000, fewer with few in flight (one at a time waits an fsync).
    l.remaining = std::min<uint64_t>(50'000, 2'000 * static_cast<uint64_t>(window));
    l.run.latency_us.reserve(2 * l.remaining);
    const double seconds = RunClosedLoop(l, window, TaskChain);
    l.run.Report(state, seconds);
    ReportServerDelta(state, before);
  }
}

void BM_IssueSucceedBatch(benchmark::State& state) {
  const int window = static_cast<int>(state.range(0));
  const int batch = static_cast<int>(state.range(1));
  for (auto _ : state) {
    const ServerStats before = StatsNow();
    Loop l;
    l.client = env->client.get();
    l.batch.assign(batch, CallbackTask());
    l.remaining = std::max<uint64_t>(20, 400'000 / batch);  // ~400k tasks
    const double seconds = RunClosedLoop(l, window, BatchChain);
    l.run.Report(state, seconds);
    state.counters["batch"] = batch;
    ReportServerDelta(state, before);
  }
}

// ---- The disk alone ----

// Appends of one group commit's size, each followed by fdatasync, on a file in the store's
// directory, for Arg(0) seconds: the sync latency that every durable call waits for at least
// once, with no RocksDB, engine or RPC around it. A call's tail cannot be shorter than the
// disk's; `syncs_over_2ms` counts the disk's own stalls.
void BM_DiskSync(benchmark::State& state) {
  const double seconds_total = static_cast<double>(state.range(0));
  constexpr size_t kAppendBytes = 2'400;  // ~8 commands: a group commit at half the peak
  const std::string path = env->dir + "/disk-probe";
  for (auto _ : state) {
    const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) {
      state.SkipWithError("cannot create the disk probe file");
      return;
    }
    const std::string data(kAppendBytes, 'x');
    Run run;
    const auto start = Clock::now();
    while (std::chrono::duration<double>(Clock::now() - start).count() < seconds_total) {
      const auto t0 = Clock::now();
      if (::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size()) ||
          ::fdatasync(fd) != 0) {
        ++run.errors;
        break;
      }
      run.latency_us.push_back(MicrosSince(t0));
      ++run.calls;
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    ::close(fd);
    ::unlink(path.c_str());
    run.Report(state, seconds);  // sorts the latencies
    const auto& sorted = run.latency_us;
    state.counters["max_us"] = sorted.empty() ? 0 : sorted.back();
    state.counters["syncs_over_2ms"] = static_cast<double>(
        sorted.end() - std::upper_bound(sorted.begin(), sorted.end(), uint32_t{2'000}));
  }
}

// ---- Open loop at a fixed rate ----

// A periodic tick on the client's loop with microsecond resolution (a timerfd). KJ's Timer rounds
// epoll_wait's timeout up to whole milliseconds, so pacing on it sent calls up to ~1 ms after
// their scheduled start, and that delay, the client's own, was counted in every latency.
class Ticker {
 public:
  Ticker(kj::LowLevelAsyncIoProvider& io, std::chrono::microseconds period) {
    const int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    KJ_SYSCALL(fd);
    stream_ = io.wrapInputFd(fd, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
    itimerspec spec{};
    spec.it_interval.tv_nsec = static_cast<long>(period.count()) * 1000;  // period < 1 s
    spec.it_value = spec.it_interval;
    KJ_SYSCALL(timerfd_settime(fd, 0, &spec, nullptr));
  }
  // Runs the loop until the next tick (at once if one passed since the last call).
  void Wait(kj::WaitScope& scope) {
    uint64_t expirations = 0;
    stream_->read(&expirations, sizeof(expirations)).wait(scope);
  }

 private:
  kj::Own<kj::AsyncInputStream> stream_;
};

// The peak that the paced runs take their rate from: issue+succeed tasks/s of a closed loop of
// 256 chains (BM_IssueSucceed/256) held for kPeakSeconds, so that it pays for the memtable
// flushes and compactions that a sustained rate causes. Untimed by the benchmark.
constexpr int kPeakSeconds = 5;

struct Peak {
  double sustained = 0;     // tasks/s over the whole loop: the peak
  double first_second = 0;  // tasks/s in its first second: a burst into an empty memtable
  double slowest_second = 0;
};

Peak MeasurePeakTasksPerSecond() {
  Loop l;
  l.client = env->client.get();
  l.remaining = UINT64_MAX;
  l.deadline = Clock::now() + std::chrono::seconds(kPeakSeconds);
  l.tasks_by_second.assign(kPeakSeconds, 0);
  const double seconds = RunClosedLoop(l, 256, TaskChain);
  Peak p;
  if (l.run.errors > 0 || seconds <= 0) return p;
  p.sustained = static_cast<double>(l.run.transitions) / 2 / seconds;
  p.first_second = static_cast<double>(l.tasks_by_second.front());
  p.slowest_second =
      static_cast<double>(*std::min_element(l.tasks_by_second.begin(), l.tasks_by_second.end()));
  return p;
}

// The p99 goal for the paced runs (docs/BENCHMARKS.md); each run also counts the seconds that
// missed it.
constexpr uint32_t kGoalP99Us = 5'000;
// A group commit (RocksDB write + WAL sync) this slow is a stall of the disk: the engine's
// commit p99 is ~0.3-0.8 ms, and BM_DiskSync counts the disk's own syncs over 2 ms.
constexpr uint64_t kSlowCommitUs = 2'000;

// The slowest group commit counted in `delta` (a bucket's lower bound: never above the truth).
uint64_t SlowestCommitUs(const LatencyBuckets::Counts& delta) {
  for (size_t i = delta.size(); i-- > 0;) {
    if (delta[i] > 0) return LatencyBuckets::LowerBound(i);
  }
  return 0;
}

struct Paced {
  Client* client = nullptr;
  Clock::time_point start;
  Run run;
  std::vector<uint32_t> late_us;  // per first call: how long after its scheduled start it left
  // Latencies by the second of their chain's scheduled start: a stall of the machine shows as
  // a few bad seconds, slowness of the server as every second being slow.
  std::vector<std::vector<uint32_t>> by_second;
  uint64_t outstanding = 0;
  kj::Own<kj::PromiseFulfiller<void>> drained;

  void Record(Clock::time_point scheduled, uint32_t us) {
    run.latency_us.push_back(us);
    ++run.calls;
    const auto second = static_cast<size_t>(
        std::chrono::duration_cast<std::chrono::seconds>(scheduled - start).count());
    if (second < by_second.size()) by_second[second].push_back(us);
  }
  void Finished() {
    if (--outstanding == 0 && drained.get() != nullptr) drained->fulfill();
  }
};

// One paced chain is two calls, the second sent when the first answers: issueTask then
// sendTaskSuccess, or for the baseline two pings. The first call's latency runs from the
// chain's scheduled start, the second's from when it was sent.
kj::Promise<void> PacedEcho(Paced& p, Clock::time_point scheduled) {
  return p.client->PingAsync("0123456789abcdef").then([&p, scheduled](std::string) {
    p.Record(scheduled, MicrosSince(scheduled));
    const auto t1 = Clock::now();
    return p.client->PingAsync("0123456789abcdef").then([&p, scheduled, t1](std::string) {
      p.Record(scheduled, MicrosSince(t1));
    });
  });
}

kj::Promise<void> PacedTask(Paced& p, Clock::time_point scheduled) {
  return p.client->IssueTaskAsync(CallbackTask())
      .then([&p, scheduled](Result<IssueTaskReply> issued) -> kj::Promise<void> {
        p.Record(scheduled, MicrosSince(scheduled));
        if (!issued.ok()) {
          ++p.run.errors;
          return kj::READY_NOW;
        }
        ++p.run.transitions;
        const auto t1 = Clock::now();
        return p.client->SendTaskSuccessAsync({issued.value.token, R"({"ok":true})"})
            .then([&p, scheduled, t1](Result<CompletionReply> done) {
              p.Record(scheduled, MicrosSince(t1));
              if (done.ok()) {
                ++p.run.transitions;
              } else {
                ++p.run.errors;
              }
            });
      });
}

struct CountingErrorHandler final : kj::TaskSet::ErrorHandler {
  void taskFailed(kj::Exception&&) override { ++failed; }
  uint64_t failed = 0;
};

// Open loop: chains start at a fixed rate, Arg(0) % of the peak tasks/s measured right before,
// for Arg(1) seconds, whether or not earlier ones have answered.
template <kj::Promise<void> (*kChain)(Paced&, Clock::time_point)>
void RunPaced(benchmark::State& state) {
  const double fraction = static_cast<double>(state.range(0)) / 100.0;
  const auto seconds_total = static_cast<size_t>(state.range(1));
  for (auto _ : state) {
    // The peak is measured here, on the store as it is now: capacity on a shared machine swings
    // within seconds, and a peak measured a minute earlier (before the batch runs filled the
    // store) can turn "half the peak" into overload. It is measured again after the run: if
    // the machine slowed meanwhile, the rate was more than half of what it could then do.
    const Peak peak = MeasurePeakTasksPerSecond();
    if (peak.sustained <= 0) {
      state.SkipWithError("the peak measurement failed");
      return;
    }
    const double rate = peak.sustained * fraction;  // chains/s
    const ServerStats before = StatsNow();
    Paced p;
    p.client = env->client.get();
    p.by_second.resize(seconds_total);
    CountingErrorHandler errors;
    kj::TaskSet tasks(errors);
    p.start = Clock::now();
    uint64_t launched = 0;
    // Each second, the slowest group commit of that second (engine stats, read over the same
    // connection once a second): a second over the goal with a stalled commit waited for the
    // disk, one without it did not.
    std::vector<uint64_t> commit_max_us(seconds_total + 1, 0);
    // The Stats call waits for a group commit of its own: the loop launches the chains due
    // meanwhile late, but their latency still runs from their scheduled start.
    ServerStats sampled = before;
    size_t sampled_second = 0;  // the second the commits since `sampled` are counted in
    auto sample_commits = [&](size_t next_second) {
      const ServerStats now = StatsNow();
      commit_max_us[sampled_second] = SlowestCommitUs(
          LatencyDelta(now.engine.commit_latency_us, sampled.engine.commit_latency_us));
      sampled = now;
      sampled_second = std::min(next_second, seconds_total);
    };
    Ticker ticker(p.client->low_level_io(), std::chrono::microseconds(200));
    while (true) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - p.start).count();
      if (elapsed >= static_cast<double>(seconds_total)) break;
      if (static_cast<size_t>(elapsed) > sampled_second) {
        sample_commits(static_cast<size_t>(elapsed));
      }
      const auto due = static_cast<uint64_t>(elapsed * rate);
      for (; launched < due; ++launched) {
        const auto scheduled =
            p.start + std::chrono::duration_cast<Clock::duration>(
                          std::chrono::duration<double>(static_cast<double>(launched) / rate));
        ++p.outstanding;
        p.late_us.push_back(MicrosSince(scheduled));
        // A chain that fails (a disconnect) still finishes, or the drain below would wait forever.
        tasks.add(kChain(p, scheduled)
                      .then([&p]() { p.Finished(); },
                            [&p](kj::Exception&&) {
                              ++p.run.errors;
                              p.Finished();
                            }));
      }
      ticker.Wait(p.client->wait_scope());
    }
    if (p.outstanding > 0) {
      auto paf = kj::newPromiseAndFulfiller<void>();
      p.drained = kj::mv(paf.fulfiller);
      paf.promise.wait(p.client->wait_scope());
    }
    sample_commits(seconds_total);  // the last second and the drain
    const double seconds = std::chrono::duration<double>(Clock::now() - p.start).count();
    p.run.errors += errors.failed;
    p.run.Report(state, seconds);
    ReportServerDelta(state, before);
    const Peak after = MeasurePeakTasksPerSecond();
    state.counters["target_tasks_per_s"] = rate;
    state.counters["peak_tasks_per_s"] = peak.sustained;
    state.counters["peak_first_second_tasks_per_s"] = peak.first_second;
    state.counters["peak_slowest_second_tasks_per_s"] = peak.slowest_second;
    state.counters["peak_after_tasks_per_s"] = after.sustained;
    // The client's own share of the latency: how late it sent the first calls. Counted in
    // p50_us / p99_us too (latency runs from the scheduled start), so it must stay small.
    state.counters["send_late_p50_us"] = SortedQuantile(p.late_us, 0.50);
    state.counters["send_late_p99_us"] = SortedQuantile(p.late_us, 0.99);
    // Each second's own p99: the median second, the worst, and how many missed the goal.
    std::vector<uint32_t> second_p99;
    // A call scheduled in second i may wait for a commit of second i + 1.
    auto stalled = [&](size_t i) {
      return std::max(commit_max_us[i], commit_max_us[i + 1]) >= kSlowCommitUs;
    };
    double over_goal_stalled = 0;
    double seconds_stalled = 0;
    const bool print_seconds = std::getenv("TW_BENCH_PRINT_SECONDS") != nullptr;
    for (size_t i = 0; i < p.by_second.size(); ++i) {
      auto& v = p.by_second[i];
      if (v.empty()) continue;
      second_p99.push_back(SortedQuantile(v, 0.99));
      seconds_stalled += commit_max_us[i] >= kSlowCommitUs ? 1 : 0;
      over_goal_stalled += second_p99.back() > kGoalP99Us && stalled(i) ? 1 : 0;
      if (print_seconds) {
        std::fprintf(stderr, "second %zu at %.3f: p99 %u us max %u us slowest commit %lu us\n", i,
                     std::chrono::duration<double>(p.start.time_since_epoch()).count() +
                         static_cast<double>(i),
                     second_p99.back(), v.back(), static_cast<unsigned long>(commit_max_us[i]));
      }
    }
    // Seconds with a group commit over kSlowCommitUs, and of the seconds over the goal, those
    // with such a commit in them or in the next second: the disk's share of the tail.
    state.counters["seconds_commit_over_2ms"] = seconds_stalled;
    state.counters["seconds_over_5ms_commit_over_2ms"] = over_goal_stalled;
    if (!second_p99.empty()) {
      state.counters["second_p99_median_us"] = SortedQuantile(second_p99, 0.50);
      state.counters["second_p99_max_us"] = second_p99.back();
      state.counters["seconds_over_5ms"] = static_cast<double>(std::count_if(
          second_p99.begin(), second_p99.end(), [](uint32_t us) { return us > kGoalP99Us; }));
    }
  }
}

// The same open loop with pings: the p99 that the machine, the client and the transport give
// at this call rate with no engine work. Runs right before BM_IssueSucceedPaced.
void BM_EchoPaced(benchmark::State& state) { RunPaced<PacedEcho>(state); }
void BM_IssueSucceedPaced(benchmark::State& state) { RunPaced<PacedTask>(state); }

BENCHMARK(BM_Echo)->Arg(1)->Arg(64)->Arg(256)->Iterations(1)->UseManualTime()->Unit(
    benchmark::kMillisecond);
BENCHMARK(BM_IssueSucceed)
    ->Arg(1)
    ->Arg(64)
    ->Arg(256)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_IssueSucceedBatch)
    ->Args({8, 100})
    ->Args({16, 256})
    ->Args({8, 1000})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DiskSync)->Arg(10)->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EchoPaced)
    ->Args({50, 20})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_IssueSucceedPaced)
    ->Args({50, 20})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace tw::rpc

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  tw::rpc::Env e;
  if (!tw::rpc::SetUp(&e)) return 1;
  tw::rpc::env = &e;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  tw::rpc::TearDown(&e);
  return 0;
}
