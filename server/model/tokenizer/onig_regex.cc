#include "server/model/tokenizer/onig_regex.h"

#include <oniguruma.h>

#include <mutex>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/model/tokenizer/string_view_compat.h"
#include "server/model/tokenizer/utf8.h"

namespace glassbox::tokenizer {
namespace {

void InitOnigOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
  });
}

// Frees the region on every exit path.
struct Region {
  Region() : r(onig_region_new()) {}
  ~Region() { onig_region_free(r, 1); }
  OnigRegion* r;
};

}  // namespace

absl::StatusOr<std::unique_ptr<OnigRegex>> OnigRegex::Compile(std::string_view pattern) {
  InitOnigOnce();
  if (!IsValidUtf8(pattern)) return absl::InvalidArgumentError("regex pattern is not UTF-8");
  regex_t* regex = nullptr;
  OnigErrorInfo einfo;
  const auto* p = reinterpret_cast<const OnigUChar*>(pattern.data());
  // OnigDefaultSyntax and no options: what `onig::Regex::new` (used by HF) does.
  const int rc = onig_new(&regex, p, p + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                          ONIG_SYNTAX_DEFAULT, &einfo);
  if (rc != ONIG_NORMAL) {
    OnigUChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
    onig_error_code_to_str(msg, rc, &einfo);
    return absl::InvalidArgumentError(absl::StrCat("cannot compile regex '", AsAbsl(pattern),
                                                   "': ", reinterpret_cast<char*>(msg)));
  }
  return std::unique_ptr<OnigRegex>(new OnigRegex(regex, std::string(pattern)));
}

absl::StatusOr<std::unique_ptr<OnigRegex>> OnigRegex::CompileLiteral(std::string_view literal) {
  return Compile(EscapeRegexLiteral(literal));
}

OnigRegex::~OnigRegex() { onig_free(static_cast<regex_t*>(regex_)); }

std::vector<std::pair<size_t, size_t>> OnigRegex::FindAll(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  auto* regex = static_cast<regex_t*>(regex_);
  const auto* str = reinterpret_cast<const OnigUChar*>(text.data());
  const OnigUChar* end = str + text.size();
  Region region;
  size_t last_end = 0;
  bool have_last_match = false;
  size_t last_match_end = 0;
  while (last_end <= text.size()) {
    const int r = onig_search(regex, str, end, str + last_end, end, region.r, ONIG_OPTION_NONE);
    if (r < 0) break;  // ONIG_MISMATCH, or an engine error, which the onig crate also stops on.
    const auto s = static_cast<size_t>(region.r->beg[0]);
    const auto e = static_cast<size_t>(region.r->end[0]);
    if (s == e && have_last_match && last_match_end == e) {
      last_end += last_end < text.size() ? Utf8SequenceLength(text[last_end]) : 1;
      continue;
    }
    last_end = e;
    have_last_match = true;
    last_match_end = e;
    out.emplace_back(s, e);
  }
  return out;
}

long OnigRegex::MatchAt(std::string_view text, size_t at) const {
  const auto* str = reinterpret_cast<const OnigUChar*>(text.data());
  const int r = onig_match(static_cast<regex_t*>(regex_), str, str + text.size(), str + at, nullptr,
                           ONIG_OPTION_NONE);
  return r >= 0 ? r : -1;
}

std::pair<size_t, size_t> OnigRegex::SearchFrom(std::string_view text, size_t from) const {
  const auto* str = reinterpret_cast<const OnigUChar*>(text.data());
  const OnigUChar* end = str + text.size();
  Region region;
  const int r = onig_search(static_cast<regex_t*>(regex_), str, end, str + from, end, region.r,
                            ONIG_OPTION_NONE);
  if (r < 0) return {std::string_view::npos, std::string_view::npos};
  return {static_cast<size_t>(region.r->beg[0]), static_cast<size_t>(region.r->end[0])};
}

std::string EscapeRegexLiteral(std::string_view literal) {
  std::string out;
  out.reserve(literal.size() * 2);
  for (char c : literal) {
    switch (c) {
      case '\\':
      case '^':
      case '$':
      case '.':
      case '|':
      case '?':
      case '*':
      case '+':
      case '(':
      case ')':
      case '[':
      case ']':
      case '{':
      case '}':
        out.push_back('\\');
        out.push_back(c);
        break;
      case '\n':
        out.append("\\n");
        break;
      case '\r':
        out.append("\\r");
        break;
      case '\t':
        out.append("\\t");
        break;
      case '\v':
        out.append("\\v");
        break;
      case '\f':
        out.append("\\f");
        break;
      default:
        if (c == '\0') {
          out.append("\\x00");
        } else {
          out.push_back(c);
        }
    }
  }
  return out;
}

}  // namespace glassbox::tokenizer
