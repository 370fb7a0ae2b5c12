// The AWS JSON 1.0 gateway (rpc/aws/gateway.h). Layout:
//   GatewayImpl  the gateway thread's state: the acceptor, the connections, the bridge to the
//                engine (rpc/bridge.h) and its mailbox, the outcome-stream waiters, counters.
//   Connection   one HTTP connection: reads one request at a time, answers it, and holds at most
//                one long poll (GetActivityTask or GetOutcomes).
// Everything runs on the gateway thread. The engine's answers arrive through the bridge, whose
// closures hold only weak references to connections: a connection lives in
// GatewayImpl::connections_ until it closes.
#include "rpc/aws/gateway.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <future>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/assert.h"
#include "rpc/aws/metrics.h"
#include "rpc/aws/protocol.h"
#include "rpc/aws/status_page.h"
#include "rpc/bridge.h"
#include "rpc/json_forms.h"
#include "rpc/mailbox.h"

namespace tw::rpc::aws {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;

namespace {

constexpr uint8_t kPollIdTag = 0x02;  // the Cap'n Proto server's is 0x01
// A connection's read buffer keeps at most this much capacity between requests.
constexpr size_t kBufferBytesKept = 64 << 10;
constexpr char kJsonContentType[] = "application/x-amz-json-1.0";
constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";

using Clock = std::chrono::steady_clock;

std::string_view View(beast::string_view s) { return {s.data(), s.size()}; }

int64_t MicrosSince(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
}

// One log record of one kind of event, at most once per limits::kAwsLogIntervalMs; the next
// one says how many were left out (field "suppressed").
class RateLimitedLog {
 public:
  // REQUIRES: `sink` outlives the log.
  RateLimitedLog(const LogSink* sink, const char* event) : sink_(sink), event_(event) {}

  void Log(const std::string& message) {
    const auto now = Clock::now();
    if (now < next_) {
      ++suppressed_;
      return;
    }
    next_ = now + std::chrono::milliseconds(limits::kAwsLogIntervalMs);
    LogRecord r{LogLevel::kWarn, "gateway", event_, message, {}};
    if (suppressed_ > 0) {
      r.message += " (and " + std::to_string(suppressed_) + " more like it)";
      r.fields.emplace_back("suppressed", std::to_string(suppressed_));
    }
    Emit(*sink_, r);
    suppressed_ = 0;
  }

 private:
  const LogSink* sink_;
  const char* event_;
  Clock::time_point next_{};
  uint64_t suppressed_ = 0;
};

class Connection;
class Refusal;

class GatewayImpl final : public Gateway {
 public:
  GatewayImpl(Engine* engine, const GatewayOptions& options)
      : engine_(engine),
        options_(options),
        clock_(options.clock != nullptr ? options.clock : &system_clock_),
        acceptor_(io_),
        accept_backoff_(io_),
        shutdown_timer_(io_),
        doorbell_(io_),
        mailbox_(std::make_shared<Mailbox>()) {}

  ~GatewayImpl() override { Shutdown(); }

  Error Launch();

  std::string address() const override { return address_; }
  uint16_t port() const override { return port_.load(std::memory_order_relaxed); }

  void StopAccepting() override {
    if (!thread_.joinable()) return;
    std::promise<void> done;
    std::future<void> finished = done.get_future();
    asio::post(io_, [this, &done]() {
      CloseAcceptor();
      done.set_value();
    });
    finished.wait();
  }

  void Shutdown() override {
    if (!thread_.joinable()) return;
    asio::post(io_, [this]() { BeginShutdown(); });
    thread_.join();
  }

  // ---- Gateway thread ----
  Engine* engine() { return engine_; }
  Bridge& bridge() { return *bridge_; }
  const GatewayOptions& options() const { return options_; }
  ::tw::Clock& clock() { return *clock_; }
  asio::io_context& io() { return io_; }
  GatewayCounters& counters() { return counters_; }
  RateLimitedLog& write_errors_log() { return write_errors_log_; }

  void Forget(Connection* s);
  void ForgetRefusal(Refusal* r);

  // ---- Memory bounds, all connections together (gateway thread) ----
  // Request bodies being read: false when `bytes` more would pass kAwsBodyBytesInFlightMax.
  bool ReserveBodyBytes(size_t bytes) {
    if (body_bytes_ + bytes > limits::kAwsBodyBytesInFlightMax) return false;
    body_bytes_ += bytes;
    return true;
  }
  void ReleaseBodyBytes(size_t bytes) {
    TW_ASSERT(bytes <= body_bytes_);
    body_bytes_ -= bytes;
  }
  // Answers not yet written to their sockets. Past kAwsReplyBytesGlobalHigh no connection starts
  // reading a new request (PauseReading); below it again, the paused ones resume.
  void AddReplyBytes(int64_t delta) {
    reply_bytes_ = static_cast<size_t>(static_cast<int64_t>(reply_bytes_) + delta);
    if (!ReplyBacklogHigh() && !paused_.empty()) ResumeReading();
  }
  bool ReplyBacklogHigh() const { return reply_bytes_ > limits::kAwsReplyBytesGlobalHigh; }
  void PauseReading(const std::shared_ptr<Connection>& s) { paused_.push_back(s); }
  void ResumeReading();
  RateLimitedLog& auth_log() { return auth_log_; }
  // GetOutcomes calls waiting for new events.
  void AddOutcomeWaiter(const std::shared_ptr<Connection>& s) { outcome_waiters_.push_back(s); }
  std::string NextRequestId() {
    char buf[48];
    std::snprintf(buf, sizeof(buf), "%016llx-%016llx",
                  static_cast<unsigned long long>(request_id_base_),
                  static_cast<unsigned long long>(++request_seq_));
    return buf;
  }
  // The current time as an HTTP date ("Mon, 07 Dec 2026 04:22:57 GMT"), from the gateway's clock
  // (the one signatures are checked against); formatted once a second.
  const std::string& HttpDate() {
    const int64_t second = clock_->NowMs() / 1000;
    if (second != http_date_second_) {
      http_date_second_ = second;
      const std::time_t t = static_cast<std::time_t>(second);
      std::tm tm{};
      gmtime_r(&t, &tm);
      char buf[64];
      std::strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
      http_date_ = buf;
    }
    return http_date_;
  }
  GatewayCounters Snapshot() {
    counters_.connections = connections_.size();
    counters_.calls_in_flight = bridge_->calls_in_flight();
    return counters_;
  }

