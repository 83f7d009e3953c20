#include "server/engine/sae/feature_gradient.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cpu/gemm.h"

namespace glassbox {

namespace {

double DecoderNorm(const Sae& sae, int32_t feature) {
  const int64_t d_in = sae.d_in();
  double norm = 0;
  for (int64_t j = 0; j < d_in; ++j) {
    const double v = sae.weights().W_dec.data<float>()[feature * d_in + j];
    norm += v * v;
  }
  return std::sqrt(norm);
}

// A firing feature's activation grows along W_enc[:, i] times this.
double EncoderFactor(const Sae& sae, int32_t feature) {
  const SaeConfig& c = sae.config();
  if (c.architecture == SaeArchitecture::kGated)
    return std::exp(double{sae.weights().r_mag.data<float>()[feature]});
  if (c.architecture == SaeArchitecture::kTopK && c.rescale_acts_by_decoder_norm)
    return DecoderNorm(sae, feature);
  return 1;
}

// The decoder reads acts / ‖W_dec,i‖ for TopK SAEs that rescale, the acts themselves otherwise.
double DecoderFactor(const Sae& sae, int32_t feature) {
  const SaeConfig& c = sae.config();
  return c.architecture == SaeArchitecture::kTopK && c.rescale_acts_by_decoder_norm
             ? 1 / DecoderNorm(sae, feature)
             : 1;
}

}  // namespace

absl::Status CheckSpliceDifferentiable(const Sae& sae) {
  const SaeNormalization n = sae.config().normalization;
  if (n == SaeNormalization::kConstantNormRescale || n == SaeNormalization::kLayerNorm)
    return absl::UnimplementedError(
        "gradients through an SAE that normalises each token (constant_norm_rescale, "
        "layer_norm) are not implemented");
  return absl::OkStatus();
}

absl::StatusOr<FeatureGradients> FeatureInputGradients(const Sae& sae, const Tensor& x,
                                                       int32_t feature) {
  const SaeConfig& c = sae.config();
  if (feature < 0 || feature >= c.d_sae)
    return absl::InvalidArgumentError(
        absl::StrCat("feature ", feature, " is outside the SAE's [0, ", c.d_sae, ")"));
  GB_RETURN_IF_ERROR(CheckSpliceDifferentiable(sae));
  const int64_t d_in = c.d_in, d_sae = c.d_sae, rows = x.numel() / d_in;
  GB_ASSIGN_OR_RETURN(Tensor acts, sae.Encode(x.Reshape({rows, d_in})));
  // The direction along which the feature grows where it fires.
  const SaeWeights& w = sae.weights();
  std::vector<double> direction(d_in);
  const double factor = EncoderFactor(sae, feature);
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

absl::StatusOr<SpliceGradients> SpliceBackward(const Sae& sae, const Tensor& x,
                                               const Tensor& d_output,
                                               const SpliceOptions& options) {
  GB_RETURN_IF_ERROR(CheckSpliceDifferentiable(sae));
  const int64_t d_in = sae.d_in(), d_sae = sae.d_sae(), rows = x.numel() / d_in;
  const SaeWeights& w = sae.weights();
  GB_ASSIGN_OR_RETURN(Tensor clean, sae.Encode(x.Reshape({rows, d_in})));
  // ∂acts_post = ∂output · W_decᵀ, per feature times what the decoder reads of it.
  SpliceGradients out{.input = Tensor::EmptyHost(DType::kF32, {rows, d_in}),
                      .acts_post = Tensor::EmptyHost(DType::kF32, {rows, d_sae})};
  GB_RETURN_IF_ERROR(cpu::Sgemm(/*trans_b=*/true, rows, d_sae, d_in, 1.0f, d_output.data<float>(),
                                d_in, w.W_dec.data<float>(), d_in, 0.0f,
                                out.acts_post.data<float>(), d_sae));
  std::vector<double> decoder(d_sae), encoder(d_sae);
  for (int32_t i = 0; i < d_sae; ++i) {
    decoder[i] = DecoderFactor(sae, i);
    encoder[i] = EncoderFactor(sae, i);
  }
  float* g = out.acts_post.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < d_sae; ++i) g[r * d_sae + i] *= static_cast<float>(decoder[i]);
  }
  // Through the feature edits, last first, to the clean activations; then through the
  // activation function to the pre-activation (scaled as the encoder direction is).
  Tensor d_pre = Tensor::EmptyHost(DType::kF32, {rows, d_sae});
  std::copy_n(g, rows * d_sae, d_pre.data<float>());
  float* p = d_pre.data<float>();
  for (auto edit = options.edits.rbegin(); edit != options.edits.rend(); ++edit) {
    if (edit->kind == FeatureEditKind::kAdd) continue;
    // Each (token, feature) pair is edited once, however often the edit names it.
    std::vector<int64_t> tokens = edit->tokens;
    if (tokens.empty()) {
      for (int64_t r = 0; r < rows; ++r) tokens.push_back(r);
    }
    std::vector<int32_t> features = edit->features;
    std::sort(tokens.begin(), tokens.end());
    tokens.erase(std::unique(tokens.begin(), tokens.end()), tokens.end());
    std::sort(features.begin(), features.end());
    features.erase(std::unique(features.begin(), features.end()), features.end());
    for (int64_t r : tokens) {
      for (int32_t f : features) {
        float& e = p[r * d_sae + f];
        e = edit->kind == FeatureEditKind::kScale ? e * edit->value : 0.0f;
      }
    }
  }
  const float* f = clean.data<float>();
  for (int64_t k = 0; k < rows * d_sae; ++k) {
    p[k] = f[k] > 0 ? static_cast<float>(p[k] * encoder[k % d_sae]) : 0.0f;
  }
  // ∂x = ∂pre · W_encᵀ, W_enc [d_in, d_sae].
  GB_RETURN_IF_ERROR(cpu::Sgemm(/*trans_b=*/true, rows, d_in, d_sae, 1.0f, p, d_sae,
                                w.W_enc.data<float>(), d_sae, 0.0f, out.input.data<float>(), d_in));
  return out;
}

}  // namespace glassbox
