// The SigV4 verifier of the AWS gateway (rpc/aws/sigv4.h): real botocore signatures verify, the
// AWS test suite's vectors verify, and every refusal carries AWS's code and text.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "rpc/aws/sigv4.h"

namespace tw::rpc::aws {
namespace {

// ---- Vectors ----
//
// Signed by botocore 1.29.27 (Debian's python3-botocore 1.29.27+repack-1): a real
// boto3-style client, session.create_client('stepfunctions', endpoint_url=...), with the clock
// of botocore.auth pinned and the request caught at 'before-send', so the headers are exactly what
// botocore sends (urllib3 adds Host). The secret below exists only for these tests.
constexpr const char* kKeyId = "AKIATOKENWHEELTEST01";
constexpr const char* kSecret = "tokenwheel/secret+KEY/for/botocore/tests0";
constexpr int64_t kSignedAtS = 1'709'647'629;  // 2024-03-05T14:07:09Z
constexpr const char* kHeartbeatBody = R"({"taskToken": "AAEAAQ-token-example"})";

// AWS's published SigV4 test suite (aws-sig-v4-test-suite, 2015), which botocore 1.29.27's
// SigV4Auth reproduces too.
constexpr const char* kSuiteKeyId = "AKIDEXAMPLE";
constexpr const char* kSuiteSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
constexpr int64_t kSuiteAtS = 1'440'938'160;  // 2015-08-30T12:36:00Z

// An owned request; view() lends it to Verify.
struct TestRequest {
  std::string method = "POST";
  std::string target = "/";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  Request view() {
    views.clear();
    for (const auto& [n, v] : headers) views.push_back({n, v});
    return Request{method, target, views, body};
  }
  // Replaces the value of the first header named `name` (any case); adds it if absent.
  void Set(const std::string& name, const std::string& value) {
    for (auto& [n, v] : headers) {
      if (strcasecmp(n.c_str(), name.c_str()) == 0) {
        v = value;
        return;
      }
    }
    headers.emplace_back(name, value);
  }
  void Remove(const std::string& name) {
    std::erase_if(headers,
                  [&](const auto& h) { return strcasecmp(h.first.c_str(), name.c_str()) == 0; });
  }
  std::string Get(const std::string& name) const {
    for (const auto& [n, v] : headers) {
      if (strcasecmp(n.c_str(), name.c_str()) == 0) return v;
    }
    return {};
  }

