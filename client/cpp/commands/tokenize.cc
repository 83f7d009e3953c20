// `glassbox tokenize MODEL TEXT`: token ids and their strings, one per line.
#include <optional>
#include <ostream>
#include <string>

#include "base/status_macros.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/rows.h"
#include "client/cpp/cli/tokens.h"

namespace glassbox::cli {
namespace {

using glassbox::v1::TokenizeRequest;

// Described in the synopsis.
constexpr Flag kFlags[] = {kPrependBosFlag, {"split_special_tokens", FlagKind::kBool}};

absl::Status Parse(const CommandLine& line, Invocation& invocation) {
  TokenizeRequest& request = invocation.request.emplace<TokenizeRequest>();
  request.set_model(line.operands[0]);
  request.set_text(line.operands[1]);
  if (std::optional<std::string> bos = line.raw.Value("prepend_bos")) {
    request.set_prepend_bos(*bos == "true");
  }
  request.set_split_special_tokens(line.raw.IsTrue("split_special_tokens"));
  return absl::OkStatus();
}

absl::Status Run(const Invocation& invocation, client::Client& client, std::ostream& out,
                 std::ostream& err) {
  GB_ASSIGN_OR_RETURN(glassbox::v1::TokenizeResponse response,
                      client.Tokenize(Request<TokenizeRequest>(invocation)));
  for (int i = 0; i < response.ids_size(); ++i) {
    out << response.ids(i);
    if (i < response.str_tokens_size()) out << " " << QuoteToken(response.str_tokens(i));
    out << "\n";
  }
  return absl::OkStatus();
}

}  // namespace

extern constinit const Command kTokenizeCommand = {
    .name = "tokenize",
    .operands = 2,
    .brief = "tokenize MODEL TEXT",
    .synopsis = "tokenize MODEL TEXT [--prepend_bos | --noprepend_bos]\n"
                "           [--split_special_tokens]",
    .summary = "token ids and their strings, one per line: 15496 'Hello'",
    .flags = kFlags,
    .parse = Parse,
    .run = Run,
};

}  // namespace glassbox::cli
