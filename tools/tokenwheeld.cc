// tokenwheeld: the tokenwheel server. Opens the RocksDB store and the engine under --data-dir and
// serves the Cap'n Proto API on --rpc-listen until SIGTERM / SIGINT.
//
// Data directory layout: DIR/db (the RocksDB database), DIR/token.key (the token MAC key,
// created at first start with mode 0600).
//
// Threads: main() blocks SIGTERM / SIGINT before any thread exists (so every thread inherits the
// mask) and then waits for them with sigwait(); the engine thread and the RPC thread do the work.
#include <signal.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/limits.h"
#include "rpc/server.h"
#include "storage/rocksdb_store.h"

namespace {

struct Flags {
  std::string data_dir = "./data";
  std::string rpc_listen = "127.0.0.1:7411";
  std::string durability = "sync";
  std::string commit = tw::CommitModeName(tw::EngineOptions().commit);
  uint32_t tick_ms = tw::limits::kWheelTickMsDefault;
  uint32_t max_poll_seconds = tw::limits::kPollSecondsDefault;
  std::string region = "us-east-1";
  std::string account = "000000000000";
  int64_t retention_seconds = tw::limits::kRetentionMsDefault / 1000;
  std::string config;
};

// One log line on stderr: UTC time, program, message.
void Log(const std::string& message) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t secs = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
  std::fprintf(stderr, "%s.%03lldZ tokenwheeld: %s\n", stamp, static_cast<long long>(ms),
               message.c_str());
  std::fflush(stderr);
}

// Applies the keys of a JSON config file to the flags not given on the command line.
bool ApplyConfig(const CLI::App& app, Flags* f, std::string* error) {
  std::ifstream in(f->config);
  if (!in) {
    *error = "cannot read config file " + f->config;
    return false;
  }
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    *error = "config file " + f->config + " is not a JSON object";
    return false;
  }
  try {
    for (const auto& [key, value] : j.items()) {
      const CLI::Option* opt = app.get_option_no_throw("--" + key);
      if (opt == nullptr || key == "config") {
        *error = "unknown key in config file: " + key;
        return false;
      }
      if (opt->count() > 0) continue;  // the command line wins
      if (key == "data-dir") f->data_dir = value.get<std::string>();
      if (key == "rpc-listen") f->rpc_listen = value.get<std::string>();
      if (key == "durability") f->durability = value.get<std::string>();
      if (key == "commit") f->commit = value.get<std::string>();
      if (key == "tick-ms") f->tick_ms = value.get<uint32_t>();
      if (key == "max-poll-seconds") f->max_poll_seconds = value.get<uint32_t>();
      if (key == "region") f->region = value.get<std::string>();
      if (key == "account") f->account = value.get<std::string>();
      if (key == "retention-seconds") f->retention_seconds = value.get<int64_t>();
    }
  } catch (const nlohmann::json::exception& e) {
    *error = std::string("config file: wrong type: ") + e.what();
    return false;
  }
  return true;
}

bool Validate(const Flags& f, std::string* error) {
  if (f.durability != "sync" && f.durability != "none") {
    *error = "--durability must be sync or none";
  } else if (tw::CommitMode mode; !tw::ParseCommitMode(f.commit, &mode)) {
    *error = "--commit must be adaptive, inline or pipelined";
  } else if (f.tick_ms == 0 || f.tick_ms > 1000) {
    *error = "--tick-ms must be 1..1000";
  } else if (f.max_poll_seconds == 0 || f.max_poll_seconds > tw::limits::kPollSecondsMax) {
    *error = "--max-poll-seconds must be 1.." + std::to_string(tw::limits::kPollSecondsMax);
  } else if (f.retention_seconds <= 0) {
    *error = "--retention-seconds must be positive";
  } else if (f.data_dir.empty()) {
    *error = "--data-dir must not be empty";
  }
  return error->empty();
}

