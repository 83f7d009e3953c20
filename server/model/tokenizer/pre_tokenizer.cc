#include "server/model/tokenizer/pre_tokenizer.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/model/tokenizer/byte_level.h"
#include "server/model/tokenizer/pattern.h"

namespace glassbox::tokenizer {
namespace {

// GPT-2's split regex, as HF's ByteLevel pre-tokenizer hard-codes it.
constexpr char kGpt2Regex[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Splits every piece by `split_fn(text) -> ranges`, keeping non-empty ranges.
template <typename SplitFn>
void SplitPieces(std::vector<PreToken>* pieces, SplitFn split_fn) {
  std::vector<PreToken> out;
  out.reserve(pieces->size());
  for (PreToken& piece : *pieces) {
    for (const auto& [start, end] : split_fn(piece.text)) {
      if (start == end) continue;
      out.push_back(PreToken{piece.text.substr(start, end - start), piece.at_start && start == 0});
    }
  }
  *pieces = std::move(out);
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Pattern> pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void PreTokenize(std::vector<PreToken>* pieces) const override {
    SplitPieces(pieces, [this](const std::string& text) {
      return ApplySplitBehavior(pattern_->FindSegments(text, invert_), behavior_);
    });
  }

 private:
  std::unique_ptr<Pattern> pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(std::unique_ptr<Pattern> regex, bool add_prefix_space)
      : regex_(std::move(regex)), add_prefix_space_(add_prefix_space) {}
  void PreTokenize(std::vector<PreToken>* pieces) const override {
    if (add_prefix_space_) {
      for (PreToken& p : *pieces) {
        if (p.text.empty() || p.text[0] != ' ') p.text.insert(0, " ");
      }
    }
    if (regex_ != nullptr) {
      SplitPieces(pieces, [this](const std::string& text) {
        return ApplySplitBehavior(regex_->FindSegments(text), SplitBehavior::kIsolated);
      });
    }
    std::string mapped;
    for (PreToken& p : *pieces) {
      mapped.clear();
      AppendByteLevel(p.text, &mapped);
      p.text.swap(mapped);
    }
  }

 private:
  std::unique_ptr<Pattern> regex_;  // Null when use_regex is false.
  bool add_prefix_space_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void PreTokenize(std::vector<PreToken>* pieces) const override {
    for (PreToken& p : *pieces) {
      std::string replaced;
      replaced.reserve(p.text.size());
      for (char c : p.text) {
        if (c == ' ') {
          replaced.append(replacement_);
        } else {
          replaced.push_back(c);
        }
      }
      const bool starts = replaced.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts &&
          (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && p.at_start))) {
        replaced.insert(0, replacement_);
      }
      p.text = std::move(replaced);
    }
    if (!split_) return;
    // Split on the replacement character, each occurrence starting a new piece.
    SplitPieces(pieces, [this](const std::string& text) {
      std::vector<Segment> segments;
      size_t prev = 0;
      for (size_t pos = text.find(replacement_); pos != std::string::npos;
           pos = text.find(replacement_, pos + replacement_.size())) {
        if (pos != prev) segments.push_back(Segment{prev, pos, false});
        segments.push_back(Segment{pos, pos + replacement_.size(), true});
        prev = pos + replacement_.size();
      }
      if (prev != text.size() || text.empty())
        segments.push_back(Segment{prev, text.size(), false});
      return ApplySplitBehavior(segments, SplitBehavior::kMergedWithNext);
    });
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void PreTokenize(std::vector<PreToken>* pieces) const override {
    for (const auto& p : parts_) p->PreTokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeByteLevelPreTokenizer(bool add_prefix_space,
                                                                        bool use_regex) {
  std::unique_ptr<Pattern> regex;
  if (use_regex) {
    GB_ASSIGN_OR_RETURN(regex, Pattern::FromRegex(kGpt2Regex));
  }
  return std::make_unique<ByteLevelPreTokenizer>(std::move(regex), add_prefix_space);
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizerFromJson(const nlohmann::json& j) {
  const std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (const auto& item : j.at("pretokenizers")) {
      GB_ASSIGN_OR_RETURN(auto part, PreTokenizerFromJson(item));
      parts.push_back(std::move(part));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  if (type == "ByteLevel") {
    return MakeByteLevelPreTokenizer(j.value("add_prefix_space", true), j.value("use_regex", true));
  }
  if (type == "Split") {
    GB_ASSIGN_OR_RETURN(auto pattern, Pattern::FromJson(j.at("pattern")));
    GB_ASSIGN_OR_RETURN(auto behavior, SplitBehaviorFromName(j.at("behavior").get<std::string>()));
    return std::make_unique<SplitPreTokenizer>(std::move(pattern), behavior,
                                               j.value("invert", false));
  }
  if (type == "Digits") {
    // Rust's char::is_numeric is the Unicode N category.
    GB_ASSIGN_OR_RETURN(auto pattern, Pattern::FromRegex("\\p{N}"));
    const bool individual = j.value("individual_digits", false);
    return std::make_unique<SplitPreTokenizer>(
        std::move(pattern), individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous,
        false);
  }
  if (type == "Metaspace") {
    PrependScheme scheme = PrependScheme::kAlways;
    if (j.contains("prepend_scheme") && !j.at("prepend_scheme").is_null()) {
      const std::string s = j.at("prepend_scheme").get<std::string>();
      if (s == "always") {
        scheme = PrependScheme::kAlways;
      } else if (s == "first") {
        scheme = PrependScheme::kFirst;
      } else if (s == "never") {
        scheme = PrependScheme::kNever;
      } else {
        return absl::InvalidArgumentError(absl::StrCat("unknown Metaspace prepend_scheme ", s));
      }
    } else if (!j.value("add_prefix_space", true)) {
      scheme = PrependScheme::kNever;
    }
    return std::make_unique<MetaspacePreTokenizer>(j.value("replacement", std::string("\u2581")),
                                                   scheme, j.value("split", true));
  }
  return absl::UnimplementedError(absl::StrCat("unsupported pre_tokenizer type '", type, "'"));
}

}  // namespace glassbox::tokenizer
