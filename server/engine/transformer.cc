#include "server/engine/transformer.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/float16.h"
#include "base/status_macros.h"
#include "server/engine/host_math.h"

namespace glassbox {
namespace {

// State of one forward pass: the request's shapes and the plan that decides what is hooked.
class ForwardPass {
 public:
  ForwardPass(const ModelConfig& config, const HookRegistry& hooks, const ModelWeights& weights,
              Backend& backend, DType dtype, const HookPlan& plan, CaptureSink* sink, int64_t batch,
              int64_t seq)
      : c_(config),
        hooks_(hooks),
        w_(weights),
        be_(backend),
        dtype_(dtype),
        plan_(plan),
        sink_(sink),
        batch_(batch),
        seq_(seq),
        tokens_(batch * seq) {}

  TokenLayout layout_;  // where each row's real tokens are, for position selectors
  // Decoding: the cache the pass's keys and values go into (at `cache_slots_`, device i32
  // [batch * seq]) and attention reads from.
  KvCache* cache_ = nullptr;
  Tensor cache_slots_;

  absl::StatusOr<ForwardOutput> Run(const Tensor& ids, const Tensor& mask, const Tensor& positions,
                                    const Tensor& last_index, const Tensor& targets,
                                    const ForwardOptions& options);

 private:
  bool Touched(HookKind kind, int layer) const { return plan_.Touches(hooks_.Find(kind, layer)); }

  // The single place where the forward pass meets the plan: edits replace `value` by an edited
  // copy (never in place: a sink may hold the original, e.g. the previous block's resid_post),
  // then captures see the edited value.
  absl::Status AtHook(HookKind kind, int layer, Tensor& value) {
    const HookId id = hooks_.Find(kind, layer);
    if (id < 0 || !plan_.Touches(id)) return absl::OkStatus();
    const HookInfo& info = hooks_.info(id);
    const Shape shape = info.ShapeFor(batch_, seq_);
    const SaeSplice* splice = plan_.SaeSpliceAt(id);
    if (plan_.HasEdits(id) || splice != nullptr) {
      // Always a fresh host copy, even on the CPU: the original may be held by a sink.
      Tensor host = Tensor::EmptyHost(DType::kF32, shape);
      GB_ASSIGN_OR_RETURN(Tensor f32, CopyToHostF32(be_, value));
      std::copy_n(f32.data<float>(), host.numel(), host.data<float>());
      if (const HookId before = plan_.BeforeEditsCaptureId(id); before >= 0) {
        if (sink_ == nullptr)
          return absl::InvalidArgumentError(
              "the plan captures a value before its edits but no sink receives it");
        // A copy: the edits below change `host` in place.
        Tensor kept = Tensor::EmptyHost(DType::kF32, shape);
        std::copy_n(host.data<float>(), host.numel(), kept.data<float>());
        GB_RETURN_IF_ERROR(sink_->OnCapture(before, info, kept));
      }
      for (const Intervention& edit : plan_.Edits(id)) ApplyIntervention(edit, info, layout_, host);
      if (splice != nullptr) {
        GB_ASSIGN_OR_RETURN(host, SpliceSae(*splice, host));
      }
      GB_ASSIGN_OR_RETURN(Tensor edited, Place(host));
      value = edited.Reshape(value.shape());
    }
    if (!plan_.Captures(id)) return absl::OkStatus();
    return sink_->OnCapture(id, info, value.Reshape(shape));
  }

  // The SAE's output for the hook's (edited) host value; its hook_sae_* captures go to the sink
  // first, in sae_lens's order (input, acts_pre, acts_post, recons, error, output).
  absl::StatusOr<Tensor> SpliceSae(const SaeSplice& splice, const Tensor& host) {
    GB_ASSIGN_OR_RETURN(SpliceResult result, splice.sae->Splice(host, splice.options));
    for (int p = 0; p < kNumSaeHooks; ++p) {
      if (splice.capture_ids[p] < 0) continue;
      if (sink_ == nullptr)
        return absl::InvalidArgumentError(
            "the plan captures hook_sae_* points but no sink receives them");
      const HookInfo& info = splice.capture_infos[p];
      const Tensor& captured = result.captured[p].defined() ? result.captured[p] : result.output;
      GB_RETURN_IF_ERROR(sink_->OnCapture(splice.capture_ids[p], info,
                                          captured.Reshape(info.ShapeFor(batch_, seq_))));
    }
    return result.output;
  }