 private:
  void Run();
  void Accept();
  void OnAccept(beast::error_code ec, tcp::socket socket);
  void Refuse(tcp::socket& socket);
  void PumpMailbox();
  void OnEvents();
  void CloseAcceptor() {
    beast::error_code ignored;
    acceptor_.close(ignored);
    accept_backoff_.cancel();
  }
  void BeginShutdown();

  Engine* const engine_;
  const GatewayOptions options_;
  SystemClock system_clock_;
  ::tw::Clock* const clock_;
  asio::io_context io_{1};
  tcp::acceptor acceptor_;
  asio::steady_timer accept_backoff_;
  asio::steady_timer shutdown_timer_;
  asio::posix::stream_descriptor doorbell_;
  const std::shared_ptr<Mailbox> mailbox_;
  std::unique_ptr<Bridge> bridge_;
  std::thread thread_;
  std::string address_;
  std::atomic<uint16_t> port_{0};

  // Gateway thread only.
  std::unordered_map<Connection*, std::shared_ptr<Connection>> connections_;
  std::unordered_map<Refusal*, std::shared_ptr<Refusal>> refusals_;
  std::shared_ptr<const std::string> refusal_response_;  // built once
  std::vector<std::weak_ptr<Connection>> outcome_waiters_;
  GatewayCounters counters_;
  int64_t accept_backoff_ms_ = limits::kAwsAcceptBackoffMsMin;
  bool shutting_down_ = false;
  uint64_t request_id_base_ = std::random_device()() * 0x9E3779B97F4A7C15ull;
  uint64_t request_seq_ = 0;
  int64_t http_date_second_ = -1;
  std::string http_date_;
  size_t body_bytes_ = 0;                          // reserved by connections reading a body
  size_t reply_bytes_ = 0;                         // of answers being written
  std::vector<std::weak_ptr<Connection>> paused_;  // waiting for the reply backlog to drain
  RateLimitedLog accept_log_{&options_.log, "accept_failed"};
  RateLimitedLog refuse_log_{&options_.log, "connection_limit"};
  RateLimitedLog auth_log_{&options_.log, "request_not_authenticated"};
  RateLimitedLog write_errors_log_{&options_.log, "write_failed"};
};

// ---------------------------------------------------------------------------------------------

class Connection final : public std::enable_shared_from_this<Connection> {
 public:
  Connection(GatewayImpl& gw, tcp::socket socket)
      : gw_(gw), socket_(std::move(socket)), timer_(gw.io()) {}

  void Start() { WaitForRequest(); }

  // Closes the connection, withdraws a waiting poll and leaves the gateway. Idempotent.
  void Close() {
    if (closed_) return;
    closed_ = true;
    EndPoll();
    ReleaseBodyBytes();
    beast::error_code ignored;
    timer_.cancel();
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    gw_.Forget(this);  // may destroy *this once the handlers in flight let go
  }

  // New durable events: a waiting GetOutcomes reads again.
  void OnEvents() {
    if (!closed_ && outcomes_) ReadOutcomes();
  }
  bool WaitingForOutcomes() const { return !closed_ && outcomes_.has_value(); }

 private:
  // ---- Reading ----

  // Between requests: waits (up to the idle timeout) for the first byte of the next one. While
  // every connection together has more than kAwsReplyBytesGlobalHigh of answers unwritten, no
  // new request is read: the gateway resumes this one when the backlog drains.
  void WaitForRequest() {
    if (closed_) return;
    if (gw_.ReplyBacklogHigh()) return gw_.PauseReading(shared_from_this());
    if (buffer_.size() > 0) return ReadHeader();  // already here (pipelined)
    ArmTimer(gw_.options().idle_timeout_ms);
    socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
      if (ec || self->closed_) return self->Close();
      self->ReadHeader();
    });
  }

 public:
  // The reply backlog drained: read again (GatewayImpl::PauseReading).
  void Resume() { WaitForRequest(); }

