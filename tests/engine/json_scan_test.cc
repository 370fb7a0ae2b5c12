// IsJsonValue (engine/json_scan.h) must accept exactly what nlohmann/json's strict parser
// accepts, but for a NUL (see Reference): payload validation answers with the scanner and
// explains rejections with nlohmann, so a disagreement would either let through a payload
// nlohmann-based consumers cannot parse or refuse one with no reason to give. Directed cases first,
// then a differential test over random values and mutations of them.
#include "engine/json_scan.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "engine/validate.h"

namespace tw {
namespace {

// nlohmann/json's strict parser, less one habit from C strings: it takes a NUL between tokens
// for the end of its input (NlohmannEndsItsInputAtANul). No JSON text holds a raw NUL (it is
// neither whitespace nor allowed in a string), so refusing every NUL is exact.
bool Reference(const std::string& s) {
  return nlohmann::json::accept(s) && s.find('\0') == std::string::npos;
}

std::string Printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    }
  }
  return out;
}

TEST(JsonScanTest, AcceptsEveryKindOfValue) {
  for (const char* ok : {"{}",
                         "[]",
                         "null",
                         "true",
                         "false",
                         "0",
                         "-0",
                         "1",
                         "-1",
                         "12.5",
                         "1e5",
                         "1E+5",
                         "1e-5",
                         "-0.0e0",
                         "\"\"",
                         "\"x\"",
                         " \t\r\n{ \"a\" : [ 1 , 2 , { } ] } \n",
                         R"({"a":{"b":{"c":[[[]]]}},"d":"e"})",
                         R"("\"\\\/\b\f\n\r\t")",
                         R"("\u0041\u00e9")",
                         R"("\ud83d\ude00")",
                         R"("\uD83D\uDE00")",
                         "\xEF\xBB\xBF{}",
                         "\"\xC3\xA9\"",
                         "12345678901234567890123",
                         "1e-400",
                         "1.7976931348623157e308",
                         "\"\x7F\""}) {
    EXPECT_TRUE(IsJsonValue(ok)) << Printable(ok);
    EXPECT_TRUE(Reference(ok)) << Printable(ok);
  }
}

TEST(JsonScanTest, RefusesWhatIsNotExactlyOneValue) {
  for (const std::string& bad : std::vector<std::string>{"",
                                                         " ",
                                                         "x",
                                                         "{",
                                                         "}",
                                                         "[",
                                                         "]",
                                                         "{x",
                                                         "[1,]",
                                                         "[,1]",
                                                         "{\"a\"}",
                                                         "{\"a\":}",
                                                         "{\"a\":1,}",
                                                         "{1:2}",
                                                         "{} {}",
                                                         "01",
                                                         "-",
                                                         "1.",
                                                         ".5",
                                                         "+1",
                                                         "1e",
                                                         "1e+",
                                                         "0x10",
                                                         "'x'",
                                                         "NaN",
                                                         "Infinity",
                                                         "tru",
                                                         "nul",
                                                         "truex",
                                                         "\"abc",
                                                         "\"\\x\"",
                                                         "\"\\u12\"",
                                                         "\"\\u12g4\"",
                                                         "\"\\ud800\"",
                                                         "\"\\udc00\"",
                                                         "\"\\ud800\\u0041\"",
                                                         "\"\\ud800x\"",
                                                         std::string("\"a\x01\""),
                                                         std::string("\"\0\"", 3),
                                                         "[1] // comment",
                                                         "1e400",
                                                         "-1e400",
                                                         "1" + std::string(400, '0'),
                                                         "\xEF\xBB{}",
                                                         " \xEF\xBB\xBF{}",
                                                         "[1]]",
                                                         "[}",
                                                         "{]",
                                                         "[\"a\":1]",
                                                         "{\"a\" 1}",
                                                         "nulL",
                                                         "\x7F"}) {
    EXPECT_FALSE(IsJsonValue(bad)) << Printable(bad);
    EXPECT_FALSE(Reference(bad)) << Printable(bad);
    EXPECT_FALSE(ValidateOutput(bad).ok()) << Printable(bad);
  }
}

