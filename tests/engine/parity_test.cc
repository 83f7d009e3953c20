// The engine against the real libraries: tiny random GPT-2, Llama, GPT-NeoX (Pythia), GPT-J,
// Qwen2, Qwen3, Phi-3, OLMo-2, Mistral, Gemma-2 and Gemma-3 checkpoints written by transformers' save_pretrained, with HF's logits / hidden states /
// attentions and TransformerLens's value at every hook point recorded by
// tests/reference/make_fixtures.py and make_arch_fixtures.py.
#include <cmath>
#include <memory>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/patching.h"
#include "server/engine/transformer.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::CollectingSink;
using ::glassbox::testing::FixturePath;
using ::glassbox::testing::NormRelativeError;
using ::glassbox::testing::ReadAllTensors;

constexpr double kTolerance = 1e-5;  // fp32 engine vs float64 references

struct Fixture {
  std::unique_ptr<Transformer> model;
  std::map<std::string, Tensor> expected;
};

Fixture LoadFixture(const std::string& name) {
  Fixture f;
  auto model = Transformer::Load(FixturePath("models/" + name), std::make_shared<CpuBackend>());
  EXPECT_TRUE(model.ok()) << model.status();
  if (model.ok()) f.model = *std::move(model);
  f.expected = ReadAllTensors(FixturePath("expected/" + name + ".safetensors"));
  return f;
}

// Rows [b, s] of a [batch, pos, ...] tensor where mask[b, s] == 1, gathered into one tensor.
Tensor RealTokens(const Tensor& t, const Tensor& mask) {
  const int64_t row = t.numel() / mask.numel();
  std::vector<float> values;
  for (int64_t i = 0; i < mask.numel(); ++i) {
    if (mask.data<int32_t>()[i] == 0) continue;
    values.insert(values.end(), t.data<float>() + i * row, t.data<float>() + (i + 1) * row);
  }
  return Tensor::FromHost(values, {static_cast<int64_t>(values.size())});
}

class ParityTest : public ::testing::TestWithParam<std::string> {};

// Every hook point the engine offers, captured in one unpadded pass, equals TransformerLens's
// value; logits and per-token loss equal HF's.
TEST_P(ParityTest, EveryHookMatchesTransformerLens) {
  Fixture f = LoadFixture(GetParam());
  ASSERT_NE(f.model, nullptr);
  HookPlan plan(f.model->hooks());
  ASSERT_TRUE(plan.Capture("*").ok());
  CollectingSink sink;
  ForwardOptions options{.logits = LogitsMode::kAll, .loss_per_token = true};
  auto out = f.model->Forward({.tokens = f.expected.at("unpadded.input_ids")}, plan, &sink, options);
  ASSERT_TRUE(out.ok()) << out.status();

  ASSERT_EQ(static_cast<int>(sink.values.size()), f.model->hooks().size());
  double worst = 0;
  std::string worst_hook;
  for (const HookInfo& hook : f.model->hooks().hooks()) {
    SCOPED_TRACE(hook.name);
    auto it = f.expected.find("unpadded.tl." + hook.name);
    ASSERT_NE(it, f.expected.end()) << "no TransformerLens reference for " << hook.name;
    const Tensor& ours = sink.values.at(hook.name);
    EXPECT_EQ(ours.shape(), it->second.shape());
    const double error = NormRelativeError(ours, it->second);
    EXPECT_LE(error, kTolerance);
    if (error > worst) {
      worst = error;
      worst_hook = hook.name;
    }
  }
  std::printf("%s: %d hook points, worst norm-relative error %.2e at %s\n", GetParam().c_str(),
              f.model->hooks().size(), worst, worst_hook.c_str());
  EXPECT_LE(NormRelativeError(out->logits, f.expected.at("unpadded.hf.logits")), kTolerance);
  EXPECT_LE(NormRelativeError(out->logits, f.expected.at("unpadded.tl.logits")), kTolerance);
  EXPECT_LE(NormRelativeError(out->loss_per_token, f.expected.at("unpadded.hf.loss_per_token")),
            kTolerance);
}

