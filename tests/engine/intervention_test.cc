// Interventions against TransformerLens run_with_hooks on the same weights: each case here is
// the C++ spelling of the hook function of the same name in
// tests/reference/make_intervention_fixtures.py.
#include "server/engine/intervention.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/transformer.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::CollectingSink;
using ::glassbox::testing::FixturePath;
using ::glassbox::testing::NormRelativeError;
using ::glassbox::testing::ReadAllTensors;
using ::testing::HasSubstr;

struct Case {
  std::string name;
  std::vector<std::pair<std::string, Intervention>> edits;  // (hook name, edit without hook id)
};

std::vector<Case> Cases(const std::map<std::string, Tensor>& values) {
  auto edit = [](InterventionKind kind, InterventionSelector select, float coefficient = 1,
                 Tensor value = {}, std::vector<int32_t> sources = {}) {
    return Intervention{.kind = kind, .select = std::move(select), .coefficient = coefficient,
                        .value = std::move(value), .source_rows = std::move(sources)};
  };
  using K = InterventionKind;
  return {
      {"zero_head", {{"blocks.0.attn.hook_z", edit(K::kZero, {.heads = {1}})}}},
      {"steer_last", {{"blocks.1.hook_resid_pre", edit(K::kAdd, {.positions = {-1}}, 2.5f, values.at("steer_last.value"))}}},
      {"mean_neurons", {{"blocks.0.mlp.hook_post", edit(K::kMeanBatch, {.dims = {3, 7, 11}})}}},
      {"resample_attn_out", {{"blocks.1.hook_attn_out", edit(K::kPatchRow, {.positions = {4}}, 1, {}, {2, 0, 1})}}},
      {"scale_v", {{"blocks.1.attn.hook_v", edit(K::kScale, {.heads = {0}}, 0.5f)}}},
      {"set_mlp_out", {{"blocks.0.hook_mlp_out", edit(K::kSet, {.rows = {1}}, 1, values.at("set_mlp_out.value"))}}},
      {"chain", {{"blocks.0.hook_resid_mid", edit(K::kAdd, {.positions = {0, 2}}, 1.0f, values.at("chain.value"))},
                 {"blocks.0.hook_resid_mid", edit(K::kScale, {.positions = {0, 2}}, 0.5f)}}},
      {"mean_pos", {{"blocks.1.hook_mlp_out", edit(K::kMeanPos, {.rows = {0}})}}},
  };
}

class InterventionParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(InterventionParityTest, LogitsEqualTransformerLensRunWithHooks) {
  auto model = Transformer::Load(FixturePath("models/" + GetParam()), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  auto inputs = ReadAllTensors(FixturePath("expected/" + GetParam() + ".safetensors"));
  auto expected = ReadAllTensors(FixturePath("expected/" + GetParam() + ".interventions.safetensors"));
  for (const Case& c : Cases(expected)) {
    SCOPED_TRACE(c.name);
    HookPlan plan((*model)->hooks());
    for (auto [hook, edit] : c.edits) {
      auto id = (*model)->hooks().Resolve(hook);
      ASSERT_TRUE(id.ok());
      edit.hook = *id;
      ASSERT_TRUE(plan.AddIntervention(edit).ok());
    }
    auto out = (*model)->Forward({.tokens = inputs.at("unpadded.input_ids")}, plan, nullptr, {});
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_LE(NormRelativeError(out->logits, expected.at(c.name + ".logits")), 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, InterventionParityTest, ::testing::Values("tiny-gpt2", "tiny-llama"));

// An edit at resid_pre of block 1 must not change the captured resid_post of block 0 (the same
// tensor before the edit), and a capture at the edited hook sees the edited value.
TEST(Interventions, CopyOnEditKeepsEarlierCapturesIntact) {
  auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const Tensor ids = Tensor::FromHost(std::vector<int32_t>{4, 8, 15, 16, 23, 42}, {1, 6});
  HookPlan plan((*model)->hooks());
  ASSERT_TRUE(plan.Capture("blocks.0.hook_resid_post").ok());
  ASSERT_TRUE(plan.Capture("blocks.1.hook_resid_pre").ok());
  ASSERT_TRUE(plan.AddIntervention({.hook = *(*model)->hooks().Resolve("blocks.1.hook_resid_pre"),
                                    .kind = InterventionKind::kZero}).ok());
  CollectingSink sink;
  ASSERT_TRUE((*model)->Forward({.tokens = ids}, plan, &sink, {}).ok());
  double post_norm = 0, pre_norm = 0;
  for (float v : sink.values.at("blocks.0.hook_resid_post").span<float>()) post_norm += v * v;
  for (float v : sink.values.at("blocks.1.hook_resid_pre").span<float>()) pre_norm += v * v;
  EXPECT_GT(post_norm, 1.0);
  EXPECT_EQ(pre_norm, 0.0);
}

TEST(Interventions, BadEditsAreRejectedWithTheReason) {
  auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const HookRegistry& hooks = (*model)->hooks();
  HookPlan plan(hooks);
  absl::Status pattern = plan.AddIntervention({.hook = *hooks.Resolve("blocks.0.attn.hook_pattern")});
  EXPECT_EQ(pattern.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(pattern.message()), HasSubstr("not edited yet"));

  auto run_with = [&](Intervention edit) {
    HookPlan p(hooks);
    EXPECT_TRUE(p.AddIntervention(edit).ok());
    return (*model)->Forward({.tokens = Tensor::FromHost(std::vector<int32_t>{1, 2, 3}, {1, 3})}, p, nullptr, {}).status();
  };
  const HookId z = *hooks.Resolve("blocks.0.attn.hook_z");
  const HookId resid = *hooks.Resolve("blocks.0.hook_resid_pre");
  EXPECT_THAT(std::string(run_with({.hook = z, .select = {.heads = {4}}}).message()), HasSubstr("head 4"));
  EXPECT_THAT(std::string(run_with({.hook = resid, .select = {.positions = {-4}}}).message()), HasSubstr("position -4"));
  EXPECT_THAT(std::string(run_with({.hook = resid, .select = {.dims = {64}}}).message()), HasSubstr("index 64"));
  EXPECT_THAT(std::string(run_with({.hook = resid, .kind = InterventionKind::kAdd,
                                    .value = Tensor::FromHost(std::vector<float>(5, 1.0f), {5})}).message()),
              HasSubstr("the value has 5 elements"));
  EXPECT_THAT(std::string(run_with({.hook = resid, .kind = InterventionKind::kPatchRow, .source_rows = {3}}).message()),
              HasSubstr("source row 3"));
}

}  // namespace
}  // namespace glassbox
