// Row-wise log-softmax, per-token cross-entropy and log-sum-exp: one block per row, all three on
// the one RowLogSumExp below, max then sum of exp(x - max) in f32 (the CPU reference sums in f64;
// the block's tree reduction keeps the f32 error far below the test budget even at vocabulary
// sizes of 10^5).
#include "kernels/cuda/device_math.cuh"

namespace glassbox::cuda {
namespace {

constexpr int64_t kMaxRows = 2147483647LL;

// log(sum_j exp(x_j)) for one row, computed by the whole block.
template <typename T>
__device__ float RowLogSumExp(const T* x, int64_t cols, float* scratch) {
  float max_value = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) max_value = fmaxf(max_value, ToFloat(x[j]));
  max_value = BlockMax(max_value, scratch);
  float sum = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) sum += expf(ToFloat(x[j]) - max_value);
  sum = BlockSum(sum, scratch);
  return logf(sum) + max_value;
}

template <typename T>
__global__ void __launch_bounds__(kRowBlockMaxThreads) LogSoftmaxKernel(const T* x, T* out, int64_t cols) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* in = x + row * cols;
  const float log_sum = RowLogSumExp(in, cols, scratch);
  T* o = out + row * cols;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) o[j] = FromFloat<T>(ToFloat(in[j]) - log_sum);
}

template <typename T, typename Loss>
__global__ void __launch_bounds__(kRowBlockMaxThreads) CrossEntropyKernel(const T* logits, const int32_t* targets, Loss* loss, int64_t vocab) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const int32_t target = targets[row];
  if (target < 0 || target >= vocab) {  // the whole block takes this branch
    if (threadIdx.x == 0) loss[row] = FromFloat<Loss>(0.0f);
    return;
  }
  const T* in = logits + row * vocab;
  const float log_sum = RowLogSumExp(in, vocab, scratch);
  if (threadIdx.x == 0) loss[row] = FromFloat<Loss>(log_sum - ToFloat(in[target]));
}

template <typename T>
__global__ void __launch_bounds__(kRowBlockMaxThreads) LogSumExpKernel(const T* x, float* lse, int64_t cols) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const float log_sum = RowLogSumExp(x + row * cols, cols, scratch);
  if (threadIdx.x == 0) lse[row] = log_sum;
}

}  // namespace

cudaError_t LaunchLogSoftmax(DType type, const void* x, void* out, int64_t rows,
                             int64_t cols, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (rows > kMaxRows) return cudaErrorInvalidValue;
  return DispatchFloat(type, [&](auto tag) {
    using T = decltype(tag);
    LogSoftmaxKernel<T><<<static_cast<unsigned>(rows), RowBlockThreads(cols), 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(out), cols);
    return cudaGetLastError();
  });
}

cudaError_t LaunchCrossEntropy(DType logits_type, const void* logits,
                               const int32_t* targets, DType loss_type, void* loss,
                               int64_t rows, int64_t vocab, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (rows > kMaxRows) return cudaErrorInvalidValue;
  return DispatchFloat(logits_type, [&](auto logits_tag) {
    using T = decltype(logits_tag);
    return DispatchFloat(loss_type, [&](auto loss_tag) {
      using Loss = decltype(loss_tag);
      CrossEntropyKernel<T, Loss><<<static_cast<unsigned>(rows), RowBlockThreads(vocab), 0, stream>>>(
          static_cast<const T*>(logits), targets, static_cast<Loss*>(loss), vocab);
      return cudaGetLastError();
    });
  });
}

cudaError_t LaunchLogSumExp(DType type, const void* x, float* lse, int64_t rows, int64_t cols,
                            cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (rows > kMaxRows) return cudaErrorInvalidValue;
  return DispatchFloat(type, [&](auto tag) {
    using T = decltype(tag);
    LogSumExpKernel<T><<<static_cast<unsigned>(rows), RowBlockThreads(cols), 0, stream>>>(
        static_cast<const T*>(x), lse, cols);
    return cudaGetLastError();
  });
}

}  // namespace glassbox::cuda
