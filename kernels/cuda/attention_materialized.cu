// Attention with the score matrix materialised, for layers whose hook_attn_scores or hook_pattern
// is captured or edited. Three passes over a chunk of (batch, head) pairs, through an f32 work
// buffer [bh_count, seq, seq] that the caller sizes:
//   1. ScoresKernel: work[i, j] = scale * q_i . k_j, soft-capped when asked, for j <= i
//      (64 x 64 tiles, 4 x 4 per thread; tiles wholly above the diagonal are skipped and never
//      read).
//   2. MaskedSoftmaxKernel: one block per query row; the single place that decides visibility
//      (j <= i, key_mask[j] != 0 and, with a sliding window, i - j < window). Writes scores
//      (-inf where masked) and pattern (0 where masked; an all-zero row for a query with no
//      visible key) and leaves P in work.
//   3. PatternValueKernel: z = P . V over the causal range, 32 queries x 128 columns per block.
// Same semantics as the CPU reference, all arithmetic in f32.
#include "kernels/cuda/device_math.cuh"

namespace glassbox::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kScoreTile = 64;   // queries and keys per ScoresKernel block
constexpr int kScoreChunk = 16;  // head features staged per step
constexpr int kPvQueries = 32;   // queries per PatternValueKernel block (8 warps x 4)
constexpr int kPvKeys = 32;      // keys per staged tile
constexpr int kPvColumns = 128;  // head features per PatternValueKernel block (4 per lane)

struct HeadIndex {
  int64_t b, h, kvh;
};

__device__ __forceinline__ HeadIndex Head(const AttentionArgs& a, int64_t bh) {
  const int64_t h = bh % a.heads;
  return {bh / a.heads, h, h / (a.heads / a.kv_heads)};
}

