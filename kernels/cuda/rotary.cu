// Rotary embedding of the first rotary_dim features of each head, the remaining features copied
// through; pair j is (j, j + half) in rotate-half (GPT-NeoX / HF Llama) and (2j, 2j + 1) in
// adjacent pairs (GPT-J). One thread per (token, head, j) with j below d_head - half: threads
// j < half rotate pair j, the others copy feature j + half (every feature at or past
// rotary_dim, in both styles). Each thread reads its elements before writing them, so out may
// equal x.
#include "kernels/cuda/device_math.cuh"

namespace glassbox::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void RotaryKernel(RotaryArgs a) {
  const int64_t half = a.rotary_dim / 2;
  const int64_t width = a.d_head - half;
  const int64_t n = a.tokens * a.heads * width;
  const T* x = static_cast<const T*>(a.x);
  T* out = static_cast<T*>(a.out);
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = idx / width, j = idx % width;  // row = token * heads + head
    const int64_t token = row / a.heads;
    const T* in = x + row * a.d_head;
    T* o = out + row * a.d_head;
    if (j >= half) {
      o[j + half] = in[j + half];
      continue;
    }
    const int64_t first = a.adjacent_pairs ? 2 * j : j;
    const int64_t second = a.adjacent_pairs ? 2 * j + 1 : j + half;
    const int32_t pos = a.positions[token];
    if (pos < 0 || pos >= a.n_ctx) {
      atomicOr(a.device_errors, kDeviceErrorRotaryPosition);
      o[first] = FromFloat<T>(0.0f);
      o[second] = FromFloat<T>(0.0f);
      continue;
    }
    const float c = LoadAny(a.cos, pos * half + j), s = LoadAny(a.sin, pos * half + j);
    const float x1 = ToFloat(in[first]), x2 = ToFloat(in[second]);
    o[first] = FromFloat<T>(x1 * c - x2 * s);
    o[second] = FromFloat<T>(x2 * c + x1 * s);
  }
}

}  // namespace

cudaError_t LaunchRotary(const RotaryArgs& args, cudaStream_t stream) {
  const int64_t n = args.tokens * args.heads * (args.d_head - args.rotary_dim / 2);
  if (n == 0) return cudaSuccess;
  return DispatchFloat(args.type, [&](auto tag) {
    using T = decltype(tag);
    RotaryKernel<T><<<ElementwiseBlocks(n, kThreads), kThreads, 0, stream>>>(args);
    return cudaGetLastError();
  });
}

}  // namespace glassbox::cuda
