#include "server/service/served_sae.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/engine/sae/sae_loader.h"
#include "server/service/model_store.h"

namespace glassbox {
namespace {

absl::Status SaeError(const SaeSpec& spec, absl::StatusCode code, absl::string_view what) {
  return absl::Status(code, absl::StrCat("SAE \"", spec.name, "\" (", spec.path, "): ", what));
}

}  // namespace

absl::StatusOr<SaeSpec> ParseSaeSpec(absl::string_view flag_value) {
  const size_t eq = flag_value.find('=');
  const size_t at = flag_value.rfind('@');
  if (eq == absl::string_view::npos || eq == 0 || at == absl::string_view::npos || at < eq + 2 ||
      at + 1 == flag_value.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--sae expects NAME=PATH@MODEL or NAME=PATH@MODEL:HOOK (e.g. "
                     "res6=/saes/gpt2-res-6@gpt2), got \"",
                     flag_value, "\""));
  }
  SaeSpec spec{.name = std::string(flag_value.substr(0, eq)),
               .path = std::string(flag_value.substr(eq + 1, at - eq - 1))};
  const absl::string_view target = flag_value.substr(at + 1);
  const size_t colon = target.find(':');
  spec.model = std::string(target.substr(0, colon));
  if (colon != absl::string_view::npos) spec.hook = std::string(target.substr(colon + 1));
  if (spec.model.empty() || (colon != absl::string_view::npos && spec.hook.empty())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--sae \"", flag_value, "\": the model (and hook, after ':') must not be empty"));
  }
  return spec;
}

int64_t SaeHookWidth(const HookInfo& info, bool reshape_hook_z) {
  if (info.dims.size() < 3 || info.dim_names[0] != "batch" || info.dim_names[1] != "pos") return 0;
  if (info.kind == HookKind::kLn1Scale || info.kind == HookKind::kLn2Scale ||
      info.kind == HookKind::kLnFinalScale) {
    return 0;
  }
  if (info.dims.size() == 3) return info.dims[2].size;
  if (info.dims.size() == 4 && reshape_hook_z) return info.dims[2].size * info.dims[3].size;
  return 0;
}

absl::StatusOr<std::unique_ptr<ServedSae>> LoadServedSae(const SaeSpec& spec,
                                                         const ServedModel& model) {
  SaeLoadOptions options{.norm_scaling_factor = spec.norm_scaling_factor,
                         .hook_name = spec.hook,
                         .model_name = model.name};
  auto sae = LoadSae(spec.path, options);
  if (!sae.ok()) return SaeError(spec, sae.status().code(), sae.status().message());
  const SaeConfig& config = (*sae)->config();
  if (!spec.hook.empty() && !config.hook_name.empty() && config.hook_name != spec.hook) {
    return SaeError(
        spec, absl::StatusCode::kInvalidArgument,
        absl::StrCat("its cfg.json says hook_name \"", config.hook_name, "\" but the spec names \"",
                     spec.hook, "\"; drop the \":HOOK\" part or fix it"));
  }
  const std::string hook_name = config.hook_name.empty() ? spec.hook : config.hook_name;
  if (hook_name.empty()) {
    return SaeError(spec, absl::StatusCode::kInvalidArgument,
                    "no hook: the file does not name one; give it as NAME=PATH@MODEL:HOOK");
  }
  if (config.hook_head_index.has_value()) {
    return SaeError(spec, absl::StatusCode::kUnimplemented,
                    "SAEs trained on one head (hook_head_index) are not served yet");
  }
  const HookRegistry& hooks = model.model->hooks();
  auto hook = hooks.Resolve(hook_name);
  if (!hook.ok()) {
    return SaeError(spec, absl::StatusCode::kInvalidArgument,
                    absl::StrCat("model \"", model.name, "\" has no hook \"", hook_name, "\" (",
                                 hook.status().message(), ")"));
  }
  const HookInfo& info = hooks.info(*hook);
  const int64_t width = SaeHookWidth(info, config.reshape_hook_z);
  if (width == 0) {
    return SaeError(
        spec, absl::StatusCode::kInvalidArgument,
        absl::StrCat(hook_name, " has shape ", ShapeToString(info.ShapeFor(1, 1)),
                     " [batch, pos, ...]; an SAE reads [batch, pos, d] hooks, or "
                     "[batch, pos, head, d_head] ones with reshape_activations \"hook_z\""));
  }
  if (width != config.d_in) {
    return SaeError(spec, absl::StatusCode::kInvalidArgument,
                    absl::StrCat("d_in is ", config.d_in, " but ", hook_name, " of model \"",
                                 model.name, "\" is ", width,
                                 " wide; attach it to the model it was "
                                 "trained on"));
  }
  auto served = std::make_unique<ServedSae>();
  served->name = spec.name;
  served->path = spec.path;
  served->served_model = &model;
  served->hook = *hook;
  served->hook_name = hook_name;
  served->sae = *std::move(sae);
  return served;
}

}  // namespace glassbox
