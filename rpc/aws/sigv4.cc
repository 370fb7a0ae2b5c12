#include "rpc/aws/sigv4.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "engine/assert.h"
#include "engine/errors.h"
#include "engine/scoped_fd.h"

namespace tw::rpc::aws {
namespace {

// ---- AWS texts ----
//
// Confirmed against AWS answers quoted in public sources:
//  - dynalite's server (mhart/dynalite, index.js) quotes real DynamoDB answers, DynamoDB being
//    an AWS JSON 1.0 service on the same front end as Step Functions: the check order, "Request
//    is missing Authentication Token" (see kMissingTokenText), the "requires ... parameter"
//    messages ending "Authorization=<header>", "Date must be in ISO-8601 'basic format'",
//    "Signature expired", "Unsupported AWS 'algorithm'", "Credential must have exactly 5
//    slash-delimited elements", the four credential-scope texts joined in one message, and the
//    signature-mismatch text. AWS appends the canonical request and string to sign to the
//    latter; SEMANTICS.md records the text without them, so they go to AuthError::log_detail.
//  - GitHub issues quoting AWS: "Credential should be scoped to correct service: 'batch'. " and
//    "... to a valid region, not 'eu-west-1'. " (both with the trailing space), "'Host' or
//    ':authority' must be a 'SignedHeader' in the AWS Authorization." (aws/aws-sdk-php#2469; older
//    answers say "'Host' must be ..."), "'<token>' not a valid key=value pair (missing
//    equal-sign) in Authorization header: '<header>'." (Cloud9 and DynamoDB answers).
//  - AWS's SigV4 troubleshooting page: "Signature not yet current: <date> is still later than
//    <date>"; the "(<server time> + 15 min.)" tail mirrors the confirmed "expired" text.
// Not confirmed (chosen to read like the rest, marked where used): the trailing space after the
// credential-scope date text, the Date-header parse failure, and both X-Amz-Content-Sha256 texts.
//
// SEMANTICS.md fixes "Missing Authentication Token" and the code "IncompleteSignature"; DynamoDB
// answers "Request is missing Authentication Token" and "IncompleteSignatureException". Clients
// key on neither (botocore retries none of these), so SEMANTICS.md wins until recorded otherwise.
constexpr std::string_view kMissingTokenText = kMissingAuthenticationTokenMessage;
constexpr std::string_view kUnknownKeyText = kUnrecognizedClientMessage;
constexpr std::string_view kMismatchText = kSignatureMismatchMessage;
constexpr std::string_view kAlgorithm = "AWS4-HMAC-SHA256";
constexpr std::string_view kTerminator = "aws4_request";

static_assert(kClockSkewSecondsMax % 60 == 0, "messages state the skew in whole minutes");

using Digest = std::array<uint8_t, 32>;

// ---- Crypto (OpenSSL one-shot calls; failures there are bugs or a broken library) ----

Digest Sha256(std::string_view data) {
  Digest out;
  unsigned int len = 0;
  const int ok = EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr);
  TW_ASSERT(ok == 1);
  TW_ASSERT(len == out.size());
  return out;
}

Digest HmacSha256(std::string_view key, std::string_view msg) {
  Digest out;
  unsigned int len = 0;
  const unsigned char* mac =
      HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out.data(), &len);
  TW_ASSERT(mac != nullptr);
  TW_ASSERT(len == out.size());
  return out;
}

std::string_view AsView(const Digest& d) {
  return {reinterpret_cast<const char*>(d.data()), d.size()};
}

std::string Hex(const Digest& d) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(2 * d.size(), '\0');
  for (size_t i = 0; i < d.size(); ++i) {
    s[2 * i] = kDigits[d[i] >> 4];
    s[2 * i + 1] = kDigits[d[i] & 15];
  }
  return s;
}

// kSigning = HMAC chain over "AWS4" + secret, date, region, service, "aws4_request".
Digest SigningKey(std::string_view secret, std::string_view date, std::string_view region,
                  std::string_view service) {
  std::string k_secret = "AWS4";
  k_secret.append(secret);
  Digest key = HmacSha256(k_secret, date);
  OPENSSL_cleanse(k_secret.data(), k_secret.size());
  key = HmacSha256(AsView(key), region);
  key = HmacSha256(AsView(key), service);
  return HmacSha256(AsView(key), kTerminator);
}

