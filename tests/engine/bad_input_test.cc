// Bad checkpoints and bad requests: each is a precise status with a message that says what to
// fix, never a crash.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "base/safetensors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/engine/capture.h"
#include "server/engine/transformer.h"
#include "tests/util/test_util.h"

namespace glassbox {
namespace {

namespace fs = std::filesystem;
using ::glassbox::testing::FixturePath;
using ::testing::HasSubstr;

absl::StatusOr<std::unique_ptr<Transformer>> Load(const std::string& dir) {
  return Transformer::Load(dir, std::make_shared<CpuBackend>());
}

// A copy of a fixture model whose checkpoint is rewritten by `edit` (which may drop or replace
// tensors) and whose config.json is passed through `edit_config`.
class BrokenModel {
 public:
  BrokenModel(const std::string& fixture,
              const std::function<void(std::vector<TensorToWrite>&, std::vector<std::vector<std::byte>>&)>& edit,
              const std::function<void(std::string&)>& edit_config = nullptr) {
    dir_ = fs::path(::testing::TempDir()) /
           (fixture + "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const std::string src = FixturePath("models/" + fixture);
    std::ifstream in(src + "/config.json");
    std::string config((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (edit_config) edit_config(config);
    std::ofstream(dir_ / "config.json") << config;
    auto checkpoint = SafetensorsCheckpoint::Open(src);
    EXPECT_TRUE(checkpoint.ok()) << checkpoint.status();
    std::vector<TensorToWrite> tensors;
    std::vector<std::vector<std::byte>> storage;
    storage.reserve(1000);
    for (const std::string& name : checkpoint->Names()) {
      const TensorView* v = checkpoint->Find(name);
      tensors.push_back({v->name, v->dtype, v->shape, v->bytes});
    }
    if (edit) edit(tensors, storage);
    EXPECT_TRUE(WriteSafetensors((dir_ / "model.safetensors").string(), tensors).ok());
  }
  std::string dir() const { return dir_.string(); }

 private:
  fs::path dir_;
};

void Drop(std::vector<TensorToWrite>& tensors, const std::string& name) {
  std::erase_if(tensors, [&](const TensorToWrite& t) { return t.name == name; });
}

TEST(BadCheckpoint, MissingDirectoryIsNotFound) {
  auto model = Load("/nonexistent/model");
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(model.status().message(), HasSubstr("config.json"));
}

TEST(BadCheckpoint, MissingTensorIsNamed) {
  BrokenModel broken("tiny-gpt2", [](auto& tensors, auto&) { Drop(tensors, "transformer.h.1.mlp.c_fc.bias"); });
  auto model = Load(broken.dir());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("h.1.mlp.c_fc.bias"));
}

// Each family's own tensors are required and named when missing: the ones no other family has.
TEST(BadCheckpoint, MissingFamilyTensorsAreNamed) {
  const std::pair<std::string, std::string> cases[] = {
      {"tiny-pythia", "gpt_neox.layers.1.attention.query_key_value.weight"},
      {"tiny-pythia", "embed_out.weight"},
      {"tiny-qwen3", "model.layers.0.self_attn.k_norm.weight"},
      {"tiny-phi3", "model.layers.1.mlp.gate_up_proj.weight"},
      {"tiny-olmo2", "model.layers.0.post_feedforward_layernorm.weight"},
      {"tiny-olmo2", "model.layers.1.self_attn.q_norm.weight"},
      {"tiny-gemma2", "model.layers.1.pre_feedforward_layernorm.weight"},
      {"tiny-gemma2", "model.layers.0.post_attention_layernorm.weight"},
      {"tiny-gptj", "transformer.h.1.attn.q_proj.weight"},
      {"tiny-gptj", "lm_head.bias"},
      {"tiny-qwen2", "model.layers.0.self_attn.v_proj.bias"},
      {"tiny-gemma3", "model.layers.1.self_attn.q_norm.weight"},
      {"tiny-gemma3", "model.layers.0.post_feedforward_layernorm.weight"},
  };
  for (const auto& [fixture, tensor] : cases) {
    SCOPED_TRACE(tensor);
    BrokenModel broken(fixture, [&](auto& tensors, auto&) { Drop(tensors, tensor); });
    auto model = Load(broken.dir());
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(model.status().message(), HasSubstr("'" + tensor + "'"));
  }
}

TEST(BadCheckpoint, WrongShapeIsNamedWithBothShapes) {
  BrokenModel broken("tiny-llama", [](auto& tensors, auto& storage) {
    for (auto& t : tensors) {
      if (t.name == "model.layers.0.self_attn.k_proj.weight") {
        storage.emplace_back(t.bytes.begin(), t.bytes.begin() + 16 * 64 * 4);
        t.shape = {16, 64};
        t.bytes = storage.back();
      }
    }
  });
  auto model = Load(broken.dir());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("model.layers.0.self_attn.k_proj.weight"));
  EXPECT_THAT(model.status().message(), HasSubstr("[16,64]"));
  EXPECT_THAT(model.status().message(), HasSubstr("[32,64]"));
}

TEST(BadCheckpoint, IntegerWeightsAreRejected) {
  BrokenModel broken("tiny-gpt2", [](auto& tensors, auto&) {
    for (auto& t : tensors) {
      if (t.name == "transformer.ln_f.weight") t.dtype = SafetensorsDtype::kI32;
    }
  });
  auto model = Load(broken.dir());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("ln_f.weight"));
}

// HF checkpoints are saved with and without the "transformer." / "model." prefixes.
TEST(Checkpoint, NamesWithoutPrefixLoadTheSameModel) {
  for (const std::string fixture : {"tiny-gpt2", "tiny-llama"}) {
    BrokenModel stripped(fixture, [](auto& tensors, auto&) {
      for (auto& t : tensors) {
        for (const std::string prefix : {"transformer.", "model."}) {
          if (t.name.starts_with(prefix)) t.name = t.name.substr(prefix.size());
        }
      }
    });
    auto original = Load(FixturePath("models/" + fixture));
    auto renamed = Load(stripped.dir());
    ASSERT_TRUE(original.ok() && renamed.ok()) << renamed.status();
    ForwardInput input{.tokens = Tensor::FromHost(std::vector<int32_t>{5, 6, 7}, {1, 3})};
    HookPlan plan_a((*original)->hooks()), plan_b((*renamed)->hooks());
    auto a = (*original)->Forward(input, plan_a, nullptr, {});
    auto b = (*renamed)->Forward(input, plan_b, nullptr, {});
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(std::memcmp(a->logits.raw_data(), b->logits.raw_data(), a->logits.nbytes()), 0);
  }
}

TEST(BadCheckpoint, TruncatedSafetensorsIsRejected) {
  BrokenModel broken("tiny-gpt2", nullptr);
  const fs::path file = fs::path(broken.dir()) / "model.safetensors";
  fs::resize_file(file, fs::file_size(file) - 100);
  auto model = Load(broken.dir());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("model.safetensors"));
}

// A multimodal Gemma-3 (Gemma3ForConditionalGeneration) is served by its text tower: the
// text_config is read and the weights under language_model.model.; the vision tower and the
// projector are ignored. Laid out as transformers saves one, from tiny-gemma3's own weights, it
// gives tiny-gemma3's logits exactly.
TEST(Gemma3Multimodal, TextTowerServesTheTextModel) {
  BrokenModel multimodal(
      "tiny-gemma3",
      [](auto& tensors, auto& storage) {
        for (auto& t : tensors) {
          t.name = "language_model." + t.name;  // model.layers... -> language_model.model.layers...
        }
        storage.emplace_back(std::vector<std::byte>(4 * 8 * 3));
        tensors.push_back({"vision_tower.vision_model.embeddings.patch_embedding.weight",
                           SafetensorsDtype::kF32, {8, 3}, storage.back()});
        storage.emplace_back(std::vector<std::byte>(4 * 16));
        tensors.push_back({"multi_modal_projector.mm_soft_emb_norm.weight", SafetensorsDtype::kF32,
                           {16}, storage.back()});
      },
      [](std::string& config) {
        config = R"({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
                     "tie_word_embeddings": true, "vision_config": {"hidden_size": 8},
                     "text_config": )" + config + "}";
      });
  auto tower = Load(multimodal.dir());
  ASSERT_TRUE(tower.ok()) << tower.status();
  EXPECT_TRUE((*tower)->config().text_tower);
  auto text = Load(FixturePath("models/tiny-gemma3"));
  ASSERT_TRUE(text.ok()) << text.status();
  const ForwardInput input{.tokens = Tensor::FromHost(std::vector<int32_t>{5, 17, 42, 99, 7}, {1, 5})};
  HookPlan tower_plan((*tower)->hooks()), text_plan((*text)->hooks());
  auto a = (*tower)->Forward(input, tower_plan, nullptr, {.logits = LogitsMode::kAll});
  auto b = (*text)->Forward(input, text_plan, nullptr, {.logits = LogitsMode::kAll});
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  ASSERT_EQ(a->logits.nbytes(), b->logits.nbytes());
  EXPECT_EQ(std::memcmp(a->logits.raw_data(), b->logits.raw_data(), a->logits.nbytes()), 0);

  BrokenModel no_text("tiny-gemma3", nullptr, [](std::string& config) {
    config = R"({"model_type": "gemma3"})";
  });
  auto refused = Load(no_text.dir());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("text_config"));
}

