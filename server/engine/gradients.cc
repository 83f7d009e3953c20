#include "server/engine/gradients.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "server/engine/backward_ops.h"
#include "server/engine/hook_plan.h"
#include "server/engine/host_captures.h"
#include "server/engine/host_math.h"

namespace glassbox {
namespace {

// The backward walk: the gradient at every hook, filled from the logits down.
class Backward {
 public:
  // Gradients are kept at the `wanted` hooks only; the walk itself needs none of them kept.
  Backward(const Transformer& model, const HostCaptures& captured, int64_t batch, int64_t seq,
           const std::vector<HookId>& wanted)
      : model_(model),
        c_(model.config()),
        captured_(captured),
        batch_(batch),
        seq_(seq),
        wanted_(model.hooks().size()),
        grads_(model.hooks().size()) {
    for (HookId id : wanted) wanted_[id] = true;
  }

  // `dlogits` [rows.size(), vocab] holds the gradient at the logits of the flattened rows
  // `rows` (b * seq + position); every other row's is zero, so the unembedding's backward runs
  // over those rows only.
  absl::Status Run(const Tensor& dlogits, const std::vector<int64_t>& rows) {
    const ModelWeights& w = model_.weights();
    const bool centered = c_.norm == NormKind::kLayerNorm;
    GB_ASSIGN_OR_RETURN(Tensor unembed, Host(w.unembed));
    GB_ASSIGN_OR_RETURN(Tensor dy_rows, backward::LinearInputBackward(dlogits, unembed));
    const int64_t d = c_.d_model;
    Tensor dy = Tensor::ZerosHost(DType::kF32, {batch_ * seq_, d});
    for (size_t i = 0; i < rows.size(); ++i) {
      std::copy_n(dy_rows.data<float>() + i * d, d, dy.data<float>() + rows[i] * d);
    }
    GB_ASSIGN_OR_RETURN(Tensor d_resid,
                        Norm(dy, HookKind::kLnFinalNormalized, HookKind::kLnFinalScale, -1,
                             w.ln_final_w, centered));
    for (int l = static_cast<int>(c_.n_layers) - 1; l >= 0; --l) {
      GB_ASSIGN_OR_RETURN(d_resid, Block(l, std::move(d_resid), centered));
    }
    Set(HookKind::kEmbed, -1, d_resid);
    Set(HookKind::kPosEmbed, -1, d_resid);
    return absl::OkStatus();
  }

  const Tensor& gradient(HookId id) const { return grads_[id]; }

 private:
  absl::StatusOr<Tensor> Host(const Tensor& t) const { return CopyToHostF32(model_.backend(), t); }
  const Tensor& Captured(HookKind kind, int layer) const {
    return captured_.at(model_.hooks().Find(kind, layer));
  }
  // Stores `grad` at the hook (when the model has it) in the hook's shape.
  bool Wanted(HookKind kind, int layer) const {
    const HookId id = model_.hooks().Find(kind, layer);
    return id >= 0 && wanted_[id];
  }
  void Set(HookKind kind, int layer, const Tensor& grad) {
    const HookId id = model_.hooks().Find(kind, layer);
    if (id < 0 || !wanted_[id]) return;
    grads_[id] = grad.Reshape(model_.hooks().info(id).ShapeFor(batch_, seq_));
  }

  // A norm's backward from the gradient at its output; returns the gradient at its input.
  absl::StatusOr<Tensor> Norm(const Tensor& dy, HookKind normalized, HookKind scale, int layer,
                              const Tensor& weight, bool centered) {
    GB_ASSIGN_OR_RETURN(Tensor w, Host(weight));
    backward::NormGrads g = backward::NormBackward(
        dy.Reshape(Captured(normalized, layer).shape()), Captured(normalized, layer),
        Captured(scale, layer), w, centered);
    Set(normalized, layer, g.normalized);
    Set(scale, layer, g.scale);
    return g.input;
  }

