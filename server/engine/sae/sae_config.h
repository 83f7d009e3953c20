// What an SAE is, independent of its weights: the fields of a SAELens cfg.json (both the v6 layout,
// {"architecture", "d_in", "d_sae", ..., "metadata": {"hook_name", ...}}, and the flat layout of
// sae_lens < 6 with "hook_point", "activation_fn_str", boolean "normalize_activations", ...),
// interpreted exactly as sae_lens 6's loader does (handle_config_defaulting).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace glassbox {

enum class SaeArchitecture : uint8_t {
  kStandard,  // f = ReLU(x'W_enc + b_enc)
  kJumpRelu,  // f = ReLU(pre) · 1[pre > threshold]   (strict)
  kGated,     // f = 1[x'W_enc + b_gate > 0] · ReLU(x'(W_enc ⊙ exp(r_mag)) + b_mag)
  kTopK,      // keep the k largest of pre (× ‖W_dec,i‖ when rescaling), ReLU after selection
};

enum class SaeNormalization : uint8_t {
  kNone,
  // Per token: x · c with c = sqrt(d_in) / ‖x‖; the output is divided by the same c.
  kConstantNormRescale,
  // Per token: (x − μ) / (σ + 1e-5), σ the unbiased std of x − μ; the output is σ·y + μ.
  kLayerNorm,
  // A fixed factor s with E‖s·x‖ = sqrt(d_in) over the training data, folded into the weights at
  // load (W_enc·s, W_dec/s, b_dec/s) as sae_lens's from_pretrained does. Without a factor sae_lens
  // runs the SAE unscaled, and so do we (SaeConfig::warnings says so).
  kExpectedAverageOnlyIn,
};

absl::string_view SaeArchitectureName(SaeArchitecture architecture);  // "standard", ...
absl::string_view SaeNormalizationName(SaeNormalization normalization);  // "layer_norm", ...

struct SaeConfig {
  SaeArchitecture architecture = SaeArchitecture::kStandard;
  int64_t d_in = 0;
  int64_t d_sae = 0;
  // The dtype the SAE was saved for ("float32", "bfloat16", ...). Informational: Glassbox widens
  // every weight to f32 and computes in f32 whatever this says.
  std::string dtype = "float32";
  bool apply_b_dec_to_input = true;
  SaeNormalization normalization = SaeNormalization::kNone;
  // kExpectedAverageOnlyIn: the factor folded into the weights (nullopt: none was found).
  std::optional<double> norm_scaling_factor;
  // The hook's value is [..., n_heads, d_head] and the SAE reads it flattened to
  // [..., n_heads·d_head] (sae_lens reshape_activations = "hook_z").
  bool reshape_hook_z = false;
  // kTopK only.
  int64_t k = 0;
  bool rescale_acts_by_decoder_norm = false;

  // Where the SAE belongs (sae_lens metadata); empty / nullopt when the file does not say.
  std::string model_name;
  std::string hook_name;
  // Set for SAEs trained on one head of a per-head hook; sae_lens itself ignores it at inference
  // (its activation store did the slicing), so whoever feeds the SAE must slice x[..., head, :].
  std::optional<int64_t> hook_head_index;
  std::string neuronpedia_id;
  std::string sae_lens_version;
  // The whole metadata object (v6) or the flat config's non-structural fields, as JSON text.
  std::string metadata_json = "{}";
  // Things a user should know that did not stop the load (e.g. an unfolded normalisation).
  std::vector<std::string> warnings;
};

// Parses a SAELens cfg.json. `label` (the path) prefixes every error. Errors are INVALID_ARGUMENT
// naming the field: unknown architecture or normalisation, missing or non-positive d_in / d_sae,
// topk without a usable k, hook_z reshaping on a hook that is not hook_z, ...
absl::StatusOr<SaeConfig> ParseSaeLensConfig(absl::string_view json_text, absl::string_view label);

}  // namespace glassbox
