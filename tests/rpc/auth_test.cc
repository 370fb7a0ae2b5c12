// tw-test-labels: threads
//
// Authentication and TLS on the Cap'n Proto API (rpc/server.h, "Security"), against a real
// tokenwheeld: the auth file's format and mode checks, the Gate (a client without the secret, or
// with a wrong one, gets nothing and loses its connection; attempts per connection are bounded;
// the right secret works end to end, and a client that always authenticates works against a
// server without auth), TLS (an untrusted server certificate, a plain client, a missing or
// foreign client certificate are refused; a silent TLS peer is closed by the handshake
// timeout), the CLI's --auth-file / --tls-* flags and environment variables, and tokenwheeld's
// refusal to listen off loopback with neither layer. Certificates are made at test time
// (tests/rpc/test_certs.h).
#include "rpc/auth.h"

#include <arpa/inet.h>
#include <capnp/rpc-twoparty.h>
#include <gtest/gtest.h>
#include <kj/async-io.h>
#include <kj/debug.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/limits.h"
#include "rpc/client.h"
#include "rpc/tls.h"
#include "rpc/tokenwheel.capnp.h"
#include "tests/rpc/test_certs.h"
#include "tests/rpc/test_support.h"

namespace tw::rpc {
namespace {

using testing::CliResult;
using testing::DaemonTest;
using testing::MakeIdentity;
using testing::NowMs;
using testing::RunCli;
using testing::ServerProcess;
using testing::TempDir;
using testing::TestIdentity;
using testing::WaitUntil;

constexpr char kSecret[] = "0123456789abcdef0123456789abcdef";
constexpr char kOtherSecret[] = "fedcba9876543210fedcba9876543210";
constexpr char kWrongSecret[] = "not-the-secret-not-the-secret-00";

void WriteFile(const std::string& path, const std::string& text, mode_t mode = 0600) {
  std::ofstream(path, std::ios::binary) << text;
  ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;
}

// ---- The auth file ----

TEST(AuthFile, SkipsCommentsAndBlankLinesAndTrims) {
  auto r = ParseAuthSecrets(
      std::string("# rotation: new first\n\n  ") + kSecret + " \r\n\t" + kOtherSecret + "\n",
      "test");
  ASSERT_TRUE(r.ok()) << r.error.message;
  ASSERT_EQ(r.value.size(), 2u);
  EXPECT_EQ(r.value[0], kSecret);
  EXPECT_EQ(r.value[1], kOtherSecret);
}

TEST(AuthFile, RefusesShortEmptyAndTooManySecrets) {
  auto short_one = ParseAuthSecrets(std::string(kSecret) + "\nshort\n", "f");
  ASSERT_FALSE(short_one.ok());
  EXPECT_EQ(short_one.error.code, ErrorCode::kValidation);
  EXPECT_NE(short_one.error.message.find("line 2"), std::string::npos) << short_one.error.message;
  EXPECT_NE(short_one.error.message.find("shorter than"), std::string::npos);
  EXPECT_EQ(short_one.error.message.find("short\n"), std::string::npos);  // never the secret

  auto empty = ParseAuthSecrets("# nothing here\n\n", "f");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error.message.find("holds no secret"), std::string::npos);

  auto too_long = ParseAuthSecrets(std::string(limits::kRpcAuthSecretBytesMax + 1, 'x'), "f");
  ASSERT_FALSE(too_long.ok());
  EXPECT_NE(too_long.error.message.find("longer than"), std::string::npos);

