// Integrated gradients (Sundararajan et al. 2017) and input × gradient at any editable hook
// point, for the metrics of gradients.h. For a hook with value x and baseline x′ (zeros unless
// given), row b's attribution to each element is
//   IG = (x − x′) ⊙ ∫₀¹ ∂m_b/∂h (x′ + α (x − x′)) dα,
// the integral by the midpoint rule over `steps` points α_k = (k + ½) / steps: each α is a
// forward + backward pass with the hook's output replaced by x′ + α (x − x′), batched as rows.
// Completeness: Σ IG over a row's elements → m_b(x) − m_b(x′), the error O(1 / steps²).
// Input × gradient is (x − x′) ⊙ ∂m_b/∂h at x: one backward pass, no path.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/gradients.h"
#include "server/engine/transformer.h"

namespace glassbox {

struct IntegratedGradientsRequest {
  enum class Method : uint8_t { kIntegratedGradients, kInputTimesGradient };
  Method method = Method::kIntegratedGradients;
  Tensor tokens;          // [batch, seq] i32, host
  Tensor attention_mask;  // as GradientRequest's: right padding, or undefined
  GradientMetric metric;
  HookId hook = -1;  // an editable hook
  // Host f32: undefined (zeros), [d] (the hook's last axis, for every row and position) or the
  // hook's full shape.
  Tensor baseline;
  int32_t steps = 20;
  int64_t max_rows_per_pass = 64;  // path points batched per pass: rows = points × batch
  const std::atomic<bool>* cancelled = nullptr;
};

struct IntegratedGradientsResult {
  Tensor attributions;                  // host f32, the hook's shape
  std::vector<double> metric;           // m_b(x): the plain run
  std::vector<double> baseline_metric;  // m_b(x′): the hook replaced by the baseline
  int forward_passes = 0;
  int backward_passes = 0;
};

absl::StatusOr<IntegratedGradientsResult> ComputeIntegratedGradients(
    const Transformer& model, const IntegratedGradientsRequest& request);

}  // namespace glassbox
