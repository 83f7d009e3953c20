// The forward pass's logits outputs (server/engine/logits_outputs.h), computed by the backend:
// top-k, target log-probs, last-token logits and the per-token loss, each against the same
// quantity computed here on the host (f64) from the full logits of the same pass, on padded
// batches both ways. And the pass returns exactly the tensors asked for.
#include "server/engine/logits_outputs.h"

#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/host_math.h"
#include "server/engine/patching.h"
#include "server/engine/transformer.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::FixturePath;
using ::glassbox::testing::ReadAllTensors;

class LogitsOutputsTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto model = Transformer::Load(FixturePath("models/tiny-llama"), std::make_shared<CpuBackend>());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    const auto expected = ReadAllTensors(FixturePath("expected/tiny-llama.safetensors"));
    input_.tokens = expected.at(GetParam() + ".input_ids");
    input_.attention_mask = expected.at(GetParam() + ".attention_mask");
    batch_ = input_.tokens.dim(0);
    seq_ = input_.tokens.dim(1);
    vocab_ = model_->config().vocab_size;
  }

  ForwardOutput Run(const ForwardOptions& options) {
    HookPlan plan(model_->hooks());
    auto out = model_->Forward(input_, plan, nullptr, options);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? *std::move(out) : ForwardOutput();
  }
  bool Real(int64_t b, int64_t s) const { return input_.attention_mask.data<int32_t>()[b * seq_ + s] != 0; }
  int64_t LastReal(int64_t b) const {
    int64_t last = 0;
    for (int64_t s = 0; s < seq_; ++s) last = Real(b, s) ? s : last;
    return last;
  }
  // log_softmax of one logits row at `token`, in f64.
  static double LogProb(const float* row, int64_t vocab, int32_t token) {
    double max = row[0], sum = 0;
    for (int64_t v = 1; v < vocab; ++v) max = std::max<double>(max, row[v]);
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - max);
    return row[token] - max - std::log(sum);
  }

  std::unique_ptr<Transformer> model_;
  ForwardInput input_;
  int64_t batch_ = 0, seq_ = 0, vocab_ = 0;
};

TEST_P(LogitsOutputsTest, TopKAtEveryPositionIsTheHostTopKOfTheLogits) {
  const ForwardOutput out = Run({.logits = LogitsMode::kAll, .top_k = 7});
  ASSERT_EQ(out.top_k_values.shape(), (Shape{batch_, seq_, 7}));
  ASSERT_EQ(out.top_k_indices.shape(), (Shape{batch_, seq_, 7}));
  std::vector<int32_t> scratch;
  for (int64_t r = 0; r < batch_ * seq_; ++r) {
    float values[7];
    int32_t indices[7];
    TopK(out.logits.data<float>() + r * vocab_, vocab_, 7, values, indices, scratch);
    for (int j = 0; j < 7; ++j) {
      ASSERT_EQ(out.top_k_indices.data<int32_t>()[r * 7 + j], indices[j]) << r << " " << j;
      ASSERT_EQ(out.top_k_values.data<float>()[r * 7 + j], values[j]) << r << " " << j;
    }
  }
}

TEST_P(LogitsOutputsTest, TargetLogProbsAreLogSoftmaxOfTheLogits) {
  const std::vector<int32_t> targets = {0, 3, static_cast<int32_t>(vocab_ - 1), 3};
  const ForwardOutput out = Run({.logits = LogitsMode::kAll, .target_tokens = targets});
  ASSERT_EQ(out.target_log_probs.shape(), (Shape{batch_, seq_, 4}));
  for (int64_t r = 0; r < batch_ * seq_; ++r) {
    for (int j = 0; j < 4; ++j) {
      ASSERT_NEAR(out.target_log_probs.data<float>()[r * 4 + j],
                  LogProb(out.logits.data<float>() + r * vocab_, vocab_, targets[j]), 1e-5)
          << r << " " << j;
    }
  }
}

// At the last real token: the rows LogitsMode::kLast returns, whatever else is computed.
TEST_P(LogitsOutputsTest, OutputsAtTheLastPositionUseEachRowsRealLength) {
  const ForwardOutput all = Run({.logits = LogitsMode::kAll});
  const std::vector<int32_t> targets = {5, 1};
  for (bool with_loss : {false, true}) {
    SCOPED_TRACE(with_loss ? "full logits computed for the loss" : "last rows only");
    const ForwardOutput last = Run({.logits = LogitsMode::kLast, .top_k = 3, .target_tokens = targets,
                                    .outputs_at = OutputPositions::kLast, .loss_per_token = with_loss});
    ASSERT_EQ(last.logits.shape(), (Shape{batch_, vocab_}));
    ASSERT_EQ(last.top_k_indices.shape(), (Shape{batch_, 3}));
    ASSERT_EQ(last.target_log_probs.shape(), (Shape{batch_, 2}));
    EXPECT_EQ(last.loss_per_token.defined(), with_loss);
    std::vector<int32_t> scratch;
    for (int64_t b = 0; b < batch_; ++b) {
      const float* row = all.logits.data<float>() + (b * seq_ + LastReal(b)) * vocab_;
      for (int64_t v = 0; v < vocab_; ++v) ASSERT_NEAR(last.logits.data<float>()[b * vocab_ + v], row[v], 1e-5);
      float values[3];
      int32_t indices[3];
      TopK(last.logits.data<float>() + b * vocab_, vocab_, 3, values, indices, scratch);
      for (int j = 0; j < 3; ++j) EXPECT_EQ(last.top_k_indices.data<int32_t>()[b * 3 + j], indices[j]);
      for (int j = 0; j < 2; ++j) {
        EXPECT_NEAR(last.target_log_probs.data<float>()[b * 2 + j], LogProb(row, vocab_, targets[j]), 1e-5);
      }
    }
  }
}

