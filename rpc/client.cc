// GCC (12, -O1 and up) reports a false "may be used uninitialized" inside kj::Maybe<MessageSize>
// when capnp's getResults() / newCall() copy their defaulted (null) size hint. Silenced for this
// file only; it must precede the capnp includes, where the warning is located.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "rpc/client.h"

#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.h>
#include <kj/async-io.h>
#include <kj/debug.h>
#include <kj/timer.h>

#include <deque>
#include <utility>

#include "engine/assert.h"
#include "engine/limits.h"
#include "rpc/buffered_stream.h"
#include "rpc/convert.h"
#include "rpc/tls.h"
#include "rpc/tokenwheel.capnp.h"

namespace tw::rpc {
namespace {

// Events a subscriber buffers before its sink stops acknowledging (which, through the stream's
// flow control, stops the server).
constexpr size_t kSinkBufferedEventsMax = 4 * limits::kEventsPerReadMax;

capnp::ReaderOptions ClientReaderOptions() {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = limits::kRpcClientReadBytesMax / sizeof(capnp::word);
  return options;
}

// First-segment size hints for requests (capnp's default first segment is 8 KiB).
capnp::MessageSize RequestWords(size_t payload_bytes, size_t items = 1) {
  return capnp::MessageSize{payload_bytes / sizeof(capnp::word) + 24 * items, 0};
}
size_t IssueBytes(const IssueTaskRequest& r) {
  return r.activity_arn.size() + r.input.size() + r.correlation.size() + r.idempotency_key.size();
}

// Reads a result union `{ok, error}` into Result<T> with `read_ok` for the ok arm.
template <typename T, typename Reader, typename ReadOk>
Result<T> ReadResult(Reader r, ReadOk&& read_ok) {
  if (r.which() == Reader::Reads::ERROR) return Result<T>::Fail(ReadError(r.getError()));
  return Result<T>::Ok(read_ok(r));
}

Result<Empty> ReadEmpty(proto::EmptyResult::Reader r) {
  return ReadResult<Empty>(r, [](auto) { return Empty{}; });
}

Result<CompletionReply> ReadCompletion(proto::CompletionResult::Reader r) {
  return ReadResult<CompletionReply>(
      r, [](auto ok) { return CompletionReply{ok.getOk().getDuplicate()}; });
}

Result<IssueTaskReply> ReadIssue(proto::IssueTaskResult::Reader r) {
  return ReadResult<IssueTaskReply>(r, [](auto ok) {
    IssueTaskReply reply;
    reply.token = ToString(ok.getOk().getTaskToken());
    reply.existing = ok.getOk().getExisting();
    return reply;
  });
}

template <typename T, typename List, typename ReadItem>
BatchResult<T> ReadBatch(List list, ReadItem&& read_item) {
  std::vector<Result<T>> out;
  out.reserve(list.size());
  for (auto item : list) out.push_back(read_item(item));
  return BatchResult<T>::Ok(std::move(out));
}

// What the subscriber's sink has received and not yet handed out. Client thread only.
struct SinkBuffer {
  std::deque<OutcomeEvent> events;
  kj::Own<kj::PromiseFulfiller<void>> waiter;   // a Next() waiting for events
  kj::Own<kj::PromiseFulfiller<void>> drained;  // the sink waiting for room
  bool ended = false;
  std::string end_reason;

  void Wake() {
    if (waiter.get() != nullptr) {
      waiter->fulfill();
      waiter = nullptr;
    }
  }
};

class SinkImpl final : public proto::EventSink::Server {
 public:
  explicit SinkImpl(std::shared_ptr<SinkBuffer> buffer) : buffer_(std::move(buffer)) {}

  kj::Promise<void> events(EventsContext context) override {
    uint64_t expected = buffer_->events.empty() ? 0 : buffer_->events.back().seq + 1;
    for (auto e : context.getParams().getEvents()) {
      OutcomeEvent event = ReadEvent(e);
      // The server sends runs of consecutive sequences, in order.
      TW_ASSERT(expected == 0 || event.seq == expected);
      expected = event.seq + 1;
      buffer_->events.push_back(std::move(event));
    }
    buffer_->Wake();
    if (buffer_->events.size() < kSinkBufferedEventsMax) return kj::READY_NOW;
    auto paf = kj::newPromiseAndFulfiller<void>();
    buffer_->drained = kj::mv(paf.fulfiller);
    return kj::mv(paf.promise);
  }