TEST(BadCheckpoint, UnknownModelTypeIsUnimplemented) {
  BrokenModel broken("tiny-gpt2", nullptr, [](std::string& config) {
    config.replace(config.find("\"gpt2\""), 6, "\"mamba\"");
  });
  auto model = Load(broken.dir());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(model.status().message(), HasSubstr("mamba"));
  EXPECT_THAT(model.status().message(), HasSubstr("gpt2, gpt_neox, gptj, llama"));
}

TEST(BadCheckpoint, MalformedConfigIsInvalid) {
  BrokenModel broken("tiny-gpt2", nullptr, [](std::string& config) { config.resize(config.size() / 2); });
  auto model = Load(broken.dir());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("not valid JSON"));
}

class BadRequestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = Load(FixturePath("models/tiny-gpt2"));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
  }
  absl::Status Run(const std::vector<int32_t>& ids, ForwardOptions options = {},
                   const std::vector<int32_t>& mask = {}) {
    ForwardInput input{.tokens = Tensor::FromHost(ids, {1, static_cast<int64_t>(ids.size())})};
    if (!mask.empty()) input.attention_mask = Tensor::FromHost(mask, {1, static_cast<int64_t>(mask.size())});
    HookPlan plan(model_->hooks());
    return model_->Forward(input, plan, nullptr, options).status();
  }
  std::unique_ptr<Transformer> model_;
};

