// Early-return helpers for absl::Status / absl::StatusOr, in the style of the macros Abseil uses
// internally but does not export in the 2022 LTS that Debian ships.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define GB_CONCAT_INNER_(a, b) a##b
#define GB_CONCAT_(a, b) GB_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing function if not OK.
#define GB_RETURN_IF_ERROR(expr)                      \
  do {                                                \
    ::absl::Status gb_status_ = (expr);               \
    if (!gb_status_.ok()) return gb_status_;          \
  } while (false)

// `GB_ASSIGN_OR_RETURN(auto x, MakeX());` declares x from an absl::StatusOr or returns its error.
#define GB_ASSIGN_OR_RETURN(lhs, expr) \
  GB_ASSIGN_OR_RETURN_IMPL_(GB_CONCAT_(gb_statusor_, __LINE__), lhs, expr)
#define GB_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                              \
  if (!statusor.ok()) return statusor.status();        \
  lhs = std::move(statusor).value()
