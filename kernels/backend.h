// The ops a transformer forward pass with hooks needs, and nothing more. kernels/cpu is the
// reference implementation; kernels/cuda implements the same contract for speed. Ops write into
// caller-allocated outputs so the engine controls memory; every op returns a Status because a
// device op can fail (launch errors, bad shapes from a caller bug) and that must never crash the
// server.
//
// Layout conventions: tensors are contiguous row-major; "tokens" dimensions are flattened, so an
// activation [batch, pos, d] may be passed where [T, d] is expected. Linear weights are stored as
// [out_features, in_features] (PyTorch nn.Linear), whatever the checkpoint's layout.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/activation.h"
#include "kernels/tensor.h"

namespace glassbox {

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Device device() const = 0;
  virtual std::string name() const = 0;

  // ---- memory ----
  virtual absl::StatusOr<Tensor> Allocate(DType dtype, Shape shape) = 0;
  // Copies between host and this backend's device; shapes must have equal numel and dtypes match.
  virtual absl::Status CopyFromHost(const Tensor& host, Tensor& out) = 0;
  virtual absl::Status CopyToHost(const Tensor& src, Tensor& host_out) = 0;
  // Same-device copy with dtype conversion (f32/f16/bf16 among themselves; i32 <-> i64).
  virtual absl::Status Convert(const Tensor& src, Tensor& out) = 0;

  // ---- matrix products ----
  // out[T, N] = act(x[T, K] · w[N, K]ᵀ + bias[N]); bias may be null.
  virtual absl::Status Linear(const Tensor& x, const Tensor& w, const Tensor* bias,
                              Activation act, Tensor& out) = 0;
  // Per-head output projection (TransformerLens hook_result): out[T, H, N] =
  // z[T, H, Dh] · w[N, H·Dh]ᵀ restricted to head h's Dh input columns; no bias.
  virtual absl::Status HeadProjection(const Tensor& z, const Tensor& w, Tensor& out) = 0;

  // ---- normalisation (over the last axis) ----
  // out = (x - mean) / scale * weight + bias, scale = sqrt(var + eps). weight/bias may be null.
  // When non-null, scale_out [T, 1] receives the per-token scale and unweighted_out the value
  // before weight and bias (TransformerLens's hook_scale and hook_normalized).
  virtual absl::Status LayerNorm(const Tensor& x, const Tensor* weight, const Tensor* bias,
                                 float eps, Tensor& out, Tensor* scale_out,
                                 Tensor* unweighted_out) = 0;
  // out = x / scale * weight, scale = sqrt(mean(x²) + eps); the optional outputs as LayerNorm's.
  virtual absl::Status RmsNorm(const Tensor& x, const Tensor* weight, float eps, Tensor& out,
                               Tensor* scale_out, Tensor* unweighted_out) = 0;

  // ---- embeddings and positions ----
  // out[T, D] = table[ids[T], :]; ids are i32 and must be in range (the engine validates).
  virtual absl::Status Embedding(const Tensor& table, const Tensor& ids, Tensor& out) = 0;
  // Rotate-half (GPT-NeoX / HF Llama) rotary embedding of the first rotary_dim features of each
  // head: x [T, H, Dh], positions [T] i32, cos/sin [n_ctx, rotary_dim / 2].
  virtual absl::Status Rotary(const Tensor& x, const Tensor& cos, const Tensor& sin,
                              const Tensor& positions, int rotary_dim, Tensor& out) = 0;

  // ---- attention ----
  // Causal self-attention with grouped KV heads (query head h reads KV head h / (H / Hkv)).
  // q [B, S, H, Dh], k and v [B, S, Hkv, Dh], key_mask [B, S] i32 (0 = padding, never attended).
  // z [B, S, H, Dh]. scores [B, H, S, S] (scaled, -inf where masked) and pattern [B, H, S, S]
  // (softmax, 0 where masked) are written only when non-null. A query with no visible key (a
  // padding position before any real token) gets a zero pattern row and zero output.
  virtual absl::Status Attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& key_mask, float scale, Tensor& z, Tensor* scores,
                                 Tensor* pattern) = 0;

  // ---- elementwise ----
  virtual absl::Status Add(const Tensor& a, const Tensor& b, Tensor& out) = 0;
  virtual absl::Status Mul(const Tensor& a, const Tensor& b, Tensor& out) = 0;
  virtual absl::Status Activate(Activation act, const Tensor& x, Tensor& out) = 0;

  // ---- reshaping ----
  // Splits fused projections qkv [T, (Hq + 2·Hkv)·Dh] into q [T, Hq·Dh], k and v [T, Hkv·Dh].
  virtual absl::Status SplitQkv(const Tensor& qkv, Tensor& q, Tensor& k, Tensor& v) = 0;

  // ---- outputs ----
  // loss[T] = -log_softmax(logits[T, V])[target[T]] for targets >= 0; 0 where target < 0.
  virtual absl::Status CrossEntropy(const Tensor& logits, const Tensor& targets, Tensor& loss) = 0;
  virtual absl::Status LogSoftmax(const Tensor& x, Tensor& out) = 0;
};

}  // namespace glassbox
