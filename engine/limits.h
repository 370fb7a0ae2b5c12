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
// A front end reads events for one subscriber up to about this many payload bytes at a time
// (rpc/bridge.h, ReadEventRun): a consumer far behind costs a bounded read.
inline constexpr size_t kEventsReadBytesMax = 4 << 20;
inline constexpr size_t kRetiredPerBatchMax = 8192;  // retention deletes per batch
// storage: trimmed events are range-deleted in runs of at least this many (one range tombstone
// per run, not per trim: memtable reads re-fragment every range tombstone after each new one).
inline constexpr uint64_t kEventsPerRangeDeleteMin = 1024;
inline constexpr int64_t kRetentionMsDefault = 24ll * 3600 * 1000;
// After a storage failure the engine reopens its store this long after the failure and then
// this often until it works (EngineOptions::storage_retry_ms).
inline constexpr int64_t kStorageRetryMsDefault = 1000;
// A checkpoint's name (Engine::Checkpoint): its subdirectory of --backup-dir, [A-Za-z0-9._-].
inline constexpr size_t kCheckpointNameCharsMax = 128;

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
// Long-poll wait (--max-poll-seconds). botocore and the AWS CLI time out a read after 60 s, and
// a poll answered at 60 s makes them raise and retry: answer empty a few seconds before.
inline constexpr uint32_t kPollSecondsDefault = 55;
inline constexpr uint32_t kPollSecondsMax = 3600;
inline constexpr int64_t kRpcShutdownFlushMs = 200;  // replies flush time at shutdown
// What one connection may hold the server to (rpc/server.h, "Limits"). A connection at one of
// the "reading pauses" bounds is not read until it is back under it (backpressure: its peer's
// writes wait in the sockets); only the questions bound closes the connection.
inline constexpr size_t kRpcConnectionCallsMax = 1024;  // calls not yet answered: reading pauses
// Of them, describeTask and listActivities, whose answers carry up to a task's payloads (an
// answer is in memory from the engine's reply on, whether or not the peer reads it).
inline constexpr size_t kRpcConnectionPayloadCallsMax = 16;
inline constexpr size_t kRpcConnectionBatchItemsMax = 16'384;  // items of unanswered batch calls
// Long polls waiting on one connection: past it a poll is answered OVERLOADED at once. They do
// not count against kRpcConnectionCallsMax: a worker's heartbeats must not wait behind its polls.
inline constexpr size_t kRpcConnectionPollsMax = 1000;
// Questions (Bootstrap and Call messages) the peer has not yet finished (capnp's answer table):
// past this the connection is closed, with the reason sent to the peer as an Abort.
inline constexpr size_t kRpcConnectionQuestionsMax = 8192;
// Reply bytes built and not yet written to the socket: reading pauses at it.
inline constexpr size_t kRpcConnectionReplyBytesHigh = 1 << 20;
// Reply bytes not yet written, all connections together: at it, every connection holding at
// least kRpcConnectionReplyBytesLow unwritten bytes pauses reading too.
inline constexpr size_t kRpcReplyBytesGlobalHigh = 64 << 20;
inline constexpr size_t kRpcConnectionReplyBytesLow = 64 << 10;
// A long poll answered with a task while its connection holds this many unwritten reply bytes
// does not get the task: it goes back to the head of its queue and the poll answers OVERLOADED.
inline constexpr size_t kRpcPollShedReplyBytes = 4 << 20;
// Single engine calls waiting for the engine, all connections together
// (ServerOptions::calls_in_flight_max): past it a single call is answered OVERLOADED at once,
// without reaching the engine. Batch items and long polls are bounded by the bounds above and
// by the engine (kCommandQueueMax, kPollWaitersMax); stats is never refused.
inline constexpr size_t kRpcCallsInFlightMax = 4096;
inline constexpr size_t kRpcPayloadCallsInFlightMax = 256;  // of them describeTask/listActivities
// A connection that has sent no call this long after it was accepted is closed
// (ServerOptions::handshake_timeout_ms): idle sockets must not hold connection slots forever.
inline constexpr int64_t kRpcHandshakeTimeoutMsDefault = 10'000;
// accept() failing (EMFILE, ENFILE: out of descriptors) is retried after a backoff that doubles
// from the min to the max; the first accept that works resets it.
inline constexpr int64_t kRpcAcceptBackoffMsMin = 10;
inline constexpr int64_t kRpcAcceptBackoffMsMax = 1000;
// A connection refused at connections_max gets an Abort message saying why; at most this many
// refusals at a time (more are closed without one), each given at most kRpcRefusalLingerMs.
inline constexpr size_t kRpcRefusalsInProgressMax = 64;
inline constexpr int64_t kRpcRefusalLingerMs = 1000;
// A closed connection's last bytes (the Abort with its reason) get this long to leave.
inline constexpr int64_t kRpcCloseFlushMs = 1000;
// The server's log: at most one line per kind of event per interval
// (ServerOptions::log_interval_ms); the next line of that kind counts those left out.
inline constexpr int64_t kRpcLogIntervalMsDefault = 10'000;
// Authentication (ServerOptions::auth_secrets, rpc/auth.h). A secret is kRpcAuthSecretBytesMin
// to kRpcAuthSecretBytesMax bytes; an auth file lists at most kRpcAuthSecretsMax of them (two
// during a rotation). A connection may call Gate.authenticate at most kRpcAuthAttemptsMax times;
// its first failure, or a call past that, closes it, so a guess costs one connection.
inline constexpr size_t kRpcAuthSecretBytesMin = 16;
inline constexpr size_t kRpcAuthSecretBytesMax = 1024;
inline constexpr size_t kRpcAuthSecretsMax = 16;
inline constexpr size_t kRpcAuthAttemptsMax = 4;
// A refused connection is closed this long after the refusal, so that the client reads the reason
// before the server shuts its socket (rpc/service.h, NewGateService).
inline constexpr int64_t kRpcAuthRefusedCloseMs = 500;
inline constexpr size_t kRpcAuthFileBytesMax = 64 << 10;  // the auth file, read whole
// A PEM file (certificate chain, private key, CA bundle) read for TLS.
inline constexpr size_t kRpcTlsPemBytesMax = 1 << 20;

