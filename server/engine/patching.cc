#include "server/engine/patching.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/engine/host_captures.h"

namespace glassbox {

SweepShape ShapeOf(SweepKind kind) {
  switch (kind) {
    case SweepKind::kResidPre: return {HookKind::kResidPre, true, false};
    case SweepKind::kResidMid: return {HookKind::kResidMid, true, false};
    case SweepKind::kResidPost: return {HookKind::kResidPost, true, false};
    case SweepKind::kAttnOut: return {HookKind::kAttnOut, true, false};
    case SweepKind::kMlpOut: return {HookKind::kMlpOut, true, false};
    case SweepKind::kHeadOutAllPos: return {HookKind::kZ, false, true};
    case SweepKind::kHeadOutByPos: return {HookKind::kZ, true, true};
    case SweepKind::kQAllPos: return {HookKind::kQ, false, true};
    case SweepKind::kKAllPos: return {HookKind::kK, false, true};
    case SweepKind::kVAllPos: return {HookKind::kV, false, true};
    // The head's whole [query, key] pattern, as transformer_lens's layer_head_pattern_patch_setter.
    case SweepKind::kPatternAllPos: return {HookKind::kPattern, false, true};
    // One neuron at every position.
    case SweepKind::kMlpPostAllPos: return {HookKind::kMlpPost, false, false, true};
  }
  return {HookKind::kResidPre, true, false};
}

int64_t HeadsOf(const ModelConfig& c, SweepKind kind) {
  return kind == SweepKind::kKAllPos || kind == SweepKind::kVAllPos ? c.n_kv_heads : c.n_heads;
}

namespace {

// The metric of each row, from the outputs MetricOptions asked for: last-position logits
// [rows, vocab] for the logit difference, log p(token_a) at the last position [rows, 1] (log-probs
// computed by the backend, as every target log-prob is), the per-token loss for the loss.
std::vector<double> RowMetrics(const PatchingMetric& metric, const ForwardOutput& out) {
  std::vector<double> values;
  switch (metric.kind) {
    case PatchingMetric::Kind::kLoss: {
      const int64_t rows = out.loss_per_token.dim(0), n = out.loss_per_token.dim(1);
      for (int64_t r = 0; r < rows; ++r) {
        double sum = 0;
        for (int64_t t = 0; t < n; ++t) sum += out.loss_per_token.data<float>()[r * n + t];
        values.push_back(n > 0 ? sum / n : 0);
      }
      break;
    }
    case PatchingMetric::Kind::kLogProb:
      for (float v : out.target_log_probs.span<float>()) values.push_back(v);
      break;
    case PatchingMetric::Kind::kLogitDiff: {
      const int64_t rows = out.logits.dim(0), vocab = out.logits.dim(1);
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = out.logits.data<float>() + r * vocab;
        values.push_back(static_cast<double>(row[metric.token_a]) - row[metric.token_b]);
      }
      break;
    }
  }
  return values;
}

ForwardOptions MetricOptions(const PatchingMetric& metric, const std::atomic<bool>* cancelled) {
  switch (metric.kind) {
    case PatchingMetric::Kind::kLoss:
      return {.logits = LogitsMode::kNone, .loss_per_token = true, .cancelled = cancelled};
    case PatchingMetric::Kind::kLogProb:
      return {.logits = LogitsMode::kNone, .target_tokens = {metric.token_a},
              .outputs_at = OutputPositions::kLast, .cancelled = cancelled};
    case PatchingMetric::Kind::kLogitDiff: break;
  }
  return {.logits = LogitsMode::kLast, .cancelled = cancelled};
}

double Mean(const std::vector<double>& v, size_t begin, size_t count) {
  double sum = 0;
  for (size_t i = begin; i < begin + count; ++i) sum += v[i];
  return sum / static_cast<double>(count);
}

}  // namespace

Shape SweepResultShape(const ModelConfig& c, SweepKind kind, int64_t seq,
                       std::vector<std::string>* dim_names) {
  const SweepShape shape = ShapeOf(kind);
  Shape out = {c.n_layers};
  *dim_names = {"layer"};
  if (shape.by_position) {
    out.push_back(seq);
    dim_names->push_back("pos");
  }
  if (shape.by_head) {
    out.push_back(HeadsOf(c, kind));
    dim_names->push_back("head");
  }
  if (shape.by_unit) {
    out.push_back(c.d_mlp);
    dim_names->push_back("neuron");
  }
  return out;
}

int64_t SweepCells(const ModelConfig& config, SweepKind kind, int64_t positions) {
  std::vector<std::string> names;
  int64_t cells = 1;
  for (int64_t d : SweepResultShape(config, kind, positions, &names)) cells *= d;
  return cells;
}

