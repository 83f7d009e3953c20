// Edits applied to an activation at a hook point during the forward pass: ablation, steering,
// patching. Semantics are TransformerLens run_with_hooks's: the hook's value is replaced by the
// edited one and everything downstream sees the edit; captures at the same hook see the edited
// value. Edits at one hook apply in the order given.
//
// An editable hook's value is viewed in one of two ways (EditAxes): token activations as
// [batch, pos, M, D], where D is the last axis (d_model, d_mlp, d_head) and M the head axis where
// there is one (hook_q/k/v/z), else 1; attention scores and patterns as [batch, head, query_pos,
// key_pos], where `positions` select queries and `dims` keys, both counted in real tokens.
#pragma once

#include <limits>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "server/engine/hook_points.h"

namespace glassbox {

enum class InterventionKind : uint8_t {
  kZero,        // x[S] = 0
  kScale,       // x[S] *= coefficient
  kAdd,         // x[S] += coefficient * value   (steering)
  kSet,         // x[S] = value
  kMeanBatch,   // x[S] = mean of x over the batch rows (per position), as TransformerLens's
                //        mean-ablation over the batch; needs rows of equal length to mean sensibly
  kMeanPos,     // x[S] = mean of x over each row's real positions
  kPatchRow,    // x[b, S] = x[source_rows[b], S]   (resample / patch from another batch item)
  kPatchFrom,   // x[b, S] = value[source_rows[b], S], value = the same hook in another run
                //           ([source batch, pos, ...], unpadded): activation patching
  kProjectOut,  // x[S] -= coefficient * (x . u) u, u = value / |value| along the last axis:
                //           directional ablation (Arditi et al., 2024); value [D] or [M, D]
  // Neuronpedia's steering methods, on the component along u as kProjectOut's:
  kOrthogonalDecomp,  // x[S] = (I - P) x + coefficient P x, P = u u^T
  kProjectionCap,     // x[S] += (clamp(x . u, projection_min, projection_max) - x . u) u
};

// Whether the edit acts on each token's component along a direction (kProjectOut,
// kOrthogonalDecomp, kProjectionCap): value is the direction, dims must be empty.
bool IsDirectional(InterventionKind kind);

// Which elements S an intervention touches; an empty list means all along that axis.
struct InterventionSelector {
  std::vector<int32_t> rows;       // batch rows
  std::vector<int32_t> positions;  // negative counts from each row's last real token
  std::vector<int32_t> heads;      // the M axis (the head axis of scores and patterns)
  // The last axis: neurons, d_model or d_head features. For scores and patterns, key positions,
  // resolved like `positions` (negative from each row's last real token).
  std::vector<int32_t> dims;
};

struct Intervention {
  HookId hook = -1;
  InterventionKind kind = InterventionKind::kZero;
  InterventionSelector select;
  float coefficient = 1.0f;
  // For kAdd / kSet: host f32 broadcast over S: [D], [M, D], one row ([pos, M, D], used for
  // every row), or the hook's full shape. For scores and patterns: [key_pos], [head, key_pos],
  // one row [head, query_pos, key_pos], or the full shape. Indexed by padded position.
  Tensor value;
  // For kPatchRow / kPatchFrom: the source row of each batch row (size batch); only selected
  // rows are read.
  std::vector<int32_t> source_rows;
  // For kPatchFrom: real tokens per source row, when the source is right-padded (a cached run
  // of ragged rows). Negative positions then count from the source row's own last token, and a
  // selected position must be real there. Empty: the source rows are unpadded.
  std::vector<int32_t> source_lengths;
  // For kProjectionCap: the bounds of x . u (at least one finite).
  float projection_min = -std::numeric_limits<float>::infinity();
  float projection_max = std::numeric_limits<float>::infinity();
};

// Whether the forward pass can edit this hook: the value flows on as a tensor. Norm scales and
// normalized values, and per-head results, are captured but not (yet) editable. Attention
// scores and patterns are editable: the forward pass recomputes what follows them.
bool IsEditableHook(HookKind kind);

// How an edit indexes a hook's value.
enum class EditAxes : uint8_t {
  kTokens,     // [batch, pos, M, D]
  kAttention,  // [batch, head, query_pos, key_pos]: hook_attn_scores, hook_pattern
};
EditAxes EditAxesOf(HookKind kind);

// Where each row's real tokens sit in the padded batch (left or right padding alike).
struct TokenLayout {
  std::vector<std::vector<int32_t>> real;  // real[b][p] = padded index of row b's p-th token

  static TokenLayout FromMask(const Tensor& mask);  // [batch, pos] i32, 1 = real
  // The padded index of position p of row b (p < 0 counts from the end); -1 when out of range.
  int32_t Index(int64_t b, int32_t p) const;
};

// Checks an intervention against the hook's shape for a request before any work is done.
absl::Status ValidateIntervention(const Intervention& edit, const HookInfo& info, int64_t batch,
                                  int64_t seq, const TokenLayout& layout);

// Applies `edit` to `value` (host f32, the full shape of the hook `info`), in place.
void ApplyIntervention(const Intervention& edit, const HookInfo& info, const TokenLayout& layout,
                       Tensor& value);

// Whether InterventionBackward needs the value the edit read (PROJECTION_CAP: which tokens it
// clamped).
bool BackwardReadsInput(const Intervention& edit);

// The backward of `edit` (every edit ValidateIntervention accepts, on token activations and on
// attention scores and patterns alike): `grad` [the hook's full shape, host f32], the gradient
// at the edited value, becomes the one at the value before the edit, Aᵀ · grad, in place.
// Zeroing, setting and
// patching from another run cut the gradient at the selected elements; scaling scales it; adding
// passes it; projections are symmetric, so their backward is themselves; means and row patches
// send each selected element's gradient back to the elements it was read from. A projection cap
// is the identity where x · u was within its bounds and the projection out of u where it was
// clamped (torch.clamp's gradient: 1 inside the closed interval), so it reads `input`, the value
// the edit was applied to (BackwardReadsInput; null otherwise).
void InterventionBackward(const Intervention& edit, const HookInfo& info, const TokenLayout& layout,
                          Tensor& grad, const Tensor* input = nullptr);

}  // namespace glassbox
