#include "client/cpp/cli/registry.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_join.h"
#include "client/cpp/cli/global_flags.h"

namespace glassbox::cli {

// One line per command (each defined in client/cpp/commands/), in the order of the usage text's
// command list.
extern const Command kModelsCommand, kInfoCommand, kTokenizeCommand, kDetokenizeCommand,
    kRunCommand, kGenerateCommand, kPatchCommand, kAttribPatchCommand, kLogitLensCommand, kGradCommand, kIgCommand, kLreCommand, kDlaCommand, kAttnNormsCommand, kSaesCommand,
    kSaeEncodeCommand, kCachedCommand, kReleaseCommand, kQueueCommand, kScanCommand, kJobCommand;

namespace {

constexpr const Command* kCommands[] = {
    &kModelsCommand,
    &kInfoCommand,
    &kTokenizeCommand,
    &kDetokenizeCommand,
    &kRunCommand,
    &kGenerateCommand,
    &kPatchCommand,
    &kAttribPatchCommand,
    &kLogitLensCommand,
    &kGradCommand,
    &kIgCommand,
    &kLreCommand,
    &kDlaCommand,
    &kAttnNormsCommand,
    &kSaesCommand,
    &kSaeEncodeCommand,
    &kCachedCommand,
    &kReleaseCommand,
    &kQueueCommand,
    &kScanCommand,
    &kJobCommand,
};

const Flag* FindIn(std::span<const Flag> flags, std::string_view name) {
  auto it = std::find_if(flags.begin(), flags.end(),
                         [&](const Flag& flag) { return flag.name == name; });
  return it == flags.end() ? nullptr : &*it;
}

}  // namespace

std::span<const Command* const> Commands() { return kCommands; }

const Command* FindCommand(std::string_view word) {
  for (const Command* command : kCommands) {
    if (command->name == word ||
        std::find(command->aliases.begin(), command->aliases.end(), word) !=
            command->aliases.end()) {
      return command;
    }
  }
  return nullptr;
}

const Flag* FindAnyFlag(std::string_view name) {
  if (const Flag* flag = FindIn(GlobalFlags(), name)) return flag;
  for (const Command* command : kCommands) {
    if (const Flag* flag = FindIn(command->flags, name)) return flag;
  }
  return nullptr;
}

bool TakesFlag(const Command& command, std::string_view name) {
  return FindIn(GlobalFlags(), name) != nullptr || FindIn(command.flags, name) != nullptr;
}

std::string CommandNames() {
  std::vector<std::string> names;
  for (const Command* command : kCommands) names.emplace_back(command->name);
  return absl::StrJoin(names, ", ");
}

}  // namespace glassbox::cli
