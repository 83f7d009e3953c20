#include "client/cpp/cli/flags.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/status_macros.h"
#include "client/cpp/cli/errors.h"

namespace glassbox::cli {
namespace {

absl::string_view View(std::string_view text) { return {text.data(), text.size()}; }

absl::StatusOr<bool> ParseBool(std::string_view flag, std::string_view text) {
  const std::string lower = absl::AsciiStrToLower(View(text));
  if (lower == "true" || lower == "1" || lower == "yes") return true;
  if (lower == "false" || lower == "0" || lower == "no") return false;
  return UsageError(absl::StrFormat("--%s: \"%s\" is not true or false", flag, text));
}

// "-1" and "-" are values, not flags.
bool IsFlag(const std::string& arg) {
  return arg.size() >= 2 && arg[0] == '-' &&
         (absl::ascii_isalpha(arg[1]) ||
          (arg[1] == '-' && arg.size() > 2 && absl::ascii_isalpha(arg[2])));
}

}  // namespace

std::optional<std::string> RawCommandLine::Value(std::string_view name) const {
  auto it = flags.find(name);
  if (it == flags.end()) return std::nullopt;
  return it->second.back();
}

std::vector<std::string> RawCommandLine::Values(std::string_view name) const {
  auto it = flags.find(name);
  return it == flags.end() ? std::vector<std::string>() : it->second;
}

absl::StatusOr<RawCommandLine> SplitCommandLine(const std::vector<std::string>& args,
                                                const Flag* (*find)(std::string_view name)) {
  RawCommandLine raw;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      raw.positional.insert(raw.positional.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (!IsFlag(arg)) {
      raw.positional.push_back(arg);
      continue;
    }
    std::string_view body = arg;
    body.remove_prefix(arg[1] == '-' ? 2 : 1);
    std::optional<std::string> inline_value;
    if (size_t eq = body.find('='); eq != std::string_view::npos) {
      inline_value = std::string(body.substr(eq + 1));
      body = body.substr(0, eq);
    }
    // --clean-text and --clean_text are the same flag.
    std::string name(body);
    std::replace(name.begin(), name.end(), '-', '_');
    if (name == "h") name = "help";
    const Flag* flag = find(name);
    bool negated = false;
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      std::string_view positive_name = std::string_view(name).substr(2);
      if (!positive_name.empty() && positive_name[0] == '_') positive_name.remove_prefix(1);
      const Flag* positive = find(positive_name);
      if (positive != nullptr && positive->kind == FlagKind::kBool) {
        flag = positive;
        negated = true;
        name = std::string(positive->name);
      }
    }
    if (flag == nullptr) return UsageError(absl::StrFormat("unknown flag %s", arg));
    std::string value;
    if (flag->kind == FlagKind::kBool) {
      bool on = !negated;
      if (inline_value.has_value()) {
        if (negated) return UsageError(absl::StrFormat("%s takes no value", arg));
        GB_ASSIGN_OR_RETURN(on, ParseBool(name, *inline_value));
      }
      value = on ? "true" : "false";
    } else if (inline_value.has_value()) {
      value = *inline_value;
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return UsageError(absl::StrFormat("--%s needs a value", name));
    }
    raw.flags[name].push_back(std::move(value));
  }
  return raw;
}

absl::StatusOr<int64_t> ParseInt(std::string_view flag, std::string_view text, int64_t min,
                                 int64_t max) {
  int64_t value;
  if (!absl::SimpleAtoi(View(text), &value)) {
    return UsageError(absl::StrFormat("--%s: \"%s\" is not an integer", flag, text));
  }
  if (value < min || value > max) {
    return UsageError(absl::StrFormat("--%s: %d is out of range [%d, %d]", flag, value, min, max));
  }
  return value;
}

absl::StatusOr<std::vector<int32_t>> ParseIntList(std::string_view flag,
                                                  const std::vector<std::string>& texts,
                                                  int64_t min) {
  std::vector<int32_t> values;
  for (const std::string& text : texts) {
    for (absl::string_view piece : absl::StrSplit(text, ',')) {
      piece = absl::StripAsciiWhitespace(piece);
      if (piece.empty()) {
        return UsageError(absl::StrFormat("--%s: \"%s\" has an empty entry", flag, text));
      }
      GB_ASSIGN_OR_RETURN(
          int64_t value,
          ParseInt(flag, std::string_view(piece.data(), piece.size()), min, INT32_MAX));
      values.push_back(static_cast<int32_t>(value));
    }
  }
  return values;
}

absl::StatusOr<int32_t> ParseInt32Flag(const RawCommandLine& raw, std::string_view flag,
                                       std::string_view fallback, int64_t min, int64_t max) {
  const std::optional<std::string> text = raw.Value(flag);
  GB_ASSIGN_OR_RETURN(int64_t value,
                      ParseInt(flag, text.has_value() ? *text : fallback, min, max));
  return static_cast<int32_t>(value);
}

}  // namespace glassbox::cli