  std::vector<Header> views;
};

// SendTaskHeartbeat, region us-east-1, to http://localhost:7412, at kSignedAtS.
TestRequest Heartbeat() {
  TestRequest r;
  r.headers = {
      {"X-Amz-Target", "AWSStepFunctions.SendTaskHeartbeat"},
      {"Content-Type", "application/x-amz-json-1.0"},
      {"User-Agent", "Botocore/1.29.27 Python/3.11.2 Linux/6.18.44-fc-v1272"},
      {"X-Amz-Date", "20240305T140709Z"},
      {"Authorization",
       "AWS4-HMAC-SHA256 Credential=AKIATOKENWHEELTEST01/20240305/us-east-1/states/aws4_request, "
       "SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
       "Signature=e60b187904890b4a77019528976d529f75c1fe90e4169a512081cc2095d6bf26"},
      {"amz-sdk-invocation-id", "6c4236d8-d3ba-4fb9-b4bf-24f04d18edc6"},
      {"amz-sdk-request", "attempt=1"},
      {"Content-Length", "37"},
      {"Host", "localhost:7412"},
  };
  r.body = kHeartbeatBody;
  return r;
}

// SendTaskSuccess, region eu-west-1, to http://127.0.0.1:8080, at 2024-03-05T23:59:59Z.
TestRequest Success() {
  TestRequest r;
  r.headers = {
      {"X-Amz-Target", "AWSStepFunctions.SendTaskSuccess"},
      {"Content-Type", "application/x-amz-json-1.0"},
      {"User-Agent", "Botocore/1.29.27 Python/3.11.2 Linux/6.18.44-fc-v1272"},
      {"X-Amz-Date", "20240305T235959Z"},
      {"Authorization",
       "AWS4-HMAC-SHA256 Credential=AKIATOKENWHEELTEST01/20240305/eu-west-1/states/aws4_request, "
       "SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
       "Signature=9e8f1a2140d02ae3c3caec6294f17c6c4d34f37b5205d9ac0b62471bdab1212e"},
      {"amz-sdk-invocation-id", "7e300a30-8b35-4f39-95ee-792d71402287"},
      {"amz-sdk-request", "attempt=1"},
      {"Content-Length", "75"},
      {"Host", "127.0.0.1:8080"},
  };
  r.body = R"({"taskToken": "AAEAAQ-token-example", "output": "{\"ok\": true, \"n\": 1}"})";
  return r;
}

// GetActivityTask, region ap-southeast-2, to https://states.example.test, at 2025-01-01T00:00:00Z.
TestRequest Poll() {
  TestRequest r;
  r.headers = {
      {"X-Amz-Target", "AWSStepFunctions.GetActivityTask"},
      {"Content-Type", "application/x-amz-json-1.0"},
      {"User-Agent", "Botocore/1.29.27 Python/3.11.2 Linux/6.18.44-fc-v1272"},
      {"X-Amz-Date", "20250101T000000Z"},
      {"Authorization",
       "AWS4-HMAC-SHA256 "
       "Credential=AKIATOKENWHEELTEST01/20250101/ap-southeast-2/states/aws4_request, "
       "SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
       "Signature=476d33d3ad1cf440dc8ce67c41f6d22da98ed8dc2062d9a9a8572344a8cc70fc"},
      {"amz-sdk-invocation-id", "c884d0db-51ca-4bb2-ba77-e121140396db"},
      {"amz-sdk-request", "attempt=1"},
      {"Content-Length", "89"},
      {"Host", "states.example.test"},
  };
  r.body =
      R"({"activityArn": "arn:aws:states:us-east-1:000000000000:activity:pay", "workerName": "w1"})";
  return r;
}

// botocore's SigV4Auth(creds, 'states', 'us-west-2') over an AWSRequest with a path that has
// dot segments and an escape, a query, a header given twice and inner runs of whitespace.
TestRequest Awkward() {
  TestRequest r;
  r.target = "/a%20b/./c/../d~e/?b=2&a=x%2Fy&a=1";
  r.headers = {
      {"Content-Type", "application/x-amz-json-1.0"},
      {"X-Tw-Multi", "  one   two  "},
      {"X-Tw-Multi", "three"},
      {"X-Tw-Spaced", "a \t b"},
      {"X-Amz-Date", "20240305T140709Z"},
      {"Authorization",
       "AWS4-HMAC-SHA256 Credential=AKIATOKENWHEELTEST01/20240305/us-west-2/states/aws4_request, "
       "SignedHeaders=content-type;host;x-amz-date;x-tw-multi;x-tw-spaced, "
       "Signature=1b15a066fbd413a02ee62bd1792ed9a94dd07837b8e43b2195aaacea360da4ce"},
      {"Host", "localhost:7412"},
  };
  r.body = "{}";
  return r;
}

// The heartbeat as botocore signs it when the request carries a Date header: Date is rewritten
// (zone "-0000") and signed, and no X-Amz-Date is added.
TestRequest HeartbeatWithDateHeader() {
  TestRequest r = Heartbeat();
  r.Remove("X-Amz-Date");
  r.Set("Date", "Tue, 05 Mar 2024 14:07:09 -0000");
  r.Set("Authorization",
        "AWS4-HMAC-SHA256 Credential=AKIATOKENWHEELTEST01/20240305/us-east-1/states/aws4_request, "
        "SignedHeaders=content-type;date;host;x-amz-target, "
        "Signature=cf3b2972b298435e3ded8a21c5d30cd71e4f95406d03f03e623f03fd3b63322f");
  return r;
}

// The heartbeat with X-Amz-Content-SHA256 (the body's hash) set before signing.
TestRequest HeartbeatWithContentSha() {
  TestRequest r = Heartbeat();
  r.Set("X-Amz-Content-SHA256", "23e5caef789895569e852f08dc2e84e3114883ae48407b306b80465ba394e5fd");
  r.Set("Authorization",
        "AWS4-HMAC-SHA256 Credential=AKIATOKENWHEELTEST01/20240305/us-east-1/states/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-target, "
        "Signature=574780f79c5fcf97238cf1b0d154bc4252adfa335dd20a1027454e9f554f417e");
  return r;
}

// The heartbeat signed with a session token (temporary credentials).
TestRequest HeartbeatWithSessionToken() {
  TestRequest r = Heartbeat();
  r.Set("X-Amz-Security-Token", "session-token-example");
  r.Set("Authorization",
        "AWS4-HMAC-SHA256 Credential=AKIATOKENWHEELTEST01/20240305/us-east-1/states/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, "
        "Signature=403e680cc2b9e8d96c1bee24c483878d89412a05a95fd51c8b34f24eb1e80ddb");
  return r;
}

// AWS test suite: get-vanilla.
TestRequest SuiteGetVanilla() {
  TestRequest r;
  r.method = "GET";
  r.headers = {
      {"Host", "example.amazonaws.com"},
      {"X-Amz-Date", "20150830T123600Z"},
      {"Authorization",
       "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
       "SignedHeaders=host;x-amz-date, "
       "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
  };
  return r;
}

// AWS test suite: post-x-www-form-urlencoded.
TestRequest SuitePostForm() {
  TestRequest r;
  r.headers = {
      {"Content-Type", "application/x-www-form-urlencoded"},
      {"Host", "example.amazonaws.com"},
      {"X-Amz-Date", "20150830T123600Z"},
      {"Authorization",
       "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
       "SignedHeaders=content-type;host;x-amz-date, "
       "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"},
  };
  r.body = "Param1=value1";
  return r;
}

constexpr std::string_view kMismatch =
    "The request signature we calculated does not match the signature you provided. Check your "
    "AWS Secret Access Key and signing method. Consult the service documentation for details.";

class SigV4Test : public ::testing::Test {
 protected:
  VerifyResult Check(TestRequest r, int64_t now_s = kSignedAtS, VerifyOptions options = {}) {
    return Verify(r.view(), credentials_, now_s * 1000, options);
  }
  static void ExpectRefused(const VerifyResult& r, std::string_view code,
                            std::string_view message) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error->code, code);
    EXPECT_EQ(r.error->message, message);
    EXPECT_EQ(r.error->http_status, 400);
    EXPECT_TRUE(r.access_key_id.empty());
  }
  static void ExpectVerified(const VerifyResult& r, std::string_view key_id) {
    ASSERT_TRUE(r.ok()) << r.error->code << ": " << r.error->message << "\n" << r.error->log_detail;
    EXPECT_EQ(r.access_key_id, key_id);
  }
  // The heartbeat with its Authorization header replaced (the signature then no longer matters:
  // every check before the signature's fails first).
  VerifyResult CheckAuthorization(const std::string& authorization) {
    TestRequest r = Heartbeat();
    r.Set("Authorization", authorization);
    return Check(r);
  }

