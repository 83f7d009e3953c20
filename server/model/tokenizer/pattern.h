// Patterns of Split pre-tokenizers and Replace normalizers/decoders ({"String": s} or
// {"Regex": r} in tokenizer.json), and HF's SplitDelimiterBehavior. HF compiles both kinds with
// Oniguruma (String patterns escaped), so both run on OnigRegex here.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/model/tokenizer/onig_regex.h"

namespace glassbox::tokenizer {

// A piece of the input: the matches of a pattern and the text between them.
struct Segment {
  size_t start;
  size_t end;
  bool is_match;
};

class Pattern {
 public:
  // {"String": "..."} or {"Regex": "..."}. May throw nlohmann::json::exception.
  static absl::StatusOr<std::unique_ptr<Pattern>> FromJson(const nlohmann::json& j);
  static absl::StatusOr<std::unique_ptr<Pattern>> FromRegex(std::string_view regex);
  static absl::StatusOr<std::unique_ptr<Pattern>> FromLiteral(std::string_view literal);

  // HF's Pattern::find_matches: segments covering all of `text` in order (one non-match
  // segment for empty text).
  std::vector<Segment> FindSegments(std::string_view text, bool invert = false) const;
  // Replaces every match with `content`.
  std::string Replace(std::string_view text, std::string_view content) const;

 private:
  explicit Pattern(std::unique_ptr<OnigRegex> regex) : regex_(std::move(regex)) {}
  std::unique_ptr<OnigRegex> regex_;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

absl::StatusOr<SplitBehavior> SplitBehaviorFromName(std::string_view name);

// Byte ranges to keep after splitting by `segments` with `behavior` (NormalizedString::split).
// Empty ranges may be returned; callers drop them as PreTokenizedString does.
std::vector<std::pair<size_t, size_t>> ApplySplitBehavior(const std::vector<Segment>& segments,
                                                          SplitBehavior behavior);

}  // namespace glassbox::tokenizer
