// Fuzz target: task tokens (engine/token.h). Any bytes given to TokenCodec::Decode: it never
// aborts, and it accepts only a token signed by one of its keys, in that token's one spelling,
// so a decoded token encodes back to exactly the bytes given. The bytes also choose a (shard,
// task id), whose token must decode to them, and one character to change in that token, after
// which it must not decode.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/token.h"
#include "engine/validate.h"
#include "tests/fuzz/fuzz_support.h"

namespace tw::fuzz {
namespace {

constexpr uint8_t kOtherKeyId = 7;

std::array<uint8_t, TokenCodec::kKeyBytes> OtherKey() {
  std::array<uint8_t, TokenCodec::kKeyBytes> key{};
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(0xA5 ^ (13 * i));
  return key;
}

// Both codecs verify both keys; the last key listed signs. A token decodes under either, and
// re-encodes to its input under the one whose signing key signed it.
const TokenCodec& SignsWithFuzzKey() {
  static const TokenCodec* codec =
      new TokenCodec({{kOtherKeyId, OtherKey()}, {kTokenKeyId, TokenKey()}});
  return *codec;
}
const TokenCodec& SignsWithOtherKey() {
  static const TokenCodec* codec =
      new TokenCodec({{kTokenKeyId, TokenKey()}, {kOtherKeyId, OtherKey()}});
  return *codec;
}

void CheckDecode(std::string_view bytes) {
  TaskId id;
  uint16_t shard = 0;
  if (!SignsWithFuzzKey().Decode(bytes, &id, &shard)) {
    TaskId other;
    uint16_t other_shard = 0;
    TW_FUZZ_CHECK(!SignsWithOtherKey().Decode(bytes, &other, &other_shard));
    return;
  }
  TW_FUZZ_CHECK(!id.IsZero());  // ids are never zero, so no key ever signed one
  TW_FUZZ_CHECK(bytes.size() == TokenCodec::kTokenChars);
  TW_FUZZ_CHECK(SignsWithFuzzKey().Encode(shard, id) == bytes ||
                SignsWithOtherKey().Encode(shard, id) == bytes);
  TW_FUZZ_CHECK(ValidateTaskToken(bytes).ok());
}

// A token for the chosen (shard, id) round-trips; the same token with one byte changed does not
// decode (every token has one spelling, and any change breaks its MAC or its padding bits).
void CheckEncode(FuzzedDataProvider& in) {
  const uint16_t shard = in.ConsumeIntegral<uint16_t>();
  TaskId id{in.ConsumeIntegral<uint64_t>(), in.ConsumeIntegral<uint64_t>()};
  if (id.IsZero()) id.lo = 1;
  const TokenCodec& codec = in.ConsumeBool() ? SignsWithFuzzKey() : SignsWithOtherKey();
  std::string token = codec.Encode(shard, id);
  TaskId back;
  uint16_t back_shard = 0;
  TW_FUZZ_CHECK(SignsWithFuzzKey().Decode(token, &back, &back_shard));
  TW_FUZZ_CHECK(back == id);
  TW_FUZZ_CHECK(back_shard == shard);
  const size_t at = in.ConsumeIntegralInRange<size_t>(0, token.size() - 1);
  const char replacement = in.ConsumeIntegral<char>();
  if (replacement == token[at]) return;
  token[at] = replacement;
  TW_FUZZ_CHECK(!SignsWithFuzzKey().Decode(token, &back, &back_shard));
}

}  // namespace
}  // namespace tw::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  tw::fuzz::CheckDecode(bytes);
  (void)tw::ValidateTaskToken(bytes);
  FuzzedDataProvider in(data, size);
  tw::fuzz::CheckEncode(in);
  return 0;
}
