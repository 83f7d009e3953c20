// `glassbox detokenize MODEL ID[,ID...]`: the text of the token ids.
#include <ostream>
#include <string>
#include <vector>

#include "base/status_macros.h"
#include "client/cpp/cli/command.h"

namespace glassbox::cli {
namespace {

using glassbox::v1::DetokenizeRequest;

// Described in the synopsis.
constexpr Flag kFlags[] = {{"skip_special_tokens", FlagKind::kBool}};

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  DetokenizeRequest& request = invocation.request.emplace<DetokenizeRequest>();
  request.set_model(line.operands[0]);
  GB_ASSIGN_OR_RETURN(
      std::vector<int32_t> ids,
      ParseIntList("ids", std::vector<std::string>(line.operands.begin() + 1, line.operands.end()),
                   0));
  request.mutable_ids()->Add(ids.begin(), ids.end());
  request.set_skip_special_tokens(line.raw.IsTrue("skip_special_tokens"));
  return absl::OkStatus();
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  GB_ASSIGN_OR_RETURN(glassbox::v1::DetokenizeResponse response,
                      client.Detokenize(Request<DetokenizeRequest>(invocation)));
  out << response.text() << "\n";
  return absl::OkStatus();
}

}  // namespace

extern constinit const Command kDetokenizeCommand = {
    .name = "detokenize",
    .operands = 2,
    .more_operands = true,
    .brief = "detokenize MODEL ID[,ID...]",
    .synopsis = "detokenize MODEL ID[,ID...] [--skip_special_tokens]",
    .summary = "the text of comma-separated token ids",
    .flags = kFlags,
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
