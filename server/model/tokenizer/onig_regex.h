// Oniguruma regex wrapper. HF tokenizers compiles tokenizer.json patterns with the `onig` crate
// (Oniguruma, default syntax, no options, UTF-8), so running the same library the same way gives
// identical matches, including `\s+(?!\S)` lookahead and Unicode `\p{..}` classes.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace glassbox::tokenizer {

class OnigRegex {
 public:
  static absl::StatusOr<std::unique_ptr<OnigRegex>> Compile(std::string_view pattern);
  // A regex matching `literal` verbatim (HF escapes String patterns the same way).
  static absl::StatusOr<std::unique_ptr<OnigRegex>> CompileLiteral(std::string_view literal);
  ~OnigRegex();
  OnigRegex(const OnigRegex&) = delete;
  OnigRegex& operator=(const OnigRegex&) = delete;

  // Non-overlapping matches as byte ranges, with the onig crate's `find_iter` rules: each search
  // starts where the last match ended and sees the whole text (for lookbehind/anchors); an empty
  // match right after the previous match is skipped by advancing one character.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const;

  // Length of the match anchored at byte `at`, or -1 when none.
  long MatchAt(std::string_view text, size_t at) const;

  // Byte range of the leftmost match at or after `from`, or {npos, npos}.
  std::pair<size_t, size_t> SearchFrom(std::string_view text, size_t from) const;

  const std::string& pattern() const { return pattern_; }

 private:
  OnigRegex(void* regex, std::string pattern) : regex_(regex), pattern_(std::move(pattern)) {}
  void* regex_;  // OnigRegex; kept opaque so callers do not include oniguruma.h.
  std::string pattern_;
};

// Escapes regex metacharacters so that `literal` matches itself.
std::string EscapeRegexLiteral(std::string_view literal);

}  // namespace glassbox::tokenizer
