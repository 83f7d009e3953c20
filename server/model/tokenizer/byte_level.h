// GPT-2's reversible byte <-> printable-character table, shared by the ByteLevel pre-tokenizer
// (bytes to characters before BPE) and the ByteLevel decoder (back to bytes).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace glassbox::tokenizer {

// UTF-8 of the character that stands for each byte.
const std::array<std::string, 256>& ByteToChar();

// The byte a character stands for, or -1 when the character is not in the table.
int CharToByte(char32_t c);

// Appends the byte-level form of `bytes` (each byte replaced by its character).
void AppendByteLevel(std::string_view bytes, std::string* out);

}  // namespace glassbox::tokenizer
