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
// (constant_norm_rescale, layer_norm) are not differentiated here: UNIMPLEMENTED.
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

}  // namespace glassbox