// ---- Text ----

// ASCII whitespace, as botocore's str.split() and the JavaScript SDK's /\s+/ see it in headers.
bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return Lower(x) == Lower(y); });
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// SigV4's Trimall: no leading or trailing whitespace, inner runs of it as one space.
void AppendTrimall(std::string_view s, std::string* out) {
  bool space_pending = false;
  bool wrote = false;
  for (const char c : s) {
    if (IsSpace(c)) {
      space_pending = wrote;
      continue;
    }
    if (space_pending) out->push_back(' ');
    out->push_back(c);
    wrote = true;
    space_pending = false;
  }
}

// Every value of header `name` (any case), in arrival order, joined with ',' (the HTTP rule for
// a repeated header); each value Trimall'd when `trimall`. nullopt when the header is absent.
// Linear in the header count, which the HTTP layer bounds.
std::optional<std::string> JoinedHeader(std::span<const Header> headers, std::string_view name,
                                        bool trimall) {
  std::optional<std::string> out;
  for (const Header& h : headers) {
    if (!EqualsIgnoreCase(h.name, name)) continue;
    if (out) {
      out->push_back(',');
    } else {
      out.emplace();
    }
    if (trimall) {
      AppendTrimall(h.value, &*out);
    } else {
      out->append(h.value);
    }
  }
  return out;
}

// Calls fn(piece) for each piece of `s` between `sep`s (an empty `s` is one empty piece).
template <typename Fn>
void ForEachPiece(std::string_view s, char sep, Fn fn) {
  while (true) {
    const size_t end = s.find(sep);
    fn(s.substr(0, end));
    if (end == std::string_view::npos) return;
    s.remove_prefix(end + 1);
  }
}

// ---- URI ----

bool IsUnreserved(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}

// SigV4's UriEncode: every byte but the unreserved ones (and '/' when `keep_slash`) as %XX.
void AppendUriEncoded(std::string_view s, bool keep_slash, std::string* out) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  for (const char c : s) {
    if (IsUnreserved(c) || (keep_slash && c == '/')) {
      out->push_back(c);
      continue;
    }
    const auto byte = static_cast<unsigned char>(c);
    out->push_back('%');
    out->push_back(kDigits[byte >> 4]);
    out->push_back(kDigits[byte & 15]);
  }
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX escapes decoded; a malformed escape stays as it is. '+' stays '+': AWS does not read it
// as a space.
std::string PercentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const int hi = s[i] == '%' && i + 2 < s.size() ? HexValue(s[i + 1]) : -1;
    const int lo = hi >= 0 ? HexValue(s[i + 2]) : -1;
    if (lo < 0) {
      out.push_back(s[i]);
      continue;
    }
    out.push_back(static_cast<char>((hi << 4) | lo));
    i += 2;
  }
  return out;
}

// Splits the request-target at the first '?' into (path, query).
std::pair<std::string_view, std::string_view> SplitTarget(std::string_view target) {
  const size_t q = target.find('?');
  if (q == std::string_view::npos) return {target, {}};
  return {target.substr(0, q), target.substr(q + 1)};
}

// botocore's canonical URI (auth.py _normalize_url_path): dot segments and empty segments go
// (RFC 3986 5.2.4, and AWS wants no consecutive slashes), then the path, still percent-encoded
// as it came over the wire, is URI-encoded once more. That second encoding is the "encode each
// segment twice" that SigV4 asks of every service but S3.
std::string CanonicalUri(std::string_view path) {
  if (path.empty()) return "/";
  std::vector<std::string_view> kept;
  ForEachPiece(path, '/', [&kept](std::string_view segment) {
    if (segment == "..") {
      if (!kept.empty()) kept.pop_back();
    } else if (!segment.empty() && segment != ".") {
      kept.push_back(segment);
    }
  });
  std::string normal = path.front() == '/' ? "/" : "";
  for (size_t i = 0; i < kept.size(); ++i) {
    if (i > 0) normal.push_back('/');
    normal.append(kept[i]);
  }
  if (path.back() == '/' && !kept.empty()) normal.push_back('/');
  std::string out;
  AppendUriEncoded(normal, /*keep_slash=*/true, &out);
  return out;
}