  // A host f32 tensor moved to the backend in the pass's dtype.
  absl::StatusOr<Tensor> Place(const Tensor& host) {
    if (be_.device() == Device::kCpu && dtype_ == DType::kF32) return host;
    GB_ASSIGN_OR_RETURN(Tensor f32, be_.Allocate(DType::kF32, host.shape()));
    GB_RETURN_IF_ERROR(be_.CopyFromHost(host, f32));
    if (dtype_ == DType::kF32) return f32;
    GB_ASSIGN_OR_RETURN(Tensor converted, be_.Allocate(dtype_, host.shape()));
    GB_RETURN_IF_ERROR(be_.Convert(f32, converted));
    return converted;
  }

  absl::StatusOr<Tensor> New(Shape shape) { return be_.Allocate(dtype_, std::move(shape)); }

  // LayerNorm or RMSNorm per the config, emitting the scale and normalized hooks.
  absl::StatusOr<Tensor> Norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                              HookKind scale_kind, HookKind normalized_kind, int layer);
  // The q or k RMSNorm of x [batch, pos, heads, d_head], over each head's features (Qwen3) or
  // the whole projection (OLMo-2) as the weight's size says, emitting its scale and normalized
  // hooks.
  absl::StatusOr<Tensor> QkNormOf(const Tensor& x, const Tensor& weight, HookKind scale_kind,
                                  HookKind normalized_kind, int layer);
  absl::StatusOr<Tensor> Block(int layer, Tensor resid, const Tensor& mask,
                               const Tensor& positions);
  absl::StatusOr<Tensor> Attention(int layer, const BlockWeights& b, const Tensor& normalized,
                                   const Tensor& mask, const Tensor& positions);
  // The rest of attention after an edit at hook_attn_scores or hook_pattern, computed as
  // TransformerLens does, on the host in f32: the pattern from the (edited) scores when they
  // were edited, its hook, then z = pattern · v. Returns z, placed for the pass.
  absl::StatusOr<Tensor> AttendEdited(int layer, const Tensor& scores, Tensor pattern,
                                      const Tensor& v, bool scores_edited);
  absl::StatusOr<Tensor> Mlp(int layer, const BlockWeights& b, const Tensor& normalized);

  const ModelConfig& c_;
  const HookRegistry& hooks_;
  const ModelWeights& w_;
  Backend& be_;
  DType dtype_;
  const HookPlan& plan_;
  CaptureSink* sink_;
  int64_t batch_, seq_, tokens_;
};

const Tensor* OrNull(const Tensor& t) { return t.defined() ? &t : nullptr; }

// `value` as a float of `dtype` would hold it (f16 and bf16 round to nearest even).
float RoundedTo(DType dtype, double value) {
  const float f = static_cast<float>(value);
  if (dtype == DType::kBF16) return BFloat16ToFloat(FloatToBFloat16(f));
  if (dtype == DType::kF16) return HalfToFloat(FloatToHalf(f));
  return f;
}
Tensor* OutOrNull(Tensor& t) { return t.defined() ? &t : nullptr; }

absl::StatusOr<Tensor> ForwardPass::Norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                         HookKind scale_kind, HookKind normalized_kind, int layer) {
  GB_ASSIGN_OR_RETURN(Tensor out, New({tokens_, c_.d_model}));
  // TransformerLens's hook_normalized holds the value before the norm's weight and bias, for
  // LayerNorm and RMSNorm alike; it and the scale are computed only when hooked.
  Tensor scale, unweighted;
  if (Touched(scale_kind, layer)) {
    GB_ASSIGN_OR_RETURN(scale, New({tokens_, 1}));
  }
  if (Touched(normalized_kind, layer)) {
    GB_ASSIGN_OR_RETURN(unweighted, New({tokens_, c_.d_model}));
  }
  const float eps = static_cast<float>(c_.norm_eps);
  if (c_.norm == NormKind::kLayerNorm) {
    GB_RETURN_IF_ERROR(be_.LayerNorm(x, OrNull(weight), OrNull(bias), eps, out, OutOrNull(scale),
                                     OutOrNull(unweighted)));
  } else {
    GB_RETURN_IF_ERROR(
        be_.RmsNorm(x, OrNull(weight), eps, out, OutOrNull(scale), OutOrNull(unweighted)));
  }
  GB_RETURN_IF_ERROR(AtHook(scale_kind, layer, scale));
  GB_RETURN_IF_ERROR(AtHook(normalized_kind, layer, unweighted));
  return out;
}

