// The ops a transformer forward pass with hooks needs, and nothing more. kernels/cpu is the
// reference implementation; kernels/cuda implements the same contract for speed. Ops write into
// caller-allocated outputs so the engine controls memory; every op returns a Status because a
// device op can fail (launch errors, bad shapes from a caller bug) and that must never crash the
// server.
//
// Layout conventions: tensors are contiguous row-major; "tokens" dimensions are flattened, so an
// activation [batch, pos, d] may be passed where [T, d] is expected. Linear weights are stored as
// [out_features, in_features] (PyTorch nn.Linear), whatever the checkpoint's layout.
//
// The argument contract, the same for every backend: the public ops below check it
// (kernels/op_contract.h) before a backend's Do<Op> runs, and skip Do<Op> when there is nothing to
// do, so no backend can forget a check or drift from another. A violation is a caller bug and
// returns INTERNAL:
// - Every tensor argument is defined and on the backend's device (the host side of a copy on the
//   host); optional arguments are pointers and may be null.
// - Floating tensors are f32, or f16/bf16 on a backend that computes in them (CUDA; the CPU
//   backend computes in f32 only). An op's activation tensors share one dtype; weights, biases
//   and rotary tables may have another floating dtype; index tensors are i32.
// - Rank 0: a rank-0 tensor is one element. Memory and elementwise ops (Allocate, the copies,
//   Convert, Add, Mul, Activate) see only element counts and accept it; an op that reads axes
//   ([T, n] rows, heads, a table) needs the rank it documents and rejects a rank-0 tensor.
//   Outputs and index tensors are checked by element count only.
// - Empty tensors: an op with nothing to write (zero rows, tokens, columns or k) returns OK and
//   touches no memory, as long as the shapes are consistent. Reducing a non-empty row over an
//   empty last axis (norms, softmax, log-sum-exp, cross-entropy) has no value and is an error.
//   The matrix products are the exception: their empty inner sum is zero (out = act(bias)), as in
//   torch. Per-op details below.
// - Values are checked where they are read: ids, positions and chosen columns outside their range
//   fail the call on the CPU and, on CUDA, write zeros and fail the next synchronisation.
#pragma once

#include <span>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/activation.h"
#include "kernels/op_contract.h"
#include "kernels/tensor.h"

namespace glassbox {

// How attention masks and shapes its scores beyond the causal and padding masks.
struct AttentionOptions {
  // > 0: query i sees only keys j with i - j < window (Mistral's and Gemma's sliding window;
  // indices within the row, which for real tokens equal position differences).
  int64_t window = 0;
  // > 0: scores = softcap * tanh(scores / softcap) after scaling and before masking (Gemma 2's
  // attn_logit_softcapping).
  float softcap = 0;
  // Decoding with a KV cache: the Sq queries are keys [query_offset, query_offset + Sq) of the
  // Sk keys, so query i sees keys j <= i + query_offset (and the window counts from there).
  // 0 with Sq == Sk is plain causal self-attention.
  int64_t query_offset = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  Device device() const { return target_.device; }
  virtual std::string name() const = 0;

  // ---- memory ----
  // Any dtype; no negative dimensions. Zero-sized and rank-0 shapes are fine.
  absl::StatusOr<Tensor> Allocate(DType dtype, Shape shape);
  // Copies between host and this backend's device; equal numel and equal dtypes.
  absl::Status CopyFromHost(const Tensor& host, Tensor& out);
  absl::Status CopyToHost(const Tensor& src, Tensor& host_out);
  // Same-device copy with dtype conversion (f32/f16/bf16 among themselves; i32 <-> i64).
  absl::Status Convert(const Tensor& src, Tensor& out);

  // ---- matrix products ----
  // out[T, N] = act(x[T, K] · w[N, K]ᵀ + bias[N]); bias may be null. x rank >= 1, w rank 2.
  // T = 0 or N = 0: nothing to do. K = 0: out = act(bias), zeros without a bias.
  absl::Status Linear(const Tensor& x, const Tensor& w, const Tensor* bias, Activation act,
                      Tensor& out);
  // A hint that `weights` (rank 2, on this device) are Linear weights that are never written
  // again: the backend may keep forms of them that multiply faster (same values), for as long as
  // their storage lives, all of them or none. Returns the bytes those forms hold (0: none kept).
  absl::StatusOr<int64_t> PrepareLinearWeights(std::span<const Tensor* const> weights);
  // Per-head output projection (TransformerLens hook_result): out[T, H, N] =
  // z[T, H, Dh] · w[N, H·Dh]ᵀ restricted to head h's Dh input columns; no bias. z rank >= 2.
  // T, H or N = 0: nothing to do; Dh = 0: zeros.
  absl::Status HeadProjection(const Tensor& z, const Tensor& w, Tensor& out);

