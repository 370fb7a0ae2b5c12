// The TokenWheel interface (rpc/service.h). Every unary call that reaches the engine goes
// through TokenWheelImpl::CallAndAnswer (read params, call the engine, fill the `ok` arm or the
// `error` arm), as the AWS gateway's operations go through Connection::CallAndAnswer
// (rpc/aws/gateway.cc); every batch call through TokenWheelImpl::Batch.
//
// GCC (12, -O1 and up) reports a false "may be used uninitialized" inside kj::Maybe<MessageSize>
// when capnp's getResults() copies its defaulted (null) size hint. Silenced for this file only;
// it must precede the capnp includes, where the warning is located.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "rpc/service.h"

#include <kj/debug.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "engine/assert.h"
#include "engine/limits.h"
#include "rpc/convert.h"
#include "rpc/event_stream.h"

namespace tw::rpc {
namespace {

[[noreturn]] void ThrowLogistics(const Error& e) { kj::throwFatalException(ToException(e)); }

// Fills `out` (a result struct with an `error` arm) with e, or throws for logistics codes.
template <typename Builder>
void AnswerError(const Error& e, Builder out) {
  if (IsLogisticsError(e.code)) ThrowLogistics(e);
  FillError(e, out.initError());
}

// A batch item carries overloaded too as a value; internal still throws.
template <typename Builder>
void AnswerItemError(const Error& e, Builder out) {
  if (e.code == ErrorCode::kInternal) ThrowLogistics(e);
  FillError(e, out.initError());
}

void CheckBatch(size_t items) {
  if (items > limits::kRpcBatchItemsMax) {
    kj::throwFatalException(KJ_EXCEPTION(FAILED, "batch too long", items,
                                         static_cast<uint64_t>(limits::kRpcBatchItemsMax)));
  }
}

// ---- Size hints ----

// First-segment size hints for results: without one capnp starts every message with an 8 KiB
// segment, which costs more in malloc than the small replies themselves.
capnp::MessageSize ResultWords(size_t payload_bytes, size_t items = 1) {
  return capnp::MessageSize{payload_bytes / sizeof(capnp::word) + 24 * items, 0};
}
constexpr capnp::MessageSize kSmallResult{32, 0};

// The hint for a unary call's results, by reply type: small, unless the reply carries payloads.
// listActivities and subscribe give none (capnp's default first segment).
template <typename T>
kj::Maybe<capnp::MessageSize> ResultSize(const T&) {
  return kSmallResult;
}
kj::Maybe<capnp::MessageSize> ResultSize(const ListActivitiesReply&) { return nullptr; }
kj::Maybe<capnp::MessageSize> ResultSize(const ConsumerInfo&) { return nullptr; }
kj::Maybe<capnp::MessageSize> ResultSize(const TaskDescription& d) {
  return ResultWords(d.input.size() + d.output.size() + d.error.size() + d.cause.size() +
                     d.correlation.size() + d.activity_arn.size() + d.worker.size());
}

// ---- The `ok` arms, by reply type (a unary call's result, or one item of a batch's) ----

void FillEmptyOk(const Empty&, proto::EmptyResult::Builder out) { out.setOk(); }

void FillActivityOk(const ActivityInfo& a, proto::ActivityResult::Builder out) {
  FillActivity(a, out.initOk());
}

void FillActivitiesOk(const ListActivitiesReply& r, proto::ListActivitiesResult::Builder out) {
  auto ok = out.initOk();
  auto list = ok.initActivities(static_cast<unsigned>(r.activities.size()));
  for (unsigned i = 0; i < list.size(); ++i) FillActivity(r.activities[i], list[i]);
  ok.setNextToken(AsText(r.next_token));
}

void FillIssueOk(const IssueTaskReply& reply, proto::IssueTaskResult::Builder out) {
  auto ok = out.initOk();
  ok.setTaskToken(AsText(reply.token));
  ok.setExisting(reply.existing);
}

void FillCompletionOk(const CompletionReply& r, proto::CompletionResult::Builder out) {
  out.initOk().setDuplicate(r.duplicate);
}

void FillDescriptionOk(const TaskDescription& d, proto::DescribeTaskResult::Builder out) {
  FillDescription(d, out.initOk());
}

// subscribe, once the consumer is registered: a subscription from `from_seq` (0: the
// consumer's cursor), unless those events are trimmed.
void FillSubscription(ServerCore& core, const ConsumerInfo& consumer, uint64_t from_seq,
                      proto::EventSink::Client sink, proto::SubscribeResult::Builder out) {
  const uint64_t start = from_seq == 0 ? consumer.acked_seq + 1 : from_seq;
  if (!EventsKeptFrom(core.engine(), start)) {
    return AnswerError(
        EventsTrimmedError(start,
                           "subscribe with fromSequence 0 to resume from the consumer's cursor"),
        out);
  }
  auto ok = out.initOk();
  ok.setSubscription(NewSubscription(core, start, kj::mv(sink)));
  ok.setAckedSequence(consumer.acked_seq);
  ok.setStartSequence(start);
}

// An engine method that takes one request: CreateActivity, IssueTask, ...
template <typename Request, typename T>
using EngineMethod = void (Engine::*)(Request, Callback<T>);

// The `start` of a CallAndAnswer that passes `req` to `method`. Run at once: it refers to `req`.
template <typename Request, typename T>
auto EngineCall(EngineMethod<Request, T> method, Request& req) {
  return [method, &req](Engine* e, Callback<T> cb) { (e->*method)(std::move(req), std::move(cb)); };
}

// A batch's results, item by item: the `ok` arm by `fill(value, item)`, or the error arm.
template <typename T, typename ListBuilder, typename Fill>
void AnswerItems(const std::vector<Result<T>>& results, ListBuilder out, Fill fill) {
  TW_ASSERT(out.size() == results.size());
  for (unsigned i = 0; i < out.size(); ++i) {
    if (!results[i].ok()) {
      AnswerItemError(results[i].error, out[i]);
    } else {
      fill(results[i].value, out[i]);
    }
  }
}

// ---------------------------------------------------------------------------------------------

class TokenWheelImpl final : public proto::TokenWheel::Server {
 public:
  TokenWheelImpl(ServerCore& core, kj::Own<ConnectionLoad> load)
      : core_(core), load_(kj::mv(load)) {}

