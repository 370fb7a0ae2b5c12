#include "rpc/bridge.h"

#include <algorithm>

#include "engine/assert.h"

namespace tw::rpc {

Bridge::Bridge(Engine* engine, std::shared_ptr<Mailbox> mailbox, AtBurstEnd at_burst_end,
               size_t calls_max, size_t payload_calls_max, uint8_t poll_id_tag)
    : engine_(engine),
      mailbox_(std::move(mailbox)),
      at_burst_end_(std::move(at_burst_end)),
      calls_max_(calls_max),
      payload_calls_max_(payload_calls_max),
      poll_id_tag_(uint64_t{poll_id_tag} << 56),
      alive_(std::make_shared<char>()) {
  TW_ASSERT(engine_ != nullptr);
  TW_ASSERT(poll_id_tag != 0);
}

Bridge::~Bridge() { Uncork(); }  // never leave the loop thread corked past the bridge

void Bridge::CorkUntilBurstEnds() {
  if (corked_) return;
  corked_ = true;
  engine_->Cork();
  at_burst_end_([this, alive = std::weak_ptr<char>(alive_)]() {
    if (alive.lock()) Uncork();
  });
}

void Bridge::Uncork() {
  if (!corked_) return;
  corked_ = false;
  engine_->Uncork();
}

uint64_t Bridge::NextPollId() {
  const uint64_t id = poll_id_tag_ | next_poll_seq_++;
  TW_ASSERT((next_poll_seq_ & (uint64_t{0xff} << 56)) == 0);
  return id;
}

void Bridge::Poll(GetActivityTaskRequest req, uint64_t poll_id, PollDeliver deliver) {
  CorkUntilBurstEnds();
  engine_->GetActivityTask(
      std::move(req), poll_id,
      [this, mailbox = mailbox_, deliver = std::move(deliver)](Result<GetActivityTaskReply> r) {
        // Engine thread: only post. A closed mailbox drops the answer: the loop is gone, and
        // so is every caller; the engine is stopping too, so the task's fate is the restart's.
        mailbox->Post([this, deliver = std::move(deliver), r = std::move(r)]() mutable {
          std::string token = r.ok() ? r.value.token : std::string();
          if (!deliver(std::move(r)) && !token.empty()) ReturnTask(std::move(token));
        });
      });
}

void Bridge::Withdraw(uint64_t poll_id) { engine_->WithdrawPoll(poll_id); }

void Bridge::ReturnTask(std::string token) { engine_->ReturnTask(std::move(token)); }

namespace {

constexpr size_t kEventsPerChunk = 64;

size_t PayloadBytes(const OutcomeEvent& e) {
  return e.output.size() + e.error.size() + e.cause.size() + e.correlation.size() + e.token.size() +
         e.activity_arn.size() + 64;
}

}  // namespace

Result<std::vector<OutcomeEvent>> ReadEventRun(Engine* engine, uint64_t from, size_t max_events,
                                               size_t max_bytes, bool* trimmed) {
  using R = Result<std::vector<OutcomeEvent>>;
  // Before the read: an event published during it must not make an empty read look trimmed.
  const uint64_t last_before = engine->LastEventSeq();
  std::vector<OutcomeEvent> events;
  size_t bytes = 0;
  while (events.size() < max_events && bytes < max_bytes) {
    const uint64_t next = from + events.size();
    const size_t want = std::min(kEventsPerChunk, max_events - events.size());
    R chunk = engine->ReadEvents(next, want);
    if (!chunk.ok()) return chunk;
    size_t got = 0;
    for (OutcomeEvent& e : chunk.value) {
      if (e.seq != next + got || bytes >= max_bytes) break;  // a gap ends the run
      bytes += PayloadBytes(e);
      events.push_back(std::move(e));
      ++got;
    }
    if (got < want) break;
  }
  *trimmed = events.empty() && last_before >= from;
  return R::Ok(std::move(events));
}

}  // namespace tw::rpc
