// Fuzz target: the AWS gateway's HTTP request path end to end, in process (rpc/aws/gateway.h):
// HTTP parsing, SigV4, routing, the protocol, the engine calls and the answers, over a real
// Engine on a MemoryStore (the set-up of tests/rpc/aws_gateway_test.cc).
//
// Input: one selector byte, then one HTTP connection's bytes. With 'S' the request goes to a
// gateway that checks SigV4 signatures (the key of tests/fuzz/make_seeds.py's signed seeds),
// with anything else to one that checks none (as on loopback). The gateway is reachable only
// through its listening socket, so the bytes go over a loopback TCP connection of this process:
// sent, then the connection half-closed (which also ends a long poll: its hang-up is noticed),
// then every answer read until the gateway closes. An input naming GetActivityTask half-closes
// only once the gateway has been quiet for kLingerMs, so that a poll that finds a task answers.
//
// Checked: the gateway closes the connection within kQuietMsMax of going quiet (no hang), and
// what it sent is a run of complete HTTP/1.1 responses whose JSON bodies are valid UTF-8 and
// one JSON value each. The process aborting (a TW_ASSERT) or a sanitizer report fails too. The
// waits resume after a signal (tests/fuzz/fuzz_io.h): libFuzzer's -timeout alarm lands in them,
// and an interrupted wait is not a quiet gateway.
//
// State carries over from input to input (activities, tasks); every kInputsPerEngine inputs the
// gateways and the engine are replaced by fresh ones, which bounds it. A crash found late in a
// run may need the inputs before it: rerun the corpus to reproduce.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "engine/json_scan.h"
#include "engine/validate.h"
#include "rpc/aws/gateway.h"
#include "tests/fuzz/fuzz_io.h"
#include "tests/fuzz/fuzz_support.h"

namespace tw::fuzz {
namespace {

namespace http = boost::beast::http;
using rpc::aws::Gateway;
using rpc::aws::GatewayOptions;

constexpr size_t kInputsPerEngine = 10'000;
// The longest the gateway may stay silent: a long poll whose hang-up it cannot see (a request
// pipelined behind it) waits out max_poll_seconds (1 s).
constexpr int kQuietMsMax = 10'000;
// How long an input with a long poll waits for more answers before half-closing (Exchange): a
// poll that finds a task answers within a millisecond here.
constexpr int kLingerMs = 5;

// The same key as sigv4_fuzz.cc; make_seeds.py signs the 'S' seeds with it.
constexpr char kKeyId[] = "AKIATOKENWHEELFUZZ01";
constexpr char kSecret[] = "tokenwheel/fuzz/secret+KEY/0123456789ab";

// One engine and two gateways on it, one checking signatures and one not.
class Stack {
 public:
  Stack() { StartGateways(); }
  ~Stack() { StopGateways(); }

  uint16_t port(bool signed_requests) const { return (signed_requests ? signed_ : open_)->port(); }

  // Called once per input: every kInputsPerEngine inputs, a fresh engine and gateways.
  void Count() {
    if (++inputs_ % kInputsPerEngine != 0) return;
    StopGateways();
    engine_.Reopen();
    StartGateways();
  }

 private:
  std::unique_ptr<Gateway> Start(std::shared_ptr<const rpc::aws::Credentials> credentials) {
    GatewayOptions options;
    options.listen_address = "127.0.0.1:0";
    options.clock = &engine_.clock();
    options.max_poll_seconds = 1;
    options.credentials = std::move(credentials);
    auto started = Gateway::Start(engine_.engine(), options);
    TW_FUZZ_CHECK(started.ok());
    return std::move(started.value);
  }

  void StartGateways() {
    open_ = Start(nullptr);
    signed_ = Start(std::make_shared<const rpc::aws::Credentials>(
        std::vector<std::pair<std::string, std::string>>{{kKeyId, kSecret}}));
  }

  // gateway.h's order for a clean stop: no new connections, the engine stops (answering what it
  // holds), then the gateways flush and go.
  void StopGateways() {
    open_->StopAccepting();
    signed_->StopAccepting();
    engine_.Close();
    open_.reset();
    signed_.reset();
  }