// tokenwheeld's --log-file: spdlog's rotating file sink starts a new file past this size and
// keeps this many older ones (LOG.1 .. LOG.N), so the log's disk use is bounded.
inline constexpr size_t kLogFileBytesMax = 64u << 20;
inline constexpr size_t kLogFilesKept = 4;
// A connection whose every call is unanswered must not be closed for its
// questions; one batch call always fits; the bounds nest.
static_assert(kRpcConnectionPayloadCallsMax <= kRpcConnectionCallsMax);
static_assert(kRpcConnectionCallsMax + kRpcConnectionPollsMax < kRpcConnectionQuestionsMax);
static_assert(kRpcBatchItemsMax <= kRpcConnectionBatchItemsMax);
static_assert(kRpcConnectionReplyBytesLow < kRpcConnectionReplyBytesHigh);
static_assert(kRpcConnectionReplyBytesHigh < kRpcPollShedReplyBytes);
static_assert(kRpcConnectionReplyBytesHigh <= kRpcReplyBytesGlobalHigh);
static_assert(kRpcPayloadCallsInFlightMax <= kRpcCallsInFlightMax);
static_assert(kRpcCallsInFlightMax <= kCommandQueueMax);
static_assert(kRpcAcceptBackoffMsMin <= kRpcAcceptBackoffMsMax);
static_assert(kRpcAuthSecretBytesMin <= kRpcAuthSecretBytesMax);
static_assert(kRpcAuthSecretsMax * (kRpcAuthSecretBytesMax + 1) <= kRpcAuthFileBytesMax);

// AWS JSON 1.0 gateway (rpc/aws/). A request body is at most kRequestBytesMax (413 past it).
inline constexpr size_t kAwsHeaderBytesMax = 16 << 10;       // request line + headers (431)
inline constexpr size_t kAwsConnectionsMax = 16'384;         // past it: 503, closed
inline constexpr size_t kAwsCallsInFlightMax = 8192;         // past it: ThrottlingException
inline constexpr size_t kAwsPayloadCallsInFlightMax = 256;   // of them DescribeTask, ListActivities
inline constexpr int64_t kAwsIdleTimeoutMsDefault = 60'000;  // keep-alive idle, unread answer
inline constexpr int64_t kAwsRequestTimeoutMsDefault = 10'000;  // first byte to whole request
inline constexpr int64_t kAwsAcceptBackoffMsMin = 10;           // EMFILE / ENFILE back-off
inline constexpr int64_t kAwsAcceptBackoffMsMax = 1000;
inline constexpr int64_t kAwsLogIntervalMs = 10'000;  // one line per kind of event
// Request bodies being read, all connections: a body that would pass it gets a 503
// ThrottlingException (its connection closes).
inline constexpr size_t kAwsBodyBytesInFlightMax = 64 << 20;
// Answers not yet written, all connections: past it no connection starts reading a request.
inline constexpr size_t kAwsReplyBytesGlobalHigh = 64 << 20;
// A GetOutcomes answer carries events up to about this many bytes (at least one event).
inline constexpr size_t kAwsOutcomesBytesMax = 1 << 20;
// Closing after an error answer: how long the client's remaining input is read and dropped.
inline constexpr int64_t kAwsCloseDrainMs = 1000;
// Connections refused past the cap that are still being answered and drained; past it a new
// one is closed without an answer.
inline constexpr size_t kAwsRefusalsInProgressMax = 64;
// The credentials file (--aws-credentials): ~500 keys of ~120 bytes.
inline constexpr size_t kAwsCredentialsFileBytesMax = 64 << 10;
inline constexpr size_t kAwsAccessKeyIdCharsMax = 128;  // AWS's own maximum
inline constexpr size_t kAwsSecretKeyCharsMax = 256;    // AWS's are 40
// The status page (GET /, rpc/aws/status_page.h) polls GET /status.json every
// kStatusPagePollMs and its chart keeps the last kStatusPageHistorySamples samples, in the
// browser (10 minutes): the gateway keeps no history.
inline constexpr int64_t kStatusPagePollMs = 1000;
inline constexpr size_t kStatusPageHistorySamples = 600;
static_assert(kAwsCallsInFlightMax <= kCommandQueueMax);
static_assert(kAwsPayloadCallsInFlightMax <= kAwsCallsInFlightMax);
static_assert(kRequestBytesMax <= kAwsBodyBytesInFlightMax);
static_assert(kAwsAcceptBackoffMsMin <= kAwsAcceptBackoffMsMax);
static_assert(kStatusPagePollMs >= 250);  // one status call per poll: a light load
// Every connection may hold a long poll: the engine must take that many waiting polls.
static_assert(kAwsConnectionsMax <= kPollWaitersMax);

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