  // Block `l` from the gradient at its hook_resid_post to the gradient at its hook_resid_pre.
  absl::StatusOr<Tensor> Block(int l, Tensor d_post, bool centered) {
    const BlockWeights& w = model_.weights().blocks[l];
    const int64_t rows = batch_ * seq_, d = c_.d_model;
    Set(HookKind::kResidPost, l, d_post);
    Set(HookKind::kMlpOut, l, d_post);
    // MLP: mlp_out = act(pre) · W_outᵀ + b, pre = ln2(resid_mid) · W_inᵀ + b.
    GB_ASSIGN_OR_RETURN(Tensor out_w, Host(w.out_w));
    GB_ASSIGN_OR_RETURN(Tensor d_act, backward::LinearInputBackward(d_post, out_w));
    Set(HookKind::kMlpPost, l, d_act);
    const Tensor& pre = Captured(HookKind::kMlpPre, l);
    Tensor d_pre = backward::ActivationBackward(c_.act, d_act, pre);
    Set(HookKind::kMlpPre, l, d_pre);
    GB_ASSIGN_OR_RETURN(Tensor in_w, Host(w.in_w));
    GB_ASSIGN_OR_RETURN(Tensor d_ln2, backward::LinearInputBackward(d_pre, in_w));
    GB_ASSIGN_OR_RETURN(Tensor d_mid_norm, Norm(d_ln2, HookKind::kLn2Normalized,
                                                HookKind::kLn2Scale, l, w.ln2_w, centered));
    Tensor d_mid = Sum(d_post, d_mid_norm);
    Set(HookKind::kResidMid, l, d_mid);
    Set(HookKind::kAttnOut, l, d_mid);
    // hook_result: attn_out = Σ_h result_h + b_O, so each head's result gets attn_out's gradient.
    const int64_t heads = c_.n_heads, kv_heads = c_.n_kv_heads, dh = c_.d_head;
    if (Wanted(HookKind::kResult, l)) {
      Tensor d_result = Tensor::EmptyHost(DType::kF32, {rows, heads, d});
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t h = 0; h < heads; ++h) {
          std::copy_n(d_mid.data<float>() + r * d, d,
                      d_result.data<float>() + (r * heads + h) * d);
        }
      }
      Set(HookKind::kResult, l, d_result);
    }
    // Attention: attn_out = z · W_Oᵀ + b.
    GB_ASSIGN_OR_RETURN(Tensor o_w, Host(w.o_w));
    GB_ASSIGN_OR_RETURN(Tensor d_z, backward::LinearInputBackward(d_mid, o_w));
    const Tensor& q = Captured(HookKind::kQ, l);
    Set(HookKind::kZ, l, d_z);
    double scale = c_.attn_scale;
    if (c_.attn_scale_by_layer) scale /= static_cast<double>(l + 1);
    backward::AttentionGrads a = backward::AttentionBackward(
        d_z.Reshape(q.shape()), q, Captured(HookKind::kK, l), Captured(HookKind::kV, l),
        Captured(HookKind::kPattern, l), scale);
    Set(HookKind::kPattern, l, a.pattern);
    Set(HookKind::kAttnScores, l, a.scores);
    Set(HookKind::kQ, l, a.q);
    Set(HookKind::kK, l, a.k);
    Set(HookKind::kV, l, a.v);
    // q, k and v from one projection whose rows are q's, then k's, then v's.
    const int64_t wq = heads * dh, wkv = kv_heads * dh, width = wq + 2 * wkv;
    Tensor d_qkv = Tensor::EmptyHost(DType::kF32, {rows, width});
    for (int64_t r = 0; r < rows; ++r) {
      float* out = d_qkv.data<float>() + r * width;
      std::copy_n(a.q.data<float>() + r * wq, wq, out);
      std::copy_n(a.k.data<float>() + r * wkv, wkv, out + wq);
      std::copy_n(a.v.data<float>() + r * wkv, wkv, out + wq + wkv);
    }
    GB_ASSIGN_OR_RETURN(Tensor qkv_w, Host(w.qkv_w));
    GB_ASSIGN_OR_RETURN(Tensor d_ln1, backward::LinearInputBackward(d_qkv, qkv_w));
    GB_ASSIGN_OR_RETURN(Tensor d_pre_norm, Norm(d_ln1, HookKind::kLn1Normalized,
                                                HookKind::kLn1Scale, l, w.ln1_w, centered));
    Tensor d_pre_resid = Sum(d_mid, d_pre_norm);
    Set(HookKind::kResidPre, l, d_pre_resid);
    return d_pre_resid;
  }

  static Tensor Sum(const Tensor& a, const Tensor& b) {
    Tensor out = Tensor::EmptyHost(DType::kF32, a.shape());
    for (int64_t i = 0; i < a.numel(); ++i) {
      out.data<float>()[i] = a.data<float>()[i] + b.data<float>()[i];
    }
    return out;
  }

