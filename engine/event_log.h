// EventLog: the outcome stream's bookkeeping on the engine thread. Every terminal transition
// appends one event with the next sequence number (gapless, from 1); named consumers ack what
// they have read, and the log trims below the slowest of them (nothing is trimmed while no
// consumer is registered). The events themselves live in the store; this holds the counters,
// the consumers' cursors and the durable range readers on other threads may read.
//   next_seq_ - 1          the last event appended (the open batch's)
//   durable_last_          the last event of the newest sealed batch
//   published_last_        the last event of the newest batch written (any thread)
// Thread: the engine thread, except the published range (any thread).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/store.h"

namespace tw {

class EventLog {
 public:
  // From the store's counters and cursors, once, before anything is appended.
  void Recover(const StoreMeta& meta);

  // Gives `ev` the next sequence number and adds it to the batch.
  void Append(EventRecord* ev, WriteBatch* batch);
  uint64_t next_seq() const { return next_seq_; }

  // The consumer (registered at the current end of the log if new). Errors: too many.
  Result<ConsumerInfo> Register(const std::string& name, WriteBatch* batch);
  void Delete(const std::string& name, WriteBatch* batch);  // unknown: nothing to do
  // Moves the consumer's cursor forward (never back). Errors: unknown consumer, an ack past
  // the last durable event.
  Result<Empty> Ack(const std::string& name, uint64_t seq, WriteBatch* batch);

  // Sealing a batch: the range it makes durable once written.
  struct Range {
    uint64_t first = 1;
    uint64_t last = 0;
    bool grew = false;  // the batch appended events
  };
  Range Seal();
  // The batch of `r` is written: readers may see its events. Thread-safe readers below.
  void Publish(const Range& r);
  uint64_t published_last() const { return published_last_.load(std::memory_order_acquire); }
  uint64_t published_first() const { return published_first_.load(std::memory_order_acquire); }

  uint64_t durable_last() const { return durable_last_; }
  // The events every consumer has acked trail the log by this many.
  uint64_t not_acked() const;
  std::vector<ConsumerInfo> consumers() const;

  // Invariants (CheckInvariants asserts each):
  //  E1. 1 <= first_seq_ <= next_seq_, and durable_last_ < next_seq_.
  //  E2. No consumer acked past durable_last_, and none below first_seq_ - 1: the log keeps
  //      every event a consumer has not acked.
  //  E3. published_first_ <= published_last_ + 1, and published_last_ <= durable_last_.
  void CheckInvariants() const;

 private:
  // Trims below the slowest consumer's cursor.
  void MaybeTrim(WriteBatch* batch);

  uint64_t next_seq_ = 1;
  uint64_t first_seq_ = 1;
  uint64_t durable_last_ = 0;
  std::map<std::string, uint64_t> consumers_;  // name -> acked seq
  std::atomic<uint64_t> published_last_{0};
  std::atomic<uint64_t> published_first_{1};
};

}  // namespace tw