absl::StatusOr<Tensor> ForwardPass::QkNormOf(const Tensor& x, const Tensor& weight,
                                             HookKind scale_kind, HookKind normalized_kind,
                                             int layer) {
  // Rows of the weight's width: each head's d_head features, or the whole projection.
  const int64_t width = weight.numel(), rows = x.numel() / width;
  const Tensor flat = x.Reshape({rows, width});
  GB_ASSIGN_OR_RETURN(Tensor out, New({rows, width}));
  Tensor scale, unweighted;
  if (Touched(scale_kind, layer)) {
    GB_ASSIGN_OR_RETURN(scale, New({rows, 1}));
  }
  if (Touched(normalized_kind, layer)) {
    GB_ASSIGN_OR_RETURN(unweighted, New({rows, width}));
  }
  GB_RETURN_IF_ERROR(be_.RmsNorm(flat, &weight, static_cast<float>(c_.norm_eps), out,
                                 OutOrNull(scale), OutOrNull(unweighted)));
  GB_RETURN_IF_ERROR(AtHook(scale_kind, layer, scale));
  GB_RETURN_IF_ERROR(AtHook(normalized_kind, layer, unweighted));
  return out.Reshape(x.shape());
}

absl::StatusOr<Tensor> ForwardPass::Attention(int layer, const BlockWeights& b,
                                              const Tensor& normalized, const Tensor& mask,
                                              const Tensor& positions) {
  const int64_t h = c_.n_heads, hkv = c_.n_kv_heads, dh = c_.d_head;
  GB_ASSIGN_OR_RETURN(Tensor qkv, New({tokens_, (h + 2 * hkv) * dh}));
  GB_RETURN_IF_ERROR(be_.Linear(normalized, b.qkv_w, OrNull(b.qkv_b), Activation::kIdentity, qkv));
  GB_ASSIGN_OR_RETURN(Tensor q, New({batch_, seq_, h, dh}));
  GB_ASSIGN_OR_RETURN(Tensor k, New({batch_, seq_, hkv, dh}));
  GB_ASSIGN_OR_RETURN(Tensor v, New({batch_, seq_, hkv, dh}));
  GB_RETURN_IF_ERROR(be_.SplitQkv(qkv, q, k, v));
  GB_RETURN_IF_ERROR(AtHook(HookKind::kQ, layer, q));
  GB_RETURN_IF_ERROR(AtHook(HookKind::kK, layer, k));
  GB_RETURN_IF_ERROR(AtHook(HookKind::kV, layer, v));
  if (c_.qk_norm != QkNorm::kNone) {
    GB_ASSIGN_OR_RETURN(
        q, QkNormOf(q, b.q_norm_w, HookKind::kQNormScale, HookKind::kQNormNormalized, layer));
    GB_ASSIGN_OR_RETURN(
        k, QkNormOf(k, b.k_norm_w, HookKind::kKNormScale, HookKind::kKNormNormalized, layer));
  }

  if (c_.positional == PositionalKind::kRotary) {
    GB_ASSIGN_OR_RETURN(Tensor rot_q, New(q.shape()));
    GB_ASSIGN_OR_RETURN(Tensor rot_k, New(k.shape()));
    const int rotary_dim = static_cast<int>(c_.rotary_dim);
    const RotaryStyle style =
        c_.rotary_adjacent_pairs ? RotaryStyle::kAdjacentPairs : RotaryStyle::kHalf;
    // Gemma-3's sliding layers have their own base.
    const bool local = w_.rope_cos_local.defined() && c_.WindowOf(layer) > 0;
    const Tensor& cos = local ? w_.rope_cos_local : w_.rope_cos;
    const Tensor& sin = local ? w_.rope_sin_local : w_.rope_sin;
    GB_RETURN_IF_ERROR(be_.Rotary(q, cos, sin, positions, rotary_dim, rot_q, style));
    GB_RETURN_IF_ERROR(be_.Rotary(k, cos, sin, positions, rotary_dim, rot_k, style));
    GB_RETURN_IF_ERROR(AtHook(HookKind::kRotQ, layer, rot_q));
    GB_RETURN_IF_ERROR(AtHook(HookKind::kRotK, layer, rot_k));
    q = rot_q;
    k = rot_k;
  }

  // Scores and patterns are materialised only for layers whose hooks want them. Edited scores
  // determine the pattern, so the backend need not produce one then.
  const bool scores_edited = plan_.HasEdits(hooks_.Find(HookKind::kAttnScores, layer));
  const bool pattern_edited = plan_.HasEdits(hooks_.Find(HookKind::kPattern, layer));
  Tensor scores, pattern;
  if (Touched(HookKind::kAttnScores, layer)) {
    GB_ASSIGN_OR_RETURN(scores, New({batch_, h, seq_, seq_}));
  }
  if (Touched(HookKind::kPattern, layer) && !scores_edited) {
    GB_ASSIGN_OR_RETURN(pattern, New({batch_, h, seq_, seq_}));
  }
  double scale = c_.attn_scale;
  if (c_.attn_scale_by_layer) scale /= static_cast<double>(layer + 1);
  AttentionOptions options{.window = c_.WindowOf(layer),
                           .softcap = static_cast<float>(c_.attn_softcap)};
  GB_ASSIGN_OR_RETURN(Tensor z, New({batch_, seq_, h, dh}));
  if (cache_ != nullptr) {
    // Decoding: this pass's keys and values join the cache, and the queries attend to all of it.
    Tensor& keys = cache_->keys(layer);
    Tensor& values = cache_->values(layer);
    const int64_t slots = cache_->batch() * cache_->capacity();
    Tensor key_rows = keys.Reshape({slots, hkv * dh});
    Tensor value_rows = values.Reshape({slots, hkv * dh});
    GB_RETURN_IF_ERROR(be_.ScatterRows(k.Reshape({tokens_, hkv * dh}), cache_slots_, key_rows));
    GB_RETURN_IF_ERROR(be_.ScatterRows(v.Reshape({tokens_, hkv * dh}), cache_slots_, value_rows));
    options.query_offset = cache_->length();
    GB_RETURN_IF_ERROR(be_.Attention(q, keys, values, mask, static_cast<float>(scale), z, nullptr,
                                     nullptr, options));
  } else {
    GB_RETURN_IF_ERROR(be_.Attention(q, k, v, mask, static_cast<float>(scale), z, OutOrNull(scores),
                                     OutOrNull(pattern), options));
  }
  GB_RETURN_IF_ERROR(AtHook(HookKind::kAttnScores, layer, scores));
  if (scores_edited || pattern_edited) {
    GB_ASSIGN_OR_RETURN(z, AttendEdited(layer, scores, pattern, v, scores_edited));
  } else {
    GB_RETURN_IF_ERROR(AtHook(HookKind::kPattern, layer, pattern));
  }
  GB_RETURN_IF_ERROR(AtHook(HookKind::kZ, layer, z));

  if (Touched(HookKind::kResult, layer)) {
    // Per-head outputs before the shared output bias, as TransformerLens's hook_result.
    GB_ASSIGN_OR_RETURN(Tensor result, New({batch_, seq_, h, c_.d_model}));
    GB_RETURN_IF_ERROR(be_.HeadProjection(z, b.o_w, result));
    GB_RETURN_IF_ERROR(AtHook(HookKind::kResult, layer, result));
  }
  GB_ASSIGN_OR_RETURN(Tensor attn_out, New({tokens_, c_.d_model}));
  GB_RETURN_IF_ERROR(be_.Linear(z.Reshape({tokens_, h * dh}), b.o_w, OrNull(b.o_b),
                                Activation::kIdentity, attn_out));
  return attn_out;
}

