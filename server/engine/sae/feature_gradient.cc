#include "server/engine/sae/feature_gradient.h"

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cpu/gemm.h"

namespace glassbox {

namespace {

bool RescalesByDecoderNorm(const Sae& sae) {
  return sae.config().architecture == SaeArchitecture::kTopK &&
         sae.config().rescale_acts_by_decoder_norm;
}

// Between hook_sae_acts_pre and the activation function, a TopK SAE that rescales multiplies
// feature i by ‖W_dec,i‖.
double PreScale(const Sae& sae, int64_t feature) {
  return RescalesByDecoderNorm(sae) ? sae.decoder_norm()[feature] : 1.0;
}

// hook_sae_acts_pre grows along W_enc[:, i] times this: a gated SAE's magnitude path reads
// W_enc · exp(r_mag).
double MagnitudeScale(const Sae& sae, int64_t feature) {
  return sae.config().architecture == SaeArchitecture::kGated ? sae.exp_r_mag()[feature] : 1.0;
}

bool NormalisesEachToken(const Sae& sae) {
  const SaeNormalization n = sae.config().normalization;
  return n == SaeNormalization::kConstantNormRescale || n == SaeNormalization::kLayerNorm;
}

// The backward of sae_lens's per-token normalisation around the SAE, row by row:
//   constant_norm_rescale  u = c x, c = sqrt(d)/‖x‖;                 output = r / c
//   layer_norm             u = (x − μ)/(σ + ε), σ = std(x) (unbiased); output = r σ + μ
// with u the SAE's input (before b_dec) and r its reconstruction (hook_sae_recons). c, σ and μ
// depend on x, so the gradient at x has, besides the path through u, the terms through them.
// `g` [rows, d] (the gradient at u) becomes the gradient at x in place; `dy` is the gradient at
// the output and `recons` r (both null for a metric on the features: no output path).
void NormBackward(const Sae& sae, const SaeNormState& norm, const float* x, const float* dy,
                  const float* recons, int64_t rows, float* g) {
  const int64_t d = sae.d_in();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * d;
    float* gr = g + r * d;
    auto through_output = [&](int64_t j) {  // ∂/∂(the factor) of output_j, times dy_j
      return dy == nullptr ? 0.0 : double{dy[r * d + j]} * recons[r * d + j];
    };
    if (norm.normalization == SaeNormalization::kConstantNormRescale) {
      const double c = norm.scale[r];
      double squares = 0, d_c = 0;
      for (int64_t j = 0; j < d; ++j) {
        squares += double{xr[j]} * xr[j];
        d_c += -through_output(j) / (c * c) + double{gr[j]} * xr[j];
      }
      // ∂c/∂x = −c x / ‖x‖² (an all-zero x keeps c = 1, and no such term).
      const double along_x = squares > 0 ? -d_c * c / squares : 0.0;
      for (int64_t j = 0; j < d; ++j) gr[j] = static_cast<float>(c * gr[j] + along_x * xr[j]);
    } else {
      const double sigma = norm.scale[r], mu = norm.shift[r], den = sigma + 1e-5;
      double d_sigma = 0, d_mu = 0;
      for (int64_t j = 0; j < d; ++j) {
        d_sigma += through_output(j) - double{gr[j]} * (xr[j] - mu) / (den * den);
        d_mu += dy == nullptr ? 0.0 : dy[r * d + j];
      }
      // σ = sqrt(Σ c² / (d − 1)) of c = x − μ: ∂σ/∂c_j = c_j / ((d − 1) σ).
      const double per_c =
          sigma > 0 && d > 1 ? d_sigma / (static_cast<double>(d - 1) * sigma) : 0.0;
      std::vector<double> dc(d);
      double mean_dc = 0;
      for (int64_t j = 0; j < d; ++j) {
        dc[j] = gr[j] / den + per_c * (xr[j] - mu);
        mean_dc += dc[j] / static_cast<double>(d);
      }
      // c = x − mean(x); the output's + μ adds mean's gradient.
      for (int64_t j = 0; j < d; ++j) {
        gr[j] = static_cast<float>(dc[j] - mean_dc + d_mu / static_cast<double>(d));
      }
    }
  }
}

}  // namespace

absl::StatusOr<FeatureGradients> FeatureInputGradients(const Sae& sae, const Tensor& x,
                                                       int32_t feature) {
  const SaeConfig& c = sae.config();
  if (feature < 0 || feature >= c.d_sae)
    return absl::InvalidArgumentError(
        absl::StrCat("feature ", feature, " is outside the SAE's [0, ", c.d_sae, ")"));
  const int64_t d_in = c.d_in, d_sae = c.d_sae, rows = x.numel() / d_in;
  SaeNormState norm;
  GB_ASSIGN_OR_RETURN(Tensor acts, sae.Encode(x.Reshape({rows, d_in}), &norm));
  // The direction along which the feature grows where it fires.
  const SaeWeights& w = sae.weights();
  std::vector<double> direction(d_in);
  const double factor = PreScale(sae, feature) * MagnitudeScale(sae, feature);
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
  if (NormalisesEachToken(sae)) {
    NormBackward(sae, norm, x.data<float>(), nullptr, nullptr, rows, out.gradients.data<float>());
  }
  return out;
}

