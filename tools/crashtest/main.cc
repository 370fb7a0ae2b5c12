// tokenwheel-crashtest: crash-recovery cycles against the real server, with an expected-state
// checker (tools/crashtest/model.h). docs/RELIABILITY.md has the modes, the counts and the runs.
//
//   tokenwheel-crashtest --mode kill|power-loss|disk-full --cycles N [--seed S]
//                        [--tokenwheeld PATH]
//
// Each cycle: the workload runs through both front ends for a seeded while, the server dies
// (SIGKILL; a power cut that drops every unsynced write; or a full disk), it is started again,
// and everything the workload heard back is checked against what the server now says. One JSON
// line per cycle; the last line on stdout is the summary. Exit status 0 only if every count in it
// is zero; 2 for a usage or set-up error; 77 when disk-full mode cannot mount its tmpfs.
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "rpc/client.h"
#include "tools/crashtest/disk_full.h"
#include "tools/crashtest/fronts.h"
#include "tools/crashtest/model.h"
#include "tools/crashtest/overload.h"
#include "tools/crashtest/server_process.h"
#include "tools/crashtest/workload.h"

namespace tw::crashtest {
namespace {

constexpr int64_t kStartTimeoutMs = 60'000;
constexpr int64_t kParkTimeoutMs = 30'000;
constexpr int64_t kEventWaitMs = 10'000;
// The longest clock the workload sets (5 s) and the slack, once more: after this every clock
// of every live task has run out, restarts included.
constexpr int64_t kFinalTimersWaitMs = 5'000 + kTimerSlackMs + 1'000;
constexpr int kActivities = 3;
// The exit status when disk-full mode cannot mount its tmpfs here (not root, or a container
// without the right): ctest's usual "skipped".
constexpr int kCannotRunHere = 77;
// Disk-full mode's large inputs: most of the largest payload tokenwheel takes.
constexpr size_t kLargeInputBytes = 200 * 1024;

struct Flags {
  std::string mode = "kill";
  int cycles = 20;
  uint64_t seed = 0;
  std::string tokenwheeld;
  int workers = 4;
  int64_t min_run_ms = 200;
  int64_t max_run_ms = 1500;
  std::string work_dir = "/tmp";
  bool keep = false;
  std::vector<std::string> server_args;
};

std::string BesideMe(const std::string& name) {
  char self[PATH_MAX] = {};
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return name;
  return (std::filesystem::path(std::string(self, static_cast<size_t>(n))).parent_path() / name)
      .string();
}

class Run {
 public:
  explicit Run(const Flags& f) : f_(f), rng_(f.seed) {}

  int Main() {
    if (f_.mode == "overload") return Overload();
    if (!SetUp()) return exit_code_;
    Counters total;
    for (int cycle = 1; cycle <= f_.cycles && !failed_setup_; ++cycle) total.Add(Cycle(cycle));
    if (!failed_setup_) total.Add(FinalCheck());
    return Summary(total);
  }

 private:
  bool SetUp() {
    std::string dir = f_.work_dir + "/tw-crashtest-XXXXXX";
    if (::mkdtemp(dir.data()) == nullptr) {
      std::cerr << "crashtest: cannot create a directory in " << f_.work_dir << "\n";
      return false;
    }
    dir_ = dir;
    std::string data_dir = dir_ + "/data";
    if (f_.mode == "disk-full") {
      disk_ = std::make_unique<SmallDisk>(dir_ + "/disk");
      std::string error;
      if (!disk_->Mount(&error)) {
        std::cerr << "crashtest: disk-full mode: " << error << "\n";
        exit_code_ = kCannotRunHere;
        return false;
      }
      data_dir = disk_->path() + "/data";
    }
    std::vector<std::string> args = f_.server_args;
    if (f_.mode == "disk-full") args.insert(args.end(), {"--storage-retry-ms", "50"});
    server_ = std::make_unique<ServerProcess>(f_.tokenwheeld, data_dir, dir_ + "/server.log", args);
    model_.SetSeed(f_.seed);
    if (!StartServer(nullptr)) return false;
    std::vector<std::string> arns;
    for (int i = 0; i < kActivities; ++i) {
      auto a = client_->CreateActivity("crashtest-" + std::to_string(i));
      if (!a.ok()) {
        std::cerr << "crashtest: CreateActivity: " << a.error.message << "\n";
        return false;
      }
      arns.push_back(a.value.arn);
    }
    WorkloadOptions w;
    w.seed = f_.seed;
    w.workers = f_.workers;
    w.activities = arns;
    w.input_pad = f_.mode == "disk-full" ? 16 * 1024 : 16;
    workload_ = std::make_unique<Workload>(&model_, w);
    workload_->Follow(server_->rpc_address(), server_->aws_address());
    if (!workload_->WaitConsumerSubscribed(kStartTimeoutMs)) {
      std::cerr << "crashtest: the outcome-stream consumer could not subscribe\n";
      return false;
    }
    return true;
  }

