// tokenwheel-bench's systems under test: tokenwheel (through Cap'n Proto or the AWS gateway) and
// its peers, PostgreSQL and Redis. Each implements the same task semantics (docs/BENCHMARKS.md,
// "tokenwheel-bench"): a callback task is born STARTED; an activity task is SCHEDULED until a
// poll takes it; a completion applies once, only to a STARTED task whose deadline has not passed;
// a timeout ends a task whose deadline passed, with its outcome, and never before the deadline.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace tw::bench {

// ---- Bounds (the tool's own; the server's are engine/limits.h) ----
inline constexpr int kClientsMax = 256;           // client threads per run
inline constexpr int kBatchItemsMax = 1000;       // items per batch call (tokenwheel's bound)
inline constexpr int64_t kRunSecondsMax = 3600;   // --seconds
inline constexpr int64_t kTasksMax = 10'000'000;  // --tasks (storm, heartbeats, recovery)
inline constexpr size_t kSamplesPerClientMax = 1 << 22;    // latency samples kept per client
inline constexpr size_t kLatenessSamplesMax = 10'000'000;  // timeout lateness samples per run
inline constexpr int kTimeoutBatchMax = 1000;
inline constexpr int64_t kTimeoutLoopIdleMs =
    1;  // a peer's timer tick: a round that ended none  // tasks a peer's timeout loop ends per
        // transaction
inline constexpr int64_t kStartTimeoutMs = 60'000;  // a server from exec to ready
inline constexpr int64_t kCallTimeoutMs = 30'000;   // one call

// What a call did. Errors are values; kFailed carries its text in CallResult::error.
enum class CallStatus {
  kOk,       // applied
  kRefused,  // a conditional transition that did not apply (finished, timed out, no task)
  kFailed,   // transport or server error: the run stops and reports it
};

struct CallResult {
  CallStatus status = CallStatus::kOk;
  std::string error;
  static CallResult Ok() { return {}; }
  static CallResult Refused() { return {CallStatus::kRefused, ""}; }
  static CallResult Failed(std::string e) { return {CallStatus::kFailed, std::move(e)}; }
  bool ok() const { return status == CallStatus::kOk; }
};

struct IssueSpec {
  bool activity = false;  // false: a callback task
  int count = 1;          // 1: a single call; more: one batch call
  uint32_t timeout_s = 300;
  uint32_t heartbeat_s = 0;  // 0: none
};

// One client thread's connection. Belongs to the thread that made it.
class Client {
 public:
  virtual ~Client() = default;
  // Appends the new tasks' ids (tokens, row ids) to *ids.
  virtual CallResult Issue(const IssueSpec& spec, std::vector<std::string>* ids) = 0;
  // Succeeds every task of `ids` (one call; a batch when more than one). *applied counts those
  // that applied; the others were refused.
  virtual CallResult Succeed(const std::vector<std::string>& ids, int* applied) = 0;
  // Takes the oldest SCHEDULED activity task into *id (empty: none within the wait).
  virtual CallResult Poll(std::string* id) = 0;
  virtual CallResult Heartbeat(const std::string& id) = 0;
};

inline constexpr size_t kExactDeadlinesMax = 10'000;  // tokenwheel: deadlines read back per run

// A timeout as the harness saw it end, durable with its outcome.
struct TimeoutSeen {
  int64_t deadline_ms = 0;  // wall clock; 0: not known (tokenwheel, outside the sample)
  int64_t durable_ms = 0;   // wall clock: when the harness learnt it is durable
  bool exact = false;       // deadline_ms is the task's own (a peer's, or read back)
  std::string token;        // tokenwheel: a sampled task whose deadline ExactDeadlines reads
};

// Watches timeouts end: tokenwheel's outcome stream, or a peer's own timeout loop.
class TimeoutWatch {
 public:
  virtual ~TimeoutWatch() = default;
  // Blocks until `count` timeouts were seen since the watch began or until_ms (steady) passes;
  // appends what it saw to *seen (bounded by kLatenessSamplesMax). False on an error (*error).
  virtual bool Collect(int64_t count, int64_t until_steady_ms, std::vector<TimeoutSeen>* seen,
                       std::string* error) = 0;
  // Replaces the deadline of the sampled timeouts (those with a token, at most
  // kExactDeadlinesMax) with the task's own, read back from the server, and marks them exact.
  virtual void ExactDeadlines(std::vector<TimeoutSeen>* seen) { (void)seen; }
};

// A peer's timeout loop (PostgreSQL's, Redis's): a thread that asks the peer to end its due
// tasks, round after round, and records when each ending was learnt. A subclass says how one
// round goes (EndDue), calls Start() from its constructor and Stop() first in its destructor.
class PolledTimeoutLoop : public TimeoutWatch {
 public:
  bool Collect(int64_t count, int64_t until_steady_ms, std::vector<TimeoutSeen>* seen,
               std::string* error) override;

 protected:
  // One round: ends at most kTimeoutBatchMax due tasks durably and appends their deadlines
  // (wall ms). False on an error (*error), which ends the loop.
  virtual bool EndDue(std::vector<int64_t>* deadlines_ms, std::string* error) = 0;
  void Start();
  void Stop();

 private:
  void Run();

  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<TimeoutSeen> pending_;  // guarded by mu_
  int64_t ended_ = 0;                 // guarded by mu_
  std::string error_;                 // guarded by mu_
  std::thread thread_;
};

class System {
 public:
  virtual ~System() = default;
  // The name in the results: tokenwheel-capnp, tokenwheel-gateway, postgres, redis.
  virtual std::string name() const = 0;
  // The durability settings, stated beside every figure.
  virtual std::string durability() const = 0;
  virtual bool Start(std::string* error) = 0;
  virtual void Stop() = 0;
  // SIGKILL and start again on the same data; *ready_ms from the kill to the first answered
  // call.
  virtual bool KillAndRestart(int64_t* ready_ms, std::string* error) = 0;
  virtual std::unique_ptr<Client> Connect(std::string* error) = 0;
  // Begins watching timeouts (before the tasks are issued). Peers start their timeout loop.
  virtual std::unique_ptr<TimeoutWatch> WatchTimeouts(std::string* error) = 0;
  // Live tasks the system holds now (for the counts' consistency), or -1 if it cannot say.
  virtual int64_t LiveTasks() = 0;
  // The server's own timer lateness histogram since it started ({count, p50_ms, p99_ms,
  // p99_9_ms, max_ms}), or null where the system has none (the peers).
  virtual nlohmann::json ServerTimerLateness() { return nullptr; }
};

struct SystemOptions {
  std::string work_dir;                       // temp dirs go here
  std::string tokenwheeld;                    // the server binary
  std::vector<std::string> tokenwheeld_args;  // more flags for it (--server-arg)
  std::string pg_bin_dir;                     // initdb, postgres
  std::string redis_server;                   // the redis-server binary
  bool keep = false;                          // keep the data dirs
};

std::unique_ptr<System> MakeTokenwheel(const SystemOptions& o, bool gateway);
std::unique_ptr<System> MakePostgres(const SystemOptions& o);
std::unique_ptr<System> MakeRedis(const SystemOptions& o);

// Wall clock and steady clock, ms.
int64_t WallMs();
int64_t SteadyMs();
int64_t SteadyUs();
// A free TCP port on 127.0.0.1 (bound, read, closed: another process may take it in between).
int FreeLoopbackPort();
// A new directory under `parent` ("tw-bench-<what>-XXXXXX").
std::string MakeTempDir(const std::string& parent, const std::string& what);

}  // namespace tw::bench
