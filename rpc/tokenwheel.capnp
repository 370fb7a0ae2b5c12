# tokenwheel native API (Cap'n Proto). This schema is the API reference.
#
# Version 1. Compatibility rules: fields and methods are only ever added (new ordinals), never
# renumbered, retyped or removed; enum values are only appended. A client built against an older
# version keeps working; a new field a server does not know reads as its default. `apiVersion`
# below and `getInfo()` let a client check what it talks to.
#
# Semantics are those of docs/SEMANTICS.md (the AWS Step Functions task-token / activity API), with
# the "Better than AWS" extensions. Conventions used throughout:
#  - Expected outcomes are VALUES, not exceptions. Every operation returns a result struct whose
#    union is either `ok` (the answer) or `error` (an `Error`: the AWS error code, the exact AWS
#    message text, and for refused completions the native "why not" detail).
#  - Exceptions (capnp/KJ exception types) are reserved for logistics and bugs:
#      OVERLOADED    the engine's command queue is full; back off and retry
#                    (AWS: ThrottlingException).
#      DISCONNECTED  the connection dropped. Whether the call took effect is unknown; retry
#                    (completions are idempotent, issueTask is idempotent with an
#                    idempotencyKey).
#      FAILED        a bug, or a malformed request (wrong types, batch too long, ...).
#  - Times are milliseconds since the Unix epoch (Int64); 0 means "not set".
#  - Durations are whole seconds (UInt32); 0 means "none".
#  - JSON payloads (input, output) are Text holding UTF-8 JSON, at most 262,144 bytes.
#  - An optional Text field is optional by pointer presence: a null (unset) pointer means
#    "absent", which is different from an empty string.
#  - One request message is at most 1 MiB (traversal limit on the server). Larger requests are
#    refused (the call fails, or the connection is dropped when the frame itself is too large).
#  - Batch methods take at most `batchItemsMax` items (see getInfo) and answer one result per
#    item, in order. Items are independent: each one is applied, durably, or refused on its own.

@0xd0ca0ce30d40b94a;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("tw::proto");

const apiVersion :UInt32 = 1;

enum TaskState {
  unspecified @0;
  scheduled @1;   # activity task waiting in its activity's queue
  started @2;     # handed to a worker (or a callback task, born started)
  succeeded @3;
  failed @4;
  timedOut @5;
  cancelled @6;
}

# Which clock ended a task.
enum TimeoutKind {
  none @0;
  heartbeat @1;        # no heartbeat within heartbeatSeconds
  overall @2;          # timeoutSeconds elapsed since the task started
  scheduleToStart @3;  # queued longer than scheduleToStartSeconds
}

# The error codes of SEMANTICS.md. Each maps to the AWS code in the comment.
enum ErrorCode {
  ok @0;
  validation @1;                   # ValidationException
  invalidToken @2;                 # InvalidToken
  taskDoesNotExist @3;             # TaskDoesNotExist
  taskTimedOut @4;                 # TaskTimedOut (also completed / cancelled: see Error.reason)
  invalidOutput @5;                # InvalidOutput
  invalidName @6;                  # InvalidName
  invalidArn @7;                   # InvalidArn
  activityDoesNotExist @8;         # ActivityDoesNotExist
  activityLimitExceeded @9;        # ActivityLimitExceeded
  activityWorkerLimitExceeded @10; # ActivityWorkerLimitExceeded
  overloaded @11;      # ThrottlingException. Only in batch items (single calls throw OVERLOADED)
  # ServiceUnavailable: the server's storage failed (ping and stats say why; it recovers by
  # itself once the storage works again) or the server is stopping. For a call whose batch
  # failed to write, whether it took effect is unknown: retry as after DISCONNECTED.
  unavailable @12;
}

# Whether the server's storage works. A failed write or sync (a full disk, an I/O error) makes
# the server refuse calls with `unavailable` until it has reopened its store.
struct StorageHealth {
  ok @0 :Bool = true;
  error @1 :Text;          # while not ok: what failed, e.g. "... No space left on device"
  failedSinceMs @2 :Int64; # while not ok: since when
  failures @3 :UInt64;     # storage failures since the server started
  recoveries @4 :UInt64;   # times it reopened its store and went on
}

# The outcome a finished task recorded (the first terminal transition, which won).
struct RecordedOutcome {
  state @0 :TaskState;  # succeeded, failed, timedOut or cancelled
  output @1 :Text;      # with succeeded: the JSON output
  error @2 :Text;       # with failed: the error, if one was given (null = none)
  cause @3 :Text;       # with failed: the cause, if one was given (null = none)
}

