#include "server/engine/sae/feature_gradient.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace glassbox {

absl::StatusOr<FeatureGradients> FeatureInputGradients(const Sae& sae, const Tensor& x,
                                                       int32_t feature) {
  const SaeConfig& c = sae.config();
  if (feature < 0 || feature >= c.d_sae)
    return absl::InvalidArgumentError(absl::StrCat("feature ", feature, " is outside the SAE's [0, ",
                                                   c.d_sae, ")"));
  if (c.normalization == SaeNormalization::kConstantNormRescale ||
      c.normalization == SaeNormalization::kLayerNorm)
    return absl::UnimplementedError(
        "gradients of a feature of an SAE that normalises each token (constant_norm_rescale, "
        "layer_norm) are not implemented");
  const int64_t d_in = c.d_in, d_sae = c.d_sae, rows = x.numel() / d_in;
  GB_ASSIGN_OR_RETURN(Tensor acts, sae.Encode(x.Reshape({rows, d_in})));
  // The direction along which the feature grows where it fires.
  const SaeWeights& w = sae.weights();
  std::vector<double> direction(d_in);
  double factor = 1;
  if (c.architecture == SaeArchitecture::kGated) factor = std::exp(double{w.r_mag.data<float>()[feature]});
  if (c.architecture == SaeArchitecture::kTopK && c.rescale_acts_by_decoder_norm) {
    double norm = 0;
    for (int64_t j = 0; j < d_in; ++j) {
      const double v = w.W_dec.data<float>()[feature * d_in + j];
      norm += v * v;
    }
    factor = std::sqrt(norm);
  }
  for (int64_t j = 0; j < d_in; ++j) {
    direction[j] = factor * w.W_enc.data<float>()[j * d_sae + feature];
  }
  FeatureGradients out{.gradients = Tensor::ZerosHost(DType::kF32, {rows, d_in})};
  for (int64_t r = 0; r < rows; ++r) {
    const double value = acts.data<float>()[r * d_sae + feature];
    out.values.push_back(value);
    if (value <= 0) continue;
    float* g = out.gradients.data<float>() + r * d_in;
    for (int64_t j = 0; j < d_in; ++j) g[j] = static_cast<float>(direction[j]);
  }
  return out;
}

}  // namespace glassbox
