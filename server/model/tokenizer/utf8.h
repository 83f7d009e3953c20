// UTF-8 helpers with the exact semantics HF tokenizers (Rust) relies on: strict validation of
// input text, and `String::from_utf8_lossy` for byte sequences produced by byte-level decoding.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace glassbox::tokenizer {

// True when `text` is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF),
// which is exactly what a Rust `&str` (and so a Python str handed to HF) can hold.
bool IsValidUtf8(std::string_view text);

// Byte offset of the first invalid byte, or text.size() when valid.
size_t FirstInvalidUtf8(std::string_view text);

// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes one U+FFFD.
std::string Utf8Lossy(std::string_view bytes);

// Decodes the code point at `*pos` of valid UTF-8 and advances `*pos` past it.
char32_t NextCodePoint(std::string_view text, size_t* pos);

// Number of bytes of the UTF-8 sequence that starts with `lead` (1 for invalid leads).
inline size_t Utf8SequenceLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xF0) return 4;
  if (lead >= 0xE0) return 3;
  if (lead >= 0xC0) return 2;
  return 1;
}

void AppendUtf8(char32_t cp, std::string* out);

}  // namespace glassbox::tokenizer
