// Generation against HF transformers' generate (tests/reference/make_generation_fixtures.py):
// greedy continuations token for token, unsteered and with a steering vector added at
// blocks.1.hook_resid_pre at every step, the three prompts batched (left-padded) together while
// HF ran each alone. Then stopping, seeds and bad parameters.
#include "server/engine/generate.h"

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::CollectingSink;
using ::glassbox::testing::FixturePath;
using ::glassbox::testing::ModelDir;
using ::glassbox::testing::NormRelativeError;
using ::glassbox::testing::ReadAllTensors;
using ::testing::HasSubstr;

constexpr int kRows = 3;
constexpr int kSteerLayer = 1;
constexpr float kCoefficient = 4.0f;

std::vector<int32_t> Ids(const Tensor& t) {
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

class GenerateTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto model = Transformer::Load(ModelDir(GetParam()), std::make_shared<CpuBackend>(), DType::kF32);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    expected_ = ReadAllTensors(FixturePath("expected/generation.safetensors"));
    for (int r = 0; r < kRows; ++r) {
      prompts_.push_back(Ids(expected_.at(GetParam() + ".prompt." + std::to_string(r))));
    }
    params_.max_new_tokens = 12;
    params_.stop_tokens = model_->config().eos_token_ids;
  }

  void ExpectRowsEqual(const GenerateResult& got, const std::string& kind) {
    for (int r = 0; r < kRows; ++r) {
      SCOPED_TRACE("row " + std::to_string(r));
      EXPECT_EQ(got.generated[r], Ids(expected_.at(GetParam() + "." + kind + "." + std::to_string(r))));
    }
  }

  std::unique_ptr<Transformer> model_;
  std::map<std::string, Tensor> expected_;
  std::vector<std::vector<int32_t>> prompts_;
  GenerateParams params_;
};

TEST_P(GenerateTest, GreedyEqualsHfGenerate) {
  HookPlan plan(model_->hooks());
  auto got = Generate(*model_, prompts_, plan, params_, nullptr);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectRowsEqual(*got, "greedy");
}

TEST_P(GenerateTest, SteeredEqualsHfGenerateWithAForwardHook) {
  HookPlan plan(model_->hooks());
  Intervention steer{.hook = model_->hooks().Find(HookKind::kResidPre, kSteerLayer),
                     .kind = InterventionKind::kAdd,
                     .coefficient = kCoefficient,
                     .value = expected_.at(GetParam() + ".steer")};
  ASSERT_TRUE(plan.AddIntervention(steer).ok());
  auto got = Generate(*model_, prompts_, plan, params_, nullptr);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectRowsEqual(*got, "steered");
}

TEST_P(GenerateTest, StepsStreamEveryTokenWithItsLogProb) {
  HookPlan plan(model_->hooks());
  params_.top_logprobs = 3;
  std::vector<std::vector<int32_t>> streamed(kRows);
  auto got = Generate(*model_, prompts_, plan, params_, [&](const GeneratedStep& step) {
    for (int r = 0; r < kRows; ++r) {
      if (step.tokens[r] < 0) continue;
      streamed[r].push_back(step.tokens[r]);
      // Greedy picks the most likely token, so it heads the top list with the same log-prob.
      EXPECT_EQ(step.top[r][0].first, step.tokens[r]);
      EXPECT_FLOAT_EQ(step.top[r][0].second, step.logprobs[r]);
      EXPECT_GE(step.top[r][0].second, step.top[r][1].second);
      EXPECT_LT(step.logprobs[r], 0);
    }
    return absl::OkStatus();
  });
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(streamed, got->generated);
}

INSTANTIATE_TEST_SUITE_P(Models, GenerateTest,
                         ::testing::Values("tiny-gpt2", "tiny-llama", "tiny-mistral", "tiny-gemma2",
                                           "demo"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

class GenerateBehaviourTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = Transformer::Load(FixturePath("models/tiny-llama"), std::make_shared<CpuBackend>(),
                                   DType::kF32);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
  }
  std::unique_ptr<Transformer> model_;
};

