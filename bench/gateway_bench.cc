// tw_bench_gateway: the AWS JSON 1.0 gateway under load, on loopback, against the Cap'n Proto
// single-call path in the same run.
//
// One process: a real engine (RocksDB store, --durability sync unless TW_BENCH_DURABILITY=none)
// behind both front ends on 127.0.0.1 (no SigV4 credentials, as `make run`), and a load
// generator on the benchmark thread: N keep-alive HTTP connections driven by epoll, each a
// closed loop of one request at a time (what an AWS SDK worker does), or a Cap'n Proto client
// with N calls in flight. Setup is outside every timed region. Reported: calls/s, durable
// transitions/s, p50 / p99 / p99.9 latency per call (microseconds).
//   BM_GatewayHeartbeat       SendTaskHeartbeat on live tasks (one per connection).
//   BM_GatewayIssueSucceed    TokenWheel.IssueTask (callback) then SendTaskSuccess with its
//                             token: two durable transitions per chain.
//   BM_CapnpHeartbeat, BM_CapnpIssueSucceed   the same through the Cap'n Proto client: the
//                             baseline the gateway's goal is a ratio of (>= 0.5).
//   BM_GatewayWaitingPolls    10,000 connections each with a GetActivityTask waiting: the
//                             server's memory per waiting poll (RSS delta / polls; the client
//                             sockets live in this process too, so it is an upper bound), then
//                             tasks issued one at a time: the time from the issue's answer to
//                             the poller's answer (issue_to_poll p50 / p99).
// The gateway's goal is in docs/BENCHMARKS.md: >= 0.5x the Cap'n Proto rate and >= 40,000
// durable transitions/s with this load generator on the same 2-core machine.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <kj/async.h>
#include <kj/vector.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_engine.h"
#include "bench/bench_stats.h"
#include "engine/clock.h"
#include "engine/engine.h"
#include "rpc/aws/gateway.h"
#include "rpc/client.h"
#include "rpc/server.h"
#include "tools/proc_stat.h"