  // ---- normalisation (over the last axis) ----
  // out = (x - mean) / scale * weight + bias, scale = sqrt(var + eps). weight/bias may be null.
  // When non-null, scale_out [T, 1] receives the per-token scale and unweighted_out the value
  // before weight and bias (TransformerLens's hook_scale and hook_normalized). x rank >= 1;
  // zero rows: nothing to do; an empty last axis with rows: error.
  absl::Status LayerNorm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps,
                         Tensor& out, Tensor* scale_out, Tensor* unweighted_out);
  // out = x / scale * weight, scale = sqrt(mean(x²) + eps); the optional outputs as LayerNorm's.
  absl::Status RmsNorm(const Tensor& x, const Tensor* weight, float eps, Tensor& out,
                       Tensor* scale_out, Tensor* unweighted_out);

  // ---- embeddings and positions ----
  // out[T, D] = table[ids[T], :]; ids are i32 and must be in range (the engine validates). A
  // gather of rows of any dtype (out has the table's): the engine also gathers activation rows,
  // logits rows and per-token losses with it. table rank 2; T = 0 or D = 0: nothing to do.
  absl::Status Embedding(const Tensor& table, const Tensor& ids, Tensor& out);
  // The inverse gather, in place: table[rows[t], :] = src[t, :] (rows i32, distinct, in range;
  // any dtype, src has the table's). Writes a step's keys and values into a KV cache.
  // table rank 2; T = 0 or D = 0: nothing to do.
  absl::Status ScatterRows(const Tensor& src, const Tensor& rows, Tensor& table);
  // Rotary embedding of the first rotary_dim features of each head, the pairs chosen by `style`
  // (rotate-half by default; GPT-J's adjacent pairs): x [T, H, Dh], positions [T] i32, cos/sin
  // [n_ctx, rotary_dim / 2]. rotary_dim even in [0, Dh]; x empty: nothing to do.
  absl::Status Rotary(const Tensor& x, const Tensor& cos, const Tensor& sin,
                      const Tensor& positions, int rotary_dim, Tensor& out,
                      RotaryStyle style = RotaryStyle::kHalf);