  kj::Promise<void> ended(EndedContext context) override {
    buffer_->ended = true;
    buffer_->end_reason = ToString(context.getParams().getReason());
    buffer_->Wake();
    return kj::READY_NOW;
  }

 private:
  std::shared_ptr<SinkBuffer> buffer_;
};

// The KJ event loop of one thread, shared by every Client of that thread (KJ allows one loop per
// thread). Freed with the thread's last Client.
struct ThreadIo {
  kj::AsyncIoContext io = kj::setupAsyncIo();
};

std::shared_ptr<ThreadIo> CurrentThreadIo() {
  thread_local std::weak_ptr<ThreadIo> current;
  std::shared_ptr<ThreadIo> io = current.lock();
  if (io == nullptr) {
    io = std::make_shared<ThreadIo>();
    current = io;
  }
  return io;
}

// The server's TokenWheel: its bootstrap capability, or, with a secret, what Gate.authenticate
// answers -- pipelined, so the first call goes out with the authenticate call.
proto::TokenWheel::Client Bootstrap(capnp::RpcSystem<capnp::rpc::twoparty::VatId>& rpc,
                                    const std::string& secret) {
  capnp::MallocMessageBuilder message(8);
  auto vat = message.initRoot<capnp::rpc::twoparty::VatId>();
  vat.setSide(capnp::rpc::twoparty::Side::SERVER);
  if (secret.empty()) return rpc.bootstrap(vat).castAs<proto::TokenWheel>();
  auto req = rpc.bootstrap(vat).castAs<proto::Gate>().authenticateRequest(
      capnp::MessageSize{secret.size() / sizeof(capnp::word) + 8, 0});
  req.setSecret(AsData(secret));
  return req.send().getApi();
}

std::string HostOf(const std::string& address) {
  if (!address.empty() && address.front() == '[') {  // [v6]:port
    const size_t close = address.find(']');
    if (close != std::string::npos) return address.substr(1, close - 1);
  }
  const size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

}  // namespace

// One connection: buffered socket, two-party network, RPC system, the server's bootstrap cap.
// Members are destroyed in reverse order: the capability first, the thread's loop last.
struct Client::Impl {
  Impl(std::shared_ptr<ThreadIo> thread_io, std::unique_ptr<TlsConfig> tls_config,
       kj::Own<kj::AsyncIoStream> connection, const std::string& secret)
      : io(std::move(thread_io)),
        tls(std::move(tls_config)),
        stream(kj::heap<BufferedIoStream>(kj::mv(connection))),
        network(*stream, capnp::rpc::twoparty::Side::CLIENT, ClientReaderOptions()),
        rpc(capnp::makeRpcClient(network)),
        cap(Bootstrap(rpc, secret)) {}
  ~Impl() noexcept(false) {}

  kj::WaitScope& wait_scope() { return io->io.waitScope; }
  kj::Timer& timer() { return io->io.provider->getTimer(); }

  std::shared_ptr<ThreadIo> io;
  std::unique_ptr<TlsConfig> tls;  // null: plain TCP; outlives the stream it wraps
  kj::Own<BufferedIoStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
  proto::TokenWheel::Client cap;
};

namespace {

class SubscriptionImpl final : public Subscription {
 public:
  SubscriptionImpl(Client::Impl& client, proto::Subscription::Client sub,
                   std::shared_ptr<SinkBuffer> buffer, uint64_t acked, uint64_t start)
      : client_(client),
        sub_(kj::mv(sub)),
        buffer_(std::move(buffer)),
        acked_(acked),
        start_(start) {}
  ~SubscriptionImpl() noexcept override {}

  uint64_t acked_seq() const override { return acked_; }
  uint64_t start_seq() const override { return start_; }

