#include "server/model/tokenizer/normalizer.h"

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/model/tokenizer/onig_regex.h"
#include "server/model/tokenizer/pattern.h"

namespace glassbox::tokenizer {
namespace {

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  void Normalize(std::string* text) const override {
    for (const auto& p : parts_) p->Normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  void Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prepend_);  // HF leaves empty text alone.
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Pattern> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Normalize(std::string* text) const override { *text = pattern_->Replace(*text, content_); }

 private:
  std::unique_ptr<Pattern> pattern_;
  std::string content_;
};

// Strips Unicode White_Space (Rust's char::is_whitespace) from either end.
class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(std::unique_ptr<OnigRegex> leading, std::unique_ptr<OnigRegex> trailing,
                  bool left, bool right)
      : leading_(std::move(leading)), trailing_(std::move(trailing)), left_(left), right_(right) {}
  void Normalize(std::string* text) const override {
    if (right_) {
      auto [s, e] = trailing_->SearchFrom(*text, 0);
      if (s != std::string::npos) text->resize(s);
    }
    if (left_) {
      const long n = leading_->MatchAt(*text, 0);
      if (n > 0) text->erase(0, n);
    }
  }

 private:
  std::unique_ptr<OnigRegex> leading_, trailing_;
  bool left_, right_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> NormalizerFromJson(const nlohmann::json& j) {
  const std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (const auto& item : j.at("normalizers")) {
      GB_ASSIGN_OR_RETURN(auto part, NormalizerFromJson(item));
      parts.push_back(std::move(part));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  if (type == "Prepend") {
    return std::make_unique<PrependNormalizer>(j.at("prepend").get<std::string>());
  }
  if (type == "Replace") {
    GB_ASSIGN_OR_RETURN(auto pattern, Pattern::FromJson(j.at("pattern")));
    return std::make_unique<ReplaceNormalizer>(std::move(pattern),
                                               j.at("content").get<std::string>());
  }
  if (type == "Strip") {
    GB_ASSIGN_OR_RETURN(auto leading, OnigRegex::Compile("\\p{White_Space}+"));
    GB_ASSIGN_OR_RETURN(auto trailing, OnigRegex::Compile("\\p{White_Space}+\\z"));
    return std::make_unique<StripNormalizer>(std::move(leading), std::move(trailing),
                                             j.value("strip_left", true),
                                             j.value("strip_right", true));
  }
  return absl::UnimplementedError(absl::StrCat("unsupported normalizer type '", type, "'"));
}

}  // namespace glassbox::tokenizer
