// Debian's Abseil is built with its own absl::string_view (ABSL_OPTION_USE_STD_STRING_VIEW 0), so
// std::string_view must be converted for heterogeneous hash-map lookups and StrCat.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace glassbox::tokenizer {

inline absl::string_view AsAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

}  // namespace glassbox::tokenizer
