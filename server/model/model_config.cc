#include "server/model/model_config.h"

#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace glassbox {
namespace {

using json = nlohmann::json;

// Typed access to config.json fields with errors that name the file and the key. A key that is
// absent or null takes `fallback`; with no fallback it is required.
class ConfigReader {
 public:
  ConfigReader(const json& root, absl::string_view label) : root_(root), label_(label) {}

  bool Has(absl::string_view key) const {
    auto it = root_.find(key);
    return it != root_.end() && !it->is_null();
  }

  absl::StatusOr<int64_t> Int(absl::string_view key, std::optional<int64_t> fallback = {}) const {
    auto it = root_.find(key);
    if (it == root_.end() || it->is_null()) {
      if (fallback) return *fallback;
      return Error(key, "is required");
    }
    if (!it->is_number_integer()) return Error(key, "must be an integer, got " + it->dump());
    return it->get<int64_t>();
  }

  absl::StatusOr<int64_t> PositiveInt(absl::string_view key,
                                      std::optional<int64_t> fallback = {}) const {
    GB_ASSIGN_OR_RETURN(int64_t v, Int(key, fallback));
    if (v <= 0) return Error(key, absl::StrCat("must be positive, got ", v));
    return v;
  }

  absl::StatusOr<double> Number(absl::string_view key, std::optional<double> fallback = {}) const {
    auto it = root_.find(key);
    if (it == root_.end() || it->is_null()) {
      if (fallback) return *fallback;
      return Error(key, "is required");
    }
    if (!it->is_number()) return Error(key, "must be a number, got " + it->dump());
    return it->get<double>();
  }

  absl::StatusOr<bool> Bool(absl::string_view key, bool fallback) const {
    auto it = root_.find(key);
    if (it == root_.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) return Error(key, "must be true or false, got " + it->dump());
    return it->get<bool>();
  }

  absl::StatusOr<std::string> String(absl::string_view key, std::string fallback) const {
    auto it = root_.find(key);
    if (it == root_.end() || it->is_null()) return fallback;
    if (!it->is_string()) return Error(key, "must be a string, got " + it->dump());
    return it->get<std::string>();
  }

  absl::Status Error(absl::string_view key, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": \"", key, "\" ", what));
  }

  const json& root() const { return root_; }
  const std::string& label() const { return label_; }

 private:
  const json& root_;
  std::string label_;
};

absl::StatusOr<Activation> ParseActivation(const ConfigReader& r, absl::string_view key,
                                           std::string fallback) {
  GB_ASSIGN_OR_RETURN(std::string name, r.String(key, std::move(fallback)));
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") {
    return Activation::kGeluTanh;
  }
  if (name == "gelu") return Activation::kGeluExact;
  if (name == "quick_gelu") return Activation::kGeluQuick;
  if (name == "relu") return Activation::kRelu;
  if (name == "silu" || name == "swish") return Activation::kSilu;
  return r.Error(key, "names an activation Glassbox does not implement: \"" + name +
                          "\" (supported: gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, "
                          "quick_gelu, relu, silu)");
}

// The shape keys GPT-2 and GPT-J share (n_layer, n_embd, n_head, n_positions, n_inner, ...),
// with one head size for queries, keys and values.
absl::Status ParseGpt2StyleShape(const ConfigReader& r, ModelConfig& c) {
  GB_ASSIGN_OR_RETURN(c.n_layers, r.PositiveInt("n_layer"));
  GB_ASSIGN_OR_RETURN(c.d_model, r.PositiveInt("n_embd"));
  GB_ASSIGN_OR_RETURN(c.n_heads, r.PositiveInt("n_head"));
  GB_ASSIGN_OR_RETURN(c.vocab_size, r.PositiveInt("vocab_size"));
  GB_ASSIGN_OR_RETURN(c.n_ctx, r.PositiveInt("n_positions"));
  GB_ASSIGN_OR_RETURN(c.d_mlp, r.PositiveInt("n_inner", 4 * c.d_model));
  GB_ASSIGN_OR_RETURN(c.norm_eps, r.Number("layer_norm_epsilon", 1e-5));
  GB_ASSIGN_OR_RETURN(c.act, ParseActivation(r, "activation_function", "gelu_new"));
  if (c.d_model % c.n_heads != 0) {
    return r.Error("n_head", absl::StrCat("must divide n_embd (", c.d_model, ")"));
  }
  c.n_kv_heads = c.n_heads;
  c.d_head = c.d_model / c.n_heads;
  c.norm = NormKind::kLayerNorm;
  return absl::OkStatus();
}

