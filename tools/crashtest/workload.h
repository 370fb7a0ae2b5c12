// The crash test's mixed workload: worker threads that each hold a Cap'n Proto connection and
// two gateway connections and run seeded scenarios through either front end (callback and
// activity tasks with idempotency keys, polls, heartbeats, successes, failures, cancels,
// duplicate and racing completions, completions racing short timeouts, activity deletions),
// recording every call in the Model; and two outcome-stream consumers, one on each front end,
// that read and acknowledge the events.
//
// Cycle protocol (driven by the main thread): Follow() gives the server's addresses, Run() starts
// scenarios; Drain() lets the scenarios in progress run on into the crash (their calls in flight
// at the kill are what the test is about) and starts no new one; Park() waits until every worker
// is idle; after the restart, Follow() and Run() again.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tools/crashtest/model.h"

namespace tw::crashtest {

struct WorkloadOptions {
  uint64_t seed = 1;
  int workers = 4;
  // Long-lived activities every worker issues to and polls (created by the caller).
  std::vector<std::string> activities;
  // Input filler per task, bytes (disk-full mode fills the disk with it).
  size_t input_pad = 16;
};

class Workload {
 public:
  Workload(Model* model, WorkloadOptions options);
  ~Workload();  // stops every thread

  // The server's addresses (after each start): workers reconnect before their next scenario,
  // the consumer at once.
  void Follow(const std::string& rpc_address, const std::string& aws_address);
  // Workers run scenarios.
  void Run();
  // No new scenarios; those running go on until they finish or fail.
  void Drain();
  // Waits until every worker is idle (up to timeout_ms). False if one is still busy.
  bool Park(int64_t timeout_ms);
  // Waits until the consumer has subscribed once (it registers the consumer, so that every
  // event is kept for it from then on).
  bool WaitConsumerSubscribed(int64_t timeout_ms);

  // Calls made, answered (any answer) and unanswered, over the run.
  uint64_t calls() const { return calls_.load(); }
  uint64_t unanswered() const { return unanswered_.load(); }
  uint64_t transitions_applied() const { return applied_.load(); }

 private:
  class Worker;
  void WorkerMain(int index);
  void ConsumerMain();
  void GatewayConsumerMain();
  // Blocks until Run() (returns true) or shutdown (false); sets the addresses to use.
  bool WaitRunning(uint64_t* generation, std::string* rpc, std::string* aws);

  Model* model_;
  WorkloadOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool running_ = false;
  bool shutdown_ = false;
  uint64_t generation_ = 0;
  std::string rpc_address_;
  std::string aws_address_;
  int busy_ = 0;
  bool consumer_subscribed_ = false;
  bool gateway_consumer_subscribed_ = false;
  std::atomic<uint64_t> calls_{0};
  std::atomic<uint64_t> unanswered_{0};
  std::atomic<uint64_t> applied_{0};
  std::vector<std::thread> threads_;
};

}  // namespace tw::crashtest
