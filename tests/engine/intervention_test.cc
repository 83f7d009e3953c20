// Interventions against TransformerLens run_with_hooks on the same weights: each case here is
// the C++ spelling of the hook function of the same name in
// tests/reference/make_intervention_fixtures.py.
#include "server/engine/intervention.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/host_math.h"
#include "server/engine/sae/sae_loader.h"
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
      // Scores and patterns are [batch, head, query_pos, key_pos]: positions pick queries, dims
      // keys.
      {"zero_pattern", {{"blocks.0.attn.hook_pattern", edit(K::kZero, {.positions = {3, -1}, .heads = {1}})}}},
      {"uniform_bos_pattern",
       {{"blocks.0.attn.hook_pattern", edit(K::kSet, {.heads = {0}}, 1, values.at("uniform_bos_pattern.uniform"))},
        {"blocks.1.attn.hook_pattern", edit(K::kSet, {.heads = {2}}, 1, values.at("uniform_bos_pattern.bos"))}}},
      // Key -6 is key 5 of the 11 tokens.
      {"add_scores", {{"blocks.0.attn.hook_attn_scores",
                       edit(K::kAdd, {.heads = {3}, .dims = {0, 2, -6}}, 1.5f, values.at("add_scores.value"))}}},
      {"scale_scores", {{"blocks.1.attn.hook_attn_scores", edit(K::kScale, {.rows = {0, 2}}, 0.3f)}}},
  };
}

class InterventionParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(InterventionParityTest, LogitsEqualTransformerLensRunWithHooks) {
  auto model = Transformer::Load(FixturePath("models/" + GetParam()), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  auto inputs = ReadAllTensors(FixturePath("expected/" + GetParam() + ".safetensors"));
  auto expected = ReadAllTensors(FixturePath("expected/" + GetParam() + ".interventions.safetensors"));
  size_t fixture_cases = 0;
  for (const auto& [name, tensor] : expected) fixture_cases += name.ends_with(".logits");
  EXPECT_EQ(fixture_cases, Cases(expected).size()) << "a case of the script is not encoded here";
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
    const double error = NormRelativeError(out->logits, expected.at(c.name + ".logits"));
    EXPECT_LE(error, 1e-5);
    std::printf("%s %s: norm-relative error %.2g vs TransformerLens\n", GetParam().c_str(),
                c.name.c_str(), error);
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
  absl::Status result = plan.AddIntervention({.hook = *hooks.Resolve("blocks.0.attn.hook_result")});
  EXPECT_EQ(result.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.message()), HasSubstr("not edited yet"));

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

// Directional ablation: the captured value is x - (x . u) u per token (u the unit direction,
// computed here in double from the unedited capture), it has no component along u left, and
// what flows on equals setting that value outright. One direction per head works on hook_z.
TEST(Interventions, ProjectOutRemovesTheDirection) {
  auto model = Transformer::Load(FixturePath("models/tiny-llama"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const HookRegistry& hooks = (*model)->hooks();
  const Tensor ids = Tensor::FromHost(std::vector<int32_t>{4, 8, 15, 16, 23, 42}, {1, 6});
  for (const std::string hook : {"blocks.1.hook_resid_pre", "blocks.0.attn.hook_z"}) {
    SCOPED_TRACE(hook);
    const HookInfo& info = hooks.info(*hooks.Resolve(hook));
    const int64_t d = info.dims.back().size, m = info.dims.size() == 4 ? info.dims[2].size : 1;
    Tensor direction = Tensor::EmptyHost(DType::kF32, m == 1 ? Shape{d} : Shape{m, d});
    for (int64_t i = 0; i < direction.numel(); ++i) direction.data<float>()[i] = std::cos(1.3f * i) + 0.2f;

    HookPlan clean(hooks);
    ASSERT_TRUE(clean.Capture(hook).ok());
    CollectingSink clean_sink;
    ASSERT_TRUE((*model)->Forward({.tokens = ids}, clean, &clean_sink, {}).ok());
    const Tensor x = clean_sink.values.at(hook);

    HookPlan edited(hooks);
    ASSERT_TRUE(edited.Capture(hook).ok());
    ASSERT_TRUE(edited.AddIntervention({.hook = *hooks.Resolve(hook),
                                        .kind = InterventionKind::kProjectOut,
                                        .value = direction}).ok());
    CollectingSink edited_sink;
    auto out = (*model)->Forward({.tokens = ids}, edited, &edited_sink, {});
    ASSERT_TRUE(out.ok()) << out.status();
    const Tensor got = edited_sink.values.at(hook);

    Tensor expected = Tensor::EmptyHost(DType::kF32, x.shape());
    double worst_component = 0;
    for (int64_t t = 0; t < x.numel() / (m * d); ++t) {
      for (int64_t h = 0; h < m; ++h) {
        const float* u_raw = direction.data<float>() + (m == 1 ? 0 : h * d);
        double norm = 0, dot = 0, left = 0;
        for (int64_t i = 0; i < d; ++i) norm += double{u_raw[i]} * u_raw[i];
        norm = std::sqrt(norm);
        const float* xi = x.data<float>() + (t * m + h) * d;
        for (int64_t i = 0; i < d; ++i) dot += xi[i] * (u_raw[i] / norm);
        for (int64_t i = 0; i < d; ++i) {
          expected.data<float>()[(t * m + h) * d + i] = static_cast<float>(xi[i] - dot * u_raw[i] / norm);
          left += got.data<float>()[(t * m + h) * d + i] * (u_raw[i] / norm);
        }
        worst_component = std::max(worst_component, std::abs(left));
      }
    }
    EXPECT_LE(NormRelativeError(got, expected), 1e-6);
    EXPECT_LT(worst_component, 1e-4);

    HookPlan set(hooks);
    ASSERT_TRUE(set.AddIntervention({.hook = *hooks.Resolve(hook), .kind = InterventionKind::kSet,
                                     .value = expected}).ok());
    auto set_out = (*model)->Forward({.tokens = ids}, set, nullptr, {});
    ASSERT_TRUE(set_out.ok());
    EXPECT_LE(NormRelativeError(out->logits, set_out->logits), 1e-6);
  }

  auto error = [&](Intervention edit) {
    HookPlan p(hooks);
    EXPECT_TRUE(p.AddIntervention(edit).ok());
    return std::string((*model)->Forward({.tokens = ids}, p, nullptr, {}).status().message());
  };
  const HookId resid = *hooks.Resolve("blocks.0.hook_resid_pre");
  EXPECT_THAT(error({.hook = resid, .kind = InterventionKind::kProjectOut,
                     .value = Tensor::ZerosHost(DType::kF32, {64})}),
              HasSubstr("finite and non-zero"));
  EXPECT_THAT(error({.hook = resid, .kind = InterventionKind::kProjectOut,
                     .value = Tensor::FromHost(std::vector<float>(5, 1.0f), {5})}),
              HasSubstr("the direction has 5 elements"));
  EXPECT_THAT(error({.hook = resid, .kind = InterventionKind::kProjectOut, .select = {.dims = {1}},
                     .value = Tensor::FromHost(std::vector<float>(64, 1.0f), {64})}),
              HasSubstr("leave dims empty"));
}

// Neuronpedia's steering methods change only each token's component p = x . u along the unit
// direction u: orthogonal decomposition makes it c·p, a projection cap clamp(p, lo, hi). The
// captured value is checked against that formula computed in double from the unedited capture.
TEST(Interventions, SteeringMethodsChangeOnlyTheComponentAlongTheDirection) {
  auto model = Transformer::Load(FixturePath("models/tiny-llama"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const HookRegistry& hooks = (*model)->hooks();
  const Tensor ids = Tensor::FromHost(std::vector<int32_t>{4, 8, 15, 16, 23, 42}, {1, 6});
  const std::string hook = "blocks.1.hook_resid_pre";
  const HookId id = *hooks.Resolve(hook);
  const int64_t d = hooks.info(id).dims.back().size;
  Tensor direction = Tensor::EmptyHost(DType::kF32, {d});
  for (int64_t i = 0; i < d; ++i) direction.data<float>()[i] = std::sin(0.7f * i) - 0.1f;

  HookPlan clean(hooks);
  ASSERT_TRUE(clean.Capture(hook).ok());
  CollectingSink clean_sink;
  ASSERT_TRUE((*model)->Forward({.tokens = ids}, clean, &clean_sink, {}).ok());
  const Tensor x = clean_sink.values.at(hook);
  std::vector<double> unit(d);
  double norm = 0;
  for (int64_t i = 0; i < d; ++i) norm += double{direction.data<float>()[i]} * direction.data<float>()[i];
  for (int64_t i = 0; i < d; ++i) unit[i] = direction.data<float>()[i] / std::sqrt(norm);
  // The projections span both signs, so that the caps below bind on some tokens and not others.
  std::vector<double> projections;
  for (int64_t t = 0; t < x.numel() / d; ++t) {
    double p = 0;
    for (int64_t i = 0; i < d; ++i) p += x.data<float>()[t * d + i] * unit[i];
    projections.push_back(p);
  }
  std::vector<double> sorted = projections;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];

  struct Case {
    std::string name;
    Intervention edit;
    std::function<double(double)> along;
  };
  const float lo = static_cast<float>(median - 0.01), hi = static_cast<float>(median + 0.01);
  const std::vector<Case> cases = {
      {"orthogonal decomposition x2.5", {.hook = id, .kind = InterventionKind::kOrthogonalDecomp, .coefficient = 2.5f, .value = direction},
       [](double p) { return 2.5 * p; }},
      {"orthogonal decomposition x-1", {.hook = id, .kind = InterventionKind::kOrthogonalDecomp, .coefficient = -1.0f, .value = direction},
       [](double p) { return -p; }},
      {"cap above", {.hook = id, .kind = InterventionKind::kProjectionCap, .value = direction, .projection_max = hi},
       [&](double p) { return std::min(p, double{hi}); }},
      {"cap below", {.hook = id, .kind = InterventionKind::kProjectionCap, .value = direction, .projection_min = lo},
       [&](double p) { return std::max(p, double{lo}); }},
      {"cap both", {.hook = id, .kind = InterventionKind::kProjectionCap, .value = direction, .projection_min = lo, .projection_max = hi},
       [&](double p) { return std::clamp(p, double{lo}, double{hi}); }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    HookPlan edited(hooks);
    ASSERT_TRUE(edited.Capture(hook).ok());
    ASSERT_TRUE(edited.AddIntervention(c.edit).ok());
    CollectingSink sink;
    auto out = (*model)->Forward({.tokens = ids}, edited, &sink, {});
    ASSERT_TRUE(out.ok()) << out.status();
    const Tensor got = sink.values.at(hook);
    Tensor expected = Tensor::EmptyHost(DType::kF32, x.shape());
    int changed = 0;
    for (int64_t t = 0; t < x.numel() / d; ++t) {
      const double p = projections[t], q = c.along(p);
      changed += std::abs(q - p) > 1e-6;
      for (int64_t i = 0; i < d; ++i) {
        expected.data<float>()[t * d + i] = static_cast<float>(x.data<float>()[t * d + i] + (q - p) * unit[i]);
      }
    }
    EXPECT_GT(changed, 0);
    EXPECT_LE(NormRelativeError(got, expected), 1e-6);
  }

  auto error = [&](Intervention edit) {
    HookPlan p(hooks);
    EXPECT_TRUE(p.AddIntervention(edit).ok());
    return std::string((*model)->Forward({.tokens = ids}, p, nullptr, {}).status().message());
  };
  EXPECT_THAT(error({.hook = id, .kind = InterventionKind::kProjectionCap, .value = direction}),
              HasSubstr("needs projection_min or projection_max"));
  EXPECT_THAT(error({.hook = id, .kind = InterventionKind::kProjectionCap, .value = direction,
                     .projection_min = 2, .projection_max = 1}),
              HasSubstr("projection_min 2 is above projection_max 1"));
  EXPECT_THAT(error({.hook = id, .kind = InterventionKind::kOrthogonalDecomp,
                     .value = Tensor::ZerosHost(DType::kF32, {d})}),
              HasSubstr("finite and non-zero"));
}

// Runs `tokens` (with `mask`, if defined) through tiny-gpt2 or tiny-llama with `edits`
// ({hook name, edit}), capturing `captures`.
struct EditedRun {
  ForwardOutput out;
  CollectingSink sink;
};
EditedRun RunEdited(const Transformer& model, const Tensor& tokens, const Tensor& mask,
                    const std::vector<std::pair<std::string, Intervention>>& edits,
                    const std::vector<std::string>& captures = {}) {
  HookPlan plan(model.hooks());
  for (auto [hook, edit] : edits) {
    edit.hook = *model.hooks().Resolve(hook);
    EXPECT_TRUE(plan.AddIntervention(edit).ok()) << hook;
  }
  for (const std::string& hook : captures) EXPECT_TRUE(plan.Capture(hook).ok()) << hook;
  EditedRun run;
  auto out = model.Forward({.tokens = tokens, .attention_mask = mask}, plan, &run.sink, {});
  EXPECT_TRUE(out.ok()) << out.status();
  if (out.ok()) run.out = *std::move(out);
  return run;
}

// [batch, head, query, key] and [batch, pos, head, d_head] element access.
float At4(const Tensor& t, int64_t a, int64_t b, int64_t c, int64_t d) {
  return t.data<float>()[((a * t.dim(1) + b) * t.dim(2) + c) * t.dim(3) + d];
}

// Setting a head's scores to 0 everywhere (future keys too, which unmasks them, as in
// TransformerLens) makes its pattern uniform over all keys, and its z the mean of v.
TEST(AttentionEdits, EditedScoresDecideThePatternAndZ) {
  auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const int64_t seq = 6, heads = 4, d_head = 16;
  const Tensor ids = Tensor::FromHost(std::vector<int32_t>{4, 8, 15, 16, 23, 42}, {1, seq});
  const std::vector<std::string> hooks = {"blocks.0.attn.hook_pattern", "blocks.0.attn.hook_v",
                                          "blocks.0.attn.hook_z"};
  EditedRun plain = RunEdited(**model, ids, {}, {}, hooks);
  EditedRun edited = RunEdited(
      **model, ids, {},
      {{"blocks.0.attn.hook_attn_scores",
        {.kind = InterventionKind::kSet, .select = {.heads = {1}},
         .value = Tensor::FromHost(std::vector<float>(seq, 0.0f), {seq})}}},
      hooks);
  const Tensor& pattern = edited.sink.values.at(hooks[0]);
  const Tensor& v = edited.sink.values.at(hooks[1]);
  const Tensor& z = edited.sink.values.at(hooks[2]);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t q = 0; q < seq; ++q) {
      for (int64_t k = 0; k < seq; ++k) {
        const float want = h == 1 ? 1.0f / seq : At4(plain.sink.values.at(hooks[0]), 0, h, q, k);
        ASSERT_NEAR(At4(pattern, 0, h, q, k), want, 1e-6) << h << " " << q << " " << k;
      }
      for (int64_t e = 0; e < d_head; ++e) {
        double mean_v = 0;
        for (int64_t k = 0; k < seq; ++k) mean_v += At4(v, 0, k, h, e) / seq;
        const double want = h == 1 ? mean_v : At4(plain.sink.values.at(hooks[2]), 0, q, h, e);
        ASSERT_NEAR(At4(z, 0, q, h, e), want, 1e-5) << h << " " << q << " " << e;
      }
    }
  }
  EXPECT_GT(NormRelativeError(edited.out.logits, plain.out.logits), 1e-3);
}

// An edited pattern is used as it is (no renormalisation), and z is recomputed for every head
// with the grouped-query mapping: tiny-llama's heads 2 and 3 read kv head 1.
TEST(AttentionEdits, PatternEditsAreNotRenormalisedAndKeepTheOtherHeads) {
  auto model = Transformer::Load(FixturePath("models/tiny-llama"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const int64_t seq = 5, heads = 4, d_head = 16;
  const Tensor ids = Tensor::FromHost(std::vector<int32_t>{7, 1, 99, 3, 250}, {1, seq});
  const std::vector<std::string> hooks = {"blocks.1.attn.hook_pattern", "blocks.1.attn.hook_z"};
  EditedRun plain = RunEdited(**model, ids, {}, {}, hooks);
  EditedRun edited = RunEdited(
      **model, ids, {},
      {{"blocks.1.attn.hook_pattern", {.kind = InterventionKind::kScale, .select = {.heads = {3}}, .coefficient = 2}}},
      hooks);
  for (int64_t q = 0; q < seq; ++q) {
    double row_sum = 0;
    for (int64_t k = 0; k < seq; ++k) row_sum += At4(edited.sink.values.at(hooks[0]), 0, 3, q, k);
    EXPECT_NEAR(row_sum, 2.0, 1e-5);
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t e = 0; e < d_head; ++e) {
        const float want = (h == 3 ? 2 : 1) * At4(plain.sink.values.at(hooks[1]), 0, q, h, e);
        ASSERT_NEAR(At4(edited.sink.values.at(hooks[1]), 0, q, h, e), want, 1e-5) << h << " " << q;
      }
    }
  }
}

// Query positions and key dims count real tokens: each row of a left- or right-padded batch
// gets the logits of the same edits on that row alone.
TEST(AttentionEdits, PositionsAndKeysCountRealTokensInPaddedBatches) {
  for (const std::string name : {"tiny-gpt2", "tiny-llama"}) {
    auto model = Transformer::Load(FixturePath("models/" + name), std::make_shared<CpuBackend>());
    ASSERT_TRUE(model.ok());
    auto inputs = ReadAllTensors(FixturePath("expected/" + name + ".safetensors"));
    // Scaling every score of layer 0 also recomputes the pattern of left padding's queries
    // that see no key: they must stay zero, not NaN, or layer 1 would spread the NaN.
    const std::vector<std::pair<std::string, Intervention>> edits = {
        {"blocks.0.attn.hook_attn_scores",
         {.kind = InterventionKind::kScale, .select = {.heads = {0}}, .coefficient = 0.5f}},
        {"blocks.0.attn.hook_pattern",
         {.kind = InterventionKind::kZero, .select = {.positions = {-1, 1}, .heads = {1}, .dims = {0, -2}}}},
        {"blocks.1.attn.hook_attn_scores",
         {.kind = InterventionKind::kScale, .select = {.positions = {-2}, .heads = {2}, .dims = {-1, 1}},
          .coefficient = 3}}};
    for (const std::string padding : {"right", "left"}) {
      SCOPED_TRACE(name + " " + padding);
      const Tensor& tokens = inputs.at(padding + ".input_ids");
      const Tensor& mask = inputs.at(padding + ".attention_mask");
      EditedRun batch = RunEdited(**model, tokens, mask, edits);
      const int64_t seq = tokens.dim(1), vocab = batch.out.logits.dim(2);
      for (int64_t b = 0; b < tokens.dim(0); ++b) {
        std::vector<int32_t> row;
        std::vector<float> got;
        for (int64_t s = 0; s < seq; ++s) {
          if (!mask.data<int32_t>()[b * seq + s]) continue;
          row.push_back(tokens.data<int32_t>()[b * seq + s]);
          const float* logits = batch.out.logits.data<float>() + (b * seq + s) * vocab;
          got.insert(got.end(), logits, logits + vocab);
        }
        const int64_t n = static_cast<int64_t>(row.size());
        const Tensor alone = Tensor::FromHost(row, {1, n});
        EditedRun want = RunEdited(**model, alone, {}, edits);
        EditedRun unedited = RunEdited(**model, alone, {}, {});
        const Tensor got_tensor = Tensor::FromHost(got, {1, n, vocab});
        EXPECT_LE(NormRelativeError(got_tensor, want.out.logits), 1e-5) << "row " << b;
        EXPECT_GT(NormRelativeError(want.out.logits, unedited.out.logits), 1e-4) << "row " << b;
      }
    }
  }
}

// torch.softmax gives NaN for a row with a NaN or +inf, or with every score -inf, and
// TransformerLens then replaces NaN by 0.
TEST(AttentionEdits, SoftmaxZeroesTheRowsTorchMakesNaN) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Tensor scores = Tensor::FromHost(
      std::vector<float>{1, nan, 2, 1, inf, 2, -inf, -inf, -inf, 0, -inf, std::log(3.0f)}, {4, 3});
  const Tensor pattern = AttentionSoftmax(scores);
  EXPECT_THAT(pattern.span<float>(),
              ::testing::Pointwise(::testing::FloatNear(1e-7), std::vector<float>{
                                       0, 0, 0, 0, 0, 0, 0, 0, 0, 0.25f, 0, 0.75f}));
}

TEST(AttentionEdits, BadSelectionsAreRejectedWithTheReason) {
  auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const HookRegistry& hooks = (*model)->hooks();
  const HookId pattern = *hooks.Resolve("blocks.0.attn.hook_pattern");
  const HookId scores = *hooks.Resolve("blocks.1.attn.hook_attn_scores");
  // Rows of 3 and 2 real tokens (right-padded).
  const Tensor tokens = Tensor::FromHost(std::vector<int32_t>{1, 2, 3, 4, 5, 0}, {2, 3});
  const Tensor mask = Tensor::FromHost(std::vector<int32_t>{1, 1, 1, 1, 1, 0}, {2, 3});
  auto run_with = [&](Intervention edit) {
    HookPlan p(hooks);
    EXPECT_TRUE(p.AddIntervention(edit).ok());
    return std::string((*model)->Forward({.tokens = tokens, .attention_mask = mask}, p, nullptr, {}).status().message());
  };
  EXPECT_THAT(run_with({.hook = pattern, .select = {.dims = {3}}}),
              HasSubstr("key position 3 is outside row 0 (3 tokens)"));
  EXPECT_THAT(run_with({.hook = pattern, .select = {.dims = {2}}}),
              HasSubstr("key position 2 is outside row 1 (2 tokens)"));
  EXPECT_THAT(run_with({.hook = scores, .select = {.dims = {-3}}}), HasSubstr("key position -3"));
  EXPECT_THAT(run_with({.hook = scores, .select = {.positions = {-3}}}), HasSubstr("query position -3"));
  EXPECT_THAT(run_with({.hook = pattern, .select = {.heads = {4}}}), HasSubstr("head 4 is outside [0, 4)"));
  EXPECT_THAT(run_with({.hook = pattern, .select = {.heads = {-1}}}), HasSubstr("head -1"));
  EXPECT_THAT(run_with({.hook = pattern, .kind = InterventionKind::kSet,
                        .value = Tensor::FromHost(std::vector<float>(5, 1.0f), {5})}),
              HasSubstr("the value has 5 elements; it must be [key_pos] [3], [head, key_pos] [4,3]"));
  EXPECT_THAT(run_with({.hook = pattern, .kind = InterventionKind::kPatchFrom,
                        .value = Tensor::ZerosHost(DType::kF32, {2, 3, 3, 3}), .source_rows = {0, 1}}),
              HasSubstr("the patch source must be [rows, 4, 3, 3]"));

  // An SAE reads one vector per token; a pattern has none.
  auto sae = LoadSae(FixturePath("saes/standard"));
  ASSERT_TRUE(sae.ok()) << sae.status();
  HookPlan plan(hooks);
  absl::Status splice = plan.AddSaeSplice(pattern, {.sae = sae->get()});
  EXPECT_EQ(splice.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(splice.message()), HasSubstr("an SAE reads [batch, pos, d] activations"));
}

}  // namespace
}  // namespace glassbox
