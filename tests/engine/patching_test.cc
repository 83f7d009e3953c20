// Batched patching sweeps against transformer_lens.patching (one forward pass per cell there):
// the same clean / corrupted pairs, metric and weights; fixtures from
// tests/reference/make_patching_fixtures.py.
#include "server/engine/patching.h"

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

using ::glassbox::testing::FixturePath;
using ::glassbox::testing::NormRelativeError;
using ::glassbox::testing::ReadAllTensors;

const std::map<std::string, SweepKind>& Kinds() {
  static const auto* kinds = new std::map<std::string, SweepKind>{
      {"resid_pre", SweepKind::kResidPre},       {"resid_mid", SweepKind::kResidMid},
      {"resid_post", SweepKind::kResidPost},     {"attn_out", SweepKind::kAttnOut},
      {"mlp_out", SweepKind::kMlpOut},           {"head_out_all_pos", SweepKind::kHeadOutAllPos},
      {"head_out_by_pos", SweepKind::kHeadOutByPos}, {"q_all_pos", SweepKind::kQAllPos},
      {"k_all_pos", SweepKind::kKAllPos},        {"v_all_pos", SweepKind::kVAllPos},
      {"pattern_all_pos", SweepKind::kPatternAllPos}};
  return *kinds;
}

class PatchingTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PatchingTest, SweepsEqualTransformerLens) {
  auto model = Transformer::Load(FixturePath("models/" + GetParam()), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok()) << model.status();
  auto expected = ReadAllTensors(FixturePath("expected/" + GetParam() + ".patching.safetensors"));
  const Tensor& tokens = expected.at("tokens");
  int compared = 0;
  for (const auto& [name, kind] : Kinds()) {
    auto it = expected.find(name + ".values");
    if (it == expected.end()) continue;
    SCOPED_TRACE(name);
    // A small pass size forces several forward passes per sweep.
    PatchingRequest request{.clean = expected.at("clean"), .corrupted = expected.at("corrupted"),
                            .kind = kind,
                            .metric = {.kind = PatchingMetric::Kind::kLogitDiff,
                                       .token_a = tokens.data<int32_t>()[0],
                                       .token_b = tokens.data<int32_t>()[1]},
                            .max_rows_per_pass = 6};
    auto result = RunPatchingSweep(**model, request);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->values.shape(), it->second.shape());
    const double error = NormRelativeError(result->values, it->second);
    EXPECT_LE(error, 1e-5);
    std::printf("%s %s: norm-relative error %.2g vs transformer_lens.patching\n",
                GetParam().c_str(), name.c_str(), error);
    EXPECT_NEAR(result->clean_metric, expected.at("clean_metric").data<float>()[0], 1e-4);
    EXPECT_NEAR(result->corrupted_metric, expected.at("corrupted_metric").data<float>()[0], 1e-4);
    for (int64_t i = 0; i < result->values.numel(); ++i) {
      const double want = (it->second.data<float>()[i] - result->corrupted_metric) /
                          (result->clean_metric - result->corrupted_metric);
      ASSERT_NEAR(result->normalized.data<float>()[i], want, 1e-4);
    }
    EXPECT_GT(result->forward_passes, 3);
    ++compared;
  }
  EXPECT_GE(compared, 7);
}

INSTANTIATE_TEST_SUITE_P(Models, PatchingTest, ::testing::Values("tiny-gpt2", "tiny-llama"));

TEST(Patching, RejectsMismatchedInputsAndTokens) {
  auto model = Transformer::Load(FixturePath("models/tiny-gpt2"), std::make_shared<CpuBackend>());
  ASSERT_TRUE(model.ok());
  const Tensor a = Tensor::FromHost(std::vector<int32_t>{1, 2, 3}, {1, 3});
  const Tensor b = Tensor::FromHost(std::vector<int32_t>{1, 2}, {1, 2});
  EXPECT_EQ(RunPatchingSweep(**model, {.clean = a, .corrupted = b}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RunPatchingSweep(**model, {.clean = a, .corrupted = a, .metric = {.token_a = 300}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace glassbox