  std::string many;
  for (size_t i = 0; i <= limits::kRpcAuthSecretsMax; ++i) many += kSecret + std::string("\n");
  auto too_many = ParseAuthSecrets(many, "f");
  ASSERT_FALSE(too_many.ok());
  EXPECT_NE(too_many.error.message.find("more than"), std::string::npos);
}

TEST(AuthFile, RefusesAFileGroupOrOthersCanRead) {
  TempDir dir;
  const std::string path = dir.path() + "/auth";
  WriteFile(path, std::string(kSecret) + "\n", 0644);
  auto open = LoadAuthSecrets(path);
  ASSERT_FALSE(open.ok());
  EXPECT_EQ(open.error.code, ErrorCode::kValidation);
  EXPECT_NE(open.error.message.find("chmod 600"), std::string::npos) << open.error.message;
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  auto loaded = LoadAuthSecrets(path);
  ASSERT_TRUE(loaded.ok()) << loaded.error.message;
  EXPECT_EQ(loaded.value, std::vector<std::string>{kSecret});
  auto missing = LoadAuthSecrets(dir.path() + "/nope");
  EXPECT_FALSE(missing.ok());
}

kj::ArrayPtr<const kj::byte> Bytes(const std::string& s) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

TEST(AuthSecrets, MatchesListedSecretsOnly) {
  AuthSecrets secrets({kSecret, kOtherSecret});
  EXPECT_TRUE(secrets.Matches(Bytes(kSecret)));
  EXPECT_TRUE(secrets.Matches(Bytes(kOtherSecret)));
  EXPECT_FALSE(secrets.Matches(Bytes(kWrongSecret)));
  EXPECT_FALSE(secrets.Matches(Bytes(std::string(kSecret).substr(0, 31))));  // a prefix
  EXPECT_FALSE(secrets.Matches(Bytes(std::string(kSecret) + "0")));          // an extension
  EXPECT_FALSE(secrets.Matches(Bytes("")));
}

// ---- A connection made by hand, to call the Gate directly ----

// capnp over one socket (TLS when `tls` is set, for the name "localhost"), without
// rpc/client.h: its bootstrap capability as a Gate. Owns this thread's KJ event loop, so no
// rpc::Client may live meanwhile.
class RawConnection {
 public:
  explicit RawConnection(const std::string& address, TlsConfig* tls = nullptr)
      : io_(kj::setupAsyncIo()),
        stream_(
            io_.provider->getNetwork()
                .parseAddress(address)
                .then([](kj::Own<kj::NetworkAddress> a) { return a->connect(); })
                .then(
                    [tls](kj::Own<kj::AsyncIoStream> s) -> kj::Promise<kj::Own<kj::AsyncIoStream>> {
                      if (tls == nullptr) return kj::mv(s);
                      return tls->context().wrapClient(kj::mv(s), "localhost");
                    })
                .wait(io_.waitScope)),
        client_(*stream_),
        gate_(client_.bootstrap().castAs<proto::Gate>()) {}

  // authenticate(secret), then getInfo on the answer. "" if both answered, else the failure.
  std::string AuthenticateAndGetInfo(const std::string& secret) {
    std::string failure;
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                   auto req = gate_.authenticateRequest();
                   req.setSecret(Bytes(secret));
                   auto api = req.send().getApi();
                   auto info = api.getInfoRequest().send().wait(io_.waitScope);
                   EXPECT_EQ(info.getApiVersion(), proto::API_VERSION);
                 })) {
      failure = e->getDescription().cStr();
      if (failure.empty()) failure = "failed";
    }
    return failure;
  }

  // authenticate(secret) alone. "" if it answered, else the failure.
  std::string Authenticate(const std::string& secret) {
    std::string failure;
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                   auto req = gate_.authenticateRequest();
                   req.setSecret(Bytes(secret));
                   req.send().wait(io_.waitScope);
                 })) {
      failure = e->getDescription().cStr();
      if (failure.empty()) failure = "failed";
    }
    return failure;
  }

  // A TokenWheel call (getInfo) straight on the bootstrap capability, as an old client makes.
  std::string GetInfoWithoutAuthenticating() {
    std::string failure;
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                   gate_.castAs<proto::TokenWheel>().getInfoRequest().send().wait(io_.waitScope);
                 })) {
      failure = e->getDescription().cStr();
      if (failure.empty()) failure = "failed";
    }
    return failure;
  }

  // True once the server has closed the connection (bounded wait).
  bool Disconnected(int64_t timeout_ms = testing::kStartTimeoutMs) {
    bool closed = false;
    client_.onDisconnect()
        .then([&]() { closed = true; })
        .exclusiveJoin(io_.provider->getTimer().afterDelay(timeout_ms * kj::MILLISECONDS))
        .wait(io_.waitScope);
    return closed;
  }

 private:
  kj::AsyncIoContext io_;
  kj::Own<kj::AsyncIoStream> stream_;
  capnp::TwoPartyClient client_;
  proto::Gate::Client gate_;
};

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// ---- A server with an auth file ----

class AuthDaemonTest : public DaemonTest {
 protected:
  void SetUp() override {
    auth_file_ = dir_.path() + "/rpc.auth";
    WriteFile(auth_file_, std::string("# tokenwheel\n") + kSecret + "\n" + kOtherSecret + "\n");
    StartServer({"--rpc-auth-file", auth_file_, "--aws-listen", "off"});
  }
  ClientOptions WithSecret(const std::string& secret) {
    ClientOptions o;
    o.auth_secret = secret;
    return o;
  }
  std::string auth_file_;
};

