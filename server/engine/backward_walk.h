// The backward walk of the generic block, every architecture the forward pass runs (norms before,
// after or around attention and the MLP, parallel blocks, rotary, gated MLPs, grouped kv heads,
// q/k norms, soft caps, sliding windows): from a gradient at the logits, or seeds at token
// activations, down through the blocks to the embeddings, filling the gradient at every hook on the
// way from the values the forward pass captured there (BackwardInputs) and the op backwards of
// backward_ops.h. On the host, in f32. Rows are right-padded: token s of a row is at position s.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/host_captures.h"
#include "server/engine/intervention.h"
#include "server/engine/sae/feature_gradient.h"
#include "server/engine/sae/sae.h"
#include "server/engine/transformer.h"

namespace glassbox {

// The hooks whose forward values a walk down from the output of block `top_layer` reads, and the
// final norm's when `final_norm` (a walk from the logits).
std::vector<HookId> BackwardInputs(const Transformer& model, int top_layer, bool final_norm);

class BackwardWalk {
 public:
  // `captured` holds BackwardInputs' values of a pass over [batch, seq] rows. Gradients are kept
  // at the `wanted` hooks only. `edits` are the pass's interventions, whose
  // backward the walk goes through; `layout` places the rows' real tokens for them.
  BackwardWalk(const Transformer& model, const HostCaptures& captured, int64_t batch, int64_t seq,
               const std::vector<HookId>& wanted, const std::vector<Intervention>& edits = {},
               TokenLayout layout = {});

  // `dlogits` [rows.size(), vocab] holds the gradient at the logits of the flattened rows `rows`
  // (b * seq + position); every other row's is zero, so the unembedding's backward runs over
  // those rows only. Walks down to the embeddings.
  absl::Status FromLogits(const Tensor& dlogits, const std::vector<int64_t>& rows);

  // An SAE spliced in at `hook` (after its edits): the walk goes back through it
  // (SpliceBackward) from the hook's gradient. `input` is the splice's input (hook_sae_input).
  void AddSplice(HookId hook, const Sae& sae, const SpliceOptions& options, Tensor input) {
    splices_[hook] = {.sae = &sae, .options = &options, .input = std::move(input)};
  }
  // The hook's value before its edits: for edits whose backward reads what they were applied to
  // (BackwardReadsInput), and at hook_pattern softmax's output, which its backward reads.
  void AddEditInput(HookId hook, Tensor before_edits) {
    edit_inputs_[hook] = std::move(before_edits);
  }
  // A gradient arriving at a hook from outside the model's flow (a metric read there): added to
  // what flows down to it. Before FromSeeds or the other walks.
  void AddSeed(HookId id, Tensor seed) { seeds_[id] = std::move(seed); }
  // Walks down from block `top_layer` (-1: the embeddings only) through block `lowest_layer` (and
  // to the embeddings when it is 0), with nothing flowing in from above but the seeds.
  absl::Status FromSeeds(int top_layer, int lowest_layer = 0);

  // The gradient at a wanted hook, in its shape; undefined for hooks the walk did not reach.
  const Tensor& gradient(HookId id) const { return grads_[id]; }
  // The gradient at a hook_sae_* point of the SAE spliced at `hook`, flattened to [rows, width]
  // (hook_sae_acts_post's after the feature edits; hook_sae_error's and hook_sae_output's are
  // the hook's own: the error is added, though sae_lens computes it under no_grad); undefined
  // when the walk did not go through one there.
  const Tensor& splice_gradient(HookId hook, SaeHook point) const;

 private:
  absl::StatusOr<Tensor> Host(const Tensor& t) const;
  const Tensor& Captured(HookKind kind, int layer) const;
  bool Wanted(HookKind kind, int layer) const;
  // Stores `grad` at the hook (when the model has it and it is wanted) in the hook's shape.
  void Set(HookKind kind, int layer, const Tensor& grad);
  // Adds the hook's seed, Sets, then goes through the backward of the hook's SAE splice and of
  // its edits (last first): the gradient at the value before them, in `arriving`'s shape.
  absl::StatusOr<Tensor> Through(HookKind kind, int layer, const Tensor& arriving);

  // A norm's backward from the gradient at its output; returns the gradient at its input, in the
  // captured value's shape. `centered`: LayerNorm, else RMSNorm.
  absl::StatusOr<Tensor> Norm(const Tensor& dy, HookKind normalized, HookKind scale, int layer,
                              const Tensor& weight, bool centered);
  absl::StatusOr<Tensor> ModelNorm(const Tensor& dy, HookKind normalized, HookKind scale, int layer,
                                   const Tensor& weight) {
    return Norm(dy, normalized, scale, layer, weight, centered_);
  }
  // Block `l`'s MLP branch: from the gradient at hook_mlp_out to the part of the gradient at the
  // residual stream it reads that flows through the MLP.
  absl::StatusOr<Tensor> MlpBranch(int l, const Tensor& d_out);
  // Block `l`'s attention branch: the same from hook_attn_out.
  absl::StatusOr<Tensor> AttentionBranch(int l, const Tensor& d_out);
  // From the gradient at the rotated (or, without rotary, plain) queries or keys down to
  // hook_q / hook_k, through rotary and the q/k norm, setting their hooks on the way.
  absl::StatusOr<Tensor> QueryKeyPath(int l, Tensor d, bool query);
  // Blocks `top` down to `lowest` from the gradient at block `top`'s hook_resid_post, then the
  // embeddings when `lowest` is 0.
  absl::Status Down(int top, int lowest, Tensor d_post);

  const Transformer& model_;
  const ModelConfig& c_;
  const HostCaptures& captured_;
  const int64_t batch_, seq_;
  const bool centered_;
  std::vector<bool> wanted_;                             // by HookId
  std::vector<Tensor> grads_;                            // by HookId
  std::vector<std::vector<const Intervention*>> edits_;  // by HookId, in the pass's order
  std::vector<Tensor> edit_inputs_;                      // by HookId: AddEditInput's
  std::vector<Tensor> seeds_;                            // by HookId
  struct Splice {
    const Sae* sae = nullptr;
    const SpliceOptions* options = nullptr;
    Tensor input;
    // Filled by the walk: the gradients at the SAE's output and through it.
    Tensor output_gradient;
    SpliceGradients through;
  };
  std::vector<Splice> splices_;  // by HookId; sae == nullptr: none
  TokenLayout layout_;
};

}  // namespace glassbox
