#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "base/status_macros.h"
#include "kernels/cpu/activations.h"
#include "kernels/cpu/gemm.h"

namespace glassbox::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Queries per task and keys per step of AttendBlocked: a [32 x 128] score block and a [32 x
// d_head] accumulator stay in L1/L2; 32 queries give 4 tasks per head at 128 tokens.
constexpr int64_t kQueryBlock = 32;
constexpr int64_t kKeyBlock = 128;

// Sixteen floats, which GCC lowers to whatever the clone's target has (one AVX-512 register,
// two AVX ones, four SSE ones). Reductions over such lanes add in an order fixed by the index
// alone, never by the row's alignment, so a query's values do not depend on where its block
// starts (decoding over a KV cache must reproduce the full pass exactly).
using Lanes = float __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define GB_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GB_VECTOR_CLONES
#endif

// The padding of one row's key block as an additive mask: 0 for real keys, -inf for padding.
void KeyBias(const int32_t* mask, int64_t n, float* bias) {
  for (int64_t j = 0; j < n; ++j) bias[j] = mask[j] == 0 ? kNegInf : 0.0f;
}

// row[0, n) holds the scores of keys [first, first + n) for the query whose own key index is
// `at`: soft-caps them, then hides (-inf) the keys after it, before its window and padding.
GB_VECTOR_CLONES
void MaskScores(float* row, int64_t n, int64_t first, int64_t at, int64_t window, float softcap,
                const float* key_bias) {
  if (softcap > 0) {
    for (int64_t j = 0; j < n; ++j) row[j] = softcap * std::tanh(row[j] / softcap);
  }
  // Visible keys form one range [lo, hi) of the block.
  const int64_t hi = std::clamp<int64_t>(at - first + 1, 0, n);
  const int64_t lo = window > 0 ? std::clamp<int64_t>(at - window + 1 - first, 0, hi) : 0;
  std::fill(row, row + lo, kNegInf);
  std::fill(row + hi, row + n, kNegInf);
  for (int64_t j = lo; j < hi; ++j) row[j] += key_bias[j];
}

GB_VECTOR_CLONES
float RowMax(const float* row, int64_t n) {
  Lanes lanes;
  for (int64_t l = 0; l < kLanes; ++l) lanes[l] = kNegInf;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    Lanes x;
    std::memcpy(&x, row + j, sizeof(x));
    lanes = lanes > x ? lanes : x;
  }
  float max = kNegInf;
  for (int64_t l = 0; l < kLanes; ++l) max = std::max(max, lanes[l]);
  for (; j < n; ++j) max = std::max(max, row[j]);
  return max;
}

// row[j] = exp(row[j] - shift) in place; returns their sum (in lane order).
GB_VECTOR_CLONES
float ExpShiftedSum(float* row, int64_t n, float shift) {
  for (int64_t j = 0; j < n; ++j) row[j] = VectorExp(row[j] - shift);  // exp(-inf) = 0
  Lanes lanes = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    Lanes x;
    std::memcpy(&x, row + j, sizeof(x));
    lanes += x;
  }
  float sum = 0;
  for (int64_t l = 0; l < kLanes; ++l) sum += lanes[l];
  for (; j < n; ++j) sum += row[j];
  return sum;
}

// One online-softmax step for one query: row[0, n) (masked scores) becomes exp(s - m') with m'
// the running max taking this block into account; returns the factor the query's earlier sum
// and accumulator must be multiplied by (0 when nothing was seen before), updating *max and
// *sum. A row that sees none of these keys leaves everything as it was (factor 1, row zeros).
float SoftmaxStep(float* row, int64_t n, float* max, float* sum) {
  const float block_max = RowMax(row, n);
  if (block_max == kNegInf) {
    std::fill_n(row, n, 0.0f);
    return 1.0f;
  }
  const float new_max = std::max(*max, block_max);
  const float factor = *max == kNegInf ? 0.0f : VectorExp(*max - new_max);
  *sum = *sum * factor + ExpShiftedSum(row, n, new_max);
  *max = new_max;
  return factor;
}

}  // namespace

