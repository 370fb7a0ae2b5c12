#include "storage/payload_cipher.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <array>
#include <atomic>
#include <cstring>
#include <limits>

#include "engine/assert.h"
#include "engine/random.h"

namespace tw::rocks {
namespace {

static_assert(PayloadCipher::kNonceBytes <= kRandomBytesPerCallMax);
static_assert(PayloadCipher::kOverheadBytes == 30);

struct CtxDeleter {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};

// Every PayloadCipher gets its own number, so that a thread's cached contexts (below) are never
// taken for another instance's, even one allocated at the same address with other keys. Process
// -wide by nature, like the allocator that could reuse the address.
std::atomic<uint64_t> next_instance{1};

// A cipher context with its key already set, per thread. Setting the key (the AES key schedule,
// GCM's hash key, OpenSSL's provider lookup) is most of the cost of sealing a small value:
// measured with a 120-byte record, 1.0-1.25 us of CPU with the key set per call against
// 0.33-0.44 us when only the nonce is set. A context is mutable, so each thread keeps its own,
// for the few (instance, key, direction) triples it uses; freeing one cleanses it.
struct CachedCtx {
  uint64_t instance = 0;  // 0: empty
  uint8_t key_id = 0;
  bool encrypt = false;
  std::unique_ptr<EVP_CIPHER_CTX, CtxDeleter> ctx;
};
constexpr size_t kCachedCtxs = 4;  // the sealing key and a few opening keys, per store

struct ThreadCtxs {
  std::array<CachedCtx, kCachedCtxs> slots;
  size_t next_victim = 0;
};

ThreadCtxs& Ctxs() {
  thread_local ThreadCtxs ctxs;
  return ctxs;
}

// The calling thread's context for (instance, key_id, encrypt), its key set; the caller sets
// the nonce. Aborts (TW_ASSERT) if OpenSSL cannot make one.
EVP_CIPHER_CTX* KeyedCtx(uint64_t instance, uint8_t key_id, bool encrypt, const keyfile::Key& key) {
  ThreadCtxs& ctxs = Ctxs();
  for (CachedCtx& c : ctxs.slots) {
    if (c.instance == instance && c.key_id == key_id && c.encrypt == encrypt) return c.ctx.get();
  }
  CachedCtx& c = ctxs.slots[ctxs.next_victim];
  ctxs.next_victim = (ctxs.next_victim + 1) % kCachedCtxs;
  c.instance = 0;
  c.ctx.reset(EVP_CIPHER_CTX_new());
  TW_ASSERT(c.ctx != nullptr);
  const int ok =
      encrypt ? EVP_EncryptInit_ex(c.ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), nullptr)
              : EVP_DecryptInit_ex(c.ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), nullptr);
  TW_ASSERT_MSG(ok == 1, "AES-256-GCM key setup failed");
  c.instance = instance;
  c.key_id = key_id;
  c.encrypt = encrypt;
  return c.ctx.get();
}

// Forgets the calling thread's context for (instance, key_id, encrypt): after a failed
// authentication its state is not trusted for the next value.
void DropCtx(uint64_t instance, uint8_t key_id, bool encrypt) {
  for (CachedCtx& c : Ctxs().slots) {
    if (c.instance == instance && c.key_id == key_id && c.encrypt == encrypt) {
      c.instance = 0;
      c.ctx.reset();
    }
  }
}

const unsigned char* U(const char* p) { return reinterpret_cast<const unsigned char*>(p); }
unsigned char* U(char* p) { return reinterpret_cast<unsigned char*>(p); }

// EVP takes int lengths; payloads are bounded far below (limits::kRequestBytesMax).
int Len(size_t n) {
  TW_ASSERT(n <= static_cast<size_t>(std::numeric_limits<int>::max()));
  return static_cast<int>(n);
}

// ad, then the envelope's marker and key id: both are authenticated.
bool AddAd(EVP_CIPHER_CTX* ctx, std::string_view ad, const char* header, bool encrypt) {
  int n = 0;
  auto update = encrypt ? EVP_EncryptUpdate : EVP_DecryptUpdate;
  return update(ctx, nullptr, &n, U(ad.data()), Len(ad.size())) == 1 &&
         update(ctx, nullptr, &n, U(header), 2) == 1;
}

std::string KeyIdText(uint8_t id) { return "payload key id " + std::to_string(id); }

}  // namespace

SealAd::SealAd(char cf_tag, std::string_view key) : size_(1 + key.size()) {
  TW_ASSERT(key.size() <= kKeyBytesMax);
  TW_ASSERT(cf_tag == kTasks || cf_tag == kEvents);
  bytes_[0] = cf_tag;
  std::memcpy(bytes_ + 1, key.data(), key.size());
}

