// Logit lens, direct logit attribution and attention norms against TransformerLens
// (tests/reference/make_analysis_fixtures.py).
#include "server/engine/analyses.h"

#include <algorithm>
#include <cmath>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::FixturePath;
using ::glassbox::testing::NormRelativeError;
using ::glassbox::testing::ReadAllTensors;

class AnalysesTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto model = Transformer::Load(FixturePath("models/" + GetParam()), std::make_shared<CpuBackend>());
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    inputs_ = ReadAllTensors(FixturePath("expected/" + GetParam() + ".safetensors"));
    expected_ = ReadAllTensors(FixturePath("expected/" + GetParam() + ".analyses.safetensors"));
  }
  std::unique_ptr<Transformer> model_;
  std::map<std::string, Tensor> inputs_, expected_;
};

TEST_P(AnalysesTest, LogitLensEqualsAccumulatedResidThroughTheUnembedding) {
  const Tensor& log_probs = expected_.at("logit_lens.log_probs");  // [L+1, B, S, V]
  auto result = RunLogitLens(*model_, {.tokens = inputs_.at("unpadded.input_ids"), .top_k = 3,
                                       .target_tokens = {17, 42}});
  ASSERT_TRUE(result.ok()) << result.status();
  const int64_t vocab = log_probs.dim(3), rows = log_probs.numel() / vocab;
  ASSERT_EQ(result->labels.size(), static_cast<size_t>(log_probs.dim(0)));
  EXPECT_EQ(result->labels.back(), "final_post");
  Tensor targets_ref = Tensor::EmptyHost(DType::kF32, {rows, 2});
  Tensor top_ref = Tensor::EmptyHost(DType::kF32, {rows, 3});
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = log_probs.data<float>() + r * vocab;
    targets_ref.data<float>()[r * 2] = row[17];
    targets_ref.data<float>()[r * 2 + 1] = row[42];
    std::vector<float> sorted(row, row + vocab);
    std::sort(sorted.rbegin(), sorted.rend());
    for (int j = 0; j < 3; ++j) {
      top_ref.data<float>()[r * 3 + j] = sorted[j];
      const int32_t token = result->top_tokens.data<int32_t>()[r * 3 + j];
      ASSERT_NEAR(row[token], sorted[j], 1e-4) << "row " << r;
    }
  }
  EXPECT_LE(NormRelativeError(result->target_log_probs.Reshape({rows, 2}), targets_ref), 1e-5);
  EXPECT_LE(NormRelativeError(result->top_log_probs.Reshape({rows, 3}), top_ref), 1e-5);
}

TEST_P(AnalysesTest, DirectLogitAttributionEqualsLogitAttrs) {
  const Tensor& tokens = expected_.at("dla.tokens");
  const int32_t a = tokens.data<int32_t>()[0], b = tokens.data<int32_t>()[1];
  auto single = RunDirectLogitAttribution(*model_, {.tokens = inputs_.at("unpadded.input_ids"), .token = a});
  auto diff = RunDirectLogitAttribution(*model_, {.tokens = inputs_.at("unpadded.input_ids"), .token = a,
                                                  .minus_token = b});
  ASSERT_TRUE(single.ok() && diff.ok()) << single.status() << diff.status();
  EXPECT_EQ(single->attributions.shape(), expected_.at("dla.token").shape());
  EXPECT_LE(NormRelativeError(single->attributions, expected_.at("dla.token")), 1e-5);
  EXPECT_LE(NormRelativeError(diff->attributions, expected_.at("dla.diff")), 1e-5);
  // The components and the constant account for the whole logit difference, which equals the
  // model's own (HF) logits at the last position.
  const Tensor& logits = inputs_.at("unpadded.hf.logits");
  const int64_t batch = logits.dim(0), seq = logits.dim(1), vocab = logits.dim(2);
  for (int64_t row = 0; row < batch; ++row) {
    double sum = diff->residual_constant.data<float>()[row];
    for (int64_t c = 0; c < diff->attributions.dim(0); ++c) sum += diff->attributions.data<float>()[c * batch + row];
    const float* last = logits.data<float>() + (row * seq + seq - 1) * vocab;
    EXPECT_NEAR(sum, last[a] - last[b], 1e-3 * (1 + std::abs(last[a] - last[b])));
    EXPECT_NEAR(diff->logit.data<float>()[row], last[a] - last[b], 1e-3 * (1 + std::abs(last[a] - last[b])));
  }
  EXPECT_EQ(single->labels.front(), "embed");
}