  FuzzEngine engine_;
  std::unique_ptr<Gateway> open_;
  std::unique_ptr<Gateway> signed_;
  size_t inputs_ = 0;
};

int Connect(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  TW_FUZZ_CHECK(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    // A signal (libFuzzer's SIGALRM, fuzz_io.h) interrupted it: the connection is still being
    // made, and is there once the socket is writable.
    TW_FUZZ_CHECK(errno == EINTR);
    pollfd p{fd, POLLOUT, 0};
    TW_FUZZ_CHECK(PollFor(&p, 1, kQuietMsMax) == 1);
    int error = 0;
    socklen_t len = sizeof(error);
    TW_FUZZ_CHECK(::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error == 0);
  }
  TW_FUZZ_CHECK(::fcntl(fd, F_SETFL, O_NONBLOCK) == 0);
  return fd;
}

// Sends `bytes` on a new connection (half-closing after them) and returns everything the
// gateway answered, read until it closed. Sending and reading interleave, so neither side
// blocks the other whatever the sizes. With `linger_ms`, the half-close waits until the gateway
// has been quiet that long: it takes a half-close for a hang-up, and a long poll answered with
// a task after it gives the task back instead of answering.
std::string Exchange(uint16_t port, std::string_view bytes, int linger_ms) {
  const int fd = Connect(port);
  std::string answers;
  size_t sent = 0;
  bool open = true;
  while (open && sent < bytes.size()) {
    pollfd p{fd, POLLIN | POLLOUT, 0};
    TW_FUZZ_CHECK(PollFor(&p, 1, kQuietMsMax) == 1);  // else the gateway hangs
    if ((p.revents & POLLOUT) != 0) SendSome(fd, bytes, &sent);
    if ((p.revents & (POLLIN | POLLHUP | POLLERR)) != 0) open = ReceiveSome(fd, &answers);
  }
  for (pollfd p{fd, POLLIN, 0}; open && linger_ms > 0 && PollFor(&p, 1, linger_ms) == 1;) {
    open = ReceiveSome(fd, &answers);
  }
  ::shutdown(fd, SHUT_WR);
  while (open) {
    pollfd p{fd, POLLIN, 0};
    TW_FUZZ_CHECK(PollFor(&p, 1, kQuietMsMax) == 1);
    open = ReceiveSome(fd, &answers);
  }
  ::close(fd);
  return answers;
}

// One complete response off the front of *bytes, checked.
void CheckOneAnswer(std::string_view* bytes) {
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  boost::beast::error_code ec;
  while (!parser.is_done()) {
    const size_t used = parser.put(boost::asio::buffer(bytes->data(), bytes->size()), ec);
    bytes->remove_prefix(used);
    TW_FUZZ_CHECK(!ec);  // a whole, well-formed response (need_more: cut short)
  }
  const auto& answer = parser.get();
  TW_FUZZ_CHECK(answer.version() == 11);
  const std::string_view type(answer[http::field::content_type].data(),
                              answer[http::field::content_type].size());
  if (type.starts_with("application/x-amz-json-1.0") || type.starts_with("application/json")) {
    TW_FUZZ_CHECK(IsValidUtf8(answer.body()));
    TW_FUZZ_CHECK(IsJsonValue(answer.body()));
  }
}

void CheckAnswers(std::string_view bytes) {
  while (!bytes.empty()) CheckOneAnswer(&bytes);
}

}  // namespace
}  // namespace tw::fuzz

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  tw::fuzz::StatefulTargetFlags(argc, argv);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tw::fuzz;
  Stack& stack = TheStack<Stack>();
  const bool signed_requests = size > 0 && data[0] == 'S';
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const std::string_view http = bytes.substr(size > 0 ? 1 : 0);
  // Only inputs with a long poll wait for the gateway to go quiet: it costs kLingerMs each.
  const bool poll = http.find("GetActivityTask") != std::string_view::npos;
  const std::string answers = Exchange(stack.port(signed_requests), http, poll ? kLingerMs : 0);
  if (Verbose()) std::fprintf(stderr, "%s\n", answers.c_str());
  CheckAnswers(answers);
  stack.Count();
  return 0;
}
