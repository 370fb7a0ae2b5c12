// Authentication of the Cap'n Proto API: the bearer secrets of ServerOptions::auth_secrets and
// ClientOptions::auth_secret, and the private files they and the TLS keys are read from. The
// narrow header the mains include (tokenwheeld, the CLI); the Gate interface that checks a secret
// is rpc/service.h.
//
// The auth file (tokenwheeld --rpc-auth-file, tokenwheel --auth-file). UTF-8 text, one secret
// per line; leading and trailing blanks (space, tab, CR) are trimmed; empty lines and lines whose
// first non-blank character is '#' are skipped. Each secret is kRpcAuthSecretBytesMin to
// kRpcAuthSecretBytesMax bytes; a file holds 1 to kRpcAuthSecretsMax of them. The server accepts
// any secret listed (a rotation lists the old and the new one); a client presents the first.
// Like every file that holds a secret, it must give group and others no access (mode 0600 or
// 0400): a file that does is refused, as are one that is not a regular file, one larger than
// kRpcAuthFileBytesMax, and a secret outside the bounds. Errors name the file and line, never
// the secret.
#pragma once

#include <kj/array.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/types.h"

namespace tw::rpc {

// Reads a whole file that holds a secret (an auth file, a TLS private key). Refuses, with a
// kValidation error naming `what` and the path, a file that is not regular, that group or others
// may access (the mode is checked on the descriptor read), or that is larger than max_bytes.
Result<std::string> ReadPrivateFile(const std::string& path, size_t max_bytes,
                                    const std::string& what);

// Reads an ordinary (public) file such as a certificate; refuses one larger than max_bytes.
Result<std::string> ReadPublicFile(const std::string& path, size_t max_bytes,
                                   const std::string& what);

// The secrets of an auth file, in file order (see the header for the format).
Result<std::vector<std::string>> LoadAuthSecrets(const std::string& path);

// Parses auth-file text (LoadAuthSecrets after reading; `where` names it in errors).
Result<std::vector<std::string>> ParseAuthSecrets(const std::string& text,
                                                  const std::string& where);

// The secrets a server accepts, kept as SHA-256 digests only. Matches() compares a candidate
// against every one of them in constant time (CRYPTO_memcmp on the digests, no early exit), so
// neither which secret matched nor how much of it did shows in the time taken.
// Invariants: 1 <= digests_.size() <= kRpcAuthSecretsMax.
class AuthSecrets {
 public:
  // REQUIRES: 1..kRpcAuthSecretsMax secrets, each within the byte bounds (ParseAuthSecrets).
  explicit AuthSecrets(const std::vector<std::string>& secrets);
  ~AuthSecrets();
  AuthSecrets(const AuthSecrets&) = delete;
  AuthSecrets& operator=(const AuthSecrets&) = delete;

  // True if `candidate` is one of the secrets. Any thread.
  bool Matches(kj::ArrayPtr<const kj::byte> candidate) const;
  size_t size() const { return digests_.size(); }

 private:
  using Digest = std::array<unsigned char, 32>;
  std::vector<Digest> digests_;
};

// Overwrites a string that held a secret (best effort: copies made earlier are not reached).
void WipeSecret(std::string* secret);

}  // namespace tw::rpc
