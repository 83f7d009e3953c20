#include "server/engine/backward_walk.h"

#include <algorithm>

#include "base/status_macros.h"
#include "server/engine/backward_ops.h"
#include "server/engine/host_math.h"
#include "server/engine/sae/feature_gradient.h"

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
  // The scores read the rotated queries and keys when there are any.
  const bool rotary = model.config().positional == PositionalKind::kRotary;
  const HookKind q = rotary ? HookKind::kRotQ : HookKind::kQ;
  const HookKind k = rotary ? HookKind::kRotK : HookKind::kK;
  for (int l = 0; l <= top_layer; ++l) {
    for (HookKind kind :
         {HookKind::kLn1Normalized, HookKind::kLn1Scale, HookKind::kLn2Normalized,
          HookKind::kLn2Scale, HookKind::kLn1PostNormalized, HookKind::kLn1PostScale,
          HookKind::kLn2PostNormalized, HookKind::kLn2PostScale, HookKind::kMlpPre,
          HookKind::kMlpPreLinear, q, k, HookKind::kQNormNormalized, HookKind::kQNormScale,
          HookKind::kKNormNormalized, HookKind::kKNormScale, HookKind::kV, HookKind::kPattern}) {
      ids.push_back(hooks.Find(kind, l));
    }
  }
  ids.erase(std::remove(ids.begin(), ids.end(), -1), ids.end());
  return ids;
}

BackwardWalk::BackwardWalk(const Transformer& model, const HostCaptures& captured, int64_t batch,
                           int64_t seq, const std::vector<HookId>& wanted,
                           const std::vector<Intervention>& edits, TokenLayout layout)
    : model_(model),
      c_(model.config()),
      captured_(captured),
      batch_(batch),
      seq_(seq),
      centered_(model.config().norm == NormKind::kLayerNorm),
      wanted_(model.hooks().size()),
      grads_(model.hooks().size()),
      edits_(model.hooks().size()),
      edit_inputs_(model.hooks().size()),
      seeds_(model.hooks().size()),
      splices_(model.hooks().size()),
      layout_(std::move(layout)) {
  for (HookId id : wanted) wanted_[id] = true;
  for (const Intervention& edit : edits) edits_[edit.hook].push_back(&edit);
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
  GB_ASSIGN_OR_RETURN(Tensor d_resid, ModelNorm(dy, HookKind::kLnFinalNormalized,
                                                HookKind::kLnFinalScale, -1, w.ln_final_w));
  return Down(static_cast<int>(c_.n_layers) - 1, 0, std::move(d_resid));
}

absl::Status BackwardWalk::FromSeeds(int top_layer, int lowest_layer) {
  return Down(top_layer, lowest_layer, Tensor::ZerosHost(DType::kF32, {batch_ * seq_, c_.d_model}));
}