namespace tw::rpc {
namespace {

using bench::Clock;
using bench::MicrosSince;
using bench::Run;
using bench::SortedQuantile;

struct Env {
  std::string dir;
  SystemClock clock;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Server> server;
  std::unique_ptr<aws::Gateway> gateway;
  std::unique_ptr<Client> client;
};
Env* env = nullptr;

bool SetUp(Env* e) {
  bench::BenchEngine opened;
  if (!bench::OpenBenchEngine("tw-gateway-bench", &e->clock, &opened)) return false;
  e->dir = opened.dir;
  e->engine = std::move(opened.engine);
  const bool sync = opened.sync;
  ServerOptions so;
  so.listen_address = "127.0.0.1:0";
  auto server = Server::Start(e->engine.get(), so);
  if (!server.ok()) return false;
  e->server = std::move(server.value);
  aws::GatewayOptions go;
  go.listen_address = "127.0.0.1:0";
  go.max_poll_seconds = 60;
  auto gateway = aws::Gateway::Start(e->engine.get(), go);
  if (!gateway.ok()) {
    std::fprintf(stderr, "gateway: %s\n", gateway.error.message.c_str());
    return false;
  }
  e->gateway = std::move(gateway.value);
  auto client = Client::Connect(e->server->address());
  if (!client.ok()) return false;
  e->client = std::move(client.value);
  std::fprintf(stderr, "tw_bench_gateway: durability=%s data=%s capnp=%s gateway=%s\n",
               sync ? "sync" : "none", e->dir.c_str(), e->server->address().c_str(),
               e->gateway->address().c_str());
  return true;
}

void TearDown(Env* e) {
  e->client.reset();
  e->gateway->StopAccepting();
  e->engine->Stop();
  e->gateway.reset();
  e->server.reset();
  e->engine.reset();
  std::error_code ec;
  std::filesystem::remove_all(e->dir, ec);
}

// ---- The HTTP load generator ----

std::string Post(const std::string& target, const std::string& body) {
  return "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-amz-json-1.0\r\n"
         "X-Amz-Target: " +
         target + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::string TokenOf(const std::string& body) {
  const std::string key = "\"taskToken\":\"";
  const size_t at = body.find(key);
  if (at == std::string::npos) return {};
  const size_t end = body.find('"', at + key.size());
  return body.substr(at + key.size(), end - at - key.size());
}

// One keep-alive connection: one request at a time.
struct Conn {
  int fd = -1;
  std::string out;
  size_t out_at = 0;
  std::string in;
  Clock::time_point sent;
  int step = 0;       // the chain's position (workload-specific)
  std::string token;  // the chain's task
  bool busy = false;
};

class HttpLoad {
 public:
  explicit HttpLoad(uint16_t port) : port_(port), epoll_(epoll_create1(EPOLL_CLOEXEC)) {}
  ~HttpLoad() {
    for (Conn& c : conns_) {
      if (c.fd >= 0) close(c.fd);
    }
    close(epoll_);
  }

  bool Open(size_t n) {
    conns_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      Conn& c = conns_[i];
      c.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(port_);
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return false;
      const int one = 1;
      setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = i;
      epoll_ctl(epoll_, EPOLL_CTL_ADD, c.fd, &ev);
    }
    return true;
  }

  // Sends `request` on connection i (blocking writes: requests are small).
  void Send(size_t i, const std::string& request) {
    Conn& c = conns_[i];
    c.sent = Clock::now();
    c.busy = true;
    size_t at = 0;
    while (at < request.size()) {
      const ssize_t n = send(c.fd, request.data() + at, request.size() - at, MSG_NOSIGNAL);
      if (n <= 0) return;
      at += static_cast<size_t>(n);
    }
  }

  // Runs until `done()`, calling on_response(i, status, body) for each complete response.
  void Run(const std::function<void(size_t, int, const std::string&)>& on_response,
           const std::function<bool()>& done) {
    std::vector<epoll_event> events(256);
    char buf[65536];
    while (!done()) {
      const int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), 1000);
      for (int k = 0; k < n; ++k) {
        const size_t i = events[k].data.u64;
        Conn& c = conns_[i];
        const ssize_t got = recv(c.fd, buf, sizeof(buf), 0);
        if (got <= 0) continue;
        c.in.append(buf, static_cast<size_t>(got));
        for (;;) {
          const size_t head = c.in.find("\r\n\r\n");
          if (head == std::string::npos) break;
          const size_t cl = c.in.find("Content-Length: ");
          const size_t length = cl < head ? std::strtoull(c.in.c_str() + cl + 16, nullptr, 10) : 0;
          if (c.in.size() < head + 4 + length) break;
          const int status = std::atoi(c.in.c_str() + 9);
          std::string body = c.in.substr(head + 4, length);
          c.in.erase(0, head + 4 + length);
          c.busy = false;
          on_response(i, status, body);
        }
      }
    }
  }

  Conn& conn(size_t i) { return conns_[i]; }
  size_t size() const { return conns_.size(); }

 private:
  const uint16_t port_;
  const int epoll_;
  std::vector<Conn> conns_;
};

constexpr char kInput[] = R"({\"order\":12345,\"item\":\"widget\"})";

// Live callback tasks for the heartbeat runs, issued through the Cap'n Proto client.
std::vector<std::string> IssueLive(size_t n) {
  std::vector<std::string> tokens;
  for (size_t i = 0; i < n; ++i) {
    IssueTaskRequest req;
    req.heartbeat_s = 3600;
    req.timeout_s = 7200;
    auto r = env->client->IssueTask(req);
    if (r.ok()) tokens.push_back(r.value.token);
  }
  return tokens;
}

