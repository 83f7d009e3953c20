// Logit effects of scan targets (Neuronpedia's top and bottom logits): the direction a target
// writes into the residual stream, read through the unembedding without the final norm.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/feature_scan.h"
#include "server/engine/transformer.h"

namespace glassbox {

struct TargetUnit {
  const ScanTargetGroup* group = nullptr;
  int32_t unit = 0;  // neuron or feature index; the direction's row
};

// What each unit writes to the residual stream, host f32 [n, d_model], and which rows are
// defined: W_out[:, i] for an MLP neuron (mlp.hook_post), the decoder row of an SAE feature or
// the direction itself at a residual-stream hook (hook_embed, hook_resid_*, hook_attn_out,
// hook_mlp_out), a basis vector for a neuron of such a hook. Other targets (e.g. hook_z or
// attention-internal hooks) write nothing that reads off this way. Runs on the device's thread.
absl::StatusOr<std::pair<Tensor, std::vector<bool>>> OutputDirections(
    const Transformer& model, const std::vector<TargetUnit>& units);

struct LogitEffects {
  std::vector<int32_t> top_tokens, bottom_tokens;  // the k largest, largest first; the k smallest
  std::vector<float> top_values, bottom_values;    // smallest first
};

// For each row d of `directions` (host f32 [n, d_model]): the k largest and smallest entries of
// W_U · d, on the model's backend (ties to the lower token id).
absl::StatusOr<std::vector<LogitEffects>> ComputeLogitEffects(const Transformer& model,
                                                              const Tensor& directions, int64_t k);

}  // namespace glassbox
