// tokenwheeld: the tokenwheel server. Opens the RocksDB store and the engine under --data-dir and
// serves the Cap'n Proto API on --rpc-listen and the AWS JSON 1.0 gateway on --aws-listen until
// SIGTERM / SIGINT.
//
// Data directory layout: DIR/db (the RocksDB database), DIR/token.key (the token MAC key).
// Everything in it is the server's alone: the process runs with umask 077 (new files 0600,
// directories 0700), and at start it takes group and other permissions off the directory and
// the files an older build left readable.
//
// Storage failures (a full disk, an I/O error): the engine refuses calls with
// ServiceUnavailable and reopens the store every --storage-retry-ms until it works again
// (engine/engine.h, "Storage failures"); no restart is needed.
//
// The power-cut build (target tokenwheeld-powercut, for tools/crashtest only; never installed):
// the same server on the fault-injecting file system (storage/fault_fs.h). SIGUSR1 cuts the
// power: nothing more reaches a file, every write not yet synced is dropped (a seeded part of
// each file's unsynced tail survives, as a torn write), and the process dies of SIGKILL. The
// production binary has neither the flag nor the signal.
//
// Logging: one record per start, stop, recovery, storage failure and overload episode (never one
// per request), through tools/log_sink.h: text or JSON lines (--log-format), on stderr or in a
// rotating file (--log-file), from --log-level up.
//
// Threads: main() blocks SIGTERM / SIGINT before any thread exists (so every thread inherits the
// mask) and then waits for them with sigwait(); the engine's threads, the Cap'n Proto server's
// thread and the gateway's thread do the work.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/limits.h"
#include "rpc/auth.h"
#include "rpc/aws/gateway.h"
#include "rpc/server.h"
#include "storage/rocksdb_store.h"
#include "tools/cli_args.h"
#include "tools/log_sink.h"
#ifdef TW_POWER_CUT_BUILD
#include "storage/fault_fs.h"
#include "storage/rocksdb_store_testing.h"
#endif

namespace {

struct Flags {
  std::string data_dir = "./data";
  std::string rpc_listen = "127.0.0.1:7411";
  std::string aws_listen = "127.0.0.1:8083";
  std::string aws_credentials;
  std::string rpc_auth_file;
  std::string rpc_tls_cert;
  std::string rpc_tls_key;
  std::string rpc_tls_client_ca;
  std::string durability = "sync";
  std::string commit = tw::CommitModeName(tw::EngineOptions().commit);
  uint32_t tick_ms = tw::limits::kWheelTickMsDefault;
  uint32_t max_poll_seconds = tw::limits::kPollSecondsDefault;
  std::string region = "us-east-1";
  std::string account = "000000000000";
  int64_t retention_seconds = tw::limits::kRetentionMsDefault / 1000;
  int64_t storage_retry_ms = tw::limits::kStorageRetryMsDefault;
  uint64_t connections_max = tw::limits::kRpcConnectionsMax;
  int64_t handshake_timeout_ms = tw::limits::kRpcHandshakeTimeoutMsDefault;
  uint64_t aws_connections_max = tw::limits::kAwsConnectionsMax;
  std::string backup_dir;
  std::string config;
  std::string log_format = "text";
  std::string log_level = "info";
  std::string log_file;
  std::string payload_key_file;  // encryption at rest of payloads; empty = stored plain
  uint64_t power_cut_seed = 1;   // the power-cut build only: 0 drops every unsynced byte
};

using Fields = std::vector<std::pair<std::string, std::string>>;

// tokenwheeld's own records (component "tokenwheeld"), through the sink main() made.
class Logger {
 public:
  explicit Logger(tw::LogSink sink) : sink_(std::move(sink)) {}

