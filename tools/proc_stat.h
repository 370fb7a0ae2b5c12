// What /proc says about a process: its resident set. Header-only; shared by the benchmarks
// (bench/) and the crash-test tool's overload mode (tools/crashtest/overload.cc).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <fstream>
#include <string>

namespace tw {

// VmRSS of `pid` in bytes (0 when the process is gone or /proc cannot be read).
inline uint64_t RssBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

}  // namespace tw