absl::Status ParseGpt2(const ConfigReader& r, ModelConfig& c) {
  GB_RETURN_IF_ERROR(ParseGpt2StyleShape(r, c));
  GB_ASSIGN_OR_RETURN(bool scale_attn, r.Bool("scale_attn_weights", true));
  GB_ASSIGN_OR_RETURN(c.attn_scale_by_layer, r.Bool("scale_attn_by_inverse_layer_idx", false));
  c.positional = PositionalKind::kLearned;
  c.gated_mlp = false;
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  c.tie_word_embeddings = true;  // GPT2LMHeadModel always ties lm_head to wte
  c.attn_scale = scale_attn ? 1.0 / std::sqrt(static_cast<double>(c.d_head)) : 1.0;
  return absl::OkStatus();
}

// Rotary frequencies: transformers 4 writes "rope_theta" and "rope_scaling" at the top level;
// transformers 5 writes both into one "rope_parameters" object. Either is accepted.
absl::Status ParseRope(const ConfigReader& r, ModelConfig& c,
                       absl::string_view theta_key = "rope_theta") {
  auto params = r.root().find("rope_parameters");
  const bool v5 = params != r.root().end() && !params->is_null();
  if (v5 && !params->is_object()) return r.Error("rope_parameters", "must be an object");
  const std::string key = v5 ? "rope_parameters" : "rope_scaling";
  const std::string label = absl::StrCat(r.label(), ": ", key);
  if (v5) {
    GB_ASSIGN_OR_RETURN(c.rope_theta, ConfigReader(*params, label).Number("rope_theta", 10000.0));
  } else {
    GB_ASSIGN_OR_RETURN(c.rope_theta, r.Number(theta_key, 10000.0));
  }
  auto it = v5 ? params : r.root().find("rope_scaling");
  if (it == r.root().end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return r.Error(key, "must be an object or null");
  ConfigReader s(*it, label);
  GB_ASSIGN_OR_RETURN(std::string kind, s.String("rope_type", ""));
  if (kind.empty()) {
    GB_ASSIGN_OR_RETURN(kind, s.String("type", ""));  // the older key
  }
  if (kind == "default" || kind.empty()) return absl::OkStatus();
  if (kind == "linear") {
    c.rope_scaling.kind = RopeScaling::Kind::kLinear;
    GB_ASSIGN_OR_RETURN(c.rope_scaling.factor, s.Number("factor"));
    return absl::OkStatus();
  }
  if (kind == "llama3") {
    RopeScaling& rs = c.rope_scaling;
    rs.kind = RopeScaling::Kind::kLlama3;
    GB_ASSIGN_OR_RETURN(rs.factor, s.Number("factor"));
    GB_ASSIGN_OR_RETURN(rs.low_freq_factor, s.Number("low_freq_factor"));
    GB_ASSIGN_OR_RETURN(rs.high_freq_factor, s.Number("high_freq_factor"));
    GB_ASSIGN_OR_RETURN(rs.original_max_position_embeddings,
                        s.PositiveInt("original_max_position_embeddings"));
    if (rs.high_freq_factor <= rs.low_freq_factor) {
      return s.Error("high_freq_factor", "must exceed low_freq_factor");
    }
    return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat(
      label, ": type \"", kind,
      "\" is not supported (supported: default, linear, llama3); dynamic and YaRN-style scalings "
      "depend on the sequence length"));
}

// How many of each head's features rotate: transformers 4 writes the fraction at the top level
// (`legacy_key`: GPT-NeoX's rotary_pct, Phi-3's partial_rotary_factor), 5 writes
// partial_rotary_factor into rope_parameters. HF rotates int(d_head * fraction) features.
absl::Status ParsePartialRotary(const ConfigReader& r, absl::string_view legacy_key,
                                ModelConfig& c) {
  double fraction = 1.0;
  std::string key(legacy_key);
  auto params = r.root().find("rope_parameters");
  if (params != r.root().end() && params->is_object() && params->contains("partial_rotary_factor")) {
    ConfigReader p(*params, absl::StrCat(r.label(), ": rope_parameters"));
    GB_ASSIGN_OR_RETURN(fraction, p.Number("partial_rotary_factor"));
    key = "rope_parameters.partial_rotary_factor";
  } else {
    GB_ASSIGN_OR_RETURN(fraction, r.Number(legacy_key, 1.0));
  }
  if (!(fraction > 0.0 && fraction <= 1.0)) {
    return r.Error(key, absl::StrCat("must be in (0, 1], got ", fraction));
  }
  c.rotary_dim = static_cast<int64_t>(static_cast<double>(c.d_head) * fraction);
  if (c.rotary_dim < 2 || c.rotary_dim % 2 != 0) {
    return r.Error(key, absl::StrCat("gives ", c.rotary_dim, " rotary features of d_head ",
                                     c.d_head, "; Glassbox needs an even number >= 2"));
  }
  return absl::OkStatus();
}

// GPT-NeoX (Pythia): LayerNorm, one fused query_key_value projection interleaved by head,
// rotary on the first rotary_pct of each head's features, an optionally parallel block, an
// untied embed_out.
absl::Status ParseGptNeox(const ConfigReader& r, ModelConfig& c) {
  GB_ASSIGN_OR_RETURN(c.n_layers, r.PositiveInt("num_hidden_layers"));
  GB_ASSIGN_OR_RETURN(c.d_model, r.PositiveInt("hidden_size"));
  GB_ASSIGN_OR_RETURN(c.n_heads, r.PositiveInt("num_attention_heads"));
  GB_ASSIGN_OR_RETURN(c.vocab_size, r.PositiveInt("vocab_size"));
  GB_ASSIGN_OR_RETURN(c.n_ctx, r.PositiveInt("max_position_embeddings"));
  GB_ASSIGN_OR_RETURN(c.d_mlp, r.PositiveInt("intermediate_size"));
  GB_ASSIGN_OR_RETURN(c.norm_eps, r.Number("layer_norm_eps", 1e-5));
  GB_ASSIGN_OR_RETURN(c.act, ParseActivation(r, "hidden_act", "gelu"));
  GB_ASSIGN_OR_RETURN(c.tie_word_embeddings, r.Bool("tie_word_embeddings", false));
  GB_ASSIGN_OR_RETURN(c.parallel_attn_mlp, r.Bool("use_parallel_residual", true));
  GB_ASSIGN_OR_RETURN(bool bias, r.Bool("attention_bias", true));
  if (c.d_model % c.n_heads != 0) {
    return r.Error("num_attention_heads", absl::StrCat("must divide hidden_size (", c.d_model, ")"));
  }
  c.n_kv_heads = c.n_heads;
  c.d_head = c.d_model / c.n_heads;
  c.norm = NormKind::kLayerNorm;
  c.positional = PositionalKind::kRotary;
  c.gated_mlp = false;
  c.qkv_bias = c.o_bias = bias;
  c.mlp_bias = true;
  c.attn_scale = 1.0 / std::sqrt(static_cast<double>(c.d_head));
  GB_RETURN_IF_ERROR(ParseRope(r, c, /*theta_key=*/"rotary_emb_base"));
  return ParsePartialRotary(r, "rotary_pct", c);
}

// GPT-J: LayerNorm, separate q/k/v projections without biases, rotary on the first rotary_dim
// features of each head in adjacent pairs (base 10000, fixed in HF), one ln_1 feeding attention
// and the MLP in parallel, an untied lm_head with a bias.
absl::Status ParseGptj(const ConfigReader& r, ModelConfig& c) {
  GB_RETURN_IF_ERROR(ParseGpt2StyleShape(r, c));
  GB_ASSIGN_OR_RETURN(c.tie_word_embeddings, r.Bool("tie_word_embeddings", false));
  // Required: with a null rotary_dim HF builds its sin/cos table over n_embd features, which
  // matches no head (every published GPT-J sets it).
  GB_ASSIGN_OR_RETURN(c.rotary_dim, r.PositiveInt("rotary_dim"));
  if (c.rotary_dim > c.d_head || c.rotary_dim % 2 != 0) {
    return r.Error("rotary_dim", absl::StrCat("must be even and at most the head size ", c.d_head,
                                              ", got ", c.rotary_dim));
  }
  c.rotary_adjacent_pairs = true;
  c.rope_theta = 10000.0;
  c.positional = PositionalKind::kRotary;
  c.parallel_attn_mlp = true;
  c.gated_mlp = false;
  c.qkv_bias = c.o_bias = false;
  c.mlp_bias = true;
  c.unembed_bias = true;  // even when tied: the bias is lm_head's own
  c.attn_scale = 1.0 / std::sqrt(static_cast<double>(c.d_head));
  return absl::OkStatus();
}

// Which layers use c.sliding_window (already parsed; nothing to do when 0): transformers 5
// writes "layer_types" ("sliding_attention" / "full_attention" per layer); without it, Qwen2 and
// Qwen3 slide from layer max_window_layers on (HF's rule), Gemma-2 in even layers, and Mistral
// and Phi-3 in every layer.
absl::Status ParseSlidingLayers(const ConfigReader& r, ModelConfig& c) {
  if (c.sliding_window == 0) return absl::OkStatus();
  c.sliding_layers.assign(c.n_layers, true);
  if (r.Has("layer_types")) {
    const json& types = r.root().at("layer_types");
    if (!types.is_array() || static_cast<int64_t>(types.size()) != c.n_layers) {
      return r.Error("layer_types", absl::StrCat("must list one type per layer (", c.n_layers, ")"));
    }
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const json& t = types[l];
      if (t == "sliding_attention") continue;
      if (t != "full_attention") {
        return r.Error("layer_types", absl::StrCat("has ", t.dump(), " at layer ", l,
                                                   " (supported: sliding_attention, full_attention)"));
      }
      c.sliding_layers[l] = false;
    }
    return absl::OkStatus();
  }
  if (c.model_type == "qwen2" || c.model_type == "qwen3") {
    GB_ASSIGN_OR_RETURN(int64_t first, r.Int("max_window_layers", 0));
    for (int64_t l = 0; l < c.n_layers; ++l) c.sliding_layers[l] = l >= first;
  } else if (c.model_type == "gemma2") {
    for (int64_t l = 0; l < c.n_layers; ++l) c.sliding_layers[l] = l % 2 == 0;  // local first
  } else if (c.model_type == "gemma3_text") {
    // HF: every sliding_window_pattern-th layer is global, the others slide.
    GB_ASSIGN_OR_RETURN(int64_t pattern, r.PositiveInt("sliding_window_pattern", 6));
    for (int64_t l = 0; l < c.n_layers; ++l) c.sliding_layers[l] = (l + 1) % pattern != 0;
  }
  return absl::OkStatus();
}

