// Causal attention with grouped KV heads and a key padding mask, by online softmax: the scores
// never leave the chip. Used for every layer whose scores and pattern nobody asked for, and for
// decoding over cached keys (query i at key i + query_offset of kv_seq keys).
//
// One block = 8 warps = 32 queries of one (batch, head); each warp owns 4 queries. The block
// walks the keys up to its last query in tiles of 32, staged in shared memory as f32. Lane l
// computes the score of key l of the tile for the warp's 4 queries (so a K element read from
// shared memory serves 4 FMAs), the warp updates the running max / sum of each query, and every
// lane accumulates the output columns d = lane + 32c for its 4 queries, the probabilities
// broadcast by shuffles. All arithmetic is f32 whatever the storage type.
//
// This is the correctness-first CUDA-core version. A tensor-core (mma.sync / wgmma) kernel that
// shares K/V tiles across a GQA group is the next step for throughput; it must keep this one's
// masking semantics, which the GPU tests pin down.
#include "kernels/cuda/device_math.cuh"

namespace glassbox::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kQueriesPerWarp = 4;
constexpr int kBlockQueries = kWarps * kQueriesPerWarp;  // 32
constexpr int kTileKeys = 32;                            // one key per lane
constexpr int kThreads = kWarps * 32;

template <int kMaxDh>
constexpr size_t FlashSharedBytes() {
  // q [32][kMaxDh], k [32][kMaxDh + 1] (odd stride: lane l reads row l without bank conflicts),
  // v [32][kMaxDh], key visibility [32].
  return sizeof(float) * (kBlockQueries * kMaxDh + kTileKeys * (kMaxDh + 1) + kTileKeys * kMaxDh) +
         sizeof(int) * kTileKeys;
}

template <typename T, int kMaxDh>
__global__ void __launch_bounds__(kThreads) FlashAttentionKernel(AttentionArgs a) {
  constexpr int kCols = kMaxDh / 32;  // output columns per lane
  constexpr int kKStride = kMaxDh + 1;
  extern __shared__ float smem[];
  float* q_s = smem;
  float* k_s = q_s + kBlockQueries * kMaxDh;
  float* v_s = k_s + kTileKeys * kKStride;
  int* key_ok = reinterpret_cast<int*>(v_s + kTileKeys * kMaxDh);

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t seq = a.seq, keys = a.kv_seq, offset = a.query_offset, dh = a.d_head;
  const int64_t bh = blockIdx.x, b = bh / a.heads, h = bh % a.heads;
  const int64_t kvh = h / (a.heads / a.kv_heads);
  const int64_t q_row = a.heads * dh, kv_row = a.kv_heads * dh;  // element strides between tokens
  const T* q = static_cast<const T*>(a.q) + b * seq * q_row + h * dh;
  const T* k = static_cast<const T*>(a.k) + b * keys * kv_row + kvh * dh;
  const T* v = static_cast<const T*>(a.v) + b * keys * kv_row + kvh * dh;
  const int32_t* mask = a.key_mask + b * keys;
  const int64_t q0 = static_cast<int64_t>(blockIdx.y) * kBlockQueries;

  for (int idx = threadIdx.x; idx < kBlockQueries * kMaxDh; idx += kThreads) {
    const int r = idx / kMaxDh, c = idx % kMaxDh;
    const int64_t i = q0 + r;
    q_s[idx] = (i < seq && c < dh) ? ToFloat(q[i * q_row + c]) : 0.0f;
  }

  float m[kQueriesPerWarp], l[kQueriesPerWarp], acc[kQueriesPerWarp][kCols];
#pragma unroll
  for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
    m[qi] = -INFINITY;
    l[qi] = 0;
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[qi][c] = 0;
  }

  const int64_t q_end = q0 + kBlockQueries < seq ? q0 + kBlockQueries : seq;
  const int64_t q_last = q_end - 1 + offset;  // causal: no key beyond the block's last query
  for (int64_t k0 = 0; k0 <= q_last; k0 += kTileKeys) {
    __syncthreads();  // the previous tile is consumed (and q_s is complete on the first pass)
    for (int idx = threadIdx.x; idx < kTileKeys * kMaxDh; idx += kThreads) {
      const int r = idx / kMaxDh, c = idx % kMaxDh;
      const int64_t j = k0 + r;
      const bool in = j < keys && c < dh;
      k_s[r * kKStride + c] = in ? ToFloat(k[j * kv_row + c]) : 0.0f;
      v_s[r * kMaxDh + c] = in ? ToFloat(v[j * kv_row + c]) : 0.0f;
    }
    if (threadIdx.x < kTileKeys) {
      const int64_t j = k0 + threadIdx.x;
      key_ok[threadIdx.x] = j < keys && mask[j] != 0;
    }
    __syncthreads();

    // Scores of key k0 + lane for the warp's queries.
    float s[kQueriesPerWarp] = {};
    const float* k_row = k_s + lane * kKStride;
    const float* q_rows = q_s + warp * kQueriesPerWarp * kMaxDh;
#pragma unroll 8
    for (int c = 0; c < kMaxDh; ++c) {
      const float kc = k_row[c];
#pragma unroll
      for (int qi = 0; qi < kQueriesPerWarp; ++qi) s[qi] += q_rows[qi * kMaxDh + c] * kc;
    }
    const int64_t j = k0 + lane;
    const bool key_visible = key_ok[lane] != 0;
    float p[kQueriesPerWarp];
#pragma unroll
    for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
      const int64_t i = q0 + warp * kQueriesPerWarp + qi;
      const int64_t at = i + offset;  // the query's own key index
      const bool in_window = a.window == 0 || at - j < a.window;
      float raw = s[qi] * a.scale;
      if (a.softcap > 0) raw = a.softcap * tanhf(raw / a.softcap);
      const float score = (key_visible && j <= at && in_window && i < seq) ? raw : -INFINITY;
      const float m_new = fmaxf(m[qi], WarpMax(score));
      if (m_new == -INFINITY) {  // nothing visible yet for this query (warp-uniform)
        p[qi] = 0;
        continue;
      }
      const float alpha = expf(m[qi] - m_new);  // 0 when m was -inf (acc and l are 0 then)
      p[qi] = score == -INFINITY ? 0.0f : expf(score - m_new);
      l[qi] = l[qi] * alpha + WarpSum(p[qi]);
      m[qi] = m_new;
#pragma unroll
      for (int c = 0; c < kCols; ++c) acc[qi][c] *= alpha;
    }
    // acc[q][d] += sum_j p[q][j] * v[j][d] for the lane's columns.