  // Overload mode (tools/crashtest/overload.h): one run, no crash.
  int Overload() {
    std::string dir = f_.work_dir + "/tw-crashtest-XXXXXX";
    if (::mkdtemp(dir.data()) == nullptr) return 2;
    dir_ = dir;
    OverloadOptions o;
    o.seed = f_.seed;
    std::vector<std::string> args = f_.server_args;
    auto given = [&](const std::string& flag) {
      return std::any_of(args.begin(), args.end(),
                         [&](const std::string& a) { return a.rfind(flag, 0) == 0; });
    };
    if (!given("--aws-connections-max")) {
      args.push_back("--aws-connections-max=" + std::to_string(kOverloadAwsConnectionsMax));
    }
    if (given("--handshake-timeout-ms")) {
      o.rpc_handshake_timeout_ms = o.hostile_ms;  // the user's: not checked
    } else {
      args.push_back("--handshake-timeout-ms=" + std::to_string(o.rpc_handshake_timeout_ms));
    }
    server_ =
        std::make_unique<ServerProcess>(f_.tokenwheeld, dir_ + "/data", dir_ + "/server.log", args);
    std::string error;
    if (!server_->Start(kStartTimeoutMs, &error)) {
      std::cerr << "crashtest: " << error << "\n";
      return 2;
    }
    nlohmann::json s = {{"summary", true}, {"mode", f_.mode}, {"seed", f_.seed}};
    uint64_t failures = RunOverload(server_.get(), o, &s);
    const int status = server_->Terminate(kStartTimeoutMs);
    if (status != 0) {
      std::cerr << "crashtest: tokenwheeld did not stop cleanly on SIGTERM; log:\n"
                << server_->LogTail(4000);
      ++failures;
    }
    s["failures"] = failures;
    if (failures == 0 && !f_.keep) {
      server_.reset();
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    } else {
      std::cerr << "crashtest: seed " << f_.seed << ": server log kept in " << dir_ << "\n";
    }
    std::cout << s.dump() << std::endl;
    return failures == 0 ? 0 : 1;
  }

  // Starts the server (a new power-cut seed each time) and connects the checker's client.
  bool StartServer(int64_t* recovery_ms) {
    if (f_.mode == "power-loss") {
      // Mostly torn tails (a random part of the unsynced bytes survives), sometimes none.
      const uint64_t cut_seed = rng_() % 4 == 0 ? 0 : (rng_() | 1);
      server_->SetExtraArgs({"--power-cut-seed", std::to_string(cut_seed)});
    }
    client_.reset();
    const int64_t spawned = WallMs();
    std::string error;
    if (!server_->Start(kStartTimeoutMs, &error)) {
      std::cerr << "crashtest: seed " << f_.seed << ": " << error << "\n";
      return false;
    }
    const int64_t ready = WallMs();
    if (f_.mode == "power-loss" &&
        server_->LogTail(1 << 20).find("power-cut build") == std::string::npos) {
      std::cerr << "crashtest: power-loss mode needs the power-cut build of tokenwheeld "
                << "(tokenwheeld-powercut); " << f_.tokenwheeld << " is not one\n";
      return false;
    }
    model_.RecordReady(spawned, ready);
    if (recovery_ms != nullptr) *recovery_ms = ready - spawned;
    auto c = rpc::Client::Connect(server_->rpc_address(), kStartTimeoutMs);
    if (!c.ok()) {
      std::cerr << "crashtest: connect: " << c.error.message << "\n";
      return false;
    }
    client_ = std::move(c.value);
    return true;
  }