// Gemma-3's two rope bases. transformers 5 writes rope_parameters with one entry per layer type
// ({"full_attention": {...}, "sliding_attention": {...}}); transformers 4 wrote rope_theta (the
// global base), rope_local_base_freq and rope_scaling (of the global layers) at the top level.
absl::Status ParseGemma3Rope(const ConfigReader& r, ModelConfig& c) {
  auto params = r.root().find("rope_parameters");
  if (params == r.root().end() || params->is_null()) {
    GB_RETURN_IF_ERROR(ParseRope(r, c));
    GB_ASSIGN_OR_RETURN(c.rope_local_theta, r.Number("rope_local_base_freq", 10000.0));
  } else {
    if (!params->is_object() || !params->contains("full_attention") ||
        !params->contains("sliding_attention")) {
      return r.Error("rope_parameters",
                     "must have a \"full_attention\" and a \"sliding_attention\" entry (Gemma-3)");
    }
    // Each entry has the layout ParseRope reads at the top of rope_parameters.
    const json global = {{"rope_parameters", params->at("full_attention")}};
    GB_RETURN_IF_ERROR(ParseRope(ConfigReader(global, absl::StrCat(r.label(), " (full_attention)")), c));
    ModelConfig local;
    const json sliding = {{"rope_parameters", params->at("sliding_attention")}};
    GB_RETURN_IF_ERROR(
        ParseRope(ConfigReader(sliding, absl::StrCat(r.label(), " (sliding_attention)")), local));
    if (local.rope_scaling.kind != RopeScaling::Kind::kNone) {
      return r.Error("rope_parameters.sliding_attention",
                     "has a rope scaling; Gemma-3 scales only its global layers");
    }
    c.rope_local_theta = local.rope_theta;
  }
  if (!(c.rope_local_theta > 0)) return r.Error("rope_local_base_freq", "must be positive");
  return absl::OkStatus();
}

