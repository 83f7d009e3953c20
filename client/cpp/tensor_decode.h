// Wire dtypes of the Glassbox protocol: sizes, names, and decoding of received bytes (dense,
// row-major, little-endian) into host values.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "base/float16.h"
#include "glassbox/v1/glassbox.pb.h"

namespace glassbox::client {

// Bytes per element; 0 for DTYPE_UNSPECIFIED and values this client does not know.
int64_t DTypeSize(glassbox::v1::DType dtype);

// "f32", "f16", "bf16", "i32"; "unspecified" otherwise.
std::string DTypeName(glassbox::v1::DType dtype);

// Inverse of DTypeName for the four concrete dtypes (also accepts "float32", "float16",
// "bfloat16", "int32"); nullopt for anything else.
std::optional<glassbox::v1::DType> ParseDType(std::string_view name);

// IEEE 754 binary16 and bfloat16 bit patterns to float (exact: every value is representable),
// the conversions of base/float16.h.
using ::glassbox::BFloat16ToFloat;
using ::glassbox::HalfToFloat;

// The product of `shape`; INVALID_ARGUMENT for a negative dimension or an int64 overflow.
absl::StatusOr<int64_t> NumElements(std::span<const int64_t> shape);

// Decodes `bytes` of `dtype` to floats (I32 is converted, exactly up to 2^24). INVALID_ARGUMENT
// when the dtype is unknown or the size is not a whole number of elements.
absl::StatusOr<std::vector<float>> DecodeToFloats(glassbox::v1::DType dtype,
                                                  std::string_view bytes);
// Decodes I32 bytes; INVALID_ARGUMENT for any other dtype.
absl::StatusOr<std::vector<int32_t>> DecodeToInt32s(glassbox::v1::DType dtype,
                                                    std::string_view bytes);

// INVALID_ARGUMENT unless `nbytes` is exactly what `shape` of `dtype` needs. `what` names the
// tensor in the message.
absl::Status CheckTensorSize(std::string_view what, std::span<const int64_t> shape,
                             glassbox::v1::DType dtype, int64_t nbytes);

// "[3, 11, 64]".
std::string ShapeString(std::span<const int64_t> shape);

}  // namespace glassbox::client
