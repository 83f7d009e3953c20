#include "client/cpp/cli/usage.h"

#include <algorithm>
#include <span>
#include <string_view>
#include <vector>

#include "absl/strings/str_split.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/global_flags.h"
#include "client/cpp/cli/registry.h"

namespace glassbox::cli {
namespace {

constexpr char kTitle[] =
    "glassbox: command-line client of a Glassbox interpretability server (glassboxd).\n\n";
constexpr char kSynopsisPrefix[] = "  glassbox [global flags] ";

constexpr char kNotesAndExitCodes[] = R"(
logit-lens, dla and attn-norms tokenize --text rows first (Tokenize) and send the ids; their
--out files also hold "input_ids" and "sequence_lengths". Flags may be written with - or _
(--clean-text = --clean_text).

Exit codes:
  0  success
  1  any other failure (writing the output file, authentication, a malformed response, ...),
     and a scan job that failed or was cancelled (scan, job watch)
  2  usage error: the command line is wrong (including an --intervene SPEC or value file that
     cannot be read, or a --position outside a row)
  3  the server rejected the request: INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION or
     OUT_OF_RANGE (unknown model or hook, token id out of range, ...)
  4  the server could not be reached or did not answer in time: UNAVAILABLE,
     DEADLINE_EXCEEDED
  5  the request is over one of the server's limits: RESOURCE_EXHAUSTED
Errors are printed on stderr as "glassbox: <CODE>: <message>".
)";

// `first` then `lines`' first line; every further line on its own, after `indent` spaces.
void AppendLines(std::string& text, std::string_view first, size_t indent,
                 std::string_view lines) {
  text += first;
  bool continued = false;
  for (absl::string_view line : absl::StrSplit(absl::string_view(lines.data(), lines.size()),
                                               '\n')) {
    if (continued) text.append("\n").append(indent, ' ');
    text.append(line.data(), line.size());
    continued = true;
  }
  text += "\n";
}

// The flags that have a form, one entry each: the form, then the help from `column` on (on the
// next line when the form leaves no two spaces before it).
void AppendFlags(std::string& text, std::span<const Flag> flags, size_t column) {
  for (const Flag& flag : flags) {
    if (flag.form.empty()) continue;
    std::string entry = "  " + std::string(flag.form);
    if (flag.help.empty()) {
      text += entry + "\n";
      continue;
    }
    if (entry.size() + 2 <= column) {
      entry.resize(column, ' ');
    } else {
      entry.append("\n").append(column, ' ');
    }
    AppendLines(text, entry, column, flag.help);
  }
}

// The commands in registry order, stably sorted by `rank`.
std::vector<const Command*> RankedCommands(int Command::*rank) {
  std::vector<const Command*> commands(Commands().begin(), Commands().end());
  std::stable_sort(commands.begin(), commands.end(),
                   [&](const Command* a, const Command* b) { return a->*rank < b->*rank; });
  return commands;
}

}  // namespace

std::string Synopsis() {
  std::string text = "Usage:\n";
  const size_t prefix = std::string_view(kSynopsisPrefix).size();
  for (const Command* command : RankedCommands(&Command::synopsis_rank)) {
    AppendLines(text, kSynopsisPrefix, prefix + command->name.size() + 1, command->synopsis);
  }
  text += "  glassbox --help\n";
  return text;
}

std::string UsageText() {
  std::string text = kTitle + Synopsis() + "\nCommands:\n";
  size_t width = 0;
  for (const Command* command : Commands()) width = std::max(width, command->name.size());
  for (const Command* command : Commands()) {
    std::string name = "  " + std::string(command->name);
    name.resize(2 + width + 2, ' ');
    AppendLines(text, name, name.size(), command->summary);
  }
  text += "\nGlobal flags:\n";
  AppendFlags(text, GlobalFlags(), kGlobalFlagsColumn);
  for (const Command* command : RankedCommands(&Command::flags_rank)) {
    if (command->flags_heading.empty()) continue;
    text.append("\n").append(command->flags_heading).append("\n");
    AppendFlags(text, command->flags, kCommandFlagsColumn);
    text += command->flags_notes;
  }
  text += kNotesAndExitCodes;
  return text;
}

}  // namespace glassbox::cli