# An expected failure of an operation.
struct Error {
  code @0 :ErrorCode;
  awsCode @1 :Text;   # the AWS error code string, e.g. "InvalidToken", "TaskTimedOut"
  message @2 :Text;   # the exact AWS message text where SEMANTICS.md records one

  # Better than AWS: why a call on a finished task was refused (code = taskTimedOut).
  reason :union {
    none @3 :Void;
    alreadyCompleted @4 :RecordedOutcome;  # it succeeded or failed earlier (the recorded one)
    timedOut @5 :TimeoutKind;              # it timed out, and which clock fired
    cancelled @6 :Void;                    # the issuer cancelled it
  }
}

# ---- Activities ----

struct ActivityInfo {
  arn @0 :Text;
  name @1 :Text;
  creationMs @2 :Int64;
}

struct ActivityResult {
  union {
    ok @0 :ActivityInfo;
    error @1 :Error;
  }
}

struct EmptyResult {
  union {
    ok @0 :Void;
    error @1 :Error;
  }
}

struct CheckpointResult {
  union {
    ok @0 :Text;  # the directory written (--backup-dir/name)
    error @1 :Error;
  }
}

struct ListActivitiesResult {
  union {
    ok :group {
      activities @0 :List(ActivityInfo);
      nextToken @1 :Text;  # empty on the last page
    }
    error @2 :Error;
  }
}

# ---- Tasks ----

struct IssueTaskRequest {
  activityArn @0 :Text;             # empty or null: a callback task (born started, clocks run now)
  input @1 :Text;                   # JSON; null means "{}"
  timeoutSeconds @2 :UInt32;        # overall timeout, from start; 0 = none
  heartbeatSeconds @3 :UInt32;      # 0 = none; must be < timeoutSeconds when both are set
  scheduleToStartSeconds @4 :UInt32;  # activity tasks only: max time queued; 0 = none
  correlation @5 :Data;             # opaque to tokenwheel, returned in the outcome event
  idempotencyKey @6 :Text;          # same key -> same token, no second task
}

struct IssueTaskResult {
  union {
    ok :group {
      taskToken @0 :Text;
      existing @1 :Bool;  # the idempotency key matched an earlier issue: this is its token
    }
    error @2 :Error;
  }
}

struct ActivityTaskResult {
  union {
    ok :group {
      taskToken @0 :Text;  # empty: no task arrived within the wait
      input @1 :Text;
    }
    error @2 :Error;
  }
}

struct SuccessRequest {
  taskToken @0 :Text;
  output @1 :Text;  # JSON, required (null -> validation error)
}

struct FailureRequest {
  taskToken @0 :Text;
  error @1 :Text;  # optional, <= 256 chars
  cause @2 :Text;  # optional, <= 32,768 chars
}

struct HeartbeatRequest {
  taskToken @0 :Text;
}

# The answer to success / failure / cancel.
struct CompletionResult {
  union {
    ok :group {
      # An identical retry (same kind, same payload) of the completion that already won: answered
      # as success so a worker that lost the first reply can retry safely.
      duplicate @0 :Bool;
    }
    error @1 :Error;
  }
}

struct TaskDescription {
  state @0 :TaskState;
  timeoutKind @1 :TimeoutKind;   # with timedOut: which clock fired
  activityArn @2 :Text;          # empty for callback tasks
  issuedMs @3 :Int64;
  startedMs @4 :Int64;
  endedMs @5 :Int64;
  heartbeatDeadlineMs @6 :Int64;
  overallDeadlineMs @7 :Int64;
  scheduleToStartDeadlineMs @8 :Int64;
  timeoutSeconds @9 :UInt32;
  heartbeatSeconds @10 :UInt32;
  scheduleToStartSeconds @11 :UInt32;
  worker @12 :Text;
  input @13 :Text;
  output @14 :Text;
  error @15 :Text;   # null = none
  cause @16 :Text;   # null = none
  correlation @17 :Data;
}

struct DescribeTaskResult {
  union {
    ok @0 :TaskDescription;
    error @1 :Error;
  }
}

# ---- The outcome stream ----

# One terminal transition. Sequences are gapless from 1 and never reused.
struct OutcomeEvent {
  sequence @0 :UInt64;
  taskToken @1 :Text;
  activityArn @2 :Text;   # empty for callback tasks (or a since-deleted activity)
  state @3 :TaskState;    # succeeded, failed, timedOut or cancelled
  timeoutKind @4 :TimeoutKind;
  timeMs @5 :Int64;
  output @6 :Text;        # with succeeded
  error @7 :Text;         # null = none (timeouts: "States.Timeout")
  cause @8 :Text;         # null = none
  correlation @9 :Data;   # as given at issue
}