absl::Status BackwardWalk::Down(int top, int lowest, Tensor d_post) {
  for (int l = top; l >= lowest && l >= 0; --l) {
    GB_ASSIGN_OR_RETURN(d_post, Through(HookKind::kResidPost, l, d_post));
    GB_ASSIGN_OR_RETURN(Tensor through_mlp, MlpBranch(l, d_post));
    if (c_.parallel_attn_mlp) {
      // resid_post = resid_pre + attn_out + mlp_out, both branches reading resid_pre.
      GB_ASSIGN_OR_RETURN(Tensor through_attention, AttentionBranch(l, d_post));
      d_post = Sum(Sum(d_post, through_mlp), through_attention);
    } else {
      GB_ASSIGN_OR_RETURN(const Tensor d_mid,
                          Through(HookKind::kResidMid, l, Sum(d_post, through_mlp)));
      GB_ASSIGN_OR_RETURN(Tensor through_attention, AttentionBranch(l, d_mid));
      d_post = Sum(d_mid, through_attention);
    }
    GB_ASSIGN_OR_RETURN(d_post, Through(HookKind::kResidPre, l, d_post));
  }
  if (lowest <= 0) {
    // hook_embed is after Gemma's scale by sqrt(d_model), as TransformerLens's is; resid_pre of
    // block 0 is their sum.
    GB_RETURN_IF_ERROR(Through(HookKind::kEmbed, -1, d_post).status());
    GB_RETURN_IF_ERROR(Through(HookKind::kPosEmbed, -1, d_post).status());
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

absl::StatusOr<Tensor> BackwardWalk::Through(HookKind kind, int layer, const Tensor& arriving) {
  const HookId id = model_.hooks().Find(kind, layer);
  Tensor grad = id >= 0 && seeds_[id].defined()
                    ? Sum(arriving, seeds_[id].Reshape(arriving.shape()))
                    : arriving;
  Set(kind, layer, grad);
  if (id < 0) return grad;
  if (Splice& splice = splices_[id]; splice.sae != nullptr) {
    // The hook's gradient is the one at the SAE's output; before the splice, at its input.
    const int64_t d_in = splice.sae->d_in(), rows = grad.numel() / d_in;
    splice.output_gradient = grad.Reshape({rows, d_in});
    GB_ASSIGN_OR_RETURN(splice.through,
                        SpliceBackward(*splice.sae, splice.input.Reshape({rows, d_in}),
                                       splice.output_gradient, *splice.options));
    grad = splice.through.input.Reshape(arriving.shape());
  }
  if (edits_[id].empty()) return grad;
  // A copy: the gradient kept at the hook is the one at the edited value.
  const HookInfo& info = model_.hooks().info(id);
  Tensor before = Tensor::EmptyHost(DType::kF32, info.ShapeFor(batch_, seq_));
  std::copy_n(grad.data<float>(), grad.numel(), before.data<float>());
  // What each edit was applied to, replayed from the value before them, where a backward reads
  // it.
  const std::vector<const Intervention*>& edits = edits_[id];
  std::vector<Tensor> inputs(edits.size());
  if (edit_inputs_[id].defined()) {
    Tensor value = edit_inputs_[id].Reshape(before.shape());
    for (size_t k = 0; k < edits.size(); ++k) {
      inputs[k] = value;
      if (k + 1 == edits.size()) break;
      Tensor next = Tensor::EmptyHost(DType::kF32, value.shape());
      std::copy_n(value.data<float>(), value.numel(), next.data<float>());
      ApplyIntervention(*edits[k], info, layout_, next);
      value = std::move(next);
    }
  }
  for (size_t k = edits.size(); k-- > 0;) {
    if (BackwardReadsInput(*edits[k]) && !inputs[k].defined())
      return absl::InternalError("an edit's backward needs the value it was applied to");
    InterventionBackward(*edits[k], info, layout_, before,
                         inputs[k].defined() ? &inputs[k] : nullptr);
  }
  return before.Reshape(grad.shape());
}

const Tensor& BackwardWalk::splice_gradient(HookId hook, SaeHook point) const {
  const Splice& splice = splices_[hook];
  switch (point) {
    case SaeHook::kInput:
      return splice.through.input;
    case SaeHook::kActsPre:
      return splice.through.acts_pre;
    case SaeHook::kActsPost:
      return splice.through.acts_post;
    case SaeHook::kRecons:
      return splice.through.recons;
    case SaeHook::kError:
    case SaeHook::kOutput:
      return splice.output_gradient;
  }
  return splice.output_gradient;
}

absl::StatusOr<Tensor> BackwardWalk::Norm(const Tensor& dy, HookKind normalized, HookKind scale,
                                          int layer, const Tensor& weight, bool centered) {
  Tensor w;
  if (weight.defined()) {
    GB_ASSIGN_OR_RETURN(w, Host(weight));
  }
  const Tensor& x_hat = Captured(normalized, layer);
  // Rows of the weight's width: the model's, each head's (per-head q/k norms) or the whole
  // projection's.
  const int64_t width = weight.defined() ? weight.numel() : x_hat.dim(-1);
  const int64_t rows = x_hat.numel() / width;
  backward::NormGrads g =
      backward::NormBackward(dy.Reshape({rows, width}), x_hat.Reshape({rows, width}),
                             Captured(scale, layer).Reshape({rows, 1}), w, centered);
  Set(normalized, layer, g.normalized);
  Set(scale, layer, g.scale);
  return g.input;
}

absl::StatusOr<Tensor> BackwardWalk::MlpBranch(int l, const Tensor& d_out) {
  const BlockWeights& w = model_.weights().blocks[l];
  const bool post = c_.norm_placement == NormPlacement::kPost;
  const bool both = c_.norm_placement == NormPlacement::kPreAndPost;
  // Post-norm blocks normalise the MLP's output with ln2; Gemma's with ln2_post.
  GB_ASSIGN_OR_RETURN(Tensor d_raw, Through(HookKind::kMlpOut, l, d_out));
  if (post) {
    GB_ASSIGN_OR_RETURN(
        d_raw, ModelNorm(d_raw, HookKind::kLn2Normalized, HookKind::kLn2Scale, l, w.ln2_w));
  } else if (both) {
    GB_ASSIGN_OR_RETURN(d_raw, ModelNorm(d_raw, HookKind::kLn2PostNormalized,
                                         HookKind::kLn2PostScale, l, w.ln2_post_w));
  }
  // raw = post · W_outᵀ + b; post = act(pre), or act(pre) · pre_linear when gated.
  GB_ASSIGN_OR_RETURN(Tensor out_w, Host(w.out_w));
  GB_ASSIGN_OR_RETURN(Tensor d_post, backward::LinearInputBackward(d_raw, out_w));
  GB_ASSIGN_OR_RETURN(const Tensor d_act, Through(HookKind::kMlpPost, l, d_post));
  Tensor d_in;
  if (c_.gated_mlp) {
    backward::GatedGrads g = backward::GatedActivationBackward(
        c_.act, d_act, Captured(HookKind::kMlpPre, l), Captured(HookKind::kMlpPreLinear, l));
    GB_ASSIGN_OR_RETURN(Tensor gate_w, Host(w.gate_w));
    GB_ASSIGN_OR_RETURN(Tensor in_w, Host(w.in_w));
    GB_ASSIGN_OR_RETURN(const Tensor d_gate, Through(HookKind::kMlpPre, l, g.gate));
    GB_ASSIGN_OR_RETURN(const Tensor d_linear, Through(HookKind::kMlpPreLinear, l, g.linear));
    GB_ASSIGN_OR_RETURN(Tensor through_gate, backward::LinearInputBackward(d_gate, gate_w));
    GB_ASSIGN_OR_RETURN(Tensor through_linear, backward::LinearInputBackward(d_linear, in_w));
    d_in = Sum(through_gate, through_linear);
  } else {
    GB_ASSIGN_OR_RETURN(
        const Tensor d_pre,
        Through(HookKind::kMlpPre, l,
                backward::ActivationBackward(c_.act, d_act, Captured(HookKind::kMlpPre, l))));
    GB_ASSIGN_OR_RETURN(Tensor in_w, Host(w.in_w));
    GB_ASSIGN_OR_RETURN(d_in, backward::LinearInputBackward(d_pre, in_w));
  }
  if (post) return d_in;  // the MLP reads the residual stream itself
  return ModelNorm(d_in, HookKind::kLn2Normalized, HookKind::kLn2Scale, l, w.ln2_w);
}

absl::StatusOr<Tensor> BackwardWalk::AttentionBranch(int l, const Tensor& d_out) {
  const BlockWeights& w = model_.weights().blocks[l];
  const bool post = c_.norm_placement == NormPlacement::kPost;
  const bool both = c_.norm_placement == NormPlacement::kPreAndPost;
  const int64_t rows = batch_ * seq_, d = c_.d_model;
  GB_ASSIGN_OR_RETURN(Tensor d_raw, Through(HookKind::kAttnOut, l, d_out));
  if (post) {
    GB_ASSIGN_OR_RETURN(
        d_raw, ModelNorm(d_raw, HookKind::kLn1Normalized, HookKind::kLn1Scale, l, w.ln1_w));
  } else if (both) {
    GB_ASSIGN_OR_RETURN(d_raw, ModelNorm(d_raw, HookKind::kLn1PostNormalized,
                                         HookKind::kLn1PostScale, l, w.ln1_post_w));
  }
  // hook_result: raw = Σ_h result_h + b_O, so each head's result gets raw's gradient.
  const int64_t heads = c_.n_heads, kv_heads = c_.n_kv_heads, dh = c_.d_head;
  if (Wanted(HookKind::kResult, l)) {
    Tensor d_result = Tensor::EmptyHost(DType::kF32, {rows, heads, d});
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t h = 0; h < heads; ++h) {
        std::copy_n(d_raw.data<float>() + r * d, d, d_result.data<float>() + (r * heads + h) * d);
      }
    }
    Set(HookKind::kResult, l, d_result);
  }
  // Attention: raw = z · W_Oᵀ + b.
  GB_ASSIGN_OR_RETURN(Tensor o_w, Host(w.o_w));
  GB_ASSIGN_OR_RETURN(Tensor z_grad, backward::LinearInputBackward(d_raw, o_w));
  const bool rotary = c_.positional == PositionalKind::kRotary;
  const Tensor& q = Captured(rotary ? HookKind::kRotQ : HookKind::kQ, l);
  const Tensor& k = Captured(rotary ? HookKind::kRotK : HookKind::kK, l);
  GB_ASSIGN_OR_RETURN(const Tensor d_z, Through(HookKind::kZ, l, z_grad));
  double scale = c_.attn_scale;
  if (c_.attn_scale_by_layer) scale /= static_cast<double>(l + 1);
  // The gradients at hook_pattern and hook_attn_scores are kept, and go back through their
  // edits, on the way (Through); softmax's backward reads its own output, the pattern before
  // its edits.
  backward::AttentionEditsBackward through{
      .through_pattern = [&](const Tensor& g) { return Through(HookKind::kPattern, l, g); },
      .through_scores = [&](const Tensor& g) { return Through(HookKind::kAttnScores, l, g); }};
  if (const HookId pattern = model_.hooks().Find(HookKind::kPattern, l);
      pattern >= 0 && edit_inputs_[pattern].defined()) {
    through.softmax_pattern = &edit_inputs_[pattern];
  }
  GB_ASSIGN_OR_RETURN(backward::AttentionGrads a,
                      backward::AttentionBackward(
                          d_z.Reshape(q.shape()), q, k, Captured(HookKind::kV, l),
                          Captured(HookKind::kPattern, l), scale, c_.attn_softcap, through));
  GB_ASSIGN_OR_RETURN(const Tensor d_v, Through(HookKind::kV, l, a.v));
  GB_ASSIGN_OR_RETURN(Tensor d_q, QueryKeyPath(l, std::move(a.q), /*query=*/true));
  GB_ASSIGN_OR_RETURN(Tensor d_k, QueryKeyPath(l, std::move(a.k), /*query=*/false));
  // q, k and v from one projection whose rows are q's, then k's, then v's.
  const int64_t wq = heads * dh, wkv = kv_heads * dh, width = wq + 2 * wkv;
  Tensor d_qkv = Tensor::EmptyHost(DType::kF32, {rows, width});
  for (int64_t r = 0; r < rows; ++r) {
    float* out = d_qkv.data<float>() + r * width;
    std::copy_n(d_q.data<float>() + r * wq, wq, out);
    std::copy_n(d_k.data<float>() + r * wkv, wkv, out + wq);
    std::copy_n(d_v.data<float>() + r * wkv, wkv, out + wq + wkv);
  }
  GB_ASSIGN_OR_RETURN(Tensor qkv_w, Host(w.qkv_w));
  GB_ASSIGN_OR_RETURN(Tensor d_in, backward::LinearInputBackward(d_qkv, qkv_w));
  if (post) return d_in;  // attention reads the residual stream itself
  return ModelNorm(d_in, HookKind::kLn1Normalized, HookKind::kLn1Scale, l, w.ln1_w);
}

