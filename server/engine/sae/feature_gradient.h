// One SAE feature's activation (hook_sae_acts_post) as a function of the SAE's input: its value
// and its gradient, for gradient metrics on a feature (server/engine/gradients.h). Every
// architecture's activation is piecewise linear in the input: where the feature fires it is
// w · x + c along the direction
//   standard, jumprelu   W_enc[:, i]
//   topk                 W_enc[:, i] (· ‖W_dec,i‖ with rescale_acts_by_decoder_norm)
//   gated                W_enc[:, i] · exp(r_mag,i)   (the magnitude path; the gate is a step)
// and where it does not fire the gradient is 0, as torch autograd gives through sae_lens's
// encode (a JumpReLU's threshold and a TopK's selection are steps). A constant input scale
// (expected_average_only_in) is folded into W_enc at load; the per-token normalisations
// (constant_norm_rescale, layer_norm) are differentiated as torch does through sae_lens's: the
// direction above is the gradient at the normalised input, and goes back through the norm.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "server/engine/sae/sae.h"

namespace glassbox {

struct FeatureGradients {
  std::vector<double> values;  // the feature's activation at each row of x
  Tensor gradients;            // [rows, d_in] host f32: d value / d x, 0 where it does not fire
};

// x: host f32 [rows, d_in] (a hook_z SAE's heads flattened). INVALID_ARGUMENT for a feature
// outside [0, d_sae).
absl::StatusOr<FeatureGradients> FeatureInputGradients(const Sae& sae, const Tensor& x,
                                                       int32_t feature);

// The backward of the SAE spliced in at its hook (Sae::Splice), as torch autograd goes through
// sae_lens's SAE.forward: the error term is computed under no_grad, so with or without it the
// gradient flows through the features only:
//   ∂recons     = ∂output (/ c for constant_norm_rescale, · σ for layer_norm: the output is
//                 the reconstruction with the input's normalisation undone),
//   ∂acts_post  = ∂recons · W_decᵀ (/ ‖W_dec,i‖ for TopK SAEs that rescale),
//   the feature edits' backward (zero and clamp cut it, scale scales it, add passes it),
//   ∂acts_pre   = 1[clean f_i > 0] · ∂acts_i (· ‖W_dec,i‖ for TopK SAEs that rescale),
//   ∂u          = Σ_i ∂acts_pre_i · W_enc[:, i] (· exp(r_mag,i) for gated SAEs),
//   ∂x          = ∂u, or through the per-token normalisation u(x) and the output's dependence
//                 on c (or σ and μ) for SAEs that normalise each token.
// The gradient at hook_sae_output (and hook_sae_error) is d_output itself. x: the splice's input
// [rows, d_in]; d_output [rows, d_in].
struct SpliceGradients {
  Tensor input;      // [rows, d_in]: at hook_sae_input
  Tensor acts_pre;   // [rows, d_sae]: at hook_sae_acts_pre
  Tensor acts_post;  // [rows, d_sae]: at hook_sae_acts_post (after the edits)
  Tensor recons;     // [rows, d_in]: at hook_sae_recons
};
absl::StatusOr<SpliceGradients> SpliceBackward(const Sae& sae, const Tensor& x,
                                               const Tensor& d_output,
                                               const SpliceOptions& options);

}  // namespace glassbox
