// Elementwise Add, Mul, activations, Scale, SoftCap and the bias + activation pass that follows a GEMM whose
// epilogue could not apply them. Inputs are read as f32 and the result rounded once.
#include "kernels/cuda/device_math.cuh"

namespace glassbox::cuda {
namespace {

constexpr int kThreads = 256;

enum class BinaryOp : uint8_t { kAdd, kMul };

template <typename T, BinaryOp kOp>
__global__ void BinaryKernel(const T* a, const T* b, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = ToFloat(a[i]), y = ToFloat(b[i]);
    out[i] = FromFloat<T>(kOp == BinaryOp::kAdd ? x + y : x * y);
  }
}

template <typename T>
__global__ void ActivateKernel(Activation act, const T* x, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = FromFloat<T>(Activate(act, ToFloat(x[i])));
  }
}

enum class ParamOp : uint8_t { kScale, kSoftCap };

template <typename T, ParamOp kOp>
__global__ void ParamKernel(const T* x, float param, T* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = ToFloat(x[i]);
    out[i] = FromFloat<T>(kOp == ParamOp::kScale ? v * param : param * tanhf(v / param));
  }
}

template <ParamOp kOp>
cudaError_t LaunchParam(DType type, const void* x, float param, void* out, int64_t n,
                        cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return DispatchFloat(type, [&](auto tag) {
    using T = decltype(tag);
    ParamKernel<T, kOp><<<ElementwiseBlocks(n, kThreads), kThreads, 0, stream>>>(
        static_cast<const T*>(x), param, static_cast<T*>(out), n);
    return cudaGetLastError();
  });
}

template <typename T>
__global__ void BiasActivationKernel(T* y, int64_t rows, int64_t cols, AnyFloats bias,
                                     Activation act) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = ToFloat(y[i]);
    if (bias.data != nullptr) v += LoadAny(bias, i % cols);
    y[i] = FromFloat<T>(Activate(act, v));
  }
}

template <BinaryOp kOp>
cudaError_t LaunchBinary(DType type, const void* a, const void* b, void* out, int64_t n,
                         cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return DispatchFloat(type, [&](auto tag) {
    using T = decltype(tag);
    BinaryKernel<T, kOp><<<ElementwiseBlocks(n, kThreads), kThreads, 0, stream>>>(
        static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), n);
    return cudaGetLastError();
  });
}

}  // namespace

cudaError_t LaunchAdd(DType type, const void* a, const void* b, void* out, int64_t n,
                      cudaStream_t stream) {
  return LaunchBinary<BinaryOp::kAdd>(type, a, b, out, n, stream);
}

cudaError_t LaunchMul(DType type, const void* a, const void* b, void* out, int64_t n,
                      cudaStream_t stream) {
  return LaunchBinary<BinaryOp::kMul>(type, a, b, out, n, stream);
}

cudaError_t LaunchActivate(DType type, Activation act, const void* x, void* out,
                           int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return DispatchFloat(type, [&](auto tag) {
    using T = decltype(tag);
    ActivateKernel<T><<<ElementwiseBlocks(n, kThreads), kThreads, 0, stream>>>(
        act, static_cast<const T*>(x), static_cast<T*>(out), n);
    return cudaGetLastError();
  });
}

cudaError_t LaunchScale(DType type, const void* x, float factor, void* out, int64_t n,
                        cudaStream_t stream) {
  return LaunchParam<ParamOp::kScale>(type, x, factor, out, n, stream);
}

cudaError_t LaunchSoftCap(DType type, const void* x, float cap, void* out, int64_t n,
                          cudaStream_t stream) {
  return LaunchParam<ParamOp::kSoftCap>(type, x, cap, out, n, stream);
}

cudaError_t LaunchBiasActivation(DType type, void* y, int64_t rows, int64_t cols,
                                 AnyFloats bias, Activation act, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  if (bias.data == nullptr && act == Activation::kIdentity) return cudaSuccess;
  return DispatchFloat(type, [&](auto tag) {
    using T = decltype(tag);
    BiasActivationKernel<T><<<ElementwiseBlocks(rows * cols, kThreads), kThreads, 0, stream>>>(
        static_cast<T*>(y), rows, cols, bias, act);
    return cudaGetLastError();
  });
}

}  // namespace glassbox::cuda