// Name=value pairs, each side decoded then UriEncoded, sorted by name then value, joined by '&'.
std::string CanonicalQuery(std::string_view query) {
  if (query.empty()) return {};
  std::vector<std::pair<std::string, std::string>> pairs;
  ForEachPiece(query, '&', [&pairs](std::string_view pair) {
    const size_t eq = pair.find('=');
    const std::string_view value = eq == std::string_view::npos ? "" : pair.substr(eq + 1);
    auto& [k, v] = pairs.emplace_back();
    AppendUriEncoded(PercentDecode(pair.substr(0, eq)), /*keep_slash=*/false, &k);
    AppendUriEncoded(PercentDecode(value), /*keep_slash=*/false, &v);
  });
  std::sort(pairs.begin(), pairs.end());
  std::string out;
  for (const auto& [k, v] : pairs) {
    if (!out.empty()) out.push_back('&');
    out.append(k).append("=").append(v);
  }
  return out;
}

bool QueryHasName(std::string_view query, std::string_view name) {
  bool found = false;
  if (query.empty()) return false;
  ForEachPiece(query, '&', [&](std::string_view pair) {
    found = found || PercentDecode(pair.substr(0, pair.find('='))) == name;
  });
  return found;
}

// ---- Time (UTC, whole seconds since the Unix epoch) ----

bool ParseDigits(std::string_view s, int* out) {
  int v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return !s.empty();
}

bool ToEpochSeconds(int y, int mo, int d, int h, int mi, int s, int64_t* out) {
  using namespace std::chrono;
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)},
                           day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || s > 59) return false;
  *out = sys_days(ymd).time_since_epoch().count() * int64_t{86'400} + h * 3600 + mi * 60 + s;
  return true;
}

// yyyyMMdd'T'HHmmss'Z', exactly.
bool ParseAmzDate(std::string_view s, int64_t* out) {
  int y, mo, d, h, mi, sec;
  if (s.size() != 16 || s[8] != 'T' || s[15] != 'Z') return false;
  if (!ParseDigits(s.substr(0, 4), &y) || !ParseDigits(s.substr(4, 2), &mo) ||
      !ParseDigits(s.substr(6, 2), &d) || !ParseDigits(s.substr(9, 2), &h) ||
      !ParseDigits(s.substr(11, 2), &mi) || !ParseDigits(s.substr(13, 2), &sec)) {
    return false;
  }
  return ToEpochSeconds(y, mo, d, h, mi, sec, out);
}

// RFC 7231's IMF-fixdate, "Tue, 05 Mar 2024 14:07:09 GMT". botocore writes the zone as "-0000"
// when it signs a request that came with a Date header, so "+0000", "-0000" and "UTC" pass too.
bool ParseHttpDate(std::string_view s, int64_t* out) {
  static constexpr std::string_view kMonths = "JanFebMarAprMayJunJulAugSepOctNovDec";
  int y, d, h, mi, sec;
  if (s.size() < 29 || s.substr(3, 2) != ", " || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
      s[19] != ':' || s[22] != ':' || s[25] != ' ') {
    return false;
  }
  const std::string_view zone = s.substr(26);
  if (zone != "GMT" && zone != "UTC" && zone != "+0000" && zone != "-0000") return false;
  const size_t month_at = kMonths.find(s.substr(8, 3));
  if (month_at == std::string_view::npos || month_at % 3 != 0) return false;
  if (!ParseDigits(s.substr(5, 2), &d) || !ParseDigits(s.substr(12, 4), &y) ||
      !ParseDigits(s.substr(17, 2), &h) || !ParseDigits(s.substr(20, 2), &mi) ||
      !ParseDigits(s.substr(23, 2), &sec)) {
    return false;
  }
  return ToEpochSeconds(y, static_cast<int>(month_at / 3) + 1, d, h, mi, sec, out);
}

