// The backward of the forward pass's ops with respect to their inputs (never their weights), on
// host f32 values: what a gradient needs. Each takes the gradient arriving at the op's output
// and what the forward pass captured there (TransformerLens's hook values), and returns the
// gradients at the op's hook points and input. Plain CPU references, written for clarity; the
// CUDA backend will get its own kernels checked against these.
#pragma once

#include <functional>

#include "absl/status/statusor.h"
#include "base/activation.h"
#include "kernels/tensor.h"

namespace glassbox::backward {

// LayerNorm (centered) or RMSNorm over the last axis: x̂ = (x − mean(x)) / scale (or x / scale),
// scale = sqrt(mean(x̂ numerator²) + eps), y = x̂ · w (+ b). From dy, the gradients at
// hook_normalized (x̂), at hook_scale ([.., 1]) and at x. `weight` [d] may be undefined (1).
struct NormGrads {
  Tensor normalized, scale, input;
};
NormGrads NormBackward(const Tensor& dy, const Tensor& normalized, const Tensor& scale,
                       const Tensor& weight, bool centered);

// y = act(x) elementwise: dx = dy · act'(x).
Tensor ActivationBackward(Activation act, const Tensor& dy, const Tensor& x);
// act(x) and act'(x), in double.
double ActivationValue(Activation act, double x);
double ActivationDerivative(Activation act, double x);

// A gated MLP's post = act(gate) · linear, elementwise (Llama's SwiGLU, Gemma's GeGLU): from
// dpost, the gradients at the gate (hook_pre) and at the linear half (hook_pre_linear).
struct GatedGrads {
  Tensor gate, linear;
};
GatedGrads GatedActivationBackward(Activation act, const Tensor& dpost, const Tensor& gate,
                                   const Tensor& linear);

// Rotary embedding of the first `rotary_dim` features of each head (rotate-half pairs, or GPT-J's
// adjacent ones) is a rotation, so its backward is the rotation by the opposite angle. dy
// [B, S, H, Dh] with token s of each row at position s (right-padded rows); cos and sin
// [n_ctx, rotary_dim / 2], the forward pass's tables. Features past rotary_dim pass through.
Tensor RotaryBackward(const Tensor& dy, const Tensor& cos, const Tensor& sin, int64_t rotary_dim,
                      bool adjacent_pairs);

// Attention of one layer, TransformerLens's shapes: q [B, S, H, Dh], k and v [B, S, Hkv, Dh]
// (query head h reads kv head h / (H / Hkv)), pattern [B, H, S, S] (0 where a key is not
// visible), z[b, s, h] = Σ_t pattern[b, h, s, t] v[b, t, h'], scores = scale · q · k. From dz
// [B, S, H, Dh], the gradients at hook_pattern, hook_attn_scores, hook_q, hook_k and hook_v.
// With `softcap` > 0 the scores are softcap · tanh(scale · q · k / softcap) (Gemma-2), their
// gradient taken after the cap as TransformerLens's hook_attn_scores is. A sliding window needs
// nothing: its hidden keys have a zero pattern, so no gradient.
//
// Edits of hook_pattern or hook_attn_scores: `pattern` is the edited pattern z was made from, and
// the edits' backward runs between the steps. `through_pattern` takes the gradient at the
// (edited) pattern to the one at the softmax's output, which is `softmax_pattern` (the pattern
// before its edits); `through_scores` takes the gradient at the (edited) scores to the one at the
// scores before their edits. AttentionGrads keeps the gradients at the edited values.
struct AttentionGrads {
  Tensor pattern, scores, q, k, v;
};
struct AttentionEditsBackward {
  std::function<absl::StatusOr<Tensor>(const Tensor&)> through_pattern, through_scores;
  const Tensor* softmax_pattern = nullptr;  // null: `pattern`
};
absl::StatusOr<AttentionGrads> AttentionBackward(const Tensor& dz, const Tensor& q, const Tensor& k,
                                                 const Tensor& v, const Tensor& pattern,
                                                 double scale, double softcap = 0,
                                                 const AttentionEditsBackward& edits = {});

// y = x · wᵀ (+ b) with w [n, k], x and y flattened to rows: dx [rows, k] = dy [rows, n] · w.
absl::StatusOr<Tensor> LinearInputBackward(const Tensor& dy, const Tensor& w);

}  // namespace glassbox::backward