absl::StatusOr<Tensor> ForwardPass::AttendEdited(int layer, const Tensor& scores, Tensor pattern,
                                                 const Tensor& v, bool scores_edited) {
  if (scores_edited) {
    GB_ASSIGN_OR_RETURN(Tensor host_scores, CopyToHostF32(be_, scores));
    GB_ASSIGN_OR_RETURN(pattern, Place(AttentionSoftmax(host_scores)));
  }
  GB_RETURN_IF_ERROR(AtHook(HookKind::kPattern, layer, pattern));
  // The pattern may no longer sum to 1 (TransformerLens does not renormalise an edited one).
  GB_ASSIGN_OR_RETURN(Tensor host_pattern, CopyToHostF32(be_, pattern));
  GB_ASSIGN_OR_RETURN(Tensor host_v, CopyToHostF32(be_, v));
  return Place(AttendValues(host_pattern, host_v));
}

absl::StatusOr<Tensor> ForwardPass::Mlp(int layer, const BlockWeights& b,
                                        const Tensor& normalized) {
  const int64_t m = c_.d_mlp;
  GB_ASSIGN_OR_RETURN(Tensor post, New({tokens_, m}));
  if (c_.gated_mlp) {
    GB_ASSIGN_OR_RETURN(Tensor pre, New({tokens_, m}));
    GB_ASSIGN_OR_RETURN(Tensor pre_linear, New({tokens_, m}));
    GB_RETURN_IF_ERROR(
        be_.Linear(normalized, b.gate_w, OrNull(b.gate_b), Activation::kIdentity, pre));
    GB_RETURN_IF_ERROR(AtHook(HookKind::kMlpPre, layer, pre));
    GB_RETURN_IF_ERROR(
        be_.Linear(normalized, b.in_w, OrNull(b.in_b), Activation::kIdentity, pre_linear));
    GB_RETURN_IF_ERROR(AtHook(HookKind::kMlpPreLinear, layer, pre_linear));
    GB_ASSIGN_OR_RETURN(Tensor activated, New({tokens_, m}));
    GB_RETURN_IF_ERROR(be_.Activate(c_.act, pre, activated));
    GB_RETURN_IF_ERROR(be_.Mul(activated, pre_linear, post));
  } else if (Touched(HookKind::kMlpPre, layer)) {
    GB_ASSIGN_OR_RETURN(Tensor pre, New({tokens_, m}));
    GB_RETURN_IF_ERROR(be_.Linear(normalized, b.in_w, OrNull(b.in_b), Activation::kIdentity, pre));
    GB_RETURN_IF_ERROR(AtHook(HookKind::kMlpPre, layer, pre));
    GB_RETURN_IF_ERROR(be_.Activate(c_.act, pre, post));
  } else {
    // Nobody looks at the pre-activation: let the GEMM apply the activation in its epilogue.
    GB_RETURN_IF_ERROR(be_.Linear(normalized, b.in_w, OrNull(b.in_b), c_.act, post));
  }
  GB_RETURN_IF_ERROR(AtHook(HookKind::kMlpPost, layer, post));
  GB_ASSIGN_OR_RETURN(Tensor mlp_out, New({tokens_, c_.d_model}));
  GB_RETURN_IF_ERROR(be_.Linear(post, b.out_w, OrNull(b.out_b), Activation::kIdentity, mlp_out));
  return mlp_out;
}