// yyyyMMdd'T'HHmmss'Z', as AWS prints times in its messages.
std::string FormatAmzDate(int64_t epoch_seconds) {
  using namespace std::chrono;
  const sys_seconds t{seconds{epoch_seconds}};
  const sys_days day_start = floor<days>(t);
  const year_month_day ymd{day_start};
  const hh_mm_ss hms{t - day_start};
  char buf[32];
  const int n =
      std::snprintf(buf, sizeof(buf), "%04d%02u%02uT%02d%02d%02dZ", static_cast<int>(ymd.year()),
                    static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                    static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                    static_cast<int>(hms.seconds().count()));
  TW_ASSERT(n > 0);
  TW_ASSERT(static_cast<size_t>(n) < sizeof(buf));
  return std::string(buf, static_cast<size_t>(n));
}

int64_t FloorDiv(int64_t a, int64_t b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }

// ---- Verification steps ----

AuthError Fail(std::string_view code, std::string message) {
  AuthError e;
  e.code = code;
  e.message = std::move(message);
  return e;
}

struct AuthHeader {
  std::string_view algorithm;
  std::optional<std::string_view> credential;
  std::optional<std::string_view> signed_headers;
  std::optional<std::string_view> signature;
};

// What the steps learn, in step order. The views point into `authorization`: a Parsed is never
// moved or copied.
struct Parsed {
  std::string authorization;  // the header's value(s), trimmed
  AuthHeader auth;
  int64_t time_s = 0;                     // the request time
  std::string amz_date;                   // the request time, yyyyMMdd'T'HHmmss'Z'
  std::array<std::string_view, 5> scope;  // key id, date, region, service, terminator
};

// "<algorithm> Key=value, Key=value ...": pairs are split at commas and whitespace. On a piece
// without '=', returns that piece. A repeated key: the last one counts.
std::optional<std::string_view> SplitAuthorization(std::string_view header, AuthHeader* out) {
  size_t i = 0;
  while (i < header.size() && !IsSpace(header[i])) ++i;
  out->algorithm = header.substr(0, i);
  while (true) {
    while (i < header.size() && (header[i] == ',' || IsSpace(header[i]))) ++i;
    const size_t start = i;
    while (i < header.size() && header[i] != ',' && !IsSpace(header[i])) ++i;
    if (start == i) return std::nullopt;
    const std::string_view piece = header.substr(start, i - start);
    const size_t eq = piece.find('=');
    if (eq == std::string_view::npos) return piece;
    const std::string_view key = piece.substr(0, eq);
    const std::string_view value = piece.substr(eq + 1);
    if (key == "Credential") out->credential = value;
    if (key == "SignedHeaders") out->signed_headers = value;
    if (key == "Signature") out->signature = value;
  }
}

// AWS names every missing part in one message, then echoes the header. An empty Credential or
// Signature counts as missing; an empty SignedHeaders does not (it fails the 'Host' check).
std::string MissingParts(const AuthHeader& auth, bool has_date, std::string_view header) {
  std::string msg;
  if (!auth.credential || auth.credential->empty()) {
    msg += "Authorization header requires 'Credential' parameter. ";
  }
  if (!auth.signature || auth.signature->empty()) {
    msg += "Authorization header requires 'Signature' parameter. ";
  }
  if (!auth.signed_headers) msg += "Authorization header requires 'SignedHeaders' parameter. ";
  if (!has_date) {
    msg += "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ";
  }
  if (!msg.empty()) msg.append("Authorization=").append(header);
  return msg;
}

// Steps 1 and 2: an AWS4 Authorization header with all its parts.
std::optional<AuthError> ReadAuthorization(const Request& request, bool has_date, Parsed* p) {
  const std::optional<std::string> header =
      JoinedHeader(request.headers, "authorization", /*trimall=*/false);
  const bool query_auth = QueryHasName(SplitTarget(request.target).second, "X-Amz-Algorithm");
  if (header && query_auth) {
    return Fail(kInvalidSignature,
                "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP "
                "header.");
  }
  p->authorization = header ? std::string(Trim(*header)) : "";
  if (p->authorization.substr(0, 5) != "AWS4-") {
    return Fail(kMissingAuthenticationToken, std::string(kMissingTokenText));
  }
  if (const auto bad = SplitAuthorization(p->authorization, &p->auth)) {
    return Fail(kIncompleteSignature, "'" + std::string(*bad) +
                                          "' not a valid key=value pair (missing equal-sign) in "
                                          "Authorization header: '" +
                                          p->authorization + "'.");
  }
  std::string missing = MissingParts(p->auth, has_date, p->authorization);
  if (!missing.empty()) return Fail(kIncompleteSignature, std::move(missing));
  return std::nullopt;
}

