// Fuzz target: SigV4 verification (rpc/aws/sigv4.h), the Authorization header's parsing first.
//
// Input: a request written as HTTP/1.1 writes it, "<method> <target> HTTP/1.1" on the first line
// (the version is not read), then
// "Name: value" header lines, an empty line and the body (LF or CRLF). Verify runs at the time
// the seeds were signed (fuzz_support.h kStartMs) against two keys, one of them the seeds'.
//
// Checked: Verify never aborts; a refusal has one of the four AWS codes, a text, an HTTP error
// status, and goes out as valid JSON (the text echoes the header); an accepted request names
// the key that signed it, and stops verifying when one byte is added to its body or when the
// server's clock is moved past the allowed skew. CanonicalRequest is also fed the request with
// the SignedHeaders the input names.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/json_scan.h"
#include "engine/validate.h"
#include "rpc/aws/protocol.h"
#include "rpc/aws/sigv4.h"
#include "tests/fuzz/fuzz_support.h"

namespace tw::rpc::aws {
namespace {

// The seeds' key (tests/fuzz/make_seeds.py signs with it), and one more.
constexpr char kKeyId[] = "AKIATOKENWHEELFUZZ01";
constexpr char kSecret[] = "tokenwheel/fuzz/secret+KEY/0123456789ab";

const Credentials& Keys() {
  static const Credentials* keys = new Credentials(
      {{kKeyId, kSecret}, {"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}});
  return *keys;
}

std::string_view TrimSpace(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// Cuts the next line (without its LF) off the front of *s.
std::string_view NextLine(std::string_view* s) {
  const size_t lf = s->find('\n');
  const std::string_view line = s->substr(0, lf);
  s->remove_prefix(lf == std::string_view::npos ? s->size() : lf + 1);
  return line;
}

// The input as a Request; views into `input` and `headers`.
Request ReadRequest(std::string_view input, std::vector<Header>* headers) {
  Request r;
  const std::string_view first = TrimSpace(NextLine(&input));
  const size_t space = first.find(' ');
  r.method = first.substr(0, space);
  const std::string_view rest = space == std::string_view::npos ? "/" : first.substr(space + 1);
  r.target = rest.substr(0, rest.find(' '));  // what follows is the HTTP version
  while (!input.empty()) {
    const std::string_view line = TrimSpace(NextLine(&input));
    if (line.empty()) break;
    const size_t colon = line.find(':');
    headers->push_back({line.substr(0, colon),
                        colon == std::string_view::npos ? "" : TrimSpace(line.substr(colon + 1))});
  }
  r.headers = *headers;
  r.body = input;
  return r;
}

// The SignedHeaders value the Authorization header names, or the usual one.
std::string_view SignedHeadersOf(const Request& r) {
  for (const Header& h : r.headers) {
    const size_t at = h.value.find("SignedHeaders=");
    if (at == std::string_view::npos) continue;
    const std::string_view rest = h.value.substr(at + 14);
    return rest.substr(0, rest.find_first_of(", "));
  }
  return "host;x-amz-date;x-amz-target";
}

void CheckRefusal(const AuthError& e) {
  TW_FUZZ_CHECK(e.code == kMissingAuthenticationToken || e.code == kIncompleteSignature ||
                e.code == kUnrecognizedClient || e.code == kInvalidSignature);
  TW_FUZZ_CHECK(!e.message.empty());
  TW_FUZZ_CHECK(e.http_status >= 400 && e.http_status <= 499);
  const std::string body = ErrorBody(ErrorReply{std::string(e.code), e.message, e.http_status});
  TW_FUZZ_CHECK(IsValidUtf8(body));
  TW_FUZZ_CHECK(IsJsonValue(body));
}

// An authentic request stops being one when its body or the time changes.
void CheckAccepted(const Request& r, const VerifyResult& v) {
  TW_FUZZ_CHECK(v.access_key_id == kKeyId || v.access_key_id == "AKIDEXAMPLE");
  const std::string longer = std::string(r.body) + " ";
  Request changed = r;
  changed.body = longer;
  TW_FUZZ_CHECK(!Verify(changed, Keys(), fuzz::kStartMs).ok());
  const int64_t late_ms = fuzz::kStartMs + (kClockSkewSecondsMax + 3600) * 1000;
  TW_FUZZ_CHECK(!Verify(r, Keys(), late_ms).ok());
}

}  // namespace
}  // namespace tw::rpc::aws

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tw::rpc::aws;
  std::vector<Header> headers;
  const Request r =
      ReadRequest(std::string_view(reinterpret_cast<const char*>(data), size), &headers);
  const VerifyResult v = Verify(r, Keys(), tw::fuzz::kStartMs);
  if (tw::fuzz::Verbose()) {
    std::fprintf(stderr, "%s\n",
                 v.ok() ? ("verified: " + v.access_key_id).c_str()
                        : (std::string(v.error->code) + ": " + v.error->message).c_str());
  }
  if (v.ok()) {
    CheckAccepted(r, v);
  } else {
    TW_FUZZ_CHECK(v.access_key_id.empty());
    CheckRefusal(*v.error);
  }
  (void)CanonicalRequest(r, SignedHeadersOf(r), "UNSIGNED-PAYLOAD");
  return 0;
}
