#include "engine/key_file.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "engine/assert.h"
#include "engine/limits.h"
#include "engine/scoped_fd.h"

namespace tw::keyfile {
namespace {

Status Errno(const std::string& what, const std::string& path, int err) {
  return Status::IoError(what + " " + path + ": " + std::strerror(err));
}

std::string Str(std::string_view s) { return std::string(s); }

Status CheckPrivate(const struct stat& st, const std::string& path, std::string_view what) {
  if ((st.st_mode & 077) == 0) return Status::Ok();
  char mode[8];
  std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return Status::InvalidArgument(Str(what) + " " + path + " has mode " + mode +
                                 ": group or others may access it; it must be 0600 "
                                 "(chmod 600 " +
                                 path + ")");
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Parses one "v1 <id> <hex>" line. Returns an empty string on success, else the reason.
std::string ParseKeyLine(std::string_view line, uint8_t* id, Key* key) {
  constexpr std::string_view kPrefix = "v1 ";
  if (line.substr(0, kPrefix.size()) != kPrefix) return "expected a line starting \"v1 \"";
  line.remove_prefix(kPrefix.size());
  const size_t space = line.find(' ');
  if (space == std::string_view::npos) return "expected \"v1 <key id> <64 hex digits>\"";
  const std::string_view id_text = line.substr(0, space);
  const std::string_view hex = line.substr(space + 1);
  unsigned id_value = 0;
  const auto [end, ec] = std::from_chars(id_text.data(), id_text.data() + id_text.size(), id_value);
  if (id_text.empty() || id_text.size() > 3 || ec != std::errc() ||
      end != id_text.data() + id_text.size() || id_value > 255) {
    return "key id must be a decimal number 0..255";
  }
  if (hex.size() != 2 * kKeyBytes) return "key must be exactly 64 hex digits";
  for (size_t i = 0; i < key->size(); ++i) {
    const int hi = HexValue(hex[2 * i]);
    const int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return "key must be exactly 64 hex digits";
    (*key)[i] = static_cast<uint8_t>((hi << 4) | lo);
  }
  *id = static_cast<uint8_t>(id_value);
  return {};
}

Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("cannot write", path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Status FsyncDir(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";
  ScopedFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return Errno("cannot open directory", dir, errno);
  if (::fsync(fd.get()) != 0) return Errno("cannot fsync directory", dir, errno);
  return Status::Ok();
}

std::string Hex(const uint8_t* p, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(2 * n, '\0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = kDigits[p[i] >> 4];
    s[2 * i + 1] = kDigits[p[i] & 15];
  }
  return s;
}

// The id AddKey gives the new key, or InvalidArgument.
Status PickKeyId(const KeyList& keys, int key_id, const std::string& path, uint8_t* out) {
  int id = key_id;
  if (id < 0) {
    id = 1;
    for (const auto& k : keys) id = std::max(id, int{k.first} + 1);
  }
  if (key_id > 255) return Status::InvalidArgument("key id must be 0..255");
  if (id > 255) {
    return Status::InvalidArgument(path + ": no free key id above the largest listed; give one");
  }
  for (const auto& k : keys) {
    if (k.first == id) {
      return Status::InvalidArgument(path + ": key id " + std::to_string(id) +
                                     " is already listed");
    }
  }
  *out = static_cast<uint8_t>(id);
  return Status::Ok();
}

// Appends `line` to the existing file at `path` (a newline first if its text lacks one).
Status AppendLine(const std::string& path, std::string_view text, std::string_view line) {
  ScopedFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  if (fd.get() < 0) return Errno("cannot open", path, errno);
  Status s = Status::Ok();
  if (!text.empty() && text.back() != '\n') s = WriteAll(fd.get(), "\n", path);
  if (s.ok()) s = WriteAll(fd.get(), line, path);
  if (s.ok() && ::fsync(fd.get()) != 0) s = Errno("cannot fsync", path, errno);
  return s;
}

}  // namespace

Status Read(const std::string& path, std::string_view what, Mode mode, std::string* text,
            bool* missing) {
  *missing = false;
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) {
      *missing = true;
      return Status::Ok();
    }
    return Errno("cannot open " + Str(what), path, errno);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Errno("cannot stat " + Str(what), path, errno);
  if (!S_ISREG(st.st_mode)) return Status::IoError(Str(what) + " is not a regular file: " + path);
  if (mode == Mode::kPrivate) {
    Status s = CheckPrivate(st, path, what);
    if (!s.ok()) return s;
  }
  // Read one byte past the bound so a file that grew after fstat is still caught.
  text->assign(limits::kTokenKeyFileBytesMax + 1, '\0');
  size_t got = 0;
  while (got < text->size()) {
    const ssize_t n = ::read(fd.get(), text->data() + got, text->size() - got);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("cannot read " + Str(what), path, errno);
    }
    got += static_cast<size_t>(n);
  }
  if (got > limits::kTokenKeyFileBytesMax) {
    return Status::Corruption(Str(what) + " larger than " +
                              std::to_string(limits::kTokenKeyFileBytesMax) + " bytes: " + path);
  }
  text->resize(got);
  return Status::Ok();
}

Status Parse(std::string_view text, const std::string& path, std::string_view what, KeyList* keys) {
  std::array<bool, 256> seen{};
  keys->reserve(seen.size());  // no reallocation: it would leave uncleansed key copies behind
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    const size_t eol = text.find('\n');
    const std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    if (line.empty() || line[0] == '#') continue;
    uint8_t id = 0;
    Key key;
    const std::string reason = ParseKeyLine(line, &id, &key);
    if (reason.empty() && seen[id]) {
      OPENSSL_cleanse(key.data(), key.size());
      return Status::Corruption(path + ":" + std::to_string(line_no) + ": duplicate key id " +
                                std::to_string(id));
    }
    if (!reason.empty()) {
      OPENSSL_cleanse(key.data(), key.size());
      return Status::Corruption(path + ":" + std::to_string(line_no) + ": " + reason);
    }
    seen[id] = true;
    keys->emplace_back(id, key);
    OPENSSL_cleanse(key.data(), key.size());
  }
  if (keys->empty()) return Status::Corruption(Str(what) + " holds no key: " + path);
  return Status::Ok();
}