// Hooks come out in the order the forward pass produces them (the registry's order).
TEST_P(ParityTest, CapturesArriveInForwardOrder) {
  Fixture f = LoadFixture(GetParam());
  ASSERT_NE(f.model, nullptr);
  HookPlan plan(f.model->hooks());
  ASSERT_TRUE(plan.Capture("*").ok());
  CollectingSink sink;
  ASSERT_TRUE(f.model->Forward({.tokens = f.expected.at("unpadded.input_ids")}, plan, &sink, {}).ok());
  std::vector<std::string> registry_order;
  for (const HookInfo& h : f.model->hooks().hooks()) registry_order.push_back(h.name);
  EXPECT_EQ(sink.order, registry_order);
}

// Capturing changes nothing downstream: logits are bit-identical with and without hooks.
TEST_P(ParityTest, CapturingDoesNotChangeLogits) {
  Fixture f = LoadFixture(GetParam());
  ASSERT_NE(f.model, nullptr);
  const Tensor& ids = f.expected.at("unpadded.input_ids");
  HookPlan none(f.model->hooks());
  auto plain = f.model->Forward({.tokens = ids}, none, nullptr, {});
  HookPlan all(f.model->hooks());
  ASSERT_TRUE(all.Capture("*").ok());
  CollectingSink sink;
  auto hooked = f.model->Forward({.tokens = ids}, all, &sink, {});
  ASSERT_TRUE(plain.ok() && hooked.ok());
  EXPECT_EQ(std::memcmp(plain->logits.raw_data(), hooked->logits.raw_data(), plain->logits.nbytes()), 0);
}

