#include "storage/file_logger.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <vector>

namespace tw {

namespace {
constexpr size_t kLineBytesMax = 4096;  // longer lines are cut (RocksDB's own logger cuts too)
}  // namespace

FileLogger::FileLogger(std::string dir, uint64_t max_bytes, size_t keep)
    : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL),
      dir_(std::move(dir)),
      max_bytes_(max_bytes),
      keep_(keep) {
  std::lock_guard<std::mutex> lock(mu_);
  OpenLocked();
  if (bytes_ > 0) RollLocked();  // each open of the database starts a LOG, as RocksDB's does
}

FileLogger::~FileLogger() {
  if (fd_ >= 0) ::close(fd_);
}

void FileLogger::OpenLocked() {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);  // a new database's, before RocksDB makes it
  fd_ = ::open((dir_ + "/LOG").c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  struct stat st {};
  bytes_ = fd_ >= 0 && ::fstat(fd_, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

void FileLogger::Logv(const char* format, va_list ap) {
  char line[kLineBytesMax];
  timeval now{};
  ::gettimeofday(&now, nullptr);
  std::tm tm{};
  ::localtime_r(&now.tv_sec, &tm);
  int n =
      std::snprintf(line, sizeof(line), "%04d/%02d/%02d-%02d:%02d:%02d.%06ld %lx ",
                    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                    static_cast<long>(now.tv_usec), static_cast<unsigned long>(::pthread_self()));
  if (n < 0) return;
  va_list copy;
  va_copy(copy, ap);
  const int m = std::vsnprintf(line + n, sizeof(line) - static_cast<size_t>(n) - 1, format, copy);
  va_end(copy);
  if (m < 0) return;
  n = std::min<int>(n + m, static_cast<int>(sizeof(line)) - 2);
  if (line[n - 1] != '\n') line[n++] = '\n';
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) OpenLocked();  // the disk may have room again
  if (fd_ < 0) return;
  // A failed or short write loses (part of) this line and nothing else.
  const ssize_t written = ::write(fd_, line, static_cast<size_t>(n));
  if (written > 0) bytes_ += static_cast<uint64_t>(written);
  if (max_bytes_ > 0 && bytes_ >= max_bytes_) RollLocked();
}

void FileLogger::RollLocked() {
  ::close(fd_);
  fd_ = -1;
  timeval now{};
  ::gettimeofday(&now, nullptr);
  const uint64_t us = static_cast<uint64_t>(now.tv_sec) * 1'000'000 + now.tv_usec;
  std::error_code ec;
  std::filesystem::rename(dir_ + "/LOG", dir_ + "/LOG.old." + std::to_string(us), ec);
  // Keep the newest `keep_` old logs: their names sort by time.
  std::vector<std::string> old;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("LOG.old.", 0) == 0) old.push_back(name);
  }
  std::sort(old.begin(), old.end());
  for (size_t i = 0; i + keep_ < old.size(); ++i) {
    std::filesystem::remove(std::filesystem::path(dir_) / old[i], ec);
  }
  OpenLocked();
}

size_t FileLogger::GetLogFileSize() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

}  // namespace tw