// Step 3: the request time, from X-Amz-Date or else Date, within the allowed skew.
std::optional<AuthError> ReadTime(const std::optional<std::string>& x_amz_date,
                                  const std::optional<std::string>& date, int64_t now_ms,
                                  Parsed* p) {
  TW_ASSERT(x_amz_date || date);  // ReadAuthorization refused the request otherwise
  const std::string& value = x_amz_date ? *x_amz_date : *date;
  const bool parsed =
      x_amz_date ? ParseAmzDate(value, &p->time_s) : ParseHttpDate(value, &p->time_s);
  if (!parsed) {
    // Confirmed for X-Amz-Date; for a Date header AWS's text is not known.
    return Fail(kIncompleteSignature, "Date must be in ISO-8601 'basic format'. Got '" + value +
                                          "'. See http://en.wikipedia.org/wiki/ISO_8601");
  }
  p->amz_date = FormatAmzDate(p->time_s);
  const int64_t now_s = FloorDiv(now_ms, 1000);
  const std::string skew = std::to_string(kClockSkewSecondsMax / 60) + " min.)";
  if (p->time_s < now_s - kClockSkewSecondsMax) {
    return Fail(kInvalidSignature, "Signature expired: " + p->amz_date + " is now earlier than " +
                                       FormatAmzDate(now_s - kClockSkewSecondsMax) + " (" +
                                       FormatAmzDate(now_s) + " - " + skew);
  }
  if (p->time_s > now_s + kClockSkewSecondsMax) {
    return Fail(kInvalidSignature, "Signature not yet current: " + p->amz_date +
                                       " is still later than " +
                                       FormatAmzDate(now_s + kClockSkewSecondsMax) + " (" +
                                       FormatAmzDate(now_s) + " + " + skew);
  }
  return std::nullopt;
}

bool SignsHost(std::string_view signed_headers) {
  bool found = false;
  ForEachPiece(signed_headers, ';', [&found](std::string_view name) {
    found = found || EqualsIgnoreCase(name, "host");
  });
  return found;
}

// Splits "<key id>/<date>/<region>/<service>/<terminator>", trailing slashes ignored.
bool SplitCredential(std::string_view credential, std::array<std::string_view, 5>* scope) {
  while (!credential.empty() && credential.back() == '/') credential.remove_suffix(1);
  size_t n = 0;
  bool fits = true;
  ForEachPiece(credential, '/', [&](std::string_view piece) {
    fits = fits && n < scope->size();
    if (fits) (*scope)[n++] = piece;
  });
  return fits && n == scope->size();
}

// The four scope checks, all named in one message as AWS does.
std::string ScopeFaults(const Parsed& p, std::string_view service) {
  const auto& [key_id, date, region, scope_service, terminator] = p.scope;
  const std::string_view request_date = std::string_view(p.amz_date).substr(0, 8);
  std::string msg;
  if (region.empty()) msg += "Credential should be scoped to a valid region, not ''. ";
  if (scope_service != service) {
    msg.append("Credential should be scoped to correct service: '").append(service).append("'. ");
  }
  if (terminator != kTerminator) {
    msg.append("Credential should be scoped with a valid terminator: 'aws4_request', not '")
        .append(terminator)
        .append("'. ");
  }
  if (date != request_date) {
    // The trailing space is assumed from the texts above; AWS's is not confirmed here.
    msg.append(
           "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
           "HTTP: '")
        .append(date)
        .append("' != '")
        .append(request_date)
        .append("', from '")
        .append(p.amz_date)
        .append("'. ");
  }
  return msg;
}

