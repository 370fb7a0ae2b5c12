// RocksDB's status and slice as tokenwheel's Status and string_view, for the units of the
// RocksDB store. Private to storage/.
#pragma once

#include <rocksdb/slice.h>
#include <rocksdb/status.h>

#include <string_view>

#include "engine/status.h"

namespace tw::rocks {

// NotFound, Corruption and InvalidArgument (NotSupported too) keep their meaning; every other
// failure is an I/O error.
inline Status FromRocks(const rocksdb::Status& s) {
  if (s.ok()) return Status::Ok();
  if (s.IsNotFound()) return Status::NotFound(s.ToString());
  if (s.IsCorruption()) return Status::Corruption(s.ToString());
  if (s.IsInvalidArgument() || s.IsNotSupported()) return Status::InvalidArgument(s.ToString());
  return Status::IoError(s.ToString());
}

inline std::string_view View(const rocksdb::Slice& s) { return {s.data(), s.size()}; }

}  // namespace tw::rocks