  kj::Promise<void> ping(PingContext context) override {
    auto payload = context.getParams().getPayload();
    auto out = context.getResults(ResultWords(payload.size()));
    out.setPayload(payload);
    // Only while failed: a health check then learns why, and the echo stays an echo.
    const StorageHealth health = core_.engine()->Health();
    if (!health.ok) FillStorageHealth(health, out.initStorage());
    return kj::READY_NOW;
  }

  // Without auth secrets the TokenWheel is its own Gate (rpc/tokenwheel.capnp).
  kj::Promise<void> authenticate(AuthenticateContext context) override {
    context.getResults(kSmallResult).setApi(thisCap());
    return kj::READY_NOW;
  }

  kj::Promise<void> getInfo(GetInfoContext context) override {
    auto out = context.getResults();
    out.setApiVersion(proto::API_VERSION);
    out.setServerVersion(AsText(core_.options().server_version));
    out.setMaxPollSeconds(core_.options().max_poll_seconds);
    out.setRequestBytesMax(limits::kRequestBytesMax);
    out.setBatchItemsMax(static_cast<uint32_t>(limits::kRpcBatchItemsMax));
    return kj::READY_NOW;
  }

  // ---- Activities ----

  kj::Promise<void> createActivity(CreateActivityContext context) override {
    CreateActivityRequest req{ToString(context.getParams().getName())};
    return CallAndAnswer<ActivityInfo>("createActivity", context,
                                       EngineCall(&Engine::CreateActivity, req), FillActivityOk);
  }

  kj::Promise<void> deleteActivity(DeleteActivityContext context) override {
    DeleteActivityRequest req{ToString(context.getParams().getActivityArn())};
    return CallAndAnswer<Empty>("deleteActivity", context, EngineCall(&Engine::DeleteActivity, req),
                                FillEmptyOk);
  }