  const Transformer& model_;
  const ModelConfig& c_;
  const HostCaptures& captured_;
  const int64_t batch_, seq_;
  std::vector<bool> wanted_;   // by HookId
  std::vector<Tensor> grads_;  // by HookId
};

}  // namespace

absl::Status CheckGradientsSupported(const ModelConfig& c) {
  std::vector<std::string> missing;
  if (c.norm_placement != NormPlacement::kPre) missing.push_back("norms after attention or the MLP");
  if (c.parallel_attn_mlp) missing.push_back("attention and MLP in parallel");
  if (c.positional != PositionalKind::kLearned) missing.push_back("rotary positions");
  if (c.gated_mlp) missing.push_back("a gated MLP");
  if (c.qk_norm != QkNorm::kNone) missing.push_back("q/k norms");
  if (c.attn_softcap != 0 || c.final_softcap != 0) missing.push_back("soft-capping");
  if (c.sliding_window > 0) missing.push_back("sliding-window attention");
  if (c.embed_scale != 1) missing.push_back("a scaled embedding");
  if (missing.empty()) return absl::OkStatus();
  return absl::UnimplementedError(absl::StrCat(
      "gradients are implemented for GPT-2-style blocks so far; model type \"", c.model_type,
      "\" has ", absl::StrJoin(missing, ", ")));
}

namespace {

// The hooks whose forward values the backward walk reads.
std::vector<HookId> BackwardInputs(const Transformer& model) {
  const HookRegistry& hooks = model.hooks();
  std::vector<HookId> ids = {hooks.Find(HookKind::kLnFinalNormalized, -1),
                             hooks.Find(HookKind::kLnFinalScale, -1)};
  for (int l = 0; l < model.config().n_layers; ++l) {
    for (HookKind kind : {HookKind::kLn1Normalized, HookKind::kLn1Scale, HookKind::kLn2Normalized,
                          HookKind::kLn2Scale, HookKind::kMlpPre, HookKind::kQ, HookKind::kK,
                          HookKind::kV, HookKind::kPattern}) {
      ids.push_back(hooks.Find(kind, l));
    }
  }
  return ids;
}

absl::Status CheckMetric(const GradientMetric& m, int64_t seq, int64_t vocab) {
  if (m.kind != GradientMetric::Kind::kLoss && (m.position < -seq || m.position >= seq))
    return absl::InvalidArgumentError(absl::StrCat("the metric's position ", m.position,
                                                   " is outside rows of ", seq, " tokens"));
  if (m.kind == GradientMetric::Kind::kLoss && seq < 2)
    return absl::InvalidArgumentError(
        "the loss metric needs rows of at least 2 tokens (each position predicts the next)");
  for (int32_t token : {m.token_a, m.token_b}) {
    if (token < 0 || token >= vocab)
      return absl::InvalidArgumentError(absl::StrCat("the metric's token ", token,
                                                     " is outside the vocabulary [0, ", vocab,
                                                     ")"));
  }
  return absl::OkStatus();
}

// log Σ exp(logits), in double.
double LogSumExp(const float* logits, int64_t vocab) {
  double most = logits[0], sum = 0;
  for (int64_t j = 1; j < vocab; ++j) most = std::max(most, double{logits[j]});
  for (int64_t j = 0; j < vocab; ++j) sum += std::exp(logits[j] - most);
  return most + std::log(sum);
}

// Each row's metric and its gradient at the logits: nonzero at the flattened rows `rows` only.
struct MetricAtLogits {
  std::vector<double> values;
  std::vector<int64_t> rows;
  Tensor dlogits;  // [rows.size(), vocab]
};

// `logits` holds every position ([batch * seq, vocab]) or, when `last_only`, each row's last.
MetricAtLogits EvaluateMetric(const GradientMetric& m, const Tensor& tokens, const Tensor& logits,
                              bool last_only) {
  const int64_t batch = tokens.dim(0), seq = tokens.dim(1), vocab = logits.dim(-1);
  MetricAtLogits out;
  const bool loss = m.kind == GradientMetric::Kind::kLoss;
  const int64_t p = m.position >= 0 ? m.position : seq + m.position;
  for (int64_t b = 0; b < batch; ++b) {
    if (loss) {
      for (int64_t t = 0; t + 1 < seq; ++t) out.rows.push_back(b * seq + t);
    } else {
      out.rows.push_back(b * seq + p);
    }
  }
  out.dlogits = Tensor::ZerosHost(DType::kF32, {static_cast<int64_t>(out.rows.size()), vocab});
  const int64_t per_row = static_cast<int64_t>(out.rows.size()) / batch;
  for (int64_t b = 0; b < batch; ++b) {
    double value = 0;
    for (int64_t i = b * per_row; i < (b + 1) * per_row; ++i) {
      const int64_t row = out.rows[i];
      const float* x = logits.data<float>() + (last_only ? b : row) * vocab;
      float* d = out.dlogits.data<float>() + i * vocab;
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
          // The mean over the row's positions of -log p(next token).
          const double lse = LogSumExp(x, vocab), n = static_cast<double>(per_row);
          const int32_t next = tokens.data<int32_t>()[row + 1];
          value += (lse - x[next]) / n;
          for (int64_t j = 0; j < vocab; ++j) d[j] = static_cast<float>(std::exp(x[j] - lse) / n);
          d[next] -= static_cast<float>(1 / n);
          break;
        }
      }
    }
    out.values.push_back(value);
  }
  return out;
}

}  // namespace

