#include "server/engine/sae/sae_loader.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/dtype.h"
#include "base/float16.h"
#include "base/safetensors.h"
#include "base/file.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/engine/sae/npz.h"

namespace glassbox {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kWeightNames[] = {"W_enc", "W_dec", "b_enc",  "b_dec",
                                        "threshold", "b_gate", "r_mag", "b_mag"};

Tensor* Slot(SaeWeights& w, absl::string_view name) {
  if (name == "W_enc") return &w.W_enc;
  if (name == "W_dec") return &w.W_dec;
  if (name == "b_enc") return &w.b_enc;
  if (name == "b_dec") return &w.b_dec;
  if (name == "threshold") return &w.threshold;
  if (name == "b_gate") return &w.b_gate;
  if (name == "r_mag") return &w.r_mag;
  if (name == "b_mag") return &w.b_mag;
  return nullptr;
}

absl::Status Prefix(absl::string_view label, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat(label, ": ", status.message()));
}

absl::StatusOr<Tensor> ToF32(const TensorView& view, absl::string_view label) {
  Tensor out = Tensor::EmptyHost(DType::kF32, Shape(view.shape.begin(), view.shape.end()));
  float* dst = out.data<float>();
  const std::byte* src = view.bytes.data();
  const int64_t n = view.numel();
  switch (view.dtype) {
    case SafetensorsDtype::kF32:
      std::memcpy(dst, src, n * 4);
      break;
    case SafetensorsDtype::kF64:
      for (int64_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, src + i * 8, 8);
        dst[i] = static_cast<float>(v);
      }
      break;
    case SafetensorsDtype::kF16:
    case SafetensorsDtype::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t v;
        std::memcpy(&v, src + i * 2, 2);
        dst[i] = view.dtype == SafetensorsDtype::kF16 ? HalfToFloat(v) : BFloat16ToFloat(v);
      }
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(label, ": tensor \"", view.name, "\" has dtype ",
                       std::string(SafetensorsDtypeName(view.dtype)), "; SAE weights must be F32, F16, BF16 or F64"));
  }
  return out;
}

// sae_lens drops a scaling_factor of all ones (older checkpoints always wrote one) and refuses any
// other ("finetuning_scaling_factor", which sae_lens 6 no longer applies).
absl::Status CheckScalingFactor(const Tensor& t, absl::string_view label) {
  for (float v : t.span<float>()) {
    if (v != 1.0f) {
      return absl::InvalidArgumentError(absl::StrCat(
          label, ": the weights hold a scaling_factor that is not all ones (a finetuning scaling "
                 "factor); sae_lens 6 does not apply these either. Fold it into W_dec first."));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckExpectedDIn(const SaeConfig& config, const SaeLoadOptions& options,
                              absl::string_view label) {
  if (options.expected_d_in > 0 && config.d_in != options.expected_d_in) {
    return absl::InvalidArgumentError(absl::StrCat(
        label, ": SAE d_in = ", config.d_in, " does not match the hook's width ",
        options.expected_d_in, config.hook_name.empty() ? "" : " (SAE trained on ",
        config.hook_name, config.hook_name.empty() ? "" : ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Sae>> Build(SaeConfig config, SaeWeights weights,
                                           const SaeLoadOptions& options,
                                           absl::string_view label) {
  GB_RETURN_IF_ERROR(CheckExpectedDIn(config, options, label));
  auto sae = Sae::Create(std::move(config), std::move(weights));
  if (!sae.ok()) return Prefix(label, sae.status());
  return sae;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Sae>> LoadSaeLensDirectory(const std::string& dir,
                                                          const SaeLoadOptions& options) {
  const fs::path root(dir);
  const fs::path cfg_path = root / "cfg.json";
  const fs::path weights_path = root / "sae_weights.safetensors";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": no such directory"));
  }
  if (!fs::exists(cfg_path, ec)) {
    return absl::NotFoundError(absl::StrCat(
        dir, ": no cfg.json (a SAELens SAE directory holds cfg.json and sae_weights.safetensors)"));
  }
  GB_ASSIGN_OR_RETURN(std::string cfg_text, ReadFileToString(cfg_path));
  GB_ASSIGN_OR_RETURN(SaeConfig config, ParseSaeLensConfig(cfg_text, cfg_path.string()));

  // Weights.
  if (!fs::exists(weights_path, ec)) {
    return absl::NotFoundError(absl::StrCat(dir, ": no sae_weights.safetensors beside cfg.json"));
  }
  GB_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(weights_path.string()));
  SaeWeights weights;
  for (const TensorView& view : file->tensors()) {
    GB_ASSIGN_OR_RETURN(Tensor t, ToF32(view, file->path()));
    if (view.name == "scaling_factor") {
      GB_RETURN_IF_ERROR(CheckScalingFactor(t, file->path()));
      continue;
    }
    Tensor* slot = Slot(weights, view.name);
    if (slot == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          file->path(), ": unexpected tensor \"", view.name, "\" (SAE weights are named ",
          absl::StrJoin(kWeightNames, ", "), ")"));
    }
    *slot = std::move(t);
  }

  // The expected_average_only_in factor: the option, else the trainer's activation_scaler.json.
  const bool expected_average = config.normalization == SaeNormalization::kExpectedAverageOnlyIn;
  if (options.norm_scaling_factor.has_value()) {
    if (!expected_average) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir, ": a norm scaling factor was given but the SAE's normalize_activations is ",
          SaeNormalizationName(config.normalization), ", not expected_average_only_in"));
    }
    config.norm_scaling_factor = options.norm_scaling_factor;
  } else if (const fs::path scaler = root / "activation_scaler.json"; fs::exists(scaler, ec)) {
    GB_ASSIGN_OR_RETURN(std::string text, ReadFileToString(scaler));
    json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(scaler.string(), ": not a JSON object"));
    }
    if (j.contains("scaling_factor") && !j["scaling_factor"].is_null()) {
      if (!j["scaling_factor"].is_number()) {
        return absl::InvalidArgumentError(
            absl::StrCat(scaler.string(), ": scaling_factor must be a number or null"));
      }
      if (expected_average) {
        config.norm_scaling_factor = j["scaling_factor"].get<double>();
      } else {
        config.warnings.push_back(absl::StrCat(
            "activation_scaler.json's scaling_factor is ignored: normalize_activations is ",
            SaeNormalizationName(config.normalization)));
      }
    }
  }
  return Build(std::move(config), std::move(weights), options, dir);
}

