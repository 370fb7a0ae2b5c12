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
#include <tuple>
#include <utility>
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
constexpr int kGatewayConnectionsPerThread = 2500;  // 10,000 > kOverloadAwsConnectionsMax
// The sustainable rate: one Cap'n Proto client with this many issues in flight, then this many
// gateway connections with one each, closed loop, for kSustainMs each.
constexpr size_t kSustainLanes = 64;
constexpr int kSustainConnections = 64;
constexpr int64_t kSustainMs = 2000;
// How long the gateway flood may go on past its deadline until a call is refused at the cap.
constexpr int64_t kThrottleWaitMs = 30'000;
// The flood keeps at least this many times the sustainable phase's calls in flight on each
// front end. (As a call rate it cannot: the load generator shares the server's two cores, so
// the flood's calls per second, refusals included, are what the machine has left; the summary
// reports them beside the sustainable rate.)
constexpr size_t kFloodFactorMin = 10;
static_assert(kRpcFloodThreads * kRpcFloodClientsPerThread * limits::kRpcConnectionCallsMax >=
              kFloodFactorMin * kSustainLanes);
static_assert(kGatewayFloodThreads * kGatewayConnectionsPerThread >=
              kFloodFactorMin * kSustainConnections);
static_assert(kGatewayFloodThreads * kGatewayConnectionsPerThread > kOverloadAwsConnectionsMax);
constexpr int kIdlePerPort = 1500;  // with the gateway's slow and garbage: < its cap
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
  // Gateway calls whose connection closed with no answer: past kAwsRefusalsInProgressMax
  // refusals at once the gateway closes a connection past its cap without writing the 503.
  std::atomic<uint64_t> closed_unanswered{0};
  uint64_t calls() const {
    return ok.load() + overloaded.load() + other.load() + closed_unanswered.load();
  }
  nlohmann::json ToJson() const {
    return {{"ok", ok.load()},
            {"overloaded", overloaded.load()},
            {"other", other.load()},
            {"closed_unanswered", closed_unanswered.load()}};
  }
};

double PerSecond(uint64_t n, int64_t ms) {
  return ms > 0 ? static_cast<double>(n) * 1000.0 / static_cast<double>(ms) : 0.0;
}

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

