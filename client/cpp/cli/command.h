// One `glassbox` command as the registry (registry.h) knows it: its name, its entries in the
// usage text, its flags, how it turns the command line into a request and how it runs it.
// Each command is defined in its own file under client/cpp/commands/.
#pragma once

#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "client/cpp/cli/flags.h"
#include "client/cpp/cli/invocation.h"
#include "client/cpp/glassbox_client.h"

namespace glassbox::cli {

// What a command parses: the flags as given (only its own and the global ones) and the
// operands after the command word (as many as the command declares).
struct CommandLine {
  std::string_view command;  // the command's name, for messages
  const RawCommandLine& raw;
  std::vector<std::string> operands;
  const Environment& env;
};

struct Command {
  std::string_view name;
  std::span<const std::string_view> aliases = {};  // other spellings: logit_lens
  // The number of operands after the command word (at least that many with more_operands),
  // and the usage shown when the count is wrong: "info MODEL".
  int operands = 0;
  bool more_operands = false;
  std::string_view brief;
  // The command's lines under "Usage:", after "glassbox [global flags] ": the first starts with
  // the name; the others are indented to the column after the name.
  std::string_view synopsis;
  // Its entry under "Commands:"; lines after the first are indented to the first's column.
  std::string_view summary;
  // Its flags (the global ones apply to every command), and their section of the usage text:
  // the heading ("" = no section), the flags that have a form, then `notes` as they are.
  std::span<const Flag> flags = {};
  std::string_view flags_heading = "";
  std::string_view flags_notes = "";
  // UsageText() lists the synopses and the flag sections in registry order, stably sorted by
  // these ranks: the usage text has always listed sae-encode's synopsis last, and the
  // attn-norms flags after the sae-encode ones.
  int synopsis_rank = 0;
  int flags_rank = 0;
  // Fills the invocation's request and display options from the command line; errors are usage
  // errors (errors.h).
  absl::Status (*parse)(const CommandLine& line, Invocation& invocation);
  // Sends the request and prints the answer on `out` (warnings on `err`); a local failure is
  // marked with MarkLocal, a usage error found only now with MarkUsage.
  absl::Status (*run)(const Invocation& invocation, client::Client& client, std::ostream& out,
                      std::ostream& err);
};

}  // namespace glassbox::cli