void BM_GatewayHeartbeat(benchmark::State& state) {
  const size_t conns = static_cast<size_t>(state.range(0));
  const std::vector<std::string> tokens = IssueLive(conns);
  for (auto _ : state) {
    HttpLoad load(env->gateway->port());
    if (!load.Open(conns) || tokens.size() != conns) {
      state.SkipWithError("setup failed");
      return;
    }
    Run run;
    uint64_t remaining = 200'000;
    run.latency_us.reserve(remaining);
    std::vector<std::string> requests;
    for (const std::string& t : tokens) {
      requests.push_back(
          Post("AWSStepFunctions.SendTaskHeartbeat", "{\"taskToken\":\"" + t + "\"}"));
    }
    const auto t0 = Clock::now();
    uint64_t started = 0;
    for (size_t i = 0; i < conns; ++i, ++started) load.Send(i, requests[i]);
    uint64_t answered = 0;
    load.Run(
        [&](size_t i, int status, const std::string&) {
          run.latency_us.push_back(MicrosSince(load.conn(i).sent));
          ++run.calls;
          ++answered;
          if (status != 200) ++run.errors;
          if (started < remaining) {
            ++started;
            load.Send(i, requests[i]);
          }
        },
        [&]() { return answered >= remaining; });
    run.Report(state, std::chrono::duration<double>(Clock::now() - t0).count());
  }
}

void BM_GatewayIssueSucceed(benchmark::State& state) {
  const size_t conns = static_cast<size_t>(state.range(0));
  const std::string issue = Post("TokenWheel.IssueTask", std::string("{\"input\":\"") + kInput +
                                                             "\",\"timeoutSeconds\":3600}");
  for (auto _ : state) {
    HttpLoad load(env->gateway->port());
    if (!load.Open(conns)) {
      state.SkipWithError("setup failed");
      return;
    }
    Run run;
    const uint64_t chains = 50'000;
    run.latency_us.reserve(2 * chains);
    uint64_t started = 0;
    uint64_t finished = 0;
    const auto t0 = Clock::now();
    for (size_t i = 0; i < conns; ++i, ++started) load.Send(i, issue);
    load.Run(
        [&](size_t i, int status, const std::string& body) {
          Conn& c = load.conn(i);
          run.latency_us.push_back(MicrosSince(c.sent));
          ++run.calls;
          if (status != 200) ++run.errors;
          if (c.step == 0 && status == 200) {
            ++run.transitions;
            c.step = 1;
            load.Send(i, Post("AWSStepFunctions.SendTaskSuccess",
                              "{\"taskToken\":\"" + TokenOf(body) + "\",\"output\":\"{}\"}"));
            return;
          }
          if (c.step == 1 && status == 200) ++run.transitions;
          c.step = 0;
          ++finished;
          if (started < chains) {
            ++started;
            load.Send(i, issue);
          }
        },
        [&]() { return finished >= chains; });
    run.Report(state, std::chrono::duration<double>(Clock::now() - t0).count());
  }
}

// ---- The Cap'n Proto baseline ----

struct CapnpLoop {
  uint64_t remaining = 0;
  Run run;
};

void BM_CapnpIssueSucceed(benchmark::State& state) {
  const int window = static_cast<int>(state.range(0));
  IssueTaskRequest task;
  task.input = R"({"order":12345,"item":"widget"})";
  task.timeout_s = 3600;
  for (auto _ : state) {
    CapnpLoop l;
    l.remaining = 50'000;
    l.run.latency_us.reserve(2 * l.remaining);
    std::function<kj::Promise<void>()> chain = [&]() -> kj::Promise<void> {
      if (l.remaining == 0) return kj::READY_NOW;
      --l.remaining;
      const auto t0 = Clock::now();
      return env->client->IssueTaskAsync(task).then(
          [&, t0](Result<IssueTaskReply> issued) -> kj::Promise<void> {
            l.run.latency_us.push_back(MicrosSince(t0));
            ++l.run.calls;
            if (!issued.ok()) {
              ++l.run.errors;
              return chain();
            }
            ++l.run.transitions;
            const auto t1 = Clock::now();
            return env->client->SendTaskSuccessAsync({issued.value.token, "{}"})
                .then([&, t1](Result<CompletionReply> done) {
                  l.run.latency_us.push_back(MicrosSince(t1));
                  ++l.run.calls;
                  if (done.ok()) {
                    ++l.run.transitions;
                  } else {
                    ++l.run.errors;
                  }
                  return chain();
                });
          });
    };
    const auto t0 = Clock::now();
    kj::Vector<kj::Promise<void>> chains;
    for (int i = 0; i < window; ++i) chains.add(chain());
    kj::joinPromises(chains.releaseAsArray()).wait(env->client->wait_scope());
    l.run.Report(state, std::chrono::duration<double>(Clock::now() - t0).count());
  }
}

