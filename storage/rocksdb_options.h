// The RocksDB store's column-family table and the options of its DB and column families
// (docs/FORMAT.md, "Tuning"). Private to storage/.
#pragma once

#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include "storage/rocksdb_store.h"

namespace tw::rocks {

// Column families, in the order of the handles vector. "default" exists in every RocksDB
// database; tokenwheel leaves it empty.
enum Cf : size_t {
  kDefault,
  kTasks,
  kLive,
  kIdem,
  kEvents,
  kRetired,
  kActivities,
  kMeta,
  kCfCount
};
inline constexpr std::array<const char*, kCfCount> kCfNames = {
    "default", "tasks", "live", "idem", "events", "retired", "activities", "meta"};

// The column families RocksStoreOptions::side_flush_every_bytes flushes: those that never fill
// their memtable. The others flush when theirs fills, or at the max_total_wal_size backstop when
// they are no longer written; flushing them early would also queue their flushes ahead of the
// `tasks` and `live` ones on RocksDB's single flush thread (max_background_jobs = 4 gives one).
inline constexpr std::array<Cf, 3> kSideCfs = {kDefault, kActivities, kMeta};

// An open database's column family handles, indexed by Cf.
using CfHandles = std::array<rocksdb::ColumnFamilyHandle*, kCfCount>;

// The DB options of every open, the read-only probes' included. `env` is not owned.
rocksdb::DBOptions MakeDbOptions(rocksdb::Env* env);

// The options of a read-write open of the database at `path`: MakeDbOptions, and RocksDB's info
// log written by a FileLogger (storage/file_logger.h: a full disk must not abort the process).
rocksdb::DBOptions MakeWritableDbOptions(rocksdb::Env* env, const std::string& path);

// One descriptor per column family, in Cf order, tuned per docs/FORMAT.md ("Tuning"). Each call
// makes a new block cache of options.block_cache_bytes, shared by the column families it tunes.
std::vector<rocksdb::ColumnFamilyDescriptor> MakeCfDescriptors(const RocksStoreOptions& options);

}  // namespace tw::rocks
