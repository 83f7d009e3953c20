#include "server/engine/attribution_patching.h"

#include <vector>

#include "base/status_macros.h"
#include "server/engine/gradients.h"

namespace glassbox {
namespace {

GradientMetric ToGradientMetric(const PatchingMetric& m) {
  switch (m.kind) {
    case PatchingMetric::Kind::kLogitDiff:
      return {.kind = GradientMetric::Kind::kLogitDiff, .token_a = m.token_a, .token_b = m.token_b};
    case PatchingMetric::Kind::kLogProb:
      return {.kind = GradientMetric::Kind::kLogProb, .token_a = m.token_a};
    case PatchingMetric::Kind::kLoss:
      break;
  }
  return {.kind = GradientMetric::Kind::kLoss};
}

double Mean(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return sum / static_cast<double>(v.size());
}

// Adds Σ (clean − corrupted) · grad over each cell's elements of one layer's hook into `cells`
// (the layer's slice of the result, row-major over the sweep's remaining axes).
void AccumulateLayer(const SweepShape& shape, const Tensor& clean, const Tensor& corrupted,
                     const Tensor& grad, double* cells) {
  const float* a = clean.data<float>();
  const float* b = corrupted.data<float>();
  const float* g = grad.data<float>();
  const int64_t batch = clean.dim(0);
  if (shape.hook == HookKind::kPattern) {  // [batch, head, query, key]: a cell per head
    const int64_t heads = clean.dim(1), per_head = clean.dim(2) * clean.dim(3);
    for (int64_t i = 0; i < clean.numel(); ++i) {
      cells[(i / per_head) % heads] += (double{a[i]} - b[i]) * g[i];
    }
    return;
  }
  // Token activations: [batch, pos, d] or [batch, pos, head, d].
  const int64_t seq = clean.dim(1);
  const int64_t heads = clean.rank() == 4 ? clean.dim(2) : 1;
  const int64_t d = clean.dim(-1);
  for (int64_t r = 0; r < batch * seq; ++r) {
    const int64_t pos = r % seq;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t base = (r * heads + h) * d;
      int64_t cell = 0;
      if (shape.by_position) cell = pos;
      if (shape.by_head) cell = cell * heads + h;
      if (shape.by_unit) {  // a cell per unit of the last axis
        for (int64_t j = 0; j < d; ++j)
          cells[j] += (double{a[base + j]} - b[base + j]) * g[base + j];
        continue;
      }
      double sum = 0;
      for (int64_t j = 0; j < d; ++j) sum += (double{a[base + j]} - b[base + j]) * g[base + j];
      cells[cell] += sum;
    }
  }
}

}  // namespace

absl::StatusOr<PatchingResult> RunAttributionPatching(const Transformer& model,
                                                      const PatchingRequest& request) {
  GB_RETURN_IF_ERROR(CheckPatchingRequest(model, request));
  const ModelConfig& c = model.config();
  const SweepShape shape = ShapeOf(request.kind);
  const int64_t pairs = request.clean.dim(0), seq = request.clean.dim(1);
  std::vector<HookId> swept;
  for (int l = 0; l < c.n_layers; ++l) swept.push_back(model.hooks().Find(shape.hook, l));
  const GradientMetric metric = ToGradientMetric(request.metric);

  GB_ASSIGN_OR_RETURN(ForwardBackwardResult clean,
                      RunForwardBackward(model, {.tokens = request.clean,
                                                 .metric = metric,
                                                 .values = swept,
                                                 .backward = false,
                                                 .cancelled = request.cancelled}));
  GB_ASSIGN_OR_RETURN(ForwardBackwardResult corrupted,
                      RunForwardBackward(model, {.tokens = request.corrupted,
                                                 .metric = metric,
                                                 .values = swept,
                                                 .gradients = swept,
                                                 .cancelled = request.cancelled}));
  PatchingResult result;
  result.forward_passes = 2;
  result.backward_passes = 1;
  result.clean_metric = Mean(clean.metric);
  result.corrupted_metric = Mean(corrupted.metric);
  const Shape out_shape = SweepResultShape(c, request.kind, seq, &result.dim_names);
  result.values = Tensor::EmptyHost(DType::kF32, out_shape);
  result.normalized = Tensor::EmptyHost(DType::kF32, out_shape);
  const int64_t per_layer = result.values.numel() / c.n_layers;
  std::vector<double> estimate(result.values.numel(), 0.0);
  for (int l = 0; l < c.n_layers; ++l) {
    AccumulateLayer(shape, clean.values[l], corrupted.values[l], corrupted.gradients[l],
                    estimate.data() + l * per_layer);
  }
  // Each row's gradient is of its own metric; the sweep's metric is their mean.
  const double denominator = result.clean_metric - result.corrupted_metric;
  for (int64_t i = 0; i < result.values.numel(); ++i) {
    const double e = estimate[i] / static_cast<double>(pairs);
    result.values.data<float>()[i] = static_cast<float>(result.corrupted_metric + e);
    result.normalized.data<float>()[i] = static_cast<float>(denominator != 0 ? e / denominator : 0);
  }
  return result;
}

