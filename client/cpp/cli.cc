#include "client/cpp/cli.h"

#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "client/cpp/cli/command.h"
#include "client/cpp/cli/flags.h"
#include "client/cpp/cli/global_flags.h"
#include "client/cpp/cli/registry.h"

namespace glassbox::cli {
namespace {

// "info takes 1 argument: glassbox info MODEL (got 2)" unless the count is right.
absl::Status CheckOperands(const Command& command, size_t given) {
  const size_t n = static_cast<size_t>(command.operands);
  if (given == n || (command.more_operands && given > n)) return absl::OkStatus();
  return UsageError(absl::StrFormat("%s takes %d argument%s: glassbox %s (got %d)", command.name,
                                    n, n == 1 ? "" : "s", command.brief, given));
}

}  // namespace

Environment EnvironmentFromProcess() {
  Environment env;
  if (const char* key = std::getenv("GLASSBOX_API_KEY"); key != nullptr && *key != '\0') {
    env.api_key = key;
  }
  if (const char* server = std::getenv("GLASSBOX_SERVER"); server != nullptr && *server != '\0') {
    env.server = server;
  }
  return env;
}

absl::StatusOr<Invocation> ParseCommandLine(const std::vector<std::string>& args,
                                            const Environment& env) {
  GB_ASSIGN_OR_RETURN(RawCommandLine raw, SplitCommandLine(args, &FindAnyFlag));
  Invocation invocation;  // the help command
  if (raw.IsTrue("help")) return invocation;
  if (raw.positional.empty()) {
    return UsageError(absl::StrCat("no command given (commands: ", CommandNames(), ")"));
  }
  const std::string& word = raw.positional.front();
  if (word == kHelpCommand) return invocation;
  const Command* command = FindCommand(word);
  if (command == nullptr) {
    return UsageError(
        absl::StrFormat("unknown command \"%s\" (commands: %s)", word, CommandNames()));
  }
  invocation.command = std::string(command->name);
  for (const auto& [name, values] : raw.flags) {
    if (!TakesFlag(*command, name)) {
      return UsageError(
          absl::StrFormat("--%s is not a flag of the %s command", name, command->name));
    }
  }
  GB_RETURN_IF_ERROR(ParseGlobalFlags(raw, env, invocation));
  const CommandLine line = {
      .command = command->name,
      .raw = raw,
      .operands = std::vector<std::string>(raw.positional.begin() + 1, raw.positional.end()),
      .env = env,
  };
  GB_RETURN_IF_ERROR(CheckOperands(*command, line.operands.size()));
  GB_RETURN_IF_ERROR(command->parse(line, invocation));
  return invocation;
}

int Execute(const Invocation& invocation, std::ostream& out, std::ostream& err) {
  if (invocation.command == kHelpCommand) {
    out << UsageText();
    return kExitOk;
  }
  const Command* command = FindCommand(invocation.command);
  GB_CHECK(command != nullptr, "no command \"%s\"", invocation.command.c_str());
  absl::StatusOr<std::unique_ptr<client::Client>> connected =
      client::Client::Connect(invocation.server, invocation.client);
  if (!connected.ok()) return Fail(MarkLocal(connected.status()), err);
  const absl::Status status = command->run(invocation, **connected, out, err);
  out.flush();
  if (!status.ok()) return Fail(status, err);
  return kExitOk;
}

int Main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<Invocation> invocation = ParseCommandLine(args, EnvironmentFromProcess());
  if (!invocation.ok()) {
    PrintError(invocation.status(), std::cerr);
    std::cerr << "\n\n"
              << Synopsis() << "\nRun 'glassbox --help' for all flags and the exit codes.\n";
    return kExitUsage;
  }
  invocation->progress_in_place = isatty(STDERR_FILENO) == 1;
  return Execute(*invocation, std::cout, std::cerr);
}

}  // namespace glassbox::cli