  kj::Promise<void> describeActivity(DescribeActivityContext context) override {
    DescribeActivityRequest req{ToString(context.getParams().getActivityArn())};
    return CallAndAnswer<ActivityInfo>("describeActivity", context,
                                       EngineCall(&Engine::DescribeActivity, req), FillActivityOk);
  }

  kj::Promise<void> listActivities(ListActivitiesContext context) override {
    auto params = context.getParams();
    ListActivitiesRequest req;
    req.max_results = params.getMaxResults();
    req.next_token = ToString(params.getNextToken());
    return CallAndAnswer<ListActivitiesReply>("listActivities", context,
                                              EngineCall(&Engine::ListActivities, req),
                                              FillActivitiesOk, Admission::kPayload);
  }

  // ---- Tasks ----

  kj::Promise<void> issueTask(IssueTaskContext context) override {
    IssueTaskRequest req = ReadIssueRequest(context.getParams().getRequest());
    context.releaseParams();
    return CallAndAnswer<IssueTaskReply>("issueTask", context, EngineCall(&Engine::IssueTask, req),
                                         FillIssueOk);
  }

  kj::Promise<void> issueTasks(IssueTasksContext context) override {
    return Batch("issueTasks", context, ReadIssueRequest, &Engine::IssueTask, FillIssueOk);
  }

  kj::Promise<void> getActivityTask(GetActivityTaskContext context) override {
    if (load_->polls() >= limits::kRpcConnectionPollsMax) {
      kj::throwFatalException(KJ_EXCEPTION(OVERLOADED, "too many long polls on one connection",
                                           static_cast<uint64_t>(load_->polls())));
    }
    auto params = context.getParams();
    GetActivityTaskRequest req;
    req.activity_arn = ToString(params.getActivityArn());
    req.worker_name = ToString(params.getWorkerName());
    const uint32_t max_s = core_.options().max_poll_seconds;
    const uint32_t wait_s =
        params.getWaitSeconds() == 0 ? max_s : std::min(params.getWaitSeconds(), max_s);
    context.releaseParams();
    // A cancelled call (or a dropped connection) must drop this promise: that is what withdraws
    // the poll.
    context.allowCancellation();
    kj::Own<PollState> state;
    auto reply = core_.Poll(std::move(req), wait_s, &state);
    TW_ASSERT(state.get() != nullptr);
    PollState* poll = state.get();
    ConnectionLoad* load = load_.get();  // lives as long as this object, which the call holds
    ServerCore* core = &core_;
    load_->PollStarted();  // until the call ends (the defer below)
    // `state` is attached outside the continuation, so it outlives it.
    return reply
        .then([context, poll, load, core](Result<GetActivityTaskReply>&& r) mutable {
          AnswerPoll(*core, *load, *poll, r, context);
        })
        .attach(kj::mv(state),
                kj::defer([load = kj::addRef(*load_)]() mutable { load->PollEnded(); }));
  }

  kj::Promise<void> sendTaskSuccess(SendTaskSuccessContext context) override {
    SendTaskSuccessRequest req = ReadSuccessRequest(context.getParams().getRequest());
    context.releaseParams();
    return CallAndAnswer<CompletionReply>(
        "sendTaskSuccess", context, EngineCall(&Engine::SendTaskSuccess, req), FillCompletionOk);
  }

  kj::Promise<void> sendTaskSuccesses(SendTaskSuccessesContext context) override {
    return Batch("sendTaskSuccesses", context, ReadSuccessRequest, &Engine::SendTaskSuccess,
                 FillCompletionOk);
  }

  kj::Promise<void> sendTaskFailure(SendTaskFailureContext context) override {
    SendTaskFailureRequest req = ReadFailureRequest(context.getParams().getRequest());
    context.releaseParams();
    return CallAndAnswer<CompletionReply>(
        "sendTaskFailure", context, EngineCall(&Engine::SendTaskFailure, req), FillCompletionOk);
  }

  kj::Promise<void> sendTaskFailures(SendTaskFailuresContext context) override {
    return Batch("sendTaskFailures", context, ReadFailureRequest, &Engine::SendTaskFailure,
                 FillCompletionOk);
  }

