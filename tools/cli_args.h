// Command-line helpers shared by the mains (tools/tokenwheel.cc, tools/tokenwheeld.cc).
//
// Integers are decimal. CLI11 converts an integer option with strtoull / strtoll in base 0, so
// "--timeout 010" was octal 8 s, "0x10" was 16 s, " 5" and "+5" passed, and "-1" wrapped to the
// maximum of a 64-bit unsigned option, all without a word. A script that pads "010" means ten.
// Decimal<T>() accepts plain digits 0-9 only and checks T's range before CLI11 converts; every
// other spelling ("0x10", "1e3", "-1", "+5", " 5", "5s", "") is a usage error naming the option.
//
// Thread: parsing runs on main's thread, before any other starts.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

namespace tw::cli {

// Why `text` is not a decimal integer in [0, max], or "" when it is. Then `text` is rewritten
// without leading zeros ("010" -> "10", "000" -> "0"), which CLI11's base detection cannot
// mistake for octal.
inline std::string CanonicalDecimal(std::string& text, uint64_t max) {
  if (text.empty()) return "expected a decimal number, got nothing";
  if (text.find_first_not_of("0123456789") != std::string::npos) {
    return "'" + text + "' is not a decimal number (digits 0-9 only)";
  }
  uint64_t value = 0;
  for (const char c : text) {
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    // value * 10 + digit <= max, without overflowing uint64 on the way.
    if (value > (max - digit) / 10) {
      return "'" + text + "' is out of range (0.." + std::to_string(max) + ")";
    }
    value = value * 10 + digit;
  }
  text = std::to_string(value);
  return {};
}

// A CLI11 transform for an option read into an integer of type T (see the top of this file).
template <typename T>
CLI::Validator Decimal() {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>);
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<T>::max());
  // No description: the help's type name (UINT, INT) already says what to give.
  return CLI::Validator([](std::string& text) { return CanonicalDecimal(text, kMax); }, "",
                        "DECIMAL");
}

// app->add_option(name, target, description) for an integer target, reading decimal only.
template <typename T>
CLI::Option* AddDecimalOption(CLI::App* app, const std::string& name, T& target,
                              const std::string& description) {
  return app->add_option(name, target, description)->transform(Decimal<T>());
}

}  // namespace tw::cli
