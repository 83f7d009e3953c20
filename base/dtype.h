// Element types of tensors. Plain C++17 without Abseil, so that the CUDA kernels (compiled by nvcc
// as C++17) use these very enums instead of a mirror.
#pragma once

#include <cstdint>

namespace glassbox {

enum class DType : uint8_t { kF32, kF16, kBF16, kI32, kI64 };

constexpr int64_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
  }
  return 0;
}

constexpr const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kI32: return "i32";
    case DType::kI64: return "i64";
  }
  return "?";
}

constexpr bool IsFloating(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16;
}

}  // namespace glassbox