TEST_F(AuthDaemonTest, ClientWithoutSecretGetsNoCallAnswered) {
  EXPECT_TRUE(Contains(server_->Log(), "rpc_auth=on"));
  auto c = Client::Connect(server_->address());  // its handshake is a getInfo call
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(IsTransportError(c.error));
  EXPECT_TRUE(Contains(c.error.message, "authentication required")) << c.error.message;

  RawConnection raw(server_->address());
  const std::string failure = raw.GetInfoWithoutAuthenticating();
  EXPECT_TRUE(Contains(failure, "authentication required")) << failure;
  EXPECT_TRUE(raw.Disconnected());
}

TEST_F(AuthDaemonTest, WrongSecretIsRefusedAndTheConnectionClosed) {
  auto c = Client::Connect(server_->address(), WithSecret(kWrongSecret));
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(Contains(c.error.message, "authentication failed")) << c.error.message;

  RawConnection raw(server_->address());
  const std::string failure = raw.Authenticate(kWrongSecret);
  EXPECT_TRUE(Contains(failure, "authentication failed")) << failure << "\n" << server_->Log();
  EXPECT_TRUE(raw.Disconnected());
  // Even the right secret gets nothing on that connection now.
  EXPECT_FALSE(raw.AuthenticateAndGetInfo(kSecret).empty());
  EXPECT_TRUE(WaitUntil([&]() { return Contains(server_->Log(), "authentication failed"); },
                        testing::kStartTimeoutMs))
      << server_->Log();
}

TEST_F(AuthDaemonTest, AuthenticateCallsPerConnectionAreBounded) {
  RawConnection raw(server_->address());
  for (size_t i = 0; i < limits::kRpcAuthAttemptsMax; ++i) {
    EXPECT_EQ(raw.AuthenticateAndGetInfo(i % 2 == 0 ? kSecret : kOtherSecret), "") << i;
  }
  const std::string failure = raw.Authenticate(kSecret);
  EXPECT_TRUE(Contains(failure, "authenticate calls on one connection")) << failure;
  EXPECT_TRUE(raw.Disconnected());
}

TEST_F(AuthDaemonTest, RightSecretWorksEndToEnd) {
  for (const char* secret : {kSecret, kOtherSecret}) {  // either secret of a rotation
    auto c = Client::Connect(server_->address(), WithSecret(secret));
    ASSERT_TRUE(c.ok()) << c.error.message;
    Client& client = *c.value;
    IssueTaskRequest req;
    req.input = "{\"n\":1}";
    req.timeout_s = 60;
    auto issued = client.IssueTask(req);
    ASSERT_TRUE(issued.ok()) << issued.error.message;
    auto done = client.SendTaskSuccess(SendTaskSuccessRequest{issued.value.token, "{\"ok\":1}"});
    ASSERT_TRUE(done.ok()) << done.error.message;
    EXPECT_FALSE(done.value.duplicate);
    auto described = client.DescribeTask(issued.value.token);
    ASSERT_TRUE(described.ok()) << described.error.message;
    EXPECT_EQ(described.value.state, TaskState::kSucceeded);
  }
}

TEST_F(AuthDaemonTest, CliAuthFileFlagAndEnvironment) {
  const std::string out = dir_.path() + "/cli.out";
  CliResult without = RunCli({"--server", server_->address(), "ping"}, out);
  EXPECT_EQ(without.exit_code, 1) << without.out << without.err;
  EXPECT_TRUE(Contains(without.out, "authentication required")) << without.out;

  CliResult with =
      RunCli({"--server", server_->address(), "--auth-file", auth_file_, "ping", "hi"}, out);
  EXPECT_EQ(with.exit_code, 0) << with.out << with.err;
  EXPECT_TRUE(Contains(with.out, "\"payload\":\"hi\"")) << with.out;

  CliResult issued = RunCli({"--server", server_->address(), "--auth-file", auth_file_, "task",
                             "issue", "--callback", "--timeout", "60"},
                            out);
  ASSERT_EQ(issued.exit_code, 0) << issued.out << issued.err;
  EXPECT_TRUE(Contains(issued.out, "taskToken")) << issued.out;

  ASSERT_EQ(::setenv("TOKENWHEEL_AUTH_FILE", auth_file_.c_str(), 1), 0);
  CliResult from_env = RunCli({"--server", server_->address(), "ping"}, out);
  ::unsetenv("TOKENWHEEL_AUTH_FILE");
  EXPECT_EQ(from_env.exit_code, 0) << from_env.out << from_env.err;

  const std::string open_file = dir_.path() + "/open.auth";
  WriteFile(open_file, std::string(kSecret) + "\n", 0644);
  CliResult refused =
      RunCli({"--server", server_->address(), "--auth-file", open_file, "ping"}, out);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_TRUE(Contains(refused.out, "chmod 600")) << refused.out;
}