// `clients` connections, each with `lanes` issues in flight back to back, until the deadline.
void RpcFlood(const std::string& address, const std::string& name, int clients_n, size_t lanes_n,
              int64_t deadline_ms, Tally* tally, AckedTokens* acked) {
  RpcFloodState state{deadline_ms, tally, {}, 0, name + "-"};
  std::vector<std::unique_ptr<rpc::Client>> clients;
  for (int i = 0; i < clients_n; ++i) {
    auto c = rpc::Client::Connect(address, 10'000);
    if (c.ok()) clients.push_back(std::move(c.value));
  }
  if (clients.empty()) return;
  kj::Vector<kj::Promise<void>> lanes;
  for (auto& c : clients) {
    for (size_t i = 0; i < lanes_n; ++i) lanes.add(RpcLane(c.get(), &state));
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

enum class Answer { kIncomplete, kKeepAlive, kClose };

// One complete answer at the front of `in`: consumes it and tallies it. kClose when the server
// said it closes the connection (a 503 at the connection cap does).
Answer TakeAnswer(std::string* in, Tally* tally, std::vector<std::string>* acked) {
  const size_t head_end = in->find("\r\n\r\n");
  if (head_end == std::string::npos) return Answer::kIncomplete;
  std::string head = in->substr(0, head_end);
  std::transform(head.begin(), head.end(), head.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  const size_t cl = head.find("content-length:");
  const size_t length =
      cl == std::string::npos ? 0 : std::strtoul(head.c_str() + cl + 15, nullptr, 10);
  if (in->size() < head_end + 4 + length) return Answer::kIncomplete;
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
  return head.find("\r\nconnection: close") != std::string::npos ? Answer::kClose
                                                                 : Answer::kKeepAlive;
}

// `connections` connections, each with one issue in flight, until the deadline; a connection the
// server closes (after a 503 at its connection cap) is dialled again.
void GatewayFlood(const std::string& address, const std::string& name, int connections,
                  int64_t deadline_ms, bool until_throttled, Tally* tally, AckedTokens* acked,
                  std::atomic<uint64_t>* connect_failures) {
  std::vector<HttpConn> conns(static_cast<size_t>(connections));
  std::vector<std::string> tokens;
  uint64_t serial = 0;
  auto next = [&](HttpConn& c) {
    c.out = IssueRequest(name + "-" + std::to_string(++serial));
    c.sent = 0;
    c.waiting = false;
  };
  for (HttpConn& c : conns) {
    c.fd = Dial(address, /*nonblocking=*/true);
    if (c.fd < 0) ++*connect_failures;
    next(c);
  }
  std::vector<pollfd> fds(conns.size());
  // Past the deadline, a flood that has not yet met the connection cap (a slow build on a busy
  // machine accepts slowly) goes on until it does, up to kThrottleWaitMs.
  const int64_t wait_end = deadline_ms + (until_throttled ? kThrottleWaitMs : 0);
  const auto go_on = [&]() {
    const int64_t now = SteadyMs();
    return now < deadline_ms || (now < wait_end && tally->overloaded.load() == 0);
  };
  while (go_on()) {
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
      auto redial = [&]() {
        ::close(c.fd);
        c.fd = Dial(address, /*nonblocking=*/true);
        if (c.fd < 0) ++*connect_failures;
        c.in.clear();
        next(c);
      };
      char buf[8192];
      const ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
      if (n <= 0) {
        if (n < 0 && errno == EAGAIN) continue;
        ++tally->closed_unanswered;
        redial();
        continue;
      }
      c.in.append(buf, static_cast<size_t>(n));
      switch (TakeAnswer(&c.in, tally, &tokens)) {
        case Answer::kIncomplete:
          break;
        case Answer::kKeepAlive:
          next(c);
          break;
        case Answer::kClose:
          redial();
          break;
      }
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
  std::vector<int> idle;      // gateway: kept open (its idle timeout is 60 s)
  std::vector<int> slow;      // gateway: a request trickled a byte at a time
  std::vector<int> rpc_idle;  // Cap'n Proto: no bytes at all
  std::vector<int> rpc_slow;  // Cap'n Proto: a frame trickled a byte at a time
  std::vector<int> closable;  // garbage and oversize: the server must close each
};

void OpenHostile(const std::string& rpc, const std::string& aws, uint64_t seed, Hostile* h,
                 nlohmann::json* figures) {
  std::mt19937_64 rng(seed);
  uint64_t failed = 0;
  for (int i = 0; i < kIdlePerPort; ++i) {
    for (auto [address, fds] : {std::pair{&rpc, &h->rpc_idle}, std::pair{&aws, &h->idle}}) {
      const int fd = Dial(*address, false);
      fd < 0 ? ++failed : (fds->push_back(fd), 0);
    }
  }
  // The start of a request that never completes: an HTTP head announcing a body, a Cap'n Proto
  // frame header announcing one segment of 1,000 words.
  const std::string aws_slow_head =
      "POST / HTTP/1.1\r\nHost: localhost\r\nX-Amz-Target: TokenWheel.Stats\r\n"
      "Content-Length: 1000\r\n\r\n";
  const std::string rpc_slow_head("\x00\x00\x00\x00\xe8\x03\x00\x00", 8);
  for (int i = 0; i < kSlowLoris; ++i) {
    for (auto [address, head, fds] : {std::tuple{&rpc, &rpc_slow_head, &h->rpc_slow},
                                      std::tuple{&aws, &aws_slow_head, &h->slow}}) {
      const int fd = Dial(*address, false);
      if (fd < 0 || ::send(fd, head->data(), head->size(), MSG_NOSIGNAL) < 0) {
        ++failed;
        if (fd >= 0) ::close(fd);
        continue;
      }
      fds->push_back(fd);
    }
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
  (*figures)["idle_connections"] = h->idle.size() + h->rpc_idle.size();
  (*figures)["slow_loris_connections"] = h->slow.size() + h->rpc_slow.size();
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
    for (int fd : h->rpc_slow) (void)::send(fd, "", 1, MSG_NOSIGNAL);
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

  // 0. The sustainable rate of each front end: closed loop, a moderate number of calls in
  // flight, acknowledged issues per second.
  std::atomic<uint64_t> aws_connect_failures{0};
  Tally rpc_sustain;
  Tally aws_sustain;
  int64_t t0 = SteadyMs();
  RpcFlood(rpc, "rs", 1, kSustainLanes, t0 + kSustainMs, &rpc_sustain, &acked);
  const double rpc_rate = PerSecond(rpc_sustain.ok.load(), SteadyMs() - t0);
  t0 = SteadyMs();
  GatewayFlood(aws, "gs", kSustainConnections, t0 + kSustainMs, false, &aws_sustain, &acked,
               &aws_connect_failures);
  const double aws_rate = PerSecond(aws_sustain.ok.load(), SteadyMs() - t0);

  // 1. Flood: both front ends at once, far more calls in flight than either admits.
  Tally rpc_tally;
  Tally aws_tally;
  t0 = SteadyMs();
  const int64_t flood_end = t0 + options.flood_ms;
  std::vector<std::thread> flood;
  for (int i = 0; i < kRpcFloodThreads; ++i) {
    flood.emplace_back([&, i] {
      RpcFlood(rpc, "rf" + std::to_string(i), kRpcFloodClientsPerThread,
               limits::kRpcConnectionCallsMax, flood_end, &rpc_tally, &acked);
    });
  }
  for (int i = 0; i < kGatewayFloodThreads; ++i) {
    flood.emplace_back([&, i] {
      GatewayFlood(aws, "gf" + std::to_string(i), kGatewayConnectionsPerThread, flood_end, true,
                   &aws_tally, &acked, &aws_connect_failures);
    });
  }
  for (auto& t : flood) t.join();
  const int64_t flood_ms = SteadyMs() - t0;
  const uint64_t rss_after_flood = rss_max.load();
  const double rpc_offered = PerSecond(rpc_tally.calls(), flood_ms);
  const double aws_offered = PerSecond(aws_tally.calls(), flood_ms);

  // 2. Hostile clients, while the probe goes on.
  nlohmann::json hostile_figures;
  Hostile hostile;
  OpenHostile(rpc, aws, options.seed, &hostile, &hostile_figures);
  TrickleAndWait(&hostile, SteadyMs() + options.hostile_ms);
  uint64_t closed = 0;
  for (int fd : hostile.closable) closed += ClosedByServer(fd);
  hostile_figures["garbage_and_oversize_closed_by_server"] = closed;
  uint64_t rpc_stalled_closed = 0;
  for (const auto* fds : {&hostile.rpc_idle, &hostile.rpc_slow}) {
    for (int fd : *fds) rpc_stalled_closed += ClosedByServer(fd);
  }
  const uint64_t rpc_stalled = hostile.rpc_idle.size() + hostile.rpc_slow.size();
  hostile_figures["capnp_idle_and_slow_closed_by_server"] = rpc_stalled_closed;
  for (const auto* fds :
       {&hostile.idle, &hostile.slow, &hostile.rpc_idle, &hostile.rpc_slow, &hostile.closable}) {
    for (int fd : *fds) ::close(fd);
  }
  stop = true;
  prober.join();
  sampler.join();

  nlohmann::json verify;
  const uint64_t lost = VerifyAcked(rpc, &acked, options.seed, &verify);
  const uint64_t rss_growth = rss_max.load() > rss_idle ? rss_max.load() - rss_idle : 0;
  (*summary)["sustainable_capnp"] = {{"per_s", static_cast<uint64_t>(rpc_rate)},
                                     {"in_flight", kSustainLanes}};
  (*summary)["sustainable_gateway"] = {{"per_s", static_cast<uint64_t>(aws_rate)},
                                       {"in_flight", kSustainConnections}};
  (*summary)["flood_ms"] = flood_ms;
  (*summary)["flood_capnp"] = rpc_tally.ToJson();
  (*summary)["flood_capnp"]["in_flight"] =
      kRpcFloodThreads * kRpcFloodClientsPerThread * limits::kRpcConnectionCallsMax;
  (*summary)["flood_capnp"]["offered_per_s"] = static_cast<uint64_t>(rpc_offered);
  (*summary)["flood_capnp"]["rate_x_sustainable"] = rpc_rate > 0 ? rpc_offered / rpc_rate : 0.0;
  (*summary)["flood_gateway"] = aws_tally.ToJson();
  (*summary)["flood_gateway"]["in_flight"] = kGatewayFloodThreads * kGatewayConnectionsPerThread;
  (*summary)["flood_gateway"]["offered_per_s"] = static_cast<uint64_t>(aws_offered);
  (*summary)["flood_gateway"]["rate_x_sustainable"] = aws_rate > 0 ? aws_offered / aws_rate : 0.0;
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
  expect(rpc_sustain.ok > 0 && aws_sustain.ok > 0, "no sustainable rate: nothing was served");
  expect(rpc_sustain.other == 0 && aws_sustain.other == 0, "calls failed at the sustainable rate");
  expect(rpc_tally.overloaded > 0, "no Cap'n Proto call was answered OVERLOADED");
  expect(aws_tally.overloaded > 0, "no gateway call was answered ThrottlingException");
  expect(rpc_tally.ok > 0 && aws_tally.ok > 0, "a front end served nothing during the flood");
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
  if (options.rpc_handshake_timeout_ms < options.hostile_ms) {
    expect(rpc_stalled_closed == rpc_stalled,
           "idle or slow-loris Cap'n Proto connections outlived the handshake timeout");
  }
  return failures;
}

}  // namespace tw::crashtest
