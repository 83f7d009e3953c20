// Rotate-half rotary embedding (GPT-NeoX / HF Llama) of the first rotary_dim features of each
// head, the remaining features copied through. One thread per (token, head, j) with j below
// d_head - rotary_dim / 2: threads j < half rotate the pair (j, j + half), the others copy
// feature j + half. Each thread reads its elements before writing them, so out may equal x.
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
    const int32_t pos = a.positions[token];
    if (pos < 0 || pos >= a.n_ctx) {
      atomicOr(a.device_errors, kDeviceErrorRotaryPosition);
      o[j] = FromFloat<T>(0.0f);
      o[j + half] = FromFloat<T>(0.0f);
      continue;
    }
    const float c = LoadAny(a.cos, pos * half + j), s = LoadAny(a.sin, pos * half + j);
    const float x1 = ToFloat(in[j]), x2 = ToFloat(in[j + half]);
    o[j] = FromFloat<T>(x1 * c - x2 * s);
    o[j + half] = FromFloat<T>(x2 * c + x1 * s);
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