 private:
  // A request has begun: all of it must arrive within the request timeout. The header first:
  // its body is read only once the gateway can take its bytes (kAwsBodyBytesInFlightMax, all
  // connections together), so that many connections sending large bodies at once cannot grow
  // memory without bound.
  void ReadHeader() {
    parser_.emplace();
    parser_->header_limit(limits::kAwsHeaderBytesMax);
    parser_->body_limit(limits::kRequestBytesMax);
    ArmTimer(gw_.options().request_timeout_ms);
    http::async_read_header(socket_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->OnRead(ec);
                              self->ReadBody();
                            });
  }

  void ReadBody() {
    if (closed_) return;
    const size_t bytes = parser_->content_length().value_or(limits::kRequestBytesMax);
    if (bytes > limits::kRequestBytesMax) return OnRead(http::error::body_limit);
    if (!gw_.ReserveBodyBytes(bytes)) {
      return SendPlain(http::status::service_unavailable,
                       std::string(kThrottlingMessage) + ": too many request bytes in flight",
                       kThrottlingException);
    }
    body_bytes_ = bytes;
    http::async_read(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    timer_.cancel();
    if (closed_) return;
    if (ec == http::error::body_limit) {
      return SendPlain(
          http::status::payload_too_large,
          "request body larger than " + std::to_string(limits::kRequestBytesMax) + " bytes");
    }
    if (ec == http::error::header_limit) {
      return SendPlain(
          http::status::request_header_fields_too_large,
          "request headers larger than " + std::to_string(limits::kAwsHeaderBytesMax) + " bytes");
    }
    if (ec == http::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset) {
      return Close();
    }
    if (ec) return SendPlain(http::status::bad_request, "malformed HTTP request");
    request_ = parser_->release();
    parser_.reset();
    // A large request's buffer goes back, not kept for a connection that may idle for long.
    if (buffer_.capacity() > kBufferBytesKept && buffer_.size() == 0) buffer_.shrink_to_fit();
    received_ = Clock::now();
    keep_alive_ = request_.keep_alive();
    Route();
    // Everything a request needs is copied out of it by now.
    request_ = {};
    ReleaseBodyBytes();
  }

  void ReleaseBodyBytes() {
    gw_.ReleaseBodyBytes(body_bytes_);
    body_bytes_ = 0;
  }

  void ArmTimer(int64_t ms) {
    timer_.expires_after(std::chrono::milliseconds(ms));
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->Close();  // idle, or too slow sending a request or reading an answer
    });
  }

  // ---- Routing ----

  void Route() {
    const std::string_view target = View(request_.target());
    if (request_.method() == http::verb::get && target == "/healthz") return Health();
    if (request_.method() == http::verb::get && target == "/metrics") return Metrics();
    // The status page, like /metrics, needs no signature (docs/OPERATIONS.md).
    if (request_.method() == http::verb::get && (target == "/" || target == "/index.html")) {
      return Send(http::status::ok, StatusPageHtml(), kStatusPageContentType, {}, nullptr);
    }
    if (request_.method() == http::verb::get && target == "/status.json") return StatusJson();
    if (request_.method() != http::verb::post || target.substr(0, target.find('?')) != "/") {
      return Reject(ErrorReply{kUnknownOperationException,
                               "no such resource: " + std::string(View(request_.method_string())) +
                                   " " + std::string(target),
                               404});
    }
    if (const auto& credentials = gw_.options().credentials) {
      std::vector<Header> headers;
      for (const auto& f : request_) headers.push_back({View(f.name_string()), View(f.value())});
      Request r{View(request_.method_string()), target, headers, request_.body()};
      VerifyResult v = Verify(r, *credentials, gw_.clock().NowMs());
      if (!v.ok() && !v.error->log_detail.empty()) {
        gw_.auth_log().Log(std::string(v.error->code) + ": " + v.error->log_detail);
      }
      if (!v.ok()) {
        return Reject(
            ErrorReply{std::string(v.error->code), v.error->message, v.error->http_status});
      }
    }
    const auto target_header = request_.find("X-Amz-Target");
    const std::optional<Op> op =
        target_header == request_.end() ? std::nullopt : ParseTarget(View(target_header->value()));
    if (!op) return Reject(UnknownOperationError());
    op_ = *op;
    Body body;
    if (auto e = Body::Parse(request_.body(), &body)) return Answer(*e);
    Dispatch(body);
  }

  void Dispatch(Body& b);

  // ---- Engine calls ----

  // Calls the engine through the bridge; `on_answer(connection, result)` runs on this thread
  // unless the connection closed meanwhile.
  template <typename T, typename Start, typename OnAnswer>
  void Call(Start&& start, OnAnswer on_answer, Admission admission = Admission::kBounded) {
    gw_.bridge().Call<T>(
        std::forward<Start>(start),
        [weak = weak_from_this(), on_answer](Result<T> r) mutable {
          std::shared_ptr<Connection> s = weak.lock();
          if (s == nullptr || s->closed_) return;
          on_answer(*s, std::move(r));
        },
        admission);
  }

  // Answers `r` with `body(value)`, or its error. The Cap'n Proto server's unary calls go
  // through the same shape of helper: TokenWheelImpl::CallAndAnswer (rpc/service.cc).
  template <typename T, typename ToBody>
  void CallAndAnswer(std::function<void(Engine*, Callback<T>)> start, ToBody to_body,
                     Admission admission = Admission::kBounded) {
    Engine* engine = gw_.engine();
    Call<T>([engine, start](Callback<T> cb) { start(engine, std::move(cb)); },
            [to_body](Connection& s, Result<T> r) {
              if (!r.ok()) return s.AnswerEngineError(r.error);
              s.Answer(to_body(r.value));
            },
            admission);
  }

  // ---- The operations ----

  void CreateActivity(Body& b);
  void DeleteActivity(Body& b);
  void DescribeActivity(Body& b);
  void ListActivities(Body& b);
  void GetActivityTask(Body& b);
  void SendTaskSuccess(Body& b);
  void SendTaskFailure(Body& b);
  void SendTaskHeartbeat(Body& b);
  void IssueTask(Body& b);
  void IssueTasks(Body& b);
  void CancelTask(Body& b);
  void DescribeTask(Body& b);
  void GetOutcomes(Body& b);
  void AckOutcomes(Body& b);
  void DeleteConsumer(Body& b);
  void Stats();
  void Health();
  void Metrics();
  void StatusJson();

  // AWS answers a repeated completion as TaskTimedOut: the native duplicate flag is tokenwheel's.
  void AnswerCompletion(const Result<CompletionReply>& r) {
    if (!r.ok()) return AnswerEngineError(r.error);
    if (r.value.duplicate) return AnswerEngineError(TaskGoneError());
    Answer(std::string(kEmptyBody));
  }

  // ---- Long polls ----

  void StartPollWait(uint32_t wait_s);
  bool OnPollAnswer(uint64_t poll_id, Result<GetActivityTaskReply> r);
  void WatchForHangUp();
  bool PeerClosed();
  // Ends a waiting poll (GetActivityTask: withdrawn; GetOutcomes: forgotten).
  void EndPoll() {
    if (poll_id_ != 0) {
      gw_.bridge().Withdraw(poll_id_);
      poll_id_ = 0;
      --gw_.counters().waiting_polls;
    }
    if (outcomes_) {
      outcomes_.reset();
      --gw_.counters().waiting_polls;
    }
  }
  void ReadOutcomes();

  // ---- Writing ----

  void Answer(std::string body, std::function<void(bool written)> on_written = nullptr) {
    Send(http::status::ok, std::move(body), kJsonContentType, {}, std::move(on_written));
  }
  void Answer(const ErrorReply& e) {
    Send(static_cast<http::status>(e.status), ErrorBody(e), kJsonContentType, e.code, nullptr);
  }
  void AnswerEngineError(const Error& e) {
    if (op_ && static_cast<size_t>(*op_) >= static_cast<size_t>(Op::kIssueTask)) {
      // tokenwheel's own operations say why a completion was refused (Better than AWS).
      json body = ErrorJson(e);
      body.erase("error");
      body["__type"] = AwsErrorType(ErrorCodeName(e.code));
      return Send(static_cast<http::status>(AwsHttpStatus(e.code)), Dump(body), kJsonContentType,
                  ErrorCodeName(e.code), nullptr);
    }
    Answer(FromEngineError(e));
  }
  // An error before any operation was known: counted as rejected.
  void Reject(const ErrorReply& e) {
    op_.reset();
    Answer(e);
  }
  // A protocol-level refusal (413, 431: ValidationException; 400: SerializationException; 503
  // ThrottlingException): answered, then the connection closes, once the client has sent what
  // it was sending (the rest of a body too large to read) or a moment has passed.
  void SendPlain(http::status status, std::string message, std::string code = {}) {
    keep_alive_ = false;
    op_.reset();
    if (code.empty()) {
      code = status == http::status::bad_request
                 ? std::string(kSerializationException)
                 : std::string(ErrorCodeName(ErrorCode::kValidation));
    }
    Send(status, ErrorBody(ErrorReply{code, std::move(message), static_cast<int>(status)}),
         kJsonContentType, code, nullptr);
  }

  // Half-closes, then reads and drops what the client still sends until it closes too (or
  // kAwsCloseDrainMs passed): closing with unread input would reset the connection, and the
  // client could lose the answer just written.
  void CloseAfterDraining() {
    beast::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    ArmTimer(limits::kAwsCloseDrainMs);
    Drain();
  }
  void Drain() {
    socket_.async_read_some(asio::buffer(scratch_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec || self->closed_) return self->Close();
                              self->Drain();
                            });
  }

  void Send(http::status status, std::string body, const char* content_type,
            std::string_view error_code, std::function<void(bool)> on_written);

  GatewayImpl& gw_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  beast::flat_buffer buffer_{limits::kAwsHeaderBytesMax};
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  Clock::time_point received_;
  std::optional<Op> op_;
  bool keep_alive_ = true;
  bool closed_ = false;
  size_t body_bytes_ = 0;             // reserved with GatewayImpl::ReserveBodyBytes
  size_t reply_bytes_ = 0;            // counted in GatewayImpl::AddReplyBytes while being written
  std::array<char, 4096> scratch_{};  // what CloseAfterDraining drops
  // A waiting GetActivityTask: its poll id (0: none).
  uint64_t poll_id_ = 0;
  // A waiting GetOutcomes.
  struct Outcomes {
    GetOutcomesRequest req;
    uint64_t acked_seq = 0;
    Clock::time_point deadline;
  };
  std::optional<Outcomes> outcomes_;
};

