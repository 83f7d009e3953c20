// `glassbox queue`: what the server's device is running and has queued (owner, RPC, tokens, wait)
// and what each key has used. Admin keys only on a server with API keys.
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/table.h"

namespace glassbox::cli {
namespace {

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  invocation.request = glassbox::v1::GetQueueRequest();
  return absl::OkStatus();
}

std::vector<std::string> Row(const char* state, const glassbox::v1::QueuedRequest& r) {
  return {state,
          r.owner().empty() ? "-" : r.owner(),
          r.rpc(),
          r.model(),
          absl::StrCat(r.tokens()),
          absl::StrFormat("%.3f", r.waited_seconds()),
          r.batchable() ? "yes" : "no"};
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  GB_ASSIGN_OR_RETURN(glassbox::v1::GetQueueResponse response, client.GetQueue());
  out << absl::StrFormat("%d running, %d queued; %d passes ran %d requests (at most %d in one)\n",
                         response.running_size(), response.queued_size(), response.passes(),
                         response.requests_run(), response.largest_batch());
  if (response.running_size() + response.queued_size() > 0) {
    std::vector<std::vector<std::string>> table = {
        {"state", "owner", "rpc", "model", "tokens", "waited_s", "batchable"}};
    for (const auto& r : response.running()) table.push_back(Row("running", r));
    for (const auto& r : response.queued()) table.push_back(Row("queued", r));
    PrintTable(table, out, 2, "");
  }
  if (!response.usage().empty()) {
    out << "\n";
    std::vector<std::vector<std::string>> usage = {
        {"key", "in_flight", "queued", "tokens_24h", "cached_bytes"}};
    for (const auto& u : response.usage()) {
      usage.push_back({u.name().empty() ? "-" : u.name(), absl::StrCat(u.runs_in_flight()),
                       absl::StrCat(u.queued()), absl::StrCat(u.tokens_last_day()),
                       absl::StrCat(u.cached_bytes())});
    }
    PrintTable(usage, out, 2, "");
  }
  return absl::OkStatus();
}

}  // namespace

extern constinit const Command kQueueCommand = {
    .name = "queue",
    .brief = "queue",
    .synopsis = "queue",
    .summary = "what the device runs and has queued, and each key's usage (admin keys)",
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