// A regression: "{}\0garbage" was once accepted. Every byte counts: a raw control character is
// refused wherever it is, but for the JSON whitespace (tab, LF, CR) between tokens.
TEST(JsonScanTest, RefusesRawControlCharactersAnywhere) {
  for (const std::string& bad : std::vector<std::string>{
           std::string("{}\0garbage", 10), std::string("1\0", 2), std::string("\0", 1),
           std::string("\0{}", 3), std::string("{} \0", 4), std::string("[1,\0 2]", 7),
           std::string("{\"a\":1\0}", 8), std::string("\"a\0b\"", 5), "\"a\001b\"", "\"a\037\"",
           "\"\t\"", "\"\n\"", "{}\001", "\013{}", "{}\014", "[1\037]", "\033[1]"}) {
    EXPECT_FALSE(IsJsonValue(bad)) << Printable(bad);
    EXPECT_FALSE(Reference(bad)) << Printable(bad);
    EXPECT_FALSE(ValidateOutput(bad).ok()) << Printable(bad);
  }
}

// Why Reference() refuses NULs itself. Should a new nlohmann/json read every byte, this fails
// and the NUL clauses (here and in engine/validate.cc's JsonProblem) can go.
TEST(JsonScanTest, NlohmannEndsItsInputAtANul) {
  EXPECT_TRUE(nlohmann::json::accept(std::string("{}\0garbage", 10)));
  EXPECT_TRUE(nlohmann::json::accept(std::string("1\0", 2)));
  EXPECT_FALSE(nlohmann::json::accept(std::string("\"a\0b\"", 5)));  // inside a string: refused
}

TEST(JsonScanTest, DeepNestingNeedsNoRecursion) {
  const size_t depth = 200'000;
  EXPECT_TRUE(IsJsonValue(std::string(depth, '[') + std::string(depth, ']')));
  EXPECT_FALSE(IsJsonValue(std::string(depth, '[') + std::string(depth - 1, ']')));
  std::string objects;
  for (size_t i = 0; i < depth; ++i) objects += "{\"k\":";
  objects += "1";
  objects += std::string(depth, '}');
  EXPECT_TRUE(IsJsonValue(objects));
}

// Random JSON values with the corner cases weighted up, then mutated.
class Generator {
 public:
  explicit Generator(uint64_t seed) : rng_(seed) {}

  std::string Document() {
    std::string s;
    Value(&s, 0);
    if (Rand(4) == 0) s = Space() + s + Space();
    return s;
  }

  // One random edit: delete, insert, replace, truncate or duplicate a slice.
  std::string Mutate(std::string s) {
    // Control characters too, NUL first among them (a string literal cannot hold it).
    static const std::string kAlphabet =
        std::string(1, '\0') + "{}[],:\"\\/ -+.eE0123456789tfnulrsabux\001\013\014\037\t\n\r'";
    const size_t n = s.size();
    switch (Rand(5)) {
      case 0:
        if (n > 0) s.erase(Rand(n), 1);
        break;
      case 1:
        s.insert(Rand(n + 1), 1, kAlphabet[Rand(kAlphabet.size())]);
        break;
      case 2:
        if (n > 0) s[Rand(n)] = kAlphabet[Rand(kAlphabet.size())];
        break;
      case 3:
        s.resize(Rand(n + 1));
        break;
      default:
        if (n > 0) {
          const size_t at = Rand(n);
          s.insert(Rand(n + 1), s.substr(at, 1 + Rand(n - at)));
        }
        break;
    }
    return s;
  }

  size_t Rand(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }

 private:
  std::string Space() {
    static const char* kSpaces[] = {"", " ", "\n", "\t", "\r\n  "};
    return kSpaces[Rand(5)];
  }

