#include "tools/crashtest/overload.h"

#include <arpa/inet.h>
#include <kj/async.h>
#include <kj/vector.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "engine/limits.h"
#include "rpc/client.h"
#include "tools/crashtest/gateway_client.h"
#include "tools/crashtest/server_process.h"
#include "tools/proc_stat.h"

namespace tw::crashtest {

namespace {

constexpr int kRpcFloodThreads = 4;
constexpr int kRpcFloodClientsPerThread = 2;  // each with kRpcConnectionCallsMax in flight
constexpr int kGatewayFloodThreads = 4;
constexpr int kGatewayConnectionsPerThread = 2500;  // 10,000 > kAwsCallsInFlightMax
constexpr int kIdlePerPort = 2000;
constexpr int kSlowLoris = 200;
constexpr int kGarbagePerPort = 100;
constexpr int kOversizePerPort = 50;
// A probe call not answered within this is a failure (an OVERLOADED answer is an answer).
// Generous: the test suite runs this under ASan on a loaded 2-core machine; the figures show
// what it took.
constexpr int64_t kProbeAnswerMs = 15'000;
constexpr int64_t kProbePauseMs = 20;
// The server's RSS may grow this much above its idle figure under any of this.
constexpr uint64_t kRssBudgetBytes = 1ull << 30;
// Acknowledged flood issues read back at the end, at most (every probe task is read back).
constexpr size_t kVerifySampleMax = 20'000;

struct Tally {
  std::atomic<uint64_t> ok{0};
  std::atomic<uint64_t> overloaded{0};
  std::atomic<uint64_t> other{0};
  nlohmann::json ToJson() const {
    return {{"ok", ok.load()}, {"overloaded", overloaded.load()}, {"other", other.load()}};
  }
};

// Tokens of acknowledged issues, and of acknowledged successes.
struct AckedTokens {
  std::mutex mu;
  std::vector<std::string> issued;
  std::vector<std::string> succeeded;
  void Add(std::vector<std::string>* local) {
    std::lock_guard<std::mutex> lock(mu);
    issued.insert(issued.end(), local->begin(), local->end());
    local->clear();
  }
};

std::pair<std::string, uint16_t> HostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  return {address.substr(0, colon),
          static_cast<uint16_t>(std::strtoul(address.c_str() + colon + 1, nullptr, 10))};
}

// A connected loopback socket (blocking, or not), or -1.
int Dial(const std::string& address, bool nonblocking) {
  const auto [host, port] = HostPort(address);
  const int fd =
      ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 &&
      !(nonblocking && errno == EINPROGRESS)) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void RaiseOpenFiles() {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &r);
  }
}

// ---- the Cap'n Proto flood: lanes of back-to-back issues, kRpcConnectionCallsMax per client ----

struct RpcFloodState {
  int64_t deadline_ms;
  Tally* tally;
  std::vector<std::string> acked;
  uint64_t serial = 0;
  std::string prefix;
};

kj::Promise<void> RpcLane(rpc::Client* c, RpcFloodState* s) {
  if (SteadyMs() >= s->deadline_ms) return kj::READY_NOW;
  IssueTaskRequest req;
  req.idempotency_key = s->prefix + std::to_string(++s->serial);
  return c->IssueTaskAsync(req).then(
      [c, s](Result<IssueTaskReply> r) -> kj::Promise<void> {
        if (r.ok()) {
          ++s->tally->ok;
          s->acked.push_back(r.value.token);
        } else {
          ++s->tally->other;
        }
        return RpcLane(c, s);
      },
      [c, s](kj::Exception&& e) -> kj::Promise<void> {
        if (e.getType() != kj::Exception::Type::OVERLOADED) {
          ++s->tally->other;
          return kj::READY_NOW;  // the connection is gone: this lane ends
        }
        ++s->tally->overloaded;
        return RpcLane(c, s);
      });
}

