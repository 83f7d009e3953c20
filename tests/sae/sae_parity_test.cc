// Glassbox's SAE math against sae_lens on the committed fixtures (tests/fixtures/saes, made by
// tests/reference/make_sae_fixtures.py with sae_lens itself): every architecture, every
// normalisation mode, hook_z, bf16 weights, legacy configs and Gemma Scope npz files. Values must
// agree to fp32 rounding: ‖ours − sae_lens‖ / ‖sae_lens‖ ≤ 1e-5 per tensor.
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "base/safetensors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/engine/sae/sae.h"
#include "server/engine/sae/sae_loader.h"

namespace glassbox {
namespace {

using json = nlohmann::json;

constexpr double kTolerance = 1e-5;
const std::string kSaeDir = std::string(GLASSBOX_FIXTURES_DIR) + "/saes";

json Manifest() {
  std::ifstream in(kSaeDir + "/manifest.json");
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str());
}

std::vector<std::string> CaseNames() {
  std::vector<std::string> names;
  const json manifest = Manifest();  // a local: the loop must not outlive the parsed document
  for (const json& c : manifest["cases"]) names.push_back(c["name"].get<std::string>());
  return names;
}

struct Expected {
  std::map<std::string, Tensor> tensors;
  std::vector<FeatureEdit> edits;
  const Tensor& operator[](const std::string& name) const {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      ADD_FAILURE() << "expected file has no tensor " << name;
      static const Tensor empty;
      return empty;
    }
    return it->second;
  }
};

Expected LoadExpected(const std::string& name) {
  Expected out;
  auto file = SafetensorsFile::Open(kSaeDir + "/expected/" + name + ".safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return out;
  for (const TensorView& view : (*file)->tensors()) {
    EXPECT_EQ(view.dtype, SafetensorsDtype::kF32);
    Tensor t = Tensor::EmptyHost(DType::kF32, Shape(view.shape.begin(), view.shape.end()));
    std::memcpy(t.raw_data(), view.bytes.data(), view.bytes.size());
    out.tensors.emplace(view.name, std::move(t));
  }
  for (const json& e : json::parse((*file)->metadata().at("edits"))) {
    FeatureEdit edit;
    const std::string kind = e["kind"];
    edit.kind = kind == "zero"    ? FeatureEditKind::kZero
                : kind == "clamp" ? FeatureEditKind::kClamp
                : kind == "scale" ? FeatureEditKind::kScale
                                  : FeatureEditKind::kAdd;
    edit.features = e["features"].get<std::vector<int32_t>>();
    edit.value = e["value"].get<float>();
    edit.tokens = e["tokens"].get<std::vector<int64_t>>();
    out.edits.push_back(std::move(edit));
  }
  return out;
}

// ‖a − b‖ / ‖b‖ over equal element counts (shapes may differ by hook_z flattening).
::testing::AssertionResult Close(const Tensor& actual, const Tensor& expected,
                                 const std::string& what) {
  if (!actual.defined()) return ::testing::AssertionFailure() << what << ": not produced";
  if (actual.numel() != expected.numel()) {
    return ::testing::AssertionFailure() << what << ": " << actual.DebugString() << " vs expected "
                                         << expected.DebugString();
  }
  double diff = 0.0, ref = 0.0, max_abs = 0.0;
  const float* a = actual.data<float>();
  const float* b = expected.data<float>();
  for (int64_t i = 0; i < actual.numel(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    diff += d * d;
    ref += static_cast<double>(b[i]) * b[i];
    max_abs = std::max(max_abs, std::abs(d));
  }
  const double rel = ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff);
  if (rel <= kTolerance) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": relative error " << rel << " (max abs "
                                       << max_abs << ")";
}

class SaeParityTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    const json manifest = Manifest();
    for (const json& c : manifest["cases"]) {
      if (c["name"] == GetParam()) entry_ = c;
    }
    ASSERT_FALSE(entry_.is_null());
    SaeLoadOptions options;
    const json& o = entry_["options"];
    if (o.contains("norm_scaling_factor")) options.norm_scaling_factor = o["norm_scaling_factor"];
    if (o.contains("hook_name")) options.hook_name = o["hook_name"];
    if (o.contains("model_name")) options.model_name = o["model_name"];
    if (o.contains("gemma_scope_embedding")) options.gemma_scope_embedding = o["gemma_scope_embedding"];
    auto sae = LoadSae(kSaeDir + "/" + entry_["path"].get<std::string>(), options);
    ASSERT_TRUE(sae.ok()) << sae.status();
    sae_ = std::move(*sae);
    expected_ = LoadExpected(GetParam());
    x_ = expected_["x"];
  }

  json entry_;
  std::unique_ptr<Sae> sae_;
  Expected expected_;
  Tensor x_;
};