  void Info(const char* event, const std::string& message, Fields fields = {}) const {
    Log(tw::LogLevel::kInfo, event, message, std::move(fields));
  }
  void Warn(const char* event, const std::string& message, Fields fields = {}) const {
    Log(tw::LogLevel::kWarn, event, message, std::move(fields));
  }
  void Error(const char* event, const std::string& message, Fields fields = {}) const {
    Log(tw::LogLevel::kError, event, message, std::move(fields));
  }
  const tw::LogSink& sink() const { return sink_; }

 private:
  void Log(tw::LogLevel level, const char* event, const std::string& message, Fields fields) const {
    tw::Emit(sink_, {level, "tokenwheeld", event, message, std::move(fields)});
  }

  tw::LogSink sink_;
};

// A config file's integer: non-negative, in T's range (nlohmann's get<T> would wrap -1).
template <typename T>
bool ConfigInteger(const nlohmann::json& value, const std::string& key, T* out,
                   std::string* error) {
  if (!value.is_number_unsigned() ||
      value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
    *error = "config file: " + key + " must be an integer in 0.." +
             std::to_string(std::numeric_limits<T>::max()) + ", got " + value.dump();
    return false;
  }
  *out = static_cast<T>(value.get<uint64_t>());
  return true;
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
      bool ok = true;
      if (key == "data-dir") f->data_dir = value.get<std::string>();
      if (key == "rpc-listen") f->rpc_listen = value.get<std::string>();
      if (key == "aws-listen") f->aws_listen = value.get<std::string>();
      if (key == "aws-credentials") f->aws_credentials = value.get<std::string>();
      if (key == "rpc-auth-file") f->rpc_auth_file = value.get<std::string>();
      if (key == "rpc-tls-cert") f->rpc_tls_cert = value.get<std::string>();
      if (key == "rpc-tls-key") f->rpc_tls_key = value.get<std::string>();
      if (key == "rpc-tls-client-ca") f->rpc_tls_client_ca = value.get<std::string>();
      if (key == "backup-dir") f->backup_dir = value.get<std::string>();
      if (key == "durability") f->durability = value.get<std::string>();
      if (key == "payload-key-file") f->payload_key_file = value.get<std::string>();
      if (key == "commit") f->commit = value.get<std::string>();
      if (key == "log-format") f->log_format = value.get<std::string>();
      if (key == "log-level") f->log_level = value.get<std::string>();
      if (key == "log-file") f->log_file = value.get<std::string>();
      if (key == "tick-ms") ok = ConfigInteger(value, key, &f->tick_ms, error);
      if (key == "max-poll-seconds") ok = ConfigInteger(value, key, &f->max_poll_seconds, error);
      if (key == "region") f->region = value.get<std::string>();
      if (key == "account") f->account = value.get<std::string>();
      if (key == "retention-seconds") ok = ConfigInteger(value, key, &f->retention_seconds, error);
      if (key == "storage-retry-ms") ok = ConfigInteger(value, key, &f->storage_retry_ms, error);
      if (key == "connections-max") ok = ConfigInteger(value, key, &f->connections_max, error);
      if (key == "handshake-timeout-ms") {
        ok = ConfigInteger(value, key, &f->handshake_timeout_ms, error);
      }
      if (key == "aws-connections-max") {
        ok = ConfigInteger(value, key, &f->aws_connections_max, error);
      }
      if (!ok) return false;
    }
  } catch (const nlohmann::json::exception& e) {
    *error = std::string("config file: wrong type: ") + e.what();
    return false;
  }
  return true;
}

// Takes group and other permissions off `path` (a directory or a file), keeping the rest.
// True if it changed anything.
bool MakePrivate(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || (st.st_mode & 077) == 0) return false;
  return ::chmod(path.c_str(), st.st_mode & 07700) == 0;
}

