// The RocksDB implementation of tw::Store: the narrow public header of storage/ for the real
// store. Layout, encodings and the format-version check: docs/FORMAT.md.
//
// Everything RocksDB-specific stays behind this header; the only RocksDB name it mentions is a
// forward-declared rocksdb::FileSystem, so that tests can inject faults (storage/fault_fs.h)
// without the rest of the tree including RocksDB.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "engine/status.h"
#include "engine/store.h"

namespace rocksdb {
class DB;
class FileSystem;
}  // namespace rocksdb

namespace tw {

struct RocksStoreOptions {
  std::string path;  // the database directory; created if missing

  // false = the `--durability=none` throwaway mode: Write(batch, sync=true) does NOT sync the
  // WAL. A kill -9 still loses nothing (the WAL reaches the OS on every Write), a power cut may
  // lose acknowledged writes. The caller must say so loudly. true = Write honours `sync`.
  bool sync_default = true;

  size_t block_cache_bytes = 64 << 20;  // one LRU block cache shared by every column family

  // Values of at least blob_min_bytes in the `tasks` and `events` column families (task inputs,
  // outputs) go to BlobDB blob files instead of the LSM, so compactions do not rewrite them.
  bool use_blob_files = true;
  size_t blob_min_bytes = 4096;

  // The file system RocksDB runs on; nullptr = the default (POSIX) one. Tests pass a FaultFs.
  std::shared_ptr<rocksdb::FileSystem> file_system;

  // Benchmarks only (bench/engine_bench.cc records what the engine commits, then replays it
  // through raw RocksDB as its baseline). When set, Write calls it after every successful
  // non-empty write, on the writing thread, with the committed rocksdb::WriteBatch's serialized
  // form (rocksdb::WriteBatch::Data(); rebuild with rocksdb::WriteBatch(std::string)). The view
  // is valid only during the call. Unset in production.
  std::function<void(std::string_view batch_rep)> on_batch_committed;

  // A clean close flushes every memtable, so the next open replays no WAL. Benchmarks set false
  // to leave a closed store as a kill -9 would (everything only in the WAL) and time the
  // replay. Production leaves it true.
  bool flush_on_close = true;

  // After a crash, an open first replays the WAL into memtables. When the WAL holds at least
  // this many bytes, that replay runs in a separate, preliminary open whose `tasks` memtable is
  // an unsorted vector (an insert is an append; the recovery flush sorts it once) instead of the
  // skiplist that point reads need: a skiplist insert per replayed record was the largest single
  // cost of restarting after kill -9 (docs/BENCHMARKS.md). The preliminary open ends with every
  // memtable flushed, so the real open that follows replays nothing. 0 = always when the WAL is
  // not empty (tests); SIZE_MAX = never.
  size_t replay_open_min_wal_bytes = 4 << 20;

  // Every this many bytes written, the store asks RocksDB (without waiting) to flush the side
  // column families, `meta`, `activities` and `default`, which never fill their memtables.
  // A WAL file is deleted only once every column family with data in it has
  // flushed. `meta` is written by every batch yet fills its memtable slowly, so without this it
  // would keep up to max_total_wal_size (256 MiB) of WAL alive, all of it read again by a
  // restart after a crash. A smaller max_total_wal_size is no substitute: it also forces early
  // flushes of `live` and `tasks` while their previous flush still runs, and RocksDB then stops
  // every write (measured: 0.8-1.2 s p99.9, docs/BENCHMARKS.md).
  uint64_t side_flush_every_bytes = 32 << 20;
};

// Opens (creating if missing) the store at options.path.
//
// A new database gets every column family and kFormatVersion in `meta`, synced, before this
// returns. An existing one is first checked without being changed: its column families must be
// exactly tokenwheel's (none missing, none unknown) and its format version must equal
// kFormatVersion; otherwise this returns a Status naming the problem (InvalidArgument for a
// version mismatch or an unexpected column family set, Corruption for an unreadable version)
// and the database files are left exactly as they were.
//
// Thread: any; the returned store then follows engine/store.h's threading rules.
Status OpenRocksStore(const RocksStoreOptions& options, std::unique_ptr<Store>* out);

// The rocksdb::DB under a store that OpenRocksStore returned; nullptr for any other Store. For
// benchmarks that write raw batches with the store's exact options and column families (same
// ids, so batches recorded by on_batch_committed replay as is). Valid while `store` lives; the
// caller must not write through it while an engine owns the store.
rocksdb::DB* RocksDbOf(Store* store);

}  // namespace tw