absl::StatusOr<Tensor> ForwardPass::Block(int layer, Tensor resid, const Tensor& mask,
                                          const Tensor& positions) {
  const BlockWeights& b = w_.blocks[layer];
  // Pre-norm blocks normalise what attention and the MLP read; post-norm blocks (OLMo-2) what
  // they return, before hook_attn_out / hook_mlp_out, as TransformerLens does; Gemma-2 both
  // (ln1 / ln2 before, ln1_post / ln2_post after).
  const bool post = c_.norm_placement == NormPlacement::kPost;
  const bool both = c_.norm_placement == NormPlacement::kPreAndPost;
  auto ln1 = [&](const Tensor& x) {
    return Norm(x, b.ln1_w, b.ln1_b, HookKind::kLn1Scale, HookKind::kLn1Normalized, layer);
  };
  auto ln2 = [&](const Tensor& x) {
    return Norm(x, b.ln2_w, b.ln2_b, HookKind::kLn2Scale, HookKind::kLn2Normalized, layer);
  };
  GB_RETURN_IF_ERROR(AtHook(HookKind::kResidPre, layer, resid));
  Tensor attn_in = resid;
  if (!post) {
    GB_ASSIGN_OR_RETURN(attn_in, ln1(resid));
  }
  GB_ASSIGN_OR_RETURN(Tensor attn_out, Attention(layer, b, attn_in, mask, positions));
  if (post) {
    GB_ASSIGN_OR_RETURN(attn_out, ln1(attn_out));
  } else if (both) {
    GB_ASSIGN_OR_RETURN(attn_out, Norm(attn_out, b.ln1_post_w, Tensor(), HookKind::kLn1PostScale,
                                       HookKind::kLn1PostNormalized, layer));
  }
  GB_RETURN_IF_ERROR(AtHook(HookKind::kAttnOut, layer, attn_out));
  // Sums go to fresh tensors rather than in place, so a captured value is never overwritten.
  GB_ASSIGN_OR_RETURN(Tensor resid_post, New({tokens_, c_.d_model}));
  if (c_.parallel_attn_mlp) {
    // Attention and MLP both read resid_pre; there is no resid_mid (TransformerLens
    // parallel_attn_mlp, HF GPT-NeoX use_parallel_residual).
    GB_ASSIGN_OR_RETURN(Tensor mlp_in, ln2(resid));
    GB_ASSIGN_OR_RETURN(Tensor mlp_out, Mlp(layer, b, mlp_in));
    GB_RETURN_IF_ERROR(AtHook(HookKind::kMlpOut, layer, mlp_out));
    GB_ASSIGN_OR_RETURN(Tensor partial, New({tokens_, c_.d_model}));
    GB_RETURN_IF_ERROR(be_.Add(attn_out, mlp_out, partial));
    GB_RETURN_IF_ERROR(be_.Add(resid, partial, resid_post));
  } else {
    GB_ASSIGN_OR_RETURN(Tensor resid_mid, New({tokens_, c_.d_model}));
    GB_RETURN_IF_ERROR(be_.Add(resid, attn_out, resid_mid));
    GB_RETURN_IF_ERROR(AtHook(HookKind::kResidMid, layer, resid_mid));
    Tensor mlp_in = resid_mid;
    if (!post) {
      GB_ASSIGN_OR_RETURN(mlp_in, ln2(resid_mid));
    }
    GB_ASSIGN_OR_RETURN(Tensor mlp_out, Mlp(layer, b, mlp_in));
    if (post) {
      GB_ASSIGN_OR_RETURN(mlp_out, ln2(mlp_out));
    } else if (both) {
      GB_ASSIGN_OR_RETURN(mlp_out, Norm(mlp_out, b.ln2_post_w, Tensor(), HookKind::kLn2PostScale,
                                        HookKind::kLn2PostNormalized, layer));
    }
    GB_RETURN_IF_ERROR(AtHook(HookKind::kMlpOut, layer, mlp_out));
    GB_RETURN_IF_ERROR(be_.Add(resid_mid, mlp_out, resid_post));
  }
  GB_RETURN_IF_ERROR(AtHook(HookKind::kResidPost, layer, resid_post));
  return resid_post;
}