// The data dir, its db dir and every file in them become the server's alone. New files are
// already (umask 077); this covers what an older build created world-readable.
void MakeDataDirPrivate(const std::string& data_dir, const Logger& log) {
  size_t changed = 0;
  std::error_code ec;
  for (const std::filesystem::path& dir :
       {std::filesystem::path(data_dir), std::filesystem::path(data_dir) / "db"}) {
    if (!std::filesystem::is_directory(dir, ec)) continue;
    changed += MakePrivate(dir);
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      if (entry.is_regular_file(ec)) changed += MakePrivate(entry.path());
    }
  }
  if (changed > 0) {
    log.Warn("permissions_fixed", "took group and other permissions off " +
                                      std::to_string(changed) + " files and directories in " +
                                      data_dir);
  }
}

// What main() blocks and Serve() waits for: SIGTERM / SIGINT (stop), and SIGUSR1 (cut the
// power) in the power-cut build.
sigset_t ServerSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
#ifdef TW_POWER_CUT_BUILD
  sigaddset(&signals, SIGUSR1);
#endif
  return signals;
}

using StoreOpener = std::function<tw::Status(std::unique_ptr<tw::Store>*)>;

#ifndef TW_POWER_CUT_BUILD
StoreOpener MakeStoreOpener(const tw::RocksStoreOptions& options, const Logger& /*log*/) {
  return [options](std::unique_ptr<tw::Store>* out) { return tw::OpenRocksStore(options, out); };
}
#else
// Every store this process opens, reopens after a storage failure included, runs on one FaultFs.
std::shared_ptr<tw::FaultFs>& PowerCutFs() {
  static auto fs = std::make_shared<tw::FaultFs>();
  return fs;
}

StoreOpener MakeStoreOpener(const tw::RocksStoreOptions& options, const Logger& log) {
  log.Warn("power_cut_build",
           "WARNING: power-cut build: the store runs on a fault-injecting file system and "
           "SIGUSR1 drops every unsynced write. For tools/crashtest only.");
  tw::RocksStoreTestHooks hooks;
  hooks.file_system = PowerCutFs();
  return [options, hooks](std::unique_ptr<tw::Store>* out) {
    return tw::OpenRocksStoreForTesting(options, hooks, out);
  };
}

constexpr int64_t kPowerCutQuietMs = 5000;

// The machine loses power: nothing more reaches a file, what was not synced is gone (but for a
// torn tail), and the process dies with no chance to write anything else.
[[noreturn]] void CutPower(uint64_t seed, const Logger& log) {
  PowerCutFs()->SetActive(false);
  // A write that was under way when the power went must not land after the truncation.
  const bool quiet = PowerCutFs()->WaitForCallsInFlight(kPowerCutQuietMs);
  const tw::Status dropped = PowerCutFs()->DropUnsyncedData(seed);
  log.Warn("power_cut",
           "power cut (SIGUSR1): unsynced writes dropped, torn_seed=" + std::to_string(seed) +
               (quiet ? std::string() : " (a write was still under way)") +
               (dropped.ok() ? std::string() : " error=" + dropped.ToString()));
  ::kill(::getpid(), SIGKILL);
  std::abort();  // not reached
}
#endif

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
  } else if (f.storage_retry_ms < 1 || f.storage_retry_ms > 3'600'000) {
    *error = "--storage-retry-ms must be 1..3600000";
  } else if (f.connections_max == 0 || f.aws_connections_max == 0 ||
             f.aws_connections_max > tw::limits::kAwsConnectionsMax) {
    *error = "--connections-max must be positive, --aws-connections-max 1.." +
             std::to_string(tw::limits::kAwsConnectionsMax);
  } else if (f.handshake_timeout_ms < 1) {
    *error = "--handshake-timeout-ms must be positive";
  } else if (f.data_dir.empty()) {
    *error = "--data-dir must not be empty";
  } else if (f.rpc_tls_cert.empty() != f.rpc_tls_key.empty()) {
    *error = "--rpc-tls-cert and --rpc-tls-key go together (a certificate and its private key)";
  } else if (!f.rpc_tls_client_ca.empty() && f.rpc_tls_cert.empty()) {
    *error = "--rpc-tls-client-ca needs --rpc-tls-cert and --rpc-tls-key (mutual TLS is TLS)";
  } else if (f.rpc_auth_file.empty() && f.rpc_tls_cert.empty() &&
             !tw::rpc::aws::IsLoopbackAddress(f.rpc_listen)) {
    // Checked before anything binds: a server with neither layer never listens off loopback.
    *error = "--rpc-listen " + f.rpc_listen +
             ": without --rpc-auth-file or --rpc-tls-cert/--rpc-tls-key the Cap'n Proto API "
             "accepts anyone who can reach it, so it listens on loopback addresses only "
             "(127.0.0.0/8, ::1, localhost); give --rpc-auth-file (a bearer secret), TLS, or both";
  } else if (f.aws_listen != "off" && f.aws_credentials.empty() &&
             !tw::rpc::aws::IsLoopbackAddress(f.aws_listen)) {
    *error = "--aws-listen " + f.aws_listen +
             ": without --aws-credentials the gateway checks no signatures, so it listens on "
             "loopback addresses only (127.0.0.0/8, ::1, localhost)";
  }
  return error->empty();
}