  // ---- attention ----
  // Causal self-attention with grouped KV heads (query head h reads KV head h / (H / Hkv)).
  // q [B, Sq, H, Dh], k and v [B, Sk, Hkv, Dh] (Sk = Sq, or more with options.query_offset),
  // key_mask [B, Sk] i32 (0 = padding, never attended). z [B, Sq, H, Dh]. scores
  // [B, H, Sq, Sk] (scaled, -inf where masked) and pattern [B, H, Sq, Sk] (softmax, 0 where
  // masked) are written only when non-null. A query with no visible key (a
  // padding position before any real token) gets a zero pattern row and zero output. H, Hkv and
  // Dh must be positive with Hkv dividing H; B = 0 or S = 0: nothing to do.
  // `options` (window >= 0, softcap >= 0 and finite) add a sliding window and soft-capping.
  absl::Status Attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                         float scale, Tensor& z, Tensor* scores, Tensor* pattern,
                         const AttentionOptions& options = {});

  // ---- elementwise (equal element counts; rank 0 and empty are fine) ----
  absl::Status Add(const Tensor& a, const Tensor& b, Tensor& out);
  absl::Status Mul(const Tensor& a, const Tensor& b, Tensor& out);
  absl::Status Activate(Activation act, const Tensor& x, Tensor& out);
  // out = factor · x, factor finite (Gemma's sqrt(d_model) embedding normaliser).
  absl::Status Scale(const Tensor& x, float factor, Tensor& out);
  // out = cap · tanh(x / cap), cap > 0 and finite (Gemma-2's final-logit soft cap).
  absl::Status SoftCap(const Tensor& x, float cap, Tensor& out);

  // ---- reshaping ----
  // Splits fused projections qkv [T, (Hq + 2·Hkv)·Dh] into q [T, Hq·Dh], k and v [T, Hkv·Dh].
  // qkv rank >= 1; T = 0 (q, k, v empty too): nothing to do.
  absl::Status SplitQkv(const Tensor& qkv, Tensor& q, Tensor& k, Tensor& v);

  // ---- outputs ----
  // Every op here reads x (logits) as rows [T, n] over its last axis (rank >= 1), and each
  // backend has one log-sum-exp behind CrossEntropy, LogSoftmax and LogSumExp (f64 sums on the
  // CPU). T = 0: nothing to do; n = 0 with rows: error, except as TopK and GatherColumns say.
  //
  // loss[T] = logsumexp(logits[T, :]) - logits[T, target[T]] = -log_softmax(logits)[target], for
  // targets in [0, V); 0 elsewhere (-1 marks "no next token").
  absl::Status CrossEntropy(const Tensor& logits, const Tensor& targets, Tensor& loss);
  // out[T, n] = x - logsumexp(x) per row; out has x's dtype.
  absl::Status LogSoftmax(const Tensor& x, Tensor& out);
  // lse[T] (f32) = log(sum_j exp(x[T, j])), the max subtracted first.
  absl::Status LogSumExp(const Tensor& x, Tensor& lse);
  // out[T, C] (f32) = x[T, columns[C]] - shift[T]; shift (f32, may be null) = LogSumExp(x) makes
  // these log_softmax(x)[:, columns], the target log-probs. Columns must be in [0, n). T = 0 or
  // C = 0: nothing to do.
  absl::Status GatherColumns(const Tensor& x, const Tensor& columns, const Tensor* shift,
                             Tensor& out);
  // The k largest of each row, largest first: values [T, k] (x's dtype) and i32 column indices
  // [T, k]. Ties keep the lower index first, as torch.topk does on the CPU; -0.0 ties +0.0 and NaN
  // is larger than everything (torch's order). 0 <= k <= n; T = 0 or k = 0: nothing to do.
  absl::Status TopK(const Tensor& x, int64_t k, Tensor& values, Tensor& indices);

 protected:
  explicit Backend(const OpTarget& target) : target_(target) {}

 private:
  // The work of each op, called once its arguments passed the contract, with the sizes the
  // contract derived, and (but for the copies, which also synchronise) only when there is
  // something to write.
  virtual absl::StatusOr<Tensor> DoAllocate(DType dtype, Shape shape) = 0;
  virtual absl::Status DoCopyFromHost(int64_t bytes, const Tensor& host, Tensor& out) = 0;
  virtual absl::Status DoCopyToHost(int64_t bytes, const Tensor& src, Tensor& host_out) = 0;
  virtual absl::Status DoConvert(int64_t n, const Tensor& src, Tensor& out) = 0;
  virtual absl::Status DoLinear(const LinearDims& d, const Tensor& x, const Tensor& w,
                                const Tensor* bias, Activation act, Tensor& out) = 0;
  // Nothing kept unless a backend has a faster form.
  virtual absl::StatusOr<int64_t> DoPrepareLinearWeights(std::span<const Tensor* const> weights) {
    return 0;
  }
  virtual absl::Status DoHeadProjection(const HeadProjectionDims& d, const Tensor& z,
                                        const Tensor& w, Tensor& out) = 0;
  virtual absl::Status DoLayerNorm(const RowsDims& d, const Tensor& x, const Tensor* weight,
                                   const Tensor* bias, float eps, Tensor& out, Tensor* scale_out,
                                   Tensor* unweighted_out) = 0;
  virtual absl::Status DoRmsNorm(const RowsDims& d, const Tensor& x, const Tensor* weight,
                                 float eps, Tensor& out, Tensor* scale_out,
                                 Tensor* unweighted_out) = 0;
  virtual absl::Status DoScatterRows(const EmbeddingDims& d, const Tensor& src, const Tensor& rows,
                                     Tensor& table) = 0;
  virtual absl::Status DoEmbedding(const EmbeddingDims& d, const Tensor& table, const Tensor& ids,
                                   Tensor& out) = 0;
  virtual absl::Status DoRotary(const RotaryDims& d, const Tensor& x, const Tensor& cos,
                                const Tensor& sin, const Tensor& positions, int rotary_dim,
                                Tensor& out) = 0;
  virtual absl::Status DoAttention(const AttentionDims& d, const Tensor& q, const Tensor& k,
                                   const Tensor& v, const Tensor& key_mask, float scale, Tensor& z,
                                   Tensor* scores, Tensor* pattern,
                                   const AttentionOptions& options) = 0;
  virtual absl::Status DoAdd(int64_t n, const Tensor& a, const Tensor& b, Tensor& out) = 0;
  virtual absl::Status DoMul(int64_t n, const Tensor& a, const Tensor& b, Tensor& out) = 0;
  virtual absl::Status DoActivate(int64_t n, Activation act, const Tensor& x, Tensor& out) = 0;
  virtual absl::Status DoScale(int64_t n, const Tensor& x, float factor, Tensor& out) = 0;
  virtual absl::Status DoSoftCap(int64_t n, const Tensor& x, float cap, Tensor& out) = 0;
  virtual absl::Status DoSplitQkv(const SplitQkvDims& d, const Tensor& qkv, Tensor& q, Tensor& k,
                                  Tensor& v) = 0;
  virtual absl::Status DoCrossEntropy(const RowsDims& d, const Tensor& logits,
                                      const Tensor& targets, Tensor& loss) = 0;
  virtual absl::Status DoLogSoftmax(const RowsDims& d, const Tensor& x, Tensor& out) = 0;
  virtual absl::Status DoLogSumExp(const RowsDims& d, const Tensor& x, Tensor& lse) = 0;
  virtual absl::Status DoGatherColumns(const GatherColumnsDims& d, const Tensor& x,
                                       const Tensor& columns, const Tensor* shift, Tensor& out) = 0;
  virtual absl::Status DoTopK(const TopKDims& d, const Tensor& x, Tensor& values,
                              Tensor& indices) = 0;

  const OpTarget target_;
};

}  // namespace glassbox