INSTANTIATE_TEST_SUITE_P(Models, ParityTest,
                         ::testing::Values("tiny-gpt2", "tiny-llama", "tiny-pythia",
                                           "tiny-pythia-seq", "tiny-qwen3", "tiny-phi3",
                                           "tiny-olmo2", "tiny-mistral", "tiny-gemma2",
                                           "tiny-qwen2", "tiny-gptj", "tiny-gemma3"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// HF outputs for every model, padded both ways: logits, hidden states (= resid_pre of each
// block) and attention patterns at real tokens equal HF's run with matching position ids.
class HfParityTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(HfParityTest, LogitsAndHiddenStatesMatchHf) {
  const auto& [model_name, batch_name] = GetParam();
  Fixture f = LoadFixture(model_name);
  ASSERT_NE(f.model, nullptr);
  const std::string prefix = batch_name + ".";
  ForwardInput input{.tokens = f.expected.at(prefix + "input_ids")};
  Tensor mask;
  if (auto it = f.expected.find(prefix + "attention_mask"); it != f.expected.end()) {
    input.attention_mask = it->second;
    mask = it->second;
  } else {
    mask = Tensor::EmptyHost(DType::kI32, input.tokens.shape());
    std::fill_n(mask.data<int32_t>(), mask.numel(), 1);
  }
  HookPlan plan(f.model->hooks());
  ASSERT_TRUE(plan.Capture("blocks.*.hook_resid_pre").ok());
  ASSERT_TRUE(plan.Capture("blocks.*.attn.hook_pattern").ok());
  CollectingSink sink;
  auto out = f.model->Forward(input, plan, &sink, {.logits = LogitsMode::kAll});
  ASSERT_TRUE(out.ok()) << out.status();

  EXPECT_LE(NormRelativeError(RealTokens(out->logits, mask),
                              RealTokens(f.expected.at(prefix + "hf.logits"), mask)),
            kTolerance);
  const int layers = static_cast<int>(f.model->config().n_layers);
  for (int l = 0; l < layers; ++l) {
    SCOPED_TRACE(l);
    EXPECT_LE(NormRelativeError(
                  RealTokens(sink.values.at("blocks." + std::to_string(l) + ".hook_resid_pre"), mask),
                  RealTokens(f.expected.at(prefix + "hf.hidden_states." + std::to_string(l)), mask)),
              kTolerance);
    if (auto it = f.expected.find(prefix + "hf.attentions." + std::to_string(l)); it != f.expected.end()) {
      EXPECT_LE(NormRelativeError(sink.values.at("blocks." + std::to_string(l) + ".attn.hook_pattern"),
                                  it->second),
                kTolerance);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, HfParityTest,
    ::testing::Combine(::testing::Values("tiny-gpt2", "tiny-llama", "tiny-llama-variant",
                                         "tiny-pythia", "tiny-pythia-seq", "tiny-qwen3",
                                         "tiny-phi3", "tiny-olmo2", "tiny-mistral",
                                         "tiny-gemma2", "tiny-qwen2", "tiny-gptj",
                                         "tiny-gemma3"),
                       ::testing::Values("unpadded", "right", "left")),
    [](const auto& info) {
      std::string name = std::get<0>(info.param) + "_" + std::get<1>(info.param);
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

// A parallel attention + MLP block (GPT-NeoX use_parallel_residual) has no hook_resid_mid, as in
// TransformerLens; a resid_mid patching sweep on it says why it cannot run.
TEST(ParallelBlock, HasNoResidMidAndRefusesItsSweep) {
  Fixture parallel = LoadFixture("tiny-pythia");
  Fixture sequential = LoadFixture("tiny-pythia-seq");
  ASSERT_NE(parallel.model, nullptr);
  ASSERT_NE(sequential.model, nullptr);
  EXPECT_FALSE(parallel.model->hooks().Resolve("blocks.0.hook_resid_mid").ok());
  EXPECT_TRUE(sequential.model->hooks().Resolve("blocks.0.hook_resid_mid").ok());
  const Tensor& ids = parallel.expected.at("unpadded.input_ids");
  const Tensor& other = parallel.expected.at("right.input_ids");  // as tokens, padding and all
  auto sweep = RunPatchingSweep(*parallel.model, {.clean = ids, .corrupted = other,
                                                  .kind = SweepKind::kResidMid,
                                                  .metric = {.token_a = 1, .token_b = 2}});
  EXPECT_EQ(sweep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(sweep.status().message(), ::testing::HasSubstr("no hook_resid_mid"));
  auto ok = RunPatchingSweep(*parallel.model, {.clean = ids, .corrupted = other,
                                               .kind = SweepKind::kResidPost,
                                               .metric = {.token_a = 1, .token_b = 2}});
  EXPECT_TRUE(ok.ok()) << ok.status();
}

// Last-token logits are the last real token's row of the full logits, padding or not.
TEST(LastLogits, EqualTheLastRealRowOfAllLogits) {
  Fixture f = LoadFixture("tiny-llama");
  ASSERT_NE(f.model, nullptr);
  for (const std::string batch : {"right", "left"}) {
    ForwardInput input{.tokens = f.expected.at(batch + ".input_ids"),
                       .attention_mask = f.expected.at(batch + ".attention_mask")};
    HookPlan plan(f.model->hooks());
    auto all = f.model->Forward(input, plan, nullptr, {.logits = LogitsMode::kAll});
    auto last = f.model->Forward(input, plan, nullptr, {.logits = LogitsMode::kLast});
    ASSERT_TRUE(all.ok() && last.ok());
    const int64_t batch_size = input.tokens.dim(0), seq = input.tokens.dim(1);
    const int64_t vocab = f.model->config().vocab_size;
    for (int64_t b = 0; b < batch_size; ++b) {
      int64_t last_real = 0;
      for (int64_t s = 0; s < seq; ++s) {
        if (input.attention_mask.data<int32_t>()[b * seq + s]) last_real = s;
      }
      for (int64_t v = 0; v < vocab; ++v) {
        ASSERT_NEAR(last->logits.data<float>()[b * vocab + v],
                    all->logits.data<float>()[(b * seq + last_real) * vocab + v], 1e-5);
      }
    }
  }
}

}  // namespace
}  // namespace glassbox
