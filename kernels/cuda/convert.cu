// Dtype conversion with the CPU reference's semantics: floats go through f32 and round to
// nearest even (__float2half_rn / __float2bfloat16_rn, as FloatToHalf / FloatToBFloat16 do);
// integers convert to floats through f32; i32 <-> i64 by value.
#include "kernels/cuda/device_math.cuh"

namespace glassbox::cuda {
namespace {

__device__ __forceinline__ float ToFloatAny(float x) { return x; }
__device__ __forceinline__ float ToFloatAny(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloatAny(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float ToFloatAny(int32_t x) { return static_cast<float>(x); }
__device__ __forceinline__ float ToFloatAny(int64_t x) { return static_cast<float>(x); }

template <typename In, typename Out>
__global__ void ConvertToFloatKernel(const In* __restrict__ src, Out* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = FromFloat<Out>(ToFloatAny(src[i]));
  }
}

template <typename In, typename Out>
__global__ void ConvertIntegerKernel(const In* __restrict__ src, Out* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = static_cast<Out>(src[i]);
  }
}

constexpr int kThreads = 256;

template <typename Out>
cudaError_t ConvertTo(const void* src, DType src_type, Out* dst, int64_t n,
                      cudaStream_t stream) {
  const unsigned blocks = ElementwiseBlocks(n, kThreads);
  switch (src_type) {
    case DType::kF32:
      ConvertToFloatKernel<<<blocks, kThreads, 0, stream>>>(static_cast<const float*>(src), dst, n);
      break;
    case DType::kF16:
      ConvertToFloatKernel<<<blocks, kThreads, 0, stream>>>(static_cast<const __half*>(src), dst, n);
      break;
    case DType::kBF16:
      ConvertToFloatKernel<<<blocks, kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(src), dst, n);
      break;
    case DType::kI32:
      ConvertToFloatKernel<<<blocks, kThreads, 0, stream>>>(static_cast<const int32_t*>(src), dst, n);
      break;
    case DType::kI64:
      ConvertToFloatKernel<<<blocks, kThreads, 0, stream>>>(static_cast<const int64_t*>(src), dst, n);
      break;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t LaunchConvert(const void* src, DType src_type, void* dst, DType dst_type,
                          int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned blocks = ElementwiseBlocks(n, kThreads);
  switch (dst_type) {
    case DType::kF32: return ConvertTo(src, src_type, static_cast<float*>(dst), n, stream);
    case DType::kF16: return ConvertTo(src, src_type, static_cast<__half*>(dst), n, stream);
    case DType::kBF16:
      return ConvertTo(src, src_type, static_cast<__nv_bfloat16*>(dst), n, stream);
    case DType::kI32:
      if (src_type != DType::kI64) return cudaErrorInvalidValue;
      ConvertIntegerKernel<<<blocks, kThreads, 0, stream>>>(static_cast<const int64_t*>(src),
                                                            static_cast<int32_t*>(dst), n);
      return cudaGetLastError();
    case DType::kI64:
      if (src_type != DType::kI32) return cudaErrorInvalidValue;
      ConvertIntegerKernel<<<blocks, kThreads, 0, stream>>>(static_cast<const int32_t*>(src),
                                                            static_cast<int64_t*>(dst), n);
      return cudaGetLastError();
  }
  return cudaErrorInvalidValue;
}

}  // namespace glassbox::cuda
