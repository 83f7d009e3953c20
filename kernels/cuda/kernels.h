// The boundary between the CUDA backend (C++20, Abseil, Tensor) and its kernels (.cu files,
// compiled by nvcc as C++17): raw device pointers, sizes and element types only. Each launcher
// validates nothing (the backend has checked shapes and dtypes), enqueues its kernel(s) on
// `stream` and returns cudaGetLastError() so a failed launch is reported, never ignored.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "base/activation.h"
#include "base/dtype.h"

namespace glassbox::cuda {

// A read-only vector of any floating element type: norm weights and biases, linear biases,
// rotary tables. These are small and read through the cache, so the kernels take their type at
// run time instead of multiplying template instantiations. data == nullptr means "absent".
struct AnyFloats {
  const void* data = nullptr;
  DType type = DType::kF32;
};

// Bits of the device error word: conditions a kernel can detect but not return. The backend
// reads the word at its next synchronisation (CopyToHost, Synchronize) and reports them.
inline constexpr int kDeviceErrorEmbeddingId = 1;     // Embedding: id outside [0, vocab)
inline constexpr int kDeviceErrorRotaryPosition = 2;  // Rotary: position outside the table
inline constexpr int kDeviceErrorGatherColumn = 4;    // GatherColumns: column outside [0, cols)

// ---- conversion ----
// dst[i] = src[i] converted: floats among f32/f16/bf16 (round to nearest even), integers to
// floats, i32 <-> i64. Other pairs return cudaErrorInvalidValue.
cudaError_t LaunchConvert(const void* src, DType src_type, void* dst, DType dst_type,
                          int64_t n, cudaStream_t stream);

// ---- elementwise (one floating type for inputs and output; f32 math) ----
cudaError_t LaunchAdd(DType type, const void* a, const void* b, void* out, int64_t n,
                      cudaStream_t stream);
cudaError_t LaunchMul(DType type, const void* a, const void* b, void* out, int64_t n,
                      cudaStream_t stream);
cudaError_t LaunchActivate(DType type, Activation act, const void* x, void* out,
                           int64_t n, cudaStream_t stream);
// out = factor · x.
cudaError_t LaunchScale(DType type, const void* x, float factor, void* out, int64_t n,
                        cudaStream_t stream);
// out = cap · tanh(x / cap).
cudaError_t LaunchSoftCap(DType type, const void* x, float cap, void* out, int64_t n,
                          cudaStream_t stream);
// In place on a row-major [rows, cols] matrix: y = act(y + bias[col]); bias may be absent.
cudaError_t LaunchBiasActivation(DType type, void* y, int64_t rows, int64_t cols,
                                 AnyFloats bias, Activation act, cudaStream_t stream);

// ---- normalisation over the last axis; x, out, scale_out and unweighted_out share `type` ----
struct NormArgs {
  DType type = DType::kF32;
  const void* x = nullptr;
  AnyFloats weight;
  AnyFloats bias;  // LayerNorm only
  float eps = 0;
  void* out = nullptr;
  void* scale_out = nullptr;       // [rows], optional
  void* unweighted_out = nullptr;  // [rows, cols], optional
  int64_t rows = 0;
  int64_t cols = 0;
};
cudaError_t LaunchLayerNorm(const NormArgs& args, cudaStream_t stream);
cudaError_t LaunchRmsNorm(const NormArgs& args, cudaStream_t stream);

// ---- gathers and positions ----
// out[i, :] = table[ids[i], :] for elements of `element_bytes` (2, 4 or 8) bytes. An id outside
// [0, vocab) writes zeros and sets kDeviceErrorEmbeddingId.
// table[rows[i], :] = src[i, :]; a row outside [0, table_rows) is skipped and sets
// kDeviceErrorEmbeddingId.
cudaError_t LaunchScatterRows(int element_bytes, const void* src, const int32_t* rows, int64_t n,
                              int64_t dim, void* table, int64_t table_rows, int* device_errors,
                              cudaStream_t stream);
cudaError_t LaunchEmbedding(int element_bytes, const void* table, int64_t vocab, int64_t dim,
                            const int32_t* ids, int64_t n, void* out, int* device_errors,
                            cudaStream_t stream);

struct RotaryArgs {
  DType type = DType::kF32;  // x and out
  const void* x = nullptr;               // [tokens, heads, d_head]
  void* out = nullptr;                   // same shape; may equal x
  AnyFloats cos;                         // [n_ctx, rotary_dim / 2]
  AnyFloats sin;
  const int32_t* positions = nullptr;    // [tokens]
  int64_t tokens = 0, heads = 0, d_head = 0, rotary_dim = 0, n_ctx = 0;
  bool adjacent_pairs = false;           // pairs (2j, 2j + 1) instead of (j, j + rotary_dim / 2)
  int* device_errors = nullptr;
};
cudaError_t LaunchRotary(const RotaryArgs& args, cudaStream_t stream);

// ---- softmax family (one block per row, f32 math, one log-sum-exp behind all three) ----
cudaError_t LaunchLogSoftmax(DType type, const void* x, void* out, int64_t rows,
                             int64_t cols, cudaStream_t stream);
// loss[r] = logsumexp(logits[r]) - logits[r, target[r]]; 0 where target is outside [0, vocab).
cudaError_t LaunchCrossEntropy(DType logits_type, const void* logits,
                               const int32_t* targets, DType loss_type, void* loss,
                               int64_t rows, int64_t vocab, cudaStream_t stream);
// lse[r] = logsumexp(x[r, :]).
cudaError_t LaunchLogSumExp(DType type, const void* x, float* lse, int64_t rows, int64_t cols,
                            cudaStream_t stream);

// ---- selections from rows [rows, cols] ----
// out[r, j] = x[r, columns[j]] - shift[r] in f32 (shift may be null). A column outside
// [0, cols) writes 0 and sets kDeviceErrorGatherColumn.
cudaError_t LaunchGatherColumns(DType type, const void* x, int64_t rows, int64_t cols,
                                const int32_t* columns, int64_t count, const float* shift,
                                float* out, int* device_errors, cudaStream_t stream);

// Top-k of each row (largest first; ties to the lower column; -0.0 ties +0.0; NaN above all):
// every row's values become 64-bit keys (the value's order in the high bits, the inverted column
// in the low ones, so a descending sort breaks ties by column without relying on stability),
// sorted per row by CUB's segmented radix sort; the first k of each row are decoded.
struct TopKArgs {
  DType type = DType::kF32;  // x and values
  const void* x = nullptr;   // [rows, cols]
  void* values = nullptr;    // [rows, k]
  int32_t* indices = nullptr;  // [rows, k]
  int64_t rows = 0, cols = 0, k = 0;
};
// Bytes of `work` that LaunchTopK needs for `row_count` rows (keys, segment offsets and CUB's
// temporary storage); cudaErrorInvalidValue when row_count * cols exceeds CUB's int range.
cudaError_t TopKWorkBytes(int64_t row_count, int64_t cols, size_t* bytes);
// Rows [row_begin, row_begin + row_count); `work` (256-byte aligned) holds TopKWorkBytes bytes.
cudaError_t LaunchTopK(const TopKArgs& args, int64_t row_begin, int64_t row_count, void* work,
                       size_t work_bytes, cudaStream_t stream);

// ---- attention ----
struct AttentionArgs {
  DType type = DType::kF32;  // q, k, v, z, scores, pattern
  const void* q = nullptr;               // [batch, seq, heads, d_head]
  const void* k = nullptr;               // [batch, seq, kv_heads, d_head]
  const void* v = nullptr;
  const int32_t* key_mask = nullptr;     // [batch, seq], 0 = padding
  void* z = nullptr;                     // [batch, seq, heads, d_head]
  void* scores = nullptr;                // [batch, heads, seq, seq], optional
  void* pattern = nullptr;               // [batch, heads, seq, seq], optional
  int64_t batch = 0, seq = 0, heads = 0, kv_heads = 0, d_head = 0;
  float scale = 1;
  int64_t window = 0;  // > 0: key j visible to query i only when i - j < window
  float softcap = 0;   // > 0: score = softcap * tanh(score / softcap), before masking
  // Decoding with a KV cache: k, v and key_mask have kv_seq rows and query i sits at key
  // i + query_offset (the flash kernel only; the materialised one needs kv_seq == seq).
  int64_t kv_seq = 0;
  int64_t query_offset = 0;
};

// Online-softmax ("flash") attention writing z only. Returns cudaErrorNotSupported, without
// launching anything, for head sizes it has no instantiation for (d_head > 256) or when the
// device cannot give it the shared memory it needs; the caller then uses the materialised path.
cudaError_t LaunchFlashAttention(const AttentionArgs& args, cudaStream_t stream);

// Materialised attention for (batch, head) pairs [bh_begin, bh_begin + bh_count): scaled scores
// into `work` (f32 [bh_count, seq, seq]), masked softmax in place there (and into scores /
// pattern when requested), then z = P·V. The caller chunks over (batch, head) to bound `work`.
cudaError_t LaunchMaterializedAttention(const AttentionArgs& args, float* work, int64_t bh_begin,
                                        int64_t bh_count, cudaStream_t stream);

}  // namespace glassbox::cuda
