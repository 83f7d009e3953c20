// An SAE spliced into the forward pass at its hook (HookedSAETransformer semantics): the hook's
// value, after any interventions there, is replaced by the SAE's output, and the hook_sae_*
// points ("<hook>.hook_sae_acts_post", ...) can be captured like any other hook.
#pragma once

#include <array>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/hook_points.h"
#include "server/engine/intervention.h"
#include "server/engine/sae/sae.h"

namespace glassbox {

struct SaeSplice {
  const Sae* sae = nullptr;
  // Edits, the error term, and which hook_sae_* values to compute (capture[point]).
  SpliceOptions options;
  // For each captured point, the id and info the CaptureSink receives it under (ids past the
  // model's registry are the caller's to number); -1 when the point is not captured.
  std::array<HookId, kNumSaeHooks> capture_ids = {-1, -1, -1, -1, -1, -1};
  std::array<HookInfo, kNumSaeHooks> capture_infos;
};

// The hook point "<base>.hook_sae_*" as a capture sees it: [batch, pos, d_in] for input and
// recons, [batch, pos, d_sae] for the activations, the base hook's shape for error and output.
HookInfo SaeHookInfo(const HookInfo& base, const Sae& sae, SaeHook point);

// The edit's token rows (SpliceOptions / FeatureEdit.tokens) for a request's row and position
// selection over a [batch, seq] layout: empty when both are empty (every token). Positions may
// be negative (from each row's last real token); INVALID_ARGUMENT when one is outside a row.
absl::StatusOr<std::vector<int64_t>> SaeEditTokens(const std::vector<int32_t>& rows,
                                                   const std::vector<int32_t>& positions,
                                                   const TokenLayout& layout, int64_t seq);

}  // namespace glassbox
