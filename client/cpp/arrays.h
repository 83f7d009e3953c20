// The dense arrays (glassbox.v1.Array) that the analysis RPCs return: validation of what came
// over the wire, and row-major indexing.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "glassbox/v1/glassbox.pb.h"

namespace glassbox::client {

enum class ArrayKind { kFloat, kInt };

// INTERNAL (a malformed response) unless `array` is a well-formed array of `kind`: no negative
// dimension, exactly as many float `values` (kFloat) or integer `indices` (kInt) as the shape
// holds and none of the other kind, dim_names empty or one per dimension, and, when `rank` is
// given, that many dimensions. `what` names the array in the message.
absl::Status CheckArray(const glassbox::v1::Array& array, absl::string_view what, ArrayKind kind,
                        std::optional<int> rank = std::nullopt);

// Whether the array is absent from the response (no shape and no data).
bool IsEmptyArray(const glassbox::v1::Array& array);

// The row-major offset of `index` in `shape` (no bounds checks beyond a debug assert).
int64_t FlatIndex(std::span<const int64_t> shape, std::initializer_list<int64_t> index);

// array.values[FlatIndex(array.shape, index)] / array.indices[...]. The array must have passed
// CheckArray and the index must be in bounds.
float FloatAt(const glassbox::v1::Array& array, std::initializer_list<int64_t> index);
int32_t IntAt(const glassbox::v1::Array& array, std::initializer_list<int64_t> index);

// The shape as a vector.
std::vector<int64_t> ArrayShape(const glassbox::v1::Array& array);

// Checks of whole responses, run by Client before it returns one: every array well formed and
// the arrays' shapes consistent with each other and with the labels. INTERNAL otherwise.
absl::Status CheckPatchingSweepResponse(const glassbox::v1::PatchingSweepResponse& response);
absl::Status CheckLogitLensResponse(const glassbox::v1::LogitLensResponse& response);
// Every gradient a float array of at least [batch, ...], batch = the metric's entries.
absl::Status CheckGradientsResponse(const glassbox::v1::GradientsResponse& response);
absl::Status CheckIntegratedGradientsResponse(
    const glassbox::v1::IntegratedGradientsResponse& response);
// jacobian [batch, out, in], out_value [batch, out], in_value [batch, in].
absl::Status CheckJacobianResponse(const glassbox::v1::JacobianResponse& response);
absl::Status CheckDirectLogitAttributionResponse(
    const glassbox::v1::DirectLogitAttributionResponse& response);
absl::Status CheckAttentionNormsResponse(const glassbox::v1::AttentionNormsResponse& response);
// CSR rows consistent (one per real token, offsets non-decreasing, features in [0, d_sae)).
absl::Status CheckSaeEncodeResponse(const glassbox::v1::SaeEncodeResponse& response);
absl::Status CheckSaeDecodeResponse(const glassbox::v1::SaeDecodeResponse& response);

}  // namespace glassbox::client
