// Host tensors as the proto's Array (a dense row-major array with its dimension names).
#pragma once

#include <string>
#include <vector>

#include "glassbox/v1/glassbox.pb.h"
#include "kernels/tensor.h"

namespace glassbox {

// f32 tensors fill `values`, i32 tensors `indices`; an undefined tensor leaves `array` empty.
void ToArray(const Tensor& t, const std::vector<std::string>& dim_names, glassbox::v1::Array* array);

}  // namespace glassbox
