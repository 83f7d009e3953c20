#include "server/engine/host_math.h"

#include <algorithm>
#include <numeric>

#include "server/util/status_macros.h"

namespace glassbox {

absl::StatusOr<Tensor> CopyToHostF32(Backend& backend, const Tensor& t) {
  if (!t.defined()) return Tensor();
  if (t.device() == Device::kCpu && t.dtype() == DType::kF32) return t;
  Tensor f32 = t;
  if (t.dtype() != DType::kF32) {
    GB_ASSIGN_OR_RETURN(f32, backend.Allocate(DType::kF32, t.shape()));
    GB_RETURN_IF_ERROR(backend.Convert(t, f32));
  }
  Tensor host = Tensor::EmptyHost(DType::kF32, t.shape());
  GB_RETURN_IF_ERROR(backend.CopyToHost(f32, host));
  return host;
}

void TopK(const float* row, int64_t n, int64_t k, float* values, int32_t* indices,
          std::vector<int32_t>& scratch) {
  scratch.resize(n);
  std::iota(scratch.begin(), scratch.end(), 0);
  std::partial_sort(scratch.begin(), scratch.begin() + k, scratch.end(), [&](int32_t a, int32_t b) {
    return row[a] > row[b] || (row[a] == row[b] && a < b);
  });
  for (int64_t j = 0; j < k; ++j) {
    values[j] = row[scratch[j]];
    indices[j] = scratch[j];
  }
}

}  // namespace glassbox