absl::Status AttendBlocked(const AttentionDims& d, const float* q, const float* k, const float* v,
                           const int32_t* key_mask, float scale, const AttentionOptions& options,
                           float* z) {
  const int64_t seq = d.seq, keys = d.kv_seq, heads = d.heads, dh = d.d_head;
  const int64_t group = heads / d.kv_heads, offset = d.query_offset;
  const int64_t q_stride = heads * dh, kv_stride = d.kv_heads * dh;
  const int64_t query_blocks = (seq + kQueryBlock - 1) / kQueryBlock;
  const int64_t tasks = d.batch * heads * query_blocks;
  absl::Status failed;
  bool any_failed = false;
  // Small problems (a few tokens, as in decoding) are not worth waking the pool for.
  const bool parallel = tasks > 1 && d.batch * heads * seq * keys * dh >= (int64_t{1} << 18);
#pragma omp parallel if (parallel)
  {
    // Per thread, kept across calls (a decode step calls this once per layer and token): one
    // block of scores, the accumulator, running max and sum, the key block's padding mask.
    // Products inside a task run single-threaded (oneDNN inside a parallel region).
    thread_local std::vector<float> scratch;
    scratch.resize(kQueryBlock * (kKeyBlock + dh + 2) + kKeyBlock);
    float* scores = scratch.data();
    float* acc = scores + kQueryBlock * kKeyBlock;
    float* max = acc + kQueryBlock * dh;
    float* sum = max + kQueryBlock;
    float* key_bias = sum + kQueryBlock;
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t b = t / (heads * query_blocks), h = (t / query_blocks) % heads;
      const int64_t i0 = (t % query_blocks) * kQueryBlock, nq = std::min(kQueryBlock, seq - i0);
      const int32_t* row_mask = key_mask + b * keys;
      const float* qb = q + (b * seq + i0) * q_stride + h * dh;
      const float* kb = k + b * keys * kv_stride + (h / group) * dh;
      const float* vb = v + b * keys * kv_stride + (h / group) * dh;
      std::fill_n(acc, nq * dh, 0.0f);
      std::fill_n(max, nq, kNegInf);
      std::fill_n(sum, nq, 0.0f);
      // The keys any query of the block may see: up to the last query's own, from the first
      // query's window on.
      const int64_t last = std::min(keys - 1, i0 + nq - 1 + offset);
      const int64_t first =
          options.window > 0 ? std::max<int64_t>(0, i0 + offset - options.window + 1) : 0;
      for (int64_t j0 = first; j0 <= last; j0 += kKeyBlock) {
        const int64_t nk = std::min(kKeyBlock, last + 1 - j0);
        absl::Status s = Sgemm(/*trans_b=*/true, nq, nk, dh, scale, qb, q_stride,
                               kb + j0 * kv_stride, kv_stride, 0.0f, scores, nk);
        KeyBias(row_mask + j0, nk, key_bias);
        for (int64_t i = 0; i < nq && s.ok(); ++i) {
          float* row = scores + i * nk;
          MaskScores(row, nk, j0, i0 + i + offset, options.window, options.softcap, key_bias);
          const float factor = SoftmaxStep(row, nk, &max[i], &sum[i]);
          if (factor != 1.0f) {
            float* a = acc + i * dh;
            for (int64_t c = 0; c < dh; ++c) a[c] *= factor;
          }
        }
        if (s.ok()) {
          s = Sgemm(/*trans_b=*/false, nq, dh, nk, 1.0f, scores, nk, vb + j0 * kv_stride, kv_stride,
                    1.0f, acc, dh);
        }
        if (!s.ok()) {
#pragma omp critical
          if (!any_failed) any_failed = true, failed = s;
          break;
        }
      }
      for (int64_t i = 0; i < nq; ++i) {
        // A query with no visible key (padding before the first real token) gets a zero row.
        const float inv = sum[i] > 0 ? 1.0f / sum[i] : 0.0f;
        float* out = z + (b * seq + i0 + i) * q_stride + h * dh;
        for (int64_t c = 0; c < dh; ++c) out[c] = acc[i * dh + c] * inv;
      }
    }
  }
  return failed;
}

absl::Status MaterializeScores(const AttentionDims& d, const float* q, const float* k,
                               const int32_t* key_mask, float scale,
                               const AttentionOptions& options, float* scores, float* pattern) {
  const int64_t seq = d.seq, keys = d.kv_seq, heads = d.heads, dh = d.d_head;
  const int64_t group = heads / d.kv_heads, offset = d.query_offset;
  const int64_t q_stride = heads * dh, kv_stride = d.kv_heads * dh;
  absl::Status failed;
  bool any_failed = false;
#pragma omp parallel
  {
    std::vector<float> row_scores(keys), key_bias_row(keys);
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < d.batch * heads; ++t) {
      const int64_t b = t / heads, h = t % heads;
      KeyBias(key_mask + b * keys, keys, key_bias_row.data());
      const float* kb = k + b * keys * kv_stride + (h / group) * dh;
      float* out = (scores != nullptr ? scores : pattern) + t * seq * keys;
      // S = scale q kᵀ for every query of the head, into the output (scores, else pattern).
      absl::Status s =
          Sgemm(/*trans_b=*/true, seq, keys, dh, scale, q + b * seq * q_stride + h * dh, q_stride,
                kb, kv_stride, 0.0f, out, keys);
      if (!s.ok()) {
#pragma omp critical
        if (!any_failed) any_failed = true, failed = s;
        continue;
      }
      for (int64_t i = 0; i < seq; ++i) {
        float* row = out + i * keys;
        MaskScores(row, keys, 0, i + offset, options.window, options.softcap, key_bias_row.data());
        if (pattern == nullptr) continue;
        float max = kNegInf, sum = 0;
        std::copy_n(row, keys, row_scores.begin());
        SoftmaxStep(row_scores.data(), keys, &max, &sum);
        const float inv = sum > 0 ? 1.0f / sum : 0.0f;
        float* p = pattern + (t * seq + i) * keys;
        for (int64_t j = 0; j < keys; ++j) p[j] = row_scores[j] * inv;
      }
    }
  }
  return failed;
}

}  // namespace glassbox::cpu
