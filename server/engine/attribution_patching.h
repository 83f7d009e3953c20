// Attribution patching (Nanda 2023; Kramár et al. 2024, "AtP*"): the first-order estimate of a
// whole activation-patching sweep from two forward passes and one backward pass. Patching cell c
// (the clean value of some elements of a hook into the corrupted run) changes the metric by about
//   Σ_{elements e of c} (clean_e − corrupted_e) · ∂m/∂e |corrupted run,
// m averaged over the pairs as the sweep averages it. The result has the exact sweep's shape and
// meaning (patching.h): values = m_corrupted + the estimate, normalized = estimate /
// (m_clean − m_corrupted), so the two maps compare cell by cell.
#pragma once

#include "absl/status/statusor.h"
#include "server/engine/patching.h"
#include "server/engine/transformer.h"

namespace glassbox {

// The request of the exact sweep (max_rows_per_pass unused). Needs a model gradients support
// (gradients.h): UNIMPLEMENTED otherwise.
absl::StatusOr<PatchingResult> RunAttributionPatching(const Transformer& model,
                                                      const PatchingRequest& request);

}  // namespace glassbox
