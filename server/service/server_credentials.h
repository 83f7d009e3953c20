// The credentials glassboxd listens with: plaintext, TLS (--tls_cert / --tls_key), or mutual TLS
// (--tls_client_ca as well: every client must present a certificate that CA signed). gRPC's own
// SslServerCredentials do the work; this only reads the PEM files and says what is wrong.
#pragma once

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace glassbox {

struct TlsFiles {
  std::string cert;       // PEM certificate chain of the server; empty: plaintext
  std::string key;        // its PEM private key
  std::string client_ca;  // PEM roots client certificates must chain to; empty: none asked for

  bool enabled() const { return !cert.empty() || !key.empty() || !client_ca.empty(); }
};

// INVALID_ARGUMENT when only one of cert and key is given, or a client CA without them;
// NOT_FOUND / DATA_LOSS (naming the flag) when a file cannot be read; INVALID_ARGUMENT when one
// holds no PEM block.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& tls);

// One line for the startup log: "plaintext (no --tls_cert)", "TLS with FILE", or mutual TLS.
std::string DescribeTransport(const TlsFiles& tls);

}  // namespace glassbox
