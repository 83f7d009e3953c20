#include "client/cpp/cli/errors.h"

#include "absl/strings/cord.h"

namespace glassbox::cli {
namespace {

constexpr char kLocalPayloadUrl[] = "type.glassbox.dev/glassbox.cli.local";
constexpr char kUsagePayloadUrl[] = "type.glassbox.dev/glassbox.cli.usage";

}  // namespace

absl::Status UsageError(std::string_view message) {
  return absl::InvalidArgumentError(absl::string_view(message.data(), message.size()));
}

absl::Status MarkLocal(absl::Status status) {
  if (!status.ok()) status.SetPayload(kLocalPayloadUrl, absl::Cord("1"));
  return status;
}

bool IsLocal(const absl::Status& status) { return status.GetPayload(kLocalPayloadUrl).has_value(); }

absl::Status MarkUsage(absl::Status status) {
  if (!status.ok()) status.SetPayload(kUsagePayloadUrl, absl::Cord("1"));
  return status;
}

int ExitCodeForStatus(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  if (status.GetPayload(kUsagePayloadUrl).has_value()) return kExitUsage;
  if (IsLocal(status)) return kExitError;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return kExitBadRequest;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kExitUnavailable;
    case absl::StatusCode::kResourceExhausted:
      return kExitExhausted;
    default:
      return kExitError;
  }
}

void PrintError(const absl::Status& status, std::ostream& err) {
  err << "glassbox: " << absl::StatusCodeToString(status.code()) << ": " << status.message();
}

int Fail(const absl::Status& status, std::ostream& err) {
  PrintError(status, err);
  err << "\n";
  return ExitCodeForStatus(status);
}

}  // namespace glassbox::cli