TEST_P(LogitsOutputsTest, LossIsTheNextRealTokensNegativeLogProb) {
  const ForwardOutput out = Run({.logits = LogitsMode::kAll, .loss_per_token = true});
  ASSERT_EQ(out.loss_per_token.shape(), (Shape{batch_, seq_ - 1}));
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t t = 0; t + 1 < seq_; ++t) {
      const float got = out.loss_per_token.data<float>()[b * (seq_ - 1) + t];
      if (!Real(b, t) || !Real(b, t + 1)) {
        EXPECT_EQ(got, 0.0f) << b << " " << t;
        continue;
      }
      const int32_t next = input_.tokens.data<int32_t>()[b * seq_ + t + 1];
      EXPECT_NEAR(got, -LogProb(out.logits.data<float>() + (b * seq_ + t) * vocab_, vocab_, next), 1e-5);
    }
  }
}

TEST_P(LogitsOutputsTest, ReturnsExactlyWhatWasAsked) {
  const ForwardOutput top = Run({.logits = LogitsMode::kNone, .top_k = 2});
  EXPECT_FALSE(top.logits.defined());
  EXPECT_FALSE(top.loss_per_token.defined());
  EXPECT_FALSE(top.target_log_probs.defined());
  EXPECT_TRUE(top.top_k_values.defined() && top.top_k_indices.defined());
  EXPECT_EQ(top.top_k_indices.dtype(), DType::kI32);
  const ForwardOutput none = Run({.logits = LogitsMode::kNone});
  EXPECT_FALSE(none.logits.defined() || none.top_k_values.defined() || none.loss_per_token.defined());
}

INSTANTIATE_TEST_SUITE_P(Padding, LogitsOutputsTest, ::testing::Values("right", "left"));

TEST(LogitsOutputs, BadRequestsAreInvalidArguments) {
  auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  const int64_t vocab = (*model)->config().vocab_size;
  ForwardInput input{.tokens = Tensor::FromHost(std::vector<int32_t>{1, 2, 3}, {1, 3})};
  HookPlan plan((*model)->hooks());
  auto code = [&](const ForwardOptions& options) {
    return (*model)->Forward(input, plan, nullptr, options).status().code();
  };
  EXPECT_EQ(code({.logits = LogitsMode::kNone, .top_k = vocab + 1}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.logits = LogitsMode::kNone, .top_k = -1}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.logits = LogitsMode::kNone, .top_k = vocab}), absl::StatusCode::kOk);
  EXPECT_EQ(code({.logits = LogitsMode::kNone, .target_tokens = {static_cast<int32_t>(vocab)}}),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.logits = LogitsMode::kNone, .target_tokens = {-1}}), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.logits = LogitsMode::kNone, .top_k = 2, .stop_at_layer = 1}),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code({.logits = LogitsMode::kNone, .target_tokens = {1}, .stop_at_layer = 1}),
            absl::StatusCode::kInvalidArgument);
}

// One token per row: no next token, so an empty [batch, 0] loss (an empty gather on the backend).
TEST(LogitsOutputs, SingleTokenRowsHaveAnEmptyLoss) {
  auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  ForwardInput input{.tokens = Tensor::FromHost(std::vector<int32_t>{4, 9}, {2, 1})};
  HookPlan plan((*model)->hooks());
  auto out = (*model)->Forward(input, plan, nullptr, {.logits = LogitsMode::kNone, .loss_per_token = true});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->loss_per_token.shape(), (Shape{2, 0}));
}

// The patching log_prob metric is the engine's target log-prob at the last position.
TEST(LogitsOutputs, PatchingLogProbMetricIsTheLastPositionsLogProb) {
  auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  const Tensor clean = Tensor::FromHost(std::vector<int32_t>{5, 17, 42, 9, 3, 1, 8, 2}, {2, 4});
  const Tensor corrupted = Tensor::FromHost(std::vector<int32_t>{5, 17, 40, 9, 3, 1, 7, 2}, {2, 4});
  const int32_t token = 11;
  auto result = RunPatchingSweep(**model, {.clean = clean, .corrupted = corrupted,
                                           .kind = SweepKind::kResidPre,
                                           .metric = {.kind = PatchingMetric::Kind::kLogProb,
                                                      .token_a = token}});
  ASSERT_TRUE(result.ok()) << result.status();
  HookPlan plan((*model)->hooks());
  auto all = (*model)->Forward({.tokens = clean}, plan, nullptr, {.logits = LogitsMode::kAll});
  ASSERT_TRUE(all.ok());
  const int64_t vocab = (*model)->config().vocab_size;
  double expected = 0;
  for (int64_t b = 0; b < 2; ++b) {
    const float* row = all->logits.data<float>() + (b * 4 + 3) * vocab;
    double max = row[0], sum = 0;
    for (int64_t v = 1; v < vocab; ++v) max = std::max<double>(max, row[v]);
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - max);
    expected += (row[token] - max - std::log(sum)) / 2;
  }
  EXPECT_NEAR(result->clean_metric, expected, 1e-5);
}

}  // namespace
}  // namespace glassbox
