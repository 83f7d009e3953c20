#include "server/engine/host_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "base/status_macros.h"
#include "kernels/cpu/row_reductions.h"

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
  RowTopK(row, n, k, values, indices, scratch);
}

double LogSumExp(const float* row, int64_t n) { return RowLogSumExp(row, n); }

Tensor AttentionSoftmax(const Tensor& scores) {
  const int64_t n = scores.shape().back(), rows = scores.numel() / std::max<int64_t>(n, 1);
  Tensor pattern = Tensor::ZerosHost(DType::kF32, scores.shape());
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = scores.data<float>() + r * n;
    float* out = pattern.data<float>() + r * n;
    float max_score = -std::numeric_limits<float>::infinity();
    bool poisoned = false;
    for (int64_t j = 0; j < n; ++j) {
      poisoned |= std::isnan(row[j]);
      max_score = std::max(max_score, row[j]);
    }
    if (poisoned || !std::isfinite(max_score)) continue;  // left all zero
    double denom = 0;
    for (int64_t j = 0; j < n; ++j) {
      out[j] = std::exp(row[j] - max_score);
      denom += out[j];
    }
    const float inv = static_cast<float>(1.0 / denom);
    for (int64_t j = 0; j < n; ++j) out[j] *= inv;
  }
  return pattern;
}

Tensor AttendValues(const Tensor& pattern, const Tensor& v) {
  const int64_t batch = pattern.dim(0), heads = pattern.dim(1), queries = pattern.dim(2),
                keys = pattern.dim(3);
  const int64_t kv_heads = v.dim(2), d_head = v.dim(3), group = heads / kv_heads;
  Tensor z = Tensor::ZerosHost(DType::kF32, {batch, queries, heads, d_head});
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t q = 0; q < queries; ++q) {
        const float* weights = pattern.data<float>() + ((b * heads + h) * queries + q) * keys;
        float* out = z.data<float>() + ((b * queries + q) * heads + h) * d_head;
        for (int64_t k = 0; k < keys; ++k) {
          const float* value = v.data<float>() + ((b * keys + k) * kv_heads + h / group) * d_head;
          for (int64_t e = 0; e < d_head; ++e) out[e] += weights[k] * value[e];
        }
      }
    }
  }
  return z;
}

Tensor SliceHost(const Tensor& t, std::span<const int64_t> starts, std::span<const int64_t> counts) {
  const Shape& shape = t.shape();
  const size_t rank = shape.size();
  Tensor out = Tensor::EmptyHost(t.dtype(), Shape(counts.begin(), counts.end()));
  if (out.numel() == 0) return out;
  const int64_t elem = DTypeSize(t.dtype());
  // Element strides of the source; the innermost axis is copied as one contiguous run.
  std::vector<int64_t> stride(rank, 1);
  for (size_t i = rank; i-- > 1;) stride[i - 1] = stride[i] * shape[i];
  const int64_t run_bytes = (rank == 0 ? 1 : counts[rank - 1]) * elem;
  const auto* src = static_cast<const char*>(t.raw_data());
  auto* dst = static_cast<char*>(out.raw_data());
  std::vector<int64_t> index(rank, 0);  // over the outer axes of the block
  for (;;) {
    int64_t offset = rank == 0 ? 0 : starts[rank - 1];
    for (size_t i = 0; i + 1 < rank; ++i) offset += (starts[i] + index[i]) * stride[i];
    std::memcpy(dst, src + offset * elem, static_cast<size_t>(run_bytes));
    dst += run_bytes;
    size_t axis = rank < 2 ? 0 : rank - 1;
    for (; axis > 0; --axis) {
      if (++index[axis - 1] < counts[axis - 1]) break;
      index[axis - 1] = 0;
    }
    if (axis == 0) break;
  }
  return out;
}

Tensor RepeatRows(const Tensor& t, int64_t times) {
  if (!t.defined()) return t;
  Shape shape = t.shape();
  shape[0] *= times;
  Tensor out = Tensor::EmptyHost(t.dtype(), shape);
  const int64_t bytes = t.numel() * DTypeSize(t.dtype());
  for (int64_t i = 0; i < times; ++i) {
    std::copy_n(static_cast<const char*>(t.raw_data()), bytes,
                static_cast<char*>(out.raw_data()) + i * bytes);
  }
  return out;
}

}  // namespace glassbox
