// GB_CHECK: an invariant that only a programming error can break (never bad user input, which is
// reported with absl::Status). Abseil's CHECK is not in the 2022 LTS that Debian ships.
#pragma once

#include <cstdio>
#include <cstdlib>

#define GB_CHECK(cond, ...)                                                             \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: check failed: %s ", __FILE__, __LINE__, #cond);      \
      std::fprintf(stderr, "" __VA_ARGS__);                                             \
      std::fprintf(stderr, "\n");                                                       \
      std::abort();                                                                     \
    }                                                                                   \
  } while (false)
