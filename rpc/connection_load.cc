#include "rpc/connection_load.h"

#include "engine/assert.h"

namespace tw::rpc {

kj::Promise<void> ConnectionLoad::WhenRoom() {
  if (!Full()) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  waiter_ = kj::mv(paf.fulfiller);  // one read at a time
  return paf.promise.then([this]() { return WhenRoom(); });
}

void ConnectionLoad::Asked(uint32_t id, bool payload) {
  ++calls_;
  ++questions_;
  if (payload) payload_ids_.add(id);
}

void ConnectionLoad::Answered(uint32_t id) {
  // capnp sends exactly one Return per question it received; stay safe should it not.
  if (calls_ > 0) --calls_;
  for (size_t i = 0; i < payload_ids_.size(); ++i) {
    if (payload_ids_[i] == id) {
      payload_ids_[i] = payload_ids_.back();
      payload_ids_.removeLast();
      break;
    }
  }
  Wake();
}

void ConnectionLoad::PollEnded() {
  TW_ASSERT(polls_ > 0);
  --polls_;  // its Return, which takes it out of calls_, follows (and wakes)
}

void ConnectionLoad::BatchEnded(size_t items) {
  TW_ASSERT(items <= batch_items_);
  batch_items_ -= items;
  Wake();
}

void ConnectionLoad::Wake() {
  KJ_IF_MAYBE (waiter, waiter_) {
    (*waiter)->fulfill();
    waiter_ = nullptr;
  }
}

}  // namespace tw::rpc