// Steps 4 to 6: host signed, the algorithm, the credential scope.
std::optional<AuthError> CheckScope(const VerifyOptions& options, Parsed* p) {
  if (!SignsHost(*p->auth.signed_headers)) {
    return Fail(kInvalidSignature,
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");
  }
  if (p->auth.algorithm != kAlgorithm) {
    return Fail(kIncompleteSignature, "Unsupported AWS 'algorithm': '" +
                                          std::string(p->auth.algorithm) +
                                          "' (only AWS4-HMAC-SHA256 for now). ");
  }
  if (!SplitCredential(*p->auth.credential, &p->scope)) {
    return Fail(kIncompleteSignature,
                "Credential must have exactly 5 slash-delimited elements, e.g. "
                "keyid/date/region/service/term, got '" +
                    std::string(*p->auth.credential) + "'");
  }
  std::string faults = ScopeFaults(*p, options.service);
  if (!faults.empty()) return Fail(kInvalidSignature, std::move(faults));
  return std::nullopt;
}

// Step 8: the payload hash line of the canonical request. A declared X-Amz-Content-Sha256 must
// be the body's hash: a client may sign the header instead of the body, and an unsigned payload
// ("UNSIGNED-PAYLOAD") would leave the body open to change in transit.
std::optional<AuthError> PayloadHash(const Request& request, std::string* out) {
  *out = Hex(Sha256(request.body));
  const std::optional<std::string> declared =
      JoinedHeader(request.headers, "x-amz-content-sha256", /*trimall=*/true);
  if (!declared) return std::nullopt;
  if (!EqualsIgnoreCase(*declared, *out)) {
    // S3's text for its XAmzContentSHA256Mismatch; not confirmed for JSON services.
    return Fail(kInvalidSignature,
                "The provided 'x-amz-content-sha256' header does not match what was computed.");
  }
  *out = *declared;
  return std::nullopt;
}

// The first signed header the request lacks, or "" when it has them all.
std::string_view MissingSignedHeader(const Request& request, std::string_view signed_headers) {
  std::string_view missing;
  ForEachPiece(signed_headers, ';', [&](std::string_view name) {
    if (!missing.empty()) return;
    const bool present =
        std::any_of(request.headers.begin(), request.headers.end(),
                    [name](const Header& h) { return EqualsIgnoreCase(h.name, name); });
    if (!present) missing = name.empty() ? std::string_view("(empty name)") : name;
  });
  return missing;
}

AuthError Mismatch(std::string log_detail) {
  AuthError e = Fail(kInvalidSignature, std::string(kMismatchText));
  e.log_detail = std::move(log_detail);
  return e;
}

// Step 9: recompute the signature and compare in constant time.
std::optional<AuthError> CheckSignature(const Request& request, const Parsed& p,
                                        std::string_view secret, std::string_view payload_hash) {
  const std::string_view signed_headers = *p.auth.signed_headers;
  const std::string_view missing = MissingSignedHeader(request, signed_headers);
  if (!missing.empty()) {
    return Mismatch("signed header '" + std::string(missing) + "' is not in the request");
  }
  const auto& [key_id, date, region, service, terminator] = p.scope;
  const std::string canonical = CanonicalRequest(request, signed_headers, payload_hash);
  std::string to_sign = std::string(kAlgorithm) + "\n" + p.amz_date + "\n";
  to_sign.append(date).append("/").append(region).append("/").append(service).append("/");
  to_sign.append(terminator).append("\n").append(Hex(Sha256(canonical)));
  const std::string expected =
      Hex(HmacSha256(AsView(SigningKey(secret, date, region, service)), to_sign));
  const std::string_view given = *p.auth.signature;
  if (given.size() == expected.size() &&
      CRYPTO_memcmp(given.data(), expected.data(), expected.size()) == 0) {
    return std::nullopt;
  }
  return Mismatch("The Canonical String for this request should have been\n'" + canonical +
                  "'\n\nThe String-to-Sign should have been\n'" + to_sign + "'\n");
}

VerifyResult Refuse(AuthError e) {
  VerifyResult r;
  r.error = std::move(e);
  return r;
}

// ---- Credentials file ----

// Key ids travel inside the Credential field, between '/' and ',' separators: keep to a
// character set that cannot collide with them.
bool ValidKeyId(std::string_view id) {
  return !id.empty() && id.size() <= kAwsAccessKeyIdCharsMax &&
         std::all_of(id.begin(), id.end(), [](char c) { return IsUnreserved(c) && c != '~'; });
}

bool ValidSecret(std::string_view secret) {
  return !secret.empty() && secret.size() <= kAwsSecretKeyCharsMax &&
         std::none_of(secret.begin(), secret.end(),
                      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

std::string Describe(const std::string& path) { return "AWS credentials file " + path; }

Status Errno(const std::string& what, const std::string& path, int err) {
  return Status::IoError("cannot " + what + " " + Describe(path) + ": " + std::strerror(err));
}

// The mode check happens on the open descriptor, so the file checked is the file read.
Status CheckFile(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Errno("stat", path, errno);
  if (!S_ISREG(st.st_mode)) return Status::IoError(Describe(path) + " is not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::InvalidArgument(Describe(path) + " has mode " + mode +
                                   ": it holds secrets, so group and others must have no access "
                                   "(chmod 600)");
  }
  return Status::Ok();
}

Status ReadFile(const std::string& path, std::string* text) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Errno("open", path, errno);
  if (Status s = CheckFile(fd.get(), path); !s.ok()) return s;
  // One byte past the bound, so a file that grew after fstat is still caught.
  text->assign(kAwsCredentialsFileBytesMax + 1, '\0');
  size_t got = 0;
  while (got < text->size()) {
    const ssize_t n = ::read(fd.get(), text->data() + got, text->size() - got);
    if (n == 0) break;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno("read", path, errno);
    got += static_cast<size_t>(n);
  }
  text->resize(got);
  if (got > kAwsCredentialsFileBytesMax) {
    return Status::Corruption(Describe(path) + " is larger than " +
                              std::to_string(kAwsCredentialsFileBytesMax) + " bytes");
  }
  return Status::Ok();
}

// One {"accessKeyId", "secretAccessKey"} entry. Returns "" on success, else the reason (which
// never quotes the secret).
std::string ParseEntry(const nlohmann::json& entry, std::pair<std::string, std::string>* key) {
  if (!entry.is_object())
    return "expected an object {\"accessKeyId\": ..., \"secretAccessKey\": ...}";
  for (const auto& [name, value] : entry.items()) {
    if (name != "accessKeyId" && name != "secretAccessKey")
      return "unknown member \"" + name + "\"";
  }
  const auto id = entry.find("accessKeyId");
  const auto secret = entry.find("secretAccessKey");
  if (id == entry.end() || !id->is_string()) return "accessKeyId must be a string";
  if (secret == entry.end() || !secret->is_string()) return "secretAccessKey must be a string";
  if (!ValidKeyId(id->get_ref<const std::string&>())) {
    return "accessKeyId must be 1.." + std::to_string(kAwsAccessKeyIdCharsMax) +
           " characters of A-Z a-z 0-9 . _ -";
  }
  if (!ValidSecret(secret->get_ref<const std::string&>())) {
    return "secretAccessKey must be 1.." + std::to_string(kAwsSecretKeyCharsMax) +
           " bytes without control characters";
  }
  *key = {id->get<std::string>(), secret->get<std::string>()};
  return {};
}

Status ParseCredentials(const nlohmann::json& doc, const std::string& path,
                        std::vector<std::pair<std::string, std::string>>* keys) {
  if (doc.is_discarded()) return Status::Corruption(Describe(path) + " is not valid JSON");
  if (!doc.is_array()) {
    return Status::Corruption(Describe(path) +
                              " must be a JSON list of {\"accessKeyId\", \"secretAccessKey\"} "
                              "objects");
  }
  if (doc.empty()) return Status::Corruption(Describe(path) + " lists no key");
  std::map<std::string, size_t, std::less<>> seen;  // key id -> entry number (from 1)
  for (size_t i = 0; i < doc.size(); ++i) {
    const std::string where = Describe(path) + ", entry " + std::to_string(i + 1) + ": ";
    std::pair<std::string, std::string> key;
    const std::string reason = ParseEntry(doc[i], &key);
    if (!reason.empty()) return Status::Corruption(where + reason);
    const auto [it, fresh] = seen.emplace(key.first, i + 1);
    if (!fresh) {
      return Status::Corruption(where + "duplicate accessKeyId \"" + key.first + "\" (also entry " +
                                std::to_string(it->second) + ")");
    }
    keys->push_back(std::move(key));
  }
  return Status::Ok();
}

// Best effort: overwrites the secret strings a parsed document still holds.
void WipeSecrets(nlohmann::json* doc) {
  if (!doc->is_array()) return;
  for (auto& entry : *doc) {
    if (!entry.is_object()) continue;
    const auto secret = entry.find("secretAccessKey");
    if (secret == entry.end() || !secret->is_string()) continue;
    auto& s = secret->get_ref<std::string&>();
    OPENSSL_cleanse(s.data(), s.size());
  }
}

void WipeKeys(std::vector<std::pair<std::string, std::string>>* keys) {
  for (auto& [id, secret] : *keys) OPENSSL_cleanse(secret.data(), secret.size());
}

}  // namespace

