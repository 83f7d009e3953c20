// The usage text of `glassbox`, assembled from the registry: the synopses, the command list,
// the global flags and each command's flag section, then the notes and the exit codes.
#pragma once

#include <string>

namespace glassbox::cli {

// All of it, as `glassbox --help` prints it.
std::string UsageText();

// Its "Usage:" block (the synopses), shown after a usage error.
std::string Synopsis();

// The column of the help beside each command's flags in the usage text.
inline constexpr size_t kCommandFlagsColumn = 27;

}  // namespace glassbox::cli
