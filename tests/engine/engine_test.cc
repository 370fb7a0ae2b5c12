// tw-test-labels: threads
// tw-test-commit-modes: inline pipelined
//
// The engine through its public API (engine/engine.h): activities, callback and activity tasks,
// tokens, input limits, duplicates, cancel, idempotency keys, the outcome stream, describe,
// overload, storage failure and Stop. Timeouts: engine_timeout_test.cc; restarts:
// engine_recovery_test.cc.
//
// Time moves only through the ManualClock, then Sync() (a barrier that also fires due timers):
// no test sleeps. Replies run on the engine thread; Reply<T> hands them to the test thread.
#include "engine/engine.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "engine/clock.h"
#include "engine/limits.h"
#include "engine/token.h"
#include "engine/types.h"
#include "engine/validate.h"
#include "storage/memory_store.h"
#include "tests/engine/engine_test_harness.h"

namespace tw {

namespace {

using namespace engine_test;  // the shared harness: engine_test_harness.h

std::string JsonString(size_t total_bytes) {  // a JSON string value of exactly total_bytes
  return "\"" + std::string(total_bytes - 2, 'x') + "\"";
}

// =============================================================================================
// Activities

TEST_F(EngineTest, CreateActivityIsIdempotentByName) {
  Result<ActivityInfo> first = CreateActivity("orders");
  ASSERT_TRUE(IsOk(first));
  EXPECT_EQ(first.value.arn, "arn:aws:states:us-east-1:000000000000:activity:orders");
  EXPECT_EQ(first.value.name, "orders");
  EXPECT_EQ(first.value.creation_ms, kT0);

  AdvanceAndSync(5'000);
  Result<ActivityInfo> again = CreateActivity("orders");
  ASSERT_TRUE(IsOk(again));
  EXPECT_EQ(again.value.arn, first.value.arn);
  EXPECT_EQ(again.value.creation_ms, kT0) << "same name: same creationDate";

  Result<ActivityInfo> described = DescribeActivity(first.value.arn);
  ASSERT_TRUE(IsOk(described));
  EXPECT_EQ(described.value.arn, first.value.arn);
  EXPECT_EQ(described.value.name, "orders");
  EXPECT_EQ(described.value.creation_ms, kT0);

  Result<ActivityInfo> other = CreateActivity("billing");
  ASSERT_TRUE(IsOk(other));
  EXPECT_EQ(other.value.creation_ms, kT0 + 5'000);
}

TEST_F(EngineTest, CreateActivityRejectsEveryClassOfBadName) {
  std::vector<std::string> bad = {
      "",                                 // too short
      std::string(81, 'a'),               // too long
      std::string(80, 'a') + "\xC3\xA9",  // 81 chars, one of them 2 bytes
  };
  // Each of these between "a" and "b": ASCII and Unicode whitespace (U+00A0, U+2028, U+3000,
  // U+2000), C0 controls including NUL, DEL, C1 controls.
  const std::vector<std::string> middles = {
      " ",        "\t",           "\n",           "\r",           "\v",       "\f",
      "\xC2\xA0", "\xE2\x80\xA8", "\xE3\x80\x80", "\xE2\x80\x80", {'\0'},     "\x01",
      "\x1F",     "\x7F",         "\xC2\x80",     "\xC2\x85",     "\xC2\x9F",
  };
  for (const std::string& m : middles) bad.push_back("a" + m + "b");
  for (char c : std::string("<>{}[]?*\"#%\\^|~`$&,;:/")) bad.push_back(std::string("a") + c + "b");
  for (const std::string& name : bad) {
    EXPECT_TRUE(
        IsError(CreateActivity(name), ErrorCode::kInvalidName, "Invalid Name: '" + name + "'"))
        << "name: " << name;
  }
  // Invalid UTF-8 is shown as U+FFFD so that the message itself is valid UTF-8.
  const std::string invalid_utf8 = std::string("a\xFF") + "b";
  EXPECT_TRUE(IsError(CreateActivity(invalid_utf8), ErrorCode::kInvalidName,
                      std::string("Invalid Name: 'a\xEF\xBF\xBD") + "b'"));
  EXPECT_EQ(Stats().per_activity.size(), 0u) << "no bad name created an activity";

  // The limits themselves are fine: 80 chars (counted in code points), and ordinary punctuation.
  std::string e80;
  for (int i = 0; i < 80; ++i) e80 += "\xC3\xA9";
  for (const std::string& name : {std::string(80, 'a'), e80, std::string("a-b_c.d+e=f@g!(h)'i")}) {
    Result<ActivityInfo> r = CreateActivity(name);
    EXPECT_TRUE(IsOk(r)) << "name: " << name;
    EXPECT_EQ(r.value.arn, Arn(name));
  }
}

TEST_F(EngineTest, DeleteActivityTwiceIsFineAndTheActivityIsGone) {
  const std::string arn = MustCreate("gone");
  EXPECT_TRUE(IsOk(DeleteActivity(arn)));
  EXPECT_TRUE(IsOk(DeleteActivity(arn))) << "deleting twice is fine";
  EXPECT_TRUE(IsOk(DeleteActivity(Arn("never-existed"))));

  const std::string message = "Activity Does Not Exist: '" + arn + "'";
  EXPECT_TRUE(IsError(DescribeActivity(arn), ErrorCode::kActivityDoesNotExist, message));
  Poll p = StartPoll(arn, "w");
  EXPECT_TRUE(IsError(p.reply.Get(), ErrorCode::kActivityDoesNotExist, message));
  EXPECT_TRUE(IsError(Issue({.activity_arn = arn}), ErrorCode::kActivityDoesNotExist, message));
  EXPECT_EQ(Stats().live_tasks, 0u);
  EXPECT_EQ(Stats().waiting_polls, 0u);
}

TEST_F(EngineTest, UnknownActivityDoesNotExist) {
  MustCreate("known");
  for (const std::string& arn :
       {Arn("unknown"), std::string("arn:aws:states:eu-west-1:000000000000:activity:known"),
        std::string("arn:aws:states:us-east-1:111111111111:activity:known"),
        std::string("arn:aws:states:us-east-1:000000000000:activity:"),
        std::string("arn:aws:states:us-east-1:000000000000:stateMachine:known")}) {
    const std::string message = "Activity Does Not Exist: '" + arn + "'";
    EXPECT_TRUE(IsError(DescribeActivity(arn), ErrorCode::kActivityDoesNotExist, message)) << arn;
    EXPECT_TRUE(IsError(StartPoll(arn).reply.Get(), ErrorCode::kActivityDoesNotExist, message))
        << arn;
    EXPECT_TRUE(IsError(Issue({.activity_arn = arn}), ErrorCode::kActivityDoesNotExist, message))
        << arn;
  }
}

TEST_F(EngineTest, ArnWithoutArnPrefixIsInvalidArn) {
  for (const std::string& arn : {std::string("orders"), std::string("ARN:aws:states:x"),
                                 std::string("ar"), std::string(" arn:aws")}) {
    const std::string message = "Invalid Arn: 'Invalid ARN prefix: " + arn + "'";
    EXPECT_TRUE(IsError(DescribeActivity(arn), ErrorCode::kInvalidArn, message));
    EXPECT_TRUE(IsError(DeleteActivity(arn), ErrorCode::kInvalidArn, message));
    EXPECT_TRUE(IsError(StartPoll(arn).reply.Get(), ErrorCode::kInvalidArn, message));
    EXPECT_TRUE(IsError(Issue({.activity_arn = arn}), ErrorCode::kInvalidArn, message));
  }
  // Length limits are ValidationException with the AWS text.
  EXPECT_TRUE(IsError(DescribeActivity(""), ErrorCode::kValidation,
                      "1 validation error detected: Value at 'activityArn' failed to satisfy "
                      "constraint: Member must have length greater than or equal to 1"));
  EXPECT_TRUE(IsError(DescribeActivity("arn:" + std::string(253, 'a')), ErrorCode::kValidation,
                      "1 validation error detected: Value at 'activityArn' failed to satisfy "
                      "constraint: Member must have length less than or equal to 256"));
  EXPECT_TRUE(
      IsError(DescribeActivity("arn:" + std::string(252, 'a')), ErrorCode::kActivityDoesNotExist));
}

TEST_F(EngineTest, ListActivitiesPagesInNameOrder) {
  for (const char* name : {"e", "c", "a", "d", "b"}) MustCreate(name);

  std::vector<std::string> seen;
  std::vector<size_t> page_sizes;
  std::string next;
  for (int page = 0; page < 10; ++page) {
    Result<ListActivitiesReply> r = List(2, next);
    ASSERT_TRUE(IsOk(r));
    page_sizes.push_back(r.value.activities.size());
    for (const ActivityInfo& a : r.value.activities) {
      seen.push_back(a.name);
      EXPECT_EQ(a.arn, Arn(a.name));
      EXPECT_EQ(a.creation_ms, kT0);
    }
    next = r.value.next_token;
    if (next.empty()) break;
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(page_sizes, (std::vector<size_t>{2, 2, 1})) << "the last page has no nextToken";

  Result<ListActivitiesReply> all = List(0);
  ASSERT_TRUE(IsOk(all));
  EXPECT_EQ(all.value.activities.size(), 5u);
  EXPECT_TRUE(all.value.next_token.empty());

  Result<ListActivitiesReply> exact = List(5);
  ASSERT_TRUE(IsOk(exact));
  EXPECT_EQ(exact.value.activities.size(), 5u);
  EXPECT_TRUE(exact.value.next_token.empty()) << "a full last page still ends the listing";

  EXPECT_TRUE(IsOk(List(1000)));
  EXPECT_TRUE(IsError(List(1001), ErrorCode::kValidation,
                      "1 validation error detected: Value '1001' at 'maxResults' failed to "
                      "satisfy constraint: Member must have value less than or equal to 1000"));
  for (const std::string& garbage : {std::string("garbage"), std::string("twl1."),
                                     std::string("twl1.zz"), std::string("twl1.6")}) {
    EXPECT_TRUE(IsError(List(2, garbage), ErrorCode::kInvalidToken)) << garbage;
  }
}

TEST_F(EngineTest, ListActivitiesMaxResultsZeroMeans100) {
  for (int i = 0; i < 101; ++i) {
    char name[16];
    std::snprintf(name, sizeof(name), "act-%03d", i);
    Reply<ActivityInfo> r;  // pipelined: one batch or a few
    engine_->CreateActivity({name}, r.cb());
    if (i == 100) {
      ASSERT_TRUE(IsOk(r.Get()));
    }
  }
  Result<ListActivitiesReply> first = List(0);
  ASSERT_TRUE(IsOk(first));
  ASSERT_EQ(first.value.activities.size(), 100u);
  EXPECT_EQ(first.value.activities.front().name, "act-000");
  EXPECT_EQ(first.value.activities.back().name, "act-099");
  ASSERT_FALSE(first.value.next_token.empty());
  Result<ListActivitiesReply> rest = List(0, first.value.next_token);
  ASSERT_TRUE(IsOk(rest));
  ASSERT_EQ(rest.value.activities.size(), 1u);
  EXPECT_EQ(rest.value.activities[0].name, "act-100");
  EXPECT_TRUE(rest.value.next_token.empty());
}

TEST_F(EngineTest, RecreatedActivityIsNewAndEmpty) {
  const std::string arn = MustCreate("again");
  MustIssue({.activity_arn = arn});
  ASSERT_TRUE(IsOk(DeleteActivity(arn)));
  AdvanceAndSync(1'000);
  Result<ActivityInfo> r = CreateActivity("again");
  ASSERT_TRUE(IsOk(r));
  EXPECT_EQ(r.value.arn, arn);
  EXPECT_EQ(r.value.creation_ms, kT0 + 1'000) << "a re-created activity is a new one";
  EXPECT_EQ(Queued(arn), 0) << "the old queue died with the old activity";
  Poll p = StartPoll(arn, "w");
  Sync();
  EXPECT_FALSE(p.reply.ready());
  engine_->WithdrawPoll(p.id);
  EXPECT_TRUE(p.reply.Get().value.token.empty());
}

// =============================================================================================
// Callback tasks: completion, duplicates, refusals

TEST_F(EngineTest, SuccessThenIdenticalRetryIsDuplicateAndDifferentOutputIsRefused) {
  const std::string token = MustIssue({.input = R"({"order":1})"});
  EXPECT_EQ(token.size(), 46u);
  EXPECT_EQ(StateOf(token), TaskState::kStarted) << "a callback task is born STARTED";

  Result<CompletionReply> first = Success(token, R"({"ok":true})");
  ASSERT_TRUE(IsOk(first));
  EXPECT_FALSE(first.value.duplicate);

  Result<CompletionReply> retry = Success(token, R"({"ok":true})");
  ASSERT_TRUE(IsOk(retry));
  EXPECT_TRUE(retry.value.duplicate);

  Result<CompletionReply> other = Success(token, R"({"ok":false})");
  EXPECT_TRUE(IsRefusal(other, Refusal::kAlreadyCompleted, TaskState::kSucceeded));
  EXPECT_EQ(other.error.recorded_output(), R"({"ok":true})");

  Result<CompletionReply> failure = Failure(token, "Err", "cause");
  EXPECT_TRUE(IsRefusal(failure, Refusal::kAlreadyCompleted, TaskState::kSucceeded));
  EXPECT_EQ(failure.error.recorded_output(), R"({"ok":true})");

  EXPECT_TRUE(IsRefusal(Heartbeat(token), Refusal::kAlreadyCompleted, TaskState::kSucceeded));

  Result<TaskDescription> d = Describe(token);
  ASSERT_TRUE(IsOk(d));
  EXPECT_EQ(d.value.state, TaskState::kSucceeded);
  EXPECT_EQ(d.value.output, R"({"ok":true})");
  EXPECT_EQ(Stats().live_tasks, 0u);
  EXPECT_EQ(Events().size(), 1u) << "duplicates and refusals make no event";
}

TEST_F(EngineTest, FailureWithErrorAndCauseThenIdenticalRetryIsDuplicate) {
  const std::string token = MustIssue({});
  Result<CompletionReply> first = Failure(token, "MyError", "it broke");
  ASSERT_TRUE(IsOk(first));
  EXPECT_FALSE(first.value.duplicate);

  Result<CompletionReply> retry = Failure(token, "MyError", "it broke");
  ASSERT_TRUE(IsOk(retry));
  EXPECT_TRUE(retry.value.duplicate);

  for (auto [error, cause] :
       std::vector<std::pair<std::optional<std::string>, std::optional<std::string>>>{
           {"MyError", "other cause"},
           {"Other", "it broke"},
           {"MyError", std::nullopt},
           {std::nullopt, std::nullopt}}) {
    Result<CompletionReply> r = Failure(token, error, cause);
    EXPECT_TRUE(IsRefusal(r, Refusal::kAlreadyCompleted, TaskState::kFailed));
    EXPECT_EQ(r.error.recorded_error(), "MyError");
    EXPECT_EQ(r.error.recorded_cause(), "it broke");
  }
  Result<CompletionReply> success = Success(token, "{}");
  EXPECT_TRUE(IsRefusal(success, Refusal::kAlreadyCompleted, TaskState::kFailed));
  EXPECT_EQ(success.error.recorded_error(), "MyError");
  EXPECT_TRUE(IsRefusal(Heartbeat(token), Refusal::kAlreadyCompleted, TaskState::kFailed));

  Result<TaskDescription> d = Describe(token);
  ASSERT_TRUE(IsOk(d));
  EXPECT_EQ(d.value.state, TaskState::kFailed);
  EXPECT_TRUE(d.value.has_error);
  EXPECT_TRUE(d.value.has_cause);
  EXPECT_EQ(d.value.error, "MyError");
  EXPECT_EQ(d.value.cause, "it broke");
  EXPECT_EQ(Events().size(), 1u);
}

TEST_F(EngineTest, FailureWithNeitherErrorNorCauseIsFine) {
  const std::string token = MustIssue({});
  Result<CompletionReply> first = Failure(token, std::nullopt, std::nullopt);
  ASSERT_TRUE(IsOk(first));
  EXPECT_FALSE(first.value.duplicate);
  Result<CompletionReply> retry = Failure(token, std::nullopt, std::nullopt);
  ASSERT_TRUE(IsOk(retry));
  EXPECT_TRUE(retry.value.duplicate);
  Result<TaskDescription> d = Describe(token);
  ASSERT_TRUE(IsOk(d));
  EXPECT_EQ(d.value.state, TaskState::kFailed);
  EXPECT_FALSE(d.value.has_error);
  EXPECT_FALSE(d.value.has_cause);
}

TEST_F(EngineTest, ScalarJsonOutputsAreAccepted) {
  for (const char* output : {"\"x\"", "1", "null", "true", "[]", " {\"a\": [1, 2.5e3]} "}) {
    const std::string token = MustIssue({});
    Result<CompletionReply> r = Success(token, output);
    EXPECT_TRUE(IsOk(r)) << output;
    EXPECT_EQ(Describe(token).value.output, output);
  }
}

// =============================================================================================
// Tokens

TEST_F(EngineTest, GarbageAndMangledTokensAreInvalidToken) {
  const std::string token = MustIssue({});
  const std::vector<std::string> garbage = {
      "garbage",   "x",         std::string(46, 'A'),  token.substr(0, 45),
      token + "A", token + "=", std::string(2048, 'z')};
  for (const std::string& g : garbage) {
    EXPECT_TRUE(IsError(Success(g, "{}"), ErrorCode::kInvalidToken, kInvalidTokenMessage)) << g;
    EXPECT_TRUE(IsError(Failure(g, "e", "c"), ErrorCode::kInvalidToken, kInvalidTokenMessage));
    EXPECT_TRUE(IsError(Heartbeat(g), ErrorCode::kInvalidToken, kInvalidTokenMessage));
    EXPECT_TRUE(IsError(Cancel(g), ErrorCode::kInvalidToken, kInvalidTokenMessage));
    EXPECT_TRUE(IsError(Describe(g), ErrorCode::kInvalidToken, kInvalidTokenMessage));
  }
  // Changing any one character of a valid token makes it invalid.
  for (size_t i = 0; i < token.size(); ++i) {
    std::string mangled = token;
    mangled[i] = mangled[i] == 'A' ? 'B' : 'A';
    EXPECT_TRUE(IsError(Success(mangled, "{}"), ErrorCode::kInvalidToken, kInvalidTokenMessage))
        << "position " << i;
  }
  EXPECT_EQ(StateOf(token), TaskState::kStarted) << "no mangled token touched the task";
}

TEST_F(EngineTest, EmptyAndOverlongTokensAreValidationErrors) {
  const std::string too_short =
      "1 validation error detected: Value at 'taskToken' failed to satisfy constraint: Member "
      "must have length greater than or equal to 1";
  const std::string too_long =
      "1 validation error detected: Value at 'taskToken' failed to satisfy constraint: Member "
      "must have length less than or equal to 2048";
  const std::string overlong(2049, 'A');
  for (const auto& [token, message] :
       {std::pair<std::string, std::string>{"", too_short}, {overlong, too_long}}) {
    EXPECT_TRUE(IsError(Success(token, "{}"), ErrorCode::kValidation, message));
    EXPECT_TRUE(IsError(Failure(token, "e", "c"), ErrorCode::kValidation, message));
    EXPECT_TRUE(IsError(Heartbeat(token), ErrorCode::kValidation, message));
    EXPECT_TRUE(IsError(Cancel(token), ErrorCode::kValidation, message));
    EXPECT_TRUE(IsError(Describe(token), ErrorCode::kValidation, message));
  }
}

// Task ids are the `tasks` keys: in issue order, so that inserts land at the memtable's end
// (engine/token.h, TaskIdGenerator), with the issuing clock's millisecond in the high word.
TEST_F(EngineTest, TaskIdsFollowIssueOrderAndCarryTheIssueTime) {
  std::unique_ptr<TokenCodec> codec;
  ASSERT_TRUE(TokenCodec::OpenKeyFile(options_.token_key_file, &codec).ok());
  auto id_of = [&](const std::string& token) {
    TaskId id;
    uint16_t shard = 0;
    EXPECT_TRUE(codec->Decode(token, &id, &shard));
    return id;
  };
  const TaskId a = id_of(MustIssue({.timeout_s = 3600}));
  const TaskId b = id_of(MustIssue({.timeout_s = 3600}));
  AdvanceAndSync(1'000);
  const TaskId c = id_of(MustIssue({.timeout_s = 3600}));
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(static_cast<int64_t>(a.hi >> kTaskIdSequenceBits), kT0);
  EXPECT_EQ(static_cast<int64_t>(c.hi >> kTaskIdSequenceBits), kT0 + 1'000);
}

TEST_F(EngineTest, WellFormedTokenOfUnknownTaskIsTaskDoesNotExist) {
  std::unique_ptr<TokenCodec> codec;
  ASSERT_TRUE(TokenCodec::OpenKeyFile(options_.token_key_file, &codec).ok());
  const std::string unknown = codec->Encode(options_.shard, TaskIdGenerator().Next(0));
  EXPECT_TRUE(IsError(Success(unknown, "{}"), ErrorCode::kTaskDoesNotExist));
  EXPECT_TRUE(IsError(Failure(unknown, "e", "c"), ErrorCode::kTaskDoesNotExist));
  EXPECT_TRUE(IsError(Heartbeat(unknown), ErrorCode::kTaskDoesNotExist));
  EXPECT_TRUE(IsError(Cancel(unknown), ErrorCode::kTaskDoesNotExist));
  EXPECT_TRUE(IsError(Describe(unknown), ErrorCode::kTaskDoesNotExist));

  // The same id signed with another key is not ours: InvalidToken.
  std::unique_ptr<TokenCodec> other;
  ASSERT_TRUE(TokenCodec::OpenKeyFile(dir_ + "/other.key", &other).ok());
  EXPECT_TRUE(IsError(Success(other->Encode(options_.shard, TaskIdGenerator().Next(0)), "{}"),
                      ErrorCode::kInvalidToken, kInvalidTokenMessage));
  EXPECT_EQ(Stats().live_tasks, 0u);
}

// =============================================================================================
// Bad input changes nothing

TEST_F(EngineTest, BadCompletionInputChangesNothing) {
  const std::string token = MustIssue({.input = R"({"in":1})"});
  auto expect_untouched = [&](const char* what) {
    Result<TaskDescription> d = Describe(token);
    ASSERT_TRUE(IsOk(d)) << what;
    EXPECT_EQ(d.value.state, TaskState::kStarted) << what;
    EXPECT_EQ(d.value.output, "") << what;
    EXPECT_FALSE(d.value.has_error) << what;
    EXPECT_EQ(LastSeq(), 0u) << what;
  };

  EXPECT_TRUE(IsError(Success(token, std::nullopt), ErrorCode::kValidation,
                      "1 validation error detected: Value at 'output' failed to satisfy "
                      "constraint: Member must not be null"));
  expect_untouched("missing output");

  for (const char* bad : {"{", "not json", "", "{\"a\":1} {\"b\":2}", "\"\xFF\"", "1e400"}) {
    Result<CompletionReply> r = Success(token, bad);
    EXPECT_TRUE(IsError(r, ErrorCode::kInvalidOutput)) << bad;
    EXPECT_EQ(r.error.message.rfind("Invalid Output: '", 0), 0u) << r.error.message;
    expect_untouched(bad);
  }

  EXPECT_TRUE(IsError(Success(token, JsonString(262'145)), ErrorCode::kValidation,
                      "1 validation error detected: Value at 'output' failed to satisfy "
                      "constraint: Member must have length less than or equal to 262144"));
  expect_untouched("output of 262,145 bytes");
  // The byte limit counts UTF-8 bytes: 131,072 two-byte chars + quotes is over it.
  std::string wide = "\"";
  for (int i = 0; i < 131'072; ++i) wide += "\xC3\xA9";
  wide += "\"";
  EXPECT_TRUE(IsError(Success(token, wide), ErrorCode::kValidation));
  expect_untouched("output of 262,146 UTF-8 bytes");

  const std::string error_too_long =
      "Value at 'error' failed to satisfy constraint: Member must have length less than or "
      "equal to 256";
  const std::string cause_too_long =
      "Value at 'cause' failed to satisfy constraint: Member must have length less than or "
      "equal to 32768";
  EXPECT_TRUE(IsError(Failure(token, std::string(257, 'e'), std::nullopt), ErrorCode::kValidation,
                      "1 validation error detected: " + error_too_long));
  expect_untouched("error of 257 chars");
  EXPECT_TRUE(IsError(Failure(token, "e", std::string(32'769, 'c')), ErrorCode::kValidation,
                      "1 validation error detected: " + cause_too_long));
  expect_untouched("cause of 32,769 chars");
  EXPECT_TRUE(IsError(Failure(token, std::string(257, 'e'), std::string(32'769, 'c')),
                      ErrorCode::kValidation,
                      "2 validation errors detected: " + error_too_long + "; " + cause_too_long));
  expect_untouched("both too long");

  // A valid completion still works, at exactly the limit.
  const std::string output = JsonString(262'144);
  Result<CompletionReply> ok = Success(token, output);
  ASSERT_TRUE(IsOk(ok));
  EXPECT_FALSE(ok.value.duplicate);
  Result<TaskDescription> d = Describe(token);
  EXPECT_EQ(d.value.state, TaskState::kSucceeded);
  EXPECT_EQ(d.value.output, output);
}

TEST_F(EngineTest, FailureLimitsCountCharsNotBytes) {
  std::string error;  // 256 chars, 512 bytes
  for (int i = 0; i < 256; ++i) error += "\xC3\xA9";
  const std::string cause(32'768, 'c');
  const std::string token = MustIssue({});
  ASSERT_TRUE(IsOk(Failure(token, error, cause)));
  Result<TaskDescription> d = Describe(token);
  EXPECT_EQ(d.value.error, error);
  EXPECT_EQ(d.value.cause, cause);
}

TEST_F(EngineTest, BadIssueCreatesNoTask) {
  const std::string arn = MustCreate("work");
  Result<IssueTaskReply> r = Issue({.input = "{"});
  EXPECT_TRUE(IsError(r, ErrorCode::kInvalidOutput));
  EXPECT_EQ(r.error.message.rfind("Invalid Input: '", 0), 0u) << r.error.message;
  EXPECT_TRUE(IsError(Issue({.input = ""}), ErrorCode::kInvalidOutput));
  EXPECT_TRUE(IsError(Issue({.activity_arn = arn, .input = "nope"}), ErrorCode::kInvalidOutput));
  EXPECT_TRUE(IsError(Issue({.input = JsonString(262'145)}), ErrorCode::kValidation,
                      "1 validation error detected: Value at 'input' failed to satisfy "
                      "constraint: Member must have length less than or equal to 262144"));
  EXPECT_TRUE(IsError(Issue({.timeout_s = 10, .heartbeat_s = 10}), ErrorCode::kValidation));
  EXPECT_TRUE(IsError(Issue({.timeout_s = 10, .heartbeat_s = 11}), ErrorCode::kValidation));
  EXPECT_TRUE(IsError(Issue({.activity_arn = arn, .timeout_s = 5, .heartbeat_s = 5}),
                      ErrorCode::kValidation));
  EXPECT_TRUE(IsError(Issue({.schedule_to_start_s = 5}), ErrorCode::kValidation))
      << "schedule-to-start applies to activity tasks only";
  EXPECT_TRUE(IsError(Issue({.timeout_s = 366u * 24 * 3600 + 1}), ErrorCode::kValidation));
  EXPECT_TRUE(IsError(Issue({.correlation = std::string(4097, 'c')}), ErrorCode::kValidation));
  EXPECT_TRUE(IsError(Issue({.idempotency_key = std::string(257, 'k')}), ErrorCode::kValidation));
  EXPECT_TRUE(IsError(Issue({.activity_arn = Arn("nope")}), ErrorCode::kActivityDoesNotExist,
                      "Activity Does Not Exist: '" + Arn("nope") + "'"));

  EngineStats st = Stats();
  EXPECT_EQ(st.live_tasks, 0u);
  EXPECT_EQ(st.pending_timers, 0u);
  EXPECT_EQ(Queued(arn), 0);

  // At the limits, issue works.
  MustIssue({.input = JsonString(262'144),
             .timeout_s = 10,
             .heartbeat_s = 9,
             .correlation = std::string(4096, 'c'),
             .idempotency_key = std::string(256, 'k')});
  EXPECT_EQ(Stats().live_tasks, 1u);
}

// =============================================================================================
// Activity tasks

TEST_F(EngineTest, ActivityTasksGoFifoEachToExactlyOneTaker) {
  const std::string arn = MustCreate("fifo");
  std::vector<std::string> tokens;
  for (int i = 1; i <= 3; ++i) {
    tokens.push_back(
        MustIssue({.activity_arn = arn, .input = "{\"n\":" + std::to_string(i) + "}"}));
    EXPECT_EQ(StateOf(tokens.back()), TaskState::kScheduled);
  }
  EXPECT_EQ(Queued(arn), 3);
  EXPECT_EQ(Stats().live_tasks, 3u);

  for (int i = 1; i <= 3; ++i) {
    GetActivityTaskReply got = Take(arn, "w" + std::to_string(i));
    EXPECT_EQ(got.token, tokens[i - 1]);
    EXPECT_EQ(got.input, "{\"n\":" + std::to_string(i) + "}");
    EXPECT_EQ(StateOf(got.token), TaskState::kStarted);
  }
  EXPECT_EQ(Queued(arn), 0);

  Poll idle = StartPoll(arn, "w4");
  Sync();
  EXPECT_FALSE(idle.reply.ready()) << "an empty queue makes the poll wait";
  EXPECT_EQ(Stats().waiting_polls, 1u);
  engine_->WithdrawPoll(idle.id);
  Result<GetActivityTaskReply> r = idle.reply.Get();
  ASSERT_TRUE(IsOk(r));
  EXPECT_TRUE(r.value.token.empty());
  EXPECT_EQ(Stats().waiting_polls, 0u);
  engine_->WithdrawPoll(idle.id);  // already answered: nothing happens
  Sync();
}

TEST_F(EngineTest, WaitingPollsGetTasksIssuedLater) {
  const std::string arn = MustCreate("later");
  Poll p1 = StartPoll(arn, "w1");
  Poll p2 = StartPoll(arn, "w2");
  Sync();
  EXPECT_FALSE(p1.reply.ready());
  EXPECT_FALSE(p2.reply.ready());
  EXPECT_EQ(Stats().waiting_polls, 2u);

  const std::string t1 = MustIssue({.activity_arn = arn, .input = R"({"t":1})"});
  const std::string t2 = MustIssue({.activity_arn = arn, .input = R"({"t":2})"});
  Result<GetActivityTaskReply> r1 = p1.reply.Get();
  Result<GetActivityTaskReply> r2 = p2.reply.Get();
  ASSERT_TRUE(IsOk(r1));
  ASSERT_TRUE(IsOk(r2));
  EXPECT_EQ((std::set<std::string>{r1.value.token, r2.value.token}),
            (std::set<std::string>{t1, t2}))
      << "each task to exactly one poller";
  EXPECT_EQ(r1.value.input, r1.value.token == t1 ? R"({"t":1})" : R"({"t":2})");
  EXPECT_EQ(r2.value.input, r2.value.token == t1 ? R"({"t":1})" : R"({"t":2})");
  EXPECT_EQ(Stats().waiting_polls, 0u);
  EXPECT_EQ(Queued(arn), 0);
  Result<TaskDescription> d = Describe(r1.value.token);
  EXPECT_EQ(d.value.state, TaskState::kStarted);
  EXPECT_EQ(d.value.worker, "w1");
}

TEST_F(EngineTest, ReturnTaskPutsAnUndeliveredTaskBackAtTheHead) {
  const std::string arn = MustCreate("ret");
  const std::string t1 = MustIssue({.activity_arn = arn, .input = R"({"t":1})"});
  const std::string t2 = MustIssue({.activity_arn = arn, .input = R"({"t":2})"});
  ASSERT_EQ(Take(arn, "lost-worker").token, t1);

  engine_->ReturnTask(t1);
  Sync();
  Result<TaskDescription> d = Describe(t1);
  EXPECT_EQ(d.value.state, TaskState::kScheduled);
  EXPECT_EQ(d.value.worker, "");
  EXPECT_EQ(Queued(arn), 2);

  GetActivityTaskReply again = Take(arn, "w2");
  EXPECT_EQ(again.token, t1) << "a returned task goes back at the head";
  EXPECT_EQ(again.input, R"({"t":1})");
  EXPECT_EQ(Describe(t1).value.worker, "w2");

  // Once something happened to a started task (a heartbeat), ReturnTask leaves it alone.
  ASSERT_TRUE(IsOk(Heartbeat(t1)));
  engine_->ReturnTask(t1);
  Sync();
  EXPECT_EQ(StateOf(t1), TaskState::kStarted);
  EXPECT_EQ(Take(arn, "w3").token, t2);

  // Callback tasks and finished tasks are never returned.
  const std::string cb = MustIssue({});
  engine_->ReturnTask(cb);
  ASSERT_TRUE(IsOk(Success(t2, "{}")));
  engine_->ReturnTask(t2);
  engine_->ReturnTask("garbage");
  Sync();
  EXPECT_EQ(StateOf(cb), TaskState::kStarted);
  EXPECT_EQ(StateOf(t2), TaskState::kSucceeded);
  EXPECT_EQ(Queued(arn), 0);
}

TEST_F(EngineTest, ReturnedTaskGoesStraightToAWaitingPoll) {
  const std::string arn = MustCreate("ret2");
  const std::string t1 = MustIssue({.activity_arn = arn});
  ASSERT_EQ(Take(arn, "lost").token, t1);
  Poll waiting = StartPoll(arn, "w2");
  Sync();
  ASSERT_FALSE(waiting.reply.ready());
  engine_->ReturnTask(t1);
  Result<GetActivityTaskReply> r = waiting.reply.Get();
  ASSERT_TRUE(IsOk(r));
  EXPECT_EQ(r.value.token, t1);
  EXPECT_EQ(Describe(t1).value.worker, "w2");
}

TEST_F(EngineTest, BadPollsAreRefused) {
  const std::string arn = MustCreate("polls");
  EXPECT_TRUE(IsError(StartPoll(arn, std::string(81, 'w')).reply.Get(), ErrorCode::kValidation,
                      "1 validation error detected: Value at 'workerName' failed to satisfy "
                      "constraint: Member must have length less than or equal to 80"));
  Poll p = StartPoll(arn, std::string(80, 'w'));
  Reply<GetActivityTaskReply> same_id;
  engine_->GetActivityTask({arn, "w"}, p.id, same_id.cb());
  EXPECT_TRUE(IsError(same_id.Get(), ErrorCode::kValidation)) << "poll id already waiting";
  EXPECT_EQ(Stats().waiting_polls, 1u);
  const std::string token = MustIssue({.activity_arn = arn});
  Result<GetActivityTaskReply> r = p.reply.Get();
  ASSERT_TRUE(IsOk(r));
  EXPECT_EQ(r.value.token, token);
  EXPECT_EQ(Describe(token).value.worker, std::string(80, 'w'));
}

TEST_F(EngineTest, OpenRefusesBadOptions) {
  ManualClock clock;
  EngineOptions no_key;
  EXPECT_TRUE(IsError(Engine::Open(no_key, std::make_unique<MemoryStore>(), &clock),
                      ErrorCode::kValidation));
  EngineOptions zero_tick = options_;
  zero_tick.tick_ms = 0;
  EXPECT_TRUE(IsError(Engine::Open(zero_tick, std::make_unique<MemoryStore>(), &clock),
                      ErrorCode::kValidation));
  EngineOptions zero_queue = options_;
  zero_queue.command_queue_max = 0;
  EXPECT_TRUE(IsError(Engine::Open(zero_queue, std::make_unique<MemoryStore>(), &clock),
                      ErrorCode::kValidation));
}

TEST_F(EngineTest, TooManyWaitingPollsIsActivityWorkerLimitExceeded) {
  options_.pollers_per_activity_max = 2;
  ASSERT_NO_FATAL_FAILURE(Restart());
  const std::string arn = MustCreate("busy");
  const std::string other = MustCreate("other");
  Poll p1 = StartPoll(arn, "w1");
  Poll p2 = StartPoll(arn, "w2");
  Poll p3 = StartPoll(arn, "w3");
  EXPECT_TRUE(IsError(p3.reply.Get(), ErrorCode::kActivityWorkerLimitExceeded));
  Poll elsewhere = StartPoll(other, "w");  // the limit is per activity
  Sync();
  EXPECT_FALSE(elsewhere.reply.ready());
  EXPECT_FALSE(p1.reply.ready());
  EXPECT_EQ(Stats().waiting_polls, 3u);

  engine_->WithdrawPoll(p1.id);
  Poll p4 = StartPoll(arn, "w4");
  Sync();
  EXPECT_FALSE(p4.reply.ready()) << "a withdrawn poll frees its place";
  for (uint64_t id : {p2.id, p4.id, elsewhere.id}) engine_->WithdrawPoll(id);
  EXPECT_TRUE(IsOk(p4.reply.Get()));
  EXPECT_EQ(Stats().waiting_polls, 0u);
}

TEST_F(EngineTest, DeletingAnActivityFailsItsQueuedTasksButStartedOnesRunOn) {
  const std::string arn = MustCreate("doomed");
  const std::string started = MustIssue({.activity_arn = arn, .correlation = "a"});
  const std::string q1 = MustIssue({.activity_arn = arn, .correlation = "b"});
  const std::string q2 = MustIssue({.activity_arn = arn, .correlation = "c"});
  ASSERT_EQ(Take(arn, "w").token, started);
  AdvanceAndSync(1'000);

  ASSERT_TRUE(IsOk(DeleteActivity(arn)));
  ASSERT_TRUE(IsOk(DeleteActivity(arn)));

  const std::string cause = "The activity " + arn + " does not exist.";
  std::vector<OutcomeEvent> events = Events();
  ASSERT_EQ(events.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const OutcomeEvent& e = events[i];
    EXPECT_EQ(e.seq, i + 1);
    EXPECT_EQ(e.token, i == 0 ? q1 : q2) << "queued tasks fail in queue order";
    EXPECT_EQ(e.correlation, i == 0 ? "b" : "c");
    EXPECT_EQ(e.state, TaskState::kFailed);
    EXPECT_TRUE(e.has_error);
    EXPECT_TRUE(e.has_cause);
    EXPECT_EQ(e.error, "States.Runtime");
    EXPECT_EQ(e.cause, cause);
    EXPECT_EQ(e.activity_arn, arn);
    EXPECT_EQ(e.time_ms, kT0 + 1'000);
  }
  Result<TaskDescription> d = Describe(q1);
  EXPECT_EQ(d.value.state, TaskState::kFailed);
  EXPECT_EQ(d.value.error, "States.Runtime");
  EXPECT_EQ(d.value.cause, cause);
  Result<CompletionReply> late = Success(q2, "{}");
  EXPECT_TRUE(IsRefusal(late, Refusal::kAlreadyCompleted, TaskState::kFailed));
  EXPECT_EQ(late.error.recorded_error(), "States.Runtime");
  EXPECT_EQ(Stats().live_tasks, 1u);
  EXPECT_EQ(Queued(arn), -1);

  // The started task runs on: its worker heartbeats and completes it.
  EXPECT_EQ(StateOf(started), TaskState::kStarted);
  EXPECT_TRUE(IsOk(Heartbeat(started)));
  ASSERT_TRUE(IsOk(Success(started, R"({"done":1})")));
  events = Events(3);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].token, started);
  EXPECT_EQ(events[0].state, TaskState::kSucceeded);
  EXPECT_EQ(events[0].output, R"({"done":1})");
  EXPECT_EQ(events[0].activity_arn, arn);
  EXPECT_EQ(events[0].correlation, "a");
  EXPECT_EQ(Stats().live_tasks, 0u);
}

TEST_F(EngineTest, DeletingAnActivityAnswersItsWaitingPolls) {
  const std::string arn = MustCreate("doomed2");
  Poll p = StartPoll(arn, "w");
  Sync();
  ASSERT_FALSE(p.reply.ready());
  ASSERT_TRUE(IsOk(DeleteActivity(arn)));
  Sync();
  ASSERT_TRUE(p.reply.ready()) << "a poll on a deleted activity must not wait forever";
  Result<GetActivityTaskReply> r = p.reply.Get();
  if (r.ok()) {
    EXPECT_TRUE(r.value.token.empty());
  } else {
    EXPECT_TRUE(
        IsError(r, ErrorCode::kActivityDoesNotExist, "Activity Does Not Exist: '" + arn + "'"));
  }
  EXPECT_EQ(Stats().waiting_polls, 0u);
}

// =============================================================================================
// Cancel

TEST_F(EngineTest, CancelQueuedAndStartedTasks) {
  const std::string arn = MustCreate("cancel");
  const std::string queued = MustIssue({.activity_arn = arn, .correlation = "q"});
  const std::string started = MustIssue({.correlation = "s"});

  Result<CompletionReply> c1 = Cancel(queued);
  ASSERT_TRUE(IsOk(c1));
  EXPECT_FALSE(c1.value.duplicate);
  EXPECT_EQ(StateOf(queued), TaskState::kCancelled);
  EXPECT_EQ(Queued(arn), 0);
  Result<CompletionReply> c1again = Cancel(queued);
  ASSERT_TRUE(IsOk(c1again));
  EXPECT_TRUE(c1again.value.duplicate);

  Result<CompletionReply> c2 = Cancel(started);
  ASSERT_TRUE(IsOk(c2));
  EXPECT_FALSE(c2.value.duplicate);
  EXPECT_TRUE(Cancel(started).value.duplicate);
  EXPECT_EQ(StateOf(started), TaskState::kCancelled);

  EXPECT_TRUE(IsRefusal(Success(started, "{}"), Refusal::kCancelled, TaskState::kCancelled));
  EXPECT_TRUE(
      IsRefusal(Failure(started, "e", std::nullopt), Refusal::kCancelled, TaskState::kCancelled));
  EXPECT_TRUE(IsRefusal(Heartbeat(started), Refusal::kCancelled, TaskState::kCancelled));
  EXPECT_TRUE(IsRefusal(Success(queued, "{}"), Refusal::kCancelled, TaskState::kCancelled));

  std::vector<OutcomeEvent> events = Events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].token, queued);
  EXPECT_EQ(events[0].state, TaskState::kCancelled);
  EXPECT_EQ(events[0].activity_arn, arn);
  EXPECT_EQ(events[0].correlation, "q");
  EXPECT_EQ(events[1].token, started);
  EXPECT_EQ(events[1].state, TaskState::kCancelled);
  EXPECT_EQ(events[1].activity_arn, "");
  EXPECT_EQ(events[1].correlation, "s");

  // A cancelled queued task is never handed out.
  Poll p = StartPoll(arn, "w");
  Sync();
  EXPECT_FALSE(p.reply.ready());
  engine_->WithdrawPoll(p.id);
  EXPECT_TRUE(p.reply.Get().value.token.empty());

  // Cancelling a completed task is refused with the completion.
  const std::string done = MustIssue({});
  ASSERT_TRUE(IsOk(Success(done, "1")));
  Result<CompletionReply> late = Cancel(done);
  EXPECT_TRUE(IsRefusal(late, Refusal::kAlreadyCompleted, TaskState::kSucceeded));
  EXPECT_EQ(late.error.recorded_output(), "1");
  EXPECT_EQ(Stats().live_tasks, 0u);
}

// =============================================================================================
// Idempotency keys

TEST_F(EngineTest, IdempotencyKeyReturnsTheSameToken) {
  Result<IssueTaskReply> a = Issue({.input = R"({"a":1})", .idempotency_key = "k1"});
  ASSERT_TRUE(IsOk(a));
  EXPECT_FALSE(a.value.existing);
  Result<IssueTaskReply> b = Issue({.input = R"({"a":2})", .idempotency_key = "k1"});
  ASSERT_TRUE(IsOk(b));
  EXPECT_TRUE(b.value.existing);
  EXPECT_EQ(b.value.token, a.value.token);
  EXPECT_EQ(Stats().live_tasks, 1u);
  EXPECT_EQ(Describe(a.value.token).value.input, R"({"a":1})") << "the first issue wins";

  // Two issues with one key in the same batch.
  Reply<IssueTaskReply> c, d;
  {
    EngineBlocker block(engine_.get());
    engine_->IssueTask({.idempotency_key = "k2"}, c.cb());
    engine_->IssueTask({.idempotency_key = "k2"}, d.cb());
  }
  Result<IssueTaskReply> rc = c.Get(), rd = d.Get();
  ASSERT_TRUE(IsOk(rc));
  ASSERT_TRUE(IsOk(rd));
  EXPECT_EQ(rc.value.token, rd.value.token);
  EXPECT_FALSE(rc.value.existing);
  EXPECT_TRUE(rd.value.existing);
  EXPECT_NE(rc.value.token, a.value.token);
  EXPECT_EQ(Stats().live_tasks, 2u);

  // The key keeps naming the task after it ended (within retention).
  ASSERT_TRUE(IsOk(Success(a.value.token, "{}")));
  Result<IssueTaskReply> e = Issue({.idempotency_key = "k1"});
  ASSERT_TRUE(IsOk(e));
  EXPECT_TRUE(e.value.existing);
  EXPECT_EQ(e.value.token, a.value.token);
  EXPECT_EQ(Stats().live_tasks, 1u);
}

TEST_F(EngineTest, RetentionForgetsEndedTasksAndTheirKeys) {
  options_.retention_ms = 60'000;
  ASSERT_NO_FATAL_FAILURE(Restart());
  const std::string token = MustIssue({.idempotency_key = "r1"});
  ASSERT_TRUE(IsOk(Success(token, "{}")));
  AdvanceAndSync(59'000);
  EXPECT_EQ(StateOf(token), TaskState::kSucceeded);
  EXPECT_TRUE(Success(token, "{}").value.duplicate);

  AdvanceAndSync(2'000);
  EXPECT_TRUE(IsError(Describe(token), ErrorCode::kTaskDoesNotExist));
  EXPECT_TRUE(IsError(Success(token, "{}"), ErrorCode::kTaskDoesNotExist));
  Result<IssueTaskReply> again = Issue({.idempotency_key = "r1"});
  ASSERT_TRUE(IsOk(again));
  EXPECT_FALSE(again.value.existing);
  EXPECT_NE(again.value.token, token);
  EXPECT_EQ(Events().size(), 1u) << "retention does not touch the outcome stream";
}

// =============================================================================================
// The outcome stream

TEST_F(EngineTest, EventsAreGaplessInCommitOrderWithEveryField) {
  const std::string arn = MustCreate("ev");
  const std::string c1 = MustIssue({.correlation = "corr-1"});
  const std::string c2 = MustIssue({.correlation = "corr-2"});
  const std::string c3 = MustIssue({});
  const std::string a1 = MustIssue({.activity_arn = arn, .correlation = "corr-a"});
  EXPECT_EQ(LastSeq(), 0u);
  EXPECT_TRUE(Events().empty());

  AdvanceAndSync(10);
  ASSERT_TRUE(IsOk(Success(c1, R"({"r":1})")));
  AdvanceAndSync(10);
  ASSERT_TRUE(IsOk(Failure(c2, "Err", "Cause")));
  AdvanceAndSync(10);
  ASSERT_TRUE(IsOk(Cancel(c3)));
  ASSERT_EQ(Take(arn).token, a1);
  AdvanceAndSync(10);
  ASSERT_TRUE(IsOk(Success(a1, "2")));
  Sync();

  EXPECT_EQ(LastSeq(), 4u);
  std::vector<OutcomeEvent> e = Events();
  ASSERT_EQ(e.size(), 4u);
  for (size_t i = 0; i < e.size(); ++i) {
    EXPECT_EQ(e[i].seq, i + 1);
    EXPECT_EQ(e[i].time_ms, kT0 + 10 * static_cast<int64_t>(i + 1));
    EXPECT_EQ(e[i].timeout_kind, TimeoutKind::kNone);
  }
  EXPECT_EQ(e[0].token, c1);
  EXPECT_EQ(e[0].state, TaskState::kSucceeded);
  EXPECT_EQ(e[0].output, R"({"r":1})");
  EXPECT_FALSE(e[0].has_error);
  EXPECT_FALSE(e[0].has_cause);
  EXPECT_EQ(e[0].correlation, "corr-1");
  EXPECT_EQ(e[0].activity_arn, "");

  EXPECT_EQ(e[1].token, c2);
  EXPECT_EQ(e[1].state, TaskState::kFailed);
  EXPECT_EQ(e[1].output, "");
  EXPECT_TRUE(e[1].has_error);
  EXPECT_TRUE(e[1].has_cause);
  EXPECT_EQ(e[1].error, "Err");
  EXPECT_EQ(e[1].cause, "Cause");
  EXPECT_EQ(e[1].correlation, "corr-2");

  EXPECT_EQ(e[2].token, c3);
  EXPECT_EQ(e[2].state, TaskState::kCancelled);
  EXPECT_EQ(e[2].correlation, "");

  EXPECT_EQ(e[3].token, a1);
  EXPECT_EQ(e[3].state, TaskState::kSucceeded);
  EXPECT_EQ(e[3].output, "2");
  EXPECT_EQ(e[3].activity_arn, arn);
  EXPECT_EQ(e[3].correlation, "corr-a");

  std::vector<OutcomeEvent> middle = Events(2, 2);
  ASSERT_EQ(middle.size(), 2u);
  EXPECT_EQ(middle[0].seq, 2u);
  EXPECT_EQ(middle[1].seq, 3u);
  EXPECT_TRUE(Events(5).empty());
  EXPECT_TRUE(Events(1, 0).empty());
}

TEST_F(EngineTest, ReplyIsSentOnlyWhenItsEventIsReadable) {
  // A front end that answers the worker and then tells subscribers "read from LastEventSeq"
  // must find the event: when a completion's reply runs, its event is durable, so LastEventSeq
  // and ReadEvents must already show it.
  const std::string token = MustIssue({});
  struct Seen {
    uint64_t last_seq = 0;
    size_t readable = 0;
  };
  auto seen = std::make_shared<Seen>();
  Engine* engine = engine_.get();
  Result<CompletionReply> r = Call<CompletionReply>([&](Callback<CompletionReply> done) {
    engine_->SendTaskSuccess({token, "{}"}, [engine, seen, done](Result<CompletionReply> res) {
      seen->last_seq = engine->LastEventSeq();  // on the engine thread, inside the reply
      seen->readable = engine->ReadEvents(1, 10).value.size();
      done(std::move(res));
    });
  });
  ASSERT_TRUE(IsOk(r));
  EXPECT_EQ(seen->last_seq, 1u) << "LastEventSeq lags the reply of the completion that made it";
  EXPECT_EQ(seen->readable, 1u) << "ReadEvents misses an event whose reply was already sent";
}

// Every group commit that writes is timed on the writer thread; reading stats writes nothing.
TEST_F(EngineTest, StatsTimeEveryGroupCommitThatWrites) {
  auto commits = [](const EngineStats& st) { return LatencyCount(st.commit_latency_us); };
  const uint64_t at_open = commits(Stats());
  EXPECT_EQ(commits(Stats()), at_open) << "a stats call is not a write";
  for (int i = 0; i < 3; ++i) MustIssue({});  // each waits for its own group commit
  const EngineStats st = Stats();
  EXPECT_GE(commits(st), at_open + 3);
  EXPECT_LE(commits(st), st.batches);
  size_t top = 0;  // the slowest commit's bucket
  for (size_t i = 0; i < st.commit_latency_us.size(); ++i) {
    if (st.commit_latency_us[i] != 0) top = i;
  }
  EXPECT_EQ(LatencyBuckets::IndexOf(st.commit_latency_max_us), top);
}

TEST_F(EngineTest, ConsumersAcksAndTrimming) {
  Result<ConsumerInfo> a = Register("a");
  ASSERT_TRUE(IsOk(a));
  EXPECT_EQ(a.value.name, "a");
  EXPECT_EQ(a.value.acked_seq, 0u);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(IsOk(Success(MustIssue({}), std::to_string(i))));
  EXPECT_EQ(LastSeq(), 5u);

  Result<ConsumerInfo> b = Register("b");
  ASSERT_TRUE(IsOk(b));
  EXPECT_EQ(b.value.acked_seq, 5u) << "a new consumer starts after the last event";
  Result<ConsumerInfo> a_again = Register("a");
  ASSERT_TRUE(IsOk(a_again));
  EXPECT_EQ(a_again.value.acked_seq, 0u) << "registering is idempotent";

  EXPECT_TRUE(IsError(Ack("a", 6), ErrorCode::kValidation)) << "beyond the last event";
  EXPECT_TRUE(IsError(Ack("nobody", 1), ErrorCode::kValidation));
  EXPECT_EQ(Events().size(), 5u) << "a's ack of 0 keeps everything";

  ASSERT_TRUE(IsOk(Ack("a", 2)));
  EngineStats st = Stats();
  EXPECT_EQ(st.events_not_acked, 3u);
  ASSERT_EQ(st.consumers.size(), 2u);
  // Trimmed below the slowest consumer's ack (events 1 and 2), never above it.
  std::vector<OutcomeEvent> from3 = Events(3);
  ASSERT_EQ(from3.size(), 3u);
  EXPECT_EQ(from3.front().seq, 3u);
  std::vector<OutcomeEvent> from1 = Events(1);
  ASSERT_EQ(from1.size(), 3u) << "ReadEvents(1, ...) starts at the trim point";
  EXPECT_EQ(from1.front().seq, 3u);
  std::vector<OutcomeEvent> from1_two = Events(1, 2);
  ASSERT_EQ(from1_two.size(), 2u) << "at most max events from the trim point";
  EXPECT_EQ(from1_two.front().seq, 3u);

  ASSERT_TRUE(IsOk(Ack("a", 1))) << "an older ack is fine and changes nothing";
  EXPECT_EQ(Events(3).size(), 3u);

  ASSERT_TRUE(IsOk(Ack("a", 5)));
  EXPECT_TRUE(Events(1).empty()) << "both consumers acked everything";
  EXPECT_EQ(LastSeq(), 5u);
  EXPECT_EQ(Stats().events_not_acked, 0u);

  // Deleting the slowest consumer lets the stream trim up to the next one.
  ASSERT_TRUE(IsOk(Success(MustIssue({}), "6")));
  ASSERT_TRUE(IsOk(Success(MustIssue({}), "7")));
  ASSERT_TRUE(IsOk(Ack("b", 7)));
  EXPECT_EQ(Events(6).size(), 2u) << "a (acked 5) still holds 6 and 7";
  ASSERT_TRUE(IsOk(Call<Empty>([&](auto cb) { engine_->DeleteConsumer("a", std::move(cb)); })));
  EXPECT_TRUE(Events(6).empty());
  EXPECT_EQ(Stats().consumers.size(), 1u);
}

TEST_F(EngineTest, EventListenerGetsTheNewLastSeq) {
  struct Calls {
    std::mutex mu;
    std::vector<uint64_t> seqs;
    std::vector<uint64_t> visible;  // LastEventSeq() seen inside the listener
  };
  auto calls = std::make_shared<Calls>();
  Engine* engine = engine_.get();
  engine_->AddEventListener([calls, engine](uint64_t last_seq) {
    std::lock_guard<std::mutex> lock(calls->mu);
    calls->seqs.push_back(last_seq);
    calls->visible.push_back(engine->LastEventSeq());
  });
  const std::string t1 = MustIssue({}), t2 = MustIssue({}), t3 = MustIssue({});
  ASSERT_TRUE(IsOk(Success(t1, "{}")));
  Sync();
  {
    // Two completions in one batch: one call, with the higher seq.
    Reply<CompletionReply> r2, r3;
    {
      EngineBlocker block(engine_.get());
      engine_->SendTaskSuccess({t2, "{}"}, r2.cb());
      engine_->CancelTask({t3}, r3.cb());
    }
    ASSERT_TRUE(IsOk(r2.Get()));
    ASSERT_TRUE(IsOk(r3.Get()));
  }
  Sync();
  MustIssue({});  // a batch without events: no call
  Sync();
  std::lock_guard<std::mutex> lock(calls->mu);
  // Two completions land in one batch (one call with seq 3) or, when the engine thread took the
  // first one while the writer was held, in two consecutive batches (calls 2 then 3). Either
  // way: one call per batch with new events, strictly increasing, ending at the last seq, each
  // already visible through LastEventSeq; the batch without events made no call.
  ASSERT_GE(calls->seqs.size(), 2u);
  ASSERT_LE(calls->seqs.size(), 3u);
  EXPECT_EQ(calls->seqs.front(), 1u);
  EXPECT_EQ(calls->seqs.back(), 3u);
  EXPECT_TRUE(std::is_sorted(calls->seqs.begin(), calls->seqs.end()));
  EXPECT_EQ(std::adjacent_find(calls->seqs.begin(), calls->seqs.end()), calls->seqs.end());
  EXPECT_EQ(calls->visible, calls->seqs);
}

// =============================================================================================
// Describe

TEST_F(EngineTest, DescribeCallbackTask) {
  const std::string token = MustIssue(
      {.input = R"({"in":1})", .timeout_s = 100, .heartbeat_s = 10, .correlation = "corr"});
  Result<TaskDescription> r = Describe(token);
  ASSERT_TRUE(IsOk(r));
  const TaskDescription& d = r.value;
  EXPECT_EQ(d.state, TaskState::kStarted);
  EXPECT_EQ(d.timeout_kind, TimeoutKind::kNone);
  EXPECT_EQ(d.activity_arn, "");
  EXPECT_EQ(d.issued_ms, kT0);
  EXPECT_EQ(d.started_ms, kT0) << "a callback task starts at issue";
  EXPECT_EQ(d.ended_ms, 0);
  EXPECT_EQ(d.heartbeat_deadline_ms, kT0 + 10'000);
  EXPECT_EQ(d.overall_deadline_ms, kT0 + 100'000);
  EXPECT_EQ(d.schedule_to_start_deadline_ms, 0);
  EXPECT_EQ(d.timeout_s, 100u);
  EXPECT_EQ(d.heartbeat_s, 10u);
  EXPECT_EQ(d.schedule_to_start_s, 0u);
  EXPECT_EQ(d.worker, "");
  EXPECT_EQ(d.input, R"({"in":1})");
  EXPECT_EQ(d.output, "");
  EXPECT_FALSE(d.has_error);
  EXPECT_FALSE(d.has_cause);
  EXPECT_EQ(d.correlation, "corr");

  AdvanceAndSync(3'000);
  ASSERT_TRUE(IsOk(Heartbeat(token)));
  Result<TaskDescription> after_hb = Describe(token);
  EXPECT_EQ(after_hb.value.heartbeat_deadline_ms, kT0 + 13'000);
  EXPECT_EQ(after_hb.value.overall_deadline_ms, kT0 + 100'000) << "a heartbeat moves one clock";

  AdvanceAndSync(1'000);
  ASSERT_TRUE(IsOk(Success(token, R"({"out":2})")));
  Result<TaskDescription> done = Describe(token);
  ASSERT_TRUE(IsOk(done));
  EXPECT_EQ(done.value.state, TaskState::kSucceeded);
  EXPECT_EQ(done.value.issued_ms, kT0);
  EXPECT_EQ(done.value.started_ms, kT0);
  EXPECT_EQ(done.value.ended_ms, kT0 + 4'000);
  EXPECT_EQ(done.value.output, R"({"out":2})");
  EXPECT_EQ(done.value.input, R"({"in":1})");
  EXPECT_EQ(done.value.correlation, "corr");
  EXPECT_EQ(done.value.timeout_kind, TimeoutKind::kNone);
}

TEST_F(EngineTest, DescribeActivityTaskThroughItsLife) {
  const std::string arn = MustCreate("desc");
  const std::string token = MustIssue({.activity_arn = arn,
                                       .input = R"({"a":1})",
                                       .timeout_s = 60,
                                       .heartbeat_s = 20,
                                       .schedule_to_start_s = 300,
                                       .correlation = "c"});
  Result<TaskDescription> queued = Describe(token);
  ASSERT_TRUE(IsOk(queued));
  EXPECT_EQ(queued.value.state, TaskState::kScheduled);
  EXPECT_EQ(queued.value.activity_arn, arn);
  EXPECT_EQ(queued.value.issued_ms, kT0);
  EXPECT_EQ(queued.value.started_ms, 0);
  EXPECT_EQ(queued.value.schedule_to_start_deadline_ms, kT0 + 300'000);
  EXPECT_EQ(queued.value.heartbeat_deadline_ms, 0);
  EXPECT_EQ(queued.value.overall_deadline_ms, 0);
  EXPECT_EQ(queued.value.schedule_to_start_s, 300u);
  EXPECT_EQ(queued.value.timeout_s, 60u);
  EXPECT_EQ(queued.value.heartbeat_s, 20u);
  EXPECT_EQ(queued.value.input, R"({"a":1})");
  EXPECT_EQ(queued.value.correlation, "c");

  AdvanceAndSync(5'000);
  ASSERT_EQ(Take(arn, "worker-7").token, token);
  Result<TaskDescription> started = Describe(token);
  ASSERT_TRUE(IsOk(started));
  EXPECT_EQ(started.value.state, TaskState::kStarted);
  EXPECT_EQ(started.value.started_ms, kT0 + 5'000);
  EXPECT_EQ(started.value.worker, "worker-7");
  EXPECT_EQ(started.value.overall_deadline_ms, kT0 + 65'000);
  EXPECT_EQ(started.value.heartbeat_deadline_ms, kT0 + 25'000);
  EXPECT_EQ(started.value.schedule_to_start_deadline_ms, 0);

  AdvanceAndSync(1'000);
  ASSERT_TRUE(IsOk(Failure(token, "E", "C")));
  Result<TaskDescription> failed = Describe(token);
  ASSERT_TRUE(IsOk(failed));
  EXPECT_EQ(failed.value.state, TaskState::kFailed);
  EXPECT_EQ(failed.value.activity_arn, arn);
  EXPECT_EQ(failed.value.issued_ms, kT0);
  EXPECT_EQ(failed.value.started_ms, kT0 + 5'000);
  EXPECT_EQ(failed.value.ended_ms, kT0 + 6'000);
  EXPECT_EQ(failed.value.worker, "worker-7");
  EXPECT_TRUE(failed.value.has_error);
  EXPECT_TRUE(failed.value.has_cause);
  EXPECT_EQ(failed.value.error, "E");
  EXPECT_EQ(failed.value.cause, "C");
}

// =============================================================================================
// Overload, storage failure, Stop

TEST_F(EngineTest, FullCommandQueueAnswersThrottlingAtOnce) {
  options_.command_queue_max = 8;
  options_.batch_commands_max = 1;
  ASSERT_NO_FATAL_FAILURE(Restart());
  // While the writer is held, the engine thread takes at most one more batch (one command),
  // then waits for the writer: the queue then fills. So the 10th command at the latest, and
  // no earlier than the 9th, finds it full and is answered at once on this thread.
  std::vector<std::unique_ptr<Reply<Empty>>> admitted;
  std::vector<std::unique_ptr<Reply<IssueTaskReply>>> admitted_issues;
  Reply<Empty> over;
  Reply<IssueTaskReply> issue_over;
  {
    EngineBlocker block(engine_.get());
    for (int i = 0; i < 10 && !over.ready(); ++i) {
      auto r = std::make_unique<Reply<Empty>>();
      engine_->Sync(r->cb());
      if (r->ready()) {
        over.cb()(r->Get());
      } else {
        admitted.push_back(std::move(r));
      }
    }
    ASSERT_TRUE(over.ready()) << "a full queue answers on the caller's thread, at once";
    // The engine thread may still take its one command after that rejection, freeing one slot
    // once: so of two issues, at least the second is refused at once.
    for (int i = 0; i < 2 && !issue_over.ready(); ++i) {
      auto r = std::make_unique<Reply<IssueTaskReply>>();
      engine_->IssueTask({}, r->cb());
      if (r->ready()) {
        issue_over.cb()(r->Get());
      } else {
        admitted_issues.push_back(std::move(r));
      }
    }
    EXPECT_TRUE(issue_over.ready());
    engine_->WithdrawPoll(12345);  // releases resources: admitted even when full, no reply
  }
  EXPECT_GE(admitted.size() + admitted_issues.size(), 8u);
  EXPECT_LE(admitted.size() + admitted_issues.size(), 9u);
  Result<Empty> r = over.Get();
  EXPECT_TRUE(IsError(r, ErrorCode::kOverloaded));
  EXPECT_STREQ(ErrorCodeName(r.error.code), "ThrottlingException");
  EXPECT_TRUE(IsError(issue_over.Get(), ErrorCode::kOverloaded));
  for (auto& q : admitted) EXPECT_TRUE(IsOk(q->Get()));
  for (auto& q : admitted_issues) EXPECT_TRUE(IsOk(q->Get()));
  const EngineStats after = Stats();
  EXPECT_EQ(after.live_tasks, admitted_issues.size()) << "a refused issue creates nothing";
  // Stats say so: the refusals (one Sync, and one or two issues), the bound, an empty queue.
  EXPECT_GE(after.queue_refusals, 2u);
  EXPECT_LE(after.queue_refusals, 3u);
  EXPECT_EQ(after.queue_max, 8u);
  EXPECT_EQ(after.queue_depth, 0u);
}

TEST_F(EngineTest, StorageFailurePoisonsTheEngine) {
  const std::string arn = MustCreate("kept");
  const std::string token = MustIssue({});
  Reply<CompletionReply> success;
  Reply<IssueTaskReply> issue;
  Reply<ActivityInfo> create;
  Reply<Empty> sync;
  {
    MemoryStore* store = memory_store_;
    EngineBlocker block(engine_.get(), [store] { store->FailNextWrite(); });
    // These four form the next batch, whose write fails.
    engine_->SendTaskSuccess({token, "{}"}, success.cb());
    engine_->IssueTask({}, issue.cb());
    engine_->CreateActivity({"lost"}, create.cb());
    engine_->Sync(sync.cb());
  }
  EXPECT_TRUE(IsError(success.Get(), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(issue.Get(), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(create.Get(), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(sync.Get(), ErrorCode::kUnavailable));

  // Every later call too.
  EXPECT_TRUE(IsError(Describe(token), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(Heartbeat(token), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(Success(token, "{}"), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(Issue({}), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(CreateActivity("x"), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(DescribeActivity(arn), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(StartPoll(arn, "w").reply.Get(), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(Register("c"), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(Call<Empty>([&](auto cb) { engine_->Sync(std::move(cb)); }),
                      ErrorCode::kUnavailable));
  EXPECT_EQ(engine_->LastEventSeq(), 0u);
  EXPECT_TRUE(engine_->ReadEvents(1, 10).value.empty());

  // Nothing of the failed batch was acknowledged, and nothing of it reached the disk.
  ASSERT_NO_FATAL_FAILURE(Restart());
  EXPECT_EQ(StateOf(token), TaskState::kStarted);
  EXPECT_TRUE(IsError(DescribeActivity(Arn("lost")), ErrorCode::kActivityDoesNotExist));
  EXPECT_TRUE(IsOk(DescribeActivity(arn)));
  EXPECT_EQ(Stats().live_tasks, 1u);
  ASSERT_TRUE(IsOk(Success(token, "{}")));
  EXPECT_EQ(Events().size(), 1u);
}

// Engine::Cork: a burst of submissions from one thread wakes the engine thread once, at
// Uncork, and every command is answered as usual. EngineStats::submit_wakes counts the wake-ups
// (the notifications, not the thread's behaviour), so the counts below are exact: after an
// answered Stats the queue is empty, so the first command of a burst needs a wake-up and the
// rest do not; the closing Stats, uncorked, needs one more.
TEST_F(EngineTest, CorkedSubmissionsWakeTheEngineOnceAtUncork) {
  const uint64_t wakes_before = Stats().submit_wakes;
  std::vector<Reply<IssueTaskReply>> issued(10);
  {
    CorkGuard cork(engine_.get());
    for (auto& r : issued) engine_->IssueTask({.input = R"({"corked":true})"}, r.cb());
  }
  std::vector<std::string> tokens;
  for (auto& r : issued) {
    Result<IssueTaskReply> got = r.Get();
    ASSERT_TRUE(IsOk(got));
    tokens.push_back(got.value.token);
  }
  EXPECT_EQ(Stats().submit_wakes - wakes_before, 2u) << "one for the burst, one for Stats";
  // They are ordinary tasks.
  std::vector<Reply<CompletionReply>> done(tokens.size());
  {
    CorkGuard cork(engine_.get());
    for (size_t i = 0; i < tokens.size(); ++i) {
      engine_->SendTaskSuccess({tokens[i], R"({"i":)" + std::to_string(i) + "}"}, done[i].cb());
    }
  }
  for (auto& r : done) EXPECT_TRUE(IsOk(r.Get()));
  EXPECT_EQ(Stats().live_tasks, 0u);
  EXPECT_EQ(Events().size(), tokens.size());
}

// A long corked burst does not leave the engine thread idle until Uncork: once
// limits::kCorkedCommandsPerWake commands were held, the last of them wakes it, and they are
// answered while the thread is still corked. A command after that, into the then empty queue,
// needs the wake-up at Uncork. (The wake-up count is what shows the early wake; the engine
// thread's 100 ms idle wait would also answer them eventually.) Then a second long burst: the
// count starts again at the command that found the queue empty.
TEST_F(EngineTest, ALongCorkedBurstWakesTheEngineOnTheWay) {
  const uint64_t wakes_before = Stats().submit_wakes;
  std::vector<Reply<IssueTaskReply>> issued(limits::kCorkedCommandsPerWake);
  Reply<IssueTaskReply> last;
  {
    CorkGuard cork(engine_.get());
    for (auto& r : issued) engine_->IssueTask({}, r.cb());
    for (auto& r : issued) ASSERT_TRUE(IsOk(r.Get())) << "answered before Uncork";
    engine_->IssueTask({}, last.cb());
  }
  ASSERT_TRUE(IsOk(last.Get()));
  EXPECT_EQ(Stats().submit_wakes - wakes_before, 3u)
      << "one on the way, one at Uncork for the last command, one for Stats";

  const uint64_t wakes_between = Stats().submit_wakes;
  std::vector<Reply<IssueTaskReply>> again(2 * limits::kCorkedCommandsPerWake);
  {
    CorkGuard cork(engine_.get());
    for (size_t i = 0; i < limits::kCorkedCommandsPerWake; ++i) {
      engine_->IssueTask({}, again[i].cb());
    }
    for (size_t i = 0; i < limits::kCorkedCommandsPerWake; ++i) ASSERT_TRUE(IsOk(again[i].Get()));
    for (size_t i = limits::kCorkedCommandsPerWake; i < again.size(); ++i) {
      engine_->IssueTask({}, again[i].cb());
    }
    for (size_t i = limits::kCorkedCommandsPerWake; i < again.size(); ++i) {
      ASSERT_TRUE(IsOk(again[i].Get())) << "the second run of the burst wakes it too";
    }
  }
  EXPECT_EQ(Stats().submit_wakes - wakes_between, 3u) << "one per run of held commands, and Stats";
  EXPECT_EQ(Stats().live_tasks, 3 * limits::kCorkedCommandsPerWake + 1);
}

TEST_F(EngineTest, StopAnswersWaitingPollsAndLaterCallsAreUnavailable) {
  const std::string arn = MustCreate("stop");
  Poll p = StartPoll(arn, "w");
  Sync();
  ASSERT_FALSE(p.reply.ready());
  Reply<IssueTaskReply> queued;  // enqueued before Stop: finished and durable
  engine_->IssueTask({.input = R"({"q":1})"}, queued.cb());
  engine_->Stop();

  Result<GetActivityTaskReply> polled = p.reply.Get();
  ASSERT_TRUE(IsOk(polled));
  EXPECT_TRUE(polled.value.token.empty());
  Result<IssueTaskReply> issued = queued.Get();
  ASSERT_TRUE(IsOk(issued));

  EXPECT_TRUE(IsError(Issue({}), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(Describe(issued.value.token), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(StartPoll(arn, "w").reply.Get(), ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(Call<EngineStats>([&](auto cb) { engine_->GetStats(std::move(cb)); }),
                      ErrorCode::kUnavailable));
  EXPECT_TRUE(IsError(Call<Empty>([&](auto cb) { engine_->Sync(std::move(cb)); }),
                      ErrorCode::kUnavailable));
  engine_->WithdrawPoll(p.id);
  engine_->ReturnTask(issued.value.token);
  engine_->Stop();  // idempotent

  ASSERT_NO_FATAL_FAILURE(Open());
  Result<TaskDescription> d = Describe(issued.value.token);
  ASSERT_TRUE(IsOk(d));
  EXPECT_EQ(d.value.input, R"({"q":1})");
}

}  // namespace
}  // namespace tw

namespace tw::engine_test {
namespace {

// Format version 1 wrote a task's end into its state record, with the worker in it; version 2
// writes a separate end record and keeps the start. Tasks that ended under version 1 read the
// same afterwards: described, refused, and recognised as duplicates.
TEST_F(EngineTest, TasksEndedUnderFormatVersion1ReadTheSame) {
  const std::string arn = MustCreate("v1");
  ASSERT_TRUE(IsOk(Issue({.activity_arn = arn})));
  const std::string token = Take(arn, "old-worker").token;
  std::unique_ptr<TokenCodec> codec;
  ASSERT_TRUE(TokenCodec::OpenKeyFile(options_.token_key_file, &codec).ok());
  TaskId id;
  uint16_t shard = 0;
  ASSERT_TRUE(codec->Decode(token, &id, &shard));
  engine_->Stop();
  engine_.reset();
  {
    // What a version 1 engine wrote when the task succeeded.
    MemoryStore store(disk_);
    std::unique_ptr<WriteBatch> b = store.NewBatch();
    TaskStateRecord end;
    end.state = TaskState::kSucceeded;
    end.started_ms = kT0;
    end.ended_ms = kT0 + 5;
    end.worker = "old-worker";
    end.output = R"({"v":1})";
    b->PutTaskState(id, end);
    b->DeleteLive(id);
    ASSERT_TRUE(store.Write(b.get(), true).ok());
  }
  ASSERT_NO_FATAL_FAILURE(Open());

  Result<TaskDescription> d = Describe(token);
  ASSERT_TRUE(IsOk(d));
  EXPECT_EQ(d.value.state, TaskState::kSucceeded);
  EXPECT_EQ(d.value.output, R"({"v":1})");
  EXPECT_EQ(d.value.worker, "old-worker");
  EXPECT_EQ(d.value.ended_ms, kT0 + 5);
  Result<CompletionReply> again = Success(token, R"({"v":1})");
  ASSERT_TRUE(IsOk(again));
  EXPECT_TRUE(again.value.duplicate);
  EXPECT_TRUE(IsRefusal(Success(token, "{}"), Refusal::kAlreadyCompleted, TaskState::kSucceeded));
}

// Version 2: the end record leaves the start record alone, and Describe shows both.
TEST_F(EngineTest, DescribeOfAnEndedActivityTaskShowsItsWorkerAndTimes) {
  const std::string arn = MustCreate("ended");
  ASSERT_TRUE(IsOk(Issue({.activity_arn = arn})));
  clock_.Advance(7);
  const std::string token = Take(arn, "w-1").token;
  clock_.Advance(5);
  ASSERT_TRUE(IsOk(Success(token, R"({"ok":true})")));
  for (int pass = 0; pass < 2; ++pass) {
    Result<TaskDescription> d = Describe(token);
    ASSERT_TRUE(IsOk(d));
    EXPECT_EQ(d.value.state, TaskState::kSucceeded);
    EXPECT_EQ(d.value.worker, "w-1");
    EXPECT_EQ(d.value.started_ms, kT0 + 7);
    EXPECT_EQ(d.value.ended_ms, kT0 + 12);
    EXPECT_EQ(d.value.output, R"({"ok":true})");
    ASSERT_NO_FATAL_FAILURE(Restart());  // then from the store rather than the overlay
  }
}

}  // namespace
}  // namespace tw::engine_test