TEST_F(GenerateBehaviourTest, StopTokenEndsOnlyItsRow) {
  HookPlan plan(model_->hooks());
  GenerateParams params{.max_new_tokens = 6};
  auto free_run = Generate(*model_, {{5, 6, 7}, {9, 10}}, plan, params, nullptr);
  ASSERT_TRUE(free_run.ok()) << free_run.status();
  // Stop row 0 at its second token: row 1 carries on unchanged.
  params.stop_tokens = {free_run->generated[0][1]};
  auto stopped = Generate(*model_, {{5, 6, 7}, {9, 10}}, plan, params, nullptr);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->generated[0],
            std::vector<int32_t>(free_run->generated[0].begin(), free_run->generated[0].begin() + 2));
  EXPECT_EQ(stopped->finish[0], FinishReason::kStopToken);
  if (std::find(free_run->generated[1].begin(), free_run->generated[1].end(),
                params.stop_tokens[0]) == free_run->generated[1].end()) {
    EXPECT_EQ(stopped->generated[1], free_run->generated[1]);
    EXPECT_EQ(stopped->finish[1], FinishReason::kLength);
  }
}

// Decoding over the KV cache equals recomputing the sequence every step: the chosen tokens and
// their log-probs (the logits at every step), on ragged rows, steered, with a sliding window.
TEST_F(GenerateBehaviourTest, KvCacheEqualsRecomputingEveryStep) {
  for (const std::string name : {"tiny-llama", "tiny-gpt2", "tiny-mistral", "tiny-gemma2"}) {
    SCOPED_TRACE(name);
    auto model = Transformer::Load(FixturePath("models/" + name), std::make_shared<CpuBackend>(),
                                   DType::kF32);
    ASSERT_TRUE(model.ok()) << model.status();
    HookPlan plan((*model)->hooks());
    Tensor direction = Tensor::EmptyHost(DType::kF32, {(*model)->config().d_model});
    for (int64_t i = 0; i < direction.numel(); ++i) direction.data<float>()[i] = std::sin(i * 0.7f);
    ASSERT_TRUE(plan.AddIntervention({.hook = (*model)->hooks().Find(HookKind::kResidPre, 1),
                                      .kind = InterventionKind::kAdd,
                                      .coefficient = 0.5f,
                                      .value = direction})
                    .ok());
    ASSERT_TRUE(CheckPlanForCache(plan).ok());
    std::vector<std::vector<float>> logprobs[2];
    std::vector<std::vector<int32_t>> tokens[2];
    for (bool cached : {false, true}) {
      GenerateParams params{.max_new_tokens = 14, .top_logprobs = 5};
      params.use_kv_cache = cached;
      params.sampling = {.temperature = 0.9, .seed = 3};
      auto got = Generate(**model, {{5, 6, 7, 8, 9, 10}, {11}, {12, 13, 14}}, plan, params,
                          [&](const GeneratedStep& step) {
                            std::vector<float> row;
                            for (const auto& top : step.top) {
                              for (const auto& [id, lp] : top) row.push_back(lp);
                            }
                            logprobs[cached].push_back(row);
                            return absl::OkStatus();
                          });
      ASSERT_TRUE(got.ok()) << got.status();
      tokens[cached] = got->generated;
    }
    EXPECT_EQ(tokens[0], tokens[1]);
    ASSERT_EQ(logprobs[0].size(), logprobs[1].size());
    for (size_t s = 0; s < logprobs[0].size(); ++s) {
      ASSERT_EQ(logprobs[0][s].size(), logprobs[1][s].size());
      double diff = 0, norm = 0;
      for (size_t i = 0; i < logprobs[0][s].size(); ++i) {
        diff += std::pow(logprobs[0][s][i] - logprobs[1][s][i], 2);
        norm += std::pow(logprobs[0][s][i], 2);
      }
      EXPECT_LE(std::sqrt(diff / norm), 1e-5) << "step " << s;
    }
  }
}

