// Small host-side helpers shared by the analyses, captures and the service: bringing a device
// value to a host f32 tensor, the top-k of a row, and the two steps of attention that follow an
// edited score or pattern.
#pragma once

#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace glassbox {

// A host f32 copy of `t` (converted on the device first when it is f16/bf16). Host f32 tensors
// are returned as they are, undefined ones stay undefined.
absl::StatusOr<Tensor> CopyToHostF32(Backend& backend, const Tensor& t);

// The k largest of row[0..n), in descending order; ties keep the lower index first, as
// torch.topk does on the CPU. `scratch` is reused across calls. The CPU backend's row top-k
// (kernels/cpu/row_reductions.h), for host values such as reduced captures; logits take
// Backend::TopK on their device instead.
void TopK(const float* row, int64_t n, int64_t k, float* values, int32_t* indices,
          std::vector<int32_t>& scratch);

// log(sum_j exp(row[j])) over row[0..n), n > 0, the max subtracted first and the sum in f64: the
// CPU backend's (kernels/cpu/row_reductions.h), for host values such as a metric's logits.
double LogSumExp(const float* row, int64_t n);

// softmax over the last axis of host f32 `scores`, as TransformerLens takes it: torch's softmax,
// then NaN replaced by 0. A row with a NaN or +inf, or with every entry -inf (a query that sees
// no key), is all NaN in torch, so it becomes all zeros here.
Tensor AttentionSoftmax(const Tensor& scores);

// z[b, q, h, :] = sum over k of pattern[b, h, q, k] * v[b, k, h / (H / H_kv), :], in f32:
// pattern [batch, H, q, k], v [batch, k, H_kv, d_head] (grouped-query attention when H_kv < H),
// both host f32; z is [batch, q, H, d_head].
Tensor AttendValues(const Tensor& pattern, const Tensor& v);

// The host batch `t` ([batch, ...]) repeated `times` times along the first axis, copy after copy:
// row r of the result is row r % batch. Undefined stays undefined.
Tensor RepeatRows(const Tensor& t, int64_t times);

// The block [starts[i], starts[i] + counts[i]) along every axis of a host tensor of any dtype, as
// a new contiguous tensor. The ranges must lie inside the shape.
Tensor SliceHost(const Tensor& t, std::span<const int64_t> starts, std::span<const int64_t> counts);

}  // namespace glassbox
