// The RocksDB implementation of tw::Store: the narrow public header of storage/ for the real
// store. Layout, encodings and the format-version check: docs/FORMAT.md.
//
// Everything RocksDB-specific stays behind this header: it names no RocksDB type. What only
// tests and benchmarks may ask of the store (a fault-injecting file system, the committed
// batches, the rocksdb::DB underneath, a close that leaves the WAL) is in
// storage/rocksdb_store_testing.h, which tools/, rpc/ and engine/ do not include.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/key_file.h"
#include "engine/status.h"
#include "engine/store.h"

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

  // Encryption at rest of the task payloads (docs/OPERATIONS.md "Encryption at rest"): every
  // value of the `tasks` and `events` column families is written sealed with AES-256-GCM
  // under the LAST key listed, and a sealed value is read under whichever listed key it names
  // (rotation). Empty = values are written plain, as before. A database that ever had a key is
  // format version kFormatVersionSealed and refuses to open without one. Load them with
  // LoadPayloadKeyFile; the store keeps its own copy.
  keyfile::KeyList payload_keys;
};

// The payload key file (docs/OPERATIONS.md): keyfile format (engine/key_file.h), mode 0600 or
// stricter (InvalidArgument otherwise), at least one key. Messages never hold key material.
Status LoadPayloadKeyFile(const std::string& path, keyfile::KeyList* keys);

// Opens (creating if missing) the store at options.path.
//
// A new database gets every column family and kFormatVersion in `meta`, synced, before this
// returns. An existing one is first checked without being changed: its column families must be
// exactly tokenwheel's (none missing, none unknown) and its format version must equal
// kFormatVersion (or kFormatVersionSealed, only with payload_keys); otherwise this returns a Status
// naming the problem (InvalidArgument for a version mismatch or an unexpected column family set,
// Corruption for an unreadable version) and the database files are left exactly as they were.
//
// Thread: any; the returned store then follows engine/store.h's threading rules.
Status OpenRocksStore(const RocksStoreOptions& options, std::unique_ptr<Store>* out);

}  // namespace tw