// A connection past connections_max: one short 503 answer, then its input read and dropped
// until it closes or kAwsCloseDrainMs passed (closing with unread input would reset the
// connection, and the client could lose the answer). At most kAwsRefusalsInProgressMax at once.
class Refusal final : public std::enable_shared_from_this<Refusal> {
 public:
  Refusal(GatewayImpl& gw, tcp::socket socket, std::shared_ptr<const std::string> response)
      : gw_(gw), socket_(std::move(socket)), timer_(gw.io()), response_(std::move(response)) {}

  void Start() {
    timer_.expires_after(std::chrono::milliseconds(limits::kAwsCloseDrainMs));
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->Done();
    });
    asio::async_write(socket_, asio::buffer(*response_),
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        if (ec) return self->Done();
                        beast::error_code ignored;
                        self->socket_.shutdown(tcp::socket::shutdown_send, ignored);
                        self->Drain();
                      });
  }

  void Done() {
    if (done_) return;
    done_ = true;
    beast::error_code ignored;
    timer_.cancel();
    socket_.close(ignored);
    gw_.ForgetRefusal(this);
  }

 private:
  void Drain() {
    socket_.async_read_some(asio::buffer(scratch_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->Done();
                              self->Drain();
                            });
  }

  GatewayImpl& gw_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  const std::shared_ptr<const std::string> response_;
  std::array<char, 4096> scratch_{};
  bool done_ = false;
};

// ---------------------------------------------------------------------------------------------
// Connection: operations

void Connection::Dispatch(Body& b) {
  switch (*op_) {
    case Op::kCreateActivity:
      return CreateActivity(b);
    case Op::kDeleteActivity:
      return DeleteActivity(b);
    case Op::kDescribeActivity:
      return DescribeActivity(b);
    case Op::kListActivities:
      return ListActivities(b);
    case Op::kGetActivityTask:
      return GetActivityTask(b);
    case Op::kSendTaskSuccess:
      return SendTaskSuccess(b);
    case Op::kSendTaskFailure:
      return SendTaskFailure(b);
    case Op::kSendTaskHeartbeat:
      return SendTaskHeartbeat(b);
    case Op::kIssueTask:
      return IssueTask(b);
    case Op::kIssueTasks:
      return IssueTasks(b);
    case Op::kCancelTask:
      return CancelTask(b);
    case Op::kDescribeTask:
      return DescribeTask(b);
    case Op::kGetOutcomes:
      return GetOutcomes(b);
    case Op::kAckOutcomes:
      return AckOutcomes(b);
    case Op::kDeleteConsumer:
      return DeleteConsumer(b);
    case Op::kStats:
      return Stats();
  }
}

void Connection::CreateActivity(Body& b) {
  CreateActivityRequest req;
  if (auto e = ReadCreateActivity(b, &req)) return Answer(*e);
  CallAndAnswer<ActivityInfo>(
      [req](Engine* e, Callback<ActivityInfo> cb) mutable {
        e->CreateActivity(std::move(req), std::move(cb));
      },
      [](const ActivityInfo& a) { return ActivityBody(a, /*with_name=*/false); });
}

void Connection::DeleteActivity(Body& b) {
  DeleteActivityRequest req;
  if (auto e = ReadActivityArn(b, &req.arn)) return Answer(*e);
  CallAndAnswer<Empty>(
      [req](Engine* e, Callback<Empty> cb) mutable {
        e->DeleteActivity(std::move(req), std::move(cb));
      },
      [](const Empty&) { return std::string(kEmptyBody); });
}

void Connection::DescribeActivity(Body& b) {
  DescribeActivityRequest req;
  if (auto e = ReadActivityArn(b, &req.arn)) return Answer(*e);
  CallAndAnswer<ActivityInfo>(
      [req](Engine* e, Callback<ActivityInfo> cb) mutable {
        e->DescribeActivity(std::move(req), std::move(cb));
      },
      [](const ActivityInfo& a) { return ActivityBody(a, /*with_name=*/true); });
}

