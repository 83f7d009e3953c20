#include "server/engine/integrated_gradients.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/engine/host_math.h"
#include "server/engine/intervention.h"

namespace glassbox {
namespace {

// The baseline in the hook's full shape.
absl::StatusOr<Tensor> FullBaseline(const Tensor& baseline, const Shape& shape,
                                    const std::string& hook) {
  Tensor full = Tensor::ZerosHost(DType::kF32, shape);
  if (!baseline.defined()) return full;
  if (baseline.dtype() != DType::kF32)
    return absl::InvalidArgumentError("the baseline must be f32");
  if (baseline.shape() == shape) {
    std::copy_n(baseline.data<float>(), full.numel(), full.data<float>());
    return full;
  }
  const int64_t d = shape.back();
  if (baseline.rank() != 1 || baseline.dim(0) != d)
    return absl::InvalidArgumentError(absl::StrCat(
        "the baseline has shape ", ShapeToString(baseline.shape()), "; ", hook, " takes [", d,
        "] (its last axis, for every row and position) or its full shape ", ShapeToString(shape)));
  for (int64_t i = 0; i < full.numel(); i += d) {
    std::copy_n(baseline.data<float>(), d, full.data<float>() + i);
  }
  return full;
}

Intervention SetEverywhere(HookId hook, Tensor value) {
  return Intervention{.hook = hook, .kind = InterventionKind::kSet, .value = std::move(value)};
}

}  // namespace

absl::StatusOr<IntegratedGradientsResult> ComputeIntegratedGradients(
    const Transformer& model, const IntegratedGradientsRequest& request) {
  const HookRegistry& hooks = model.hooks();
  if (request.hook < 0 || request.hook >= hooks.size())
    return absl::InvalidArgumentError("integrated gradients need a hook the model has");
  const HookInfo& info = hooks.info(request.hook);
  if (!IsEditableHook(info.kind))
    return absl::InvalidArgumentError(absl::StrCat(
        info.name, " can be captured but not edited, so no path can run through it; integrate "
                   "at an activation that flows on (hook_embed, hook_resid_*, hook_z, ...)"));
  const bool ig = request.method == IntegratedGradientsRequest::Method::kIntegratedGradients;
  if (ig && (request.steps < 1 || request.steps > 1024))
    return absl::InvalidArgumentError(
        absl::StrCat("steps is ", request.steps, "; it must be in [1, 1024]"));
  if (request.max_rows_per_pass < 1)
    return absl::InvalidArgumentError("max_rows_per_pass must be >= 1");
  const GradientMetric& metric = request.metric;
  const HookId hook = request.hook;

  // The plain run: x, m(x) and, for input × gradient, the gradient there.
  IntegratedGradientsResult result;
  GB_ASSIGN_OR_RETURN(ForwardBackwardResult plain,
                      RunForwardBackward(model, {.tokens = request.tokens,
                                                 .attention_mask = request.attention_mask,
                                                 .metric = metric,
                                                 .values = {hook},
                                                 .gradients = {hook},
                                                 .backward = !ig,
                                                 .cancelled = request.cancelled}));
  result.metric = plain.metric;
  ++result.forward_passes;
  const Tensor& x = plain.values[0];
  GB_ASSIGN_OR_RETURN(Tensor baseline, FullBaseline(request.baseline, x.shape(), info.name));
  const int64_t n = x.numel();
  const float* xv = x.data<float>();
  const float* bv = baseline.data<float>();

  // m(x′): the hook replaced by the baseline.
  GB_ASSIGN_OR_RETURN(ForwardBackwardResult at_baseline,
                      RunForwardBackward(model, {.tokens = request.tokens,
                                                 .attention_mask = request.attention_mask,
                                                 .metric = metric,
                                                 .interventions = {SetEverywhere(hook, baseline)},
                                                 .backward = false,
                                                 .cancelled = request.cancelled}));
  result.baseline_metric = at_baseline.metric;
  ++result.forward_passes;

  std::vector<double> mean_grad(n, 0.0);
  if (!ig) {
    ++result.backward_passes;
    const float* g = plain.gradients[0].data<float>();
    for (int64_t i = 0; i < n; ++i) mean_grad[i] = g[i];
  } else {
    // Path points in chunks of whole copies of the batch.
    const int64_t batch = request.tokens.dim(0);
    const int64_t per_pass = std::max<int64_t>(1, request.max_rows_per_pass / batch);
    for (int64_t first = 0; first < request.steps; first += per_pass) {
      const int64_t count = std::min<int64_t>(per_pass, request.steps - first);
      Shape shape = x.shape();
      shape[0] *= count;
      Tensor path = Tensor::EmptyHost(DType::kF32, shape);
      for (int64_t k = 0; k < count; ++k) {
        const double alpha = (static_cast<double>(first + k) + 0.5) / request.steps;
        float* out = path.data<float>() + k * n;
        for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(bv[i] + alpha * (xv[i] - bv[i]));
      }
      GB_ASSIGN_OR_RETURN(ForwardBackwardResult step,
                          RunForwardBackward(model, {.tokens = RepeatRows(request.tokens, count),
                                                     .attention_mask = RepeatRows(request.attention_mask, count),
                                                     .metric = metric,
                                                     .interventions = {SetEverywhere(hook, path)},
                                                     .gradients = {hook},
                                                     .cancelled = request.cancelled}));
      ++result.forward_passes;
      ++result.backward_passes;
      const float* g = step.gradients[0].data<float>();
      for (int64_t k = 0; k < count; ++k) {
        for (int64_t i = 0; i < n; ++i) mean_grad[i] += g[k * n + i] / request.steps;
      }
    }
  }
  result.attributions = Tensor::EmptyHost(DType::kF32, x.shape());
  for (int64_t i = 0; i < n; ++i) {
    result.attributions.data<float>()[i] =
        static_cast<float>((double{xv[i]} - bv[i]) * mean_grad[i]);
  }
  return result;
}

}  // namespace glassbox
