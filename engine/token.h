// Task ids and task tokens.
//
// A task token is what a worker holds for one task attempt. It is opaque, URL-safe and checked by
// a MAC alone, so a forged or mangled token is refused without any storage read.
//
// Wire format (version 1): 34 bytes, URL-safe base64 without padding (RFC 4648 section 5),
// always exactly kTokenChars = 46 characters:
//
//   offset  size  field
//        0     1  version, = 1
//        1     1  key id of the signing key
//        2     2  shard, big-endian
//        4    16  task id: TaskId::hi then TaskId::lo, each big-endian
//       20    14  HMAC-SHA256(key, bytes [0, 20)), first 14 bytes
//
// 34 bytes is not a multiple of 3, so the last character carries 4 padding bits. Decode requires
// them to be zero: every token has exactly one spelling, and changing any character of a valid
// token yields an invalid one.
//
// Key file format (text, one key per line; created at first open with mode 0600):
//
//   # comment lines and blank lines are ignored
//   v1 <key id: decimal 0..255> <key: 64 hex digits>
//
// Every key listed verifies; the LAST key listed signs new tokens. To rotate: append a line with a
// fresh key id and a new random key, then restart; tokens signed by older keys keep decoding until
// their line is removed. Key ids must be distinct within the file.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/status.h"
#include "engine/types.h"

namespace tw {

// Task ids. 128 bits: a high word that grows with issue time, then 64 bits from OpenSSL's
// CSPRNG (RAND_bytes).
//
//   hi = (issue time in ms since the epoch << kTaskIdSequenceBits) + sequence, raised where
//        needed to exceed the previous id's hi: strictly increasing within one generator
//   lo = 64 random bits
//
// Why not 128 random bits (as the first design had it): task ids are the keys of the `tasks`
// column family, and a random key lands anywhere in the memtable's skiplist, so every insert
// walked it through cache misses; that walk was ~30% of the writer thread's CPU, and it grew
// with batch size just when a backlog had to be written after a slow sync. Ids in issue order
// make a new task's insert an append and its completion's an update near the end, and make
// `tasks` SST files barely overlap. The token's MAC, not the id, is what cannot be forged;
// 64 random bits keep ids unguessable and unique (two ids share a hi only if the wall clock
// went back across a restart, and then collide with probability 2^-64). A token now tells its
// holder when the task was issued, to the millisecond. Ids of earlier releases (all random)
// remain valid: an id is opaque everywhere but here. docs/BENCHMARKS.md has the measurements.
inline constexpr int kTaskIdSequenceBits = 20;  // ids per millisecond before hi runs ahead

// Not thread-safe: one per issuing thread (the engine thread). Aborts (TW_ASSERT) if the RNG
// fails: handing out guessable ids is worse than stopping. Draws RAND_bytes output for 128 ids
// at a time into a per-thread buffer (RAND_bytes has a large fixed cost per call); the buffer
// is discarded in a child after fork().
class TaskIdGenerator {
 public:
  // `now_ms`: the issuing clock's time (clamped to [0, 2^44) ms).
  TaskId Next(int64_t now_ms);

 private:
  uint64_t last_hi_ = 0;
};

// Signs and checks task tokens under a set of HMAC-SHA256 keys.
//
// Invariants:
//  1. At least one key; key ids are distinct. The last key given signs.
//  2. Every token Encode returns is exactly kTokenChars long and Decodes to its (shard, id).
//  3. Decode never reads storage, never allocates, and compares MACs in constant time.
//
// Thread-safe: Encode and Decode are const and touch no shared mutable state.
class TokenCodec {
 public:
  static constexpr uint8_t kVersion = 1;
  static constexpr size_t kKeyBytes = 32;
  static constexpr size_t kMacBytes = 14;     // truncated HMAC-SHA256 (112 bits)
  static constexpr size_t kSignedBytes = 20;  // version | key id | shard | task id
  static constexpr size_t kTokenBytes = kSignedBytes + kMacBytes;  // 34
  static constexpr size_t kTokenChars = 46;                        // base64url, no padding

  // Loads the key file at `path`, creating it with one fresh random key (key id 1) if it does not
  // exist. Creation is atomic and never clobbers: the key is written to a temporary file in the
  // same directory (mode 0600), fsynced, then hard-linked into place (link(2) fails if another
  // process created the file first, in which case that file is loaded instead), and the directory
  // is fsynced. An existing file's mode is not checked.
  // Returns IoError if the file cannot be read or created, Corruption if it is malformed (the
  // message names the line; it never contains key material). On success *out holds the codec.
  static Status OpenKeyFile(const std::string& path, std::unique_ptr<TokenCodec>* out);
  // Copies the key file at `from` to `to`, a new file (mode 0600, fsynced, its directory too):
  // a backup's keys (Engine::Checkpoint). IoError if `from` is missing or `to` exists.
  static Status CopyKeyFile(const std::string& from, const std::string& to);

  // REQUIRES: keys is non-empty and its key ids are distinct (TW_ASSERT). The last entry signs.
  explicit TokenCodec(std::vector<std::pair<uint8_t, std::array<uint8_t, 32>>> keys);
  ~TokenCodec();

  TokenCodec(const TokenCodec&) = delete;
  TokenCodec& operator=(const TokenCodec&) = delete;

  // The token for task `id` on `shard`, signed with the signing key. kTokenChars long.
  // REQUIRES: !id.IsZero() (TW_ASSERT: task ids are never zero).
  std::string Encode(uint16_t shard, const TaskId& id) const;

  // True iff `token` is a well-formed token MAC'd by one of our keys; then sets *id and *shard.
  // On false, *id and *shard are left untouched. Any length, any bytes: never aborts.
  bool Decode(std::string_view token, TaskId* id, uint16_t* shard) const;

  // The key id new tokens are signed with.
  uint8_t signing_key_id() const;

 private:
  struct Keys;
  std::unique_ptr<const Keys> keys_;
};

}  // namespace tw
