#include "server/model/model_config.h"

#include <cmath>
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

// Pythia's config.json as transformers 4 wrote it (rotary_pct, rotary_emb_base at the top level);
// the transformers 5 layout (rope_parameters.partial_rotary_factor) is the tiny-pythia fixture's.
TEST(ModelConfig, GptNeoxInBothLayouts) {
  auto v4 = ParseModelConfig(R"({"model_type":"gpt_neox","num_hidden_layers":6,"hidden_size":512,
      "num_attention_heads":8,"intermediate_size":2048,"vocab_size":50304,
      "max_position_embeddings":2048,"rotary_pct":0.25,"rotary_emb_base":10000,
      "use_parallel_residual":true,"hidden_act":"gelu","layer_norm_eps":1e-05,
      "tie_word_embeddings":false})", "pythia-70m");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(v4->d_head, 64);
  EXPECT_EQ(v4->rotary_dim, 16);
  EXPECT_DOUBLE_EQ(v4->rope_theta, 10000.0);
  EXPECT_TRUE(v4->parallel_attn_mlp);
  EXPECT_EQ(v4->act, Activation::kGeluExact);
  EXPECT_EQ(v4->norm, NormKind::kLayerNorm);
  EXPECT_TRUE(v4->qkv_bias && v4->o_bias && v4->mlp_bias);
  EXPECT_FALSE(v4->tie_word_embeddings);

  auto v5 = ParseModelConfig(
      ReadFile(std::string(GLASSBOX_FIXTURES_DIR) + "/models/tiny-pythia-seq/config.json"), "v5");
  ASSERT_TRUE(v5.ok()) << v5.status();
  EXPECT_FALSE(v5->parallel_attn_mlp);
  EXPECT_EQ(v5->d_head, 32);
  EXPECT_EQ(v5->rotary_dim, 16);
  EXPECT_DOUBLE_EQ(v5->rope_theta, 50000.0);
  EXPECT_FALSE(v5->qkv_bias || v5->o_bias);

  auto odd = ParseModelConfig(R"({"model_type":"gpt_neox","num_hidden_layers":1,"hidden_size":64,
      "num_attention_heads":4,"intermediate_size":8,"vocab_size":10,"max_position_embeddings":8,
      "rotary_pct":0.1})", "c");
  EXPECT_EQ(odd.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(odd.status().message(), HasSubstr("rotary_pct"));
  auto zero = ParseModelConfig(R"({"model_type":"gpt_neox","num_hidden_layers":1,"hidden_size":64,
      "num_attention_heads":4,"intermediate_size":8,"vocab_size":10,"max_position_embeddings":8,
      "rotary_pct":0})", "c");
  EXPECT_THAT(zero.status().message(), HasSubstr("must be in (0, 1]"));
}

TEST(ModelConfig, Qwen3HasQkNormAndExplicitHeadDim) {
  auto c = ParseModelConfig(
      ReadFile(std::string(GLASSBOX_FIXTURES_DIR) + "/models/tiny-qwen3/config.json"), "qwen3");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->qk_norm, QkNorm::kPerHead);
  EXPECT_EQ(c->d_head, 24);  // not hidden_size / num_attention_heads
  EXPECT_EQ(c->rotary_dim, 24);
  EXPECT_FALSE(c->qkv_bias || c->o_bias || c->mlp_bias);
  EXPECT_EQ(c->sliding_window, 0);
  EXPECT_TRUE(c->tie_word_embeddings);
}

