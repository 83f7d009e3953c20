#include "server/engine/backward_walk.h"

#include <algorithm>

#include "base/status_macros.h"
#include "server/engine/backward_ops.h"
#include "server/engine/host_math.h"

namespace glassbox {
namespace {

Tensor Sum(const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::EmptyHost(DType::kF32, a.shape());
  for (int64_t i = 0; i < a.numel(); ++i) {
    out.data<float>()[i] = a.data<float>()[i] + b.data<float>()[i];
  }
  return out;
}

}  // namespace

std::vector<HookId> BackwardInputs(const Transformer& model, int top_layer, bool final_norm) {
  const HookRegistry& hooks = model.hooks();
  std::vector<HookId> ids;
  if (final_norm) {
    ids = {hooks.Find(HookKind::kLnFinalNormalized, -1), hooks.Find(HookKind::kLnFinalScale, -1)};
  }
  for (int l = 0; l <= top_layer; ++l) {
    for (HookKind kind : {HookKind::kLn1Normalized, HookKind::kLn1Scale, HookKind::kLn2Normalized,
                          HookKind::kLn2Scale, HookKind::kMlpPre, HookKind::kQ, HookKind::kK,
                          HookKind::kV, HookKind::kPattern}) {
      ids.push_back(hooks.Find(kind, l));
    }
  }
  ids.erase(std::remove(ids.begin(), ids.end(), -1), ids.end());
  return ids;
}

BackwardWalk::BackwardWalk(const Transformer& model, const HostCaptures& captured, int64_t batch,
                           int64_t seq, const std::vector<HookId>& wanted)
    : model_(model),
      c_(model.config()),
      captured_(captured),
      batch_(batch),
      seq_(seq),
      centered_(model.config().norm == NormKind::kLayerNorm),
      wanted_(model.hooks().size()),
      grads_(model.hooks().size()) {
  for (HookId id : wanted) wanted_[id] = true;
}

absl::Status BackwardWalk::FromLogits(const Tensor& dlogits, const std::vector<int64_t>& rows) {
  const ModelWeights& w = model_.weights();
  GB_ASSIGN_OR_RETURN(Tensor unembed, Host(w.unembed));
  GB_ASSIGN_OR_RETURN(Tensor dy_rows, backward::LinearInputBackward(dlogits, unembed));
  const int64_t d = c_.d_model;
  Tensor dy = Tensor::ZerosHost(DType::kF32, {batch_ * seq_, d});
  for (size_t i = 0; i < rows.size(); ++i) {
    std::copy_n(dy_rows.data<float>() + i * d, d, dy.data<float>() + rows[i] * d);
  }
  GB_ASSIGN_OR_RETURN(Tensor d_resid, Norm(dy, HookKind::kLnFinalNormalized,
                                           HookKind::kLnFinalScale, -1, w.ln_final_w));
  return Down(static_cast<int>(c_.n_layers) - 1, 0, std::move(d_resid));
}

absl::Status BackwardWalk::FromResidual(HookKind kind, int layer, Tensor seed, int lowest_layer) {
  switch (kind) {
    case HookKind::kResidPost:
      return Down(layer, lowest_layer, std::move(seed));
    case HookKind::kResidMid: {
      if (layer < lowest_layer) return absl::OkStatus();
      GB_ASSIGN_OR_RETURN(Tensor d_pre, AttentionHalf(layer, seed));
      Set(HookKind::kResidPre, layer, d_pre);
      return Down(layer - 1, lowest_layer, std::move(d_pre));
    }
    case HookKind::kResidPre:
      // hook_resid_pre of block l is hook_resid_post of block l − 1 (the embeddings for 0).
      Set(HookKind::kResidPre, layer, seed);
      return Down(layer - 1, lowest_layer, std::move(seed));
    default:
      return absl::InvalidArgumentError("a backward walk starts at a residual-stream hook");
  }
}

absl::Status BackwardWalk::Down(int top, int lowest, Tensor d_post) {
  for (int l = top; l >= lowest && l >= 0; --l) {
    Set(HookKind::kResidPost, l, d_post);
    GB_ASSIGN_OR_RETURN(Tensor d_mid, MlpHalf(l, d_post));
    GB_ASSIGN_OR_RETURN(d_post, AttentionHalf(l, d_mid));
    Set(HookKind::kResidPre, l, d_post);
  }
  if (lowest <= 0) {
    Set(HookKind::kEmbed, -1, d_post);
    Set(HookKind::kPosEmbed, -1, d_post);
  }
  return absl::OkStatus();
}

absl::StatusOr<Tensor> BackwardWalk::Host(const Tensor& t) const {
  return CopyToHostF32(model_.backend(), t);
}

const Tensor& BackwardWalk::Captured(HookKind kind, int layer) const {
  return captured_.at(model_.hooks().Find(kind, layer));
}

bool BackwardWalk::Wanted(HookKind kind, int layer) const {
  const HookId id = model_.hooks().Find(kind, layer);
  return id >= 0 && wanted_[id];
}

void BackwardWalk::Set(HookKind kind, int layer, const Tensor& grad) {
  const HookId id = model_.hooks().Find(kind, layer);
  if (id < 0 || !wanted_[id]) return;
  grads_[id] = grad.Reshape(model_.hooks().info(id).ShapeFor(batch_, seq_));
}

absl::StatusOr<Tensor> BackwardWalk::Norm(const Tensor& dy, HookKind normalized, HookKind scale,
                                          int layer, const Tensor& weight) {
  GB_ASSIGN_OR_RETURN(Tensor w, Host(weight));
  backward::NormGrads g = backward::NormBackward(
      dy.Reshape(Captured(normalized, layer).shape()), Captured(normalized, layer),
      Captured(scale, layer), w, centered_);
  Set(normalized, layer, g.normalized);
  Set(scale, layer, g.scale);
  return g.input;
}

absl::StatusOr<Tensor> BackwardWalk::MlpHalf(int l, const Tensor& d_post) {
  const BlockWeights& w = model_.weights().blocks[l];
  Set(HookKind::kMlpOut, l, d_post);
  // mlp_out = act(pre) · W_outᵀ + b, pre = ln2(resid_mid) · W_inᵀ + b.
  GB_ASSIGN_OR_RETURN(Tensor out_w, Host(w.out_w));
  GB_ASSIGN_OR_RETURN(Tensor d_act, backward::LinearInputBackward(d_post, out_w));
  Set(HookKind::kMlpPost, l, d_act);
  Tensor d_pre = backward::ActivationBackward(c_.act, d_act, Captured(HookKind::kMlpPre, l));
  Set(HookKind::kMlpPre, l, d_pre);
  GB_ASSIGN_OR_RETURN(Tensor in_w, Host(w.in_w));
  GB_ASSIGN_OR_RETURN(Tensor d_ln2, backward::LinearInputBackward(d_pre, in_w));
  GB_ASSIGN_OR_RETURN(Tensor d_mid_norm,
                      Norm(d_ln2, HookKind::kLn2Normalized, HookKind::kLn2Scale, l, w.ln2_w));
  return Sum(d_post, d_mid_norm);
}

absl::StatusOr<Tensor> BackwardWalk::AttentionHalf(int l, const Tensor& d_mid) {
  const BlockWeights& w = model_.weights().blocks[l];
  const int64_t rows = batch_ * seq_, d = c_.d_model;
  Set(HookKind::kResidMid, l, d_mid);
  Set(HookKind::kAttnOut, l, d_mid);
  // hook_result: attn_out = Σ_h result_h + b_O, so each head's result gets attn_out's gradient.
  const int64_t heads = c_.n_heads, kv_heads = c_.n_kv_heads, dh = c_.d_head;
  if (Wanted(HookKind::kResult, l)) {
    Tensor d_result = Tensor::EmptyHost(DType::kF32, {rows, heads, d});
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t h = 0; h < heads; ++h) {
        std::copy_n(d_mid.data<float>() + r * d, d, d_result.data<float>() + (r * heads + h) * d);
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
  GB_ASSIGN_OR_RETURN(Tensor d_pre_norm,
                      Norm(d_ln1, HookKind::kLn1Normalized, HookKind::kLn1Scale, l, w.ln1_w));
  return Sum(d_mid, d_pre_norm);
}

}  // namespace glassbox
