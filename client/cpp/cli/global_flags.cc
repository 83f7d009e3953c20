#include "client/cpp/cli/global_flags.h"

#include <optional>
#include <utility>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "client/cpp/cli/errors.h"

namespace glassbox::cli {
namespace {

constexpr Flag kFlags[] = {
    {"help", FlagKind::kBool},
    {"server", FlagKind::kValue, "--server ADDR",
     "server address, host:port (default: $GLASSBOX_SERVER)"},
    {"api_key", FlagKind::kValue, "--api_key KEY",
     "API key, sent as \"authorization: Bearer KEY\" (default:\n$GLASSBOX_API_KEY)"},
    {"tls", FlagKind::kBool, "--tls", "connect with TLS, trusting the system's root certificates"},
    {"tls_root_cert", FlagKind::kValue, "--tls_root_cert FILE",
     "connect with TLS, trusting the root certificates in this PEM file"},
    {"tls_client_cert", FlagKind::kValue, "--tls_client_cert FILE",
     "with --tls_client_key: present this PEM certificate chain\n(servers that require client "
     "certificates)"},
    {"tls_client_key", FlagKind::kValue, "--tls_client_key FILE",
     "the PEM private key of --tls_client_cert"},
    {"timeout", FlagKind::kValue, "--timeout DURATION",
     "deadline of the call: seconds, or \"30s\", \"2m\" (default: none)"},
};

absl::StatusOr<absl::Duration> ParseTimeout(const std::string& text) {
  absl::Duration duration;
  double seconds;
  if (absl::SimpleAtod(text, &seconds)) {
    duration = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &duration)) {
    return UsageError(absl::StrFormat(
        "--timeout: \"%s\" is not a duration (seconds, or like \"30s\", \"2m\")", text));
  }
  if (duration <= absl::ZeroDuration()) return UsageError("--timeout must be positive");
  return duration;
}

}  // namespace

std::span<const Flag> GlobalFlags() { return kFlags; }

absl::Status ParseGlobalFlags(const RawCommandLine& raw, const Environment& env,
                              Invocation& invocation) {
  invocation.server = raw.Value("server").value_or(env.server.value_or(""));
  if (invocation.server.empty()) {
    return UsageError("--server ADDR is required (or set GLASSBOX_SERVER)");
  }
  client::ClientOptions& options = invocation.client;
  options.api_key = raw.Value("api_key").value_or(env.api_key.value_or(""));
  options.tls = raw.IsTrue("tls");
  if (std::optional<std::string> cert = raw.Value("tls_root_cert")) {
    if (cert->empty()) return UsageError("--tls_root_cert needs a file name");
    options.tls_root_cert_path = *cert;
    options.tls = true;
  }
  for (auto [flag, path] : {std::pair{"tls_client_cert", &options.tls_client_cert_path},
                            std::pair{"tls_client_key", &options.tls_client_key_path}}) {
    if (std::optional<std::string> value = raw.Value(flag)) {
      if (value->empty()) return UsageError(absl::StrCat("--", flag, " needs a file name"));
      *path = *value;
      options.tls = true;
    }
  }
  if (options.tls_client_cert_path.empty() != options.tls_client_key_path.empty()) {
    return UsageError("--tls_client_cert and --tls_client_key go together");
  }
  if (std::optional<std::string> timeout = raw.Value("timeout")) {
    GB_ASSIGN_OR_RETURN(options.deadline, ParseTimeout(*timeout));
  }
  return absl::OkStatus();
}

}  // namespace glassbox::cli
