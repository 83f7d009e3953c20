// FeatureInputGradients against central finite differences of Sae::Encode, in double steps on
// f32 math, for every architecture (and the folded input scale): where a feature fires, its
// activation is linear in the input along the returned direction; where it does not, the
// gradient is 0.
#include "server/engine/sae/feature_gradient.h"

#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/engine/sae/sae_loader.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::NormRelativeError;
using ::glassbox::testing::ReadAllTensors;

const std::string kSaeDir = std::string(GLASSBOX_FIXTURES_DIR) + "/saes/";

class FeatureGradientTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FeatureGradientTest, EqualsFiniteDifferencesOfEncode) {
  auto sae = LoadSae(kSaeDir + GetParam());
  ASSERT_TRUE(sae.ok()) << sae.status();
  const int64_t d_in = (*sae)->d_in(), d_sae = (*sae)->d_sae(), rows = 4;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Tensor x = Tensor::EmptyHost(DType::kF32, {rows, d_in});
  for (float& v : x.span<float>()) v = normal(rng);
  auto acts = (*sae)->Encode(x);
  ASSERT_TRUE(acts.ok()) << acts.status();
  int checked_firing = 0, checked_silent = 0;
  for (int32_t feature = 0; feature < d_sae && checked_firing < 6; ++feature) {
    auto got = FeatureInputGradients(**sae, x, feature);
    ASSERT_TRUE(got.ok()) << got.status();
    for (int64_t r = 0; r < rows; ++r) {
      const double value = acts->data<float>()[r * d_sae + feature];
      ASSERT_EQ(got->values[r], value);
      const float* g = got->gradients.data<float>() + r * d_in;
      if (value <= 0) {
        for (int64_t j = 0; j < d_in; ++j) ASSERT_EQ(g[j], 0.0f);
        ++checked_silent;
        continue;
      }
      // f(x + h e_j) − f(x − h e_j) over 2h, for each input element; a step that would cross a
      // threshold or change a top-k selection would show as a large error.
      double diff = 0, norm = 0;
      const float h = 1e-2f;
      for (int64_t j = 0; j < d_in; ++j) {
        Tensor up = Tensor::EmptyHost(DType::kF32, {1, d_in});
        std::copy_n(x.data<float>() + r * d_in, d_in, up.data<float>());
        Tensor down = Tensor::EmptyHost(DType::kF32, {1, d_in});
        std::copy_n(x.data<float>() + r * d_in, d_in, down.data<float>());
        up.data<float>()[j] += h;
        down.data<float>()[j] -= h;
        const double f_up = (*(*sae)->Encode(up)).data<float>()[feature];
        const double f_down = (*(*sae)->Encode(down)).data<float>()[feature];
        const double numerical = (f_up - f_down) / (2 * h);
        diff += (numerical - g[j]) * (numerical - g[j]);
        norm += numerical * numerical;
      }
      EXPECT_LE(std::sqrt(diff / norm), 1e-3) << "feature " << feature << " row " << r;
      ++checked_firing;
    }
  }
  EXPECT_GT(checked_firing, 0);
  std::printf("%s: %d firing and %d silent (row, feature) pairs checked\n", GetParam().c_str(),
              checked_firing, checked_silent);
}

INSTANTIATE_TEST_SUITE_P(Architectures, FeatureGradientTest,
                         ::testing::Values("standard", "jumprelu", "gated", "topk", "topk_rescale",
                                           "standard_no_b_dec_in", "standard_hook_z",
                                           "topk_expected_average_scaler_json",
                                           "gated_expected_average_option", "standard_layer_norm",
                                           "jumprelu_constant_norm_rescale",
                                           "jumprelu_hook_z_layer_norm"));

// SpliceBackward against torch autograd through sae_lens's SAE.forward with the error term and
// feature edits (make_splice_gradient_fixtures.py's splice_backward): the gradients of
// sum(output · r) at hook_sae_input, acts_pre and acts_post; recons' is r itself.
class SpliceBackwardTest : public ::testing::TestWithParam<std::string> {};

TEST_P(SpliceBackwardTest, EqualsTorchAutogradThroughSaeLens) {
  static const auto* expected = new std::map<std::string, Tensor>(ReadAllTensors(
      std::string(GLASSBOX_FIXTURES_DIR) + "/expected/tiny-gpt2.splice_gradients.safetensors"));
  auto sae = LoadSae(kSaeDir + GetParam());
  ASSERT_TRUE(sae.ok()) << sae.status();
  const std::string prefix = "backward." + GetParam() + ".";
  const Tensor& x = expected->at(prefix + "x");
  const int64_t d_in = (*sae)->d_in(), rows = x.numel() / d_in, seq = x.dim(1);
  // The script's EDITS, over rows b · seq + position: zero feature 3 everywhere, scale 0-2 by
  // 0.5 at position 1, clamp 7 to 1.5 at position 2.
  std::vector<int64_t> at_one, at_two;
  for (int64_t b = 0; b < x.dim(0); ++b) {
    at_one.push_back(b * seq + 1);
    at_two.push_back(b * seq + 2);
  }
  const SpliceOptions options{.edits = {{.kind = FeatureEditKind::kZero, .features = {3}},
                                        {.kind = FeatureEditKind::kScale,
                                         .features = {0, 1, 2},
                                         .value = 0.5f,
                                         .tokens = at_one},
                                        {.kind = FeatureEditKind::kClamp,
                                         .features = {7},
                                         .value = 1.5f,
                                         .tokens = at_two}},
                              .use_error_term = true};
  auto got = SpliceBackward(**sae, x.Reshape({rows, d_in}),
                            expected->at(prefix + "r").Reshape({rows, d_in}), options);
  ASSERT_TRUE(got.ok()) << got.status();
  const std::vector<std::pair<std::string, const Tensor*>> points = {
      {"hook_sae_input", &got->input},
      {"hook_sae_acts_pre", &got->acts_pre},
      {"hook_sae_acts_post", &got->acts_post}};
  for (const auto& [point, tensor] : points) {
    const Tensor& want = expected->at(prefix + "grad." + point);
    const double error = NormRelativeError(tensor->Reshape(want.shape()), want);
    EXPECT_LE(error, 1e-5) << point;
    std::printf("%s %s: norm-relative error %.2g\n", GetParam().c_str(), point.c_str(), error);
  }
  const Tensor& recons = expected->at(prefix + "grad.hook_sae_recons");
  EXPECT_LE(NormRelativeError(got->recons.Reshape(recons.shape()), recons), 1e-5) << "recons";
}

INSTANTIATE_TEST_SUITE_P(Architectures, SpliceBackwardTest,
                         ::testing::Values("standard", "jumprelu", "gated", "topk", "topk_rescale",
                                           "standard_hook_z", "standard_constant_norm_rescale",
                                           "standard_layer_norm", "gated_layer_norm",
                                           "topk_layer_norm", "jumprelu_hook_z_layer_norm"));

TEST(FeatureGradient, RefusesAFeatureOutsideTheSae) {
  auto sae = LoadSae(kSaeDir + "standard");
  ASSERT_TRUE(sae.ok());
  const Tensor x = Tensor::ZerosHost(DType::kF32, {1, (*sae)->d_in()});
  EXPECT_EQ(FeatureInputGradients(**sae, x, 96).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace glassbox
