#include "server/engine/gradients.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "server/engine/backward_walk.h"
#include "server/engine/hook_plan.h"
#include "server/engine/host_captures.h"
#include "server/engine/host_math.h"
#include "server/engine/sae/feature_gradient.h"

namespace glassbox {
namespace {

absl::Status CheckMetric(const GradientMetric& m, const std::vector<int64_t>& lengths,
                         int64_t vocab) {
  const bool ragged =
      std::adjacent_find(lengths.begin(), lengths.end(), std::not_equal_to<>()) != lengths.end();
  for (size_t b = 0; b < lengths.size(); ++b) {
    const int64_t n = lengths[b];
    const std::string row = ragged ? absl::StrCat(" (row ", b, ")") : "";
    if (m.kind != GradientMetric::Kind::kLoss && (m.position < -n || m.position >= n))
      return absl::InvalidArgumentError(absl::StrCat("the metric's position ", m.position,
                                                     " is outside rows of ", n, " tokens", row));
    if (m.kind == GradientMetric::Kind::kLoss && n < 2)
      return absl::InvalidArgumentError(absl::StrCat(
          "the loss metric needs rows of at least 2 tokens (each position predicts the next)",
          row));
  }
  if (IsHookMetric(m.kind)) return absl::OkStatus();
  for (int32_t token : {m.token_a, m.token_b}) {
    if (token < 0 || token >= vocab)
      return absl::InvalidArgumentError(absl::StrCat(
          "the metric's token ", token, " is outside the vocabulary [0, ", vocab, ")"));
  }
  return absl::OkStatus();
}

// Each row's metric and its gradient at the logits: nonzero at the flattened rows `rows` only.
struct MetricAtLogits {
  std::vector<double> values;
  std::vector<int64_t> rows;
  Tensor dlogits;  // [rows.size(), vocab]
};

// `logits` holds every position ([batch * seq, vocab]) or, when `last_only`, each row's last
// real one. The gradient only `with_gradient` (a backward pass follows).
MetricAtLogits EvaluateMetric(const GradientMetric& m, const Tensor& tokens,
                              const std::vector<int64_t>& lengths, const Tensor& logits,
                              bool last_only, bool with_gradient) {
  const int64_t batch = tokens.dim(0), seq = tokens.dim(1), vocab = logits.dim(-1);
  MetricAtLogits out;
  const bool loss = m.kind == GradientMetric::Kind::kLoss;
  std::vector<size_t> first(batch + 1, 0);  // row b's entries of out.rows: [first[b], first[b+1])
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = lengths[b];
    if (loss) {
      for (int64_t t = 0; t + 1 < n; ++t) out.rows.push_back(b * seq + t);
    } else {
      out.rows.push_back(b * seq + (m.position >= 0 ? m.position : n + m.position));
    }
    first[b + 1] = out.rows.size();
  }
  // Without a gradient, one scratch row takes the writes.
  out.dlogits = Tensor::ZerosHost(
      DType::kF32, {with_gradient ? static_cast<int64_t>(out.rows.size()) : 1, vocab});
  for (int64_t b = 0; b < batch; ++b) {
    double value = 0;
    const double count = static_cast<double>(first[b + 1] - first[b]);
    for (size_t i = first[b]; i < first[b + 1]; ++i) {
      const int64_t row = out.rows[i];
      const float* x = logits.data<float>() + (last_only ? b : row) * vocab;
      float* d = out.dlogits.data<float>() + (with_gradient ? i : 0) * vocab;
      switch (m.kind) {
        case GradientMetric::Kind::kLogit:
          value = x[m.token_a];
          d[m.token_a] += 1;
          break;
        case GradientMetric::Kind::kLogitDiff:
          value = double{x[m.token_a]} - x[m.token_b];
          d[m.token_a] += 1;
          d[m.token_b] -= 1;
          break;
        case GradientMetric::Kind::kLogProb: {
          const double lse = LogSumExp(x, vocab);
          value = x[m.token_a] - lse;
          for (int64_t j = 0; j < vocab; ++j) d[j] = static_cast<float>(-std::exp(x[j] - lse));
          d[m.token_a] += 1;
          break;
        }
        case GradientMetric::Kind::kLoss: {
          // The mean over the row's real positions of -log p(next token).
          const double lse = LogSumExp(x, vocab);
          const int32_t next = tokens.data<int32_t>()[row + 1];
          value += (lse - x[next]) / count;
          for (int64_t j = 0; j < vocab; ++j) {
            d[j] = static_cast<float>(std::exp(x[j] - lse) / count);
          }
          d[next] -= static_cast<float>(1 / count);
          break;
        }
      }
    }
    out.values.push_back(value);
  }
  return out;
}

// Soft-capped logits (Gemma-2) are cap · tanh(raw / cap): the gradient at the unembedding's output
// is the one at the logits times 1 − (logits / cap)². `logits` as EvaluateMetric read them.
void ThroughFinalSoftcap(double cap, const Tensor& logits, bool last_only, MetricAtLogits& m) {
  const int64_t vocab = logits.dim(-1);
  for (size_t i = 0; i < m.rows.size(); ++i) {
    const float* x = logits.data<float>() + (last_only ? i : m.rows[i]) * vocab;
    float* d = m.dlogits.data<float>() + i * vocab;
    for (int64_t j = 0; j < vocab; ++j) {
      const double t = x[j] / cap;
      d[j] = static_cast<float>(d[j] * (1 - t * t));
    }
  }
}

// A metric at a hook: each row's value, and the seed of the backward (its gradient at the hook,
// the hook's shape: nonzero at each row's metric position only).
struct MetricAtHook {
  std::vector<double> values;
  Tensor seed;
};

absl::StatusOr<MetricAtHook> EvaluateHookMetric(const GradientMetric& m, const HookInfo& info,
                                                const Tensor& value,
                                                const std::vector<int64_t>& lengths, int64_t seq) {
  const int64_t batch = static_cast<int64_t>(lengths.size());
  const int64_t per = value.numel() / (batch * seq);  // elements at one position
  std::vector<int64_t> rows;                          // b * seq + the metric's position in row b
  for (int64_t b = 0; b < batch; ++b) {
    rows.push_back(b * seq + (m.position >= 0 ? m.position : lengths[b] + m.position));
  }
  MetricAtHook out{.seed = Tensor::ZerosHost(DType::kF32, value.shape())};
  float* seed = out.seed.data<float>();
  const float* x = value.data<float>();
  if (m.kind == GradientMetric::Kind::kDirection) {
    if (!m.direction.defined() || m.direction.numel() != per)
      return absl::InvalidArgumentError(absl::StrCat(
          "the metric's direction has ", m.direction.defined() ? m.direction.numel() : 0,
          " values; ", info.name, " has ", per, " at one position"));
    const float* v = m.direction.data<float>();
    for (int64_t r : rows) {
      double dot = 0;
      for (int64_t i = 0; i < per; ++i) dot += double{x[r * per + i]} * v[i];
      out.values.push_back(dot);
      std::copy_n(v, per, seed + r * per);
    }
    return out;
  }
  if (m.sae == nullptr || m.sae->d_in() != per)
    return absl::InvalidArgumentError(absl::StrCat("the metric's SAE reads ",
                                                   m.sae == nullptr ? 0 : m.sae->d_in(),
                                                   " values per token; ", info.name, " has ", per));
  Tensor inputs = Tensor::EmptyHost(DType::kF32, {batch, per});
  for (int64_t b = 0; b < batch; ++b) {
    std::copy_n(x + rows[b] * per, per, inputs.data<float>() + b * per);
  }
  GB_ASSIGN_OR_RETURN(FeatureGradients f, FeatureInputGradients(*m.sae, inputs, m.feature));
  for (int64_t b = 0; b < batch; ++b) {
    std::copy_n(f.gradients.data<float>() + b * per, per, seed + rows[b] * per);
  }
  out.values = std::move(f.values);
  return out;
}

}  // namespace

