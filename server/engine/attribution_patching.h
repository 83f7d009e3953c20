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
#include "server/engine/sae/sae.h"
#include "server/engine/transformer.h"

namespace glassbox {

// The request of the exact sweep (max_rows_per_pass unused). Needs a model gradients support
// (gradients.h): UNIMPLEMENTED otherwise.
absl::StatusOr<PatchingResult> RunAttributionPatching(const Transformer& model,
                                                      const PatchingRequest& request);

// Attribution patching over an SAE's features (Marks et al. 2024, "Sparse feature circuits"):
// with the SAE spliced in at its hook with the error term (so the model computes what it does
// without it, and the error is a node of its own), patching feature i at position p changes the
// metric by about (f_clean − f_corrupted)[p, i] · ∂m/∂f[p, i] at the corrupted run, the gradient
// through the splice as sae_lens's (gradients.h). The error term e = x − x̂(x) is a node per
// position, (e_clean − e_corrupted) · ∂m/∂e with ∂m/∂e the gradient at the SAE's output, which
// e is added to. The result is [pos, d_sae + 1] (column d_sae the error node), averaged over
// the pairs and normalised as the other sweeps; `request.kind` is unused.
absl::StatusOr<PatchingResult> RunSaeFeatureAttributionPatching(const Transformer& model,
                                                                const PatchingRequest& request,
                                                                HookId hook, const Sae& sae);

}  // namespace glassbox
