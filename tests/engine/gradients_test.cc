// Gradients at every hook point against TransformerLens's backward hooks on the same weights in
// float64 (torch autograd; tests/reference/make_gradient_fixtures.py and
// make_arch_gradient_fixtures.py), for three metrics of the logits, on the tiny GPT-2 fixture,
// the demo model and a tiny model of each other architecture; through interventions and SAE
// splices (make_edit_gradient_fixtures.py, make_splice_gradient_fixtures.py); and metrics of an
// activation (a direction, an SAE feature) held to the Jacobian and the SAE's own encode.
#include "server/engine/gradients.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/jacobian.h"
#include "server/engine/sae/feature_gradient.h"
#include "server/engine/sae/sae_loader.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::FixturePath;
using ::glassbox::testing::ModelDir;
using ::glassbox::testing::NormRelativeError;
using ::glassbox::testing::OtherArchitectures;
using ::glassbox::testing::ParamName;
using ::glassbox::testing::ReadAllTensors;
using ::testing::HasSubstr;

// The metrics the fixture script computed (its "metrics" metadata).
struct MetricCase {
  std::string name;
  GradientMetric metric;
};
const std::vector<MetricCase>& Metrics() {
  static const auto* cases = new std::vector<MetricCase>{
      {"logit_diff",
       {.kind = GradientMetric::Kind::kLogitDiff, .position = 6, .token_a = 17, .token_b = 42}},
      {"log_prob", {.kind = GradientMetric::Kind::kLogProb, .position = 3, .token_a = 29}},
      {"logit", {.kind = GradientMetric::Kind::kLogit, .position = -2, .token_a = 8}},  // 5 of 7
  };
  return *cases;
}

class GradientsTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GradientsTest, EveryHookEqualsTransformerLensAutograd) {
  auto model = Transformer::Load(ModelDir(GetParam()), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  const auto expected =
      ReadAllTensors(FixturePath("expected/" + GetParam() + ".gradients.safetensors"));
  const Tensor& tokens = expected.at("tokens");
  int metrics = 0;
  for (const MetricCase& c : Metrics()) {
    if (!expected.count(c.name + ".value")) continue;  // the demo file holds logit_diff only
    ++metrics;
    SCOPED_TRACE(c.name);
    // Every hook the reference has a gradient for.
    std::vector<HookId> hooks;
    std::vector<std::string> names;
    const std::string prefix = c.name + ".grad.";
    for (const auto& [key, value] : expected) {
      if (!absl::StartsWith(key, prefix)) continue;
      const std::string name = key.substr(prefix.size());
      // TransformerLens 3's unembedding hooks (its input is ln_final's output) have no Glassbox
      // hook point; every other one must.
      if (absl::StartsWith(name, "unembed.")) continue;
      absl::StatusOr<HookId> id = (*model)->hooks().Resolve(name);
      ASSERT_TRUE(id.ok()) << id.status();
      names.push_back(name);
      hooks.push_back(*id);
    }
    ASSERT_EQ(static_cast<int>(hooks.size()), (*model)->hooks().size());  // every hook point
    absl::StatusOr<GradientResult> got =
        ComputeGradients(**model, {.tokens = tokens, .metric = c.metric, .hooks = hooks});
    ASSERT_TRUE(got.ok()) << got.status();
    const Tensor& values = expected.at(c.name + ".value");
    ASSERT_EQ(static_cast<int64_t>(got->metric.size()), tokens.dim(0));
    for (int64_t b = 0; b < tokens.dim(0); ++b) {
      EXPECT_NEAR(got->metric[b], values.data<float>()[b],
                  1e-4 * (1 + std::abs(values.data<float>()[b])));
    }
    double worst = 0, worst_torch = 0;
    std::string worst_hook;
    int zero = 0;
    for (size_t i = 0; i < hooks.size(); ++i) {
      SCOPED_TRACE(names[i]);
      const Tensor& want = expected.at(prefix + names[i]);
      const Tensor& have = got->gradients[i];
      ASSERT_EQ(have.shape(), want.shape());
      double norm = 0;
      for (float v : want.span<float>()) norm += double{v} * v;
      if (norm == 0) {  // a hook the metric does not depend on (after its position, say)
        for (float v : have.span<float>()) ASSERT_EQ(v, 0.0f);
        ++zero;
        continue;
      }
      // Against float64: 1e-5, or twice what torch's own float32 autograd reaches at this hook
      // (the forward in f32 bounds every f32 gradient; 8e-6 at the demo model's worst hook).
      const double error = NormRelativeError(have, want);
      const double torch_f32 = expected.at(c.name + ".f32_error." + names[i]).data<float>()[0];
      EXPECT_LE(error, std::max(1e-5, 2 * torch_f32)) << "torch f32: " << torch_f32;
      if (error > worst) worst = error, worst_hook = names[i], worst_torch = torch_f32;
    }
    std::printf(
        "%s %s: %zu hooks (%d with no gradient), worst norm-relative error %.2g at %s "
        "(torch float32 autograd there: %.2g)\n",
        GetParam().c_str(), c.name.c_str(), hooks.size(), zero, worst, worst_hook.c_str(),
        worst_torch);
  }
  EXPECT_GE(metrics, 1);
}

// GPT-2 (tiny-gpt2, demo) and one model per trait of the other architectures
// (tests/reference/make_arch_gradient_fixtures.py lists what each covers).
INSTANTIATE_TEST_SUITE_P(Models, GradientsTest, ::testing::Values("tiny-gpt2", "demo"),
                         [](const auto& info) { return ParamName(info.param); });
INSTANTIATE_TEST_SUITE_P(Architectures, GradientsTest, ::testing::ValuesIn(OtherArchitectures()),
                         [](const auto& info) { return ParamName(info.param); });

TEST(GradientsErrorsTest, BadRequestsAreRefusedPrecisely) {
  auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  const Tensor tokens = Tensor::FromHost(std::vector<int32_t>{1, 2, 3, 4}, {1, 4});
  auto expect = [&](GradientRequest request, absl::StatusCode code, const std::string& phrase) {
    absl::StatusOr<GradientResult> got = ComputeGradients(**model, request);
    EXPECT_EQ(got.status().code(), code) << phrase << ": " << got.status();
    EXPECT_THAT(std::string(got.status().message()), HasSubstr(phrase));
  };
  expect({.tokens = tokens, .metric = {.position = 4}}, absl::StatusCode::kInvalidArgument,
         "the metric's position 4 is outside rows of 4 tokens");
  expect({.tokens = tokens, .metric = {.position = -5}}, absl::StatusCode::kInvalidArgument,
         "position -5");
  expect({.tokens = tokens, .metric = {.token_a = 300}}, absl::StatusCode::kInvalidArgument,
         "the metric's token 300 is outside the vocabulary [0, 300)");
  expect({.tokens = tokens, .metric = {.token_b = -1}}, absl::StatusCode::kInvalidArgument,
         "token -1");
  expect({.tokens = tokens, .hooks = {9999}}, absl::StatusCode::kInvalidArgument,
         "a hook the model does not have");
  expect({.tokens = Tensor::FromHost(std::vector<int32_t>{}, {1, 0})},
         absl::StatusCode::kInvalidArgument, "not empty");
}

}  // namespace
}  // namespace glassbox

