// `glassbox cached`: the runs kept on the server (run --cache_as), their bytes and expiry.
#include <algorithm>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/table.h"

namespace glassbox::cli {
namespace {

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  invocation.request = glassbox::v1::ListCachedRunsRequest();
  return absl::OkStatus();
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  GB_ASSIGN_OR_RETURN(glassbox::v1::ListCachedRunsResponse response, client.ListCachedRuns());
  out << absl::StrFormat("%d cached runs, %d of %d bytes, at most %d runs\n", response.runs_size(),
                         response.used_bytes(), response.max_bytes(), response.max_entries());
  if (response.runs().empty()) return absl::OkStatus();
  // A server with API keys says whose each run is (an admin key lists every key's, which it
  // names as OWNER/NAME); without keys the column would be empty.
  const bool owners = std::any_of(response.runs().begin(), response.runs().end(),
                                  [](const auto& run) { return !run.owner().empty(); });
  std::vector<std::vector<std::string>> table = {
      {"name", "model", "rows", "bytes", "expires", "hooks"}};
  if (owners) table[0].insert(table[0].begin(), "owner");
  for (const glassbox::v1::CachedRunInfo& run : response.runs()) {
    table.push_back({run.name(), run.model(), absl::StrCat(run.sequence_lengths_size()),
                     absl::StrCat(run.nbytes()),
                     absl::FormatTime(absl::FromUnixMillis(run.expires_unix_ms())),
                     absl::StrJoin(run.hooks(), ",")});
    if (owners) table.back().insert(table.back().begin(), run.owner());
  }
  PrintTable(table, out, 2, "");
  return absl::OkStatus();
}

}  // namespace

extern constinit const Command kCachedCommand = {
    .name = "cached",
    .brief = "cached",
    .synopsis = "cached",
    .summary = "list the runs kept on the server (run --cache_as), their bytes and expiry",
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