void Connection::ListActivities(Body& b) {
  ListActivitiesRequest req;
  if (auto e = ReadListActivities(b, &req)) return Answer(*e);
  CallAndAnswer<ListActivitiesReply>(
      [req](Engine* e, Callback<ListActivitiesReply> cb) mutable {
        e->ListActivities(std::move(req), std::move(cb));
      },
      [](const ListActivitiesReply& r) { return ListActivitiesBody(r); }, Admission::kPayload);
}

void Connection::SendTaskSuccess(Body& b) {
  SendTaskSuccessRequest req;
  if (auto e = ReadSendTaskSuccess(b, &req)) return Answer(*e);
  Engine* engine = gw_.engine();
  Call<CompletionReply>(
      [engine, &req](Callback<CompletionReply> cb) {
        engine->SendTaskSuccess(std::move(req), std::move(cb));
      },
      [](Connection& s, Result<CompletionReply> r) { s.AnswerCompletion(r); });
}

void Connection::SendTaskFailure(Body& b) {
  SendTaskFailureRequest req;
  if (auto e = ReadSendTaskFailure(b, &req)) return Answer(*e);
  Engine* engine = gw_.engine();
  Call<CompletionReply>(
      [engine, &req](Callback<CompletionReply> cb) {
        engine->SendTaskFailure(std::move(req), std::move(cb));
      },
      [](Connection& s, Result<CompletionReply> r) { s.AnswerCompletion(r); });
}

void Connection::SendTaskHeartbeat(Body& b) {
  SendTaskHeartbeatRequest req;
  if (auto e = ReadTaskToken(b, &req.token)) return Answer(*e);
  CallAndAnswer<Empty>(
      [req](Engine* e, Callback<Empty> cb) mutable {
        e->SendTaskHeartbeat(std::move(req), std::move(cb));
      },
      [](const Empty&) { return std::string(kEmptyBody); });
}

void Connection::IssueTask(Body& b) {
  IssueTaskRequest req;
  if (auto e = ReadIssueTask(b, &req)) return Answer(*e);
  Engine* engine = gw_.engine();
  Call<IssueTaskReply>(
      [engine, &req](Callback<IssueTaskReply> cb) {
        engine->IssueTask(std::move(req), std::move(cb));
      },
      [](Connection& s, Result<IssueTaskReply> r) {
        if (!r.ok()) return s.AnswerEngineError(r.error);
        s.Answer(IssueTaskBody(r.value));
      });
}

void Connection::IssueTasks(Body& b) {
  std::vector<IssueTaskRequest> reqs;
  auto item_errors = std::make_shared<std::vector<std::optional<ErrorReply>>>();
  if (auto e = ReadIssueTasks(b, &reqs, item_errors.get())) return Answer(*e);
  struct Collect {
    std::vector<Result<IssueTaskReply>> results;
    size_t remaining = 0;
  };
  auto collect = std::make_shared<Collect>();
  collect->results.resize(reqs.size());
  collect->remaining = reqs.size();
  for (size_t i = 0; i < reqs.size(); ++i) {
    if ((*item_errors)[i]) --collect->remaining;
  }
  if (collect->remaining == 0) return Answer(IssueTasksBody(collect->results, *item_errors));
  Engine* engine = gw_.engine();
  for (size_t i = 0; i < reqs.size(); ++i) {
    if ((*item_errors)[i]) continue;
    Call<IssueTaskReply>(
        [engine, &reqs, i](Callback<IssueTaskReply> cb) {
          engine->IssueTask(std::move(reqs[i]), std::move(cb));
        },
        [collect, item_errors, i](Connection& s, Result<IssueTaskReply> r) {
          collect->results[i] = std::move(r);
          if (--collect->remaining == 0) {
            s.Answer(IssueTasksBody(collect->results, *item_errors));
          }
        },
        // Bounded by the batch (kRpcBatchItemsMax) and the engine's queue, whose overload an
        // item answers: as the Cap'n Proto server's batch items.
        Admission::kAlways);
  }
}

void Connection::CancelTask(Body& b) {
  CancelTaskRequest req;
  if (auto e = ReadTaskToken(b, &req.token)) return Answer(*e);
  CallAndAnswer<CompletionReply>(
      [req](Engine* e, Callback<CompletionReply> cb) mutable {
        e->CancelTask(std::move(req), std::move(cb));
      },
      [](const CompletionReply& r) { return CompletionBody(r); });
}

void Connection::DescribeTask(Body& b) {
  DescribeTaskRequest req;
  if (auto e = ReadTaskToken(b, &req.token)) return Answer(*e);
  CallAndAnswer<TaskDescription>(
      [req](Engine* e, Callback<TaskDescription> cb) mutable {
        e->DescribeTask(std::move(req), std::move(cb));
      },
      [](const TaskDescription& d) { return DescriptionBody(d); }, Admission::kPayload);
}

void Connection::AckOutcomes(Body& b) {
  std::string consumer;
  uint64_t seq = 0;
  if (auto e = ReadAckOutcomes(b, &consumer, &seq)) return Answer(*e);
  CallAndAnswer<Empty>(
      [consumer, seq](Engine* e, Callback<Empty> cb) {
        e->AckEvents(consumer, seq, std::move(cb));
      },
      [](const Empty&) { return std::string(kEmptyBody); });
}

void Connection::DeleteConsumer(Body& b) {
  std::string consumer;
  if (auto e = ReadConsumer(b, &consumer)) return Answer(*e);
  CallAndAnswer<Empty>(
      [consumer](Engine* e, Callback<Empty> cb) { e->DeleteConsumer(consumer, std::move(cb)); },
      [](const Empty&) { return std::string(kEmptyBody); });
}

void Connection::Stats() {
  Engine* engine = gw_.engine();
  Call<EngineStats>([engine](Callback<EngineStats> cb) { engine->GetStats(std::move(cb)); },
                    [](Connection& s, Result<EngineStats> r) {
                      if (!r.ok()) return s.AnswerEngineError(r.error);
                      const GatewayCounters c = s.gw_.Snapshot();
                      s.Answer(StatsBody(r.value, json{{"connections", c.connections},
                                                       {"callsInFlight", c.calls_in_flight},
                                                       {"waitingPolls", c.waiting_polls}}));
                    },
                    Admission::kAlways);
}

