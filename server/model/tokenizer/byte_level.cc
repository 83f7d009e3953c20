#include "server/model/tokenizer/byte_level.h"

#include <vector>

#include "server/model/tokenizer/utf8.h"

namespace glassbox::tokenizer {
namespace {

struct Tables {
  std::array<std::string, 256> byte_to_char;
  std::vector<int16_t> char_to_byte;  // Indexed by code point; the table ends below U+0144.
};

const Tables& GetTables() {
  static const Tables* tables = [] {
    auto* t = new Tables();
    std::array<char32_t, 256> map{};
    std::array<bool, 256> printable{};
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) map[b] = printable[b] ? static_cast<char32_t>(b) : next++;
    t->char_to_byte.assign(next, -1);
    for (int b = 0; b < 256; ++b) {
      AppendUtf8(map[b], &t->byte_to_char[b]);
      t->char_to_byte[map[b]] = static_cast<int16_t>(b);
    }
    return t;
  }();
  return *tables;
}

}  // namespace

const std::array<std::string, 256>& ByteToChar() { return GetTables().byte_to_char; }

int CharToByte(char32_t c) {
  const auto& table = GetTables().char_to_byte;
  return c < table.size() ? table[c] : -1;
}

void AppendByteLevel(std::string_view bytes, std::string* out) {
  const auto& table = ByteToChar();
  for (unsigned char b : bytes) out->append(table[b]);
}

}  // namespace glassbox::tokenizer