absl::StatusOr<ForwardOutput> ForwardPass::Run(const Tensor& ids, const Tensor& mask,
                                               const Tensor& positions, const Tensor& last_index,
                                               const Tensor& targets,
                                               const ForwardOptions& options) {
  GB_ASSIGN_OR_RETURN(Tensor resid, New({tokens_, c_.d_model}));
  GB_RETURN_IF_ERROR(be_.Embedding(w_.embed, ids, resid));
  if (c_.embed_scale != 1) {
    // HF multiplies by the normaliser rounded to the activations' dtype (Gemma's sqrt(d_model)).
    GB_ASSIGN_OR_RETURN(Tensor scaled, New({tokens_, c_.d_model}));
    GB_RETURN_IF_ERROR(be_.Scale(resid, RoundedTo(dtype_, c_.embed_scale), scaled));
    resid = scaled;
  }
  GB_RETURN_IF_ERROR(AtHook(HookKind::kEmbed, -1, resid));
  if (c_.positional == PositionalKind::kLearned) {
    GB_ASSIGN_OR_RETURN(Tensor pos_embed, New({tokens_, c_.d_model}));
    GB_RETURN_IF_ERROR(be_.Embedding(w_.pos_embed, positions, pos_embed));
    GB_RETURN_IF_ERROR(AtHook(HookKind::kPosEmbed, -1, pos_embed));
    GB_ASSIGN_OR_RETURN(Tensor sum, New({tokens_, c_.d_model}));
    GB_RETURN_IF_ERROR(be_.Add(resid, pos_embed, sum));
    resid = sum;
  }
  const int layers =
      options.stop_at_layer >= 0 ? options.stop_at_layer : static_cast<int>(c_.n_layers);
  auto check_cancelled = [&]() -> absl::Status {
    if (options.cancelled != nullptr && options.cancelled->load(std::memory_order_relaxed)) {
      return absl::CancelledError("the forward pass was cancelled");
    }
    return absl::OkStatus();
  };
  for (int l = 0; l < layers; ++l) {
    GB_RETURN_IF_ERROR(check_cancelled());
    GB_ASSIGN_OR_RETURN(resid, Block(l, resid, mask, positions));
  }
  GB_RETURN_IF_ERROR(check_cancelled());
  ForwardOutput out;
  if (options.stop_at_layer >= 0) return out;

  GB_ASSIGN_OR_RETURN(Tensor normalized,
                      Norm(resid, w_.ln_final_w, w_.ln_final_b, HookKind::kLnFinalScale,
                           HookKind::kLnFinalNormalized, -1));
  const LogitsRequest request = options.logits_request();
  if (!request.any()) return out;
  return ComputeLogitsOutputs(be_,
                              {.normalized = &normalized,
                               .unembed = &w_.unembed,
                               .unembed_bias = w_.unembed_b.defined() ? &w_.unembed_b : nullptr,
                               .last_index = &last_index,
                               .next_targets = &targets,
                               .batch = batch_,
                               .seq = seq_,
                               .vocab = c_.vocab_size,
                               .softcap = static_cast<float>(c_.final_softcap)},
                              request);
}

