// The flags of the `glassbox` command line: how a command declares one, how the arguments are
// split into flags and operands before any command interprets them, and the number parsers
// every command's flags share. Errors are usage errors (errors.h) naming the flag.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace glassbox::cli {

enum class FlagKind {
  kValue,     // --name VALUE or --name=VALUE; the last occurrence wins
  kRepeated,  // as kValue, every occurrence kept
  kBool,      // --name, --noname, --name=true|false
};

// A flag a command accepts, and its entry in the usage text: `form` ("--top_k N") in the left
// column, `help` beside it (lines after the first indented to the column). A flag with an empty
// form is accepted but not listed under its command (the row inputs of the analyses, described
// with the run flags). Flags of the same name in several commands must have the same kind: the
// command line is split before the command is known.
struct Flag {
  std::string_view name;  // as the command line spells it after "--", with '_' ("clean_text")
  FlagKind kind = FlagKind::kValue;
  std::string_view form = "";
  std::string_view help = "";
};

// The command line as given, before interpretation: every flag's values by name (kBool ones
// as "true" or "false") and the positional arguments in order (the command word first).
struct RawCommandLine {
  std::map<std::string, std::vector<std::string>, std::less<>> flags;
  std::vector<std::string> positional;

  bool Has(std::string_view name) const { return flags.find(name) != flags.end(); }
  // The last value of the flag, if given.
  std::optional<std::string> Value(std::string_view name) const;
  // Every value of the flag, in order; empty if not given.
  std::vector<std::string> Values(std::string_view name) const;
  // A kBool flag: true when given as --name or --name=true.
  bool IsTrue(std::string_view name) const { return Value(name) == "true"; }
};

// Splits `args` (the arguments after the program name) into flags and positionals. `find`
// looks a flag up by name (nullptr: no such flag). "--" ends the flags; "-1" and "-" are
// positionals; --clean-text is --clean_text; -h is --help; --noNAME and --no_NAME negate a
// kBool flag.
absl::StatusOr<RawCommandLine> SplitCommandLine(const std::vector<std::string>& args,
                                                const Flag* (*find)(std::string_view name));

// An integer in [min, max], the value of --FLAG.
absl::StatusOr<int64_t> ParseInt(std::string_view flag, std::string_view text, int64_t min,
                                 int64_t max);
// "1,2,3" (several occurrences concatenate), each in [min, INT32_MAX].
absl::StatusOr<std::vector<int32_t>> ParseIntList(std::string_view flag,
                                                  const std::vector<std::string>& texts,
                                                  int64_t min = INT32_MIN);
// The value of --FLAG as an int32 in [min, max], `fallback` when it is not given.
absl::StatusOr<int32_t> ParseInt32Flag(const RawCommandLine& raw, std::string_view flag,
                                       std::string_view fallback, int64_t min,
                                       int64_t max = INT32_MAX);

}  // namespace glassbox::cli