absl::StatusOr<SpliceGradients> SpliceBackward(const Sae& sae, const Tensor& x,
                                               const Tensor& d_output,
                                               const SpliceOptions& options) {
  const int64_t d_in = sae.d_in(), d_sae = sae.d_sae(), rows = x.numel() / d_in;
  const Tensor x_rows = x.Reshape({rows, d_in});
  const SaeWeights& w = sae.weights();
  SaeNormState norm;
  GB_ASSIGN_OR_RETURN(Tensor clean, sae.Encode(x_rows, &norm));
  SpliceGradients out{.input = Tensor::EmptyHost(DType::kF32, {rows, d_in}),
                      .acts_pre = Tensor::EmptyHost(DType::kF32, {rows, d_sae}),
                      .acts_post = Tensor::EmptyHost(DType::kF32, {rows, d_sae}),
                      .recons = Tensor::EmptyHost(DType::kF32, {rows, d_in})};
  // ∂recons: the output is the reconstruction with the input's normalisation undone (r / c,
  // r σ + μ), and nothing else for other SAEs.
  const float* dy = d_output.data<float>();
  float* d_recons = out.recons.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float factor = norm.normalization == SaeNormalization::kConstantNormRescale
                             ? 1.0f / norm.scale[r]
                         : norm.normalization == SaeNormalization::kLayerNorm ? norm.scale[r]
                                                                              : 1.0f;
    for (int64_t j = 0; j < d_in; ++j) d_recons[r * d_in + j] = dy[r * d_in + j] * factor;
  }
  // ∂acts_post = ∂recons · W_decᵀ; a TopK SAE that rescales decodes acts / ‖W_dec,i‖.
  GB_RETURN_IF_ERROR(cpu::Sgemm(/*trans_b=*/true, rows, d_sae, d_in, 1.0f, d_recons, d_in,
                                w.W_dec.data<float>(), d_in, 0.0f, out.acts_post.data<float>(),
                                d_sae));
  float* post = out.acts_post.data<float>();
  if (RescalesByDecoderNorm(sae)) {
    const std::span<const float> norm = sae.decoder_norm();
    for (int64_t k = 0; k < rows * d_sae; ++k) post[k] /= norm[k % d_sae];
  }
  // Through the feature edits, last first, to the clean activations ...
  float* pre = out.acts_pre.data<float>();
  std::copy_n(post, rows * d_sae, pre);
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
        float& e = pre[r * d_sae + f];
        e = edit->kind == FeatureEditKind::kScale ? e * edit->value : 0.0f;
      }
    }
  }
  // ... then through the activation function (1 where the clean feature fired: a JumpReLU's
  // threshold, a gate and a TopK selection are steps) and a TopK SAE's rescaling, to
  // hook_sae_acts_pre.
  const float* f = clean.data<float>();
  for (int64_t k = 0; k < rows * d_sae; ++k) {
    pre[k] = f[k] > 0 ? static_cast<float>(pre[k] * PreScale(sae, k % d_sae)) : 0.0f;
  }
  // ∂x = ∂acts_pre · (W_enc · the magnitude scale)ᵀ, W_enc [d_in, d_sae].
  const float* d_pre = pre;
  std::vector<float> scaled;
  if (sae.config().architecture == SaeArchitecture::kGated) {
    scaled.resize(rows * d_sae);
    for (int64_t k = 0; k < rows * d_sae; ++k) {
      scaled[k] = static_cast<float>(pre[k] * MagnitudeScale(sae, k % d_sae));
    }
    d_pre = scaled.data();
  }
  GB_RETURN_IF_ERROR(cpu::Sgemm(/*trans_b=*/true, rows, d_in, d_sae, 1.0f, d_pre, d_sae,
                                w.W_enc.data<float>(), d_sae, 0.0f, out.input.data<float>(), d_in));
  if (NormalisesEachToken(sae)) {
    // The output path through c (or σ and μ) reads the reconstruction of the edited features.
    SpliceOptions recons_only{.edits = options.edits};
    recons_only.capture[static_cast<int>(SaeHook::kRecons)] = true;
    GB_ASSIGN_OR_RETURN(SpliceResult forward, sae.Splice(x_rows, recons_only));
    NormBackward(sae, norm, x_rows.data<float>(), dy,
                 forward.Captured(SaeHook::kRecons).data<float>(), rows, out.input.data<float>());
  }
  return out;
}

}  // namespace glassbox
