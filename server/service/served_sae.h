// SAEs a server holds: each loaded once at start and attached to one served model and one of its
// hook points, checked to fit it (the SAE's d_in is the hook's width).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/engine/hook_points.h"
#include "server/engine/sae/sae.h"

namespace glassbox {

struct ServedModel;

struct SaeSpec {
  std::string name;
  std::string path;   // a SAELens directory, a Gemma Scope params.npz or a directory holding one
  std::string model;  // the served model it reads
  // The hook, for files that do not name it (npz); must agree with a cfg.json's hook_name.
  std::string hook;
  std::optional<double> norm_scaling_factor;  // expected_average_only_in (SaeLoadOptions)
};

// Parses "NAME=PATH@MODEL" or "NAME=PATH@MODEL:HOOK" (the --sae flag). The last '@' splits path
// and model, so paths may contain '@'.
absl::StatusOr<SaeSpec> ParseSaeSpec(absl::string_view flag_value);

struct ServedSae {
  std::string name;
  std::string path;
  const ServedModel* served_model = nullptr;
  HookId hook = -1;
  std::string hook_name;
  std::unique_ptr<Sae> sae;
};

// Loads the SAE and attaches it to `model`: the hook must exist on the model, and d_in must be
// the hook's width (d_model, d_mlp, or n_heads·d_head for hook_z SAEs, which must reshape).
// Errors name the SAE and say what to change.
absl::StatusOr<std::unique_ptr<ServedSae>> LoadServedSae(const SaeSpec& spec,
                                                         const ServedModel& model);

// The width an SAE at this hook reads: the last axis, or heads x last for [batch, pos, head,
// d_head] hooks; 0 for hooks no SAE can read (attention patterns, norm scales).
int64_t SaeHookWidth(const HookInfo& info, bool reshape_hook_z);

}  // namespace glassbox