TEST(ModelConfig, GptjIsParallelWithAdjacentPairRotaryAndAnUnembedBias) {
  auto c = ParseModelConfig(
      ReadFile(std::string(GLASSBOX_FIXTURES_DIR) + "/models/tiny-gptj/config.json"), "gptj");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->norm, NormKind::kLayerNorm);
  EXPECT_TRUE(c->parallel_attn_mlp);
  EXPECT_TRUE(c->rotary_adjacent_pairs);
  EXPECT_EQ(c->d_head, 16);
  EXPECT_EQ(c->rotary_dim, 8);
  EXPECT_EQ(c->d_mlp, 96);
  EXPECT_TRUE(c->unembed_bias);
  EXPECT_FALSE(c->qkv_bias || c->o_bias);
  EXPECT_TRUE(c->mlp_bias);
  EXPECT_FALSE(c->tie_word_embeddings);

  const std::string base = R"("model_type":"gptj","n_layer":2,"n_embd":64,"n_head":4,
      "vocab_size":10,"n_positions":64)";
  auto missing = ParseModelConfig("{" + base + "}", "c");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("\"rotary_dim\" is required"));
  auto odd = ParseModelConfig("{" + base + R"(,"rotary_dim":7})", "c");
  EXPECT_THAT(odd.status().message(), HasSubstr("must be even and at most the head size 16"));
  auto wide = ParseModelConfig("{" + base + R"(,"rotary_dim":32})", "c");
  EXPECT_THAT(wide.status().message(), HasSubstr("got 32"));
  auto full = ParseModelConfig("{" + base + R"(,"rotary_dim":16})", "c");
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->d_mlp, 256);  // n_inner absent: 4 · n_embd
}

TEST(ModelConfig, Gemma3HasTwoRopeBasesAndAWindowPattern) {
  auto c = ParseModelConfig(
      ReadFile(std::string(GLASSBOX_FIXTURES_DIR) + "/models/tiny-gemma3/config.json"), "gemma3");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->qk_norm, QkNorm::kPerHead);
  EXPECT_TRUE(c->norm_weight_offset);
  EXPECT_EQ(c->norm_placement, NormPlacement::kPreAndPost);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(c->rope_local_theta, 1e4);
  EXPECT_EQ(c->WindowOf(0), 4);
  EXPECT_EQ(c->WindowOf(1), 0);
  EXPECT_EQ(c->attn_softcap, 0);
  EXPECT_EQ(c->final_softcap, 0);
  EXPECT_DOUBLE_EQ(c->attn_scale, 1 / std::sqrt(20.0));

  // transformers 4's layout: the global base and scaling at the top level, the local base beside
  // them, the pattern instead of layer_types (every sixth layer global by default).
  const std::string base = R"("model_type":"gemma3_text","num_hidden_layers":7,"hidden_size":64,
      "num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,"intermediate_size":96,
      "vocab_size":10,"max_position_embeddings":64,"sliding_window":8)";
  auto v4 = ParseModelConfig("{" + base + R"(,"rope_theta":1000000.0,"rope_local_base_freq":10000.0,
      "rope_scaling":{"rope_type":"linear","factor":8.0}})", "v4");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_DOUBLE_EQ(v4->rope_local_theta, 1e4);
  EXPECT_EQ(v4->rope_scaling.kind, RopeScaling::Kind::kLinear);
  for (int l = 0; l < 7; ++l) EXPECT_EQ(v4->WindowOf(l), l == 5 ? 0 : 8) << "layer " << l;

  auto one_entry = ParseModelConfig(
      "{" + base + R"(,"rope_parameters":{"rope_type":"default","rope_theta":10000.0}})", "c");
  EXPECT_EQ(one_entry.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(one_entry.status().message(), HasSubstr("\"sliding_attention\""));
  auto scaled_local = ParseModelConfig("{" + base + R"(,"rope_parameters":{
      "full_attention":{"rope_type":"default","rope_theta":1000000.0},
      "sliding_attention":{"rope_type":"linear","factor":2.0,"rope_theta":10000.0}}})", "c");
  EXPECT_THAT(scaled_local.status().message(), HasSubstr("scales only its global layers"));
}

