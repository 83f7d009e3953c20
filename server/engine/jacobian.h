// Jacobians of one hook's value with respect to another's (the Jacobian lens; what linear
// relational embeddings fit, docs/methods.md): for each row b,
//   J_b = ∂ out[b, q_b, …] / ∂ in[b, p_b, …],
// both sides flattened over their trailing axes, where `in` is any hook the backward walk reaches
// at or below `out`, and `out` a token activation the walk passes through (IsMetricHookKind: the
// residual stream, attn_out, mlp_out, hook_q/k/v/z, the MLP's pre/post, the embeddings). Computed
// as one backward pass per output element: the rows of the batch repeated, one seed each at
// `out`, in a few large passes that stop at `out`'s block.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/transformer.h"

namespace glassbox {

struct JacobianRequest {
  Tensor tokens;          // [batch, seq] i32, host
  Tensor attention_mask;  // as GradientRequest's: right padding, or undefined
  HookId in = -1;
  std::vector<int32_t> in_positions;   // per row; negative from the row's last real token
  HookId out = -1;                     // a token activation (IsMetricHookKind)
  std::vector<int32_t> out_positions;  // per row, as in_positions
  int64_t max_rows_per_pass = 64;      // repeated rows in one pass
  const std::atomic<bool>* cancelled = nullptr;
};

struct JacobianResult {
  Tensor jacobian;   // host f32 [batch, out elements, in elements]
  Tensor out_value;  // host f32 [batch, out elements]: out[b, q_b] (what a linear fit reads)
  Tensor in_value;   // host f32 [batch, in elements]: in[b, p_b]
  int passes = 0;    // forward + backward passes
};

// The size of one row's Jacobian (out elements × in elements), for the service's limits; an
// error for a pair of hooks the request cannot have.
absl::StatusOr<std::pair<int64_t, int64_t>> JacobianSize(const Transformer& model, HookId in,
                                                         HookId out);

absl::StatusOr<JacobianResult> ComputeJacobian(const Transformer& model,
                                               const JacobianRequest& request);

}  // namespace glassbox
