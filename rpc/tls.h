// TLS for the Cap'n Proto API, on kj-tls (Debian's capnp 0.9.2, over OpenSSL): the context of a
// server (certificate chain, key, optionally the CA that client certificates must chain to) or
// of a client (the CAs it trusts, optionally its own certificate and key). The files are read
// and checked once, here, so that a bad file is a clear error at start, not a failed handshake.
// Private to rpc/ (rpc/server.cc and rpc/client.cc build one from their options).
//
// Files are PEM. A private key must give group and others no access (rpc/auth.h,
// ReadPrivateFile) and must not be encrypted. TLS 1.2 at least (set here); kj-tls's defaults
// hold otherwise: Mozilla's "intermediate" ciphers, and a peer certificate that does not verify
// fails the handshake (a client checks the server's against the name it asked for, which also goes
// out as SNI).
#pragma once

#include <kj/compat/tls.h>
#include <kj/memory.h>
#include <kj/vector.h>

#include <memory>
#include <string>

#include "engine/types.h"

namespace tw::rpc {

class TlsConfig {
 public:
  // REQUIRES: cert_file and key_file non-empty. client_ca_file empty: clients need no
  // certificate; else every client must present one that chains to a CA in it (mutual TLS).
  static Result<std::unique_ptr<TlsConfig>> ForServer(const std::string& cert_file,
                                                      const std::string& key_file,
                                                      const std::string& client_ca_file);
  // ca_file empty: trust the system's CAs; else only the CAs in it. cert_file and key_file both
  // empty (no client certificate) or both set.
  static Result<std::unique_ptr<TlsConfig>> ForClient(const std::string& ca_file,
                                                      const std::string& cert_file,
                                                      const std::string& key_file);
  ~TlsConfig() noexcept(false);
  TlsConfig(const TlsConfig&) = delete;
  TlsConfig& operator=(const TlsConfig&) = delete;

  // Wraps streams (TlsContext::wrapServer / wrapClient) on the calling thread's event loop; the
  // context itself is read-only after construction, so any thread may use it.
  kj::TlsContext& context() { return *context_; }

 private:
  TlsConfig() = default;

  kj::Maybe<kj::TlsKeypair> keypair_;
  kj::Vector<kj::TlsCertificate> trusted_;
  kj::Own<kj::TlsContext> context_;
};

}  // namespace tw::rpc
