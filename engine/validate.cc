#include "engine/validate.h"

#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "engine/assert.h"
#include "engine/json_scan.h"
#include "engine/limits.h"

namespace tw {
namespace {

// ---- UTF-8 ----

// The length of the longest well-formed UTF-8 prefix of s (s.size() iff s is valid).
size_t ValidUtf8Prefix(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (n - i >= 8) {  // payloads are mostly ASCII: skip 8 ASCII bytes at a time
      uint64_t word;
      std::memcpy(&word, p + i, sizeof(word));
      if ((word & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    // RFC 3629 table 3: the second byte's range depends on the lead byte.
    size_t len = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;  // continuation byte, C0/C1 (overlong) or F5..FF
    }
    if (n - i < len) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
    }
    i += len;
  }
  return n;
}

// The code point starting at s[*i]; advances *i past it. REQUIRES: s is valid UTF-8, *i < size.
char32_t NextCodePoint(std::string_view s, size_t* i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + *i;
  if (p[0] < 0x80) {
    *i += 1;
    return p[0];
  }
  if (p[0] < 0xE0) {
    *i += 2;
    return (char32_t{p[0] & 0x1Fu} << 6) | (p[1] & 0x3Fu);
  }
  if (p[0] < 0xF0) {
    *i += 3;
    return (char32_t{p[0] & 0x0Fu} << 12) | (char32_t{p[1] & 0x3Fu} << 6) | (p[2] & 0x3Fu);
  }
  *i += 4;
  return (char32_t{p[0] & 0x07u} << 18) | (char32_t{p[1] & 0x3Fu} << 12) |
         (char32_t{p[2] & 0x3Fu} << 6) | (p[3] & 0x3Fu);
}

// s with every byte that is not part of a well-formed sequence replaced by U+FFFD.
std::string SanitizeUtf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    const size_t good = ValidUtf8Prefix(s);
    out.append(s.substr(0, good));
    s.remove_prefix(good);
    if (!s.empty()) {
      out.append("\xEF\xBF\xBD");
      s.remove_prefix(1);
    }
  }
  return out;
}

Error Validation(std::string message) { return ValidationError(std::move(message)); }

// The constraint a "chars"-limited optional string breaks, or "" if none.
std::string CharsConstraint(std::string_view value, std::string_view field, size_t chars_max) {
  if (Utf8Chars(value) > chars_max) return Constraint(field, TooLongRule(chars_max));
  if (!IsValidUtf8(value)) return Constraint(field, kUtf8Rule);
  return {};
}

// ---- JSON ----

// A SAX handler that keeps nothing and records where parsing failed.
struct JsonChecker {
  using json = nlohmann::json;
  size_t error_position = 0;  // nlohmann: characters read when the error was detected
  int error_id = 0;           // nlohmann exception id (101 syntax, 406 number overflow, ...)

  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(json::number_integer_t) { return true; }
  bool number_unsigned(json::number_unsigned_t) { return true; }
  bool number_float(json::number_float_t, const json::string_t&) { return true; }
  bool string(json::string_t&) { return true; }
  bool binary(json::binary_t&) { return true; }
  bool start_object(size_t) { return true; }
  bool key(json::string_t&) { return true; }
  bool end_object() { return true; }
  bool start_array(size_t) { return true; }
  bool end_array() { return true; }
  bool parse_error(size_t position, const std::string&, const json::exception& ex) {
    error_position = position;
    error_id = ex.id;
    return false;
  }
};

// Where nlohmann/json's parser finds `payload` wrong, as a short reason; "" if it finds nothing
// wrong. It keeps an explicit stack, so deep nesting cannot overflow ours.
std::string NlohmannProblem(std::string_view payload) {
  JsonChecker checker;
  const char* begin = payload.data();
  if (nlohmann::json::sax_parse(begin, begin + payload.size(), &checker)) return {};
  TW_ASSERT(checker.error_id != 0);
  // The position counts the offending character itself; report its 0-based offset.
  size_t at = checker.error_position > 0 ? checker.error_position - 1 : 0;
  if (at > payload.size()) at = payload.size();
  const char* what = checker.error_id == 406 ? "Number out of range" : "Invalid JSON";
  return std::string(what) + " at byte " + std::to_string(at);
}

// "" if `payload` (valid UTF-8) is exactly one JSON value, else a short reason. IsJsonValue
// decides, over every byte; nlohmann/json only explains a refusal. nlohmann/json cannot be the
// judge: it takes a NUL between tokens for the end of its input (a habit from C strings), so it
// accepts `{}\0garbage` and `1\0` (they were once stored). On every other input the two
// agree (json_scan_test).
std::string JsonProblem(std::string_view payload) {
  if (IsJsonValue(payload)) return {};
  std::string problem = NlohmannProblem(payload);
  if (!problem.empty()) return problem;
  // nlohmann/json stopped at a NUL after a complete value: that NUL is the first wrong byte.
  const size_t nul = payload.find('\0');
  TW_DEBUG_ASSERT(nul != std::string_view::npos);
  // A disagreement (a bug) still refuses the payload; it must not take the server down.
  if (nul == std::string_view::npos) return "Invalid JSON";
  return "Invalid JSON at byte " + std::to_string(nul);
}

