// The flags every command takes: --server, --api_key, --tls, --tls_root_cert, --timeout, and
// --help (which prints the usage text whatever the command).
#pragma once

#include <span>

#include "absl/status/status.h"
#include "client/cpp/cli/flags.h"
#include "client/cpp/cli/invocation.h"

namespace glassbox::cli {

// In the order of the usage text's "Global flags:" section.
std::span<const Flag> GlobalFlags();

// The column of the help beside each global flag in the usage text.
inline constexpr size_t kGlobalFlagsColumn = 24;

// Where and how to connect: invocation.server and invocation.client from the flags, falling
// back on the environment.
absl::Status ParseGlobalFlags(const RawCommandLine& raw, const Environment& env,
                              Invocation& invocation);

}  // namespace glassbox::cli