TEST_F(GenerateBehaviourTest, PlansThatNeedTheWholeSequenceAreNotCached) {
  HookPlan positions(model_->hooks());
  ASSERT_TRUE(positions.AddIntervention({.hook = model_->hooks().Find(HookKind::kResidPre, 0),
                                         .kind = InterventionKind::kZero,
                                         .select = {.positions = {1}}})
                  .ok());
  EXPECT_THAT(CheckPlanForCache(positions).message(), HasSubstr("selects positions"));
  HookPlan pattern(model_->hooks());
  ASSERT_TRUE(pattern.AddIntervention({.hook = model_->hooks().Find(HookKind::kPattern, 1),
                                       .kind = InterventionKind::kScale,
                                       .coefficient = 0.5f})
                  .ok());
  EXPECT_THAT(CheckPlanForCache(pattern).message(), HasSubstr("hook_pattern"));
  HookPlan mean(model_->hooks());
  ASSERT_TRUE(mean.AddIntervention({.hook = model_->hooks().Find(HookKind::kMlpPost, 0),
                                    .kind = InterventionKind::kMeanPos})
                  .ok());
  EXPECT_FALSE(CheckPlanForCache(mean).ok());
  // Such plans still generate, recomputing each step, the same as without the cache.
  GenerateParams params{.max_new_tokens = 5};
  auto recomputed = Generate(*model_, {{5, 6, 7}}, positions, params, nullptr);
  params.use_kv_cache = false;
  auto reference = Generate(*model_, {{5, 6, 7}}, positions, params, nullptr);
  ASSERT_TRUE(recomputed.ok() && reference.ok());
  EXPECT_EQ(recomputed->generated, reference->generated);
}

TEST_F(GenerateBehaviourTest, SeedsReproduceAndDiffer) {
  HookPlan plan(model_->hooks());
  GenerateParams params{.max_new_tokens = 16};
  params.sampling = {.temperature = 1.5, .top_k = 50, .top_p = 0.95, .seed = 7};
  auto a = Generate(*model_, {{5, 6, 7}}, plan, params, nullptr);
  auto b = Generate(*model_, {{5, 6, 7}}, plan, params, nullptr);
  params.sampling.seed = 8;
  auto c = Generate(*model_, {{5, 6, 7}}, plan, params, nullptr);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->generated, b->generated);
  EXPECT_NE(a->generated, c->generated);
}

TEST_F(GenerateBehaviourTest, ContextLimitEndsTheRow) {
  HookPlan plan(model_->hooks());
  const int64_t n_ctx = model_->config().n_ctx;
  std::vector<int32_t> prompt(n_ctx - 2, 5);
  auto got = Generate(*model_, {prompt}, plan, {.max_new_tokens = 10}, nullptr);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->generated[0].size(), 2u);
  EXPECT_EQ(got->finish[0], FinishReason::kContext);
}

// max_new_tokens is the client's number: the KV cache is sized by the context, not by it.
TEST_F(GenerateBehaviourTest, HugeMaxNewTokensStopsAtTheContext) {
  HookPlan plan(model_->hooks());
  const int64_t n_ctx = model_->config().n_ctx;
  auto got = Generate(*model_, {{1, 2, 3}}, plan,
                      {.max_new_tokens = std::numeric_limits<int32_t>::max()}, nullptr);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(static_cast<int64_t>(got->generated[0].size()), n_ctx - 3);
  EXPECT_EQ(got->finish[0], FinishReason::kContext);
}