// Shared by task input and success output. `label` is "Output" or "Input".
Error ValidatePayload(std::string_view payload, std::string_view field, std::string_view label) {
  if (payload.size() > limits::kPayloadBytesMax) {
    return Validation(
        ValidationMessage({Constraint(field, TooLongRule(limits::kPayloadBytesMax))}));
  }
  std::string problem;
  const size_t good = ValidUtf8Prefix(payload);
  if (good != payload.size()) {
    problem = "Invalid UTF-8 at byte " + std::to_string(good);
  } else {
    problem = JsonProblem(payload);
  }
  if (problem.empty()) return Error{};
  return InvalidPayloadError(label, problem);
}

// ---- activity names ----

bool IsWhiteSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

bool IsControl(char32_t c) { return c <= 0x1F || (c >= 0x7F && c <= 0x9F); }

constexpr std::string_view kNameForbiddenAscii = "<>{}[]?*\"#%\\^|~`$&,;:/";

bool IsAllowedInName(char32_t c) {
  if (IsControl(c) || IsWhiteSpace(c)) return false;
  return c >= 0x80 || kNameForbiddenAscii.find(static_cast<char>(c)) == std::string_view::npos;
}

}  // namespace

bool IsValidUtf8(std::string_view s) { return ValidUtf8Prefix(s) == s.size(); }

size_t Utf8Chars(std::string_view s) {
  size_t chars = 0;
  for (const char c : s) chars += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  TW_DEBUG_ASSERT(chars <= s.size());
  return chars;
}

Error ValidateTaskToken(std::string_view token) {
  if (token.empty()) return Validation(TooShortMessage("taskToken"));
  if (Utf8Chars(token) > limits::kTaskTokenCharsMax) {
    return Validation(TooLongMessage("taskToken", limits::kTaskTokenCharsMax));
  }
  return Error{};
}

Error ValidateOutput(const std::optional<std::string>& output) {
  if (!output.has_value()) return Validation(MissingMessage("output"));
  return ValidatePayload(*output, "output", "Output");
}

Error ValidateInput(std::string_view input) { return ValidatePayload(input, "input", "Input"); }

Error ValidateFailure(const std::optional<std::string>& error,
                      const std::optional<std::string>& cause) {
  std::vector<std::string> broken;
  if (error.has_value()) {
    std::string c = CharsConstraint(*error, "error", limits::kErrorCharsMax);
    if (!c.empty()) broken.push_back(std::move(c));
  }
  if (cause.has_value()) {
    std::string c = CharsConstraint(*cause, "cause", limits::kCauseCharsMax);
    if (!c.empty()) broken.push_back(std::move(c));
  }
  if (broken.empty()) return Error{};
  return Validation(ValidationMessage(broken));
}

Error ValidateActivityName(std::string_view name) {
  bool ok = !name.empty() && Utf8Chars(name) <= limits::kActivityNameCharsMax && IsValidUtf8(name);
  // Bounded: at most kActivityNameCharsMax code points once the checks above pass.
  for (size_t i = 0; ok && i < name.size();) ok = IsAllowedInName(NextCodePoint(name, &i));
  if (ok) return Error{};
  return InvalidNameError(SanitizeUtf8(name));
}

Error ValidateArn(std::string_view arn, std::string_view field) {
  if (arn.empty()) return Validation(TooShortMessage(field));
  if (Utf8Chars(arn) > limits::kArnCharsMax) {
    return Validation(TooLongMessage(field, limits::kArnCharsMax));
  }
  if (!IsValidUtf8(arn)) return Validation(InvalidUtf8Message(field));
  if (arn.substr(0, 4) != "arn:") return InvalidArnError(arn);
  return Error{};
}

Error ValidateMaxResults(uint64_t max_results) {
  if (max_results <= limits::kListActivitiesMax) return Error{};
  return Validation(ValidationMessage({ValueConstraint(
      std::to_string(max_results), "maxResults", ValueAtMostRule(limits::kListActivitiesMax))}));
}

Error ValidateTimeouts(uint64_t timeout_s, uint64_t heartbeat_s, uint64_t schedule_to_start_s,
                       bool activity_task) {
  const uint64_t max = limits::kTimeoutSecondsMax;
  if (timeout_s > max || heartbeat_s > max || schedule_to_start_s > max) {
    return Validation(
        ValidationDetailMessage("a timeout exceeds " + std::to_string(max) + " seconds"));
  }
  if (timeout_s != 0 && heartbeat_s != 0 && heartbeat_s >= timeout_s) {
    return Validation(ValidationDetailMessage("HeartbeatSeconds (" + std::to_string(heartbeat_s) +
                                              ") must be less than TimeoutSeconds (" +
                                              std::to_string(timeout_s) + ")"));
  }
  if (!activity_task && schedule_to_start_s != 0) {
    return Validation(
        ValidationDetailMessage("ScheduleToStartSeconds applies to activity tasks only"));
  }
  return Error{};
}

Error ValidateWorkerName(std::string_view name) {
  if (name.empty()) return Error{};  // optional: not given
  std::string c = CharsConstraint(name, "workerName", limits::kWorkerNameCharsMax);
  if (c.empty()) return Error{};
  return Validation(ValidationMessage({std::move(c)}));
}

}  // namespace tw
