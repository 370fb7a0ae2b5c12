// Bearer secrets and private files (rpc/auth.h).
#include "rpc/auth.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <utility>

#include "engine/assert.h"
#include "engine/limits.h"
#include "engine/scoped_fd.h"

namespace tw::rpc {
namespace {

template <typename T>
Result<T> Invalid(std::string message) {
  return Result<T>::Fail(Error::Make(ErrorCode::kValidation, std::move(message)));
}

// Reads `path` whole, at most max_bytes; `must_be_private`: refuse group / other access, checked
// on the descriptor read (so the file checked is the file read).
Result<std::string> ReadBounded(const std::string& path, size_t max_bytes, const std::string& what,
                                bool must_be_private) {
  using R = Result<std::string>;
  const std::string where = what + " " + path;
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0)
    return Invalid<std::string>("cannot open " + where + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return Invalid<std::string>("cannot stat " + where + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return Invalid<std::string>(where + " is not a regular file");
  if (must_be_private && (st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Invalid<std::string>(where + " has mode " + mode +
                                ": it holds a secret, so group and others must have no access "
                                "(chmod 600)");
  }
  // One byte past the bound, so a file that grew after fstat is still caught.
  std::string text(max_bytes + 1, '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd.get(), text.data() + got, text.size() - got);
    if (n == 0) break;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      WipeSecret(&text);
      return Invalid<std::string>("cannot read " + where + ": " + std::strerror(errno));
    }
    got += static_cast<size_t>(n);
  }
  if (got > max_bytes) {
    WipeSecret(&text);
    return Invalid<std::string>(where + " is larger than " + std::to_string(max_bytes) + " bytes");
  }
  text.resize(got);
  return R::Ok(std::move(text));
}

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view Trim(std::string_view line) {
  while (!line.empty() && IsBlank(line.front())) line.remove_prefix(1);
  while (!line.empty() && IsBlank(line.back())) line.remove_suffix(1);
  return line;
}

}  // namespace

void WipeSecret(std::string* secret) { OPENSSL_cleanse(secret->data(), secret->size()); }

Result<std::string> ReadPrivateFile(const std::string& path, size_t max_bytes,
                                    const std::string& what) {
  return ReadBounded(path, max_bytes, what, /*must_be_private=*/true);
}

Result<std::string> ReadPublicFile(const std::string& path, size_t max_bytes,
                                   const std::string& what) {
  return ReadBounded(path, max_bytes, what, /*must_be_private=*/false);
}

Result<std::vector<std::string>> ParseAuthSecrets(const std::string& text,
                                                  const std::string& where) {
  using R = Result<std::vector<std::string>>;
  std::vector<std::string> secrets;
  auto fail = [&](std::string message) {
    for (std::string& s : secrets) WipeSecret(&s);
    return Invalid<std::vector<std::string>>(std::move(message));
  };
  size_t line_number = 0;
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    ++line_number;
    const std::string_view line = Trim(std::string_view(text).substr(begin, end - begin));
    begin = end + 1;
    if (line.empty() || line.front() == '#') continue;
    const std::string at = where + ", line " + std::to_string(line_number) + ": ";
    if (line.size() < limits::kRpcAuthSecretBytesMin) {
      return fail(at + "the secret is shorter than " +
                  std::to_string(limits::kRpcAuthSecretBytesMin) +
                  " bytes (make one with: openssl rand -hex 32)");
    }
    if (line.size() > limits::kRpcAuthSecretBytesMax) {
      return fail(at + "the secret is longer than " +
                  std::to_string(limits::kRpcAuthSecretBytesMax) + " bytes");
    }
    if (secrets.size() == limits::kRpcAuthSecretsMax) {
      return fail(where + " lists more than " + std::to_string(limits::kRpcAuthSecretsMax) +
                  " secrets");
    }
    secrets.emplace_back(line);
  }
  if (secrets.empty()) {
    return fail(where + " holds no secret (one per line; # starts a comment)");
  }
  return R::Ok(std::move(secrets));
}

Result<std::vector<std::string>> LoadAuthSecrets(const std::string& path) {
  Result<std::string> text = ReadPrivateFile(path, limits::kRpcAuthFileBytesMax, "auth file");
  if (!text.ok()) return Result<std::vector<std::string>>::Fail(std::move(text.error));
  auto secrets = ParseAuthSecrets(text.value, "auth file " + path);
  WipeSecret(&text.value);
  return secrets;
}

AuthSecrets::AuthSecrets(const std::vector<std::string>& secrets) {
  TW_ASSERT(!secrets.empty());
  TW_ASSERT(secrets.size() <= limits::kRpcAuthSecretsMax);
  for (const std::string& s : secrets) {
    TW_ASSERT(s.size() >= limits::kRpcAuthSecretBytesMin);
    TW_ASSERT(s.size() <= limits::kRpcAuthSecretBytesMax);
    Digest d{};
    SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), d.data());
    digests_.push_back(d);
  }
}

AuthSecrets::~AuthSecrets() {
  for (Digest& d : digests_) OPENSSL_cleanse(d.data(), d.size());
}

bool AuthSecrets::Matches(kj::ArrayPtr<const kj::byte> candidate) const {
  // A candidate of any length hashes to a fixed size: the comparison below takes the same time
  // whatever was sent. Oversized candidates never match (the secrets are bounded).
  Digest d{};
  SHA256(candidate.begin(), candidate.size(), d.data());
  int differs_all = 1;
  for (const Digest& secret : digests_) {
    const int differs = CRYPTO_memcmp(d.data(), secret.data(), d.size()) != 0 ? 1 : 0;
    differs_all &= differs;
  }
  OPENSSL_cleanse(d.data(), d.size());
  const bool in_bounds = candidate.size() >= limits::kRpcAuthSecretBytesMin &&
                         candidate.size() <= limits::kRpcAuthSecretBytesMax;
  return differs_all == 0 && in_bounds;
}

}  // namespace tw::rpc