# Implemented by the subscriber. The server calls `events` in sequence order, each call carrying
# the next run of consecutive events, and respects the stream's flow control: a sink that
# returns slowly slows the server down, it does not make it buffer without bound.
interface EventSink {
  events @0 (events :List(OutcomeEvent)) -> stream;
  # The server stopped this subscription for a reason other than a disconnect (e.g. the consumer
  # was deleted and the events it needed were trimmed). No more events follow.
  ended @1 (reason :Text) -> ();
}

# Held by the subscriber for as long as it wants events. Dropping it (or disconnecting) ends the
# subscription; the consumer's durable cursor stays, so a later subscribe resumes from it.
interface Subscription {
  # The next sequence the server will send.
  nextSequence @0 () -> (sequence :UInt64);
}

struct SubscribeResult {
  union {
    ok :group {
      subscription @0 :Subscription;
      ackedSequence @1 :UInt64;  # the consumer's durable cursor when subscribing
      startSequence @2 :UInt64;  # the first sequence this subscription sends
    }
    error @3 :Error;
  }
}

struct ConsumerInfo {
  name @0 :Text;
  ackedSequence @1 :UInt64;
}

struct ActivityQueue {
  activityArn @0 :Text;
  queued @1 :UInt64;  # SCHEDULED tasks waiting
  started @2 :UInt64;  # STARTED tasks (handed to a worker, not ended)
}

struct Stats {
  liveTasks @0 :UInt64;
  pendingTimers @1 :UInt64;
  waitingPolls @2 :UInt64;
  lastEventSequence @3 :UInt64;
  eventsNotAcked @4 :UInt64;
  batches @5 :UInt64;   # engine group commits
  commands @6 :UInt64;  # engine commands applied
  queuedPerActivity @7 :List(ActivityQueue);
  consumers @8 :List(ConsumerInfo);
  # Cap'n Proto front end.
  connections @9 :UInt64;       # open connections
  subscriptions @10 :UInt64;    # live subscriptions
  replyHandoffs @11 :UInt64;    # engine -> RPC thread hand-offs so far
  repliesDelivered @12 :UInt64; # engine replies delivered through them
  # Engine group commits that wrote something: how long each write (with its WAL sync) took.
  # Counts per bucket, in the bucket order of engine/latency_histogram.h, and the slowest.
  commitLatencyBuckets @13 :List(UInt64);
  commitLatencyMaxUs @14 :UInt64;
  # Wake-ups of the engine thread for submitted commands. The RPC thread hands each burst of
  # calls over with one wake-up, so commands / submitWakes is the average burst.
  submitWakes @15 :UInt64;
  storage @16 :StorageHealth;
  # Tasks timed out since the store opened, by clock: [none, heartbeat, overall, scheduleToStart].
  timeoutsByKind @17 :List(UInt64);
  # Commands per group commit, counts per bucket in the bucket order of commitLatencyBuckets.
  batchCommandBuckets @18 :List(UInt64);
  # How late each timeout fired (the engine's clock at the timeout minus its deadline), counts
  # per bucket in the bucket order of commitLatencyBuckets, and the latest.
  timerLatenessBuckets @19 :List(UInt64);
  timerLatenessMaxUs @20 :UInt64;
}

# The bootstrap capability of a server started with an auth file (tokenwheeld --rpc-auth-file):
# nothing but `authenticate` answers until the connection has presented a secret the server
# lists. A wrong secret fails the call (FAILED, "authentication failed") and closes the
# connection; so does any TokenWheel call made on the Gate itself (an old client that does not
# authenticate), and an authenticate call past the server's per-connection bound. Without an auth
# file the bootstrap capability is the TokenWheel itself, which is a Gate too: `authenticate`
# there answers the same capability whatever the secret, so a client that always authenticates
# works with both kinds of server. A client calls authenticate and pipelines its first calls on
# `api`: no extra round trip.
interface Gate {
  authenticate @0 (secret :Data) -> (api :TokenWheel);
}

interface TokenWheel extends(Gate) {
  # Echo, for health checks and as the transport baseline of the benchmark: no engine work.
  # `storage` is set only while the storage is failed (null: it works).
  ping @0 (payload :Data) -> (payload :Data, storage :StorageHealth);

  # What this server is and its limits.
  getInfo @1 () -> (apiVersion :UInt32, serverVersion :Text, maxPollSeconds :UInt32,
                    requestBytesMax :UInt64, batchItemsMax :UInt32);

