// A loaded sparse autoencoder and its CPU math, with SAELens semantics (sae_lens 6):
//
//   x' = norm_in(x) − b_dec·[apply_b_dec_to_input]
//   standard  f = ReLU(x'W_enc + b_enc)
//   jumprelu  f = ReLU(pre)·1[pre > θ],  pre = x'W_enc + b_enc
//   gated     f = 1[x'W_enc + b_gate > 0] · ReLU(x'(W_enc ⊙ exp(r_mag)) + b_mag)
//   topk      s = pre (· ‖W_dec,i‖ when rescale_acts_by_decoder_norm); f = ReLU(s) on the k
//             largest s of each token, 0 elsewhere
//   x̂ = norm_out(f' W_dec + b_dec), f' = f (/ ‖W_dec,i‖ when rescaling)
//
// Inputs are host f32 tensors whose last axis is d_in ([..., d_in]); a hook_z SAE also takes
// [..., n_heads, d_head] with n_heads·d_head = d_in. Every row (token) is independent, so work is
// done in tiles of tokens (bounded scratch memory) and the dense [tokens, d_sae] activations are
// only materialised when the caller asks for them. GEMMs run on oneDNN (kernels/cpu/gemm.h); the
// decoder exploits sparsity (it sums the rows of W_dec of the active features).
//
// A Sae is immutable once built: every method is const and safe to call from many threads.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "server/engine/sae/sae_config.h"
#include "server/engine/sae/sae_types.h"

namespace glassbox {

// Parameters as sae_lens names and lays them out, host f32. Which are present depends on the
// architecture: b_enc (standard, jumprelu, topk), threshold (jumprelu), b_gate, r_mag, b_mag
// (gated).
struct SaeWeights {
  Tensor W_enc;                            // [d_in, d_sae]
  Tensor W_dec;                            // [d_sae, d_in]
  Tensor b_enc;                            // [d_sae]
  Tensor b_dec;                            // [d_in]
  Tensor threshold, b_gate, r_mag, b_mag;  // [d_sae]
};

class Sae {
 public:
  // Validates the weights against the config (every shape, the parameters the architecture needs
  // and no others, finite values) and prepares derived values. kExpectedAverageOnlyIn with a
  // norm_scaling_factor folds it into the weights here, as sae_lens's from_pretrained does.
  // INVALID_ARGUMENT naming the tensor and both shapes on any mismatch.
  static absl::StatusOr<std::unique_ptr<Sae>> Create(SaeConfig config, SaeWeights weights);

  const SaeConfig& config() const { return config_; }
  int64_t d_in() const { return config_.d_in; }
  int64_t d_sae() const { return config_.d_sae; }
  // After folding, i.e. the values the math uses.
  const SaeWeights& weights() const { return weights_; }
  // Bytes of weights held (for memory accounting).
  int64_t ResidentBytes() const;
  // Derived per-feature factors, computed once at Create: exp(r_mag) of a gated SAE, and
  // ‖W_dec,i‖ of a TopK SAE that rescales its activations by it; empty for other SAEs.
  std::span<const float> exp_r_mag() const { return exp_r_mag_; }
  std::span<const float> decoder_norm() const { return decoder_norm_; }

  // The number of tokens in x and the shape of its token dims, or INVALID_ARGUMENT explaining
  // the shapes this SAE accepts. Only host f32 tensors are accepted.
  absl::StatusOr<std::pair<int64_t, Shape>> TokenShape(const Tensor& x) const;

  // Dense feature activations (hook_sae_acts_post) [..., d_sae]. When `norm` is given it
  // receives the per-token normalisation state that Decode needs for input-dependent modes.
  absl::StatusOr<Tensor> Encode(const Tensor& x, SaeNormState* norm = nullptr) const;
  // The same activations, sparse, without materialising [tokens, d_sae].
  absl::StatusOr<SparseActs> EncodeSparse(const Tensor& x, const SparseEncodeOptions& options = {},
                                          SaeNormState* norm = nullptr) const;

  // x̂ [..., d_in] from activations [..., d_sae] (for hook_z SAEs: flattened; reshape to
  // [..., n_heads, d_head] as needed). constant_norm_rescale and layer_norm SAEs need the norm
  // state of the input the activations came from (INVALID_ARGUMENT without it); other SAEs
  // ignore it.
  absl::StatusOr<Tensor> Decode(const Tensor& acts, const SaeNormState* norm = nullptr) const;
  absl::StatusOr<Tensor> DecodeSparse(const SparseActs& acts,
                                      const SaeNormState* norm = nullptr) const;

  // decode(encode(x)), in x's shape; optionally with statistics against x.
  absl::StatusOr<Tensor> Reconstruct(const Tensor& x,
                                     SaeReconstructionStats* stats = nullptr) const;

  // The SAE spliced in at its hook: x -> the value that replaces it, with feature edits, the
  // error term and hook_sae_* captures (see SpliceOptions). Equal to sae_lens's SAE.forward with
  // use_error_term and a hook on hook_sae_acts_post applying the edits.
  absl::StatusOr<SpliceResult> Splice(const Tensor& x, const SpliceOptions& options) const;

  // Σ c·W_dec[feature] [d_in] (hook_z SAEs: flattened), the additive steering vector of
  // Neuronpedia's steering; add it to the hook's value at the positions to steer.
  absl::StatusOr<Tensor> SteeringVector(
      std::span<const std::pair<int32_t, float>> feature_coefficients) const;
  absl::StatusOr<Tensor> DecoderDirection(int32_t feature, float coefficient = 1.0f) const {
    const std::pair<int32_t, float> one{feature, coefficient};
    return SteeringVector(std::span(&one, 1));
  }

 private:
  Sae(SaeConfig config, SaeWeights weights)
      : config_(std::move(config)), weights_(std::move(weights)) {}

  bool HasRuntimeNorm() const {
    return config_.normalization == SaeNormalization::kConstantNormRescale ||
           config_.normalization == SaeNormalization::kLayerNorm;
  }
  // Rows per tile: bounded so [tile, d_sae] scratch stays a few tens of MiB.
  int64_t TileRows() const;

  // x rows [r0, r0 + n) -> x' (normalised, b_dec applied) into sae_in [n, d_in]; norm state of
  // those rows into scale/shift (each n entries; unused for modes without runtime norm).
  void PrepareInput(const float* x, int64_t n, float* sae_in, float* scale, float* shift) const;
  // sae_in [n, d_in] -> pre [n, d_sae] (the hook_sae_acts_pre values) and post [n, d_sae]
  // (acts_post). pre may equal post (in-place) when the caller does not need pre.
  void EncodeRows(const float* sae_in, int64_t n, float* pre, float* post) const;
  // acts [n, d_sae] -> recons [n, d_in] = f'W_dec + b_dec (normalised space).
  void DecodeRows(const float* acts, int64_t n, float* recons) const;
  // CSR rows -> recons.
  void DecodeSparseRows(const SparseActs& acts, int64_t r0, int64_t n, float* recons) const;
  // recons [n, d_in] -> output space, in place, using the rows' norm state.
  void UndoNorm(float* rows, int64_t n, const float* scale, const float* shift) const;
  // Validates that `norm` fits `rows` tokens for this SAE.
  absl::Status CheckNormState(const SaeNormState* norm, int64_t rows) const;

  SaeConfig config_;
  SaeWeights weights_;
  std::vector<float> exp_r_mag_;         // gated: exp(r_mag)
  std::vector<float> decoder_norm_;      // topk rescaling: ‖W_dec,i‖
  std::vector<float> inv_decoder_norm_;  // 1 / ‖W_dec,i‖
};

}  // namespace glassbox
