#include "server/service/server_credentials.h"

#include <grpcpp/security/server_credentials.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/file.h"
#include "base/status_macros.h"

namespace glassbox {
namespace {

// The file's text, checked to hold a PEM block, with the flag named in any error.
absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat("--", flag, ": ", text.status().message()));
  }
  if (!absl::StrContains(*text, "-----BEGIN ")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", path, " holds no PEM block (\"-----BEGIN ...\")"));
  }
  return *std::move(text);
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  if (tls.cert.empty() || tls.key.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both --tls_cert (the server's certificate chain) and --tls_key (its private "
        "key); --tls_client_ca alone cannot serve TLS");
  }
  grpc::SslServerCredentialsOptions options(
      tls.client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                            : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  GB_ASSIGN_OR_RETURN(pair.cert_chain, ReadPem("tls_cert", tls.cert));
  GB_ASSIGN_OR_RETURN(pair.private_key, ReadPem("tls_key", tls.key));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!tls.client_ca.empty()) {
    GB_ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem("tls_client_ca", tls.client_ca));
  }
  return grpc::SslServerCredentials(options);
}

std::string DescribeTransport(const TlsFiles& tls) {
  if (!tls.enabled()) return "plaintext (no --tls_cert): use TLS on any network you do not trust";
  if (tls.client_ca.empty()) return absl::StrCat("TLS with ", tls.cert);
  return absl::StrCat("mutual TLS with ", tls.cert, "; client certificates must chain to ",
                      tls.client_ca);
}

}  // namespace glassbox
