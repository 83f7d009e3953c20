// Jacobians between hooks against torch autograd in float64 on the same weights
// (tests/reference/make_jacobian_fixtures.py), on the tiny GPT-2 fixture.
#include "server/engine/jacobian.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/gradients.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::ChainRuleError;
using ::glassbox::testing::FixturePath;
using ::glassbox::testing::ModelDir;
using ::glassbox::testing::NormRelativeError;
using ::glassbox::testing::OtherArchitectures;
using ::glassbox::testing::ParamName;
using ::glassbox::testing::ReadAllTensors;
using ::glassbox::testing::TwoRowsOfSixTokens;
using ::testing::HasSubstr;

struct Case {
  std::string name, in, out;
};

std::vector<Case> Cases(int last) {
  const std::string top = "blocks." + std::to_string(last) + ".hook_resid_post";
  return {{"resid", "blocks.0.hook_resid_pre", top},
          {"embed_to_mid", "hook_embed", "blocks.1.hook_resid_mid"},
          {"z_to_pre", "blocks.0.attn.hook_z", "blocks.1.hook_resid_pre"},  // exactly 0 (p != q)
          {"z_to_mid", "blocks.0.attn.hook_z", "blocks.1.hook_resid_mid"},
          {"same_hook", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_pre"},
          {"earlier_position", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"},
          // Outputs off the residual stream.
          {"embed_to_mlp_out", "hook_embed", "blocks.1.hook_mlp_out"},
          {"mid_to_z", "blocks.0.hook_resid_mid", "blocks.1.attn.hook_z"},
          {"v_to_z", "blocks.1.attn.hook_v", "blocks.1.attn.hook_z"}};
}

std::vector<int32_t> Ints(const Tensor& t) {
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

class JacobianTest : public ::testing::TestWithParam<std::string> {};

TEST_P(JacobianTest, EqualsTorchAutograd) {
  auto model = Transformer::Load(ModelDir(GetParam()), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  const auto expected =
      ReadAllTensors(FixturePath("expected/" + GetParam() + ".jacobians.safetensors"));
  const HookRegistry& hooks = (*model)->hooks();
  for (const Case& c : Cases((*model)->config().n_layers - 1)) {
    SCOPED_TRACE(c.name);
    // A small pass size: the output elements run in several passes.
    auto result = ComputeJacobian(**model, {.tokens = expected.at("tokens"),
                                            .in = *hooks.Resolve(c.in),
                                            .in_positions = Ints(expected.at(c.name + ".p")),
                                            .out = *hooks.Resolve(c.out),
                                            .out_positions = Ints(expected.at(c.name + ".q")),
                                            .max_rows_per_pass = 40});
    ASSERT_TRUE(result.ok()) << result.status();
    const Tensor& want = expected.at(c.name + ".jacobian");
    ASSERT_EQ(result->jacobian.shape(), want.shape());
    EXPECT_GT(result->passes, 1);
    if (c.name == "earlier_position" || c.name == "z_to_pre") {  // no path: exactly nothing
      for (float v : result->jacobian.span<float>()) ASSERT_EQ(v, 0.0f);
      continue;
    }
    const double error = NormRelativeError(result->jacobian, want);
    const double f32 = expected.at(c.name + ".f32_error").data<float>()[0];
    EXPECT_LE(error, std::max(1e-5, 2 * f32));
    std::printf(
        "%s %s: %s -> %s, [%lld, %lld] per row, norm-relative error %.2g (torch f32 %.2g)\n",
        GetParam().c_str(), c.name.c_str(), c.in.c_str(), c.out.c_str(),
        static_cast<long long>(want.dim(1)), static_cast<long long>(want.dim(2)), error, f32);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, JacobianTest, ::testing::Values("tiny-gpt2"));

// Every pair of hooks JacobianSize accepts is computed: the walk reaches every input it allows.
TEST(Jacobian, EveryAcceptedPairIsComputed) {
  auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const HookRegistry& hooks = (*model)->hooks();
  const Tensor tokens = Tensor::FromHost(std::vector<int32_t>{5, 9, 14}, {1, 3});
  int computed = 0;
  for (HookId in = 0; in < hooks.size(); ++in) {
    for (HookId out = 0; out < hooks.size(); ++out) {
      if (!JacobianSize(**model, in, out).ok()) continue;
      SCOPED_TRACE(hooks.info(in).name + " -> " + hooks.info(out).name);
      auto j = ComputeJacobian(**model, {.tokens = tokens,
                                         .in = in,
                                         .in_positions = {0},
                                         .out = out,
                                         .out_positions = {-1},
                                         .max_rows_per_pass = 256});
      ASSERT_TRUE(j.ok()) << j.status();
      ++computed;
    }
  }
  EXPECT_GT(computed, 50);
}

TEST(Jacobian, RejectsBadRequests) {
  auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const HookRegistry& hooks = (*model)->hooks();
  const Tensor tokens = Tensor::FromHost(std::vector<int32_t>{1, 2, 3}, {1, 3});
  auto run = [&](std::string in, std::string out, std::vector<int32_t> p = {0},
                 std::vector<int32_t> q = {-1}) {
    return ComputeJacobian(**model, {.tokens = tokens,
                                     .in = *hooks.Resolve(in),
                                     .in_positions = p,
                                     .out = *hooks.Resolve(out),
                                     .out_positions = q})
        .status();
  };
  EXPECT_THAT(run("hook_embed", "blocks.0.attn.hook_pattern").message(),
              HasSubstr("a Jacobian's output is a token activation"));
  EXPECT_THAT(run("hook_embed", "blocks.0.ln1.hook_scale").message(),
              HasSubstr("blocks.0.ln1.hook_scale is not one"));
  EXPECT_THAT(run("blocks.1.hook_resid_pre", "blocks.0.hook_resid_post").message(),
              HasSubstr("comes after blocks.0.hook_resid_post"));
  EXPECT_THAT(run("blocks.0.mlp.hook_post", "blocks.0.hook_resid_mid").message(),
              HasSubstr("comes after"));
  EXPECT_THAT(run("blocks.0.attn.hook_pattern", "blocks.1.hook_resid_pre").message(),
              HasSubstr("is not one"));
  EXPECT_THAT(run("hook_embed", "blocks.1.hook_resid_pre", {0, 1}).message(),
              HasSubstr("give one per row"));
  EXPECT_THAT(run("hook_embed", "blocks.1.hook_resid_pre", {3}).message(),
              HasSubstr("in position 3 is outside rows of 3 tokens"));
  EXPECT_THAT(run("hook_embed", "blocks.1.hook_resid_pre", {0}, {-4}).message(),
              HasSubstr("out position -4"));
}

// On every architecture: a logit difference at the last position reads the final block's
// resid_post there only, so its gradient at hook_embed[p] is g_postᵀ · J, J = d resid_post[last] /
// d hook_embed[p]. The gradients are checked against torch at every hook (gradients_test), so
// this holds the Jacobian to them.
class JacobianArchitectureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(JacobianArchitectureTest, ChainsWithTheGradient) {
  auto model = Transformer::Load(ModelDir(GetParam()), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  const HookRegistry& hooks = (*model)->hooks();
  const int64_t d = (*model)->config().d_model;
  const Tensor tokens = TwoRowsOfSixTokens();
  const int64_t seq = tokens.dim(1);
  const HookId embed = *hooks.Resolve("hook_embed");
  const HookId top = *hooks.Resolve("blocks." + std::to_string((*model)->config().n_layers - 1) +
                                    ".hook_resid_post");
  auto grads = ComputeGradients(
      **model, {.tokens = tokens,
                .metric = {.kind = GradientMetric::Kind::kLogitDiff, .token_a = 17, .token_b = 42},
                .hooks = {embed, top}});
  ASSERT_TRUE(grads.ok()) << grads.status();
  const std::vector<int32_t> p = {2, 5};
  auto jac = ComputeJacobian(
      **model,
      {.tokens = tokens, .in = embed, .in_positions = p, .out = top, .out_positions = {-1, -1}});
  ASSERT_TRUE(jac.ok()) << jac.status();
  ASSERT_EQ(jac->jacobian.shape(), (Shape{2, d, d}));
  std::vector<const float*> out_grads, in_grads;
  for (int64_t b = 0; b < 2; ++b) {
    out_grads.push_back(grads->gradients[1].data<float>() + (b * seq + seq - 1) * d);
    in_grads.push_back(grads->gradients[0].data<float>() + (b * seq + p[b]) * d);
  }
  EXPECT_LE(ChainRuleError(jac->jacobian, out_grads, in_grads), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Architectures, JacobianArchitectureTest,
                         ::testing::ValuesIn(OtherArchitectures()),
                         [](const auto& info) { return ParamName(info.param); });

}  // namespace
}  // namespace glassbox