  kj::Promise<void> sendTaskHeartbeat(SendTaskHeartbeatContext context) override {
    SendTaskHeartbeatRequest req{ToString(context.getParams().getRequest().getTaskToken())};
    return CallAndAnswer<Empty>("sendTaskHeartbeat", context,
                                EngineCall(&Engine::SendTaskHeartbeat, req), FillEmptyOk);
  }

  kj::Promise<void> sendTaskHeartbeats(SendTaskHeartbeatsContext context) override {
    return Batch(
        "sendTaskHeartbeats", context,
        [](auto r) { return SendTaskHeartbeatRequest{ToString(r.getTaskToken())}; },
        &Engine::SendTaskHeartbeat, FillEmptyOk);
  }

  kj::Promise<void> cancelTask(CancelTaskContext context) override {
    CancelTaskRequest req{ToString(context.getParams().getTaskToken())};
    return CallAndAnswer<CompletionReply>("cancelTask", context,
                                          EngineCall(&Engine::CancelTask, req), FillCompletionOk);
  }

  kj::Promise<void> describeTask(DescribeTaskContext context) override {
    DescribeTaskRequest req{ToString(context.getParams().getTaskToken())};
    return CallAndAnswer<TaskDescription>("describeTask", context,
                                          EngineCall(&Engine::DescribeTask, req), FillDescriptionOk,
                                          Admission::kPayload);
  }

  // ---- The outcome stream ----

  kj::Promise<void> subscribe(SubscribeContext context) override {
    auto params = context.getParams();
    std::string consumer = ToString(params.getConsumer());
    const uint64_t from_seq = params.getFromSequence();
    proto::EventSink::Client sink = params.getSink();
    context.releaseParams();
    if (core_.subscriptions.load(std::memory_order_relaxed) >= core_.options().subscriptions_max) {
      kj::throwFatalException(KJ_EXCEPTION(OVERLOADED, "too many subscriptions"));
    }
    ServerCore* core = &core_;
    return CallAndAnswer<ConsumerInfo>(
        "subscribe", context, EngineCall(&Engine::RegisterConsumer, consumer),
        [core, from_seq, sink = kj::mv(sink)](const ConsumerInfo& c, auto out) mutable {
          FillSubscription(*core, c, from_seq, kj::mv(sink), out);
        });
  }

  kj::Promise<void> ackEvents(AckEventsContext context) override {
    std::string consumer = ToString(context.getParams().getConsumer());
    const uint64_t seq = context.getParams().getSequence();
    return CallAndAnswer<Empty>(
        "ackEvents", context,
        [&consumer, seq](Engine* e, Callback<Empty> cb) {
          e->AckEvents(std::move(consumer), seq, std::move(cb));
        },
        FillEmptyOk);
  }

  kj::Promise<void> deleteConsumer(DeleteConsumerContext context) override {
    std::string consumer = ToString(context.getParams().getConsumer());
    return CallAndAnswer<Empty>("deleteConsumer", context,
                                EngineCall(&Engine::DeleteConsumer, consumer), FillEmptyOk);
  }

  kj::Promise<void> checkpoint(CheckpointContext context) override {
    std::string name = ToString(context.getParams().getName());
    return CallAndAnswer<std::string>(
        "checkpoint", context, EngineCall(&Engine::Checkpoint, name),
        [](const std::string& dir, proto::CheckpointResult::Builder out) {
          out.setOk(AsText(dir));
        });
  }

  kj::Promise<void> stats(StatsContext context) override {
    ServerCore* core = &core_;
    return core_
        .Call<EngineStats>(
            [&](Callback<EngineStats> cb) { core->engine()->GetStats(std::move(cb)); },
            Admission::kAlways)
        .then([context, core](Result<EngineStats>&& r) mutable {
          if (!r.ok()) ThrowStatsError(r.error);
          FillStats(*core, r.value, context.getResults().initStats());
        });
  }