Status Load(const std::string& path, std::string_view what, Mode mode, KeyList* keys) {
  std::string text;
  bool missing = false;
  Status s = Read(path, what, mode, &text, &missing);
  if (s.ok() && missing) s = Status::IoError("no " + Str(what) + ": " + path);
  if (s.ok()) s = Parse(text, path, what, keys);
  OPENSSL_cleanse(text.data(), text.size());
  return s;
}

Status Publish(const std::string& path, std::string_view text, std::string_view what) {
  uint8_t nonce[8];
  if (RAND_bytes(nonce, sizeof(nonce)) != 1) return Status::IoError("RAND_bytes failed");
  const std::string tmp = path + ".tmp-" + Hex(nonce, sizeof(nonce));
  ScopedFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fd.get() < 0) return Errno("cannot create", tmp, errno);
  // The umask may clear bits of 0600 (0277 would leave it unreadable to us): set it exactly.
  Status s = ::fchmod(fd.get(), 0600) == 0 ? WriteAll(fd.get(), text, tmp)
                                           : Errno("cannot chmod", tmp, errno);
  if (s.ok() && ::fsync(fd.get()) != 0) s = Errno("cannot fsync", tmp, errno);
  if (s.ok() && ::close(fd.Release()) != 0) s = Errno("cannot close", tmp, errno);
  // link(2), unlike rename(2), never replaces an existing file: if another process created the
  // key file meanwhile, its keys are kept rather than replaced.
  bool linked = false;
  if (s.ok()) {
    linked = ::link(tmp.c_str(), path.c_str()) == 0;
    if (!linked && errno != EEXIST) s = Errno("cannot link " + Str(what), path, errno);
  }
  ::unlink(tmp.c_str());
  if (s.ok() && linked) s = FsyncDir(path);
  return s;
}

std::string KeyLine(uint8_t id, const Key& key) {
  return "v1 " + std::to_string(id) + " " + Hex(key.data(), key.size()) + "\n";
}

Status AddKey(const std::string& path, std::string_view what, std::string_view header, int key_id,
              uint8_t* chosen_id) {
  std::string text;
  bool missing = false;
  KeyList keys;
  Status s = Read(path, what, Mode::kPrivate, &text, &missing);
  if (s.ok() && !missing) s = Parse(text, path, what, &keys);
  if (s.ok()) s = PickKeyId(keys, key_id, path, chosen_id);
  OPENSSL_cleanse(keys.data(), keys.size() * sizeof(keys[0]));
  if (!s.ok()) return s;
  Key key;
  if (RAND_bytes(key.data(), key.size()) != 1) return Status::IoError("RAND_bytes failed");
  std::string line = KeyLine(*chosen_id, key);
  OPENSSL_cleanse(key.data(), key.size());
  if (missing) {
    std::string whole = Str(header) + line;
    s = Publish(path, whole, what);
    OPENSSL_cleanse(whole.data(), whole.size());
  } else {
    s = AppendLine(path, text, line);
  }
  OPENSSL_cleanse(line.data(), line.size());
  OPENSSL_cleanse(text.data(), text.size());
  return s;
}

}  // namespace tw::keyfile
