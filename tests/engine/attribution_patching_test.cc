// Attribution patching against (clean − corrupted) · grad computed with torch on the same weights
// in float64 (tests/reference/make_attribution_fixtures.py), for every sweep kind and three
// metrics, on the tiny GPT-2 fixture and the demo model; and the exact neuron sweep against
// hooks that patch one neuron per forward pass.
#include "server/engine/attribution_patching.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/gradients.h"
#include "server/engine/sae/sae_loader.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::FixturePath;
using ::glassbox::testing::ModelDir;
using ::glassbox::testing::NormRelativeError;
using ::glassbox::testing::ReadAllTensors;
using ::testing::HasSubstr;

const std::map<std::string, SweepKind>& Kinds() {
  static const auto* kinds =
      new std::map<std::string, SweepKind>{{"resid_pre", SweepKind::kResidPre},
                                           {"resid_mid", SweepKind::kResidMid},
                                           {"resid_post", SweepKind::kResidPost},
                                           {"attn_out", SweepKind::kAttnOut},
                                           {"mlp_out", SweepKind::kMlpOut},
                                           {"head_out_all_pos", SweepKind::kHeadOutAllPos},
                                           {"head_out_by_pos", SweepKind::kHeadOutByPos},
                                           {"q_all_pos", SweepKind::kQAllPos},
                                           {"k_all_pos", SweepKind::kKAllPos},
                                           {"v_all_pos", SweepKind::kVAllPos},
                                           {"pattern_all_pos", SweepKind::kPatternAllPos},
                                           {"mlp_post_all_pos", SweepKind::kMlpPostAllPos}};
  return *kinds;
}

const std::map<std::string, PatchingMetric>& Metrics() {
  static const auto* metrics = new std::map<std::string, PatchingMetric>{
      {"logit_diff", {.kind = PatchingMetric::Kind::kLogitDiff, .token_a = 17, .token_b = 42}},
      {"log_prob", {.kind = PatchingMetric::Kind::kLogProb, .token_a = 17}},
      {"loss", {.kind = PatchingMetric::Kind::kLoss}}};
  return *metrics;
}

class AttributionPatchingTest : public ::testing::TestWithParam<std::string> {};