  Result<std::vector<OutcomeEvent>> Next(int64_t timeout_ms) override {
    if (buffer_->events.empty() && !buffer_->ended) {
      Error error;
      KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() { WaitForEvents(timeout_ms); })) {
        error = FromException(*e);
      }
      buffer_->waiter = nullptr;
      if (!error.ok()) return Result<std::vector<OutcomeEvent>>::Fail(std::move(error));
    }
    if (buffer_->events.empty() && buffer_->ended) {
      return Result<std::vector<OutcomeEvent>>::Fail(Error::Make(
          ErrorCode::kUnavailable, "subscription ended by the server: " + buffer_->end_reason));
    }
    std::vector<OutcomeEvent> out(std::make_move_iterator(buffer_->events.begin()),
                                  std::make_move_iterator(buffer_->events.end()));
    buffer_->events.clear();
    if (buffer_->drained.get() != nullptr) {
      buffer_->drained->fulfill();
      buffer_->drained = nullptr;
    }
    return Result<std::vector<OutcomeEvent>>::Ok(std::move(out));
  }

 private:
  void WaitForEvents(int64_t timeout_ms) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    buffer_->waiter = kj::mv(paf.fulfiller);
    kj::Timer& timer = client_.timer();
    const bool timed_out =
        paf.promise.then([]() { return false; })
            .exclusiveJoin(
                timer.afterDelay(timeout_ms * kj::MILLISECONDS).then([]() { return true; }))
            .wait(client_.wait_scope());
    if (timed_out && buffer_->events.empty()) {
      // Quiet so far: make sure the connection and the subscription are still there (throws if
      // not).
      sub_.nextSequenceRequest().send().wait(client_.wait_scope());
    }
  }

  Client::Impl& client_;
  proto::Subscription::Client sub_;
  std::shared_ptr<SinkBuffer> buffer_;
  const uint64_t acked_;
  const uint64_t start_;
};

// The getInfo answer (a Connect handshake and Client::GetInfo read the same one).
template <typename Response>
ServerInfo ReadServerInfo(const Response& response) {
  ServerInfo i;
  i.api_version = response.getApiVersion();
  i.server_version = ToString(response.getServerVersion());
  i.max_poll_seconds = response.getMaxPollSeconds();
  i.request_bytes_max = response.getRequestBytesMax();
  i.batch_items_max = response.getBatchItemsMax();
  return i;
}

}  // namespace

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

Error Client::TransportError(const kj::Exception& e) { return FromException(e); }

kj::WaitScope& Client::wait_scope() { return impl_->wait_scope(); }
kj::Timer& Client::timer() { return impl_->timer(); }
kj::AsyncIoProvider& Client::io_provider() { return *impl_->io->io.provider; }
kj::LowLevelAsyncIoProvider& Client::low_level_io() { return *impl_->io->io.lowLevelProvider; }

Result<std::unique_ptr<Client>> Client::Connect(const std::string& address, int64_t timeout_ms) {
  return Connect(address, ClientOptions(), timeout_ms);
}

Result<std::unique_ptr<Client>> Client::Connect(const std::string& address,
                                                const ClientOptions& options, int64_t timeout_ms) {
  using R = Result<std::unique_ptr<Client>>;
  std::unique_ptr<TlsConfig> tls;
  if (options.UsesTls()) {
    auto made =
        TlsConfig::ForClient(options.tls_ca_file, options.tls_cert_file, options.tls_key_file);
    if (!made.ok()) return R::Fail(std::move(made.error));
    tls = std::move(made.value);
  }
  const std::string server_name =
      options.tls_server_name.empty() ? HostOf(address) : options.tls_server_name;
  std::shared_ptr<ThreadIo> io = CurrentThreadIo();
  kj::AsyncIoProvider& provider = *io->io.provider;
  std::unique_ptr<Impl> impl;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                 TlsConfig* config = tls.get();
                 auto connected =
                     provider.getNetwork()
                         .parseAddress(address)
                         .then([](kj::Own<kj::NetworkAddress> addr) { return addr->connect(); })
                         .then([config, server_name](kj::Own<kj::AsyncIoStream> stream)
                                   -> kj::Promise<kj::Own<kj::AsyncIoStream>> {
                           if (config == nullptr) return kj::mv(stream);
                           kj::String name = kj::heapString(server_name.c_str());
                           kj::StringPtr name_ptr = name;
                           return config->context()
                               .wrapClient(kj::mv(stream), name_ptr)
                               .attach(kj::mv(name));
                         })
                         .exclusiveJoin(provider.getTimer()
                                            .afterDelay(timeout_ms * kj::MILLISECONDS)
                                            .then([]() -> kj::Own<kj::AsyncIoStream> {
                                              KJ_FAIL_REQUIRE("timed out connecting");
                                            }))
                         .wait(io->io.waitScope);
                 impl = std::make_unique<Impl>(io, std::move(tls), kj::mv(connected),
                                               options.auth_secret);
               })) {
    Error error = Error::Make(ErrorCode::kUnavailable,
                              "connecting to " + address + ": " + e->getDescription().cStr());
    error.transport = true;
    return R::Fail(std::move(error));
  }
  std::unique_ptr<Client> client(new Client(std::move(impl)));
  kj::Timer& timer = client->timer();
  Result<ServerInfo> info = client->Wait(
      client->impl_->cap.getInfoRequest()
          .send()
          .then([](auto response) { return Result<ServerInfo>::Ok(ReadServerInfo(response)); })
          .exclusiveJoin(timer.afterDelay(timeout_ms * kj::MILLISECONDS).then([address]() {
            Error error =
                Error::Make(ErrorCode::kUnavailable, "timed out connecting to " + address);
            error.transport = true;
            return Result<ServerInfo>::Fail(std::move(error));
          })));
  if (!info.ok()) return R::Fail(std::move(info.error));
  client->info_ = std::move(info.value);
  return R::Ok(std::move(client));
}

