// How the `glassbox` command line reports failures: its exit codes, usage errors, and the marks
// that tell a failure found on this side from the server's verdict on the request.
#pragma once

#include <ostream>
#include <string_view>

#include "absl/status/status.h"

namespace glassbox::cli {

// Exit codes, documented in UsageText() and client/cpp/README.md.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;        // anything else (local I/O, auth, internal)
inline constexpr int kExitUsage = 2;        // bad command line
inline constexpr int kExitBadRequest = 3;   // INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
                                            // OUT_OF_RANGE from the server
inline constexpr int kExitUnavailable = 4;  // UNAVAILABLE, DEADLINE_EXCEEDED
inline constexpr int kExitExhausted = 5;    // RESOURCE_EXHAUSTED

// A bad command line, found while parsing it: INVALID_ARGUMENT with a message for the user.
absl::Status UsageError(std::string_view message);

// Exit code for a failed command: by status code for the server's statuses, kExitError for
// failures on this side (marked with MarkLocal).
int ExitCodeForStatus(const absl::Status& status);
// Tags a status as a usage error found only after the command line was parsed (e.g. a
// --position past the end of a --text row once it is tokenized): exit code kExitUsage.
absl::Status MarkUsage(absl::Status status);
// Tags a status as a local failure (e.g. writing the output file), so that its code, which may
// be NOT_FOUND or the like, is not mistaken for the server's verdict on the request.
absl::Status MarkLocal(absl::Status status);
bool IsLocal(const absl::Status& status);

// Prints "glassbox: <CODE>: <message>" (no newline): how every error starts on stderr.
void PrintError(const absl::Status& status, std::ostream& err);
// PrintError with a newline; returns the exit code.
int Fail(const absl::Status& status, std::ostream& err);

}  // namespace glassbox::cli
