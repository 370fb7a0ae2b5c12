#include "engine/random.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>

#include <atomic>
#include <cstring>

#include "engine/assert.h"

namespace tw {
namespace {

// A forked child inherits its parent's unconsumed buffer and would hand out the very bytes the
// parent is about to (the same task ids, the same nonces): the child handler bumps a generation
// that makes every buffer refill. This is process-wide state by nature (fork is a process
// event), the one global here.
std::atomic<uint64_t> fork_generation{0};
void OnForkChild() { fork_generation.fetch_add(1, std::memory_order_relaxed); }

struct Pool {
  static constexpr size_t kBytes = 1024;
  uint8_t bytes[kBytes];
  size_t used = kBytes;  // starts empty
  uint64_t generation = 0;
  ~Pool() { OPENSSL_cleanse(bytes, sizeof(bytes)); }
};
static_assert(kRandomBytesPerCallMax <= Pool::kBytes);

}  // namespace

void RandomBytes(uint8_t* out, size_t n) {
  static const bool atfork_registered = ::pthread_atfork(nullptr, nullptr, &OnForkChild) == 0;
  TW_ASSERT(atfork_registered);
  TW_ASSERT(n <= kRandomBytesPerCallMax);
  thread_local Pool pool;
  const uint64_t generation = fork_generation.load(std::memory_order_relaxed);
  if (Pool::kBytes - pool.used < n || pool.generation != generation) {
    const int rc = RAND_bytes(pool.bytes, sizeof(pool.bytes));
    TW_ASSERT_MSG(rc == 1, "RAND_bytes failed: no CSPRNG output");
    pool.used = 0;
    pool.generation = generation;
  }
  TW_ASSERT(pool.used + n <= Pool::kBytes);
  std::memcpy(out, pool.bytes + pool.used, n);
  // Handed out once: wipe it, so that no later state of this buffer still holds a used nonce.
  OPENSSL_cleanse(pool.bytes + pool.used, n);
  pool.used += n;
}

}  // namespace tw