// The config file's key does what the flag does.
TEST_F(DaemonTest, ConfigFileKeyTurnsAuthOn) {
  const std::string auth = dir_.path() + "/rpc.auth";
  WriteFile(auth, std::string(kSecret) + "\n");
  const std::string config = dir_.path() + "/config.json";
  WriteFile(config, "{\"rpc-auth-file\": \"" + auth + "\"}", 0644);
  StartServer({"--config", config, "--aws-listen", "off"});
  EXPECT_TRUE(Contains(server_->Log(), "rpc_auth=on")) << server_->Log();
  EXPECT_FALSE(Client::Connect(server_->address()).ok());
  ClientOptions o;
  o.auth_secret = kSecret;
  auto c = Client::Connect(server_->address(), o);
  EXPECT_TRUE(c.ok()) << c.error.message;
}

// A client that always authenticates works against a server without auth (TokenWheel is a Gate).
TEST_F(DaemonTest, ClientWithSecretWorksAgainstAServerWithoutAuth) {
  StartServer({"--aws-listen", "off"});
  ClientOptions o;
  o.auth_secret = kWrongSecret;
  auto c = Client::Connect(server_->address(), o);
  ASSERT_TRUE(c.ok()) << c.error.message;
  auto pong = c.value->Ping("x");
  ASSERT_TRUE(pong.ok()) << pong.error.message;
  EXPECT_EQ(pong.value.payload, "x");
}

// ---- TLS ----

class TlsDaemonTest : public DaemonTest {
 protected:
  void SetUp() override {
    ca_ = MakeIdentity(dir_.path(), "ca", "tw test CA", nullptr);
    other_ca_ = MakeIdentity(dir_.path(), "other-ca", "another CA", nullptr);
    server_id_ = MakeIdentity(dir_.path(), "server", "localhost", &ca_);
    client_id_ = MakeIdentity(dir_.path(), "client", "worker", &ca_);
    foreign_client_ = MakeIdentity(dir_.path(), "foreign", "worker", &other_ca_);
  }
  std::vector<std::string> TlsArgs() {
    return {"--rpc-tls-cert",    server_id_.cert_file, "--rpc-tls-key",
            server_id_.key_file, "--aws-listen",       "off"};
  }
  ClientOptions Trusting(const TestIdentity& ca) {
    ClientOptions o;
    o.tls_ca_file = ca.cert_file;
    o.tls_server_name = "localhost";
    return o;
  }

  TestIdentity ca_, other_ca_, server_id_, client_id_, foreign_client_;
};

