// Opening the RocksDB store's database: the checks an existing database passes before it is
// opened for writing (column families, format version, emptiness), the preliminary open that
// replays a large WAL after a crash, the read-write open, and the format version check or write
// that follows it (docs/FORMAT.md). Private to storage/.
#pragma once

#include <memory>

#include "engine/status.h"
#include "storage/rocksdb_options.h"
#include "storage/rocksdb_store.h"

namespace tw::rocks {

// Flushes and compactions (the HIGH and LOW pools) run at nice 19: on a small machine a flush
// is a long CPU burst (sorting the `live` vector memtable), and the threads that answer callers
// should get the cores first. Process-wide; idempotent.
void LowerBackgroundPriority(rocksdb::Env* env);

// What PrepareOpen found.
struct OpenPlan {
  bool create = false;            // no database at the path yet
  bool version_expected = false;  // an existing database with a format version in `meta`
};

// Everything before the read-write open of options.path. A new database: nothing. An existing
// one is checked without being changed (column families exactly kCfNames; a format version of
// kFormatVersion or kFormatVersionReadable, or kFormatVersionSealed when options.payload_keys
// is not empty, or none and every column family empty: a creation
// that crashed before its version write was synced), then a WAL of at least
// options.replay_open_min_wal_bytes is replayed by a preliminary open. A refusal is a Status
// naming the problem, the files left as they were.
Status PrepareOpen(const RocksStoreOptions& options, rocksdb::Env* env, OpenPlan* plan);

// The read-write open, with every column family (created when `create`). On success *db and
// *cfs hold the database and its handles; the caller destroys the handles before the database.
// `listener`, when not null, is added to RocksDB's event listeners.
Status OpenDb(const RocksStoreOptions& options, rocksdb::Env* env, bool create,
              std::shared_ptr<rocksdb::EventListener> listener, std::unique_ptr<rocksdb::DB>* db,
              CfHandles* cfs);

// Reads the version back (the probe checked it), or writes it into a new or empty database.
// The version written is kFormatVersionSealed when `sealed` (the store has payload keys), else
// kFormatVersion. An older version needs no rewrite to be read (FORMAT.md): it is marked with
// the new one before anything is written in the new format, so an older build then refuses it.
Status CheckOrWriteFormatVersion(rocksdb::DB* db, const CfHandles& cfs, bool version_expected,
                                 bool sealed);

}  // namespace tw::rocks