bool IsMetricHookKind(HookKind kind) {
  return IsEditableHook(kind) && EditAxesOf(kind) == EditAxes::kTokens;
}

bool IsHookMetric(GradientMetric::Kind kind) {
  return kind == GradientMetric::Kind::kDirection || kind == GradientMetric::Kind::kSaeFeature;
}

absl::StatusOr<ForwardBackwardResult> RunForwardBackward(const Transformer& model,
                                                         const ForwardBackwardRequest& request) {
  const ModelConfig& c = model.config();
  const Tensor& tokens = request.tokens;
  if (tokens.rank() != 2 || tokens.dtype() != DType::kI32 || tokens.dim(0) < 1 || tokens.dim(1) < 1)
    return absl::InvalidArgumentError("gradients need tokens as i32 [batch, seq], not empty");
  const int64_t batch = tokens.dim(0), seq = tokens.dim(1);
  GB_ASSIGN_OR_RETURN(std::vector<int64_t> lengths, RowLengths(tokens, request.attention_mask));
  const GradientMetric& m = request.metric;
  GB_RETURN_IF_ERROR(CheckMetric(m, lengths, c.vocab_size));
  for (const SaeHookRef& ref : request.sae_gradients) {
    if (ref.splice < 0 || ref.splice >= static_cast<int>(request.splices.size()))
      return absl::InvalidArgumentError("a gradient asks for a hook_sae_* point of no splice");
  }
  for (const std::vector<HookId>* ids : {&request.values, &request.gradients}) {
    for (HookId id : *ids) {
      if (id < 0 || id >= model.hooks().size())
        return absl::InvalidArgumentError("a gradient asks for a hook the model does not have");
    }
  }

  // A metric at a hook starts the backward at the hook's block, without logits.
  const bool at_hook = IsHookMetric(m.kind);
  int top_layer = static_cast<int>(c.n_layers) - 1;
  if (at_hook) {
    if (m.hook < 0 || m.hook >= model.hooks().size())
      return absl::InvalidArgumentError("the metric reads a hook the model does not have");
    const HookInfo& info = model.hooks().info(m.hook);
    if (!IsMetricHookKind(info.kind))
      return absl::InvalidArgumentError(absl::StrCat(
          "a metric can read a token activation (the residual stream, attn_out, mlp_out, "
          "hook_q/k/v/z, the MLP's pre/post, the embeddings); ",
          info.name, " is not one"));
    top_layer = info.layer;
  }

  // The forward pass, keeping what the backward reads and what the caller asked for. Logits at
  // the last positions only, when the metric reads nothing else.
  HookPlan plan(model.hooks());
  if (request.backward) {
    for (HookId id : BackwardInputs(model, top_layer, /*final_norm=*/!at_hook)) {
      if (id >= 0) plan.CaptureId(id);
    }
  }
  if (at_hook) plan.CaptureId(m.hook);
  for (HookId id : request.values) plan.CaptureId(id);
  // The hooks whose edits' backward reads the value before them (a projection cap's clamps,
  // softmax's output under a pattern's edits), captured under ids past the registry and the
  // splices' points.
  std::vector<HookId> edit_inputs;
  for (const Intervention& edit : request.interventions) {
    GB_RETURN_IF_ERROR(plan.AddIntervention(edit));
    if (!request.backward) continue;
    // A pattern's edits also hide softmax's output, which its backward reads.
    const bool reads_before =
        BackwardReadsInput(edit) || model.hooks().info(edit.hook).kind == HookKind::kPattern;
    if (reads_before && plan.BeforeEditsCaptureId(edit.hook) < 0) {
      plan.CaptureBeforeEdits(
          edit.hook,
          model.hooks().size() +
              static_cast<HookId>(request.splices.size() * kNumSaeHooks + edit_inputs.size()));
      edit_inputs.push_back(edit.hook);
    }
  }
  // Each splice also hands its input (hook_sae_input) to the capture, under an id past the
  // model's registry: the backward reads which features fired.
  constexpr int kInput = static_cast<int>(SaeHook::kInput);
  std::vector<HookId> splice_inputs;
  for (const auto& [hook, given] : request.splices) {
    if (hook < 0 || hook >= model.hooks().size() || given.sae == nullptr)
      return absl::InvalidArgumentError("a splice needs an SAE and a hook the model has");
    SaeSplice splice = given;
    if (splice.capture_ids[kInput] < 0) {
      splice.options.capture[kInput] = true;
      // The numbering the service gives hook_sae_* captures: no clash with the caller's.
      splice.capture_ids[kInput] =
          model.hooks().size() + static_cast<HookId>(splice_inputs.size()) * kNumSaeHooks + kInput;
      splice.capture_infos[kInput] =
          SaeHookInfo(model.hooks().info(hook), *splice.sae, SaeHook::kInput);
    }
    splice_inputs.push_back(splice.capture_ids[kInput]);
    GB_RETURN_IF_ERROR(plan.AddSaeSplice(hook, std::move(splice)));
  }
  const bool unpadded = !request.attention_mask.defined();
  const bool last_only = m.kind != GradientMetric::Kind::kLoss &&
                         (m.position == -1 || (unpadded && m.position == seq - 1));
  HostCaptures captured(model.backend());
  const LogitsMode logits = at_hook     ? LogitsMode::kNone
                            : last_only ? LogitsMode::kLast
                                        : LogitsMode::kAll;
  GB_ASSIGN_OR_RETURN(
      ForwardOutput out,
      model.Forward({.tokens = tokens, .attention_mask = request.attention_mask}, plan, &captured,
                    {.logits = logits, .cancelled = request.cancelled}));
  MetricAtLogits metric;
  MetricAtHook hook_metric;
  if (at_hook) {
    GB_ASSIGN_OR_RETURN(hook_metric, EvaluateHookMetric(m, model.hooks().info(m.hook),
                                                        captured.at(m.hook), lengths, seq));
  } else {
    metric = EvaluateMetric(m, tokens, lengths, out.logits, last_only, request.backward);
  }

  ForwardBackwardResult result;
  result.metric = at_hook ? std::move(hook_metric.values) : std::move(metric.values);
  for (HookId id : request.values) result.values.push_back(captured.at(id));
  for (HookId id : splice_inputs) result.splice_inputs.push_back(captured.at(id));
  if (!request.backward) return result;
  if (request.cancelled != nullptr && request.cancelled->load())
    return absl::CancelledError("cancelled before the backward pass");
  if (c.final_softcap > 0 && !at_hook) {
    ThroughFinalSoftcap(c.final_softcap, out.logits, last_only, metric);
  }
  TokenLayout layout;
  if (!request.interventions.empty()) {
    layout = TokenLayout::FromMask(
        request.attention_mask.defined()
            ? request.attention_mask
            : Tensor::FromHost(std::vector<int32_t>(batch * seq, 1), {batch, seq}));
  }
  BackwardWalk backward(model, captured, batch, seq, request.gradients, request.interventions,
                        std::move(layout));
  for (size_t i = 0; i < request.splices.size(); ++i) {
    const auto& [hook, splice] = request.splices[i];
    backward.AddSplice(hook, *splice.sae, splice.options, captured.at(splice_inputs[i]));
  }
  for (HookId hook : edit_inputs) {
    backward.AddEditInput(hook, captured.at(plan.BeforeEditsCaptureId(hook)));
  }
  if (at_hook) {
    backward.AddSeed(m.hook, std::move(hook_metric.seed));
    GB_RETURN_IF_ERROR(backward.FromSeeds(top_layer));
  } else {
    GB_RETURN_IF_ERROR(backward.FromLogits(metric.dlogits, metric.rows));
  }
  for (const SaeHookRef& ref : request.sae_gradients) {
    const auto& [hook, splice] = request.splices[ref.splice];
    const Tensor& grad = backward.splice_gradient(hook, ref.point);
    const Shape shape =
        SaeHookInfo(model.hooks().info(hook), *splice.sae, ref.point).ShapeFor(batch, seq);
    // Undefined above the metric's block: the metric does not depend on it.
    result.sae_gradients.push_back(grad.defined() ? grad.Reshape(shape)
                                                  : Tensor::ZerosHost(DType::kF32, shape));
  }
  for (HookId id : request.gradients) {
    if (backward.gradient(id).defined()) {
      result.gradients.push_back(backward.gradient(id));
    } else if (at_hook) {
      // Above the metric's block (or the final norm): the metric does not depend on it.
      result.gradients.push_back(
          Tensor::ZerosHost(DType::kF32, model.hooks().info(id).ShapeFor(batch, seq)));
    } else {
      return absl::UnimplementedError(
          absl::StrCat("no gradient is computed at ", model.hooks().info(id).name, " yet"));
    }
  }
  return result;
}

