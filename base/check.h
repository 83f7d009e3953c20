// GB_CHECK: an invariant that only a programming error can break (never bad user input, which is
// reported with absl::Status). Abseil's CHECK is not in the 2022 LTS that Debian ships.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <cstdlib>

namespace glassbox::internal {

[[noreturn]] inline void CheckFailed(const char* file, int line, const char* condition,
                                     const char* format = nullptr, ...) {
  std::fprintf(stderr, "%s:%d: check failed: %s", file, line, condition);
  if (format != nullptr) {
    std::fprintf(stderr, ": ");
    va_list args;
    va_start(args, format);
    std::vfprintf(stderr, format, args);
    va_end(args);
  }
  std::fprintf(stderr, "\n");
  std::abort();
}

}  // namespace glassbox::internal

// GB_CHECK(cond) or GB_CHECK(cond, "printf format", args...).
#define GB_CHECK(cond, ...)                                                           \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      ::glassbox::internal::CheckFailed(__FILE__, __LINE__, #cond __VA_OPT__(, ) __VA_ARGS__); \
    }                                                                                 \
  } while (false)
