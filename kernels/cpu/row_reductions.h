// The CPU reference's reductions over one row: log-sum-exp (f64 sums) and top-k (torch's order).
// The CPU backend's ops use these, and so do the engine's host-side reductions of captures
// (server/engine/host_math.h), so each exists once.
#pragma once

#include <cstdint>
#include <vector>

namespace glassbox {

// log(sum_j exp(row[j])) over row[0..n), n > 0: the max subtracted first, the sum in f64.
double RowLogSumExp(const float* row, int64_t n);

// The k largest of row[0..n), largest first, into values[0..k) and indices[0..k). Ties keep the
// lower index first, as torch.topk does on the CPU; -0.0 ties +0.0 and NaN is larger than any
// number. `scratch` is reused across calls.
void RowTopK(const float* row, int64_t n, int64_t k, float* values, int32_t* indices,
             std::vector<int32_t>& scratch);

}  // namespace glassbox
