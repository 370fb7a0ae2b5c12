#include "engine/reply_burst.h"

#include <array>
#include <memory>
#include <utility>

#include "engine/assert.h"
#include "engine/limits.h"

namespace tw {
namespace {

struct Deferred {
  ReplyBurst::Sink* sink = nullptr;
  std::shared_ptr<void> keep_alive;
};

struct BurstState {
  size_t depth = 0;
  size_t sinks = 0;
  std::array<Deferred, limits::kBurstSinksMax> sink;
};
thread_local BurstState t_burst;

}  // namespace

ReplyBurst::Scope::Scope() { ++t_burst.depth; }

ReplyBurst::Scope::~Scope() {
  TW_ASSERT(t_burst.depth > 0);
  if (--t_burst.depth != 0) return;
  // Taken out first: a flush runs outside the burst (its own posts wake at once), and one that
  // opened a burst of its own would start from an empty list.
  std::array<Deferred, limits::kBurstSinksMax> sinks;
  const size_t n = t_burst.sinks;
  for (size_t i = 0; i < n; ++i) sinks[i] = std::move(t_burst.sink[i]);
  t_burst.sinks = 0;
  for (size_t i = 0; i < n; ++i) sinks[i].sink->FlushBurst();
  // The keep-alives go last, with `sinks`: a sink may be destroyed here, after its flush.
}

bool ReplyBurst::Active() { return t_burst.depth > 0; }

bool ReplyBurst::Defer(Sink* sink) {
  if (t_burst.depth == 0) return false;
  for (size_t i = 0; i < t_burst.sinks; ++i) {
    if (t_burst.sink[i].sink == sink) return true;
  }
  if (t_burst.sinks == t_burst.sink.size()) return false;
  t_burst.sink[t_burst.sinks++] = Deferred{sink, sink->KeepAliveForBurst()};
  return true;
}

bool ReplyBurst::DeferWake(Sink* sink, size_t held) {
  return held <= limits::kBurstRepliesPerWake && Defer(sink);
}

}  // namespace tw