TEST_P(SaeParityTest, ConfigMatchesWhatSaeLensLoaded) {
  EXPECT_EQ(SaeArchitectureName(sae_->config().architecture),
            entry_["architecture"].get<std::string>());
  EXPECT_EQ(SaeNormalizationName(sae_->config().normalization),
            entry_["normalize_activations"].get<std::string>());
  EXPECT_EQ(sae_->d_in(), 32);
  EXPECT_EQ(sae_->d_sae(), 96);
  EXPECT_FALSE(sae_->config().hook_name.empty());
}

TEST_P(SaeParityTest, EncodeDecodeReconstruct) {
  SaeNormState norm;
  auto acts = sae_->Encode(x_, &norm);
  ASSERT_TRUE(acts.ok()) << acts.status();
  EXPECT_EQ(acts->shape(), expected_["acts_post"].shape());
  EXPECT_TRUE(Close(*acts, expected_["acts_post"], "encode"));

  // Features that fire must be exactly sae_lens's (the fixtures keep every decision away from
  // its boundary).
  const float* a = acts->data<float>();
  const float* e = expected_["acts_post"].data<float>();
  for (int64_t i = 0; i < acts->numel(); ++i) {
    ASSERT_EQ(a[i] != 0.0f, e[i] != 0.0f) << "feature " << i % 96 << " of token " << i / 96;
  }

  auto decoded = sae_->Decode(expected_["acts_post"], &norm);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(Close(*decoded, expected_["reconstruct"], "decode(acts)"));

  auto decoded_random = sae_->Decode(expected_["decode_in"], &norm);
  ASSERT_TRUE(decoded_random.ok()) << decoded_random.status();
  EXPECT_TRUE(Close(*decoded_random, expected_["decode_out"], "decode(random sparse acts)"));

  SaeReconstructionStats stats;
  auto recon = sae_->Reconstruct(x_, &stats);
  ASSERT_TRUE(recon.ok()) << recon.status();
  EXPECT_EQ(recon->shape(), x_.shape());
  EXPECT_TRUE(Close(*recon, expected_["reconstruct"], "reconstruct"));
  const float* ref_stats = expected_["stats"].data<float>();
  EXPECT_NEAR(stats.explained_variance, ref_stats[0], 1e-4 * std::max(1.0f, std::abs(ref_stats[0])));
  EXPECT_NEAR(stats.mean_l0, ref_stats[1], 1e-5);  // the reference is stored as f32
  EXPECT_NEAR(stats.mse, ref_stats[2], 1e-4 * ref_stats[2]);
  EXPECT_EQ(stats.tokens, 10);
}

