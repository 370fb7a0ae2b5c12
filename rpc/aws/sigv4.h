// AWS Signature Version 4 verification for the AWS JSON 1.0 gateway: decides whether a request
// was signed by a key listed in the credentials file, and answers the way AWS JSON services do
// when it was not (code and message byte for byte, SEMANTICS.md "Authentication errors").
//
// Plain strings in, no HTTP library: the gateway hands over the request as received.
//
// What Verify checks, in the order AWS JSON services check it (so a request with several faults
// gets the error AWS would give; the order is from DynamoDB's answers as dynalite records them):
//   1. an Authorization header starting "AWS4-" (header authentication only: a presigned URL,
//      X-Amz-Algorithm in the query string, is not accepted);
//   2. it parses as "<algorithm> Credential=..., SignedHeaders=..., Signature=..." and the
//      request carries X-Amz-Date (or, failing that, Date);
//   3. that time is within kClockSkewSecondsMax of `now`, either way;
//   4. `host` is among the signed headers;
//   5. the algorithm is AWS4-HMAC-SHA256;
//   6. the credential is <key id>/<yyyyMMdd>/<region>/<service>/aws4_request, with the request's
//      date, any non-empty region, and the configured service ("states");
//   7. the key id is listed;
//   8. X-Amz-Content-Sha256, when present, is the hex SHA-256 of the body;
//   9. the signature equals HMAC-SHA256 over the canonical request, as botocore and the AWS SDKs
//      build it, under the key derived from the secret; compared in constant time.
// X-Amz-Security-Token is not checked (static keys only): when signed, it is just one more
// signed header.
//
// Thread-safety: Verify is a pure function; Credentials is immutable once built, so one instance
// serves every thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/errors.h"
#include "engine/limits.h"
#include "engine/status.h"

namespace tw::rpc::aws {

using limits::kAwsAccessKeyIdCharsMax;
using limits::kAwsCredentialsFileBytesMax;
using limits::kAwsSecretKeyCharsMax;

// AWS allows a request time this far from its own clock, in either direction.
inline constexpr int64_t kClockSkewSecondsMax = 15 * 60;

// The AWS error codes Verify answers with (the `__type` after '#', and X-Amzn-ErrorType); their
// home is engine/errors.h.
inline constexpr std::string_view kMissingAuthenticationToken =
    ::tw::kMissingAuthenticationTokenException;
inline constexpr std::string_view kIncompleteSignature = ::tw::kIncompleteSignature;
inline constexpr std::string_view kUnrecognizedClient = ::tw::kUnrecognizedClientException;
inline constexpr std::string_view kInvalidSignature = ::tw::kInvalidSignatureException;

// One header line as received. Names compare case-insensitively; a name may repeat.
struct Header {
  std::string_view name;
  std::string_view value;
};

// A request as received. Views only: the caller keeps the bytes alive during Verify.
struct Request {
  std::string_view method;  // "POST"
  std::string_view target;  // the raw request-target: "/" or "/path?query", percent-encoded
  std::span<const Header> headers;
  std::string_view body;
};

struct AuthError {
  std::string_view code;  // one of the k* codes above
  std::string message;    // the AWS text, sent to the client
  int http_status = 400;
  // For the server log, never for the client: on a signature mismatch, the canonical request
  // and string to sign we computed (what AWS itself appends to its message); else empty.
  std::string log_detail;
};

struct VerifyResult {
  std::optional<AuthError> error;  // empty iff the request is authentic
  std::string access_key_id;       // the verified key id; empty on error

  bool ok() const { return !error.has_value(); }
};

struct VerifyOptions {
  // The service the credential scope must name. Only the AWS SigV4 test suite ("service")
  // needs another.
  std::string_view service = "states";
};

// The secret access keys the gateway accepts, by access key id.
//
// Invariants:
//  1. At least one key. Key ids are distinct, 1..kAwsAccessKeyIdCharsMax characters of
//     [A-Za-z0-9._-]; secrets are 1..kAwsSecretKeyCharsMax bytes without control characters.
//  2. Immutable after construction; the destructor wipes the secrets (OPENSSL_cleanse).
class Credentials {
 public:
  // Loads a JSON file of the form
  //   [{"accessKeyId": "AKIA...", "secretAccessKey": "..."}, ...]
  // The file must be a regular file of at most kAwsCredentialsFileBytesMax bytes whose mode
  // grants nothing to group or others (0600 or stricter). Returns IoError if it cannot be read,
  // InvalidArgument if its mode is too open, Corruption if its content breaks invariant 1 or is
  // not that shape (unknown members included). Every message names the file and the problem,
  // never a secret. On success *out holds the keys.
  static Status LoadFile(const std::string& path, std::unique_ptr<Credentials>* out);

  // REQUIRES: `keys` satisfies invariant 1 (TW_ASSERT). Pairs are (access key id, secret).
  explicit Credentials(std::vector<std::pair<std::string, std::string>> keys);
  ~Credentials();

  Credentials(const Credentials&) = delete;
  Credentials& operator=(const Credentials&) = delete;

  // The secret of `access_key_id`, or nullptr if it is not listed. Valid while *this lives.
  const std::string* FindSecret(std::string_view access_key_id) const;
  size_t size() const { return secrets_.size(); }

 private:
  std::map<std::string, std::string, std::less<>> secrets_;
};

// Verifies `request`'s SigV4 Authorization header against `credentials`. `now_ms`: the server's
// wall clock, milliseconds since the Unix epoch (Clock::NowMs); compared at whole seconds.
// Any bytes in any field: never aborts, never throws.
VerifyResult Verify(const Request& request, const Credentials& credentials, int64_t now_ms,
                    const VerifyOptions& options = {});

// The SigV4 canonical request for `request`, given the Authorization header's SignedHeaders
// value and the payload hash line. Exposed for tests and diagnostics. A signed header the
// request lacks contributes "name:" (Verify refuses such a request before signing).
std::string CanonicalRequest(const Request& request, std::string_view signed_headers,
                             std::string_view payload_hash_hex);

}  // namespace tw::rpc::aws