// What a pass over a KV cache cannot do: see ForwardInput::cache.
absl::Status CheckCachedPass(const KvCache& cache, const HookPlan& plan,
                             const ForwardOptions& options, int64_t batch, int64_t seq) {
  GB_RETURN_IF_ERROR(CheckPlanForCache(plan));
  if (cache.batch() != batch) {
    return absl::InvalidArgumentError(
        absl::StrCat("the KV cache holds ", cache.batch(), " rows; the input has ", batch));
  }
  if (cache.length() + seq > cache.capacity()) {
    return absl::InvalidArgumentError(absl::StrCat("the KV cache has ",
                                                   cache.capacity() - cache.length(),
                                                   " free slots; the input needs ", seq));
  }
  if (options.loss_per_token || options.stop_at_layer >= 0) {
    return absl::InvalidArgumentError(
        "a pass over a KV cache computes no loss and runs every layer");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckPlanForCache(const HookPlan& plan) {
  const HookRegistry& hooks = plan.registry();
  for (HookId id = 0; id < hooks.size(); ++id) {
    const HookInfo& info = hooks.info(id);
    const bool square = info.kind == HookKind::kAttnScores || info.kind == HookKind::kPattern;
    if (square && plan.Touches(id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          info.name, " is not available in a pass over a KV cache (it needs the whole sequence)"));
    }
    for (const Intervention& edit : plan.Edits(id)) {
      if (!IsPositionLocal(edit, info)) {
        return absl::InvalidArgumentError(
            absl::StrCat("the edit at ", info.name,
                         " selects positions or reads other positions; a pass "
                         "over a KV cache edits every new token alike"));
      }
    }
    if (const SaeSplice* splice = plan.SaeSpliceAt(id)) {
      for (const FeatureEdit& edit : splice->options.edits) {
        if (!edit.tokens.empty()) {
          return absl::InvalidArgumentError(absl::StrCat("an SAE feature edit at ", info.name,
                                                         " selects tokens; a pass over a KV cache "
                                                         "edits every new token alike"));
        }
      }
    }
  }
  return absl::OkStatus();
}

bool IsPositionLocal(const Intervention& edit, const HookInfo& info) {
  if (!edit.select.positions.empty()) return false;
  switch (edit.kind) {
    case InterventionKind::kZero:
    case InterventionKind::kScale:
    case InterventionKind::kProjectOut:  // a direction of one token's (or head's) shape
    case InterventionKind::kOrthogonalDecomp:
    case InterventionKind::kProjectionCap:
      return true;
    case InterventionKind::kAdd:
    case InterventionKind::kSet: {
      // A value of one token's shape ([D] or [M, D]) broadcasts over positions; a [pos, ...] or
      // full-shape value is indexed by position.
      const int64_t per_token =
          info.dims.back().size * (info.dims.size() == 4 ? info.dims[2].size : 1);
      return edit.value.numel() <= per_token;
    }
    default:
      return false;
  }
}

absl::StatusOr<std::unique_ptr<Transformer>> Transformer::Load(const std::string& model_dir,
                                                               std::shared_ptr<Backend> backend,
                                                               DType dtype) {
  if (backend->device() == Device::kCpu && dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat("the CPU backend computes in f32; ",
                                                   DTypeName(dtype), " needs the CUDA backend"));
  }
  GB_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  GB_ASSIGN_OR_RETURN(SafetensorsCheckpoint checkpoint, SafetensorsCheckpoint::Open(model_dir));
  auto weights = LoadModelWeights(config, checkpoint, *backend, dtype);
  if (!weights.ok()) {
    return absl::Status(weights.status().code(),
                        absl::StrCat(model_dir, ": ", weights.status().message()));
  }
  // Once loaded the weights never change, so a backend may keep faster forms of them.
  if (auto kept = backend->PrepareLinearWeights(LinearWeights(*weights)); !kept.ok()) {
    return absl::Status(
        kept.status().code(),
        absl::StrCat(model_dir, ": preparing the weights: ", kept.status().message()));
  }
#ifdef __GLIBC__
  // The conversion's temporaries (f32 copies before transposes, concatenations and dtype
  // conversion) are freed by now, but glibc keeps the heap they grew: 7% of a 1B model's
  // weights that a long-running server would never use again.
  malloc_trim(0);
#endif
  return std::unique_ptr<Transformer>(
      new Transformer(std::move(config), *std::move(weights), std::move(backend), dtype));
}

