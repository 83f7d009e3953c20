// Feature activations of an SAE on a model's own activations: the forward pass runs only as far
// as the SAE's hook, the real tokens there are encoded, and the reconstruction is scored.
#pragma once

#include <atomic>
#include <cstdint>

#include "absl/status/statusor.h"
#include "server/engine/sae/sae.h"
#include "server/engine/transformer.h"

namespace glassbox {

struct SaeEncodeOptions {
  Tensor tokens;          // [batch, pos] i32, host
  Tensor attention_mask;  // [batch, pos] i32, host; undefined = every token real
  // 0: every nonzero feature of each token; k > 0: the k largest (descending, ties by index).
  int64_t top_k = 0;
  bool dense = false;  // also [batch, pos, d_sae], zero at padding
  const std::atomic<bool>* cancelled = nullptr;
};

struct SaeEncodeResult {
  // One row per real token, row-major over the batch (row 0's tokens, then row 1's, ...).
  SparseActs acts;
  Tensor dense;  // when asked
  // Of the full encoding (not cut to top_k) over the real tokens.
  SaeReconstructionStats stats;
};

// `hook` is the SAE's hook on `model`, whose width the caller has checked against d_in.
absl::StatusOr<SaeEncodeResult> RunSaeEncode(const Transformer& model, const Sae& sae, HookId hook,
                                             const SaeEncodeOptions& options);

// The forward pass's stop_at_layer that still reaches `info` (-1: the whole pass).
int StopAtLayerReaching(const HookInfo& info, const ModelConfig& config);

}  // namespace glassbox
