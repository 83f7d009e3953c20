#include "client/cpp/tensor_decode.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace glassbox::client {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the wire format is little-endian; decoding assumes a little-endian host");

using glassbox::v1::DType;

template <typename T>
std::vector<T> ReadElements(std::string_view bytes) {
  std::vector<T> values(bytes.size() / sizeof(T));
  if (!values.empty()) std::memcpy(values.data(), bytes.data(), values.size() * sizeof(T));
  return values;
}

}  // namespace

int64_t DTypeSize(DType dtype) {
  switch (dtype) {
    case glassbox::v1::DTYPE_F32:
    case glassbox::v1::DTYPE_I32:
      return 4;
    case glassbox::v1::DTYPE_F16:
    case glassbox::v1::DTYPE_BF16:
      return 2;
    default:
      return 0;
  }
}

std::string DTypeName(DType dtype) {
  switch (dtype) {
    case glassbox::v1::DTYPE_F32:
      return "f32";
    case glassbox::v1::DTYPE_F16:
      return "f16";
    case glassbox::v1::DTYPE_BF16:
      return "bf16";
    case glassbox::v1::DTYPE_I32:
      return "i32";
    default:
      return "unspecified";
  }
}

std::optional<DType> ParseDType(std::string_view name) {
  const std::string lower = absl::AsciiStrToLower(absl::string_view(name.data(), name.size()));
  if (lower == "f32" || lower == "float32") return glassbox::v1::DTYPE_F32;
  if (lower == "f16" || lower == "float16") return glassbox::v1::DTYPE_F16;
  if (lower == "bf16" || lower == "bfloat16") return glassbox::v1::DTYPE_BF16;
  if (lower == "i32" || lower == "int32") return glassbox::v1::DTYPE_I32;
  return std::nullopt;
}

absl::StatusOr<int64_t> NumElements(std::span<const int64_t> shape) {
  int64_t count = 1;
  for (int64_t dim : shape) {
    if (dim < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("shape %s has a negative dimension", ShapeString(shape)));
    }
    if (__builtin_mul_overflow(count, dim, &count)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("shape %s has more elements than fit in int64", ShapeString(shape)));
    }
  }
  return count;
}

absl::StatusOr<std::vector<float>> DecodeToFloats(DType dtype, std::string_view bytes) {
  const int64_t size = DTypeSize(dtype);
  if (size == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot decode values of dtype %d", static_cast<int>(dtype)));
  }
  if (bytes.size() % size != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d bytes is not a whole number of %s elements", bytes.size(), DTypeName(dtype)));
  }
  switch (dtype) {
    case glassbox::v1::DTYPE_F32:
      return ReadElements<float>(bytes);
    case glassbox::v1::DTYPE_I32: {
      std::vector<int32_t> ints = ReadElements<int32_t>(bytes);
      return std::vector<float>(ints.begin(), ints.end());
    }
    case glassbox::v1::DTYPE_F16:
    case glassbox::v1::DTYPE_BF16: {
      std::vector<uint16_t> raw = ReadElements<uint16_t>(bytes);
      std::vector<float> values(raw.size());
      const bool half = dtype == glassbox::v1::DTYPE_F16;
      for (size_t i = 0; i < raw.size(); ++i) {
        values[i] = half ? HalfToFloat(raw[i]) : BFloat16ToFloat(raw[i]);
      }
      return values;
    }
    default:
      return absl::InternalError("unreachable dtype");
  }
}

absl::StatusOr<std::vector<int32_t>> DecodeToInt32s(DType dtype, std::string_view bytes) {
  if (dtype != glassbox::v1::DTYPE_I32) {
    return absl::InvalidArgumentError(
        absl::StrFormat("expected i32 values, got %s", DTypeName(dtype)));
  }
  if (bytes.size() % 4 != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d bytes is not a whole number of i32 elements", bytes.size()));
  }
  return ReadElements<int32_t>(bytes);
}

absl::Status CheckTensorSize(std::string_view what, std::span<const int64_t> shape, DType dtype,
                             int64_t nbytes) {
  const int64_t size = DTypeSize(dtype);
  if (size == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has unknown dtype %d", what, static_cast<int>(dtype)));
  }
  absl::StatusOr<int64_t> count = NumElements(shape);
  if (!count.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s", what, count.status().message()));
  }
  int64_t expected;
  if (__builtin_mul_overflow(*count, size, &expected) || expected != nbytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %s %s needs %d elements of %d bytes, but has %d bytes", what,
                        DTypeName(dtype), ShapeString(shape), *count, size, nbytes));
  }
  return absl::OkStatus();
}

std::string ShapeString(std::span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace glassbox::client