// ---- Async ----

kj::Promise<std::string> Client::PingAsync(const std::string& payload) {
  auto req = impl_->cap.pingRequest(RequestWords(payload.size()));
  req.setPayload(AsData(payload));
  return req.send().then([](auto response) { return ToString(response.getPayload()); });
}

kj::Promise<Result<IssueTaskReply>> Client::IssueTaskAsync(const IssueTaskRequest& r) {
  auto req = impl_->cap.issueTaskRequest(RequestWords(IssueBytes(r)));
  FillIssueRequest(r, req.initRequest());
  return req.send().then([](auto response) { return ReadIssue(response.getResult()); });
}

kj::Promise<BatchResult<IssueTaskReply>> Client::IssueTasksAsync(
    const std::vector<IssueTaskRequest>& reqs) {
  size_t bytes = 0;
  for (const IssueTaskRequest& r : reqs) bytes += IssueBytes(r);
  auto req = impl_->cap.issueTasksRequest(RequestWords(bytes, reqs.size()));
  auto list = req.initRequests(static_cast<unsigned>(reqs.size()));
  for (unsigned i = 0; i < list.size(); ++i) FillIssueRequest(reqs[i], list[i]);
  return req.send().then(
      [](auto response) { return ReadBatch<IssueTaskReply>(response.getResults(), ReadIssue); });
}

kj::Promise<Result<GetActivityTaskReply>> Client::GetActivityTaskAsync(
    const GetActivityTaskRequest& r, uint32_t wait_s) {
  auto req = impl_->cap.getActivityTaskRequest();
  req.setActivityArn(AsText(r.activity_arn));
  req.setWorkerName(AsText(r.worker_name));
  req.setWaitSeconds(wait_s);
  return req.send().then([](auto response) {
    return ReadResult<GetActivityTaskReply>(response.getResult(), [](auto ok) {
      GetActivityTaskReply reply;
      reply.token = ToString(ok.getOk().getTaskToken());
      reply.input = ToString(ok.getOk().getInput());
      return reply;
    });
  });
}

kj::Promise<Result<CompletionReply>> Client::SendTaskSuccessAsync(const SendTaskSuccessRequest& r) {
  auto req = impl_->cap.sendTaskSuccessRequest(
      RequestWords(r.token.size() + (r.output.has_value() ? r.output->size() : 0)));
  FillSuccessRequest(r, req.initRequest());
  return req.send().then([](auto response) { return ReadCompletion(response.getResult()); });
}

kj::Promise<BatchResult<CompletionReply>> Client::SendTaskSuccessesAsync(
    const std::vector<SendTaskSuccessRequest>& reqs) {
  size_t bytes = 0;
  for (const SendTaskSuccessRequest& r : reqs) {
    bytes += r.token.size() + (r.output.has_value() ? r.output->size() : 0);
  }
  auto req = impl_->cap.sendTaskSuccessesRequest(RequestWords(bytes, reqs.size()));
  auto list = req.initRequests(static_cast<unsigned>(reqs.size()));
  for (unsigned i = 0; i < list.size(); ++i) FillSuccessRequest(reqs[i], list[i]);
  return req.send().then([](auto response) {
    return ReadBatch<CompletionReply>(response.getResults(), ReadCompletion);
  });
}

