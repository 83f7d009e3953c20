// Server-side analyses that read the model's weights beside its activations (docs/methods.md):
// logit lens, direct logit attribution, and attention-weight vs attention-norm analysis.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/transformer.h"

namespace glassbox {

// ---- logit lens ----
// For the residual stream before each block and after the last (TransformerLens
// accumulated_resid: "0_pre" .. "{L-1}_pre", "final_post"), at every position:
// log_softmax(LN_f(x) · W_Uᵀ), with LN_f recomputed on x (its own scale).
struct LogitLensRequest {
  Tensor tokens;          // [batch, pos] i32, host
  Tensor attention_mask;  // optional, as ForwardInput
  int32_t top_k = 5;
  std::vector<int32_t> target_tokens;
};
struct LogitLensResult {
  std::vector<std::string> labels;  // L + 1
  Tensor top_log_probs;             // [L + 1, batch, pos, k] f32
  Tensor top_tokens;                // [L + 1, batch, pos, k] i32
  Tensor target_log_probs;          // [L + 1, batch, pos, targets] f32 (undefined without targets)
};
absl::StatusOr<LogitLensResult> RunLogitLens(const Transformer& model, const LogitLensRequest& request);

// ---- direct logit attribution ----
// The final residual at one position decomposed into components y_c: token and position
// embeddings, each head's output z·W_O (hook_result), each layer's attention output bias, each
// MLP's output. Contribution to token t: ((y_c − mean(y_c)) / s_f) ∘ w_f · W_U[t] with s_f the
// cached final-norm scale (centring only for LayerNorm); for a logit difference W_U[t1] − W_U[t2].
struct DlaRequest {
  Tensor tokens;          // [batch, pos] i32, host
  Tensor attention_mask;  // optional
  int32_t position = -1;  // per row; negative counts from the last real token
  int32_t token = 0;
  std::optional<int32_t> minus_token;  // logit difference token − minus_token
};
struct DlaResult {
  std::vector<std::string> labels;  // "embed", "pos_embed", "L0H3", "L0.attn_bias", "L0.mlp_out", ...
  Tensor attributions;              // [components, batch] f32
  Tensor logit;                     // [batch] f32: the model's logit (difference) at the position
  Tensor residual_constant;         // [batch]: what the components do not carry (final norm bias
                                    // and unembedding bias), so attributions sum to the logit
};
absl::StatusOr<DlaResult> RunDirectLogitAttribution(const Transformer& model, const DlaRequest& request);

// ---- attention weights vs norms (Kobayashi et al., 2020) ----
// For head h at layer l: f_h(u_j) = (u_j W_V^h + b_V^h) W_O^h; reports α^h_ij, ‖α^h_ij f_h(u_j)‖
// and the layer-level ‖Σ_h α^h_ij f_h(u_j)‖.
struct AttentionNormsRequest {
  Tensor tokens;
  Tensor attention_mask;
  std::vector<int> layers;  // empty = all
};
struct AttentionNormsLayer {
  int layer;
  Tensor weights;      // [batch, heads, query_pos, key_pos]: α
  Tensor head_norms;   // [batch, heads, query_pos, key_pos]: ‖α f_h(u_j)‖
  Tensor layer_norms;  // [batch, query_pos, key_pos]: ‖Σ_h α f_h(u_j)‖
};
absl::StatusOr<std::vector<AttentionNormsLayer>> RunAttentionNorms(const Transformer& model,
                                                                   const AttentionNormsRequest& request);

}  // namespace glassbox