absl::Status CheckPatchingRequest(const Transformer& model, const PatchingRequest& request) {
  const ModelConfig& c = model.config();
  const Tensor& clean = request.clean;
  const Tensor& corrupted = request.corrupted;
  if (!clean.defined() || clean.rank() != 2 || clean.dtype() != DType::kI32 ||
      corrupted.shape() != clean.shape() || corrupted.dtype() != DType::kI32) {
    return absl::InvalidArgumentError(
        "patching needs clean and corrupted token tensors of the same shape [pairs, pos]");
  }
  if (request.metric.kind != PatchingMetric::Kind::kLoss) {
    for (int32_t t : {request.metric.token_a, request.metric.token_b}) {
      if (t < 0 || t >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("metric token ", t, " is outside the vocabulary [0, ",
                                                       c.vocab_size, ")"));
      }
    }
  }
  if (model.hooks().Find(ShapeOf(request.kind).hook, 0) < 0) {
    // Only resid_mid can be missing: a parallel attention + MLP block has none.
    return absl::InvalidArgumentError(
        "this model has no hook_resid_mid (its attention and MLP run in parallel); sweep "
        "resid_pre, resid_post, attn_out or mlp_out instead");
  }
  return absl::OkStatus();
}

absl::StatusOr<PatchingResult> RunPatchingSweep(const Transformer& model,
                                                const PatchingRequest& request) {
  GB_RETURN_IF_ERROR(CheckPatchingRequest(model, request));
  const ModelConfig& c = model.config();
  const Tensor& clean = request.clean;
  const Tensor& corrupted = request.corrupted;
  const int64_t pairs = clean.dim(0), seq = clean.dim(1);
  const SweepShape shape = ShapeOf(request.kind);
  const HookRegistry& hooks = model.hooks();
  const int64_t heads = HeadsOf(c, request.kind);

  // The clean run, keeping the swept hook at every layer.
  HookPlan clean_plan(hooks);
  for (int l = 0; l < c.n_layers; ++l) clean_plan.CaptureId(hooks.Find(shape.hook, l));
  HostCaptures clean_values(model.backend());
  const ForwardOptions options = MetricOptions(request.metric, request.cancelled);
  GB_ASSIGN_OR_RETURN(ForwardOutput clean_out, model.Forward({.tokens = clean}, clean_plan, &clean_values, options));
  HookPlan empty(hooks);
  GB_ASSIGN_OR_RETURN(ForwardOutput corrupted_out, model.Forward({.tokens = corrupted}, empty, nullptr, options));
  PatchingResult result;
  result.forward_passes = 2;
  const std::vector<double> clean_rows = RowMetrics(request.metric, clean_out);
  const std::vector<double> corrupted_rows = RowMetrics(request.metric, corrupted_out);
  result.clean_metric = Mean(clean_rows, 0, pairs);
  result.corrupted_metric = Mean(corrupted_rows, 0, pairs);

  struct Cell {
    int layer;
    int32_t pos;
    int32_t head;
    int32_t unit;
  };
  std::vector<Cell> cells;
  const Shape out_shape = SweepResultShape(c, request.kind, seq, &result.dim_names);
  for (int l = 0; l < c.n_layers; ++l) {
    for (int32_t p = 0; p < (shape.by_position ? seq : 1); ++p) {
      for (int32_t h = 0; h < (shape.by_head ? heads : 1); ++h) {
        for (int32_t u = 0; u < (shape.by_unit ? c.d_mlp : 1); ++u) cells.push_back({l, p, h, u});
      }
    }
  }

  result.values = Tensor::EmptyHost(DType::kF32, out_shape);
  result.normalized = Tensor::EmptyHost(DType::kF32, out_shape);
  const int64_t cells_per_pass = std::max<int64_t>(1, request.max_rows_per_pass / pairs);
  for (size_t first = 0; first < cells.size(); first += cells_per_pass) {
    const size_t count = std::min<size_t>(cells_per_pass, cells.size() - first);
    const int64_t rows = static_cast<int64_t>(count) * pairs;
    Tensor tokens = Tensor::EmptyHost(DType::kI32, {rows, seq});
    std::vector<int32_t> source_rows(rows);
    for (int64_t r = 0; r < rows; ++r) {
      std::copy_n(corrupted.data<int32_t>() + (r % pairs) * seq, seq, tokens.data<int32_t>() + r * seq);
      source_rows[r] = static_cast<int32_t>(r % pairs);
    }
    HookPlan plan(hooks);
    for (size_t i = 0; i < count; ++i) {
      const Cell& cell = cells[first + i];
      Intervention patch{.hook = hooks.Find(shape.hook, cell.layer), .kind = InterventionKind::kPatchFrom};
      for (int64_t b = 0; b < pairs; ++b) patch.select.rows.push_back(static_cast<int32_t>(i * pairs + b));
      if (shape.by_position) patch.select.positions = {cell.pos};
      if (shape.by_head) patch.select.heads = {cell.head};
      if (shape.by_unit) patch.select.dims = {cell.unit};
      patch.value = clean_values.at(patch.hook);
      patch.source_rows = source_rows;
      GB_RETURN_IF_ERROR(plan.AddIntervention(std::move(patch)));
    }
    GB_ASSIGN_OR_RETURN(ForwardOutput out, model.Forward({.tokens = tokens}, plan, nullptr, options));
    ++result.forward_passes;
    const std::vector<double> row_metrics = RowMetrics(request.metric, out);
    for (size_t i = 0; i < count; ++i) {
      const double m = Mean(row_metrics, i * pairs, pairs);
      const double denominator = result.clean_metric - result.corrupted_metric;
      result.values.data<float>()[first + i] = static_cast<float>(m);
      result.normalized.data<float>()[first + i] =
          static_cast<float>(denominator != 0 ? (m - result.corrupted_metric) / denominator : 0);
    }
  }
  return result;
}

}  // namespace glassbox