absl::StatusOr<ForwardBackwardResult> RunForwardBackward(const Transformer& model,
                                                         const ForwardBackwardRequest& request) {
  const ModelConfig& c = model.config();
  GB_RETURN_IF_ERROR(CheckGradientsSupported(c));
  const Tensor& tokens = request.tokens;
  if (tokens.rank() != 2 || tokens.dtype() != DType::kI32 || tokens.dim(0) < 1 ||
      tokens.dim(1) < 1)
    return absl::InvalidArgumentError("gradients need tokens as i32 [batch, seq], not empty");
  const int64_t batch = tokens.dim(0), seq = tokens.dim(1);
  const GradientMetric& m = request.metric;
  GB_RETURN_IF_ERROR(CheckMetric(m, seq, c.vocab_size));
  for (const std::vector<HookId>* ids : {&request.values, &request.gradients}) {
    for (HookId id : *ids) {
      if (id < 0 || id >= model.hooks().size())
        return absl::InvalidArgumentError("a gradient asks for a hook the model does not have");
    }
  }

  // The forward pass, keeping what the backward reads and what the caller asked for. Logits at
  // the last positions only, when the metric reads nothing else.
  HookPlan plan(model.hooks());
  if (request.backward) {
    for (HookId id : BackwardInputs(model)) {
      if (id >= 0) plan.CaptureId(id);
    }
  }
  for (HookId id : request.values) plan.CaptureId(id);
  for (const Intervention& edit : request.interventions) {
    GB_RETURN_IF_ERROR(plan.AddIntervention(edit));
  }
  const bool last_only =
      m.kind != GradientMetric::Kind::kLoss && (m.position == -1 || m.position == seq - 1);
  HostCaptures captured(model.backend());
  GB_ASSIGN_OR_RETURN(
      ForwardOutput out,
      model.Forward({.tokens = tokens}, plan, &captured,
                    {.logits = last_only ? LogitsMode::kLast : LogitsMode::kAll,
                     .cancelled = request.cancelled}));
  MetricAtLogits metric = EvaluateMetric(m, tokens, out.logits, last_only);

  ForwardBackwardResult result;
  result.metric = std::move(metric.values);
  for (HookId id : request.values) result.values.push_back(captured.at(id));
  if (!request.backward) return result;
  if (request.cancelled != nullptr && request.cancelled->load())
    return absl::CancelledError("cancelled before the backward pass");
  Backward backward(model, captured, batch, seq, request.gradients);
  GB_RETURN_IF_ERROR(backward.Run(metric.dlogits, metric.rows));
  for (HookId id : request.gradients) result.gradients.push_back(backward.gradient(id));
  return result;
}

absl::StatusOr<GradientResult> ComputeGradients(const Transformer& model,
                                                const GradientRequest& request) {
  GB_ASSIGN_OR_RETURN(ForwardBackwardResult r,
                      RunForwardBackward(model, {.tokens = request.tokens,
                                                 .metric = request.metric,
                                                 .gradients = request.hooks,
                                                 .cancelled = request.cancelled}));
  return GradientResult{.metric = std::move(r.metric), .gradients = std::move(r.gradients)};
}

}  // namespace glassbox