TEST_F(GenerateBehaviourTest, BadParametersAreNamed) {
  HookPlan plan(model_->hooks());
  auto error = [&](std::vector<std::vector<int32_t>> prompts, GenerateParams params) {
    return Generate(*model_, prompts, plan, params, nullptr).status();
  };
  const std::vector<std::vector<int32_t>> ok_prompt = {{1, 2}};
  struct Case {
    absl::Status status;
    std::string phrase;
  };
  const Case cases[] = {
      {error({}, {}), "at least one prompt"},
      {error({{1}, {}}, {}), "prompt 1 is empty"},
      {error({std::vector<int32_t>(model_->config().n_ctx, 1)}, {}), "leaving no room"},
      {error(ok_prompt, {.max_new_tokens = 0}), "max_new_tokens is 0"},
      {error(ok_prompt, {.sampling = {.temperature = -1}}), "temperature is -1"},
      {error(ok_prompt, {.sampling = {.top_p = 0}}), "top_p is 0"},
      {error(ok_prompt, {.sampling = {.top_p = 1.5}}), "top_p is 1.5"},
      {error(ok_prompt, {.sampling = {.repetition_penalty = 0}}), "repetition_penalty"},
      {error(ok_prompt, {.stop_tokens = {300}}), "stop token 300 is outside the vocabulary"},
      {error(ok_prompt, {.top_logprobs = 301}), "top_logprobs 301"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.phrase);
    EXPECT_EQ(c.status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status.message(), HasSubstr(c.phrase));
  }
  EXPECT_EQ(error(ok_prompt, {.stop_strings = {"x"}}).code(), absl::StatusCode::kFailedPrecondition);
}

// A stop string ends its row once the row's text contains it, also when it spans tokens; the
// token that completes it is kept. Text here is a fake detokenizer: token t adds "<t>".
TEST_F(GenerateBehaviourTest, StopStringEndsItsRowAcrossTokens) {
  HookPlan plan(model_->hooks());
  GenerateParams params{.max_new_tokens = 8};
  params.append_text = [](int64_t, int32_t token) -> absl::StatusOr<std::string> {
    return absl::StrCat("<", token, ">");
  };
  const std::vector<std::vector<int32_t>> prompts = {{5, 6, 7}, {9, 10}};
  auto free_run = Generate(*model_, prompts, plan, params, nullptr);
  ASSERT_TRUE(free_run.ok()) << free_run.status();
  const std::vector<int32_t>& row0 = free_run->generated[0];
  EXPECT_EQ(free_run->texts[0], absl::StrCat("<", row0[0], "><", row0[1], ">", free_run->texts[0].substr(
                                                 absl::StrCat("<", row0[0], "><", row0[1], ">").size())));
  // Tokens 2 and 3 of row 0, across the token boundary: "3><row0[3]".
  const std::string stop = absl::StrCat(row0[2], "><", row0[3]);
  const size_t first = free_run->texts[0].find(stop);
  size_t end = 0, kept = 0;  // tokens up to the one whose text completes the first match
  for (int32_t t : row0) {
    end += absl::StrCat("<", t, ">").size();
    ++kept;
    if (end >= first + stop.size()) break;
  }
  params.stop_strings = {stop};
  auto stopped = Generate(*model_, prompts, plan, params, nullptr);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->generated[0], std::vector<int32_t>(row0.begin(), row0.begin() + kept));
  EXPECT_EQ(stopped->finish[0], FinishReason::kStopString);
  EXPECT_LE(kept, 4u);
  if (free_run->texts[1].find(stop) == std::string::npos) {
    EXPECT_EQ(stopped->generated[1], free_run->generated[1]);
    EXPECT_EQ(stopped->finish[1], FinishReason::kLength);
  }
}