void RpcFlood(const std::string& address, int thread, int64_t deadline_ms, Tally* tally,
              AckedTokens* acked) {
  RpcFloodState state{deadline_ms, tally, {}, 0, "rf" + std::to_string(thread) + "-"};
  std::vector<std::unique_ptr<rpc::Client>> clients;
  for (int i = 0; i < kRpcFloodClientsPerThread; ++i) {
    auto c = rpc::Client::Connect(address, 10'000);
    if (c.ok()) clients.push_back(std::move(c.value));
  }
  if (clients.empty()) return;
  kj::Vector<kj::Promise<void>> lanes;
  for (auto& c : clients) {
    for (size_t i = 0; i < limits::kRpcConnectionCallsMax; ++i) lanes.add(RpcLane(c.get(), &state));
  }
  kj::joinPromises(lanes.releaseAsArray()).wait(clients.front()->wait_scope());
  acked->Add(&state.acked);
}

// ---- the gateway flood: many connections, one issue in flight on each ----

struct HttpConn {
  int fd = -1;
  std::string out;
  size_t sent = 0;
  std::string in;
  bool waiting = false;  // the request is out, its answer not yet in
};

std::string IssueRequest(const std::string& key) {
  const std::string body = "{\"idempotencyKey\":\"" + key + "\"}";
  return "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-amz-json-1.0\r\n"
         "X-Amz-Target: TokenWheel.IssueTask\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

// One complete answer at the front of `in`: consumes it and tallies it. False if incomplete.
bool TakeAnswer(std::string* in, Tally* tally, std::vector<std::string>* acked) {
  const size_t head_end = in->find("\r\n\r\n");
  if (head_end == std::string::npos) return false;
  std::string head = in->substr(0, head_end);
  std::transform(head.begin(), head.end(), head.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  const size_t cl = head.find("content-length:");
  const size_t length =
      cl == std::string::npos ? 0 : std::strtoul(head.c_str() + cl + 15, nullptr, 10);
  if (in->size() < head_end + 4 + length) return false;
  const std::string body = in->substr(head_end + 4, length);
  in->erase(0, head_end + 4 + length);
  if (head.rfind("http/1.1 200", 0) == 0) {
    ++tally->ok;
    const auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_object() && j.contains("taskToken") && j["taskToken"].is_string()) {
      acked->push_back(j["taskToken"].get<std::string>());
    }
  } else if (head.find("throttlingexception") != std::string::npos) {
    ++tally->overloaded;
  } else {
    ++tally->other;
  }
  return true;
}

void GatewayFlood(const std::string& address, int thread, int64_t deadline_ms, Tally* tally,
                  AckedTokens* acked, std::atomic<uint64_t>* connect_failures) {
  std::vector<HttpConn> conns(kGatewayConnectionsPerThread);
  std::vector<std::string> tokens;
  uint64_t serial = 0;
  auto next = [&](HttpConn& c) {
    c.out = IssueRequest("gf" + std::to_string(thread) + "-" + std::to_string(++serial));
    c.sent = 0;
    c.waiting = false;
  };
  for (HttpConn& c : conns) {
    c.fd = Dial(address, /*nonblocking=*/true);
    if (c.fd < 0) ++*connect_failures;
    next(c);
  }
  std::vector<pollfd> fds(conns.size());
  while (SteadyMs() < deadline_ms) {
    for (size_t i = 0; i < conns.size(); ++i) {
      fds[i] = {conns[i].fd, static_cast<short>(conns[i].waiting ? POLLIN : POLLOUT), 0};
    }
    if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
    for (size_t i = 0; i < conns.size(); ++i) {
      HttpConn& c = conns[i];
      if (c.fd < 0 || fds[i].revents == 0) continue;
      if (!c.waiting) {
        const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
        if (n > 0) c.sent += static_cast<size_t>(n);
        if (c.sent == c.out.size()) c.waiting = true;
        if (n < 0 && errno != EAGAIN) c.waiting = true;  // the read below sees the close
        continue;
      }
      char buf[8192];
      const ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
      if (n <= 0) {
        if (n < 0 && errno == EAGAIN) continue;
        ++tally->other;  // closed by the server (a 503 at the connection cap, say)
        ::close(c.fd);
        c.fd = Dial(address, /*nonblocking=*/true);
        c.in.clear();
        next(c);
        continue;
      }
      c.in.append(buf, static_cast<size_t>(n));
      if (TakeAnswer(&c.in, tally, &tokens)) next(c);
    }
  }
  for (HttpConn& c : conns) {
    if (c.fd >= 0) ::close(c.fd);
  }
  acked->Add(&tokens);
}

// ---- the probe: a well-behaved client on both front ends ----

struct ProbeFigures {
  std::vector<int64_t> latency_ms;
  uint64_t unanswered = 0;
  uint64_t overloaded = 0;
  uint64_t errors = 0;
};

template <typename T>
Result<T> Bounded(rpc::Client* c, kj::Promise<Result<T>> p) {
  return c->Wait(
      p.exclusiveJoin(c->timer().afterDelay(kProbeAnswerMs * kj::MILLISECONDS).then([]() {
        return Result<T>::Fail(Error::Make(ErrorCode::kInternal, "probe: no answer in time"));
      })));
}

void Probe(const std::string& rpc_address, const std::string& aws_address,
           const std::atomic<bool>* stop, ProbeFigures* out, AckedTokens* acked) {
  auto connected = rpc::Client::Connect(rpc_address, kProbeAnswerMs);
  if (!connected.ok()) {
    ++out->unanswered;
    return;
  }
  rpc::Client* c = connected.value.get();
  GatewayClient gateway(aws_address);
  uint64_t serial = 0;
  auto note = [&](const Error& e, int64_t t0) {
    out->latency_ms.push_back(SteadyMs() - t0);
    if (e.ok()) return true;
    if (e.message == "probe: no answer in time") {
      ++out->unanswered;
    } else if (e.code == ErrorCode::kOverloaded) {
      ++out->overloaded;
    } else {
      ++out->errors;
    }
    return false;
  };
  while (!stop->load()) {
    IssueTaskRequest req;
    req.idempotency_key = "probe-" + std::to_string(++serial);
    int64_t t0 = SteadyMs();
    const auto issued = Bounded(c, c->IssueTaskAsync(req));
    if (note(issued.error, t0)) {
      const std::string token = issued.value.token;
      t0 = SteadyMs();
      const auto r = gateway.Call("AWSStepFunctions.SendTaskSuccess",
                                  {{"taskToken", token}, {"output", "{}"}}, kProbeAnswerMs);
      out->latency_ms.push_back(SteadyMs() - t0);
      std::lock_guard<std::mutex> lock(acked->mu);
      acked->issued.push_back(token);
      if (!r) {
        ++out->unanswered;
      } else if (r->ok()) {
        acked->succeeded.push_back(token);
      } else if (r->error_code() == "ThrottlingException") {
        ++out->overloaded;
      } else {
        ++out->errors;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(kProbePauseMs));
  }
}

// ---- hostile clients ----

struct Hostile {
  std::vector<int> idle;
  std::vector<int> slow;
  std::vector<int> closable;  // garbage and oversize: the server must close each
};

void OpenHostile(const std::string& rpc, const std::string& aws, uint64_t seed, Hostile* h,
                 nlohmann::json* figures) {
  std::mt19937_64 rng(seed);
  uint64_t failed = 0;
  for (const std::string* address : {&rpc, &aws}) {
    for (int i = 0; i < kIdlePerPort; ++i) {
      const int fd = Dial(*address, false);
      fd < 0 ? ++failed : (h->idle.push_back(fd), 0);
    }
  }
  const std::string slow_head =
      "POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: TokenWheel.Stats\r\n"
      "Content-Length: 1000\r\n\r\n";
  for (int i = 0; i < kSlowLoris; ++i) {
    const int fd = Dial(aws, false);
    if (fd < 0 || ::send(fd, slow_head.data(), slow_head.size(), MSG_NOSIGNAL) < 0) {
      ++failed;
      if (fd >= 0) ::close(fd);
      continue;
    }
    h->slow.push_back(fd);
  }
  std::string garbage(4096, '\0');
  // A Cap'n Proto frame that claims one segment of 2^28 words (2 GiB); an HTTP body of 100 MiB.
  const std::string rpc_oversize("\x00\x00\x00\x00\x00\x00\x00\x10", 8);
  const std::string aws_oversize =
      "POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: TokenWheel.Stats\r\n"
      "Content-Type: application/x-amz-json-1.0\r\nContent-Length: 104857600\r\n\r\n" +
      std::string(65536, ' ');
  for (const std::string* address : {&rpc, &aws}) {
    for (int i = 0; i < kGarbagePerPort + kOversizePerPort; ++i) {
      const int fd = Dial(*address, false);
      if (fd < 0) {
        ++failed;
        continue;
      }
      for (char& ch : garbage) ch = static_cast<char>(rng());
      const std::string& payload =
          i < kGarbagePerPort ? garbage : (address == &rpc ? rpc_oversize : aws_oversize);
      (void)::send(fd, payload.data(), payload.size(), MSG_NOSIGNAL);
      h->closable.push_back(fd);
    }
  }
  (*figures)["idle_connections"] = h->idle.size();
  (*figures)["slow_loris_connections"] = h->slow.size();
  (*figures)["garbage_and_oversize_connections"] = h->closable.size();
  (*figures)["connect_failures"] = failed;
}

// True if the server closed the connection (EOF or reset), reading whatever it answered.
bool ClosedByServer(int fd) {
  char buf[65536];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) return n == 0 || errno != EAGAIN;
  }
}

void TrickleAndWait(Hostile* h, int64_t until_ms) {
  while (SteadyMs() < until_ms) {
    for (int fd : h->slow) (void)::send(fd, " ", 1, MSG_NOSIGNAL);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

// ---- read-back ----

uint64_t VerifyAcked(const std::string& rpc_address, AckedTokens* acked, uint64_t seed,
                     nlohmann::json* figures) {
  auto c = rpc::Client::Connect(rpc_address, 10'000);
  if (!c.ok()) return 1;
  std::vector<std::string> sample = acked->issued;
  std::shuffle(sample.begin(), sample.end(), std::mt19937_64(seed));
  if (sample.size() > kVerifySampleMax) sample.resize(kVerifySampleMax);
  sample.insert(sample.end(), acked->succeeded.begin(), acked->succeeded.end());
  std::sort(acked->succeeded.begin(), acked->succeeded.end());
  uint64_t lost = 0;
  for (const std::string& token : sample) {
    const auto d = c.value->DescribeTask(token);
    const bool succeeded =
        std::binary_search(acked->succeeded.begin(), acked->succeeded.end(), token);
    if (!d.ok() || (succeeded && d.value.state != TaskState::kSucceeded)) {
      if (lost++ < 10) {
        std::cerr << "crashtest: overload: acknowledged task " << token << " reads "
                  << (d.ok() ? TaskStateName(d.value.state) : d.error.message) << "\n";
      }
    }
  }
  (*figures)["acked_issues"] = acked->issued.size();
  (*figures)["acked_successes"] = acked->succeeded.size();
  (*figures)["read_back"] = sample.size();
  return lost;
}

}  // namespace

uint64_t RunOverload(ServerProcess* server, const OverloadOptions& options,
                     nlohmann::json* summary) {
  RaiseOpenFiles();
  const std::string rpc = server->rpc_address();
  const std::string aws = server->aws_address();
  const pid_t pid = server->pid();
  const uint64_t rss_idle = RssBytes(pid);
  std::atomic<uint64_t> rss_max{rss_idle};
  std::atomic<bool> stop{false};
  std::thread sampler([&] {
    while (!stop.load()) {
      const uint64_t rss = RssBytes(pid);
      if (rss > rss_max.load()) rss_max = rss;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  AckedTokens acked;
  ProbeFigures probe;
  std::thread prober([&] { Probe(rpc, aws, &stop, &probe, &acked); });

  // 1. Flood.
  Tally rpc_tally;
  Tally aws_tally;
  std::atomic<uint64_t> aws_connect_failures{0};
  const int64_t flood_end = SteadyMs() + options.flood_ms;
  std::vector<std::thread> flood;
  for (int i = 0; i < kRpcFloodThreads; ++i) {
    flood.emplace_back([&, i] { RpcFlood(rpc, i, flood_end, &rpc_tally, &acked); });
  }
  for (int i = 0; i < kGatewayFloodThreads; ++i) {
    flood.emplace_back(
        [&, i] { GatewayFlood(aws, i, flood_end, &aws_tally, &acked, &aws_connect_failures); });
  }
  for (auto& t : flood) t.join();
  const uint64_t rss_after_flood = rss_max.load();

  // 2. Hostile clients, while the probe goes on.
  nlohmann::json hostile_figures;
  Hostile hostile;
  OpenHostile(rpc, aws, options.seed, &hostile, &hostile_figures);
  TrickleAndWait(&hostile, SteadyMs() + options.hostile_ms);
  uint64_t closed = 0;
  for (int fd : hostile.closable) closed += ClosedByServer(fd);
  hostile_figures["garbage_and_oversize_closed_by_server"] = closed;
  for (const auto* fds : {&hostile.idle, &hostile.slow, &hostile.closable}) {
    for (int fd : *fds) ::close(fd);
  }
  stop = true;
  prober.join();
  sampler.join();

  nlohmann::json verify;
  const uint64_t lost = VerifyAcked(rpc, &acked, options.seed, &verify);
  const uint64_t rss_growth = rss_max.load() > rss_idle ? rss_max.load() - rss_idle : 0;
  (*summary)["flood_capnp"] = rpc_tally.ToJson();
  (*summary)["flood_gateway"] = aws_tally.ToJson();
  (*summary)["flood_gateway"]["connect_failures"] = aws_connect_failures.load();
  (*summary)["hostile"] = hostile_figures;
  (*summary)["probe"] = {{"calls", probe.latency_ms.size()},
                         {"unanswered", probe.unanswered},
                         {"overloaded", probe.overloaded},
                         {"errors", probe.errors},
                         {"p50_ms", Percentile(probe.latency_ms, 0.5)},
                         {"p99_ms", Percentile(probe.latency_ms, 0.99)},
                         {"max_ms", Percentile(probe.latency_ms, 1.0)}};
  (*summary)["rss_idle_mb"] = rss_idle >> 20;
  (*summary)["rss_max_after_flood_mb"] = rss_after_flood >> 20;
  (*summary)["rss_max_mb"] = rss_max.load() >> 20;
  (*summary)["rss_budget_mb"] = kRssBudgetBytes >> 20;
  (*summary)["read_back"] = verify;
  (*summary)["acked_lost"] = lost;

  uint64_t failures = lost;
  auto expect = [&](bool ok, const std::string& what) {
    if (ok) return;
    ++failures;
    std::cerr << "crashtest: overload: " << what << "\n";
  };
  expect(rpc_tally.overloaded > 0, "no Cap'n Proto call was answered OVERLOADED");
  // The gateway reads a connection's request only when its engine has room (its bound is
  // kAwsCallsInFlightMax), so its flood may be held in socket buffers (backpressure) rather
  // than answered ThrottlingException: both are right; a call dropped or failed is not.
  expect(aws_tally.other == 0, "gateway calls failed other than by throttling");
  expect(rpc_tally.other == 0, "Cap'n Proto calls failed other than by overload");
  expect(probe.unanswered == 0, "the probe client went unanswered");
  // Overload may refuse the well-behaved client now and then, not starve it.
  expect(probe.overloaded * 2 <= probe.latency_ms.size(),
         "the probe client was refused more often than served");
  expect(hostile_figures["connect_failures"] == 0 && aws_connect_failures.load() == 0,
         "connections failed (an open-files limit too low for the test?)");
  expect(probe.errors == 0, "the probe client got errors other than overload");
  expect(rss_growth <= kRssBudgetBytes, "RSS grew past its budget");
  expect(closed == hostile.closable.size(), "garbage or oversize connections left open");
  return failures;
}

}  // namespace tw::crashtest
