// PayloadCipher: AES-256-GCM encryption at rest of the values that carry task payloads (the
// `tasks` and `events` column families; docs/FORMAT.md "Sealed values", docs/OPERATIONS.md
// "Encryption at rest"). Private to storage/: RocksStore seals on write and opens on read, so
// the engine never sees ciphertext.
//
// A sealed value (the envelope):
//
//   offset  size  field
//        0     1  kSealedMarker (0xE5): a record version byte no plain value starts with
//        1     1  key id
//        2    12  nonce: fresh CSPRNG output per value (engine/random.h)
//       14     n  ciphertext of the plain value (its record version byte included)
//     14+n    16  GCM tag
//
// The associated data is the caller's `ad` (the column family and the record's key, so a value
// moved under another key fails authentication) followed by the envelope's first two bytes.
//
// Invariants:
//  1. At least one key, ids distinct; the last key given seals.
//  2. Open(ad, Seal(ad, p)) == p for every listed key; Open never aborts, whatever the bytes.
//  3. No message contains key material or plaintext.
//
// Thread-safe: every method is const; each thread keeps its own cipher contexts, with the key
// already set, for the few keys it uses (payload_cipher.cc, KeyedCtx). Those hold the key
// schedule until the thread exits or reuses the slot; freeing one cleanses it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "engine/key_file.h"
#include "engine/status.h"

namespace tw::rocks {

// The associated data of a value sealed under `key` in a column family: a tag byte for the
// column family ('t' tasks, 'e' events), then the key. Keys of both are at most kTaskKeyBytes.
class SealAd {
 public:
  static constexpr size_t kKeyBytesMax = 17;
  static constexpr char kTasks = 't';
  static constexpr char kEvents = 'e';
  SealAd(char cf_tag, std::string_view key);
  std::string_view view() const { return std::string_view(bytes_, size_); }

 private:
  char bytes_[1 + kKeyBytesMax];
  size_t size_;
};

class PayloadCipher {
 public:
  static constexpr uint8_t kSealedMarker = 0xE5;
  static constexpr size_t kNonceBytes = 12;
  static constexpr size_t kTagBytes = 16;
  static constexpr size_t kHeaderBytes = 2 + kNonceBytes;
  static constexpr size_t kOverheadBytes = kHeaderBytes + kTagBytes;  // 30

  // REQUIRES: keys non-empty, ids distinct (TW_ASSERT). Cleanses `keys`.
  explicit PayloadCipher(keyfile::KeyList keys);
  ~PayloadCipher();
  PayloadCipher(const PayloadCipher&) = delete;
  PayloadCipher& operator=(const PayloadCipher&) = delete;

  // Whether `v` is an envelope (starts with kSealedMarker); plain values start with 0x01.
  static bool IsSealed(std::string_view v) {
    return !v.empty() && static_cast<uint8_t>(v[0]) == kSealedMarker;
  }

  // Appends the envelope of `plain` under the sealing key to *dst. Aborts (TW_ASSERT) if
  // OpenSSL fails: writing the value in the clear instead would break the promise.
  void Seal(std::string_view ad, std::string_view plain, std::string* dst) const;

  // REQUIRES: IsSealed(sealed). Sets *plain to the plaintext. A truncated envelope or a failed
  // authentication is Corruption, a key id the key file does not list InvalidArgument; both
  // messages name the key id and `where` (e.g. "tasks record 0123...:issue").
  Status Open(std::string_view ad, std::string_view sealed, std::string_view where,
              std::string* plain) const;

  uint8_t sealing_key_id() const;

 private:
  struct Keys;
  std::unique_ptr<const Keys> keys_;
};

}  // namespace tw::rocks
