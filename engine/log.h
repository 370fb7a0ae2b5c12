// Operational log records: what the server's parts tell an operator (start, stop, recovery, a
// storage failure, an overload episode), never one per request. The parts build a LogRecord and
// hand it to a LogSink that main() wires (tools/log_sink.h: spdlog, text or JSON lines); the
// engine, the store and the front ends stay free of any logging library.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tw {

enum class LogLevel : uint8_t { kDebug, kInfo, kWarn, kError };

// "debug", "info", "warn", "error".
const char* LogLevelName(LogLevel level);

struct LogRecord {
  LogLevel level = LogLevel::kInfo;
  std::string component;  // who: "tokenwheeld", "engine", "rpc", "gateway"
  std::string event;      // what, a stable snake_case name to filter on: "storage_failure"
  std::string message;    // the same for people, one line
  std::vector<std::pair<std::string, std::string>> fields;  // key -> value, for machines
};

// Called from any thread; a sink serializes what it writes.
using LogSink = std::function<void(const LogRecord&)>;

// The sink for when main() wired none: "tokenwheel <component>: <message>" on stderr.
void LogToStderr(const LogRecord& record);

// Hands `record` to `sink`, or to LogToStderr when `sink` is empty.
inline void Emit(const LogSink& sink, const LogRecord& record) {
  if (sink) {
    sink(record);
  } else {
    LogToStderr(record);
  }
}

}  // namespace tw