 private:
  // A unary call: `start(engine, callback)` issues the engine method (at once, while the
  // caller's locals live); its answer fills the call's `result`: the `ok` arm by
  // `fill(value, result)`, or the `error` arm (AnswerError: logistics codes throw). Past the
  // core's bounds (`admission`) the call throws OVERLOADED at once, without reaching the engine.
  // `method` (a string literal) names the call in the front end's counts (rpc/call_counts.h).
  template <typename T, typename Context, typename Start, typename Fill>
  kj::Promise<void> CallAndAnswer(const char* method, Context context, Start&& start, Fill fill,
                                  Admission admission = Admission::kBounded) {
    Engine* engine = core_.engine();
    const auto started = CallCounts::SteadyClock::now();
    CallCounts* counts = &core_.counts();
    return core_.Call<T>([&](Callback<T> cb) { start(engine, std::move(cb)); }, admission)
        .then([context, fill = std::move(fill), method, started, counts](Result<T> r) mutable {
          counts->Record(method, r.ok() ? ErrorCode::kOk : r.error.code, started);
          auto out = context.getResults(ResultSize(r.value)).initResult();
          if (!r.ok()) return AnswerError(r.error, out);
          fill(r.value, out);
        });
  }

  // The batch forms: read every request, hand them all to the engine at once (so they share
  // engine batches), then answer item by item (AnswerItems). `read` turns a wire item into a
  // request, `method` takes one request to the engine, `fill` fills an item's `ok` arm (the
  // unary call's fill). The connection's batch items count from here until the call ends
  // (answered or cancelled): its reads pause at kRpcConnectionBatchItemsMax.
  template <typename Context, typename Read, typename Request, typename T, typename Fill>
  kj::Promise<void> Batch(const char* name, Context context, Read read,
                          EngineMethod<Request, T> method, Fill fill) {
    const auto started = CallCounts::SteadyClock::now();
    CallCounts* counts = &core_.counts();
    auto in = context.getParams().getRequests();
    CheckBatch(in.size());
    std::vector<Request> reqs;
    reqs.reserve(in.size());
    for (auto r : in) reqs.push_back(read(r));
    context.releaseParams();
    Engine* engine = core_.engine();
    const size_t items = reqs.size();
    load_->BatchStarted(items);
    return core_
        .CallBatch<T>(
            items,
            [&](size_t i, Callback<T> cb) { (engine->*method)(std::move(reqs[i]), std::move(cb)); })
        .then([context, fill, name, started, counts](std::vector<Result<T>> results) mutable {
          counts->Record(name, ErrorCode::kOk, started);
          AnswerItems(results,
                      context.getResults(ResultWords(0, results.size()))
                          .initResults(static_cast<unsigned>(results.size())),
                      fill);
        })
        .attach(
            kj::defer([load = kj::addRef(*load_), items]() mutable { load->BatchEnded(items); }));
  }

  // getActivityTask's answer. A task for a connection that does not read its replies is not
  // handed out: not Delivered(), so the PollState gives it back to its queue's head.
  static void AnswerPoll(ServerCore& core, ConnectionLoad& load, PollState& poll,
                         const Result<GetActivityTaskReply>& r, GetActivityTaskContext& context) {
    if (r.ok() && !r.value.token.empty() &&
        load.UnwrittenReplyBytes() >= limits::kRpcPollShedReplyBytes) {
      core.log().Log(LogKind::kPollShed,
                     "a connection does not read its replies: its polls get no tasks");
      kj::throwFatalException(KJ_EXCEPTION(
          OVERLOADED, "this connection's replies are not being read; task not handed out"));
    }
    auto out =
        context.getResults(ResultWords(r.value.token.size() + r.value.input.size())).initResult();
    if (!r.ok()) return AnswerError(r.error, out);
    auto ok = out.initOk();
    ok.setTaskToken(AsText(r.value.token));
    ok.setInput(AsText(r.value.input));
    poll.Delivered();
  }

  // stats answers no typed error: a stopping engine is DISCONNECTED, anything else a bug.
  [[noreturn]] static void ThrowStatsError(Error e) {
    if (!IsLogisticsError(e.code) && e.code != ErrorCode::kUnavailable) {
      e.code = ErrorCode::kInternal;
    }
    ThrowLogistics(e);
  }

