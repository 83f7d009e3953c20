// Host tensors as the proto's Array (a dense row-major array with its dimension names).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "glassbox/v1/glassbox.pb.h"
#include "kernels/tensor.h"

namespace glassbox {

// f32 tensors fill `values`, i32 tensors `indices`; an undefined tensor leaves `array` empty.
void ToArray(const Tensor& t, const std::vector<std::string>& dim_names, glassbox::v1::Array* array);

// A request's float Array as a host f32 tensor; `what` names it in the INVALID_ARGUMENT when its
// shape and values disagree. An empty Array (no shape, no values) is an undefined tensor.
absl::StatusOr<Tensor> FloatArrayToTensor(const glassbox::v1::Array& array, absl::string_view what);

}  // namespace glassbox
