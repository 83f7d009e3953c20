#include "server/model/model_config.h"

#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace glassbox {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ModelConfig, Gpt2Defaults) {
  auto c = ParseModelConfig(R"({"model_type":"gpt2","n_layer":2,"n_embd":64,"n_head":4,
                               "n_positions":32,"vocab_size":300,"n_inner":null})", "t");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->d_mlp, 256);
  EXPECT_EQ(c->d_head, 16);
  EXPECT_EQ(c->act, Activation::kGeluTanh);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c->attn_scale, 0.25);
}

// transformers 4 writes rope_theta / rope_scaling; transformers 5 writes rope_parameters.
TEST(ModelConfig, RopeScalingInBothLayouts) {
  auto v5 = ParseModelConfig(
      ReadFile(std::string(GLASSBOX_FIXTURES_DIR) + "/models/tiny-llama-variant/config.json"), "v5");
  auto v4 = ParseModelConfig(
      ReadFile(std::string(GLASSBOX_FIXTURES_DIR) + "/configs/tiny-llama-variant.legacy-rope.config.json"),
      "v4");
  ASSERT_TRUE(v5.ok()) << v5.status();
  ASSERT_TRUE(v4.ok()) << v4.status();
  for (const ModelConfig* c : {&*v5, &*v4}) {
    EXPECT_EQ(c->rope_scaling.kind, RopeScaling::Kind::kLlama3);
    EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
    EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 64);
    EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
    EXPECT_EQ(c->n_kv_heads, 1);
    EXPECT_TRUE(c->qkv_bias && c->o_bias && c->mlp_bias && c->tie_word_embeddings);
  }
}

TEST(ModelConfig, Qwen2HasQkvBiasOnly) {
  auto c = ParseModelConfig(R"({"model_type":"qwen2","num_hidden_layers":2,"hidden_size":64,
      "num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":96,"vocab_size":10,
      "max_position_embeddings":64,"use_sliding_window":false,"sliding_window":32})", "t");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_FALSE(c->o_bias);
  EXPECT_EQ(c->sliding_window, 0);
}

TEST(ModelConfig, ErrorsNameTheFileAndKey) {
  auto missing = ParseModelConfig(R"({"model_type":"llama","hidden_size":64})", "dir/config.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("dir/config.json"));
  EXPECT_THAT(missing.status().message(), HasSubstr("num_hidden_layers"));

  auto wrong_type = ParseModelConfig(R"({"model_type":"gpt2","n_layer":"2"})", "c");
  EXPECT_THAT(wrong_type.status().message(), HasSubstr("\"n_layer\" must be an integer"));

  auto bad_heads = ParseModelConfig(R"({"model_type":"llama","num_hidden_layers":1,"hidden_size":64,
      "num_attention_heads":4,"num_key_value_heads":3,"intermediate_size":8,"vocab_size":10,
      "max_position_embeddings":8})", "c");
  EXPECT_THAT(bad_heads.status().message(), HasSubstr("num_key_value_heads"));

  auto dynamic = ParseModelConfig(R"({"model_type":"llama","num_hidden_layers":1,"hidden_size":64,
      "num_attention_heads":4,"intermediate_size":8,"vocab_size":10,"max_position_embeddings":8,
      "rope_scaling":{"type":"dynamic","factor":2.0}})", "c");
  EXPECT_EQ(dynamic.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(dynamic.status().message(), HasSubstr("dynamic"));

  auto act = ParseModelConfig(R"({"model_type":"gpt2","n_layer":1,"n_embd":8,"n_head":2,
      "n_positions":8,"vocab_size":10,"activation_function":"mish"})", "c");
  EXPECT_THAT(act.status().message(), HasSubstr("mish"));

  EXPECT_EQ(ParseModelConfig("[1,2]", "c").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseModelConfig("", "c").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace glassbox
