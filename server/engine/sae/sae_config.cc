#include "server/engine/sae/sae_config.h"

#include <cctype>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace glassbox {
namespace {

using json = nlohmann::json;

// The metadata keys sae_lens keeps when it converts a pre-6.0 config (LLM_METADATA_KEYS).
constexpr const char* kLegacyMetadataKeys[] = {
    "model_name",        "hook_name",         "model_class_name",
    "hook_head_index",   "model_from_pretrained_kwargs",
    "prepend_bos",       "exclude_special_tokens",
    "neuronpedia_id",    "context_size",      "seqpos_slice",
    "dataset_path",      "sae_lens_version",  "sae_lens_training_version",
    "hook_name_out",     "hook_head_index_out", "hf_hook_name", "hf_hook_name_out",
};

// sae_lens's DTYPE_MAP keys.
constexpr const char* kDtypeNames[] = {
    "float32", "float64", "float16", "bfloat16",
    "torch.float32", "torch.float64", "torch.float16", "torch.bfloat16",
};

absl::Status Invalid(absl::string_view label, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(label, ": ", message));
}

std::string StringOr(const json& object, const char* key, std::string fallback = "") {
  auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return fallback;
  return it->get<std::string>();
}

// The major version of a "6.1.0" / "6.0.0-rc.0" string; -1 when there is none.
int MajorVersion(const std::string& version) {
  if (version.empty() || !std::isdigit(static_cast<unsigned char>(version[0]))) return -1;
  int major = 0;
  for (char c : version) {
    if (!std::isdigit(static_cast<unsigned char>(c))) break;
    major = major * 10 + (c - '0');
    if (major > 100000) return major;
  }
  return major;
}

// sae_lens's handle_pre_6_0_config: renames, defaults, topk-as-activation-function and boolean
// normalize_activations, then the same field set the v6 layout has.
json ConvertLegacyConfig(const json& cfg) {
  json out = json::object();
  for (const auto& [key, value] : cfg.items()) {
    std::string name = key;
    if (name == "hook_point") name = "hook_name";
    if (name == "hook_point_head_index") name = "hook_head_index";
    if (name == "activation_fn_str") name = "activation_fn";
    out[name] = value;
  }
  if (!out.contains("apply_b_dec_to_input")) out["apply_b_dec_to_input"] = true;
  if (!out.contains("activation_fn")) out["activation_fn"] = "relu";
  if (!out.contains("architecture")) out["architecture"] = "standard";
  if (!out.contains("reshape_activations")) {
    const std::string hook = StringOr(out, "hook_name");
    out["reshape_activations"] = absl::StrContains(hook, "hook_z") ? "hook_z" : "none";
  }
  const json* fn_kwargs = out.contains("activation_fn_kwargs") &&
                                  out["activation_fn_kwargs"].is_object()
                              ? &out["activation_fn_kwargs"]
                              : nullptr;
  if (out["activation_fn"] == "topk" && fn_kwargs != nullptr && fn_kwargs->contains("k") &&
      !(*fn_kwargs)["k"].is_null()) {
    out["architecture"] = "topk";
    out["k"] = (*fn_kwargs)["k"];
  }
  if (out.contains("normalize_activations") && out["normalize_activations"].is_boolean()) {
    out["normalize_activations"] =
        out["normalize_activations"].get<bool>() ? "expected_average_only_in" : "none";
  }
  if (!out.contains("normalize_activations") || out["normalize_activations"].is_null()) {
    out["normalize_activations"] = "none";
  }
  if (out["architecture"] == "topk" && fn_kwargs != nullptr && fn_kwargs->contains("k")) {
    out["k"] = (*fn_kwargs)["k"];
  }
  json metadata = json::object();
  for (const char* key : kLegacyMetadataKeys) {
    if (out.contains(key)) metadata[key] = out[key];
  }
  out["metadata"] = metadata;
  return out;
}

}  // namespace

absl::string_view SaeArchitectureName(SaeArchitecture architecture) {
  switch (architecture) {
    case SaeArchitecture::kStandard: return "standard";
    case SaeArchitecture::kJumpRelu: return "jumprelu";
    case SaeArchitecture::kGated: return "gated";
    case SaeArchitecture::kTopK: return "topk";
  }
  return "?";
}

