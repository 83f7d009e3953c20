// Values that go in and out of an SAE: sparse feature activations, per-token normalisation state,
// feature edits for splicing, the hook_sae_* points, reconstruction statistics.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "kernels/tensor.h"
#include "server/engine/sae/sae_config.h"

namespace glassbox {

// Feature activations of `rows` tokens in compressed-row form: token t's features are
// indices[row_offsets[t] .. row_offsets[t + 1]) with their values.
struct SparseActs {
  Shape leading_shape;  // the token dims of the input, e.g. [batch, pos]; rows = their product
  int64_t d_sae = 0;
  std::vector<int64_t> row_offsets = {0};  // rows + 1 entries
  std::vector<int32_t> indices;
  std::vector<float> values;

  int64_t rows() const { return static_cast<int64_t>(row_offsets.size()) - 1; }
  int64_t nnz() const { return static_cast<int64_t>(indices.size()); }
};

struct SparseEncodeOptions {
  // 0: every nonzero feature of each token, in feature order. k > 0: the (at most) k features with
  // the largest nonzero activations, by descending value (ties: lower index first).
  int64_t top_k = 0;
};

// What the output normalisation of input-dependent modes needs from the input (one entry per
// token): constant_norm_rescale keeps c (output = y / c); layer_norm keeps σ and μ
// (output = y·σ + μ). Empty for the other modes.
struct SaeNormState {
  SaeNormalization normalization = SaeNormalization::kNone;
  std::vector<float> scale;  // c or σ
  std::vector<float> shift;  // μ (layer_norm)
};

// The SAE's hook points, as sae_lens names them; a spliced SAE at hook H exposes
// "H.hook_sae_input" etc. (HookedSAETransformer's names).
enum class SaeHook : uint8_t {
  kInput,     // hook_sae_input [..., d_in]: x flattened (hook_z) before normalisation
  kActsPre,   // hook_sae_acts_pre [..., d_sae]: pre-activation (gated: the magnitude path; topk:
              //   before decoder-norm rescaling)
  kActsPost,  // hook_sae_acts_post [..., d_sae]: feature activations, after feature edits
  kRecons,    // hook_sae_recons [..., d_in]: acts·W_dec + b_dec, before undoing normalisation
  kError,     // hook_sae_error (x's shape): x − clean reconstruction; only with the error term
  kOutput,    // hook_sae_output (x's shape): what replaces the hook's value
};
inline constexpr int kNumSaeHooks = 6;
absl::string_view SaeHookName(SaeHook hook);  // "hook_sae_input", ...
// "blocks.3.hook_resid_pre" + kActsPost -> "blocks.3.hook_resid_pre.hook_sae_acts_post".
std::string SaeHookPath(absl::string_view hook_name, SaeHook hook);

enum class FeatureEditKind : uint8_t {
  kZero,   // a = 0
  kClamp,  // a = value (whether or not the feature fired)
  kScale,  // a *= value
  kAdd,    // a += value
};

// An edit of hook_sae_acts_post (SAELens: a hook on hook_sae_acts_post). Each (token, feature)
// pair the edit names is edited once; duplicates in `features` or `tokens` do not repeat it.
struct FeatureEdit {
  FeatureEditKind kind = FeatureEditKind::kZero;
  std::vector<int32_t> features;  // non-empty; each in [0, d_sae)
  float value = 0.0f;             // kClamp: the activation; kScale: the factor; kAdd: the amount
  // Token rows of the input flattened over its leading dims (b·pos + p for [batch, pos, ...]);
  // empty = every token. The engine maps request positions (padding, negative indices) to these.
  std::vector<int64_t> tokens;
};

struct SpliceOptions {
  std::vector<FeatureEdit> edits;  // applied in order
  // SAELens use_error_term: output = recon(edited acts) + (x − recon(clean acts)), so that with no
  // edits the model sees x exactly (up to rounding) and edits act as deltas. Without it the
  // output is recon(edited acts).
  bool use_error_term = false;
  // Which hook_sae_* values to return (indexed by SaeHook). kOutput is always returned.
  std::array<bool, kNumSaeHooks> capture{};
  // Also compute reconstruction statistics of the clean (unedited) reconstruction.
  bool compute_stats = false;
};

// Reconstruction quality over a set of tokens.
struct SaeReconstructionStats {
  int64_t tokens = 0;
  // Mean over tokens and dimensions of (x − x̂)².
  double mse = 0.0;
  // Mean over tokens of ‖x − x̂‖² (sae_lens evals' "mse": summed over dims, averaged over tokens).
  double mean_squared_error_norm = 0.0;
  // 1 − Σ_t‖x_t − x̂_t‖² / Σ_t‖x_t − x̄‖², x̄ the per-dimension mean over THESE tokens (all rows
  // of the request, pooled): sae_lens evals' explained_variance (ExplainedVarianceCalculator) for
  // one batch. 1 if x has no variance and x̂ = x, 0 if x has none and x̂ ≠ x.
  double explained_variance = 0.0;
  // Mean number of nonzero feature activations per token (of the clean encoding).
  double mean_l0 = 0.0;
};

struct SpliceResult {
  Tensor output;  // x's shape; == captured[kOutput]
  // Captured hook_sae_* values; undefined unless requested (kError: also needs the error term).
  std::array<Tensor, kNumSaeHooks> captured;
  SaeReconstructionStats stats;  // when compute_stats

  const Tensor& Captured(SaeHook hook) const { return captured[static_cast<int>(hook)]; }
};

}  // namespace glassbox
