// Key files: the text format shared by the task-token key file (engine/token.h) and the payload
// key file (storage/payload_cipher.h, docs/OPERATIONS.md "Encryption at rest").
//
//   # comment lines and blank lines are ignored
//   v1 <key id: decimal 0..255> <key: 64 hex digits>
//
// Key ids are distinct within a file; what "the last key" means is up to the file's user (both
// users: it is the one that signs or encrypts, and every listed key verifies or decrypts).
// Every message names the file and, for a malformed one, the line; none contains key material.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/status.h"

namespace tw::keyfile {

inline constexpr size_t kKeyBytes = 32;
using Key = std::array<uint8_t, kKeyBytes>;
// In file order. Holders cleanse it (OPENSSL_cleanse) when done.
using KeyList = std::vector<std::pair<uint8_t, Key>>;

// Whether Read accepts a file that its group or others may read.
enum class Mode { kAny, kPrivate };

// Reads the whole file at `path` (at most limits::kTokenKeyFileBytesMax bytes). Sets *missing
// and returns Ok if it does not exist. `what` names the file in messages ("token key file").
// Mode::kPrivate refuses (InvalidArgument, naming the mode) a file with any group or other
// permission bit: it must be 0600 or stricter.
Status Read(const std::string& path, std::string_view what, Mode mode, std::string* text,
            bool* missing);

// Parses the text of a key file. Corruption "<path>:<line>: <reason>" for a malformed line or
// a duplicate key id, Corruption "<what> holds no key" for a file without a key line.
Status Parse(std::string_view text, const std::string& path, std::string_view what, KeyList* keys);

// Read then Parse; a missing file is IoError "no <what>: <path>".
Status Load(const std::string& path, std::string_view what, Mode mode, KeyList* keys);

// Writes `text` to a fresh temporary file beside `path` (mode 0600), fsyncs it and hard-links it
// to `path`, then fsyncs the directory. link(2) never replaces a file: returns Ok if `path`
// exists afterwards, whoever created it.
Status Publish(const std::string& path, std::string_view text, std::string_view what);

// One key line, "v1 <id> <hex>\n".
std::string KeyLine(uint8_t id, const Key& key);

// Adds a fresh random key (OpenSSL's CSPRNG) as the file's last line, so that it becomes the
// one that signs or encrypts. A missing file is created (Publish) holding `header` and the key;
// an existing one must be Mode::kPrivate and parse, and gets the line appended and fsynced.
// key_id < 0 picks 1 for a new file and the largest listed id + 1 otherwise; a given id, or a
// picked one past 255, that is already listed or out of range is InvalidArgument and changes
// nothing. *chosen_id = the new key's id.
Status AddKey(const std::string& path, std::string_view what, std::string_view header, int key_id,
              uint8_t* chosen_id);

}  // namespace tw::keyfile