// ---- Credentials ----

Status Credentials::LoadFile(const std::string& path, std::unique_ptr<Credentials>* out) {
  std::string text;
  Status s = ReadFile(path, &text);
  nlohmann::json doc;
  if (s.ok()) doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  OPENSSL_cleanse(text.data(), text.size());
  std::vector<std::pair<std::string, std::string>> keys;
  if (s.ok()) s = ParseCredentials(doc, path, &keys);
  WipeSecrets(&doc);
  if (s.ok()) *out = std::make_unique<Credentials>(std::move(keys));
  WipeKeys(&keys);
  return s;
}

Credentials::Credentials(std::vector<std::pair<std::string, std::string>> keys) {
  TW_ASSERT(!keys.empty());
  for (auto& [id, secret] : keys) {
    TW_ASSERT(ValidKeyId(id));
    TW_ASSERT(ValidSecret(secret));
    const bool fresh = secrets_.emplace(std::move(id), std::move(secret)).second;
    TW_ASSERT(fresh);
  }
}

Credentials::~Credentials() {
  for (auto& [id, secret] : secrets_) OPENSSL_cleanse(secret.data(), secret.size());
}

const std::string* Credentials::FindSecret(std::string_view access_key_id) const {
  const auto it = secrets_.find(access_key_id);
  return it == secrets_.end() ? nullptr : &it->second;
}