namespace glassbox {
namespace {

// Right-padded rows: each row's metric and gradients at its real positions are those of the row
// run alone (the gradients there are checked against torch above), 0 at its padding; a mask
// that is not a right padding is refused.
TEST(Gradients, RightPaddedRowsEqualEachRowAlone) {
  auto model = Transformer::Load(ModelDir("tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const std::vector<std::vector<int32_t>> rows = {{5, 9, 14, 3, 8, 2, 7}, {11, 4, 6}};
  Tensor tokens = Tensor::ZerosHost(DType::kI32, {2, 7});
  Tensor mask = Tensor::ZerosHost(DType::kI32, {2, 7});
  for (int b = 0; b < 2; ++b) {
    for (size_t t = 0; t < rows[b].size(); ++t) {
      tokens.data<int32_t>()[b * 7 + t] = rows[b][t];
      mask.data<int32_t>()[b * 7 + t] = 1;
    }
  }
  const HookRegistry& hooks = (*model)->hooks();
  const std::vector<HookId> wanted = {*hooks.Resolve("hook_embed"),
                                      *hooks.Resolve("blocks.1.attn.hook_pattern"),
                                      *hooks.Resolve("blocks.0.mlp.hook_post")};
  for (GradientMetric metric :
       {GradientMetric{.kind = GradientMetric::Kind::kLogProb, .position = -2, .token_a = 3},
        GradientMetric{.kind = GradientMetric::Kind::kLoss}}) {
    auto both = ComputeGradients(
        **model, {.tokens = tokens, .attention_mask = mask, .metric = metric, .hooks = wanted});
    ASSERT_TRUE(both.ok()) << both.status();
    for (int b = 0; b < 2; ++b) {
      const int64_t n = static_cast<int64_t>(rows[b].size());
      auto alone = ComputeGradients(
          **model,
          {.tokens = Tensor::FromHost(rows[b], {1, n}), .metric = metric, .hooks = wanted});
      ASSERT_TRUE(alone.ok()) << alone.status();
      EXPECT_NEAR(both->metric[b], alone->metric[0], 1e-4);
      for (size_t h = 0; h < wanted.size(); ++h) {
        SCOPED_TRACE(hooks.info(wanted[h]).name);
        const Tensor& g = both->gradients[h];
        const Tensor& want = alone->gradients[h];
        if (g.rank() == 4 && hooks.info(wanted[h]).kind == HookKind::kPattern) {
          // [batch, head, query, key]: row b's real block is [:n, :n] of each head.
          const int64_t heads = g.dim(1);
          double diff = 0, norm = 0;
          for (int64_t head = 0; head < heads; ++head) {
            for (int64_t q = 0; q < n; ++q) {
              for (int64_t k = 0; k < n; ++k) {
                const float a = g.data<float>()[((b * heads + head) * 7 + q) * 7 + k];
                const float w = want.data<float>()[(head * n + q) * n + k];
                diff += (a - w) * (a - w);
                norm += w * w;
              }
            }
          }
          EXPECT_LE(std::sqrt(diff / norm), 1e-5);
          continue;
        }
        const int64_t per_pos = g.numel() / (2 * 7);
        const float* row = g.data<float>() + b * 7 * per_pos;
        double diff = 0, norm = 0;
        for (int64_t i = 0; i < n * per_pos; ++i) {
          diff += (row[i] - want.data<float>()[i]) * (row[i] - want.data<float>()[i]);
          norm += want.data<float>()[i] * want.data<float>()[i];
        }
        EXPECT_LE(std::sqrt(diff / norm), 1e-5);
        for (int64_t i = n * per_pos; i < 7 * per_pos; ++i) ASSERT_EQ(row[i], 0.0f);
      }
    }
  }
  Tensor left = Tensor::ZerosHost(DType::kI32, {2, 7});
  for (int64_t i = 0; i < 14; ++i) left.data<int32_t>()[i] = i % 7 >= 4 ? 1 : 0;
  auto refused = ComputeGradients(
      **model,
      {.tokens = tokens, .attention_mask = left, .metric = {.token_a = 1}, .hooks = wanted});
  EXPECT_THAT(refused.status().message(), HasSubstr("gradients take right-padded rows"));
}

}  // namespace
}  // namespace glassbox

namespace glassbox {
namespace {

// The edits of tests/reference/make_edit_gradient_fixtures.py, in its order.
std::vector<Intervention> EditsOf(const std::string& name, const HookRegistry& hooks,
                                  const std::map<std::string, Tensor>& expected) {
  auto at = [&](const char* hook) { return *hooks.Resolve(hook); };
  auto vec = [&](const char* key) { return expected.at(std::string("edit.") + key); };
  if (name == "linear") {
    std::vector<int32_t> first_ten(10);
    for (int i = 0; i < 10; ++i) first_ten[i] = i;
    return {
        {.hook = at("blocks.0.attn.hook_z"),
         .kind = InterventionKind::kZero,
         .select = {.positions = {2, 3}, .heads = {1}}},
        {.hook = at("blocks.0.mlp.hook_post"),
         .kind = InterventionKind::kScale,
         .select = {.dims = first_ten},
         .coefficient = 0.5f},
        {.hook = at("blocks.0.hook_resid_mid"),
         .kind = InterventionKind::kAdd,
         .select = {.positions = {-1}},
         .coefficient = 2.0f,
         .value = vec("u1")},
        {.hook = at("blocks.1.hook_resid_pre"),
         .kind = InterventionKind::kSet,
         .select = {.positions = {1}},
         .value = vec("w")},
        {.hook = at("blocks.1.hook_resid_pre"),
         .kind = InterventionKind::kProjectOut,
         .value = vec("u2")},
        {.hook = at("blocks.1.hook_mlp_out"),
         .kind = InterventionKind::kOrthogonalDecomp,
         .select = {.positions = {4, 5, 6}},
         .coefficient = 0.3f,
         .value = vec("u3")},
    };
  }
  if (name == "attention") {  // [batch, head, query, key]: dims are key positions
    return {
        {.hook = at("blocks.0.attn.hook_attn_scores"),
         .kind = InterventionKind::kScale,
         .select = {.heads = {2}},
         .coefficient = 0.5f},
        {.hook = at("blocks.1.attn.hook_pattern"),
         .kind = InterventionKind::kZero,
         .select = {.heads = {1}, .dims = {0}}},
        {.hook = at("blocks.1.attn.hook_pattern"),
         .kind = InterventionKind::kScale,
         .select = {.positions = {5, 6}, .heads = {0}},
         .coefficient = 2.0f},
    };
  }
  if (name == "attention_coupling") {
    return {
        {.hook = at("blocks.0.attn.hook_pattern"),
         .kind = InterventionKind::kMeanBatch,
         .select = {.heads = {3}}},
        {.hook = at("blocks.1.attn.hook_attn_scores"),
         .kind = InterventionKind::kPatchRow,
         .select = {.positions = {4}, .dims = {1, 2}},
         .source_rows = {1, 0}},
        {.hook = at("blocks.1.attn.hook_pattern"),
         .kind = InterventionKind::kMeanPos,
         .select = {.rows = {1}, .heads = {2}}},
    };
  }
  if (name == "cap") {
    constexpr float kInf = std::numeric_limits<float>::infinity();
    return {
        {.hook = at("blocks.0.hook_resid_mid"),
         .kind = InterventionKind::kProjectionCap,
         .value = vec("u1"),
         .projection_min = -kInf,
         .projection_max = 0.0f},
        {.hook = at("blocks.1.hook_resid_pre"),
         .kind = InterventionKind::kAdd,
         .select = {.positions = {-1}},
         .coefficient = 2.0f,
         .value = vec("u2")},
        {.hook = at("blocks.1.hook_resid_pre"),
         .kind = InterventionKind::kProjectionCap,
         .value = vec("u3"),
         .projection_min = -1.0f,
         .projection_max = 1.0f},
    };
  }
  return {
      {.hook = at("blocks.0.attn.hook_v"),
       .kind = InterventionKind::kMeanBatch,
       .select = {.heads = {0}}},
      {.hook = at("blocks.0.hook_attn_out"),
       .kind = InterventionKind::kMeanPos,
       .select = {.rows = {1}}},
      {.hook = at("blocks.1.hook_resid_pre"),
       .kind = InterventionKind::kPatchRow,
       .select = {.positions = {3}},
       .source_rows = {1, 0}},
  };
}

// The hooks a fixture holds gradients for under "<case>.grad.", by name and id.
struct FixtureHooks {
  std::vector<std::string> names;
  std::vector<HookId> ids;
};
FixtureHooks HooksUnder(const std::map<std::string, Tensor>& expected, const std::string& name,
                        const HookRegistry& hooks) {
  FixtureHooks out;
  const std::string prefix = name + ".grad.";
  for (const auto& [key, value] : expected) {
    if (!absl::StartsWith(key, prefix)) continue;
    out.names.push_back(key.substr(prefix.size()));
    out.ids.push_back(*hooks.Resolve(out.names.back()));
  }
  return out;
}

// Each gradient against the fixture's "<case>.grad.<hook>": within 1e-5, or twice torch's own
// float32 error there when the fixture has "<case>.f32_error.<hook>". Returns the worst error.
double ExpectGradientsMatch(const std::vector<Tensor>& got, const FixtureHooks& hooks,
                            const std::map<std::string, Tensor>& expected,
                            const std::string& name) {
  double worst = 0;
  for (size_t i = 0; i < hooks.names.size(); ++i) {
    SCOPED_TRACE(hooks.names[i]);
    const double error = NormRelativeError(got[i], expected.at(name + ".grad." + hooks.names[i]));
    const auto f32 = expected.find(name + ".f32_error." + hooks.names[i]);
    const double torch_f32 = f32 == expected.end() ? 0 : f32->second.data<float>()[0];
    EXPECT_LE(error, std::max(1e-5, 2 * torch_f32));
    worst = std::max(worst, error);
  }
  return worst;
}

class GradientsThroughEditsTest : public ::testing::TestWithParam<std::string> {};

// Gradients of a pass with interventions equal torch autograd through the same edits in
// TransformerLens hooks, at the edited hooks and upstream of them.
TEST_P(GradientsThroughEditsTest, EqualTorchAutogradThroughTheSameEdits) {
  auto model = Transformer::Load(ModelDir(GetParam()), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  const auto expected =
      ReadAllTensors(FixturePath("expected/" + GetParam() + ".edit_gradients.safetensors"));
  const HookRegistry& hooks = (*model)->hooks();
  for (const std::string name : {"linear", "coupling", "cap", "attention", "attention_coupling"}) {
    SCOPED_TRACE(name);
    const FixtureHooks wanted = HooksUnder(expected, name, hooks);
    // Ten hooks, and the edited attention hooks in the attention cases.
    ASSERT_EQ(wanted.names.size(), name == "attention"            ? 12u
                                   : name == "attention_coupling" ? 13u
                                                                  : 10u);
    auto got = RunForwardBackward(**model, {.tokens = expected.at("tokens"),
                                            .metric = {.kind = GradientMetric::Kind::kLogitDiff,
                                                       .position = 6,
                                                       .token_a = 17,
                                                       .token_b = 42},
                                            .interventions = EditsOf(name, hooks, expected),
                                            .gradients = wanted.ids});
    ASSERT_TRUE(got.ok()) << got.status();
    for (int b = 0; b < 2; ++b) {
      const float want = expected.at(name + ".value").data<float>()[b];
      EXPECT_NEAR(got->metric[b], want, 1e-4 * (1 + std::abs(want)));
    }
    const double worst = ExpectGradientsMatch(got->gradients, wanted, expected, name);
    std::printf("%s %s edits: worst norm-relative error %.2g over %zu hooks\n", GetParam().c_str(),
                name.c_str(), worst, wanted.ids.size());
  }
}

INSTANTIATE_TEST_SUITE_P(Models, GradientsThroughEditsTest,
                         ::testing::Values("tiny-gpt2", "tiny-llama"),
                         [](const auto& info) { return ParamName(info.param); });

}  // namespace
}  // namespace glassbox

namespace glassbox {
namespace {

using ::glassbox::testing::ChainRuleError;
using ::glassbox::testing::TwoRowsOfSixTokens;

class HookMetricTest : public ::testing::TestWithParam<std::string> {};

// A direction at blocks.1.hook_resid_mid: its value is v · the captured activation, its gradient
// there is v at each row's last position, and below it the chain rule with the Jacobian
// (checked against torch in jacobian_test): d(v · resid_mid[last]) / d embed[p] = vᵀ J.
TEST_P(HookMetricTest, DirectionChainsWithTheJacobian) {
  auto model = Transformer::Load(ModelDir(GetParam()), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  const HookRegistry& hooks = (*model)->hooks();
  const int64_t d = (*model)->config().d_model;
  const Tensor tokens = TwoRowsOfSixTokens();
  const int64_t seq = tokens.dim(1);
  const HookId mid = *hooks.Resolve("blocks.1.hook_resid_mid");
  const HookId embed = *hooks.Resolve("hook_embed");
  std::vector<float> v(d);
  for (int64_t i = 0; i < d; ++i) v[i] = std::sin(0.7 * i + 0.3);
  auto got = RunForwardBackward(**model, {.tokens = tokens,
                                          .metric = {.kind = GradientMetric::Kind::kDirection,
                                                     .hook = mid,
                                                     .direction = Tensor::FromHost(v, {d})},
                                          .values = {mid},
                                          .gradients = {embed, mid}});
  ASSERT_TRUE(got.ok()) << got.status();
  // Hooks above the metric's: no dependence, a zero gradient.
  auto above =
      RunForwardBackward(**model, {.tokens = tokens,
                                   .metric = {.kind = GradientMetric::Kind::kDirection,
                                              .hook = mid,
                                              .direction = Tensor::FromHost(v, {d})},
                                   .gradients = {*hooks.Resolve("ln_final.hook_scale"),
                                                 *hooks.Resolve("blocks.1.hook_resid_post")}});
  ASSERT_TRUE(above.ok()) << above.status();
  for (const Tensor& g : above->gradients) {
    for (float x : g.span<float>()) ASSERT_EQ(x, 0.0f);
  }
  const std::vector<int32_t> p = {1, 4};
  auto jac = ComputeJacobian(
      **model,
      {.tokens = tokens, .in = embed, .in_positions = p, .out = mid, .out_positions = {-1, -1}});
  ASSERT_TRUE(jac.ok()) << jac.status();
  std::vector<const float*> out_grads, in_grads;
  for (int64_t b = 0; b < 2; ++b) {
    double value = 0;
    for (int64_t i = 0; i < d; ++i)
      value += double{v[i]} * got->values[0].data<float>()[(b * seq + seq - 1) * d + i];
    EXPECT_NEAR(got->metric[b], value, 1e-5 * (1 + std::abs(value)));
    for (int64_t t = 0; t < seq; ++t) {
      for (int64_t i = 0; i < d; ++i) {
        ASSERT_EQ(got->gradients[1].data<float>()[(b * seq + t) * d + i],
                  t == seq - 1 ? v[i] : 0.0f);
      }
    }
    out_grads.push_back(v.data());
    in_grads.push_back(got->gradients[0].data<float>() + (b * seq + p[b]) * d);
  }
  EXPECT_LE(ChainRuleError(jac->jacobian, out_grads, in_grads), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Models, HookMetricTest,
                         ::testing::Values("tiny-gpt2", "tiny-llama", "tiny-gemma2",
                                           "tiny-pythia-seq"),
                         [](const auto& info) { return ParamName(info.param); });

// An SAE feature at blocks.1.hook_resid_pre: its value is the SAE's activation of the captured
// input, its gradient there FeatureInputGradients' (checked against finite differences in
// feature_gradient_test), and below it what a direction metric along that gradient gives.
TEST(HookMetric, SaeFeatureIsItsEncoderDirectionWhereItFires) {
  auto model = Transformer::Load(ModelDir("tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  auto sae = LoadSae(FixturePath("saes/service/res1_standard"));
  ASSERT_TRUE(sae.ok()) << sae.status();
  const HookRegistry& hooks = (*model)->hooks();
  const HookId pre = *hooks.Resolve("blocks.1.hook_resid_pre");
  const HookId z = *hooks.Resolve("blocks.0.attn.hook_z");
  const Tensor tokens = Tensor::FromHost(std::vector<int32_t>{5, 17, 42, 9, 100, 3}, {1, 6});
  int firing = 0;
  for (int32_t feature = 0; feature < 128 && firing < 3; ++feature) {
    auto got = RunForwardBackward(**model, {.tokens = tokens,
                                            .metric = {.kind = GradientMetric::Kind::kSaeFeature,
                                                       .position = 3,
                                                       .hook = pre,
                                                       .sae = sae->get(),
                                                       .feature = feature},
                                            .values = {pre},
                                            .gradients = {pre, z}});
    ASSERT_TRUE(got.ok()) << got.status();
    Tensor x = Tensor::EmptyHost(DType::kF32, {1, 64});
    std::copy_n(got->values[0].data<float>() + 3 * 64, 64, x.data<float>());
    auto want = FeatureInputGradients(**sae, x, feature);
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(got->metric[0], want->values[0]);
    if (want->values[0] <= 0) continue;
    ++firing;
    for (int64_t i = 0; i < 64; ++i) {
      ASSERT_EQ(got->gradients[0].data<float>()[3 * 64 + i], want->gradients.data<float>()[i]);
    }
    Tensor direction = Tensor::EmptyHost(DType::kF32, {64});
    std::copy_n(want->gradients.data<float>(), 64, direction.data<float>());
    auto along = RunForwardBackward(**model, {.tokens = tokens,
                                              .metric = {.kind = GradientMetric::Kind::kDirection,
                                                         .position = 3,
                                                         .hook = pre,
                                                         .direction = direction},
                                              .gradients = {z}});
    ASSERT_TRUE(along.ok());
    EXPECT_LE(NormRelativeError(got->gradients[1], along->gradients[0]), 1e-6);
  }
  EXPECT_EQ(firing, 3);
}

TEST(HookMetric, BadMetricsAreRefusedPrecisely) {
  auto model = Transformer::Load(ModelDir("tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const HookRegistry& hooks = (*model)->hooks();
  const Tensor tokens = Tensor::FromHost(std::vector<int32_t>{1, 2, 3}, {1, 3});
  auto status = [&](GradientMetric m) {
    return RunForwardBackward(
               **model,
               {.tokens = tokens, .metric = m, .gradients = {*hooks.Resolve("hook_embed")}})
        .status();
  };
  const absl::Status short_direction =
      status({.kind = GradientMetric::Kind::kDirection,
              .hook = *hooks.Resolve("blocks.0.attn.hook_z"),
              .direction = Tensor::FromHost(std::vector<float>(63, 1.0f), {63})});
  EXPECT_THAT(
      std::string(short_direction.message()),
      ::testing::HasSubstr("the metric's direction has 63 values; blocks.0.attn.hook_z has 64"));
  const absl::Status pattern =
      status({.kind = GradientMetric::Kind::kDirection,
              .hook = *hooks.Resolve("blocks.0.attn.hook_pattern"),
              .direction = Tensor::FromHost(std::vector<float>(3, 1.0f), {3})});
  EXPECT_THAT(std::string(pattern.message()),
              ::testing::HasSubstr("blocks.0.attn.hook_pattern is not one"));
  const absl::Status no_sae = status({.kind = GradientMetric::Kind::kSaeFeature,
                                      .hook = *hooks.Resolve("blocks.0.hook_resid_pre")});
  EXPECT_EQ(no_sae.code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace glassbox

namespace glassbox {
namespace {

// SAEs spliced into the pass: the gradients equal torch autograd through sae_lens's
// HookedSAETransformer (tests/reference/make_splice_gradient_fixtures.py), with and without the
// error term and through feature edits.
TEST(GradientsThroughSplices, EqualTorchAutogradThroughSaeLens) {
  auto model = Transformer::Load(ModelDir("tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const auto expected =
      ReadAllTensors(FixturePath("expected/tiny-gpt2.splice_gradients.safetensors"));
  const Tensor& tokens = expected.at("tokens");
  const int64_t batch = tokens.dim(0), seq = tokens.dim(1);
  const HookRegistry& hooks = (*model)->hooks();
  auto res1 = LoadSae(FixturePath("saes/service/res1_standard"));
  auto z0 = LoadSae(FixturePath("saes/service/z0_jumprelu"));
  ASSERT_TRUE(res1.ok() && z0.ok());
  // make_sae_service_fixtures.py's edits for res1: zero 89, clamp 83 to 4 at position 2, scale
  // 115 by 3.
  std::vector<int64_t> at_two;
  for (int64_t b = 0; b < batch; ++b) at_two.push_back(b * seq + 2);
  SaeSplice edited{
      .sae = res1->get(),
      .options = {
          .edits =
              {{.kind = FeatureEditKind::kZero, .features = {89}},
               {.kind = FeatureEditKind::kClamp, .features = {83}, .value = 4.0f, .tokens = at_two},
               {.kind = FeatureEditKind::kScale, .features = {115}, .value = 3.0f}},
          .use_error_term = true}};
  const std::vector<std::tuple<std::string, std::string, SaeSplice>> cases = {
      {"res1_edit", "blocks.1.hook_resid_pre", edited},
      {"z0_splice", "blocks.0.attn.hook_z", SaeSplice{.sae = z0->get()}}};
  const std::vector<std::pair<std::string, SaeHook>> points = {
      {"hook_sae_input", SaeHook::kInput},
      {"hook_sae_acts_pre", SaeHook::kActsPre},
      {"hook_sae_acts_post", SaeHook::kActsPost},
      {"hook_sae_recons", SaeHook::kRecons}};
  for (const auto& [name, hook, splice] : cases) {
    SCOPED_TRACE(name);
    // The model's hooks; the spliced hook's hook_sae_* points are asked for separately.
    std::map<std::string, Tensor> model_hooks;
    for (const auto& [key, value] : expected) {
      if (!absl::StrContains(key, ".hook_sae_")) model_hooks.emplace(key, value);
    }
    const FixtureHooks wanted = HooksUnder(model_hooks, name, hooks);
    ASSERT_EQ(wanted.names.size(), 7u);
    std::vector<SaeHookRef> sae_points;
    for (const auto& [point_name, point] : points)
      sae_points.push_back({.splice = 0, .point = point});
    sae_points.push_back({.splice = 0, .point = SaeHook::kOutput});
    auto got = RunForwardBackward(
        **model,
        {.tokens = tokens,
         .metric = {.kind = GradientMetric::Kind::kLogitDiff, .token_a = 17, .token_b = 42},
         .splices = {{*hooks.Resolve(hook), splice}},
         .gradients = wanted.ids,
         .sae_gradients = sae_points});
    ASSERT_TRUE(got.ok()) << got.status();
    for (int64_t b = 0; b < batch; ++b) {
      const float want = expected.at(name + ".value").data<float>()[b];
      EXPECT_NEAR(got->metric[b], want, 1e-4 * (1 + std::abs(want)));
    }
    double worst = ExpectGradientsMatch(got->gradients, wanted, expected, name);
    ASSERT_EQ(got->sae_gradients.size(), points.size() + 1);
    for (size_t i = 0; i < points.size(); ++i) {
      const std::string key = name + ".grad." + hook + "." + points[i].first;
      SCOPED_TRACE(key);
      const Tensor& want = expected.at(key);
      // The point's shape: [batch, seq, d_in or d_sae] (a hook_z SAE's heads flattened).
      ASSERT_EQ(got->sae_gradients[i].numel(), want.numel());
      EXPECT_EQ(got->sae_gradients[i].dim(0), batch);
      const double error = NormRelativeError(got->sae_gradients[i].Reshape(want.shape()), want);
      EXPECT_LE(error, 1e-5);
      worst = std::max(worst, error);
    }
    // hook_sae_output's is the spliced hook's own.
    const Tensor& at_hook = expected.at(name + ".grad." + hook);
    EXPECT_LE(NormRelativeError(got->sae_gradients.back().Reshape(at_hook.shape()), at_hook), 1e-5);
    std::printf("%s: worst norm-relative error %.2g over %zu hooks and %zu hook_sae_* points\n",
                name.c_str(), worst, wanted.ids.size(), points.size());
  }
}

}  // namespace
}  // namespace glassbox