struct PayloadCipher::Keys {
  std::array<keyfile::Key, 256> by_id{};
  std::array<bool, 256> present{};
  uint8_t sealing = 0;
  uint64_t instance = 0;  // next_instance: names this key set in the threads' context caches
  ~Keys() { OPENSSL_cleanse(by_id.data(), sizeof(by_id)); }
};

PayloadCipher::PayloadCipher(keyfile::KeyList keys) {
  TW_ASSERT(!keys.empty());
  TW_ASSERT(keys.size() <= 256);
  auto k = std::make_unique<Keys>();
  for (const auto& [id, key] : keys) {
    TW_ASSERT_MSG(!k->present[id], "duplicate payload key id");
    k->present[id] = true;
    k->by_id[id] = key;
  }
  k->sealing = keys.back().first;
  k->instance = next_instance.fetch_add(1, std::memory_order_relaxed);
  OPENSSL_cleanse(keys.data(), keys.size() * sizeof(keys[0]));
  keys_ = std::move(k);
}

PayloadCipher::~PayloadCipher() = default;

uint8_t PayloadCipher::sealing_key_id() const { return keys_->sealing; }

void PayloadCipher::Seal(std::string_view ad, std::string_view plain, std::string* dst) const {
  const size_t start = dst->size();
  dst->resize(start + kOverheadBytes + plain.size());
  char* out = dst->data() + start;
  out[0] = static_cast<char>(kSealedMarker);
  out[1] = static_cast<char>(keys_->sealing);
  RandomBytes(U(out + 2), kNonceBytes);
  EVP_CIPHER_CTX* ctx =
      KeyedCtx(keys_->instance, keys_->sealing, /*encrypt=*/true, keys_->by_id[keys_->sealing]);
  int n = 0;
  int final_n = 0;
  const bool ok =
      EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, U(out + 2)) == 1 &&
      AddAd(ctx, ad, out, /*encrypt=*/true) &&
      EVP_EncryptUpdate(ctx, U(out + kHeaderBytes), &n, U(plain.data()), Len(plain.size())) == 1 &&
      EVP_EncryptFinal_ex(ctx, U(out + kHeaderBytes + n), &final_n) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagBytes),
                          out + kHeaderBytes + plain.size()) == 1;
  TW_ASSERT_MSG(ok, "AES-256-GCM encryption failed");
  TW_ASSERT(static_cast<size_t>(n + final_n) == plain.size());  // GCM is a stream mode
  TW_DEBUG_ASSERT(IsSealed(std::string_view(*dst).substr(start)));
}

Status PayloadCipher::Open(std::string_view ad, std::string_view sealed, std::string_view where,
                           std::string* plain) const {
  TW_ASSERT(IsSealed(sealed));
  if (sealed.size() < kOverheadBytes) {
    return Status::Corruption(std::string(where) + ": truncated encrypted value");
  }
  const uint8_t id = static_cast<uint8_t>(sealed[1]);
  if (!keys_->present[id]) {
    return Status::InvalidArgument(std::string(where) + " is encrypted under " + KeyIdText(id) +
                                   ", which the payload key file does not list");
  }
  const size_t body = sealed.size() - kOverheadBytes;
  plain->resize(body);
  EVP_CIPHER_CTX* ctx = KeyedCtx(keys_->instance, id, /*encrypt=*/false, keys_->by_id[id]);
  char tag[kTagBytes];
  std::memcpy(tag, sealed.data() + kHeaderBytes + body, kTagBytes);
  int n = 0;
  int final_n = 0;
  const bool ok =
      EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr, U(sealed.data() + 2)) == 1 &&
      AddAd(ctx, ad, sealed.data(), /*encrypt=*/false) &&
      EVP_DecryptUpdate(ctx, U(plain->data()), &n, U(sealed.data() + kHeaderBytes), Len(body)) ==
          1 &&
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagBytes), tag) == 1 &&
      EVP_DecryptFinal_ex(ctx, U(plain->data() + n), &final_n) == 1;
  if (!ok) {
    DropCtx(keys_->instance, id, /*encrypt=*/false);
    OPENSSL_cleanse(plain->data(), plain->size());
    plain->clear();
    return Status::Corruption(std::string(where) + " fails authentication under " + KeyIdText(id) +
                              " (altered, moved from another record, or a different key with "
                              "the same id)");
  }
  TW_ASSERT(static_cast<size_t>(n + final_n) == body);
  return Status::Ok();
}

}  // namespace tw::rocks