  # ---- Activities ----
  # Idempotent by name: the same name returns the same ARN and creation time.
  # Errors: invalidName, activityLimitExceeded.
  createActivity @2 (name :Text) -> (result :ActivityResult);
  # Deleting twice is fine. Queued tasks of the activity end FAILED (States.Runtime).
  # Errors: invalidArn.
  deleteActivity @3 (activityArn :Text) -> (result :EmptyResult);
  # Errors: activityDoesNotExist, invalidArn.
  describeActivity @4 (activityArn :Text) -> (result :ActivityResult);
  # maxResults 0..1000, 0 means 100. Errors: validation, invalidToken (bad nextToken).
  listActivities @5 (maxResults :UInt32, nextToken :Text) -> (result :ListActivitiesResult);

  # ---- Tasks ----
  # Errors: validation, invalidOutput (input not JSON), activityDoesNotExist, invalidArn.
  issueTask @6 (request :IssueTaskRequest) -> (result :IssueTaskResult);
  issueTasks @7 (requests :List(IssueTaskRequest)) -> (results :List(IssueTaskResult));

  # Long poll. Takes the head of the activity's queue (FIFO), or waits for a task up to
  # `waitSeconds` (0 = the server's maximum; never more than it), then answers with an empty
  # token. A call that is cancelled, or whose connection drops, is withdrawn and never receives a
  # task: a task that raced with the withdrawal goes back to the head of its queue.
  # Errors: activityDoesNotExist, invalidArn, activityWorkerLimitExceeded, validation.
  getActivityTask @8 (activityArn :Text, workerName :Text, waitSeconds :UInt32)
      -> (result :ActivityTaskResult);

  # Errors: invalidToken, taskDoesNotExist, taskTimedOut (+ reason), invalidOutput, validation.
  sendTaskSuccess @9 (request :SuccessRequest) -> (result :CompletionResult);
  sendTaskSuccesses @10 (requests :List(SuccessRequest)) -> (results :List(CompletionResult));
  # Errors: invalidToken, taskDoesNotExist, taskTimedOut (+ reason), validation.
  sendTaskFailure @11 (request :FailureRequest) -> (result :CompletionResult);
  sendTaskFailures @12 (requests :List(FailureRequest)) -> (results :List(CompletionResult));
  # Resets the heartbeat clock only. No outcome event.
  # Errors: invalidToken, taskDoesNotExist, taskTimedOut (+ reason).
  sendTaskHeartbeat @13 (request :HeartbeatRequest) -> (result :EmptyResult);
  sendTaskHeartbeats @14 (requests :List(HeartbeatRequest)) -> (results :List(EmptyResult));
  # Ends a live task as CANCELLED (with its outcome event); the issuer's call, so it has no
  # worker-side counterpart in AWS. Errors: invalidToken, taskDoesNotExist, taskTimedOut (+ reason).
  cancelTask @15 (taskToken :Text) -> (result :CompletionResult);
  # Errors: invalidToken, taskDoesNotExist.
  describeTask @16 (taskToken :Text) -> (result :DescribeTaskResult);

  # ---- The outcome stream ----
  # Registers `consumer` if new (a new consumer starts after the last event so far), then sends
  # every event from `fromSequence` on, in order, to `sink`, and keeps sending new ones as they
  # become durable. fromSequence = 0 resumes from the consumer's durable cursor (acked + 1).
  # Delivery is at-least-once: after a reconnect or restart, events after the last ack come
  # again, with the same sequence. Errors: validation (bad name, too many consumers, events
  # from fromSequence no longer kept).
  subscribe @17 (consumer :Text, fromSequence :UInt64, sink :EventSink)
      -> (result :SubscribeResult);
  # Durably records that `consumer` processed every event <= sequence. Events every consumer
  # acknowledged are trimmed.
  ackEvents @18 (consumer :Text, sequence :UInt64) -> (result :EmptyResult);
  # Forgets a consumer (its cursor no longer holds events back).
  deleteConsumer @19 (consumer :Text) -> (result :EmptyResult);

  stats @20 () -> (stats :Stats);

  # An online backup into a new directory --backup-dir/name (tokenwheeld's flag; without it,
  # a validation error): a RocksDB checkpoint as DIR/db and the token key file as DIR/token.key,
  # holding everything acknowledged before the call. Start tokenwheeld with --data-dir DIR (or
  # a copy) to restore it. Errors: validation (off, a bad name, the directory exists),
  # overloaded (another checkpoint is being written), unavailable (the storage failed).
  checkpoint @21 (name :Text) -> (result :CheckpointResult);
}
