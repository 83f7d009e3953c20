// The argument contract of every Backend op (kernels/backend.h), checked in one place for all
// backends. Each op of each backend calls its Check<Op> first and then only does its work, so the
// backends cannot drift apart in what they accept: a tensor that is undefined or on the wrong
// device, a dtype the op does not take, an axis read from a tensor without it (rank 0), shapes that
// disagree, an empty axis an op would reduce over. A failed check is a bug in the caller, reported
// as INTERNAL naming the backend, the op and the tensors, never a crash or an out-of-bounds read.
//
// The checks also derive the sizes the op works with (rows, columns, heads, ...), so a backend
// never derives them again, and decide whether there is anything to do: `empty` means the op has
// nothing to write and returns OK without touching memory. backend.h states the rules per op.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/tensor.h"

namespace glassbox {

// What a backend accepts: tensors on `device`; floating tensors in f32, and in f16 and bf16 too
// when `half_precision`.
struct OpTarget {
  const char* backend;  // "cpu", "cuda": the first word of every message
  Device device;
  bool half_precision;
};

// A tensor seen as [rows, cols] over its last axis; rows is the product of the other dimensions
// (never numel / cols, which an empty last axis would divide by zero).
struct RowsDims {
  int64_t rows = 0, cols = 0;
  bool empty = false;
};

struct LinearDims {
  int64_t rows = 0, inner = 0, cols = 0;  // x [rows, inner], w [cols, inner], out [rows, cols]
  bool empty = false;
};

struct HeadProjectionDims {
  int64_t rows = 0, heads = 0, d_head = 0,
          cols = 0;  // z [rows, heads, d_head], w [cols, heads·d_head]
  bool empty = false;
};

struct EmbeddingDims {
  int64_t tokens = 0, vocab = 0, dim = 0;
  bool empty = false;
};

// Which features of a head rotate together by the angle of table column j: (j, j + rotary_dim / 2)
// in rotate-half (GPT-NeoX, HF Llama and most others), (2j, 2j + 1) in adjacent pairs (GPT-J's
// rotate_every_two; TransformerLens's rotary_adjacent_pairs).
enum class RotaryStyle : uint8_t { kHalf, kAdjacentPairs };

struct RotaryDims {
  int64_t tokens = 0, heads = 0, d_head = 0, half = 0, n_ctx = 0;
  RotaryStyle style = RotaryStyle::kHalf;
  bool empty = false;
};

struct AttentionDims {
  int64_t batch = 0, seq = 0, heads = 0, kv_heads = 0, d_head = 0;
  int64_t kv_seq = 0;        // keys per row (seq unless decoding with a cache)
  int64_t query_offset = 0;  // the key index of query 0
  bool empty = false;
};

struct SplitQkvDims {
  int64_t rows = 0, width = 0, q_cols = 0, kv_cols = 0;
  bool empty = false;
};

struct GatherColumnsDims {
  int64_t rows = 0, cols = 0, count = 0;  // x [rows, cols], count chosen columns
  bool empty = false;
};

struct TopKDims {
  int64_t rows = 0, cols = 0, k = 0;
  bool empty = false;
};

// Elementwise and memory ops return their element count (bytes for copies); 0 is a no-op.
absl::Status CheckAllocate(const OpTarget& target, const Shape& shape);
absl::StatusOr<int64_t> CheckCopyFromHost(const OpTarget& target, const Tensor& host,
                                          const Tensor& out);
absl::StatusOr<int64_t> CheckCopyToHost(const OpTarget& target, const Tensor& src,
                                        const Tensor& host_out);
absl::StatusOr<int64_t> CheckConvert(const OpTarget& target, const Tensor& src, const Tensor& out);

absl::StatusOr<LinearDims> CheckLinear(const OpTarget& target, const Tensor& x, const Tensor& w,
                                       const Tensor* bias, const Tensor& out);
absl::StatusOr<HeadProjectionDims> CheckHeadProjection(const OpTarget& target, const Tensor& z,
                                                       const Tensor& w, const Tensor& out);

absl::StatusOr<RowsDims> CheckLayerNorm(const OpTarget& target, const Tensor& x,
                                        const Tensor* weight, const Tensor* bias, const Tensor& out,
                                        const Tensor* scale_out, const Tensor* unweighted_out);
absl::StatusOr<RowsDims> CheckRmsNorm(const OpTarget& target, const Tensor& x, const Tensor* weight,
                                      const Tensor& out, const Tensor* scale_out,
                                      const Tensor* unweighted_out);

absl::StatusOr<EmbeddingDims> CheckEmbedding(const OpTarget& target, const Tensor& table,
                                             const Tensor& ids, const Tensor& out);
// ScatterRows: the same shapes as Embedding's, with src in out's place (tokens = rows written).
absl::StatusOr<EmbeddingDims> CheckScatterRows(const OpTarget& target, const Tensor& src,
                                               const Tensor& rows, const Tensor& table);

absl::StatusOr<RotaryDims> CheckRotary(const OpTarget& target, const Tensor& x, const Tensor& cos,
                                       const Tensor& sin, const Tensor& positions, int rotary_dim,
                                       const Tensor& out);

absl::StatusOr<AttentionDims> CheckAttention(const OpTarget& target, const Tensor& q,
                                             const Tensor& k, const Tensor& v,
                                             const Tensor& key_mask, const Tensor& z,
                                             const Tensor* scores, const Tensor* pattern);

// A window < 0, a negative or non-finite softcap, or queries that do not end within the keys
// (query_offset < 0 or query_offset + Sq > Sk) is a caller bug; fills d.query_offset.
absl::Status CheckAttentionOptions(const OpTarget& target, int64_t window, float softcap,
                                   int64_t query_offset, AttentionDims& d);

absl::StatusOr<int64_t> CheckAdd(const OpTarget& target, const Tensor& a, const Tensor& b,
                                 const Tensor& out);
absl::StatusOr<int64_t> CheckMul(const OpTarget& target, const Tensor& a, const Tensor& b,
                                 const Tensor& out);
absl::StatusOr<int64_t> CheckActivate(const OpTarget& target, const Tensor& x, const Tensor& out);
// As Activate's, plus a finite factor / a positive finite cap.
absl::StatusOr<int64_t> CheckScale(const OpTarget& target, const Tensor& x, float factor,
                                   const Tensor& out);
absl::StatusOr<int64_t> CheckSoftCap(const OpTarget& target, const Tensor& x, float cap,
                                     const Tensor& out);

absl::StatusOr<SplitQkvDims> CheckSplitQkv(const OpTarget& target, const Tensor& qkv,
                                           const Tensor& q, const Tensor& k, const Tensor& v);

absl::StatusOr<RowsDims> CheckCrossEntropy(const OpTarget& target, const Tensor& logits,
                                           const Tensor& targets, const Tensor& loss);
absl::StatusOr<RowsDims> CheckLogSoftmax(const OpTarget& target, const Tensor& x,
                                         const Tensor& out);
absl::StatusOr<RowsDims> CheckLogSumExp(const OpTarget& target, const Tensor& x, const Tensor& lse);
absl::StatusOr<GatherColumnsDims> CheckGatherColumns(const OpTarget& target, const Tensor& x,
                                                     const Tensor& columns, const Tensor* shift,
                                                     const Tensor& out);
absl::StatusOr<TopKDims> CheckTopK(const OpTarget& target, const Tensor& x, int64_t k,
                                   const Tensor& values, const Tensor& indices);

}  // namespace glassbox
