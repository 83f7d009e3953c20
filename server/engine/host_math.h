// Small host-side helpers shared by the analyses, captures and the service: bringing a device
// value to a host f32 tensor, and the top-k of a row.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace glassbox {

// A host f32 copy of `t` (converted on the device first when it is f16/bf16). Host f32 tensors
// are returned as they are, undefined ones stay undefined.
absl::StatusOr<Tensor> CopyToHostF32(Backend& backend, const Tensor& t);

// The k largest of row[0..n), in descending order; ties keep the lower index first, as
// torch.topk does on the CPU. `scratch` is reused across calls.
void TopK(const float* row, int64_t n, int64_t k, float* values, int32_t* indices,
          std::vector<int32_t>& scratch);

}  // namespace glassbox
