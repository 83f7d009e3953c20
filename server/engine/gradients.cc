#include "server/engine/gradients.h"

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
  Backward(const Transformer& model, const HostCaptures& captured, int64_t batch, int64_t seq)
      : model_(model),
        c_(model.config()),
        captured_(captured),
        batch_(batch),
        seq_(seq),
        grads_(model.hooks().size()) {}

  absl::Status Run(const Tensor& dlogits) {
    const ModelWeights& w = model_.weights();
    const bool centered = c_.norm == NormKind::kLayerNorm;
    GB_ASSIGN_OR_RETURN(Tensor unembed, Host(w.unembed));
    GB_ASSIGN_OR_RETURN(Tensor dy, backward::LinearInputBackward(dlogits, unembed));
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
  void Set(HookKind kind, int layer, const Tensor& grad) {
    const HookId id = model_.hooks().Find(kind, layer);
    if (id < 0) return;
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
    Tensor d_result = Tensor::EmptyHost(DType::kF32, {rows, heads, d});
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t h = 0; h < heads; ++h) {
        std::copy_n(d_mid.data<float>() + r * d, d, d_result.data<float>() + (r * heads + h) * d);
      }
    }
    Set(HookKind::kResult, l, d_result);
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

absl::StatusOr<GradientResult> ComputeGradients(const Transformer& model,
                                                const GradientRequest& request) {
  const ModelConfig& c = model.config();
  GB_RETURN_IF_ERROR(CheckGradientsSupported(c));
  const Tensor& tokens = request.tokens;
  if (tokens.rank() != 2 || tokens.dtype() != DType::kI32 || tokens.dim(0) < 1 ||
      tokens.dim(1) < 1)
    return absl::InvalidArgumentError("gradients need tokens as i32 [batch, seq], not empty");
  const int64_t batch = tokens.dim(0), seq = tokens.dim(1), vocab = c.vocab_size;
  const GradientMetric& m = request.metric;
  if (m.position < -seq || m.position >= seq)
    return absl::InvalidArgumentError(absl::StrCat("the metric's position ", m.position,
                                                   " is outside rows of ", seq, " tokens"));
  for (int32_t token : {m.token_a, m.token_b}) {
    if (token < 0 || token >= vocab)
      return absl::InvalidArgumentError(absl::StrCat("the metric's token ", token,
                                                     " is outside the vocabulary [0, ", vocab,
                                                     ")"));
  }
  for (HookId id : request.hooks) {
    if (id < 0 || id >= model.hooks().size())
      return absl::InvalidArgumentError("a gradient asks for a hook the model does not have");
  }

  // The forward pass, keeping every hook's value.
  HookPlan plan(model.hooks());
  for (HookId id = 0; id < model.hooks().size(); ++id) plan.CaptureId(id);
  HostCaptures captured(model.backend());
  GB_ASSIGN_OR_RETURN(ForwardOutput out,
                      model.Forward({.tokens = tokens}, plan, &captured,
                                    {.logits = LogitsMode::kAll, .cancelled = request.cancelled}));

  // The metric and its gradient at the logits (nonzero at one position per row).
  const int64_t p = m.position >= 0 ? m.position : seq + m.position;
  GradientResult result;
  Tensor dlogits = Tensor::ZerosHost(DType::kF32, {batch * seq, vocab});
  for (int64_t b = 0; b < batch; ++b) {
    const float* logits = out.logits.data<float>() + (b * seq + p) * vocab;
    float* d = dlogits.data<float>() + (b * seq + p) * vocab;
    switch (m.kind) {
      case GradientMetric::Kind::kLogit:
        result.metric.push_back(logits[m.token_a]);
        d[m.token_a] += 1;
        break;
      case GradientMetric::Kind::kLogitDiff:
        result.metric.push_back(double{logits[m.token_a]} - logits[m.token_b]);
        d[m.token_a] += 1;
        d[m.token_b] -= 1;
        break;
      case GradientMetric::Kind::kLogProb: {
        double most = logits[0], sum = 0;
        for (int64_t j = 1; j < vocab; ++j) most = std::max(most, double{logits[j]});
        for (int64_t j = 0; j < vocab; ++j) sum += std::exp(logits[j] - most);
        const double lse = most + std::log(sum);
        result.metric.push_back(logits[m.token_a] - lse);
        for (int64_t j = 0; j < vocab; ++j) d[j] = static_cast<float>(-std::exp(logits[j] - lse));
        d[m.token_a] += 1;
        break;
      }
    }
  }
  Backward backward(model, captured, batch, seq);
  GB_RETURN_IF_ERROR(backward.Run(dlogits));
  for (HookId id : request.hooks) result.gradients.push_back(backward.gradient(id));
  return result;
}

}  // namespace glassbox