TEST_P(AnalysesTest, AttentionNormsEqualTheDefinition) {
  auto result = RunAttentionNorms(*model_, {.tokens = inputs_.at("unpadded.input_ids")});
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->size(), static_cast<size_t>(model_->config().n_layers));
  for (const AttentionNormsLayer& layer : *result) {
    SCOPED_TRACE(layer.layer);
    const std::string prefix = "attn_norms." + std::to_string(layer.layer);
    EXPECT_LE(NormRelativeError(layer.head_norms, expected_.at(prefix + ".head")), 1e-5);
    EXPECT_LE(NormRelativeError(layer.layer_norms, expected_.at(prefix + ".layer")), 1e-5);
    EXPECT_LE(NormRelativeError(layer.weights, inputs_.at("unpadded.tl.blocks." + std::to_string(layer.layer) +
                                                          ".attn.hook_pattern")), 1e-5);
  }
  EXPECT_EQ(RunAttentionNorms(*model_, {.tokens = inputs_.at("unpadded.input_ids"), .layers = {7}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Models, AnalysesTest, ::testing::Values("tiny-gpt2", "tiny-llama"));

// GPT-J's unembedding has a bias (b_U): the logit lens adds it as the model does, so its last
// layer is HF's own log-softmax, and DLA counts it in the residual constant, so the components
// still sum to HF's logit difference.
TEST(UnembedBias, LogitLensAndDlaAccountForIt) {
  auto model = Transformer::Load(FixturePath("models/tiny-gptj"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  const auto inputs = ReadAllTensors(FixturePath("expected/tiny-gptj.safetensors"));
  const Tensor& ids = inputs.at("unpadded.input_ids");
  const Tensor& logits = inputs.at("unpadded.hf.logits");
  const int64_t batch = logits.dim(0), seq = logits.dim(1), vocab = logits.dim(2);

  auto lens = RunLogitLens(**model, {.tokens = ids, .target_tokens = {17, 42}});
  ASSERT_TRUE(lens.ok()) << lens.status();
  const int64_t layers = static_cast<int64_t>(lens->labels.size());
  Tensor ours = Tensor::EmptyHost(DType::kF32, {batch * seq, 2});
  Tensor expected = Tensor::EmptyHost(DType::kF32, {batch * seq, 2});
  for (int64_t r = 0; r < batch * seq; ++r) {
    const float* row = logits.data<float>() + r * vocab;
    double total = 0;
    const double top = *std::max_element(row, row + vocab);
    for (int64_t v = 0; v < vocab; ++v) total += std::exp(row[v] - top);
    for (int j = 0; j < 2; ++j) {
      expected.data<float>()[r * 2 + j] =
          static_cast<float>(row[j == 0 ? 17 : 42] - top - std::log(total));
      ours.data<float>()[r * 2 + j] =
          lens->target_log_probs.data<float>()[((layers - 1) * batch * seq + r) * 2 + j];
    }
  }
  EXPECT_LE(NormRelativeError(ours, expected), 1e-5);

  auto dla = RunDirectLogitAttribution(**model, {.tokens = ids, .token = 17, .minus_token = 42});
  ASSERT_TRUE(dla.ok()) << dla.status();
  for (int64_t row = 0; row < batch; ++row) {
    double sum = dla->residual_constant.data<float>()[row];
    for (int64_t c = 0; c < dla->attributions.dim(0); ++c) {
      sum += dla->attributions.data<float>()[c * batch + row];
    }
    const float* last = logits.data<float>() + (row * seq + seq - 1) * vocab;
    EXPECT_NEAR(sum, last[17] - last[42], 1e-4 * (1 + std::abs(last[17] - last[42])));
  }
}

}  // namespace
}  // namespace glassbox
