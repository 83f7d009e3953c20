// Loading SAEs from disk:
//  - SAELens directories: cfg.json (v6 or the older flat layout) + sae_weights.safetensors
//    (F32/F16/BF16/F64, widened to f32), plus activation_scaler.json when the sae_lens trainer
//    left one (its scaling_factor is folded in for expected_average_only_in);
//  - Gemma Scope params.npz (numpy zip, stored or deflated entries; keys W_enc, W_dec, b_enc,
//    b_dec, threshold): a jumprelu SAE with apply_b_dec_to_input false, as sae_lens's Gemma Scope
//    loader builds it. npz files carry no config, so hook and model names come from the options.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "server/engine/sae/sae.h"

namespace glassbox {

struct SaeLoadOptions {
  // expected_average_only_in: the factor to fold in; overrides activation_scaler.json. (SAELens's
  // pretrained_saes.yaml lists it as norm_scaling_factor for the releases that need it.)
  std::optional<double> norm_scaling_factor;
  // When > 0, d_in must equal it (the width of the hook the SAE is attached to; for hook_z
  // hooks n_heads·d_head).
  int64_t expected_d_in = 0;

  // npz only (a SAELens cfg.json states these itself).
  std::string hook_name;
  std::string model_name;
  bool apply_b_dec_to_input = false;
  // Gemma Scope's embedding SAEs were trained on embeddings scaled by sqrt(d_model); sae_lens
  // loads them with W_enc / sqrt(d_in) and W_dec · sqrt(d_in) (set for "embedding" folders).
  bool gemma_scope_embedding = false;
};

// A SAELens directory (holding cfg.json).
absl::StatusOr<std::unique_ptr<Sae>> LoadSaeLensDirectory(const std::string& dir,
                                                          const SaeLoadOptions& options = {});
// A Gemma Scope params.npz file.
absl::StatusOr<std::unique_ptr<Sae>> LoadGemmaScopeNpz(const std::string& path,
                                                       const SaeLoadOptions& options = {});
// Either: a directory with cfg.json, a directory with params.npz, or a .npz file. NOT_FOUND
// when the path does not exist; INVALID_ARGUMENT when it is neither kind.
absl::StatusOr<std::unique_ptr<Sae>> LoadSae(const std::string& path,
                                             const SaeLoadOptions& options = {});

}  // namespace glassbox
