// tokenwheel-bench: tokenwheel against what a user would use instead, on this machine.
//
//   tokenwheel-bench --workload callback|activity|timeout-storm|heartbeats|recovery
//                    --systems tokenwheel,postgres,redis [--seconds S] [--rate R] [--sweep]
//                    [--clients C] [--batch B] [--tasks N] [--clock-s S] [--out DIR]
//
// It starts every system it measures (tokenwheeld; PostgreSQL 15 and Redis 7 as peers) on
// 127.0.0.1, on free ports, in temp dirs, one at a time, and stops each by its PID. `tokenwheel`
// names both of its front ends (tokenwheel-capnp, tokenwheel-gateway). The last line on stdout
// is one JSON object with each system's figures (docs/BENCHMARKS.md, "tokenwheel-bench"). Exit
// status: 0; 1 when a system's run failed (its `error` says why); 2 for a usage error; 77 when a
// peer's binary is missing.
#include <limits.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "tools/bench/system.h"
#include "tools/bench/workloads.h"

namespace tw::bench {
namespace {

constexpr int kMissingPeer = 77;  // ctest's SKIP_RETURN_CODE

std::string BesideMe(const std::string& name) {
  char self[PATH_MAX] = {};
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return name;
  const std::filesystem::path dir =
      std::filesystem::path(std::string(self, static_cast<size_t>(n))).parent_path();
  // tools/bench/ may hold this binary, tokenwheeld is in tools/.
  for (const auto& d : {dir, dir.parent_path()}) {
    if (std::filesystem::exists(d / name)) return (d / name).string();
  }
  return (dir / name).string();
}

std::vector<std::string> SplitSystems(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == "tokenwheel") {
      out.push_back("tokenwheel-capnp");
      out.push_back("tokenwheel-gateway");
    } else if (!item.empty()) {
      out.push_back(item);
    }
  }
  return out;
}

bool Executable(const std::string& path) { return ::access(path.c_str(), X_OK) == 0; }

// Plot data beside the JSON: one file per series (gnuplot reads them; tools/bench/plot.sh).
void WriteSeries(const std::string& dir, const std::string& workload, const std::string& system,
                 const nlohmann::json& r) {
  const std::string base = dir + "/" + workload + "." + system;
  if (r.contains("timeline_per_s")) {
    std::ofstream out(base + ".timeline.dat");
    const double bin_s = 0.1;
    double t = 0;
    for (const auto& v : r["timeline_per_s"]) {
      out << t << ' ' << v << '\n';
      t += bin_s;
    }
  }
  if (r.contains("steps")) {
    std::ofstream out(base + ".steps.dat");
    out << "# transitions_per_s p50_ms p99_ms p99.9_ms mode\n";
    // The open-loop steps by rising rate, then the closed-loop one (the most the system took).
    for (const char* mode : {"open", "closed"}) {
      for (const auto& s : r["steps"]) {
        if (s["mode"] != mode) continue;
        out << s["transitions_per_s"] << ' ' << s["percentiles_ms"]["p50"] << ' '
            << s["percentiles_ms"]["p99"] << ' ' << s["percentiles_ms"]["p99.9"] << ' '
            << s["mode"].get<std::string>() << '\n';
      }
    }
  }
  if (r.contains("lateness")) {
    std::ofstream out(base + ".lateness.dat");
    out << "# lateness_ms fraction\n";
    for (const auto& p : r["lateness"]["cdf"]) out << p[0] << ' ' << p[1] << '\n';
  }
}

