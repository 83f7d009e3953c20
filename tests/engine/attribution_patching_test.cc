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
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::FixturePath;
using ::glassbox::testing::ModelDir;
using ::glassbox::testing::NormRelativeError;
using ::glassbox::testing::ReadAllTensors;
using ::testing::HasSubstr;

const std::map<std::string, SweepKind>& Kinds() {
  static const auto* kinds = new std::map<std::string, SweepKind>{
      {"resid_pre", SweepKind::kResidPre},
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
      auto result = RunAttributionPatching(
          **model, {.clean = expected.at("clean"), .corrupted = expected.at("corrupted"),
                    .kind = kind, .metric = metric});
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
  auto result = RunPatchingSweep(
      **model, {.clean = expected.at("clean"), .corrupted = expected.at("corrupted"),
                .kind = SweepKind::kMlpPostAllPos, .metric = Metrics().at("logit_diff")});
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

TEST(AttributionPatching, ModelsWithoutGradientsAreUnimplemented) {
  auto model = Transformer::Load(FixturePath("models/tiny-llama"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const Tensor tokens = Tensor::FromHost(std::vector<int32_t>{1, 2, 3}, {1, 3});
  auto result = RunAttributionPatching(**model, {.clean = tokens, .corrupted = tokens});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(result.status().message(), HasSubstr("rotary"));
}

TEST(AttributionPatching, RejectsMismatchedInputs) {
  auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const Tensor a = Tensor::FromHost(std::vector<int32_t>{1, 2, 3}, {1, 3});
  const Tensor b = Tensor::FromHost(std::vector<int32_t>{1, 2}, {1, 2});
  EXPECT_EQ(RunAttributionPatching(**model, {.clean = a, .corrupted = b}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RunAttributionPatching(**model, {.clean = a, .corrupted = a,
                                             .metric = {.token_a = 300}})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace glassbox
