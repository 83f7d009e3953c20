// LayerNorm and RMSNorm over the last axis: one block per row, f32 statistics through warp
// shuffles, the same formulas as the CPU reference (scale = sqrt(var + eps), out = normalized *
// weight + bias, normalized rounded once for hook_normalized, scale for hook_scale).
#include "kernels/cuda/device_math.cuh"

namespace glassbox::cuda {
namespace {

template <typename T>
__global__ void __launch_bounds__(kRowBlockMaxThreads) LayerNormKernel(NormArgs a) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x, cols = a.cols;
  const T* x = static_cast<const T*>(a.x) + row * cols;

  float sum = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) sum += ToFloat(x[j]);
  const float rough_mean = BlockSum(sum, scratch) / static_cast<float>(cols);
  // Second pass around the first mean; the residual mean corrects it. Deviations x - rough_mean
  // are exact (Sterbenz) when the row's mean is large against its spread, and the mean is never
  // formed as one rounded float, so (x - mean) keeps full precision there too (the CPU reference
  // uses f64 for these sums).
  float dev = 0, dev_sq = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float d = ToFloat(x[j]) - rough_mean;
    dev += d;
    dev_sq += d * d;
  }
  const float dev_mean = BlockSum(dev, scratch) / static_cast<float>(cols);
  const float var = fmaxf(BlockSum(dev_sq, scratch) / static_cast<float>(cols) - dev_mean * dev_mean, 0.0f);
  const float scale = sqrtf(var + a.eps);

  T* out = static_cast<T*>(a.out) + row * cols;
  T* unweighted = a.unweighted_out ? static_cast<T*>(a.unweighted_out) + row * cols : nullptr;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float normalized = ((ToFloat(x[j]) - rough_mean) - dev_mean) / scale;
    if (unweighted) unweighted[j] = FromFloat<T>(normalized);
    float v = normalized;
    if (a.weight.data) v *= LoadAny(a.weight, j);
    if (a.bias.data) v += LoadAny(a.bias, j);
    out[j] = FromFloat<T>(v);
  }
  if (a.scale_out && threadIdx.x == 0) static_cast<T*>(a.scale_out)[row] = FromFloat<T>(scale);
}

template <typename T>
__global__ void __launch_bounds__(kRowBlockMaxThreads) RmsNormKernel(NormArgs a) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x, cols = a.cols;
  const T* x = static_cast<const T*>(a.x) + row * cols;

  float sum_sq = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float v = ToFloat(x[j]);
    sum_sq += v * v;
  }
  const float scale = sqrtf(BlockSum(sum_sq, scratch) / static_cast<float>(cols) + a.eps);

  T* out = static_cast<T*>(a.out) + row * cols;
  T* unweighted = a.unweighted_out ? static_cast<T*>(a.unweighted_out) + row * cols : nullptr;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float normalized = ToFloat(x[j]) / scale;
    if (unweighted) unweighted[j] = FromFloat<T>(normalized);
    out[j] = FromFloat<T>(a.weight.data ? normalized * LoadAny(a.weight, j) : normalized);
  }
  if (a.scale_out && threadIdx.x == 0) static_cast<T*>(a.scale_out)[row] = FromFloat<T>(scale);
}

// Rows go on gridDim.x (up to 2^31 - 1); the columns loop inside the block.
constexpr int64_t kMaxRows = 2147483647LL;

}  // namespace

cudaError_t LaunchLayerNorm(const NormArgs& args, cudaStream_t stream) {
  if (args.rows == 0) return cudaSuccess;
  if (args.rows > kMaxRows) return cudaErrorInvalidValue;
  return DispatchFloat(args.type, [&](auto tag) {
    using T = decltype(tag);
    LayerNormKernel<T><<<static_cast<unsigned>(args.rows), RowBlockThreads(args.cols), 0, stream>>>(args);
    return cudaGetLastError();
  });
}

cudaError_t LaunchRmsNorm(const NormArgs& args, cudaStream_t stream) {
  if (args.rows == 0) return cudaSuccess;
  if (args.rows > kMaxRows) return cudaErrorInvalidValue;
  return DispatchFloat(args.type, [&](auto tag) {
    using T = decltype(tag);
    RmsNormKernel<T><<<static_cast<unsigned>(args.rows), RowBlockThreads(args.cols), 0, stream>>>(args);
    return cudaGetLastError();
  });
}

}  // namespace glassbox::cuda