TEST_F(BadRequestTest, TokenIdOutOfRange) {
  absl::Status s = Run({1, 2, 300});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("token id 300 at [0][2]"));
  EXPECT_EQ(Run({1, -1}).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(BadRequestTest, SequenceLongerThanContext) {
  absl::Status s = Run(std::vector<int32_t>(33, 5));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("33 tokens; the model's context is 32"));
  EXPECT_TRUE(Run(std::vector<int32_t>(32, 5)).ok());
}

TEST_F(BadRequestTest, MaskMustBeBinary) {
  EXPECT_EQ(Run({1, 2}, {}, {1, 2}).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(BadRequestTest, StopAtLayerExcludesOutputs) {
  EXPECT_EQ(Run({1, 2}, {.stop_at_layer = 1}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Run({1, 2}, {.logits = LogitsMode::kNone, .stop_at_layer = 1}).ok());
  EXPECT_EQ(Run({1, 2}, {.logits = LogitsMode::kNone, .stop_at_layer = 3}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(BadRequestTest, UnknownHookListsValidNames) {
  HookPlan plan(model_->hooks());
  absl::Status s = plan.Capture("blocks.0.attn.hook_rot_q");  // GPT-2 has no rotary hooks
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("blocks.0.attn.hook_pattern"));
  EXPECT_EQ(plan.Capture("blocks.7.hook_resid_post").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(plan.Capture("nothing.*").code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(BadRequestTest, StopAtLayerCapturesOnlyEarlierHooks) {
  HookPlan plan(model_->hooks());
  ASSERT_TRUE(plan.Capture("blocks.*.hook_resid_pre").ok());
  testing::CollectingSink sink;
  ForwardInput input{.tokens = Tensor::FromHost(std::vector<int32_t>{1, 2, 3}, {1, 3})};
  ASSERT_TRUE(model_->Forward(input, plan, &sink, {.logits = LogitsMode::kNone, .stop_at_layer = 1}).ok());
  EXPECT_EQ(sink.order, std::vector<std::string>{"blocks.0.hook_resid_pre"});
}

// Positions at the ends of int32 are refused like any other out of range (INT32_MIN once
// passed the check through a 32-bit negation and read before the capture's buffer; request_fuzz
// found it).
TEST_F(BadRequestTest, CapturePositionsAtTheEndsOfInt32AreOutsideTheInputs) {
  for (const int32_t p : {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max(),
                          -4, 3}) {
    SCOPED_TRACE(p);
    auto resolved = ResolveCaptures(model_->hooks(),
                                    {{.hook = "blocks.0.hook_resid_post", .positions = {p}}},
                                    /*sequence_lengths=*/{3}, /*padded_length=*/3);
    EXPECT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(resolved.status().message(), HasSubstr("position " + std::to_string(p)));
  }
}

TEST(Glob, MatchesTransformerLensStyleNames) {
  EXPECT_TRUE(GlobMatch("blocks.*.hook_resid_post", "blocks.11.hook_resid_post"));
  EXPECT_FALSE(GlobMatch("blocks.*.hook_resid_post", "blocks.11.hook_resid_pre"));
  EXPECT_TRUE(GlobMatch("blocks.?.attn.*", "blocks.3.attn.hook_z"));
  EXPECT_FALSE(GlobMatch("blocks.?.attn.*", "blocks.13.attn.hook_z"));
  EXPECT_TRUE(GlobMatch("*", "hook_embed"));
  EXPECT_FALSE(GlobMatch("", "hook_embed"));
}

}  // namespace
}  // namespace glassbox
