// Fuzz target: payload validation (engine/validate.h ValidateOutput / ValidateInput, and
// engine/json_scan.h IsJsonValue under them), with nlohmann/json as the oracle of valid JSON.
//
// The contract compared, from the two headers:
//  - a payload over limits::kPayloadBytesMax is a ValidationException, whatever it holds;
//  - invalid UTF-8 is InvalidOutput (IsJsonValue REQUIRES valid UTF-8, so no JSON comparison);
//  - otherwise a payload is accepted iff it is exactly one JSON value: iff nlohmann/json's
//    strict parser accepts it and it holds no NUL (nlohmann takes a NUL for the end of its
//    input; the validator reads every byte). A refusal is InvalidOutput with a reason.
// Any disagreement traps. IsValidUtf8 and Utf8Chars are checked against a plain decoder.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "engine/json_scan.h"
#include "engine/limits.h"
#include "engine/validate.h"
#include "tests/fuzz/fuzz_support.h"

namespace tw::fuzz {
namespace {

// The length of the well-formed UTF-8 sequence at s[i] (RFC 3629), or 0: decodes the code
// point and judges it, a different route from the validator's table of byte ranges.
size_t SequenceAt(std::string_view s, size_t i) {
  const auto lead = static_cast<unsigned char>(s[i]);
  const size_t len = lead < 0x80       ? 1
                     : lead >> 5 == 6  ? 2
                     : lead >> 4 == 14 ? 3
                     : lead >> 3 == 30 ? 4
                                       : 0;
  if (len == 0 || s.size() - i < len) return 0;
  uint32_t cp = len == 1 ? lead : lead & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) {
    const auto c = static_cast<unsigned char>(s[i + k]);
    if (c >> 6 != 2) return 0;
    cp = cp << 6 | (c & 0x3F);
  }
  static constexpr uint32_t kMinByLength[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMinByLength[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

// Whether s is valid UTF-8, and its code points.
bool ReferenceUtf8(std::string_view s, size_t* chars) {
  *chars = 0;
  for (size_t i = 0; i < s.size(); ++(*chars)) {
    const size_t len = SequenceAt(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

void CheckUtf8(std::string_view s) {
  size_t chars = 0;
  const bool valid = ReferenceUtf8(s, &chars);
  TW_FUZZ_CHECK(IsValidUtf8(s) == valid);
  TW_FUZZ_CHECK(Utf8Chars(s) <= s.size());
  if (valid) TW_FUZZ_CHECK(Utf8Chars(s) == chars);
}

void CheckPayload(const std::string& s) {
  const Error output = ValidateOutput(std::optional<std::string>(s));
  const Error input = ValidateInput(s);
  TW_FUZZ_CHECK(output.code == input.code);
  if (s.size() > limits::kPayloadBytesMax) {
    TW_FUZZ_CHECK(output.code == ErrorCode::kValidation);
    return;
  }
  if (!IsValidUtf8(s)) {
    TW_FUZZ_CHECK(output.code == ErrorCode::kInvalidOutput);
    return;
  }
  const bool oracle = nlohmann::json::accept(s) && s.find('\0') == std::string::npos;
  TW_FUZZ_CHECK(IsJsonValue(s) == oracle);
  TW_FUZZ_CHECK(output.ok() == oracle);
  if (!oracle) {
    TW_FUZZ_CHECK(output.code == ErrorCode::kInvalidOutput);
    TW_FUZZ_CHECK(!output.message.empty());
  }
}

}  // namespace
}  // namespace tw::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string s(reinterpret_cast<const char*>(data), size);
  tw::fuzz::CheckUtf8(s);
  tw::fuzz::CheckPayload(s);
  return 0;
}