void Connection::Health() {
  const StorageHealth h = gw_.engine()->Health();
  const GatewayCounters c = gw_.Snapshot();
  json body{{"status", h.ok ? "ok" : "unavailable"},
            {"storage", StorageJson(h)},
            {"gateway",
             {{"connections", c.connections},
              {"callsInFlight", c.calls_in_flight},
              {"waitingPolls", c.waiting_polls}}}};
  Send(h.ok ? http::status::ok : http::status::service_unavailable, Dump(body), "application/json",
       {}, nullptr);
}

void Connection::Metrics() {
  Engine* engine = gw_.engine();
  Call<EngineStats>([engine](Callback<EngineStats> cb) { engine->GetStats(std::move(cb)); },
                    [](Connection& s, Result<EngineStats> r) {
                      if (!r.ok()) return s.AnswerEngineError(r.error);
                      const auto& rpc = s.gw_.options().rpc_counters;
                      s.Send(http::status::ok,
                             RenderMetrics(r.value, s.gw_.Snapshot(),
                                           rpc ? std::optional<RpcCounters>(rpc()) : std::nullopt),
                             kMetricsContentType, {}, nullptr);
                    },
                    Admission::kAlways);
}

void Connection::StatusJson() {
  Engine* engine = gw_.engine();
  Call<EngineStats>([engine](Callback<EngineStats> cb) { engine->GetStats(std::move(cb)); },
                    [](Connection& s, Result<EngineStats> r) {
                      if (!r.ok()) return s.AnswerEngineError(r.error);
                      s.Send(http::status::ok,
                             RenderStatusJson(r.value, s.gw_.Snapshot(), s.gw_.clock().NowMs()),
                             kStatusJsonContentType, {}, nullptr);
                    },
                    Admission::kAlways);
}

// ---- GetActivityTask: the long poll ----

void Connection::GetActivityTask(Body& b) {
  GetActivityTaskRequest req;
  if (auto e = ReadGetActivityTask(b, &req)) return Answer(*e);
  poll_id_ = gw_.bridge().NextPollId();
  ++gw_.counters().waiting_polls;
  const uint64_t poll_id = poll_id_;
  gw_.bridge().Poll(std::move(req), poll_id,
                    [weak = weak_from_this(), poll_id](Result<GetActivityTaskReply> r) {
                      std::shared_ptr<Connection> s = weak.lock();
                      return s != nullptr && s->OnPollAnswer(poll_id, std::move(r));
                    });
  if (poll_id_ == poll_id) StartPollWait(gw_.options().max_poll_seconds);
}

void Connection::StartPollWait(uint32_t wait_s) {
  timer_.expires_after(std::chrono::seconds(wait_s));
  timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec || self->closed_) return;
    // The wait ran out: withdraw, and answer whatever the engine answers (empty, or a task that
    // raced with the withdrawal, which this caller then gets rather than losing it).
    if (self->poll_id_ != 0) self->gw_.bridge().Withdraw(self->poll_id_);
    if (self->outcomes_) self->ReadOutcomes();
  });
  WatchForHangUp();
}

// Whether the client has closed its side (EOF) or the connection is gone; false when it is
// open, or sent bytes (a pipelined request, which waits in the socket).
bool Connection::PeerClosed() {
  char byte;
  const ssize_t n = ::recv(socket_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

// While a long poll waits, a readable socket means the client hung up (or pipelined a request,
// which waits in the buffer until this one is answered).
void Connection::WatchForHangUp() {
  socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) {
    if (ec || self->closed_ || (self->poll_id_ == 0 && !self->outcomes_)) return;
    if (self->PeerClosed()) return self->Close();  // withdraws the poll
    char byte;
    if (::recv(self->socket_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) < 0) {
      self->WatchForHangUp();  // spurious
    }
  });
}

bool Connection::OnPollAnswer(uint64_t poll_id, Result<GetActivityTaskReply> r) {
  if (closed_ || poll_id != poll_id_) return false;
  poll_id_ = 0;
  --gw_.counters().waiting_polls;
  timer_.cancel();
  beast::error_code ignored;
  socket_.cancel(ignored);  // the hang-up watch
  if (!r.ok()) {
    AnswerEngineError(r.error);
    return true;
  }
  if (r.value.token.empty()) {
    Answer(std::string(kEmptyBody));
    return true;
  }
  if (gw_.options().before_task_write) gw_.options().before_task_write();
  if (PeerClosed()) {
    // The worker hung up in the same turn: a write would still succeed into the socket's
    // buffer and the task would go to nobody. Not taken: the bridge returns it.
    Close();
    return false;
  }
  std::string token = r.value.token;
  GatewayImpl* gw = &gw_;
  Answer(ActivityTaskBody(r.value), [gw, token = std::move(token)](bool written) mutable {
    if (written) return;
    // The worker never saw it: back to the head of its queue, not lost to a dead worker.
    ++gw->counters().tasks_returned;
    gw->bridge().ReturnTask(std::move(token));
  });
  return true;
}

// ---- GetOutcomes: a long poll on the outcome stream ----

void Connection::GetOutcomes(Body& b) {
  GetOutcomesRequest req;
  if (auto e = ReadGetOutcomes(b, gw_.options().max_poll_seconds, &req)) return Answer(*e);
  Engine* engine = gw_.engine();
  const std::string consumer = req.consumer;
  Call<ConsumerInfo>(
      [engine, consumer](Callback<ConsumerInfo> cb) {
        engine->RegisterConsumer(consumer, std::move(cb));
      },
      [req](Connection& s, Result<ConsumerInfo> r) mutable {
        if (!r.ok()) return s.AnswerEngineError(r.error);
        if (req.from_seq == 0) req.from_seq = r.value.acked_seq + 1;
        s.outcomes_ =
            Outcomes{req, r.value.acked_seq, Clock::now() + std::chrono::seconds(req.wait_s)};
        ++s.gw_.counters().waiting_polls;
        s.ReadOutcomes();
        if (s.outcomes_) {
          s.gw_.AddOutcomeWaiter(s.shared_from_this());
          s.StartPollWait(req.wait_s);
        }
      });
}

