// Request validation: pure functions, no state, callable from any thread. Each Validate* returns
// an Error whose code is kOk when the value is acceptable, else the AWS error code and the exact
// AWS message text recorded in SEMANTICS.md.
//
// Lengths: payloads (task input, success output) are limited in UTF-8 BYTES; every other limit
// ("chars") counts Unicode code points, so "é" is 1 char (2 bytes) and "😀" is 1 char (4 bytes).
//
// Check order within one field: missing / too short, too long, invalid UTF-8, content rules.
// Invalid UTF-8 has no AWS text (AWS's JSON front end cannot carry it; Cap'n Proto Text can), so
// for fields without a content error of their own it is a ValidationException reading
// "... Member must be valid UTF-8" in the AWS shape (see InvalidUtf8Message).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "engine/errors.h"
#include "engine/types.h"

namespace tw {

// True iff s is well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates (U+D800..DFFF),
// nothing above U+10FFFF, no truncated sequence. U+0000 is well-formed.
bool IsValidUtf8(std::string_view s);

// The number of code points in s. For valid UTF-8 that is the AWS "chars" length; for invalid
// input it is the number of bytes that are not continuation bytes (10xxxxxx), which is never more
// than s.size(), so callers may apply length limits before checking validity.
size_t Utf8Chars(std::string_view s);

// taskToken: 1..2048 chars, else ValidationException (field 'taskToken'). Checks the length only;
// whether the token is ours is TokenCodec::Decode's job (InvalidToken).
Error ValidateTaskToken(std::string_view token);

// SendTaskSuccess output. nullopt -> ValidationException "must not be null" (field 'output');
// more than 262,144 bytes -> ValidationException too long; invalid UTF-8 or not one JSON value
// (scalars such as "x", 1, null are values) -> InvalidOutput "Invalid Output: '<reason>'".
// Every byte counts: a NUL or other raw control character (U+0000..001F) anywhere but as JSON
// whitespace (tab, LF, CR) is refused, trailing ones included ("{}\0garbage", "1\0").
// Numbers too large for a double (1e400) are refused: nlohmann/json treats them as errors.
Error ValidateOutput(const std::optional<std::string>& output);

// Task input: the same rules (field 'input'); bad content -> InvalidOutput (SEMANTICS.md has no
// InvalidInput code) with the message "Invalid Input: '<reason>'".
Error ValidateInput(std::string_view input);

// SendTaskFailure. Both optional; error 0..256 chars (field 'error'), cause 0..32,768 chars
// (field 'cause'), both valid UTF-8, else ValidationException. When both fields fail, one
// message lists both as AWS does: "2 validation errors detected: <error's>; <cause's>".
Error ValidateFailure(const std::optional<std::string>& error,
                      const std::optional<std::string>& cause);

// CreateActivity name: 1..80 chars of valid UTF-8; no whitespace (Unicode White_Space: U+0009..
// 000D, 0020, 0085, 00A0, 1680, 2000..200A, 2028, 2029, 202F, 205F, 3000); none of
// < > { } [ ] ? * " # % \ ^ | ~ ` $ & , ; : / ; no control char U+0000..001F, U+007F..009F.
// Any violation, length included (SEMANTICS.md), -> InvalidName "Invalid Name: '<name>'", where
// invalid UTF-8 bytes of the name are shown as U+FFFD so the message itself is valid UTF-8.
Error ValidateActivityName(std::string_view name);

// An ARN argument named `field` (e.g. "activityArn"): empty -> ValidationException too short,
// more than 256 chars -> ValidationException too long, invalid UTF-8 -> ValidationException,
// not starting "arn:" -> InvalidArn "Invalid Arn: 'Invalid ARN prefix: <arn>'".
Error ValidateArn(std::string_view arn, std::string_view field);

// ListActivities maxResults: 0..1000 (0 means 100), else ValidationException quoting the value.
Error ValidateMaxResults(uint64_t max_results);

// IssueTask's clocks, in seconds (0 = none): each at most limits::kTimeoutSecondsMax, the
// heartbeat shorter than the overall timeout when both are set, schedule-to-start only for an
// activity task. Else ValidationException (tokenwheel's own texts, in the AWS envelope).
Error ValidateTimeouts(uint64_t timeout_s, uint64_t heartbeat_s, uint64_t schedule_to_start_s,
                       bool activity_task);

// GetActivityTask workerName, optional: empty means "not given" and is fine; more than 80 chars
// or invalid UTF-8 -> ValidationException (field 'workerName').
Error ValidateWorkerName(std::string_view name);

}  // namespace tw