template <typename T>
__global__ void __launch_bounds__(kThreads) ScoresKernel(AttentionArgs a, float* work, int64_t bh_begin) {
  __shared__ float q_s[kScoreChunk][kScoreTile + 1];
  __shared__ float k_s[kScoreChunk][kScoreTile + 1];
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kScoreTile;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kScoreTile;
  if (j0 > i0 + kScoreTile - 1) return;  // above the diagonal: masked, never read

  const int64_t bh_local = blockIdx.z;
  const HeadIndex hi = Head(a, bh_begin + bh_local);
  const int64_t seq = a.seq, dh = a.d_head;
  const int64_t q_row = a.heads * dh, kv_row = a.kv_heads * dh;
  const T* q = static_cast<const T*>(a.q) + hi.b * seq * q_row + hi.h * dh;
  const T* k = static_cast<const T*>(a.k) + hi.b * seq * kv_row + hi.kvh * dh;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;

  float acc[4][4] = {};
  for (int64_t c0 = 0; c0 < dh; c0 += kScoreChunk) {
    for (int idx = threadIdx.x; idx < kScoreTile * kScoreChunk; idx += kThreads) {
      const int r = idx / kScoreChunk, c = idx % kScoreChunk;
      const int64_t i = i0 + r, j = j0 + r, d = c0 + c;
      q_s[c][r] = (i < seq && d < dh) ? ToFloat(q[i * q_row + d]) : 0.0f;
      k_s[c][r] = (j < seq && d < dh) ? ToFloat(k[j * kv_row + d]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kScoreChunk; ++c) {
      float qv[4], kv[4];
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        qv[x] = q_s[c][ty + 16 * x];
        kv[x] = k_s[c][tx + 16 * x];
      }
#pragma unroll
      for (int x = 0; x < 4; ++x) {
#pragma unroll
        for (int y = 0; y < 4; ++y) acc[x][y] += qv[x] * kv[y];
      }
    }
    __syncthreads();
  }

  float* w = work + bh_local * seq * seq;
#pragma unroll
  for (int x = 0; x < 4; ++x) {
    const int64_t i = i0 + ty + 16 * x;
#pragma unroll
    for (int y = 0; y < 4; ++y) {
      const int64_t j = j0 + tx + 16 * y;
      if (i < seq && j <= i) {
        const float raw = acc[x][y] * a.scale;
        w[i * seq + j] = a.softcap > 0 ? a.softcap * tanhf(raw / a.softcap) : raw;
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kRowBlockMaxThreads) MaskedSoftmaxKernel(AttentionArgs a, float* work, int64_t bh_begin) {
  __shared__ float scratch[32];
  const int64_t seq = a.seq, i = blockIdx.x, bh_local = blockIdx.y, bh = bh_begin + bh_local;
  const int32_t* mask = a.key_mask + (bh / a.heads) * seq;
  float* row = work + (bh_local * seq + i) * seq;
  // Entries j > i of `row` were never written: read only visible ones.
  auto visible = [&](int64_t j) {
    return j <= i && mask[j] != 0 && (a.window == 0 || i - j < a.window);
  };

  float max_score = -INFINITY;
  for (int64_t j = threadIdx.x; j < seq; j += blockDim.x) {
    if (visible(j)) max_score = fmaxf(max_score, row[j]);
  }
  max_score = BlockMax(max_score, scratch);
  if (a.scores != nullptr) {
    T* s = static_cast<T*>(a.scores) + (bh * seq + i) * seq;
    for (int64_t j = threadIdx.x; j < seq; j += blockDim.x) {
      s[j] = FromFloat<T>(visible(j) ? row[j] : -INFINITY);
    }
  }
  float denom = 0;
  for (int64_t j = threadIdx.x; j < seq; j += blockDim.x) {
    if (visible(j) && row[j] != -INFINITY) denom += expf(row[j] - max_score);
  }
  denom = BlockSum(denom, scratch);
  const float inv = denom > 0 ? 1.0f / denom : 0.0f;
  T* pattern = a.pattern ? static_cast<T*>(a.pattern) + (bh * seq + i) * seq : nullptr;
  for (int64_t j = threadIdx.x; j < seq; j += blockDim.x) {
    const float p = (visible(j) && row[j] != -INFINITY) ? expf(row[j] - max_score) * inv : 0.0f;
    row[j] = p;  // the whole row is defined from here on: PatternValueKernel reads it in tiles
    if (pattern) pattern[j] = FromFloat<T>(p);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) PatternValueKernel(AttentionArgs a, const float* work,
                                                               int64_t bh_begin) {
  __shared__ float p_s[kPvQueries][kPvKeys + 1];
  __shared__ float v_s[kPvKeys][kPvColumns];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t bh_local = blockIdx.z;
  const HeadIndex hi = Head(a, bh_begin + bh_local);
  const int64_t seq = a.seq, dh = a.d_head;
  const int64_t q_row = a.heads * dh, kv_row = a.kv_heads * dh;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kPvQueries;
  const int64_t d0 = static_cast<int64_t>(blockIdx.y) * kPvColumns;
  const T* v = static_cast<const T*>(a.v) + hi.b * seq * kv_row + hi.kvh * dh;
  const float* w = work + bh_local * seq * seq;

  float acc[4][4] = {};
  const int64_t q_last = (q0 + kPvQueries < seq ? q0 + kPvQueries : seq) - 1;
  for (int64_t k0 = 0; k0 <= q_last; k0 += kPvKeys) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < kPvQueries * kPvKeys; idx += kThreads) {
      const int r = idx / kPvKeys, c = idx % kPvKeys;
      const int64_t i = q0 + r, j = k0 + c;
      p_s[r][c] = (i < seq && j < seq) ? w[i * seq + j] : 0.0f;
    }
    for (int idx = threadIdx.x; idx < kPvKeys * kPvColumns; idx += kThreads) {
      const int r = idx / kPvColumns, c = idx % kPvColumns;
      const int64_t j = k0 + r, d = d0 + c;
      v_s[r][c] = (j < seq && d < dh) ? ToFloat(v[j * kv_row + d]) : 0.0f;
    }
    __syncthreads();
#pragma unroll 4
    for (int jj = 0; jj < kPvKeys; ++jj) {
      float vj[4];
#pragma unroll
      for (int c = 0; c < 4; ++c) vj[c] = v_s[jj][lane + 32 * c];
#pragma unroll
      for (int qi = 0; qi < 4; ++qi) {
        const float p = p_s[warp * 4 + qi][jj];
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[qi][c] += p * vj[c];
      }
    }
  }

  T* z = static_cast<T*>(a.z) + hi.b * seq * q_row + hi.h * dh;
#pragma unroll
  for (int qi = 0; qi < 4; ++qi) {
    const int64_t i = q0 + warp * 4 + qi;
    if (i >= seq) continue;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int64_t d = d0 + lane + 32 * c;
      if (d < dh) z[i * q_row + d] = FromFloat<T>(acc[qi][c]);
    }
  }
}

template <typename T>
cudaError_t LaunchChunk(const AttentionArgs& a, float* work, int64_t bh_begin, int64_t bh_count,
                        cudaStream_t stream) {
  const int64_t score_tiles = (a.seq + kScoreTile - 1) / kScoreTile;
  const dim3 score_grid(static_cast<unsigned>(score_tiles), static_cast<unsigned>(score_tiles),
                        static_cast<unsigned>(bh_count));
  ScoresKernel<T><<<score_grid, kThreads, 0, stream>>>(a, work, bh_begin);
  if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;

  const dim3 softmax_grid(static_cast<unsigned>(a.seq), static_cast<unsigned>(bh_count));
  MaskedSoftmaxKernel<T><<<softmax_grid, RowBlockThreads(a.seq), 0, stream>>>(a, work, bh_begin);
  if (cudaError_t err = cudaGetLastError(); err != cudaSuccess) return err;

  if (a.d_head == 0) return cudaSuccess;  // z has no elements
  const dim3 pv_grid(static_cast<unsigned>((a.seq + kPvQueries - 1) / kPvQueries),
                     static_cast<unsigned>((a.d_head + kPvColumns - 1) / kPvColumns),
                     static_cast<unsigned>(bh_count));
  PatternValueKernel<T><<<pv_grid, kThreads, 0, stream>>>(a, work, bh_begin);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchMaterializedAttention(const AttentionArgs& args, float* work, int64_t bh_begin,
                                        int64_t bh_count, cudaStream_t stream) {
  if (bh_count == 0 || args.seq == 0) return cudaSuccess;
  // Grid limits: score tiles on x and y, (batch, head) pairs on z / y (65535 each).
  if ((args.seq + kScoreTile - 1) / kScoreTile > 65535 || bh_count > 65535 ||
      (args.d_head + kPvColumns - 1) / kPvColumns > 65535) {
    return cudaErrorInvalidValue;
  }
  return DispatchFloat(args.type, [&](auto tag) {
    using T = decltype(tag);
    return LaunchChunk<T>(args, work, bh_begin, bh_count, stream);
  });
}

}  // namespace glassbox::cuda
