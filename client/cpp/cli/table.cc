#include "client/cpp/cli/table.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace glassbox::cli {

void PrintTable(const std::vector<std::vector<std::string>>& rows, std::ostream& out,
                size_t left, std::string_view indent) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  }
  for (const auto& row : rows) {
    std::string line(indent);
    for (size_t c = 0; c < row.size(); ++c) {
      if (c > 0) line += "  ";
      const std::string pad(widths[c] - row[c].size(), ' ');
      line += c < left ? row[c] + pad : pad + row[c];
    }
    out << std::string(absl::StripTrailingAsciiWhitespace(line)) << "\n";
  }
}

std::string Number(double value) {
  std::string text = absl::StrFormat("%.4f", value);
  if (text == "-0.0000") text = "0.0000";
  return text;
}

}  // namespace glassbox::cli