// Per-step captures are what a forward pass over the row's whole sequence computes at the
// position that chose each token (step 0: every prompt position with capture_prompt), with
// each row numbered from its first real token; over the KV cache and recomputing alike, on
// ragged rows with a steering edit. hook_pattern (never cached) is compared key by key.
TEST_F(GenerateBehaviourTest, StepCapturesEqualAForwardOverTheSequence) {
  const HookRegistry& hooks = model_->hooks();
  Tensor direction = Tensor::EmptyHost(DType::kF32, {model_->config().d_model});
  for (int64_t i = 0; i < direction.numel(); ++i) direction.data<float>()[i] = std::cos(i * 0.3f);
  const std::vector<std::vector<int32_t>> prompts = {{5, 6, 7, 8, 9, 10}, {11}, {12, 13, 14}};
  const int64_t longest = 6, steps = 5;
  for (const std::string hook : {"blocks.1.hook_resid_mid", "blocks.0.attn.hook_q", "blocks.1.attn.hook_pattern"}) {
    for (bool cached : {true, false}) {
      SCOPED_TRACE(hook + (cached ? " cached" : " recomputed"));
      HookPlan plan(hooks);
      ASSERT_TRUE(plan.Capture(hook).ok());
      ASSERT_TRUE(plan.AddIntervention({.hook = hooks.Find(HookKind::kResidPre, 1),
                                        .kind = InterventionKind::kAdd,
                                        .value = direction})
                      .ok());
      GenerateParams params{.max_new_tokens = steps, .capture_prompt = true};
      params.use_kv_cache = cached;
      std::vector<Tensor> reported;
      std::vector<std::vector<int32_t>> lengths;
      auto got = Generate(*model_, prompts, plan, params, [&](const GeneratedStep& step) {
        EXPECT_EQ(step.captures.size(), 1u);
        if (step.captures.empty()) return absl::OkStatus();
        reported.push_back(step.captures[0].value);
        lengths.push_back(step.capture_lengths);
        return absl::OkStatus();
      });
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_EQ(reported.size(), static_cast<size_t>(steps));
      EXPECT_EQ(lengths[0], (std::vector<int32_t>{6, 1, 3}));
      EXPECT_EQ(lengths[1], (std::vector<int32_t>{1, 1, 1}));
      const bool pattern = absl::StrContains(hook, "pattern");
      for (int r = 0; r < 3; ++r) {
        std::vector<int32_t> sequence = prompts[r];
        sequence.insert(sequence.end(), got->generated[r].begin(), got->generated[r].end());
        const int64_t n = static_cast<int64_t>(sequence.size());
        CollectingSink sink;
        ASSERT_TRUE(model_->Forward({.tokens = Tensor::FromHost(sequence, {1, n})}, plan, &sink, {}).ok());
        const Tensor& full = sink.values.at(hook);  // [1, n, ...] or [1, head, n, n]
        const int64_t len = static_cast<int64_t>(prompts[r].size());
        for (int64_t s = 0; s < steps; ++s) {
          const Tensor& v = reported[s];
          const int64_t queries = s == 0 ? longest : 1;
          ASSERT_EQ(v.dim(0), 3);
          std::vector<float> got_values, want_values;
          for (int64_t q = 0; q < queries; ++q) {
            const bool real = s == 0 ? q < len : true;
            const int64_t p = s == 0 ? q : len + s - 1;  // the row's own position
            if (pattern) {
              const int64_t heads = v.dim(1), keys = v.dim(3);
              ASSERT_EQ(v.dim(2), queries);
              for (int64_t h = 0; h < heads; ++h) {
                for (int64_t k = 0; k < keys; ++k) {
                  got_values.push_back(v.data<float>()[((r * heads + h) * queries + q) * keys + k]);
                  want_values.push_back(real && k < n ? full.data<float>()[(h * n + p) * n + k] : 0.0f);
                }
              }
            } else {
              ASSERT_EQ(v.dim(1), queries);
              const int64_t inner = v.numel() / (3 * queries);
              for (int64_t i = 0; i < inner; ++i) {
                got_values.push_back(v.data<float>()[(r * queries + q) * inner + i]);
                want_values.push_back(real ? full.data<float>()[p * inner + i] : 0.0f);
              }
            }
          }
          const Tensor a = Tensor::FromHost(got_values, {static_cast<int64_t>(got_values.size())});
          const Tensor b = Tensor::FromHost(want_values, {static_cast<int64_t>(want_values.size())});
          EXPECT_LE(NormRelativeError(a, b), 1e-5) << "row " << r << " step " << s;
        }
      }
    }
  }
}

TEST_F(GenerateBehaviourTest, CancelledStopsTheGeneration) {
  HookPlan plan(model_->hooks());
  std::atomic<bool> cancelled{false};
  GenerateParams params{.max_new_tokens = 10, .cancelled = &cancelled};
  int steps = 0;
  auto got = Generate(*model_, {{1, 2}}, plan, params, [&](const GeneratedStep&) {
    if (++steps == 2) cancelled = true;
    return absl::OkStatus();
  });
  EXPECT_EQ(got.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(steps, 2);
}

}  // namespace
}  // namespace glassbox