absl::string_view SaeNormalizationName(SaeNormalization normalization) {
  switch (normalization) {
    case SaeNormalization::kNone: return "none";
    case SaeNormalization::kConstantNormRescale: return "constant_norm_rescale";
    case SaeNormalization::kLayerNorm: return "layer_norm";
    case SaeNormalization::kExpectedAverageOnlyIn: return "expected_average_only_in";
  }
  return "?";
}

absl::StatusOr<SaeConfig> ParseSaeLensConfig(absl::string_view json_text,
                                             absl::string_view label) {
  json raw = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (raw.is_discarded()) return Invalid(label, "cfg.json is not valid JSON");
  if (!raw.is_object()) return Invalid(label, "cfg.json must hold a JSON object");

  std::string version = StringOr(raw, "sae_lens_version");
  if (version.empty() && raw.contains("metadata") && raw["metadata"].is_object()) {
    version = StringOr(raw["metadata"], "sae_lens_version");
  }
  const bool legacy = MajorVersion(version) < 6;
  const json cfg = legacy ? ConvertLegacyConfig(raw) : raw;

  SaeConfig config;
  config.sae_lens_version = version;

  // architecture
  if (!cfg.contains("architecture") || !cfg["architecture"].is_string()) {
    return Invalid(label, absl::StrCat("cfg.json (sae_lens ", version,
                                       " layout) has no \"architecture\" string"));
  }
  const std::string arch = cfg["architecture"].get<std::string>();
  if (arch == "standard") {
    config.architecture = SaeArchitecture::kStandard;
  } else if (arch == "jumprelu") {
    config.architecture = SaeArchitecture::kJumpRelu;
  } else if (arch == "gated") {
    config.architecture = SaeArchitecture::kGated;
  } else if (arch == "topk") {
    config.architecture = SaeArchitecture::kTopK;
  } else {
    return Invalid(label, absl::StrCat("unsupported SAE architecture \"", arch,
                                       "\"; Glassbox serves standard, jumprelu, gated and topk"));
  }

  // sizes
  for (const char* key : {"d_in", "d_sae"}) {
    if (!cfg.contains(key) || !cfg[key].is_number_integer() || cfg[key].get<int64_t>() <= 0) {
      return Invalid(label, absl::StrCat("\"", key, "\" must be a positive integer"));
    }
  }
  config.d_in = cfg["d_in"].get<int64_t>();
  config.d_sae = cfg["d_sae"].get<int64_t>();
  if (config.d_sae > INT32_MAX) {
    return Invalid(label, absl::StrCat("d_sae ", config.d_sae, " exceeds 2^31 - 1 features"));
  }

  if (cfg.contains("dtype") && !cfg["dtype"].is_null()) {
    if (!cfg["dtype"].is_string()) return Invalid(label, "\"dtype\" must be a string");
    config.dtype = cfg["dtype"].get<std::string>();
    bool known = false;
    for (const char* name : kDtypeNames) known = known || config.dtype == name;
    if (!known) {
      return Invalid(label, absl::StrCat("unknown dtype \"", config.dtype, "\"; expected one of ",
                                         absl::StrJoin(kDtypeNames, ", ")));
    }
  }

  if (cfg.contains("apply_b_dec_to_input") && !cfg["apply_b_dec_to_input"].is_null()) {
    if (!cfg["apply_b_dec_to_input"].is_boolean()) {
      return Invalid(label, "\"apply_b_dec_to_input\" must be true or false");
    }
    config.apply_b_dec_to_input = cfg["apply_b_dec_to_input"].get<bool>();
  }

  // normalize_activations
  std::string norm = "none";
  if (cfg.contains("normalize_activations") && !cfg["normalize_activations"].is_null()) {
    if (!cfg["normalize_activations"].is_string()) {
      return Invalid(label, "\"normalize_activations\" must be a string");
    }
    norm = cfg["normalize_activations"].get<std::string>();
  }
  if (norm == "none") {
    config.normalization = SaeNormalization::kNone;
  } else if (norm == "constant_norm_rescale") {
    config.normalization = SaeNormalization::kConstantNormRescale;
  } else if (norm == "layer_norm") {
    config.normalization = SaeNormalization::kLayerNorm;
  } else if (norm == "expected_average_only_in") {
    config.normalization = SaeNormalization::kExpectedAverageOnlyIn;
  } else if (norm == "covariance_whitening") {
    return Invalid(label,
                   "normalize_activations \"covariance_whitening\" is not supported: fold the "
                   "whitening into the weights first (sae_lens's fold_activation_whitening, which "
                   "its trainer runs when training finishes)");
  } else {
    return Invalid(label, absl::StrCat("unknown normalize_activations \"", norm,
                                       "\"; expected none, constant_norm_rescale, layer_norm or "
                                       "expected_average_only_in"));
  }

  // metadata
  json metadata = cfg.contains("metadata") && cfg["metadata"].is_object() ? cfg["metadata"]
                                                                          : json::object();
  config.metadata_json = metadata.dump();
  config.model_name = StringOr(metadata, "model_name");
  config.hook_name = StringOr(metadata, "hook_name");
  config.neuronpedia_id = StringOr(metadata, "neuronpedia_id");
  if (metadata.contains("hook_head_index") && !metadata["hook_head_index"].is_null()) {
    if (!metadata["hook_head_index"].is_number_integer() ||
        metadata["hook_head_index"].get<int64_t>() < 0) {
      return Invalid(label, "\"hook_head_index\" must be null or a non-negative integer");
    }
    config.hook_head_index = metadata["hook_head_index"].get<int64_t>();
  }

  // hook_z reshaping
  std::string reshape = "none";
  if (cfg.contains("reshape_activations") && !cfg["reshape_activations"].is_null()) {
    if (!cfg["reshape_activations"].is_string()) {
      return Invalid(label, "\"reshape_activations\" must be a string");
    }
    reshape = cfg["reshape_activations"].get<std::string>();
  }
  if (reshape == "hook_z") {
    // sae_lens refuses hook_z reshaping for a named hook that is not a z hook.
    if (!config.hook_name.empty() && !absl::EndsWith(config.hook_name, "_z")) {
      return Invalid(label, absl::StrCat("reshape_activations \"hook_z\" but hook_name \"",
                                         config.hook_name, "\" is not a hook_z hook"));
    }
    config.reshape_hook_z = true;
  } else if (reshape != "none") {
    return Invalid(label, absl::StrCat("unknown reshape_activations \"", reshape,
                                       "\"; expected none or hook_z"));
  }

  if (config.architecture == SaeArchitecture::kTopK) {
    config.k = 100;  // TopKSAEConfig's default when the file has no k
    if (cfg.contains("k") && !cfg["k"].is_null()) {
      if (!cfg["k"].is_number_integer()) return Invalid(label, "\"k\" must be an integer");
      config.k = cfg["k"].get<int64_t>();
    }
    if (config.k <= 0 || config.k > config.d_sae) {
      return Invalid(label, absl::StrCat("topk k = ", config.k, " must be in [1, d_sae = ",
                                         config.d_sae, "]"));
    }
    if (cfg.contains("rescale_acts_by_decoder_norm") &&
        !cfg["rescale_acts_by_decoder_norm"].is_null()) {
      if (!cfg["rescale_acts_by_decoder_norm"].is_boolean()) {
        return Invalid(label, "\"rescale_acts_by_decoder_norm\" must be true or false");
      }
      config.rescale_acts_by_decoder_norm = cfg["rescale_acts_by_decoder_norm"].get<bool>();
    }
  }
  if (legacy) {
    const std::string fn = StringOr(cfg, "activation_fn", "relu");
    if (fn != "relu" && !(fn == "topk" && config.architecture == SaeArchitecture::kTopK)) {
      config.warnings.push_back(absl::StrCat(
          "activation_fn \"", fn, "\" of this pre-6.0 config is ignored, as sae_lens 6 does: the ",
          arch, " architecture's own activation is used"));
    }
  }
  return config;
}

}  // namespace glassbox