  Counters Cycle(int cycle) {
    model_.BeginCycle(cycle);
    workload_->Run();
    const int64_t run_ms =
        f_.min_run_ms +
        static_cast<int64_t>(rng_() % static_cast<uint64_t>(f_.max_run_ms - f_.min_run_ms + 1));
    std::this_thread::sleep_for(std::chrono::milliseconds(run_ms));
    nlohmann::json line = {{"cycle", cycle}, {"mode", f_.mode}, {"run_ms", run_ms}};
    if (f_.mode == "disk-full") {
      FillAndRecover(&line);
    } else {
      Crash();
    }
    int64_t recovery_ms = 0;
    if (!server_->Running() && !StartServer(&recovery_ms)) {
      // The server does not come back from this crash: the worst outcome there is.
      ++recovery_failures_;
      failed_setup_ = true;
      return {};
    }
    recovery_ms_.push_back(recovery_ms);
    workload_->Follow(server_->rpc_address(), server_->aws_address());
    Counters c = Check(false);
    line["recovery_ms"] = recovery_ms;
    line["server_recovery_ms"] = server_->recovery_ms();
    line["tasks"] = model_.tasks();
    line["calls"] = workload_->calls();
    line["unanswered"] = workload_->unanswered();
    line["events"] = model_.events();
    line.update(c.ToJson());
    std::cout << line.dump() << std::endl;
    return c;
  }

  // The server dies with calls in flight: SIGKILL, or a power cut.
  void Crash() {
    workload_->Drain();  // scenarios in progress run on into the crash
    if (!server_->Running()) {
      std::cerr << "crashtest: seed " << f_.seed << " cycle " << model_.cycle()
                << ": tokenwheeld died by itself; log:\n"
                << server_->LogTail(4000);
      ++server_crashes_;
    }
    if (f_.mode == "power-loss") {
      server_->CutPower(kStartTimeoutMs);
    } else {
      server_->Kill9();
    }
    // After the death: anything a call did happened before this.
    model_.RecordKill(model_.cycle(), WallMs());
    if (!workload_->Park(kParkTimeoutMs)) {
      std::cerr << "crashtest: seed " << f_.seed << " cycle " << model_.cycle()
                << ": a worker did not stop\n";
    }
  }

  // Disk-full: the disk fills (a ballast, then the workload's inputs) until the server refuses
  // writes; then the space returns and the server must come back by itself.
  void FillAndRecover(nlohmann::json* line) {
    const DiskFullResult r = disk_->FillUntilRefused(client_.get(), server_.get(), kStartTimeoutMs,
                                                     [this] { (void)IssueLarge(); });
    // While the disk is full a write is refused with a clear, typed error (or, if RocksDB freed
    // enough by itself, done): never a dropped connection or an internal error.
    bool clear_error = true;
    if (r.refused) {
      const Error e = IssueLarge();
      clear_error = e.ok() || (!e.transport && e.code == ErrorCode::kUnavailable);
      if (!clear_error) {
        std::cerr << "crashtest: seed " << f_.seed << " cycle " << model_.cycle()
                  << ": a write on the full disk was answered " << ErrorCodeName(e.code)
                  << (e.transport ? " (transport)" : "") << ": " << e.message << "\n";
      }
    }
    workload_->Drain();
    if (!workload_->Park(kParkTimeoutMs)) std::cerr << "crashtest: a worker did not stop\n";
    model_.RecordKill(model_.cycle(), WallMs());  // every call made so far has ended
    const DiskFullResult back =
        disk_->FreeAndWaitHealthy(client_.get(), server_.get(), kStartTimeoutMs);
    // Like a restart: overdue timers fire once the store is back.
    if (r.refused) model_.RecordReady(r.last_ok_wall_ms, WallMs());
    (*line)["refused"] = r.refused;
    (*line)["server_stayed_up"] = r.server_up && back.server_up;
    (*line)["healthy_after_ms"] = back.healthy_after_ms;
    (*line)["clear_error"] = clear_error;
    if (!r.refused || !back.healthy || !clear_error || !r.server_up) ++disk_full_failures_;
  }

