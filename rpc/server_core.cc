#include "rpc/server_core.h"

#include <kj/debug.h>

#include "engine/limits.h"

namespace tw::rpc {
namespace {

// Poll ids name a wait across every front end of one engine (rpc/bridge.h); this one owns the
// ids with this tag in the top byte (the AWS gateway's is 0x02).
constexpr uint8_t kPollIdTag = 0x01;

}  // namespace

// ---- PollState ----

PollState::PollState(ServerCore& core, uint64_t poll_id,
                     kj::Own<kj::PromiseFulfiller<Result<GetActivityTaskReply>>> fulfiller)
    : core_(core), poll_id_(poll_id), fulfiller_(kj::mv(fulfiller)) {}

PollState::~PollState() {
  core_.ForgetPoll(poll_id_);
  if (!answered_) {
    // Still waiting in the engine: withdraw. Should a task already be on its way, DeliverPoll
    // finds no poll and returns the task.
    core_.engine()->WithdrawPoll(poll_id_);
  } else if (!held_token_.empty()) {
    // Answered with a task that never made it into the results.
    core_.engine()->ReturnTask(std::move(held_token_));
  }
}

void PollState::Answer(Result<GetActivityTaskReply> r) {
  TW_ASSERT(!answered_);
  answered_ = true;
  if (r.ok()) held_token_ = r.value.token;
  fulfiller_->fulfill(kj::mv(r));
}

void PollState::Abort() {
  if (!answered_) fulfiller_->reject(KJ_EXCEPTION(DISCONNECTED, "server shutting down"));
}

// ---- ServerCore ----

ServerCore::ServerCore(Engine* engine, const ServerOptions& options, kj::Timer& timer,
                       std::shared_ptr<Mailbox> mailbox, std::shared_ptr<CallCounts> counts)
    : options_(options),
      timer_(timer),
      bridge_(
          engine, std::move(mailbox),
          [this](std::function<void()> fn) {
            uncork_ = kj::evalLast(kj::mv(fn)).eagerlyEvaluate(nullptr);
          },
          options.calls_in_flight_max, limits::kRpcPayloadCallsInFlightMax, kPollIdTag),
      counts_(std::move(counts)),
      log_(options),
      reply_backlog_(limits::kRpcReplyBytesGlobalHigh) {
  auto paf = kj::newPromiseAndFulfiller<void>();
  events_fork_ = paf.promise.fork();
  events_fulfiller_ = kj::mv(paf.fulfiller);
}

ServerCore::~ServerCore() {
  // Every call promise (and so every slot and poll) belongs to a connection, and the
  // connections (and their streams) are gone by now.
  TW_ASSERT(calls_.empty());
  TW_ASSERT(polls_.empty());
  TW_ASSERT(reply_backlog_.bytes() == 0);
}

kj::Promise<Result<GetActivityTaskReply>> ServerCore::Poll(GetActivityTaskRequest req,
                                                           uint32_t wait_s,
                                                           kj::Own<PollState>* state_out) {
  const uint64_t poll_id = bridge_.NextPollId();
  auto paf = kj::newPromiseAndFulfiller<Result<GetActivityTaskReply>>();
  auto state = kj::heap<PollState>(*this, poll_id, kj::mv(paf.fulfiller));
  polls_.emplace(poll_id, state.get());
  *state_out = kj::mv(state);
  bridge_.Poll(std::move(req), poll_id, [this, poll_id](Result<GetActivityTaskReply> r) {
    return DeliverPoll(poll_id, std::move(r));
  });
  // When the wait runs out, withdraw and keep waiting for the engine's answer: empty, or a task
  // that raced with the withdrawal (which this caller then gets, rather than losing it).
  kj::Promise<Result<GetActivityTaskReply>> timeout =
      timer_.afterDelay(wait_s * kj::SECONDS)
          .then([this, poll_id]() -> kj::Promise<Result<GetActivityTaskReply>> {
            bridge_.Withdraw(poll_id);
            return kj::NEVER_DONE;
          });
  return paf.promise.exclusiveJoin(kj::mv(timeout));
}

void ServerCore::OnEvents() {
  events_fulfiller_->fulfill();
  auto paf = kj::newPromiseAndFulfiller<void>();
  events_fork_ = paf.promise.fork();
  events_fulfiller_ = kj::mv(paf.fulfiller);
}

void ServerCore::FailAll() {
  auto calls = std::move(calls_);
  calls_.clear();
  for (auto& [id, slot] : calls) slot->Reject(KJ_EXCEPTION(DISCONNECTED, "server shutting down"));
  auto polls = polls_;  // Abort does not touch polls_, but stay safe against it
  for (auto& [id, poll] : polls) poll->Abort();
}

bool ServerCore::Idle() const {
  return calls_.empty() && polls_.empty() && subscriptions.load(std::memory_order_relaxed) == 0 &&
         connections.load(std::memory_order_relaxed) == 0;
}

void ServerCore::RefuseOverloaded() {
  counts_->Overloaded();
  log_.Log(LogKind::kOverloaded,
           "overloaded: refusing single calls at " + std::to_string(bridge_.calls_in_flight()) +
               " engine calls in flight (" + std::to_string(bridge_.payload_calls_in_flight()) +
               " describeTask / listActivities)");
  kj::throwFatalException(
      KJ_EXCEPTION(OVERLOADED, "server overloaded: too many calls in flight; retry later",
                   bridge_.calls_in_flight(), bridge_.payload_calls_in_flight()));
}

bool ServerCore::DeliverPoll(uint64_t poll_id, Result<GetActivityTaskReply> r) {
  auto it = polls_.find(poll_id);
  if (it == polls_.end()) return false;
  PollState* state = it->second;
  polls_.erase(it);
  state->Answer(std::move(r));
  return true;
}

}  // namespace tw::rpc
