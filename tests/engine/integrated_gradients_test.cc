// Integrated gradients and input × gradient against torch in float64 on the same weights
// (tests/reference/make_integrated_gradients_fixtures.py: a zero baseline, the midpoint rule
// over 16 points, the logit difference at the last position), at four hooks of the tiny GPT-2
// fixture and the demo model.
#include "server/engine/integrated_gradients.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
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
using ::glassbox::testing::OtherArchitectures;
using ::glassbox::testing::ParamName;
using ::glassbox::testing::NormRelativeError;
using ::glassbox::testing::ReadAllTensors;
using ::testing::HasSubstr;
using Method = IntegratedGradientsRequest::Method;

const GradientMetric kLogitDiff{.kind = GradientMetric::Kind::kLogitDiff, .token_a = 17,
                                .token_b = 42};
constexpr const char* kHooks[] = {"hook_embed", "blocks.1.hook_resid_pre",
                                  "blocks.0.attn.hook_z", "blocks.0.mlp.hook_post"};

class IntegratedGradientsTest : public ::testing::TestWithParam<std::string> {};

TEST_P(IntegratedGradientsTest, EqualTorchMidpointSums) {
  auto model = Transformer::Load(ModelDir(GetParam()), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  const auto expected =
      ReadAllTensors(FixturePath("expected/" + GetParam() + ".integrated_gradients.safetensors"));
  for (const std::string hook : kHooks) {
    SCOPED_TRACE(hook);
    auto id = (*model)->hooks().Resolve(hook);
    ASSERT_TRUE(id.ok());
    // Few rows per pass: the 16 path points run in several passes.
    auto ig = ComputeIntegratedGradients(
        **model, {.tokens = expected.at("tokens"), .metric = kLogitDiff, .hook = *id,
                  .steps = 16, .max_rows_per_pass = 6});
    ASSERT_TRUE(ig.ok()) << ig.status();
    EXPECT_EQ(ig->forward_passes, 2 + 6);  // plain, baseline, 16 points 3 (x 2 rows) at a time
    EXPECT_EQ(ig->backward_passes, 6);
    const Tensor& want = expected.at(hook + ".ig16");
    ASSERT_EQ(ig->attributions.shape(), want.shape());
    const double f32 = expected.at(hook + ".f32_error.ig16").data<float>()[0];
    const double error = NormRelativeError(ig->attributions, want);
    EXPECT_LE(error, std::max(2e-5, 4 * f32));
    for (int b = 0; b < 2; ++b) {
      EXPECT_NEAR(ig->metric[b], expected.at(hook + ".metric").data<float>()[b], 1e-4);
      EXPECT_NEAR(ig->baseline_metric[b], expected.at(hook + ".baseline_metric").data<float>()[b],
                  1e-4);
    }
    auto ixg = ComputeIntegratedGradients(
        **model, {.method = Method::kInputTimesGradient, .tokens = expected.at("tokens"),
                  .metric = kLogitDiff, .hook = *id});
    ASSERT_TRUE(ixg.ok()) << ixg.status();
    EXPECT_EQ(ixg->backward_passes, 1);
    const double ixg_error = NormRelativeError(ixg->attributions, expected.at(hook + ".input_x_grad"));
    EXPECT_LE(ixg_error, 2e-5);
    std::printf("%s %s: integrated gradients %.2g (torch f32 %.2g), input x gradient %.2g\n",
                GetParam().c_str(), hook.c_str(), error, f32, ixg_error);
  }
}

// Completeness: Σ IG over a row → m(x) − m(x′) as the steps grow, where the path is smooth
// (not through a norm's steep region near 0, as a zero baseline at hook_resid_pre is).
TEST_P(IntegratedGradientsTest, CompletenessAtManySteps) {
  auto model = Transformer::Load(ModelDir(GetParam()), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  const auto expected =
      ReadAllTensors(FixturePath("expected/" + GetParam() + ".integrated_gradients.safetensors"));
  for (const std::string hook : {"hook_embed", "blocks.0.attn.hook_z"}) {
    auto ig = ComputeIntegratedGradients(
        **model, {.tokens = expected.at("tokens"), .metric = kLogitDiff,
                  .hook = *(*model)->hooks().Resolve(hook), .steps = 256});
    ASSERT_TRUE(ig.ok()) << ig.status();
    const int64_t per_row = ig->attributions.numel() / 2;
    for (int b = 0; b < 2; ++b) {
      double sum = 0;
      for (int64_t i = 0; i < per_row; ++i) sum += ig->attributions.data<float>()[b * per_row + i];
      const double want = ig->metric[b] - ig->baseline_metric[b];
      EXPECT_NEAR(sum, want, 1e-3 * std::max(1.0, std::abs(want))) << hook << " row " << b;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, IntegratedGradientsTest, ::testing::Values("tiny-gpt2", "demo"));

TEST(IntegratedGradients, RejectsBadRequests) {
  auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const HookRegistry& hooks = (*model)->hooks();
  const Tensor tokens = Tensor::FromHost(std::vector<int32_t>{1, 2, 3}, {1, 3});
  const HookId embed = *hooks.Resolve("hook_embed");
  auto scale = ComputeIntegratedGradients(
      **model, {.tokens = tokens, .hook = *hooks.Resolve("blocks.0.ln1.hook_scale")});
  EXPECT_EQ(scale.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(scale.status().message(), HasSubstr("can be captured but not edited"));
  for (int32_t steps : {0, 1025}) {
    auto r = ComputeIntegratedGradients(**model, {.tokens = tokens, .hook = embed, .steps = steps});
    EXPECT_THAT(r.status().message(), HasSubstr("it must be in [1, 1024]"));
  }
  auto shape = ComputeIntegratedGradients(
      **model, {.tokens = tokens, .hook = embed,
                .baseline = Tensor::FromHost(std::vector<float>(3, 0.5f), {3})});
  EXPECT_THAT(shape.status().message(), HasSubstr("hook_embed takes [64]"));
}

// A baseline [d] equal to x at every position gives attributions of 0 and m(x′) = m(x); one at
// half of x (a full-shape baseline) halves input × gradient.
TEST(IntegratedGradients, Baselines) {
  auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const Tensor tokens = Tensor::FromHost(std::vector<int32_t>{5, 5, 5, 5}, {1, 4});
  const HookId embed = *(*model)->hooks().Resolve("hook_embed");
  auto plain = RunForwardBackward(**model, {.tokens = tokens, .values = {embed}, .backward = false});
  ASSERT_TRUE(plain.ok());
  const Tensor& x = plain->values[0];  // every position embeds token 5
  const Tensor row = Tensor::FromHost(std::span<const float>(x.data<float>(), 64), {64});
  auto same = ComputeIntegratedGradients(**model, {.tokens = tokens, .hook = embed, .baseline = row,
                                                   .steps = 4});
  ASSERT_TRUE(same.ok()) << same.status();
  for (float a : same->attributions.span<float>()) EXPECT_EQ(a, 0.0f);
  EXPECT_NEAR(same->baseline_metric[0], same->metric[0], 1e-5);
  Tensor half = Tensor::EmptyHost(DType::kF32, x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) half.data<float>()[i] = 0.5f * x.data<float>()[i];
  auto zero = ComputeIntegratedGradients(
      **model, {.method = Method::kInputTimesGradient, .tokens = tokens, .hook = embed});
  auto halved = ComputeIntegratedGradients(
      **model, {.method = Method::kInputTimesGradient, .tokens = tokens, .hook = embed,
                .baseline = half});
  ASSERT_TRUE(zero.ok() && halved.ok());
  for (int64_t i = 0; i < x.numel(); ++i) {
    EXPECT_NEAR(halved->attributions.data<float>()[i], 0.5f * zero->attributions.data<float>()[i],
                1e-6);
  }
}

// Completeness on every architecture: with a baseline of half the embeddings, Σ IG over a row
// approaches m(x) − m(x′) as O(1 / steps²).
class IntegratedGradientsArchitectureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(IntegratedGradientsArchitectureTest, AttributionsAreComplete) {
  auto model = Transformer::Load(ModelDir(GetParam()), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  const HookId embed = *(*model)->hooks().Resolve("hook_embed");
  const Tensor tokens = Tensor::FromHost(std::vector<int32_t>{5, 17, 42, 9, 100, 3}, {1, 6});
  auto x = RunForwardBackward(**model, {.tokens = tokens, .values = {embed}, .backward = false});
  ASSERT_TRUE(x.ok()) << x.status();
  Tensor half = Tensor::EmptyHost(DType::kF32, x->values[0].shape());
  for (int64_t i = 0; i < half.numel(); ++i) half.data<float>()[i] = 0.5f * x->values[0].data<float>()[i];
  auto ig = ComputeIntegratedGradients(
      **model, {.tokens = tokens,
                .metric = {.kind = GradientMetric::Kind::kLogProb, .token_a = 17},
                .hook = embed, .baseline = half, .steps = 64});
  ASSERT_TRUE(ig.ok()) << ig.status();
  double total = 0;
  for (float v : ig->attributions.span<float>()) total += v;
  const double change = ig->metric[0] - ig->baseline_metric[0];
  EXPECT_GT(std::abs(change), 1e-3);
  EXPECT_NEAR(total, change, 2e-3 * (1 + std::abs(change)));
}

INSTANTIATE_TEST_SUITE_P(Architectures, IntegratedGradientsArchitectureTest,
                         ::testing::ValuesIn(OtherArchitectures()),
                         [](const auto& info) { return ParamName(info.param); });

}  // namespace
}  // namespace glassbox
