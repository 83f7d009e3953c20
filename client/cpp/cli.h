// The `glassbox` command line: parsing (a pure function, tested without a server), execution
// against a server, and the mapping of statuses to exit codes.
//
// Each command lives in its own file under commands/ and is listed in cli/registry.cc; the
// pieces they share (flags, rows, tables, token labels, --out files, the usage text) are in
// cli/. This header is the CLI's public face.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/cpp/cli/errors.h"           // kExit*, ExitCodeForStatus, MarkUsage, MarkLocal
#include "client/cpp/cli/invocation.h"       // Invocation, Request<T>, Environment
#include "client/cpp/cli/run_safetensors.h"  // WriteRunSafetensors
#include "client/cpp/cli/tokens.h"           // QuoteToken
#include "client/cpp/cli/usage.h"            // UsageText
#include "client/cpp/commands/patch_spec.h"  // ParseSweepKind, ParsePatchingMetric, ...

namespace glassbox::cli {

// Parses the arguments after the program name. Any error is INVALID_ARGUMENT with a message fit
// for the user (the caller prints it with the usage and exits with kExitUsage).
absl::StatusOr<Invocation> ParseCommandLine(const std::vector<std::string>& args,
                                            const Environment& env);

// Runs a parsed command; results go to `out`, "glassbox: <CODE>: <message>" errors to `err`.
// Returns the exit code.
int Execute(const Invocation& invocation, std::ostream& out, std::ostream& err);

// The whole program: parse, print usage on errors, execute.
int Main(int argc, char** argv);

}  // namespace glassbox::cli
