// CSPRNG output in small pieces, cheaply: OpenSSL's RAND_bytes costs ~700 ns per call in
// OpenSSL 3.0 whatever the size up to a few hundred bytes (measured on the dev box), so each
// thread draws a kilobyte at once and hands it out. Users: task ids (engine/token.h) and the
// nonces of encrypted payloads (storage/payload_cipher.h).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tw {

inline constexpr size_t kRandomBytesPerCallMax = 64;

// Fills out[0, n) with bytes no other call in this process (nor in a fork of it) returns.
// Aborts (TW_ASSERT) if the RNG fails: a guessable id or a repeated nonce is worse than
// stopping. REQUIRES: n <= kRandomBytesPerCallMax. Thread-safe (a buffer per thread).
void RandomBytes(uint8_t* out, size_t n);

}  // namespace tw
