#include "engine/event_log.h"

#include <algorithm>

#include "engine/assert.h"
#include "engine/errors.h"
#include "engine/limits.h"

namespace tw {

void EventLog::Recover(const StoreMeta& meta) {
  TW_ASSERT(meta.first_event_seq >= 1);
  TW_ASSERT(meta.first_event_seq <= meta.next_event_seq);
  next_seq_ = meta.next_event_seq;
  first_seq_ = meta.first_event_seq;
  durable_last_ = next_seq_ - 1;
  published_first_.store(first_seq_, std::memory_order_release);
  published_last_.store(durable_last_, std::memory_order_release);
  consumers_.clear();
  for (const auto& [name, seq] : meta.consumers) consumers_[name] = seq;
}

void EventLog::Append(EventRecord* ev, WriteBatch* batch) {
  TW_ASSERT(IsTerminal(ev->state));
  ev->seq = next_seq_++;
  batch->AppendEvent(*ev);
}

Result<ConsumerInfo> EventLog::Register(const std::string& name, WriteBatch* batch) {
  auto it = consumers_.find(name);
  if (it == consumers_.end()) {
    if (consumers_.size() >= limits::kConsumersMax) {
      return Result<ConsumerInfo>::Fail(TooManyConsumersError(limits::kConsumersMax));
    }
    it = consumers_.emplace(name, next_seq_ - 1).first;
    batch->PutConsumer(name, it->second);
  }
  return Result<ConsumerInfo>::Ok(ConsumerInfo{it->first, it->second});
}

void EventLog::Delete(const std::string& name, WriteBatch* batch) {
  if (consumers_.erase(name) == 0) return;
  batch->DeleteConsumer(name);
  MaybeTrim(batch);
}

Result<Empty> EventLog::Ack(const std::string& name, uint64_t seq, WriteBatch* batch) {
  auto it = consumers_.find(name);
  if (it == consumers_.end()) return Result<Empty>::Fail(UnknownConsumerError(name));
  if (seq > durable_last_) {
    return Result<Empty>::Fail(AckBeyondLastEventError(seq, durable_last_));
  }
  if (seq > it->second) {
    it->second = seq;
    batch->PutConsumer(name, seq);
    MaybeTrim(batch);
  }
  return Result<Empty>::Ok({});
}

void EventLog::MaybeTrim(WriteBatch* batch) {
  if (consumers_.empty()) return;  // nobody registered: keep everything
  uint64_t slowest = UINT64_MAX;
  for (const auto& [name, seq] : consumers_) slowest = std::min(slowest, seq);
  if (slowest + 1 > first_seq_) {
    first_seq_ = slowest + 1;
    batch->TrimEventsBelow(first_seq_);
  }
}

EventLog::Range EventLog::Seal() {
  Range r;
  r.first = first_seq_;
  r.last = next_seq_ - 1;
  r.grew = r.last != durable_last_;
  durable_last_ = r.last;  // as of this batch, once it is written
  return r;
}

void EventLog::Publish(const Range& r) {
  TW_ASSERT(r.first <= r.last + 1);
  published_first_.store(r.first, std::memory_order_release);
  published_last_.store(r.last, std::memory_order_release);
}

uint64_t EventLog::not_acked() const {
  uint64_t slowest = durable_last_;
  for (const auto& [name, seq] : consumers_) slowest = std::min(slowest, seq);
  return durable_last_ - slowest;
}

std::vector<ConsumerInfo> EventLog::consumers() const {
  std::vector<ConsumerInfo> out;
  out.reserve(consumers_.size());
  for (const auto& [name, seq] : consumers_) out.push_back(ConsumerInfo{name, seq});
  return out;
}

void EventLog::CheckInvariants() const {
  TW_ASSERT(first_seq_ >= 1);  // E1
  TW_ASSERT(first_seq_ <= next_seq_);
  TW_ASSERT(durable_last_ < next_seq_);
  for (const auto& [name, seq] : consumers_) {  // E2
    TW_ASSERT_MSG(seq <= durable_last_, name.c_str());
    TW_ASSERT_MSG(seq + 1 >= first_seq_, name.c_str());
  }
  const uint64_t first = published_first(), last = published_last();  // E3
  TW_ASSERT(first <= last + 1);
  TW_ASSERT(last <= durable_last_);
}

}  // namespace tw