// Reads the events from the cursor; answers when there are some, or when the wait is over.
void Connection::ReadOutcomes() {
  TW_ASSERT(outcomes_.has_value());
  Outcomes& o = *outcomes_;
  Engine* engine = gw_.engine();
  gw_.bridge().Uncork();  // a store read on this thread follows
  bool trimmed = false;
  Result<std::vector<OutcomeEvent>> read = ReadEventRun(engine, o.req.from_seq, o.req.max_events,
                                                        limits::kAwsOutcomesBytesMax, &trimmed);
  if (!read.ok()) {
    EndPoll();
    return AnswerEngineError(read.error);
  }
  std::vector<OutcomeEvent>& events = read.value;
  if (trimmed) {
    const uint64_t from = o.req.from_seq;
    EndPoll();
    return AnswerEngineError(
        EventsTrimmedError(from, "omit fromSequence to resume from the consumer's cursor"));
  }
  if (events.empty() && Clock::now() < o.deadline) return;  // wait for events or the timer
  const uint64_t acked = o.acked_seq;
  const uint64_t next = o.req.from_seq + events.size();
  EndPoll();
  timer_.cancel();
  beast::error_code ignored;
  socket_.cancel(ignored);
  Answer(OutcomesBody(events, acked, next));
}

// ---------------------------------------------------------------------------------------------
// Connection: writing

void Connection::Send(http::status status, std::string body, const char* content_type,
                      std::string_view error_code, std::function<void(bool)> on_written) {
  if (closed_) {
    if (on_written) on_written(false);
    return;
  }
  // Counted when answered: by operation, or as rejected before an operation was known.
  GatewayCounters& c = gw_.counters();
  if (op_) {
    ++c.requests[{*op_, std::string(error_code)}];
    const int64_t us = MicrosSince(received_);
    ++c.latency_us[static_cast<size_t>(*op_)][LatencyBuckets::IndexOf(static_cast<uint64_t>(us))];
  } else if (!error_code.empty()) {
    ++c.rejected[std::string(error_code)];
  }
  response_ = {};
  response_.version(11);
  response_.result(status);
  response_.set(http::field::server, gw_.options().server_version);
  response_.set(http::field::content_type, content_type);
  response_.set("x-amzn-RequestId", gw_.NextRequestId());
  // Clients correct a skewed clock from it (the JavaScript SDK does, then re-signs).
  response_.set(http::field::date, gw_.HttpDate());
  if (!error_code.empty()) response_.set("X-Amzn-ErrorType", std::string(error_code));
  response_.body() = std::move(body);
  response_.keep_alive(keep_alive_);
  response_.prepare_payload();
  reply_bytes_ = response_.body().size();
  gw_.AddReplyBytes(reply_bytes_);
  // A client that does not read its answer is given the idle timeout, then dropped.
  ArmTimer(gw_.options().idle_timeout_ms);
  http::async_write(socket_, response_,
                    [self = shared_from_this(), on_written = std::move(on_written)](
                        beast::error_code ec, size_t) {
                      self->timer_.cancel();
                      self->response_ = {};  // an idle connection keeps no answer
                      self->gw_.AddReplyBytes(-static_cast<int64_t>(self->reply_bytes_));
                      self->reply_bytes_ = 0;
                      if (on_written) on_written(!ec && !self->closed_);
                      if (ec || self->closed_) return self->Close();
                      if (!self->keep_alive_) return self->CloseAfterDraining();
                      self->op_.reset();
                      self->WaitForRequest();
                    });
}

// ---------------------------------------------------------------------------------------------
// GatewayImpl

Error GatewayImpl::Launch() {
  const size_t colon = options_.listen_address.rfind(':');
  if (colon == std::string::npos) {
    return Error::Make(ErrorCode::kValidation,
                       "listen address must be HOST:PORT: " + options_.listen_address);
  }
  std::string host = options_.listen_address.substr(0, colon);
  const std::string port_text = options_.listen_address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (!options_.credentials && !IsLoopbackAddress(options_.listen_address)) {
    return Error::Make(ErrorCode::kValidation,
                       "the AWS gateway checks no signatures without credentials, so it listens "
                       "on loopback addresses only (127.0.0.0/8, ::1, localhost): " +
                           options_.listen_address);
  }
  beast::error_code ec;
  tcp::resolver resolver(io_);
  auto endpoints = resolver.resolve(host, port_text, tcp::resolver::passive, ec);
  if (ec || endpoints.empty()) {
    return Error::Make(ErrorCode::kUnavailable,
                       "cannot resolve " + options_.listen_address + ": " + ec.message());
  }
  const tcp::endpoint endpoint = endpoints.begin()->endpoint();
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Error::Make(ErrorCode::kUnavailable,
                       "cannot listen on " + options_.listen_address + ": " + ec.message());
  }
  port_.store(acceptor_.local_endpoint().port(), std::memory_order_relaxed);
  address_ = options_.listen_address.substr(0, colon) + ":" + std::to_string(port());

  bridge_ = std::make_unique<Bridge>(
      engine_, mailbox_, [this](std::function<void()> fn) { asio::post(io_, std::move(fn)); },
      options_.calls_max, limits::kAwsPayloadCallsInFlightMax, kPollIdTag);
  doorbell_.assign(::dup(mailbox_->doorbell_fd()));
  std::shared_ptr<Mailbox> mailbox = mailbox_;
  // Engine thread, after each batch with new events: only a post, which runs while the mailbox
  // is open, so while this gateway lives.
  engine_->AddEventListener([mailbox, this](uint64_t) { mailbox->Post([this]() { OnEvents(); }); });
  Accept();
  PumpMailbox();
  thread_ = std::thread([this]() { Run(); });
  return Error{};
}

void GatewayImpl::Run() {
  pthread_setname_np(pthread_self(), "tw-gateway");
  for (;;) {
    try {
      io_.run();
      return;
    } catch (const std::exception& e) {
      Emit(options_.log, {LogLevel::kError,
                          "gateway",
                          "handler_failed",
                          std::string("a handler failed: ") + e.what(),
                          {}});
    }
  }
}