TEST_P(AttributionPatchingTest, EqualsCleanMinusCorruptedDotTorchGradient) {
  auto model = Transformer::Load(ModelDir(GetParam()), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  const auto expected =
      ReadAllTensors(FixturePath("expected/" + GetParam() + ".attribution.safetensors"));
  int compared = 0;
  double worst = 0;
  std::string worst_at;
  for (const auto& [metric_name, metric] : Metrics()) {
    for (const auto& [kind_name, kind] : Kinds()) {
      const std::string key = metric_name + "." + kind_name;
      SCOPED_TRACE(key);
      ASSERT_TRUE(expected.count(key + ".atp")) << "the fixture lacks " << key;
      auto result = RunAttributionPatching(**model, {.clean = expected.at("clean"),
                                                     .corrupted = expected.at("corrupted"),
                                                     .kind = kind,
                                                     .metric = metric});
      ASSERT_TRUE(result.ok()) << result.status();
      EXPECT_EQ(result->forward_passes, 2);
      EXPECT_EQ(result->backward_passes, 1);
      const double clean = expected.at(metric_name + ".clean_metric").data<float>()[0];
      const double corrupted = expected.at(metric_name + ".corrupted_metric").data<float>()[0];
      EXPECT_NEAR(result->clean_metric, clean, 1e-4 * std::max(1.0, std::abs(clean)));
      EXPECT_NEAR(result->corrupted_metric, corrupted, 1e-4 * std::max(1.0, std::abs(corrupted)));
      // The estimate is what the fixture holds: normalized · (m_clean − m_corrupted), and
      // values = m_corrupted + it (rounded to f32 near m_corrupted, so compared loosely).
      const Tensor& want = expected.at(key + ".atp");
      ASSERT_EQ(result->values.shape(), want.shape());
      Tensor estimate = Tensor::EmptyHost(DType::kF32, want.shape());
      const double span = result->clean_metric - result->corrupted_metric;
      for (int64_t i = 0; i < want.numel(); ++i) {
        const double e = result->normalized.data<float>()[i] * span;
        estimate.data<float>()[i] = static_cast<float>(e);
        ASSERT_NEAR(result->values.data<float>()[i], result->corrupted_metric + e,
                    1e-6 * std::max(1.0, std::abs(result->corrupted_metric)));
      }
      const double f32_error = expected.at(key + ".f32_error").data<float>()[0];
      const double error = NormRelativeError(estimate, want);
      EXPECT_LE(error, std::max(1e-5, 2 * f32_error));
      if (error > worst) {
        worst = error;
        worst_at = key;
      }
      ++compared;
    }
  }
  std::printf("%s: %d maps, worst norm-relative error %.2g at %s\n", GetParam().c_str(), compared,
              worst, worst_at.c_str());
}

TEST_P(AttributionPatchingTest, ExactNeuronSweepEqualsOnePassPerNeuron) {
  auto model = Transformer::Load(ModelDir(GetParam()), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  const auto expected =
      ReadAllTensors(FixturePath("expected/" + GetParam() + ".attribution.safetensors"));
  auto result = RunPatchingSweep(**model, {.clean = expected.at("clean"),
                                           .corrupted = expected.at("corrupted"),
                                           .kind = SweepKind::kMlpPostAllPos,
                                           .metric = Metrics().at("logit_diff")});
  ASSERT_TRUE(result.ok()) << result.status();
  const Tensor& want = expected.at("logit_diff.mlp_post_all_pos.exact");
  ASSERT_EQ(result->values.shape(), want.shape());
  EXPECT_THAT(result->dim_names, ::testing::ElementsAre("layer", "neuron"));
  const double error = NormRelativeError(result->values, want);
  EXPECT_LE(error, 1e-5);
  std::printf("%s exact neuron sweep: %lld cells in %d passes, norm-relative error %.2g\n",
              GetParam().c_str(), static_cast<long long>(want.numel()), result->forward_passes,
              error);
}

INSTANTIATE_TEST_SUITE_P(Models, AttributionPatchingTest, ::testing::Values("tiny-gpt2", "demo"));

// On the other architectures: each resid_pre cell is m(corrupted) + (clean − corrupted) · ∂m/∂x
// at the corrupted run, from the values and gradients RunForwardBackward gives (those gradients
// are checked against torch at every hook in gradients_test).
TEST(AttributionPatching, ResidualCellsFollowTheDefinitionOnOtherArchitectures) {
  for (const std::string name : {"tiny-llama", "tiny-pythia", "tiny-olmo2", "tiny-gemma2"}) {
    SCOPED_TRACE(name);
    auto model = Transformer::Load(ModelDir(name), std::make_shared<CpuBackend>());
    ASSERT_TRUE(model.ok()) << model.status();
    const Tensor clean = Tensor::FromHost(std::vector<int32_t>{5, 17, 42, 9, 100, 3}, {1, 6});
    const Tensor corrupted = Tensor::FromHost(std::vector<int32_t>{5, 17, 61, 9, 100, 3}, {1, 6});
    const PatchingMetric metric{
        .kind = PatchingMetric::Kind::kLogitDiff, .token_a = 9, .token_b = 100};
    auto atp = RunAttributionPatching(
        **model,
        {.clean = clean, .corrupted = corrupted, .kind = SweepKind::kResidPre, .metric = metric});
    ASSERT_TRUE(atp.ok()) << atp.status();
    const int layers = (*model)->config().n_layers;
    const int64_t d = (*model)->config().d_model;
    ASSERT_EQ(atp->values.shape(), (Shape{layers, 6}));
    std::vector<HookId> hooks;
    for (int l = 0; l < layers; ++l) {
      hooks.push_back(
          *(*model)->hooks().Resolve("blocks." + std::to_string(l) + ".hook_resid_pre"));
    }
    const GradientMetric m{.kind = GradientMetric::Kind::kLogitDiff, .token_a = 9, .token_b = 100};
    auto c = RunForwardBackward(**model,
                                {.tokens = clean, .metric = m, .values = hooks, .backward = false});
    auto r = RunForwardBackward(
        **model, {.tokens = corrupted, .metric = m, .values = hooks, .gradients = hooks});
    ASSERT_TRUE(c.ok() && r.ok());
    double diff = 0, norm = 0;
    for (int l = 0; l < layers; ++l) {
      for (int64_t pos = 0; pos < 6; ++pos) {
        double est = 0;
        for (int64_t i = 0; i < d; ++i) {
          const int64_t at = pos * d + i;
          est += (double{c->values[l].data<float>()[at]} - r->values[l].data<float>()[at]) *
                 r->gradients[l].data<float>()[at];
        }
        const double want = r->metric[0] + est;
        const double got = atp->values.data<float>()[l * 6 + pos];
        diff += (got - want) * (got - want);
        norm += est * est;
      }
    }
    ASSERT_GT(norm, 0);
    EXPECT_LE(std::sqrt(diff / norm), 1e-5);
  }
}

// Over an SAE's features: (f_clean − f_corrupted) · ∂m/∂f at the corrupted run with the SAE
// spliced in (error term on), equal to torch autograd through sae_lens's HookedSAETransformer
// (tests/reference/make_splice_gradient_fixtures.py, "atp.*").
TEST(AttributionPatching, SaeFeaturesEqualTorchThroughSaeLens) {
  auto model = Transformer::Load(ModelDir("tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  auto sae = LoadSae(FixturePath("saes/service/res1_standard"));
  ASSERT_TRUE(sae.ok()) << sae.status();
  const auto expected =
      ReadAllTensors(FixturePath("expected/tiny-gpt2.splice_gradients.safetensors"));
  const int32_t* tokens = expected.at("atp.tokens").data<int32_t>();
  auto result = RunSaeFeatureAttributionPatching(
      **model,
      {.clean = expected.at("atp.clean"),
       .corrupted = expected.at("atp.corrupted"),
       .metric = {.kind = PatchingMetric::Kind::kLogitDiff,
                  .token_a = tokens[0],
                  .token_b = tokens[1]}},
      *(*model)->hooks().Resolve("blocks.1.hook_resid_pre"), **sae);
  ASSERT_TRUE(result.ok()) << result.status();
  const Tensor& want = expected.at("atp.estimate");
  const Tensor& want_error = expected.at("atp.error_estimate");
  const int64_t seq = want.dim(0), d_sae = want.dim(1);
  // Column d_sae is the error node.
  ASSERT_EQ(result->values.shape(), (Shape{seq, d_sae + 1}));
  EXPECT_THAT(result->dim_names, ::testing::ElementsAre("pos", "feature"));
  EXPECT_NEAR(result->clean_metric, expected.at("atp.metrics").data<float>()[0], 1e-4);
  EXPECT_NEAR(result->corrupted_metric, expected.at("atp.metrics").data<float>()[1], 1e-4);
  Tensor features = Tensor::EmptyHost(DType::kF32, want.shape());
  Tensor error = Tensor::EmptyHost(DType::kF32, want_error.shape());
  for (int64_t p = 0; p < seq; ++p) {
    const float* row = result->values.data<float>() + p * (d_sae + 1);
    const float base = static_cast<float>(result->corrupted_metric);
    for (int64_t i = 0; i < d_sae; ++i) features.data<float>()[p * d_sae + i] = row[i] - base;
    error.data<float>()[p] = row[d_sae] - base;
  }
  EXPECT_LE(NormRelativeError(features, want), 1e-5);
  EXPECT_LE(NormRelativeError(error, want_error), 1e-5);
  std::printf("the error node's estimate by position:");
  for (int64_t p = 0; p < seq; ++p) std::printf(" %.4f", want_error.data<float>()[p]);
  std::printf("\n");
}

TEST(AttributionPatching, RejectsMismatchedInputs) {
  auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const Tensor a = Tensor::FromHost(std::vector<int32_t>{1, 2, 3}, {1, 3});
  const Tensor b = Tensor::FromHost(std::vector<int32_t>{1, 2}, {1, 2});
  EXPECT_EQ(RunAttributionPatching(**model, {.clean = a, .corrupted = b}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      RunAttributionPatching(**model, {.clean = a, .corrupted = a, .metric = {.token_a = 300}})
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace glassbox
