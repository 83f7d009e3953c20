#include "server/model/tokenizer/decoder.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "base/status_macros.h"
#include "server/model/tokenizer/byte_level.h"
#include "server/model/tokenizer/pattern.h"
#include "server/model/tokenizer/string_view_compat.h"
#include "server/model/tokenizer/utf8.h"

namespace glassbox::tokenizer {
namespace {

constexpr char kReplacementChar[] = "\xEF\xBF\xBD";  // U+FFFD

// Maps each character back to its byte; a token with any character outside the table keeps its
// own UTF-8 bytes (HF does this for added tokens such as <|endoftext|>). The bytes of the whole
// sequence then become text with invalid parts replaced, as Rust's from_utf8_lossy does.
class ByteLevelDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    std::string token_bytes;
    for (const std::string& token : *tokens) {
      token_bytes.clear();
      bool all_mapped = true;
      size_t pos = 0;
      while (pos < token.size()) {
        const int b = CharToByte(NextCodePoint(token, &pos));
        if (b < 0) {
          all_mapped = false;
          break;
        }
        token_bytes.push_back(static_cast<char>(b));
      }
      bytes.append(all_mapped ? token_bytes : token);
    }
    tokens->assign(1, Utf8Lossy(bytes));
  }
};

// <0xXX> tokens become bytes; each run of them becomes its UTF-8 text, or one U+FFFD per byte
// when the run is not valid UTF-8 (HF's rule, not from_utf8_lossy).
class ByteFallbackDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens->size());
    std::string run;
    auto flush = [&] {
      if (run.empty()) return;
      if (IsValidUtf8(run)) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run.size(); ++i) out.emplace_back(kReplacementChar);
      }
      run.clear();
    };
    for (std::string& token : *tokens) {
      int byte = -1;
      if (token.size() == 6 && token.compare(0, 3, "<0x") == 0 && token[5] == '>') {
        byte = ParseHexByte(token[3], token[4]);
      }
      if (byte >= 0) {
        run.push_back(static_cast<char>(byte));
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    *tokens = std::move(out);
  }

 private:
  static int HexDigit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  // Rust's u8::from_str_radix(.., 16) on two characters.
  static int ParseHexByte(char hi, char lo) {
    const int h = HexDigit(hi), l = HexDigit(lo);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
  }
};

class FuseDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string joined;
    for (const std::string& t : *tokens) joined.append(t);
    tokens->assign(1, std::move(joined));
  }
};

// Removes up to `start` leading and `stop` trailing copies of one character from each token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) {
      std::vector<size_t> offsets;  // Byte offset of each character, plus the end.
      std::vector<char32_t> chars;
      size_t pos = 0;
      while (pos < token.size()) {
        offsets.push_back(pos);
        chars.push_back(NextCodePoint(token, &pos));
      }
      offsets.push_back(token.size());
      size_t start_cut = 0;
      for (size_t i = 0; i < start_ && i < chars.size() && chars[i] == content_; ++i) {
        start_cut = i + 1;
      }
      size_t stop_cut = chars.size();
      for (size_t i = 0; i < stop_ && i < chars.size(); ++i) {
        const size_t index = chars.size() - i - 1;
        if (chars[index] != content_) break;
        stop_cut = index;
      }
      if (stop_cut < start_cut) stop_cut = start_cut;  // HF would panic; keep it empty.
      token = token.substr(offsets[start_cut], offsets[stop_cut] - offsets[start_cut]);
    }
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::unique_ptr<Pattern> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) token = pattern_->Replace(token, content_);
  }

 private:
  std::unique_ptr<Pattern> pattern_;
  std::string content_;
};

// The replacement character becomes a space, except in the first token when a prefix space was
// prepended while encoding (HF drops every replacement character of that token).
class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      (*tokens)[i] =
          absl::StrReplaceAll((*tokens)[i], {{replacement_, i == 0 && strip_first_ ? "" : " "}});
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

// Subword-NMT style: the end-of-word suffix becomes a space, except on the last token.
class BpeSuffixDecoder : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      (*tokens)[i] =
          absl::StrReplaceAll((*tokens)[i], {{suffix_, i + 1 == tokens->size() ? "" : " "}});
    }
  }

 private:
  std::string suffix_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts)
      : parts_(std::move(parts)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& p : parts_) p->DecodeChain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

absl::StatusOr<char32_t> SingleChar(const std::string& s, std::string_view what) {
  size_t pos = 0;
  if (s.empty() || !IsValidUtf8(s)) {
    return absl::InvalidArgumentError(absl::StrCat(AsAbsl(what), " must be one character"));
  }
  const char32_t c = NextCodePoint(s, &pos);
  if (pos != s.size())
    return absl::InvalidArgumentError(absl::StrCat(AsAbsl(what), " must be one character"));
  return c;
}

}  // namespace

std::unique_ptr<Decoder> MakeByteLevelDecoder() { return std::make_unique<ByteLevelDecoder>(); }

absl::StatusOr<std::unique_ptr<Decoder>> DecoderFromJson(const nlohmann::json& j) {
  const std::string type = j.at("type").get<std::string>();
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> parts;
    for (const auto& item : j.at("decoders")) {
      GB_ASSIGN_OR_RETURN(auto part, DecoderFromJson(item));
      parts.push_back(std::move(part));
    }
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  if (type == "ByteLevel") return MakeByteLevelDecoder();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    GB_ASSIGN_OR_RETURN(const char32_t c,
                        SingleChar(j.at("content").get<std::string>(), "Strip content"));
    return std::make_unique<StripDecoder>(c, j.value("start", size_t{0}),
                                          j.value("stop", size_t{0}));
  }
  if (type == "Replace") {
    GB_ASSIGN_OR_RETURN(auto pattern, Pattern::FromJson(j.at("pattern")));
    return std::make_unique<ReplaceDecoder>(std::move(pattern), j.at("content").get<std::string>());
  }
  if (type == "Metaspace") {
    bool strip_first = j.value("add_prefix_space", true);
    if (j.contains("prepend_scheme") && !j.at("prepend_scheme").is_null()) {
      strip_first = j.at("prepend_scheme").get<std::string>() != "never";
    }
    const std::string replacement = j.value("replacement", std::string("\u2581"));
    GB_RETURN_IF_ERROR(SingleChar(replacement, "Metaspace replacement").status());
    return std::make_unique<MetaspaceDecoder>(replacement, strip_first);
  }
  if (type == "BPEDecoder") {
    return std::make_unique<BpeSuffixDecoder>(j.value("suffix", std::string("</w>")));
  }
  return absl::UnimplementedError(absl::StrCat("unsupported decoder type '", type, "'"));
}

}  // namespace glassbox::tokenizer