  static void FillStats(ServerCore& core, const EngineStats& s, proto::Stats::Builder out) {
    FillEngineStats(s, out);
    out.setConnections(core.connections.load(std::memory_order_relaxed));
    out.setSubscriptions(core.subscriptions.load(std::memory_order_relaxed));
    out.setReplyHandoffs(core.mailbox().handoffs());
    out.setRepliesDelivered(core.mailbox().delivered());
  }

  ServerCore& core_;
  kj::Own<ConnectionLoad> load_;
};

// The bootstrap capability of a server with auth secrets (rpc/service.h, NewGateService).
class GateImpl final : public proto::Gate::Server {
 public:
  GateImpl(ServerCore& core, kj::Own<ConnectionLoad> load, const AuthSecrets& secrets)
      : core_(core), load_(kj::mv(load)), secrets_(secrets) {}

  kj::Promise<void> authenticate(AuthenticateContext context) override {
    if (refused_) Refuse("authentication failed", nullptr);  // closing already
    if (++attempts_ > limits::kRpcAuthAttemptsMax) {
      Refuse("authentication failed: more than " + std::to_string(limits::kRpcAuthAttemptsMax) +
                 " authenticate calls on one connection",
             "closing a connection: too many authenticate calls");
    }
    if (!secrets_.Matches(context.getParams().getSecret())) {
      Refuse("authentication failed", "closing a connection: authentication failed (wrong secret)");
    }
    if (api_ == nullptr) api_ = NewTokenWheelService(core_, kj::addRef(*load_));
    context.getResults(kSmallResult).setApi(KJ_ASSERT_NONNULL(api_));
    return kj::READY_NOW;
  }

  // Anything but a Gate call -- an old client calling getInfo on its bootstrap capability, say --
  // is refused with a reason it can show, instead of capnp's "method not implemented".
  DispatchCallResult dispatchCall(
      uint64_t interface_id, uint16_t method_id,
      capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    if (interface_id != capnp::typeId<proto::Gate>()) {
      Refuse(
          "authentication required: this server answers only after Gate.authenticate with a "
          "secret from its auth file (tokenwheel --auth-file)",
          "closing a connection: a call before authenticating");
    }
    return proto::Gate::Server::dispatchCall(interface_id, method_id, context);
  }

 private:
  // Fails the call with `reason`, logs `log_line` (unless null: the connection was refused
  // already) and closes the connection with the same reason kRpcAuthRefusedCloseMs later. Not at
  // once: closing shuts the socket's read side, and the calls a client pipelined behind this one
  // (its first getInfo, its Finish messages) would then meet a reset, which it would report
  // instead of the reason. Meanwhile every call on the Gate fails at once.
  [[noreturn]] void Refuse(const std::string& reason, const char* log_line) {
    kj::Exception e(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::str(reason.c_str()));
    if (!refused_) {
      refused_ = true;
      if (log_line != nullptr) core_.log().Log(LogKind::kAuthFailed, log_line);
      ConnectionLoad* load = load_.get();
      close_ = core_.timer()
                   .afterDelay(limits::kRpcAuthRefusedCloseMs * kj::MILLISECONDS)
                   .then([load, e]() { load->CloseConnection(e); })
                   .eagerlyEvaluate(nullptr);
    }
    kj::throwFatalException(kj::mv(e));
  }

  ServerCore& core_;
  kj::Own<ConnectionLoad> load_;
  const AuthSecrets& secrets_;
  size_t attempts_ = 0;
  bool refused_ = false;  // once refused, the connection is closing: no more comparisons
  kj::Maybe<proto::TokenWheel::Client> api_;  // made by the first authenticate that matches
  kj::Promise<void> close_ = nullptr;         // the close of a refused connection (Refuse)
};

}  // namespace

proto::TokenWheel::Client NewTokenWheelService(ServerCore& core, kj::Own<ConnectionLoad> load) {
  return kj::heap<TokenWheelImpl>(core, kj::mv(load));
}

proto::Gate::Client NewGateService(ServerCore& core, kj::Own<ConnectionLoad> load,
                                   const AuthSecrets& secrets) {
  return kj::heap<GateImpl>(core, kj::mv(load), secrets);
}

}  // namespace tw::rpc
