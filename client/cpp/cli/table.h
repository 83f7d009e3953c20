// Tables and numbers as the commands print them.
#pragma once

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace glassbox::cli {

// Columns padded to their widest cell: the first `left` columns left-aligned, the others
// right-aligned (numbers). Trailing spaces are dropped.
void PrintTable(const std::vector<std::vector<std::string>>& rows, std::ostream& out,
                size_t left = 1, std::string_view indent = "  ");

// Four decimals; a value that rounds to zero prints as 0.0000, never -0.0000.
std::string Number(double value);

}  // namespace glassbox::cli