  // One callback task with a large input, through the checker's client, recorded like the
  // workload's.
  Error IssueLarge() {
    TaskModel m;
    m.key = "fill-" + std::to_string(f_.seed) + "-" + std::to_string(++fill_serial_);
    m.issue_earliest_ms = WallMs();
    TaskModel* t = model_.NewTask(m);
    IssueTaskRequest req;
    req.input = TaskInput(m.key, kLargeInputBytes);
    req.idempotency_key = m.key;
    const auto r = client_->IssueTask(req);
    const int64_t now = WallMs();
    model_.Update(t, [&](TaskModel& x) {
      x.issue_latest_ms = now;
      if (r.ok()) {
        x.token = r.value.token;
        x.issue = Answer::kApplied;
      } else if (r.error.transport || r.error.code == ErrorCode::kUnavailable) {
        x.issue = Answer::kUnknown;
      } else {
        x.issue = Answer::kRejected;
        x.abandoned = true;
      }
    });
    return r.error;
  }

  // Unanswered issues first: re-issuing with the same key finds the task if the issue happened
  // (and issues it now if not), as any client would after a crash.
  void ResolveIssues() {
    for (TaskModel* t : model_.UnresolvedIssues()) {
      IssueTaskRequest req;
      req.activity_arn = t->activity_arn;
      req.input = TaskInput(t->key, 16);
      req.timeout_s = t->timeout_s;
      req.heartbeat_s = t->heartbeat_s;
      req.schedule_to_start_s = t->schedule_to_start_s;
      req.idempotency_key = t->key;
      const int64_t sent = WallMs();
      const auto r = client_->IssueTask(req);
      const int64_t now = WallMs();
      model_.Update(t, [&](TaskModel& x) {
        if (r.ok()) {
          x.token = r.value.token;
          x.issue = Answer::kApplied;
          if (!r.value.existing) {  // it had not happened: it happens now
            x.issue_earliest_ms = sent;
            x.issue_latest_ms = now;
          }
        } else if (!r.error.transport && r.error.code != ErrorCode::kUnavailable) {
          x.abandoned = true;  // e.g. its activity is gone: whether it ever existed is unknown
        }
      });
    }
  }

  Counters Check(bool final_check) {
    ResolveIssues();
    Counters c = model_.Check(
        [&](const std::string& token) { return client_->DescribeTask(token); }, final_check);
    c.Add(model_.CheckEvents(kEventWaitMs));
    c.Add(model_.TakeEventCounters());
    return c;
  }

  // After the last cycle: the workload stops, every clock runs out, and everything is read again.
  Counters FinalCheck() {
    workload_->Drain();
    if (!workload_->Park(kParkTimeoutMs)) std::cerr << "crashtest: a worker did not stop\n";
    std::this_thread::sleep_for(std::chrono::milliseconds(kFinalTimersWaitMs));
    model_.BeginCycle(f_.cycles + 1);
    Counters c = Check(true);
    workload_calls_ = workload_->calls();
    workload_.reset();  // the consumer's last acknowledgements are in
    client_.reset();
    const int status = server_->Terminate(kStartTimeoutMs);
    if (status != 0) {
      std::cerr << "crashtest: seed " << f_.seed << ": tokenwheeld did not stop cleanly on "
                << "SIGTERM (status " << status << "); log:\n"
                << server_->LogTail(4000);
      ++stop_failures_;
    }
    return c;
  }

  // Reports in the server's log from a sanitizer build (ASan, UBSan, LSan) over every start.
  uint64_t SanitizerReports() const {
    if (server_ == nullptr) return 0;
    const std::string log = server_->Log();
    uint64_t n = 0;
    for (const char* marker :
         {"ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"}) {
      for (size_t at = log.find(marker); at != std::string::npos; at = log.find(marker, at + 1)) {
        ++n;
      }
    }
    return n;
  }