absl::StatusOr<std::unique_ptr<Sae>> LoadGemmaScopeNpz(const std::string& path,
                                                       const SaeLoadOptions& options) {
  GB_ASSIGN_OR_RETURN(auto arrays, ReadNpzAsF32(path));
  if (options.norm_scaling_factor.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": Gemma Scope SAEs have no activation normalisation; drop the norm scaling factor"));
  }
  SaeWeights weights;
  for (auto& [key, tensor] : arrays) {
    // sae_lens's Gemma Scope loader renames w_* to W_*.
    const std::string name = absl::StartsWith(key, "w_") ? "W_" + key.substr(2) : key;
    if (name == "scaling_factor") {
      GB_RETURN_IF_ERROR(CheckScalingFactor(tensor, path));
      continue;
    }
    Tensor* slot = Slot(weights, name);
    if (slot == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": unexpected array \"", key,
          "\" (a Gemma Scope params.npz holds W_enc, W_dec, b_enc, b_dec, threshold)"));
    }
    *slot = std::move(tensor);
  }
  if (!weights.W_enc.defined() || weights.W_enc.rank() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no 2-D W_enc array [d_in, d_sae] to size the SAE from"));
  }
  SaeConfig config;
  config.architecture = SaeArchitecture::kJumpRelu;
  config.d_in = weights.W_enc.dim(0);
  config.d_sae = weights.W_enc.dim(1);
  config.apply_b_dec_to_input = options.apply_b_dec_to_input;
  config.normalization = SaeNormalization::kNone;
  config.hook_name = options.hook_name;
  config.model_name = options.model_name;
  // As sae_lens's pre-6.0 defaulting, which its Gemma Scope configs go through.
  config.reshape_hook_z = absl::StrContains(options.hook_name, "hook_z");
  config.metadata_json = json{{"hook_name", options.hook_name},
                              {"model_name", options.model_name},
                              {"source", "gemma_scope_npz"}}.dump();
  if (options.gemma_scope_embedding) {
    // sae_lens: W_enc / np.sqrt(d_in), W_dec * np.sqrt(d_in), in the weights' f32.
    const float root = static_cast<float>(std::sqrt(static_cast<double>(config.d_in)));
    for (float& w : weights.W_enc.span<float>()) w /= root;
    if (weights.W_dec.defined()) {
      for (float& w : weights.W_dec.span<float>()) w *= root;
    }
  }
  return Build(std::move(config), std::move(weights), options, path);
}

absl::StatusOr<std::unique_ptr<Sae>> LoadSae(const std::string& path,
                                             const SaeLoadOptions& options) {
  std::error_code ec;
  const fs::path p(path);
  if (!fs::exists(p, ec)) return absl::NotFoundError(absl::StrCat(path, ": no such file or directory"));
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / "cfg.json", ec)) return LoadSaeLensDirectory(path, options);
    if (fs::exists(p / "params.npz", ec)) return LoadGemmaScopeNpz((p / "params.npz").string(), options);
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": neither a SAELens directory (cfg.json + sae_weights.safetensors) nor a Gemma "
              "Scope directory (params.npz)"));
  }
  if (p.extension() == ".npz") return LoadGemmaScopeNpz(path, options);
  return absl::InvalidArgumentError(absl::StrCat(
      path, ": not an SAE; give a SAELens directory, a directory holding params.npz, or an .npz "
            "file"));
}

}  // namespace glassbox
