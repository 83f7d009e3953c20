// A model's parameters on the backend's device, in one canonical layout whatever the checkpoint's
// architecture: linear weights [out, in], the q/k/v projections fused into one matrix.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "base/safetensors.h"
#include "kernels/backend.h"
#include "server/model/model_config.h"

namespace glassbox {

struct BlockWeights {
  Tensor ln1_w, ln1_b;  // biases stay undefined for RMSNorm; post-norm blocks: of attn_out
  Tensor qkv_w;         // [(n_heads + 2·n_kv_heads)·d_head, d_model]: rows q, then k, then v
  Tensor qkv_b;
  Tensor q_norm_w, k_norm_w;  // q/k RMSNorm: [d_head] per head, or over the whole projection
  Tensor o_w;           // [d_model, n_heads·d_head]
  Tensor o_b;
  Tensor ln2_w, ln2_b;    // post-norm blocks: of mlp_out
  Tensor ln1_post_w, ln2_post_w;  // pre-and-post blocks (Gemma-2): of attn_out and mlp_out
  Tensor in_w, in_b;      // [d_mlp, d_model]: GPT-2 c_fc, Llama up_proj
  Tensor gate_w, gate_b;  // [d_mlp, d_model]: Llama gate_proj (gated MLPs only)
  Tensor out_w, out_b;    // [d_model, d_mlp]
};

struct ModelWeights {
  Tensor embed;      // [vocab, d_model]
  Tensor pos_embed;  // [n_ctx, d_model] for learned positions
  std::vector<BlockWeights> blocks;
  Tensor ln_final_w, ln_final_b;
  Tensor unembed;    // [vocab, d_model]; shares storage with embed when tied
  Tensor unembed_b;  // [vocab] where the config has unembed_bias (GPT-J), else undefined
  Tensor rope_cos, rope_sin;  // [n_ctx, rotary_dim / 2] for rotary models
  // Gemma-3's sliding-window layers (config rope_local_theta > 0): the same shape, their base.
  Tensor rope_cos_local, rope_sin_local;
};

// Reads every parameter the config implies, checks its shape, converts it to `dtype` and places
// it on the backend. Names are HF's, with or without the "transformer." / "model." prefixes;
// tensors HF itself ignores (GPT-2's attn.bias masks, rotary inv_freq buffers) are ignored.
// Gemma's (1 + w) norm weights are stored as 1 + w, added in f32 before the dtype conversion.
absl::StatusOr<ModelWeights> LoadModelWeights(const ModelConfig& config,
                                              const SafetensorsCheckpoint& checkpoint,
                                              Backend& backend, DType dtype);

// The weights the forward pass multiplies by through Backend::Linear (each block's projections
// and the unembedding), for Backend::PrepareLinearWeights.
std::vector<const Tensor*> LinearWeights(const ModelWeights& weights);

// Bytes of every distinct tensor of `weights` (tied embeddings counted once), wherever they live.
int64_t ModelWeightsBytes(const ModelWeights& weights);

// Rotary cos/sin tables exactly as HF computes them (inv_freq and angles in f32, with the
// config's rope_scaling), as host f32 tensors [n_ctx, rotary_dim / 2].
void ComputeRotaryTables(const ModelConfig& config, Tensor& cos, Tensor& sin);

}  // namespace glassbox
