#include "engine/log.h"

#include <cstdio>

namespace tw {

const char* LogLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

void LogToStderr(const LogRecord& record) {
  std::fprintf(stderr, "tokenwheel %s: %s\n", record.component.c_str(), record.message.c_str());
}

}  // namespace tw
