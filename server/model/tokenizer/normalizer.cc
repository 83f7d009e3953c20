#include "server/model/tokenizer/normalizer.h"

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/model/tokenizer/onig_regex.h"
#include "server/model/tokenizer/pattern.h"
#include "server/model/tokenizer/utf8.h"
#include "utf8proc.h"

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

// NFC, NFD, NFKC and NFKD. HF tokenizers normalises with the unicode-normalization-alignments
// crate, whose tables are Unicode 9.0: a code point assigned later has no decomposition and
// combining class 0 there, so it neither moves nor combines and splits the text like a wall.
// utf8proc has newer tables (Unicode 15 in Debian 12), so each run of code points assigned by
// 9.0 is normalised on its own and every later code point is copied as it is (ICU's
// FilteredNormalizer2 over [:age=9.0:]). Tables are stable for assigned code points, so this is
// Unicode 9.0 normalisation exactly; the differential test holds marks from Unicode 10-15 that
// would reorder under current tables.
struct CodePointRange {
  char32_t first, last;
};
constexpr CodePointRange kAssignedByUnicode9[] = {
#include "server/model/tokenizer/unicode9_assigned.inc"
};

bool AssignedByUnicode9(char32_t cp) {
  const auto* it =
      std::upper_bound(std::begin(kAssignedByUnicode9), std::end(kAssignedByUnicode9), cp,
                       [](char32_t c, const CodePointRange& r) { return c < r.first; });
  return it != std::begin(kAssignedByUnicode9) && cp <= std::prev(it)->last;
}

class UnicodeFormNormalizer : public Normalizer {
 public:
  explicit UnicodeFormNormalizer(utf8proc_option_t options) : options_(options) {}

  void Normalize(std::string* text) const override {
    std::string out;
    out.reserve(text->size());
    size_t run_start = 0, pos = 0;
    while (pos < text->size()) {
      const size_t at = pos;
      if (AssignedByUnicode9(NextCodePoint(*text, &pos))) continue;
      AppendNormalized(std::string_view(*text).substr(run_start, at - run_start), &out);
      out.append(*text, at, pos - at);
      run_start = pos;
    }
    AppendNormalized(std::string_view(*text).substr(run_start), &out);
    *text = std::move(out);
  }

 private:
  void AppendNormalized(std::string_view run, std::string* out) const {
    if (run.empty()) return;
    utf8proc_uint8_t* mapped = nullptr;
    const utf8proc_ssize_t n =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(run.data()),
                     static_cast<utf8proc_ssize_t>(run.size()), &mapped, options_);
    // The text is valid UTF-8 (checked before normalising), so utf8proc can only fail for
    // memory; the run is then kept as it was.
    if (n < 0) {
      out->append(run);
      return;
    }
    out->append(reinterpret_cast<const char*>(mapped), static_cast<size_t>(n));
    std::free(mapped);
  }

  utf8proc_option_t options_;
};

std::unique_ptr<Normalizer> MakeUnicodeFormNormalizer(std::string_view form) {
  int options = UTF8PROC_STABLE;
  if (form == "NFC" || form == "NFKC") options |= UTF8PROC_COMPOSE;
  if (form == "NFD" || form == "NFKD") options |= UTF8PROC_DECOMPOSE;
  if (form == "NFKC" || form == "NFKD") options |= UTF8PROC_COMPAT;
  return std::make_unique<UnicodeFormNormalizer>(static_cast<utf8proc_option_t>(options));
}

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
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    return MakeUnicodeFormNormalizer(type);
  }
  return absl::UnimplementedError(absl::StrCat("unsupported normalizer type '", type, "'"));
}

}  // namespace glassbox::tokenizer
