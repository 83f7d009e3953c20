// Activation patching sweeps, batched. transformer_lens.patching runs one forward pass per cell;
// here every cell becomes rows of a few large batches: the corrupted input repeated, each copy
// with one activation replaced by its value in the clean run.
//
// Definitions (docs/methods.md): m = metric on the patched run's logits at the last position,
// averaged over the prompt pairs; normalised effect = (m - m_corrupted) / (m_clean - m_corrupted).
#pragma once

#include <atomic>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/transformer.h"

namespace glassbox {

enum class SweepKind : uint8_t {
  kResidPre, kResidMid, kResidPost, kAttnOut, kMlpOut,  // [layer, pos]
  kHeadOutAllPos,                                     // hook_z, [layer, head]
  kHeadOutByPos,                                      // hook_z, [layer, pos, head]
  kQAllPos, kKAllPos, kVAllPos,                       // [layer, head] (k/v: kv heads)
  kPatternAllPos,                                     // hook_pattern, [layer, head]
  kMlpPostAllPos,                                     // mlp hook_post, [layer, neuron]
};

// What a sweep's cells are: which hook, and whether a cell is one position, one head (the
// kv heads for k and v) and one unit of the last axis (a neuron) of it.
struct SweepShape {
  HookKind hook;
  bool by_position;
  bool by_head;
  bool by_unit = false;
};
SweepShape ShapeOf(SweepKind kind);
// The heads of a by-head sweep of `kind`: the kv heads for k and v.
int64_t HeadsOf(const ModelConfig& config, SweepKind kind);

struct PatchingMetric {
  enum class Kind : uint8_t {
    kLogitDiff,  // logit[token_a] - logit[token_b] at the last position
    kLogProb,    // log p(token_a) at the last position
    kLoss,       // mean next-token loss over the row
  };
  Kind kind = Kind::kLogitDiff;
  int32_t token_a = 0;
  int32_t token_b = 0;
};

struct PatchingRequest {
  Tensor clean;      // [pairs, pos] i32, unpadded
  Tensor corrupted;  // the same shape
  SweepKind kind = SweepKind::kResidPre;
  PatchingMetric metric;
  int64_t max_rows_per_pass = 64;  // rows in one forward pass (each cell takes `pairs` rows)
  const std::atomic<bool>* cancelled = nullptr;
};

struct PatchingResult {
  // host f32: raw metric per cell, [layer, pos], [layer, head], [layer, pos, head] or
  // [layer, neuron]
  Tensor values;
  Tensor normalized;  // the same, normalised
  std::vector<std::string> dim_names;
  double clean_metric = 0;
  double corrupted_metric = 0;
  int forward_passes = 0;
  int backward_passes = 0;
};

// The request's checks both sweeps share: clean and corrupted [pairs, pos] i32 of one shape,
// metric tokens in the vocabulary, the swept hook present in the model.
absl::Status CheckPatchingRequest(const Transformer& model, const PatchingRequest& request);

// The result's shape and dim names for `kind` over `seq` positions.
Shape SweepResultShape(const ModelConfig& config, SweepKind kind, int64_t seq,
                       std::vector<std::string>* dim_names);

// The cells a sweep of `kind` patches over inputs of `positions` tokens: layers x positions,
// layers x heads, layers x positions x heads (kv heads for the k and v sweeps) or layers x
// neurons. Each cell is
// one patched copy of the corrupted batch, so this is what a sweep costs; the service bounds it.
int64_t SweepCells(const ModelConfig& config, SweepKind kind, int64_t positions);

absl::StatusOr<PatchingResult> RunPatchingSweep(const Transformer& model,
                                                const PatchingRequest& request);

}  // namespace glassbox
