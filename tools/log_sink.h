// tokenwheeld's log (engine/log.h records) through spdlog: one line per record, on stderr (where
// systemd's journal picks it up) or in a size-bounded rotating file, as text for people or as
// JSON lines for a log pipeline. Records below the chosen level are dropped.
//
// text:  2026-12-07T19:35:23.911Z info tokenwheeld: started, listening on 127.0.0.1:7411 ...
// json:  {"ts":"2026-12-07T19:35:23.911Z","level":"info","component":"tokenwheeld",
//         "event":"started","msg":"started, listening on ...","rpc_listen":"127.0.0.1:7411",...}
//        (one line; the record's fields follow "msg", in order, as strings)
#pragma once

#include <string>

#include "engine/log.h"

namespace tw::tools {

struct LogOptions {
  std::string format = "text";  // text | json
  std::string level = "info";   // debug | info | warn | error
  std::string file;             // empty: stderr
};

// Empty when the options are usable; otherwise what is wrong with them.
std::string CheckLogOptions(const LogOptions& options);

// A sink writing records through a spdlog logger of its own (thread-safe; flushed after every
// record: the log matters most just before a crash). On failure (the file cannot be opened)
// returns an empty sink and sets *error.
LogSink MakeLogSink(const LogOptions& options, std::string* error);

// One record as the line MakeLogSink writes after its timestamp (text) or inside its object
// (json, without the braces and timestamp). Exposed for tests.
std::string FormatText(const LogRecord& record);
std::string FormatJsonFields(const LogRecord& record);

}  // namespace tw::tools
