#include "tools/log_sink.h"

#include <spdlog/logger.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "engine/limits.h"

namespace tw::tools {

namespace {

bool ParseLevel(const std::string& name, LogLevel* out) {
  for (LogLevel l : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError}) {
    if (name == LogLevelName(l)) {
      *out = l;
      return true;
    }
  }
  return false;
}

spdlog::level::level_enum SpdlogLevel(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return spdlog::level::debug;
    case LogLevel::kInfo:
      return spdlog::level::info;
    case LogLevel::kWarn:
      return spdlog::level::warn;
    case LogLevel::kError:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

}  // namespace

std::string CheckLogOptions(const LogOptions& options) {
  LogLevel level;
  if (options.format != "text" && options.format != "json") {
    return "--log-format must be text or json";
  }
  if (!ParseLevel(options.level, &level)) return "--log-level must be debug, info, warn or error";
  return "";
}

std::string FormatText(const LogRecord& record) {
  return std::string(LogLevelName(record.level)) + " " + record.component + ": " + record.message;
}

std::string FormatJsonFields(const LogRecord& record) {
  nlohmann::ordered_json j;
  j["level"] = LogLevelName(record.level);
  j["component"] = record.component;
  j["event"] = record.event;
  j["msg"] = record.message;
  for (const auto& [key, value] : record.fields) j[key] = value;
  // Invalid UTF-8 (a path, a peer's bytes) is replaced rather than thrown on.
  std::string out = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return out.substr(1, out.size() - 2);  // without the braces: the pattern adds them
}

LogSink MakeLogSink(const LogOptions& options, std::string* error) {
  const std::string problem = CheckLogOptions(options);
  if (!problem.empty()) {
    *error = problem;
    return {};
  }
  LogLevel min_level = LogLevel::kInfo;
  ParseLevel(options.level, &min_level);
  std::shared_ptr<spdlog::sinks::sink> sink;
  if (options.file.empty()) {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  } else {
    try {
      sink = std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
          options.file, limits::kLogFileBytesMax, limits::kLogFilesKept);
    } catch (const spdlog::spdlog_ex& e) {
      *error = "--log-file " + options.file + ": " + e.what();
      return {};
    }
  }
  auto logger = std::make_shared<spdlog::logger>("tokenwheel", std::move(sink));
  const bool json = options.format == "json";
  logger->set_formatter(std::make_unique<spdlog::pattern_formatter>(
      json ? "{\"ts\":\"%Y-%m-%dT%H:%M:%S.%eZ\",%v}" : "%Y-%m-%dT%H:%M:%S.%eZ %v",
      spdlog::pattern_time_type::utc));
  logger->set_level(SpdlogLevel(min_level));
  logger->flush_on(spdlog::level::trace);
  return [logger, json](const LogRecord& r) {
    const auto level = SpdlogLevel(r.level);
    if (!logger->should_log(level)) return;
    logger->log(level, "{}", json ? FormatJsonFields(r) : FormatText(r));
  };
}

}  // namespace tw::tools