int Serve(const Flags& f, const Logger& log) {
  const bool sync = f.durability == "sync";
  if (!sync) {
    log.Warn("durability_none",
             "WARNING: --durability=none: acknowledged transitions are NOT synced to disk; a "
             "power loss or OS crash can lose them. Use only for throwaway runs and benchmarks.");
  }
  // Every connection is a descriptor: the soft limit (1024 under systemd) goes up to the hard one.
  const auto open_files = tw::rpc::RaiseOpenFilesLimit();
  if (!open_files.ok()) log.Warn("open_files_limit", open_files.error.message);
  std::shared_ptr<const tw::rpc::aws::Credentials> credentials;
  if (!f.aws_credentials.empty()) {
    std::unique_ptr<tw::rpc::aws::Credentials> loaded;
    tw::Status cs = tw::rpc::aws::Credentials::LoadFile(f.aws_credentials, &loaded);
    if (!cs.ok()) {
      log.Error("start_failed", "--aws-credentials: " + cs.message());
      return 1;
    }
    credentials = std::move(loaded);
  }
  std::shared_ptr<const tw::rpc::AuthSecrets> auth;
  if (!f.rpc_auth_file.empty()) {
    auto secrets = tw::rpc::LoadAuthSecrets(f.rpc_auth_file);
    if (!secrets.ok()) {
      log.Error("start_failed", "--rpc-auth-file: " + secrets.error.message);
      return 1;
    }
    auth = std::make_shared<const tw::rpc::AuthSecrets>(secrets.value);
    for (std::string& s : secrets.value) tw::rpc::WipeSecret(&s);
  }
  std::error_code ec;
  std::filesystem::create_directories(f.data_dir, ec);  // 0700 under the umask
  if (ec) {
    log.Error("start_failed", "cannot create data dir " + f.data_dir + ": " + ec.message());
    return 1;
  }
  MakeDataDirPrivate(f.data_dir, log);
  if (!f.backup_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(f.backup_dir, ec);
    if (ec || !std::filesystem::is_directory(f.backup_dir, ec)) {
      log.Error("start_failed",
                "cannot create backup dir " + f.backup_dir + (ec ? ": " + ec.message() : ""));
      return 1;
    }
    MakePrivate(f.backup_dir);
  }

  tw::RocksStoreOptions store_options;
  store_options.path = f.data_dir + "/db";
  store_options.sync_default = sync;
  // Encryption at rest (docs/OPERATIONS.md): the keys go to the store, which seals payloads.
  if (!f.payload_key_file.empty()) {
    tw::Status ks = tw::LoadPayloadKeyFile(f.payload_key_file, &store_options.payload_keys);
    if (!ks.ok()) {
      log.Error("start_failed", "--payload-key-file: " + ks.ToString());
      return 1;
    }
  }
  StoreOpener open_store = MakeStoreOpener(store_options, log);
  std::unique_ptr<tw::Store> store;
  tw::Status s = open_store(&store);
  if (!s.ok()) {
    log.Error("start_failed", "opening the store in " + store_options.path + ": " + s.ToString());
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
  engine_options.storage_retry_ms = f.storage_retry_ms;
  engine_options.reopen_store = open_store;
  engine_options.log = log.sink();
  engine_options.backup_dir =
      f.backup_dir.empty() ? ""
                           : std::filesystem::absolute(f.backup_dir).lexically_normal().string();
  tw::SystemClock clock;
  auto opened = tw::Engine::Open(engine_options, std::move(store), &clock);
  if (!opened.ok()) {
    log.Error("start_failed", "opening the engine in " + f.data_dir + ": " + opened.error.message);
    return 1;
  }
  std::unique_ptr<tw::Engine> engine = std::move(opened.value);

  tw::rpc::ServerOptions server_options;
  server_options.listen_address = f.rpc_listen;
  server_options.max_poll_seconds = f.max_poll_seconds;
  server_options.server_version = "tokenwheeld";
  server_options.connections_max = f.connections_max;
  server_options.handshake_timeout_ms = f.handshake_timeout_ms;
  server_options.log = log.sink();
  server_options.auth = auth;
  server_options.tls_cert_file = f.rpc_tls_cert;
  server_options.tls_key_file = f.rpc_tls_key;
  server_options.tls_client_ca_file = f.rpc_tls_client_ca;
  auto started = tw::rpc::Server::Start(engine.get(), server_options);
  if (!started.ok()) {
    log.Error("start_failed", "listening on " + f.rpc_listen + ": " + started.error.message);
    engine->Stop();
    return 1;
  }
  std::unique_ptr<tw::rpc::Server> server = std::move(started.value);
  std::unique_ptr<tw::rpc::aws::Gateway> gateway;
  if (f.aws_listen != "off") {
    tw::rpc::aws::GatewayOptions gateway_options;
    gateway_options.listen_address = f.aws_listen;
    gateway_options.credentials = credentials;
    gateway_options.max_poll_seconds = f.max_poll_seconds;
    gateway_options.server_version = "tokenwheeld";
    gateway_options.connections_max = f.aws_connections_max;
    gateway_options.log = log.sink();
    gateway_options.rpc_counters = [rpc = server.get()]() { return rpc->Counters(); };
    auto gw = tw::rpc::aws::Gateway::Start(engine.get(), gateway_options);
    if (!gw.ok()) {
      log.Error("start_failed", "AWS gateway on " + f.aws_listen + ": " + gw.error.message);
      server->StopAccepting();
      engine->Stop();
      return 1;
    }
    gateway = std::move(gw.value);
    if (!credentials) {
      log.Warn("gateway_unsigned", "WARNING: no --aws-credentials: the AWS gateway on " +
                                       gateway->address() +
                                       " checks no signatures (loopback only)");
    }
  }
  const std::string aws = gateway ? gateway->address() : std::string("off");
  const std::string rpc_tls = f.rpc_tls_cert.empty()        ? "off"
                              : f.rpc_tls_client_ca.empty() ? "on"
                                                            : "mutual";
  Fields facts{{"rpc_listen", server->address()},
               {"rpc_tls", rpc_tls},
               {"rpc_auth", auth ? "on" : "off"},
               {"aws_listen", aws},
               {"data_dir", f.data_dir},
               {"recovered_tasks", std::to_string(engine->RecoveredTasks())},
               {"recovery_ms", std::to_string(engine->RecoveryMs())},
               {"durability", f.durability},
               {"commit", f.commit},
               {"tick_ms", std::to_string(f.tick_ms)},
               {"max_poll_seconds", std::to_string(f.max_poll_seconds)},
               {"open_files", std::to_string(open_files.ok() ? open_files.value : 0)}};
  std::string line = "started, listening on " + server->address();
  for (size_t i = 1; i < facts.size(); ++i) {
    line += " " + facts[i].first + "=" + facts[i].second;
  }
  log.Info("started", line, std::move(facts));

  const sigset_t stop_signals = ServerSignals();
  int signo = 0;
  while (sigwait(&stop_signals, &signo) != 0) {
  }
#ifdef TW_POWER_CUT_BUILD
  if (signo == SIGUSR1) CutPower(f.power_cut_seed, log);
#endif
  const auto t0 = std::chrono::steady_clock::now();
  const std::string address = server->address();
  // No new connections; the engine finishes and syncs what is queued, answering every call;
  // the answers become replies; then the connections close.
  server->StopAccepting();
  if (gateway) gateway->StopAccepting();
  engine->Stop();
  server->Shutdown();
  if (gateway) gateway->Shutdown();
  gateway.reset();
  server.reset();
  engine.reset();
  const auto stop_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  const std::string signal = signo == SIGTERM ? "SIGTERM" : "SIGINT";
  log.Info("stopped",
           "stopped on " + signal + " data_dir=" + f.data_dir + " listen=" + address +
               " stop_ms=" + std::to_string(stop_ms),
           {{"signal", signal},
            {"data_dir", f.data_dir},
            {"listen", address},
            {"stop_ms", std::to_string(stop_ms)}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Every file and directory the server creates is its own alone (see the header).
  ::umask(077);
  // Before any thread exists, so that every thread inherits the mask and only sigwait() sees
  // these signals.
  const sigset_t stop_signals = ServerSignals();
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
                 "line says which: 'listening on HOST:PORT'). A non-loopback address needs "
                 "--rpc-auth-file, TLS (--rpc-tls-cert/--rpc-tls-key), or both")
      ->capture_default_str();
  app.add_option("--rpc-auth-file", f.rpc_auth_file,
                 "File of bearer secrets (mode 0600; one per line, 16..1024 bytes each, # "
                 "comments; e.g. from 'openssl rand -hex 32'): a client must present one "
                 "(tokenwheel --auth-file) before any call is answered. List two to rotate");
  app.add_option("--rpc-tls-cert", f.rpc_tls_cert,
                 "PEM certificate chain of the Cap'n Proto API (leaf first): it then speaks TLS "
                 "only. Needs --rpc-tls-key");
  app.add_option("--rpc-tls-key", f.rpc_tls_key,
                 "PEM private key of --rpc-tls-cert (mode 0600, not encrypted)");
  app.add_option("--rpc-tls-client-ca", f.rpc_tls_client_ca,
                 "PEM CA certificate(s): every client must present a certificate signed by one "
                 "(mutual TLS)");
  app.add_option("--aws-listen", f.aws_listen,
                 "HOST:PORT for the AWS JSON 1.0 gateway (AWS CLI, boto3, AWS SDK workers; "
                 "GET /healthz, GET /metrics), or off; port 0 picks a free port (the start log "
                 "line says which: 'aws_listen=HOST:PORT'). Without --aws-credentials, loopback "
                 "addresses only")
      ->capture_default_str();
  app.add_option(
      "--aws-credentials", f.aws_credentials,
      "JSON file [{\"accessKeyId\": \"...\", \"secretAccessKey\": \"...\"}] (mode 0600): "
      "the gateway then requires a valid SigV4 signature (service 'states') from one "
      "of these keys on every request");
  app.add_option("--backup-dir", f.backup_dir,
                 "Where `tokenwheel backup NAME` writes online backups, each a new directory "
                 "DIR/NAME laid out as a data directory (best on the data directory's file "
                 "system: RocksDB then hard-links its files); unset: backups are off");
  app.add_option("--payload-key-file", f.payload_key_file,
                 "Encrypt task payloads at rest (AES-256-GCM) with the last key of this file "
                 "(mode 0600; create it with `tokenwheel keygen --payload-key-file PATH`); every "
                 "listed key decrypts. Unset: payloads are stored plain");
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
  tw::cli::AddDecimalOption(&app, "--tick-ms", f.tick_ms,
                            "Timing wheel tick, ms (1..1000): timeouts fire within "
                            "one tick after their deadline, never before")
      ->capture_default_str();
  tw::cli::AddDecimalOption(
      &app, "--max-poll-seconds", f.max_poll_seconds,
      "Longest wait of a getActivityTask long poll before it answers empty (1..3600)")
      ->capture_default_str();
  app.add_option("--region", f.region, "Region in activity ARNs")->capture_default_str();
  app.add_option("--account", f.account, "Account id in activity ARNs")->capture_default_str();
  tw::cli::AddDecimalOption(
      &app, "--retention-seconds", f.retention_seconds,
      "How long finished tasks are kept, so that late or duplicate calls get a "
      "precise answer")
      ->capture_default_str();
  tw::cli::AddDecimalOption(
      &app, "--storage-retry-ms", f.storage_retry_ms,
      "After a storage failure (a full disk, an I/O error), calls are refused with "
      "ServiceUnavailable and the store is reopened this often until it works again "
      "(1..3600000)")
      ->capture_default_str();
  tw::cli::AddDecimalOption(&app, "--connections-max", f.connections_max,
                            "Cap'n Proto connections at most; a new one past it is refused with "
                            "a reason")
      ->capture_default_str();
  tw::cli::AddDecimalOption(&app, "--handshake-timeout-ms", f.handshake_timeout_ms,
                            "A Cap'n Proto connection that sends no call this long after it "
                            "connects is closed")
      ->capture_default_str();
  tw::cli::AddDecimalOption(&app, "--aws-connections-max", f.aws_connections_max,
                            "AWS gateway connections at most; a new one past it gets a 503 "
                            "ThrottlingException")
      ->capture_default_str();
#ifdef TW_POWER_CUT_BUILD
  tw::cli::AddDecimalOption(&app, "--power-cut-seed", f.power_cut_seed,
                            "Power-cut build: SIGUSR1 drops every unsynced write and kills the "
                            "server; this seed picks how much of each unsynced tail survives "
                            "(0: none)")
      ->capture_default_str();
#endif
  app.add_option("--log-format", f.log_format,
                 "text: one line per record for people; json: one JSON object per line (ts, "
                 "level, component, event, msg, then the record's fields)")
      ->capture_default_str();
  app.add_option("--log-level", f.log_level,
                 "Records below this level are dropped: debug, info (start, stop, recovery), warn "
                 "(overload episodes, refused connections), error (storage failures)")
      ->capture_default_str();
  app.add_option("--log-file", f.log_file,
                 "Write the log to this file, rotated at " +
                     std::to_string(tw::limits::kLogFileBytesMax >> 20) + " MiB with " +
                     std::to_string(tw::limits::kLogFilesKept) +
                     " older files kept; unset: stderr (under systemd: the journal)");
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
  // Until the flags say otherwise: text on stderr.
  const Logger early(tw::tools::MakeLogSink(tw::tools::LogOptions(), &error));
  if (!f.config.empty() && !ApplyConfig(app, &f, &error)) {
    early.Error("start_failed", error);
    return 1;
  }
  if (!Validate(f, &error)) {
    early.Error("start_failed", error);
    return 1;
  }
  // The log flags, from the command line or the config file, are checked here alone
  // (tools/log_sink.h, CheckLogOptions).
  tw::LogSink sink = tw::tools::MakeLogSink({f.log_format, f.log_level, f.log_file}, &error);
  if (!sink) {
    early.Error("start_failed", error);
    return 1;
  }
  return Serve(f, Logger(std::move(sink)));
}
