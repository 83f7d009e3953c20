// Gradients of a scalar metric of the logits with respect to the activations at the model's hook
// points (TransformerLens's backward hooks): one forward pass that captures what the backward
// reads, then the backward of each block from the captured values (backward_ops.h), on the host in
// f32.
//
// Every architecture the forward pass runs (backward_walk.h); rows unpadded or right-padded.
#pragma once

#include <atomic>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/intervention.h"
#include "server/engine/sae/sae.h"
#include "server/engine/sae_hooks.h"
#include "server/engine/transformer.h"

namespace glassbox {

// The metric of each row: a logit, a logit difference or a log-probability at one position, or
// the row's mean next-token loss (over positions 0 .. seq-2, each predicting the next token); or
// an activation at one position of a hook: its dot product with a direction, or the activation
// of one feature of an SAE reading the hook (sae/feature_gradient.h). A metric at a hook needs
// no logits: the backward starts at the hook's block.
struct GradientMetric {
  enum class Kind : uint8_t { kLogit, kLogitDiff, kLogProb, kLoss, kDirection, kSaeFeature };
  Kind kind = Kind::kLogitDiff;
  int32_t position = -1;  // negative: from each row's end (-1: its last real token); not kLoss
  int32_t token_a = 0;    // the logit, the log-probability's token, or the difference's minuend
  int32_t token_b = 0;    // kLogitDiff: subtracted
  // kDirection and kSaeFeature: a token activation the backward passes through (the residual
  // stream, attn_out, mlp_out, hook_q/k/v/z, hook_rot_*, the MLP's pre/post, the embeddings).
  HookId hook = -1;
  Tensor direction;          // kDirection: host f32, the hook's elements at one position
  const Sae* sae = nullptr;  // kSaeFeature: an SAE whose d_in is the hook's elements at a position
  int32_t feature = 0;       // kSaeFeature
};
bool IsHookMetric(GradientMetric::Kind kind);
// The hooks a metric (or a Jacobian's output) may read: the token activations the backward walk
// passes through, where a gradient from outside the model's flow can be added (BackwardWalk's
// seeds).
bool IsMetricHookKind(HookKind kind);

// A hook_sae_* point of a request's splices: splices[splice] at `point`.
struct SaeHookRef {
  int splice = 0;
  SaeHook point = SaeHook::kActsPost;
};

struct GradientRequest {
  Tensor tokens;  // [batch, seq] i32, host
  // [batch, seq] i32, 1 for real tokens: right padding only (each row's real tokens first).
  // Undefined: every token is real. Positions count each row's real tokens.
  Tensor attention_mask;
  GradientMetric metric;
  std::vector<HookId> hooks;  // the gradients wanted
  // Edits of the forward pass, differentiated (ForwardBackwardRequest::interventions).
  std::vector<Intervention> interventions;
  std::vector<std::pair<HookId, SaeSplice>> splices;  // ForwardBackwardRequest::splices
  std::vector<SaeHookRef> sae_hooks;                  // gradients wanted at the splices' points
  const std::atomic<bool>* cancelled = nullptr;
};

struct GradientResult {
  std::vector<double> metric;  // each row's value
  // d(metric of row b) / d(hook value of row b), for each requested hook in order: host f32,
  // the hook's shape. Rows do not interact, so one backward of the sum gives every row's.
  std::vector<Tensor> gradients;
  std::vector<Tensor> sae_gradients;  // per sae_hooks entry, in the point's shape (SaeHookInfo)
};

absl::StatusOr<GradientResult> ComputeGradients(const Transformer& model,
                                                const GradientRequest& request);

// What the analyses built on gradients (attribution patching, integrated gradients) need from one
// pass: the metric, the forward values at some hooks and, unless `backward` is false, the
// gradients at others.
struct ForwardBackwardRequest {
  Tensor tokens;          // as GradientRequest's
  Tensor attention_mask;  // as GradientRequest's
  GradientMetric metric;
  // Edits in the forward pass, differentiated as torch autograd would through the same edits in
  // TransformerLens hooks: the gradient at an edited hook is the one at its edited value, and
  // upstream of it the edit's backward applies (a zeroed or set element passes nothing back).
  std::vector<Intervention> interventions;
  // SAEs spliced in at their hooks (after the hook's edits), differentiated as torch autograd
  // goes through sae_lens's SAE.forward (sae/feature_gradient.h, SpliceBackward): the gradient at
  // the hook is the one at the SAE's output, and upstream it flows through the features only.
  std::vector<std::pair<HookId, SaeSplice>> splices;
  std::vector<HookId> values;     // forward values kept
  std::vector<HookId> gradients;  // gradients computed
  // Gradients computed at the splices' hook_sae_* points (BackwardWalk::splice_gradient).
  std::vector<SaeHookRef> sae_gradients;
  bool backward = true;
  const std::atomic<bool>* cancelled = nullptr;
};

struct ForwardBackwardResult {
  std::vector<double> metric;
  std::vector<Tensor> values;     // host f32, per requested hook in order
  std::vector<Tensor> gradients;  // host f32, per requested hook in order (empty without backward)
  // Per splice in order: its input (hook_sae_input, [batch, seq, d_in]); host f32.
  std::vector<Tensor> splice_inputs;
  // Per sae_gradients entry (with backward), in the point's shape (SaeHookInfo); host f32.
  std::vector<Tensor> sae_gradients;
};

absl::StatusOr<ForwardBackwardResult> RunForwardBackward(const Transformer& model,
                                                         const ForwardBackwardRequest& request);

// Each row's real tokens: `seq` each without a mask; INVALID_ARGUMENT for a mask that is not a
// right padding of rows of at least one token.
absl::StatusOr<std::vector<int64_t>> RowLengths(const Tensor& tokens, const Tensor& attention_mask);

}  // namespace glassbox
