// Reading a whole file, with a status a caller can pass on: NOT_FOUND "cannot open PATH" when
// it cannot be opened, DATA_LOSS "error reading PATH" when reading fails part way.
#pragma once

#include <filesystem>
#include <string>

#include "absl/status/statusor.h"

namespace glassbox {

absl::StatusOr<std::string> ReadFileToString(const std::filesystem::path& path);

}  // namespace glassbox