TEST(ModelConfig, Qwen2HasQkvBiasesOnly) {
  auto c = ParseModelConfig(
      ReadFile(std::string(GLASSBOX_FIXTURES_DIR) + "/models/tiny-qwen2/config.json"), "qwen2");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_FALSE(c->o_bias || c->mlp_bias);
  EXPECT_EQ(c->n_kv_heads, 2);
  EXPECT_EQ(c->sliding_window, 0);
  EXPECT_FALSE(c->rotary_adjacent_pairs);
}

TEST(ModelConfig, Phi3PartialRotaryWindowAndLongRope) {
  const std::string base = R"("model_type":"phi3","num_hidden_layers":2,"hidden_size":64,
      "num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":96,"vocab_size":10,
      "max_position_embeddings":64)";
  auto v4 = ParseModelConfig("{" + base + R"(,"partial_rotary_factor":0.5,"sliding_window":32})", "v4");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(v4->rotary_dim, 8);
  EXPECT_EQ(v4->sliding_window, 32);
  EXPECT_FALSE(v4->qkv_bias || v4->o_bias || v4->mlp_bias);
  auto v5 = ParseModelConfig("{" + base + R"(,"rope_parameters":{"rope_type":"default",
      "rope_theta":10000.0,"partial_rotary_factor":0.75}})", "v5");
  ASSERT_TRUE(v5.ok()) << v5.status();
  EXPECT_EQ(v5->rotary_dim, 12);
  EXPECT_EQ(v5->sliding_window, 0);
  auto longrope = ParseModelConfig("{" + base + R"(,"rope_scaling":{"type":"longrope",
      "short_factor":[1.0],"long_factor":[1.0]}})", "c");
  EXPECT_EQ(longrope.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(longrope.status().message(), HasSubstr("longrope"));
}

TEST(ModelConfig, Olmo2HasPostNormsAndWholeQkNorm) {
  auto c = ParseModelConfig(
      ReadFile(std::string(GLASSBOX_FIXTURES_DIR) + "/models/tiny-olmo2/config.json"), "olmo2");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->norm_placement, NormPlacement::kPost);
  EXPECT_EQ(c->qk_norm, QkNorm::kWhole);
  EXPECT_EQ(c->norm, NormKind::kRmsNorm);
  EXPECT_FALSE(c->qkv_bias || c->o_bias || c->mlp_bias || c->tie_word_embeddings);
}

TEST(ModelConfig, Gemma2SoftCapsNormsAndAlternatingWindows) {
  auto c = ParseModelConfig(
      ReadFile(std::string(GLASSBOX_FIXTURES_DIR) + "/models/tiny-gemma2/config.json"), "gemma2");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->norm_placement, NormPlacement::kPreAndPost);
  EXPECT_TRUE(c->norm_weight_offset);
  EXPECT_EQ(c->act, Activation::kGeluTanh);
  EXPECT_TRUE(c->gated_mlp);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->qkv_bias || c->o_bias || c->mlp_bias);
  EXPECT_DOUBLE_EQ(c->embed_scale, 8.0);                       // sqrt(64)
  EXPECT_DOUBLE_EQ(c->attn_scale, 1.0 / std::sqrt(20.0));      // query_pre_attn_scalar
  EXPECT_EQ(c->d_head, 24);
  EXPECT_DOUBLE_EQ(c->attn_softcap, 2.0);
  EXPECT_DOUBLE_EQ(c->final_softcap, 15.0);
  EXPECT_EQ(c->WindowOf(0), 4);
  EXPECT_EQ(c->WindowOf(1), 0);

  // Without layer_types (transformers 4 configs): even layers slide.
  auto legacy = ParseModelConfig(R"({"model_type":"gemma2","num_hidden_layers":3,"hidden_size":64,
      "num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,"intermediate_size":96,
      "vocab_size":10,"max_position_embeddings":64,"sliding_window":8})", "g");
  ASSERT_TRUE(legacy.ok()) << legacy.status();
  EXPECT_EQ(legacy->WindowOf(0), 8);
  EXPECT_EQ(legacy->WindowOf(1), 0);
  EXPECT_EQ(legacy->WindowOf(2), 8);
  EXPECT_DOUBLE_EQ(legacy->attn_scale, 1.0 / 16.0);  // query_pre_attn_scalar defaults to 256
  EXPECT_DOUBLE_EQ(legacy->attn_softcap, 0.0);

  auto negative = ParseModelConfig(R"({"model_type":"gemma2","num_hidden_layers":1,"hidden_size":64,
      "num_attention_heads":4,"head_dim":16,"intermediate_size":96,"vocab_size":10,
      "max_position_embeddings":64,"final_logit_softcapping":-1})", "g/config.json");
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(negative.status().message(), HasSubstr("final_logit_softcapping"));
}