kj::Promise<Result<CompletionReply>> Client::SendTaskFailureAsync(const SendTaskFailureRequest& r) {
  auto req = impl_->cap.sendTaskFailureRequest();
  FillFailureRequest(r, req.initRequest());
  return req.send().then([](auto response) { return ReadCompletion(response.getResult()); });
}

kj::Promise<Result<TaskDescription>> Client::DescribeTaskAsync(const std::string& token) {
  auto req = impl_->cap.describeTaskRequest();
  req.setTaskToken(AsText(token));
  return req.send().then([](auto response) {
    return ReadResult<TaskDescription>(response.getResult(),
                                       [](auto ok) { return ReadDescription(ok.getOk()); });
  });
}

// ---- Sync ----

Result<PingReply> Client::Ping(const std::string& payload) {
  auto req = impl_->cap.pingRequest(RequestWords(payload.size()));
  req.setPayload(AsData(payload));
  return Wait(req.send().then([](auto response) {
    PingReply r;
    r.payload = ToString(response.getPayload());
    if (response.hasStorage()) r.storage = ReadStorageHealth(response.getStorage());
    return Result<PingReply>::Ok(std::move(r));
  }));
}

Result<ServerInfo> Client::GetInfo() {
  return Wait(impl_->cap.getInfoRequest().send().then(
      [](auto response) { return Result<ServerInfo>::Ok(ReadServerInfo(response)); }));
}

Result<ActivityInfo> Client::CreateActivity(const std::string& name) {
  auto req = impl_->cap.createActivityRequest();
  req.setName(AsText(name));
  return Wait(req.send().then([](auto response) {
    return ReadResult<ActivityInfo>(response.getResult(),
                                    [](auto ok) { return ReadActivity(ok.getOk()); });
  }));
}

Result<Empty> Client::DeleteActivity(const std::string& arn) {
  auto req = impl_->cap.deleteActivityRequest();
  req.setActivityArn(AsText(arn));
  return Wait(req.send().then([](auto response) { return ReadEmpty(response.getResult()); }));
}

Result<ActivityInfo> Client::DescribeActivity(const std::string& arn) {
  auto req = impl_->cap.describeActivityRequest();
  req.setActivityArn(AsText(arn));
  return Wait(req.send().then([](auto response) {
    return ReadResult<ActivityInfo>(response.getResult(),
                                    [](auto ok) { return ReadActivity(ok.getOk()); });
  }));
}

Result<ListActivitiesReply> Client::ListActivities(uint32_t max_results,
                                                   const std::string& next_token) {
  auto req = impl_->cap.listActivitiesRequest();
  req.setMaxResults(max_results);
  req.setNextToken(AsText(next_token));
  return Wait(req.send().then([](auto response) {
    return ReadResult<ListActivitiesReply>(response.getResult(), [](auto ok) {
      ListActivitiesReply reply;
      for (auto a : ok.getOk().getActivities()) reply.activities.push_back(ReadActivity(a));
      reply.next_token = ToString(ok.getOk().getNextToken());
      return reply;
    });
  }));
}

Result<IssueTaskReply> Client::IssueTask(const IssueTaskRequest& req) {
  return Wait(IssueTaskAsync(req));
}

BatchResult<IssueTaskReply> Client::IssueTasks(const std::vector<IssueTaskRequest>& reqs) {
  return Wait(IssueTasksAsync(reqs));
}

Result<GetActivityTaskReply> Client::GetActivityTask(const GetActivityTaskRequest& req,
                                                     uint32_t wait_s) {
  return Wait(GetActivityTaskAsync(req, wait_s));
}

Result<CompletionReply> Client::SendTaskSuccess(const SendTaskSuccessRequest& req) {
  return Wait(SendTaskSuccessAsync(req));
}

BatchResult<CompletionReply> Client::SendTaskSuccesses(
    const std::vector<SendTaskSuccessRequest>& reqs) {
  return Wait(SendTaskSuccessesAsync(reqs));
}

Result<CompletionReply> Client::SendTaskFailure(const SendTaskFailureRequest& req) {
  return Wait(SendTaskFailureAsync(req));
}

