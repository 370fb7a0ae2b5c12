// A RocksDB memtable representation for column families that are written far more than read:
// an append-only vector of entries, sorted when an iterator needs them, like RocksDB's own
// VectorRep, but sorted without chasing pointers.
//
// VectorRep sorts its vector of entry pointers with the memtable's comparator, so every
// comparison reads two entries at random places in the memtable's arena: on this project's
// machine, sorting the 700k entries of a full 32 MiB `live` memtable took 0.3-1.1 s, once at
// every flush and again for every memtable replayed after a crash (docs/BENCHMARKS.md). This
// representation first copies each entry's first 8 user-key bytes next to its pointer, in one
// sequential pass over the arena, then sorts those 16-byte items in place; the comparator runs
// only for entries whose 8-byte prefixes are equal (task ids: versions of one key, or ids that
// share a high word, engine/token.h).
//
// REQUIRES (checked by nothing; the factory's user must know): the column family's comparator
// is RocksDB's default bytewise one, so that a smaller zero-padded 8-byte prefix always means a
// smaller user key. Inserts come from one thread at a time (allow_concurrent_memtable_write =
// false). No point reads: a DB::Get, MultiGet or KeyMayExist on a column family with this
// memtable fails a TW_ASSERT (answering one needs RocksDB's internal LookupKey, and sorting a
// memtable per read would be a trap anyway). Use it only where the memtable is only written,
// flushed and scanned.
#pragma once

#include <memory>

namespace rocksdb {
class MemTableRepFactory;
}  // namespace rocksdb

namespace tw {

std::shared_ptr<rocksdb::MemTableRepFactory> NewPrefixSortedRepFactory();

}  // namespace tw
