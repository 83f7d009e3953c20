// Every `glassbox` command, and the lookups the parser and the usage text need.
//
// Adding a command: a file under client/cpp/commands/ that defines its Command (command.h), and
// its line in registry.cc. Nothing else names the commands.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "client/cpp/cli/command.h"
#include "client/cpp/cli/flags.h"

namespace glassbox::cli {

// In the order of the usage text's "Commands:" list.
std::span<const Command* const> Commands();

// The command of that name or alias; nullptr if none.
const Command* FindCommand(std::string_view word);

// A global flag or a flag of any command, by name; nullptr if none. For splitting the command
// line before the command is known.
const Flag* FindAnyFlag(std::string_view name);

// Whether `command` takes the flag: a global one or one of its own.
bool TakesFlag(const Command& command, std::string_view name);

// "models, info, ..." for messages.
std::string CommandNames();

}  // namespace glassbox::cli
