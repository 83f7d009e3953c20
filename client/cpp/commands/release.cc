// `glassbox release NAME`: frees a cached run now.
#include <ostream>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "client/cpp/cli/command.h"

namespace glassbox::cli {
namespace {

using glassbox::v1::ReleaseCachedRunRequest;

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  invocation.request.emplace<ReleaseCachedRunRequest>().set_name(line.operands[0]);
  return absl::OkStatus();
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  const std::string& name = Request<ReleaseCachedRunRequest>(invocation).name();
  GB_ASSIGN_OR_RETURN(int64_t bytes, client.ReleaseCachedRun(name));
  out << absl::StrFormat("released cached run \"%s\" (%d bytes)\n", name, bytes);
  return absl::OkStatus();
}

}  // namespace

extern constinit const Command kReleaseCommand = {
    .name = "release",
    .operands = 1,
    .brief = "release NAME",
    .synopsis = "release NAME",
    .summary = "free a cached run now",
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
