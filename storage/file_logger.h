// FileLogger: RocksDB's info log (DIR/LOG), written so that a full disk or an I/O error cannot
// stop the process. RocksDB's own logger keeps a file writer that, once an append failed,
// asserts on the next one (WritableFileWriter::AssertFalseAndGetStatusForPrevError, compiled in
// by Debian's build): the LOG line RocksDB writes about a failed WAL append was that next one,
// and aborted tokenwheeld (tests/rpc/disk_full_test.cc). Here a failed write drops its line and
// the next one tries again. Private to storage/.
//
// Lines look like RocksDB's ("2026/12/07-05:21:35.522123 7f21c2 message"). The file rolls over at
// max_bytes to LOG.old.<microseconds>, keeping the `keep` newest old files, as RocksDB's
// AutoRollLogger does with max_log_file_size and keep_log_file_num.
//
// Thread-safe: RocksDB logs from every thread.
#pragma once

#include <rocksdb/env.h>

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace tw {

class FileLogger final : public rocksdb::Logger {
 public:
  // Writes dir + "/LOG" (created with mode 0600 if missing). A LOG already there is
  // rolled over first: each open of the database starts its own, as RocksDB's logger does.
  FileLogger(std::string dir, uint64_t max_bytes, size_t keep);
  ~FileLogger() override;

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override;
  size_t GetLogFileSize() const override;

 private:
  void OpenLocked();
  void RollLocked();

  const std::string dir_;
  const uint64_t max_bytes_;
  const size_t keep_;
  mutable std::mutex mu_;
  int fd_ = -1;         // guarded by mu_; -1 while the file cannot be opened
  uint64_t bytes_ = 0;  // guarded by mu_
};

}  // namespace tw