TEST_P(SaeParityTest, SparseEncodeAndDecode) {
  SaeNormState norm;
  auto sparse = sae_->EncodeSparse(x_, {}, &norm);
  ASSERT_TRUE(sparse.ok()) << sparse.status();
  ASSERT_EQ(sparse->rows(), 10);
  EXPECT_EQ(sparse->leading_shape, (Shape{2, 5}));
  const Tensor& dense = expected_["acts_post"];
  for (int64_t t = 0; t < 10; ++t) {
    std::vector<int32_t> want;
    for (int32_t f = 0; f < 96; ++f) {
      if (dense.data<float>()[t * 96 + f] != 0.0f) want.push_back(f);
    }
    std::vector<int32_t> got(sparse->indices.begin() + sparse->row_offsets[t],
                             sparse->indices.begin() + sparse->row_offsets[t + 1]);
    EXPECT_EQ(got, want) << "token " << t;
  }
  auto decoded = sae_->DecodeSparse(*sparse, &norm);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_TRUE(Close(*decoded, expected_["reconstruct"], "decode(sparse acts)"));

  // Top-5 per token: the five largest, by descending value.
  auto top = sae_->EncodeSparse(x_, {.top_k = 5});
  ASSERT_TRUE(top.ok()) << top.status();
  for (int64_t t = 0; t < 10; ++t) {
    std::vector<float> row(dense.data<float>() + t * 96, dense.data<float>() + (t + 1) * 96);
    std::vector<int32_t> order(96);
    for (int32_t f = 0; f < 96; ++f) order[f] = f;
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return row[a] > row[b]; });
    const int64_t begin = top->row_offsets[t], end = top->row_offsets[t + 1];
    ASSERT_EQ(end - begin, 5) << "token " << t;
    for (int64_t i = 0; i < 5; ++i) {
      EXPECT_EQ(top->indices[begin + i], order[i]) << "token " << t << " rank " << i;
      EXPECT_NEAR(top->values[begin + i], row[order[i]], 1e-5 * std::max(1.0f, row[order[i]]));
    }
  }
}

TEST_P(SaeParityTest, SpliceWithoutEdits) {
  auto plain = sae_->Splice(x_, {});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE(Close(plain->output, expected_["reconstruct"], "splice without error term"));

  SpliceOptions options;
  options.use_error_term = true;
  auto with_error = sae_->Splice(x_, options);
  ASSERT_TRUE(with_error.ok()) << with_error.status();
  EXPECT_EQ(with_error->output.shape(), x_.shape());
  EXPECT_TRUE(Close(with_error->output, expected_["output_error"], "splice with error term"));
  EXPECT_TRUE(Close(with_error->output, x_, "splice with error term vs x"));
}

TEST_P(SaeParityTest, SpliceWithEditsAndCaptures) {
  SpliceOptions options;
  options.edits = expected_.edits;
  options.use_error_term = true;
  options.capture.fill(true);
  auto result = sae_->Splice(x_, options);
  ASSERT_TRUE(result.ok()) << result.status();
  for (SaeHook hook : {SaeHook::kInput, SaeHook::kActsPre, SaeHook::kActsPost, SaeHook::kRecons,
                       SaeHook::kError, SaeHook::kOutput}) {
    const std::string name(SaeHookName(hook));
    const Tensor& want = expected_["edited." + name];
    ASSERT_TRUE(result->Captured(hook).defined()) << name;
    EXPECT_EQ(result->Captured(hook).shape(), want.shape()) << name;
    EXPECT_TRUE(Close(result->Captured(hook), want, name));
  }
  EXPECT_TRUE(Close(result->output, expected_["edited.hook_sae_output"], "output"));

  options.use_error_term = false;
  options.capture.fill(false);
  auto no_error = sae_->Splice(x_, options);
  ASSERT_TRUE(no_error.ok()) << no_error.status();
  EXPECT_TRUE(Close(no_error->output, expected_["edited_no_error.output"], "edited, no error term"));
  EXPECT_FALSE(no_error->Captured(SaeHook::kActsPost).defined());
}

TEST_P(SaeParityTest, SteeringVectorIsScaledDecoderRow) {
  auto direction = sae_->DecoderDirection(7, 2.5f);
  ASSERT_TRUE(direction.ok()) << direction.status();
  ASSERT_EQ(direction->shape(), (Shape{32}));
  const float* w = sae_->weights().W_dec.data<float>() + 7 * 32;
  for (int j = 0; j < 32; ++j) EXPECT_FLOAT_EQ(direction->data<float>()[j], 2.5f * w[j]);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SaeParityTest, ::testing::ValuesIn(CaseNames()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace glassbox