int Main(int argc, char** argv) {
  CLI::App app{"tokenwheel-bench: tokenwheel against PostgreSQL and Redis, same semantics"};
  std::string workload_name = "callback";
  std::string systems_list = "tokenwheel,postgres,redis";
  std::string out_dir;
  WorkloadOptions wo;
  SystemOptions so;
  so.work_dir = std::filesystem::temp_directory_path().string();
  so.tokenwheeld = BesideMe("tokenwheeld");
  so.pg_bin_dir = "/usr/lib/postgresql/15/bin";
  so.redis_server = "/usr/bin/redis-server";
  app.add_option("--workload", workload_name,
                 "callback, activity, timeout-storm, heartbeats or recovery");
  app.add_option("--systems", systems_list,
                 "comma list of tokenwheel (both front ends), tokenwheel-capnp, "
                 "tokenwheel-gateway, postgres, redis");
  app.add_option("--seconds", wo.seconds, "length of each load step")
      ->check(CLI::Range(0.1, static_cast<double>(kRunSecondsMax)));
  app.add_option("--rate", wo.rate, "open-loop at this many operations/s (0: closed-loop)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--sweep", wo.sweep,
               "closed-loop, then open-loop at 25/50/75/90% of its rate (load workloads)");
  app.add_option("--clients", wo.clients, "client threads")->check(CLI::Range(1, kClientsMax));
  app.add_option("--batch", wo.batch, "items per call (1: single calls)")
      ->check(CLI::Range(1, kBatchItemsMax));
  app.add_option("--tasks", wo.tasks, "tasks for timeout-storm, heartbeats and recovery")
      ->check(CLI::Range(int64_t{1}, kTasksMax));
  app.add_option("--clock-s", wo.storm_clock_s, "timeout-storm: the heartbeat clock, seconds")
      ->check(CLI::Range(1, 3600));
  app.add_option("--spread-s", wo.storm_spread_s,
                 "timeout-storm: pace the issuing over this many seconds, so that the deadlines "
                 "spread over it (0: as fast as possible)")
      ->check(CLI::Range(0.0, static_cast<double>(kRunSecondsMax)));
  app.add_option("--load-rate", wo.storm_load_rate,
                 "timeout-storm: a callback load at this many operations/s while the timers "
                 "fire (0: idle); the figures under \"load\"")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--out", out_dir, "write <workload>[-batch<B>].json and plot data here")
      ->check(CLI::ExistingDirectory);
  app.add_option("--work-dir", so.work_dir, "temp dirs of the systems go here");
  app.add_option("--tokenwheeld", so.tokenwheeld, "the server binary");
  app.add_option("--server-arg", so.tokenwheeld_args,
                 "one more flag for tokenwheeld, e.g. --server-arg=--retention-seconds=60 "
                 "(repeatable)")
      ->allow_extra_args(false);
  app.add_option("--pg-bin-dir", so.pg_bin_dir, "PostgreSQL's initdb and postgres");
  app.add_option("--redis-server", so.redis_server, "the redis-server binary");
  app.add_flag("--keep", so.keep, "keep the systems' data dirs");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!ParseWorkload(workload_name, &wo.workload)) {
    std::cerr << "unknown workload " << workload_name << "\n";
    return 2;
  }
  const std::vector<std::string> systems = SplitSystems(systems_list);
  for (const std::string& s : systems) {
    std::string binary;
    if (s == "tokenwheel-capnp" || s == "tokenwheel-gateway") {
      binary = so.tokenwheeld;
    } else if (s == "postgres") {
      binary = so.pg_bin_dir + "/postgres";
    } else if (s == "redis") {
      binary = so.redis_server;
    } else {
      std::cerr << "unknown system " << s << "\n";
      return 2;
    }
    if (!Executable(binary)) {
      std::cerr << "tokenwheel-bench: " << binary << " is missing (tools/install-deps.sh)\n";
      return s.rfind("tokenwheel", 0) == 0 ? 2 : kMissingPeer;
    }
  }

  nlohmann::json results = {{"workload", WorkloadName(wo.workload)},
                            {"clients", wo.clients},
                            {"batch", wo.batch},
                            {"seconds", wo.seconds},
                            {"rate", wo.rate},
                            {"tasks", wo.tasks},
                            {"systems", nlohmann::json::object()}};
  // The files' stem in --out: batch runs beside the single-call ones.
  const std::string stem = std::string(WorkloadName(wo.workload)) +
                           (wo.batch > 1 ? "-batch" + std::to_string(wo.batch) : "");
  bool failed = false;
  for (const std::string& name : systems) {
    std::unique_ptr<System> sys;
    if (name == "tokenwheel-capnp") sys = MakeTokenwheel(so, false);
    if (name == "tokenwheel-gateway") sys = MakeTokenwheel(so, true);
    if (name == "postgres") sys = MakePostgres(so);
    if (name == "redis") sys = MakeRedis(so);
    std::cerr << "tokenwheel-bench: " << WorkloadName(wo.workload) << " on " << name << "\n";
    nlohmann::json r;
    std::string error;
    if (!sys->Start(&error)) {
      r = {{"error", "start: " + error}};
    } else {
      r = RunWorkload(*sys, wo);
    }
    sys->Stop();
    r["durability"] = sys->durability();
    if (r.contains("error")) failed = true;
    if (!out_dir.empty()) WriteSeries(out_dir, stem, name, r);
    nlohmann::json line = {{"system", name}};
    for (const char* k :
         {"transitions_per_s", "p50_ms", "p99_ms", "lateness_p99_ms", "ready_ms", "error"}) {
      if (r.contains(k)) line[k] = r[k];
    }
    std::cout << line.dump() << std::endl;
    results["systems"][name] = r;
  }
  if (!out_dir.empty()) {
    std::ofstream out(out_dir + "/" + stem + ".json");
    out << results.dump(2) << "\n";
  }
  std::cout << results.dump() << std::endl;
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace tw::bench

int main(int argc, char** argv) { return tw::bench::Main(argc, argv); }