// Gemma-2's traits on top of the Llama-like ones ParseLlama reads.
absl::Status ParseGemma2(const ConfigReader& r, ModelConfig& c) {
  GB_ASSIGN_OR_RETURN(bool attention_bias, r.Bool("attention_bias", false));
  c.qkv_bias = c.o_bias = attention_bias;
  c.mlp_bias = false;
  c.norm_placement = NormPlacement::kPreAndPost;
  c.norm_weight_offset = true;
  c.embed_scale = std::sqrt(static_cast<double>(c.d_model));
  GB_ASSIGN_OR_RETURN(c.attn_softcap, r.Number("attn_logit_softcapping", 0));
  GB_ASSIGN_OR_RETURN(c.final_softcap, r.Number("final_logit_softcapping", 0));
  if (c.attn_softcap < 0) return r.Error("attn_logit_softcapping", "must not be negative");
  if (c.final_softcap < 0) return r.Error("final_logit_softcapping", "must not be negative");
  if (r.Has("sliding_window")) {
    GB_ASSIGN_OR_RETURN(c.sliding_window, r.PositiveInt("sliding_window"));
  }
  return absl::OkStatus();
}

absl::Status ParseLlama(const ConfigReader& r, ModelConfig& c) {
  GB_ASSIGN_OR_RETURN(c.n_layers, r.PositiveInt("num_hidden_layers"));
  GB_ASSIGN_OR_RETURN(c.d_model, r.PositiveInt("hidden_size"));
  GB_ASSIGN_OR_RETURN(c.n_heads, r.PositiveInt("num_attention_heads"));
  GB_ASSIGN_OR_RETURN(c.n_kv_heads, r.PositiveInt("num_key_value_heads", c.n_heads));
  GB_ASSIGN_OR_RETURN(c.vocab_size, r.PositiveInt("vocab_size"));
  GB_ASSIGN_OR_RETURN(c.n_ctx, r.PositiveInt("max_position_embeddings"));
  GB_ASSIGN_OR_RETURN(c.d_mlp, r.PositiveInt("intermediate_size"));
  GB_ASSIGN_OR_RETURN(c.norm_eps, r.Number("rms_norm_eps", 1e-6));
  const bool gemma3 = c.model_type == "gemma3_text";
  const bool gemma = c.model_type == "gemma2" || gemma3;
  // Gemma's MLP reads hidden_activation (its hidden_act is a legacy field HF ignores).
  GB_ASSIGN_OR_RETURN(c.act, gemma ? ParseActivation(r, "hidden_activation", "gelu_pytorch_tanh")
                                   : ParseActivation(r, "hidden_act", "silu"));
  GB_ASSIGN_OR_RETURN(c.tie_word_embeddings, r.Bool("tie_word_embeddings", gemma));
  if (c.n_heads % c.n_kv_heads != 0) {
    return r.Error("num_key_value_heads",
                   absl::StrCat("must divide num_attention_heads (", c.n_heads, ")"));
  }
  const bool has_head_dim = r.Has("head_dim");
  if (!has_head_dim && c.d_model % c.n_heads != 0) {
    return r.Error("num_attention_heads", absl::StrCat("must divide hidden_size (", c.d_model, ")"));
  }
  GB_ASSIGN_OR_RETURN(c.d_head, r.PositiveInt("head_dim", c.d_model / c.n_heads));
  if (c.d_head % 2 != 0) return r.Error("head_dim", "must be even for rotary embeddings");
  c.rotary_dim = c.d_head;
  c.norm = NormKind::kRmsNorm;
  c.positional = PositionalKind::kRotary;
  c.gated_mlp = true;
  if (c.model_type == "qwen2") {
    // Qwen2 always has q/k/v biases and never an o_proj or MLP bias.
    c.qkv_bias = true;
    c.o_bias = false;
    c.mlp_bias = false;
  } else if (c.model_type == "phi3") {
    // Phi-3: no biases; q/k/v and gate/up are fused in the checkpoint (split at load).
    c.qkv_bias = c.o_bias = c.mlp_bias = false;
  } else if (c.model_type == "olmo2") {
    // OLMo-2: norms after attention and the MLP instead of before, and q/k RMSNorm over the
    // whole projection.
    GB_ASSIGN_OR_RETURN(bool attention_bias, r.Bool("attention_bias", false));
    c.qkv_bias = c.o_bias = attention_bias;
    c.mlp_bias = false;
    c.qk_norm = QkNorm::kWhole;
    c.norm_placement = NormPlacement::kPost;
  } else if (gemma3) {
    // Gemma-3: Gemma-2's block plus a (1 + w) RMSNorm of each head's q and k (ParseGemma2 sets
    // the rest).
    c.qk_norm = QkNorm::kPerHead;
  } else if (c.model_type == "qwen3") {
    // Qwen3 drops Qwen2's q/k/v biases (attention_bias, default false, covers q/k/v/o) and
    // normalises each head's q and k instead.
    GB_ASSIGN_OR_RETURN(bool attention_bias, r.Bool("attention_bias", false));
    c.qkv_bias = c.o_bias = attention_bias;
    c.mlp_bias = false;
    c.qk_norm = QkNorm::kPerHead;
  } else {
    GB_ASSIGN_OR_RETURN(bool attention_bias, r.Bool("attention_bias", false));
    GB_ASSIGN_OR_RETURN(c.mlp_bias, r.Bool("mlp_bias", false));
    c.qkv_bias = c.o_bias = attention_bias;
  }
  if (c.model_type == "phi3" && r.Has("sliding_window")) {
    GB_ASSIGN_OR_RETURN(c.sliding_window, r.PositiveInt("sliding_window"));
  }
  if (c.model_type == "mistral" || c.model_type == "qwen2" || c.model_type == "qwen3") {
    GB_ASSIGN_OR_RETURN(bool use_sliding, r.Bool("use_sliding_window", c.model_type == "mistral"));
    if (use_sliding && r.Has("sliding_window")) {
      GB_ASSIGN_OR_RETURN(c.sliding_window, r.PositiveInt("sliding_window"));
    }
  }
  if (gemma) GB_RETURN_IF_ERROR(ParseGemma2(r, c));
  GB_RETURN_IF_ERROR(ParseSlidingLayers(r, c));
  c.attn_scale = 1.0 / std::sqrt(static_cast<double>(c.d_head));
  if (gemma) {
    GB_ASSIGN_OR_RETURN(double query_scalar, r.Number("query_pre_attn_scalar", 256));
    if (!(query_scalar > 0)) return r.Error("query_pre_attn_scalar", "must be positive");
    c.attn_scale = 1.0 / std::sqrt(query_scalar);
  }
  GB_RETURN_IF_ERROR(gemma3 ? ParseGemma3Rope(r, c) : ParseRope(r, c));
  if (c.model_type == "phi3") return ParsePartialRotary(r, "partial_rotary_factor", c);
  return absl::OkStatus();
}