void GatewayImpl::PumpMailbox() {
  if (mailbox_->DrainOrArm()) {
    asio::post(io_, [this]() { PumpMailbox(); });
    return;
  }
  if (shutting_down_) return;
  doorbell_.async_wait(asio::posix::stream_descriptor::wait_read, [this](beast::error_code ec) {
    if (ec) return;
    mailbox_->ConsumeRing();
    PumpMailbox();
  });
}

void GatewayImpl::OnEvents() {
  // Each waiting GetOutcomes reads again; those still waiting stay on the list, once each.
  std::vector<std::weak_ptr<Connection>> waiters;
  waiters.swap(outcome_waiters_);
  for (auto& weak : waiters) {
    std::shared_ptr<Connection> s = weak.lock();
    if (s == nullptr) continue;
    s->OnEvents();
    if (s->WaitingForOutcomes()) outcome_waiters_.push_back(s);
  }
}

void GatewayImpl::ResumeReading() {
  std::vector<std::weak_ptr<Connection>> paused;
  paused.swap(paused_);
  for (auto& weak : paused) {
    if (std::shared_ptr<Connection> s = weak.lock()) {
      asio::post(io_, [s]() { s->Resume(); });
    }
  }
}

void GatewayImpl::Accept() {
  if (!acceptor_.is_open()) return;
  acceptor_.async_accept(
      [this](beast::error_code ec, tcp::socket socket) { OnAccept(ec, std::move(socket)); });
}

void GatewayImpl::OnAccept(beast::error_code ec, tcp::socket socket) {
  if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
  if (ec) {
    // Out of descriptors (EMFILE, ENFILE) or memory: the connection waits in the backlog. Back
    // off, then accept again, so the loop survives and serves once descriptors free up.
    ++counters_.accept_backoffs;
    accept_log_.Log("accept: " + ec.message() + "; retrying in " +
                    std::to_string(accept_backoff_ms_) + " ms");
    accept_backoff_.expires_after(std::chrono::milliseconds(accept_backoff_ms_));
    accept_backoff_ms_ = std::min(accept_backoff_ms_ * 2, limits::kAwsAcceptBackoffMsMax);
    accept_backoff_.async_wait([this](beast::error_code e) {
      if (!e) Accept();
    });
    return;
  }
  accept_backoff_ms_ = limits::kAwsAcceptBackoffMsMin;
  ++counters_.connections_accepted;
  if (connections_.size() >= options_.connections_max) {
    Refuse(socket);
  } else {
    socket.set_option(tcp::no_delay(true), ec);
    auto s = std::make_shared<Connection>(*this, std::move(socket));
    connections_.emplace(s.get(), s);
    s->Start();
  }
  Accept();
}

// Past the connection cap: one short answer, written without waiting, then the connection
// closes. AWS SDKs retry a 503 ThrottlingException with back-off.
void GatewayImpl::Refuse(tcp::socket& socket) {
  ++counters_.connections_refused;
  --counters_.connections_accepted;
  refuse_log_.Log("connection limit (" + std::to_string(options_.connections_max) +
                  ") reached; refusing new connections");
  if (refusals_.size() >= limits::kAwsRefusalsInProgressMax) {
    beast::error_code ignored;
    socket.close(ignored);  // too many at once: closed without an answer
    return;
  }
  if (refusal_response_ == nullptr) {
    const std::string body =
        ErrorBody(ErrorReply{kThrottlingException,
                             std::string(kThrottlingMessage) + ": too many connections (" +
                                 std::to_string(options_.connections_max) + ")",
                             503});
    refusal_response_ = std::make_shared<const std::string>(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: " + std::string(kJsonContentType) +
        "\r\nX-Amzn-ErrorType: " + kThrottlingException +
        "\r\nConnection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
        body);
  }
  auto r = std::make_shared<Refusal>(*this, std::move(socket), refusal_response_);
  refusals_.emplace(r.get(), r);
  r->Start();
}

void GatewayImpl::ForgetRefusal(Refusal* r) {
  auto it = refusals_.find(r);
  if (it == refusals_.end()) return;
  std::shared_ptr<Refusal> keep = std::move(it->second);
  refusals_.erase(it);
}

void GatewayImpl::Forget(Connection* s) {
  auto it = connections_.find(s);
  if (it == connections_.end()) return;
  std::shared_ptr<Connection> keep = std::move(it->second);  // released after the erase
  connections_.erase(it);
}

void GatewayImpl::BeginShutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  CloseAcceptor();
  // The answers already handed over become replies; give them a moment to be written.
  shutdown_timer_.expires_after(std::chrono::milliseconds(limits::kRpcShutdownFlushMs));
  shutdown_timer_.async_wait([this](beast::error_code) {
    mailbox_->Close();
    beast::error_code ignored;
    doorbell_.close(ignored);
    std::vector<std::shared_ptr<Connection>> all;
    for (auto& [ptr, s] : connections_) all.push_back(s);
    for (auto& s : all) s->Close();
    std::vector<std::shared_ptr<Refusal>> refusing;
    for (auto& [ptr, r] : refusals_) refusing.push_back(r);
    for (auto& r : refusing) r->Done();
    outcome_waiters_.clear();
    // The run loop ends once the handlers of the closed connections have run.
  });
}

}  // namespace

bool IsLoopbackAddress(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
  std::string host = colon == std::string::npos ? host_port : host_port.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  return inet_pton(AF_INET6, host.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

Result<std::unique_ptr<Gateway>> Gateway::Start(Engine* engine, const GatewayOptions& options) {
  using R = Result<std::unique_ptr<Gateway>>;
  TW_ASSERT(engine != nullptr);
  if (options.max_poll_seconds == 0 || options.max_poll_seconds > limits::kPollSecondsMax) {
    return R::Fail(
        Error::Make(ErrorCode::kValidation,
                    "max_poll_seconds must be 1.." + std::to_string(limits::kPollSecondsMax)));
  }
  // A peer that closes early must not kill the process with SIGPIPE.
  struct sigaction old_action {};
  if (sigaction(SIGPIPE, nullptr, &old_action) == 0 && old_action.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
  auto gateway = std::make_unique<GatewayImpl>(engine, options);
  Error e = gateway->Launch();
  if (!e.ok()) return R::Fail(std::move(e));
  return R::Ok(std::move(gateway));
}

}  // namespace tw::rpc::aws