void BM_CapnpHeartbeat(benchmark::State& state) {
  const int window = static_cast<int>(state.range(0));
  const std::vector<std::string> tokens = IssueLive(static_cast<size_t>(window));
  for (auto _ : state) {
    CapnpLoop l;
    l.remaining = 200'000;
    l.run.latency_us.reserve(l.remaining);
    std::function<kj::Promise<void>(size_t)> chain = [&](size_t i) -> kj::Promise<void> {
      if (l.remaining == 0) return kj::READY_NOW;
      --l.remaining;
      const auto t0 = Clock::now();
      return env->client->SendTaskHeartbeatAsync(tokens[i]).then([&, i, t0](Result<Empty> r) {
        l.run.latency_us.push_back(MicrosSince(t0));
        ++l.run.calls;
        if (!r.ok()) ++l.run.errors;
        return chain(i);
      });
    };
    const auto t0 = Clock::now();
    kj::Vector<kj::Promise<void>> chains;
    for (int i = 0; i < window; ++i) chains.add(chain(static_cast<size_t>(i)));
    kj::joinPromises(chains.releaseAsArray()).wait(env->client->wait_scope());
    l.run.Report(state, std::chrono::duration<double>(Clock::now() - t0).count());
  }
}

// ---- 10,000 waiting polls ----

int64_t MonotonicNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// At most this many pollers wait on one activity (EngineOptions::pollers_per_activity_max, AWS's
// limit): the polls are spread over activities "<ARN>-0", "<ARN>-1", ...
constexpr size_t kPollsPerActivity = limits::kPollersPerActivityDefault;

std::string PollArn(const std::string& base, size_t i) {
  return base + "-" + std::to_string(i / kPollsPerActivity);
}

// The pollers run in a child process (this binary, --poll-client PORT ARN N): both ends of
// 10,000 connections would not fit one process's open-files limit, and the server's RSS is then
// the server's alone. The child opens N connections, sends a GetActivityTask on each, writes
// "ready" on stdout, then one line per task it receives: the CLOCK_MONOTONIC time (ns) of the
// answer. It exits when stdin closes.
int PollClient(uint16_t port, const std::string& arn, size_t n) {
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  setrlimit(RLIMIT_NOFILE, &lim);
  HttpLoad load(port);
  if (!load.Open(n)) {
    std::printf("failed\n");
    return 1;
  }
  for (size_t i = 0; i < n; ++i) {
    load.Send(i, Post("AWSStepFunctions.GetActivityTask",
                      "{\"activityArn\":\"" + PollArn(arn, i) + "\"}"));
  }
  std::printf("ready\n");
  std::fflush(stdout);
  size_t got = 0;
  load.Run(
      [&](size_t, int, const std::string& body) {
        if (TokenOf(body).empty()) return;
        std::printf("%lld\n", static_cast<long long>(MonotonicNs()));
        std::fflush(stdout);
        ++got;
      },
      [&]() { return got >= n; });
  return 0;
}