absl::Status ParseEosTokens(const ConfigReader& r, ModelConfig& c) {
  if (!r.Has("eos_token_id")) return absl::OkStatus();
  const json& eos = r.root().at("eos_token_id");
  const json list = eos.is_array() ? eos : json::array({eos});
  for (const json& id : list) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) {
      return r.Error("eos_token_id", "must be a token id or a list of them, got " + eos.dump());
    }
    c.eos_token_ids.push_back(id.get<int32_t>());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text, absl::string_view label) {
  json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": not valid JSON"));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(label, ": expected a JSON object"));
  }
  ConfigReader r(root, label);
  ModelConfig c;
  GB_ASSIGN_OR_RETURN(c.model_type, r.String("model_type", ""));
  if (c.model_type == "gemma3") {
    // A multimodal Gemma-3: Glassbox serves its text tower (the vision tower is not read).
    auto text = root.find("text_config");
    if (text == root.end() || !text->is_object()) {
      return r.Error("text_config", "must be an object: a multimodal Gemma-3 describes its text tower there");
    }
    json text_config = *text;
    if (!text_config.contains("model_type")) text_config["model_type"] = "gemma3_text";
    if (text_config["model_type"] != "gemma3_text") {
      return r.Error("text_config", "must describe a gemma3_text model, got model_type " +
                                        text_config["model_type"].dump());
    }
    for (const char* key : {"eos_token_id", "tie_word_embeddings"}) {
      if (!text_config.contains(key) && root.contains(key)) text_config[key] = root[key];
    }
    GB_ASSIGN_OR_RETURN(c, ParseModelConfig(text_config.dump(), absl::StrCat(label, ": text_config")));
    c.text_tower = true;
    return c;
  }
  GB_ASSIGN_OR_RETURN(c.torch_dtype, r.String("torch_dtype", ""));
  GB_RETURN_IF_ERROR(ParseEosTokens(r, c));
  if (c.model_type == "gpt2") {
    GB_RETURN_IF_ERROR(ParseGpt2(r, c));
  } else if (c.model_type == "gpt_neox") {
    GB_RETURN_IF_ERROR(ParseGptNeox(r, c));
  } else if (c.model_type == "gptj") {
    GB_RETURN_IF_ERROR(ParseGptj(r, c));
  } else if (c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2" ||
             c.model_type == "qwen3" || c.model_type == "phi3" || c.model_type == "olmo2" ||
             c.model_type == "gemma2" || c.model_type == "gemma3_text") {
    GB_RETURN_IF_ERROR(ParseLlama(r, c));
  } else if (c.model_type.empty()) {
    return r.Error("model_type", "is missing; Glassbox needs it to pick the architecture");
  } else {
    return absl::UnimplementedError(absl::StrCat(
        label, ": model_type \"", c.model_type,
        "\" is not supported (supported: gpt2, gpt_neox, gptj, llama, mistral, qwen2, qwen3, phi3, "
        "olmo2, gemma2, gemma3_text)"));
  }
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open (is this a HuggingFace model directory?)"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return ParseModelConfig(buffer.str(), path);
}

}  // namespace glassbox
