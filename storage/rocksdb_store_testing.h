// What only tests and benchmarks may ask of the RocksDB store (storage/rocksdb_store.h): hooks
// into its file system, its commits and its close, and the rocksdb::DB underneath. Production
// code (tools/, rpc/, engine/) does not include this header; a store opened without hooks is
// exactly the one OpenRocksStore returns.
#pragma once

#include <functional>
#include <memory>
#include <string_view>

#include "engine/status.h"
#include "engine/store.h"
#include "storage/rocksdb_store.h"

namespace rocksdb {
class DB;
class FileSystem;
}  // namespace rocksdb

namespace tw {

struct RocksStoreTestHooks {
  // The file system RocksDB runs on; nullptr = the default (POSIX) one. Tests pass a FaultFs
  // (storage/fault_fs.h) to drop unsynced data and to fail appends and syncs.
  std::shared_ptr<rocksdb::FileSystem> file_system;

  // bench/engine_bench.cc records what the engine commits, then replays it through raw RocksDB
  // as its baseline. When set, Write calls it after every successful non-empty write, on the
  // writing thread, with the committed rocksdb::WriteBatch's serialized form
  // (rocksdb::WriteBatch::Data(); rebuild with rocksdb::WriteBatch(std::string)). The view is
  // valid only during the call.
  std::function<void(std::string_view batch_rep)> on_batch_committed;

  // A clean close flushes every memtable, so the next open replays no WAL. false leaves a
  // closed store as a kill -9 would (everything only in the WAL), to time or test the replay.
  bool flush_on_close = true;
};

// OpenRocksStore with hooks; same contract otherwise.
Status OpenRocksStoreForTesting(const RocksStoreOptions& options, const RocksStoreTestHooks& hooks,
                                std::unique_ptr<Store>* out);

// The rocksdb::DB under a store that OpenRocksStore or OpenRocksStoreForTesting returned;
// nullptr for any other Store. For benchmarks that write raw batches with the store's exact
// options and column families (same ids, so batches recorded by on_batch_committed replay as
// is), and for tests that look at RocksDB's state. Valid while `store` lives; the caller must
// not write through it while an engine owns the store.
rocksdb::DB* RocksDbOf(Store* store);

}  // namespace tw