absl::StatusOr<Tensor> BackwardWalk::QueryKeyPath(int l, Tensor d, bool query) {
  const BlockWeights& w = model_.weights().blocks[l];
  // Forward: hook_q -> q_norm (its scale and normalized hooks) -> rotary -> hook_rot_q.
  if (c_.positional == PositionalKind::kRotary) {
    GB_ASSIGN_OR_RETURN(d, Through(query ? HookKind::kRotQ : HookKind::kRotK, l, d));
    // Gemma-3's sliding layers rotate with their own base.
    const bool local = model_.weights().rope_cos_local.defined() && c_.WindowOf(l) > 0;
    GB_ASSIGN_OR_RETURN(Tensor cos,
                        Host(local ? model_.weights().rope_cos_local : model_.weights().rope_cos));
    GB_ASSIGN_OR_RETURN(Tensor sin,
                        Host(local ? model_.weights().rope_sin_local : model_.weights().rope_sin));
    d = backward::RotaryBackward(d, cos, sin, c_.rotary_dim, c_.rotary_adjacent_pairs);
  }
  if (c_.qk_norm != QkNorm::kNone) {
    const Shape shape = d.shape();
    GB_ASSIGN_OR_RETURN(
        Tensor d_in,
        query ? Norm(d, HookKind::kQNormNormalized, HookKind::kQNormScale, l, w.q_norm_w, false)
              : Norm(d, HookKind::kKNormNormalized, HookKind::kKNormScale, l, w.k_norm_w, false));
    d = d_in.Reshape(shape);
  }
  return Through(query ? HookKind::kQ : HookKind::kK, l, d);
}

}  // namespace glassbox
