#include "tools/bench/workloads.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "tools/bench/recorder.h"

namespace tw::bench {
namespace {

constexpr uint32_t kLongClockS = 3600;  // a clock that does not fire during a run
constexpr uint32_t kActivityHeartbeatS = 60;
constexpr int kActivityHeartbeats = 2;     // per task: the activity workload heartbeats twice
constexpr int kPollAttemptsMax = 100;      // empty polls in a row before the run fails
constexpr int64_t kSpreadStepUs = 10'000;  // a paced issue's batches, this far apart
constexpr int64_t kStartSlackUs = 20'000;  // from "all connected" to the first send
constexpr int64_t kStormWaitMs = 600'000;  // past the last deadline, before giving up
constexpr int64_t kCollectSliceMs = 200;   // the storm's collector checks for an abort this often
constexpr double kSweepFractions[] = {0.25, 0.5, 0.75, 0.9};

struct Counts {
  int64_t issued = 0;
  int64_t succeeded = 0;  // completions that applied
  int64_t refused = 0;    // completions refused (finished or timed out: must stay 0 here)
  int64_t polled = 0;
  int64_t polls_empty = 0;
  int64_t heartbeats = 0;
  int64_t heartbeats_refused = 0;

  void Add(const Counts& o) {
    issued += o.issued;
    succeeded += o.succeeded;
    refused += o.refused;
    polled += o.polled;
    polls_empty += o.polls_empty;
    heartbeats += o.heartbeats;
    heartbeats_refused += o.heartbeats_refused;
  }
  nlohmann::json Json() const {
    return {{"issued", issued},
            {"succeeded", succeeded},
            {"refused", refused},
            {"polled", polled},
            {"polls_empty", polls_empty},
            {"heartbeats", heartbeats},
            {"heartbeats_refused", heartbeats_refused}};
  }
};

// One operation of a load workload on one client: answers its durable transitions.
using Operation = std::function<CallResult(Client&, Counts*, int64_t* transitions)>;
// Makes client k's operation.
using OperationFactory = std::function<Operation(int k)>;

// ---- the operations ----

Operation CallbackOp(int batch) {
  return [batch](Client& c, Counts* n, int64_t* transitions) {
    std::vector<std::string> ids;
    CallResult r = c.Issue({false, batch, 300, 0}, &ids);
    if (!r.ok()) return r;
    n->issued += static_cast<int64_t>(ids.size());
    int applied = 0;
    r = c.Succeed(ids, &applied);
    if (r.status == CallStatus::kFailed) return r;
    n->succeeded += applied;
    n->refused += static_cast<int64_t>(ids.size()) - applied;
    *transitions = static_cast<int64_t>(ids.size()) + applied;
    return CallResult::Ok();
  };
}

Operation ActivityOp(int batch) {
  return [batch](Client& c, Counts* n, int64_t* transitions) {
    std::vector<std::string> ids;
    CallResult r = c.Issue({true, batch, 300, kActivityHeartbeatS}, &ids);
    if (!r.ok()) return r;
    n->issued += static_cast<int64_t>(ids.size());
    std::vector<std::string> taken;
    for (size_t i = 0; i < ids.size(); ++i) {
      std::string id;
      for (int attempt = 0; id.empty(); ++attempt) {
        if (attempt == kPollAttemptsMax) return CallResult::Failed("polls found no task");
        r = c.Poll(&id);
        if (!r.ok()) return r;
        if (id.empty()) ++n->polls_empty;
      }
      ++n->polled;
      for (int h = 0; h < kActivityHeartbeats; ++h) {
        r = c.Heartbeat(id);
        if (r.status == CallStatus::kFailed) return r;
        ++(r.ok() ? n->heartbeats : n->heartbeats_refused);
      }
      taken.push_back(std::move(id));
    }
    int applied = 0;
    r = c.Succeed(taken, &applied);
    if (r.status == CallStatus::kFailed) return r;
    n->succeeded += applied;
    n->refused += static_cast<int64_t>(taken.size()) - applied;
    *transitions = static_cast<int64_t>(ids.size() + taken.size()) + applied;
    return CallResult::Ok();
  };
}

// Heartbeats on random live tasks of the client's slice, then one completion and the issue of
// its replacement: the slice keeps its size.
Operation HeartbeatsOp(std::vector<std::string>* slice, int heartbeats, uint64_t seed) {
  auto rng = std::make_shared<std::mt19937_64>(seed);
  return [slice, heartbeats, rng](Client& c, Counts* n, int64_t* transitions) {
    if (slice->empty()) return CallResult::Failed("no live tasks in the slice");
    std::uniform_int_distribution<size_t> pick(0, slice->size() - 1);
    for (int h = 0; h < heartbeats; ++h) {
      const CallResult r = c.Heartbeat((*slice)[pick(*rng)]);
      if (r.status == CallStatus::kFailed) return r;
      ++(r.ok() ? n->heartbeats : n->heartbeats_refused);
    }
    const size_t victim = pick(*rng);
    int applied = 0;
    CallResult r = c.Succeed({(*slice)[victim]}, &applied);
    if (r.status == CallStatus::kFailed) return r;
    n->succeeded += applied;
    n->refused += 1 - applied;
    std::vector<std::string> ids;
    r = c.Issue({false, 1, kLongClockS, kLongClockS / 2}, &ids);
    if (!r.ok()) return r;
    n->issued += 1;
    (*slice)[victim] = std::move(ids.at(0));
    *transitions = 1 + applied;
    return CallResult::Ok();
  };
}

// ---- one load step: C clients, closed-loop or open-loop at `rate` operations/s ----

struct StepResult {
  std::string mode;  // "closed" or "open"
  double target_ops_per_s = 0;
  double elapsed_s = 0;
  Recorder rec{0};
  Counts counts;
  std::string error;
};

StepResult RunStep(System& sys, const WorkloadOptions& o, double rate,
                   const OperationFactory& make_op) {
  const int clients = o.clients;
  const bool open = rate > 0;
  std::atomic<int> connected{0};
  std::atomic<int64_t> start_us{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  StepResult out;
  out.mode = open ? "open" : "closed";
  out.target_ops_per_s = rate;
  std::vector<Recorder> recs;
  std::vector<Counts> counts(static_cast<size_t>(clients));
  recs.reserve(static_cast<size_t>(clients));
  for (int k = 0; k < clients; ++k) recs.emplace_back(0);
  const int64_t length_us = static_cast<int64_t>(o.seconds * 1e6);

  auto fail = [&](const std::string& e) {
    std::lock_guard<std::mutex> lock(mu);
    if (out.error.empty()) out.error = e;
    stop = true;
  };
  std::vector<std::thread> threads;
  for (int k = 0; k < clients; ++k) {
    threads.emplace_back([&, k] {
      std::string error;
      std::unique_ptr<Client> c = sys.Connect(&error);
      connected.fetch_add(1);
      if (c == nullptr) return fail(error);
      Operation op = make_op(k);
      int64_t t0 = 0;
      while ((t0 = start_us.load()) == 0 && !stop) std::this_thread::yield();
      Recorder rec(t0);
      const int64_t end_us = t0 + length_us;
      for (int64_t i = 0; !stop; ++i) {
        int64_t begin = SteadyUs();
        if (open) {
          // Client k sends operations k, k + C, k + 2C, ... of one schedule at `rate`.
          const int64_t intended =
              t0 + static_cast<int64_t>(static_cast<double>(i * clients + k) * 1e6 / rate);
          if (intended >= end_us) break;
          if (intended > begin) {
            std::this_thread::sleep_until(
                std::chrono::steady_clock::time_point(std::chrono::microseconds(intended)));
          }
          begin = intended;  // latency from the intended send time
        } else if (begin >= end_us) {
          break;
        }
        int64_t transitions = 0;
        const CallResult r = op(*c, &counts[static_cast<size_t>(k)], &transitions);
        if (r.status == CallStatus::kFailed) return fail(r.error);
        const int64_t done = SteadyUs();
        rec.Record(done - begin, done, transitions);
      }
      std::lock_guard<std::mutex> lock(mu);
      recs[static_cast<size_t>(k)] = std::move(rec);
    });
  }
  while (connected.load() < clients) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const int64_t t0 = SteadyUs() + kStartSlackUs;
  start_us = t0;
  for (std::thread& t : threads) t.join();
  out.elapsed_s = static_cast<double>(SteadyUs() - t0) / 1e6;
  out.rec = Recorder(t0);
  for (int k = 0; k < clients; ++k) {
    out.rec.Merge(recs[static_cast<size_t>(k)]);
    out.counts.Add(counts[static_cast<size_t>(k)]);
  }
  return out;
}

nlohmann::json StepJson(const StepResult& s) {
  const double elapsed = std::max(s.elapsed_s, 1e-9);
  nlohmann::json j = {
      {"mode", s.mode},
      {"transitions_per_s", static_cast<double>(s.rec.transitions()) / elapsed},
      {"ops_per_s", static_cast<double>(s.rec.operations()) / elapsed},
      {"p50_ms", s.rec.QuantileMs(0.5)},
      {"p99_ms", s.rec.QuantileMs(0.99)},
      {"percentiles_ms", s.rec.Percentiles()},
      {"elapsed_s", s.elapsed_s},
      {"operations", s.rec.operations()},
      {"transitions", s.rec.transitions()},
      {"counts", s.counts.Json()},
      {"timeline_per_s", s.rec.Timeline()},
  };
  if (s.mode == "open") j["target_ops_per_s"] = s.target_ops_per_s;
  if (!s.error.empty()) j["error"] = s.error;
  return j;
}

// Runs the steps (one, or the sweep) and puts the first step's figures at the top.
nlohmann::json RunLoad(System& sys, const WorkloadOptions& o, const OperationFactory& make_op) {
  nlohmann::json steps = nlohmann::json::array();
  StepResult first = RunStep(sys, o, o.sweep ? 0 : o.rate, make_op);
  steps.push_back(StepJson(first));
  if (o.sweep && first.error.empty() && first.elapsed_s > 0) {
    const double max_ops = static_cast<double>(first.rec.operations()) / first.elapsed_s;
    for (double f : kSweepFractions) {
      StepResult s = RunStep(sys, o, f * max_ops, make_op);
      steps.push_back(StepJson(s));
      if (!s.error.empty()) break;
    }
  }
  nlohmann::json j = steps[0];
  j["steps"] = steps;
  for (const auto& s : steps) {
    if (s.contains("error")) j["error"] = s["error"];
  }
  return j;
}

// ---- issuing many tasks: C clients, each its share in batches of up to kBatchItemsMax ----

struct IssueAll {
  std::vector<std::vector<std::string>> slices;  // the ids each client issued
  Recorder rec{0};
  int64_t issued = 0;
  double elapsed_s = 0;
  std::string error;
};

// `spread_s` > 0: each client paces its batches so that the issuing takes about that long (the
// storm's deadlines then spread over it), instead of issuing as fast as the system answers.
IssueAll IssueMany(System& sys, int clients, int64_t tasks, const IssueSpec& spec,
                   double spread_s = 0) {
  IssueAll out;
  out.slices.resize(static_cast<size_t>(clients));
  std::mutex mu;
  std::vector<Recorder> recs;
  const int64_t t0 = SteadyUs();
  for (int k = 0; k < clients; ++k) recs.emplace_back(t0);
  std::vector<std::thread> threads;
  for (int k = 0; k < clients; ++k) {
    threads.emplace_back([&, k] {
      std::string error;
      std::unique_ptr<Client> c = sys.Connect(&error);
      auto& slice = out.slices[static_cast<size_t>(k)];
      // Client k issues its own share, so that each has a slice (the heartbeats workload).
      const int64_t share = tasks * (k + 1) / clients - tasks * k / clients;
      const int64_t spread_us = static_cast<int64_t>(spread_s * 1e6);
      // Paced: a batch every ~10 ms, so that the deadlines do not come in lumps.
      const int64_t batch =
          spread_us > 0
              ? std::clamp<int64_t>(share * kSpreadStepUs / std::max<int64_t>(spread_us, 1), 1,
                                    kBatchItemsMax)
              : kBatchItemsMax;
      for (int64_t issued = 0; c != nullptr && issued < share;) {
        if (spread_us > 0) {
          const int64_t due = t0 + spread_us * issued / std::max<int64_t>(share, 1);
          if (due > SteadyUs()) {
            std::this_thread::sleep_until(
                std::chrono::steady_clock::time_point(std::chrono::microseconds(due)));
          }
        }
        IssueSpec s = spec;
        s.count = static_cast<int>(std::min<int64_t>(batch, share - issued));
        issued += s.count;
        const int64_t begin = SteadyUs();
        const size_t before = slice.size();
        const CallResult r = c->Issue(s, &slice);
        if (!r.ok()) {
          error = r.error.empty() ? "an issue was refused" : r.error;
          break;
        }
        const int64_t end = SteadyUs();
        recs[static_cast<size_t>(k)].Record(end - begin, end,
                                            static_cast<int64_t>(slice.size() - before));
      }
      if (!error.empty()) {
        std::lock_guard<std::mutex> lock(mu);
        out.error = error;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  out.elapsed_s = static_cast<double>(SteadyUs() - t0) / 1e6;
  for (const Recorder& r : recs) out.rec.Merge(r);
  out.issued = out.rec.transitions();
  return out;
}

nlohmann::json LatenessJson(std::vector<int64_t> lateness_ms) {
  std::sort(lateness_ms.begin(), lateness_ms.end());
  nlohmann::json cdf = nlohmann::json::array();
  constexpr int kCdfPoints = 200;
  for (int i = 0; i <= kCdfPoints && !lateness_ms.empty(); ++i) {
    const double p = static_cast<double>(i) / kCdfPoints;
    cdf.push_back({SortedQuantile(lateness_ms, p), p});
  }
  return {{"p50", SortedQuantile(lateness_ms, 0.5)},
          {"p99", SortedQuantile(lateness_ms, 0.99)},
          {"p99.9", SortedQuantile(lateness_ms, 0.999)},
          {"max", lateness_ms.empty() ? 0 : lateness_ms.back()},
          {"samples", lateness_ms.size()},
          {"cdf", cdf}};
}

// ---- timeout storm ----

nlohmann::json RunStorm(System& sys, const WorkloadOptions& o) {
  nlohmann::json j;
  // The watch belongs to the collector's thread (a Cap'n Proto client belongs to the thread that
  // connected it); it begins before the first issue.
  std::vector<TimeoutSeen> seen;
  std::atomic<int> watching{0};  // 1: watching, -1: could not begin
  std::atomic<bool> abort{false};
  std::string collect_error;
  std::thread collector([&] {
    std::unique_ptr<TimeoutWatch> watch = sys.WatchTimeouts(&collect_error);
    watching = watch == nullptr ? -1 : 1;
    const int64_t until = SteadyMs() + kStormWaitMs + int64_t{o.storm_clock_s} * 1000;
    while (watch != nullptr && !abort && SteadyMs() < until &&
           static_cast<int64_t>(seen.size()) < o.tasks) {
      if (!watch->Collect(o.tasks, std::min(until, SteadyMs() + kCollectSliceMs), &seen,
                          &collect_error)) {
        return;
      }
    }
    if (watch != nullptr && !abort) watch->ExactDeadlines(&seen);
  });
  while (watching.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (watching.load() < 0) {
    collector.join();
    return {{"error", collect_error}};
  }
  const int64_t issue_begin_ms = WallMs();
  IssueAll issued = IssueMany(sys, o.clients, o.tasks, {false, 1, kLongClockS, o.storm_clock_s},
                              o.storm_spread_s);
  const int64_t issue_end_ms = WallMs();
  if (!issued.error.empty()) abort = true;
  // The load runs until a second past the last deadline (the issue's end plus the clock).
  std::optional<StepResult> load;
  std::thread loader;
  if (o.storm_load_rate > 0 && issued.error.empty()) {
    loader = std::thread([&] {
      WorkloadOptions lo = o;
      lo.seconds = static_cast<double>(o.storm_clock_s) + 1.0;
      load = RunStep(sys, lo, o.storm_load_rate, [](int) { return CallbackOp(1); });
    });
  }
  collector.join();  // a peer's timeout loop stops with it
  if (loader.joinable()) loader.join();
  if (load && !load->error.empty()) return {{"error", "load: " + load->error}};
  if (!issued.error.empty()) return {{"error", issued.error}};
  if (!collect_error.empty()) return {{"error", collect_error}};

  // Lateness against each task's own deadline: every peer timeout, tokenwheel's read-back
  // sample. A deadline not known (tokenwheel's others) lies between the issue's begin and end
  // plus the clock: those bounds stand in for the first and last deadline.
  const int64_t clock_ms = int64_t{o.storm_clock_s} * 1000;
  int64_t first_deadline = INT64_MAX, last_deadline = 0, last_durable = 0, early = 0;
  std::vector<int64_t> lateness;
  bool sampled = false;
  for (const TimeoutSeen& s : seen) {
    last_durable = std::max(last_durable, s.durable_ms);
    if (s.deadline_ms == 0) {
      sampled = true;
      continue;
    }
    first_deadline = std::min(first_deadline, s.deadline_ms);
    last_deadline = std::max(last_deadline, s.deadline_ms);
    if (s.durable_ms < s.deadline_ms) ++early;
    lateness.push_back(s.durable_ms - s.deadline_ms);
  }
  if (sampled) {
    first_deadline = std::min(first_deadline, issue_begin_ms + clock_ms);
    last_deadline = std::max(last_deadline, issue_end_ms + clock_ms);
  }
  if (seen.empty()) first_deadline = 0;
  nlohmann::json timeline = nlohmann::json::array();
  for (const TimeoutSeen& s : seen) {
    const size_t bin =
        static_cast<size_t>(std::max<int64_t>(0, s.durable_ms - first_deadline) / kTimelineBinMs);
    if (bin >= kTimelineBinsMax) continue;
    while (timeline.size() <= bin) timeline.push_back(0);
    timeline[bin] = timeline[bin].get<int64_t>() + 1000 / kTimelineBinMs;
  }
  const double storm_s = static_cast<double>(last_durable - first_deadline) / 1000.0;
  nlohmann::json late = LatenessJson(lateness);
  j = {{"transitions_per_s", storm_s > 0 ? static_cast<double>(seen.size()) / storm_s : 0.0},
       {"p50_ms", late["p50"]},
       {"p99_ms", late["p99"]},
       {"lateness_p50_ms", late["p50"]},
       {"lateness_p99_ms", late["p99"]},
       {"lateness_p99_9_ms", late["p99.9"]},
       {"lateness_max_ms", late["max"]},
       {"lateness", late},
       {"lateness_from",
        sampled ? "a sample of tasks' own deadlines, read back" : "every task's own deadline"},
       {"storm_s", storm_s},
       {"deadline_spread_s", static_cast<double>(last_deadline - first_deadline) / 1000.0},
       {"after_last_deadline_ms", last_durable - last_deadline},
       {"issue_s", issued.elapsed_s},
       {"issue_per_s", static_cast<double>(issued.issued) / std::max(issued.elapsed_s, 1e-9)},
       {"clock_s", o.storm_clock_s},
       {"timeline_per_s", timeline},
       {"counts",
        {{"tasks", o.tasks},
         {"issued", issued.issued},
         {"timed_out", static_cast<int64_t>(seen.size())},
         {"early", early},
         {"live_after", sys.LiveTasks()}}},
       {"server_timer_lateness", sys.ServerTimerLateness()}};
  // Timers pending when the first deadline passed: every task issued by then (the clock is
  // longer than the issuing when deadlines are to pass under a full wheel).
  j["pending_at_first_deadline"] = issue_end_ms <= issue_begin_ms + clock_ms
                                       ? nlohmann::json(issued.issued)
                                       : nlohmann::json(nullptr);
  if (load) {
    j["load"] = StepJson(*load);
    j["load_rate"] = o.storm_load_rate;
  }

  if (static_cast<int64_t>(seen.size()) < o.tasks) {
    j["error"] = "saw " + std::to_string(seen.size()) + " of " + std::to_string(o.tasks) +
                 " timeouts in time";
  }
  return j;
}

// ---- recovery ----

nlohmann::json RunRecovery(System& sys, const WorkloadOptions& o) {
  IssueAll issued = IssueMany(sys, o.clients, o.tasks, {false, 1, kLongClockS, 0});
  if (!issued.error.empty()) return {{"error", issued.error}};
  const int64_t live_before = sys.LiveTasks();
  int64_t ready_ms = 0;
  std::string error;
  if (!sys.KillAndRestart(&ready_ms, &error)) return {{"error", error}};
  const int64_t live_after = sys.LiveTasks();
  const double elapsed = std::max(issued.elapsed_s, 1e-9);
  nlohmann::json j = {{"transitions_per_s", static_cast<double>(issued.issued) / elapsed},
                      {"p50_ms", issued.rec.QuantileMs(0.5)},
                      {"p99_ms", issued.rec.QuantileMs(0.99)},
                      {"ready_ms", ready_ms},
                      {"issue_s", issued.elapsed_s},
                      {"counts",
                       {{"tasks", o.tasks},
                        {"issued", issued.issued},
                        {"live_before", live_before},
                        {"live_after", live_after}}}};
  if (live_after != live_before) j["error"] = "live tasks differ after the restart";
  return j;
}

// ---- heartbeats ----

nlohmann::json RunHeartbeats(System& sys, const WorkloadOptions& o) {
  IssueAll issued = IssueMany(sys, o.clients, o.tasks, {false, 1, kLongClockS, kLongClockS / 2});
  if (!issued.error.empty()) return {{"error", issued.error}};
  for (const auto& slice : issued.slices) {
    if (slice.empty()) return {{"error", "more clients than batches of tasks: lower --clients"}};
  }
  nlohmann::json j = RunLoad(sys, o, [&](int k) {
    return HeartbeatsOp(&issued.slices[static_cast<size_t>(k)], o.heartbeats_per_op,
                        static_cast<uint64_t>(k) + 1);
  });
  j["live_tasks"] = o.tasks;
  j["setup_issue_s"] = issued.elapsed_s;
  const int64_t live = sys.LiveTasks();
  j["counts"]["live_after"] = live;
  if (live >= 0 && live != o.tasks) j["error"] = "the live task count moved";
  return j;
}

}  // namespace

bool ParseWorkload(const std::string& name, Workload* w) {
  for (Workload c : {Workload::kCallback, Workload::kActivity, Workload::kTimeoutStorm,
                     Workload::kHeartbeats, Workload::kRecovery}) {
    if (name == WorkloadName(c)) {
      *w = c;
      return true;
    }
  }
  return false;
}

const char* WorkloadName(Workload w) {
  switch (w) {
    case Workload::kCallback:
      return "callback";
    case Workload::kActivity:
      return "activity";
    case Workload::kTimeoutStorm:
      return "timeout-storm";
    case Workload::kHeartbeats:
      return "heartbeats";
    case Workload::kRecovery:
      return "recovery";
  }
  return "?";
}

nlohmann::json RunWorkload(System& sys, const WorkloadOptions& o) {
  switch (o.workload) {
    case Workload::kCallback:
      return RunLoad(sys, o, [&](int) { return CallbackOp(o.batch); });
    case Workload::kActivity:
      return RunLoad(sys, o, [&](int) { return ActivityOp(o.batch); });
    case Workload::kTimeoutStorm:
      return RunStorm(sys, o);
    case Workload::kHeartbeats:
      return RunHeartbeats(sys, o);
    case Workload::kRecovery:
      return RunRecovery(sys, o);
  }
  return {{"error", "unknown workload"}};
}

}  // namespace tw::bench
