// Every bound in tokenwheel, named once. AWS-derived limits come from SEMANTICS.md.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tw::limits {

// ---- AWS API limits (SEMANTICS.md) ----
inline constexpr size_t kTaskTokenCharsMax = 2048;
inline constexpr size_t kPayloadBytesMax = 262'144;  // task input and success output, UTF-8
inline constexpr size_t kErrorCharsMax = 256;
inline constexpr size_t kCauseCharsMax = 32'768;
inline constexpr size_t kActivityNameCharsMax = 80;
inline constexpr size_t kWorkerNameCharsMax = 80;
inline constexpr size_t kArnCharsMax = 256;
inline constexpr uint32_t kListActivitiesMax = 1000;
inline constexpr uint32_t kListActivitiesDefault = 100;
inline constexpr uint32_t kPollersPerActivityDefault = 1000;
inline constexpr size_t kRequestBytesMax = 1 << 20;  // one request, any front end

// ---- tokenwheel's own bounds ----
inline constexpr size_t kActivitiesMax = 10'000;  // ActivityLimitExceeded past this
inline constexpr size_t kIdempotencyKeyBytesMax = 256;
inline constexpr size_t kCorrelationBytesMax = 4096;
inline constexpr size_t kConsumerNameBytesMax = 80;
inline constexpr size_t kConsumersMax = 64;
inline constexpr uint64_t kTimeoutSecondsMax = 366ull * 24 * 3600;  // one (leap) year
inline constexpr size_t kLiveTasksMax = 20'000'000;
inline constexpr size_t kTokenKeyFileBytesMax = 64 * 1024;  // 256 key ids x ~72-byte lines fits

// Engine loop.
inline constexpr size_t kCommandQueueMax = 65'536;  // full -> OVERLOADED
inline constexpr size_t kBatchCommandsMax = 4096;   // commands drained per engine batch
// Engine::Cork: a corked thread wakes the engine thread at least every this many commands, so
// a long burst of submissions does not leave it idle until the burst ends.
inline constexpr size_t kCorkedCommandsPerWake = 64;
// ReplyBurst (engine/reply_burst.h): distinct sinks one burst defers wake-ups for (past this, a
// sink wakes its consumer at once), and replies a sink holds back from a sleeping consumer
// before it wakes it anyway, so a long burst still lets the consumer start.
inline constexpr size_t kBurstSinksMax = 8;
inline constexpr size_t kBurstRepliesPerWake = 512;
// Sealed batches handed to the writer thread and not yet durable: one being written, one
// waiting, so the writer starts the next write the moment a sync returns.
inline constexpr size_t kBatchesInFlightMax = 2;
inline constexpr size_t kExpiriesPerBatchMax = 16'384;  // wheel expiries handled per batch
// Live tasks from which the engine thread prefetches for the commands it is about to apply
// (EngineOptions::prefetch_min_live_tasks). Below it, the task index, tasks and timers fit the
// caches and the hints would only cost instructions.
inline constexpr size_t kPrefetchMinLiveTasksDefault = 65'536;
inline constexpr size_t kPollWaitersMax = 100'000;  // all activities together
inline constexpr size_t kEventsPerReadMax = 4096;
inline constexpr size_t kRetiredPerBatchMax = 8192;  // retention deletes per batch
// storage: trimmed events are range-deleted in runs of at least this many (one range tombstone
// per run, not per trim: memtable reads re-fragment every range tombstone after each new one).
inline constexpr uint64_t kEventsPerRangeDeleteMin = 1024;
inline constexpr int64_t kRetentionMsDefault = 24ll * 3600 * 1000;

// Timing wheel.
inline constexpr uint32_t kWheelTickMsDefault = 1;
inline constexpr uint32_t kWheelSlotsPerLevel = 64;  // one 64-bit occupancy word per level
inline constexpr uint32_t kWheelLevels =
    6;  // 64^6 ticks: ~2.2 years at 1 ms; beyond: overflow list
inline constexpr uint32_t kWheelPoolChunkEntries = 65'536;
inline constexpr size_t kWheelTimersMax = kLiveTasksMax;

// Cap'n Proto front end (rpc/).
inline constexpr size_t kRpcBatchItemsMax = 1000;       // items in one batch call
inline constexpr size_t kRpcConnectionsMax = 4096;      // past this, new connections are closed
inline constexpr size_t kRpcFlowLimitBytes = 16 << 20;  // unanswered call bytes per connection
inline constexpr size_t kRpcEventChunkBytesMax = 512 << 10;  // one EventSink.events message
inline constexpr size_t kRpcClientReadBytesMax = 512 << 20;  // a reply a client accepts
inline constexpr size_t kRpcSubscriptionsMax = 1024;         // live subscriptions, all connections
inline constexpr uint32_t kPollSecondsDefault = 60;          // long-poll wait (--max-poll-seconds)
inline constexpr uint32_t kPollSecondsMax = 3600;
inline constexpr int64_t kRpcShutdownFlushMs = 200;  // replies flush time at shutdown

static_assert(kBatchCommandsMax <= kCommandQueueMax);
static_assert(kListActivitiesDefault <= kListActivitiesMax);
static_assert(kPayloadBytesMax < kRequestBytesMax);
static_assert(kCauseCharsMax * 4 + kPayloadBytesMax < kRequestBytesMax);
// One event (output or error + cause, correlation, token, ARN) fits one EventSink.events message.
static_assert(kPayloadBytesMax + (kErrorCharsMax + kCauseCharsMax) * 4 + kCorrelationBytesMax +
                  kTaskTokenCharsMax + kArnCharsMax + 1024 <=
              kRpcEventChunkBytesMax);
// A batch reply carrying a recorded outcome per item fits what a client reads.
static_assert(kRpcBatchItemsMax *
                  (kPayloadBytesMax + (kErrorCharsMax + kCauseCharsMax) * 4 + 1024) <=
              kRpcClientReadBytesMax);
static_assert(kPollSecondsDefault <= kPollSecondsMax);
// The wheel must cover the longest timeout at the default tick.
static_assert(static_cast<double>(kWheelSlotsPerLevel) * kWheelSlotsPerLevel * kWheelSlotsPerLevel *
                  kWheelSlotsPerLevel * kWheelSlotsPerLevel * kWheelSlotsPerLevel >
              static_cast<double>(kTimeoutSecondsMax) * 1000 * 2);

}  // namespace tw::limits
