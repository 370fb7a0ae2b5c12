// A validating JSON scanner: answers "is this exactly one JSON value?" without building
// anything. It decides payload validation (engine/validate.cc), which runs for every task input
// and success output on the caller's thread: nlohmann/json's SAX parser answers nearly the same
// question but copies every string and number into a token buffer on the way, and was the
// largest single cost of a SendTaskSuccess on the caller's side. nlohmann/json only explains a
// rejection (the offending byte). tests/engine/json_scan_test.cc checks that both accept the
// same inputs but one kind: nlohmann/json takes a NUL between tokens for the end of its input,
// so it accepts "{}\0garbage" and "1\0"; this scanner reads every byte and refuses them.
//
// Accepted: one RFC 8259 value, scalars included, with optional whitespace (space, tab, LF, CR)
// around it and an optional UTF-8 byte order mark in front, and nothing else: a NUL or other raw
// control character (U+0000..001F) is refused anywhere, inside strings too; nesting of any depth
// (an explicit stack, no recursion); string escapes must be valid, and a \u escape for a
// surrogate must be a high surrogate followed by a \u low one; numbers must fit a double (1e400
// is refused, 1e-400 is 0 and accepted), as nlohmann/json's strict parser has it.
//
// REQUIRES: s is valid UTF-8 (checked first by the caller): bytes >= 0x80 inside strings are
// taken as they are.
// Thread: pure function.
#pragma once

#include <string_view>

namespace tw {

bool IsJsonValue(std::string_view s);

}  // namespace tw
