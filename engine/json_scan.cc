#include "engine/json_scan.h"

#include <charconv>
#include <cstdint>
#include <string>
#include <system_error>

namespace tw {
namespace {

// A double's largest finite value is 1.797...e308: a number whose decimal magnitude (the exponent
// of its leading digit) is below this is finite for sure; at or above it, from_chars decides.
constexpr int64_t kMagnitudeSureFinite = 308;
// Exponents are summed into an int64: saturate long exponent digit runs well before overflow.
constexpr int64_t kExponentSaturation = int64_t{1} << 40;

class Scanner {
 public:
  explicit Scanner(std::string_view s)
      : p_(reinterpret_cast<const unsigned char*>(s.data())), end_(p_ + s.size()) {}

  bool Value() {
    // nlohmann/json skips a UTF-8 byte order mark at the very start.
    if (end_ - p_ >= 3 && p_[0] == 0xEF && p_[1] == 0xBB && p_[2] == 0xBF) p_ += 3;
    enum class Next { kValue, kKey, kAfterValue };
    Next next = Next::kValue;
    for (;;) {
      SkipSpace();
      switch (next) {
        case Next::kValue:
          if (p_ == end_) return false;
          if (*p_ == '{' || *p_ == '[') {
            const char open = static_cast<char>(*p_++);
            SkipSpace();
            const unsigned char close = open == '{' ? '}' : ']';
            if (p_ != end_ && *p_ == close) {
              ++p_;
              next = Next::kAfterValue;
            } else {
              open_.push_back(open);
              next = open == '{' ? Next::kKey : Next::kValue;
            }
            continue;
          }
          if (!Scalar()) return false;
          next = Next::kAfterValue;
          continue;
        case Next::kKey:
          if (p_ == end_ || *p_ != '"' || !String()) return false;
          SkipSpace();
          if (p_ == end_ || *p_ != ':') return false;
          ++p_;
          next = Next::kValue;
          continue;
        case Next::kAfterValue:
          if (open_.empty()) return p_ == end_;
          if (p_ == end_) return false;
          if (*p_ == ',') {
            ++p_;
            next = open_.back() == '{' ? Next::kKey : Next::kValue;
            continue;
          }
          if (*p_ != (open_.back() == '{' ? '}' : ']')) return false;
          ++p_;
          open_.pop_back();
          continue;
      }
    }
  }

 private:
  void SkipSpace() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }

  bool Scalar() {
    switch (*p_) {
      case '"':
        return String();
      case 't':
        return Literal("true");
      case 'f':
        return Literal("false");
      case 'n':
        return Literal("null");
      default:
        return Number();
    }
  }

  bool Literal(std::string_view word) {
    if (static_cast<size_t>(end_ - p_) < word.size()) return false;
    if (std::string_view(reinterpret_cast<const char*>(p_), word.size()) != word) return false;
    p_ += word.size();
    return true;
  }

  // p_ at the opening quote.
  bool String() {
    ++p_;
    for (;;) {
      // The common case: plain characters (UTF-8 is already known to be valid).
      while (p_ != end_ && *p_ != '"' && *p_ != '\\' && *p_ >= 0x20) ++p_;
      if (p_ == end_ || *p_ < 0x20) return false;
      if (*p_ == '"') {
        ++p_;
        return true;
      }
      ++p_;  // the backslash
      if (p_ == end_) return false;
      switch (*p_++) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
          continue;
        case 'u':
          if (!UnicodeEscape()) return false;
          continue;
        default:
          return false;
      }
    }
  }

  // p_ after "\u". A high surrogate must be followed by an escaped low one; a low one alone is
  // an error.
  bool UnicodeEscape() {
    uint32_t unit = 0;
    if (!Hex4(&unit)) return false;
    if (unit >= 0xDC00 && unit <= 0xDFFF) return false;
    if (unit < 0xD800 || unit > 0xDBFF) return true;
    if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return false;
    p_ += 2;
    if (!Hex4(&unit)) return false;
    return unit >= 0xDC00 && unit <= 0xDFFF;
  }

  bool Hex4(uint32_t* unit) {
    if (end_ - p_ < 4) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const unsigned char c = *p_++;
      uint32_t d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else if (c >= 'A' && c <= 'F') {
        d = c - 'A' + 10;
      } else {
        return false;
      }
      v = v << 4 | d;
    }
    *unit = v;
    return true;
  }

  static bool IsDigit(unsigned char c) { return c >= '0' && c <= '9'; }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, and finite as a double.
  bool Number() {
    const unsigned char* start = p_;
    if (*p_ == '-') ++p_;
    if (p_ == end_ || !IsDigit(*p_)) return false;
    int64_t int_digits = 0;  // significant digits before the point
    if (*p_ == '0') {
      ++p_;
    } else {
      while (p_ != end_ && IsDigit(*p_)) {
        ++p_;
        ++int_digits;
      }
    }
    if (p_ != end_ && *p_ == '.') {
      ++p_;
      if (p_ == end_ || !IsDigit(*p_)) return false;
      while (p_ != end_ && IsDigit(*p_)) ++p_;
    }
    int64_t exponent = 0;
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      bool negative = false;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) negative = *p_++ == '-';
      if (p_ == end_ || !IsDigit(*p_)) return false;
      while (p_ != end_ && IsDigit(*p_)) {
        if (exponent < kExponentSaturation) exponent = exponent * 10 + (*p_ - '0');
        ++p_;
      }
      if (negative) exponent = -exponent;
    }
    // An upper bound on the magnitude: with no integer digits the value is below 1 * 10^exp.
    const int64_t magnitude = int_digits > 0 ? int_digits - 1 + exponent : exponent - 1;
    if (magnitude < kMagnitudeSureFinite) return true;
    return Finite(start, p_);
  }

  // Rare: the number may not fit a double. Large magnitudes cannot underflow, so out of range
  // here means overflow (infinite), which nlohmann/json refuses.
  static bool Finite(const unsigned char* begin, const unsigned char* end) {
    const char* b = reinterpret_cast<const char*>(begin);
    const char* e = reinterpret_cast<const char*>(end);
    double value = 0;
    const std::from_chars_result r = std::from_chars(b, e, value);
    return r.ec == std::errc() && r.ptr == e;
  }

  const unsigned char* p_;
  const unsigned char* const end_;
  // The open brackets, innermost last. A string: up to 15 levels fit in its inline buffer, so
  // typical payloads validate without touching the heap.
  std::string open_;
};

}  // namespace

bool IsJsonValue(std::string_view s) { return Scanner(s).Value(); }

}  // namespace tw
