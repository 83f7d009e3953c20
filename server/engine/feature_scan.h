// A dataset scan's device work: runs batches of corpus contexts only as far as the targets'
// hooks, turns the captured values into each target's activations (neurons, SAE features,
// directions), and feeds every target's TargetAccumulator, in tiles of targets so that
// [tokens x targets] is held for one batch at most. The service drives the batches, the passes,
// checkpoints and jobs (server/service/scan_job.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/engine/sae/sae.h"
#include "server/engine/scan_accumulator.h"
#include "server/engine/transformer.h"

namespace glassbox {

// Targets read from one hook.
struct ScanTargetGroup {
  enum class Kind : uint8_t {
    kNeurons,      // the hook's trailing axes: [batch, pos, d...] -> value[..., index]
    kSaeFeatures,  // the SAE's encoding of the hook's value
    kDirections,   // value · direction
    kHeadNorms,    // per head, the L2 norm of its slice: [batch, pos, head, d] (hook_result: the
                   // head's write into the residual stream)
    kAttentionTo,  // per head, the attention a query pays to one key: hook_pattern
                   // [batch, head, query, key] at key = key_position, or query - key_offset
  };
  Kind kind = Kind::kNeurons;
  HookId hook = -1;
  std::vector<int32_t> indices;  // neurons, features or heads; empty: all of them
  const Sae* sae = nullptr;      // kSaeFeatures; outlives the scan
  Tensor directions;             // kDirections: host f32 [n, d]
  // kAttentionTo: exactly one is >= 0. A key the query cannot see (after it, or before the
  // context) gives 0, as the pattern does.
  int32_t key_position = -1;
  int32_t key_offset = -1;

  // The group's width before selection: d, d_sae, the number of directions or of heads.
  int64_t Width(const HookInfo& info) const;
  int64_t size(const HookInfo& info) const {
    return indices.empty() ? Width(info) : static_cast<int64_t>(indices.size());
  }
};

// The group's activations of `value`, the hook's captured value for whole rows (host f32, the
// hook's shape: [batch, pos, ...], or [batch, head, query, key] for kAttentionTo):
// [batch * pos, Width()], every unit of the group (indices are not applied).
absl::StatusOr<Tensor> GroupActivations(const ScanTargetGroup& group, const HookInfo& info,
                                         const Tensor& value);

struct ScanPlan {
  std::vector<ScanTargetGroup> groups;  // targets are numbered group by group
  ScanOptions options;
};

// INVALID_ARGUMENT unless every group reads a hook its kind can read ([batch, pos, ...]; a head
// hook for kHeadNorms, hook_pattern for kAttentionTo), its indices are in range and distinct, its
// SAE, directions or key fit, and the options are usable.
absl::Status ValidateScanPlan(const Transformer& model, const ScanPlan& plan);
int64_t ScanTargetCount(const Transformer& model, const ScanPlan& plan);

// Every target's accumulator and how far the scan has come; serialisable for checkpoints.
struct ScanState {
  int pass = 1;              // 1, 2, then 3 when finished
  int64_t next_context = 0;  // the first context of this pass not yet observed
  std::vector<TargetAccumulator> targets;

  std::string Serialize() const;
  // DATA_LOSS on a truncated or foreign state; `targets` is the count the plan expects.
  static absl::StatusOr<ScanState> Deserialize(absl::string_view bytes, int64_t targets);
  int64_t Bytes() const;
};

ScanState NewScanState(const Transformer& model, const ScanPlan& plan);

// The first pass's target activations, kept (within a byte budget) so that the second pass reads
// them instead of running the model again: per batch, every target's activations, target-major.
// It is used only when it holds every batch from context 0 in order (a scan resumed part-way
// through the first pass runs the model again); not part of a checkpoint.
class ScanReplay {
 public:
  explicit ScanReplay(int64_t max_bytes) : max_bytes_(max_bytes) {}
  // Pass 1: room for a batch of `contexts` contexts (`values` floats) at `first_context`; null
  // (and the replay is dropped for good) when it does not fit or does not continue the batches
  // held.
  float* Reserve(int64_t first_context, int64_t contexts, int64_t values);
  // Pass 2: the batch that starts at `first_context` with `values` floats, or null.
  const float* Find(int64_t first_context, int64_t values) const;
  int64_t bytes() const { return bytes_; }

 private:
  int64_t max_bytes_, bytes_ = 0;
  bool dropped_ = false;
  int64_t next_context_ = 0;
  std::vector<std::pair<int64_t, std::vector<float>>> batches_;  // (first context, values)
};

// Observes `contexts` ([n, context_length] i32, host; every token real) as the contexts
// state.next_context .. + n of the current pass, then advances next_context.
// With `replay`, the first pass keeps its activations there and the second reads them back.
absl::Status ScanContexts(const Transformer& model, const ScanPlan& plan, const Tensor& contexts,
                          ScanState& state, const std::atomic<bool>* cancelled = nullptr,
                          ScanReplay* replay = nullptr);
// Ends pass 1 (starting pass 2 when the options need one) or pass 2 (ordering the records).
void EndScanPass(const ScanPlan& plan, ScanState& state);

}  // namespace glassbox
