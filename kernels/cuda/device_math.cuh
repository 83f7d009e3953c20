// Device-side helpers shared by the kernels: element conversions, activation functions matching
// the CPU reference (kernels/cpu/cpu_backend.cc, ApplyActivation), warp and block reductions, and
// the host-side dispatch from a DType to a C++ type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/kernels.h"

namespace glassbox::cuda {

inline constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half FromFloat<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Element i of a vector whose float type is known only at run time (uniform across the grid).
__device__ __forceinline__ float LoadAny(const AnyFloats& v, int64_t i) {
  switch (v.type) {
    case DType::kF16: return __half2float(static_cast<const __half*>(v.data)[i]);
    case DType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(v.data)[i]);
    default: return static_cast<const float*>(v.data)[i];
  }
}

// The same formulas, in the same f32 order, as the CPU reference's ApplyActivation. Precise
// libdevice functions (tanhf, erff, expf), never the fast intrinsics.
__device__ __forceinline__ float Activate(Activation act, float x) {
  switch (act) {
    case Activation::kIdentity: return x;
    case Activation::kGeluTanh: {
      constexpr float kSqrt2OverPi = 0.7978845608028654f;
      return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
    }
    case Activation::kGeluExact: return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    case Activation::kGeluQuick: return x / (1.0f + expf(-1.702f * x));
    case Activation::kRelu: return x > 0 ? x : 0.0f;
    case Activation::kSilu: return x / (1.0f + expf(-x));
  }
  return x;
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// Block-wide reductions for blocks whose size is a multiple of 32 (at most 1024). `scratch` is
// 32 floats of shared memory; every thread gets the result. Safe to call repeatedly with the same
// scratch: the leading barrier keeps a new reduction from overwriting one still being read.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = WarpSum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  return WarpSum(v);
}

__device__ __forceinline__ float BlockMax(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : -INFINITY;
  return WarpMax(v);
}

// The most threads RowBlockThreads picks. Every kernel launched with RowBlockThreads declares
// __launch_bounds__(kRowBlockMaxThreads): without it nvcc may use more than 64 registers per
// thread and a 1024-thread launch then fails ("too many resources requested").
constexpr int kRowBlockMaxThreads = 1024;

// Threads for a one-block-per-row kernel: about four elements per thread, a multiple of 32,
// between 32 and kRowBlockMaxThreads.
inline int RowBlockThreads(int64_t cols) {
  int threads = 32;
  while (threads < kRowBlockMaxThreads && threads * 4 < cols) threads *= 2;
  return threads;
}

// Blocks for a grid-stride elementwise kernel of n elements at `threads` per block.
inline unsigned ElementwiseBlocks(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  constexpr int64_t kMaxBlocks = 65535LL * 32;  // plenty to fill any GPU; the loop covers the rest
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

// Calls f(T{}) with T the C++ type of a floating DType; cudaErrorInvalidValue otherwise.
template <typename F>
cudaError_t DispatchFloat(DType type, F&& f) {
  switch (type) {
    case DType::kF32: return f(float{});
    case DType::kF16: return f(__half{});
    case DType::kBF16: return f(__nv_bfloat16{});
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace glassbox::cuda