// ---- Verify ----

std::string CanonicalRequest(const Request& request, std::string_view signed_headers,
                             std::string_view payload_hash_hex) {
  const auto [path, query] = SplitTarget(request.target);
  std::string out(request.method);
  out.append("\n").append(CanonicalUri(path)).append("\n").append(CanonicalQuery(query));
  out.append("\n");
  // An empty list has no header lines at all (ForEachPiece would see one empty name).
  if (!signed_headers.empty()) {
    ForEachPiece(signed_headers, ';', [&](std::string_view name) {
      const std::optional<std::string> value =
          JoinedHeader(request.headers, name, /*trimall=*/true);
      out.append(name).append(":").append(value ? *value : "").append("\n");
    });
  }
  out.append("\n").append(signed_headers).append("\n").append(payload_hash_hex);
  return out;
}

VerifyResult Verify(const Request& request, const Credentials& credentials, int64_t now_ms,
                    const VerifyOptions& options) {
  std::optional<std::string> x_amz_date =
      JoinedHeader(request.headers, "x-amz-date", /*trimall=*/true);
  std::optional<std::string> date = JoinedHeader(request.headers, "date", /*trimall=*/true);
  if (x_amz_date && x_amz_date->empty()) x_amz_date.reset();  // empty counts as absent
  if (date && date->empty()) date.reset();
  Parsed p;
  if (auto e = ReadAuthorization(request, x_amz_date || date, &p)) return Refuse(std::move(*e));
  if (auto e = ReadTime(x_amz_date, date, now_ms, &p)) return Refuse(std::move(*e));
  if (auto e = CheckScope(options, &p)) return Refuse(std::move(*e));
  const std::string* secret = credentials.FindSecret(p.scope[0]);
  if (secret == nullptr) return Refuse(Fail(kUnrecognizedClient, std::string(kUnknownKeyText)));
  std::string payload_hash;
  if (auto e = PayloadHash(request, &payload_hash)) return Refuse(std::move(*e));
  if (auto e = CheckSignature(request, p, *secret, payload_hash)) return Refuse(std::move(*e));
  VerifyResult verified;
  verified.access_key_id = std::string(p.scope[0]);
  return verified;
}

}  // namespace tw::rpc::aws