BatchResult<CompletionReply> Client::SendTaskFailures(
    const std::vector<SendTaskFailureRequest>& reqs) {
  auto req = impl_->cap.sendTaskFailuresRequest();
  auto list = req.initRequests(static_cast<unsigned>(reqs.size()));
  for (unsigned i = 0; i < list.size(); ++i) FillFailureRequest(reqs[i], list[i]);
  return Wait(req.send().then([](auto response) {
    return ReadBatch<CompletionReply>(response.getResults(), ReadCompletion);
  }));
}

kj::Promise<Result<Empty>> Client::SendTaskHeartbeatAsync(const std::string& token) {
  auto req = impl_->cap.sendTaskHeartbeatRequest();
  req.initRequest().setTaskToken(AsText(token));
  return req.send().then([](auto response) { return ReadEmpty(response.getResult()); });
}

Result<Empty> Client::SendTaskHeartbeat(const std::string& token) {
  return Wait(SendTaskHeartbeatAsync(token));
}

BatchResult<Empty> Client::SendTaskHeartbeats(const std::vector<std::string>& tokens) {
  auto req = impl_->cap.sendTaskHeartbeatsRequest();
  auto list = req.initRequests(static_cast<unsigned>(tokens.size()));
  for (unsigned i = 0; i < list.size(); ++i) list[i].setTaskToken(AsText(tokens[i]));
  return Wait(req.send().then(
      [](auto response) { return ReadBatch<Empty>(response.getResults(), ReadEmpty); }));
}

Result<CompletionReply> Client::CancelTask(const std::string& token) {
  auto req = impl_->cap.cancelTaskRequest();
  req.setTaskToken(AsText(token));
  return Wait(req.send().then([](auto response) { return ReadCompletion(response.getResult()); }));
}

Result<TaskDescription> Client::DescribeTask(const std::string& token) {
  return Wait(DescribeTaskAsync(token));
}

Result<std::unique_ptr<Subscription>> Client::Subscribe(const std::string& consumer,
                                                        uint64_t from_seq) {
  using R = Result<std::unique_ptr<Subscription>>;
  auto buffer = std::make_shared<SinkBuffer>();
  auto req = impl_->cap.subscribeRequest();
  req.setConsumer(AsText(consumer));
  req.setFromSequence(from_seq);
  req.setSink(kj::heap<SinkImpl>(buffer));
  Impl& impl = *impl_;
  return Wait(req.send().then([&impl, buffer](auto response) -> R {
    auto result = response.getResult();
    if (result.which() == proto::SubscribeResult::ERROR) {
      return R::Fail(ReadError(result.getError()));
    }
    auto ok = result.getOk();
    return R::Ok(std::make_unique<SubscriptionImpl>(impl, ok.getSubscription(), buffer,
                                                    ok.getAckedSequence(), ok.getStartSequence()));
  }));
}

Result<Empty> Client::AckEvents(const std::string& consumer, uint64_t seq) {
  auto req = impl_->cap.ackEventsRequest();
  req.setConsumer(AsText(consumer));
  req.setSequence(seq);
  return Wait(req.send().then([](auto response) { return ReadEmpty(response.getResult()); }));
}

Result<Empty> Client::DeleteConsumer(const std::string& consumer) {
  auto req = impl_->cap.deleteConsumerRequest();
  req.setConsumer(AsText(consumer));
  return Wait(req.send().then([](auto response) { return ReadEmpty(response.getResult()); }));
}

Result<std::string> Client::Checkpoint(const std::string& name) {
  auto req = impl_->cap.checkpointRequest();
  req.setName(AsText(name));
  return Wait(req.send().then([](auto response) {
    return ReadResult<std::string>(response.getResult(),
                                   [](auto r) { return ToString(r.getOk()); });
  }));
}

Result<ServerStats> Client::Stats() {
  return Wait(impl_->cap.statsRequest().send().then([](auto response) {
    auto s = response.getStats();
    ServerStats out;
    out.engine = ReadEngineStats(s);
    out.connections = s.getConnections();
    out.subscriptions = s.getSubscriptions();
    out.reply_handoffs = s.getReplyHandoffs();
    out.replies_delivered = s.getRepliesDelivered();
    return Result<ServerStats>::Ok(std::move(out));
  }));
}

}  // namespace tw::rpc