TEST(ModelConfig, SlidingWindowLayers) {
  const std::string base = R"("num_hidden_layers":3,"hidden_size":64,"num_attention_heads":4,
      "num_key_value_heads":2,"intermediate_size":96,"vocab_size":10,"max_position_embeddings":64)";
  auto mistral = ParseModelConfig(R"({"model_type":"mistral",)" + base + R"(,"sliding_window":4})", "m");
  ASSERT_TRUE(mistral.ok()) << mistral.status();
  for (int l = 0; l < 3; ++l) EXPECT_EQ(mistral->WindowOf(l), 4) << l;

  // Mistral's null window and Qwen2's use_sliding_window=false both mean full attention.
  auto none = ParseModelConfig(R"({"model_type":"mistral",)" + base + R"(,"sliding_window":null})", "m");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_EQ(none->WindowOf(0), 0);
  auto qwen_off = ParseModelConfig(
      R"({"model_type":"qwen2",)" + base + R"(,"sliding_window":4,"use_sliding_window":false})", "q");
  ASSERT_TRUE(qwen_off.ok()) << qwen_off.status();
  EXPECT_EQ(qwen_off->WindowOf(2), 0);

  // HF's Qwen rule without layer_types: layers from max_window_layers on slide.
  auto qwen = ParseModelConfig(R"({"model_type":"qwen2",)" + base +
                                   R"(,"sliding_window":4,"use_sliding_window":true,"max_window_layers":2})",
                               "q");
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  EXPECT_EQ(qwen->WindowOf(0), 0);
  EXPECT_EQ(qwen->WindowOf(1), 0);
  EXPECT_EQ(qwen->WindowOf(2), 4);

  // transformers 5 layer_types wins over the rule.
  auto typed = ParseModelConfig(R"({"model_type":"qwen3",)" + base + R"(,"head_dim":16,
      "sliding_window":4,"use_sliding_window":true,"max_window_layers":0,
      "layer_types":["full_attention","sliding_attention","full_attention"]})", "q");
  ASSERT_TRUE(typed.ok()) << typed.status();
  EXPECT_EQ(typed->WindowOf(0), 0);
  EXPECT_EQ(typed->WindowOf(1), 4);
  EXPECT_EQ(typed->WindowOf(2), 0);

  auto short_types = ParseModelConfig(R"({"model_type":"mistral",)" + base +
                                          R"(,"sliding_window":4,"layer_types":["full_attention"]})",
                                      "m/config.json");
  EXPECT_EQ(short_types.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(short_types.status().message(), HasSubstr("one type per layer (3)"));
  auto odd_type = ParseModelConfig(R"({"model_type":"mistral",)" + base + R"(,"sliding_window":4,
      "layer_types":["full_attention","chunked_attention","full_attention"]})", "m/config.json");
  EXPECT_EQ(odd_type.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(odd_type.status().message(), HasSubstr("\"chunked_attention\" at layer 1"));
}

TEST(ModelConfig, UnknownArchitecturesAreNamed) {
  auto c = ParseModelConfig(R"({"model_type":"mamba"})", "m/config.json");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(c.status().message(), HasSubstr("\"mamba\" is not supported"));
  EXPECT_THAT(c.status().message(), HasSubstr("gpt_neox"));
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
