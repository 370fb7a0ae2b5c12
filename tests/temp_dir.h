// A fresh directory for one test or benchmark, removed with everything in it at destruction.
// Shared by the unit tests (tests/storage, tests/rpc) and the benchmarks (bench/).
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

namespace tw {

class TempDir {
 public:
  // mkdtemp under `base` (empty: the system's temp directory, which honours TMPDIR), named
  // `<prefix>-XXXXXX`. Nothing can run without it, so a failure aborts with the reason.
  explicit TempDir(std::string_view prefix = "tw-test", std::string_view base = {}) {
    std::string templ =
        base.empty() ? std::filesystem::temp_directory_path().string() : std::string(base);
    templ.append("/").append(prefix).append("-XXXXXX");
    if (::mkdtemp(templ.data()) == nullptr) {
      std::perror(("mkdtemp " + templ).c_str());
      std::abort();
    }
    path_ = std::move(templ);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

  // tmpfs (/dev/shm) when it is writable, else the system's temp directory: for tests where
  // FaultFs, not the disk, decides what survives, so real fsyncs would only cost run time.
  static std::string FastBase() {
    if (::access("/dev/shm", W_OK) == 0) return "/dev/shm";
    return std::filesystem::temp_directory_path().string();
  }

 private:
  std::string path_;
};

}  // namespace tw