  void Value(std::string* s, int depth) {
    const size_t kind = depth >= 5 ? 3 + Rand(4) : Rand(7);
    *s += Space();
    switch (kind) {
      case 0:
      case 1: {
        const bool object = kind == 0;
        *s += object ? '{' : '[';
        const size_t n = Rand(4);
        for (size_t i = 0; i < n; ++i) {
          if (i > 0) *s += ',';
          if (object) {
            *s += Space();
            String(s);
            *s += Space() + ":";
          }
          Value(s, depth + 1);
        }
        *s += Space();
        *s += object ? '}' : ']';
        break;
      }
      case 2:
        *s += std::vector<std::string>{"true", "false", "null"}[Rand(3)];
        break;
      case 3:
      case 4:
        Number(s);
        break;
      default:
        String(s);
        break;
    }
    *s += Space();
  }

  void Number(std::string* s) {
    if (Rand(3) == 0) *s += '-';
    if (Rand(4) == 0) {
      *s += '0';
    } else {
      *s += static_cast<char>('1' + Rand(9));
      // Now and then hundreds of digits: integers beyond a double's range.
      const size_t digits = Rand(10) == 0 ? 300 + Rand(20) : Rand(20);
      for (size_t i = 0; i < digits; ++i) *s += static_cast<char>('0' + Rand(10));
    }
    if (Rand(3) == 0) {
      *s += '.';
      for (size_t i = 0, n = 1 + Rand(5); i < n; ++i) *s += static_cast<char>('0' + Rand(10));
    }
    if (Rand(3) == 0) {
      *s += Rand(2) ? 'e' : 'E';
      if (Rand(2)) *s += Rand(2) ? '+' : '-';
      // Exponents around a double's limits (308, -324) and far beyond.
      static const int kExponents[] = {0, 1, 5, 290, 300, 307, 308, 309, 310, 324, 400, 99999};
      *s += std::to_string(kExponents[Rand(std::size(kExponents))]);
    }
  }

  void String(std::string* s) {
    static const std::vector<std::string> kPieces = {
        "a",       "Z",       " ",       "\xC3\xA9", "\xF0\x9F\x98\x80",
        "\\\"",    "\\\\",    "\\/",     "\\b",      "\\f",
        "\\n",     "\\r",     "\\t",     "\\u0041",  "\\u00E9",
        "\\uD83D", "\\uDE00", "\\udbff", "\\udfff",  "\\uFFFF"};
    *s += '"';
    for (size_t i = 0, n = Rand(6); i < n; ++i) *s += kPieces[Rand(kPieces.size())];
    *s += '"';
  }

  std::mt19937_64 rng_;
};

TEST(JsonScanTest, AcceptsExactlyWhatNlohmannAccepts) {
  const char* env = std::getenv("TW_JSON_CASES");
  const size_t cases = env ? std::strtoull(env, nullptr, 10) : 200'000;
  Generator gen(0x15011);
  size_t accepted = 0;
  for (size_t i = 0; i < cases; ++i) {
    std::string s = gen.Document();
    for (size_t edits = gen.Rand(3); edits > 0; --edits) s = gen.Mutate(std::move(s));
    if (!IsValidUtf8(s)) continue;  // the scanner's precondition; payloads are checked first
    const bool expected = Reference(s);
    ASSERT_EQ(IsJsonValue(s), expected) << "case " << i << ": " << Printable(s);
    // And payload validation answers as the scanner does, with a reason for every refusal.
    const Error e = ValidateOutput(s);
    ASSERT_EQ(e.ok(), expected) << "case " << i << ": " << Printable(s) << ": " << e.message;
    accepted += expected ? 1 : 0;
  }
  // Both sides of the boundary are exercised.
  EXPECT_GT(accepted, cases / 10);
  EXPECT_LT(accepted, cases - cases / 10);
}

}  // namespace
}  // namespace tw