#pragma unroll 4
    for (int jj = 0; jj < kTileKeys; ++jj) {
      float vj[kCols];
#pragma unroll
      for (int c = 0; c < kCols; ++c) vj[c] = v_s[jj * kMaxDh + lane + 32 * c];
#pragma unroll
      for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
        const float pj = __shfl_sync(kFullMask, p[qi], jj);
#pragma unroll
        for (int c = 0; c < kCols; ++c) acc[qi][c] += pj * vj[c];
      }
    }
  }

  T* z = static_cast<T*>(a.z) + b * seq * q_row + h * dh;
#pragma unroll
  for (int qi = 0; qi < kQueriesPerWarp; ++qi) {
    const int64_t i = q0 + warp * kQueriesPerWarp + qi;
    if (i >= seq) continue;
    // A query with no visible key (padding before the first real token) gets zeros.
    const float inv = l[qi] > 0 ? 1.0f / l[qi] : 0.0f;
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      const int d = lane + 32 * c;
      if (d < dh) z[i * q_row + d] = FromFloat<T>(acc[qi][c] * inv);
    }
  }
}

template <typename T, int kMaxDh>
cudaError_t Launch(const AttentionArgs& a, cudaStream_t stream) {
  constexpr size_t kShared = FlashSharedBytes<kMaxDh>();
  auto* kernel = FlashAttentionKernel<T, kMaxDh>;
  if (kShared > 48 * 1024) {
    // Above 48 KiB dynamic shared memory must be opted into; a device with less says no here.
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(kShared)) != cudaSuccess) {
      cudaGetLastError();  // not sticky; clear it so the caller's fallback starts clean
      return cudaErrorNotSupported;
    }
  }
  const dim3 grid(static_cast<unsigned>(a.batch * a.heads),
                  static_cast<unsigned>((a.seq + kBlockQueries - 1) / kBlockQueries));
  kernel<<<grid, kThreads, kShared, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchFlashAttention(const AttentionArgs& args, cudaStream_t stream) {
  if (args.batch == 0 || args.seq == 0 || args.heads == 0) return cudaSuccess;
  // Grid: x = (batch, head) pairs (up to 2^31 - 1), y = query tiles (up to 65535).
  if (args.d_head > 256 || args.batch * args.heads > 2147483647LL ||
      (args.seq + kBlockQueries - 1) / kBlockQueries > 65535) {
    return cudaErrorNotSupported;
  }
  return DispatchFloat(args.type, [&](auto tag) {
    using T = decltype(tag);
    if (args.d_head <= 32) return Launch<T, 32>(args, stream);
    if (args.d_head <= 64) return Launch<T, 64>(args, stream);
    if (args.d_head <= 128) return Launch<T, 128>(args, stream);
    return Launch<T, 256>(args, stream);
  });
}

}  // namespace glassbox::cuda
