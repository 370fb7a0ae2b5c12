#include "engine/validate.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/limits.h"

namespace tw {
namespace {

std::string Repeat(std::string_view unit, size_t n) {
  std::string s;
  s.reserve(unit.size() * n);
  for (size_t i = 0; i < n; ++i) s.append(unit);
  return s;
}

// Reference UTF-8 encoder (no validity checks: it will happily encode surrogates).
std::string Encode(char32_t c) {
  std::string s;
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (c >> 18));
    s += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
  return s;
}

const std::string kE = "\xC3\xA9";              // é: 1 char, 2 bytes
const std::string kEuro = "\xE2\x82\xAC";       // €: 1 char, 3 bytes
const std::string kEmoji = "\xF0\x9F\x98\x80";  // 😀: 1 char, 4 bytes

void ExpectOk(const Error& e) {
  EXPECT_EQ(e.code, ErrorCode::kOk) << e.message;
  EXPECT_TRUE(e.ok());
  EXPECT_EQ(e.message, "");
}

void ExpectError(const Error& e, ErrorCode code, const std::string& message) {
  EXPECT_EQ(e.code, code) << ErrorCodeName(e.code) << ": " << e.message;
  EXPECT_EQ(e.message, message);
  EXPECT_EQ(e.refusal, Refusal::kNone);
}

std::string TooLong(const std::string& field, size_t n) {
  return "1 validation error detected: Value at '" + field +
         "' failed to satisfy constraint: Member must have length less than or equal to " +
         std::to_string(n);
}
std::string TooShort(const std::string& field) {
  return "1 validation error detected: Value at '" + field +
         "' failed to satisfy constraint: Member must have length greater than or equal to 1";
}
std::string BadUtf8(const std::string& field) {
  return "1 validation error detected: Value at '" + field +
         "' failed to satisfy constraint: Member must be valid UTF-8";
}

// ---- UTF-8 ----

TEST(Utf8Test, WellFormedSequences) {
  for (const std::string& s : std::vector<std::string>{
           "", "plain ascii", std::string("\0", 1), "\x7F", "\xC2\x80", "\xDF\xBF", "\xE0\xA0\x80",
           "\xED\x9F\xBF", "\xEE\x80\x80", "\xEF\xBF\xBF", "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF",
           kE, kEuro, kEmoji, "mixed " + kE + kEuro + kEmoji + " end"}) {
    EXPECT_TRUE(IsValidUtf8(s)) << s;
  }
}

TEST(Utf8Test, IllFormedSequences) {
  for (const std::string& s :
       std::vector<std::string>{"\x80",              // lone continuation
                                "\xBF",              //
                                "\xC0\x80",          // overlong NUL
                                "\xC1\xBF",          // overlong
                                "\xE0\x80\x80",      // overlong
                                "\xE0\x9F\xBF",      // overlong
                                "\xED\xA0\x80",      // U+D800 surrogate
                                "\xED\xBF\xBF",      // U+DFFF surrogate
                                "\xF0\x80\x80\x80",  // overlong
                                "\xF0\x8F\xBF\xBF",  // overlong
                                "\xF4\x90\x80\x80",  // U+110000
                                "\xF5\x80\x80\x80",  // lead byte past U+10FFFF
                                "\xF8\x88\x80\x80\x80",
                                "\xFE",
                                "\xFF",
                                "\xC3",          // truncated
                                "\xE2\x82",      //
                                "\xF0\x9F\x98",  //
                                "\xC3\x41",      // bad continuation
                                "\xE2\x41\xAC",
                                "\xE2\x82\x41",
                                "\xF0\x9F\x41\x80",
                                "\xF0\x9F\x98\x41"}) {
    EXPECT_FALSE(IsValidUtf8(s)) << testing::PrintToString(s);
    EXPECT_FALSE(IsValidUtf8("abcdefghijklmnop" + s)) << testing::PrintToString(s);
    EXPECT_FALSE(IsValidUtf8(s + "abcdefghijklmnop")) << testing::PrintToString(s);
  }
}

// The 8-bytes-at-a-time ASCII path must not skip over a bad byte at any alignment.
TEST(Utf8Test, BadByteAtEveryAlignmentAfterAsciiRun) {
  for (size_t prefix = 0; prefix < 24; ++prefix) {
    for (size_t suffix = 0; suffix < 10; ++suffix) {
      const std::string good = std::string(prefix, 'a') + kEmoji + std::string(suffix, 'b');
      EXPECT_TRUE(IsValidUtf8(good)) << prefix << "/" << suffix;
      const std::string bad = std::string(prefix, 'a') + "\xFF" + std::string(suffix, 'b');
      EXPECT_FALSE(IsValidUtf8(bad)) << prefix << "/" << suffix;
      EXPECT_FALSE(IsValidUtf8(std::string(prefix, 'a') + "\xC3")) << prefix;
    }
  }
}

TEST(Utf8Test, EveryCodePointEncodesToOneValidChar) {
  for (char32_t c = 0; c <= 0x10FFFF; ++c) {
    const std::string s = Encode(c);
    const bool surrogate = c >= 0xD800 && c <= 0xDFFF;
    ASSERT_EQ(IsValidUtf8(s), !surrogate) << std::hex << static_cast<uint32_t>(c);
    ASSERT_EQ(Utf8Chars(s), 1u) << std::hex << static_cast<uint32_t>(c);
  }
}

TEST(Utf8Test, CharsCountsCodePointsNotBytes) {
  EXPECT_EQ(Utf8Chars(""), 0u);
  EXPECT_EQ(Utf8Chars("abc"), 3u);
  EXPECT_EQ(Utf8Chars(kE), 1u);
  EXPECT_EQ(Utf8Chars(kEuro), 1u);
  EXPECT_EQ(Utf8Chars(kEmoji), 1u);
  EXPECT_EQ(Utf8Chars("a" + kE + kEuro + kEmoji + "z"), 5u);
  EXPECT_EQ(Utf8Chars(std::string("\0\0", 2)), 2u);
  // Invalid input: bytes that are not continuation bytes, never more than the size.
  EXPECT_EQ(Utf8Chars("\xFF\xFF"), 2u);
  EXPECT_EQ(Utf8Chars("\x80\x80"), 0u);
}

// ---- messages ----

TEST(MessagesTest, ExactAwsTexts) {
  EXPECT_EQ(MissingMessage("output"),
            "1 validation error detected: Value at 'output' failed to satisfy constraint: Member "
            "must not be null");
  EXPECT_EQ(TooLongMessage("taskToken", 2048),
            "1 validation error detected: Value at 'taskToken' failed to satisfy constraint: "
            "Member must have length less than or equal to 2048");
  EXPECT_EQ(TooShortMessage("activityArn"),
            "1 validation error detected: Value at 'activityArn' failed to satisfy constraint: "
            "Member must have length greater than or equal to 1");
  EXPECT_EQ(InvalidUtf8Message("error"), BadUtf8("error"));
  EXPECT_STREQ(kInvalidTokenMessage, "Invalid Token: 'Invalid token'");
  EXPECT_STREQ(kTaskGoneMessage, "Task Timed Out: 'Provided task does not exist anymore'");
}

// ---- taskToken ----

TEST(ValidateTaskTokenTest, LengthBounds) {
  ExpectError(ValidateTaskToken(""), ErrorCode::kValidation, TooShort("taskToken"));
  ExpectOk(ValidateTaskToken("t"));
  ExpectOk(ValidateTaskToken(std::string(2048, 't')));
  ExpectError(ValidateTaskToken(std::string(2049, 't')), ErrorCode::kValidation,
              TooLong("taskToken", 2048));
  // Counted in chars: 2048 four-byte chars (8192 bytes) pass, one more does not.
  ExpectOk(ValidateTaskToken(Repeat(kEmoji, 2048)));
  ExpectError(ValidateTaskToken(Repeat(kEmoji, 2049)), ErrorCode::kValidation,
              TooLong("taskToken", 2048));
}

// ---- output / input ----

TEST(ValidateOutputTest, MissingIsValidationNotNull) {
  ExpectError(ValidateOutput(std::nullopt), ErrorCode::kValidation,
              "1 validation error detected: Value at 'output' failed to satisfy constraint: "
              "Member must not be null");
}

TEST(ValidateOutputTest, AnyJsonValueIsAccepted) {
  for (const char* ok : {"{}", "[]", "\"x\"", "\"\"", "1", "-0.5e-3", "null", "true", "false",
                         " \t\n{\"a\": [1, {\"b\": null}], \"c\": \"\\u00e9\"} \n",
                         "12345678901234567890123", "\"\xC3\xA9\xF0\x9F\x98\x80\""}) {
    ExpectOk(ValidateOutput(std::string(ok)));
  }
}

TEST(ValidateOutputTest, DeepNestingIsAcceptedWithoutRecursion) {
  const size_t depth = 100'000;
  ExpectOk(ValidateOutput(std::string(depth, '[') + std::string(depth, ']')));
  ExpectError(ValidateOutput(std::string(depth, '[') + std::string(depth - 1, ']')),
              ErrorCode::kInvalidOutput, "Invalid Output: 'Invalid JSON at byte 199999'");
}

TEST(ValidateOutputTest, SizeIsCountedInUtf8Bytes) {
  const size_t max = limits::kPayloadBytesMax;
  ASSERT_EQ(max, 262'144u);
  ExpectOk(ValidateOutput("\"" + std::string(max - 2, 'a') + "\""));
  ExpectError(ValidateOutput("\"" + std::string(max - 1, 'a') + "\""), ErrorCode::kValidation,
              TooLong("output", 262'144));
  // 2-byte chars: exactly max bytes (far fewer chars) passes; one byte more does not.
  const std::string half = Repeat(kE, (max - 2) / 2);
  ExpectOk(ValidateOutput("\"" + half + "\""));
  ExpectError(ValidateOutput("\"" + half + "a\""), ErrorCode::kValidation,
              TooLong("output", 262'144));
  // Too long wins over invalid content.
  ExpectError(ValidateOutput(std::string(max + 1, '{')), ErrorCode::kValidation,
              TooLong("output", 262'144));
}

TEST(ValidateOutputTest, NotJsonIsInvalidOutputWithAReason) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "Invalid JSON at byte 0"},
      {"x", "Invalid JSON at byte 0"},
      {"{x", "Invalid JSON at byte 1"},
      {"{", "Invalid JSON at byte 1"},
      {"[1,]", "Invalid JSON at byte 3"},
      {"{} {}", "Invalid JSON at byte 3"},
      {"01", "Invalid JSON at byte 1"},
      {"'x'", "Invalid JSON at byte 0"},
      {"NaN", "Invalid JSON at byte 0"},
      {"{\"a\":}", "Invalid JSON at byte 5"},
      {"\"abc", "Invalid JSON at byte 4"},
      {"[1] // comment", "Invalid JSON at byte 4"},
      // Well-formed JSON syntax, but nlohmann/json refuses numbers beyond a double's range.
      {"1e400", "Number out of range at byte 4"},
  };
  for (const auto& [payload, reason] : cases) {
    ExpectError(ValidateOutput(payload), ErrorCode::kInvalidOutput,
                "Invalid Output: '" + reason + "'");
  }
}

// A regression: nlohmann/json stops at a NUL between tokens, and "{}\0garbage" was stored. Every
// byte counts: a raw control character is refused wherever it is, at its own offset.
std::vector<std::pair<std::string, std::string>> ControlCharacterCases() {
  return {
      {std::string("{}\0garbage", 10), "Invalid JSON at byte 2"},
      {std::string("1\0", 2), "Invalid JSON at byte 1"},
      {std::string("{} \0", 4), "Invalid JSON at byte 3"},
      {std::string("\0", 1), "Invalid JSON at byte 0"},
      {std::string("[1,\0 2]", 7), "Invalid JSON at byte 3"},
      {std::string("\"a\0b\"", 5), "Invalid JSON at byte 2"},
      {"\"a\001b\"", "Invalid JSON at byte 2"},
      {"{}\037", "Invalid JSON at byte 2"},
      {"\013[]", "Invalid JSON at byte 0"},
  };
}

TEST(ValidateOutputTest, RawControlCharacterAnywhereIsInvalidOutput) {
  for (const auto& [payload, reason] : ControlCharacterCases()) {
    ExpectError(ValidateOutput(payload), ErrorCode::kInvalidOutput,
                "Invalid Output: '" + reason + "'");
  }
}

TEST(ValidateOutputTest, InvalidUtf8IsInvalidOutput) {
  ExpectError(ValidateOutput(std::string("\"ab\xFF\"")), ErrorCode::kInvalidOutput,
              "Invalid Output: 'Invalid UTF-8 at byte 3'");
  ExpectError(ValidateOutput(std::string("\"\xED\xA0\x80\"")), ErrorCode::kInvalidOutput,
              "Invalid Output: 'Invalid UTF-8 at byte 1'");
}

TEST(ValidateInputTest, SameRulesUnderTheInputName) {
  ExpectOk(ValidateInput("{}"));
  ExpectOk(ValidateInput("\"x\""));
  ExpectOk(ValidateInput("null"));
  ExpectOk(ValidateInput(std::string(limits::kPayloadBytesMax - 1, ' ') + "1"));  // max bytes
  ExpectOk(ValidateInput("\"" + std::string(limits::kPayloadBytesMax - 2, 'i') + "\""));
  ExpectError(ValidateInput("\"" + std::string(limits::kPayloadBytesMax - 1, 'i') + "\""),
              ErrorCode::kValidation, TooLong("input", 262'144));
  ExpectError(ValidateInput("{"), ErrorCode::kInvalidOutput,
              "Invalid Input: 'Invalid JSON at byte 1'");
  ExpectError(ValidateInput(""), ErrorCode::kInvalidOutput,
              "Invalid Input: 'Invalid JSON at byte 0'");
  ExpectError(ValidateInput("\xC0\x80"), ErrorCode::kInvalidOutput,
              "Invalid Input: 'Invalid UTF-8 at byte 0'");
}

TEST(ValidateInputTest, RawControlCharacterAnywhereIsInvalid) {
  for (const auto& [payload, reason] : ControlCharacterCases()) {
    ExpectError(ValidateInput(payload), ErrorCode::kInvalidOutput,
                "Invalid Input: '" + reason + "'");
  }
}

// ---- SendTaskFailure ----

TEST(ValidateFailureTest, BothOptionalAndEmptyAllowed) {
  ExpectOk(ValidateFailure(std::nullopt, std::nullopt));
  ExpectOk(ValidateFailure(std::string(), std::string()));
  ExpectOk(ValidateFailure(std::string("States.Custom"), std::nullopt));
  ExpectOk(ValidateFailure(std::nullopt, std::string("it broke")));
}

TEST(ValidateFailureTest, ErrorLimitIs256Chars) {
  ExpectOk(ValidateFailure(std::string(256, 'e'), std::nullopt));
  ExpectError(ValidateFailure(std::string(257, 'e'), std::nullopt), ErrorCode::kValidation,
              TooLong("error", 256));
  ExpectOk(ValidateFailure(Repeat(kEmoji, 256), std::nullopt));  // 1024 bytes
  ExpectError(ValidateFailure(Repeat(kEmoji, 257), std::nullopt), ErrorCode::kValidation,
              TooLong("error", 256));
}

TEST(ValidateFailureTest, CauseLimitIs32768Chars) {
  ExpectOk(ValidateFailure(std::nullopt, std::string(32'768, 'c')));
  ExpectError(ValidateFailure(std::nullopt, std::string(32'769, 'c')), ErrorCode::kValidation,
              TooLong("cause", 32'768));
  ExpectOk(ValidateFailure(std::nullopt, Repeat(kEuro, 32'768)));  // 98,304 bytes
  ExpectError(ValidateFailure(std::nullopt, Repeat(kEuro, 32'769)), ErrorCode::kValidation,
              TooLong("cause", 32'768));
}

TEST(ValidateFailureTest, BothTooLongAreReportedTogether) {
  ExpectError(ValidateFailure(std::string(257, 'e'), std::string(32'769, 'c')),
              ErrorCode::kValidation,
              "2 validation errors detected: Value at 'error' failed to satisfy constraint: "
              "Member must have length less than or equal to 256; Value at 'cause' failed to "
              "satisfy constraint: Member must have length less than or equal to 32768");
}

TEST(ValidateFailureTest, InvalidUtf8IsValidation) {
  ExpectError(ValidateFailure(std::string("\xFF"), std::nullopt), ErrorCode::kValidation,
              BadUtf8("error"));
  ExpectError(ValidateFailure(std::nullopt, std::string("ok\xC3")), ErrorCode::kValidation,
              BadUtf8("cause"));
  // Too long is reported over invalid UTF-8.
  ExpectError(ValidateFailure(std::string(300, '\xC3'), std::nullopt), ErrorCode::kValidation,
              TooLong("error", 256));
}

// ---- activity names ----

void ExpectBadName(const std::string& name, const std::string& shown) {
  ExpectError(ValidateActivityName(name), ErrorCode::kInvalidName, "Invalid Name: '" + shown + "'");
}
void ExpectBadName(const std::string& name) { ExpectBadName(name, name); }

TEST(ValidateActivityNameTest, LengthIs1To80Chars) {
  ExpectOk(ValidateActivityName("a"));
  ExpectOk(ValidateActivityName(std::string(80, 'a')));
  ExpectBadName("");
  ExpectBadName(std::string(81, 'a'));
  ExpectOk(ValidateActivityName(Repeat(kE, 80)));  // 160 bytes
  ExpectBadName(Repeat(kE, 81));
  ExpectOk(ValidateActivityName(Repeat(kEmoji, 80)));  // 320 bytes
  ExpectBadName(Repeat(kEmoji, 81));
}

TEST(ValidateActivityNameTest, OrdinaryNamesPass) {
  for (const std::string& ok : std::vector<std::string>{
           "my-activity", "my_activity.v2", "A(1)", "x@y", "a!b", "a'b", "a=b", "a+b", "a(b)",
           "\xE6\x97\xA5\xE6\x9C\xAC", kE + kEmoji, Encode(0xA1), Encode(0x1FFF), Encode(0x2027),
           Encode(0x200B), Encode(0x3001), Encode(0x10FFFF)}) {
    ExpectOk(ValidateActivityName(ok));
  }
}

TEST(ValidateActivityNameTest, EachForbiddenCharacter) {
  const std::string forbidden = "<>{}[]?*\"#%\\^|~`$&,;:/";
  ASSERT_EQ(forbidden.size(), 22u);
  for (char c : forbidden) {
    ExpectBadName(std::string(1, c));
    ExpectBadName(std::string("a") + c);
    ExpectBadName(std::string(1, c) + "a");
    ExpectBadName(std::string("ab") + c + "cd");
  }
}

TEST(ValidateActivityNameTest, EachControlCharacter) {
  for (char32_t c = 0; c <= 0x1F; ++c) ExpectBadName("a" + Encode(c) + "b");
  for (char32_t c = 0x7F; c <= 0x9F; ++c) ExpectBadName("a" + Encode(c) + "b");
}

TEST(ValidateActivityNameTest, EachWhitespaceCharacter) {
  std::vector<char32_t> spaces = {0x09, 0x0A,   0x0B,   0x0C,   0x0D,   0x20,   0x85,
                                  0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000};
  for (char32_t c = 0x2000; c <= 0x200A; ++c) spaces.push_back(c);
  for (char32_t c : spaces) {
    ExpectBadName(Encode(c));
    ExpectBadName("a" + Encode(c) + "b");
    ExpectBadName("ab" + Encode(c));
  }
}

TEST(ValidateActivityNameTest, InvalidUtf8IsInvalidNameShownWithReplacementChar) {
  ExpectBadName(
      "ab\xFF"
      "cd",
      "ab\xEF\xBF\xBD"
      "cd");
  ExpectBadName("\xC3", "\xEF\xBF\xBD");
  ExpectBadName("a\xED\xA0\x80", "a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

// ---- ARNs ----

TEST(ValidateArnTest, PrefixAndLength) {
  const std::string arn = "arn:aws:states:us-east-1:000000000000:activity:a";
  ExpectOk(ValidateArn(arn, "activityArn"));
  ExpectOk(ValidateArn("arn:", "activityArn"));
  ExpectError(ValidateArn("", "activityArn"), ErrorCode::kValidation, TooShort("activityArn"));
  ExpectError(ValidateArn("bogus", "activityArn"), ErrorCode::kInvalidArn,
              "Invalid Arn: 'Invalid ARN prefix: bogus'");
  ExpectError(ValidateArn("ARN:aws", "activityArn"), ErrorCode::kInvalidArn,
              "Invalid Arn: 'Invalid ARN prefix: ARN:aws'");
  ExpectError(ValidateArn("arn", "activityArn"), ErrorCode::kInvalidArn,
              "Invalid Arn: 'Invalid ARN prefix: arn'");
  ExpectOk(ValidateArn("arn:" + std::string(252, 'x'), "activityArn"));
  ExpectError(ValidateArn("arn:" + std::string(253, 'x'), "activityArn"), ErrorCode::kValidation,
              TooLong("activityArn", 256));
  ExpectOk(ValidateArn("arn:" + Repeat(kEuro, 252), "activityArn"));  // 760 bytes
  ExpectError(ValidateArn("arn:" + Repeat(kEuro, 253), "activityArn"), ErrorCode::kValidation,
              TooLong("activityArn", 256));
  ExpectError(ValidateArn("arn:\xFF", "activityArn"), ErrorCode::kValidation,
              BadUtf8("activityArn"));
  // The field name is the caller's.
  ExpectError(ValidateArn("", "stateMachineArn"), ErrorCode::kValidation,
              TooShort("stateMachineArn"));
}

// ---- workerName ----

TEST(ValidateWorkerNameTest, OptionalUpTo80Chars) {
  ExpectOk(ValidateWorkerName(""));
  ExpectOk(ValidateWorkerName("w"));
  ExpectOk(ValidateWorkerName(std::string(80, 'w')));
  ExpectError(ValidateWorkerName(std::string(81, 'w')), ErrorCode::kValidation,
              TooLong("workerName", 80));
  ExpectOk(ValidateWorkerName(Repeat(kEmoji, 80)));
  ExpectError(ValidateWorkerName(Repeat(kEmoji, 81)), ErrorCode::kValidation,
              TooLong("workerName", 80));
  ExpectOk(ValidateWorkerName("host-1 pid 42"));  // no content rules beyond UTF-8
  ExpectError(ValidateWorkerName("\xFF"), ErrorCode::kValidation, BadUtf8("workerName"));
}

}  // namespace
}  // namespace tw