void BM_GatewayWaitingPolls(benchmark::State& state) {
  const size_t polls = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    const std::string name = "polls" + std::to_string(polls);
    std::string arn;
    for (size_t i = 0; i < polls; i += kPollsPerActivity) {
      auto created =
          env->client->CreateActivity(name + "-" + std::to_string(i / kPollsPerActivity));
      if (!created.ok()) {
        state.SkipWithError("create activity failed");
        return;
      }
      arn = created.value.arn.substr(0, created.value.arn.rfind('-'));
    }
    const uint64_t rss0 = RssBytes(getpid());
    int to_child[2];
    int from_child[2];
    if (pipe(to_child) != 0 || pipe(from_child) != 0) {
      state.SkipWithError("pipe");
      return;
    }
    const std::string port = std::to_string(env->gateway->port());
    const std::string count = std::to_string(polls);
    const pid_t child = fork();
    if (child == 0) {
      // Only async-signal-safe calls until exec: other threads may hold malloc's locks.
      dup2(to_child[0], 0);
      dup2(from_child[1], 1);
      execl("/proc/self/exe", "tw_bench_gateway", "--poll-client", port.c_str(), arn.c_str(),
            count.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    FILE* lines = fdopen(from_child[0], "r");
    char line[64];
    const bool ready =
        std::fgets(line, sizeof(line), lines) != nullptr && std::string(line) == "ready\n";
    for (int tries = 0; ready && tries < 1200; ++tries) {
      auto s = env->client->Stats();
      if (s.ok() && s.value.engine.waiting_polls >= polls) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const uint64_t rss1 = RssBytes(getpid());
    // Tasks issued one at a time; each goes to a waiting poller.
    HttpLoad issuer(env->gateway->port());
    std::vector<uint32_t> to_poll_us;
    const size_t tasks = ready ? std::min<size_t>(polls, 2000) : 0;
    if (tasks > 0 && issuer.Open(1)) {
      for (size_t k = 0; k < tasks; ++k) {
        const std::string issue =
            Post("TokenWheel.IssueTask", "{\"activityArn\":\"" +
                                             PollArn(arn, (k * kPollsPerActivity) % polls) +
                                             "\",\"input\":\"{}\"}");
        const int64_t sent_ns = MonotonicNs();
        issuer.Send(0, issue);
        bool answered = false;
        issuer.Run([&](size_t, int, const std::string&) { answered = true; },
                   [&]() { return answered; });
        if (std::fgets(line, sizeof(line), lines) == nullptr) break;
        to_poll_us.push_back(static_cast<uint32_t>((std::atoll(line) - sent_ns) / 1000));
      }
    }
    close(to_child[1]);
    kill(child, SIGTERM);
    waitpid(child, nullptr, 0);
    std::fclose(lines);
    if (!ready) {
      state.SkipWithError("the poll client could not open its connections");
      return;
    }
    state.SetIterationTime(1);
    state.counters["polls"] = static_cast<double>(polls);
    state.counters["server_bytes_per_poll"] =
        static_cast<double>(rss1 > rss0 ? rss1 - rss0 : 0) / static_cast<double>(polls);
    state.counters["issue_to_poll_p50_us"] = SortedQuantile(to_poll_us, 0.50);
    state.counters["issue_to_poll_p99_us"] = SortedQuantile(to_poll_us, 0.99);
  }
}

BENCHMARK(BM_GatewayHeartbeat)
    ->Arg(64)
    ->Arg(256)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CapnpHeartbeat)
    ->Arg(64)
    ->Arg(256)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GatewayIssueSucceed)
    ->Arg(64)
    ->Arg(256)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CapnpIssueSucceed)
    ->Arg(64)
    ->Arg(256)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GatewayWaitingPolls)
    ->Arg(10'000)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace tw::rpc

int main(int argc, char** argv) {
  if (argc == 5 && std::string(argv[1]) == "--poll-client") {
    return tw::rpc::PollClient(static_cast<uint16_t>(std::atoi(argv[2])), argv[3],
                               static_cast<size_t>(std::atoll(argv[4])));
  }
  benchmark::Initialize(&argc, argv);
  tw::rpc::Env e;
  if (!tw::rpc::SetUp(&e)) return 1;
  tw::rpc::env = &e;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  tw::rpc::TearDown(&e);
  return 0;
}
