// TLS contexts for the Cap'n Proto server and client (rpc/tls.h).
#include "rpc/tls.h"

#include <kj/debug.h>

#include <utility>

#include "engine/limits.h"
#include "rpc/auth.h"

namespace tw::rpc {
namespace {

using R = Result<std::unique_ptr<TlsConfig>>;

R Invalid(std::string message) {
  return R::Fail(Error::Make(ErrorCode::kValidation, std::move(message)));
}

// kj-tls reports a bad PEM (or a key that does not match its certificate) as an exception.
std::string Describe(const kj::Exception& e) { return e.getDescription().cStr(); }

}  // namespace

TlsConfig::~TlsConfig() noexcept(false) {}

R TlsConfig::ForServer(const std::string& cert_file, const std::string& key_file,
                       const std::string& client_ca_file) {
  if (cert_file.empty() || key_file.empty()) {
    return Invalid("TLS needs both a certificate and its private key");
  }
  auto cert = ReadPublicFile(cert_file, limits::kRpcTlsPemBytesMax, "TLS certificate file");
  if (!cert.ok()) return R::Fail(std::move(cert.error));
  auto key = ReadPrivateFile(key_file, limits::kRpcTlsPemBytesMax, "TLS private key file");
  if (!key.ok()) return R::Fail(std::move(key.error));
  Result<std::string> ca;
  if (!client_ca_file.empty()) {
    ca = ReadPublicFile(client_ca_file, limits::kRpcTlsPemBytesMax, "TLS client CA file");
    if (!ca.ok()) return R::Fail(std::move(ca.error));
  }
  std::unique_ptr<TlsConfig> config(new TlsConfig());
  std::string stage = "TLS certificate file " + cert_file;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                 kj::TlsCertificate certificate(kj::StringPtr(cert.value.c_str()));
                 stage = "TLS private key file " + key_file;
                 kj::TlsPrivateKey private_key(kj::StringPtr(key.value.c_str()));
                 config->keypair_ = kj::TlsKeypair{kj::mv(private_key), kj::mv(certificate)};
                 if (!client_ca_file.empty()) {
                   stage = "TLS client CA file " + client_ca_file;
                   config->trusted_.add(kj::StringPtr(ca.value.c_str()));
                 }
                 stage = "TLS setup (does the key match the certificate?)";
                 kj::TlsContext::Options options;
                 options.minVersion = kj::TlsVersion::TLS_1_2;
                 options.defaultKeypair = KJ_ASSERT_NONNULL(config->keypair_);
                 if (!client_ca_file.empty()) {
                   options.useSystemTrustStore = false;
                   options.verifyClients = true;
                   options.trustedCertificates = config->trusted_.asPtr();
                 }
                 config->context_ = kj::heap<kj::TlsContext>(kj::mv(options));
               })) {
    WipeSecret(&key.value);
    return Invalid(stage + ": " + Describe(*e));
  }
  WipeSecret(&key.value);
  return R::Ok(std::move(config));
}

R TlsConfig::ForClient(const std::string& ca_file, const std::string& cert_file,
                       const std::string& key_file) {
  if (cert_file.empty() != key_file.empty()) {
    return Invalid("a TLS client certificate needs its private key, and the other way round");
  }
  Result<std::string> ca;
  if (!ca_file.empty()) {
    ca = ReadPublicFile(ca_file, limits::kRpcTlsPemBytesMax, "TLS CA file");
    if (!ca.ok()) return R::Fail(std::move(ca.error));
  }
  Result<std::string> cert;
  Result<std::string> key;
  if (!cert_file.empty()) {
    cert = ReadPublicFile(cert_file, limits::kRpcTlsPemBytesMax, "TLS certificate file");
    if (!cert.ok()) return R::Fail(std::move(cert.error));
    key = ReadPrivateFile(key_file, limits::kRpcTlsPemBytesMax, "TLS private key file");
    if (!key.ok()) return R::Fail(std::move(key.error));
  }
  std::unique_ptr<TlsConfig> config(new TlsConfig());
  std::string stage = "TLS CA file " + ca_file;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&]() {
                 kj::TlsContext::Options options;
                 options.minVersion = kj::TlsVersion::TLS_1_2;
                 if (!ca_file.empty()) {
                   config->trusted_.add(kj::StringPtr(ca.value.c_str()));
                   options.useSystemTrustStore = false;
                   options.trustedCertificates = config->trusted_.asPtr();
                 }
                 if (!cert_file.empty()) {
                   stage = "TLS certificate file " + cert_file;
                   kj::TlsCertificate certificate(kj::StringPtr(cert.value.c_str()));
                   stage = "TLS private key file " + key_file;
                   kj::TlsPrivateKey private_key(kj::StringPtr(key.value.c_str()));
                   config->keypair_ = kj::TlsKeypair{kj::mv(private_key), kj::mv(certificate)};
                   options.defaultKeypair = KJ_ASSERT_NONNULL(config->keypair_);
                 }
                 stage = "TLS setup (does the key match the certificate?)";
                 config->context_ = kj::heap<kj::TlsContext>(kj::mv(options));
               })) {
    WipeSecret(&key.value);
    return Invalid(stage + ": " + Describe(*e));
  }
  WipeSecret(&key.value);
  return R::Ok(std::move(config));
}

}  // namespace tw::rpc