TEST_F(TlsDaemonTest, ServerCertificateMustBeTrustedAndPlainClientsFail) {
  StartServer(TlsArgs());
  EXPECT_TRUE(Contains(server_->Log(), "rpc_tls=on"));
  auto good = Client::Connect(server_->address(), Trusting(ca_));
  ASSERT_TRUE(good.ok()) << good.error.message;
  EXPECT_TRUE(good.value->Ping("tls").ok());
  good.value.reset();

  auto wrong_ca = Client::Connect(server_->address(), Trusting(other_ca_));
  ASSERT_FALSE(wrong_ca.ok());
  EXPECT_TRUE(Contains(wrong_ca.error.message, "certificate")) << wrong_ca.error.message;

  ClientOptions wrong_name = Trusting(ca_);
  wrong_name.tls_server_name = "tokenwheel.example";
  auto mismatch = Client::Connect(server_->address(), wrong_name);
  EXPECT_FALSE(mismatch.ok());

  auto plain = Client::Connect(server_->address(), 10'000);
  EXPECT_FALSE(plain.ok());
}

TEST_F(TlsDaemonTest, MutualTlsRequiresAClientCertificateFromItsCa) {
  std::vector<std::string> args = TlsArgs();
  args.insert(args.end(), {"--rpc-tls-client-ca", ca_.cert_file});
  StartServer(args);
  EXPECT_TRUE(Contains(server_->Log(), "rpc_tls=mutual"));

  auto no_cert = Client::Connect(server_->address(), Trusting(ca_), 10'000);
  EXPECT_FALSE(no_cert.ok());

  ClientOptions foreign = Trusting(ca_);
  foreign.tls_cert_file = foreign_client_.cert_file;
  foreign.tls_key_file = foreign_client_.key_file;
  auto refused = Client::Connect(server_->address(), foreign, 10'000);
  EXPECT_FALSE(refused.ok());

  ClientOptions mine = Trusting(ca_);
  mine.tls_cert_file = client_id_.cert_file;
  mine.tls_key_file = client_id_.key_file;
  auto c = Client::Connect(server_->address(), mine);
  ASSERT_TRUE(c.ok()) << c.error.message;
  IssueTaskRequest req;
  req.timeout_s = 60;
  auto issued = c.value->IssueTask(req);
  ASSERT_TRUE(issued.ok()) << issued.error.message;
  EXPECT_TRUE(c.value->SendTaskSuccess(SendTaskSuccessRequest{issued.value.token, "{}"}).ok());
  EXPECT_TRUE(WaitUntil([&]() { return Contains(server_->Log(), "TLS handshake failed"); },
                        testing::kStartTimeoutMs))
      << server_->Log();
}

// A peer that connects and never starts its TLS handshake is closed by the handshake timeout.
TEST_F(TlsDaemonTest, SilentPeerIsClosedByTheHandshakeTimeout) {
  std::vector<std::string> args = TlsArgs();
  args.insert(args.end(), {"--handshake-timeout-ms", "300"});
  StartServer(args);
  const std::string& address = server_->address();
  const int port = std::stoi(address.substr(address.rfind(':') + 1));
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  timeval tv{};
  tv.tv_sec = 30;  // a bound on the test, far above the timeout
  ASSERT_EQ(::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
  const int64_t t0 = NowMs();
  char byte = 0;
  const ssize_t n = ::read(fd, &byte, 1);  // returns when the server closes
  const int64_t waited_ms = NowMs() - t0;
  ::close(fd);
  EXPECT_LE(n, 0);
  EXPECT_LT(waited_ms, 20'000);
}

// Over TLS the Gate closes the connection as it does over plain TCP, and a peer that finished
// its TLS handshake but sends no call is closed by the handshake timeout.
TEST_F(TlsDaemonTest, WrongSecretAndSilenceCloseATlsConnection) {
  const std::string auth = dir_.path() + "/rpc.auth";
  WriteFile(auth, std::string(kSecret) + "\n");
  std::vector<std::string> args = TlsArgs();
  args.insert(args.end(), {"--rpc-auth-file", auth, "--handshake-timeout-ms", "1000"});
  StartServer(args);
  auto tls = TlsConfig::ForClient(ca_.cert_file, "", "");
  ASSERT_TRUE(tls.ok()) << tls.error.message;
  {
    RawConnection raw(server_->address(), tls.value.get());
    EXPECT_EQ(raw.AuthenticateAndGetInfo(kSecret), "");
  }
  {
    RawConnection raw(server_->address(), tls.value.get());
    const std::string failure = raw.Authenticate(kWrongSecret);
    EXPECT_TRUE(Contains(failure, "authentication failed")) << failure;
    EXPECT_TRUE(raw.Disconnected());
  }
  {
    const int64_t t0 = NowMs();  // before the connect, so before the server's accept
    RawConnection raw(server_->address(), tls.value.get());  // handshake done, no call
    EXPECT_TRUE(raw.Disconnected());
    EXPECT_GE(NowMs() - t0, 900);  // not at once: the timeout (1000 ms from accept) closed it
  }
}

TEST_F(TlsDaemonTest, TlsAndAuthTogetherThroughTheCli) {
  const std::string auth = dir_.path() + "/rpc.auth";
  WriteFile(auth, std::string(kSecret) + "\n");
  std::vector<std::string> args = TlsArgs();
  args.insert(args.end(), {"--rpc-auth-file", auth});
  StartServer(args);
  const std::string out = dir_.path() + "/cli.out";
  const std::vector<std::string> tls = {"--server",    server_->address(),  "--tls-ca",
                                        ca_.cert_file, "--tls-server-name", "localhost"};
  std::vector<std::string> no_auth = tls;
  no_auth.insert(no_auth.end(), {"ping"});
  CliResult refused = RunCli(no_auth, out);
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_TRUE(Contains(refused.out, "authentication required")) << refused.out;

  std::vector<std::string> full = tls;
  full.insert(full.end(), {"--auth-file", auth, "ping", "both"});
  CliResult ok = RunCli(full, out);
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  EXPECT_TRUE(Contains(ok.out, "\"payload\":\"both\"")) << ok.out;

  ASSERT_EQ(::setenv("TOKENWHEEL_TLS_CA", ca_.cert_file.c_str(), 1), 0);
  ASSERT_EQ(::setenv("TOKENWHEEL_AUTH_FILE", auth.c_str(), 1), 0);
  CliResult env = RunCli(
      {"--server", server_->address(), "--tls-server-name", "localhost", "ping", "env"}, out);
  ::unsetenv("TOKENWHEEL_TLS_CA");
  ::unsetenv("TOKENWHEEL_AUTH_FILE");
  EXPECT_EQ(env.exit_code, 0) << env.out << env.err;
}

// ---- tokenwheeld's start-up checks (none of these servers binds anything) ----

// Runs tokenwheeld with `args` to its exit (bounded): the exit code and its log.
CliResult RunDaemon(const std::vector<std::string>& args, const std::string& out_path) {
  return RunCli(args, out_path, testing::kDaemonPath);
}

TEST(DaemonFlags, NonLoopbackWithoutAuthOrTlsIsRefusedBeforeBinding) {
  TempDir dir;
  const std::string data = dir.path() + "/data";
  CliResult r = RunDaemon({"--data-dir", data, "--rpc-listen", "0.0.0.0:0", "--aws-listen", "off"},
                          dir.path() + "/log");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.err, "--rpc-auth-file")) << r.err;
  EXPECT_TRUE(Contains(r.err, "--rpc-tls-cert")) << r.err;
  EXPECT_TRUE(Contains(r.err, "loopback")) << r.err;
  // It stopped at the flags: no data directory, so no store and no socket either.
  EXPECT_FALSE(std::filesystem::exists(data));
}

TEST(DaemonFlags, BadAuthAndTlsFlagsAreRefusedAtStart) {
  TempDir dir;
  const std::string data = dir.path() + "/data";
  const std::string log = dir.path() + "/log";
  const std::string open_auth = dir.path() + "/open.auth";
  WriteFile(open_auth, std::string(kSecret) + "\n", 0640);
  CliResult open = RunDaemon({"--data-dir", data, "--rpc-listen", "127.0.0.1:0", "--aws-listen",
                              "off", "--rpc-auth-file", open_auth},
                             log);
  EXPECT_EQ(open.exit_code, 1);
  EXPECT_TRUE(Contains(open.err, "chmod 600")) << open.err;

  const std::string short_auth = dir.path() + "/short.auth";
  WriteFile(short_auth, "tooshort\n");
  CliResult short_secret = RunDaemon({"--data-dir", data, "--rpc-listen", "127.0.0.1:0",
                                      "--aws-listen", "off", "--rpc-auth-file", short_auth},
                                     log);
  EXPECT_EQ(short_secret.exit_code, 1);
  EXPECT_TRUE(Contains(short_secret.err, "shorter than")) << short_secret.err;

  CliResult half_tls = RunDaemon({"--data-dir", data, "--rpc-listen", "127.0.0.1:0", "--aws-listen",
                                  "off", "--rpc-tls-cert", open_auth},
                                 log);
  EXPECT_EQ(half_tls.exit_code, 1);
  EXPECT_TRUE(Contains(half_tls.err, "--rpc-tls-key")) << half_tls.err;

  // A certificate file that is not PEM: refused naming the file, before serving.
  const std::string junk = dir.path() + "/junk.pem";
  const std::string key = dir.path() + "/junk.key";
  WriteFile(junk, "not a certificate\n", 0644);
  WriteFile(key, "not a key\n");
  CliResult bad_pem = RunDaemon({"--data-dir", data, "--rpc-listen", "127.0.0.1:0", "--aws-listen",
                                 "off", "--rpc-tls-cert", junk, "--rpc-tls-key", key},
                                log);
  EXPECT_EQ(bad_pem.exit_code, 1);
  EXPECT_TRUE(Contains(bad_pem.err, "junk.pem")) << bad_pem.err;
}

}  // namespace
}  // namespace tw::rpc
