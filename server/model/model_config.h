// Architecture traits read from a HuggingFace config.json. One generic transformer block is
// driven by these traits; there is no class per architecture.
#pragma once

#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "base/activation.h"

namespace glassbox {

enum class NormKind : uint8_t { kLayerNorm, kRmsNorm };
enum class PositionalKind : uint8_t { kLearned, kRotary };
enum class QkNorm : uint8_t { kNone, kPerHead, kWhole };
enum class NormPlacement : uint8_t { kPre, kPost, kPreAndPost };

// HF rope_scaling. Only the kinds whose frequencies do not depend on the sequence length.
struct RopeScaling {
  enum class Kind : uint8_t { kNone, kLinear, kLlama3 };
  Kind kind = Kind::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
};

struct ModelConfig {
  // As in config.json: "gpt2", "gpt_neox", "gptj", "llama", "mistral", "qwen2", "qwen3",
  // "phi3", "olmo2", "gemma2", "gemma3_text" (Gemma3ForCausalLM).
  std::string model_type;
  int64_t n_layers = 0;
  int64_t d_model = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t d_head = 0;
  int64_t d_mlp = 0;
  int64_t vocab_size = 0;
  int64_t n_ctx = 0;  // longest sequence the model accepts (n_positions / max_position_embeddings)

  NormKind norm = NormKind::kLayerNorm;
  double norm_eps = 1e-5;
  // Gemma's RMSNorm multiplies by (1 + weight); the loader folds the 1 into every norm weight,
  // so the engine's norms are the plain ones.
  bool norm_weight_offset = false;

  PositionalKind positional = PositionalKind::kLearned;
  double rope_theta = 10000.0;
  int64_t rotary_dim = 0;  // features per head that rotate (d_head unless partial rotary)
  // GPT-J rotates features (2j, 2j + 1) together (rotate_every_two; TransformerLens's
  // rotary_adjacent_pairs); every other family (j, j + rotary_dim / 2).
  bool rotary_adjacent_pairs = false;
  RopeScaling rope_scaling;
  // Gemma-3: the sliding-window layers rotate with their own base and no scaling (rope_theta and
  // rope_scaling are the global layers'); 0 = every layer uses rope_theta.
  double rope_local_theta = 0;

  Activation act = Activation::kGeluTanh;
  bool gated_mlp = false;  // act(x·W_gate) * (x·W_in), as Llama
  bool qkv_bias = true;
  bool o_bias = true;
  bool mlp_bias = true;
  bool tie_word_embeddings = false;
  bool unembed_bias = false;  // GPT-J's lm_head has a bias (TransformerLens's b_U)
  // RMSNorm of q and k after the projection and before rotary: over each head's d_head features
  // (Qwen3, weights [d_head]) or over the whole projection (OLMo-2, weights [n_heads·d_head] and
  // [n_kv_heads·d_head]).
  QkNorm qk_norm = QkNorm::kNone;
  // Where the block's norms sit: before attention and the MLP (GPT-2, Llama); after them, on
  // their outputs before the residual add (OLMo-2; TransformerLens still calls them ln1, ln2);
  // or both (Gemma-2: ln1 and ln2 before, ln1_post and ln2_post after).
  NormPlacement norm_placement = NormPlacement::kPre;
  // GPT-NeoX use_parallel_residual: resid_post = resid_pre + attn(ln1(resid_pre)) +
  // mlp(ln2(resid_pre)), so there is no resid_mid. GPT-J too, with one ln_1 for both: its loader
  // gives ln2 ln1's weights, as TransformerLens does, so ln2's hooks repeat ln1's values.
  bool parallel_attn_mlp = false;

  // Gemma: the embedding is multiplied by sqrt(d_model) (in the activations' dtype, as HF does)
  // before hook_embed; 1 elsewhere.
  double embed_scale = 1;
  // Gemma-2's tanh soft caps, cap · tanh(x / cap): of the attention scores (before the mask and
  // hook_attn_scores) and of the logits; 0 = none.
  double attn_softcap = 0;
  double final_softcap = 0;

  double attn_scale = 0;              // multiplies q·k; 1/sqrt(d_head) unless the config says otherwise
  bool attn_scale_by_layer = false;   // GPT-2 scale_attn_by_inverse_layer_idx: also / (layer + 1)
  // Sliding-window attention: a query sees the `sliding_window` most recent keys (itself
  // included) in the layers marked in `sliding_layers`; 0 = none anywhere.
  int64_t sliding_window = 0;
  std::vector<bool> sliding_layers;  // n_layers entries when sliding_window > 0

  // The attention window of `layer`: 0 when it attends to every earlier key.
  int64_t WindowOf(int layer) const {
    return sliding_window > 0 && sliding_layers[layer] ? sliding_window : 0;
  }
  // The config was a multimodal Gemma-3's (model_type "gemma3", Gemma3ForConditionalGeneration):
  // its text_config was read, and the text tower's weights sit under "language_model.model.".
  bool text_tower = false;
  std::string torch_dtype;            // informational: the checkpoint's declared dtype
  // config.json's eos_token_id (a number or a list); generation stops at these by default.
  std::vector<int32_t> eos_token_ids;
};

// Parses config.json text. `label` (the file path) prefixes error messages.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text, absl::string_view label);
// Reads <dir>/config.json.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

}  // namespace glassbox
