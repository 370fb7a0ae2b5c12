// Test certificates made at test time with OpenSSL's C API (no private key is ever committed):
// a self-signed CA, and leaf certificates it signs for "localhost" (serverAuth and clientAuth),
// written as PEM files, keys mode 0600. Header-only, for tests/rpc.
#pragma once

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>
#include <memory>
#include <string>

namespace tw::rpc::testing {

struct EvpKeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, EvpKeyFree>;
using CertPtr = std::unique_ptr<X509, X509Free>;

// A key pair and its certificate, and the PEM files they were written to.
struct TestIdentity {
  KeyPtr key;
  CertPtr cert;
  std::string cert_file;
  std::string key_file;
};

inline void AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  ASSERT_NE(ext, nullptr) << value;
  ASSERT_EQ(X509_add_ext(cert, ext, -1), 1);
  X509_EXTENSION_free(ext);
}

inline void WritePem(TestIdentity* id, const std::string& dir, const std::string& name) {
  id->cert_file = dir + "/" + name + ".pem";
  id->key_file = dir + "/" + name + ".key";
  FILE* c = std::fopen(id->cert_file.c_str(), "w");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(PEM_write_X509(c, id->cert.get()), 1);
  std::fclose(c);
  FILE* k = std::fopen(id->key_file.c_str(), "w");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(PEM_write_PrivateKey(k, id->key.get(), nullptr, nullptr, 0, nullptr, nullptr), 1);
  std::fclose(k);
  ASSERT_EQ(::chmod(id->key_file.c_str(), 0600), 0);
}

// A certificate for `common_name`, signed by `issuer` (null: self-signed, a CA).
inline TestIdentity MakeIdentity(const std::string& dir, const std::string& name,
                                 const std::string& common_name, const TestIdentity* issuer) {
  static long serial = 1;
  TestIdentity id;
  id.key.reset(EVP_EC_gen("P-256"));
  EXPECT_NE(id.key, nullptr);
  id.cert.reset(X509_new());
  X509* x = id.cert.get();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
  X509_set_pubkey(x, id.key.get());
  X509_NAME* subject = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                             0);
  X509* issuer_cert = issuer == nullptr ? x : issuer->cert.get();
  X509_set_issuer_name(x, X509_get_subject_name(issuer_cert));
  AddExtension(x, issuer_cert, NID_subject_key_identifier, "hash");
  if (issuer == nullptr) {
    AddExtension(x, issuer_cert, NID_basic_constraints, "critical,CA:TRUE");
    AddExtension(x, issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    AddExtension(x, issuer_cert, NID_authority_key_identifier, "keyid:always");
    AddExtension(x, issuer_cert, NID_basic_constraints, "critical,CA:FALSE");
    AddExtension(x, issuer_cert, NID_key_usage, "critical,digitalSignature");
    AddExtension(x, issuer_cert, NID_ext_key_usage, "serverAuth,clientAuth");
    AddExtension(x, issuer_cert, NID_subject_alt_name, "DNS:localhost");
  }
  EVP_PKEY* signer = issuer == nullptr ? id.key.get() : issuer->key.get();
  EXPECT_GT(X509_sign(x, signer, EVP_sha256()), 0);
  WritePem(&id, dir, name);
  return id;
}

}  // namespace tw::rpc::testing