absl::StatusOr<GradientResult> ComputeGradients(const Transformer& model,
                                                const GradientRequest& request) {
  GB_ASSIGN_OR_RETURN(ForwardBackwardResult r,
                      RunForwardBackward(model, {.tokens = request.tokens,
                                                 .attention_mask = request.attention_mask,
                                                 .metric = request.metric,
                                                 .interventions = request.interventions,
                                                 .splices = request.splices,
                                                 .gradients = request.hooks,
                                                 .sae_gradients = request.sae_hooks,
                                                 .cancelled = request.cancelled}));
  return GradientResult{.metric = std::move(r.metric),
                        .gradients = std::move(r.gradients),
                        .sae_gradients = std::move(r.sae_gradients)};
}

absl::StatusOr<std::vector<int64_t>> RowLengths(const Tensor& tokens, const Tensor& mask) {
  const int64_t batch = tokens.dim(0), seq = tokens.dim(1);
  if (!mask.defined()) return std::vector<int64_t>(batch, seq);
  if (mask.dtype() != DType::kI32 || mask.shape() != tokens.shape())
    return absl::InvalidArgumentError("the attention mask must be i32 of the tokens' shape");
  std::vector<int64_t> lengths;
  for (int64_t b = 0; b < batch; ++b) {
    const int32_t* row = mask.data<int32_t>() + b * seq;
    int64_t n = 0;
    while (n < seq && row[n] != 0) ++n;
    for (int64_t t = n; t < seq; ++t) {
      if (row[t] != 0)
        return absl::InvalidArgumentError(
            "gradients take right-padded rows: each row's real tokens first, then padding");
    }
    if (n == 0) return absl::InvalidArgumentError(absl::StrCat("row ", b, " has no real token"));
    lengths.push_back(n);
  }
  return lengths;
}

}  // namespace glassbox