absl::StatusOr<ForwardOutput> Transformer::Forward(const ForwardInput& input, const HookPlan& plan,
                                                   CaptureSink* sink,
                                                   const ForwardOptions& options) const {
  const Tensor& tokens = input.tokens;
  if (!tokens.defined() || tokens.rank() != 2 || tokens.dtype() != DType::kI32 ||
      tokens.device() != Device::kCpu) {
    return absl::InvalidArgumentError("tokens must be a host i32 tensor [batch, pos]");
  }
  const int64_t batch = tokens.dim(0), seq = tokens.dim(1);
  if (batch == 0 || seq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("empty input: tokens have shape ", ShapeToString(tokens.shape())));
  }
  if (&plan.registry() != &hooks_) {
    return absl::InvalidArgumentError("the hook plan was built for another model");
  }
  if (sink == nullptr && !plan.CapturedIds().empty()) {
    return absl::InvalidArgumentError("the plan captures hooks but no sink receives them");
  }
  if (options.stop_at_layer > config_.n_layers || options.stop_at_layer < -1) {
    return absl::InvalidArgumentError(absl::StrCat("stop_at_layer ", options.stop_at_layer,
                                                   " is outside [0, ", config_.n_layers, "]"));
  }
  if (options.stop_at_layer >= 0 && options.logits_request().any()) {
    return absl::InvalidArgumentError(
        "logits and loss need the whole forward pass; turn them off when setting stop_at_layer");
  }
  GB_RETURN_IF_ERROR(ValidateLogitsRequest(options.logits_request(), config_.vocab_size));
  Tensor mask = input.attention_mask;
  if (mask.defined()) {
    if (mask.dtype() != DType::kI32 || mask.shape() != tokens.shape() ||
        mask.device() != Device::kCpu) {
      return absl::InvalidArgumentError(
          absl::StrCat("attention_mask must be a host i32 tensor shaped like tokens ",
                       ShapeToString(tokens.shape())));
    }
  } else {
    mask = Tensor::EmptyHost(DType::kI32, tokens.shape());
    std::fill_n(mask.data<int32_t>(), mask.numel(), 1);
  }

  KvCache* cache = input.cache;
  if (cache != nullptr) GB_RETURN_IF_ERROR(CheckCachedPass(*cache, plan, options, batch, seq));

  // Positions count real tokens only; ids, lengths and positions are checked before any work.
  Tensor positions = Tensor::EmptyHost(DType::kI32, tokens.shape());
  Tensor last_index = Tensor::EmptyHost(DType::kI32, {batch});
  Tensor targets = Tensor::EmptyHost(DType::kI32, {batch * seq});
  for (int64_t b = 0; b < batch; ++b) {
    int32_t real = cache != nullptr ? cache->real_tokens(b) : 0;  // a cached row continues
    int32_t last = -1;
    for (int64_t s = 0; s < seq; ++s) {
      const int64_t i = b * seq + s;
      const int32_t id = tokens.data<int32_t>()[i];
      const int32_t m = mask.data<int32_t>()[i];
      if (m != 0 && m != 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("attention_mask[", b, "][", s, "] is ", m, "; it must be 0 or 1"));
      }
      if (m == 1 && (id < 0 || id >= config_.vocab_size)) {
        return absl::InvalidArgumentError(absl::StrCat("token id ", id, " at [", b, "][", s,
                                                       "] is outside the vocabulary [0, ",
                                                       config_.vocab_size, ")"));
      }
      positions.data<int32_t>()[i] = std::max(real - (m == 1 ? 0 : 1), 0);
      if (m == 1) {
        ++real;
        last = static_cast<int32_t>(s);
      }
      const bool next_real = s + 1 < seq && mask.data<int32_t>()[i + 1] == 1;
      targets.data<int32_t>()[i] = (m == 1 && next_real) ? tokens.data<int32_t>()[i + 1] : -1;
    }
    if (real > config_.n_ctx) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sequence ", b, " has ", real, " tokens; the model's context is ", config_.n_ctx));
    }
    last_index.data<int32_t>()[b] = static_cast<int32_t>(b * seq + std::max(last, 0));
  }
  // Padding positions embed a harmless id 0; they are masked out of every attention row.
  Tensor ids = Tensor::EmptyHost(DType::kI32, tokens.shape());
  for (int64_t i = 0; i < tokens.numel(); ++i) {
    ids.data<int32_t>()[i] = mask.data<int32_t>()[i] ? tokens.data<int32_t>()[i] : 0;
  }

  auto upload = [&](const Tensor& host) -> absl::StatusOr<Tensor> {
    if (backend_->device() == Device::kCpu) return host;
    GB_ASSIGN_OR_RETURN(Tensor t, backend_->Allocate(host.dtype(), host.shape()));
    GB_RETURN_IF_ERROR(backend_->CopyFromHost(host, t));
    return t;
  };
  GB_ASSIGN_OR_RETURN(Tensor ids_dev, upload(ids));
  // Attention reads the keys' mask: the new tokens', or with a cache every slot's.
  GB_ASSIGN_OR_RETURN(Tensor mask_dev, upload(cache != nullptr ? cache->KeyMaskWith(mask) : mask));
  GB_ASSIGN_OR_RETURN(Tensor positions_dev, upload(positions));
  GB_ASSIGN_OR_RETURN(Tensor last_dev, upload(last_index));
  GB_ASSIGN_OR_RETURN(Tensor targets_dev, upload(targets));
  ForwardPass pass(config_, hooks_, weights_, *backend_, dtype_, plan, sink, batch, seq);
  pass.layout_ = TokenLayout::FromMask(mask);
  if (cache != nullptr) {
    pass.cache_ = cache;
    GB_ASSIGN_OR_RETURN(pass.cache_slots_, upload(cache->NextSlots(seq)));
  }
  if (plan.HasAnyEdits()) {
    for (HookId id = 0; id < hooks_.size(); ++id) {
      for (const Intervention& edit : plan.Edits(id)) {
        GB_RETURN_IF_ERROR(ValidateIntervention(edit, hooks_.info(id), batch, seq, pass.layout_));
      }
    }
  }
  auto out = pass.Run(ids_dev, mask_dev, positions_dev, last_dev, targets_dev, options);
  if (out.ok() && cache != nullptr) cache->Advance(mask);
  return out;
}

}  // namespace glassbox
