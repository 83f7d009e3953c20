// libFuzzer target for the tokenizer: arbitrary bytes as text (encode, then decode) and as ids
// (decode, per-token strings) with the real GPT-2 and Llama-3 tokenizers and the Pythia (NFC) and
// Gemma-2 (byte fallback) family tokenizers of the differential test, loaded once.
// Invariants: invalid UTF-8 is rejected with a status, never a crash; byte-level BPE without a
// normalizer is lossless, so decode(encode(text)) == text for valid text; where a normalizer
// rewrites the text, encoding what decode gives back returns the same ids (NFC is idempotent,
// Gemma's spaces and U+2581 become each other); decode accepts exactly the in-range ids.
// The real tokenizer files come from $GLASSBOX_SHARED_DIR/data/tokenizers, or the shared/ folder
// beside the repository.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "server/model/tokenizer/tokenizer.h"

namespace {

void Fail(const char* what) {
  std::fprintf(stderr, "tokenizer_fuzz: %s\n", what);
  std::abort();
}

std::string SharedDir() {
  if (const char* env = std::getenv("GLASSBOX_SHARED_DIR")) return env;
#ifdef GLASSBOX_SHARED_DIR
  return GLASSBOX_SHARED_DIR;
#else
  // fuzz/tokenizer_fuzz.cc -> <repo>/../shared
  return (std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "shared")
      .string();
#endif
}

struct FuzzedTokenizer {
  std::unique_ptr<glassbox::Tokenizer> tokenizer;
  bool lossless;  // decode(encode(text)) == text
};

FuzzedTokenizer Load(const std::string& dir, bool lossless) {
  auto t = glassbox::Tokenizer::LoadFromDirectory(dir);
  if (!t.ok()) {
    std::fprintf(stderr, "tokenizer_fuzz: cannot load %s: %s\n", dir.c_str(),
                 std::string(t.status().message()).c_str());
    std::abort();
  }
  return {*std::move(t), lossless};
}

const std::vector<FuzzedTokenizer>& Tokenizers() {
  static const auto* tokenizers = [] {
    const std::string families =
        std::string(GLASSBOX_SOURCE_DIR) + "/tests/tokenizer/fixtures/families/";
    auto* v = new std::vector<FuzzedTokenizer>();
    v->push_back(Load(SharedDir() + "/data/tokenizers/gpt2", true));
    v->push_back(Load(SharedDir() + "/data/tokenizers/llama3", true));
    v->push_back(Load(families + "pythia", false));
    v->push_back(Load(families + "gemma2", false));
    return v;
  }();
  return *tokenizers;
}

bool IsValidUtf8(std::string_view s) {
  // Independent of the library's own validator, so a bug there is caught.
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3F);
    }
    const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Tokenizers();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const bool valid = IsValidUtf8(text);
  for (const auto& [tok, lossless] : Tokenizers()) {
    glassbox::EncodeOptions options;
    options.add_special_tokens = (flags & 1) != 0;
    options.split_special_tokens = (flags & 2) != 0;
    if (flags & 4) options.prepend_bos = (flags & 8) != 0;
    auto ids = tok->Encode(text, options);
    if (ids.ok() != valid) Fail("Encode accepted invalid UTF-8 or rejected valid UTF-8");
    if (ids.ok()) {
      for (int32_t id : *ids) {
        if (id < 0 || id >= tok->vocab_size()) Fail("Encode produced an out-of-range id");
      }
      auto decoded = tok->Decode(*ids, /*skip_special_tokens=*/(flags & 16) != 0);
      if (!decoded.ok()) Fail("Decode failed on ids from Encode");
      // Byte-level BPE loses nothing; only special tokens the options added are extra.
      glassbox::EncodeOptions plain;
      plain.add_special_tokens = false;
      auto plain_ids = tok->Encode(text, plain);
      auto round_trip = tok->Decode(*plain_ids);
      if (!round_trip.ok()) Fail("Decode failed on ids from Encode");
      if (lossless && *round_trip != text) Fail("decode(encode(text)) != text");
      if (!lossless) {
        auto again = tok->Encode(*round_trip, plain);
        if (!again.ok() || *again != *plain_ids)
          Fail("encode(decode(encode(text))) != encode(text)");
      }
      if (!tok->ToStrTokens(*ids).ok()) Fail("ToStrTokens failed on ids from Encode");
    }
    // The same bytes as little-endian int32 ids, some in range and some not.
    std::vector<int32_t> raw(text.size() / 4);
    if (!raw.empty()) std::memcpy(raw.data(), text.data(), raw.size() * 4);
    bool in_range = true;
    for (int32_t& id : raw) {
      if (flags & 32)
        id = static_cast<int32_t>(static_cast<uint32_t>(id) % (tok->vocab_size() + 8));
      in_range = in_range && id >= 0 && id < tok->vocab_size();
    }
    auto decoded = tok->Decode(raw, (flags & 16) != 0);
    if (decoded.ok() != in_range) Fail("Decode range check is wrong");
    if (decoded.ok() && !IsValidUtf8(*decoded)) Fail("Decode produced invalid UTF-8");
    auto strs = tok->ToStrTokens(raw);
    if (strs.ok() != in_range) Fail("ToStrTokens range check is wrong");
  }
  return 0;
}
