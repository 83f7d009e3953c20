#include "server/model/tokenizer/pattern.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/model/tokenizer/string_view_compat.h"

namespace glassbox::tokenizer {

absl::StatusOr<std::unique_ptr<Pattern>> Pattern::FromJson(const nlohmann::json& j) {
  if (j.is_object() && j.contains("String")) {
    return FromLiteral(j.at("String").get<std::string>());
  }
  if (j.is_object() && j.contains("Regex")) return FromRegex(j.at("Regex").get<std::string>());
  return absl::InvalidArgumentError(
      absl::StrCat("pattern must be {\"String\": ...} or {\"Regex\": ...}, got ", j.dump()));
}

absl::StatusOr<std::unique_ptr<Pattern>> Pattern::FromRegex(std::string_view regex) {
  GB_ASSIGN_OR_RETURN(auto compiled, OnigRegex::Compile(regex));
  return std::unique_ptr<Pattern>(new Pattern(std::move(compiled)));
}

absl::StatusOr<std::unique_ptr<Pattern>> Pattern::FromLiteral(std::string_view literal) {
  GB_ASSIGN_OR_RETURN(auto compiled, OnigRegex::CompileLiteral(literal));
  return std::unique_ptr<Pattern>(new Pattern(std::move(compiled)));
}

std::vector<Segment> Pattern::FindSegments(std::string_view text, bool invert) const {
  std::vector<Segment> out;
  if (text.empty()) {
    out.push_back(Segment{0, 0, invert});
    return out;
  }
  size_t prev = 0;
  for (const auto& [start, end] : regex_->FindAll(text)) {
    if (prev != start) out.push_back(Segment{prev, start, invert});
    out.push_back(Segment{start, end, !invert});
    prev = end;
  }
  if (prev != text.size()) out.push_back(Segment{prev, text.size(), invert});
  return out;
}

std::string Pattern::Replace(std::string_view text, std::string_view content) const {
  std::string out;
  out.reserve(text.size());
  size_t prev = 0;
  for (const auto& [start, end] : regex_->FindAll(text)) {
    out.append(text.substr(prev, start - prev));
    out.append(content);
    prev = end;
  }
  out.append(text.substr(prev));
  return out;
}

absl::StatusOr<SplitBehavior> SplitBehaviorFromName(std::string_view name) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return absl::InvalidArgumentError(absl::StrCat("unknown split behavior '", AsAbsl(name), "'"));
}

std::vector<std::pair<size_t, size_t>> ApplySplitBehavior(const std::vector<Segment>& segments,
                                                          SplitBehavior behavior) {
  std::vector<std::pair<size_t, size_t>> out;
  out.reserve(segments.size());
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Segment& s : segments) out.emplace_back(s.start, s.end);
      break;
    case SplitBehavior::kRemoved:
      for (const Segment& s : segments) {
        if (!s.is_match) out.emplace_back(s.start, s.end);
      }
      break;
    case SplitBehavior::kContiguous:
      for (const Segment& s : segments) {
        if (s.is_match == previous_match && !out.empty()) {
          out.back().second = s.end;
        } else {
          out.emplace_back(s.start, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !out.empty()) {
          out.back().second = s.end;
        } else {
          out.emplace_back(s.start, s.end);
        }
        previous_match = s.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      // HF folds from the right, then reverses.
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().first = it->start;
        } else {
          out.emplace_back(it->start, it->end);
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
  }
  return out;
}

}  // namespace glassbox::tokenizer