absl::StatusOr<PatchingResult> RunSaeFeatureAttributionPatching(const Transformer& model,
                                                                const PatchingRequest& request,
                                                                HookId hook, const Sae& sae) {
  PatchingRequest checked = request;
  checked.kind = SweepKind::kResidPre;  // the tokens and metric checks only
  GB_RETURN_IF_ERROR(CheckPatchingRequest(model, checked));
  const int64_t pairs = request.clean.dim(0), seq = request.clean.dim(1);
  const int64_t d_in = sae.d_in(), d_sae = sae.d_sae();
  const GradientMetric metric = ToGradientMetric(request.metric);
  // With the error term and no edits the spliced model computes what the plain one does: the
  // clean run needs no splice, only its activations at the hook.
  GB_ASSIGN_OR_RETURN(ForwardBackwardResult clean,
                      RunForwardBackward(model, {.tokens = request.clean,
                                                 .metric = metric,
                                                 .values = {hook},
                                                 .backward = false,
                                                 .cancelled = request.cancelled}));
  SaeSplice splice{.sae = &sae, .options = {.use_error_term = true}};
  GB_ASSIGN_OR_RETURN(
      ForwardBackwardResult corrupted,
      RunForwardBackward(model, {.tokens = request.corrupted,
                                 .metric = metric,
                                 .splices = {{hook, splice}},
                                 .sae_gradients = {{.splice = 0, .point = SaeHook::kActsPost},
                                                   {.splice = 0, .point = SaeHook::kError}},
                                 .cancelled = request.cancelled}));
  const int64_t rows = pairs * seq;
  const Tensor x_clean = clean.values[0].Reshape({rows, d_in});
  const Tensor x_corrupted = corrupted.splice_inputs[0].Reshape({rows, d_in});
  SaeNormState norm_clean, norm_corrupted;  // for SAEs that normalise each token
  GB_ASSIGN_OR_RETURN(Tensor f_clean, sae.Encode(x_clean, &norm_clean));
  GB_ASSIGN_OR_RETURN(Tensor f_corrupted, sae.Encode(x_corrupted, &norm_corrupted));
  const Tensor& grad = corrupted.sae_gradients[0];
  // The error term e = x − x̂(x), added to the output, is a node too: its gradient is the
  // output's.
  GB_ASSIGN_OR_RETURN(Tensor recons_clean, sae.Decode(f_clean, &norm_clean));
  GB_ASSIGN_OR_RETURN(Tensor recons_corrupted, sae.Decode(f_corrupted, &norm_corrupted));
  const Tensor error_grad = corrupted.sae_gradients[1].Reshape({rows, d_in});

  PatchingResult result;
  result.forward_passes = 2;
  result.backward_passes = 1;
  result.clean_metric = Mean(clean.metric);
  result.corrupted_metric = Mean(corrupted.metric);
  result.dim_names = {"pos", "feature"};
  // Column d_sae of each position is the error node.
  const int64_t nodes = d_sae + 1;
  result.values = Tensor::EmptyHost(DType::kF32, {seq, nodes});
  result.normalized = Tensor::EmptyHost(DType::kF32, {seq, nodes});
  std::vector<double> estimate(seq * nodes, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t pos = r % seq;
    for (int64_t i = 0; i < d_sae; ++i) {
      const int64_t k = r * d_sae + i;
      estimate[pos * nodes + i] +=
          (double{f_clean.data<float>()[k]} - f_corrupted.data<float>()[k]) * grad.data<float>()[k];
    }
    double& error = estimate[pos * nodes + d_sae];
    for (int64_t j = 0; j < d_in; ++j) {
      const int64_t k = r * d_in + j;
      const double e_clean = double{x_clean.data<float>()[k]} - recons_clean.data<float>()[k];
      const double e_corrupted =
          double{x_corrupted.data<float>()[k]} - recons_corrupted.data<float>()[k];
      error += (e_clean - e_corrupted) * error_grad.data<float>()[k];
    }
  }
  const double denominator = result.clean_metric - result.corrupted_metric;
  for (int64_t i = 0; i < seq * nodes; ++i) {
    const double e = estimate[i] / static_cast<double>(pairs);
    result.values.data<float>()[i] = static_cast<float>(result.corrupted_metric + e);
    result.normalized.data<float>()[i] = static_cast<float>(denominator != 0 ? e / denominator : 0);
  }
  return result;
}

}  // namespace glassbox