  int Summary(const Counters& total) {
    nlohmann::json s = {{"summary", true},
                        {"mode", f_.mode},
                        {"seed", f_.seed},
                        {"cycles", f_.cycles},
                        {"tasks", model_.tasks()},
                        {"calls", workload_calls_},
                        {"events", model_.events()},
                        {"recovery_ms_p50", Percentile(recovery_ms_, 0.5)},
                        {"recovery_ms_max", Percentile(recovery_ms_, 1.0)},
                        {"stop_failures", stop_failures_}};
    if (f_.mode == "disk-full") s["disk_full_failures"] = disk_full_failures_;
    s["server_crashes"] = server_crashes_;
    s["recovery_failures"] = recovery_failures_;
    s["sanitizer_reports"] = SanitizerReports();
    s.update(total.ToJson());
    const bool clean = total.Total() == 0 && stop_failures_ == 0 && disk_full_failures_ == 0 &&
                       server_crashes_ == 0 && recovery_failures_ == 0 &&
                       s["sanitizer_reports"] == 0;
    if (clean && !f_.keep) {
      server_.reset();
      disk_.reset();
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    } else {
      std::cerr << "crashtest: seed " << f_.seed << ": data and server log kept in " << dir_
                << "\n";
    }
    std::cout << s.dump() << std::endl;
    return clean ? 0 : 1;
  }

  Flags f_;
  std::mt19937_64 rng_;
  std::string dir_;
  Model model_;
  std::unique_ptr<SmallDisk> disk_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<rpc::Client> client_;
  std::unique_ptr<Workload> workload_;
  std::vector<int64_t> recovery_ms_;
  uint64_t workload_calls_ = 0;
  uint64_t fill_serial_ = 0;
  uint64_t stop_failures_ = 0;
  uint64_t server_crashes_ = 0;
  uint64_t recovery_failures_ = 0;
  uint64_t disk_full_failures_ = 0;
  bool failed_setup_ = false;
  int exit_code_ = 2;
};

}  // namespace
}  // namespace tw::crashtest

int main(int argc, char** argv) {
  tw::crashtest::Flags f;
  CLI::App app{
      "tokenwheel-crashtest: kills tokenwheeld (SIGKILL, a power cut, a full disk) while a mixed "
      "workload runs through its Cap'n Proto API and its AWS gateway, restarts it, and checks "
      "that nothing acknowledged was lost, nothing happened twice and no timer was lost. One "
      "JSON line per cycle; the last line is the summary. Exit 0 only if all counts are zero."};
  app.add_option("--mode", f.mode,
                 "kill, power-loss, disk-full (mounts a tmpfs: root) or overload (floods and "
                 "hostile clients on both front ends, no crash; --cycles is ignored)")
      ->capture_default_str()
      ->check(CLI::IsMember({"kill", "power-loss", "disk-full", "overload"}));
  app.add_option("--cycles", f.cycles, "Crash and recovery cycles")
      ->capture_default_str()
      ->check(CLI::Range(1, 1'000'000));
  app.add_option("--seed", f.seed,
                 "Seed (0: a random one, printed); the same seed replays the "
                 "same scenarios and crash moments");
  app.add_option("--tokenwheeld", f.tokenwheeld,
                 "The server binary (default: tokenwheeld, or tokenwheeld-powercut for "
                 "power-loss, beside this tool)");
  app.add_option("--workers", f.workers, "Workload threads")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--min-run-ms", f.min_run_ms, "Shortest workload run before a crash")
      ->capture_default_str()
      ->check(CLI::Range(0, 3'600'000));
  app.add_option("--max-run-ms", f.max_run_ms, "Longest workload run before a crash")
      ->capture_default_str()
      ->check(CLI::Range(1, 3'600'000));
  app.add_option("--work-dir", f.work_dir, "Where the data directory is made")
      ->capture_default_str();
  app.add_option("--server-arg", f.server_args,
                 "An extra tokenwheeld argument (repeatable), e.g. --server-arg=--tick-ms=5. "
                 "--server-arg=--durability=none shows what the checker reports when "
                 "acknowledged writes are not synced");
  app.add_flag("--keep", f.keep, "Keep the data directory and server log even when all is well");
  CLI11_PARSE(app, argc, argv);
  if (f.max_run_ms < f.min_run_ms) {
    std::cerr << "crashtest: --max-run-ms must be at least --min-run-ms\n";
    return 2;
  }
  if (f.seed == 0) f.seed = std::random_device{}() | 1;
  if (f.tokenwheeld.empty()) {
    f.tokenwheeld =
        tw::crashtest::BesideMe(f.mode == "power-loss" ? "tokenwheeld-powercut" : "tokenwheeld");
  }
  std::cerr << "crashtest: mode " << f.mode << " seed " << f.seed << " cycles " << f.cycles
            << " server " << f.tokenwheeld << "\n";
  return tw::crashtest::Run(f).Main();
}