int Serve(const Flags& f) {
  const bool sync = f.durability == "sync";
  if (!sync) {
    Log("WARNING: --durability=none: acknowledged transitions are NOT synced to disk; a power "
        "loss or OS crash can lose them. Use only for throwaway runs and benchmarks.");
  }
  std::error_code ec;
  std::filesystem::create_directories(f.data_dir, ec);
  if (ec) {
    Log("error: cannot create data dir " + f.data_dir + ": " + ec.message());
    return 1;
  }

  tw::RocksStoreOptions store_options;
  store_options.path = f.data_dir + "/db";
  store_options.sync_default = sync;
  std::unique_ptr<tw::Store> store;
  tw::Status s = tw::OpenRocksStore(store_options, &store);
  if (!s.ok()) {
    Log("error: opening the store in " + store_options.path + ": " + s.ToString());
    return 1;
  }

  tw::EngineOptions engine_options;
  engine_options.durability = sync ? tw::Durability::kSync : tw::Durability::kNone;
  tw::ParseCommitMode(f.commit, &engine_options.commit);  // Validate checked the name
  engine_options.tick_ms = f.tick_ms;
  engine_options.retention_ms = f.retention_seconds * 1000;
  engine_options.region = f.region;
  engine_options.account = f.account;
  engine_options.token_key_file = f.data_dir + "/token.key";
  tw::SystemClock clock;
  auto opened = tw::Engine::Open(engine_options, std::move(store), &clock);
  if (!opened.ok()) {
    Log("error: opening the engine in " + f.data_dir + ": " + opened.error.message);
    return 1;
  }
  std::unique_ptr<tw::Engine> engine = std::move(opened.value);

  tw::rpc::ServerOptions server_options;
  server_options.listen_address = f.rpc_listen;
  server_options.max_poll_seconds = f.max_poll_seconds;
  server_options.server_version = "tokenwheeld";
  auto started = tw::rpc::Server::Start(engine.get(), server_options);
  if (!started.ok()) {
    Log("error: listening on " + f.rpc_listen + ": " + started.error.message);
    engine->Stop();
    return 1;
  }
  std::unique_ptr<tw::rpc::Server> server = std::move(started.value);
  Log("started, listening on " + server->address() + " data_dir=" + f.data_dir +
      " recovered_tasks=" + std::to_string(engine->RecoveredTasks()) +
      " recovery_ms=" + std::to_string(engine->RecoveryMs()) + " durability=" + f.durability +
      " commit=" + f.commit + " tick_ms=" + std::to_string(f.tick_ms) +
      " max_poll_seconds=" + std::to_string(f.max_poll_seconds));

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  int signo = 0;
  while (sigwait(&stop_signals, &signo) != 0) {
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::string address = server->address();
  // No new connections; the engine finishes and syncs what is queued, answering every call;
  // the answers become replies; then the connections close.
  server->StopAccepting();
  engine->Stop();
  server->Shutdown();
  server.reset();
  engine.reset();
  const auto stop_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  Log(std::string("stopped on ") + (signo == SIGTERM ? "SIGTERM" : "SIGINT") +
      " data_dir=" + f.data_dir + " listen=" + address + " stop_ms=" + std::to_string(stop_ms));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Before any thread exists, so that every thread inherits the mask and only sigwait() sees
  // these signals.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  Flags f;
  CLI::App app{
      "tokenwheeld: the tokenwheel server, a durable task-token store and timeout engine with "
      "the AWS Step Functions activity / task-token semantics, served over Cap'n Proto "
      "(rpc/tokenwheel.capnp).\n"
      "SIGTERM / SIGINT stop it cleanly: no new connections, in-flight work finished and "
      "synced, exit 0."};
  app.add_option("--data-dir", f.data_dir,
                 "Data directory: DIR/db holds the RocksDB database, DIR/token.key the token MAC "
                 "key (created with mode 0600 at first start)")
      ->capture_default_str();
  app.add_option("--rpc-listen", f.rpc_listen,
                 "HOST:PORT for the Cap'n Proto API; port 0 picks a free port (the start log "
                 "line says which: 'listening on HOST:PORT')")
      ->capture_default_str();
  app.add_option("--durability", f.durability,
                 "sync: every acknowledged transition is fsynced (WAL) before its reply. none: "
                 "no fsync -- a power loss can lose acknowledged work (prints a warning)")
      ->capture_default_str()
      ->check(CLI::IsMember({"sync", "none"}));
  app.add_option("--commit", f.commit,
                 "Who writes and syncs each group commit. adaptive: the engine thread when no "
                 "call is waiting, else a writer thread that syncs one batch while the engine "
                 "applies the next. inline: always the engine thread (no writer thread). "
                 "pipelined: always the writer thread. Durability is the same in all three")
      ->capture_default_str()
      ->check(CLI::IsMember({"adaptive", "inline", "pipelined"}));
  app.add_option("--tick-ms", f.tick_ms,
                 "Timing wheel tick, ms (1..1000): timeouts fire within "
                 "one tick after their deadline, never before")
      ->capture_default_str();
  app.add_option("--max-poll-seconds", f.max_poll_seconds,
                 "Longest wait of a getActivityTask long poll before it answers empty (1..3600)")
      ->capture_default_str();
  app.add_option("--region", f.region, "Region in activity ARNs")->capture_default_str();
  app.add_option("--account", f.account, "Account id in activity ARNs")->capture_default_str();
  app.add_option("--retention-seconds", f.retention_seconds,
                 "How long finished tasks are kept, so that late or duplicate calls get a "
                 "precise answer")
      ->capture_default_str();
  app.add_option("--config", f.config,
                 "JSON file with any of the keys above, without the dashes prefix (e.g. "
                 "{\"data-dir\": \"/var/lib/tokenwheel\", \"durability\": \"sync\"}); flags "
                 "given on the command line win");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 1;
  }
  std::string error;
  if (!f.config.empty() && !ApplyConfig(app, &f, &error)) {
    Log("error: " + error);
    return 1;
  }
  if (!Validate(f, &error)) {
    Log("error: " + error);
    return 1;
  }
  return Serve(f);
}