  Credentials credentials_{{{kKeyId, kSecret}, {kSuiteKeyId, kSuiteSecret}}};
};

// ---- Authentic requests ----

TEST_F(SigV4Test, BotocoreClientRequestsVerify) {
  ExpectVerified(Check(Heartbeat()), kKeyId);
  ExpectVerified(Check(Success(), 1'709'683'199), kKeyId);
  ExpectVerified(Check(Poll(), 1'735'689'600), kKeyId);
}

TEST_F(SigV4Test, AwsTestSuiteVectorsVerify) {
  const VerifyOptions suite{.service = "service"};
  ExpectVerified(Check(SuiteGetVanilla(), kSuiteAtS, suite), kSuiteKeyId);
  ExpectVerified(Check(SuitePostForm(), kSuiteAtS, suite), kSuiteKeyId);
}

TEST_F(SigV4Test, CanonicalRequestMatchesAwsTestSuite) {
  // post-x-www-form-urlencoded.creq, from the suite.
  TestRequest r = SuitePostForm();
  EXPECT_EQ(CanonicalRequest(r.view(), "content-type;host;x-amz-date",
                             "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"),
            "POST\n/\n\n"
            "content-type:application/x-www-form-urlencoded\n"
            "host:example.amazonaws.com\n"
            "x-amz-date:20150830T123600Z\n\n"
            "content-type;host;x-amz-date\n"
            "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e");
}

TEST_F(SigV4Test, PathQueryAndRepeatedHeadersCanonicalizeAsBotocoreDoes) {
  TestRequest r = Awkward();
  // botocore 1.29.27 SigV4Auth.canonical_request() for the same request.
  EXPECT_EQ(CanonicalRequest(r.view(), "content-type;host;x-amz-date;x-tw-multi;x-tw-spaced",
                             "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"),
            "POST\n/a%2520b/d~e/\na=1&a=x%2Fy&b=2\n"
            "content-type:application/x-amz-json-1.0\n"
            "host:localhost:7412\n"
            "x-amz-date:20240305T140709Z\n"
            "x-tw-multi:one two,three\n"
            "x-tw-spaced:a b\n\n"
            "content-type;host;x-amz-date;x-tw-multi;x-tw-spaced\n"
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
  ExpectVerified(Check(r), kKeyId);
}

TEST_F(SigV4Test, RepeatedHeaderValuesKeepTheirOrder) {
  TestRequest merged = Awkward();  // one line carrying both values is the same header to HTTP
  merged.Remove("X-Tw-Multi");
  merged.headers.emplace_back("X-Tw-Multi", "one two,three");
  ExpectVerified(Check(merged), kKeyId);

  TestRequest swapped = Awkward();
  swapped.Remove("X-Tw-Multi");
  swapped.headers.emplace_back("X-Tw-Multi", "three");
  swapped.headers.emplace_back("X-Tw-Multi", "  one   two  ");
  ExpectRefused(Check(swapped), kInvalidSignature, kMismatch);
}

TEST_F(SigV4Test, CanonicalUriAndQueryEdgeCases) {
  const auto uri_and_query = [](const std::string& target) {
    TestRequest r;
    r.target = target;
    const std::string c = CanonicalRequest(r.view(), "", "h");
    const size_t first = c.find('\n');
    const size_t third = c.find('\n', c.find('\n', first + 1) + 1);
    return c.substr(first + 1, third - first - 1);  // "<uri>\n<query>"
  };
  EXPECT_EQ(uri_and_query(""), "/\n");
  EXPECT_EQ(uri_and_query("/"), "/\n");
  EXPECT_EQ(uri_and_query("/a/../../b"), "/b\n");
  EXPECT_EQ(uri_and_query("//a//b/"), "/a/b/\n");
  EXPECT_EQ(uri_and_query("/%41*"), "/%2541%2A\n");
  EXPECT_EQ(uri_and_query("/?"), "/\n");
  EXPECT_EQ(uri_and_query("/?c&b=2&a=1"), "/\na=1&b=2&c=");
  EXPECT_EQ(uri_and_query("/?a-b=1&a=2"), "/\na=2&a-b=1");                  // by name, then value
  EXPECT_EQ(uri_and_query("/?%7e=%41&p=+&q=%zz"), "/\np=%2B&q=%25zz&~=A");  // ~ is unreserved
}

TEST_F(SigV4Test, AnyRegionVerifies) {
  ExpectVerified(Check(Success(), 1'709'683'199), kKeyId);  // eu-west-1
  ExpectVerified(Check(Poll(), 1'735'689'600), kKeyId);     // ap-southeast-2
  ExpectVerified(Check(Awkward()), kKeyId);                 // us-west-2
}

TEST_F(SigV4Test, HeaderNamesMatchInAnyCase) {
  TestRequest lower = Heartbeat();
  for (auto& [name, value] : lower.headers) {
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  ExpectVerified(Check(lower), kKeyId);
  TestRequest upper = Heartbeat();
  for (auto& [name, value] : upper.headers) {
    for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  ExpectVerified(Check(upper), kKeyId);
}

TEST_F(SigV4Test, UnsignedHeadersMayBeAddedOrChanged) {
  TestRequest r = Heartbeat();
  r.Set("User-Agent", "aws-cli/2.15.0");
  r.Set("X-Forwarded-For", "10.0.0.1");
  r.Set("Connection", "keep-alive");
  ExpectVerified(Check(r), kKeyId);
}

TEST_F(SigV4Test, DateHeaderStandsInForXAmzDate) {
  ExpectVerified(Check(HeartbeatWithDateHeader()), kKeyId);
  // X-Amz-Date, when present, is the request time, even unsigned.
  TestRequest same = HeartbeatWithDateHeader();
  same.Set("X-Amz-Date", "20240305T140709Z");
  ExpectVerified(Check(same), kKeyId);
  TestRequest other = HeartbeatWithDateHeader();
  other.Set("X-Amz-Date", "20240305T140710Z");
  ExpectRefused(Check(other), kInvalidSignature, kMismatch);
}

TEST_F(SigV4Test, MatchingContentShaHeaderVerifies) {
  ExpectVerified(Check(HeartbeatWithContentSha()), kKeyId);
}

TEST_F(SigV4Test, SessionTokenIsNotChecked) {
  ExpectVerified(Check(HeartbeatWithSessionToken()), kKeyId);
}

TEST_F(SigV4Test, TrailingSlashesInCredentialAreIgnored) {
  TestRequest r = Heartbeat();
  std::string auth = r.Get("Authorization");
  auth.replace(auth.find("aws4_request"), 12, "aws4_request//");
  r.Set("Authorization", auth);
  ExpectVerified(Check(r), kKeyId);
}

// ---- Clock skew ----

TEST_F(SigV4Test, FifteenMinutesEitherWayIsTheBoundary) {
  ExpectVerified(Check(Heartbeat(), kSignedAtS + 15 * 60), kKeyId);
  ExpectVerified(Check(Heartbeat(), kSignedAtS - 15 * 60), kKeyId);
  // Compared at whole seconds: 999 ms past the boundary is still inside.
  ExpectVerified(Verify(Heartbeat().view(), credentials_, (kSignedAtS + 15 * 60) * 1000 + 999),
                 kKeyId);

  ExpectRefused(Check(Heartbeat(), kSignedAtS + 15 * 60 + 1), kInvalidSignature,
                "Signature expired: 20240305T140709Z is now earlier than 20240305T140710Z "
                "(20240305T142210Z - 15 min.)");
  ExpectRefused(Check(Heartbeat(), kSignedAtS - 15 * 60 - 1), kInvalidSignature,
                "Signature not yet current: 20240305T140709Z is still later than "
                "20240305T140708Z (20240305T135208Z + 15 min.)");
}

TEST_F(SigV4Test, DayOldRequestIsExpired) {
  ExpectRefused(Check(Heartbeat(), kSignedAtS + 86'400), kInvalidSignature,
                "Signature expired: 20240305T140709Z is now earlier than 20240306T135209Z "
                "(20240306T140709Z - 15 min.)");
}

// ---- Missing or malformed Authorization ----

TEST_F(SigV4Test, NoAuthorizationIsMissingAuthenticationToken) {
  TestRequest r = Heartbeat();
  r.Remove("Authorization");
  ExpectRefused(Check(r), kMissingAuthenticationToken, "Missing Authentication Token");
  ExpectRefused(CheckAuthorization("Bearer abc"), kMissingAuthenticationToken,
                "Missing Authentication Token");
  ExpectRefused(CheckAuthorization("   "), kMissingAuthenticationToken,
                "Missing Authentication Token");
}

TEST_F(SigV4Test, PresignedQueryIsNotAccepted) {
  TestRequest query_only = Heartbeat();
  query_only.Remove("Authorization");
  query_only.target = "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc";
  ExpectRefused(Check(query_only), kMissingAuthenticationToken, "Missing Authentication Token");

  TestRequest both = Heartbeat();
  both.target = "/?X-Amz-Algorithm=AWS4-HMAC-SHA256";
  ExpectRefused(Check(both), kInvalidSignature,
                "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as "
                "HTTP header.");
}

TEST_F(SigV4Test, EachMissingPartIsNamed) {
  const std::string no_signature =
      "AWS4-HMAC-SHA256 Credential=AKIATOKENWHEELTEST01/20240305/us-east-1/states/aws4_request, "
      "SignedHeaders=content-type;host;x-amz-date;x-amz-target";
  ExpectRefused(
      CheckAuthorization(no_signature), kIncompleteSignature,
      "Authorization header requires 'Signature' parameter. Authorization=" + no_signature);
  const std::string no_credential =
      "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=" + std::string(64, 'a');
  ExpectRefused(
      CheckAuthorization(no_credential), kIncompleteSignature,
      "Authorization header requires 'Credential' parameter. Authorization=" + no_credential);
  const std::string no_signed_headers =
      "AWS4-HMAC-SHA256 Credential=AKIATOKENWHEELTEST01/20240305/us-east-1/states/aws4_request, "
      "Signature=abc";
  ExpectRefused(CheckAuthorization(no_signed_headers), kIncompleteSignature,
                "Authorization header requires 'SignedHeaders' parameter. Authorization=" +
                    no_signed_headers);
  ExpectRefused(CheckAuthorization("AWS4-HMAC-SHA256 Credential=, Signature="),
                kIncompleteSignature,
                "Authorization header requires 'Credential' parameter. Authorization header "
                "requires 'Signature' parameter. Authorization header requires 'SignedHeaders' "
                "parameter. Authorization=AWS4-HMAC-SHA256 Credential=, Signature=");
}

TEST_F(SigV4Test, MissingDateIsNamedWithTheOtherParts) {
  TestRequest r = Heartbeat();
  r.Remove("X-Amz-Date");
  ExpectRefused(Check(r), kIncompleteSignature,
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
                "header. Authorization=" +
                    r.Get("Authorization"));
  r.Set("Authorization", "AWS4-HMAC-SHA256");
  ExpectRefused(Check(r), kIncompleteSignature,
                "Authorization header requires 'Credential' parameter. Authorization header "
                "requires 'Signature' parameter. Authorization header requires 'SignedHeaders' "
                "parameter. Authorization header requires existence of either a 'X-Amz-Date' or "
                "a 'Date' header. Authorization=AWS4-HMAC-SHA256");
}

TEST_F(SigV4Test, PieceWithoutEqualSignIsNamed) {
  // A stray space after "Credential=", as Cloud9 and DynamoDB users have hit.
  const std::string header =
      "AWS4-HMAC-SHA256 Credential= AKIATOKENWHEELTEST01/20240305/us-east-1/states/aws4_request, "
      "SignedHeaders=host, Signature=abc";
  ExpectRefused(CheckAuthorization(header), kIncompleteSignature,
                "'AKIATOKENWHEELTEST01/20240305/us-east-1/states/aws4_request' not a valid "
                "key=value pair (missing equal-sign) in Authorization header: '" +
                    header + "'.");
}

TEST_F(SigV4Test, MalformedDateIsRefused) {
  TestRequest r = Heartbeat();
  r.Set("X-Amz-Date", "2024-03-05T14:07:09Z");
  ExpectRefused(Check(r), kIncompleteSignature,
                "Date must be in ISO-8601 'basic format'. Got '2024-03-05T14:07:09Z'. See "
                "http://en.wikipedia.org/wiki/ISO_8601");
  for (const char* bad : {"20240230T000000Z", "20240305T240000Z", "20240305T140760Z",
                          "20240305T140709", "2024030XT140709Z", "20240305t140709z"}) {
    r.Set("X-Amz-Date", bad);
    const VerifyResult result = Check(r);
    ASSERT_FALSE(result.ok()) << bad;
    EXPECT_EQ(result.error->code, kIncompleteSignature) << bad;
  }
  TestRequest d = HeartbeatWithDateHeader();
  d.Set("Date", "Tue, 05 Mar 2024 14:07:09 PST");
  ExpectRefused(Check(d), kIncompleteSignature,
                "Date must be in ISO-8601 'basic format'. Got 'Tue, 05 Mar 2024 14:07:09 PST'. "
                "See http://en.wikipedia.org/wiki/ISO_8601");
}

TEST_F(SigV4Test, HostMustBeSigned) {
  ExpectRefused(
      CheckAuthorization("AWS4-HMAC-SHA256 "
                         "Credential=AKIATOKENWHEELTEST01/20240305/us-east-1/states/aws4_request, "
                         "SignedHeaders=content-type;x-amz-date;x-amz-target, Signature=abc"),
      kInvalidSignature,
      "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");
  ExpectRefused(
      CheckAuthorization("AWS4-HMAC-SHA256 "
                         "Credential=AKIATOKENWHEELTEST01/20240305/us-east-1/states/aws4_request, "
                         "SignedHeaders=, Signature=abc"),
      kInvalidSignature,
      "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");
}

TEST_F(SigV4Test, OnlyHmacSha256IsAccepted) {
  ExpectRefused(
      CheckAuthorization("AWS4-HMAC-SHA512 "
                         "Credential=AKIATOKENWHEELTEST01/20240305/us-east-1/states/aws4_request, "
                         "SignedHeaders=host, Signature=abc"),
      kIncompleteSignature,
      "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512' (only AWS4-HMAC-SHA256 for now). ");
}

TEST_F(SigV4Test, CredentialNeedsFiveElements) {
  ExpectRefused(CheckAuthorization("AWS4-HMAC-SHA256 "
                                   "Credential=AKIATOKENWHEELTEST01/20240305/us-east-1/states, "
                                   "SignedHeaders=host, Signature=abc"),
                kIncompleteSignature,
                "Credential must have exactly 5 slash-delimited elements, e.g. "
                "keyid/date/region/service/term, got "
                "'AKIATOKENWHEELTEST01/20240305/us-east-1/states'");
  ExpectRefused(CheckAuthorization("AWS4-HMAC-SHA256 Credential=a/b/c/d/e/f, "
                                   "SignedHeaders=host, Signature=abc"),
                kIncompleteSignature,
                "Credential must have exactly 5 slash-delimited elements, e.g. "
                "keyid/date/region/service/term, got 'a/b/c/d/e/f'");
}

// ---- Credential scope ----

std::string WithScope(std::string_view scope) {
  return "AWS4-HMAC-SHA256 Credential=AKIATOKENWHEELTEST01/" + std::string(scope) +
         ", SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=abc";
}

TEST_F(SigV4Test, ScopeMustNameStates) {
  ExpectRefused(CheckAuthorization(WithScope("20240305/us-east-1/sqs/aws4_request")),
                kInvalidSignature, "Credential should be scoped to correct service: 'states'. ");
  ExpectRefused(CheckAuthorization(WithScope("20240305/us-east-1/States/aws4_request")),
                kInvalidSignature, "Credential should be scoped to correct service: 'states'. ");
  // The AWS suite's service is refused unless asked for.
  ExpectRefused(Check(SuiteGetVanilla(), kSuiteAtS), kInvalidSignature,
                "Credential should be scoped to correct service: 'states'. ");
}

TEST_F(SigV4Test, ScopeMustEndInAws4Request) {
  ExpectRefused(CheckAuthorization(WithScope("20240305/us-east-1/states/aws5_request")),
                kInvalidSignature,
                "Credential should be scoped with a valid terminator: 'aws4_request', not "
                "'aws5_request'. ");
}

TEST_F(SigV4Test, ScopeDateMustBeTheRequestDate) {
  ExpectRefused(CheckAuthorization(WithScope("20240304/us-east-1/states/aws4_request")),
                kInvalidSignature,
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
                "from HTTP: '20240304' != '20240305', from '20240305T140709Z'. ");
}

TEST_F(SigV4Test, ScopeRegionMustNotBeEmpty) {
  ExpectRefused(CheckAuthorization(WithScope("20240305//states/aws4_request")), kInvalidSignature,
                "Credential should be scoped to a valid region, not ''. ");
}

TEST_F(SigV4Test, AllScopeFaultsAreNamedTogether) {
  ExpectRefused(CheckAuthorization(WithScope("b//d/e")), kInvalidSignature,
                "Credential should be scoped to a valid region, not ''. "
                "Credential should be scoped to correct service: 'states'. "
                "Credential should be scoped with a valid terminator: 'aws4_request', not 'e'. "
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
                "from HTTP: 'b' != '20240305', from '20240305T140709Z'. ");
}

// ---- Keys and signatures ----

TEST_F(SigV4Test, UnlistedKeyIsUnrecognized) {
  TestRequest r = Heartbeat();
  std::string auth = r.Get("Authorization");
  auth.replace(auth.find(kKeyId), std::strlen(kKeyId), "AKIANOTLISTED0000000");
  r.Set("Authorization", auth);
  ExpectRefused(Check(r), kUnrecognizedClient,
                "The security token included in the request is invalid.");
}

TEST_F(SigV4Test, WrongSecretIsAMismatchWithTheCanonicalRequestLogged) {
  Credentials other(std::vector<std::pair<std::string, std::string>>{{kKeyId, "not-the-secret"}});
  TestRequest r = Heartbeat();
  const VerifyResult result = Verify(r.view(), other, kSignedAtS * 1000);
  ExpectRefused(result, kInvalidSignature, kMismatch);
  EXPECT_NE(result.error->log_detail.find("POST\n/\n\ncontent-type:application/x-amz-json-1.0\n"
                                          "host:localhost:7412\n"),
            std::string::npos)
      << result.error->log_detail;
  EXPECT_EQ(result.error->log_detail.find("not-the-secret"), std::string::npos);
}

TEST_F(SigV4Test, TamperedBodyIsAMismatch) {
  TestRequest r = Heartbeat();
  r.body[r.body.size() - 3] ^= 1;
  ExpectRefused(Check(r), kInvalidSignature, kMismatch);
  r = Heartbeat();
  r.body += " ";
  ExpectRefused(Check(r), kInvalidSignature, kMismatch);
}

TEST_F(SigV4Test, TamperedSignedHeaderIsAMismatch) {
  TestRequest target = Heartbeat();
  target.Set("X-Amz-Target", "AWSStepFunctions.SendTaskFailure");
  ExpectRefused(Check(target), kInvalidSignature, kMismatch);
  TestRequest host = Heartbeat();
  host.Set("Host", "localhost:7413");
  ExpectRefused(Check(host), kInvalidSignature, kMismatch);
  TestRequest method = Heartbeat();
  method.method = "PUT";
  ExpectRefused(Check(method), kInvalidSignature, kMismatch);
  TestRequest path = Heartbeat();
  path.target = "/x";
  ExpectRefused(Check(path), kInvalidSignature, kMismatch);
}

TEST_F(SigV4Test, TamperedSignatureIsAMismatch) {
  const std::string good = Heartbeat().Get("Authorization");
  const size_t sig = good.find("Signature=") + 10;
  for (const std::string& bad : {good.substr(0, sig) + "f" + good.substr(sig + 1),  // one digit
                                 good.substr(0, good.size() - 1),                   // short
                                 good + "0",                                        // long
                                 good.substr(0, sig) + "E60B187904890B4A77019528976D529F75C1FE"
                                                       "90E4169A512081CC2095D6BF26"}) {  // case
    ExpectRefused(CheckAuthorization(bad), kInvalidSignature, kMismatch);
  }
}

TEST_F(SigV4Test, SignedHeaderMissingFromTheRequestIsAMismatch) {
  TestRequest r = Heartbeat();
  r.Remove("X-Amz-Target");
  const VerifyResult result = Check(r);
  ExpectRefused(result, kInvalidSignature, kMismatch);
  EXPECT_EQ(result.error->log_detail, "signed header 'x-amz-target' is not in the request");
}

TEST_F(SigV4Test, ContentShaHeaderMustBeTheBodyHash) {
  TestRequest tampered = HeartbeatWithContentSha();
  tampered.body[5] ^= 1;  // the signature over the header still holds; the body does not
  ExpectRefused(Check(tampered), kInvalidSignature,
                "The provided 'x-amz-content-sha256' header does not match what was computed.");
  TestRequest unsigned_payload = Heartbeat();
  unsigned_payload.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD");
  ExpectRefused(Check(unsigned_payload), kInvalidSignature,
                "The provided 'x-amz-content-sha256' header does not match what was computed.");
}

// Every prefix of a good header, and bytes of every value, are answered without a crash (ASan
// and UBSan watch this one).
TEST_F(SigV4Test, AnyPrefixOfTheHeaderIsAnsweredSafely) {
  const std::string good = Heartbeat().Get("Authorization");
  for (size_t n = 0; n < good.size(); ++n) {
    const VerifyResult result = CheckAuthorization(good.substr(0, n));
    EXPECT_FALSE(result.ok()) << n;
  }
  for (int byte = 0; byte < 256; ++byte) {
    TestRequest r = Heartbeat();
    const std::string b(1, static_cast<char>(byte));
    r.Set("Authorization",
          "AWS4-" + b + " Credential=" + b + "/" + b + ", SignedHeaders=" + b + ", Signature=" + b);
    r.Set("X-Amz-Date", b);
    r.target = "/" + b + "?" + b + "=%" + b;
    EXPECT_FALSE(Check(r).ok()) << byte;
  }
}

// ---- Credentials file ----

class CredentialsFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "tw-sigv4-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes `text` to a fresh file with exactly `mode` (the umask does not apply).
  std::string Write(const std::string& text, mode_t mode = 0600) {
    const std::string path = dir_ + "/credentials-" + std::to_string(files_++) + ".json";
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    EXPECT_EQ(::fchmod(fd, mode), 0);
    ::close(fd);
    return path;
  }
  // Loads `path`, expects failure with `code`, and returns the message.
  static std::string LoadError(const std::string& path, Status::Code code) {
    std::unique_ptr<Credentials> creds;
    const Status s = Credentials::LoadFile(path, &creds);
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(s.code(), code) << s.message();
    EXPECT_EQ(creds, nullptr);
    EXPECT_NE(s.message().find(path), std::string::npos) << s.message();
    EXPECT_EQ(s.message().find("s3cr3t"), std::string::npos) << s.message();
    return s.message();
  }

  std::string dir_;
  int files_ = 0;
};

constexpr const char* kTwoKeys =
    R"([{"accessKeyId": "AKIA1", "secretAccessKey": "s3cr3t/one"},
        {"accessKeyId": "worker-2.ops_x", "secretAccessKey": "s3cr3t two, with spaces"}])";

TEST_F(CredentialsFileTest, LoadsAMode0600File) {
  std::unique_ptr<Credentials> creds;
  const Status s = Credentials::LoadFile(Write(kTwoKeys), &creds);
  ASSERT_TRUE(s.ok()) << s.message();
  ASSERT_NE(creds, nullptr);
  EXPECT_EQ(creds->size(), 2u);
  ASSERT_NE(creds->FindSecret("AKIA1"), nullptr);
  EXPECT_EQ(*creds->FindSecret("AKIA1"), "s3cr3t/one");
  EXPECT_EQ(*creds->FindSecret("worker-2.ops_x"), "s3cr3t two, with spaces");
  EXPECT_EQ(creds->FindSecret("akia1"), nullptr);  // key ids are case-sensitive
  EXPECT_EQ(creds->FindSecret(""), nullptr);
}

TEST_F(CredentialsFileTest, LoadsStricterModes) {
  for (mode_t mode : {0400, 0200 | 0400}) {
    std::unique_ptr<Credentials> creds;
    EXPECT_TRUE(Credentials::LoadFile(Write(kTwoKeys, mode), &creds).ok()) << mode;
  }
}

TEST_F(CredentialsFileTest, RefusesModesOpenToGroupOrOthers) {
  for (mode_t mode : {0644, 0640, 0604, 0660, 0602, 0610, 0601, 0666}) {
    const std::string message = LoadError(Write(kTwoKeys, mode), Status::Code::kInvalidArgument);
    char expect[8];
    std::snprintf(expect, sizeof(expect), "%04o", static_cast<unsigned>(mode));
    EXPECT_NE(message.find(std::string("has mode ") + expect), std::string::npos) << message;
    EXPECT_NE(message.find("chmod 600"), std::string::npos) << message;
  }
}

TEST_F(CredentialsFileTest, RefusesWhatCannotBeRead) {
  EXPECT_NE(LoadError(dir_ + "/absent.json", Status::Code::kIoError).find("cannot open"),
            std::string::npos);
  const std::string sub = dir_ + "/a-directory";
  ASSERT_EQ(::mkdir(sub.c_str(), 0700), 0);
  EXPECT_NE(LoadError(sub, Status::Code::kIoError).find("not a regular file"), std::string::npos);
}

TEST_F(CredentialsFileTest, RefusesAnOversizedFile) {
  std::string big = "[";
  while (big.size() <= kAwsCredentialsFileBytesMax) big += "                ";
  big += "]";
  EXPECT_NE(LoadError(Write(big), Status::Code::kCorruption).find("larger than 65536 bytes"),
            std::string::npos);
}

TEST_F(CredentialsFileTest, RefusesMalformedContent) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "is not valid JSON"},
      {R"([{"accessKeyId": "AKIA1", "secretAccessKey": "s3cr3t")", "is not valid JSON"},
      {R"({"accessKeyId": "AKIA1", "secretAccessKey": "s3cr3t"})", "must be a JSON list"},
      {"[]", "lists no key"},
      {R"(["AKIA1"])", "entry 1: expected an object"},
      {R"([{"accessKeyId": "AKIA1"}])", "entry 1: secretAccessKey must be a string"},
      {R"([{"secretAccessKey": "s3cr3t"}])", "entry 1: accessKeyId must be a string"},
      {R"([{"accessKeyId": 7, "secretAccessKey": "s3cr3t"}])",
       "entry 1: accessKeyId must be a string"},
      {R"([{"accessKeyId": "", "secretAccessKey": "s3cr3t"}])",
       "entry 1: accessKeyId must be 1..128 characters of A-Z a-z 0-9 . _ -"},
      {R"([{"accessKeyId": "AK/IA", "secretAccessKey": "s3cr3t"}])",
       "entry 1: accessKeyId must be 1..128"},
      {R"([{"accessKeyId": "AKIA 1", "secretAccessKey": "s3cr3t"}])",
       "entry 1: accessKeyId must be 1..128"},
      {R"([{"accessKeyId": "AKIA1", "secretAccessKey": ""}])",
       "entry 1: secretAccessKey must be 1..256 bytes without control characters"},
      {R"([{"accessKeyId": "AKIA1", "secretAccessKey": "s3cr3t\n"}])",
       "entry 1: secretAccessKey must be 1..256"},
      {R"([{"accessKeyId": "AKIA1", "secretKey": "s3cr3t"}])",
       "entry 1: unknown member \"secretKey\""},
      {R"([{"accessKeyId": "AKIA1", "secretAccessKey": "s3cr3t"},
           {"accessKeyId": "AKIA2", "secretAccessKey": "s3cr3t"},
           {"accessKeyId": "AKIA1", "secretAccessKey": "s3cr3t-again"}])",
       "entry 3: duplicate accessKeyId \"AKIA1\" (also entry 1)"},
  };
  for (const auto& [text, expected] : cases) {
    const std::string message = LoadError(Write(text), Status::Code::kCorruption);
    EXPECT_NE(message.find(expected), std::string::npos) << text << "\n-> " << message;
  }
  const std::string long_id(kAwsAccessKeyIdCharsMax + 1, 'A');
  EXPECT_NE(LoadError(Write(R"([{"accessKeyId": ")" + long_id + R"(", "secretAccessKey": "x"}])"),
                      Status::Code::kCorruption)
                .find("accessKeyId must be"),
            std::string::npos);
}

TEST_F(CredentialsFileTest, LoadedKeysVerifyRequests) {
  std::unique_ptr<Credentials> creds;
  const std::string text = std::string(R"([{"accessKeyId": ")") + kKeyId +
                           R"(", "secretAccessKey": ")" + kSecret + R"("}])";
  ASSERT_TRUE(Credentials::LoadFile(Write(text), &creds).ok());
  TestRequest r = Heartbeat();
  const VerifyResult result = Verify(r.view(), *creds, kSignedAtS * 1000);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.access_key_id, kKeyId);
}

}  // namespace
}  // namespace tw::rpc::aws
